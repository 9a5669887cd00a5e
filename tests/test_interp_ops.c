/* test_interp_ops.c — the reference interpreter on primitive ops:
 * elementwise (broadcasting, dtype rules), reductions, data movement,
 * linear algebra, state (assign, slice_update), dynamic shapes and errors.
 * Expected values are worked out by hand or by plain loops here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "tg.h"

/* ---- helpers ---- */

static tg_tensor const_f32(tg_graph *g, int rank, const int64_t *shape, const float *data) {
    return tg_constant(g, TG_F32, rank, shape, data);
}

static tg_tensor const_i32(tg_graph *g, int rank, const int64_t *shape, const int32_t *data) {
    return tg_constant(g, TG_I32, rank, shape, data);
}

static tg_array view(tg_dtype dtype, int rank, const int64_t *shape, void *data) {
    tg_array a = {.dtype = dtype, .rank = rank, .data = data};
    memcpy(a.shape, shape, (size_t)rank * sizeof *shape);
    return a;
}

static void check_graph(const tg_graph *g) {
    if (tg_graph_status(g) != TG_OK) fail_msg("graph error: %s", tg_graph_error(g));
}

/* Runs g for one target with optional feeds and flags; asserts success. */
static tg_array run_flags(tg_graph *g, tg_store *s, int n_feeds, const tg_feed *feeds, tg_tensor t,
                          unsigned flags) {
    check_graph(g);
    tg_array r = {0};
    tg_status st = tg_interpret(g, s, n_feeds, feeds, 1, &t, &r, 0, NULL, flags);
    if (st != TG_OK) fail_msg("tg_interpret: %s", tg_last_error());
    return r;
}

static tg_array run(tg_graph *g, tg_tensor t) {
    return run_flags(g, NULL, 0, NULL, t, 0);
}

static void assert_shape(const tg_array *a, tg_dtype dtype, int rank, const int64_t *shape) {
    assert_int_equal(a->dtype, dtype);
    assert_int_equal(a->rank, rank);
    for (int d = 0; d < rank; d++) assert_int_equal(a->shape[d], shape[d]);
}

static void assert_values(const tg_array *a, int64_t n, const double *expect, double tol) {
    assert_int_equal(tg_array_count(a), n);
    for (int64_t i = 0; i < n; i++) {
        double got = tg_array_get(a, i);
        double err = fabs(got - expect[i]);
        if (!(err <= tol * (1 + fabs(expect[i]))))
            fail_msg("element %lld: got %.9g, expected %.9g", (long long)i, got, expect[i]);
    }
}

/* Checks dtype, shape and values, then frees the result. */
static void expect_array(tg_array *a, tg_dtype dtype, int rank, const int64_t *shape,
                         const double *expect, double tol) {
    assert_shape(a, dtype, rank, shape);
    assert_values(a, tg_array_count(a), expect, tol);
    tg_array_free(a);
}

/* ---- elementwise ---- */

static void test_add_broadcast(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float a[6] = {1, 2, 3, 4, 5, 6}, b[4] = {10, 20, 30, 40};
    int64_t sa[] = {2, 1, 3}, sb[] = {4, 1};
    tg_tensor y = tg_add(g, const_f32(g, 3, sa, a), const_f32(g, 2, sb, b));
    tg_array r = run(g, y);
    double expect[24];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++)
            for (int k = 0; k < 3; k++) expect[(i * 4 + j) * 3 + k] = a[i * 3 + k] + b[j];
    int64_t so[] = {2, 4, 3};
    expect_array(&r, TG_F32, 3, so, expect, 0);
    tg_graph_free(g);
}

/* An odd shape against a size-1 middle axis: [3,5,7] * [5,1] - [7]. */
static void test_mul_sub_odd_sizes(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float x[105], y[5] = {1, -2, 3, -4, 5}, z[7] = {0, 1, 2, 3, 4, 5, 6};
    for (int i = 0; i < 105; i++) x[i] = (float)i;
    int64_t sx[] = {3, 5, 7}, sy[] = {5, 1}, sz[] = {7};
    tg_tensor t = tg_sub(g, tg_mul(g, const_f32(g, 3, sx, x), const_f32(g, 2, sy, y)),
                         const_f32(g, 1, sz, z));
    tg_array r = run(g, t);
    double expect[105];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++)
            for (int k = 0; k < 7; k++) {
                int idx = (i * 5 + j) * 7 + k;
                expect[idx] = x[idx] * y[j] - z[k];
            }
    expect_array(&r, TG_F32, 3, sx, expect, 0);
    tg_graph_free(g);
}

static double ref_gelu(double x) {
    return 0.5 * x * (1 + erf(x / sqrt(2.0)));
}
static double ref_gelu_tanh(double x) {
    return 0.5 * x * (1 + tanh(sqrt(2 / 3.14159265358979323846) * (x + 0.044715 * x * x * x)));
}
static double ref_relu(double x) {
    return x > 0 ? x : 0;
}
static double ref_sigmoid(double x) {
    return 1 / (1 + exp(-x));
}
static double ref_silu(double x) {
    return x / (1 + exp(-x));
}
static double ref_neg(double x) {
    return -x;
}
static double ref_square(double x) {
    return x * x;
}
static double ref_rsqrt(double x) {
    return 1 / sqrt(x);
}
static double ref_reciprocal(double x) {
    return 1 / x;
}
static double ref_identity(double x) {
    return x;
}

typedef struct unary_case {
    const char *name;
    tg_tensor (*build)(tg_graph *, tg_tensor);
    double (*ref)(double);
    bool positive_only;
} unary_case;

