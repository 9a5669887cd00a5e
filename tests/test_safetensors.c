/* test_safetensors.c — safetensors checkpoints: round trips of every dtype,
 * the exact bytes the writer produces, conversions, sharded checkpoints,
 * stores, malformed files with their messages, and interrupted saves. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp, setenv */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tg.h"
#include "frontend/safetensors.h"

static char tmpdir[256];

static int make_tmpdir(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/tg_st_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state) {
    (void)state;
    DIR *d = opendir(tmpdir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') continue;
            char p[512];
            snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(tmpdir);
    return 0;
}

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

/* A safetensors image: the header exactly as given, then `data`. */
static unsigned char *make_st(const char *header, const void *data, size_t data_len, size_t *len) {
    size_t h = strlen(header);
    *len = 8 + h + data_len;
    unsigned char *buf = malloc(*len);
    assert_non_null(buf);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)h >> (8 * i));
    memcpy(buf + 8, header, h);
    if (data_len) memcpy(buf + 8 + h, data, data_len);
    return buf;
}

static void write_st(const char *path, const char *header, const void *data, size_t data_len) {
    size_t len;
    unsigned char *buf = make_st(header, data, data_len, &len);
    write_bytes(path, buf, len);
    free(buf);
}

static void assert_contains(const char *msg, const char *want) {
    if (!strstr(msg, want)) fail_msg("message \"%s\" lacks \"%s\"", msg, want);
}

/* ---- round trips ---- */

static void fill(tg_array *a) {
    for (int64_t i = 0; i < tg_array_count(a); i++) tg_array_set(a, i, (double)(i % 7) - 3);
}

static void test_round_trip_every_dtype(void **state) {
    (void)state;
    const char *names[TG_DTYPE_COUNT] = {"w.f32", "w.f16", "w.bf16", "w.i32", "w.i8", "w.u8"};
    tg_array arrays[TG_DTYPE_COUNT];
    for (int t = 0; t < TG_DTYPE_COUNT; t++) {
        int64_t shape[3] = {2, 3, t + 1};
        assert_int_equal(tg_array_alloc(&arrays[t], (tg_dtype)t, 3, shape), TG_OK);
        fill(&arrays[t]);
        if (t == TG_U8)
            for (int64_t i = 0; i < tg_array_count(&arrays[t]); i++)
                ((uint8_t *)arrays[t].data)[i] = (uint8_t)(200 + i);
    }
    const char *meta[] = {"format", "pt", "note", "a \"quoted\"\nvalue", NULL};
    const char *path = tmp_path("all.safetensors");
    assert_int_equal(tg_safetensors_save(path, TG_DTYPE_COUNT, names, arrays, meta), TG_OK);

    tg_safetensors *st;
    assert_int_equal(tg_safetensors_open(path, &st), TG_OK);
    assert_int_equal(tg_safetensors_count(st), TG_DTYPE_COUNT);
    assert_string_equal(tg_safetensors_name(st, 0), "w.bf16"); /* sorted by name */
    assert_string_equal(tg_safetensors_metadata_get(st, "format"), "pt");
    assert_string_equal(tg_safetensors_metadata_get(st, "note"), "a \"quoted\"\nvalue");
    assert_int_equal(tg_safetensors_metadata_count(st), 2);
    assert_null(tg_safetensors_metadata_get(st, "missing"));
    for (int t = 0; t < TG_DTYPE_COUNT; t++) {
        int i = tg_safetensors_find(st, names[t]);
        assert_true(i >= 0);
        tg_dtype dt;
        int rank;
        int64_t shape[TG_MAX_RANK];
        assert_int_equal(tg_safetensors_info(st, i, &dt, &rank, shape), TG_OK);
        assert_int_equal(dt, t);
        assert_int_equal(rank, 3);
        assert_int_equal(shape[2], t + 1);
        tg_array back;
        assert_int_equal(tg_safetensors_read(st, names[t], (tg_dtype)t, &back), TG_OK);
        size_t bytes = (size_t)tg_array_count(&back) * tg_dtype_size((tg_dtype)t);
        assert_memory_equal(back.data, arrays[t].data, bytes);
        tg_array_free(&back);
        const void *p;
        size_t n;
        assert_int_equal(tg_safetensors_data(st, names[t], &p, &n), TG_OK);
        assert_int_equal(n, bytes);
        assert_memory_equal(p, arrays[t].data, bytes);
        if (t == TG_BF16) assert_int_equal((uintptr_t)p % 8, 0); /* first in the file: aligned */
    }
    assert_int_equal(tg_safetensors_find(st, "nope"), -1);
    tg_array none;
    assert_int_equal(tg_safetensors_read(st, "nope", TG_F32, &none), TG_ERR_NOT_FOUND);
    assert_contains(tg_last_error(), "no tensor 'nope'");
    assert_contains(tg_last_error(), "all.safetensors");
    /* integers do not silently become floats */
    assert_int_equal(tg_safetensors_read(st, "w.i32", TG_F32, &none), TG_ERR_SHAPE);
    assert_contains(tg_last_error(), "tensor 'w.i32' is I32 and cannot be read as f32");
    tg_safetensors_close(st);
    for (int t = 0; t < TG_DTYPE_COUNT; t++) tg_array_free(&arrays[t]);
}

