/* bench/whisper.c — Whisper on tg against PyTorch, as one JSON object.
 *
 * whisper-tiny shapes (d 384, 4+4 layers, 6 heads, vocab 51865) with random
 * weights, written to a temporary safetensors file first so that loading
 * is measured as in real use. Timed on the default device:
 *  - load: opening the checkpoint and tg_whisper_load_weights (f32);
 *  - compile: building and compiling the log-Mel, encoder and decoder
 *    executables (shaderc's SPIR-V is cached on disk: a second run of the
 *    benchmark compiles less);
 *  - mel: the log-Mel of one 30-s window; encoder: one 30-s window (batch 1);
 *    both after a warm-up run (on lavapipe the first run JITs);
 *  - decoder: ms per token of the KV-cache step (batch 1, the cache sized
 *    for the model's 448 positions), over TOKENS steps after a warm-up;
 *  - rtf: (mel + encoder + 100 tokens) / 30 s: a 30-s window of speech holds
 *    about 100 tokens.
 * Then bench/whisper_torch.py runs the same forward passes in PyTorch on the
 * same checkpoint (Debian's /usr/bin/python3 with python3-torch, two
 * threads, OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset), when torch imports;
 * the JSON gives both and the tg / torch time ratios (> 1: tg is slower).
 *
 * usage: whisper [TOKENS]   (default 32) */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "tg.h"
#include "tg_whisper.h"

static int fail(const char *what) {
    printf("{\"bench\": \"whisper\", \"error\": \"%s: %s\"}\n", what, tg_last_error());
    return 1;
}

/* Random weights (uniform, std ~0.02; LayerNorm weights 1), saved. */
static tg_status write_checkpoint(const tg_whisper_config *cfg, const char *path) {
    int n = tg_whisper_weight_count(cfg);
    char **names = calloc((size_t)n, sizeof *names);
    tg_array *arrays = calloc((size_t)n, sizeof *arrays);
    uint64_t state = 12345;
    tg_status st = names && arrays ? TG_OK : TG_ERR_NO_MEMORY;
    for (int i = 0; i < n && st == TG_OK; i++) {
        names[i] = malloc(96);
        int rank;
        int64_t shape[TG_MAX_RANK];
        st = tg_whisper_weight_info(cfg, i, names[i], 96, &rank, shape);
        if (st == TG_OK) st = tg_array_alloc(&arrays[i], TG_F32, rank, shape);
        if (st != TG_OK) break;
        float *x = arrays[i].data;
        bool one = strstr(names[i], "layer_norm.weight") != NULL;
        for (int64_t k = 0; k < tg_array_count(&arrays[i]); k++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            x[k] = one ? 1.0f : (float)(0.07 * ((double)(state >> 11) / 9007199254740992.0 - 0.5));
        }
    }
    if (st == TG_OK) st = tg_safetensors_save(path, n, (const char *const *)names, arrays, NULL);
    for (int i = 0; i < n; i++) {
        if (names) free(names[i]);
        if (arrays) tg_array_free(&arrays[i]);
    }
    free(names);
    free(arrays);
    return st;
}

/* Runs whisper_torch.py (next to this file) and returns its JSON line, or
 * NULL with *why set. */
static char *run_torch(const tg_whisper_config *cfg, const char *ckpt, int tokens, char *why,
                       size_t why_size) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", __FILE__);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        snprintf(dir, sizeof dir, ".");
    const char *script = getenv("TG_BENCH_TORCH_SCRIPT");
    char path[1100];
    snprintf(path, sizeof path, "%s/whisper_torch.py", dir);
    if (!script) script = path;
    if (system("/usr/bin/python3 -c 'import torch' >/dev/null 2>&1") != 0) {
        snprintf(why, why_size, "torch does not import in /usr/bin/python3");
        return NULL;
    }
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE /usr/bin/python3 '%s' '%s' %d %d %d %d "
             "%d %d %d %d",
             script, ckpt, cfg->d_model, cfg->decoder_attention_heads, cfg->encoder_layers,
             cfg->decoder_layers, cfg->num_mel_bins, cfg->vocab_size, cfg->max_target_positions,
             tokens);
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(why, why_size, "cannot run %.200s", script);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    if (buf) len = fread(buf, 1, cap - 1, p);
    int rc = pclose(p);
    if (!buf || rc != 0 || len == 0 || buf[0] != '{') {
        snprintf(why, why_size, "%.200s failed (exit status %d)", script, rc);
        free(buf);
        return NULL;
    }
    while (len && (buf[len - 1] == '\n' || buf[len - 1] == '\r')) len--;
    buf[len] = '\0';
    return buf;
}