static void test_unary_ops(void **state) {
    (void)state;
    const unary_case cases[] = {
        {"neg", tg_neg, ref_neg, false},
        {"abs", tg_abs, fabs, false},
        {"exp", tg_exp, exp, false},
        {"log", tg_log, log, true},
        {"sqrt", tg_sqrt, sqrt, true},
        {"rsqrt", tg_rsqrt, ref_rsqrt, true},
        {"reciprocal", tg_reciprocal, ref_reciprocal, false},
        {"square", tg_square, ref_square, false},
        {"tanh", tg_tanh, tanh, false},
        {"erf", tg_erf, erf, false},
        {"gelu", tg_gelu, ref_gelu, false},
        {"gelu_tanh", tg_gelu_tanh, ref_gelu_tanh, false},
        {"relu", tg_relu, ref_relu, false},
        {"sigmoid", tg_sigmoid, ref_sigmoid, false},
        {"silu", tg_silu, ref_silu, false},
        {"sin", tg_sin, sin, false},
        {"cos", tg_cos, cos, false},
        {"stop_gradient", tg_stop_gradient, ref_identity, false},
    };
    float mixed[5] = {-1.5f, -0.25f, 0.5f, 2, 3.25f}, positive[5] = {0.25f, 0.5f, 1, 2, 9};
    int64_t shape[] = {5};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const float *x = cases[c].positive_only ? positive : mixed;
        tg_graph *g = tg_graph_new();
        tg_tensor y = cases[c].build(g, const_f32(g, 1, shape, x));
        tg_array r = run(g, y);
        assert_shape(&r, TG_F32, 1, shape);
        for (int i = 0; i < 5; i++) {
            double want = cases[c].ref(x[i]), got = tg_array_get(&r, i);
            if (!(fabs(got - want) <= 1e-6 * (1 + fabs(want))))
                fail_msg("%s(%g): got %.9g, expected %.9g", cases[c].name, x[i], got, want);
        }
        tg_array_free(&r);
        tg_graph_free(g);
    }
}

static void test_i32_division_truncates(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int32_t a[6] = {7, -7, 7, -7, 5, -9}, b[6] = {2, 2, -2, -2, 0, 3};
    int64_t s[] = {6};
    tg_array r = run(g, tg_div(g, const_i32(g, 1, s, a), const_i32(g, 1, s, b)));
    double expect[6] = {3, -3, -3, 3, 0, -3};
    expect_array(&r, TG_I32, 1, s, expect, 0);
    tg_graph_free(g);
}

/* Integer results saturate instead of wrapping. */
static void test_i8_add_saturates(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int8_t a[3] = {100, -100, 5}, b[3] = {100, -100, -7};
    int64_t s[] = {3};
    tg_tensor y = tg_add(g, tg_constant(g, TG_I8, 1, s, a), tg_constant(g, TG_I8, 1, s, b));
    tg_array r = run(g, y);
    double expect[3] = {127, -128, -2};
    expect_array(&r, TG_I8, 1, s, expect, 0);
    tg_graph_free(g);
}

static void test_u8_comparisons(void **state) {
    (void)state;
    uint8_t a[4] = {0, 200, 255, 7}, b[4] = {1, 200, 254, 7};
    int64_t s[] = {4};
    tg_tensor (*ops[6])(tg_graph *, tg_tensor, tg_tensor) = {tg_eq, tg_ne, tg_lt,
                                                             tg_le, tg_gt, tg_ge};
    const double expect[6][4] = {
        {0, 1, 0, 1}, /* eq */
        {1, 0, 1, 0}, /* ne */
        {1, 0, 0, 0}, /* lt */
        {1, 1, 0, 1}, /* le */
        {0, 0, 1, 0}, /* gt */
        {0, 1, 1, 1}, /* ge */
    };
    for (int k = 0; k < 6; k++) {
        tg_graph *g = tg_graph_new();
        tg_tensor y = ops[k](g, tg_constant(g, TG_U8, 1, s, a), tg_constant(g, TG_U8, 1, s, b));
        tg_array r = run(g, y);
        expect_array(&r, TG_U8, 1, s, expect[k], 0);
        tg_graph_free(g);
    }
}

static void test_cast_saturates(void **state) {
    (void)state;
    float x[6] = {300.7f, -5.9f, 1e10f, NAN, 2.5f, -1e10f};
    int64_t s[] = {6};
    const tg_dtype to[3] = {TG_U8, TG_I8, TG_I32};
    const double expect[3][6] = {
        {255, 0, 255, 0, 2, 0},
        {127, -5, 127, 0, 2, -128},
        {300, -5, 2147483647.0, 0, 2, -2147483648.0},
    };
    for (int k = 0; k < 3; k++) {
        tg_graph *g = tg_graph_new();
        tg_array r = run(g, tg_cast(g, const_f32(g, 1, s, x), to[k]));
        expect_array(&r, to[k], 1, s, expect[k], 0);
        tg_graph_free(g);
    }
    /* a comparison cast to f32 gives exactly 0/1 */
    tg_graph *g = tg_graph_new();
    float a[3] = {1, 2, 3}, b[3] = {2, 2, 2};
    int64_t s3[] = {3};
    tg_tensor m = tg_gt(g, const_f32(g, 1, s3, a), const_f32(g, 1, s3, b));
    tg_array r = run(g, tg_cast(g, m, TG_F32));
    double e[3] = {0, 0, 1};
    expect_array(&r, TG_F32, 1, s3, e, 0);
    tg_graph_free(g);
}

/* f16 has a spacing of 1 at 1024: (1024 + 0.5) rounds to even (1024) after
 * each add, so adding 0.5 twice stays 1024; f64 mode keeps 1025. */
