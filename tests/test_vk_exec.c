/* test_vk_exec.c — the executor (backend/executor.c, store_device.c,
 * profile.c): tg_compile / tg_run / tg_encode / tg_wait on the Vulkan
 * device against the reference interpreter, the SPIR-V cache, variables
 * in a shared store (assign, slice_update), shape specialisation with its
 * LRU cache, feed errors and profiling.
 *
 * Tolerance for the small MLP (x[4,8] @ w[8,16] + b, relu, softmax):
 * |vk - interp| <= 1e-5 + 1e-4 * |interp|. The f32 matmul sums 8 terms of
 * size < 1 (error ~8 * 2^-24), and softmax's exp/division add a few ulps
 * relative; a wrong index or missing barrier gives errors of order 0.1.
 * Copies, counters and slabs must match exactly.
 *
 * Runs with the validation layer (TG_VALIDATION=1 set before the first
 * device call), including its synchronization validation, so a missing
 * barrier fails the test, and a fresh TG_CACHE_DIR; every test ends by
 * asserting the layer reported nothing. */
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

#include <cJSON.h>
#include <cmocka.h>

#include "test_checks.h"
#include "test_util.h"

#include "backend/vk.h"
#include "tg.h"

static tg_device *dev;
static char cache_dir[256];

/* ---- helpers ---- */

/* Asserts a call succeeded, showing tg_last_error() if not. */
static tg_array make_f32(int rank, const int64_t *shape, float start, float step) {
    tg_array a = {0};
    OK(tg_array_alloc(&a, TG_F32, rank, shape));
    for (int64_t i = 0; i < tg_array_count(&a); i++) ((float *)a.data)[i] = start + step * (float)i;
    return a;
}

static void set_f32(tg_store *s, const char *name, int rank, const int64_t *shape, float start,
                    float step) {
    tg_array a = make_f32(rank, shape, start, step);
    OK(tg_store_set(s, name, &a));
    tg_array_free(&a);
}

static void assert_close(const tg_array *got, const tg_array *want, double atol, double rtol) {
    assert_int_equal(got->dtype, want->dtype);
    assert_int_equal(got->rank, want->rank);
    for (int d = 0; d < got->rank; d++) assert_int_equal(got->shape[d], want->shape[d]);
    for (int64_t i = 0; i < tg_array_count(got); i++) {
        double g = tg_array_get(got, i), w = tg_array_get(want, i);
        if (!(fabs(g - w) <= atol + rtol * fabs(w)))
            fail_msg("element %lld: got %.9g, want %.9g", (long long)i, g, w);
    }
}

static void assert_values(const tg_array *a, int n, const float *want) {
    assert_int_equal(tg_array_count(a), n);
    for (int i = 0; i < n; i++)
        if (tg_array_get(a, i) != want[i])
            fail_msg("element %d: got %g, want %g", i, tg_array_get(a, i), want[i]);
}

static void assert_store(tg_store *s, const char *name, int n, const float *want) {
    tg_array a = {0};
    OK(tg_store_get(s, name, &a));
    assert_values(&a, n, want);
    tg_array_free(&a);
}

/* x[4,8] -> matmul w[8,16] -> add b[16] -> relu -> softmax */
typedef struct mlp {
    tg_graph *g;
    tg_tensor x, y;
    tg_store *store;
    tg_array xv;
} mlp;

static mlp make_mlp(int64_t rows) {
    mlp m = {0};
    m.g = tg_graph_new();
    int64_t xs[] = {-1, 8}, ws[] = {8, 16}, bs[] = {16};
    m.x = tg_placeholder(m.g, "x", TG_F32, 2, xs);
    tg_tensor w = tg_variable(m.g, "w", TG_F32, 2, ws, true);
    tg_tensor b = tg_variable(m.g, "b", TG_F32, 1, bs, true);
    tg_tensor h = tg_relu(m.g, tg_add(m.g, tg_matmul(m.g, m.x, w, false, false), b));
    m.y = tg_softmax(m.g, h, -1);
    OK(tg_graph_status(m.g));
    m.store = tg_store_new();
    OK(tg_store_init_missing(m.store, m.g, 7, 0.5));
    int64_t xv[] = {rows, 8};
    m.xv = make_f32(2, xv, -1.0f, 0.07f);
    return m;
}

static void free_mlp(mlp *m) {
    tg_array_free(&m->xv);
    tg_store_free(m->store);
    tg_graph_free(m->g);
}

/* ---- tests ---- */

