/* bench/train_step.c — what the passes (fusion, scheduling, the arena plan)
 * do to two training graphs, measured in one run and printed as JSON:
 *
 *  - "charlm": the training step of a 2-layer d=64 character transformer
 *    shaped like examples/charlm.c (B=16, T=64, 4 heads, vocab 96): forward,
 *    cross-entropy, tg_gradients, one AdamW per parameter;
 *  - "whisper_layer": one encoder layer of Whisper-tiny's shape (the conv
 *    stem, 1 layer of d_model 384 with 6 heads at T=1500, batch 1) forward
 *    and backward (gradients of every weight for the mean square of the
 *    output).
 *
 * For each: dispatches with the passes on, with fusion off, and with every
 * pass off; the arena with the passes on against its lower bound and the
 * naive sum of its intermediates (and the naive sum with every pass off).
 * For charlm also the step time with the passes on and off, alternating
 * runs of the executables so machine noise hits them alike. "Off" is every
 * pass off, flash_attention included (attention then runs as matmuls and
 * a softmax, docs/passes.md); the step with every pass off but
 * flash_attention is timed beside it ("passes_off_but_flash_attention").
 *
 *   train_step [steps]   (default 10 timed steps each; the median step
 *   time and the mean CPU time a step) */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "../examples/charlm_model.h"
#include "tg.h"
#include "tg_whisper.h"

#define B 16 /* sequences a step (examples/charlm.c trains with 8) */
#define VOCAB 96
/* every pass off; and every pass but flash_attention off, the baseline
 * before flash_attention became a pass (reported beside it) */
#define ALL_BUT_FLASH "dce,cse,fold,algebra,permute_matmul,gelu_derivative,fusion"
#define ALL_PASSES "flash_attention," ALL_BUT_FLASH

static int fail(const char *what) {
    fprintf(stderr, "train_step: %s: %s\n", what, tg_last_error());
    return 1;
}

/* The graphs measured: charlm (examples/charlm_model.h), whose struct also
 * holds the Whisper layer's graph, loss and variables. */
typedef charlm_model model;
#define T CHARLM_T

/* One Whisper-tiny encoder layer (with the conv stem) and its backward:
 * targets the loss and the gradient of every variable. */
static tg_status build_whisper_layer(model *m, tg_tensor *grads) {
    memset(m, 0, sizeof *m);
    tg_whisper_config cfg;
    tg_status st = tg_whisper_config_preset("tiny", &cfg);
    if (st != TG_OK) return st;
    cfg.encoder_layers = 1;
    tg_graph *g = m->g = tg_graph_new();
    int64_t ms[] = {1, cfg.num_mel_bins, 2 * cfg.max_source_positions};
    tg_tensor mel = tg_placeholder(g, "mel", TG_F32, 3, ms);
    m->tokens = mel;
    tg_tensor out = tg_whisper_build_encoder(g, &cfg, mel);
    m->loss = tg_mean(g, tg_square(g, out), 0, NULL, false);
    for (int id = 0; id < tg_graph_node_count(g) && m->n_params < 64; id++)
        if (strcmp(tg_tensor_op(g, (tg_tensor){id}), "variable") == 0)
            m->params[m->n_params++] = (tg_tensor){id};
    if (tg_graph_status(g) != TG_OK) return tg_graph_status(g);
    return tg_gradients(g, m->loss, m->n_params, m->params, grads);
}

typedef struct figures {
    int dispatches_on, dispatches_nofusion, dispatches_off;
    uint64_t arena, naive, lower_bound, naive_off, arena_off;
} figures;

static tg_status compile(tg_device *dev, const model *m, tg_store *store, int n_targets,
                         const tg_tensor *targets, int n_ops, const tg_tensor *ops,
                         const char *disable, tg_executable **e) {
    tg_compile_options o = {.disable_passes = disable};
    return tg_compile(dev, m->g, store, n_targets, targets, n_ops, ops, &o, e);
}

/* Dispatches and memory of the three configurations; *on / *off receive
 * the executables with every pass on and off (may be NULL: freed). */
