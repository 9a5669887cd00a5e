/* backend/gen_elementwise.c — kernels of elementwise nodes: one invocation
 * per element of the last member's shape, the member nodes one expression
 * after another (a fused chain is one kernel), inputs read through
 * broadcast index math.
 *
 * Every member is evaluated at the coordinates of the iteration shape
 * projected onto its own shape (NumPy broadcasting is right-aligned, so
 * projections compose): a member of a smaller shape is recomputed per
 * element rather than stored. one_hot is the exception — its output has
 * one more axis than its input — so its input must be a kernel input. */
#include "backend/gen_common.h"

#include <stdio.h>
#include <string.h>

/* Strides over the iteration shape (rank r, shape `it`) that read operand
 * x of member m: x is indexed by m's coordinates with strides sm, and m's
 * coordinates are the iteration's, right-aligned, 0 where m has extent 1. */
static void project_strides(const tg_node *m, const int64_t *sm, int r, const int64_t *it,
                            int64_t *out) {
    (void)it;
    for (int e = 0; e < r; e++) {
        int d = e - (r - m->rank);
        out[e] = (d < 0 || m->shape[d] == 1) ? 0 : sm[d];
    }
}

/* A member that is a read of a kernel input through a permute,
 * broadcast_to or slice (passes/fusion.c): the strides and base that read
 * the input at the member's coordinates. False for other members. */
static bool remapped(const tg_kernel *k, const tg_node *n, int64_t *strides, int64_t *base) {
    if (n->op != TG_OP_PERMUTE && n->op != TG_OP_BROADCAST_TO && n->op != TG_OP_SLICE) return false;
    const tg_node *x = &k->g->nodes[n->inputs[0]];
    int64_t xs[TG_MAX_RANK];
    tg_gen_row_strides(x->rank, x->shape, xs);
    *base = 0;
    if (n->op == TG_OP_PERMUTE)
        for (int d = 0; d < n->rank; d++) strides[d] = xs[n->attrs.axes[d]];
    else if (n->op == TG_OP_BROADCAST_TO)
        tg_gen_bcast_strides(x->rank, x->shape, n->rank, n->shape, strides);
    else
        for (int d = 0; d < n->rank; d++) {
            *base += n->attrs.begin[d] * xs[d];
            strides[d] = n->attrs.step[d] * xs[d];
        }
    return true;
}

/* How member m reads operand p: false where the operand is a fused value
 * (or a remapped member, read by its users). Else the kernel input *in it
 * reads and the strides and base over the iteration shape (rank r, shape
 * it) that read it at m's coordinates; *bad: a one_hot of a fused value. */
static bool operand_read(const tg_kernel *k, const tg_node *m, int p, int r, const int64_t *it,
                         int *in, int64_t *so, int64_t *base, bool *bad) {
    const tg_node *x = &k->g->nodes[m->inputs[p]];
    int64_t rs[TG_MAX_RANK], sm[TG_MAX_RANK];
    *base = 0;
    *bad = false;
    if (tg_gen_input_index(k, m->inputs[p]) < 0 && remapped(k, x, rs, base)) {
        /* a remapped member: the input it reads, at m's coordinates */
        for (int d = 0; d < m->rank; d++) {
            int e = d - (m->rank - x->rank);
            sm[d] = e < 0 || x->shape[e] == 1 ? 0 : rs[e];
        }
        project_strides(m, sm, r, it, so);
        *in = tg_gen_input_index(k, x->inputs[0]);
        return true;
    }
    *in = tg_gen_input_index(k, m->inputs[p]);
    if (*in < 0) {
        *bad = m->op == TG_OP_ONE_HOT;
        return false;
    }
    if (m->op == TG_OP_ONE_HOT) { /* indices at m's leading coordinates */
        tg_gen_row_strides(x->rank, x->shape, sm);
        sm[m->rank - 1] = 0;
    } else {
        tg_gen_bcast_strides(x->rank, x->shape, m->rank, m->shape, sm);
    }
    project_strides(m, sm, r, it, so);
    return true;
}

