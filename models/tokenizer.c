/* tokenizer.c — byte-level BPE as GPT-2 and Whisper use it.
 *
 * Encoding: added tokens found in the text are taken whole; the text
 * between them is split into pre-tokens by the GPT-2 pattern; each
 * pre-token starts as one symbol per byte, and the adjacent pair with the
 * lowest merge rank is merged (every occurrence, left to right) until no
 * pair has a merge. Decoding concatenates the tokens' bytes. */
#include "models/tokenizer.h"
#include "graph/graph_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct tok_entry {
    char *bytes; /* NULL: no token has this id */
    uint32_t len;
    unsigned flags;
} tok_entry;

typedef struct merge_slot {
    uint64_t key; /* left id << 32 | right id; UINT64_MAX: empty */
    int32_t rank, result;
} merge_slot;

struct tg_tokenizer {
    tok_entry *tokens; /* by id */
    int32_t n_ids;     /* max id + 1 */
    int32_t *by_bytes; /* open-addressing table of ids, keyed by bytes; -1 empty */
    size_t by_bytes_cap, n_tokens;
    merge_slot *merges;
    size_t merges_cap, n_merges;
    int32_t byte_id[256];
    int32_t *added; /* added-token ids by first byte, longest first */
    int n_added;
    int added_start[257]; /* added[added_start[b] .. added_start[b+1]) start with b */
    bool finished;
};

/* ---- hashing ---- */

static uint64_t hash_bytes(const void *p, size_t n) {
    const unsigned char *b = p;
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ULL;
    return h;
}

static uint64_t hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static int32_t find_bytes(const tg_tokenizer *t, const void *p, size_t n) {
    if (t->by_bytes_cap == 0) return -1;
    size_t mask = t->by_bytes_cap - 1;
    for (size_t i = hash_bytes(p, n) & mask;; i = (i + 1) & mask) {
        int32_t id = t->by_bytes[i];
        if (id < 0) return -1;
        const tok_entry *e = &t->tokens[id];
        if (e->len == n && memcmp(e->bytes, p, n) == 0) return id;
    }
}

static bool insert_bytes_slot(int32_t *table, size_t cap, const tok_entry *tokens, int32_t id) {
    size_t mask = cap - 1;
    const tok_entry *e = &tokens[id];
    for (size_t i = hash_bytes(e->bytes, e->len) & mask;; i = (i + 1) & mask)
        if (table[i] < 0) {
            table[i] = id;
            return true;
        }
}

static bool grow_by_bytes(tg_tokenizer *t) {
    size_t cap = t->by_bytes_cap ? 2 * t->by_bytes_cap : 1024;
    int32_t *table = malloc(cap * sizeof *table);
    if (!table) return false;
    for (size_t i = 0; i < cap; i++) table[i] = -1;
    for (size_t i = 0; i < t->by_bytes_cap; i++)
        if (t->by_bytes[i] >= 0) insert_bytes_slot(table, cap, t->tokens, t->by_bytes[i]);
    free(t->by_bytes);
    t->by_bytes = table;
    t->by_bytes_cap = cap;
    return true;
}

static const merge_slot *find_merge(const tg_tokenizer *t, int32_t a, int32_t b) {
    if (t->merges_cap == 0) return NULL;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t mask = t->merges_cap - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
        if (t->merges[i].key == UINT64_MAX) return NULL;
        if (t->merges[i].key == key) return &t->merges[i];
    }
}

static void insert_merge_slot(merge_slot *table, size_t cap, merge_slot m) {
    size_t mask = cap - 1;
    for (size_t i = hash_u64(m.key) & mask;; i = (i + 1) & mask)
        if (table[i].key == UINT64_MAX) {
            table[i] = m;
            return;
        }
}

