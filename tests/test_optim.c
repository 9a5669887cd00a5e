/* test_optim.c — the fused optimizer ops against PyTorch's update rules
 * written out here (torch.optim.AdamW and torch.optim.SGD, as documented),
 * step by step for 10 steps on the interpreter with a store, with the
 * learning rate and step fed per run; and global-norm clipping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "tg.h"

#define N 6
#define STEPS 10

/* ---- PyTorch's rules, in double with f32 storage between steps ---- */

/* v rounded to f32. Through a volatile: gcc 12 -O3 drops a (float) cast
 * in a vectorised loop that calls sin(). */
static double f32(double v) {
    volatile float f = (float)v;
    return f;
}

typedef struct adamw_ref {
    double lr, beta1, beta2, eps, weight_decay;
} adamw_ref;

/* torch.optim.AdamW, single tensor, amsgrad off, maximize off. */
static void ref_adamw(const adamw_ref *h, int t, double lr, const double *g, double *w, double *m,
                      double *v) {
    double bias1 = 1 - pow(h->beta1, t), bias2 = 1 - pow(h->beta2, t);
    double step_size = lr / bias1;
    for (int i = 0; i < N; i++) {
        w[i] *= 1 - lr * h->weight_decay;
        m[i] = m[i] * h->beta1 + g[i] * (1 - h->beta1);
        v[i] = v[i] * h->beta2 + g[i] * g[i] * (1 - h->beta2);
        double denom = sqrt(v[i]) / sqrt(bias2) + h->eps;
        w[i] -= step_size * m[i] / denom;
        w[i] = f32(w[i]), m[i] = f32(m[i]), v[i] = f32(v[i]);
    }
}

typedef struct sgd_ref {
    double momentum, dampening, weight_decay;
    bool nesterov;
} sgd_ref;

/* torch.optim.SGD: the momentum buffer is a clone of the gradient at the
 * first step. */
static void ref_sgd(const sgd_ref *h, int t, double lr, const double *grad, double *w,
                    double *buf) {
    for (int i = 0; i < N; i++) {
        double g = grad[i] + h->weight_decay * w[i];
        if (h->momentum != 0) {
            buf[i] = t == 1 ? g : h->momentum * buf[i] + (1 - h->dampening) * g;
            buf[i] = f32(buf[i]);
            g = h->nesterov ? g + h->momentum * buf[i] : buf[i];
        }
        w[i] = f32(w[i] - lr * g);
    }
}

/* ---- helpers ---- */

static const int64_t shape[] = {2, 3};
static double worst_error; /* over every checked value, reported at the end */

static tg_array f32_array(int rank, const int64_t *s, const double *v) {
    tg_array a = {0};
    assert_int_equal(tg_array_alloc(&a, TG_F32, rank, s), TG_OK);
    for (int64_t i = 0; i < tg_array_count(&a); i++) tg_array_set(&a, i, v ? v[i] : 0);
    return a;
}

static void store_set(tg_store *s, const char *name, const double *v) {
    tg_array a = f32_array(2, shape, v);
    assert_int_equal(tg_store_set(s, name, &a), TG_OK);
    tg_array_free(&a);
}

/* The stored variable equals want within 1e-6 relative to the values'
 * scale (0.1 at least: a result near 0 comes from cancelling terms of that
 * size, each rounded to f32 in PyTorch but not in the fused op). */
static void expect_store(tg_store *s, const char *name, const double *want, int step) {
    tg_array a = {0};
    assert_int_equal(tg_store_get(s, name, &a), TG_OK);
    assert_int_equal(tg_array_count(&a), N);
    for (int i = 0; i < N; i++) {
        double got = tg_array_get(&a, i), err = fabs(got - want[i]) / fmax(0.1, fabs(want[i]));
        worst_error = fmax(worst_error, err);
        if (!(err <= 1e-6))
            fail_msg("step %d: %s[%d] = %.9g, expected %.9g", step, name, i, got, want[i]);
    }
    tg_array_free(&a);
}

/* Gradient of step t: values of both signs that change every step, f32
 * like the fed array. */
static void gradient_at(int t, double *g) {
    for (int i = 0; i < N; i++) g[i] = f32(sin(0.7 * t + 1.3 * i) * (1 + 0.3 * i));
}

static const double w0[N] = {0.5, -0.25, 1.5, -1.0, 0.125, 2.0};

/* One run of an update op with gradient, lr and step fed. */
static void run_step(tg_graph *g, tg_store *s, tg_tensor op, tg_tensor grad, tg_tensor lr,
                     tg_tensor step, int t, double lr_t, const double *gv, const double *w_new) {
    tg_array ga = f32_array(2, shape, gv);
    tg_array la = f32_array(0, NULL, &lr_t);
    tg_array sa = {0};
    if (step.id >= 0) {
        assert_int_equal(tg_array_alloc(&sa, tg_tensor_dtype(g, step), 0, NULL), TG_OK);
        tg_array_set(&sa, 0, t);
    }
    tg_feed feeds[3] = {{grad, &ga}, {lr, &la}, {step, &sa}};
    tg_array value = {0};
    int n_feeds = step.id >= 0 ? 3 : 2;
    if (tg_interpret(g, s, n_feeds, feeds, 1, &op, &value, 1, &op, 0) != TG_OK)
        fail_msg("step %d: %s", t, tg_last_error());
    /* the op's value is the new weight */
    for (int i = 0; i < N; i++) assert_true(fabs(tg_array_get(&value, i) - w_new[i]) <= 1e-6);
    tg_array_free(&value);
    tg_array_free(&ga);
    tg_array_free(&la);
    tg_array_free(&sa);
}

