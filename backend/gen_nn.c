/* backend/gen_nn.c — the composite ops, each one kernel: softmax and
 * log_softmax over any axis, layer_norm, attention and cross_entropy.
 *
 * Row ops (softmax, layer_norm) take one workgroup per row, the row's
 * statistics combined with gen_common's tg_wg_* reductions; rows of at
 * most SERIAL_MAX elements take one invocation per row instead (the same
 * code with WG_SUM/WG_MAX as identities).
 *
 * attention: one workgroup per (batch, query row). Keys are processed in
 * chunks that fit shared memory: the chunk's scores (q.k * scale + mask,
 * causal bottom-right: query i sees key j <= i + Tk - Tq) go to shared
 * memory, and an online softmax rescales the running sum and the output
 * accumulators by exp(old max - new max) per chunk. Invocation t owns
 * output columns t, t + WG, ... A row that sees no key gives zeros.
 *
 * cross_entropy: one workgroup (the result is one number and a kernel
 * has no scratch for partial sums); on CPU devices or for short rows
 * each invocation owns every WG-th row, else the workgroup walks the rows
 * together (see gen_cross_entropy). Labels equal to ignore_index are
 * skipped; labels outside [0, C) are skipped too (the interpreter reports
 * an error): they add nothing to the sum or the count. No counted row
 * gives 0. */
#include "backend/device_class.h"
#include "backend/gen_common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SERIAL_MAX TG_GEN_ROW_SERIAL_MAX

static int64_t prod(const int64_t *s, int from, int to) {
    int64_t p = 1;
    for (int d = from; d < to; d++) p *= s[d];
    return p;
}

/* Is this row kernel's workgroup one subgroup (tg_gen_row_subgroup)? */
static bool row_is_subgroup(const tg_gen *g) {
    return g->caps->device_class == TG_VK_CLASS_CPU && g->wg == g->caps->subgroup_size &&
           g->subgroup_arith;
}

void tg_gen_row_head(tg_gen *g, bool serial, int64_t rows) {
    tg_sb *b = &g->b;
    if (!serial && row_is_subgroup(g))
        tg_sb_printf(b,
                     "#define WG_SUM(x) subgroupAdd(x)\n#define WG_MAX(x) subgroupMax(x)\n"
                     "void main() {\n"
                     "    uint r = tg_group();\n"
                     "    if (r >= %lluu) return;\n" /* uniform over the subgroup */
                     "    uint l = gl_LocalInvocationID.x, step = %uu;\n",
                     (unsigned long long)rows, g->wg);
    else if (serial)
        tg_sb_printf(b,
                     "#define WG_SUM(x) (x)\n#define WG_MAX(x) (x)\n"
                     "void main() {\n"
                     "    uint r = tg_group() * %uu + gl_LocalInvocationID.x;\n"
                     "    if (r >= %lluu) return;\n"
                     "    const uint l = 0u, step = 1u;\n",
                     g->wg, (unsigned long long)rows);
    else
        tg_sb_printf(b,
                     "#define WG_SUM(x) tg_wg_sum(x)\n#define WG_MAX(x) tg_wg_max(x)\n"
                     "void main() {\n"
                     "    uint r = tg_group();\n"
                     "    if (r >= %lluu) return;\n" /* uniform over the workgroup */
                     "    uint l = gl_LocalInvocationID.x, step = %uu;\n",
                     (unsigned long long)rows, g->wg);
}

/* On CPU devices a row of at least TG_GEN_ROW_SUBGROUP_MIN elements takes
 * one subgroup (the workgroup): its lanes read consecutive elements and
 * combine with subgroupAdd/subgroupMax, no barriers — 1.6-1.9x faster on
 * lavapipe than one invocation per row walking a strided row
 * (bench/row_kernels). $TG_ROW_SUBGROUP_MIN overrides the bound. */
bool tg_gen_row_subgroup(const tg_vk_caps *caps, int64_t row_len) {
    int64_t min = TG_GEN_ROW_SUBGROUP_MIN;
    const char *env = getenv("TG_ROW_SUBGROUP_MIN");
    if (env) min = atoll(env);
    return caps->device_class == TG_VK_CLASS_CPU && caps->subgroup_in_compute &&
           (caps->subgroup_ops & VK_SUBGROUP_FEATURE_BASIC_BIT) &&
           (caps->subgroup_ops & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) && caps->subgroup_size >= 4 &&
           caps->subgroup_size <= 64 && row_len >= min && row_len <= TG_GEN_ROW_SERIAL_MAX_CPU;
}

bool tg_gen_row_serial(const tg_vk_caps *caps, int64_t row_len) {
    return row_len <= (caps->device_class == TG_VK_CLASS_CPU ? TG_GEN_ROW_SERIAL_MAX_CPU
                                                             : TG_GEN_ROW_SERIAL_MAX);
}

uint64_t tg_gen_row_groups(const tg_gen *g, bool serial, int64_t rows) {
    return serial ? ((uint64_t)rows + g->wg - 1) / g->wg : (uint64_t)rows;
}

static tg_status gen_softmax(tg_gen *g, const tg_node *n) {
    int ax = (int)n->attrs.axis;
    int64_t inner = prod(n->shape, ax + 1, n->rank), dim = n->shape[ax];
    int64_t rows = prod(n->shape, 0, ax) * inner;
    bool serial = tg_gen_row_serial(g->caps, dim);
    tg_sb *b = &g->b;
    if (row_is_subgroup(g)) serial = false;
    tg_gen_row_head(g, serial, rows);
    tg_sb_printf(
        b,
        "    uint base = (r / %lluu) * %lluu + r %% %lluu;\n"
        "    float m = uintBitsToFloat(0xff800000u);\n"
        "    for (uint j = l; j < %lluu; j += step) m = tg_maxf(m, ld0(base + j * %lluu));\n"
        "    m = WG_MAX(m);\n"
        "    float s = 0.0;\n"
        "    for (uint j = l; j < %lluu; j += step) s += exp(ld0(base + j * %lluu) - m);\n"
        "    s = WG_SUM(s);\n"
        "    float ls = log(s);\n"
        "    for (uint j = l; j < %lluu; j += step) {\n"
        "        float v = ld0(base + j * %lluu);\n"
        "        st0(base + j * %lluu, %s);\n"
        "    }\n}\n",
        (unsigned long long)inner, (unsigned long long)(dim * inner), (unsigned long long)inner,
        (unsigned long long)dim, (unsigned long long)inner, (unsigned long long)dim,
        (unsigned long long)inner, (unsigned long long)dim, (unsigned long long)inner,
        (unsigned long long)inner, n->op == TG_OP_LOG_SOFTMAX ? "v - m - ls" : "exp(v - m) / s");
    return tg_gen_finish(g, tg_gen_row_groups(g, serial, rows));
}

/* The vec4 row kernels' output (softmax, layer_norm on CPU devices): f32
 * results as a vec4 view of output 0, declared before main; the store of
 * `vec4 y` at texel base4 + c, which ends the row loop and main. */
static void v4_out_decl(tg_gen *g) {
    if (g->k->output_storage[0] == TG_F32)
        tg_sb_printf(&g->b, "layout(std430, binding = %d) writeonly buffer B%dv { vec4 o0v[]; };\n",
                     g->k->n_inputs, g->k->n_inputs);
}

static void v4_out_store(tg_gen *g) {
    if (g->k->output_storage[0] == TG_F32)
        tg_sb_printf(&g->b, "        o0v[base4 + c] = y;\n    }\n}\n");
    else
        tg_sb_printf(&g->b,
                     "        for (uint i = 0u; i < 4u; i++) st0(4u * (base4 + c) + i, y[i]);\n"
                     "    }\n}\n");
}

/* softmax / log_softmax over the last axis, one invocation a row of whole
 * vec4s (gen_nn's dispatcher, CPU devices: vec4 texel views of x): three
 * passes of one fetch per 4 elements, f32 stores 4 at a time. */
static tg_status gen_softmax_v4(tg_gen *g, const tg_node *n) {
    int64_t D = n->shape[n->rank - 1], rows = D ? tg_shape_count(n->rank, n->shape) / D : 0;
    unsigned long long d4 = (unsigned long long)(D / 4);
    tg_sb *b = &g->b;
    v4_out_decl(g);
    tg_gen_row_head(g, true, rows);
    tg_sb_printf(b,
                 "    uint base4 = r * %lluu;\n"
                 "    float m = uintBitsToFloat(0xff800000u);\n"
                 "    for (uint c = 0u; c < %lluu; c++) {\n"
                 "        vec4 v = tf0(int(base4 + c));\n"
                 "        m = tg_maxf(tg_maxf(m, v.x), tg_maxf(v.y, tg_maxf(v.z, v.w)));\n"
                 "    }\n"
                 "    float s = 0.0;\n"
                 "    for (uint c = 0u; c < %lluu; c++) {\n"
                 "        vec4 e = exp(tf0(int(base4 + c)) - m);\n"
                 "        s += (e.x + e.y) + (e.z + e.w);\n"
                 "    }\n"
                 "    float ls = log(s);\n"
                 "    for (uint c = 0u; c < %lluu; c++) {\n"
                 "        vec4 v = tf0(int(base4 + c));\n"
                 "        vec4 y = %s;\n",
                 d4, d4, d4, d4, n->op == TG_OP_LOG_SOFTMAX ? "v - m - ls" : "exp(v - m) / s");
    v4_out_store(g);
    return tg_gen_finish(g, tg_gen_row_groups(g, true, rows));
}

static tg_status gen_layer_norm(tg_gen *g, const tg_node *n, bool v4) {
    int64_t D = n->rank ? n->shape[n->rank - 1] : 1;
    int64_t rows = D ? tg_shape_count(n->rank, n->shape) / D : 0;
    bool serial = tg_gen_row_serial(g->caps, D) && !row_is_subgroup(g);
    char eps[64], dl[64];
    tg_sb *b = &g->b;
    if (v4) v4_out_decl(g);
    tg_gen_row_head(g, serial, rows);
    tg_gen_flit((double)D, dl, sizeof dl);
    if (v4) {
        /* vec4 texel views (gen_nn's dispatcher: one invocation a row of
         * whole vec4s): a fetch for 4 elements, f32 stores 4 at a time */
        unsigned long long d4 = (unsigned long long)(D / 4);
        tg_sb_printf(b,
                     "    uint base = r * %lluu, base4 = base >> 2;\n"
                     "    float s = 0.0;\n"
                     "    for (uint c = 0u; c < %lluu; c++) {\n"
                     "        vec4 v = tf0(int(base4 + c));\n"
                     "        s += (v.x + v.y) + (v.z + v.w);\n"
                     "    }\n"
                     "    float mean = s / %s, q = 0.0;\n"
                     "    for (uint c = 0u; c < %lluu; c++) {\n"
                     "        vec4 e = tf0(int(base4 + c)) - mean;\n"
                     "        q += (e.x * e.x + e.y * e.y) + (e.z * e.z + e.w * e.w);\n"
                     "    }\n"
                     "    float inv = 1.0 / sqrt(q / %s + %s);\n"
                     "    for (uint c = 0u; c < %lluu; c++) {\n"
                     "        vec4 y = (tf0(int(base4 + c)) - mean) * inv * "
                     "tf1(int(c)) + tf2(int(c));\n",
                     (unsigned long long)D, d4, dl, d4, dl,
                     tg_gen_flit(n->attrs.eps, eps, sizeof eps), d4);
        v4_out_store(g);
        return tg_gen_finish(g, tg_gen_row_groups(g, serial, rows));
    }
    tg_sb_printf(b,
                 "    uint base = r * %lluu;\n"
                 "    float s = 0.0;\n"
                 "    for (uint j = l; j < %lluu; j += step) s += ld0(base + j);\n"
                 "    float mean = WG_SUM(s) / %s;\n"
                 "    float q = 0.0;\n"
                 "    for (uint j = l; j < %lluu; j += step) {\n"
                 "        float d = ld0(base + j) - mean;\n"
                 "        q += d * d;\n"
                 "    }\n"
                 "    float inv = 1.0 / sqrt(WG_SUM(q) / %s + %s);\n"
                 "    for (uint j = l; j < %lluu; j += step)\n"
                 "        st0(base + j, (ld0(base + j) - mean) * inv * ld1(j) + ld2(j));\n}\n",
                 (unsigned long long)D, (unsigned long long)D, dl, (unsigned long long)D, dl,
                 tg_gen_flit(n->attrs.eps, eps, sizeof eps), (unsigned long long)D);
    return tg_gen_finish(g, tg_gen_row_groups(g, serial, rows));
}

