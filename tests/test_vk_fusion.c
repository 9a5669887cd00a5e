/* test_vk_fusion.c — fused kernels and the arena plan on the device: every
 * graph gives the same results with the passes on (fused, planned, reused)
 * as with every pass off (one kernel per node), with the dispatch counts
 * the partition promises; a plan that reuses memory gets the
 * write-after-read barrier it needs (synchronization validation reports
 * nothing). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_checks.h"
#include "test_util.h"

#include "backend/vk.h"
#include "tg.h"

#define ALL_PASSES "flash_attention,dce,cse,fold,algebra,permute_matmul,gelu_derivative,fusion"

static tg_device *dev;
static char cache_dir[256];

static void check_validation(void) {
    if (tg_vk_validation_message_count() != 0)
        fail_msg("validation: %s", tg_vk_validation_first_message());
}

static tg_array make_f32(int rank, const int64_t *shape, float start, float step, int mod) {
    tg_array a = {0};
    OK(tg_array_alloc(&a, TG_F32, rank, shape));
    for (int64_t i = 0; i < tg_array_count(&a); i++)
        ((float *)a.data)[i] = start + step * (float)(i % mod);
    return a;
}

static void assert_close(const tg_array *got, const tg_array *want, double atol, double rtol) {
    assert_int_equal(tg_array_count(got), tg_array_count(want));
    for (int64_t i = 0; i < tg_array_count(got); i++) {
        double g = tg_array_get(got, i), w = tg_array_get(want, i);
        if (!(fabs(g - w) <= atol + rtol * fabs(w)))
            fail_msg("element %lld: got %.9g, want %.9g", (long long)i, g, w);
    }
}

/* Runs g (targets, target ops, feeds) with every pass off and with the
 * passes on, each on a fresh store initialised alike; compares the targets
 * and the variables named in `vars` after the run. Returns the dispatches
 * in *on / *off. */
static void compare(const tg_graph *g, int n_targets, const tg_tensor *targets, int n_ops,
                    const tg_tensor *ops, int n_feeds, const tg_feed *feeds, int n_vars,
                    const char *const *vars, double tol, int *on, int *off) {
    tg_array res[2][8];
    tg_store *st[2];
    int disp[2];
    assert_true(n_targets <= 8);
    for (int pass = 0; pass < 2; pass++) {
        st[pass] = tg_store_new();
        OK(tg_store_init_missing(st[pass], g, 99, 0.2));
        tg_compile_options o = {.disable_passes = pass ? NULL : ALL_PASSES};
        tg_executable *e = NULL;
        OK(tg_compile(dev, g, st[pass], n_targets, targets, n_ops, ops, &o, &e));
        OK(tg_run(e, n_feeds, feeds, res[pass]));
        disp[pass] = tg_executable_dispatches(e);
        tg_executable_free(e);
        check_validation();
    }
    for (int i = 0; i < n_targets; i++) {
        assert_close(&res[1][i], &res[0][i], tol, tol);
        tg_array_free(&res[0][i]);
        tg_array_free(&res[1][i]);
    }
    for (int i = 0; i < n_vars; i++) {
        tg_array a = {0}, b = {0};
        OK(tg_store_get(st[0], vars[i], &a));
        OK(tg_store_get(st[1], vars[i], &b));
        assert_close(&b, &a, tol, tol);
        tg_array_free(&a);
        tg_array_free(&b);
    }
    tg_store_free(st[0]);
    tg_store_free(st[1]);
    *off = disp[0];
    *on = disp[1];
}

static tg_tensor var(tg_graph *g, const char *name, int rank, int64_t d0, int64_t d1) {
    int64_t s[2] = {d0, d1};
    return tg_variable(g, name, TG_F32, rank, s, true);
}

/* x W1 + b1 -> gelu -> W2 + b2 + x (residual) -> softmax: two matmul
 * kernels with epilogues (bias+gelu; bias+residual) and the softmax. */
static void test_mlp(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {8, 16};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor h = tg_gelu(g, tg_add(g, tg_matmul(g, x, var(g, "w1", 2, 16, 32), false, false),
                                    var(g, "b1", 1, 32, 0)));
    tg_tensor y = tg_add(
        g,
        tg_add(g, tg_matmul(g, h, var(g, "w2", 2, 32, 16), false, false), var(g, "b2", 1, 16, 0)),
        x);
    tg_tensor p = tg_softmax(g, y, -1);
    OK(tg_graph_status(g));
    tg_array xv = make_f32(2, xs, -1, 0.013f, 157);
    tg_feed f = {x, &xv};
    int on, off;
    compare(g, 1, &p, 0, NULL, 1, &f, 0, NULL, 1e-5, &on, &off);
    assert_int_equal(off, 7);
    assert_int_equal(on, 3);
    tg_array_free(&xv);
    tg_graph_free(g);
}

/* A reduction with a prologue and an epilogue: rsqrt(mean(x*x) + eps)
 * (layer-norm statistics) and sum(exp(x - m)) per row. */
