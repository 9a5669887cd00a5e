/* whisper_search.c — decoding one 30-second window as openai-whisper's
 * DecodingTask does at temperature 0, on the KV-cache step of
 * whisper_decode.c (one executable, compiled once for the maximum length):
 *
 *   language detection   one step of <|startoftranscript|>, argmax over the
 *                        language tokens (when the language is not given)
 *   prompt               <|startoftranscript|> <|lang|> <|task|>
 *                        [<|notimestamps|>]   ([sot] for English-only models)
 *   logit filters        begin_suppress_tokens at the first sampled token,
 *                        suppress_tokens and the special tokens, the
 *                        timestamp rules (filter_logits below)
 *   greedy               argmax, finished rows keep <|endoftext|>
 *   beam search          openai's BeamSearchDecoder: per audio the top
 *                        beam+1 tokens of every beam, ranked by cumulative
 *                        log-probability; the best `beam` unfinished ones go
 *                        on (caches reordered by a gather), finished ones
 *                        are kept until `beam` exist; the result is the
 *                        candidate of highest sum_logprob / length.
 *
 * Rows are laid out audio-major: row i * beam + j is beam j of audio i. */
#include "models/whisper.h"
#include "graph/graph_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Seconds per timestamp token: two Mel frames of 10 ms. */
#define TIME_PRECISION 0.02

/* The special tokens, in openai-whisper's layout: after <|notimestamps|>
 * come the timestamps, before it <|startoflm|>, <|startofprev|>,
 * <|nospeech|>. */
typedef struct specials {
    int32_t sot, eot, no_timestamps, timestamp_begin;
    int32_t sot_lm, sot_prev, no_speech;
} specials;

static specials specials_of(const tg_whisper_config *cfg) {
    specials s;
    s.sot = cfg->decoder_start_token_id;
    s.eot = cfg->eos_token_id;
    s.no_timestamps = cfg->no_timestamps_token_id;
    bool known = s.no_timestamps >= 3;
    s.timestamp_begin = known ? s.no_timestamps + 1 : -1;
    s.sot_lm = known ? s.no_timestamps - 3 : -1;
    s.sot_prev = known ? s.no_timestamps - 2 : -1;
    s.no_speech = known ? s.no_timestamps - 1 : -1;
    return s;
}

void tg_whisper_decode_options_default(tg_whisper_decode_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->beam_size = 1;
    o->language = -1;
    o->max_initial_timestamp = 1.0;
    o->suppress_blank = true;
    o->suppress_tokens = true;
}

void tg_whisper_decoding_free(tg_whisper_decoding *r) {
    if (!r) return;
    free(r->tokens);
    memset(r, 0, sizeof *r);
}

/* ------------------------------------------------------------------ */
/* Logit filters                                                       */
/* ------------------------------------------------------------------ */

static void mask_range(float *logits, int vocab, int64_t from, int64_t to) {
    if (from < 0) from = 0;
    if (to > vocab) to = vocab;
    for (int64_t i = from; i < to; i++) logits[i] = -INFINITY;
}

static void mask_id(float *logits, int vocab, int32_t id) {
    if (id >= 0 && id < vocab) logits[id] = -INFINITY;
}

/* log(sum(exp(l[from..to)))), -inf when every entry is -inf. */
static double log_sum_exp(const float *l, int from, int to) {
    double m = -INFINITY;
    for (int i = from; i < to; i++) m = l[i] > m ? l[i] : m;
    if (m == -INFINITY) return -INFINITY;
    double s = 0;
    for (int i = from; i < to; i++) s += exp(l[i] - m);
    return m + log(s);
}

