/*
 * tg.h — the public C API of tg, a tensor graph compiler with autodiff.
 *
 * A program declares a model as a graph of placeholders (fed per run),
 * variables (persistent, named state) and constants, and ops on them. The
 * graph is then run: on the reference interpreter (tg_interpret, always
 * available, slow, obviously correct) or compiled for a Vulkan device.
 *
 *     tg_graph *g = tg_graph_new();
 *     int64_t xs[] = {-1, 4};                 // -1: dynamic, fixed per run
 *     tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
 *     int64_t ws[] = {4, 3};
 *     tg_tensor w = tg_variable(g, "w", TG_F32, 2, ws, true);
 *     tg_tensor y = tg_relu(g, tg_matmul(g, x, w, false, false));
 *     if (tg_graph_status(g) != TG_OK) puts(tg_graph_error(g));
 *
 * Conventions
 *  - Every function that can fail returns a tg_status (or NULL / an invalid
 *    handle) and sets a thread-local message read by tg_last_error(). The
 *    library never aborts, exits or writes to stdout/stderr.
 *  - The graph builder has a sticky error, like a stream: the first op with a
 *    bad input records the error (op name, input shapes, what was expected)
 *    and returns an invalid handle; every later op on an invalid handle
 *    returns an invalid handle too, so a whole model can be built and checked
 *    once at the end.
 *  - Shapes are int64_t arrays of at most TG_MAX_RANK dimensions. In a
 *    placeholder -1 means dynamic (printed `?` in the IR).
 *  - Axes may be negative (counted from the end), as in NumPy.
 *  - Binary ops broadcast as NumPy does. Inputs of a binary op must have the
 *    same dtype: tg never promotes implicitly (use tg_cast).
 */
#ifndef TG_H
#define TG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TG_VERSION_MAJOR 0
#define TG_VERSION_MINOR 1
#define TG_VERSION_PATCH 0
#define TG_VERSION_STRING "0.1.0"

/** Maximum rank of any tensor. */
#define TG_MAX_RANK 6

/* ------------------------------------------------------------------ */
/* Status and errors                                                   */
/* ------------------------------------------------------------------ */

typedef enum tg_status {
    TG_OK = 0,
    TG_ERR_INVALID_ARGUMENT, /* a bad argument: NULL, out of range, wrong op */
    TG_ERR_SHAPE,            /* shapes or dtypes do not fit the op          */
    TG_ERR_PARSE,            /* malformed text IR or file contents           */
    TG_ERR_IO,               /* a file could not be read or written          */
    TG_ERR_NO_MEMORY,        /* an allocation failed                         */
    TG_ERR_NOT_FOUND,        /* a named tensor or variable does not exist    */
    TG_ERR_UNSUPPORTED,      /* valid, but not supported by this build/device */
    TG_ERR_DEVICE,           /* the Vulkan driver reported an error          */
    TG_ERR_RUNTIME,          /* a value computed at run time is invalid      */
} tg_status;

/** The message of the last error on this thread ("" if none). */
const char *tg_last_error(void);
/** A short constant name for a status, e.g. "shape error". */
const char *tg_status_string(tg_status s);

/* ------------------------------------------------------------------ */
/* Data types                                                          */
/* ------------------------------------------------------------------ */

typedef enum tg_dtype {
    TG_F32 = 0,
    TG_F16,
    TG_BF16, /* storage type: computed in f32 */
    TG_I32,
    TG_I8,
    TG_U8, /* also the type of boolean masks (comparisons) */
    TG_DTYPE_COUNT
} tg_dtype;

/** Bytes per element (4, 2, 2, 4, 1, 1). */
size_t tg_dtype_size(tg_dtype t);
/** "f32", "f16", "bf16", "i32", "i8", "u8"; "?" if out of range. */
const char *tg_dtype_name(tg_dtype t);
/** Parses a dtype name; returns false if unknown. */
bool tg_dtype_from_name(const char *name, tg_dtype *out);
/** True for f32, f16, bf16. */
bool tg_dtype_is_float(tg_dtype t);

/** IEEE half and bfloat16 conversions (round to nearest even). */
uint16_t tg_f32_to_f16(float f);
float tg_f16_to_f32(uint16_t h);
uint16_t tg_f32_to_bf16(float f);
float tg_bf16_to_f32(uint16_t h);

/* ------------------------------------------------------------------ */
/* Host arrays: dense row-major data on the CPU                         */
/* ------------------------------------------------------------------ */

/** A dense row-major array in host memory. `data` holds
 *  tg_array_count(a) elements of `dtype`. Arrays returned by the library
 *  own their data; release them with tg_array_free. */
typedef struct tg_array {
    tg_dtype dtype;
    int rank;
    int64_t shape[TG_MAX_RANK];
    void *data;
} tg_array;

/** Allocates a zero-filled array. Returns TG_ERR_NO_MEMORY or
 *  TG_ERR_INVALID_ARGUMENT (bad rank/dims, or size overflow). */
