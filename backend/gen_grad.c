/* backend/gen_grad.c — kernels of the backward ops that are not
 * elementwise (gelu_grad and gelu_tanh_grad are cases of the elementwise
 * generator). Each computes what its interpreter kernel (graph/interp.c)
 * computes, in f32.
 *
 * softmax_grad, log_softmax_grad, layer_norm_grad_x:
 *   row ops like their forwards (gen_nn.c's row head: one workgroup per
 *   row, or one invocation per row for short rows).
 * layer_norm_grad_wb: sums over rows, one workgroup per block of columns
 *   (CPU devices: one for all); rows go in chunks of WG, each invocation
 *   computing one row's mean and 1/sqrt(var + eps) into shared memory (a
 *   kernel has no scratch buffer for them), then adding the chunk to its
 *   columns.
 * cross_entropy_grad: a row op too, each workgroup owning a block of rows
 *   (serial: one per invocation; else walked together). The workgroup
 *   first counts, together, the labels that are counted (not the
 *   ignore_index, inside [0, C)) over all rows — the forward's rule —
 *   once per workgroup, not once per row; a label outside [0, C) gives a
 *   zero row (the interpreter reports an error).
 * attention_lse and attention_grad_q/k/v with (lse, delta) inputs, what
 *   tg_gradients emits: gen_attention.c's flash backward.
 * attention_grad_q/k/v without them: one workgroup per batch. Its invocations first
 *   compute, per query row, the softmax statistics over the visible keys
 *   (max M, sum L of exp(s - M), and P = sum_j p_j dP_j with dP_j =
 *   dout_i . v_j; an online softmax, scores from gen_nn.c's att_score_q,
 *   the forward's) into shared memory; after one barrier each invocation
 *   sums, with p_ij = exp(s_ij - M_i) / L_i recomputed,
 *     dq_i = scale sum_j p_ij (dP_ij - P_i) k_j  (per query row),
 *     dk_j = scale sum_i p_ij (dP_ij - P_i) q_i, dv_j = sum_i p_ij dout_i
 *   (per key row, over the query rows that see it). No workgroup
 *   reductions (slow on lavapipe); needs 3 Tq floats of shared memory.
 * conv1d_grad_input, conv1d_grad_weight: direct kernels, one invocation
 *   per output element summing its taps (the same multiply-adds as the
 *   forward, without its register blocking).
 * slice_grad: one invocation per element of x: dy's element if the
 *   position is on the slice's lattice, else 0. */
#include "backend/gen_common.h"

#include <math.h>
#include <stdio.h>

static int64_t prod(const int64_t *s, int from, int to) {
    int64_t p = 1;
    for (int d = from; d < to; d++) p *= s[d];
    return p;
}

typedef unsigned long long ull;

/* lavapipe's loop limit, with a margin (gen_nn.c) */
#define CPU_LOOP_LIMIT 60000

bool tg_gen_grad_handles(tg_op op) {
    switch (op) {
    case TG_OP_SOFTMAX_GRAD:
    case TG_OP_LOG_SOFTMAX_GRAD:
    case TG_OP_LAYER_NORM_GRAD_X:
    case TG_OP_LAYER_NORM_GRAD_WB:
    case TG_OP_ATTENTION_GRAD_Q:
    case TG_OP_ATTENTION_GRAD_K:
    case TG_OP_ATTENTION_GRAD_V:
    case TG_OP_ATTENTION_LSE:
    case TG_OP_CROSS_ENTROPY_GRAD:
    case TG_OP_CONV1D_GRAD_INPUT:
    case TG_OP_CONV1D_GRAD_WEIGHT:
    case TG_OP_SLICE_GRAD: return true;
    default: return false;
    }
}

/* (y = ld0, dy = ld1; axis): softmax: y (dy - sum(dy y)); log_softmax:
 * dy - exp(y) sum(dy). */
static tg_status gen_softmax_grad(tg_gen *g, const tg_node *n, bool serial) {
    int ax = (int)n->attrs.axis;
    int64_t inner = prod(n->shape, ax + 1, n->rank), dim = n->shape[ax];
    int64_t rows = prod(n->shape, 0, ax) * inner;
    bool log_in = n->op == TG_OP_LOG_SOFTMAX_GRAD;
    char times_y[64] = "";
    if (!log_in) snprintf(times_y, sizeof times_y, " * ld0(base + j * %lluu)", (ull)inner);
    tg_sb *b = &g->b;
    tg_gen_row_head(g, serial, rows);
    tg_sb_printf(b,
                 "    uint base = (r / %lluu) * %lluu + r %% %lluu;\n"
                 "    float s = 0.0;\n"
                 "    for (uint j = l; j < %lluu; j += step) s += ld1(base + j * %lluu)%s;\n"
                 "    s = WG_SUM(s);\n"
                 "    for (uint j = l; j < %lluu; j += step) {\n"
                 "        float y = ld0(base + j * %lluu), dy = ld1(base + j * %lluu);\n"
                 "        st0(base + j * %lluu, %s);\n"
                 "    }\n}\n",
                 (ull)inner, (ull)(dim * inner), (ull)inner, (ull)dim, (ull)inner, times_y,
                 (ull)dim, (ull)inner, (ull)inner, (ull)inner,
                 log_in ? "dy - exp(y) * s" : "y * (dy - s)");
    return tg_gen_finish(g, tg_gen_row_groups(g, serial, rows));
}

