/* interp.c — the reference interpreter: the oracle every kernel and every
 * gradient is checked against. It is allowed to be slow; it must be
 * obviously correct.
 *
 * Every value is a dense row-major array of doubles with the node's shape.
 * Each op's kernel is written once, in double; after each op the result is
 * rounded to the node's dtype (unless TG_INTERP_F64 keeps floats exact), so
 * an f16 graph sees f16 values between ops. Reductions, matmul and the
 * composites accumulate in double.
 *
 * A run: mark the nodes the targets need, check the feeds, fix dynamic
 * shapes by rebuilding the needed nodes with the fed shapes, evaluate in
 * node order, then apply the writes of the state ops to the store in node
 * order (so reads of a variable during the run all see its old value).
 *
 * A state op writes the variables its op-table row names (tg_op_info.
 * writes): its kernel gets one buffer per written input, holding the
 * variable's old value, and updates it in place; the node's own value is
 * the new value of its first written variable. */
#include "graph/graph_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* No single value may exceed this many elements (16 GiB of doubles): a
 * bad shape must give TG_ERR_NO_MEMORY, not an allocator abort. */
#define INTERP_MAX_ELEMENTS ((int64_t)1 << 31)
/* State ops write variables among their first this many inputs. */
#define TG_INTERP_MAX_WRITES 8

typedef struct interp {
    const tg_graph *g;      /* the graph being evaluated (g itself or a rebuilt copy) */
    const tg_graph *user_g; /* the caller's graph: error messages use its ids */
    int32_t *user_id;       /* id in user_g of each node of g; NULL: the same */
    tg_store *store;
    unsigned flags;
    bool *eval;            /* [n_nodes] compute this node */
    bool *keep;            /* [n_nodes] value needed after the run (target, state) */
    int32_t *last_use;     /* [n_nodes] last evaluated node reading this value */
    const tg_array **feed; /* [n_nodes] the fed value of a placeholder */
    double **vals;         /* [n_nodes] computed values */
    /* [n_nodes][input]: new values of the variables a state op writes */
    double *(*written)[TG_INTERP_MAX_WRITES];
} interp;

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static int64_t node_count(const tg_node *n) {
    return tg_shape_count(n->rank, n->shape);
}

static bool node_is_static(const tg_node *n) {
    for (int d = 0; d < n->rank; d++)
        if (n->shape[d] < 0) return false;
    return true;
}

/* "%12 (attention 'name')" with the id of the caller's graph. */
static const char *node_label(const interp *in, const tg_node *n, char *buf, size_t size) {
    int id = (int)(n - in->g->nodes);
    int user = in->user_id ? in->user_id[id] : id;
    if (n->name)
        snprintf(buf, size, "%%%d (%s '%s')", user, tg_ops[n->op].name, n->name);
    else
        snprintf(buf, size, "%%%d (%s)", user, tg_ops[n->op].name);
    return buf;
}

static const tg_node *input_node(const interp *in, const tg_node *n, int k) {
    return &in->g->nodes[n->inputs[k]];
}

static const double *input_val(const interp *in, const tg_node *n, int k) {
    return in->vals[n->inputs[k]];
}

static double *alloc_doubles(int64_t count) {
    if (count < 0 || count > INTERP_MAX_ELEMENTS) return NULL;
    return malloc((size_t)(count > 0 ? count : 1) * sizeof(double));
}

/* Strides to read an input of shape `in` at the position of an element of
 * the broadcast shape `out` (NumPy alignment from the right): 0 along the
 * axes the input is broadcast over. */
static void broadcast_strides(int in_rank, const int64_t *in_shape, int out_rank,
                              const int64_t *out_shape, int64_t *strides) {
    int64_t s = 1;
    for (int d = out_rank - 1; d >= 0; d--) {
        int di = d - (out_rank - in_rank);
        if (di < 0) {
            strides[d] = 0;
            continue;
        }
        strides[d] = (in_shape[di] == 1 && out_shape[d] != 1) ? 0 : s;
        s *= in_shape[di];
    }
}

/* The offset, under `strides`, of the element whose row-major index in
 * `shape` is i. */
static int64_t offset_of(int64_t i, int rank, const int64_t *shape, const int64_t *strides) {
    int64_t off = 0;
    for (int d = rank - 1; d >= 0; d--) {
        off += (i % shape[d]) * strides[d];
        i /= shape[d];
    }
    return off;
}

static int64_t prod(const int64_t *shape, int from, int to) {
    int64_t p = 1;
    for (int d = from; d < to; d++) p *= shape[d];
    return p;
}

static int norm_axis_or_zero(int64_t axis, int rank) {
    int64_t a = 0;
    if (!tg_norm_axis(axis, rank, &a)) return 0;
    return (int)a;
}

/* ------------------------------------------------------------------ */
/* Rounding to a dtype                                                 */
/* ------------------------------------------------------------------ */

static void round_value(const interp *in, const tg_node *n, double *v) {
    if ((in->flags & TG_INTERP_F64) && tg_dtype_is_float(n->dtype)) return;
    int64_t count = node_count(n);
    for (int64_t i = 0; i < count; i++) v[i] = tg_round_to_dtype(v[i], n->dtype);
}

/* ------------------------------------------------------------------ */
/* Sources                                                             */
/* ------------------------------------------------------------------ */

static void array_to_doubles(const tg_array *a, double *out) {
    int64_t count = tg_array_count(a);
    for (int64_t i = 0; i < count; i++) out[i] = tg_array_get(a, i);
}

/* Static dims must match exactly; a dynamic (-1) dim takes any size. */
static bool shape_fits(int rank, const int64_t *declared, int arank, const int64_t *actual) {
    if (rank != arank) return false;
    for (int d = 0; d < rank; d++)
        if (actual[d] < 0 || (declared[d] >= 0 && declared[d] != actual[d])) return false;
    return true;
}

static tg_status k_placeholder(interp *in, const tg_node *n, double *out) {
    array_to_doubles(in->feed[n - in->g->nodes], out);
    return TG_OK;
}

static tg_status k_variable(interp *in, const tg_node *n, double *out) {
    char lab[160], want[96], got[96];
    tg_store_entry *e = in->store ? tg_store_find(in->store, n->name) : NULL;
    if (!e)
        return tg_set_error(TG_ERR_NOT_FOUND, "tg_interpret: %s is not in the store%s",
                            node_label(in, n, lab, sizeof lab),
                            in->store ? "" : " (no store was given)");
    if (e->host_stale) {
        if (!in->store->sync_to_host)
            return tg_set_error(TG_ERR_RUNTIME,
                                "tg_interpret: variable '%s' is newer on the device and the store "
                                "cannot sync it",
                                n->name);
        tg_status st = in->store->sync_to_host(in->store, e);
        if (st != TG_OK) return st;
        e->host_stale = false;
    }
    const tg_array *a = &e->value;
    if (a->dtype != n->dtype || !shape_fits(n->rank, n->shape, a->rank, a->shape))
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_interpret: variable '%s' is declared %s but the store holds %s",
                            n->name, tg_shape_str(n->dtype, n->rank, n->shape, want, sizeof want),
                            tg_shape_str(a->dtype, a->rank, a->shape, got, sizeof got));
    array_to_doubles(a, out);
    return TG_OK;
}

static tg_status k_constant(interp *in, const tg_node *n, double *out) {
    char lab[160];
    int64_t count = node_count(n);
    if (count > 0 && (!n->data || n->data_bytes < (size_t)count * tg_dtype_size(n->dtype)))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_interpret: constant %s has no data",
                            node_label(in, n, lab, sizeof lab));
    tg_array view = {.dtype = n->dtype, .rank = n->rank, .data = n->data};
    memcpy(view.shape, n->shape, sizeof view.shape);
    array_to_doubles(&view, out);
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Elementwise                                                         */
/* ------------------------------------------------------------------ */

static tg_status k_unary(interp *in, const tg_node *n, double *out) {
    const double *x = input_val(in, n, 0);
    int64_t count = node_count(n);
    double (*f)(double) = tg_ops[n->op].f1;
    /* cast and stop_gradient copy; rounding to the node's dtype is the cast */
    if (n->op == TG_OP_CAST || n->op == TG_OP_STOP_GRADIENT)
        f = NULL;
    else if (!f) {
        char lab[160];
        return tg_set_error(TG_ERR_UNSUPPORTED, "tg_interpret: %s has no scalar function",
                            node_label(in, n, lab, sizeof lab));
    }
    for (int64_t i = 0; i < count; i++) out[i] = f ? f(x[i]) : x[i];
    return TG_OK;
}

/* Integer division truncates toward zero (the rounding step truncates the
 * exact quotient) and x/0 gives 0. */
static double int_divide(double a, double b) {
    return b == 0 ? 0 : a / b;
}

