/* manager.c — the pass manager: the one table of passes, running them in
 * order on a copy of the graph while carrying the targets across the
 * renumbering, dumping the IR through the caller's callback, and the
 * statistics behind `graph dump --stats`. */
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

const tg_pass_info tg_passes[] = {
    /* first: its when_off lowering feeds every pass below, and
     * permute_matmul's transpose_a on attention ops comes after it */
    {"flash_attention",
     "attention ops stay whole, each one flash kernel (off: lowered to matmuls, softmax and "
     "elementwise ops that hold the [Tq, Tk] scores)",
     NULL, tg_lower_attention},
    {"fold", "constant folding: nodes computed only from constants become constants", tg_pass_fold,
     NULL},
    {"algebra", "exact identities: x*1, x+0, x-0, x/1, neg(neg x), permute/reshape chains, splats",
     tg_pass_algebra, NULL},
    {"permute_matmul", "a permute swapping the last two axes of a matmul input -> transpose flag",
     tg_pass_permute_matmul, NULL},
    {"gelu_derivative",
     "where x only feeds gelu and gelu_grad: gelu_grad(x, dy) -> dy * a derivative computed "
     "beside gelu(x) (the forward kernel stores it in place of x)",
     tg_pass_gelu_derivative, NULL},
    {"cse", "common subexpressions: identical nodes become one", tg_pass_cse, NULL},
    {"dce", "dead code: keep only what the targets and target ops need", tg_pass_dce, NULL},
    {"fusion", "partition the graph into kernels (annotates; nodes unchanged)", tg_pass_fusion,
     NULL},
};
const int tg_n_passes = (int)(sizeof tg_passes / sizeof tg_passes[0]);

int tg_pass_count(void) {
    return tg_n_passes;
}

const char *tg_pass_name(int i) {
    return i >= 0 && i < tg_n_passes ? tg_passes[i].name : NULL;
}

const char *tg_pass_description(int i) {
    return i >= 0 && i < tg_n_passes ? tg_passes[i].description : NULL;
}

static int find_pass(const char *name, size_t len) {
    for (int i = 0; i < tg_n_passes; i++)
        if (strlen(tg_passes[i].name) == len && memcmp(tg_passes[i].name, name, len) == 0) return i;
    return -1;
}

static tg_status unknown_pass(const char *what, const char *name, size_t len) {
    char known[256] = "";
    size_t used = 0;
    for (int i = 0; i < tg_n_passes && used < sizeof known; i++)
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "",
                                 tg_passes[i].name);
    return tg_set_error(TG_ERR_INVALID_ARGUMENT, "%s: unknown pass '%.*s' (passes: %s)", what,
                        (int)len, name, known);
}

/* Parses the comma-separated `disable` list into off[]. */
static tg_status parse_disabled(const char *list, bool *off) {
    for (const char *p = list; p && *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > 0) {
            int i = find_pass(p, len);
            if (i < 0) return unknown_pass("disable", p, len);
            off[i] = true;
        }
        p += len + (end ? 1 : 0);
    }
    return TG_OK;
}

/* ---- targets ---- */

static tg_status check_ids(const tg_graph *g, int n, const int32_t *ids, const char *what) {
    if (n < 0 || (n > 0 && !ids))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_optimize: bad %s", what);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= g->n_nodes)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_optimize: %s[%d] is not a node", what,
                                i);
    return TG_OK;
}

static bool is_state(const tg_node *n) {
    return tg_ops[n->op].klass == TG_CLASS_STATE || tg_ops[n->op].writes != 0;
}

/* No targets given: every unused non-source node is a target (state ops
 * are target ops, used or not). */