void tg_whisper_filter_logits(const tg_whisper_config *cfg, const tg_whisper_decode_options *o,
                              const int32_t *tokens, int n_tokens, int sample_begin,
                              float *logits) {
    int vocab = cfg->vocab_size;
    specials sp = specials_of(cfg);
    bool at_begin = n_tokens == sample_begin;
    if (o->suppress_blank && at_begin)
        for (int i = 0; i < cfg->n_begin_suppress_tokens; i++)
            mask_id(logits, vocab, cfg->begin_suppress_tokens[i]);
    if (o->suppress_tokens) {
        for (int i = 0; i < cfg->n_suppress_tokens; i++)
            mask_id(logits, vocab, cfg->suppress_tokens[i]);
        int32_t extra[] = {cfg->transcribe_token_id, cfg->translate_token_id, sp.sot,
                           sp.sot_prev, sp.sot_lm, sp.no_speech};
        for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++)
            mask_id(logits, vocab, extra[i]);
    }
    if (!o->timestamps || sp.timestamp_begin < 0) return;

    /* openai-whisper's ApplyTimestampRules */
    int32_t tb = sp.timestamp_begin;
    mask_id(logits, vocab, sp.no_timestamps);
    const int32_t *seq = tokens + sample_begin;
    int n = n_tokens - sample_begin;
    bool last_ts = n >= 1 && seq[n - 1] >= tb;
    bool penultimate_ts = n < 2 || seq[n - 2] >= tb;
    if (last_ts) {
        if (penultimate_ts) /* a pair is complete: text (or eot) next */
            mask_range(logits, vocab, tb, vocab);
        else /* an open segment: a timestamp or eot next */
            mask_range(logits, vocab, 0, sp.eot);
    }
    /* Timestamps never decrease, and a segment has a nonzero length. */
    for (int i = n - 1; i >= 0; i--) {
        if (seq[i] < tb) continue;
        int32_t floor = last_ts && !penultimate_ts ? seq[i] : seq[i] + 1;
        mask_range(logits, vocab, tb, floor);
        break;
    }
    if (at_begin) {
        mask_range(logits, vocab, 0, tb); /* start with a timestamp */
        if (o->max_initial_timestamp >= 0) {
            int64_t last_allowed = tb + (int64_t)lround(o->max_initial_timestamp / TIME_PRECISION);
            mask_range(logits, vocab, last_allowed + 1, vocab);
        }
    }
    /* If the timestamps together are likelier than any text token, sample a
     * timestamp (compared as log-probabilities: the normaliser cancels). */
    double ts = log_sum_exp(logits, tb, vocab);
    double text = -INFINITY;
    for (int i = 0; i < tb && i < vocab; i++) text = logits[i] > text ? logits[i] : text;
    if (ts > text) mask_range(logits, vocab, 0, tb);
}

/* ------------------------------------------------------------------ */
/* Decoding                                                            */
/* ------------------------------------------------------------------ */

/* The state of one decode: token histories of every row (all rows have
 * the same length) and their cumulative log-probabilities. */
typedef struct search {
    tg_whisper_decoder *d;
    const tg_whisper_config *cfg;
    const tg_whisper_decode_options *o;
    specials sp;
    int n_audio, beam, rows, max_len, vocab;
    int len, sample_begin;
    int32_t *hist;  /* [rows][max_len] */
    int32_t *hist2; /* the same, for reordering */
    double *sum_lp; /* [rows] */
    /* beam search: finished candidates per audio, up to `beam` each */
    int32_t *fin_tokens; /* [n_audio][beam][max_len] sampled tokens */
    int *fin_len;        /* [n_audio][beam] */
    double *fin_lp;      /* [n_audio][beam] */
    int *n_fin;          /* [n_audio] */
} search;

static int32_t *row_of(search *s, int32_t *h, int r) {
    return h + (size_t)r * s->max_len;
}

/* Log-softmax of one row into lp (double). */
static void log_softmax_row(const float *l, int vocab, double *lp) {
    double lse = log_sum_exp(l, 0, vocab);
    for (int i = 0; i < vocab; i++) lp[i] = l[i] - lse;
}

