/* test_whisper_decode.c — Whisper decoding (models/whisper_search.c,
 * whisper_transcribe.c) and the transcript writers (frontend/
 * lib_transcript.c) on the tiny random checkpoint of tests/data/whisper/tiny
 * (vocabulary 100 with Whisper's layout: 19 text tokens, <|endoftext|> 19,
 * <|startoftranscript|> 20, languages 21-23, tasks 24-25, <|notimestamps|>
 * 29, timestamps 30-99; its tokenizer.json and generation_config.json are
 * written by tests/reference/whisper_reference.py).
 *
 * Expected tokens come from an independent PyTorch port of openai-whisper's
 * decoding (tiny_decode.json: greedy, beam search, timestamps, language
 * detection, transcribe()'s seeking over 1.5- and 2.3-window inputs),
 * computed in f64 with the full decoder recomputed every step. Checked on
 * the Vulkan device (with the validation layer) and on the interpreter. */
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

#include <cjson/cJSON.h>
#include <cmocka.h>

#include "test_checks.h"
#include "test_util.h"

#include "backend/vk.h"
#include "frontend/npy.h"
#include "frontend/safetensors.h"
#include "frontend/transcript.h"
#include "tg.h"
#include "tg_whisper.h"

#define DATA TG_TEST_DATA_DIR "/whisper/"
#define TINY DATA "tiny"

static tg_device *dev; /* NULL when there is no Vulkan device */
static char tmp_dir[256];
static tg_whisper_config cfg;
static cJSON *expected; /* tiny_decode.json */

static tg_store *load_tiny(tg_dtype dtype) {
    tg_store *s = tg_store_new();
    tg_safetensors *st = NULL;
    OK(tg_safetensors_open(TINY "/model.safetensors", &st));
    OK(tg_whisper_load_weights(s, &cfg, st, dtype));
    tg_safetensors_close(st);
    return s;
}

static const cJSON *get(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) fail_msg("tiny_decode.json: no \"%s\"", key);
    return v;
}

/* Asserts tokens[0..n) equal the JSON array `want`. */
static void assert_tokens(const int32_t *tokens, int n, const cJSON *want, const char *what) {
    int wn = cJSON_GetArraySize(want);
    bool same = wn == n;
    for (int i = 0; same && i < n; i++) same = cJSON_GetArrayItem(want, i)->valueint == tokens[i];
    if (same) return;
    char got[512] = "", exp[512] = "";
    for (int i = 0; i < n && strlen(got) < 480; i++)
        snprintf(got + strlen(got), sizeof got - strlen(got), "%d ", tokens[i]);
    for (int i = 0; i < wn && strlen(exp) < 480; i++)
        snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%d ",
                 cJSON_GetArrayItem(want, i)->valueint);
    fail_msg("%s: got [%s], want [%s]", what, got, exp);
}

/* The encoder output of tiny_mel.npy (2 audios), computed by tg. */
static tg_array encode(tg_device *d, tg_store *s, const tg_whisper_config *c) {
    tg_array mel = tg_test_load_npy(DATA, "tiny_mel.npy"), out = {0};
    tg_graph *g = tg_graph_new();
    tg_tensor x = tg_placeholder(g, "mel", TG_F32, 3, mel.shape);
    tg_tensor y = tg_whisper_build_encoder(g, c, x);
    if (tg_graph_status(g) != TG_OK) fail_msg("%s", tg_graph_error(g));
    tg_feed feed = {x, &mel};
    if (d) {
        tg_executable *e = NULL;
        OK(tg_compile(d, g, s, 1, &y, 0, NULL, NULL, &e));
        OK(tg_run(e, 1, &feed, &out));
        tg_executable_free(e);
    } else {
        OK(tg_interpret(g, s, 1, &feed, 1, &y, &out, 0, NULL, 0));
    }
    tg_graph_free(g);
    tg_array_free(&mel);
    return out;
}

static void options_of(const cJSON *json, tg_whisper_decode_options *o) {
    tg_whisper_decode_options_default(o);
    o->beam_size = get(json, "beam_size")->valueint;
    o->translate = cJSON_IsTrue(get(json, "translate"));
    o->timestamps = cJSON_IsTrue(get(json, "timestamps"));
    o->language = tg_whisper_language_id(&cfg, "en");
}