static void test_reduction_prologue_epilogue(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {6, 100};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    int ax[] = {1};
    tg_tensor ms = tg_mean(g, tg_mul(g, x, x), 1, ax, true);
    tg_tensor r = tg_rsqrt(g, tg_add(g, ms, tg_scalar(g, TG_F32, 1e-5)));
    tg_tensor m = tg_max(g, x, 1, ax, true);
    tg_tensor s = tg_sum(g, tg_exp(g, tg_sub(g, x, m)), 1, ax, false);
    tg_tensor targets[] = {r, s};
    OK(tg_graph_status(g));
    tg_array xv = make_f32(2, xs, -2, 0.03f, 137);
    tg_feed f = {x, &xv};
    int on, off;
    compare(g, 2, targets, 0, NULL, 1, &f, 0, NULL, 1e-5, &on, &off);
    assert_int_equal(off, 8);
    assert_int_equal(on, 3); /* mul+mean+add+rsqrt, max, sub+exp+sum */
    tg_array_free(&xv);
    tg_graph_free(g);
}

/* A pre-norm transformer block (attention with heads, GELU MLP,
 * residuals) and, with `train`, its training step: cross-entropy of a
 * projection, gradients, AdamW on every parameter. */
typedef struct block {
    tg_graph *g;
    tg_tensor x, labels, lr, step, out, loss;
    int n;
    tg_tensor params[16], updates[16];
    const char *names[16];
} block;

static tg_tensor bparam(block *b, const char *name, int rank, int64_t d0, int64_t d1) {
    b->names[b->n] = name;
    return b->params[b->n++] = var(b->g, name, rank, d0, d1);
}

static void make_block(block *b, bool train) {
    enum { Bt = 2, Tt = 16, Dm = 32, Hh = 4 };
    memset(b, 0, sizeof *b);
    tg_graph *g = b->g = tg_graph_new();
    int64_t xs[] = {Bt, Tt, Dm};
    b->x = tg_placeholder(g, "x", TG_F32, 3, xs);
    tg_tensor h =
        tg_layer_norm(g, b->x, bparam(b, "ln.w", 1, Dm, 0), bparam(b, "ln.b", 1, Dm, 0), 1e-5);
    tg_tensor qkv[3];
    const char *n3[] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        tg_tensor t = tg_matmul(g, h, bparam(b, n3[i], 2, Dm, Dm), false, false);
        t = tg_reshape(g, t, 4, (int64_t[]){Bt, Tt, Hh, Dm / Hh});
        qkv[i] = tg_permute(g, t, 4, (int[]){0, 2, 1, 3});
    }
    tg_tensor a = tg_attention(g, qkv[0], qkv[1], qkv[2], TG_INVALID, true, 0);
    a = tg_reshape(g, tg_permute(g, a, 4, (int[]){0, 2, 1, 3}), 3, xs);
    tg_tensor x = tg_add(g, b->x,
                         tg_add(g, tg_matmul(g, a, bparam(b, "o", 2, Dm, Dm), false, false),
                                bparam(b, "o.b", 1, Dm, 0)));
    h = tg_gelu(g, tg_add(g, tg_matmul(g, x, bparam(b, "fc", 2, Dm, 2 * Dm), false, false),
                          bparam(b, "fc.b", 1, 2 * Dm, 0)));
    b->out = tg_add(g, x, tg_matmul(g, h, bparam(b, "fc2", 2, 2 * Dm, Dm), false, false));
    if (!train) return;
    int64_t ls[] = {Bt, Tt};
    b->labels = tg_placeholder(g, "labels", TG_I32, 2, ls);
    tg_tensor logits = tg_matmul(g, b->out, bparam(b, "head", 2, Dm, 11), false, false);
    b->loss = tg_cross_entropy(g, logits, b->labels, -1);
    tg_tensor grads[16];
    OK(tg_gradients(g, b->loss, b->n, b->params, grads));
    b->lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    b->step = tg_placeholder(g, "step", TG_I32, 0, NULL);
    for (int i = 0; i < b->n; i++)
        b->updates[i] = tg_adamw(g, b->params[i], grads[i], b->lr, b->step, 0.9, 0.99, 1e-8, 0.01);
    OK(tg_graph_status(g));
}

static void test_transformer_block(void **state) {
    (void)state;
    block b;
    make_block(&b, false);
    OK(tg_graph_status(b.g));
    int64_t xs[] = {2, 16, 32};
    tg_array xv = make_f32(3, xs, -1, 0.01f, 211);
    tg_feed f = {b.x, &xv};
    int on, off;
    compare(b.g, 1, &b.out, 0, NULL, 1, &f, 0, NULL, 1e-4, &on, &off);
    /* layer_norm, 3 matmuls, 4 permutes, attention, then 3 matmuls with
     * bias, residual, bias + gelu, residual: 17 nodes; with flash_attention
     * off the attention is 9 (q k^T, scale, iota, iota, compare, where:
     * the causal bias, add, softmax, p v) */
    assert_int_equal(off, 25);
    /* the head permutes fold into attention (transpose_a); the q, k, v
     * projections are one kernel (sibling matmuls) */
    assert_int_equal(on, 6);
    tg_array_free(&xv);
    tg_graph_free(b.g);
}

