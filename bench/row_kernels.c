/* bench/row_kernels.c — steady-state time of the non-matmul kernels of the
 * demo's Whisper training step (batch 16, d_model 128, 4 heads, 150
 * encoder positions, 48 tokens, 265 classes): layer_norm and its two
 * gradient kernels on [2400, 128], softmax and softmax_grad on
 * [16, 4, 150, 150], cross_entropy and its gradient on [768, 265].
 *
 * Each graph is compiled with profiling, run once (llvmpipe JIT-compiles
 * at the first dispatch), then `reps` times; a kernel's time is the
 * difference of the profile tables' totals divided by reps, so the JIT is
 * left out. Prints one JSON object. Compare builds (or variants) by
 * running them alternately in the same session: the machine is shared. */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "tg.h"

#define MAX_KERNELS 32

typedef struct ktime {
    char name[64];
    double total_us;
} ktime;

/* Parses tg_executable_profile's table: "name dispatches total mean share". */
static int parse_table(const char *t, ktime *out) {
    int n = 0;
    for (const char *line = t; line && *line && n < MAX_KERNELS;) {
        char name[64];
        long disp;
        double total;
        if (sscanf(line, "%63s %ld %lf", name, &disp, &total) == 3) {
            snprintf(out[n].name, sizeof out[n].name, "%s", name);
            out[n].total_us = total;
            n++;
        }
        line = strchr(line, '\n');
        if (line) line++;
    }
    return n;
}

static uint64_t rng = 7;
static double urand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(rng >> 11) / (double)(1ull << 53);
}

static void fill(tg_array *a, double lo, double hi, bool integer) {
    for (int64_t i = 0; i < tg_array_count(a); i++) {
        double v = lo + (hi - lo) * urand();
        tg_array_set(a, i, integer ? (double)(int64_t)v : v);
    }
}

/* Runs the gradients of y (seeded with random values) with respect to
 * wrt and prints each kernel's mean steady-state microseconds. */
static void bench_graph(tg_device *dev, const char *what, tg_graph *g, tg_tensor y, int n_wrt,
                        const tg_tensor *wrt, int n_feeds, tg_feed *feeds, int reps, bool first) {
    int64_t ys[TG_MAX_RANK];
    int yr = tg_tensor_shape(g, y, ys);
    tg_tensor seed = tg_placeholder(g, "seed", TG_F32, yr, ys);
    tg_array seed_val;
    if (tg_array_alloc(&seed_val, TG_F32, yr, ys) != TG_OK) exit(1);
    fill(&seed_val, -1, 1, false);
    feeds[n_feeds++] = (tg_feed){seed, &seed_val};
    tg_tensor targets[8] = {y};
    if (tg_gradients_seeded(g, y, seed, n_wrt, wrt, targets + 1) != TG_OK) {
        fprintf(stderr, "%s: gradients: %s\n", what, tg_last_error());
        exit(1);
    }
    tg_compile_options opts = {.profile = true};
    tg_executable *e = NULL;
    tg_array res[8];
    memset(res, 0, sizeof res);
    char *t0 = NULL, *t1 = NULL;
    int n = 1 + n_wrt;
    tg_status st = tg_compile(dev, g, NULL, n, targets, 0, NULL, &opts, &e);
    if (st == TG_OK) st = tg_run(e, n_feeds, feeds, res);
    if (st == TG_OK) st = tg_executable_profile(e, &t0, NULL);
    for (int r = 0; st == TG_OK && r < reps; r++) {
        for (int i = 0; i < n; i++) tg_array_free(&res[i]);
        st = tg_run(e, n_feeds, feeds, res);
    }
    if (st == TG_OK) st = tg_executable_profile(e, &t1, NULL);
    printf("%s    {\"graph\": \"%s\"", first ? "" : ",\n", what);
    if (st != TG_OK) {
        printf(", \"error\": \"%s\"}", tg_last_error());
    } else {
        ktime a[MAX_KERNELS], b[MAX_KERNELS];
        int na = parse_table(t0, a), nb = parse_table(t1, b);
        printf(", \"reps\": %d, \"kernel_us\": {", reps);
        for (int i = 0; i < nb; i++) {
            double before = 0;
            for (int j = 0; j < na; j++)
                if (strcmp(a[j].name, b[i].name) == 0) before = a[j].total_us;
            printf("%s\"%s\": %.1f", i ? ", " : "", b[i].name, (b[i].total_us - before) / reps);
        }
        printf("}}");
    }
    fflush(stdout);
    free(t0);
    free(t1);
    for (int i = 0; i < n; i++) tg_array_free(&res[i]);
    for (int i = 0; i < n_feeds; i++) tg_array_free((tg_array *)feeds[i].value);
    tg_executable_free(e);
    tg_graph_free(g);
}

