/* lib_safetensors.c — reading and writing safetensors checkpoints.
 *
 * The format: an 8-byte little-endian header length N, N bytes of JSON
 * (an object: tensor name -> {"dtype", "shape", "data_offsets": [begin,
 * end]}, plus an optional "__metadata__" string map), then the data
 * section; offsets are relative to its start. Files are untrusted: every
 * number is range-checked, sizes are computed overflow-safe, and tensors
 * must tile the data section exactly (no overlap, no gap, nothing left
 * over), as the reference implementation requires. See docs/formats.md. */
#define _POSIX_C_SOURCE 200809L /* mmap, fsync, mkstemp, O_DIRECTORY */
#include "frontend/safetensors.h"
#include "graph/graph_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* One on-disk dtype and the tg dtype it reads as. */
typedef struct st_dtype {
    const char *name;
    size_t size;
    tg_dtype dtype;
    bool is_float;
} st_dtype;

static const st_dtype st_dtypes[] = {
    {"F32", 4, TG_F32, true},
    {"F16", 2, TG_F16, true},
    {"BF16", 2, TG_BF16, true},
    {"I32", 4, TG_I32, false},
    {"I8", 1, TG_I8, false},
    {"U8", 1, TG_U8, false},
    /* converted when read: */
    {"F64", 8, TG_F32, true},
    {"I64", 8, TG_I32, false},
    {"BOOL", 1, TG_U8, false},
};
#define N_ST_DTYPES (sizeof st_dtypes / sizeof st_dtypes[0])
/* Dtypes the format defines that tg does not read, for a clearer message. */
static const char *const st_other_dtypes[] = {"F8_E5M2", "F8_E4M3", "I16", "U16", "U32", "U64"};

static bool needs_conversion(const st_dtype *dt) {
    return strcmp(dt->name, "F64") == 0 || strcmp(dt->name, "I64") == 0 ||
           strcmp(dt->name, "BOOL") == 0;
}

typedef struct st_tensor {
    char *name;
    const st_dtype *dt;
    int rank;
    int64_t shape[TG_MAX_RANK];
    uint64_t begin, end; /* within the data section of its file */
    int file;
} st_tensor;

typedef struct st_file {
    char *label; /* the path, or the label of a buffer */
    void *map;   /* what to munmap; NULL for memory buffers */
    size_t map_len;
    const unsigned char *data; /* the data section */
    uint64_t data_len;
} st_file;

struct tg_safetensors {
    st_file *files;
    int n_files;
    st_tensor *tensors; /* sorted by name once opened */
    int n, cap;
    char **meta; /* key, value, key, value, ... */
    int n_meta;
};

static char *dup_string(const char *s) {
    size_t n = strlen(s) + 1;
    char *c = malloc(n);
    if (c) memcpy(c, s, n);
    return c;
}

static bool host_is_little_endian(void) {
    const uint16_t one = 1;
    unsigned char first;
    memcpy(&first, &one, 1);
    return first == 1;
}

