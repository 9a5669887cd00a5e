/* whisper.c — Whisper's encoder and decoder as tg graphs, and loading
 * Hugging Face checkpoints into a store.
 *
 * The graphs follow transformers' WhisperForConditionalGeneration: pre-LN
 * blocks, q scaled by head_dim^-0.5, k_proj without bias, exact GELU,
 * LayerNorm eps 1e-5, logits against the token embedding. Every weight is a
 * variable named as in the checkpoint, so loading is a name lookup. */
#include "models/whisper.h"
#include "graph/graph_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LN_EPS 1e-5

/* snprintf for names built from parts (vsnprintf: gcc's truncation warning
 * does not apply; names are bounded by TG_WHISPER_NAME_MAX). */
static void fmt_name(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fmt_name(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

tg_status tg_whisper_check_config(const tg_whisper_config *cfg) {
    if (!cfg) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "whisper: config is NULL");
    const int sizes[] = {cfg->d_model,
                         cfg->encoder_layers,
                         cfg->decoder_layers,
                         cfg->encoder_attention_heads,
                         cfg->decoder_attention_heads,
                         cfg->encoder_ffn_dim,
                         cfg->decoder_ffn_dim,
                         cfg->num_mel_bins,
                         cfg->max_source_positions,
                         cfg->max_target_positions,
                         cfg->vocab_size};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i] <= 0)
            return tg_set_error(
                TG_ERR_INVALID_ARGUMENT,
                "whisper: config has a non-positive size (d_model %d, layers "
                "%d+%d, heads %d/%d, ffn %d/%d, mels %d, positions %d/%d, vocab %d)",
                cfg->d_model, cfg->encoder_layers, cfg->decoder_layers,
                cfg->encoder_attention_heads, cfg->decoder_attention_heads, cfg->encoder_ffn_dim,
                cfg->decoder_ffn_dim, cfg->num_mel_bins, cfg->max_source_positions,
                cfg->max_target_positions, cfg->vocab_size);
    if (cfg->d_model % cfg->encoder_attention_heads || cfg->d_model % cfg->decoder_attention_heads)
        return tg_set_error(
            TG_ERR_INVALID_ARGUMENT, "whisper: d_model %d is not a multiple of the heads (%d, %d)",
            cfg->d_model, cfg->encoder_attention_heads, cfg->decoder_attention_heads);
    if (cfg->decoder_layers > TG_WHISPER_MAX_LAYERS || cfg->encoder_layers > 1000)
        return tg_set_error(TG_ERR_UNSUPPORTED, "whisper: %d decoder layers (at most %d)",
                            cfg->decoder_layers, TG_WHISPER_MAX_LAYERS);
    if (!tg_dtype_is_float(cfg->weight_dtype))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "whisper: weight_dtype %s is not a float type",
                            tg_dtype_name(cfg->weight_dtype));
    if (strcmp(cfg->activation_function, "gelu") != 0)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "whisper: activation_function \"%s\" (only \"gelu\" is built)",
                            cfg->activation_function);
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* The list of weights                                                 */
/* ------------------------------------------------------------------ */

typedef struct weight {
    char name[TG_WHISPER_NAME_MAX];
    int rank;
    int64_t shape[TG_MAX_RANK];
} weight;

/* Appends one entry when `list` is not NULL; always counts. */
static void add_weight(weight *list, int *n, const char *prefix, const char *suffix, int rank,
                       int64_t d0, int64_t d1, int64_t d2) {
    if (list) {
        weight *w = &list[*n];
        fmt_name(w->name, sizeof w->name, "%s%s", prefix, suffix);
        w->rank = rank;
        w->shape[0] = d0;
        w->shape[1] = d1;
        w->shape[2] = d2;
    }
    (*n)++;
}

static void add_attention(weight *list, int *n, const char *p, int64_t d) {
    char q[TG_WHISPER_NAME_MAX];
    fmt_name(q, sizeof q, "%s.", p);
    add_weight(list, n, q, "k_proj.weight", 2, d, d, 0);
    add_weight(list, n, q, "v_proj.weight", 2, d, d, 0);
    add_weight(list, n, q, "v_proj.bias", 1, d, 0, 0);
    add_weight(list, n, q, "q_proj.weight", 2, d, d, 0);
    add_weight(list, n, q, "q_proj.bias", 1, d, 0, 0);
    add_weight(list, n, q, "out_proj.weight", 2, d, d, 0);
    add_weight(list, n, q, "out_proj.bias", 1, d, 0, 0);
}

