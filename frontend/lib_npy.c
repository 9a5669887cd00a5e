/* lib_npy.c — NumPy .npy reading and writing (see npy.h).
 *
 * The format: 6 magic bytes "\x93NUMPY", a major and minor version byte, a
 * little-endian header length (2 bytes in version 1.0, 4 bytes in 2.0 and
 * 3.0), then the header — a Python dict literal such as
 * {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), } — padded with
 * spaces and a newline, then the raw elements in C order. */
#include "frontend/npy.h"
#include "graph/graph_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const unsigned char npy_magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* One supported on-disk dtype and how it maps to a tg dtype. */
typedef struct npy_dtype {
    const char *descr;     /* as written in the header */
    const char *shown;     /* as named in error messages */
    size_t file_size;      /* bytes per element in the file */
    tg_dtype dtype;        /* what it becomes in memory */
    bool is_i64;           /* narrowed to i32 with a range check */
    bool is_bool;          /* normalised to 0/1 */
    bool written_for_this; /* the descr tg_npy_write uses for `dtype` */
} npy_dtype;

/* NumPy writes '|' for one-byte types; '<' and '=' are accepted for them too
 * since byte order means nothing there. */
static const npy_dtype npy_dtypes[] = {
    {"<f4", "f32", 4, TG_F32, false, false, true}, {"<f2", "f16", 2, TG_F16, false, false, true},
    {"<i4", "i32", 4, TG_I32, false, false, true}, {"<i8", "i64", 8, TG_I32, true, false, false},
    {"|u1", "u8", 1, TG_U8, false, false, true},   {"<u1", "u8", 1, TG_U8, false, false, false},
    {"=u1", "u8", 1, TG_U8, false, false, false},  {"|i1", "i8", 1, TG_I8, false, false, true},
    {"<i1", "i8", 1, TG_I8, false, false, false},  {"=i1", "i8", 1, TG_I8, false, false, false},
    {"|b1", "bool", 1, TG_U8, false, true, false}, {"<b1", "bool", 1, TG_U8, false, true, false},
    {"=b1", "bool", 1, TG_U8, false, true, false},
};
#define N_NPY_DTYPES (sizeof npy_dtypes / sizeof npy_dtypes[0])

