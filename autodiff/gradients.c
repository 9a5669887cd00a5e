/* gradients.c — tg_gradients: reverse-mode differentiation on the graph.
 *
 * 1. Mark the nodes that need a gradient: float nodes on a path from some
 *    wrt tensor to the output y through differentiable ops.
 * 2. Seed y's gradient (1 for a scalar loss, or the caller's seed).
 * 3. Walk the nodes from y down to 0 (reverse topological order). A
 *    node's gradient is complete when it is reached, since only later
 *    nodes use it; its op's VJP rule (vjp.c) appends the gradient nodes of
 *    its inputs, which are summed into their gradients.
 * 4. The gradient of each wrt tensor, or zeros if none reached it. */
#include "autodiff/autodiff.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Helpers for the rules                                               */
/* ------------------------------------------------------------------ */

static tg_node node_of(const tg_ad *ad, tg_tensor t) {
    return ad->g->nodes[t.id];
}

bool tg_ad_wants(const tg_ad *ad, const tg_node *n, int k) {
    int32_t x = n->inputs[k];
    return x < ad->n_fwd && ad->needs[x];
}

void tg_ad_fail(tg_ad *ad, const tg_node *n, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (ad->g->status == TG_OK)
        tg_graph_fail(ad->g, TG_ERR_UNSUPPORTED, "tg_gradients: %s: %s", tg_ops[n->op].name, msg);
}

tg_tensor tg_ad_reshape(tg_ad *ad, tg_tensor t, int rank, const int64_t *shape) {
    int64_t s[TG_MAX_RANK];
    int dynamic = 0;
    for (int d = 0; d < rank; d++) {
        s[d] = shape[d] < 0 ? -1 : shape[d];
        dynamic += shape[d] < 0;
    }
    if (dynamic > 1) {
        tg_node n = node_of(ad, t);
        char buf[96];
        tg_ad_fail(ad, &n, "reshaping a gradient to %s needs at most one dynamic dimension",
                   tg_shape_str(n.dtype, rank, shape, buf, sizeof buf));
        return TG_INVALID;
    }
    return tg_reshape(ad->g, t, rank, s);
}

tg_tensor tg_ad_zeros(tg_ad *ad, tg_dtype dtype, int rank, const int64_t *shape) {
    tg_tensor z = tg_scalar(ad->g, dtype, 0);
    for (int d = 0; d < rank; d++) {
        if (shape[d] < 0) {
            char buf[96];
            tg_graph_fail(ad->g, TG_ERR_UNSUPPORTED,
                          "tg_gradients: a zero gradient of dynamic shape %s is not supported",
                          tg_shape_str(dtype, rank, shape, buf, sizeof buf));
            return TG_INVALID;
        }
    }
    return rank ? tg_broadcast_to(ad->g, z, rank, shape) : z;
}

tg_tensor tg_ad_sum_to(tg_ad *ad, tg_tensor t, const tg_node *target) {
    tg_node tn = node_of(ad, t);
    int lead = tn.rank - target->rank, axes[TG_MAX_RANK], n_axes = 0;
    bool ones = false; /* some size-1 axis of the target was broadcast */
    for (int d = 0; d < tn.rank; d++) {
        if (d < lead) {
            axes[n_axes++] = d;
        } else if (target->shape[d - lead] == 1 && tn.shape[d] != 1) {
            axes[n_axes++] = d;
            ones = true;
        }
    }
    if (n_axes == 0) return t;
    tg_tensor s = tg_sum(ad->g, t, n_axes, axes, ones);
    if (ones && lead > 0) s = tg_ad_reshape(ad, s, target->rank, target->shape);
    return s;
}

void tg_ad_give(tg_ad *ad, const tg_node *n, int k, tg_tensor t) {
    if (!tg_ad_wants(ad, n, k) || t.id < 0) return;
    int32_t x = n->inputs[k];
    tg_node xn = ad->g->nodes[x];
    t = tg_ad_sum_to(ad, t, &xn);
    ad->grad[x] = ad->grad[x].id < 0 ? t : tg_add(ad->g, ad->grad[x], t);
}

/* ------------------------------------------------------------------ */
/* Which nodes need a gradient                                         */
/* ------------------------------------------------------------------ */

static bool differentiable(tg_op op) {
    return tg_vjp_rule(op) != tg_vjp_none;
}

/* needs[id]: float, reachable from a wrt through differentiable ops, and
 * reaching y through them. */
static bool mark_needs(tg_ad *ad, tg_tensor y, int n, const tg_tensor *wrt) {
    const tg_graph *g = ad->g;
    bool *from_wrt = ad->needs;
    bool *to_y = calloc((size_t)y.id + 1, sizeof *to_y);
    if (!to_y) return false;
    for (int i = 0; i < n; i++) from_wrt[wrt[i].id] = true;
    for (int id = 0; id <= y.id; id++) {
        const tg_node *nd = &g->nodes[id];
        if (!tg_dtype_is_float(nd->dtype)) {
            from_wrt[id] = false;
            continue;
        }
        for (int k = 0; k < nd->n_inputs && !from_wrt[id] && differentiable(nd->op); k++)
            from_wrt[id] = from_wrt[nd->inputs[k]];
    }
    to_y[y.id] = true;
    for (int id = y.id; id >= 0; id--) {
        const tg_node *nd = &g->nodes[id];
        if (!to_y[id] || !differentiable(nd->op)) continue;
        for (int k = 0; k < nd->n_inputs; k++) to_y[nd->inputs[k]] = true;
    }
    for (int id = 0; id < ad->n_fwd; id++) ad->needs[id] = id <= y.id && from_wrt[id] && to_y[id];
    free(to_y);
    return true;
}

