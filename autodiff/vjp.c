/* vjp.c — the vector-Jacobian product of every op, in one table indexed by
 * op. A rule gets dy, the gradient of the node's output, and gives each
 * input that needs it its gradient, built from graph ops. The gradient may
 * have the output's (broadcast) shape: tg_ad_give sums it down to the
 * input's shape. Composite ops have backward ops of their own (softmax_grad,
 * layer_norm_grad_x, attention_grad_q, ...; graph/ops.c) rather than
 * expansions into primitives. */
#include "autodiff/autodiff.h"

#include <math.h>

static tg_tensor in(const tg_node *n, int k) {
    return (tg_tensor){n->inputs[k]};
}

/* A copy of input k's node (copies stay valid while nodes are added). */
static tg_node in_node(const tg_ad *ad, const tg_node *n, int k) {
    return ad->g->nodes[n->inputs[k]];
}

static tg_tensor scalar(tg_ad *ad, const tg_node *like, double v) {
    return tg_scalar(ad->g, like->dtype, v);
}

/* The node n with its own op and attrs applied to new inputs. */
static tg_tensor like(tg_ad *ad, const tg_node *n, tg_op op, int n_inputs,
                      const tg_tensor *inputs) {
    return tg_node_add(ad->g, op, n_inputs, inputs, &n->attrs, n->dtype);
}

/* ------------------------------------------------------------------ */
/* Not differentiable, or not yet                                      */
/* ------------------------------------------------------------------ */

void tg_vjp_none(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    (void)ad, (void)n, (void)y, (void)dy;
}

void tg_vjp_unsupported(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_ad_fail(ad, n, "no gradient rule (backward ops have no second-order gradients)");
}

/* ------------------------------------------------------------------ */
/* Elementwise unary: dx = dy * f'(x)                                  */
/* ------------------------------------------------------------------ */

static void vjp_neg(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_ad_give(ad, n, 0, tg_neg(ad->g, dy));
}

/* The subgradient at 0 is +1. */
static void vjp_abs(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor neg = tg_lt(ad->g, in(n, 0), scalar(ad, n, 0));
    tg_ad_give(ad, n, 0, tg_where(ad->g, neg, tg_neg(ad->g, dy), dy));
}

static void vjp_exp(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_ad_give(ad, n, 0, tg_mul(ad->g, dy, y));
}

static void vjp_log(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_ad_give(ad, n, 0, tg_div(ad->g, dy, in(n, 0)));
}

/* dy / (2 sqrt(x)) */
static void vjp_sqrt(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_ad_give(ad, n, 0, tg_div(ad->g, dy, tg_add(ad->g, y, y)));
}

/* -dy x^(-3/2) / 2 = dy * y / (-2 x) */
static void vjp_rsqrt(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor minus_2x = tg_mul(ad->g, in(n, 0), scalar(ad, n, -2));
    tg_ad_give(ad, n, 0, tg_div(ad->g, tg_mul(ad->g, dy, y), minus_2x));
}

/* -dy / x^2 = -dy y^2 */
static void vjp_reciprocal(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_ad_give(ad, n, 0, tg_neg(ad->g, tg_mul(ad->g, dy, tg_square(ad->g, y))));
}

static void vjp_square(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_ad_give(ad, n, 0, tg_mul(ad->g, dy, tg_add(ad->g, in(n, 0), in(n, 0))));
}

/* dy (1 - y^2) */
static void vjp_tanh(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor d = tg_sub(ad->g, scalar(ad, n, 1), tg_square(ad->g, y));
    tg_ad_give(ad, n, 0, tg_mul(ad->g, dy, d));
}

/* dy 2/sqrt(pi) exp(-x^2) */
static void vjp_erf(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor e = tg_exp(ad->g, tg_neg(ad->g, tg_square(ad->g, in(n, 0))));
    tg_tensor d = tg_mul(ad->g, e, scalar(ad, n, 1.12837916709551257390));
    tg_ad_give(ad, n, 0, tg_mul(ad->g, dy, d));
}

/* gelu and gelu_tanh: their own elementwise backward ops (x, dy). */
static void vjp_gelu(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_op op = n->op == TG_OP_GELU ? TG_OP_GELU_GRAD : TG_OP_GELU_TANH_GRAD;
    tg_tensor ins[2] = {in(n, 0), dy};
    tg_ad_give(ad, n, 0, like(ad, n, op, 2, ins));
}