static bool grow_merges(tg_tokenizer *t) {
    size_t cap = t->merges_cap ? 2 * t->merges_cap : 1024;
    merge_slot *table = malloc(cap * sizeof *table);
    if (!table) return false;
    for (size_t i = 0; i < cap; i++) table[i].key = UINT64_MAX;
    for (size_t i = 0; i < t->merges_cap; i++)
        if (t->merges[i].key != UINT64_MAX) insert_merge_slot(table, cap, t->merges[i]);
    free(t->merges);
    t->merges = table;
    t->merges_cap = cap;
    return true;
}

/* ---- building ---- */

tg_tokenizer *tg_tokenizer_new(void) {
    tg_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        tg_set_error(TG_ERR_NO_MEMORY, "tokenizer: out of memory");
        return NULL;
    }
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    return t;
}

void tg_tokenizer_free(tg_tokenizer *t) {
    if (!t) return;
    for (int32_t i = 0; i < t->n_ids; i++) free(t->tokens[i].bytes);
    free(t->tokens);
    free(t->by_bytes);
    free(t->merges);
    free(t->added);
    free(t);
}

/* Shows a token's bytes in messages: printable ASCII as is, others \xNN. */
static const char *show(const void *p, size_t n, char *buf, size_t size) {
    const unsigned char *b = p;
    size_t o = 0;
    for (size_t i = 0; i < n && o + 5 < size; i++) {
        if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\')
            buf[o++] = (char)b[i];
        else
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", b[i]);
    }
    buf[o] = '\0';
    return buf;
}

tg_status tg_tokenizer_add_token(tg_tokenizer *t, int32_t id, const void *bytes, size_t len,
                                 unsigned flags) {
    char shown[96];
    if (!t || (!bytes && len > 0))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tokenizer: NULL argument");
    if (t->finished) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tokenizer: already finished");
    if (id < 0 || id > TG_TOKENIZER_MAX_ID)
        return tg_set_error(TG_ERR_PARSE, "token '%s' has id %d, outside [0, %d]",
                            show(bytes, len, shown, sizeof shown), id, TG_TOKENIZER_MAX_ID);
    if (len == 0 || len > 65536)
        return tg_set_error(TG_ERR_PARSE, "token id %d is %s", id,
                            len == 0 ? "empty" : "longer than 65536 bytes");
    int32_t other = find_bytes(t, bytes, len);
    if (other >= 0 && other != id)
        return tg_set_error(TG_ERR_PARSE, "token '%s' has two ids, %d and %d",
                            show(bytes, len, shown, sizeof shown), other, id);
    if (id < t->n_ids && t->tokens[id].bytes) {
        tok_entry *e = &t->tokens[id];
        if (e->len != len || memcmp(e->bytes, bytes, len) != 0) {
            char shown2[96];
            return tg_set_error(TG_ERR_PARSE, "id %d is both '%s' and '%s'", id,
                                show(e->bytes, e->len, shown2, sizeof shown2),
                                show(bytes, len, shown, sizeof shown));
        }
        e->flags |= flags;
        return TG_OK;
    }
    if (id >= t->n_ids) {
        /* Grow geometrically; ids usually arrive in order. */
        int32_t cap = t->n_ids ? t->n_ids : 256;
        while (cap <= id) cap = cap > TG_TOKENIZER_MAX_ID / 2 ? TG_TOKENIZER_MAX_ID + 1 : 2 * cap;
        tok_entry *grown = realloc(t->tokens, (size_t)cap * sizeof *grown);
        if (!grown) return tg_set_error(TG_ERR_NO_MEMORY, "tokenizer: out of memory");
        memset(grown + t->n_ids, 0, (size_t)(cap - t->n_ids) * sizeof *grown);
        t->tokens = grown;
        t->n_ids = cap; /* trimmed to max id + 1 in finish */
    }
    if ((t->n_tokens + 1) * 2 > t->by_bytes_cap && !grow_by_bytes(t))
        return tg_set_error(TG_ERR_NO_MEMORY, "tokenizer: out of memory");
    char *copy = malloc(len);
    if (!copy) return tg_set_error(TG_ERR_NO_MEMORY, "tokenizer: out of memory");
    memcpy(copy, bytes, len);
    t->tokens[id] = (tok_entry){copy, (uint32_t)len, flags};
    insert_bytes_slot(t->by_bytes, t->by_bytes_cap, t->tokens, id);
    t->n_tokens++;
    if (len == 1) t->byte_id[*(const unsigned char *)bytes] = id;
    return TG_OK;
}