tg_status tg_array_alloc(tg_array *a, tg_dtype dtype, int rank, const int64_t *shape);
/** Frees a->data and zeroes the struct. Safe on a zeroed struct. */
void tg_array_free(tg_array *a);
/** Number of elements (1 for rank 0). */
int64_t tg_array_count(const tg_array *a);
/** Element i converted to double (any dtype). */
double tg_array_get(const tg_array *a, int64_t i);
/** Stores v into element i, converted to the array's dtype (rounded, and
 *  saturated for integer types). */
void tg_array_set(tg_array *a, int64_t i, double v);

/* ------------------------------------------------------------------ */
/* Graphs and tensors                                                  */
/* ------------------------------------------------------------------ */

typedef struct tg_graph tg_graph;

/** A handle to a node of a graph. id < 0 is invalid. */
typedef struct tg_tensor {
    int32_t id;
} tg_tensor;

#define TG_INVALID ((tg_tensor){-1})

tg_graph *tg_graph_new(void);
void tg_graph_free(tg_graph *g);

/** TG_OK, or the status of the first builder error. */
tg_status tg_graph_status(const tg_graph *g);
/** The first builder error, or NULL if the graph is valid. */
const char *tg_graph_error(const tg_graph *g);

/** Number of nodes; node ids are 0 .. n-1 in topological order. */
int tg_graph_node_count(const tg_graph *g);
bool tg_tensor_valid(const tg_graph *g, tg_tensor t);
tg_dtype tg_tensor_dtype(const tg_graph *g, tg_tensor t);
int tg_tensor_rank(const tg_graph *g, tg_tensor t);
/** Copies the shape (-1 for dynamic dims) into shape[TG_MAX_RANK];
 *  returns the rank, or -1 for an invalid handle. */
int tg_tensor_shape(const tg_graph *g, tg_tensor t, int64_t *shape);
/** The op name of the node ("add", "placeholder", ...). */
const char *tg_tensor_op(const tg_graph *g, tg_tensor t);
/** Names a node (shown in the IR, used for lookup). NULL clears. */
tg_status tg_tensor_set_name(tg_graph *g, tg_tensor t, const char *name);
/** The node's name, or NULL. */
const char *tg_tensor_name(const tg_graph *g, tg_tensor t);
/** The last node with that name, or an invalid handle. */
tg_tensor tg_graph_find(const tg_graph *g, const char *name);

/* Sources ---------------------------------------------------------- */

/** A value fed at every run. Dimensions may be -1 (dynamic). */
tg_tensor tg_placeholder(tg_graph *g, const char *name, tg_dtype dtype, int rank,
                         const int64_t *shape);
/** Persistent named state (weights, optimizer moments, KV caches). Its
 *  value lives in a tg_store under `name`, so several graphs can share it. */
tg_tensor tg_variable(tg_graph *g, const char *name, tg_dtype dtype, int rank, const int64_t *shape,
                      bool trainable);
/** A constant; `data` (row-major, of `dtype`) is copied. */
tg_tensor tg_constant(tg_graph *g, tg_dtype dtype, int rank, const int64_t *shape,
                      const void *data);
/** A rank-0 constant holding `value` converted to dtype. */
tg_tensor tg_scalar(tg_graph *g, tg_dtype dtype, double value);

/* Elementwise unary ------------------------------------------------ */

tg_tensor tg_neg(tg_graph *g, tg_tensor x);
tg_tensor tg_abs(tg_graph *g, tg_tensor x);
tg_tensor tg_exp(tg_graph *g, tg_tensor x);
tg_tensor tg_log(tg_graph *g, tg_tensor x);
tg_tensor tg_sqrt(tg_graph *g, tg_tensor x);
tg_tensor tg_rsqrt(tg_graph *g, tg_tensor x);
tg_tensor tg_reciprocal(tg_graph *g, tg_tensor x);
tg_tensor tg_square(tg_graph *g, tg_tensor x);
tg_tensor tg_tanh(tg_graph *g, tg_tensor x);
tg_tensor tg_erf(tg_graph *g, tg_tensor x);
/** Exact GELU: x * 0.5 * (1 + erf(x / sqrt(2))). */
tg_tensor tg_gelu(tg_graph *g, tg_tensor x);
/** Tanh approximation: 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))). */
tg_tensor tg_gelu_tanh(tg_graph *g, tg_tensor x);
tg_tensor tg_relu(tg_graph *g, tg_tensor x);
tg_tensor tg_sigmoid(tg_graph *g, tg_tensor x);
tg_tensor tg_silu(tg_graph *g, tg_tensor x);
tg_tensor tg_sin(tg_graph *g, tg_tensor x);
tg_tensor tg_cos(tg_graph *g, tg_tensor x);
/** Converts to `dtype`. Float to integer truncates toward zero and
 *  saturates; to u8 from a comparison gives 0/1. */
