/* test_grad_ops.c — every VJP rule against central finite differences on
 * the interpreter in f64 (TG_INTERP_F64).
 *
 * One checker serves every op: it builds the op on inputs x_i = p_i + d_i
 * (p_i fed with test values, d_i a perturbation fed as zeros), takes
 * loss = sum(out * W) with fixed pseudo-random weights W, asks tg_gradients
 * for d loss / d p_i, and compares each element with
 * (loss(d_i[j] = +h) - loss(d_i[j] = -h)) / 2h. h is an f32 value, so the
 * perturbed input is exact in f64. The error of a gradient is
 * max_j |analytic_j - fd_j| / max_j |fd_j| and must stay below 1e-6.
 *
 * Every op with a VJP rule must appear in some case (the last test checks),
 * each on at least two shapes, broadcast inputs included. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autodiff/autodiff.h"
#include "graph/graph_internal.h"
#include "tg.h"

#define MAX_IN 4
#define TOLERANCE 1e-6

/* How test values are drawn: anywhere in [-1.5, 1.5], away from 0 (kinks
 * of relu, abs; poles of reciprocal), or positive (log, sqrt, pow). */
typedef enum gen { ANY, AWAY, POS } gen;

typedef struct input_spec {
    int rank;
    int64_t shape[TG_MAX_RANK];
    gen gen;
} input_spec;

typedef struct grad_case {
    const char *name;
    /* exactly one of these builds the op from the inputs */
    tg_tensor (*unary)(tg_graph *g, tg_tensor x);
    tg_tensor (*binary)(tg_graph *g, tg_tensor a, tg_tensor b);
    tg_tensor (*build)(tg_graph *g, const tg_tensor *x);
    int n;
    input_spec in[MAX_IN];
} grad_case;

static bool op_checked[TG_OP_COUNT];
static double worst_error;
static const char *worst_case;

/* ------------------------------------------------------------------ */
/* The checker                                                         */
/* ------------------------------------------------------------------ */

/* A deterministic value in [-1, 1) for element i of stream `seed`. */
static double noise(uint64_t seed, int64_t i) {
    uint64_t z = seed * 0x9e3779b97f4a7c15ull + (uint64_t)i * 0xbf58476d1ce4e5b9ull + 1;
    z = (z ^ (z >> 31)) * 0x94d049bb133111ebull;
    z ^= z >> 29;
    return (double)(z >> 11) * 0x1.0p-52 - 1.0;
}

static float test_value(gen kind, uint64_t seed, int64_t i) {
    double r = noise(seed, i);
    switch (kind) {
    case POS: return (float)(0.3 + 1.2 * fabs(r));
    case AWAY: return (float)(r < 0 ? r * 1.3 - 0.2 : r * 1.3 + 0.2);
    default: return (float)(1.5 * r);
    }
}

static tg_array f32_array(int rank, const int64_t *shape) {
    tg_array a = {0};
    assert_int_equal(tg_array_alloc(&a, TG_F32, rank, shape), TG_OK);
    return a;
}

static tg_tensor weights_like(tg_graph *g, tg_tensor out) {
    int64_t shape[TG_MAX_RANK];
    int rank = tg_tensor_shape(g, out, shape);
    tg_array w = f32_array(rank, shape);
    for (int64_t i = 0; i < tg_array_count(&w); i++) tg_array_set(&w, i, 0.25 + noise(99, i));
    tg_tensor t = tg_constant(g, TG_F32, rank, shape, w.data);
    tg_array_free(&w);
    return t;
}

static void mark_ops(const tg_graph *g, int from, int to) {
    for (int id = from; id < to; id++) op_checked[g->nodes[id].op] = true;
}

static tg_tensor build_op(const grad_case *c, tg_graph *g, const tg_tensor *x) {
    return c->unary ? c->unary(g, x[0]) : c->binary ? c->binary(g, x[0], x[1]) : c->build(g, x);
}

/* Runs the targets t[0..n) in f64; out[i] are f32 arrays (free them). */
static void eval(tg_graph *g, int n_feeds, const tg_feed *feeds, int n, const tg_tensor *t,
                 tg_array *out) {
    if (tg_interpret(g, NULL, n_feeds, feeds, n, t, out, 0, NULL, TG_INTERP_F64) != TG_OK)
        fail_msg("tg_interpret: %s", tg_last_error());
}

