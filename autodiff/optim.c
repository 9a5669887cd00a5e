/* optim.c — optimizers as graph operations: tg_adamw and tg_sgd make one
 * fused state op per variable (adamw_update, sgd_update: graph/ops.c), which
 * writes the weight and its moments through the op table's `writes` mask;
 * tg_clip_by_global_norm is plain graph ops. */
#include "graph/graph_internal.h"

#include <stdlib.h>
#include <string.h>

/* The node of t, or NULL after recording an error on g. */
static const tg_node *variable_of(tg_graph *g, tg_tensor t, const char *fn) {
    const tg_node *n = g ? tg_node_at(g, t) : NULL;
    if (g && !n) tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "%s: the variable is invalid", fn);
    if (n && n->op != TG_OP_VARIABLE) {
        tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "%s: expected a variable, got a %s", fn,
                      tg_ops[n->op].name);
        return NULL;
    }
    return n;
}

/* A non-trainable variable "<var's name><suffix>" of var's type. */
static tg_tensor state_variable(tg_graph *g, tg_tensor var, const char *suffix) {
    const tg_node *v = tg_node_at(g, var);
    size_t len = strlen(v->name) + strlen(suffix) + 1;
    char *name = malloc(len);
    if (!name) {
        tg_graph_fail(g, TG_ERR_NO_MEMORY, "out of memory");
        return TG_INVALID;
    }
    snprintf(name, len, "%s%s", v->name, suffix);
    int64_t shape[TG_MAX_RANK];
    memcpy(shape, v->shape, sizeof shape);
    tg_tensor t = tg_variable(g, name, v->dtype, v->rank, shape, false);
    free(name);
    return t;
}

tg_tensor tg_adamw(tg_graph *g, tg_tensor var, tg_tensor grad, tg_tensor lr, tg_tensor step,
                   double beta1, double beta2, double eps, double weight_decay) {
    if (!variable_of(g, var, "adamw")) return TG_INVALID;
    tg_tensor m = state_variable(g, var, ".adam_m");
    tg_tensor v = state_variable(g, var, ".adam_v");
    tg_tensor ins[6] = {var, m, v, grad, lr, step};
    tg_attrs at = {.beta1 = beta1, .beta2 = beta2, .eps = eps, .weight_decay = weight_decay};
    return tg_node_add(g, TG_OP_ADAMW_UPDATE, 6, ins, &at, TG_F32);
}

tg_tensor tg_sgd(tg_graph *g, tg_tensor var, tg_tensor grad, tg_tensor lr, tg_tensor step,
                 double momentum, double dampening, bool nesterov, double weight_decay) {
    if (!variable_of(g, var, "sgd")) return TG_INVALID;
    tg_attrs at = {.momentum = momentum,
                   .dampening = dampening,
                   .nesterov = nesterov,
                   .weight_decay = weight_decay};
    tg_tensor ins[5] = {var, grad, lr, step, TG_INVALID};
    if (momentum == 0) return tg_node_add(g, TG_OP_SGD_UPDATE, 3, ins, &at, TG_F32);
    ins[4] = state_variable(g, var, ".sgd_momentum");
    return tg_node_add(g, TG_OP_SGD_UPDATE, 5, ins, &at, TG_F32);
}

/* sum(x^2) as a rank-0 f32. */
static tg_tensor sum_of_squares(tg_graph *g, tg_tensor x) {
    if (tg_tensor_dtype(g, x) != TG_F32) x = tg_cast(g, x, TG_F32);
    return tg_sum(g, tg_square(g, x), 0, NULL, false);
}

tg_status tg_clip_by_global_norm(tg_graph *g, int n, const tg_tensor *grads, double max_norm,
                                 tg_tensor *clipped_out, tg_tensor *norm_out) {
    if (!g) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_clip_by_global_norm: graph is NULL");
    if (n < 1 || !grads || !clipped_out || !(max_norm > 0))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_clip_by_global_norm: needs n >= 1 gradients (got %d), an output "
                            "array and max_norm > 0 (got %g)",
                            n, max_norm);
    tg_tensor total = sum_of_squares(g, grads[0]);
    for (int i = 1; i < n; i++) total = tg_add(g, total, sum_of_squares(g, grads[i]));
    tg_tensor norm = tg_sqrt(g, total);
    tg_tensor coef =
        tg_div(g, tg_scalar(g, TG_F32, max_norm), tg_add(g, norm, tg_scalar(g, TG_F32, 1e-6)));
    coef = tg_minimum(g, coef, tg_scalar(g, TG_F32, 1.0));
    for (int i = 0; i < n; i++) {
        tg_dtype dt = tg_tensor_dtype(g, grads[i]);
        clipped_out[i] = tg_mul(g, grads[i], dt == TG_F32 ? coef : tg_cast(g, coef, dt));
    }
    if (norm_out) *norm_out = norm;
    return tg_graph_status(g) == TG_OK ? TG_OK
                                       : tg_set_error(tg_graph_status(g), "%s", tg_graph_error(g));
}
