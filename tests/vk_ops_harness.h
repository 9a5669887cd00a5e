/* vk_ops_harness.h — what the test_vk_ops_*.c programs share: one-op
 * graphs over placeholders fed with seeded random values, compiled and run
 * through the public executor (tg_compile / tg_run) on lavapipe with the
 * validation layer on and a temporary TG_CACHE_DIR, and compared with
 * tg_interpret on the same graph and feeds.
 *
 * Comparison, per element: |dev - ref| <= atol + rtol * |ref|; NaN must
 * match NaN and infinities must match exactly. Each program states its
 * ops' tolerances and why. f16 cases use f16 placeholders, so both sides
 * read the same half values; the device stores the output as half.
 *
 * Included by exactly one .c file per test program: the functions are
 * static inline so that a program not using one of them still builds
 * with -Werror. */
#ifndef TG_TESTS_VK_OPS_HARNESS_H
#define TG_TESTS_VK_OPS_HARNESS_H

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

#include "test_checks.h"
#include <dirent.h>
#include <unistd.h>

#include "backend/vk.h"
#include "graph/graph_internal.h"
#include "tests/test_util.h"
#include "tg.h"

static tg_device *dev;
static char tmp_dir[256];

/* ---- feeds ---- */

#define MAX_FEEDS 8
static tg_feed feeds[MAX_FEEDS];
static tg_array feed_vals[MAX_FEEDS];
static int n_feeds;
static uint64_t rng = 12345;

static inline double urand(void) { /* uniform in [0, 1) */
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / (double)(1ull << 53);
}

/* A placeholder fed with uniform values in [lo, hi] (integers: whole
 * numbers in [lo, hi]). */
static inline tg_tensor ph(tg_graph *g, tg_dtype dt, int rank, const int64_t *shape, double lo,
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
static inline tg_array *last_feed(void) {
    return &feed_vals[n_feeds - 1];
}

static inline void feeds_reset(void) {
    for (int i = 0; i < n_feeds; i++) tg_array_free(&feed_vals[i]);
    n_feeds = 0;
}

/* ---- device vs interpreter ---- */

static inline bool close_enough(double got, double want, double rtol, double atol) {
    if (isnan(want)) return isnan(got);
    if (isinf(want)) return got == want;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

/* Asserts got matches want (dtype, shape, values); `what` labels failures. */
static inline void compare(const char *what, const tg_array *got, const tg_array *want, double rtol,
                           double atol) {
    char shp[96];
    tg_shape_str(want->dtype, want->rank, want->shape, shp, sizeof shp);
    if (got->dtype != want->dtype || got->rank != want->rank ||
        memcmp(got->shape, want->shape, (size_t)want->rank * sizeof want->shape[0]) != 0)
        fail_msg("%s %s: the device's result has another dtype or shape", what, shp);
    int64_t cnt = tg_array_count(want);
    int bad = 0;
    for (int64_t i = 0; i < cnt; i++) {
        double g = tg_array_get(got, i), w = tg_array_get(want, i);
        if (!close_enough(g, w, rtol, atol) && bad++ < 5)
            print_message("%s %s: element %lld: device %.9g, interpreter %.9g\n", what, shp,
                          (long long)i, g, w);
    }
    if (bad)
        fail_msg("%s %s: %d of %lld elements out of tolerance (rtol %g, atol %g)", what, shp, bad,
                 (long long)cnt, rtol, atol);
}

/* Runs y on the device through tg_compile / tg_run with the current feeds
 * and the variables of `store` (may be NULL); *out receives y. */
static inline void run_device(const tg_graph *g, tg_store *store, tg_tensor y, tg_array *out) {
    tg_executable *e = NULL;
    OK(tg_compile(dev, g, store, 1, &y, 0, NULL, NULL, &e));
    OK(tg_run(e, n_feeds, feeds, out));
    tg_executable_free(e);
}

/* Compares y on the device with the interpreter, then frees the graph
 * and the feeds. */
static inline void check(tg_graph *g, tg_tensor y, double rtol, double atol) {
    if (tg_graph_status(g) != TG_OK) fail_msg("graph: %s", tg_graph_error(g));
    tg_array want = {0}, got = {0};
    OK(tg_interpret(g, NULL, n_feeds, feeds, 1, &y, &want, 0, NULL, 0));
    run_device(g, NULL, y, &got);
    compare(tg_ops[g->nodes[y.id].op].name, &got, &want, rtol, atol);
    tg_array_free(&want);
    tg_array_free(&got);
    tg_graph_free(g);
    feeds_reset();
}

/* The f16 tolerance on top of an f32 one: the output is rounded to half
 * (2^-11 relative), and a value near a rounding boundary may round the
 * other way on one side, which doubles that. */
static inline double rt16(double r) {
    return r + 1.0 / 1024;
}

static inline bool have_f16(void) {
    return dev->caps.storage_16bit;
}

/* ---- setup ---- */

static inline int setup(void **state) {
    (void)state;
    if (!tg_test_cache_dir(tmp_dir, sizeof tmp_dir, "tg_vk_ops")) return -1;
    setenv("TG_VALIDATION", "1", 1);
    if (tg_device_open(-1, &dev) != TG_OK) {
        fprintf(stderr, "device: %s\n", tg_last_error());
        return -1;
    }
    return 0;
}

static inline int teardown(void **state) {
    (void)state;
    tg_device_free(dev);
    tg_test_remove_tree(tmp_dir);
    return 0;
}

/* A failed check leaves its feeds behind: start every test clean. */
static inline int reset_feeds(void **state) {
    (void)state;
    feeds_reset();
    return 0;
}

static inline void test_validation_clean(void **state) {
    (void)state;
    assert_true(tg_vk_validation_enabled());
    if (tg_vk_validation_message_count() != 0)
        fail_msg("validation: %d messages; first: %s", tg_vk_validation_message_count(),
                 tg_vk_validation_first_message());
}

#endif
