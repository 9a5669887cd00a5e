/* backend/gen_attention.c — flash attention: softmax(q k^T * scale + mask) v
 * in one kernel that never materialises the [Tq, Tk] scores.
 *
 * Every invocation owns R query rows of one (batch) index and keeps, per
 * row, the scaled query (q * scale), a running maximum m, a running sum l
 * and the output accumulators, all in registers (vec4 when D and Dv are
 * multiples of 4). Keys are visited in blocks of B: the block's R x B
 * scores, then one online-softmax step per row (new max, one rescale of l
 * and the accumulators by exp(m_old - m_new), p = exp(s - m_new)), then
 * acc += p v for the B keys. Everything is unrolled; q, k and v are read
 * through texel buffers (RGBA32F/RGBA16F texels, or scalar ones when a head
 * dim is not a multiple of 4).
 *
 * The rows of a workgroup (rows i0 + r * WG + lane) share the key loop,
 * whose bound is uniform over the workgroup (causal: the visible keys of
 * its last row), so K/V loads are the same for every lane and barriers are
 * legal. Per row, keys beyond its causal limit (bottom-right aligned:
 * query i sees keys j <= i + Tk - Tq) score -inf; a row that sees no key
 * (or only -inf masks) writes zeros, as the interpreter does.
 *
 * Two strategies (backend/device_class.c picks one per device class):
 *  - REGISTER (CPU devices, lavapipe): K/V straight from texel buffers, no
 *    shared memory or barriers; several rows per invocation amortise each
 *    K/V load over R rows.
 *  - SHARED (GPUs, as FlashAttention-2): the workgroup stages a tile of BC
 *    keys of K and V in shared memory, then every invocation walks the tile
 *    from there.
 * Shapes this cannot unroll (head dims over 256, or no texel format) go to
 * gen_nn.c's chunked kernel. */
#include "backend/device_class.h"
#include "backend/gen_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned long long ull;

static int64_t prod(const int64_t *s, int from, int to) {
    int64_t p = 1;
    for (int d = from; d < to; d++) p *= s[d];
    return p;
}

/* Where the rows of an operand are: row i of (logical) batch index bb
 * starts at element <name>_off(bb) + i * row. */
typedef struct fa_operand {
    int64_t strides[TG_MAX_RANK], row;
} fa_operand;

/* Operands in fa_shape.op */
enum { FA_Q, FA_K, FA_V, FA_OUT, FA_DOUT, FA_OPERANDS };

/* The parts of one attention node the generators need. */
typedef struct fa_shape {
    const tg_node *n, *q, *k, *v;
    bool has_mask;
    bool heads_inner; /* transpose_a: [.., T, H, D] storage (graph/ops.c) */
    int br;           /* logical batch rank */
    int64_t batch[TG_MAX_RANK];
    int64_t Tq, Tk, D, Dv, batches;
    fa_operand op[FA_OPERANDS]; /* FA_DOUT: after fa_describe_dout */
    int W;                      /* elements per texel: 4 (vec4) or 1 */
    int64_t D4, V4;             /* texels per q/k row and per v row */
    const char *vt;             /* "vec4" or "float" */
    int out_o, out_lse;         /* forward: outputs of the result and lse (-1: none) */
} fa_shape;

/* x [..., T, W] read at the position of the logical batch dims (0 strides
 * along broadcast dims), or, with transpose_a, x stored dense as
 * [outer..., T, H, W] for the logical [outer..., H, T, W]. */
static fa_operand fa_operand_of(const fa_shape *s, const tg_node *x) {
    fa_operand o;
    int r = x->rank;
    memset(&o, 0, sizeof o);
    o.row = x->shape[r - 1];
    if (!s->heads_inner) {
        tg_gen_bcast_strides(r - 2, x->shape, s->br, s->batch, o.strides);
        for (int d = 0; d < s->br; d++) o.strides[d] *= x->shape[r - 2] * o.row;
        return o;
    }
    int64_t dense[TG_MAX_RANK], e = 1;
    for (int d = r - 1; d >= 0; d--) {
        dense[d] = e;
        e *= x->shape[d];
    }
    for (int d = 0; d < r - 3; d++) o.strides[d] = dense[d];
    o.strides[r - 3] = dense[r - 2];
    o.row = dense[r - 3];
    return o;
}

static void fa_describe(const tg_graph *gr, const tg_node *n, fa_shape *s) {
    memset(s, 0, sizeof *s);
    s->n = n;
    s->q = &gr->nodes[n->inputs[0]];
    s->k = &gr->nodes[n->inputs[1]];
    s->v = &gr->nodes[n->inputs[2]];
    s->has_mask = n->attrs.has_mask && n->n_inputs > 3;
    s->heads_inner = n->attrs.transpose_a;
    int r = s->q->rank, t = s->heads_inner ? r - 3 : r - 2; /* the stored time axis */
    s->Tq = s->q->shape[t];
    s->D = s->q->shape[r - 1];
    s->Tk = s->k->shape[t - r + s->k->rank];
    s->Dv = s->v->shape[s->v->rank - 1];
    s->br = n->rank - 2;
    memcpy(s->batch, n->shape, sizeof s->batch);
    if (s->heads_inner) s->batch[r - 3] = s->q->shape[r - 2]; /* H; lse's n is logical */
    s->batches = prod(s->batch, 0, s->br);
    s->op[FA_Q] = fa_operand_of(s, s->q);
    s->op[FA_K] = fa_operand_of(s, s->k);
    s->op[FA_V] = fa_operand_of(s, s->v);
    if (n->op != TG_OP_ATTENTION_LSE) s->op[FA_OUT] = fa_operand_of(s, n);
    s->W = (s->D % 4 == 0 && s->Dv % 4 == 0) ? 4 : 1;
    s->D4 = s->D / s->W;
    s->V4 = s->Dv / s->W;
    s->vt = s->W == 4 ? "vec4" : "float";
}

/* Operand i's row stride in texels (in elements when W is 1). */
static ull fa_row4(const fa_shape *s, int i) {
    return (ull)(s->op[i].row / s->W);
}

/* CPU devices: output j stored as vec4s through a view o4_<j> (lavapipe
 * runs every storage-buffer store as a loop over the lanes, whatever its
 * width: a row of 16 floats is 4 loops instead of 16), where it is f32 in
 * f32 storage and its rows and batch strides are whole vec4s (vec4 texel
 * operands). Declares the view; its rows then start at texel
 * <offset> >> 2. */
static bool fa_quad_output(tg_gen *g, const fa_shape *s, const fa_operand *o, int j) {
    const tg_kernel *k = g->k;
    if (g->caps->device_class != TG_VK_CLASS_CPU || s->W != 4 || o->row % 4 ||
        !tg_gen_output_f32(k, j))
        return false;
    for (int d = 0; d < s->br; d++)
        if (o->strides[d] % 4) return false;
    tg_gen_vec4_output(&g->b, k, j);
    return true;
}

/* q_off/k_off/v_off/o_off[/d_off](batch): element offsets of a batch
 * index's rows of q, k, v, the result [and dout]; mask_off(row * Tk + j)
 * for the mask broadcast to [batch..., Tq, Tk]. */
static void fa_offsets(tg_sb *b, const fa_shape *s, bool dout) {
    const char *names[FA_OPERANDS] = {"q_off", "k_off", "v_off", "o_off", "d_off"};
    for (int t = 0; t < (dout ? FA_OPERANDS : FA_DOUT); t++)
        tg_gen_offset_fn(b, names[t], s->br, s->batch, s->op[t].strides, 0);
}

static void fa_mask_offset(tg_sb *b, const tg_graph *gr, const fa_shape *s) {
    const tg_node *n = s->n, *m = &gr->nodes[n->inputs[3]];
    int br = s->br;
    int64_t full[TG_MAX_RANK], st[TG_MAX_RANK];
    for (int d = 0; d < br; d++) full[d] = s->batch[d];
    full[br] = s->Tq;
    full[br + 1] = s->Tk;
    tg_gen_bcast_strides(m->rank, m->shape, br + 2, full, st);
    tg_gen_offset_fn(b, "mask_off", br + 2, full, st, 0);
}

/* Kernel k is exactly nodes of ops a and b (in any order) with the same
 * inputs, attributes and dtype: their ids in *ia, *ib, each an output. */
