/* test_vk_matmul.c — the matmul and conv1d generators (backend/gen_matmul.c)
 * on the Vulkan device, against naive double-accumulating loops here.
 *
 * Tolerances (per element, against the double reference `ref`, with
 * S = sum over k of |a_k * b_k|, the size of the terms):
 *  - f32 storage: |got - ref| <= 1e-5 * S. f32 accumulation of K terms
 *    errs by at most ~K * 2^-24 * S (6e-6 * S at K = 100, and typically
 *    sqrt(K) of that), so 1e-5 passes correct kernels and fails any wrong
 *    index (which gives errors of order S).
 *  - f16 storage: the inputs are rounded to f16 before the reference, so
 *    the same bound holds for the accumulation; an f16 output adds its own
 *    rounding, 2^-11 * |ref|.
 * The device runs with the validation layer on (TG_VALIDATION=1 before the
 * first device call); the last test asserts it reported nothing. */
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

/* ---- matmul cases ---- */

typedef struct mm_case {
    int64_t M, N, K;
    int64_t batch_a, batch_b; /* 1 broadcasts over the other */
    bool ta, tb;
    tg_dtype dt, odt;
    tg_mm_strategy strategy;
    uint32_t off;
    bool epilogue;         /* bias over N (e0) + residual [batch, M, N] (e1), then tanh */
    int64_t lda, ldb, ldc; /* row strides; 0: dense. Padding holds random values */
} mm_case;

static void check_mm(mm_case c) {
    int64_t batch = c.batch_a > c.batch_b ? c.batch_a : c.batch_b;
    int64_t lda = c.lda ? c.lda : (c.ta ? c.M : c.K), ldb = c.ldb ? c.ldb : (c.tb ? c.K : c.N);
    int64_t ldc = c.ldc ? c.ldc : c.N;
    int64_t sa = (c.ta ? c.K : c.M) * lda, sb = (c.tb ? c.N : c.K) * ldb, sc = c.M * ldc;
    size_t na = (size_t)(c.batch_a * sa), nb = (size_t)(c.batch_b * sb);
    size_t nc = (size_t)(batch * sc);
    float *a = rand_vec(na, c.dt), *b = rand_vec(nb, c.dt);
    float *bias = rand_vec((size_t)c.N, TG_F32), *res = rand_vec(nc, TG_F16);

    tg_mm_params p = {0};
    p.M = c.M;
    p.N = c.N;
    p.K = c.K;
    p.batch = batch;
    p.batch_stride_a = c.batch_a == 1 ? 0 : sa;
    p.batch_stride_b = c.batch_b == 1 ? 0 : sb;
    p.batch_stride_c = sc;
    p.lda = c.lda;
    p.ldb = c.ldb;
    p.ldc = c.ldc;
    p.transpose_a = c.ta;
    p.transpose_b = c.tb;
    p.dtype = c.dt;
    p.out_dtype = c.odt;
    p.strategy = c.strategy;
    if (c.epilogue) {
        p.epilogue = "tanh(acc + e0 + e1)";
        p.n_extra = 2;
        p.extra[0] = (tg_mm_extra){TG_F32, 0, 0, 1};
        p.extra[1] = (tg_mm_extra){TG_F16, sc, ldc, 1};
    }
    tg_mm_kernel k;
    tg_status st = tg_gen_matmul(&dev->caps, &p, &k);
    if (st != TG_OK) fail_msg("gen: %s", tg_last_error());
    if (c.strategy != TG_MM_STRATEGY_AUTO) assert_int_equal(k.tiling.strategy, c.strategy);
    host_operand extras[2] = {{bias, (size_t)c.N}, {res, nc}};
    float *got = run_kernel(&k, (host_operand){a, na}, (host_operand){b, nb}, extras, nc, c.off);

    int bad = 0;
    for (int64_t bz = 0; bz < batch; bz++) {
        const float *A = a + (c.batch_a == 1 ? 0 : bz * sa);
        const float *B = b + (c.batch_b == 1 ? 0 : bz * sb);
        for (int64_t m = 0; m < c.M; m++) {
            for (int64_t n = c.N; n < ldc; n++) /* padding of C: not written */
                if (!isnan(got[(bz * c.M + m) * ldc + n]) && bad++ < 5)
                    print_error("wrote C padding at m=%lld n=%lld\n", (long long)m, (long long)n);
            for (int64_t n = 0; n < c.N; n++) {
                double ref = 0, mag = 0;
                for (int64_t kk = 0; kk < c.K; kk++) {
                    double x = c.ta ? A[kk * lda + m] : A[m * lda + kk];
                    double y = c.tb ? B[n * ldb + kk] : B[kk * ldb + n];
                    ref += x * y;
                    mag += fabs(x * y);
                }
                double tol = 1e-5 * mag + 1e-30;
                size_t ci = (size_t)((bz * c.M + m) * ldc + n);
                if (c.epilogue) {
                    /* tanh is 1-Lipschitz: the bound carries over; the
                     * device's tanh adds a few ulp of its own. */
                    ref = tanh(ref + bias[n] + res[ci]);
                    tol += 1e-5;
                }
                if (c.odt == TG_F16) tol += fabs(ref) * (1.0 / 2048) + 1e-7;
                double err = fabs((double)got[ci] - ref);
                if (!(err <= tol) && bad++ < 5)
                    print_error("M=%lld N=%lld K=%lld b=%lld m=%lld n=%lld: got %.9g want %.9g "
                                "(tol %.3g)\n",
                                (long long)c.M, (long long)c.N, (long long)c.K, (long long)bz,
                                (long long)m, (long long)n, got[ci], ref, tol);
            }
        }
    }
    if (bad)
        fail_msg("%d wrong elements: kernel %s (%s, tile %ux%u x %ux%u)\n", bad, k.name,
                 tg_mm_strategy_name(k.tiling.strategy), k.tiling.wg_x, k.tiling.wg_y, k.tiling.tm,
                 k.tiling.tn);
    tg_mm_kernel_free(&k);
    free(a);
    free(b);
    free(bias);
    free(res);
    free(got);
}

