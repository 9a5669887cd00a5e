/* bench/whisper_train.c — the Whisper training step on tg against PyTorch,
 * as one JSON object.
 *
 * whisper-tiny shapes (d 384, 4+4 layers, 6 heads, ffn 1536, vocab 51865)
 * with random initialisation (tg_whisper_init_weights), batch 4, 64 decoder
 * positions (row r's last 4r positions padded, label -100), at 10-s and
 * 30-s windows (500 and 1500 encoder positions: from scratch a 10-s model
 * simply has 500 rows of the sinusoid table, the first rows of the 30-s
 * one, as `graph train --window-seconds 10` does), f32 and, when the
 * trainer has the option, f16 mixed precision. One training step is
 * forward, backward, clipping and AdamW (tg_whisper_trainer_step), with
 * the trainer's default ops: primitives, and tg_attention (flash) for the
 * attentions with at least fused_attention_min_scores scores per head (at
 * 30 s the encoder's: unfused, its scores [4, 6, 1500, 1500] f32, 216 MB,
 * exceed lavapipe's 128-MiB largest buffer); "ops" says which. Should the
 * primitive trainer not compile, f32 falls back to the conv1d/attention
 * composites and says so in "ops"; f16 reports the error.
 *
 * Each shape runs in its own child process, so that its peak resident
 * memory (wait4's ru_maxrss) is its own: on lavapipe device memory is host
 * memory, so this counts weights, optimizer state, the arena and the
 * driver. Timed: building and compiling the trainer, a first step (the
 * JIT of llvmpipe happens there), then STEPS steps: the median wall time
 * and the median CPU time of the process (all threads; less sensitive
 * than wall time to other jobs on a shared machine).
 *
 * Then bench/whisper_train_torch.py runs the same step in PyTorch (Debian's
 * /usr/bin/python3, python3-torch, two threads, oneDNN off because its
 * conv1d backward is wrong on this CPU, OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE
 * unset) at both windows in f32, one process each; the JSON gives the
 * ratios tg / torch of samples per second (> 1: tg is faster) and of peak
 * memory (> 1: tg uses more). PyTorch's CPU autocast (1.13) supports
 * bfloat16 only, so tg's f16 step is compared with PyTorch's f32 step.
 *
 * usage: whisper_train [STEPS] [--window SECONDS] [--no-torch]
 *   (default 2 timed steps, windows 10 and 30 s; --window picks one) */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "models/whisper_train.h"
#include "tg.h"
#include "tg_whisper.h"

#define BATCH 4
#define TOKENS 64
#define MAX_STEPS 16

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double cpu_now(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
           1e-6 * (double)(r.ru_utime.tv_usec + r.ru_stime.tv_usec);
}

static double rss_mb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kb = NAN;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0) kb = strtod(line + 6, NULL);
    if (f) fclose(f);
    return kb / 1024.0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return v[n / 2];
}

/* Whether tg_whisper_train_options has mixed precision (the f16 trainer). */
#ifdef TG_BENCH_HAVE_TRAIN_PRECISION
#define HAVE_F16 1
#else
#define HAVE_F16 0
#endif

/* The batch: uniform mels in [-1, 1], random tokens and labels, row r's
 * last 4r positions padding. */
static void make_batch(const tg_whisper_config *cfg, float *mel, int64_t n_mel, int32_t *tokens,
                       int32_t *labels) {
    uint64_t s = 7;
    for (int64_t i = 0; i < n_mel; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        mel[i] = (float)(2.0 * ((double)(s >> 11) / 9007199254740992.0) - 1.0);
    }
    int32_t pad = cfg->vocab_size - 1;
    for (int r = 0; r < BATCH; r++) {
        int used = TOKENS - 4 * r;
        for (int t = 0; t < TOKENS; t++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            int32_t tok = (int32_t)((s >> 33) % (uint64_t)(cfg->vocab_size - 1));
            int32_t lab = (int32_t)((s >> 13) % (uint64_t)(cfg->vocab_size - 1));
            tokens[r * TOKENS + t] = t < used ? tok : pad;
            labels[r * TOKENS + t] = t < used ? lab : TG_WHISPER_IGNORE;
        }
    }
}

/* One shape, in the child: prints a JSON object (without the peak memory,
 * which the parent adds) on `out`. */