/* ---- AdamW ---- */

static void check_adamw(const adamw_ref *h, tg_dtype step_dtype) {
    tg_graph *g = tg_graph_new();
    tg_tensor w = tg_variable(g, "w", TG_F32, 2, shape, true);
    tg_tensor grad = tg_placeholder(g, "grad", TG_F32, 2, shape);
    tg_tensor lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    tg_tensor step = tg_placeholder(g, "step", step_dtype, 0, NULL);
    tg_tensor op = tg_adamw(g, w, grad, lr, step, h->beta1, h->beta2, h->eps, h->weight_decay);
    assert_int_equal(tg_graph_status(g), TG_OK);
    assert_string_equal(tg_tensor_op(g, op), "adamw_update");

    tg_store *s = tg_store_new();
    store_set(s, "w", w0);
    assert_int_equal(tg_store_init_missing(s, g, 5, 1.0), TG_OK); /* moments: zeros */
    double rw[N], rm[N] = {0}, rv[N] = {0}, gv[N];
    memcpy(rw, w0, sizeof rw);
    for (int t = 1; t <= STEPS; t++) {
        double lr_t = f32(h->lr * (1.0 - 0.05 * t)); /* a schedule, fed as f32 */
        gradient_at(t, gv);
        ref_adamw(h, t, lr_t, gv, rw, rm, rv);
        run_step(g, s, op, grad, lr, step, t, lr_t, gv, rw);
        expect_store(s, "w", rw, t);
        expect_store(s, "w.adam_m", rm, t);
        expect_store(s, "w.adam_v", rv, t);
    }
    tg_store_free(s);
    tg_graph_free(g);
}

static void test_adamw(void **state) {
    (void)state;
    adamw_ref h = {.lr = 0.05, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
    check_adamw(&h, TG_I32);
}

static void test_adamw_no_decay_f32_step(void **state) {
    (void)state;
    adamw_ref h = {.lr = 0.1, .beta1 = 0.8, .beta2 = 0.95, .eps = 1e-3, .weight_decay = 0};
    check_adamw(&h, TG_F32);
}

static void test_adamw_strong_decay(void **state) {
    (void)state;
    adamw_ref h = {.lr = 0.02, .beta1 = 0.5, .beta2 = 0.9, .eps = 1e-6, .weight_decay = 0.5};
    check_adamw(&h, TG_I32);
}

/* ---- SGD ---- */

static void check_sgd(const sgd_ref *h) {
    tg_graph *g = tg_graph_new();
    tg_tensor w = tg_variable(g, "w", TG_F32, 2, shape, true);
    tg_tensor grad = tg_placeholder(g, "grad", TG_F32, 2, shape);
    tg_tensor lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    tg_tensor step = h->momentum != 0 ? tg_placeholder(g, "step", TG_I32, 0, NULL) : TG_INVALID;
    tg_tensor op =
        tg_sgd(g, w, grad, lr, step, h->momentum, h->dampening, h->nesterov, h->weight_decay);
    if (tg_graph_status(g) != TG_OK) fail_msg("%s", tg_graph_error(g));

    tg_store *s = tg_store_new();
    store_set(s, "w", w0);
    /* a stale buffer: step 1 must overwrite it with the gradient */
    double junk[N] = {9, 9, 9, 9, 9, 9};
    if (h->momentum != 0) store_set(s, "w.sgd_momentum", junk);
    double rw[N], rbuf[N], gv[N];
    memcpy(rw, w0, sizeof rw);
    for (int t = 1; t <= STEPS; t++) {
        double lr_t = f32(0.1 / t);
        gradient_at(t, gv);
        ref_sgd(h, t, lr_t, gv, rw, rbuf);
        run_step(g, s, op, grad, lr, step, t, lr_t, gv, rw);
        expect_store(s, "w", rw, t);
        if (h->momentum != 0) expect_store(s, "w.sgd_momentum", rbuf, t);
    }
    assert_int_equal(tg_store_count(s), h->momentum != 0 ? 2 : 1);
    tg_store_free(s);
    tg_graph_free(g);
}

static void test_sgd_plain(void **state) {
    (void)state;
    check_sgd(&(sgd_ref){0});
}

static void test_sgd_weight_decay(void **state) {
    (void)state;
    check_sgd(&(sgd_ref){.weight_decay = 0.1});
}

static void test_sgd_momentum_dampening(void **state) {
    (void)state;
    check_sgd(&(sgd_ref){.momentum = 0.9, .dampening = 0.3, .weight_decay = 0.01});
}

static void test_sgd_nesterov(void **state) {
    (void)state;
    check_sgd(&(sgd_ref){.momentum = 0.8, .nesterov = true, .weight_decay = 0.05});
}

/* ---- errors ---- */

static void test_optimizer_errors(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor w = tg_variable(g, "w", TG_F32, 2, shape, true);
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, shape);
    tg_tensor lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    tg_tensor step = tg_placeholder(g, "step", TG_I32, 0, NULL);
    /* nesterov without momentum */
    assert_int_equal(tg_sgd(g, w, x, lr, step, 0, 0, true, 0).id, -1);
    assert_non_null(strstr(tg_graph_error(g), "nesterov"));
    tg_graph_free(g);

    g = tg_graph_new();
    w = tg_variable(g, "w", TG_F32, 2, shape, true);
    x = tg_placeholder(g, "x", TG_F32, 2, shape);
    /* the weight must be a variable */
    lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    step = tg_placeholder(g, "step", TG_I32, 0, NULL);
    assert_int_equal(tg_adamw(g, x, x, lr, step, 0.9, 0.999, 1e-8, 0).id, -1);
    assert_non_null(strstr(tg_graph_error(g), "variable"));
    tg_graph_free(g);

    /* step 0 is a run-time error (bias correction divides by 1 - beta^0) */
    g = tg_graph_new();
    w = tg_variable(g, "w", TG_F32, 2, shape, true);
    x = tg_placeholder(g, "x", TG_F32, 2, shape);
    lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    step = tg_placeholder(g, "step", TG_I32, 0, NULL);
    tg_tensor op = tg_adamw(g, w, x, lr, step, 0.9, 0.999, 1e-8, 0);
    tg_store *s = tg_store_new();
    assert_int_equal(tg_store_init_missing(s, g, 0, 0), TG_OK);
    tg_array xa = f32_array(2, shape, w0), la = f32_array(0, NULL, NULL), sa = {0};
    assert_int_equal(tg_array_alloc(&sa, TG_I32, 0, NULL), TG_OK);
    tg_feed feeds[] = {{x, &xa}, {lr, &la}, {step, &sa}};
    assert_int_equal(tg_interpret(g, s, 3, feeds, 0, NULL, NULL, 1, &op, 0), TG_ERR_RUNTIME);
    assert_non_null(strstr(tg_last_error(), "step is 0"));
    tg_array_free(&xa);
    tg_array_free(&la);
    tg_array_free(&sa);
    tg_store_free(s);
    tg_graph_free(g);
}