tg_tensor tg_cast(tg_graph *g, tg_tensor x, tg_dtype dtype);
/** Identity forward; no gradient flows through it. */
tg_tensor tg_stop_gradient(tg_graph *g, tg_tensor x);

/* Elementwise binary (NumPy broadcasting, equal dtypes) ------------ */

tg_tensor tg_add(tg_graph *g, tg_tensor a, tg_tensor b);
tg_tensor tg_sub(tg_graph *g, tg_tensor a, tg_tensor b);
tg_tensor tg_mul(tg_graph *g, tg_tensor a, tg_tensor b);
/** Division; on integers it truncates toward zero, x/0 gives 0. */
tg_tensor tg_div(tg_graph *g, tg_tensor a, tg_tensor b);
tg_tensor tg_pow(tg_graph *g, tg_tensor a, tg_tensor b);
tg_tensor tg_maximum(tg_graph *g, tg_tensor a, tg_tensor b);
tg_tensor tg_minimum(tg_graph *g, tg_tensor a, tg_tensor b);
/** Comparisons return u8 masks holding 0 or 1. */
tg_tensor tg_eq(tg_graph *g, tg_tensor a, tg_tensor b);
tg_tensor tg_ne(tg_graph *g, tg_tensor a, tg_tensor b);
tg_tensor tg_lt(tg_graph *g, tg_tensor a, tg_tensor b);
tg_tensor tg_le(tg_graph *g, tg_tensor a, tg_tensor b);
tg_tensor tg_gt(tg_graph *g, tg_tensor a, tg_tensor b);
tg_tensor tg_ge(tg_graph *g, tg_tensor a, tg_tensor b);
/** cond ? a : b elementwise; cond is u8 (nonzero = true); all three
 *  broadcast together; a and b have equal dtypes. */
tg_tensor tg_where(tg_graph *g, tg_tensor cond, tg_tensor a, tg_tensor b);

/* Reductions ------------------------------------------------------- */

/** Reduce over `n_axes` axes (n_axes == 0: all axes). keepdims keeps
 *  reduced axes as size 1. mean requires a float dtype. */
tg_tensor tg_sum(tg_graph *g, tg_tensor x, int n_axes, const int *axes, bool keepdims);
tg_tensor tg_mean(tg_graph *g, tg_tensor x, int n_axes, const int *axes, bool keepdims);
tg_tensor tg_max(tg_graph *g, tg_tensor x, int n_axes, const int *axes, bool keepdims);
tg_tensor tg_min(tg_graph *g, tg_tensor x, int n_axes, const int *axes, bool keepdims);
/** Index (i32) of the maximum along one axis; the first one on ties. */
tg_tensor tg_argmax(tg_graph *g, tg_tensor x, int axis, bool keepdims);

/* Data movement ---------------------------------------------------- */

/** Reshape. A 0 in `shape` copies the input's dimension at that position
 *  (so dynamic dims survive); one -1 is inferred from the element count. */
tg_tensor tg_reshape(tg_graph *g, tg_tensor x, int rank, const int64_t *shape);
/** Output dim i is input dim perm[i]. */
tg_tensor tg_permute(tg_graph *g, tg_tensor x, int rank, const int *perm);
/** Swaps the last two axes (a permute). */
tg_tensor tg_transpose(tg_graph *g, tg_tensor x);
tg_tensor tg_broadcast_to(tg_graph *g, tg_tensor x, int rank, const int64_t *shape);
/** Python-style slice per axis: begin/end may be negative (from the end)
 *  and are clamped; step >= 1. begin/end/step have rank(x) entries; pass
 *  end = INT64_MAX for "to the end". */
tg_tensor tg_slice(tg_graph *g, tg_tensor x, const int64_t *begin, const int64_t *end,
                   const int64_t *step);
tg_tensor tg_concat(tg_graph *g, int n, const tg_tensor *xs, int axis);
/** Constant padding: lo[i] and hi[i] >= 0 elements before/after axis i. */
tg_tensor tg_pad(tg_graph *g, tg_tensor x, const int64_t *lo, const int64_t *hi, double value);
/** Rows along `axis` picked by i32 `indices` (embedding lookup when
 *  axis = 0): out shape = x[:axis] + indices.shape + x[axis+1:].
 *  An index outside [0, dim) reads zeros. */
tg_tensor tg_gather(tg_graph *g, tg_tensor x, tg_tensor indices, int axis);
/** The adjoint of gather: a copy of `target` where updates[..., j, ...]
 *  is added at target[..., indices[j], ...]; out-of-range indices are
 *  dropped. updates.shape = target[:axis] + indices.shape + target[axis+1:]. */
tg_tensor tg_scatter_add(tg_graph *g, tg_tensor target, tg_tensor indices, tg_tensor updates,
                         int axis);
/** indices (i32) -> indices.shape + [depth] of dtype, 1 where equal. */
tg_tensor tg_one_hot(tg_graph *g, tg_tensor indices, int64_t depth, tg_dtype dtype);
/** A tensor of `shape` whose value is the index along `axis`. */
tg_tensor tg_iota(tg_graph *g, tg_dtype dtype, int rank, const int64_t *shape, int axis);