/* The mean and inv = 1/sqrt(var + eps) of the row of x (= ld1) at `base`,
 * each invocation folding elements l, l + step, ... and `sum` combining. */
static void emit_row_stats(tg_sb *b, const char *sum, const char *step, int64_t D, double eps) {
    char dl[64], el[64];
    tg_gen_flit((double)D, dl, sizeof dl);
    tg_gen_flit(eps, el, sizeof el);
    tg_sb_printf(b,
                 "    float s = 0.0;\n"
                 "    for (uint c = l; c < %lluu; c += %s) s += ld1(base + c);\n"
                 "    float mean = %s(s) / %s;\n"
                 "    float q = 0.0;\n"
                 "    for (uint c = l; c < %lluu; c += %s) {\n"
                 "        float d = ld1(base + c) - mean;\n"
                 "        q += d * d;\n"
                 "    }\n"
                 "    float inv = 1.0 / sqrt(%s(q) / %s + %s);\n",
                 (ull)D, step, sum, dl, (ull)D, step, sum, dl, el);
}

/* (dy = ld0, x = ld1, w = ld2): with xhat = (x - mean) inv and g = dy w,
 * dx = inv (g - mean(g) - xhat mean(g xhat)). */
static tg_status gen_layer_norm_grad_x(tg_gen *g, const tg_node *n, bool serial) {
    int64_t D = n->rank ? n->shape[n->rank - 1] : 1;
    int64_t rows = D ? tg_shape_count(n->rank, n->shape) / D : 0;
    char dl[64];
    tg_gen_flit((double)D, dl, sizeof dl);
    tg_sb *b = &g->b;
    tg_gen_row_head(g, serial, rows);
    tg_sb_printf(b, "    uint base = r * %lluu;\n", (ull)D);
    emit_row_stats(b, "WG_SUM", "step", D, n->attrs.eps);
    tg_sb_printf(b,
                 "    float sg = 0.0, sgx = 0.0;\n"
                 "    for (uint c = l; c < %lluu; c += step) {\n"
                 "        float gc = ld0(base + c) * ld2(c);\n"
                 "        sg += gc;\n"
                 "        sgx += gc * (ld1(base + c) - mean) * inv;\n"
                 "    }\n"
                 "    float mg = WG_SUM(sg) / %s, mgx = WG_SUM(sgx) / %s;\n"
                 "    for (uint c = l; c < %lluu; c += step) {\n"
                 "        float xhat = (ld1(base + c) - mean) * inv;\n"
                 "        st0(base + c, inv * (ld0(base + c) * ld2(c) - mg - xhat * mgx));\n"
                 "    }\n}\n",
                 (ull)D, dl, dl, (ull)D);
    return tg_gen_finish(g, tg_gen_row_groups(g, serial, rows));
}

/* The column sums of layer_norm_grad_wb: how many columns each invocation
 * owns, and the loop iterations of one invocation (lavapipe's limit). */
#define WB_MAX_COLS 8
static int64_t wb_cols_per_inv(int64_t D, uint32_t wg, bool one_group) {
    int64_t c = one_group ? (D + wg - 1) / wg : 1;
    return c < 1 ? 1 : c > WB_MAX_COLS ? WB_MAX_COLS : c;
}

static int64_t wb_iters(int64_t rows, int64_t D, uint32_t wg) {
    int64_t chunks = (rows + wg - 1) / wg;
    return chunks * (2 * ((D + 3) / 4 + 3) + (int64_t)wg + 2);
}

/* (dy = ld0, x = ld1) -> [2, D]: sum over rows of dy xhat, and of dy.
 * The rows go in chunks of WG: invocation l computes the mean and inv of
 * chunk row l alone (four elements an iteration) into shared memory; after
 * a barrier each invocation adds the chunk's rows to its own columns
 * (j = block * WG * CPI + l + t * WG, t < CPI). Row statistics are thus
 * computed once per column block, with two barriers per WG rows instead of
 * two workgroup reductions per row. CPU devices take every column in one
 * workgroup (one thread runs a dispatch anyway: statistics once); GPUs a
 * workgroup per WG columns (parallel, statistics recomputed per block). */
