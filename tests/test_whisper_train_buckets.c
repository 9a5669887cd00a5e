/* test_whisper_train_buckets.c — training on length buckets
 * (models/whisper_train.c, frontend/cli_train.c):
 *  - the frames of a log-Mel window that hold audio (the rest is floor);
 *  - the bucketed data order: every record in exactly one batch per epoch,
 *    each batch from one bucket whose frames hold its records, padding
 *    rows only at a batch's end, batch k a function of (seed, k) alone
 *    (so a resumed run sees the same batches), epochs differ;
 *  - a step on a shorter window (the first rows of the position table)
 *    compiled for the device equals the interpreter's: loss, gradient
 *    norm and updated weights; trainers of two shapes share one store;
 *  - `graph train` with buckets and f16 resumes exactly (every later
 *    step's loss within 1e-6, identical weights), and the checkpoint
 *    keeps the loss scale and the skipped steps. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_checks.h"
#include <sndfile.h>

#include "models/whisper_train.h"
#include "test_util.h"

#define TINY TG_TEST_DATA_DIR "/whisper/tiny"

static tg_whisper_config cfg;
static tg_device *dev;
static char dir[256];

static void write_wav(const char *path, int n, double freq) {
    SF_INFO info = {.samplerate = 16000, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    SNDFILE *f = sf_open(path, SFM_WRITE, &info);
    assert_non_null(f);
    float *x = malloc((size_t)n * sizeof *x);
    for (int i = 0; i < n; i++) x[i] = (float)(0.4 * sin(2 * 3.14159265 * freq * i / 16000.0));
    assert_int_equal(sf_write_float(f, x, n), n);
    sf_close(f);
    free(x);
}

static int setup(void **state) {
    (void)state;
    if (tg_whisper_config_load(TINY, &cfg) != TG_OK) return -1;
    if (tg_device_open(-1, &dev) != TG_OK) dev = NULL;
    if (!tg_test_temp_dir(dir, sizeof dir, "tg-train-buckets")) return -1;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tg_device_free(dev);
    tg_test_remove_tree(dir);
    return 0;
}

static void test_mel_frames_used(void **state) {
    (void)state;
    enum { M = 4, F = 20 };
    float mel[M * F];
    for (int i = 0; i < M * F; i++) mel[i] = -0.5f;
    assert_int_equal(tg_whisper_mel_frames_used(mel, M, F), 1);
    mel[2 * F + 12] = 0.25f; /* bin 2, frame 12 */
    mel[0 * F + 3] = 0.5f;
    assert_int_equal(tg_whisper_mel_frames_used(mel, M, F), 13);
    mel[3 * F + 19] = -0.49f;
    assert_int_equal(tg_whisper_mel_frames_used(mel, M, F), 20);
}

enum { N_REC = 53, BATCH = 4 };

