/* test_vk_ops.c — every op's Vulkan kernel (backend/gen_*.c) against the
 * reference interpreter, on lavapipe with the validation layer on.
 *
 * Each case is a one-op graph over placeholders with seeded random values.
 * A small harness here plays the executor: it fills a tg_kernel for the
 * op's node, generates (tg_gen_kernel), compiles, uploads the inputs in
 * device storage format, dispatches, downloads and compares with
 * tg_interpret on the same graph and feeds.
 *
 * Tolerances, per element: |dev - ref| <= atol + rtol * |ref| (NaN must
 * match NaN, infinities must match exactly):
 *  - exact ops (movement, comparisons, integer arithmetic, casts, where,
 *    one_hot, iota, add/sub/mul/neg/abs/relu on floats): 0 — the device
 *    does the same single IEEE operation the interpreter's rounding does.
 *  - transcendental f32 (exp, log, sin, tanh, erf, gelu, sigmoid, pow...):
 *    rtol 2e-6, atol 1e-6 — GLSL exp/log/sin are not correctly rounded
 *    (lavapipe's are within a few ulp = 1.2e-7 each), gelu/pow chain two
 *    of them; our erf and tanh are ~1 ulp (checked against libm on the
 *    host: 1.1e-7 and 1.7e-7 relative).
 *  - f16 storage: rtol 2^-10 + the f32 bound, atol 1e-3 — the output is
 *    rounded to half (2^-11 relative) and one rounding-boundary flip
 *    doubles that; inputs are already f16 on both sides.
 *  - reductions f32: atol 2e-6 * sum|x| — f32 accumulation in another
 *    order than the interpreter's f64.
 *  - softmax/layer_norm/attention/cross_entropy f32: rtol 1e-5, atol 1e-6
 *    — f32 sums over a row plus exp/log errors.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <unistd.h>

#include "backend/kernel.h"
#include "graph/graph_internal.h"

static tg_vk_device *dev;
static char tmp_dir[256];

/* ---- feeds ---- */

#define MAX_FEEDS 8
static tg_feed feeds[MAX_FEEDS];
static tg_array feed_vals[MAX_FEEDS];
static int n_feeds;
static uint64_t rng = 12345;