/* The shapes every strategy and dtype is run on. */
static const int64_t shapes[][3] = {
    {1, 1, 1},     {7, 13, 5},  {33, 65, 17}, {64, 64, 64}, {36, 68, 20}, /* vec4-aligned */
    {17, 9, 1},                                                           /* K = 1 */
    {1, 384, 64},  {1, 37, 12}, {3, 20, 8},                               /* M = 1 .. 3 */
    {130, 70, 33},                                                        /* > one workgroup */
    {150, 36, 24}, /* vec4 K: A's rows shuffled across subgroups, an edge past 128 rows */
};

static void run_suite(tg_dtype dt, tg_dtype odt, tg_mm_strategy s) {
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        check_mm((mm_case){shapes[i][0], shapes[i][1], shapes[i][2], 1, 1, false, false, dt, odt, s,
                           0, false, 0, 0, 0});
    /* all four transposes, on scalar-texel and vec4-texel shapes */
    const int64_t tshapes[][3] = {{33, 65, 17}, {36, 68, 20}, {8, 12, 4}};
    for (size_t i = 0; i < 3; i++)
        for (int t = 0; t < 4; t++)
            check_mm((mm_case){tshapes[i][0], tshapes[i][1], tshapes[i][2], 1, 1, t & 1, t >> 1, dt,
                               odt, s, 0, false, 0, 0, 0});
    /* batch broadcast: [3,M,K] x [1,K,N] and [1,M,K] x [3,K,N] */
    check_mm((mm_case){7, 13, 5, 3, 1, false, false, dt, odt, s, 0, false, 0, 0, 0});
    check_mm((mm_case){7, 13, 5, 1, 3, false, true, dt, odt, s, 0, false, 0, 0, 0});
    check_mm((mm_case){36, 68, 20, 3, 1, true, false, dt, odt, s, 0, false, 0, 0, 0});
    check_mm((mm_case){36, 68, 20, 1, 3, false, false, dt, odt, s, 0, false, 0, 0, 0});
    check_mm((mm_case){12, 16, 8, 2, 2, true, true, dt, odt, s, 0, false, 0, 0, 0});
    /* operands at offsets in their buffers, and a fused epilogue */
    check_mm((mm_case){33, 65, 17, 2, 2, false, false, dt, odt, s, 8, true, 0, 0, 0});
    check_mm((mm_case){36, 68, 20, 2, 1, false, true, dt, odt, s, 4, true, 0, 0, 0});
    /* plain products at an offset: whole 4-aligned blocks stored as vec4s
     * (f32), the edge blocks by element */
    check_mm((mm_case){36, 68, 20, 2, 1, false, false, dt, odt, s, 4, false, 0, 0, 0});
    check_mm((mm_case){150, 36, 24, 1, 1, false, false, dt, odt, s, 8, false, 0, 0, 0});
    /* padded rows: odd N and M read as vec4 texels through ldb / lda */
    check_mm((mm_case){33, 65, 17, 1, 1, false, false, dt, odt, s, 0, false, 0, 68, 67});
    check_mm((mm_case){33, 65, 20, 2, 2, true, true, dt, odt, s, 0, false, 36, 24, 0});
    check_mm((mm_case){7, 13, 5, 1, 2, true, false, dt, odt, s, 0, true, 9, 16, 14});
}

