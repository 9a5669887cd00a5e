/* test_train_step.c — the Whisper training step (models/whisper_train.c)
 * on the tiny checkpoint (tests/data/whisper/tiny: d_model 64, 2+2 layers,
 * 50 encoder positions, vocabulary 100):
 *  - the step compiled for the device gives the interpreter's loss,
 *    gradient norm and updated weights;
 *  - the frozen encoder position table (and with freeze_encoder every
 *    encoder weight) is left unchanged, every other weight moves;
 *  - fused attention (tg_attention) gives the primitive build's loss and
 *    gradients;
 *  - ten steps on one batch lower the loss;
 *  - the learning-rate schedule and the weight initialisation. */
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

#include "test_checks.h"

#include "models/whisper_train.h"
#include "test_util.h"

#define TINY TG_TEST_DATA_DIR "/whisper/tiny"
#define B 2
#define T 8

static tg_whisper_config cfg;
static tg_device *dev;
static char cache[256];

static int setup(void **state) {
    (void)state;
    if (tg_whisper_config_load(TINY, &cfg) != TG_OK) return -1;
    tg_test_cache_dir(cache, sizeof cache, "tg-train-step");
    if (tg_device_open(-1, &dev) != TG_OK) dev = NULL;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tg_device_free(dev);
    tg_test_remove_tree(cache);
    return 0;
}

static tg_store *load_tiny(void) {
    tg_store *s = tg_store_new();
    tg_safetensors *st = NULL;
    OK(tg_safetensors_open(TINY "/model.safetensors", &st));
    OK(tg_whisper_load_weights(s, &cfg, st, TG_F32));
    tg_safetensors_close(st);
    return s;
}

/* A fixed batch: smooth pseudo-random mels, a prompt, tokens, padding. */
static float mel[B * 80 * 100];
static int32_t tokens[B * T], labels[B * T];

static void make_batch(void) {
    uint32_t s = 12345;
    for (int i = 0; i < B * 80 * 100; i++) {
        s = s * 1664525u + 1013904223u;
        mel[i] = (float)((s >> 8) % 2000) / 1000.0f - 1.0f;
    }
    /* row 0: 7 labels; row 1: 4 labels, then padding (-100) */
    const int32_t seq0[9] = {20, 21, 25, 29, 40, 41, 42, 43, 19};
    const int32_t seq1[6] = {20, 21, 25, 29, 50, 19};
    for (int t = 0; t < T; t++) {
        tokens[t] = seq0[t];
        labels[t] = seq0[t + 1];
        tokens[T + t] = t + 1 < 6 ? seq1[t] : 19;
        labels[T + t] = t + 1 < 6 ? seq1[t + 1] : TG_WHISPER_IGNORE;
    }
}

static bool same(tg_store *a, tg_store *b, const char *name) {
    return tg_test_max_rel_diff(a, b, name) == 0;
}

static void test_device_matches_interpreter(void **state) {
    (void)state;
    if (!dev) skip();
    tg_whisper_train_options o;
    tg_whisper_train_options_default(&o);
    o.batch = B;
    o.n_tokens = T;
    o.max_grad_norm = 0.5; /* the tiny model's gradients are larger: clipping is active */
    tg_store *si = load_tiny(), *sd = load_tiny(), *orig = load_tiny();
    tg_whisper_trainer *ti, *td;
    OK(tg_whisper_trainer_new(&cfg, &o, si, NULL, &ti));
    OK(tg_whisper_trainer_new(&cfg, &o, sd, dev, &td));
    /* 5 + 15 per encoder layer + 2 (positions frozen), 2 + 24 per decoder layer + 2 */
    assert_int_equal(tg_whisper_trainer_param_count(ti), 4 + 30 + 2 + 2 + 48 + 2);
    double li, ld, gi, gd;
    OK(tg_whisper_trainer_step(ti, mel, tokens, labels, 1e-3f, 1, &li, &gi));
    OK(tg_whisper_trainer_step(td, mel, tokens, labels, 1e-3f, 1, &ld, &gd));
    /* a loss of the random tiny model: finite, of the order of ln(100) */
    if (!(li > 1.0 && li < 20.0)) fail_msg("loss %.4f", li);
    fprintf(stderr, "loss %.6f (interpreter) %.6f (device), grad norm %.6f / %.6f\n", li, ld, gi,
            gd);
    assert_float_equal(ld, li, 1e-4 * li);
    assert_float_equal(gd, gi, 1e-4 * gi);
    assert_true(gi > 0.5); /* clipped */
    for (int i = 0; i < tg_whisper_trainer_param_count(ti); i++) {
        const char *name = tg_whisper_trainer_param_name(ti, i);
        double d = tg_test_max_rel_diff(sd, si, name);
        if (d > 1e-4) fail_msg("%s: device and interpreter differ by %.3g (relative)", name, d);
        if (same(si, orig, name)) fail_msg("%s: not updated", name);
    }
    assert_true(same(si, orig, "model.encoder.embed_positions.weight"));
    assert_true(same(sd, orig, "model.encoder.embed_positions.weight"));
    /* the loss after the step agrees too */
    OK(tg_whisper_trainer_loss(ti, mel, tokens, labels, &li));
    OK(tg_whisper_trainer_loss(td, mel, tokens, labels, &ld));
    assert_float_equal(ld, li, 1e-4 * li);
    tg_whisper_trainer_free(ti);
    tg_whisper_trainer_free(td);
    tg_store_free(si);
    tg_store_free(sd);
    tg_store_free(orig);
}

