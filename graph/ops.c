/* ops.c — the op table: for every op its name, arity, attributes, fusion
 * class, shape rule and (for elementwise ops) scalar function. Adding an op
 * means adding its enum entry, its row here and its pieces (interpreter
 * kernel, VJP rule, kernel generator) — see DESIGN.md. */
#include "graph/graph_internal.h"

#include <math.h>
#include <string.h>

#define IN(i) (&g->nodes[n->inputs[(i)]])

static bool fail(char *err, size_t errsz, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool fail(char *err, size_t errsz, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
    return false;
}

static void copy_shape(tg_node *n, const tg_node *from) {
    n->rank = from->rank;
    memcpy(n->shape, from->shape, sizeof n->shape);
}

/* Two dims are compatible when equal or either is dynamic. */
static bool dims_match(int64_t a, int64_t b) {
    return a == b || a < 0 || b < 0;
}

/* ---- scalar functions (double) ---- */

static double f_neg(double x) {
    return -x;
}
static double f_abs(double x) {
    return fabs(x);
}
static double f_exp(double x) {
    return exp(x);
}
static double f_log(double x) {
    return log(x);
}
static double f_sqrt(double x) {
    return sqrt(x);
}
static double f_rsqrt(double x) {
    return 1.0 / sqrt(x);
}
static double f_reciprocal(double x) {
    return 1.0 / x;
}
static double f_square(double x) {
    return x * x;
}
static double f_tanh(double x) {
    return tanh(x);
}
static double f_erf(double x) {
    return erf(x);
}
static double f_gelu(double x) {
    return 0.5 * x * (1.0 + erf(x * 0.70710678118654752440));
}
static double f_gelu_tanh(double x) {
    const double k = 0.79788456080286535588; /* sqrt(2/pi) */
    return 0.5 * x * (1.0 + tanh(k * (x + 0.044715 * x * x * x)));
}
static double f_relu(double x) {
    return x > 0 ? x : 0;
}
static double f_sigmoid(double x) {
    return 1.0 / (1.0 + exp(-x));
}
static double f_silu(double x) {
    return x / (1.0 + exp(-x));
}
static double f_sin(double x) {
    return sin(x);
}
static double f_cos(double x) {
    return cos(x);
}
static double f_identity(double x) {
    return x;
}

static double f_add(double a, double b) {
    return a + b;
}
static double f_sub(double a, double b) {
    return a - b;
}
static double f_mul(double a, double b) {
    return a * b;
}
static double f_div(double a, double b) {
    return a / b;
}
static double f_pow(double a, double b) {
    return pow(a, b);
}
/* NaN propagates, as in PyTorch's maximum/minimum. */
static double f_maximum(double a, double b) {
    return (a > b || isnan(a)) ? a : b;
}
static double f_minimum(double a, double b) {
    return (a < b || isnan(a)) ? a : b;
}
static double f_eq(double a, double b) {
    return a == b;
}
static double f_ne(double a, double b) {
    return a != b;
}
static double f_lt(double a, double b) {
    return a < b;
}
static double f_le(double a, double b) {
    return a <= b;
}
static double f_gt(double a, double b) {
    return a > b;
}
static double f_ge(double a, double b) {
    return a >= b;
}

/* Derivatives for the backward ops gelu_grad and gelu_tanh_grad: dy * f'(x). */
static double f_gelu_grad(double x, double dy) {
    double cdf = 0.5 * (1.0 + erf(x * 0.70710678118654752440));
    double pdf = exp(-0.5 * x * x) * 0.39894228040143267794; /* 1/sqrt(2 pi) */
    return dy * (cdf + x * pdf);
}
static double f_gelu_tanh_grad(double x, double dy) {
    const double k = 0.79788456080286535588; /* sqrt(2/pi) */
    double t = tanh(k * (x + 0.044715 * x * x * x));
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3 * 0.044715 * x * x));
}

/* ---- shape rules ---- */

static bool shape_source(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    for (int i = 0; i < n->rank; i++) {
        if (n->shape[i] < -1 || (n->op != TG_OP_PLACEHOLDER && n->shape[i] < 0))
            return fail(err, errsz, "dimension %d is %lld; expected >= 0%s", i,
                        (long long)n->shape[i],
                        n->op == TG_OP_PLACEHOLDER ? " or -1 (dynamic)" : "");
        if (n->shape[i] > ((int64_t)1 << 40))
            return fail(err, errsz, "dimension %d is %lld; the limit is 2^40", i,
                        (long long)n->shape[i]);
    }
    if (tg_shape_count(n->rank, n->shape) == INT64_MAX)
        return fail(err, errsz, "element count overflows");
    if (n->op == TG_OP_CONSTANT && !n->data && tg_shape_count(n->rank, n->shape) > 0)
        return fail(err, errsz, "constant has no data");
    if ((n->op == TG_OP_PLACEHOLDER || n->op == TG_OP_VARIABLE) && (!n->name || !n->name[0]))
        return fail(err, errsz, "a %s needs a name", tg_ops[n->op].name);
    return true;
}

/* Unary ops that are only defined on floats. */
static bool shape_unary_float(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(0);
    if (!tg_dtype_is_float(x->dtype))
        return fail(err, errsz, "expected a float input (f32, f16 or bf16), got %s",
                    tg_dtype_name(x->dtype));
    n->dtype = x->dtype;
    copy_shape(n, x);
    return true;
}

/* Unary ops defined on every numeric dtype. */
static bool shape_unary_any(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(0);
    n->dtype = x->dtype;
    copy_shape(n, x);
    return true;
}

static bool shape_cast(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    if ((unsigned)n->dtype >= TG_DTYPE_COUNT) return fail(err, errsz, "bad target dtype");
    copy_shape(n, IN(0));
    return true;
}

static bool broadcast_into(tg_node *n, const tg_node *a, const tg_node *b, char *err,
                           size_t errsz) {
    char sa[96], sb[96];
    if (!tg_broadcast_shapes(a->rank, a->shape, b->rank, b->shape, &n->rank, n->shape))
        return fail(err, errsz,
                    "cannot broadcast %s with %s (NumPy rules: dims must be equal or 1)",
                    tg_shape_str(a->dtype, a->rank, a->shape, sa, sizeof sa),
                    tg_shape_str(b->dtype, b->rank, b->shape, sb, sizeof sb));
    return true;
}

static bool shape_binary(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *a = IN(0), *b = IN(1);
    if (a->dtype != b->dtype)
        return fail(err, errsz, "inputs have dtypes %s and %s; expected equal dtypes (use cast)",
                    tg_dtype_name(a->dtype), tg_dtype_name(b->dtype));
    if (n->op == TG_OP_POW && !tg_dtype_is_float(a->dtype))
        return fail(err, errsz, "expected float inputs, got %s", tg_dtype_name(a->dtype));
    n->dtype = a->dtype;
    return broadcast_into(n, a, b, err, errsz);
}

static bool shape_compare(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    if (!shape_binary(g, n, err, errsz)) return false;
    n->dtype = TG_U8;
    return true;
}

static bool shape_where(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *c = IN(0), *a = IN(1), *b = IN(2);
    if (c->dtype != TG_U8)
        return fail(err, errsz, "condition must be u8, got %s", tg_dtype_name(c->dtype));
    if (a->dtype != b->dtype)
        return fail(err, errsz, "values have dtypes %s and %s; expected equal dtypes",
                    tg_dtype_name(a->dtype), tg_dtype_name(b->dtype));
    tg_node ab = *n;
    if (!broadcast_into(&ab, a, b, err, errsz)) return false;
    ab.dtype = a->dtype;
    if (!broadcast_into(n, c, &ab, err, errsz)) return false;
    n->dtype = a->dtype;
    return true;
}