/* A read at the iteration's own index (row-major over it, no base). */
static bool identity_read(int r, const int64_t *it, const int64_t *so, int64_t base) {
    int64_t rs[TG_MAX_RANK];
    tg_gen_row_strides(r, it, rs);
    for (int e = 0; e < r; e++)
        if (it[e] != 1 && so[e] != rs[e]) return false;
    return base == 0;
}

/* How the four elements 4q .. 4q + 3 of a quad kernel (below) read an
 * operand: one vec4 texel at off(4q) / 4 (the read is contiguous along the
 * iteration's last axis and every other step, and the base, are whole
 * vec4s: the identity, a bias along the rows, a permute that keeps the
 * last axis), one value for all four (broadcast along the last axis), or
 * element by element. */
typedef enum { READ_NONE, READ_ELEMENT, READ_QUAD, READ_SPLAT } quad_read;

static quad_read read_class(const tg_vk_caps *caps, const tg_kernel *k, const tg_node *m, int p,
                            int r, const int64_t *it, int *in) {
    int64_t so[TG_MAX_RANK], base;
    bool bad;
    if (!operand_read(k, m, p, r, it, in, so, &base, &bad) || *in < 0) return READ_NONE;
    bool whole = r >= 1 && it[r - 1] % 4 == 0;
    if (whole && so[r - 1] == 0) return READ_SPLAT;
    bool contiguous = identity_read(r, it, so, base);
    if (whole && so[r - 1] == 1 && base % 4 == 0) {
        contiguous = true;
        for (int e = 0; e < r - 1; e++) contiguous &= so[e] % 4 == 0;
    }
    return contiguous && *in < 32 && tg_gen_texel_input_ok(caps, k, *in, true) ? READ_QUAD
                                                                               : READ_ELEMENT;
}

/* CPUs: four elements an invocation, stored as one vec4 (a scalar store
 * is a loop over the lanes on lavapipe, a texel fetch a call): when the
 * count is whole vec4s and every output is an f32 tensor of the
 * iteration's count (its own index). *vec4_in gets the inputs read as
 * whole texels (READ_QUAD): RGBA views. A gelu over charlm's [1024, 256],
 * timed alone, one thread: 1.37-1.41 -> 0.64-0.66 ms (docs/kernels.md). */
static bool quad_kernel(const tg_vk_caps *caps, const tg_kernel *k, int r, const int64_t *it,
                        int64_t count, uint32_t *vec4_in) {
    *vec4_in = 0;
    if (caps->device_class != TG_VK_CLASS_CPU || count < 4 || count % 4 != 0) return false;
    for (int j = 0; j < k->n_outputs; j++) {
        const tg_node *o = &k->g->nodes[k->outputs[j]];
        if (tg_gen_input_index(k, k->outputs[j]) >= 0) continue; /* not written here */
        if (k->output_storage[j] != TG_F32 || tg_gen_dtype_is_int(o->dtype) ||
            tg_shape_count(o->rank, o->shape) != count)
            return false;
    }
    for (int mi = 0; mi < k->n_nodes; mi++) {
        const tg_node *m = &k->g->nodes[k->nodes[mi]];
        int64_t rs[TG_MAX_RANK], rb;
        if (remapped(k, m, rs, &rb)) continue;
        for (int p = 0; p < m->n_inputs && p < 3; p++) {
            int in;
            if (read_class(caps, k, m, p, r, it, &in) == READ_QUAD) *vec4_in |= 1u << in;
        }
    }
    return true;
}

/* The scalar expression of op over operand names a, b, c, in the compute
 * type of the operands (`in` is the first operand's dtype). */