/* The model from primitives (the default) and from tg_whisper_build_encoder
 * / _decoder give the same loss and gradient norm, on the interpreter. */
static void test_primitive_equals_composite(void **state) {
    (void)state;
    tg_whisper_train_options o;
    tg_whisper_train_options_default(&o);
    o.batch = B;
    o.n_tokens = T;
    assert_true(o.primitive_ops);
    tg_store *s = load_tiny();
    tg_whisper_trainer *tp, *tc;
    OK(tg_whisper_trainer_new(&cfg, &o, s, NULL, &tp));
    o.primitive_ops = false;
    OK(tg_whisper_trainer_new(&cfg, &o, s, NULL, &tc));
    assert_int_equal(tg_whisper_trainer_param_count(tp), tg_whisper_trainer_param_count(tc));
    double lp, lc;
    OK(tg_whisper_trainer_loss(tp, mel, tokens, labels, &lp));
    OK(tg_whisper_trainer_loss(tc, mel, tokens, labels, &lc));
    assert_float_equal(lp, lc, 1e-5 * lc);
    tg_array ep = {0}, ec = {0};
    OK(tg_whisper_trainer_encode(tp, mel, &ep));
    OK(tg_whisper_trainer_encode(tc, mel, &ec));
    for (int64_t i = 0; i < tg_array_count(&ec); i++)
        if (fabs(tg_array_get(&ep, i) - tg_array_get(&ec, i)) > 1e-4)
            fail_msg("encoder output %lld: %.6f vs %.6f", (long long)i, tg_array_get(&ep, i),
                     tg_array_get(&ec, i));
    tg_array_free(&ep);
    tg_array_free(&ec);
    tg_whisper_trainer_free(tp);
    tg_whisper_trainer_free(tc);
    tg_store_free(s);
}

/* The largest difference between two gradients of one weight, relative
 * to the largest magnitude of the first. */
static double grad_rel_diff(const tg_array *a, const tg_array *b) {
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < tg_array_count(a); i++) {
        double x = tg_array_get(a, i), y = tg_array_get(b, i);
        if (fabs(x) > scale) scale = fabs(x);
        if (fabs(x - y) > worst) worst = fabs(x - y);
    }
    return scale > 0 ? worst / scale : worst;
}

/* Fused attention (tg_attention, forced for every attention with
 * fused_attention_min_scores = 1: causal decoder self-attention, cross
 * attention with Tq 8 != Tk 50, encoder self-attention) gives the loss and
 * gradients of matmul + softmax + matmul (the default at this size), on
 * the interpreter and on the device, f32 and (device) f16. */