static void add_norm(weight *list, int *n, const char *p, int64_t d) {
    char q[TG_WHISPER_NAME_MAX];
    fmt_name(q, sizeof q, "%s.", p);
    add_weight(list, n, q, "weight", 1, d, 0, 0);
    add_weight(list, n, q, "bias", 1, d, 0, 0);
}

static void add_ffn(weight *list, int *n, const char *p, int64_t d, int64_t ffn) {
    add_weight(list, n, p, "fc1.weight", 2, ffn, d, 0);
    add_weight(list, n, p, "fc1.bias", 1, ffn, 0, 0);
    add_weight(list, n, p, "fc2.weight", 2, d, ffn, 0);
    add_weight(list, n, p, "fc2.bias", 1, d, 0, 0);
}

/* Fills `list` (if not NULL) with every weight in a fixed order; returns the
 * count. */
static int weight_list(const tg_whisper_config *cfg, weight *list) {
    int n = 0;
    int64_t d = cfg->d_model;
    char p[TG_WHISPER_NAME_MAX], q[TG_WHISPER_NAME_MAX];
    const char *e = "model.encoder.";
    add_weight(list, &n, e, "conv1.weight", 3, d, cfg->num_mel_bins, 3);
    add_weight(list, &n, e, "conv1.bias", 1, d, 0, 0);
    add_weight(list, &n, e, "conv2.weight", 3, d, d, 3);
    add_weight(list, &n, e, "conv2.bias", 1, d, 0, 0);
    add_weight(list, &n, e, "embed_positions.weight", 2, cfg->max_source_positions, d, 0);
    for (int i = 0; i < cfg->encoder_layers; i++) {
        fmt_name(p, sizeof p, "model.encoder.layers.%d.", i);
        fmt_name(q, sizeof q, "%sself_attn", p);
        add_attention(list, &n, q, d);
        fmt_name(q, sizeof q, "%sself_attn_layer_norm", p);
        add_norm(list, &n, q, d);
        add_ffn(list, &n, p, d, cfg->encoder_ffn_dim);
        fmt_name(q, sizeof q, "%sfinal_layer_norm", p);
        add_norm(list, &n, q, d);
    }
    add_norm(list, &n, "model.encoder.layer_norm", d);

    const char *dd = "model.decoder.";
    add_weight(list, &n, dd, "embed_tokens.weight", 2, cfg->vocab_size, d, 0);
    add_weight(list, &n, dd, "embed_positions.weight", 2, cfg->max_target_positions, d, 0);
    for (int i = 0; i < cfg->decoder_layers; i++) {
        fmt_name(p, sizeof p, "model.decoder.layers.%d.", i);
        fmt_name(q, sizeof q, "%sself_attn", p);
        add_attention(list, &n, q, d);
        fmt_name(q, sizeof q, "%sself_attn_layer_norm", p);
        add_norm(list, &n, q, d);
        fmt_name(q, sizeof q, "%sencoder_attn", p);
        add_attention(list, &n, q, d);
        fmt_name(q, sizeof q, "%sencoder_attn_layer_norm", p);
        add_norm(list, &n, q, d);
        add_ffn(list, &n, p, d, cfg->decoder_ffn_dim);
        fmt_name(q, sizeof q, "%sfinal_layer_norm", p);
        add_norm(list, &n, q, d);
    }
    add_norm(list, &n, "model.decoder.layer_norm", d);
    return n;
}

int tg_whisper_weight_count(const tg_whisper_config *cfg) {
    if (tg_whisper_check_config(cfg) != TG_OK) return -1;
    return weight_list(cfg, NULL);
}

tg_status tg_whisper_weight_info(const tg_whisper_config *cfg, int i, char *name, size_t name_size,
                                 int *rank, int64_t *shape) {
    tg_status st = tg_whisper_check_config(cfg);
    if (st != TG_OK) return st;
    int n = weight_list(cfg, NULL);
    if (i < 0 || i >= n)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_weight_info: index %d of %d", i,
                            n);
    weight *list = malloc((size_t)n * sizeof *list);
    if (!list) return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_weight_info: out of memory");
    weight_list(cfg, list);
    if (name && name_size) snprintf(name, name_size, "%s", list[i].name);
    if (rank) *rank = list[i].rank;
    if (shape) {
        for (int k = 0; k < TG_MAX_RANK; k++) shape[k] = k < list[i].rank ? list[i].shape[k] : 0;
    }
    free(list);
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Loading a checkpoint                                                */
/* ------------------------------------------------------------------ */

static void format_shape(char *buf, size_t size, int rank, const int64_t *shape) {
    size_t used = 0;
    used += (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < rank && used < size; i++)
        used +=
            (size_t)snprintf(buf + used, size - used, "%s%lld", i ? "," : "", (long long)shape[i]);
    if (used < size) snprintf(buf + used, size - used, "]");
}

