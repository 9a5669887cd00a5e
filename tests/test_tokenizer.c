/* test_tokenizer.c — byte-level BPE: the three file layouts of the test
 * vocabulary (tests/data/tokenizer, made by make_vocab.py), the GPT-2
 * pre-tokenizer, merges in rank order against hand-worked examples,
 * special tokens, round trips, and malformed files with their messages. */
#define _POSIX_C_SOURCE 200809L /* mkdtemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tg_whisper.h"
#include "models/tokenizer.h"

#define DATA TG_TEST_DATA_DIR "/tokenizer/"

static void assert_contains(const char *msg, const char *want) {
    if (!strstr(msg, want)) fail_msg("message \"%s\" lacks \"%s\"", msg, want);
}

static tg_tokenizer *load(const char *path) {
    tg_tokenizer *t;
    if (tg_tokenizer_load(path, &t) != TG_OK) fail_msg("%s", tg_last_error());
    return t;
}

static int32_t id_of(const tg_tokenizer *t, const char *text) {
    int32_t id = tg_tokenizer_token_id(t, text);
    if (id < 0) fail_msg("no token '%s'", text);
    return id;
}

/* Encodes and compares with the tokens given as texts. */
static void check_encode(const tg_tokenizer *t, const char *text, unsigned flags, int n,
                         const char *const *want) {
    int32_t *ids;
    int n_ids;
    assert_int_equal(tg_tokenizer_encode(t, text, strlen(text), flags, &ids, &n_ids), TG_OK);
    if (n_ids != n) {
        fprintf(stderr, "encode(\"%s\") gave %d ids:", text, n_ids);
        for (int i = 0; i < n_ids; i++) {
            size_t len;
            const char *b = tg_tokenizer_token_bytes(t, ids[i], &len);
            fprintf(stderr, " [%.*s]", (int)len, b);
        }
        fprintf(stderr, "\n");
        fail_msg("want %d ids", n);
    }
    for (int i = 0; i < n; i++) assert_int_equal(ids[i], id_of(t, want[i]));
    free(ids);
}

static void check_round_trip(const tg_tokenizer *t, const char *text, size_t len, unsigned flags) {
    int32_t *ids;
    int n;
    assert_int_equal(tg_tokenizer_encode(t, text, len, flags, &ids, &n), TG_OK);
    char *back;
    size_t back_len;
    assert_int_equal(tg_tokenizer_decode(t, ids, n, 0, &back, &back_len), TG_OK);
    assert_int_equal(back_len, len);
    assert_memory_equal(back, text, len);
    free(back);
    free(ids);
}

/* ---- the pre-tokenizer ---- */

static void check_pieces(const char *text, int n, const char *const *want) {
    size_t len = strlen(text), at = 0;
    for (int i = 0; i < n; i++) {
        size_t k = tg_pretokenize_next(text + at, len - at);
        if (k != strlen(want[i]) || memcmp(text + at, want[i], k) != 0)
            fail_msg("piece %d of \"%s\": got \"%.*s\", want \"%s\"", i, text, (int)k, text + at,
                     want[i]);
        at += k;
    }
    assert_int_equal(at, len);
}

static void test_pretokenizer(void **state) {
    (void)state;
    check_pieces("Hello, world!  It's 2024...\n\n  ok", 11,
                 (const char *[]){"Hello", ",", " world", "!", " ", " It", "'s", " 2024", "...",
                                  "\n\n ", " ok"});
    check_pieces(
        "we're they'll I'd I'M don't", 11,
        (const char *[]){"we", "'re", " they", "'ll", " I", "'d", " I", "'", "M", " don", "'t"});
}