static void test_bucket_order(void **state) {
    (void)state;
    int frames[N_REC], tokens[N_REC];
    uint32_t s = 99;
    for (int r = 0; r < N_REC; r++) {
        s = s * 1664525u + 1013904223u;
        frames[r] = 1 + (int)((s >> 8) % 100);
        if (frames[r] > 40 && frames[r] <= 50) frames[r] -= 10; /* bucket (40, 50] stays empty */
        tokens[r] = 2 + (int)((s >> 20) % 30);
    }
    const int bounds[5] = {17, 33, 40, 50, 100};
    tg_whisper_buckets *b, *b2;
    OK(tg_whisper_buckets_new(N_REC, frames, tokens, 5, bounds, 24, BATCH, 7, &b));
    OK(tg_whisper_buckets_new(N_REC, frames, tokens, 5, bounds, 24, BATCH, 7, &b2));
    int nb = tg_whisper_buckets_count(b);
    assert_int_equal(nb, 4); /* (40, 50] dropped */
    int64_t per_epoch = 0, total = 0;
    int lo[8];
    for (int i = 0; i < nb; i++) {
        int f, t, n;
        tg_whisper_buckets_shape(b, i, &f, &t, &n);
        lo[i] = i ? lo[i - 1] : 0;
        assert_int_equal(t % 8, 0);
        assert_true(t >= 8 && t <= 24);
        per_epoch += (n + BATCH - 1) / BATCH;
        total += n;
        /* the bucket's token length holds its longest label (up to the cap) */
        for (int r = 0; r < N_REC; r++) {
            int prev = 0;
            if (i > 0) tg_whisper_buckets_shape(b, i - 1, &prev, NULL, NULL);
            if (frames[r] > prev && frames[r] <= f) assert_true(tokens[r] <= t || t == 24);
        }
        lo[i] = f;
    }
    assert_int_equal(total, N_REC);
    assert_int_equal(tg_whisper_buckets_per_epoch(b), per_epoch);
    int first_epoch[64 * BATCH];
    for (int epoch = 0; epoch < 3; epoch++) {
        int seen[N_REC] = {0};
        for (int64_t j = 0; j < per_epoch; j++) {
            int64_t k = epoch * per_epoch + j;
            int bucket, idx[BATCH];
            tg_whisper_buckets_batch(b, k, &bucket, idx);
            assert_true(bucket >= 0 && bucket < nb);
            int f, prev = 0;
            tg_whisper_buckets_shape(b, bucket, &f, NULL, NULL);
            if (bucket > 0) tg_whisper_buckets_shape(b, bucket - 1, &prev, NULL, NULL);
            bool padding = false;
            for (int r = 0; r < BATCH; r++) {
                if (idx[r] < 0) {
                    padding = true;
                    continue;
                }
                assert_false(padding); /* padding rows come last */
                assert_true(idx[r] < N_REC);
                seen[idx[r]]++;
                assert_true(frames[idx[r]] <= f && frames[idx[r]] > prev);
            }
            assert_true(idx[0] >= 0);
            if (epoch == 0) memcpy(first_epoch + j * BATCH, idx, sizeof idx);
            if (epoch == 2 && j == 0) assert_memory_not_equal(first_epoch, idx, sizeof idx);
        }
        for (int r = 0; r < N_REC; r++)
            if (seen[r] != 1) fail_msg("epoch %d: record %d in %d batches", epoch, r, seen[r]);
    }
    /* resumable: batch k depends on (seed, k) only, whatever came before */
    for (int64_t k = 3 * per_epoch - 1; k >= 0; k -= 5) {
        int b1, b2i, i1[BATCH], i2[BATCH];
        tg_whisper_buckets_batch(b, k, &b1, i1);
        tg_whisper_buckets_batch(b2, k, &b2i, i2);
        assert_int_equal(b1, b2i);
        assert_memory_equal(i1, i2, sizeof i1);
    }
    tg_whisper_buckets_free(b);
    tg_whisper_buckets_free(b2);
    /* bad arguments */
    const int down[2] = {50, 20};
    assert_int_equal(tg_whisper_buckets_new(N_REC, frames, tokens, 2, down, 24, BATCH, 7, &b),
                     TG_ERR_INVALID_ARGUMENT);
}

static tg_store *random_tiny(void) {
    tg_store *s = tg_store_new();
    OK(tg_whisper_init_weights(s, &cfg, 11));
    return s;
}

/* A batch of 2 for `frames` mel frames and T tokens. */
static void make_batch(int frames, int T, float *mel, int32_t *tokens, int32_t *labels) {
    uint32_t s = 4242;
    for (int i = 0; i < 2 * 80 * frames; i++) {
        s = s * 1664525u + 1013904223u;
        mel[i] = (float)((s >> 8) % 2000) / 1000.0f - 1.0f;
    }
    for (int b = 0; b < 2; b++)
        for (int t = 0; t < T; t++) {
            int len = b == 0 ? T : T / 2;
            tokens[b * T + t] = t < len ? 20 + (3 * t + b) % 60 : 19;
            labels[b * T + t] = t < len ? 20 + (3 * t + b + 3) % 60 : TG_WHISPER_IGNORE;
        }
}