/* Appends a problem to a bounded report. */
typedef struct report {
    char text[1536];
    size_t used;
    int count;
} report;

static void report_add(report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report_add(report *r, const char *fmt, ...) {
    r->count++;
    if (r->count > 8) return; /* the count says how many more */
    if (r->used >= sizeof r->text - 1) return;
    if (r->count > 1)
        r->used += (size_t)snprintf(r->text + r->used, sizeof r->text - r->used, "; ");
    if (r->used >= sizeof r->text - 1) return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(r->text + r->used, sizeof r->text - r->used, fmt, ap);
    va_end(ap);
    if (k > 0) r->used += (size_t)k;
    if (r->used > sizeof r->text - 1) r->used = sizeof r->text - 1;
}

/* The checkpoint index of HF name `name` (with the "model." prefix), also
 * trying the name without the prefix; -1 if absent. */
static int find_tensor(const tg_safetensors *st, const char *name) {
    int i = tg_safetensors_find(st, name);
    if (i < 0 && strncmp(name, "model.", 6) == 0) i = tg_safetensors_find(st, name + 6);
    return i;
}

static bool same_shape(int ra, const int64_t *a, int rb, const int64_t *b) {
    if (ra != rb) return false;
    for (int i = 0; i < ra; i++)
        if (a[i] != b[i]) return false;
    return true;
}

/* Checks proj_out.weight, when present, against embed_tokens. */
static void check_proj_out(const tg_safetensors *st, const tg_whisper_config *cfg, report *r) {
    int i = tg_safetensors_find(st, "proj_out.weight");
    if (i < 0) return;
    int rank = 0;
    int64_t shape[TG_MAX_RANK] = {0};
    tg_dtype dt;
    if (tg_safetensors_info(st, i, &dt, &rank, shape) != TG_OK) {
        report_add(r, "proj_out.weight: %s", tg_last_error());
        return;
    }
    int64_t want[2] = {cfg->vocab_size, cfg->d_model};
    if (!same_shape(rank, shape, 2, want)) {
        char got[96], exp[96];
        format_shape(got, sizeof got, rank, shape);
        format_shape(exp, sizeof exp, 2, want);
        report_add(r, "proj_out.weight has shape %s, expected %s", got, exp);
        return;
    }
    int e = find_tensor(st, "model.decoder.embed_tokens.weight");
    if (e < 0) return; /* reported as missing already */
    tg_array a = {0}, b = {0};
    if (tg_safetensors_read(st, "proj_out.weight", TG_F32, &a) != TG_OK ||
        tg_safetensors_read(st, tg_safetensors_name(st, e), TG_F32, &b) != TG_OK) {
        report_add(r, "proj_out.weight: %s", tg_last_error());
    } else if (tg_array_count(&a) == tg_array_count(&b) &&
               memcmp(a.data, b.data, (size_t)tg_array_count(&a) * sizeof(float)) != 0) {
        report_add(r, "proj_out.weight differs from model.decoder.embed_tokens.weight (an "
                      "untied output projection is not supported)");
    }
    tg_array_free(&a);
    tg_array_free(&b);
}

tg_status tg_whisper_load_weights(tg_store *store, const tg_whisper_config *cfg,
                                  const tg_safetensors *st, tg_dtype dtype) {
    if (!store || !st)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_load_weights: NULL argument");
    tg_status status = tg_whisper_check_config(cfg);
    if (status != TG_OK) return status;
    if (!tg_dtype_is_float(dtype))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_load_weights: dtype %s is not a float type",
                            tg_dtype_name(dtype));
    int n = weight_list(cfg, NULL);
    weight *list = malloc((size_t)n * sizeof *list);
    int n_file = tg_safetensors_count(st);
    bool *used = calloc((size_t)(n_file > 0 ? n_file : 1), sizeof *used);
    tg_array *arrays = calloc((size_t)n, sizeof *arrays);
    if (!list || !used || !arrays) {
        free(list);
        free(used);
        free(arrays);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_load_weights: out of memory");
    }
    weight_list(cfg, list);

    /* Check every name and shape first, reporting all problems at once. */
    report missing = {0}, shapes = {0};
    int *index = malloc((size_t)n * sizeof *index);
    if (!index) {
        free(list);
        free(used);
        free(arrays);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_load_weights: out of memory");
    }
    for (int i = 0; i < n; i++) {
        index[i] = find_tensor(st, list[i].name);
        char exp[96];
        format_shape(exp, sizeof exp, list[i].rank, list[i].shape);
        if (index[i] < 0) {
            report_add(&missing, "%s (expected %s)", list[i].name, exp);
            continue;
        }
        used[index[i]] = true;
        int rank = 0;
        int64_t shape[TG_MAX_RANK] = {0};
        tg_dtype dt;
        if (tg_safetensors_info(st, index[i], &dt, &rank, shape) != TG_OK) {
            report_add(&shapes, "%s: %s", list[i].name, tg_last_error());
            continue;
        }
        if (!tg_dtype_is_float(dt)) {
            report_add(&shapes, "%s has dtype %s, expected a float type", list[i].name,
                       tg_safetensors_file_dtype(st, index[i]));
        } else if (!same_shape(rank, shape, list[i].rank, list[i].shape)) {
            char got[96];
            format_shape(got, sizeof got, rank, shape);
            report_add(&shapes, "%s has shape %s, expected %s", list[i].name, got, exp);
        }
    }
    int pi = tg_safetensors_find(st, "proj_out.weight");
    if (pi >= 0) used[pi] = true;
    check_proj_out(st, cfg, &shapes);
    report unexpected = {0};
    for (int i = 0; i < n_file; i++)
        if (!used[i]) report_add(&unexpected, "%s", tg_safetensors_name(st, i));

    if (missing.count || shapes.count || unexpected.count) {
        char msg[5000];
        size_t k = 0;
        k += (size_t)snprintf(msg + k, sizeof msg - k,
                              "whisper checkpoint does not fit the config "
                              "(d_model %d, %d+%d layers, vocab %d):",
                              cfg->d_model, cfg->encoder_layers, cfg->decoder_layers,
                              cfg->vocab_size);
        if (missing.count && k < sizeof msg)
            k += (size_t)snprintf(msg + k, sizeof msg - k, " %d missing: %s%s;", missing.count,
                                  missing.text, missing.count > 8 ? "; ..." : "");
        if (shapes.count && k < sizeof msg)
            k += (size_t)snprintf(msg + k, sizeof msg - k, " %d wrong: %s%s;", shapes.count,
                                  shapes.text, shapes.count > 8 ? "; ..." : "");
        if (unexpected.count && k < sizeof msg)
            snprintf(msg + k, sizeof msg - k, " %d unexpected: %s%s", unexpected.count,
                     unexpected.text, unexpected.count > 8 ? "; ..." : "");
        free(list);
        free(used);
        free(arrays);
        free(index);
        return tg_set_error(missing.count && !shapes.count ? TG_ERR_NOT_FOUND : TG_ERR_SHAPE, "%s",
                            msg);
    }

    /* Read everything, then set the store: all or nothing. */
    for (int i = 0; i < n && status == TG_OK; i++)
        status = tg_safetensors_read(st, tg_safetensors_name(st, index[i]), dtype, &arrays[i]);
    for (int i = 0; i < n && status == TG_OK; i++)
        status = tg_store_set(store, list[i].name, &arrays[i]);
    for (int i = 0; i < n; i++) tg_array_free(&arrays[i]);
    free(list);
    free(used);
    free(arrays);
    free(index);
    return status;
}

