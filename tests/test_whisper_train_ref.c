/* test_whisper_train_ref.c — tg's Whisper training step on the Vulkan
 * device against an independent PyTorch implementation of transformers'
 * training semantics (tests/reference/whisper_train_ref.py, whose outputs
 * are committed in tests/reference/whisper_train_ref/): a random
 * checkpoint (d_model 32, 2+2 layers, 16 encoder positions, vocabulary
 * 100) and two fixed batches of 3 rows, 10 decoder positions, with padding.
 *  - the first step's loss and the gradient of every trainable weight
 *    (before clipping) within 1e-4 relative, with the model built from
 *    primitives (the default) and from the conv1d/attention composites;
 *  - the same with every attention fused (tg_attention);
 *  - with label smoothing 0.1, the loss and the gradients the reference
 *    kept (expected_smoothing.safetensors), interpreter and device;
 *    smoothing outside [0, 1) is refused;
 *  - 20 AdamW steps (clipping at 2.0, weight decay 0.05 on matrices, tg's
 *    warm-up + linear decay schedule) alternating the batches: every
 *    step's loss and gradient norm, and the loss after the last update,
 *    within 1e-3 relative.
 * Relative errors are max |tg - ref| / max |ref| over a tensor. */
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

#define REF TG_TEST_DATA_DIR "/../reference/whisper_train_ref"

static tg_whisper_config cfg;
static tg_device *dev;
static char cache[256];
static tg_safetensors *expected;
static tg_array mel, tokens, labels; /* [K, B, ...] */
static int n_batches, batch, n_tokens;
static int64_t mel_size, token_size; /* elements per batch */

static int setup(void **state) {
    (void)state;
    if (tg_whisper_config_load(REF, &cfg) != TG_OK) return -1;
    tg_test_cache_dir(cache, sizeof cache, "tg-train-ref");
    if (tg_device_open(-1, &dev) != TG_OK) dev = NULL;
    tg_safetensors *b = NULL;
    if (tg_safetensors_open(REF "/batches.safetensors", &b) != TG_OK) return -1;
    tg_status st = tg_safetensors_read(b, "mel", TG_F32, &mel);
    if (st == TG_OK) st = tg_safetensors_read(b, "tokens", TG_I32, &tokens);
    if (st == TG_OK) st = tg_safetensors_read(b, "labels", TG_I32, &labels);
    tg_safetensors_close(b);
    if (st != TG_OK || tokens.rank != 3) return -1;
    n_batches = (int)tokens.shape[0];
    batch = (int)tokens.shape[1];
    n_tokens = (int)tokens.shape[2];
    mel_size = mel.shape[1] * mel.shape[2] * mel.shape[3];
    token_size = (int64_t)batch * n_tokens;
    return tg_safetensors_open(REF "/expected.safetensors", &expected) == TG_OK ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    tg_safetensors_close(expected);
    tg_array_free(&mel);
    tg_array_free(&tokens);
    tg_array_free(&labels);
    tg_device_free(dev);
    tg_test_remove_tree(cache);
    return 0;
}

static double meta(const char *key) {
    const char *v = tg_safetensors_metadata_get(expected, key);
    if (!v) fail_msg("expected.safetensors: no metadata %s", key);
    return strtod(v, NULL);
}

static tg_store *load_checkpoint(void) {
    tg_store *s = tg_store_new();
    tg_safetensors *st = NULL;
    OK(tg_safetensors_open(REF "/model.safetensors", &st));
    OK(tg_whisper_load_weights(s, &cfg, st, TG_F32));
    tg_safetensors_close(st);
    return s;
}

/* The reference's options (batch, positions, AdamW, clipping). */
static tg_whisper_train_options reference_options(void) {
    tg_whisper_train_options o;
    tg_whisper_train_options_default(&o);
    o.batch = batch;
    o.n_tokens = n_tokens;
    o.weight_decay = meta("weight_decay");
    o.max_grad_norm = meta("max_grad_norm");
    return o;
}

static tg_whisper_trainer *new_trainer(tg_store *s, bool primitive_ops) {
    tg_whisper_train_options o = reference_options();
    o.primitive_ops = primitive_ops;
    tg_whisper_trainer *t = NULL;
    OK(tg_whisper_trainer_new(&cfg, &o, s, dev, &t));
    return t;
}

static const float *mel_of(int k) {
    return (const float *)mel.data + k * mel_size;
}
static const int32_t *tokens_of(int k) {
    return (const int32_t *)tokens.data + k * token_size;
}
static const int32_t *labels_of(int k) {
    return (const int32_t *)labels.data + k * token_size;
}

