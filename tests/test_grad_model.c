/* test_grad_model.c — a two-layer model, x -> tanh(x W1 + b1) W2 + b2 ->
 * cross_entropy, differentiated by tg_gradients and by hand (the backward
 * pass written out below in plain loops); then a few AdamW steps in the
 * graph that lower the loss. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "tg.h"

enum { B = 5, D = 4, H = 6, C = 3, IGNORE = -1 };

static const int32_t labels[B] = {2, 0, IGNORE, 1, 2};

typedef struct params {
    double x[B][D], w1[D][H], b1[H], w2[H][C], b2[C];
} params;

/* ---- by hand ---- */

/* Gradients of the mean cross-entropy over the labelled rows. */
static void hand_gradients(const params *p, params *d) {
    double h[B][H], z[B][C], dz[B][C], dh[B][H];
    int counted = 0;
    for (int r = 0; r < B; r++) counted += labels[r] != IGNORE;
    memset(d, 0, sizeof *d);
    for (int r = 0; r < B; r++) {
        for (int j = 0; j < H; j++) {
            double a = p->b1[j];
            for (int i = 0; i < D; i++) a += p->x[r][i] * p->w1[i][j];
            h[r][j] = tanh(a);
        }
        double mx = -INFINITY, sum = 0;
        for (int c = 0; c < C; c++) {
            z[r][c] = p->b2[c];
            for (int j = 0; j < H; j++) z[r][c] += h[r][j] * p->w2[j][c];
            mx = fmax(mx, z[r][c]);
        }
        for (int c = 0; c < C; c++) sum += exp(z[r][c] - mx);
        /* d loss / d z = (softmax - onehot) / counted, 0 on ignored rows */
        for (int c = 0; c < C; c++)
            dz[r][c] =
                labels[r] == IGNORE ? 0 : (exp(z[r][c] - mx) / sum - (c == labels[r])) / counted;
    }
    for (int r = 0; r < B; r++) {
        for (int c = 0; c < C; c++) {
            d->b2[c] += dz[r][c];
            for (int j = 0; j < H; j++) d->w2[j][c] += h[r][j] * dz[r][c];
        }
        for (int j = 0; j < H; j++) {
            dh[r][j] = 0;
            for (int c = 0; c < C; c++) dh[r][j] += dz[r][c] * p->w2[j][c];
            double da = dh[r][j] * (1 - h[r][j] * h[r][j]);
            d->b1[j] += da;
            for (int i = 0; i < D; i++) {
                d->w1[i][j] += p->x[r][i] * da;
                d->x[r][i] += da * p->w1[i][j];
            }
        }
    }
}

/* ---- in the graph ---- */

typedef struct model {
    tg_graph *g;
    tg_store *store;
    tg_tensor x, labels, loss;
    tg_tensor vars[5]; /* x is a placeholder; w1, b1, w2, b2 are variables */
    tg_array xv, lv;
} model;

static double *field(params *p, int k) {
    double *f[5] = {&p->x[0][0], &p->w1[0][0], p->b1, &p->w2[0][0], p->b2};
    return f[k];
}

/* v rounded to f32 (volatile: gcc 12 -O3 may drop a (float) cast in a
 * vectorised loop calling sin()). */
static double f32(double v) {
    volatile float f = (float)v;
    return f;
}

static void init_params(params *p) {
    for (int k = 0; k < 5; k++) {
        static const int sizes[5] = {B * D, D * H, H, H * C, C};
        for (int i = 0; i < sizes[k]; i++) field(p, k)[i] = f32(0.8 * sin(1.7 * i + 2.3 * k + 0.4));
    }
}

static void set_array(tg_array *a, int rank, const int64_t *shape, tg_dtype dt, const double *v) {
    assert_int_equal(tg_array_alloc(a, dt, rank, shape), TG_OK);
    for (int64_t i = 0; i < tg_array_count(a); i++) tg_array_set(a, i, v[i]);
}