/* The derivative at 0 is 0, as in PyTorch. */
static void vjp_relu(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor pos = tg_gt(ad->g, in(n, 0), scalar(ad, n, 0));
    tg_ad_give(ad, n, 0, tg_where(ad->g, pos, dy, scalar(ad, n, 0)));
}

/* dy y (1 - y) */
static void vjp_sigmoid(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor d = tg_mul(ad->g, y, tg_sub(ad->g, scalar(ad, n, 1), y));
    tg_ad_give(ad, n, 0, tg_mul(ad->g, dy, d));
}

/* dy s (1 + x (1 - s)) with s = sigmoid(x) */
static void vjp_silu(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor x = in(n, 0), one = scalar(ad, n, 1);
    tg_tensor s = tg_sigmoid(ad->g, x);
    tg_tensor d = tg_add(ad->g, one, tg_mul(ad->g, x, tg_sub(ad->g, one, s)));
    tg_ad_give(ad, n, 0, tg_mul(ad->g, dy, tg_mul(ad->g, s, d)));
}

static void vjp_sin(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_ad_give(ad, n, 0, tg_mul(ad->g, dy, tg_cos(ad->g, in(n, 0))));
}

static void vjp_cos(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_ad_give(ad, n, 0, tg_neg(ad->g, tg_mul(ad->g, dy, tg_sin(ad->g, in(n, 0)))));
}

/* Cast back to the input's float type (integer inputs need no gradient). */
static void vjp_cast(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_node x = in_node(ad, n, 0);
    tg_ad_give(ad, n, 0, x.dtype == n->dtype ? dy : tg_cast(ad->g, dy, x.dtype));
}

/* ------------------------------------------------------------------ */
/* Elementwise binary (tg_ad_give undoes the broadcast)                */
/* ------------------------------------------------------------------ */

static void vjp_add(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_ad_give(ad, n, 0, dy);
    tg_ad_give(ad, n, 1, dy);
}

static void vjp_sub(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_ad_give(ad, n, 0, dy);
    if (tg_ad_wants(ad, n, 1)) tg_ad_give(ad, n, 1, tg_neg(ad->g, dy));
}

static void vjp_mul(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    if (tg_ad_wants(ad, n, 0)) tg_ad_give(ad, n, 0, tg_mul(ad->g, dy, in(n, 1)));
    if (tg_ad_wants(ad, n, 1)) tg_ad_give(ad, n, 1, tg_mul(ad->g, dy, in(n, 0)));
}

/* da = dy / b, db = -dy a / b^2 = -da y */
static void vjp_div(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor da = tg_div(ad->g, dy, in(n, 1));
    tg_ad_give(ad, n, 0, da);
    if (tg_ad_wants(ad, n, 1)) tg_ad_give(ad, n, 1, tg_neg(ad->g, tg_mul(ad->g, da, y)));
}

/* da = dy b a^(b-1), db = dy y log(a) (NaN for a < 0, as the function) */
static void vjp_pow(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor a = in(n, 0), b = in(n, 1);
    if (tg_ad_wants(ad, n, 0)) {
        tg_tensor p = tg_pow(ad->g, a, tg_sub(ad->g, b, scalar(ad, n, 1)));
        tg_ad_give(ad, n, 0, tg_mul(ad->g, dy, tg_mul(ad->g, b, p)));
    }
    if (tg_ad_wants(ad, n, 1))
        tg_ad_give(ad, n, 1, tg_mul(ad->g, dy, tg_mul(ad->g, y, tg_log(ad->g, a))));
}

/* maximum/minimum: the gradient goes to the input that was chosen; on a
 * tie, to the first (a). */
static void vjp_maximum(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor a = in(n, 0), b = in(n, 1), zero = scalar(ad, n, 0);
    tg_tensor pick_a = n->op == TG_OP_MAXIMUM ? tg_ge(ad->g, a, b) : tg_le(ad->g, a, b);
    if (tg_ad_wants(ad, n, 0)) tg_ad_give(ad, n, 0, tg_where(ad->g, pick_a, dy, zero));
    if (tg_ad_wants(ad, n, 1)) tg_ad_give(ad, n, 1, tg_where(ad->g, pick_a, zero, dy));
}

static void vjp_where(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor c = in(n, 0), zero = scalar(ad, n, 0);
    if (tg_ad_wants(ad, n, 1)) tg_ad_give(ad, n, 1, tg_where(ad->g, c, dy, zero));
    if (tg_ad_wants(ad, n, 2)) tg_ad_give(ad, n, 2, tg_where(ad->g, c, zero, dy));
}

