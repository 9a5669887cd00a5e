/* bench/matmul.c — GFLOP/s of the generated matmul kernels on the default
 * Vulkan device against OpenBLAS sgemm on the same CPU, in the same run.
 * Prints one JSON object.
 *
 * For every shape and storage dtype: one command buffer is recorded once,
 * run once to warm up (llvmpipe compiles at the first dispatch), then
 * replayed; each replay is timed with the wall clock around submit + wait
 * and the median is reported. OpenBLAS runs the same (f32) product.
 *
 * OpenBLAS reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE when the library
 * loads, before main; when either is set (this environment forces the
 * slower Haswell kernels with them) the benchmark re-executes itself with
 * both unset, so the baseline is OpenBLAS's own choice for this CPU.
 * Options: --quick (fewer shapes, for smoke tests), --f32 (no f16 runs),
 * --only PREFIX (shapes whose label starts with PREFIX, e.g. "train"),
 * --shape M,N,K[,t] (one shape; t: B transposed), --lp-threads N
 * (lavapipe's LP_NUM_THREADS; default: one per CPU). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "backend/gen_common.h"
#include "backend/gen_matmul.h"
#include "backend/vk.h"

#ifdef TG_HAVE_OPENBLAS
/* Declared here rather than through <cblas.h>, which Debian routes through
 * the alternatives system to whichever BLAS is selected. */
void cblas_sgemm(int order, int transa, int transb, int m, int n, int k, float alpha,
                 const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc);
char *openblas_get_corename(void);
int openblas_get_num_threads(void);
#endif

/* Repetitions so that one measurement takes about `budget` seconds. */
static int reps_for(double one_run_s, double budget, int lo, int hi) {
    int r = one_run_s > 0 ? (int)(budget / one_run_s) : hi;
    return r < lo ? lo : r > hi ? hi : r;
}

static uint64_t rng = 42;
static float frand(void) {
    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(rng >> 40) / (double)(1ull << 24) * 2.0 - 1.0);
}

typedef struct shape {
    int64_t M, N, K;
    bool tb;
    const char *label;
    int64_t ldb;    /* row stride of B; 0: dense */
    bool ta;        /* A stored transposed, [K, M] (a weight gradient's a^T b) */
    int64_t batch;  /* products in the grid's z; 0 means 1 */
    bool b_shared;  /* B broadcast over the batch (a weight) */
    bool bias_gelu; /* epilogue gelu(acc + bias[n]), as the graph fuses it */
} shape;

static int64_t batch_of(const shape *s) {
    return s->batch > 1 ? s->batch : 1;
}

/* Elements of one B matrix, and B's batch stride. */
static int64_t b_elems(const shape *s) {
    return (s->tb ? s->N : s->K) * (s->ldb ? s->ldb : (s->tb ? s->K : s->N));
}
static int64_t b_stride(const shape *s) {
    return s->b_shared ? 0 : b_elems(s);
}

static int64_t ldb_of(const shape *s) {
    return s->ldb ? s->ldb : (s->tb ? s->K : s->N);
}

static tg_vk_device *dev;

/* One kernel over `rows` rows of C (C may not fit one storage binding:
 * 1500 x 51865 f32 is 311 MB, lavapipe binds at most 128 MiB). */
typedef struct chunk {
    int64_t row0, rows;
    tg_mm_kernel k;
    tg_vk_pipeline *pipe;
    tg_vk_buffer c;
} chunk;

typedef struct result {
    double ours_gflops, ours_ms, max_rel_err;
    double ours_cores; /* process CPU seconds per wall second while timing */
    int reps;
    char kernel[64];
    tg_mm_tiling tiling;
    const char *error;
} result;

static char errbuf[512];

static const char *fail(const char *what) {
    snprintf(errbuf, sizeof errbuf, "%s: %s", what, tg_last_error());
    return errbuf;
}

static const char *gelu_epilogue = "0.5 * (acc + e0) * (1.0 + tg_erf((acc + e0) * 0.70710678))";

static double gelu_ref(double y) {
    return 0.5 * y * (1.0 + erf(y * 0.7071067811865476));
}