/* The error of every gradient of case c; fails if one exceeds TOLERANCE.
 * Results come back as f32, so the finite difference is formed inside
 * the graph, in f64: the op is built twice, on p + d and on p - d, and
 * fd = sum((out(p + d) - out(p - d)) * W) / 2h; with d = 0 the first copy
 * gives the loss that tg_gradients differentiates. */
static double check_case(const grad_case *c) {
    const float h = 1e-6f;
    tg_graph *g = tg_graph_new();
    tg_tensor p[MAX_IN], d[MAX_IN], xp[MAX_IN], xm[MAX_IN], grads[MAX_IN];
    tg_array pv[MAX_IN], dv[MAX_IN], results[MAX_IN];
    tg_feed feeds[2 * MAX_IN];
    for (int i = 0; i < c->n; i++) {
        char name[16];
        const input_spec *s = &c->in[i];
        snprintf(name, sizeof name, "p%d", i);
        p[i] = tg_placeholder(g, name, TG_F32, s->rank, s->shape);
        snprintf(name, sizeof name, "d%d", i);
        d[i] = tg_placeholder(g, name, TG_F32, s->rank, s->shape);
        xp[i] = tg_add(g, p[i], d[i]);
        xm[i] = tg_sub(g, p[i], d[i]);
        pv[i] = f32_array(s->rank, s->shape);
        dv[i] = f32_array(s->rank, s->shape);
        for (int64_t j = 0; j < tg_array_count(&pv[i]); j++)
            tg_array_set(&pv[i], j, test_value(s->gen, (uint64_t)(i + 1), j));
        feeds[2 * i] = (tg_feed){p[i], &pv[i]};
        feeds[2 * i + 1] = (tg_feed){d[i], &dv[i]};
    }
    int first_op = tg_graph_node_count(g);
    tg_tensor out = build_op(c, g, xp);
    if (tg_graph_status(g) != TG_OK) fail_msg("%s: build: %s", c->name, tg_graph_error(g));
    mark_ops(g, first_op, out.id + 1);
    tg_tensor w = weights_like(g, out);
    tg_tensor loss = tg_sum(g, tg_mul(g, out, w), 0, NULL, false);
    tg_tensor diff = tg_sub(g, out, build_op(c, g, xm));
    tg_tensor fd = tg_div(g, tg_sum(g, tg_mul(g, diff, w), 0, NULL, false),
                          tg_scalar(g, TG_F32, 2.0 * (double)h));
    if (tg_gradients(g, loss, c->n, p, grads) != TG_OK)
        fail_msg("%s: tg_gradients: %s", c->name, tg_last_error());
    eval(g, 2 * c->n, feeds, c->n, grads, results);

    double worst = 0;
    for (int i = 0; i < c->n; i++) {
        double max_err = 0, max_fd = 0;
        for (int64_t j = 0; j < tg_array_count(&dv[i]); j++) {
            tg_array r;
            tg_array_set(&dv[i], j, h);
            eval(g, 2 * c->n, feeds, 1, &fd, &r);
            double fd_j = tg_array_get(&r, 0);
            tg_array_free(&r);
            tg_array_set(&dv[i], j, 0);
            max_err = fmax(max_err, fabs(tg_array_get(&results[i], j) - fd_j));
            max_fd = fmax(max_fd, fabs(fd_j));
        }
        if (max_fd < 1e-3) fail_msg("%s: input %d: the gradient is ~0; a weak test", c->name, i);
        double err = max_err / max_fd;
        if (!(err < TOLERANCE))
            fail_msg("%s: input %d: relative error %.3g (max |fd| %.3g)", c->name, i, err, max_fd);
        worst = fmax(worst, err);
    }
    for (int i = 0; i < c->n; i++) {
        tg_array_free(&pv[i]);
        tg_array_free(&dv[i]);
        tg_array_free(&results[i]);
    }
    tg_graph_free(g);
    return worst;
}

static void run_case(void **state) {
    const grad_case *c = *state;
    double err = check_case(c);
    if (err > worst_error) {
        worst_error = err;
        worst_case = c->name;
    }
}

/* ------------------------------------------------------------------ */
/* Builders for the ops with attributes or extra inputs                */
/* ------------------------------------------------------------------ */