static int measure(tg_device *dev, const model *m, tg_store *store, int n_targets,
                   const tg_tensor *targets, int n_ops, const tg_tensor *ops, figures *f,
                   tg_executable **on, tg_executable **off, tg_executable **off_flash) {
    tg_executable *e[4] = {NULL, NULL, NULL, NULL};
    const char *disable[4] = {NULL, "fusion", ALL_PASSES, ALL_BUT_FLASH};
    for (int i = 0; i < (off_flash ? 4 : 3); i++)
        if (compile(dev, m, store, n_targets, targets, n_ops, ops, disable[i], &e[i]) != TG_OK)
            return fail("tg_compile");
    f->dispatches_on = tg_executable_dispatches(e[0]);
    f->dispatches_nofusion = tg_executable_dispatches(e[1]);
    f->dispatches_off = tg_executable_dispatches(e[2]);
    if (tg_executable_memory_stats(e[0], &f->arena, &f->naive, &f->lower_bound) != TG_OK ||
        tg_executable_memory_stats(e[2], &f->arena_off, &f->naive_off, NULL) != TG_OK)
        return fail("tg_executable_memory_stats");
    tg_executable_free(e[1]);
    if (on)
        *on = e[0];
    else
        tg_executable_free(e[0]);
    if (off)
        *off = e[2];
    else
        tg_executable_free(e[2]);
    if (off_flash) *off_flash = e[3];
    return 0;
}

static void print_figures(const char *name, const figures *f, const char *extra) {
    printf("  \"%s\": {\n"
           "    \"dispatches\": {\"passes_on\": %d, \"fusion_off\": %d, \"passes_off\": %d, "
           "\"ratio_on_off\": %.3f},\n"
           "    \"arena_bytes\": %llu, \"lower_bound_bytes\": %llu, \"naive_bytes\": %llu,\n"
           "    \"arena_over_lower_bound\": %.3f, \"arena_over_naive\": %.3f,\n"
           "    \"passes_off\": {\"arena_bytes\": %llu, \"naive_bytes\": %llu},\n"
           "    \"arena_over_naive_passes_off\": %.3f%s\n  }",
           name, f->dispatches_on, f->dispatches_nofusion, f->dispatches_off,
           (double)f->dispatches_on / f->dispatches_off, (unsigned long long)f->arena,
           (unsigned long long)f->lower_bound, (unsigned long long)f->naive,
           (double)f->arena / (double)f->lower_bound, (double)f->arena / (double)f->naive,
           (unsigned long long)f->arena_off, (unsigned long long)f->naive_off,
           (double)f->arena / (double)f->naive_off, extra);
}