static tg_status gen_layer_norm_grad_wb(tg_gen *g, const tg_node *n) {
    const tg_node *x = tg_gen_node(g, n->inputs[1]);
    int64_t D = n->shape[1], rows = D ? tg_shape_count(x->rank, x->shape) / D : 0;
    uint32_t wg = g->wg;
    bool cpu = g->caps->device_class == TG_VK_CLASS_CPU;
    int64_t cpi = wb_cols_per_inv(D, wg, cpu), per_block = (int64_t)wg * cpi;
    uint64_t blocks = (uint64_t)((D + per_block - 1) / per_block);
    if (cpu && wb_iters(rows, D, wg) > CPU_LOOP_LIMIT)
        return tg_set_error(
            TG_ERR_UNSUPPORTED,
            "layer_norm_grad_wb of %lld rows x %lld: over the %d loop iterations an "
            "invocation may run on this CPU device",
            (long long)rows, (long long)D, CPU_LOOP_LIMIT);
    ull d4 = (ull)(D / 4 * 4);
    char dl[64], el[64];
    tg_gen_flit((double)D, dl, sizeof dl);
    tg_gen_flit(n->attrs.eps, el, sizeof el);
    tg_sb *b = &g->b;
    tg_sb_printf(
        b,
        "shared float s_mean[%u], s_inv[%u];\n"
        "void main() {\n"
        "    uint blk = tg_group();\n"
        "    if (blk >= %lluu) return;\n" /* uniform over the workgroup */
        "    uint l = gl_LocalInvocationID.x, j0 = blk * %lluu + l;\n"
        "    float aw[%lld], ab[%lld];\n"
        "    for (int t = 0; t < %lld; t++) { aw[t] = 0.0; ab[t] = 0.0; }\n"
        "    for (uint r0 = 0u; r0 < %lluu; r0 += %uu) {\n"
        "        if (r0 + l < %lluu) {\n"
        "            uint base = (r0 + l) * %lluu;\n"
        "            float s = 0.0;\n"
        "            for (uint c = 0u; c < %lluu; c += 4u)\n"
        "                s += (ld1(base + c) + ld1(base + c + 1u)) +\n"
        "                     (ld1(base + c + 2u) + ld1(base + c + 3u));\n"
        "            for (uint c = %lluu; c < %lluu; c++) s += ld1(base + c);\n"
        "            float mean = s / %s, q = 0.0;\n"
        "            for (uint c = 0u; c < %lluu; c += 4u) {\n"
        "                float d0 = ld1(base + c) - mean, d1 = ld1(base + c + 1u) - mean;\n"
        "                float d2 = ld1(base + c + 2u) - mean, d3 = ld1(base + c + 3u) - "
        "mean;\n"
        "                q += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);\n"
        "            }\n"
        "            for (uint c = %lluu; c < %lluu; c++) {\n"
        "                float d = ld1(base + c) - mean;\n"
        "                q += d * d;\n"
        "            }\n"
        "            s_mean[l] = mean;\n"
        "            s_inv[l] = 1.0 / sqrt(q / %s + %s);\n"
        "        }\n"
        "        barrier();\n"
        "        uint nr = min(%uu, %lluu - r0);\n"
        "        for (uint i = 0u; i < nr; i++) {\n"
        "            uint base = (r0 + i) * %lluu;\n"
        "            float mean = s_mean[i], inv = s_inv[i];\n",
        wg, wg, (ull)blocks, (ull)per_block, (long long)cpi, (long long)cpi, (long long)cpi,
        (ull)rows, wg, (ull)rows, (ull)D, d4, d4, (ull)D, dl, d4, d4, (ull)D, dl, el, wg, (ull)rows,
        (ull)D);
    for (int64_t t = 0; t < cpi; t++)
        tg_sb_printf(b,
                     "            { uint j = j0 + %lluu;\n"
                     "              if (j < %lluu) {\n"
                     "                float dy = ld0(base + j);\n"
                     "                aw[%lld] += dy * (ld1(base + j) - mean) * inv;\n"
                     "                ab[%lld] += dy;\n"
                     "              } }\n",
                     (ull)(t * wg), (ull)D, (long long)t, (long long)t);
    tg_sb_printf(b,
                 "        }\n"
                 "        barrier();\n" /* the next chunk rewrites s_mean, s_inv */
                 "    }\n"
                 "    for (int t = 0; t < %lld; t++) {\n"
                 "        uint j = j0 + uint(t) * %uu;\n"
                 "        if (j < %lluu) {\n"
                 "            st0(j, aw[t]);\n"
                 "            st0(%lluu + j, ab[t]);\n"
                 "        }\n"
                 "    }\n}\n",
                 (long long)cpi, wg, (ull)D, (ull)D);
    return tg_gen_finish(g, blocks);
}

/* The rows each workgroup of a cross_entropy_grad kernel owns, and the
 * workgroups: serial, one row per invocation; else rows walked together,
 * at most 256 workgroups, so the label reads (rows per workgroup) stay
 * small next to the logits; on CPU devices few enough rows per workgroup
 * for lavapipe's loop limit (gen_nn.c). */
