/* test_vk_attention.c — flash attention (backend/gen_attention.c) through
 * the executor against tg_interpret, with both strategies: REGISTER (the
 * default on lavapipe) and SHARED (the GPU one, forced with
 * TG_ATTN_STRATEGY=shared so that it is checked here too). Every run also
 * checks, through the profile's kernel names, that the strategy asked for
 * is the one that ran (not the fallback kernel).
 *
 * Shapes: lengths that are not multiples of a workgroup's rows or of a
 * key block, a single query against a cache, cross attention (Tq != Tk),
 * causal with Tq > Tk (rows that see no key give zeros), additive masks
 * broadcast by index math (incl. fully -inf rows: zeros), batch dims
 * broadcast between q and k/v, head dims that are not multiples of 4
 * (scalar texels), f32 and f16 storage; then gradients through a graph
 * whose forward is the flash kernel.
 *
 * Tolerances: f32 rtol 1e-5, atol 1e-6 (softmax-weighted sums of values in
 * [-1, 1], f32 accumulation against the interpreter's f64); f16: rt16 and
 * atol 2e-3 (half inputs and output). */
#include "vk_ops_harness.h"

static const char *strategies[2] = {NULL, "shared"};

/* Runs y on the device and asserts the profile names the strategy. */
static void run_checked(const tg_graph *g, tg_tensor y, const char *strategy, tg_array *out) {
    tg_compile_options o = {.profile = true};
    tg_executable *e = NULL;
    OK(tg_compile(dev, g, NULL, 1, &y, 0, NULL, &o, &e));
    OK(tg_run(e, n_feeds, feeds, out));
    char *table = NULL;
    OK(tg_executable_profile(e, &table, NULL));
    const char *want = strategy ? "_shared" : "_register";
    if (!strstr(table, want)) fail_msg("expected a kernel named *%s; profile:\n%s", want, table);
    free(table);
    tg_executable_free(e);
}

typedef struct att_case {
    const char *what;
    int rq, rk, rv, rm;
    int64_t q[4], k[4], v[4], m[4];
    bool causal, mask;
    double scale;
} att_case;

static const att_case cases[] = {
    {"self, causal, T=300 (not a multiple of the row/key blocks)",
     4, 4, 4, 0, {1, 2, 300, 64}, {1, 2, 300, 64}, {1, 2, 300, 64}, {0}, true, false, 0},
    {"self, T=700, 2 heads", 3, 3, 3, 0, {2, 700, 64}, {2, 700, 64}, {2, 700, 64}, {0}, false,
     false, 0},
    {"decoder step: Tq=1 against a cache of 129 (causal sees all)",
     3, 3, 3, 0, {6, 1, 64}, {6, 129, 64}, {6, 129, 64}, {0}, true, false, 0},
    {"cross: Tq=37, Tk=70, Dv != D, k/v broadcast over heads, mask [Tq, Tk]",
     4, 4, 4, 2, {1, 3, 37, 16}, {1, 1, 70, 16}, {1, 1, 70, 8}, {37, 70}, false, true, 0.3},
    {"causal Tq > Tk: first rows see no key; a fully -inf mask row",
     2, 2, 2, 2, {9, 12}, {5, 12}, {5, 20}, {9, 5}, true, true, 0},
    {"mask [B, 1, 1, Tk] (padding mask) broadcast over heads and rows",
     4, 4, 4, 4, {2, 3, 17, 8}, {2, 3, 23, 8}, {2, 3, 23, 8}, {2, 1, 1, 23}, false, true, 0},
    {"batch dims broadcast: q [2, 3, T, D], k/v [T, D]",
     4, 2, 2, 0, {2, 3, 10, 32}, {13, 32}, {13, 32}, {0}, true, false, 0},
    {"head dims not multiples of 4 (scalar texels)", 3, 3, 3, 0, {2, 11, 6}, {2, 19, 6},
     {2, 19, 5}, {0}, false, false, 0},
    {"long keys: many blocks", 2, 2, 2, 0, {3, 8}, {2500, 8}, {2500, 4}, {0}, false, false, 0},
};

static void one_case(const att_case *c, tg_dtype dt, const char *strategy) {
    tg_graph *g = tg_graph_new();
    tg_tensor q = ph(g, dt, c->rq, c->q, -1, 1);
    tg_tensor k = ph(g, dt, c->rk, c->k, -1, 1);
    tg_tensor v = ph(g, dt, c->rv, c->v, -1, 1);
    tg_tensor m = TG_INVALID;
    if (c->mask) {
        m = ph(g, dt, c->rm, c->m, -2, 0);
        tg_array *a = last_feed();
        tg_array_set(a, 0, -INFINITY);
        /* a whole row of -inf: the last mask row */
        int64_t tk = c->m[c->rm - 1], cnt = tg_array_count(a);
        for (int64_t j = cnt - tk; j < cnt; j++) tg_array_set(a, j, -INFINITY);
    }
    tg_tensor y = tg_attention(g, q, k, v, m, c->causal, c->scale);
    if (tg_graph_status(g) != TG_OK) fail_msg("%s: %s", c->what, tg_graph_error(g));
    tg_array want = {0}, got = {0};
    OK(tg_interpret(g, NULL, n_feeds, feeds, 1, &y, &want, 0, NULL, 0));
    if (strategy) setenv("TG_ATTN_STRATEGY", strategy, 1);
    run_checked(g, y, strategy, &got);
    unsetenv("TG_ATTN_STRATEGY");
    char what[256];
    snprintf(what, sizeof what, "%s [%s, %s]", c->what, tg_dtype_name(dt),
             strategy ? strategy : "default");
    bool h = dt == TG_F16;
    compare(what, &got, &want, h ? rt16(1e-5) : 1e-5, h ? 2e-3 : 1e-6);
    tg_array_free(&want);
    tg_array_free(&got);
    tg_graph_free(g);
    feeds_reset();
}

