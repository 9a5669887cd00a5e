/* whisper_decode.c — decoding with a KV cache: two graphs, each compiled
 * once (or run on the interpreter when no device is given).
 *
 *   cross-KV graph: encoder_out -> assign the cross-attention keys and
 *                   values of every layer (once per audio window)
 *   step graph:     one token per row at a fed position -> logits; writes
 *                   the token's keys and values into the self-attention
 *                   cache with slice_update
 *
 *   reorder graph:  cache rows gathered by a fed source index (beam search
 *                   keeps the caches of the beams it selects)
 *
 * The step graph is built for the largest length, so the position is data:
 * no recompilation per token. */
#include "models/whisper.h"
#include "graph/graph_internal.h"

#include <stdlib.h>
#include <string.h>

struct tg_whisper_decoder {
    tg_whisper_config cfg;
    tg_store *store;
    tg_device *dev; /* NULL: the interpreter */
    int batch, max_len;

    tg_graph *cross_graph;
    tg_tensor encoder_out; /* placeholder */
    tg_tensor assigns[2 * TG_WHISPER_MAX_LAYERS];
    tg_executable *cross_exe;

    tg_graph *step_graph;
    tg_whisper_step step;
    tg_executable *step_exe;
    bool have_audio;

    /* built at the first reorder */
    tg_graph *reorder_graph;
    tg_tensor source; /* placeholder i32 [B] */
    tg_tensor reorders[2 * TG_WHISPER_MAX_LAYERS];
    tg_executable *reorder_exe;
};

void tg_whisper_decoder_free(tg_whisper_decoder *d) {
    if (!d) return;
    tg_executable_free(d->cross_exe);
    tg_executable_free(d->step_exe);
    tg_executable_free(d->reorder_exe);
    tg_graph_free(d->cross_graph);
    tg_graph_free(d->step_graph);
    tg_graph_free(d->reorder_graph);
    free(d);
}

static tg_status reset_caches(tg_whisper_decoder *d) {
    int64_t heads = d->cfg.decoder_attention_heads, hd = d->cfg.d_model / heads;
    tg_status st = TG_OK;
    for (int cross = 0; cross < 2 && st == TG_OK; cross++) {
        int64_t len = cross ? d->cfg.max_source_positions : d->max_len;
        int64_t shape[4] = {d->batch, heads, len, hd};
        tg_array zeros = {0};
        st = tg_array_alloc(&zeros, TG_F32, 4, shape);
        for (int i = 0; i < 2 * d->cfg.decoder_layers && st == TG_OK; i++) {
            char name[TG_WHISPER_NAME_MAX];
            tg_whisper_cache_name(name, sizeof name, cross, i / 2, i % 2 ? 'v' : 'k');
            st = tg_store_set(d->store, name, &zeros);
        }
        tg_array_free(&zeros);
    }
    return st;
}

tg_status tg_whisper_decoder_new(const tg_whisper_config *cfg, tg_store *store, tg_device *dev,
                                 int batch, int max_len, tg_whisper_decoder **out) {
    if (!out || !store)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_decoder_new: NULL argument");
    *out = NULL;
    tg_status st = tg_whisper_check_config(cfg);
    if (st != TG_OK) return st;
    tg_whisper_decoder *d = calloc(1, sizeof *d);
    if (!d) return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_decoder_new: out of memory");
    d->cfg = *cfg;
    d->store = store;
    d->dev = dev;
    d->batch = batch;
    d->max_len = max_len;

    d->cross_graph = tg_graph_new();
    d->step_graph = tg_graph_new();
    if (!d->cross_graph || !d->step_graph) {
        tg_whisper_decoder_free(d);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_decoder_new: out of memory");
    }
    int64_t eshape[3] = {batch, cfg->max_source_positions, cfg->d_model};
    d->encoder_out = tg_placeholder(d->cross_graph, "encoder_out", TG_F32, 3, eshape);
    st = tg_whisper_build_cross_kv(d->cross_graph, cfg, d->encoder_out, d->assigns);
    if (st == TG_OK) st = tg_whisper_build_step(d->step_graph, cfg, batch, max_len, &d->step);
    /* The caches start at zero (masked entries are never read with weight),
     * in this decoder's shapes: a store may have held another batch's. */
    if (st == TG_OK) st = reset_caches(d);
    if (st == TG_OK) st = tg_store_init_missing(store, d->cross_graph, 0, 0.0);
    if (st == TG_OK) st = tg_store_init_missing(store, d->step_graph, 0, 0.0);
    int n_assign = 2 * cfg->decoder_layers;
    if (st == TG_OK && dev)
        st = tg_compile(dev, d->cross_graph, store, 0, NULL, n_assign, d->assigns, NULL,
                        &d->cross_exe);
    if (st == TG_OK && dev)
        st = tg_compile(dev, d->step_graph, store, 1, &d->step.logits, d->step.n_updates,
                        d->step.updates, NULL, &d->step_exe);
    if (st != TG_OK) {
        tg_whisper_decoder_free(d);
        return st;
    }
    *out = d;
    return TG_OK;
}