int main(int argc, char **argv) {
    int reps = 10;
    for (int i = 1; i < argc; i++) {
        if (strncmp(argv[i], "--reps=", 7) == 0)
            reps = atoi(argv[i] + 7);
        else {
            fprintf(stderr, "usage: %s [--reps=N]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1) reps = 1;
    tg_device *dev = NULL;
    if (!bench_open_device(&dev)) return 1;
    const char *lp = getenv("LP_NUM_THREADS");
    printf("{\n  \"benchmark\": \"row_kernels\",\n  \"lp_num_threads\": %s%s%s,\n"
           "  \"results\": [\n",
           lp ? "\"" : "", lp ? lp : "null", lp ? "\"" : "");
    static tg_array vals[3][4];
    tg_feed feeds[3][5];
    { /* layer_norm over the encoder's [batch * positions, d_model] */
        tg_graph *g = tg_graph_new();
        int64_t xs[2] = {2400, 128}, ws[1] = {128};
        tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
        tg_tensor w = tg_placeholder(g, "w", TG_F32, 1, ws);
        tg_tensor b = tg_placeholder(g, "b", TG_F32, 1, ws);
        tg_array *v = vals[0];
        if (tg_array_alloc(&v[0], TG_F32, 2, xs) != TG_OK ||
            tg_array_alloc(&v[1], TG_F32, 1, ws) != TG_OK ||
            tg_array_alloc(&v[2], TG_F32, 1, ws) != TG_OK)
            return 1;
        fill(&v[0], -2, 2, false);
        fill(&v[1], 0.5, 1.5, false);
        fill(&v[2], -1, 1, false);
        feeds[0][0] = (tg_feed){x, &v[0]};
        feeds[0][1] = (tg_feed){w, &v[1]};
        feeds[0][2] = (tg_feed){b, &v[2]};
        tg_tensor wrt[3] = {x, w, b};
        bench_graph(dev, "layer_norm [2400,128]", g, tg_layer_norm(g, x, w, b, 1e-5), 3, wrt, 3,
                    feeds[0], reps, true);
    }
    { /* the encoder's attention probabilities */
        tg_graph *g = tg_graph_new();
        int64_t xs[4] = {16, 4, 150, 150};
        tg_tensor x = tg_placeholder(g, "x", TG_F32, 4, xs);
        if (tg_array_alloc(&vals[1][0], TG_F32, 4, xs) != TG_OK) return 1;
        fill(&vals[1][0], -3, 3, false);
        feeds[1][0] = (tg_feed){x, &vals[1][0]};
        bench_graph(dev, "softmax [16,4,150,150]", g, tg_softmax(g, x, -1), 1, &x, 1, feeds[1],
                    reps, false);
    }
    { /* the decoder's loss */
        tg_graph *g = tg_graph_new();
        int64_t xs[2] = {768, 265}, ys[1] = {768};
        tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
        tg_tensor y = tg_placeholder(g, "y", TG_I32, 1, ys);
        if (tg_array_alloc(&vals[2][0], TG_F32, 2, xs) != TG_OK ||
            tg_array_alloc(&vals[2][1], TG_I32, 1, ys) != TG_OK)
            return 1;
        fill(&vals[2][0], -3, 3, false);
        fill(&vals[2][1], 0, 265, true);
        feeds[2][0] = (tg_feed){x, &vals[2][0]};
        feeds[2][1] = (tg_feed){y, &vals[2][1]};
        bench_graph(dev, "cross_entropy [768,265]", g, tg_cross_entropy(g, x, y, -100), 1, &x, 2,
                    feeds[2], reps, false);
    }
    printf("\n  ]\n}\n");
    tg_device_free(dev);
    return 0;
}
