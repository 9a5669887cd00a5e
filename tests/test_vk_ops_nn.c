/* test_vk_ops_nn.c — the composite ops with their own kernels (softmax,
 * log_softmax, layer_norm, attention, cross_entropy), each as a one-op
 * graph through tg_compile / tg_run against the interpreter
 * (tests/vk_ops_harness.h), in f32 and f16, on rows of 1, odd lengths
 * (129), rows longer than a workgroup (1000, 5000 keys) and broadcasts.
 *
 * Tolerances (|dev - ref| <= atol + rtol * |ref|):
 *  - f32: rtol 1e-5 and atol 1e-7 (softmax) to 2e-5 (layer_norm, whose
 *    outputs near zero come from a difference of f32 sums) — f32 sums
 *    over a row plus exp/log errors of a few ulps each, against the
 *    interpreter's f64.
 *  - f16: rt16 plus atol 1e-3 (softmax, attention: values <= 1) to 1e-2
 *    (log_softmax, layer_norm: values up to ~16 whose half ulp is ~8e-3).
 *  - cross_entropy: rtol 1e-5, atol 1e-6 in both dtypes: the loss is a
 *    mean over rows computed in f32 from the (half) inputs, output f32.
 */
#include "vk_ops_harness.h"

static void test_softmax_layer_norm(void **state) {
    (void)state;
    static const struct {
        int rank, axis;
        int64_t shape[3];
    } sm[] = {
        {2, 1, {7, 129}},
        {3, 0, {5, 3, 2}},
        {3, -2, {2, 1000, 3}},
        {1, 0, {1}},
        {2, 1, {300, 9}},
        /* last-axis rows of whole vec4s: one invocation a row of vec4 texels
         * on CPU devices (short rows; long rows when there are many) */
        {3, -1, {40, 7, 64}},
        {2, 1, {1030, 300}},
    };
    for (int c = 0; c < 7; c++) {
        for (int h = 0; h < 2; h++) {
            if (h && !have_f16()) continue;
            tg_dtype dt = h ? TG_F16 : TG_F32;
            tg_graph *g = tg_graph_new();
            tg_tensor x = ph(g, dt, sm[c].rank, sm[c].shape, -8, 8);
            check(g, tg_softmax(g, x, sm[c].axis), h ? rt16(1e-5) : 1e-5, h ? 1e-3 : 1e-7);
            g = tg_graph_new();
            x = ph(g, dt, sm[c].rank, sm[c].shape, -8, 8);
            check(g, tg_log_softmax(g, x, sm[c].axis), h ? rt16(1e-5) : 1e-5, h ? 1e-2 : 2e-6);
        }
    }
    static const struct {
        int rank;
        int64_t shape[3];
    } ln[] = {{2, {7, 129}}, {3, {2, 3, 5}}, {1, {1}}, {2, {3, 1000}}, {2, {37, 96}}};
    /* 96: rows of whole vec4s, read as vec4 texels on CPU devices */
    for (int c = 0; c < 5; c++) {
        for (int h = 0; h < 2; h++) {
            if (h && !have_f16()) continue;
            tg_dtype dt = h ? TG_F16 : TG_F32;
            tg_graph *g = tg_graph_new();
            int64_t D[] = {ln[c].shape[ln[c].rank - 1]};
            tg_tensor x = ph(g, dt, ln[c].rank, ln[c].shape, -3, 5);
            tg_tensor w = ph(g, dt, 1, D, 0.5, 2), b = ph(g, dt, 1, D, -1, 1);
            check(g, tg_layer_norm(g, x, w, b, 1e-5), h ? rt16(1e-5) : 1e-5, h ? 1e-2 : 2e-5);
        }
    }
}

