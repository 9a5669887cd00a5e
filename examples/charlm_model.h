/* charlm_model.h — the character transformer of examples/charlm.c and its
 * training step, as one graph: a learned token embedding (tied: the output
 * projection is its transpose) plus a learned position embedding, LAYERS
 * pre-norm blocks of causal multi-head attention (tg_attention) and a GELU
 * MLP, each with layer_norm and a residual, a final layer_norm, the
 * cross-entropy, tg_gradients and one AdamW op per parameter.
 * bench/train_step.c measures the same graph with a static batch.
 * Header-only: include it from one program. */
#ifndef CHARLM_MODEL_H
#define CHARLM_MODEL_H

#include <stdio.h>
#include <string.h>

#include "tg.h"

#define CHARLM_T 64 /* context length */
#define CHARLM_D 64 /* model width */
#define CHARLM_H 4  /* attention heads */
#define CHARLM_LAYERS 2

typedef struct charlm_model {
    tg_graph *g;
    tg_tensor tokens, targets, lr, step; /* placeholders */
    tg_tensor logits, loss;
    int n_params;
    tg_tensor params[64];
    tg_tensor updates[64]; /* the AdamW ops: the training step's target ops */
} charlm_model;

static tg_tensor charlm_param(charlm_model *m, const char *name, int rank, int64_t d0, int64_t d1) {
    int64_t shape[2] = {d0, d1};
    tg_tensor p = tg_variable(m->g, name, TG_F32, rank, shape, true);
    m->params[m->n_params++] = p;
    return p;
}

static tg_tensor charlm_linear(charlm_model *m, tg_tensor x, const char *name, int64_t in,
                               int64_t out, bool bias) {
    char n[64];
    snprintf(n, sizeof n, "%s.weight", name);
    tg_tensor y = tg_matmul(m->g, x, charlm_param(m, n, 2, in, out), false, false);
    if (!bias) return y;
    snprintf(n, sizeof n, "%s.bias", name);
    return tg_add(m->g, y, charlm_param(m, n, 1, out, 0));
}

static tg_tensor charlm_norm(charlm_model *m, tg_tensor x, const char *name) {
    char w[64], b[64];
    snprintf(w, sizeof w, "%s.weight", name);
    snprintf(b, sizeof b, "%s.bias", name);
    tg_tensor wt = charlm_param(m, w, 1, CHARLM_D, 0);
    return tg_layer_norm(m->g, x, wt, charlm_param(m, b, 1, CHARLM_D, 0), 1e-5);
}

/* [B, T, D] -> [B, H, T, D/H] and back (a 0 in a reshape keeps that
 * dimension: the batch may be dynamic). */
static tg_tensor charlm_heads(tg_graph *g, tg_tensor x) {
    x = tg_reshape(g, x, 4, (int64_t[]){0, CHARLM_T, CHARLM_H, CHARLM_D / CHARLM_H});
    return tg_permute(g, x, 4, (int[]){0, 2, 1, 3});
}

static tg_tensor charlm_merge(tg_graph *g, tg_tensor x) {
    x = tg_permute(g, x, 4, (int[]){0, 2, 1, 3});
    return tg_reshape(g, x, 3, (int64_t[]){0, CHARLM_T, CHARLM_D});
}

/* Builds the model for `vocab` tokens and `batch` sequences a step (-1:
 * any batch, fixed when the executable is compiled). */
static tg_status charlm_build(charlm_model *m, int vocab, int64_t batch) {
    memset(m, 0, sizeof *m);
    tg_graph *g = m->g = tg_graph_new();
    m->tokens = tg_placeholder(g, "tokens", TG_I32, 2, (int64_t[]){batch, CHARLM_T});
    m->targets = tg_placeholder(g, "targets", TG_I32, 2, (int64_t[]){batch, CHARLM_T});
    tg_tensor wte = charlm_param(m, "wte", 2, vocab, CHARLM_D);
    tg_tensor wpe = charlm_param(m, "wpe", 2, CHARLM_T, CHARLM_D);
    tg_tensor x = tg_add(g, tg_gather(g, wte, m->tokens, 0), wpe);
    const int64_t d = CHARLM_D;
    for (int l = 0; l < CHARLM_LAYERS; l++) {
        char n[64];
        snprintf(n, sizeof n, "h%d.ln1", l);
        tg_tensor h = charlm_norm(m, x, n);
        snprintf(n, sizeof n, "h%d.q", l);
        tg_tensor q = charlm_heads(g, charlm_linear(m, h, n, d, d, false));
        snprintf(n, sizeof n, "h%d.k", l);
        tg_tensor k = charlm_heads(g, charlm_linear(m, h, n, d, d, false));
        snprintf(n, sizeof n, "h%d.v", l);
        tg_tensor v = charlm_heads(g, charlm_linear(m, h, n, d, d, false));
        tg_tensor a = charlm_merge(g, tg_attention(g, q, k, v, TG_INVALID, true, 0));
        snprintf(n, sizeof n, "h%d.proj", l);
        x = tg_add(g, x, charlm_linear(m, a, n, d, d, true));
        snprintf(n, sizeof n, "h%d.ln2", l);
        h = charlm_norm(m, x, n);
        snprintf(n, sizeof n, "h%d.fc", l);
        h = tg_gelu(g, charlm_linear(m, h, n, d, 4 * d, true));
        snprintf(n, sizeof n, "h%d.fc2", l);
        x = tg_add(g, x, charlm_linear(m, h, n, 4 * d, d, true));
    }
    /* tied embeddings: logits = ln_f(x) wte^T */
    m->logits = tg_matmul(g, charlm_norm(m, x, "ln_f"), wte, false, true);
    m->loss = tg_cross_entropy(g, m->logits, m->targets, -1);

    tg_tensor grads[64];
    tg_status st = tg_gradients(g, m->loss, m->n_params, m->params, grads);
    if (st != TG_OK) return st;
    m->lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    m->step = tg_placeholder(g, "step", TG_I32, 0, NULL);
    for (int i = 0; i < m->n_params; i++) {
        /* weight decay on matrices only */
        double wd = tg_tensor_rank(g, m->params[i]) == 2 ? 0.01 : 0.0;
        m->updates[i] = tg_adamw(g, m->params[i], grads[i], m->lr, m->step, 0.9, 0.99, 1e-8, wd);
    }
    return tg_graph_status(g);
}

#endif