static tg_status default_targets(const tg_graph *g, tg_pass_result *r, int *n_targets,
                                 int *n_target_ops) {
    bool *used = calloc((size_t)g->n_nodes + 1, sizeof *used);
    r->targets = malloc(((size_t)g->n_nodes + 1) * sizeof *r->targets);
    r->target_ops = malloc(((size_t)g->n_nodes + 1) * sizeof *r->target_ops);
    if (!used || !r->targets || !r->target_ops) {
        free(used);
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    }
    for (int id = 0; id < g->n_nodes; id++)
        for (int k = 0; k < g->nodes[id].n_inputs; k++) used[g->nodes[id].inputs[k]] = true;
    *n_targets = *n_target_ops = 0;
    for (int id = 0; id < g->n_nodes; id++) {
        const tg_node *n = &g->nodes[id];
        if (is_state(n))
            r->target_ops[(*n_target_ops)++] = id;
        else if (!used[id] && tg_ops[n->op].klass != TG_CLASS_SOURCE)
            r->targets[(*n_targets)++] = id;
    }
    free(used);
    return TG_OK;
}

static tg_status copy_targets(int n, const int32_t *ids, int32_t **out) {
    *out = malloc(((size_t)n + 1) * sizeof **out);
    if (!*out) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    if (n) memcpy(*out, ids, (size_t)n * sizeof **out);
    return TG_OK;
}

static tg_status remap(int n, int32_t *ids, const int32_t *map, const char *pass) {
    for (int i = 0; i < n; i++) {
        if (map[ids[i]] < 0)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "pass %s removed node %d, a target (a bug in the pass)", pass,
                                ids[i]);
        ids[i] = map[ids[i]];
    }
    return TG_OK;
}

/* ---- running ---- */

void tg_pass_result_free(tg_pass_result *r) {
    if (!r) return;
    tg_graph_free(r->g);
    free(r->targets);
    free(r->target_ops);
    tg_partition_free(r->partition);
    memset(r, 0, sizeof *r);
}

static tg_status dump(const tg_pass_options *o, const char *pass, const tg_graph *g,
                      const tg_partition *part) {
    char *text = part ? tg_partition_to_text(g, part) : tg_graph_to_text(g);
    if (!text) return TG_ERR_NO_MEMORY;
    o->dump(o->dump_user, pass, text);
    free(text);
    return TG_OK;
}

static bool dump_all(const tg_pass_options *o) {
    const char *env = getenv("TG_DUMP_IR");
    return o->dump && (o->dump_all || (env && strcmp(env, "1") == 0));
}

/* One pass (fn: its run or its when_off) on r->g, carrying the targets. */
static tg_status run_one(const tg_pass_info *p, tg_pass_fn fn, const tg_pass_options *o,
                         int n_targets, int n_target_ops, tg_pass_result *r) {
    int n_nodes = r->g->n_nodes;
    int32_t *map = malloc(((size_t)n_nodes + 1) * sizeof *map);
    if (!map) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < n_nodes; i++) map[i] = i;
    tg_partition *part = NULL;
    tg_pass_ctx ctx = {
        .n_targets = n_targets,
        .targets = r->targets,
        .n_target_ops = n_target_ops,
        .target_ops = r->target_ops,
        .fold_max_elements = o->fold_max_elements > 0 ? o->fold_max_elements : TG_FOLD_MAX_ELEMENTS,
        .limits = {o->fusion_max_inputs > 0 ? o->fusion_max_inputs : TG_FUSION_MAX_INPUTS,
                   o->fusion_max_outputs > 0 ? o->fusion_max_outputs : TG_FUSION_MAX_OUTPUTS,
                   o->fusion_max_optimizer_updates > 0 ? o->fusion_max_optimizer_updates : 0,
                   o->fusion_ce_pair_in_place},
        .map = map,
        .partition = &part,
    };
    const tg_graph *before = r->g;
    tg_status st = fn ? fn(&r->g, &ctx) : TG_OK;
    if (st == TG_OK) st = remap(n_targets, r->targets, map, p->name);
    if (st == TG_OK) st = remap(n_target_ops, r->target_ops, map, p->name);
    free(map);
    if (st != TG_OK) {
        tg_partition_free(part);
        return st;
    }
    /* a partition describes the graph it was made for */
    if (part || r->g != before) {
        tg_partition_free(r->partition);
        r->partition = part;
    }
    if (o->dump && (dump_all(o) || (o->dump_after && strcmp(o->dump_after, p->name) == 0)))
        st = dump(o, p->name, r->g, r->partition);
    return st;
}

