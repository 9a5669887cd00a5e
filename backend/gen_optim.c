/* backend/gen_optim.c — the optimizer updates adamw_update and sgd_update:
 * one invocation per element, one dispatch per variable, PyTorch's rules
 * as the interpreter has them (graph/interp.c), in f32.
 *
 * These kernels have one output per variable the op writes (the op
 * table's `writes` mask, in input order; backend/kernel.h): adamw writes
 * st0 = w, st1 = m, st2 = v; sgd with momentum st0 = w, st1 = the
 * momentum buffer. The executor may bind an output to the very buffer its
 * input reads (an in-place update): every element is read, then written,
 * by the same invocation, so that is safe.
 *
 * lr and step are read from their (fed) inputs at run time, so changing
 * them never recompiles. Bias corrections 1 - beta^t are computed as
 * -expm1(t log beta), log beta folded in double on the host (1 - pow(beta,
 * t) in f32 cancels: for beta2 = 0.999 at t = 1 it loses 10 bits). */
#include "backend/gen_common.h"

#include <math.h>
#include <stdio.h>

/* expm1 accurate near 0: a Taylor polynomial for |x| < 0.5 (the 10th
 * term is below 2^-32 relative), exp(x) - 1 beyond, where it does not
 * cancel. GLSL allows exp and log an absolute error of 2^-21 near 1, so
 * neither exp(x) - 1 nor Kahan's (u - 1) x / log(u) is good enough there. */
static const char *expm1_glsl = "float tg_expm1(float x) {\n"
                                "    if (abs(x) >= 0.5) return exp(x) - 1.0;\n"
                                "    float p = 1.0 / 362880.0;\n"
                                "    p = fma(p, x, 1.0 / 40320.0);\n"
                                "    p = fma(p, x, 1.0 / 5040.0);\n"
                                "    p = fma(p, x, 1.0 / 720.0);\n"
                                "    p = fma(p, x, 1.0 / 120.0);\n"
                                "    p = fma(p, x, 1.0 / 24.0);\n"
                                "    p = fma(p, x, 1.0 / 6.0);\n"
                                "    p = fma(p, x, 0.5);\n"
                                "    p = fma(p, x, 1.0);\n"
                                "    return p * x;\n"
                                "}\n";

/* The number of outputs the kernel of n must have: one per written input. */
static int written_count(const tg_node *n) {
    int c = 0;
    for (int i = 0; i < n->n_inputs && i < 32; i++) c += (int)(tg_ops[n->op].writes >> i & 1u);
    return c;
}

tg_status tg_gen_optim(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out) {
    const tg_graph *gr = k->g;
    int32_t id = k->nodes[k->n_nodes - 1];
    const tg_node *n = &gr->nodes[id];
    int64_t count = tg_shape_count(n->rank, n->shape);
    if (k->n_nodes != 1 || k->n_inputs != n->n_inputs || k->n_outputs != written_count(n))
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "optimizer generator: %s %d must be alone in its kernel with its "
                            "inputs and one output per written variable (%d), got %d",
                            tg_ops[n->op].name, (int)id, written_count(n), k->n_outputs);
    for (int i = 0; i < n->n_inputs; i++)
        if (k->inputs[i] != n->inputs[i])
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "optimizer generator: %s %d: kernel inputs must be the node's "
                                "inputs in order",
                                tg_ops[n->op].name, (int)id);
    if (count > (int64_t)UINT32_MAX)
        return tg_set_error(TG_ERR_UNSUPPORTED, "%s of %lld elements", tg_ops[n->op].name,
                            (long long)count);
    uint32_t wg = tg_gen_wg_size(caps, 128);
    tg_gen g;
    tg_status st = tg_gen_begin(&g, caps, k, out, wg, false);
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }
    tg_sb *b = &g.b;
    const tg_attrs *a = &n->attrs;
    char l1[64], l2[64], l3[64], l4[64], l5[64], l6[64], l7[64], l8[64];
    if (n->op == TG_OP_ADAMW_UPDATE) {
        /* (w, m, v, grad, lr, step) */
        tg_sb_printf(b, "%s", expm1_glsl);
        tg_sb_printf(b,
                     "void main() {\n"
                     "    uint i = tg_group() * %uu + gl_LocalInvocationID.x;\n"
                     "    if (i >= %lluu) return;\n"
                     "    float lr = ld4(0u), t = float(ld5(0u));\n"
                     "    float bc1 = -tg_expm1(t * %s), bc2 = -tg_expm1(t * %s);\n"
                     "    float w = ld0(i), g = ld3(i);\n"
                     "    w -= lr * %s * w;\n"
                     "    float m = %s * ld1(i) + %s * g;\n"
                     "    float v = %s * ld2(i) + %s * g * g;\n"
                     "    w -= lr * (m / bc1) / (sqrt(v / bc2) + %s);\n"
                     "    st0(i, w);\n"
                     "    st1(i, m);\n"
                     "    st2(i, v);\n"
                     "}\n",
                     wg, (unsigned long long)count, tg_gen_flit(log(a->beta1), l1, sizeof l1),
                     tg_gen_flit(log(a->beta2), l2, sizeof l2),
                     tg_gen_flit(a->weight_decay, l3, sizeof l3),
                     tg_gen_flit(a->beta1, l4, sizeof l4), tg_gen_flit(1 - a->beta1, l5, sizeof l5),
                     tg_gen_flit(a->beta2, l6, sizeof l6), tg_gen_flit(1 - a->beta2, l7, sizeof l7),
                     tg_gen_flit(a->eps, l8, sizeof l8));
    } else if (n->op == TG_OP_SGD_UPDATE) {
        /* (w, grad, lr, [step, buf]) */
        bool mom = a->momentum != 0;
        tg_sb_printf(b,
                     "void main() {\n"
                     "    uint i = tg_group() * %uu + gl_LocalInvocationID.x;\n"
                     "    if (i >= %lluu) return;\n"
                     "    float w = ld0(i), g = ld1(i) + %s * w;\n",
                     wg, (unsigned long long)count, tg_gen_flit(a->weight_decay, l1, sizeof l1));
        char nest[96];
        snprintf(nest, sizeof nest, "g + %s * buf", tg_gen_flit(a->momentum, l4, sizeof l4));
        if (mom)
            tg_sb_printf(b,
                         "    float buf = float(ld3(0u)) == 1.0 ? g : %s * ld4(i) + %s * g;\n"
                         "    st1(i, buf);\n"
                         "    g = %s;\n",
                         tg_gen_flit(a->momentum, l2, sizeof l2),
                         tg_gen_flit(1 - a->dampening, l3, sizeof l3), a->nesterov ? nest : "buf");
        tg_sb_printf(b, "    st0(i, w - ld2(0u) * g);\n}\n");
    } else {
        tg_gen_abort(&g);
        return tg_set_error(TG_ERR_UNSUPPORTED, "optimizer generator: no kernel for %s",
                            tg_ops[n->op].name);
    }
    return tg_gen_finish(&g, ((uint64_t)count + wg - 1) / wg);
}
