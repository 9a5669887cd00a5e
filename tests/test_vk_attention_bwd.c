/* test_vk_attention_bwd.c — the flash backward (backend/gen_attention.c):
 * attention_lse and attention_grad_q/k/v taking (lse, delta), as
 * tg_gradients emits them, through the executor against tg_interpret
 * (whose gradient kernels recompute the softmax and ignore lse and delta,
 * so they are an independent reference), in f32 and f16.
 *
 * Shapes: causal self-attention over lengths that are not multiples of a
 * workgroup's rows, cross attention with head dims not multiples of 4
 * (scalar texels) and an additive mask with a fully -inf row (zero
 * gradients, lse -inf), causal Tq > Tk (first rows see no key) with batch
 * dims broadcast between q and k/v, and size-1 lengths. The graph must
 * contain attention_lse nodes (the backward path under test).
 *
 * Tolerances: f32 rtol 1e-4, atol 1e-5 (sums over up to 70 keys of
 * products recomputed in f32 along another path than the interpreter's
 * f64); f16: rt16(1e-4) plus atol 4e-3 (half inputs, half lse and delta,
 * half output). */
#include "vk_ops_harness.h"

typedef struct bwd_case {
    const char *what;
    int rq, rk, rm;
    int64_t q[4], k[4], v[4], m[4];
    bool causal, mask;
} bwd_case;

static const bwd_case cases[] = {
    {"self, causal, T=70, 2 heads",
     3,
     3,
     0,
     {2, 70, 16},
     {2, 70, 16},
     {2, 70, 16},
     {0},
     true,
     false},
    {"cross Tq=9 Tk=13, D=6 Dv=5, mask with a -inf row",
     3,
     3,
     2,
     {2, 9, 6},
     {2, 13, 6},
     {2, 13, 5},
     {9, 13},
     false,
     true},
    {"causal Tq=9 > Tk=5, q [2,3,9,8] k/v [3,5,8]",
     4,
     3,
     0,
     {2, 3, 9, 8},
     {3, 5, 8},
     {3, 5, 8},
     {0},
     true,
     false},
    {"size-1 lengths: Tq=1, Tk=1", 3, 3, 0, {3, 1, 4}, {3, 1, 4}, {3, 1, 4}, {0}, false, false},
};

static bool has_op(const tg_graph *g, tg_op op) {
    for (int i = 0; i < g->n_nodes; i++)
        if (g->nodes[i].op == op) return true;
    return false;
}

static void one_case(const bwd_case *c, tg_dtype dt) {
    tg_graph *g = tg_graph_new();
    tg_tensor q = ph(g, dt, c->rq, c->q, -1, 1);
    tg_tensor k = ph(g, dt, c->rk, c->k, -1, 1);
    tg_tensor v = ph(g, dt, c->rk, c->v, -1, 1);
    tg_tensor m = TG_INVALID;
    if (c->mask) {
        m = ph(g, dt, c->rm, c->m, -2, 0);
        tg_array *a = last_feed();
        int64_t tk = c->m[c->rm - 1], cnt = tg_array_count(a);
        tg_array_set(a, 1, -INFINITY);
        for (int64_t j = cnt - tk; j < cnt; j++) tg_array_set(a, j, -INFINITY);
        m = tg_stop_gradient(g, m);
    }
    tg_tensor y = tg_attention(g, q, k, v, m, c->causal, 0);
    int64_t ys[TG_MAX_RANK];
    int yr = tg_tensor_shape(g, y, ys);
    tg_tensor dy = ph(g, dt, yr, ys, -1, 1);
    tg_tensor wrt[3] = {q, k, v}, grads[3];
    OK(tg_gradients_seeded(g, y, dy, 3, wrt, grads));
    if (!has_op(g, TG_OP_ATTENTION_LSE)) fail_msg("%s: no attention_lse in the gradient", c->what);
    bool h = dt == TG_F16;
    for (int i = 0; i < 3; i++) {
        tg_array want = {0}, got = {0};
        OK(tg_interpret(g, NULL, n_feeds, feeds, 1, &grads[i], &want, 0, NULL, 0));
        run_device(g, NULL, grads[i], &got);
        char what[160];
        snprintf(what, sizeof what, "%s [%s]: d%c", c->what, tg_dtype_name(dt), "qkv"[i]);
        compare(what, &got, &want, h ? rt16(1e-4) : 1e-4, h ? 4e-3 : 1e-5);
        tg_array_free(&want);
        tg_array_free(&got);
    }
    tg_graph_free(g);
    feeds_reset();
}

static void test_gradients_f32(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) one_case(&cases[c], TG_F32);
}

static void test_gradients_f16(void **state) {
    (void)state;
    if (!have_f16()) skip();
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) one_case(&cases[c], TG_F16);
}

