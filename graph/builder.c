/* builder.c — building graphs: nodes, sources, the op builders of tg.h,
 * tensor queries, clone and specialisation. Every op goes through
 * tg_node_add, which checks handles and runs the op's shape rule. */
#include "graph/graph_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

tg_graph *tg_graph_new(void) {
    tg_graph *g = calloc(1, sizeof *g);
    if (!g) tg_set_error(TG_ERR_NO_MEMORY, "tg_graph_new: out of memory");
    return g;
}

static void node_free(tg_node *n) {
    free(n->inputs);
    free(n->name);
    free(n->data);
}

void tg_graph_free(tg_graph *g) {
    if (!g) return;
    for (int i = 0; i < g->n_nodes; i++) node_free(&g->nodes[i]);
    free(g->nodes);
    free(g);
}

tg_status tg_graph_status(const tg_graph *g) {
    return g ? g->status : TG_ERR_INVALID_ARGUMENT;
}

const char *tg_graph_error(const tg_graph *g) {
    if (!g) return "graph is NULL";
    return g->status == TG_OK ? NULL : g->error;
}

int tg_graph_node_count(const tg_graph *g) {
    return g ? g->n_nodes : 0;
}

bool tg_tensor_valid(const tg_graph *g, tg_tensor t) {
    return g && tg_node_at(g, t);
}

tg_dtype tg_tensor_dtype(const tg_graph *g, tg_tensor t) {
    const tg_node *n = g ? tg_node_at(g, t) : NULL;
    return n ? n->dtype : TG_DTYPE_COUNT;
}

int tg_tensor_rank(const tg_graph *g, tg_tensor t) {
    const tg_node *n = g ? tg_node_at(g, t) : NULL;
    return n ? n->rank : -1;
}

int tg_tensor_shape(const tg_graph *g, tg_tensor t, int64_t *shape) {
    const tg_node *n = g ? tg_node_at(g, t) : NULL;
    if (!n) return -1;
    for (int i = 0; i < n->rank; i++) shape[i] = n->shape[i];
    return n->rank;
}

const char *tg_tensor_op(const tg_graph *g, tg_tensor t) {
    const tg_node *n = g ? tg_node_at(g, t) : NULL;
    return n ? tg_ops[n->op].name : NULL;
}

static char *dup_string(const char *s) {
    size_t len = strlen(s) + 1;
    char *d = malloc(len);
    if (d) memcpy(d, s, len);
    return d;
}

tg_status tg_tensor_set_name(tg_graph *g, tg_tensor t, const char *name) {
    tg_node *n = g ? tg_node_at(g, t) : NULL;
    if (!n) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_tensor_set_name: invalid tensor");
    if ((n->op == TG_OP_PLACEHOLDER || n->op == TG_OP_VARIABLE) && (!name || !name[0]))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "a %s needs a name", tg_ops[n->op].name);
    char *copy = NULL;
    if (name && !(copy = dup_string(name)))
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_tensor_set_name: out of memory");
    free(n->name);
    n->name = copy;
    return TG_OK;
}

const char *tg_tensor_name(const tg_graph *g, tg_tensor t) {
    const tg_node *n = g ? tg_node_at(g, t) : NULL;
    return n ? n->name : NULL;
}

tg_tensor tg_graph_find(const tg_graph *g, const char *name) {
    if (!g || !name) return TG_INVALID;
    for (int i = g->n_nodes - 1; i >= 0; i--)
        if (g->nodes[i].name && strcmp(g->nodes[i].name, name) == 0) return (tg_tensor){i};
    return TG_INVALID;
}

/* Appends a zeroed node; NULL when out of memory (the graph records it). */
static tg_node *push_node(tg_graph *g) {
    if (g->n_nodes == INT32_MAX - 1) {
        tg_graph_fail(g, TG_ERR_NO_MEMORY, "the graph has too many nodes");
        return NULL;
    }
    if (g->n_nodes == g->cap) {
        int cap = g->cap ? g->cap * 2 : 64;
        tg_node *nodes = realloc(g->nodes, (size_t)cap * sizeof *nodes);
        if (!nodes) {
            tg_graph_fail(g, TG_ERR_NO_MEMORY, "out of memory adding a node");
            return NULL;
        }
        g->nodes = nodes;
        g->cap = cap;
    }
    tg_node *n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof *n);
    return n;
}