/* ---- clipping ---- */

static void check_clip(double max_norm) {
    tg_graph *g = tg_graph_new();
    int64_t s1[] = {2, 2}, s2[] = {3};
    float a[] = {1, -2, 3, 0.5f};
    uint16_t b[] = {tg_f32_to_f16(-1), tg_f32_to_f16(4), tg_f32_to_f16(0.25f)};
    tg_tensor grads[2] = {tg_constant(g, TG_F32, 2, s1, a), tg_constant(g, TG_F16, 1, s2, b)};
    tg_tensor clipped[2], norm;
    assert_int_equal(tg_clip_by_global_norm(g, 2, grads, max_norm, clipped, &norm), TG_OK);
    assert_int_equal(tg_tensor_dtype(g, clipped[1]), TG_F16);
    tg_tensor targets[3] = {clipped[0], clipped[1], norm};
    tg_array r[3];
    assert_int_equal(tg_interpret(g, NULL, 0, NULL, 3, targets, r, 0, NULL, 0), TG_OK);
    double want_norm = sqrt(1 + 4 + 9 + 0.25 + 1 + 16 + 0.0625);
    double coef = fmin(1.0, max_norm / (want_norm + 1e-6));
    assert_true(fabs(tg_array_get(&r[2], 0) - want_norm) < 1e-5);
    for (int i = 0; i < 4; i++) assert_true(fabs(tg_array_get(&r[0], i) - a[i] * coef) < 1e-5);
    for (int i = 0; i < 3; i++)
        assert_true(fabs(tg_array_get(&r[1], i) - tg_f16_to_f32(b[i]) * coef) < 4e-3);
    for (int i = 0; i < 3; i++) tg_array_free(&r[i]);
    tg_graph_free(g);
}

static void test_clip_by_global_norm(void **state) {
    (void)state;
    check_clip(1.0);   /* clips: every gradient scaled by 1 / 5.86 */
    check_clip(100.0); /* under the limit: unchanged */
    print_message("optimizers: max error %.3g (relative to max(0.1, |value|))\n", worst_error);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_adamw),
        cmocka_unit_test(test_adamw_no_decay_f32_step),
        cmocka_unit_test(test_adamw_strong_decay),
        cmocka_unit_test(test_sgd_plain),
        cmocka_unit_test(test_sgd_weight_decay),
        cmocka_unit_test(test_sgd_momentum_dampening),
        cmocka_unit_test(test_sgd_nesterov),
        cmocka_unit_test(test_optimizer_errors),
        cmocka_unit_test(test_clip_by_global_norm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
