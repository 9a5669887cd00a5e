/* rewrite.c — what the passes share: which nodes the targets need, user
 * lists, rebuilding a graph node by node with an old -> new id map, and
 * reading constants. */
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

bool tg_node_is_alias(const tg_node *n) {
    return n->op == TG_OP_RESHAPE || n->op == TG_OP_STOP_GRADIENT;
}

bool *tg_needed_nodes(const tg_graph *g, int n_targets, const int32_t *targets, int n_target_ops,
                      const int32_t *target_ops) {
    bool *needed = calloc((size_t)g->n_nodes + 1, sizeof *needed);
    if (!needed) {
        tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        return NULL;
    }
    for (int i = 0; i < n_targets; i++) needed[targets[i]] = true;
    for (int i = 0; i < n_target_ops; i++) needed[target_ops[i]] = true;
    /* inputs precede their users, so one backward sweep marks everything */
    for (int id = g->n_nodes - 1; id >= 0; id--) {
        if (!needed[id]) continue;
        const tg_node *n = &g->nodes[id];
        for (int k = 0; k < n->n_inputs; k++) needed[n->inputs[k]] = true;
    }
    return needed;
}

tg_status tg_users_build(const tg_graph *g, tg_users *u) {
    size_t n = (size_t)g->n_nodes;
    size_t edges = 0;
    for (int id = 0; id < g->n_nodes; id++) edges += (size_t)g->nodes[id].n_inputs;
    u->start = calloc(n + 2, sizeof *u->start);
    u->list = malloc((edges ? edges : 1) * sizeof *u->list);
    if (!u->start || !u->list) {
        tg_users_free(u);
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    }
    /* count into start[x + 2], prefix-sum, then fill using start[x + 1] as
     * the cursor, which ends as the start of x + 1 */
    for (int id = 0; id < g->n_nodes; id++)
        for (int k = 0; k < g->nodes[id].n_inputs; k++) u->start[g->nodes[id].inputs[k] + 2]++;
    for (size_t i = 2; i < n + 2; i++) u->start[i] += u->start[i - 1];
    for (int id = 0; id < g->n_nodes; id++)
        for (int k = 0; k < g->nodes[id].n_inputs; k++)
            u->list[u->start[g->nodes[id].inputs[k] + 1]++] = id;
    return TG_OK;
}

void tg_users_free(tg_users *u) {
    free(u->start);
    free(u->list);
    u->start = u->list = NULL;
}

/* ---- rewriting ---- */

tg_status tg_rw_begin(tg_rewriter *rw, const tg_graph *old, int32_t *map) {
    rw->old = old;
    rw->map = map;
    rw->g = tg_graph_new();
    if (!rw->g) return TG_ERR_NO_MEMORY;
    for (int i = 0; i < old->n_nodes; i++) map[i] = -1;
    return TG_OK;
}

/* The status of the new graph after adding node t for old node id. */
static tg_status added(tg_rewriter *rw, int id, tg_tensor t) {
    if (t.id < 0)
        return tg_set_error(rw->g->status ? rw->g->status : TG_ERR_INVALID_ARGUMENT,
                            "rewriting node %d: %s", id, rw->g->error);
    rw->map[id] = t.id;
    return TG_OK;
}

tg_status tg_rw_emit(tg_rewriter *rw, int id, tg_op op, int n_inputs, const int32_t *new_inputs,
                     const tg_attrs *attrs, tg_dtype dtype) {
    const tg_node *n = &rw->old->nodes[id];
    tg_tensor stack[8] = {{0}}, *in = stack;
    if (n_inputs > 8 && !(in = malloc((size_t)n_inputs * sizeof *in)))
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int k = 0; k < n_inputs; k++) in[k].id = new_inputs[k];
    tg_tensor t = tg_node_add(rw->g, op, n_inputs, in, attrs, dtype);
    if (in != stack) free(in);
    if (t.id >= 0 && n->name && tg_tensor_set_name(rw->g, t, n->name) != TG_OK)
        return TG_ERR_NO_MEMORY;
    return added(rw, id, t);
}

tg_status tg_rw_copy(tg_rewriter *rw, int id) {
    const tg_node *n = &rw->old->nodes[id];
    if (tg_ops[n->op].klass == TG_CLASS_SOURCE)
        return added(rw, id,
                     tg_source_add(rw->g, n->op, n->name, n->dtype, n->rank, n->shape, n->data,
                                   n->attrs.trainable));
    int32_t stack[8] = {0}, *in = stack;
    if (n->n_inputs > 8 && !(in = malloc((size_t)n->n_inputs * sizeof *in)))
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int k = 0; k < n->n_inputs; k++) in[k] = rw->map[n->inputs[k]];
    tg_status st = tg_rw_emit(rw, id, n->op, n->n_inputs, in, &n->attrs, n->dtype);
    if (in != stack) free(in);
    return st;
}

tg_status tg_rw_constant(tg_rewriter *rw, int id, const void *data) {
    const tg_node *n = &rw->old->nodes[id];
    return added(
        rw, id,
        tg_source_add(rw->g, TG_OP_CONSTANT, n->name, n->dtype, n->rank, n->shape, data, false));
}

tg_status tg_rw_built(tg_rewriter *rw, int id, tg_tensor t, const char *what) {
    tg_graph *g = rw->g;
    if (t.id < 0 || g->status != TG_OK)
        return tg_set_error(g->status ? g->status : TG_ERR_INVALID_ARGUMENT, "%s node %d: %s", what,
                            id, g->error);
    const char *name = rw->old->nodes[id].name;
    if (name && tg_tensor_set_name(g, t, name) != TG_OK)
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    tg_rw_replace(rw, id, t.id);
    return TG_OK;
}

tg_status tg_rw_end(tg_rewriter *rw, tg_status st, tg_graph **g) {
    if (st != TG_OK) {
        tg_graph_free(rw->g);
        rw->g = NULL;
        return st;
    }
    tg_graph_free(*g);
    *g = rw->g;
    rw->g = NULL;
    return TG_OK;
}

/* ---- attention ---- */

bool tg_op_is_attention(tg_op op) {
    return op == TG_OP_ATTENTION || op == TG_OP_ATTENTION_LSE || op == TG_OP_ATTENTION_GRAD_Q ||
           op == TG_OP_ATTENTION_GRAD_K || op == TG_OP_ATTENTION_GRAD_V;
}

tg_tensor tg_swap_heads_time(tg_graph *g, tg_tensor x) {
    if (x.id < 0 || x.id >= g->n_nodes) return TG_INVALID;
    int r = g->nodes[x.id].rank, perm[TG_MAX_RANK];
    for (int i = 0; i < r; i++) perm[i] = i;
    perm[r - 3] = r - 2;
    perm[r - 2] = r - 3;
    return tg_permute(g, x, r, perm);
}

/* ---- constants ---- */

double tg_constant_get(const tg_node *n, int64_t i) {
    tg_array a = {.dtype = n->dtype, .rank = n->rank, .data = n->data};
    memcpy(a.shape, n->shape, sizeof a.shape);
    return tg_array_get(&a, i);
}

bool tg_constant_all(const tg_node *n, double v) {
    if (n->op != TG_OP_CONSTANT) return false;
    int64_t count = tg_shape_count(n->rank, n->shape);
    for (int64_t i = 0; i < count; i++)
        if (tg_constant_get(n, i) != v) return false;
    return true;
}