/* Describes the inputs of an op for error messages: "f32[2,3], f32[4]". */
static void describe_inputs(const tg_graph *g, const tg_node *n, char *buf, size_t size) {
    size_t used = 0;
    buf[0] = 0;
    for (int i = 0; i < n->n_inputs && used < size; i++) {
        const tg_node *in = &g->nodes[n->inputs[i]];
        char s[96];
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "",
                                 tg_shape_str(in->dtype, in->rank, in->shape, s, sizeof s));
    }
}

/* Runs the shape rule of the node just filled in at the end of the graph
 * and commits it, or records the error. */
static tg_tensor commit_node(tg_graph *g, tg_node *n) {
    char err[640], ins[320];
    err[0] = 0;
    if (!tg_ops[n->op].shape(g, n, err, sizeof err)) {
        describe_inputs(g, n, ins, sizeof ins);
        if (n->n_inputs)
            tg_graph_fail(g, TG_ERR_SHAPE, "%s (inputs %s): %s", tg_ops[n->op].name, ins, err);
        else
            tg_graph_fail(g, TG_ERR_SHAPE, "%s%s%s%s: %s", tg_ops[n->op].name, n->name ? " '" : "",
                          n->name ? n->name : "", n->name ? "'" : "", err);
        node_free(n);
        return TG_INVALID;
    }
    return (tg_tensor){g->n_nodes++};
}

tg_tensor tg_node_add(tg_graph *g, tg_op op, int n_inputs, const tg_tensor *inputs,
                      const tg_attrs *attrs, tg_dtype dtype) {
    if (!g) {
        tg_set_error(TG_ERR_INVALID_ARGUMENT, "graph is NULL");
        return TG_INVALID;
    }
    if ((unsigned)op >= TG_OP_COUNT) {
        tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "unknown op %d", (int)op);
        return TG_INVALID;
    }
    const tg_op_info *info = &tg_ops[op];
    if (n_inputs < info->min_inputs || (info->max_inputs >= 0 && n_inputs > info->max_inputs) ||
        n_inputs > 4096) {
        if (info->max_inputs < 0)
            tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "%s: got %d inputs; expected at least %d",
                          info->name, n_inputs, info->min_inputs);
        else if (info->min_inputs == info->max_inputs)
            tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "%s: got %d inputs; expected %d", info->name,
                          n_inputs, info->min_inputs);
        else
            tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "%s: got %d inputs; expected %d to %d",
                          info->name, n_inputs, info->min_inputs, info->max_inputs);
        return TG_INVALID;
    }
    for (int i = 0; i < n_inputs; i++) {
        if (inputs[i].id < 0 || inputs[i].id >= g->n_nodes) {
            /* Invalid handles come from an earlier error, which stays the one reported. */
            tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "%s: input %d is not a valid tensor",
                          info->name, i);
            return TG_INVALID;
        }
    }
    if (op == TG_OP_CAST || op == TG_OP_ONE_HOT || op == TG_OP_IOTA) {
        if ((unsigned)dtype >= TG_DTYPE_COUNT) {
            tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "%s: bad dtype %d", info->name, (int)dtype);
            return TG_INVALID;
        }
    }
    tg_node *n = push_node(g);
    if (!n) return TG_INVALID;
    n->op = op;
    n->dtype = dtype;
    if (attrs) n->attrs = *attrs;
    n->n_inputs = n_inputs;
    if (n_inputs) {
        n->inputs = malloc((size_t)n_inputs * sizeof *n->inputs);
        if (!n->inputs) {
            tg_graph_fail(g, TG_ERR_NO_MEMORY, "out of memory");
            return TG_INVALID;
        }
        for (int i = 0; i < n_inputs; i++) n->inputs[i] = inputs[i].id;
    }
    return commit_node(g, n);
}

