/* test_whisper_model.c — Whisper's graphs (models/whisper.c,
 * whisper_decode.c) against an independent PyTorch implementation
 * (tests/reference/whisper_reference.py, computed in float64).
 *
 * The tiny random checkpoint (d_model 64, 2+2 layers, 4 heads, vocab 100,
 * 100 mel frames, 32 decoder positions) is loaded from
 * tests/data/whisper/tiny. Checked, on the interpreter and on the Vulkan
 * device (with the validation layer):
 *  - encoder output and decoder logits within 1e-4 of the largest
 *    reference value (f32 sums of 64..128 terms of size ~1 err ~1e-6; a
 *    wrong weight, transpose or scale gives errors of order 0.1);
 *  - greedy decoding with the KV cache gives the reference tokens, and the
 *    full decoder recomputed for every step gives the same tokens and the
 *    same logits as the cached steps;
 *  - the loader: names without the "model." prefix, a tied proj_out, and
 *    errors naming a missing, mis-shaped or unexpected tensor. */
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

#include <cmocka.h>

#include "test_checks.h"
#include "test_util.h"

#include "backend/vk.h"
#include "frontend/npy.h"
#include "tg.h"
#include "tg_whisper.h"

#define DATA TG_TEST_DATA_DIR "/whisper/"
#define TINY DATA "tiny"

static tg_device *dev; /* NULL when there is no Vulkan device */
static char tmp_dir[256];
static tg_whisper_config cfg;

/* Max |got - want| <= tol * max |want|; shapes must match. */
static void assert_rel_close(const tg_array *got, const tg_array *want, double tol,
                             const char *what) {
    assert_int_equal(got->rank, want->rank);
    for (int d = 0; d < got->rank; d++) assert_int_equal(got->shape[d], want->shape[d]);
    double max_ref = 0, max_err = 0;
    int64_t worst = 0;
    for (int64_t i = 0; i < tg_array_count(want); i++) {
        double w = tg_array_get(want, i), g = tg_array_get(got, i);
        if (fabs(w) > max_ref) max_ref = fabs(w);
        double e = fabs(g - w);
        if (!(e <= max_err)) { /* NaN counts as the worst */
            max_err = isnan(e) ? INFINITY : e;
            worst = i;
        }
    }
    printf("# %s: max error %.2e of max |ref| %.3g (relative %.2e)\n", what, max_err, max_ref,
           max_err / max_ref);
    if (!(max_err <= tol * max_ref))
        fail_msg("%s: element %lld: got %.9g, want %.9g (max error %.3g, allowed %.3g)", what,
                 (long long)worst, tg_array_get(got, worst), tg_array_get(want, worst), max_err,
                 tol * max_ref);
}

static tg_store *load_tiny(void) {
    tg_store *s = tg_store_new();
    tg_safetensors *st = NULL;
    OK(tg_safetensors_open(TINY "/model.safetensors", &st));
    OK(tg_whisper_load_weights(s, &cfg, st, TG_F32));
    tg_safetensors_close(st);
    return s;
}

/* Runs targets on the interpreter (device NULL) or compiled on `dev`. */
static void run_graph(tg_device *d, tg_graph *g, tg_store *s, int n_feeds, const tg_feed *feeds,
                      int n_targets, const tg_tensor *targets, tg_array *results) {
    if (!d) {
        OK(tg_interpret(g, s, n_feeds, feeds, n_targets, targets, results, 0, NULL, 0));
        return;
    }
    tg_executable *e = NULL;
    OK(tg_compile(d, g, s, n_targets, targets, 0, NULL, NULL, &e));
    OK(tg_run(e, n_feeds, feeds, results));
    tg_executable_free(e);
}

/* ---- tests ---- */