/* Linear algebra --------------------------------------------------- */

/** Batched matmul: a [..., M, K] x b [..., K, N] -> [..., M, N]. The
 *  transpose flags swap the last two axes of a or b; batch dimensions
 *  broadcast. Both ranks >= 2. */
tg_tensor tg_matmul(tg_graph *g, tg_tensor a, tg_tensor b, bool transpose_a, bool transpose_b);
/** 1-D convolution, NCW: x [N, Cin, W], w [Cout, Cin, K] -> [N, Cout, Wout]
 *  with Wout = (W + 2*padding - dilation*(K-1) - 1) / stride + 1. Add a bias
 *  with tg_add. */
tg_tensor tg_conv1d(tg_graph *g, tg_tensor x, tg_tensor w, int stride, int padding, int dilation);

/* Neural-net composites ------------------------------------------- */

tg_tensor tg_softmax(tg_graph *g, tg_tensor x, int axis);
tg_tensor tg_log_softmax(tg_graph *g, tg_tensor x, int axis);
/** Normalizes the last axis: (x - mean) / sqrt(var + eps) * weight + bias,
 *  with the biased variance; weight and bias have shape [last dim]. */
tg_tensor tg_layer_norm(tg_graph *g, tg_tensor x, tg_tensor weight, tg_tensor bias, double eps);
/** softmax(q k^T * scale + mask) v. q [..., Tq, D], k [..., Tk, D],
 *  v [..., Tk, Dv] -> [..., Tq, Dv]; batch dims broadcast. `mask` is
 *  optional (TG_INVALID), additive, broadcastable to [..., Tq, Tk].
 *  causal: query i sees keys j <= i + (Tk - Tq) (aligned bottom-right, so
 *  a single query against a KV cache sees every key). scale <= 0 means
 *  1/sqrt(D). */
tg_tensor tg_attention(tg_graph *g, tg_tensor q, tg_tensor k, tg_tensor v, tg_tensor mask,
                       bool causal, double scale);
/** Mean cross-entropy of logits [..., C] (float) against i32 labels [...],
 *  over labels != ignore_index; a rank-0 f32. If every label is ignored the
 *  result is 0 (not NaN). Labels outside [0, C) that are not ignored
 *  are a run-time error on the interpreter. */
tg_tensor tg_cross_entropy(tg_graph *g, tg_tensor logits, tg_tensor labels, int64_t ignore_index);

/* State ------------------------------------------------------------ */

/** variable := value (same dtype and shape). Runs only when the node is
 *  a target operation (or a target tensor depends on it). Its value is
 *  the new value. Reads of the variable in the same run see the old one. */
tg_tensor tg_assign(tg_graph *g, tg_tensor variable, tg_tensor value);
/** Writes `update` into `variable` at `start` (an i32 tensor of shape
 *  [rank], fed at run time: a KV cache position). The slab must fit;
 *  on the interpreter an out-of-range start is a run-time error. Its
 *  value is the updated variable. */
tg_tensor tg_slice_update(tg_graph *g, tg_tensor variable, tg_tensor update, tg_tensor start);

/* ------------------------------------------------------------------ */
/* Autodiff and optimizers (docs/autodiff.md)                          */
/* ------------------------------------------------------------------ */

/** Reverse-mode gradients of a scalar `loss` (one element, float) with
 *  respect to the float tensors wrt[0..n): appends the gradient nodes to g
 *  and sets grads_out[i] to the gradient of wrt[i] (same dtype and shape).
 *  Gradients of a tensor used several times are summed; broadcasts are
 *  undone by summing; no gradient flows through stop_gradient, comparisons,
 *  argmax, integer tensors or state ops. A wrt the loss does not depend on
 *  gets a zero tensor of its shape. A loss with more than one element is an
 *  error (use tg_gradients_seeded). On error grads_out[i] are invalid. */
tg_status tg_gradients(tg_graph *g, tg_tensor loss, int n, const tg_tensor *wrt,
                       tg_tensor *grads_out);
/** The vector-Jacobian product: as tg_gradients, with y's gradient set to
 *  `seed` (same dtype and shape as y; e.g. a placeholder). */
tg_status tg_gradients_seeded(tg_graph *g, tg_tensor y, tg_tensor seed, int n, const tg_tensor *wrt,
                              tg_tensor *grads_out);

/** One AdamW step on the float variable `var` (torch.optim.AdamW: decoupled
 *  weight decay, bias correction, eps outside the square root), as a single
 *  state op that writes var and its moments, the variables
 *  "<var>.adam_m" and "<var>.adam_v" (created here, not trainable; give
 *  them zeros with tg_store_init_missing). lr is a rank-0 float and step a
 *  rank-0 f32 or i32 holding the 1-based step number: feed both as
 *  placeholders so changing them never recompiles. Returns the update op,
 *  to run as a target operation; its value is the new weight. */