tg_tensor tg_source_add(tg_graph *g, tg_op op, const char *name, tg_dtype dtype, int rank,
                        const int64_t *shape, const void *data, bool trainable) {
    if (!g) {
        tg_set_error(TG_ERR_INVALID_ARGUMENT, "graph is NULL");
        return TG_INVALID;
    }
    const char *opname = (unsigned)op < TG_OP_COUNT ? tg_ops[op].name : "?";
    if (op != TG_OP_PLACEHOLDER && op != TG_OP_VARIABLE && op != TG_OP_CONSTANT) {
        tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "%s is not a source op", opname);
        return TG_INVALID;
    }
    if ((unsigned)dtype >= TG_DTYPE_COUNT || rank < 0 || rank > TG_MAX_RANK ||
        (rank > 0 && !shape)) {
        tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "%s%s%s%s: bad dtype %d or rank %d (max %d)",
                      opname, name ? " '" : "", name ? name : "", name ? "'" : "", (int)dtype, rank,
                      TG_MAX_RANK);
        return TG_INVALID;
    }
    tg_node *n = push_node(g);
    if (!n) return TG_INVALID;
    n->op = op;
    n->dtype = dtype;
    n->rank = rank;
    for (int i = 0; i < rank; i++) n->shape[i] = shape[i];
    n->attrs.trainable = trainable;
    if (name && !(n->name = dup_string(name))) {
        tg_graph_fail(g, TG_ERR_NO_MEMORY, "out of memory");
        return TG_INVALID;
    }
    if (op == TG_OP_CONSTANT) {
        int64_t count = tg_shape_count(rank, shape);
        if (count >= 0 && count < ((int64_t)1 << 40) && data) {
            n->data_bytes = (size_t)count * tg_dtype_size(dtype);
            n->data = malloc(n->data_bytes ? n->data_bytes : 1);
            if (!n->data) {
                free(n->name);
                tg_graph_fail(g, TG_ERR_NO_MEMORY, "constant: cannot allocate %zu bytes",
                              n->data_bytes);
                return TG_INVALID;
            }
            memcpy(n->data, data, n->data_bytes);
        }
    }
    return commit_node(g, n);
}

/* ---- sources ---- */

tg_tensor tg_placeholder(tg_graph *g, const char *name, tg_dtype dtype, int rank,
                         const int64_t *shape) {
    return tg_source_add(g, TG_OP_PLACEHOLDER, name, dtype, rank, shape, NULL, false);
}

tg_tensor tg_variable(tg_graph *g, const char *name, tg_dtype dtype, int rank, const int64_t *shape,
                      bool trainable) {
    return tg_source_add(g, TG_OP_VARIABLE, name, dtype, rank, shape, NULL, trainable);
}

tg_tensor tg_constant(tg_graph *g, tg_dtype dtype, int rank, const int64_t *shape,
                      const void *data) {
    if (g && !data) {
        tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "constant: data is NULL");
        return TG_INVALID;
    }
    return tg_source_add(g, TG_OP_CONSTANT, NULL, dtype, rank, shape, data, false);
}

tg_tensor tg_scalar(tg_graph *g, tg_dtype dtype, double value) {
    if ((unsigned)dtype >= TG_DTYPE_COUNT) {
        if (g) tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "scalar: bad dtype %d", (int)dtype);
        return TG_INVALID;
    }
    uint32_t storage = 0; /* large enough for one element of any dtype */
    tg_array a = {.dtype = dtype, .rank = 0, .data = &storage};
    tg_array_set(&a, 0, value);
    return tg_source_add(g, TG_OP_CONSTANT, NULL, dtype, 0, NULL, &storage, false);
}

/* ---- op builders ---- */

static tg_tensor op1(tg_graph *g, tg_op op, tg_tensor x) {
    return tg_node_add(g, op, 1, &x, NULL, TG_F32);
}

static tg_tensor op2(tg_graph *g, tg_op op, tg_tensor a, tg_tensor b) {
    tg_tensor in[2] = {a, b};
    return tg_node_add(g, op, 2, in, NULL, TG_F32);
}