static void test_config_and_weight_list(void **state) {
    (void)state;
    assert_int_equal(cfg.d_model, 64);
    assert_int_equal(cfg.decoder_layers, 2);
    /* 5 + 15 per encoder layer + 2, 2 + 24 per decoder layer + 2 */
    assert_int_equal(tg_whisper_weight_count(&cfg), 5 + 2 * 15 + 2 + 2 + 2 * 24 + 2);
    char name[96];
    int rank;
    int64_t shape[TG_MAX_RANK];
    OK(tg_whisper_weight_info(&cfg, 0, name, sizeof name, &rank, shape));
    assert_string_equal(name, "model.encoder.conv1.weight");
    assert_int_equal(rank, 3);
    assert_int_equal(shape[0], 64);
    assert_int_equal(shape[1], 80);
    assert_int_equal(shape[2], 3);
    assert_int_equal(tg_whisper_weight_info(&cfg, 1000, name, sizeof name, &rank, shape),
                     TG_ERR_INVALID_ARGUMENT);
}

static void test_sinusoids_match_checkpoint(void **state) {
    (void)state;
    tg_store *s = load_tiny();
    tg_array pos = {0};
    OK(tg_store_get(s, "model.encoder.embed_positions.weight", &pos));
    float *mine = malloc(50 * 64 * sizeof *mine);
    OK(tg_whisper_sinusoids(50, 64, mine));
    const float *ref = pos.data;
    for (int i = 0; i < 50 * 64; i++)
        if (fabsf(mine[i] - ref[i]) > 1e-5f) /* torch computes it in f32 */
            fail_msg("sinusoid %d: %g vs %g", i, mine[i], ref[i]);
    assert_int_equal(tg_whisper_sinusoids(10, 5, mine), TG_ERR_INVALID_ARGUMENT);
    free(mine);
    tg_array_free(&pos);
    tg_store_free(s);
}

static void check_encoder(tg_device *d) {
    tg_store *s = load_tiny();
    tg_array mel = tg_test_load_npy(DATA, "tiny_mel.npy"),
             want = tg_test_load_npy(DATA, "tiny_encoder.npy");
    tg_graph *g = tg_graph_new();
    tg_tensor x = tg_placeholder(g, "mel", TG_F32, 3, mel.shape);
    tg_tensor y = tg_whisper_build_encoder(g, &cfg, x);
    if (tg_graph_status(g) != TG_OK) fail_msg("%s", tg_graph_error(g));
    tg_feed feed = {x, &mel};
    tg_array got = {0};
    run_graph(d, g, s, 1, &feed, 1, &y, &got);
    assert_rel_close(&got, &want, 1e-4, d ? "encoder (vulkan)" : "encoder (interpreter)");
    tg_array_free(&got);
    tg_array_free(&mel);
    tg_array_free(&want);
    tg_graph_free(g);
    tg_store_free(s);
    tg_test_check_validation(dev);
}

static void test_encoder_interpreter(void **state) {
    (void)state;
    check_encoder(NULL);
}

static void test_encoder_vulkan(void **state) {
    (void)state;
    if (!dev) skip();
    check_encoder(dev);
}

static void check_logits(tg_device *d) {
    tg_store *s = load_tiny();
    tg_array enc = tg_test_load_npy(DATA, "tiny_encoder.npy"),
             ids = tg_test_load_npy(DATA, "tiny_prefix.npy");
    tg_array want = tg_test_load_npy(DATA, "tiny_logits.npy");
    tg_graph *g = tg_graph_new();
    tg_tensor e = tg_placeholder(g, "encoder_out", TG_F32, 3, enc.shape);
    tg_tensor t = tg_placeholder(g, "tokens", TG_I32, 2, ids.shape);
    tg_tensor y = tg_whisper_build_decoder(g, &cfg, t, e);
    if (tg_graph_status(g) != TG_OK) fail_msg("%s", tg_graph_error(g));
    tg_feed feeds[2] = {{e, &enc}, {t, &ids}};
    tg_array got = {0};
    run_graph(d, g, s, 2, feeds, 1, &y, &got);
    assert_rel_close(&got, &want, 1e-4, d ? "logits (vulkan)" : "logits (interpreter)");
    tg_array_free(&got);
    tg_array_free(&enc);
    tg_array_free(&ids);
    tg_array_free(&want);
    tg_graph_free(g);
    tg_store_free(s);
    tg_test_check_validation(dev);
}

static void test_logits_interpreter(void **state) {
    (void)state;
    check_logits(NULL);
}

static void test_logits_vulkan(void **state) {
    (void)state;
    if (!dev) skip();
    check_logits(dev);
}

