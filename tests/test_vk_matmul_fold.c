/* test_vk_matmul_fold.c — the matmul generator's paths for the training
 * step's shapes (backend/gen_matmul.c, backend/device_class.c), on the
 * Vulkan device against naive double-accumulating loops here:
 *  - a batch over a shared B folded into M (one tall product), with every
 *    kind of epilogue extra: row-invariant (bias), column-invariant,
 *    scalar, per element, read through texel buffers, and an epilogue that
 *    uses bz and row (it must see the matrix's own, not the folded row);
 *  - batches that must not fold (A transposed, B per batch, an extra
 *    broadcast over the batch but not over rows);
 *  - the small-matrix workgroup choice (attention's 150 x 150 heads at
 *    K = 32, and 150 x 32 at K = 150), odd sizes, f16 storage.
 * Tolerances as in test_vk_matmul.c: |got - ref| <= 1e-5 * S with S the
 * sum of |a_k b_k| (f32 accumulation of K terms), plus 1e-5 through the
 * epilogue's tanh and 2^-11 |ref| for an f16 output. The validation layer
 * is on; the last test asserts it reported nothing. */
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

#include "backend/gen_matmul.h"
#include "backend/vk.h"

#include "mm_kernel_harness.h"

/* ---- cases ---- */

typedef struct fold_case {
    int64_t M, N, K, batch;
    bool ta, tb, b_shared;
    tg_dtype dt, odt;
    tg_mm_strategy strategy;
    int epi;          /* 0 none; 1 bias + per-row + scalar + residual; 2 uses bz and row;
                         3 an extra broadcast over the batch only */
    bool expect_fold; /* the kernel must (or must not) be one tall product */
} fold_case;

