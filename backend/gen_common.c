/* backend/gen_common.c — the GLSL pieces every generator shares (see
 * gen_common.h). */
#include "backend/gen_common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Types and literals                                                  */
/* ------------------------------------------------------------------ */

bool tg_gen_dtype_is_int(tg_dtype t) {
    return t == TG_I32 || t == TG_I8 || t == TG_U8;
}

const char *tg_gen_ctype(tg_dtype t) {
    return tg_gen_dtype_is_int(t) ? "int" : "float";
}

const char *tg_gen_flit(double v, char *buf, size_t n) {
    if (isnan(v))
        snprintf(buf, n, "uintBitsToFloat(0x7fc00000u)");
    else if (isinf(v))
        snprintf(buf, n, "uintBitsToFloat(%s)", v > 0 ? "0x7f800000u" : "0xff800000u");
    else {
        float f = (float)v;
        if (isinf(f)) /* beyond float range: the nearest float */
            f = v > 0 ? 3.40282347e38f : -3.40282347e38f;
        /* 9 significant digits round-trip a float; a float literal needs
         * a '.' or an exponent */
        snprintf(buf, n, "%.9e", (double)f);
    }
    return buf;
}

const char *tg_gen_lit(tg_dtype t, double v, char *buf, size_t n) {
    if (!tg_gen_dtype_is_int(t)) return tg_gen_flit(v, buf, n);
    double r = tg_round_to_dtype(v, t);
    if (r <= -2147483648.0)
        snprintf(buf, n, "(-2147483647 - 1)"); /* INT_MIN has no literal */
    else
        snprintf(buf, n, "%lld", (long long)r);
    return buf;
}

const char *tg_gen_round_fn(tg_dtype t) {
    switch (t) {
    case TG_F16: return "tg_rnd_f16";
    case TG_BF16: return "tg_rnd_bf16";
    case TG_I8: return "tg_rnd_i8";
    case TG_U8: return "tg_rnd_u8";
    case TG_I32: return "tg_rnd_i32";
    default: return "tg_rnd_f32";
    }
}

uint32_t tg_gen_wg_size(const tg_vk_caps *caps, uint32_t want) {
    uint32_t lim = caps->max_workgroup_invocations;
    if (caps->max_workgroup_size[0] < lim) lim = caps->max_workgroup_size[0];
    if (want > lim) want = lim;
    uint32_t wg = 1;
    while (wg * 2 <= want) wg *= 2;
    /* a whole subgroup at least, so subgroup operations see full subgroups */
    if (caps->subgroup_size > wg && caps->subgroup_size <= lim) wg = caps->subgroup_size;
    return wg ? wg : 1;
}

/* ------------------------------------------------------------------ */
/* Index math                                                          */
/* ------------------------------------------------------------------ */

void tg_gen_row_strides(int rank, const int64_t *shape, int64_t *strides) {
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; d--) {
        strides[d] = s;
        s *= shape[d];
    }
}

void tg_gen_bcast_strides(int in_rank, const int64_t *in, int out_rank, const int64_t *out,
                          int64_t *strides) {
    int64_t s = 1;
    for (int d = out_rank - 1; d >= 0; d--) {
        int di = d - (out_rank - in_rank);
        if (di < 0) {
            strides[d] = 0;
            continue;
        }
        strides[d] = (in[di] == 1 && out[d] != 1) ? 0 : s;
        s *= in[di];
    }
}

