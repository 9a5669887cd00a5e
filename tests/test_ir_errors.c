/* test_ir_errors.c — malformed text IR: every kind of error is reported
 * as "FILE:LINE:COL: message" with a NULL graph, and thousands of random
 * mutations of valid IR never crash or leak (run under ASan in CI); the
 * mutants that do parse print canonically. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_util.h"
#include "tg.h"

#define H "# tg ir v1\n"
#define P "%x = placeholder \"x\" : f32[2,3]\n" /* line 2 after H */

typedef struct bad_case {
    const char *text;
    const char *where;   /* "LINE" or "LINE:COL" */
    const char *message; /* a substring of the error */
} bad_case;

static const bad_case bad_cases[] = {
    /* header */
    {"", "1:1", "empty input"},
    {"\n  \n", "3:1", "empty input"},
    {"%x = placeholder \"x\" : f32[2]\n", "1:1", "missing header '# tg ir v1'"},
    {"# tg ir v2\n", "1:9", "unsupported IR version 'v2'"},
    {"# tg ir v1 extra\n", "1:12", "unexpected 'e' at the end of the line"},
    /* ops and operands */
    {H P "%y = frobnicate %x : f32[2,3]\n", "3:6", "unknown op 'frobnicate'"},
    {H P "%y = relu %z : f32[2,3]\n", "3:11", "use of undefined value %z"},
    {H P "%y = relu %y : f32[2,3]\n", "3:11", "use of undefined value %y"},
    {H P "%x = relu %x : f32[2,3]\n", "3:1", "redefinition of %x"},
    {H P "%y = add %x : f32[2,3]\n", "3:6", "op 'add' takes 2 operands, got 1"},
    {H P "%y = relu : f32[2,3]\n", "3:6", "op 'relu' takes 1 operand, got 0"},
    {H P "%y = attention %x, %x, %x, %x, %x {scale=1} : f32[2,3]\n", "3",
     "takes 3 to 4 operands, got 5"},
    {H "%y = concat {axis=0} : f32[2]\n", "2", "takes at least 1 operands, got 0"},
    {H P "%y = relu %x, : f32[2,3]\n", "3:15", "expected a %value"},
    {H P "% = relu %x : f32[2,3]\n", "3:1", "empty value name"},
    {H P "y = relu %x : f32[2,3]\n", "3:1", "expected a %value"},
    {H P "%y relu %x : f32[2,3]\n", "3:4", "expected '=' after the value name"},
    {H P "%y = \n", "3:6", "expected an op name"},
    {H P "%y = 12 %x : f32[2,3]\n", "3:6", "expected an op name"},
    {H P "%y = assign %x, %x : f32[2,3]\n", "3", "must be a variable"},
    /* names */
    {H "%x = placeholder : f32[1]\n", "2:18", "needs its name as a quoted string"},
    {H "%x = placeholder \"x : f32[1]\n", "2:18", "unterminated string"},
    {H "%x = placeholder \"a\\qb\" : f32[1]\n", "2:20", "bad escape"},
    {H "%x = placeholder \"a\\x0\" : f32[1]\n", "2:20", "bad escape"},
    {H "%x = placeholder \"a\\x00\" : f32[1]\n", "2:20", "\\x00 is not allowed"},
    {H "%x = placeholder \"a\tb\x01\" : f32[1]\n", "2:22", "control character 0x01"},
    {H "%x = placeholder \"x\" {name=\"y\"} : f32[1]\n", "2",
     "op 'placeholder' has no attribute 'name'"},
    {H P "%y = relu %x {name=\"a\", name=\"b\"} : f32[2,3]\n", "3", "duplicate attribute 'name'"},
    {H P "%y = relu %x {name=3} : f32[2,3]\n", "3", "expected a quoted string"},
    /* types */
    {H P "%y = relu %x\n", "3:13", "expected ':' and the type"},
    {H P "%y = relu %x :\n", "3:15", "expected a dtype"},
    {H "%x = placeholder \"x\" : f33[2]\n", "2:24", "unknown dtype 'f33'"},
    {H "%x = placeholder \"x\" : f32\n", "2", "expected '[' after the dtype"},
    {H "%x = placeholder \"x\" : f32[2,,3]\n", "2:30", "expected a number"},
    {H "%x = placeholder \"x\" : f32[2,3\n", "2:27", "unterminated shape"},
    {H "%x = placeholder \"x\" : f32[2;3]\n", "2:29", "expected ',' or ']' in shape"},
    {H "%x = placeholder \"x\" : f32[1099511627777]\n", "2:28", "too large (max 2^40)"},
    {H "%x = placeholder \"x\" : f32[1048576,1048576,2]\n", "2", "too many elements"},
    {H "%x = placeholder \"x\" : f32[99999999999999999999]\n", "2", "must be an integer"},
    {H "%x = placeholder \"x\" : f32[1,1,1,1,1,1,1]\n", "2:27", "rank exceeds 6"},
    {H "%x = placeholder \"x\" : f32[-2]\n", "2:28", "negative dimension -2"},
    {H "%x = placeholder \"x\" : f32[2.5]\n", "2:28", "must be an integer"},
    {H P "%y = relu %x : f32[2,4]\n", "3",
     "%y: declared type f32[2,4] does not match the inferred type f32[2,3]"},
    {H P "%y = relu %x : i32[2,3]\n", "3", "does not match the inferred type f32[2,3]"},
    {H P "%y = matmul %x, %x : f32[2,2]\n", "3:6", "matmul"},
    /* attributes */
    {H P "%y = add %x, %x {axes=[1]} : f32[2,3]\n", "3:18", "op 'add' has no attribute 'axes'"},
    {H P "%y = permute %x {axes=[1,0]} : f32[3,2]\n", "3", "op 'permute' has no attribute 'axes'"},
    {H "%v = variable \"v\" {has_mask} : f32[2]\n", "2", "has no attribute 'has_mask'"},
    {H P "%y = sum %x {axes=[1], axes=[0]} : f32[2]\n", "3:24", "duplicate attribute 'axes'"},
    {H P "%y = sum %x {axes=1} : f32[2]\n", "3:19", "expected '[' starting a list"},
    {H P "%y = argmax %x {axis=1.5} : i32[2]\n", "3:22", "axis must be an integer"},
    {H P "%y = sum %x {keepdims=1, axes=[1]} : f32[2,1]\n", "3:14", "is a flag"},
    {H P "%y = argmax %x : i32[2]\n", "3", "op 'argmax' requires attribute 'axis'"},
    {H P "%y = conv1d %x, %x {stride=1, padding=0} : f32[2]\n", "3",
     "requires attribute 'dilation'"},
    {H P "%y = sum %x {axes=[1,0 : f32[]\n", "3:24", "expected ',' or ']' in list"},
    {H P "%y = sum %x {axes=[1,0\n", "3:19", "unterminated list"},
    {H P "%y = sum %x {axes=[1] : f32[2]\n", "3:23", "expected ',' or '}' in attributes"},
    {H P "%y = sum %x {axes=[1],\n", "3:13", "unterminated attribute list"},
    {H P "%y = sum %x {axes=[1,2,3,4,5,6,7]} : f32[2]\n", "3", "too many entries in 'axes'"},
    {H P "%y = slice %x {begin=[0,0], end=[1], step=[1,1]} : f32[1,3]\n", "3",
     "'end' has 1 entries but 'begin' has 2"},
    {H P "%y = pad %x {lo=[0,0], hi=[0,0], value=1x} : f32[2,3]\n", "3", "malformed number"},
    {H P "%y = pad %x {lo=[0,0], hi=[0,0], value=0x10} : f32[2,3]\n", "3", "malformed number"},
    {H P "%y = pad %x {lo=[0,0], hi=[0,0], value=} : f32[2,3]\n", "3", "expected a number"},
    {H P "%y = sum %x {9=[1]} : f32[2]\n", "3:14", "expected an attribute name"},
    {H P "%y = sum %x {axes=[1]} : f32[3]\n", "3:26", "does not match the inferred type f32[2]"},
    /* constants */
    {H "%c = constant dense<[1, 2]> : f32[3]\n", "2", "constant has 2 values, its type needs 3"},
    {H "%c = constant dense<[1, 2 : f32[3]\n", "2", "expected ',' or ']' in list"},
    {H "%c = constant dense<[1, 2\n", "2:21", "unterminated list"},
    {H "%c = constant dense<[1]\n", "2", "expected '>' closing the constant"},
    {H "%c = constant hex<\"0000803g\"> : f32[1]\n", "2:19", "bad hex digit"},
    {H "%c = constant hex<\"0000803\"> : f32[1]\n", "2:19", "hex constant has 7 digits"},
    {H "%c = constant hex<0000803f> : f32[1]\n", "2:19", "expected a quoted string"},
    {H "%c = constant dense<[300]> : u8[1]\n", "2:22", "value out of range for u8"},
    {H "%c = constant dense<[-1]> : u8[1]\n", "2:22", "value out of range for u8"},
    {H "%c = constant dense<[128]> : i8[1]\n", "2", "value out of range for i8"},
    {H "%c = constant dense<[2147483648]> : i32[1]\n", "2", "value out of range for i32"},
    {H "%c = constant dense<[1.5]> : i32[1]\n", "2:22", "expected an integer for i32"},
    {H "%c = constant splat<nan> : u8[2]\n", "2", "expected an integer for u8"},
    {H "%c = constant dense<[1e39]> : f32[1]\n", "2", "value out of range for a float"},
    {H "%c = constant splat<1> : f32[?]\n", "2", "cannot have a '?' dimension"},
    {H "%c = constant splat<1> : f32[1073741824]\n", "2", "constant is too large"},
    {H "%c = constant wat<1> : f32[1]\n", "2:15", "unknown constant form 'wat'"},
    {H "%c = constant : f32[1]\n", "2:15", "expected a constant value"},
    {H "%c = constant splat<1> : f32[1] {x}\n", "2:33", "at the end of the line"},
    /* trailing garbage, several lines */
    {H P "%y = relu %x : f32[2,3] extra\n", "3:25", "unexpected 'e' at the end of the line"},
    {H P "%y = relu %x : f32[2,3]]\n", "3:24", "unexpected ']'"},
    {H P "\n# fine\n%y = relu %x : f32[2,3]\n%z = neg %q : f32[2,3]\n", "6:10",
     "use of undefined value %q"},
};

