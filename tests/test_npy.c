/* test_npy.c — .npy reading and writing: files NumPy wrote, round trips of
 * every dtype, malformed files with their expected messages, and a bounded
 * deterministic mutation fuzz loop. */
#define _POSIX_C_SOURCE 200809L /* mkstemp, unlink */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tg.h"
#include "frontend/npy.h"

#define DATA TG_TEST_DATA_DIR "/"

/* ---- helpers ---- */

/* Builds a .npy image: magic, version, header length, header text (as given,
 * unpadded), then `data_len` bytes of data. */
static unsigned char *make_npy(int major, const char *header, const void *data, size_t data_len,
                               size_t *len) {
    size_t preamble = major == 1 ? 10 : 12;
    size_t header_len = strlen(header);
    *len = preamble + header_len + data_len;
    unsigned char *buf = malloc(*len);
    assert_non_null(buf);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    if (major == 1) {
        buf[8] = (unsigned char)(header_len & 0xff);
        buf[9] = (unsigned char)(header_len >> 8);
    } else {
        for (int i = 0; i < 4; i++) buf[8 + i] = (unsigned char)(header_len >> (8 * i));
    }
    memcpy(buf + preamble, header, header_len);
    if (data_len) memcpy(buf + preamble + header_len, data, data_len);
    return buf;
}

static void check_shape(const tg_array *a, tg_dtype dtype, int rank, const int64_t *shape) {
    assert_int_equal(a->dtype, dtype);
    assert_int_equal(a->rank, rank);
    for (int i = 0; i < rank; i++) assert_int_equal(a->shape[i], shape[i]);
}

/* ---- files NumPy wrote (tests/reference/npy_fixtures.py) ---- */

static void test_numpy_f32_f16(void **state) {
    (void)state;
    const char *files[] = {DATA "npy_f32.npy", DATA "npy_f16.npy"};
    tg_dtype dtypes[] = {TG_F32, TG_F16};
    for (int f = 0; f < 2; f++) {
        tg_array a;
        assert_int_equal(tg_npy_read(files[f], &a), TG_OK);
        check_shape(&a, dtypes[f], 2, (int64_t[]){2, 3});
        for (int i = 0; i < 6; i++) assert_true(tg_array_get(&a, i) == i * 0.5 - 1);
        tg_array_free(&a);
    }
}

static void test_numpy_integers(void **state) {
    (void)state;
    tg_array a;
    assert_int_equal(tg_npy_read(DATA "npy_i32.npy", &a), TG_OK);
    check_shape(&a, TG_I32, 2, (int64_t[]){3, 2});
    for (int i = 0; i < 6; i++) assert_int_equal(((int32_t *)a.data)[i], i - 3);
    tg_array_free(&a);

    assert_int_equal(tg_npy_read(DATA "npy_i64.npy", &a), TG_OK);
    check_shape(&a, TG_I32, 2, (int64_t[]){1, 4});
    int32_t expect64[] = {INT32_MIN, INT32_MAX, 0, 5};
    assert_memory_equal(a.data, expect64, sizeof expect64);
    tg_array_free(&a);

    assert_int_equal(tg_npy_read(DATA "npy_u8.npy", &a), TG_OK);
    check_shape(&a, TG_U8, 1, (int64_t[]){6});
    for (int i = 0; i < 6; i++) assert_int_equal(((uint8_t *)a.data)[i], 250 + i);
    tg_array_free(&a);

    assert_int_equal(tg_npy_read(DATA "npy_i8.npy", &a), TG_OK);
    check_shape(&a, TG_I8, 1, (int64_t[]){5});
    int8_t expect8[] = {-128, -1, 0, 1, 127};
    assert_memory_equal(a.data, expect8, sizeof expect8);
    tg_array_free(&a);

    assert_int_equal(tg_npy_read(DATA "npy_bool.npy", &a), TG_OK);
    check_shape(&a, TG_U8, 1, (int64_t[]){3});
    uint8_t expect_bool[] = {1, 0, 1};
    assert_memory_equal(a.data, expect_bool, sizeof expect_bool);
    tg_array_free(&a);
}

