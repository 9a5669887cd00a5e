/* test_vk_ops_elementwise.c — the elementwise ops (unary, binary,
 * comparisons, where, cast), one_hot and iota, each as a one-op graph
 * through tg_compile / tg_run against the interpreter
 * (tests/vk_ops_harness.h), on shapes with size-1 dims, odd sizes that are
 * not multiples of the workgroup size (67, 129), broadcasts both ways and
 * rank 0; f32, f16 and the integer dtypes where the op takes them.
 *
 * Tolerances (|dev - ref| <= atol + rtol * |ref|):
 *  - exact ops (add/sub/mul/neg/abs/square/relu/maximum/minimum on floats,
 *    comparisons, integer arithmetic, casts, where, one_hot, iota): 0 —
 *    the device does the same single IEEE operation and rounding as the
 *    interpreter.
 *  - transcendental f32 (exp, log, sin, tanh, erf, gelu, sigmoid, pow...):
 *    rtol 2e-6, atol 1e-6 — GLSL exp/log/sin are not correctly rounded
 *    (lavapipe's are within a few ulp = 1.2e-7 each), gelu/pow chain two
 *    of them; our erf and tanh are ~1 ulp (checked against libm on the
 *    host: 1.1e-7 and 1.7e-7 relative). div: rtol 2e-6 (GLSL's division
 *    may be a reciprocal and a multiply: 2 ulp).
 *  - f16: the f32 bound plus rtol 2^-10, atol 1e-3 (rt16 in the harness).
 */
#include "vk_ops_harness.h"

typedef tg_tensor (*unary_fn)(tg_graph *, tg_tensor);

static const struct {
    const char *name;
    unary_fn f;
    double lo, hi, rtol, atol;
} unary_ops[] = {
    {"neg", tg_neg, -3, 3, 0, 0},
    {"abs", tg_abs, -3, 3, 0, 0},
    {"exp", tg_exp, -10, 10, 2e-6, 1e-6},
    {"log", tg_log, 0.01, 100, 2e-6, 1e-6},
    {"sqrt", tg_sqrt, 0, 100, 2e-6, 0},
    {"rsqrt", tg_rsqrt, 0.01, 100, 2e-6, 0},
    {"reciprocal", tg_reciprocal, 0.1, 10, 2e-6, 0},
    {"square", tg_square, -3, 3, 0, 0},
    {"tanh", tg_tanh, -12, 12, 2e-6, 1e-7},
    {"erf", tg_erf, -5, 5, 2e-6, 1e-7},
    {"gelu", tg_gelu, -6, 6, 2e-6, 1e-6},
    {"gelu_tanh", tg_gelu_tanh, -6, 6, 2e-6, 1e-6},
    {"relu", tg_relu, -3, 3, 0, 0},
    {"sigmoid", tg_sigmoid, -20, 20, 2e-6, 1e-7},
    {"silu", tg_silu, -20, 20, 2e-6, 1e-6},
    {"sin", tg_sin, -6.3, 6.3, 2e-6, 2e-6},
    {"cos", tg_cos, -6.3, 6.3, 2e-6, 2e-6},
    {"stop_gradient", tg_stop_gradient, -3, 3, 0, 0},
};

static const int64_t shapes3[3][4] = {{1, 1}, {3, 1, 67}, {2, 3, 129}};
static const int ranks3[3] = {1, 3, 3};

static void test_unary(void **state) {
    (void)state;
    for (size_t o = 0; o < sizeof unary_ops / sizeof unary_ops[0]; o++) {
        for (int s = 0; s < 3; s++) {
            for (int h = 0; h < 2; h++) {
                if (h && !have_f16()) continue;
                tg_dtype dt = h ? TG_F16 : TG_F32;
                tg_graph *g = tg_graph_new();
                tg_tensor x = ph(g, dt, ranks3[s], shapes3[s], unary_ops[o].lo, unary_ops[o].hi);
                tg_tensor y = unary_ops[o].f(g, x);
                double r = unary_ops[o].rtol, a = unary_ops[o].atol;
                check(g, y, h ? rt16(r) : r, h ? a + 1e-3 : a);
            }
        }
    }
}

/* Integer versions of the ops defined on every dtype, and special values. */
static void test_unary_int_and_special(void **state) {
    (void)state;
    unary_fn fs[] = {tg_neg, tg_abs, tg_square, tg_relu, tg_stop_gradient};
    tg_dtype dts[] = {TG_I32, TG_I8, TG_U8};
    for (size_t f = 0; f < sizeof fs / sizeof fs[0]; f++) {
        for (int d = 0; d < 3; d++) {
            tg_graph *g = tg_graph_new();
            int64_t shape[] = {5, 37};
            tg_tensor x = ph(g, dts[d], 2, shape, dts[d] == TG_U8 ? 0 : -100, 100);
            check(g, fs[f](g, x), 0, 0);
        }
    }
    /* inf, NaN, big arguments */
    unary_fn sf[] = {tg_tanh, tg_erf, tg_gelu, tg_sigmoid, tg_exp, tg_relu, tg_silu};
    double special[] = {INFINITY, -INFINITY, NAN, 0.0, -0.0, 88.0, -88.0, 1e-30, 1000, -1000};
    for (size_t f = 0; f < sizeof sf / sizeof sf[0]; f++) {
        tg_graph *g = tg_graph_new();
        int64_t shape[] = {10};
        tg_tensor x = ph(g, TG_F32, 1, shape, 0, 1);
        for (int i = 0; i < 10; i++) tg_array_set(last_feed(), i, special[i]);
        check(g, sf[f](g, x), 2e-6, 1e-7);
    }
}