static void test_bad_inputs(void **state) {
    (void)state;
    int failures = 0;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        tg_graph *g = tg_graph_parse(c->text, strlen(c->text), "bad.tgir");
        const char *err = tg_last_error();
        char prefix[64];
        snprintf(prefix, sizeof prefix, "bad.tgir:%s:", c->where);
        bool ok = !g && strncmp(err, prefix, strlen(prefix)) == 0 && strstr(err, c->message);
        if (!ok)
            fprintf(stderr, "case %zu: %s\n  want %s ... %s\n  got  %s\n", i, c->text, prefix,
                    c->message, g ? "(a graph)" : err);
        tg_graph_free(g);
        failures += !ok;
    }
    assert_int_equal(failures, 0);
}

/* The length is honoured (no NUL terminator needed) and NUL bytes inside
 * are errors with their position. */
static void test_nul_and_length(void **state) {
    (void)state;
    const char text[] = "# tg ir v1\n%x = placeholder \"x\"\0 : f32[1]\n";
    tg_graph *g = tg_graph_parse(text, sizeof text - 1, "nul.tgir");
    assert_null(g);
    assert_non_null(strstr(tg_last_error(), "nul.tgir:2:21: NUL byte"));

    /* Cut in the middle of a line: the rest of the buffer is not read. */
    const char *full = H P "%y = relu %x : f32[2,3]\n";
    size_t cut = strlen(H P) + 8; /* "%y = rel" */
    g = tg_graph_parse(full, cut, "cut.tgir");
    assert_null(g);
    assert_non_null(strstr(tg_last_error(), "cut.tgir:3:6: unknown op 'rel'"));

    /* No file name: "<input>" labels the message. */
    g = tg_graph_parse("nope", 4, NULL);
    assert_null(g);
    assert_non_null(strstr(tg_last_error(), "<input>:1:1: missing header"));

    /* NULL text with a length is an argument error, not a crash. */
    assert_null(tg_graph_parse(NULL, 5, "x"));
    g = tg_graph_parse(NULL, 0, "x");
    assert_null(g);
    assert_non_null(strstr(tg_last_error(), "empty input"));
}

