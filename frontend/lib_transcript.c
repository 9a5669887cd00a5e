/* lib_transcript.c — Whisper transcripts as txt, JSON, SubRip and WebVTT,
 * laid out as openai-whisper's writers do (one stripped segment a line;
 * SRT numbered from 1 with "HH:MM:SS,mmm --> HH:MM:SS,mmm"; WebVTT with
 * its header and "HH:MM:SS.mmm"). */
#include "frontend/transcript.h"
#include "graph/graph_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const format_names[] = {"txt", "json", "srt", "vtt"};

bool tg_transcript_format_from_name(const char *name, tg_transcript_format *out) {
    for (int i = 0; name && i < 4; i++)
        if (strcmp(name, format_names[i]) == 0) {
            *out = (tg_transcript_format)i;
            return true;
        }
    return false;
}

const char *tg_transcript_format_name(tg_transcript_format f) {
    return (unsigned)f < 4 ? format_names[f] : "?";
}

void tg_transcript_timestamp(double seconds, char sep, char *buf, size_t size) {
    long long ms = isfinite(seconds) && seconds > 0 ? llround(seconds * 1000.0) : 0;
    snprintf(buf, size, "%02lld:%02lld:%02lld%c%03lld", ms / 3600000, ms / 60000 % 60,
             ms / 1000 % 60, sep, ms % 1000);
}

/* A growing string. */
typedef struct sbuf {
    char *s;
    size_t len, cap;
    bool failed;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf *b, const char *fmt, ...) {
    if (b->failed) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->failed = true;
        return;
    }
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 256) + (size_t)n;
        char *s = realloc(b->s, cap);
        if (!s) {
            b->failed = true;
            return;
        }
        b->s = s;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

tg_status tg_transcript_segment_text(const tg_whisper_segment *s, const tg_tokenizer *tok,
                                     int32_t eot, char **text) {
    if (!tok) { /* no tokenizer (random weights): the text tokens' ids */
        sbuf b = {0};
        for (int i = 0; i < s->n_tokens; i++)
            if (s->tokens[i] >= 0 && s->tokens[i] < eot)
                sb_printf(&b, "%s%d", b.len ? " " : "", (int)s->tokens[i]);
        if (!b.s && !b.failed) b.s = calloc(1, 1);
        if (b.failed || !b.s) {
            free(b.s);
            return tg_set_error(TG_ERR_NO_MEMORY, "transcript: out of memory");
        }
        *text = b.s;
        return TG_OK;
    }
    int32_t *ids = malloc((size_t)(s->n_tokens > 0 ? s->n_tokens : 1) * sizeof *ids);
    if (!ids) return tg_set_error(TG_ERR_NO_MEMORY, "transcript: out of memory");
    int n = 0;
    for (int i = 0; i < s->n_tokens; i++)
        if (s->tokens[i] >= 0 && s->tokens[i] < eot) ids[n++] = s->tokens[i];
    size_t len = 0;
    tg_status st = tg_tokenizer_decode(tok, ids, n, TG_DECODE_SKIP_SPECIAL, text, &len);
    free(ids);
    if (st != TG_OK) return st;
    size_t a = 0;
    while (a < len && (*text)[a] == ' ') a++;
    while (len > a && ((*text)[len - 1] == ' ' || (*text)[len - 1] == '\n')) len--;
    memmove(*text, *text + a, len - a);
    (*text)[len - a] = '\0';
    return TG_OK;
}

/* "-->" inside a cue would end it early (openai-whisper writes "->"). */
static void no_arrows(char *t) {
    for (char *p = strstr(t, "-->"); p; p = strstr(p, "-->")) memmove(p + 1, p + 2, strlen(p + 2) + 1);
}

/* "<|en|>" -> "en" (empty when there is no language). */
static void language_code(const tg_whisper_config *cfg, int32_t id, char *buf, size_t size) {
    buf[0] = '\0';
    for (int i = 0; i < cfg->n_languages; i++) {
        if (cfg->languages[i].id != id) continue;
        const char *t = cfg->languages[i].token;
        size_t n = strlen(t);
        if (n > 4 && strncmp(t, "<|", 2) == 0)
            snprintf(buf, size, "%.*s", (int)(n - 4), t + 2);
        else
            snprintf(buf, size, "%s", t);
    }
}

static double ms(double seconds) {
    return round(seconds * 1000.0) / 1000.0;
}