/* ---- the tiny vocabulary ---- */

static void test_tokenizer_and_layout(void **state) {
    (void)state;
    assert_int_equal(cfg.decoder_start_token_id, 20);
    assert_int_equal(cfg.eos_token_id, 19);
    assert_int_equal(cfg.no_timestamps_token_id, 29);
    assert_int_equal(cfg.n_suppress_tokens, 2);
    assert_int_equal(tg_whisper_language_id(&cfg, "de"), 22);
    tg_tokenizer *tok = NULL;
    OK(tg_tokenizer_load(TINY, &tok));
    assert_int_equal(tg_tokenizer_token_id(tok, "<|endoftext|>"), 19);
    assert_int_equal(tg_tokenizer_token_id(tok, "<|startoftranscript|>"), 20);
    assert_int_equal(tg_tokenizer_token_id(tok, "<|notimestamps|>"), 29);
    assert_int_equal(tg_tokenizer_timestamp_id(tok, 0.0), 30);
    assert_int_equal(tg_tokenizer_timestamp_id(tok, 1.38), 99);
    const char *s = "the cat, the hat.";
    int32_t *ids = NULL;
    int n = 0;
    OK(tg_tokenizer_encode(tok, s, strlen(s), 0, &ids, &n));
    char *back = NULL;
    size_t len = 0;
    OK(tg_tokenizer_decode(tok, ids, n, 0, &back, &len));
    assert_string_equal(back, s);
    free(ids);
    free(back);
    tg_tokenizer_free(tok);
}

/* ---- decoding against the reference ---- */

static void check_case(tg_device *d, const char *name) {
    const cJSON *c = get(get(expected, "cases"), name);
    tg_whisper_decode_options o;
    options_of(get(c, "options"), &o);
    tg_store *s = load_tiny(TG_F32);
    tg_array enc = encode(d, s, &cfg);
    tg_whisper_decoder *dec = NULL;
    OK(tg_whisper_decoder_new(&cfg, s, d, 2 * o.beam_size, cfg.max_target_positions, &dec));
    tg_whisper_decoding r[2];
    OK(tg_whisper_decode(dec, &enc, &o, NULL, r));
    for (int a = 0; a < 2; a++) {
        char what[96];
        snprintf(what, sizeof what, "%s row %d (%s)", name, a, d ? "vulkan" : "interpreter");
        assert_tokens(r[a].tokens, r[a].n_tokens, cJSON_GetArrayItem(get(c, "tokens"), a), what);
        double want = cJSON_GetArrayItem(get(c, "sum_logprob"), a)->valuedouble;
        if (fabs(r[a].sum_logprob - want) > 1e-3 * (1 + fabs(want)))
            fail_msg("%s: sum_logprob %g, want %g", what, r[a].sum_logprob, want);
        /* suppress_tokens (3, 11) never appear */
        for (int i = 0; i < r[a].n_tokens; i++)
            assert_true(r[a].tokens[i] != 3 && r[a].tokens[i] != 11);
        assert_int_equal(r[a].language, 21);
        tg_whisper_decoding_free(&r[a]);
    }
    /* one executable for every step, whatever the beam */
    if (d) assert_int_equal(tg_whisper_decoder_step_compiles(dec), 1);
    tg_whisper_decoder_free(dec);
    tg_array_free(&enc);
    tg_store_free(s);
    tg_test_check_validation(dev);
}

static void test_greedy(void **state) {
    (void)state;
    check_case(dev, "greedy");
    check_case(NULL, "greedy");
}

static void test_beam_search(void **state) {
    (void)state;
    check_case(dev, "beam3");
    check_case(dev, "beam5_translate");
    check_case(NULL, "beam3");
}

static void test_timestamps(void **state) {
    (void)state;
    check_case(dev, "greedy_timestamps");
    check_case(dev, "beam3_timestamps");
}