/* ------------------------------------------------------------------ */
/* Arguments                                                           */
/* ------------------------------------------------------------------ */

static bool same_shape(int rank, const int64_t *a, int rank_b, const int64_t *b) {
    if (rank != rank_b) return false;
    for (int d = 0; d < rank; d++)
        if (a[d] != b[d] && a[d] >= 0 && b[d] >= 0) return false;
    return true;
}

static tg_status check_arguments(const tg_graph *g, tg_tensor y, tg_tensor seed, int n,
                                 const tg_tensor *wrt, const tg_tensor *grads_out) {
    char sy[96], ss[96];
    if (!g) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_gradients: graph is NULL");
    if (g->status != TG_OK)
        return tg_set_error(g->status, "tg_gradients: the graph has an error: %s", g->error);
    if (n < 0 || (n > 0 && (!wrt || !grads_out)))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_gradients: bad wrt arrays (count %d)", n);
    const tg_node *yn = tg_node_at(g, y);
    if (!yn) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_gradients: the output is invalid");
    if (!tg_dtype_is_float(yn->dtype))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_gradients: the output %%%d (%s) is %s; only float tensors have "
                            "gradients",
                            y.id, tg_ops[yn->op].name, tg_dtype_name(yn->dtype));
    tg_shape_str(yn->dtype, yn->rank, yn->shape, sy, sizeof sy);
    if (seed.id < 0 && tg_shape_count(yn->rank, yn->shape) != 1)
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_gradients: the loss %%%d (%s) is %s, not a scalar; pass a seed "
                            "of that shape to tg_gradients_seeded for a vector-Jacobian product",
                            y.id, tg_ops[yn->op].name, sy);
    const tg_node *sn = seed.id >= 0 ? tg_node_at(g, seed) : NULL;
    if (seed.id >= 0 &&
        (!sn || sn->dtype != yn->dtype || !same_shape(yn->rank, yn->shape, sn->rank, sn->shape)))
        return tg_set_error(
            TG_ERR_SHAPE, "tg_gradients: the seed is %s; expected %s like y",
            sn ? tg_shape_str(sn->dtype, sn->rank, sn->shape, ss, sizeof ss) : "invalid", sy);
    for (int i = 0; i < n; i++) {
        const tg_node *w = tg_node_at(g, wrt[i]);
        if (!w) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_gradients: wrt[%d] is invalid", i);
        if (!tg_dtype_is_float(w->dtype))
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "tg_gradients: wrt[%d] %%%d (%s) is %s; only float tensors have "
                                "gradients",
                                i, wrt[i].id, tg_ops[w->op].name, tg_dtype_name(w->dtype));
    }
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* The walk                                                            */
/* ------------------------------------------------------------------ */

/* 1 of y's type, for a loss with one element. */
static tg_tensor unit_seed(tg_graph *g, tg_tensor y) {
    const tg_node *yn = tg_node_at(g, y);
    int rank = yn->rank;
    int64_t shape[TG_MAX_RANK];
    memcpy(shape, yn->shape, sizeof shape);
    tg_tensor one = tg_scalar(g, yn->dtype, 1.0);
    return rank ? tg_reshape(g, one, rank, shape) : one;
}

static void backward(tg_ad *ad, tg_tensor y) {
    for (int id = y.id; id >= 0 && ad->g->status == TG_OK; id--) {
        if (!ad->needs[id] || ad->grad[id].id < 0) continue;
        tg_node n = ad->g->nodes[id]; /* a copy: the array grows under the rule */
        tg_vjp_rule(n.op)(ad, &n, (tg_tensor){id}, ad->grad[id]);
    }
}

static void collect(tg_ad *ad, int n, const tg_tensor *wrt, tg_tensor *grads_out) {
    for (int i = 0; i < n && ad->g->status == TG_OK; i++) {
        tg_tensor gr = ad->grad[wrt[i].id];
        if (gr.id < 0) {
            tg_node w = ad->g->nodes[wrt[i].id];
            gr = tg_ad_zeros(ad, w.dtype, w.rank, w.shape);
        }
        grads_out[i] = gr;
    }
}

tg_status tg_gradients_seeded(tg_graph *g, tg_tensor y, tg_tensor seed, int n, const tg_tensor *wrt,
                              tg_tensor *grads_out) {
    for (int i = 0; i < n && grads_out; i++) grads_out[i] = TG_INVALID;
    tg_status st = check_arguments(g, y, seed, n, wrt, grads_out);
    if (st != TG_OK) return st;
    tg_ad ad = {.g = g, .n_fwd = g->n_nodes};
    ad.needs = calloc((size_t)ad.n_fwd, sizeof *ad.needs);
    ad.grad = malloc((size_t)ad.n_fwd * sizeof *ad.grad);
    if (!ad.needs || !ad.grad || !mark_needs(&ad, y, n, wrt)) {
        free(ad.needs);
        free(ad.grad);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_gradients: out of memory");
    }
    for (int id = 0; id < ad.n_fwd; id++) ad.grad[id] = TG_INVALID;
    if (ad.needs[y.id]) {
        ad.grad[y.id] = seed.id >= 0 ? seed : unit_seed(g, y);
        backward(&ad, y);
    }
    collect(&ad, n, wrt, grads_out);
    free(ad.needs);
    free(ad.grad);
    if (g->status != TG_OK) {
        for (int i = 0; i < n; i++) grads_out[i] = TG_INVALID;
        return tg_set_error(g->status, "%s", g->error);
    }
    return TG_OK;
}

tg_status tg_gradients(tg_graph *g, tg_tensor loss, int n, const tg_tensor *wrt,
                       tg_tensor *grads_out) {
    return tg_gradients_seeded(g, loss, TG_INVALID, n, wrt, grads_out);
}