static tg_status k_binary(interp *in, const tg_node *n, double *out) {
    const tg_node *an = input_node(in, n, 0), *bn = input_node(in, n, 1);
    const double *a = input_val(in, n, 0), *b = input_val(in, n, 1);
    double (*f)(double, double) = tg_ops[n->op].f2;
    bool integer_div = n->op == TG_OP_DIV && !tg_dtype_is_float(an->dtype);
    if (integer_div) f = int_divide;
    if (!f) {
        char lab[160];
        return tg_set_error(TG_ERR_UNSUPPORTED, "tg_interpret: %s has no scalar function",
                            node_label(in, n, lab, sizeof lab));
    }
    int64_t sa[TG_MAX_RANK], sb[TG_MAX_RANK];
    broadcast_strides(an->rank, an->shape, n->rank, n->shape, sa);
    broadcast_strides(bn->rank, bn->shape, n->rank, n->shape, sb);
    int64_t count = node_count(n);
    for (int64_t i = 0; i < count; i++)
        out[i] = f(a[offset_of(i, n->rank, n->shape, sa)], b[offset_of(i, n->rank, n->shape, sb)]);
    return TG_OK;
}

static tg_status k_where(interp *in, const tg_node *n, double *out) {
    int64_t s[3][TG_MAX_RANK];
    const double *v[3];
    for (int k = 0; k < 3; k++) {
        const tg_node *x = input_node(in, n, k);
        broadcast_strides(x->rank, x->shape, n->rank, n->shape, s[k]);
        v[k] = input_val(in, n, k);
    }
    int64_t count = node_count(n);
    for (int64_t i = 0; i < count; i++) {
        bool c = v[0][offset_of(i, n->rank, n->shape, s[0])] != 0;
        out[i] = c ? v[1][offset_of(i, n->rank, n->shape, s[1])]
                   : v[2][offset_of(i, n->rank, n->shape, s[2])];
    }
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Reductions                                                          */
/* ------------------------------------------------------------------ */

/* Marks the reduced axes of an input of rank `rank` (n_axes == 0: all). */
static void reduced_axes(const tg_attrs *a, int rank, bool *reduced) {
    for (int d = 0; d < rank; d++) reduced[d] = a->n_axes == 0;
    for (int k = 0; k < a->n_axes; k++) reduced[norm_axis_or_zero(a->axes[k], rank)] = true;
}

static tg_status k_reduce(interp *in, const tg_node *n, double *out) {
    const tg_node *x = input_node(in, n, 0);
    const double *xv = input_val(in, n, 0);
    bool reduced[TG_MAX_RANK];
    reduced_axes(&n->attrs, x->rank, reduced);
    /* Output strides laid over the input's axes, 0 along reduced ones, so
     * every input element finds the output element it folds into. */
    int64_t kept[TG_MAX_RANK], strides[TG_MAX_RANK], group = 1;
    for (int d = 0; d < x->rank; d++) {
        kept[d] = reduced[d] ? 1 : x->shape[d];
        if (reduced[d]) group *= x->shape[d];
    }
    tg_shape_strides(x->rank, kept, strides);
    for (int d = 0; d < x->rank; d++)
        if (reduced[d]) strides[d] = 0;

    int64_t out_count = node_count(n), in_count = node_count(x);
    double init = n->op == TG_OP_MAX ? -INFINITY : n->op == TG_OP_MIN ? INFINITY : 0;
    for (int64_t o = 0; o < out_count; o++) out[o] = init;
    for (int64_t i = 0; i < in_count; i++) {
        double *acc = &out[offset_of(i, x->rank, x->shape, strides)];
        double v = xv[i];
        switch (n->op) {
        case TG_OP_MAX: *acc = (v > *acc || isnan(v)) ? v : *acc; break;
        case TG_OP_MIN: *acc = (v < *acc || isnan(v)) ? v : *acc; break;
        default: *acc += v; break;
        }
    }
    if (n->op == TG_OP_MEAN)
        for (int64_t o = 0; o < out_count; o++) out[o] = group ? out[o] / (double)group : NAN;
    return TG_OK;
}

static tg_status k_argmax(interp *in, const tg_node *n, double *out) {
    const tg_node *x = input_node(in, n, 0);
    const double *xv = input_val(in, n, 0);
    int axis = norm_axis_or_zero(n->attrs.axis, x->rank);
    int64_t outer = prod(x->shape, 0, axis), dim = x->shape[axis];
    int64_t inner = prod(x->shape, axis + 1, x->rank);
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < inner; i++) {
            const double *row = xv + o * dim * inner + i;
            int64_t best = 0;
            for (int64_t j = 1; j < dim; j++)
                if (row[j * inner] > row[best * inner]) best = j;
            out[o * inner + i] = (double)best;
        }
    }
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Data movement                                                       */
/* ------------------------------------------------------------------ */

static tg_status k_copy(interp *in, const tg_node *n, double *out) {
    memcpy(out, input_val(in, n, 0), (size_t)node_count(n) * sizeof(double));
    return TG_OK;
}

static tg_status k_permute(interp *in, const tg_node *n, double *out) {
    const tg_node *x = input_node(in, n, 0);
    const double *xv = input_val(in, n, 0);
    int64_t xs[TG_MAX_RANK], strides[TG_MAX_RANK];
    tg_shape_strides(x->rank, x->shape, xs);
    /* output axis d walks input axis perm[d] */
    for (int d = 0; d < n->rank; d++) strides[d] = xs[norm_axis_or_zero(n->attrs.axes[d], x->rank)];
    int64_t count = node_count(n);
    for (int64_t i = 0; i < count; i++) out[i] = xv[offset_of(i, n->rank, n->shape, strides)];
    return TG_OK;
}

static tg_status k_broadcast_to(interp *in, const tg_node *n, double *out) {
    const tg_node *x = input_node(in, n, 0);
    const double *xv = input_val(in, n, 0);
    int64_t strides[TG_MAX_RANK];
    broadcast_strides(x->rank, x->shape, n->rank, n->shape, strides);
    int64_t count = node_count(n);
    for (int64_t i = 0; i < count; i++) out[i] = xv[offset_of(i, n->rank, n->shape, strides)];
    return TG_OK;
}

/* begin/end/step arrive normalised by the shape rule: begin in range,
 * step >= 1, and the node's shape is the element count per axis. */
/* Where the slice's elements lie in x: the first at `base`, then `strides`
 * per slice axis. */
static int64_t slice_layout(const tg_node *x, const tg_attrs *at, int64_t *strides) {
    int64_t xs[TG_MAX_RANK], base = 0;
    tg_shape_strides(x->rank, x->shape, xs);
    for (int d = 0; d < x->rank; d++) {
        base += at->begin[d] * xs[d];
        strides[d] = at->step[d] * xs[d];
    }
    return base;
}

static tg_status k_slice(interp *in, const tg_node *n, double *out) {
    const double *xv = input_val(in, n, 0);
    int64_t strides[TG_MAX_RANK];
    int64_t base = slice_layout(input_node(in, n, 0), &n->attrs, strides);
    int64_t count = node_count(n);
    for (int64_t i = 0; i < count; i++)
        out[i] = xv[base + offset_of(i, n->rank, n->shape, strides)];
    return TG_OK;
}

/* slice_grad (dy, x): dy scattered into zeros of x's shape. */
static tg_status k_slice_grad(interp *in, const tg_node *n, double *out) {
    const tg_node *dy = input_node(in, n, 0);
    const double *dyv = input_val(in, n, 0);
    int64_t strides[TG_MAX_RANK];
    int64_t base = slice_layout(n, &n->attrs, strides);
    int64_t count = node_count(dy);
    for (int64_t i = 0; i < node_count(n); i++) out[i] = 0;
    for (int64_t i = 0; i < count; i++)
        out[base + offset_of(i, dy->rank, dy->shape, strides)] = dyv[i];
    return TG_OK;
}

static tg_status k_concat(interp *in, const tg_node *n, double *out) {
    int axis = norm_axis_or_zero(n->attrs.axis, n->rank);
    int64_t outer = prod(n->shape, 0, axis), inner = prod(n->shape, axis + 1, n->rank);
    int64_t out_row = n->shape[axis] * inner, pos = 0;
    for (int k = 0; k < n->n_inputs; k++) {
        const tg_node *x = input_node(in, n, k);
        const double *xv = input_val(in, n, k);
        int64_t row = x->shape[axis] * inner;
        for (int64_t o = 0; o < outer; o++)
            memcpy(out + o * out_row + pos, xv + o * row, (size_t)row * sizeof(double));
        pos += row;
    }
    return TG_OK;
}

static tg_status k_pad(interp *in, const tg_node *n, double *out) {
    const tg_node *x = input_node(in, n, 0);
    const double *xv = input_val(in, n, 0);
    int64_t os[TG_MAX_RANK], base = 0;
    tg_shape_strides(n->rank, n->shape, os);
    for (int d = 0; d < n->rank; d++) base += n->attrs.lo[d] * os[d];
    int64_t out_count = node_count(n), in_count = node_count(x);
    for (int64_t i = 0; i < out_count; i++) out[i] = n->attrs.value;
    for (int64_t i = 0; i < in_count; i++) out[base + offset_of(i, x->rank, x->shape, os)] = xv[i];
    return TG_OK;
}

/* gather and scatter_add see their data as [outer, dim, inner] and the
 * gathered side as [outer, n_indices, inner]. */
typedef struct gather_dims {
    int64_t outer, dim, inner, n_idx;
} gather_dims;

