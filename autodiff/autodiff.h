/* autodiff.h — reverse-mode differentiation, internal interface: the state
 * of one tg_gradients call (gradients.c), the VJP rule table (vjp.c) and
 * the helpers the rules build gradients with. Not installed. */
#ifndef TG_AUTODIFF_H
#define TG_AUTODIFF_H

#include "graph/graph_internal.h"

/* One tg_gradients call. Nodes [0, n_fwd) are the graph being
 * differentiated; gradient nodes are appended after them. */
typedef struct tg_ad {
    tg_graph *g;
    int n_fwd;
    bool *needs;     /* [n_fwd] a float node on a path from a wrt to the output */
    tg_tensor *grad; /* [n_fwd] the gradient summed so far; id -1: none yet */
} tg_ad;

/* A VJP rule: given dy, the gradient of node `y` (n is a copy of its node,
 * safe to read while nodes are added), adds the gradients of the inputs
 * that need one with tg_ad_give. */
typedef void (*tg_vjp_fn)(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy);

/* ---- the table (vjp.c) ---- */

/* The rule of an op: a real rule, tg_vjp_none (not differentiable: the
 * gradient stops, as at stop_gradient, comparisons, argmax, integer
 * producers and state ops) or tg_vjp_unsupported (differentiable but
 * without a rule: backward ops, so no second-order gradients). */
tg_vjp_fn tg_vjp_rule(tg_op op);
void tg_vjp_none(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy);
void tg_vjp_unsupported(tg_ad *ad, const tg_node *n, tg_tensor y, tg_tensor dy);
/* True if every op has an entry in the table; otherwise names the first
 * op without one in `missing`. */
bool tg_vjp_table_complete(char *missing, size_t size);

/* ---- helpers for rules (gradients.c) ---- */

/* True if input k of n needs a gradient. Rules test this before building
 * the gradient of an input, so no node is made for nothing. */
bool tg_ad_wants(const tg_ad *ad, const tg_node *n, int k);
/* Adds t, the gradient of input k of n, to that input's gradient. t may
 * have the broadcast shape of n's output: it is summed over the broadcast
 * axes first. */
void tg_ad_give(tg_ad *ad, const tg_node *n, int k, tg_tensor t);
/* t summed over the axes along which `target` was broadcast to t's shape. */
tg_tensor tg_ad_sum_to(tg_ad *ad, tg_tensor t, const tg_node *target);
/* t reshaped to `shape`; at most one dimension may be dynamic. */
tg_tensor tg_ad_reshape(tg_ad *ad, tg_tensor t, int rank, const int64_t *shape);
/* A zero tensor of a static shape (a broadcast scalar). */
tg_tensor tg_ad_zeros(tg_ad *ad, tg_dtype dtype, int rank, const int64_t *shape);
/* Records an error on the graph (sticky) naming the rule's op. */
void tg_ad_fail(tg_ad *ad, const tg_node *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