/* The writer's bytes are what the reference implementation writes: sorted
 * names, compact JSON, spaces up to a multiple of 8. */
static void test_exact_bytes(void **state) {
    (void)state;
    tg_array a, b;
    assert_int_equal(tg_array_alloc(&a, TG_F32, 1, (int64_t[]){2}), TG_OK);
    assert_int_equal(tg_array_alloc(&b, TG_U8, 0, NULL), TG_OK);
    ((float *)a.data)[0] = 1.0f;
    ((float *)a.data)[1] = -2.0f;
    ((uint8_t *)b.data)[0] = 7;
    const char *names[] = {"z", "a"};
    const tg_array arrays[] = {b, a};
    const char *path = tmp_path("exact.safetensors");
    assert_int_equal(tg_safetensors_save(path, 2, names, arrays, NULL), TG_OK);
    const char *want = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"z\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[8,9]}}";
    size_t hl = strlen(want);
    size_t padded = (hl + 7) / 8 * 8;
    char *buf;
    size_t len;
    assert_int_equal(tg_read_whole_file(path, 1 << 20, &buf, &len), TG_OK);
    assert_int_equal(len, 8 + padded + 9);
    assert_int_equal((unsigned char)buf[0], padded);
    for (int i = 1; i < 8; i++) assert_int_equal(buf[i], 0);
    assert_memory_equal(buf + 8, want, hl);
    for (size_t i = hl; i < padded; i++) assert_int_equal(buf[8 + i], ' ');
    assert_memory_equal(buf + 8 + padded, a.data, 8);
    assert_int_equal(buf[8 + padded + 8], 7);
    free(buf);
    tg_array_free(&a);
    tg_array_free(&b);
}

