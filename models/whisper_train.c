/* whisper_train.c — the Whisper training step as one compiled graph, weight
 * initialisation and the learning-rate schedule (models/whisper_train.h).
 *
 * The graph:
 *
 *   mel [B, mels, 2S] -> encoder -> [B, S, d] --+
 *   tokens [B, T] --------------------------> decoder -> logits [B, T, V]
 *   loss = cross_entropy(logits, labels, ignore -100)     (mean over labels;
 *          optionally with label smoothing)
 *   grads = tg_gradients(loss, trainable weights)
 *   clipped, norm = tg_clip_by_global_norm(grads, max_grad_norm)
 *   one adamw op per weight (lr, step fed)                (target operations)
 *
 * transformers' semantics: the encoder's sinusoidal positions are not
 * trained; the loss is the mean over every non-ignored label of the batch.
 * The padding row of the token embedding gets no gradient from the lookup
 * because padded positions come after the last label, and with a causal
 * decoder nothing after a position changes its logits: their only way to
 * the loss would be their own (ignored) labels. The tied output projection
 * sends the row its gradient as in transformers. */
#define _POSIX_C_SOURCE 200809L
#include "models/whisper_train.h"
#include "graph/graph_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.14159265358979323846

struct tg_whisper_trainer {
    tg_whisper_config cfg;
    tg_whisper_train_options opt;
    tg_store *store;
    tg_device *dev;
    tg_graph *g;
    tg_tensor mel, tokens, labels, lr, step; /* placeholders */
    tg_tensor loss_scale;                    /* placeholder (f16) */
    tg_tensor encoder_out, logits, loss, grad_norm;
    int n_src; /* encoder positions of this shape */
    bool half; /* f16 matmuls and loss scaling */
    /* f16: the step is split in two executables, the gradients into the
     * "<name>.grad_acc" variables (unscaled) and, when they are finite,
     * the update; micro_norm is one micro-batch's unscaled norm */
    tg_tensor micro_norm;
    tg_whisper_loss_scaler scaler;
    bool last_skipped, overflow_pending;
    tg_executable *zero; /* f16 with accumulation: zero the accumulators (a skipped step) */
    int n_params;
    char **names;       /* [n_params] */
    tg_tensor *updates; /* [n_params] adamw ops */
    /* gradient accumulation (accum_steps > 1): the "<name>.grad_acc"
     * variables, the ops adding a micro-batch's gradients to them, and
     * the ops zeroing them after the update */
    tg_tensor *accum_ops, *zero_ops;
    tg_executable *train;     /* NULL on the interpreter; with accumulation: accumulate */
    tg_executable *apply;     /* with accumulation: clip + AdamW + zero */
    tg_executable *forward;   /* loss only; built lazily */
    tg_executable *encode;    /* encoder only; built lazily */
    tg_tensor *grads;         /* [n_params] d loss / d weight, before clipping */
    tg_executable *gradients; /* loss and grads, no update; built lazily */
};

void tg_whisper_train_options_default(tg_whisper_train_options *o) {
    memset(o, 0, sizeof *o);
    o->batch = 8;
    o->n_tokens = 64;
    o->beta1 = 0.9;
    o->beta2 = 0.999;
    o->eps = 1e-8;
    o->weight_decay = 0.01;
    o->max_grad_norm = 1.0;
    o->freeze_encoder = false;
    o->primitive_ops = true;
    o->precision = TG_F32;
    o->loss_scale = 65536.0;
    o->scale_growth_interval = 2000;
    o->fused_attention_min_scores = 1000000;
}

void tg_whisper_trainer_free(tg_whisper_trainer *t) {
    if (!t) return;
    tg_executable_free(t->train);
    tg_executable_free(t->forward);
    tg_executable_free(t->encode);
    tg_executable_free(t->gradients);
    free(t->grads);
    for (int i = 0; i < t->n_params; i++) free(t->names[i]);
    free(t->names);
    free(t->updates);
    free(t->accum_ops);
    free(t->zero_ops);
    tg_executable_free(t->apply);
    tg_executable_free(t->zero);
    tg_graph_free(t->g);
    free(t);
}

/* snprintf through vsnprintf for names built from parts (bounded; gcc's
 * truncation warning does not apply). */
