/* backend/gen_matmul.c — GLSL for matmul and conv1d (implicit GEMM).
 *
 * Two strategies (backend/device_class.c picks one per device class):
 *  - REGISTER: every invocation owns a TM x TN block of C in vec4
 *    accumulators, fully unrolled, reading A and B straight from texel
 *    buffers. No shared memory and no barriers: on CPU devices (lavapipe)
 *    invocations are SIMD lanes, shared memory is plain memory plus
 *    barriers, and texel fetches are 4-5x cheaper than SSBO loads. Where
 *    the device has subgroup shuffles, each lane fetches a different row
 *    of A and subgroupShuffle hands the rows around (tiling.a_shuffle).
 *  - SHARED: the classic GPU kernel: the workgroup stages a BM x BK tile of
 *    A and a BK x BN tile of B in shared memory (vec4 loads where the
 *    contiguous dimension allows), then each invocation accumulates TM x TN
 *    outputs strided by the workgroup size.
 * Both read A and B through uniform texel buffers (vec4 texels when the
 * contiguous dimension and offsets are multiples of 4, else scalar texels),
 * so the binding layout is the same and texel fetches are the vectorised
 * loads on GPUs too. Out-of-range rows/cols are clamped on load and masked on
 * store; the K tail is handled exactly (zeros or a scalar tail step).
 */
#include "backend/gen_matmul.h"

#include "backend/device_class.h"
#include "backend/gen_common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph_internal.h"
#include "graph/strbuf.h"

/* ---- one description for both entry points ---- */

/* Operands, as indices into a batch dim's strides (batch_stride). */
enum { OP_A, OP_B, OP_C, OP_E0 };

typedef struct mm_desc {
    int64_t M, N, K;
    int64_t batch; /* the product of the batch extents: the grid's z */
    /* batch dims after merging (set_batch): at least one, outermost first;
     * nb == 1 is the single-stride case */
    int nb;
    tg_mm_batch_dim bd[TG_MM_MAX_BATCH_DIMS];
    int64_t lda, ldb, ldc; /* row strides, resolved (never 0) */
    bool ta, tb;
    tg_dtype dtype, out_dtype;
    const char *epilogue, *epilogue4, *functions;
    int n_extra;
    const tg_mm_extra *extra;
    /* extras read through scalar texel buffers (else storage buffers):
     * set by generate() where the device has the format */
    bool extra_texel[TG_MM_MAX_EXTRA];
    /* extras that change along rows and columns read 4 columns at a time
     * (load4_e<i>) through an RGBA storage texel buffer (set by generate()
     * on CPUs, see there) */
    bool extra_quad[TG_MM_MAX_EXTRA];
    /* A and B as storage texel buffers read by imageLoad (set by
     * generate() on CPUs, see there), in formats fa and fb */
    bool img_ab;
    tg_vk_texel_format fa, fb;
    tg_mm_strategy strategy;
    const char *name;
    /* rows of one matrix when the batch was folded into M (fold_batch),
     * else 0 */
    int64_t fold_m;
    /* conv1d: B is im2col(x) */
    bool conv;
    int64_t cin, width, ksize, stride, padding, dilation;
    bool offsets_zero; /* tg_mm_params.offsets_zero */
    bool pairs;        /* vec4 stores as two 64-bit halves (tg_store_pairs) */
} mm_desc;

static const char xyzw[] = "xyzw";

static const char *store_type(tg_dtype t) {
    return t == TG_F16 ? "float16_t" : "float";
}

static bool fits_i32(int64_t v) {
    return v >= 0 && v < ((int64_t)1 << 31);
}

static int64_t batch_stride(const tg_mm_batch_dim *bd, int op) {
    return op == OP_A   ? bd->stride_a
           : op == OP_B ? bd->stride_b
           : op == OP_C ? bd->stride_c
                        : bd->stride_extra[op - OP_E0];
}

/* Copies the batch dims into d, dropping extent-1 dims and merging an
 * outer dim into the next inner one wherever every operand's outer stride
 * is its inner stride times the inner extent (dense, or broadcast over
 * both): a batch broadcast only partially keeps one dim per change of
 * layout. Leaves at least one dim. Extents must be >= 1 and their product
 * below 2^31. */
static tg_status set_batch(mm_desc *d, int n, const tg_mm_batch_dim *dims) {
    const char *nm = d->name ? d->name : "matmul";
    if (n < 1 || n > TG_MM_MAX_BATCH_DIMS)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "%s: %d batch dims (1 to %d)", nm, n,
                            TG_MM_MAX_BATCH_DIMS);
    int n_extra = d->n_extra < 0 ? 0 : d->n_extra > TG_MM_MAX_EXTRA ? TG_MM_MAX_EXTRA : d->n_extra;
    int n_ops = OP_E0 + n_extra; /* check_desc rejects a bad n_extra later */
    d->nb = 0;
    d->batch = 1;
    for (int i = 0; i < n; i++) {
        const tg_mm_batch_dim *x = &dims[i];
        if (x->extent < 1 || x->extent >= ((int64_t)1 << 31) / d->batch)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "%s: batch dim %d has extent %lld (the batch must hold 1 to "
                                "2^31 - 1 matrices)",
                                nm, i, (long long)x->extent);
        for (int op = 0; op < n_ops; op++)
            if (batch_stride(x, op) < 0)
                return tg_set_error(TG_ERR_INVALID_ARGUMENT, "%s: negative batch stride", nm);
        d->batch *= x->extent;
        if (x->extent == 1) continue;
        tg_mm_batch_dim *outer = d->nb ? &d->bd[d->nb - 1] : NULL;
        bool merge = outer != NULL;
        for (int op = 0; merge && op < n_ops; op++)
            merge = batch_stride(outer, op) == batch_stride(x, op) * x->extent;
        if (merge) {
            int64_t e = outer->extent * x->extent;
            *outer = *x;
            outer->extent = e;
        } else {
            d->bd[d->nb++] = *x;
        }
    }
    if (d->nb == 0) d->bd[d->nb++] = (tg_mm_batch_dim){.extent = 1};
    for (int i = 0; i < d->nb; i++) /* the unused extras' strides stay out of the GLSL */
        for (int e = n_extra; e < TG_MM_MAX_EXTRA; e++) d->bd[i].stride_extra[e] = 0;
    return TG_OK;
}

/* Largest element index an operand may reach (for the 32-bit check). */
static int64_t span(const mm_desc *d, int op, int64_t elems) {
    int64_t s = elems;
    for (int i = 0; i < d->nb; i++) s += (d->bd[i].extent - 1) * batch_stride(&d->bd[i], op);
    return s;
}

/* Whether every batch stride of an operand is a multiple of 4 (vec4 texels). */
static bool batch_vec4(const mm_desc *d, int op) {
    for (int i = 0; i < d->nb; i++)
        if (batch_stride(&d->bd[i], op) % 4) return false;
    return true;
}

/* A batch over which B is shared and A, C and the extras are dense along
 * it is one tall product: batch x [M, K] x [K, N] = [batch*M, K] x [K, N].
 * Folding it into M spends the tile's edge once instead of per matrix
 * (16 x [150, 128] x [128, 512] padded to 64-row tiles computes 28% more
 * rows than it stores; folded, 1.3%). The epilogue still sees the
 * matrix's own bz and row (store_ce splits the folded row). */
static void fold_batch(mm_desc *d) {
    if (d->nb != 1 || d->batch <= 1 || d->ta || d->conv) return;
    const tg_mm_batch_dim *x = &d->bd[0];
    if (x->stride_b != 0 || x->stride_a != d->M * d->lda || x->stride_c != d->M * d->ldc) return;
    for (int e = 0; e < d->n_extra; e++)
        if (x->stride_extra[e] != d->M * d->extra[e].stride_row) return;
    if (!fits_i32(d->M * d->batch)) return;
    d->fold_m = d->M;
    d->M *= d->batch;
    d->batch = 1;
    d->bd[0] = (tg_mm_batch_dim){.extent = 1};
}