static void test_short_window_step(void **state) {
    (void)state;
    if (!dev) skip();
    enum { POS = 20, T = 8 };
    static float mel[2 * 80 * 2 * POS], full_mel[2 * 80 * 100];
    int32_t tokens[2 * T], labels[2 * T], ftok[2 * 16], flab[2 * 16];
    make_batch(2 * POS, T, mel, tokens, labels);
    make_batch(100, 16, full_mel, ftok, flab);
    tg_whisper_train_options o;
    tg_whisper_train_options_default(&o);
    o.batch = 2;
    o.n_tokens = T;
    o.source_positions = POS;
    o.max_grad_norm = 0.5;
    tg_store *si = random_tiny(), *sd = random_tiny(), *orig = random_tiny();
    tg_whisper_trainer *ti, *td, *tfull;
    OK(tg_whisper_trainer_new(&cfg, &o, si, NULL, &ti));
    OK(tg_whisper_trainer_new(&cfg, &o, sd, dev, &td));
    double li, ld, gi, gd;
    OK(tg_whisper_trainer_step(ti, mel, tokens, labels, 1e-3f, 1, &li, &gi));
    OK(tg_whisper_trainer_step(td, mel, tokens, labels, 1e-3f, 1, &ld, &gd));
    fprintf(stderr, "%d positions: loss %.6f (interpreter) %.6f (device), grad norm %.5f / %.5f\n",
            POS, li, ld, gi, gd);
    assert_true(li > 1.0 && li < 20.0);
    assert_float_equal(ld, li, 1e-4 * li);
    assert_float_equal(gd, gi, 1e-4 * gi);
    for (int i = 0; i < tg_whisper_trainer_param_count(ti); i++) {
        const char *name = tg_whisper_trainer_param_name(ti, i);
        double d = tg_test_max_rel_diff(sd, si, name);
        if (d > 1e-4) fail_msg("%s: device and interpreter differ by %.3g", name, d);
    }
    /* the whole table is kept (frozen), and a full-window trainer on the
     * same store continues from the same weights and moments */
    assert_true(tg_test_max_rel_diff(sd, orig, "model.encoder.embed_positions.weight") == 0);
    tg_array pos = {0};
    OK(tg_store_get(sd, "model.encoder.embed_positions.weight", &pos));
    assert_int_equal(pos.shape[0], cfg.max_source_positions);
    tg_array_free(&pos);
    o.source_positions = 0;
    o.n_tokens = 16;
    OK(tg_whisper_trainer_new(&cfg, &o, sd, dev, &tfull));
    double lf;
    OK(tg_whisper_trainer_step(tfull, full_mel, ftok, flab, 1e-3f, 2, &lf, NULL));
    assert_true(isfinite(lf));
    OK(tg_whisper_trainer_step(td, mel, tokens, labels, 1e-3f, 3, &ld, NULL));
    assert_true(ld < li); /* three steps, two on this batch */
    /* a wrong source length is refused */
    o.source_positions = cfg.max_source_positions + 1;
    tg_whisper_trainer *bad = NULL;
    assert_int_equal(tg_whisper_trainer_new(&cfg, &o, sd, NULL, &bad), TG_ERR_INVALID_ARGUMENT);
    tg_whisper_trainer_free(ti);
    tg_whisper_trainer_free(td);
    tg_whisper_trainer_free(tfull);
    tg_store_free(si);
    tg_store_free(sd);
    tg_store_free(orig);
}

#define COMMON                                                                                     \
    "--train %s/m.jsonl --config %s/config.json --tokenizer bytes --batch-size 3 "                 \
    "--max-tokens 24 --warmup 2 --lr 3e-3 --log-every 1 --seed 5 --buckets 0.15,0.3 "              \
    "--precision f16"