static gather_dims gather_layout(const tg_node *table, const tg_node *indices, int64_t axis_attr) {
    int axis = norm_axis_or_zero(axis_attr, table->rank);
    gather_dims gd = {prod(table->shape, 0, axis), table->shape[axis],
                      prod(table->shape, axis + 1, table->rank), node_count(indices)};
    return gd;
}

/* An index as an in-range row, or -1. */
static int64_t index_row(double v, int64_t dim) {
    return (v >= 0 && v < (double)dim) ? (int64_t)v : -1;
}

static tg_status k_gather(interp *in, const tg_node *n, double *out) {
    const double *xv = input_val(in, n, 0), *idx = input_val(in, n, 1);
    gather_dims gd = gather_layout(input_node(in, n, 0), input_node(in, n, 1), n->attrs.axis);
    for (int64_t o = 0; o < gd.outer; o++) {
        for (int64_t j = 0; j < gd.n_idx; j++) {
            int64_t row = index_row(idx[j], gd.dim);
            double *dst = out + (o * gd.n_idx + j) * gd.inner;
            for (int64_t i = 0; i < gd.inner; i++)
                dst[i] = row >= 0 ? xv[(o * gd.dim + row) * gd.inner + i] : 0;
        }
    }
    return TG_OK;
}

static tg_status k_scatter_add(interp *in, const tg_node *n, double *out) {
    const double *target = input_val(in, n, 0), *idx = input_val(in, n, 1);
    const double *upd = input_val(in, n, 2);
    gather_dims gd = gather_layout(input_node(in, n, 0), input_node(in, n, 1), n->attrs.axis);
    memcpy(out, target, (size_t)node_count(n) * sizeof(double));
    for (int64_t o = 0; o < gd.outer; o++) {
        for (int64_t j = 0; j < gd.n_idx; j++) {
            int64_t row = index_row(idx[j], gd.dim);
            if (row < 0) continue;
            double *dst = out + (o * gd.dim + row) * gd.inner;
            const double *src = upd + (o * gd.n_idx + j) * gd.inner;
            for (int64_t i = 0; i < gd.inner; i++) dst[i] += src[i];
        }
    }
    return TG_OK;
}

static tg_status k_one_hot(interp *in, const tg_node *n, double *out) {
    const double *idx = input_val(in, n, 0);
    int64_t depth = n->shape[n->rank - 1], count = node_count(input_node(in, n, 0));
    for (int64_t j = 0; j < count; j++)
        for (int64_t d = 0; d < depth; d++) out[j * depth + d] = idx[j] == (double)d;
    return TG_OK;
}

static tg_status k_iota(interp *in, const tg_node *n, double *out) {
    int axis = norm_axis_or_zero(n->attrs.axis, n->rank);
    int64_t inner = prod(n->shape, axis + 1, n->rank), dim = n->shape[axis];
    int64_t count = node_count(n);
    for (int64_t i = 0; i < count; i++) out[i] = (double)((i / inner) % dim);
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Linear algebra                                                      */
/* ------------------------------------------------------------------ */

/* Strides (in elements) of the batch dims of a matmul operand against the
 * output's batch dims; each batch step skips one whole matrix. */
static void batch_strides(const tg_node *x, const tg_node *out, int64_t *strides) {
    int64_t matrix = x->shape[x->rank - 2] * x->shape[x->rank - 1];
    broadcast_strides(x->rank - 2, x->shape, out->rank - 2, out->shape, strides);
    for (int d = 0; d < out->rank - 2; d++) strides[d] *= matrix;
}

static tg_status k_matmul(interp *in, const tg_node *n, double *out) {
    const tg_node *an = input_node(in, n, 0), *bn = input_node(in, n, 1);
    const double *a = input_val(in, n, 0), *b = input_val(in, n, 1);
    bool ta = n->attrs.transpose_a, tb = n->attrs.transpose_b;
    int64_t M = n->shape[n->rank - 2], N = n->shape[n->rank - 1];
    int64_t K = ta ? an->shape[an->rank - 2] : an->shape[an->rank - 1];
    /* element (r, c) of the stored matrix is at r * cols + c */
    int64_t a_row = ta ? 1 : K, a_col = ta ? M : 1;
    int64_t b_row = tb ? 1 : N, b_col = tb ? K : 1;
    int64_t sa[TG_MAX_RANK], sb[TG_MAX_RANK];
    batch_strides(an, n, sa);
    batch_strides(bn, n, sb);
    int batch_rank = n->rank - 2;
    int64_t batches = prod(n->shape, 0, batch_rank);
    for (int64_t bi = 0; bi < batches; bi++) {
        const double *A = a + offset_of(bi, batch_rank, n->shape, sa);
        const double *B = b + offset_of(bi, batch_rank, n->shape, sb);
        double *C = out + bi * M * N;
        for (int64_t m = 0; m < M; m++) {
            for (int64_t j = 0; j < N; j++) {
                double acc = 0;
                for (int64_t k = 0; k < K; k++)
                    acc += A[m * a_row + k * a_col] * B[k * b_row + j * b_col];
                C[m * N + j] = acc;
            }
        }
    }
    return TG_OK;
}

/* conv1d x [N, Cin, W], w [Cout, Cin, K] -> y [N, Cout, Wout], zero
 * padding, and its two gradients, as one walk over every tap (an output
 * element times a weight times an input element):
 *   forward      y[b,co,o]  += x[b,ci,pos] * w[co,ci,k]
 *   grad_input   dx[b,ci,pos] += dy[b,co,o] * w[co,ci,k]
 *   grad_weight  dw[co,ci,k]  += dy[b,co,o] * x[b,ci,pos]
 * `y` is the output (forward) or dy, `x` and `w` are inputs or outputs. */
typedef enum conv_mode { CONV_FORWARD, CONV_GRAD_INPUT, CONV_GRAD_WEIGHT } conv_mode;

static void conv1d_taps(conv_mode mode, const tg_node *xn, const tg_node *wn, const tg_node *yn,
                        const tg_attrs *at, double *x, double *w, double *y) {
    int64_t batch = xn->shape[0], cin = xn->shape[1], width = xn->shape[2];
    int64_t cout = wn->shape[0], ksize = wn->shape[2], wout = yn->shape[2];
    for (int64_t b = 0; b < batch; b++) {
        for (int64_t co = 0; co < cout; co++) {
            for (int64_t o = 0; o < wout; o++) {
                double *yo = &y[(b * cout + co) * wout + o];
                for (int64_t ci = 0; ci < cin; ci++) {
                    for (int64_t k = 0; k < ksize; k++) {
                        int64_t pos = o * at->stride - at->padding + k * at->dilation;
                        if (pos < 0 || pos >= width) continue;
                        double *xe = &x[(b * cin + ci) * width + pos];
                        double *we = &w[(co * cin + ci) * ksize + k];
                        switch (mode) {
                        case CONV_FORWARD: *yo += *xe * *we; break;
                        case CONV_GRAD_INPUT: *xe += *yo * *we; break;
                        case CONV_GRAD_WEIGHT: *we += *yo * *xe; break;
                        }
                    }
                }
            }
        }
    }
}

static void zero(double *v, int64_t count) {
    for (int64_t i = 0; i < count; i++) v[i] = 0;
}

static tg_status k_conv1d(interp *in, const tg_node *n, double *out) {
    zero(out, node_count(n));
    conv1d_taps(CONV_FORWARD, input_node(in, n, 0), input_node(in, n, 1), n, &n->attrs,
                (double *)input_val(in, n, 0), (double *)input_val(in, n, 1), out);
    return TG_OK;
}

/* conv1d_grad_input and conv1d_grad_weight: (dy, x, w). The walk only
 * writes the output it computes; the casts let it take the inputs. */
static tg_status k_conv1d_grad(interp *in, const tg_node *n, double *out) {
    double *dy = (double *)input_val(in, n, 0), *x = (double *)input_val(in, n, 1);
    double *w = (double *)input_val(in, n, 2);
    bool grad_input = n->op == TG_OP_CONV1D_GRAD_INPUT;
    zero(out, node_count(n));
    conv1d_taps(grad_input ? CONV_GRAD_INPUT : CONV_GRAD_WEIGHT, input_node(in, n, 1),
                input_node(in, n, 2), input_node(in, n, 0), &n->attrs, grad_input ? out : x,
                grad_input ? w : out, dy);
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Composites                                                          */
/* ------------------------------------------------------------------ */

/* softmax and log_softmax along an axis, the maximum subtracted first. */
static tg_status k_softmax(interp *in, const tg_node *n, double *out) {
    const double *x = input_val(in, n, 0);
    int axis = norm_axis_or_zero(n->attrs.axis, n->rank);
    int64_t outer = prod(n->shape, 0, axis), dim = n->shape[axis];
    int64_t inner = prod(n->shape, axis + 1, n->rank);
    bool log_out = n->op == TG_OP_LOG_SOFTMAX;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < inner; i++) {
            const double *row = x + o * dim * inner + i;
            double *dst = out + o * dim * inner + i;
            double mx = -INFINITY, sum = 0;
            for (int64_t j = 0; j < dim; j++) mx = fmax(mx, row[j * inner]);
            for (int64_t j = 0; j < dim; j++) sum += exp(row[j * inner] - mx);
            for (int64_t j = 0; j < dim; j++)
                dst[j * inner] =
                    log_out ? row[j * inner] - mx - log(sum) : exp(row[j * inner] - mx) / sum;
        }
    }
    return TG_OK;
}