static bool fa_pair(const tg_kernel *k, tg_op a, tg_op b, int32_t *ia, int32_t *ib) {
    if (k->n_nodes != 2) return false;
    const tg_node *x = &k->g->nodes[k->nodes[0]], *y = &k->g->nodes[k->nodes[1]];
    if (x->op == b) {
        const tg_node *t = x;
        x = y;
        y = t;
    }
    if (x->op != a || y->op != b || x->n_inputs != y->n_inputs || x->dtype != y->dtype ||
        x->attrs.causal != y->attrs.causal || x->attrs.scale != y->attrs.scale ||
        x->attrs.transpose_a != y->attrs.transpose_a || x->attrs.has_mask != y->attrs.has_mask)
        return false;
    for (int i = 0; i < x->n_inputs; i++)
        if (x->inputs[i] != y->inputs[i]) return false;
    *ia = (int32_t)(x - k->g->nodes);
    *ib = (int32_t)(y - k->g->nodes);
    return k->n_outputs == 2 && k->outputs[0] != k->outputs[1] &&
           (k->outputs[0] == *ia || k->outputs[0] == *ib) &&
           (k->outputs[1] == *ia || k->outputs[1] == *ib);
}

/* The index of node id among kernel k's outputs (0 if it is not one). */
static int fa_output(const tg_kernel *k, int32_t id) {
    for (int j = 0; j < k->n_outputs; j++)
        if (k->outputs[j] == id) return j;
    return 0;
}

/* Can the flash kernel take this node on this device? */
static bool fa_supported(const tg_vk_caps *caps, const tg_kernel *k, const fa_shape *s) {
    if (s->D < 1 || s->Dv < 1 || s->D4 > 64 || s->V4 > 64) return false;
    for (int i = 0; i < 3; i++)
        if (!tg_gen_texel_input_ok(caps, k, i, s->W == 4) ||
            k->input_storage[i] != k->input_storage[0])
            return false;
    return true;
}

/* Where a block's K/V texels come from. */
typedef enum fa_src {
    SRC_TEXEL,   /* a texel fetch per use (the same texel in every lane) */
    SRC_SHARED,  /* the tile in shared memory (Ks/Vs) */
    SRC_SHUFFLE, /* lane kb fetched key j0 + kb's texels (kg<d>, vg<d>): a shuffle */
} fa_src;

/* The expression of texel d of key kb of the block, of K (v false) or V. */
static void fa_texel(char *buf, size_t n, const fa_shape *s, fa_src src, bool v, uint32_t kb,
                     int64_t d) {
    int64_t per = v ? s->V4 : s->D4;
    const char *sel = s->W == 4 ? "" : ".r";
    if (src == SRC_TEXEL)
        snprintf(buf, n, "tf%d(int(%s + kr%u * %lluu + %lldu))%s", v ? 2 : 1, v ? "vo" : "ko", kb,
                 fa_row4(s, v ? FA_V : FA_K), (long long)d, sel);
    else if (src == SRC_SHUFFLE)
        snprintf(buf, n, "subgroupShuffle(%cg%lld, %uu)", v ? 'v' : 'k', (long long)d, kb);
    else
        snprintf(buf, n, "%cs[(jj + %uu) * %lluu + %lldu]", v ? 'V' : 'K', kb, (ull)per,
                 (long long)d);
}

/* Prints the sum of terms 0 .. n-1 as a balanced tree, term i printed by
 * term(b, i, ctx): a short dependency chain, and a block's contributions
 * to an accumulator added to it at once (below). */
static void fa_tree_sum(tg_sb *b, uint32_t lo, uint32_t n,
                        void (*term)(tg_sb *b, uint32_t i, const void *ctx), const void *ctx) {
    if (n == 1) {
        term(b, lo, ctx);
        return;
    }
    tg_sb_printf(b, "(");
    fa_tree_sum(b, lo, n / 2, term, ctx);
    tg_sb_printf(b, " + ");
    fa_tree_sum(b, lo + n / 2, n - n / 2, term, ctx);
    tg_sb_printf(b, ")");
}

typedef struct fa_term_ctx {
    const fa_shape *s;
    uint32_t r; /* the row */
} fa_term_ctx;

/* row r's score against texel d of the key in kv<d> */
static void fa_score_term(tg_sb *b, uint32_t d, const void *ctx) {
    const fa_term_ctx *c = ctx;
    tg_sb_printf(b, c->s->W == 4 ? "dot(q%u_%u, kv%u)" : "q%u_%u * kv%u", c->r, d, d);
}

/* key kb's share of row r's accumulator texel d: its weight times vv<kb> */
static void fa_value_term(tg_sb *b, uint32_t kb, const void *ctx) {
    const fa_term_ctx *c = ctx;
    tg_sb_printf(b, "p%u_%u * vv%u", c->r, kb, kb);
}

/* coef<r>_<j> times texel d of lane j's operand row (<opnd>l<d>, shuffled) */
typedef struct fb_sum_ctx {
    const char *coef, *opnd;
    uint32_t r;
    int64_t d;
} fb_sum_ctx;

static void fb_shuffle_term(tg_sb *b, uint32_t j, const void *ctx) {
    const fb_sum_ctx *c = ctx;
    tg_sb_printf(b, "%s%u_%u * subgroupShuffle(%sl%d, %uu)", c->coef, c->r, j, c->opnd, (int)c->d,
                 j);
}

/* After a shuffled group of S rows (or keys) of the backward: for each of
 * the R rows, <acc><r>_<d> += the group's coef<r>_<j> times row j's texel
 * d, one tree sum per texel (fa_block says why; charlm's grad_k+v timed
 * alone single-threaded: 2518-3381 -> 2247-3042 us, grad_q 1764-2168 ->
 * 1638-1916 us). */
static void fb_shuffle_sums(tg_sb *b, uint32_t R, uint32_t S, int64_t n4, const char *acc,
                            const char *coef, const char *opnd) {
    for (uint32_t r = 0; r < R; r++)
        for (int64_t d = 0; d < n4; d++) {
            fb_sum_ctx c = {coef, opnd, r, d};
            tg_sb_printf(b, "        %s%u_%d += ", acc, r, (int)d);
            fa_tree_sum(b, 0, S, fb_shuffle_term, &c);
            tg_sb_printf(b, ";\n");
        }
}

/* Declares float <coef><r>_<j> for the R rows and S members of a group. */
static void fb_group_coefs(tg_sb *b, uint32_t R, uint32_t S, const char *coef) {
    for (uint32_t r = 0; r < R; r++)
        for (uint32_t j = 0; j < S; j++) tg_sb_printf(b, "        float %s%u_%u;\n", coef, r, j);
}

/* The body of one block of B keys starting at key j0 (a uint in scope):
 * scores, the online-softmax step, the accumulation. Sums are trees and
 * each accumulator texel takes the whole block's terms at once: on CPU
 * devices, where a row's accumulators live in memory, key by key the
 * block loaded and stored each once per key (charlm, d 16, T 64, the
 * forward timed alone single-threaded: 964-971 -> 900-922 us). */
static void fa_block(tg_sb *b, const fa_shape *s, const tg_attn_tiling *t, fa_src src) {
    char tx[160];
    uint32_t R = t->rows, B = t->keys;
    for (uint32_t kb = 0; kb < B; kb++) {
        for (uint32_t r = 0; r < R; r++) tg_sb_printf(b, "        float s%u_%u;\n", r, kb);
        tg_sb_printf(b, "        {\n");
        for (int64_t d = 0; d < s->D4; d++) {
            fa_texel(tx, sizeof tx, s, src, false, kb, d);
            tg_sb_printf(b, "            %s kv%d = %s;\n", s->vt, (int)d, tx);
        }
        for (uint32_t r = 0; r < R; r++) {
            fa_term_ctx c = {s, r};
            tg_sb_printf(b, "            s%u_%u = ", r, kb);
            fa_tree_sum(b, 0, (uint32_t)s->D4, fa_score_term, &c);
            tg_sb_printf(b, ";\n");
        }
        tg_sb_printf(b, "        }\n");
    }
    /* visibility (causal limit, the K tail) and the mask */
    for (uint32_t r = 0; r < R; r++)
        for (uint32_t kb = 0; kb < B; kb++) {
            if (s->has_mask)
                tg_sb_printf(
                    b,
                    "        s%u_%u = int(j0 + %uu) < lim%u ? s%u_%u + ld3(mask_off(mrow%u "
                    "+ j0 + %uu)) : NEG_INF;\n",
                    r, kb, kb, r, r, kb, r, kb);
            else
                tg_sb_printf(b, "        s%u_%u = int(j0 + %uu) < lim%u ? s%u_%u : NEG_INF;\n", r,
                             kb, kb, r, r, kb);
        }
    for (uint32_t r = 0; r < R; r++) {
        tg_sb_printf(b, "        {\n            float mx = m%u;\n", r);
        for (uint32_t kb = 0; kb < B; kb++)
            tg_sb_printf(b, "            mx = max(mx, s%u_%u);\n", r, kb);
        tg_sb_printf(b,
                     "            bool none = mx == NEG_INF;\n"
                     "            float c = none ? 1.0 : exp(m%u - mx);\n"
                     "            m%u = mx;\n",
                     r, r);
        for (uint32_t kb = 0; kb < B; kb++)
            tg_sb_printf(b, "            p%u_%u = none ? 0.0 : exp(s%u_%u - mx);\n", r, kb, r, kb);
        tg_sb_printf(b, "            l%u = l%u * c", r, r);
        for (uint32_t kb = 0; kb < B; kb++) tg_sb_printf(b, " + p%u_%u", r, kb);
        tg_sb_printf(b, ";\n");
        for (int64_t d = 0; d < s->V4; d++)
            tg_sb_printf(b, "            a%u_%d *= c;\n", r, (int)d);
        tg_sb_printf(b, "        }\n");
    }
    for (int64_t d = 0; d < s->V4; d++) {
        tg_sb_printf(b, "        {\n");
        for (uint32_t kb = 0; kb < B; kb++) {
            fa_texel(tx, sizeof tx, s, src, true, kb, d);
            tg_sb_printf(b, "            %s vv%u = %s;\n", s->vt, kb, tx);
        }
        for (uint32_t r = 0; r < R; r++) {
            fa_term_ctx c = {s, r};
            tg_sb_printf(b, "            a%u_%d += ", r, (int)d);
            fa_tree_sum(b, 0, B, fa_value_term, &c);
            tg_sb_printf(b, ";\n");
        }
        tg_sb_printf(b, "        }\n");
    }
}