int main(int argc, char **argv) {
    int steps = argc > 1 ? atoi(argv[1]) : 10;
    if (steps < 1) steps = 1;
    tg_device *dev = NULL;
    if (tg_device_open(-1, &dev) != TG_OK) return fail("tg_device_open");

    /* charlm: figures, then step times alternating on/off */
    model m;
    if (charlm_build(&m, VOCAB, B) != TG_OK) return fail("build charlm");
    tg_store *store = tg_store_new();
    if (tg_store_init_missing(store, m.g, 1234, 0.06) != TG_OK) return fail("init");
    figures fc;
    tg_executable *ex[3] = {NULL, NULL, NULL}; /* on, off, off but flash_attention */
    if (measure(dev, &m, store, 1, &m.loss, m.n_params, m.updates, &fc, &ex[0], &ex[1], &ex[2]))
        return 1;
    static int32_t tok[B * T], tgt[B * T];
    for (int i = 0; i < B * T; i++) {
        tok[i] = (i * 7 + 3) % VOCAB;
        tgt[i] = (i * 5 + 1) % VOCAB;
    }
    float lr = 1e-3f;
    int32_t step = 1;
    tg_array ta = {TG_I32, 2, {B, T}, tok}, ya = {TG_I32, 2, {B, T}, tgt};
    tg_array lra = {TG_F32, 0, {0}, &lr}, sa = {TG_I32, 0, {0}, &step};
    tg_feed feeds[] = {{m.tokens, &ta}, {m.targets, &ya}, {m.lr, &lra}, {m.step, &sa}};
    /* per step: wall time (median: the machine is shared) and the
     * process's CPU time (lavapipe's threads included), which other load
     * disturbs less */
    double *wall[3], cpu[3] = {0, 0, 0}, t[3];
    for (int j = 0; j < 3; j++)
        if (!(wall[j] = calloc((size_t)steps, sizeof(double)))) return fail("out of memory");
    for (int i = -2; i < steps; i++) { /* two warm-up steps each (driver JIT) */
        for (int j = 0; j < 3; j++) {
            tg_array loss;
            double t0 = bench_now_s(), c0 = bench_cpu_s();
            if (tg_run(ex[j], 4, feeds, &loss) != TG_OK) return fail("tg_run");
            if (i >= 0) {
                wall[j][i] = bench_now_s() - t0;
                cpu[j] += bench_cpu_s() - c0;
            }
            tg_array_free(&loss);
        }
    }
    for (int j = 0; j < 3; j++) {
        t[j] = bench_median(wall[j], steps);
        free(wall[j]);
    }
    if (getenv("TG_PROFILE") && strcmp(getenv("TG_PROFILE"), "1") == 0) {
        /* per-kernel tables of the executables (TG_PROFILE=1 profiles them) */
        const char *label[3] = {"passes on", "passes off", "passes off but flash_attention"};
        for (int j = 0; j < 3; j++) {
            char *table = NULL;
            if (tg_executable_profile(ex[j], &table, NULL) != TG_OK) return fail("profile");
            fprintf(stderr, "charlm step, %s:\n%s\n", label[j], table);
            free(table);
        }
    }
    for (int j = 0; j < 3; j++) tg_executable_free(ex[j]);
    tg_store_free(store);
    tg_graph_free(m.g);
    char extra[1024];
    snprintf(extra, sizeof extra,
             ",\n    \"step_ms\": {\"passes_on\": %.2f, \"passes_off\": %.2f, \"speedup\": %.2f, "
             "\"steps\": %d},\n    \"step_cpu_ms\": {\"passes_on\": %.2f, \"passes_off\": %.2f, "
             "\"speedup\": %.2f},\n"
             "    \"passes_off_but_flash_attention\": {\"step_ms\": %.2f, \"speedup\": %.2f, "
             "\"step_cpu_ms\": %.2f, \"cpu_speedup\": %.2f}",
             1e3 * t[0], 1e3 * t[1], t[1] / t[0], steps, 1e3 * cpu[0] / steps, 1e3 * cpu[1] / steps,
             cpu[1] / cpu[0], 1e3 * t[2], t[2] / t[0], 1e3 * cpu[2] / steps, cpu[2] / cpu[0]);
    printf("{\n  \"lp_num_threads\": \"%s\",\n",
           getenv("LP_NUM_THREADS") ? getenv("LP_NUM_THREADS") : "unset");
    print_figures("charlm_train_step", &fc, extra);
    printf(",\n");
    fflush(stdout);

    /* one Whisper-tiny encoder layer, forward and backward: compiled only */
    tg_tensor grads[64];
    if (build_whisper_layer(&m, grads) != TG_OK) return fail("build the whisper layer");
    tg_tensor targets[65];
    targets[0] = m.loss;
    memcpy(targets + 1, grads, (size_t)m.n_params * sizeof *grads);
    store = tg_store_new();
    if (tg_store_init_missing(store, m.g, 1234, 0.02) != TG_OK) return fail("init");
    figures fw;
    if (measure(dev, &m, store, 1 + m.n_params, targets, 0, NULL, &fw, NULL, NULL, NULL)) return 1;
    print_figures("whisper_tiny_encoder_layer_fwd_bwd", &fw, "");
    printf("\n}\n");
    tg_store_free(store);
    tg_graph_free(m.g);
    tg_device_free(dev);
    return 0;
}