static void test_mlp_matches_interpreter(void **state) {
    (void)state;
    mlp m = make_mlp(4);
    tg_executable *e = NULL;
    OK(tg_compile(dev, m.g, m.store, 1, &m.y, 0, NULL, NULL, &e));
    tg_feed f = {m.x, &m.xv};
    tg_array got = {0}, want = {0};
    OK(tg_run(e, 1, &f, &got));
    OK(tg_interpret(m.g, m.store, 1, &f, 1, &m.y, &want, 0, NULL, 0));
    assert_close(&got, &want, 1e-5, 1e-4);
    /* matmul+add+relu (an epilogue), softmax: sources are not kernels */
    assert_int_equal(tg_executable_dispatches(e), 2);
    /* a second run with other feed values replays the same command buffer */
    tg_array x2 = make_f32(2, m.xv.shape, 0.5f, -0.03f), got2 = {0}, want2 = {0};
    tg_feed f2 = {m.x, &x2};
    OK(tg_run(e, 1, &f2, &got2));
    OK(tg_interpret(m.g, m.store, 1, &f2, 1, &m.y, &want2, 0, NULL, 0));
    assert_close(&got2, &want2, 1e-5, 1e-4);
    assert_int_equal(tg_executable_specializations(e), 1);
    tg_array_free(&got);
    tg_array_free(&want);
    tg_array_free(&got2);
    tg_array_free(&want2);
    tg_array_free(&x2);
    tg_executable_free(e);
    free_mlp(&m);
    tg_test_check_validation(dev);
}

static void test_spirv_cache(void **state) {
    (void)state;
    mlp m = make_mlp(3); /* rows = 3: shapes no other test compiles */
    tg_feed f = {m.x, &m.xv};
    tg_vk_stats s0, s1, s2, s3;
    tg_vk_stats_get(&s0);
    tg_executable *e = NULL;
    OK(tg_compile(dev, m.g, m.store, 1, &m.y, 0, NULL, NULL, &e));
    tg_array r1 = {0};
    OK(tg_run(e, 1, &f, &r1)); /* dynamic: compiles at the first run */
    tg_executable_free(e);
    tg_vk_stats_get(&s1);
    assert_true(s1.shaderc_compiles > s0.shaderc_compiles);

    /* the same graph again: every shader from the SPIR-V cache */
    OK(tg_compile(dev, m.g, m.store, 1, &m.y, 0, NULL, NULL, &e));
    tg_array r2 = {0};
    OK(tg_run(e, 1, &f, &r2));
    tg_executable_free(e);
    tg_vk_stats_get(&s2);
    assert_int_equal(s2.shaderc_compiles, s1.shaderc_compiles);
    assert_true(s2.spirv_cache_hits >= s1.spirv_cache_hits + 2);
    assert_close(&r2, &r1, 0, 0);

    /* a fresh cache directory compiles again */
    char fresh[300];
    snprintf(fresh, sizeof fresh, "%s/fresh", cache_dir);
    setenv("TG_CACHE_DIR", fresh, 1);
    OK(tg_compile(dev, m.g, m.store, 1, &m.y, 0, NULL, NULL, &e));
    tg_array r3 = {0};
    OK(tg_run(e, 1, &f, &r3));
    tg_executable_free(e);
    setenv("TG_CACHE_DIR", cache_dir, 1);
    tg_vk_stats_get(&s3);
    assert_true(s3.shaderc_compiles >= s2.shaderc_compiles + 2);
    tg_array_free(&r1);
    tg_array_free(&r2);
    tg_array_free(&r3);
    free_mlp(&m);
    tg_test_check_validation(dev);
}

static void test_identical_kernels_share_a_pipeline(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {5, 3};
    tg_tensor a = tg_placeholder(g, "a", TG_F32, 2, s);
    tg_tensor b = tg_placeholder(g, "b", TG_F32, 2, s);
    tg_tensor y = tg_add(g, tg_exp(g, a), tg_exp(g, b));
    tg_vk_stats s0, s1;
    tg_vk_stats_get(&s0);
    tg_executable *e = NULL;
    tg_compile_options o = {.disable_passes = "fusion"}; /* three kernels, two alike */
    OK(tg_compile(dev, g, NULL, 1, &y, 0, NULL, &o, &e));
    tg_vk_stats_get(&s1);
    assert_int_equal(tg_executable_dispatches(e), 3);
    /* exp(a) and exp(b) have the same GLSL unless the generator names the
     * node in it; either way at most one pipeline per kernel */
    assert_true(s1.pipelines_created - s0.pipelines_created <= 3);
    tg_array av = make_f32(2, s, -1, 0.1f), bv = make_f32(2, s, 0.3f, -0.05f), got = {0};
    tg_feed f[] = {{a, &av}, {b, &bv}};
    OK(tg_run(e, 2, f, &got));
    for (int i = 0; i < 15; i++) {
        double want = exp(-1 + 0.1 * i) + exp(0.3 - 0.05 * i);
        assert_true(fabs(tg_array_get(&got, i) - want) <= 1e-5 * want);
    }
    tg_array_free(&av);
    tg_array_free(&bv);
    tg_array_free(&got);
    tg_executable_free(e);
    tg_graph_free(g);
    tg_test_check_validation(dev);
}

