/* test_manifest.c — manifests with bad records, data sets (labels, skips
 * with counted warnings, the log-Mel cache), batches and the loader's
 * deterministic order (frontend/lib_manifest.c). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sndfile.h>

#include "frontend/manifest.h"
#include "models/tokenizer.h"
#include "test_util.h"

#define WINDOW 4800 /* 0.3 s: 30 log-Mel frames */

static void test_parse_bad_records(void **state) {
    (void)state;
    const char *text =
        "{\"audio\": \"a.wav\", \"text\": \"good one\"}\n"
        "\n"                                                  /* blank: ignored */
        "{\"audio\": \"b.wav\", \"text\": \"good two\"}\r\n"
        "not json at all\n"                                   /* 1: not JSON */
        "[1, 2, 3]\n"                                         /* 2: not an object */
        "{\"text\": \"no audio\"}\n"                          /* 3: no audio */
        "{\"audio\": 7, \"text\": \"audio is a number\"}\n"   /* 4: audio not a string */
        "{\"audio\": \"c.wav\"}\n"                            /* 5: no text */
        "{\"audio\": \"d.wav\", \"text\": \"   \"}\n"         /* 6: empty text */
        "{\"audio\": \"\", \"text\": \"empty audio\"}\n"      /* 7: empty audio */
        "{\"audio\": \"e.wav\", \"text\": [\"x\"]}\n"         /* 8: text not a string */
        "{\"audio\": \"f.wav\", \"text\": \"unterminated\"\n" /* 9: broken JSON */
        "{\"audio\": \"/abs/g.wav\", \"text\": \"absolute\"}"; /* no final newline */
    tg_manifest *m;
    assert_int_equal(tg_manifest_parse(text, strlen(text), "/data", "m.jsonl", &m), TG_OK);
    assert_int_equal(m->n, 3);
    assert_int_equal(m->n_skipped, 9);
    assert_int_equal(m->n_warnings, 9);
    assert_string_equal(m->records[0].audio, "/data/a.wav");
    assert_string_equal(m->records[0].text, "good one");
    assert_int_equal(m->records[1].line, 3);
    assert_string_equal(m->records[2].audio, "/abs/g.wav");
    assert_non_null(strstr(m->warnings[0], "m.jsonl:4:"));
    assert_non_null(strstr(m->warnings[0], "not valid JSON"));
    assert_non_null(strstr(m->warnings[5], "empty \"text\""));
    tg_manifest_free(m);

    /* a NUL byte inside a line */
    const char nul[] = "{\"audio\": \"a.wav\", \"text\": \"x\"}\n{\"audio\":\0\"b\"}\n";
    assert_int_equal(tg_manifest_parse(nul, sizeof nul - 1, NULL, NULL, &m), TG_OK);
    assert_int_equal(m->n, 1);
    assert_int_equal(m->n_skipped, 1);
    assert_string_equal(m->records[0].audio, "a.wav");
    tg_manifest_free(m);
}

/* 256 byte tokens and the special tokens, ids as in `graph train
 * --tokenizer bytes`. */