tg_tensor tg_adamw(tg_graph *g, tg_tensor var, tg_tensor grad, tg_tensor lr, tg_tensor step,
                   double beta1, double beta2, double eps, double weight_decay);
/** One SGD step (torch.optim.SGD) as a single state op. With momentum != 0
 *  it also writes the variable "<var>.sgd_momentum" (created here) and
 *  needs `step` (1-based; at step 1 the buffer is set to the gradient);
 *  without momentum, step may be TG_INVALID. nesterov needs momentum > 0
 *  and dampening 0. Returns the update op. */
tg_tensor tg_sgd(tg_graph *g, tg_tensor var, tg_tensor grad, tg_tensor lr, tg_tensor step,
                 double momentum, double dampening, bool nesterov, double weight_decay);
/** Global-norm clipping, as plain graph ops: norm = sqrt(sum of the squares
 *  of every gradient, in f32); clipped_out[i] = grads[i] * min(1, max_norm /
 *  (norm + 1e-6)) (torch.nn.utils.clip_grad_norm_). norm_out (may be NULL)
 *  receives the rank-0 f32 norm before clipping. */
tg_status tg_clip_by_global_norm(tg_graph *g, int n, const tg_tensor *grads, double max_norm,
                                 tg_tensor *clipped_out, tg_tensor *norm_out);

/* ------------------------------------------------------------------ */
/* Text IR                                                             */
/* ------------------------------------------------------------------ */

/** The graph in its text form (docs/ir.md), NUL-terminated, malloc'ed:
 *  free() it. NULL on error (e.g. the graph has a builder error). */
char *tg_graph_to_text(const tg_graph *g);
/** Parses text IR. `filename` only labels error messages ("f.tgir:3:7:
 *  ..."). Returns NULL with tg_last_error() set on any error. */
tg_graph *tg_graph_parse(const char *text, size_t len, const char *filename);
/** Graphviz DOT: ops as nodes, shapes on edges. malloc'ed; free() it. */
char *tg_graph_to_dot(const tg_graph *g);

/* ------------------------------------------------------------------ */
/* Variable store                                                      */
/* ------------------------------------------------------------------ */

/** Values of variables, by name. A store outlives graphs and executables:
 *  a training graph and an inference graph share weights through it. */
typedef struct tg_store tg_store;

tg_store *tg_store_new(void);
void tg_store_free(tg_store *s);
/** Sets (creates or replaces) a variable's value; data is copied. */
tg_status tg_store_set(tg_store *s, const char *name, const tg_array *value);
/** Copies a variable's value into *out (allocated; tg_array_free it).
 *  TG_ERR_NOT_FOUND if absent. */
tg_status tg_store_get(tg_store *s, const char *name, tg_array *out);
bool tg_store_has(const tg_store *s, const char *name);
/** Number of variables and the name of the i-th (in insertion order). */
int tg_store_count(const tg_store *s);
const char *tg_store_name(const tg_store *s, int i);
/** Gives every variable of `g` that the store lacks a value: zeros, or
 *  if `seed` != 0 and the variable is trainable, uniform in [-scale, scale]
 *  from a seeded generator (non-trainable state such as optimizer moments
 *  and caches always starts at zero). */
tg_status tg_store_init_missing(tg_store *s, const tg_graph *g, uint64_t seed, double scale);

/* ------------------------------------------------------------------ */
/* Checkpoints (safetensors) — frontend/lib_safetensors.c               */
/* ------------------------------------------------------------------ */

/** An open safetensors checkpoint: one file, or the shards of a sharded
 *  checkpoint (model.safetensors.index.json) behind one handle. Files are
 *  memory-mapped read-only and fully validated when opened (docs/formats.md);
 *  tensors are listed sorted by name. */
typedef struct tg_safetensors tg_safetensors;

/** Opens and validates one .safetensors file. */
tg_status tg_safetensors_open(const char *path, tg_safetensors **out);
/** Opens a model directory: `model.safetensors` if present, else the shards
 *  named by `model.safetensors.index.json`. */
tg_status tg_safetensors_open_dir(const char *dir, tg_safetensors **out);
/** Closes (unmaps). NULL is ok. */
void tg_safetensors_close(tg_safetensors *st);

/** Number of tensors, the name of the i-th (sorted by name). */
int tg_safetensors_count(const tg_safetensors *st);
const char *tg_safetensors_name(const tg_safetensors *st, int i);
/** Index of the tensor called `name`, or -1. */
int tg_safetensors_find(const tg_safetensors *st, const char *name);
/** The dtype the tensor reads as (F64 reads as f32, I64 as i32, BOOL as
 *  u8), its rank and shape (shape has TG_MAX_RANK entries; any may be NULL). */
tg_status tg_safetensors_info(const tg_safetensors *st, int i, tg_dtype *dtype, int *rank,
                              int64_t *shape);
