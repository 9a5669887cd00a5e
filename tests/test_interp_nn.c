/* test_interp_nn.c — the reference interpreter on the neural-net
 * composites: softmax, log_softmax, layer_norm, attention, cross_entropy.
 * Each is checked against a plain loop written here (and the loops against
 * a case worked out by hand). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "tg.h"

/* ---- helpers ---- */

static tg_tensor const_f32(tg_graph *g, int rank, const int64_t *shape, const float *data) {
    return tg_constant(g, TG_F32, rank, shape, data);
}

static tg_array run(tg_graph *g, tg_tensor t) {
    if (tg_graph_status(g) != TG_OK) fail_msg("graph error: %s", tg_graph_error(g));
    tg_array r = {0};
    if (tg_interpret(g, NULL, 0, NULL, 1, &t, &r, 0, NULL, 0) != TG_OK)
        fail_msg("tg_interpret: %s", tg_last_error());
    return r;
}

/* Checks shape and values (relative tolerance), then frees the result. */
static void expect_array(tg_array *a, int rank, const int64_t *shape, const double *expect,
                         double tol) {
    assert_int_equal(a->dtype, TG_F32);
    assert_int_equal(a->rank, rank);
    for (int d = 0; d < rank; d++) assert_int_equal(a->shape[d], shape[d]);
    int64_t n = tg_array_count(a);
    for (int64_t i = 0; i < n; i++) {
        double got = tg_array_get(a, i);
        if (!(fabs(got - expect[i]) <= tol * (1 + fabs(expect[i]))))
            fail_msg("element %lld: got %.9g, expected %.9g", (long long)i, got, expect[i]);
    }
    tg_array_free(a);
}

/* Deterministic test data in [-2, 2). */
static void fill(float *x, int n, int seed) {
    for (int i = 0; i < n; i++) x[i] = (float)(((i * 37 + seed * 11) % 29) - 14) / 7.0f;
}

/* ---- softmax ---- */

/* softmax over axis 1 of [outer, dim, inner], by definition. */
static void ref_softmax(const float *x, int outer, int dim, int inner, bool log_out, double *out) {
    for (int o = 0; o < outer; o++)
        for (int i = 0; i < inner; i++) {
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < dim; j++) mx = fmax(mx, x[(o * dim + j) * inner + i]);
            for (int j = 0; j < dim; j++) sum += exp(x[(o * dim + j) * inner + i] - mx);
            for (int j = 0; j < dim; j++) {
                double v = x[(o * dim + j) * inner + i] - mx;
                out[(o * dim + j) * inner + i] = log_out ? v - log(sum) : exp(v) / sum;
            }
        }
}

static void test_softmax_hand_computed(void **state) {
    (void)state;
    /* softmax(0, ln 3) = (1/4, 3/4); large inputs must not overflow */
    tg_graph *g = tg_graph_new();
    float x[4] = {0, (float)log(3.0), 1000, 1000};
    int64_t s[] = {2, 2};
    tg_array r = run(g, tg_softmax(g, const_f32(g, 2, s, x), -1));
    double expect[4] = {0.25, 0.75, 0.5, 0.5};
    expect_array(&r, 2, s, expect, 1e-6);
    tg_graph_free(g);
}

static void test_softmax_and_log_softmax_axes(void **state) {
    (void)state;
    enum { A = 3, B = 5, C = 7 };
    float x[A * B * C];
    fill(x, A * B * C, 1);
    x[3] = 90; /* a large logit: exp without the max would be 1e39 */
    int64_t s[] = {A, B, C};
    double expect[A * B * C];
    for (int log_out = 0; log_out <= 1; log_out++) {
        tg_graph *g = tg_graph_new();
        tg_tensor t = const_f32(g, 3, s, x);
        tg_tensor last = log_out ? tg_log_softmax(g, t, -1) : tg_softmax(g, t, -1);
        tg_tensor mid = log_out ? tg_log_softmax(g, t, 1) : tg_softmax(g, t, 1);
        tg_tensor first = log_out ? tg_log_softmax(g, t, 0) : tg_softmax(g, t, 0);
        tg_array r = run(g, last);
        ref_softmax(x, A * B, C, 1, log_out, expect);
        expect_array(&r, 3, s, expect, 1e-6);
        r = run(g, mid);
        ref_softmax(x, A, B, C, log_out, expect);
        expect_array(&r, 3, s, expect, 1e-6);
        r = run(g, first);
        ref_softmax(x, 1, A, B * C, log_out, expect);
        expect_array(&r, 3, s, expect, 1e-6);
        tg_graph_free(g);
    }
}