static void test_numpy_shapes_and_versions(void **state) {
    (void)state;
    tg_array a;
    assert_int_equal(tg_npy_read(DATA "npy_scalar.npy", &a), TG_OK);
    check_shape(&a, TG_F32, 0, NULL);
    assert_true(tg_array_get(&a, 0) == 3.25);
    tg_array_free(&a);

    assert_int_equal(tg_npy_read(DATA "npy_empty.npy", &a), TG_OK);
    check_shape(&a, TG_F32, 2, (int64_t[]){0, 3});
    assert_int_equal(tg_array_count(&a), 0);
    tg_array_free(&a);

    assert_int_equal(tg_npy_read(DATA "npy_rank6.npy", &a), TG_OK);
    check_shape(&a, TG_F32, 6, (int64_t[]){1, 2, 1, 2, 1, 2});
    for (int i = 0; i < 8; i++) assert_true(tg_array_get(&a, i) == i);
    tg_array_free(&a);

    const char *versions[] = {DATA "npy_v2.npy", DATA "npy_v3.npy"};
    for (int v = 0; v < 2; v++) {
        assert_int_equal(tg_npy_read(versions[v], &a), TG_OK);
        check_shape(&a, TG_F32, 2, (int64_t[]){2, 2});
        for (int i = 0; i < 4; i++) assert_true(tg_array_get(&a, i) == i);
        tg_array_free(&a);
    }
}