static void test_pretokenizer_more(void **state) {
    (void)state;
    /* "'M" is not a contraction (the pattern is case-sensitive) */
    check_pieces("don't", 2, (const char *[]){"don", "'t"});
    check_pieces("\tx  \n", 3, (const char *[]){"\t", "x", "  \n"});
    /* letters of any script; a combining mark (Mn) is not a letter */
    check_pieces("日本語 テスト cafe\xcc\x81", 4,
                 (const char *[]){"日本語", " テスト", " cafe", "\xcc\x81"});
    /* numbers of any script: Arabic-Indic digits, and ½ (No) */
    check_pieces("x٣٤ ½", 3, (const char *[]){"x", "٣٤", " ½"});
    /* emoji are neither letters nor numbers; U+3000 is whitespace */
    check_pieces("hi 👍🏽!\xe3\x80\x80yo", 4,
                 (const char *[]){"hi", " 👍🏽!", "\xe3\x80\x80", "yo"});
    /* invalid UTF-8 bytes are punctuation */
    check_pieces("a\xff\xfe b", 3, (const char *[]){"a", "\xff\xfe", " b"});
}

/* ---- the byte-level alphabet ---- */

static void test_bytelevel(void **state) {
    (void)state;
    assert_int_equal(tg_bytelevel_char(' '), 0x120);  /* Ġ */
    assert_int_equal(tg_bytelevel_char('\n'), 0x10a); /* Ċ */
    assert_int_equal(tg_bytelevel_char('A'), 'A');
    assert_int_equal(tg_bytelevel_char(0xad), 0x143);
    assert_int_equal(tg_bytelevel_char(0xff), 0xff);
    unsigned char out[8];
    size_t n;
    assert_true(tg_bytelevel_decode("\xc4\xa0the", 5, out, &n)); /* "Ġthe" */
    assert_int_equal(n, 4);
    assert_memory_equal(out, " the", 4);
    assert_false(tg_bytelevel_decode(" x", 2, out, &n));           /* a raw space */
    assert_false(tg_bytelevel_decode("\xe4\xb8\x96", 3, out, &n)); /* 世 */
    assert_false(tg_bytelevel_decode("\xc4", 1, out, &n));         /* truncated */
    /* every byte survives the mapping */
    for (int b = 0; b < 256; b++) {
        uint32_t cp = tg_bytelevel_char((unsigned char)b);
        char utf8[3];
        size_t len = cp < 0x80 ? 1 : 2;
        if (len == 1)
            utf8[0] = (char)cp;
        else {
            utf8[0] = (char)(0xc0 | cp >> 6);
            utf8[1] = (char)(0x80 | (cp & 0x3f));
        }
        assert_true(tg_bytelevel_decode(utf8, len, out, &n));
        assert_int_equal(n, 1);
        assert_int_equal(out[0], b);
    }
}

/* ---- merges in rank order, by hand ---- */

static void test_merges_by_rank(void **state) {
    (void)state;
    const char *files[] = {DATA "tokenizer.json", DATA "tokenizer_pairs.json", DATA};
    for (int f = 0; f < 3; f++) {
        tg_tokenizer *t = load(files[f]);
        /* h e l l o: (h,e) rank 2 < (l,l) 7 -> he l l o -> he ll o -> hell o -> hello */
        check_encode(t, "hello", 0, 1, (const char *[]){"hello"});
        /* Ġ t h e: (Ġ,t) rank 1 first, then (h,e), then (Ġt, he) */
        check_encode(t, " the", 0, 1, (const char *[]){" the"});
        /* h e r: (h,e) rank 2 beats (e,r) rank 6, so not "h" "er" */
        check_encode(t, "her", 0, 2, (const char *[]){"he", "r"});
        /* t h e r: "he" takes the e, "er" never forms */
        check_encode(t, "ther", 0, 3, (const char *[]){"t", "he", "r"});
        /* e r h e: both merge, independent */
        check_encode(t, "erhe", 0, 2, (const char *[]){"er", "he"});
        /* equal pairs merge left to right */
        check_encode(t, "aaa", 0, 2, (const char *[]){"aa", "a"});
        check_encode(t, "aaaaa", 0, 3, (const char *[]){"aa", "aa", "a"});
        /* " a" + "a": (Ġ,a) rank 5 beats (a,a) rank 10 */
        check_encode(t, " aa", 0, 2, (const char *[]){" a", "a"});
        /* pre-tokens never merge across their borders */
        check_encode(t, "hello world", 0, 2, (const char *[]){"hello", " world"});
        check_encode(t, "thing", 0, 3, (const char *[]){"t", "h", "ing"});
        /* multi-byte characters: 世 and 界 are single tokens, 世界 one */
        check_encode(t, "世界", 0, 1, (const char *[]){"世界"});
        check_encode(t, "世 界", 0, 3, (const char *[]){"世", " ", "界"});
        check_encode(t, "\n\n\n", 0, 2, (const char *[]){"\n\n", "\n"});
        check_encode(t, "", 0, 0, NULL);
        tg_tokenizer_free(t);
    }
}