/* CPUs, small heads (q or k and v of 8 texels or fewer together): the
 * lanes of a subgroup each fetch the texels of one key (or row) that every
 * lane needs and shuffles hand them round, where a texel every lane reads
 * costs a gather each on lavapipe (charlm, d 16, T 64, single-threaded:
 * grad_k+v 2.18 -> 1.27 ms, grad_q 2.04 -> 0.98; the forward 10-15% less).
 * At d 64 the unrolled group of keys costs more than it saves (T 1500,
 * forward + backward: 346 ms with, 277 without). $TG_ATTN_SHUFFLE=0 / 1
 * overrides (comparisons, tests). The subgroup size, or 0: no shuffles. */
static uint32_t fa_shuffle_lanes(const tg_vk_caps *caps, bool texel, int64_t d4, int64_t v4,
                                 uint32_t wg) {
    const char *env = getenv("TG_ATTN_SHUFFLE");
    bool small = d4 + v4 <= 8;
    if (env && strcmp(env, "0") == 0) small = false;
    if (env && strcmp(env, "1") == 0) small = true;
    bool ok = caps->device_class == TG_VK_CLASS_CPU && small && texel &&
              caps->subgroup_in_compute && (caps->subgroup_ops & VK_SUBGROUP_FEATURE_SHUFFLE_BIT) &&
              caps->subgroup_size >= 2 && caps->subgroup_size <= 64 &&
              wg % caps->subgroup_size == 0;
    return ok ? caps->subgroup_size : 0;
}

/* The subgroup extensions, right after #version. */
static tg_status fa_require_shuffle(tg_gen *g) {
    const char *ext = "#extension GL_KHR_shader_subgroup_basic : require\n"
                      "#extension GL_KHR_shader_subgroup_shuffle : require\n";
    char *nl = g->b.s ? strchr(g->b.s, '\n') : NULL;
    size_t at = nl ? (size_t)(nl - g->b.s) + 1 : 0, el = strlen(ext);
    tg_sb_printf(&g->b, "%s", ext); /* grows the buffer by el */
    if (g->b.oom || !nl) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    memmove(g->b.s + at + el, g->b.s + at, g->b.len - el - at);
    memcpy(g->b.s + at, ext, el);
    return TG_OK;
}

static tg_status gen_flash(tg_gen *g, const fa_shape *s, const tg_attn_tiling *t,
                           uint32_t shuffle) {
    tg_sb *b = &g->b;
    const tg_node *n = s->n;
    uint32_t R = t->rows, B = t->keys, WG = g->wg;
    uint64_t RB = (uint64_t)R * WG; /* rows per workgroup */
    uint64_t nblk = ((uint64_t)s->Tq + RB - 1) / RB;
    bool shared = t->strategy == TG_MM_STRATEGY_SHARED;
    uint32_t BC = t->tile;
    int W = s->W;
    const char *sh = W == 4 ? " >> 2" : "";
    char scale[64];
    tg_gen_flit(n->attrs.scale > 0 ? n->attrs.scale : 1.0 / sqrt((double)s->D), scale,
                sizeof scale);

    fa_offsets(b, s, false);
    if (s->has_mask) fa_mask_offset(b, g->k->g, s);
    bool quads = fa_quad_output(g, s, &s->op[FA_OUT], s->out_o);
    if (shared)
        tg_sb_printf(b, "shared %s Ks[%u];\nshared %s Vs[%u];\n", s->vt, (unsigned)(BC * s->D4),
                     s->vt, (unsigned)(BC * s->V4));
    tg_sb_printf(b,
                 "#define NEG_INF uintBitsToFloat(0xff800000u)\n"
                 "void main() {\n"
                 "    uint grp = tg_group();\n"
                 "    if (grp >= %lluu) return;\n" /* uniform over the workgroup */
                 "    uint lane = gl_LocalInvocationID.x;\n"
                 "    uint bb = grp / %lluu, i0 = (grp %% %lluu) * %lluu;\n"
                 "    uint qo = q_off(bb)%s, ko = k_off(bb)%s, vo = v_off(bb)%s;\n",
                 (ull)(s->batches * nblk), (ull)nblk, (ull)nblk, (ull)RB, sh, sh, sh);
    /* per row: its index, the clamped row it loads, its key limit */
    for (uint32_t r = 0; r < R; r++) {
        tg_sb_printf(b,
                     "    uint row%u = i0 + %uu + lane;\n"
                     "    uint rc%u = min(row%u, %lluu);\n",
                     r, r * WG, r, r, (ull)(s->Tq - 1));
        if (n->attrs.causal)
            tg_sb_printf(b,
                         "    int lim%u = row%u < %lluu ? clamp(int(row%u) + %lld, 0, %lld) : 0;\n",
                         r, r, (ull)s->Tq, r, (long long)(s->Tk - s->Tq + 1), (long long)s->Tk);
        else
            tg_sb_printf(b, "    int lim%u = row%u < %lluu ? %lld : 0;\n", r, r, (ull)s->Tq,
                         (long long)s->Tk);
        if (s->has_mask)
            tg_sb_printf(b, "    uint mrow%u = (bb * %lluu + rc%u) * %lluu;\n", r, (ull)s->Tq, r,
                         (ull)s->Tk);
        tg_sb_printf(b, "    float m%u = NEG_INF, l%u = 0.0;\n", r, r);
        for (uint32_t kb = 0; kb < B; kb++) tg_sb_printf(b, "    float p%u_%u;\n", r, kb);
        for (int64_t d = 0; d < s->D4; d++)
            tg_sb_printf(b, "    %s q%u_%d = tf0(int(qo + rc%u * %lluu + %du))%s * %s;\n", s->vt, r,
                         (int)d, r, fa_row4(s, FA_Q), (int)d, W == 4 ? "" : ".r", scale);
        for (int64_t d = 0; d < s->V4; d++)
            tg_sb_printf(b, "    %s a%u_%d = %s(0.0);\n", s->vt, r, (int)d, s->vt);
    }
    /* the workgroup's key bound: the visible keys of its last row */
    if (n->attrs.causal)
        tg_sb_printf(
            b, "    uint nkw = uint(clamp(int(min(i0 + %lluu, %lluu)) + %lld, 0, %lld));\n",
            (ull)(RB - 1), (ull)(s->Tq - 1), (long long)(s->Tk - s->Tq + 1), (long long)s->Tk);
    else
        tg_sb_printf(b, "    uint nkw = %lluu;\n", (ull)s->Tk);

    const char *sel = W == 4 ? "" : ".r";
    fa_src src = shared ? SRC_SHARED : shuffle ? SRC_SHUFFLE : SRC_TEXEL;
    if (shared) {
        /* tiles of BC keys in shared memory; keys past Tk load key Tk-1 */
        tg_sb_printf(b,
                     "    for (uint t0 = 0u; t0 < nkw; t0 += %uu) {\n"
                     "        barrier();\n" /* the previous tile is still read */
                     "        for (uint e = lane; e < %uu; e += %uu)\n"
                     "            Ks[e] = tf1(int(ko + min(t0 + e / %lluu, %lluu) * "
                     "%lluu + e %% %lluu))%s;\n"
                     "        for (uint e = lane; e < %uu; e += %uu)\n"
                     "            Vs[e] = tf2(int(vo + min(t0 + e / %lluu, %lluu) * "
                     "%lluu + e %% %lluu))%s;\n"
                     "        barrier();\n"
                     "        for (uint jj = 0u; jj < %uu && t0 + jj < nkw; jj += %uu) {\n"
                     "        uint j0 = t0 + jj;\n",
                     BC, (unsigned)(BC * s->D4), WG, (ull)s->D4, (ull)(s->Tk - 1), fa_row4(s, FA_K),
                     (ull)s->D4, sel, (unsigned)(BC * s->V4), WG, (ull)s->V4, (ull)(s->Tk - 1),
                     fa_row4(s, FA_V), (ull)s->V4, sel, BC, B);
    } else {
        tg_sb_printf(b, "    for (uint j0 = 0u; j0 < nkw; j0 += %uu) {\n", B);
        for (uint32_t kb = 0; src == SRC_TEXEL && kb < B; kb++)
            tg_sb_printf(b, "        uint kr%u = min(j0 + %uu, %lluu);\n", kb, kb,
                         (ull)(s->Tk - 1));
        if (src == SRC_SHUFFLE) {
            /* lane l fetches key j0 + l; key kb's texels are shuffled from lane kb */
            tg_sb_printf(b, "        uint krl = min(j0 + gl_SubgroupInvocationID, %lluu);\n",
                         (ull)(s->Tk - 1));
            for (int64_t d = 0; d < s->D4; d++)
                tg_sb_printf(b, "        vec4 kg%d = tf1(int(ko + krl * %lluu + %du));\n", (int)d,
                             fa_row4(s, FA_K), (int)d);
            for (int64_t d = 0; d < s->V4; d++)
                tg_sb_printf(b, "        vec4 vg%d = tf2(int(vo + krl * %lluu + %du));\n", (int)d,
                             fa_row4(s, FA_V), (int)d);
        }
    }
    fa_block(b, s, t, src);
    tg_sb_printf(b, shared ? "        }\n    }\n" : "    }\n");

    /* outputs: acc / l, zeros for rows that saw nothing */
    for (uint32_t r = 0; r < R; r++) {
        tg_sb_printf(b,
                     "    if (row%u < %lluu) {\n"
                     "        float inv = l%u > 0.0 ? 1.0 / l%u : 0.0;\n"
                     "        uint o = o_off(bb) + row%u * %lluu;\n",
                     r, (ull)s->Tq, r, r, r, (ull)s->op[FA_OUT].row);
        for (int64_t d = 0; quads && d < s->V4; d++)
            tg_sb_printf(b, "        o4_%d[(o >> 2) + %du] = a%u_%d * inv;\n", s->out_o, (int)d, r,
                         (int)d);
        for (int64_t d = 0; !quads && d < s->V4; d++)
            for (int c = 0; c < W; c++)
                tg_sb_printf(b, "        st%d(o + %du, a%u_%d%s * inv);\n", s->out_o,
                             (int)(d * W + c), r, (int)d,
                             W == 4 ? (const char *[]){"[0]", "[1]", "[2]", "[3]"}[c] : "");
        if (s->out_lse >= 0) /* the backward's log-sum-exp, [batch..., Tq, 1] */
            tg_sb_printf(
                b, "        st%d(bb * %lluu + row%u, l%u > 0.0 ? m%u + log(l%u) : NEG_INF);\n",
                s->out_lse, (ull)s->Tq, r, r, r, r);
        tg_sb_printf(b, "    }\n");
    }
    tg_sb_printf(b, "}\n");
    return tg_gen_finish(g, s->batches * nblk);
}