/* ------------------------------------------------------------------ */
/* Reductions                                                          */
/* ------------------------------------------------------------------ */

/* Whether reduction n folds axis d of its input (no axes: all). */
static bool is_reduced(const tg_node *n, int d) {
    bool reduced = n->attrs.n_axes == 0;
    for (int k = 0; k < n->attrs.n_axes; k++) reduced |= n->attrs.axes[k] == d;
    return reduced;
}

/* t, of the reduction's output shape, reshaped to keep the reduced axes
 * of x as size 1 (so it broadcasts against x). */
static tg_tensor keep_reduced(tg_ad *ad, const tg_node *n, const tg_node *x, tg_tensor t) {
    if (n->attrs.keepdims) return t;
    int64_t shape[TG_MAX_RANK];
    for (int d = 0; d < x->rank; d++) shape[d] = x->shape[d];
    for (int d = 0; d < x->rank; d++)
        if (is_reduced(n, d)) shape[d] = 1;
    return tg_ad_reshape(ad, t, x->rank, shape);
}

/* How many elements each output element of the reduction folds (x static). */
static int64_t reduced_count(const tg_node *n, const tg_node *x) {
    int64_t count = 1;
    for (int d = 0; d < x->rank; d++)
        if (is_reduced(n, d)) count *= x->shape[d];
    return count;
}

/* sum: dy broadcast back; mean: also divided by the count. */
static void vjp_sum(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_node x = in_node(ad, n, 0);
    int64_t count = reduced_count(n, &x);
    if (tg_shape_count(x.rank, x.shape) < 0) {
        tg_ad_fail(ad, n, "the gradient of a reduction of a dynamic shape is not supported");
        return;
    }
    tg_tensor d = keep_reduced(ad, n, &x, dy);
    if (n->op == TG_OP_MEAN && count != 1) d = tg_mul(ad->g, d, scalar(ad, n, 1.0 / (double)count));
    tg_ad_give(ad, n, 0, tg_broadcast_to(ad->g, d, x.rank, x.shape));
}

/* max/min: dy goes to the elements equal to the result, split equally
 * among ties. */
static void vjp_max(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_node x = in_node(ad, n, 0);
    tg_tensor hit = tg_eq(ad->g, in(n, 0), keep_reduced(ad, n, &x, y));
    int axes[TG_MAX_RANK];
    for (int k = 0; k < n->attrs.n_axes; k++) axes[k] = (int)n->attrs.axes[k];
    tg_tensor ties = tg_sum(ad->g, tg_cast(ad->g, hit, x.dtype), n->attrs.n_axes, axes, true);
    tg_tensor share = tg_div(ad->g, keep_reduced(ad, n, &x, dy), ties);
    tg_ad_give(ad, n, 0, tg_where(ad->g, hit, share, scalar(ad, n, 0)));
}

/* ------------------------------------------------------------------ */
/* Data movement                                                       */
/* ------------------------------------------------------------------ */

static void vjp_reshape(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_node x = in_node(ad, n, 0);
    tg_ad_give(ad, n, 0, tg_ad_reshape(ad, dy, x.rank, x.shape));
}

static void vjp_permute(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    int inverse[TG_MAX_RANK];
    for (int i = 0; i < n->rank; i++) inverse[n->attrs.axes[i]] = i;
    tg_ad_give(ad, n, 0, tg_permute(ad->g, dy, n->rank, inverse));
}

/* tg_ad_give sums over the broadcast axes. */
static void vjp_identity(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_ad_give(ad, n, 0, dy);
}

/* A unit-step slice of a static input is a pad of dy with zeros; any other
 * is slice_grad (a scatter into zeros). */
static void vjp_slice(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_node x = in_node(ad, n, 0);
    int64_t lo[TG_MAX_RANK], hi[TG_MAX_RANK];
    bool as_pad = true;
    for (int d = 0; d < x.rank; d++) {
        as_pad &= n->attrs.step[d] == 1 && x.shape[d] >= 0;
        lo[d] = n->attrs.begin[d];
        hi[d] = x.shape[d] - n->attrs.end[d];
    }
    tg_tensor ins[2] = {dy, in(n, 0)};
    tg_ad_give(ad, n, 0,
               as_pad ? tg_pad(ad->g, dy, lo, hi, 0) : like(ad, n, TG_OP_SLICE_GRAD, 2, ins));
}