static uint64_t read_u64_le(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void format_shape(int rank, const int64_t *shape, char *buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < rank && used < n; i++)
        used +=
            (size_t)snprintf(buf + used, n - used, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

/* ---- the handle ---- */

void tg_safetensors_close(tg_safetensors *st) {
    if (!st) return;
    for (int i = 0; i < st->n_files; i++) {
        if (st->files[i].map) munmap(st->files[i].map, st->files[i].map_len);
        free(st->files[i].label);
    }
    for (int i = 0; i < st->n; i++) free(st->tensors[i].name);
    for (int i = 0; i < 2 * st->n_meta; i++) free(st->meta[i]);
    free(st->files);
    free(st->tensors);
    free(st->meta);
    free(st);
}

static tg_status add_file(tg_safetensors *st, const char *label, void *map, size_t map_len,
                          int *index) {
    st_file *grown = realloc(st->files, (size_t)(st->n_files + 1) * sizeof *grown);
    if (!grown) return tg_set_error_at(TG_ERR_NO_MEMORY, label, "out of memory");
    st->files = grown;
    st_file *f = &st->files[st->n_files];
    memset(f, 0, sizeof *f);
    f->label = dup_string(label);
    if (!f->label) return tg_set_error_at(TG_ERR_NO_MEMORY, label, "out of memory");
    f->map = map;
    f->map_len = map_len;
    *index = st->n_files++;
    return TG_OK;
}

static st_tensor *append_tensor(tg_safetensors *st) {
    if (st->n == st->cap) {
        int cap = st->cap ? 2 * st->cap : 64;
        if (cap > INT_MAX / 2) return NULL;
        st_tensor *grown = realloc(st->tensors, (size_t)cap * sizeof *grown);
        if (!grown) return NULL;
        st->tensors = grown;
        st->cap = cap;
    }
    st_tensor *t = &st->tensors[st->n++];
    memset(t, 0, sizeof *t);
    return t;
}

/* ---- header validation ---- */

/* A JSON number that is a non-negative integer no larger than 2^53 (beyond
 * that a double, which is what cJSON parses into, is no longer exact). */
static bool json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return false;
    double v = item->valuedouble;
    if (!isfinite(v) || v < 0 || v != floor(v) || v > 9007199254740992.0) return false;
    *out = (uint64_t)v;
    return true;
}

static const char *json_type_name(const cJSON *item) {
    if (cJSON_IsString(item)) return "a string";
    if (cJSON_IsNumber(item)) return "a number";
    if (cJSON_IsArray(item)) return "an array";
    if (cJSON_IsObject(item)) return "an object";
    if (cJSON_IsBool(item)) return "a boolean";
    if (cJSON_IsNull(item)) return "null";
    return "invalid";
}

static tg_status parse_metadata(tg_safetensors *st, const char *label, const cJSON *meta) {
    if (!cJSON_IsObject(meta))
        return tg_set_error_at(TG_ERR_PARSE, label, "__metadata__ is %s, not an object of strings",
                               json_type_name(meta));
    const cJSON *kv;
    cJSON_ArrayForEach(kv, meta) {
        if (!cJSON_IsString(kv))
            return tg_set_error_at(TG_ERR_PARSE, label,
                                   "__metadata__ value of '%s' is %s, not a string", kv->string,
                                   json_type_name(kv));
        bool seen = false; /* shards repeat keys such as "format": first wins */
        for (int i = 0; i < st->n_meta; i++)
            if (strcmp(st->meta[2 * i], kv->string) == 0) seen = true;
        if (seen) continue;
        char **grown = realloc(st->meta, (size_t)(st->n_meta + 1) * 2 * sizeof *grown);
        if (!grown) return tg_set_error_at(TG_ERR_NO_MEMORY, label, "out of memory");
        st->meta = grown;
        char *k = dup_string(kv->string), *v = dup_string(kv->valuestring);
        if (!k || !v) {
            free(k);
            free(v);
            return tg_set_error_at(TG_ERR_NO_MEMORY, label, "out of memory");
        }
        st->meta[2 * st->n_meta] = k;
        st->meta[2 * st->n_meta + 1] = v;
        st->n_meta++;
    }
    return TG_OK;
}

/* Validates one tensor entry and appends it. */
static tg_status parse_tensor(tg_safetensors *st, int file, const cJSON *entry, uint64_t data_len) {
    const char *label = st->files[file].label;
    const char *name = entry->string;
    if (!cJSON_IsObject(entry))
        return tg_set_error_at(TG_ERR_PARSE, label, "tensor '%s': entry is %s, not an object", name,
                               json_type_name(entry));
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(entry, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(entry, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(entry, "data_offsets");
    if (!dtype || !shape || !offsets)
        return tg_set_error_at(TG_ERR_PARSE, label, "tensor '%s': missing \"%s\"", name,
                               !dtype   ? "dtype"
                               : !shape ? "shape"
                                        : "data_offsets");
    if (!cJSON_IsString(dtype))
        return tg_set_error_at(TG_ERR_PARSE, label, "tensor '%s': dtype is %s, not a string", name,
                               json_type_name(dtype));
    const st_dtype *dt = NULL;
    for (size_t i = 0; i < N_ST_DTYPES; i++)
        if (strcmp(st_dtypes[i].name, dtype->valuestring) == 0) dt = &st_dtypes[i];
    if (!dt) {
        for (size_t i = 0; i < sizeof st_other_dtypes / sizeof *st_other_dtypes; i++)
            if (strcmp(st_other_dtypes[i], dtype->valuestring) == 0)
                return tg_set_error_at(
                    TG_ERR_UNSUPPORTED, label,
                    "tensor '%s': dtype %s is not supported (tg reads F32 F16 BF16 "
                    "I32 I8 U8, and F64 I64 BOOL converted)",
                    name, dtype->valuestring);
        return tg_set_error_at(TG_ERR_PARSE, label, "tensor '%s': unknown dtype \"%.40s\"", name,
                               dtype->valuestring);
    }

    if (!cJSON_IsArray(shape))
        return tg_set_error_at(TG_ERR_PARSE, label, "tensor '%s': shape is %s, not an array", name,
                               json_type_name(shape));
    int rank = cJSON_GetArraySize(shape);
    if (rank > TG_MAX_RANK)
        return tg_set_error_at(TG_ERR_UNSUPPORTED, label,
                               "tensor '%s': rank %d is more than %d (the most tg supports)", name,
                               rank, TG_MAX_RANK);
    int64_t dims[TG_MAX_RANK];
    uint64_t count = 1;
    bool overflow = false;
    int r = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape) {
        uint64_t v;
        if (!json_uint(d, &v))
            return tg_set_error_at(TG_ERR_PARSE, label,
                                   "tensor '%s': shape[%d] is not a non-negative integer", name, r);
        dims[r++] = (int64_t)v;
        if (v != 0 && count > UINT64_MAX / v) overflow = true;
        if (!overflow) count *= v;
    }
    char shape_str[160];
    format_shape(rank, dims, shape_str, sizeof shape_str);
    /* A zero dimension makes the count 0 whatever overflowed before it. */
    for (int i = 0; i < rank; i++)
        if (dims[i] == 0) overflow = false, count = 0;
    if (overflow || count > (uint64_t)INT64_MAX || count > UINT64_MAX / dt->size)
        return tg_set_error_at(TG_ERR_PARSE, label,
                               "tensor '%s': shape %s is too large (size overflows)", name,
                               shape_str);
    uint64_t bytes = count * dt->size;

    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
        return tg_set_error_at(TG_ERR_PARSE, label,
                               "tensor '%s': data_offsets is not an array of two", name);
    uint64_t begin, end;
    if (!json_uint(cJSON_GetArrayItem(offsets, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(offsets, 1), &end))
        return tg_set_error_at(TG_ERR_PARSE, label,
                               "tensor '%s': data_offsets are not non-negative integers", name);
    if (begin > end)
        return tg_set_error_at(TG_ERR_PARSE, label,
                               "tensor '%s': data_offsets [%llu, %llu] are reversed (begin > end)",
                               name, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_len)
        return tg_set_error_at(
            TG_ERR_PARSE, label,
            "tensor '%s': data_offsets [%llu, %llu] reach past the end of the data "
            "section (%llu bytes)",
            name, (unsigned long long)begin, (unsigned long long)end, (unsigned long long)data_len);
    if (end - begin != bytes)
        return tg_set_error_at(
            TG_ERR_PARSE, label,
            "tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but %s %s needs "
            "%llu",
            name, (unsigned long long)begin, (unsigned long long)end,
            (unsigned long long)(end - begin), dt->name, shape_str, (unsigned long long)bytes);

    st_tensor *t = append_tensor(st);
    if (!t) return tg_set_error_at(TG_ERR_NO_MEMORY, label, "out of memory");
    t->name = dup_string(name);
    if (!t->name) {
        st->n--;
        return tg_set_error_at(TG_ERR_NO_MEMORY, label, "out of memory");
    }
    t->dt = dt;
    t->rank = rank;
    memcpy(t->shape, dims, (size_t)rank * sizeof dims[0]);
    t->begin = begin;
    t->end = end;
    t->file = file;
    return TG_OK;
}

static int by_offset(const void *a, const void *b) {
    const st_tensor *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

/* The tensors [first, st->n) of one file must tile its data section. */
static tg_status check_layout(tg_safetensors *st, int first, int file) {
    const char *label = st->files[file].label;
    int n = st->n - first;
    if (n == 0) {
        if (st->files[file].data_len != 0)
            return tg_set_error_at(TG_ERR_PARSE, label,
                                   "the header lists no tensors but %llu data bytes follow it",
                                   (unsigned long long)st->files[file].data_len);
        return TG_OK;
    }
    /* Sort shallow copies by offset; the handle's order is by name later. */
    st_tensor *copy = malloc((size_t)n * sizeof *copy);
    if (!copy) return tg_set_error_at(TG_ERR_NO_MEMORY, label, "out of memory");
    memcpy(copy, st->tensors + first, (size_t)n * sizeof *copy);
    qsort(copy, (size_t)n, sizeof *copy, by_offset);
    tg_status status = TG_OK;
    uint64_t at = 0;
    for (int i = 0; i < n && status == TG_OK; i++) {
        if (copy[i].begin < at)
            status = tg_set_error_at(
                TG_ERR_PARSE, label, "tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap",
                copy[i - 1].name, (unsigned long long)copy[i - 1].begin,
                (unsigned long long)copy[i - 1].end, copy[i].name,
                (unsigned long long)copy[i].begin, (unsigned long long)copy[i].end);
        else if (copy[i].begin > at)
            status = tg_set_error_at(
                TG_ERR_PARSE, label,
                "gap in the data section: bytes [%llu, %llu) before tensor '%s' "
                "belong to no tensor",
                (unsigned long long)at, (unsigned long long)copy[i].begin, copy[i].name);
        at = copy[i].end;
    }
    if (status == TG_OK && at != st->files[file].data_len)
        status = tg_set_error_at(
            TG_ERR_PARSE, label, "the data section has %llu bytes but the tensors cover only %llu",
            (unsigned long long)st->files[file].data_len, (unsigned long long)at);
    free(copy);
    return status;
}

/* Parses and validates the header of file `file` whose whole contents are
 * `buf`/`len`, appending its tensors and metadata to the handle. */
static tg_status parse_header(tg_safetensors *st, int file, const unsigned char *buf, size_t len) {
    const char *label = st->files[file].label;
    if (len < 8)
        return tg_set_error_at(TG_ERR_PARSE, label,
                               "file is %zu bytes, too short for the 8-byte header length", len);
    uint64_t header_len = read_u64_le(buf);
    if (header_len > len - 8)
        return tg_set_error_at(
            TG_ERR_PARSE, label,
            "header length %llu is more than the %zu bytes that follow it (truncated "
            "or not a safetensors file)",
            (unsigned long long)header_len, len - 8);
    if (header_len > TG_SAFETENSORS_MAX_HEADER)
        return tg_set_error_at(TG_ERR_PARSE, label,
                               "header length %llu exceeds the limit of %u bytes",
                               (unsigned long long)header_len, TG_SAFETENSORS_MAX_HEADER);
    const char *text = (const char *)buf + 8;
    if (header_len == 0 || text[0] != '{')
        return tg_set_error_at(TG_ERR_PARSE, label, "header does not start with '{'");
    st->files[file].data = buf + 8 + header_len;
    st->files[file].data_len = len - 8 - header_len;

    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)header_len, &parse_end, false);
    if (!root) {
        /* cJSON reports where it stopped through a global pointer; use it
         * only if it points into this header. */
        const char *at = cJSON_GetErrorPtr();
        if (at >= text && at <= text + header_len)
            return tg_set_error_at(TG_ERR_PARSE, label,
                                   "header is not valid JSON (at byte %ld of %llu)",
                                   (long)(at - text), (unsigned long long)header_len);
        return tg_set_error_at(TG_ERR_PARSE, label, "header is not valid JSON");
    }
    tg_status status = TG_OK;
    /* The reference writer pads the header with spaces. */
    for (const char *p = parse_end; p && p < text + header_len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            status = tg_set_error_at(TG_ERR_PARSE, label,
                                     "unexpected bytes after the JSON header (at byte %ld of %llu)",
                                     (long)(p - text), (unsigned long long)header_len);
            break;
        }
    if (status == TG_OK && !cJSON_IsObject(root))
        status = tg_set_error_at(TG_ERR_PARSE, label, "header is %s, not a JSON object",
                                 json_type_name(root));
    int first = st->n;
    bool had_meta = false;
    const cJSON *item;
    if (status == TG_OK) cJSON_ArrayForEach(item, root) {
            if (strcmp(item->string, "__metadata__") == 0) {
                if (had_meta)
                    status = tg_set_error_at(TG_ERR_PARSE, label, "__metadata__ appears twice");
                else
                    status = parse_metadata(st, label, item);
                had_meta = true;
            } else {
                status = parse_tensor(st, file, item, st->files[file].data_len);
            }
            if (status != TG_OK) break;
        }
    cJSON_Delete(root);
    if (status == TG_OK) status = check_layout(st, first, file);
    return status;
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

/* Sorts by name and refuses duplicates (JSON objects may repeat keys, and
 * shards must not share tensors). */
static tg_status finish(tg_safetensors *st) {
    if (st->n > 1) qsort(st->tensors, (size_t)st->n, sizeof *st->tensors, by_name);
    for (int i = 1; i < st->n; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0) {
            const st_tensor *a = &st->tensors[i - 1], *b = &st->tensors[i];
            if (a->file == b->file)
                return tg_set_error_at(TG_ERR_PARSE, st->files[a->file].label,
                                       "tensor '%s' appears twice in the header", a->name);
            return tg_set_error(TG_ERR_PARSE, "%s and %s: both hold tensor '%s'",
                                st->files[a->file].label, st->files[b->file].label, a->name);
        }
    return TG_OK;
}

static tg_safetensors *new_handle(void) {
    tg_safetensors *st = calloc(1, sizeof *st);
    if (!st) tg_set_error(TG_ERR_NO_MEMORY, "safetensors: out of memory");
    return st;
}

static tg_status check_host(const char *label) {
    if (!host_is_little_endian())
        return tg_set_error_at(TG_ERR_UNSUPPORTED, label,
                               "safetensors is little-endian and this host is not");
    return TG_OK;
}

tg_status tg_safetensors_open_mem(const void *buf, size_t len, const char *label,
                                  tg_safetensors **out) {
    if (!label) label = "<memory>";
    if (!out) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_safetensors_open_mem: out is NULL");
    *out = NULL;
    if (!buf && len > 0)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_safetensors_open_mem: buf is NULL");
    tg_status status = check_host(label);
    if (status != TG_OK) return status;
    tg_safetensors *st = new_handle();
    if (!st) return TG_ERR_NO_MEMORY;
    int file;
    status = add_file(st, label, NULL, 0, &file);
    if (status == TG_OK) status = parse_header(st, file, buf, len);
    if (status == TG_OK) status = finish(st);
    if (status != TG_OK) {
        tg_safetensors_close(st);
        return status;
    }
    *out = st;
    return TG_OK;
}

/* Maps `path` read-only and parses it into the handle. */
static tg_status map_and_parse(tg_safetensors *st, const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return tg_set_error_at(TG_ERR_IO, path, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int err = errno;
        close(fd);
        return tg_set_error_at(TG_ERR_IO, path, "cannot stat: %s", strerror(err));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return tg_set_error_at(TG_ERR_IO, path, "not a regular file");
    }
    if (sb.st_size < 8) {
        close(fd);
        return tg_set_error_at(TG_ERR_PARSE, path,
                               "file is %lld bytes, too short for the 8-byte header length",
                               (long long)sb.st_size);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return tg_set_error_at(TG_ERR_UNSUPPORTED, path, "file is too large to map");
    }
    size_t len = (size_t)sb.st_size;
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd); /* the mapping keeps the file */
    if (map == MAP_FAILED)
        return tg_set_error_at(TG_ERR_IO, path, "cannot mmap: %s", strerror(err));
    int file;
    tg_status status = add_file(st, path, map, len, &file);
    if (status != TG_OK) {
        munmap(map, len);
        return status;
    }
    return parse_header(st, file, map, len);
}

tg_status tg_safetensors_open(const char *path, tg_safetensors **out) {
    if (out) *out = NULL;
    if (!path || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_safetensors_open: path or out is NULL");
    tg_status status = check_host(path);
    if (status != TG_OK) return status;
    tg_safetensors *st = new_handle();
    if (!st) return TG_ERR_NO_MEMORY;
    status = map_and_parse(st, path);
    if (status == TG_OK) status = finish(st);
    if (status != TG_OK) {
        tg_safetensors_close(st);
        return status;
    }
    *out = st;
    return TG_OK;
}

static char *join_path(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    size_t at = a;
    if (a > 0 && dir[a - 1] != '/') p[at++] = '/';
    memcpy(p + at, name, b + 1);
    return p;
}

/* A shard name from an index must be a plain file name in the same
 * directory: the index is untrusted and must not reach other files. */
static bool plain_file_name(const char *s) {
    if (!s[0] || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return false;
    return strchr(s, '/') == NULL && strchr(s, '\\') == NULL;
}

static tg_status open_index(const char *dir, const char *index_path, tg_safetensors **out) {
    char *text;
    size_t len;
    tg_status status = tg_read_whole_file(index_path, TG_SAFETENSORS_MAX_HEADER, &text, &len);
    if (status != TG_OK) return status;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return tg_set_error_at(TG_ERR_PARSE, index_path, "not valid JSON");
    tg_safetensors *st = NULL;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    const cJSON *item;
    if (!cJSON_IsObject(root))
        status = tg_set_error_at(TG_ERR_PARSE, index_path, "not a JSON object");
    else if (!cJSON_IsObject(map))
        status = tg_set_error_at(TG_ERR_PARSE, index_path, "\"weight_map\" is %s, not an object",
                                 map ? json_type_name(map) : "missing");
    else
        cJSON_ArrayForEach(item, map) {
            if (!cJSON_IsString(item) || !plain_file_name(item->valuestring)) {
                status = tg_set_error_at(
                    TG_ERR_PARSE, index_path,
                    "weight_map['%s'] is not a file name in the same directory", item->string);
                break;
            }
        }
    if (status == TG_OK) {
        st = new_handle();
        if (!st) status = TG_ERR_NO_MEMORY;
    }
    /* Open each shard once, in order of first mention. */
    int n_listed = 0;
    if (status == TG_OK) cJSON_ArrayForEach(item, map) {
            n_listed++;
            bool opened = false;
            for (const cJSON *prev = map->child; prev != item; prev = prev->next)
                if (strcmp(prev->valuestring, item->valuestring) == 0) opened = true;
            if (opened) continue;
            char *path = join_path(dir, item->valuestring);
            if (!path) {
                status = tg_set_error_at(TG_ERR_NO_MEMORY, index_path, "out of memory");
                break;
            }
            status = map_and_parse(st, path);
            free(path);
            if (status != TG_OK) break;
        }
    if (status == TG_OK) status = finish(st);
    /* Every listed tensor is in the shard the index names, and nothing else
     * is in the shards. */
    if (status == TG_OK) cJSON_ArrayForEach(item, map) {
            int i = tg_safetensors_find(st, item->string);
            const char *want = item->valuestring;
            if (i < 0) {
                status = tg_set_error_at(TG_ERR_PARSE, index_path,
                                         "lists tensor '%s' in %s, which has no such tensor",
                                         item->string, want);
                break;
            }
            const char *got = st->files[st->tensors[i].file].label;
            size_t gl = strlen(got), wl = strlen(want);
            if (gl < wl || strcmp(got + gl - wl, want) != 0 ||
                (gl > wl && got[gl - wl - 1] != '/')) {
                status = tg_set_error_at(TG_ERR_PARSE, index_path,
                                         "lists tensor '%s' in %s but it is in %s", item->string,
                                         want, got);
                break;
            }
        }
    if (status == TG_OK && n_listed != st->n) {
        /* Some shard holds a tensor the index does not list (duplicate
         * keys in weight_map would also land here). */
        for (int i = 0; i < st->n; i++)
            if (!cJSON_GetObjectItemCaseSensitive(map, st->tensors[i].name)) {
                status =
                    tg_set_error_at(TG_ERR_PARSE, index_path,
                                    "shard %s holds tensor '%s', which the index does not list",
                                    st->files[st->tensors[i].file].label, st->tensors[i].name);
                break;
            }
        if (status == TG_OK)
            status = tg_set_error_at(TG_ERR_PARSE, index_path,
                                     "weight_map has %d entries but the shards hold %d tensors "
                                     "(repeated names?)",
                                     n_listed, st->n);
    }
    cJSON_Delete(root);
    if (status != TG_OK) {
        tg_safetensors_close(st);
        return status;
    }
    *out = st;
    return TG_OK;
}

tg_status tg_safetensors_open_dir(const char *dir, tg_safetensors **out) {
    if (out) *out = NULL;
    if (!dir || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_safetensors_open_dir: dir or out is NULL");
    char *single = join_path(dir, "model.safetensors");
    char *index = join_path(dir, "model.safetensors.index.json");
    tg_status status;
    struct stat sb;
    if (!single || !index)
        status = tg_set_error(TG_ERR_NO_MEMORY, "%s: out of memory", dir);
    else if (stat(single, &sb) == 0)
        status = tg_safetensors_open(single, out);
    else if (stat(index, &sb) == 0)
        status = open_index(dir, index, out);
    else
        status = tg_set_error_at(TG_ERR_NOT_FOUND, dir,
                                 "has neither model.safetensors nor model.safetensors.index.json");
    free(single);
    free(index);
    return status;
}

/* ---- lookups ---- */

int tg_safetensors_count(const tg_safetensors *st) {
    return st ? st->n : 0;
}

static const st_tensor *tensor_at(const tg_safetensors *st, int i) {
    return st && i >= 0 && i < st->n ? &st->tensors[i] : NULL;
}

const char *tg_safetensors_name(const tg_safetensors *st, int i) {
    const st_tensor *t = tensor_at(st, i);
    return t ? t->name : NULL;
}

int tg_safetensors_find(const tg_safetensors *st, const char *name) {
    if (!st || !name) return -1;
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(st->tensors[mid].name, name);
        if (c == 0) return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

tg_status tg_safetensors_info(const tg_safetensors *st, int i, tg_dtype *dtype, int *rank,
                              int64_t *shape) {
    const st_tensor *t = tensor_at(st, i);
    if (!t)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_safetensors_info: index %d out of range",
                            i);
    if (dtype) *dtype = t->dt->dtype;
    if (rank) *rank = t->rank;
    if (shape) {
        for (int d = 0; d < TG_MAX_RANK; d++) shape[d] = d < t->rank ? t->shape[d] : 0;
    }
    return TG_OK;
}

const char *tg_safetensors_file_dtype(const tg_safetensors *st, int i) {
    const st_tensor *t = tensor_at(st, i);
    return t ? t->dt->name : NULL;
}

int tg_safetensors_metadata_count(const tg_safetensors *st) {
    return st ? st->n_meta : 0;
}

const char *tg_safetensors_metadata_key(const tg_safetensors *st, int i) {
    return st && i >= 0 && i < st->n_meta ? st->meta[2 * i] : NULL;
}

const char *tg_safetensors_metadata_value(const tg_safetensors *st, int i) {
    return st && i >= 0 && i < st->n_meta ? st->meta[2 * i + 1] : NULL;
}

const char *tg_safetensors_metadata_get(const tg_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta[2 * i], key) == 0) return st->meta[2 * i + 1];
    return NULL;
}

static tg_status lookup(const tg_safetensors *st, const char *name, const char *fn,
                        const st_tensor **out) {
    if (!st || !name) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "%s: NULL argument", fn);
    int i = tg_safetensors_find(st, name);
    if (i < 0) {
        const char *where = st->n_files == 1 ? st->files[0].label : "the checkpoint";
        return tg_set_error(TG_ERR_NOT_FOUND, "%s: no tensor '%s' (it has %d tensors)", where, name,
                            st->n);
    }
    *out = &st->tensors[i];
    return TG_OK;
}

tg_status tg_safetensors_data(const tg_safetensors *st, const char *name, const void **ptr,
                              size_t *bytes) {
    const st_tensor *t = NULL;
    tg_status status = lookup(st, name, "tg_safetensors_data", &t);
    if (status != TG_OK) return status;
    if (needs_conversion(t->dt))
        return tg_set_error_at(TG_ERR_UNSUPPORTED, st->files[t->file].label,
                               "tensor '%s' is stored as %s, which has no tg dtype; use "
                               "tg_safetensors_read to convert it",
                               name, t->dt->name);
    if (ptr) *ptr = st->files[t->file].data + t->begin;
    if (bytes) *bytes = (size_t)(t->end - t->begin);
    return TG_OK;
}

/* Element i of a float tensor as a float. */
static float float_at(const st_dtype *dt, const unsigned char *p, int64_t i) {
    if (dt->size == 8) {
        double d;
        memcpy(&d, p + (size_t)i * 8, 8);
        return (float)d;
    }
    if (dt->size == 4) {
        float f;
        memcpy(&f, p + (size_t)i * 4, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + (size_t)i * 2, 2);
    return dt->dtype == TG_F16 ? tg_f16_to_f32(h) : tg_bf16_to_f32(h);
}

tg_status tg_safetensors_read(const tg_safetensors *st, const char *name, tg_dtype want,
                              tg_array *out) {
    if (out) memset(out, 0, sizeof *out);
    const st_tensor *t = NULL;
    tg_status status = lookup(st, name, "tg_safetensors_read", &t);
    if (status != TG_OK) return status;
    if (!out) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_safetensors_read: out is NULL");
    const char *label = st->files[t->file].label;
    if ((int)want < 0 || want >= TG_DTYPE_COUNT)
        return tg_set_error_at(TG_ERR_INVALID_ARGUMENT, label,
                               "tensor '%s': bad dtype %d requested", name, (int)want);
    bool want_float = tg_dtype_is_float(want);
    if (t->dt->is_float != want_float || (!want_float && want != t->dt->dtype))
        return tg_set_error_at(TG_ERR_SHAPE, label, "tensor '%s' is %s and cannot be read as %s",
                               name, t->dt->name, tg_dtype_name(want));
    tg_array a;
    status = tg_array_alloc(&a, want, t->rank, t->shape);
    if (status != TG_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", tg_last_error());
        return tg_set_error_at(status, label, "tensor '%s': %s", name, msg);
    }
    const unsigned char *src = st->files[t->file].data + t->begin;
    int64_t count = tg_array_count(&a);
    if (want == t->dt->dtype && !needs_conversion(t->dt)) {
        if (count > 0) memcpy(a.data, src, (size_t)(t->end - t->begin));
    } else if (strcmp(t->dt->name, "I64") == 0) {
        int32_t *dst = a.data;
        for (int64_t i = 0; i < count; i++) {
            int64_t v = (int64_t)read_u64_le(src + (size_t)i * 8);
            if (v < INT32_MIN || v > INT32_MAX) {
                tg_array_free(&a);
                return tg_set_error_at(
                    TG_ERR_RUNTIME, label,
                    "tensor '%s': element %lld is %lld, outside the i32 range (I64 "
                    "tensors are read as i32)",
                    name, (long long)i, (long long)v);
            }
            dst[i] = (int32_t)v;
        }
    } else if (strcmp(t->dt->name, "BOOL") == 0) {
        unsigned char *dst = a.data;
        for (int64_t i = 0; i < count; i++) dst[i] = src[i] != 0;
    } else {
        for (int64_t i = 0; i < count; i++) {
            float f = float_at(t->dt, src, i);
            switch (want) {
            case TG_F32: ((float *)a.data)[i] = f; break;
            case TG_F16: ((uint16_t *)a.data)[i] = tg_f32_to_f16(f); break;
            default: ((uint16_t *)a.data)[i] = tg_f32_to_bf16(f); break;
            }
        }
    }
    *out = a;
    return TG_OK;
}

/* ---- writing ---- */

/* A growing text buffer for the header. */
typedef struct strbuf {
    char *p;
    size_t len, cap;
    bool failed;
} strbuf;

static void sb_add(strbuf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *grown = realloc(b->p, cap);
        if (!grown) {
            b->failed = true;
            return;
        }
        b->p = grown;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(strbuf *b, const char *s) {
    sb_add(b, s, strlen(s));
}

/* A JSON string literal: quotes, backslashes and control bytes escaped. */
static void sb_json_string(strbuf *b, const char *s) {
    sb_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            sb_add(b, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *p);
            sb_add(b, esc, 6);
        } else {
            sb_add(b, (const char *)p, 1);
        }
    }
    sb_add(b, "\"", 1);
}

static void sb_u64(strbuf *b, uint64_t v) {
    char num[24];
    snprintf(num, sizeof num, "%llu", (unsigned long long)v);
    sb_str(b, num);
}

/* The reference implementation parses the header as UTF-8 text. */
static bool valid_utf8(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int n = *p < 0x80             ? 0
                : (*p & 0xe0) == 0xc0 ? 1
                : (*p & 0xf0) == 0xe0 ? 2
                : (*p & 0xf8) == 0xf0 ? 3
                                      : -1;
        if (n < 0 || (n == 1 && *p < 0xc2) || (n == 3 && *p > 0xf4)) return false;
        uint32_t cp = *p & (0x3f >> n);
        for (int i = 1; i <= n; i++) {
            if ((p[i] & 0xc0) != 0x80) return false;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        p += n + 1;
    }
    return true;
}

static const char *st_name_for(tg_dtype t) {
    for (size_t i = 0; i < N_ST_DTYPES; i++)
        if (st_dtypes[i].dtype == t) return st_dtypes[i].name; /* the first is the native one */
    return NULL;
}

/* Sort helpers for the writer: indices into names[]. */
typedef struct named_index {
    const char *name;
    int index;
} named_index;

static int by_named_index(const void *a, const void *b) {
    return strcmp(((const named_index *)a)->name, ((const named_index *)b)->name);
}

/* Test hook: TG_TEST_FAIL_SAVE_AT=write|fsync|rename makes that step of a
 * save fail, to check that a failed save leaves the old file intact. */
static bool fail_at(const char *step) {
    const char *env = getenv("TG_TEST_FAIL_SAVE_AT");
    return env && strcmp(env, step) == 0;
}

static tg_status write_all(FILE *f, const void *p, size_t n, const char *path) {
    if (n == 0) return TG_OK;
    if (fail_at("write"))
        return tg_set_error_at(TG_ERR_IO, path, "cannot write: %s (TG_TEST_FAIL_SAVE_AT)",
                               strerror(EIO));
    if (fwrite(p, 1, n, f) != n)
        return tg_set_error_at(TG_ERR_IO, path, "cannot write: %s", strerror(errno ? errno : EIO));
    return TG_OK;
}

/* Writes header + tensor data to a temporary file next to `path`, then
 * renames it over `path`. */
static tg_status write_atomically(const char *path, const strbuf *header, int n,
                                  const named_index *order, const tg_array *arrays) {
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    char *dir = malloc(plen + 2);
    if (!tmp || !dir) {
        free(tmp);
        free(dir);
        return tg_set_error_at(TG_ERR_NO_MEMORY, path, "out of memory");
    }
    snprintf(tmp, plen + 16, "%s.tmp-XXXXXX", path);
    const char *slash = strrchr(path, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == path)
        strcpy(dir, "/");
    else {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }

    tg_status status = TG_OK;
    int fd = mkstemp(tmp);
    if (fd < 0) {
        status = tg_set_error_at(TG_ERR_IO, path, "cannot create a temporary file in %s: %s", dir,
                                 strerror(errno));
        free(tmp);
        free(dir);
        return status;
    }
    fchmod(fd, 0644); /* mkstemp makes 0600; checkpoints are ordinary files */
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        status = tg_set_error_at(TG_ERR_IO, path, "cannot write: %s", strerror(errno));
        close(fd);
    } else {
        unsigned char len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (unsigned char)((uint64_t)header->len >> (8 * i));
        status = write_all(f, len8, 8, path);
        if (status == TG_OK) status = write_all(f, header->p, header->len, path);
        for (int i = 0; i < n && status == TG_OK; i++) {
            const tg_array *a = &arrays[order[i].index];
            status =
                write_all(f, a->data, (size_t)tg_array_count(a) * tg_dtype_size(a->dtype), path);
        }
        if (status == TG_OK && fflush(f) != 0)
            status = tg_set_error_at(TG_ERR_IO, path, "cannot write: %s", strerror(errno));
        if (status == TG_OK && (fail_at("fsync") || fsync(fileno(f)) != 0))
            status = tg_set_error_at(TG_ERR_IO, path, "cannot fsync %s: %s", tmp,
                                     fail_at("fsync") ? "TG_TEST_FAIL_SAVE_AT" : strerror(errno));
        if (fclose(f) != 0 && status == TG_OK)
            status = tg_set_error_at(TG_ERR_IO, path, "cannot close %s: %s", tmp, strerror(errno));
    }
    if (status == TG_OK && (fail_at("rename") || rename(tmp, path) != 0))
        status = tg_set_error_at(TG_ERR_IO, path, "cannot rename %s over it: %s", tmp,
                                 fail_at("rename") ? "TG_TEST_FAIL_SAVE_AT" : strerror(errno));
    if (status != TG_OK) {
        unlink(tmp);
    } else {
        /* Make the rename itself durable. Some file systems cannot fsync a
         * directory (EINVAL); the data is then as safe as they allow. */
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
            if (fsync(dfd) != 0 && errno != EINVAL && errno != EROFS)
                status =
                    tg_set_error_at(TG_ERR_IO, path, "saved, but cannot fsync directory %s: %s",
                                    dir, strerror(errno));
            close(dfd);
        }
    }
    free(tmp);
    free(dir);
    return status;
}

