/* backend/gen_movement.c — data movement and state: reshape, permute,
 * broadcast_to, slice, concat, pad, gather, scatter_add, assign and
 * slice_update. One invocation per output element (slice_update: per
 * update element), all index math from gen_common's offset functions.
 *
 * reshape, permute, broadcast_to, slice and assign are one kernel: out[i]
 * = in[off(i)] with strides per case; sibling permutes, broadcasts and
 * slices of one input with one element count share a kernel (a
 * layer_norm_grad_wb's weight and bias rows). assign's output binding is the
 * variable's buffer (the executor binds it), so it is a copy of the value.
 * slice_update writes only the slab: its output binding must be the
 * variable's buffer, which keeps the rest; `start` is read at run time
 * and clamped per axis to [0, dim - update dim] so the slab always fits
 * (the interpreter reports an error instead).
 * scatter_add is deterministic without atomics: a workgroup owns a block
 * of output rows (an invocation per column), copies it from the target,
 * then walks the indices in order and adds the update rows that land in
 * its block, in place; the sum order is the interpreter's. The work is
 * the copy, the updates, and (indices x blocks) index tests, not
 * (indices) per output element (1000x256 rows, 1000 indices: 3.2 s ->
 * 33 ms on lavapipe). */
#include "backend/gen_common.h"

#include <stdio.h>
#include <string.h>

#define SCATTER_REG_ROWS 16 /* CPU scatter_add: rows a block keeps in registers */

/* CPU scatter_add: lane 0 lists the chunk's indices whose row passes
 * `in_block` (GLSL on `row`), in order, and every lane walks the list;
 * the loop is left open after `uint q = smatch[m];` for the caller's add
 * and closing brace. */
static void scatter_list(tg_sb *b, const char *in_block) {
    tg_sb_printf(b,
                 "        if (l == 0u) {\n"
                 "            uint n = 0u;\n"
                 "            for (uint q = 0u; q < cn; q++) {\n"
                 "                int row = sidx[q];\n"
                 "                if (%s) smatch[n++] = q;\n"
                 "            }\n"
                 "            s_n = n;\n"
                 "        }\n"
                 "        barrier();\n"
                 "        uint n = s_n;\n" /* uniform over the workgroup */
                 "        for (uint m = 0u; m < n; m++) {\n"
                 "            uint q = smatch[m];\n",
                 in_block);
}

/* A workgroup of at least `want` invocations where the device allows:
 * tg_gen_wg_size rounds down to a power of two, so one doubling (up to
 * 1024 and the device's limits) covers `want`. */
static uint32_t wg_covering(const tg_vk_caps *caps, uint32_t want) {
    uint32_t wg = tg_gen_wg_size(caps, want);
    if (wg < want && wg * 2 <= 1024 && wg * 2 <= caps->max_workgroup_invocations &&
        wg * 2 <= caps->max_workgroup_size[0])
        wg *= 2;
    return wg;
}

static int64_t count_of(const tg_node *n) {
    return tg_shape_count(n->rank, n->shape);
}

static int64_t prod(const int64_t *s, int from, int to) {
    int64_t p = 1;
    for (int d = from; d < to; d++) p *= s[d];
    return p;
}

/* out[i] = in[off(i)]: the strides that read x for the output's element. */
static void copy_strides(const tg_node *n, const tg_node *x, int64_t *strides, int64_t *base) {
    int64_t xs[TG_MAX_RANK];
    tg_gen_row_strides(x->rank, x->shape, xs);
    *base = 0;
    switch (n->op) {
    case TG_OP_PERMUTE:
        for (int d = 0; d < n->rank; d++) strides[d] = xs[n->attrs.axes[d]];
        break;
    case TG_OP_BROADCAST_TO:
        tg_gen_bcast_strides(x->rank, x->shape, n->rank, n->shape, strides);
        break;
    case TG_OP_SLICE:
        for (int d = 0; d < n->rank; d++) {
            *base += n->attrs.begin[d] * xs[d];
            strides[d] = n->attrs.step[d] * xs[d];
        }
        break;
    default: /* reshape, assign: the same elements in the same order */
        tg_gen_row_strides(n->rank, n->shape, strides);
        break;
    }
}

static const char *main_head = "void main() {\n"
                               "    uint i = tg_group() * %uu + gl_LocalInvocationID.x;\n"
                               "    if (i >= %lluu) return;\n";