static void test_training_step(void **state) {
    (void)state;
    block b;
    make_block(&b, true);
    int64_t xs[] = {2, 16, 32}, ls[] = {2, 16};
    tg_array xv = make_f32(3, xs, -1, 0.01f, 211), lv = {0};
    OK(tg_array_alloc(&lv, TG_I32, 2, ls));
    for (int i = 0; i < 32; i++) ((int32_t *)lv.data)[i] = (i * 7) % 11;
    float lr = 0.01f;
    int32_t step = 1;
    tg_array lra = {TG_F32, 0, {0}, &lr}, sa = {TG_I32, 0, {0}, &step};
    tg_feed f[] = {{b.x, &xv}, {b.labels, &lv}, {b.lr, &lra}, {b.step, &sa}};
    int on, off;
    compare(b.g, 1, &b.loss, b.n, b.updates, 4, f, b.n, b.names, 1e-4, &on, &off);
    assert_true(on < off);
    tg_array_free(&xv);
    tg_array_free(&lv);
    tg_graph_free(b.g);
}

/* flash_attention on against its lowering (every pass off): masked
 * cross-attention and causal attention with fewer queries than keys, in
 * f32 and through f16, with the gradients of q, k and v. */
static void attention_lowered_case(tg_dtype dt, double tol) {
    tg_graph *g = tg_graph_new();
    int64_t qs[] = {2, 3, 5, 8}, ks[] = {2, 3, 7, 8}, ms[] = {5, 7};
    tg_tensor q = tg_placeholder(g, "q", TG_F32, 4, qs), k = tg_placeholder(g, "k", TG_F32, 4, ks);
    tg_tensor v = tg_placeholder(g, "v", TG_F32, 4, ks), m = tg_placeholder(g, "m", TG_F32, 2, ms);
    tg_tensor qd = tg_cast(g, q, dt), kd = tg_cast(g, k, dt), vd = tg_cast(g, v, dt);
    tg_tensor masked = tg_attention(g, qd, kd, vd, tg_cast(g, m, dt), false, 0);
    tg_tensor causal = tg_attention(g, qd, kd, vd, TG_INVALID, true, 0.3);
    tg_tensor y[4];
    y[0] = tg_add(g, tg_mean(g, tg_square(g, tg_cast(g, masked, TG_F32)), 0, NULL, false),
                  tg_mean(g, tg_square(g, tg_cast(g, causal, TG_F32)), 0, NULL, false));
    OK(tg_gradients(g, y[0], 3, (tg_tensor[]){q, k, v}, y + 1));
    tg_array qv = make_f32(4, qs, -1, 0.13f, 17), kv = make_f32(4, ks, -0.9f, 0.11f, 19);
    tg_array vv = make_f32(4, ks, -1, 0.07f, 29), mv = make_f32(2, ms, -2, 0.5f, 9);
    tg_feed f[] = {{q, &qv}, {k, &kv}, {v, &vv}, {m, &mv}};
    int on, off;
    compare(g, 4, y, 0, NULL, 4, f, 0, NULL, tol, &on, &off);
    assert_true(on < off);
    tg_array_free(&qv);
    tg_array_free(&kv);
    tg_array_free(&vv);
    tg_array_free(&mv);
    tg_graph_free(g);
}

static void test_attention_lowered(void **state) {
    (void)state;
    attention_lowered_case(TG_F32, 1e-5);
    attention_lowered_case(TG_F16, 2e-3);
}

/* The multi-tensor optimizer: five adamw updates, two weight decays, one
 * gradient a row slice (through a reshape) of a fed [2, 6]: one dispatch
 * per weight decay, the slice inside; weights and moments equal the
 * per-tensor kernels' bit for bit. */
static void test_multi_tensor_adamw(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t shapes[5][2] = {{5, 7}, {3, 0}, {4, 4}, {2, 3}, {6, 0}};
    int ranks[5] = {2, 1, 2, 2, 1};
    double wd[5] = {0.01, 0, 0.01, 0.01, 0};
    const char *names[] = {"w0",        "w1",        "w2",        "w3",        "w4",
                           "w0.adam_m", "w1.adam_m", "w2.adam_m", "w3.adam_m", "w4.adam_m",
                           "w0.adam_v", "w1.adam_v", "w2.adam_v", "w3.adam_v", "w4.adam_v"};
    tg_tensor lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    tg_tensor step = tg_placeholder(g, "step", TG_I32, 0, NULL);
    int64_t gs[] = {2, 6};
    tg_tensor big = tg_placeholder(g, "big", TG_F32, 2, gs);
    tg_tensor grads[5], updates[5];
    tg_array gv[5];
    tg_feed f[7];
    for (int i = 0; i < 4; i++) {
        char n[16];
        snprintf(n, sizeof n, "g%d", i);
        grads[i] = tg_placeholder(g, n, TG_F32, ranks[i], shapes[i]);
        gv[i] = make_f32(ranks[i], shapes[i], -0.5f + 0.1f * (float)i, 0.037f, 29);
        f[i] = (tg_feed){grads[i], &gv[i]};
    }
    grads[4] = tg_reshape(
        g, tg_slice(g, big, (int64_t[]){1, 0}, (int64_t[]){2, 6}, (int64_t[]){1, 1}), 1, shapes[4]);
    gv[4] = make_f32(2, gs, 0.3f, -0.041f, 12);
    f[4] = (tg_feed){big, &gv[4]};
    for (int i = 0; i < 5; i++)
        updates[i] = tg_adamw(g, var(g, names[i], ranks[i], shapes[i][0], shapes[i][1]), grads[i],
                              lr, step, 0.9, 0.99, 1e-8, wd[i]);
    OK(tg_graph_status(g));
    float lrv = 0.05f;
    int32_t stepv = 3;
    tg_array lra = {TG_F32, 0, {0}, &lrv}, sa = {TG_I32, 0, {0}, &stepv};
    f[5] = (tg_feed){lr, &lra};
    f[6] = (tg_feed){step, &sa};
    int on, off;
    compare(g, 0, NULL, 5, updates, 7, f, 15, names, 0, &on, &off);
    assert_int_equal(off, 6); /* five updates and the slice */
    assert_int_equal(on, 2);
    for (int i = 0; i < 5; i++) tg_array_free(&gv[i]);
    tg_graph_free(g);
}