void tg_gen_offset_fn(tg_sb *b, const char *name, int rank, const int64_t *extents,
                      const int64_t *strides, int64_t base) {
    tg_sb_printf(b, "uint %s(uint i) {\n    uint o = %lluu;\n", name, (unsigned long long)base);
    /* innermost axis first; the outermost axis of extent > 1 needs no
     * modulo (i is in range) */
    int outermost = -1;
    for (int d = 0; d < rank; d++)
        if (extents[d] != 1) {
            outermost = d;
            break;
        }
    bool contiguous = true; /* row-major strides: the offset is i itself */
    int64_t s = 1;
    for (int d = rank - 1; d >= 0; d--) {
        if (extents[d] != 1 && strides[d] != s) contiguous = false;
        s *= extents[d];
    }
    if (contiguous) {
        tg_sb_printf(b, "    return o + i;\n}\n");
        return;
    }
    for (int d = rank - 1; d >= 0 && outermost >= 0; d--) {
        if (extents[d] == 1) continue;
        if (d == outermost) {
            if (strides[d] != 0)
                tg_sb_printf(b, "    o += i * %lluu;\n", (unsigned long long)strides[d]);
            break;
        }
        if (strides[d] != 0)
            tg_sb_printf(b, "    o += (i %% %lluu) * %lluu;\n", (unsigned long long)extents[d],
                         (unsigned long long)strides[d]);
        tg_sb_printf(b, "    i /= %lluu;\n", (unsigned long long)extents[d]);
    }
    tg_sb_printf(b, "    return o;\n}\n");
}

/* ------------------------------------------------------------------ */
/* The math library                                                    */
/* ------------------------------------------------------------------ */

/* erf: N. Juffa's faithfully rounded erff (max error ~1 ulp with fma),
 * https://stackoverflow.com/a/35148199 — GLSL has no erf, and the usual
 * Abramowitz-Stegun 7.1.26 errs by 1.5e-7 absolute (huge relative error
 * near 0). tanh: 1 - 2/(e^2x + 1) away from 0 (no cancellation, and
 * e^2x = inf gives exactly 1: no overflow), its Taylor series near 0
 * where that formula cancels. pow: exp2(y log2|x|) with the sign and
 * special cases of C's pow, which GLSL leaves undefined for x <= 0. */