static void check_fused_attention(tg_device *d, tg_dtype precision, double tol) {
    tg_whisper_train_options o;
    tg_whisper_train_options_default(&o);
    o.batch = B;
    o.n_tokens = T;
    o.precision = precision;
    tg_store *s = load_tiny();
    tg_whisper_trainer *tp, *tf;
    OK(tg_whisper_trainer_new(&cfg, &o, s, d, &tp));
    o.fused_attention_min_scores = 1;
    OK(tg_whisper_trainer_new(&cfg, &o, s, d, &tf));
    int n = tg_whisper_trainer_param_count(tp);
    assert_int_equal(tg_whisper_trainer_param_count(tf), n);
    tg_array *gp = calloc((size_t)n, sizeof *gp), *gf = calloc((size_t)n, sizeof *gf);
    assert_non_null(gp);
    assert_non_null(gf);
    double lp, lf, worst = 0;
    OK(tg_whisper_trainer_gradients(tp, mel, tokens, labels, &lp, gp));
    OK(tg_whisper_trainer_gradients(tf, mel, tokens, labels, &lf, gf));
    const char *worst_name = "";
    for (int i = 0; i < n; i++) {
        double e = grad_rel_diff(&gp[i], &gf[i]);
        if (e > worst) worst = e, worst_name = tg_whisper_trainer_param_name(tp, i);
    }
    fprintf(stderr, "%s %s: loss %.7f primitive, %.7f fused; worst gradient %.3g (%s)\n",
            d ? "device" : "interpreter", tg_dtype_name(precision), lp, lf, worst, worst_name);
    assert_float_equal(lf, lp, tol * lp);
    if (worst > tol)
        fail_msg("%s: fused and primitive gradients differ by %.3g", worst_name, worst);
    for (int i = 0; i < n; i++) {
        tg_array_free(&gp[i]);
        tg_array_free(&gf[i]);
    }
    free(gp);
    free(gf);
    tg_whisper_trainer_free(tp);
    tg_whisper_trainer_free(tf);
    tg_store_free(s);
}

static void test_fused_attention_equals_primitive(void **state) {
    (void)state;
    check_fused_attention(NULL, TG_F32, 1e-5);
    if (!dev) skip();
    check_fused_attention(dev, TG_F32, 1e-4);
    /* f16: the primitive build's scores and values are f16 matmuls, the
     * fused attention's f32 */
    check_fused_attention(dev, TG_F16, 2e-2);
}

static void test_training_lowers_the_loss(void **state) {
    (void)state;
    tg_whisper_train_options o;
    tg_whisper_train_options_default(&o);
    o.batch = B;
    o.n_tokens = T;
    o.freeze_encoder = true;
    tg_store *s = load_tiny(), *orig = load_tiny();
    tg_whisper_trainer *t;
    OK(tg_whisper_trainer_new(&cfg, &o, s, dev, &t));
    assert_int_equal(tg_whisper_trainer_param_count(t), 2 + 48 + 2);
    double first = 0, loss = 0;
    for (int step = 1; step <= 10; step++) {
        OK(tg_whisper_trainer_step(t, mel, tokens, labels, 3e-3f, step, &loss, NULL));
        if (step == 1) first = loss;
    }
    OK(tg_whisper_trainer_loss(t, mel, tokens, labels, &loss));
    if (!(loss < 0.5 * first)) fail_msg("loss %.4f after 10 steps, %.4f before", loss, first);
    assert_true(same(s, orig, "model.encoder.conv1.weight"));
    assert_true(same(s, orig, "model.encoder.layers.1.fc2.weight"));
    assert_false(same(s, orig, "model.decoder.embed_tokens.weight"));
    tg_whisper_trainer_free(t);
    tg_store_free(s);
    tg_store_free(orig);
}

/* Gradient accumulation: the same batch accumulated twice and applied
 * equals one step on it (on the interpreter). */
static void test_accumulation(void **state) {
    (void)state;
    tg_whisper_train_options o;
    tg_whisper_train_options_default(&o);
    o.batch = B;
    o.n_tokens = T;
    tg_store *s1 = load_tiny(), *s2 = load_tiny();
    tg_whisper_trainer *t1, *t2;
    OK(tg_whisper_trainer_new(&cfg, &o, s1, NULL, &t1));
    o.accum_steps = 2;
    OK(tg_whisper_trainer_new(&cfg, &o, s2, NULL, &t2));
    double l1, g1, la, lb, g2;
    OK(tg_whisper_trainer_step(t1, mel, tokens, labels, 1e-3f, 1, &l1, &g1));
    assert_int_equal(tg_whisper_trainer_step(t2, mel, tokens, labels, 1e-3f, 1, NULL, NULL),
                     TG_ERR_INVALID_ARGUMENT);
    OK(tg_whisper_trainer_accumulate(t2, mel, tokens, labels, &la));
    OK(tg_whisper_trainer_accumulate(t2, mel, tokens, labels, &lb));
    OK(tg_whisper_trainer_apply(t2, 1e-3f, 1, &g2));
    assert_float_equal(la, l1, 1e-6 * l1);
    assert_float_equal(lb, l1, 1e-6 * l1);
    assert_float_equal(g2, g1, 1e-5 * g1);
    for (int i = 0; i < tg_whisper_trainer_param_count(t1); i++) {
        const char *name = tg_whisper_trainer_param_name(t1, i);
        double d = tg_test_max_rel_diff(s2, s1, name);
        if (d > 1e-5) fail_msg("%s: accumulated and single step differ by %.3g", name, d);
    }
    /* the accumulators are zero again */
    tg_array a = {0};
    OK(tg_store_get(s2, "model.decoder.layer_norm.weight.grad_acc", &a));
    for (int64_t i = 0; i < tg_array_count(&a); i++) assert_float_equal(tg_array_get(&a, i), 0, 0);
    tg_array_free(&a);
    tg_whisper_trainer_free(t1);
    tg_whisper_trainer_free(t2);
    tg_store_free(s1);
    tg_store_free(s2);
}