static tg_status check_desc(const tg_vk_caps *caps, const mm_desc *d) {
    const char *nm = d->name ? d->name : "matmul";
    if (d->M < 1 || d->N < 1 || d->K < 1)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "%s: sizes must be >= 1 (M=%lld N=%lld K=%lld)", nm, (long long)d->M,
                            (long long)d->N, (long long)d->K);
    if ((d->dtype != TG_F32 && d->dtype != TG_F16) ||
        (d->out_dtype != TG_F32 && d->out_dtype != TG_F16))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "%s: storage must be f32 or f16 (got %s inputs, %s output)", nm,
                            tg_dtype_name(d->dtype), tg_dtype_name(d->out_dtype));
    if (d->n_extra < 0 || d->n_extra > TG_MM_MAX_EXTRA || (d->n_extra && !d->extra))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "%s: %d extra inputs (at most %d)", nm,
                            d->n_extra, TG_MM_MAX_EXTRA);
    bool need16 = d->out_dtype == TG_F16;
    for (int i = 0; i < d->n_extra; i++) {
        if (d->extra[i].dtype != TG_F32 && d->extra[i].dtype != TG_F16)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT, "%s: extra input %d must be f32 or f16",
                                nm, i);
        need16 |= d->extra[i].dtype == TG_F16;
    }
    if (need16 && !caps->storage_16bit)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s: f16 storage buffers need storageBuffer16BitAccess, which "
                            "device '%s' lacks",
                            nm, caps->name);
    if (d->dtype == TG_F16 && !caps->texel_r16f && !caps->texel_rgba16f)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s: f16 inputs need R16F or RGBA16F uniform texel buffers, which "
                            "device '%s' lacks",
                            nm, caps->name);
    if (d->dtype == TG_F32 && !caps->texel_r32f && !caps->texel_rgba32f)
        return tg_set_error(TG_ERR_UNSUPPORTED, "%s: device '%s' has no f32 uniform texel buffers",
                            nm, caps->name);
    if (d->lda < (d->ta ? d->M : d->K) || (!d->conv && d->ldb < (d->tb ? d->K : d->N)) ||
        d->ldc < d->N)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "%s: row strides lda=%lld ldb=%lld ldc=%lld are shorter than the rows",
                            nm, (long long)d->lda, (long long)d->ldb, (long long)d->ldc);
    int64_t a_elems = (d->ta ? d->K : d->M) * d->lda;
    int64_t b_elems = d->conv ? d->cin * d->width : (d->tb ? d->N : d->K) * d->ldb;
    if (!fits_i32(span(d, OP_A, a_elems)) || !fits_i32(span(d, OP_B, b_elems)) ||
        !fits_i32(span(d, OP_C, d->M * d->ldc)))
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s: an operand spans more than 2^31 elements (M=%lld N=%lld K=%lld "
                            "batch=%lld); split it",
                            nm, (long long)d->M, (long long)d->N, (long long)d->K,
                            (long long)d->batch);
    return TG_OK;
}

/* Texel format of an operand: vec4 texels when wanted and supported. */
static bool pick_format(const tg_vk_caps *caps, tg_dtype dt, bool want_vec, tg_vk_texel_format *f) {
    bool v = dt == TG_F16 ? caps->texel_rgba16f : caps->texel_rgba32f;
    bool s = dt == TG_F16 ? caps->texel_r16f : caps->texel_r32f;
    if (want_vec && v) {
        *f = dt == TG_F16 ? TG_VK_TEXEL_RGBA16F : TG_VK_TEXEL_RGBA32F;
        return true;
    }
    if (!s) { /* only vec4 texels exist: the caller must have a vec layout */
        *f = dt == TG_F16 ? TG_VK_TEXEL_RGBA16F : TG_VK_TEXEL_RGBA32F;
        return want_vec;
    }
    *f = dt == TG_F16 ? TG_VK_TEXEL_R16F : TG_VK_TEXEL_R32F;
    return false;
}

/* ---- the parts both strategies share ---- */

static const char op_names[] = "abc";

/* The GLSL expression for operand op's element offset at batch index bz. */
static const char *batch_off(const mm_desc *d, int op, char *buf, size_t n) {
    if (d->nb > 1 && op < OP_E0)
        snprintf(buf, n, "boff_%c(bz)", op_names[op]);
    else if (d->nb > 1)
        snprintf(buf, n, "boff_e%d(bz)", op - OP_E0);
    else if (op < OP_E0)
        snprintf(buf, n, "bz * S%c", "ABC"[op]);
    else
        snprintf(buf, n, "bz * %lld", (long long)d->bd[0].stride_extra[op - OP_E0]);
    return buf;
}

/* Plain f32 products, and those whose epilogue comes in a vec4 form
 * (tg_mm_params.epilogue4), whose rows of C start at multiples of 4
 * elements (but for C's offset, checked at run time) store whole blocks
 * as vec4s: on llvmpipe every storage-buffer store is a loop over the
 * lanes with a bounds check, so one vec4 store costs about what one float
 * store does (1500x1536x384: the 64 scalar stores of a 16x4 block were
 * ~6% of the kernel). Other epilogues keep the scalar stores. */
static bool has_epilogue(const mm_desc *d) {
    return d->epilogue && d->epilogue[0];
}
static bool vec4_epilogue(const mm_desc *d) {
    return has_epilogue(d) && d->epilogue4 && d->epilogue4[0];
}
static bool vec4_stores(const mm_desc *d) {
    bool plain = d->n_extra == 0 && !has_epilogue(d);
    return (plain || vec4_epilogue(d)) && d->out_dtype == TG_F32 && d->nb == 1 && d->ldc % 4 == 0 &&
           d->bd[0].stride_c % 4 == 0;
}

/* One batch dim: the strides SA, SB, SC. Several: boff_<op>(bz) splits bz
 * into per-dim indices by constant divisions (innermost dim first) and
 * sums their strided offsets; a zero stride costs nothing. */
static void emit_batch(tg_sb *b, const mm_desc *d) {
    if (d->nb == 1) {
        tg_sb_printf(b, "const int SA = %lld, SB = %lld, SC = %lld;\n",
                     (long long)d->bd[0].stride_a, (long long)d->bd[0].stride_b,
                     (long long)d->bd[0].stride_c);
        return;
    }
    for (int op = 0; op < OP_E0 + d->n_extra; op++) {
        if (op < OP_E0)
            tg_sb_printf(b, "int boff_%c(int bz) {\n    int o = 0;\n", op_names[op]);
        else
            tg_sb_printf(b, "int boff_e%d(int bz) {\n    int o = 0;\n", op - OP_E0);
        for (int i = d->nb - 1; i >= 0; i--) {
            int64_t s = batch_stride(&d->bd[i], op), e = d->bd[i].extent;
            if (i == 0) {
                if (s) tg_sb_printf(b, "    o += bz * %lld;\n", (long long)s);
            } else {
                if (s)
                    tg_sb_printf(b, "    o += (bz %% %lld) * %lld;\n", (long long)e, (long long)s);
                tg_sb_printf(b, "    bz /= %lld;\n", (long long)e);
            }
        }
        tg_sb_printf(b, "    return o;\n}\n");
    }
}

static void emit_bases(tg_sb *b, const mm_desc *d) {
    char bo[32];
    tg_sb_printf(b, "    c_off0 = int(pc.c_off);\n");
    for (int i = 0; i < d->n_extra; i++) tg_sb_printf(b, "    e%d_off0 = int(pc.e%d_off);\n", i, i);
    tg_sb_printf(b, "    int a_base = int(pc.a_off) + %s;\n", batch_off(d, OP_A, bo, sizeof bo));
    tg_sb_printf(b, "    int b_base = int(pc.b_off) + %s;\n", batch_off(d, OP_B, bo, sizeof bo));
}

/* The GLSL image format qualifier of a texel format. */
static const char *image_format(tg_vk_texel_format f) {
    switch (f) {
    case TG_VK_TEXEL_RGBA32F: return "rgba32f";
    case TG_VK_TEXEL_R16F: return "r16f";
    case TG_VK_TEXEL_RGBA16F: return "rgba16f";
    default: return "r32f";
    }
}