/** The dtype as written in the file: "F32", "BF16", "I64", ... */
const char *tg_safetensors_file_dtype(const tg_safetensors *st, int i);
/** Copies a tensor into *out (allocated: tg_array_free it) as `want`:
 *  float tensors (F32/F16/BF16/F64) convert to any float dtype; integer
 *  tensors read only as their own dtype (I64 -> i32 with a range check). */
tg_status tg_safetensors_read(const tg_safetensors *st, const char *name, tg_dtype want,
                              tg_array *out);
/** Zero-copy: the tensor's bytes inside the mapping (little-endian, of the
 *  dtype from tg_safetensors_info; valid until close). Refused for F64, I64
 *  and BOOL, which need conversion. */
tg_status tg_safetensors_data(const tg_safetensors *st, const char *name, const void **ptr,
                              size_t *bytes);
/** The `__metadata__` map: number of entries, and the i-th key and value. */
int tg_safetensors_metadata_count(const tg_safetensors *st);
const char *tg_safetensors_metadata_key(const tg_safetensors *st, int i);
const char *tg_safetensors_metadata_value(const tg_safetensors *st, int i);
/** The metadata value for `key`, or NULL. */
const char *tg_safetensors_metadata_get(const tg_safetensors *st, const char *key);

/** Writes `n` arrays under `names` (unique) to `path` atomically: a
 *  temporary file in the same directory, fsync, rename, fsync of the
 *  directory, so a failed save leaves any previous file intact. Tensors
 *  are written sorted by name; `metadata` is NULL or a NULL-terminated
 *  list of key, value strings ({"format", "pt", NULL}). */
tg_status tg_safetensors_save(const char *path, int n, const char *const *names,
                              const tg_array *arrays, const char *const *metadata);
/** Saves variables of a store (names[0..n); names NULL: all of them). */
tg_status tg_store_save_safetensors(tg_store *s, const char *path, int n, const char *const *names);
/** Loads tensors of a checkpoint file into a store (names NULL: all). A
 *  variable the store already has keeps its dtype (floats convert) and
 *  must have the same shape. Nothing is changed unless every tensor
 *  loads. */
tg_status tg_store_load_safetensors(tg_store *s, const char *path, int n, const char *const *names);

/* ------------------------------------------------------------------ */
/* Reference interpreter                                               */
/* ------------------------------------------------------------------ */

/** A value for a placeholder. */
typedef struct tg_feed {
    tg_tensor tensor;
    const tg_array *value;
} tg_feed;

/** Flags of tg_interpret. */
enum {
    /** Evaluate everything in f64 (no rounding to the node dtypes); used
     *  by gradient checks. */
    TG_INTERP_F64 = 1 << 0,
};

/** Runs `g` on the CPU reference interpreter. Feeds every placeholder the
 *  targets depend on (shapes must match, dynamic dims take any size);
 *  variables are read from `store` (may be NULL if none is used); the
 *  side effects of `target_ops` (assign, slice_update) and of any assign the
 *  targets depend on are applied to the store after the run. results[i]
 *  receives targets[i] (allocated: tg_array_free each). */
tg_status tg_interpret(const tg_graph *g, tg_store *store, int n_feeds, const tg_feed *feeds,
                       int n_targets, const tg_tensor *targets, tg_array *results, int n_target_ops,
                       const tg_tensor *target_ops, unsigned flags);

/* ------------------------------------------------------------------ */
/* Passes (docs/passes.md)                                             */
/* ------------------------------------------------------------------ */

/** Number of optimisation passes, and the name and one-line description
 *  of the i-th, in the order they run ("dce", "cse", "fold", "algebra",
 *  "permute_matmul", "fusion", ...). NULL if i is out of range. */
int tg_pass_count(void);
const char *tg_pass_name(int i);
const char *tg_pass_description(int i);

/** Options of tg_optimize. Zero-initialise; every field is optional.
 *
 *  Dumping: the library never prints. It calls `dump` (if set) with the
 *  text IR after a pass: after every pass (and once with pass "input"
 *  before the first) when `dump_all` is set or the environment variable
 *  TG_DUMP_IR is "1", and after the pass named `dump_after`. Without a
 *  `dump` callback nothing is dumped. After "fusion" the text is the fused
 *  IR (docs/ir.md, "Fused IR"). */
typedef struct tg_pass_options {
    /** Comma-separated names of passes to skip ("fold,cse"); NULL: none. */
    const char *disable;
    /** Dump the IR after this pass; NULL: none. */
    const char *dump_after;
    bool dump_all;
    void (*dump)(void *user, const char *pass, const char *ir_text);
    void *dump_user;
    /** fold: largest result folded into a constant (0: 65536 elements). */
    int64_t fold_max_elements;
    /** fusion: most external inputs and outputs of one kernel (0: 16). */
    int fusion_max_inputs, fusion_max_outputs;
    /** fusion: most adamw updates in one multi-tensor optimizer kernel,
     *  whatever the other limits (0: those limits decide; tg_compile sets
     *  it from the device's descriptor limits). */
    int fusion_max_optimizer_updates;
    /** fusion: cross_entropy and its cross_entropy_grad share a kernel even
     *  where the gradient writes over the logits (the executor's kernel then
     *  reads each row whole before writing its gradient; tg_compile sets it
     *  where the device's kernel does). */
    bool fusion_ce_pair_in_place;
} tg_pass_options;