/* lavapipe (llvmpipe 22.3) ends every loop of a shader invocation once
 * 65535 iterations of all its loops together have run (gallivm's loop
 * limiter), silently: kernels that loop long on CPU devices must stay
 * under it. The cross_entropy kernels check their count against this. */
#define CPU_LOOP_LIMIT 60000

int64_t tg_gen_ce_row_iters(int64_t C, int64_t step) {
    int64_t per = (C + step - 1) / step;
    return (per + 3) / 4 + 3;
}

/* GLSL ce_row_max(base, j0, js) and ce_row_sumexp(base, j0, js, m): the
 * max, and the sum of exp(x - m), of the logits (ld0) base + j for j = j0,
 * j0 + js, ... < C, four elements an iteration (fewer loop iterations:
 * lavapipe's limit above), the sum in element order. */
static void ce_row_fns_at(tg_gen *g, int64_t C, int in) {
    unsigned long long c = (unsigned long long)C;
    tg_sb_printf(&g->b, "#define CE_LD(i) ld%d(i)\n", in);
    tg_sb_printf(
        &g->b,
        "float ce_row_max(uint base, uint j0, uint js) {\n"
        "    float m = uintBitsToFloat(0xff800000u);\n"
        "    uint j = j0;\n"
        "    for (; j + 3u * js < %lluu; j += 4u * js)\n"
        "        m = tg_maxf(tg_maxf(m, tg_maxf(CE_LD(base + j), CE_LD(base + j + js))),\n"
        "                    tg_maxf(CE_LD(base + j + 2u * js), CE_LD(base + j + 3u * js)));\n"
        "    for (; j < %lluu; j += js) m = tg_maxf(m, CE_LD(base + j));\n"
        "    return m;\n"
        "}\n"
        "float ce_row_sumexp(uint base, uint j0, uint js, float m) {\n"
        "    float s = 0.0;\n"
        "    uint j = j0;\n"
        "    for (; j + 3u * js < %lluu; j += 4u * js) {\n"
        "        s += exp(CE_LD(base + j) - m);\n"
        "        s += exp(CE_LD(base + j + js) - m);\n"
        "        s += exp(CE_LD(base + j + 2u * js) - m);\n"
        "        s += exp(CE_LD(base + j + 3u * js) - m);\n"
        "    }\n"
        "    for (; j < %lluu; j += js) s += exp(CE_LD(base + j) - m);\n"
        "    return s;\n"
        "}\n",
        c, c, c, c);
    if (!tg_gen_ce_v4(g, C, in)) return;
    tg_sb_printf(&g->b,
                 "float ce_row_max4(uint base) {\n"
                 "    float m = uintBitsToFloat(0xff800000u);\n"
                 "    for (uint c = 0u; c < %lluu; c++) {\n"
                 "        vec4 v = tf%d(int((base >> 2) + c));\n"
                 "        m = tg_maxf(tg_maxf(m, tg_maxf(v.x, v.y)), tg_maxf(v.z, v.w));\n"
                 "    }\n"
                 "    return m;\n"
                 "}\n"
                 "float ce_row_sumexp4(uint base, float m) {\n"
                 "    float s = 0.0;\n"
                 "    for (uint c = 0u; c < %lluu; c++) {\n"
                 "        vec4 e = exp(tf%d(int((base >> 2) + c)) - m);\n"
                 "        s += e.x;\n        s += e.y;\n        s += e.z;\n        s += e.w;\n"
                 "    }\n"
                 "    return s;\n"
                 "}\n",
                 c / 4, in, c / 4, in);
}

void tg_gen_ce_row_fns(tg_gen *g, int64_t C) {
    ce_row_fns_at(g, C, 0);
}

bool tg_gen_ce_v4(const tg_gen *g, int64_t C, int in) {
    return C % 4 == 0 && in >= 0 && in < 64 && (g->vec4_inputs >> in & 1u);
}

uint32_t tg_gen_ce_v4_mask(const tg_vk_caps *caps, const tg_kernel *k, int in, int64_t C) {
    if (caps->device_class != TG_VK_CLASS_CPU || C % 4 != 0 || in < 0 || in >= 32 ||
        !tg_gen_texel_input_ok(caps, k, in, true))
        return 0;
    return 1u << in;
}

/* Loop iterations of one invocation of the cross_entropy kernel: rows
 * per invocation (serial) or all rows, each two row passes (and, walked
 * together, two workgroup reductions of at most wg iterations). */
/* The end of a loss over partial sums (kernel scratch): workgroup w
 * stores its sum and count (GLSL variables `total` and `count`, already
 * summed over the workgroup) in scr[w]; the last workgroup to finish adds
 * them in order and stores sum / count in output jo, then resets the
 * count of finished workgroups. np is a loop bound, not an if: llvmpipe
 * runs an if's body masked in every workgroup, a loop's once. Closes the
 * function. */
static void ce_emit_partials(tg_gen *g, uint64_t groups, int jo, const char *total,
                             const char *count) {
    tg_sb_printf(&g->b, "    if (l == 0u) scr[w] = vec4(%s, %s, 0.0, 0.0);\n", total, count);
    tg_gen_scratch_last(g, groups);
    tg_sb_printf(&g->b,
                 "    uint np = tg_scr_last && l == 0u ? %lluu : 0u;\n"
                 "    vec2 sum = vec2(0.0);\n"
                 "    for (uint p = 0u; p < np; p++) sum += imageLoad(scr_t, int(1u + p)).xy;\n"
                 "    for (uint i = 0u; i < min(np, 1u); i++)\n"
                 "        st%d(0u, sum.y > 0.0 ? sum.x / sum.y : 0.0);\n",
                 (unsigned long long)groups, jo);
    tg_gen_scratch_done(g);
    tg_sb_printf(&g->b, "}\n");
}

/* Workgroups of a cross_entropy loss: one for all rows, or on CPU
 * devices that can keep scratch memory, with serial rows, one per wg rows
 * (at most CE_MAX_PARTIALS) that each add their rows and the last of
 * which adds the partial sums (one workgroup ran on one thread: charlm's
 * 1024 x 96 loss, 372 us single-threaded, took 464 us with two). */
#define CE_MAX_PARTIALS 64
#define CE_PARTIAL_WG 128 /* the workgroup size then */
static uint64_t ce_loss_groups(const tg_vk_caps *caps, bool serial, int64_t rows, uint32_t wg) {
    if (!serial || caps->device_class != TG_VK_CLASS_CPU || !caps->storage_texel || wg == 0)
        return 1;
    uint64_t n = ((uint64_t)rows + wg - 1) / wg;
    return n < 2 ? 1 : n > CE_MAX_PARTIALS ? CE_MAX_PARTIALS : n;
}

static int64_t ce_iters(bool serial, int64_t rows, int64_t C, uint32_t wg) {
    if (serial) return (rows + wg - 1) / wg * (1 + 2 * tg_gen_ce_row_iters(C, 1)) + 2 * (int64_t)wg;
    return rows * (1 + 2 * tg_gen_ce_row_iters(C, wg) + 2 * (int64_t)wg);
}

/* cross_entropy (logits = ld0, labels = ld1) -> the mean over counted
 * rows of logsumexp(row) - row[label]. One workgroup: the result is one
 * number, and a kernel is one dispatch with no scratch buffer for partial
 * sums, so only one workgroup can combine all rows, deterministically.
 * Serial (CPU devices, where a workgroup runs on one thread anyway and
 * barriers are dear, or short rows): invocation l owns rows l, l + WG,
 * ... and walks each row alone; the workgroup sums the invocations'
 * totals and counts once at the end. Otherwise the workgroup walks the
 * rows together (coalesced reads, two reductions per row). Either way the
 * order of the sum is fixed. */
/* Emits the cross_entropy loss as `void fn()` (serial or not, as above)
 * reading logits from input li, labels from input yi, storing output jo:
 * the kernel of its own (main) or the loss part of the cross-entropy pair
 * (gen_cross_entropy_pair). The row functions must be emitted first. */