/* Greedy decoding with the KV cache gives the reference tokens. */
static void check_greedy(tg_device *d) {
    tg_store *s = load_tiny();
    tg_array enc = tg_test_load_npy(DATA, "tiny_encoder.npy"),
             prompt = tg_test_load_npy(DATA, "tiny_prompt.npy");
    tg_array want = tg_test_load_npy(DATA, "tiny_greedy.npy");
    int batch = (int)want.shape[0], len = (int)want.shape[1];
    tg_whisper_decoder *dec = NULL;
    OK(tg_whisper_decoder_new(&cfg, s, d, batch, len, &dec));
    OK(tg_whisper_decoder_set_audio(dec, &enc));
    int32_t *out = calloc((size_t)batch * len, sizeof *out);
    int lengths[2] = {0, 0};
    OK(tg_whisper_greedy(dec, prompt.data, (int)prompt.shape[1], -1, out, lengths));
    const int32_t *w = want.data;
    for (int b = 0; b < batch; b++) {
        assert_int_equal(lengths[b], len);
        for (int t = 0; t < len; t++)
            if (out[b * len + t] != w[b * len + t])
                fail_msg("row %d token %d: got %d, want %d (%s)", b, t, out[b * len + t],
                         w[b * len + t], d ? "vulkan" : "interpreter");
    }
    /* With an EOS: row 0 stops at its first occurrence of token w[0][5]. */
    int32_t eos = w[5];
    OK(tg_whisper_greedy(dec, prompt.data, (int)prompt.shape[1], eos, out, lengths));
    int first = -1;
    for (int t = (int)prompt.shape[1]; t < len && first < 0; t++)
        if (w[t] == eos) first = t;
    assert_int_equal(lengths[0], first + 1);
    for (int t = 0; t < len; t++) assert_int_equal(out[t], t <= first ? w[t] : eos);
    /* two greedy runs of up to 31 steps each: the step compiled once */
    assert_int_equal(tg_whisper_decoder_step_compiles(dec), d ? 1 : 0);
    free(out);
    tg_whisper_decoder_free(dec);
    tg_array_free(&enc);
    tg_array_free(&prompt);
    tg_array_free(&want);
    tg_store_free(s);
    tg_test_check_validation(dev);
}

static void test_greedy_kv_cache_interpreter(void **state) {
    (void)state;
    check_greedy(NULL);
}

static void test_greedy_kv_cache_vulkan(void **state) {
    (void)state;
    if (!dev) skip();
    check_greedy(dev);
}

/* The full decoder, recomputed for every step over the whole padded
 * sequence (causal, so later padding does not matter), gives the same
 * tokens as the cached steps and logits equal to theirs. */