static void test_register_f32(void **state) {
    (void)state;
    run_suite(TG_F32, TG_F32, TG_MM_STRATEGY_REGISTER);
}
static void test_register_f16(void **state) {
    (void)state;
    if (!dev->caps.storage_16bit || !dev->caps.texel_r16f) skip();
    run_suite(TG_F16, TG_F16, TG_MM_STRATEGY_REGISTER);
}
/* The register kernel with one A fetch per lane and row (what devices
 * without subgroup shuffles run), and which one the default picks. */
static void test_register_per_lane(void **state) {
    (void)state;
    bool can =
        dev->caps.subgroup_in_compute && (dev->caps.subgroup_ops & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
    tg_mm_params p = {0};
    p.M = p.N = p.K = 64;
    p.dtype = p.out_dtype = TG_F32;
    p.strategy = TG_MM_STRATEGY_REGISTER;
    tg_mm_kernel k;
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_OK);
    assert_int_equal(k.tiling.a_shuffle != 0, can && dev->caps.subgroup_size <= 8);
    tg_mm_kernel_free(&k);
    p.transpose_a = true; /* A^T: vec4 texels along M, shuffled too */
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_OK);
    assert_int_equal(k.tiling.a_shuffle != 0, can && dev->caps.subgroup_size <= 8);
    tg_mm_kernel_free(&k);
    p.K = 66; /* scalar texels along K: still one row per lane */
    p.transpose_a = false;
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_OK);
    assert_int_equal(k.tiling.a_shuffle != 0, can && dev->caps.subgroup_size <= 8);
    tg_mm_kernel_free(&k);
    p.K = 64;
    p.M = 66; /* A^T with rows of 66: scalar texels along M, no shuffle */
    p.transpose_a = true;
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_OK);
    assert_int_equal(k.tiling.a_shuffle, 0);
    tg_mm_kernel_free(&k);
    p.M = 64;
    p.transpose_a = false;
    setenv("TG_MM_SHUFFLE", "0", 1);
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_OK);
    assert_int_equal(k.tiling.a_shuffle, 0);
    tg_mm_kernel_free(&k);
    run_suite(TG_F32, TG_F32, TG_MM_STRATEGY_REGISTER);
    unsetenv("TG_MM_SHUFFLE");
}
/* Short products on CPU devices (K <= 64, A not transposed, N whole
 * 64-column blocks) take 8 x 8 outputs a lane in 16 x 4 or 8 x 8 workgroups
 * (gen_matmul.c, short_k_tile); the values on such shapes, with edges,
 * offsets and the epilogue, and the default tile with $TG_MM_SHORT8=0. */