/* softmax_grad (y, dy): dx = y * (dy - sum(dy * y));
 * log_softmax_grad (y, dy): dx = dy - exp(y) * sum(dy); sums along the axis. */
static tg_status k_softmax_grad(interp *in, const tg_node *n, double *out) {
    const double *y = input_val(in, n, 0), *dy = input_val(in, n, 1);
    int axis = norm_axis_or_zero(n->attrs.axis, n->rank);
    int64_t outer = prod(n->shape, 0, axis), dim = n->shape[axis];
    int64_t inner = prod(n->shape, axis + 1, n->rank);
    bool log_in = n->op == TG_OP_LOG_SOFTMAX_GRAD;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t i = 0; i < inner; i++) {
            int64_t at = o * dim * inner + i;
            double dot = 0;
            for (int64_t j = 0; j < dim; j++)
                dot += dy[at + j * inner] * (log_in ? 1.0 : y[at + j * inner]);
            for (int64_t j = 0; j < dim; j++) {
                double yj = y[at + j * inner], dyj = dy[at + j * inner];
                out[at + j * inner] = log_in ? dyj - exp(yj) * dot : yj * (dyj - dot);
            }
        }
    }
    return TG_OK;
}

/* Mean and 1/sqrt(var + eps) of a row, with the biased variance. */
static void layer_norm_stats(const double *row, int64_t D, double eps, double *mean, double *inv) {
    double m = 0, var = 0;
    for (int64_t j = 0; j < D; j++) m += row[j];
    m /= (double)D;
    for (int64_t j = 0; j < D; j++) var += (row[j] - m) * (row[j] - m);
    var /= (double)D;
    *mean = m;
    *inv = 1.0 / sqrt(var + eps);
}

/* (x - mean) / sqrt(var + eps) * weight + bias over the last axis, with the
 * biased variance. weight and bias are optional inputs 1 and 2. */
static tg_status k_layer_norm(interp *in, const tg_node *n, double *out) {
    const double *x = input_val(in, n, 0);
    const double *w = n->n_inputs > 1 ? input_val(in, n, 1) : NULL;
    const double *b = n->n_inputs > 2 ? input_val(in, n, 2) : NULL;
    int64_t D = n->shape[n->rank - 1], rows = D ? node_count(n) / D : 0;
    for (int64_t r = 0; r < rows; r++) {
        const double *row = x + r * D;
        double mean, inv;
        layer_norm_stats(row, D, n->attrs.eps, &mean, &inv);
        for (int64_t j = 0; j < D; j++) {
            double y = (row[j] - mean) * inv;
            if (w) y *= w[j];
            if (b) y += b[j];
            out[r * D + j] = y;
        }
    }
    return TG_OK;
}

/* layer_norm_grad_x (dy, x, w): with xhat = (x - mean) * inv and g = dy * w,
 * dx = inv * (g - mean(g) - xhat * mean(g * xhat)) per row. */
static tg_status k_layer_norm_grad_x(interp *in, const tg_node *n, double *out) {
    const double *dy = input_val(in, n, 0), *x = input_val(in, n, 1);
    const double *w = input_val(in, n, 2);
    int64_t D = n->shape[n->rank - 1], rows = D ? node_count(n) / D : 0;
    for (int64_t r = 0; r < rows; r++) {
        const double *row = x + r * D, *dyr = dy + r * D;
        double mean, inv, mean_g = 0, mean_gx = 0;
        layer_norm_stats(row, D, n->attrs.eps, &mean, &inv);
        for (int64_t j = 0; j < D; j++) {
            mean_g += dyr[j] * w[j];
            mean_gx += dyr[j] * w[j] * (row[j] - mean) * inv;
        }
        mean_g /= (double)D;
        mean_gx /= (double)D;
        for (int64_t j = 0; j < D; j++) {
            double xhat = (row[j] - mean) * inv;
            out[r * D + j] = inv * (dyr[j] * w[j] - mean_g - xhat * mean_gx);
        }
    }
    return TG_OK;
}

/* layer_norm_grad_wb (dy, x) -> [2, D]: row 0 sums dy * xhat over the rows
 * (the weight's gradient), row 1 sums dy (the bias's). */
static tg_status k_layer_norm_grad_wb(interp *in, const tg_node *n, double *out) {
    const double *dy = input_val(in, n, 0), *x = input_val(in, n, 1);
    int64_t D = n->shape[1], rows = D ? node_count(input_node(in, n, 1)) / D : 0;
    zero(out, 2 * D);
    for (int64_t r = 0; r < rows; r++) {
        const double *row = x + r * D, *dyr = dy + r * D;
        double mean, inv;
        layer_norm_stats(row, D, n->attrs.eps, &mean, &inv);
        for (int64_t j = 0; j < D; j++) {
            out[j] += dyr[j] * (row[j] - mean) * inv;
            out[D + j] += dyr[j];
        }
    }
    return TG_OK;
}

/* Where an attention operand's rows are: row i of batch index bi (over the
 * logical batch dims) starts at offset_of(bi, batch_rank, batch, strides)
 * + i * row. */
typedef struct attention_operand {
    int64_t strides[TG_MAX_RANK], row;
} attention_operand;

typedef struct attention_layout {
    int batch_rank;
    int64_t batch[TG_MAX_RANK]; /* the logical batch dims */
    int64_t batches, Tq, Tk, D, Dv;
    attention_operand q, k, v;
    int full_rank; /* mask is read as [batch..., Tq, Tk] */
    int64_t full[TG_MAX_RANK], smask[TG_MAX_RANK];
} attention_layout;

/* x [..., T, W] read at the position of the batch dims (broadcast), or,
 * with transpose_a, x stored [outer..., T, H, W] for logical
 * [outer..., H, T, W] (graph/ops.c). */
static attention_operand attention_operand_of(const tg_node *n, const tg_node *x,
                                              const attention_layout *L) {
    attention_operand o = {{0}, x->shape[x->rank - 1]};
    int r = x->rank;
    if (!n->attrs.transpose_a) {
        broadcast_strides(r - 2, x->shape, L->batch_rank, L->batch, o.strides);
        for (int d = 0; d < L->batch_rank; d++) o.strides[d] *= x->shape[r - 2] * o.row;
        return o;
    }
    int64_t contiguous[TG_MAX_RANK], s = 1;
    for (int d = r - 1; d >= 0; d--) {
        contiguous[d] = s;
        s *= x->shape[d];
    }
    for (int d = 0; d < r - 3; d++) o.strides[d] = contiguous[d];
    o.strides[r - 3] = contiguous[r - 2];
    o.row = contiguous[r - 3];
    return o;
}

static int64_t operand_at(const attention_layout *L, const attention_operand *o, int64_t bi) {
    return offset_of(bi, L->batch_rank, L->batch, o->strides);
}

static attention_layout attention_layout_of(const interp *in, const tg_node *n) {
    const tg_node *q = input_node(in, n, 0), *k = input_node(in, n, 1);
    const tg_node *v = input_node(in, n, 2);
    attention_layout L = {0};
    bool ht = n->attrs.transpose_a;
    int t = ht ? q->rank - 3 : q->rank - 2; /* the stored time axis */
    L.batch_rank = n->rank - 2;
    memcpy(L.batch, n->shape, sizeof L.batch);
    if (ht) L.batch[n->rank - 3] = q->shape[q->rank - 2]; /* H (lse's n is logical) */
    L.batches = prod(L.batch, 0, L.batch_rank);
    L.Tq = q->shape[t];
    L.D = q->shape[q->rank - 1];
    L.Tk = k->shape[t - q->rank + k->rank];
    L.Dv = v->shape[v->rank - 1];
    L.q = attention_operand_of(n, q, &L);
    L.k = attention_operand_of(n, k, &L);
    L.v = attention_operand_of(n, v, &L);
    L.full_rank = n->rank;
    memcpy(L.full, L.batch, sizeof L.full);
    L.full[n->rank - 2] = L.Tq;
    L.full[n->rank - 1] = L.Tk;
    if (n->attrs.has_mask && n->n_inputs > 3) {
        const tg_node *m = input_node(in, n, 3);
        broadcast_strides(m->rank, m->shape, L.full_rank, L.full, L.smask);
    }
    return L;
}

/* The attention weights p[Tk] of query row i: softmax of the scores over
 * the visible keys. A row that sees no key (all masked) gets zeros rather
 * than NaN. */
static void attention_probs(const attention_layout *L, const tg_node *n, const double *qrow,
                            const double *K, const double *mask, int64_t bi, int64_t i,
                            double *scores) {
    double scale = n->attrs.scale > 0 ? n->attrs.scale : 1.0 / sqrt((double)L->D);
    double mx = -INFINITY;
    for (int64_t j = 0; j < L->Tk; j++) {
        double s = -INFINITY;
        if (!n->attrs.causal || j <= i + L->Tk - L->Tq) {
            s = 0;
            for (int64_t d = 0; d < L->D; d++) s += qrow[d] * K[j * L->k.row + d];
            s *= scale;
            if (mask)
                s += mask[offset_of((bi * L->Tq + i) * L->Tk + j, L->full_rank, L->full, L->smask)];
        }
        scores[j] = s;
        mx = fmax(mx, s);
    }
    double sum = 0;
    for (int64_t j = 0; j < L->Tk; j++) {
        scores[j] = mx == -INFINITY ? 0 : exp(scores[j] - mx);
        sum += scores[j];
    }
    for (int64_t j = 0; j < L->Tk; j++) scores[j] = sum > 0 ? scores[j] / sum : 0;
}