static tg_status op_expr(const tg_node *n, tg_dtype in, const char *a, const char *b, const char *c,
                         char *e, size_t sz) {
    bool iv = tg_gen_dtype_is_int(in);
    switch (n->op) {
    case TG_OP_NEG: snprintf(e, sz, "-%s", a); break;
    case TG_OP_ABS: snprintf(e, sz, "abs(%s)", a); break;
    case TG_OP_EXP: snprintf(e, sz, "exp(%s)", a); break;
    case TG_OP_LOG: snprintf(e, sz, "log(%s)", a); break;
    case TG_OP_SQRT: snprintf(e, sz, "sqrt(%s)", a); break;
    /* 1/sqrt rather than inversesqrt: Vulkan allows inversesqrt 2 ulp */
    case TG_OP_RSQRT: snprintf(e, sz, "1.0 / sqrt(%s)", a); break;
    case TG_OP_RECIPROCAL: snprintf(e, sz, "1.0 / %s", a); break;
    case TG_OP_SQUARE: snprintf(e, sz, "%s * %s", a, a); break;
    case TG_OP_TANH: snprintf(e, sz, "tg_tanh(%s)", a); break;
    case TG_OP_ERF: snprintf(e, sz, "tg_erf(%s)", a); break;
    case TG_OP_GELU:
        snprintf(e, sz, "0.5 * %s * (1.0 + tg_erf(%s * 0.707106781186547524))", a, a);
        break;
    case TG_OP_GELU_TANH:
        snprintf(e, sz,
                 "0.5 * %s * (1.0 + tg_tanh(0.797884560802865356 * (%s + 0.044715 * %s * %s * "
                 "%s)))",
                 a, a, a, a, a);
        break;
    case TG_OP_RELU: snprintf(e, sz, iv ? "max(%s, 0)" : "(%s > 0.0 ? %s : 0.0)", a, a); break;
    case TG_OP_SIGMOID: snprintf(e, sz, "1.0 / (1.0 + exp(-%s))", a); break;
    case TG_OP_SILU: snprintf(e, sz, "%s / (1.0 + exp(-%s))", a, a); break;
    case TG_OP_SIN: snprintf(e, sz, "sin(%s)", a); break;
    case TG_OP_COS: snprintf(e, sz, "cos(%s)", a); break;
    case TG_OP_STOP_GRADIENT: snprintf(e, sz, "%s", a); break;
    case TG_OP_CAST: {
        bool to_int = tg_gen_dtype_is_int(n->dtype);
        if (iv == to_int)
            snprintf(e, sz, "%s", a); /* the node's rounding narrows */
        else if (!to_int)
            snprintf(e, sz, "float(%s)", a);
        else if (n->dtype == TG_I32)
            snprintf(e, sz, "tg_f2i(%s, -2147483648.0, 2147483520.0)", a);
        else if (n->dtype == TG_I8)
            snprintf(e, sz, "tg_f2i(%s, -128.0, 127.0)", a);
        else
            snprintf(e, sz, "tg_f2i(%s, 0.0, 255.0)", a);
        break;
    }
    case TG_OP_ADD: snprintf(e, sz, "%s + %s", a, b); break;
    case TG_OP_SUB: snprintf(e, sz, "%s - %s", a, b); break;
    case TG_OP_MUL: snprintf(e, sz, "%s * %s", a, b); break;
    case TG_OP_DIV: snprintf(e, sz, iv ? "tg_idiv(%s, %s)" : "%s / %s", a, b); break;
    case TG_OP_POW: snprintf(e, sz, "tg_pow(%s, %s)", a, b); break;
    case TG_OP_MAXIMUM: snprintf(e, sz, iv ? "max(%s, %s)" : "tg_maxf(%s, %s)", a, b); break;
    case TG_OP_MINIMUM: snprintf(e, sz, iv ? "min(%s, %s)" : "tg_minf(%s, %s)", a, b); break;
    case TG_OP_EQ: snprintf(e, sz, "int(%s == %s)", a, b); break;
    case TG_OP_NE: snprintf(e, sz, "int(%s != %s)", a, b); break;
    case TG_OP_LT: snprintf(e, sz, "int(%s < %s)", a, b); break;
    case TG_OP_LE: snprintf(e, sz, "int(%s <= %s)", a, b); break;
    case TG_OP_GT: snprintf(e, sz, "int(%s > %s)", a, b); break;
    case TG_OP_GE: snprintf(e, sz, "int(%s >= %s)", a, b); break;
    case TG_OP_WHERE: snprintf(e, sz, "(%s != 0 ? %s : %s)", a, b, c); break;
    /* (x, dy) -> dy * gelu'(x) (gen_common's math library) */
    case TG_OP_GELU_GRAD: snprintf(e, sz, "tg_gelu_grad(%s, %s)", a, b); break;
    case TG_OP_GELU_TANH_GRAD: snprintf(e, sz, "tg_gelu_tanh_grad(%s, %s)", a, b); break;
    default:
        return tg_set_error(TG_ERR_UNSUPPORTED, "elementwise generator: op %s is not elementwise",
                            tg_ops[n->op].name);
    }
    return TG_OK;
}

