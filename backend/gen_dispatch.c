/* backend/gen_dispatch.c — tg_gen_kernel: picks the generator of a
 * kernel's kind from the op of its last node (backend/kernel.h). */
#include "backend/gen_common.h"
#include "backend/gen_group.h"
#include "backend/gen_matmul.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tg_kernel_code_free(tg_kernel_code *c) {
    if (!c) return;
    free(c->glsl);
    memset(c, 0, sizeof *c);
}

tg_dtype tg_storage_dtype(const tg_vk_caps *caps, tg_dtype t) {
    switch (t) {
    case TG_F16: return caps->storage_16bit ? TG_F16 : TG_F32;
    case TG_BF16: return TG_F32;
    case TG_I8:
    case TG_U8: return TG_I32;
    default: return t;
    }
}

/* The batch dims of a matmul node for the generator: the output's batch
 * dims, each operand's stride along them (0 where it is broadcast: absent
 * or of extent 1). The generator merges what it can. */
static int matmul_batch_dims(const tg_node *a, const tg_node *b, const tg_node *out,
                             tg_mm_batch_dim *dims) {
    int br = out->rank - 2;
    int64_t sa[TG_MAX_RANK], sb[TG_MAX_RANK], sc[TG_MAX_RANK];
    tg_gen_bcast_strides(a->rank - 2, a->shape, br, out->shape, sa);
    tg_gen_bcast_strides(b->rank - 2, b->shape, br, out->shape, sb);
    tg_gen_row_strides(br, out->shape, sc);
    int64_t ma = a->shape[a->rank - 2] * a->shape[a->rank - 1];
    int64_t mb = b->shape[b->rank - 2] * b->shape[b->rank - 1];
    int64_t mc = out->shape[out->rank - 2] * out->shape[out->rank - 1];
    for (int d = 0; d < br; d++)
        dims[d] = (tg_mm_batch_dim){out->shape[d], sa[d] * ma, sb[d] * mb, sc[d] * mc, {0}};
    return br;
}

static tg_status from_mm_kernel(tg_mm_kernel *mk, const tg_kernel *k, tg_kernel_code *out) {
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", mk->name);
    out->n_bindings = mk->n_bindings;
    for (int i = 0; i < mk->n_bindings; i++) {
        out->kinds[i] = mk->bindings[i].kind;
        out->texel_formats[i] = mk->bindings[i].format;
    }
    memcpy(out->groups, mk->groups, sizeof out->groups);
    /* element offsets of every operand: 0, each tensor is bound at its own offset */
    out->push_bytes = mk->push_constant_bytes;
    out->glsl = mk->glsl;
    mk->glsl = NULL;
    (void)k;
    return TG_OK;
}

/* The "layout(binding = N" that starts the line declaring `decl` (" tA;"),
 * or NULL. */
static char *binding_line(char *glsl, int n, const char *decl) {
    char head[32];
    snprintf(head, sizeof head, "layout(binding = %d", n);
    for (char *p = strstr(glsl, head); p; p = strstr(p + 1, head)) {
        char *end = strchr(p, '\n'), *d = strstr(p, decl);
        if (d && (!end || d < end)) return p;
    }
    return NULL;
}

/* The conv1d generator binds A = w at 0 and B = x at 1, but a kernel's
 * binding i is its input i, and conv1d's inputs are (x, w): swap the two
 * binding numbers in the source and the descriptions. */
static tg_status swap_conv_bindings(tg_mm_kernel *mk, const char *name) {
    char *pa = binding_line(mk->glsl, 0, " tA;"), *pb = binding_line(mk->glsl, 1, " tB;");
    if (!pa || !pb || mk->n_bindings < 3 || mk->bindings[0].role != TG_MM_ROLE_A ||
        mk->bindings[1].role != TG_MM_ROLE_B) {
        tg_mm_kernel_free(mk);
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s: the conv1d generator's bindings are not (w, x, ...) as expected",
                            name);
    }
    pa[strlen("layout(binding = ")] = '1';
    pb[strlen("layout(binding = ")] = '0';
    tg_mm_binding t = mk->bindings[0];
    mk->bindings[0] = mk->bindings[1];
    mk->bindings[1] = t;
    return TG_OK;
}