/* Normalises attrs.axes of a reduction (n_axes 0 = all) and fills the shape. */
static bool shape_reduce(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(0);
    tg_attrs *at = &n->attrs;
    bool reduced[TG_MAX_RANK] = {false};
    if (at->n_axes < 0 || at->n_axes > x->rank)
        return fail(err, errsz, "%d axes given for a rank-%d input", at->n_axes, x->rank);
    for (int i = 0; i < at->n_axes; i++) {
        int64_t ax;
        if (!tg_norm_axis(at->axes[i], x->rank, &ax))
            return fail(err, errsz, "axis %lld is out of range for rank %d", (long long)at->axes[i],
                        x->rank);
        if (reduced[ax]) return fail(err, errsz, "axis %lld is given twice", (long long)ax);
        reduced[ax] = true;
        at->axes[i] = ax;
    }
    if (at->n_axes == 0)
        for (int i = 0; i < x->rank; i++) reduced[i] = true;
    if (n->op == TG_OP_MEAN && !tg_dtype_is_float(x->dtype))
        return fail(err, errsz, "mean needs a float input, got %s", tg_dtype_name(x->dtype));
    n->dtype = x->dtype;
    n->rank = 0;
    for (int i = 0; i < x->rank; i++) {
        if (!reduced[i])
            n->shape[n->rank++] = x->shape[i];
        else if (at->keepdims)
            n->shape[n->rank++] = 1;
    }
    return true;
}

static bool shape_argmax(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(0);
    int64_t ax;
    if (x->rank == 0) return fail(err, errsz, "argmax needs rank >= 1");
    if (!tg_norm_axis(n->attrs.axis, x->rank, &ax))
        return fail(err, errsz, "axis %lld is out of range for rank %d", (long long)n->attrs.axis,
                    x->rank);
    n->attrs.axis = ax;
    n->dtype = TG_I32;
    n->rank = 0;
    for (int i = 0; i < x->rank; i++) {
        if (i != ax)
            n->shape[n->rank++] = x->shape[i];
        else if (n->attrs.keepdims)
            n->shape[n->rank++] = 1;
    }
    return true;
}

static bool shape_reshape(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(0);
    const tg_attrs *at = &n->attrs;
    char sx[96];
    if (at->n_shape < 0 || at->n_shape > TG_MAX_RANK)
        return fail(err, errsz, "target rank %d is over %d", at->n_shape, TG_MAX_RANK);
    int infer = -1;
    bool dynamic_out = false;
    int64_t known = 1; /* product of static output dims that are not copies of dynamic ones */
    for (int i = 0; i < at->n_shape; i++) {
        int64_t d = at->shape[i];
        if (d == 0) {
            if (i >= x->rank)
                return fail(err, errsz,
                            "shape[%d] = 0 copies input dim %d, but the input has rank %d", i, i,
                            x->rank);
            d = x->shape[i];
        } else if (d == -1) {
            if (infer >= 0) return fail(err, errsz, "more than one -1 in the target shape");
            infer = i;
        } else if (d < -1 || d > ((int64_t)1 << 40)) {
            return fail(err, errsz, "bad target dimension %lld", (long long)d);
        }
        n->shape[i] = d;
        if (d < 0 && i != infer) dynamic_out = true;
        if (d > 0 && known <= ((int64_t)1 << 50) / d)
            known *= d;
        else if (d == 0)
            known = 0;
    }
    n->rank = at->n_shape;
    n->dtype = x->dtype;
    /* Input element count, ignoring dynamic dims that the output copies. */
    int64_t in_known = 1;
    bool in_dynamic = false;
    for (int i = 0; i < x->rank; i++) {
        if (x->shape[i] < 0) {
            bool copied = i < at->n_shape && at->shape[i] == 0;
            if (!copied) in_dynamic = true;
        } else if (in_known <= ((int64_t)1 << 50) / (x->shape[i] ? x->shape[i] : 1)) {
            in_known *= x->shape[i];
        }
    }
    if (in_dynamic) {
        if (infer >= 0) n->shape[infer] = -1;
        return true;
    }
    if (infer >= 0) {
        if (known == 0 || in_known % known != 0)
            return fail(err, errsz, "cannot infer -1: %lld elements of %s do not divide by %lld",
                        (long long)in_known,
                        tg_shape_str(x->dtype, x->rank, x->shape, sx, sizeof sx), (long long)known);
        n->shape[infer] = in_known / known;
        known = in_known;
    }
    (void)dynamic_out;
    if (known != in_known)
        return fail(err, errsz, "%s has %lld elements; the target shape has %lld",
                    tg_shape_str(x->dtype, x->rank, x->shape, sx, sizeof sx), (long long)in_known,
                    (long long)known);
    return true;
}

static bool shape_permute(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(0);
    const tg_attrs *at = &n->attrs;
    bool seen[TG_MAX_RANK] = {false};
    if (at->n_axes != x->rank)
        return fail(err, errsz, "permutation has %d entries; expected %d (the input rank)",
                    at->n_axes, x->rank);
    for (int i = 0; i < x->rank; i++) {
        int64_t p = at->axes[i];
        if (p < 0 || p >= x->rank || seen[p])
            return fail(err, errsz, "axes is not a permutation of 0..%d", x->rank - 1);
        seen[p] = true;
        n->shape[i] = x->shape[p];
    }
    n->rank = x->rank;
    n->dtype = x->dtype;
    return true;
}

static bool shape_broadcast_to(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(0);
    const tg_attrs *at = &n->attrs;
    char sx[96], st[96];
    if (at->n_shape < x->rank || at->n_shape > TG_MAX_RANK)
        return fail(err, errsz, "target rank %d is below the input rank %d or over %d", at->n_shape,
                    x->rank, TG_MAX_RANK);
    for (int i = 0; i < at->n_shape; i++) {
        int64_t d = at->shape[i];
        if (d < -1 || d > ((int64_t)1 << 40))
            return fail(err, errsz, "bad target dimension %lld", (long long)d);
        int xi = i - (at->n_shape - x->rank);
        if (xi >= 0 && x->shape[xi] != 1 && !dims_match(x->shape[xi], d))
            return fail(err, errsz, "cannot broadcast %s to %s",
                        tg_shape_str(x->dtype, x->rank, x->shape, sx, sizeof sx),
                        tg_shape_str(x->dtype, at->n_shape, at->shape, st, sizeof st));
        n->shape[i] = d;
    }
    n->rank = at->n_shape;
    n->dtype = x->dtype;
    return true;
}

/* Python slicing: negative indices count from the end, both ends clamp. */
static int64_t clamp_index(int64_t i, int64_t dim) {
    if (i < 0) i += dim;
    return i < 0 ? 0 : i > dim ? dim : i;
}

