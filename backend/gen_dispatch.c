/* backend/gen_dispatch.c — tg_gen_kernel: picks the generator of a
 * kernel's kind from the op of its last node (backend/kernel.h). */
#include "backend/gen_common.h"
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

/* The conv1d generator binds A = w at 0 and B = x at 1, but a kernel's
 * binding i is its input i, and conv1d's inputs are (x, w): swap the two
 * binding numbers in the source and the descriptions. */
static tg_status swap_conv_bindings(tg_mm_kernel *mk, const char *name) {
    const char *da = "layout(binding = 0) uniform samplerBuffer tA;";
    const char *db = "layout(binding = 1) uniform samplerBuffer tB;";
    char *pa = strstr(mk->glsl, da), *pb = strstr(mk->glsl, db);
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

static tg_status gen_matmul_kernel(const tg_vk_caps *caps, const tg_kernel *k,
                                   tg_kernel_code *out) {
    const tg_graph *gr = k->g;
    const tg_node *n = &gr->nodes[k->nodes[k->n_nodes - 1]];
    if (k->n_nodes != 1 || k->n_inputs != 2 || k->n_outputs != 1 || k->inputs[0] != n->inputs[0] ||
        k->inputs[1] != n->inputs[1])
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s %d: only a single matmul/conv1d node per kernel is supported",
                            tg_ops[n->op].name, (int)k->nodes[k->n_nodes - 1]);
    const tg_node *a = &gr->nodes[n->inputs[0]], *bn = &gr->nodes[n->inputs[1]];
    char name[64];
    snprintf(name, sizeof name, "%s_%d", tg_ops[n->op].name, (int)k->nodes[k->n_nodes - 1]);
    tg_mm_kernel mk;
    memset(&mk, 0, sizeof mk);
    tg_status st;
    if (k->input_storage[0] != k->input_storage[1])
        return tg_set_error(TG_ERR_UNSUPPORTED, "%s: operands stored as %s and %s", name,
                            tg_dtype_name(k->input_storage[0]), tg_dtype_name(k->input_storage[1]));
    if (n->op == TG_OP_MATMUL) {
        tg_mm_params p;
        memset(&p, 0, sizeof p);
        bool ta = n->attrs.transpose_a, tb = n->attrs.transpose_b;
        p.M = n->shape[n->rank - 2];
        p.N = n->shape[n->rank - 1];
        p.K = ta ? a->shape[a->rank - 2] : a->shape[a->rank - 1];
        p.batch = 1;
        p.n_batch_dims = matmul_batch_dims(a, bn, n, p.batch_dims);
        p.transpose_a = ta;
        p.transpose_b = tb;
        p.dtype = k->input_storage[0];
        p.out_dtype = k->output_storage[0];
        p.name = name;
        st = tg_gen_matmul(caps, &p, &mk);
    } else {
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
        st = tg_gen_conv1d(caps, &p, &mk);
        if (st == TG_OK) st = swap_conv_bindings(&mk, name);
    }
    if (st != TG_OK) return st;
    st = from_mm_kernel(&mk, k, out);
    tg_mm_kernel_free(&mk);
    return st;
}

tg_status tg_gen_kernel(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out) {
    if (!caps || !k || !out || !k->g || k->n_nodes < 1 || !k->nodes)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_gen_kernel: bad arguments");
    memset(out, 0, sizeof *out);
    const tg_node *n = &k->g->nodes[k->nodes[k->n_nodes - 1]];
    switch (tg_ops[n->op].klass) {
    case TG_CLASS_ELEMENTWISE: return tg_gen_elementwise(caps, k, out);
    case TG_CLASS_REDUCTION: return tg_gen_reduce(caps, k, out);
    case TG_CLASS_MOVEMENT: return tg_gen_movement(caps, k, out);
    case TG_CLASS_STATE:
        if (n->op == TG_OP_ADAMW_UPDATE || n->op == TG_OP_SGD_UPDATE)
            return tg_gen_optim(caps, k, out);
        return tg_gen_movement(caps, k, out);
    case TG_CLASS_MATMUL: return gen_matmul_kernel(caps, k, out);
    case TG_CLASS_OPAQUE:
        if (n->op == TG_OP_SCATTER_ADD) return tg_gen_movement(caps, k, out);
        if (tg_gen_grad_handles(n->op)) return tg_gen_grad(caps, k, out);
        return tg_gen_nn(caps, k, out);
    default:
        return tg_set_error(TG_ERR_UNSUPPORTED, "tg_gen_kernel: no kernel for a %s node",
                            tg_ops[n->op].name);
    }
}