static void test_register_short_k(void **state) {
    (void)state;
    tg_mm_params p = {0};
    p.M = 128;
    p.N = 256;
    p.K = 64;
    p.dtype = p.out_dtype = TG_F32;
    p.strategy = TG_MM_STRATEGY_REGISTER;
    tg_mm_kernel k;
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_OK);
    bool cpu = dev->caps.device_class == TG_VK_CLASS_CPU && k.tiling.a_shuffle == 8;
    if (cpu) {
        assert_int_equal(k.tiling.tm, 8);
        assert_int_equal(k.tiling.tn, 8);
        assert_int_equal(k.tiling.wg_x, 16);
        assert_int_equal(k.tiling.wg_y, 4);
    }
    tg_mm_kernel_free(&k);
    p.M = 1024; /* enough workgroups for 64 columns */
    p.N = 64;   /* 64 columns: 8 x 8 workgroups */
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_OK);
    if (cpu) {
        assert_int_equal(k.tiling.tm * 16 + k.tiling.tn, 8 * 16 + 8);
        assert_int_equal(k.tiling.wg_x, 8);
        assert_int_equal(k.tiling.wg_y, 8);
    }
    tg_mm_kernel_free(&k);
    p.N = 96; /* not whole 64-column blocks: the default tile */
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_OK);
    assert_false(k.tiling.tm == 8 && k.tiling.tn == 8);
    tg_mm_kernel_free(&k);
    p.M = 128;
    p.N = 256;
    p.K = 65; /* longer: the default tile */
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_OK);
    assert_false(k.tiling.tm == 8 && k.tiling.tn == 8);
    tg_mm_kernel_free(&k);
    p.K = 64;
    p.transpose_b = true; /* B^T too */
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_OK);
    if (cpu) assert_int_equal(k.tiling.tm * 16 + k.tiling.tn, 8 * 16 + 8);
    tg_mm_kernel_free(&k);
    p.transpose_b = false;
    p.transpose_a = true; /* A^T: the default tile */
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_OK);
    assert_false(k.tiling.tm == 8 && k.tiling.tn == 8);
    tg_mm_kernel_free(&k);
    p.transpose_a = false;
    setenv("TG_MM_SHORT8", "0", 1);
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_OK);
    assert_false(k.tiling.tm == 8 && k.tiling.tn == 8);
    tg_mm_kernel_free(&k);
    unsetenv("TG_MM_SHORT8");
    const int64_t sk[][3] = {{128, 256, 64}, {130, 128, 64}, {64, 384, 20},
                             {7, 128, 4},    {100, 64, 64},  {64, 192, 12}};
    for (size_t i = 0; i < 6; i++) {
        check_mm((mm_case){sk[i][0], sk[i][1], sk[i][2], 1, 1, false, false, TG_F32, TG_F32,
                           TG_MM_STRATEGY_REGISTER, 0, false, 0, 0, 0});
        check_mm((mm_case){sk[i][0], sk[i][1], sk[i][2], 2, 1, false, false, TG_F32, TG_F32,
                           TG_MM_STRATEGY_REGISTER, 4, true, 0, 0, 0});
        check_mm((mm_case){sk[i][0], sk[i][1], sk[i][2], 1, 2, false, true, TG_F32, TG_F32,
                           TG_MM_STRATEGY_REGISTER, 0, true, 0, 0, 0});
    }
}
static void test_shared_f32(void **state) {
    (void)state;
    run_suite(TG_F32, TG_F32, TG_MM_STRATEGY_SHARED);
}
static void test_shared_f16(void **state) {
    (void)state;
    if (!dev->caps.storage_16bit || !dev->caps.texel_r16f) skip();
    run_suite(TG_F16, TG_F16, TG_MM_STRATEGY_SHARED);
}
static void test_auto_mixed(void **state) {
    (void)state;
    /* the device class's own choice, f16 inputs with an f32 output */
    check_mm((mm_case){33, 65, 17, 1, 1, false, false, TG_F32, TG_F32, TG_MM_STRATEGY_AUTO, 0,
                       false, 0, 0, 0});
    if (dev->caps.texel_r16f)
        check_mm((mm_case){36, 68, 20, 2, 1, true, false, TG_F16, TG_F32, TG_MM_STRATEGY_AUTO, 0,
                           false, 0, 0, 0});
}