tg_tensor tg_neg(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_NEG, x);
}
tg_tensor tg_abs(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_ABS, x);
}
tg_tensor tg_exp(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_EXP, x);
}
tg_tensor tg_log(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_LOG, x);
}
tg_tensor tg_sqrt(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_SQRT, x);
}
tg_tensor tg_rsqrt(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_RSQRT, x);
}
tg_tensor tg_reciprocal(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_RECIPROCAL, x);
}
tg_tensor tg_square(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_SQUARE, x);
}
tg_tensor tg_tanh(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_TANH, x);
}
tg_tensor tg_erf(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_ERF, x);
}
tg_tensor tg_gelu(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_GELU, x);
}
tg_tensor tg_gelu_tanh(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_GELU_TANH, x);
}
tg_tensor tg_relu(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_RELU, x);
}
tg_tensor tg_sigmoid(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_SIGMOID, x);
}
tg_tensor tg_silu(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_SILU, x);
}
tg_tensor tg_sin(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_SIN, x);
}
tg_tensor tg_cos(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_COS, x);
}
tg_tensor tg_stop_gradient(tg_graph *g, tg_tensor x) {
    return op1(g, TG_OP_STOP_GRADIENT, x);
}

tg_tensor tg_cast(tg_graph *g, tg_tensor x, tg_dtype dtype) {
    return tg_node_add(g, TG_OP_CAST, 1, &x, NULL, dtype);
}

tg_tensor tg_add(tg_graph *g, tg_tensor a, tg_tensor b) {
    return op2(g, TG_OP_ADD, a, b);
}
tg_tensor tg_sub(tg_graph *g, tg_tensor a, tg_tensor b) {
    return op2(g, TG_OP_SUB, a, b);
}
tg_tensor tg_mul(tg_graph *g, tg_tensor a, tg_tensor b) {
    return op2(g, TG_OP_MUL, a, b);
}
tg_tensor tg_div(tg_graph *g, tg_tensor a, tg_tensor b) {
    return op2(g, TG_OP_DIV, a, b);
}
tg_tensor tg_pow(tg_graph *g, tg_tensor a, tg_tensor b) {
    return op2(g, TG_OP_POW, a, b);
}
tg_tensor tg_maximum(tg_graph *g, tg_tensor a, tg_tensor b) {
    return op2(g, TG_OP_MAXIMUM, a, b);
}
tg_tensor tg_minimum(tg_graph *g, tg_tensor a, tg_tensor b) {
    return op2(g, TG_OP_MINIMUM, a, b);
}
tg_tensor tg_eq(tg_graph *g, tg_tensor a, tg_tensor b) {
    return op2(g, TG_OP_EQ, a, b);
}
tg_tensor tg_ne(tg_graph *g, tg_tensor a, tg_tensor b) {
    return op2(g, TG_OP_NE, a, b);
}
tg_tensor tg_lt(tg_graph *g, tg_tensor a, tg_tensor b) {
    return op2(g, TG_OP_LT, a, b);
}
tg_tensor tg_le(tg_graph *g, tg_tensor a, tg_tensor b) {
    return op2(g, TG_OP_LE, a, b);
}
tg_tensor tg_gt(tg_graph *g, tg_tensor a, tg_tensor b) {
    return op2(g, TG_OP_GT, a, b);
}
tg_tensor tg_ge(tg_graph *g, tg_tensor a, tg_tensor b) {
    return op2(g, TG_OP_GE, a, b);
}

tg_tensor tg_where(tg_graph *g, tg_tensor cond, tg_tensor a, tg_tensor b) {
    tg_tensor in[3] = {cond, a, b};
    return tg_node_add(g, TG_OP_WHERE, 3, in, NULL, TG_F32);
}

/* Fills attrs.axes from an int array; false (and a graph error) if too many. */
static bool set_axes(tg_graph *g, const char *op, tg_attrs *at, int n, const int *axes) {
    if (n < 0 || n > TG_MAX_RANK || (n > 0 && !axes)) {
        if (g)
            tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "%s: %d axes (at most %d)", op, n,
                          TG_MAX_RANK);
        return false;
    }
    at->n_axes = n;
    for (int i = 0; i < n; i++) at->axes[i] = axes[i];
    return true;
}

static tg_tensor reduce(tg_graph *g, tg_op op, tg_tensor x, int n_axes, const int *axes,
                        bool keepdims) {
    tg_attrs at = {0};
    if (!set_axes(g, tg_ops[op].name, &at, n_axes, axes)) return TG_INVALID;
    at.keepdims = keepdims;
    return tg_node_add(g, op, 1, &x, &at, TG_F32);
}

