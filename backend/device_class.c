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

/* Default tile per class. Register blocking on CPUs: 8x8 invocations each
 * owning a 16x4 block, A's rows shuffled across the subgroup (one texel
 * fetch per subgroup instead of one per lane: 1.3-1.7x of the 8x8 block
 * with per-lane fetches on lavapipe, docs/kernels.md); without subgroup
 * shuffles or vec4 texels of A, 8x8 per-lane blocks (larger ones spill).
 * Shared tiles: 64x64 outputs per workgroup of 16x16
 * invocations, 4x4 each, BK 16 (8 KiB of shared memory) is the classic
 * portable choice; Intel and unknown integrated GPUs get BK 8 and smaller
 * workgroups, which suit their smaller register files and SIMD8/16. */
static const struct {
    tg_vk_device_class klass;
    tg_mm_tiling tile;
} class_table[] = {
    {TG_VK_CLASS_CPU, {TG_MM_STRATEGY_REGISTER, 32, 2, 16, 4, 0, 1}}, /* 1: shuffle, S set below */
    {TG_VK_CLASS_NVIDIA, {TG_MM_STRATEGY_SHARED, 16, 16, 4, 4, 16, 0}},
    {TG_VK_CLASS_AMD, {TG_MM_STRATEGY_SHARED, 16, 16, 4, 4, 16, 0}},
    {TG_VK_CLASS_APPLE, {TG_MM_STRATEGY_SHARED, 16, 16, 4, 4, 16, 0}},
    {TG_VK_CLASS_INTEL, {TG_MM_STRATEGY_SHARED, 16, 8, 4, 4, 8, 0}},
    {TG_VK_CLASS_INTEGRATED, {TG_MM_STRATEGY_SHARED, 8, 8, 4, 4, 8, 0}},
    {TG_VK_CLASS_OTHER, {TG_MM_STRATEGY_SHARED, 8, 8, 4, 4, 8, 0}},
};

/* The tile a strategy uses on a class whose table row has the other one. */
/* workgroups a register-tiled product aims for at least */
#define TG_MM_MIN_GROUPS 8

static const tg_mm_tiling default_register = {TG_MM_STRATEGY_REGISTER, 8, 8, 8, 8, 0, 0};
static const tg_mm_tiling default_shared = {TG_MM_STRATEGY_SHARED, 16, 16, 4, 4, 16, 0};

static uint32_t shared_bytes(const tg_mm_tiling *t) {
    /* As[BK][BM] and Bs[BK][BN] floats (f16 inputs are widened on load). */
    return t->bk * (t->wg_y * t->tm + t->wg_x * t->tn) * 4u;
}

/* extent rounded up to whole blocks */
static int64_t padded(int64_t extent, uint32_t block) {
    return (extent + block - 1) / block * block;
}

/* Whether lanes of a subgroup can hand A's rows to each other: subgroup
 * shuffles in compute shaders, and an A layout that allows it. */
static bool can_shuffle_a(const tg_vk_caps *caps, bool a_shufflable) {
    const char *env = getenv("TG_MM_SHUFFLE");
    if (env && strcmp(env, "0") == 0) return false;
    return a_shufflable && caps->subgroup_size >= 1 && caps->subgroup_in_compute &&
           (caps->subgroup_ops & VK_SUBGROUP_FEATURE_SHUFFLE_BIT);
}

bool tg_serial_parts(const tg_vk_caps *caps) {
    const char *env = getenv("TG_SERIAL_PARTS");
    if (env && (strcmp(env, "0") == 0 || strcmp(env, "1") == 0)) return env[0] == '1';
    return caps->device_class == TG_VK_CLASS_CPU;
}

bool tg_store_pairs(const tg_vk_caps *caps) {
    if (!caps->int64) return false;
    const char *env = getenv("TG_STORE_PAIRS");
    if (env && (strcmp(env, "0") == 0 || strcmp(env, "1") == 0)) return env[0] == '1';
    return caps->device_class == TG_VK_CLASS_CPU;
}

tg_status tg_mm_choose_tiling(const tg_vk_caps *caps, tg_mm_strategy forced, int64_t M, int64_t N,
                              int64_t K, tg_mm_tiling *out) {
    return tg_mm_choose_tiling_for(caps, forced, M, N, K, true, out);
}