/* One query row: its weights, then the weighted sum of v. */
static void attention_row(const attention_layout *L, const tg_node *n, const double *qrow,
                          const double *K, const double *V, const double *mask, int64_t bi,
                          int64_t i, double *scores, double *dst) {
    attention_probs(L, n, qrow, K, mask, bi, i, scores);
    for (int64_t d = 0; d < L->Dv; d++) dst[d] = 0;
    for (int64_t j = 0; j < L->Tk; j++)
        for (int64_t d = 0; d < L->Dv; d++) dst[d] += scores[j] * V[j * L->v.row + d];
}

static tg_status k_attention(interp *in, const tg_node *n, double *out) {
    attention_layout L = attention_layout_of(in, n);
    const double *q = input_val(in, n, 0), *k = input_val(in, n, 1), *v = input_val(in, n, 2);
    const double *mask = (n->attrs.has_mask && n->n_inputs > 3) ? input_val(in, n, 3) : NULL;
    attention_operand o = attention_operand_of(n, n, &L);
    double *scores = alloc_doubles(L.Tk);
    if (!scores) return tg_set_error(TG_ERR_NO_MEMORY, "tg_interpret: attention: out of memory");
    for (int64_t bi = 0; bi < L.batches; bi++) {
        const double *Q = q + operand_at(&L, &L.q, bi), *K = k + operand_at(&L, &L.k, bi);
        const double *V = v + operand_at(&L, &L.v, bi);
        for (int64_t i = 0; i < L.Tq; i++)
            attention_row(&L, n, Q + i * L.q.row, K, V, mask, bi, i, scores,
                          out + operand_at(&L, &o, bi) + i * o.row);
    }
    free(scores);
    return TG_OK;
}

/* attention_lse (q, k, v, [mask]) -> [batch..., Tq, 1]: log of the sum
 * over the visible keys of exp(score); -inf for a row that sees none. */
static tg_status k_attention_lse(interp *in, const tg_node *n, double *out) {
    attention_layout L = attention_layout_of(in, n);
    const double *q = input_val(in, n, 0), *k = input_val(in, n, 1);
    const double *mask = (n->attrs.has_mask && n->n_inputs > 3) ? input_val(in, n, 3) : NULL;
    double scale = n->attrs.scale > 0 ? n->attrs.scale : 1.0 / sqrt((double)L.D);
    for (int64_t bi = 0; bi < L.batches; bi++) {
        const double *Q = q + operand_at(&L, &L.q, bi), *K = k + operand_at(&L, &L.k, bi);
        for (int64_t i = 0; i < L.Tq; i++) {
            double mx = -INFINITY, sum = 0;
            for (int pass = 0; pass < 2; pass++)
                for (int64_t j = 0; j < L.Tk; j++) {
                    if (n->attrs.causal && j > i + L.Tk - L.Tq) break;
                    double s = 0;
                    for (int64_t d = 0; d < L.D; d++) s += Q[i * L.q.row + d] * K[j * L.k.row + d];
                    s *= scale;
                    if (mask)
                        s += mask[offset_of((bi * L.Tq + i) * L.Tk + j, L.full_rank, L.full,
                                            L.smask)];
                    if (pass == 0)
                        mx = fmax(mx, s);
                    else if (mx > -INFINITY)
                        sum += exp(s - mx);
                }
            out[bi * L.Tq + i] = sum > 0 ? mx + log(sum) : -INFINITY;
        }
    }
    return TG_OK;
}

/* attention_grad_q/k/v (q, k, v, [mask], dout, [lse, delta]): recomputes each row's
 * weights p, then with dP_j = dout_i . v_j and dS_j = p_j (dP_j - p . dP):
 *   dq_i += scale * sum_j dS_j k_j,  dk_j += scale * dS_j q_i,
 *   dv_j += p_j dout_i,
 * per batch of the broadcast batch dims (the node's), so a k or v shared
 * by several batches gets one gradient per batch (summed by autodiff).
 * lse and delta (the device kernels' shortcut) are not read: the
 * reference recomputes everything. */
static tg_status k_attention_grad(interp *in, const tg_node *n, double *out) {
    attention_layout L = attention_layout_of(in, n);
    const double *q = input_val(in, n, 0), *k = input_val(in, n, 1), *v = input_val(in, n, 2);
    const double *mask = n->attrs.has_mask ? input_val(in, n, 3) : NULL;
    const double *dout = input_val(in, n, n->attrs.has_mask ? 4 : 3);
    double scale = n->attrs.scale > 0 ? n->attrs.scale : 1.0 / sqrt((double)L.D);
    double *p = alloc_doubles(L.Tk), *dp = alloc_doubles(L.Tk);
    if (!p || !dp) {
        free(p);
        free(dp);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_interpret: attention_grad: out of memory");
    }
    zero(out, node_count(n));
    attention_operand lo =
        attention_operand_of(n, input_node(in, n, n->attrs.has_mask ? 4 : 3), &L);
    attention_operand go = attention_operand_of(n, n, &L);
    int64_t qr = L.q.row, kr = L.k.row, vr = L.v.row, gr = go.row;
    for (int64_t bi = 0; bi < L.batches; bi++) {
        const double *Q = q + operand_at(&L, &L.q, bi), *K = k + operand_at(&L, &L.k, bi);
        const double *V = v + operand_at(&L, &L.v, bi), *dO = dout + operand_at(&L, &lo, bi);
        double *G = out + operand_at(&L, &go, bi);
        for (int64_t i = 0; i < L.Tq; i++) {
            attention_probs(&L, n, Q + i * qr, K, mask, bi, i, p);
            double pdp = 0;
            for (int64_t j = 0; j < L.Tk; j++) {
                dp[j] = 0;
                for (int64_t d = 0; d < L.Dv; d++) dp[j] += dO[i * lo.row + d] * V[j * vr + d];
                pdp += p[j] * dp[j];
            }
            for (int64_t j = 0; j < L.Tk; j++) {
                double ds = p[j] * (dp[j] - pdp) * scale;
                if (n->op == TG_OP_ATTENTION_GRAD_Q)
                    for (int64_t d = 0; d < L.D; d++) G[i * gr + d] += ds * K[j * kr + d];
                else if (n->op == TG_OP_ATTENTION_GRAD_K)
                    for (int64_t d = 0; d < L.D; d++) G[j * gr + d] += ds * Q[i * qr + d];
                else
                    for (int64_t d = 0; d < L.Dv; d++) G[j * gr + d] += p[j] * dO[i * lo.row + d];
            }
        }
    }
    free(p);
    free(dp);
    return TG_OK;
}

/* Checks that label r is the ignore_index or a class in [0, C). */
static tg_status check_label(const interp *in, const tg_node *n, double label, int64_t r,
                             int64_t C) {
    char lab[160];
    if (label == (double)n->attrs.ignore_index || (label >= 0 && label < (double)C)) return TG_OK;
    return tg_set_error(TG_ERR_RUNTIME,
                        "tg_interpret: %s: label %.0f at position %lld is outside [0, %lld) "
                        "and is not the ignore_index %lld",
                        node_label(in, n, lab, sizeof lab), label, (long long)r, (long long)C,
                        (long long)n->attrs.ignore_index);
}

static double logsumexp(const double *row, int64_t C) {
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < C; j++) mx = fmax(mx, row[j]);
    for (int64_t j = 0; j < C; j++) sum += exp(row[j] - mx);
    return mx + log(sum);
}

/* The number of labels that are not the ignore_index, after checking all. */
static tg_status count_labels(const interp *in, const tg_node *n, int64_t *counted) {
    const tg_node *ln = input_node(in, n, 0);
    const double *labels = input_val(in, n, 1);
    int64_t C = ln->shape[ln->rank - 1], rows = node_count(input_node(in, n, 1));
    *counted = 0;
    for (int64_t r = 0; r < rows; r++) {
        tg_status st = check_label(in, n, labels[r], r, C);
        if (st != TG_OK) return st;
        if (labels[r] != (double)n->attrs.ignore_index) ++*counted;
    }
    return TG_OK;
}

/* Mean of logsumexp(row) - row[label] over the labels != ignore_index. */
static tg_status k_cross_entropy(interp *in, const tg_node *n, double *out) {
    const tg_node *ln = input_node(in, n, 0);
    const double *logits = input_val(in, n, 0), *labels = input_val(in, n, 1);
    int64_t C = ln->shape[ln->rank - 1], rows = node_count(input_node(in, n, 1)), counted;
    tg_status st = count_labels(in, n, &counted);
    if (st != TG_OK) return st;
    double total = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (labels[r] == (double)n->attrs.ignore_index) continue;
        total += logsumexp(logits + r * C, C) - logits[r * C + (int64_t)labels[r]];
    }
    out[0] = counted ? total / (double)counted : 0;
    return TG_OK;
}