static double urand(void) { /* uniform in [0, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / (double)(1ull << 53);
}

/* A placeholder fed with uniform values in [lo, hi] (integers: whole
 * numbers in [lo, hi]). */
static tg_tensor ph(tg_graph *g, tg_dtype dt, int rank, const int64_t *shape, double lo,
                    double hi) {
    char name[16];
    assert_true(n_feeds < MAX_FEEDS);
    snprintf(name, sizeof name, "x%d", n_feeds);
    tg_tensor t = tg_placeholder(g, name, dt, rank, shape);
    tg_array *a = &feed_vals[n_feeds];
    assert_int_equal(tg_array_alloc(a, dt, rank, shape), TG_OK);
    bool is_int = !tg_dtype_is_float(dt);
    for (int64_t i = 0; i < tg_array_count(a); i++) {
        double v = lo + (hi - lo + (is_int ? 1 : 0)) * urand();
        tg_array_set(a, i, is_int ? floor(v) : v);
    }
    feeds[n_feeds].tensor = t;
    feeds[n_feeds].value = a;
    n_feeds++;
    return t;
}

/* The last placeholder's value, to plant special values. */
static tg_array *last_feed(void) {
    return &feed_vals[n_feeds - 1];
}

static void feeds_reset(void) {
    for (int i = 0; i < n_feeds; i++) tg_array_free(&feed_vals[i]);
    n_feeds = 0;
}

/* ---- running one node on the device ---- */

static void to_storage(const tg_array *a, tg_dtype st, uint8_t *dst) {
    for (int64_t i = 0; i < tg_array_count(a); i++) {
        double v = tg_array_get(a, i);
        if (st == TG_F16) {
            uint16_t h = tg_f32_to_f16((float)v);
            memcpy(dst + 2 * i, &h, 2);
        } else if (st == TG_F32) {
            float f = (float)v;
            memcpy(dst + 4 * i, &f, 4);
        } else {
            int32_t x = (int32_t)v;
            memcpy(dst + 4 * i, &x, 4);
        }
    }
}

static double from_storage(const uint8_t *src, tg_dtype st, int64_t i) {
    if (st == TG_F16) {
        uint16_t h;
        memcpy(&h, src + 2 * i, 2);
        return tg_f16_to_f32(h);
    }
    if (st == TG_F32) {
        float f;
        memcpy(&f, src + 4 * i, 4);
        return f;
    }
    int32_t x;
    memcpy(&x, src + 4 * i, 4);
    return x;
}

static size_t storage_bytes(tg_dtype st, int64_t n) {
    size_t b = (size_t)n * (st == TG_F16 ? 2 : 4);
    return b < 16 ? 16 : (b + 15) / 16 * 16;
}

static int64_t node_count(const tg_node *n) {
    return tg_shape_count(n->rank, n->shape);
}

/* Generates, compiles and runs the kernel of node y (its inputs' values in
 * `in`, the interpreter's), with `caps` (NULL: the device's); returns the
 * output as doubles (malloc'ed). slice_update's output starts as the
 * variable's value, as the executor binds the variable buffer there. */
static double *run_node(const tg_graph *g, tg_tensor y, const tg_array *in,
                        const tg_vk_caps *caps) {
    const tg_node *n = &g->nodes[y.id];
    tg_kernel k;
    memset(&k, 0, sizeof k);
    k.g = g;
    k.n_nodes = 1;
    k.nodes = &y.id;
    k.n_inputs = n->n_inputs;
    for (int i = 0; i < n->n_inputs; i++) {
        k.inputs[i] = n->inputs[i];
        k.input_storage[i] = tg_storage_dtype(&dev->caps, g->nodes[n->inputs[i]].dtype);
    }
    k.n_outputs = 1;
    k.outputs[0] = y.id;
    k.output_storage[0] = tg_storage_dtype(&dev->caps, n->dtype);

    tg_kernel_code code;
    tg_status st = tg_gen_kernel(caps ? caps : &dev->caps, &k, &code);
    if (st != TG_OK) fail_msg("generate %s: %s", tg_ops[n->op].name, tg_last_error());
    tg_vk_spirv spv = {0};
    st = tg_vk_compile_glsl(code.glsl, code.name, 0, NULL, &spv);
    if (st != TG_OK) fail_msg("compile %s: %s\n%s", code.name, tg_last_error(), code.glsl);
    tg_vk_pipeline_desc desc;
    memset(&desc, 0, sizeof desc);
    desc.name = code.name;
    desc.spirv = spv.words;
    desc.n_words = spv.n_words;
    desc.n_bindings = code.n_bindings;
    memcpy(desc.bindings, code.kinds, sizeof desc.bindings);
    desc.push_constant_bytes = code.push_bytes;
    tg_vk_pipeline *pipe = NULL;
    st = tg_vk_pipeline_create(dev, &desc, &pipe);
    if (st != TG_OK) fail_msg("pipeline %s: %s", code.name, tg_last_error());
    tg_vk_spirv_free(&spv);

    tg_vk_buffer bufs[TG_VK_MAX_BINDINGS];
    VkBufferView views[TG_VK_MAX_BINDINGS];
    tg_vk_binding binds[TG_VK_MAX_BINDINGS];
    memset(bufs, 0, sizeof bufs);
    memset(views, 0, sizeof views);
    memset(binds, 0, sizeof binds);
    int nb = k.n_inputs + 1;
    assert_int_equal(code.n_bindings, nb);
    for (int i = 0; i < nb; i++) {
        bool is_out = i == k.n_inputs;
        const tg_array *src = is_out ? (n->op == TG_OP_SLICE_UPDATE ? &in[0] : NULL) : &in[i];
        tg_dtype sd = is_out ? k.output_storage[0] : k.input_storage[i];
        int64_t cnt = is_out ? node_count(n) : tg_array_count(src);
        size_t bytes = storage_bytes(sd, cnt);
        uint8_t *tmp = malloc(bytes);
        assert_non_null(tmp);
        memset(tmp, 0xff, bytes); /* unwritten output shows as NaN / -1 */
        if (src) to_storage(src, sd, tmp);
        unsigned usage =
            code.kinds[i] == TG_VK_BIND_TEXEL ? TG_VK_BUFFER_TEXEL : TG_VK_BUFFER_STORAGE;
        assert_int_equal(tg_vk_buffer_create(dev, bytes, usage, &bufs[i]), TG_OK);
        assert_int_equal(tg_vk_buffer_upload(dev, &bufs[i], 0, tmp, bytes), TG_OK);
        free(tmp);
        binds[i].buffer = &bufs[i];
        if (code.kinds[i] == TG_VK_BIND_TEXEL) {
            st = tg_vk_buffer_view_create(dev, &bufs[i], code.texel_formats[i], 0, VK_WHOLE_SIZE,
                                          &views[i]);
            if (st != TG_OK) fail_msg("view: %s", tg_last_error());
            binds[i].view = views[i];
        }
    }
    tg_vk_cmd *cmd = NULL;
    assert_int_equal(tg_vk_cmd_begin(dev, 0, &cmd), TG_OK);
    st = tg_vk_cmd_dispatch(cmd, pipe, binds, code.push_bytes ? code.push : NULL, code.push_bytes,
                            code.groups);
    if (st != TG_OK) fail_msg("dispatch %s: %s", code.name, tg_last_error());
    assert_int_equal(tg_vk_cmd_barrier(cmd, TG_VK_SYNC_COMPUTE, TG_VK_SYNC_HOST), TG_OK);
    assert_int_equal(tg_vk_cmd_end(cmd), TG_OK);
    st = tg_vk_cmd_run(cmd);
    if (st != TG_OK) fail_msg("run %s: %s", code.name, tg_last_error());
    tg_vk_cmd_free(cmd);

    int64_t cnt = node_count(n);
    size_t bytes = storage_bytes(k.output_storage[0], cnt);
    uint8_t *raw = malloc(bytes);
    double *res = malloc((size_t)(cnt ? cnt : 1) * sizeof *res);
    assert_non_null(raw);
    assert_non_null(res);
    assert_int_equal(tg_vk_buffer_download(dev, &bufs[nb - 1], 0, raw, bytes), TG_OK);
    for (int64_t i = 0; i < cnt; i++) res[i] = from_storage(raw, k.output_storage[0], i);
    free(raw);
    for (int i = 0; i < nb; i++) {
        if (views[i]) tg_vk_buffer_view_destroy(dev, views[i]);
        tg_vk_buffer_destroy(dev, &bufs[i]);
    }
    tg_vk_pipeline_destroy(dev, pipe);
    tg_kernel_code_free(&code);
    return res;
}

static bool close_enough(double got, double want, double rtol, double atol) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

/* Runs y on the interpreter and the device with the current feeds and
 * compares; then frees the graph and the feeds. */
static void check_with(tg_graph *g, tg_tensor y, double rtol, double atol, const tg_vk_caps *caps) {
    if (tg_graph_status(g) != TG_OK) fail_msg("graph: %s", tg_graph_error(g));
    const tg_node *n = &g->nodes[y.id];
    int nt = 1 + n->n_inputs;
    tg_tensor targets[8];
    tg_array res[8];
    memset(res, 0, sizeof res);
    targets[0] = y;
    for (int i = 0; i < n->n_inputs; i++) targets[1 + i].id = n->inputs[i];
    tg_status st = tg_interpret(g, NULL, n_feeds, feeds, nt, targets, res, 0, NULL, 0);
    if (st != TG_OK) fail_msg("interpret: %s", tg_last_error());
    double *got = run_node(g, y, &res[1], caps);
    char shp[96];
    tg_shape_str(n->dtype, n->rank, n->shape, shp, sizeof shp);
    int64_t cnt = tg_array_count(&res[0]);
    int bad = 0;
    for (int64_t i = 0; i < cnt; i++) {
        double want = tg_array_get(&res[0], i);
        if (!close_enough(got[i], want, rtol, atol)) {
            if (bad++ < 5)
                print_message("%s %s: element %lld: device %.9g, interpreter %.9g\n",
                              tg_ops[n->op].name, shp, (long long)i, got[i], want);
        }
    }
    free(got);
    for (int i = 0; i < nt; i++) tg_array_free(&res[i]);
    tg_graph_free(g);
    feeds_reset();
    if (bad)
        fail_msg("%s %s: %d of %lld elements out of tolerance (rtol %g, atol %g)",
                 tg_ops[n->op].name, shp, bad, (long long)cnt, rtol, atol);
}

static void check(tg_graph *g, tg_tensor y, double rtol, double atol) {
    check_with(g, y, rtol, atol, NULL);
}

/* The f16 tolerance on top of an f32 one. */
static double rt16(double r) {
    return r + 1.0 / 1024;
}

static bool have_f16(void) {
    return dev->caps.storage_16bit;
}

/* ---- elementwise ---- */

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

/* Grids over maxComputeWorkGroupCount[0]: with a device whose x limit is
 * pretended tiny the grid spreads over y and z, and with the real device
 * a tensor of 2^23 + 3 elements needs over 65535 groups of 128. */
static void test_big_grid(void **state) {
    (void)state;
    tg_vk_caps small = dev->caps;
    small.max_workgroup_count[0] = 3;
    small.max_workgroup_count[1] = 4;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {5000};
    tg_tensor x = ph(g, TG_F32, 1, s, -1, 1);
    check_with(g, tg_neg(g, x), 0, 0, &small);

    g = tg_graph_new();
    int64_t big[] = {(1 << 23) + 3};
    x = ph(g, TG_F32, 1, big, -1, 1);
    check(g, tg_neg(g, x), 0, 0);
}

/* ---- reductions ---- */

/* Sum-type tolerance: f32 accumulation in another order than the
 * interpreter's f64 errs by about n * 2^-24 * sum|x| at worst; the inputs
 * here are in [-1, 1], so atol = 2e-7 * (reduced count) + f16 output. */
static void test_reductions(void **state) {
    (void)state;
    static const struct {
        int rank;
        int64_t shape[4];
        int n_axes;
        int axes[3];
        bool keep;
    } cases[] = {
        {1, {1}, 0, {0}, false},         {2, {7, 129}, 1, {1}, false},
        {2, {7, 129}, 1, {0}, true},     {3, {3, 1, 67}, 2, {0, 2}, false},
        {3, {5, 300, 3}, 1, {-2}, true}, {4, {2, 3, 4, 5}, 2, {1, 3}, false},
        {2, {2, 1000}, 0, {0}, false},
    };
    typedef tg_tensor (*red_fn)(tg_graph *, tg_tensor, int, const int *, bool);
    red_fn fs[] = {tg_sum, tg_mean, tg_max, tg_min};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t n_red = 1;
        for (int d = 0; d < cases[c].rank; d++) {
            bool r = cases[c].n_axes == 0;
            for (int a = 0; a < cases[c].n_axes; a++)
                r |= (cases[c].axes[a] + cases[c].rank) % cases[c].rank == d;
            if (r) n_red *= cases[c].shape[d];
        }
        for (int f = 0; f < 4; f++) {
            tg_dtype dts[] = {TG_F32, TG_F16, TG_I32};
            for (int d = 0; d < 3; d++) {
                if (dts[d] == TG_F16 && !have_f16()) continue;
                if (dts[d] == TG_I32 && fs[f] == tg_mean) continue;
                tg_graph *g = tg_graph_new();
                tg_tensor x = ph(g, dts[d], cases[c].rank, cases[c].shape, -1, 1);
                if (dts[d] == TG_I32) tg_array_set(last_feed(), 0, 0); /* keep it simple */
                tg_tensor y = fs[f](g, x, cases[c].n_axes, cases[c].axes, cases[c].keep);
                double atol = (fs[f] == tg_sum ? 2e-7 * (double)n_red : 2e-7);
                bool h = dts[d] == TG_F16;
                check(g, y, h ? 1.0 / 1024 : 0, h ? atol + 1e-3 : atol);
            }
        }
        /* argmax along the first listed axis */
        for (int d = 0; d < 2; d++) {
            tg_graph *g = tg_graph_new();
            tg_dtype dt = d ? TG_I32 : TG_F32;
            tg_tensor x = ph(g, dt, cases[c].rank, cases[c].shape, -3, 3); /* ints: many ties */
            check(g, tg_argmax(g, x, cases[c].axes[0], cases[c].keep), 0, 0);
        }
    }
    /* NaN propagates through max and min */
    tg_graph *g = tg_graph_new();
    int64_t s[] = {3, 200};
    tg_tensor x = ph(g, TG_F32, 2, s, -1, 1);
    tg_array_set(last_feed(), 250, NAN);
    int ax[] = {1};
    check(g, tg_max(g, x, 1, ax, false), 0, 0);
    g = tg_graph_new();
    x = ph(g, TG_F32, 2, s, -1, 1);
    tg_array_set(last_feed(), 5, NAN);
    check(g, tg_min(g, x, 1, ax, false), 0, 0);
}