static void nm(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void nm(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

static bool is_trainable(const tg_whisper_trainer *t, const char *name) {
    if (strcmp(name, "model.encoder.embed_positions.weight") == 0) return false;
    if (t->opt.freeze_encoder && strncmp(name, "model.encoder.", 14) == 0) return false;
    return true;
}

/* Collects the trainable weights of the graph by name, builds the
 * gradients, the clipping and the AdamW ops. A weight that appears as
 * several variable nodes of one name gets the sum of their gradients. */
static tg_status build_optimizer(tg_whisper_trainer *t) {
    tg_graph *g = t->g;
    int n_nodes = tg_graph_node_count(g);
    tg_tensor *wrt = malloc((size_t)n_nodes * sizeof *wrt);
    int *owner = malloc((size_t)n_nodes * sizeof *owner); /* wrt index -> param index */
    t->names = calloc((size_t)n_nodes, sizeof *t->names);
    tg_tensor *first = malloc((size_t)n_nodes * sizeof *first);
    if (!wrt || !owner || !t->names || !first) {
        free(wrt);
        free(owner);
        free(first);
        return tg_set_error(TG_ERR_NO_MEMORY, "whisper trainer: out of memory");
    }
    int n_wrt = 0;
    for (int i = 0; i < n_nodes; i++) {
        tg_tensor v = {i};
        if (strcmp(tg_tensor_op(g, v), "variable") != 0) continue;
        const char *name = tg_tensor_name(g, v);
        if (!name || !is_trainable(t, name)) continue;
        int p = 0;
        while (p < t->n_params && strcmp(t->names[p], name) != 0) p++;
        if (p == t->n_params) {
            t->names[p] = strdup(name);
            if (!t->names[p]) break;
            first[p] = v;
            t->n_params++;
        }
        owner[n_wrt] = p;
        wrt[n_wrt++] = v;
    }
    tg_status st = TG_OK;
    tg_tensor *grads = malloc((size_t)(n_wrt + 1) * sizeof *grads);
    tg_tensor *sum = malloc((size_t)(t->n_params + 1) * sizeof *sum);
    tg_tensor *clipped = malloc((size_t)(t->n_params + 1) * sizeof *clipped);
    t->updates = malloc((size_t)(t->n_params + 1) * sizeof *t->updates);
    t->grads = malloc((size_t)(t->n_params + 1) * sizeof *t->grads);
    if (!grads || !sum || !clipped || !t->updates || !t->grads) st = TG_ERR_NO_MEMORY;
    int accum = t->opt.accum_steps > 1 ? t->opt.accum_steps : 1;
    bool split = accum > 1 || t->half; /* gradients into variables, then the update */
    if (st == TG_OK && split) {
        t->accum_ops = malloc((size_t)(t->n_params + 1) * sizeof *t->accum_ops);
        t->zero_ops = malloc((size_t)(t->n_params + 1) * sizeof *t->zero_ops);
        if (!t->accum_ops || !t->zero_ops) st = TG_ERR_NO_MEMORY;
    }
    /* f16: the gradient of loss * scale (the seed is the scale), so small
     * gradients survive f16; unscaled right after */
    if (st == TG_OK && t->half)
        st = tg_gradients_seeded(g, t->loss, t->loss_scale, n_wrt, wrt, grads);
    else if (st == TG_OK)
        st = tg_gradients(g, t->loss, n_wrt, wrt, grads);
    if (st == TG_OK) {
        for (int p = 0; p < t->n_params; p++) sum[p] = TG_INVALID;
        for (int i = 0; i < n_wrt; i++) {
            int p = owner[i];
            sum[p] = sum[p].id < 0 ? grads[i] : tg_add(g, sum[p], grads[i]);
        }
        if (t->half) {
            tg_tensor inv = tg_div(g, tg_scalar(g, TG_F32, 1.0), t->loss_scale);
            tg_tensor total = tg_scalar(g, TG_F32, 0.0);
            for (int p = 0; p < t->n_params; p++) {
                sum[p] = tg_mul(g, sum[p], inv);
                total = tg_add(g, total, tg_sum(g, tg_square(g, sum[p]), 0, NULL, false));
            }
            t->micro_norm = tg_sqrt(g, total); /* not finite: an overflow */
        }
        memcpy(t->grads, sum, (size_t)t->n_params * sizeof *sum);
        if (split) {
            /* acc += grad / accum (each micro-batch's mean loss weighs
             * 1/accum, as transformers' Trainer divides the loss); the
             * update then reads the accumulated gradient */
            for (int p = 0; p < t->n_params; p++) {
                int64_t shape[TG_MAX_RANK];
                int rank = tg_tensor_shape(g, first[p], shape);
                char name[256];
                nm(name, sizeof name, "%s.grad_acc", t->names[p]);
                tg_tensor acc = tg_variable(g, name, TG_F32, rank, shape, false);
                tg_tensor add = tg_mul(g, sum[p], tg_scalar(g, TG_F32, 1.0 / accum));
                /* one micro-batch (f16): the update reads the gradient as
                 * assigned, nothing to zero */
                t->accum_ops[p] = tg_assign(g, acc, accum > 1 ? tg_add(g, acc, add) : sum[p]);
                t->zero_ops[p] =
                    tg_assign(g, acc, tg_broadcast_to(g, tg_scalar(g, TG_F32, 0.0), rank, shape));
                sum[p] = acc;
            }
        }
        if (t->opt.max_grad_norm > 0) {
            st = tg_clip_by_global_norm(g, t->n_params, sum, t->opt.max_grad_norm, clipped,
                                        &t->grad_norm);
        } else {
            /* the norm is still reported */
            memcpy(clipped, sum, (size_t)t->n_params * sizeof *sum);
            tg_tensor total = tg_scalar(g, TG_F32, 0.0);
            for (int p = 0; p < t->n_params; p++)
                total = tg_add(g, total, tg_sum(g, tg_square(g, sum[p]), 0, NULL, false));
            t->grad_norm = tg_sqrt(g, total);
        }
    }
    if (st == TG_OK) {
        for (int p = 0; p < t->n_params; p++) {
            /* no weight decay on biases and LayerNorm parameters (1-D) */
            double wd = tg_tensor_rank(g, first[p]) >= 2 ? t->opt.weight_decay : 0.0;
            t->updates[p] = tg_adamw(g, first[p], clipped[p], t->lr, t->step, t->opt.beta1,
                                     t->opt.beta2, t->opt.eps, wd);
        }
        st = tg_graph_status(g);
        if (st != TG_OK) tg_set_error(st, "whisper trainer: %s", tg_graph_error(g));
    } else if (st == TG_ERR_NO_MEMORY) {
        tg_set_error(st, "whisper trainer: out of memory");
    }
    free(wrt);
    free(owner);
    free(first);
    free(grads);
    free(sum);
    free(clipped);
    return st;
}

/* ------------------------------------------------------------------ */
/* The model from primitives                                           */
/* ------------------------------------------------------------------ */

/* The same encoder and decoder as tg_whisper_build_encoder/_decoder (same
 * variables, same arithmetic), with the two composites whose kernels are
 * slow on CPU devices written as primitives: conv1d as im2col (three
 * strided slices) and one matmul, attention as matmul, softmax, matmul
 * unless its scores are large (fused_attention). tests/test_train_step.c
 * checks both give the same loss. */

static tg_tensor wvar(tg_graph *g, const char *name, int rank, int64_t d0, int64_t d1, int64_t d2) {
    int64_t shape[3] = {d0, d1, d2};
    tg_tensor v = tg_graph_find(g, name);
    if (v.id >= 0 && strcmp(tg_tensor_op(g, v), "variable") == 0) return v;
    return tg_variable(g, name, TG_F32, rank, shape, true);
}

/* A matmul; with `half` its operands are cast to f16 (the kernel
 * accumulates in f32) and the product back to f32. */
static tg_tensor mm(tg_graph *g, bool half, tg_tensor a, tg_tensor b, bool ta, bool tb) {
    if (!half) return tg_matmul(g, a, b, ta, tb);
    return tg_cast(g, tg_matmul(g, tg_cast(g, a, TG_F16), tg_cast(g, b, TG_F16), ta, tb), TG_F32);
}

static tg_tensor wlinear(tg_graph *g, bool half, tg_tensor x, const char *p, int64_t in,
                         int64_t out, bool bias) {
    char n[160];
    nm(n, sizeof n, "%s.weight", p);
    tg_tensor y = mm(g, half, x, wvar(g, n, 2, out, in, 0), false, true);
    if (bias) {
        nm(n, sizeof n, "%s.bias", p);
        y = tg_add(g, y, wvar(g, n, 1, out, 0, 0));
    }
    return y;
}

static tg_tensor wnorm(tg_graph *g, tg_tensor x, const char *p, int64_t d) {
    char w[160], b[160];
    nm(w, sizeof w, "%s.weight", p);
    nm(b, sizeof b, "%s.bias", p);
    return tg_layer_norm(g, x, wvar(g, w, 1, d, 0, 0), wvar(g, b, 1, d, 0, 0), 1e-5);
}

/* x [B, W, Cin] -> [B, Wout, Cout]: kernel 3, padding 1, `stride`; the
 * weight [Cout, Cin, 3] read as [Cout, Cin*3] (index ci*3 + k). */
static tg_tensor conv3(tg_graph *g, bool half, tg_tensor x, const char *p, int64_t w_in,
                       int64_t cin, int64_t cout, int stride) {
    int64_t lo[3] = {0, 1, 0}, hi[3] = {0, 1, 0};
    tg_tensor xp = tg_pad(g, x, lo, hi, 0.0);
    int64_t wout = (w_in + 2 - 3) / stride + 1;
    tg_tensor cols[3];
    for (int k = 0; k < 3; k++) {
        int64_t b[3] = {0, k, 0}, e[3] = {INT64_MAX, k + stride * (wout - 1) + 1, INT64_MAX},
                st[3] = {1, stride, 1}, s4[4] = {0, 0, 0, 1};
        cols[k] = tg_reshape(g, tg_slice(g, xp, b, e, st), 4, s4);
    }
    int64_t s3[3] = {0, 0, cin * 3}, w2[2] = {cout, cin * 3};
    tg_tensor c = tg_reshape(g, tg_concat(g, 3, cols, 3), 3, s3);
    char n[160];
    nm(n, sizeof n, "%s.weight", p);
    tg_tensor w = tg_reshape(g, wvar(g, n, 3, cout, cin, 3), 2, w2);
    nm(n, sizeof n, "%s.bias", p);
    return tg_add(g, mm(g, half, c, w, false, true), wvar(g, n, 1, cout, 0, 0));
}

static tg_tensor heads(tg_graph *g, tg_tensor x, int64_t h, int64_t hd) {
    int64_t shape[4] = {0, 0, h, hd};
    int perm[4] = {0, 2, 1, 3};
    return tg_permute(g, tg_reshape(g, x, 4, shape), 4, perm);
}

/* Whether an attention of `batch` rows, h heads, tq queries and tk keys is
 * tg_attention: its scores per head reach the option's bound, or the
 * batch's f32 scores would pass 64 MiB (half of lavapipe's largest
 * buffer; unfused attention keeps scores, probabilities and their
 * gradients in buffers of that size). */
static bool fused_attention(const tg_whisper_train_options *o, int64_t h, int64_t tq, int64_t tk) {
    int64_t per_head = tq * tk;
    bool large = o->fused_attention_min_scores > 0 && per_head >= o->fused_attention_min_scores;
    return large || (int64_t)o->batch * h * per_head * 4 > ((int64_t)64 << 20);
}

/* fused: tg_attention on the f32 q, k, v (also with `half`: the flash
 * kernel's softmax is f32); else matmul, softmax, matmul. */
static tg_tensor wattention(tg_graph *g, bool half, bool fused, tg_tensor x, tg_tensor kv,
                            const char *p, int64_t d, int64_t h, int64_t tq, int64_t tk,
                            bool causal) {
    char n[160];
    int64_t hd = d / h;
    nm(n, sizeof n, "%s.q_proj", p);
    tg_tensor q = heads(g, wlinear(g, half, x, n, d, d, true), h, hd);
    nm(n, sizeof n, "%s.k_proj", p);
    tg_tensor k = heads(g, wlinear(g, half, kv, n, d, d, false), h, hd);
    nm(n, sizeof n, "%s.v_proj", p);
    tg_tensor v = heads(g, wlinear(g, half, kv, n, d, d, true), h, hd);
    tg_tensor o;
    if (fused) {
        /* causal with tq == tk: query i sees keys j <= i, as the mask below */
        o = tg_attention(g, q, k, v, TG_INVALID, causal, 1.0 / sqrt((double)hd));
    } else {
        tg_tensor sc =
            tg_mul(g, mm(g, half, q, k, false, true), tg_scalar(g, TG_F32, 1.0 / sqrt((double)hd)));
        if (causal) {
            int64_t ms[2] = {tq, tk};
            tg_tensor later = tg_gt(g, tg_iota(g, TG_I32, 2, ms, 1), tg_iota(g, TG_I32, 2, ms, 0));
            sc = tg_add(g, sc,
                        tg_where(g, later, tg_scalar(g, TG_F32, -1e30), tg_scalar(g, TG_F32, 0)));
        }
        o = mm(g, half, tg_softmax(g, sc, -1), v, false, false);
    }
    int perm[4] = {0, 2, 1, 3};
    int64_t s3[3] = {0, 0, d};
    o = tg_reshape(g, tg_permute(g, o, 4, perm), 3, s3);
    nm(n, sizeof n, "%s.out_proj", p);
    return wlinear(g, half, o, n, d, d, true);
}

static tg_tensor wffn(tg_graph *g, bool half, tg_tensor x, const char *p, int64_t d, int64_t f) {
    char n[160];
    nm(n, sizeof n, "%sfc1", p);
    tg_tensor h = tg_gelu(g, wlinear(g, half, x, n, d, f, true));
    nm(n, sizeof n, "%sfc2", p);
    return wlinear(g, half, h, n, f, d, true);
}

/* S: the encoder positions of this window (a bucket may be shorter than
 * the table; it reads the table's first S rows). */
static tg_tensor build_encoder_primitive(tg_graph *g, const tg_whisper_train_options *o,
                                         const tg_whisper_config *c, tg_tensor mel, int64_t S) {
    bool half = o->precision == TG_F16;
    int64_t d = c->d_model, h = c->encoder_attention_heads;
    bool fused = fused_attention(o, h, S, S);
    int perm[3] = {0, 2, 1};
    tg_tensor x = tg_permute(g, mel, 3, perm); /* [B, 2S, mels] */
    x = tg_gelu(g, conv3(g, half, x, "model.encoder.conv1", 2 * S, c->num_mel_bins, d, 1));
    x = tg_gelu(g, conv3(g, half, x, "model.encoder.conv2", 2 * S, d, d, 2));
    tg_tensor pos =
        wvar(g, "model.encoder.embed_positions.weight", 2, c->max_source_positions, d, 0);
    if (S != c->max_source_positions) {
        int64_t b0[2] = {0, 0}, e0[2] = {S, d}, s1[2] = {1, 1};
        pos = tg_slice(g, pos, b0, e0, s1);
    }
    x = tg_add(g, x, pos);
    char p[128], q[160];
    for (int i = 0; i < c->encoder_layers; i++) {
        nm(p, sizeof p, "model.encoder.layers.%d.", i);
        nm(q, sizeof q, "%sself_attn_layer_norm", p);
        tg_tensor hn = wnorm(g, x, q, d);
        nm(q, sizeof q, "%sself_attn", p);
        tg_tensor a = wattention(g, half, fused, hn, hn, q, d, h, S, S, false);
        x = tg_add(g, x, a);
        nm(q, sizeof q, "%sfinal_layer_norm", p);
        x = tg_add(g, x, wffn(g, half, wnorm(g, x, q, d), p, d, c->encoder_ffn_dim));
    }
    return wnorm(g, x, "model.encoder.layer_norm", d);
}

static tg_tensor build_decoder_primitive(tg_graph *g, const tg_whisper_train_options *o,
                                         const tg_whisper_config *c, tg_tensor tokens,
                                         tg_tensor enc, int64_t T, int64_t S) {
    bool half = o->precision == TG_F16;
    int64_t d = c->d_model, h = c->decoder_attention_heads;
    bool fused_self = fused_attention(o, h, T, T), fused_cross = fused_attention(o, h, T, S);
    tg_tensor embed = wvar(g, "model.decoder.embed_tokens.weight", 2, c->vocab_size, d, 0);
    tg_tensor pos =
        wvar(g, "model.decoder.embed_positions.weight", 2, c->max_target_positions, d, 0);
    int64_t b0[2] = {0, 0}, e0[2] = {T, d}, s1[2] = {1, 1};
    tg_tensor x = tg_add(g, tg_gather(g, embed, tokens, 0), tg_slice(g, pos, b0, e0, s1));
    char p[128], q[160];
    for (int i = 0; i < c->decoder_layers; i++) {
        nm(p, sizeof p, "model.decoder.layers.%d.", i);
        nm(q, sizeof q, "%sself_attn_layer_norm", p);
        tg_tensor hh = wnorm(g, x, q, d);
        nm(q, sizeof q, "%sself_attn", p);
        x = tg_add(g, x, wattention(g, half, fused_self, hh, hh, q, d, h, T, T, true));
        nm(q, sizeof q, "%sencoder_attn_layer_norm", p);
        hh = wnorm(g, x, q, d);
        nm(q, sizeof q, "%sencoder_attn", p);
        x = tg_add(g, x, wattention(g, half, fused_cross, hh, enc, q, d, h, T, S, false));
        nm(q, sizeof q, "%sfinal_layer_norm", p);
        x = tg_add(g, x, wffn(g, half, wnorm(g, x, q, d), p, d, c->decoder_ffn_dim));
    }
    x = wnorm(g, x, "model.decoder.layer_norm", d);
    return mm(g, half, x, embed, false, true);
}

/* The mean cross-entropy over the labels that are not ignored, with label
 * smoothing eps (torch's cross_entropy): (1 - eps) * nll + eps * the mean
 * over those labels of -mean_v log p_v. Autodiff gives its gradient. */
static tg_tensor smoothed_cross_entropy(tg_graph *g, tg_tensor logits, tg_tensor labels,
                                        double eps) {
    tg_tensor nll = tg_cross_entropy(g, logits, labels, TG_WHISPER_IGNORE);
    if (eps == 0) return nll;
    int vocab_axis = tg_tensor_rank(g, logits) - 1;
    tg_tensor uniform = /* [B, T]: -mean_v log p_v */
        tg_neg(g, tg_mean(g, tg_log_softmax(g, logits, -1), 1, &vocab_axis, false));
    tg_tensor kept = tg_ne(g, labels, tg_scalar(g, TG_I32, TG_WHISPER_IGNORE));
    tg_tensor zero = tg_scalar(g, TG_F32, 0.0);
    tg_tensor total = tg_sum(g, tg_where(g, kept, uniform, zero), 0, NULL, false);
    /* every label ignored: 0, as tg_cross_entropy */
    tg_tensor count = tg_maximum(g, tg_sum(g, tg_cast(g, kept, TG_F32), 0, NULL, false),
                                 tg_scalar(g, TG_F32, 1.0));
    return tg_add(g, tg_mul(g, nll, tg_scalar(g, TG_F32, 1.0 - eps)),
                  tg_mul(g, tg_div(g, total, count), tg_scalar(g, TG_F32, eps)));
}

/* The update ops: AdamW, then (with accumulation) zeroing the
 * accumulators; f16 without accumulation assigns them each step. */
static int apply_op_count(const tg_whisper_trainer *t) {
    return t->opt.accum_steps > 1 ? 2 * t->n_params : t->n_params;
}

tg_status tg_whisper_trainer_new(const tg_whisper_config *cfg, const tg_whisper_train_options *o,
                                 tg_store *store, tg_device *dev, tg_whisper_trainer **out) {
    if (!cfg || !o || !store || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_trainer_new: NULL argument");
    *out = NULL;
    if (o->batch < 1 || o->n_tokens < 2 || o->n_tokens > cfg->max_target_positions)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_trainer_new: batch %d, n_tokens %d (need batch >= 1 and "
                            "2 <= n_tokens <= max_target_positions %d)",
                            o->batch, o->n_tokens, cfg->max_target_positions);
    if (cfg->weight_dtype != TG_F32)
        return tg_set_error(TG_ERR_UNSUPPORTED, "tg_whisper_trainer_new: weights must be f32");
    int n_src = o->source_positions > 0 ? o->source_positions : cfg->max_source_positions;
    if (n_src < 2 || n_src > cfg->max_source_positions)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_trainer_new: %d source positions (the table has %d)",
                            o->source_positions, cfg->max_source_positions);
    if (o->precision != TG_F32 && o->precision != TG_F16)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_trainer_new: precision %s",
                            tg_dtype_name(o->precision));
    if (!(o->label_smoothing >= 0 && o->label_smoothing < 1))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_trainer_new: label_smoothing %g is outside [0, 1)",
                            o->label_smoothing);
    bool half = o->precision == TG_F16;
    if (half && (!o->primitive_ops || !(o->loss_scale > 0) || !isfinite(o->loss_scale) ||
                 o->scale_growth_interval < 1))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_trainer_new: f16 needs primitive_ops, a positive finite "
                            "loss_scale and scale_growth_interval >= 1");
    tg_whisper_trainer *t = calloc(1, sizeof *t);
    if (!t) return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_trainer_new: out of memory");
    t->cfg = *cfg;
    t->opt = *o;
    t->store = store;
    t->dev = dev;
    t->n_src = n_src;
    t->half = half;
    t->scaler.scale = half ? o->loss_scale : 1.0;
    tg_graph *g = t->g = tg_graph_new();
    if (!g) {
        free(t);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_trainer_new: out of memory");
    }
    int64_t B = o->batch, T = o->n_tokens;
    int64_t mshape[3] = {B, cfg->num_mel_bins, 2 * (int64_t)n_src};
    int64_t tshape[2] = {B, T};
    t->mel = tg_placeholder(g, "mel", TG_F32, 3, mshape);
    t->tokens = tg_placeholder(g, "tokens", TG_I32, 2, tshape);
    t->labels = tg_placeholder(g, "labels", TG_I32, 2, tshape);
    t->lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    t->step = tg_placeholder(g, "step", TG_I32, 0, NULL);
    t->loss_scale = half ? tg_placeholder(g, "loss_scale", TG_F32, 0, NULL) : TG_INVALID;
    if (o->primitive_ops) {
        t->encoder_out = build_encoder_primitive(g, o, cfg, t->mel, n_src);
        t->logits = build_decoder_primitive(g, o, cfg, t->tokens, t->encoder_out, T, n_src);
    } else if (n_src != cfg->max_source_positions) {
        tg_whisper_trainer_free(t);
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "tg_whisper_trainer_new: a shorter window needs primitive_ops");
    } else {
        t->encoder_out = tg_whisper_build_encoder(g, cfg, t->mel);
        t->logits = tg_whisper_build_decoder(g, cfg, t->tokens, t->encoder_out);
    }
    t->loss = smoothed_cross_entropy(g, t->logits, t->labels, o->label_smoothing);
    tg_status st = tg_graph_status(g);
    if (st != TG_OK) {
        tg_set_error(st, "whisper trainer: %s", tg_graph_error(g));
        tg_whisper_trainer_free(t);
        return st;
    }
    st = build_optimizer(t);
    if (st == TG_OK) st = tg_store_init_missing(store, g, 0, 0.0); /* the moments: zeros */
    if (st == TG_OK && dev && (o->accum_steps > 1 || half)) {
        tg_tensor targets[2] = {t->loss, t->micro_norm};
        st = tg_compile(dev, g, store, half ? 2 : 1, targets, t->n_params, t->accum_ops, NULL,
                        &t->train);
        tg_tensor *ops = st == TG_OK ? malloc((size_t)(2 * t->n_params) * sizeof *ops) : NULL;
        if (st == TG_OK && !ops)
            st = tg_set_error(TG_ERR_NO_MEMORY, "whisper trainer: out of memory");
        if (st == TG_OK) {
            memcpy(ops, t->updates, (size_t)t->n_params * sizeof *ops);
            memcpy(ops + t->n_params, t->zero_ops, (size_t)t->n_params * sizeof *ops);
            st = tg_compile(dev, g, store, 1, &t->grad_norm, apply_op_count(t), ops, NULL,
                            &t->apply);
        }
        if (st == TG_OK && half && o->accum_steps > 1)
            st = tg_compile(dev, g, store, 0, NULL, t->n_params, t->zero_ops, NULL, &t->zero);
        free(ops);
    } else if (st == TG_OK && dev) {
        tg_tensor targets[2] = {t->loss, t->grad_norm};
        st = tg_compile(dev, g, store, 2, targets, t->n_params, t->updates, NULL, &t->train);
    }
    if (st != TG_OK) {
        tg_whisper_trainer_free(t);
        return st;
    }
    *out = t;
    return TG_OK;
}

