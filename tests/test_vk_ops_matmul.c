/* test_vk_ops_matmul.c — matmul and conv1d as one-op graphs through
 * tg_compile / tg_run against the interpreter (tests/vk_ops_harness.h),
 * in f32 and f16: transposes, M = 1, K = 1, sizes that are not multiples
 * of the tiles (the register tile is 8x8 per invocation on lavapipe),
 * batch broadcasting of every kind (one operand shared, and partial
 * broadcasts that need a per-dim batch index), and conv1d with stride,
 * padding and dilation. tests/test_vk_matmul.c tests the generators
 * directly, with strategies forced and operands at offsets.
 *
 * Tolerances (|dev - ref| <= atol + rtol * |ref|), inputs in [-1, 1]:
 *  - f32: atol K^2 * 2^-24 — f32 accumulation of K products errs by at
 *    most about K * 2^-24 * sum|a_k b_k| <= K^2 * 2^-24 against the
 *    interpreter's f64 sum (a wrong index or batch offset errs by ~0.1-1).
 *  - f16: the inputs are half on both sides; the output's half rounding
 *    adds rt16 and atol 1e-3.
 * conv1d is a matmul with K = cin * ksize. */
#include "vk_ops_harness.h"

static void check_mm(tg_dtype dt, int ra, const int64_t *as, int rb, const int64_t *bs, bool ta,
                     bool tb) {
    tg_graph *g = tg_graph_new();
    tg_tensor a = ph(g, dt, ra, as, -1, 1), b = ph(g, dt, rb, bs, -1, 1);
    double K = (double)(ta ? as[ra - 2] : as[ra - 1]);
    double atol = K * K / (1 << 24), h = dt == TG_F16;
    check(g, tg_matmul(g, a, b, ta, tb), h ? rt16(0) : 0, h ? atol + 1e-3 : atol);
}

static void test_matmul(void **state) {
    (void)state;
    static const struct {
        int ra, rb;
        int64_t a[5], b[5];
        bool ta, tb;
    } cases[] = {
        {2, 2, {1, 5}, {5, 7}, false, false},           /* M = 1 (a decoder step), odd N */
        {2, 2, {6, 1}, {1, 7}, false, false},           /* K = 1 */
        {2, 2, {37, 67}, {67, 129}, false, false},      /* odd sizes over several tiles */
        {2, 2, {67, 37}, {67, 9}, true, false},         /* transpose_a */
        {3, 3, {3, 33, 20}, {3, 17, 20}, false, true},  /* transpose_b, batch 3 */
        {3, 3, {2, 8, 5}, {2, 12, 8}, true, true},      /* both */
        {3, 2, {4, 9, 16}, {16, 12}, false, false},     /* b shared by the batch */
        {2, 3, {9, 16}, {4, 16, 12}, false, false},     /* a shared by the batch */
        {4, 3, {2, 1, 3, 4}, {5, 4, 2}, false, false},  /* partial: a over dim 1, b over dim 0 */
        {4, 4, {3, 1, 4, 6}, {1, 5, 7, 4}, true, true}, /* partial, transposed */
        {5, 5, {2, 1, 1, 3, 5}, {1, 3, 1, 5, 4}, false, false}, /* size-1 batch dims */
        {4, 4, {2, 3, 8, 8}, {2, 1, 8, 8}, false, false},       /* b broadcast over the inner dim */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int h = 0; h < 2; h++) {
            if (h && !have_f16()) continue;
            check_mm(h ? TG_F16 : TG_F32, cases[c].ra, cases[c].a, cases[c].rb, cases[c].b,
                     cases[c].ta, cases[c].tb);
        }
}

static void test_conv1d(void **state) {
    (void)state;
    static const struct {
        int64_t x[3], w[3];
        int stride, padding, dilation;
    } cases[] = {
        {{1, 1, 1}, {1, 1, 1}, 1, 0, 1},  /* everything 1 */
        {{2, 3, 67}, {5, 3, 3}, 1, 1, 1}, /* Whisper's first conv, odd width */
        {{1, 4, 50}, {7, 4, 3}, 2, 1, 1}, /* Whisper's second conv: stride 2 */
        {{3, 2, 20}, {4, 2, 5}, 3, 4, 2}, /* stride, padding wider than a tap, dilation */
        {{1, 9, 5}, {70, 9, 1}, 1, 0, 1}, /* 1x1 conv: a matmul over channels */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int h = 0; h < 2; h++) {
            if (h && !have_f16()) continue;
            tg_dtype dt = h ? TG_F16 : TG_F32;
            tg_graph *g = tg_graph_new();
            tg_tensor x = ph(g, dt, 3, cases[c].x, -1, 1), w = ph(g, dt, 3, cases[c].w, -1, 1);
            tg_tensor y = tg_conv1d(g, x, w, cases[c].stride, cases[c].padding, cases[c].dilation);
            double K = (double)(cases[c].w[1] * cases[c].w[2]), atol = K * K / (1 << 24);
            check(g, y, h ? rt16(0) : 0, h ? atol + 1e-3 : atol);
        }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_matmul, reset_feeds),
        cmocka_unit_test_setup(test_conv1d, reset_feeds),
        cmocka_unit_test_setup(test_validation_clean, reset_feeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