static tg_status emit_cross_entropy(tg_gen *g, const tg_node *n, bool serial, const char *fn,
                                    int li, int yi, int jo, uint64_t groups) {
    const tg_graph *gr = g->k->g;
    const tg_node *x = &gr->nodes[n->inputs[0]], *y = &gr->nodes[n->inputs[1]];
    int64_t C = x->shape[x->rank - 1], rows = tg_shape_count(y->rank, y->shape);
    bool partials = serial && groups > 1;
    if (g->caps->device_class == TG_VK_CLASS_CPU &&
        ce_iters(serial, rows, C, g->wg * (uint32_t)(partials ? groups : 1)) > CPU_LOOP_LIMIT)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "cross_entropy of %lld rows x %lld classes: over the %d loop "
                            "iterations an invocation may run on this CPU device",
                            (long long)rows, (long long)C, CPU_LOOP_LIMIT);
    char skip[96];
    tg_gen_ce_skip(skip, sizeof skip, "lab", n->attrs.ignore_index, C);
    tg_sb *b = &g->b;
    bool v4 = serial && tg_gen_ce_v4(g, C, li);
    if (partials) {
        tg_status st = tg_gen_scratch(g, groups);
        if (st != TG_OK) return st;
        tg_sb_printf(b,
                     "#define ROW_MAX(x) (x)\n#define ROW_SUM(x) (x)\n"
                     "void %s(uint w) {\n"
                     "    uint l = gl_LocalInvocationID.x;\n"
                     "    const uint r0 = w * %uu + l, rstep = %lluu, j0 = 0u, jstep = 1u;\n",
                     fn, g->wg, (unsigned long long)groups * g->wg);
    } else if (serial)
        tg_sb_printf(b,
                     "#define ROW_MAX(x) (x)\n#define ROW_SUM(x) (x)\n"
                     "void %s() {\n"
                     "    uint l = gl_LocalInvocationID.x;\n"
                     "    const uint r0 = l, rstep = %uu, j0 = 0u, jstep = 1u;\n",
                     fn, g->wg);
    else
        tg_sb_printf(b,
                     "#define ROW_MAX(x) tg_wg_max(x)\n#define ROW_SUM(x) tg_wg_sum(x)\n"
                     "void %s() {\n"
                     "    uint l = gl_LocalInvocationID.x;\n"
                     "    const uint r0 = 0u, rstep = 1u, j0 = l, jstep = %uu;\n",
                     fn, g->wg);
    tg_sb_printf(b,
                 "    float total = 0.0, cnt = 0.0;\n"
                 "    for (uint r = r0; r < %lluu; r += rstep) {\n"
                 "        int lab = ld%d(r);\n" /* uniform when the workgroup walks the row */
                 "        if (%s) continue;\n"
                 "        uint base = r * %lluu;\n"
                 "        float m = ROW_MAX(%s);\n"
                 "        float s = ROW_SUM(%s);\n"
                 "        total += m + log(s) - ld%d(base + uint(lab));\n"
                 "        cnt += 1.0;\n"
                 "    }\n",
                 (unsigned long long)rows, yi, skip, (unsigned long long)C,
                 v4 ? "ce_row_max4(base)" : "ce_row_max(base, j0, jstep)",
                 v4 ? "ce_row_sumexp4(base, m)" : "ce_row_sumexp(base, j0, jstep, m)", li);
    if (serial) tg_sb_printf(b, "    total = tg_wg_sum(total);\n    cnt = tg_wg_sum(cnt);\n");
    if (partials) { /* workgroup w's sums in scr[w], added by the last */
        ce_emit_partials(g, groups, jo, "total", "cnt");
        tg_sb_printf(b, "#undef ROW_MAX\n#undef ROW_SUM\n");
        return TG_OK;
    }
    tg_sb_printf(b,
                 "    if (l == 0u) st%d(0u, cnt > 0.0 ? total / cnt : 0.0);\n}\n"
                 "#undef ROW_MAX\n#undef ROW_SUM\n",
                 jo);
    return TG_OK;
}

static tg_status gen_cross_entropy(tg_gen *g, const tg_node *n, bool serial) {
    const tg_node *x = &g->k->g->nodes[n->inputs[0]], *y = &g->k->g->nodes[n->inputs[1]];
    tg_gen_ce_row_fns(g, x->shape[x->rank - 1]);
    uint64_t groups = ce_loss_groups(g->caps, serial, tg_shape_count(y->rank, y->shape), g->wg);
    if (groups == 1) {
        tg_status st = emit_cross_entropy(g, n, serial, "main", 0, 1, 0, 1);
        return st == TG_OK ? tg_gen_finish(g, 1) : st;
    }
    tg_status st = emit_cross_entropy(g, n, serial, "ce_loss", 0, 1, 0, groups);
    if (st != TG_OK) return st;
    tg_sb_printf(&g->b,
                 "void main() {\n"
                 "    uint w = tg_group();\n" /* uniform over the workgroup */
                 "    if (w < %lluu) ce_loss(w);\n"
                 "}\n",
                 (unsigned long long)groups);
    return tg_gen_finish(g, groups);
}

/* The attention score function (gen_common.h); used by gen_grad.c too. */
void tg_gen_attention_score(tg_gen *g, const tg_node *n) {
    const tg_graph *gr = g->k->g;
    const tg_node *q = &gr->nodes[n->inputs[0]], *kk = &gr->nodes[n->inputs[1]],
                  *v = &gr->nodes[n->inputs[2]];
    bool has_mask = n->attrs.has_mask && n->n_inputs > 3;
    int br = n->rank - 2;
    int64_t Tq = q->shape[q->rank - 2], D = q->shape[q->rank - 1], Tk = kk->shape[kk->rank - 2];
    tg_sb *b = &g->b;
    const tg_node *ops[3] = {q, kk, v};
    const char *names[3] = {"q_off", "k_off", "v_off"};
    for (int t = 0; t < 3; t++) {
        int64_t s[TG_MAX_RANK];
        const tg_node *x = ops[t];
        tg_gen_bcast_strides(x->rank - 2, x->shape, br, n->shape, s);
        for (int d = 0; d < br; d++) s[d] *= x->shape[x->rank - 2] * x->shape[x->rank - 1];
        tg_gen_offset_fn(b, names[t], br, n->shape, s, 0);
    }
    if (has_mask) {
        const tg_node *m = &gr->nodes[n->inputs[3]];
        int64_t full[TG_MAX_RANK], s[TG_MAX_RANK];
        for (int d = 0; d < br; d++) full[d] = n->shape[d];
        full[br] = Tq;
        full[br + 1] = Tk;
        tg_gen_bcast_strides(m->rank, m->shape, br + 2, full, s);
        tg_gen_offset_fn(b, "mask_off", br + 2, full, s, 0);
    }
    char scale[64];
    tg_gen_flit(n->attrs.scale > 0 ? n->attrs.scale : 1.0 / sqrt((double)D), scale, sizeof scale);
    tg_sb_printf(b, "shared float sq[%lld];\n", (long long)(D ? D : 1));
    /* att_score reads the query row from sq, att_score_q from q at qo */
    for (int from_q = 0; from_q < 2; from_q++) {
        tg_sb_printf(b,
                     "float att_score%s(uint row, %suint ko, uint j) {\n"
                     "    float s = 0.0;\n"
                     "    for (uint d = 0u; d < %lluu; d++) s += %s * ld1(ko + j * %lluu + d);\n"
                     "    s *= %s;\n",
                     from_q ? "_q" : "", from_q ? "uint qo, " : "", (unsigned long long)D,
                     from_q ? "ld0(qo + d)" : "sq[d]", (unsigned long long)D, scale);
        if (has_mask)
            tg_sb_printf(b, "    s += ld3(mask_off(row * %lluu + j));\n", (unsigned long long)Tk);
        tg_sb_printf(b, "    return s;\n}\n");
    }
}

static tg_status gen_attention(tg_gen *g, const tg_node *n) {
    const tg_graph *gr = g->k->g;
    const tg_node *q = &gr->nodes[n->inputs[0]], *kk = &gr->nodes[n->inputs[1]],
                  *v = &gr->nodes[n->inputs[2]];
    int64_t Tq = q->shape[q->rank - 2], D = q->shape[q->rank - 1], Tk = kk->shape[kk->rank - 2];
    int64_t Dv = v->shape[v->rank - 1], batches = prod(n->shape, 0, n->rank - 2);
    uint32_t wg = g->wg;
    tg_sb *b = &g->b;

    /* shared memory: the query row, a chunk of scores, the reductions' slots */
    int64_t budget = (int64_t)g->caps->max_shared_memory_bytes / 4 - 2 * (int64_t)wg - D - 64;
    if (budget < 32)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "attention: a head dim of %lld does not fit %u bytes of shared memory",
                            (long long)D, g->caps->max_shared_memory_bytes);
    int64_t ch = Tk < budget ? Tk : budget;
    if (ch > 2048) ch = 2048;
    if (ch < 1) ch = 1;
    int64_t ndt = (Dv + wg - 1) / wg;
    if (ndt < 1) ndt = 1;

    tg_gen_attention_score(g, n);
    tg_sb_printf(b,
                 "shared float sp[%lld];\n"
                 "void main() {\n"
                 "    uint gid = tg_group();\n"
                 "    if (gid >= %lluu) return;\n" /* uniform over the workgroup */
                 "    uint l = gl_LocalInvocationID.x;\n"
                 "    uint bb = gid / %lluu, i = gid %% %lluu;\n"
                 "    uint qo = q_off(bb) + i * %lluu, ko = k_off(bb), vo = v_off(bb);\n"
                 "    for (uint d = l; d < %lluu; d += %uu) sq[d] = ld0(qo + d);\n"
                 "    barrier();\n"
                 "    const float NEG_INF = uintBitsToFloat(0xff800000u);\n"
                 "    float M = NEG_INF, L = 0.0;\n"
                 "    float acc[%lld];\n"
                 "    for (int t = 0; t < %lld; t++) acc[t] = 0.0;\n",
                 (long long)ch, (unsigned long long)(batches * Tq), (unsigned long long)Tq,
                 (unsigned long long)Tq, (unsigned long long)D, (unsigned long long)D, wg,
                 (long long)ndt, (long long)ndt);
    if (n->attrs.causal)
        tg_sb_printf(b, "    uint nk = uint(clamp(int(i) + %lld, 0, %lld));\n",
                     (long long)(Tk - Tq + 1), (long long)Tk);
    else
        tg_sb_printf(b, "    uint nk = %lluu;\n", (unsigned long long)Tk);
    tg_sb_printf(b,
                 "    for (uint c0 = 0u; c0 < nk; c0 += %lluu) {\n"
                 "        uint cn = min(%lluu, nk - c0);\n"
                 "        float cm = NEG_INF;\n"
                 "        for (uint jj = l; jj < cn; jj += %uu) {\n"
                 "            float s = att_score(gid, ko, c0 + jj);\n"
                 "            sp[jj] = s;\n"
                 "            cm = tg_maxf(cm, s);\n"
                 "        }\n"
                 "        cm = tg_wg_max(cm);\n" /* its barriers also publish sp */
                 "        float Mn = max(M, cm);\n"
                 "        float keep = Mn == NEG_INF ? 1.0 : exp(M - Mn);\n"
                 "        float ps = 0.0;\n"
                 "        for (uint jj = l; jj < cn; jj += %uu) {\n"
                 "            float p = Mn == NEG_INF ? 0.0 : exp(sp[jj] - Mn);\n"
                 "            sp[jj] = p;\n"
                 "            ps += p;\n"
                 "        }\n"
                 "        ps = tg_wg_sum(ps);\n"
                 "        L = L * keep + ps;\n"
                 "        for (int t = 0; t < %lld; t++) {\n"
                 "            uint d = l + uint(t) * %uu;\n"
                 "            if (d >= %lluu) break;\n"
                 "            float a = acc[t] * keep;\n"
                 "            for (uint jj = 0u; jj < cn; jj++) a += sp[jj] * ld2(vo + (c0 + jj) * "
                 "%lluu + d);\n"
                 "            acc[t] = a;\n"
                 "        }\n"
                 "        M = Mn;\n"
                 "        barrier();\n" /* sp is rewritten by the next chunk */
                 "    }\n"
                 "    for (int t = 0; t < %lld; t++) {\n"
                 "        uint d = l + uint(t) * %uu;\n"
                 "        if (d < %lluu) st0(gid * %lluu + d, L > 0.0 ? acc[t] / L : 0.0);\n"
                 "    }\n}\n",
                 (unsigned long long)ch, (unsigned long long)ch, wg, wg, (long long)ndt, wg,
                 (unsigned long long)Dv, (unsigned long long)Dv, (long long)ndt, wg,
                 (unsigned long long)Dv, (unsigned long long)Dv);
    return tg_gen_finish(g, (uint64_t)(batches * Tq));
}