static tg_tensor i32_constant(tg_graph *g, int rank, const int64_t *shape, const int32_t *v) {
    return tg_constant(g, TG_I32, rank, shape, v);
}

static tg_tensor b_cast(tg_graph *g, const tg_tensor *x) {
    return tg_cast(g, tg_mul(g, tg_cast(g, x[0], TG_F16), tg_cast(g, x[0], TG_F16)), TG_F32);
}

static tg_tensor b_where(tg_graph *g, const tg_tensor *x) {
    int64_t s[] = {3, 1, 4};
    uint8_t c[12];
    for (int i = 0; i < 12; i++) c[i] = (uint8_t)(i % 3 != 1);
    return tg_where(g, tg_constant(g, TG_U8, 3, s, c), x[0], x[1]);
}

static tg_tensor b_sum_axis(tg_graph *g, const tg_tensor *x) {
    int ax[] = {1};
    return tg_sum(g, x[0], 1, ax, false);
}
static tg_tensor b_sum_all(tg_graph *g, const tg_tensor *x) {
    return tg_sum(g, x[0], 0, NULL, true);
}
static tg_tensor b_mean_axes(tg_graph *g, const tg_tensor *x) {
    int ax[] = {0, -1};
    return tg_mean(g, x[0], 2, ax, true);
}
static tg_tensor b_mean_all(tg_graph *g, const tg_tensor *x) {
    return tg_mean(g, x[0], 0, NULL, false);
}
static tg_tensor b_max_axis(tg_graph *g, const tg_tensor *x) {
    int ax[] = {1};
    return tg_max(g, x[0], 1, ax, false);
}
static tg_tensor b_max_all(tg_graph *g, const tg_tensor *x) {
    return tg_max(g, x[0], 0, NULL, false);
}
static tg_tensor b_min_axes(tg_graph *g, const tg_tensor *x) {
    int ax[] = {2, 0};
    return tg_min(g, x[0], 2, ax, true);
}
static tg_tensor b_min_axis(tg_graph *g, const tg_tensor *x) {
    int ax[] = {-1};
    return tg_min(g, x[0], 1, ax, false);
}

static tg_tensor b_reshape(tg_graph *g, const tg_tensor *x) {
    int64_t s[] = {6, -1};
    return tg_reshape(g, x[0], 2, s);
}
static tg_tensor b_reshape_up(tg_graph *g, const tg_tensor *x) {
    int64_t s[] = {2, 1, 5, 2};
    return tg_reshape(g, x[0], 4, s);
}
static tg_tensor b_permute(tg_graph *g, const tg_tensor *x) {
    int perm[] = {2, 0, 1};
    return tg_permute(g, x[0], 3, perm);
}
static tg_tensor b_transpose(tg_graph *g, const tg_tensor *x) {
    return tg_transpose(g, x[0]);
}
static tg_tensor b_broadcast(tg_graph *g, const tg_tensor *x) {
    int64_t s[] = {2, 3, 4};
    return tg_broadcast_to(g, x[0], 3, s);
}
static tg_tensor b_broadcast_mid(tg_graph *g, const tg_tensor *x) {
    int64_t s[] = {5, 2, 3};
    return tg_broadcast_to(g, x[0], 3, s);
}
static tg_tensor b_slice_unit(tg_graph *g, const tg_tensor *x) {
    int64_t b[] = {1, -4}, e[] = {3, INT64_MAX}, s[] = {1, 1};
    return tg_slice(g, x[0], b, e, s);
}
static tg_tensor b_slice_step(tg_graph *g, const tg_tensor *x) {
    int64_t b[] = {0, 1, 0}, e[] = {5, 6, 2}, s[] = {2, 3, 1};
    return tg_slice(g, x[0], b, e, s);
}
static tg_tensor b_concat(tg_graph *g, const tg_tensor *x) {
    return tg_concat(g, 3, x, 1);
}
static tg_tensor b_concat0(tg_graph *g, const tg_tensor *x) {
    tg_tensor xs[] = {x[0], x[1], x[0]};
    return tg_concat(g, 3, xs, 0);
}
static tg_tensor b_pad(tg_graph *g, const tg_tensor *x) {
    int64_t lo[] = {1, 0}, hi[] = {0, 2};
    return tg_pad(g, x[0], lo, hi, 0.5);
}
static tg_tensor b_pad3(tg_graph *g, const tg_tensor *x) {
    int64_t lo[] = {0, 2, 1}, hi[] = {1, 1, 0};
    return tg_pad(g, x[0], lo, hi, 0);
}
/* Repeated and out-of-range indices: the rows' gradients add up / vanish. */
static tg_tensor b_gather0(tg_graph *g, const tg_tensor *x) {
    int64_t s[] = {2, 3};
    int32_t idx[] = {4, 0, 4, 2, 7, 1};
    return tg_gather(g, x[0], i32_constant(g, 2, s, idx), 0);
}
static tg_tensor b_gather1(tg_graph *g, const tg_tensor *x) {
    int64_t s[] = {4};
    int32_t idx[] = {2, 2, 0, 1};
    return tg_gather(g, x[0], i32_constant(g, 1, s, idx), 1);
}
static tg_tensor b_scatter0(tg_graph *g, const tg_tensor *x) {
    int64_t s[] = {3};
    int32_t idx[] = {1, 3, 1};
    return tg_scatter_add(g, x[0], i32_constant(g, 1, s, idx), x[1], 0);
}
static tg_tensor b_scatter1(tg_graph *g, const tg_tensor *x) {
    int64_t s[] = {2, 2};
    int32_t idx[] = {0, 2, 2, -1};
    return tg_scatter_add(g, x[0], i32_constant(g, 2, s, idx), x[1], 1);
}