static result run_ours(const shape *s, tg_dtype dt, const float *a, const float *b,
                       const float *bias) {
    result r = {0};
    size_t es = dt == TG_F16 ? 2 : 4;
    int64_t nbatch = batch_of(s);
    size_t na = (size_t)(nbatch * s->M * s->K);
    size_t nb = (size_t)(b_elems(s) + (nbatch - 1) * b_stride(s));
    tg_vk_buffer ba = {0}, bb = {0}, be = {0};
    VkBufferView va = VK_NULL_HANDLE, vb = VK_NULL_HANDLE, ve = VK_NULL_HANDLE;
    chunk ch[16];
    int n_ch = 0;
    tg_vk_cmd *cmd = NULL;
    memset(ch, 0, sizeof ch);

    /* rows per chunk: C chunks within the storage range, a multiple of 4
     * so A's vec4 texel offset stays aligned */
    uint64_t max_range = dev->caps.max_storage_buffer_range;
    if (dev->caps.max_buffer_bytes && dev->caps.max_buffer_bytes < max_range)
        max_range = dev->caps.max_buffer_bytes;
    int64_t rows_per = (int64_t)(max_range / ((uint64_t)s->N * es)) / 4 * 4;
    if (nbatch > 1 || s->ta) /* one chunk: batched C and A^T are small here */
        rows_per = (uint64_t)(nbatch * s->M * s->N) * es <= max_range ? s->M : 0;
    if (rows_per < 4) {
        r.error = "N too large for one storage binding";
        return r;
    }
    for (int64_t r0 = 0; r0 < s->M && n_ch < 16; r0 += rows_per) {
        ch[n_ch].row0 = r0;
        ch[n_ch].rows = s->M - r0 < rows_per ? s->M - r0 : rows_per;
        n_ch++;
    }

    /* upload operands in storage dtype */
    void *tmp = malloc((na > nb ? na : nb) * es + 16);
    if (!tmp) {
        r.error = "out of memory";
        return r;
    }
    const float *src[2] = {a, b};
    size_t cnt[2] = {na, nb};
    tg_vk_buffer *dst[2] = {&ba, &bb};
    for (int i = 0; i < 2; i++) {
        for (size_t j = 0; j < cnt[i]; j++) {
            if (es == 2)
                ((uint16_t *)tmp)[j] = tg_f32_to_f16(src[i][j]);
            else
                ((float *)tmp)[j] = src[i][j];
        }
        size_t bytes = (cnt[i] * es + 15) / 16 * 16;
        if (tg_vk_buffer_create(dev, bytes, TG_VK_BUFFER_TEXEL, dst[i]) != TG_OK ||
            tg_vk_buffer_upload(dev, dst[i], 0, tmp, cnt[i] * es) != TG_OK) {
            r.error = fail("operand buffer");
            free(tmp);
            goto out;
        }
    }
    free(tmp);
    if (s->bias_gelu &&
        (tg_vk_buffer_create(dev, (size_t)(s->N + 4) * 4, TG_VK_BUFFER_TEXEL | TG_VK_BUFFER_STORAGE,
                             &be) != TG_OK ||
         tg_vk_buffer_upload(dev, &be, 0, bias, (size_t)s->N * 4) != TG_OK)) {
        r.error = fail("bias buffer");
        goto out;
    }

    for (int i = 0; i < n_ch; i++) {
        tg_mm_params p = {0};
        p.M = ch[i].rows;
        p.N = s->N;
        p.K = s->K;
        p.batch = nbatch;
        p.batch_stride_a = s->M * s->K;
        p.batch_stride_b = b_stride(s);
        p.batch_stride_c = s->M * s->N;
        p.transpose_a = s->ta;
        p.transpose_b = s->tb;
        if (s->bias_gelu) {
            p.n_extra = 1;
            p.extra[0] = (tg_mm_extra){TG_F32, 0, 0, 1};
            p.epilogue = gelu_epilogue;
            p.epilogue_functions = tg_gen_math_glsl();
        }
        p.ldb = s->ldb;
        p.dtype = dt;
        p.out_dtype = dt;
        p.name = "bench_mm";
        if (tg_gen_matmul(&dev->caps, &p, &ch[i].k) != TG_OK) {
            r.error = fail("generate");
            goto out;
        }
        tg_vk_spirv spv = {0};
        if (tg_vk_compile_glsl(ch[i].k.glsl, ch[i].k.name, 0, NULL, &spv) != TG_OK) {
            r.error = fail("compile");
            goto out;
        }
        tg_vk_pipeline_desc desc;
        tg_mm_pipeline_desc(&ch[i].k, spv.words, spv.n_words, &desc);
        tg_status st = tg_vk_pipeline_create(dev, &desc, &ch[i].pipe);
        tg_vk_spirv_free(&spv);
        if (st != TG_OK) {
            r.error = fail("pipeline");
            goto out;
        }
        if (tg_vk_buffer_create(dev, (VkDeviceSize)(nbatch * ch[i].rows * s->N) * es,
                                TG_VK_BUFFER_STORAGE, &ch[i].c) != TG_OK) {
            r.error = fail("output buffer");
            goto out;
        }
    }
    if (tg_vk_buffer_view_create(dev, &ba, ch[0].k.bindings[0].format, 0, VK_WHOLE_SIZE, &va) !=
            TG_OK ||
        tg_vk_buffer_view_create(dev, &bb, ch[0].k.bindings[1].format, 0, VK_WHOLE_SIZE, &vb) !=
            TG_OK) {
        r.error = fail("texel view");
        goto out;
    }
    if (s->bias_gelu && ch[0].k.bindings[2].kind == TG_VK_BIND_TEXEL &&
        tg_vk_buffer_view_create(dev, &be, ch[0].k.bindings[2].format, 0, VK_WHOLE_SIZE, &ve) !=
            TG_OK) {
        r.error = fail("bias view");
        goto out;
    }
    if (tg_vk_cmd_begin(dev, 0, &cmd) != TG_OK) {
        r.error = fail("cmd");
        goto out;
    }
    for (int i = 0; i < n_ch; i++) {
        tg_vk_binding bind[4] = {{0}};
        uint32_t push[4] = {0};
        for (int j = 0; j < ch[i].k.n_bindings; j++) {
            const tg_mm_binding *bd = &ch[i].k.bindings[j];
            if (bd->role == TG_MM_ROLE_A) {
                bind[j].view = va;
                push[j] = (uint32_t)(ch[i].row0 * s->K); /* the chunk's first row */
            }
            if (bd->role == TG_MM_ROLE_B) bind[j].view = vb;
            if (bd->role == TG_MM_ROLE_EXTRA) {
                bind[j].view = ve;
                bind[j].buffer = &be;
            }
            if (bd->role == TG_MM_ROLE_C) bind[j].buffer = &ch[i].c;
        }
        if (tg_vk_cmd_dispatch(cmd, ch[i].pipe, bind, push, ch[i].k.push_constant_bytes,
                               ch[i].k.groups) != TG_OK) {
            r.error = fail("dispatch");
            goto out;
        }
    }
    if (tg_vk_cmd_end(cmd) != TG_OK) {
        r.error = fail("cmd end");
        goto out;
    }
    /* warm-up: llvmpipe JIT-compiles at the first dispatch */
    if (tg_vk_cmd_run(cmd) != TG_OK) {
        r.error = fail("run");
        goto out;
    }
    double t0 = bench_now_s();
    if (tg_vk_cmd_run(cmd) != TG_OK) {
        r.error = fail("run");
        goto out;
    }
    double one = bench_now_s() - t0;
    int reps = reps_for(one, 1.5, 3, 11);
    double times[32];
    double wall0 = bench_now_s(), cpu0 = bench_cpu_s();
    for (int i = 0; i < reps; i++) {
        t0 = bench_now_s();
        if (tg_vk_cmd_run(cmd) != TG_OK) {
            r.error = fail("run");
            goto out;
        }
        times[i] = bench_now_s() - t0;
    }
    r.ours_cores = (bench_cpu_s() - cpu0) / (bench_now_s() - wall0);
    double med = bench_median(times, reps);
    r.ours_ms = med * 1e3;
    r.ours_gflops = 2.0 * (double)nbatch * (double)s->M * (double)s->N * (double)s->K / med * 1e-9;
    r.reps = reps;
    snprintf(r.kernel, sizeof r.kernel, "%s", ch[0].k.name);
    r.tiling = ch[0].k.tiling;

    /* spot-check 64 elements against a double dot product (inputs as the
     * device saw them) */
    for (int t = 0; t < 64; t++) {
        int64_t m = (int64_t)((unsigned)(t * 2654435761u) % (unsigned)s->M);
        int64_t n = (int64_t)((unsigned)(t * 40503u + 7) % (unsigned)s->N);
        int64_t bi = t % nbatch;
        const float *ab = a + bi * s->M * s->K, *bb_ = b + bi * b_stride(s);
        double ref = 0, mag = 0;
        for (int64_t k = 0; k < s->K; k++) {
            double x = s->ta ? ab[k * s->M + m] : ab[m * s->K + k];
            double y = s->tb ? bb_[n * ldb_of(s) + k] : bb_[k * ldb_of(s) + n];
            if (dt == TG_F16) {
                x = tg_f16_to_f32(tg_f32_to_f16((float)x));
                y = tg_f16_to_f32(tg_f32_to_f16((float)y));
            }
            ref += x * y;
            mag += fabs(x * y);
        }
        if (s->bias_gelu) { /* gelu is 1-Lipschitz-ish: the error bound stays mag */
            mag += fabs(bias[n]);
            ref = gelu_ref(ref + bias[n]);
        }
        int ci = 0;
        while (ci + 1 < n_ch && ch[ci + 1].row0 <= m) ci++;
        VkDeviceSize off = (VkDeviceSize)((bi * s->M + m - ch[ci].row0) * s->N + n) * es;
        float got;
        if (es == 2) {
            uint16_t h;
            tg_vk_buffer_download(dev, &ch[ci].c, off, &h, 2);
            got = tg_f16_to_f32(h);
        } else {
            tg_vk_buffer_download(dev, &ch[ci].c, off, &got, 4);
        }
        double e = fabs(got - ref) / (mag > 0 ? mag : 1);
        if (!(e <= r.max_rel_err)) r.max_rel_err = isnan(e) ? INFINITY : e;
    }
out:
    tg_vk_cmd_free(cmd);
    if (va) tg_vk_buffer_view_destroy(dev, va);
    if (vb) tg_vk_buffer_view_destroy(dev, vb);
    if (ve) tg_vk_buffer_view_destroy(dev, ve);
    tg_vk_buffer_destroy(dev, &be);
    for (int i = 0; i < n_ch; i++) {
        if (ch[i].pipe) tg_vk_pipeline_destroy(dev, ch[i].pipe);
        tg_vk_buffer_destroy(dev, &ch[i].c);
        tg_mm_kernel_free(&ch[i].k);
    }
    tg_vk_buffer_destroy(dev, &ba);
    tg_vk_buffer_destroy(dev, &bb);
    return r;
}

