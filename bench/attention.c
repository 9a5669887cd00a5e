/* bench/attention.c — flash attention (one tg_attention kernel) against
 * unfused attention built from tg ops (matmul -> softmax -> matmul, which
 * materialises the [heads, T, T] scores and probabilities), for
 * self-attention of batch 1, 6 heads, d_head 64 at T = 448, 1500, 3000
 * (Whisper's decoder context, encoder length, and twice that), forward and
 * forward + backward (the gradients of q, k and v for a random output
 * gradient). Everything is measured in the same run; prints one JSON
 * object.
 *
 * Per case: tg_compile, one run to warm up (llvmpipe compiles at the
 * first dispatch), then timed tg_run calls (feeds uploaded and outputs
 * read back each time, the same for both); the median is reported, with
 * GFLOP/s of the attention arithmetic (forward 4 T^2 d per head, backward
 * counted as 2.5x the forward, the FlashAttention paper's convention) and
 * the device memory of the executable's intermediates: the arena as
 * planned (tg_executable_memory_stats). The forward also runs the previous
 * kernel (gen_nn.c's, TG_ATTN_STRATEGY=nn) for the speed-up.
 *
 * A case that cannot run (unfused T=3000 needs a 216 MB score matrix; the
 * device binds at most maxStorageBufferRange bytes per buffer) is reported
 * with its error. Options: --quick (T=448 only), --t=N (one length),
 * --reps=N, --flash-forward (only flash's forward: for tuning with
 * $TG_ATTN_TILE). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "tg.h"

enum { HEADS = 6, DHEAD = 64 };

static uint64_t rng = 42;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

typedef enum impl { FLASH, UNFUSED, PREVIOUS } impl;
static const char *impl_names[] = {"flash", "unfused", "previous_kernel"};

/* Prints one JSON result; returns the median seconds (or -1). */
static double run_case(tg_device *dev, int64_t T, impl which, bool backward, int reps, bool first) {
    tg_graph *g = tg_graph_new();
    int64_t shp[4] = {1, HEADS, T, DHEAD};
    tg_tensor q = tg_placeholder(g, "q", TG_F32, 4, shp);
    tg_tensor k = tg_placeholder(g, "k", TG_F32, 4, shp);
    tg_tensor v = tg_placeholder(g, "v", TG_F32, 4, shp);
    tg_tensor y;
    if (which == UNFUSED) {
        tg_tensor s = tg_matmul(g, q, k, false, true);
        s = tg_mul(g, s, tg_scalar(g, TG_F32, 1.0 / sqrt((double)DHEAD)));
        y = tg_matmul(g, tg_softmax(g, s, -1), v, false, false);
    } else {
        y = tg_attention(g, q, k, v, TG_INVALID, false, 0);
    }
    tg_tensor targets[4] = {y};
    int n_targets = 1, n_feeds = 3;
    tg_tensor dy = TG_INVALID;
    if (backward) {
        dy = tg_placeholder(g, "dy", TG_F32, 4, shp);
        tg_tensor wrt[3] = {q, k, v};
        if (tg_gradients_seeded(g, y, dy, 3, wrt, targets + 1) != TG_OK) {
            fprintf(stderr, "gradients: %s\n", tg_last_error());
            exit(1);
        }
        n_targets = 4;
        n_feeds = 4;
    }
    if (tg_graph_status(g) != TG_OK) {
        fprintf(stderr, "graph: %s\n", tg_graph_error(g));
        exit(1);
    }
    tg_array vals[4];
    tg_feed feeds[4];
    tg_tensor ph[4] = {q, k, v, dy};
    for (int i = 0; i < n_feeds; i++) {
        if (tg_array_alloc(&vals[i], TG_F32, 4, shp) != TG_OK) exit(1);
        float *p = vals[i].data;
        for (int64_t e = 0; e < tg_array_count(&vals[i]); e++) p[e] = frand();
        feeds[i] = (tg_feed){ph[i], &vals[i]};
    }
    if (which == PREVIOUS) setenv("TG_ATTN_STRATEGY", "nn", 1);
    tg_executable *e = NULL;
    tg_status st = tg_compile(dev, g, NULL, n_targets, targets, 0, NULL, NULL, &e);
    if (which == PREVIOUS) unsetenv("TG_ATTN_STRATEGY");
    tg_array res[4];
    memset(res, 0, sizeof res);
    double med = -1, cpu_med = 0, gflops = 0;
    uint64_t arena = 0;
    double times[64], cpu[64];
    int n = 0;
    if (st == TG_OK) st = tg_run(e, n_feeds, feeds, res); /* warm-up: JIT */
    for (int r = 0; st == TG_OK && r < reps && r < 64; r++) {
        for (int i = 0; i < n_targets; i++) tg_array_free(&res[i]);
        double t0 = bench_now_s(), c0 = bench_cpu_s();
        st = tg_run(e, n_feeds, feeds, res);
        cpu[n] = bench_cpu_s() - c0;
        times[n++] = bench_now_s() - t0;
    }
    char err[512] = "";
    if (st != TG_OK) snprintf(err, sizeof err, "%s", tg_last_error());
    char *table = NULL; /* TG_PROFILE=1: the per-kernel table on stderr */
    if (st == TG_OK && getenv("TG_PROFILE") && tg_executable_profile(e, &table, NULL) == TG_OK)
        fprintf(stderr, "T=%lld %s %s:\n%s", (long long)T, impl_names[which],
                backward ? "forward+backward" : "forward", table);
    free(table);
    if (n) {
        med = bench_median(times, n); /* sorts times: times[0] is the fastest run */
        cpu_med = bench_median(cpu, n);
        double flops = 4.0 * HEADS * (double)T * (double)T * DHEAD * (backward ? 3.5 : 1.0);
        gflops = flops / med * 1e-9;
        tg_executable_memory_stats(e, &arena, NULL, NULL);
    }
    printf("%s    {\"T\": %lld, \"impl\": \"%s\", \"pass\": \"%s\", ", first ? "" : ",\n",
           (long long)T, impl_names[which], backward ? "forward+backward" : "forward");
    if (n)
        printf("\"median_ms\": %.3f, \"min_ms\": %.3f, \"cpu_ms\": %.3f, \"gflops\": %.2f, "
               "\"runs\": %d, \"peak_memory_bytes\": %llu, \"dispatches\": %d}",
               med * 1e3, times[0] * 1e3, cpu_med * 1e3, gflops, n, (unsigned long long)arena,
               tg_executable_dispatches(e));
    else {
        for (char *c = err; *c; c++)
            if (*c == '"' || *c == '\\' || *c == '\n') *c = ' ';
        printf("\"error\": \"%s\"}", err);
    }
    fflush(stdout);
    for (int i = 0; i < n_targets; i++) tg_array_free(&res[i]);
    for (int i = 0; i < n_feeds; i++) tg_array_free(&vals[i]);
    tg_executable_free(e);
    tg_graph_free(g);
    return med;
}