/* Runs the step on the last token of every row; logits [rows, vocab]. */
static tg_status step_last(search *s, tg_array *logits) {
    int32_t *cur = malloc((size_t)s->rows * sizeof *cur);
    if (!cur) return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_decode: out of memory");
    for (int r = 0; r < s->rows; r++) cur[r] = row_of(s, s->hist, r)[s->len - 1];
    tg_status st = tg_whisper_decoder_step(s->d, cur, s->len - 1, logits);
    free(cur);
    return st;
}

static bool greedy_update(search *s, const float *logits, double *lp) {
    bool all_done = true;
    for (int r = 0; r < s->rows; r++) {
        int32_t *h = row_of(s, s->hist, r);
        const float *l = logits + (size_t)r * s->vocab;
        int32_t next = s->sp.eot;
        if (h[s->len - 1] != s->sp.eot) {
            int best = 0;
            for (int v = 1; v < s->vocab; v++)
                if (l[v] > l[best]) best = v;
            log_softmax_row(l, s->vocab, lp);
            s->sum_lp[r] += lp[best];
            next = best;
        }
        h[s->len] = next;
        all_done = all_done && next == s->sp.eot;
    }
    s->len++;
    return all_done;
}

typedef struct candidate {
    double score;
    int source; /* row */
    int32_t token;
} candidate;

/* Indices of the k largest of lp (descending; the first on ties). */
static void top_k(const double *lp, int vocab, int k, int *out) {
    for (int i = 0; i < k; i++) out[i] = -1;
    for (int v = 0; v < vocab; v++) {
        int pos = k;
        while (pos > 0 && (out[pos - 1] < 0 || lp[v] > lp[out[pos - 1]])) pos--;
        if (pos == k) continue;
        for (int j = k - 1; j > pos; j--) out[j] = out[j - 1];
        out[pos] = v;
    }
}

static void add_finished(search *s, int audio, const int32_t *hist, int len, double score) {
    int k = s->n_fin[audio];
    if (k >= s->beam) return;
    size_t slot = (size_t)audio * s->beam + k;
    int n = len - s->sample_begin;
    memcpy(s->fin_tokens + slot * s->max_len, hist + s->sample_begin, (size_t)n * sizeof *hist);
    s->fin_len[slot] = n;
    s->fin_lp[slot] = score;
    s->n_fin[audio] = k + 1;
}

/* One beam-search step; returns true when every audio has `beam`
 * finished candidates. */
static tg_status beam_update(search *s, const float *logits, double *lp, candidate *cands,
                             int *source, bool *completed) {
    int beam = s->beam, k = beam + 1;
    int top[64];
    for (int a = 0; a < s->n_audio; a++) {
        int n = 0;
        for (int j = 0; j < beam; j++) {
            int r = a * beam + j;
            /* Beams with equal histories (all of them at the first step)
             * give equal candidates: keep the first, as openai's dict does. */
            bool dup = false;
            for (int jj = 0; jj < j && !dup; jj++)
                dup = memcmp(row_of(s, s->hist, r), row_of(s, s->hist, a * beam + jj),
                             (size_t)s->len * sizeof(int32_t)) == 0;
            if (dup) continue;
            log_softmax_row(logits + (size_t)r * s->vocab, s->vocab, lp);
            top_k(lp, s->vocab, k, top);
            for (int t = 0; t < k; t++) {
                if (top[t] < 0) continue;
                cands[n++] = (candidate){s->sum_lp[r] + lp[top[t]], r, top[t]};
            }
        }
        /* stable insertion sort, descending */
        for (int i = 1; i < n; i++) {
            candidate c = cands[i];
            int p = i;
            while (p > 0 && cands[p - 1].score < c.score) {
                cands[p] = cands[p - 1];
                p--;
            }
            cands[p] = c;
        }
        int saved = 0;
        for (int i = 0; i < n && saved < beam; i++) {
            const int32_t *h = row_of(s, s->hist, cands[i].source);
            if (cands[i].token == s->sp.eot) {
                add_finished(s, a, h, s->len, cands[i].score);
                continue;
            }
            int r = a * beam + saved++;
            int32_t *nh = row_of(s, s->hist2, r);
            memcpy(nh, h, (size_t)s->len * sizeof *h);
            nh[s->len] = cands[i].token;
            s->sum_lp[r] = cands[i].score;
            source[r] = cands[i].source;
        }
        if (saved < beam)
            return tg_set_error(TG_ERR_RUNTIME,
                                "tg_whisper_decode: beam search found %d of %d live candidates "
                                "(the logit filters leave too few tokens)",
                                saved, beam);
    }
    int32_t *t = s->hist;
    s->hist = s->hist2;
    s->hist2 = t;
    s->len++;
    *completed = true;
    for (int a = 0; a < s->n_audio; a++) *completed = *completed && s->n_fin[a] >= beam;
    return tg_whisper_decoder_reorder(s->d, source);
}

