/* passes.h — the pass manager, the passes and the fusion partition, as
 * the executor and the tests see them. Internal to tg (the public face is
 * tg_optimize in tg.h); docs/passes.md describes every pass.
 *
 * A pass takes a graph and returns the same graph or a new one. Passes
 * that rebuild the graph renumber its nodes; they report old -> new ids
 * in ctx->map, and the manager carries the targets across. */
#ifndef TG_PASSES_H
#define TG_PASSES_H

#include "graph/graph_internal.h"

/* Defaults of the pass options (tg_pass_options in tg.h). */
#define TG_FOLD_MAX_ELEMENTS 65536
#define TG_FUSION_MAX_INPUTS 16 /* = TG_KERNEL_MAX_IO of backend/kernel.h */
#define TG_FUSION_MAX_OUTPUTS 16
/* extra inputs of a matmul/conv1d epilogue (= TG_MM_MAX_EXTRA of
 * backend/gen_matmul.h) */
#define TG_FUSION_MAX_EXTRA 4

/* ------------------------------------------------------------------ */
/* The fusion partition                                                */
/* ------------------------------------------------------------------ */

/* One kernel: a connected set of nodes run by one dispatch. Its fields
 * fill backend/kernel.h's tg_kernel directly. */
typedef struct tg_part_kernel {
    int32_t root;     /* the node that sets the kernel's kind (matmul, a reduction,
                         softmax, ...); for an elementwise kernel its last node */
    tg_op_class kind; /* the root's class: ELEMENTWISE (also movement-only
                         kernels), REDUCTION, MATMUL, OPAQUE or STATE */
    int n_nodes;      /* members, ascending ids (a topological order) */
    int32_t *nodes;
    int n_inputs; /* nodes outside the kernel its members read (sources,
                     aliases and other kernels' outputs), ascending ids */
    int32_t *inputs;
    int n_outputs; /* members read outside the kernel or targets, ascending */
    int32_t *outputs;
} tg_part_kernel;

typedef struct tg_partition {
    int n_nodes;             /* of the graph it was made for */
    int32_t *kernel_of;      /* per node: its kernel, or -1 (sources, aliases, unneeded) */
    int n_kernels;           /* = dispatches when fused */
    tg_part_kernel *kernels; /* in a topological order of the kernels */
    int unfused;             /* dispatches without fusion: needed nodes that are
                                neither sources nor aliases */
} tg_partition;

typedef struct tg_fusion_limits {
    int max_inputs;  /* external inputs per kernel */
    int max_outputs; /* outputs per kernel */
    /* adamw updates per multi-tensor optimizer kernel instead of the
     * limits above (0: those decide); the caller checked the bindings */
    int max_optimizer_updates;
    /* cross_entropy and its gradient share a kernel even where the gradient
     * writes over the logits (tg_pass_options.fusion_ce_pair_in_place) */
    bool ce_pair_in_place;
} tg_fusion_limits;

void tg_partition_free(tg_partition *p);

/* Partitions the nodes of g that the targets and target ops need. */
tg_status tg_partition_graph(const tg_graph *g, int n_targets, const int32_t *targets,
                             int n_target_ops, const int32_t *target_ops,
                             const tg_fusion_limits *limits, tg_partition **out);

/* part[i]: the connected part of members[i] among the n members (joined
 * by reads, through aliases), numbered 0.. in order of first member;
 * returns the number of parts (0 on out of memory). Matmul groups
 * (backend/gen_group.c), their split below and the executor's in-place
 * rule use it. */
int tg_connected_parts(const tg_graph *g, int n, const int32_t *members, int *part);

/* Kernel k of p split into its connected parts (members joined by reads,
 * through aliases), each a kernel of its own in k's place, in *out
 * (NULL when k has one part). A group of sibling matmuls
 * (backend/gen_group.c) becomes its products again: the executor does
 * this where a group holds the arena's peak and apart they need less. */
tg_status tg_partition_split_kernel(const tg_graph *g, const tg_partition *p, int k,
                                    tg_partition **out);

/* The text IR of g grouped by kernel (docs/ir.md, "Fused IR"): sources
 * first, then each kernel as a comment line and its member nodes indented,
 * in kernel order. It still parses as plain IR. malloc'ed; NULL on error. */
char *tg_partition_to_text(const tg_graph *g, const tg_partition *p);

/* Memory views that cost no dispatch (the executor binds their input's
 * memory): reshape, stop_gradient. */
bool tg_node_is_alias(const tg_node *n);

/* ------------------------------------------------------------------ */
/* Passes                                                              */
/* ------------------------------------------------------------------ */

typedef struct tg_pass_ctx {
    /* targets and target ops as ids of the graph the pass receives */
    int n_targets;
    const int32_t *targets;
    int n_target_ops;
    const int32_t *target_ops;
    int64_t fold_max_elements;
    tg_fusion_limits limits;
    /* out: a pass that returns a new graph sets map[old id] = new id, or -1
     * for a node it removed (never a target); the manager sizes it to the
     * old graph and fills it with the identity */
    int32_t *map;
    /* out: the fusion pass stores its partition here (the manager owns it) */
    tg_partition **partition;
} tg_pass_ctx;

typedef tg_status (*tg_pass_fn)(tg_graph **g, const tg_pass_ctx *ctx);