/* ---- movement ---- */

static void test_movement(void **state) {
    (void)state;
    tg_dtype dts[] = {TG_F32, TG_F16, TG_I32, TG_U8};
    for (int d = 0; d < 4; d++) {
        tg_dtype dt = dts[d];
        if (dt == TG_F16 && !have_f16()) continue;
        double lo = dt == TG_U8 ? 0 : -50, hi = 50;
        int64_t s3[] = {3, 5, 67}, s1[] = {1}, s2[] = {1, 129};
        tg_graph *g;
        /* reshape */
        int64_t r1[] = {15, -1}, r2[] = {1, 1}, r3[] = {129};
        g = tg_graph_new();
        check(g, tg_reshape(g, ph(g, dt, 3, s3, lo, hi), 2, r1), 0, 0);
        g = tg_graph_new();
        check(g, tg_reshape(g, ph(g, dt, 1, s1, lo, hi), 2, r2), 0, 0);
        g = tg_graph_new();
        check(g, tg_reshape(g, ph(g, dt, 2, s2, lo, hi), 1, r3), 0, 0);
        /* permute */
        int p1[] = {2, 0, 1}, p2[] = {1, 0}, p3[] = {0, 2, 1};
        int64_t s4[] = {2, 1, 33};
        g = tg_graph_new();
        check(g, tg_permute(g, ph(g, dt, 3, s3, lo, hi), 3, p1), 0, 0);
        g = tg_graph_new();
        check(g, tg_permute(g, ph(g, dt, 2, s2, lo, hi), 2, p2), 0, 0);
        g = tg_graph_new();
        check(g, tg_permute(g, ph(g, dt, 3, s4, lo, hi), 3, p3), 0, 0);
        /* broadcast_to */
        int64_t b1[] = {4, 3, 5, 67}, b2[] = {7, 129}, b3[] = {2, 5, 1};
        int64_t s5[] = {5, 1};
        g = tg_graph_new();
        check(g, tg_broadcast_to(g, ph(g, dt, 3, s3, lo, hi), 4, b1), 0, 0);
        g = tg_graph_new();
        check(g, tg_broadcast_to(g, ph(g, dt, 2, s2, lo, hi), 2, b2), 0, 0);
        g = tg_graph_new();
        check(g, tg_broadcast_to(g, ph(g, dt, 2, s5, lo, hi), 3, b3), 0, 0);
        /* slice: negative begin, steps, clamped end, empty-ish */
        int64_t bg[] = {1, -4, 3}, en[] = {3, INT64_MAX, 60}, st[] = {1, 2, 7};
        int64_t bg2[] = {0, 5}, en2[] = {1, 1000}, st2[] = {1, 1};
        int64_t bg3[] = {0}, en3[] = {1}, st3[] = {3};
        g = tg_graph_new();
        check(g, tg_slice(g, ph(g, dt, 3, s3, lo, hi), bg, en, st), 0, 0);
        g = tg_graph_new();
        check(g, tg_slice(g, ph(g, dt, 2, s2, lo, hi), bg2, en2, st2), 0, 0);
        g = tg_graph_new();
        check(g, tg_slice(g, ph(g, dt, 1, s1, lo, hi), bg3, en3, st3), 0, 0);
        /* concat of 1, 2 and 3 inputs on different axes */
        int64_t c1[] = {3, 2, 67}, c2[] = {3, 1, 67};
        g = tg_graph_new();
        tg_tensor xs[3] = {ph(g, dt, 3, s3, lo, hi), ph(g, dt, 3, c1, lo, hi),
                           ph(g, dt, 3, c2, lo, hi)};
        check(g, tg_concat(g, 3, xs, 1), 0, 0);
        g = tg_graph_new();
        xs[0] = ph(g, dt, 2, s2, lo, hi);
        xs[1] = ph(g, dt, 2, s2, lo, hi);
        check(g, tg_concat(g, 2, xs, -1), 0, 0);
        g = tg_graph_new();
        xs[0] = ph(g, dt, 1, s1, lo, hi);
        check(g, tg_concat(g, 1, xs, 0), 0, 0);
        /* pad */
        int64_t lo1[] = {1, 0, 2}, hi1[] = {0, 3, 1}, lo2[] = {0, 0}, hi2[] = {2, 130};
        int64_t lo3[] = {5}, hi3[] = {0};
        g = tg_graph_new();
        check(g, tg_pad(g, ph(g, dt, 3, s3, lo, hi), lo1, hi1, 7), 0, 0);
        g = tg_graph_new();
        check(g, tg_pad(g, ph(g, dt, 2, s2, lo, hi), lo2, hi2, -2.5), 0, 0);
        g = tg_graph_new();
        check(g, tg_pad(g, ph(g, dt, 1, s1, lo, hi), lo3, hi3, 0), 0, 0);
    }
}

