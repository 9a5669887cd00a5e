/* attention.c — what runs when the flash_attention pass is off: every
 * attention op (attention, attention_lse, attention_grad_q/k/v) becomes
 * the textbook graph of matmuls, a softmax and elementwise ops that holds
 * the [..., Tq, Tk] scores in memory, as an eager framework without a
 * fused kernel runs it (docs/passes.md, "flash_attention").
 *
 *   S  = q k^T * scale (+ mask) (+ causal: -inf above the shifted diagonal)
 *   P  = softmax(S)      O = P v      lse = max + log(sum(exp(S - max)))
 *   dV = P^T dO      dP = dO v^T      dS = P * (dP - delta)
 *   dQ = dS k * scale                 dK = dS^T q * scale
 *
 * delta = rowsum(dP * P). The ops of one attention share S, P and (per
 * dout) dS, as autograd keeps the probabilities of the forward pass. A
 * gradient's lse and delta inputs are not read (they are the flash
 * kernels' shortcut; the reference interpreter does not read them
 * either), so the nodes computing them become dead.
 *
 * It computes in f32 whatever the attention's dtype (as the flash kernels
 * accumulate) and casts the result back. */
#include "passes/passes.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The logical [..., H, T, D] view of an input (stored [..., T, H, D]
 * when heads_inner), in f32. */
static tg_tensor logical_f32(tg_graph *g, tg_tensor x, bool heads_inner) {
    if (heads_inner) x = tg_swap_heads_time(g, x);
    if (x.id < 0) return x;
    return g->nodes[x.id].dtype == TG_F32 ? x : tg_cast(g, x, TG_F32);
}

/* What the attention ops of one (q, k, v, mask, attributes) share, built
 * once as an eager framework's autograd keeps it: the scores, the
 * probabilities and, per dout, the scores' gradient. */
typedef struct shared {
    int32_t in[4]; /* q, k, v, mask (-1) in the new graph */
    tg_attrs attrs;
    tg_tensor q, k, v, s, p; /* logical f32 views; scaled, masked scores; softmax */
    int32_t dout;            /* dS's dout (-1: none yet) */
    tg_tensor ds, dout_f32;  /* dS; dout in f32 */
} shared;

typedef struct lowering {
    tg_graph *g;
    shared *sh;
    int n_sh, cap_sh;
    int n_causal; /* causal biases built, by shape */
    int64_t causal_shape[8][2];
    tg_tensor causal[8];
} lowering;

/* [Tq, Tk]: 0 where query i sees key j (j <= i + Tk - Tq), else -inf;
 * built once per shape (for the first eight shapes). */
static tg_tensor causal_bias(lowering *lw, int64_t tq, int64_t tk) {
    tg_graph *g = lw->g;
    for (int c = 0; c < lw->n_causal; c++)
        if (lw->causal_shape[c][0] == tq && lw->causal_shape[c][1] == tk) return lw->causal[c];
    int64_t shape[2] = {tq, tk};
    tg_tensor i = tg_iota(g, TG_I32, 2, shape, 0), j = tg_iota(g, TG_I32, 2, shape, 1);
    if (tk != tq) i = tg_add(g, i, tg_scalar(g, TG_I32, (double)(tk - tq)));
    tg_tensor bias =
        tg_where(g, tg_gt(g, j, i), tg_scalar(g, TG_F32, -INFINITY), tg_scalar(g, TG_F32, 0.0));
    if (lw->n_causal < 8) {
        lw->causal_shape[lw->n_causal][0] = tq;
        lw->causal_shape[lw->n_causal][1] = tk;
        lw->causal[lw->n_causal++] = bias;
    }
    return bias;
}

static bool same_attention(const shared *e, const int32_t *in, const tg_attrs *a) {
    return memcmp(e->in, in, sizeof e->in) == 0 && e->attrs.causal == a->causal &&
           e->attrs.scale == a->scale && e->attrs.transpose_a == a->transpose_a &&
           e->attrs.has_mask == a->has_mask;
}