/* NumPy-written files tg refuses, with messages that name the file. */
static void test_numpy_refused(void **state) {
    (void)state;
    struct {
        const char *path, *message;
    } cases[] = {
        {DATA "npy_f64.npy", "unsupported dtype '<f8'"},
        {DATA "npy_i64_big.npy", "element 2 is 5000000000, outside the i32 range"},
        {DATA "npy_fortran.npy", "Fortran-order arrays are not supported"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        tg_array a;
        assert_int_not_equal(tg_npy_read(cases[i].path, &a), TG_OK);
        assert_null(a.data);
        assert_non_null(strstr(tg_last_error(), cases[i].path));
        if (!strstr(tg_last_error(), cases[i].message))
            fail_msg("%s: got '%s'", cases[i].path, tg_last_error());
    }
}

static void test_missing_file(void **state) {
    (void)state;
    tg_array a;
    assert_int_equal(tg_npy_read(DATA "no_such_file.npy", &a), TG_ERR_IO);
    assert_non_null(strstr(tg_last_error(), "no_such_file.npy: cannot open"));
    /* a directory opens but cannot be read */
    assert_int_equal(tg_npy_read(DATA, &a), TG_ERR_IO);
    assert_non_null(strstr(tg_last_error(), "cannot read"));
}

/* ---- writing and round trips ---- */

/* Our writer produces the same bytes as NumPy for the same array. */
static void test_write_matches_numpy(void **state) {
    (void)state;
    tg_array a;
    assert_int_equal(tg_npy_read(DATA "npy_f32.npy", &a), TG_OK);
    void *ours;
    size_t ours_len;
    assert_int_equal(tg_npy_write_mem(&a, &ours, &ours_len), TG_OK);
    tg_array_free(&a);

    FILE *f = fopen(DATA "npy_f32.npy", "rb");
    assert_non_null(f);
    unsigned char theirs[256];
    size_t theirs_len = fread(theirs, 1, sizeof theirs, f);
    fclose(f);
    assert_int_equal(ours_len, theirs_len);
    assert_memory_equal(ours, theirs, theirs_len);
    free(ours);
}

static void round_trip(tg_dtype dtype, int rank, const int64_t *shape) {
    tg_array a;
    assert_int_equal(tg_array_alloc(&a, dtype, rank, shape), TG_OK);
    int64_t n = tg_array_count(&a);
    for (int64_t i = 0; i < n; i++) tg_array_set(&a, i, (double)((i * 37) % 100) - 50);

    void *buf;
    size_t len;
    assert_int_equal(tg_npy_write_mem(&a, &buf, &len), TG_OK);
    assert_int_equal((len - (size_t)n * tg_dtype_size(dtype)) % 64, 0); /* aligned data */
    tg_array b;
    assert_int_equal(tg_npy_read_mem(buf, len, "round trip", &b), TG_OK);
    check_shape(&b, dtype, rank, shape);
    if (n > 0) assert_memory_equal(a.data, b.data, (size_t)n * tg_dtype_size(dtype));
    free(buf);
    tg_array_free(&a);
    tg_array_free(&b);
}

static void test_round_trips(void **state) {
    (void)state;
    tg_dtype dtypes[] = {TG_F32, TG_F16, TG_I32, TG_I8, TG_U8};
    for (size_t d = 0; d < sizeof dtypes / sizeof dtypes[0]; d++) {
        round_trip(dtypes[d], 0, NULL);
        round_trip(dtypes[d], 1, (int64_t[]){7});
        round_trip(dtypes[d], 2, (int64_t[]){3, 5});
        round_trip(dtypes[d], 2, (int64_t[]){4, 0});
        round_trip(dtypes[d], 6, (int64_t[]){2, 1, 3, 1, 2, 2});
    }
}

static void test_round_trip_file(void **state) {
    (void)state;
    char path[] = "/tmp/tg_test_npy_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    tg_array a;
    assert_int_equal(tg_array_alloc(&a, TG_F32, 2, (int64_t[]){2, 2}), TG_OK);
    float values[] = {1.5f, -2.0f, 1e-30f, 3e38f};
    memcpy(a.data, values, sizeof values);
    assert_int_equal(tg_npy_write(path, &a), TG_OK);
    tg_array b;
    assert_int_equal(tg_npy_read(path, &b), TG_OK);
    check_shape(&b, TG_F32, 2, (int64_t[]){2, 2});
    assert_memory_equal(b.data, values, sizeof values);
    tg_array_free(&a);
    tg_array_free(&b);
    unlink(path);
}

static void test_write_refusals(void **state) {
    (void)state;
    tg_array a;
    assert_int_equal(tg_array_alloc(&a, TG_BF16, 1, (int64_t[]){2}), TG_OK);
    assert_int_equal(tg_npy_write("/tmp/tg_test_bf16.npy", &a), TG_ERR_UNSUPPORTED);
    assert_non_null(strstr(tg_last_error(), "/tmp/tg_test_bf16.npy: "));
    assert_non_null(strstr(tg_last_error(), "bf16 has no NumPy dtype"));
    assert_int_equal(access("/tmp/tg_test_bf16.npy", F_OK), -1); /* nothing written */
    tg_array_free(&a);

    assert_int_equal(tg_array_alloc(&a, TG_F32, 1, (int64_t[]){2}), TG_OK);
    assert_int_equal(tg_npy_write("/nonexistent_dir/x.npy", &a), TG_ERR_IO);
    assert_non_null(strstr(tg_last_error(), "/nonexistent_dir/x.npy: cannot open for writing"));
    tg_array_free(&a);
}

/* ---- malformed files built here ---- */

typedef struct malformed {
    const char *what;
    int major;
    const char *header;
    size_t data_len; /* bytes of data after the header */
    const char *message;
} malformed;

static const float some_data[16] = {0};

static void test_malformed(void **state) {
    (void)state;
    static const malformed cases[] = {
        {"unsupported version", 4, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", 8,
         "unsupported .npy format version 4.0"},
        {"bad dict: missing colon", 1, "{'descr' '<f4', 'fortran_order': False, 'shape': (2,), }",
         8, "bad header: expected ':' after a key"},
        {"bad dict: no brace", 1, "'descr': '<f4'", 0, "bad header: expected '{'"},
        {"bad dict: unterminated string", 1, "{'descr': '<f4", 0, "unterminated string"},
        {"bad dict: missing key", 1, "{'descr': '<f4', 'fortran_order': False}", 0,
         "missing key 'shape'"},
        {"bad dict: unknown key", 1,
         "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'color': 'red'}", 8,
         "unexpected or repeated key 'color'"},
        {"bad dict: repeated key", 1,
         "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", 8,
         "unexpected or repeated key 'descr'"},
        {"bad dict: fortran_order value", 1, "{'descr': '<f4', 'fortran_order': 0, 'shape': ()}", 4,
         "expected True or False"},
        {"bad dict: text after", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': ()} x", 4,
         "unexpected text after '}'"},
        {"negative dimension", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", 0,
         "expected a non-negative integer in the shape"},
        {"unknown dtype", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (2,)}", 16,
         "unsupported dtype '<f8'"},
        {"complex dtype", 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (1,)}", 8,
         "unsupported dtype '<c8'"},
        {"structured dtype", 1, "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}",
         4, "structured dtypes"},
        {"big-endian", 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (2,)}", 8,
         "big-endian dtype '>f4' is not supported"},
        {"fortran order", 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2)}", 16,
         "Fortran-order arrays are not supported"},
        {"shape overflow", 1,
         "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", 8,
         "shape (4294967296, 4294967296) is too large"},
        {"byte size overflow", 1,
         "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,)}", 8,
         "is too large (byte size overflows)"},
        {"dimension beyond 64 bits", 1,
         "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", 8,
         "does not fit in 64 bits"},
        {"rank 7", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1)}", 4,
         "rank is more than 6"},
        {"truncated data", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 20,
         "header says 6 elements of f32 (24 bytes) but 20 bytes follow"},
        {"extra data", 2, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 28,
         "header says 6 elements of f32 (24 bytes) but 28 bytes follow"},
        {"truncated i64 data", 3, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,), }", 12,
         "header says 2 elements of i64 (16 bytes) but 12 bytes follow"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        unsigned char *buf =
            make_npy(cases[i].major, cases[i].header, some_data, cases[i].data_len, &len);
        tg_array a;
        tg_status st = tg_npy_read_mem(buf, len, "bad.npy", &a);
        free(buf);
        if (st == TG_OK) fail_msg("%s: accepted", cases[i].what);
        assert_null(a.data);
        const char *msg = tg_last_error();
        if (strncmp(msg, "bad.npy: ", 9) != 0 || !strstr(msg, cases[i].message))
            fail_msg("%s: expected '%s', got '%s'", cases[i].what, cases[i].message, msg);
    }
}