/* ---- the layer norm backward as one kernel (passes/fusion.c,
 * merge_norm_grads): layer_norm_grad_x (dy, x, w) with, optionally, its
 * layer_norm_grad_wb sibling (dy, x) -> [2, D], the slices of its two rows,
 * elementwise members computed per element from dx (the residual add) and
 * sums of dx or of such a member over every axis but the last (bias
 * gradients).
 *
 * The grid is the column workgroups first, then the row workgroups. Row
 * workgroups compute dx as layer_norm_grad_x's kernel does (one invocation
 * per row for short rows, else a workgroup per row) and store dx and the
 * elementwise outputs. Column workgroups (CPU devices: one for all
 * columns; else one per WG columns) compute the sums over rows as
 * layer_norm_grad_wb's kernel does: rows in chunks of WG, invocation l
 * computing chunk row l's mean and inv (and, for the sums of dx, mean(g)
 * and mean(g xhat), g = dy w) into shared memory, then every invocation
 * adding the chunk's rows to its own columns; dx is recomputed there for
 * the sums. The column workgroup runs beside the row workgroups.
 *
 * On CPU devices with short rows of whole vec4s ("partials", the charlm
 * shape) there is no column workgroup: its single workgroup was the
 * kernel's critical path (charlm's 1024 x 64, single-threaded: columns
 * 283 us, all rows 163 us). Each row workgroup instead keeps its rows'
 * statistics in scratch memory (tg_gen_scratch), adds its own rows to the
 * column sums (lanes over column quads, as the column workgroup did) and
 * stores that partial sum; the last workgroup to finish (a count in the
 * scratch) adds every partial in a fixed order and stores the sums.
 * Timed alone: 466 -> ~240 us single-threaded, 330 -> ~150 us on two
 * threads. */

#define LNB_MAX_COLS 8
#define LNB_MAX_SUMS 4
#define LNB_MAX_PARTIALS 4096 /* partial sums the last workgroup adds */

typedef struct lnb_kernel {
    const tg_node *x_node; /* layer_norm_grad_x */
    int32_t x_id, wb_id;   /* wb_id -1: none */
    int dy, x, w;          /* kernel input indices */
    int n_elem;            /* elementwise members */
    int32_t elem[TG_KERNEL_MAX_IO * 4];
    int n_sums;
    int32_t sum_in[LNB_MAX_SUMS]; /* per sum: its input (x_id or a member) */
    int sum_out[LNB_MAX_SUMS];    /* its output index */
    int n_copies;                 /* sums over axes of extent 1 */
    int32_t copy_id[LNB_MAX_SUMS], copy_in[LNB_MAX_SUMS];
    bool v4; /* inputs are vec4 texel views t<i> (vec4_texel_inputs) */
    /* row workgroups add their rows into partial sums (see above):
     * stats_at is the vec4 index in scr[] of row 0's statistics */
    bool partials;
    uint64_t stats_at;
} lnb_kernel;

/* On CPUs, the input mask for vec4 texel views of every input, or 0 when
 * one cannot have one (tg_gen_texel_input_ok). */
static uint32_t vec4_texel_inputs(const tg_vk_caps *caps, const tg_kernel *k) {
    if (caps->device_class != TG_VK_CLASS_CPU || k->n_inputs > 32) return 0;
    uint32_t mask = 0;
    for (int i = 0; i < k->n_inputs; i++) {
        if (!tg_gen_texel_input_ok(caps, k, i, true)) return 0;
        mask |= 1u << i;
    }
    return mask;
}

/* A sum over axes of extent 1 only: a copy of its input. */
static bool sum_is_copy(const tg_graph *gr, const tg_node *n) {
    const tg_node *in = &gr->nodes[n->inputs[0]];
    return n->op == TG_OP_SUM &&
           tg_shape_count(n->rank, n->shape) == tg_shape_count(in->rank, in->shape);
}

/* What each member and output of kernel k is; an error for anything else. */
static tg_status lnb_describe(const tg_kernel *k, lnb_kernel *d) {
    const tg_graph *gr = k->g;
    memset(d, 0, sizeof *d);
    d->x_id = d->wb_id = -1;
    for (int i = 0; i < k->n_nodes; i++) {
        int32_t id = k->nodes[i];
        const tg_node *n = &gr->nodes[id];
        if (n->op == TG_OP_LAYER_NORM_GRAD_X && d->x_id < 0) {
            d->x_id = id;
            d->x_node = n;
        } else if (n->op == TG_OP_LAYER_NORM_GRAD_WB && d->wb_id < 0)
            d->wb_id = id;
        else if (sum_is_copy(gr, n) && d->n_copies < LNB_MAX_SUMS) {
            d->copy_id[d->n_copies] = id;
            d->copy_in[d->n_copies++] = n->inputs[0];
        } else if (n->op == TG_OP_SUM && !sum_is_copy(gr, n) && d->n_sums < LNB_MAX_SUMS)
            d->sum_in[d->n_sums++] = n->inputs[0];
        else if (tg_ops[n->op].klass == TG_CLASS_ELEMENTWISE &&
                 d->n_elem < (int)(sizeof d->elem / sizeof d->elem[0]))
            d->elem[d->n_elem++] = id;
        else if (n->op != TG_OP_SLICE)
            return tg_set_error(TG_ERR_UNSUPPORTED, "layer norm backward kernel: member %d (%s)",
                                (int)id, tg_ops[n->op].name);
    }
    if (d->x_id < 0)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "layer norm backward kernel without layer_norm_grad_x");
    const tg_node *xn = d->x_node;
    d->dy = tg_gen_input_index(k, xn->inputs[0]);
    d->x = tg_gen_input_index(k, xn->inputs[1]);
    d->w = tg_gen_input_index(k, xn->inputs[2]);
    const tg_node *wb = d->wb_id >= 0 ? &gr->nodes[d->wb_id] : NULL;
    if (d->dy < 0 || d->x < 0 || d->w < 0 || xn->rank < 1 ||
        (wb && (wb->inputs[0] != xn->inputs[0] || wb->inputs[1] != xn->inputs[1])))
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "layer norm backward kernel %d: dy, x and w must be kernel inputs "
                            "shared by its layer_norm_grad_wb",
                            (int)d->x_id);
    int s = 0;
    for (int i = 0; i < k->n_nodes; i++)
        if (gr->nodes[k->nodes[i]].op == TG_OP_SUM && !sum_is_copy(gr, &gr->nodes[k->nodes[i]])) {
            d->sum_out[s] = -1;
            for (int j = 0; j < k->n_outputs; j++)
                if (k->outputs[j] == k->nodes[i]) d->sum_out[s] = j;
            if (d->sum_out[s] < 0)
                return tg_set_error(TG_ERR_UNSUPPORTED,
                                    "layer norm backward kernel: sum %d is not an output",
                                    (int)k->nodes[i]);
            s++;
        }
    return TG_OK;
}

/* What the row part stores as output j: false for a column output; else
 * *fn is the member function of (element, dx) it stores, or "" for dx
 * itself. */
static bool lnb_row_output(const tg_kernel *k, const lnb_kernel *d, int j, char fn[32]) {
    int32_t o = k->outputs[j];
    fn[0] = '\0';
    if (o == d->x_id) return true;
    for (int e = 0; e < d->n_elem; e++)
        if (o == d->elem[e]) {
            snprintf(fn, 32, "lnb_e%d", j);
            return true;
        }
    for (int s = 0; s < d->n_copies; s++)
        if (o == d->copy_id[s]) {
            if (d->copy_in[s] != d->x_id) snprintf(fn, 32, "lnb_c%d", s);
            return true;
        }
    return false;
}

/* The outputs at element base + c of a row, given its dx. */
static void lnb_emit_row_stores(tg_sb *b, const tg_kernel *k, const lnb_kernel *d) {
    char fn[32];
    for (int j = 0; j < k->n_outputs; j++)
        if (lnb_row_output(k, d, j, fn) && !fn[0])
            tg_sb_printf(b, "        st%d(base + c, dx);\n", j);
        else if (fn[0])
            tg_sb_printf(b, "        st%d(base + c, %s(base + c, dx));\n", j, fn);
}

/* The row outputs as vec4s at texel base4 + c4 of their vec4 views o4_<j>,
 * given the quad's dx4, when lnb_row_quads holds: lavapipe runs every
 * storage-buffer store as a loop over the lanes, whatever its width. */
static void lnb_emit_row_stores4(tg_sb *b, const tg_kernel *k, const lnb_kernel *d) {
    char fn[32];
    for (int j = 0; j < k->n_outputs; j++) {
        if (!lnb_row_output(k, d, j, fn)) continue; /* a column output */
        if (!fn[0]) {
            tg_sb_printf(b, "        o4_%d[base4 + c4] = dx4;\n", j);
            continue;
        }
        tg_sb_printf(b, "        o4_%d[base4 + c4] = vec4(", j);
        for (int c = 0; c < 4; c++)
            tg_sb_printf(b, "%s%s(base + 4u * c4 + %du, dx4[%d])", c ? ", " : "", fn, c, c);
        tg_sb_printf(b, ");\n");
    }
}

/* Whether the row part stores its outputs as vec4s: every output f32 in
 * f32 storage (the row is whole vec4s where the inputs are, d->v4). */
static bool lnb_row_quads(const tg_kernel *k, const lnb_kernel *d) {
    if (!d->v4) return false;
    for (int j = 0; j < k->n_outputs; j++)
        if (!tg_gen_output_f32(k, j)) return false;
    return true;
}

/* The statistics of the row at `base` (whole vec4s at base4) as the
 * column part computes them: mean, inv, and with `grads` mg and mgx
 * (vec4 texel views, lnb_kernel.v4). */
static void lnb_emit_stats_v4(tg_sb *b, const lnb_kernel *d, int64_t D, const char *dl,
                              const char *el, bool grads, const char *ind) {
    typedef unsigned long long ull;
    tg_sb_printf(b,
                 "%sfloat s = 0.0;\n"
                 "%sfor (uint c = 0u; c < %lluu; c++) {\n"
                 "%s    vec4 v = tf%d(int(base4 + c));\n"
                 "%s    s += (v.x + v.y) + (v.z + v.w);\n"
                 "%s}\n"
                 "%sfloat mean = s / %s, q = 0.0;\n"
                 "%sfor (uint c = 0u; c < %lluu; c++) {\n"
                 "%s    vec4 e = tf%d(int(base4 + c)) - mean;\n"
                 "%s    q += (e.x * e.x + e.y * e.y) + (e.z * e.z + e.w * e.w);\n"
                 "%s}\n"
                 "%sfloat inv = 1.0 / sqrt(q / %s + %s);\n",
                 ind, ind, (ull)(D / 4), ind, d->x, ind, ind, ind, dl, ind, (ull)(D / 4), ind, d->x,
                 ind, ind, ind, dl, el);
    if (!grads) return;
    tg_sb_printf(b,
                 "%sfloat sg = 0.0, sgx = 0.0;\n"
                 "%sfor (uint c = 0u; c < %lluu; c++) {\n"
                 "%s    vec4 gc = tf%d(int(base4 + c)) * tf%d(int(c));\n"
                 "%s    vec4 gx = gc * (tf%d(int(base4 + c)) - mean) * inv;\n"
                 "%s    sg += gc.x; sg += gc.y; sg += gc.z; sg += gc.w;\n"
                 "%s    sgx += gx.x; sgx += gx.y; sgx += gx.z; sgx += gx.w;\n"
                 "%s}\n",
                 ind, ind, (ull)(D / 4), ind, d->dy, d->w, ind, d->x, ind, ind, ind);
}