/* ---- layer_norm ---- */

static void test_layer_norm_hand_computed(void **state) {
    (void)state;
    /* x = (1, 3): mean 2, biased var 1 -> (-1, 1) / sqrt(1 + eps) */
    tg_graph *g = tg_graph_new();
    float x[2] = {1, 3}, w[2] = {2, 3}, b[2] = {10, 20};
    int64_t s[] = {1, 2}, sw[] = {2};
    tg_tensor y = tg_layer_norm(g, const_f32(g, 2, s, x), const_f32(g, 1, sw, w),
                                const_f32(g, 1, sw, b), 0.25);
    tg_array r = run(g, y);
    double k = 1 / sqrt(1.25);
    double expect[2] = {10 - 2 * k, 20 + 3 * k};
    expect_array(&r, 2, s, expect, 1e-6);
    tg_graph_free(g);
}

static void test_layer_norm_loop(void **state) {
    (void)state;
    enum { R = 6, D = 5 };
    float x[R * D], w[D], b[D];
    fill(x, R * D, 2);
    fill(w, D, 3);
    fill(b, D, 4);
    const double eps = 1e-5;
    double expect[R * D];
    for (int r = 0; r < R; r++) {
        double mean = 0, var = 0;
        for (int j = 0; j < D; j++) mean += x[r * D + j] / (double)D;
        for (int j = 0; j < D; j++) var += (x[r * D + j] - mean) * (x[r * D + j] - mean) / D;
        for (int j = 0; j < D; j++)
            expect[r * D + j] = (x[r * D + j] - mean) / sqrt(var + eps) * w[j] + b[j];
    }
    tg_graph *g = tg_graph_new();
    int64_t s[] = {2, 3, D}, sw[] = {D};
    tg_tensor y = tg_layer_norm(g, const_f32(g, 3, s, x), const_f32(g, 1, sw, w),
                                const_f32(g, 1, sw, b), eps);
    tg_array r = run(g, y);
    expect_array(&r, 3, s, expect, 1e-5);
    tg_graph_free(g);
}

/* ---- attention ---- */

/* softmax(q k^T * scale + mask) v for one batch entry, by definition; mask
 * is [Tq, Tk] or NULL. A query that sees no key gets zeros. */
static void ref_attention(const float *q, const float *k, const float *v, const float *mask, int tq,
                          int tk, int d, int dv, bool causal, double scale, double *out) {
    for (int i = 0; i < tq; i++) {
        double scores[16], mx = -INFINITY, sum = 0;
        for (int j = 0; j < tk; j++) {
            double s = 0;
            for (int c = 0; c < d; c++) s += q[i * d + c] * k[j * d + c];
            s = s * scale + (mask ? mask[i * tk + j] : 0);
            if (causal && j > i + tk - tq) s = -INFINITY;
            scores[j] = s;
            mx = fmax(mx, s);
        }
        for (int c = 0; c < dv; c++) out[i * dv + c] = 0;
        if (mx == -INFINITY) continue;
        for (int j = 0; j < tk; j++) sum += exp(scores[j] - mx);
        for (int j = 0; j < tk; j++)
            for (int c = 0; c < dv; c++)
                out[i * dv + c] += exp(scores[j] - mx) / sum * v[j * dv + c];
    }
}

static void test_attention_hand_computed(void **state) {
    (void)state;
    /* one query, scale 1: scores (0, ln 3) -> weights (1/4, 3/4) -> 1/4*4 + 3/4*8 = 7 */
    tg_graph *g = tg_graph_new();
    float q[1] = {1}, k[2] = {0, (float)log(3.0)}, v[2] = {4, 8};
    int64_t sq[] = {1, 1}, sk[] = {2, 1};
    tg_tensor y = tg_attention(g, const_f32(g, 2, sq, q), const_f32(g, 2, sk, k),
                               const_f32(g, 2, sk, v), TG_INVALID, false, 1.0);
    tg_array r = run(g, y);
    double expect = 7;
    expect_array(&r, 2, sq, &expect, 1e-6);
    tg_graph_free(g);
}