/* Damage to the preamble, which make_npy cannot express. */
static void test_malformed_preamble(void **state) {
    (void)state;
    tg_array a;
    const char header[] = "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }";
    size_t len;
    unsigned char *buf = make_npy(1, header, some_data, 8, &len);

    buf[1] = 'X'; /* bad magic */
    assert_int_equal(tg_npy_read_mem(buf, len, "m.npy", &a), TG_ERR_PARSE);
    assert_non_null(strstr(tg_last_error(), "m.npy: not a .npy file (bad magic bytes)"));
    buf[1] = 'N';

    assert_int_equal(tg_npy_read_mem(buf, 5, "m.npy", &a), TG_ERR_PARSE); /* too short */
    assert_non_null(strstr(tg_last_error(), "m.npy: not a .npy file"));

    assert_int_equal(tg_npy_read_mem(buf, 0, "m.npy", &a), TG_ERR_PARSE); /* empty */

    /* truncated header: the length field claims more than the file holds */
    assert_int_equal(tg_npy_read_mem(buf, 30, "m.npy", &a), TG_ERR_PARSE);
    char expected[128];
    snprintf(expected, sizeof expected,
             "m.npy: truncated header: header length is %zu bytes but only 20 follow",
             strlen(header));
    assert_non_null(strstr(tg_last_error(), expected));
    buf[8] = 0xff;
    buf[9] = 0xff;
    assert_int_equal(tg_npy_read_mem(buf, len, "m.npy", &a), TG_ERR_PARSE);
    assert_non_null(strstr(tg_last_error(), "header length is 65535 bytes"));
    free(buf);

    /* version 2.0 with a 4-byte length field cut short */
    buf = make_npy(2, header, some_data, 8, &len);
    assert_int_equal(tg_npy_read_mem(buf, 10, "m.npy", &a), TG_ERR_PARSE);
    assert_non_null(strstr(tg_last_error(), "shorter than the 12-byte preamble"));
    /* a 4 GiB header length must be refused without reading past the end */
    buf[11] = 0xff;
    assert_int_equal(tg_npy_read_mem(buf, len, "m.npy", &a), TG_ERR_PARSE);
    assert_non_null(strstr(tg_last_error(), "truncated header"));
    free(buf);

    assert_int_equal(tg_npy_read_mem(NULL, 0, NULL, &a), TG_ERR_PARSE);
    assert_non_null(strstr(tg_last_error(), "<memory>: "));
}

static void test_i64_out_of_range(void **state) {
    (void)state;
    int64_t values[] = {7, -2147483649LL};
    size_t len;
    unsigned char *buf = make_npy(1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2,)}",
                                  values, sizeof values, &len);
    tg_array a;
    assert_int_equal(tg_npy_read_mem(buf, len, "ids.npy", &a), TG_ERR_UNSUPPORTED);
    assert_non_null(strstr(tg_last_error(), "ids.npy: element 1 is -2147483649, outside the i32"));
    assert_null(a.data);
    free(buf);
}