static const char *math_glsl =
    "float tg_erf(float a) {\n"
    "    float t = abs(a), s = a * a, r;\n"
    "    if (t > 0.927734375) {\n"
    "        r = fma(-1.72853470e-5, t, 3.83197126e-4);\n"
    "        float u = fma(-3.88396438e-3, t, 2.42546219e-2);\n"
    "        r = fma(r, s, u);\n"
    "        r = fma(r, t, -1.06777877e-1);\n"
    "        r = fma(r, t, -6.34846687e-1);\n"
    "        r = fma(r, t, -1.28717512e-1);\n"
    "        r = fma(r, t, -t);\n"
    "        r = 1.0 - exp(r);\n"
    "        r = a < 0.0 ? -r : r;\n"
    "    } else {\n"
    "        r = -5.96761703e-4;\n"
    "        r = fma(r, s, 4.99119423e-3);\n"
    "        r = fma(r, s, -2.67681349e-2);\n"
    "        r = fma(r, s, 1.12819925e-1);\n"
    "        r = fma(r, s, -3.76125336e-1);\n"
    "        r = fma(r, s, 1.28379166e-1);\n"
    "        r = fma(r, a, a);\n"
    "    }\n"
    "    return r;\n"
    "}\n"
    "float tg_tanh(float x) {\n"
    "    float t = abs(x);\n"
    "    if (t > 0.55) {\n"
    "        float r = 1.0 - 2.0 / (exp(2.0 * min(t, 20.0)) + 1.0);\n"
    "        return x < 0.0 ? -r : r;\n"
    "    }\n"
    "    float s = x * x;\n"
    "    float p = 2.3912911e-4;\n" /* Taylor coefficients of tanh(x)/x in s = x^2 */
    "    p = fma(p, s, -5.9002744e-4);\n"
    "    p = fma(p, s, 1.4558344e-3);\n"
    "    p = fma(p, s, -3.5921280e-3);\n"
    "    p = fma(p, s, 8.8632355e-3);\n"
    "    p = fma(p, s, -2.1869488e-2);\n"
    "    p = fma(p, s, 5.3968254e-2);\n"
    "    p = fma(p, s, -1.3333333e-1);\n"
    "    p = fma(p, s, 3.3333333e-1);\n"
    "    return fma(-x * s, p, x);\n"
    "}\n"
    "float tg_pow(float x, float y) {\n"
    "    if (y == 0.0 || x == 1.0) return 1.0;\n"
    "    if (isnan(x) || isnan(y)) return x + y;\n"
    "    bool yint = floor(y) == y;\n"
    "    bool yodd = yint && abs(y) < 16777216.0 && (int(abs(y)) & 1) == 1;\n"
    "    if (x == 0.0) {\n"
    "        float r = y > 0.0 ? 0.0 : uintBitsToFloat(0x7f800000u);\n"
    "        return (yodd && (floatBitsToUint(x) >> 31) != 0u) ? -r : r;\n"
    "    }\n"
    "    if (x < 0.0 && !yint) return uintBitsToFloat(0x7fc00000u);\n"
    "    float r = exp2(y * log2(abs(x)));\n"
    "    return (x < 0.0 && yodd) ? -r : r;\n"
    "}\n"
    /* derivatives of gelu (cdf + x pdf) and of its tanh form, times dy */
    "float tg_gelu_grad(float x, float dy) {\n"
    "    return dy * (0.5 * (1.0 + tg_erf(x * 0.707106781186547524)) +\n"
    "                 x * exp(-0.5 * x * x) * 0.398942280401432678);\n"
    "}\n"
    "float tg_gelu_tanh_grad(float x, float dy) {\n"
    "    float t = tg_tanh(0.797884560802865356 * (x + 0.044715 * x * x * x));\n"
    "    return dy * (0.5 * (1.0 + t) +\n"
    "                 0.5 * x * (1.0 - t * t) * 0.797884560802865356 * (1.0 + 0.134145 * x * x));\n"
    "}\n"
    /* rounding as storing to a dtype does (graph/util.c tg_round_to_dtype) */
    "float tg_rnd_f32(float x) { return x; }\n"
    "float tg_rnd_f16(float x) {\n"
    "    if (isnan(x) || abs(x) >= 65520.0) return x * 65536.0;\n" /* inf/NaN stay */
    "    return unpackHalf2x16(packHalf2x16(vec2(x, 0.0))).x;\n"
    "}\n"
    "float tg_rnd_bf16(float x) {\n"
    "    if (isnan(x)) return x;\n"
    "    uint u = floatBitsToUint(x);\n"
    "    u += 0x7fffu + ((u >> 16) & 1u);\n" /* round to nearest even */
    "    return uintBitsToFloat(u & 0xffff0000u);\n"
    "}\n"
    "int tg_rnd_i32(int x) { return x; }\n"
    "int tg_rnd_i8(int x) { return clamp(x, -128, 127); }\n"
    "int tg_rnd_u8(int x) { return clamp(x, 0, 255); }\n"
    /* float -> int: truncate, saturate, NaN -> 0 (the interpreter's rule) */
    "int tg_f2i(float x, float lo, float hi) {\n"
    "    if (isnan(x)) return 0;\n"
    "    if (x >= 2147483648.0) return 2147483647;\n"
    "    if (x <= -2147483648.0) return -2147483647 - 1;\n"
    "    return int(clamp(trunc(x), lo, hi));\n"
    "}\n"
    /* integer division truncates (OpSDiv); x/0 = 0; INT_MIN/-1 saturates */
    "int tg_idiv(int a, int b) {\n"
    "    if (b == 0) return 0;\n"
    "    if (b == -1) return a == (-2147483647 - 1) ? 2147483647 : -a;\n"
    "    return a / b;\n"
    "}\n"
    /* NaN-propagating max/min, as PyTorch and the interpreter do */
    "float tg_maxf(float a, float b) { return (b > a || isnan(b)) ? b : a; }\n"
    "float tg_minf(float a, float b) { return (b < a || isnan(b)) ? b : a; }\n"
    "int tg_maxi(int a, int b) { return max(a, b); }\n"
    "int tg_mini(int a, int b) { return min(a, b); }\n";