tg_status tg_gen_ce_grad_rows(tg_gen *g, const tg_node *n, bool serial, int64_t *rows_per_group,
                              uint64_t *groups) {
    const tg_node *y = tg_gen_node(g, n->inputs[1]);
    int64_t C = n->shape[n->rank - 1], rows = tg_shape_count(y->rank, y->shape);
    int64_t wg = g->wg;
    int64_t per_group = serial ? wg : (rows + 255) / 256;
    int64_t count_iters = (rows + wg - 1) / wg + 2 * wg;
    int64_t row_iters =
        1 + 2 * tg_gen_ce_row_iters(C, serial ? 1 : wg) + (C + wg - 1) / wg + (serial ? 0 : 2 * wg);
    bool cpu = g->caps->device_class == TG_VK_CLASS_CPU;
    if (cpu && !serial && count_iters + per_group * row_iters > CPU_LOOP_LIMIT)
        per_group = (CPU_LOOP_LIMIT - count_iters) / row_iters;
    if (per_group < 1) per_group = 1;
    if (cpu && count_iters + (serial ? 1 : per_group) * row_iters > CPU_LOOP_LIMIT)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "cross_entropy_grad of %lld rows x %lld classes: over the %d loop "
                            "iterations an invocation may run on this CPU device",
                            (long long)rows, (long long)C, CPU_LOOP_LIMIT);
    *rows_per_group = per_group;
    *groups = (uint64_t)((rows + per_group - 1) / per_group);
    return TG_OK;
}

void tg_gen_ce_skip(char *buf, size_t size, const char *label, int64_t ignore_index, int64_t C) {
    if (ignore_index >= INT32_MIN && ignore_index <= INT32_MAX)
        snprintf(buf, size, "(%s == %lld || %s < 0 || %s >= %lld)", label, (long long)ignore_index,
                 label, label, (long long)C);
    else /* an int label never equals it */
        snprintf(buf, size, "(%s < 0 || %s >= %lld)", label, label, (long long)C);
}

/* GLSL `void ce_grad(uint grp)`: workgroup grp's rows of the gradient
 * (logits = input li, labels = yi, dloss = di, output jo):
 * (softmax(row) - onehot) * dloss / count for counted rows, zeros
 * otherwise. Each workgroup owns a block of rows: serial, one row per
 * invocation (WG rows); else `per_group` rows that the workgroup walks
 * together. It first counts the counted labels of all rows, together
 * (each invocation every WG-th label, then one workgroup sum): the labels
 * are read once per workgroup, not once per row. A row is read whole
 * before its gradient is written, so the output may be the logits' memory
 * (backend/executor.c). Used by the lone kernel below and by gen_nn.c's
 * cross-entropy pair; the row functions must be emitted first. */
tg_status tg_gen_ce_grad_fn(tg_gen *g, const tg_node *n, bool serial, int li, int yi, int di,
                            int jo, uint64_t *groups) {
    const tg_node *y = tg_gen_node(g, n->inputs[1]);
    int64_t C = n->shape[n->rank - 1], rows = tg_shape_count(y->rank, y->shape);
    int64_t per_group;
    tg_status st = tg_gen_ce_grad_rows(g, n, serial, &per_group, groups);
    if (st != TG_OK) return st;
    char skip[96];
    tg_gen_ce_skip(skip, sizeof skip, "lb", n->attrs.ignore_index, C);
    tg_sb *b = &g->b;
    if (serial && tg_gen_ce_v4(g, C, li) && g->k->output_storage[jo] == TG_F32)
        tg_sb_printf(b, "layout(std430, binding = %d) writeonly buffer BCE4 { vec4 o4ce[]; };\n",
                     g->k->n_inputs + jo);
    tg_sb_printf(b,
                 "#define ROW_SUM(x) %s\n#define ROW_MAX(x) %s\n"
                 "void ce_grad(uint grp) {\n"
                 "    uint l = gl_LocalInvocationID.x;\n"
                 "    float cnt = 0.0;\n"
                 "    for (uint q = l; q < %lluu; q += %uu) {\n"
                 "        int lb = ld%d(q);\n"
                 "        cnt += %s ? 0.0 : 1.0;\n"
                 "    }\n"
                 "    float scale = ld%d(0u) / tg_wg_sum(cnt);\n",
                 serial ? "(x)" : "tg_wg_sum(x)", serial ? "(x)" : "tg_wg_max(x)", (ull)rows, g->wg,
                 yi, skip, di);
    if (serial)
        tg_sb_printf(b,
                     "    const uint j0 = 0u, step = 1u;\n"
                     "    uint r0 = grp * %uu + l, r1 = min(%lluu, r0 + 1u);\n",
                     g->wg, (ull)rows);
    else
        tg_sb_printf(b,
                     "    uint j0 = l, step = %uu;\n"
                     "    uint r0 = grp * %lluu, r1 = min(%lluu, r0 + %lluu);\n",
                     g->wg, (ull)per_group, (ull)rows, (ull)per_group);
    /* serial rows of vec4 logits (tg_gen_ce_v4), an f32 output: a texel
     * and a vec4 store for 4 classes (lavapipe: a call and a lane loop) */
    if (serial && tg_gen_ce_v4(g, C, li) && g->k->output_storage[jo] == TG_F32) {
        tg_sb_printf(b,
                     "    for (uint r = r0; r < r1; r++) {\n"
                     "        int lb = ld%d(r);\n"
                     "        uint base4 = r * %lluu;\n"
                     "        if (%s) {\n"
                     "            for (uint c = 0u; c < %lluu; c++) o4ce[base4 + c] = vec4(0.0);\n"
                     "            continue;\n"
                     "        }\n"
                     "        float m = ce_row_max4(4u * base4);\n"
                     "        float f = scale / ce_row_sumexp4(4u * base4, m);\n"
                     "        for (uint c = 0u; c < %lluu; c++) {\n"
                     "            ivec4 j = ivec4(4 * int(c)) + ivec4(0, 1, 2, 3);\n"
                     "            o4ce[base4 + c] = exp(tf%d(int(base4 + c)) - m) * f -\n"
                     "                              vec4(equal(j, ivec4(lb))) * scale;\n"
                     "        }\n"
                     "    }\n"
                     "}\n#undef ROW_SUM\n#undef ROW_MAX\n",
                     yi, (ull)(C / 4), skip, (ull)(C / 4), (ull)(C / 4), li);
        return TG_OK;
    }
    tg_sb_printf(b,
                 "    for (uint r = r0; r < r1; r++) {\n"
                 "        int lb = ld%d(r);\n"
                 "        uint base = r * %lluu;\n"
                 "        if (%s) {\n" /* uniform when the workgroup walks the row */
                 "            for (uint j = j0; j < %lluu; j += step) st%d(base + j, 0.0);\n"
                 "            continue;\n"
                 "        }\n"
                 "        float m = ROW_MAX(ce_row_max(base, j0, step));\n"
                 "        float f = scale / ROW_SUM(ce_row_sumexp(base, j0, step, m));\n"
                 "        for (uint j = j0; j < %lluu; j += step)\n"
                 "            st%d(base + j, exp(ld%d(base + j) - m) * f - (int(j) == lb ? scale : "
                 "0.0));\n"
                 "    }\n"
                 "}\n#undef ROW_SUM\n#undef ROW_MAX\n",
                 yi, (ull)C, skip, (ull)C, jo, (ull)C, jo, li);
    return TG_OK;
}

