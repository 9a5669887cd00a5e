/* backend/gen_optim.c — the optimizer updates adamw_update and sgd_update:
 * one invocation per element, PyTorch's rules as the interpreter has them
 * (graph/interp.c), in f32. sgd: one dispatch per variable; adamw: one
 * dispatch for all the updates the fusion pass grouped (the multi-tensor
 * optimizer: passes/fusion.c), each update's gradient read from a kernel
 * input or through a fused slice of one.
 *
 * These kernels have one output per variable the op writes (the op
 * table's `writes` mask, in input order; backend/kernel.h): adamw writes
 * w (the node), m and v (found by node id); sgd with momentum st0 = w, st1 = the
 * momentum buffer. The executor may bind an output to the very buffer its
 * input reads (an in-place update): every element is read, then written,
 * by the same invocation, so that is safe.
 *
 * lr and step are read from their (fed) inputs at run time, so changing
 * them never recompiles. Bias corrections 1 - beta^t are computed as
 * -expm1(t log beta), log beta folded in double on the host (1 - pow(beta,
 * t) in f32 cancels: for beta2 = 0.999 at t = 1 it loses 10 bits). */
#include "backend/device_class.h"
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

/* The kernel output index of node id, or -1. */
static int output_index(const tg_kernel *k, int32_t id) {
    for (int j = 0; j < k->n_outputs; j++)
        if (k->outputs[j] == id) return j;
    return -1;
}

/* Emits `uint <name>(uint i)` reading operand x (a kernel input, or a
 * slice member, through aliases) at its element i; *input: the kernel
 * input it loads. */
static tg_status operand_fn(tg_sb *b, const tg_kernel *k, int32_t x, const char *name, int *input) {
    const tg_graph *gr = k->g;
    *input = tg_gen_input_index(k, x);
    if (*input >= 0) {
        tg_sb_printf(b, "uint %s(uint i) { return i; }\n", name);
        return TG_OK;
    }
    while (gr->nodes[x].op == TG_OP_RESHAPE || gr->nodes[x].op == TG_OP_STOP_GRADIENT)
        x = gr->nodes[x].inputs[0];
    const tg_node *s = &gr->nodes[x];
    *input = s->op == TG_OP_SLICE ? tg_gen_input_index(k, s->inputs[0]) : -1;
    if (*input < 0)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "optimizer generator: operand %d is neither a kernel input nor a "
                            "fused slice of one",
                            (int)x);
    const tg_node *in = &gr->nodes[s->inputs[0]];
    int64_t xs[TG_MAX_RANK], strides[TG_MAX_RANK], base = 0;
    tg_gen_row_strides(in->rank, in->shape, xs);
    for (int d = 0; d < s->rank; d++) {
        base += s->attrs.begin[d] * xs[d];
        strides[d] = s->attrs.step[d] * xs[d];
    }
    tg_gen_offset_fn(b, name, s->rank, s->shape, strides, base);
    return TG_OK;
}

/* Invocations of a serial multi-tensor update (tg_serial_parts): each
 * invocation updates elements i, i + S, i + 2S, ... of every member, so
 * every invocation runs every member's code (a CPU device runs it all
 * anyway, under masks); a member of fewer than S elements still costs S.
 * S is the multiple of the workgroup that costs least, at least two
 * workgroups (both CPU threads busy). */
static uint64_t serial_stride(const uint64_t *counts, int n, uint32_t wg) {
    uint64_t best = 2 * (uint64_t)wg, best_cost = UINT64_MAX, largest = 0;
    for (int i = 0; i < n; i++)
        if (counts[i] > largest) largest = counts[i];
    for (uint64_t s = 2 * (uint64_t)wg; s <= (1u << 20); s *= 2) {
        uint64_t cost = 0;
        for (int i = 0; i < n; i++) cost += (counts[i] + s - 1) / s * s;
        if (cost <= best_cost) { /* ties: more workgroups */
            best = s;
            best_cost = cost;
        }
        if (s >= largest) break;
    }
    return best;
}

/* The inputs of the adamw_update members that a CPU device updates 4
 * elements at a time (a bit per kernel input, at most 64): w, m, v and
 * grad all kernel inputs (not slices) readable as RGBA texels, f32
 * outputs. lavapipe runs each scalar storage-buffer store as a loop over
 * the lanes: one vec4 store does the work of four. */