static void test_cli_resume_with_buckets(void **state) {
    (void)state;
    if (!dev) skip();
    char p[512];
    snprintf(p, sizeof p, "%s/m.jsonl", dir);
    FILE *m = fopen(p, "w");
    const char *texts[3] = {"la", "do re mi", "fa so la ti do"};
    for (int i = 0; i < 12; i++) {
        snprintf(p, sizeof p, "%s/c%d.wav", dir, i);
        write_wav(p, (int[]){1800, 4000, 7200}[i % 3] + 40 * i, 200.0 + 90.0 * i);
        fprintf(m, "{\"audio\": \"c%d.wav\", \"text\": \"%s\"}\n", i, texts[i % 3]);
    }
    fclose(m);
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *c = fopen(p, "w");
    fputs("{\"d_model\": 32, \"encoder_layers\": 1, \"decoder_layers\": 1,\n"
          " \"encoder_attention_heads\": 2, \"decoder_attention_heads\": 2,\n"
          " \"encoder_ffn_dim\": 64, \"decoder_ffn_dim\": 64, \"num_mel_bins\": 80,\n"
          " \"max_source_positions\": 25, \"max_target_positions\": 24, \"vocab_size\": 265,\n"
          " \"activation_function\": \"gelu\", \"scale_embedding\": false,\n"
          " \"decoder_start_token_id\": 257, \"eos_token_id\": 256, \"pad_token_id\": 256,\n"
          " \"bos_token_id\": 256}\n",
          c);
    fclose(c);
    /* 8 steps straight (3 buckets x 4 utterances: 12 batches an epoch) */
    assert_int_equal(tg_test_sh("%s train " COMMON " --steps 8 --save-every 4 --keep 5 --out %s/a "
                                "2> %s/a.log",
                                TG_GRAPH_EXE, dir, dir, dir, dir),
                     0);
    assert_int_equal(
        tg_test_sh("grep -q 'buckets: 0.16 s x 8 tokens (4 utterances), 0.30 s x 16 tokens "
                   "(4 utterances), 0.50 s x 24 tokens (4 utterances)' %s/a.log",
                   dir),
        0);
    assert_int_equal(tg_test_sh("mkdir -p %s/b && cp -r %s/a/checkpoint-4 %s/b/", dir, dir, dir),
                     0);
    assert_int_equal(
        tg_test_sh(
            "grep -q '\"loss_scale\":[[:space:]]*65536' %s/b/checkpoint-4/trainer_state.json && "
            "grep -q '\"skipped_steps\":[[:space:]]*0' %s/b/checkpoint-4/trainer_state.json",
            dir, dir),
        0);
    assert_int_equal(
        tg_test_sh("%s train --resume %s/b --save-every 4 --keep 5 --log-every 1 2> %s/b.log",
                   TG_GRAPH_EXE, dir, dir),
        0);
    double a[9], b[9];
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/a", dir);
    snprintf(pb, sizeof pb, "%s/b", dir);
    tg_test_read_losses(pa, a, 8);
    tg_test_read_losses(pb, b, 8);
    for (int s = 5; s <= 8; s++)
        if (isnan(b[s]) || fabs(a[s] - b[s]) > 1e-6)
            fail_msg("step %d: loss %.9g uninterrupted, %.9g resumed", s, a[s], b[s]);
    snprintf(pa, sizeof pa, "%s/a/checkpoint-8/model.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/b/checkpoint-8/model.safetensors", dir);
    assert_true(tg_test_same_file(pa, pb));
    snprintf(pa, sizeof pa, "%s/a/checkpoint-8/optimizer.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/b/checkpoint-8/optimizer.safetensors", dir);
    assert_true(tg_test_same_file(pa, pb));
    /* the progress line and metrics show the scale and the skipped steps */
    assert_int_equal(tg_test_sh("grep -q 'scale 65536  skipped 0' %s/a.log", dir), 0);
    assert_int_equal(
        tg_test_sh("grep -q '\"loss_scale\": 65536, \"skipped_steps\": 0' %s/a/metrics.jsonl", dir),
        0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mel_frames_used),
        cmocka_unit_test(test_bucket_order),
        cmocka_unit_test(test_short_window_step),
        cmocka_unit_test(test_cli_resume_with_buckets),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