static void emit_header(tg_sb *b, const mm_desc *d, const tg_mm_tiling *t) {
    char bo[32];
    bool need16 = d->out_dtype == TG_F16;
    for (int i = 0; i < d->n_extra; i++) need16 |= d->extra[i].dtype == TG_F16;
    tg_sb_printf(b, "#version 450\n");
    if (need16) tg_sb_printf(b, "#extension GL_EXT_shader_16bit_storage : require\n");
    tg_sb_printf(b, "%s", tg_gen_store4_extension(d->pairs));
    if (t->a_shuffle)
        tg_sb_printf(b, "#extension GL_KHR_shader_subgroup_basic : require\n"
                        "#extension GL_KHR_shader_subgroup_shuffle : require\n");
    tg_sb_printf(b, "layout(local_size_x = %u, local_size_y = %u, local_size_z = 1) in;\n", t->wg_x,
                 t->wg_y);
    if (d->img_ab)
        tg_sb_printf(b,
                     "layout(binding = 0, %s) uniform readonly imageBuffer tA;\n"
                     "layout(binding = 1, %s) uniform readonly imageBuffer tB;\n"
                     "vec4 fetchA(int i) { return imageLoad(tA, i); }\n"
                     "vec4 fetchB(int i) { return imageLoad(tB, i); }\n",
                     image_format(d->fa), image_format(d->fb));
    else
        tg_sb_printf(b, "layout(binding = 0) uniform samplerBuffer tA;\n"
                        "layout(binding = 1) uniform samplerBuffer tB;\n"
                        "vec4 fetchA(int i) { return texelFetch(tA, i); }\n"
                        "vec4 fetchB(int i) { return texelFetch(tB, i); }\n");
    for (int i = 0; i < d->n_extra; i++)
        if (d->extra_quad[i])
            tg_sb_printf(b, "layout(binding = %d, rgba32f) uniform readonly imageBuffer tE%d;\n",
                         2 + i, i);
        else if (d->extra_texel[i])
            tg_sb_printf(b, "layout(binding = %d) uniform samplerBuffer tE%d;\n", 2 + i, i);
        else
            tg_sb_printf(
                b, "layout(std430, binding = %d) readonly buffer BufE%d { %s e%d_data[]; };\n",
                2 + i, i, store_type(d->extra[i].dtype), i);
    tg_sb_printf(b, "layout(std430, binding = %d) writeonly buffer BufC { %s c_data[]; };\n",
                 2 + d->n_extra, store_type(d->out_dtype));
    if (vec4_stores(d)) tg_gen_store4_fn(b, d->pairs, 2 + d->n_extra, "st_c4");
    tg_sb_printf(b, "layout(push_constant) uniform PC { uint a_off; uint b_off;");
    for (int i = 0; i < d->n_extra; i++) tg_sb_printf(b, " uint e%d_off;", i);
    tg_sb_printf(b, " uint c_off; } pc;\n");
    tg_sb_printf(b, "const int M = %lld, N = %lld, K = %lld;\n", (long long)d->M, (long long)d->N,
                 (long long)d->K);
    emit_batch(b, d);
    /* row strides, and M, N rounded up to whole vec4s (a vec4 group may
     * reach into a padded row: those columns are computed, never stored) */
    tg_sb_printf(b, "const int LDA = %lld, LDB = %lld, LDC = %lld;\n", (long long)d->lda,
                 (long long)d->ldb, (long long)d->ldc);
    tg_sb_printf(b, "const int M4 = %lld, N4 = %lld;\n", (long long)((d->M + 3) / 4 * 4),
                 (long long)((d->N + 3) / 4 * 4));
    if (d->functions && d->functions[0]) tg_sb_printf(b, "%s\n", d->functions);

    /* The push-constant offsets of C and the extras, read once at the top
     * of main (emit_offsets): read where they are used, under the store's
     * mask, llvmpipe gathered them per lane at every store (25
     * instructions each, 64 stores per invocation). */
    tg_sb_printf(b, "int c_off0;\n");
    for (int i = 0; i < d->n_extra; i++) tg_sb_printf(b, "int e%d_off0;\n", i);
    /* The extras at (bz, row, col), in range (callers clamp or mask). */
    for (int i = 0; i < d->n_extra; i++) {
        tg_sb_printf(b, "float load_e%d(int bz, int row, int col) {\n", i);
        char idx[160];
        snprintf(idx, sizeof idx, "e%d_off0 + %s + row * %lld + col * %lld", i,
                 batch_off(d, OP_E0 + i, bo, sizeof bo), (long long)d->extra[i].stride_row,
                 (long long)d->extra[i].stride_col);
        if (d->extra_quad[i]) {
            tg_sb_printf(b, "    int i = %s;\n    return imageLoad(tE%d, i >> 2)[i & 3];\n}\n", idx,
                         i);
            tg_sb_printf(b, "vec4 load4_e%d(int bz, int row, int col) {\n", i);
            tg_sb_printf(b, "    return imageLoad(tE%d, (%s) >> 2);\n}\n", i, idx);
        } else if (d->extra_texel[i])
            tg_sb_printf(b, "    return texelFetch(tE%d, %s).r;\n}\n", i, idx);
        else
            tg_sb_printf(b, "    return float(e%d_data[%s]);\n}\n", i, idx);
    }
    /* Masked store with the epilogue, given the extras: the one place C
     * is written. */
    tg_sb_printf(b, "void store_ce(int %s, int %s, int col, float acc", d->fold_m ? "bz_f" : "bz",
                 d->fold_m ? "row_f" : "row");
    for (int i = 0; i < d->n_extra; i++) tg_sb_printf(b, ", float e%d", i);
    tg_sb_printf(b, ") {\n");
    const char *expr = d->epilogue && d->epilogue[0] ? d->epilogue : "acc";
    if (d->fold_m) {
        /* C is dense over the folded rows; the epilogue sees the matrix's
         * bz and row */
        tg_sb_printf(b, "    if (row_f >= M || col >= N) return;\n");
        tg_sb_printf(b, "    int bz = row_f / %lld, row = row_f - bz * %lld;\n",
                     (long long)d->fold_m, (long long)d->fold_m);
        tg_sb_printf(b, "    c_data[c_off0 + row_f * LDC + col] = %s(%s);\n",
                     store_type(d->out_dtype), expr);
    } else {
        tg_sb_printf(b, "    if (row >= M || col >= N) return;\n");
        tg_sb_printf(b, "    c_data[c_off0 + %s + row * LDC + col] = %s(%s);\n",
                     batch_off(d, OP_C, bo, sizeof bo), store_type(d->out_dtype), expr);
    }
    tg_sb_printf(b, "}\n");
    /* Four elements along a row, in range, at a vec4-aligned C */
    if (vec4_stores(d) && vec4_epilogue(d)) {
        tg_sb_printf(b, "void store_ce4(int %s, int %s, int col, vec4 acc",
                     d->fold_m ? "bz_f" : "bz", d->fold_m ? "row_f" : "row");
        for (int i = 0; i < d->n_extra; i++) tg_sb_printf(b, ", vec4 e%d", i);
        tg_sb_printf(b, ") {\n");
        if (d->fold_m) {
            tg_sb_printf(b, "    int bz = row_f / %lld, row = row_f - bz * %lld;\n",
                         (long long)d->fold_m, (long long)d->fold_m);
            tg_sb_printf(b, "    st_c4((c_off0 + row_f * LDC + col) >> 2, %s);\n}\n", d->epilogue4);
        } else {
            tg_sb_printf(b, "    st_c4((c_off0 + %s + row * LDC + col) >> 2, %s);\n}\n",
                         batch_off(d, OP_C, bo, sizeof bo), d->epilogue4);
        }
    }
    /* The same, reading the extras at the element. */
    tg_sb_printf(b, "void store_c(int bz, int row, int col, float acc) {\n");
    tg_sb_printf(b, "    if (row >= M || col >= N) return;\n");
    tg_sb_printf(b, "    store_ce(bz, row, col, acc");
    for (int i = 0; i < d->n_extra; i++) tg_sb_printf(b, ", load_e%d(bz, row, col)", i);
    tg_sb_printf(b, ");\n}\n");

    if (d->conv) {
        /* im2col: B[k][n] = x[ci][n*stride + kw*dilation - padding] with
         * k = ci*ksize + kw; zero outside the input (padding) and the matrix. */
        tg_sb_printf(b, "const int CW = %lld, CKS = %lld, CS = %lld, CP = %lld, CD = %lld;\n",
                     (long long)d->width, (long long)d->ksize, (long long)d->stride,
                     (long long)d->padding, (long long)d->dilation);
        tg_sb_printf(b, "float load_b(int b_base, int k, int n) {\n"
                        "    int kc = min(k, K - 1);\n"
                        "    int ci = kc / CKS;\n"
                        "    int kw = kc - ci * CKS;\n"
                        "    int pos = n * CS + kw * CD - CP;\n"
                        "    bool ok = k < K && n < N && pos >= 0 && pos < CW;\n"
                        "    float v = fetchB(b_base + ci * CW + clamp(pos, 0, CW - 1)).r;\n"
                        "    return ok ? v : 0.0;\n"
                        "}\n");
    }
}