const char *tg_gen_math_glsl(void) {
    return math_glsl;
}

/* ------------------------------------------------------------------ */
/* Workgroup reductions                                                */
/* ------------------------------------------------------------------ */

/* tg_wg_<op>(v) combine v over the workgroup and return the result to
 * every invocation; all invocations must call them (uniform control
 * flow). Sums use subgroupAdd then one slot per subgroup; max/min keep
 * NaN propagation and argmax the first index on ties, so they use a
 * shared-memory tree with our own combine functions. The leading
 * barrier protects the shared slots still being read from a previous
 * call. */
static void emit_wg_reductions(tg_gen *g) {
    tg_sb *b = &g->b;
    uint32_t wg = g->wg;
    tg_sb_printf(b, "shared float tg_red_f[%u];\nshared int tg_red_i[%u];\n", wg, wg);
    if (g->subgroup_arith) {
        tg_sb_printf(b, "float tg_wg_sum(float v) {\n"
                        "    v = subgroupAdd(v);\n"
                        "    barrier();\n"
                        "    if (subgroupElect()) tg_red_f[gl_SubgroupID] = v;\n"
                        "    barrier();\n"
                        "    float r = tg_red_f[0];\n"
                        "    for (uint s = 1u; s < gl_NumSubgroups; s++) r += tg_red_f[s];\n"
                        "    return r;\n"
                        "}\n"
                        "int tg_wg_sumi(int v) {\n"
                        "    v = subgroupAdd(v);\n"
                        "    barrier();\n"
                        "    if (subgroupElect()) tg_red_i[gl_SubgroupID] = v;\n"
                        "    barrier();\n"
                        "    int r = tg_red_i[0];\n"
                        "    for (uint s = 1u; s < gl_NumSubgroups; s++) r += tg_red_i[s];\n"
                        "    return r;\n"
                        "}\n");
    }
    /* the shared-memory tree, one per combine function */
    static const struct {
        const char *name, *type, *arr, *comb;
    } trees[] = {
        {"tg_wg_sum", "float", "tg_red_f", "a + b"},
        {"tg_wg_sumi", "int", "tg_red_i", "a + b"},
        {"tg_wg_max", "float", "tg_red_f", "tg_maxf(a, b)"},
        {"tg_wg_min", "float", "tg_red_f", "tg_minf(a, b)"},
        {"tg_wg_maxi", "int", "tg_red_i", "max(a, b)"},
        {"tg_wg_mini", "int", "tg_red_i", "min(a, b)"},
    };
    for (size_t t = 0; t < sizeof trees / sizeof trees[0]; t++) {
        if (g->subgroup_arith && strncmp(trees[t].name, "tg_wg_sum", 9) == 0) continue;
        tg_sb_printf(b,
                     "%s %s(%s v) {\n"
                     "    uint l = gl_LocalInvocationID.x;\n"
                     "    barrier();\n"
                     "    %s[l] = v;\n"
                     "    barrier();\n"
                     "    for (uint s = %uu; s > 0u; s >>= 1) {\n"
                     "        if (l < s) { %s a = %s[l], b = %s[l + s]; %s[l] = %s; }\n"
                     "        barrier();\n"
                     "    }\n"
                     "    return %s[0];\n"
                     "}\n",
                     trees[t].type, trees[t].name, trees[t].type, trees[t].arr, wg / 2,
                     trees[t].type, trees[t].arr, trees[t].arr, trees[t].arr, trees[t].comb,
                     trees[t].arr);
    }
    /* argmax: (value, index) pairs, larger value wins, then the smaller
     * index; returns the index */
    tg_sb_printf(b,
                 "int tg_wg_argmax(float v, int idx) {\n"
                 "    uint l = gl_LocalInvocationID.x;\n"
                 "    barrier();\n"
                 "    tg_red_f[l] = v;\n"
                 "    tg_red_i[l] = idx;\n"
                 "    barrier();\n"
                 "    for (uint s = %uu; s > 0u; s >>= 1) {\n"
                 "        if (l < s) {\n"
                 "            float vb = tg_red_f[l + s];\n"
                 "            int ib = tg_red_i[l + s];\n"
                 "            float va = tg_red_f[l];\n"
                 "            int ia = tg_red_i[l];\n"
                 "            if (ib >= 0 && (ia < 0 || vb > va || (vb == va && ib < ia))) {\n"
                 "                tg_red_f[l] = vb;\n"
                 "                tg_red_i[l] = ib;\n"
                 "            }\n"
                 "        }\n"
                 "        barrier();\n"
                 "    }\n"
                 "    return tg_red_i[0];\n"
                 "}\n",
                 wg / 2);
}

