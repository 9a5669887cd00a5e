/* fuzz_config.c — libFuzzer target: Whisper config.json, and the same bytes
 * as generation_config.json on top of a preset. */
#include <stdint.h>
#include <stdlib.h>

#include "tg_whisper.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    tg_whisper_config c;
    const char *json = (const char *)data;
    if (tg_whisper_config_parse(json, size, "fuzz", &c) == TG_OK) {
        if (c.d_model <= 0 || c.d_model % c.encoder_attention_heads != 0) abort();
        (void)tg_whisper_generation_config_parse(json, size, "fuzz", &c);
    }
    if (tg_whisper_config_preset("tiny", &c) != TG_OK) abort();
    if (tg_whisper_generation_config_parse(json, size, "fuzz", &c) == TG_OK) {
        if (c.n_suppress_tokens > TG_WHISPER_MAX_SUPPRESS ||
            c.n_languages > TG_WHISPER_MAX_LANGUAGES)
            abort();
        for (int i = 0; i < c.n_suppress_tokens; i++)
            if (c.suppress_tokens[i] < 0 || c.suppress_tokens[i] >= c.vocab_size) abort();
    }
    return 0;
}