tg_status tg_whisper_detect_language(tg_whisper_decoder *d, int32_t *ids, double *probs) {
    if (!d || !ids)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_detect_language: NULL argument");
    const tg_whisper_config *cfg = tg_whisper_decoder_config(d);
    if (cfg->n_languages < 1)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "tg_whisper_detect_language: the model has no language tokens");
    int rows = tg_whisper_decoder_batch(d), vocab = cfg->vocab_size;
    int32_t *sot = malloc((size_t)rows * sizeof *sot);
    if (!sot) return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_detect_language: out of memory");
    for (int r = 0; r < rows; r++) sot[r] = cfg->decoder_start_token_id;
    tg_array logits = {0};
    tg_status st = tg_whisper_decoder_step(d, sot, 0, &logits);
    free(sot);
    if (st != TG_OK) return st;
    const float *l = logits.data;
    for (int r = 0; r < rows; r++) {
        const float *row = l + (size_t)r * vocab;
        int best = -1;
        double m = -INFINITY, sum = 0;
        for (int i = 0; i < cfg->n_languages; i++) {
            int32_t id = cfg->languages[i].id;
            if (id < 0 || id >= vocab) continue;
            if (best < 0 || row[id] > row[best]) best = id;
            m = row[id] > m ? row[id] : m;
        }
        for (int i = 0; i < cfg->n_languages; i++) {
            int32_t id = cfg->languages[i].id;
            if (id >= 0 && id < vocab) sum += exp(row[id] - m);
        }
        ids[r] = best;
        if (probs) probs[r] = best >= 0 ? exp(row[best] - m) / sum : 0;
    }
    tg_array_free(&logits);
    return TG_OK;
}

static void search_free(search *s) {
    free(s->hist);
    free(s->hist2);
    free(s->sum_lp);
    free(s->fin_tokens);
    free(s->fin_len);
    free(s->fin_lp);
    free(s->n_fin);
}

/* The chosen candidate of audio a into *out. */
static tg_status finish_audio(search *s, int a, tg_whisper_decoding *out) {
    int beam = s->beam;
    const int32_t *best = NULL;
    int best_len = 0;
    double best_lp = 0;
    if (beam == 1) {
        const int32_t *h = row_of(s, s->hist, a) + s->sample_begin;
        best = h;
        best_len = s->len - s->sample_begin;
        best_lp = s->sum_lp[a];
    } else {
        /* Not enough finished: add the live beams, best first. */
        while (s->n_fin[a] < beam) {
            int pick = -1;
            for (int j = 0; j < beam; j++) {
                int r = a * beam + j;
                bool used = false;
                for (int f = 0; f < s->n_fin[a]; f++) {
                    size_t slot = (size_t)a * beam + f;
                    used = used ||
                           (s->fin_len[slot] == s->len - s->sample_begin &&
                            memcmp(s->fin_tokens + slot * s->max_len,
                                   row_of(s, s->hist, r) + s->sample_begin,
                                   (size_t)s->fin_len[slot] * sizeof(int32_t)) == 0);
                }
                if (!used && (pick < 0 || s->sum_lp[r] > s->sum_lp[pick])) pick = r;
            }
            if (pick < 0) break;
            add_finished(s, a, row_of(s, s->hist, pick), s->len, s->sum_lp[pick]);
        }
        double best_score = -INFINITY;
        for (int f = 0; f < s->n_fin[a]; f++) {
            size_t slot = (size_t)a * beam + f;
            int n = s->fin_len[slot];
            const int32_t *t = s->fin_tokens + slot * s->max_len;
            int text = 0;
            while (text < n && t[text] != s->sp.eot) text++;
            double score = s->fin_lp[slot] / (text > 0 ? text : 1);
            if (!best || score > best_score) {
                best = t;
                best_len = n;
                best_lp = s->fin_lp[slot];
                best_score = score;
            }
        }
    }
    int n = 0;
    while (n < best_len && best[n] != s->sp.eot) n++;
    out->tokens = malloc((size_t)(n > 0 ? n : 1) * sizeof *out->tokens);
    if (!out->tokens) return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_decode: out of memory");
    memcpy(out->tokens, best, (size_t)n * sizeof *best);
    out->n_tokens = n;
    out->sum_logprob = best_lp;
    out->avg_logprob = best_lp / (n + 1);
    return TG_OK;
}

