/* graph_internal.h — the IR as every part of tg sees it: nodes, the op
 * table, attributes, and the helpers the builder, the text IR, the
 * interpreter and the passes share. Not installed. */
#ifndef TG_GRAPH_INTERNAL_H
#define TG_GRAPH_INTERNAL_H

#include "tg.h"

#include <stdarg.h>
#include <stdio.h>

/* Ops. The order is the order of the op table (graph/ops.c). */
typedef enum tg_op {
    /* sources */
    TG_OP_PLACEHOLDER,
    TG_OP_VARIABLE,
    TG_OP_CONSTANT,
    /* elementwise unary */
    TG_OP_NEG,
    TG_OP_ABS,
    TG_OP_EXP,
    TG_OP_LOG,
    TG_OP_SQRT,
    TG_OP_RSQRT,
    TG_OP_RECIPROCAL,
    TG_OP_SQUARE,
    TG_OP_TANH,
    TG_OP_ERF,
    TG_OP_GELU,
    TG_OP_GELU_TANH,
    TG_OP_RELU,
    TG_OP_SIGMOID,
    TG_OP_SILU,
    TG_OP_SIN,
    TG_OP_COS,
    TG_OP_CAST,
    TG_OP_STOP_GRADIENT,
    /* elementwise binary */
    TG_OP_ADD,
    TG_OP_SUB,
    TG_OP_MUL,
    TG_OP_DIV,
    TG_OP_POW,
    TG_OP_MAXIMUM,
    TG_OP_MINIMUM,
    TG_OP_EQ,
    TG_OP_NE,
    TG_OP_LT,
    TG_OP_LE,
    TG_OP_GT,
    TG_OP_GE,
    TG_OP_WHERE,
    /* reductions */
    TG_OP_SUM,
    TG_OP_MEAN,
    TG_OP_MAX,
    TG_OP_MIN,
    TG_OP_ARGMAX,
    /* data movement */
    TG_OP_RESHAPE,
    TG_OP_PERMUTE,
    TG_OP_BROADCAST_TO,
    TG_OP_SLICE,
    TG_OP_CONCAT,
    TG_OP_PAD,
    TG_OP_GATHER,
    TG_OP_SCATTER_ADD,
    TG_OP_ONE_HOT,
    TG_OP_IOTA,
    /* linear algebra */
    TG_OP_MATMUL,
    TG_OP_CONV1D,
    /* composites */
    TG_OP_SOFTMAX,
    TG_OP_LOG_SOFTMAX,
    TG_OP_LAYER_NORM,
    TG_OP_ATTENTION,
    TG_OP_CROSS_ENTROPY,
    /* state */
    TG_OP_ASSIGN,
    TG_OP_SLICE_UPDATE,
    /* backward ops, made by tg_gradients (autodiff/) */
    TG_OP_GELU_GRAD,          /* (x, dy) -> dx, elementwise */
    TG_OP_GELU_TANH_GRAD,     /* (x, dy) -> dx, elementwise */
    TG_OP_SOFTMAX_GRAD,       /* (y, dy; axis) -> dx, y = softmax(x) */
    TG_OP_LOG_SOFTMAX_GRAD,   /* (y, dy; axis) -> dx, y = log_softmax(x) */
    TG_OP_LAYER_NORM_GRAD_X,  /* (dy, x, w; eps) -> dx */
    TG_OP_LAYER_NORM_GRAD_WB, /* (dy, x; eps) -> [2, D]: dweight, dbias */
    TG_OP_ATTENTION_GRAD_Q,   /* (q, k, v, [mask], dout; causal, scale) */
    TG_OP_ATTENTION_GRAD_K,   /*   -> gradient over the broadcast batch */
    TG_OP_ATTENTION_GRAD_V,   /*      dims: [batch..., T, D]; with (lse, delta) */
                              /*      after dout: FlashAttention-2 style */
    TG_OP_ATTENTION_LSE,      /* (q, k, v, [mask]; attention attrs) -> [batch..., Tq, 1]: */
                              /*   log-sum-exp of each row's visible scores (-inf: none) */
    TG_OP_CROSS_ENTROPY_GRAD, /* (logits, labels, dloss; ignore_index) */
    TG_OP_CONV1D_GRAD_INPUT,  /* (dy, x, w; conv attrs) -> dx */
    TG_OP_CONV1D_GRAD_WEIGHT, /* (dy, x, w; conv attrs) -> dw */
    TG_OP_SLICE_GRAD,         /* (dy, x; begin, end, step) -> dx */
    /* optimizers: state ops writing a weight and its moments */
    TG_OP_ADAMW_UPDATE, /* (w, m, v, grad, lr, step) */
    TG_OP_SGD_UPDATE,   /* (w, grad, lr, [step, momentum_buf]) */
    TG_OP_COUNT
} tg_op;