static void test_language_detection(void **state) {
    (void)state;
    const cJSON *c = get(get(expected, "cases"), "language");
    tg_store *s = load_tiny(TG_F32);
    tg_array enc = encode(dev, s, &cfg);
    tg_whisper_decoder *dec = NULL;
    OK(tg_whisper_decoder_new(&cfg, s, dev, 2, cfg.max_target_positions, &dec));
    OK(tg_whisper_decoder_set_audio(dec, &enc));
    int32_t ids[2];
    double probs[2];
    OK(tg_whisper_detect_language(dec, ids, probs));
    for (int a = 0; a < 2; a++) {
        assert_int_equal(ids[a], cJSON_GetArrayItem(get(c, "ids"), a)->valueint);
        assert_true(fabs(probs[a] - cJSON_GetArrayItem(get(c, "probs"), a)->valuedouble) < 1e-4);
    }
    /* language -1: decode detects it and uses it in the prompt */
    tg_whisper_decode_options o;
    tg_whisper_decode_options_default(&o);
    tg_whisper_decoding r[2];
    OK(tg_whisper_decode(dec, &enc, &o, NULL, r));
    const cJSON *want = get(get(get(expected, "cases"), "greedy"), "tokens");
    for (int a = 0; a < 2; a++) {
        assert_int_equal(r[a].language, ids[a]);
        assert_true(fabs(r[a].language_prob - probs[a]) < 1e-6);
        assert_tokens(r[a].tokens, r[a].n_tokens, cJSON_GetArrayItem(want, a), "detected en");
        tg_whisper_decoding_free(&r[a]);
    }
    tg_whisper_decoder_free(dec);
    tg_array_free(&enc);
    tg_store_free(s);
    tg_test_check_validation(dev);
}

/* beam_size 1 without filters is tg_whisper_greedy with the same prompt. */
static void test_beam1_equals_greedy(void **state) {
    (void)state;
    tg_store *s = load_tiny(TG_F32);
    tg_array enc = encode(dev, s, &cfg);
    int len = cfg.max_target_positions;
    tg_whisper_decoder *dec = NULL;
    OK(tg_whisper_decoder_new(&cfg, s, dev, 2, len, &dec));
    tg_whisper_decode_options o;
    tg_whisper_decode_options_default(&o);
    o.language = 22;
    o.suppress_blank = o.suppress_tokens = false;
    o.sample_len = 28;
    tg_whisper_decoding r[2];
    OK(tg_whisper_decode(dec, &enc, &o, NULL, r));
    int32_t prompt[8] = {20, 22, 25, 29, 20, 22, 25, 29};
    int32_t out[2 * 32];
    int lengths[2];
    OK(tg_whisper_greedy(dec, prompt, 4, cfg.eos_token_id, out, lengths));
    for (int a = 0; a < 2; a++) {
        int n = lengths[a] - 4 - (out[a * len + lengths[a] - 1] == cfg.eos_token_id);
        assert_int_equal(r[a].n_tokens, n);
        assert_memory_equal(r[a].tokens, out + a * len + 4, (size_t)n * sizeof(int32_t));
        tg_whisper_decoding_free(&r[a]);
    }
    tg_whisper_decoder_free(dec);
    tg_array_free(&enc);
    tg_store_free(s);
}

/* Tokens greedy decoding picks disappear when suppressed. */
static void test_suppress_tokens(void **state) {
    (void)state;
    tg_whisper_config c = cfg;
    c.n_suppress_tokens = 3;
    c.suppress_tokens[0] = 17;
    c.suppress_tokens[1] = 2; /* "e" */
    c.suppress_tokens[2] = 33;
    tg_store *s = load_tiny(TG_F32);
    tg_array enc = encode(dev, s, &c);
    tg_whisper_decoder *dec = NULL;
    OK(tg_whisper_decoder_new(&c, s, dev, 2, c.max_target_positions, &dec));
    tg_whisper_decode_options o;
    tg_whisper_decode_options_default(&o);
    o.language = 21;
    tg_whisper_decoding r[2];
    OK(tg_whisper_decode(dec, &enc, &o, NULL, r));
    for (int a = 0; a < 2; a++) {
        assert_true(r[a].n_tokens > 0);
        for (int i = 0; i < r[a].n_tokens; i++)
            if (r[a].tokens[i] == 17 || r[a].tokens[i] == 2 || r[a].tokens[i] == 33)
                fail_msg("row %d token %d is %d", a, i, r[a].tokens[i]);
        tg_whisper_decoding_free(&r[a]);
    }
    /* beam search too */
    tg_whisper_decoder_free(dec);
    OK(tg_whisper_decoder_new(&c, s, dev, 6, c.max_target_positions, &dec));
    o.beam_size = 3;
    OK(tg_whisper_decode(dec, &enc, &o, NULL, r));
    for (int a = 0; a < 2; a++) {
        for (int i = 0; i < r[a].n_tokens; i++)
            assert_true(r[a].tokens[i] != 17 && r[a].tokens[i] != 2 && r[a].tokens[i] != 33);
        tg_whisper_decoding_free(&r[a]);
    }
    tg_whisper_decoder_free(dec);
    tg_array_free(&enc);
    tg_store_free(s);
}

