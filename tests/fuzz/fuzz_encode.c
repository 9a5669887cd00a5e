/* fuzz_encode.c — libFuzzer target: arbitrary bytes encoded with the test
 * vocabulary (tests/data/tokenizer) must decode to themselves, with and
 * without special tokens. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tg_whisper.h"

static tg_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    if (tg_tokenizer_load(TG_FUZZ_TOKENIZER, &tok) != TG_OK) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    for (unsigned flags = 0; flags < 2; flags++) {
        int32_t *ids;
        int n;
        if (tg_tokenizer_encode(tok, (const char *)data, size, flags, &ids, &n) != TG_OK) abort();
        char *back;
        size_t len;
        if (tg_tokenizer_decode(tok, ids, n, 0, &back, &len) != TG_OK) abort();
        if (len != size || (size && memcmp(back, data, size) != 0)) abort();
        free(back);
        free(ids);
    }
    return 0;
}