tg_status tg_whisper_decoder_set_audio(tg_whisper_decoder *d, const tg_array *encoder_out) {
    if (!d || !encoder_out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_decoder_set_audio: NULL argument");
    tg_feed feed = {d->encoder_out, encoder_out};
    int n_assign = 2 * d->cfg.decoder_layers;
    tg_status st;
    if (d->dev)
        st = tg_run(d->cross_exe, 1, &feed, NULL);
    else
        st = tg_interpret(d->cross_graph, d->store, 1, &feed, 0, NULL, NULL, n_assign, d->assigns,
                          0);
    d->have_audio = st == TG_OK;
    return st;
}

tg_status tg_whisper_decoder_step(tg_whisper_decoder *d, const int32_t *tokens, int position,
                                  tg_array *logits) {
    if (!d || !tokens || !logits)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_decoder_step: NULL argument");
    if (!d->have_audio)
        return tg_set_error(
            TG_ERR_INVALID_ARGUMENT,
            "tg_whisper_decoder_step: no audio (call tg_whisper_decoder_set_audio)");
    if (position < 0 || position >= d->max_len)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_decoder_step: position %d outside [0, %d)", position,
                            d->max_len);
    for (int b = 0; b < d->batch; b++)
        if (tokens[b] < 0 || tokens[b] >= d->cfg.vocab_size)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "tg_whisper_decoder_step: token %d of row %d outside [0, %d)",
                                (int)tokens[b], b, d->cfg.vocab_size);
    tg_array tok = {0}, pos = {0};
    int64_t tshape[2] = {d->batch, 1}, pshape[1] = {1};
    tg_status st = tg_array_alloc(&tok, TG_I32, 2, tshape);
    if (st == TG_OK) st = tg_array_alloc(&pos, TG_I32, 1, pshape);
    if (st == TG_OK) {
        memcpy(tok.data, tokens, (size_t)d->batch * sizeof(int32_t));
        ((int32_t *)pos.data)[0] = position;
        tg_feed feeds[2] = {{d->step.tokens, &tok}, {d->step.position, &pos}};
        if (d->dev)
            st = tg_run(d->step_exe, 2, feeds, logits);
        else
            st = tg_interpret(d->step_graph, d->store, 2, feeds, 1, &d->step.logits, logits,
                              d->step.n_updates, d->step.updates, 0);
    }
    tg_array_free(&tok);
    tg_array_free(&pos);
    return st;
}

int tg_whisper_decoder_step_compiles(const tg_whisper_decoder *d) {
    return d && d->step_exe ? tg_executable_specializations(d->step_exe) : 0;
}

tg_status tg_whisper_greedy(tg_whisper_decoder *d, const int32_t *prompt, int n_prompt, int32_t eos,
                            int32_t *out, int *lengths) {
    if (!d || !prompt || !out || !lengths)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_greedy: NULL argument");
    if (n_prompt < 1 || n_prompt > d->max_len)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_greedy: prompt of %d tokens (need 1..%d)", n_prompt,
                            d->max_len);
    int batch = d->batch, len = d->max_len, vocab = d->cfg.vocab_size;
    int32_t *tokens = malloc((size_t)batch * sizeof *tokens);
    bool *done = calloc((size_t)batch, sizeof *done);
    if (!tokens || !done) {
        free(tokens);
        free(done);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_greedy: out of memory");
    }
    for (int b = 0; b < batch; b++) {
        memcpy(out + (size_t)b * len, prompt + (size_t)b * n_prompt,
               (size_t)n_prompt * sizeof *out);
        lengths[b] = n_prompt;
    }
    tg_status st = TG_OK;
    /* Step t feeds token t at position t; its logits choose token t + 1.
     * The prompt's first n_prompt - 1 steps only fill the cache. */
    for (int t = 0; t < len - 1 && st == TG_OK; t++) {
        bool all_done = true;
        for (int b = 0; b < batch; b++) all_done = all_done && done[b];
        if (all_done && t >= n_prompt - 1) break;
        for (int b = 0; b < batch; b++) tokens[b] = out[(size_t)b * len + t];
        tg_array logits = {0};
        st = tg_whisper_decoder_step(d, tokens, t, &logits);
        if (st != TG_OK) break;
        if (t + 1 >= n_prompt) {
            const float *l = logits.data;
            for (int b = 0; b < batch; b++) {
                int32_t next = eos;
                if (!done[b]) {
                    int best = 0;
                    for (int v = 1; v < vocab; v++)
                        if (l[(size_t)b * vocab + v] > l[(size_t)b * vocab + best]) best = v;
                    next = best;
                    lengths[b] = t + 2;
                    if (eos >= 0 && next == eos) done[b] = true;
                }
                out[(size_t)b * len + t + 1] = next;
            }
        }
        tg_array_free(&logits);
    }
    /* Rows that stopped early: pad the rest with eos. */
    for (int b = 0; b < batch; b++)
        for (int t = lengths[b]; t < len; t++) out[(size_t)b * len + t] = eos >= 0 ? eos : 0;
    free(tokens);
    free(done);
    return st;
}