static double expected_at(const char *name, int i) {
    tg_array a = {0};
    OK(tg_safetensors_read(expected, name, TG_F32, &a));
    assert_true(i < tg_array_count(&a));
    double v = tg_array_get(&a, i);
    tg_array_free(&a);
    return v;
}

/* max |x - ref| / max |ref| */
static double rel_error(const tg_array *x, const tg_array *ref) {
    assert_int_equal(tg_array_count(x), tg_array_count(ref));
    double worst = 0, scale = 0;
    for (int64_t i = 0; i < tg_array_count(ref); i++) {
        double r = tg_array_get(ref, i);
        double d = fabs(tg_array_get(x, i) - r);
        if (d > worst) worst = d;
        if (fabs(r) > scale) scale = fabs(r);
    }
    return scale > 0 ? worst / scale : worst;
}

static int count_gradients_in_reference(void) {
    int n = 0;
    for (int i = 0; i < tg_safetensors_count(expected); i++)
        if (strncmp(tg_safetensors_name(expected, i), "grad.", 5) == 0) n++;
    return n;
}

/* The gradients of trainer t, fresh from the checkpoint. */
static void check_first_step(tg_whisper_trainer *t, bool primitive_ops) {
    int n = tg_whisper_trainer_param_count(t);
    /* every trainable weight of the reference, and only those */
    assert_int_equal(n, count_gradients_in_reference());
    tg_array *grads = calloc((size_t)n, sizeof *grads);
    assert_non_null(grads);
    double loss;
    OK(tg_whisper_trainer_gradients(t, mel_of(0), tokens_of(0), labels_of(0), &loss, grads));
    double ref_loss = expected_at("losses", 0);
    double loss_err = fabs(loss - ref_loss) / fabs(ref_loss);
    double worst = 0;
    const char *worst_name = "";
    for (int i = 0; i < n; i++) {
        const char *name = tg_whisper_trainer_param_name(t, i);
        char key[192];
        snprintf(key, sizeof key, "grad.%s", name);
        tg_array ref = {0};
        OK(tg_safetensors_read(expected, key, TG_F32, &ref));
        double e = rel_error(&grads[i], &ref);
        if (e > worst) {
            worst = e;
            worst_name = name;
        }
        if (e > 1e-4) fail_msg("%s: gradient relative error %.3g", name, e);
        tg_array_free(&ref);
        tg_array_free(&grads[i]);
    }
    fprintf(stderr,
            "%s: loss %.7f (reference %.7f, relative error %.2g); %d gradients, largest relative "
            "error %.2g (%s)\n",
            primitive_ops ? "primitive ops" : "composite ops", loss, ref_loss, loss_err, n, worst,
            worst_name);
    assert_true(loss_err < 1e-4);
    free(grads);
}

/* The primitive-ops trainer (the default) checks the first step's
 * gradients (an executable that updates nothing), then trains: one
 * training executable compiled for both checks. */
static void test_first_step_then_twenty_adamw_steps(void **state) {
    (void)state;
    if (!dev) skip();
    tg_store *s = load_checkpoint();
    tg_whisper_trainer *t = new_trainer(s, true);
    check_first_step(t, true);
    int steps = (int)meta("steps"), warmup = (int)meta("warmup");
    double peak = meta("peak_lr"), worst_loss = 0, worst_norm = 0;
    for (int step = 1; step <= steps; step++) {
        int k = (step - 1) % n_batches;
        float lr = (float)tg_whisper_lr_schedule(step, steps, warmup, peak, false);
        double loss, norm;
        OK(tg_whisper_trainer_step(t, mel_of(k), tokens_of(k), labels_of(k), lr, step, &loss,
                                   &norm));
        double rl = expected_at("losses", step - 1), rn = expected_at("grad_norms", step - 1);
        double el = fabs(loss - rl) / rl, en = fabs(norm - rn) / rn;
        if (el > worst_loss) worst_loss = el;
        if (en > worst_norm) worst_norm = en;
        if (el > 1e-3 || en > 1e-3)
            fail_msg("step %d: loss %.6f (reference %.6f), grad norm %.5f (reference %.5f)", step,
                     loss, rl, norm, rn);
    }
    double final, ref_final = expected_at("final_loss", 0);
    OK(tg_whisper_trainer_loss(t, mel_of(0), tokens_of(0), labels_of(0), &final));
    double ef = fabs(final - ref_final) / ref_final;
    fprintf(stderr,
            "%d steps: loss after them %.6f (reference %.6f, relative error %.2g); largest step "
            "loss error %.2g, grad norm error %.2g\n",
            steps, final, ref_final, ef, worst_loss, worst_norm);
    assert_true(ef < 1e-3);
    tg_whisper_trainer_free(t);
    tg_store_free(s);
}