static tg_status gen_cross_entropy_grad(tg_gen *g, const tg_node *n, bool serial) {
    uint64_t groups;
    tg_gen_ce_row_fns(g, n->shape[n->rank - 1]);
    tg_status st = tg_gen_ce_grad_fn(g, n, serial, 0, 1, 2, 0, &groups);
    if (st != TG_OK) return st;
    tg_sb_printf(&g->b,
                 "void main() {\n"
                 "    uint grp = tg_group();\n" /* uniform over the workgroup */
                 "    if (grp < %lluu) ce_grad(grp);\n"
                 "}\n",
                 (ull)groups);
    return tg_gen_finish(g, groups);
}

/* attention_grad_q/k/v (q, k, v, [mask], dout): one workgroup per batch. */
static tg_status gen_attention_grad(tg_gen *g, const tg_node *n) {
    const tg_graph *gr = g->k->g;
    const tg_node *q = &gr->nodes[n->inputs[0]], *kk = &gr->nodes[n->inputs[1]],
                  *v = &gr->nodes[n->inputs[2]];
    int dout = n->n_inputs - 1;
    int64_t Tq = q->shape[q->rank - 2], D = q->shape[q->rank - 1], Tk = kk->shape[kk->rank - 2];
    int64_t Dv = v->shape[v->rank - 1], batches = prod(n->shape, 0, n->rank - 2);
    bool dq = n->op == TG_OP_ATTENTION_GRAD_Q, dv = n->op == TG_OP_ATTENTION_GRAD_V;
    int64_t Dout = dv ? Dv : D;
    uint32_t wg = g->wg;
    tg_sb *b = &g->b;
    char scale[64];
    tg_gen_flit(n->attrs.scale > 0 ? n->attrs.scale : 1.0 / sqrt((double)D), scale, sizeof scale);
    /* shared memory: three statistics per query row (and gen_nn's sq) */
    if (3 * Tq + D + 2 * (int64_t)wg > (int64_t)g->caps->max_shared_memory_bytes / 4)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s: the statistics of %lld query rows do not fit %u bytes of shared "
                            "memory",
                            tg_ops[n->op].name, (long long)Tq, g->caps->max_shared_memory_bytes);
    /* the visible keys of query row i: causal is bottom-right aligned */
    char nk[96];
    if (n->attrs.causal)
        snprintf(nk, sizeof nk, "uint(clamp(int(i) + %lld, 0, %lld))", (long long)(Tk - Tq + 1),
                 (long long)Tk);
    else
        snprintf(nk, sizeof nk, "%lluu", (ull)Tk);

    /* dP_ij (unused by dv), what key j gets from query row i, the first
     * query row that sees key j */
    char dp[96], w[256], term[96], first[96];
    snprintf(dp, sizeof dp, dv ? "0.0" : "dot_v(dob + i * %lluu, vo, j)", (ull)Dv);
    snprintf(w, sizeof w, dv ? "p" : "p * (%s - sP[i]) * %s", dp, scale);
    if (dv)
        snprintf(term, sizeof term, "ld%d(dob + i * %lluu + d)", dout, (ull)Dv);
    else
        snprintf(term, sizeof term, "ld0(qb + i * %lluu + d)", (ull)D);
    if (!n->attrs.causal)
        snprintf(first, sizeof first, "0u");
    else if (Tk >= Tq) /* i >= j - (Tk - Tq) */
        snprintf(first, sizeof first, "uint(max(int(j) - %lld, 0))", (long long)(Tk - Tq));
    else
        snprintf(first, sizeof first, "j + %lluu", (ull)(Tq - Tk));

    tg_gen_attention_score(g, n);
    tg_sb_printf(
        b,
        "#define NEG_INF uintBitsToFloat(0xff800000u)\n"
        "shared float sM[%lld], sL[%lld], sP[%lld];\n"
        /* dP_ij = dout_i . v_j, dout_i at dro */
        "float dot_v(uint dro, uint vo, uint j) {\n"
        "    float a = 0.0;\n"
        "    for (uint d = 0u; d < %lluu; d++) a += ld%d(dro + d) * ld2(vo + j * %lluu + d);\n"
        "    return a;\n"
        "}\n"
        "float prob(float s, uint i) { return sL[i] > 0.0 ? exp(s - sM[i]) / sL[i] : 0.0; }\n"
        "void main() {\n"
        "    uint bb = tg_group();\n"
        "    if (bb >= %lluu) return;\n" /* uniform over the workgroup */
        "    uint l = gl_LocalInvocationID.x;\n"
        "    uint qb = q_off(bb), ko = k_off(bb), vo = v_off(bb), dob = bb * %lluu;\n"
        /* per query row: max M, sum L of exp(s - M), P = sum_j p_j dP_j
         * (online softmax over its visible keys) */
        "    for (uint i = l; i < %lluu; i += %uu) {\n"
        "        uint nk = %s, row = bb * %lluu + i;\n"
        "        float m = NEG_INF, sl = 0.0, a = 0.0;\n"
        "        for (uint j = 0u; j < nk; j++) {\n"
        "            float s = att_score_q(row, qb + i * %lluu, ko, j);\n"
        "            if (s == NEG_INF) continue;\n"
        "            float dp = %s, c = 1.0, e = 1.0;\n"
        "            if (s > m) {\n"
        "                c = exp(m - s);\n"
        "                m = s;\n"
        "            } else {\n"
        "                e = exp(s - m);\n"
        "            }\n"
        "            sl = sl * c + e;\n"
        "            a = a * c + e * dp;\n"
        "        }\n"
        "        sM[i] = m;\n"
        "        sL[i] = sl;\n"
        "        sP[i] = sl > 0.0 ? a / sl : 0.0;\n"
        "    }\n"
        "    barrier();\n",
        (long long)Tq, (long long)Tq, (long long)Tq, (ull)Dv, dout, (ull)Dv, (ull)batches,
        (ull)(Tq * Dv), (ull)Tq, wg, nk, (ull)Tq, (ull)D, dp);
    if (dq) /* dq_i = scale sum_j p_ij (dP_ij - P_i) k_j */
        tg_sb_printf(b,
                     "    for (uint i = l; i < %lluu; i += %uu) {\n"
                     "        uint nk = %s, row = bb * %lluu + i;\n"
                     "        float acc[%lld];\n"
                     "        for (uint d = 0u; d < %lluu; d++) acc[d] = 0.0;\n"
                     "        for (uint j = 0u; j < nk; j++) {\n"
                     "            float p = prob(att_score_q(row, qb + i * %lluu, ko, j), i);\n"
                     "            if (p == 0.0) continue;\n"
                     "            float ds = %s;\n"
                     "            for (uint d = 0u; d < %lluu; d++) acc[d] += ds * ld1(ko + j * "
                     "%lluu + d);\n"
                     "        }\n"
                     "        for (uint d = 0u; d < %lluu; d++) st0(row * %lluu + d, acc[d]);\n"
                     "    }\n}\n",
                     (ull)Tq, wg, nk, (ull)Tq, (long long)(D ? D : 1), (ull)D, (ull)D, w, (ull)D,
                     (ull)D, (ull)D, (ull)D);
    else
        /* dk_j = scale sum_i p_ij (dP_ij - P_i) q_i; dv_j = sum_i p_ij dout_i,
         * over the query rows that see key j */
        tg_sb_printf(b,
                     "    for (uint j = l; j < %lluu; j += %uu) {\n"
                     "        float acc[%lld];\n"
                     "        for (uint d = 0u; d < %lluu; d++) acc[d] = 0.0;\n"
                     "        for (uint i = %s; i < %lluu; i++) {\n"
                     "            uint row = bb * %lluu + i;\n"
                     "            float p = prob(att_score_q(row, qb + i * %lluu, ko, j), i);\n"
                     "            if (p == 0.0) continue;\n"
                     "            float w = %s;\n"
                     "            for (uint d = 0u; d < %lluu; d++) acc[d] += w * %s;\n"
                     "        }\n"
                     "        for (uint d = 0u; d < %lluu; d++) st0((bb * %lluu + j) * %lluu + d, "
                     "acc[d]);\n"
                     "    }\n}\n",
                     (ull)Tk, wg, (long long)(Dout ? Dout : 1), (ull)Dout, first, (ull)Tq, (ull)Tq,
                     (ull)D, w, (ull)Dout, term, (ull)Dout, (ull)Tk, (ull)Dout);
    return tg_gen_finish(g, (uint64_t)batches);
}

