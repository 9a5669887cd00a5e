/* gelu.c — `gelu_derivative`: the derivative of an exact GELU computed
 * where the GELU is.
 *
 * A training graph computes gelu(x) forward and gelu_grad(x, dy) =
 * dy * (Phi(x) + x phi(x)) backward, so x is kept for the backward and the
 * backward evaluates erf and exp again. Where x is read only by gelu and
 * gelu_grad nodes (not a target, f32, not a graph input), this pass writes
 *
 *   u      = x / sqrt 2
 *   Phi    = 0.5 + 0.5 * erf(u)
 *   gelu   = x * Phi
 *   factor = Phi + x * exp(-u^2) / sqrt(2 pi)
 *   gelu_grad(x, dy) = dy * factor
 *
 * The fusion pass then puts Phi, gelu and factor in the kernel that makes
 * x (a matmul's epilogue) and the product by dy in the backward matmul's:
 * the forward stores factor where it stored x (the same bytes), the
 * backward multiplies instead of evaluating erf and exp (charlm's FFN
 * backward kernel, timed alone single-threaded: 1.54-1.93 -> 1.07-1.34 ms;
 * the forward kernel gains an exp). Values change by rounding only: the
 * same formulas, evaluated in f32 per op instead of inside one op. */
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

/* x is worth rewriting: it feeds only gelu and gelu_grad nodes (as their
 * x), at least one gelu_grad. */
static bool rewritable(const tg_graph *g, const tg_users *u, const bool *is_target, int32_t x) {
    const tg_node *xn = &g->nodes[x];
    if (xn->dtype != TG_F32 || is_target[x] || tg_ops[xn->op].klass == TG_CLASS_SOURCE ||
        tg_node_is_alias(xn))
        return false;
    bool grad = false;
    for (int32_t i = u->start[x]; i < u->start[x + 1]; i++) {
        const tg_node *un = &g->nodes[u->list[i]];
        if (un->op == TG_OP_GELU_GRAD && un->inputs[0] == x && un->inputs[1] != x)
            grad = true;
        else if (un->op != TG_OP_GELU)
            return false;
    }
    return grad;
}

tg_status tg_pass_gelu_derivative(tg_graph **gp, const tg_pass_ctx *ctx) {
    const tg_graph *old = *gp;
    bool any = false;
    for (int id = 0; id < old->n_nodes && !any; id++) any = old->nodes[id].op == TG_OP_GELU_GRAD;
    if (!any) return TG_OK;
    tg_users u = {0};
    bool *is_target = calloc((size_t)old->n_nodes + 1, sizeof *is_target);
    /* per old x: the new Phi, factor and u nodes */
    int32_t *phi = malloc(3 * ((size_t)old->n_nodes + 1) * sizeof *phi), *fac = NULL, *u_of = NULL;
    if (phi) fac = phi + old->n_nodes + 1, u_of = fac + old->n_nodes + 1;
    tg_status st = is_target && phi ? tg_users_build(old, &u)
                                    : tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; st == TG_OK && i < ctx->n_targets; i++) is_target[ctx->targets[i]] = true;
    for (int id = 0; phi && id < old->n_nodes; id++) phi[id] = fac[id] = u_of[id] = -1;
    tg_rewriter rw;
    bool begun = st == TG_OK;
    if (begun) st = tg_rw_begin(&rw, old, ctx->map);
    for (int id = 0; st == TG_OK && id < old->n_nodes; id++) {
        const tg_node *n = &old->nodes[id];
        int32_t x = n->n_inputs > 0 ? n->inputs[0] : -1;
        if ((n->op != TG_OP_GELU && n->op != TG_OP_GELU_GRAD) ||
            !rewritable(old, &u, is_target, x)) {
            st = tg_rw_copy(&rw, id);
            continue;
        }
        tg_graph *g = rw.g;
        tg_tensor xs = {rw.map[x]};
        /* three constants: with the bias, the four extra inputs a matmul
         * epilogue takes (TG_FUSION_MAX_EXTRA) */
        if (phi[x] < 0) {
            tg_tensor u = tg_mul(g, xs, tg_scalar(g, TG_F32, 0.70710678118654752440));
            tg_tensor half = tg_scalar(g, TG_F32, 0.5);
            u_of[x] = u.id;
            phi[x] = tg_add(g, half, tg_mul(g, half, tg_erf(g, u))).id;
        }
        tg_tensor p = {phi[x]}, t;
        if (n->op == TG_OP_GELU) {
            t = tg_mul(g, xs, p);
        } else {
            if (fac[x] < 0) { /* exp(-u^2) = exp(-x^2 / 2) */
                tg_tensor u = {u_of[x]};
                tg_tensor pdf = tg_mul(g, tg_exp(g, tg_neg(g, tg_mul(g, u, u))),
                                       tg_scalar(g, TG_F32, 0.39894228040143267794));
                fac[x] = tg_add(g, p, tg_mul(g, xs, pdf)).id;
            }
            t = tg_mul(g, (tg_tensor){rw.map[n->inputs[1]]}, (tg_tensor){fac[x]});
        }
        st = tg_rw_built(&rw, id, t, "gelu_derivative: rewriting");
    }
    if (begun) st = tg_rw_end(&rw, st, gp);
    tg_users_free(&u);
    free(is_target);
    free(phi);
    return st;
}