static model build_model(const params *p) {
    static const int64_t sx[] = {B, D}, sw1[] = {D, H}, sb1[] = {H}, sw2[] = {H, C}, sb2[] = {C},
                         sl[] = {B};
    model m = {.g = tg_graph_new(), .store = tg_store_new()};
    tg_graph *g = m.g;
    m.x = tg_placeholder(g, "x", TG_F32, 2, sx);
    m.labels = tg_placeholder(g, "labels", TG_I32, 1, sl);
    tg_tensor w1 = tg_variable(g, "w1", TG_F32, 2, sw1, true);
    tg_tensor b1 = tg_variable(g, "b1", TG_F32, 1, sb1, true);
    tg_tensor w2 = tg_variable(g, "w2", TG_F32, 2, sw2, true);
    tg_tensor b2 = tg_variable(g, "b2", TG_F32, 1, sb2, true);
    tg_tensor h = tg_tanh(g, tg_add(g, tg_matmul(g, m.x, w1, false, false), b1));
    tg_tensor logits = tg_add(g, tg_matmul(g, h, w2, false, false), b2);
    m.loss = tg_cross_entropy(g, logits, m.labels, IGNORE);
    assert_int_equal(tg_graph_status(g), TG_OK);
    tg_tensor vars[5] = {m.x, w1, b1, w2, b2};
    memcpy(m.vars, vars, sizeof vars);

    const char *names[5] = {NULL, "w1", "b1", "w2", "b2"};
    const int64_t *shapes[5] = {sx, sw1, sb1, sw2, sb2};
    params copy = *p;
    for (int k = 1; k < 5; k++) {
        tg_array a;
        set_array(&a, k == 2 || k == 4 ? 1 : 2, shapes[k], TG_F32, field(&copy, k));
        assert_int_equal(tg_store_set(m.store, names[k], &a), TG_OK);
        tg_array_free(&a);
    }
    double lab[B];
    for (int r = 0; r < B; r++) lab[r] = labels[r];
    set_array(&m.xv, 2, sx, TG_F32, field(&copy, 0));
    set_array(&m.lv, 1, sl, TG_I32, lab);
    return m;
}

static void free_model(model *m) {
    tg_array_free(&m->xv);
    tg_array_free(&m->lv);
    tg_store_free(m->store);
    tg_graph_free(m->g);
}

static void test_two_layer_gradients_by_hand(void **state) {
    (void)state;
    params p, want;
    init_params(&p);
    hand_gradients(&p, &want);
    model m = build_model(&p);
    tg_tensor grads[5];
    assert_int_equal(tg_gradients(m.g, m.loss, 5, m.vars, grads), TG_OK);
    tg_array got[5];
    tg_feed feeds[2] = {{m.x, &m.xv}, {m.labels, &m.lv}};
    assert_int_equal(tg_interpret(m.g, m.store, 2, feeds, 5, grads, got, 0, NULL, TG_INTERP_F64),
                     TG_OK);
    double worst = 0;
    for (int k = 0; k < 5; k++) {
        const double *w = field(&want, k);
        double max_err = 0, scale = 0;
        for (int64_t i = 0; i < tg_array_count(&got[k]); i++) {
            max_err = fmax(max_err, fabs(tg_array_get(&got[k], i) - w[i]));
            scale = fmax(scale, fabs(w[i]));
        }
        assert_true(scale > 1e-3);
        worst = fmax(worst, max_err / scale);
        if (!(max_err / scale < 1e-6))
            fail_msg("gradient %d: relative error %g", k, max_err / scale);
        tg_array_free(&got[k]);
    }
    print_message("two-layer model vs hand gradients: max relative error %.3g\n", worst);
    free_model(&m);
}

/* The training step as one graph: gradients, AdamW per variable, run as
 * target ops with lr and step fed. The loss falls. */
static void test_adamw_steps_lower_the_loss(void **state) {
    (void)state;
    params p;
    init_params(&p);
    model m = build_model(&p);
    tg_graph *g = m.g;
    tg_tensor grads[4], ops[4];
    assert_int_equal(tg_gradients(g, m.loss, 4, m.vars + 1, grads), TG_OK);
    tg_tensor lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    tg_tensor step = tg_placeholder(g, "step", TG_I32, 0, NULL);
    for (int k = 0; k < 4; k++)
        ops[k] = tg_adamw(g, m.vars[k + 1], grads[k], lr, step, 0.9, 0.999, 1e-8, 0.0);
    assert_int_equal(tg_graph_status(g), TG_OK);
    assert_int_equal(tg_store_init_missing(m.store, g, 1, 0.5), TG_OK); /* the moments */
    tg_array la, sa;
    double lrv = 0.05;
    set_array(&la, 0, NULL, TG_F32, &lrv);
    assert_int_equal(tg_array_alloc(&sa, TG_I32, 0, NULL), TG_OK);
    tg_feed feeds[4] = {{m.x, &m.xv}, {m.labels, &m.lv}, {lr, &la}, {step, &sa}};
    double first = 0, last = 0;
    for (int t = 1; t <= 30; t++) {
        tg_array_set(&sa, 0, t);
        tg_array loss;
        assert_int_equal(tg_interpret(g, m.store, 4, feeds, 1, &m.loss, &loss, 4, ops, 0), TG_OK);
        last = tg_array_get(&loss, 0);
        if (t == 1) first = last;
        tg_array_free(&loss);
    }
    print_message("AdamW, 30 steps: loss %.4f -> %.4f\n", first, last);
    assert_true(last < 0.5 * first);
    tg_array_free(&la);
    tg_array_free(&sa);
    free_model(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_two_layer_gradients_by_hand),
        cmocka_unit_test(test_adamw_steps_lower_the_loss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