/* The row part on CPUs with vec4 texel views: one invocation a row. */
static void lnb_emit_rows_v4(tg_gen *g, const lnb_kernel *d, int64_t D, const char *dl,
                             const char *el) {
    tg_sb *b = &g->b;
    tg_sb_printf(b, "    uint base = r * %lluu, base4 = base >> 2;\n", (unsigned long long)D);
    lnb_emit_stats_v4(b, d, D, dl, el, true, "    ");
    tg_sb_printf(b, "    float mg = sg / %s, mgx = sgx / %s;\n", dl, dl);
    if (d->partials)
        tg_sb_printf(b, "    scr[%lluu + r] = vec4(mean, inv, mg, mgx);\n",
                     (unsigned long long)d->stats_at);
    tg_sb_printf(b,
                 "    for (uint c4 = 0u; c4 < %lluu; c4++) {\n"
                 "        vec4 xhat4 = (tf%d(int(base4 + c4)) - mean) * inv;\n"
                 "        vec4 dx4 = inv * (tf%d(int(base4 + c4)) * "
                 "tf%d(int(c4)) - mg - xhat4 * mgx);\n",
                 (unsigned long long)(D / 4), d->x, d->dy, d->w);
    if (lnb_row_quads(g->k, d))
        lnb_emit_row_stores4(b, g->k, d);
    else
        for (int cc = 0; cc < 4; cc++) {
            tg_sb_printf(b, "        { uint c = 4u * c4 + %du; float dx = dx4[%d];\n", cc, cc);
            lnb_emit_row_stores(b, g->k, d);
            tg_sb_printf(b, "        }\n");
        }
    tg_sb_printf(b, "    }\n}\n#undef WG_SUM\n");
}

/* The row part: dx of row r and the outputs computed from it. */
static void lnb_emit_rows(tg_gen *g, const lnb_kernel *d, bool serial, int64_t rows, int64_t D) {
    const tg_kernel *k = g->k;
    tg_sb *b = &g->b;
    char dl[64], el[64];
    tg_gen_flit((double)D, dl, sizeof dl);
    tg_gen_flit(d->x_node->attrs.eps, el, sizeof el);
    if (serial && lnb_row_quads(k, d))
        for (int j = 0; j < k->n_outputs; j++) tg_gen_vec4_output(b, k, j);
    if (serial)
        tg_sb_printf(b,
                     "#define WG_SUM(x) (x)\n"
                     "void lnb_rows(uint gid) {\n"
                     "    uint r = gid * %uu + gl_LocalInvocationID.x;\n"
                     "    if (r >= %lluu) return;\n"
                     "    const uint l = 0u, step = 1u;\n",
                     g->wg, (unsigned long long)rows);
    else
        tg_sb_printf(b,
                     "#define WG_SUM(x) tg_wg_sum(x)\n"
                     "void lnb_rows(uint gid) {\n"
                     "    uint r = gid;\n" /* uniform over the workgroup */
                     "    uint l = gl_LocalInvocationID.x, step = %uu;\n",
                     g->wg);
    if (serial && d->v4) {
        lnb_emit_rows_v4(g, d, D, dl, el);
        return;
    }
    tg_sb_printf(b,
                 "    uint base = r * %lluu;\n"
                 "    float s = 0.0;\n"
                 "    for (uint c = l; c < %lluu; c += step) s += ld%d(base + c);\n"
                 "    float mean = WG_SUM(s) / %s;\n"
                 "    float q = 0.0;\n"
                 "    for (uint c = l; c < %lluu; c += step) {\n"
                 "        float e = ld%d(base + c) - mean;\n"
                 "        q += e * e;\n"
                 "    }\n"
                 "    float inv = 1.0 / sqrt(WG_SUM(q) / %s + %s);\n"
                 "    float sg = 0.0, sgx = 0.0;\n"
                 "    for (uint c = l; c < %lluu; c += step) {\n"
                 "        float gc = ld%d(base + c) * ld%d(c);\n"
                 "        sg += gc;\n"
                 "        sgx += gc * (ld%d(base + c) - mean) * inv;\n"
                 "    }\n"
                 "    float mg = WG_SUM(sg) / %s, mgx = WG_SUM(sgx) / %s;\n"
                 "    for (uint c = l; c < %lluu; c += step) {\n"
                 "        float xhat = (ld%d(base + c) - mean) * inv;\n"
                 "        float dx = inv * (ld%d(base + c) * ld%d(c) - mg - xhat * mgx);\n",
                 (unsigned long long)D, (unsigned long long)D, d->x, dl, (unsigned long long)D,
                 d->x, dl, el, (unsigned long long)D, d->dy, d->w, d->x, dl, dl,
                 (unsigned long long)D, d->x, d->dy, d->w);
    lnb_emit_row_stores(b, k, d);
    tg_sb_printf(b, "    }\n}\n#undef WG_SUM\n");
}

/* The column part's outputs at column j: acc names the accumulator
 * element ("[t]", or "[0][c]" for a quad's component c). */
static void lnb_emit_col_stores(tg_sb *b, const tg_kernel *k, const lnb_kernel *d, int64_t D,
                                const char *acc) {
    const tg_graph *gr = k->g;
    for (int j = 0; j < k->n_outputs; j++) {
        int32_t o = k->outputs[j];
        const tg_node *on = &gr->nodes[o];
        if (o == d->wb_id)
            tg_sb_printf(b, "        st%d(j, aw%s);\n        st%d(%lluu + j, ab%s);\n", j, acc, j,
                         (unsigned long long)D, acc);
        else if (on->op == TG_OP_SLICE && on->inputs[0] == d->wb_id)
            tg_sb_printf(b, "        st%d(j, %s%s);\n", j, on->attrs.begin[0] == 0 ? "aw" : "ab",
                         acc);
    }
    for (int s = 0; s < d->n_sums; s++)
        tg_sb_printf(b, "        st%d(j, as%d%s);\n", d->sum_out[s], s, acc);
}

/* One quad of columns j0 of a row at `base` (row statistics mean, inv,
 * mg, mgx in scope) added into the column sums aw, ab and as<s> (each
 * followed by `acc`: "[0]" or ""), at indentation `ind`: the column
 * workgroup's quad path and the row workgroups' partial sums. */
static void lnb_emit_quad_sums(tg_sb *b, const lnb_kernel *d, const char *ind, const char *acc) {
    tg_sb_printf(b,
                 "%suint i4 = (base >> 2) + j0;\n"
                 "%svec4 dy = tf%d(int(i4));\n"
                 "%svec4 xhat = (tf%d(int(i4)) - mean) * inv;\n"
                 "%saw%s += dy * xhat;\n"
                 "%sab%s += dy;\n",
                 ind, ind, d->dy, ind, d->x, ind, acc, ind, acc);
    if (d->n_sums) tg_sb_printf(b, "%svec4 dx = inv * (dy * w4 - mg - xhat * mgx);\n", ind);
    for (int s = 0; s < d->n_sums; s++)
        if (d->sum_in[s] == d->x_id)
            tg_sb_printf(b, "%sas%d%s += dx;\n", ind, s, acc);
        else
            tg_sb_printf(b,
                         "%sas%d%s += vec4(lnb_s%d(base + 4u * j0, dx.x), "
                         "lnb_s%d(base + 4u * j0 + 1u, dx.y),\n"
                         "%s    lnb_s%d(base + 4u * j0 + 2u, dx.z), "
                         "lnb_s%d(base + 4u * j0 + 3u, dx.w));\n",
                         ind, s, acc, s, s, ind, s, s);
}

/* The column part: the sums over rows of dy xhat and dy (the weight and
 * bias gradients) and of the summed members, for the columns of block
 * blk. */