/* ------------------------------------------------------------------ */
/* Header, bindings, grid                                              */
/* ------------------------------------------------------------------ */

static const char *store_type(tg_dtype storage) {
    return storage == TG_F16 ? "float16_t" : tg_gen_dtype_is_int(storage) ? "int" : "float";
}

static int64_t node_count(const tg_node *n) {
    return tg_shape_count(n->rank, n->shape);
}

/* Float inputs go through texel buffers on CPU devices (lavapipe: 4-5x
 * faster than SSBO loads), when the format exists and the tensor fits
 * maxTexelBufferElements. */
static bool use_texel(const tg_vk_caps *caps, tg_dtype storage, int64_t count,
                      tg_vk_texel_format *fmt) {
    if (caps->device_class != TG_VK_CLASS_CPU) return false;
    if (count < 1 || (uint64_t)count > caps->max_texel_buffer_elements) return false;
    if (storage == TG_F32 && caps->texel_r32f) {
        *fmt = TG_VK_TEXEL_R32F;
        return true;
    }
    if (storage == TG_F16 && caps->texel_r16f) {
        *fmt = TG_VK_TEXEL_R16F;
        return true;
    }
    return false;
}

bool tg_gen_texel_input_ok(const tg_vk_caps *caps, const tg_kernel *k, int i, bool vec4) {
    const tg_node *n = &k->g->nodes[k->inputs[i]];
    int64_t count = tg_shape_count(n->rank, n->shape), w = vec4 ? 4 : 1;
    tg_dtype st = k->input_storage[i];
    bool fmt = st == TG_F32   ? (vec4 ? caps->texel_rgba32f : caps->texel_r32f)
               : st == TG_F16 ? (vec4 ? caps->texel_rgba16f : caps->texel_r16f)
                              : false;
    return fmt && !tg_gen_dtype_is_int(n->dtype) && count >= w && count % w == 0 &&
           (uint64_t)(count / w) <= caps->max_texel_buffer_elements;
}

/* Texel input i at binding nb, and tf<i>(int texel) -> vec4 reading it.
 * CPU devices read f32 texels through imageLoad of a storage texel
 * buffer, which llvmpipe inlines, where a texelFetch is a call that spills
 * every live vector register (a fused layer-norm backward timed alone:
 * 396-430 -> 322-347 us); $TG_TEXEL_IMAGE=0 keeps texelFetch. */