/* The slice of dy along `axis` from `begin` to `end`, everything else whole. */
static tg_tensor slice_axis(tg_ad *ad, tg_tensor dy, int rank, int axis, int64_t begin,
                            int64_t end) {
    int64_t b[TG_MAX_RANK], e[TG_MAX_RANK], s[TG_MAX_RANK];
    for (int d = 0; d < rank; d++) {
        b[d] = d == axis ? begin : 0;
        e[d] = d == axis ? end : INT64_MAX;
        s[d] = 1;
    }
    return tg_slice(ad->g, dy, b, e, s);
}

static void vjp_concat(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    int axis = (int)n->attrs.axis;
    int64_t at = 0;
    for (int k = 0; k < n->n_inputs; k++) {
        int64_t size = in_node(ad, n, k).shape[axis];
        if (size < 0) {
            tg_ad_fail(ad, n, "inputs of dynamic length along the axis are not supported");
            return;
        }
        if (tg_ad_wants(ad, n, k))
            tg_ad_give(ad, n, k, slice_axis(ad, dy, n->rank, axis, at, at + size));
        at += size;
    }
}

static void vjp_pad(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    int64_t b[TG_MAX_RANK], e[TG_MAX_RANK], s[TG_MAX_RANK];
    for (int d = 0; d < n->rank; d++) {
        b[d] = n->attrs.lo[d];
        e[d] = n->attrs.hi[d] ? -n->attrs.hi[d] : INT64_MAX;
        s[d] = 1;
    }
    tg_ad_give(ad, n, 0, tg_slice(ad->g, dy, b, e, s));
}

/* gather: dy scattered (added) into zeros of the table's shape. */
static void vjp_gather(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_node x = in_node(ad, n, 0);
    tg_tensor zeros = tg_ad_zeros(ad, x.dtype, x.rank, x.shape);
    if (zeros.id < 0) return;
    tg_ad_give(ad, n, 0, tg_scatter_add(ad->g, zeros, in(n, 1), dy, (int)n->attrs.axis));
}

static void vjp_scatter_add(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_ad_give(ad, n, 0, dy);
    if (tg_ad_wants(ad, n, 2))
        tg_ad_give(ad, n, 2, tg_gather(ad->g, dy, in(n, 1), (int)n->attrs.axis));
}

/* ------------------------------------------------------------------ */
/* Linear algebra                                                      */
/* ------------------------------------------------------------------ */

/* C = op(A) op(B): dA = dC op(B)^T (stored transposed if ta),
 * dB = op(A)^T dC (likewise), over the broadcast batch. */
static void vjp_matmul(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor a = in(n, 0), b = in(n, 1);
    bool ta = n->attrs.transpose_a, tb = n->attrs.transpose_b;
    if (tg_ad_wants(ad, n, 0))
        tg_ad_give(ad, n, 0,
                   ta ? tg_matmul(ad->g, b, dy, tb, true) : tg_matmul(ad->g, dy, b, false, !tb));
    if (tg_ad_wants(ad, n, 1))
        tg_ad_give(ad, n, 1,
                   tb ? tg_matmul(ad->g, dy, a, true, ta) : tg_matmul(ad->g, a, dy, !ta, false));
}

static void vjp_conv1d(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor ins[3] = {dy, in(n, 0), in(n, 1)};
    if (tg_ad_wants(ad, n, 0)) tg_ad_give(ad, n, 0, like(ad, n, TG_OP_CONV1D_GRAD_INPUT, 3, ins));
    if (tg_ad_wants(ad, n, 1)) tg_ad_give(ad, n, 1, like(ad, n, TG_OP_CONV1D_GRAD_WEIGHT, 3, ins));
}

/* ------------------------------------------------------------------ */
/* Composites: their own backward ops                                  */
/* ------------------------------------------------------------------ */

/* softmax_grad / log_softmax_grad (y, dy). */
static void vjp_softmax(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_op op = n->op == TG_OP_SOFTMAX ? TG_OP_SOFTMAX_GRAD : TG_OP_LOG_SOFTMAX_GRAD;
    tg_tensor ins[2] = {y, dy};
    tg_ad_give(ad, n, 0, like(ad, n, op, 2, ins));
}

