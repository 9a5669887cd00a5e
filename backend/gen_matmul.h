/* backend/gen_matmul.h — GLSL generators for matmul and conv1d (implicit
 * GEMM) on the per-device tiling of backend/device_class.h.
 *
 * A generator takes a description of the product and the device's caps and
 * returns GLSL source, the workgroup grid and the binding layout; the caller
 * compiles it (tg_vk_compile_glsl), makes the pipeline from `bindings` and
 * `push_constant_bytes`, and dispatches `groups`.
 *
 * Bindings, inputs first as backend/kernel.h wants: 0 = A, 1 = B (read-only
 * operands: uniform texel buffers, format in the binding), 2 .. 1+n_extra =
 * the epilogue's extra inputs (storage buffers), then C (storage buffer,
 * written) last. Push constants: one uint32 element offset per binding in
 * the same order (A, B, extras..., C), so operands may live anywhere in a
 * larger arena (zeros when every tensor is bound at its own offset). A texel binding with 4
 * elements per texel (RGBA formats) needs its offset and the view's start
 * to be multiples of 4 elements. Shapes and strides are compiled in: one
 * kernel per concrete shape. Element indices are 32-bit: every operand must
 * hold fewer than 2^31 elements.
 */
#ifndef TG_BACKEND_GEN_MATMUL_H
#define TG_BACKEND_GEN_MATMUL_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/device_class.h"
#include "backend/vk.h"
#include "tg.h"

#define TG_MM_MAX_EXTRA 4
#define TG_MM_MAX_BATCH_DIMS (TG_MAX_RANK - 2)

/* An extra input of the epilogue, read at the output element (batch, row,
 * col) at element offset batch*stride_batch + row*stride_row +
 * col*stride_col (0 strides broadcast: a bias over N is {0, 0, 1}). With
 * several batch dims (n_batch_dims > 0) stride_batch is unused: the
 * extra's stride along each batch dim is in tg_mm_batch_dim. */
typedef struct tg_mm_extra {
    tg_dtype dtype; /* TG_F32 or TG_F16 */
    int64_t stride_batch, stride_row, stride_col;
} tg_mm_extra;

/* One batch dimension of a product: its extent and the element stride of
 * every operand along it (0 broadcasts the operand over it). */
typedef struct tg_mm_batch_dim {
    int64_t extent;
    int64_t stride_a, stride_b, stride_c;
    int64_t stride_extra[TG_MM_MAX_EXTRA];
} tg_mm_batch_dim;

/* C[b] = epilogue(A[b] x B[b]) for b < batch, with
 *   A[b] (M x K, or K x M stored when transpose_a) at b*batch_stride_a,
 *   B[b] (K x N, or N x K stored when transpose_b) at b*batch_stride_b,
 *   C[b] (M x N row-major) at b*batch_stride_c.
 * A batch stride of 0 broadcasts that operand over the batch. A batch that
 * one stride per operand cannot describe (a [2,1,3,4] x b [5,4,2], where
 * a is broadcast over the inner batch dim and b over the outer) is given
 * as n_batch_dims dimensions instead, outermost first; the generator
 * merges adjacent dims whose strides allow, so a batch that is dense or
 * fully broadcast in every operand costs one multiply per operand, like
 * the single dimension, and only a truly partial broadcast pays a
 * division by a constant per dim (once per invocation). Rows of the
 * stored matrices are lda, ldb, ldc elements apart (0: dense, i.e. the
 * stored row length). Padding a row to a multiple of 4 elements (e.g. a
 * [384, 51865] weight stored with ldb = 51868) lets the kernel read it as
 * vec4 texels, about 2x faster on lavapipe than scalar texels. */