/* conv1d_grad_input / conv1d_grad_weight (dy = ld0, x = ld1, w = ld2). */
static tg_status gen_conv1d_grad(tg_gen *g, const tg_node *n) {
    const tg_node *dy = tg_gen_node(g, n->inputs[0]), *x = tg_gen_node(g, n->inputs[1]),
                  *w = tg_gen_node(g, n->inputs[2]);
    long long B = x->shape[0], Cin = x->shape[1], W = x->shape[2], Cout = w->shape[0],
              K = w->shape[2], Wout = dy->shape[2];
    long long stride = n->attrs.stride, pad = n->attrs.padding, dil = n->attrs.dilation;
    int64_t count = tg_shape_count(n->rank, n->shape);
    tg_sb *b = &g->b;
    tg_sb_printf(b,
                 "void main() {\n"
                 "    uint i = tg_group() * %uu + gl_LocalInvocationID.x;\n"
                 "    if (i >= %lluu) return;\n"
                 "    float acc = 0.0;\n",
                 g->wg, (ull)count);
    if (n->op == TG_OP_CONV1D_GRAD_INPUT) /* dx[b, ci, pos] */
        tg_sb_printf(b,
                     "    int bi = int(i / %lluu), ci = int(i / %lluu) %% %lld, pos = int(i %% "
                     "%lluu);\n"
                     "    for (int k = 0; k < %lld; k++) {\n"
                     "        int t = pos + %lld - k * %lld;\n"
                     "        if (t < 0 || t %% %lld != 0 || t / %lld >= %lld) continue;\n"
                     "        int o = t / %lld;\n"
                     "        for (int co = 0; co < %lld; co++)\n"
                     "            acc += ld0(uint((bi * %lld + co) * %lld + o)) * ld2(uint((co * "
                     "%lld + ci) * %lld + k));\n"
                     "    }\n",
                     (ull)(Cin * W), (ull)W, Cin, (ull)W, K, pad, dil, stride, stride, Wout, stride,
                     Cout, Cout, Wout, Cin, K);
    else /* dw[co, ci, k] */
        tg_sb_printf(b,
                     "    int co = int(i / %lluu), ci = int(i / %lluu) %% %lld, k = int(i %% "
                     "%lluu);\n"
                     "    for (int bi = 0; bi < %lld; bi++)\n"
                     "        for (int o = 0; o < %lld; o++) {\n"
                     "            int pos = o * %lld - %lld + k * %lld;\n"
                     "            if (pos < 0 || pos >= %lld) continue;\n"
                     "            acc += ld0(uint((bi * %lld + co) * %lld + o)) * ld1(uint((bi * "
                     "%lld + ci) * %lld + pos));\n"
                     "        }\n",
                     (ull)(Cin * K), (ull)K, Cin, (ull)K, B, Wout, stride, pad, dil, W, Cout, Wout,
                     Cin, W);
    tg_sb_printf(b, "    st0(i, acc);\n}\n");
    return tg_gen_finish(g, ((uint64_t)count + g->wg - 1) / g->wg);
}