tg_status tg_passes_run(const tg_graph *g, int n_targets, const int32_t *targets, int n_target_ops,
                        const int32_t *target_ops, const tg_pass_options *opts,
                        tg_pass_result *out) {
    static const tg_pass_options no_options;
    const tg_pass_options *o = opts ? opts : &no_options;
    memset(out, 0, sizeof *out);
    if (!g) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_optimize: graph is NULL");
    if (g->status != TG_OK)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_optimize: the graph has an error: %s",
                            g->error);
    bool off[64] = {false};
    tg_status st = parse_disabled(o->disable, off);
    if (st == TG_OK && o->dump_after && find_pass(o->dump_after, strlen(o->dump_after)) < 0)
        st = unknown_pass("dump after", o->dump_after, strlen(o->dump_after));
    if (st == TG_OK) st = check_ids(g, n_targets, targets, "targets");
    if (st == TG_OK) st = check_ids(g, n_target_ops, target_ops, "target_ops");
    if (st != TG_OK) return st;

    if (n_targets == 0 && n_target_ops == 0) {
        st = default_targets(g, out, &n_targets, &n_target_ops);
    } else {
        st = copy_targets(n_targets, targets, &out->targets);
        if (st == TG_OK) st = copy_targets(n_target_ops, target_ops, &out->target_ops);
    }
    if (st == TG_OK && !(out->g = tg_graph_clone(g))) st = TG_ERR_NO_MEMORY;
    if (st == TG_OK && dump_all(o)) st = dump(o, "input", out->g, NULL);
    for (int i = 0; st == TG_OK && i < tg_n_passes; i++) {
        if (off[i] && !tg_passes[i].when_off) {
            /* --after=PASS of a disabled pass shows the IR where it would run */
            if (o->dump && o->dump_after && strcmp(o->dump_after, tg_passes[i].name) == 0)
                st = dump(o, tg_passes[i].name, out->g, out->partition);
            continue;
        }
        st = run_one(&tg_passes[i], off[i] ? tg_passes[i].when_off : tg_passes[i].run, o, n_targets,
                     n_target_ops, out);
    }
    if (st != TG_OK) tg_pass_result_free(out);
    return st;
}

/* ---- the public entry point and statistics ---- */

/* Dispatches of g without fusion, and the bytes of their results (-1 if a
 * shape is dynamic). */
static tg_status count_dispatches(const tg_graph *g, int n_targets, const int32_t *targets,
                                  int n_target_ops, const int32_t *target_ops, int *dispatches,
                                  int64_t *bytes) {
    bool *needed = tg_needed_nodes(g, n_targets, targets, n_target_ops, target_ops);
    if (!needed) return TG_ERR_NO_MEMORY;
    *dispatches = 0;
    *bytes = 0;
    for (int id = 0; id < g->n_nodes; id++) {
        const tg_node *n = &g->nodes[id];
        if (!needed[id] || tg_ops[n->op].klass == TG_CLASS_SOURCE || tg_node_is_alias(n)) continue;
        (*dispatches)++;
        int64_t count = tg_shape_count(n->rank, n->shape);
        if (count < 0 || *bytes < 0)
            *bytes = -1;
        else
            *bytes += count * (int64_t)tg_dtype_size(n->dtype);
    }
    free(needed);
    return TG_OK;
}

static void count_classes(const tg_graph *g, tg_pass_stats *s) {
    for (int id = 0; id < g->n_nodes; id++) {
        const tg_node *n = &g->nodes[id];
        if (tg_node_is_alias(n)) s->aliases++;
        switch (tg_ops[n->op].klass) {
        case TG_CLASS_SOURCE: s->sources++; break;
        case TG_CLASS_ELEMENTWISE: s->elementwise++; break;
        case TG_CLASS_REDUCTION: s->reductions++; break;
        case TG_CLASS_MATMUL: s->matmuls++; break;
        case TG_CLASS_MOVEMENT: s->movements++; break;
        case TG_CLASS_OPAQUE: s->opaque++; break;
        case TG_CLASS_STATE: s->state++; break;
        }
    }
}