/* cross_entropy_grad (logits, labels, dloss): (softmax(row) - onehot) *
 * dloss / count for counted rows, 0 for ignored ones. */
static tg_status k_cross_entropy_grad(interp *in, const tg_node *n, double *out) {
    const double *logits = input_val(in, n, 0), *labels = input_val(in, n, 1);
    double dloss = input_val(in, n, 2)[0];
    int64_t C = n->shape[n->rank - 1], rows = node_count(input_node(in, n, 1)), counted;
    tg_status st = count_labels(in, n, &counted);
    if (st != TG_OK) return st;
    for (int64_t r = 0; r < rows; r++) {
        const double *row = logits + r * C;
        bool ignored = labels[r] == (double)n->attrs.ignore_index;
        double lse = ignored ? 0 : logsumexp(row, C);
        for (int64_t j = 0; j < C; j++)
            out[r * C + j] =
                ignored ? 0
                        : (exp(row[j] - lse) - (j == (int64_t)labels[r])) * dloss / (double)counted;
    }
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* State                                                               */
/* ------------------------------------------------------------------ */

/* The buffer holding the new value of the variable that is input k of
 * state op n (it starts as the old value, or zeros if it was not read). */
static double *written(const interp *in, const tg_node *n, int k) {
    return in->written[n - in->g->nodes][k];
}

static bool writes_input(const tg_node *n, int k) {
    return k < n->n_inputs && k < TG_INTERP_MAX_WRITES && (tg_ops[n->op].writes >> k & 1u);
}

static tg_status k_assign(interp *in, const tg_node *n, double *out) {
    memcpy(written(in, n, 0), input_val(in, n, 1), (size_t)node_count(n) * sizeof(double));
    return TG_OK;
}

static tg_status k_slice_update(interp *in, const tg_node *n, double *out) {
    const tg_node *var = input_node(in, n, 0), *up = input_node(in, n, 1);
    const double *start = input_val(in, n, 2), *uv = input_val(in, n, 1);
    int64_t begin[TG_MAX_RANK], vs[TG_MAX_RANK], base = 0;
    if (up->rank != var->rank || node_count(input_node(in, n, 2)) != var->rank) {
        char lab[160];
        return tg_set_error(TG_ERR_SHAPE, "tg_interpret: %s: update and start must have rank %d",
                            node_label(in, n, lab, sizeof lab), var->rank);
    }
    tg_shape_strides(var->rank, var->shape, vs);
    for (int d = 0; d < var->rank; d++) {
        if (!(start[d] >= 0 && start[d] + (double)up->shape[d] <= (double)var->shape[d])) {
            char lab[160], vbuf[96], ubuf[96];
            return tg_set_error(TG_ERR_RUNTIME,
                                "tg_interpret: %s: start %.0f on axis %d does not fit an update %s "
                                "into the variable %s",
                                node_label(in, n, lab, sizeof lab), start[d], d,
                                tg_shape_str(up->dtype, up->rank, up->shape, ubuf, sizeof ubuf),
                                tg_shape_str(var->dtype, var->rank, var->shape, vbuf, sizeof vbuf));
        }
        begin[d] = (int64_t)start[d];
        base += begin[d] * vs[d];
    }
    double *dst = written(in, n, 0);
    int64_t count = node_count(up);
    for (int64_t i = 0; i < count; i++) dst[base + offset_of(i, up->rank, up->shape, vs)] = uv[i];
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Optimizers (PyTorch's update rules)                                 */
/* ------------------------------------------------------------------ */

/* The 1-based step of an optimizer (input k): a run-time error below 1. */
static tg_status optimizer_step(const interp *in, const tg_node *n, int k, double *step) {
    char lab[160];
    *step = input_val(in, n, k)[0];
    if (*step >= 1 && isfinite(*step)) return TG_OK;
    return tg_set_error(TG_ERR_RUNTIME, "tg_interpret: %s: step is %g; expected >= 1 (1-based)",
                        node_label(in, n, lab, sizeof lab), *step);
}

/* adamw_update (w, m, v, grad, lr, step), as torch.optim.AdamW:
 *   w -= lr * wd * w;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *   w -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). */
static tg_status k_adamw_update(interp *in, const tg_node *n, double *out) {
    const tg_attrs *a = &n->attrs;
    double *w = written(in, n, 0), *m = written(in, n, 1), *v = written(in, n, 2);
    const double *g = input_val(in, n, 3);
    double lr = input_val(in, n, 4)[0], t;
    tg_status st = optimizer_step(in, n, 5, &t);
    if (st != TG_OK) return st;
    double bc1 = 1 - pow(a->beta1, t), bc2 = 1 - pow(a->beta2, t);
    for (int64_t i = 0; i < node_count(n); i++) {
        w[i] -= lr * a->weight_decay * w[i];
        m[i] = a->beta1 * m[i] + (1 - a->beta1) * g[i];
        v[i] = a->beta2 * v[i] + (1 - a->beta2) * g[i] * g[i];
        w[i] -= lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + a->eps);
    }
    return TG_OK;
}

/* sgd_update (w, grad, lr, [step, buf]), as torch.optim.SGD:
 *   g += wd * w;  with momentum: buf = g at step 1, else
 *   buf = momentum buf + (1 - dampening) g;  g = nesterov ? g + momentum buf : buf;
 *   w -= lr * g. */
static tg_status k_sgd_update(interp *in, const tg_node *n, double *out) {
    const tg_attrs *a = &n->attrs;
    double *w = written(in, n, 0);
    double *buf = a->momentum != 0 ? written(in, n, 4) : NULL;
    const double *grad = input_val(in, n, 1);
    double lr = input_val(in, n, 2)[0], t = 0;
    tg_status st = buf ? optimizer_step(in, n, 3, &t) : TG_OK;
    if (st != TG_OK) return st;
    for (int64_t i = 0; i < node_count(n); i++) {
        double g = grad[i] + a->weight_decay * w[i];
        if (buf) {
            buf[i] = t == 1 ? g : a->momentum * buf[i] + (1 - a->dampening) * g;
            g = a->nesterov ? g + a->momentum * buf[i] : buf[i];
        }
        w[i] -= lr * g;
    }
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Dispatch                                                            */
/* ------------------------------------------------------------------ */

typedef tg_status (*kernel_fn)(interp *in, const tg_node *n, double *out);

static kernel_fn kernel_of(tg_op op) {
    switch (op) {
    case TG_OP_PLACEHOLDER: return k_placeholder;
    case TG_OP_VARIABLE: return k_variable;
    case TG_OP_CONSTANT: return k_constant;
    case TG_OP_WHERE: return k_where;
    case TG_OP_SUM:
    case TG_OP_MEAN:
    case TG_OP_MAX:
    case TG_OP_MIN: return k_reduce;
    case TG_OP_ARGMAX: return k_argmax;
    case TG_OP_RESHAPE: return k_copy;
    case TG_OP_PERMUTE: return k_permute;
    case TG_OP_BROADCAST_TO: return k_broadcast_to;
    case TG_OP_SLICE: return k_slice;
    case TG_OP_CONCAT: return k_concat;
    case TG_OP_PAD: return k_pad;
    case TG_OP_GATHER: return k_gather;
    case TG_OP_SCATTER_ADD: return k_scatter_add;
    case TG_OP_ONE_HOT: return k_one_hot;
    case TG_OP_IOTA: return k_iota;
    case TG_OP_MATMUL: return k_matmul;
    case TG_OP_CONV1D: return k_conv1d;
    case TG_OP_SOFTMAX:
    case TG_OP_LOG_SOFTMAX: return k_softmax;
    case TG_OP_LAYER_NORM: return k_layer_norm;
    case TG_OP_ATTENTION: return k_attention;
    case TG_OP_CROSS_ENTROPY: return k_cross_entropy;
    case TG_OP_ASSIGN: return k_assign;
    case TG_OP_SLICE_UPDATE: return k_slice_update;
    case TG_OP_CAST:
    case TG_OP_STOP_GRADIENT: return k_unary;
    case TG_OP_SOFTMAX_GRAD:
    case TG_OP_LOG_SOFTMAX_GRAD: return k_softmax_grad;
    case TG_OP_LAYER_NORM_GRAD_X: return k_layer_norm_grad_x;
    case TG_OP_LAYER_NORM_GRAD_WB: return k_layer_norm_grad_wb;
    case TG_OP_ATTENTION_GRAD_Q:
    case TG_OP_ATTENTION_GRAD_K:
    case TG_OP_ATTENTION_GRAD_V: return k_attention_grad;
    case TG_OP_ATTENTION_LSE: return k_attention_lse;
    case TG_OP_CROSS_ENTROPY_GRAD: return k_cross_entropy_grad;
    case TG_OP_CONV1D_GRAD_INPUT:
    case TG_OP_CONV1D_GRAD_WEIGHT: return k_conv1d_grad;
    case TG_OP_SLICE_GRAD: return k_slice_grad;
    case TG_OP_ADAMW_UPDATE: return k_adamw_update;
    case TG_OP_SGD_UPDATE: return k_sgd_update;
    default: break;
    }
    /* the other elementwise ops: a scalar function from the op table */
    if (tg_ops[op].f2) return k_binary;
    if (tg_ops[op].f1) return k_unary;
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Planning: which nodes run, with which feeds                         */
/* ------------------------------------------------------------------ */

/* An assign writes its variable without reading it. */
static bool input_is_read(const tg_node *n, int k) {
    return !(n->op == TG_OP_ASSIGN && k == 0);
}

/* needed: the node is on a path to a target or target op; reads: its
 * value is used (a variable only assigned to is never read, so it need not
 * exist in the store yet). */
static void mark_needed(const tg_graph *g, int n_targets, const tg_tensor *targets,
                        int n_target_ops, const tg_tensor *target_ops, bool *needed, bool *reads) {
    for (int i = 0; i < n_targets; i++) needed[targets[i].id] = reads[targets[i].id] = true;
    for (int i = 0; i < n_target_ops; i++) needed[target_ops[i].id] = true;
    for (int id = g->n_nodes - 1; id >= 0; id--) {
        if (!needed[id]) continue;
        const tg_node *n = &g->nodes[id];
        for (int k = 0; k < n->n_inputs; k++) {
            needed[n->inputs[k]] = true;
            if (input_is_read(n, k)) reads[n->inputs[k]] = true;
        }
    }
}

static tg_status check_handles(const tg_graph *g, int n, const tg_tensor *ts, const char *what) {
    if (n < 0 || (n > 0 && !ts))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_interpret: bad %s array (count %d)", what,
                            n);
    for (int i = 0; i < n; i++)
        if (ts[i].id < 0 || ts[i].id >= g->n_nodes)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "tg_interpret: %s[%d] is not a node of the graph (id %d)", what, i,
                                (int)ts[i].id);
    return TG_OK;
}

static tg_status check_feed(const tg_graph *g, const tg_feed *f, int i) {
    char want[96], got[96];
    const tg_node *n = tg_node_at(g, f->tensor);
    if (!n || n->op != TG_OP_PLACEHOLDER)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_interpret: feeds[%d] (node %d) is not a placeholder", i,
                            (int)f->tensor.id);
    const tg_array *a = f->value;
    if (!a || (unsigned)a->rank > TG_MAX_RANK || (!a->data && tg_array_count(a) > 0))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_interpret: the feed of placeholder '%s' is not a valid array",
                            n->name ? n->name : "?");
    if (a->dtype != n->dtype || !shape_fits(n->rank, n->shape, a->rank, a->shape))
        return tg_set_error(
            TG_ERR_SHAPE, "tg_interpret: placeholder '%s' expects %s but was fed %s",
            n->name ? n->name : "?", tg_shape_str(n->dtype, n->rank, n->shape, want, sizeof want),
            tg_shape_str(a->dtype, a->rank, a->shape, got, sizeof got));
    return TG_OK;
}