tg_status tg_whisper_sinusoids(int length, int channels, float *out) {
    if (length <= 0 || channels < 4 || channels % 2 || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_sinusoids: length %d, channels %d (need > 0, even >= 4)",
                            length, channels);
    int half = channels / 2;
    /* In double precision; openai-whisper computes the same in f32, which
     * differs by a few ulps of the angle (up to ~1e-4 at position 1500).
     * Checkpoints store the table, so this is only for random weights. */
    double inc = log(10000.0) / (half - 1);
    for (int t = 0; t < length; t++) {
        for (int i = 0; i < half; i++) {
            double x = (double)t * exp(-inc * i);
            out[(size_t)t * channels + i] = (float)sin(x);
            out[(size_t)t * channels + half + i] = (float)cos(x);
        }
    }
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Graph building blocks                                               */
/* ------------------------------------------------------------------ */

static tg_tensor var(tg_graph *g, tg_dtype wt, const char *prefix, const char *suffix, int rank, int64_t d0,
                     int64_t d1, int64_t d2) {
    char name[TG_WHISPER_NAME_MAX];
    fmt_name(name, sizeof name, "%s%s", prefix, suffix);
    int64_t shape[3] = {d0, d1, d2};
    tg_tensor v = tg_variable(g, name, wt, rank, shape, true);
    /* Weights stored as f16/bf16 are read into f32: activations and
     * accumulation stay f32. */
    return wt == TG_F32 ? v : tg_cast(g, v, TG_F32);
}

/* x [..., in] @ W^T (+ b): W is "<p>.weight" [out, in], b "<p>.bias". */
static tg_tensor linear(tg_graph *g, tg_dtype wt, tg_tensor x, const char *p, int64_t in, int64_t out,
                        bool bias) {
    tg_tensor w = var(g, wt, p, ".weight", 2, out, in, 0);
    tg_tensor y = tg_matmul(g, x, w, false, true);
    if (bias) y = tg_add(g, y, var(g, wt, p, ".bias", 1, out, 0, 0));
    return y;
}

static tg_tensor layer_norm(tg_graph *g, tg_dtype wt, tg_tensor x, const char *p, int64_t d) {
    return tg_layer_norm(g, x, var(g, wt, p, ".weight", 1, d, 0, 0), var(g, wt, p, ".bias", 1, d, 0, 0),
                         LN_EPS);
}

/* [B, T, d] -> [B, H, T, d/H] */
static tg_tensor split_heads(tg_graph *g, tg_tensor x, int64_t heads, int64_t hd) {
    int64_t shape[4] = {0, 0, heads, hd};
    int perm[4] = {0, 2, 1, 3};
    return tg_permute(g, tg_reshape(g, x, 4, shape), 4, perm);
}

/* [B, H, T, hd] -> [B, T, H*hd] */
static tg_tensor merge_heads(tg_graph *g, tg_tensor x, int64_t d) {
    int perm[4] = {0, 2, 1, 3};
    tg_tensor y = tg_permute(g, x, 4, perm);
    int64_t shape[3] = {0, 0, d};
    return tg_reshape(g, y, 3, shape);
}

/* Multi-head attention of x against kv (the same tensor for self-attention):
 * q_proj, k_proj (no bias), v_proj, softmax(q k^T / sqrt(hd)) v, out_proj. */
static tg_tensor attention(tg_graph *g, tg_dtype wt, tg_tensor x, tg_tensor kv, const char *p, int64_t d,
                           int64_t heads, bool causal) {
    char n[TG_WHISPER_NAME_MAX];
    int64_t hd = d / heads;
    fmt_name(n, sizeof n, "%s.q_proj", p);
    tg_tensor q = split_heads(g, linear(g, wt, x, n, d, d, true), heads, hd);
    fmt_name(n, sizeof n, "%s.k_proj", p);
    tg_tensor k = split_heads(g, linear(g, wt, kv, n, d, d, false), heads, hd);
    fmt_name(n, sizeof n, "%s.v_proj", p);
    tg_tensor v = split_heads(g, linear(g, wt, kv, n, d, d, true), heads, hd);
    tg_tensor o = tg_attention(g, q, k, v, TG_INVALID, causal, 1.0 / sqrt((double)hd));
    fmt_name(n, sizeof n, "%s.out_proj", p);
    return linear(g, wt, merge_heads(g, o, d), n, d, d, true);
}

static tg_tensor ffn(tg_graph *g, tg_dtype wt, tg_tensor x, const char *p, int64_t d, int64_t ffn_dim) {
    char n[TG_WHISPER_NAME_MAX];
    fmt_name(n, sizeof n, "%sfc1", p);
    tg_tensor h = tg_gelu(g, linear(g, wt, x, n, d, ffn_dim, true));
    fmt_name(n, sizeof n, "%sfc2", p);
    return linear(g, wt, h, n, ffn_dim, d, true);
}

/* ------------------------------------------------------------------ */
/* Encoder                                                             */
/* ------------------------------------------------------------------ */

static bool fail(tg_graph *g, tg_status st, const char *what) {
    if (tg_graph_status(g) == TG_OK) tg_graph_fail(g, st, "%s: %s", what, tg_last_error());
    return false;
}

tg_tensor tg_whisper_build_encoder(tg_graph *g, const tg_whisper_config *cfg, tg_tensor mel) {
    if (!g) return TG_INVALID;
    tg_status st = tg_whisper_check_config(cfg);
    if (st != TG_OK) {
        fail(g, st, "tg_whisper_build_encoder");
        return TG_INVALID;
    }
    tg_dtype wt = cfg->weight_dtype;
    if (!tg_tensor_valid(g, mel)) return TG_INVALID;
    int64_t d = cfg->d_model, n_ctx = cfg->max_source_positions;
    int64_t shape[TG_MAX_RANK];
    int rank = tg_tensor_shape(g, mel, shape);
    if (rank != 3 || shape[1] != cfg->num_mel_bins || shape[2] != 2 * n_ctx ||
        tg_tensor_dtype(g, mel) != TG_F32) {
        char got[96];
        format_shape(got, sizeof got, rank, shape);
        tg_graph_fail(
            g, TG_ERR_SHAPE, "tg_whisper_build_encoder: mel is %s%s, expected f32[B,%d,%lld]",
            tg_dtype_name(tg_tensor_dtype(g, mel)), got, cfg->num_mel_bins, (long long)(2 * n_ctx));
        return TG_INVALID;
    }
    const char *e = "model.encoder.";
    tg_tensor x = tg_conv1d(g, mel, var(g, wt, e, "conv1.weight", 3, d, cfg->num_mel_bins, 3), 1, 1, 1);
    int64_t bshape[2] = {d, 1};
    x = tg_add(g, x, tg_reshape(g, var(g, wt, e, "conv1.bias", 1, d, 0, 0), 2, bshape));
    x = tg_gelu(g, x);
    x = tg_conv1d(g, x, var(g, wt, e, "conv2.weight", 3, d, d, 3), 2, 1, 1);
    x = tg_add(g, x, tg_reshape(g, var(g, wt, e, "conv2.bias", 1, d, 0, 0), 2, bshape));
    x = tg_gelu(g, x);
    int perm[3] = {0, 2, 1};
    x = tg_permute(g, x, 3, perm); /* [B, n_ctx, d] */
    x = tg_add(g, x, var(g, wt, e, "embed_positions.weight", 2, n_ctx, d, 0));

    char p[TG_WHISPER_NAME_MAX], q[TG_WHISPER_NAME_MAX];
    for (int i = 0; i < cfg->encoder_layers; i++) {
        fmt_name(p, sizeof p, "model.encoder.layers.%d.", i);
        fmt_name(q, sizeof q, "%sself_attn_layer_norm", p);
        tg_tensor h = layer_norm(g, wt, x, q, d);
        fmt_name(q, sizeof q, "%sself_attn", p);
        x = tg_add(g, x, attention(g, wt, h, h, q, d, cfg->encoder_attention_heads, false));
        fmt_name(q, sizeof q, "%sfinal_layer_norm", p);
        h = layer_norm(g, wt, x, q, d);
        x = tg_add(g, x, ffn(g, wt, h, p, d, cfg->encoder_ffn_dim));
    }
    return layer_norm(g, wt, x, "model.encoder.layer_norm", d);
}

/* ------------------------------------------------------------------ */
/* Full-sequence decoder                                               */
/* ------------------------------------------------------------------ */

tg_tensor tg_whisper_build_decoder(tg_graph *g, const tg_whisper_config *cfg, tg_tensor tokens,
                                   tg_tensor encoder_out) {
    if (!g) return TG_INVALID;
    tg_status st = tg_whisper_check_config(cfg);
    if (st != TG_OK) {
        fail(g, st, "tg_whisper_build_decoder");
        return TG_INVALID;
    }
    tg_dtype wt = cfg->weight_dtype;
    if (!tg_tensor_valid(g, tokens) || !tg_tensor_valid(g, encoder_out)) return TG_INVALID;
    int64_t d = cfg->d_model;
    int64_t shape[TG_MAX_RANK];
    int rank = tg_tensor_shape(g, tokens, shape);
    if (rank != 2 || shape[1] < 1 || shape[1] > cfg->max_target_positions ||
        tg_tensor_dtype(g, tokens) != TG_I32) {
        char got[96];
        format_shape(got, sizeof got, rank, shape);
        tg_graph_fail(g, TG_ERR_SHAPE,
                      "tg_whisper_build_decoder: tokens are %s%s, expected i32[B,T] with a static "
                      "1 <= T <= %d",
                      tg_dtype_name(tg_tensor_dtype(g, tokens)), got, cfg->max_target_positions);
        return TG_INVALID;
    }
    int64_t t = shape[1];
    const char *dd = "model.decoder.";
    tg_tensor embed = var(g, wt, dd, "embed_tokens.weight", 2, cfg->vocab_size, d, 0);
    tg_tensor pos = var(g, wt, dd, "embed_positions.weight", 2, cfg->max_target_positions, d, 0);
    int64_t b0[2] = {0, 0}, e0[2] = {t, d}, s1[2] = {1, 1};
    tg_tensor x = tg_add(g, tg_gather(g, embed, tokens, 0), tg_slice(g, pos, b0, e0, s1));

    char p[TG_WHISPER_NAME_MAX], q[TG_WHISPER_NAME_MAX];
    int64_t heads = cfg->decoder_attention_heads;
    for (int i = 0; i < cfg->decoder_layers; i++) {
        fmt_name(p, sizeof p, "model.decoder.layers.%d.", i);
        fmt_name(q, sizeof q, "%sself_attn_layer_norm", p);
        tg_tensor h = layer_norm(g, wt, x, q, d);
        fmt_name(q, sizeof q, "%sself_attn", p);
        x = tg_add(g, x, attention(g, wt, h, h, q, d, heads, true));
        fmt_name(q, sizeof q, "%sencoder_attn_layer_norm", p);
        h = layer_norm(g, wt, x, q, d);
        fmt_name(q, sizeof q, "%sencoder_attn", p);
        x = tg_add(g, x, attention(g, wt, h, encoder_out, q, d, heads, false));
        fmt_name(q, sizeof q, "%sfinal_layer_norm", p);
        h = layer_norm(g, wt, x, q, d);
        x = tg_add(g, x, ffn(g, wt, h, p, d, cfg->decoder_ffn_dim));
    }
    x = layer_norm(g, wt, x, "model.decoder.layer_norm", d);
    return tg_matmul(g, x, embed, false, true);
}

/* ------------------------------------------------------------------ */
/* KV-cache decoding graphs                                            */
/* ------------------------------------------------------------------ */

void tg_whisper_cache_name(char *buf, size_t size, bool cross, int layer, char kv) {
    snprintf(buf, size, "whisper.cache.%s.%d.%c", cross ? "cross" : "self", layer, kv);
}

static tg_tensor cache_var(tg_graph *g, bool cross, int layer, char kv, int64_t b, int64_t heads,
                           int64_t len, int64_t hd) {
    char name[TG_WHISPER_NAME_MAX];
    tg_whisper_cache_name(name, sizeof name, cross, layer, kv);
    int64_t shape[4] = {b, heads, len, hd};
    return tg_variable(g, name, TG_F32, 4, shape, false);
}

tg_status tg_whisper_build_cross_kv(tg_graph *g, const tg_whisper_config *cfg,
                                    tg_tensor encoder_out, tg_tensor *assigns) {
    if (!g || !assigns)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_build_cross_kv: NULL argument");
    tg_status st = tg_whisper_check_config(cfg);
    if (st != TG_OK) return st;
    tg_dtype wt = cfg->weight_dtype;
    int64_t shape[TG_MAX_RANK];
    int rank = tg_tensor_shape(g, encoder_out, shape);
    int64_t d = cfg->d_model, heads = cfg->decoder_attention_heads, hd = d / heads;
    if (rank != 3 || shape[0] < 1 || shape[1] != cfg->max_source_positions || shape[2] != d) {
        char got[96];
        format_shape(got, sizeof got, rank, shape);
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_whisper_build_cross_kv: encoder_out is %s, expected [B,%d,%lld] "
                            "with a static B",
                            got, cfg->max_source_positions, (long long)d);
    }
    char p[TG_WHISPER_NAME_MAX];
    for (int i = 0; i < cfg->decoder_layers; i++) {
        fmt_name(p, sizeof p, "model.decoder.layers.%d.encoder_attn.k_proj", i);
        tg_tensor k = split_heads(g, linear(g, wt, encoder_out, p, d, d, false), heads, hd);
        fmt_name(p, sizeof p, "model.decoder.layers.%d.encoder_attn.v_proj", i);
        tg_tensor v = split_heads(g, linear(g, wt, encoder_out, p, d, d, true), heads, hd);
        assigns[2 * i] = tg_assign(g, cache_var(g, true, i, 'k', shape[0], heads, shape[1], hd), k);
        assigns[2 * i + 1] =
            tg_assign(g, cache_var(g, true, i, 'v', shape[0], heads, shape[1], hd), v);
    }
    if (tg_graph_status(g) != TG_OK)
        return tg_set_error(tg_graph_status(g), "tg_whisper_build_cross_kv: %s", tg_graph_error(g));
    return TG_OK;
}