/* The number after "key": in a flat JSON object, or NAN. */
static double json_number(const char *json, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *p = json ? strstr(json, k) : NULL;
    return p ? strtod(p + strlen(k), NULL) : NAN;
}

int main(int argc, char **argv) {
    int tokens = argc > 1 ? atoi(argv[1]) : 32;
    if (tokens < 1 || tokens > 440) tokens = 32;
    tg_whisper_config cfg;
    if (tg_whisper_config_preset("tiny", &cfg) != TG_OK) return fail("preset");
    char ckpt[] = "/tmp/tg_bench_whisper_XXXXXX";
    int fd = mkstemp(ckpt);
    if (fd < 0) return fail("mkstemp");
    close(fd);
    if (write_checkpoint(&cfg, ckpt) != TG_OK) return fail("checkpoint");

    /* load */
    double t0 = bench_now_s();
    tg_safetensors *st = NULL;
    tg_store *store = tg_store_new();
    if (tg_safetensors_open(ckpt, &st) != TG_OK) return fail("open");
    if (tg_whisper_load_weights(store, &cfg, st, TG_F32) != TG_OK) return fail("load");
    tg_safetensors_close(st);
    double load_s = bench_now_s() - t0;

    tg_device *dev = NULL;
    if (tg_device_open(-1, &dev) != TG_OK) return fail("device");
    tg_device_info info;
    tg_device_get_info(tg_device_default_index(), &info);

    /* compile: the log-Mel, encoder and decoder executables */
    int max_len = cfg.max_target_positions;
    t0 = bench_now_s();
    tg_graph *mg = tg_graph_new();
    int64_t ashape[2] = {1, TG_WHISPER_N_SAMPLES};
    tg_tensor a = tg_placeholder(mg, "audio", TG_F32, 2, ashape);
    tg_tensor m = tg_whisper_log_mel(mg, a, cfg.num_mel_bins);
    tg_executable *mel_exe = NULL;
    if (tg_compile(dev, mg, NULL, 1, &m, 0, NULL, NULL, &mel_exe) != TG_OK) return fail("mel");
    tg_graph *g = tg_graph_new();
    int64_t mshape[3] = {1, cfg.num_mel_bins, TG_WHISPER_N_FRAMES};
    tg_tensor x = tg_placeholder(g, "mel", TG_F32, 3, mshape);
    tg_tensor y = tg_whisper_build_encoder(g, &cfg, x);
    tg_executable *enc_exe = NULL;
    if (tg_compile(dev, g, store, 1, &y, 0, NULL, NULL, &enc_exe) != TG_OK) return fail("encoder");
    tg_whisper_decoder *dec = NULL;
    if (tg_whisper_decoder_new(&cfg, store, dev, 1, max_len, &dec) != TG_OK) return fail("decoder");
    double compile_s = bench_now_s() - t0;

    /* mel: 30 s of noise */
    tg_array audio = {0}, mel = {0}, enc = {0};
    tg_array_alloc(&audio, TG_F32, 2, ashape);
    uint64_t state = 99;
    for (int i = 0; i < TG_WHISPER_N_SAMPLES; i++) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        ((float *)audio.data)[i] =
            (float)(0.2 * ((double)(state >> 11) / 9007199254740992.0 - 0.5));
    }
    tg_feed afeed = {a, &audio};
    t0 = bench_now_s();
    if (tg_run(mel_exe, 1, &afeed, &mel) != TG_OK) return fail("mel run");
    double mel_first_s = bench_now_s() - t0;
    tg_array_free(&mel);
    t0 = bench_now_s();
    if (tg_run(mel_exe, 1, &afeed, &mel) != TG_OK) return fail("mel run");
    double mel_s = bench_now_s() - t0;

    /* encoder on that window */
    tg_feed feed = {x, &mel};
    t0 = bench_now_s();
    if (tg_run(enc_exe, 1, &feed, &enc) != TG_OK) return fail("encoder run");
    double enc_first_s = bench_now_s() - t0;
    tg_array_free(&enc);
    t0 = bench_now_s();
    if (tg_run(enc_exe, 1, &feed, &enc) != TG_OK) return fail("encoder run");
    double enc_s = bench_now_s() - t0;

    /* decoder: one step executable for max_len positions */
    if (tg_whisper_decoder_set_audio(dec, &enc) != TG_OK) return fail("cross kv");
    int32_t tok = cfg.decoder_start_token_id;
    tg_array logits = {0};
    t0 = bench_now_s();
    if (tg_whisper_decoder_step(dec, &tok, 0, &logits) != TG_OK) return fail("step");
    double step_first_s = bench_now_s() - t0;
    tg_array_free(&logits);
    t0 = bench_now_s();
    for (int pos = 0; pos < tokens; pos++) {
        if (tg_whisper_decoder_step(dec, &tok, pos, &logits) != TG_OK) return fail("step");
        const float *l = logits.data;
        int best = 0;
        for (int v = 1; v < cfg.vocab_size; v++)
            if (l[v] > l[best]) best = v;
        tok = best;
        tg_array_free(&logits);
    }
    double step_ms = 1000.0 * (bench_now_s() - t0) / tokens;
    double rtf = (mel_s + enc_s + 100 * step_ms / 1000.0) / 30.0;

    char why[256] = "";
    char *torch = run_torch(&cfg, ckpt, tokens, why, sizeof why);
    unlink(ckpt);

    const char *lp = getenv("LP_NUM_THREADS");
    printf("{\n  \"bench\": \"whisper\",\n  \"model\": \"tiny (random weights, f32)\",\n");
    printf("  \"device\": \"%s\",\n  \"lp_num_threads\": %s%s%s,\n", info.name, lp ? "\"" : "",
           lp ? lp : "null", lp ? "\"" : "");
    printf("  \"tg\": {\"load_s\": %.3f, \"compile_s\": %.3f, \"mel_first_s\": %.3f, "
           "\"mel_s\": %.4f, \"encoder_first_s\": %.3f, \"encoder_s\": %.3f, "
           "\"decoder_first_step_s\": %.3f, \"decoder_ms_per_token\": %.2f, "
           "\"decoder_tokens\": %d, \"decoder_cache_len\": %d, \"rtf_100_tokens\": %.3f},\n",
           load_s, compile_s, mel_first_s, mel_s, enc_first_s, enc_s, step_first_s, step_ms, tokens,
           max_len, rtf);
    if (torch) {
        double t_mel = json_number(torch, "mel_s"), t_enc = json_number(torch, "encoder_s");
        double t_dec = json_number(torch, "decoder_ms_per_token");
        double t_load = json_number(torch, "load_s");
        double t_rtf = (t_mel + t_enc + 100 * t_dec / 1000.0) / 30.0;
        printf("  \"torch\": %s,\n", torch);
        printf("  \"torch_rtf_100_tokens\": %.3f,\n", t_rtf);
        printf("  \"ratio_tg_over_torch\": {\"load\": %.2f, \"mel\": %.2f, \"encoder\": %.2f, "
               "\"decoder_per_token\": %.2f, \"rtf\": %.2f}\n}\n",
               load_s / t_load, mel_s / t_mel, enc_s / t_enc, step_ms / t_dec, rtf / t_rtf);
    } else {
        printf("  \"torch\": \"unavailable: %s\"\n}\n", why);
    }
    free(torch);
    tg_array_free(&audio);
    tg_array_free(&mel);
    tg_array_free(&enc);
    tg_whisper_decoder_free(dec);
    tg_executable_free(mel_exe);
    tg_executable_free(enc_exe);
    tg_graph_free(mg);
    tg_graph_free(g);
    tg_store_free(store);
    tg_device_free(dev);
    return 0;
}