static bool is_copy(tg_op op) {
    return op == TG_OP_PERMUTE || op == TG_OP_BROADCAST_TO || op == TG_OP_SLICE;
}

/* Sibling copies (fusion's sibling merge): several permute, broadcast_to
 * or slice members, each an output, all of one element count, reading
 * one input or one each: out_j[i] = in_j[off_j(i)], one invocation per
 * element for all. */
static tg_status gen_sibling_copies(const tg_vk_caps *caps, const tg_kernel *k,
                                    tg_kernel_code *out) {
    const tg_graph *gr = k->g;
    const tg_node *first = &gr->nodes[k->outputs[0]];
    int64_t count = count_of(first);
    if (k->n_outputs != k->n_nodes || count > (int64_t)UINT32_MAX)
        return tg_set_error(TG_ERR_UNSUPPORTED, "movement generator: sibling copies of node %d",
                            (int)k->inputs[0]);
    int src[TG_KERNEL_MAX_IO];
    for (int j = 0; j < k->n_outputs; j++) {
        const tg_node *n = &gr->nodes[k->outputs[j]];
        src[j] = tg_gen_input_index(k, n->inputs[0]);
        if (!is_copy(n->op) || src[j] < 0 || count_of(n) != count ||
            count_of(&gr->nodes[n->inputs[0]]) > (int64_t)UINT32_MAX)
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "movement generator: %s %d is not a copy of a kernel input with "
                                "%lld elements",
                                tg_ops[n->op].name, (int)k->outputs[j], (long long)count);
    }
    uint32_t wg = tg_gen_wg_size(caps, 128);
    tg_gen g;
    tg_status st = tg_gen_begin(&g, caps, k, out, wg, false);
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }
    for (int j = 0; j < k->n_outputs; j++) {
        const tg_node *n = &gr->nodes[k->outputs[j]], *x = &gr->nodes[n->inputs[0]];
        int64_t strides[TG_MAX_RANK], base;
        char name[32];
        copy_strides(n, x, strides, &base);
        snprintf(name, sizeof name, "src_off%d", j);
        tg_gen_offset_fn(&g.b, name, n->rank, n->shape, strides, base);
    }
    tg_sb_printf(&g.b, main_head, wg, (unsigned long long)count);
    for (int j = 0; j < k->n_outputs; j++)
        tg_sb_printf(&g.b, "    st%d(i, ld%d(src_off%d(i)));\n", j, src[j], j);
    tg_sb_printf(&g.b, "}\n");
    return tg_gen_finish(&g, ((uint64_t)count + wg - 1) / wg);
}

/* A gather of f32 rows whose inner extent is whole vec4s, on a CPU device:
 * 4 elements an invocation from one index, one RGBA texel, one vec4 store
 * (lavapipe runs every storage-buffer access as a loop over the lanes, and
 * the element kernel paid an index load and a store per element: charlm's
 * token embedding [16, 64, 64] ran ~300 us). */
static bool gather_quads(const tg_vk_caps *caps, const tg_kernel *k) {
    const tg_node *n = &k->g->nodes[k->nodes[0]];
    if (caps->device_class != TG_VK_CLASS_CPU || n->op != TG_OP_GATHER || n->dtype != TG_F32 ||
        k->output_storage[0] != TG_F32 || !tg_gen_texel_input_ok(caps, k, 0, true))
        return false;
    const tg_node *x = &k->g->nodes[n->inputs[0]];
    return prod(x->shape, (int)n->attrs.axis + 1, x->rank) % 4 == 0;
}

static tg_status gen_gather_quads(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out,
                                  uint32_t wg) {
    const tg_graph *gr = k->g;
    const tg_node *n = &gr->nodes[k->nodes[0]];
    const tg_node *x = &gr->nodes[n->inputs[0]], *idx = &gr->nodes[n->inputs[1]];
    int ax = (int)n->attrs.axis;
    int64_t inner = prod(x->shape, ax + 1, x->rank), dim = x->shape[ax];
    int64_t nidx = count_of(idx), quads = count_of(n) / 4;
    tg_gen g;
    tg_status st = tg_gen_begin_texel(&g, caps, k, out, wg, false, 1u, true);
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }
    /* out [outer, n_idx, inner] from x [outer, dim, inner], by texels */
    tg_gen_vec4_output(&g.b, k, 0);
    tg_sb_printf(&g.b,
                 "void main() {\n"
                 "    uint q = tg_group() * %uu + gl_LocalInvocationID.x;\n"
                 "    if (q >= %lluu) return;\n"
                 "    uint i = 4u * q, inn = i %% %lluu, j = (i / %lluu) %% %lluu, o = i / %lluu;\n"
                 "    int row = ld1(j);\n"
                 "    o4_0[q] = (row >= 0 && row < %lld) ? tf0(int(((o * %lluu + uint(row)) * "
                 "%lluu + inn) >> 2)) : vec4(0.0);\n}\n",
                 wg, (unsigned long long)quads, (unsigned long long)inner,
                 (unsigned long long)inner, (unsigned long long)nidx,
                 (unsigned long long)(inner * nidx), (long long)dim, (unsigned long long)dim,
                 (unsigned long long)inner);
    return tg_gen_finish(&g, ((uint64_t)quads + wg - 1) / wg);
}