tg_status tg_gen_attention(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out) {
    const tg_graph *gr = k->g;
    int32_t id = k->nodes[k->n_nodes - 1], il = -1;
    bool pair = fa_pair(k, TG_OP_ATTENTION, TG_OP_ATTENTION_LSE, &id, &il);
    const tg_node *n = &gr->nodes[id];
    bool alone = n->op == TG_OP_ATTENTION && k->n_nodes == 1 && k->n_outputs == 1;
    bool same_inputs = k->n_inputs == n->n_inputs;
    for (int i = 0; same_inputs && i < n->n_inputs; i++) same_inputs = k->inputs[i] == n->inputs[i];
    if (!(pair || alone) || !same_inputs) {
        if (pair || n->attrs.transpose_a)
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "attention %d: the kernel must read q, k, v[, mask] in order",
                                (int)id);
        return tg_gen_nn(caps, k, out);
    }
    fa_shape s;
    fa_describe(gr, n, &s);
    s.out_o = pair ? fa_output(k, id) : 0;
    s.out_lse = pair ? fa_output(k, il) : -1;
    /* $TG_ATTN_STRATEGY=nn: gen_nn.c's kernel (for comparisons) */
    const char *env = getenv("TG_ATTN_STRATEGY");
    bool nn = !fa_supported(caps, k, &s) || (env && strcmp(env, "nn") == 0);
    if (nn && (s.heads_inner || pair)) /* gen_nn.c: the logical layout, one output */
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "attention %d: transpose_a (heads inside time) needs the flash "
                            "kernel: head dims up to 256 and texel buffers of the dtype",
                            (int)id);
    if (nn) return tg_gen_nn(caps, k, out);
    tg_attn_tiling t;
    tg_status st =
        tg_attn_choose_tiling(caps, TG_MM_STRATEGY_AUTO, s.Tq, s.D4, s.V4, (uint32_t)(s.W * 4), &t);
    if (st != TG_OK) return st;
    /* small heads on CPUs: K/V texels fetched by one lane and shuffled
     * (the subgroup size, or 0); the rows below do not change t.wg */
    uint32_t lanes = t.strategy == TG_MM_STRATEGY_REGISTER && s.W == 4
                         ? fa_shuffle_lanes(caps, true, s.D4, s.V4, t.wg)
                         : 0;
    /* causal, one block of rows for all Tq: half the rows a workgroup, so
     * that the first block stops at the keys its rows see (charlm, T 64,
     * d 16, single-threaded: 8 rows an invocation 1.07-1.11 ms for the
     * pair of layers' kernels, 4 rows 0.97-1.01) */
    if (t.strategy == TG_MM_STRATEGY_REGISTER && n->attrs.causal && !getenv("TG_ATTN_TILE")) {
        /* small heads (shuffled K/V, cheap to fetch again): also while
         * a block of RB rows computes over 1/8 more row-key pairs than
         * the causal ones, (RB - 1) / (Tq + 1) (charlm, 4 rows -> 1, timed
         * alone: 2.18-2.20 -> 1.96-1.97 ms single-threaded, 1.18-1.40 ->
         * 1.02-1.19 on two threads) */
        while (t.rows > 1 && (((int64_t)t.rows * t.wg * 2 > s.Tq && (int64_t)t.wg * 2 <= s.Tq) ||
                              (lanes && ((int64_t)t.rows * t.wg - 1) * 8 > s.Tq + 1)))
            t.rows /= 2;
    }
    /* shuffled K/V fetches need a whole block of keys in one subgroup */
    uint32_t shuffle = lanes && t.keys <= lanes ? lanes : 0;
    tg_gen g;
    st = tg_gen_begin_texel(&g, caps, k, out, t.wg, false, 7u, s.W == 4);
    if (st == TG_OK && shuffle) st = fa_require_shuffle(&g);
    if (st == TG_OK) st = gen_flash(&g, &s, &t, shuffle);
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }
    /* the strategy shows in profiles (and lets tests check which ran) */
    snprintf(out->name, sizeof out->name, "attention_%d_%s", (int)id,
             t.strategy == TG_MM_STRATEGY_SHARED ? "shared" : "register");
    return TG_OK;
}

/* ---- the backward, FlashAttention-2 style ----
 *
 * attention_lse (q, k, v, [mask]) -> [batch..., Tq, 1]: per query row the
 * log-sum-exp of its visible scores (online: running max m and sum l).
 * attention_grad_q/k/v (q, k, v, [mask], dout, lse, delta): with
 * p_ij = exp(s_ij - lse_i) recomputed (0 where s_ij = -inf) and
 * dS_ij = p_ij (dout_i . v_j - delta_i):
 *   dq_i = scale sum_j dS_ij k_j    one invocation per query row;
 *   dk_j = scale sum_i dS_ij q_i    one invocation per key row,
 *   dv_j = sum_i p_ij dout_i        over the query rows that see key j.
 * Nothing of size [Tq, Tk] exists; no shared memory or barriers. The row
 * is held in registers (vec4 when both head dims are multiples of 4), the
 * loop over the other side's rows is one key (or query) an iteration with
 * the head dims unrolled, and its bound is uniform over the workgroup
 * (per-lane causal limits mask scores to -inf), so every lane reads the
 * same K/V (or Q/dout) texel. Operands come from texel buffers when the
 * device has the format (scalar ld<i> loads otherwise). lavapipe ends an
 * invocation's loops after 65535 iterations: the loop over Tk (or Tq)
 * rows must stay under it on CPU devices, else a clear error. */