static void test_gather_scatter(void **state) {
    (void)state;
    static const struct {
        int rx, ri, axis;
        int64_t x[3], idx[2];
    } cases[] = {
        {2, 1, 0, {10, 67}, {13}},      /* embedding lookup */
        {3, 2, 1, {2, 7, 3}, {4, 5}},   /* middle axis, 2-d indices */
        {1, 1, 0, {1}, {3}},            /* size-1 table */
        {2, 2, -1, {3, 129}, {1, 130}}, /* last axis */
    };
    for (int c = 0; c < 4; c++) {
        tg_dtype dts[] = {TG_F32, TG_F16, TG_I32};
        for (int d = 0; d < 3; d++) {
            if (dts[d] == TG_F16 && !have_f16()) continue;
            int64_t dim = cases[c].x[(cases[c].axis + cases[c].rx) % cases[c].rx];
            tg_graph *g = tg_graph_new();
            tg_tensor x = ph(g, dts[d], cases[c].rx, cases[c].x, -9, 9);
            /* a few out-of-range indices: zeros (gather), dropped (scatter) */
            tg_tensor idx = ph(g, TG_I32, cases[c].ri, cases[c].idx, -1, (double)dim);
            tg_tensor y = tg_gather(g, x, idx, cases[c].axis);
            check(g, y, 0, 0);

            g = tg_graph_new();
            tg_tensor t = ph(g, dts[d], cases[c].rx, cases[c].x, -9, 9);
            idx = ph(g, TG_I32, cases[c].ri, cases[c].idx, -1, (double)dim);
            int64_t us[TG_MAX_RANK];
            int ax = (cases[c].axis + cases[c].rx) % cases[c].rx, ur = 0;
            for (int i = 0; i < ax; i++) us[ur++] = cases[c].x[i];
            for (int i = 0; i < cases[c].ri; i++) us[ur++] = cases[c].idx[i];
            for (int i = ax + 1; i < cases[c].rx; i++) us[ur++] = cases[c].x[i];
            tg_tensor u = ph(g, dts[d], ur, us, -9, 9);
            /* repeated indices add in index order: f32 sums of a few terms
             * in the same order as the interpreter, rounded once more */
            bool h = dts[d] == TG_F16;
            check(g, tg_scatter_add(g, t, idx, u, cases[c].axis), h ? 1.0 / 1024 : 1e-6,
                  h ? 1e-2 : 1e-5);
        }
    }
}

