/* algebra.c — exact algebraic identities (`algebra`) and permutes folded
 * into matmul transpose flags (`permute_matmul`).
 *
 * Every rule keeps the value bit for bit, NaN and Inf included (so x*0 is
 * not 0), with one documented exception: x + 0 gives x where IEEE gives +0
 * for x = -0. A rule applies only when the result has x's dtype and shape:
 * x + zeros[4,8] with x f32[8] broadcasts, so it is not x. Rules read the
 * inputs as already rewritten, so chains collapse in one pass. */
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

static bool same_type(const tg_node *a, const tg_node *b) {
    return a->dtype == b->dtype && a->rank == b->rank &&
           memcmp(a->shape, b->shape, (size_t)a->rank * sizeof a->shape[0]) == 0;
}

/* If n (old) equals its input `x` (new id) combined with a constant `c`
 * (new node) that holds only `v`: x. -1 otherwise. */
static int32_t identity_operand(const tg_rewriter *rw, const tg_node *n, int32_t x, int32_t c,
                                double v) {
    const tg_node *xn = &rw->g->nodes[x];
    if (!tg_constant_all(&rw->g->nodes[c], v) || !same_type(xn, n)) return -1;
    return x;
}

/* The value old node `id` reduces to without computing anything (a new
 * id), or -1. */
static int32_t simplify_to_input(const tg_rewriter *rw, int id) {
    const tg_node *n = &rw->old->nodes[id];
    int32_t a = n->n_inputs > 0 ? rw->map[n->inputs[0]] : -1;
    int32_t b = n->n_inputs > 1 ? rw->map[n->inputs[1]] : -1;
    int32_t r = -1;
    switch (n->op) {
    case TG_OP_MUL: /* x*1, 1*x */
        r = identity_operand(rw, n, a, b, 1.0);
        if (r < 0) r = identity_operand(rw, n, b, a, 1.0);
        return r;
    case TG_OP_ADD: /* x+0, 0+x */
        r = identity_operand(rw, n, a, b, 0.0);
        if (r < 0) r = identity_operand(rw, n, b, a, 0.0);
        return r;
    case TG_OP_SUB: return identity_operand(rw, n, a, b, 0.0);
    case TG_OP_DIV: return identity_operand(rw, n, a, b, 1.0);
    case TG_OP_NEG: {
        const tg_node *x = &rw->g->nodes[a];
        return x->op == TG_OP_NEG ? x->inputs[0] : -1;
    }
    case TG_OP_CAST:
    case TG_OP_BROADCAST_TO:
    case TG_OP_RESHAPE: /* to its own type: a reshape's attrs only matter
                           through the shape they give */
        return same_type(&rw->g->nodes[a], n) ? a : -1;
    default: return -1;
    }
}

/* permute(permute(x, p1), p2) = permute(x, p1[p2[i]]); identity -> x. */
static tg_status rewrite_permute(tg_rewriter *rw, int id, bool *done) {
    const tg_node *n = &rw->old->nodes[id];
    int32_t x = rw->map[n->inputs[0]];
    tg_attrs at = n->attrs;
    const tg_node *inner = &rw->g->nodes[x];
    if (inner->op == TG_OP_PERMUTE) {
        for (int i = 0; i < at.n_axes; i++) at.axes[i] = inner->attrs.axes[n->attrs.axes[i]];
        x = inner->inputs[0];
    }
    bool identity = true;
    for (int i = 0; i < at.n_axes; i++) identity = identity && at.axes[i] == i;
    *done = true;
    if (identity) {
        tg_rw_replace(rw, id, x);
        return TG_OK;
    }
    if (x == rw->map[n->inputs[0]]) {
        *done = false; /* nothing changed: copy it */
        return TG_OK;
    }
    return tg_rw_emit(rw, id, TG_OP_PERMUTE, 1, &x, &at, n->dtype);
}

/* reshape(reshape(x)) = reshape(x) with the outer shape; attrs holding 0
 * (copy the input's dim) would read the other input, so then the outer
 * result's shape is used, if static. */