/* ---- conv1d ---- */

typedef struct conv_case {
    int64_t batch, cin, width, cout, ksize, stride, padding, dilation;
    tg_dtype dt;
    tg_mm_strategy strategy;
    bool bias;
} conv_case;

static void check_conv(conv_case c) {
    int64_t wout = tg_conv1d_out_width(c.width, c.ksize, c.stride, c.padding, c.dilation);
    assert_true(wout > 0);
    size_t nx = (size_t)(c.batch * c.cin * c.width), nw = (size_t)(c.cout * c.cin * c.ksize);
    size_t no = (size_t)(c.batch * c.cout * wout);
    float *x = rand_vec(nx, c.dt), *w = rand_vec(nw, c.dt), *bias = rand_vec((size_t)c.cout, c.dt);
    tg_conv1d_params p = {0};
    p.batch = c.batch;
    p.cin = c.cin;
    p.width = c.width;
    p.cout = c.cout;
    p.ksize = c.ksize;
    p.stride = c.stride;
    p.padding = c.padding;
    p.dilation = c.dilation;
    p.dtype = c.dt;
    p.out_dtype = c.dt;
    p.strategy = c.strategy;
    if (c.bias) {
        p.epilogue = "acc + e0";
        p.n_extra = 1;
        p.extra[0] = (tg_mm_extra){TG_F32, 0, 1, 0}; /* bias[cout]: by row */
    }
    tg_mm_kernel k;
    tg_status st = tg_gen_conv1d(&dev->caps, &p, &k);
    if (st != TG_OK) fail_msg("gen: %s", tg_last_error());
    assert_int_equal(k.tiling.strategy, c.strategy);
    host_operand extras[1] = {{bias, (size_t)c.cout}};
    float *got = run_kernel(&k, (host_operand){w, nw}, (host_operand){x, nx}, extras, no, 0);
    int bad = 0;
    for (int64_t n = 0; n < c.batch; n++)
        for (int64_t co = 0; co < c.cout; co++)
            for (int64_t o = 0; o < wout; o++) {
                double ref = c.bias ? bias[co] : 0, mag = fabs(ref);
                for (int64_t ci = 0; ci < c.cin; ci++)
                    for (int64_t t = 0; t < c.ksize; t++) {
                        int64_t pos = o * c.stride + t * c.dilation - c.padding;
                        if (pos < 0 || pos >= c.width) continue;
                        double v = (double)w[(co * c.cin + ci) * c.ksize + t] *
                                   x[(n * c.cin + ci) * c.width + pos];
                        ref += v;
                        mag += fabs(v);
                    }
                double tol = 1e-5 * mag + 1e-30;
                if (c.dt == TG_F16) tol += fabs(ref) / 2048 + 1e-7;
                double g = got[(n * c.cout + co) * wout + o];
                if (!(fabs(g - ref) <= tol) && bad++ < 5)
                    print_error("conv n=%lld co=%lld o=%lld: got %.9g want %.9g\n", (long long)n,
                                (long long)co, (long long)o, g, ref);
            }
    if (bad)
        fail_msg("%d wrong: conv1d cin=%lld w=%lld cout=%lld k=%lld s=%lld p=%lld d=%lld (%s)", bad,
                 (long long)c.cin, (long long)c.width, (long long)c.cout, (long long)c.ksize,
                 (long long)c.stride, (long long)c.padding, (long long)c.dilation, k.name);
    tg_mm_kernel_free(&k);
    free(x);
    free(w);
    free(bias);
    free(got);
}