/* counter := counter + 1, run 3 times; a second executable reads 3. */
static void test_variables_persist_across_runs_and_executables(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t one[] = {1};
    tg_tensor c = tg_variable(g, "counter", TG_F32, 1, one, false);
    tg_tensor inc = tg_assign(g, c, tg_add(g, c, tg_scalar(g, TG_F32, 1)));
    tg_tensor twice = tg_mul(g, c, tg_scalar(g, TG_F32, 2));
    OK(tg_graph_status(g));
    tg_store *s = tg_store_new();
    set_f32(s, "counter", 1, one, 0, 0);

    tg_executable *train = NULL, *infer = NULL;
    OK(tg_compile(dev, g, s, 0, NULL, 1, &inc, NULL, &train));
    OK(tg_compile(dev, g, s, 1, &twice, 0, NULL, NULL, &infer));
    for (int i = 0; i < 3; i++) OK(tg_run(train, 0, NULL, NULL));
    float three = 3, six = 6;
    tg_array r = {0};
    OK(tg_run(infer, 0, NULL, &r));
    assert_values(&r, 1, &six);
    tg_array_free(&r);
    assert_store(s, "counter", 1, &three);

    /* tg_store_set between runs is uploaded before the next run */
    set_f32(s, "counter", 1, one, 10, 0);
    OK(tg_run(train, 0, NULL, NULL));
    float eleven = 11, twentytwo = 22;
    OK(tg_run(infer, 0, NULL, &r));
    assert_values(&r, 1, &twentytwo);
    tg_array_free(&r);
    assert_store(s, "counter", 1, &eleven);

    /* a new shape in the store: the executables re-record with the new buffer */
    int64_t two[] = {2};
    set_f32(s, "counter", 1, two, 0, 0);
    assert_int_equal(tg_run(infer, 0, NULL, &r), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_last_error(), "'counter'"));
    set_f32(s, "counter", 1, one, 5, 0);
    OK(tg_run(train, 0, NULL, NULL));
    float six2 = 6, twelve = 12;
    assert_store(s, "counter", 1, &six2);
    OK(tg_run(infer, 0, NULL, &r));
    assert_values(&r, 1, &twelve);
    tg_array_free(&r);

    tg_executable_free(train);
    tg_executable_free(infer);
    tg_store_free(s);
    tg_graph_free(g);
    tg_test_check_validation(dev);
}

/* In one run: targets read the variable (old value), the assign (new value)
 * and a kernel reading the variable (old value). */
static void test_assign_then_read_sees_old_value(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t sh[] = {3};
    tg_tensor v = tg_variable(g, "v", TG_F32, 1, sh, false);
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 1, sh);
    tg_tensor a = tg_assign(g, v, x);
    tg_tensor neg = tg_neg(g, v);
    tg_tensor targets[] = {v, a, neg};
    tg_store *s = tg_store_new();
    set_f32(s, "v", 1, sh, 1, 1); /* 1 2 3 */
    tg_executable *e = NULL;
    OK(tg_compile(dev, g, s, 3, targets, 0, NULL, NULL, &e));
    tg_array xv = make_f32(1, sh, 10, 10), r[3];
    tg_feed f = {x, &xv};
    OK(tg_run(e, 1, &f, r));
    float old[] = {1, 2, 3}, new[] = {10, 20, 30}, negold[] = {-1, -2, -3};
    assert_values(&r[0], 3, old);
    assert_values(&r[1], 3, new);
    assert_values(&r[2], 3, negold);
    for (int i = 0; i < 3; i++) tg_array_free(&r[i]);
    assert_store(s, "v", 3, new);
    /* the same run again: the old value is now 10 20 30 */
    float negnew[] = {-10, -20, -30};
    OK(tg_run(e, 1, &f, r));
    assert_values(&r[0], 3, new);
    assert_values(&r[2], 3, negnew);
    for (int i = 0; i < 3; i++) tg_array_free(&r[i]);

    /* the interpreter agrees */
    tg_store *s2 = tg_store_new();
    set_f32(s2, "v", 1, sh, 1, 1);
    OK(tg_interpret(g, s2, 1, &f, 3, targets, r, 0, NULL, 0));
    assert_values(&r[0], 3, old);
    assert_values(&r[1], 3, new);
    assert_values(&r[2], 3, negold);
    for (int i = 0; i < 3; i++) tg_array_free(&r[i]);
    tg_store_free(s2);

    tg_array_free(&xv);
    tg_executable_free(e);
    tg_store_free(s);
    tg_graph_free(g);
    tg_test_check_validation(dev);
}