/* Feeds of a batch; arrays point at the caller's data. */
typedef struct batch_feeds {
    tg_array mel, tokens, labels, lr, step, scale;
    float lr_value, scale_value;
    int32_t step_value;
    /* mel, tokens, labels, then with f16 the loss scale (n_batch = 4),
     * then lr and step */
    tg_feed feeds[6];
    int n_batch;
} batch_feeds;

static void make_feeds(const tg_whisper_trainer *t, batch_feeds *f, const float *mel,
                       const int32_t *tokens, const int32_t *labels, float lr, int step) {
    int64_t B = t->opt.batch, T = t->opt.n_tokens;
    f->lr_value = lr;
    f->step_value = step;
    f->mel = (tg_array){TG_F32, 3, {B, t->cfg.num_mel_bins, 2 * (int64_t)t->n_src}, (void *)mel};
    f->tokens = (tg_array){TG_I32, 2, {B, T}, (void *)tokens};
    f->labels = (tg_array){TG_I32, 2, {B, T}, (void *)labels};
    f->lr = (tg_array){TG_F32, 0, {0}, &f->lr_value};
    f->step = (tg_array){TG_I32, 0, {0}, &f->step_value};
    f->feeds[0] = (tg_feed){t->mel, &f->mel};
    f->feeds[1] = (tg_feed){t->tokens, &f->tokens};
    f->feeds[2] = (tg_feed){t->labels, &f->labels};
    f->n_batch = 3;
    if (t->half) {
        f->scale_value = (float)t->scaler.scale;
        f->scale = (tg_array){TG_F32, 0, {0}, &f->scale_value};
        f->feeds[f->n_batch++] = (tg_feed){t->loss_scale, &f->scale};
    }
    f->feeds[f->n_batch] = (tg_feed){t->lr, &f->lr};
    f->feeds[f->n_batch + 1] = (tg_feed){t->step, &f->step};
}