tg_status tg_safetensors_save(const char *path, int n, const char *const *names,
                              const tg_array *arrays, const char *const *metadata) {
    if (!path || n < 0 || (n > 0 && (!names || !arrays)))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_safetensors_save: bad arguments");
    named_index *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!order) return tg_set_error_at(TG_ERR_NO_MEMORY, path, "out of memory");
    tg_status status = TG_OK;
    for (int i = 0; i < n && status == TG_OK; i++) {
        const tg_array *a = &arrays[i];
        if (!names[i] || !valid_utf8(names[i]) || strcmp(names[i], "__metadata__") == 0)
            status = tg_set_error_at(TG_ERR_INVALID_ARGUMENT, path,
                                     "tensor %d: name is NULL, not UTF-8 or reserved", i);
        else if ((int)a->dtype < 0 || a->dtype >= TG_DTYPE_COUNT || a->rank < 0 ||
                 a->rank > TG_MAX_RANK)
            status = tg_set_error_at(TG_ERR_INVALID_ARGUMENT, path,
                                     "tensor '%s': bad dtype or rank", names[i]);
        for (int d = 0; status == TG_OK && d < a->rank; d++)
            if (a->shape[d] < 0)
                status = tg_set_error_at(TG_ERR_INVALID_ARGUMENT, path,
                                         "tensor '%s': dimension %d is %lld", names[i], d,
                                         (long long)a->shape[d]);
        if (status == TG_OK && tg_array_count(a) > 0 && !a->data)
            status = tg_set_error_at(TG_ERR_INVALID_ARGUMENT, path, "tensor '%s': data is NULL",
                                     names[i]);
        order[i].name = names[i];
        order[i].index = i;
    }
    if (status == TG_OK && n > 1) {
        qsort(order, (size_t)n, sizeof *order, by_named_index);
        for (int i = 1; i < n && status == TG_OK; i++)
            if (strcmp(order[i - 1].name, order[i].name) == 0)
                status = tg_set_error_at(TG_ERR_INVALID_ARGUMENT, path,
                                         "tensor name '%s' is repeated", order[i].name);
    }
    for (int i = 0; status == TG_OK && metadata && metadata[i]; i += 2)
        if (!metadata[i + 1] || !valid_utf8(metadata[i]) || !valid_utf8(metadata[i + 1]))
            status = tg_set_error_at(TG_ERR_INVALID_ARGUMENT, path,
                                     "metadata key '%s' has no value or is not UTF-8", metadata[i]);
    if (status != TG_OK) {
        free(order);
        return status;
    }

    /* The header, as the reference writes it: metadata first, then the
     * tensors in data order; offsets relative to the data section. */
    strbuf b = {0};
    sb_str(&b, "{");
    bool first = true;
    if (metadata && metadata[0]) {
        sb_str(&b, "\"__metadata__\":{");
        for (int i = 0; metadata[i]; i += 2) {
            if (i) sb_str(&b, ",");
            sb_json_string(&b, metadata[i]);
            sb_str(&b, ":");
            sb_json_string(&b, metadata[i + 1]);
        }
        sb_str(&b, "}");
        first = false;
    }
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const tg_array *a = &arrays[order[i].index];
        uint64_t bytes = (uint64_t)tg_array_count(a) * tg_dtype_size(a->dtype);
        if (!first) sb_str(&b, ",");
        first = false;
        sb_json_string(&b, order[i].name);
        sb_str(&b, ":{\"dtype\":\"");
        sb_str(&b, st_name_for(a->dtype));
        sb_str(&b, "\",\"shape\":[");
        for (int d = 0; d < a->rank; d++) {
            if (d) sb_str(&b, ",");
            sb_u64(&b, (uint64_t)a->shape[d]);
        }
        sb_str(&b, "],\"data_offsets\":[");
        sb_u64(&b, offset);
        sb_str(&b, ",");
        sb_u64(&b, offset + bytes);
        sb_str(&b, "]}");
        offset += bytes;
    }
    sb_str(&b, "}");
    while (!b.failed && b.len % 8 != 0) sb_str(&b, " "); /* data starts 8-aligned */
    if (b.failed)
        status = tg_set_error_at(TG_ERR_NO_MEMORY, path, "out of memory");
    else
        status = write_atomically(path, &b, n, order, arrays);
    free(b.p);
    free(order);
    return status;
}