/* A KV cache [4,3] written one row per run at a fed position; in-place
 * (nothing else reads the old cache) and read back through the updated
 * value in the same run. */
static void test_slice_update_kv_cache(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t cs[] = {4, 3}, us[] = {1, 3}, ps[] = {2};
    tg_tensor kv = tg_variable(g, "kv", TG_F32, 2, cs, false);
    tg_tensor row = tg_placeholder(g, "row", TG_F32, 2, us);
    tg_tensor pos = tg_placeholder(g, "pos", TG_I32, 1, ps);
    tg_tensor upd = tg_slice_update(g, kv, row, pos);
    int axes[] = {0};
    tg_tensor colsum = tg_sum(g, upd, 1, axes, false); /* reads the updated cache */
    OK(tg_graph_status(g));
    tg_store *s = tg_store_new();
    set_f32(s, "kv", 2, cs, 0, 0);
    tg_executable *e = NULL;
    OK(tg_compile(dev, g, s, 1, &colsum, 1, &upd, NULL, &e));
    float want_sum[3] = {0, 0, 0};
    for (int p = 0; p < 3; p++) {
        tg_array rv = make_f32(2, us, (float)(10 * (p + 1)), 1), pv = {0}, r = {0};
        OK(tg_array_alloc(&pv, TG_I32, 1, ps));
        ((int32_t *)pv.data)[0] = p;
        ((int32_t *)pv.data)[1] = 0;
        tg_feed f[] = {{row, &rv}, {pos, &pv}};
        OK(tg_run(e, 2, f, &r));
        for (int j = 0; j < 3; j++) want_sum[j] += (float)(10 * (p + 1) + j);
        assert_values(&r, 3, want_sum);
        tg_array_free(&r);
        tg_array_free(&rv);
        tg_array_free(&pv);
    }
    float want[] = {10, 11, 12, 20, 21, 22, 30, 31, 32, 0, 0, 0};
    assert_store(s, "kv", 12, want);
    assert_int_equal(tg_executable_specializations(e), 1);
    tg_executable_free(e);
    tg_store_free(s);
    tg_graph_free(g);
    tg_test_check_validation(dev);
}

/* slice_update while the old cache is also read: the update goes through a
 * temporary that starts as the old cache. */
static void test_slice_update_with_old_value_read(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t cs[] = {3, 2}, us[] = {1, 2}, ps[] = {2};
    tg_tensor kv = tg_variable(g, "kv2", TG_F32, 2, cs, false);
    tg_tensor row = tg_placeholder(g, "row", TG_F32, 2, us);
    tg_tensor pos = tg_placeholder(g, "pos", TG_I32, 1, ps);
    tg_tensor upd = tg_slice_update(g, kv, row, pos);
    tg_tensor diff = tg_sub(g, upd, kv);
    tg_store *s = tg_store_new();
    set_f32(s, "kv2", 2, cs, 1, 1); /* 1..6 */
    tg_executable *e = NULL;
    OK(tg_compile(dev, g, s, 1, &diff, 0, NULL, NULL, &e));
    tg_array rv = make_f32(2, us, 100, 100), pv = {0}, r = {0};
    OK(tg_array_alloc(&pv, TG_I32, 1, ps));
    ((int32_t *)pv.data)[0] = 1;
    tg_feed f[] = {{row, &rv}, {pos, &pv}};
    OK(tg_run(e, 2, f, &r));
    float want_diff[] = {0, 0, 97, 196, 0, 0};
    assert_values(&r, 6, want_diff);
    tg_array_free(&r);
    float want[] = {1, 2, 100, 200, 5, 6};
    assert_store(s, "kv2", 6, want);
    tg_array_free(&rv);
    tg_array_free(&pv);
    tg_executable_free(e);
    tg_store_free(s);
    tg_graph_free(g);
    tg_test_check_validation(dev);
}

static void test_encode_wait_equals_run(void **state) {
    (void)state;
    mlp m = make_mlp(4);
    tg_executable *e = NULL;
    OK(tg_compile(dev, m.g, m.store, 1, &m.y, 0, NULL, NULL, &e));
    tg_feed f = {m.x, &m.xv};
    tg_array a = {0}, b = {0};
    OK(tg_run(e, 1, &f, &a));
    tg_pending *p = NULL;
    OK(tg_encode(e, 1, &f, &p));
    /* one run in flight per executable */
    tg_pending *p2 = NULL;
    assert_int_equal(tg_encode(e, 1, &f, &p2), TG_ERR_INVALID_ARGUMENT);
    assert_null(p2);
    OK(tg_wait(p, &b));
    assert_close(&b, &a, 0, 0);
    tg_array_free(&a);
    tg_array_free(&b);
    tg_executable_free(e);
    free_mlp(&m);
    tg_test_check_validation(dev);
}

