/* test_checks.h — checks shared by the cmocka tests: OK() on a tg_status,
 * the Vulkan validation layer's silence, .npy fixtures, and the helpers
 * of the `graph train` tests (shell commands, metrics.jsonl losses, files
 * and variables compared). Header-only
 * (each test is one executable); include it after <cmocka.h>. */
#ifndef TG_TEST_CHECKS_H
#define TG_TEST_CHECKS_H

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backend/vk.h"
#include "frontend/npy.h"
#include "tg.h"

/* Fails the test with the library's explanation when `call` fails. */
#define OK(call)                                                                                   \
    do {                                                                                           \
        tg_status st_ = (call);                                                                    \
        if (st_ != TG_OK) fail_msg("%s: %s", #call, tg_last_error());                              \
    } while (0)

/* Fails the test if the validation layer said anything. */
static inline void tg_test_assert_validation_silent(void) {
    if (tg_vk_validation_message_count() != 0)
        fail_msg("validation: %d messages; first: %s", tg_vk_validation_message_count(),
                 tg_vk_validation_first_message());
}

/* The same after work on `dev` (NULL: the interpreter ran, no check). */
static inline void tg_test_check_validation(const tg_device *dev) {
    if (dev) tg_test_assert_validation_silent();
}

/* The environment of a test that runs kernels: the validation layer on
 * (with `sync`, its synchronization validation too: it reports missing
 * barriers that lavapipe, running dispatches in order, would never show;
 * it is slow, so the model tests leave it to the executor's tests), no
 * profiling, and shader caches in a fresh temporary directory written to
 * `cache` (so tests never share caches). Call first in main(); false if
 * the directory cannot be made. */
static inline bool tg_test_device_env(char *cache, size_t size, const char *prefix, bool sync) {
    setenv("TG_VALIDATION", "1", 1);
    if (sync)
        setenv("VK_LAYER_ENABLES", "VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT",
               0);
    unsetenv("TG_PROFILE");
    int w = snprintf(cache, size, "/tmp/%s-XXXXXX", prefix);
    if (w <= 0 || (size_t)w >= size || !mkdtemp(cache)) return false;
    setenv("TG_CACHE_DIR", cache, 1);
    return true;
}

/* Opens the default device into *dev for a cmocka group setup: 0, or -1
 * with the reason on stderr. Without any device, *dev is NULL and the
 * result 0 unless `required` (the model tests then check the interpreter
 * alone). */
static inline int tg_test_open_device(tg_device **dev, bool required) {
    *dev = NULL;
    if (!required && tg_device_count() == 0) return 0;
    if (tg_device_open(-1, dev) == TG_OK) return 0;
    fprintf(stderr, "device: %s\n", tg_last_error());
    return -1;
}

/* Reads dir/name (dir ends with '/'), failing the test if it cannot. */
static inline tg_array tg_test_load_npy(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s%s", dir, name);
    tg_array a = {0};
    OK(tg_npy_read(path, &a));
    return a;
}

/* Runs a shell command built like printf; its exit status (-1: killed). */
static inline int tg_test_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int tg_test_sh(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

/* The loss of each step 1..n in `graph train`'s out/metrics.jsonl (NaN
 * where absent). */
static inline void tg_test_read_losses(const char *out, double *loss, int n) {
    for (int i = 0; i <= n; i++) loss[i] = NAN;
    char p[4200], line[1024];
    snprintf(p, sizeof p, "%.4096s/metrics.jsonl", out);
    FILE *f = fopen(p, "r");
    assert_non_null(f);
    while (fgets(line, sizeof line, f)) {
        int step;
        double l;
        char *s = strstr(line, "\"loss\":");
        if (sscanf(line, "{\"step\": %d,", &step) == 1 && s &&
            sscanf(s, "\"loss\": %lf", &l) == 1 && step >= 1 && step <= n)
            loss[step] = l;
    }
    fclose(f);
}

/* True if files a and b exist and hold the same bytes. */
static inline bool tg_test_same_file(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    bool same = fa && fb;
    while (same) {
        int x = fgetc(fa), y = fgetc(fb);
        if (x != y) same = false;
        if (x == EOF || y == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return same;
}

/* max |a - b| / max |b| over variable `name` of two stores. */
static inline double tg_test_max_rel_diff(tg_store *a, tg_store *b, const char *name) {
    tg_array x = {0}, y = {0};
    OK(tg_store_get(a, name, &x));
    OK(tg_store_get(b, name, &y));
    double worst = 0, scale = 1e-12;
    for (int64_t i = 0; i < tg_array_count(&x); i++) {
        double d = fabs(tg_array_get(&x, i) - tg_array_get(&y, i));
        if (d > worst) worst = d;
        if (fabs(tg_array_get(&y, i)) > scale) scale = fabs(tg_array_get(&y, i));
    }
    tg_array_free(&x);
    tg_array_free(&y);
    return worst / scale;
}

#endif