tg_tensor tg_sum(tg_graph *g, tg_tensor x, int n, const int *axes, bool keepdims) {
    return reduce(g, TG_OP_SUM, x, n, axes, keepdims);
}
tg_tensor tg_mean(tg_graph *g, tg_tensor x, int n, const int *axes, bool keepdims) {
    return reduce(g, TG_OP_MEAN, x, n, axes, keepdims);
}
tg_tensor tg_max(tg_graph *g, tg_tensor x, int n, const int *axes, bool keepdims) {
    return reduce(g, TG_OP_MAX, x, n, axes, keepdims);
}
tg_tensor tg_min(tg_graph *g, tg_tensor x, int n, const int *axes, bool keepdims) {
    return reduce(g, TG_OP_MIN, x, n, axes, keepdims);
}

tg_tensor tg_argmax(tg_graph *g, tg_tensor x, int axis, bool keepdims) {
    tg_attrs at = {.axis = axis, .keepdims = keepdims};
    return tg_node_add(g, TG_OP_ARGMAX, 1, &x, &at, TG_I32);
}

static bool set_shape_attr(tg_graph *g, const char *op, tg_attrs *at, int rank,
                           const int64_t *shape) {
    if (rank < 0 || rank > TG_MAX_RANK || (rank > 0 && !shape)) {
        if (g)
            tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "%s: rank %d (at most %d)", op, rank,
                          TG_MAX_RANK);
        return false;
    }
    at->n_shape = rank;
    for (int i = 0; i < rank; i++) at->shape[i] = shape[i];
    return true;
}

tg_tensor tg_reshape(tg_graph *g, tg_tensor x, int rank, const int64_t *shape) {
    tg_attrs at = {0};
    if (!set_shape_attr(g, "reshape", &at, rank, shape)) return TG_INVALID;
    return tg_node_add(g, TG_OP_RESHAPE, 1, &x, &at, TG_F32);
}

tg_tensor tg_permute(tg_graph *g, tg_tensor x, int rank, const int *perm) {
    tg_attrs at = {0};
    if (!set_axes(g, "permute", &at, rank, perm)) return TG_INVALID;
    return tg_node_add(g, TG_OP_PERMUTE, 1, &x, &at, TG_F32);
}

tg_tensor tg_transpose(tg_graph *g, tg_tensor x) {
    int rank = tg_tensor_rank(g, x);
    if (rank < 2) {
        if (g && rank >= 0)
            tg_graph_fail(g, TG_ERR_SHAPE, "transpose: input has rank %d; expected >= 2", rank);
        else if (g)
            tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "transpose: input is not a valid tensor");
        return TG_INVALID;
    }
    int perm[TG_MAX_RANK];
    for (int i = 0; i < rank; i++) perm[i] = i;
    perm[rank - 2] = rank - 1;
    perm[rank - 1] = rank - 2;
    return tg_permute(g, x, rank, perm);
}

tg_tensor tg_broadcast_to(tg_graph *g, tg_tensor x, int rank, const int64_t *shape) {
    tg_attrs at = {0};
    if (!set_shape_attr(g, "broadcast_to", &at, rank, shape)) return TG_INVALID;
    return tg_node_add(g, TG_OP_BROADCAST_TO, 1, &x, &at, TG_F32);
}

tg_tensor tg_slice(tg_graph *g, tg_tensor x, const int64_t *begin, const int64_t *end,
                   const int64_t *step) {
    int rank = tg_tensor_rank(g, x);
    tg_attrs at = {0};
    if (rank > 0 && (!begin || !end || !step)) {
        if (g) tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "slice: begin, end or step is NULL");
        return TG_INVALID;
    }
    at.n_slice = rank < 0 ? 0 : rank;
    for (int i = 0; i < at.n_slice; i++) {
        at.begin[i] = begin[i];
        at.end[i] = end[i];
        at.step[i] = step[i];
    }
    return tg_node_add(g, TG_OP_SLICE, 1, &x, &at, TG_F32);
}