static void test_attention(void **state) {
    (void)state;
    static const struct {
        int rq, rk, rm;
        int64_t q[4], k[4], v[4], m[4];
        bool causal, mask;
        double scale;
    } cases[] = {
        /* self-attention, causal, batch 2 x heads 3 */
        {4, 4, 0, {2, 3, 9, 16}, {2, 3, 9, 16}, {2, 3, 9, 16}, {0}, true, false, 0},
        /* cross-attention, k/v broadcast over heads, Dv != D, mask [Tq, Tk] */
        {4, 4, 2, {1, 2, 5, 8}, {1, 1, 70, 8}, {1, 1, 70, 3}, {5, 70}, false, true, 0.3},
        /* single query against a cache: causal sees everything */
        {3, 3, 0, {2, 1, 64}, {2, 129, 64}, {2, 129, 64}, {0}, true, false, 0},
        /* Tq > Tk with causal: the first rows see no key (zeros); a
         * -inf mask row */
        {2, 2, 2, {6, 4}, {3, 4}, {3, 70}, {6, 3}, true, true, 0},
        /* long keys: several chunks of the online softmax */
        {2, 2, 0, {3, 8}, {5000, 8}, {5000, 4}, {0}, false, false, 0},
    };
    for (int c = 0; c < 5; c++) {
        for (int h = 0; h < 2; h++) {
            if (h && !have_f16()) continue;
            tg_dtype dt = h ? TG_F16 : TG_F32;
            tg_graph *g = tg_graph_new();
            tg_tensor q = ph(g, dt, cases[c].rq, cases[c].q, -1, 1);
            tg_tensor k = ph(g, dt, cases[c].rk, cases[c].k, -1, 1);
            tg_tensor v = ph(g, dt, cases[c].rk, cases[c].v, -1, 1);
            tg_tensor m = TG_INVALID;
            if (cases[c].mask) {
                m = ph(g, dt, cases[c].rm, cases[c].m, -2, 0);
                tg_array_set(last_feed(), 0, -INFINITY);
                if (c == 3)
                    for (int j = 0; j < 3; j++) tg_array_set(last_feed(), 5 * 3 + j, -INFINITY);
            }
            tg_tensor y = tg_attention(g, q, k, v, m, cases[c].causal, cases[c].scale);
            check(g, y, h ? rt16(1e-5) : 1e-5, h ? 2e-3 : 1e-6);
        }
    }
}

static void test_cross_entropy(void **state) {
    (void)state;
    static const struct {
        int r;
        int64_t x[3];
        int64_t ignore;
    } cases[] = {{2, {7, 129}, -100}, {3, {2, 3, 5}, 2}, {1, {1000}, -1}, {2, {4, 1}, 0}};
    for (int c = 0; c < 4; c++) {
        for (int h = 0; h < 2; h++) {
            if (h && !have_f16()) continue;
            tg_dtype dt = h ? TG_F16 : TG_F32;
            tg_graph *g = tg_graph_new();
            tg_tensor x = ph(g, dt, cases[c].r, cases[c].x, -5, 5);
            int64_t C = cases[c].x[cases[c].r - 1];
            tg_tensor y = ph(g, TG_I32, cases[c].r - 1, cases[c].x, 0, (double)C - 1);
            tg_array_set(last_feed(), 0, (double)cases[c].ignore);
            check(g, tg_cross_entropy(g, x, y, cases[c].ignore), 1e-5, 1e-6);
        }
    }
    /* a large case: 1024 rows of 4000 classes, every 7th row ignored */
    for (int h = 0; h < 2; h++) {
        if (h && !have_f16()) continue;
        tg_graph *g = tg_graph_new();
        int64_t s[] = {1024, 4000};
        tg_tensor x = ph(g, h ? TG_F16 : TG_F32, 2, s, -5, 5);
        tg_tensor y = ph(g, TG_I32, 1, s, 0, 3999);
        for (int64_t r = 0; r < 1024; r += 7) tg_array_set(last_feed(), r, -100);
        check(g, tg_cross_entropy(g, x, y, -100), 1e-5, 1e-6);
    }
    /* labels out of range (not ignored) count as ignored on the device:
     * compare with the interpreter on the same labels with that row ignored */
    tg_graph *g = tg_graph_new();
    int64_t s[] = {3, 10};
    tg_tensor x = ph(g, TG_F32, 2, s, -5, 5);
    tg_tensor y = ph(g, TG_I32, 1, s, 0, 9);
    tg_tensor ce = tg_cross_entropy(g, x, y, -100);
    tg_array_set(last_feed(), 1, 10); /* out of range */
    tg_array got = {0}, want = {0};
    run_device(g, NULL, ce, &got);
    tg_array_set(last_feed(), 1, -100); /* the same row ignored */
    OK(tg_interpret(g, NULL, n_feeds, feeds, 1, &ce, &want, 0, NULL, 0));
    compare("cross_entropy", &got, &want, 1e-5, 1e-6);
    tg_array_free(&got);
    tg_array_free(&want);
    tg_graph_free(g);
    feeds_reset();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_softmax_layer_norm, reset_feeds),
        cmocka_unit_test_setup(test_attention, reset_feeds),
        cmocka_unit_test_setup(test_cross_entropy, reset_feeds),
        cmocka_unit_test_setup(test_validation_clean, reset_feeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
