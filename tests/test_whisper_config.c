/* test_whisper_config.c — Whisper presets (the released hyperparameters and
 * vocabulary layouts), reading a Hugging Face model directory
 * (tests/data/whisper_tiny: config.json and generation_config.json in the
 * layout transformers writes), and malformed configs with their messages. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tg_whisper.h"

#define DATA TG_TEST_DATA_DIR "/"

static void assert_contains(const char *msg, const char *want) {
    if (!strstr(msg, want)) fail_msg("message \"%s\" lacks \"%s\"", msg, want);
}

/* ---- presets ---- */

typedef struct expect {
    const char *name;
    int d_model, enc, dec, heads, ffn, mels, vocab;
} expect;

static const expect expected[] = {
    {"tiny", 384, 4, 4, 6, 1536, 80, 51865},
    {"tiny.en", 384, 4, 4, 6, 1536, 80, 51864},
    {"base", 512, 6, 6, 8, 2048, 80, 51865},
    {"base.en", 512, 6, 6, 8, 2048, 80, 51864},
    {"small", 768, 12, 12, 12, 3072, 80, 51865},
    {"small.en", 768, 12, 12, 12, 3072, 80, 51864},
    {"medium", 1024, 24, 24, 16, 4096, 80, 51865},
    {"medium.en", 1024, 24, 24, 16, 4096, 80, 51864},
    {"large-v2", 1280, 32, 32, 20, 5120, 80, 51865},
    {"large-v3", 1280, 32, 32, 20, 5120, 128, 51866},
    {"large-v3-turbo", 1280, 32, 4, 20, 5120, 128, 51866},
    {"openai/whisper-large-v3-turbo", 1280, 32, 4, 20, 5120, 128, 51866},
    {"turbo", 1280, 32, 4, 20, 5120, 128, 51866},
};

static void test_presets(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        const expect *e = &expected[i];
        tg_whisper_config c;
        assert_int_equal(tg_whisper_config_preset(e->name, &c), TG_OK);
        assert_int_equal(c.d_model, e->d_model);
        assert_int_equal(c.encoder_layers, e->enc);
        assert_int_equal(c.decoder_layers, e->dec);
        assert_int_equal(c.encoder_attention_heads, e->heads);
        assert_int_equal(c.decoder_attention_heads, e->heads);
        assert_int_equal(c.encoder_ffn_dim, e->ffn);
        assert_int_equal(c.decoder_ffn_dim, e->ffn);
        assert_int_equal(c.num_mel_bins, e->mels);
        assert_int_equal(c.vocab_size, e->vocab);
        assert_int_equal(c.max_source_positions, 1500);
        assert_int_equal(c.max_target_positions, 448);
        assert_string_equal(c.activation_function, "gelu");
        assert_false(c.scale_embedding);
    }
    assert_int_equal(tg_whisper_preset_count(), 14);
    assert_string_equal(tg_whisper_preset_name(0), "tiny");
    assert_null(tg_whisper_preset_name(14));
    tg_whisper_config c;
    assert_int_equal(tg_whisper_config_preset("huge", &c), TG_ERR_NOT_FOUND);
    assert_contains(tg_last_error(), "unknown Whisper model 'huge' (presets: tiny, tiny.en, base");
}

/* Special token ids of the three vocabulary layouts, as in the released
 * tokenizers and generation configs. */