static void test_conversions(void **state) {
    (void)state;
    /* F64, I64, BOOL built by hand: read as f32, i32, u8 */
    double f64[3] = {1.5, -2.25, 1e10};
    int64_t i64[2] = {-5, 2147483647};
    uint8_t bools[3] = {0, 1, 7};
    unsigned char data[24 + 16 + 3];
    memcpy(data, f64, 24);
    memcpy(data + 24, i64, 16);
    memcpy(data + 40, bools, 3);
    const char *path = tmp_path("conv.safetensors");
    write_st(path,
             "{\"d\":{\"dtype\":\"F64\",\"shape\":[3],\"data_offsets\":[0,24]},"
             "\"i\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[24,40]},"
             "\"b\":{\"dtype\":\"BOOL\",\"shape\":[3],\"data_offsets\":[40,43]}}",
             data, sizeof data);
    tg_safetensors *st;
    assert_int_equal(tg_safetensors_open(path, &st), TG_OK);
    assert_string_equal(tg_safetensors_file_dtype(st, tg_safetensors_find(st, "d")), "F64");
    tg_dtype dt;
    assert_int_equal(tg_safetensors_info(st, tg_safetensors_find(st, "i"), &dt, NULL, NULL), TG_OK);
    assert_int_equal(dt, TG_I32);
    tg_array a;
    assert_int_equal(tg_safetensors_read(st, "d", TG_F32, &a), TG_OK);
    assert_true(((float *)a.data)[0] == 1.5f && ((float *)a.data)[1] == -2.25f);
    assert_true(((float *)a.data)[2] == 1e10f);
    tg_array_free(&a);
    assert_int_equal(tg_safetensors_read(st, "d", TG_F16, &a), TG_OK);
    assert_int_equal(((uint16_t *)a.data)[0], tg_f32_to_f16(1.5f));
    assert_int_equal(((uint16_t *)a.data)[2], 0x7c00); /* 1e10 overflows f16: inf */
    tg_array_free(&a);
    assert_int_equal(tg_safetensors_read(st, "i", TG_I32, &a), TG_OK);
    assert_int_equal(((int32_t *)a.data)[0], -5);
    assert_int_equal(((int32_t *)a.data)[1], 2147483647);
    tg_array_free(&a);
    assert_int_equal(tg_safetensors_read(st, "b", TG_U8, &a), TG_OK);
    assert_int_equal(((uint8_t *)a.data)[2], 1);
    tg_array_free(&a);
    const void *p;
    assert_int_equal(tg_safetensors_data(st, "d", &p, NULL), TG_ERR_UNSUPPORTED);
    assert_contains(tg_last_error(), "tensor 'd' is stored as F64");
    tg_safetensors_close(st);

    /* I64 beyond the i32 range is an error naming the element */
    i64[1] = 1LL << 40;
    write_st(path, "{\"i\":{\"dtype\":\"I64\",\"shape\":[2],\"data_offsets\":[0,16]}}", i64, 16);
    assert_int_equal(tg_safetensors_open(path, &st), TG_OK);
    assert_int_equal(tg_safetensors_read(st, "i", TG_I32, &a), TG_ERR_RUNTIME);
    assert_contains(tg_last_error(), "tensor 'i': element 1 is 1099511627776, outside the i32");
    tg_safetensors_close(st);

    /* float to float: bf16 stored, f32 and f16 wanted */
    tg_array w;
    assert_int_equal(tg_array_alloc(&w, TG_BF16, 1, (int64_t[]){4}), TG_OK);
    float vals[4] = {0.5f, -3.0f, 1.0f / 3.0f, 65504.0f};
    for (int i = 0; i < 4; i++) ((uint16_t *)w.data)[i] = tg_f32_to_bf16(vals[i]);
    const char *name = "w";
    assert_int_equal(tg_safetensors_save(path, 1, &name, &w, NULL), TG_OK);
    assert_int_equal(tg_safetensors_open(path, &st), TG_OK);
    assert_int_equal(tg_safetensors_read(st, "w", TG_F32, &a), TG_OK);
    for (int i = 0; i < 4; i++)
        assert_true(((float *)a.data)[i] == tg_bf16_to_f32(((uint16_t *)w.data)[i]));
    tg_array_free(&a);
    assert_int_equal(tg_safetensors_read(st, "w", TG_F16, &a), TG_OK);
    assert_int_equal(((uint16_t *)a.data)[0], 0x3800); /* 0.5 */
    assert_int_equal(((uint16_t *)a.data)[1], 0xc200); /* -3 */
    tg_array_free(&a);
    tg_safetensors_close(st);
    tg_array_free(&w);
}

static void test_open_mem_and_empty(void **state) {
    (void)state;
    size_t len;
    unsigned char *buf = make_st("{}", NULL, 0, &len);
    tg_safetensors *st;
    assert_int_equal(tg_safetensors_open_mem(buf, len, "empty", &st), TG_OK);
    assert_int_equal(tg_safetensors_count(st), 0);
    tg_safetensors_close(st);
    free(buf);
    /* a zero-size tensor among others */
    float one = 1.0f;
    buf = make_st("{\"e\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[0,0]},"
                  "\"o\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}  ",
                  &one, 4, &len);
    assert_int_equal(tg_safetensors_open_mem(buf, len, NULL, &st), TG_OK);
    tg_array a;
    assert_int_equal(tg_safetensors_read(st, "e", TG_F32, &a), TG_OK);
    assert_int_equal(tg_array_count(&a), 0);
    assert_int_equal(a.shape[1], 5);
    tg_array_free(&a);
    tg_safetensors_close(st);
    free(buf);
}

/* ---- malformed files ---- */

