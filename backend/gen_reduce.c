/* backend/gen_reduce.c — sum, mean, max, min and argmax over any set of
 * axes.
 *
 * The input is seen as [kept..., reduced...] through two offset functions
 * (kept axes -> the output element's base, reduced axes -> the offset of
 * the r-th reduced element), so any axes set costs the same index math.
 * A reduced extent over SERIAL_MAX gets one workgroup per output element:
 * each invocation folds a strided share, then the workgroup combines
 * (subgroupAdd where the device has subgroup arithmetic, else a
 * shared-memory tree). Smaller extents get one invocation per output
 * element, which keeps every lane busy when there are many short rows.
 * Floats accumulate in f32, integers in int (wrapping where the
 * interpreter's f64 sum would saturate).
 *
 * Fused members: an elementwise prologue is evaluated at each input
 * element as it is read (ldx), an elementwise epilogue at each output
 * element from the reduced value (epi<j> for output j). A prologue member
 * that is also an output (the shape of the reduction's input: a gradient
 * both stored and summed for its bias) is stored where it is evaluated:
 * every input element is read exactly once over the dispatch. */
#include "backend/gen_common.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define SERIAL_MAX 64

/* The reduction member of a kernel; the members before it are its
 * prologue (computing its input), those after it its epilogue. */
static int root_index(const tg_kernel *k) {
    for (int i = 0; i < k->n_nodes; i++)
        if (tg_ops[k->g->nodes[k->nodes[i]].op].klass == TG_CLASS_REDUCTION) return i;
    return -1;
}

/* In the loop over input elements: stores each prologue output at the
 * element just read. */
static void emit_prologue_stores(tg_sb *b, const tg_kernel *k, const bool *in_prologue) {
    for (int j = 0; j < k->n_outputs; j++)
        if (in_prologue[j])
            tg_sb_printf(b, "        st%d(base + red_off(r), pro%d(base + red_off(r)));\n", j, j);
}