static void test_forward_f32(void **state) {
    (void)state;
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int s = 0; s < 2; s++) one_case(&cases[c], TG_F32, strategies[s]);
}

static void test_forward_f16(void **state) {
    (void)state;
    if (!have_f16()) skip();
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int s = 0; s < 2; s++) one_case(&cases[c], TG_F16, strategies[s]);
}

/* A wrong kernel must fail the comparison: the same graph with a
 * different scale on the device side is caught. */
static void test_detects_errors(void **state) {
    (void)state;
    int64_t s[] = {2, 40, 16};
    tg_graph *g = tg_graph_new();
    tg_tensor q = ph(g, TG_F32, 3, s, -1, 1), k = ph(g, TG_F32, 3, s, -1, 1),
              v = ph(g, TG_F32, 3, s, -1, 1);
    tg_tensor y1 = tg_attention(g, q, k, v, TG_INVALID, false, 0.25);
    tg_tensor y2 = tg_attention(g, q, k, v, TG_INVALID, false, 0.26);
    tg_array a = {0}, b = {0};
    OK(tg_interpret(g, NULL, n_feeds, feeds, 1, &y1, &a, 0, NULL, 0));
    run_checked(g, y2, NULL, &b);
    int bad = 0;
    for (int64_t i = 0; i < tg_array_count(&a); i++)
        bad += !close_enough(tg_array_get(&b, i), tg_array_get(&a, i), 1e-5, 1e-6);
    assert_true(bad > 0);
    tg_array_free(&a);
    tg_array_free(&b);
    tg_graph_free(g);
    feeds_reset();
}

/* Gradients of q, k, v (seeded with a random output gradient) through a
 * graph whose forward is flash attention, against the interpreter. */
static void test_gradients(void **state) {
    (void)state;
    static const att_case gc[] = {
        {"self, causal", 3, 3, 3, 0, {2, 45, 16}, {2, 45, 16}, {2, 45, 16}, {0}, true, false, 0},
        {"cross, masked", 3, 3, 3, 2, {2, 7, 8}, {2, 30, 8}, {2, 30, 12}, {7, 30}, false, true,
         0},
    };
    for (size_t c = 0; c < sizeof gc / sizeof gc[0]; c++) {
        tg_graph *g = tg_graph_new();
        tg_tensor q = ph(g, TG_F32, gc[c].rq, gc[c].q, -1, 1);
        tg_tensor k = ph(g, TG_F32, gc[c].rk, gc[c].k, -1, 1);
        tg_tensor v = ph(g, TG_F32, gc[c].rv, gc[c].v, -1, 1);
        tg_tensor m = TG_INVALID;
        if (gc[c].mask) {
            m = tg_stop_gradient(g, ph(g, TG_F32, gc[c].rm, gc[c].m, -2, 0));
            tg_array_set(last_feed(), 3, -INFINITY);
        }
        tg_tensor y = tg_attention(g, q, k, v, m, gc[c].causal, gc[c].scale);
        int64_t ys[TG_MAX_RANK];
        int yr = tg_tensor_shape(g, y, ys);
        tg_tensor dy = ph(g, TG_F32, yr, ys, -1, 1);
        tg_tensor wrt[3] = {q, k, v}, grads[3];
        OK(tg_gradients_seeded(g, y, dy, 3, wrt, grads));
        for (int i = 0; i < 3; i++) {
            tg_array want = {0}, got = {0};
            OK(tg_interpret(g, NULL, n_feeds, feeds, 1, &grads[i], &want, 0, NULL, 0));
            run_device(g, NULL, grads[i], &got);
            char what[128];
            snprintf(what, sizeof what, "%s: d%c", gc[c].what, "qkv"[i]);
            compare(what, &got, &want, 1e-4, 1e-5);
            tg_array_free(&want);
            tg_array_free(&got);
        }
        tg_graph_free(g);
        feeds_reset();
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_forward_f32, reset_feeds),
        cmocka_unit_test_setup(test_forward_f16, reset_feeds),
        cmocka_unit_test_setup(test_detects_errors, reset_feeds),
        cmocka_unit_test_setup(test_gradients, reset_feeds),
        cmocka_unit_test_setup(test_validation_clean, reset_feeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