static int measure(int seconds, bool f16, int steps, FILE *out) {
    tg_whisper_config cfg;
    tg_device *dev = NULL;
    tg_store *store = tg_store_new();
    tg_whisper_trainer *t = NULL;
    const char *what = "preset";
    tg_status st = tg_whisper_config_preset("tiny", &cfg);
    cfg.max_source_positions = 50 * seconds;
    if (st == TG_OK) what = "device", st = tg_device_open(-1, &dev);
    if (st == TG_OK) what = "init", st = tg_whisper_init_weights(store, &cfg, 1);
    double rss_ready = rss_mb();
    tg_whisper_train_options o;
    tg_whisper_train_options_default(&o);
    o.batch = BATCH;
    o.n_tokens = TOKENS;
    o.weight_decay = 0.01;
    o.max_grad_norm = 1.0;
#if HAVE_F16
    o.precision = f16 ? TG_F16 : TG_F32;
#else
    (void)f16;
#endif
    double t0 = now();
    if (st == TG_OK) what = "compile", st = tg_whisper_trainer_new(&cfg, &o, store, dev, &t);
    char primitive_error[512] = "";
    if (st != TG_OK && !f16 && dev) {
        /* the primitive attention holds the scores [B, heads, S, S] in one
         * buffer, which can exceed the device's largest; the tg_attention
         * composite does not (f16 needs the primitive ops) */
        snprintf(primitive_error, sizeof primitive_error, "%s", tg_last_error());
        for (char *c = primitive_error; *c; c++)
            if (*c == '"' || *c == '\\') *c = '\'';
        o.primitive_ops = false;
        t0 = now();
        st = tg_whisper_trainer_new(&cfg, &o, store, dev, &t);
    }
    double compile_s = now() - t0;
    int64_t n_mel = (int64_t)BATCH * cfg.num_mel_bins * 2 * cfg.max_source_positions;
    float *mel = malloc((size_t)n_mel * sizeof *mel);
    int32_t tokens[BATCH * TOKENS], labels[BATCH * TOKENS];
    if (!mel) return 1;
    make_batch(&cfg, mel, n_mel, tokens, labels);
    double first_s = 0, wall[MAX_STEPS], cpu[MAX_STEPS], loss = NAN, norm = NAN;
    for (int k = 0; k <= steps && st == TG_OK; k++) {
        double w0 = now(), c0 = cpu_now();
        what = "step";
        st = tg_whisper_trainer_step(t, mel, tokens, labels, 1e-4f, k + 1, &loss, &norm);
        if (k == 0) {
            first_s = now() - w0;
        } else {
            wall[k - 1] = now() - w0;
            cpu[k - 1] = cpu_now() - c0;
        }
    }
    if (st != TG_OK) {
        fprintf(out, "{\"error\": \"%s: %s\"}", what, tg_last_error());
        return 1;
    }
    double step_s = median(wall, steps), step_cpu_s = median(cpu, steps);
    fprintf(
        out,
        "{\"seconds\": %d, \"precision\": \"%s\", \"encoder_positions\": %d, \"compile_s\": %.2f, "
        "\"first_step_s\": %.2f, \"step_s\": %.3f, \"step_min_s\": %.3f, \"step_cpu_s\": %.3f, "
        "\"steps_timed\": %d, \"samples_per_s\": %.4f, \"dispatches\": %d, \"loss\": %.4f, "
        "\"grad_norm\": %.4f, \"rss_ready_mb\": %.1f, \"ops\": \"%s%s%s\"",
        seconds, f16 ? "f16" : "f32", cfg.max_source_positions, compile_s, first_s, step_s, wall[0],
        step_cpu_s, steps, BATCH / step_s, tg_whisper_trainer_dispatches(t), loss, norm, rss_ready,
        o.primitive_ops ? "primitive" : "composite conv1d/attention; primitive: ", primitive_error,
        !o.primitive_ops ? ""
        : (int64_t)cfg.max_source_positions * cfg.max_source_positions >=
                o.fused_attention_min_scores
            ? ", encoder attention fused (tg_attention)"
            : ", attention unfused (matmul, softmax, matmul)");
    free(mel);
    tg_whisper_trainer_free(t);
    tg_store_free(store);
    tg_device_free(dev);
    return 0;
}

/* Reads all of `fd` into a malloc'ed string. */
static char *read_all(int fd) {
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    ssize_t n;
    while (buf && (n = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (cap - len < 2) {
            char *b = realloc(buf, cap * 2);
            if (!b) break;
            buf = b;
            cap *= 2;
        }
    }
    if (buf) buf[len] = '\0';
    return buf;
}

/* Runs measure() in a child; returns its JSON with "peak_rss_mb" added. */
static char *run_shape(int seconds, bool f16, int steps) {
    int fds[2];
    if (pipe(fds) != 0) return NULL;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) return NULL;
    if (pid == 0) {
        close(fds[0]);
        FILE *out = fdopen(fds[1], "w");
        int rc = out ? measure(seconds, f16, steps, out) : 1;
        if (out) fclose(out);
        _exit(rc);
    }
    close(fds[1]);
    char *json = read_all(fds[0]);
    close(fds[0]);
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0 || !json) {
        free(json);
        return NULL;
    }
    size_t len = strlen(json);
    char *res = malloc(len + 128);
    if (!res) {
        free(json);
        return NULL;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        snprintf(res, len + 128, "%s, \"peak_rss_mb\": %.1f}", json, (double)ru.ru_maxrss / 1024.0);
    else if (len)
        snprintf(res, len + 128, "%s", json);
    else
        snprintf(res, len + 128, "{\"error\": \"child exit status %d\"}", status);
    free(json);
    return res;
}