static char *read_data_file(const char *name, size_t *len) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", TG_TEST_DATA_DIR, name);
    return tg_test_read_file(path, len);
}

static uint64_t rng_state;
static uint32_t rnd(uint32_t n) {
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33) % n;
}

/* Bytes and tokens that reach the parser's corners. */
static const char *const fuzz_tokens[] = {
    "%x", "%",   "[",   "]",  "{",   "}",     "\"",    "\\",           ",",        "?",     ":",
    "=",  "\n",  "#",   "-",  "1e",  "99999", "nan",   "inf",          "0x",       "\\x0",  "<",
    ">",  "f16", "i32", "u8", "hex", "splat", "dense", "{name=\"a\"}", "keepdims", "axis=",
};

/* One mutant of base: 1-4 random edits. Returns a malloc'ed buffer. */
static char *mutate(const char *base, size_t base_len, size_t *out_len) {
    size_t cap = base_len * 2 + 256, len = base_len;
    char *s = malloc(cap);
    memcpy(s, base, base_len);
    int edits = 1 + (int)rnd(4);
    for (int e = 0; e < edits; e++) {
        size_t at = len ? rnd((uint32_t)len) : 0;
        switch (rnd(6)) {
        case 0: /* flip one byte to anything, NUL and high bytes included */
            if (len) s[at] = (char)rnd(256);
            break;
        case 1: /* flip one byte to a printable character */
            if (len) s[at] = (char)(32 + rnd(95));
            break;
        case 2: { /* delete a short range */
            size_t n = 1 + rnd(8);
            if (at + n > len) n = len - at;
            memmove(s + at, s + at + n, len - at - n);
            len -= n;
            break;
        }
        case 3: { /* duplicate a range (within the capacity left) */
            size_t n = 1 + rnd(40);
            if (at + n > len) n = len - at;
            if (len + n > cap) break;
            memmove(s + at + n, s + at, len - at);
            len += n;
            break;
        }
        case 4: { /* insert a token */
            const char *tok = fuzz_tokens[rnd(sizeof fuzz_tokens / sizeof fuzz_tokens[0])];
            size_t n = strlen(tok);
            if (len + n > cap) break;
            memmove(s + at + n, s + at, len - at);
            memcpy(s + at, tok, n);
            len += n;
            break;
        }
        default: /* truncate */ len = at; break;
        }
    }
    *out_len = len;
    return s;
}