tg_status tg_mm_choose_tiling_for(const tg_vk_caps *caps, tg_mm_strategy forced, int64_t M,
                                  int64_t N, int64_t K, bool a_shufflable, tg_mm_tiling *out) {
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
    /* $TG_MM_SHUFFLE=0 (for comparisons) or a device or operand that
     * cannot shuffle A: the per-lane register tile */
    if (t.a_shuffle && !can_shuffle_a(caps, a_shufflable)) t = default_register;

    /* $TG_MM_TILE = "wg_x,wg_y,tm,tn[,bk]" replaces the table's tile (for
     * tuning on a new device; the limits below still apply). */
    const char *tile = getenv("TG_MM_TILE");
    bool tuned = false;
    if (tile) {
        unsigned v[5] = {0};
        int n = sscanf(tile, "%u,%u,%u,%u,%u", &v[0], &v[1], &v[2], &v[3], &v[4]);
        if (n >= 4 && v[0] && v[1] && v[2] && v[2] <= 16 && v[3] && v[3] % 4 == 0 && v[3] <= 16) {
            t.wg_x = v[0];
            t.wg_y = v[1];
            t.tm = v[2];
            t.tn = v[3];
            if (n == 5 && v[4] >= 4 && v[4] % 4 == 0) t.bk = v[4];
            tuned = true;
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
    /* Narrow N: fewer invocations along N, more along M (keep the product
     * for occupancy). */
    while (t.wg_x > 1 && (int64_t)(t.tn * (t.wg_x / 2)) >= N &&
           t.strategy == TG_MM_STRATEGY_REGISTER) {
        t.wg_x /= 2;
        if ((int64_t)t.tm * t.wg_y * 2 <= M) t.wg_y *= 2;
    }
    /* Columns that are not whole workgroups (a 96-token vocabulary, 150
     * keys): the narrowest workgroup, down to a subgroup, that pads N
     * least, again with more rows (attention scores 150 x 150 x 32 in
     * 128-column workgroups pad N to 256 and ran at 0.75x of 32 columns). */
    if (t.strategy == TG_MM_STRATEGY_REGISTER && !tuned) {
        uint32_t S = caps->subgroup_size ? caps->subgroup_size : 8, best = t.wg_x;
        for (uint32_t w = t.wg_x / 2; w >= S && w >= 1; w /= 2)
            if (padded(N, t.tn * w) < padded(N, t.tn * best)) best = w;
        t.wg_y *= t.wg_x / best;
        t.wg_x = best;
    }

    /* Few rows per matrix (attention's 150 x 150 per head, batched): halve
     * the workgroup's rows while that cuts the padded edge (150 rows in
     * 64-row tiles compute 192, in 32-row tiles 160), keeping at least a
     * subgroup of invocations so no SIMD lane idles. Only rows: lanes
     * along N share A's texels, and halving the columns too measured
     * 0.6x (docs/kernels.md). */
    if (t.strategy == TG_MM_STRATEGY_REGISTER && !tuned) {
        uint32_t min_inv = caps->subgroup_size ? caps->subgroup_size : 8;
        while (t.wg_y > 1 && t.wg_x * t.wg_y / 2 >= min_inv &&
               padded(M, t.tm * t.wg_y / 2) < padded(M, t.tm * t.wg_y))
            t.wg_y /= 2;
    }

    /* Few workgroups (a weight gradient: a small M x N over a long K, 64 x
     * 64 from 1024 rows is one workgroup): halve the workgroup's rows, then
     * its columns, down to a subgroup, until there are TG_MM_MIN_GROUPS, so
     * the product spreads over the device's cores (llvmpipe runs whole
     * workgroups on its threads). */
    if (t.strategy == TG_MM_STRATEGY_REGISTER && !tuned) {
        uint32_t min_inv = caps->subgroup_size ? caps->subgroup_size : 8;
        for (;;) {
            int64_t rows = t.tm * t.wg_y, cols = t.tn * t.wg_x;
            if (padded(M, rows) / rows * (padded(N, cols) / cols) >= TG_MM_MIN_GROUPS) break;
            if (t.wg_y > 1 && t.wg_x * t.wg_y / 2 >= min_inv)
                t.wg_y /= 2;
            else if (t.wg_x / 2 >= min_inv)
                t.wg_x /= 2;
            else
                break;
        }
    }

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
    /* a subgroup must lie in one row of the workgroup (lanes consecutive
     * along x, as on CPU devices) and cover whole groups of rows */
    if (t.a_shuffle) {
        uint32_t S = caps->subgroup_size;
        bool fits = t.strategy == TG_MM_STRATEGY_REGISTER && t.tm % S == 0 && t.wg_x % S == 0;
        t.a_shuffle = fits ? S : 0;
    }
    *out = t;
    return TG_OK;
}

/* Attention. REGISTER (CPU devices): 8 query rows per invocation, each K/V
 * texel load shared by the 8 rows, 8 keys per softmax step (measured on
 * lavapipe at T=1500, d 64: 4 rows 1.4x slower, 16 no faster). SHARED
 * (GPUs): one row per invocation, 64 rows per workgroup sharing tiles of
 * 32 keys in shared memory. Both take one online-softmax step per 4 keys. */
tg_status tg_attn_choose_tiling(const tg_vk_caps *caps, tg_mm_strategy forced, int64_t Tq,
                                int64_t d4, int64_t v4, uint32_t texel_bytes, tg_attn_tiling *out) {
    if (!caps || !out) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "attention tiling: NULL");
    if (forced == TG_MM_STRATEGY_AUTO) {
        const char *env = getenv("TG_ATTN_STRATEGY");
        if (env && strcmp(env, "register") == 0) forced = TG_MM_STRATEGY_REGISTER;
        if (env && strcmp(env, "shared") == 0) forced = TG_MM_STRATEGY_SHARED;
    }
    if (forced == TG_MM_STRATEGY_AUTO)
        forced =
            caps->device_class == TG_VK_CLASS_CPU ? TG_MM_STRATEGY_REGISTER : TG_MM_STRATEGY_SHARED;
    tg_attn_tiling t = forced == TG_MM_STRATEGY_REGISTER
                           ? (tg_attn_tiling){TG_MM_STRATEGY_REGISTER, 32, 8, 8, 0}
                           : (tg_attn_tiling){TG_MM_STRATEGY_SHARED, 64, 1, 4, 32};
    const char *tile = getenv("TG_ATTN_TILE");
    if (tile) {
        unsigned v[4] = {0};
        int n = sscanf(tile, "%u,%u,%u,%u", &v[0], &v[1], &v[2], &v[3]);
        if (n >= 3 && v[0] >= 1 && v[0] <= 1024 && v[1] >= 1 && v[1] <= 16 && v[2] >= 1 &&
            v[2] <= 16) {
            t.wg = v[0];
            t.rows = v[1];
            t.keys = v[2];
            if (n == 4 && v[3] >= v[2]) t.tile = v[3];
        }
    }
    if (t.tile) t.tile = (t.tile + t.keys - 1) / t.keys * t.keys;
    /* the registers of a row: its query and accumulators (texels) */
    while (t.rows > 1 && (int64_t)t.rows * (d4 + v4) > 512) t.rows /= 2;
    if (Tq >= 1 && (int64_t)t.rows > Tq) t.rows = (uint32_t)Tq;
    /* few rows (a decoder step): a smaller workgroup, at least a subgroup */
    uint32_t sub = caps->subgroup_size ? caps->subgroup_size : 1;
    while (t.wg > sub && t.wg > 1 && (int64_t)(t.wg / 2) * t.rows >= Tq) t.wg /= 2;
    uint32_t lim = caps->max_workgroup_invocations;
    if (caps->max_workgroup_size[0] < lim) lim = caps->max_workgroup_size[0];
    while (t.wg > lim && t.wg > 1) t.wg /= 2;
    if (t.strategy == TG_MM_STRATEGY_SHARED) {
        while (t.tile > t.keys &&
               (uint64_t)t.tile * (uint64_t)(d4 + v4) * texel_bytes > caps->max_shared_memory_bytes)
            t.tile -= t.keys;
        if ((uint64_t)t.tile * (uint64_t)(d4 + v4) * texel_bytes > caps->max_shared_memory_bytes)
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "attention: a tile of %u keys needs more than the %u bytes of "
                                "shared memory of device '%s'",
                                t.tile, caps->max_shared_memory_bytes, caps->name);
    }
    *out = t;
    return TG_OK;
}

bool tg_ce_pair_by_rows(const tg_vk_caps *caps) {
    return caps->device_class == TG_VK_CLASS_CPU && caps->storage_texel;
}