#ifdef TG_HAVE_OPENBLAS
/* The same products (the batch as a loop of sgemm calls; no epilogue). */
static void sgemm_batch(const shape *s, const float *a, const float *b, float *c) {
    int M = (int)s->M, N = (int)s->N, K = (int)s->K;
    for (int64_t i = 0; i < batch_of(s); i++)
        cblas_sgemm(101, s->ta ? 112 : 111, s->tb ? 112 : 111, M, N, K, 1.0f, a + i * M * K,
                    s->ta ? M : K, b + i * b_stride(s), (int)ldb_of(s), 0.0f, c + i * M * N, N);
}
#endif

static double run_openblas(const shape *s, const float *a, const float *b, float *c,
                           double *cores) {
    *cores = 0;
#ifdef TG_HAVE_OPENBLAS
    int M = (int)s->M, N = (int)s->N, K = (int)s->K;
    sgemm_batch(s, a, b, c);
    double t0 = bench_now_s();
    sgemm_batch(s, a, b, c);
    int reps = reps_for(bench_now_s() - t0, 1.0, 3, 11);
    double times[32];
    double wall0 = bench_now_s(), cpu0 = bench_cpu_s();
    for (int i = 0; i < reps; i++) {
        t0 = bench_now_s();
        sgemm_batch(s, a, b, c);
        times[i] = bench_now_s() - t0;
    }
    *cores = (bench_cpu_s() - cpu0) / (bench_now_s() - wall0);
    return 2.0 * (double)batch_of(s) * M * N * K / bench_median(times, reps) * 1e-9;
#else
    (void)s;
    (void)a;
    (void)b;
    (void)c;
    return 0;
#endif
}