/* Every case again with 2 and 4 rows per invocation (CPU devices choose
 * by head dim and length: these small heads get 1). */
static void test_gradients_rows_per_invocation(void **state) {
    (void)state;
    const char *rows[] = {"2", "4"};
    for (int r = 0; r < 2; r++) {
        setenv("TG_ATTN_BWD_ROWS", rows[r], 1);
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) one_case(&cases[c], TG_F32);
    }
    unsetenv("TG_ATTN_BWD_ROWS");
}

/* attention_lse alone, including rows that see no key (-inf). */
static void test_lse(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int h = 0; h < 2; h++) {
            tg_dtype dt = h ? TG_F16 : TG_F32;
            if (h && !have_f16()) continue;
            const bwd_case *bc = &cases[c];
            tg_graph *g = tg_graph_new();
            tg_tensor in[4];
            in[0] = ph(g, dt, bc->rq, bc->q, -1, 1);
            in[1] = ph(g, dt, bc->rk, bc->k, -1, 1);
            in[2] = ph(g, dt, bc->rk, bc->v, -1, 1);
            if (bc->mask) {
                in[3] = ph(g, dt, bc->rm, bc->m, -2, 0);
                tg_array *a = last_feed();
                int64_t tk = bc->m[bc->rm - 1], cnt = tg_array_count(a);
                for (int64_t j = cnt - tk; j < cnt; j++) tg_array_set(a, j, -INFINITY);
            }
            tg_attrs at = {.causal = bc->causal, .has_mask = bc->mask};
            tg_tensor lse = tg_node_add(g, TG_OP_ATTENTION_LSE, bc->mask ? 4 : 3, in, &at, dt);
            check(g, lse, h ? rt16(1e-5) : 1e-5, h ? 2e-3 : 1e-6);
        }
}

/* A wrong kernel must fail: dq of scale 0.25 against the reference of
 * scale 0.26 is caught. */
static void test_detects_errors(void **state) {
    (void)state;
    int64_t s[] = {2, 20, 8};
    tg_graph *g = tg_graph_new();
    tg_tensor q = ph(g, TG_F32, 3, s, -1, 1), k = ph(g, TG_F32, 3, s, -1, 1),
              v = ph(g, TG_F32, 3, s, -1, 1), dy = ph(g, TG_F32, 3, s, -1, 1);
    tg_tensor y1 = tg_attention(g, q, k, v, TG_INVALID, false, 0.25);
    tg_tensor y2 = tg_attention(g, q, k, v, TG_INVALID, false, 0.26);
    tg_tensor g1, g2;
    OK(tg_gradients_seeded(g, y1, dy, 1, &q, &g1));
    OK(tg_gradients_seeded(g, y2, dy, 1, &q, &g2));
    tg_array a = {0}, b = {0};
    OK(tg_interpret(g, NULL, n_feeds, feeds, 1, &g1, &a, 0, NULL, 0));
    run_device(g, NULL, g2, &b);
    int bad = 0;
    for (int64_t i = 0; i < tg_array_count(&a); i++)
        bad += !close_enough(tg_array_get(&b, i), tg_array_get(&a, i), 1e-4, 1e-5);
    assert_true(bad > 0);
    tg_array_free(&a);
    tg_array_free(&b);
    tg_graph_free(g);
    feeds_reset();
}

/* ---- heads inside time (transpose_a, graph/ops.c) ---- */

static const int heads_perm[4] = {0, 2, 1, 3};

/* Multi-head attention as models write it: q, k, v [B, T, H, D] swapped to
 * [B, H, T, D], the result swapped back; the gradients of q, k, v with dy
 * [B, Tq, H, Dv]. The passes fold every swap into transpose_a attention
 * ops; the device (passes on) must match the interpreter on the graph as
 * written. */
static void heads_case(const char *what, int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t D,
                       bool causal, bool mask) {
    tg_graph *g = tg_graph_new();
    int64_t qs[] = {B, Tq, H, D}, ks[] = {B, Tk, H, D}, ms[] = {Tq, Tk}, ys[] = {B, Tq, H, D};
    tg_tensor q = ph(g, TG_F32, 4, qs, -1, 1), k = ph(g, TG_F32, 4, ks, -1, 1),
              v = ph(g, TG_F32, 4, ks, -1, 1), m = TG_INVALID;
    if (mask) {
        m = ph(g, TG_F32, 2, ms, -2, 0);
        tg_array_set(last_feed(), 1, -INFINITY);
        m = tg_stop_gradient(g, m);
    }
    tg_tensor a = tg_attention(g, tg_permute(g, q, 4, heads_perm), tg_permute(g, k, 4, heads_perm),
                               tg_permute(g, v, 4, heads_perm), m, causal, 0);
    tg_tensor y = tg_permute(g, a, 4, heads_perm);
    tg_tensor dy = ph(g, TG_F32, 4, ys, -1, 1);
    tg_tensor wrt[3] = {q, k, v}, outs[4];
    OK(tg_gradients_seeded(g, y, dy, 3, wrt, outs));
    outs[3] = y;
    for (int i = 0; i < 4; i++) {
        tg_array want = {0}, got = {0};
        OK(tg_interpret(g, NULL, n_feeds, feeds, 1, &outs[i], &want, 0, NULL, 0));
        run_device(g, NULL, outs[i], &got);
        char w[160];
        snprintf(w, sizeof w, "%s: %s", what, (const char *[]){"dq", "dk", "dv", "y"}[i]);
        compare(w, &got, &want, 1e-4, 1e-5);
        tg_array_free(&want);
        tg_array_free(&got);
    }
    tg_graph_free(g);
    feeds_reset();
}