/* The epilogue of a fused matmul/conv1d kernel (members after the root):
 * epi(), computing every output from acc and the extras e0.. (kernel
 * inputs 2..) with each member once, and tg_epilogue(), which stores the
 * outputs after the first into their own bindings (after C's) and returns
 * the first, which the generator stores as C. Outputs are dense with C's
 * shape: element (bz, row, col) is at bz*M*N + row*N + col. */
static tg_status matmul_epilogue(const tg_kernel *k, int ri, int64_t M, int64_t N, bool pairs,
                                 tg_sb *fns, char *call, size_t call_size, char *call4,
                                 size_t call4_size) {
    int n_extra = k->n_inputs - 2;
    int32_t given[1 + TG_MM_MAX_EXTRA];
    const char *names[1 + TG_MM_MAX_EXTRA] = {"acc", "e0", "e1", "e2", "e3"};
    char params[96] = ", float acc";
    given[0] = k->nodes[ri];
    for (int j = 0; j < n_extra; j++) {
        given[1 + j] = k->inputs[2 + j];
        size_t len = strlen(params);
        snprintf(params + len, sizeof params - len, ", float e%d", j);
    }
    tg_sb_printf(fns, "%s", tg_gen_math_glsl());
    int n_epi = k->n_nodes - ri - 1;
    /* one function for every output, so members they share (a GELU's
     * erf and its derivative's) are computed once */
    tg_status st =
        tg_gen_members_fn(fns, k, n_epi, k->nodes + ri + 1, k->g->nodes[k->nodes[ri]].rank,
                          k->g->nodes[k->nodes[ri]].shape, k->n_outputs, k->outputs, "epi", params,
                          1 + n_extra, given, names);
    if (st != TG_OK) return st;
    const char *args = params + 2; /* "float acc, float e0, ..." */
    char pass[64] = "acc";
    for (int j = 0; j < n_extra; j++) {
        size_t len = strlen(pass);
        snprintf(pass + len, sizeof pass - len, ", e%d", j);
    }
    for (int j = 1; j < k->n_outputs; j++)
        tg_sb_printf(fns,
                     "layout(std430, binding = %d) writeonly buffer BufO%d { %s o%d_data[]; };\n",
                     k->n_inputs + j, j, k->output_storage[j] == TG_F16 ? "float16_t" : "float", j);
    tg_sb_printf(fns, "float tg_epilogue(int bz, int row, int col, %s) {\n", args);
    tg_sb_printf(fns, "    uint i = uint(bz) * %lluu + uint(row) * %lluu + uint(col);\n",
                 (unsigned long long)(M * N), (unsigned long long)N);
    for (int j = 0; j < k->n_outputs; j++) tg_sb_printf(fns, "    float r%d;\n", j);
    tg_sb_printf(fns, "    epi(i, %s", pass);
    for (int j = 0; j < k->n_outputs; j++) tg_sb_printf(fns, ", r%d", j);
    tg_sb_printf(fns, ");\n");
    for (int j = 1; j < k->n_outputs; j++)
        tg_sb_printf(fns, "    o%d_data[i] = %s(r%d);\n", j,
                     k->output_storage[j] == TG_F16 ? "float16_t" : "float", j);
    tg_sb_printf(fns, "    return r0;\n}\n");
    snprintf(call, call_size, "tg_epilogue(bz, row, col, %s)", pass);
    /* Four elements along a row (col a multiple of 4), their outputs
     * stored as vec4s: on llvmpipe a store costs the same whole or scalar
     * (a loop over the lanes), so 4 scalar stores cost 4x (the second
     * output of a bias + GELU epilogue, 1024 x 256: 0.6 ms of 1.9). Only
     * where every output is f32 and rows are whole vec4s. */
    call4[0] = 0;
    bool f32 = true;
    for (int j = 0; j < k->n_outputs; j++) f32 &= k->output_storage[j] == TG_F32;
    if (!f32 || N % 4) return fns->oom ? tg_set_error(TG_ERR_NO_MEMORY, "out of memory") : TG_OK;
    char args4[96] = "vec4 acc";
    for (int j = 0; j < n_extra; j++) {
        size_t len = strlen(args4);
        snprintf(args4 + len, sizeof args4 - len, ", vec4 e%d", j);
    }
    for (int j = 1; j < k->n_outputs; j++) {
        char fn[16];
        snprintf(fn, sizeof fn, "st_o%d", j);
        tg_gen_store4_fn(fns, pairs, k->n_inputs + j, fn);
    }
    tg_sb_printf(fns, "vec4 tg_epilogue4(int bz, int row, int col, %s) {\n", args4);
    tg_sb_printf(fns, "    uint i = uint(bz) * %lluu + uint(row) * %lluu + uint(col);\n",
                 (unsigned long long)(M * N), (unsigned long long)N);
    for (int j = 0; j < k->n_outputs; j++) tg_sb_printf(fns, "    vec4 r%d;\n", j);
    for (int c = 0; c < 4; c++) {
        tg_sb_printf(fns, "    epi(i + %du, acc.%c", c, "xyzw"[c]);
        for (int e = 0; e < n_extra; e++) tg_sb_printf(fns, ", e%d.%c", e, "xyzw"[c]);
        for (int j = 0; j < k->n_outputs; j++) tg_sb_printf(fns, ", r%d.%c", j, "xyzw"[c]);
        tg_sb_printf(fns, ");\n");
    }
    for (int j = 1; j < k->n_outputs; j++)
        tg_sb_printf(fns, "    st_o%d(int(i >> 2), r%d);\n", j, j);
    tg_sb_printf(fns, "    return r0;\n}\n");
    snprintf(call4, call4_size, "tg_epilogue4(bz, row, col, %s)", pass);
    return fns->oom ? tg_set_error(TG_ERR_NO_MEMORY, "out of memory") : TG_OK;
}