int main(int argc, char **argv) {
    bool quick = false, f32_only = false;
    const char *only = NULL; /* --only PREFIX: the shapes whose label starts so */
    /* lavapipe's worker threads (read when the device opens): by default
     * one per CPU, as OpenBLAS uses every core; 0 runs each dispatch on
     * the calling thread (cheap dispatches, one core: what the training
     * step uses for its many small kernels). The environment's value is
     * overridden and reported. */
    int lp_threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    const char *lp_env = getenv("LP_NUM_THREADS");
    char lp_env_copy[32];
    snprintf(lp_env_copy, sizeof lp_env_copy, "%s", lp_env ? lp_env : "");
    shape one = {0, 0, 0, false, "custom", 0, false, 1, false, false};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) quick = true;
        if (strcmp(argv[i], "--f32") == 0) f32_only = true;
        if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
        if (strcmp(argv[i], "--lp-threads") == 0 && i + 1 < argc) lp_threads = atoi(argv[++i]);
        if (strcmp(argv[i], "--shape") == 0 && i + 1 < argc) {
            long long m = 0, n = 0, k = 0;
            char t = 0;
            if (sscanf(argv[++i], "%lld,%lld,%lld,%c", &m, &n, &k, &t) >= 3 && m > 0 && n > 0 &&
                k > 0) {
                one.M = m;
                one.N = n;
                one.K = k;
                one.tb = t == 't';
            }
        }
    }
    const char *orig_core = getenv("OPENBLAS_CORETYPE");
    const char *orig_l2 = getenv("OPENBLAS_L2_SIZE");
    bool reexec = getenv("TG_BENCH_MATMUL_REEXEC") != NULL;