static void count_kernels(const tg_partition *p, tg_pass_stats *s) {
    s->dispatches_fused = p->n_kernels;
    for (int k = 0; k < p->n_kernels; k++) {
        switch (p->kernels[k].kind) {
        case TG_CLASS_REDUCTION: s->kernels_reduction++; break;
        case TG_CLASS_MATMUL: s->kernels_matmul++; break;
        case TG_CLASS_OPAQUE: s->kernels_opaque++; break;
        case TG_CLASS_STATE: s->kernels_state++; break;
        case TG_CLASS_MOVEMENT: s->kernels_movement++; break;
        default: s->kernels_elementwise++; break;
        }
    }
}

static tg_status fill_stats(const tg_graph *in, int n_targets, const int32_t *targets,
                            int n_target_ops, const int32_t *target_ops, const tg_pass_result *r,
                            tg_pass_stats *s) {
    memset(s, 0, sizeof *s);
    s->nodes_before = in->n_nodes;
    s->nodes_after = r->g->n_nodes;
    count_classes(r->g, s);
    int64_t ignored;
    tg_status st = count_dispatches(in, n_targets, targets, n_target_ops, target_ops,
                                    &s->dispatches_input, &ignored);
    if (st == TG_OK)
        st = count_dispatches(r->g, n_targets, r->targets, n_target_ops, r->target_ops,
                              &s->dispatches_unfused, &s->intermediate_bytes);
    s->dispatches_fused = s->dispatches_unfused;
    if (r->partition) count_kernels(r->partition, s);
    return st;
}

tg_status tg_optimize(const tg_graph *g, int n_targets, const tg_tensor *targets, int n_target_ops,
                      const tg_tensor *target_ops, const tg_pass_options *opts, tg_graph **out,
                      tg_tensor *new_targets, tg_tensor *new_target_ops, tg_pass_stats *stats) {
    if (out) *out = NULL;
    if (!out || (n_targets > 0 && (!targets || !new_targets)) ||
        (n_target_ops > 0 && (!target_ops || !new_target_ops)) || n_targets < 0 || n_target_ops < 0)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_optimize: bad arguments");
    /* tg_tensor is a struct of one int32_t; copy to plain ids */
    int32_t *ids = malloc(((size_t)n_targets + (size_t)n_target_ops + 1) * sizeof *ids);
    if (!ids) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < n_targets; i++) ids[i] = targets[i].id;
    for (int i = 0; i < n_target_ops; i++) ids[n_targets + i] = target_ops[i].id;
    tg_pass_result r;
    tg_status st = tg_passes_run(g, n_targets, ids, n_target_ops, ids + n_targets, opts, &r);
    if (st == TG_OK && stats) {
        /* with no targets given, the defaults the manager chose */
        bool defaults = n_targets == 0 && n_target_ops == 0;
        int nt = n_targets, no = n_target_ops;
        if (defaults) {
            tg_pass_result tmp = {0};
            st = default_targets(g, &tmp, &nt, &no);
            if (st == TG_OK) st = fill_stats(g, nt, tmp.targets, no, tmp.target_ops, &r, stats);
            tg_pass_result_free(&tmp);
        } else {
            st = fill_stats(g, nt, ids, no, ids + n_targets, &r, stats);
        }
    }
    free(ids);
    if (st != TG_OK) {
        tg_pass_result_free(&r);
        return st;
    }
    for (int i = 0; i < n_targets; i++) new_targets[i].id = r.targets[i];
    for (int i = 0; i < n_target_ops; i++) new_target_ops[i].id = r.target_ops[i];
    *out = r.g;
    r.g = NULL;
    tg_pass_result_free(&r);
    return TG_OK;
}