static void test_state(void **state) {
    (void)state;
    tg_dtype dts[] = {TG_F32, TG_F16, TG_I32};
    for (int d = 0; d < 3; d++) {
        if (dts[d] == TG_F16 && !have_f16()) continue;
        int64_t vs[3][3] = {{1}, {6, 67}, {2, 9, 5}}, us[3][3] = {{1}, {2, 67}, {1, 4, 5}};
        int ranks[3] = {1, 2, 3};
        for (int c = 0; c < 3; c++) {
            /* assign: a copy of the value */
            tg_graph *g = tg_graph_new();
            tg_tensor v = tg_variable(g, "v", dts[d], ranks[c], vs[c], false);
            tg_tensor val = ph(g, dts[d], ranks[c], vs[c], -5, 5);
            tg_tensor a = tg_assign(g, v, val);
            /* the interpreter reads the variable from a store */
            tg_store *store = tg_store_new();
            tg_array init;
            assert_int_equal(tg_array_alloc(&init, dts[d], ranks[c], vs[c]), TG_OK);
            assert_int_equal(tg_store_set(store, "v", &init), TG_OK);
            tg_tensor targets[3] = {a, v, val};
            tg_array res[3];
            memset(res, 0, sizeof res);
            assert_int_equal(tg_interpret(g, store, n_feeds, feeds, 1, targets, res, 0, NULL, 0),
                             TG_OK);
            tg_array ins[2] = {init, feed_vals[0]};
            double *got = run_node(g, a, ins, NULL);
            for (int64_t i = 0; i < tg_array_count(&res[0]); i++)
                assert_true(got[i] == tg_array_get(&res[0], i));
            free(got);
            tg_array_free(&res[0]);

            /* slice_update at a run-time start, in range, and clamped */
            tg_graph_free(g);
            feeds_reset();
            g = tg_graph_new();
            v = tg_variable(g, "v", dts[d], ranks[c], vs[c], false);
            tg_tensor up = ph(g, dts[d], ranks[c], us[c], -5, 5);
            int64_t rs[] = {ranks[c]};
            tg_tensor start = ph(g, TG_I32, 1, rs, 0, 0);
            for (int i = 0; i < ranks[c]; i++)
                tg_array_set(last_feed(), i, (double)(vs[c][i] - us[c][i]) * (i % 2 ? 1 : 0.5));
            for (int i = 0; i < tg_array_count(&init); i++) tg_array_set(&init, i, i % 7);
            assert_int_equal(tg_store_set(store, "v", &init), TG_OK);
            tg_tensor su = tg_slice_update(g, v, up, start);
            memset(res, 0, sizeof res);
            assert_int_equal(tg_interpret(g, store, n_feeds, feeds, 1, &su, res, 0, NULL, 0),
                             TG_OK);
            tg_array ins3[3] = {init, feed_vals[0], feed_vals[1]};
            got = run_node(g, su, ins3, NULL);
            for (int64_t i = 0; i < tg_array_count(&res[0]); i++)
                assert_true(got[i] == tg_array_get(&res[0], i));
            free(got);
            tg_array_free(&res[0]);
            /* a start past the end is clamped so the slab fits: the same
             * result as the last in-range start */
            for (int i = 0; i < ranks[c]; i++) tg_array_set(&feed_vals[1], i, 1000);
            tg_array clamped;
            assert_int_equal(tg_array_alloc(&clamped, TG_I32, 1, rs), TG_OK);
            for (int i = 0; i < ranks[c]; i++)
                tg_array_set(&clamped, i, (double)(vs[c][i] - us[c][i]));
            tg_feed f2[2] = {feeds[0], {start, &clamped}};
            /* the interpreter wrote the first update into the store */
            assert_int_equal(tg_store_set(store, "v", &init), TG_OK);
            memset(res, 0, sizeof res);
            assert_int_equal(tg_interpret(g, store, 2, f2, 1, &su, res, 0, NULL, 0), TG_OK);
            got = run_node(g, su, ins3, NULL);
            for (int64_t i = 0; i < tg_array_count(&res[0]); i++)
                assert_true(got[i] == tg_array_get(&res[0], i));
            free(got);
            tg_array_free(&res[0]);
            tg_array_free(&clamped);
            tg_array_free(&init);
            tg_store_free(store);
            tg_graph_free(g);
            feeds_reset();
        }
    }
}