/* ---- REGISTER strategy ---- */

typedef struct reg_layout {
    bool a_vec, b_vec;
} reg_layout;

/* One K step of `ku` (1..4) values starting at the int expression `k`. */
static void emit_reg_step(tg_sb *b, const mm_desc *d, const tg_mm_tiling *t, reg_layout L,
                          const char *k, int ku) {
    int TM = (int)t->tm, TN = (int)t->tn, NJ = TN / 4;
    char aexpr[16][4][40];
    tg_sb_printf(b, "    {\n");
    /* A values a(i, kk) */
    for (int i = 0; i < TM; i++) {
        for (int kk = 0; kk < ku; kk++) {
            if (t->a_shuffle && d->ta) {
                /* A^T: lane l fetched K value k + l % 4 of rows m0 + S*g +
                 * 4*(l / 4) .. + 3 (vec4 along M); a(i, kk) is component
                 * i % 4 of lane kk + 4 * ((i % S) / 4) */
                int S = (int)t->a_shuffle, g = i / S, src = kk + 4 * ((i % S) / 4);
                if (kk == 0 && i % S == 0)
                    tg_sb_printf(b,
                                 "        vec4 val%d = fetchA((a_base + (%s + ral_k) * "
                                 "LDA + ral%d) >> 2);\n",
                                 g, k, g);
                if (i % 4 == 0)
                    tg_sb_printf(b, "        vec4 vt%d_%d = subgroupShuffle(val%d, %d);\n", i / 4,
                                 kk, g, src);
                snprintf(aexpr[i][kk], sizeof aexpr[i][kk], "vt%d_%d.%c", i / 4, kk, xyzw[i % 4]);
            } else if (t->a_shuffle && !L.a_vec) {
                /* scalar texels (lda not a multiple of 4): lane l fetches the
                 * ku values of row m0 + S*g + l one by one */
                int S = (int)t->a_shuffle, g = i / S;
                if (kk == 0 && i % S == 0) {
                    tg_sb_printf(b, "        %s val%d = %s(", ku == 4 ? "vec4" : "float", g,
                                 ku == 4 ? "vec4" : "float");
                    for (int q = 0; q < ku; q++)
                        tg_sb_printf(b, "%sfetchA(ral%d + %s + %d).r", q ? ", " : "", g, k, q);
                    tg_sb_printf(b, ");\n");
                }
                if (kk == 0)
                    tg_sb_printf(b, "        %s va%d = subgroupShuffle(val%d, %d);\n",
                                 ku == 4 ? "vec4" : "float", i, g, i % S);
                if (ku == 4)
                    snprintf(aexpr[i][kk], sizeof aexpr[i][kk], "va%d.%c", i, xyzw[kk]);
                else
                    snprintf(aexpr[i][kk], sizeof aexpr[i][kk], "va%d", i);
            } else if (t->a_shuffle) {
                /* lane l fetched row m0 + S*g + l (ral<g>); the constant lane
                 * index makes the shuffle a register permute on llvmpipe
                 * (subgroupBroadcast is a scalar loop there) */
                int S = (int)t->a_shuffle, g = i / S;
                if (kk == 0 && i % S == 0)
                    tg_sb_printf(b, "        vec4 val%d = fetchA(ral%d + ((%s) >> 2));\n", g, g, k);
                if (kk == 0)
                    tg_sb_printf(b, "        vec4 va%d = subgroupShuffle(val%d, %d);\n", i, g,
                                 i % S);
                snprintf(aexpr[i][kk], sizeof aexpr[i][kk], "va%d.%c", i, xyzw[kk]);
            } else if (!d->ta && L.a_vec) {
                if (kk == 0)
                    tg_sb_printf(b, "        vec4 va%d = fetchA(ra%d + ((%s) >> 2));\n", i, i, k);
                snprintf(aexpr[i][kk], sizeof aexpr[i][kk], "va%d.%c", i, xyzw[kk]);
            } else if (d->ta && L.a_vec) {
                if (i % 4 == 0)
                    tg_sb_printf(b,
                                 "        vec4 va%d_%d = fetchA((a_base + (%s + %d) * LDA + "
                                 "ag%d) >> 2);\n",
                                 kk, i / 4, k, kk, i / 4);
                snprintf(aexpr[i][kk], sizeof aexpr[i][kk], "va%d_%d.%c", kk, i / 4, xyzw[i % 4]);
            } else {
                if (!d->ta)
                    tg_sb_printf(b, "        float va%d_%d = fetchA(ra%d + %s + %d).r;\n", i, kk, i,
                                 k, kk);
                else
                    tg_sb_printf(b,
                                 "        float va%d_%d = fetchA(a_base + (%s + %d) * LDA + "
                                 "am%d).r;\n",
                                 i, kk, k, kk, i);
                snprintf(aexpr[i][kk], sizeof aexpr[i][kk], "va%d_%d", i, kk);
            }
        }
    }
    /* B values as vec4 over 4 columns: b{kk}_{j} */
    if (d->tb && L.b_vec) {
        for (int c = 0; c < TN; c++)
            tg_sb_printf(b, "        vec4 vb%d = fetchB(rb%d + ((%s) >> 2));\n", c, c, k);
        for (int kk = 0; kk < ku; kk++)
            for (int j = 0; j < NJ; j++)
                tg_sb_printf(b, "        vec4 b%d_%d = vec4(vb%d.%c, vb%d.%c, vb%d.%c, vb%d.%c);\n",
                             kk, j, 4 * j, xyzw[kk], 4 * j + 1, xyzw[kk], 4 * j + 2, xyzw[kk],
                             4 * j + 3, xyzw[kk]);
    } else if (!d->tb && L.b_vec && !d->conv) {
        for (int kk = 0; kk < ku; kk++)
            for (int j = 0; j < NJ; j++)
                tg_sb_printf(b,
                             "        vec4 b%d_%d = fetchB((b_base + (%s + %d) * LDB + bg%d) >> "
                             "2);\n",
                             kk, j, k, kk, j);
    } else {
        for (int kk = 0; kk < ku; kk++) {
            for (int c = 0; c < TN; c++) {
                if (d->conv)
                    tg_sb_printf(b, "        float vb%d_%d = load_b(b_base, %s + %d, bn%d);\n", kk,
                                 c, k, kk, c);
                else if (!d->tb)
                    tg_sb_printf(b,
                                 "        float vb%d_%d = fetchB(b_base + (%s + %d) * LDB + "
                                 "bn%d).r;\n",
                                 kk, c, k, kk, c);
                else
                    tg_sb_printf(b, "        float vb%d_%d = fetchB(rb%d + %s + %d).r;\n", kk, c, c,
                                 k, kk);
            }
            for (int j = 0; j < NJ; j++)
                tg_sb_printf(b, "        vec4 b%d_%d = vec4(vb%d_%d, vb%d_%d, vb%d_%d, vb%d_%d);\n",
                             kk, j, kk, 4 * j, kk, 4 * j + 1, kk, 4 * j + 2, kk, 4 * j + 3);
        }
    }
    /* each accumulator's ku updates back to back: ordered k-outermost,
     * LLVM computed (and spilled) all products of a k before adding them
     * (the loop body shrank 1182 -> 1002 instructions, spills 402 -> 222) */
    for (int i = 0; i < TM; i++)
        for (int j = 0; j < NJ; j++)
            for (int kk = 0; kk < ku; kk++)
                tg_sb_printf(b, "        acc%d_%d = fma(vec4(%s), b%d_%d, acc%d_%d);\n", i, j,
                             aexpr[i][kk], kk, j, i, j);
    tg_sb_printf(b, "    }\n");
}

/* Stores the TM x TN block. An extra that does not change along rows (a
 * bias over N) is read once per column of the block, one that does not
 * change along columns once per row, a broadcast scalar once: the
 * epilogue of a small-K product costs as much as its K loop otherwise. */