static bool host_is_little_endian(void) {
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static void reverse_bytes(unsigned char *p, size_t n) {
    for (size_t i = 0; i < n / 2; i++) {
        unsigned char t = p[i];
        p[i] = p[n - 1 - i];
        p[n - 1 - i] = t;
    }
}

/* Converts `count` elements of `size` bytes between little-endian and the
 * host order, in place (a no-op on little-endian hosts). */
static void to_or_from_little_endian(void *data, int64_t count, size_t size) {
    if (size == 1 || host_is_little_endian()) return;
    unsigned char *p = data;
    for (int64_t i = 0; i < count; i++) reverse_bytes(p + (size_t)i * size, size);
}

static uint32_t read_u32_le(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int64_t read_i64_le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return (int64_t)v; /* two's complement on every platform tg targets */
}

/* ---- the header dict ---- */

typedef struct header_parser {
    const char *p, *end;
    const char *label;
    const char *start; /* for offsets in messages */
} header_parser;

typedef struct npy_header {
    char descr[32];
    bool fortran_order;
    int rank;
    int64_t shape[TG_MAX_RANK];
    bool has_descr, has_order, has_shape;
} npy_header;

static void skip_space(header_parser *hp) {
    while (hp->p < hp->end && (*hp->p == ' ' || *hp->p == '\t' || *hp->p == '\n' || *hp->p == '\r'))
        hp->p++;
}

static tg_status header_error(header_parser *hp, const char *what) {
    return tg_set_error_at(TG_ERR_PARSE, hp->label, "bad header: %s at header offset %ld", what,
                           (long)(hp->p - hp->start));
}

static bool accept(header_parser *hp, char c) {
    skip_space(hp);
    if (hp->p < hp->end && *hp->p == c) {
        hp->p++;
        return true;
    }
    return false;
}

static bool accept_word(header_parser *hp, const char *word) {
    skip_space(hp);
    size_t n = strlen(word);
    if ((size_t)(hp->end - hp->p) >= n && memcmp(hp->p, word, n) == 0) {
        hp->p += n;
        return true;
    }
    return false;
}

/* A Python string literal in single or double quotes, without escapes. */
static tg_status parse_string(header_parser *hp, char *out, size_t outsz) {
    skip_space(hp);
    if (hp->p >= hp->end || (*hp->p != '\'' && *hp->p != '"'))
        return header_error(hp, "expected a quoted string");
    char quote = *hp->p++;
    size_t n = 0;
    while (hp->p < hp->end && *hp->p != quote) {
        if (*hp->p == '\\') return header_error(hp, "escapes in strings are not supported");
        if (n + 1 >= outsz) return header_error(hp, "string too long");
        out[n++] = *hp->p++;
    }
    if (hp->p >= hp->end) return header_error(hp, "unterminated string");
    hp->p++;
    out[n] = '\0';
    return TG_OK;
}

/* A tuple of non-negative integers: (), (3,), (2, 3). Old Python 2 files
 * write long integers as 3L, which NumPy still reads, so we do too. */
static tg_status parse_shape(header_parser *hp, npy_header *h) {
    if (!accept(hp, '(')) return header_error(hp, "expected '(' to start the shape");
    h->rank = 0;
    for (;;) {
        if (accept(hp, ')')) return TG_OK;
        skip_space(hp);
        if (hp->p >= hp->end || *hp->p < '0' || *hp->p > '9')
            return header_error(hp, "expected a non-negative integer in the shape");
        int64_t dim = 0;
        while (hp->p < hp->end && *hp->p >= '0' && *hp->p <= '9') {
            int digit = *hp->p - '0';
            if (dim > (INT64_MAX - digit) / 10)
                return tg_set_error_at(TG_ERR_PARSE, hp->label,
                                       "bad header: a shape dimension does not fit in 64 bits");
            dim = dim * 10 + digit;
            hp->p++;
        }
        if (hp->p < hp->end && *hp->p == 'L') hp->p++;
        if (h->rank == TG_MAX_RANK)
            return tg_set_error_at(TG_ERR_UNSUPPORTED, hp->label,
                                   "rank is more than %d (the most tg supports)", TG_MAX_RANK);
        h->shape[h->rank++] = dim;
        if (accept(hp, ',')) continue;
        if (accept(hp, ')')) return TG_OK;
        return header_error(hp, "expected ',' or ')' in the shape");
    }
}

static tg_status parse_header(const char *text, size_t len, const char *label, npy_header *h) {
    header_parser hp = {text, text + len, label, text};
    memset(h, 0, sizeof *h);
    if (!accept(&hp, '{')) return header_error(&hp, "expected '{'");
    while (!accept(&hp, '}')) {
        char key[32];
        tg_status st = parse_string(&hp, key, sizeof key);
        if (st != TG_OK) return st;
        if (!accept(&hp, ':')) return header_error(&hp, "expected ':' after a key");
        if (strcmp(key, "descr") == 0 && !h->has_descr) {
            skip_space(&hp);
            if (hp.p < hp.end && *hp.p == '[')
                return tg_set_error_at(TG_ERR_UNSUPPORTED, label,
                                       "structured dtypes (a list in 'descr') are not supported");
            st = parse_string(&hp, h->descr, sizeof h->descr);
            if (st != TG_OK) return st;
            h->has_descr = true;
        } else if (strcmp(key, "fortran_order") == 0 && !h->has_order) {
            if (accept_word(&hp, "True"))
                h->fortran_order = true;
            else if (accept_word(&hp, "False"))
                h->fortran_order = false;
            else
                return header_error(&hp, "expected True or False for 'fortran_order'");
            h->has_order = true;
        } else if (strcmp(key, "shape") == 0 && !h->has_shape) {
            st = parse_shape(&hp, h);
            if (st != TG_OK) return st;
            h->has_shape = true;
        } else {
            return tg_set_error_at(TG_ERR_PARSE, label,
                                   "bad header: unexpected or repeated key '%s'", key);
        }
        if (!accept(&hp, ',')) {
            if (accept(&hp, '}')) break;
            return header_error(&hp, "expected ',' or '}' after a value");
        }
    }
    skip_space(&hp);
    /* Padding is spaces and a newline; NUL padding appears in some writers. */
    while (hp.p < hp.end && *hp.p == '\0') hp.p++;
    if (hp.p != hp.end) return header_error(&hp, "unexpected text after '}'");
    if (!h->has_descr || !h->has_order || !h->has_shape)
        return tg_set_error_at(TG_ERR_PARSE, label,
                               "bad header: missing key '%s' (needs descr, fortran_order, shape)",
                               !h->has_descr   ? "descr"
                               : !h->has_order ? "fortran_order"
                                               : "shape");
    return TG_OK;
}

static const npy_dtype *find_npy_dtype(const char *descr) {
    for (size_t i = 0; i < N_NPY_DTYPES; i++)
        if (strcmp(npy_dtypes[i].descr, descr) == 0) return &npy_dtypes[i];
    return NULL;
}

static void format_shape(const npy_header *h, char *buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "(");
    for (int i = 0; i < h->rank && used < n; i++)
        used +=
            (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "", (long long)h->shape[i]);
    if (used < n) snprintf(buf + used, n - used, h->rank == 1 ? ",)" : ")");
}

/* ---- reading ---- */