tg_status tg_tokenizer_add_merge(tg_tokenizer *t, const void *a, size_t alen, const void *b,
                                 size_t blen) {
    char sa[96], sb[96];
    if (!t || !a || !b) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tokenizer: NULL argument");
    int32_t ia = find_bytes(t, a, alen), ib = find_bytes(t, b, blen);
    show(a, alen, sa, sizeof sa);
    show(b, blen, sb, sizeof sb);
    if (ia < 0 || ib < 0)
        return tg_set_error(TG_ERR_PARSE, "merge %zu ('%s' '%s'): '%s' is not in the vocabulary",
                            t->n_merges + 1, sa, sb, ia < 0 ? sa : sb);
    if (alen + blen > 65536)
        return tg_set_error(TG_ERR_PARSE, "merge %zu is too long", t->n_merges + 1);
    char *joined = malloc(alen + blen + 1);
    if (!joined) return tg_set_error(TG_ERR_NO_MEMORY, "tokenizer: out of memory");
    memcpy(joined, a, alen);
    memcpy(joined + alen, b, blen);
    int32_t ir = find_bytes(t, joined, alen + blen);
    free(joined);
    if (ir < 0)
        return tg_set_error(TG_ERR_PARSE,
                            "merge %zu ('%s' '%s'): the merged token is not in the vocabulary",
                            t->n_merges + 1, sa, sb);
    if (find_merge(t, ia, ib)) { /* a repeated pair keeps its first rank */
        t->n_merges++;
        return TG_OK;
    }
    if ((t->n_merges + 1) * 2 > t->merges_cap && !grow_merges(t))
        return tg_set_error(TG_ERR_NO_MEMORY, "tokenizer: out of memory");
    merge_slot m = {(uint64_t)(uint32_t)ia << 32 | (uint32_t)ib, (int32_t)t->n_merges, ir};
    insert_merge_slot(t->merges, t->merges_cap, m);
    t->n_merges++;
    return TG_OK;
}

/* Sort key of an added token: first byte, then longest first. */
typedef struct added_key {
    unsigned char first;
    uint32_t len;
    int32_t id;
} added_key;

static int by_first_byte_longest(const void *x, const void *y) {
    const added_key *a = x, *b = y;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

tg_status tg_tokenizer_finish(tg_tokenizer *t) {
    if (!t) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tokenizer: NULL argument");
    for (int b = 0; b < 256; b++)
        if (t->byte_id[b] < 0)
            return tg_set_error(TG_ERR_PARSE,
                                "the vocabulary lacks the token for byte 0x%02x (byte-level BPE "
                                "needs all 256)",
                                b);
    while (t->n_ids > 0 && !t->tokens[t->n_ids - 1].bytes) t->n_ids--;
    int n = 0;
    for (int32_t i = 0; i < t->n_ids; i++)
        if (t->tokens[i].bytes && (t->tokens[i].flags & TG_TOKEN_ADDED)) n++;
    free(t->added);
    t->added = malloc((size_t)(n ? n : 1) * sizeof *t->added);
    added_key *keys = malloc((size_t)(n ? n : 1) * sizeof *keys);
    if (!t->added || !keys) {
        free(keys);
        return tg_set_error(TG_ERR_NO_MEMORY, "tokenizer: out of memory");
    }
    t->n_added = 0;
    for (int32_t i = 0; i < t->n_ids; i++)
        if (t->tokens[i].bytes && (t->tokens[i].flags & TG_TOKEN_ADDED))
            keys[t->n_added++] =
                (added_key){(unsigned char)t->tokens[i].bytes[0], t->tokens[i].len, i};
    qsort(keys, (size_t)n, sizeof *keys, by_first_byte_longest);
    for (int i = 0; i < n; i++) t->added[i] = keys[i].id;
    free(keys);
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < n && (unsigned char)t->tokens[t->added[k]].bytes[0] < b) k++;
        t->added_start[b] = k;
    }
    t->finished = true;
    return TG_OK;
}