/* ---- nn composites ---- */

static void test_softmax_layer_norm(void **state) {
    (void)state;
    static const struct {
        int rank, axis;
        int64_t shape[3];
    } sm[] = {
        {2, 1, {7, 129}}, {3, 0, {5, 3, 2}}, {3, -2, {2, 1000, 3}}, {1, 0, {1}}, {2, 1, {300, 9}},
    };
    for (int c = 0; c < 5; c++) {
        for (int h = 0; h < 2; h++) {
            if (h && !have_f16()) continue;
            tg_dtype dt = h ? TG_F16 : TG_F32;
            tg_graph *g = tg_graph_new();
            tg_tensor x = ph(g, dt, sm[c].rank, sm[c].shape, -8, 8);
            check(g, tg_softmax(g, x, sm[c].axis), h ? rt16(1e-5) : 1e-5, h ? 1e-3 : 1e-7);
            g = tg_graph_new();
            x = ph(g, dt, sm[c].rank, sm[c].shape, -8, 8);
            check(g, tg_log_softmax(g, x, sm[c].axis), h ? rt16(1e-5) : 1e-5, h ? 1e-2 : 2e-6);
        }
    }
    static const struct {
        int rank;
        int64_t shape[3];
    } ln[] = {{2, {7, 129}}, {3, {2, 3, 5}}, {1, {1}}, {2, {3, 1000}}};
    for (int c = 0; c < 4; c++) {
        for (int h = 0; h < 2; h++) {
            if (h && !have_f16()) continue;
            tg_dtype dt = h ? TG_F16 : TG_F32;
            tg_graph *g = tg_graph_new();
            int64_t D[] = {ln[c].shape[ln[c].rank - 1]};
            tg_tensor x = ph(g, dt, ln[c].rank, ln[c].shape, -3, 5);
            tg_tensor w = ph(g, dt, 1, D, 0.5, 2), b = ph(g, dt, 1, D, -1, 1);
            check(g, tg_layer_norm(g, x, w, b, 1e-5), h ? rt16(1e-5) : 1e-5, h ? 1e-2 : 2e-5);
        }
    }
}