static void test_vocab_layouts(void **state) {
    (void)state;
    tg_whisper_config c;
    assert_int_equal(tg_whisper_config_preset("tiny", &c), TG_OK);
    assert_true(c.is_multilingual);
    assert_int_equal(c.eos_token_id, 50257);
    assert_int_equal(c.decoder_start_token_id, 50258);
    assert_int_equal(c.translate_token_id, 50358);
    assert_int_equal(c.transcribe_token_id, 50359);
    assert_int_equal(c.no_timestamps_token_id, 50363);
    assert_int_equal(c.n_languages, 99);
    assert_int_equal(tg_whisper_language_id(&c, "en"), 50259);
    assert_int_equal(tg_whisper_language_id(&c, "<|zh|>"), 50260);
    assert_int_equal(tg_whisper_language_id(&c, "su"), 50357);
    assert_int_equal(tg_whisper_language_id(&c, "yue"), -1);
    assert_int_equal(c.n_begin_suppress_tokens, 2);
    assert_int_equal(c.begin_suppress_tokens[0], 220);
    assert_int_equal(c.begin_suppress_tokens[1], 50257);

    assert_int_equal(tg_whisper_config_preset("large-v3", &c), TG_OK);
    assert_int_equal(c.n_languages, 100);
    assert_int_equal(tg_whisper_language_id(&c, "yue"), 50358);
    assert_int_equal(c.translate_token_id, 50359);
    assert_int_equal(c.transcribe_token_id, 50360);
    assert_int_equal(c.no_timestamps_token_id, 50364);

    assert_int_equal(tg_whisper_config_preset("base.en", &c), TG_OK);
    assert_false(c.is_multilingual);
    assert_int_equal(c.n_languages, 0);
    assert_int_equal(c.eos_token_id, 50256);
    assert_int_equal(c.decoder_start_token_id, 50257);
    assert_int_equal(c.no_timestamps_token_id, 50362);
    assert_int_equal(tg_whisper_language_id(&c, "en"), -1);
    /* the timestamps fill the vocabulary: 1501 of them, 0.00 to 30.00 */
    const char *names[] = {"tiny", "base.en", "large-v3"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(tg_whisper_config_preset(names[i], &c), TG_OK);
        assert_int_equal(c.no_timestamps_token_id + 1 + 1501, c.vocab_size);
    }
}

/* ---- a Hugging Face model directory ---- */

static void test_load_directory(void **state) {
    (void)state;
    tg_whisper_config c, p;
    if (tg_whisper_config_load(DATA "whisper_tiny", &c) != TG_OK) fail_msg("%s", tg_last_error());
    assert_int_equal(tg_whisper_config_preset("tiny", &p), TG_OK);
    assert_string_equal(c.name, "");
    assert_int_equal(c.d_model, p.d_model);
    assert_int_equal(c.encoder_layers, p.encoder_layers);
    assert_int_equal(c.decoder_layers, p.decoder_layers);
    assert_int_equal(c.encoder_attention_heads, p.encoder_attention_heads);
    assert_int_equal(c.decoder_ffn_dim, p.decoder_ffn_dim);
    assert_int_equal(c.num_mel_bins, 80);
    assert_int_equal(c.vocab_size, 51865);
    assert_int_equal(c.decoder_start_token_id, 50258);
    assert_int_equal(c.eos_token_id, 50257);
    assert_int_equal(c.pad_token_id, 50257);
    assert_int_equal(c.bos_token_id, 50257);
    assert_true(c.has_generation_config);
    assert_true(c.is_multilingual);
    assert_int_equal(c.no_timestamps_token_id, 50363);
    assert_int_equal(c.transcribe_token_id, 50359);
    assert_int_equal(c.translate_token_id, 50358);
    assert_int_equal(c.n_suppress_tokens, 88);
    assert_int_equal(c.suppress_tokens[0], 1);
    assert_int_equal(c.suppress_tokens[87], 50362);
    assert_int_equal(c.n_begin_suppress_tokens, 2);
    assert_int_equal(c.n_languages, 99);
    /* the file's language ids agree with the preset's layout */
    for (int i = 0; i < p.n_languages; i++)
        assert_int_equal(tg_whisper_language_id(&c, p.languages[i].token), p.languages[i].id);

    /* a directory without generation_config.json */
    char dir[] = "/tmp/tg_cfg_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"d_model\": 8, \"encoder_layers\": 1, \"decoder_layers\": 2, "
          "\"encoder_attention_heads\": 2, \"decoder_attention_heads\": 4, "
          "\"encoder_ffn_dim\": 16, \"decoder_ffn_dim\": 32, \"num_mel_bins\": 80, "
          "\"max_source_positions\": 10, \"max_target_positions\": 12, \"vocab_size\": 300, "
          "\"activation_function\": \"gelu_new\", \"pad_token_id\": null}",
          f);
    fclose(f);
    assert_int_equal(tg_whisper_config_load(dir, &c), TG_OK);
    assert_false(c.has_generation_config);
    assert_int_equal(c.decoder_layers, 2);
    assert_int_equal(c.decoder_ffn_dim, 32);
    assert_string_equal(c.activation_function, "gelu_new");
    assert_int_equal(c.pad_token_id, -1);
    assert_int_equal(c.no_timestamps_token_id, -1);
    unlink(path);
    assert_int_equal(tg_whisper_config_load(dir, &c), TG_ERR_IO);
    assert_contains(tg_last_error(), "config.json: cannot open");
    rmdir(dir);
}

