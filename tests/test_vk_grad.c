/* test_vk_grad.c — gradients and optimizer steps on the Vulkan device
 * against the reference interpreter (tg_interpret in f32, flags 0), on
 * lavapipe with the validation layer on and a fresh TG_CACHE_DIR.
 *
 * Gradients: each case builds y = f(inputs) on placeholders with seeded
 * random values, takes the vector-Jacobian product with a random seed
 * placeholder (tg_gradients_seeded; a scalar loss for cross_entropy),
 * compiles the gradient nodes as targets and compares them, per element,
 * |vk - interp| <= atol + rtol * max|interp| (the scale of the gradient,
 * so cancellation in one element does not need a relative bound):
 *  - copies, sums of a few terms, selections (neg, abs, relu, max/min,
 *    where, movement, gather/scatter, slice, pad, concat, add/sub/mul):
 *    rtol 1e-6 — a different summation order of a few f32 terms;
 *  - transcendental chains (exp/log/tanh/erf/gelu/sigmoid/pow...): rtol
 *    1e-5 — GLSL exp/log are a few ulp, chains of 2-4 of them and the
 *    interpreter's f64 intermediates differ by up to ~1e-6 relative;
 *  - matmul, conv1d, reductions and the composites (softmax, layer_norm,
 *    attention, cross_entropy): rtol 2e-5 — f32 accumulation over rows of
 *    up to 64 terms (error ~ sqrt(n) * 2^-24 * sum|terms|) plus exp/log;
 *    attention recomputes softmax statistics in f32 along another path.
 * A wrong index or a missing term gives errors of order 1e-1 here.
 *
 * Optimizers: AdamW and SGD (plain, momentum + dampening + weight decay,
 * nesterov) update variables for 10 steps with a different lr each step
 * (fed, never recompiling: one specialisation, no new shaderc compile);
 * weights and moments after every step match the interpreter's within
 * 2e-6 + 2e-6 * |x| (f32 arithmetic vs the interpreter's f64 rounded to
 * f32 per step; AdamW's bias corrections use expm1). A training step
 * (forward, loss, gradients, AdamW on the weights the forward read) runs
 * with the update in place and matches the interpreter step by step. */
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

static tg_device *dev;
static char cache_dir[256];

/* ---- feeds ---- */

