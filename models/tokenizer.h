/* tokenizer.h — byte-level BPE (GPT-2, Whisper) on bytes: building a
 * tokenizer from tokens and merges, and the GPT-2 byte <-> unicode mapping.
 *
 * The public API (loading files, encode, decode) is in include/tg_whisper.h;
 * frontend/lib_tokenizer.c parses the files and builds the tokenizer with
 * the functions here. Tokens are raw bytes: vocabulary strings are decoded
 * from the byte-level alphabet before they arrive here. */
#ifndef TG_MODELS_TOKENIZER_H
#define TG_MODELS_TOKENIZER_H

#include "tg_whisper.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Ids are in [0, TG_TOKENIZER_MAX_ID]: enough for any real vocabulary,
 *  and a bound on what an untrusted file can make us allocate. */
#define TG_TOKENIZER_MAX_ID ((1 << 21) - 1)

/** Flags of a token. */
enum {
    TG_TOKEN_ADDED = 1 << 0,   /* matched in text before BPE (added_tokens) */
    TG_TOKEN_SPECIAL = 1 << 1, /* only matched when allowed; skippable in decode */
};

tg_tokenizer *tg_tokenizer_new(void);
/** Adds a token. The same bytes under another id, or another token under
 *  the same id, is an error; re-adding an identical token only adds flags. */
tg_status tg_tokenizer_add_token(tg_tokenizer *t, int32_t id, const void *bytes, size_t len,
                                 unsigned flags);
/** Adds the next merge (ranks follow the order of calls): the tokens `a`
 *  and `b` and their concatenation must all be tokens already. A repeated
 *  pair keeps its first rank. */
tg_status tg_tokenizer_add_merge(tg_tokenizer *t, const void *a, size_t alen, const void *b,
                                 size_t blen);
/** Checks the tokenizer is usable (every single byte is a token) and
 *  indexes the added tokens. Call once, after adding everything. */
tg_status tg_tokenizer_finish(tg_tokenizer *t);

/** Decodes a string of the GPT-2 byte-level alphabet (UTF-8 text whose
 *  every character stands for one byte) into bytes. `out` needs `len`
 *  bytes. Returns false if a character is not in the alphabet or the
 *  UTF-8 is malformed. */
bool tg_bytelevel_decode(const char *s, size_t len, unsigned char *out, size_t *out_len);
/** The character standing for byte b (a code point < 512). */
uint32_t tg_bytelevel_char(unsigned char b);

/** Splits text into pre-tokens by the GPT-2 pattern
 *  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *  Returns the length in bytes of the pre-token starting at text[0]
 *  (>= 1 if len >= 1). Bytes that are not valid UTF-8 count as
 *  punctuation, one byte each. */
size_t tg_pretokenize_next(const char *text, size_t len);

/* Unicode classes (models/tokenizer_unicode.c). */
bool tg_unicode_is_letter(uint32_t cp);
bool tg_unicode_is_number(uint32_t cp);
bool tg_unicode_is_space(uint32_t cp);

#endif /* TG_MODELS_TOKENIZER_H */