static void conv_suite(tg_mm_strategy s, tg_dtype dt) {
    for (int stride = 1; stride <= 2; stride++)
        for (int pad = 0; pad <= 1; pad++)
            for (int dil = 1; dil <= 2; dil++)
                check_conv((conv_case){2, 5, 19, 7, 3, stride, pad, dil, dt, s, false});
    /* Whisper's first conv shape class (K = cin*3 multiple of 4), with bias */
    check_conv((conv_case){1, 12, 40, 9, 3, 1, 1, 1, dt, s, true});
    check_conv((conv_case){2, 3, 8, 1, 1, 1, 0, 1, dt, s, true}); /* 1x1 conv */
}

static void test_conv_register(void **state) {
    (void)state;
    conv_suite(TG_MM_STRATEGY_REGISTER, TG_F32);
    if (dev->caps.storage_16bit && dev->caps.texel_r16f)
        conv_suite(TG_MM_STRATEGY_REGISTER, TG_F16);
}
static void test_conv_shared(void **state) {
    (void)state;
    conv_suite(TG_MM_STRATEGY_SHARED, TG_F32);
}

/* ---- several batch dims ---- */

/* Batch dims that merge give the same kernel as one batch stride; a
 * partial broadcast (A [2,1,M,K], B [3,K,N], a residual [2,1,M,N] added
 * by the epilogue) indexes each dim and matches the reference, in both
 * strategies. */
static void test_batch_dims(void **state) {
    (void)state;
    const int64_t M = 5, N = 6, K = 7, MK = M * K, KN = K * N, MN = M * N;
    tg_mm_params one = {0};
    one.M = M;
    one.N = N;
    one.K = K;
    one.dtype = one.out_dtype = TG_F32;
    tg_mm_params dense = one, partial = one;
    one.batch = 6;
    one.batch_stride_a = MK;
    one.batch_stride_c = MN; /* B shared */
    dense.n_batch_dims = 3;
    dense.batch_dims[0] = (tg_mm_batch_dim){2, 3 * MK, 0, 3 * MN, {0}};
    dense.batch_dims[1] = (tg_mm_batch_dim){1, 0, 0, 0, {0}}; /* extent 1: dropped */
    dense.batch_dims[2] = (tg_mm_batch_dim){3, MK, 0, MN, {0}};
    tg_mm_kernel k1, k2;
    OK_GEN(tg_gen_matmul(&dev->caps, &one, &k1));
    OK_GEN(tg_gen_matmul(&dev->caps, &dense, &k2));
    assert_string_equal(k1.glsl, k2.glsl);
    assert_null(strstr(k1.glsl, "boff_"));
    tg_mm_kernel_free(&k1);
    tg_mm_kernel_free(&k2);

    partial.n_batch_dims = 2;
    partial.batch_dims[0] = (tg_mm_batch_dim){2, MK, 0, 3 * MN, {MN}};
    partial.batch_dims[1] = (tg_mm_batch_dim){3, 0, KN, MN, {0}};
    partial.epilogue = "acc + e0";
    partial.n_extra = 1;
    partial.extra[0] = (tg_mm_extra){TG_F32, 0, N, 1};
    float *a = rand_vec((size_t)(2 * MK), TG_F32), *b = rand_vec((size_t)(3 * KN), TG_F32);
    float *r = rand_vec((size_t)(2 * MN), TG_F32);
    tg_mm_strategy strategies[] = {TG_MM_STRATEGY_REGISTER, TG_MM_STRATEGY_SHARED};
    for (int s = 0; s < 2; s++) {
        partial.strategy = strategies[s];
        OK_GEN(tg_gen_matmul(&dev->caps, &partial, &k1));
        assert_non_null(strstr(k1.glsl, "boff_"));
        host_operand extras[1] = {{r, (size_t)(2 * MN)}};
        float *got = run_kernel(&k1, (host_operand){a, (size_t)(2 * MK)},
                                (host_operand){b, (size_t)(3 * KN)}, extras, (size_t)(6 * MN), 0);
        for (int64_t i = 0; i < 2; i++)
            for (int64_t j = 0; j < 3; j++)
                for (int64_t m = 0; m < M; m++)
                    for (int64_t n = 0; n < N; n++) {
                        double ref = r[i * MN + m * N + n], mag = 0;
                        for (int64_t kk = 0; kk < K; kk++) {
                            double x = a[i * MK + m * K + kk], y = b[j * KN + kk * N + n];
                            ref += x * y;
                            mag += fabs(x * y);
                        }
                        double g = got[(i * 3 + j) * MN + m * N + n];
                        if (!(fabs(g - ref) <= 1e-5 * mag + 1e-6))
                            fail_msg("%s: [%lld,%lld,%lld,%lld] = %.9g, want %.9g", k1.name,
                                     (long long)i, (long long)j, (long long)m, (long long)n, g,
                                     ref);
                    }
        free(got);
        tg_mm_kernel_free(&k1);
    }
    free(a);
    free(b);
    free(r);
}