/* Row `row` of layer_norm_grad_wb's [2, D] result, as [D]. */
static tg_tensor wb_row(tg_ad *ad, tg_tensor wb, int64_t row, int64_t D) {
    int64_t b[2] = {row, 0}, e[2] = {row + 1, INT64_MAX}, s[2] = {1, 1};
    return tg_ad_reshape(ad, tg_slice(ad->g, wb, b, e, s), 1, &D);
}

static void vjp_layer_norm(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor x = in(n, 0), w = in(n, 1);
    if (tg_ad_wants(ad, n, 0)) {
        tg_tensor ins[3] = {dy, x, w};
        tg_ad_give(ad, n, 0, like(ad, n, TG_OP_LAYER_NORM_GRAD_X, 3, ins));
    }
    if (tg_ad_wants(ad, n, 1) || tg_ad_wants(ad, n, 2)) {
        tg_tensor ins[2] = {dy, x};
        tg_tensor wb = like(ad, n, TG_OP_LAYER_NORM_GRAD_WB, 2, ins);
        int64_t D = n->shape[n->rank - 1];
        if (tg_ad_wants(ad, n, 1)) tg_ad_give(ad, n, 1, wb_row(ad, wb, 0, D));
        if (tg_ad_wants(ad, n, 2)) tg_ad_give(ad, n, 2, wb_row(ad, wb, 1, D));
    }
}

/* attention_grad_q/k/v (q, k, v, [mask], dout, lse, delta), each over the
 * broadcast batch, summed to the input's shape by tg_ad_give. As in
 * FlashAttention-2, the backward kernels recompute the probabilities from
 * the rows' log-sum-exp (attention_lse, one node the three share) and
 * take delta = rowsum(dout * out), so no [Tq, Tk] buffer is needed. */
static void vjp_attention(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    static const tg_op ops[3] = {TG_OP_ATTENTION_GRAD_Q, TG_OP_ATTENTION_GRAD_K,
                                 TG_OP_ATTENTION_GRAD_V};
    if (n->attrs.has_mask && tg_ad_wants(ad, n, 3)) {
        tg_ad_fail(ad, n, "the mask gets no gradient; wrap it in stop_gradient");
        return;
    }
    if (n->attrs.transpose_a) { /* only permute_matmul makes it, after autodiff */
        tg_ad_fail(ad, n, "no gradient of an attention with transpose_a; differentiate first");
        return;
    }
    if (!tg_ad_wants(ad, n, 0) && !tg_ad_wants(ad, n, 1) && !tg_ad_wants(ad, n, 2)) return;
    tg_tensor ins[7];
    for (int k = 0; k < n->n_inputs; k++) ins[k] = in(n, k);
    int last = n->rank - 1;
    ins[n->n_inputs] = dy;
    ins[n->n_inputs + 1] = like(ad, n, TG_OP_ATTENTION_LSE, n->n_inputs, ins);
    ins[n->n_inputs + 2] = tg_sum(ad->g, tg_mul(ad->g, dy, y), 1, &last, true);
    for (int k = 0; k < 3; k++)
        if (tg_ad_wants(ad, n, k)) tg_ad_give(ad, n, k, like(ad, n, ops[k], n->n_inputs + 3, ins));
}

static void vjp_cross_entropy(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy) {
    tg_tensor ins[3] = {in(n, 0), in(n, 1), dy};
    tg_ad_give(ad, n, 0, like(ad, n, TG_OP_CROSS_ENTROPY_GRAD, 3, ins));
}

/* ------------------------------------------------------------------ */
/* The table                                                           */
/* ------------------------------------------------------------------ */

#define NONE tg_vjp_none
#define UNSUPPORTED tg_vjp_unsupported

