/* fuzz_tokenizer.c — libFuzzer target: tokenizer.json from memory. An
 * accepted tokenizer must round-trip a fixed text through encode/decode. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tg_whisper.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tg_tokenizer *t;
    if (tg_tokenizer_parse_json((const char *)data, size, "fuzz", &t) != TG_OK) return 0;
    static const char text[] = "<|endoftext|> Hello, world! It's 2024 \xe4\xb8\x96\xe7\x95\x8c\n\n";
    int32_t *ids;
    int n;
    if (tg_tokenizer_encode(t, text, sizeof text - 1, TG_ENCODE_ALLOW_SPECIAL, &ids, &n) != TG_OK)
        abort();
    char *back;
    size_t len;
    if (tg_tokenizer_decode(t, ids, n, 0, &back, &len) != TG_OK) abort();
    if (len != sizeof text - 1 || memcmp(back, text, len) != 0) abort();
    free(back);
    free(ids);
    tg_tokenizer_free(t);
    return 0;
}
