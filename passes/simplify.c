/* simplify.c — dead-code elimination, common-subexpression elimination and
 * constant folding. Each rebuilds the graph with tg_rewriter. */
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

/* A pass that rebuilds a graph: st carries the first error through a loop
 * over the old nodes. */
#define FOR_NODES_WHILE_OK(g, id, st) for (int id = 0; (st) == TG_OK && id < (g)->n_nodes; id++)

/* ------------------------------------------------------------------ */
/* dce: keep what the targets and target ops need                      */
/* ------------------------------------------------------------------ */

tg_status tg_pass_dce(tg_graph **g, const tg_pass_ctx *ctx) {
    const tg_graph *old = *g;
    bool *needed =
        tg_needed_nodes(old, ctx->n_targets, ctx->targets, ctx->n_target_ops, ctx->target_ops);
    if (!needed) return TG_ERR_NO_MEMORY;
    tg_rewriter rw;
    tg_status st = tg_rw_begin(&rw, old, ctx->map);
    FOR_NODES_WHILE_OK(old, id, st) {
        if (needed[id]) st = tg_rw_copy(&rw, id);
    }
    free(needed);
    return tg_rw_end(&rw, st, g);
}

/* ------------------------------------------------------------------ */
/* cse: identical nodes become one                                     */
/* ------------------------------------------------------------------ */

static bool same_double(double a, double b) {
    return memcmp(&a, &b, sizeof a) == 0; /* bitwise: NaN attrs match themselves */
}

static bool same_ints(int n, const int64_t *a, const int64_t *b) {
    return memcmp(a, b, (size_t)n * sizeof *a) == 0;
}

/* Every field (a field an op does not use is equal unless the builder's
 * caller left garbage there, which only costs a missed merge). */
static bool attrs_equal(const tg_attrs *a, const tg_attrs *b) {
    return a->n_axes == b->n_axes && same_ints(TG_MAX_RANK, a->axes, b->axes) &&
           a->keepdims == b->keepdims && a->axis == b->axis && a->n_shape == b->n_shape &&
           same_ints(TG_MAX_RANK, a->shape, b->shape) && a->n_slice == b->n_slice &&
           same_ints(TG_MAX_RANK, a->begin, b->begin) && same_ints(TG_MAX_RANK, a->end, b->end) &&
           same_ints(TG_MAX_RANK, a->step, b->step) && same_ints(TG_MAX_RANK, a->lo, b->lo) &&
           same_ints(TG_MAX_RANK, a->hi, b->hi) && same_double(a->value, b->value) &&
           a->transpose_a == b->transpose_a && a->transpose_b == b->transpose_b &&
           a->stride == b->stride && a->padding == b->padding && a->dilation == b->dilation &&
           same_double(a->eps, b->eps) && a->causal == b->causal &&
           same_double(a->scale, b->scale) && a->ignore_index == b->ignore_index &&
           a->depth == b->depth && a->trainable == b->trainable && a->has_mask == b->has_mask &&
           same_double(a->beta1, b->beta1) && same_double(a->beta2, b->beta2) &&
           same_double(a->momentum, b->momentum) && same_double(a->dampening, b->dampening) &&
           a->nesterov == b->nesterov && same_double(a->weight_decay, b->weight_decay);
}

static uint64_t mix(uint64_t h, uint64_t v) {
    return (h ^ v) * 1099511628211ull;
}

static uint64_t node_hash(const tg_node *n, const int32_t *map) {
    uint64_t h = mix(14695981039346656037ull, (uint64_t)n->op);
    h = mix(h, (uint64_t)n->dtype);
    for (int i = 0; i < n->rank; i++) h = mix(h, (uint64_t)n->shape[i]);
    for (int k = 0; k < n->n_inputs; k++) h = mix(h, (uint64_t)map[n->inputs[k]]);
    const unsigned char *d = n->data;
    for (size_t i = 0; i < n->data_bytes; i++) h = mix(h, d[i]);
    return h;
}

/* Same value: op, dtype, shape, inputs (as mapped), attrs, constant bytes. */
static bool same_node(const tg_node *a, const tg_node *b, const int32_t *map) {
    if (a->op != b->op || a->dtype != b->dtype || a->rank != b->rank ||
        !same_ints(a->rank, a->shape, b->shape) || a->n_inputs != b->n_inputs ||
        a->data_bytes != b->data_bytes || !attrs_equal(&a->attrs, &b->attrs))
        return false;
    for (int k = 0; k < a->n_inputs; k++)
        if (map[a->inputs[k]] != map[b->inputs[k]]) return false;
    return a->data_bytes == 0 || memcmp(a->data, b->data, a->data_bytes) == 0;
}

/* Placeholders and variables are distinct by name even with equal shapes;
 * state ops have effects. */
static bool cse_candidate(const tg_node *n) {
    return n->op != TG_OP_PLACEHOLDER && n->op != TG_OP_VARIABLE &&
           tg_ops[n->op].klass != TG_CLASS_STATE && tg_ops[n->op].writes == 0;
}