#define MAX_FEEDS 8
typedef struct fixture {
    tg_graph *g;
    tg_feed feeds[MAX_FEEDS];
    tg_array vals[MAX_FEEDS];
    int n_feeds;
} fixture;

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static double urand(void) { /* uniform in [0, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / (double)(1ull << 53);
}

/* A placeholder fed with uniform values in [lo, hi] (i32: whole numbers). */
static tg_tensor ph(fixture *f, tg_dtype dt, int rank, const int64_t *shape, double lo, double hi) {
    char name[16];
    assert_true(f->n_feeds < MAX_FEEDS);
    snprintf(name, sizeof name, "p%d", f->n_feeds);
    tg_tensor t = tg_placeholder(f->g, name, dt, rank, shape);
    tg_array *a = &f->vals[f->n_feeds];
    OK(tg_array_alloc(a, dt, rank, shape));
    for (int64_t i = 0; i < tg_array_count(a); i++) {
        double v = lo + (hi - lo + (dt == TG_I32 ? 1 : 0)) * urand();
        tg_array_set(a, i, dt == TG_I32 ? floor(v) : v);
    }
    f->feeds[f->n_feeds].tensor = t;
    f->feeds[f->n_feeds].value = a;
    f->n_feeds++;
    return t;
}

static void fixture_free(fixture *f) {
    for (int i = 0; i < f->n_feeds; i++) tg_array_free(&f->vals[i]);
    tg_graph_free(f->g);
    memset(f, 0, sizeof *f);
}

/* ---- comparing gradients ---- */

/* Takes the VJP of y (seeded with random values; a scalar y is seeded
 * with a random scalar too) with respect to wrt[0..n), runs the
 * gradients on the interpreter and on the device and compares them. */
static void check_grads(fixture *f, const char *what, tg_tensor y, int n, const tg_tensor *wrt,
                        double rtol) {
    if (tg_graph_status(f->g) != TG_OK) fail_msg("%s: %s", what, tg_graph_error(f->g));
    int64_t ys[TG_MAX_RANK];
    int yr = tg_tensor_shape(f->g, y, ys);
    tg_tensor seed = ph(f, TG_F32, yr, ys, -1, 1);
    tg_tensor grads[8];
    assert_true(n <= 8);
    OK(tg_gradients_seeded(f->g, y, seed, n, wrt, grads));
    tg_array want[8], got[8];
    memset(want, 0, sizeof want);
    memset(got, 0, sizeof got);
    OK(tg_interpret(f->g, NULL, f->n_feeds, f->feeds, n, grads, want, 0, NULL, 0));
    tg_executable *e = NULL;
    tg_store *store = tg_store_new();
    OK(tg_compile(dev, f->g, store, n, grads, 0, NULL, NULL, &e));
    OK(tg_run(e, f->n_feeds, f->feeds, got));
    for (int i = 0; i < n; i++) {
        int64_t cnt = tg_array_count(&want[i]);
        assert_int_equal(tg_array_count(&got[i]), cnt);
        double scale = 0;
        for (int64_t j = 0; j < cnt; j++) scale = fmax(scale, fabs(tg_array_get(&want[i], j)));
        if (!(scale > 0)) fail_msg("%s: gradient %d is all zeros; the case tests nothing", what, i);
        for (int64_t j = 0; j < cnt; j++) {
            double gv = tg_array_get(&got[i], j), wv = tg_array_get(&want[i], j);
            if (!(fabs(gv - wv) <= rtol * scale))
                fail_msg("%s: gradient %d element %lld: vk %.9g, interpreter %.9g (scale %.3g, "
                         "rtol %.1e)",
                         what, i, (long long)j, gv, wv, scale, rtol);
        }
        tg_array_free(&want[i]);
        tg_array_free(&got[i]);
    }
    tg_executable_free(e);
    tg_store_free(store);
    tg_test_assert_validation_silent();
}

#define S(...) ((const int64_t[]){__VA_ARGS__})

/* ---- elementwise ---- */

typedef tg_tensor (*unary_fn)(tg_graph *, tg_tensor);

static void test_unary_grads(void **state) {
    (void)state;
    static const struct {
        const char *name;
        unary_fn f;
        double lo, hi, rtol;
    } ops[] = {
        {"neg", tg_neg, -2, 2, 1e-6},
        {"abs", tg_abs, -2, 2, 1e-6},
        {"exp", tg_exp, -2, 2, 1e-5},
        {"log", tg_log, 0.2, 3, 1e-5},
        {"sqrt", tg_sqrt, 0.2, 3, 1e-5},
        {"rsqrt", tg_rsqrt, 0.2, 3, 1e-5},
        {"reciprocal", tg_reciprocal, 0.2, 3, 1e-5},
        {"square", tg_square, -2, 2, 1e-6},
        {"tanh", tg_tanh, -3, 3, 1e-5},
        {"erf", tg_erf, -2, 2, 1e-5},
        {"gelu", tg_gelu, -4, 4, 1e-5},
        {"gelu_tanh", tg_gelu_tanh, -4, 4, 1e-5},
        {"relu", tg_relu, -2, 2, 1e-6},
        {"sigmoid", tg_sigmoid, -4, 4, 1e-5},
        {"silu", tg_silu, -4, 4, 1e-5},
        {"sin", tg_sin, -3, 3, 1e-5},
        {"cos", tg_cos, -3, 3, 1e-5},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        char what[64];
        /* f(x) on [7, 13]; f(x + b) with b [13] broadcast over rows */
        fixture f = {.g = tg_graph_new()};
        tg_tensor x = ph(&f, TG_F32, 2, S(7, 13), ops[i].lo, ops[i].hi);
        snprintf(what, sizeof what, "%s [7,13]", ops[i].name);
        check_grads(&f, what, ops[i].f(f.g, x), 1, &x, ops[i].rtol);
        fixture_free(&f);

        f.g = tg_graph_new();
        x = ph(&f, TG_F32, 3, S(3, 2, 5), ops[i].lo / 2, ops[i].hi / 2);
        tg_tensor bb = ph(&f, TG_F32, 1, S(5), ops[i].lo / 2, ops[i].hi / 2);
        tg_tensor wrt[] = {x, bb};
        snprintf(what, sizeof what, "%s(x + b) [3,2,5] + [5]", ops[i].name);
        check_grads(&f, what, ops[i].f(f.g, tg_add(f.g, x, bb)), 2, wrt, ops[i].rtol);
        fixture_free(&f);
    }
}

typedef tg_tensor (*binary_fn)(tg_graph *, tg_tensor, tg_tensor);

static void test_binary_grads(void **state) {
    (void)state;
    static const struct {
        const char *name;
        binary_fn f;
        double lo, hi, rtol;
    } ops[] = {
        {"add", tg_add, -2, 2, 1e-6},         {"sub", tg_sub, -2, 2, 1e-6},
        {"mul", tg_mul, -2, 2, 1e-6},         {"div", tg_div, 0.5, 2, 1e-5},
        {"pow", tg_pow, 0.5, 2, 1e-5},        {"maximum", tg_maximum, -2, 2, 1e-6},
        {"minimum", tg_minimum, -2, 2, 1e-6},
    };
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        char what[64];
        fixture f = {.g = tg_graph_new()};
        tg_tensor a = ph(&f, TG_F32, 2, S(6, 9), ops[i].lo, ops[i].hi);
        tg_tensor b = ph(&f, TG_F32, 2, S(6, 9), ops[i].lo, ops[i].hi);
        tg_tensor wrt[] = {a, b};
        snprintf(what, sizeof what, "%s [6,9] [6,9]", ops[i].name);
        check_grads(&f, what, ops[i].f(f.g, a, b), 2, wrt, ops[i].rtol);
        fixture_free(&f);

        f.g = tg_graph_new();
        a = ph(&f, TG_F32, 3, S(4, 1, 7), ops[i].lo, ops[i].hi);
        b = ph(&f, TG_F32, 2, S(3, 1), ops[i].lo, ops[i].hi);
        tg_tensor wrt2[] = {a, b};
        snprintf(what, sizeof what, "%s [4,1,7] [3,1]", ops[i].name);
        check_grads(&f, what, ops[i].f(f.g, a, b), 2, wrt2, ops[i].rtol);
        fixture_free(&f);
    }
    /* where: the values' gradients, broadcast condition */
    fixture f = {.g = tg_graph_new()};
    tg_tensor c = tg_gt(f.g, ph(&f, TG_F32, 2, S(1, 8), -1, 1), tg_scalar(f.g, TG_F32, 0));
    tg_tensor a = ph(&f, TG_F32, 2, S(5, 8), -1, 1), b = ph(&f, TG_F32, 1, S(8), -1, 1);
    tg_tensor wrt[] = {a, b};
    check_grads(&f, "where", tg_where(f.g, c, a, b), 2, wrt, 1e-6);
    fixture_free(&f);
    /* cast f32 -> f32 chain through f16 rounding is not differentiable
     * exactly; a cast to f32 of f32 is */
    f.g = tg_graph_new();
    a = ph(&f, TG_F32, 2, S(3, 4), -1, 1);
    check_grads(&f, "cast", tg_mul(f.g, tg_cast(f.g, a, TG_F32), a), 1, &a, 1e-6);
    fixture_free(&f);
}