/* CPU scatter_add of f32 rows whose inner extent is whole vec4s, a few
 * rows a block (charlm's embedding gradient: 1024 rows of 64 into 96):
 * the register path below with a quad of columns an invocation. The
 * block's rows stay in vec4 registers. Each lane lists the indices of its
 * own stretch of the chunk that land in the block, packed (q << 5 | row -
 * v0), and the workgroup walks the lists in lane order, which is index
 * order: per update one RGBA texel and a vec4 select per row. The lane per
 * column paid a scalar fetch and two shared loads (each a loop over the
 * lanes on lavapipe) per update and column, and lane 0 listed the whole
 * chunk alone. The adds and their order are unchanged. */
static bool scatter_quads(const tg_vk_caps *caps, const tg_kernel *k, int64_t *per_block,
                          int64_t *blocks) {
    const tg_node *n = &k->g->nodes[k->nodes[0]];
    if (caps->device_class != TG_VK_CLASS_CPU || n->op != TG_OP_SCATTER_ADD || n->dtype != TG_F32 ||
        k->output_storage[0] != TG_F32 || !tg_gen_texel_input_ok(caps, k, 0, true) ||
        !tg_gen_texel_input_ok(caps, k, 2, true))
        return false;
    int ax = (int)n->attrs.axis;
    int64_t inner = prod(n->shape, ax + 1, n->rank), dim = n->shape[ax];
    int64_t quads = prod(n->shape, 0, ax) * inner / 4;
    if (inner % 4 != 0 || dim < 1 || quads < 1 || quads > 1024 ||
        wg_covering(caps, (uint32_t)quads) < quads) /* a lane a quad */
        return false;
    /* 8 blocks (the device has few threads), at most SCATTER_REG_ROWS rows each */
    int64_t pb = (dim + 7) / 8;
    if (pb > SCATTER_REG_ROWS) return false;
    *per_block = pb;
    *blocks = (dim + pb - 1) / pb;
    return true;
}