static void test_kv_cache_equals_full_recompute(void **state) {
    (void)state;
    tg_device *d = dev; /* the interpreter when there is no device */
    tg_store *s = load_tiny();
    tg_array enc = tg_test_load_npy(DATA, "tiny_encoder.npy"),
             prompt = tg_test_load_npy(DATA, "tiny_prompt.npy");
    int batch = 2, len = cfg.max_target_positions, n_prompt = (int)prompt.shape[1];

    tg_graph *g = tg_graph_new();
    tg_tensor e = tg_placeholder(g, "encoder_out", TG_F32, 3, enc.shape);
    int64_t tshape[2] = {batch, len};
    tg_tensor t = tg_placeholder(g, "tokens", TG_I32, 2, tshape);
    tg_tensor y = tg_whisper_build_decoder(g, &cfg, t, e);
    if (tg_graph_status(g) != TG_OK) fail_msg("%s", tg_graph_error(g));
    tg_executable *full = NULL;
    if (d) OK(tg_compile(d, g, s, 1, &y, 0, NULL, NULL, &full));

    tg_whisper_decoder *dec = NULL;
    OK(tg_whisper_decoder_new(&cfg, s, d, batch, len, &dec));
    OK(tg_whisper_decoder_set_audio(dec, &enc));

    tg_array toks = {0};
    OK(tg_array_alloc(&toks, TG_I32, 2, tshape));
    int32_t *tk = toks.data;
    const int32_t *pr = prompt.data;
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < n_prompt; i++) tk[b * len + i] = pr[b * n_prompt + i];
    double max_diff = 0;
    for (int pos = 0; pos < len - 1; pos++) {
        tg_feed feeds[2] = {{e, &enc}, {t, &toks}};
        tg_array full_logits = {0}, step_logits = {0};
        if (d)
            OK(tg_run(full, 2, feeds, &full_logits));
        else
            OK(tg_interpret(g, s, 2, feeds, 1, &y, &full_logits, 0, NULL, 0));
        int32_t cur[2] = {tk[pos], tk[len + pos]};
        OK(tg_whisper_decoder_step(dec, cur, pos, &step_logits));
        const float *fl = full_logits.data, *sl = step_logits.data;
        int v = cfg.vocab_size;
        for (int b = 0; b < batch; b++) {
            int best = 0;
            for (int k = 0; k < v; k++) {
                double diff = fabs(fl[((size_t)b * len + pos) * v + k] - sl[b * v + k]);
                if (diff > max_diff) max_diff = diff;
                if (fl[((size_t)b * len + pos) * v + k] > fl[((size_t)b * len + pos) * v + best])
                    best = k;
            }
            int sbest = 0;
            for (int k = 1; k < v; k++)
                if (sl[b * v + k] > sl[b * v + sbest]) sbest = k;
            assert_int_equal(best, sbest);
            if (pos + 1 >= n_prompt) tk[b * len + pos + 1] = best;
        }
        tg_array_free(&full_logits);
        tg_array_free(&step_logits);
    }
    if (max_diff > 1e-4) fail_msg("step logits differ from full logits by %g", max_diff);
    /* and both agree with the reference */
    tg_array want = tg_test_load_npy(DATA, "tiny_greedy.npy");
    assert_memory_equal(toks.data, want.data, (size_t)batch * len * sizeof(int32_t));
    tg_array_free(&want);
    tg_array_free(&toks);
    tg_whisper_decoder_free(dec);
    tg_executable_free(full);
    tg_graph_free(g);
    tg_array_free(&enc);
    tg_array_free(&prompt);
    tg_store_free(s);
    tg_test_check_validation(dev);
}

/* ---- loader ---- */

/* Writes the tiny checkpoint with its tensors renamed/dropped/reshaped:
 * rename(name) returns the name to write (NULL: drop it). `extra` adds one
 * more tensor under that name (a copy of embed_tokens) when not NULL. */
static void write_variant(const char *path, bool strip_prefix, const char *drop,
                          const char *reshape, const char *extra) {
    tg_safetensors *st = NULL;
    OK(tg_safetensors_open(TINY "/model.safetensors", &st));
    int n = tg_safetensors_count(st);
    char **names = calloc((size_t)n + 1, sizeof *names);
    tg_array *arrays = calloc((size_t)n + 1, sizeof *arrays);
    int k = 0;
    for (int i = 0; i < n; i++) {
        const char *name = tg_safetensors_name(st, i);
        if (drop && strcmp(name, drop) == 0) continue;
        OK(tg_safetensors_read(st, name, TG_F32, &arrays[k]));
        if (reshape && strcmp(name, reshape) == 0) {
            /* [a, b] -> [b, a] (same bytes) */
            int64_t t = arrays[k].shape[0];
            arrays[k].shape[0] = arrays[k].shape[1];
            arrays[k].shape[1] = t;
        }
        names[k] = strdup(strip_prefix && strncmp(name, "model.", 6) == 0 ? name + 6 : name);
        k++;
    }
    if (extra) {
        OK(tg_safetensors_read(st, "model.decoder.embed_tokens.weight", TG_F32, &arrays[k]));
        names[k++] = strdup(extra);
    }
    OK(tg_safetensors_save(path, k, (const char *const *)names, arrays, NULL));
    for (int i = 0; i < k; i++) {
        free(names[i]);
        tg_array_free(&arrays[i]);
    }
    free(names);
    free(arrays);
    tg_safetensors_close(st);
}

static tg_status load_variant(const char *path, tg_store *s) {
    tg_safetensors *st = NULL;
    OK(tg_safetensors_open(path, &st));
    tg_status status = tg_whisper_load_weights(s, &cfg, st, TG_F32);
    tg_safetensors_close(st);
    return status;
}