static void test_reduction_grads(void **state) {
    (void)state;
    for (int op = 0; op < 4; op++) {
        static const char *names[] = {"sum", "mean", "max", "min"};
        tg_tensor (*fn[])(tg_graph *, tg_tensor, int, const int *, bool) = {tg_sum, tg_mean, tg_max,
                                                                            tg_min};
        char what[64];
        fixture f = {.g = tg_graph_new()};
        tg_tensor x = ph(&f, TG_F32, 3, S(4, 70, 3), -1, 1);
        snprintf(what, sizeof what, "%s axis 1 of [4,70,3]", names[op]);
        check_grads(&f, what, fn[op](f.g, x, 1, (const int[]){1}, false), 1, &x, 2e-5);
        fixture_free(&f);
        f.g = tg_graph_new();
        x = ph(&f, TG_F32, 2, S(5, 6), -1, 1);
        snprintf(what, sizeof what, "%s all of [5,6] keepdims", names[op]);
        check_grads(&f, what, fn[op](f.g, x, 0, NULL, true), 1, &x, 2e-5);
        fixture_free(&f);
    }
}

static void test_movement_grads(void **state) {
    (void)state;
    fixture f = {.g = tg_graph_new()};
    tg_tensor x = ph(&f, TG_F32, 3, S(2, 3, 4), -1, 1);
    check_grads(&f, "reshape", tg_reshape(f.g, x, 2, S(6, 4)), 1, &x, 1e-6);
    fixture_free(&f);

    f.g = tg_graph_new();
    x = ph(&f, TG_F32, 3, S(2, 3, 4), -1, 1);
    check_grads(&f, "permute", tg_permute(f.g, x, 3, (const int[]){2, 0, 1}), 1, &x, 1e-6);
    fixture_free(&f);

    f.g = tg_graph_new();
    x = ph(&f, TG_F32, 2, S(3, 1), -1, 1);
    check_grads(&f, "broadcast_to", tg_broadcast_to(f.g, x, 3, S(2, 3, 5)), 1, &x, 1e-6);
    fixture_free(&f);

    /* unit steps (pad in the gradient) and strides (slice_grad) */
    f.g = tg_graph_new();
    x = ph(&f, TG_F32, 2, S(5, 9), -1, 1);
    check_grads(&f, "slice unit steps", tg_slice(f.g, x, S(1, 2), S(4, INT64_MAX), S(1, 1)), 1, &x,
                1e-6);
    fixture_free(&f);
    f.g = tg_graph_new();
    x = ph(&f, TG_F32, 2, S(5, 9), -1, 1);
    check_grads(&f, "slice steps 2, 3", tg_slice(f.g, x, S(1, 0), S(5, 9), S(2, 3)), 1, &x, 1e-6);
    fixture_free(&f);
    f.g = tg_graph_new();
    x = ph(&f, TG_F32, 3, S(3, 7, 4), -1, 1);
    check_grads(&f, "slice rank 3 step 4, negative begin",
                tg_slice(f.g, x, S(0, -6, 1), S(3, INT64_MAX, 4), S(2, 4, 2)), 1, &x, 1e-6);
    fixture_free(&f);

    f.g = tg_graph_new();
    tg_tensor a = ph(&f, TG_F32, 2, S(2, 3), -1, 1), b = ph(&f, TG_F32, 2, S(2, 5), -1, 1);
    tg_tensor ab[] = {a, b};
    check_grads(&f, "concat", tg_concat(f.g, 2, ab, 1), 2, ab, 1e-6);
    fixture_free(&f);

    f.g = tg_graph_new();
    x = ph(&f, TG_F32, 2, S(3, 4), -1, 1);
    check_grads(&f, "pad", tg_pad(f.g, x, S(1, 0), S(2, 3), 0.5), 1, &x, 1e-6);
    fixture_free(&f);

    /* gather with repeated and out-of-range indices; its VJP is scatter_add */
    f.g = tg_graph_new();
    x = ph(&f, TG_F32, 2, S(6, 5), -1, 1);
    tg_tensor idx = ph(&f, TG_I32, 2, S(2, 7), -1, 6);
    check_grads(&f, "gather axis 0", tg_gather(f.g, x, idx, 0), 1, &x, 1e-6);
    fixture_free(&f);
    f.g = tg_graph_new();
    x = ph(&f, TG_F32, 3, S(2, 6, 3), -1, 1);
    idx = ph(&f, TG_I32, 1, S(9), 0, 5);
    check_grads(&f, "gather axis 1", tg_gather(f.g, x, idx, 1), 1, &x, 1e-6);
    fixture_free(&f);

    f.g = tg_graph_new();
    tg_tensor t = ph(&f, TG_F32, 2, S(6, 4), -1, 1), u = ph(&f, TG_F32, 2, S(5, 4), -1, 1);
    idx = ph(&f, TG_I32, 1, S(5), 0, 5);
    tg_tensor tu[] = {t, u};
    check_grads(&f, "scatter_add", tg_scatter_add(f.g, t, idx, u, 0), 2, tu, 1e-6);
    fixture_free(&f);
}