/* The argument of extra e for the element at row `row` (an expression),
 * column n0 + c: read once per column (e<e>_c<c>), per row (e<e>_<rname>),
 * for the whole block (e<e>_s) or at the element. */
static void emit_extra_arg(tg_sb *b, const mm_desc *d, int e, const char *row, const char *rname,
                           int c) {
    bool by_row = d->extra[e].stride_row != 0, by_col = d->extra[e].stride_col != 0;
    if (!by_row && !by_col)
        tg_sb_printf(b, "e%d_s", e);
    else if (!by_row)
        tg_sb_printf(b, "e%d_c%d", e, c);
    else if (!by_col)
        tg_sb_printf(b, "e%d_%s", e, rname);
    else
        tg_sb_printf(b, "load_e%d(bz, %s, n0 + %d)", e, row, c);
}

/* The scalar stores after a vec4 fast path: a loop over the block's rows
 * in range, picking row r's accumulators by selects. CPU devices run the
 * code of every branch (backend/device_class.h): unrolled, the 64 masked
 * stores (and epilogues) cost invocations that took the fast path about
 * as much as storing (1024x256x64: 1.05 ms without them, 1.26 with, 1.24
 * with scalar stores only); a loop that no lane enters runs one
 * iteration. */
static void emit_store_rows_loop(tg_sb *b, const mm_desc *d, int TM, int TN) {
    tg_sb_printf(b, "    int rows = min(%d, M - m0);\n    for (int r = 0; r < rows; r++) {\n", TM);
    for (int j = 0; j < TN / 4; j++) {
        tg_sb_printf(b, "        vec4 ar%d = ", j);
        for (int i = 0; i < TM - 1; i++) tg_sb_printf(b, "r == %d ? acc%d_%d : ", i, i, j);
        tg_sb_printf(b, "acc%d_%d;\n", TM - 1, j);
    }
    for (int e = 0; e < d->n_extra; e++)
        if (d->extra[e].stride_row != 0 && d->extra[e].stride_col == 0) {
            tg_sb_printf(b, "        float e%d_rr = ", e);
            for (int i = 0; i < TM - 1; i++) tg_sb_printf(b, "r == %d ? e%d_r%d : ", i, e, i);
            tg_sb_printf(b, "e%d_r%d;\n", e, TM - 1);
        }
    for (int c = 0; c < TN; c++) {
        if (d->n_extra == 0) {
            tg_sb_printf(b, "        store_c(bz, m0 + r, n0 + %d, ar%d.%c);\n", c, c / 4,
                         xyzw[c % 4]);
            continue;
        }
        bool per_elem = false;
        for (int e = 0; e < d->n_extra; e++)
            per_elem |= d->extra[e].stride_row != 0 && d->extra[e].stride_col != 0;
        if (per_elem) tg_sb_printf(b, "        if (n0 + %d < N)\n    ", c);
        tg_sb_printf(b, "        store_ce(bz, m0 + r, n0 + %d, ar%d.%c", c, c / 4, xyzw[c % 4]);
        for (int e = 0; e < d->n_extra; e++) {
            tg_sb_printf(b, ", ");
            emit_extra_arg(b, d, e, "m0 + r", "rr", c);
        }
        tg_sb_printf(b, ");\n");
    }
    tg_sb_printf(b, "    }\n");
}

/* The test for a block stored by vec4s; *tail: blocks failing it still
 * need the scalar stores. With C at offset 0 and M, N multiples of the
 * block, every block in range is whole: no scalar code at all, which CPU
 * devices would run beside the vec4 path (1024x256x64 + GELU, two
 * outputs: ~10% of the kernel). */
static const char *whole_block_test(const mm_desc *d, int TM, int TN, bool *tail) {
    *tail = !(d->offsets_zero && d->M % TM == 0 && d->N % TN == 0);
    return *tail ? "(c_off0 & 3) == 0 && " : "";
}

static void emit_register_store(tg_sb *b, const mm_desc *d, int TM, int TN) {
    bool tail;
    const char *aligned = whole_block_test(d, TM, TN, &tail);
    if (vec4_stores(d) && TN % 4 == 0 && !vec4_epilogue(d)) {
        /* a whole block in range at an aligned C: vec4 stores */
        tg_sb_printf(b, "    if (%sm0 + %d <= M && n0 + %d <= N) {\n", aligned, TM, TN);
        tg_sb_printf(b, "        int c4 = (c_off0 + bz * SC + m0 * LDC + n0) >> 2;\n");
        for (int i = 0; i < TM; i++)
            for (int j = 0; j < TN / 4; j++)
                tg_sb_printf(b, "        st_c4(c4 + %d, acc%d_%d);\n", (int)(i * (d->ldc / 4) + j),
                             i, j);
        tg_sb_printf(b, tail ? "        return;\n    }\n" : "    }\n");
        if (!tail) return;
    }
    for (int e = 0; e < d->n_extra; e++) {
        bool by_row = d->extra[e].stride_row != 0, by_col = d->extra[e].stride_col != 0;
        if (!by_row && !by_col)
            tg_sb_printf(b, "    float e%d_s = load_e%d(bz, 0, 0);\n", e, e);
        else if (!by_row)
            for (int c = 0; c < TN; c++)
                tg_sb_printf(b, "    float e%d_c%d = load_e%d(bz, 0, min(n0 + %d, N - 1));\n", e, c,
                             e, c);
        else if (!by_col)
            for (int i = 0; i < TM; i++)
                tg_sb_printf(b, "    float e%d_r%d = load_e%d(bz, min(m0 + %d, M - 1), 0);\n", e, i,
                             e, i);
    }
    if (vec4_stores(d) && TN % 4 == 0 && vec4_epilogue(d)) {
        /* a whole block in range at an aligned C: the epilogue 4 elements
         * at a time, stored as vec4s */
        tg_sb_printf(b, "    if (%sm0 + %d <= M && n0 + %d <= N) {\n", aligned, TM, TN);
        for (int i = 0; i < TM; i++)
            for (int j = 0; j < TN / 4; j++) {
                tg_sb_printf(b, "        store_ce4(bz, m0 + %d, n0 + %d, acc%d_%d", i, 4 * j, i, j);
                char row[24], rname[16];
                snprintf(row, sizeof row, "m0 + %d", i);
                snprintf(rname, sizeof rname, "r%d", i);
                for (int e = 0; e < d->n_extra; e++) {
                    if (d->extra_quad[e]) {
                        tg_sb_printf(b, ", load4_e%d(bz, %s, n0 + %d)", e, row, 4 * j);
                        continue;
                    }
                    tg_sb_printf(b, ", vec4(");
                    for (int c = 4 * j; c < 4 * j + 4; c++) {
                        if (c > 4 * j) tg_sb_printf(b, ", ");
                        emit_extra_arg(b, d, e, row, rname, c);
                    }
                    tg_sb_printf(b, ")");
                }
                tg_sb_printf(b, ");\n");
            }
        tg_sb_printf(b, tail ? "        return;\n    }\n" : "    }\n");
        if (!tail) return;
    }
    if (vec4_stores(d) && TN % 4 == 0) {
        emit_store_rows_loop(b, d, TM, TN);
        return;
    }
    for (int i = 0; i < TM; i++)
        for (int c = 0; c < TN; c++) {
            if (d->n_extra == 0) {
                tg_sb_printf(b, "    store_c(bz, m0 + %d, n0 + %d, acc%d_%d.%c);\n", i, c, i, c / 4,
                             xyzw[c % 4]);
                continue;
            }
            bool per_elem = false;
            for (int e = 0; e < d->n_extra; e++)
                per_elem |= d->extra[e].stride_row != 0 && d->extra[e].stride_col != 0;
            /* a per-element extra is read only where the element exists */
            if (per_elem) tg_sb_printf(b, "    if (m0 + %d < M && n0 + %d < N)\n    ", i, c);
            tg_sb_printf(b, "    store_ce(bz, m0 + %d, n0 + %d, acc%d_%d.%c", i, c, i, c / 4,
                         xyzw[c % 4]);
            char row[24], rname[16];
            snprintf(row, sizeof row, "m0 + %d", i);
            snprintf(rname, sizeof rname, "r%d", i);
            for (int e = 0; e < d->n_extra; e++) {
                tg_sb_printf(b, ", ");
                emit_extra_arg(b, d, e, row, rname, c);
            }
            tg_sb_printf(b, ");\n");
        }
}