static tg_status gen_scatter_quads(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out,
                                   int64_t per_block, int64_t blocks) {
    typedef unsigned long long ull;
    const tg_graph *gr = k->g;
    const tg_node *n = &gr->nodes[k->nodes[0]];
    const tg_node *idx = &gr->nodes[n->inputs[1]];
    int ax = (int)n->attrs.axis;
    int64_t inner = prod(n->shape, ax + 1, n->rank), dim = n->shape[ax];
    int64_t quads = prod(n->shape, 0, ax) * inner / 4, nidx = count_of(idx);
    int64_t chunk = 1024;                             /* indices listed a time */
    uint32_t wg = wg_covering(caps, (uint32_t)quads); /* >= quads: scatter_quads */
    int64_t stretch = (chunk + wg - 1) / wg;          /* indices a lane lists */
    int64_t stretch4 = (stretch + 3) / 4;             /* its list's uvec4 slots */
    /* loop trips: the lists and their walk (at most every index, and a
     * trip a lane list), per chunk (lavapipe's loop limit, gen_nn.c) */
    if (nidx + (nidx / chunk + 1) * (stretch + wg) > 60000)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "scatter_add of %lld indices: over the loop iterations an "
                            "invocation may run on this CPU device",
                            (long long)nidx);
    tg_gen g;
    tg_status st = tg_gen_begin_texel(&g, caps, k, out, wg, false, 1u | 4u, true);
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }
    tg_sb *b = &g.b;
    /* element (o, v, inn) of the output at (o * dim + v) * inner + inn, of
     * the updates at (o * n_idx + j) * inner + inn; quad c holds elements
     * 4c .. 4c + 3 of a row's columns (o, inn) */
    tg_sb_printf(b,
                 "layout(std430, binding = %d) buffer BQ0 { vec4 o4_0[]; };\n"
                 "shared uvec4 slist4[%lld];\n"
                 "shared uint scount[%u];\n"
                 "uint out_at4(uint c, uint v) {\n"
                 "    uint e = 4u * c;\n"
                 "    return (((e / %lluu) * %lluu + v) * %lluu + e %% %lluu) >> 2;\n"
                 "}\n"
                 "void main() {\n"
                 "    uint blk = tg_group();\n"
                 "    if (blk >= %lluu) return;\n" /* uniform over the workgroup */
                 "    uint l = gl_LocalInvocationID.x, c = min(l, %lluu);\n"
                 "    uint v0 = blk * %lluu;\n"
                 "    uint e0 = 4u * c, u0 = (e0 / %lluu) * %lluu * %lluu + e0 %% %lluu;\n",
                 k->n_inputs, (long long)(stretch4 * wg), wg, (ull)inner, (ull)dim, (ull)inner,
                 (ull)inner, (ull)blocks, (ull)quads - 1, (ull)per_block, (ull)inner, (ull)nidx,
                 (ull)inner, (ull)inner);
    for (int64_t r = 0; r < per_block; r++)
        tg_sb_printf(b, "    vec4 a%lld = tf0(int(out_at4(c, min(v0 + %lluu, %lluu))));\n",
                     (long long)r, (ull)r, (ull)dim - 1);
    tg_sb_printf(b,
                 "    for (uint j0 = 0u; j0 < %lluu; j0 += %lluu) {\n"
                 "        uint lo = l * %lluu, hi = min(lo + %lluu, min(%lluu, %lluu - j0));\n"
                 "        uint mine = 0u;\n"
                 "        barrier();\n" /* the previous chunk is done */
                 "        for (uint q = lo; q < hi; q++) {\n"
                 "            int row = ld1(j0 + q);\n"
                 "            if (row >= int(v0) && row < int(v0 + %lluu)) {\n"
                 "                slist4[l * %lluu + (mine >> 2)][mine & 3u] = (q << 5) | "
                 "uint(row - int(v0));\n"
                 "                mine++;\n"
                 "            }\n"
                 "        }\n"
                 "        scount[l] = mine;\n"
                 "        barrier();\n"
                 "        for (uint s = 0u; s < %uu; s++) {\n"
                 "            uint n = scount[s];\n" /* uniform over the workgroup */
                 "            for (uint m = 0u; m < n; m += 4u) {\n"
                 "                uvec4 mm = slist4[s * %lluu + (m >> 2)];\n",
                 (ull)nidx, (ull)chunk, (ull)stretch, (ull)stretch, (ull)chunk, (ull)nidx,
                 (ull)per_block, (ull)stretch4, wg, (ull)stretch4);
    for (int j = 0; j < 4; j++) {
        /* past the list: row 31 of no block, and an update row in bounds */
        tg_sb_printf(b,
                     "                {\n"
                     "                uint e = m + %du < n ? mm[%d] : 31u, v = e & 31u;\n"
                     "                vec4 u = tf2(int((u0 + (j0 + (e >> 5)) * %lluu) >> 2));\n",
                     j, j, (ull)inner);
        for (int64_t r = 0; r < per_block; r++)
            tg_sb_printf(b, "                a%lld = v == %lluu ? a%lld + u : a%lld;\n",
                         (long long)r, (ull)r, (long long)r, (long long)r);
        tg_sb_printf(b, "                }\n");
    }
    tg_sb_printf(b,
                 "            }\n"
                 "        }\n"
                 "    }\n"
                 "    if (l > %lluu) return;\n",
                 (ull)quads - 1);
    for (int64_t r = 0; r < per_block; r++)
        tg_sb_printf(b, "    if (v0 + %lluu < %lluu) o4_0[out_at4(c, v0 + %lluu)] = a%lld;\n",
                     (ull)r, (ull)dim, (ull)r, (long long)r);
    tg_sb_printf(b, "}\n");
    return tg_gen_finish(&g, (uint64_t)blocks);
}