/* ---- the byte-level alphabet ---- */

/* Bytes 33-126, 161-172 and 174-255 stand for themselves; the other 68
 * (0-32, 127-160, 173) map to U+0100 onwards, in byte order. */
uint32_t tg_bytelevel_char(unsigned char b) {
    if (b <= 32) return 256 + b;
    if (b >= 127 && b <= 160) return 256 + 33 + (b - 127);
    if (b == 173) return 256 + 67;
    return b;
}

/* The byte a character of the alphabet stands for, or -1. */
static int bytelevel_byte(uint32_t cp) {
    if (cp < 256) return tg_bytelevel_char((unsigned char)cp) == cp ? (int)cp : -1;
    uint32_t k = cp - 256;
    if (k < 33) return (int)k;
    if (k < 67) return (int)(127 + k - 33);
    if (k == 67) return 173;
    return -1;
}

/* One UTF-8 character: its length in bytes (0 if malformed or truncated). */
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *cp) {
    if (len == 0) return 0;
    unsigned char c = s[0];
    size_t n = c < 0x80             ? 1
               : (c & 0xe0) == 0xc0 ? 2
               : (c & 0xf0) == 0xe0 ? 3
               : (c & 0xf8) == 0xf0 ? 4
                                    : 0;
    if (n == 0 || n > len) return 0;
    uint32_t v = n == 1 ? c : c & (0x7f >> n);
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        v = v << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min_for[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min_for[n] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
    *cp = v;
    return n;
}

bool tg_bytelevel_decode(const char *s, size_t len, unsigned char *out, size_t *out_len) {
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t n = utf8_decode(p + i, len - i, &cp);
        int b = n ? bytelevel_byte(cp) : -1;
        if (b < 0) return false;
        out[o++] = (unsigned char)b;
        i += n;
    }
    *out_len = o;
    return true;
}

/* ---- pre-tokenization ---- */

enum { CH_SPACE, CH_LETTER, CH_NUMBER, CH_OTHER };

/* The class and byte length of the character at s (invalid UTF-8: one
 * byte of class "other"). */
static int char_class(const unsigned char *s, size_t len, size_t *n) {
    uint32_t cp;
    *n = utf8_decode(s, len, &cp);
    if (*n == 0) {
        *n = 1;
        return CH_OTHER;
    }
    if (tg_unicode_is_space(cp)) return CH_SPACE;
    if (tg_unicode_is_letter(cp)) return CH_LETTER;
    if (tg_unicode_is_number(cp)) return CH_NUMBER;
    return CH_OTHER;
}

/* Length of the run of characters of class `cls` starting at s[at]. */
static size_t run_of(const unsigned char *s, size_t len, size_t at, int cls) {
    size_t i = at;
    while (i < len) {
        size_t n;
        if (char_class(s + i, len - i, &n) != cls) break;
        i += n;
    }
    return i - at;
}