/* slice_grad (dy = ld0, x = ld1): zeros of x's shape with dy at the
 * slice's positions (begin is normalised by the shape rule, step >= 1). */
static tg_status gen_slice_grad(tg_gen *g, const tg_node *n) {
    const tg_node *dy = tg_gen_node(g, n->inputs[0]);
    int64_t count = tg_shape_count(n->rank, n->shape), ds[TG_MAX_RANK];
    tg_gen_row_strides(dy->rank, dy->shape, ds);
    tg_sb *b = &g->b;
    tg_sb_printf(b,
                 "void main() {\n"
                 "    uint i = tg_group() * %uu + gl_LocalInvocationID.x;\n"
                 "    if (i >= %lluu) return;\n"
                 "    uint r = i, src = 0u;\n"
                 "    bool inside = true;\n",
                 g->wg, (ull)count);
    for (int d = n->rank - 1; d >= 0; d--) {
        long long beg = n->attrs.begin[d], st = n->attrs.step[d];
        tg_sb_printf(b,
                     "    { int rel = int(r %% %lluu) - %lld; r /= %lluu;\n"
                     "      inside = inside && rel >= 0 && rel %% %lld == 0 && rel / %lld < %lld;\n"
                     "      src += uint(max(rel, 0) / %lld) * %lluu; }\n",
                     (ull)n->shape[d], beg, (ull)n->shape[d], st, st, (long long)dy->shape[d], st,
                     (ull)ds[d]);
    }
    tg_sb_printf(b, "    st0(i, inside ? ld0(src) : 0.0);\n}\n");
    return tg_gen_finish(g, ((uint64_t)count + g->wg - 1) / g->wg);
}