static void test_f16_rounding_and_f64_mode(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor half = tg_scalar(g, TG_F16, 0.5);
    tg_tensor y = tg_add(g, tg_add(g, tg_scalar(g, TG_F16, 1024), half), half);
    tg_array r = run(g, y);
    assert_int_equal(r.dtype, TG_F16);
    assert_true(tg_array_get(&r, 0) == 1024.0);
    tg_array_free(&r);
    r = run_flags(g, NULL, 0, NULL, y, TG_INTERP_F64);
    assert_true(tg_array_get(&r, 0) == 1025.0);
    tg_array_free(&r);
    tg_graph_free(g);
}

/* (1 + 1e-10) - 1 is 0 in f32 but about 1e-10 when nothing is rounded. */
static void test_f64_mode_f32(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor one = tg_scalar(g, TG_F32, 1);
    tg_tensor y = tg_sub(g, tg_add(g, one, tg_scalar(g, TG_F32, 1e-10)), one);
    tg_array r = run(g, y);
    assert_true(tg_array_get(&r, 0) == 0.0);
    tg_array_free(&r);
    r = run_flags(g, NULL, 0, NULL, y, TG_INTERP_F64);
    assert_float_equal(tg_array_get(&r, 0), 1e-10, 1e-15);
    tg_array_free(&r);
    /* integers are still integers in f64 mode */
    tg_tensor q = tg_div(g, tg_scalar(g, TG_I32, 7), tg_scalar(g, TG_I32, 2));
    r = run_flags(g, NULL, 0, NULL, q, TG_INTERP_F64);
    assert_true(tg_array_get(&r, 0) == 3.0);
    tg_array_free(&r);
    tg_graph_free(g);
}

static void test_binary_max_min_pow(void **state) {
    (void)state;
    float a[4] = {1, -2, 3, 2}, b[4] = {0.5f, 4, 3, 3};
    int64_t s[] = {4};
    tg_graph *g = tg_graph_new();
    tg_tensor ta = const_f32(g, 1, s, a), tb = const_f32(g, 1, s, b);
    tg_tensor ys[3] = {tg_maximum(g, ta, tb), tg_minimum(g, ta, tb), tg_pow(g, ta, tb)};
    const double expect[3][4] = {{1, 4, 3, 3}, {0.5, -2, 3, 2}, {1, 16, 27, 8}};
    for (int k = 0; k < 3; k++) {
        tg_array r = run(g, ys[k]);
        expect_array(&r, TG_F32, 1, s, expect[k], 0);
    }
    tg_graph_free(g);
}

/* cond [3,1], a [1,4], b rank 0 -> [3,4] */
static void test_where_broadcast(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    uint8_t c[3] = {1, 0, 2};
    float a[4] = {1, 2, 3, 4};
    int64_t sc[] = {3, 1}, sa[] = {1, 4};
    tg_tensor y = tg_where(g, tg_constant(g, TG_U8, 2, sc, c), const_f32(g, 2, sa, a),
                           tg_scalar(g, TG_F32, -1));
    tg_array r = run(g, y);
    double expect[12] = {1, 2, 3, 4, -1, -1, -1, -1, 1, 2, 3, 4};
    int64_t so[] = {3, 4};
    expect_array(&r, TG_F32, 2, so, expect, 0);
    tg_graph_free(g);
}

/* ---- reductions ---- */

/* x[i][j][k] = 100 i + 10 j + k over [3,5,7] */
static tg_tensor cube(tg_graph *g) {
    static float x[105];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++)
            for (int k = 0; k < 7; k++) x[(i * 5 + j) * 7 + k] = (float)(100 * i + 10 * j + k);
    int64_t s[] = {3, 5, 7};
    return const_f32(g, 3, s, x);
}

static void test_sum_several_axes_keepdims(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor x = cube(g);
    int axes[] = {0, -1};
    tg_tensor flat = tg_sum(g, x, 2, axes, false), kept = tg_sum(g, x, 2, axes, true);
    /* sum over i and k: 7*(0+100+200) + 21*10 j + 3*(0+...+6) = 2100 + 210 j + 63 */
    double expect[5];
    for (int j = 0; j < 5; j++) expect[j] = 2163 + 210 * j;
    int64_t s1[] = {5}, s3[] = {1, 5, 1};
    tg_array r = run(g, flat);
    expect_array(&r, TG_F32, 1, s1, expect, 0);
    r = run(g, kept);
    expect_array(&r, TG_F32, 3, s3, expect, 0);
    tg_graph_free(g);
}

static void test_sum_last_axis_and_mean_all(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor x = cube(g);
    int last[] = {-1};
    tg_array r = run(g, tg_sum(g, x, 1, last, false));
    double expect[15];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) expect[i * 5 + j] = 7 * (100 * i + 10 * j) + 21;
    int64_t s[] = {3, 5};
    expect_array(&r, TG_F32, 2, s, expect, 0);
    /* mean of 100 i + 10 j + k over everything: 100 + 20 + 3 */
    r = run(g, tg_mean(g, x, 0, NULL, false));
    double m = 123;
    expect_array(&r, TG_F32, 0, NULL, &m, 1e-7);
    tg_graph_free(g);
}

static void test_max_min(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor x = cube(g);
    int ax1[] = {1}, ax20[] = {-2, 0};
    tg_array r = run(g, tg_max(g, x, 1, ax1, false));
    double emax[21];
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < 7; k++) emax[i * 7 + k] = 100 * i + 40 + k;
    int64_t s[] = {3, 7}, sk[] = {1, 1, 7};
    expect_array(&r, TG_F32, 2, s, emax, 0);
    r = run(g, tg_min(g, x, 2, ax20, true));
    double emin[7] = {0, 1, 2, 3, 4, 5, 6};
    expect_array(&r, TG_F32, 3, sk, emin, 0);
    tg_graph_free(g);
}

static void test_i32_sum(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int32_t x[6] = {1, 2, 3, 4, 5, 6};
    int64_t s[] = {2, 3}, so[] = {3};
    int ax[] = {0};
    tg_array r = run(g, tg_sum(g, const_i32(g, 2, s, x), 1, ax, false));
    double expect[3] = {5, 7, 9};
    expect_array(&r, TG_I32, 1, so, expect, 0);
    tg_graph_free(g);
}