/* Python 2 era files write long integers as 3L; NumPy accepts them. */
static void test_python2_long_shape(void **state) {
    (void)state;
    float values[] = {1, 2, 3};
    size_t len;
    unsigned char *buf =
        make_npy(1, "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (3L,)}  \n", values,
                 sizeof values, &len);
    tg_array a;
    assert_int_equal(tg_npy_read_mem(buf, len, "old.npy", &a), TG_OK);
    check_shape(&a, TG_F32, 1, (int64_t[]){3});
    assert_memory_equal(a.data, values, sizeof values);
    tg_array_free(&a);
    free(buf);
}

/* ---- fuzz ---- */

static uint64_t rng_state;
static uint64_t next_random(void) {
    /* xorshift64*: deterministic, so any failure reproduces */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545F4914F6CDD1DULL;
}

static void test_mutation_fuzz(void **state) {
    (void)state;
    /* Seeds: valid files of several dtypes, versions and ranks. */
    const char *seeds[] = {DATA "npy_f32.npy",   DATA "npy_i64.npy", DATA "npy_bool.npy",
                           DATA "npy_v2.npy",    DATA "npy_v3.npy",  DATA "npy_rank6.npy",
                           DATA "npy_scalar.npy"};
    const char interesting[] = "0123456789(),: '\"{}<>|TFL\n\xff";
    rng_state = 0x9E3779B97F4A7C15ULL;
    int accepted = 0, refused = 0;
    for (size_t s = 0; s < sizeof seeds / sizeof seeds[0]; s++) {
        FILE *f = fopen(seeds[s], "rb");
        assert_non_null(f);
        unsigned char seed[512];
        size_t seed_len = fread(seed, 1, sizeof seed, f);
        fclose(f);
        for (int iter = 0; iter < 3000; iter++) {
            unsigned char buf[600];
            size_t len = seed_len;
            memcpy(buf, seed, len);
            int n_mutations = 1 + (int)(next_random() % 4);
            for (int m = 0; m < n_mutations; m++) {
                size_t pos = len ? next_random() % len : 0;
                switch (next_random() % 5) {
                case 0: buf[pos] ^= (unsigned char)(1u << (next_random() % 8)); break;
                case 1: buf[pos] = (unsigned char)next_random(); break;
                case 2:
                    buf[pos] = (unsigned char)interesting[next_random() % (sizeof interesting - 1)];
                    break;
                case 3: len = pos; break; /* truncate */
                case 4:                   /* insert a byte */
                    if (len < sizeof buf) {
                        memmove(buf + pos + 1, buf + pos, len - pos);
                        buf[pos] =
                            (unsigned char)interesting[next_random() % (sizeof interesting - 1)];
                        len++;
                    }
                    break;
                }
            }
            /* An exact-size heap copy so ASan sees any read past the end. */
            unsigned char *exact = malloc(len ? len : 1);
            assert_non_null(exact);
            memcpy(exact, buf, len);
            tg_array a;
            if (tg_npy_read_mem(exact, len, "fuzz.npy", &a) == TG_OK) {
                accepted++;
                assert_true(a.rank >= 0 && a.rank <= TG_MAX_RANK);
                assert_true((size_t)tg_array_count(&a) * tg_dtype_size(a.dtype) <= len);
                tg_array_free(&a);
            } else {
                refused++;
                assert_null(a.data);
                assert_non_null(strstr(tg_last_error(), "fuzz.npy: "));
            }
            free(exact);
        }
    }
    /* Both outcomes must occur, or the mutations are not exercising anything. */
    assert_true(accepted > 0);
    assert_true(refused > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_numpy_f32_f16),
        cmocka_unit_test(test_numpy_integers),
        cmocka_unit_test(test_numpy_shapes_and_versions),
        cmocka_unit_test(test_numpy_refused),
        cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_write_matches_numpy),
        cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_round_trip_file),
        cmocka_unit_test(test_write_refusals),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_malformed_preamble),
        cmocka_unit_test(test_i64_out_of_range),
        cmocka_unit_test(test_python2_long_shape),
        cmocka_unit_test(test_mutation_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