typedef struct tg_pass_info {
    const char *name;
    const char *description; /* one line */
    tg_pass_fn run;          /* NULL: the graph as it is already is the pass's result */
    tg_pass_fn when_off;     /* what runs in its place when disabled (NULL: nothing) */
} tg_pass_info;

/* The passes in the order they run (passes/manager.c). */
extern const tg_pass_info tg_passes[];
extern const int tg_n_passes;

tg_status tg_pass_dce(tg_graph **g, const tg_pass_ctx *ctx);
tg_status tg_pass_cse(tg_graph **g, const tg_pass_ctx *ctx);
tg_status tg_pass_fold(tg_graph **g, const tg_pass_ctx *ctx);
tg_status tg_pass_algebra(tg_graph **g, const tg_pass_ctx *ctx);
tg_status tg_pass_permute_matmul(tg_graph **g, const tg_pass_ctx *ctx);
tg_status tg_pass_gelu_derivative(tg_graph **g, const tg_pass_ctx *ctx);
tg_status tg_pass_fusion(tg_graph **g, const tg_pass_ctx *ctx);
/* flash_attention's when_off: attention ops -> matmul, softmax and
 * elementwise ops (passes/attention.c) */
tg_status tg_lower_attention(tg_graph **g, const tg_pass_ctx *ctx);

/* What tg_passes_run returns. */
typedef struct tg_pass_result {
    tg_graph *g;      /* the optimised graph */
    int32_t *targets; /* the targets' ids in g */
    int32_t *target_ops;
    tg_partition *partition; /* NULL when the fusion pass is disabled */
} tg_pass_result;

void tg_pass_result_free(tg_pass_result *r);

/* Runs the pipeline on a copy of g (g is not changed). opts may be NULL;
 * see tg_pass_options in tg.h for the dump rules. */
tg_status tg_passes_run(const tg_graph *g, int n_targets, const int32_t *targets, int n_target_ops,
                        const int32_t *target_ops, const tg_pass_options *opts,
                        tg_pass_result *out);

/* ------------------------------------------------------------------ */
/* Helpers the passes share (passes/rewrite.c)                          */
/* ------------------------------------------------------------------ */

/* needed[i]: node i is needed by a target or target op (ids of g). */
bool *tg_needed_nodes(const tg_graph *g, int n_targets, const int32_t *targets, int n_target_ops,
                      const int32_t *target_ops);

/* Users of every node: user lists in CSR form. */
typedef struct tg_users {
    int32_t *start; /* n_nodes + 1 offsets into list */
    int32_t *list;
} tg_users;
tg_status tg_users_build(const tg_graph *g, tg_users *u);
void tg_users_free(tg_users *u);
static inline int tg_users_count(const tg_users *u, int id) {
    return u->start[id + 1] - u->start[id];
}

/* Rebuilding a graph node by node into a new one, remembering where each
 * old node went. A pass walks the old nodes in order and for each either
 * copies it, replaces it by a new node or by another (already emitted)
 * node, or drops it. */
typedef struct tg_rewriter {
    const tg_graph *old;
    tg_graph *g;  /* the new graph */
    int32_t *map; /* = ctx->map: old id -> new id, -1 until emitted */
} tg_rewriter;

tg_status tg_rw_begin(tg_rewriter *rw, const tg_graph *old, int32_t *map);
/* Copies old node `id` with its inputs mapped. */
tg_status tg_rw_copy(tg_rewriter *rw, int id);
/* Emits a node for old node `id` with another op, inputs (ids of the new
 * graph) or attrs; keeps the old node's name. */
tg_status tg_rw_emit(tg_rewriter *rw, int id, tg_op op, int n_inputs, const int32_t *new_inputs,
                     const tg_attrs *attrs, tg_dtype dtype);
/* Emits a constant for old node `id` (its dtype, shape and name). */
tg_status tg_rw_constant(tg_rewriter *rw, int id, const void *data);
/* Old node `id` becomes node `new_id` of the new graph. */
static inline void tg_rw_replace(tg_rewriter *rw, int id, int32_t new_id) {
    rw->map[id] = new_id;
}
/* The new-graph node old node `id` became (emitted already). */
static inline const tg_node *tg_rw_node(const tg_rewriter *rw, int id) {
    return &rw->g->nodes[rw->map[id]];
}
/* Old node `id` becomes t, built on rw->g with the graph API: an error
 * "<what> node <id>: <the graph's error>" if building failed, else t takes
 * the old node's name (as tg_rw_emit). */
tg_status tg_rw_built(tg_rewriter *rw, int id, tg_tensor t, const char *what);
/* Hands the new graph to *g (freeing the old one) or cleans up on error. */
tg_status tg_rw_end(tg_rewriter *rw, tg_status st, tg_graph **g);

/* attention, attention_lse or attention_grad_q/k/v */
bool tg_op_is_attention(tg_op op);
/* x (rank >= 3) with axes rank-3 and rank-2 swapped: [..., T, H, D] <->
 * [..., H, T, D], the layouts of transpose_a on attention ops. */
tg_tensor tg_swap_heads_time(tg_graph *g, tg_tensor x);

/* The value of element i of a constant node, as double. */
double tg_constant_get(const tg_node *n, int64_t i);
/* A constant whose every element equals v (integers compare exactly). */
bool tg_constant_all(const tg_node *n, double v);

#endif