#define CPU_LOOP_LIMIT 60000
#define FB_ROWS_CPU 4

/* Rows per invocation of the backward on CPUs, for `rows` rows of head
 * dim d in workgroups of wg: more rows share each fetched texel of the
 * other side (d 64, T 1500, forward + backward: 4 rows 360 ms, 2 rows
 * 410, 1 row 540; per row about 1 + 0.87/R), but the last block's rows
 * past the end cost as much, and small heads lose (charlm, d 16, T 64:
 * grad_k+v 3.1 ms at 4 rows, half of them past the end, 2.7 at 2, 2.2
 * at 1). The fewest padded rows weighted by that cost, up to 4 rows for
 * d >= 64, 2 for d >= 32, else 1. */
static uint32_t fb_rows_cpu(int64_t rows, int64_t d, uint32_t wg) {
    uint32_t most = d >= 64 ? FB_ROWS_CPU : d >= 32 ? 2 : 1, best = 1;
    double best_cost = 0;
    for (uint32_t r = 1; r <= most; r *= 2) {
        int64_t block = (int64_t)wg * r, padded = (rows + block - 1) / block * block;
        double cost = (double)padded * (1.0 + 0.87 / r);
        if (r == 1 || cost < best_cost) {
            best = r;
            best_cost = cost;
        }
    }
    return best;
}

typedef struct fb_io {
    fa_shape s;
    int nops;        /* q, k, v, [mask] */
    int dout;        /* input index of dout (lse, delta follow) */
    bool texel;      /* q, k, v, dout through texel buffers */
    const char *sel; /* ".r" for scalar texels */
    uint32_t R;      /* rows per invocation */
    /* 0, or the subgroup size S: the loop takes S keys (query rows) at a
     * time, each lane fetching one's texels, shuffles sharing them (CPUs:
     * a texel fetch is a call per lane, the same texel in every lane) */
    uint32_t shuffle;
    /* attention_grad_k and _v: which the kernel computes, into which of
     * its outputs (both: one loop over the query rows for the two) */
    bool want_k, want_v;
    int out_k, out_v;
    fa_operand dv; /* the dv result's rows when both */
} fb_io;

/* The expression reading texel (or element, W = 1) `idx` of input i. */
static const char *fb_fetch(char *buf, size_t n, const fb_io *io, int i, const char *idx) {
    if (io->texel)
        snprintf(buf, n, "tf%d(int(%s))%s", i, idx, io->sel);
    else
        snprintf(buf, n, "ld%d(%s)", i, idx);
    return buf;
}

static const char *fb_comp(const fb_io *io, int c) {
    static const char *const cs[4] = {"[0]", "[1]", "[2]", "[3]"};
    return io->s.W == 4 ? cs[c] : "";
}

/* Emits `tname name_d = fetch(input, base + d)` for every texel d of a row. */
static void fb_load_row(tg_sb *b, const fb_io *io, int input, const char *name, const char *base,
                        int64_t texels, const char *times) {
    char idx[96], f[192];
    for (int64_t d = 0; d < texels; d++) {
        snprintf(idx, sizeof idx, "%s + %lldu", base, (long long)d);
        tg_sb_printf(b, "    %s %s%d = %s%s;\n", io->s.vt, name, (int)d,
                     fb_fetch(f, sizeof f, io, input, idx), times);
    }
}

/* The head of main: group, batch index bb, the workgroup's first row r0,
 * per row r of the invocation its index row<r> (rows r0 + r * WG + lane)
 * and the clamped rc<r>, texel offsets qo/ko/vo. */
static void fb_head(tg_gen *g, const fb_io *io, int64_t rows, uint64_t nblk) {
    const fa_shape *s = &io->s;
    const char *sh = s->W == 4 ? " >> 2" : "";
    tg_sb_printf(&g->b,
                 "#define NEG_INF uintBitsToFloat(0xff800000u)\n"
                 "void main() {\n"
                 "    uint grp = tg_group();\n"
                 "    if (grp >= %lluu) return;\n"
                 "    uint bb = grp / %lluu, r0 = (grp %% %lluu) * %lluu;\n"
                 "    uint lane = gl_LocalInvocationID.x;\n"
                 "    uint qo = q_off(bb)%s, ko = k_off(bb)%s, vo = v_off(bb)%s;\n",
                 (ull)(s->batches * nblk), (ull)nblk, (ull)nblk, (ull)io->R * g->wg, sh, sh, sh);
    if (s->n->op != TG_OP_ATTENTION_LSE) tg_sb_printf(&g->b, "    uint dro = d_off(bb)%s;\n", sh);
    for (uint32_t r = 0; r < io->R; r++)
        tg_sb_printf(&g->b, "    uint row%u = r0 + %uu + lane, rc%u = min(row%u, %lluu);\n", r,
                     r * g->wg, r, r, (ull)(rows - 1));
}

/* Emits `vt <name><d> = ` texel d of row `row` (index expression) of
 * input `input`, whose rows are row4 texels apart from `base`: fetched,
 * or with jj >= 0 shuffled from lane jj's <name>l<d> (io->shuffle). No
 * newline: callers append their uses. */
static void fb_operand(tg_sb *b, const fb_io *io, const char *name, int64_t d, int input,
                       const char *base, const char *row, ull row4, int jj) {
    char f[192], idx[96];
    if (jj >= 0) {
        tg_sb_printf(b, "        %s %s%d = subgroupShuffle(%sl%d, %du);", io->s.vt, name, (int)d,
                     name, (int)d, jj);
        return;
    }
    snprintf(idx, sizeof idx, "%s + %s * %lluu + %lldu", base, row, row4, (long long)d);
    tg_sb_printf(b, "        %s %s%d = %s;", io->s.vt, name, (int)d,
                 fb_fetch(f, sizeof f, io, input, idx));
}

/* One key j of gen_flash_rows_q's loop: the scores of the R rows, their
 * online softmax (lse) or p, dp, ds and the dq sums. The key's texels are
 * fetched, or with jj >= 0 shuffled from lane jj (io->shuffle). */
static void rows_q_key(tg_sb *b, const fb_io *io, bool lse, int jj) {
    const fa_shape *s = &io->s;
    uint32_t R = io->R;
    for (uint32_t r = 0; r < R; r++) tg_sb_printf(b, "        float sc%u = 0.0;\n", r);
    for (int64_t d = 0; d < s->D4; d++) {
        fb_operand(b, io, "k", d, 1, "ko", "j", fa_row4(s, FA_K), jj);
        for (uint32_t r = 0; r < R; r++)
            tg_sb_printf(b, " sc%u += dot(q%u_%d, k%d);", r, r, (int)d, (int)d);
        tg_sb_printf(b, "\n");
    }
    /* a shuffled group's last keys may pass Tk: masked by lim, and the
     * mask is read at a clamped key */
    char mj[32] = "j";
    if (jj >= 0) snprintf(mj, sizeof mj, "min(j, %lluu)", (ull)(s->Tk - 1));
    for (uint32_t r = 0; r < R; r++) {
        if (s->has_mask)
            tg_sb_printf(
                b,
                "        sc%u = int(j) < lim%u ? sc%u + ld3(mask_off(orow%u * %lluu + %s)) "
                ": NEG_INF;\n",
                r, r, r, r, (ull)s->Tk, mj);
        else
            tg_sb_printf(b, "        sc%u = int(j) < lim%u ? sc%u : NEG_INF;\n", r, r, r);
        if (lse)
            tg_sb_printf(b,
                         "        if (sc%u > NEG_INF) {\n"
                         "            float mx = max(m%u, sc%u);\n"
                         "            l%u = l%u * exp(m%u - mx) + exp(sc%u - mx);\n"
                         "            m%u = mx;\n"
                         "        }\n",
                         r, r, r, r, r, r, r, r);
        else
            tg_sb_printf(
                b, "        float p%u = sc%u == NEG_INF ? 0.0 : exp(sc%u - lse%u), dp%u = 0.0;\n",
                r, r, r, r, r);
    }
    if (lse) return;
    for (int64_t d = 0; d < s->V4; d++) {
        fb_operand(b, io, "v", d, 2, "vo", "j", fa_row4(s, FA_V), jj);
        for (uint32_t r = 0; r < R; r++)
            tg_sb_printf(b, " dp%u += dot(o%u_%d, v%d);", r, r, (int)d, (int)d);
        tg_sb_printf(b, "\n");
    }
    for (uint32_t r = 0; r < R; r++) {
        tg_sb_printf(b, "        float ds%u = p%u * (dp%u - dl%u);\n", r, r, r, r);
        if (jj >= 0) /* added for the whole group after it (fb_shuffle_sums) */
            tg_sb_printf(b, "        dd%u_%d = ds%u;\n", r, jj, r);
        for (int64_t d = 0; jj < 0 && d < s->D4; d++)
            tg_sb_printf(b, "        a%u_%d += ds%u * k%d;\n", r, (int)d, r, (int)d);
    }
}