static void test_schedule(void **state) {
    (void)state;
    /* warm-up 10 to 1e-3, then linear to 0 at 110 */
    assert_float_equal(tg_whisper_lr_schedule(1, 110, 10, 1e-3, false), 1e-4, 1e-15);
    assert_float_equal(tg_whisper_lr_schedule(10, 110, 10, 1e-3, false), 1e-3, 1e-15);
    assert_float_equal(tg_whisper_lr_schedule(60, 110, 10, 1e-3, false), 5e-4, 1e-15);
    assert_float_equal(tg_whisper_lr_schedule(110, 110, 10, 1e-3, false), 0.0, 1e-15);
    /* cosine: half way is half the peak, a quarter of the way 0.85355 */
    assert_float_equal(tg_whisper_lr_schedule(60, 110, 10, 1e-3, true), 5e-4, 1e-12);
    assert_float_equal(tg_whisper_lr_schedule(35, 110, 10, 1e-3, true),
                       1e-3 * 0.5 * (1 + cos(3.14159265358979 / 4)), 1e-12);
}

static void test_init_weights(void **state) {
    (void)state;
    tg_whisper_config c = cfg;
    tg_store *s = tg_store_new();
    OK(tg_whisper_init_weights(s, &c, 3));
    assert_int_equal(tg_store_count(s), tg_whisper_weight_count(&c));
    tg_array a = {0};
    OK(tg_store_get(s, "model.decoder.layers.0.final_layer_norm.weight", &a));
    for (int i = 0; i < 64; i++) assert_float_equal(tg_array_get(&a, i), 1.0, 0);
    tg_array_free(&a);
    OK(tg_store_get(s, "model.encoder.layers.1.fc1.bias", &a));
    for (int i = 0; i < 128; i++) assert_float_equal(tg_array_get(&a, i), 0.0, 0);
    tg_array_free(&a);
    /* sinusoids: row 0 is sin(0) = 0 then cos(0) = 1 */
    OK(tg_store_get(s, "model.encoder.embed_positions.weight", &a));
    assert_float_equal(tg_array_get(&a, 0), 0.0, 0);
    assert_float_equal(tg_array_get(&a, 32), 1.0, 0);
    tg_array_free(&a);
    /* normal(0, 0.02): the sample standard deviation of 100 x 64 values */
    OK(tg_store_get(s, "model.decoder.embed_tokens.weight", &a));
    double sum = 0, sq = 0;
    int64_t n = tg_array_count(&a);
    for (int64_t i = 0; i < n; i++) {
        sum += tg_array_get(&a, i);
        sq += tg_array_get(&a, i) * tg_array_get(&a, i);
    }
    double sd = sqrt(sq / n - (sum / n) * (sum / n));
    assert_true(fabs(sd - 0.02) < 0.001);
    assert_true(fabs(sum / n) < 0.001);
    tg_array_free(&a);
    tg_store_free(s);
}

int main(void) {
    make_batch();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedule),
        cmocka_unit_test(test_init_weights),
        cmocka_unit_test(test_accumulation),
        cmocka_unit_test(test_primitive_equals_composite),
        cmocka_unit_test(test_fused_attention_equals_primitive),
        cmocka_unit_test(test_device_matches_interpreter),
        cmocka_unit_test(test_training_lowers_the_loss),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