static void test_attention(void **state) {
    (void)state;
    static const struct {
        int rq, rk, rm;
        int64_t q[4], k[4], v[4], m[4];
        bool causal, mask;
        double scale;
    } cases[] = {
        /* self-attention, causal, batch 2 x heads 3 */
        {4, 4, 0, {2, 3, 9, 16}, {2, 3, 9, 16}, {2, 3, 9, 16}, {0}, true, false, 0},
        /* cross-attention, k/v broadcast over heads, Dv != D, mask [Tq, Tk] */
        {4, 4, 2, {1, 2, 5, 8}, {1, 1, 70, 8}, {1, 1, 70, 3}, {5, 70}, false, true, 0.3},
        /* single query against a cache: causal sees everything */
        {3, 3, 0, {2, 1, 64}, {2, 129, 64}, {2, 129, 64}, {0}, true, false, 0},
        /* Tq > Tk with causal: the first rows see no key (zeros); a
         * -inf mask row */
        {2, 2, 2, {6, 4}, {3, 4}, {3, 70}, {6, 3}, true, true, 0},
        /* long keys: several chunks of the online softmax */
        {2, 2, 0, {3, 8}, {5000, 8}, {5000, 4}, {0}, false, false, 0},
    };
    for (int c = 0; c < 5; c++) {
        for (int h = 0; h < 2; h++) {
            if (h && !have_f16()) continue;
            tg_dtype dt = h ? TG_F16 : TG_F32;
            tg_graph *g = tg_graph_new();
            tg_tensor q = ph(g, dt, cases[c].rq, cases[c].q, -1, 1);
            tg_tensor k = ph(g, dt, cases[c].rk, cases[c].k, -1, 1);
            tg_tensor v = ph(g, dt, cases[c].rk, cases[c].v, -1, 1);
            tg_tensor m = TG_INVALID;
            if (cases[c].mask) {
                m = ph(g, dt, cases[c].rm, cases[c].m, -2, 0);
                tg_array_set(last_feed(), 0, -INFINITY);
                if (c == 3)
                    for (int j = 0; j < 3; j++) tg_array_set(last_feed(), 5 * 3 + j, -INFINITY);
            }
            tg_tensor y = tg_attention(g, q, k, v, m, cases[c].causal, cases[c].scale);
            check(g, y, h ? rt16(1e-5) : 1e-5, h ? 2e-3 : 1e-6);
        }
    }
}