static tg_tokenizer *byte_tokenizer(void) {
    tg_tokenizer *t = tg_tokenizer_new();
    for (int b = 0; b < 256; b++) {
        unsigned char c = (unsigned char)b;
        assert_int_equal(tg_tokenizer_add_token(t, b, &c, 1, 0), TG_OK);
    }
    const char *sp[] = {"<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                        "<|notimestamps|>"};
    for (int i = 0; i < 5; i++)
        assert_int_equal(tg_tokenizer_add_token(t, 256 + i, sp[i], strlen(sp[i]),
                                                TG_TOKEN_ADDED | TG_TOKEN_SPECIAL),
                         TG_OK);
    assert_int_equal(tg_tokenizer_finish(t), TG_OK);
    return t;
}

static void write_wav(const char *path, int n, double freq) {
    SF_INFO info = {.samplerate = 16000, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    SNDFILE *f = sf_open(path, SFM_WRITE, &info);
    assert_non_null(f);
    float *x = malloc((size_t)n * sizeof *x);
    for (int i = 0; i < n; i++) x[i] = (float)(0.5 * sin(2 * 3.14159265 * freq * i / 16000.0));
    assert_int_equal(sf_write_float(f, x, n), n);
    sf_close(f);
    free(x);
}

static void test_dataset(void **state) {
    (void)state;
    char dir[256], p[512], cache[512];
    assert_true(tg_test_temp_dir(dir, sizeof dir, "tg-manifest"));
    snprintf(cache, sizeof cache, "%s/cache", dir);
    snprintf(p, sizeof p, "%s/a.wav", dir);
    write_wav(p, 3000, 440);
    snprintf(p, sizeof p, "%s/b.wav", dir);
    write_wav(p, 4000, 880);
    snprintf(p, sizeof p, "%s/long.wav", dir);
    write_wav(p, WINDOW + 1, 440); /* one sample too long */
    snprintf(p, sizeof p, "%s/broken.wav", dir);
    FILE *f = fopen(p, "w");
    fputs("RIFF....WAVEjunk", f);
    fclose(f);
    const char *text = "{\"audio\": \"a.wav\", \"text\": \"ab\"}\n"
                       "{\"audio\": \"missing.wav\", \"text\": \"x\"}\n"
                       "{\"audio\": \"long.wav\", \"text\": \"x\"}\n"
                       "{\"audio\": \"broken.wav\", \"text\": \"x\"}\n"
                       "{\"audio\": \"a.wav\", \"text\": \"this text is far too long\"}\n"
                       "{\"audio\": \"b.wav\", \"text\": \"cde\"}\n";
    snprintf(p, sizeof p, "%s/m.jsonl", dir);
    f = fopen(p, "w");
    fputs(text, f);
    fclose(f);

    tg_tokenizer *tok = byte_tokenizer();
    tg_manifest *m;
    assert_int_equal(tg_manifest_load(p, &m), TG_OK);
    assert_int_equal(m->n, 6);
    tg_dataset_options o = {.tokenizer = tok,
                            .prompt = {257, 258, 259, 260},
                            .eot = 256,
                            .n_mels = 80,
                            .window_samples = WINDOW,
                            .max_tokens = 12,
                            .dev = NULL,
                            .cache_dir = cache};
    tg_dataset *d;
    assert_int_equal(tg_dataset_build(m, &o, &d), TG_OK);
    assert_int_equal(d->n, 2);
    assert_int_equal(d->n_skipped, 4); /* missing, long, broken, too many tokens */
    assert_int_equal(d->n_warnings, 4);
    assert_false(d->from_cache);
    assert_int_equal(d->frames, 30);
    assert_string_equal(d->texts[1], "cde");
    /* <sot> <en> <transcribe> <notimestamps> c d e <eot> */
    assert_int_equal(d->seq_len[1], 8);
    const int32_t want[8] = {257, 258, 259, 260, 'c', 'd', 'e', 256};
    for (int i = 0; i < 8; i++) assert_int_equal(d->seqs[d->max_tokens + i], want[i]);
    /* log-Mels are normalised: within [-1, 1.5] and not all equal */
    float lo = 1e9f, hi = -1e9f;
    for (int i = 0; i < 2 * 80 * 30; i++) {
        lo = fminf(lo, d->mels[i]);
        hi = fmaxf(hi, d->mels[i]);
    }
    assert_true(lo >= -1.01f && hi <= 1.6f && hi > lo);

    /* a batch: inputs are the sequence shifted right, labels -100 past the end */
    int idx[2] = {1, 0};
    float *mel = malloc(2 * 80 * 30 * sizeof *mel);
    int32_t tokens[2 * 9], labels[2 * 9];
    tg_dataset_batch(d, idx, 2, 9, 256, mel, tokens, labels);
    for (int t = 0; t < 7; t++) {
        assert_int_equal(tokens[t], want[t]);
        assert_int_equal(labels[t], want[t + 1]);
    }
    assert_int_equal(tokens[7], 256);
    assert_int_equal(labels[7], -100);
    assert_int_equal(labels[8], -100);
    assert_int_equal(tokens[9 + 4], 'a');
    assert_memory_equal(mel, d->mels + 80 * 30, 80 * 30 * sizeof(float));

    /* the second build reads the cache and gives the same values */
    tg_dataset *d2;
    assert_int_equal(tg_dataset_build(m, &o, &d2), TG_OK);
    assert_true(d2->from_cache);
    assert_int_equal(d2->n, 2);
    assert_memory_equal(d2->mels, d->mels, 2 * 80 * 30 * sizeof(float));
    tg_dataset_free(d2);

    /* the loader: batches follow the seeded order; a jump gives the same batch */
    tg_loader *l;
    assert_int_equal(tg_loader_new(d, 7, 3, 9, 256, &l), TG_OK);
    const float *bm;
    const int32_t *bt, *bl;
    int32_t first[5][27];
    for (int k = 0; k < 5; k++) {
        assert_int_equal(tg_loader_get(l, 3 * k, &bm, &bt, &bl), TG_OK);
        memcpy(first[k], bt, sizeof first[k]);
    }
    assert_int_equal(tg_loader_get(l, 6, &bm, &bt, &bl), TG_OK);
    assert_memory_equal(bt, first[2], sizeof first[2]);
    tg_loader_free(l);
    /* every epoch is a permutation */
    int perm[2];
    tg_dataset_permutation(d, 7, 3, perm);
    assert_true((perm[0] == 0 && perm[1] == 1) || (perm[0] == 1 && perm[1] == 0));

    free(mel);
    tg_dataset_free(d);
    tg_manifest_free(m);
    tg_tokenizer_free(tok);
    tg_test_remove_tree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_bad_records),
        cmocka_unit_test(test_dataset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