/* A weight gradient: x^T dy per batch element summed over the batch
 * (two batch axes) is one product with the batch folded into K. */
static void test_matmul_batch_sum(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {3, 2, 8, 16}, ys[] = {3, 2, 8, 12};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 4, xs);
    tg_tensor dy = tg_placeholder(g, "dy", TG_F32, 4, ys);
    tg_tensor gw = tg_sum(g, tg_matmul(g, x, dy, true, false), 2, (int[]){0, 1}, false);
    OK(tg_graph_status(g));
    tg_array xv = make_f32(4, xs, -1, 0.013f, 157), yv = make_f32(4, ys, 0.7f, -0.021f, 61);
    tg_feed f[] = {{x, &xv}, {dy, &yv}};
    int on, off;
    compare(g, 1, &gw, 0, NULL, 2, f, 0, NULL, 1e-5, &on, &off);
    assert_int_equal(off, 2);
    assert_int_equal(on, 1);
    tg_array_free(&xv);
    tg_array_free(&yv);
    tg_graph_free(g);
}

/* A multi-output reduction: a gradient g = a * b + c both read by a matmul
 * and summed over its rows (a bias gradient) is one reduction kernel that
 * stores g where it reads it; a short reduced extent (one invocation per
 * output), a long one (a workgroup per output), rows of whole vec4s (CPU
 * devices: four outputs a lane, vec4 stores), and a max. */
static void test_reduction_stores_prologue(void **state) {
    (void)state;
    int64_t rows[3] = {12, 300, 12}, cols[3] = {10, 10, 12};
    for (int t = 0; t < 3; t++) {
        tg_graph *g = tg_graph_new();
        int64_t xs[] = {3, rows[t] / 3, cols[t]}, ws[] = {cols[t], 4};
        tg_tensor a = tg_placeholder(g, "a", TG_F32, 3, xs);
        tg_tensor b = tg_placeholder(g, "b", TG_F32, 3, xs);
        tg_tensor c = tg_placeholder(g, "c", TG_F32, 1, (int64_t[]){cols[t]});
        tg_tensor w = tg_placeholder(g, "w", TG_F32, 2, ws);
        tg_tensor gr = tg_add(g, tg_mul(g, a, b), c);
        tg_tensor outs[3] = {
            tg_matmul(g, gr, w, false, false),
            tg_sum(g, gr, 2, (int[]){0, 1}, false),
            tg_max(g, tg_exp(g, gr), 1, (int[]){1}, false),
        };
        OK(tg_graph_status(g));
        tg_array av = make_f32(3, xs, -1, 0.013f, 157), bv = make_f32(3, xs, 0.7f, -0.021f, 61);
        tg_array cv = make_f32(1, (int64_t[]){cols[t]}, 0.1f, 0.2f, (int)cols[t]),
                 wv = make_f32(2, ws, -1, 0.1f, 19);
        tg_feed f[] = {{a, &av}, {b, &bv}, {c, &cv}, {w, &wv}};
        int on, off;
        compare(g, 3, outs, 0, NULL, 4, f, 0, NULL, 1e-5, &on, &off);
        assert_int_equal(off, 6); /* mul, add, matmul, sum, exp, max */
        assert_int_equal(on, 3);  /* mul+add+sum (stores the add), matmul, exp+max */
        tg_array_free(&av);
        tg_array_free(&bv);
        tg_array_free(&cv);
        tg_array_free(&wv);
        tg_graph_free(g);
    }
}

/* Sibling copies: two row slices and a strided slice of one [2, 50]
 * tensor (each a target, 50 elements) share one kernel; a broadcast of
 * another element count stays apart. */
static void test_sibling_copies(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {2, 50};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor y = tg_exp(g, x);
    tg_tensor outs[4] = {
        tg_slice(g, y, (int64_t[]){0, 0}, (int64_t[]){1, 50}, (int64_t[]){1, 1}),
        tg_slice(g, y, (int64_t[]){1, 0}, (int64_t[]){2, 50}, (int64_t[]){1, 1}),
        tg_slice(g, y, (int64_t[]){0, 0}, (int64_t[]){2, 50}, (int64_t[]){1, 2}),
        tg_broadcast_to(g, y, 3, (int64_t[]){3, 2, 50}),
    };
    OK(tg_graph_status(g));
    tg_array xv = make_f32(2, xs, -1, 0.037f, 61);
    tg_feed f = {x, &xv};
    int on, off;
    compare(g, 4, outs, 0, NULL, 1, &f, 0, NULL, 0, &on, &off);
    assert_int_equal(off, 5); /* exp and four copies */
    assert_int_equal(on, 3);  /* exp, the three slices (50 elements each), the broadcast */
    tg_array_free(&xv);
    tg_graph_free(g);
}