static void test_argmax_first_on_ties(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float x[8] = {1, 3, 3, 0, -1, -5, 7, 7};
    int64_t s[] = {2, 4};
    tg_tensor t = const_f32(g, 2, s, x);
    tg_array r = run(g, tg_argmax(g, t, -1, false));
    double e_last[2] = {1, 2};
    int64_t s2[] = {2}, s21[] = {2, 1}, s4[] = {4};
    expect_array(&r, TG_I32, 1, s2, e_last, 0);
    r = run(g, tg_argmax(g, t, 1, true));
    expect_array(&r, TG_I32, 2, s21, e_last, 0);
    r = run(g, tg_argmax(g, t, 0, false));
    double e_first[4] = {0, 0, 1, 1};
    expect_array(&r, TG_I32, 1, s4, e_first, 0);
    tg_graph_free(g);
}

/* ---- data movement ---- */

/* x[a][b][c] = 100 a + 10 b + c over [2,3,4] */
static tg_tensor block234(tg_graph *g) {
    static float x[24];
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 4; c++) x[(a * 3 + b) * 4 + c] = (float)(100 * a + 10 * b + c);
    int64_t s[] = {2, 3, 4};
    return const_f32(g, 3, s, x);
}

static void test_reshape(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor x = block234(g);
    int64_t to[] = {0, -1};
    tg_array r = run(g, tg_reshape(g, x, 2, to));
    double expect[24];
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 3; b++)
            for (int c = 0; c < 4; c++) expect[(a * 3 + b) * 4 + c] = 100 * a + 10 * b + c;
    int64_t s[] = {2, 12};
    expect_array(&r, TG_F32, 2, s, expect, 0);
    tg_graph_free(g);
}

static void test_permute_and_transpose(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor x = block234(g);
    int perm[] = {2, 0, 1};
    tg_array r = run(g, tg_permute(g, x, 3, perm));
    double expect[24];
    for (int c = 0; c < 4; c++)
        for (int a = 0; a < 2; a++)
            for (int b = 0; b < 3; b++) expect[(c * 2 + a) * 3 + b] = 100 * a + 10 * b + c;
    int64_t s[] = {4, 2, 3};
    expect_array(&r, TG_F32, 3, s, expect, 0);

    float m[6] = {1, 2, 3, 4, 5, 6};
    int64_t sm[] = {2, 3}, st[] = {3, 2};
    r = run(g, tg_transpose(g, const_f32(g, 2, sm, m)));
    double et[6] = {1, 4, 2, 5, 3, 6};
    expect_array(&r, TG_F32, 2, st, et, 0);
    tg_graph_free(g);
}

static void test_broadcast_to(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float x[2] = {1, 2};
    int64_t sx[] = {2, 1}, to[] = {3, 2, 4};
    tg_array r = run(g, tg_broadcast_to(g, const_f32(g, 2, sx, x), 3, to));
    double expect[24];
    for (int i = 0; i < 24; i++) expect[i] = (i / 4) % 2 + 1;
    expect_array(&r, TG_F32, 3, to, expect, 0);
    tg_graph_free(g);
}

static void test_slice_steps_and_negative_bounds(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s10[] = {10};
    tg_tensor x = tg_iota(g, TG_F32, 1, s10, 0);
    int64_t b[] = {-8}, e[] = {-1}, st[] = {3};
    tg_array r = run(g, tg_slice(g, x, b, e, st));
    double expect[3] = {2, 5, 8};
    int64_t s3[] = {3};
    expect_array(&r, TG_F32, 1, s3, expect, 0);
    /* clamped: begin -100 is 0, end beyond the size is the size */
    int64_t b2[] = {-100}, e2[] = {INT64_MAX}, st2[] = {4};
    r = run(g, tg_slice(g, x, b2, e2, st2));
    double expect2[3] = {0, 4, 8};
    expect_array(&r, TG_F32, 1, s3, expect2, 0);

    /* 2-D: x[r][c] = 10 r + c over [4,5]; rows 1::2, cols 0:-1:2 */
    float m[20];
    for (int i = 0; i < 20; i++) m[i] = (float)(10 * (i / 5) + i % 5);
    int64_t sm[] = {4, 5}, bm[] = {1, 0}, em[] = {INT64_MAX, -1}, stm[] = {2, 2};
    r = run(g, tg_slice(g, const_f32(g, 2, sm, m), bm, em, stm));
    double em2[4] = {10, 12, 30, 32};
    int64_t so[] = {2, 2};
    expect_array(&r, TG_F32, 2, so, em2, 0);
    tg_graph_free(g);
}

static void test_concat_three(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float a[2] = {1, 2}, b[4] = {3, 4, 5, 6}, c[6] = {7, 8, 9, 10, 11, 12};
    int64_t sa[] = {2, 1}, sb[] = {2, 2}, sc[] = {2, 3};
    tg_tensor xs[3] = {const_f32(g, 2, sa, a), const_f32(g, 2, sb, b), const_f32(g, 2, sc, c)};
    tg_array r = run(g, tg_concat(g, 3, xs, -1));
    double expect[12] = {1, 3, 4, 7, 8, 9, 2, 5, 6, 10, 11, 12};
    int64_t so[] = {2, 6};
    expect_array(&r, TG_F32, 2, so, expect, 0);
    /* along axis 0 it is plain appending */
    tg_tensor ys[3] = {xs[2], xs[2], xs[2]};
    r = run(g, tg_concat(g, 3, ys, 0));
    double e0[18];
    for (int i = 0; i < 18; i++) e0[i] = c[i % 6];
    int64_t s0[] = {6, 3};
    expect_array(&r, TG_F32, 2, s0, e0, 0);
    tg_graph_free(g);
}