/* The slice of x under n's attrs (normalised here): fills n's shape. */
static bool slice_shape(const tg_node *x, tg_node *n, char *err, size_t errsz) {
    tg_attrs *at = &n->attrs;
    if (at->n_slice != x->rank)
        return fail(err, errsz, "begin/end/step have %d entries; expected %d (the input rank)",
                    at->n_slice, x->rank);
    for (int i = 0; i < x->rank; i++) {
        if (at->step[i] < 1)
            return fail(err, errsz, "step[%d] is %lld; expected >= 1", i, (long long)at->step[i]);
        int64_t d = x->shape[i];
        if (d < 0) { /* dynamic: resolved when specialised */
            n->shape[i] = -1;
            continue;
        }
        int64_t b = clamp_index(at->begin[i], d), e = clamp_index(at->end[i], d);
        at->begin[i] = b; /* normalised: interpreters and kernels see plain indices */
        at->end[i] = e < b ? b : e;
        n->shape[i] = (at->end[i] - b + at->step[i] - 1) / at->step[i];
    }
    n->rank = x->rank;
    n->dtype = x->dtype;
    return true;
}

static bool shape_slice(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    return slice_shape(IN(0), n, err, errsz);
}

static bool shape_concat(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x0 = IN(0);
    int64_t ax;
    char s0[96], si[96];
    if (x0->rank == 0) return fail(err, errsz, "cannot concatenate rank-0 tensors");
    if (!tg_norm_axis(n->attrs.axis, x0->rank, &ax))
        return fail(err, errsz, "axis %lld is out of range for rank %d", (long long)n->attrs.axis,
                    x0->rank);
    n->attrs.axis = ax;
    copy_shape(n, x0);
    n->dtype = x0->dtype;
    for (int k = 1; k < n->n_inputs; k++) {
        const tg_node *xi = IN(k);
        bool ok = xi->rank == x0->rank && xi->dtype == x0->dtype;
        for (int i = 0; ok && i < x0->rank; i++)
            if (i != ax && !dims_match(xi->shape[i], x0->shape[i])) ok = false;
        if (!ok)
            return fail(err, errsz,
                        "input %d is %s but input 0 is %s; expected equal dtypes and equal dims "
                        "except axis %lld",
                        k, tg_shape_str(xi->dtype, xi->rank, xi->shape, si, sizeof si),
                        tg_shape_str(x0->dtype, x0->rank, x0->shape, s0, sizeof s0), (long long)ax);
        if (n->shape[ax] < 0 || xi->shape[ax] < 0)
            n->shape[ax] = -1;
        else
            n->shape[ax] += xi->shape[ax];
    }
    return true;
}

static bool shape_pad(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(0);
    const tg_attrs *at = &n->attrs;
    if (at->n_slice != x->rank)
        return fail(err, errsz, "lo/hi have %d entries; expected %d (the input rank)", at->n_slice,
                    x->rank);
    for (int i = 0; i < x->rank; i++) {
        if (at->lo[i] < 0 || at->hi[i] < 0 || at->lo[i] > ((int64_t)1 << 40) ||
            at->hi[i] > ((int64_t)1 << 40))
            return fail(err, errsz, "padding of axis %d is (%lld, %lld); expected >= 0", i,
                        (long long)at->lo[i], (long long)at->hi[i]);
        n->shape[i] = x->shape[i] < 0 ? -1 : x->shape[i] + at->lo[i] + at->hi[i];
    }
    n->rank = x->rank;
    n->dtype = x->dtype;
    return true;
}

/* out = x[:axis] + indices.shape + x[axis+1:] (gather, and scatter_add's updates) */
static bool gathered_shape(const tg_node *x, const tg_node *idx, int64_t *axis, int *rank,
                           int64_t *shape, char *err, size_t errsz) {
    int64_t ax;
    if (idx->dtype != TG_I32)
        return fail(err, errsz, "indices must be i32, got %s", tg_dtype_name(idx->dtype));
    if (x->rank == 0) return fail(err, errsz, "cannot index a rank-0 tensor");
    if (!tg_norm_axis(*axis, x->rank, &ax))
        return fail(err, errsz, "axis %lld is out of range for rank %d", (long long)*axis, x->rank);
    *axis = ax;
    int r = x->rank - 1 + idx->rank;
    if (r > TG_MAX_RANK) return fail(err, errsz, "result rank %d is over %d", r, TG_MAX_RANK);
    int k = 0;
    for (int i = 0; i < ax; i++) shape[k++] = x->shape[i];
    for (int i = 0; i < idx->rank; i++) shape[k++] = idx->shape[i];
    for (int i = (int)ax + 1; i < x->rank; i++) shape[k++] = x->shape[i];
    *rank = r;
    return true;
}

static bool shape_gather(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    n->dtype = IN(0)->dtype;
    return gathered_shape(IN(0), IN(1), &n->attrs.axis, &n->rank, n->shape, err, errsz);
}

static bool shape_scatter_add(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *t = IN(0), *u = IN(2);
    int rank = 0;
    int64_t want[TG_MAX_RANK];
    char su[96], sw[96];
    if (!gathered_shape(t, IN(1), &n->attrs.axis, &rank, want, err, errsz)) return false;
    bool ok = u->rank == rank && u->dtype == t->dtype;
    for (int i = 0; ok && i < rank; i++) ok = dims_match(u->shape[i], want[i]);
    if (!ok)
        return fail(err, errsz, "updates are %s; expected %s",
                    tg_shape_str(u->dtype, u->rank, u->shape, su, sizeof su),
                    tg_shape_str(t->dtype, rank, want, sw, sizeof sw));
    n->dtype = t->dtype;
    copy_shape(n, t);
    return true;
}

static bool shape_one_hot(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *idx = IN(0);
    if (idx->dtype != TG_I32)
        return fail(err, errsz, "indices must be i32, got %s", tg_dtype_name(idx->dtype));
    if (n->attrs.depth < 1 || n->attrs.depth > ((int64_t)1 << 40))
        return fail(err, errsz, "depth is %lld; expected >= 1", (long long)n->attrs.depth);
    if (idx->rank + 1 > TG_MAX_RANK) return fail(err, errsz, "result rank is over %d", TG_MAX_RANK);
    copy_shape(n, idx);
    n->shape[n->rank++] = n->attrs.depth;
    return true;
}

static bool shape_iota(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_attrs *at = &n->attrs;
    int64_t ax;
    if (at->n_shape < 1 || at->n_shape > TG_MAX_RANK)
        return fail(err, errsz, "iota needs a shape of rank 1..%d", TG_MAX_RANK);
    for (int i = 0; i < at->n_shape; i++) {
        if (at->shape[i] < 0 || at->shape[i] > ((int64_t)1 << 40))
            return fail(err, errsz, "bad dimension %lld", (long long)at->shape[i]);
        n->shape[i] = at->shape[i];
    }
    n->rank = at->n_shape;
    if (!tg_norm_axis(at->axis, n->rank, &ax))
        return fail(err, errsz, "axis %lld is out of range for rank %d", (long long)at->axis,
                    n->rank);
    n->attrs.axis = ax;
    if (tg_shape_count(n->rank, n->shape) == INT64_MAX)
        return fail(err, errsz, "element count overflows");
    return true;
}