static void declare_texel(tg_gen *g, int nb, int i, tg_dtype storage, bool vec4) {
    const tg_vk_caps *caps = g->caps;
    const char *env = getenv("TG_TEXEL_IMAGE");
    bool image = caps->storage_texel && caps->device_class == TG_VK_CLASS_CPU &&
                 storage == TG_F32 && !(env && strcmp(env, "0") == 0);
    g->out->kinds[nb] = image ? TG_VK_BIND_STORAGE_TEXEL : TG_VK_BIND_TEXEL;
    if (image)
        tg_sb_printf(&g->b,
                     "layout(binding = %d, %s) uniform readonly imageBuffer t%d;\n"
                     "vec4 tf%d(int i) { return imageLoad(t%d, i); }\n",
                     nb, vec4 ? "rgba32f" : "r32f", i, i, i);
    else
        tg_sb_printf(&g->b,
                     "layout(binding = %d) uniform samplerBuffer t%d;\n"
                     "vec4 tf%d(int i) { return texelFetch(t%d, i); }\n",
                     nb, i, i, i);
}

tg_status tg_gen_begin(tg_gen *g, const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out,
                       uint32_t wg, bool reductions) {
    return tg_gen_begin_texel(g, caps, k, out, wg, reductions, 0, false);
}

tg_status tg_gen_begin_texel(tg_gen *g, const tg_vk_caps *caps, const tg_kernel *k,
                             tg_kernel_code *out, uint32_t wg, bool reductions,
                             uint64_t texel_inputs, bool vec4) {
    memset(out, 0, sizeof *out);
    g->caps = caps;
    g->k = k;
    g->out = out;
    memset(&g->b, 0, sizeof g->b);
    g->wg = wg;
    g->vec4_inputs = vec4 ? texel_inputs : 0;
    g->subgroup_arith = reductions && caps->subgroup_in_compute &&
                        (caps->subgroup_ops & VK_SUBGROUP_FEATURE_BASIC_BIT) &&
                        (caps->subgroup_ops & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT);
    if (k->n_inputs + k->n_outputs > TG_VK_MAX_BINDINGS || k->n_inputs > TG_KERNEL_MAX_IO ||
        k->n_outputs > TG_KERNEL_MAX_IO || k->n_outputs < 1 || k->n_nodes < 1)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "kernel generator: %d inputs, %d outputs, %d nodes", k->n_inputs,
                            k->n_outputs, k->n_nodes);
    const tg_node *last = &k->g->nodes[k->nodes[k->n_nodes - 1]];
    snprintf(out->name, sizeof out->name, "%s_%d", tg_ops[last->op].name,
             (int)k->nodes[k->n_nodes - 1]);

    tg_sb *b = &g->b;
    bool need16 = false;
    for (int i = 0; i < k->n_inputs; i++) need16 |= k->input_storage[i] == TG_F16;
    for (int j = 0; j < k->n_outputs; j++) need16 |= k->output_storage[j] == TG_F16;
    if (need16 && !caps->storage_16bit)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s: f16 storage on device '%s', which lacks 16-bit storage buffers "
                            "(tg_storage_dtype maps f16 to f32 there)",
                            out->name, caps->name);
    tg_sb_printf(b, "#version 450\n");
    if (need16) tg_sb_printf(b, "#extension GL_EXT_shader_16bit_storage : require\n");
    if (g->subgroup_arith)
        tg_sb_printf(b, "#extension GL_KHR_shader_subgroup_basic : require\n"
                        "#extension GL_KHR_shader_subgroup_arithmetic : require\n");
    tg_sb_printf(b, "// %s\nlayout(local_size_x = %u, local_size_y = 1, local_size_z = 1) in;\n",
                 out->name, wg);

    int nb = 0;
    for (int i = 0; i < k->n_inputs; i++, nb++) {
        const tg_node *n = &k->g->nodes[k->inputs[i]];
        tg_dtype st = k->input_storage[i];
        tg_vk_texel_format fmt;
        g->input_is_int[i] = tg_gen_dtype_is_int(n->dtype);
        /* kernels have up to TG_KERNEL_MAX_IO (64) inputs, a bit each */
        if (i < 64 && (texel_inputs >> i & 1u)) { /* the caller checked the format */
            out->texel_formats[nb] = st == TG_F16 ? (vec4 ? TG_VK_TEXEL_RGBA16F : TG_VK_TEXEL_R16F)
                                                  : (vec4 ? TG_VK_TEXEL_RGBA32F : TG_VK_TEXEL_R32F);
            declare_texel(g, nb, i, st, vec4);
            tg_sb_printf(b, "float ld%d(uint i) { return tf%d(int(i%s))%s; }\n", i, i,
                         vec4 ? " >> 2" : "", vec4 ? "[i & 3u]" : ".r");
        } else if (!g->input_is_int[i] && use_texel(caps, st, node_count(n), &fmt)) {
            out->texel_formats[nb] = fmt;
            declare_texel(g, nb, i, st, false);
            tg_sb_printf(b, "float ld%d(uint i) { return tf%d(int(i)).r; }\n", i, i);
        } else {
            out->kinds[nb] = TG_VK_BIND_STORAGE;
            tg_sb_printf(b,
                         "layout(std430, binding = %d) readonly buffer B%d { %s d%d[]; };\n"
                         "%s ld%d(uint i) { return %s(d%d[i]); }\n",
                         nb, nb, store_type(st), i, tg_gen_ctype(n->dtype), i,
                         tg_gen_ctype(n->dtype), i);
        }
    }
    for (int j = 0; j < k->n_outputs; j++, nb++) {
        const tg_node *n = &k->g->nodes[k->outputs[j]];
        tg_dtype st = k->output_storage[j];
        out->kinds[nb] = TG_VK_BIND_STORAGE;
        tg_sb_printf(b, "layout(std430, binding = %d) writeonly buffer B%d { %s o%d[]; };\n", nb,
                     nb, store_type(st), j);
        /* declared after the math library (it calls the rounding) */
        (void)n;
    }
    out->n_bindings = nb;
    tg_sb_printf(b, "%s", math_glsl);
    for (int j = 0; j < k->n_outputs; j++) {
        const tg_node *n = &k->g->nodes[k->outputs[j]];
        const char *ct = tg_gen_ctype(n->dtype);
        tg_sb_printf(b, "void st%d(uint i, %s v) { o%d[i] = %s(%s(v)); }\n", j, ct, j,
                     store_type(k->output_storage[j]), tg_gen_round_fn(n->dtype));
    }
    tg_sb_printf(b, "uint tg_group() {\n"
                    "    return (gl_WorkGroupID.z * gl_NumWorkGroups.y + gl_WorkGroupID.y) *\n"
                    "        gl_NumWorkGroups.x + gl_WorkGroupID.x;\n"
                    "}\n");
    if (reductions) emit_wg_reductions(g);
    return TG_OK;
}