static tg_tensor b_matmul(tg_graph *g, const tg_tensor *x) {
    return tg_matmul(g, x[0], x[1], false, false);
}
static tg_tensor b_matmul_ta(tg_graph *g, const tg_tensor *x) {
    return tg_matmul(g, x[0], x[1], true, false);
}
static tg_tensor b_matmul_tb(tg_graph *g, const tg_tensor *x) {
    return tg_matmul(g, x[0], x[1], false, true);
}
static tg_tensor b_matmul_tatb(tg_graph *g, const tg_tensor *x) {
    return tg_matmul(g, x[0], x[1], true, true);
}
static tg_tensor b_conv_same(tg_graph *g, const tg_tensor *x) {
    return tg_conv1d(g, x[0], x[1], 1, 1, 1);
}
/* W 9, span 5, stride 3: (9 - 5) / 3 = 1 rem 1, the last input column unused. */
static tg_tensor b_conv_strided(tg_graph *g, const tg_tensor *x) {
    return tg_conv1d(g, x[0], x[1], 3, 0, 2);
}

static tg_tensor b_softmax_last(tg_graph *g, const tg_tensor *x) {
    return tg_softmax(g, x[0], -1);
}
static tg_tensor b_softmax_first(tg_graph *g, const tg_tensor *x) {
    return tg_softmax(g, x[0], 0);
}
static tg_tensor b_log_softmax_last(tg_graph *g, const tg_tensor *x) {
    return tg_log_softmax(g, x[0], -1);
}
static tg_tensor b_log_softmax_mid(tg_graph *g, const tg_tensor *x) {
    return tg_log_softmax(g, x[0], 1);
}
static tg_tensor b_layer_norm(tg_graph *g, const tg_tensor *x) {
    return tg_layer_norm(g, x[0], x[1], x[2], 1e-5);
}
static tg_tensor b_attention_causal(tg_graph *g, const tg_tensor *x) {
    return tg_attention(g, x[0], x[1], x[2], TG_INVALID, true, 0);
}
static tg_tensor b_attention_scaled(tg_graph *g, const tg_tensor *x) {
    return tg_attention(g, x[0], x[1], x[2], TG_INVALID, false, 0.7);
}
/* q [2,3,4], k/v [2,5,4]: additive mask [3,5] with a -inf entry. */
static tg_tensor b_attention_masked(tg_graph *g, const tg_tensor *x) {
    int64_t s[] = {3, 5};
    float m[15];
    for (int i = 0; i < 15; i++) m[i] = (float)((i % 4) - 1) * 0.5f;
    m[7] = -INFINITY;
    return tg_attention(g, x[0], x[1], x[2], tg_constant(g, TG_F32, 2, s, m), true, 0);
}
static tg_tensor b_cross_entropy(tg_graph *g, const tg_tensor *x) {
    int64_t s[] = {4};
    int32_t labels[] = {1, -100, 4, 0};
    return tg_cross_entropy(g, x[0], i32_constant(g, 1, s, labels), -100);
}
static tg_tensor b_cross_entropy3(tg_graph *g, const tg_tensor *x) {
    int64_t s[] = {2, 3};
    int32_t labels[] = {0, 3, 2, 1, 1, 3};
    return tg_cross_entropy(g, x[0], i32_constant(g, 2, s, labels), 7);
}
/* A node used several times: its gradients are summed. */
static tg_tensor b_reuse(tg_graph *g, const tg_tensor *x) {
    tg_tensor t = tg_tanh(g, x[0]);
    return tg_add(g, tg_mul(g, t, x[1]), tg_mul(g, t, t));
}