static void emit_register(tg_sb *b, const mm_desc *d, const tg_mm_tiling *t, reg_layout L) {
    int TM = (int)t->tm, TN = (int)t->tn, NJ = TN / 4;
    tg_sb_printf(b, "void main() {\n");
    tg_sb_printf(b, "    int bz = int(gl_WorkGroupID.z);\n");
    tg_sb_printf(b, "    int m0 = int(gl_GlobalInvocationID.y) * %d;\n", TM);
    tg_sb_printf(b, "    int n0 = int(gl_GlobalInvocationID.x) * %d;\n", TN);
    emit_bases(b, d);
    /* Row and column starts, clamped so edge invocations load valid data
     * (their results are masked in store_c). */
    for (int i = 0; i < TM && !t->a_shuffle; i++) {
        if (!d->ta && L.a_vec)
            tg_sb_printf(b, "    int ra%d = (a_base + min(m0 + %d, M - 1) * LDA) >> 2;\n", i, i);
        else if (!d->ta)
            tg_sb_printf(b, "    int ra%d = a_base + min(m0 + %d, M - 1) * LDA;\n", i, i);
        else if (L.a_vec && i % 4 == 0)
            tg_sb_printf(b, "    int ag%d = min(m0 + %d, M4 - 4);\n", i / 4, i);
        else if (!L.a_vec)
            tg_sb_printf(b, "    int am%d = min(m0 + %d, M - 1);\n", i, i);
    }
    for (int c = 0; c < TN; c++) {
        if (d->conv)
            tg_sb_printf(b, "    int bn%d = n0 + %d;\n", c, c);
        else if (d->tb && L.b_vec)
            tg_sb_printf(b, "    int rb%d = (b_base + min(n0 + %d, N - 1) * LDB) >> 2;\n", c, c);
        else if (d->tb)
            tg_sb_printf(b, "    int rb%d = b_base + min(n0 + %d, N - 1) * LDB;\n", c, c);
        else if (L.b_vec && c % 4 == 0)
            tg_sb_printf(b, "    int bg%d = min(n0 + %d, N4 - 4);\n", c / 4, c);
        else if (!L.b_vec)
            tg_sb_printf(b, "    int bn%d = min(n0 + %d, N - 1);\n", c, c);
    }
    if (t->a_shuffle && d->ta)
        tg_sb_printf(b, "    int ral_k = int(gl_SubgroupInvocationID) & 3;\n");
    for (int g = 0; t->a_shuffle && g < TM / (int)t->a_shuffle; g++)
        if (d->ta)
            tg_sb_printf(b,
                         "    int ral%d = min(m0 + %d + 4 * (int(gl_SubgroupInvocationID) >> 2), "
                         "M4 - 4);\n",
                         g, g * (int)t->a_shuffle);
        else
            tg_sb_printf(
                b,
                "    int ral%d = (a_base + min(m0 + %d + int(gl_SubgroupInvocationID), M - 1) * "
                "LDA)%s;\n",
                g, g * (int)t->a_shuffle, L.a_vec ? " >> 2" : "");
    for (int i = 0; i < TM; i++)
        for (int j = 0; j < NJ; j++) tg_sb_printf(b, "    vec4 acc%d_%d = vec4(0.0);\n", i, j);
    int64_t kmain = d->K / 4 * 4;
    if (kmain > 0) {
        tg_sb_printf(b, "    for (int k = 0; k < %lld; k += 4)\n", (long long)kmain);
        emit_reg_step(b, d, t, L, "k", 4);
    }
    for (int64_t kt = kmain; kt < d->K; kt++) {
        char kexpr[32];
        snprintf(kexpr, sizeof kexpr, "%lld", (long long)kt);
        emit_reg_step(b, d, t, L, kexpr, 1);
    }
    emit_register_store(b, d, TM, TN);
    tg_sb_printf(b, "}\n");
}

/* ---- SHARED strategy ---- */

/* The loop that stages one operand's tile in shared memory, S[k][x] for
 * the BX rows or columns x from bx0 (bm0 or bn0) and BK values of k from
 * k0, zero outside the matrix. The operand is contiguous along K (A, B
 * transposed) or along x (A transposed, B); vec4 texels read 4 values
 * along the contiguous dimension. Consecutive q walk the contiguous
 * dimension, so neighbouring invocations read neighbouring texels. */
static void emit_tile_load(tg_sb *b, const char *S, const char *x, int BX, const char *X,
                           const char *tex, const char *base, const char *LD, bool k_contig,
                           bool vec, int BK, int NT) {
    int w = vec ? 4 : 1;
    int n_inner = k_contig ? BK / w : BX / w; /* q's along the contiguous dimension */
    tg_sb_printf(b, "        for (int q = tid; q < %d; q += %d) {\n", BX * BK / w, NT);
    if (k_contig)
        tg_sb_printf(b, "            int r = q / %d, kk = %d * (q %% %d);\n", n_inner, w, n_inner);
    else
        tg_sb_printf(b, "            int kk = q / %d, r = %d * (q %% %d);\n", n_inner, w, n_inner);
    tg_sb_printf(b, "            int %s = b%s0 + r, k = k0 + kk;\n", x, x);
    char off[64];
    if (k_contig)
        snprintf(off, sizeof off, "%s * %s + k", x, LD);
    else
        snprintf(off, sizeof off, "k * %s + %s", LD, x);
    if (!vec) {
        tg_sb_printf(b,
                     "            %s[kk][r] = (%s < %s && k < K) ? texelFetch(%s, %s + %s).r : "
                     "0.0;\n",
                     S, x, X, tex, base, off);
    } else {
        tg_sb_printf(b,
                     "            vec4 v = (%s < %s && k < K) ? texelFetch(%s, (%s + %s) >> 2) : "
                     "vec4(0.0);\n",
                     x, X, tex, base, off);
        for (int c = 0; c < 4; c++) /* the 4 values spread along the contiguous dimension */
            tg_sb_printf(b, "            %s[kk + %d][r + %d] = v.%c;\n", S, k_contig ? c : 0,
                         k_contig ? 0 : c, xyzw[c]);
    }
    tg_sb_printf(b, "        }\n");
}

static void emit_shared(tg_sb *b, const mm_desc *d, const tg_mm_tiling *t, reg_layout L) {
    int WX = (int)t->wg_x, WY = (int)t->wg_y, TM = (int)t->tm, TN = (int)t->tn, BK = (int)t->bk;
    int BM = WY * TM, BN = WX * TN, NT = WX * WY;
    tg_sb_printf(b, "shared float As[%d][%d];\n", BK, BM);
    tg_sb_printf(b, "shared float Bs[%d][%d];\n", BK, BN);
    tg_sb_printf(b, "void main() {\n");
    tg_sb_printf(b, "    int bz = int(gl_WorkGroupID.z);\n");
    tg_sb_printf(b,
                 "    int tx = int(gl_LocalInvocationID.x), ty = int(gl_LocalInvocationID.y);\n");
    tg_sb_printf(b, "    int tid = ty * %d + tx;\n", WX);
    tg_sb_printf(b, "    int bm0 = int(gl_WorkGroupID.y) * %d;\n", BM);
    tg_sb_printf(b, "    int bn0 = int(gl_WorkGroupID.x) * %d;\n", BN);
    emit_bases(b, d);
    for (int i = 0; i < TM; i++)
        for (int j = 0; j < TN; j++) tg_sb_printf(b, "    float acc%d_%d = 0.0;\n", i, j);
    tg_sb_printf(b, "    for (int k0 = 0; k0 < K; k0 += %d) {\n", BK);

    emit_tile_load(b, "As", "m", BM, "M", "tA", "a_base", "LDA", !d->ta, L.a_vec, BK, NT);
    if (d->conv) {
        tg_sb_printf(b, "        for (int q = tid; q < %d; q += %d) {\n", BN * BK, NT);
        tg_sb_printf(b, "            int kk = q / %d, c = q %% %d;\n", BN, BN);
        tg_sb_printf(b, "            Bs[kk][c] = load_b(b_base, k0 + kk, bn0 + c);\n");
        tg_sb_printf(b, "        }\n");
    } else {
        emit_tile_load(b, "Bs", "n", BN, "N", "tB", "b_base", "LDB", d->tb, L.b_vec, BK, NT);
    }
    tg_sb_printf(b, "        barrier();\n");
    tg_sb_printf(b, "        for (int kk = 0; kk < %d; kk++) {\n", BK);
    for (int i = 0; i < TM; i++)
        tg_sb_printf(b, "            float a%d = As[kk][ty + %d];\n", i, i * WY);
    for (int j = 0; j < TN; j++)
        tg_sb_printf(b, "            float b%d = Bs[kk][tx + %d];\n", j, j * WX);
    for (int i = 0; i < TM; i++)
        for (int j = 0; j < TN; j++)
            tg_sb_printf(b, "            acc%d_%d = fma(a%d, b%d, acc%d_%d);\n", i, j, i, j, i, j);
    tg_sb_printf(b, "        }\n");
    tg_sb_printf(b, "        barrier();\n");
    tg_sb_printf(b, "    }\n");
    for (int i = 0; i < TM; i++)
        for (int j = 0; j < TN; j++)
            tg_sb_printf(b, "    store_c(bz, bm0 + ty + %d, bn0 + tx + %d, acc%d_%d);\n", i * WY,
                         j * WX, i, j);
    tg_sb_printf(b, "}\n");
}