static void test_matmul_conv_grads(void **state) {
    (void)state;
    fixture f = {.g = tg_graph_new()};
    tg_tensor a = ph(&f, TG_F32, 2, S(9, 13), -1, 1), b = ph(&f, TG_F32, 2, S(13, 6), -1, 1);
    tg_tensor ab[] = {a, b};
    check_grads(&f, "matmul", tg_matmul(f.g, a, b, false, false), 2, ab, 2e-5);
    fixture_free(&f);
    f.g = tg_graph_new();
    a = ph(&f, TG_F32, 3, S(3, 13, 9), -1, 1);
    b = ph(&f, TG_F32, 2, S(6, 13), -1, 1);
    tg_tensor ab2[] = {a, b};
    check_grads(&f, "matmul batch-broadcast transposed", tg_matmul(f.g, a, b, true, true), 2, ab2,
                2e-5);
    fixture_free(&f);

    static const struct {
        int64_t n, cin, w, cout, k;
        int stride, pad, dil;
    } convs[] = {{2, 3, 11, 4, 3, 1, 1, 1}, {1, 2, 12, 3, 3, 2, 2, 2}, {3, 5, 8, 2, 1, 1, 0, 1}};
    for (size_t i = 0; i < sizeof convs / sizeof convs[0]; i++) {
        char what[96];
        f.g = tg_graph_new();
        tg_tensor x = ph(&f, TG_F32, 3, S(convs[i].n, convs[i].cin, convs[i].w), -1, 1);
        tg_tensor w = ph(&f, TG_F32, 3, S(convs[i].cout, convs[i].cin, convs[i].k), -1, 1);
        tg_tensor xw[] = {x, w};
        snprintf(what, sizeof what, "conv1d case %zu (stride %d, padding %d, dilation %d)", i,
                 convs[i].stride, convs[i].pad, convs[i].dil);
        check_grads(&f, what, tg_conv1d(f.g, x, w, convs[i].stride, convs[i].pad, convs[i].dil), 2,
                    xw, 2e-5);
        fixture_free(&f);
    }
}