static tg_status check_batch(const tg_whisper_trainer *t, const float *mel, const int32_t *tokens,
                             const int32_t *labels) {
    if (!t || !mel || !tokens || !labels)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "whisper trainer: NULL argument");
    int64_t n = (int64_t)t->opt.batch * t->opt.n_tokens;
    for (int64_t i = 0; i < n; i++) {
        if (tokens[i] < 0 || tokens[i] >= t->cfg.vocab_size)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "whisper trainer: token %d at %lld is outside the vocabulary (%d)",
                                tokens[i], (long long)i, t->cfg.vocab_size);
        if (labels[i] != TG_WHISPER_IGNORE && (labels[i] < 0 || labels[i] >= t->cfg.vocab_size))
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "whisper trainer: label %d at %lld is outside the vocabulary (%d)",
                                labels[i], (long long)i, t->cfg.vocab_size);
    }
    return TG_OK;
}

/* Dynamic loss scaling after a step's gradients (PyTorch's GradScaler): a
 * non-finite gradient skips the update and halves the scale; after
 * scale_growth_interval finite steps in a row the scale doubles. */
static void scaler_update(tg_whisper_trainer *t, bool finite) {
    t->last_skipped = !finite;
    if (!finite) {
        t->scaler.scale *= 0.5;
        t->scaler.good_steps = 0;
        t->scaler.skipped++;
    } else if (++t->scaler.good_steps >= t->opt.scale_growth_interval) {
        t->scaler.scale *= 2.0;
        t->scaler.good_steps = 0;
    }
}