tg_status tg_gen_scratch(tg_gen *g, uint64_t vec4s) {
    tg_kernel_code *out = g->out;
    int nb = out->n_bindings;
    if (nb + 2 > TG_VK_MAX_BINDINGS || vec4s > (UINT32_MAX - 16) / 16)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s: scratch of %llu vec4s and %d bindings is too much", out->name,
                            (unsigned long long)vec4s, nb + 2);
    out->kinds[nb] = TG_VK_BIND_STORAGE;
    out->kinds[nb + 1] = TG_VK_BIND_STORAGE_TEXEL;
    out->texel_formats[nb + 1] = TG_VK_TEXEL_RGBA32F;
    out->n_bindings = nb + 2;
    out->scratch_bindings = 2;
    out->scratch_bytes = (uint32_t)(16 + 16 * vec4s);
    tg_sb_printf(&g->b,
                 "layout(std430, binding = %d) coherent buffer TgScratch {\n"
                 "    uint scr_count;\n"
                 "    uint scr_pad[3];\n"
                 "    vec4 scr[];\n"
                 "};\n"
                 "layout(binding = %d, rgba32f) coherent readonly uniform imageBuffer scr_t;\n"
                 "shared bool tg_scr_last;\n",
                 nb, nb + 1);
    return TG_OK;
}