tg_status tg_gen_elementwise(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out) {
    tg_gen g;
    const tg_node *last = &k->g->nodes[k->nodes[k->n_nodes - 1]];
    int r = last->rank;
    const int64_t *it = last->shape;
    int64_t count = tg_shape_count(r, it);
    if (count < 0 || count > (int64_t)UINT32_MAX)
        return tg_set_error(TG_ERR_UNSUPPORTED, "elementwise kernel of %lld elements",
                            (long long)count);
    for (int mi = 0; mi < k->n_nodes; mi++) {
        const tg_node *m = &k->g->nodes[k->nodes[mi]];
        int64_t rs[TG_MAX_RANK], rb;
        bool remap = remapped(k, m, rs, &rb);
        if (tg_ops[m->op].klass != TG_CLASS_ELEMENTWISE &&
            !(remap && tg_gen_input_index(k, m->inputs[0]) >= 0 &&
              tg_gen_input_index(k, k->nodes[mi]) < 0))
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "elementwise generator: member %d is a %s, neither elementwise "
                                "nor a remapped read of a kernel input",
                                (int)k->nodes[mi], tg_ops[m->op].name);
    }
    uint32_t wg = tg_gen_wg_size(caps, 128), vec4_in;
    bool quad = quad_kernel(caps, k, r, it, count, &vec4_in);
    tg_status st = vec4_in ? tg_gen_begin_texel(&g, caps, k, out, wg, false, vec4_in, true)
                           : tg_gen_begin(&g, caps, k, out, wg, false);
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }
    tg_sb *b = &g.b;
    char name[64];

    /* offset functions: one per (member, operand) read from memory */
    for (int mi = 0; mi < k->n_nodes; mi++) {
        int32_t id = k->nodes[mi];
        const tg_node *m = &k->g->nodes[id];
        int64_t rs[TG_MAX_RANK], rb = 0, so[TG_MAX_RANK];
        if (remapped(k, m, rs, &rb)) continue; /* read by its users */
        for (int p = 0; p < m->n_inputs; p++) {
            int in;
            bool bad;
            if (!operand_read(k, m, p, r, it, &in, so, &rb, &bad)) {
                if (bad) {
                    tg_gen_abort(&g);
                    return tg_set_error(TG_ERR_UNSUPPORTED,
                                        "elementwise generator: one_hot %d must read its indices "
                                        "from memory, not from a fused member",
                                        (int)id);
                }
                continue;
            }
            snprintf(name, sizeof name, "off_%d_%d", (int)id, p);
            tg_gen_offset_fn(b, name, r, it, so, rb);
        }
    }
    for (int j = 0; j < k->n_outputs; j++) {
        const tg_node *o = &k->g->nodes[k->outputs[j]];
        int64_t sm[TG_MAX_RANK], so[TG_MAX_RANK];
        tg_gen_row_strides(o->rank, o->shape, sm);
        project_strides(o, sm, r, it, so);
        snprintf(name, sizeof name, "out_%d", j);
        tg_gen_offset_fn(b, name, r, it, so, 0);
    }

    const char *ind = quad ? "        " : "    ";
    if (quad) {
        /* each written output's vec4 view of its binding */
        for (int j = 0; j < k->n_outputs; j++)
            if (tg_gen_input_index(k, k->outputs[j]) < 0) tg_gen_vec4_output(b, k, j);
        tg_sb_printf(b,
                     "void main() {\n"
                     "    uint q = tg_group() * %uu + gl_LocalInvocationID.x;\n"
                     "    if (q >= %lluu) return;\n",
                     wg, (unsigned long long)(count / 4));
        /* the reads that are one texel or one value for the four */
        for (int mi = 0; mi < k->n_nodes; mi++) {
            int32_t id = k->nodes[mi];
            const tg_node *m = &k->g->nodes[id];
            int64_t rs[TG_MAX_RANK], rb;
            if (remapped(k, m, rs, &rb)) continue;
            for (int p = 0; p < m->n_inputs && p < 3; p++) {
                int j;
                quad_read c = read_class(caps, k, m, p, r, it, &j);
                if (c == READ_QUAD)
                    tg_sb_printf(b, "    vec4 q4_%d_%d = tf%d(int(off_%d_%d(4u * q) >> 2));\n",
                                 (int)id, p, j, (int)id, p);
                else if (c == READ_SPLAT)
                    tg_sb_printf(b, "    %s s4_%d_%d = ld%d(off_%d_%d(4u * q));\n",
                                 tg_gen_ctype(k->g->nodes[k->inputs[j]].dtype), (int)id, p, j,
                                 (int)id, p);
            }
        }
        for (int j = 0; j < k->n_outputs; j++)
            if (tg_gen_input_index(k, k->outputs[j]) < 0) tg_sb_printf(b, "    vec4 r%d;\n", j);
        tg_sb_printf(b, "    for (uint qe = 0u; qe < 4u; qe++) {\n"
                        "        uint i = 4u * q + qe;\n");
    } else {
        tg_sb_printf(b,
                     "void main() {\n"
                     "    uint i = tg_group() * %uu + gl_LocalInvocationID.x;\n"
                     "    if (i >= %lluu) return;\n",
                     wg, (unsigned long long)count);
    }
    for (int mi = 0; mi < k->n_nodes; mi++) {
        int32_t id = k->nodes[mi];
        const tg_node *m = &k->g->nodes[id];
        char opnd[3][32] = {"", "", ""}, expr[512];
        int64_t rs[TG_MAX_RANK], rb;
        if (remapped(k, m, rs, &rb)) continue; /* read by its users */
        for (int p = 0; p < m->n_inputs && p < 3; p++) {
            int32_t xid = m->inputs[p];
            if (tg_gen_input_index(k, xid) < 0 && remapped(k, &k->g->nodes[xid], rs, &rb))
                xid = k->g->nodes[xid].inputs[0];
            int j = tg_gen_input_index(k, xid);
            if (j < 0) {
                snprintf(opnd[p], sizeof opnd[p], "v%d", (int)xid);
                continue;
            }
            snprintf(opnd[p], sizeof opnd[p], "a%d_%d", (int)id, p);
            int in;
            quad_read c = quad ? read_class(caps, k, m, p, r, it, &in) : READ_ELEMENT;
            if (c == READ_QUAD)
                tg_sb_printf(b, "%sfloat a%d_%d = q4_%d_%d[qe];\n", ind, (int)id, p, (int)id, p);
            else if (c == READ_SPLAT)
                tg_sb_printf(b, "%s%s a%d_%d = s4_%d_%d;\n", ind,
                             tg_gen_ctype(k->g->nodes[xid].dtype), (int)id, p, (int)id, p);
            else
                tg_sb_printf(b, "%s%s a%d_%d = ld%d(off_%d_%d(i));\n", ind,
                             tg_gen_ctype(k->g->nodes[xid].dtype), (int)id, p, j, (int)id, p);
        }
        const char *ct = tg_gen_ctype(m->dtype);
        if (m->op == TG_OP_IOTA || m->op == TG_OP_ONE_HOT) {
            /* the coordinate along iota's axis / one_hot's last axis */
            int d = m->op == TG_OP_IOTA ? (int)m->attrs.axis : m->rank - 1;
            int e = d + (r - m->rank);
            int64_t inner = 1;
            for (int q = e + 1; q < r; q++) inner *= it[q];
            if (m->shape[d] == 1)
                tg_sb_printf(b, "%suint c%d = 0u;\n", ind, (int)id);
            else
                tg_sb_printf(b, "%suint c%d = (i / %lluu) %% %lluu;\n", ind, (int)id,
                             (unsigned long long)inner, (unsigned long long)it[e]);
            if (m->op == TG_OP_IOTA)
                tg_sb_printf(b, "%s%s v%d = %s(%s(c%d));\n", ind, ct, (int)id,
                             tg_gen_round_fn(m->dtype), ct, (int)id);
            else
                tg_sb_printf(b, "%s%s v%d = %s(%s(%s == int(c%d) ? 1 : 0));\n", ind, ct, (int)id,
                             tg_gen_round_fn(m->dtype), ct, opnd[0], (int)id);
            continue;
        }
        /* the operands' dtype decides int or float arithmetic (where: the values') */
        tg_dtype in = k->g->nodes[m->inputs[m->op == TG_OP_WHERE ? 1 : 0]].dtype;
        st = op_expr(m, in, opnd[0], opnd[1], opnd[2], expr, sizeof expr);
        if (st != TG_OK) {
            tg_gen_abort(&g);
            return st;
        }
        tg_sb_printf(b, "%s%s v%d = %s(%s);\n", ind, ct, (int)id, tg_gen_round_fn(m->dtype), expr);
    }
    for (int j = 0; j < k->n_outputs; j++) {
        int32_t oid = k->outputs[j];
        if (tg_gen_input_index(k, oid) >= 0) continue; /* a pass-through is not ours to write */
        if (quad)
            tg_sb_printf(b, "        r%d[qe] = v%d;\n", j, (int)oid);
        else
            tg_sb_printf(b, "    st%d(out_%d(i), v%d);\n", j, j, (int)oid);
    }
    uint64_t per_group = quad ? 4 * (uint64_t)wg : wg;
    if (quad) {
        tg_sb_printf(b, "    }\n");
        for (int j = 0; j < k->n_outputs; j++)
            if (tg_gen_input_index(k, k->outputs[j]) < 0)
                tg_sb_printf(b, "    o4_%d[q] = r%d;\n", j, j);
    }
    tg_sb_printf(b, "}\n");
    return tg_gen_finish(&g, ((uint64_t)count + per_group - 1) / per_group);
}