/* Alike copies: the head permutes of three projections (x W_i reshaped
 * to [B, T, H, dh] and permuted to [B, H, T, dh]) are one kernel; equal
 * to one permute each. */
static void test_alike_head_permutes(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {2, 5, 8}, ws[] = {8, 8}, hs[] = {2, 5, 2, 4};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 3, xs);
    tg_tensor outs[3];
    tg_array wv[3];
    tg_feed f[4];
    for (int i = 0; i < 3; i++) {
        char n[16];
        snprintf(n, sizeof n, "w%d", i);
        tg_tensor w = tg_placeholder(g, n, TG_F32, 2, ws);
        wv[i] = make_f32(2, ws, -0.5f + 0.2f * (float)i, 0.031f, 37);
        f[1 + i] = (tg_feed){w, &wv[i]};
        outs[i] = tg_permute(g, tg_reshape(g, tg_matmul(g, x, w, false, false), 4, hs), 4,
                             (int[]){0, 2, 1, 3});
    }
    OK(tg_graph_status(g));
    tg_array xv = make_f32(3, xs, -1, 0.013f, 157);
    f[0] = (tg_feed){x, &xv};
    int on, off;
    compare(g, 3, outs, 0, NULL, 4, f, 0, NULL, 1e-5, &on, &off);
    assert_int_equal(off, 6); /* three matmuls, three permutes */
    assert_int_equal(on, 2);  /* the sibling matmuls, one kernel of permutes */
    for (int i = 0; i < 3; i++) tg_array_free(&wv[i]);
    tg_array_free(&xv);
    tg_graph_free(g);
}

/* Nine adamw updates of one weight decay: the groups are bounded by the
 * device's bindings (lavapipe: inputs are texel buffers, outputs storage
 * buffers, 32 of them: 10 updates), so one dispatch; bit-equal to one
 * kernel per update. */
static void test_adamw_groups_fill_bindings(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    tg_tensor step = tg_placeholder(g, "step", TG_I32, 0, NULL);
    tg_tensor updates[9];
    char names[27][32];
    const char *vars[27];
    tg_array gv[9];
    tg_feed f[11];
    for (int i = 0; i < 9; i++) {
        snprintf(names[i], sizeof names[i], "w%d", i);
        snprintf(names[9 + i], sizeof names[i], "w%d.adam_m", i);
        snprintf(names[18 + i], sizeof names[i], "w%d.adam_v", i);
        int64_t s[1] = {3 + i};
        char gn[16];
        snprintf(gn, sizeof gn, "g%d", i);
        tg_tensor gr = tg_placeholder(g, gn, TG_F32, 1, s);
        gv[i] = make_f32(1, s, -0.4f + 0.1f * (float)i, 0.07f, 7);
        f[i] = (tg_feed){gr, &gv[i]};
        updates[i] = tg_adamw(g, var(g, names[i], 1, s[0], 0), gr, lr, step, 0.9, 0.99, 1e-8, 0);
    }
    for (int i = 0; i < 27; i++) vars[i] = names[i];
    OK(tg_graph_status(g));
    float lrv = 0.05f;
    int32_t stepv = 2;
    tg_array lra = {TG_F32, 0, {0}, &lrv}, sa = {TG_I32, 0, {0}, &stepv};
    f[9] = (tg_feed){lr, &lra};
    f[10] = (tg_feed){step, &sa};
    int on, off;
    compare(g, 0, NULL, 9, updates, 11, f, 27, vars, 0, &on, &off);
    assert_int_equal(off, 9);
    assert_int_equal(on, 1);
    for (int i = 0; i < 9; i++) tg_array_free(&gv[i]);
    tg_graph_free(g);
}

/* Movement ops read through index remapping inside an elementwise chain:
 * (permute(x) + y) * broadcast_to(b) - slice(w, step 2): one kernel. */
static void test_movement_in_chain(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {4, 6}, ys[] = {6, 4}, bs[] = {4}, ws[] = {12, 5};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor y = tg_placeholder(g, "y", TG_F32, 2, ys);
    tg_tensor bb = tg_placeholder(g, "b", TG_F32, 1, bs);
    tg_tensor w = tg_placeholder(g, "w", TG_F32, 2, ws);
    tg_tensor t =
        tg_mul(g, tg_add(g, tg_permute(g, x, 2, (int[]){1, 0}), y), tg_broadcast_to(g, bb, 2, ys));
    tg_tensor sl = tg_slice(g, w, (int64_t[]){1, 1}, (int64_t[]){12, 5}, (int64_t[]){2, 1});
    tg_tensor out = tg_sub(g, t, sl);
    OK(tg_graph_status(g));
    tg_array xv = make_f32(2, xs, -1, 0.13f, 17), yv = make_f32(2, ys, 0.5f, -0.07f, 23);
    tg_array bv = make_f32(1, bs, 2, 0.5f, 4), wv = make_f32(2, ws, -3, 0.11f, 60);
    tg_feed f[] = {{x, &xv}, {y, &yv}, {bb, &bv}, {w, &wv}};
    int on, off;
    compare(g, 1, &out, 0, NULL, 4, f, 0, NULL, 0, &on, &off);
    assert_int_equal(off, 6);
    assert_int_equal(on, 1);
    tg_array_free(&xv);
    tg_array_free(&yv);
    tg_array_free(&bv);
    tg_array_free(&wv);
    tg_graph_free(g);
}