/* How an op fuses (used by the passes and the backend). */
typedef enum tg_op_class {
    TG_CLASS_SOURCE,
    TG_CLASS_ELEMENTWISE,
    TG_CLASS_REDUCTION,
    TG_CLASS_MATMUL,   /* matmul-like: takes elementwise epilogues */
    TG_CLASS_MOVEMENT, /* index remapping: reshape, permute, slice, ... */
    TG_CLASS_OPAQUE,   /* its own kernel: softmax, layer_norm, attention, ... */
    TG_CLASS_STATE,    /* side effects: assign, slice_update */
} tg_op_class;

/* Attributes: one struct serves every op; each op's row says which fields
 * it uses (a bitmask of TG_ATTR_*), which is what the text IR prints and
 * accepts, in this order. */
enum {
    TG_ATTR_AXES = 1 << 0,       /* axes[n_axes]: reductions, permute (perm) */
    TG_ATTR_KEEPDIMS = 1 << 1,   /* keepdims */
    TG_ATTR_AXIS = 1 << 2,       /* axis */
    TG_ATTR_SHAPE = 1 << 3,      /* shape[n_shape]: reshape, broadcast_to, iota */
    TG_ATTR_BEGIN = 1 << 4,      /* begin[n_slice], end, step: slice */
    TG_ATTR_LO_HI = 1 << 5,      /* lo[n_slice], hi[n_slice]: pad */
    TG_ATTR_VALUE = 1 << 6,      /* value: pad */
    TG_ATTR_TRANSPOSE = 1 << 7,  /* transpose_a, transpose_b: matmul */
    TG_ATTR_CONV = 1 << 8,       /* stride, padding, dilation: conv1d */
    TG_ATTR_EPS = 1 << 9,        /* eps: layer_norm */
    TG_ATTR_ATTENTION = 1 << 10, /* causal, scale: attention */
    TG_ATTR_IGNORE = 1 << 11,    /* ignore_index: cross_entropy */
    TG_ATTR_DEPTH = 1 << 12,     /* depth: one_hot */
    TG_ATTR_TRAINABLE = 1 << 13, /* trainable: variable */
    TG_ATTR_HAS_MASK = 1 << 14,  /* has_mask: attention (4th input) */
    TG_ATTR_BETAS = 1 << 15,     /* beta1, beta2: adamw_update */
    TG_ATTR_MOMENTUM = 1 << 16,  /* momentum, dampening, nesterov: sgd_update */
    TG_ATTR_DECAY = 1 << 17,     /* weight_decay: optimizers */
};

typedef struct tg_attrs {
    int n_axes;
    int64_t axes[TG_MAX_RANK];
    bool keepdims;
    int64_t axis;
    int n_shape;
    int64_t shape[TG_MAX_RANK];
    int n_slice; /* entries in begin/end/step and lo/hi */
    int64_t begin[TG_MAX_RANK], end[TG_MAX_RANK], step[TG_MAX_RANK];
    int64_t lo[TG_MAX_RANK], hi[TG_MAX_RANK];
    double value;
    bool transpose_a, transpose_b;
    int64_t stride, padding, dilation;
    double eps;
    bool causal;
    double scale;
    int64_t ignore_index;
    int64_t depth;
    bool trainable;
    bool has_mask;
    double beta1, beta2;
    double momentum, dampening;
    bool nesterov;
    double weight_decay;
} tg_attrs;

#define TG_MAX_INPUTS_INLINE 4

typedef struct tg_node {
    tg_op op;
    tg_dtype dtype;
    int rank;
    int64_t shape[TG_MAX_RANK]; /* -1: dynamic */
    int n_inputs;
    int32_t *inputs; /* node ids, all < this node's id */
    tg_attrs attrs;
    char *name;        /* optional; required for placeholder and variable */
    void *data;        /* constants: row-major raw bytes of dtype */
    size_t data_bytes; /* = count * tg_dtype_size(dtype) */
} tg_node;

struct tg_graph {
    tg_node *nodes;
    int n_nodes, cap;
    tg_status status;
    char error[1024];
};

/* A shape rule fills n->dtype, rank and shape from the inputs and attrs
 * (n->dtype arrives preset for ops whose output dtype is an attribute:
 * cast, one_hot, iota, sources). It may normalise attrs (negative axes).
 * On error it writes a message to err and returns false. */
typedef bool (*tg_shape_fn)(const tg_graph *g, tg_node *n, char *err, size_t errsz);