/* Batched self/cross attention, with and without causality, default scale. */
static void check_attention(int tq, int tk, bool causal) {
    enum { B = 2, D = 4, DV = 3 };
    float q[B * 8 * D], k[B * 8 * D], v[B * 8 * DV];
    fill(q, B * tq * D, 5);
    fill(k, B * tk * D, 6);
    fill(v, B * tk * DV, 7);
    double expect[B * 8 * DV];
    for (int b = 0; b < B; b++)
        ref_attention(q + b * tq * D, k + b * tk * D, v + b * tk * DV, NULL, tq, tk, D, DV, causal,
                      0.5, expect + b * tq * DV);
    tg_graph *g = tg_graph_new();
    int64_t sq[] = {B, tq, D}, sk[] = {B, tk, D}, sv[] = {B, tk, DV}, so[] = {B, tq, DV};
    tg_tensor y = tg_attention(g, const_f32(g, 3, sq, q), const_f32(g, 3, sk, k),
                               const_f32(g, 3, sv, v), TG_INVALID, causal, 0);
    tg_array r = run(g, y);
    expect_array(&r, 3, so, expect, 1e-5);
    tg_graph_free(g);
}

static void test_attention_plain(void **state) {
    (void)state;
    check_attention(3, 5, false);
}

static void test_attention_causal_self(void **state) {
    (void)state;
    check_attention(4, 4, true);
}

/* Tq < Tk: bottom-right aligned, query i sees keys j <= i + Tk - Tq. */
static void test_attention_causal_cross(void **state) {
    (void)state;
    check_attention(2, 5, true);
}

/* Tq > Tk: the first query sees no key at all and must give zeros. */
static void test_attention_causal_first_row_empty(void **state) {
    (void)state;
    check_attention(3, 2, true);
    tg_graph *g = tg_graph_new();
    float q[3] = {1, 2, 3}, k[2] = {1, 1}, v[2] = {5, 7};
    int64_t sq[] = {3, 1}, sk[] = {2, 1};
    tg_array r = run(g, tg_attention(g, const_f32(g, 2, sq, q), const_f32(g, 2, sk, k),
                                     const_f32(g, 2, sk, v), TG_INVALID, true, 1.0));
    /* row 0 sees nothing, row 1 sees key 0, row 2 sees both (equal scores) */
    double expect[3] = {0, 5, 6};
    expect_array(&r, 2, sq, expect, 1e-6);
    tg_graph_free(g);
}

/* An additive mask, one row fully masked (zeros, not NaN), custom scale. */
static void test_attention_mask(void **state) {
    (void)state;
    enum { TQ = 3, TK = 4, D = 2, DV = 2 };
    float q[TQ * D], k[TK * D], v[TK * DV];
    fill(q, TQ * D, 8);
    fill(k, TK * D, 9);
    fill(v, TK * DV, 10);
    float mask[TQ * TK] = {0,         -1,        0.5f,      0,         /* */
                           -INFINITY, -INFINITY, -INFINITY, -INFINITY, /* */
                           0,         -INFINITY, 0,         2};
    double expect[TQ * DV];
    ref_attention(q, k, v, mask, TQ, TK, D, DV, false, 0.3, expect);
    assert_true(expect[2] == 0 && expect[3] == 0);
    tg_graph *g = tg_graph_new();
    int64_t sq[] = {TQ, D}, sk[] = {TK, D}, sm[] = {TQ, TK}, so[] = {TQ, DV};
    tg_tensor y = tg_attention(g, const_f32(g, 2, sq, q), const_f32(g, 2, sk, k),
                               const_f32(g, 2, sk, v), const_f32(g, 2, sm, mask), false, 0.3);
    tg_array r = run(g, y);
    expect_array(&r, 2, so, expect, 1e-6);
    tg_graph_free(g);
}

/* q [2,1,3,4] against k, v [1,2,5,4] -> [2,2,3,4]: batch dims broadcast,
 * with a [5] mask broadcast over everything. */
static void test_attention_batch_broadcast(void **state) {
    (void)state;
    enum { TQ = 3, TK = 5, D = 4 };
    float q[2 * TQ * D], k[2 * TK * D], v[2 * TK * D], mask[TK] = {0, -1, 0, -2, 0.5f};
    fill(q, 2 * TQ * D, 11);
    fill(k, 2 * TK * D, 12);
    fill(v, 2 * TK * D, 13);
    float full_mask[TQ * TK];
    for (int i = 0; i < TQ * TK; i++) full_mask[i] = mask[i % TK];
    double expect[2 * 2 * TQ * D];
    for (int b = 0; b < 2; b++)
        for (int h = 0; h < 2; h++)
            ref_attention(q + b * TQ * D, k + h * TK * D, v + h * TK * D, full_mask, TQ, TK, D, D,
                          false, 0.5, expect + (b * 2 + h) * TQ * D);
    tg_graph *g = tg_graph_new();
    int64_t sq[] = {2, 1, TQ, D}, sk[] = {1, 2, TK, D}, sm[] = {TK}, so[] = {2, 2, TQ, D};
    tg_tensor y = tg_attention(g, const_f32(g, 4, sq, q), const_f32(g, 4, sk, k),
                               const_f32(g, 4, sk, v), const_f32(g, 1, sm, mask), false, 0);
    tg_array r = run(g, y);
    expect_array(&r, 4, so, expect, 1e-5);
    tg_graph_free(g);
}