static void test_loader_prefix_and_tied_proj_out(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/noprefix.safetensors", tmp_dir);
    write_variant(path, true, NULL, NULL, "proj_out.weight");
    tg_store *s = tg_store_new();
    OK(load_variant(path, s));
    /* stored under the full HF names, with the same values */
    tg_store *ref = load_tiny();
    assert_int_equal(tg_store_count(s), tg_store_count(ref));
    tg_array a = {0}, b = {0};
    OK(tg_store_get(s, "model.decoder.layers.1.fc2.weight", &a));
    OK(tg_store_get(ref, "model.decoder.layers.1.fc2.weight", &b));
    assert_memory_equal(a.data, b.data, (size_t)tg_array_count(&a) * sizeof(float));
    assert_false(tg_store_has(s, "proj_out.weight"));
    tg_array_free(&a);
    tg_array_free(&b);
    tg_store_free(s);
    tg_store_free(ref);
    /* f16 weights load too (converted) */
    s = tg_store_new();
    tg_safetensors *st = NULL;
    OK(tg_safetensors_open(path, &st));
    OK(tg_whisper_load_weights(s, &cfg, st, TG_F16));
    tg_safetensors_close(st);
    OK(tg_store_get(s, "model.encoder.conv1.weight", &a));
    assert_int_equal(a.dtype, TG_F16);
    tg_array_free(&a);
    tg_store_free(s);
}

static void expect_error(const char *path, tg_status want, const char *const *needles) {
    tg_store *s = tg_store_new();
    tg_status st = load_variant(path, s);
    if (st != want) fail_msg("status %d, want %d: %s", st, want, tg_last_error());
    for (int i = 0; needles[i]; i++)
        if (!strstr(tg_last_error(), needles[i]))
            fail_msg("error lacks \"%s\": %s", needles[i], tg_last_error());
    assert_int_equal(tg_store_count(s), 0); /* nothing loaded */
    tg_store_free(s);
}

static void test_loader_errors(void **state) {
    (void)state;
    char path[512];
    snprintf(path, sizeof path, "%s/missing.safetensors", tmp_dir);
    write_variant(path, false, "model.decoder.layers.1.encoder_attn.v_proj.bias", NULL, NULL);
    const char *missing[] = {"missing", "model.decoder.layers.1.encoder_attn.v_proj.bias",
                             "expected [64]", NULL};
    expect_error(path, TG_ERR_NOT_FOUND, missing);

    snprintf(path, sizeof path, "%s/shape.safetensors", tmp_dir);
    write_variant(path, false, NULL, "model.encoder.layers.0.fc1.weight", NULL);
    const char *shape[] = {
        "model.encoder.layers.0.fc1.weight has shape [64,128], expected [128,64]", NULL};
    expect_error(path, TG_ERR_SHAPE, shape);

    snprintf(path, sizeof path, "%s/extra.safetensors", tmp_dir);
    write_variant(path, false, NULL, NULL, "model.decoder.mystery.weight");
    const char *extra[] = {"unexpected", "model.decoder.mystery.weight", NULL};
    expect_error(path, TG_ERR_SHAPE, extra);

    /* an untied proj_out (different values) is refused */
    snprintf(path, sizeof path, "%s/untied.safetensors", tmp_dir);
    write_variant(path, false, NULL, NULL, "proj_out.weight");
    tg_safetensors *st = NULL;
    OK(tg_safetensors_open(path, &st));
    int n = tg_safetensors_count(st);
    const char **names = calloc((size_t)n, sizeof *names);
    tg_array *arrays = calloc((size_t)n, sizeof *arrays);
    for (int i = 0; i < n; i++) {
        names[i] = tg_safetensors_name(st, i);
        OK(tg_safetensors_read(st, names[i], TG_F32, &arrays[i]));
        if (strcmp(names[i], "proj_out.weight") == 0) ((float *)arrays[i].data)[7] += 1.0f;
    }
    char path2[512];
    snprintf(path2, sizeof path2, "%s/untied2.safetensors", tmp_dir);
    OK(tg_safetensors_save(path2, n, names, arrays, NULL));
    for (int i = 0; i < n; i++) tg_array_free(&arrays[i]);
    free(arrays);
    free(names);
    tg_safetensors_close(st);
    const char *untied[] = {"proj_out.weight differs", NULL};
    expect_error(path2, TG_ERR_SHAPE, untied);

    /* a config that does not fit the checkpoint: every layer-2 tensor missing */
    tg_whisper_config big = cfg;
    big.encoder_layers = 3;
    tg_store *s = tg_store_new();
    OK(tg_safetensors_open(TINY "/model.safetensors", &st));
    assert_int_equal(tg_whisper_load_weights(s, &big, st, TG_F32), TG_ERR_NOT_FOUND);
    assert_non_null(strstr(tg_last_error(), "model.encoder.layers.2.self_attn.k_proj.weight"));
    assert_non_null(strstr(tg_last_error(), "15 missing"));
    assert_int_equal(tg_whisper_load_weights(s, &cfg, st, TG_I32), TG_ERR_INVALID_ARGUMENT);
    tg_safetensors_close(st);
    tg_store_free(s);
}