/* ---- driver ---- */

/* Short products on CPUs (K <= 64, A not transposed, N whole 64-column
 * blocks: in charlm the Q/K/V and output projections, the FFN
 * up-projection with its bias + GELU epilogue and the gradients through
 * the projections): 8 x 8 outputs a lane, in 16 x 4 workgroups (8 x 8
 * where N is not whole 128-column blocks), instead of 16 x 4 in 32 x 2.
 * A lane's K steps are few, so its fixed costs (row starts, the
 * epilogue's extras, the stores) weigh more; 8 x 8 shares them over the
 * same 64 outputs with 8 shuffled A rows instead of 16. Timed alone
 * single-threaded, interleaved, three or four runs (min): 1024 x 256 x 64
 * with the GELU epilogue -12 to -21%; the backward group of 1024 x 256 x
 * 64 (B transposed) and a dW -7 to -13%; Q/K/V (3 x 1024 x 64 x 64) -12
 * to -20%; the output projection with its residual -19 to -28%; the
 * backward group of two 1024 x 64 x 64 and three dW -1 to -6%. (The
 * eleventh session tried 8 x 8 for K <= 256: no gain in the step; step
 * times here vary by 0.05 in on/off between runs of one binary, which
 * hides a few percent.) $TG_MM_SHORT8=0 turns it off. */
static void short_k_tile(const tg_vk_caps *caps, const mm_desc *d, tg_mm_tiling *t) {
    const char *env = getenv("TG_MM_SHORT8");
    if (env && strcmp(env, "0") == 0) return;
    if (caps->device_class == TG_VK_CLASS_CPU && t->strategy == TG_MM_STRATEGY_REGISTER &&
        t->a_shuffle == 8 && t->tm == 16 && t->tn == 4 && t->wg_x * t->wg_y == 64 && d->K <= 64 &&
        !d->ta && !d->conv && d->N % 64 == 0) {
        t->tm = 8;
        t->tn = 8;
        t->wg_x = d->N % 128 == 0 ? 16 : 8;
        t->wg_y = 64 / t->wg_x;
    }
}

static tg_status generate(const tg_vk_caps *caps, const mm_desc *d, tg_mm_kernel *out) {
    memset(out, 0, sizeof *out);
    if (!caps) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "matmul generator: NULL caps");
    tg_status st = check_desc(caps, d);
    if (st != TG_OK) return st;
    /* A's rows as vec4 texels along K (the register strategy may then
     * shuffle them across a subgroup) */
    bool a_rows_vec4 = d->K % 4 == 0 && d->lda % 4 == 0 && batch_vec4(d, OP_A) &&
                       (d->dtype == TG_F16 ? caps->texel_rgba16f : caps->texel_rgba32f);
    /* transposed: vec4 along M, lanes spread over 4 K values and groups of
     * 4 rows */
    if (d->ta && caps->subgroup_size % 4 != 0) a_rows_vec4 = false;
    /* not transposed, scalar texels: each lane still reads its own row */
    bool a_shufflable = a_rows_vec4 || !d->ta;
    tg_mm_tiling t;
    st = tg_mm_choose_tiling_for(caps, d->strategy, d->M, d->N, d->K, a_shufflable, &t);
    if (st != TG_OK) return st;
    short_k_tile(caps, d, &t);

    /* vec4 texels need the contiguous dimension, the batch stride and (on
     * the caller's side) the offsets to be multiples of 4; the register
     * strategy's row block must also cover whole vec4s along M. */
    /* Along K the vec4 must not reach past K (the padding is not known to
     * be zero); along M or N it may, into a padded row (lda/ldb). */
    bool a_vec = d->ta ? (t.strategy == TG_MM_STRATEGY_SHARED || t.tm % 4 == 0) : d->K % 4 == 0;
    a_vec = a_vec && d->lda % 4 == 0 && batch_vec4(d, OP_A);
    bool b_vec =
        !d->conv && (d->tb ? d->K % 4 == 0 : true) && d->ldb % 4 == 0 && batch_vec4(d, OP_B);
    if (t.strategy == TG_MM_STRATEGY_SHARED && t.bk % 4 != 0) a_vec = b_vec = false;
    tg_vk_texel_format fa, fb;
    reg_layout L;
    L.a_vec = pick_format(caps, d->dtype, a_vec, &fa);
    L.b_vec = pick_format(caps, d->dtype, b_vec, &fb);
    if (d->ta && !L.a_vec) t.a_shuffle = 0; /* (a_shufflable said so already) */
    if (L.a_vec != a_vec || L.b_vec != b_vec)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s: device '%s' has only vec4 %s texel buffers, and this shape "
                            "needs scalar ones",
                            d->name ? d->name : "matmul", caps->name, tg_dtype_name(d->dtype));

    /* Extras through scalar texel buffers where the device has the format:
     * on lavapipe a storage-buffer load is a per-lane loop, a texel fetch
     * a gather. */
    mm_desc dt = *d;
    for (int i = 0; i < d->n_extra; i++)
        dt.extra_texel[i] = d->extra[i].dtype == TG_F16 ? caps->texel_r16f : caps->texel_r32f;
    /* CPUs: A and B through imageLoad, which llvmpipe inlines, where a
     * texelFetch is a call that spills every live vector register; the
     * register kernel at 1500 x 1536 x 384, timed alone: 23.8-24.1 ->
     * 22.5-22.7 ms (docs/kernels.md). $TG_MM_IMAGE=0 turns it off. */
    const char *img_env = getenv("TG_MM_IMAGE");
    dt.img_ab = caps->storage_texel && caps->device_class == TG_VK_CLASS_CPU &&
                t.strategy == TG_MM_STRATEGY_REGISTER && !(img_env && strcmp(img_env, "0") == 0);
    dt.pairs = tg_store_pairs(caps);
    dt.fa = fa;
    dt.fb = fb;
    /* Extras at every element (a residual, GELU's input in its gradient)
     * as RGBA texels where the vec4 path is the only one (no tail) and a
     * row's 4 columns are one aligned texel: one inlined imageLoad for
     * four texelFetch calls (each spilling the 16 accumulators). */
    bool tail;
    whole_block_test(d, (int)t.tm, (int)t.tn, &tail);
    for (int i = 0; i < d->n_extra; i++) {
        const tg_mm_extra *x = &d->extra[i];
        dt.extra_quad[i] = dt.img_ab && caps->texel_rgba32f && !tail && vec4_stores(d) &&
                           vec4_epilogue(d) && t.tn % 4 == 0 && x->dtype == TG_F32 &&
                           x->stride_col == 1 && x->stride_row != 0 && x->stride_row % 4 == 0 &&
                           d->bd[0].stride_extra[i] % 4 == 0;
    }
    d = &dt;
    tg_sb b = {0};
    emit_header(&b, d, &t);
    if (t.strategy == TG_MM_STRATEGY_SHARED)
        emit_shared(&b, d, &t, L);
    else
        emit_register(&b, d, &t, L);
    if (b.oom) {
        free(b.s);
        return tg_set_error(TG_ERR_NO_MEMORY, "matmul generator: out of memory");
    }

    uint64_t bm = (uint64_t)t.wg_y * t.tm, bn = (uint64_t)t.wg_x * t.tn;
    uint64_t gx = ((uint64_t)d->N + bn - 1) / bn, gy = ((uint64_t)d->M + bm - 1) / bm;
    uint64_t gz = (uint64_t)d->batch;
    if (gx > caps->max_workgroup_count[0] || gy > caps->max_workgroup_count[1] ||
        gz > caps->max_workgroup_count[2]) {
        free(b.s);
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s: grid %llux%llux%llu exceeds the device's workgroup counts",
                            d->name ? d->name : "matmul", (unsigned long long)gx,
                            (unsigned long long)gy, (unsigned long long)gz);
    }
    out->glsl = b.s;
    snprintf(out->name, sizeof out->name, "%s_%s%dx%d",
             d->name ? d->name : (d->conv ? "conv1d" : "matmul"),
             t.strategy == TG_MM_STRATEGY_SHARED ? "sh" : "rb", (int)t.tm, (int)t.tn);
    out->local_size[0] = t.wg_x;
    out->local_size[1] = t.wg_y;
    out->local_size[2] = 1;
    out->groups[0] = (uint32_t)gx;
    out->groups[1] = (uint32_t)gy;
    out->groups[2] = (uint32_t)gz;
    out->tiling = t;
    tg_mm_binding *bd = out->bindings;
    tg_vk_binding_kind ab = d->img_ab ? TG_VK_BIND_STORAGE_TEXEL : TG_VK_BIND_TEXEL;
    bd[0] = (tg_mm_binding){ab, TG_MM_ROLE_A, 0, fa, L.a_vec ? 4 : 1, d->dtype};
    bd[1] = (tg_mm_binding){ab, TG_MM_ROLE_B, 0, fb, L.b_vec ? 4 : 1, d->dtype};
    for (int i = 0; i < d->n_extra; i++)
        bd[2 + i] =
            d->extra_quad[i] ? (tg_mm_binding){TG_VK_BIND_STORAGE_TEXEL,
                                               TG_MM_ROLE_EXTRA,
                                               i,
                                               TG_VK_TEXEL_RGBA32F,
                                               4,
                                               TG_F32}
            : d->extra_texel[i]
                ? (tg_mm_binding){TG_VK_BIND_TEXEL,
                                  TG_MM_ROLE_EXTRA,
                                  i,
                                  d->extra[i].dtype == TG_F16 ? TG_VK_TEXEL_R16F : TG_VK_TEXEL_R32F,
                                  1,
                                  d->extra[i].dtype}
                : (tg_mm_binding){TG_VK_BIND_STORAGE, TG_MM_ROLE_EXTRA, i, TG_VK_TEXEL_R32F, 1,
                                  d->extra[i].dtype};
    bd[2 + d->n_extra] =
        (tg_mm_binding){TG_VK_BIND_STORAGE, TG_MM_ROLE_C, 0, TG_VK_TEXEL_R32F, 1, d->out_dtype};
    out->n_bindings = 3 + d->n_extra;
    out->push_constant_bytes = 4u * (uint32_t)out->n_bindings;
    return TG_OK;
}