static void check_fold(fold_case c) {
    int64_t sa = c.M * c.K, sb = c.K * c.N, sc = c.M * c.N;
    size_t na = (size_t)(c.batch * sa), nb = (size_t)((c.b_shared ? 1 : c.batch) * sb);
    size_t nc = (size_t)(c.batch * sc);
    float *a = rand_vec(na, c.dt), *b = rand_vec(nb, c.dt);
    float *bias = rand_vec((size_t)c.N, TG_F32), *rowv = rand_vec((size_t)(c.batch * c.M), TG_F32);
    float *scal = rand_vec(1, TG_F32), *res = rand_vec(nc, TG_F16);
    float *plane = rand_vec((size_t)sc, TG_F32);

    tg_mm_params p = {0};
    p.M = c.M;
    p.N = c.N;
    p.K = c.K;
    p.batch = c.batch;
    p.batch_stride_a = sa;
    p.batch_stride_b = c.b_shared ? 0 : sb;
    p.batch_stride_c = sc;
    p.transpose_a = c.ta;
    p.transpose_b = c.tb;
    p.dtype = c.dt;
    p.out_dtype = c.odt;
    p.strategy = c.strategy;
    host_operand extras[4] = {{0}};
    if (c.epi == 1) {
        p.epilogue = "tanh(acc + e0 + e1 + e2 + e3)";
        p.n_extra = 4;
        p.extra[0] = (tg_mm_extra){TG_F32, 0, 0, 1};    /* bias[N] */
        p.extra[1] = (tg_mm_extra){TG_F32, c.M, 1, 0};  /* per row [batch, M, 1] */
        p.extra[2] = (tg_mm_extra){TG_F32, 0, 0, 0};    /* a scalar */
        p.extra[3] = (tg_mm_extra){TG_F16, sc, c.N, 1}; /* residual [batch, M, N] */
        extras[0] = (host_operand){bias, (size_t)c.N};
        extras[1] = (host_operand){rowv, (size_t)(c.batch * c.M)};
        extras[2] = (host_operand){scal, 1};
        extras[3] = (host_operand){res, nc};
    } else if (c.epi == 2) {
        p.epilogue = "acc + e0 + float(bz) * 1000.0 + float(row) * 0.5 - float(col) * 0.25";
        p.n_extra = 1;
        p.extra[0] = (tg_mm_extra){TG_F32, 0, 0, 1};
        extras[0] = (host_operand){bias, (size_t)c.N};
    } else if (c.epi == 3) {
        p.epilogue = "acc * e0";
        p.n_extra = 1;
        p.extra[0] = (tg_mm_extra){TG_F32, 0, c.N, 1}; /* [M, N], the same for every bz */
        extras[0] = (host_operand){plane, (size_t)sc};
    }
    tg_mm_kernel k;
    OK_GEN(tg_gen_matmul(&dev->caps, &p, &k));
    /* folded: one matrix of batch * M rows, the grid's z is 1 */
    bool folded = k.groups[2] == 1 && c.batch > 1;
    if (folded != c.expect_fold)
        fail_msg("M=%lld N=%lld K=%lld batch=%lld: folded %d, expected %d", (long long)c.M,
                 (long long)c.N, (long long)c.K, (long long)c.batch, folded, c.expect_fold);
    float *got = run_kernel(&k, (host_operand){a, na}, (host_operand){b, nb}, extras, nc, 4);

    int bad = 0;
    for (int64_t bz = 0; bz < c.batch; bz++) {
        const float *A = a + bz * sa, *B = b + (c.b_shared ? 0 : bz * sb);
        for (int64_t m = 0; m < c.M; m++)
            for (int64_t n = 0; n < c.N; n++) {
                double ref = 0, mag = 0;
                for (int64_t kk = 0; kk < c.K; kk++) {
                    double x = c.ta ? A[kk * c.M + m] : A[m * c.K + kk];
                    double y = c.tb ? B[n * c.K + kk] : B[kk * c.N + n];
                    ref += x * y;
                    mag += fabs(x * y);
                }
                double tol = 1e-5 * mag + 1e-30;
                size_t ci = (size_t)((bz * c.M + m) * c.N + n);
                if (c.epi == 1) {
                    ref = tanh(ref + bias[n] + rowv[bz * c.M + m] + scal[0] + res[ci]);
                    tol += 1e-5;
                } else if (c.epi == 2) {
                    ref += bias[n] + (double)bz * 1000.0 + (double)m * 0.5 - (double)n * 0.25;
                    tol += 1e-7 * fabs(ref);
                } else if (c.epi == 3) {
                    ref *= plane[m * c.N + n];
                }
                if (c.odt == TG_F16) tol += fabs(ref) * (1.0 / 2048) + 1e-7;
                double err = fabs((double)got[ci] - ref);
                if (!(err <= tol) && bad++ < 5)
                    print_error("M=%lld N=%lld K=%lld b=%lld m=%lld n=%lld: got %.9g want %.9g\n",
                                (long long)c.M, (long long)c.N, (long long)c.K, (long long)bz,
                                (long long)m, (long long)n, got[ci], ref);
            }
    }
    if (bad)
        fail_msg("%d wrong elements: kernel %s (%s, workgroup %ux%u, block %ux%u)", bad, k.name,
                 tg_mm_strategy_name(k.tiling.strategy), k.tiling.wg_x, k.tiling.wg_y, k.tiling.tm,
                 k.tiling.tn);
    tg_mm_kernel_free(&k);
    free(a);
    free(b);
    free(bias);
    free(rowv);
    free(scal);
    free(res);
    free(plane);
    free(got);
}

static void fold_suite(tg_dtype dt, tg_mm_strategy s) {
    /* fold: B shared, A and C dense, every epilogue kind; odd sizes */
    check_fold((fold_case){15, 12, 8, 4, false, true, true, dt, dt, s, 0, true});
    check_fold((fold_case){15, 12, 8, 4, false, true, true, dt, dt, s, 1, true});
    check_fold((fold_case){7, 13, 5, 3, false, false, true, dt, dt, s, 1, true});
    check_fold((fold_case){7, 13, 5, 3, false, false, true, dt, dt, s, 2, true});
    check_fold((fold_case){9, 20, 12, 5, false, true, true, dt, TG_F32, s, 2, true});
    /* no fold: A transposed, B per batch, an extra broadcast over the batch */
    check_fold((fold_case){7, 13, 5, 3, true, false, true, dt, dt, s, 1, false});
    check_fold((fold_case){7, 13, 5, 3, false, false, false, dt, dt, s, 2, false});
    check_fold((fold_case){7, 12, 8, 3, false, true, true, dt, dt, s, 3, false});
}