/* ---- the timestamp rules and segments, on hand-made logits ---- */

static void test_timestamp_rules(void **state) {
    (void)state;
    tg_whisper_decode_options o;
    tg_whisper_decode_options_default(&o);
    o.timestamps = true;
    float l[100];
    int32_t t[16] = {20, 21, 25};
    /* at the start: only timestamps <= 1.00 s (30 .. 80) */
    for (int i = 0; i < 100; i++) l[i] = 0;
    tg_whisper_filter_logits(&cfg, &o, t, 3, 3, l);
    for (int i = 0; i < 100; i++) assert_true((isinf(l[i]) != 0) == (i < 30 || i > 80));
    /* after an opening timestamp <|0.10|> (35): no timestamp; suppressed:
     * 3 and 11 (suppress_tokens), <|startoftranscript|>, the tasks,
     * <|startoflm|>, <|startofprev|>, <|nospeech|>, <|notimestamps|> */
    t[3] = 35;
    for (int i = 0; i < 100; i++) l[i] = i < 19 ? 1.0f : 0.0f;
    tg_whisper_filter_logits(&cfg, &o, t, 4, 3, l);
    for (int i = 0; i < 100; i++)
        assert_true((isinf(l[i]) != 0) == (i == 3 || i == 11 || i == 20 || i >= 24));
    /* text then a closing timestamp: eot or timestamps >= the last */
    t[4] = 7;
    t[5] = 40;
    for (int i = 0; i < 100; i++) l[i] = i == 19 ? 10.0f : 0.0f; /* eot likeliest */
    tg_whisper_filter_logits(&cfg, &o, t, 6, 3, l);
    for (int i = 0; i < 100; i++)
        assert_true((isinf(l[i]) != 0) == (i < 19 || i == 20 || (i >= 24 && i < 40)));
    /* a pair completed: no timestamp next */
    t[6] = 40;
    for (int i = 0; i < 100; i++) l[i] = 0;
    tg_whisper_filter_logits(&cfg, &o, t, 7, 3, l);
    for (int i = 30; i < 100; i++) assert_true(isinf(l[i]));
    assert_false(isinf(l[5]));
    /* the timestamps' total probability wins over the best text token */
    t[6] = 8;
    for (int i = 0; i < 100; i++) l[i] = i >= 30 ? 0.0f : -100.0f;
    l[5] = 2.0f; /* exp(2) = 7.4 < 60 timestamps * exp(0) */
    tg_whisper_filter_logits(&cfg, &o, t, 7, 3, l);
    assert_true(isinf(l[5]));
    assert_false(isinf(l[45]));
}

static void test_split_segments(void **state) {
    (void)state;
    tg_whisper_segment *s = NULL;
    int n = 0, adv = 0;
    /* <0.00> a b <0.40><0.40> c <0.80>: a pair then a lone last timestamp */
    int32_t t1[] = {30, 3, 4, 50, 50, 5, 70};
    OK(tg_whisper_split_segments(&cfg, t1, 7, 10.0, 100, &s, &n, &adv));
    assert_int_equal(n, 2);
    assert_true(fabs(s[0].start - 10.0) < 1e-9 && fabs(s[0].end - 10.4) < 1e-9);
    assert_int_equal(s[0].first, 0);
    assert_int_equal(s[0].n_tokens, 4);
    assert_true(fabs(s[1].start - 10.4) < 1e-9 && fabs(s[1].end - 10.8) < 1e-9);
    assert_int_equal(s[1].n_tokens, 3);
    assert_int_equal(adv, 100); /* single timestamp ending: the whole window */
    free(s);
    /* ... <0.40><0.40> c: seek to the last pair (0.40 s = 40 frames) */
    int32_t t2[] = {30, 3, 50, 50, 5};
    OK(tg_whisper_split_segments(&cfg, t2, 5, 0.0, 100, &s, &n, &adv));
    assert_int_equal(n, 1);
    assert_int_equal(adv, 40);
    free(s);
    /* no pair: one segment to the last timestamp, seek by the window */
    int32_t t3[] = {30, 3, 4, 62};
    OK(tg_whisper_split_segments(&cfg, t3, 4, 2.0, 75, &s, &n, &adv));
    assert_int_equal(n, 1);
    assert_true(fabs(s[0].end - 2.64) < 1e-9);
    assert_int_equal(adv, 75);
    free(s);
    /* no timestamps at all: the segment lasts the window */
    int32_t t4[] = {3, 4};
    OK(tg_whisper_split_segments(&cfg, t4, 2, 1.0, 50, &s, &n, &adv));
    assert_int_equal(n, 1);
    assert_true(fabs(s[0].end - 1.5) < 1e-9);
    free(s);
}

