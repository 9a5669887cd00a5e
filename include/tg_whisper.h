/*
 * tg_whisper.h — Whisper on tg: model configuration and the tokenizer.
 *
 * Configurations come from a Hugging Face model directory (config.json and,
 * when present, generation_config.json) or from presets with the real
 * hyperparameters ("tiny", "base.en", "large-v3-turbo", ...). The tokenizer
 * is byte-level BPE as in GPT-2, loaded from tokenizer.json or from
 * vocab.json + merges.txt (+ added_tokens.json). Files are untrusted input;
 * errors name the file, the key and what was expected (docs/formats.md).
 */
#ifndef TG_WHISPER_H
#define TG_WHISPER_H

#include "tg.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ */
/* Configuration                                                       */
/* ------------------------------------------------------------------ */

#define TG_WHISPER_MAX_SUPPRESS 512
#define TG_WHISPER_MAX_BEGIN_SUPPRESS 16
#define TG_WHISPER_MAX_LANGUAGES 128

/** A language token of generation_config.json's lang_to_id. */
typedef struct tg_whisper_language {
    char token[24]; /* "<|en|>" */
    int32_t id;
} tg_whisper_language;

typedef struct tg_whisper_config {
    char name[32]; /* the preset name, or "" when read from a file */
    int d_model;
    int encoder_layers, decoder_layers;
    int encoder_attention_heads, decoder_attention_heads;
    int encoder_ffn_dim, decoder_ffn_dim;
    int num_mel_bins;         /* 80; 128 for large-v3 */
    int max_source_positions; /* 1500 encoder frames (30 s) */
    int max_target_positions; /* 448 decoder tokens */
    int vocab_size;
    char activation_function[16]; /* "gelu" */
    bool scale_embedding;
    /* special tokens */
    int32_t decoder_start_token_id, eos_token_id, pad_token_id, bos_token_id;

    /* From generation_config.json (presets fill what follows from the
     * vocabulary layout; -1 / 0 entries when unknown). */
    bool has_generation_config;
    bool is_multilingual;
    int32_t no_timestamps_token_id;
    int32_t transcribe_token_id, translate_token_id; /* task_to_id */
    int n_suppress_tokens;
    int32_t suppress_tokens[TG_WHISPER_MAX_SUPPRESS];
    int n_begin_suppress_tokens;
    int32_t begin_suppress_tokens[TG_WHISPER_MAX_BEGIN_SUPPRESS];
    int n_languages;
    tg_whisper_language languages[TG_WHISPER_MAX_LANGUAGES];
} tg_whisper_config;

/** Fills *cfg with a preset: tiny, base, small, medium (and tiny.en,
 *  base.en, small.en, medium.en), large (= large-v1), large-v1, large-v2,
 *  large-v3, large-v3-turbo (also "turbo"). A "openai/whisper-" prefix is
 *  accepted. TG_ERR_NOT_FOUND lists the names for an unknown one. */
tg_status tg_whisper_config_preset(const char *name, tg_whisper_config *cfg);
/** Number of presets and the name of the i-th (for --help and tests). */
int tg_whisper_preset_count(void);
const char *tg_whisper_preset_name(int i);

/** Reads a model directory: config.json, and generation_config.json when
 *  it exists. */
tg_status tg_whisper_config_load(const char *dir, tg_whisper_config *cfg);
/** Parses config.json text (`label` names it in errors). Keys the model
 *  needs are required; each must have the right JSON type and range. */
tg_status tg_whisper_config_parse(const char *json, size_t len, const char *label,
                                  tg_whisper_config *cfg);
/** Parses generation_config.json text into an already parsed config. */
tg_status tg_whisper_generation_config_parse(const char *json, size_t len, const char *label,
                                             tg_whisper_config *cfg);
/** The id of a language token ("en" or "<|en|>"), or -1. */
int32_t tg_whisper_language_id(const tg_whisper_config *cfg, const char *language);

/* ------------------------------------------------------------------ */
/* Tokenizer                                                           */
/* ------------------------------------------------------------------ */

typedef struct tg_tokenizer tg_tokenizer;

/** Loads `path`: a tokenizer.json file, or a directory holding
 *  tokenizer.json, else vocab.json + merges.txt (+ added_tokens.json). */
tg_status tg_tokenizer_load(const char *path, tg_tokenizer **out);
/** Loads vocab.json + merges.txt; added_tokens_json may be NULL. */
tg_status tg_tokenizer_load_files(const char *vocab_json, const char *merges_txt,
                                  const char *added_tokens_json, tg_tokenizer **out);
/** Parses tokenizer.json text already in memory (`label` names it). */
tg_status tg_tokenizer_parse_json(const char *json, size_t len, const char *label,
                                  tg_tokenizer **out);
void tg_tokenizer_free(tg_tokenizer *t);

/** One more than the largest id. */
int tg_tokenizer_vocab_size(const tg_tokenizer *t);
/** The id of the token whose text is exactly `text` (a special token such
 *  as "<|en|>", or a vocabulary entry as raw bytes), or -1. */
int32_t tg_tokenizer_token_id(const tg_tokenizer *t, const char *text);
/** A token's raw bytes (not NUL-terminated; *len receives the length), or
 *  NULL for an id that is no token. */
const char *tg_tokenizer_token_bytes(const tg_tokenizer *t, int32_t id, size_t *len);
bool tg_tokenizer_is_special(const tg_tokenizer *t, int32_t id);
/** The id of the timestamp token <|s.ss|> nearest `seconds`, or -1. */
int32_t tg_tokenizer_timestamp_id(const tg_tokenizer *t, double seconds);

enum {
    /** Special tokens written in the text ("<|en|>") become single
     *  tokens; without this flag they are encoded as ordinary text. */
    TG_ENCODE_ALLOW_SPECIAL = 1 << 0,
};
/** Encodes `len` bytes of text. *ids is malloc'ed (free() it). */
tg_status tg_tokenizer_encode(const tg_tokenizer *t, const char *text, size_t len, unsigned flags,
                              int32_t **ids, int *n_ids);

enum {
    /** Leave special tokens out of decoded text. */
    TG_DECODE_SKIP_SPECIAL = 1 << 0,
};
/** Decodes ids to bytes (usually UTF-8; a cut in the middle of a character
 *  gives its bytes as they are). *text is malloc'ed and NUL-terminated. */
tg_status tg_tokenizer_decode(const tg_tokenizer *t, const int32_t *ids, int n_ids, unsigned flags,
                              char **text, size_t *len);

#ifdef __cplusplus
}
#endif
#endif /* TG_WHISPER_H */