static void test_pad(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float x[4] = {1, 2, 3, 4};
    int64_t s[] = {2, 2}, lo[] = {1, 0}, hi[] = {0, 2};
    tg_array r = run(g, tg_pad(g, const_f32(g, 2, s, x), lo, hi, -1));
    double expect[12] = {-1, -1, -1, -1, 1, 2, -1, -1, 3, 4, -1, -1};
    int64_t so[] = {3, 4};
    expect_array(&r, TG_F32, 2, so, expect, 0);
    tg_graph_free(g);
}

static void test_gather_out_of_range_reads_zero(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float t[6] = {1, 2, 3, 4, 5, 6};
    int32_t idx[4] = {2, -1, 0, 3};
    int64_t st[] = {3, 2}, si[] = {2, 2};
    tg_array r = run(g, tg_gather(g, const_f32(g, 2, st, t), const_i32(g, 2, si, idx), 0));
    double expect[8] = {5, 6, 0, 0, 1, 2, 0, 0};
    int64_t so[] = {2, 2, 2};
    expect_array(&r, TG_F32, 3, so, expect, 0);

    /* along axis 1 of [2,3]: columns 2 and 0 */
    int32_t cols[2] = {2, 0};
    int64_t st2[] = {2, 3}, sc[] = {2};
    r = run(g, tg_gather(g, const_f32(g, 2, st2, t), const_i32(g, 1, sc, cols), -1));
    double e2[4] = {3, 1, 6, 4};
    int64_t so2[] = {2, 2};
    expect_array(&r, TG_F32, 2, so2, e2, 0);
    tg_graph_free(g);
}

static void test_scatter_add_duplicates_and_dropped(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float target[6] = {1, 1, 1, 1, 1, 1}, upd[8] = {1, 2, 3, 4, 10, 20, 100, 200};
    int32_t idx[4] = {0, 2, 0, 5};
    int64_t st[] = {3, 2}, si[] = {4}, su[] = {4, 2};
    tg_tensor y = tg_scatter_add(g, const_f32(g, 2, st, target), const_i32(g, 1, si, idx),
                                 const_f32(g, 2, su, upd), 0);
    tg_array r = run(g, y);
    double expect[6] = {12, 23, 1, 1, 4, 5};
    expect_array(&r, TG_F32, 2, st, expect, 0);
    tg_graph_free(g);
}

static void test_one_hot(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int32_t idx[4] = {0, 2, -1, 3};
    int64_t si[] = {4};
    tg_array r = run(g, tg_one_hot(g, const_i32(g, 1, si, idx), 3, TG_F32));
    double expect[12] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0};
    int64_t so[] = {4, 3};
    expect_array(&r, TG_F32, 2, so, expect, 0);
    tg_graph_free(g);
}

static void test_iota(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {2, 3};
    tg_array r = run(g, tg_iota(g, TG_I32, 2, s, 1));
    double e1[6] = {0, 1, 2, 0, 1, 2};
    expect_array(&r, TG_I32, 2, s, e1, 0);
    r = run(g, tg_iota(g, TG_F32, 2, s, -2));
    double e0[6] = {0, 0, 0, 1, 1, 1};
    expect_array(&r, TG_F32, 2, s, e0, 0);
    tg_graph_free(g);
}

/* ---- linear algebra ---- */

static void test_matmul_small(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {7, 8, 9, 10, 11, 12};
    int64_t sa[] = {2, 3}, sb[] = {3, 2}, so[] = {2, 2};
    tg_array r = run(g, tg_matmul(g, const_f32(g, 2, sa, a), const_f32(g, 2, sb, b), false, false));
    double expect[4] = {58, 64, 139, 154};
    expect_array(&r, TG_F32, 2, so, expect, 0);
    tg_graph_free(g);
}

/* a stored [K=3, M=2] with transpose_a, b stored [N=4, K=3] with transpose_b */
static void test_matmul_transposes(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float a[6], b[12];
    for (int i = 0; i < 6; i++) a[i] = (float)(i + 1);
    for (int i = 0; i < 12; i++) b[i] = (float)(i % 5) - 2;
    int64_t sa[] = {3, 2}, sb[] = {4, 3}, so[] = {2, 4};
    tg_array r = run(g, tg_matmul(g, const_f32(g, 2, sa, a), const_f32(g, 2, sb, b), true, true));
    double expect[8];
    for (int m = 0; m < 2; m++)
        for (int n = 0; n < 4; n++) {
            double acc = 0;
            for (int k = 0; k < 3; k++) acc += a[k * 2 + m] * b[n * 3 + k];
            expect[m * 4 + n] = acc;
        }
    expect_array(&r, TG_F32, 2, so, expect, 0);
    tg_graph_free(g);
}

/* [2,1,3,4] x [5,4,2] -> [2,5,3,2] */
static void test_matmul_batch_broadcast(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float a[24], b[40];
    for (int i = 0; i < 24; i++) a[i] = (float)(i % 7) - 3;
    for (int i = 0; i < 40; i++) b[i] = (float)(i % 11) * 0.5f;
    int64_t sa[] = {2, 1, 3, 4}, sb[] = {5, 4, 2}, so[] = {2, 5, 3, 2};
    tg_array r = run(g, tg_matmul(g, const_f32(g, 4, sa, a), const_f32(g, 3, sb, b), false, false));
    double expect[60];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 5; j++)
            for (int m = 0; m < 3; m++)
                for (int n = 0; n < 2; n++) {
                    double acc = 0;
                    for (int k = 0; k < 4; k++) acc += a[i * 12 + m * 4 + k] * b[j * 8 + k * 2 + n];
                    expect[((i * 5 + j) * 3 + m) * 2 + n] = acc;
                }
    expect_array(&r, TG_F32, 4, so, expect, 1e-6);
    tg_graph_free(g);
}