/* The offset functions of the kernel inputs that members ms[0..n) up to
 * id `last` read (fn_<id>_<p>), for member_body. */
static tg_status member_offsets(tg_sb *b, const tg_kernel *k, int n, const int32_t *ms, int r,
                                const int64_t *it, int32_t result, const char *fn, int n_given,
                                const int32_t *given) {
    char name[96];
    /* what each operand is: a given name, a member, or a kernel input */
    for (int mi = 0; mi < n && ms[mi] <= result; mi++) {
        const tg_node *m = &k->g->nodes[ms[mi]];
        if (tg_ops[m->op].klass != TG_CLASS_ELEMENTWISE || m->op == TG_OP_IOTA ||
            m->op == TG_OP_ONE_HOT)
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "fused member %d: %s is not computed per element", (int)ms[mi],
                                tg_ops[m->op].name);
        for (int p = 0; p < m->n_inputs; p++) {
            int32_t x = m->inputs[p];
            bool inner = false;
            for (int j = 0; j < n_given; j++) inner |= given[j] == x;
            for (int j = 0; j < n; j++) inner |= ms[j] == x;
            if (inner) continue;
            if (tg_gen_input_index(k, x) < 0)
                return tg_set_error(TG_ERR_UNSUPPORTED,
                                    "fused member %d reads node %d, which is "
                                    "neither a member nor a kernel input",
                                    (int)ms[mi], (int)x);
            const tg_node *xn = &k->g->nodes[x];
            int64_t sm[TG_MAX_RANK], so[TG_MAX_RANK];
            tg_gen_bcast_strides(xn->rank, xn->shape, m->rank, m->shape, sm);
            project_strides(m, sm, r, it, so);
            snprintf(name, sizeof name, "%s_%d_%d", fn, (int)ms[mi], p);
            tg_gen_offset_fn(b, name, r, it, so, 0);
        }
    }
    return TG_OK;
}