static uint64_t adamw_quad_inputs(const tg_vk_caps *caps, const tg_kernel *k) {
    uint64_t mask = 0;
    for (int mi = 0; mi < k->n_nodes; mi++) {
        const tg_node *n = &k->g->nodes[k->nodes[mi]];
        if (n->op != TG_OP_ADAMW_UPDATE || tg_shape_count(n->rank, n->shape) % 4) continue;
        uint64_t bits = 0;
        bool ok = true;
        for (int p = 0; p < 4 && ok; p++) {
            int in = tg_gen_input_index(k, n->inputs[p]);
            ok = in >= 0 && in < 64 && tg_gen_texel_input_ok(caps, k, in, true);
            if (ok) bits |= (uint64_t)1 << in;
        }
        int32_t outs[3] = {k->nodes[mi], n->inputs[1], n->inputs[2]};
        for (int o = 0; o < 3 && ok; o++) {
            int j = output_index(k, outs[o]);
            ok = j >= 0 && k->output_storage[j] == TG_F32;
        }
        if (ok) mask |= bits;
    }
    return mask;
}

/* Whether member n updates 4 elements an invocation (adamw_quad_inputs). */
static bool adamw_quad(const tg_kernel *k, const tg_node *n, uint64_t quad_inputs) {
    for (int p = 0; p < 4; p++) {
        int in = tg_gen_input_index(k, n->inputs[p]);
        if (in < 0 || in >= 64 || !(quad_inputs >> in & 1u)) return false;
    }
    return true;
}

/* adamw_update members (w, m, v, grad, lr, step), all with the
 * hyperparameters, lr and step of the first. Each element is computed
 * exactly as the single-variable kernel does. Either one invocation per
 * element of all of them, member j's elements after those of members
 * before it (a GPU skips the members an invocation does not update), or
 * serial (serial_stride). *groups receives the workgroup count. */
static tg_status gen_adamw(tg_gen *g, const tg_kernel *k, uint32_t wg, bool serial,
                           uint64_t quad_inputs, uint64_t *total, uint64_t *groups) {
    tg_sb *b = &g->b;
    const tg_graph *gr = k->g;
    const tg_node *first = NULL;
    char l[8][64], name[32];
    tg_sb_printf(b, "%s", expm1_glsl);
    *total = 0;
    for (int mi = 0; mi < k->n_nodes; mi++) {
        const tg_node *n = &gr->nodes[k->nodes[mi]];
        if (n->op != TG_OP_ADAMW_UPDATE) continue;
        if (!first) first = n;
        int in[4];
        for (int p = 0; p < 4; p++) {
            snprintf(name, sizeof name, "off%d_%d", (int)k->nodes[mi], p);
            tg_status st = operand_fn(b, k, n->inputs[p], name, &in[p]);
            if (st != TG_OK) return st;
        }
        int out[3] = {output_index(k, k->nodes[mi]), output_index(k, n->inputs[1]),
                      output_index(k, n->inputs[2])};
        if (out[0] < 0 || out[1] < 0 || out[2] < 0 || n->inputs[4] != first->inputs[4] ||
            n->inputs[5] != first->inputs[5] || n->attrs.beta1 != first->attrs.beta1 ||
            n->attrs.beta2 != first->attrs.beta2 || n->attrs.eps != first->attrs.eps ||
            n->attrs.weight_decay != first->attrs.weight_decay)
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "optimizer generator: adamw_update %d needs its w, m and v as "
                                "outputs and the hyperparameters, lr and step of %d",
                                (int)k->nodes[mi], (int)(first - gr->nodes));
        const tg_attrs *a = &n->attrs;
        tg_sb_printf(b,
                     "void adamw%d(uint i, float lr, float bc1, float bc2) {\n"
                     "    float w = ld%d(off%d_0(i)), g = ld%d(off%d_3(i));\n"
                     "    w -= lr * %s * w;\n"
                     "    float m = %s * ld%d(off%d_1(i)) + %s * g;\n"
                     "    float v = %s * ld%d(off%d_2(i)) + %s * g * g;\n"
                     "    w -= lr * (m / bc1) / (sqrt(v / bc2) + %s);\n"
                     "    st%d(i, w);\n"
                     "    st%d(i, m);\n"
                     "    st%d(i, v);\n"
                     "}\n",
                     mi, in[0], (int)k->nodes[mi], in[3], (int)k->nodes[mi],
                     tg_gen_flit(a->weight_decay, l[2], sizeof l[2]),
                     tg_gen_flit(a->beta1, l[3], sizeof l[3]), in[1], (int)k->nodes[mi],
                     tg_gen_flit(1 - a->beta1, l[4], sizeof l[4]),
                     tg_gen_flit(a->beta2, l[5], sizeof l[5]), in[2], (int)k->nodes[mi],
                     tg_gen_flit(1 - a->beta2, l[6], sizeof l[6]),
                     tg_gen_flit(a->eps, l[7], sizeof l[7]), out[0], out[1], out[2]);
        if (!adamw_quad(k, n, quad_inputs)) continue;
        /* the same arithmetic on 4 elements: each component as above */
        for (int o = 0; o < 3; o++) tg_gen_vec4_output(b, k, out[o]);
        tg_sb_printf(b,
                     "void adamw4_%d(uint q, float lr, float bc1, float bc2) {\n"
                     "    vec4 w = tf%d(int(q)), g = tf%d(int(q));\n"
                     "    w -= lr * %s * w;\n"
                     "    vec4 m = %s * tf%d(int(q)) + %s * g;\n"
                     "    vec4 v = %s * tf%d(int(q)) + %s * g * g;\n"
                     "    w -= lr * (m / bc1) / (sqrt(v / bc2) + %s);\n"
                     "    o4_%d[q] = w;\n"
                     "    o4_%d[q] = m;\n"
                     "    o4_%d[q] = v;\n"
                     "}\n",
                     mi, in[0], in[3], l[2], l[3], in[1], l[4], l[5], in[2], l[6], l[7], out[0],
                     out[1], out[2]);
    }
    if (!first) return tg_set_error(TG_ERR_UNSUPPORTED, "optimizer generator: no adamw_update");
    int lr_in = tg_gen_input_index(k, first->inputs[4]);
    int t_in = tg_gen_input_index(k, first->inputs[5]);
    tg_sb_printf(b,
                 "void main() {\n"
                 "    uint i = tg_group() * %uu + gl_LocalInvocationID.x;\n"
                 "    float lr = ld%d(0u), t = float(ld%d(0u));\n"
                 "    float bc1 = -tg_expm1(t * %s), bc2 = -tg_expm1(t * %s);\n",
                 wg, lr_in, t_in, tg_gen_flit(log(first->attrs.beta1), l[0], sizeof l[0]),
                 tg_gen_flit(log(first->attrs.beta2), l[1], sizeof l[1]));
    /* invocations a member needs: one per element, or per 4 */
    uint64_t counts[TG_KERNEL_MAX_IO];
    bool quad[TG_KERNEL_MAX_IO];
    int n_members = 0;
    for (int mi = 0; mi < k->n_nodes; mi++) {
        const tg_node *n = &gr->nodes[k->nodes[mi]];
        if (n->op != TG_OP_ADAMW_UPDATE) continue;
        quad[n_members] = serial && adamw_quad(k, n, quad_inputs);
        counts[n_members] = (uint64_t)tg_shape_count(n->rank, n->shape) / (quad[n_members] ? 4 : 1);
        *total += counts[n_members++];
    }
    uint64_t stride = serial ? serial_stride(counts, n_members, wg) : 0;
    for (int mi = 0, j = 0; mi < k->n_nodes; mi++) {
        if (gr->nodes[k->nodes[mi]].op != TG_OP_ADAMW_UPDATE) continue;
        const char *fn = quad[j] ? "adamw4_" : "adamw";
        unsigned long long count = counts[j++];
        if (!serial)
            tg_sb_printf(b,
                         "    if (i < %lluu) { adamw%d(i, lr, bc1, bc2); return; }\n"
                         "    i -= %lluu;\n",
                         count, mi, count);
        else if (count > stride)
            tg_sb_printf(b, "    for (uint j = i; j < %lluu; j += %lluu) %s%d(j, lr, bc1, bc2);\n",
                         count, (unsigned long long)stride, fn, mi);
        else
            tg_sb_printf(b, "    if (i < %lluu) %s%d(i, lr, bc1, bc2);\n", count, fn, mi);
    }
    tg_sb_printf(b, "}\n");
    *groups = serial ? stride / wg : (*total + wg - 1) / wg;
    return TG_OK;
}