static tg_status rewrite_reshape(tg_rewriter *rw, int id, bool *done) {
    const tg_node *n = &rw->old->nodes[id];
    const tg_node *inner = tg_rw_node(rw, n->inputs[0]);
    *done = false;
    if (inner->op != TG_OP_RESHAPE) return TG_OK;
    tg_attrs at = n->attrs;
    bool copies = false;
    for (int i = 0; i < at.n_shape; i++) copies = copies || at.shape[i] == 0;
    if (copies) {
        if (tg_shape_count(n->rank, n->shape) < 0) return TG_OK;
        at.n_shape = n->rank;
        memcpy(at.shape, n->shape, sizeof at.shape);
    }
    int32_t x = inner->inputs[0];
    *done = true;
    if (same_type(&rw->g->nodes[x], n)) {
        tg_rw_replace(rw, id, x);
        return TG_OK;
    }
    return tg_rw_emit(rw, id, TG_OP_RESHAPE, 1, &x, &at, n->dtype);
}

/* broadcast_to of a one-element constant: a splat constant, when small. */
static tg_status rewrite_broadcast(tg_rewriter *rw, int id, int64_t max_elements, bool *done) {
    const tg_node *n = &rw->old->nodes[id];
    const tg_node *c = tg_rw_node(rw, n->inputs[0]);
    int64_t count = tg_shape_count(n->rank, n->shape);
    *done = false;
    if (c->op != TG_OP_CONSTANT || tg_shape_count(c->rank, c->shape) != 1 || count < 0 ||
        count > max_elements)
        return TG_OK;
    size_t size = tg_dtype_size(n->dtype);
    unsigned char *data = malloc((size_t)count * size + 1);
    if (!data) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int64_t i = 0; i < count; i++) memcpy(data + (size_t)i * size, c->data, size);
    *done = true;
    tg_status st = tg_rw_constant(rw, id, data);
    free(data);
    return st;
}

tg_status tg_pass_algebra(tg_graph **g, const tg_pass_ctx *ctx) {
    const tg_graph *old = *g;
    tg_rewriter rw;
    tg_status st = tg_rw_begin(&rw, old, ctx->map);
    for (int id = 0; st == TG_OK && id < old->n_nodes; id++) {
        tg_op op = old->nodes[id].op;
        int32_t same = tg_ops[op].klass == TG_CLASS_SOURCE ? -1 : simplify_to_input(&rw, id);
        bool done = same >= 0;
        if (done)
            tg_rw_replace(&rw, id, same);
        else if (op == TG_OP_PERMUTE)
            st = rewrite_permute(&rw, id, &done);
        else if (op == TG_OP_RESHAPE)
            st = rewrite_reshape(&rw, id, &done);
        else if (op == TG_OP_BROADCAST_TO)
            st = rewrite_broadcast(&rw, id, ctx->fold_max_elements, &done);
        if (st == TG_OK && !done) st = tg_rw_copy(&rw, id);
    }
    return tg_rw_end(&rw, st, g);
}

/* ------------------------------------------------------------------ */
/* permute_matmul                                                      */
/* ------------------------------------------------------------------ */

/* A permute that swaps the last two axes and keeps the others. */
static bool swaps_last_two(const tg_node *p) {
    int r = p->attrs.n_axes;
    if (p->op != TG_OP_PERMUTE || r < 2) return false;
    for (int i = 0; i < r - 2; i++)
        if (p->attrs.axes[i] != i) return false;
    return p->attrs.axes[r - 2] == r - 1 && p->attrs.axes[r - 1] == r - 2;
}

/* A permute that swaps axes rank-3 and rank-2 (heads and time) and keeps
 * the others. */
static bool swaps_heads_time(const tg_node *p) {
    int r = p->attrs.n_axes;
    if (p->op != TG_OP_PERMUTE || r < 3) return false;
    for (int i = 0; i < r; i++)
        if (p->attrs.axes[i] != (i == r - 3 ? r - 2 : i == r - 2 ? r - 3 : i)) return false;
    return true;
}

/* Permutes folded into the attention ops (transpose_a, graph/ops.c): when
 * q, k, v (and a gradient's dout) are each the heads/time swap of a
 * [..., T, H, D] tensor with one batch and head shape, the op reads those
 * directly and writes its result as [..., T, H, D], which a swap turns
 * back into the old value (cancelling the permute after it, as heads are
 * merged). Only what the flash kernels take (head dims up to 256; the
 * gradients with lse and delta). */