tg_tensor tg_concat(tg_graph *g, int n, const tg_tensor *xs, int axis) {
    tg_attrs at = {.axis = axis};
    return tg_node_add(g, TG_OP_CONCAT, n, xs, &at, TG_F32);
}

tg_tensor tg_pad(tg_graph *g, tg_tensor x, const int64_t *lo, const int64_t *hi, double value) {
    int rank = tg_tensor_rank(g, x);
    tg_attrs at = {.value = value};
    if (rank > 0 && (!lo || !hi)) {
        if (g) tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "pad: lo or hi is NULL");
        return TG_INVALID;
    }
    at.n_slice = rank < 0 ? 0 : rank;
    for (int i = 0; i < at.n_slice; i++) {
        at.lo[i] = lo[i];
        at.hi[i] = hi[i];
    }
    return tg_node_add(g, TG_OP_PAD, 1, &x, &at, TG_F32);
}

tg_tensor tg_gather(tg_graph *g, tg_tensor x, tg_tensor indices, int axis) {
    tg_tensor in[2] = {x, indices};
    tg_attrs at = {.axis = axis};
    return tg_node_add(g, TG_OP_GATHER, 2, in, &at, TG_F32);
}

tg_tensor tg_scatter_add(tg_graph *g, tg_tensor target, tg_tensor indices, tg_tensor updates,
                         int axis) {
    tg_tensor in[3] = {target, indices, updates};
    tg_attrs at = {.axis = axis};
    return tg_node_add(g, TG_OP_SCATTER_ADD, 3, in, &at, TG_F32);
}

tg_tensor tg_one_hot(tg_graph *g, tg_tensor indices, int64_t depth, tg_dtype dtype) {
    tg_attrs at = {.depth = depth};
    return tg_node_add(g, TG_OP_ONE_HOT, 1, &indices, &at, dtype);
}

tg_tensor tg_iota(tg_graph *g, tg_dtype dtype, int rank, const int64_t *shape, int axis) {
    tg_attrs at = {.axis = axis};
    if (!set_shape_attr(g, "iota", &at, rank, shape)) return TG_INVALID;
    return tg_node_add(g, TG_OP_IOTA, 0, NULL, &at, dtype);
}

tg_tensor tg_matmul(tg_graph *g, tg_tensor a, tg_tensor b, bool transpose_a, bool transpose_b) {
    tg_tensor in[2] = {a, b};
    tg_attrs at = {.transpose_a = transpose_a, .transpose_b = transpose_b};
    return tg_node_add(g, TG_OP_MATMUL, 2, in, &at, TG_F32);
}

tg_tensor tg_conv1d(tg_graph *g, tg_tensor x, tg_tensor w, int stride, int padding, int dilation) {
    tg_tensor in[2] = {x, w};
    tg_attrs at = {.stride = stride, .padding = padding, .dilation = dilation};
    return tg_node_add(g, TG_OP_CONV1D, 2, in, &at, TG_F32);
}

tg_tensor tg_softmax(tg_graph *g, tg_tensor x, int axis) {
    tg_attrs at = {.axis = axis};
    return tg_node_add(g, TG_OP_SOFTMAX, 1, &x, &at, TG_F32);
}

tg_tensor tg_log_softmax(tg_graph *g, tg_tensor x, int axis) {
    tg_attrs at = {.axis = axis};
    return tg_node_add(g, TG_OP_LOG_SOFTMAX, 1, &x, &at, TG_F32);
}

tg_tensor tg_layer_norm(tg_graph *g, tg_tensor x, tg_tensor weight, tg_tensor bias, double eps) {
    tg_tensor in[3] = {x, weight, bias};
    tg_attrs at = {.eps = eps};
    return tg_node_add(g, TG_OP_LAYER_NORM, 3, in, &at, TG_F32);
}

tg_tensor tg_attention(tg_graph *g, tg_tensor q, tg_tensor k, tg_tensor v, tg_tensor mask,
                       bool causal, double scale) {
    tg_tensor in[4] = {q, k, v, mask};
    tg_attrs at = {.causal = causal, .scale = scale > 0 ? scale : 0, .has_mask = mask.id >= 0};
    return tg_node_add(g, TG_OP_ATTENTION, at.has_mask ? 4 : 3, in, &at, TG_F32);
}