/* Reuse that needs a write-after-read barrier: sum(p) is p's last read;
 * the permute of y (a target, so a kernel of its own rather than a
 * remapped read inside the add) does not depend on it and is planned into p's memory
 * (same size, p dead), so it must wait for the sum to finish reading. The
 * synchronization validation reports a WRITE_AFTER_READ hazard without
 * that barrier (backend/executor.c needs_barrier: "writes something
 * touched"). */
static void test_reuse_needs_war_barrier(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t ps[] = {64 * 48}, ys[] = {64, 48};
    tg_tensor p = tg_placeholder(g, "p", TG_F32, 1, ps);
    tg_tensor y = tg_placeholder(g, "y", TG_F32, 2, ys);
    tg_tensor s = tg_sum(g, p, 0, NULL, false);
    tg_tensor q = tg_permute(g, y, 2, (int[]){1, 0});
    tg_tensor r = tg_add(g, q, s);
    OK(tg_graph_status(g));
    tg_array pv = make_f32(1, ps, 0.5f, 0.001f, 97), yv = make_f32(2, ys, -1, 0.01f, 301);
    tg_feed f[] = {{p, &pv}, {y, &yv}};
    tg_executable *e = NULL;
    tg_tensor targets[] = {r, q};
    OK(tg_compile(dev, g, NULL, 2, targets, 0, NULL, NULL, &e));
    tg_array got[2] = {{0}}, want[2] = {{0}};
    OK(tg_run(e, 2, f, got));
    check_validation();
    OK(tg_interpret(g, NULL, 2, f, 2, targets, want, 0, NULL, 0));
    for (int i = 0; i < 2; i++) {
        assert_close(&got[i], &want[i], 1e-4, 1e-5);
        tg_array_free(&got[i]);
        tg_array_free(&want[i]);
    }
    assert_int_equal(tg_executable_dispatches(e), 3);
    uint64_t arena, naive, lb;
    OK(tg_executable_memory_stats(e, &arena, &naive, &lb));
    /* p, y, q, r of 12 KiB and s: q takes p's place; q is read back, so r
     * has its own */
    assert_true(naive >= 4 * 64 * 48 * 4);
    assert_true(arena <= 3 * 64 * 48 * 4 + 4096);
    assert_true(arena >= lb);
    tg_array_free(&pv);
    tg_array_free(&yv);
    tg_executable_free(e);
    tg_graph_free(g);
}

/* The arena of g compiled with every pass on. */
static uint64_t arena_on(const tg_graph *g, int n_targets, const tg_tensor *targets) {
    tg_store *st = tg_store_new();
    OK(tg_store_init_missing(st, g, 99, 0.2));
    tg_executable *e = NULL;
    OK(tg_compile(dev, g, st, n_targets, targets, 0, NULL, NULL, &e));
    uint64_t arena, naive, lb;
    OK(tg_executable_memory_stats(e, &arena, &naive, &lb));
    tg_executable_free(e);
    tg_store_free(st);
    return arena;
}

/* out = x w + e, with e = gather(table, idx) [R, N] (a kernel of its
 * own) read only by the matmul's epilogue: out takes e's memory (each
 * element of e is read by the invocation that then stores out's), so the
 * arena holds one [R, N] buffer, not two; same values with the passes
 * off. */
static void test_matmul_epilogue_in_place(void **state) {
    (void)state;
    enum { R = 96, K = 8, N = 80, V = 13 };
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {R, K}, is[] = {R};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor idx = tg_placeholder(g, "idx", TG_I32, 1, is);
    tg_tensor e = tg_gather(g, var(g, "table", 2, V, N), idx, 0);
    tg_tensor out = tg_add(g, tg_matmul(g, x, var(g, "w", 2, K, N), false, false), e);
    OK(tg_graph_status(g));
    tg_array xv = make_f32(2, xs, -1, 0.03f, 67), iv = {0};
    OK(tg_array_alloc(&iv, TG_I32, 1, is));
    for (int i = 0; i < R; i++) ((int32_t *)iv.data)[i] = (i * 5) % V;
    tg_feed f[] = {{x, &xv}, {idx, &iv}};
    int on, off;
    compare(g, 1, &out, 0, NULL, 2, f, 0, NULL, 1e-5, &on, &off);
    assert_int_equal(on, 2);
    uint64_t arena = arena_on(g, 1, &out);
    assert_true(arena >= (uint64_t)R * N * 4);
    assert_true(arena < (uint64_t)2 * R * N * 4);
    tg_array_free(&xv);
    tg_array_free(&iv);
    tg_graph_free(g);
}

/* A product with a two-output epilogue (the pre-activation and
 * gelu(h) * s + r: a bias by column, a scale by row, a residual per
 * element) at rows that leave the last block partial: whole blocks store
 * vec4s (N = 20), the rest through the scalar loop; N = 18 has no vec4
 * rows at all. Fused and unfused agree, in one dispatch. */