static tg_status fold_attention_permutes(tg_rewriter *rw, int id, bool *done) {
    const tg_node *n = &rw->old->nodes[id];
    int nops = n->attrs.has_mask ? 4 : 3;
    bool grad = n->op != TG_OP_ATTENTION && n->op != TG_OP_ATTENTION_LSE;
    int32_t in[8];
    *done = false;
    if (n->attrs.transpose_a || n->n_inputs > 8 || (grad && n->n_inputs != nops + 3)) return TG_OK;
    const tg_node *first = NULL;
    for (int i = 0; i < n->n_inputs; i++) {
        in[i] = rw->map[n->inputs[i]];
        if (i == 3 && nops == 4) continue; /* the mask */
        if (i >= nops && (!grad || i > nops)) continue;
        const tg_node *x = tg_rw_node(rw, n->inputs[i]);
        if (!swaps_heads_time(x)) return TG_OK;
        const tg_node *src = &rw->g->nodes[x->inputs[0]];
        int r = src->rank;
        if (src->shape[r - 1] < 1 || src->shape[r - 1] > 256) return TG_OK;
        if (first) {
            if (r != first->rank || src->shape[r - 2] != first->shape[r - 2]) return TG_OK;
            for (int d = 0; d < r - 3; d++)
                if (src->shape[d] != first->shape[d]) return TG_OK;
        }
        first = first ? first : src;
        in[i] = x->inputs[0];
    }
    tg_attrs at = n->attrs;
    at.transpose_a = true;
    *done = true;
    if (n->op == TG_OP_ATTENTION_LSE) /* its result stays logical */
        return tg_rw_emit(rw, id, n->op, n->n_inputs, in, &at, n->dtype);
    tg_tensor ins[8];
    for (int i = 0; i < n->n_inputs; i++) ins[i].id = in[i];
    tg_tensor t = tg_node_add(rw->g, n->op, n->n_inputs, ins, &at, n->dtype);
    if (t.id < 0)
        return tg_set_error(rw->g->status ? rw->g->status : TG_ERR_INVALID_ARGUMENT,
                            "rewriting node %d: %s", id, rw->g->error);
    if (n->name && tg_tensor_set_name(rw->g, t, n->name) != TG_OK) return TG_ERR_NO_MEMORY;
    tg_tensor back = tg_swap_heads_time(rw->g, t);
    if (back.id < 0)
        return tg_set_error(rw->g->status ? rw->g->status : TG_ERR_INVALID_ARGUMENT,
                            "rewriting node %d: %s", id, rw->g->error);
    tg_rw_replace(rw, id, back.id);
    return TG_OK;
}

/* A heads/time swap of the swap after a folded attention op is that op's
 * [..., T, H, D] result. */
static bool cancels_heads_swap(tg_rewriter *rw, int id) {
    const tg_node *n = &rw->old->nodes[id], *x = tg_rw_node(rw, n->inputs[0]);
    if (!swaps_heads_time(n) || !swaps_heads_time(x)) return false;
    const tg_node *op = &rw->g->nodes[x->inputs[0]];
    if (!op->attrs.transpose_a || op->op == TG_OP_MATMUL) return false;
    tg_rw_replace(rw, id, x->inputs[0]);
    return true;
}

tg_status tg_pass_permute_matmul(tg_graph **g, const tg_pass_ctx *ctx) {
    const tg_graph *old = *g;
    tg_rewriter rw;
    tg_status st = tg_rw_begin(&rw, old, ctx->map);
    for (int id = 0; st == TG_OK && id < old->n_nodes; id++) {
        const tg_node *n = &old->nodes[id];
        bool done = false;
        if (tg_op_is_attention(n->op)) /* and the swaps back after them cancel: */
            st = fold_attention_permutes(&rw, id, &done);
        else if (n->op == TG_OP_PERMUTE)
            done = cancels_heads_swap(&rw, id);
        if (st != TG_OK || done) continue;
        if (n->op != TG_OP_MATMUL) {
            st = tg_rw_copy(&rw, id);
            continue;
        }
        int32_t in[2];
        tg_attrs at = n->attrs;
        bool *flag[2] = {&at.transpose_a, &at.transpose_b};
        for (int k = 0; k < 2; k++) {
            const tg_node *x = tg_rw_node(&rw, n->inputs[k]);
            in[k] = rw.map[n->inputs[k]];
            if (swaps_last_two(x)) {
                in[k] = x->inputs[0];
                *flag[k] = !*flag[k];
            }
        }
        st = tg_rw_emit(&rw, id, TG_OP_MATMUL, 2, in, &at, n->dtype);
    }
    return tg_rw_end(&rw, st, g);
}