/** What the passes did to a graph (tg_optimize, `graph dump --stats`). */
typedef struct tg_pass_stats {
    int nodes_before, nodes_after; /* all nodes */
    /** Nodes of the optimised graph by op class. */
    int sources, elementwise, reductions, matmuls, movements, opaque, state;
    int aliases; /* reshape, stop_gradient: views, no dispatch (counted in their class too) */
    /** Dispatches, one per needed node that is neither a source nor an
     *  alias: of the input graph, of the simplified graph; then the
     *  kernels of the fusion partition (= dispatches_unfused when fusion is
     *  disabled), and those kernels by kind. */
    int dispatches_input, dispatches_unfused, dispatches_fused;
    int kernels_elementwise, kernels_movement, kernels_reduction, kernels_matmul, kernels_opaque,
        kernels_state;
    /** Naive memory: the sum of the bytes of every dispatched node's result
     *  (no reuse); -1 when a needed shape is dynamic. */
    int64_t intermediate_bytes;
} tg_pass_stats;

/** Runs the passes on a copy of `g` for the given targets and target
 *  operations (as tg_compile takes them; if both counts are 0, every node
 *  that no other node uses and that is not a source is a target, and every
 *  state op a target operation). *out receives the optimised graph (free
 *  it with tg_graph_free); new_targets[i] / new_target_ops[i] (arrays of
 *  n_targets / n_target_ops entries, may be NULL when the count is 0)
 *  receive the ids of targets[i] / target_ops[i] in it: passes renumber
 *  nodes, and a target may become another node computing the same value
 *  (x * 1 -> x). opts and stats may be NULL. */
tg_status tg_optimize(const tg_graph *g, int n_targets, const tg_tensor *targets, int n_target_ops,
                      const tg_tensor *target_ops, const tg_pass_options *opts, tg_graph **out,
                      tg_tensor *new_targets, tg_tensor *new_target_ops, tg_pass_stats *stats);

/* ------------------------------------------------------------------ */
/* Devices (backend/vk_public.c)                                       */
/* ------------------------------------------------------------------ */

/** An open Vulkan device. */
typedef struct tg_device tg_device;

/** What `graph devices` shows about a device. */
typedef struct tg_device_info {
    char name[256];
    char type[16];         /* "discrete", "integrated", "virtual", "cpu", "other" */
    char device_class[16]; /* "cpu", "integrated", "nvidia", "amd", "intel", "apple", "other" */
    char driver_name[256];
    char driver_info[256];
    uint32_t api_version_major, api_version_minor, api_version_patch;
    uint32_t vendor_id, device_id, driver_version;
    uint64_t memory_bytes; /* device-local heaps */
    uint32_t subgroup_size;
    uint32_t max_workgroup_size[3];
    uint32_t max_workgroup_invocations;
    uint32_t shared_memory_bytes;
    uint64_t max_storage_buffer_range;
    uint64_t max_memory_allocation_size;
    bool f16;            /* 16-bit storage and shaderFloat16 */
    bool storage_16bit;  /* 16-bit storage buffers */
    bool unified_memory; /* device memory is host-visible (no staging copies) */
    bool is_default;     /* the device tg_device_open(-1) picks */
} tg_device_info;

/** Number of Vulkan 1.2+ devices, or -1 on error (tg_last_error). */
int tg_device_count(void);
/** The default device: $TG_DEVICE if set, else the first discrete GPU, else
 *  integrated, else virtual, else CPU. -1 on error. */
int tg_device_default_index(void);
tg_status tg_device_get_info(int index, tg_device_info *info);
/** Opens device `index` (-1: the default). Free with tg_device_free. */
tg_status tg_device_open(int index, tg_device **out);
/** Closes the device (saving its pipeline cache). NULL is ok. */
void tg_device_free(tg_device *dev);

/* ------------------------------------------------------------------ */
/* Compiling and running on a device                                   */
/* ------------------------------------------------------------------ */

/** A graph compiled for a device: its target tensors and target
 *  operations, with a command buffer recorded once per concrete feed
 *  shape and replayed at every run.
 *
 *  Lifetimes: the executable keeps its own copy of the graph (the caller's
 *  may be freed). Free executables before their store, and free stores used
 *  on a device (they hold its buffers for variables) before the device.
 *
 *  Variables: each variable a run uses gets a device buffer kept in the
 *  store and shared by every executable using that store on that device.
 *  tg_store_set with the same dtype and shape re-uploads before the next
 *  run; another shape gives a new buffer (the executable re-records its
 *  command buffer, never recompiles). Variables written by a run are
 *  downloaded lazily by tg_store_get once the run is waited for.
 *  assign/slice_update write the variable's buffer in place when nothing
 *  else in the run reads its old value; otherwise through a temporary,
 *  so every read in a run sees the old value, as on the interpreter. A
 *  variable may be written by at most one op per run. */