static const tg_vjp_fn rules[TG_OP_COUNT] = {
    [TG_OP_PLACEHOLDER] = NONE,
    [TG_OP_VARIABLE] = NONE,
    [TG_OP_CONSTANT] = NONE,
    [TG_OP_NEG] = vjp_neg,
    [TG_OP_ABS] = vjp_abs,
    [TG_OP_EXP] = vjp_exp,
    [TG_OP_LOG] = vjp_log,
    [TG_OP_SQRT] = vjp_sqrt,
    [TG_OP_RSQRT] = vjp_rsqrt,
    [TG_OP_RECIPROCAL] = vjp_reciprocal,
    [TG_OP_SQUARE] = vjp_square,
    [TG_OP_TANH] = vjp_tanh,
    [TG_OP_ERF] = vjp_erf,
    [TG_OP_GELU] = vjp_gelu,
    [TG_OP_GELU_TANH] = vjp_gelu,
    [TG_OP_RELU] = vjp_relu,
    [TG_OP_SIGMOID] = vjp_sigmoid,
    [TG_OP_SILU] = vjp_silu,
    [TG_OP_SIN] = vjp_sin,
    [TG_OP_COS] = vjp_cos,
    [TG_OP_CAST] = vjp_cast,
    [TG_OP_STOP_GRADIENT] = NONE,
    [TG_OP_ADD] = vjp_add,
    [TG_OP_SUB] = vjp_sub,
    [TG_OP_MUL] = vjp_mul,
    [TG_OP_DIV] = vjp_div,
    [TG_OP_POW] = vjp_pow,
    [TG_OP_MAXIMUM] = vjp_maximum,
    [TG_OP_MINIMUM] = vjp_maximum,
    [TG_OP_EQ] = NONE,
    [TG_OP_NE] = NONE,
    [TG_OP_LT] = NONE,
    [TG_OP_LE] = NONE,
    [TG_OP_GT] = NONE,
    [TG_OP_GE] = NONE,
    [TG_OP_WHERE] = vjp_where,
    [TG_OP_SUM] = vjp_sum,
    [TG_OP_MEAN] = vjp_sum,
    [TG_OP_MAX] = vjp_max,
    [TG_OP_MIN] = vjp_max,
    [TG_OP_ARGMAX] = NONE,
    [TG_OP_RESHAPE] = vjp_reshape,
    [TG_OP_PERMUTE] = vjp_permute,
    [TG_OP_BROADCAST_TO] = vjp_identity,
    [TG_OP_SLICE] = vjp_slice,
    [TG_OP_CONCAT] = vjp_concat,
    [TG_OP_PAD] = vjp_pad,
    [TG_OP_GATHER] = vjp_gather,
    [TG_OP_SCATTER_ADD] = vjp_scatter_add,
    [TG_OP_ONE_HOT] = NONE,
    [TG_OP_IOTA] = NONE,
    [TG_OP_MATMUL] = vjp_matmul,
    [TG_OP_CONV1D] = vjp_conv1d,
    [TG_OP_SOFTMAX] = vjp_softmax,
    [TG_OP_LOG_SOFTMAX] = vjp_softmax,
    [TG_OP_LAYER_NORM] = vjp_layer_norm,
    [TG_OP_ATTENTION] = vjp_attention,
    [TG_OP_CROSS_ENTROPY] = vjp_cross_entropy,
    [TG_OP_ASSIGN] = NONE,
    [TG_OP_SLICE_UPDATE] = NONE,
    [TG_OP_GELU_GRAD] = UNSUPPORTED,
    [TG_OP_GELU_TANH_GRAD] = UNSUPPORTED,
    [TG_OP_SOFTMAX_GRAD] = UNSUPPORTED,
    [TG_OP_LOG_SOFTMAX_GRAD] = UNSUPPORTED,
    [TG_OP_LAYER_NORM_GRAD_X] = UNSUPPORTED,
    [TG_OP_LAYER_NORM_GRAD_WB] = UNSUPPORTED,
    [TG_OP_ATTENTION_GRAD_Q] = UNSUPPORTED,
    [TG_OP_ATTENTION_GRAD_K] = UNSUPPORTED,
    [TG_OP_ATTENTION_GRAD_V] = UNSUPPORTED,
    [TG_OP_ATTENTION_LSE] = UNSUPPORTED,
    [TG_OP_CROSS_ENTROPY_GRAD] = UNSUPPORTED,
    [TG_OP_CONV1D_GRAD_INPUT] = UNSUPPORTED,
    [TG_OP_CONV1D_GRAD_WEIGHT] = UNSUPPORTED,
    [TG_OP_SLICE_GRAD] = UNSUPPORTED,
    [TG_OP_ADAMW_UPDATE] = NONE,
    [TG_OP_SGD_UPDATE] = NONE,
};

tg_vjp_fn tg_vjp_rule(tg_op op) {
    /* an op missing from the table fails loudly rather than dropping gradients */
    return (unsigned)op < TG_OP_COUNT && rules[op] ? rules[op] : tg_vjp_unsupported;
}

bool tg_vjp_table_complete(char *missing, size_t size) {
    for (int op = 0; op < TG_OP_COUNT; op++) {
        if (!rules[op]) {
            snprintf(missing, size, "%s", tg_ops[op].name);
            return false;
        }
    }
    return true;
}