static bool shape_matmul(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *a = IN(0), *b = IN(1);
    char sa[96], sb[96];
    if (a->rank < 2 || b->rank < 2) return fail(err, errsz, "both inputs need rank >= 2");
    if (a->dtype != b->dtype)
        return fail(err, errsz, "inputs have dtypes %s and %s; expected equal dtypes",
                    tg_dtype_name(a->dtype), tg_dtype_name(b->dtype));
    bool ta = n->attrs.transpose_a, tb = n->attrs.transpose_b;
    int64_t m = a->shape[a->rank - (ta ? 1 : 2)], ka = a->shape[a->rank - (ta ? 2 : 1)];
    int64_t kb = b->shape[b->rank - (tb ? 1 : 2)], nn = b->shape[b->rank - (tb ? 2 : 1)];
    if (!dims_match(ka, kb))
        return fail(err, errsz, "inner dimensions differ: %s%s x %s%s (K %lld vs %lld)",
                    tg_shape_str(a->dtype, a->rank, a->shape, sa, sizeof sa), ta ? "^T" : "",
                    tg_shape_str(b->dtype, b->rank, b->shape, sb, sizeof sb), tb ? "^T" : "",
                    (long long)ka, (long long)kb);
    if (!tg_broadcast_shapes(a->rank - 2, a->shape, b->rank - 2, b->shape, &n->rank, n->shape))
        return fail(err, errsz, "batch dimensions of %s and %s do not broadcast",
                    tg_shape_str(a->dtype, a->rank, a->shape, sa, sizeof sa),
                    tg_shape_str(b->dtype, b->rank, b->shape, sb, sizeof sb));
    n->shape[n->rank++] = m;
    n->shape[n->rank++] = nn;
    n->dtype = a->dtype;
    return true;
}

/* The conv1d of x and w under n's attrs: fills n's dtype and shape. */
static bool conv1d_shape(const tg_node *x, const tg_node *w, tg_node *n, char *err, size_t errsz) {
    const tg_attrs *at = &n->attrs;
    char sx[96], sw[96];
    if (x->rank != 3 || w->rank != 3)
        return fail(err, errsz, "expected x [N, Cin, W] and w [Cout, Cin, K], got %s and %s",
                    tg_shape_str(x->dtype, x->rank, x->shape, sx, sizeof sx),
                    tg_shape_str(w->dtype, w->rank, w->shape, sw, sizeof sw));
    if (x->dtype != w->dtype || !tg_dtype_is_float(x->dtype))
        return fail(err, errsz, "expected equal float dtypes, got %s and %s",
                    tg_dtype_name(x->dtype), tg_dtype_name(w->dtype));
    if (!dims_match(x->shape[1], w->shape[1]))
        return fail(
            err, errsz, "input channels differ: x %s has %lld, w %s has %lld",
            tg_shape_str(x->dtype, x->rank, x->shape, sx, sizeof sx), (long long)x->shape[1],
            tg_shape_str(w->dtype, w->rank, w->shape, sw, sizeof sw), (long long)w->shape[1]);
    if (at->stride < 1 || at->padding < 0 || at->dilation < 1 || at->stride > (1 << 20) ||
        at->padding > (1 << 20) || at->dilation > (1 << 20))
        return fail(err, errsz,
                    "stride %lld, padding %lld, dilation %lld; expected >= 1, >= 0, >= 1",
                    (long long)at->stride, (long long)at->padding, (long long)at->dilation);
    n->rank = 3;
    n->dtype = x->dtype;
    n->shape[0] = x->shape[0];
    n->shape[1] = w->shape[0];
    if (x->shape[2] < 0 || w->shape[2] < 0) {
        n->shape[2] = -1;
        return true;
    }
    int64_t span = at->dilation * (w->shape[2] - 1) + 1;
    int64_t padded = x->shape[2] + 2 * at->padding;
    if (padded < span)
        return fail(err, errsz, "the kernel (span %lld) is longer than the padded input (%lld)",
                    (long long)span, (long long)padded);
    n->shape[2] = (padded - span) / at->stride + 1;
    return true;
}

static bool shape_conv1d(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    return conv1d_shape(IN(0), IN(1), n, err, errsz);
}

static bool shape_softmax(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(0);
    int64_t ax;
    if (!shape_unary_float(g, n, err, errsz)) return false;
    if (!tg_norm_axis(n->attrs.axis, x->rank, &ax))
        return fail(err, errsz, "axis %lld is out of range for rank %d", (long long)n->attrs.axis,
                    x->rank);
    n->attrs.axis = ax;
    return true;
}

static bool shape_layer_norm(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(0), *w = IN(1), *b = IN(2);
    char sx[96], sw[96], sb[96];
    if (!shape_unary_float(g, n, err, errsz)) return false;
    if (x->rank < 1) return fail(err, errsz, "expected rank >= 1");
    int64_t d = x->shape[x->rank - 1];
    if (w->rank != 1 || b->rank != 1 || !dims_match(w->shape[0], d) ||
        !dims_match(b->shape[0], d) || w->dtype != x->dtype || b->dtype != x->dtype)
        return fail(err, errsz, "weight %s and bias %s must be [%lld] of the dtype of x %s",
                    tg_shape_str(w->dtype, w->rank, w->shape, sw, sizeof sw),
                    tg_shape_str(b->dtype, b->rank, b->shape, sb, sizeof sb), (long long)d,
                    tg_shape_str(x->dtype, x->rank, x->shape, sx, sizeof sx));
    if (!(n->attrs.eps > 0) || !isfinite(n->attrs.eps))
        return fail(err, errsz, "eps is %g; expected > 0", n->attrs.eps);
    return true;
}

/* transpose_a on the attention ops: q, k, v, dout and the q/k/v-shaped
 * result are stored [batch..., T, H, D] for the logical [batch..., H, T, D]
 * (the head and time axes swapped, as a linear layer's output reshaped to
 * heads lays them out), so no permute copies them; mask, lse and delta
 * stay logical. permute_matmul (passes/algebra.c) sets it. */
static void swap_heads_time(tg_node *x) {
    int64_t t = x->shape[x->rank - 3];
    x->shape[x->rank - 3] = x->shape[x->rank - 2];
    x->shape[x->rank - 2] = t;
}

/* With transpose_a: q, k and v of one rank >= 3 and equal batch and head
 * dims (no broadcasting), as logical views in *lq, *lk, *lv. */
static bool heads_inner_views(const tg_node *q, const tg_node *k, const tg_node *v, tg_node *lq,
                              tg_node *lk, tg_node *lv, char *err, size_t errsz) {
    int r = q->rank;
    bool ok = r >= 3 && k->rank == r && v->rank == r;
    for (int d = 0; ok && d < r - 3; d++)
        ok = dims_match(q->shape[d], k->shape[d]) && dims_match(q->shape[d], v->shape[d]);
    ok = ok && dims_match(q->shape[r - 2], k->shape[r - 2]) &&
         dims_match(q->shape[r - 2], v->shape[r - 2]);
    if (!ok)
        return fail(err, errsz,
                    "transpose_a: expected q, k, v [..., T, H, D] of one rank >= 3 with equal "
                    "batch and head dims");
    *lq = *q;
    *lk = *k;
    *lv = *v;
    swap_heads_time(lq);
    swap_heads_time(lk);
    swap_heads_time(lv);
    return true;
}

/* attention of its first n_operands inputs (q, k, v, [mask]): fills n's
 * dtype and shape [batch..., Tq, Dv] (stored: [batch..., Tq, H, Dv] with
 * transpose_a) and normalises the scale. */