/* x [2,3,11], w [4,3,3], stride 2, padding 1, dilation 2 -> [2,4,5] */
static void test_conv1d_stride_padding_dilation(void **state) {
    (void)state;
    enum { N = 2, CI = 3, W = 11, CO = 4, K = 3, S = 2, P = 1, D = 2 };
    const int WO = (W + 2 * P - D * (K - 1) - 1) / S + 1;
    assert_int_equal(WO, 5);
    tg_graph *g = tg_graph_new();
    float x[N * CI * W], w[CO * CI * K];
    for (int i = 0; i < N * CI * W; i++) x[i] = (float)((i * 7) % 13) - 6;
    for (int i = 0; i < CO * CI * K; i++) w[i] = (float)((i * 5) % 9) * 0.25f - 1;
    int64_t sx[] = {N, CI, W}, sw[] = {CO, CI, K}, so[] = {N, CO, 5};
    tg_array r = run(g, tg_conv1d(g, const_f32(g, 3, sx, x), const_f32(g, 3, sw, w), S, P, D));
    double expect[N * CO * 5];
    for (int n = 0; n < N; n++)
        for (int co = 0; co < CO; co++)
            for (int o = 0; o < WO; o++) {
                double acc = 0;
                for (int ci = 0; ci < CI; ci++)
                    for (int k = 0; k < K; k++) {
                        int pos = o * S - P + k * D;
                        if (pos >= 0 && pos < W)
                            acc += x[(n * CI + ci) * W + pos] * w[(co * CI + ci) * K + k];
                    }
                expect[(n * CO + co) * WO + o] = acc;
            }
    expect_array(&r, TG_F32, 3, so, expect, 1e-6);
    tg_graph_free(g);
}

/* ---- state ---- */

static void store_floats(tg_store *s, const char *name, int rank, const int64_t *shape,
                         float *data) {
    tg_array a = view(TG_F32, rank, shape, data);
    assert_int_equal(tg_store_set(s, name, &a), TG_OK);
}

static void assert_stored(tg_store *s, const char *name, int n, const double *expect) {
    tg_array a = {0};
    assert_int_equal(tg_store_get(s, name, &a), TG_OK);
    assert_values(&a, n, expect, 0);
    tg_array_free(&a);
}

/* w := w + 1 while y = w * 10 reads the old w in the same run. */
static void test_assign_reads_see_old_value(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_store *s = tg_store_new();
    int64_t sw[] = {2};
    float w0[2] = {1, 2};
    store_floats(s, "w", 1, sw, w0);
    tg_tensor w = tg_variable(g, "w", TG_F32, 1, sw, true);
    tg_tensor a = tg_assign(g, w, tg_add(g, w, tg_scalar(g, TG_F32, 1)));
    tg_tensor y = tg_mul(g, w, tg_scalar(g, TG_F32, 10));
    check_graph(g);
    tg_tensor targets[2] = {y, a};
    tg_array r[2];
    assert_int_equal(tg_interpret(g, s, 0, NULL, 2, targets, r, 1, &a, 0), TG_OK);
    double ey[2] = {10, 20}, ea[2] = {2, 3};
    expect_array(&r[0], TG_F32, 1, sw, ey, 0);
    expect_array(&r[1], TG_F32, 1, sw, ea, 0);
    assert_stored(s, "w", 2, ea);

    /* a second run sees the new value; reading y alone writes nothing */
    tg_array ry = run_flags(g, s, 0, NULL, y, 0);
    double ey2[2] = {20, 30};
    expect_array(&ry, TG_F32, 1, sw, ey2, 0);
    assert_stored(s, "w", 2, ea);
    tg_store_free(s);
    tg_graph_free(g);
}

/* Only the target ops run; an assign may create a variable the store lacks. */
static void test_assign_only_target_ops_and_creates(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_store *s = tg_store_new();
    int64_t sv[] = {3};
    float c[3] = {4, 5, 6};
    tg_tensor v = tg_variable(g, "fresh", TG_F32, 1, sv, false);
    tg_tensor u = tg_variable(g, "untouched", TG_F32, 1, sv, false);
    tg_tensor set_v = tg_assign(g, v, const_f32(g, 1, sv, c));
    tg_tensor set_u = tg_assign(g, u, const_f32(g, 1, sv, c));
    check_graph(g);
    (void)set_u;
    assert_int_equal(tg_interpret(g, s, 0, NULL, 0, NULL, NULL, 1, &set_v, 0), TG_OK);
    double e[3] = {4, 5, 6};
    assert_stored(s, "fresh", 3, e);
    assert_false(tg_store_has(s, "untouched"));
    /* without a store there is nowhere to write */
    assert_int_equal(tg_interpret(g, NULL, 0, NULL, 0, NULL, NULL, 1, &set_v, 0),
                     TG_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(tg_last_error(), "fresh"));
    tg_store_free(s);
    tg_graph_free(g);
}