/* The statements computing members ms[0..n) up to id `result`: v<id>. */
static tg_status member_body(tg_sb *b, const tg_kernel *k, int n, const int32_t *ms, int32_t result,
                             const char *fn, int n_given, const int32_t *given,
                             const char *const *given_names) {
    for (int mi = 0; mi < n && ms[mi] <= result; mi++) {
        int32_t id = ms[mi];
        const tg_node *m = &k->g->nodes[id];
        char opnd[3][64] = {"", "", ""}, expr[512];
        for (int p = 0; p < m->n_inputs && p < 3; p++) {
            int32_t x = m->inputs[p];
            int gi = -1, j;
            for (j = 0; j < n_given; j++)
                if (given[j] == x) gi = j;
            if (gi >= 0) {
                snprintf(opnd[p], sizeof opnd[p], "%s", given_names[gi]);
                continue;
            }
            bool member = false;
            for (j = 0; j < n; j++) member |= ms[j] == x;
            if (member) {
                snprintf(opnd[p], sizeof opnd[p], "v%d", (int)x);
                continue;
            }
            snprintf(opnd[p], sizeof opnd[p], "ld%d(%s_%d_%d(i))", tg_gen_input_index(k, x), fn,
                     (int)id, p);
        }
        tg_dtype in = k->g->nodes[m->inputs[m->op == TG_OP_WHERE ? 1 : 0]].dtype;
        tg_status st = op_expr(m, in, opnd[0], opnd[1], opnd[2], expr, sizeof expr);
        if (st != TG_OK) return st;
        tg_sb_printf(b, "    %s v%d = %s(%s);\n", tg_gen_ctype(m->dtype), (int)id,
                     tg_gen_round_fn(m->dtype), expr);
    }
    return TG_OK;
}