/* Repeats every row of encoder_out `beam` times. */
static tg_status repeat_rows(const tg_array *enc, int beam, tg_array *out) {
    int64_t shape[3] = {enc->shape[0] * beam, enc->shape[1], enc->shape[2]};
    tg_status st = tg_array_alloc(out, TG_F32, 3, shape);
    if (st != TG_OK) return st;
    size_t row = (size_t)(enc->shape[1] * enc->shape[2]);
    for (int64_t a = 0; a < enc->shape[0]; a++)
        for (int j = 0; j < beam; j++)
            memcpy((float *)out->data + (size_t)(a * beam + j) * row,
                   (const float *)enc->data + (size_t)a * row, row * sizeof(float));
    return TG_OK;
}

tg_status tg_whisper_decode(tg_whisper_decoder *d, const tg_array *encoder_out,
                            const tg_whisper_decode_options *o, const int32_t *languages,
                            tg_whisper_decoding *results) {
    if (!d || !encoder_out || !o || !results)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_decode: NULL argument");
    const tg_whisper_config *cfg = tg_whisper_decoder_config(d);
    int beam = o->beam_size < 1 ? 1 : o->beam_size;
    int rows = tg_whisper_decoder_batch(d);
    if (encoder_out->rank != 3 || encoder_out->dtype != TG_F32 ||
        encoder_out->shape[0] * beam != rows)
        return tg_set_error(TG_ERR_SHAPE,
                            "tg_whisper_decode: encoder_out must be f32 [n_audio, S, d] with "
                            "n_audio * beam_size (%d) = the decoder's batch %d",
                            beam, rows);
    if (beam > 32)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_decode: beam_size %d (at most 32)",
                            beam);
    specials sp = specials_of(cfg);
    if (sp.sot < 0 || sp.sot >= cfg->vocab_size || sp.eot < 0 || sp.eot >= cfg->vocab_size)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_decode: the config lacks decoder_start_token_id or "
                            "eos_token_id");
    if (o->timestamps && sp.timestamp_begin < 0)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "tg_whisper_decode: timestamps need no_timestamps_token_id in the "
                            "config");
    int n_audio = (int)encoder_out->shape[0];
    memset(results, 0, (size_t)n_audio * sizeof *results);

    tg_status st = TG_OK;
    if (beam == 1) {
        st = tg_whisper_decoder_set_audio(d, encoder_out);
    } else {
        tg_array rep = {0};
        st = repeat_rows(encoder_out, beam, &rep);
        if (st == TG_OK) st = tg_whisper_decoder_set_audio(d, &rep);
        tg_array_free(&rep);
    }
    if (st != TG_OK) return st;

    /* The language of every audio: given, or detected. */
    bool multilingual = cfg->n_languages > 0;
    int32_t *lang = malloc((size_t)rows * sizeof *lang);
    double *lang_p = malloc((size_t)rows * sizeof *lang_p);
    if (!lang || !lang_p) {
        free(lang);
        free(lang_p);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_decode: out of memory");
    }
    bool detect = false;
    for (int a = 0; a < n_audio; a++) {
        int32_t want = languages && languages[a] >= 0 ? languages[a] : o->language;
        detect = detect || (multilingual && want < 0);
    }
    if (detect) st = tg_whisper_detect_language(d, lang, lang_p);
    for (int a = 0; a < n_audio && st == TG_OK; a++) {
        int32_t want = languages && languages[a] >= 0 ? languages[a] : o->language;
        results[a].language = multilingual ? (want >= 0 ? want : lang[a * beam]) : -1;
        results[a].language_prob = multilingual && want < 0 ? lang_p[a * beam] : 1.0;
    }
    if (st != TG_OK) {
        free(lang);
        free(lang_p);
        return st;
    }

    search s = {.d = d, .cfg = cfg, .o = o, .sp = sp, .n_audio = n_audio, .beam = beam};
    s.rows = rows;
    s.max_len = tg_whisper_decoder_max_len(d);
    s.vocab = cfg->vocab_size;
    s.hist = calloc((size_t)rows * s.max_len, sizeof *s.hist);
    s.hist2 = calloc((size_t)rows * s.max_len, sizeof *s.hist2);
    s.sum_lp = calloc((size_t)rows, sizeof *s.sum_lp);
    s.fin_tokens = calloc((size_t)n_audio * beam * s.max_len, sizeof *s.fin_tokens);
    s.fin_len = calloc((size_t)n_audio * beam, sizeof *s.fin_len);
    s.fin_lp = calloc((size_t)n_audio * beam, sizeof *s.fin_lp);
    s.n_fin = calloc((size_t)n_audio, sizeof *s.n_fin);
    double *lp = malloc((size_t)s.vocab * sizeof *lp);
    candidate *cands = malloc((size_t)beam * (beam + 1) * sizeof *cands);
    int *source = malloc((size_t)rows * sizeof *source);
    if (!s.hist || !s.hist2 || !s.sum_lp || !s.fin_tokens || !s.fin_len || !s.fin_lp || !s.n_fin ||
        !lp || !cands || !source)
        st = tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_decode: out of memory");

    /* The prompt of every row. */
    for (int r = 0; r < rows && st == TG_OK; r++) {
        int32_t *h = row_of(&s, s.hist, r);
        int n = 0;
        h[n++] = sp.sot;
        if (multilingual) {
            h[n++] = results[r / beam].language;
            h[n++] = o->translate ? cfg->translate_token_id : cfg->transcribe_token_id;
        }
        if (!o->timestamps && sp.no_timestamps >= 0) h[n++] = sp.no_timestamps;
        s.len = s.sample_begin = n;
    }
    if (st == TG_OK && multilingual && (cfg->transcribe_token_id < 0 || cfg->translate_token_id < 0))
        st = tg_set_error(TG_ERR_INVALID_ARGUMENT,
                          "tg_whisper_decode: the config lacks the task token ids");
    int sample_len = o->sample_len > 0 ? o->sample_len : cfg->max_target_positions / 2;
    if (st == TG_OK && s.sample_begin + 1 > s.max_len)
        st = tg_set_error(TG_ERR_INVALID_ARGUMENT,
                          "tg_whisper_decode: the decoder's max_len %d leaves no room after a "
                          "prompt of %d tokens",
                          s.max_len, s.sample_begin);
    if (sample_len > s.max_len - s.sample_begin) sample_len = s.max_len - s.sample_begin;

    /* Fill the cache with the prompt but its last token. */
    int32_t *cur = malloc((size_t)rows * sizeof *cur);
    if (!cur && st == TG_OK) st = tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_decode: out of memory");
    for (int p = 0; p + 1 < s.sample_begin && st == TG_OK; p++) {
        for (int r = 0; r < rows; r++) cur[r] = row_of(&s, s.hist, r)[p];
        tg_array logits = {0};
        st = tg_whisper_decoder_step(d, cur, p, &logits);
        tg_array_free(&logits);
    }
    free(cur);

    for (int i = 0; i < sample_len && st == TG_OK; i++) {
        tg_array logits = {0};
        st = step_last(&s, &logits);
        if (st != TG_OK) break;
        float *l = logits.data;
        for (int r = 0; r < rows; r++)
            tg_whisper_filter_logits(cfg, o, row_of(&s, s.hist, r), s.len, s.sample_begin,
                                     l + (size_t)r * s.vocab);
        bool completed = false;
        if (beam == 1)
            completed = greedy_update(&s, l, lp);
        else
            st = beam_update(&s, l, lp, cands, source, &completed);
        tg_array_free(&logits);
        if (completed) break;
    }
    for (int a = 0; a < n_audio && st == TG_OK; a++) st = finish_audio(&s, a, &results[a]);
    if (st != TG_OK)
        for (int a = 0; a < n_audio; a++) tg_whisper_decoding_free(&results[a]);
    search_free(&s);
    free(lp);
    free(cands);
    free(source);
    free(lang);
    free(lang_p);
    return st;
}

