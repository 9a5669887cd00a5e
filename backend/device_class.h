/* backend/device_class.h — per-device-class code generation strategies.
 *
 * One small table, as IREE keeps per vendor: for each coarse device class
 * (backend/vk.h) the matmul strategy and its default tile, then clamped to
 * the device's limits (invocations, workgroup size, shared memory) and
 * shrunk for tiny shapes. Generators ask here; nothing else hard-codes
 * tile sizes. docs/kernels.md explains the choices and the figures. */
#ifndef TG_BACKEND_DEVICE_CLASS_H
#define TG_BACKEND_DEVICE_CLASS_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/vk.h"

typedef enum tg_mm_strategy {
    TG_MM_STRATEGY_AUTO = 0, /* from the device class; $TG_MM_STRATEGY overrides */
    /* Operands through texel buffers, each invocation a TM x TN register
     * block, no shared memory: CPU devices (lavapipe, SwiftShader). */
    TG_MM_STRATEGY_REGISTER,
    /* Classic shared-memory tiles (BM x BK of A, BK x BN of B per step),
     * TM x TN outputs per invocation: GPUs. */
    TG_MM_STRATEGY_SHARED,
} tg_mm_strategy;

/* "auto", "register", "shared". */
const char *tg_mm_strategy_name(tg_mm_strategy s);

typedef struct tg_mm_tiling {
    tg_mm_strategy strategy; /* never AUTO once chosen */
    uint32_t wg_x, wg_y;     /* invocations per workgroup: x along N, y along M */
    uint32_t tm, tn;         /* outputs per invocation: rows (M) x cols (N) */
    uint32_t bk;             /* SHARED: K depth of one shared tile; 0 otherwise */
    /* REGISTER: 0, or the subgroup size S when lane l of a subgroup reads
     * row m0 + S*g + l of A (vec4 texels along K) and subgroupShuffle
     * hands it to the other lanes: one texel fetch per subgroup instead of
     * one per lane and row. Only when tm and wg_x are multiples of S and
     * the device has subgroup shuffles in compute shaders. */
    uint32_t a_shuffle;
} tg_mm_tiling;

/* Chooses the strategy and tile for an M x N x K matmul on a device.
 * `forced` is the caller's choice (AUTO: the class's, or $TG_MM_STRATEGY =
 * "register" / "shared"). Fails (TG_ERR_UNSUPPORTED) only if the device
 * cannot run even the smallest tile of the strategy. */
tg_status tg_mm_choose_tiling(const tg_vk_caps *caps, tg_mm_strategy forced, int64_t M, int64_t N,
                              int64_t K, tg_mm_tiling *out);
/* The same for a product whose A can or cannot be shuffled across a
 * subgroup (a_shufflable: A not transposed, or transposed with vec4
 * texels along M): without it the CPU class keeps an 8 x 8 block with one
 * fetch per lane and row (tg_mm_choose_tiling assumes it can). */
tg_status tg_mm_choose_tiling_for(const tg_vk_caps *caps, tg_mm_strategy forced, int64_t M,
                                  int64_t N, int64_t K, bool a_shufflable, tg_mm_tiling *out);

/* Flash attention (gen_attention.c): REGISTER reads K/V from texel
 * buffers, SHARED stages tiles of keys in shared memory. */
typedef struct tg_attn_tiling {
    tg_mm_strategy strategy; /* never AUTO once chosen */
    uint32_t wg;             /* invocations per workgroup */
    uint32_t rows;           /* query rows per invocation */
    uint32_t keys;           /* keys per online-softmax step */
    uint32_t tile;           /* SHARED: keys per shared-memory tile (a multiple of keys) */
} tg_attn_tiling;

/* Chooses the attention strategy and tile for Tq query rows and head dims
 * of d4 and v4 texels of `texel_bytes` each. `forced` as for matmul
 * ($TG_ATTN_STRATEGY = "register" / "shared" overrides AUTO; $TG_ATTN_TILE
 * = "wg,rows,keys[,tile]" replaces the table's tile, for tuning). */
tg_status tg_attn_choose_tiling(const tg_vk_caps *caps, tg_mm_strategy forced, int64_t Tq,
                                int64_t d4, int64_t v4, uint32_t texel_bytes, tg_attn_tiling *out);

/* Whether a kernel that does one of several jobs per workgroup (a group of
 * independent parts, a row part beside a column part) should instead run
 * every job in every workgroup, one after another. CPU devices run lanes as
 * SIMD vectors and execute every branch under a mask, even one uniform over
 * the workgroup (llvmpipe 22.3: an `if` on gl_WorkGroupID skipped by half
 * the workgroups costs as much as no `if`), so choosing a job per
 * workgroup costs every job in every workgroup; GPUs branch. The CPU class
 * says yes; $TG_SERIAL_PARTS = "0" / "1" overrides (tests run both). */
bool tg_serial_parts(const tg_vk_caps *caps);

/* Whether vec4 storage-buffer stores should be written as two 64-bit
 * halves (tg_gen_store4_fn): lavapipe runs each component of a store as
 * its own bounds-checked store for each lane in turn, so two halves cost
 * about half of four floats; GPUs store a vec4 at once. CPU devices with
 * shaderInt64 say yes; $TG_STORE_PAIRS = "0" / "1" overrides. */
bool tg_store_pairs(const tg_vk_caps *caps);

/* cross_entropy with its cross_entropy_grad as one kernel that takes the
 * rows one by one, each read whole (loss terms and max, sum) before its
 * gradient is written, the loss added from partial sums in scratch
 * memory (gen_nn.c): CPU devices with storage texel views. The gradient
 * may then write over the logits. */
bool tg_ce_pair_by_rows(const tg_vk_caps *caps);

#endif /* TG_BACKEND_DEVICE_CLASS_H */