/* The gradients of one micro-batch into the accumulators: *loss, and with
 * f16 *micro_norm (the unscaled gradient's norm; not finite: overflow). */
static tg_status run_accumulate(tg_whisper_trainer *t, batch_feeds *f, double *loss,
                                double *micro_norm) {
    tg_array res[2] = {{0}, {0}};
    tg_tensor targets[2] = {t->loss, t->micro_norm};
    int n = t->half ? 2 : 1;
    tg_status st;
    if (t->train)
        st = tg_run(t->train, f->n_batch, f->feeds, res);
    else
        st = tg_interpret(t->g, t->store, f->n_batch, f->feeds, n, targets, res, t->n_params,
                          t->accum_ops, 0);
    if (st != TG_OK) return st;
    if (loss) *loss = tg_array_get(&res[0], 0);
    *micro_norm = t->half ? tg_array_get(&res[1], 0) : 0.0;
    tg_array_free(&res[0]);
    tg_array_free(&res[1]);
    return TG_OK;
}

/* The update from the accumulators (clip, AdamW, zero), or with a pending
 * overflow (f16) only the zeroing. */
static tg_status run_apply(tg_whisper_trainer *t, float lr, int step, double *grad_norm) {
    bool skip = t->half && t->overflow_pending;
    t->overflow_pending = false;
    if (t->half) {
        /* AdamW's step counts the updates made, as torch.optim's state */
        step -= (int)t->scaler.skipped;
        if (step < 1) step = 1;
        scaler_update(t, !skip);
    }
    if (skip) {
        if (grad_norm) *grad_norm = INFINITY;
        if (t->opt.accum_steps < 2) return TG_OK; /* the next step assigns them */
        if (t->zero) return tg_run(t->zero, 0, NULL, NULL);
        return tg_interpret(t->g, t->store, 0, NULL, 0, NULL, NULL, t->n_params, t->zero_ops, 0);
    }
    float lr_value = lr;
    int32_t step_value = step;
    tg_array la = {TG_F32, 0, {0}, &lr_value}, sa = {TG_I32, 0, {0}, &step_value}, res = {0};
    tg_feed feeds[2] = {{t->lr, &la}, {t->step, &sa}};
    tg_status st;
    if (t->apply) {
        st = tg_run(t->apply, 2, feeds, &res);
    } else {
        tg_tensor *ops = malloc((size_t)(2 * t->n_params) * sizeof *ops);
        if (!ops) return tg_set_error(TG_ERR_NO_MEMORY, "whisper trainer: out of memory");
        memcpy(ops, t->updates, (size_t)t->n_params * sizeof *ops);
        if (t->zero_ops) memcpy(ops + t->n_params, t->zero_ops, (size_t)t->n_params * sizeof *ops);
        st = tg_interpret(t->g, t->store, 2, feeds, 1, &t->grad_norm, &res, apply_op_count(t), ops,
                          0);
        free(ops);
    }
    if (st != TG_OK) return st;
    if (grad_norm) *grad_norm = tg_array_get(&res, 0);
    tg_array_free(&res);
    return TG_OK;
}

