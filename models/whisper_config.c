/* whisper_config.c — Whisper presets with the hyperparameters of the
 * released checkpoints (openai/whisper-*), and the vocabulary layout the
 * special token ids follow from. */
#include "models/whisper_config.h"
#include "graph/graph_internal.h"

#include <stdio.h>
#include <string.h>

const char *const tg_whisper_language_codes[100] = {
    "en", "zh", "de", "es",  "ru", "ko", "fr", "ja", "pt", "tr",  "pl", "ca", "nl", "ar", "sv",
    "it", "id", "hi", "fi",  "vi", "he", "uk", "el", "ms", "cs",  "ro", "da", "hu", "ta", "no",
    "th", "ur", "hr", "bg",  "lt", "la", "mi", "ml", "cy", "sk",  "te", "fa", "lv", "bn", "sr",
    "az", "sl", "kn", "et",  "mk", "br", "eu", "is", "hy", "ne",  "mn", "bs", "kk", "sq", "sw",
    "gl", "mr", "pa", "si",  "km", "sn", "yo", "so", "af", "oc",  "ka", "be", "tg", "sd", "gu",
    "am", "yi", "lo", "uz",  "fo", "ht", "ps", "tk", "nn", "mt",  "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
};

typedef struct preset {
    const char *name;
    int d_model, encoder_layers, decoder_layers, heads, num_mel_bins, vocab_size;
} preset;

/* FFN width is 4 * d_model and heads = d_model / 64 in every release. */
static const preset presets[] = {
    {"tiny", 384, 4, 4, 6, 80, 51865},
    {"tiny.en", 384, 4, 4, 6, 80, 51864},
    {"base", 512, 6, 6, 8, 80, 51865},
    {"base.en", 512, 6, 6, 8, 80, 51864},
    {"small", 768, 12, 12, 12, 80, 51865},
    {"small.en", 768, 12, 12, 12, 80, 51864},
    {"medium", 1024, 24, 24, 16, 80, 51865},
    {"medium.en", 1024, 24, 24, 16, 80, 51864},
    {"large", 1280, 32, 32, 20, 80, 51865},
    {"large-v1", 1280, 32, 32, 20, 80, 51865},
    {"large-v2", 1280, 32, 32, 20, 80, 51865},
    {"large-v3", 1280, 32, 32, 20, 128, 51866},
    {"large-v3-turbo", 1280, 32, 4, 20, 128, 51866},
    {"turbo", 1280, 32, 4, 20, 128, 51866},
};
#define N_PRESETS ((int)(sizeof presets / sizeof presets[0]))

int tg_whisper_preset_count(void) {
    return N_PRESETS;
}

const char *tg_whisper_preset_name(int i) {
    return i >= 0 && i < N_PRESETS ? presets[i].name : NULL;
}

void tg_whisper_fill_vocab_layout(tg_whisper_config *cfg) {
    int n_languages;
    int32_t eot;
    switch (cfg->vocab_size) {
    case 51864: eot = 50256, n_languages = 0; break; /* English-only */
    case 51865: eot = 50257, n_languages = 99; break;
    case 51866: eot = 50257, n_languages = 100; break; /* large-v3 adds <|yue|> */
    default: return;
    }
    /* After <|endoftext|>: <|startoftranscript|>, the languages (99 slots
     * even in English-only models), <|translate|>, <|transcribe|>,
     * <|startoflm|>, <|startofprev|>, <|nospeech|>, <|notimestamps|>, then
     * the timestamps. */
    int32_t sot = eot + 1;
    int32_t translate = sot + 1 + (n_languages ? n_languages : 99);
    cfg->eos_token_id = eot;
    cfg->pad_token_id = eot;
    cfg->bos_token_id = 50257;
    cfg->decoder_start_token_id = sot;
    cfg->translate_token_id = translate;
    cfg->transcribe_token_id = translate + 1;
    cfg->no_timestamps_token_id = translate + 5;
    cfg->is_multilingual = n_languages > 0;
    cfg->n_begin_suppress_tokens = 2;
    cfg->begin_suppress_tokens[0] = 220; /* " " */
    cfg->begin_suppress_tokens[1] = eot;
    cfg->n_languages = n_languages;
    for (int i = 0; i < n_languages; i++) {
        snprintf(cfg->languages[i].token, sizeof cfg->languages[i].token, "<|%s|>",
                 tg_whisper_language_codes[i]);
        cfg->languages[i].id = sot + 1 + i;
    }
}

tg_status tg_whisper_config_preset(const char *name, tg_whisper_config *cfg) {
    if (!name || !cfg)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_config_preset: NULL argument");
    const char *short_name = name;
    if (strncmp(short_name, "openai/", 7) == 0) short_name += 7;
    if (strncmp(short_name, "whisper-", 8) == 0) short_name += 8;
    const preset *p = NULL;
    for (int i = 0; i < N_PRESETS; i++)
        if (strcmp(presets[i].name, short_name) == 0) p = &presets[i];
    if (!p) {
        char names[512];
        size_t used = 0;
        for (int i = 0; i < N_PRESETS && used < sizeof names; i++)
            used += (size_t)snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "",
                                     presets[i].name);
        return tg_set_error(TG_ERR_NOT_FOUND, "unknown Whisper model '%s' (presets: %s)", name,
                            names);
    }
    memset(cfg, 0, sizeof *cfg);
    snprintf(cfg->name, sizeof cfg->name, "%s", p->name);
    cfg->d_model = p->d_model;
    cfg->encoder_layers = p->encoder_layers;
    cfg->decoder_layers = p->decoder_layers;
    cfg->encoder_attention_heads = cfg->decoder_attention_heads = p->heads;
    cfg->encoder_ffn_dim = cfg->decoder_ffn_dim = 4 * p->d_model;
    cfg->num_mel_bins = p->num_mel_bins;
    cfg->max_source_positions = 1500;
    cfg->max_target_positions = 448;
    cfg->vocab_size = p->vocab_size;
    snprintf(cfg->activation_function, sizeof cfg->activation_function, "gelu");
    cfg->scale_embedding = false;
    tg_whisper_fill_vocab_layout(cfg);
    return TG_OK;
}

int32_t tg_whisper_language_id(const tg_whisper_config *cfg, const char *language) {
    if (!cfg || !language) return -1;
    char token[32];
    if (strncmp(language, "<|", 2) == 0)
        snprintf(token, sizeof token, "%s", language);
    else
        snprintf(token, sizeof token, "<|%s|>", language);
    for (int i = 0; i < cfg->n_languages && i < TG_WHISPER_MAX_LANGUAGES; i++)
        if (strcmp(cfg->languages[i].token, token) == 0) return cfg->languages[i].id;
    return -1;
}