/* ---- stores ---- */

tg_status tg_store_save_safetensors(tg_store *s, const char *path, int n,
                                    const char *const *names) {
    if (!s || !path || (names && n < 0))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_store_save_safetensors: bad arguments");
    if (!names) n = tg_store_count(s);
    tg_array *arrays = calloc((size_t)(n ? n : 1), sizeof *arrays);
    const char **all = calloc((size_t)(n ? n : 1), sizeof *all);
    tg_status status =
        arrays && all ? TG_OK : tg_set_error_at(TG_ERR_NO_MEMORY, path, "out of memory");
    for (int i = 0; i < n && status == TG_OK; i++) {
        all[i] = names ? names[i] : tg_store_name(s, i);
        status = tg_store_get(s, all[i], &arrays[i]);
        if (status != TG_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", tg_last_error());
            status = tg_set_error_at(status, path, "cannot save: %s", msg);
        }
    }
    if (status == TG_OK) status = tg_safetensors_save(path, n, all, arrays, NULL);
    for (int i = 0; arrays && i < n; i++) tg_array_free(&arrays[i]);
    free(arrays);
    free(all);
    return status;
}

tg_status tg_store_load_safetensors(tg_store *s, const char *path, int n,
                                    const char *const *names) {
    if (!s || !path || (names && n < 0))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_store_load_safetensors: bad arguments");
    tg_safetensors *st;
    tg_status status = tg_safetensors_open(path, &st);
    if (status != TG_OK) return status;
    if (!names) n = st->n;
    tg_array *arrays = calloc((size_t)(n ? n : 1), sizeof *arrays);
    if (!arrays) status = tg_set_error_at(TG_ERR_NO_MEMORY, path, "out of memory");
    /* Read everything first, so a bad tensor leaves the store unchanged. */
    for (int i = 0; i < n && status == TG_OK; i++) {
        const char *name = names ? names[i] : st->tensors[i].name;
        int k = tg_safetensors_find(st, name);
        if (k < 0) {
            status = tg_set_error_at(TG_ERR_NOT_FOUND, path, "no tensor '%s' (it has %d tensors)",
                                     name ? name : "(null)", st->n);
            break;
        }
        const st_tensor *t = &st->tensors[k];
        tg_dtype want = t->dt->dtype;
        const tg_store_entry *e = tg_store_find(s, name);
        if (e) {
            char have[160], got[160];
            tg_shape_str(e->value.dtype, e->value.rank, e->value.shape, have, sizeof have);
            tg_shape_str(t->dt->dtype, t->rank, t->shape, got, sizeof got);
            bool same = e->value.rank == t->rank &&
                        memcmp(e->value.shape, t->shape, (size_t)t->rank * sizeof t->shape[0]) == 0;
            if (!same || (e->value.dtype != want &&
                          !(tg_dtype_is_float(e->value.dtype) && t->dt->is_float))) {
                status =
                    tg_set_error_at(TG_ERR_SHAPE, path, "tensor '%s' is %s but the store holds %s",
                                    name, got, have);
                break;
            }
            want = e->value.dtype;
        }
        status = tg_safetensors_read(st, name, want, &arrays[i]);
    }
    for (int i = 0; i < n && status == TG_OK; i++)
        status = tg_store_set(s, names ? names[i] : st->tensors[i].name, &arrays[i]);
    for (int i = 0; arrays && i < n; i++) tg_array_free(&arrays[i]);
    free(arrays);
    tg_safetensors_close(st);
    return status;
}