#ifdef TG_HAVE_OPENBLAS
    if (!reexec && (orig_core || orig_l2)) {
        /* remember what was set, for the report */
        setenv("TG_BENCH_MATMUL_REEXEC", "1", 1);
        setenv("TG_BENCH_ORIG_CORETYPE", orig_core ? orig_core : "", 1);
        setenv("TG_BENCH_ORIG_L2", orig_l2 ? orig_l2 : "", 1);
        unsetenv("OPENBLAS_CORETYPE");
        unsetenv("OPENBLAS_L2_SIZE");
        execv("/proc/self/exe", argv);
        /* exec failed: OpenBLAS keeps the variables it loaded with; the
         * report says reexec_without_env false */
    }
#endif
    if (reexec) {
        orig_core = getenv("TG_BENCH_ORIG_CORETYPE");
        orig_l2 = getenv("TG_BENCH_ORIG_L2");
    }

    char lp_buf[16];
    snprintf(lp_buf, sizeof lp_buf, "%d", lp_threads < 0 ? 0 : lp_threads);
    setenv("LP_NUM_THREADS", lp_buf, 1);
    if (tg_vk_device_open(-1, &dev) != TG_OK) {
        printf("{\"bench\": \"matmul\", \"error\": \"%s\"}\n", tg_last_error());
        return 1;
    }

    printf("{\n  \"bench\": \"matmul\",\n");
    printf("  \"device\": \"%s\",\n  \"device_class\": \"%s\",\n", dev->caps.name,
           tg_vk_device_class_name(dev->caps.device_class));
    printf("  \"lp_num_threads\": %s, \"lp_num_threads_in_environment\": \"%s\",\n", lp_buf,
           lp_env_copy);
    printf("  \"timing\": \"median wall-clock of submit+wait of a recorded command buffer, after "
           "a warm-up run and a timing run\",\n");
#ifdef TG_HAVE_OPENBLAS
    printf("  \"openblas\": {\"corename\": \"%s\", \"threads\": %d, \"reexec_without_env\": %s, "
           "\"original_OPENBLAS_CORETYPE\": \"%s\", \"original_OPENBLAS_L2_SIZE\": \"%s\", "
           "\"OPENBLAS_CORETYPE_now\": \"%s\"},\n",
           openblas_get_corename(), openblas_get_num_threads(), reexec ? "true" : "false",
           orig_core ? orig_core : "", orig_l2 ? orig_l2 : "",
           getenv("OPENBLAS_CORETYPE") ? getenv("OPENBLAS_CORETYPE") : "");
#else
    (void)orig_core;
    (void)orig_l2;
    printf("  \"openblas\": null,\n");