typedef struct tg_mm_params {
    int64_t M, N, K;
    int64_t batch; /* >= 1; ignored when n_batch_dims > 0 */
    int64_t batch_stride_a, batch_stride_b, batch_stride_c;
    int n_batch_dims; /* 0: the one dimension above; else 1..TG_MM_MAX_BATCH_DIMS */
    tg_mm_batch_dim batch_dims[TG_MM_MAX_BATCH_DIMS];
    int64_t lda, ldb, ldc; /* row strides in elements; 0: dense */
    bool transpose_a, transpose_b;
    tg_dtype dtype;     /* storage of A and B: TG_F32 or TG_F16 (accumulation is f32) */
    tg_dtype out_dtype; /* storage of C: TG_F32 or TG_F16 */
    /* A GLSL float expression giving the stored value, over `acc` (the f32
     * sum), `e0`..`e3` (the extra inputs at this element, as float), and
     * the ints `row`, `col`, `bz`. NULL or "" means `acc`. Example, bias +
     * exact GELU: "0.5 * (acc + e0) * (1.0 + erf_((acc + e0) * 0.70710678))"
     * may call helpers the caller adds through `epilogue_functions`. */
    const char *epilogue;
    /* Optional: the same for four elements along a row at once, a vec4
     * expression over the vec4s `acc`, `e0`..`e3` (elements col .. col+3)
     * and the ints `row`, `col` (a multiple of 4), `bz`. Given, whole
     * in-range blocks store C as vec4s (f32 C, rows of whole vec4s). */
    const char *epilogue4;
    /* GLSL function definitions placed before main (e.g. an erf); may be NULL. */
    const char *epilogue_functions;
    int n_extra;
    tg_mm_extra extra[TG_MM_MAX_EXTRA];
    tg_mm_strategy strategy; /* AUTO: the device class's choice */
    const char *name;        /* labels the kernel; may be NULL */
    /* The caller binds every operand at its own offset and pushes zero
     * element offsets (the graph executor does): blocks of C that are whole
     * need no scalar fallback for a misaligned C. */
    bool offsets_zero;
} tg_mm_params;

/* conv1d, NCW: x [batch, cin, width], w [cout, cin, ksize] ->
 * out [batch, cout, wout], wout = (width + 2*padding - dilation*(ksize-1)
 * - 1) / stride + 1. As an implicit GEMM: M = cout, N = wout, K =
 * cin*ksize, A = w (as [cout, cin*ksize]), B = im2col(x) formed in the
 * B-operand load. Bindings as for matmul: A = w, B = x, C = out. Extras
 * are addressed by (batch, row = cout, col = wout position): a bias is
 * {0, 1, 0}. */
typedef struct tg_conv1d_params {
    int64_t batch, cin, width, cout, ksize;
    int64_t stride, padding, dilation; /* stride, dilation >= 1; padding >= 0 */
    tg_dtype dtype, out_dtype;
    const char *epilogue;
    const char *epilogue_functions;
    int n_extra;
    tg_mm_extra extra[TG_MM_MAX_EXTRA];
    tg_mm_strategy strategy;
    const char *name;
} tg_conv1d_params;

typedef enum tg_mm_role { TG_MM_ROLE_A, TG_MM_ROLE_B, TG_MM_ROLE_C, TG_MM_ROLE_EXTRA } tg_mm_role;

typedef struct tg_mm_binding {
    tg_vk_binding_kind kind; /* TG_VK_BIND_TEXEL or TG_VK_BIND_STORAGE */
    tg_mm_role role;
    int extra_index;           /* for TG_MM_ROLE_EXTRA */
    tg_vk_texel_format format; /* texel bindings: the view's format */
    uint32_t texel_elems;      /* elements per texel: 1 or 4 (storage: 1) */
    tg_dtype dtype;            /* element storage type */
} tg_mm_binding;

typedef struct tg_mm_kernel {
    char name[64];
    char *glsl; /* malloc'ed; tg_mm_kernel_free */
    uint32_t local_size[3];
    uint32_t groups[3];
    int n_bindings;
    tg_mm_binding bindings[3 + TG_MM_MAX_EXTRA];
    uint32_t push_constant_bytes; /* 4 * n_bindings */
    tg_mm_tiling tiling;
} tg_mm_kernel;

/* Writes the kernel for `p` on a device with `caps`. Errors: bad shapes or
 * dtypes (TG_ERR_INVALID_ARGUMENT), f16 without device support, or sizes
 * over the 32-bit index range (TG_ERR_UNSUPPORTED). */
tg_status tg_gen_matmul(const tg_vk_caps *caps, const tg_mm_params *p, tg_mm_kernel *out);
tg_status tg_gen_conv1d(const tg_vk_caps *caps, const tg_conv1d_params *p, tg_mm_kernel *out);
/* Output width of a conv1d; <= 0 if the window does not fit. */
int64_t tg_conv1d_out_width(int64_t width, int64_t ksize, int64_t stride, int64_t padding,
                            int64_t dilation);
/* Frees the source and zeroes *k. Safe on a zeroed struct. */
void tg_mm_kernel_free(tg_mm_kernel *k);

/* Convenience for callers that already hold a device: the pipeline
 * description fields (bindings, push constants) of a kernel. */
void tg_mm_pipeline_desc(const tg_mm_kernel *k, const uint32_t *spirv, size_t n_words,
                         tg_vk_pipeline_desc *desc);

#endif /* TG_BACKEND_GEN_MATMUL_H */