/* ---- transcribing long inputs, batched ---- */

static tg_array long_mel(int file) {
    tg_array all = tg_test_load_npy(DATA, "tiny_long_mel.npy"), one = {0};
    int64_t shape[2] = {all.shape[1], all.shape[2]};
    OK(tg_array_alloc(&one, TG_F32, 2, shape));
    size_t n = (size_t)(shape[0] * shape[1]);
    memcpy(one.data, (float *)all.data + file * n, n * sizeof(float));
    tg_array_free(&all);
    return one;
}

static void check_transcript(const tg_whisper_transcript *t, const cJSON *want, const char *what) {
    assert_int_equal(t->n_windows, get(want, "windows")->valueint);
    const cJSON *segs = get(want, "segments");
    assert_int_equal(t->n_segments, cJSON_GetArraySize(segs));
    for (int i = 0; i < t->n_segments; i++) {
        const cJSON *s = cJSON_GetArrayItem(segs, i);
        assert_true(fabs(t->segments[i].start - get(s, "start")->valuedouble) < 1e-6);
        assert_true(fabs(t->segments[i].end - get(s, "end")->valuedouble) < 1e-6);
        assert_tokens(t->segments[i].tokens, t->segments[i].n_tokens, get(s, "tokens"), what);
    }
}

static void test_long_form_batched(void **state) {
    (void)state;
    tg_store *s = load_tiny(TG_F32);
    tg_array mels[2] = {long_mel(0), long_mel(1)};
    const cJSON *contents = get(expected, "long_contents");
    int64_t content[2] = {cJSON_GetArrayItem(contents, 0)->valueint,
                          cJSON_GetArrayItem(contents, 1)->valueint};
    const char *names[2] = {"greedy", "greedy_timestamps"};
    for (int k = 0; k < 2; k++) {
        tg_whisper_decode_options o;
        tg_whisper_decode_options_default(&o);
        o.language = 21;
        o.timestamps = k == 1;
        const cJSON *want = get(get(expected, "long"), names[k]);
        /* both files in one batch */
        tg_whisper_transcriber *tr = NULL;
        OK(tg_whisper_transcriber_new(&cfg, s, dev, 2, 1, cfg.max_target_positions, &tr));
        tg_whisper_transcript both[2];
        OK(tg_whisper_transcribe(tr, 2, mels, content, &o, NULL, NULL, both));
        tg_whisper_transcriber_free(tr);
        /* each alone */
        OK(tg_whisper_transcriber_new(&cfg, s, dev, 1, 1, cfg.max_target_positions, &tr));
        for (int f = 0; f < 2; f++) {
            tg_whisper_transcript alone;
            OK(tg_whisper_transcribe(tr, 1, &mels[f], &content[f], &o, NULL, NULL, &alone));
            check_transcript(&alone, cJSON_GetArrayItem(want, f), names[k]);
            check_transcript(&both[f], cJSON_GetArrayItem(want, f), names[k]);
            assert_int_equal(alone.n_segments, both[f].n_segments);
            tg_whisper_transcript_free(&alone);
            tg_whisper_transcript_free(&both[f]);
        }
        tg_whisper_transcriber_free(tr);
    }
    /* 1.5 windows of content -> 2 windows, 2.3 -> 3 */
    tg_whisper_transcriber *tr = NULL;
    OK(tg_whisper_transcriber_new(&cfg, s, dev, 2, 1, cfg.max_target_positions, &tr));
    tg_whisper_decode_options o;
    tg_whisper_decode_options_default(&o);
    tg_whisper_transcript t[2];
    OK(tg_whisper_transcribe(tr, 2, mels, content, &o, NULL, NULL, t));
    assert_int_equal(t[0].n_windows, 2);
    assert_int_equal(t[1].n_windows, 3);
    assert_int_equal(t[0].language, 21); /* detected on the first window */
    tg_whisper_transcript_free(&t[0]);
    tg_whisper_transcript_free(&t[1]);
    /* audio of 1.5 windows: the log-Mel has content + one window of padding */
    float *audio = calloc(24000, sizeof *audio);
    for (int i = 0; i < 24000; i++) audio[i] = 0.3f * sinf(0.05f * (float)i);
    tg_array mel = {0};
    int64_t frames = 0;
    OK(tg_whisper_transcriber_mel(tr, audio, 24000, &mel, &frames));
    assert_int_equal(frames, 150);
    assert_int_equal(mel.shape[0], 80);
    assert_int_equal(mel.shape[1], 300);
    /* one spectrogram: every value within 2 (80 dB) of the maximum */
    float top = -1e30f, low = 1e30f;
    for (int64_t i = 0; i < tg_array_count(&mel); i++) {
        float v = ((float *)mel.data)[i];
        top = v > top ? v : top;
        low = v < low ? v : low;
    }
    assert_true(top - low <= 2.0f + 1e-5f);
    tg_whisper_transcript one;
    OK(tg_whisper_transcribe(tr, 1, &mel, &frames, &o, NULL, NULL, &one));
    assert_int_equal(one.n_windows, 2);
    tg_whisper_transcript_free(&one);
    tg_array_free(&mel);
    free(audio);
    tg_whisper_transcriber_free(tr);
    tg_array_free(&mels[0]);
    tg_array_free(&mels[1]);
    tg_store_free(s);
    tg_test_check_validation(dev);
}