static tg_status render_json(const tg_whisper_transcript *t, char **texts,
                             const tg_whisper_config *cfg, const char *source, char **out) {
    cJSON *root = cJSON_CreateObject();
    sbuf all = {0};
    for (int i = 0; i < t->n_segments; i++) sb_printf(&all, "%s%s", i ? " " : "", texts[i]);
    char lang[24];
    language_code(cfg, t->language, lang, sizeof lang);
    bool ok = root && !all.failed;
    if (ok && source) ok = cJSON_AddStringToObject(root, "file", source) != NULL;
    ok = ok && cJSON_AddStringToObject(root, "text", all.s ? all.s : "") != NULL;
    ok = ok && cJSON_AddStringToObject(root, "language", lang) != NULL;
    cJSON *segs = ok ? cJSON_AddArrayToObject(root, "segments") : NULL;
    ok = ok && segs;
    for (int i = 0; ok && i < t->n_segments; i++) {
        const tg_whisper_segment *s = &t->segments[i];
        cJSON *o = cJSON_CreateObject();
        ok = o && cJSON_AddItemToArray(segs, o);
        ok = ok && cJSON_AddNumberToObject(o, "id", i);
        ok = ok && cJSON_AddNumberToObject(o, "start", ms(s->start));
        ok = ok && cJSON_AddNumberToObject(o, "end", ms(s->end));
        ok = ok && cJSON_AddStringToObject(o, "text", texts[i]);
        cJSON *ids = ok ? cJSON_AddArrayToObject(o, "tokens") : NULL;
        ok = ok && ids;
        for (int k = 0; ok && k < s->n_tokens; k++) {
            cJSON *v = cJSON_CreateNumber(s->tokens[k]);
            ok = v && cJSON_AddItemToArray(ids, v);
        }
        ok = ok && cJSON_AddNumberToObject(o, "avg_logprob", s->avg_logprob);
    }
    *out = ok ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    free(all.s);
    if (!*out) return tg_set_error(TG_ERR_NO_MEMORY, "transcript: out of memory");
    /* a trailing newline, as the other formats end with one */
    size_t n = strlen(*out);
    char *grown = realloc(*out, n + 2);
    if (!grown) {
        free(*out);
        *out = NULL;
        return tg_set_error(TG_ERR_NO_MEMORY, "transcript: out of memory");
    }
    grown[n] = '\n';
    grown[n + 1] = '\0';
    *out = grown;
    return TG_OK;
}

tg_status tg_transcript_render(const tg_whisper_transcript *t, const tg_tokenizer *tok,
                               const tg_whisper_config *cfg, const char *source,
                               tg_transcript_format f, char **text) {
    if (!t || !cfg || !text)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_transcript_render: NULL argument");
    *text = NULL;
    char **texts = calloc((size_t)(t->n_segments ? t->n_segments : 1), sizeof *texts);
    if (!texts) return tg_set_error(TG_ERR_NO_MEMORY, "transcript: out of memory");
    tg_status st = TG_OK;
    for (int i = 0; i < t->n_segments && st == TG_OK; i++)
        st = tg_transcript_segment_text(&t->segments[i], tok, cfg->eos_token_id, &texts[i]);
    if (st == TG_OK && f == TG_TRANSCRIPT_JSON) {
        st = render_json(t, texts, cfg, source, text);
    } else if (st == TG_OK) {
        sbuf b = {0};
        if (f == TG_TRANSCRIPT_VTT) sb_printf(&b, "WEBVTT\n\n");
        for (int i = 0; i < t->n_segments; i++) {
            char a[32], z[32];
            const tg_whisper_segment *s = &t->segments[i];
            if (f == TG_TRANSCRIPT_TXT) {
                sb_printf(&b, "%s\n", texts[i]);
                continue;
            }
            no_arrows(texts[i]);
            char sep = f == TG_TRANSCRIPT_SRT ? ',' : '.';
            tg_transcript_timestamp(s->start, sep, a, sizeof a);
            tg_transcript_timestamp(s->end, sep, z, sizeof z);
            if (f == TG_TRANSCRIPT_SRT) sb_printf(&b, "%d\n", i + 1);
            sb_printf(&b, "%s --> %s\n%s\n\n", a, z, texts[i]);
        }
        if (!b.s && !b.failed) b.s = calloc(1, 1); /* no segments: "" */
        if (b.failed || !b.s) {
            free(b.s);
            st = tg_set_error(TG_ERR_NO_MEMORY, "transcript: out of memory");
        } else {
            *text = b.s;
        }
    }
    for (int i = 0; i < t->n_segments; i++) free(texts[i]);
    free(texts);
    return st;
}