/* attention_lse and attention_grad_q: R query rows per invocation, every
 * K/V texel fetched once for the R rows. */
/* `name` = the min (or max) of uint `expr` over the subgroup, by S
 * shuffles (io->shuffle: the subgroup size, lanes in any order). A causal
 * backward bounds its loop by its own subgroup's rows, not the
 * workgroup's: every subgroup runs its own trip count, and lavapipe runs
 * a workgroup's subgroups one after another, so the first subgroups stop
 * early (charlm, T 64 in workgroups of 32 rows: 3072 -> 2304 row-key
 * pairs a head). */
static void fb_subgroup_bound(tg_sb *b, uint32_t S, const char *name, const char *expr, bool max) {
    tg_sb_printf(b, "    uint %s = %s;\n", name, expr);
    for (uint32_t l = 0; l < S; l++)
        tg_sb_printf(b, "    %s = %s(%s, subgroupShuffle(%s, %uu));\n", name, max ? "max" : "min",
                     name, expr, l);
}

static tg_status gen_flash_rows_q(tg_gen *g, const fb_io *io) {
    const fa_shape *s = &io->s;
    const tg_node *n = s->n;
    bool lse = n->op == TG_OP_ATTENTION_LSE;
    uint32_t R = io->R;
    uint64_t RB = (uint64_t)R * g->wg, nblk = ((uint64_t)s->Tq + RB - 1) / RB;
    char scale[64], f[192], idx[96], base[64], times[80];
    tg_gen_flit(n->attrs.scale > 0 ? n->attrs.scale : 1.0 / sqrt((double)s->D), scale,
                sizeof scale);
    snprintf(times, sizeof times, " * %s", scale);
    tg_sb *b = &g->b;
    fa_offsets(b, s, !lse);
    if (s->has_mask) fa_mask_offset(b, g->k->g, s);
    bool quads = !lse && fa_quad_output(g, s, &s->op[FA_OUT], 0);
    fb_head(g, io, s->Tq, nblk);
    if (n->attrs.causal && io->shuffle) { /* the visible keys of the subgroup's last row */
        char last[48];
        snprintf(last, sizeof last, "r0 + %uu + lane", (R - 1) * g->wg);
        fb_subgroup_bound(b, io->shuffle, "lastrow", last, true);
        tg_sb_printf(b, "    uint nkw = uint(clamp(int(min(lastrow, %lluu)) + %lld, 0, %lld));\n",
                     (ull)(s->Tq - 1), (long long)(s->Tk - s->Tq + 1), (long long)s->Tk);
    } else if (n->attrs.causal) /* the visible keys of the workgroup's last row */
        tg_sb_printf(
            b, "    uint nkw = uint(clamp(int(min(r0 + %lluu, %lluu)) + %lld, 0, %lld));\n",
            (ull)(RB - 1), (ull)(s->Tq - 1), (long long)(s->Tk - s->Tq + 1), (long long)s->Tk);
    else
        tg_sb_printf(b, "    const uint nkw = %lluu;\n", (ull)s->Tk);
    for (uint32_t r = 0; r < R; r++) {
        char qn[16];
        snprintf(qn, sizeof qn, "q%u_", r);
        snprintf(base, sizeof base, "qo + rc%u * %lluu", r, fa_row4(s, FA_Q));
        fb_load_row(b, io, 0, qn, base, s->D4, times);
        if (n->attrs.causal)
            tg_sb_printf(b, "    int lim%u = clamp(int(rc%u) + %lld, 0, %lld);\n", r, r,
                         (long long)(s->Tk - s->Tq + 1), (long long)s->Tk);
        else
            tg_sb_printf(b, "    const int lim%u = %lld;\n", r, (long long)s->Tk);
        tg_sb_printf(b, "    uint orow%u = bb * %lluu + rc%u;\n", r, (ull)s->Tq, r);
        if (lse) {
            tg_sb_printf(b, "    float m%u = NEG_INF, l%u = 0.0;\n", r, r);
            continue;
        }
        snprintf(qn, sizeof qn, "o%u_", r);
        snprintf(base, sizeof base, "dro + rc%u * %lluu", r, fa_row4(s, FA_DOUT));
        fb_load_row(b, io, io->dout, qn, base, s->V4, "");
        tg_sb_printf(b, "    float lse%u = ld%d(orow%u), dl%u = ld%d(orow%u);\n", r, io->dout + 1,
                     r, r, io->dout + 2, r);
        for (int64_t d = 0; d < s->D4; d++)
            tg_sb_printf(b, "    %s a%u_%d = %s(0.0);\n", s->vt, r, (int)d, s->vt);
    }
    if (io->shuffle) {
        /* lane l of each subgroup fetches key jb + l's texels; the keys
         * of the group are then handed round by shuffles */
        uint32_t S = io->shuffle;
        tg_sb_printf(b,
                     "    for (uint jb = 0u; jb < nkw; jb += %uu) {\n"
                     "        uint jl = min(jb + gl_SubgroupInvocationID, %lluu);\n",
                     S, (ull)(s->Tk - 1));
        for (int64_t d = 0; d < s->D4; d++) {
            snprintf(idx, sizeof idx, "ko + jl * %lluu + %lldu", fa_row4(s, FA_K), (long long)d);
            tg_sb_printf(b, "        %s kl%d = %s;\n", s->vt, (int)d,
                         fb_fetch(f, sizeof f, io, 1, idx));
        }
        for (int64_t d = 0; !lse && d < s->V4; d++) {
            snprintf(idx, sizeof idx, "vo + jl * %lluu + %lldu", fa_row4(s, FA_V), (long long)d);
            tg_sb_printf(b, "        %s vl%d = %s;\n", s->vt, (int)d,
                         fb_fetch(f, sizeof f, io, 2, idx));
        }
        if (!lse) fb_group_coefs(b, R, S, "dd");
        for (uint32_t jj = 0; jj < S; jj++) {
            tg_sb_printf(b, "        {\n        uint j = jb + %uu;\n", jj);
            rows_q_key(b, io, lse, (int)jj);
            tg_sb_printf(b, "        }\n");
        }
        if (!lse) fb_shuffle_sums(b, R, S, s->D4, "a", "dd", "k");
        tg_sb_printf(b, "    }\n");
    } else {
        tg_sb_printf(b, "    for (uint j = 0u; j < nkw; j++) {\n");
        rows_q_key(b, io, lse, -1);
        tg_sb_printf(b, "    }\n");
    }
    if (lse) {
        for (uint32_t r = 0; r < R; r++)
            tg_sb_printf(
                b, "    if (row%u < %lluu) st0(orow%u, l%u > 0.0 ? m%u + log(l%u) : NEG_INF);\n", r,
                (ull)s->Tq, r, r, r, r);
        tg_sb_printf(b, "}\n");
        return tg_gen_finish(g, s->batches * nblk);
    }
    for (uint32_t r = 0; r < R; r++) {
        tg_sb_printf(b, "    if (row%u < %lluu) {\n", r, (ull)s->Tq);
        for (int64_t d = 0; quads && d < s->D4; d++)
            tg_sb_printf(b,
                         "        o4_0[((o_off(bb) + row%u * %lluu) >> 2) + %du] = a%u_%d * %s;\n",
                         r, (ull)s->op[FA_OUT].row, (int)d, r, (int)d, scale);
        for (int64_t d = 0; !quads && d < s->D4; d++)
            for (int c = 0; c < s->W; c++)
                tg_sb_printf(b, "        st0(o_off(bb) + row%u * %lluu + %du, a%u_%d%s * %s);\n", r,
                             (ull)s->op[FA_OUT].row, (int)(d * s->W + c), r, (int)d, fb_comp(io, c),
                             scale);
        tg_sb_printf(b, "    }\n");
    }
    tg_sb_printf(b, "}\n");
    return tg_gen_finish(g, s->batches * nblk);
}