/* ---- errors and the tile table ---- */

static void test_errors(void **state) {
    (void)state;
    tg_vk_caps caps = dev->caps;
    caps.storage_16bit = false;
    tg_mm_params p = {0};
    p.M = p.N = p.K = 8;
    p.batch = 1;
    p.dtype = TG_F16;
    p.out_dtype = TG_F16;
    tg_mm_kernel k;
    assert_int_equal(tg_gen_matmul(&caps, &p, &k), TG_ERR_UNSUPPORTED);
    assert_non_null(strstr(tg_last_error(), "16"));
    assert_null(k.glsl);
    caps = dev->caps;
    caps.texel_r16f = caps.texel_rgba16f = false;
    p.out_dtype = TG_F32;
    assert_int_equal(tg_gen_matmul(&caps, &p, &k), TG_ERR_UNSUPPORTED);
    p.dtype = TG_I32;
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_ERR_INVALID_ARGUMENT);
    p.dtype = TG_F32;
    p.K = 0;
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_ERR_INVALID_ARGUMENT);
    p.K = 8;
    p.ldb = 7; /* shorter than a row of B */
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_ERR_INVALID_ARGUMENT);
    p.ldb = 0;
    p.K = 70000;
    p.M = 70000; /* A spans 4.9e9 elements: over the 32-bit index range */
    assert_int_equal(tg_gen_matmul(&dev->caps, &p, &k), TG_ERR_UNSUPPORTED);
    tg_conv1d_params c = {0};
    c.batch = 1;
    c.cin = 2;
    c.width = 3;
    c.cout = 2;
    c.ksize = 5; /* wider than the padded input */
    c.stride = c.dilation = 1;
    assert_int_equal(tg_gen_conv1d(&dev->caps, &c, &k), TG_ERR_SHAPE);
}