static bool attention_shape(const tg_graph *g, tg_node *n, int n_operands, char *err,
                            size_t errsz) {
    const tg_node *q = IN(0), *k = IN(1), *v = IN(2);
    tg_node lq, lk, lv;
    if (n->attrs.transpose_b) return fail(err, errsz, "transpose_b is not an attention attribute");
    if (n->attrs.transpose_a) {
        if (!heads_inner_views(q, k, v, &lq, &lk, &lv, err, errsz)) return false;
        q = &lq;
        k = &lk;
        v = &lv;
    }
    char sq[96], sk[96], sv[96];
    if (n->attrs.has_mask != (n_operands == 4))
        return fail(err, errsz, "has_mask is %s but there are %d inputs",
                    n->attrs.has_mask ? "set" : "not set", n->n_inputs);
    if (q->rank < 2 || k->rank < 2 || v->rank < 2 || q->dtype != k->dtype || q->dtype != v->dtype ||
        !tg_dtype_is_float(q->dtype) || !dims_match(q->shape[q->rank - 1], k->shape[k->rank - 1]) ||
        !dims_match(k->shape[k->rank - 2], v->shape[v->rank - 2]))
        return fail(err, errsz,
                    "expected q [..., Tq, D], k [..., Tk, D], v [..., Tk, Dv] of one float dtype; "
                    "got q %s, k %s, v %s",
                    tg_shape_str(q->dtype, q->rank, q->shape, sq, sizeof sq),
                    tg_shape_str(k->dtype, k->rank, k->shape, sk, sizeof sk),
                    tg_shape_str(v->dtype, v->rank, v->shape, sv, sizeof sv));
    int rb;
    int64_t batch[TG_MAX_RANK];
    if (!tg_broadcast_shapes(q->rank - 2, q->shape, k->rank - 2, k->shape, &rb, batch) ||
        !tg_broadcast_shapes(rb, batch, v->rank - 2, v->shape, &rb, batch))
        return fail(err, errsz, "batch dims of q %s, k %s, v %s do not broadcast",
                    tg_shape_str(q->dtype, q->rank, q->shape, sq, sizeof sq),
                    tg_shape_str(k->dtype, k->rank, k->shape, sk, sizeof sk),
                    tg_shape_str(v->dtype, v->rank, v->shape, sv, sizeof sv));
    int64_t tq = q->shape[q->rank - 2], tk = k->shape[k->rank - 2];
    int64_t dh = q->shape[q->rank - 1];
    memcpy(n->shape, batch, sizeof batch);
    n->rank = rb + 2;
    n->shape[rb] = tq;
    n->shape[rb + 1] = v->shape[v->rank - 1];
    n->dtype = q->dtype;
    if (n->attrs.has_mask) {
        const tg_node *m = IN(3);
        int64_t scores[TG_MAX_RANK], out[TG_MAX_RANK];
        int rs = rb + 2, ro;
        memcpy(scores, batch, sizeof batch);
        scores[rb] = tq;
        scores[rb + 1] = tk;
        if (m->dtype != q->dtype || !tg_broadcast_shapes(rs, scores, m->rank, m->shape, &ro, out) ||
            ro != rs)
            return fail(err, errsz,
                        "mask %s must be of dtype %s and broadcast to the scores [..., %lld, %lld]",
                        tg_shape_str(m->dtype, m->rank, m->shape, sq, sizeof sq),
                        tg_dtype_name(q->dtype), (long long)tq, (long long)tk);
    }
    if (!(n->attrs.scale > 0)) {
        if (dh < 1) return fail(err, errsz, "default scale needs a static head dim");
        n->attrs.scale = 1.0 / sqrt((double)dh);
    }
    if (!isfinite(n->attrs.scale)) return fail(err, errsz, "scale is not finite");
    if (n->attrs.transpose_a) swap_heads_time(n);
    return true;
}

static bool shape_attention(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    return attention_shape(g, n, n->n_inputs, err, errsz);
}

/* attention_lse (q, k, v, [mask]) -> [batch..., Tq, 1] */
static bool shape_attention_lse(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    if (!attention_shape(g, n, n->n_inputs, err, errsz)) return false;
    if (n->attrs.transpose_a) swap_heads_time(n); /* row statistics stay logical */
    n->shape[n->rank - 1] = 1;
    return true;
}

static bool shape_cross_entropy(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(0), *y = IN(1);
    char sx[96], sy[96];
    bool ok =
        tg_dtype_is_float(x->dtype) && x->rank >= 1 && y->dtype == TG_I32 && y->rank == x->rank - 1;
    for (int i = 0; ok && i < y->rank; i++) ok = dims_match(x->shape[i], y->shape[i]);
    if (!ok)
        return fail(err, errsz,
                    "expected float logits [..., C] and i32 labels [...]; got %s and %s",
                    tg_shape_str(x->dtype, x->rank, x->shape, sx, sizeof sx),
                    tg_shape_str(y->dtype, y->rank, y->shape, sy, sizeof sy));
    n->dtype = TG_F32;
    n->rank = 0;
    return true;
}

static bool same_type(const tg_node *a, const tg_node *b) {
    if (a->dtype != b->dtype || a->rank != b->rank) return false;
    for (int i = 0; i < a->rank; i++)
        if (!dims_match(a->shape[i], b->shape[i])) return false;
    return true;
}

static bool shape_assign(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *var = IN(0), *val = IN(1);
    char s0[96], s1[96];
    if (var->op != TG_OP_VARIABLE)
        return fail(err, errsz, "the first input must be a variable, got a %s",
                    tg_ops[var->op].name);
    if (!same_type(var, val))
        return fail(err, errsz, "variable '%s' is %s but the value is %s", var->name,
                    tg_shape_str(var->dtype, var->rank, var->shape, s0, sizeof s0),
                    tg_shape_str(val->dtype, val->rank, val->shape, s1, sizeof s1));
    n->dtype = var->dtype;
    copy_shape(n, var);
    return true;
}

static bool shape_slice_update(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *var = IN(0), *up = IN(1), *st = IN(2);
    char s0[96], s1[96];
    if (var->op != TG_OP_VARIABLE)
        return fail(err, errsz, "the first input must be a variable, got a %s",
                    tg_ops[var->op].name);
    bool ok = up->dtype == var->dtype && up->rank == var->rank;
    for (int i = 0; ok && i < var->rank; i++) ok = up->shape[i] <= var->shape[i];
    if (!ok)
        return fail(err, errsz, "the update %s does not fit in variable '%s' %s",
                    tg_shape_str(up->dtype, up->rank, up->shape, s1, sizeof s1), var->name,
                    tg_shape_str(var->dtype, var->rank, var->shape, s0, sizeof s0));
    if (st->dtype != TG_I32 || st->rank != 1 || !dims_match(st->shape[0], var->rank))
        return fail(err, errsz, "start must be i32[%d], got %s", var->rank,
                    tg_shape_str(st->dtype, st->rank, st->shape, s0, sizeof s0));
    n->dtype = var->dtype;
    copy_shape(n, var);
    return true;
}

/* ---- backward ops ---- */

static bool expect_same(const tg_node *want, const tg_node *got, const char *what, char *err,
                        size_t errsz) {
    char s0[96], s1[96];
    if (same_type(want, got)) return true;
    return fail(err, errsz, "%s is %s; expected %s", what,
                tg_shape_str(got->dtype, got->rank, got->shape, s1, sizeof s1),
                tg_shape_str(want->dtype, want->rank, want->shape, s0, sizeof s0));
}

static bool shape_binary_float(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    if (!shape_binary(g, n, err, errsz)) return false;
    if (!tg_dtype_is_float(n->dtype))
        return fail(err, errsz, "expected float inputs, got %s", tg_dtype_name(n->dtype));
    return true;
}

/* (y, dy; axis): dy has y's type. */
static bool shape_softmax_grad(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    return shape_softmax(g, n, err, errsz) && expect_same(IN(0), IN(1), "dy", err, errsz);
}