typedef struct tg_op_info {
    const char *name;
    int min_inputs, max_inputs; /* max -1: any number (concat) */
    unsigned attrs;             /* TG_ATTR_* the op uses */
    tg_op_class klass;
    tg_shape_fn shape;
    /* Elementwise ops: the scalar function in double (interpreter, constant
     * folding). Unary use f1, binary f2; NULL otherwise. */
    double (*f1)(double);
    double (*f2)(double, double);
    /* State ops: bit i set when the op writes the variable that is its
     * input i (assign, slice_update: input 0; an optimizer update writes
     * the weight and its moments). The interpreter and the executor apply
     * writes through this, not through per-op cases. A bit for an input
     * the node does not have (sgd_update without momentum) is ignored. */
    unsigned writes;
} tg_op_info;

extern const tg_op_info tg_ops[TG_OP_COUNT];

/* Looks an op up by name; returns TG_OP_COUNT if unknown. */
tg_op tg_op_from_name(const char *name);

/* ---- errors ---- */
/* Sets the thread-local last error (printf-style) and returns status. */
tg_status tg_set_error(tg_status status, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Sets the last error as "label: message" (label NULL: "<memory>"), for
 * readers of files and buffers, and returns status. */
tg_status tg_set_error_at(tg_status status, const char *label, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Records the graph's first (sticky) error and also sets tg_last_error. */
void tg_graph_fail(tg_graph *g, tg_status status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Rounds v as storing it in dtype t would (integers: truncate, saturate,
 * NaN -> 0). */
double tg_round_to_dtype(double v, tg_dtype t);
double tg_saturate_int(double v, double lo, double hi);

/* ---- building ---- */
/* Appends a node generically: checks input handles, copies inputs and
 * attrs, runs the shape rule. `dtype` is used for ops whose output dtype
 * is an attribute (sources, cast, one_hot, iota) and ignored otherwise.
 * Returns TG_INVALID on error (sticky). This is what the builder functions
 * and the text IR parser call. */
tg_tensor tg_node_add(tg_graph *g, tg_op op, int n_inputs, const tg_tensor *inputs,
                      const tg_attrs *attrs, tg_dtype dtype);
/* Sets a source node's shape/name/data before shape rules: used by
 * tg_placeholder/variable/constant and the parser. data may be NULL. */
tg_tensor tg_source_add(tg_graph *g, tg_op op, const char *name, tg_dtype dtype, int rank,
                        const int64_t *shape, const void *data, bool trainable);

static inline tg_node *tg_node_at(const tg_graph *g, tg_tensor t) {
    return (t.id >= 0 && t.id < g->n_nodes) ? &g->nodes[t.id] : NULL;
}

/* ---- shapes ---- */
/* Formats "f32[4,?,384]" into buf. Returns buf. */
char *tg_shape_str(tg_dtype dt, int rank, const int64_t *shape, char *buf, size_t n);
/* Element count; -1 if any dim is dynamic; saturates at INT64_MAX. */
int64_t tg_shape_count(int rank, const int64_t *shape);
/* Row-major strides (elements) of a static shape. */
void tg_shape_strides(int rank, const int64_t *shape, int64_t *strides);
/* NumPy broadcast of two shapes; false if incompatible. -1 (dynamic)
 * broadcasts against 1 to -1 and against k to k. */
bool tg_broadcast_shapes(int ra, const int64_t *a, int rb, const int64_t *b, int *rout,
                         int64_t *out);
/* Normalises a possibly negative axis for `rank`; false if out of range. */
bool tg_norm_axis(int64_t axis, int rank, int64_t *out);

/* Deep copy of a graph (used by passes and specialisation). */
tg_graph *tg_graph_clone(const tg_graph *g);
/* Re-runs shape inference for every node with placeholder shapes replaced
 * by concrete ones (shapes[i] for placeholders[i]); returns a new graph
 * with no dynamic dimensions left, or NULL with tg_last_error set. */
tg_graph *tg_graph_specialize(const tg_graph *g, int n, const tg_tensor *placeholders,
                              const int64_t (*shapes)[TG_MAX_RANK]);

/* ---- store internals (graph/store.c) ---- */
typedef struct tg_store_entry {
    char *name;
    tg_array value; /* host copy */
    /* backend mirror: set by the backend, which keeps host and device in
     * sync lazily */
    void *device;
    bool host_stale; /* the device holds a newer value */
} tg_store_entry;

struct tg_store {
    tg_store_entry *entries;
    int n, cap;
    /* called before the host copy of a stale entry is read */
    tg_status (*sync_to_host)(tg_store *s, tg_store_entry *e);
    void (*release_device)(tg_store *s, tg_store_entry *e);
    /* called by tg_store_set before replacing the host value of an entry
     * with a device mirror; returns true if the backend keeps the mirror
     * (marking it for re-upload), false to have it released */
    bool (*host_changed)(tg_store *s, tg_store_entry *e, const tg_array *value);
    void *backend;
};

tg_store_entry *tg_store_find(tg_store *s, const char *name);

#endif