/* One query row i of gen_flash_rows_kv's loop: the R keys' scores, p,
 * and the dv and dk sums. The row's texels, lse and delta are fetched, or
 * with jj >= 0 shuffled from lane jj (io->shuffle), where i may pass Tq
 * (then nothing is visible). */
static void rows_kv_query(tg_sb *b, const fb_io *io, const char *scale, int jj) {
    const fa_shape *s = &io->s;
    const tg_node *n = s->n;
    bool dk = io->want_k, dv = io->want_v;
    uint32_t R = io->R;
    if (jj >= 0)
        tg_sb_printf(b,
                     "        uint orow = bb * %lluu + min(i, %lluu);\n"
                     "        float lse = subgroupShuffle(lsel, %du);\n",
                     (ull)s->Tq, (ull)(s->Tq - 1), jj);
    else
        tg_sb_printf(b,
                     "        uint orow = bb * %lluu + i;\n"
                     "        float lse = ld%d(orow);\n",
                     (ull)s->Tq, io->dout + 1);
    for (uint32_t r = 0; r < R; r++) tg_sb_printf(b, "        float sc%u = 0.0;\n", r);
    for (int64_t d = 0; d < s->D4; d++) {
        fb_operand(b, io, "q", d, 0, "qo", "i", fa_row4(s, FA_Q), jj);
        for (uint32_t r = 0; r < R; r++)
            tg_sb_printf(b, " sc%u += dot(q%d, k%u_%d);", r, (int)d, r, (int)d);
        tg_sb_printf(b, "\n");
    }
    for (uint32_t r = 0; r < R; r++) {
        if (jj >= 0)
            tg_sb_printf(b, "        bool vis%u = live%u && i < %lluu;\n", r, r, (ull)s->Tq);
        else
            tg_sb_printf(b, "        bool vis%u = live%u;\n", r, r);
        if (n->attrs.causal)
            tg_sb_printf(b, "        vis%u = vis%u && int(rc%u) <= int(i) + off;\n", r, r, r);
        if (s->has_mask)
            tg_sb_printf(b,
                         "        sc%u = vis%u ? sc%u * %s + ld3(mask_off(orow * %lluu + rc%u)) : "
                         "NEG_INF;\n",
                         r, r, r, scale, (ull)s->Tk, r);
        else
            tg_sb_printf(b, "        sc%u = vis%u ? sc%u * %s : NEG_INF;\n", r, r, r, scale);
        tg_sb_printf(b, "        float p%u = sc%u == NEG_INF ? 0.0 : exp(sc%u - lse);\n", r, r, r);
    }
    for (int64_t d = 0; d < s->V4; d++) {
        fb_operand(b, io, "o", d, io->dout, "dro", "i", fa_row4(s, FA_DOUT), jj);
        tg_sb_printf(b, "\n");
    }
    /* shuffled: p and ds recorded, added for the whole group after it
     * (fb_shuffle_sums) */
    for (uint32_t r = 0; dv && jj >= 0 && r < R; r++)
        tg_sb_printf(b, "        pp%u_%d = p%u;\n", r, jj, r);
    for (uint32_t r = 0; dv && jj < 0 && r < R; r++)
        for (int64_t d = 0; d < s->V4; d++)
            tg_sb_printf(b, "        b%u_%d += p%u * o%d;\n", r, (int)d, r, (int)d);
    if (dk) {
        if (jj >= 0)
            tg_sb_printf(b, "        float dl = subgroupShuffle(dll, %du);\n", jj);
        else
            tg_sb_printf(b, "        float dl = ld%d(orow);\n", io->dout + 2);
        for (uint32_t r = 0; r < R; r++) {
            tg_sb_printf(b, "        float dp%u = 0.0;\n", r);
            for (int64_t d = 0; d < s->V4; d++)
                tg_sb_printf(b, "        dp%u += dot(o%d, v%u_%d);\n", r, (int)d, r, (int)d);
            tg_sb_printf(b, "        float ds%u = p%u * (dp%u - dl);\n", r, r, r);
            if (jj >= 0) tg_sb_printf(b, "        dd%u_%d = ds%u;\n", r, jj, r);
            for (int64_t d = 0; jj < 0 && d < s->D4; d++)
                tg_sb_printf(b, "        a%u_%d += ds%u * q%d;\n", r, (int)d, r, (int)d);
        }
    }
}

/* attention_grad_k and attention_grad_v: R key rows per invocation, over
 * the query rows that see them (causal: i >= j - (Tk - Tq)); every Q and
 * dout texel, lse and delta fetched once for the R keys. */
static tg_status gen_flash_rows_kv(tg_gen *g, const fb_io *io) {
    const fa_shape *s = &io->s;
    const tg_node *n = s->n;
    bool dk = io->want_k, dv = io->want_v;
    uint32_t R = io->R;
    uint64_t RB = (uint64_t)R * g->wg, nblk = ((uint64_t)s->Tk + RB - 1) / RB;
    char scale[64], f[192], idx[96], base[64], nm[16];
    tg_gen_flit(n->attrs.scale > 0 ? n->attrs.scale : 1.0 / sqrt((double)s->D), scale,
                sizeof scale);
    tg_sb *b = &g->b;
    fa_offsets(b, s, true);
    if (dk && dv) tg_gen_offset_fn(b, "dv_off", s->br, s->batch, io->dv.strides, 0);
    if (s->has_mask) fa_mask_offset(b, g->k->g, s);
    bool quad_k = dk && fa_quad_output(g, s, &s->op[FA_OUT], io->out_k);
    bool quad_v = dv && fa_quad_output(g, s, dk ? &io->dv : &s->op[FA_OUT], io->out_v);
    fb_head(g, io, s->Tk, nblk);
    for (uint32_t r = 0; r < R; r++) {
        snprintf(nm, sizeof nm, "k%u_", r);
        snprintf(base, sizeof base, "ko + rc%u * %lluu", r, fa_row4(s, FA_K));
        fb_load_row(b, io, 1, nm, base, s->D4, "");
        if (dk) {
            snprintf(nm, sizeof nm, "v%u_", r);
            snprintf(base, sizeof base, "vo + rc%u * %lluu", r, fa_row4(s, FA_V));
            fb_load_row(b, io, 2, nm, base, s->V4, "");
        }
        for (int64_t d = 0; dk && d < s->D4; d++) /* dk */
            tg_sb_printf(b, "    %s a%u_%d = %s(0.0);\n", s->vt, r, (int)d, s->vt);
        for (int64_t d = 0; dv && d < s->V4; d++) /* dv */
            tg_sb_printf(b, "    %s b%u_%d = %s(0.0);\n", s->vt, r, (int)d, s->vt);
        tg_sb_printf(b, "    bool live%u = row%u < %lluu;\n", r, r, (ull)s->Tk);
    }
    /* visible: key j <= i + Tk - Tq; the workgroup starts at the first
     * query row that sees its first key */
    tg_sb_printf(b, "    const int off = %lld;\n", (long long)(s->Tk - s->Tq));
    if (n->attrs.causal && io->shuffle) { /* the subgroup's first key */
        fb_subgroup_bound(b, io->shuffle, "firstkey", "row0", false);
        tg_sb_printf(b, "    uint ist = uint(min(max(int(firstkey) - off, 0), %lld));\n",
                     (long long)s->Tq);
    } else if (n->attrs.causal)
        tg_sb_printf(b, "    uint ist = uint(min(max(int(r0) - off, 0), %lld));\n",
                     (long long)s->Tq);
    else
        tg_sb_printf(b, "    const uint ist = 0u;\n");
    if (io->shuffle) {
        /* lane l of each subgroup fetches query row ib + l's texels, lse
         * and delta; shuffles hand them round */
        uint32_t S = io->shuffle;
        tg_sb_printf(b,
                     "    for (uint ib = ist; ib < %lluu; ib += %uu) {\n"
                     "        uint il = min(ib + gl_SubgroupInvocationID, %lluu);\n"
                     "        float lsel = ld%d(bb * %lluu + il);\n",
                     (ull)s->Tq, S, (ull)(s->Tq - 1), io->dout + 1, (ull)s->Tq);
        if (dk)
            tg_sb_printf(b, "        float dll = ld%d(bb * %lluu + il);\n", io->dout + 2,
                         (ull)s->Tq);
        for (int64_t d = 0; d < s->D4; d++) {
            snprintf(idx, sizeof idx, "qo + il * %lluu + %lldu", fa_row4(s, FA_Q), (long long)d);
            tg_sb_printf(b, "        %s ql%d = %s;\n", s->vt, (int)d,
                         fb_fetch(f, sizeof f, io, 0, idx));
        }
        for (int64_t d = 0; d < s->V4; d++) {
            snprintf(idx, sizeof idx, "dro + il * %lluu + %lldu", fa_row4(s, FA_DOUT),
                     (long long)d);
            tg_sb_printf(b, "        %s ol%d = %s;\n", s->vt, (int)d,
                         fb_fetch(f, sizeof f, io, io->dout, idx));
        }
        if (dv) fb_group_coefs(b, R, S, "pp");
        if (dk) fb_group_coefs(b, R, S, "dd");
        for (uint32_t jj = 0; jj < S; jj++) {
            tg_sb_printf(b, "        {\n        uint i = ib + %uu;\n", jj);
            rows_kv_query(b, io, scale, (int)jj);
            tg_sb_printf(b, "        }\n");
        }
        if (dv) fb_shuffle_sums(b, R, S, s->V4, "b", "pp", "o");
        if (dk) fb_shuffle_sums(b, R, S, s->D4, "a", "dd", "q");
    } else {
        tg_sb_printf(b, "    for (uint i = ist; i < %lluu; i++) {\n", (ull)s->Tq);
        rows_kv_query(b, io, scale, -1);
    }
    tg_sb_printf(b, "    }\n");
    for (uint32_t r = 0; r < R; r++) {
        tg_sb_printf(b, "    if (live%u) {\n", r);
        if (dk) {
            tg_sb_printf(b, "        uint w = o_off(bb) + row%u * %lluu;\n", r,
                         (ull)s->op[FA_OUT].row);
            for (int64_t d = 0; quad_k && d < s->D4; d++)
                tg_sb_printf(b, "        o4_%d[(w >> 2) + %du] = a%u_%d * %s;\n", io->out_k, (int)d,
                             r, (int)d, scale);
            for (int64_t d = 0; !quad_k && d < s->D4; d++)
                for (int c = 0; c < s->W; c++)
                    tg_sb_printf(b, "        st%d(w + %du, a%u_%d%s * %s);\n", io->out_k,
                                 (int)(d * s->W + c), r, (int)d, fb_comp(io, c), scale);
        }
        if (dv) {
            tg_sb_printf(b, "        uint wv = %s(bb) + row%u * %lluu;\n", dk ? "dv_off" : "o_off",
                         r, (ull)(dk ? io->dv.row : s->op[FA_OUT].row));
            for (int64_t d = 0; quad_v && d < s->V4; d++)
                tg_sb_printf(b, "        o4_%d[(wv >> 2) + %du] = b%u_%d;\n", io->out_v, (int)d, r,
                             (int)d);
            for (int64_t d = 0; !quad_v && d < s->V4; d++)
                for (int c = 0; c < s->W; c++)
                    tg_sb_printf(b, "        st%d(wv + %du, b%u_%d%s);\n", io->out_v,
                                 (int)(d * s->W + c), r, (int)d, fb_comp(io, c));
        }
        tg_sb_printf(b, "    }\n");
    }
    tg_sb_printf(b, "}\n");
    return tg_gen_finish(g, s->batches * nblk);
}