typedef struct bad_case {
    const char *header; /* NULL: raw bytes below */
    size_t data_len;
    tg_status status;
    const char *message;
} bad_case;

static const bad_case bad_cases[] = {
    {"{\"a\":", 0, TG_ERR_PARSE, "header is not valid JSON"},
    {"[1, 2]", 0, TG_ERR_PARSE, "header does not start with '{'"},
    {"{} x", 0, TG_ERR_PARSE, "unexpected bytes after the JSON header"},
    {"{\"a\":3}", 0, TG_ERR_PARSE, "tensor 'a': entry is a number, not an object"},
    {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, TG_ERR_PARSE,
     "tensor 'a': missing \"dtype\""},
    {"{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, TG_ERR_PARSE,
     "tensor 'a': missing \"shape\""},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, TG_ERR_PARSE,
     "tensor 'a': missing \"data_offsets\""},
    {"{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, TG_ERR_PARSE,
     "tensor 'a': dtype is a number, not a string"},
    {"{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, TG_ERR_PARSE,
     "tensor 'a': unknown dtype \"F33\""},
    {"{\"a\":{\"dtype\":\"U16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, TG_ERR_UNSUPPORTED,
     "tensor 'a': dtype U16 is not supported"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4, TG_ERR_PARSE,
     "tensor 'a': shape is a string, not an array"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, TG_ERR_PARSE,
     "tensor 'a': shape[0] is not a non-negative integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,2.5],\"data_offsets\":[0,4]}}", 4, TG_ERR_PARSE,
     "tensor 'a': shape[1] is not a non-negative integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, TG_ERR_PARSE,
     "tensor 'a': shape[0] is not a non-negative integer"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
     TG_ERR_UNSUPPORTED, "tensor 'a': rank 7 is more than 6"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 4,
     TG_ERR_PARSE, "tensor 'a': shape [4294967296, 4294967296, 16] is too large"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, TG_ERR_PARSE,
     "tensor 'a': data_offsets is not an array of two"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,\"4\"]}}", 4, TG_ERR_PARSE,
     "tensor 'a': data_offsets are not non-negative integers"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 4, TG_ERR_PARSE,
     "tensor 'a': data_offsets [4, 8] reach past the end of the data section (4 bytes)"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, TG_ERR_PARSE,
     "tensor 'a': data_offsets [4, 0] are reversed"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, TG_ERR_PARSE,
     "tensor 'a': data_offsets [0, 8] hold 8 bytes but F32 [3] needs 12"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, TG_ERR_PARSE, "tensors 'a' [0, 8] and 'b' [4, 12] overlap"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
     12, TG_ERR_PARSE, "gap in the data section: bytes [4, 8) before tensor 'b'"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, TG_ERR_PARSE,
     "the data section has 8 bytes but the tensors cover only 4"},
    {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, TG_ERR_PARSE, "tensor 'a' appears twice in the header"},
    {"{\"__metadata__\":{\"k\":1}}", 0, TG_ERR_PARSE,
     "__metadata__ value of 'k' is a number, not a string"},
    {"{\"__metadata__\":[\"k\"]}", 0, TG_ERR_PARSE, "__metadata__ is an array, not an object"},
    {"{\"__metadata__\":{},\"__metadata__\":{}}", 0, TG_ERR_PARSE, "__metadata__ appears twice"},
    {"{}", 3, TG_ERR_PARSE, "the header lists no tensors but 3 data bytes follow it"},
};

static void test_malformed_headers(void **state) {
    (void)state;
    unsigned char zeros[64] = {0};
    const char *path = tmp_path("bad.safetensors");
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        write_st(path, c->header, zeros, c->data_len);
        tg_safetensors *st = (tg_safetensors *)&st; /* must be reset to NULL */
        tg_status status = tg_safetensors_open(path, &st);
        if (status != c->status)
            fail_msg("case %zu (%s): status %d, want %d: %s", i, c->header, status, c->status,
                     tg_last_error());
        assert_null(st);
        assert_contains(tg_last_error(), c->message);
        assert_contains(tg_last_error(), "bad.safetensors: ");
        /* the same bytes from memory give the same message */
        size_t len;
        unsigned char *buf = make_st(c->header, zeros, c->data_len, &len);
        assert_int_equal(tg_safetensors_open_mem(buf, len, "mem", &st), c->status);
        assert_contains(tg_last_error(), c->message);
        free(buf);
    }
}

