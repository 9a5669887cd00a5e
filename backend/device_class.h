/* backend/device_class.h — per-device-class code generation strategies.
 *
 * One small table, as IREE keeps per vendor: for each coarse device class
 * (backend/vk.h) the matmul strategy and its default tile, then clamped to
 * the device's limits (invocations, workgroup size, shared memory) and
 * shrunk for tiny shapes. Generators ask here; nothing else hard-codes
 * tile sizes. docs/kernels.md explains the choices and the figures. */
#ifndef TG_BACKEND_DEVICE_CLASS_H
#define TG_BACKEND_DEVICE_CLASS_H

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
} tg_mm_tiling;

/* Chooses the strategy and tile for an M x N x K matmul on a device.
 * `forced` is the caller's choice (AUTO: the class's, or $TG_MM_STRATEGY =
 * "register" / "shared"). Fails (TG_ERR_UNSUPPORTED) only if the device
 * cannot run even the smallest tile of the strategy. */
tg_status tg_mm_choose_tiling(const tg_vk_caps *caps, tg_mm_strategy forced, int64_t M, int64_t N,
                              int64_t K, tg_mm_tiling *out);

#endif /* TG_BACKEND_DEVICE_CLASS_H */