typedef tg_tensor (*binary_fn)(tg_graph *, tg_tensor, tg_tensor);

static void test_binary(void **state) {
    (void)state;
    static const struct {
        binary_fn f;
        bool ints; /* defined on integers */
        double rtol;
    } ops[] = {
        {tg_add, true, 0},     {tg_sub, true, 0},     {tg_mul, true, 0},     {tg_div, true, 2e-6},
        {tg_pow, false, 4e-6}, {tg_maximum, true, 0}, {tg_minimum, true, 0}, {tg_eq, true, 0},
        {tg_ne, true, 0},      {tg_lt, true, 0},      {tg_le, true, 0},      {tg_gt, true, 0},
        {tg_ge, true, 0},
    };
    /* shape pairs: equal, broadcast both ways, rank-0 against rank 3 */
    static const struct {
        int ra, rb;
        int64_t a[4], b[4];
    } pairs[] = {
        {2, 2, {7, 129}, {7, 129}},
        {3, 1, {3, 1, 67}, {67}},
        {2, 3, {5, 1}, {2, 1, 3}},
        {0, 3, {0}, {2, 3, 4}},
    };
    for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
        for (size_t p = 0; p < sizeof pairs / sizeof pairs[0]; p++) {
            tg_dtype dts[] = {TG_F32, TG_F16, TG_I32, TG_I8, TG_U8};
            for (int d = 0; d < 5; d++) {
                tg_dtype dt = dts[d];
                if (dt == TG_F16 && !have_f16()) continue;
                bool is_int = !tg_dtype_is_float(dt);
                if (is_int && !ops[o].ints) continue;
                /* fewer integer variants: i8/u8 on one shape pair */
                if ((dt == TG_I8 || dt == TG_U8) && p != 1) continue;
                tg_graph *g = tg_graph_new();
                double lo = ops[o].f == tg_pow ? 0.1 : dt == TG_U8 ? 0 : -10;
                double hi = ops[o].f == tg_pow ? 3 : 10;
                tg_tensor a = ph(g, dt, pairs[p].ra, pairs[p].a, lo, hi);
                tg_tensor b = ph(g, dt, pairs[p].rb, pairs[p].b, ops[o].f == tg_pow ? -3 : lo, hi);
                /* integer division by zero gives 0: make some divisors 0 */
                if (ops[o].f == tg_div && is_int) tg_array_set(last_feed(), 0, 0);
                tg_tensor y = ops[o].f(g, a, b);
                bool h = dt == TG_F16;
                double r = is_int ? 0 : ops[o].rtol;
                check(g, y, h ? rt16(r) : r, h ? 1e-3 : 0);
            }
        }
    }
    /* pow with negative bases and integral exponents, and zero */
    tg_graph *g = tg_graph_new();
    int64_t s[] = {8};
    tg_tensor a = ph(g, TG_F32, 1, s, 0, 1), b = ph(g, TG_F32, 1, s, 0, 1);
    double av[] = {-2, -2, -2, 0, 0, 0, -1.5, 3}, bv[] = {3, 2, 0.5, 2, 0, -1, -2, 0};
    for (int i = 0; i < 8; i++) {
        tg_array_set(&feed_vals[0], i, av[i]);
        tg_array_set(&feed_vals[1], i, bv[i]);
    }
    check(g, tg_pow(g, a, b), 4e-6, 0);
    /* maximum/minimum propagate NaN */
    g = tg_graph_new();
    a = ph(g, TG_F32, 1, s, -1, 1);
    b = ph(g, TG_F32, 1, s, -1, 1);
    tg_array_set(&feed_vals[0], 1, NAN);
    tg_array_set(&feed_vals[1], 2, NAN);
    check(g, tg_maximum(g, a, b), 0, 0);
    g = tg_graph_new();
    a = ph(g, TG_F32, 1, s, -1, 1);
    b = ph(g, TG_F32, 1, s, -1, 1);
    tg_array_set(&feed_vals[0], 3, NAN);
    check(g, tg_minimum(g, a, b), 0, 0);
}