tg_status tg_whisper_trainer_step(tg_whisper_trainer *t, const float *mel, const int32_t *tokens,
                                  const int32_t *labels, float lr, int step, double *loss,
                                  double *grad_norm) {
    tg_status st = check_batch(t, mel, tokens, labels);
    if (st != TG_OK) return st;
    if (step < 1)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "whisper trainer: step %d (1-based)", step);
    if (t->opt.accum_steps > 1)
        return tg_set_error(
            TG_ERR_INVALID_ARGUMENT,
            "whisper trainer: with gradient accumulation, use accumulate and apply");
    batch_feeds f;
    make_feeds(t, &f, mel, tokens, labels, lr, step);
    if (t->half) {
        /* gradients first; the update only when they are finite */
        double micro_norm;
        st = run_accumulate(t, &f, loss, &micro_norm);
        if (st != TG_OK) return st;
        t->overflow_pending = !isfinite(micro_norm);
        return run_apply(t, lr, step, grad_norm);
    }
    tg_array res[2] = {{0}, {0}};
    tg_tensor targets[2] = {t->loss, t->grad_norm};
    if (t->train)
        st = tg_run(t->train, 5, f.feeds, res);
    else
        st = tg_interpret(t->g, t->store, 5, f.feeds, 2, targets, res, t->n_params, t->updates, 0);
    if (st != TG_OK) return st;
    if (loss) *loss = tg_array_get(&res[0], 0);
    if (grad_norm) *grad_norm = tg_array_get(&res[1], 0);
    tg_array_free(&res[0]);
    tg_array_free(&res[1]);
    return TG_OK;
}

tg_status tg_whisper_trainer_accumulate(tg_whisper_trainer *t, const float *mel,
                                        const int32_t *tokens, const int32_t *labels,
                                        double *loss) {
    tg_status st = check_batch(t, mel, tokens, labels);
    if (st != TG_OK) return st;
    if (t->opt.accum_steps < 2)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "whisper trainer: accum_steps is 1");
    batch_feeds f;
    make_feeds(t, &f, mel, tokens, labels, 0.0f, 1);
    double micro_norm;
    st = run_accumulate(t, &f, loss, &micro_norm);
    if (st == TG_OK && !isfinite(micro_norm)) t->overflow_pending = true;
    return st;
}

tg_status tg_whisper_trainer_apply(tg_whisper_trainer *t, float lr, int step, double *grad_norm) {
    if (!t || step < 1 || t->opt.accum_steps < 2)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "whisper trainer: apply needs accum_steps > 1 and step >= 1");
    return run_apply(t, lr, step, grad_norm);
}

void tg_whisper_trainer_get_scaler(const tg_whisper_trainer *t, tg_whisper_loss_scaler *s) {
    if (t && s) *s = t->scaler;
}

tg_status tg_whisper_trainer_set_scaler(tg_whisper_trainer *t, const tg_whisper_loss_scaler *s) {
    if (!t || !s || !(s->scale > 0) || !isfinite(s->scale) || s->good_steps < 0 || s->skipped < 0)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "whisper trainer: bad loss-scaler state");
    t->scaler = *s;
    if (!t->half) t->scaler.scale = 1.0;
    return TG_OK;
}

bool tg_whisper_trainer_last_skipped(const tg_whisper_trainer *t) {
    return t && t->last_skipped;
}

tg_status tg_whisper_trainer_loss(tg_whisper_trainer *t, const float *mel, const int32_t *tokens,
                                  const int32_t *labels, double *loss) {
    tg_status st = check_batch(t, mel, tokens, labels);
    if (st != TG_OK) return st;
    batch_feeds f;
    make_feeds(t, &f, mel, tokens, labels, 0.0f, 1);
    if (t->dev && !t->forward) {
        st = tg_compile(t->dev, t->g, t->store, 1, &t->loss, 0, NULL, NULL, &t->forward);
        if (st != TG_OK) return st;
    }
    tg_array res = {0};
    if (t->forward)
        st = tg_run(t->forward, 3, f.feeds, &res);
    else
        st = tg_interpret(t->g, t->store, 3, f.feeds, 1, &t->loss, &res, 0, NULL, 0);
    if (st != TG_OK) return st;
    if (loss) *loss = tg_array_get(&res, 0);
    tg_array_free(&res);
    return TG_OK;
}