static void lnb_emit_cols(tg_gen *g, const lnb_kernel *d, int64_t rows, int64_t D, int64_t cpi) {
    const tg_kernel *k = g->k;
    tg_sb *b = &g->b;
    typedef unsigned long long ull;
    ull d4 = (ull)(D / 4 * 4);
    uint32_t wg = g->wg;
    bool sums = d->n_sums > 0;
    /* Fewer columns than half the workgroup: L groups of D lanes share the
     * rows (group q takes rows q, q + L, ...) and add their sums in shared
     * memory at the end, in group order. One group left lanes idle, and
     * this part runs in one workgroup beside all the row workgroups
     * (charlm, 1024 x 64: 1.48 ms of the kernel's 2.25, single-threaded). */
    uint32_t L = cpi == 1 && D <= wg / 2 ? (uint32_t)(wg / D) : 1;
    /* With vec4 views (CPUs), a lane takes a quad of 4 columns: G = D / 4
     * lanes a row, L = wg / G groups, a quarter of the texel fetches (a
     * call each on lavapipe) and of the masked loop's trips. charlm's
     * 1024 x 64 kernel with its sum: 0.82 -> 0.41 ms on two threads. */
    bool q4 = d->v4 && cpi == 1 && D % 4 == 0 && D / 4 <= wg / 2;
    if (q4) L = (uint32_t)(wg / (D / 4));
    ull G = q4 ? (ull)(D / 4) : L > 1 ? (ull)D : (ull)wg; /* lanes a group */
    int n_red = 2 + d->n_sums;
    if (L > 1)
        tg_sb_printf(b, "shared %s s_red[%u];\n", q4 ? "vec4" : "float", (uint32_t)n_red * wg);
    char dl[64], el[64];
    tg_gen_flit((double)D, dl, sizeof dl);
    tg_gen_flit(d->x_node->attrs.eps, el, sizeof el);
    tg_sb_printf(b, "shared float s_mean[%u], s_inv[%u];\n", wg, wg);
    if (sums)
        tg_sb_printf(b,
                     "shared float s_mg[%u], s_mgx[%u];\n"
                     "void lnb_g(uint base, uint c, float mean, float inv, inout float sg,\n"
                     "           inout float sgx) {\n"
                     "    float gc = ld%d(base + c) * ld%d(c);\n"
                     "    sg += gc;\n"
                     "    sgx += gc * (ld%d(base + c) - mean) * inv;\n"
                     "}\n",
                     wg, wg, d->dy, d->w, d->x);
    tg_sb_printf(b,
                 "void lnb_cols(uint blk) {\n"
                 "    uint l = gl_LocalInvocationID.x, j0 = blk * %lluu + l %% %lluu;\n"
                 "    uint q0 = l / %lluu;\n" /* the lane's group: its first row */
                 "    %s aw[%lld], ab[%lld];\n"
                 "    for (int t = 0; t < %lld; t++) { aw[t] = %s(0.0); ab[t] = %s(0.0); }\n",
                 (ull)((int64_t)wg * cpi), G, G, q4 ? "vec4" : "float", (long long)cpi,
                 (long long)cpi, (long long)cpi, q4 ? "vec4" : "float", q4 ? "vec4" : "float");
    for (int s = 0; s < d->n_sums; s++)
        tg_sb_printf(b,
                     "    %s as%d[%lld];\n"
                     "    for (int t = 0; t < %lld; t++) as%d[t] = %s(0.0);\n",
                     q4 ? "vec4" : "float", s, (long long)cpi, (long long)cpi, s,
                     q4 ? "vec4" : "float");
    if (q4 && sums) tg_sb_printf(b, "    vec4 w4 = tf%d(int(j0));\n", d->w);
    if (d->v4) {
        tg_sb_printf(b,
                     "    for (uint r0 = 0u; r0 < %lluu; r0 += %uu) {\n"
                     "        if (r0 + l < %lluu) {\n"
                     "            uint base = (r0 + l) * %lluu, base4 = base >> 2;\n",
                     (ull)rows, wg, (ull)rows, (ull)D);
        lnb_emit_stats_v4(b, d, D, dl, el, sums, "            ");
        tg_sb_printf(b, "            s_mean[l] = mean;\n            s_inv[l] = inv;\n");
        if (sums)
            tg_sb_printf(b, "            s_mg[l] = sg / %s;\n            s_mgx[l] = sgx / %s;\n",
                         dl, dl);
    } else {
        tg_sb_printf(
            b,
            "    for (uint r0 = 0u; r0 < %lluu; r0 += %uu) {\n"
            "        if (r0 + l < %lluu) {\n"
            "            uint base = (r0 + l) * %lluu;\n"
            "            float s = 0.0;\n"
            "            for (uint c = 0u; c < %lluu; c += 4u)\n"
            "                s += (ld%d(base + c) + ld%d(base + c + 1u)) +\n"
            "                     (ld%d(base + c + 2u) + ld%d(base + c + 3u));\n"
            "            for (uint c = %lluu; c < %lluu; c++) s += ld%d(base + c);\n"
            "            float mean = s / %s, q = 0.0;\n"
            "            for (uint c = 0u; c < %lluu; c += 4u) {\n"
            "                float e0 = ld%d(base + c) - mean, e1 = ld%d(base + c + 1u) - mean;\n"
            "                float e2 = ld%d(base + c + 2u) - mean, e3 = ld%d(base + c + 3u) - "
            "mean;\n"
            "                q += (e0 * e0 + e1 * e1) + (e2 * e2 + e3 * e3);\n"
            "            }\n"
            "            for (uint c = %lluu; c < %lluu; c++) {\n"
            "                float e = ld%d(base + c) - mean;\n"
            "                q += e * e;\n"
            "            }\n"
            "            float inv = 1.0 / sqrt(q / %s + %s);\n"
            "            s_mean[l] = mean;\n"
            "            s_inv[l] = inv;\n",
            (ull)rows, wg, (ull)rows, (ull)D, d4, d->x, d->x, d->x, d->x, d4, (ull)D, d->x, dl, d4,
            d->x, d->x, d->x, d->x, d4, (ull)D, d->x, dl, el);
        if (sums)
            tg_sb_printf(b,
                         "            float sg = 0.0, sgx = 0.0;\n"
                         "            for (uint c = 0u; c < %lluu; c += 4u) {\n"
                         "                lnb_g(base, c, mean, inv, sg, sgx);\n"
                         "                lnb_g(base, c + 1u, mean, inv, sg, sgx);\n"
                         "                lnb_g(base, c + 2u, mean, inv, sg, sgx);\n"
                         "                lnb_g(base, c + 3u, mean, inv, sg, sgx);\n"
                         "            }\n"
                         "            for (uint c = %lluu; c < %lluu; c++) lnb_g(base, c, mean, "
                         "inv, sg, sgx);\n"
                         "            s_mg[l] = sg / %s;\n"
                         "            s_mgx[l] = sgx / %s;\n",
                         d4, d4, (ull)D, dl, dl);
    }
    tg_sb_printf(b,
                 "        }\n"
                 "        barrier();\n"
                 "        uint nr = min(%uu, %lluu - r0);\n"
                 "        for (uint i = q0; i < nr; i += %uu) {\n"
                 "            uint base = (r0 + i) * %lluu;\n"
                 "            float mean = s_mean[i], inv = s_inv[i];\n",
                 wg, (ull)rows, L, (ull)D);
    if (sums) tg_sb_printf(b, "            float mg = s_mg[i], mgx = s_mgx[i];\n");
    if (q4) {
        tg_sb_printf(b, "            if (q0 < %uu) {\n", L);
        lnb_emit_quad_sums(b, d, "                ", "[0]");
        tg_sb_printf(b, "            }\n");
    }
    for (int64_t t = 0; !q4 && t < cpi; t++) {
        tg_sb_printf(b,
                     "            { uint j = j0 + %lluu;\n"
                     "              if (j < %lluu && q0 < %uu) {\n"
                     "                float dy = ld%d(base + j);\n"
                     "                float xhat = (ld%d(base + j) - mean) * inv;\n"
                     "                aw[%lld] += dy * xhat;\n"
                     "                ab[%lld] += dy;\n",
                     (ull)(t * wg), (ull)D, L, d->dy, d->x, (long long)t, (long long)t);
        if (sums)
            tg_sb_printf(b, "                float dx = inv * (dy * ld%d(j) - mg - xhat * mgx);\n",
                         d->w);
        for (int s = 0; s < d->n_sums; s++)
            if (d->sum_in[s] == d->x_id)
                tg_sb_printf(b, "                as%d[%lld] += dx;\n", s, (long long)t);
            else
                tg_sb_printf(b, "                as%d[%lld] += lnb_s%d(base + j, dx);\n", s,
                             (long long)t, s);
        tg_sb_printf(b, "              } }\n");
    }
    tg_sb_printf(b, "        }\n"
                    "        barrier();\n" /* the next chunk rewrites the shared rows */
                    "    }\n");
    if (L > 1) {
        /* the groups' partial sums, added in group order by group 0 */
        tg_sb_printf(b, "    s_red[l] = aw[0];\n    s_red[%uu + l] = ab[0];\n", wg);
        for (int s2 = 0; s2 < d->n_sums; s2++)
            tg_sb_printf(b, "    s_red[%uu + l] = as%d[0];\n", (2 + s2) * wg, s2);
        tg_sb_printf(b,
                     "    barrier();\n"
                     "    if (q0 != 0u) return;\n"
                     "    for (uint q = 1u; q < %uu; q++) {\n"
                     "        aw[0] += s_red[q * %lluu + l];\n"
                     "        ab[0] += s_red[%uu + q * %lluu + l];\n",
                     L, G, wg, G);
        for (int s2 = 0; s2 < d->n_sums; s2++)
            tg_sb_printf(b, "        as%d[0] += s_red[%uu + q * %lluu + l];\n", s2, (2 + s2) * wg,
                         G);
        tg_sb_printf(b, "    }\n");
    }
    if (q4) {
        /* lane l (group 0) holds columns 4l .. 4l + 3 */
        tg_sb_printf(b, "    for (uint c = 0u; c < 4u; c++) {\n"
                        "        uint j = 4u * j0 + c;\n");
        lnb_emit_col_stores(b, k, d, D, "[0][c]");
        tg_sb_printf(b, "    }\n}\n");
        return;
    }
    tg_sb_printf(b,
                 "    for (int t = 0; t < %lld; t++) {\n"
                 "        uint j = j0 + uint(t) * %uu;\n"
                 "        if (j >= %lluu) continue;\n",
                 (long long)cpi, wg, (ull)D);
    lnb_emit_col_stores(b, k, d, D, "[t]");
    tg_sb_printf(b, "    }\n}\n");
}

/* The sums on CPU devices with partials (see lnb_kernel): workgroup w
 * adds its rows, lanes over column quads j0 and row groups q0 as in the
 * column workgroup's quad path, with the statistics its rows left in
 * scratch; stores its partial sums; and the last workgroup of `groups`
 * adds every partial, in partial order, and stores the sums. */
static void lnb_emit_partials(tg_gen *g, const lnb_kernel *d, int64_t rows, int64_t D,
                              uint64_t groups) {
    typedef unsigned long long ull;
    tg_sb *b = &g->b;
    uint32_t wg = g->wg;
    ull G = (ull)(D / 4), L = wg / G, nv = 2 + (ull)d->n_sums;
    tg_sb_printf(b,
                 "void lnb_part(uint w) {\n"
                 "    uint l = gl_LocalInvocationID.x, j0 = l %% %lluu, q0 = l / %lluu;\n"
                 "    uint nr = q0 < %lluu ? min(%uu, %lluu - w * %uu) : 0u;\n"
                 "    vec4 aw = vec4(0.0), ab = vec4(0.0);\n",
                 G, G, L, wg, (ull)rows, wg);
    for (int s = 0; s < d->n_sums; s++) tg_sb_printf(b, "    vec4 as%d = vec4(0.0);\n", s);
    if (d->n_sums) tg_sb_printf(b, "    vec4 w4 = tf%d(int(j0));\n", d->w);
    tg_sb_printf(b,
                 "    for (uint i = q0; i < nr; i += %lluu) {\n"
                 "        uint r = w * %uu + i, base = r * %lluu;\n"
                 "        vec4 st = imageLoad(scr_t, int(%lluu + r));\n"
                 "        float mean = st.x, inv = st.y, mg = st.z, mgx = st.w;\n",
                 L, wg, (ull)D, (ull)(1 + d->stats_at));
    lnb_emit_quad_sums(b, d, "        ", "");
    /* partial p = w * L + q0 holds nv rows of G quads */
    tg_sb_printf(b,
                 "    }\n"
                 "    if (q0 < %lluu) {\n"
                 "        uint p = (w * %lluu + q0) * %lluu + j0;\n"
                 "        scr[p] = aw;\n"
                 "        scr[p + %lluu] = ab;\n",
                 L, L, nv * G, G);
    for (int s = 0; s < d->n_sums; s++)
        tg_sb_printf(b, "        scr[p + %lluu] = as%d;\n", (2 + (ull)s) * G, s);
    tg_sb_printf(b, "    }\n");
    tg_gen_scratch_last(g, groups);
    tg_sb_printf(b,
                 "    uint np = tg_scr_last && q0 == 0u ? %lluu : 0u;\n"
                 "    aw = vec4(0.0);\n"
                 "    ab = vec4(0.0);\n",
                 (ull)groups * L);
    for (int s = 0; s < d->n_sums; s++) tg_sb_printf(b, "    as%d = vec4(0.0);\n", s);
    tg_sb_printf(b,
                 "    for (uint p = 0u; p < np; p++) {\n"
                 "        int t = int(1u + p * %lluu + j0);\n"
                 "        aw += imageLoad(scr_t, t);\n"
                 "        ab += imageLoad(scr_t, t + %d);\n",
                 nv * G, (int)G);
    for (int s = 0; s < d->n_sums; s++)
        tg_sb_printf(b, "        as%d += imageLoad(scr_t, t + %d);\n", s, (int)((2 + s) * G));
    tg_sb_printf(b, "    }\n"
                    "    for (uint c = 0u; c < (np > 0u ? 4u : 0u); c++) {\n"
                    "        uint j = 4u * j0 + c;\n");
    lnb_emit_col_stores(b, g->k, d, D, "[c]");
    tg_sb_printf(b, "    }\n");
    tg_gen_scratch_done(g);
    tg_sb_printf(b,
                 "}\n"
                 "void main() {\n"
                 "    uint gid = tg_group();\n" /* uniform over the workgroup */
                 "    if (gid >= %lluu) return;\n"
                 "    lnb_rows(gid);\n"
                 "    memoryBarrier();\n" /* the statistics in scr */
                 "    barrier();\n"
                 "    lnb_part(gid);\n"
                 "}\n",
                 (ull)groups);
}

