/* bench_util.h — clocks, statistics and device opening shared by the
 * benchmarks. Header-only: each benchmark is one program. */
#ifndef TG_BENCH_UTIL_H
#define TG_BENCH_UTIL_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "tg.h"

/* Wall-clock seconds (monotonic). */
static inline double bench_now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* CPU seconds of the whole process, lavapipe's worker threads included:
 * on a shared machine this is less disturbed by other load than the wall
 * clock, and CPU per wall second says how many cores the work used. */
static inline double bench_cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int bench_cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The median of v[0 .. n) (sorts v). */
static inline double bench_median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Opens the default device into *dev; false, with the reason on stderr,
 * if there is none. */
static inline bool bench_open_device(tg_device **dev) {
    *dev = NULL;
    if (tg_device_open(-1, dev) == TG_OK) return true;
    fprintf(stderr, "device: %s\n", tg_last_error());
    return false;
}

#endif