/* ---- special tokens ---- */

static void test_special_tokens(void **state) {
    (void)state;
    tg_tokenizer *t = load(DATA "tokenizer.json");
    assert_int_equal(tg_tokenizer_vocab_size(t), 278 + 58);
    int32_t eot = id_of(t, "<|endoftext|>");
    int32_t sot = id_of(t, "<|startoftranscript|>");
    assert_int_equal(eot, 278);
    assert_int_equal(sot, 279);
    assert_true(tg_tokenizer_is_special(t, sot));
    assert_false(tg_tokenizer_is_special(t, id_of(t, "hello")));
    assert_int_equal(tg_tokenizer_timestamp_id(t, 0.0), id_of(t, "<|0.00|>"));
    assert_int_equal(tg_tokenizer_timestamp_id(t, 0.5), id_of(t, "<|0.50|>"));
    assert_int_equal(tg_tokenizer_timestamp_id(t, 0.509), id_of(t, "<|0.50|>"));
    assert_int_equal(tg_tokenizer_timestamp_id(t, 1.0), id_of(t, "<|1.00|>"));
    assert_int_equal(tg_tokenizer_timestamp_id(t, 1.5), -1);
    assert_int_equal(tg_tokenizer_token_id(t, "<|de|>"), -1);

    const char *text = "<|startoftranscript|><|en|><|transcribe|><|notimestamps|> hello<|0.02|>";
    check_encode(t, text, TG_ENCODE_ALLOW_SPECIAL, 7,
                 (const char *[]){"<|startoftranscript|>", "<|en|>", "<|transcribe|>",
                                  "<|notimestamps|>", " ", "hello", "<|0.02|>"});
    /* not allowed: encoded as text, and no special id appears */
    int32_t *ids;
    int n;
    assert_int_equal(tg_tokenizer_encode(t, text, strlen(text), 0, &ids, &n), TG_OK);
    for (int i = 0; i < n; i++) assert_false(tg_tokenizer_is_special(t, ids[i]));
    free(ids);
    check_round_trip(t, text, strlen(text), 0);
    check_round_trip(t, text, strlen(text), TG_ENCODE_ALLOW_SPECIAL);
    /* a partial special token is text */
    check_round_trip(t, "<|en|<|endoftext", 16, TG_ENCODE_ALLOW_SPECIAL);

    /* decoding can skip special tokens */
    int32_t seq[] = {sot, id_of(t, "<|en|>"), id_of(t, "hello"), id_of(t, " world"), eot};
    char *out;
    size_t len;
    assert_int_equal(tg_tokenizer_decode(t, seq, 5, TG_DECODE_SKIP_SPECIAL, &out, &len), TG_OK);
    assert_string_equal(out, "hello world");
    free(out);
    assert_int_equal(tg_tokenizer_decode(t, seq, 5, 0, &out, &len), TG_OK);
    assert_string_equal(out, "<|startoftranscript|><|en|>hello world<|endoftext|>");
    free(out);
    int32_t bad[] = {1, 5000};
    assert_int_equal(tg_tokenizer_decode(t, bad, 2, 0, &out, &len), TG_ERR_NOT_FOUND);
    assert_contains(tg_last_error(), "ids[1] = 5000 is not a token");
    tg_tokenizer_free(t);
}

/* ---- round trips ---- */