static void run_len(tg_executable *e, tg_tensor x, int64_t len) {
    int64_t sh[] = {len, 4};
    tg_array xv = make_f32(2, sh, -2, 0.25f), r = {0};
    tg_feed f = {x, &xv};
    OK(tg_run(e, 1, &f, &r));
    assert_int_equal(r.shape[0], len);
    for (int64_t i = 0; i < len * 4; i++) {
        double v = -2 + 0.25 * (double)i;
        assert_true(tg_array_get(&r, i) == (v > 0 ? 2 * v : 0));
    }
    tg_array_free(&r);
    tg_array_free(&xv);
}

static void test_dynamic_shapes_specialise(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {-1, 4};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor y = tg_mul(g, tg_relu(g, x), tg_scalar(g, TG_F32, 2));
    tg_executable *e = NULL;
    OK(tg_compile(dev, g, NULL, 1, &y, 0, NULL, NULL, &e));
    assert_int_equal(tg_executable_specializations(e), 0);
    run_len(e, x, 3);
    run_len(e, x, 5);
    run_len(e, x, 7);
    assert_int_equal(tg_executable_specializations(e), 3);
    run_len(e, x, 5);
    assert_int_equal(tg_executable_specializations(e), 3);
    assert_int_equal(tg_executable_cached(e), 3);
    tg_executable_free(e);

    tg_compile_options o = {.max_specializations = 2};
    OK(tg_compile(dev, g, NULL, 1, &y, 0, NULL, &o, &e));
    run_len(e, x, 3);
    run_len(e, x, 5);
    run_len(e, x, 7); /* evicts 3 */
    run_len(e, x, 3); /* compiles again, evicts 5 */
    assert_int_equal(tg_executable_specializations(e), 4);
    assert_int_equal(tg_executable_cached(e), 2);
    run_len(e, x, 3);
    run_len(e, x, 7);
    assert_int_equal(tg_executable_specializations(e), 4);
    tg_executable_free(e);
    tg_graph_free(g);
    tg_test_check_validation(dev);
}

/* A new specialisation makes pipelines only for kernels whose GLSL
 * changed: exp(y) on a static y is shared, the fused relu+mul of x[?,4] is
 * not. */
static void test_specialisations_share_unchanged_kernels(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {-1, 4}, ys[] = {6};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor y = tg_placeholder(g, "y", TG_F32, 1, ys);
    tg_tensor targets[] = {tg_mul(g, tg_relu(g, x), tg_scalar(g, TG_F32, 2)), tg_exp(g, y)};
    tg_executable *e = NULL;
    OK(tg_compile(dev, g, NULL, 2, targets, 0, NULL, NULL, &e));
    tg_array yv = make_f32(1, ys, 0, 0.5f);
    tg_vk_stats s0, s1, s2;
    tg_vk_stats_get(&s0);
    for (int64_t len = 2; len <= 3; len++) {
        int64_t sh[] = {len, 4};
        tg_array xv = make_f32(2, sh, -1, 0.5f), r[2];
        tg_feed f[] = {{x, &xv}, {y, &yv}};
        OK(tg_run(e, 2, f, r));
        for (int i = 0; i < 6; i++)
            assert_true(fabs(tg_array_get(&r[1], i) - exp(0.5 * i)) <= 1e-5 * exp(0.5 * i));
        tg_array_free(&r[0]);
        tg_array_free(&r[1]);
        tg_array_free(&xv);
        tg_vk_stats_get(len == 2 ? &s1 : &s2);
    }
    assert_int_equal(s1.pipelines_created - s0.pipelines_created, 2);
    assert_int_equal(s2.pipelines_created - s1.pipelines_created, 1);
    assert_int_equal(tg_executable_specializations(e), 2);
    tg_array_free(&yv);
    tg_executable_free(e);
    tg_graph_free(g);
    tg_test_check_validation(dev);
}