tg_status tg_gen_optim(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out) {
    const tg_graph *gr = k->g;
    int32_t id = k->nodes[k->n_nodes - 1];
    const tg_node *n = &gr->nodes[id];
    uint32_t wg = tg_gen_wg_size(caps, 128);
    tg_gen g;
    if (n->op == TG_OP_ADAMW_UPDATE) {
        uint64_t total = 0, groups = 0;
        bool serial = tg_serial_parts(caps);
        uint64_t quads =
            serial && caps->device_class == TG_VK_CLASS_CPU ? adamw_quad_inputs(caps, k) : 0;
        tg_status st = quads ? tg_gen_begin_texel(&g, caps, k, out, wg, false, quads, true)
                             : tg_gen_begin(&g, caps, k, out, wg, false);
        if (st == TG_OK) st = gen_adamw(&g, k, wg, serial, quads, &total, &groups);
        if (st == TG_OK && total > UINT32_MAX)
            st = tg_set_error(TG_ERR_UNSUPPORTED, "adamw_update of %llu elements",
                              (unsigned long long)total);
        if (st != TG_OK) {
            tg_gen_abort(&g);
            return st;
        }
        return tg_gen_finish(&g, groups);
    }
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
    tg_status st = tg_gen_begin(&g, caps, k, out, wg, false);
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }
    tg_sb *b = &g.b;
    const tg_attrs *a = &n->attrs;
    char l1[64], l2[64], l3[64], l4[64];
    if (n->op == TG_OP_SGD_UPDATE) {
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