static void test_heads_inside_time(void **state) {
    (void)state;
    heads_case("B=2 T=37 H=3 D=8 causal", 2, 37, 37, 3, 8, true, false);
    heads_case("B=1 Tq=9 Tk=13 H=2 D=6 mask", 1, 9, 13, 2, 6, false, true);
}

/* The interpreter on transpose_a ops built directly: equal to the swapped
 * formulation, for attention, attention_lse and the three gradients. */
static void test_heads_inside_time_interp(void **state) {
    (void)state;
    int64_t B = 2, Tq = 5, Tk = 7, H = 3, D = 4;
    tg_graph *g = tg_graph_new();
    int64_t qs[] = {B, Tq, H, D}, ks[] = {B, Tk, H, D};
    tg_tensor in[7] = {ph(g, TG_F32, 4, qs, -1, 1), ph(g, TG_F32, 4, ks, -1, 1),
                       ph(g, TG_F32, 4, ks, -1, 1), ph(g, TG_F32, 4, qs, -1, 1)};
    tg_tensor sw[4];
    for (int i = 0; i < 4; i++) sw[i] = tg_permute(g, in[i], 4, heads_perm);
    tg_attrs plain = {.causal = true}, inner = {.causal = true, .transpose_a = true};
    tg_tensor want[5], got[5];
    want[0] = tg_permute(g, tg_node_add(g, TG_OP_ATTENTION, 3, sw, &plain, TG_F32), 4, heads_perm);
    got[0] = tg_node_add(g, TG_OP_ATTENTION, 3, in, &inner, TG_F32);
    want[1] = tg_node_add(g, TG_OP_ATTENTION_LSE, 3, sw, &plain, TG_F32);
    got[1] = tg_node_add(g, TG_OP_ATTENTION_LSE, 3, in, &inner, TG_F32);
    int last = 3;
    in[4] = got[1];
    in[5] = tg_sum(g, tg_mul(g, sw[3], tg_permute(g, got[0], 4, heads_perm)), 1, &last, true);
    in[6] = in[5];
    tg_tensor swi[7] = {sw[0], sw[1], sw[2], sw[3], in[4], in[5], in[6]};
    static const tg_op grads[3] = {TG_OP_ATTENTION_GRAD_Q, TG_OP_ATTENTION_GRAD_K,
                                   TG_OP_ATTENTION_GRAD_V};
    for (int i = 0; i < 3; i++) {
        tg_tensor gi[7] = {in[0], in[1], in[2], in[3], in[4], in[5], in[6]};
        want[2 + i] =
            tg_permute(g, tg_node_add(g, grads[i], 6, swi, &plain, TG_F32), 4, heads_perm);
        got[2 + i] = tg_node_add(g, grads[i], 6, gi, &inner, TG_F32);
    }
    OK(tg_graph_status(g));
    tg_array w[5] = {{0}}, o[5] = {{0}};
    OK(tg_interpret(g, NULL, n_feeds, feeds, 5, want, w, 0, NULL, 0));
    OK(tg_interpret(g, NULL, n_feeds, feeds, 5, got, o, 0, NULL, 0));
    for (int i = 0; i < 5; i++) {
        compare((const char *[]){"attention", "lse", "dq", "dk", "dv"}[i], &o[i], &w[i], 1e-12,
                1e-12);
        tg_array_free(&w[i]);
        tg_array_free(&o[i]);
    }
    tg_graph_free(g);
    feeds_reset();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_gradients_f32, reset_feeds),
        cmocka_unit_test_setup(test_gradients_f16, reset_feeds),
        cmocka_unit_test_setup(test_gradients_rows_per_invocation, reset_feeds),
        cmocka_unit_test_setup(test_lse, reset_feeds),
        cmocka_unit_test_setup(test_detects_errors, reset_feeds),
        cmocka_unit_test_setup(test_heads_inside_time, reset_feeds),
        cmocka_unit_test_setup(test_heads_inside_time_interp, reset_feeds),
        cmocka_unit_test_setup(test_validation_clean, reset_feeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