/* Loop iterations of one column-workgroup invocation (lavapipe's limit). */
static int64_t lnb_col_iters(int64_t rows, int64_t D, uint32_t wg, bool sums) {
    int64_t chunks = (rows + wg - 1) / wg;
    int64_t pass = (D + 3) / 4 + 3;
    return chunks * ((sums ? 3 * pass + D : 2 * pass) + (int64_t)wg + 2);
}

static tg_status gen_layer_norm_backward(const tg_vk_caps *caps, const tg_kernel *k,
                                         tg_kernel_code *out) {
    const tg_graph *gr = k->g;
    lnb_kernel *d = malloc(sizeof *d);
    if (!d) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    tg_status st = lnb_describe(k, d);
    const tg_node *xn = d->x_node;
    int64_t D = xn ? xn->shape[xn->rank - 1] : 0;
    int64_t rows = D ? tg_shape_count(xn->rank, xn->shape) / D : 0;
    bool cpu = caps->device_class == TG_VK_CLASS_CPU;
    bool serial = tg_gen_row_serial(caps, D);
    uint32_t wg = tg_gen_wg_size(caps, serial || cpu ? 128 : 64);
    bool cols = d->wb_id >= 0 || d->n_sums > 0;
    int64_t cpi = cpu ? (D + wg - 1) / wg : 1;
    if (cpi < 1) cpi = 1;
    if (cpi > LNB_MAX_COLS) cpi = LNB_MAX_COLS;
    int64_t per_block = (int64_t)wg * cpi;
    uint64_t col_groups = cols ? (uint64_t)((D + per_block - 1) / per_block) : 0;
    uint64_t row_groups = serial ? ((uint64_t)rows + wg - 1) / wg : (uint64_t)rows;
    if (st == TG_OK && tg_shape_count(xn->rank, xn->shape) > (int64_t)UINT32_MAX)
        st = tg_set_error(TG_ERR_UNSUPPORTED, "layer norm backward of 2^32 elements or more");
    if (st == TG_OK && cpu && cols && lnb_col_iters(rows, D, wg, d->n_sums > 0) > CPU_LOOP_LIMIT)
        st = tg_set_error(TG_ERR_UNSUPPORTED,
                          "layer norm backward of %lld rows x %lld: over the %d loop iterations "
                          "an invocation may run on this CPU device",
                          (long long)rows, (long long)D, CPU_LOOP_LIMIT);
    /* CPU rows (serial): the row statistics read vec4 texels when rows
     * are whole vec4s and every float input can be an RGBA view (a texel
     * fetch is a call per lane on lavapipe: one for 4 elements) */
    uint32_t v4_inputs = serial && D % 4 == 0 ? vec4_texel_inputs(caps, k) : 0;
    /* CPU partial sums (see lnb_kernel) for rows of at most wg / 2 quads,
     * with a bound on the partials the last workgroup adds */
    uint64_t quads = (uint64_t)D / 4, partial_rows = quads ? row_groups * (wg / quads) : 0;
    d->partials = cols && v4_inputs && caps->storage_texel && rows > 0 && quads <= wg / 2 &&
                  partial_rows <= LNB_MAX_PARTIALS;
    if (d->partials) {
        col_groups = 0;
        d->stats_at = partial_rows * (2 + (uint64_t)d->n_sums) * quads;
    }
    tg_gen g;
    if (st == TG_OK)
        st = v4_inputs ? tg_gen_begin_texel(&g, caps, k, out, wg, false, v4_inputs, true)
                       : tg_gen_begin(&g, caps, k, out, wg, !serial);
    if (st != TG_OK) {
        free(d);
        return st;
    }
    if (d->partials) st = tg_gen_scratch(&g, d->stats_at + (uint64_t)rows);
    d->v4 = v4_inputs != 0;
    /* the elementwise members: per output, and per sum of a member */
    tg_sb *b = &g.b;
    const char *gx_name = "gx";
    char fn[32]; /* "lnb_o" and any int */
    for (int j = 0; st == TG_OK && j < k->n_outputs; j++)
        for (int e = 0; st == TG_OK && e < d->n_elem; e++)
            if (k->outputs[j] == d->elem[e]) {
                snprintf(fn, sizeof fn, "lnb_e%d", j);
                st = tg_gen_member_fn(b, k, d->n_elem, d->elem, xn->rank, xn->shape, d->elem[e], fn,
                                      ", float gx", 1, &d->x_id, &gx_name);
            }
    for (int s = 0; st == TG_OK && s < d->n_copies; s++)
        if (d->copy_in[s] != d->x_id) {
            snprintf(fn, sizeof fn, "lnb_c%d", s);
            st = tg_gen_member_fn(b, k, d->n_elem, d->elem, xn->rank, xn->shape, d->copy_in[s], fn,
                                  ", float gx", 1, &d->x_id, &gx_name);
        }
    for (int s = 0; st == TG_OK && s < d->n_sums; s++)
        if (d->sum_in[s] != d->x_id) {
            snprintf(fn, sizeof fn, "lnb_s%d", s);
            st = tg_gen_member_fn(b, k, d->n_elem, d->elem, xn->rank, xn->shape, d->sum_in[s], fn,
                                  ", float gx", 1, &d->x_id, &gx_name);
        }
    if (st == TG_OK && d->partials) {
        lnb_emit_rows(&g, d, serial, rows, D);
        lnb_emit_partials(&g, d, rows, D, row_groups);
    } else if (st == TG_OK) {
        lnb_emit_rows(&g, d, serial, rows, D);
        if (cols) lnb_emit_cols(&g, d, rows, D, cpi);
        if (!cols) tg_sb_printf(b, "void lnb_cols(uint blk) {}\n");
        tg_sb_printf(b,
                     "void main() {\n"
                     "    uint gid = tg_group();\n" /* uniform over the workgroup */
                     "    if (gid < %lluu) lnb_cols(gid);\n"
                     "    else if (gid < %lluu) lnb_rows(gid - %lluu);\n"
                     "}\n",
                     (unsigned long long)col_groups, (unsigned long long)(col_groups + row_groups),
                     (unsigned long long)col_groups);
    }
    free(d);
    (void)gr;
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }
    return tg_gen_finish(&g, col_groups + row_groups);
}

/* ---- cross_entropy with cross_entropy_grad (passes/fusion.c,
 * merge_cross_entropy): one kernel reading the logits for both. The
 * first workgroup computes the loss (emit_cross_entropy); the others the
 * gradient, with gen_grad.c's ce_grad function (tg_gen_ce_grad_fn), as
 * the lone cross_entropy_grad kernel does. */

/* The output index of node id in kernel k, or -1. */
static int output_of(const tg_kernel *k, int32_t id) {
    for (int j = 0; j < k->n_outputs; j++)
        if (k->outputs[j] == id) return j;
    return -1;
}

/* The pair by rows (tg_ce_pair_by_rows: CPU devices): a workgroup per
 * CE_PARTIAL_WG rows, an invocation a row, reading the row whole (max,
 * sum of exp and the label's logit) before writing its gradient, so the
 * gradient may write over the logits; each workgroup counts the labels
 * (the gradient's scale needs the count of every row) and stores its
 * rows' loss terms in scratch, and the last one adds them in order. */
static tg_status gen_cross_entropy_rows(tg_gen *g, const tg_node *loss, int li, int yi, int di,
                                        int jl, int jg) {
    typedef unsigned long long ull;
    const tg_graph *gr = g->k->g;
    const tg_node *y = &gr->nodes[loss->inputs[1]];
    int64_t C = gr->nodes[loss->inputs[0]].shape[gr->nodes[loss->inputs[0]].rank - 1];
    int64_t rows = tg_shape_count(y->rank, y->shape);
    uint32_t wg = g->wg;
    uint64_t groups = rows > 0 ? ((uint64_t)rows + wg - 1) / wg : 1;
    bool v4 = tg_gen_ce_v4(g, C, li) && g->k->output_storage[jg] == TG_F32;
    if ((ull)rows / ((ull)groups * wg) * (3 * (ull)C) + (ull)rows / wg > CPU_LOOP_LIMIT)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "cross_entropy pair of %lld rows x %lld classes: over the %d loop "
                            "iterations an invocation may run on this CPU device",
                            (long long)rows, (long long)C, CPU_LOOP_LIMIT);
    tg_status st = tg_gen_scratch(g, groups);
    if (st != TG_OK) return st;
    char skip[96];
    tg_gen_ce_skip(skip, sizeof skip, "lab", loss->attrs.ignore_index, C);
    tg_sb *b = &g->b;
    ce_row_fns_at(g, C, li);
    if (v4)
        tg_sb_printf(b, "layout(std430, binding = %d) writeonly buffer BCE4 { vec4 o4ce[]; };\n",
                     g->k->n_inputs + jg);
    tg_sb_printf(b,
                 "void main() {\n"
                 "    uint w = tg_group();\n" /* uniform over the workgroup */
                 "    if (w >= %lluu) return;\n"
                 "    uint l = gl_LocalInvocationID.x;\n"
                 "    float cnt = 0.0;\n"
                 "    for (uint q = l; q < %lluu; q += %uu) {\n"
                 "        int lab = ld%d(q);\n"
                 "        cnt += %s ? 0.0 : 1.0;\n"
                 "    }\n"
                 "    cnt = tg_wg_sum(cnt);\n"
                 "    float scale = ld%d(0u) / cnt, total = 0.0, counted = 0.0;\n"
                 "    for (uint r = w * %uu + l; r < %lluu; r += %lluu) {\n"
                 "        int lab = ld%d(r);\n"
                 "        uint base = r * %lluu;\n",
                 (ull)groups, (ull)rows, wg, yi, skip, di, wg, (ull)rows, (ull)groups * wg, yi,
                 (ull)C);
    if (v4)
        tg_sb_printf(
            b,
            "        if (%s) {\n"
            "            for (uint c = 0u; c < %lluu; c++) o4ce[(base >> 2) + c] = "
            "vec4(0.0);\n"
            "            continue;\n"
            "        }\n"
            "        float m = ce_row_max4(base), s = ce_row_sumexp4(base, m);\n"
            "        total += m + log(s) - ld%d(base + uint(lab));\n"
            "        counted += 1.0;\n"
            "        float f = scale / s;\n"
            "        for (uint c = 0u; c < %lluu; c++) {\n"
            "            ivec4 j = ivec4(4 * int(c)) + ivec4(0, 1, 2, 3);\n"
            "            o4ce[(base >> 2) + c] = exp(tf%d(int((base >> 2) + c)) - m) * f -\n"
            "                                    vec4(equal(j, ivec4(lab))) * scale;\n"
            "        }\n"
            "    }\n",
            skip, (ull)(C / 4), li, (ull)(C / 4), li);
    else
        tg_sb_printf(
            b,
            "        if (%s) {\n"
            "            for (uint j = 0u; j < %lluu; j++) st%d(base + j, 0.0);\n"
            "            continue;\n"
            "        }\n"
            "        float m = ce_row_max(base, 0u, 1u), s = ce_row_sumexp(base, 0u, 1u, m);\n"
            "        total += m + log(s) - ld%d(base + uint(lab));\n"
            "        counted += 1.0;\n"
            "        float f = scale / s;\n"
            "        for (uint j = 0u; j < %lluu; j++)\n"
            "            st%d(base + j, exp(ld%d(base + j) - m) * f - (int(j) == lab ? "
            "scale : 0.0));\n"
            "    }\n",
            skip, (ull)C, jg, li, (ull)C, jg, li);
    /* the loss: this workgroup's terms and counted rows, added by the last */
    tg_sb_printf(b, "    total = tg_wg_sum(total);\n    counted = tg_wg_sum(counted);\n");
    ce_emit_partials(g, groups, jl, "total", "counted");
    return TG_OK;
}