static void test_round_trips(void **state) {
    (void)state;
    const char *texts[] = {
        "The quick brown fox jumps over the lazy dog. It's 3:45pm, isn't it?",
        "  leading and trailing spaces  ",
        "tabs\tand\nnewlines\r\n\r\n\n   \t  mixed   \n",
        "      ",
        "\n",
        "日本語のテキスト、中文文本，한국어 텍스트",
        "世界 世界世界",
        "emoji 👍🏽👨‍👩‍👧 and flags 🇫🇷!",
        "combining: cafe\xcc\x81 n\xcc\x83 A\xcc\x8a\xcc\x81",
        "Ελληνικά και русский текст 123 ٣٤٥ ½",
        "'s 've 're 'll 'd 't 'm ''' '",
        "symbols: @#$%^&*()_+-=[]{}|;':\",./<>?`~",
        "a\xff\xfe\x80 invalid utf-8 \xc3",
    };
    const char *files[] = {DATA "tokenizer.json", DATA};
    for (int f = 0; f < 2; f++) {
        tg_tokenizer *t = load(files[f]);
        for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
            check_round_trip(t, texts[i], strlen(texts[i]), 0);
            check_round_trip(t, texts[i], strlen(texts[i]), TG_ENCODE_ALLOW_SPECIAL);
        }
        /* every byte value, including NUL */
        char all[256];
        for (int b = 0; b < 256; b++) all[b] = (char)b;
        check_round_trip(t, all, 256, 0);
        tg_tokenizer_free(t);
    }
}

/* The three layouts give the same tokenizer. */
static void test_layouts_agree(void **state) {
    (void)state;
    tg_tokenizer *a = load(DATA "tokenizer.json");
    tg_tokenizer *b = load(DATA "tokenizer_pairs.json");
    tg_tokenizer *c;
    assert_int_equal(
        tg_tokenizer_load_files(DATA "vocab.json", DATA "merges.txt", DATA "added_tokens.json", &c),
        TG_OK);
    assert_int_equal(tg_tokenizer_vocab_size(a), tg_tokenizer_vocab_size(c));
    const char *text = "<|en|> the hello world, 世界 aaa\n\n";
    int32_t *ia, *ib, *ic;
    int na, nb, nc;
    assert_int_equal(tg_tokenizer_encode(a, text, strlen(text), 1, &ia, &na), TG_OK);
    assert_int_equal(tg_tokenizer_encode(b, text, strlen(text), 1, &ib, &nb), TG_OK);
    assert_int_equal(tg_tokenizer_encode(c, text, strlen(text), 1, &ic, &nc), TG_OK);
    assert_int_equal(na, nb);
    assert_int_equal(na, nc);
    assert_memory_equal(ia, ib, (size_t)na * sizeof *ia);
    assert_memory_equal(ia, ic, (size_t)na * sizeof *ia);
    assert_int_equal(ia[0], id_of(a, "<|en|>"));
    free(ia);
    free(ib);
    free(ic);
    tg_tokenizer_free(a);
    tg_tokenizer_free(b);
    tg_tokenizer_free(c);
}

/* ---- malformed files ---- */

/* A minimal valid tokenizer.json: 256 byte tokens, optional extra vocab
 * entries, merges and added tokens spliced in as JSON text. */
static char *make_json(const char *model_extra, const char *vocab_extra, const char *merges,
                       const char *added, int skip_byte) {
    size_t cap = 16384;
    char *s = malloc(cap);
    assert_non_null(s);
    size_t o = (size_t)snprintf(s, cap, "{\"added_tokens\": %s, \"model\": {%s \"vocab\": {",
                                added ? added : "[]", model_extra ? model_extra : "");
    for (int b = 0; b < 256; b++) {
        if (b == skip_byte) continue;
        uint32_t cp = tg_bytelevel_char((unsigned char)b);
        char ch[4] = {0};
        if (cp < 0x80)
            ch[0] = (char)cp;
        else {
            ch[0] = (char)(0xc0 | cp >> 6);
            ch[1] = (char)(0x80 | (cp & 0x3f));
        }
        const char *esc = cp == '"' ? "\\\"" : cp == '\\' ? "\\\\" : ch;
        o += (size_t)snprintf(s + o, cap - o, "%s\"%s\": %d", s[o - 1] != '{' ? "," : "", esc, b);
    }
    o += (size_t)snprintf(s + o, cap - o, "%s}, \"merges\": %s}}", vocab_extra ? vocab_extra : "",
                          merges ? merges : "[]");
    return s;
}

typedef struct bad_tok {
    const char *model_extra, *vocab_extra, *merges, *added;
    int skip_byte;
    tg_status status;
    const char *message;
} bad_tok;