#endif
    static const shape all[] = {
        {256, 256, 256, false, "square", 0, false, 1, false, false},
        {512, 512, 512, false, "square", 0, false, 1, false, false},
        {1024, 1024, 1024, false, "square", 0, false, 1, false, false},
        {2048, 2048, 2048, false, "square", 0, false, 1, false, false},
        {1500, 384, 384, false, "whisper", 0, false, 1, false, false},
        {1500, 1536, 384, false, "whisper", 0, false, 1, false, false},
        {1500, 384, 1536, false, "whisper", 0, false, 1, false, false},
        /* N = 51865 is odd: B's rows padded to 51868 elements so they read
         * as vec4 texels (dense, scalar texels are about 2x slower) */
        {1500, 51865, 384, false, "whisper_ldb_51868", 51868, false, 1, false, false},
        /* Whisper's logits multiply by the token embedding transposed */
        {1500, 51865, 384, true, "whisper_logits_nt", 0, false, 1, false, false},
        /* the demo's training step (docs/kernels.md): batch 16 x 150
         * encoder positions, d_model 128, 4 heads of 32, MLP 512 */
        {150, 512, 128, true, "train_fc1", 0, false, 16, true, false},
        {150, 512, 128, true, "train_fc1_bias_gelu", 0, false, 16, true, true},
        {150, 128, 512, true, "train_fc2", 0, false, 16, true, false},
        {150, 150, 32, true, "train_attn_scores", 0, false, 64, false, false},
        {150, 32, 150, false, "train_attn_values", 0, false, 64, false, false},
        {128, 512, 2400, false, "train_weight_grad_ta", 0, true, 1, false, false},
        {2400, 128, 512, false, "train_input_grad", 0, false, 1, false, false},
    };
    static const shape quick_set[] = {
        {256, 256, 256, false, "square", 0, false, 1, false, false},
        {1500, 384, 384, false, "whisper", 0, false, 1, false, false}};
    const shape *shapes = one.M ? &one : quick ? quick_set : all;
    int n_shapes = one.M ? 1 : quick ? 2 : (int)(sizeof all / sizeof all[0]);

    printf("  \"results\": [\n");
    bool first = true;
    for (int si = 0; si < n_shapes; si++) {
        const shape *s = &shapes[si];
        if (only && strncmp(s->label, only, strlen(only)) != 0) continue;
        int64_t nbatch = batch_of(s);
        size_t na = (size_t)(nbatch * s->M * s->K);
        size_t nb = (size_t)(b_elems(s) + (nbatch - 1) * b_stride(s));
        size_t nc = (size_t)(nbatch * s->M * s->N);
        float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b), *c = malloc(nc * sizeof *c);
        float *bias = malloc((size_t)s->N * sizeof *bias);
        if (!a || !b || !c || !bias) {
            free(a);
            free(b);
            free(c);
            free(bias);
            continue;
        }
        for (size_t i = 0; i < na; i++) a[i] = frand();
        for (size_t i = 0; i < nb; i++) b[i] = frand();
        for (int64_t i = 0; i < s->N; i++) bias[i] = frand();
        double blas_cores;
        double blas = run_openblas(s, a, b, c, &blas_cores);
        for (int d = 0; d < (s->tb || f32_only ? 1 : 2); d++) { /* the NT extra: f32 only (time) */
            tg_dtype dt = d ? TG_F16 : TG_F32;
            result r = run_ours(s, dt, a, b, bias);
            printf("%s    {\"label\": \"%s\", \"M\": %lld, \"N\": %lld, \"K\": %lld, "
                   "\"transpose_a\": %s, \"transpose_b\": %s, \"ldb\": %lld, \"batch\": %lld, "
                   "\"b_shared\": %s, \"epilogue\": \"%s\", \"dtype\": \"%s\", ",
                   first ? "" : ",\n", s->label, (long long)s->M, (long long)s->N, (long long)s->K,
                   s->ta ? "true" : "false", s->tb ? "true" : "false", (long long)ldb_of(s),
                   (long long)nbatch, s->b_shared ? "true" : "false",
                   s->bias_gelu ? "gelu(acc + bias[n]); OpenBLAS: the product only" : "none",
                   tg_dtype_name(dt));
            first = false;
            if (r.error) {
                printf("\"error\": \"%s\"}", r.error);
                continue;
            }
            printf(
                "\"kernel\": \"%s\", \"strategy\": \"%s\", \"workgroup\": [%u, %u], "
                "\"block\": [%u, %u], \"reps\": %d, \"ours_ms\": %.3f, \"ours_gflops\": %.2f, "
                "\"ours_cores\": %.2f, \"openblas_sgemm_gflops\": %.2f, \"openblas_cores\": %.2f, "
                "\"ratio\": %.3f, "
                "\"max_rel_err\": %.2e}",
                r.kernel, tg_mm_strategy_name(r.tiling.strategy), r.tiling.wg_x, r.tiling.wg_y,
                r.tiling.tm, r.tiling.tn, r.reps, r.ours_ms, r.ours_gflops, r.ours_cores, blas,
                blas_cores, blas > 0 ? r.ours_gflops / blas : 0, r.max_rel_err);
            fflush(stdout);
        }
        free(a);
        free(b);
        free(c);
        free(bias);
    }
    printf("\n  ]\n}\n");
    tg_vk_device_close(dev);
    return 0;
}