tg_status tg_gen_member_fn(tg_sb *b, const tg_kernel *k, int n, const int32_t *ms, int r,
                           const int64_t *it, int32_t result, const char *fn, const char *params,
                           int n_given, const int32_t *given, const char *const *given_names) {
    tg_status st = member_offsets(b, k, n, ms, r, it, result, fn, n_given, given);
    if (st != TG_OK) return st;
    tg_sb_printf(b, "%s %s(uint i%s) {\n", tg_gen_ctype(k->g->nodes[result].dtype), fn, params);
    st = member_body(b, k, n, ms, result, fn, n_given, given, given_names);
    if (st != TG_OK) return st;
    tg_sb_printf(b, "    return v%d;\n}\n", (int)result);
    return TG_OK;
}

tg_status tg_gen_members_fn(tg_sb *b, const tg_kernel *k, int n, const int32_t *ms, int r,
                            const int64_t *it, int n_results, const int32_t *results,
                            const char *fn, const char *params, int n_given, const int32_t *given,
                            const char *const *given_names) {
    int32_t last = -1;
    for (int j = 0; j < n_results; j++)
        if (results[j] > last) last = results[j];
    tg_status st = member_offsets(b, k, n, ms, r, it, last, fn, n_given, given);
    if (st != TG_OK) return st;
    tg_sb_printf(b, "void %s(uint i%s", fn, params);
    for (int j = 0; j < n_results; j++)
        tg_sb_printf(b, ", out %s r%d", tg_gen_ctype(k->g->nodes[results[j]].dtype), j);
    tg_sb_printf(b, ") {\n");
    st = member_body(b, k, n, ms, last, fn, n_given, given, given_names);
    if (st != TG_OK) return st;
    for (int j = 0; j < n_results; j++) {
        const char *name = NULL;
        for (int g = 0; g < n_given; g++)
            if (given[g] == results[j]) name = given_names[g];
        if (name)
            tg_sb_printf(b, "    r%d = %s;\n", j, name);
        else
            tg_sb_printf(b, "    r%d = v%d;\n", j, (int)results[j]);
    }
    tg_sb_printf(b, "}\n");
    return TG_OK;
}