/* Strides of extra input x read at the elements of `out` (broadcast):
 * per batch dim, and along rows and columns. */
static void extra_strides(const tg_node *x, const tg_node *out, tg_mm_extra *e, int n_batch,
                          tg_mm_batch_dim *dims, int which) {
    int64_t s[TG_MAX_RANK];
    tg_gen_bcast_strides(x->rank, x->shape, out->rank, out->shape, s);
    e->dtype = TG_F32;
    e->stride_row = s[out->rank - 2];
    e->stride_col = s[out->rank - 1];
    e->stride_batch = out->rank > 2 ? s[0] : 0;
    for (int d = 0; d < n_batch; d++) dims[d].stride_extra[which] = s[d];
}

/* A matmul or conv1d, with its fused elementwise epilogue: the kernel's
 * inputs are the two operands (conv1d: x, w), then the epilogue's extra
 * inputs; output 0 is stored as C, the others by the epilogue. */
static tg_status gen_matmul_kernel(const tg_vk_caps *caps, const tg_kernel *k, int ri,
                                   tg_kernel_code *out) {
    const tg_graph *gr = k->g;
    int32_t id = k->nodes[ri];
    const tg_node *n = &gr->nodes[id];
    int n_extra = k->n_inputs - 2;
    if (k->n_inputs < 2 || k->inputs[0] != n->inputs[0] || k->inputs[1] != n->inputs[1] ||
        n_extra > TG_MM_MAX_EXTRA || (ri != k->n_nodes - 1 && ri != 0) ||
        (k->n_nodes == 1 && (k->n_outputs != 1 || n_extra)))
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s %d: a matmul/conv1d kernel is the product, then its epilogue, "
                            "with at most %d extra inputs",
                            tg_ops[n->op].name, (int)id, TG_MM_MAX_EXTRA);
    for (int j = 0; j < n_extra; j++)
        if (k->input_storage[2 + j] != TG_F32 && k->input_storage[2 + j] != TG_F16)
            return tg_set_error(TG_ERR_UNSUPPORTED, "%s %d: epilogue input %d is not a float",
                                tg_ops[n->op].name, (int)id, (int)k->inputs[2 + j]);
    for (int j = 1; j < k->n_outputs; j++)
        if (k->output_storage[j] != k->output_storage[0])
            return tg_set_error(TG_ERR_UNSUPPORTED, "%s %d: epilogue outputs stored differently",
                                tg_ops[n->op].name, (int)id);
    const tg_node *a = &gr->nodes[n->inputs[0]], *bn = &gr->nodes[n->inputs[1]];
    char name[64];
    snprintf(name, sizeof name, "%s_%d", tg_ops[n->op].name, (int)k->nodes[k->n_nodes - 1]);
    tg_mm_kernel mk;
    memset(&mk, 0, sizeof mk);
    tg_sb fns;
    memset(&fns, 0, sizeof fns);
    char call[128] = "", call4[128] = "";
    tg_status st = TG_OK;
    if (k->input_storage[0] != k->input_storage[1])
        return tg_set_error(TG_ERR_UNSUPPORTED, "%s: operands stored as %s and %s", name,
                            tg_dtype_name(k->input_storage[0]), tg_dtype_name(k->input_storage[1]));
    /* a matmul and the sum over its batch axes (passes/fusion.c, "batch
     * sum"): one product with the batch folded into K, stored as the sum */
    const tg_node *last = &gr->nodes[k->nodes[k->n_nodes - 1]];
    bool batch_sum = k->n_nodes == 2 && ri == 0 && last->op == TG_OP_SUM;
    if (batch_sum && (n->op != TG_OP_MATMUL || !n->attrs.transpose_a || n->attrs.transpose_b ||
                      last->inputs[0] != id || n_extra || k->n_outputs != 1 || a->rank != n->rank ||
                      bn->rank != n->rank))
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s: a batch sum needs a^T b over dense operands of its batch", name);
    int64_t M, N;
    if (n->op == TG_OP_MATMUL) {
        M = n->shape[n->rank - 2];
        N = n->shape[n->rank - 1];
    } else {
        M = n->shape[1];
        N = n->shape[2];
    }
    if (k->n_nodes > 1 && !batch_sum)
        st = matmul_epilogue(k, ri, M, N, tg_store_pairs(caps), &fns, call, sizeof call, call4,
                             sizeof call4);
    if (st == TG_OK && n->op == TG_OP_MATMUL) {
        tg_mm_params p;
        memset(&p, 0, sizeof p);
        bool ta = n->attrs.transpose_a, tb = n->attrs.transpose_b;
        p.M = M;
        p.N = N;
        p.K = ta ? a->shape[a->rank - 2] : a->shape[a->rank - 1];
        p.batch = 1;
        p.n_batch_dims = matmul_batch_dims(a, bn, n, p.batch_dims);
        p.transpose_a = ta;
        p.transpose_b = tb;
        p.dtype = k->input_storage[0];
        p.out_dtype = k->output_storage[0];
        p.name = name;
        p.n_extra = n_extra;
        for (int j = 0; j < n_extra; j++) {
            extra_strides(&gr->nodes[k->inputs[2 + j]], n, &p.extra[j], p.n_batch_dims,
                          p.batch_dims, j);
            p.extra[j].dtype = k->input_storage[2 + j];
        }
        if (n_extra && p.n_batch_dims == 0) p.batch = 1;
        if (batch_sum) {
            p.K *= tg_shape_count(n->rank - 2, n->shape);
            p.n_batch_dims = 0;
        }
        p.epilogue = call[0] ? call : NULL;
        p.epilogue4 = call4[0] ? call4 : NULL;
        p.epilogue_functions = call[0] ? fns.s : NULL;
        p.offsets_zero = true; /* from_mm_kernel: every operand bound at its offset */
        st = tg_gen_matmul(caps, &p, &mk);
    } else if (st == TG_OK) {
        tg_conv1d_params p;
        memset(&p, 0, sizeof p);
        p.batch = a->shape[0];
        p.cin = a->shape[1];
        p.width = a->shape[2];
        p.cout = bn->shape[0];
        p.ksize = bn->shape[2];
        p.stride = n->attrs.stride;
        p.padding = n->attrs.padding;
        p.dilation = n->attrs.dilation;
        p.dtype = k->input_storage[0];
        p.out_dtype = k->output_storage[0];
        p.name = name;
        p.n_extra = n_extra;
        tg_mm_batch_dim unused[1];
        for (int j = 0; j < n_extra; j++) {
            extra_strides(&gr->nodes[k->inputs[2 + j]], n, &p.extra[j], 0, unused, j);
            p.extra[j].dtype = k->input_storage[2 + j];
        }
        p.epilogue = call[0] ? call : NULL;
        p.epilogue_functions = call[0] ? fns.s : NULL;
        st = tg_gen_conv1d(caps, &p, &mk);
        if (st == TG_OK) st = swap_conv_bindings(&mk, name);
    }
    free(fns.s);
    if (st != TG_OK) return st;
    st = from_mm_kernel(&mk, k, out);
    tg_mm_kernel_free(&mk);
    /* the epilogue's own outputs, after C */
    for (int j = 1; st == TG_OK && j < k->n_outputs; j++)
        out->kinds[out->n_bindings++] = TG_VK_BIND_STORAGE;
    return st;
}