/* The torch step at one window, or NULL with *why set. */
static char *run_torch(const tg_whisper_config *cfg, int seconds, int steps, char *why,
                       size_t why_size) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
        snprintf(why, why_size, "torch does not import in /usr/bin/python3");
        return NULL;
    }
    char cmd[4096];
    snprintf(
        cmd, sizeof cmd,
        "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 '%s/whisper_train_torch.py' "
        "%d %d %d %d %d %d %d %d %d %d %d %d",
        dir, cfg->d_model, cfg->encoder_attention_heads, cfg->encoder_layers, cfg->decoder_layers,
        cfg->encoder_ffn_dim, cfg->num_mel_bins, cfg->vocab_size, cfg->max_target_positions,
        50 * seconds, BATCH, TOKENS, steps);
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(why, why_size, "cannot run whisper_train_torch.py");
        return NULL;
    }
    char *buf = read_all(fileno(p));
    int rc = pclose(p);
    if (!buf || rc != 0 || buf[0] != '{') {
        snprintf(why, why_size, "whisper_train_torch.py failed (exit status %d)", rc);
        free(buf);
        return NULL;
    }
    size_t len = strlen(buf);
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) buf[--len] = '\0';
    return buf;
}

/* The number after "key": in a flat JSON object, or NAN. */
static double json_number(const char *json, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = json ? strstr(json, k) : NULL;
    return p ? strtod(p + strlen(k), NULL) : NAN;
}

/* a / b, or null when either is missing (a shape that failed). */
static void print_ratio(double a, double b) {
    if (isfinite(a / b))
        printf("%.3f", a / b);
    else
        printf("null");
}

int main(int argc, char **argv) {
    int steps = 2, n_windows = 2;
    int windows[2] = {10, 30};
    bool torch = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--no-torch") == 0) {
            torch = false;
        } else if (strcmp(argv[i], "--window") == 0 && i + 1 < argc) {
            windows[0] = atoi(argv[++i]);
            n_windows = 1;
            if (windows[0] < 1 || windows[0] > 30) windows[0] = 30;
        } else {
            steps = atoi(argv[i]);
        }
    }
    if (steps < 1 || steps > MAX_STEPS) steps = 2;
    tg_whisper_config cfg;
    if (tg_whisper_config_preset("tiny", &cfg) != TG_OK) return 1;
    tg_device_info info;
    memset(&info, 0, sizeof info);
    tg_device_get_info(tg_device_default_index(), &info);
    char *tg_res[2][2] = {{NULL, NULL}, {NULL, NULL}}, *torch_res[2] = {NULL, NULL};
    char why[2][256] = {"", ""};
    for (int w = 0; w < n_windows; w++) {
        for (int p = 0; p < 1 + HAVE_F16; p++) tg_res[w][p] = run_shape(windows[w], p == 1, steps);
        if (torch)
            torch_res[w] = run_torch(&cfg, windows[w], steps, why[w], sizeof why[w]);
        else
            snprintf(why[w], sizeof why[w], "--no-torch");
    }
    const char *lp = getenv("LP_NUM_THREADS");
    printf("{\n  \"bench\": \"whisper_train\",\n");
    printf("  \"model\": \"whisper-tiny shapes, random init, batch %d, %d decoder positions\",\n",
           BATCH, TOKENS);
    printf("  \"device\": \"%s\",\n  \"lp_num_threads\": %s%s%s,\n", info.name, lp ? "\"" : "",
           lp ? lp : "null", lp ? "\"" : "");
    if (!HAVE_F16)
        printf("  \"f16\": \"absent: tg_whisper_train_options has no precision option in this "
               "build\",\n");
    printf("  \"windows\": [\n");
    for (int w = 0; w < n_windows; w++) {
        printf("    {\"seconds\": %d,\n", windows[w]);
        for (int p = 0; p < 1 + HAVE_F16; p++)
            printf("     \"tg_%s\": %s,\n", p ? "f16" : "f32",
                   tg_res[w][p] ? tg_res[w][p] : "{\"error\": \"no result\"}");
        if (torch_res[w]) {
            printf("     \"torch_f32\": %s,\n", torch_res[w]);
            double ts = json_number(torch_res[w], "samples_per_s");
            double tc = json_number(torch_res[w], "step_cpu_s");
            double tm = json_number(torch_res[w], "peak_rss_mb");
            printf("     \"ratio_tg_over_torch_f32\": {");
            for (int p = 0; p < 1 + HAVE_F16; p++) {
                const char *r = tg_res[w][p];
                printf("%s\"%s\": {\"samples_per_s\": ", p ? ", " : "", p ? "tg_f16" : "tg_f32");
                print_ratio(json_number(r, "samples_per_s"), ts);
                printf(", \"cpu_s_per_step\": ");
                print_ratio(json_number(r, "step_cpu_s"), tc);
                printf(", \"peak_rss\": ");
                print_ratio(json_number(r, "peak_rss_mb"), tm);
                printf("}");
            }
            printf("}}%s\n", w + 1 < n_windows ? "," : "");
        } else {
            printf("     \"torch_f32\": \"unavailable: %s\"}%s\n", why[w],
                   w + 1 < n_windows ? "," : "");
        }
    }
    printf("  ]\n}\n");
    for (int w = 0; w < 2; w++) {
        free(tg_res[w][0]);
        free(tg_res[w][1]);
        free(torch_res[w]);
    }
    return 0;
}