tg_status tg_whisper_build_step(tg_graph *g, const tg_whisper_config *cfg, int batch, int max_len,
                                tg_whisper_step *out) {
    if (!g || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_build_step: NULL argument");
    tg_status st = tg_whisper_check_config(cfg);
    if (st != TG_OK) return st;
    tg_dtype wt = cfg->weight_dtype;
    if (batch < 1 || max_len < 1 || max_len > cfg->max_target_positions)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_build_step: batch %d, max_len %d (need batch >= 1, "
                            "1 <= max_len <= max_target_positions %d)",
                            batch, max_len, cfg->max_target_positions);
    memset(out, 0, sizeof *out);
    int64_t d = cfg->d_model, heads = cfg->decoder_attention_heads, hd = d / heads;
    int64_t b = batch, len = max_len, n_ctx = cfg->max_source_positions;

    int64_t tshape[2] = {b, 1}, pshape[1] = {1};
    out->tokens = tg_placeholder(g, "tokens", TG_I32, 2, tshape);
    out->position = tg_placeholder(g, "position", TG_I32, 1, pshape);

    const char *dd = "model.decoder.";
    tg_tensor embed = var(g, wt, dd, "embed_tokens.weight", 2, cfg->vocab_size, d, 0);
    tg_tensor pos_table = var(g, wt, dd, "embed_positions.weight", 2, cfg->max_target_positions, d, 0);
    int64_t p3[3] = {1, 1, d};
    tg_tensor x = tg_add(g, tg_gather(g, embed, out->tokens, 0),
                         tg_reshape(g, tg_gather(g, pos_table, out->position, 0), 3, p3));

    /* The cache write position [0, 0, position, 0], and the additive mask:
     * keys after `position` get -1e30 (their softmax weight is exactly 0). */
    int32_t zeros[2] = {0, 0};
    int64_t two[1] = {2}, one[1] = {1};
    tg_tensor parts[3] = {tg_constant(g, TG_I32, 1, two, zeros), out->position,
                          tg_constant(g, TG_I32, 1, one, zeros)};
    tg_tensor start = tg_concat(g, 3, parts, 0);
    int64_t mshape[4] = {1, 1, 1, len}, p4[4] = {1, 1, 1, 1};
    tg_tensor later =
        tg_gt(g, tg_iota(g, TG_I32, 4, mshape, 3), tg_reshape(g, out->position, 4, p4));
    tg_tensor mask = tg_where(g, later, tg_scalar(g, TG_F32, -1e30), tg_scalar(g, TG_F32, 0.0));

    char p[TG_WHISPER_NAME_MAX], q[TG_WHISPER_NAME_MAX];
    double scale = 1.0 / sqrt((double)hd);
    for (int i = 0; i < cfg->decoder_layers; i++) {
        fmt_name(p, sizeof p, "model.decoder.layers.%d.", i);
        /* causal self-attention against the cache */
        fmt_name(q, sizeof q, "%sself_attn_layer_norm", p);
        tg_tensor h = layer_norm(g, wt, x, q, d);
        fmt_name(q, sizeof q, "%sself_attn.q_proj", p);
        tg_tensor qh = split_heads(g, linear(g, wt, h, q, d, d, true), heads, hd);
        fmt_name(q, sizeof q, "%sself_attn.k_proj", p);
        tg_tensor kh = split_heads(g, linear(g, wt, h, q, d, d, false), heads, hd);
        fmt_name(q, sizeof q, "%sself_attn.v_proj", p);
        tg_tensor vh = split_heads(g, linear(g, wt, h, q, d, d, true), heads, hd);
        tg_tensor kc =
            tg_slice_update(g, cache_var(g, false, i, 'k', b, heads, len, hd), kh, start);
        tg_tensor vc =
            tg_slice_update(g, cache_var(g, false, i, 'v', b, heads, len, hd), vh, start);
        out->updates[2 * i] = kc;
        out->updates[2 * i + 1] = vc;
        tg_tensor o = tg_attention(g, qh, kc, vc, mask, false, scale);
        fmt_name(q, sizeof q, "%sself_attn.out_proj", p);
        x = tg_add(g, x, linear(g, wt, merge_heads(g, o, d), q, d, d, true));

        /* cross-attention against the cached encoder keys and values */
        fmt_name(q, sizeof q, "%sencoder_attn_layer_norm", p);
        h = layer_norm(g, wt, x, q, d);
        fmt_name(q, sizeof q, "%sencoder_attn.q_proj", p);
        qh = split_heads(g, linear(g, wt, h, q, d, d, true), heads, hd);
        o = tg_attention(g, qh, cache_var(g, true, i, 'k', b, heads, n_ctx, hd),
                         cache_var(g, true, i, 'v', b, heads, n_ctx, hd), TG_INVALID, false, scale);
        fmt_name(q, sizeof q, "%sencoder_attn.out_proj", p);
        x = tg_add(g, x, linear(g, wt, merge_heads(g, o, d), q, d, d, true));

        fmt_name(q, sizeof q, "%sfinal_layer_norm", p);
        h = layer_norm(g, wt, x, q, d);
        x = tg_add(g, x, ffn(g, wt, h, p, d, cfg->decoder_ffn_dim));
    }
    x = layer_norm(g, wt, x, "model.decoder.layer_norm", d);
    int64_t lshape[2] = {b, cfg->vocab_size};
    out->logits = tg_reshape(g, tg_matmul(g, x, embed, false, true), 2, lshape);
    out->n_updates = 2 * cfg->decoder_layers;
    if (tg_graph_status(g) != TG_OK)
        return tg_set_error(tg_graph_status(g), "tg_whisper_build_step: %s", tg_graph_error(g));
    return TG_OK;
}