int tg_whisper_decoder_batch(const tg_whisper_decoder *d) {
    return d ? d->batch : 0;
}

int tg_whisper_decoder_max_len(const tg_whisper_decoder *d) {
    return d ? d->max_len : 0;
}

const tg_whisper_config *tg_whisper_decoder_config(const tg_whisper_decoder *d) {
    return d ? &d->cfg : NULL;
}

/* cache := gather(cache, source, 0) for every self-attention cache: an
 * assign that reads its own variable sees the old value, so rows may be
 * permuted or duplicated freely. */
static tg_status build_reorder(tg_whisper_decoder *d) {
    tg_graph *g = tg_graph_new();
    if (!g) return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_decoder_reorder: out of memory");
    int64_t heads = d->cfg.decoder_attention_heads, hd = d->cfg.d_model / heads;
    int64_t sshape[1] = {d->batch}, cshape[4] = {d->batch, heads, d->max_len, hd};
    d->source = tg_placeholder(g, "source", TG_I32, 1, sshape);
    int n = 2 * d->cfg.decoder_layers;
    for (int i = 0; i < n; i++) {
        char name[TG_WHISPER_NAME_MAX];
        tg_whisper_cache_name(name, sizeof name, false, i / 2, i % 2 ? 'v' : 'k');
        tg_tensor cache = tg_variable(g, name, TG_F32, 4, cshape, false);
        d->reorders[i] = tg_assign(g, cache, tg_gather(g, cache, d->source, 0));
    }
    tg_status st = tg_graph_status(g);
    if (st != TG_OK)
        st = tg_set_error(st, "tg_whisper_decoder_reorder: %s", tg_graph_error(g));
    if (st == TG_OK && d->dev)
        st = tg_compile(d->dev, g, d->store, 0, NULL, n, d->reorders, NULL, &d->reorder_exe);
    if (st != TG_OK) {
        tg_graph_free(g);
        return st;
    }
    d->reorder_graph = g;
    return TG_OK;
}

tg_status tg_whisper_decoder_reorder(tg_whisper_decoder *d, const int32_t *source) {
    if (!d || !source)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_decoder_reorder: NULL argument");
    bool identity = true;
    for (int b = 0; b < d->batch; b++) {
        if (source[b] < 0 || source[b] >= d->batch)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "tg_whisper_decoder_reorder: source %d of row %d outside [0, %d)",
                                (int)source[b], b, d->batch);
        identity = identity && source[b] == b;
    }
    if (identity) return TG_OK;
    tg_status st = d->reorder_graph ? TG_OK : build_reorder(d);
    if (st != TG_OK) return st;
    tg_array src = {0};
    int64_t sshape[1] = {d->batch};
    st = tg_array_alloc(&src, TG_I32, 1, sshape);
    if (st != TG_OK) return st;
    memcpy(src.data, source, (size_t)d->batch * sizeof *source);
    tg_feed feed = {d->source, &src};
    int n = 2 * d->cfg.decoder_layers;
    if (d->dev)
        st = tg_run(d->reorder_exe, 1, &feed, NULL);
    else
        st = tg_interpret(d->reorder_graph, d->store, 1, &feed, 0, NULL, NULL, n, d->reorders, 0);
    tg_array_free(&src);
    return st;
}