static void test_cross_entropy(void **state) {
    (void)state;
    static const struct {
        int r;
        int64_t x[3];
        int64_t ignore;
    } cases[] = {{2, {7, 129}, -100}, {3, {2, 3, 5}, 2}, {1, {1000}, -1}, {2, {4, 1}, 0}};
    for (int c = 0; c < 4; c++) {
        for (int h = 0; h < 2; h++) {
            if (h && !have_f16()) continue;
            tg_dtype dt = h ? TG_F16 : TG_F32;
            tg_graph *g = tg_graph_new();
            tg_tensor x = ph(g, dt, cases[c].r, cases[c].x, -5, 5);
            int64_t C = cases[c].x[cases[c].r - 1];
            tg_tensor y = ph(g, TG_I32, cases[c].r - 1, cases[c].x, 0, (double)C - 1);
            tg_array_set(last_feed(), 0, (double)cases[c].ignore);
            check(g, tg_cross_entropy(g, x, y, cases[c].ignore), 1e-5, 1e-6);
        }
    }
    /* labels out of range (not ignored) count as ignored on the device:
     * compare with the interpreter on the same labels minus those rows */
    tg_graph *g = tg_graph_new();
    int64_t s[] = {3, 10};
    tg_tensor x = ph(g, TG_F32, 2, s, -5, 5);
    tg_tensor y = ph(g, TG_I32, 1, s, 0, 9);
    tg_tensor ce = tg_cross_entropy(g, x, y, -100);
    tg_array_set(last_feed(), 1, 10); /* out of range */
    tg_array ins[2] = {feed_vals[0], feed_vals[1]};
    double *got = run_node(g, ce, ins, NULL);
    tg_array_set(last_feed(), 1, -100); /* the same row ignored */
    tg_array res;
    assert_int_equal(tg_interpret(g, NULL, n_feeds, feeds, 1, &ce, &res, 0, NULL, 0), TG_OK);
    assert_true(fabs(got[0] - tg_array_get(&res, 0)) <= 1e-5 * fabs(tg_array_get(&res, 0)));
    free(got);
    tg_array_free(&res);
    tg_graph_free(g);
    feeds_reset();
}

/* ---- setup ---- */

static void remove_tree(const char *path) {
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[1024];
            snprintf(p, sizeof p, "%s/%s", path, e->d_name);
            remove_tree(p);
        }
        closedir(d);
        rmdir(path);
    } else {
        remove(path);
    }
}

static int setup(void **state) {
    (void)state;
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/tg_vk_ops_XXXXXX");
    if (!mkdtemp(tmp_dir)) return -1;
    setenv("TG_CACHE_DIR", tmp_dir, 1);
    setenv("TG_VALIDATION", "1", 1);
    if (tg_vk_device_open(-1, &dev) != TG_OK) {
        fprintf(stderr, "device: %s\n", tg_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tg_vk_device_close(dev);
    remove_tree(tmp_dir);
    return 0;
}

/* A failed check leaves its feeds behind: start every test clean. */
static int reset_feeds(void **state) {
    (void)state;
    feeds_reset();
    return 0;
}

static void test_validation_clean(void **state) {
    (void)state;
    if (tg_vk_validation_message_count() != 0)
        fail_msg("validation: %s", tg_vk_validation_first_message());
    assert_true(tg_vk_validation_enabled());
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_unary, reset_feeds),
        cmocka_unit_test_setup(test_unary_int_and_special, reset_feeds),
        cmocka_unit_test_setup(test_binary, reset_feeds),
        cmocka_unit_test_setup(test_where_cast, reset_feeds),
        cmocka_unit_test_setup(test_one_hot_iota, reset_feeds),
        cmocka_unit_test_setup(test_big_grid, reset_feeds),
        cmocka_unit_test_setup(test_reductions, reset_feeds),
        cmocka_unit_test_setup(test_movement, reset_feeds),
        cmocka_unit_test_setup(test_gather_scatter, reset_feeds),
        cmocka_unit_test_setup(test_state, reset_feeds),
        cmocka_unit_test_setup(test_softmax_layer_norm, reset_feeds),
        cmocka_unit_test_setup(test_attention, reset_feeds),
        cmocka_unit_test_setup(test_cross_entropy, reset_feeds),
        cmocka_unit_test_setup(test_validation_clean, reset_feeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