size_t tg_pretokenize_next(const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    if (len == 0) return 0;
    /* 's|'t|'re|'ve|'m|'ll|'d */
    if (s[0] == '\'' && len >= 2) {
        if (s[1] == 's' || s[1] == 't' || s[1] == 'm' || s[1] == 'd') return 2;
        if (len >= 3 && ((s[1] == 'r' && s[2] == 'e') || (s[1] == 'v' && s[2] == 'e') ||
                         (s[1] == 'l' && s[2] == 'l')))
            return 3;
    }
    /* ' ?\p{L}+', ' ?\p{N}+', ' ?[^\s\p{L}\p{N}]+' */
    size_t start = s[0] == ' ' ? 1 : 0;
    if (start < len) {
        size_t n;
        int cls = char_class(s + start, len - start, &n);
        if (cls != CH_SPACE) return start + run_of(s, len, start, cls);
    }
    /* '\s+(?!\S)|\s+': a whitespace run; when a non-space follows, its last
     * character is left to prefix the next pre-token, unless the run is a
     * single character. */
    size_t run = run_of(s, len, 0, CH_SPACE);
    if (run == len) return run;
    size_t last = 0, i = 0, n;
    while (i < run) {
        last = i;
        char_class(s + i, run - i, &n);
        i += n;
    }
    return last > 0 ? last : run;
}

/* ---- encoding ---- */

typedef struct id_list {
    int32_t *p;
    int n, cap;
} id_list;

static bool push(id_list *l, int32_t id) {
    if (l->n == l->cap) {
        if (l->cap > INT32_MAX / 2) return false;
        int cap = l->cap ? 2 * l->cap : 64;
        int32_t *grown = realloc(l->p, (size_t)cap * sizeof *grown);
        if (!grown) return false;
        l->p = grown;
        l->cap = cap;
    }
    l->p[l->n++] = id;
    return true;
}

/* BPE on one pre-token; `syms` has room for `len` ids. */
static bool bpe(const tg_tokenizer *t, const unsigned char *s, size_t len, int32_t *syms,
                id_list *out) {
    size_t n = len;
    for (size_t i = 0; i < len; i++) syms[i] = t->byte_id[s[i]];
    while (n >= 2) {
        int32_t best_rank = INT32_MAX, a = -1, b = -1, merged = -1;
        for (size_t i = 0; i + 1 < n; i++) {
            const merge_slot *m = find_merge(t, syms[i], syms[i + 1]);
            if (m && m->rank < best_rank) {
                best_rank = m->rank;
                a = syms[i];
                b = syms[i + 1];
                merged = m->result;
            }
        }
        if (merged < 0) break;
        size_t w = 0;
        for (size_t i = 0; i < n; i++) {
            if (i + 1 < n && syms[i] == a && syms[i + 1] == b) {
                syms[w++] = merged;
                i++;
            } else {
                syms[w++] = syms[i];
            }
        }
        n = w;
    }
    for (size_t i = 0; i < n; i++)
        if (!push(out, syms[i])) return false;
    return true;
}

static bool encode_ordinary(const tg_tokenizer *t, const char *text, size_t len, int32_t *syms,
                            id_list *out) {
    size_t at = 0;
    while (at < len) {
        size_t n = tg_pretokenize_next(text + at, len - at);
        if (!bpe(t, (const unsigned char *)text + at, n, syms, out)) return false;
        at += n;
    }
    return true;
}

tg_status tg_tokenizer_encode(const tg_tokenizer *t, const char *text, size_t len, unsigned flags,
                              int32_t **ids, int *n_ids) {
    if (ids) *ids = NULL;
    if (n_ids) *n_ids = 0;
    if (!t || !ids || !n_ids || (!text && len > 0))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_tokenizer_encode: NULL argument");
    if (!t->finished)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_tokenizer_encode: tokenizer not finished");
    int32_t *syms = malloc(len ? len * sizeof *syms : 1);
    if (!syms) return tg_set_error(TG_ERR_NO_MEMORY, "tg_tokenizer_encode: out of memory");
    id_list out = {0};
    bool ok = true;
    size_t at = 0, i = 0;
    while (ok && i < len) {
        /* The earliest, then longest, added token that may match here. */
        unsigned char c = (unsigned char)text[i];
        int32_t match = -1;
        for (int k = t->added_start[c]; k < t->added_start[c + 1]; k++) {
            const tok_entry *e = &t->tokens[t->added[k]];
            if ((e->flags & TG_TOKEN_SPECIAL) && !(flags & TG_ENCODE_ALLOW_SPECIAL)) continue;
            if (e->len <= len - i && memcmp(e->bytes, text + i, e->len) == 0) {
                match = t->added[k];
                break;
            }
        }
        if (match < 0) {
            i++;
            continue;
        }
        ok = encode_ordinary(t, text + at, i - at, syms, &out) && push(&out, match);
        i += t->tokens[match].len;
        at = i;
    }
    if (ok) ok = encode_ordinary(t, text + at, len - at, syms, &out);
    free(syms);
    if (!ok) {
        free(out.p);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_tokenizer_encode: out of memory");
    }
    if (!out.p) out.p = malloc(sizeof *out.p); /* a valid pointer even for no ids */
    if (!out.p) return tg_set_error(TG_ERR_NO_MEMORY, "tg_tokenizer_encode: out of memory");
    *ids = out.p;
    *n_ids = out.n;
    return TG_OK;
}