/* ---- malformed configs ---- */

static const char *base_config(void) {
    return "\"d_model\": 8, \"encoder_layers\": 1, \"decoder_layers\": 1, "
           "\"encoder_attention_heads\": 2, \"decoder_attention_heads\": 2, "
           "\"encoder_ffn_dim\": 16, \"decoder_ffn_dim\": 16, \"num_mel_bins\": 80, "
           "\"max_source_positions\": 10, \"max_target_positions\": 12, \"vocab_size\": 300";
}

static void expect_config_error(const char *json, tg_status status, const char *message) {
    tg_whisper_config c;
    c.d_model = 12345;
    tg_status got = tg_whisper_config_parse(json, strlen(json), "model/config.json", &c);
    if (got != status) fail_msg("%s: status %d, want %d: %s", json, got, status, tg_last_error());
    assert_int_equal(c.d_model, 12345); /* untouched on error */
    assert_contains(tg_last_error(), "model/config.json: ");
    assert_contains(tg_last_error(), message);
}

static void test_malformed_config(void **state) {
    (void)state;
    char json[2048];
    expect_config_error("{\"d_model\": ", TG_ERR_PARSE, "not valid JSON");
    expect_config_error("[]", TG_ERR_PARSE, "is an array, not a JSON object");
    expect_config_error("{\"encoder_layers\": 1}", TG_ERR_PARSE, "missing key \"d_model\"");
    struct {
        const char *extra, *message;
        tg_status status;
    } cases[] = {
        {"\"model_type\": \"bert\"", "\"model_type\" is \"bert\", expected \"whisper\"",
         TG_ERR_UNSUPPORTED},
        {"\"activation_function\": \"mish\"", "\"activation_function\" \"mish\" is not supported",
         TG_ERR_UNSUPPORTED},
        {"\"activation_function\": 3", "\"activation_function\" is a number, expected a string",
         TG_ERR_PARSE},
        {"\"scale_embedding\": \"no\"", "\"scale_embedding\" is a string, expected a boolean",
         TG_ERR_PARSE},
        {"\"eos_token_id\": 300", "\"eos_token_id\" is 300, expected 0 to 299", TG_ERR_PARSE},
        {"\"bos_token_id\": \"1\"", "\"bos_token_id\" is a string, expected an integer",
         TG_ERR_PARSE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(json, sizeof json, "{%s, %s}", base_config(), cases[i].extra);
        expect_config_error(json, cases[i].status, cases[i].message);
    }
    /* values replacing one of the base keys (JSON keeps the first) */
    struct {
        const char *first, *message;
    } replaced[] = {
        {"\"d_model\": \"384\"", "\"d_model\" is a string, expected an integer"},
        {"\"d_model\": 7.5", "\"d_model\" is 7.5, expected an integer"},
        {"\"encoder_layers\": 0", "\"encoder_layers\" is 0, expected 1 to 1048576"},
        {"\"decoder_layers\": -2", "\"decoder_layers\" is -2, expected 1 to 1048576"},
        {"\"vocab_size\": 1e12", "\"vocab_size\" is 1000000000000, expected 1 to 1048576"},
        {"\"encoder_attention_heads\": 3",
         "\"d_model\" 8 is not a multiple of \"encoder_attention_heads\" 3"},
        {"\"decoder_attention_heads\": 5",
         "\"d_model\" 8 is not a multiple of \"decoder_attention_heads\" 5"},
        {"\"num_mel_bins\": null", "\"num_mel_bins\" is null, expected an integer"},
    };
    for (size_t i = 0; i < sizeof replaced / sizeof replaced[0]; i++) {
        snprintf(json, sizeof json, "{%s, %s}", replaced[i].first, base_config());
        expect_config_error(json, TG_ERR_PARSE, replaced[i].message);
    }
}

static void test_malformed_generation_config(void **state) {
    (void)state;
    tg_whisper_config c;
    assert_int_equal(tg_whisper_config_preset("tiny", &c), TG_OK);
    struct {
        const char *json, *message;
        tg_status status;
    } cases[] = {
        {"{", "not valid JSON", TG_ERR_PARSE},
        {"{\"suppress_tokens\": 5}", "\"suppress_tokens\" is a number, expected an array",
         TG_ERR_PARSE},
        {"{\"suppress_tokens\": [1, \"2\"]}", "\"suppress_tokens[1]\" is a string, expected",
         TG_ERR_PARSE},
        {"{\"begin_suppress_tokens\": [220, 51865]}",
         "\"begin_suppress_tokens[1]\" is 51865, expected 0 to 51864", TG_ERR_PARSE},
        {"{\"begin_suppress_tokens\": [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]}",
         "\"begin_suppress_tokens\" has 17 entries; tg keeps at most 16", TG_ERR_UNSUPPORTED},
        {"{\"lang_to_id\": [\"<|en|>\"]}", "\"lang_to_id\" is an array, expected an object",
         TG_ERR_PARSE},
        {"{\"lang_to_id\": {\"<|en|>\": -1}}", "\"lang_to_id[\"<|en|>\"]\" is -1, expected 0 to",
         TG_ERR_PARSE},
        {"{\"task_to_id\": {\"transcribe\": true}}",
         "\"transcribe\" is a boolean, expected an integer", TG_ERR_PARSE},
        {"{\"no_timestamps_token_id\": 1.5}", "\"no_timestamps_token_id\" is 1.5", TG_ERR_PARSE},
        {"{\"is_multilingual\": 1}", "\"is_multilingual\" is a number, expected a boolean",
         TG_ERR_PARSE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_whisper_config before = c;
        tg_status got = tg_whisper_generation_config_parse(cases[i].json, strlen(cases[i].json),
                                                           "gen.json", &c);
        if (got != cases[i].status)
            fail_msg("%s: status %d: %s", cases[i].json, got, tg_last_error());
        assert_contains(tg_last_error(), "gen.json: ");
        assert_contains(tg_last_error(), cases[i].message);
        assert_memory_equal(&before, &c, sizeof c); /* unchanged on error */
    }
    /* a valid one overrides the preset's values */
    const char *ok = "{\"suppress_tokens\": [3, 4], \"no_timestamps_token_id\": 7, "
                     "\"lang_to_id\": {\"<|xx|>\": 9}, \"task_to_id\": {\"translate\": 11}}";
    assert_int_equal(tg_whisper_generation_config_parse(ok, strlen(ok), "gen.json", &c), TG_OK);
    assert_int_equal(c.n_suppress_tokens, 2);
    assert_int_equal(c.suppress_tokens[1], 4);
    assert_int_equal(c.no_timestamps_token_id, 7);
    assert_int_equal(c.n_languages, 1);
    assert_int_equal(tg_whisper_language_id(&c, "xx"), 9);
    assert_int_equal(c.translate_token_id, 11);
    assert_int_equal(c.transcribe_token_id, 50359); /* not in the file: kept */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_vocab_layouts),
        cmocka_unit_test(test_load_directory),
        cmocka_unit_test(test_malformed_config),
        cmocka_unit_test(test_malformed_generation_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