/* (dy, x, w; eps) -> x's type; w is [D]. */
static bool shape_layer_norm_grad_x(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(1), *w = IN(2);
    char sx[96], sw[96];
    if (!tg_dtype_is_float(x->dtype) || x->rank < 1)
        return fail(err, errsz, "x must be a float tensor of rank >= 1");
    if (w->rank != 1 || w->dtype != x->dtype || !dims_match(w->shape[0], x->shape[x->rank - 1]))
        return fail(err, errsz, "weight %s must be [%lld] of the dtype of x %s",
                    tg_shape_str(w->dtype, w->rank, w->shape, sw, sizeof sw),
                    (long long)x->shape[x->rank - 1],
                    tg_shape_str(x->dtype, x->rank, x->shape, sx, sizeof sx));
    if (!(n->attrs.eps > 0) || !isfinite(n->attrs.eps))
        return fail(err, errsz, "eps is %g; expected > 0", n->attrs.eps);
    n->dtype = x->dtype;
    copy_shape(n, x);
    return expect_same(x, IN(0), "dy", err, errsz);
}

/* (dy, x; eps) -> [2, D]: row 0 the weight gradient, row 1 the bias's. */
static bool shape_layer_norm_grad_wb(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(1);
    if (!tg_dtype_is_float(x->dtype) || x->rank < 1)
        return fail(err, errsz, "x must be a float tensor of rank >= 1");
    if (!(n->attrs.eps > 0) || !isfinite(n->attrs.eps))
        return fail(err, errsz, "eps is %g; expected > 0", n->attrs.eps);
    n->dtype = x->dtype;
    n->rank = 2;
    n->shape[0] = 2;
    n->shape[1] = x->shape[x->rank - 1];
    return expect_same(x, IN(0), "dy", err, errsz);
}

/* (q, k, v, [mask], dout, [lse, delta]): dout has attention's output
 * type; lse (attention_lse's) and delta (rowsum(dout * out)) are
 * [batch..., Tq, 1] of that dtype. The result is the gradient of q, k or v
 * over the broadcast batch dims. */
static bool shape_attention_grad(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    int nops = n->attrs.has_mask ? 4 : 3;
    bool stats = n->n_inputs == nops + 3;
    if (n->n_inputs != nops + 1 && !stats)
        return fail(err, errsz, "expected %d inputs (q, k, v,%s dout[, lse, delta]); got %d",
                    nops + 1, n->attrs.has_mask ? " mask," : "", n->n_inputs);
    if (!attention_shape(g, n, nops, err, errsz)) return false;
    if (!expect_same(n, IN(nops), "dout", err, errsz)) return false;
    if (stats) {
        tg_node row = *n;
        if (n->attrs.transpose_a) swap_heads_time(&row);
        row.shape[row.rank - 1] = 1;
        if (!expect_same(&row, IN(nops + 1), "lse", err, errsz) ||
            !expect_same(&row, IN(nops + 2), "delta", err, errsz))
            return false;
    }
    const tg_node *src = n->op == TG_OP_ATTENTION_GRAD_Q   ? IN(0)
                         : n->op == TG_OP_ATTENTION_GRAD_K ? IN(1)
                                                           : IN(2);
    int t = n->rank - (n->attrs.transpose_a ? 3 : 2); /* the time axis */
    n->shape[t] = src->shape[t - n->rank + src->rank];
    n->shape[n->rank - 1] = src->shape[src->rank - 1];
    return true;
}

/* (logits, labels, dloss): dloss is a rank-0 f32; the result has the
 * logits' type. */
static bool shape_cross_entropy_grad(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *dl = IN(2);
    if (!shape_cross_entropy(g, n, err, errsz)) return false;
    if (!expect_same(n, dl, "dloss", err, errsz)) return false;
    n->dtype = IN(0)->dtype;
    copy_shape(n, IN(0));
    return true;
}

/* (dy, x, w): dy has conv1d(x, w)'s type; the result has x's (grad_input)
 * or w's (grad_weight). x's width is taken from x, not recomputed from dy,
 * since with stride > 1 several widths give the same output length. */
static bool shape_conv1d_grad(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(1), *w = IN(2);
    if (!conv1d_shape(x, w, n, err, errsz)) return false;
    if (!expect_same(n, IN(0), "dy", err, errsz)) return false;
    copy_shape(n, n->op == TG_OP_CONV1D_GRAD_INPUT ? x : w);
    return true;
}

/* (dy, x; begin, end, step): dy has slice(x)'s type; the result x's. */
static bool shape_slice_grad(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_node *x = IN(1);
    if (!slice_shape(x, n, err, errsz)) return false;
    if (!expect_same(n, IN(0), "dy", err, errsz)) return false;
    copy_shape(n, x);
    return true;
}

/* ---- optimizers ---- */

static bool is_float_scalar(const tg_node *t) {
    return t->rank == 0 && tg_dtype_is_float(t->dtype);
}

/* Inputs [0, n_vars) are variables of one float type; `grad` has it too. */
static bool check_optimizer_tensors(const tg_graph *g, const tg_node *n, const int *vars,
                                    int n_vars, const tg_node *grad, char *err, size_t errsz) {
    const tg_node *w = IN(vars[0]);
    char s0[96];
    if (w->op != TG_OP_VARIABLE || !tg_dtype_is_float(w->dtype))
        return fail(err, errsz, "the weight must be a float variable, got a %s %s",
                    tg_ops[w->op].name, tg_shape_str(w->dtype, w->rank, w->shape, s0, sizeof s0));
    for (int i = 1; i < n_vars; i++) {
        const tg_node *s = IN(vars[i]);
        if (s->op != TG_OP_VARIABLE)
            return fail(err, errsz, "input %d must be a variable, got a %s", vars[i],
                        tg_ops[s->op].name);
        if (!expect_same(w, s, "a state variable", err, errsz)) return false;
    }
    return expect_same(w, grad, "the gradient", err, errsz);
}

static bool check_hyper(double v, double lo, double hi, const char *name, char *err, size_t errsz) {
    if (v >= lo && v <= hi) return true;
    return fail(err, errsz, "%s is %g; expected it in [%g, %g]", name, v, lo, hi);
}

/* lr is a rank-0 float; step (if given) a rank-0 float or i32. */
static bool check_lr_step(const tg_node *lr, const tg_node *step, char *err, size_t errsz) {
    char s0[96];
    if (!is_float_scalar(lr))
        return fail(err, errsz, "lr must be a rank-0 float, got %s",
                    tg_shape_str(lr->dtype, lr->rank, lr->shape, s0, sizeof s0));
    if (step && !(step->rank == 0 && (tg_dtype_is_float(step->dtype) || step->dtype == TG_I32)))
        return fail(err, errsz, "step must be a rank-0 float or i32, got %s",
                    tg_shape_str(step->dtype, step->rank, step->shape, s0, sizeof s0));
    return true;
}

/* (w, m, v, grad, lr, step): value and type of w. */
static bool shape_adamw_update(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_attrs *at = &n->attrs;
    static const int vars[] = {0, 1, 2};
    if (!check_optimizer_tensors(g, n, vars, 3, IN(3), err, errsz) ||
        !check_lr_step(IN(4), IN(5), err, errsz) ||
        !check_hyper(at->beta1, 0, 0.999999, "beta1", err, errsz) ||
        !check_hyper(at->beta2, 0, 0.999999999, "beta2", err, errsz) ||
        !check_hyper(at->weight_decay, 0, 1e6, "weight_decay", err, errsz))
        return false;
    if (!(at->eps > 0) || !isfinite(at->eps))
        return fail(err, errsz, "eps is %g; expected > 0", at->eps);
    n->dtype = IN(0)->dtype;
    copy_shape(n, IN(0));
    return true;
}