tg_status tg_gen_grad(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out) {
    const tg_graph *gr = k->g;
    int32_t id = k->nodes[k->n_nodes - 1];
    const tg_node *n = &gr->nodes[id];
    if (k->n_nodes != 1 || k->n_inputs != n->n_inputs || k->n_outputs != 1)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "grad generator: %s %d must be alone in its kernel, reading each "
                            "input once",
                            tg_ops[n->op].name, (int)id);
    for (int i = 0; i < n->n_inputs; i++) {
        const tg_node *x = &gr->nodes[n->inputs[i]];
        if (k->inputs[i] != n->inputs[i] || tg_shape_count(x->rank, x->shape) > UINT32_MAX)
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "grad generator: %s %d: kernel inputs must be the node's inputs "
                                "in order, each under 2^32 elements",
                                tg_ops[n->op].name, (int)id);
    }
    if (tg_shape_count(n->rank, n->shape) > UINT32_MAX)
        return tg_set_error(TG_ERR_UNSUPPORTED, "grad generator: %s %d has 2^32 elements or more",
                            tg_ops[n->op].name, (int)id);
    if (tg_gen_attention_backward_handles(n)) return tg_gen_attention_backward(caps, k, out);
    /* row ops: serial for short rows, as their forwards */
    int64_t row_len = 0;
    switch (n->op) {
    case TG_OP_SOFTMAX_GRAD:
    case TG_OP_LOG_SOFTMAX_GRAD: row_len = n->shape[n->attrs.axis]; break;
    case TG_OP_LAYER_NORM_GRAD_X:
    case TG_OP_CROSS_ENTROPY_GRAD: row_len = n->rank ? n->shape[n->rank - 1] : 1; break;
    default: break;
    }
    bool rows = row_len > 0, serial = rows && tg_gen_row_serial(caps, row_len);
    bool elementwise = n->op == TG_OP_CONV1D_GRAD_INPUT || n->op == TG_OP_CONV1D_GRAD_WEIGHT ||
                       n->op == TG_OP_SLICE_GRAD;
    /* cross_entropy_grad sums its label count over the workgroup, serial or not */
    bool ce = n->op == TG_OP_CROSS_ENTROPY_GRAD;
    bool wb = n->op == TG_OP_LAYER_NORM_GRAD_WB;
    bool sg = (n->op == TG_OP_SOFTMAX_GRAD || n->op == TG_OP_LOG_SOFTMAX_GRAD) &&
              tg_gen_row_subgroup(caps, row_len);
    if (sg) serial = false;
    uint32_t wg = tg_gen_wg_size(caps, serial || elementwise ? 128 : 64);
    /* fewer, larger row chunks on CPU devices (two barriers per chunk) */
    if (wb && caps->device_class == TG_VK_CLASS_CPU) wg = tg_gen_wg_size(caps, 128);
    if (sg) wg = caps->subgroup_size;
    /* every workgroup reads all labels: fewer, larger ones on CPU devices */
    if (ce && serial && caps->device_class == TG_VK_CLASS_CPU) wg = tg_gen_wg_size(caps, 512);
    tg_gen g;
    uint32_t ce_v4 = ce && serial ? tg_gen_ce_v4_mask(caps, k, 0, row_len) : 0;
    tg_status st = ce_v4
                       ? tg_gen_begin_texel(&g, caps, k, out, wg, true, ce_v4, true)
                       : tg_gen_begin(&g, caps, k, out, wg, ce || (!serial && !elementwise && !wb));
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }
    switch (n->op) {
    case TG_OP_SOFTMAX_GRAD:
    case TG_OP_LOG_SOFTMAX_GRAD: st = gen_softmax_grad(&g, n, serial); break;
    case TG_OP_LAYER_NORM_GRAD_X: st = gen_layer_norm_grad_x(&g, n, serial); break;
    case TG_OP_LAYER_NORM_GRAD_WB: st = gen_layer_norm_grad_wb(&g, n); break;
    case TG_OP_CROSS_ENTROPY_GRAD: st = gen_cross_entropy_grad(&g, n, serial); break;
    case TG_OP_ATTENTION_GRAD_Q:
    case TG_OP_ATTENTION_GRAD_K:
    case TG_OP_ATTENTION_GRAD_V: st = gen_attention_grad(&g, n); break;
    case TG_OP_CONV1D_GRAD_INPUT:
    case TG_OP_CONV1D_GRAD_WEIGHT: st = gen_conv1d_grad(&g, n); break;
    case TG_OP_SLICE_GRAD: st = gen_slice_grad(&g, n); break;
    default:
        st = tg_set_error(TG_ERR_UNSUPPORTED, "grad generator: no kernel for %s",
                          tg_ops[n->op].name);
        break;
    }
    if (st != TG_OK) tg_gen_abort(&g);
    return st;
}