static void test_softmax_layer_norm_grads(void **state) {
    (void)state;
    for (int lg = 0; lg < 2; lg++) {
        tg_tensor (*fn)(tg_graph *, tg_tensor, int) = lg ? tg_log_softmax : tg_softmax;
        char what[64];
        /* a long row (one workgroup per row) and a short strided one */
        fixture f = {.g = tg_graph_new()};
        tg_tensor x = ph(&f, TG_F32, 2, S(4, 70), -3, 3);
        snprintf(what, sizeof what, "%s [4,70] axis -1", lg ? "log_softmax" : "softmax");
        check_grads(&f, what, fn(f.g, x, -1), 1, &x, 2e-5);
        fixture_free(&f);
        f.g = tg_graph_new();
        x = ph(&f, TG_F32, 3, S(3, 6, 5), -3, 3);
        tg_tensor bb = ph(&f, TG_F32, 2, S(6, 1), -1, 1);
        tg_tensor wrt[] = {x, bb};
        snprintf(what, sizeof what, "%s(x + b) [3,6,5] axis 1", lg ? "log_softmax" : "softmax");
        check_grads(&f, what, fn(f.g, tg_add(f.g, x, bb), 1), 2, wrt, 2e-5);
        fixture_free(&f);
    }
    /* layer_norm_grad_wb walks rows in chunks of its workgroup: more rows
     * than one chunk, a last partial chunk, D not a multiple of 4 */
    static const int64_t shapes[][3] = {{6, 40, 0},   {2, 3, 8}, {1, 5, 130},
                                        {3, 130, 33}, {1, 1, 6}, {300, 1, 129}};
    for (int i = 0; i < 6; i++) {
        char what[64];
        fixture f = {.g = tg_graph_new()};
        int rank = shapes[i][2] ? 3 : 2;
        int64_t D = shapes[i][rank - 1];
        tg_tensor x = ph(&f, TG_F32, rank, shapes[i], -2, 2);
        tg_tensor w = ph(&f, TG_F32, 1, S(D), 0.5, 1.5), b = ph(&f, TG_F32, 1, S(D), -1, 1);
        tg_tensor wrt[] = {x, w, b};
        snprintf(what, sizeof what, "layer_norm case %d (D %lld)", i, (long long)D);
        check_grads(&f, what, tg_layer_norm(f.g, x, w, b, 1e-5), 3, wrt, 2e-5);
        fixture_free(&f);
    }
}