/* ---- cross_entropy ---- */

static void test_cross_entropy_hand_computed(void **state) {
    (void)state;
    /* logits (0, 0) -> ln 2 per row; (ln 3, 0) with label 0 -> ln(4/3) */
    tg_graph *g = tg_graph_new();
    float logits[4] = {0, 0, (float)log(3.0), 0};
    int32_t labels[2] = {1, 0};
    int64_t sl[] = {2, 2}, sy[] = {2};
    tg_tensor y = tg_cross_entropy(g, const_f32(g, 2, sl, logits),
                                   tg_constant(g, TG_I32, 1, sy, labels), -100);
    tg_array r = run(g, y);
    double expect = (log(2.0) + log(4.0 / 3.0)) / 2;
    expect_array(&r, 0, NULL, &expect, 1e-6);
    tg_graph_free(g);
}

/* [2,3] positions of 4 classes, two of them ignored. */
static void test_cross_entropy_ignore_index(void **state) {
    (void)state;
    enum { N = 6, C = 4 };
    float logits[N * C];
    fill(logits, N * C, 14);
    int32_t labels[N] = {3, -1, 0, 2, -1, 1};
    double total = 0;
    int counted = 0;
    for (int r = 0; r < N; r++) {
        if (labels[r] == -1) continue;
        double sum = 0;
        for (int c = 0; c < C; c++) sum += exp(logits[r * C + c]);
        total += log(sum) - logits[r * C + labels[r]];
        counted++;
    }
    double expect = total / counted;
    tg_graph *g = tg_graph_new();
    int64_t sl[] = {2, 3, C}, sy[] = {2, 3};
    tg_tensor y =
        tg_cross_entropy(g, const_f32(g, 3, sl, logits), tg_constant(g, TG_I32, 2, sy, labels), -1);
    tg_array r = run(g, y);
    expect_array(&r, 0, NULL, &expect, 1e-6);
    tg_graph_free(g);
}

static void test_cross_entropy_all_ignored_is_zero(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float logits[6] = {1, 2, 3, 4, 5, 6};
    int32_t labels[2] = {-100, -100};
    int64_t sl[] = {2, 3}, sy[] = {2};
    tg_tensor y = tg_cross_entropy(g, const_f32(g, 2, sl, logits),
                                   tg_constant(g, TG_I32, 1, sy, labels), -100);
    tg_array r = run(g, y);
    double expect = 0;
    expect_array(&r, 0, NULL, &expect, 0);
    tg_graph_free(g);
}

static void test_cross_entropy_bad_label(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float logits[6] = {1, 2, 3, 4, 5, 6};
    int32_t labels[2] = {0, 7};
    int64_t sl[] = {2, 3}, sy[] = {2};
    tg_tensor y = tg_cross_entropy(g, const_f32(g, 2, sl, logits),
                                   tg_constant(g, TG_I32, 1, sy, labels), -100);
    tg_tensor_set_name(g, y, "loss");
    tg_array r = {0};
    assert_int_equal(tg_interpret(g, NULL, 0, NULL, 1, &y, &r, 0, NULL, 0), TG_ERR_RUNTIME);
    assert_non_null(strstr(tg_last_error(), "cross_entropy"));
    assert_non_null(strstr(tg_last_error(), "loss"));
    assert_non_null(strstr(tg_last_error(), "label 7"));
    assert_null(r.data);
    tg_graph_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_hand_computed),
        cmocka_unit_test(test_softmax_and_log_softmax_axes),
        cmocka_unit_test(test_layer_norm_hand_computed),
        cmocka_unit_test(test_layer_norm_loop),
        cmocka_unit_test(test_attention_hand_computed),
        cmocka_unit_test(test_attention_plain),
        cmocka_unit_test(test_attention_causal_self),
        cmocka_unit_test(test_attention_causal_cross),
        cmocka_unit_test(test_attention_causal_first_row_empty),
        cmocka_unit_test(test_attention_mask),
        cmocka_unit_test(test_attention_batch_broadcast),
        cmocka_unit_test(test_cross_entropy_hand_computed),
        cmocka_unit_test(test_cross_entropy_ignore_index),
        cmocka_unit_test(test_cross_entropy_all_ignored_is_zero),
        cmocka_unit_test(test_cross_entropy_bad_label),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