static const bad_tok bad_toks[] = {
    {"\"type\": \"WordPiece\",", NULL, NULL, NULL, -1, TG_ERR_UNSUPPORTED,
     "model.type is \"WordPiece\"; tg reads only byte-level \"BPE\""},
    {NULL, ", \"x\": \"7\"", NULL, NULL, -1, TG_ERR_PARSE, "model.vocab['x'] is not an integer id"},
    {NULL, ", \"x\": -1", NULL, NULL, -1, TG_ERR_PARSE, "model.vocab['x'] is not an integer id"},
    {NULL, ", \"x\": 1.5", NULL, NULL, -1, TG_ERR_PARSE, "model.vocab['x'] is not an integer id"},
    {NULL, ", \"世\": 300", NULL, NULL, -1, TG_ERR_PARSE,
     "model.vocab['世'] (id 300) is not text of the byte-level alphabet"},
    {NULL, ", \"ab\": 5", NULL, NULL, -1, TG_ERR_PARSE, "id 5 is both"},
    {NULL, NULL, NULL, NULL, 'q', TG_ERR_PARSE,
     "the vocabulary lacks the token for byte 0x71 (byte-level BPE needs all 256)"},
    {NULL, NULL, "{}", NULL, -1, TG_ERR_PARSE, "model.merges is an object, not an array"},
    {NULL, ", \"ab\": 300", "[\"ab\"]", NULL, -1, TG_ERR_PARSE,
     "model.merges[0]: \"ab\" is not two tokens separated by one space"},
    {NULL, ", \"ab\": 300", "[\"a b c\"]", NULL, -1, TG_ERR_PARSE,
     "is not two tokens separated by one space"},
    {NULL, ", \"ab\": 300", "[\"a b\", \"ab zz\"]", NULL, -1, TG_ERR_PARSE,
     "merge 2 ('ab' 'zz'): 'zz' is not in the vocabulary"},
    {NULL, NULL, "[\"a b\"]", NULL, -1, TG_ERR_PARSE,
     "merge 1 ('a' 'b'): the merged token is not in the vocabulary"},
    {NULL, ", \"ab\": 300", "[[\"a\"]]", NULL, -1, TG_ERR_PARSE,
     "model.merges[0] is an array, not \"a b\" or [\"a\", \"b\"]"},
    {NULL, NULL, NULL, "[{\"id\": 400}]", -1, TG_ERR_PARSE,
     "added_tokens[0] is not {\"id\": integer, \"content\": string"},
    {NULL, NULL, NULL, "{}", -1, TG_ERR_PARSE, "added_tokens is an object, not an array"},
    {NULL, NULL, NULL, "[{\"id\": 400, \"content\": \"a\"}]", -1, TG_ERR_PARSE,
     "token 'a' has two ids, 97 and 400"},
    {NULL, ", \"zz\": 99999999", NULL, NULL, -1, TG_ERR_PARSE,
     "model.vocab['zz'] is not an integer id in [0, 2097151]"},
};