/* The shared part of attention-family node n (inputs in, new ids). */
static shared *scores(lowering *lw, const tg_node *n, const int32_t *in) {
    int32_t key[4] = {in[0], in[1], in[2], n->attrs.has_mask ? in[3] : -1};
    for (int i = 0; i < lw->n_sh; i++)
        if (same_attention(&lw->sh[i], key, &n->attrs)) return &lw->sh[i];
    if (lw->n_sh == lw->cap_sh) {
        int cap = lw->cap_sh ? 2 * lw->cap_sh : 8;
        shared *grown = realloc(lw->sh, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        lw->sh = grown;
        lw->cap_sh = cap;
    }
    tg_graph *g = lw->g;
    shared *e = &lw->sh[lw->n_sh++];
    memset(e, 0, sizeof *e);
    memcpy(e->in, key, sizeof key);
    e->attrs = n->attrs;
    e->dout = -1;
    bool hi = n->attrs.transpose_a;
    e->q = logical_f32(g, (tg_tensor){in[0]}, hi);
    e->k = logical_f32(g, (tg_tensor){in[1]}, hi);
    e->v = logical_f32(g, (tg_tensor){in[2]}, hi);
    tg_tensor s = tg_matmul(g, e->q, e->k, false, true);
    s = tg_mul(g, s, tg_scalar(g, TG_F32, n->attrs.scale));
    if (n->attrs.has_mask) s = tg_add(g, s, logical_f32(g, (tg_tensor){in[3]}, false));
    if (n->attrs.causal && s.id >= 0) {
        const tg_node *sn = &g->nodes[s.id];
        s = tg_add(g, s, causal_bias(lw, sn->shape[sn->rank - 2], sn->shape[sn->rank - 1]));
    }
    e->s = s;
    e->p = tg_softmax(g, s, -1);
    return e;
}

static tg_tensor row_lse(tg_graph *g, tg_tensor s) {
    if (s.id < 0) return s;
    int last = g->nodes[s.id].rank - 1;
    tg_tensor m = tg_max(g, s, 1, &last, true);
    tg_tensor e = tg_exp(g, tg_sub(g, s, m));
    return tg_add(g, tg_log(g, tg_sum(g, e, 1, &last, true)), m);
}

/* The lowered value of attention-family node n (inputs in, new ids). A
 * gradient's lse and delta inputs are not read, as by the reference
 * interpreter (graph/interp.c): they are the flash kernels' shortcut, and
 * the values they stand for are P and rowsum(dP * P) here. */
static tg_tensor lower(lowering *lw, const tg_node *n, const int32_t *in) {
    tg_graph *g = lw->g;
    shared *e = scores(lw, n, in);
    if (!e) {
        tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        return TG_INVALID;
    }
    if (n->op == TG_OP_ATTENTION) return tg_matmul(g, e->p, e->v, false, false);
    if (n->op == TG_OP_ATTENTION_LSE) return row_lse(g, e->s);

    int nops = n->attrs.has_mask ? 4 : 3;
    if (e->dout != in[nops]) { /* a new dout: its dS */
        tg_tensor dout = logical_f32(g, (tg_tensor){in[nops]}, n->attrs.transpose_a);
        tg_tensor dp = tg_matmul(g, dout, e->v, false, true);
        if (dp.id < 0) return dp;
        int last = g->nodes[dp.id].rank - 1;
        tg_tensor delta = tg_sum(g, tg_mul(g, dp, e->p), 1, &last, true);
        e->ds = tg_mul(g, e->p, tg_sub(g, dp, delta));
        e->dout_f32 = dout;
        e->dout = in[nops];
    }
    if (n->op == TG_OP_ATTENTION_GRAD_V) return tg_matmul(g, e->p, e->dout_f32, true, false);
    tg_tensor scale = tg_scalar(g, TG_F32, n->attrs.scale);
    if (n->op == TG_OP_ATTENTION_GRAD_Q)
        return tg_mul(g, tg_matmul(g, e->ds, e->k, false, false), scale);
    return tg_mul(g, tg_matmul(g, e->ds, e->q, true, false), scale);
}

/* Old node id, an attention op, as its lowered graph in rw->g: cast back
 * to its dtype and, with transpose_a, stored [..., T, H, D] again. */
static tg_status emit_lowered(tg_rewriter *rw, lowering *lw, int id) {
    const tg_node *n = &rw->old->nodes[id];
    int32_t in[8];
    for (int k = 0; k < n->n_inputs && k < 8; k++) in[k] = rw->map[n->inputs[k]];
    const tg_node *qn = tg_rw_node(rw, n->inputs[0]), *kn = tg_rw_node(rw, n->inputs[1]);
    int time_axis = n->attrs.transpose_a ? 3 : 2; /* from the end */
    int64_t tq = qn->shape[qn->rank - time_axis], tk = kn->shape[kn->rank - time_axis];
    if (n->attrs.causal && (tq < 1 || tk < 1))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "flash_attention off: causal attention node %d needs static Tq and "
                            "Tk to build its mask (got %lld, %lld)",
                            id, (long long)tq, (long long)tk);
    tg_graph *g = rw->g;
    tg_tensor t = lower(lw, n, in);
    if (t.id < 0 && g->status == TG_OK) return TG_ERR_NO_MEMORY;
    if (n->attrs.transpose_a && n->op != TG_OP_ATTENTION_LSE) t = tg_swap_heads_time(g, t);
    if (n->dtype != TG_F32) t = tg_cast(g, t, n->dtype);
    char what[96];
    snprintf(what, sizeof what, "flash_attention off: lowering %s", tg_ops[n->op].name);
    return tg_rw_built(rw, id, t, what);
}

tg_status tg_lower_attention(tg_graph **g, const tg_pass_ctx *ctx) {
    const tg_graph *old = *g;
    bool any = false;
    for (int id = 0; id < old->n_nodes && !any; id++) any = tg_op_is_attention(old->nodes[id].op);
    if (!any) return TG_OK;
    /* only what the targets need (dce drops the rest) */
    bool *needed =
        tg_needed_nodes(old, ctx->n_targets, ctx->targets, ctx->n_target_ops, ctx->target_ops);
    if (!needed) return TG_ERR_NO_MEMORY;
    tg_rewriter rw;
    tg_status st = tg_rw_begin(&rw, old, ctx->map);
    lowering lw = {.g = rw.g};
    for (int id = 0; st == TG_OK && id < old->n_nodes; id++)
        st = needed[id] && tg_op_is_attention(old->nodes[id].op) ? emit_lowered(&rw, &lw, id)
                                                                 : tg_rw_copy(&rw, id);
    free(lw.sh);
    free(needed);
    return tg_rw_end(&rw, st, g);
}