static void test_attention_grads(void **state) {
    (void)state;
    static const struct {
        int rq, rk;
        int64_t qs[4], ks[4], vs[4];
        bool causal, mask;
        const char *what;
    } cases[] = {
        {3, 3, {2, 5, 8}, {2, 7, 8}, {2, 7, 6}, false, false, "cross Tq 5 Tk 7"},
        {3, 3, {2, 9, 4}, {2, 9, 4}, {2, 9, 4}, true, false, "causal 9"},
        {3, 3, {1, 4, 8}, {1, 10, 8}, {1, 10, 3}, true, true, "causal Tq 4 Tk 10 masked"},
        {4, 3, {2, 3, 4, 8}, {3, 6, 8}, {3, 6, 5}, false, true, "batch broadcast, masked"},
        {3, 3, {1, 70, 16}, {1, 70, 16}, {1, 70, 16}, true, false, "causal 70 (chunks)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fixture f = {.g = tg_graph_new()};
        tg_tensor q = ph(&f, TG_F32, cases[i].rq, cases[i].qs, -1, 1);
        tg_tensor k = ph(&f, TG_F32, cases[i].rk, cases[i].ks, -1, 1);
        tg_tensor v = ph(&f, TG_F32, cases[i].rk, cases[i].vs, -1, 1);
        tg_tensor m = TG_INVALID;
        if (cases[i].mask) {
            int64_t Tq = cases[i].qs[cases[i].rq - 2], Tk = cases[i].ks[cases[i].rk - 2];
            m = ph(&f, TG_F32, 2, S(Tq, Tk), -2, 0);
            /* a fully masked key column and a -inf entry */
            for (int64_t r = 0; r < Tq; r++)
                tg_array_set(&f.vals[f.n_feeds - 1], r * Tk, -INFINITY);
        }
        tg_tensor qkv[] = {q, k, v};
        check_grads(&f, cases[i].what, tg_attention(f.g, q, k, v, m, cases[i].causal, 0), 3, qkv,
                    2e-5);
        fixture_free(&f);
    }
}

static void test_cross_entropy_grads(void **state) {
    (void)state;
    fixture f = {.g = tg_graph_new()};
    tg_tensor x = ph(&f, TG_F32, 2, S(6, 11), -3, 3);
    tg_tensor y = ph(&f, TG_I32, 1, S(6), 0, 10);
    tg_array_set(&f.vals[1], 2, -100); /* ignored */
    check_grads(&f, "cross_entropy [6,11] ignore", tg_cross_entropy(f.g, x, y, -100), 1, &x, 2e-5);
    fixture_free(&f);
    f.g = tg_graph_new();
    x = ph(&f, TG_F32, 3, S(2, 3, 40), -3, 3);
    y = ph(&f, TG_I32, 2, S(2, 3), 0, 39);
    tg_tensor bias = ph(&f, TG_F32, 1, S(40), -1, 1);
    tg_tensor wrt[] = {x, bias};
    check_grads(&f, "cross_entropy [2,3,40] + bias",
                tg_cross_entropy(f.g, tg_add(f.g, x, bias), y, -1), 2, wrt, 2e-5);
    fixture_free(&f);
    /* rows over several workgroups: short rows (one per invocation) and
     * long ones (walked by a workgroup), every 7th row ignored */
    static const int64_t big[][2] = {{300, 50}, {1024, 4000}};
    for (int c = 0; c < 2; c++) {
        f.g = tg_graph_new();
        x = ph(&f, TG_F32, 2, big[c], -5, 5);
        y = ph(&f, TG_I32, 1, big[c], 0, (double)big[c][1] - 1);
        for (int64_t r = 0; r < big[c][0]; r += 7) tg_array_set(&f.vals[1], r, -100);
        check_grads(&f, c ? "cross_entropy [1024,4000] ignore" : "cross_entropy [300,50] ignore",
                    tg_cross_entropy(f.g, x, y, -100), 1, &x, 2e-5);
        fixture_free(&f);
    }
}

/* ---- optimizers ---- */

/* Every variable of the interpreter's store si equals the device's sv
 * within tol (absolute and relative), after step t of `what`. */
static void assert_stores_agree(tg_store *si, tg_store *sv, double tol, const char *what, int t) {
    for (int k = 0; k < tg_store_count(si); k++) {
        const char *name = tg_store_name(si, k);
        tg_array a = {0}, b = {0};
        OK(tg_store_get(si, name, &a));
        OK(tg_store_get(sv, name, &b));
        for (int64_t j = 0; j < tg_array_count(&a); j++) {
            double x = tg_array_get(&a, j), y = tg_array_get(&b, j);
            if (!(fabs(x - y) <= tol + tol * fabs(x)))
                fail_msg("%s: step %d, %s[%lld]: vk %.9g, interpreter %.9g", what, t, name,
                         (long long)j, y, x);
        }
        tg_array_free(&a);
        tg_array_free(&b);
    }
}

typedef struct optim_case {
    const char *what;
    bool adam;
    double momentum, dampening, wd;
    bool nesterov;
} optim_case;

static void run_optimizer(const optim_case *c) {
    tg_graph *g = tg_graph_new();
    int64_t shapes[2][2] = {{37, 1}, {5, 7}};
    tg_tensor vars[2], grads[2], ups[2];
    tg_tensor lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    tg_tensor step = tg_placeholder(g, "step", c->adam ? TG_I32 : TG_F32, 0, NULL);
    for (int i = 0; i < 2; i++) {
        char name[16];
        snprintf(name, sizeof name, "w%d", i);
        vars[i] = tg_variable(g, name, TG_F32, 2, shapes[i], true);
        snprintf(name, sizeof name, "g%d", i);
        grads[i] = tg_placeholder(g, name, TG_F32, 2, shapes[i]);
        ups[i] = c->adam ? tg_adamw(g, vars[i], grads[i], lr, step, 0.9, 0.999, 1e-8, c->wd)
                         : tg_sgd(g, vars[i], grads[i], lr, c->momentum != 0 ? step : TG_INVALID,
                                  c->momentum, c->dampening, c->nesterov, c->wd);
    }
    if (tg_graph_status(g) != TG_OK) fail_msg("%s: %s", c->what, tg_graph_error(g));
    tg_store *si = tg_store_new(), *sv = tg_store_new();
    OK(tg_store_init_missing(si, g, 7, 1.0));
    OK(tg_store_init_missing(sv, g, 7, 1.0));
    tg_executable *e = NULL;
    OK(tg_compile(dev, g, sv, 0, NULL, 2, ups, NULL, &e));
    tg_array lr_v, step_v, gv[2];
    OK(tg_array_alloc(&lr_v, TG_F32, 0, NULL));
    OK(tg_array_alloc(&step_v, c->adam ? TG_I32 : TG_F32, 0, NULL));
    for (int i = 0; i < 2; i++) OK(tg_array_alloc(&gv[i], TG_F32, 2, shapes[i]));
    tg_feed feeds[] = {{lr, &lr_v}, {step, &step_v}, {grads[0], &gv[0]}, {grads[1], &gv[1]}};
    tg_vk_stats s0 = {0}, s1;
    for (int t = 1; t <= 10; t++) {
        tg_array_set(&lr_v, 0, 0.05 / t + 0.001 * t); /* a new learning rate every step */
        tg_array_set(&step_v, 0, t);
        for (int i = 0; i < 2; i++)
            for (int64_t j = 0; j < tg_array_count(&gv[i]); j++)
                tg_array_set(&gv[i], j, 2 * urand() - 1);
        int nf = c->adam || c->momentum != 0 ? 4 : 3;
        tg_feed *fd = nf == 4 ? feeds : (tg_feed[]){feeds[0], feeds[2], feeds[3]};
        OK(tg_interpret(g, si, nf, fd, 0, NULL, NULL, 2, ups, 0));
        OK(tg_run(e, nf, fd, NULL));
        if (t == 1) tg_vk_stats_get(&s0);
        assert_stores_agree(si, sv, 2e-6, c->what, t); /* every written variable, every step */
    }
    tg_vk_stats_get(&s1);
    assert_int_equal(tg_executable_specializations(e), 1);
    assert_int_equal(s1.shaderc_compiles, s0.shaderc_compiles);
    assert_int_equal(s1.pipelines_created, s0.pipelines_created);
    /* AdamW updates with equal hyperparameters share one multi-tensor
     * dispatch (passes/fusion.c); each SGD update is one dispatch */
    assert_int_equal(tg_executable_dispatches(e), c->adam ? 1 : 2);
    for (int i = 0; i < 2; i++) tg_array_free(&gv[i]);
    tg_array_free(&lr_v);
    tg_array_free(&step_v);
    tg_executable_free(e);
    tg_store_free(si);
    tg_store_free(sv);
    tg_graph_free(g);
    tg_test_assert_validation_silent();
}

static void test_optimizers_match_interpreter(void **state) {
    (void)state;
    static const optim_case cases[] = {
        {"adamw", true, 0, 0, 0.01, false},
        {"adamw no decay", true, 0, 0, 0, false},
        {"sgd", false, 0, 0, 0, false},
        {"sgd momentum dampening decay", false, 0.9, 0.25, 0.01, false},
        {"sgd nesterov", false, 0.8, 0, 0.001, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_optimizer(&cases[i]);
}

/* A whole training step: the forward reads the weights that AdamW then
 * updates in the same run (in place, after a barrier), the loss is a
 * target. Vulkan and interpreter agree step by step. */
static void test_training_step(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, S(16, 4));
    tg_tensor y = tg_placeholder(g, "y", TG_I32, 1, S(16));
    tg_tensor w1 = tg_variable(g, "w1", TG_F32, 2, S(4, 8), true);
    tg_tensor b1 = tg_variable(g, "b1", TG_F32, 1, S(8), true);
    tg_tensor w2 = tg_variable(g, "w2", TG_F32, 2, S(8, 3), true);
    tg_tensor h = tg_gelu(g, tg_add(g, tg_matmul(g, x, w1, false, false), b1));
    tg_tensor loss = tg_cross_entropy(g, tg_matmul(g, h, w2, false, false), y, -1);
    tg_tensor params[] = {w1, b1, w2}, grads[3], ups[3];
    OK(tg_gradients(g, loss, 3, params, grads));
    tg_tensor lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    tg_tensor step = tg_placeholder(g, "step", TG_F32, 0, NULL);
    for (int i = 0; i < 3; i++)
        ups[i] = tg_adamw(g, params[i], grads[i], lr, step, 0.9, 0.99, 1e-8, 0.01);
    tg_store *si = tg_store_new(), *sv = tg_store_new();
    OK(tg_store_init_missing(si, g, 3, 0.5));
    OK(tg_store_init_missing(sv, g, 3, 0.5));
    tg_executable *e = NULL;
    OK(tg_compile(dev, g, sv, 1, &loss, 3, ups, NULL, &e));
    tg_array xv, yv, lv, sv_;
    OK(tg_array_alloc(&xv, TG_F32, 2, S(16, 4)));
    OK(tg_array_alloc(&yv, TG_I32, 1, S(16)));
    OK(tg_array_alloc(&lv, TG_F32, 0, NULL));
    OK(tg_array_alloc(&sv_, TG_F32, 0, NULL));
    tg_feed feeds[] = {{x, &xv}, {y, &yv}, {lr, &lv}, {step, &sv_}};
    double first = 0, last = 0;
    for (int t = 1; t <= 8; t++) {
        for (int64_t j = 0; j < 64; j++) tg_array_set(&xv, j, 2 * urand() - 1);
        for (int64_t j = 0; j < 16; j++)
            tg_array_set(&yv, j,
                         tg_array_get(&xv, 4 * j) > 0 ? 1 : 2 * (tg_array_get(&xv, 4 * j + 1) > 0));
        tg_array_set(&lv, 0, 0.05);
        tg_array_set(&sv_, 0, t);
        tg_array li = {0}, lk = {0};
        OK(tg_interpret(g, si, 4, feeds, 1, &loss, &li, 3, ups, 0));
        OK(tg_run(e, 4, feeds, &lk));
        /* the loss is computed from the old weights on both */
        double a = tg_array_get(&li, 0), b = tg_array_get(&lk, 0);
        if (!(fabs(a - b) <= 1e-5 * fabs(a)))
            fail_msg("step %d: loss vk %.9g, interp %.9g", t, b, a);
        if (t == 1) first = a;
        last = a;
        tg_array_free(&li);
        tg_array_free(&lk);
        assert_stores_agree(si, sv, 1e-5, "training step", t);
    }
    assert_true(last < first); /* it learns */
    assert_int_equal(tg_executable_specializations(e), 1);
    tg_array_free(&xv);
    tg_array_free(&yv);
    tg_array_free(&lv);
    tg_array_free(&sv_);
    tg_executable_free(e);
    tg_store_free(si);
    tg_store_free(sv);
    tg_graph_free(g);
    tg_test_assert_validation_silent();
}

int main(void) {
    if (!tg_test_device_env(cache_dir, sizeof cache_dir, "tg_test_vk_grad", true)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary_grads),
        cmocka_unit_test(test_binary_grads),
        cmocka_unit_test(test_reduction_grads),
        cmocka_unit_test(test_movement_grads),
        cmocka_unit_test(test_matmul_conv_grads),
        cmocka_unit_test(test_softmax_layer_norm_grads),
        cmocka_unit_test(test_attention_grads),
        cmocka_unit_test(test_cross_entropy_grads),
        cmocka_unit_test(test_optimizers_match_interpreter),
        cmocka_unit_test(test_training_step),
    };
    int failed = 1;
    if (tg_test_open_device(&dev, true) == 0) {
        failed = cmocka_run_group_tests(tests, NULL, NULL);
        tg_device_free(dev);
    }
    tg_test_remove_tree(cache_dir);
    return failed;
}