tg_status tg_gen_matmul(const tg_vk_caps *caps, const tg_mm_params *p, tg_mm_kernel *out) {
    if (!p || !out) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_gen_matmul: NULL argument");
    mm_desc d = {0};
    d.M = p->M;
    d.N = p->N;
    d.K = p->K;
    d.lda = p->lda ? p->lda : (p->transpose_a ? p->M : p->K);
    d.ldb = p->ldb ? p->ldb : (p->transpose_b ? p->K : p->N);
    d.ldc = p->ldc ? p->ldc : p->N;
    d.ta = p->transpose_a;
    d.tb = p->transpose_b;
    d.dtype = p->dtype;
    d.out_dtype = p->out_dtype;
    d.epilogue = p->epilogue;
    d.epilogue4 = p->epilogue4;
    d.functions = p->epilogue_functions;
    d.n_extra = p->n_extra;
    d.extra = p->extra;
    d.strategy = p->strategy;
    d.name = p->name;
    d.offsets_zero = p->offsets_zero;
    memset(out, 0, sizeof *out);
    tg_status st;
    if (p->n_batch_dims > 0) {
        st = set_batch(&d, p->n_batch_dims, p->batch_dims);
    } else {
        tg_mm_batch_dim one = {
            p->batch ? p->batch : 1, p->batch_stride_a, p->batch_stride_b, p->batch_stride_c, {0}};
        for (int i = 0; i < p->n_extra && i < TG_MM_MAX_EXTRA; i++)
            one.stride_extra[i] = p->extra[i].stride_batch;
        st = set_batch(&d, 1, &one);
    }
    if (st != TG_OK) return st;
    fold_batch(&d);
    return generate(caps, &d, out);
}

int64_t tg_conv1d_out_width(int64_t width, int64_t ksize, int64_t stride, int64_t padding,
                            int64_t dilation) {
    if (stride < 1 || dilation < 1 || padding < 0 || ksize < 1) return 0;
    int64_t span_ = width + 2 * padding - dilation * (ksize - 1) - 1;
    if (span_ < 0) return 0;
    return span_ / stride + 1;
}

tg_status tg_gen_conv1d(const tg_vk_caps *caps, const tg_conv1d_params *p, tg_mm_kernel *out) {
    if (!p || !out) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_gen_conv1d: NULL argument");
    const char *nm = p->name ? p->name : "conv1d";
    if (p->batch < 1 || p->cin < 1 || p->width < 1 || p->cout < 1 || p->ksize < 1 ||
        p->stride < 1 || p->dilation < 1 || p->padding < 0)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "%s: bad sizes (batch=%lld cin=%lld width=%lld cout=%lld ksize=%lld "
                            "stride=%lld padding=%lld dilation=%lld)",
                            nm, (long long)p->batch, (long long)p->cin, (long long)p->width,
                            (long long)p->cout, (long long)p->ksize, (long long)p->stride,
                            (long long)p->padding, (long long)p->dilation);
    int64_t wout = tg_conv1d_out_width(p->width, p->ksize, p->stride, p->padding, p->dilation);
    if (wout < 1)
        return tg_set_error(TG_ERR_SHAPE,
                            "%s: the kernel (%lld taps, dilation %lld) does not fit "
                            "width %lld with padding %lld",
                            nm, (long long)p->ksize, (long long)p->dilation, (long long)p->width,
                            (long long)p->padding);
    mm_desc d = {0};
    d.M = p->cout;
    d.N = wout;
    d.K = p->cin * p->ksize;
    d.lda = d.K;
    d.ldb = wout; /* unused: B is the im2col gather */
    d.ldc = wout;

    d.dtype = p->dtype;
    d.out_dtype = p->out_dtype;
    d.epilogue = p->epilogue;
    d.functions = p->epilogue_functions;
    d.n_extra = p->n_extra;
    d.extra = p->extra;
    d.strategy = p->strategy;
    d.name = nm;
    d.conv = true;
    d.cin = p->cin;
    d.width = p->width;
    d.ksize = p->ksize;
    d.stride = p->stride;
    d.padding = p->padding;
    d.dilation = p->dilation;
    /* the weights are shared by the batch */
    tg_mm_batch_dim one = {p->batch, 0, p->cin * p->width, p->cout * wout, {0}};
    for (int i = 0; i < p->n_extra && i < TG_MM_MAX_EXTRA; i++)
        one.stride_extra[i] = p->extra[i].stride_batch;
    memset(out, 0, sizeof *out);
    tg_status st = set_batch(&d, 1, &one);
    if (st != TG_OK) return st;
    return generate(caps, &d, out);
}

void tg_mm_kernel_free(tg_mm_kernel *k) {
    if (!k) return;
    free(k->glsl);
    memset(k, 0, sizeof *k);
}

void tg_mm_pipeline_desc(const tg_mm_kernel *k, const uint32_t *spirv, size_t n_words,
                         tg_vk_pipeline_desc *desc) {
    memset(desc, 0, sizeof *desc);
    desc->name = k->name;
    desc->spirv = spirv;
    desc->n_words = n_words;
    desc->n_bindings = k->n_bindings;
    for (int i = 0; i < k->n_bindings; i++) desc->bindings[i] = k->bindings[i].kind;
    desc->push_constant_bytes = k->push_constant_bytes;
}