static void test_builder_errors(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t bad[3] = {1, 80, 99};
    tg_tensor x = tg_placeholder(g, "mel", TG_F32, 3, bad);
    assert_false(tg_tensor_valid(g, tg_whisper_build_encoder(g, &cfg, x)));
    assert_int_equal(tg_graph_status(g), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_graph_error(g), "f32[1,80,99], expected f32[B,80,100]"));
    tg_graph_free(g);

    g = tg_graph_new();
    int64_t ts[2] = {1, 33}, es[3] = {1, 50, 64};
    tg_tensor t = tg_placeholder(g, "tokens", TG_I32, 2, ts);
    tg_tensor e = tg_placeholder(g, "enc", TG_F32, 3, es);
    assert_false(tg_tensor_valid(g, tg_whisper_build_decoder(g, &cfg, t, e)));
    assert_non_null(strstr(tg_graph_error(g), "1 <= T <= 32"));
    tg_graph_free(g);

    tg_whisper_config c = cfg;
    c.decoder_attention_heads = 5;
    g = tg_graph_new();
    tg_whisper_step step;
    assert_int_equal(tg_whisper_build_step(g, &c, 1, 8, &step), TG_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(tg_last_error(), "not a multiple of the heads"));
    assert_int_equal(tg_whisper_build_step(g, &cfg, 1, 33, &step), TG_ERR_INVALID_ARGUMENT);
    tg_graph_free(g);

    /* decoding errors */
    tg_store *s = load_tiny();
    tg_whisper_decoder *dec = NULL;
    OK(tg_whisper_decoder_new(&cfg, s, NULL, 1, 8, &dec));
    int32_t tok = 3;
    tg_array logits = {0};
    assert_int_equal(tg_whisper_decoder_step(dec, &tok, 0, &logits), TG_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(tg_last_error(), "no audio"));
    tg_whisper_decoder_free(dec);
    tg_store_free(s);
}

static int setup(void **state) {
    (void)state;
    if (tg_whisper_config_load(TINY, &cfg) != TG_OK) {
        fprintf(stderr, "config: %s\n", tg_last_error());
        return -1;
    }
    return tg_test_open_device(&dev, false);
}

static int teardown(void **state) {
    (void)state;
    tg_device_free(dev);
    dev = NULL;
    return 0;
}

int main(void) {
    /* the shader cache and the test's files share one temporary directory */
    if (!tg_test_device_env(tmp_dir, sizeof tmp_dir, "tg_test_whisper_model", false)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_and_weight_list),
        cmocka_unit_test(test_sinusoids_match_checkpoint),
        cmocka_unit_test(test_encoder_interpreter),
        cmocka_unit_test(test_logits_interpreter),
        cmocka_unit_test(test_greedy_kv_cache_interpreter),
        cmocka_unit_test(test_encoder_vulkan),
        cmocka_unit_test(test_logits_vulkan),
        cmocka_unit_test(test_greedy_kv_cache_vulkan),
        cmocka_unit_test(test_kv_cache_equals_full_recompute),
        cmocka_unit_test(test_loader_prefix_and_tied_proj_out),
        cmocka_unit_test(test_loader_errors),
        cmocka_unit_test(test_builder_errors),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    tg_test_remove_tree(tmp_dir);
    return failed;
}