static void test_fold_register_f32(void **state) {
    (void)state;
    fold_suite(TG_F32, TG_MM_STRATEGY_REGISTER);
}
static void test_fold_register_f16(void **state) {
    (void)state;
    if (!dev->caps.storage_16bit || !dev->caps.texel_r16f) skip();
    fold_suite(TG_F16, TG_MM_STRATEGY_REGISTER);
}
static void test_fold_shared_f32(void **state) {
    (void)state;
    fold_suite(TG_F32, TG_MM_STRATEGY_SHARED);
}

/* The attention shapes of the training step (fewer heads), and their
 * edges, on both strategies. */
static void test_small_matrices(void **state) {
    (void)state;
    tg_mm_strategy ss[] = {TG_MM_STRATEGY_REGISTER, TG_MM_STRATEGY_SHARED};
    for (int i = 0; i < 2; i++) {
        check_fold(
            (fold_case){150, 150, 32, 3, false, true, false, TG_F32, TG_F32, ss[i], 0, false});
        check_fold(
            (fold_case){150, 32, 150, 3, false, false, false, TG_F32, TG_F32, ss[i], 2, false});
        check_fold((fold_case){33, 17, 31, 2, false, true, false, TG_F32, TG_F32, ss[i], 1, false});
    }
}

/* On the CPU class, a matrix with few rows gets fewer workgroup rows
 * (less padded edge), and N not a whole number of 128-column workgroups
 * gets narrower ones; large ones keep the table's 32 x 2. */
static void test_small_tiling(void **state) {
    (void)state;
    tg_vk_caps caps = dev->caps;
    caps.device_class = TG_VK_CLASS_CPU;
    caps.subgroup_size = 8;
    unsetenv("TG_MM_TILE");
    tg_mm_tiling t;
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 150, 150, 32, &t), TG_OK);
    assert_int_equal(t.strategy, TG_MM_STRATEGY_REGISTER);
    assert_int_equal(t.wg_y * t.tm, 32); /* 160 rows computed, not 192 */
    assert_int_equal(t.wg_x, 8);         /* 160 columns computed, not 256 */
    assert_true(t.wg_x * t.wg_y >= 8);
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 1024, 1024, 1024, &t), TG_OK);
    assert_int_equal(t.wg_x, 32);
    assert_int_equal(t.wg_y, 2);
    /* GPUs keep their shared-memory tile */
    caps.device_class = TG_VK_CLASS_NVIDIA;
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 150, 150, 32, &t), TG_OK);
    assert_int_equal(t.strategy, TG_MM_STRATEGY_SHARED);
    assert_int_equal(t.wg_x, 16);
    assert_int_equal(t.wg_y, 16);
}

static void test_validation_clean(void **state) {
    (void)state;
    assert_true(tg_vk_validation_enabled());
    if (tg_vk_validation_message_count() != 0)
        fail_msg("validation: %d messages; first: %s", tg_vk_validation_message_count(),
                 tg_vk_validation_first_message());
}

static int setup(void **state) {
    (void)state;
    setenv("TG_VALIDATION", "1", 1);
    rng_state = 777;
    if (tg_vk_device_open(-1, &dev) != TG_OK) {
        fprintf(stderr, "device: %s\n", tg_last_error());
        return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tg_vk_device_close(dev);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_tiling),      cmocka_unit_test(test_fold_register_f32),
        cmocka_unit_test(test_fold_register_f16), cmocka_unit_test(test_fold_shared_f32),
        cmocka_unit_test(test_small_matrices),    cmocka_unit_test(test_validation_clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