static void test_truncated_files(void **state) {
    (void)state;
    const char *path = tmp_path("short.safetensors");
    tg_safetensors *st;
    write_bytes(path, "abcd", 4);
    assert_int_equal(tg_safetensors_open(path, &st), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "short.safetensors: file is 4 bytes, too short");
    write_bytes(path, "", 0);
    assert_int_equal(tg_safetensors_open(path, &st), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "file is 0 bytes");
    /* header length larger than the file */
    unsigned char buf[16] = {0xe8, 0x03, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(path, buf, 10);
    assert_int_equal(tg_safetensors_open(path, &st), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "header length 1000 is more than the 2 bytes that follow");
    /* a huge length must not wrap around */
    memset(buf, 0xff, 8);
    write_bytes(path, buf, 10);
    assert_int_equal(tg_safetensors_open(path, &st), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "header length 18446744073709551615 is more than");
    /* a valid file cut short */
    tg_array a;
    assert_int_equal(tg_array_alloc(&a, TG_F32, 1, (int64_t[]){16}), TG_OK);
    const char *name = "x";
    assert_int_equal(tg_safetensors_save(path, 1, &name, &a, NULL), TG_OK);
    tg_array_free(&a);
    char *bytes;
    size_t len;
    assert_int_equal(tg_read_whole_file(path, 1 << 20, &bytes, &len), TG_OK);
    write_bytes(path, bytes, len - 1);
    free(bytes);
    assert_int_equal(tg_safetensors_open(path, &st), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "tensor 'x': data_offsets [0, 64] reach past the end");
    /* missing file and directory */
    assert_int_equal(tg_safetensors_open(tmp_path("nothing.safetensors"), &st), TG_ERR_IO);
    assert_contains(tg_last_error(), "nothing.safetensors: cannot open: No such file");
    assert_int_equal(tg_safetensors_open(tmpdir, &st), TG_ERR_IO);
    assert_contains(tg_last_error(), "not a regular file");
}

/* ---- writer errors and interrupted saves ---- */

static void test_save_errors(void **state) {
    (void)state;
    tg_array a[2];
    assert_int_equal(tg_array_alloc(&a[0], TG_F32, 1, (int64_t[]){2}), TG_OK);
    assert_int_equal(tg_array_alloc(&a[1], TG_F32, 1, (int64_t[]){2}), TG_OK);
    const char *dup[] = {"w", "w"};
    const char *path = tmp_path("dup.safetensors");
    assert_int_equal(tg_safetensors_save(path, 2, dup, a, NULL), TG_ERR_INVALID_ARGUMENT);
    assert_contains(tg_last_error(), "dup.safetensors: tensor name 'w' is repeated");
    const char *bad[] = {"ok", "\xff\xfe"};
    assert_int_equal(tg_safetensors_save(path, 2, bad, a, NULL), TG_ERR_INVALID_ARGUMENT);
    assert_contains(tg_last_error(), "tensor 1: name is NULL, not UTF-8 or reserved");
    assert_int_equal(access(path, F_OK), -1); /* nothing written */
    assert_int_equal(tg_safetensors_save(tmp_path("no/such/dir.st"), 1, dup, a, NULL), TG_ERR_IO);
    assert_contains(tg_last_error(), "cannot create a temporary file");
    tg_array_free(&a[0]);
    tg_array_free(&a[1]);
}

static int count_dir_entries(void) {
    DIR *d = opendir(tmpdir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static void test_interrupted_save(void **state) {
    (void)state;
    const char *path = tmp_path("ckpt.safetensors");
    tg_array v1, v2;
    assert_int_equal(tg_array_alloc(&v1, TG_F32, 1, (int64_t[]){3}), TG_OK);
    assert_int_equal(tg_array_alloc(&v2, TG_F32, 1, (int64_t[]){5}), TG_OK);
    ((float *)v1.data)[2] = 42.0f;
    const char *name = "w";
    assert_int_equal(tg_safetensors_save(path, 1, &name, &v1, NULL), TG_OK);
    int entries = count_dir_entries();
    const char *steps[] = {"write", "fsync", "rename"};
    for (int s = 0; s < 3; s++) {
        setenv("TG_TEST_FAIL_SAVE_AT", steps[s], 1);
        tg_status status = tg_safetensors_save(path, 1, &name, &v2, NULL);
        unsetenv("TG_TEST_FAIL_SAVE_AT");
        assert_int_equal(status, TG_ERR_IO);
        assert_contains(tg_last_error(), "ckpt.safetensors: ");
        /* the old checkpoint is intact and no temporary file is left */
        assert_int_equal(count_dir_entries(), entries);
        tg_safetensors *st;
        assert_int_equal(tg_safetensors_open(path, &st), TG_OK);
        tg_array back;
        assert_int_equal(tg_safetensors_read(st, "w", TG_F32, &back), TG_OK);
        assert_int_equal(back.shape[0], 3);
        assert_true(((float *)back.data)[2] == 42.0f);
        tg_array_free(&back);
        tg_safetensors_close(st);
    }
    /* and a save without the hook replaces it */
    assert_int_equal(tg_safetensors_save(path, 1, &name, &v2, NULL), TG_OK);
    tg_safetensors *st;
    assert_int_equal(tg_safetensors_open(path, &st), TG_OK);
    int64_t shape[TG_MAX_RANK];
    assert_int_equal(tg_safetensors_info(st, 0, NULL, NULL, shape), TG_OK);
    assert_int_equal(shape[0], 5);
    tg_safetensors_close(st);
    tg_array_free(&v1);
    tg_array_free(&v2);
}

/* ---- stores ---- */

static void test_store_round_trip(void **state) {
    (void)state;
    tg_store *s = tg_store_new();
    tg_array w, m;
    assert_int_equal(tg_array_alloc(&w, TG_F32, 2, (int64_t[]){2, 3}), TG_OK);
    assert_int_equal(tg_array_alloc(&m, TG_BF16, 1, (int64_t[]){4}), TG_OK);
    fill(&w);
    fill(&m);
    assert_int_equal(tg_store_set(s, "layer.w", &w), TG_OK);
    assert_int_equal(tg_store_set(s, "adam.m", &m), TG_OK);
    const char *path = tmp_path("store.safetensors");
    assert_int_equal(tg_store_save_safetensors(s, path, 0, NULL), TG_OK);

    tg_store *t = tg_store_new();
    assert_int_equal(tg_store_load_safetensors(t, path, 0, NULL), TG_OK);
    assert_int_equal(tg_store_count(t), 2);
    tg_array back;
    assert_int_equal(tg_store_get(t, "layer.w", &back), TG_OK);
    assert_memory_equal(back.data, w.data, 24);
    tg_array_free(&back);
    assert_int_equal(tg_store_get(t, "adam.m", &back), TG_OK);
    assert_int_equal(back.dtype, TG_BF16);
    assert_memory_equal(back.data, m.data, 8);
    tg_array_free(&back);

    /* an existing f16 variable keeps its dtype: the f32 tensor converts */
    tg_store *u = tg_store_new();
    tg_array h;
    assert_int_equal(tg_array_alloc(&h, TG_F16, 2, (int64_t[]){2, 3}), TG_OK);
    assert_int_equal(tg_store_set(u, "layer.w", &h), TG_OK);
    const char *one[] = {"layer.w"};
    assert_int_equal(tg_store_load_safetensors(u, path, 1, one), TG_OK);
    assert_int_equal(tg_store_get(u, "layer.w", &back), TG_OK);
    assert_int_equal(back.dtype, TG_F16);
    assert_true(tg_array_get(&back, 5) == tg_array_get(&w, 5));
    tg_array_free(&back);
    tg_array_free(&h);

    /* a shape mismatch names both shapes and changes nothing */
    tg_array wrong;
    assert_int_equal(tg_array_alloc(&wrong, TG_F32, 2, (int64_t[]){3, 2}), TG_OK);
    tg_store *v = tg_store_new();
    assert_int_equal(tg_store_set(v, "layer.w", &wrong), TG_OK);
    assert_int_equal(tg_store_load_safetensors(v, path, 0, NULL), TG_ERR_SHAPE);
    assert_contains(tg_last_error(), "tensor 'layer.w' is f32[2,3] but the store holds f32[3,2]");
    assert_false(tg_store_has(v, "adam.m"));
    const char *missing[] = {"adam.v"};
    assert_int_equal(tg_store_load_safetensors(v, path, 1, missing), TG_ERR_NOT_FOUND);
    assert_contains(tg_last_error(), "store.safetensors: no tensor 'adam.v'");
    /* saving a variable the store lacks */
    assert_int_equal(tg_store_save_safetensors(v, path, 1, missing), TG_ERR_NOT_FOUND);

    tg_array_free(&wrong);
    tg_array_free(&w);
    tg_array_free(&m);
    tg_store_free(s);
    tg_store_free(t);
    tg_store_free(u);
    tg_store_free(v);
}

/* ---- sharded checkpoints ---- */

static void write_text(const char *path, const char *text) {
    write_bytes(path, text, strlen(text));
}

static void test_sharded(void **state) {
    (void)state;
    char dir[300];
    snprintf(dir, sizeof dir, "%s/sharded", tmpdir);
    assert_int_equal(mkdir(dir, 0755), 0);
    char p1[400], p2[400], idx[400];
    snprintf(p1, sizeof p1, "%s/model-00001-of-00002.safetensors", dir);
    snprintf(p2, sizeof p2, "%s/model-00002-of-00002.safetensors", dir);
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    tg_array a, b;
    assert_int_equal(tg_array_alloc(&a, TG_F32, 1, (int64_t[]){2}), TG_OK);
    assert_int_equal(tg_array_alloc(&b, TG_F16, 1, (int64_t[]){3}), TG_OK);
    fill(&a);
    fill(&b);
    const char *na = "enc.w", *nb = "dec.w";
    assert_int_equal(tg_safetensors_save(p1, 1, &na, &a, NULL), TG_OK);
    assert_int_equal(tg_safetensors_save(p2, 1, &nb, &b, NULL), TG_OK);
    write_text(idx, "{\"metadata\":{\"total_size\":14},\"weight_map\":{"
                    "\"enc.w\":\"model-00001-of-00002.safetensors\","
                    "\"dec.w\":\"model-00002-of-00002.safetensors\"}}");
    tg_safetensors *st;
    if (tg_safetensors_open_dir(dir, &st) != TG_OK) fail_msg("%s", tg_last_error());
    assert_int_equal(tg_safetensors_count(st), 2);
    tg_array back;
    assert_int_equal(tg_safetensors_read(st, "dec.w", TG_F32, &back), TG_OK);
    assert_true(tg_array_get(&back, 2) == tg_array_get(&b, 2));
    tg_array_free(&back);
    tg_safetensors_close(st);

    /* the index names the wrong shard */
    write_text(idx, "{\"weight_map\":{\"enc.w\":\"model-00002-of-00002.safetensors\","
                    "\"dec.w\":\"model-00002-of-00002.safetensors\"}}");
    assert_int_equal(tg_safetensors_open_dir(dir, &st), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "model.safetensors.index.json: lists tensor 'enc.w' in "
                                     "model-00002-of-00002.safetensors, which has no such tensor");
    /* a shard holds a tensor the index omits */
    write_text(idx, "{\"weight_map\":{\"enc.w\":\"model-00001-of-00002.safetensors\","
                    "\"x\":\"model-00002-of-00002.safetensors\"}}");
    assert_int_equal(tg_safetensors_open_dir(dir, &st), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "lists tensor 'x' in model-00002-of-00002.safetensors");
    const char *two[] = {"enc.w", "enc.extra"};
    const tg_array two_arrays[] = {a, a};
    assert_int_equal(tg_safetensors_save(p1, 2, two, two_arrays, NULL), TG_OK);
    write_text(idx, "{\"weight_map\":{\"enc.w\":\"model-00001-of-00002.safetensors\","
                    "\"dec.w\":\"model-00002-of-00002.safetensors\"}}");
    assert_int_equal(tg_safetensors_open_dir(dir, &st), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "holds tensor 'enc.extra', which the index does not list");
    /* paths outside the directory are refused */
    write_text(idx, "{\"weight_map\":{\"enc.w\":\"../store.safetensors\"}}");
    assert_int_equal(tg_safetensors_open_dir(dir, &st), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "weight_map['enc.w'] is not a file name in the same");
    write_text(idx, "{\"weight_map\":[]}");
    assert_int_equal(tg_safetensors_open_dir(dir, &st), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "\"weight_map\" is an array, not an object");
    write_text(idx, "{\"weight_map\":{\"enc.w\":\"missing.safetensors\"}}");
    assert_int_equal(tg_safetensors_open_dir(dir, &st), TG_ERR_IO);
    assert_contains(tg_last_error(), "missing.safetensors: cannot open");
    /* two shards holding the same tensor */
    assert_int_equal(tg_safetensors_save(p2, 1, &na, &a, NULL), TG_OK);
    write_text(idx, "{\"weight_map\":{\"enc.w\":\"model-00001-of-00002.safetensors\","
                    "\"dec.w\":\"model-00002-of-00002.safetensors\"}}");
    assert_int_equal(tg_safetensors_open_dir(dir, &st), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "both hold tensor 'enc.w'");

    /* model.safetensors wins over the index */
    char single[400];
    snprintf(single, sizeof single, "%s/model.safetensors", dir);
    assert_int_equal(tg_safetensors_save(single, 1, &nb, &b, NULL), TG_OK);
    assert_int_equal(tg_safetensors_open_dir(dir, &st), TG_OK);
    assert_int_equal(tg_safetensors_find(st, "dec.w"), 0);
    tg_safetensors_close(st);

    unlink(p1);
    unlink(p2);
    unlink(idx);
    unlink(single);
    assert_int_equal(tg_safetensors_open_dir(dir, &st), TG_ERR_NOT_FOUND);
    assert_contains(tg_last_error(), "has neither model.safetensors nor");
    rmdir(dir);
    tg_array_free(&a);
    tg_array_free(&b);
}

/* ---- a bounded deterministic mutation loop: never crash ---- */

static void test_mutations(void **state) {
    (void)state;
    tg_array a, b;
    assert_int_equal(tg_array_alloc(&a, TG_F32, 2, (int64_t[]){2, 2}), TG_OK);
    assert_int_equal(tg_array_alloc(&b, TG_BF16, 1, (int64_t[]){3}), TG_OK);
    const char *names[] = {"a", "b"};
    const tg_array arrays[] = {a, b};
    const char *meta[] = {"format", "pt", NULL};
    const char *path = tmp_path("mut.safetensors");
    assert_int_equal(tg_safetensors_save(path, 2, names, arrays, meta), TG_OK);
    char *orig;
    size_t len;
    assert_int_equal(tg_read_whole_file(path, 1 << 20, &orig, &len), TG_OK);
    unsigned char *buf = malloc(len);
    uint64_t rng = 12345;
    int ok = 0;
    for (int iter = 0; iter < 20000; iter++) {
        memcpy(buf, orig, len);
        int edits = 1 + iter % 4;
        for (int e = 0; e < edits; e++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t at = (size_t)(rng >> 33) % len;
            buf[at] = (unsigned char)(rng >> 17);
        }
        size_t cut = iter % 7 == 0 ? (size_t)(rng >> 40) % (len + 1) : len;
        tg_safetensors *st;
        if (tg_safetensors_open_mem(buf, cut, "mut", &st) == TG_OK) {
            ok++;
            for (int i = 0; i < tg_safetensors_count(st); i++) {
                tg_array r;
                if (tg_safetensors_read(st, tg_safetensors_name(st, i), TG_F32, &r) == TG_OK)
                    tg_array_free(&r);
            }
            tg_safetensors_close(st);
        } else {
            assert_true(strlen(tg_last_error()) > 0);
        }
    }
    assert_true(ok > 0); /* data-only edits still load */
    free(buf);
    free(orig);
    tg_array_free(&a);
    tg_array_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_dtype),
        cmocka_unit_test(test_exact_bytes),
        cmocka_unit_test(test_conversions),
        cmocka_unit_test(test_open_mem_and_empty),
        cmocka_unit_test(test_malformed_headers),
        cmocka_unit_test(test_truncated_files),
        cmocka_unit_test(test_save_errors),
        cmocka_unit_test(test_interrupted_save),
        cmocka_unit_test(test_store_round_trip),
        cmocka_unit_test(test_sharded),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, make_tmpdir, remove_tmpdir);
}