tg_status tg_npy_read_mem(const void *buf, size_t len, const char *label, tg_array *out) {
    if (!label) label = "<memory>";
    if (!out) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_npy_read_mem: out is NULL");
    memset(out, 0, sizeof *out);
    if (!buf && len > 0)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_npy_read_mem: buf is NULL");
    const unsigned char *bytes = buf;

    if (len < 8 || memcmp(bytes, npy_magic, sizeof npy_magic) != 0)
        return tg_set_error_at(TG_ERR_PARSE, label, "not a .npy file (bad magic bytes)");
    int major = bytes[6], minor = bytes[7];
    if (major < 1 || major > 3 || minor != 0)
        return tg_set_error_at(TG_ERR_UNSUPPORTED, label,
                               "unsupported .npy format version %d.%d (tg reads 1.0, 2.0, 3.0)",
                               major, minor);
    size_t preamble = major == 1 ? 10 : 12;
    if (len < preamble)
        return tg_set_error_at(TG_ERR_PARSE, label,
                               "truncated: %zu bytes, shorter than the %zu-byte preamble", len,
                               preamble);
    size_t header_len = major == 1 ? (size_t)(bytes[8] | bytes[9] << 8) : read_u32_le(bytes + 8);
    if (header_len > len - preamble)
        return tg_set_error_at(TG_ERR_PARSE, label,
                               "truncated header: header length is %zu bytes but only %zu follow",
                               header_len, len - preamble);

    npy_header h;
    tg_status st = parse_header((const char *)bytes + preamble, header_len, label, &h);
    if (st != TG_OK) return st;

    const npy_dtype *dt = find_npy_dtype(h.descr);
    if (!dt) {
        if (h.descr[0] == '>')
            return tg_set_error_at(TG_ERR_UNSUPPORTED, label,
                                   "big-endian dtype '%s' is not supported (use a little-endian "
                                   "array: a.astype(a.dtype.newbyteorder('<')))",
                                   h.descr);
        return tg_set_error_at(TG_ERR_UNSUPPORTED, label,
                               "unsupported dtype '%s' (tg reads <f4 <f2 <i4 <i8 |u1 |i1 |b1; "
                               "convert with a.astype(np.float32))",
                               h.descr);
    }
    if (h.fortran_order)
        return tg_set_error_at(
            TG_ERR_UNSUPPORTED, label,
            "Fortran-order arrays are not supported (save np.ascontiguousarray(a))");

    /* Element count and byte size, refusing overflow before any allocation. */
    int64_t count = 1;
    for (int i = 0; i < h.rank; i++) {
        if (h.shape[i] != 0 && count > INT64_MAX / h.shape[i]) {
            char shape[160];
            format_shape(&h, shape, sizeof shape);
            return tg_set_error_at(TG_ERR_PARSE, label,
                                   "shape %s is too large (element count overflows)", shape);
        }
        count *= h.shape[i];
    }
    if ((uint64_t)count > SIZE_MAX / dt->file_size) {
        char shape[160];
        format_shape(&h, shape, sizeof shape);
        return tg_set_error_at(TG_ERR_PARSE, label, "shape %s is too large (byte size overflows)",
                               shape);
    }
    size_t data_bytes = (size_t)count * dt->file_size;
    size_t available = len - preamble - header_len;
    if (data_bytes != available)
        return tg_set_error_at(TG_ERR_PARSE, label,
                               "header says %lld elements of %s (%zu bytes) but %zu bytes follow",
                               (long long)count, dt->shown, data_bytes, available);

    tg_array a;
    st = tg_array_alloc(&a, dt->dtype, h.rank, h.shape);
    if (st != TG_OK)
        return tg_set_error_at(st, label, "cannot allocate the array: %s", tg_last_error());
    const unsigned char *src = bytes + preamble + header_len;
    if (dt->is_i64) {
        int32_t *dst = a.data;
        for (int64_t i = 0; i < count; i++) {
            int64_t v = read_i64_le(src + (size_t)i * 8);
            if (v < INT32_MIN || v > INT32_MAX) {
                tg_array_free(&a);
                return tg_set_error_at(
                    TG_ERR_UNSUPPORTED, label,
                    "element %lld is %lld, outside the i32 range (int64 files are "
                    "read as i32)",
                    (long long)i, (long long)v);
            }
            dst[i] = (int32_t)v;
        }
    } else if (dt->is_bool) {
        unsigned char *dst = a.data;
        for (int64_t i = 0; i < count; i++) dst[i] = src[i] != 0;
    } else if (data_bytes > 0) {
        memcpy(a.data, src, data_bytes);
        to_or_from_little_endian(a.data, count, dt->file_size);
    }
    *out = a;
    return TG_OK;
}