/* ------------------------------------------------------------------ */
/* The cases                                                           */
/* ------------------------------------------------------------------ */

#define S(...)                                                                                     \
    { __VA_ARGS__ }
#define IN1(r, sh, gn)                                                                             \
    {                                                                                              \
        { r, S sh, gn }                                                                            \
    }
#define UN(f, gn)                                                                                  \
    {#f " [2,3]", .unary = f, .n = 1, .in = IN1(2, (2, 3), gn)}, {                                 \
#f " [4,1,5]", .unary = f, .n = 1, .in = IN1(3, (4, 1, 5), gn)                             \
    }
#define BI(f, ga, gb)                                                                              \
    {#f " [2,3] [2,3]", .binary = f, .n = 2, .in = {{2, {2, 3}, ga}, {2, {2, 3}, gb}}},            \
        {#f " [3,1,4] [2,4]", .binary = f, .n = 2, .in = {{3, {3, 1, 4}, ga}, {2, {2, 4}, gb}}}, { \
#f " [4] [2,3,1]", .binary = f, .n = 2, .in = { {1, {4 }, ga }, {3, {2, 3, 1 }, gb } }     \
    }
#define B1(name, fn, r, sh, gn)                                                                    \
    { name, .build = fn, .n = 1, .in = IN1(r, sh, gn) }

static const grad_case cases[] = {
    UN(tg_neg, ANY),
    UN(tg_abs, AWAY),
    UN(tg_exp, ANY),
    UN(tg_log, POS),
    UN(tg_sqrt, POS),
    UN(tg_rsqrt, POS),
    UN(tg_reciprocal, AWAY),
    UN(tg_square, ANY),
    UN(tg_tanh, ANY),
    UN(tg_erf, ANY),
    UN(tg_gelu, ANY),
    UN(tg_gelu_tanh, ANY),
    UN(tg_relu, AWAY),
    UN(tg_sigmoid, ANY),
    UN(tg_silu, ANY),
    UN(tg_sin, ANY),
    UN(tg_cos, ANY),
    B1("cast f16 [2,3]", b_cast, 2, (2, 3), ANY),
    B1("cast f16 [5]", b_cast, 1, (5), ANY),
    BI(tg_add, ANY, ANY),
    BI(tg_sub, ANY, ANY),
    BI(tg_mul, ANY, ANY),
    BI(tg_div, ANY, AWAY),
    BI(tg_pow, POS, ANY),
    BI(tg_maximum, ANY, ANY),
    BI(tg_minimum, ANY, ANY),
    {"where [3,1,4] [2,4]", .build = b_where, .n = 2,
     .in = {{3, {3, 1, 4}, ANY}, {2, {2, 4}, ANY}}},
    {"where [4] [3,2,4]", .build = b_where, .n = 2, .in = {{1, {4}, ANY}, {3, {3, 2, 4}, ANY}}},
    B1("sum axis 1 [2,3,4]", b_sum_axis, 3, (2, 3, 4), ANY),
    B1("sum all keepdims [3,5]", b_sum_all, 2, (3, 5), ANY),
    B1("mean axes 0,-1 keepdims [2,3,4]", b_mean_axes, 3, (2, 3, 4), ANY),
    B1("mean all [7]", b_mean_all, 1, (7), ANY),
    B1("max axis 1 [2,5,3]", b_max_axis, 3, (2, 5, 3), ANY),
    B1("max all [4,3]", b_max_all, 2, (4, 3), ANY),
    B1("min axes 2,0 keepdims [3,2,4]", b_min_axes, 3, (3, 2, 4), ANY),
    B1("min axis -1 [4,5]", b_min_axis, 2, (4, 5), ANY),
    B1("reshape [2,3,4] -> [6,4]", b_reshape, 3, (2, 3, 4), ANY),
    B1("reshape [4,5] -> [2,1,5,2]", b_reshape_up, 2, (4, 5), ANY),
    B1("permute [2,3,4] (2,0,1)", b_permute, 3, (2, 3, 4), ANY),
    B1("transpose [2,3,5]", b_transpose, 3, (2, 3, 5), ANY),
    B1("broadcast_to [3,1] -> [2,3,4]", b_broadcast, 2, (3, 1), ANY),
    B1("broadcast_to [2,1] -> [5,2,3]", b_broadcast_mid, 2, (2, 1), ANY),
    B1("slice unit step [4,6]", b_slice_unit, 2, (4, 6), ANY),
    B1("slice unit step [5,5]", b_slice_unit, 2, (5, 5), ANY),
    B1("slice step 2,3 [5,7,3]", b_slice_step, 3, (5, 7, 3), ANY),
    B1("slice step 2,3 [6,6,2]", b_slice_step, 3, (6, 6, 2), ANY),
    {"concat axis 1", .build = b_concat, .n = 3,
     .in = {{2, {2, 3}, ANY}, {2, {2, 1}, ANY}, {2, {2, 4}, ANY}}},
    {"concat axis 0, reused", .build = b_concat0, .n = 2,
     .in = {{2, {1, 3}, ANY}, {2, {2, 3}, ANY}}},
    B1("pad [3,4]", b_pad, 2, (3, 4), ANY),
    B1("pad [2,3,2]", b_pad3, 3, (2, 3, 2), ANY),
    B1("gather axis 0 [5,3]", b_gather0, 2, (5, 3), ANY),
    B1("gather axis 1 [2,3,2]", b_gather1, 3, (2, 3, 2), ANY),
    {"scatter_add axis 0", .build = b_scatter0, .n = 2, .in = {{2, {4, 2}, ANY}, {2, {3, 2}, ANY}}},
    {"scatter_add axis 1", .build = b_scatter1, .n = 2,
     .in = {{3, {2, 3, 2}, ANY}, {4, {2, 2, 2, 2}, ANY}}},
    {"matmul [3,4] [4,5]", .build = b_matmul, .n = 2, .in = {{2, {3, 4}, ANY}, {2, {4, 5}, ANY}}},
    {"matmul [2,3,4] [4,5] (batch broadcast)", .build = b_matmul, .n = 2,
     .in = {{3, {2, 3, 4}, ANY}, {2, {4, 5}, ANY}}},
    {"matmul [1,3,4] [2,4,2] (size-1 batch)", .build = b_matmul, .n = 2,
     .in = {{3, {1, 3, 4}, ANY}, {3, {2, 4, 2}, ANY}}},
    {"matmul^T_a [4,3] [4,5]", .build = b_matmul_ta, .n = 2,
     .in = {{2, {4, 3}, ANY}, {2, {4, 5}, ANY}}},
    {"matmul^T_a [2,4,3] [2,1,4,2]", .build = b_matmul_ta, .n = 2,
     .in = {{3, {2, 4, 3}, ANY}, {4, {2, 1, 4, 2}, ANY}}},
    {"matmul^T_b [3,4] [5,4]", .build = b_matmul_tb, .n = 2,
     .in = {{2, {3, 4}, ANY}, {2, {5, 4}, ANY}}},
    {"matmul^T_b [3,4] [2,5,4]", .build = b_matmul_tb, .n = 2,
     .in = {{2, {3, 4}, ANY}, {3, {2, 5, 4}, ANY}}},
    {"matmul^T_ab [4,3] [5,4]", .build = b_matmul_tatb, .n = 2,
     .in = {{2, {4, 3}, ANY}, {2, {5, 4}, ANY}}},
    {"matmul^T_ab [2,4,3] [5,4]", .build = b_matmul_tatb, .n = 2,
     .in = {{3, {2, 4, 3}, ANY}, {2, {5, 4}, ANY}}},
    {"conv1d stride 1 pad 1", .build = b_conv_same, .n = 2,
     .in = {{3, {2, 3, 6}, ANY}, {3, {4, 3, 3}, ANY}}},
    {"conv1d stride 3 dilation 2 (rounded length)", .build = b_conv_strided, .n = 2,
     .in = {{3, {1, 2, 9}, ANY}, {3, {3, 2, 3}, ANY}}},
    B1("softmax axis -1 [3,5]", b_softmax_last, 2, (3, 5), ANY),
    B1("softmax axis 0 [4,2,3]", b_softmax_first, 3, (4, 2, 3), ANY),
    B1("log_softmax axis -1 [2,6]", b_log_softmax_last, 2, (2, 6), ANY),
    B1("log_softmax axis 1 [2,4,3]", b_log_softmax_mid, 3, (2, 4, 3), ANY),
    {"layer_norm [4,6]", .build = b_layer_norm, .n = 3,
     .in = {{2, {4, 6}, ANY}, {1, {6}, ANY}, {1, {6}, ANY}}},
    {"layer_norm [2,3,5]", .build = b_layer_norm, .n = 3,
     .in = {{3, {2, 3, 5}, ANY}, {1, {5}, ANY}, {1, {5}, ANY}}},
    {"attention causal self [2,4,3]", .build = b_attention_causal, .n = 3,
     .in = {{3, {2, 4, 3}, ANY}, {3, {2, 4, 3}, ANY}, {3, {2, 4, 2}, ANY}}},
    {"attention causal Tq 2 < Tk 5 (bottom-right)", .build = b_attention_causal, .n = 3,
     .in = {{3, {1, 2, 4}, ANY}, {3, {1, 5, 4}, ANY}, {3, {1, 5, 3}, ANY}}},
    {"attention masked causal Tq 3 Tk 5", .build = b_attention_masked, .n = 3,
     .in = {{3, {2, 3, 4}, ANY}, {3, {2, 5, 4}, ANY}, {3, {2, 5, 4}, ANY}}},
    {"attention broadcast batch, scale 0.7", .build = b_attention_scaled, .n = 3,
     .in = {{4, {2, 2, 3, 4}, ANY}, {4, {2, 1, 5, 4}, ANY}, {3, {2, 5, 3}, ANY}}},
    B1("cross_entropy [4,5] ignore -100", b_cross_entropy, 2, (4, 5), ANY),
    B1("cross_entropy [2,3,4] ignore 7", b_cross_entropy3, 3, (2, 3, 4), ANY),
    {"tanh used three times", .build = b_reuse, .n = 2, .in = {{2, {2, 3}, ANY}, {1, {3}, ANY}}},
};

#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

/* ------------------------------------------------------------------ */
/* Whole-table checks                                                  */
/* ------------------------------------------------------------------ */

/* Every op has an entry in the VJP table. */
static void test_table_complete(void **state) {
    (void)state;
    char missing[64] = "";
    if (!tg_vjp_table_complete(missing, sizeof missing)) fail_msg("no VJP entry for %s", missing);
}

/* Every op with a rule was differentiated by some case above. */
static void test_every_rule_checked(void **state) {
    (void)state;
    for (int op = 0; op < TG_OP_COUNT; op++) {
        tg_vjp_fn rule = tg_vjp_rule((tg_op)op);
        if (rule == tg_vjp_none || rule == tg_vjp_unsupported) continue;
        if (!op_checked[op]) fail_msg("the VJP of %s is not checked", tg_ops[op].name);
    }
    print_message("max relative error over %d cases: %.3g (%s)\n", N_CASES, worst_error,
                  worst_case ? worst_case : "-");
}

int main(void) {
    struct CMUnitTest tests[N_CASES + 2];
    tests[0] = (struct CMUnitTest)cmocka_unit_test(test_table_complete);
    for (int i = 0; i < N_CASES; i++) {
        tests[i + 1] = (struct CMUnitTest){cases[i].name, run_case, NULL, NULL, (void *)&cases[i]};
    }
    tests[N_CASES + 1] = (struct CMUnitTest)cmocka_unit_test(test_every_rule_checked);
    return _cmocka_run_group_tests("test_grad_ops", tests, N_CASES + 2, NULL, NULL);
}