/* Validates every feed and indexes them by node id; every needed
 * placeholder must be fed. */
static tg_status match_feeds(const tg_graph *g, int n_feeds, const tg_feed *feeds,
                             const bool *needed, const tg_array **feed_of) {
    if (n_feeds < 0 || (n_feeds > 0 && !feeds))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_interpret: bad feeds array (count %d)",
                            n_feeds);
    for (int i = 0; i < n_feeds; i++) {
        tg_status st = check_feed(g, &feeds[i], i);
        if (st != TG_OK) return st;
        if (feed_of[feeds[i].tensor.id])
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "tg_interpret: placeholder '%s' is fed twice",
                                g->nodes[feeds[i].tensor.id].name);
        feed_of[feeds[i].tensor.id] = feeds[i].value;
    }
    for (int id = 0; id < g->n_nodes; id++) {
        const tg_node *n = &g->nodes[id];
        if (needed[id] && n->op == TG_OP_PLACEHOLDER && !feed_of[id]) {
            char want[96];
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "tg_interpret: placeholder '%s' %s (node %d) is needed but not fed",
                                n->name ? n->name : "?",
                                tg_shape_str(n->dtype, n->rank, n->shape, want, sizeof want), id);
        }
    }
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Dynamic shapes: rebuild the needed nodes with the actual shapes      */
/* ------------------------------------------------------------------ */

static bool needed_all_static(const tg_graph *g, const bool *needed) {
    for (int id = 0; id < g->n_nodes; id++)
        if (needed[id] && !node_is_static(&g->nodes[id])) return false;
    return true;
}

/* The shape a source has in this run: the feed's, the store's, or its own. */
static const int64_t *actual_source_shape(const tg_node *n, const tg_array *feed, tg_store *store) {
    if (n->op == TG_OP_PLACEHOLDER && feed) return feed->shape;
    if (n->op == TG_OP_VARIABLE && store) {
        tg_store_entry *e = tg_store_find(store, n->name);
        if (e && shape_fits(n->rank, n->shape, e->value.rank, e->value.shape))
            return e->value.shape;
    }
    return n->shape;
}

/* Appends a copy of user node n to sub, with concrete source shapes; the
 * builder re-runs every shape rule, which fixes every dynamic dim. */
static tg_tensor add_concrete_node(tg_graph *sub, const tg_node *n, const int32_t *run_id,
                                   const tg_array *feed, tg_store *store, tg_tensor *inputs) {
    if (n->op == TG_OP_PLACEHOLDER || n->op == TG_OP_VARIABLE || n->op == TG_OP_CONSTANT)
        return tg_source_add(sub, n->op, n->name, n->dtype, n->rank,
                             actual_source_shape(n, feed, store), n->data, n->attrs.trainable);
    for (int k = 0; k < n->n_inputs; k++) inputs[k].id = run_id[n->inputs[k]];
    tg_tensor t = tg_node_add(sub, n->op, n->n_inputs, inputs, &n->attrs, n->dtype);
    if (tg_tensor_valid(sub, t) && n->name) tg_tensor_set_name(sub, t, n->name);
    return t;
}

/* Builds in->g from the needed nodes of the user graph; run_id maps user
 * ids to the new ids, in->user_id maps back. */
static tg_status rebuild_concrete(interp *in, const bool *needed, const tg_array **feed_of,
                                  int32_t *run_id) {
    const tg_graph *g = in->user_g;
    int max_inputs = 1;
    for (int id = 0; id < g->n_nodes; id++)
        if (g->nodes[id].n_inputs > max_inputs) max_inputs = g->nodes[id].n_inputs;
    tg_graph *sub = tg_graph_new();
    tg_tensor *inputs = malloc((size_t)max_inputs * sizeof *inputs);
    in->user_id = malloc((size_t)g->n_nodes * sizeof *in->user_id);
    in->g = sub;
    if (!sub || !inputs || !in->user_id) {
        free(inputs);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_interpret: out of memory");
    }
    for (int id = 0; id < g->n_nodes; id++) {
        run_id[id] = -1;
        if (!needed[id]) continue;
        tg_tensor t = add_concrete_node(sub, &g->nodes[id], run_id, feed_of[id], in->store, inputs);
        if (!tg_tensor_valid(sub, t)) {
            free(inputs);
            return tg_set_error(tg_graph_status(sub) != TG_OK ? tg_graph_status(sub) : TG_ERR_SHAPE,
                                "tg_interpret: with the fed shapes, node %d (%s) fails: %s", id,
                                tg_ops[g->nodes[id].op].name,
                                tg_graph_error(sub) ? tg_graph_error(sub) : "?");
        }
        run_id[id] = t.id;
        in->user_id[t.id] = id;
    }
    free(inputs);
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Evaluation                                                          */
/* ------------------------------------------------------------------ */

static tg_status alloc_run_arrays(interp *in) {
    size_t n = (size_t)(in->g->n_nodes > 0 ? in->g->n_nodes : 1);
    in->eval = calloc(n, sizeof *in->eval);
    in->keep = calloc(n, sizeof *in->keep);
    in->last_use = calloc(n, sizeof *in->last_use);
    in->feed = calloc(n, sizeof *in->feed);
    in->vals = calloc(n, sizeof *in->vals);
    in->written = calloc(n, sizeof *in->written);
    if (!in->eval || !in->keep || !in->last_use || !in->feed || !in->vals || !in->written)
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_interpret: out of memory");
    return TG_OK;
}

static void free_interp(interp *in) {
    if (in->vals)
        for (int id = 0; id < in->g->n_nodes; id++) free(in->vals[id]);
    if (in->written)
        for (int id = 0; id < in->g->n_nodes; id++)
            for (int k = 0; k < TG_INTERP_MAX_WRITES; k++) free(in->written[id][k]);
    free(in->vals);
    free(in->written);
    free(in->eval);
    free(in->keep);
    free(in->last_use);
    free(in->feed);
    free(in->user_id);
    if (in->g != in->user_g) tg_graph_free((tg_graph *)in->g);
}

/* Records, for each value, the last node that reads it, so it can be freed
 * as soon as it is dead (targets and state results are kept). */
static void compute_last_uses(interp *in) {
    for (int id = 0; id < in->g->n_nodes; id++) {
        in->last_use[id] = -1;
        const tg_node *n = &in->g->nodes[id];
        if (!in->eval[id]) continue;
        if (tg_ops[n->op].writes) in->keep[id] = true;
        for (int k = 0; k < n->n_inputs; k++)
            if (input_is_read(n, k)) in->last_use[n->inputs[k]] = id;
    }
}

/* Gives state op n a buffer per written variable, holding its old value
 * (zeros if the run does not read it: an assign's target). */
static tg_status alloc_written(interp *in, const tg_node *n) {
    for (int k = 0; k < TG_INTERP_MAX_WRITES; k++) {
        if (!writes_input(n, k)) continue;
        const tg_node *var = input_node(in, n, k);
        int64_t count = node_count(var);
        double *buf = alloc_doubles(count);
        if (!buf) return tg_set_error(TG_ERR_NO_MEMORY, "tg_interpret: out of memory");
        const double *old = input_val(in, n, k);
        for (int64_t i = 0; i < count; i++) buf[i] = old ? old[i] : 0;
        in->written[n - in->g->nodes][k] = buf;
    }
    return TG_OK;
}

/* After a state op's kernel: rounds the written values to the variables'
 * dtypes, and the node's value is the first written variable's. */
static void finish_written(interp *in, const tg_node *n, double *out) {
    bool first = true;
    for (int k = 0; k < TG_INTERP_MAX_WRITES; k++) {
        if (!writes_input(n, k)) continue;
        round_value(in, input_node(in, n, k), written(in, n, k));
        if (first) memcpy(out, written(in, n, k), (size_t)node_count(n) * sizeof(double));
        first = false;
    }
}

static tg_status evaluate_node(interp *in, int id) {
    const tg_node *n = &in->g->nodes[id];
    char lab[160], buf[96];
    int64_t count = node_count(n);
    kernel_fn kernel = kernel_of(n->op);
    if (!kernel)
        return tg_set_error(TG_ERR_UNSUPPORTED, "tg_interpret: no kernel for %s",
                            node_label(in, n, lab, sizeof lab));
    double *out = alloc_doubles(count);
    if (!out)
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_interpret: cannot allocate %s for %s",
                            tg_shape_str(n->dtype, n->rank, n->shape, buf, sizeof buf),
                            node_label(in, n, lab, sizeof lab));
    in->vals[id] = out;
    tg_status st = tg_ops[n->op].writes ? alloc_written(in, n) : TG_OK;
    if (st == TG_OK) st = kernel(in, n, out);
    if (st != TG_OK) return st;
    if (tg_ops[n->op].writes) finish_written(in, n, out);
    round_value(in, n, out);
    return TG_OK;
}