static void test_first_step_composite(void **state) {
    (void)state;
    if (!dev) skip();
    tg_store *s = load_checkpoint();
    tg_whisper_trainer *t = new_trainer(s, false);
    check_first_step(t, false);
    tg_whisper_trainer_free(t);
    tg_store_free(s);
}

/* Every attention as tg_attention (flash; at the trainer's default bound
 * only attentions of >= 1,000,000 scores per head are): the same first
 * step as the reference. */
static void test_first_step_fused_attention(void **state) {
    (void)state;
    if (!dev) skip();
    tg_store *s = load_checkpoint();
    tg_whisper_train_options o = reference_options();
    o.fused_attention_min_scores = 1;
    tg_whisper_trainer *t = NULL;
    OK(tg_whisper_trainer_new(&cfg, &o, s, dev, &t));
    check_first_step(t, true);
    tg_whisper_trainer_free(t);
    tg_store_free(s);
}

/* Label smoothing against torch's cross_entropy(label_smoothing): the
 * loss and the gradients the reference kept (expected_smoothing), on
 * device `d` (NULL: the interpreter); *max_error receives the largest
 * relative error of the loss and the gradients. */
static void check_label_smoothing(tg_device *d, tg_safetensors *ref, double *max_error) {
    tg_store *s = load_checkpoint();
    tg_whisper_train_options o = reference_options();
    o.label_smoothing = strtod(tg_safetensors_metadata_get(ref, "label_smoothing"), NULL);
    assert_true(o.label_smoothing > 0);
    tg_whisper_trainer *t = NULL;
    OK(tg_whisper_trainer_new(&cfg, &o, s, d, &t));
    int n = tg_whisper_trainer_param_count(t), checked = 0;
    tg_array *grads = calloc((size_t)n, sizeof *grads), ref_loss = {0};
    assert_non_null(grads);
    double loss;
    OK(tg_whisper_trainer_gradients(t, mel_of(0), tokens_of(0), labels_of(0), &loss, grads));
    OK(tg_safetensors_read(ref, "loss", TG_F32, &ref_loss));
    double worst = fabs(loss - tg_array_get(&ref_loss, 0)) / tg_array_get(&ref_loss, 0);
    fprintf(stderr, "label smoothing %g (%s): loss %.7f, reference %.7f\n", o.label_smoothing,
            d ? "device" : "interpreter", loss, tg_array_get(&ref_loss, 0));
    for (int i = 0; i < n; i++) {
        char key[192];
        snprintf(key, sizeof key, "grad.%s", tg_whisper_trainer_param_name(t, i));
        tg_array r = {0};
        if (tg_safetensors_find(ref, key) >= 0) {
            OK(tg_safetensors_read(ref, key, TG_F32, &r));
            double e = rel_error(&grads[i], &r);
            if (e > 1e-4) fail_msg("%s: gradient relative error %.3g", key, e);
            if (e > worst) worst = e;
            checked++;
            tg_array_free(&r);
        }
        tg_array_free(&grads[i]);
    }
    assert_true(checked >= 70); /* the reference keeps 78 */
    *max_error = worst;
    tg_array_free(&ref_loss);
    free(grads);
    tg_whisper_trainer_free(t);
    tg_store_free(s);
}

static void test_label_smoothing(void **state) {
    (void)state;
    tg_safetensors *ref = NULL;
    OK(tg_safetensors_open(REF "/expected_smoothing.safetensors", &ref));
    double ei = 0, ed = 0;
    check_label_smoothing(NULL, ref, &ei);
    if (dev) check_label_smoothing(dev, ref, &ed);
    fprintf(stderr, "largest relative error (loss, gradients): interpreter %.2g, device %.2g\n", ei,
            ed);
    assert_true(ei < 1e-4 && ed < 1e-4);
    tg_safetensors_close(ref);
    /* eps outside [0, 1) is refused with the option's name */
    tg_store *s = load_checkpoint();
    tg_whisper_train_options o = reference_options();
    const double bad[3] = {-0.1, 1.0, NAN};
    for (int i = 0; i < 3; i++) {
        o.label_smoothing = bad[i];
        tg_whisper_trainer *t = NULL;
        assert_int_equal(tg_whisper_trainer_new(&cfg, &o, s, NULL, &t), TG_ERR_INVALID_ARGUMENT);
        assert_null(t);
        assert_non_null(strstr(tg_last_error(), "label_smoothing"));
    }
    tg_store_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_first_step_then_twenty_adamw_steps),
        cmocka_unit_test(test_first_step_composite),
        cmocka_unit_test(test_first_step_fused_attention),
        cmocka_unit_test(test_label_smoothing),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