typedef struct tg_executable tg_executable;

typedef struct tg_compile_options {
    /** Bound of the least-recently-used cache of shape specialisations
     *  (0: the default, 8). */
    int max_specializations;
    /** Timestamps per dispatch (also on with TG_PROFILE=1). */
    bool profile;
    /** Comma-separated names of passes to skip ("fusion,cse"; tg_pass_name);
     *  NULL: none. The environment variable TG_DISABLE_PASSES adds to it.
     *  The passes run on each specialisation; with TG_DUMP_IR=1 the IR
     *  after every pass is written to stderr (the only time the library
     *  prints). */
    const char *disable_passes;
} tg_compile_options;

/** Compiles `g` for `dev`. Variables live in `store` (their device copies
 *  are kept there, shared by every executable using the same store). A
 *  graph without dynamic dimensions is compiled here; one with dynamic
 *  dimensions is specialised at the first run with each new set of feed
 *  shapes. opts may be NULL. */
tg_status tg_compile(tg_device *dev, const tg_graph *g, tg_store *store, int n_targets,
                     const tg_tensor *targets, int n_target_ops, const tg_tensor *target_ops,
                     const tg_compile_options *opts, tg_executable **out);
void tg_executable_free(tg_executable *e);

/** Runs and waits. Every placeholder the targets and target ops need must
 *  be fed once, with its dtype and a shape matching its static dims
 *  (TG_ERR_SHAPE / TG_ERR_INVALID_ARGUMENT naming it otherwise); feeds of
 *  other placeholders are ignored. A new combination of feed shapes
 *  compiles a specialisation (evicting the least recently used one beyond
 *  max_specializations); new values never recompile or re-record.
 *  results[i] receives targets[i] (allocated; free with tg_array_free).
 *  results may be NULL when n_targets was 0. */
tg_status tg_run(tg_executable *e, int n_feeds, const tg_feed *feeds, tg_array *results);

/** A submitted run not yet waited for. */
typedef struct tg_pending tg_pending;
/** Submits a run and returns at once; the feeds are copied before it
 *  returns. Wait with tg_wait (exactly once). One run per executable may be
 *  in flight (a second tg_encode or tg_run before tg_wait is an error);
 *  don't run other executables that share its variables, or tg_store_set
 *  them, until it is waited for. */
tg_status tg_encode(tg_executable *e, int n_feeds, const tg_feed *feeds, tg_pending **out);
/** Waits for the run and fills results as tg_run does; frees `p`. */
tg_status tg_wait(tg_pending *p, tg_array *results);

/** Number of shape specialisations compiled so far (cache misses), and
 *  how many are cached now (<= max_specializations). */
int tg_executable_specializations(const tg_executable *e);
int tg_executable_cached(const tg_executable *e);
/** Dispatches recorded in the most recently used specialisation. */
int tg_executable_dispatches(const tg_executable *e);
/** Memory of the intermediates (kernel results, feeds, temporaries) of the
 *  most recently used specialisation, in bytes: the arena as planned (all
 *  its buffers), the naive sum of every intermediate without reuse, and
 *  the lower bound of any plan for its kernel order (the most bytes alive
 *  at one point). Any pointer may be NULL. TG_ERR_INVALID_ARGUMENT when
 *  nothing is compiled yet. */
tg_status tg_executable_memory_stats(const tg_executable *e, uint64_t *arena, uint64_t *naive,
                                     uint64_t *lower_bound);
/** What holds the arena's peak in the most recently used specialisation:
 *  a line with the peak's bytes and the kernel running there, then one line
 *  per buffer live at that point, largest first, at most 32 (bytes, the
 *  node whose value it holds, the kernels it lives over). *text is malloc'ed: free()
 *  it. TG_ERR_INVALID_ARGUMENT when nothing is compiled yet. */
tg_status tg_executable_memory_peak(const tg_executable *e, char **text);

/** After a run with profiling: writes a per-kernel table (name,
 *  dispatches, total and mean microseconds, share; sorted by total; summed
 *  over every profiled run of the executable) to `table` (if not NULL,
 *  malloc'ed text) and a Chrome trace JSON of the most recent run to the
 *  file `trace_path` (if not NULL): one "X" event per dispatch, laid end
 *  to end in recording order (ts/dur in microseconds; gaps are not
 *  measured), one row per kernel. Times are GPU timestamps; a first run
 *  includes any driver JIT at first dispatch (llvmpipe). TG_ERR_INVALID_ARGUMENT
 *  if no profiled run happened yet. */
tg_status tg_executable_profile(tg_executable *e, char **table, const char *trace_path);

#ifdef __cplusplus
}
#endif
#endif /* TG_H */