tg_status tg_whisper_trainer_gradients(tg_whisper_trainer *t, const float *mel,
                                       const int32_t *tokens, const int32_t *labels, double *loss,
                                       tg_array *grads) {
    tg_status st = check_batch(t, mel, tokens, labels);
    if (st != TG_OK) return st;
    if (!grads) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "whisper trainer: NULL argument");
    int n = t->n_params + 1;
    tg_tensor *targets = malloc((size_t)n * sizeof *targets);
    tg_array *res = calloc((size_t)n, sizeof *res);
    if (!targets || !res) {
        free(targets);
        free(res);
        return tg_set_error(TG_ERR_NO_MEMORY, "whisper trainer: out of memory");
    }
    targets[0] = t->loss;
    memcpy(targets + 1, t->grads, (size_t)t->n_params * sizeof *targets);
    batch_feeds f;
    make_feeds(t, &f, mel, tokens, labels, 0.0f, 1);
    if (t->dev && !t->gradients)
        st = tg_compile(t->dev, t->g, t->store, n, targets, 0, NULL, NULL, &t->gradients);
    if (st == TG_OK && t->gradients)
        st = tg_run(t->gradients, f.n_batch, f.feeds, res);
    else if (st == TG_OK)
        st = tg_interpret(t->g, t->store, f.n_batch, f.feeds, n, targets, res, 0, NULL, 0);
    if (st == TG_OK) {
        if (loss) *loss = tg_array_get(&res[0], 0);
        tg_array_free(&res[0]);
        memcpy(grads, res + 1, (size_t)t->n_params * sizeof *grads);
    }
    free(targets);
    free(res);
    return st;
}

tg_status tg_whisper_trainer_encode(tg_whisper_trainer *t, const float *mel, tg_array *out) {
    if (!t || !mel || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "whisper trainer: NULL argument");
    batch_feeds f;
    make_feeds(t, &f, mel, NULL, NULL, 0.0f, 1);
    tg_status st;
    if (t->dev && !t->encode) {
        st = tg_compile(t->dev, t->g, t->store, 1, &t->encoder_out, 0, NULL, NULL, &t->encode);
        if (st != TG_OK) return st;
    }
    if (t->encode) return tg_run(t->encode, 1, f.feeds, out);
    return tg_interpret(t->g, t->store, 1, f.feeds, 1, &t->encoder_out, out, 0, NULL, 0);
}

int tg_whisper_trainer_param_count(const tg_whisper_trainer *t) {
    return t ? t->n_params : 0;
}

const char *tg_whisper_trainer_param_name(const tg_whisper_trainer *t, int i) {
    return t && i >= 0 && i < t->n_params ? t->names[i] : NULL;
}

int tg_whisper_trainer_dispatches(const tg_whisper_trainer *t) {
    return t && t->train ? tg_executable_dispatches(t->train) : 0;
}

tg_status tg_whisper_trainer_profile(tg_whisper_trainer *t, char **table) {
    if (!t || !t->train)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "whisper trainer: no device executable");
    return tg_executable_profile(t->train, table, NULL);
}

/* ------------------------------------------------------------------ */
/* Initialisation and schedule                                         */
/* ------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Standard normal by Box-Muller. */
static double normal(uint64_t *s) {
    double u1 = ((double)(splitmix64(s) >> 11) + 1.0) / 9007199254740993.0; /* (0, 1] */
    double u2 = (double)(splitmix64(s) >> 11) / 9007199254740992.0;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * PI * u2);
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

tg_status tg_whisper_init_weights(tg_store *store, const tg_whisper_config *cfg, uint64_t seed) {
    if (!store || !cfg)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_init_weights: NULL argument");
    int n = tg_whisper_weight_count(cfg);
    if (n <= 0) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_init_weights: bad config");
    uint64_t s = seed;
    for (int i = 0; i < n; i++) {
        char name[128];
        int rank;
        int64_t shape[TG_MAX_RANK];
        tg_status st = tg_whisper_weight_info(cfg, i, name, sizeof name, &rank, shape);
        if (st != TG_OK) return st;
        tg_array a;
        st = tg_array_alloc(&a, TG_F32, rank, shape);
        if (st != TG_OK) return st;
        float *x = a.data;
        int64_t count = tg_array_count(&a);
        bool is_norm = strstr(name, "layer_norm") != NULL;
        if (strcmp(name, "model.encoder.embed_positions.weight") == 0) {
            st = tg_whisper_sinusoids((int)shape[0], (int)shape[1], x);
        } else if (ends_with(name, ".bias")) {
            /* zeros */
        } else if (is_norm) {
            for (int64_t j = 0; j < count; j++) x[j] = 1.0f;
        } else {
            for (int64_t j = 0; j < count; j++) x[j] = (float)(0.02 * normal(&s));
        }
        if (st == TG_OK) st = tg_store_set(store, name, &a);
        tg_array_free(&a);
        if (st != TG_OK) return st;
    }
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Length buckets                                                      */
/* ------------------------------------------------------------------ */

int tg_whisper_mel_frames_used(const float *mel, int n_mels, int frames) {
    if (!mel || n_mels < 1 || frames < 1) return 1;
    float floor_value = mel[0];
    for (int64_t i = 0; i < (int64_t)n_mels * frames; i++)
        if (mel[i] < floor_value) floor_value = mel[i];
    for (int f = frames - 1; f > 0; f--)
        for (int m = 0; m < n_mels; m++)
            if (mel[(int64_t)m * frames + f] > floor_value) return f + 1;
    return 1;
}

struct tg_whisper_buckets {
    int n_buckets, batch, n_records;
    int *frames, *n_tokens, *count; /* [n_buckets] */
    int **members;                  /* [n_buckets][count] record indices */
    int64_t per_epoch;              /* batches */
    uint64_t seed;
    int64_t epoch;    /* the epoch `plan` holds, -1: none */
    int *plan;        /* [per_epoch * batch] records or -1 */
    int *plan_bucket; /* [per_epoch] */
    int *scratch;     /* [n_records] */
};

void tg_whisper_buckets_free(tg_whisper_buckets *b) {
    if (!b) return;
    for (int i = 0; i < b->n_buckets; i++) free(b->members[i]);
    free(b->members);
    free(b->frames);
    free(b->n_tokens);
    free(b->count);
    free(b->plan);
    free(b->plan_bucket);
    free(b->scratch);
    free(b);
}

tg_status tg_whisper_buckets_new(int n_records, const int *record_frames, const int *record_tokens,
                                 int n_buckets, const int *bucket_frames, int max_tokens, int batch,
                                 uint64_t seed, tg_whisper_buckets **out) {
    if (!out || n_records < 1 || !record_frames || !record_tokens || n_buckets < 1 ||
        !bucket_frames || max_tokens < 1 || batch < 1)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_buckets_new: bad argument");
    *out = NULL;
    for (int i = 1; i < n_buckets; i++)
        if (bucket_frames[i] <= bucket_frames[i - 1] || bucket_frames[0] < 1)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "tg_whisper_buckets_new: bucket lengths must ascend");
    tg_whisper_buckets *b = calloc(1, sizeof *b);
    int *which = malloc((size_t)n_records * sizeof *which);
    if (b) {
        b->frames = calloc((size_t)n_buckets, sizeof *b->frames);
        b->n_tokens = calloc((size_t)n_buckets, sizeof *b->n_tokens);
        b->count = calloc((size_t)n_buckets, sizeof *b->count);
        b->members = calloc((size_t)n_buckets, sizeof *b->members);
        b->scratch = malloc((size_t)n_records * sizeof *b->scratch);
    }
    if (!b || !which || !b->frames || !b->n_tokens || !b->count || !b->members || !b->scratch) {
        free(which);
        tg_whisper_buckets_free(b);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_buckets_new: out of memory");
    }
    /* the first bucket that holds each record (the last holds the rest) */
    int longest[64] = {0}, counts[64] = {0};
    if (n_buckets > 64) n_buckets = 64;
    for (int r = 0; r < n_records; r++) {
        int k = 0;
        while (k < n_buckets - 1 && record_frames[r] > bucket_frames[k]) k++;
        which[r] = k;
        counts[k]++;
        if (record_tokens[r] > longest[k]) longest[k] = record_tokens[r];
    }
    /* keep the non-empty buckets and the last */
    int map[64];
    for (int k = 0; k < n_buckets; k++) {
        map[k] = -1;
        if (counts[k] == 0 && k < n_buckets - 1) continue;
        int i = b->n_buckets++;
        map[k] = i;
        b->frames[i] = bucket_frames[k];
        int tokens = counts[k] ? (longest[k] + 7) / 8 * 8 : max_tokens; /* empty: for any */
        b->n_tokens[i] = tokens < 8 ? 8 : tokens > max_tokens ? max_tokens : tokens;
        b->members[i] = malloc((size_t)(counts[k] + 1) * sizeof **b->members);
        if (!b->members[i]) {
            free(which);
            tg_whisper_buckets_free(b);
            return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_buckets_new: out of memory");
        }
    }
    for (int r = 0; r < n_records; r++) {
        int i = map[which[r]];
        b->members[i][b->count[i]++] = r;
    }
    free(which);
    b->batch = batch;
    b->n_records = n_records;
    b->seed = seed;
    b->epoch = -1;
    for (int i = 0; i < b->n_buckets; i++) b->per_epoch += (b->count[i] + batch - 1) / batch;
    b->plan = malloc((size_t)b->per_epoch * (size_t)batch * sizeof *b->plan);
    b->plan_bucket = malloc((size_t)b->per_epoch * sizeof *b->plan_bucket);
    if (!b->plan || !b->plan_bucket) {
        tg_whisper_buckets_free(b);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_buckets_new: out of memory");
    }
    *out = b;
    return TG_OK;
}