static void fuzz_file(const char *name, int iterations, uint64_t seed) {
    size_t base_len;
    char *base = read_data_file(name, &base_len);
    assert_non_null(base);
    rng_state = seed;
    int parsed = 0, rejected = 0;
    for (int it = 0; it < iterations; it++) {
        size_t len;
        char *text = mutate(base, base_len, &len);
        tg_graph *g = tg_graph_parse(text, len, name);
        if (g) {
            /* Whatever parses prints canonically and reparses to the same text. */
            parsed++;
            char *printed = tg_graph_to_text(g);
            assert_non_null(printed);
            tg_graph *g2 = tg_graph_parse(printed, strlen(printed), "reprinted");
            if (!g2) fprintf(stderr, "reparse failed: %s\n%s\n", tg_last_error(), printed);
            assert_non_null(g2);
            char *printed2 = tg_graph_to_text(g2);
            assert_string_equal(printed, printed2);
            free(printed);
            free(printed2);
            tg_graph_free(g2);
            tg_graph_free(g);
        } else {
            rejected++;
            /* Every error names the file and a position. */
            const char *err = tg_last_error();
            assert_int_equal(strncmp(err, name, strlen(name)), 0);
            assert_true(err[strlen(name)] == ':');
        }
        free(text);
    }
    /* Both outcomes happen, so the loop is not vacuous. */
    assert_true(parsed > 0);
    assert_true(rejected > iterations / 4);
    free(base);
}

static void test_fuzz_mlp(void **state) {
    (void)state;
    fuzz_file("mlp.tgir", 3000, 1);
}

static void test_fuzz_every_op(void **state) {
    (void)state;
    fuzz_file("every_op.tgir", 2000, 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_nul_and_length),
        cmocka_unit_test(test_fuzz_mlp),
        cmocka_unit_test(test_fuzz_every_op),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
