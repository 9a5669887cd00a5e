/* whisper_config.h — what the Whisper presets and the config readers share:
 * the language codes in token order and the vocabulary layout. The public
 * struct and functions are in include/tg_whisper.h. */
#ifndef TG_MODELS_WHISPER_CONFIG_H
#define TG_MODELS_WHISPER_CONFIG_H

#include "tg_whisper.h"

/** Whisper's language codes in token order ("en" is <|en|> = sot + 1);
 *  the first 99 are in every multilingual model, "yue" (the 100th) only in
 *  large-v3 and its descendants. */
extern const char *const tg_whisper_language_codes[100];

/** Fills the special token ids, languages and begin_suppress_tokens that
 *  follow from the vocabulary size (51864: English-only, 51865:
 *  multilingual, 51866: large-v3); leaves them unset (-1 / 0) for other
 *  sizes. */
void tg_whisper_fill_vocab_layout(tg_whisper_config *cfg);

#endif /* TG_MODELS_WHISPER_CONFIG_H */