/* ---- f16 weights ---- */

/* Logits with f16 weights (cast to f32 in the graph) against the f32
 * reference: f16 rounding (relative 2^-11 per weight) moves the logits by
 * about 1e-3 of their size; allowed 1e-2. */
static void check_f16_logits(tg_device *d) {
    tg_whisper_config c = cfg;
    c.weight_dtype = TG_F16;
    tg_store *s = load_tiny(TG_F16);
    tg_array enc = tg_test_load_npy(DATA, "tiny_encoder.npy"),
             ids = tg_test_load_npy(DATA, "tiny_prefix.npy");
    tg_array want = tg_test_load_npy(DATA, "tiny_logits.npy"), got = {0};
    tg_graph *g = tg_graph_new();
    tg_tensor e = tg_placeholder(g, "encoder_out", TG_F32, 3, enc.shape);
    tg_tensor t = tg_placeholder(g, "tokens", TG_I32, 2, ids.shape);
    tg_tensor y = tg_whisper_build_decoder(g, &c, t, e);
    if (tg_graph_status(g) != TG_OK) fail_msg("%s", tg_graph_error(g));
    tg_feed feeds[2] = {{e, &enc}, {t, &ids}};
    if (d) {
        tg_executable *x = NULL;
        OK(tg_compile(d, g, s, 1, &y, 0, NULL, NULL, &x));
        OK(tg_run(x, 2, feeds, &got));
        tg_executable_free(x);
    } else {
        OK(tg_interpret(g, s, 2, feeds, 1, &y, &got, 0, NULL, 0));
    }
    double max_ref = 0, max_err = 0;
    for (int64_t i = 0; i < tg_array_count(&want); i++) {
        double w = tg_array_get(&want, i);
        max_ref = fmax(max_ref, fabs(w));
        max_err = fmax(max_err, fabs(tg_array_get(&got, i) - w));
    }
    printf("# f16 weights logits (%s): max error %.2e of max |ref| %.3g (relative %.2e)\n",
           d ? "vulkan" : "interpreter", max_err, max_ref, max_err / max_ref);
    assert_true(max_err > 0); /* really f16: not bit-equal to f32 */
    assert_true(max_err <= 1e-2 * max_ref);
    /* greedy tokens of the f16 step equal the f32 reference here */
    tg_array prompt = tg_test_load_npy(DATA, "tiny_prompt.npy"),
             greedy = tg_test_load_npy(DATA, "tiny_greedy.npy");
    tg_whisper_decoder *dec = NULL;
    OK(tg_whisper_decoder_new(&c, s, d, 2, 32, &dec));
    OK(tg_whisper_decoder_set_audio(dec, &enc));
    int32_t out[64];
    int lengths[2];
    OK(tg_whisper_greedy(dec, prompt.data, 3, -1, out, lengths));
    int same = 0;
    for (int i = 0; i < 64; i++) same += out[i] == ((int32_t *)greedy.data)[i];
    printf("# f16 greedy: %d of 64 tokens equal the f32 reference\n", same);
    assert_true(same >= 56);
    tg_whisper_decoder_free(dec);
    tg_array_free(&prompt);
    tg_array_free(&greedy);
    tg_array_free(&got);
    tg_array_free(&enc);
    tg_array_free(&ids);
    tg_array_free(&want);
    tg_graph_free(g);
    tg_store_free(s);
    tg_test_check_validation(dev);
}

