/* test_whisper_train_f16.c — mixed precision (models/whisper_train.c,
 * precision TG_F16) on the tiny config (d_model 64, 2+2 layers, 50
 * encoder positions, vocabulary 100), randomly initialised:
 *  - the first f16 step's loss is the f32 step's within 1% (the matmuls
 *    read f16), and the device agrees with the interpreter;
 *  - 200 steps on a small synthetic transcription task (each "letter"
 *    token is a band of Mel bins over a stretch of frames) end within 5%
 *    of the f32 run's loss;
 *  - an injected overflow (loss scale 1e38) is skipped: weights and AdamW
 *    moments unchanged, the scale halved, the skip counted; the scale
 *    falls back by halving and the loss keeps falling afterwards. */
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

#include "models/whisper_train.h"
#include "test_util.h"

#define TINY TG_TEST_DATA_DIR "/whisper/tiny"
#define B 4
#define T 8
#define N_BATCHES 4
#define FRAMES 100

#define OK(x)                                                                                      \
    do {                                                                                           \
        tg_status s_ = (x);                                                                        \
        if (s_ != TG_OK) fail_msg("%s: %s", #x, tg_last_error());                                  \
    } while (0)

static tg_whisper_config cfg;
static tg_device *dev;

/* N_BATCHES batches of B utterances: 2..6 letters (tokens 30..45), each
 * letter a band of 5 Mel bins over 14 frames, the rest of the window at
 * the floor; labels: prompt 20, the letters, end 19. */
static float mel[N_BATCHES][B * 80 * FRAMES];
static int32_t tokens[N_BATCHES][B * T], labels[N_BATCHES][B * T];

static void make_data(void) {
    uint32_t s = 7;
    for (int k = 0; k < N_BATCHES; k++)
        for (int b = 0; b < B; b++) {
            int32_t seq[T + 1];
            int n = 0;
            seq[n++] = 20;
            s = s * 1664525u + 1013904223u;
            int letters = 2 + (int)((s >> 10) % 5);
            float *m = mel[k] + (size_t)b * 80 * FRAMES;
            for (int i = 0; i < 80 * FRAMES; i++) m[i] = -0.8f;
            for (int l = 0; l < letters; l++) {
                s = s * 1664525u + 1013904223u;
                int c = (int)((s >> 10) % 16);
                seq[n++] = 30 + c;
                for (int f = 2 + 14 * l; f < 2 + 14 * l + 12; f++)
                    for (int bin = 5 * c; bin < 5 * c + 5; bin++) m[bin * FRAMES + f] = 1.0f;
            }
            seq[n++] = 19;
            for (int t = 0; t < T; t++) {
                tokens[k][b * T + t] = t + 1 < n ? seq[t] : 19;
                labels[k][b * T + t] = t + 1 < n ? seq[t + 1] : TG_WHISPER_IGNORE;
            }
        }
}

static int setup(void **state) {
    (void)state;
    if (tg_whisper_config_load(TINY, &cfg) != TG_OK) return -1;
    if (tg_device_open(-1, &dev) != TG_OK) dev = NULL;
    make_data();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tg_device_free(dev);
    return 0;
}

static tg_store *random_tiny(void) {
    tg_store *s = tg_store_new();
    OK(tg_whisper_init_weights(s, &cfg, 3));
    return s;
}

static void options(tg_whisper_train_options *o, tg_dtype precision) {
    tg_whisper_train_options_default(o);
    o->batch = B;
    o->n_tokens = T;
    o->precision = precision;
}

static bool same(tg_store *a, tg_store *b, const char *name) {
    tg_array x = {0}, y = {0};
    OK(tg_store_get(a, name, &x));
    OK(tg_store_get(b, name, &y));
    bool eq = tg_array_count(&x) == tg_array_count(&y) &&
              memcmp(x.data, y.data, (size_t)tg_array_count(&x) * sizeof(float)) == 0;
    tg_array_free(&x);
    tg_array_free(&y);
    return eq;
}

static void test_first_step(void **state) {
    (void)state;
    tg_whisper_train_options o;
    options(&o, TG_F32);
    tg_store *s32 = random_tiny(), *s16 = random_tiny(), *si = random_tiny();
    tg_whisper_trainer *t32, *t16, *ti;
    OK(tg_whisper_trainer_new(&cfg, &o, s32, dev, &t32));
    options(&o, TG_F16);
    OK(tg_whisper_trainer_new(&cfg, &o, s16, dev, &t16));
    OK(tg_whisper_trainer_new(&cfg, &o, si, NULL, &ti));
    double l32, l16, li, g32, g16, gi;
    OK(tg_whisper_trainer_step(t32, mel[0], tokens[0], labels[0], 1e-3f, 1, &l32, &g32));
    OK(tg_whisper_trainer_step(t16, mel[0], tokens[0], labels[0], 1e-3f, 1, &l16, &g16));
    OK(tg_whisper_trainer_step(ti, mel[0], tokens[0], labels[0], 1e-3f, 1, &li, &gi));
    fprintf(stderr,
            "first step: loss f32 %.6f, f16 %.6f (interpreter %.6f); grad norm %.5f / %.5f\n", l32,
            l16, li, g32, g16);
    assert_float_equal(l16, l32, 1e-2 * l32);
    assert_float_equal(g16, g32, 5e-2 * g32);
    assert_float_equal(l16, li, 1e-3 * li);
    assert_float_equal(g16, gi, 1e-2 * gi);
    assert_false(tg_whisper_trainer_last_skipped(t16));
    tg_whisper_loss_scaler sc;
    tg_whisper_trainer_get_scaler(t16, &sc);
    assert_float_equal(sc.scale, 65536.0, 0);
    assert_int_equal(sc.good_steps, 1);
    assert_int_equal(sc.skipped, 0);
    tg_whisper_trainer_free(t32);
    tg_whisper_trainer_free(t16);
    tg_whisper_trainer_free(ti);
    tg_store_free(s32);
    tg_store_free(s16);
    tg_store_free(si);
}

/* The mean training loss of the last 20 of `steps` steps over the batches. */
static double train(tg_dtype precision, int steps, tg_whisper_trainer **keep, tg_store **store) {
    tg_whisper_train_options o;
    options(&o, precision);
    tg_store *s = random_tiny();
    tg_whisper_trainer *t;
    OK(tg_whisper_trainer_new(&cfg, &o, s, dev, &t));
    double tail = 0;
    for (int step = 1; step <= steps; step++) {
        double loss;
        float lr = (float)tg_whisper_lr_schedule(step, steps, 20, 3e-3, false);
        int k = (step - 1) % N_BATCHES;
        OK(tg_whisper_trainer_step(t, mel[k], tokens[k], labels[k], lr, step, &loss, NULL));
        if (step > steps - 20) tail += loss / 20;
    }
    if (keep) {
        *keep = t;
        *store = s;
    } else {
        tg_whisper_trainer_free(t);
        tg_store_free(s);
    }
    return tail;
}

static void test_200_steps(void **state) {
    (void)state;
    if (!dev) skip();
    double l32 = train(TG_F32, 200, NULL, NULL);
    tg_whisper_trainer *t16;
    tg_store *s16;
    double l16 = train(TG_F16, 200, &t16, &s16);
    tg_whisper_loss_scaler sc;
    tg_whisper_trainer_get_scaler(t16, &sc);
    fprintf(stderr, "after 200 steps: loss f32 %.5f, f16 %.5f (%+.2f%%); scale %g, %lld skipped\n",
            l32, l16, 100 * (l16 / l32 - 1), sc.scale, (long long)sc.skipped);
    assert_true(l32 < 1.0); /* it learned: ln(100) = 4.6 at the start */
    assert_float_equal(l16, l32, 0.05 * l32);
    tg_whisper_trainer_free(t16);
    tg_store_free(s16);
}

static void test_overflow_is_skipped(void **state) {
    (void)state;
    tg_whisper_train_options o;
    options(&o, TG_F16);
    tg_store *s = random_tiny(), *before = tg_store_new();
    tg_whisper_trainer *t;
    OK(tg_whisper_trainer_new(&cfg, &o, s, dev, &t));
    double loss, gnorm, first = 0;
    for (int step = 1; step <= 5; step++) {
        int k = (step - 1) % N_BATCHES;
        OK(tg_whisper_trainer_step(t, mel[k], tokens[k], labels[k], 2e-3f, step, &loss, NULL));
    }
    /* a copy of every trained weight and moment */
    int np = tg_whisper_trainer_param_count(t);
    for (int i = 0; i < np; i++) {
        const char *w = tg_whisper_trainer_param_name(t, i);
        char nm[256];
        tg_array a = {0};
        OK(tg_store_get(s, w, &a));
        OK(tg_store_set(before, w, &a));
        tg_array_free(&a);
        snprintf(nm, sizeof nm, "%s.adam_m", w);
        OK(tg_store_get(s, nm, &a));
        OK(tg_store_set(before, nm, &a));
        tg_array_free(&a);
        snprintf(nm, sizeof nm, "%s.adam_v", w);
        OK(tg_store_get(s, nm, &a));
        OK(tg_store_set(before, nm, &a));
        tg_array_free(&a);
    }
    tg_whisper_loss_scaler sc = {1e38, 3, 0};
    OK(tg_whisper_trainer_set_scaler(t, &sc));
    OK(tg_whisper_trainer_step(t, mel[1], tokens[1], labels[1], 2e-3f, 6, &loss, &gnorm));
    assert_true(tg_whisper_trainer_last_skipped(t));
    assert_false(isfinite(gnorm));
    assert_true(isfinite(loss));
    tg_whisper_trainer_get_scaler(t, &sc);
    assert_float_equal(sc.scale, 5e37, 1e31);
    assert_int_equal(sc.skipped, 1);
    assert_int_equal(sc.good_steps, 0);
    for (int i = 0; i < np; i++) {
        const char *w = tg_whisper_trainer_param_name(t, i);
        char nm[256];
        if (!same(s, before, w)) fail_msg("%s changed in a skipped step", w);
        snprintf(nm, sizeof nm, "%s.adam_m", w);
        if (!same(s, before, nm)) fail_msg("%s changed in a skipped step", nm);
        snprintf(nm, sizeof nm, "%s.adam_v", w);
        if (!same(s, before, nm)) fail_msg("%s changed in a skipped step", nm);
    }
    /* recovery: the scale halves until the gradients fit f16, then the
     * loss keeps falling */
    int step = 7, skipped_at = -1;
    OK(tg_whisper_trainer_loss(t, mel[0], tokens[0], labels[0], &first));
    for (; step < 400; step++) {
        int k = (step - 1) % N_BATCHES;
        OK(tg_whisper_trainer_step(t, mel[k], tokens[k], labels[k], 2e-3f, step, &loss, NULL));
        if (!tg_whisper_trainer_last_skipped(t)) break;
        skipped_at = step;
    }
    tg_whisper_trainer_get_scaler(t, &sc);
    fprintf(stderr, "overflow: %lld steps skipped, the first good step %d at scale %g\n",
            (long long)sc.skipped, step, sc.scale);
    assert_true(skipped_at > 7 && step < 400);
    assert_true(sc.scale < 1e30 && sc.scale > 1);
    for (int n = 0; n < 40; n++, step++) {
        int k = (step - 1) % N_BATCHES;
        OK(tg_whisper_trainer_step(t, mel[k], tokens[k], labels[k], 2e-3f, step, &loss, NULL));
        assert_false(tg_whisper_trainer_last_skipped(t));
    }
    double after;
    OK(tg_whisper_trainer_loss(t, mel[0], tokens[0], labels[0], &after));
    fprintf(stderr, "loss on batch 0: %.4f before recovery, %.4f 40 steps after\n", first, after);
    assert_true(after < 0.8 * first);
    tg_whisper_trainer_free(t);
    tg_store_free(s);
    tg_store_free(before);
}

/* Growth: after scale_growth_interval good steps the scale doubles. */
static void test_scale_grows(void **state) {
    (void)state;
    tg_whisper_train_options o;
    options(&o, TG_F16);
    o.scale_growth_interval = 3;
    o.loss_scale = 1024;
    tg_store *s = random_tiny();
    tg_whisper_trainer *t;
    OK(tg_whisper_trainer_new(&cfg, &o, s, dev, &t));
    for (int step = 1; step <= 7; step++)
        OK(tg_whisper_trainer_step(t, mel[0], tokens[0], labels[0], 1e-3f, step, NULL, NULL));
    tg_whisper_loss_scaler sc;
    tg_whisper_trainer_get_scaler(t, &sc);
    assert_float_equal(sc.scale, 4096, 0);
    assert_int_equal(sc.good_steps, 1);
    sc.scale = -1;
    assert_int_equal(tg_whisper_trainer_set_scaler(t, &sc), TG_ERR_INVALID_ARGUMENT);
    tg_whisper_trainer_free(t);
    tg_store_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_step),
        cmocka_unit_test(test_scale_grows),
        cmocka_unit_test(test_overflow_is_skipped),
        cmocka_unit_test(test_200_steps),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