/* The member that gives a kernel its kind: its first node that is
 * neither elementwise nor movement (movement members read a fused
 * operand: the slices of a multi-tensor optimizer's gradients), else (an
 * elementwise chain, a movement op) its last. */
static int kernel_root(const tg_kernel *k) {
    for (int i = 0; i < k->n_nodes; i++) {
        tg_op_class c = tg_ops[k->g->nodes[k->nodes[i]].op].klass;
        if (c != TG_CLASS_ELEMENTWISE && c != TG_CLASS_MOVEMENT) return i;
    }
    return k->n_nodes - 1;
}

tg_status tg_gen_kernel(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out) {
    if (!caps || !k || !out || !k->g || k->n_nodes < 1 || !k->nodes)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_gen_kernel: bad arguments");
    memset(out, 0, sizeof *out);
    if (tg_gen_is_group(k)) return tg_gen_group(caps, k, out); /* sibling matmuls */
    int ri = kernel_root(k);
    const tg_node *n = &k->g->nodes[k->nodes[ri]];
    switch (tg_ops[n->op].klass) {
    case TG_CLASS_ELEMENTWISE: return tg_gen_elementwise(caps, k, out);
    case TG_CLASS_REDUCTION: return tg_gen_reduce(caps, k, out);
    case TG_CLASS_MOVEMENT: return tg_gen_movement(caps, k, out);
    case TG_CLASS_STATE:
        if (n->op == TG_OP_ADAMW_UPDATE || n->op == TG_OP_SGD_UPDATE)
            return tg_gen_optim(caps, k, out);
        return tg_gen_movement(caps, k, out);
    case TG_CLASS_MATMUL: return gen_matmul_kernel(caps, k, ri, out);
    case TG_CLASS_OPAQUE:
        if (n->op == TG_OP_SCATTER_ADD) return tg_gen_movement(caps, k, out);
        /* fused layer norm backward, cross-entropy with its gradient (gen_nn.c) */
        if (k->n_nodes > 1 &&
            (n->op == TG_OP_LAYER_NORM_GRAD_X || n->op == TG_OP_LAYER_NORM_GRAD_WB ||
             n->op == TG_OP_CROSS_ENTROPY || n->op == TG_OP_CROSS_ENTROPY_GRAD))
            return tg_gen_nn(caps, k, out);
        /* attention_grad_k + attention_grad_v (passes/fusion.c merge_attention) */
        if (k->n_nodes == 2 && tg_gen_attention_backward_handles(n))
            return tg_gen_attention_backward(caps, k, out);
        if (tg_gen_grad_handles(n->op)) return tg_gen_grad(caps, k, out);
        if (n->op == TG_OP_ATTENTION) return tg_gen_attention(caps, k, out);
        return tg_gen_nn(caps, k, out);
    default:
        return tg_set_error(TG_ERR_UNSUPPORTED, "tg_gen_kernel: no kernel for a %s node",
                            tg_ops[n->op].name);
    }
}