tg_status tg_npy_read(const char *path, tg_array *out) {
    if (out) memset(out, 0, sizeof *out);
    if (!path || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_npy_read: path or out is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) return tg_set_error_at(TG_ERR_IO, path, "cannot open: %s", strerror(errno));
    /* Read in a loop rather than trusting a size from fseek: works for pipes
     * and reports directories (EISDIR) through ferror. */
    size_t cap = 1 << 16, len = 0;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        fclose(f);
        return tg_set_error_at(TG_ERR_NO_MEMORY, path, "out of memory");
    }
    for (;;) {
        if (len == cap) {
            unsigned char *bigger = cap <= SIZE_MAX / 2 ? realloc(buf, cap * 2) : NULL;
            if (!bigger) {
                free(buf);
                fclose(f);
                return tg_set_error_at(TG_ERR_NO_MEMORY, path, "out of memory reading the file");
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int read_errno = ferror(f) ? (errno ? errno : EIO) : 0;
    fclose(f);
    if (read_errno != 0) {
        free(buf);
        return tg_set_error_at(TG_ERR_IO, path, "cannot read: %s", strerror(read_errno));
    }
    tg_status st = tg_npy_read_mem(buf, len, path, out);
    free(buf);
    return st;
}

/* ---- writing ---- */

static const npy_dtype *npy_dtype_for(tg_dtype t) {
    for (size_t i = 0; i < N_NPY_DTYPES; i++)
        if (npy_dtypes[i].written_for_this && npy_dtypes[i].dtype == t) return &npy_dtypes[i];
    return NULL;
}

tg_status tg_npy_write_mem(const tg_array *a, void **buf, size_t *len) {
    if (!a || !buf || !len)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_npy_write: NULL argument");
    *buf = NULL;
    *len = 0;
    if (a->rank < 0 || a->rank > TG_MAX_RANK)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "rank %d is out of range", a->rank);
    if (a->dtype == TG_BF16)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "bf16 has no NumPy dtype; cast the array to f32 first");
    const npy_dtype *dt = npy_dtype_for(a->dtype);
    if (!dt) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "unknown dtype %d", (int)a->dtype);
    int64_t count = 1;
    for (int i = 0; i < a->rank; i++) {
        if (a->shape[i] < 0)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT, "dimension %d is %lld", i,
                                (long long)a->shape[i]);
        if (a->shape[i] != 0 && count > INT64_MAX / a->shape[i])
            return tg_set_error(TG_ERR_INVALID_ARGUMENT, "shape is too large");
        count *= a->shape[i];
    }
    if ((uint64_t)count > (SIZE_MAX - 4096) / dt->file_size)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "shape is too large");
    size_t data_bytes = (size_t)count * dt->file_size;
    if (data_bytes > 0 && !a->data) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "data is NULL");

    npy_header h = {.rank = a->rank};
    memcpy(h.shape, a->shape, sizeof h.shape);
    char shape[160];
    format_shape(&h, shape, sizeof shape);
    char dict[256];
    int dict_len =
        snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                 dt->descr, shape);
    /* As NumPy does: pad with spaces so the data starts at a multiple of 64,
     * and end the header with a newline. */
    size_t header_len = (size_t)dict_len + 1;
    header_len += (64 - (10 + header_len) % 64) % 64;

    size_t total = 10 + header_len + data_bytes;
    unsigned char *out = malloc(total);
    if (!out) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    memcpy(out, npy_magic, sizeof npy_magic);
    out[6] = 1;
    out[7] = 0;
    out[8] = (unsigned char)(header_len & 0xff);
    out[9] = (unsigned char)(header_len >> 8);
    memset(out + 10, ' ', header_len);
    memcpy(out + 10, dict, (size_t)dict_len);
    out[10 + header_len - 1] = '\n';
    if (data_bytes > 0) {
        memcpy(out + 10 + header_len, a->data, data_bytes);
        to_or_from_little_endian(out + 10 + header_len, count, dt->file_size);
    }
    *buf = out;
    *len = total;
    return TG_OK;
}

tg_status tg_npy_write(const char *path, const tg_array *a) {
    if (!path) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_npy_write: path is NULL");
    void *buf;
    size_t len;
    tg_status st = tg_npy_write_mem(a, &buf, &len);
    if (st != TG_OK) return tg_set_error_at(st, path, "%s", tg_last_error());
    FILE *f = fopen(path, "wb");
    if (!f) {
        int err = errno;
        free(buf);
        return tg_set_error_at(TG_ERR_IO, path, "cannot open for writing: %s", strerror(err));
    }
    size_t written = fwrite(buf, 1, len, f);
    int err = written == len ? 0 : errno;
    free(buf);
    if (fclose(f) != 0 && err == 0) err = errno ? errno : EIO;
    if (written != len || err != 0)
        return tg_set_error_at(TG_ERR_IO, path, "cannot write: %s", strerror(err ? err : EIO));
    return TG_OK;
}