int main(int argc, char **argv) {
    int64_t lens[3] = {448, 1500, 3000};
    int n_lens = 3, reps = 5;
    bool flash_only = false; /* --flash-forward: only flash, forward (for tuning) */
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            n_lens = 1;
        else if (strncmp(argv[i], "--t=", 4) == 0) {
            lens[0] = atoll(argv[i] + 4);
            n_lens = 1;
        } else if (strcmp(argv[i], "--flash-forward") == 0)
            flash_only = true;
        else if (strncmp(argv[i], "--reps=", 7) == 0)
            reps = atoi(argv[i] + 7);
        else {
            fprintf(stderr, "usage: %s [--quick] [--t=N] [--reps=N] [--flash-forward]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    tg_device *dev = NULL;
    if (!bench_open_device(&dev)) return 1;
    tg_device_info info;
    tg_device_get_info(tg_device_default_index(), &info);
    const char *lp = getenv("LP_NUM_THREADS");
    printf(
        "{\n  \"benchmark\": \"attention\",\n  \"device\": \"%s\",\n  \"device_class\": \"%s\",\n"
        "  \"lp_num_threads\": %s%s%s,\n  \"batch\": 1, \"heads\": %d, \"d_head\": %d,\n"
        "  \"results\": [\n",
        info.name, info.device_class, lp ? "\"" : "", lp ? lp : "null", lp ? "\"" : "", HEADS,
        DHEAD);
    bool first = true;
    for (int t = 0; t < n_lens; t++) {
        int64_t T = lens[t];
        int r = T >= 3000 ? (reps < 3 ? reps : 3) : reps;
        for (int bw = 0; bw < 2; bw++) {
            double f = run_case(dev, T, FLASH, bw, r, first);
            first = false;
            if (flash_only) break;
            double u = run_case(dev, T, UNFUSED, bw, r, false);
            double p = bw ? -1 : run_case(dev, T, PREVIOUS, false, T >= 3000 ? 1 : r, false);
            if (f > 0 && u > 0)
                printf(",\n    {\"T\": %lld, \"pass\": \"%s\", \"unfused_over_flash\": %.2f}",
                       (long long)T, bw ? "forward+backward" : "forward", u / f);
            if (f > 0 && p > 0)
                printf(",\n    {\"T\": %lld, \"pass\": \"forward\", \"previous_over_flash\": %.2f}",
                       (long long)T, p / f);
        }
    }
    printf("\n  ]\n}\n");
    tg_device_free(dev);
    return 0;
}