/* A KV-cache style write: row `start` of a [4,2] cache. */
static void test_slice_update(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_store *s = tg_store_new();
    int64_t sc[] = {4, 2}, su[] = {1, 2}, ss[] = {2};
    float cache[8] = {0};
    store_floats(s, "cache", 2, sc, cache);
    tg_tensor var = tg_variable(g, "cache", TG_F32, 2, sc, false);
    tg_tensor up = tg_placeholder(g, "row", TG_F32, 2, su);
    tg_tensor start = tg_placeholder(g, "pos", TG_I32, 1, ss);
    tg_tensor su_op = tg_slice_update(g, var, up, start);
    tg_tensor old_sum = tg_sum(g, var, 0, NULL, false);
    check_graph(g);

    float row[2] = {7, 8};
    int32_t pos[2] = {2, 0};
    tg_array arow = view(TG_F32, 2, su, row), apos = view(TG_I32, 1, ss, pos);
    tg_feed feeds[2] = {{up, &arow}, {start, &apos}};
    tg_tensor targets[2] = {su_op, old_sum};
    tg_array r[2];
    assert_int_equal(tg_interpret(g, s, 2, feeds, 2, targets, r, 1, &su_op, 0), TG_OK);
    double e[8] = {0, 0, 0, 0, 7, 8, 0, 0}, zero = 0;
    expect_array(&r[0], TG_F32, 2, sc, e, 0);
    expect_array(&r[1], TG_F32, 0, NULL, &zero, 0);
    assert_stored(s, "cache", 8, e);

    /* a start that does not fit is a run-time error and writes nothing */
    int32_t bad[2] = {4, 0};
    tg_array abad = view(TG_I32, 1, ss, bad);
    tg_feed feeds_bad[2] = {{up, &arow}, {start, &abad}};
    tg_array rr = {0};
    assert_int_equal(tg_interpret(g, s, 2, feeds_bad, 1, &su_op, &rr, 1, &su_op, 0),
                     TG_ERR_RUNTIME);
    assert_non_null(strstr(tg_last_error(), "slice_update"));
    assert_null(rr.data);
    assert_stored(s, "cache", 8, e);
    tg_store_free(s);
    tg_graph_free(g);
}

/* A non-contiguous slab: update [1,2,1] at (0,1,1) of a [2,3,2] variable. */
static void test_slice_update_strided_slab(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_store *s = tg_store_new();
    int64_t sv[] = {2, 3, 2}, su[] = {1, 2, 1}, ss[] = {3};
    float zeros[12] = {0}, upd[2] = {1, 2};
    int32_t start[3] = {0, 1, 1};
    store_floats(s, "kv", 3, sv, zeros);
    tg_tensor op = tg_slice_update(g, tg_variable(g, "kv", TG_F32, 3, sv, false),
                                   const_f32(g, 3, su, upd), const_i32(g, 1, ss, start));
    check_graph(g);
    assert_int_equal(tg_interpret(g, s, 0, NULL, 0, NULL, NULL, 1, &op, 0), TG_OK);
    double e[12] = {0, 0, 0, 1, 0, 2, 0, 0, 0, 0, 0, 0};
    assert_stored(s, "kv", 12, e);
    tg_store_free(s);
    tg_graph_free(g);
}

/* ---- feeds, dynamic shapes and errors ---- */

static void test_dynamic_placeholder(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t sx[] = {-1, 3};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, sx);
    int ax[] = {0};
    tg_tensor colsum = tg_sum(g, x, 1, ax, false);
    int64_t b[] = {-2, 0}, e[] = {INT64_MAX, INT64_MAX}, st[] = {1, 1};
    tg_tensor tail = tg_slice(g, x, b, e, st); /* the last two rows, whatever the size */
    int64_t flat_shape[] = {-1};
    tg_tensor flat = tg_reshape(g, x, 1, flat_shape);
    check_graph(g);
    for (int rows = 2; rows <= 4; rows += 2) {
        float data[12];
        for (int i = 0; i < rows * 3; i++) data[i] = (float)i;
        int64_t shape[] = {rows, 3};
        tg_array a = view(TG_F32, 2, shape, data);
        tg_feed f = {x, &a};
        tg_tensor targets[3] = {colsum, tail, flat};
        tg_array r[3];
        if (tg_interpret(g, NULL, 1, &f, 3, targets, r, 0, NULL, 0) != TG_OK)
            fail_msg("%s", tg_last_error());
        double es[3] = {0, 0, 0}, et[6];
        for (int i = 0; i < rows * 3; i++) es[i % 3] += data[i];
        for (int i = 0; i < 6; i++) et[i] = data[(rows - 2) * 3 + i];
        int64_t s3[] = {3}, s23[] = {2, 3};
        expect_array(&r[0], TG_F32, 1, s3, es, 0);
        expect_array(&r[1], TG_F32, 2, s23, et, 0);
        double ef[12];
        for (int i = 0; i < rows * 3; i++) ef[i] = data[i];
        int64_t sf[] = {rows * 3};
        expect_array(&r[2], TG_F32, 1, sf, ef, 0);
    }
    tg_graph_free(g);
}

/* A placeholder no target needs does not have to be fed. */
static void test_unneeded_placeholder_not_fed(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {-1};
    tg_tensor unused = tg_placeholder(g, "unused", TG_F32, 1, s);
    tg_tensor y = tg_add(g, tg_scalar(g, TG_F32, 2), tg_scalar(g, TG_F32, 3));
    (void)unused;
    tg_array r = run(g, y);
    double e = 5;
    expect_array(&r, TG_F32, 0, NULL, &e, 0);
    tg_graph_free(g);
}

static void test_feed_errors(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t sx[] = {2, 3};
    tg_tensor x = tg_placeholder(g, "images", TG_F32, 2, sx);
    tg_tensor y = tg_neg(g, x);
    check_graph(g);
    tg_array r = {0};
    assert_int_equal(tg_interpret(g, NULL, 0, NULL, 1, &y, &r, 0, NULL, 0),
                     TG_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(tg_last_error(), "images"));
    assert_non_null(strstr(tg_last_error(), "not fed"));

    float data[6] = {0};
    int64_t wrong[] = {3, 2};
    tg_array a = view(TG_F32, 2, wrong, data);
    tg_feed f = {x, &a};
    assert_int_equal(tg_interpret(g, NULL, 1, &f, 1, &y, &r, 0, NULL, 0), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_last_error(), "images"));
    assert_non_null(strstr(tg_last_error(), "f32[2,3]"));
    assert_non_null(strstr(tg_last_error(), "f32[3,2]"));

    tg_array ai = view(TG_I32, 2, sx, data);
    f.value = &ai;
    assert_int_equal(tg_interpret(g, NULL, 1, &f, 1, &y, &r, 0, NULL, 0), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_last_error(), "i32[2,3]"));

    f.tensor = y; /* not a placeholder */
    f.value = &a;
    assert_int_equal(tg_interpret(g, NULL, 1, &f, 1, &y, &r, 0, NULL, 0), TG_ERR_INVALID_ARGUMENT);
    tg_tensor bad = {999};
    assert_int_equal(tg_interpret(g, NULL, 0, NULL, 1, &bad, &r, 0, NULL, 0),
                     TG_ERR_INVALID_ARGUMENT);
    assert_null(r.data);
    tg_graph_free(g);
}