/* ------------------------------------------------------------------ */
/* Segments of a window                                                */
/* ------------------------------------------------------------------ */

tg_status tg_whisper_split_segments(const tg_whisper_config *cfg, const int32_t *tokens,
                                    int n_tokens, double time_offset, int segment_frames,
                                    tg_whisper_segment **segments, int *n_segments,
                                    int *seek_advance) {
    if (!cfg || (!tokens && n_tokens > 0) || !segments || !n_segments || !seek_advance)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_split_segments: NULL argument");
    specials sp = specials_of(cfg);
    int32_t tb = sp.timestamp_begin >= 0 ? sp.timestamp_begin : INT32_MAX;
    /* Mel frames per timestamp step and per encoder position: 2. */
    int stride = 2;
    *segments = NULL;
    *n_segments = 0;
    *seek_advance = segment_frames;
    tg_whisper_segment *segs = calloc((size_t)(n_tokens > 0 ? n_tokens : 1), sizeof *segs);
    if (!segs) return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_split_segments: out of memory");
    int n = 0;
    bool single_ending = n_tokens >= 2 && tokens[n_tokens - 2] < tb && tokens[n_tokens - 1] >= tb;
    /* Slices end after each pair of consecutive timestamps. */
    int last = 0;
    bool any_pair = false;
    for (int i = 1; i <= n_tokens; i++) {
        bool pair = i < n_tokens && tokens[i - 1] >= tb && tokens[i] >= tb;
        bool end = pair || (i == n_tokens && any_pair && single_ending);
        if (!end) continue;
        any_pair = any_pair || pair;
        segs[n].start = time_offset + (tokens[last] - tb) * TIME_PRECISION;
        segs[n].end = time_offset + (tokens[i - 1] - tb) * TIME_PRECISION;
        segs[n].first = last;
        segs[n].n_tokens = i - last;
        n++;
        last = i;
    }
    if (any_pair) {
        if (!single_ending) {
            int adv = (tokens[last - 1] - tb) * stride;
            /* A window always moves on, even if the model stamps 0. */
            *seek_advance = adv > 0 ? adv : segment_frames;
        }
    } else {
        double duration = segment_frames * (double)TG_WHISPER_HOP / TG_WHISPER_SAMPLE_RATE;
        for (int i = n_tokens - 1; i >= 0; i--) {
            if (tokens[i] < tb) continue;
            if (tokens[i] != tb) duration = (tokens[i] - tb) * TIME_PRECISION;
            break;
        }
        segs[0].start = time_offset;
        segs[0].end = time_offset + duration;
        segs[0].first = 0;
        segs[0].n_tokens = n_tokens;
        n = 1;
    }
    *segments = segs;
    *n_segments = n;
    return TG_OK;
}