static tg_status gen_cross_entropy_pair(const tg_vk_caps *caps, const tg_kernel *k,
                                        tg_kernel_code *out) {
    const tg_graph *gr = k->g;
    const tg_node *loss = NULL, *grad = NULL;
    int32_t loss_id = -1, grad_id = -1;
    for (int i = 0; i < k->n_nodes; i++) {
        const tg_node *n = &gr->nodes[k->nodes[i]];
        if (n->op == TG_OP_CROSS_ENTROPY) loss = n, loss_id = k->nodes[i];
        if (n->op == TG_OP_CROSS_ENTROPY_GRAD) grad = n, grad_id = k->nodes[i];
    }
    int li = loss ? tg_gen_input_index(k, loss->inputs[0]) : -1;
    int yi = loss ? tg_gen_input_index(k, loss->inputs[1]) : -1;
    int di = grad ? tg_gen_input_index(k, grad->inputs[2]) : -1;
    if (k->n_nodes != 2 || !loss || !grad || grad->inputs[0] != loss->inputs[0] ||
        grad->inputs[1] != loss->inputs[1] || li < 0 || yi < 0 || di < 0 ||
        output_of(k, loss_id) < 0 || output_of(k, grad_id) < 0 ||
        tg_shape_count(grad->rank, grad->shape) > (int64_t)UINT32_MAX)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "nn generator: a cross-entropy pair is cross_entropy and its "
                            "cross_entropy_grad of the same logits and labels, both outputs");
    const tg_node *y = &gr->nodes[loss->inputs[1]];
    int64_t C = grad->shape[grad->rank - 1], rows = tg_shape_count(y->rank, y->shape);
    bool cpu = caps->device_class == TG_VK_CLASS_CPU;
    if (tg_ce_pair_by_rows(caps)) {
        tg_gen g;
        uint32_t v4 = tg_gen_ce_v4_mask(caps, k, li, C);
        uint32_t wg = tg_gen_wg_size(caps, CE_PARTIAL_WG);
        tg_status st = v4 ? tg_gen_begin_texel(&g, caps, k, out, wg, true, v4, true)
                          : tg_gen_begin(&g, caps, k, out, wg, true);
        if (st == TG_OK)
            st = gen_cross_entropy_rows(&g, loss, li, yi, di, output_of(k, loss_id),
                                        output_of(k, grad_id));
        if (st != TG_OK) {
            tg_gen_abort(&g);
            return st;
        }
        return tg_gen_finish(&g, rows > 0 ? ((uint64_t)rows + wg - 1) / wg : 1);
    }
    /* the loss's workgroup size (its kernel alone), for both parts */
    uint32_t wg = tg_gen_wg_size(caps, cpu ? 1024 : 256);
    bool loss_serial = C <= TG_GEN_ROW_SERIAL_MAX ||
                       (cpu && ce_iters(true, rows, C, wg) <= ce_iters(false, rows, C, wg));
    uint32_t partial_wg = tg_gen_wg_size(caps, CE_PARTIAL_WG);
    uint64_t loss_groups = ce_loss_groups(caps, loss_serial, rows, partial_wg);
    if (loss_groups > 1) wg = partial_wg;
    bool grad_serial = tg_gen_row_serial(caps, C);
    tg_gen g;
    uint64_t grad_groups = 0;
    uint32_t v4 = tg_gen_ce_v4_mask(caps, k, li, C);
    tg_status st = v4 ? tg_gen_begin_texel(&g, caps, k, out, wg, true, v4, true)
                      : tg_gen_begin(&g, caps, k, out, wg, true);
    if (st == TG_OK) {
        ce_row_fns_at(&g, C, li);
        st = emit_cross_entropy(&g, loss, loss_serial, "ce_loss", li, yi, output_of(k, loss_id),
                                loss_groups);
    }
    if (st == TG_OK)
        st = tg_gen_ce_grad_fn(&g, grad, grad_serial, li, yi, di, output_of(k, grad_id),
                               &grad_groups);
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }
    tg_sb_printf(&g.b,
                 "void main() {\n"
                 "    uint gid = tg_group();\n" /* uniform over the workgroup */
                 "    if (gid < %lluu) ce_loss(%s);\n"
                 "    else if (gid < %lluu) ce_grad(gid - %lluu);\n"
                 "}\n",
                 (unsigned long long)loss_groups, loss_groups > 1 ? "gid" : "",
                 (unsigned long long)(loss_groups + grad_groups), (unsigned long long)loss_groups);
    return tg_gen_finish(&g, loss_groups + grad_groups);
}

tg_status tg_gen_nn(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out) {
    const tg_graph *gr = k->g;
    int32_t id = k->nodes[k->n_nodes - 1];
    const tg_node *n = &gr->nodes[id];
    for (int i = 0; k->n_nodes > 1 && i < k->n_nodes; i++)
        if (gr->nodes[k->nodes[i]].op == TG_OP_LAYER_NORM_GRAD_X)
            return gen_layer_norm_backward(caps, k, out);
    if (k->n_nodes > 1) return gen_cross_entropy_pair(caps, k, out);
    if (k->n_nodes != 1 || k->n_inputs != n->n_inputs || k->n_outputs != 1)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "nn generator: %s %d must be alone in its kernel, reading each input "
                            "once",
                            tg_ops[n->op].name, (int)id);
    for (int i = 0; i < n->n_inputs; i++) {
        const tg_node *x = &gr->nodes[n->inputs[i]];
        if (k->inputs[i] != n->inputs[i] || tg_shape_count(x->rank, x->shape) > UINT32_MAX)
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "nn generator: %s %d: kernel inputs must be the node's inputs in "
                                "order, each under 2^32 elements",
                                tg_ops[n->op].name, (int)id);
    }
    bool row_op = n->op == TG_OP_SOFTMAX || n->op == TG_OP_LOG_SOFTMAX;
    int64_t row_len = row_op                      ? n->shape[n->attrs.axis]
                      : n->op == TG_OP_LAYER_NORM ? (n->rank ? n->shape[n->rank - 1] : 1)
                                                  : INT64_MAX;
    bool serial = tg_gen_row_serial(caps, row_len);
    /* cross_entropy: serial rows on CPU devices whatever their length (one
     * workgroup: barriers per row would cost more than they save) */
    bool ce = n->op == TG_OP_CROSS_ENTROPY;
    uint32_t wg = tg_gen_wg_size(caps, serial ? 128 : 64);
    /* softmax over the last axis in rows of whole vec4s on a CPU, when
     * there are rows enough for every thread (256; long rows 1024, else a
     * subgroup a row spreads better): one invocation a row of
     * vec4 texels (4096 rows of 64, the scores of an attention lowered by
     * flash_attention off: 1.68 -> 0.43 ms single-threaded) */
    bool sm_v4 = row_op && caps->device_class == TG_VK_CLASS_CPU && n->attrs.axis == n->rank - 1 &&
                 row_len % 4 == 0 && row_len <= TG_GEN_ROW_SERIAL_MAX_CPU && k->n_nodes == 1 &&
                 k->n_inputs == 1 &&
                 tg_shape_count(n->rank, n->shape) / row_len >= (row_len <= 256 ? 256 : 1024);
    /* softmax only: for layer_norm it measured within noise or slower in
     * the demo's training step */
    if (row_op && !sm_v4 && tg_gen_row_subgroup(caps, row_len)) {
        wg = caps->subgroup_size;
        serial = false;
    }
    if (ce) { /* the largest workgroup: it is the only one */
        const tg_node *x = &gr->nodes[n->inputs[0]];
        const tg_node *y = &gr->nodes[n->inputs[1]];
        int64_t C = x->shape[x->rank - 1], rows = tg_shape_count(y->rank, y->shape);
        wg = tg_gen_wg_size(caps, caps->device_class == TG_VK_CLASS_CPU ? 1024 : 256);
        serial = C <= TG_GEN_ROW_SERIAL_MAX ||
                 (caps->device_class == TG_VK_CLASS_CPU &&
                  ce_iters(true, rows, C, wg) <= ce_iters(false, rows, C, wg));
        uint32_t partial_wg = tg_gen_wg_size(caps, CE_PARTIAL_WG);
        if (ce_loss_groups(caps, serial, rows, partial_wg) > 1) wg = partial_wg;
    }
    /* layer_norm, one invocation a row of whole vec4s on a CPU: vec4
     * texel views of x, w and b (vec4_texel_inputs) */
    uint32_t v4 = n->op == TG_OP_LAYER_NORM && serial && row_len % 4 == 0 && k->n_nodes == 1 &&
                          k->n_inputs == 3
                      ? vec4_texel_inputs(caps, k)
                      : 0;
    if (ce && serial) {
        const tg_node *x = &gr->nodes[n->inputs[0]];
        v4 = tg_gen_ce_v4_mask(caps, k, 0, x->shape[x->rank - 1]);
    }
    if (sm_v4 && (v4 = vec4_texel_inputs(caps, k)) != 0) {
        serial = true;
        wg = tg_gen_wg_size(caps, 128);
    }
    tg_gen g;
    tg_status st = v4 ? tg_gen_begin_texel(&g, caps, k, out, wg, ce, v4, true)
                      : tg_gen_begin(&g, caps, k, out, wg, !serial || ce);
    if (st != TG_OK) {
        tg_gen_abort(&g);
        return st;
    }
    switch (n->op) {
    case TG_OP_SOFTMAX:
    case TG_OP_LOG_SOFTMAX: st = v4 ? gen_softmax_v4(&g, n) : gen_softmax(&g, n); break;
    case TG_OP_LAYER_NORM: st = gen_layer_norm(&g, n, v4 != 0); break;
    case TG_OP_CROSS_ENTROPY: st = gen_cross_entropy(&g, n, serial); break;
    case TG_OP_ATTENTION: st = gen_attention(&g, n); break;
    default:
        st = tg_set_error(TG_ERR_UNSUPPORTED, "nn generator: no kernel for %s", tg_ops[n->op].name);
        break;
    }
    if (st != TG_OK) tg_gen_abort(&g);
    return st;
}