static void test_where_cast(void **state) {
    (void)state;
    static const struct {
        int rc, ra, rb;
        int64_t c[3], a[3], b[3];
    } sh[] = {
        {2, 2, 2, {4, 33}, {4, 33}, {4, 33}},
        {1, 2, 0, {33}, {4, 33}, {0}},
        {3, 2, 1, {2, 1, 5}, {3, 1}, {5}},
    };
    for (int s = 0; s < 3; s++) {
        tg_dtype dts[] = {TG_F32, TG_F16, TG_I32};
        for (int d = 0; d < 3; d++) {
            if (dts[d] == TG_F16 && !have_f16()) continue;
            tg_graph *g = tg_graph_new();
            tg_tensor c = ph(g, TG_U8, sh[s].rc, sh[s].c, 0, 1);
            tg_tensor a = ph(g, dts[d], sh[s].ra, sh[s].a, -5, 5);
            tg_tensor b = ph(g, dts[d], sh[s].rb, sh[s].b, -5, 5);
            check(g, tg_where(g, c, a, b), 0, 0);
        }
    }
    /* cast between every pair of dtypes, with values that saturate,
     * truncate toward zero and NaN -> 0 */
    tg_dtype all[] = {TG_F32, TG_F16, TG_BF16, TG_I32, TG_I8, TG_U8};
    for (int from = 0; from < 6; from++) {
        for (int to = 0; to < 6; to++) {
            if ((all[from] == TG_F16 || all[to] == TG_F16) && !have_f16()) continue;
            tg_graph *g = tg_graph_new();
            int64_t s[] = {3, 41};
            tg_tensor x = ph(g, all[from], 2, s, all[from] == TG_U8 ? 0 : -300, 300);
            if (tg_dtype_is_float(all[from])) {
                double sp[] = {NAN, INFINITY, -INFINITY, 3e9,    -3e9,
                               2.5, -2.5,     127.9,     -128.9, 255.5};
                for (int i = 0; i < 10; i++) tg_array_set(last_feed(), i, sp[i]);
            }
            check(g, tg_cast(g, x, all[to]), 0, 0);
        }
    }
    /* comparisons give u8 that where consumes */
    tg_graph *g = tg_graph_new();
    int64_t s[] = {6, 7};
    tg_tensor a = ph(g, TG_F32, 2, s, -1, 1);
    tg_tensor b = ph(g, TG_F32, 1, s + 1, -1, 1);
    check(g, tg_cast(g, tg_gt(g, a, b), TG_F32), 0, 0);
    (void)g;
}

static void test_one_hot_iota(void **state) {
    (void)state;
    static const struct {
        int r;
        int64_t s[3], depth;
    } sh[] = {{1, {1}, 1}, {1, {37}, 10}, {2, {3, 5}, 129}};
    for (int i = 0; i < 3; i++) {
        tg_dtype dts[] = {TG_F32, TG_I32, TG_U8, TG_F16};
        for (int d = 0; d < 4; d++) {
            if (dts[d] == TG_F16 && !have_f16()) continue;
            tg_graph *g = tg_graph_new();
            /* some indices out of range: all-zero rows */
            tg_tensor idx = ph(g, TG_I32, sh[i].r, sh[i].s, -2, (double)sh[i].depth + 1);
            check(g, tg_one_hot(g, idx, sh[i].depth, dts[d]), 0, 0);
        }
    }
    static const struct {
        int r, axis;
        int64_t s[3];
    } io[] = {{1, 0, {300}}, {3, 1, {2, 7, 3}}, {3, -1, {4, 1, 65}}, {2, 0, {1, 9}}};
    for (int i = 0; i < 4; i++) {
        tg_dtype dts[] = {TG_F32, TG_I32, TG_F16, TG_I8};
        for (int d = 0; d < 4; d++) {
            if (dts[d] == TG_F16 && !have_f16()) continue;
            tg_graph *g = tg_graph_new();
            check(g, tg_iota(g, dts[d], io[i].r, io[i].s, io[i].axis), 0, 0);
        }
    }
}

/* Grids over maxComputeWorkGroupCount[0]: with the device's x and y
 * limits pretended tiny the grid spreads over y and z, and with the real
 * limits a tensor of 2^23 + 3 elements needs over 65535 groups of 128. */
static void test_big_grid(void **state) {
    (void)state;
    tg_vk_caps real = dev->caps;
    dev->caps.max_workgroup_count[0] = 3;
    dev->caps.max_workgroup_count[1] = 4;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {5000};
    tg_tensor x = ph(g, TG_F32, 1, s, -1, 1);
    check(g, tg_neg(g, x), 0, 0);
    dev->caps = real;

    g = tg_graph_new();
    int64_t big[] = {(1 << 23) + 3};
    x = ph(g, TG_F32, 1, big, -1, 1);
    check(g, tg_neg(g, x), 0, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_unary, reset_feeds),
        cmocka_unit_test_setup(test_unary_int_and_special, reset_feeds),
        cmocka_unit_test_setup(test_binary, reset_feeds),
        cmocka_unit_test_setup(test_where_cast, reset_feeds),
        cmocka_unit_test_setup(test_one_hot_iota, reset_feeds),
        cmocka_unit_test_setup(test_big_grid, reset_feeds),
        cmocka_unit_test_setup(test_validation_clean, reset_feeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