static void test_variable_errors(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t sw[] = {4};
    tg_tensor w = tg_variable(g, "encoder.weight", TG_F32, 1, sw, true);
    tg_tensor y = tg_neg(g, w);
    check_graph(g);
    tg_store *s = tg_store_new();
    tg_array r = {0};
    assert_int_equal(tg_interpret(g, s, 0, NULL, 1, &y, &r, 0, NULL, 0), TG_ERR_NOT_FOUND);
    assert_non_null(strstr(tg_last_error(), "encoder.weight"));
    assert_int_equal(tg_interpret(g, NULL, 0, NULL, 1, &y, &r, 0, NULL, 0), TG_ERR_NOT_FOUND);

    float five[5] = {0};
    int64_t s5[] = {5};
    store_floats(s, "encoder.weight", 1, s5, five);
    assert_int_equal(tg_interpret(g, s, 0, NULL, 1, &y, &r, 0, NULL, 0), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_last_error(), "f32[4]"));
    assert_non_null(strstr(tg_last_error(), "f32[5]"));
    assert_null(r.data);
    tg_store_free(s);
    tg_graph_free(g);
}

/* A value too large to hold is TG_ERR_NO_MEMORY, not a crash. */
static void test_huge_value_is_no_memory(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {(int64_t)1 << 20, (int64_t)1 << 20};
    tg_tensor big = tg_iota(g, TG_F32, 2, s, 0);
    tg_tensor y = tg_sum(g, big, 0, NULL, false);
    check_graph(g);
    tg_array r = {0};
    assert_int_equal(tg_interpret(g, NULL, 0, NULL, 1, &y, &r, 0, NULL, 0), TG_ERR_NO_MEMORY);
    assert_non_null(strstr(tg_last_error(), "iota"));
    assert_null(r.data);
    tg_graph_free(g);
}

/* A graph with a builder error is refused, not run. */
static void test_invalid_graph(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float a[2] = {1, 2}, b[3] = {1, 2, 3};
    int64_t s2[] = {2}, s3[] = {3};
    tg_tensor y = tg_add(g, const_f32(g, 1, s2, a), const_f32(g, 1, s3, b));
    assert_false(tg_tensor_valid(g, y));
    tg_tensor first = {0};
    tg_array r = {0};
    assert_int_equal(tg_interpret(g, NULL, 0, NULL, 1, &first, &r, 0, NULL, 0),
                     TG_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(tg_last_error(), "builder error"));
    assert_int_equal(tg_interpret(NULL, NULL, 0, NULL, 1, &first, &r, 0, NULL, 0),
                     TG_ERR_INVALID_ARGUMENT);
    tg_graph_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_broadcast),
        cmocka_unit_test(test_mul_sub_odd_sizes),
        cmocka_unit_test(test_unary_ops),
        cmocka_unit_test(test_i32_division_truncates),
        cmocka_unit_test(test_i8_add_saturates),
        cmocka_unit_test(test_u8_comparisons),
        cmocka_unit_test(test_cast_saturates),
        cmocka_unit_test(test_f16_rounding_and_f64_mode),
        cmocka_unit_test(test_f64_mode_f32),
        cmocka_unit_test(test_binary_max_min_pow),
        cmocka_unit_test(test_where_broadcast),
        cmocka_unit_test(test_sum_several_axes_keepdims),
        cmocka_unit_test(test_sum_last_axis_and_mean_all),
        cmocka_unit_test(test_max_min),
        cmocka_unit_test(test_i32_sum),
        cmocka_unit_test(test_argmax_first_on_ties),
        cmocka_unit_test(test_reshape),
        cmocka_unit_test(test_permute_and_transpose),
        cmocka_unit_test(test_broadcast_to),
        cmocka_unit_test(test_slice_steps_and_negative_bounds),
        cmocka_unit_test(test_concat_three),
        cmocka_unit_test(test_pad),
        cmocka_unit_test(test_gather_out_of_range_reads_zero),
        cmocka_unit_test(test_scatter_add_duplicates_and_dropped),
        cmocka_unit_test(test_one_hot),
        cmocka_unit_test(test_iota),
        cmocka_unit_test(test_matmul_small),
        cmocka_unit_test(test_matmul_transposes),
        cmocka_unit_test(test_matmul_batch_broadcast),
        cmocka_unit_test(test_conv1d_stride_padding_dilation),
        cmocka_unit_test(test_assign_reads_see_old_value),
        cmocka_unit_test(test_assign_only_target_ops_and_creates),
        cmocka_unit_test(test_slice_update),
        cmocka_unit_test(test_slice_update_strided_slab),
        cmocka_unit_test(test_dynamic_placeholder),
        cmocka_unit_test(test_unneeded_placeholder_not_fed),
        cmocka_unit_test(test_feed_errors),
        cmocka_unit_test(test_variable_errors),
        cmocka_unit_test(test_huge_value_is_no_memory),
        cmocka_unit_test(test_invalid_graph),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