tg_status tg_gen_movement(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out) {
    const tg_graph *gr = k->g;
    int32_t id = k->nodes[k->n_nodes - 1];
    const tg_node *n = &gr->nodes[id];
    if (k->n_nodes > 1 && is_copy(n->op)) return gen_sibling_copies(caps, k, out);
    if (k->n_nodes != 1 || k->n_inputs != n->n_inputs || k->n_outputs != 1)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "movement generator: %s %d must be alone in its "
                            "kernel, reading each input once",
                            tg_ops[n->op].name, (int)id);
    for (int i = 0; i < n->n_inputs; i++)
        if (k->inputs[i] != n->inputs[i] || count_of(&gr->nodes[n->inputs[i]]) > UINT32_MAX)
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "movement generator: %s %d: kernel inputs must be the node's "
                                "inputs in order, each under 2^32 elements",
                                tg_ops[n->op].name, (int)id);
    int64_t count = count_of(n);
    if (count > (int64_t)UINT32_MAX)
        return tg_set_error(TG_ERR_UNSUPPORTED, "%s of %lld elements", tg_ops[n->op].name,
                            (long long)count);
    uint32_t wg = tg_gen_wg_size(caps, 128);
    if (n->op == TG_OP_SCATTER_ADD) { /* an invocation per column of a row, up to 1024 */
        int ax = (int)n->attrs.axis;
        int64_t cols = count / (n->shape[ax] ? n->shape[ax] : 1);
        wg = wg_covering(caps, cols < 64 ? 64 : cols > 1024 ? 1024 : (uint32_t)cols);
    }
    if (gather_quads(caps, k)) return gen_gather_quads(caps, k, out, wg);
    int64_t sq_rows, sq_blocks;
    if (scatter_quads(caps, k, &sq_rows, &sq_blocks))
        return gen_scatter_quads(caps, k, out, sq_rows, sq_blocks);
    tg_gen g;
    tg_status st = tg_gen_begin(&g, caps, k, out, wg, false);
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }
    tg_sb *b = &g.b;
    const char *ct = tg_gen_ctype(n->dtype);
    char lit[64];
    uint64_t n_threads = (uint64_t)count;

    switch (n->op) {
    case TG_OP_RESHAPE:
    case TG_OP_PERMUTE:
    case TG_OP_BROADCAST_TO:
    case TG_OP_SLICE:
    case TG_OP_ASSIGN: {
        const tg_node *x = &gr->nodes[n->inputs[n->op == TG_OP_ASSIGN ? 1 : 0]];
        int64_t strides[TG_MAX_RANK], base;
        copy_strides(n, x, strides, &base);
        tg_gen_offset_fn(b, "src_off", n->rank, n->shape, strides, base);
        tg_sb_printf(b, main_head, wg, (unsigned long long)count);
        tg_sb_printf(b, "    st0(i, ld%d(src_off(i)));\n}\n", n->op == TG_OP_ASSIGN ? 1 : 0);
        break;
    }
    case TG_OP_CONCAT: {
        /* [outer, axis, inner]: the input is found by the axis coordinate */
        int ax = (int)n->attrs.axis;
        int64_t inner = prod(n->shape, ax + 1, n->rank), dim = n->shape[ax];
        tg_sb_printf(b, main_head, wg, (unsigned long long)count);
        tg_sb_printf(b,
                     "    uint inn = i %% %lluu, a = (i / %lluu) %% %lluu, o = i / %lluu;\n"
                     "    %s v;\n",
                     (unsigned long long)inner, (unsigned long long)inner, (unsigned long long)dim,
                     (unsigned long long)(inner * dim), ct);
        int64_t start = 0;
        for (int j = 0; j < n->n_inputs; j++) {
            int64_t dj = gr->nodes[n->inputs[j]].shape[ax];
            if (dj == 0) continue;
            tg_sb_printf(
                b, "    %sif (a < %lluu) v = ld%d((o * %lluu + a - %lluu) * %lluu + inn);\n",
                start ? "else " : "", (unsigned long long)(start + dj), j, (unsigned long long)dj,
                (unsigned long long)start, (unsigned long long)inner);
            start += dj;
        }
        tg_sb_printf(b, "    st0(i, v);\n}\n");
        break;
    }
    case TG_OP_PAD: {
        const tg_node *x = &gr->nodes[n->inputs[0]];
        int64_t xs[TG_MAX_RANK];
        tg_gen_row_strides(x->rank, x->shape, xs);
        tg_sb_printf(b, main_head, wg, (unsigned long long)count);
        tg_sb_printf(b, "    uint r = i, src = 0u;\n    bool inside = true;\n");
        for (int d = n->rank - 1; d >= 0; d--) {
            if (n->shape[d] == 0) continue;
            tg_sb_printf(b,
                         "    { uint c = r %% %lluu; r /= %lluu;\n"
                         "      inside = inside && c >= %lluu && c < %lluu;\n"
                         "      src += (c - %lluu) * %lluu; }\n",
                         (unsigned long long)n->shape[d], (unsigned long long)n->shape[d],
                         (unsigned long long)n->attrs.lo[d],
                         (unsigned long long)(n->attrs.lo[d] + x->shape[d]),
                         (unsigned long long)n->attrs.lo[d], (unsigned long long)xs[d]);
        }
        tg_sb_printf(b, "    st0(i, inside ? ld0(src) : %s);\n}\n",
                     tg_gen_lit(n->dtype, n->attrs.value, lit, sizeof lit));
        break;
    }
    case TG_OP_GATHER: {
        /* out [outer, n_idx, inner] from x [outer, dim, inner] */
        const tg_node *x = &gr->nodes[n->inputs[0]], *idx = &gr->nodes[n->inputs[1]];
        int ax = (int)n->attrs.axis;
        int64_t inner = prod(x->shape, ax + 1, x->rank), dim = x->shape[ax];
        int64_t nidx = count_of(idx);
        tg_sb_printf(b, main_head, wg, (unsigned long long)count);
        tg_sb_printf(b,
                     "    uint inn = i %% %lluu, j = (i / %lluu) %% %lluu, o = i / %lluu;\n"
                     "    int row = ld1(j);\n"
                     "    st0(i, (row >= 0 && row < %lld) ? ld0((o * %lluu + uint(row)) * %lluu + "
                     "inn) : %s(0));\n}\n",
                     (unsigned long long)inner, (unsigned long long)inner, (unsigned long long)nidx,
                     (unsigned long long)(inner * nidx), (long long)dim, (unsigned long long)dim,
                     (unsigned long long)inner, ct);
        break;
    }
    case TG_OP_SCATTER_ADD: {
        /* out = target [outer, dim, inner]; updates [outer, n_idx, inner].
         * A workgroup owns a block of rows of the output (all columns c =
         * (o, inn), its invocations each every WG-th column): it copies
         * them from the target row by row, then walks the indices in
         * order and, for each index in its block, adds the update row in
         * place. One writer per element, in index order: deterministic,
         * the interpreter's order. The indices are staged in shared
         * memory a chunk at a time; the test of an index is uniform over
         * the workgroup. */
        const tg_node *idx = &gr->nodes[n->inputs[1]];
        int ax = (int)n->attrs.axis;
        int64_t inner = prod(n->shape, ax + 1, n->rank), dim = n->shape[ax];
        int64_t outer = prod(n->shape, 0, ax), nidx = count_of(idx), cols = outer * inner;
        int64_t cpl = (cols + wg - 1) / wg, chunk = 1024; /* columns per invocation */
        bool cpu = caps->device_class == TG_VK_CLASS_CPU;
        /* row blocks: each walks all indices. CPU devices: a few (the
         * device has few threads), each copying at most 30000 elements per
         * invocation: lavapipe's loop limit (gen_nn.c); GPUs: 16 rows */
        int64_t blocks = cpu ? 8 : (dim + 15) / 16;
        if (cpu && blocks < (dim * cpl + 29999) / 30000) blocks = (dim * cpl + 29999) / 30000;
        if (blocks > dim) blocks = dim;
        if (blocks < 1) blocks = 1;
        int64_t per_block = (dim + blocks - 1) / blocks;
        blocks = per_block ? (dim + per_block - 1) / per_block : 1;
        /* loop iterations: the copy, every index (four an iteration), the
         * staging, and the added rows (at most all indices) */
        int64_t iters = per_block * (cpl > 1 ? cpl + 1 : 1) + nidx / 4 +
                        (nidx / chunk + 1) * (chunk / wg + 8) + (cpl > 1 ? nidx * (cpl + 1) : 0);
        /* CPU devices: the test of an index does not skip the add (a CPU
         * runs both sides of every branch): lane 0 lists the chunk's
         * indices in the block, in order, and the workgroup adds only
         * those (charlm's embedding gradient, 1024 indices into 8 blocks
         * of 12 rows: every block ran all 1024 adds) */
        if (cpu) iters += nidx + nidx * (cpl > 1 ? cpl : 0);
        if (cpu && iters > 60000) {
            tg_gen_abort(&g);
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "scatter_add of %lld indices into rows of %lld: over the loop "
                                "iterations an invocation may run on this CPU device",
                                (long long)nidx, (long long)cols);
        }
        n_threads = (uint64_t)blocks * wg;
        /* the output is read back (accumulated in place): not writeonly */
        char decl[96];
        snprintf(decl, sizeof decl, "binding = %d) writeonly buffer", k->n_inputs);
        char *w = strstr(b->s, decl);
        if (!w) {
            tg_gen_abort(&g);
            return tg_set_error(TG_ERR_UNSUPPORTED, "scatter_add: output binding not found");
        }
        w = strstr(w, "writeonly");
        memset(w, ' ', strlen("writeonly"));
        /* a row's columns c = l, l + WG, ...: a loop only when they
         * outnumber the invocations (lavapipe counts every loop trip) */
        char cloop[128];
        if (cpl > 1)
            snprintf(cloop, sizeof cloop, "for (uint c = l; c < %lluu; c += %uu)",
                     (unsigned long long)cols, wg);
        else
            snprintf(cloop, sizeof cloop, "uint c = l; if (c < %lluu)", (unsigned long long)cols);
        /* element (o, v, inn) of the output at (o * dim + v) * inner + inn,
         * of the updates at (o * n_idx + j) * inner + inn */
        tg_sb_printf(b,
                     "shared int sidx[%lld];\n"
                     "uint out_at(uint c, uint v) {\n"
                     "    return ((c / %lluu) * %lluu + v) * %lluu + c %% %lluu;\n"
                     "}\n"
                     "void add_row(uint l, uint v, uint j) {\n"
                     "    %s {\n"
                     "        uint at = out_at(c, v);\n"
                     "        st0(at, %s(o0[at]) + ld2(((c / %lluu) * %lluu + j) * %lluu + c %% "
                     "%lluu));\n"
                     "    }\n"
                     "}\n",
                     (long long)chunk, (unsigned long long)inner, (unsigned long long)dim,
                     (unsigned long long)inner, (unsigned long long)inner, cloop, ct,
                     (unsigned long long)inner, (unsigned long long)nidx, (unsigned long long)inner,
                     (unsigned long long)inner);
        /* CPU devices, a column per invocation, a few rows a block: the
         * block's rows stay in registers a<k> from the copy to the end, and
         * an update adds to the row it lands on through a select per row
         * (a read and a write of the output per update and column are a
         * loop over the lanes each on lavapipe: charlm's 1024 updates into
         * 96 x 64, single-threaded: 486 -> 215 us) */
        bool in_regs = cpu && cpl == 1 && per_block <= SCATTER_REG_ROWS;
        if (cpu) /* the chunk's indices in the block (main) */
            tg_sb_printf(b, "shared uint smatch[%lld];\nshared uint s_n;\n", (long long)chunk);
        if (in_regs) {
            typedef unsigned long long ull;
            tg_sb_printf(b,
                         "void main() {\n"
                         "    uint blk = tg_group();\n"
                         "    if (blk >= %lluu) return;\n" /* uniform over the workgroup */
                         "    uint l = gl_LocalInvocationID.x, c = min(l, %lluu);\n"
                         "    uint v0 = blk * %lluu;\n"
                         "    uint u0 = (c / %lluu) * %lluu * %lluu + c %% %lluu;\n",
                         (ull)blocks, (ull)cols - 1, (ull)per_block, (ull)inner, (ull)nidx,
                         (ull)inner, (ull)inner);
            for (int64_t r = 0; r < per_block; r++)
                tg_sb_printf(b, "    %s a%lld = ld0(out_at(c, min(v0 + %lluu, %lluu)));\n", ct,
                             (long long)r, (ull)r, (ull)dim - 1);
            tg_sb_printf(b,
                         "    for (uint j0 = 0u; j0 < %lluu; j0 += %lluu) {\n"
                         "        uint cn = min(%lluu, %lluu - j0);\n"
                         "        barrier();\n" /* the previous chunk is done */
                         "        for (uint q = l; q < cn; q += %uu) sidx[q] = ld1(j0 + q);\n"
                         "        barrier();\n",
                         (ull)nidx, (ull)chunk, (ull)chunk, (ull)nidx, wg);
            char in_block[96];
            snprintf(in_block, sizeof in_block, "row >= int(v0) && row < int(v0 + %lluu)",
                     (ull)per_block);
            scatter_list(b, in_block);
            tg_sb_printf(b,
                         "            uint v = uint(sidx[q]) - v0;\n"
                         "            %s u = ld2(u0 + (j0 + q) * %lluu);\n",
                         ct, (ull)inner);
            for (int64_t r = 0; r < per_block; r++)
                tg_sb_printf(b, "            a%lld = v == %lluu ? a%lld + u : a%lld;\n",
                             (long long)r, (ull)r, (long long)r, (long long)r);
            tg_sb_printf(b,
                         "        }\n"
                         "    }\n"
                         "    if (l >= %lluu) return;\n",
                         (ull)cols);
            for (int64_t r = 0; r < per_block; r++)
                tg_sb_printf(b, "    if (v0 + %lluu < %lluu) st0(out_at(c, v0 + %lluu), a%lld);\n",
                             (ull)r, (ull)dim, (ull)r, (long long)r);
            tg_sb_printf(b, "}\n");
            break;
        } else
            tg_sb_printf(b, "void scat(uint l, uint q, uint j0, int v0, int v1) {\n"
                            "    int row = sidx[q];\n" /* uniform over the workgroup */
                            "    if (row >= v0 && row < v1) add_row(l, uint(row), j0 + q);\n"
                            "}\n");
        tg_sb_printf(b,
                     "void main() {\n"
                     "    uint blk = tg_group();\n"
                     "    if (blk >= %lluu) return;\n" /* uniform over the workgroup */
                     "    uint l = gl_LocalInvocationID.x;\n"
                     "    uint v0 = blk * %lluu, v1 = min(%lluu, v0 + %lluu);\n"
                     "    for (uint v = v0; v < v1; v++) {\n"
                     "        %s st0(out_at(c, v), ld0(out_at(c, v)));\n"
                     "    }\n"
                     "    for (uint j0 = 0u; j0 < %lluu; j0 += %lluu) {\n"
                     "        uint cn = min(%lluu, %lluu - j0);\n"
                     "        barrier();\n" /* the previous chunk is done */
                     "        for (uint q = l; q < cn; q += %uu) sidx[q] = ld1(j0 + q);\n"
                     "        barrier();\n",
                     (unsigned long long)blocks, (unsigned long long)per_block,
                     (unsigned long long)dim, (unsigned long long)per_block, cloop,
                     (unsigned long long)nidx, (unsigned long long)chunk, (unsigned long long)chunk,
                     (unsigned long long)nidx, wg);
        if (cpu) {
            scatter_list(b, "row >= int(v0) && row < int(v1)");
            tg_sb_printf(b, "            add_row(l, uint(sidx[q]), j0 + q);\n"
                            "        }\n");
        } else {
            tg_sb_printf(b, "        uint q = 0u;\n"
                            "        for (; q + 3u < cn; q += 4u) {\n"
                            "            scat(l, q, j0, int(v0), int(v1));\n"
                            "            scat(l, q + 1u, j0, int(v0), int(v1));\n"
                            "            scat(l, q + 2u, j0, int(v0), int(v1));\n"
                            "            scat(l, q + 3u, j0, int(v0), int(v1));\n"
                            "        }\n"
                            "        for (; q < cn; q++) scat(l, q, j0, int(v0), int(v1));\n");
        }
        tg_sb_printf(b, "    }\n}\n");
        break;
    }
    case TG_OP_SLICE_UPDATE: {
        const tg_node *var = &gr->nodes[n->inputs[0]], *up = &gr->nodes[n->inputs[1]];
        int64_t vs[TG_MAX_RANK];
        tg_gen_row_strides(var->rank, var->shape, vs);
        tg_gen_offset_fn(b, "slab_off", up->rank, up->shape, vs, 0);
        n_threads = (uint64_t)count_of(up);
        tg_sb_printf(b, main_head, wg, (unsigned long long)n_threads);
        tg_sb_printf(b, "    uint base = 0u;\n");
        for (int d = 0; d < var->rank; d++)
            tg_sb_printf(b, "    base += uint(clamp(ld2(%du), 0, %lld)) * %lluu;\n", d,
                         (long long)(var->shape[d] - up->shape[d]), (unsigned long long)vs[d]);
        tg_sb_printf(b, "    st0(base + slab_off(i), ld1(i));\n}\n");
        break;
    }
    default:
        tg_gen_abort(&g);
        return tg_set_error(TG_ERR_UNSUPPORTED, "movement generator: no kernel for %s",
                            tg_ops[n->op].name);
    }
    return tg_gen_finish(&g, (n_threads + wg - 1) / wg);
}