tg_tensor tg_cross_entropy(tg_graph *g, tg_tensor logits, tg_tensor labels, int64_t ignore_index) {
    tg_tensor in[2] = {logits, labels};
    tg_attrs at = {.ignore_index = ignore_index};
    return tg_node_add(g, TG_OP_CROSS_ENTROPY, 2, in, &at, TG_F32);
}

tg_tensor tg_assign(tg_graph *g, tg_tensor variable, tg_tensor value) {
    return op2(g, TG_OP_ASSIGN, variable, value);
}

tg_tensor tg_slice_update(tg_graph *g, tg_tensor variable, tg_tensor update, tg_tensor start) {
    tg_tensor in[3] = {variable, update, start};
    return tg_node_add(g, TG_OP_SLICE_UPDATE, 3, in, NULL, TG_F32);
}

/* ---- clone and specialise ---- */

/* Rebuilds g node by node into a new graph; placeholders listed in
 * `placeholders` get `shapes`. Node ids are kept. */
static tg_graph *rebuild(const tg_graph *g, int n, const tg_tensor *placeholders,
                         const int64_t (*shapes)[TG_MAX_RANK]) {
    if (!g) {
        tg_set_error(TG_ERR_INVALID_ARGUMENT, "graph is NULL");
        return NULL;
    }
    if (g->status != TG_OK) {
        tg_set_error(g->status, "the graph has an error: %s", g->error);
        return NULL;
    }
    tg_graph *out = tg_graph_new();
    if (!out) return NULL;
    tg_tensor ins[TG_MAX_INPUTS_INLINE * 2];
    for (int i = 0; i < g->n_nodes; i++) {
        const tg_node *src = &g->nodes[i];
        tg_tensor t;
        if (tg_ops[src->op].klass == TG_CLASS_SOURCE) {
            const int64_t *shape = src->shape;
            for (int k = 0; k < n; k++)
                if (placeholders[k].id == i) shape = shapes[k];
            t = tg_source_add(out, src->op, src->name, src->dtype, src->rank, shape, src->data,
                              src->attrs.trainable);
        } else {
            tg_tensor *in = ins;
            if (src->n_inputs > (int)(sizeof ins / sizeof ins[0])) {
                in = malloc((size_t)src->n_inputs * sizeof *in);
                if (!in) {
                    tg_graph_free(out);
                    tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
                    return NULL;
                }
            }
            for (int k = 0; k < src->n_inputs; k++) in[k].id = src->inputs[k];
            t = tg_node_add(out, src->op, src->n_inputs, in, &src->attrs, src->dtype);
            if (in != ins) free(in);
            if (t.id >= 0 && src->name) tg_tensor_set_name(out, t, src->name);
        }
        if (t.id != i) {
            tg_set_error(out->status ? out->status : TG_ERR_SHAPE, "%s", out->error);
            tg_graph_free(out);
            return NULL;
        }
    }
    return out;
}

tg_graph *tg_graph_clone(const tg_graph *g) {
    return rebuild(g, 0, NULL, NULL);
}

tg_graph *tg_graph_specialize(const tg_graph *g, int n, const tg_tensor *placeholders,
                              const int64_t (*shapes)[TG_MAX_RANK]) {
    for (int k = 0; k < n; k++) {
        const tg_node *p = g ? tg_node_at(g, placeholders[k]) : NULL;
        if (!p || p->op != TG_OP_PLACEHOLDER) {
            tg_set_error(TG_ERR_INVALID_ARGUMENT,
                         "tg_graph_specialize: tensor %d is not a placeholder", placeholders[k].id);
            return NULL;
        }
        for (int d = 0; d < p->rank; d++)
            if (shapes[k][d] < 0 || (p->shape[d] >= 0 && p->shape[d] != shapes[k][d])) {
                char s0[96], s1[96];
                tg_set_error(TG_ERR_SHAPE, "placeholder '%s' is %s; cannot feed %s", p->name,
                             tg_shape_str(p->dtype, p->rank, p->shape, s0, sizeof s0),
                             tg_shape_str(p->dtype, p->rank, shapes[k], s1, sizeof s1));
                return NULL;
            }
    }
    return rebuild(g, n, placeholders, shapes);
}