bool tg_gen_attention_backward_handles(const tg_node *n) {
    int nops = n->attrs.has_mask ? 4 : 3;
    switch (n->op) {
    case TG_OP_ATTENTION_LSE: return true;
    case TG_OP_ATTENTION_GRAD_Q:
    case TG_OP_ATTENTION_GRAD_K:
    case TG_OP_ATTENTION_GRAD_V: return n->n_inputs == nops + 3;
    default: return false;
    }
}

tg_status tg_gen_attention_backward(const tg_vk_caps *caps, const tg_kernel *k,
                                    tg_kernel_code *out) {
    const tg_graph *gr = k->g;
    int32_t id = k->nodes[k->n_nodes - 1], gk, gv;
    fb_io io;
    memset(&io, 0, sizeof io);
    if (fa_pair(k, TG_OP_ATTENTION_GRAD_K, TG_OP_ATTENTION_GRAD_V, &gk, &gv)) {
        /* dk and dv in one loop (passes/fusion.c merge_attention) */
        id = gk;
        io.want_k = io.want_v = true;
        io.out_k = fa_output(k, gk);
        io.out_v = fa_output(k, gv);
    } else if (k->n_nodes != 1 || k->n_outputs != 1) {
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "attention backward: kernel of %d nodes is not a grad_k/grad_v pair",
                            k->n_nodes);
    } else {
        io.want_k = gr->nodes[id].op == TG_OP_ATTENTION_GRAD_K;
        io.want_v = gr->nodes[id].op == TG_OP_ATTENTION_GRAD_V;
    }
    const tg_node *n = &gr->nodes[id];
    for (int i = 0; i < n->n_inputs; i++)
        if (k->n_inputs != n->n_inputs || k->inputs[i] != n->inputs[i])
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "%s %d: kernel inputs must be the node's inputs in order",
                                tg_ops[n->op].name, (int)id);
    fa_describe(gr, n, &io.s);
    if (io.want_k && io.want_v) io.dv = fa_operand_of(&io.s, &gr->nodes[gv]);
    io.nops = n->attrs.has_mask ? 4 : 3;
    io.dout = io.nops;
    if (n->op != TG_OP_ATTENTION_LSE)
        io.s.op[FA_DOUT] = fa_operand_of(&io.s, &gr->nodes[n->inputs[io.dout]]);
    bool lse = n->op == TG_OP_ATTENTION_LSE;
    if (io.s.D < 1 || io.s.Dv < 1 || io.s.D > 256 || io.s.Dv > 256)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s %d: head dims %lld and %lld: the flash backward unrolls head dims "
                            "of 1 to 256",
                            tg_ops[n->op].name, (int)id, (long long)io.s.D, (long long)io.s.Dv);
    int64_t loop =
        n->op == TG_OP_ATTENTION_GRAD_K || n->op == TG_OP_ATTENTION_GRAD_V ? io.s.Tq : io.s.Tk;
    if (caps->device_class == TG_VK_CLASS_CPU && loop > CPU_LOOP_LIMIT)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s %d: a loop over %lld rows is over the %d iterations an invocation "
                            "may run on this CPU device",
                            tg_ops[n->op].name, (int)id, (long long)loop, CPU_LOOP_LIMIT);
    /* texel buffers for q, k, v and dout when all have the format */
    io.texel = fa_supported(caps, k, &io.s);
    if (io.texel && !lse) {
        const tg_node *d = &gr->nodes[k->inputs[io.dout]];
        bool h = k->input_storage[io.dout] == TG_F16;
        bool ok = io.s.W == 4 ? (h ? caps->texel_rgba16f : caps->texel_rgba32f)
                              : (h ? caps->texel_r16f : caps->texel_r32f);
        int64_t texels = tg_shape_count(d->rank, d->shape) / io.s.W;
        io.texel = ok && k->input_storage[io.dout] == k->input_storage[0] &&
                   (uint64_t)texels <= caps->max_texel_buffer_elements;
    }
    if (!io.texel) { /* scalar loads */
        io.s.W = 1;
        io.s.D4 = io.s.D;
        io.s.V4 = io.s.Dv;
        io.s.vt = "float";
    }
    io.sel = io.s.W == 4 ? "" : ".r";
    uint32_t texels = io.texel ? (lse ? 7u : 7u | 1u << io.dout) : 0u;
    /* CPU devices: several rows per invocation amortise every texel fetch
     * (lavapipe's cost); GPUs: one row each, fewer registers, more lanes.
     * $TG_ATTN_BWD_ROWS overrides (tuning). */
    bool cpu = caps->device_class == TG_VK_CLASS_CPU;
    uint32_t wg = tg_gen_wg_size(caps, cpu ? 32 : 64);
    int64_t rows = io.want_k || io.want_v ? io.s.Tk : io.s.Tq; /* an invocation's */
    io.R = cpu ? fb_rows_cpu(rows, io.s.D > io.s.Dv ? io.s.D : io.s.Dv, wg) : 1;
    const char *env = getenv("TG_ATTN_BWD_ROWS");
    if (env && atoi(env) >= 1 && atoi(env) <= 16) io.R = (uint32_t)atoi(env);
    io.shuffle = fa_shuffle_lanes(caps, io.texel, io.s.D4, io.s.V4, wg);
    tg_gen g;
    tg_status st = tg_gen_begin_texel(&g, caps, k, out, wg, false, texels, io.s.W == 4);
    if (st == TG_OK && io.shuffle) st = fa_require_shuffle(&g);
    if (st == TG_OK)
        st = n->op == TG_OP_ATTENTION_LSE || n->op == TG_OP_ATTENTION_GRAD_Q
                 ? gen_flash_rows_q(&g, &io)
                 : gen_flash_rows_kv(&g, &io);
    if (st != TG_OK) tg_gen_abort(&g);
    return st;
}