static void test_feed_errors(void **state) {
    (void)state;
    mlp m = make_mlp(4);
    tg_executable *e = NULL;
    OK(tg_compile(dev, m.g, m.store, 1, &m.y, 0, NULL, NULL, &e));
    tg_array r = {0};
    /* wrong static dimension */
    int64_t bad[] = {4, 9};
    tg_array xb = make_f32(2, bad, 0, 1);
    tg_feed f = {m.x, &xb};
    assert_int_equal(tg_run(e, 1, &f, &r), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_last_error(), "'x'"));
    assert_non_null(strstr(tg_last_error(), "f32[4,9]"));
    tg_array_free(&xb);
    /* wrong dtype */
    int64_t ok[] = {4, 8};
    tg_array xi = {0};
    OK(tg_array_alloc(&xi, TG_I32, 2, ok));
    f.value = &xi;
    assert_int_equal(tg_run(e, 1, &f, &r), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_last_error(), "'x'"));
    assert_non_null(strstr(tg_last_error(), "i32"));
    tg_array_free(&xi);
    /* not fed */
    assert_int_equal(tg_run(e, 0, NULL, &r), TG_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(tg_last_error(), "'x'"));
    /* missing variable */
    tg_store *empty = tg_store_new();
    tg_executable *e2 = NULL;
    OK(tg_compile(dev, m.g, empty, 1, &m.y, 0, NULL, NULL, &e2));
    f.value = &m.xv;
    assert_int_equal(tg_run(e2, 1, &f, &r), TG_ERR_NOT_FOUND);
    assert_non_null(strstr(tg_last_error(), "variable 'w'"));
    /* and the executable still works */
    OK(tg_run(e, 1, &f, &r));
    tg_array_free(&r);
    tg_executable_free(e2);
    tg_store_free(empty);
    tg_executable_free(e);
    free_mlp(&m);
    tg_test_check_validation(dev);
}

static void test_profile_table_and_trace(void **state) {
    (void)state;
    mlp m = make_mlp(4);
    tg_compile_options o = {.profile = true};
    tg_executable *e = NULL;
    OK(tg_compile(dev, m.g, m.store, 1, &m.y, 0, NULL, &o, &e));
    char *table = NULL;
    assert_int_equal(tg_executable_profile(e, &table, NULL), TG_ERR_INVALID_ARGUMENT); /* no run */
    tg_feed f = {m.x, &m.xv};
    tg_array r = {0};
    OK(tg_run(e, 1, &f, &r));
    tg_array_free(&r);
    OK(tg_executable_profile(e, &table, NULL)); /* one run: the table has it */
    assert_non_null(strstr(table, "1 run,"));
    assert_non_null(strstr(table, "relu"));
    free(table);
    for (int i = 0; i < 2; i++) {
        OK(tg_run(e, 1, &f, &r));
        tg_array_free(&r);
    }
    char trace[300];
    snprintf(trace, sizeof trace, "%s/trace.json", cache_dir);
    OK(tg_executable_profile(e, &table, trace));
    assert_non_null(table);
    assert_non_null(strstr(table, "matmul"));
    assert_non_null(strstr(table, "softmax"));
    assert_non_null(strstr(table, "relu"));
    /* three runs: the table sums the last two, the first (driver JIT) apart */
    assert_non_null(strstr(table, "2 runs after the first"));
    char *d = strstr(table, "relu");
    assert_non_null(d);
    int relu_dispatches = 0;
    assert_int_equal(sscanf(d, "%*s %d", &relu_dispatches), 1);
    assert_int_equal(relu_dispatches, 2);
    free(table);

    FILE *fp = fopen(trace, "rb");
    assert_non_null(fp);
    char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = 0;
    cJSON *root = cJSON_Parse(buf);
    assert_non_null(root);
    cJSON *events = cJSON_GetObjectItem(root, "traceEvents");
    assert_true(cJSON_IsArray(events));
    int complete = 0;
    bool saw_softmax = false;
    cJSON *ev;
    cJSON_ArrayForEach(ev, events) {
        const char *ph = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "ph"));
        assert_non_null(ph);
        if (strcmp(ph, "X") != 0) continue;
        complete++;
        assert_true(cJSON_IsNumber(cJSON_GetObjectItem(ev, "ts")));
        assert_true(cJSON_GetObjectItem(ev, "dur")->valuedouble >= 0);
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItem(ev, "name"));
        if (name && strstr(name, "softmax")) saw_softmax = true;
    }
    assert_int_equal(complete, tg_executable_dispatches(e)); /* the last run's dispatches */
    assert_true(saw_softmax);
    cJSON_Delete(root);
    tg_executable_free(e);
    free_mlp(&m);
    tg_test_check_validation(dev);
}

/* The staging paths (feeds copied from host buffers, targets copied back)
 * on a device that pretends not to be unified (TG_UNIFIED=0). */