tg_status tg_gen_reduce(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out) {
    const tg_graph *gr = k->g;
    int ri = root_index(k);
    if (ri < 0) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "reduction generator: no reduction");
    int32_t id = k->nodes[ri];
    const tg_node *n = &gr->nodes[id];
    int n_epi = k->n_nodes - ri - 1;
    const tg_node *x = &gr->nodes[n->inputs[0]];
    /* outputs before the root are prologue members stored at input elements */
    bool in_prologue[TG_KERNEL_MAX_IO] = {false};
    bool others = false; /* outputs other than the root without an epilogue */
    for (int j = 0; j < k->n_outputs; j++) {
        for (int i = 0; i < ri; i++)
            in_prologue[j] = in_prologue[j] || k->nodes[i] == k->outputs[j];
        const tg_node *o = &gr->nodes[k->outputs[j]];
        if (in_prologue[j] && (o->rank != x->rank ||
                               memcmp(o->shape, x->shape, (size_t)x->rank * sizeof x->shape[0])))
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "reduction generator: prologue output %d is not of the input's "
                                "shape",
                                (int)k->outputs[j]);
        others = others || (!in_prologue[j] && k->outputs[j] != id);
    }
    if (n_epi == 0 && others)
        return tg_set_error(TG_ERR_UNSUPPORTED, "reduction generator: %s %d must be the output",
                            tg_ops[n->op].name, (int)id);
    bool reduced[TG_MAX_RANK] = {false};
    if (n->op == TG_OP_ARGMAX)
        reduced[n->attrs.axis] = true;
    else {
        for (int d = 0; d < x->rank; d++) reduced[d] = n->attrs.n_axes == 0;
        for (int a = 0; a < n->attrs.n_axes; a++) reduced[n->attrs.axes[a]] = true;
    }
    int64_t xs[TG_MAX_RANK], ke[TG_MAX_RANK], ks[TG_MAX_RANK], re[TG_MAX_RANK], rs[TG_MAX_RANK];
    int nk = 0, nr = 0;
    int64_t n_out = 1, n_red = 1;
    tg_gen_row_strides(x->rank, x->shape, xs);
    for (int d = 0; d < x->rank; d++) {
        if (reduced[d]) {
            re[nr] = x->shape[d];
            rs[nr++] = xs[d];
            n_red *= x->shape[d];
        } else {
            ke[nk] = x->shape[d];
            ks[nk++] = xs[d];
            n_out *= x->shape[d];
        }
    }
    if (tg_shape_count(x->rank, x->shape) > (int64_t)UINT32_MAX)
        return tg_set_error(TG_ERR_UNSUPPORTED, "reduction over %lld elements",
                            (long long)tg_shape_count(x->rank, x->shape));

    bool serial = n_red <= SERIAL_MAX;
    bool quads = serial && caps->device_class == TG_VK_CLASS_CPU && x->dtype == TG_F32 &&
                 n->dtype == TG_F32 && (n->op == TG_OP_SUM || n->op == TG_OP_MEAN) && x->rank > 0 &&
                 !reduced[x->rank - 1] && x->shape[x->rank - 1] % 4 == 0 && n_out % 4 == 0 &&
                 n_out > 0;
    for (int j = 0; quads && j < k->n_outputs; j++) quads = tg_gen_output_f32(k, j);
    uint32_t wg = tg_gen_wg_size(caps, serial ? 128 : 64);
    tg_gen g;
    tg_status st = tg_gen_begin(&g, caps, k, out, wg, !serial);
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }
    tg_sb *b = &g.b;
    tg_gen_offset_fn(b, "kept_off", nk, ke, ks, 0);
    tg_gen_offset_fn(b, "red_off", nr, re, rs, 0);
    /* the input: loaded, or computed by the prologue at its element */
    int xi = tg_gen_input_index(k, n->inputs[0]);
    if (xi < 0)
        st = tg_gen_member_fn(b, k, ri, k->nodes, x->rank, x->shape, n->inputs[0], "ldx", "", 0,
                              NULL, NULL);
    else
        tg_sb_printf(b, "%s ldx(uint i) { return ld%d(i); }\n", tg_gen_ctype(x->dtype), xi);
    /* the outputs: the root's value, or epilogue members computed from it
     * at the output element */
    const char *rv_name = "rv";
    int32_t root_id = id;
    for (int j = 0; st == TG_OK && j < k->n_outputs; j++) {
        char fn[16];
        snprintf(fn, sizeof fn, in_prologue[j] ? "pro%d" : "epi%d", j);
        const char *rt = tg_gen_ctype(n->dtype);
        char params[16];
        snprintf(params, sizeof params, ", %s rv", rt);
        if (in_prologue[j])
            st = tg_gen_member_fn(b, k, ri, k->nodes, x->rank, x->shape, k->outputs[j], fn, "", 0,
                                  NULL, NULL);
        else if (k->outputs[j] == id)
            tg_sb_printf(b, "%s %s(uint i%s) { return rv; }\n", rt, fn, params);
        else
            st = tg_gen_member_fn(b, k, n_epi, k->nodes + ri + 1, n->rank, n->shape, k->outputs[j],
                                  fn, params, 1, &root_id, &rv_name);
    }
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }

    bool iv = tg_gen_dtype_is_int(x->dtype);
    const char *ct = tg_gen_ctype(x->dtype);
    char init[64];
    const char *comb = "acc + v", *wg_fn = iv ? "tg_wg_sumi" : "tg_wg_sum";
    switch (n->op) {
    case TG_OP_MAX:
        tg_gen_lit(x->dtype, -INFINITY, init, sizeof init);
        comb = iv ? "max(acc, v)" : "tg_maxf(acc, v)";
        wg_fn = iv ? "tg_wg_maxi" : "tg_wg_max";
        break;
    case TG_OP_MIN:
        tg_gen_lit(x->dtype, INFINITY, init, sizeof init);
        comb = iv ? "min(acc, v)" : "tg_minf(acc, v)";
        wg_fn = iv ? "tg_wg_mini" : "tg_wg_min";
        break;
    default: snprintf(init, sizeof init, iv ? "0" : "0.0"); break;
    }

    /* a mean's divisor (NaN for an empty reduction, as 0 / 0) */
    char div[64];
    const char *mean_div =
        n_red ? tg_gen_flit((double)n_red, div, sizeof div) : "uintBitsToFloat(0x7fc00000u)";
    if (quads) {
        /* CPU devices: 4 consecutive outputs a lane, whose inputs are 4
         * consecutive elements at every reduced index (the last axis is
         * kept, whole vec4s), so every store is a vec4: lavapipe runs a
         * storage-buffer store as a loop over the lanes, whatever its
         * width (charlm's position-embedding gradient, a sum over the
         * batch that also stores its summand: 65536 + 4096 scalar stores
         * -> a quarter as many vec4s) */
        for (int j = 0; j < k->n_outputs; j++) tg_gen_vec4_output(b, k, j);
        tg_sb_printf(b,
                     "void main() {\n"
                     "    uint q = tg_group() * %uu + gl_LocalInvocationID.x;\n"
                     "    if (q >= %lluu) return;\n"
                     "    uint o = 4u * q, base = kept_off(o);\n"
                     "    vec4 acc = vec4(0.0);\n"
                     "    for (uint r = 0u; r < %lluu; r++) {\n"
                     "        uint e = base + red_off(r);\n"
                     "        vec4 v = vec4(ldx(e), ldx(e + 1u), ldx(e + 2u), ldx(e + 3u));\n",
                     wg, (unsigned long long)(n_out / 4), (unsigned long long)n_red);
        for (int j = 0; j < k->n_outputs; j++)
            if (in_prologue[j])
                tg_sb_printf(b,
                             "        o4_%d[e >> 2] = vec4(pro%d(e), pro%d(e + 1u), pro%d(e + 2u), "
                             "pro%d(e + 3u));\n",
                             j, j, j, j, j);
        tg_sb_printf(b, "        acc = acc + v;\n    }\n");
        if (n->op == TG_OP_MEAN)
            tg_sb_printf(b, "    vec4 rv4 = acc / %s;\n", mean_div);
        else
            tg_sb_printf(b, "    vec4 rv4 = acc;\n");
        for (int j = 0; j < k->n_outputs; j++)
            if (!in_prologue[j])
                tg_sb_printf(b,
                             "    o4_%d[q] = vec4(epi%d(o, rv4.x), epi%d(o + 1u, rv4.y), "
                             "epi%d(o + 2u, rv4.z), epi%d(o + 3u, rv4.w));\n",
                             j, j, j, j, j);
        tg_sb_printf(b, "}\n");
        return tg_gen_finish(&g, ((uint64_t)(n_out / 4) + wg - 1) / wg);
    }
    if (serial)
        tg_sb_printf(b,
                     "void main() {\n"
                     "    uint o = tg_group() * %uu + gl_LocalInvocationID.x;\n"
                     "    if (o >= %lluu) return;\n"
                     "    const uint l = 0u, step = 1u;\n",
                     wg, (unsigned long long)n_out);
    else
        tg_sb_printf(b,
                     "void main() {\n"
                     "    uint o = tg_group();\n"
                     "    if (o >= %lluu) return;\n" /* uniform over the workgroup */
                     "    uint l = gl_LocalInvocationID.x, step = %uu;\n",
                     (unsigned long long)n_out, wg);
    tg_sb_printf(b, "    uint base = kept_off(o);\n");
    if (n->op == TG_OP_ARGMAX) {
        /* the first maximum: strictly greater replaces, and each invocation
         * visits its share in increasing order */
        tg_sb_printf(b,
                     "    float best = 0.0;\n"
                     "    int bi = -1;\n"
                     "    for (uint r = l; r < %lluu; r += step) {\n"
                     "        float v = float(ldx(base + red_off(r)));\n",
                     (unsigned long long)n_red);
        emit_prologue_stores(b, k, in_prologue);
        tg_sb_printf(b, "        if (bi < 0 || v > best) { best = v; bi = int(r); }\n"
                        "    }\n");
        if (!serial) tg_sb_printf(b, "    bi = tg_wg_argmax(best, bi);\n");
        tg_sb_printf(b, "    int rv = max(bi, 0);\n");
    } else {
        tg_sb_printf(b,
                     "    %s acc = %s;\n"
                     "    for (uint r = l; r < %lluu; r += step) {\n"
                     "        %s v = ldx(base + red_off(r));\n",
                     ct, init, (unsigned long long)n_red, ct);
        emit_prologue_stores(b, k, in_prologue);
        tg_sb_printf(b, "        acc = %s;\n    }\n", comb);
        if (!serial) tg_sb_printf(b, "    acc = %s(acc);\n", wg_fn);
        if (n->op == TG_OP_MEAN)
            tg_sb_printf(b, "    %s rv = acc / %s;\n", ct, mean_div);
        else
            tg_sb_printf(b, "    %s rv = acc;\n", ct);
    }
    /* the root's value as stored (rounded to its dtype), then the outputs */
    tg_sb_printf(b, "    rv = %s(rv);\n    if (l == 0u) {\n", tg_gen_round_fn(n->dtype));
    for (int j = 0; j < k->n_outputs; j++)
        if (!in_prologue[j]) tg_sb_printf(b, "        st%d(o, epi%d(o, rv));\n", j, j);
    tg_sb_printf(b, "    }\n}\n");
    uint64_t groups = serial ? ((uint64_t)n_out + wg - 1) / wg : (uint64_t)n_out;
    return tg_gen_finish(&g, groups);
}