static void free_dead_inputs(interp *in, int id) {
    const tg_node *n = &in->g->nodes[id];
    for (int k = 0; k < n->n_inputs; k++) {
        int32_t x = n->inputs[k];
        if (in->last_use[x] == id && !in->keep[x]) {
            free(in->vals[x]);
            in->vals[x] = NULL;
        }
    }
}

static tg_status evaluate_all(interp *in) {
    compute_last_uses(in);
    for (int id = 0; id < in->g->n_nodes; id++) {
        if (!in->eval[id]) continue;
        tg_status st = evaluate_node(in, id);
        if (st != TG_OK) return st;
        free_dead_inputs(in, id);
    }
    return TG_OK;
}

static tg_status value_to_array(const tg_node *n, const double *v, tg_array *out) {
    tg_status st = tg_array_alloc(out, n->dtype, n->rank, n->shape);
    if (st != TG_OK) return st;
    int64_t count = node_count(n);
    for (int64_t i = 0; i < count; i++) tg_array_set(out, i, v[i]);
    return TG_OK;
}

/* Writes the variables of every executed state op (the op table's
 * `writes` mask) to the store, in node order. Everything is checked before
 * the first write. */
static tg_status apply_side_effects(interp *in) {
    for (int id = 0; id < in->g->n_nodes; id++) {
        const tg_node *n = &in->g->nodes[id];
        if (!in->eval[id]) continue;
        for (int k = 0; k < TG_INTERP_MAX_WRITES; k++) {
            if (!writes_input(n, k)) continue;
            const tg_node *var = input_node(in, n, k);
            char lab[160];
            if (var->op != TG_OP_VARIABLE || !var->name)
                return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                    "tg_interpret: %s writes to a node that is not a variable",
                                    node_label(in, n, lab, sizeof lab));
            if (!in->store)
                return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                    "tg_interpret: %s writes variable '%s' but no store was given",
                                    node_label(in, n, lab, sizeof lab), var->name);
        }
    }
    for (int id = 0; id < in->g->n_nodes; id++) {
        const tg_node *n = &in->g->nodes[id];
        if (!in->eval[id]) continue;
        for (int k = 0; k < TG_INTERP_MAX_WRITES; k++) {
            if (!writes_input(n, k)) continue;
            const tg_node *var = input_node(in, n, k);
            tg_array a = {0};
            tg_status st = value_to_array(var, written(in, n, k), &a);
            if (st == TG_OK) st = tg_store_set(in->store, var->name, &a);
            tg_array_free(&a);
            if (st != TG_OK) return st;
        }
    }
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Entry point                                                         */
/* ------------------------------------------------------------------ */

static tg_status check_arguments(const tg_graph *g, int n_targets, const tg_tensor *targets,
                                 tg_array *results, int n_target_ops, const tg_tensor *target_ops) {
    if (!g) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_interpret: graph is NULL");
    if (g->status != TG_OK)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_interpret: the graph has a builder error: %s", g->error);
    if (n_targets > 0 && !results)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_interpret: results is NULL");
    tg_status st = check_handles(g, n_targets, targets, "targets");
    if (st == TG_OK) st = check_handles(g, n_target_ops, target_ops, "target_ops");
    return st;
}

/* Fills the per-node run arrays of in->g from the plan on the user graph. */
static void set_run_flags(interp *in, const bool *needed, const bool *reads,
                          const tg_array **feed_of, const int32_t *run_id, int n_targets,
                          const tg_tensor *targets) {
    const tg_graph *g = in->user_g;
    for (int id = 0; id < g->n_nodes; id++) {
        if (!needed[id]) continue;
        int r = run_id ? run_id[id] : id;
        in->eval[r] = g->nodes[id].op != TG_OP_VARIABLE || reads[id];
        in->feed[r] = feed_of[id];
    }
    for (int i = 0; i < n_targets; i++)
        in->keep[run_id ? run_id[targets[i].id] : targets[i].id] = true;
}

static tg_status copy_results(interp *in, const int32_t *run_id, int n_targets,
                              const tg_tensor *targets, tg_array *results) {
    for (int i = 0; i < n_targets; i++) {
        int r = run_id ? run_id[targets[i].id] : targets[i].id;
        tg_status st = value_to_array(&in->g->nodes[r], in->vals[r], &results[i]);
        if (st != TG_OK) return st;
    }
    return TG_OK;
}

/* Plans, evaluates and writes back; `in` owns everything it allocates. */
static tg_status run(interp *in, int n_feeds, const tg_feed *feeds, int n_targets,
                     const tg_tensor *targets, tg_array *results, int n_target_ops,
                     const tg_tensor *target_ops, bool *needed, bool *reads,
                     const tg_array **feed_of, int32_t *run_id) {
    const tg_graph *g = in->user_g;
    mark_needed(g, n_targets, targets, n_target_ops, target_ops, needed, reads);
    tg_status st = match_feeds(g, n_feeds, feeds, needed, feed_of);
    bool dynamic = !needed_all_static(g, needed);
    if (st == TG_OK && dynamic) st = rebuild_concrete(in, needed, feed_of, run_id);
    if (st == TG_OK) st = alloc_run_arrays(in);
    if (st != TG_OK) return st;
    set_run_flags(in, needed, reads, feed_of, dynamic ? run_id : NULL, n_targets, targets);
    st = evaluate_all(in);
    if (st == TG_OK) st = copy_results(in, dynamic ? run_id : NULL, n_targets, targets, results);
    if (st == TG_OK) st = apply_side_effects(in);
    return st;
}

tg_status tg_interpret(const tg_graph *g, tg_store *store, int n_feeds, const tg_feed *feeds,
                       int n_targets, const tg_tensor *targets, tg_array *results, int n_target_ops,
                       const tg_tensor *target_ops, unsigned flags) {
    if (results && n_targets > 0) memset(results, 0, (size_t)n_targets * sizeof *results);
    tg_status st = check_arguments(g, n_targets, targets, results, n_target_ops, target_ops);
    if (st != TG_OK) return st;
    size_t n = (size_t)(g->n_nodes > 0 ? g->n_nodes : 1);
    interp in = {.g = g, .user_g = g, .store = store, .flags = flags};
    bool *needed = calloc(n, sizeof *needed), *reads = calloc(n, sizeof *reads);
    const tg_array **feed_of = calloc(n, sizeof *feed_of);
    int32_t *run_id = calloc(n, sizeof *run_id);
    if (!needed || !reads || !feed_of || !run_id)
        st = tg_set_error(TG_ERR_NO_MEMORY, "tg_interpret: out of memory");
    else
        st = run(&in, n_feeds, feeds, n_targets, targets, results, n_target_ops, target_ops, needed,
                 reads, feed_of, run_id);
    if (st != TG_OK)
        for (int i = 0; i < n_targets; i++) tg_array_free(&results[i]);
    free_interp(&in);
    free(needed);
    free(reads);
    free(feed_of);
    free(run_id);
    return st;
}