/* (w, grad, lr) without momentum; (w, grad, lr, step, buf) with it. */
static bool shape_sgd_update(const tg_graph *g, tg_node *n, char *err, size_t errsz) {
    const tg_attrs *at = &n->attrs;
    bool with_buf = at->momentum != 0;
    static const int vars[] = {0, 4};
    if (n->n_inputs != (with_buf ? 5 : 3))
        return fail(err, errsz, "momentum %g needs %s inputs, got %d", at->momentum,
                    with_buf ? "5 (w, grad, lr, step, buf)" : "3 (w, grad, lr)", n->n_inputs);
    if (!check_optimizer_tensors(g, n, vars, with_buf ? 2 : 1, IN(1), err, errsz) ||
        !check_lr_step(IN(2), with_buf ? IN(3) : NULL, err, errsz) ||
        !check_hyper(at->momentum, 0, 1e6, "momentum", err, errsz) ||
        !check_hyper(at->dampening, 0, 1, "dampening", err, errsz) ||
        !check_hyper(at->weight_decay, 0, 1e6, "weight_decay", err, errsz))
        return false;
    if (at->nesterov && (at->momentum <= 0 || at->dampening != 0))
        return fail(err, errsz, "nesterov needs momentum > 0 and dampening 0");
    n->dtype = IN(0)->dtype;
    copy_shape(n, IN(0));
    return true;
}

/* ---- the table ---- */

/* A row: name, min and max inputs, attributes, class, shape rule, scalar
 * functions; OPW adds the mask of variable inputs the op writes. */
#define OP(nm, lo, hi, at, kl, sh, fn1, fn2)                                                       \
    {                                                                                              \
        .name = nm, .min_inputs = lo, .max_inputs = hi, .attrs = at, .klass = kl, .shape = sh,     \
        .f1 = fn1, .f2 = fn2                                                                       \
    }
#define OPW(nm, lo, hi, at, kl, sh, fn1, fn2, wr)                                                  \
    {                                                                                              \
        .name = nm, .min_inputs = lo, .max_inputs = hi, .attrs = at, .klass = kl, .shape = sh,     \
        .f1 = fn1, .f2 = fn2, .writes = wr                                                         \
    }

#define SRC(nm) OP(nm, 0, 0, 0, TG_CLASS_SOURCE, shape_source, NULL, NULL)
#define UNF(nm, f) OP(nm, 1, 1, 0, TG_CLASS_ELEMENTWISE, shape_unary_float, f, NULL)
#define UNA(nm, f) OP(nm, 1, 1, 0, TG_CLASS_ELEMENTWISE, shape_unary_any, f, NULL)
#define BIN(nm, f) OP(nm, 2, 2, 0, TG_CLASS_ELEMENTWISE, shape_binary, NULL, f)
#define CMP(nm, f) OP(nm, 2, 2, 0, TG_CLASS_ELEMENTWISE, shape_compare, NULL, f)
#define RED(nm)                                                                                    \
    OP(nm, 1, 1, TG_ATTR_AXES | TG_ATTR_KEEPDIMS, TG_CLASS_REDUCTION, shape_reduce, NULL, NULL)