static void test_matmul_epilogue_vec4_edges(void **state) {
    (void)state;
    const int64_t widths[] = {20, 18};
    for (int t = 0; t < 2; t++) {
        enum { R = 37, K = 8 };
        int64_t N = widths[t];
        tg_graph *g = tg_graph_new();
        int64_t xs[] = {R, K}, ss[] = {R, 1}, rs[] = {R, N};
        tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
        tg_tensor sc = tg_placeholder(g, "s", TG_F32, 2, ss);
        tg_tensor r = tg_placeholder(g, "r", TG_F32, 2, rs);
        tg_tensor h =
            tg_add(g, tg_matmul(g, x, var(g, "w", 2, K, N), false, false), var(g, "b", 1, N, 0));
        tg_tensor out[2] = {h, tg_add(g, tg_mul(g, tg_gelu(g, h), sc), r)};
        OK(tg_graph_status(g));
        tg_array xv = make_f32(2, xs, -1, 0.03f, 67), sv = make_f32(2, ss, 0.5f, 0.1f, 7),
                 rv = make_f32(2, rs, -0.3f, 0.01f, 41);
        tg_feed f[] = {{x, &xv}, {sc, &sv}, {r, &rv}};
        int on, off;
        compare(g, 2, out, 0, NULL, 3, f, 0, NULL, 1e-5, &on, &off);
        assert_int_equal(on, 1);
        tg_array_free(&xv);
        tg_array_free(&sv);
        tg_array_free(&rv);
        tg_graph_free(g);
    }
}

/* Logits read only by cross_entropy and its gradient: the two are kernels
 * of their own (the loss first) and the gradient is written over the
 * logits, so the arena holds one [R, C] buffer, not two; loss and the
 * weight gradient as with the passes off. */
static void test_cross_entropy_grad_in_place(void **state) {
    (void)state;
    enum { R = 256, K = 4, C = 100 };
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {R, K}, ys[] = {R};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor y = tg_placeholder(g, "y", TG_I32, 1, ys);
    tg_tensor w = var(g, "w", 2, K, C);
    tg_tensor loss = tg_cross_entropy(g, tg_matmul(g, x, w, false, false), y, -100);
    tg_tensor targets[2] = {loss};
    OK(tg_gradients(g, loss, 1, &w, &targets[1]));
    OK(tg_graph_status(g));
    tg_array xv = make_f32(2, xs, -1, 0.07f, 29), yv = {0};
    OK(tg_array_alloc(&yv, TG_I32, 1, ys));
    for (int i = 0; i < R; i++) ((int32_t *)yv.data)[i] = i % 7 == 3 ? -100 : (i * 37) % C;
    tg_feed f[] = {{x, &xv}, {y, &yv}};
    int on, off;
    compare(g, 2, targets, 0, NULL, 2, f, 0, NULL, 1e-5, &on, &off);
    uint64_t arena = arena_on(g, 2, targets);
    assert_true(arena >= (uint64_t)R * C * 4);
    assert_true(arena < (uint64_t)R * C * 4 * 3 / 2);
    tg_array_free(&xv);
    tg_array_free(&yv);
    tg_graph_free(g);
}

/* dx = dy w^T and dw = x^T dy share a kernel (sibling matmuls reading
 * dy), which holds the arena's peak: x, dy, dx and dw live at once. Apart,
 * dw runs first and frees x: the executor splits the group (one more
 * dispatch) and the arena drops from 208 KiB to 144 KiB; values as with
 * the passes off. */
static void test_split_group_at_peak(void **state) {
    (void)state;
    enum { R = 256, K = 64, N = 64 };
    tg_graph *g = tg_graph_new();
    int64_t us[] = {R, 1}, vs[] = {1, K}, ws[] = {1, N};
    tg_tensor u = tg_placeholder(g, "u", TG_F32, 2, us);
    tg_tensor v = tg_placeholder(g, "v", TG_F32, 2, vs);
    tg_tensor t = tg_placeholder(g, "t", TG_F32, 2, ws);
    tg_tensor x = tg_exp(g, tg_mul(g, u, v));   /* [R, K] */
    tg_tensor dy = tg_tanh(g, tg_add(g, u, t)); /* [R, N] */
    tg_tensor w = var(g, "w", 2, K, N);
    tg_tensor targets[2] = {tg_matmul(g, dy, w, false, true), tg_matmul(g, x, dy, true, false)};
    OK(tg_graph_status(g));
    tg_array uv = make_f32(2, us, -0.5f, 0.01f, 97), vv = make_f32(2, vs, 0.2f, -0.013f, 61),
             tv = make_f32(2, ws, -0.1f, 0.011f, 41);
    tg_feed f[] = {{u, &uv}, {v, &vv}, {t, &tv}};
    int on, off;
    compare(g, 2, targets, 0, NULL, 3, f, 0, NULL, 1e-5, &on, &off);
    uint64_t arena = arena_on(g, 2, targets);
    /* the peak's report: dw's kernel, x and dy live (dx not yet) */
    tg_executable *e = NULL;
    char *peak = NULL;
    assert_int_equal(tg_executable_memory_peak(e, &peak), TG_ERR_INVALID_ARGUMENT);
    tg_store *store = tg_store_new();
    OK(tg_store_init_missing(store, g, 99, 0.2));
    OK(tg_compile(dev, g, store, 2, targets, 0, NULL, NULL, &e));
    OK(tg_executable_memory_peak(e, &peak));
    char want[64];
    snprintf(want, sizeof want, "peak: %llu bytes in 3 buffers", (unsigned long long)arena);
    if (!strstr(peak, want) || !strstr(peak, "65536  exp (node") ||
        !strstr(peak, "65536  tanh (node") || !strstr(peak, "16384  matmul (node"))
        fail_msg("peak report:\n%s", peak);
    free(peak);
    tg_executable_free(e);
    tg_store_free(store);
    assert_true(arena >= (uint64_t)(2 * R * K + K * N) * 4);
    assert_true(arena <= (uint64_t)(2 * R * K + K * N) * 4 + 4096);
    assert_int_equal(on, 4); /* x, dy, dw, dx */
    tg_array_free(&uv);
    tg_array_free(&vv);
    tg_array_free(&tv);
    tg_graph_free(g);
}