static void test_f16_weights(void **state) {
    (void)state;
    check_f16_logits(NULL);
    if (dev) check_f16_logits(dev);
}

/* ---- writers ---- */

static tg_whisper_transcript sample_transcript(void) {
    tg_whisper_transcript t = {0};
    t.language = 22;
    t.n_segments = 2;
    t.segments = calloc(2, sizeof *t.segments);
    int32_t a[] = {30, 0, 2, 1, 0, 3, 4, 37}; /* <|0.00|> " te ao" <|0.14|> */
    int32_t b[] = {37, 7, 8, 15, 99};
    t.segments[0] = (tg_whisper_segment){.start = 0.0, .end = 3661.5004, .n_tokens = 8};
    t.segments[1] = (tg_whisper_segment){.start = 3661.5004, .end = 3662.76, .n_tokens = 5};
    t.segments[0].tokens = malloc(sizeof a);
    memcpy(t.segments[0].tokens, a, sizeof a);
    t.segments[1].tokens = malloc(sizeof b);
    memcpy(t.segments[1].tokens, b, sizeof b);
    return t;
}

static void test_writers(void **state) {
    (void)state;
    char buf[32];
    tg_transcript_timestamp(3661.5004, ',', buf, sizeof buf);
    assert_string_equal(buf, "01:01:01,500");
    tg_transcript_timestamp(0.0005, '.', buf, sizeof buf);
    assert_string_equal(buf, "00:00:00.001");
    tg_transcript_timestamp(-3, '.', buf, sizeof buf);
    assert_string_equal(buf, "00:00:00.000");
    tg_transcript_timestamp(59.9996, ',', buf, sizeof buf);
    assert_string_equal(buf, "00:01:00,000");

    tg_tokenizer *tok = NULL;
    OK(tg_tokenizer_load(TINY, &tok));
    tg_whisper_transcript t = sample_transcript();
    char *text = NULL;
    OK(tg_transcript_render(&t, tok, &cfg, "a.wav", TG_TRANSCRIPT_TXT, &text));
    assert_string_equal(text, "te ao\nsh.\n");
    free(text);
    OK(tg_transcript_render(&t, tok, &cfg, "a.wav", TG_TRANSCRIPT_SRT, &text));
    assert_string_equal(text, "1\n00:00:00,000 --> 01:01:01,500\nte ao\n\n"
                              "2\n01:01:01,500 --> 01:01:02,760\nsh.\n\n");
    free(text);
    OK(tg_transcript_render(&t, tok, &cfg, "a.wav", TG_TRANSCRIPT_VTT, &text));
    assert_string_equal(text, "WEBVTT\n\n00:00:00.000 --> 01:01:01.500\nte ao\n\n"
                              "01:01:01.500 --> 01:01:02.760\nsh.\n\n");
    free(text);
    OK(tg_transcript_render(&t, tok, &cfg, "a.wav", TG_TRANSCRIPT_JSON, &text));
    cJSON *j = cJSON_Parse(text);
    assert_non_null(j);
    assert_string_equal(get(j, "text")->valuestring, "te ao sh.");
    assert_string_equal(get(j, "language")->valuestring, "de");
    assert_string_equal(get(j, "file")->valuestring, "a.wav");
    const cJSON *segs = get(j, "segments");
    assert_int_equal(cJSON_GetArraySize(segs), 2);
    const cJSON *s1 = cJSON_GetArrayItem(segs, 1);
    assert_int_equal(get(s1, "id")->valueint, 1);
    assert_true(get(s1, "start")->valuedouble == 3661.5);
    assert_true(get(s1, "end")->valuedouble == 3662.76);
    assert_string_equal(get(s1, "text")->valuestring, "sh.");
    assert_tokens(t.segments[1].tokens, 5, get(s1, "tokens"), "json tokens");
    cJSON_Delete(j);
    free(text);
    tg_transcript_format f;
    assert_true(tg_transcript_format_from_name("vtt", &f) && f == TG_TRANSCRIPT_VTT);
    assert_false(tg_transcript_format_from_name("doc", &f));
    tg_whisper_transcript_free(&t);
    /* no segments: empty text, valid JSON */
    OK(tg_transcript_render(&t, tok, &cfg, NULL, TG_TRANSCRIPT_SRT, &text));
    assert_string_equal(text, "");
    free(text);
    OK(tg_transcript_render(&t, tok, &cfg, NULL, TG_TRANSCRIPT_JSON, &text));
    j = cJSON_Parse(text);
    assert_int_equal(cJSON_GetArraySize(get(j, "segments")), 0);
    cJSON_Delete(j);
    free(text);
    tg_tokenizer_free(tok);
}