/* ---- decoding and lookups ---- */

static const tok_entry *entry(const tg_tokenizer *t, int32_t id) {
    return t && id >= 0 && id < t->n_ids && t->tokens[id].bytes ? &t->tokens[id] : NULL;
}

tg_status tg_tokenizer_decode(const tg_tokenizer *t, const int32_t *ids, int n_ids, unsigned flags,
                              char **text, size_t *len) {
    if (text) *text = NULL;
    if (len) *len = 0;
    if (!t || !text || n_ids < 0 || (!ids && n_ids > 0))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_tokenizer_decode: bad arguments");
    size_t total = 0;
    for (int i = 0; i < n_ids; i++) {
        const tok_entry *e = entry(t, ids[i]);
        if (!e)
            return tg_set_error(TG_ERR_NOT_FOUND,
                                "tg_tokenizer_decode: ids[%d] = %d is not a token (vocabulary "
                                "size %d)",
                                i, ids[i], t->n_ids);
        if (!((e->flags & TG_TOKEN_SPECIAL) && (flags & TG_DECODE_SKIP_SPECIAL))) total += e->len;
    }
    char *out = malloc(total + 1);
    if (!out) return tg_set_error(TG_ERR_NO_MEMORY, "tg_tokenizer_decode: out of memory");
    size_t o = 0;
    for (int i = 0; i < n_ids; i++) {
        const tok_entry *e = entry(t, ids[i]);
        if ((e->flags & TG_TOKEN_SPECIAL) && (flags & TG_DECODE_SKIP_SPECIAL)) continue;
        memcpy(out + o, e->bytes, e->len);
        o += e->len;
    }
    out[o] = '\0';
    *text = out;
    if (len) *len = o;
    return TG_OK;
}

int tg_tokenizer_vocab_size(const tg_tokenizer *t) {
    return t ? t->n_ids : 0;
}

int32_t tg_tokenizer_token_id(const tg_tokenizer *t, const char *text) {
    if (!t || !text || !*text) return -1;
    return find_bytes(t, text, strlen(text));
}

const char *tg_tokenizer_token_bytes(const tg_tokenizer *t, int32_t id, size_t *len) {
    const tok_entry *e = entry(t, id);
    if (len) *len = e ? e->len : 0;
    return e ? e->bytes : NULL;
}

bool tg_tokenizer_is_special(const tg_tokenizer *t, int32_t id) {
    const tok_entry *e = entry(t, id);
    return e && (e->flags & TG_TOKEN_SPECIAL);
}

int32_t tg_tokenizer_timestamp_id(const tg_tokenizer *t, double seconds) {
    if (!t || !isfinite(seconds) || seconds < 0 || seconds > 1e6) return -1;
    /* Whisper's timestamps step by 0.02 s. */
    double q = round(seconds / 0.02) * 0.02;
    char name[48];
    snprintf(name, sizeof name, "<|%.2f|>", q);
    return tg_tokenizer_token_id(t, name);
}