const tg_op_info tg_ops[TG_OP_COUNT] = {
    [TG_OP_PLACEHOLDER] = SRC("placeholder"),
    [TG_OP_VARIABLE] =
        OP("variable", 0, 0, TG_ATTR_TRAINABLE, TG_CLASS_SOURCE, shape_source, NULL, NULL),
    [TG_OP_CONSTANT] = SRC("constant"),
    [TG_OP_NEG] = UNA("neg", f_neg),
    [TG_OP_ABS] = UNA("abs", f_abs),
    [TG_OP_EXP] = UNF("exp", f_exp),
    [TG_OP_LOG] = UNF("log", f_log),
    [TG_OP_SQRT] = UNF("sqrt", f_sqrt),
    [TG_OP_RSQRT] = UNF("rsqrt", f_rsqrt),
    [TG_OP_RECIPROCAL] = UNF("reciprocal", f_reciprocal),
    [TG_OP_SQUARE] = UNA("square", f_square),
    [TG_OP_TANH] = UNF("tanh", f_tanh),
    [TG_OP_ERF] = UNF("erf", f_erf),
    [TG_OP_GELU] = UNF("gelu", f_gelu),
    [TG_OP_GELU_TANH] = UNF("gelu_tanh", f_gelu_tanh),
    [TG_OP_RELU] = UNA("relu", f_relu),
    [TG_OP_SIGMOID] = UNF("sigmoid", f_sigmoid),
    [TG_OP_SILU] = UNF("silu", f_silu),
    [TG_OP_SIN] = UNF("sin", f_sin),
    [TG_OP_COS] = UNF("cos", f_cos),
    [TG_OP_CAST] = OP("cast", 1, 1, 0, TG_CLASS_ELEMENTWISE, shape_cast, f_identity, NULL),
    [TG_OP_STOP_GRADIENT] = UNA("stop_gradient", f_identity),
    [TG_OP_ADD] = BIN("add", f_add),
    [TG_OP_SUB] = BIN("sub", f_sub),
    [TG_OP_MUL] = BIN("mul", f_mul),
    [TG_OP_DIV] = BIN("div", f_div),
    [TG_OP_POW] = BIN("pow", f_pow),
    [TG_OP_MAXIMUM] = BIN("maximum", f_maximum),
    [TG_OP_MINIMUM] = BIN("minimum", f_minimum),
    [TG_OP_EQ] = CMP("eq", f_eq),
    [TG_OP_NE] = CMP("ne", f_ne),
    [TG_OP_LT] = CMP("lt", f_lt),
    [TG_OP_LE] = CMP("le", f_le),
    [TG_OP_GT] = CMP("gt", f_gt),
    [TG_OP_GE] = CMP("ge", f_ge),
    [TG_OP_WHERE] = OP("where", 3, 3, 0, TG_CLASS_ELEMENTWISE, shape_where, NULL, NULL),
    [TG_OP_SUM] = RED("sum"),
    [TG_OP_MEAN] = RED("mean"),
    [TG_OP_MAX] = RED("max"),
    [TG_OP_MIN] = RED("min"),
    [TG_OP_ARGMAX] = OP("argmax", 1, 1, TG_ATTR_AXIS | TG_ATTR_KEEPDIMS, TG_CLASS_REDUCTION,
                        shape_argmax, NULL, NULL),
    [TG_OP_RESHAPE] =
        OP("reshape", 1, 1, TG_ATTR_SHAPE, TG_CLASS_MOVEMENT, shape_reshape, NULL, NULL),
    [TG_OP_PERMUTE] =
        OP("permute", 1, 1, TG_ATTR_AXES, TG_CLASS_MOVEMENT, shape_permute, NULL, NULL),
    [TG_OP_BROADCAST_TO] =
        OP("broadcast_to", 1, 1, TG_ATTR_SHAPE, TG_CLASS_MOVEMENT, shape_broadcast_to, NULL, NULL),
    [TG_OP_SLICE] = OP("slice", 1, 1, TG_ATTR_BEGIN, TG_CLASS_MOVEMENT, shape_slice, NULL, NULL),
    [TG_OP_CONCAT] = OP("concat", 1, -1, TG_ATTR_AXIS, TG_CLASS_MOVEMENT, shape_concat, NULL, NULL),
    [TG_OP_PAD] =
        OP("pad", 1, 1, TG_ATTR_LO_HI | TG_ATTR_VALUE, TG_CLASS_MOVEMENT, shape_pad, NULL, NULL),
    [TG_OP_GATHER] = OP("gather", 2, 2, TG_ATTR_AXIS, TG_CLASS_MOVEMENT, shape_gather, NULL, NULL),
    [TG_OP_SCATTER_ADD] =
        OP("scatter_add", 3, 3, TG_ATTR_AXIS, TG_CLASS_OPAQUE, shape_scatter_add, NULL, NULL),
    [TG_OP_ONE_HOT] =
        OP("one_hot", 1, 1, TG_ATTR_DEPTH, TG_CLASS_ELEMENTWISE, shape_one_hot, NULL, NULL),
    [TG_OP_IOTA] = OP("iota", 0, 0, TG_ATTR_SHAPE | TG_ATTR_AXIS, TG_CLASS_ELEMENTWISE, shape_iota,
                      NULL, NULL),
    [TG_OP_MATMUL] =
        OP("matmul", 2, 2, TG_ATTR_TRANSPOSE, TG_CLASS_MATMUL, shape_matmul, NULL, NULL),
    [TG_OP_CONV1D] = OP("conv1d", 2, 2, TG_ATTR_CONV, TG_CLASS_MATMUL, shape_conv1d, NULL, NULL),
    [TG_OP_SOFTMAX] = OP("softmax", 1, 1, TG_ATTR_AXIS, TG_CLASS_OPAQUE, shape_softmax, NULL, NULL),
    [TG_OP_LOG_SOFTMAX] =
        OP("log_softmax", 1, 1, TG_ATTR_AXIS, TG_CLASS_OPAQUE, shape_softmax, NULL, NULL),
    [TG_OP_LAYER_NORM] =
        OP("layer_norm", 3, 3, TG_ATTR_EPS, TG_CLASS_OPAQUE, shape_layer_norm, NULL, NULL),
    [TG_OP_ATTENTION] =
        OP("attention", 3, 4, TG_ATTR_ATTENTION | TG_ATTR_HAS_MASK | TG_ATTR_TRANSPOSE,
           TG_CLASS_OPAQUE, shape_attention, NULL, NULL),
    [TG_OP_CROSS_ENTROPY] =
        OP("cross_entropy", 2, 2, TG_ATTR_IGNORE, TG_CLASS_OPAQUE, shape_cross_entropy, NULL, NULL),
    [TG_OP_ASSIGN] = OPW("assign", 2, 2, 0, TG_CLASS_STATE, shape_assign, NULL, NULL, 1u),
    [TG_OP_SLICE_UPDATE] =
        OPW("slice_update", 3, 3, 0, TG_CLASS_STATE, shape_slice_update, NULL, NULL, 1u),
    [TG_OP_GELU_GRAD] =
        OP("gelu_grad", 2, 2, 0, TG_CLASS_ELEMENTWISE, shape_binary_float, NULL, f_gelu_grad),
    [TG_OP_GELU_TANH_GRAD] = OP("gelu_tanh_grad", 2, 2, 0, TG_CLASS_ELEMENTWISE, shape_binary_float,
                                NULL, f_gelu_tanh_grad),
    [TG_OP_SOFTMAX_GRAD] =
        OP("softmax_grad", 2, 2, TG_ATTR_AXIS, TG_CLASS_OPAQUE, shape_softmax_grad, NULL, NULL),
    [TG_OP_LOG_SOFTMAX_GRAD] =
        OP("log_softmax_grad", 2, 2, TG_ATTR_AXIS, TG_CLASS_OPAQUE, shape_softmax_grad, NULL, NULL),
    [TG_OP_LAYER_NORM_GRAD_X] = OP("layer_norm_grad_x", 3, 3, TG_ATTR_EPS, TG_CLASS_OPAQUE,
                                   shape_layer_norm_grad_x, NULL, NULL),
    [TG_OP_LAYER_NORM_GRAD_WB] = OP("layer_norm_grad_wb", 2, 2, TG_ATTR_EPS, TG_CLASS_OPAQUE,
                                    shape_layer_norm_grad_wb, NULL, NULL),
    [TG_OP_ATTENTION_GRAD_Q] =
        OP("attention_grad_q", 4, 7, TG_ATTR_ATTENTION | TG_ATTR_HAS_MASK | TG_ATTR_TRANSPOSE,
           TG_CLASS_OPAQUE, shape_attention_grad, NULL, NULL),
    [TG_OP_ATTENTION_GRAD_K] =
        OP("attention_grad_k", 4, 7, TG_ATTR_ATTENTION | TG_ATTR_HAS_MASK | TG_ATTR_TRANSPOSE,
           TG_CLASS_OPAQUE, shape_attention_grad, NULL, NULL),
    [TG_OP_ATTENTION_GRAD_V] =
        OP("attention_grad_v", 4, 7, TG_ATTR_ATTENTION | TG_ATTR_HAS_MASK | TG_ATTR_TRANSPOSE,
           TG_CLASS_OPAQUE, shape_attention_grad, NULL, NULL),
    [TG_OP_ATTENTION_LSE] =
        OP("attention_lse", 3, 4, TG_ATTR_ATTENTION | TG_ATTR_HAS_MASK | TG_ATTR_TRANSPOSE,
           TG_CLASS_OPAQUE, shape_attention_lse, NULL, NULL),
    [TG_OP_CROSS_ENTROPY_GRAD] = OP("cross_entropy_grad", 3, 3, TG_ATTR_IGNORE, TG_CLASS_OPAQUE,
                                    shape_cross_entropy_grad, NULL, NULL),
    [TG_OP_CONV1D_GRAD_INPUT] =
        OP("conv1d_grad_input", 3, 3, TG_ATTR_CONV, TG_CLASS_OPAQUE, shape_conv1d_grad, NULL, NULL),
    [TG_OP_CONV1D_GRAD_WEIGHT] = OP("conv1d_grad_weight", 3, 3, TG_ATTR_CONV, TG_CLASS_OPAQUE,
                                    shape_conv1d_grad, NULL, NULL),
    [TG_OP_SLICE_GRAD] =
        OP("slice_grad", 2, 2, TG_ATTR_BEGIN, TG_CLASS_OPAQUE, shape_slice_grad, NULL, NULL),
    [TG_OP_ADAMW_UPDATE] = OPW("adamw_update", 6, 6, TG_ATTR_EPS | TG_ATTR_BETAS | TG_ATTR_DECAY,
                               TG_CLASS_STATE, shape_adamw_update, NULL, NULL, 0x7u),
    [TG_OP_SGD_UPDATE] = OPW("sgd_update", 3, 5, TG_ATTR_MOMENTUM | TG_ATTR_DECAY, TG_CLASS_STATE,
                             shape_sgd_update, NULL, NULL, 0x11u),
};

tg_op tg_op_from_name(const char *name) {
    for (int i = 0; i < TG_OP_COUNT; i++)
        if (tg_ops[i].name && strcmp(tg_ops[i].name, name) == 0) return (tg_op)i;
    return TG_OP_COUNT;
}