/* ---- small files ---- */

tg_status tg_read_whole_file(const char *path, size_t max_bytes, char **buf, size_t *len) {
    if (buf) *buf = NULL;
    if (len) *len = 0;
    if (!path || !buf || !len)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_read_whole_file: NULL argument");
    FILE *f = fopen(path, "rb");
    if (!f) return tg_set_error_at(TG_ERR_IO, path, "cannot open: %s", strerror(errno));
    /* Read in a loop rather than trusting a size from fseek: works for pipes
     * and reports directories (EISDIR) through ferror. */
    size_t cap = 4096, n = 0;
    char *p = malloc(cap);
    tg_status status = p ? TG_OK : tg_set_error_at(TG_ERR_NO_MEMORY, path, "out of memory");
    while (status == TG_OK) {
        if (n + 1 >= cap) {
            char *bigger = cap <= SIZE_MAX / 2 ? realloc(p, cap * 2) : NULL;
            if (!bigger) {
                status = tg_set_error_at(TG_ERR_NO_MEMORY, path, "out of memory reading the file");
                break;
            }
            p = bigger;
            cap *= 2;
        }
        size_t got = fread(p + n, 1, cap - n - 1, f);
        n += got;
        if (n > max_bytes)
            status = tg_set_error_at(TG_ERR_IO, path, "file is larger than the limit of %zu bytes",
                                     max_bytes);
        if (got == 0) break;
    }
    if (status == TG_OK && ferror(f))
        status = tg_set_error_at(TG_ERR_IO, path, "cannot read: %s", strerror(errno ? errno : EIO));
    fclose(f);
    if (status != TG_OK) {
        free(p);
        return status;
    }
    p[n] = '\0';
    *buf = p;
    *len = n;
    return TG_OK;
}