static void test_malformed_json(void **state) {
    (void)state;
    char *good = make_json(NULL, NULL, NULL, NULL, -1);
    tg_tokenizer *t;
    if (tg_tokenizer_parse_json(good, strlen(good), "good.json", &t) != TG_OK)
        fail_msg("%s", tg_last_error());
    tg_tokenizer_free(t);
    free(good);
    for (size_t i = 0; i < sizeof bad_toks / sizeof bad_toks[0]; i++) {
        const bad_tok *c = &bad_toks[i];
        char *s = make_json(c->model_extra, c->vocab_extra, c->merges, c->added, c->skip_byte);
        t = (tg_tokenizer *)&t;
        tg_status status = tg_tokenizer_parse_json(s, strlen(s), "bad.json", &t);
        if (status != c->status)
            fail_msg("case %zu: status %d, want %d: %s", i, status, c->status, tg_last_error());
        assert_null(t);
        assert_contains(tg_last_error(), "bad.json: ");
        assert_contains(tg_last_error(), c->message);
        free(s);
    }
    const char *texts[][2] = {
        {"{\"model\": ", "bad.json: not valid JSON"},
        {"[1]", "bad.json: not a JSON object"},
        {"{\"version\": \"1.0\"}", "bad.json: \"model\" is missing, not an object"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": [], \"merges\": []}}",
         "bad.json: model.vocab is an array, not an object"},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        assert_int_equal(tg_tokenizer_parse_json(texts[i][0], strlen(texts[i][0]), "bad.json", &t),
                         TG_ERR_PARSE);
        assert_contains(tg_last_error(), texts[i][1]);
    }
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_malformed_files(void **state) {
    (void)state;
    char dir[] = "/tmp/tg_tok_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char merges[64], vocab[64], added[64];
    snprintf(merges, sizeof merges, "%s/merges.txt", dir);
    snprintf(vocab, sizeof vocab, "%s/vocab.json", dir);
    snprintf(added, sizeof added, "%s/added_tokens.json", dir);
    tg_tokenizer *t;
    /* nothing there */
    assert_int_equal(tg_tokenizer_load(dir, &t), TG_ERR_NOT_FOUND);
    assert_contains(tg_last_error(), "has neither tokenizer.json nor vocab.json + merges.txt");
    /* a bad merges.txt line, named by number */
    write_text(merges, "#version: 0.2\nĠ t\n\nĠtx\n");
    assert_int_equal(tg_tokenizer_load_files(DATA "vocab.json", merges, NULL, &t), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "merges.txt: line 4: \"Ġtx\" is not two tokens");
    write_text(merges, "Ġ t\nq zz\n");
    assert_int_equal(tg_tokenizer_load_files(DATA "vocab.json", merges, NULL, &t), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "merges.txt: merge 2 ('q' 'zz'): 'zz' is not in the");
    /* vocab.json that is not an object */
    write_text(vocab, "[\"a\"]");
    assert_int_equal(tg_tokenizer_load_files(vocab, DATA "merges.txt", NULL, &t), TG_ERR_PARSE);
    assert_contains(tg_last_error(), "vocab.json: not a JSON object of token: id");
    /* added_tokens.json with a clash */
    write_text(added, "{\"<|en|>\": 3}");
    assert_int_equal(tg_tokenizer_load_files(DATA "vocab.json", DATA "merges.txt", added, &t),
                     TG_ERR_PARSE);
    assert_contains(tg_last_error(), "added_tokens.json: id 3 is both '$' and '<|en|>'");
    /* a missing file */
    assert_int_equal(
        tg_tokenizer_load_files(DATA "vocab.json", "/nonexistent/merges.txt", NULL, &t), TG_ERR_IO);
    assert_contains(tg_last_error(), "/nonexistent/merges.txt: cannot open");
    unlink(merges);
    unlink(vocab);
    unlink(added);
    rmdir(dir);
}

/* Mutated tokenizer.json never crashes (a bounded deterministic loop; the
 * libFuzzer target in tests/fuzz goes further). */
static void test_mutations(void **state) {
    (void)state;
    FILE *f = fopen(DATA "tokenizer_pairs.json", "rb");
    assert_non_null(f);
    char *orig = malloc(1 << 16);
    size_t len = fread(orig, 1, 1 << 16, f);
    fclose(f);
    char *buf = malloc(len);
    uint64_t rng = 99;
    int ok = 0;
    for (int iter = 0; iter < 300; iter++) {
        memcpy(buf, orig, len);
        for (int e = 0; e < 1 + iter % 3; e++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            buf[(rng >> 33) % len] = (char)(rng >> 20);
        }
        tg_tokenizer *t;
        if (tg_tokenizer_parse_json(buf, len, "mut", &t) == TG_OK) {
            ok++;
            check_round_trip(t, "hello world <|en|>", 18, TG_ENCODE_ALLOW_SPECIAL);
            tg_tokenizer_free(t);
        }
    }
    assert_true(ok > 0);
    free(buf);
    free(orig);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pretokenizer),    cmocka_unit_test(test_pretokenizer_more),
        cmocka_unit_test(test_bytelevel),       cmocka_unit_test(test_merges_by_rank),
        cmocka_unit_test(test_special_tokens),  cmocka_unit_test(test_round_trips),
        cmocka_unit_test(test_layouts_agree),   cmocka_unit_test(test_malformed_json),
        cmocka_unit_test(test_malformed_files), cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