/* A group of unequal parts: dx = dy w^T (32 workgroups), dw = x^T dy (4,
 * K = 512) and the bias gradient db = sum(dy) (1). On CPUs every
 * workgroup runs its share of each part, and the small parts sit spread
 * over the grid (gen_group.c): values as with the passes off. */
static void test_group_parts_spread(void **state) {
    (void)state;
    enum { R = 512, K = 256, N = 64 };
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {R, K}, ys[] = {R, N};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor dy_in = tg_placeholder(g, "dy", TG_F32, 2, ys);
    tg_tensor dy = tg_tanh(g, dy_in);
    tg_tensor w = var(g, "w", 2, K, N), w2 = var(g, "w2", 2, 16, N);
    int axes[] = {0};
    tg_tensor dw = tg_matmul(g, x, dy, true, false);
    /* sin(z) (4 MiB, read by a product) holds the arena's peak, so the
     * executor does not split the group to lower it */
    int64_t zs[] = {1024, 1024};
    tg_tensor z_in = tg_placeholder(g, "z", TG_F32, 2, zs);
    tg_tensor z = tg_matmul(g, tg_sin(g, z_in), var(g, "v", 2, 1024, 4), false, false);
    tg_tensor targets[5] = {dw, tg_matmul(g, dy, w, false, true), tg_sum(g, dy, 1, axes, false),
                            tg_matmul(g, dy, w2, false, true), z};
    OK(tg_graph_status(g));
    tg_array xv = make_f32(2, xs, -0.5f, 0.003f, 97), yv = make_f32(2, ys, 0.2f, -0.013f, 61),
             zv = make_f32(2, zs, 0.1f, 0.001f, 13);
    tg_feed f[] = {{x, &xv}, {dy_in, &yv}, {z_in, &zv}};
    int on, off;
    compare(g, 5, targets, 0, NULL, 3, f, 0, NULL, 1e-4, &on, &off);
    assert_int_equal(off, 7);
    assert_int_equal(on, 4); /* tanh + sum, the group of three, sin, z's product */
    tg_array_free(&xv);
    tg_array_free(&yv);
    tg_array_free(&zv);
    tg_graph_free(g);
}

/* An unknown pass name in disable_passes is a compile error naming it. */
static void test_disable_unknown_pass(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {4};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 1, s);
    tg_tensor y = tg_exp(g, x);
    tg_compile_options o = {.disable_passes = "fusion,nonsense"};
    tg_executable *e = NULL;
    assert_int_equal(tg_compile(dev, g, NULL, 1, &y, 0, NULL, &o, &e), TG_ERR_INVALID_ARGUMENT);
    assert_null(e);
    assert_non_null(strstr(tg_last_error(), "nonsense"));
    tg_graph_free(g);
}

int main(void) {
    if (!tg_test_device_env(cache_dir, sizeof cache_dir, "tg_test_vk_fusion", true)) return 1;
    unsetenv("TG_DISABLE_PASSES");
    unsetenv("TG_DUMP_IR");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp),
        cmocka_unit_test(test_reduction_prologue_epilogue),
        cmocka_unit_test(test_transformer_block),
        cmocka_unit_test(test_training_step),
        cmocka_unit_test(test_attention_lowered),
        cmocka_unit_test(test_multi_tensor_adamw),
        cmocka_unit_test(test_matmul_batch_sum),
        cmocka_unit_test(test_reduction_stores_prologue),
        cmocka_unit_test(test_sibling_copies),
        cmocka_unit_test(test_adamw_groups_fill_bindings),
        cmocka_unit_test(test_alike_head_permutes),
        cmocka_unit_test(test_movement_in_chain),
        cmocka_unit_test(test_reuse_needs_war_barrier),
        cmocka_unit_test(test_matmul_epilogue_in_place),
        cmocka_unit_test(test_matmul_epilogue_vec4_edges),
        cmocka_unit_test(test_cross_entropy_grad_in_place),
        cmocka_unit_test(test_split_group_at_peak),
        cmocka_unit_test(test_group_parts_spread),
        cmocka_unit_test(test_disable_unknown_pass),
    };
    int rc = 1;
    if (tg_test_open_device(&dev, true) == 0) {
        rc = cmocka_run_group_tests(tests, NULL, NULL);
        tg_device_free(dev);
    }
    tg_test_remove_tree(cache_dir);
    return rc;
}