tg_status tg_pass_cse(tg_graph **g, const tg_pass_ctx *ctx) {
    const tg_graph *old = *g;
    /* open addressing over old ids of the nodes kept, at most half full */
    size_t cap = 16;
    while (cap < 2 * (size_t)old->n_nodes) cap *= 2;
    int32_t *table = malloc(cap * sizeof *table);
    if (!table) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    memset(table, 0xff, cap * sizeof *table); /* -1: empty */
    tg_rewriter rw;
    tg_status st = tg_rw_begin(&rw, old, ctx->map);
    FOR_NODES_WHILE_OK(old, id, st) {
        const tg_node *n = &old->nodes[id];
        if (!cse_candidate(n)) {
            st = tg_rw_copy(&rw, id);
            continue;
        }
        size_t slot = (size_t)node_hash(n, ctx->map) & (cap - 1);
        while (table[slot] >= 0 && !same_node(&old->nodes[table[slot]], n, ctx->map))
            slot = (slot + 1) & (cap - 1);
        if (table[slot] >= 0) {
            tg_rw_replace(&rw, id, ctx->map[table[slot]]);
        } else {
            table[slot] = id;
            st = tg_rw_copy(&rw, id);
        }
    }
    free(table);
    return tg_rw_end(&rw, st, g);
}

/* ------------------------------------------------------------------ */
/* fold: nodes computed from constants only become constants           */
/* ------------------------------------------------------------------ */

static bool foldable_op(const tg_node *n, int64_t max_elements) {
    tg_op_class k = tg_ops[n->op].klass;
    if (k == TG_CLASS_SOURCE || k == TG_CLASS_STATE || tg_ops[n->op].writes) return false;
    int64_t count = tg_shape_count(n->rank, n->shape);
    return count >= 0 && count <= max_elements;
}

/* Marks foldable nodes; returns the frontier (foldable nodes something
 * else needs: a non-foldable user or a target) in *frontier. */
static tg_status find_foldable(const tg_graph *g, const tg_pass_ctx *ctx, bool *foldable,
                               int32_t **frontier, int *n_frontier) {
    for (int id = 0; id < g->n_nodes; id++) {
        const tg_node *n = &g->nodes[id];
        bool ok = foldable_op(n, ctx->fold_max_elements);
        for (int k = 0; k < n->n_inputs && ok; k++) {
            const tg_node *in = &g->nodes[n->inputs[k]];
            ok = in->op == TG_OP_CONSTANT || foldable[n->inputs[k]];
        }
        foldable[id] = ok;
    }
    bool *wanted = calloc((size_t)g->n_nodes + 1, sizeof *wanted);
    *frontier = malloc(((size_t)g->n_nodes + 1) * sizeof **frontier);
    if (!wanted || !*frontier) {
        free(wanted);
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    }
    for (int id = 0; id < g->n_nodes; id++) {
        const tg_node *n = &g->nodes[id];
        if (foldable[id]) continue;
        for (int k = 0; k < n->n_inputs; k++) wanted[n->inputs[k]] = true;
    }
    for (int i = 0; i < ctx->n_targets; i++) wanted[ctx->targets[i]] = true;
    *n_frontier = 0;
    for (int id = 0; id < g->n_nodes; id++)
        if (foldable[id] && wanted[id]) (*frontier)[(*n_frontier)++] = id;
    free(wanted);
    return TG_OK;
}

tg_status tg_pass_fold(tg_graph **g, const tg_pass_ctx *ctx) {
    const tg_graph *old = *g;
    bool *foldable = calloc((size_t)old->n_nodes + 1, sizeof *foldable);
    int32_t *frontier = NULL;
    int n_frontier = 0;
    tg_array *values = NULL;
    tg_status st = foldable ? find_foldable(old, ctx, foldable, &frontier, &n_frontier)
                            : tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    if (st == TG_OK && n_frontier > 0) {
        tg_tensor *targets = malloc((size_t)n_frontier * sizeof *targets);
        values = calloc((size_t)n_frontier, sizeof *values);
        if (!targets || !values) st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        for (int i = 0; st == TG_OK && i < n_frontier; i++) targets[i].id = frontier[i];
        /* the interpreter rounds every node to its dtype, as a run does */
        if (st == TG_OK &&
            tg_interpret(old, NULL, 0, NULL, n_frontier, targets, values, 0, NULL, 0) != TG_OK) {
            /* a value the interpreter refuses (an out-of-range index) is
             * left for run time to report; fold nothing */
            free(values);
            values = NULL;
            n_frontier = 0;
        }
        free(targets);
    }
    if (st != TG_OK || n_frontier == 0) {
        free(foldable);
        free(frontier);
        free(values);
        return st; /* nothing to fold: the same graph, identity map */
    }
    tg_rewriter rw;
    st = tg_rw_begin(&rw, old, ctx->map);
    int next = 0;
    FOR_NODES_WHILE_OK(old, id, st) {
        if (next < n_frontier && frontier[next] == id)
            st = tg_rw_constant(&rw, id, values[next++].data);
        else if (!foldable[id])
            st = tg_rw_copy(&rw, id);
        /* other foldable nodes are used only by folded ones: dropped */
    }
    for (int i = 0; i < n_frontier; i++) tg_array_free(&values[i]);
    free(values);
    free(foldable);
    free(frontier);
    return tg_rw_end(&rw, st, g);
}