static void test_errors(void **state) {
    (void)state;
    tg_store *s = load_tiny(TG_F32);
    tg_array enc = tg_test_load_npy(DATA, "tiny_encoder.npy");
    tg_whisper_decoder *dec = NULL;
    OK(tg_whisper_decoder_new(&cfg, s, NULL, 2, 8, &dec));
    tg_whisper_decode_options o;
    tg_whisper_decode_options_default(&o);
    o.beam_size = 2; /* needs 4 rows */
    tg_whisper_decoding r[2];
    assert_int_equal(tg_whisper_decode(dec, &enc, &o, NULL, r), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_last_error(), "decoder's batch 2"));
    int32_t src[2] = {0, 2};
    assert_int_equal(tg_whisper_decoder_reorder(dec, src), TG_ERR_INVALID_ARGUMENT);
    tg_whisper_decoder_free(dec);
    /* a cache too short for the prompt */
    OK(tg_whisper_decoder_new(&cfg, s, NULL, 2, 4, &dec));
    o.beam_size = 1;
    o.language = 21;
    assert_int_equal(tg_whisper_decode(dec, &enc, &o, NULL, r), TG_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(tg_last_error(), "max_len 4"));
    tg_whisper_decoder_free(dec);
    tg_array_free(&enc);
    tg_store_free(s);
}

static int setup(void **state) {
    (void)state;
    if (tg_whisper_config_load(TINY, &cfg) != TG_OK) {
        fprintf(stderr, "config: %s\n", tg_last_error());
        return -1;
    }
    char *text = NULL;
    size_t len = 0;
    if (tg_read_whole_file(DATA "tiny_decode.json", 1 << 20, &text, &len) != TG_OK) {
        fprintf(stderr, "%s\n", tg_last_error());
        return -1;
    }
    expected = cJSON_Parse(text);
    free(text);
    if (!expected) return -1;
    return tg_test_open_device(&dev, false);
}

static int teardown(void **state) {
    (void)state;
    tg_device_free(dev);
    dev = NULL;
    cJSON_Delete(expected);
    return 0;
}

int main(void) {
    /* the shader cache and the test's files share one temporary directory */
    if (!tg_test_device_env(tmp_dir, sizeof tmp_dir, "tg_test_whisper_decode", false)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenizer_and_layout),
        cmocka_unit_test(test_timestamp_rules),
        cmocka_unit_test(test_split_segments),
        cmocka_unit_test(test_writers),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_beam_search),
        cmocka_unit_test(test_timestamps),
        cmocka_unit_test(test_language_detection),
        cmocka_unit_test(test_beam1_equals_greedy),
        cmocka_unit_test(test_suppress_tokens),
        cmocka_unit_test(test_long_form_batched),
        cmocka_unit_test(test_f16_weights),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    tg_test_remove_tree(tmp_dir);
    return failed;
}
