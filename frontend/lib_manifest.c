/* lib_manifest.c — JSON Lines manifests, speech data sets (log-Mel + label
 * sequences, cached as .npy) and the batch loader thread (manifest.h). */
#define _POSIX_C_SOURCE 200809L
#include "frontend/manifest.h"
#include "frontend/audio.h"
#include "frontend/npy.h"
#include "frontend/safetensors.h"
#include "graph/graph_internal.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------ */
/* Warnings                                                            */
/* ------------------------------------------------------------------ */

static void warn(char **list, int *n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void warn(char **list, int *n, const char *fmt, ...) {
    if (*n >= TG_MANIFEST_MAX_WARNINGS) return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char *s = strdup(buf);
    if (s) list[(*n)++] = s;
}

static uint64_t fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* ------------------------------------------------------------------ */
/* Manifests                                                           */
/* ------------------------------------------------------------------ */

void tg_manifest_free(tg_manifest *m) {
    if (!m) return;
    for (int i = 0; i < m->n; i++) {
        free(m->records[i].audio);
        free(m->records[i].text);
    }
    free(m->records);
    for (int i = 0; i < m->n_warnings; i++) free(m->warnings[i]);
    free(m);
}

static char *join_path(const char *dir, const char *path) {
    if (!dir || !dir[0] || path[0] == '/') return strdup(path);
    size_t n = strlen(dir) + strlen(path) + 2;
    char *s = malloc(n);
    if (s) snprintf(s, n, "%s/%s", dir, path);
    return s;
}

/* Parses one line into *r; returns NULL or the reason it is bad. */
static const char *parse_line(const char *line, size_t len, const char *dir,
                              tg_manifest_record *r) {
    if (memchr(line, '\0', len)) return "contains a NUL byte";
    cJSON *root = cJSON_ParseWithLength(line, len);
    if (!root) return "is not valid JSON";
    const char *why = NULL;
    const cJSON *audio = cJSON_GetObjectItemCaseSensitive(root, "audio");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text");
    if (!cJSON_IsObject(root))
        why = "is not a JSON object";
    else if (!audio)
        why = "has no \"audio\"";
    else if (!cJSON_IsString(audio))
        why = "has an \"audio\" that is not a string";
    else if (!audio->valuestring[0])
        why = "has an empty \"audio\"";
    else if (!text)
        why = "has no \"text\"";
    else if (!cJSON_IsString(text))
        why = "has a \"text\" that is not a string";
    else {
        /* the text must hold something besides white space */
        const char *s = text->valuestring;
        while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
        if (!*s) why = "has an empty \"text\"";
    }
    if (!why) {
        r->audio = join_path(dir, audio->valuestring);
        r->text = strdup(text->valuestring);
        if (!r->audio || !r->text) why = "out of memory";
    }
    cJSON_Delete(root);
    return why;
}

tg_status tg_manifest_parse(const char *text, size_t len, const char *dir, const char *label,
                            tg_manifest **out) {
    if (!out || (!text && len))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_manifest_parse: NULL argument");
    *out = NULL;
    if (!label) label = "<manifest>";
    tg_manifest *m = calloc(1, sizeof *m);
    if (!m) return tg_set_error(TG_ERR_NO_MEMORY, "tg_manifest_parse: out of memory");
    m->hash = fnv1a(1469598103934665603ull, text, len);
    if (dir) m->hash = fnv1a(m->hash, dir, strlen(dir));
    int cap = 0, line_no = 0;
    size_t pos = 0;
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t n = nl ? (size_t)(nl - line) : len - pos;
        pos += n + (nl ? 1 : 0);
        line_no++;
        size_t k = 0;
        while (k < n && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r')) k++;
        if (k == n) continue; /* blank */
        if (m->n == cap) {
            int nc = cap ? 2 * cap : 256;
            tg_manifest_record *r = realloc(m->records, (size_t)nc * sizeof *r);
            if (!r) {
                tg_manifest_free(m);
                return tg_set_error(TG_ERR_NO_MEMORY, "tg_manifest_parse: out of memory");
            }
            m->records = r;
            cap = nc;
        }
        tg_manifest_record r = {0};
        const char *why = parse_line(line, n, dir, &r);
        if (why) {
            free(r.audio);
            free(r.text);
            m->n_skipped++;
            warn(m->warnings, &m->n_warnings, "%s:%d: skipped: the line %s", label, line_no, why);
            continue;
        }
        r.line = line_no;
        m->records[m->n++] = r;
    }
    *out = m;
    return TG_OK;
}

tg_status tg_manifest_load(const char *path, tg_manifest **out) {
    if (!path || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_manifest_load: NULL argument");
    char *buf;
    size_t len;
    tg_status st = tg_read_whole_file(path, (size_t)1 << 30, &buf, &len);
    if (st != TG_OK) return st;
    char *dir = strdup(path);
    if (!dir) {
        free(buf);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_manifest_load: out of memory");
    }
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    else
        dir[0] = '\0';
    st = tg_manifest_parse(buf, len, dir, path, out);
    free(dir);
    free(buf);
    return st;
}

/* ------------------------------------------------------------------ */
/* Data sets                                                           */
/* ------------------------------------------------------------------ */

void tg_dataset_free(tg_dataset *d) {
    if (!d) return;
    free(d->mels);
    free(d->seqs);
    free(d->seq_len);
    if (d->texts)
        for (int i = 0; i < d->n; i++) free(d->texts[i]);
    free(d->texts);
    free(d->record);
    for (int i = 0; i < d->n_warnings; i++) free(d->warnings[i]);
    free(d);
}

/* The label sequence of a text; returns its length, 0 when it does not fit
 * (or -1 when encoding fails). */
static int make_sequence(const tg_dataset_options *o, const char *text, int32_t *seq) {
    int32_t *ids = NULL;
    int n_ids = 0;
    if (tg_tokenizer_encode(o->tokenizer, text, strlen(text), 0, &ids, &n_ids) != TG_OK) return -1;
    int n = 0;
    for (int i = 0; i < 4; i++)
        if (o->prompt[i] >= 0) n++;
    if (n + n_ids + 1 > o->max_tokens) {
        free(ids);
        return 0;
    }
    n = 0;
    for (int i = 0; i < 4; i++)
        if (o->prompt[i] >= 0) seq[n++] = o->prompt[i];
    for (int i = 0; i < n_ids; i++) seq[n++] = ids[i];
    seq[n++] = o->eot;
    free(ids);
    return n;
}

#define MEL_BATCH 16

/* Log-Mel of n_audio windows (samples [n_audio, window]) into mels. */
static tg_status compute_mels(const tg_dataset_options *o, const float *samples, int n_audio,
                              float *mels) {
    tg_graph *g = tg_graph_new();
    if (!g) return tg_set_error(TG_ERR_NO_MEMORY, "data set: out of memory");
    int64_t shape[2] = {MEL_BATCH, o->window_samples};
    tg_tensor x = tg_placeholder(g, "audio", TG_F32, 2, shape);
    tg_tensor y = tg_whisper_log_mel(g, x, o->n_mels);
    tg_status st = tg_graph_status(g);
    if (st != TG_OK) tg_set_error(st, "data set: log-Mel graph: %s", tg_graph_error(g));
    tg_executable *exe = NULL;
    if (st == TG_OK && o->dev) st = tg_compile(o->dev, g, NULL, 1, &y, 0, NULL, NULL, &exe);
    size_t per_audio = (size_t)o->window_samples;
    size_t per_mel = (size_t)o->n_mels * (size_t)(o->window_samples / 160);
    float *buf = calloc((size_t)MEL_BATCH * per_audio, sizeof *buf);
    if (!buf && st == TG_OK) st = tg_set_error(TG_ERR_NO_MEMORY, "data set: out of memory");
    for (int i = 0; i < n_audio && st == TG_OK; i += MEL_BATCH) {
        int k = n_audio - i < MEL_BATCH ? n_audio - i : MEL_BATCH;
        memset(buf, 0, (size_t)MEL_BATCH * per_audio * sizeof *buf);
        memcpy(buf, samples + (size_t)i * per_audio, (size_t)k * per_audio * sizeof *buf);
        tg_array a = {TG_F32, 2, {MEL_BATCH, o->window_samples}, buf}, r = {0};
        tg_feed f = {x, &a};
        st = exe ? tg_run(exe, 1, &f, &r) : tg_interpret(g, NULL, 1, &f, 1, &y, &r, 0, NULL, 0);
        if (st == TG_OK)
            memcpy(mels + (size_t)i * per_mel, r.data, (size_t)k * per_mel * sizeof(float));
        tg_array_free(&r);
    }
    free(buf);
    tg_executable_free(exe);
    tg_graph_free(g);
    return st;
}

static bool read_cache(const char *path, const tg_dataset *d) {
    tg_array a = {0};
    if (tg_npy_read(path, &a) != TG_OK) return false;
    bool ok = a.dtype == TG_F32 && a.rank == 3 && a.shape[0] == d->n && a.shape[1] == d->n_mels &&
              a.shape[2] == d->frames;
    if (ok) memcpy(d->mels, a.data, (size_t)tg_array_count(&a) * sizeof(float));
    tg_array_free(&a);
    return ok;
}

tg_status tg_dataset_build(const tg_manifest *m, const tg_dataset_options *o, tg_dataset **out) {
    if (!m || !o || !out || !o->tokenizer)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_dataset_build: NULL argument");
    *out = NULL;
    if (o->window_samples < 480 || o->window_samples % 160 || o->n_mels < 1 || o->max_tokens < 2)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_dataset_build: window of %d samples, %d mels, %d tokens",
                            o->window_samples, o->n_mels, o->max_tokens);
    tg_dataset *d = calloc(1, sizeof *d);
    if (!d) return tg_set_error(TG_ERR_NO_MEMORY, "tg_dataset_build: out of memory");
    d->n_mels = o->n_mels;
    d->frames = o->window_samples / 160;
    d->max_tokens = o->max_tokens;
    int n_rec = m->n;
    size_t per_mel = (size_t)d->n_mels * (size_t)d->frames;
    d->seqs = calloc((size_t)(n_rec ? n_rec : 1) * (size_t)o->max_tokens, sizeof *d->seqs);
    d->seq_len = calloc((size_t)(n_rec ? n_rec : 1), sizeof *d->seq_len);
    d->texts = calloc((size_t)(n_rec ? n_rec : 1), sizeof *d->texts);
    d->record = calloc((size_t)(n_rec ? n_rec : 1), sizeof *d->record);
    float *samples =
        calloc((size_t)(n_rec ? n_rec : 1) * (size_t)o->window_samples, sizeof *samples);
    if (!d->seqs || !d->seq_len || !d->texts || !d->record || !samples) {
        free(samples);
        tg_dataset_free(d);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_dataset_build: out of memory");
    }

    /* The cache file: keyed by the manifest and everything that shapes a mel. */
    char cache[1024] = "";
    if (o->cache_dir && o->cache_dir[0]) {
        uint64_t h = m->hash;
        h = fnv1a(h, &o->n_mels, sizeof o->n_mels);
        h = fnv1a(h, &o->window_samples, sizeof o->window_samples);
        snprintf(cache, sizeof cache, "%s/mel-%016llx.npy", o->cache_dir, (unsigned long long)h);
    }
    struct stat sb;
    bool cached = cache[0] && stat(cache, &sb) == 0;

    tg_status st = TG_OK;
    for (int i = 0; i < n_rec && st == TG_OK; i++) {
        const tg_manifest_record *r = &m->records[i];
        int32_t *seq = d->seqs + (size_t)d->n * (size_t)o->max_tokens;
        int len = make_sequence(o, r->text, seq);
        if (len <= 0) {
            d->n_skipped++;
            warn(d->warnings, &d->n_warnings, "record at line %d: skipped: %s", r->line,
                 len < 0 ? "the text cannot be tokenized"
                         : "the text is longer than the decoder window");
            continue;
        }
        /* The audio is read even with a cache: which records are usable
         * must not depend on whether the cache exists. Reading is cheap
         * next to the log-Mel. */
        float *x = NULL;
        int64_t n = 0;
        if (tg_audio_load(r->audio, TG_WHISPER_SAMPLE_RATE, &x, &n) != TG_OK) {
            d->n_skipped++;
            warn(d->warnings, &d->n_warnings, "record at line %d: skipped: %s", r->line,
                 tg_last_error());
            continue;
        }
        if (n > o->window_samples) {
            d->n_skipped++;
            warn(d->warnings, &d->n_warnings,
                 "record at line %d: skipped: %s is %.2f s, longer than the %.2f s window", r->line,
                 r->audio, (double)n / TG_WHISPER_SAMPLE_RATE,
                 (double)o->window_samples / TG_WHISPER_SAMPLE_RATE);
            free(x);
            continue;
        }
        memcpy(samples + (size_t)d->n * (size_t)o->window_samples, x, (size_t)n * sizeof *x);
        free(x);
        d->texts[d->n] = strdup(r->text);
        if (!d->texts[d->n]) st = tg_set_error(TG_ERR_NO_MEMORY, "tg_dataset_build: out of memory");
        d->seq_len[d->n] = len;
        d->record[d->n] = i;
        d->n++;
    }
    if (st == TG_OK) {
        d->mels = calloc((size_t)(d->n ? d->n : 1) * per_mel, sizeof *d->mels);
        if (!d->mels) st = tg_set_error(TG_ERR_NO_MEMORY, "tg_dataset_build: out of memory");
    }
    if (st == TG_OK && cached && read_cache(cache, d)) {
        d->from_cache = true;
    } else if (st == TG_OK && d->n > 0) {
        st = compute_mels(o, samples, d->n, d->mels);
        if (st == TG_OK && cache[0]) {
            mkdir(o->cache_dir, 0777);
            tg_array a = {TG_F32, 3, {d->n, d->n_mels, d->frames}, d->mels};
            /* a failed cache write only costs the next run time */
            if (tg_npy_write(cache, &a) != TG_OK)
                warn(d->warnings, &d->n_warnings, "cache not written: %s", tg_last_error());
        }
    }
    free(samples);
    if (st != TG_OK) {
        tg_dataset_free(d);
        return st;
    }
    *out = d;
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Order and batches                                                   */
/* ------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void tg_dataset_permutation(const tg_dataset *d, uint64_t seed, int64_t epoch, int *perm) {
    uint64_t s = seed ^ (0xD1B54A32D192ED03ull * (uint64_t)(epoch + 1));
    for (int i = 0; i < d->n; i++) perm[i] = i;
    for (int i = d->n - 1; i > 0; i--) {
        int j = (int)(splitmix64(&s) % (uint64_t)(i + 1));
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void tg_dataset_batch(const tg_dataset *d, const int *idx, int B, int T, int32_t pad, float *mel,
                      int32_t *tokens, int32_t *labels) {
    size_t per_mel = (size_t)d->n_mels * (size_t)d->frames;
    for (int b = 0; b < B; b++) {
        int i = idx[b];
        memcpy(mel + (size_t)b * per_mel, d->mels + (size_t)i * per_mel, per_mel * sizeof(float));
        const int32_t *seq = d->seqs + (size_t)i * (size_t)d->max_tokens;
        int len = d->seq_len[i];
        for (int t = 0; t < T; t++) {
            bool in = t + 1 < len;
            tokens[(size_t)b * T + t] = in ? seq[t] : pad;
            labels[(size_t)b * T + t] = in ? seq[t + 1] : -100;
        }
    }
}

/* ------------------------------------------------------------------ */
/* The loader thread                                                   */
/* ------------------------------------------------------------------ */

/* Two batch buffers (each the largest batch of the order) and the thread
 * that fills the spare one. */
struct tg_loader {
    int B;
    int64_t stride; /* key of the batch after key k: k + stride */
    tg_loader_fill fill;
    void *ctx; /* the fill's; the shuffled order's is the loader */
    tg_loader_batch buf[2];
    int64_t key[2]; /* what buf[i] holds; -1: nothing */
    int current;    /* the buffer handed out last */
    /* the shuffled order (tg_loader_new) */
    const tg_dataset *d;
    uint64_t seed;
    int T;
    int32_t pad;
    int *idx;
    int *perm; /* the permutation of epoch perm_epoch */
    int64_t perm_epoch;
    /* the thread */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t want; /* key to prepare into buf[1 - current]; -1: none */
    bool busy, stop, started;
};

/* The shuffled order: the batch at sample `position`. */
static void fill_shuffled(void *ctx, int64_t position, tg_loader_batch *b) {
    tg_loader *l = ctx;
    for (int k = 0; k < l->B; k++) {
        int64_t p = position + k, epoch = p / l->d->n;
        if (epoch != l->perm_epoch) {
            tg_dataset_permutation(l->d, l->seed, epoch, l->perm);
            l->perm_epoch = epoch;
        }
        l->idx[k] = l->perm[p % l->d->n];
    }
    tg_dataset_batch(l->d, l->idx, l->B, l->T, l->pad, b->mel, b->tokens, b->labels);
    b->bucket = 0;
}

static void *loader_main(void *arg) {
    tg_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && l->want < 0) pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) break;
        int64_t key = l->want;
        int spare = 1 - l->current;
        l->want = -1;
        l->busy = true;
        pthread_mutex_unlock(&l->mu);
        l->fill(l->ctx, key, &l->buf[spare]);
        pthread_mutex_lock(&l->mu);
        l->key[spare] = key;
        l->busy = false;
        pthread_cond_broadcast(&l->cv);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

void tg_loader_free(tg_loader *l) {
    if (!l) return;
    if (l->started) {
        pthread_mutex_lock(&l->mu);
        l->stop = true;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_mutex_destroy(&l->mu);
        pthread_cond_destroy(&l->cv);
    }
    for (int i = 0; i < 2; i++) {
        free(l->buf[i].mel);
        free(l->buf[i].tokens);
        free(l->buf[i].labels);
    }
    free(l->idx);
    free(l->perm);
    free(l);
}

tg_status tg_loader_new_custom(int B, size_t mel_floats, size_t label_count, int64_t stride,
                               tg_loader_fill fill, void *ctx, tg_loader **out) {
    if (!out || B < 1 || mel_floats == 0 || label_count == 0 || stride < 1 || !fill)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_loader_new: bad argument");
    *out = NULL;
    tg_loader *l = calloc(1, sizeof *l);
    if (!l) return tg_set_error(TG_ERR_NO_MEMORY, "tg_loader_new: out of memory");
    l->B = B;
    l->stride = stride;
    l->fill = fill;
    l->ctx = ctx;
    l->want = -1;
    bool ok = true;
    for (int i = 0; i < 2; i++) {
        l->buf[i].mel = malloc(mel_floats * sizeof(float));
        l->buf[i].tokens = malloc(label_count * sizeof(int32_t));
        l->buf[i].labels = malloc(label_count * sizeof(int32_t));
        l->key[i] = -1;
        ok = ok && l->buf[i].mel && l->buf[i].tokens && l->buf[i].labels;
    }
    if (ok) {
        pthread_mutex_init(&l->mu, NULL);
        pthread_cond_init(&l->cv, NULL);
        l->started = pthread_create(&l->thread, NULL, loader_main, l) == 0;
        if (!l->started) {
            pthread_mutex_destroy(&l->mu);
            pthread_cond_destroy(&l->cv);
        }
    }
    if (!ok || !l->started) {
        tg_loader_free(l);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_loader_new: out of memory");
    }
    *out = l;
    return TG_OK;
}

tg_status tg_loader_new(const tg_dataset *d, uint64_t seed, int B, int T, int32_t pad,
                        tg_loader **out) {
    if (!d || !out || B < 1 || T < 1 || d->n < 1)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_loader_new: bad argument (%d records)",
                            d ? d->n : 0);
    size_t mel = (size_t)B * (size_t)d->n_mels * (size_t)d->frames;
    int *idx = malloc((size_t)B * sizeof *idx), *perm = malloc((size_t)d->n * sizeof *perm);
    tg_status st =
        idx && perm ? TG_OK : tg_set_error(TG_ERR_NO_MEMORY, "tg_loader_new: out of memory");
    tg_loader *l = NULL;
    /* the fill reads these fields only once a batch is asked for */
    if (st == TG_OK)
        st = tg_loader_new_custom(B, mel, (size_t)B * (size_t)T, B, fill_shuffled, NULL, &l);
    if (st != TG_OK) {
        free(idx);
        free(perm);
        return st;
    }
    l->ctx = l;
    l->d = d;
    l->seed = seed;
    l->T = T;
    l->pad = pad;
    l->idx = idx;
    l->perm = perm;
    l->perm_epoch = -1;
    *out = l;
    return TG_OK;
}

tg_status tg_loader_next(tg_loader *l, int64_t key, const tg_loader_batch **out) {
    if (!l || key < 0 || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_loader_next: bad argument");
    pthread_mutex_lock(&l->mu);
    while (l->busy || l->want >= 0) pthread_cond_wait(&l->cv, &l->mu);
    int next = 1 - l->current;
    if (l->key[next] != key) {
        /* not prefetched (the first batch, or a jump): fill it here */
        l->fill(l->ctx, key, &l->buf[next]);
        l->key[next] = key;
    }
    l->current = next;
    l->want = key + l->stride; /* prefetch into the other buffer */
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    *out = &l->buf[next];
    return TG_OK;
}

tg_status tg_loader_get(tg_loader *l, int64_t position, const float **mel, const int32_t **tokens,
                        const int32_t **labels) {
    if (!mel || !tokens || !labels)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_loader_get: bad argument");
    const tg_loader_batch *b = NULL;
    tg_status st = tg_loader_next(l, position, &b);
    if (st != TG_OK) return st;
    *mel = b->mel;
    *tokens = b->tokens;
    *labels = b->labels;
    return TG_OK;
}
