/* backend/device_class.c — the per-device-class strategy and tile table. */
#include "backend/device_class.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph_internal.h"

const char *tg_mm_strategy_name(tg_mm_strategy s) {
    switch (s) {
    case TG_MM_STRATEGY_AUTO: return "auto";
    case TG_MM_STRATEGY_REGISTER: return "register";
    case TG_MM_STRATEGY_SHARED: return "shared";
    }
    return "?";
}

/* Default tile per class. Register blocking: 8x8 invocations each owning an
 * 8x8 block measured best on lavapipe (39-41 GFLOP/s at 1024^3; larger
 * blocks spill). Shared tiles: 64x64 outputs per workgroup of 16x16
 * invocations, 4x4 each, BK 16 (8 KiB of shared memory) is the classic
 * portable choice; Intel and unknown integrated GPUs get BK 8 and smaller
 * workgroups, which suit their smaller register files and SIMD8/16. */
static const struct {
    tg_vk_device_class klass;
    tg_mm_tiling tile;
} class_table[] = {
    {TG_VK_CLASS_CPU, {TG_MM_STRATEGY_REGISTER, 8, 8, 8, 8, 0}},
    {TG_VK_CLASS_NVIDIA, {TG_MM_STRATEGY_SHARED, 16, 16, 4, 4, 16}},
    {TG_VK_CLASS_AMD, {TG_MM_STRATEGY_SHARED, 16, 16, 4, 4, 16}},
    {TG_VK_CLASS_APPLE, {TG_MM_STRATEGY_SHARED, 16, 16, 4, 4, 16}},
    {TG_VK_CLASS_INTEL, {TG_MM_STRATEGY_SHARED, 16, 8, 4, 4, 8}},
    {TG_VK_CLASS_INTEGRATED, {TG_MM_STRATEGY_SHARED, 8, 8, 4, 4, 8}},
    {TG_VK_CLASS_OTHER, {TG_MM_STRATEGY_SHARED, 8, 8, 4, 4, 8}},
};

/* The tile a strategy uses on a class whose table row has the other one. */
static const tg_mm_tiling default_register = {TG_MM_STRATEGY_REGISTER, 8, 8, 8, 8, 0};
static const tg_mm_tiling default_shared = {TG_MM_STRATEGY_SHARED, 16, 16, 4, 4, 16};

static uint32_t shared_bytes(const tg_mm_tiling *t) {
    /* As[BK][BM] and Bs[BK][BN] floats (f16 inputs are widened on load). */
    return t->bk * (t->wg_y * t->tm + t->wg_x * t->tn) * 4u;
}

tg_status tg_mm_choose_tiling(const tg_vk_caps *caps, tg_mm_strategy forced, int64_t M, int64_t N,
                              int64_t K, tg_mm_tiling *out) {
    (void)K;
    if (!caps || !out) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "mm tiling: NULL argument");
    if (forced == TG_MM_STRATEGY_AUTO) {
        const char *env = getenv("TG_MM_STRATEGY");
        if (env && strcmp(env, "register") == 0) forced = TG_MM_STRATEGY_REGISTER;
        if (env && strcmp(env, "shared") == 0) forced = TG_MM_STRATEGY_SHARED;
    }
    tg_mm_tiling t = default_shared;
    for (size_t i = 0; i < sizeof class_table / sizeof class_table[0]; i++)
        if (class_table[i].klass == caps->device_class) t = class_table[i].tile;
    if (forced == TG_MM_STRATEGY_REGISTER && t.strategy != forced) t = default_register;
    if (forced == TG_MM_STRATEGY_SHARED && t.strategy != forced) t = default_shared;

    /* $TG_MM_TILE = "wg_x,wg_y,tm,tn[,bk]" replaces the table's tile (for
     * tuning on a new device; the limits below still apply). */
    const char *tile = getenv("TG_MM_TILE");
    if (tile) {
        unsigned v[5] = {0};
        int n = sscanf(tile, "%u,%u,%u,%u,%u", &v[0], &v[1], &v[2], &v[3], &v[4]);
        if (n >= 4 && v[0] && v[1] && v[2] && v[2] <= 16 && v[3] && v[3] % 4 == 0 && v[3] <= 16) {
            t.wg_x = v[0];
            t.wg_y = v[1];
            t.tm = v[2];
            t.tn = v[3];
            if (n == 5 && v[4] >= 4 && v[4] % 4 == 0) t.bk = v[4];
        }
    }

    /* Tiny M (a decoder step has M = 1): rows per invocation and workgroup
     * rows shrink so lanes are spent along N instead of on masked rows. */
    if (t.strategy == TG_MM_STRATEGY_REGISTER && M < (int64_t)(t.tm * t.wg_y)) {
        if (M <= 4) {
            t.tm = (uint32_t)M;
            t.wg_x = t.wg_x * t.wg_y;
            t.wg_y = 1;
        } else {
            while (t.wg_y > 1 && (int64_t)(t.tm * (t.wg_y / 2)) >= M) {
                t.wg_y /= 2;
                t.wg_x *= 2;
            }
        }
    }
    /* Narrow N: fewer invocations along N (keep the product for occupancy). */
    while (t.wg_x > 1 && (int64_t)(t.tn * (t.wg_x / 2)) >= N &&
           t.strategy == TG_MM_STRATEGY_REGISTER)
        t.wg_x /= 2;

    /* Device limits: halve the workgroup until it fits, then BK for shared
     * memory. */
    uint32_t max_inv = caps->max_workgroup_invocations ? caps->max_workgroup_invocations : 128;
    while (t.wg_x * t.wg_y > max_inv || t.wg_x > caps->max_workgroup_size[0] ||
           t.wg_y > caps->max_workgroup_size[1]) {
        if (t.wg_x >= t.wg_y && t.wg_x > 1)
            t.wg_x /= 2;
        else if (t.wg_y > 1)
            t.wg_y /= 2;
        else
            break;
    }
    if (t.strategy == TG_MM_STRATEGY_SHARED) {
        while (shared_bytes(&t) > caps->max_shared_memory_bytes && t.bk > 4) t.bk /= 2;
        if (shared_bytes(&t) > caps->max_shared_memory_bytes)
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "matmul: shared-memory tiles need %u bytes, device '%s' has %u",
                                shared_bytes(&t), caps->name, caps->max_shared_memory_bytes);
    }
    if (t.wg_x * t.wg_y > max_inv || t.wg_x > caps->max_workgroup_size[0] ||
        t.wg_y > caps->max_workgroup_size[1])
        return tg_set_error(TG_ERR_UNSUPPORTED, "matmul: device '%s' workgroup limits too small",
                            caps->name);
    *out = t;
    return TG_OK;
}