static void test_tiling_table(void **state) {
    (void)state;
    tg_vk_caps caps = dev->caps;
    tg_mm_tiling t;
    caps.device_class = TG_VK_CLASS_CPU;
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 1024, 1024, 1024, &t), TG_OK);
    assert_int_equal(t.strategy, TG_MM_STRATEGY_REGISTER);
    /* with subgroup shuffles: 16 x 4 blocks, A's rows shuffled across the
     * subgroup; without (or when A is not vec4 along K): 8 x 8 */
    caps.subgroup_size = 8;
    caps.subgroup_in_compute = true;
    caps.subgroup_ops |= VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 1024, 1024, 1024, &t), TG_OK);
    /* workgroups 32 x 2: 32 rows of 128 columns, whose stores are 512
     * contiguous bytes a row */
    assert_int_equal(t.tm * t.wg_y, 32);
    assert_int_equal(t.tn * t.wg_x, 128);
    assert_int_equal(t.a_shuffle, 8);
    /* N = 64: 64 columns, the lanes move to rows; N = 96 (charlm's
     * vocabulary) and 150: the width that pads N least, rows again */
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 1024, 64, 256, &t), TG_OK);
    assert_int_equal(t.wg_x, 16);
    assert_int_equal(t.wg_y, 4);
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 1024, 96, 64, &t), TG_OK);
    assert_int_equal(t.tn * t.wg_x, 32);
    assert_int_equal(t.wg_x * t.wg_y, 64);
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 1024, 150, 64, &t), TG_OK);
    assert_int_equal(t.tn * t.wg_x, 32);
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 1024, 384, 64, &t), TG_OK);
    assert_int_equal(t.tn * t.wg_x, 128);
    assert_int_equal(
        tg_mm_choose_tiling_for(&caps, TG_MM_STRATEGY_AUTO, 1024, 1024, 1024, false, &t), TG_OK);
    assert_int_equal(t.tm * t.wg_y, 64);
    assert_int_equal(t.a_shuffle, 0);
    caps.subgroup_ops &= ~(VkSubgroupFeatureFlags)VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 1024, 1024, 1024, &t), TG_OK);
    assert_int_equal(t.tm, 8);
    assert_int_equal(t.tn, 8);
    assert_int_equal(t.a_shuffle, 0);
    caps.subgroup_ops |= VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
    /* a decoder step: one row per invocation, lanes spent along N */
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 1, 384, 384, &t), TG_OK);
    assert_int_equal(t.tm, 1);
    assert_int_equal(t.wg_y, 1);
    /* a weight gradient, 64 x 64 over K = 1024: eight workgroups of a
     * subgroup each instead of one 128 x 32 workgroup */
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 64, 64, 1024, &t), TG_OK);
    assert_int_equal(t.wg_x * t.wg_y, 8);
    assert_int_equal((64 / (t.tm * t.wg_y)) * (64 / (t.tn * t.wg_x)), 8);
    assert_int_equal(t.a_shuffle, 8);
    caps.device_class = TG_VK_CLASS_NVIDIA;
    caps.max_shared_memory_bytes = 49152;
    caps.max_workgroup_invocations = 1024;
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 1024, 1024, 1024, &t), TG_OK);
    assert_int_equal(t.strategy, TG_MM_STRATEGY_SHARED);
    assert_true(t.bk * (t.wg_y * t.tm + t.wg_x * t.tn) * 4 <= 49152);
    /* a small device: the tile shrinks to its limits */
    caps.max_workgroup_invocations = 64;
    caps.max_shared_memory_bytes = 2048;
    assert_int_equal(tg_mm_choose_tiling(&caps, TG_MM_STRATEGY_AUTO, 1024, 1024, 1024, &t), TG_OK);
    assert_true(t.wg_x * t.wg_y <= 64);
    assert_true(t.bk * (t.wg_y * t.tm + t.wg_x * t.tn) * 4 <= 2048);
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
    rng_state = 12345;
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
        cmocka_unit_test(test_tiling_table),      cmocka_unit_test(test_errors),
        cmocka_unit_test(test_register_f32),      cmocka_unit_test(test_register_f16),
        cmocka_unit_test(test_register_per_lane), cmocka_unit_test(test_register_short_k),
        cmocka_unit_test(test_shared_f32),        cmocka_unit_test(test_shared_f16),
        cmocka_unit_test(test_auto_mixed),        cmocka_unit_test(test_conv_register),
        cmocka_unit_test(test_conv_shared),       cmocka_unit_test(test_batch_dims),
        cmocka_unit_test(test_validation_clean),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