void tg_gen_scratch_last(tg_gen *g, uint64_t groups) {
    tg_sb_printf(&g->b,
                 "    memoryBarrier();\n"
                 "    barrier();\n"
                 "    if (gl_LocalInvocationIndex == 0u)\n"
                 "        tg_scr_last = atomicAdd(scr_count, 1u) == %lluu;\n"
                 "    barrier();\n"
                 "    memoryBarrier();\n",
                 (unsigned long long)groups - 1);
}

void tg_gen_scratch_done(tg_gen *g) {
    tg_sb_printf(&g->b, "    if (gl_LocalInvocationIndex == 0u && tg_scr_last) scr_count = 0u;\n");
}

tg_status tg_gen_finish(tg_gen *g, uint64_t n_groups) {
    const tg_vk_caps *caps = g->caps;
    tg_kernel_code *out = g->out;
    if (g->b.oom) {
        tg_gen_abort(g);
        return tg_set_error(TG_ERR_NO_MEMORY, "kernel generator: out of memory");
    }
    if (n_groups < 1) n_groups = 1; /* empty tensors: one group that does nothing */
    uint64_t mx = caps->max_workgroup_count[0], my = caps->max_workgroup_count[1],
             mz = caps->max_workgroup_count[2];
    uint64_t gx = n_groups < mx ? n_groups : mx;
    uint64_t rest = (n_groups + gx - 1) / gx;
    uint64_t gy = rest < my ? rest : my;
    uint64_t gz = (rest + gy - 1) / gy;
    if (gz > mz) {
        tg_gen_abort(g);
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s: %llu workgroups exceed the device's grid %llux%llux%llu",
                            out->name, (unsigned long long)n_groups, (unsigned long long)mx,
                            (unsigned long long)my, (unsigned long long)mz);
    }
    out->groups[0] = (uint32_t)gx;
    out->groups[1] = (uint32_t)gy;
    out->groups[2] = (uint32_t)gz;
    out->glsl = g->b.s;
    memset(&g->b, 0, sizeof g->b);
    return TG_OK;
}

void tg_gen_abort(tg_gen *g) {
    tg_sb_free(&g->b);
}

int tg_gen_input_index(const tg_kernel *k, int32_t id) {
    for (int i = 0; i < k->n_inputs; i++)
        if (k->inputs[i] == id) return i;
    return -1;
}

bool tg_gen_output_f32(const tg_kernel *k, int j) {
    return k->output_storage[j] == TG_F32 && k->g->nodes[k->outputs[j]].dtype == TG_F32;
}

void tg_gen_store4_fn(tg_sb *b, bool pairs, int binding, const char *fn) {
    if (!pairs) {
        tg_sb_printf(b,
                     "layout(std430, binding = %d) writeonly buffer %s_B { vec4 %s_d[]; };\n"
                     "void %s(int i, vec4 v) { %s_d[i] = v; }\n",
                     binding, fn, fn, fn, fn);
        return;
    }
    tg_sb_printf(b,
                 "layout(std430, binding = %d) writeonly buffer %s_B { u64vec2 %s_d[]; };\n"
                 "void %s(int i, vec4 v) {\n"
                 "    %s_d[i] = u64vec2(packUint2x32(floatBitsToUint(v.xy)), "
                 "packUint2x32(floatBitsToUint(v.zw)));\n}\n",
                 binding, fn, fn, fn, fn);
}

const char *tg_gen_store4_extension(bool pairs) {
    return pairs ? "#extension GL_ARB_gpu_shader_int64 : require\n" : "";
}

void tg_gen_vec4_output(tg_sb *b, const tg_kernel *k, int j) {
    tg_sb_printf(b, "layout(std430, binding = %d) writeonly buffer BQ%d { vec4 o4_%d[]; };\n",
                 k->n_inputs + j, j, j);
}