int tg_whisper_buckets_count(const tg_whisper_buckets *b) {
    return b ? b->n_buckets : 0;
}

void tg_whisper_buckets_shape(const tg_whisper_buckets *b, int i, int *frames, int *n_tokens,
                              int *n_records) {
    bool ok = b && i >= 0 && i < b->n_buckets;
    if (frames) *frames = ok ? b->frames[i] : 0;
    if (n_tokens) *n_tokens = ok ? b->n_tokens[i] : 0;
    if (n_records) *n_records = ok ? b->count[i] : 0;
}

int64_t tg_whisper_buckets_per_epoch(const tg_whisper_buckets *b) {
    return b ? b->per_epoch : 0;
}

static void shuffle(int *a, int n, uint64_t *s) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(splitmix64(s) % (uint64_t)(i + 1));
        int x = a[i];
        a[i] = a[j];
        a[j] = x;
    }
}

/* Epoch e's batches: each bucket's records shuffled and cut into batches,
 * then the order of the batches shuffled. */
static void plan_epoch(tg_whisper_buckets *b, int64_t epoch) {
    int B = b->batch;
    int *order = malloc((size_t)b->per_epoch * sizeof *order);
    int64_t j = 0;
    for (int i = 0; i < b->n_buckets; i++) {
        uint64_t s = b->seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(epoch + 1)) ^
                     (0x9E3779B97F4A7C15ull * (uint64_t)(i + 1));
        memcpy(b->scratch, b->members[i], (size_t)b->count[i] * sizeof *b->scratch);
        shuffle(b->scratch, b->count[i], &s);
        for (int k = 0; k < b->count[i]; k += B, j++) {
            b->plan_bucket[j] = i;
            for (int r = 0; r < B; r++)
                b->plan[j * B + r] = k + r < b->count[i] ? b->scratch[k + r] : -1;
        }
    }
    if (order) {
        /* the batch order: a permutation of the epoch's batches */
        uint64_t s = b->seed ^ (0xBF58476D1CE4E5B9ull * (uint64_t)(epoch + 1));
        for (int64_t k = 0; k < b->per_epoch; k++) order[k] = (int)k;
        shuffle(order, (int)b->per_epoch, &s);
        int *plan = malloc((size_t)b->per_epoch * (size_t)B * sizeof *plan);
        int *pb = malloc((size_t)b->per_epoch * sizeof *pb);
        if (plan && pb) {
            for (int64_t k = 0; k < b->per_epoch; k++) {
                memcpy(plan + k * B, b->plan + (int64_t)order[k] * B, (size_t)B * sizeof *plan);
                pb[k] = b->plan_bucket[order[k]];
            }
            free(b->plan);
            free(b->plan_bucket);
            b->plan = plan;
            b->plan_bucket = pb;
        } else {
            free(plan);
            free(pb); /* out of memory: the unshuffled batch order */
        }
    }
    free(order);
    b->epoch = epoch;
}

void tg_whisper_buckets_batch(tg_whisper_buckets *b, int64_t k, int *bucket, int *idx) {
    if (!b || k < 0 || !bucket || !idx) return;
    int64_t epoch = k / b->per_epoch, j = k % b->per_epoch;
    if (epoch != b->epoch) plan_epoch(b, epoch);
    *bucket = b->plan_bucket[j];
    memcpy(idx, b->plan + j * b->batch, (size_t)b->batch * sizeof *idx);
}

double tg_whisper_lr_schedule(int step, int total, int warmup, double peak, bool cosine) {
    if (step < 1) step = 1;
    if (warmup > 0 && step <= warmup) return peak * (double)step / (double)warmup;
    int span = total - warmup;
    if (span <= 0) return peak;
    double p = (double)(step - warmup) / (double)span; /* (0, 1] */
    if (p > 1) p = 1;
    return cosine ? peak * 0.5 * (1.0 + cos(PI * p)) : peak * (1.0 - p);
}