static void test_staging_paths(void **state) {
    (void)state;
    setenv("TG_UNIFIED", "0", 1);
    tg_device *d2 = NULL;
    tg_status st = tg_device_open(-1, &d2);
    unsetenv("TG_UNIFIED");
    OK(st);
    mlp m = make_mlp(4);
    int64_t one[] = {1};
    tg_tensor c = tg_variable(m.g, "steps", TG_F32, 1, one, false);
    tg_tensor inc = tg_assign(m.g, c, tg_add(m.g, c, tg_scalar(m.g, TG_F32, 1)));
    set_f32(m.store, "steps", 1, one, 0, 0);
    tg_executable *e = NULL;
    tg_tensor targets[] = {m.y, c};
    OK(tg_compile(d2, m.g, m.store, 2, targets, 1, &inc, NULL, &e));
    tg_feed f = {m.x, &m.xv};
    tg_array got[2], want = {0};
    OK(tg_run(e, 1, &f, got));
    OK(tg_interpret(m.g, m.store, 1, &f, 1, &m.y, &want, 0, NULL, 0));
    assert_close(&got[0], &want, 1e-5, 1e-4);
    float zero = 0, one_f = 1;
    assert_values(&got[1], 1, &zero);
    assert_store(m.store, "steps", 1, &one_f);
    tg_array_free(&got[0]);
    tg_array_free(&got[1]);
    tg_array_free(&want);
    tg_executable_free(e);
    free_mlp(&m); /* frees the variables' buffers on d2 */
    tg_device_free(d2);
    tg_test_check_validation(dev);
}

/* Intermediates split over many buffers (TG_ARENA_MAX_BYTES = 256: each
 * [4,16] f32 tensor gets a buffer of its own), and a tensor larger than the
 * limit is an error naming it. */
static void test_arena_in_many_buffers(void **state) {
    (void)state;
    setenv("TG_ARENA_MAX_BYTES", "256", 1);
    mlp m = make_mlp(4);
    tg_vk_stats s0, s1;
    tg_vk_stats_get(&s0);
    tg_executable *e = NULL;
    OK(tg_compile(dev, m.g, m.store, 1, &m.y, 0, NULL, NULL, &e));
    tg_feed f = {m.x, &m.xv};
    tg_array got = {0}, want = {0};
    OK(tg_run(e, 1, &f, &got));
    tg_vk_stats_get(&s1);
    /* x (128 B), matmul+add+relu and softmax (256 B each) in 2 buffers: x
     * shares one with the softmax's result, written after x's last read
     * (buffers_created also counts the variables' two buffers) */
    assert_int_equal(s1.buffers_created - s0.buffers_created, 2 + 2);
    OK(tg_interpret(m.g, m.store, 1, &f, 1, &m.y, &want, 0, NULL, 0));
    assert_close(&got, &want, 1e-5, 1e-4);
    tg_array_free(&got);
    tg_array_free(&want);
    int64_t big[] = {5, 8}; /* the fused matmul+add+relu's [5,16] is 320 bytes */
    tg_array xb = make_f32(2, big, 0, 0.01f);
    f.value = &xb;
    assert_int_equal(tg_run(e, 1, &f, &got), TG_ERR_UNSUPPORTED);
    assert_non_null(strstr(tg_last_error(), "relu"));
    assert_non_null(strstr(tg_last_error(), "largest buffer"));
    unsetenv("TG_ARENA_MAX_BYTES");
    tg_array_free(&xb);
    tg_executable_free(e);
    free_mlp(&m);
    tg_test_check_validation(dev);
}

static void test_compile_errors(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t sh[] = {2};
    tg_tensor v = tg_variable(g, "v", TG_F32, 1, sh, false);
    tg_tensor a1 = tg_assign(g, v, tg_neg(g, v));
    tg_tensor a2 = tg_assign(g, v, tg_exp(g, v));
    tg_tensor ops[] = {a1, a2};
    tg_store *s = tg_store_new();
    tg_executable *e = NULL;
    assert_int_equal(tg_compile(dev, g, s, 0, NULL, 2, ops, NULL, &e), TG_ERR_UNSUPPORTED);
    assert_null(e);
    assert_non_null(strstr(tg_last_error(), "'v'"));
    assert_int_equal(tg_compile(dev, g, NULL, 0, NULL, 1, ops, NULL, &e), TG_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(tg_last_error(), "store"));
    assert_int_equal(tg_compile(dev, g, s, 0, NULL, 0, NULL, NULL, &e), TG_ERR_INVALID_ARGUMENT);
    /* an op writing several variables (AdamW: weight and moments) compiles
     * (tests/test_vk_grad.c runs it); with an assign of its weight in the
     * same run the variable is written twice: a clear error */
    int64_t sc[] = {0};
    tg_tensor lr = tg_placeholder(g, "lr", TG_F32, 0, sc);
    tg_tensor step = tg_placeholder(g, "step", TG_F32, 0, sc);
    tg_tensor adam = tg_adamw(g, v, tg_neg(g, v), lr, step, 0.9, 0.999, 1e-8, 0);
    assert_true(tg_tensor_valid(g, adam));
    tg_tensor twice[] = {a1, adam};
    assert_int_equal(tg_compile(dev, g, s, 0, NULL, 2, twice, NULL, &e), TG_ERR_UNSUPPORTED);
    assert_non_null(strstr(tg_last_error(), "written twice"));
    assert_int_equal(tg_compile(dev, g, s, 0, NULL, 1, &adam, NULL, &e), TG_OK);
    tg_executable_free(e);
    e = NULL;
    tg_tensor bad = {999};
    assert_int_equal(tg_compile(dev, g, s, 1, &bad, 0, NULL, NULL, &e), TG_ERR_INVALID_ARGUMENT);
    tg_store_free(s);
    tg_graph_free(g);
    tg_test_check_validation(dev);
}

/* Graph shapes the one-op tests don't make, in one executable: the feed
 * x read by two kernels (matmul and exp), a constant as matmul's right
 * operand, rank-0 outputs (a full sum and a mean), and the variable v as
 * a target while an assign of the same run writes it (the target is the
 * old value, as on the interpreter). Two runs, so the second sees the
 * first's write. Values and the variable match the interpreter within the
 * MLP's tolerance (f32 sums of 5 to 12 terms). */
static void test_mixed_graph_edges(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {3, 5}, ws[] = {5, 4}, vs[] = {3, 4};
    float wv[20];
    for (int i = 0; i < 20; i++) wv[i] = 0.1f * (float)(i % 7) - 0.3f;
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor w = tg_constant(g, TG_F32, 2, ws, wv);
    tg_tensor v = tg_variable(g, "v", TG_F32, 2, vs, false);
    tg_tensor y = tg_add(g, tg_matmul(g, x, w, false, false), v);
    tg_tensor total = tg_sum(g, tg_exp(g, x), 0, NULL, false);
    tg_tensor mean = tg_mean(g, y, 0, NULL, false);
    tg_tensor upd = tg_assign(g, v, y);
    OK(tg_graph_status(g));
    tg_tensor targets[] = {y, total, mean, v};
    tg_store *sd = tg_store_new(), *si = tg_store_new();
    set_f32(sd, "v", 2, vs, -0.5f, 0.1f);
    set_f32(si, "v", 2, vs, -0.5f, 0.1f);
    tg_executable *e = NULL;
    OK(tg_compile(dev, g, sd, 4, targets, 1, &upd, NULL, &e));
    for (int run = 0; run < 2; run++) {
        tg_array xv = make_f32(2, xs, -1.0f + (float)run, 0.13f);
        tg_feed f = {x, &xv};
        tg_array got[4] = {{0}}, want[4] = {{0}};
        OK(tg_run(e, 1, &f, got));
        OK(tg_interpret(g, si, 1, &f, 4, targets, want, 1, &upd, 0));
        for (int i = 0; i < 4; i++) {
            assert_int_equal(want[i].rank, i == 1 || i == 2 ? 0 : 2);
            assert_close(&got[i], &want[i], 1e-5, 1e-5);
            tg_array_free(&got[i]);
            tg_array_free(&want[i]);
        }
        tg_array vd = {0}, vi = {0};
        OK(tg_store_get(sd, "v", &vd));
        OK(tg_store_get(si, "v", &vi));
        assert_close(&vd, &vi, 1e-5, 1e-5);
        tg_array_free(&vd);
        tg_array_free(&vi);
        tg_array_free(&xv);
    }
    tg_executable_free(e);
    tg_store_free(sd);
    tg_store_free(si);
    tg_graph_free(g);
    tg_test_check_validation(dev);
}

static int setup(void **state) {
    (void)state;
    return tg_test_open_device(&dev, true);
}

static int teardown(void **state) {
    (void)state;
    tg_device_free(dev);
    return 0;
}

int main(void) {
    if (!tg_test_device_env(cache_dir, sizeof cache_dir, "tg_test_vk_exec", true)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp_matches_interpreter),
        cmocka_unit_test(test_mixed_graph_edges),
        cmocka_unit_test(test_spirv_cache),
        cmocka_unit_test(test_identical_kernels_share_a_pipeline),
        cmocka_unit_test(test_variables_persist_across_runs_and_executables),
        cmocka_unit_test(test_assign_then_read_sees_old_value),
        cmocka_unit_test(test_slice_update_kv_cache),
        cmocka_unit_test(test_slice_update_with_old_value_read),
        cmocka_unit_test(test_encode_wait_equals_run),
        cmocka_unit_test(test_dynamic_shapes_specialise),
        cmocka_unit_test(test_specialisations_share_unchanged_kernels),
        cmocka_unit_test(test_feed_errors),
        cmocka_unit_test(test_profile_table_and_trace),
        cmocka_unit_test(test_staging_paths),
        cmocka_unit_test(test_arena_in_many_buffers),
        cmocka_unit_test(test_compile_errors),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    tg_test_remove_tree(cache_dir);
    return failed;
}
