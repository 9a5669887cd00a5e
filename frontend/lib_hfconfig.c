/* lib_hfconfig.c — reading Hugging Face config.json and
 * generation_config.json for Whisper. Strict: every key the model needs
 * must be present with the right JSON type and a sane value, and each
 * error names the file and the key (docs/formats.md lists them). */
#define _POSIX_C_SOURCE 200809L /* stat */
#include "frontend/safetensors.h"
#include "graph/graph_internal.h"
#include "models/whisper_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_CONFIG_FILE (16u << 20)
#define MAX_DIM (1 << 20) /* far above any real Whisper, far below overflow */

static const char *json_type_name(const cJSON *item) {
    if (cJSON_IsString(item)) return "a string";
    if (cJSON_IsNumber(item)) return "a number";
    if (cJSON_IsArray(item)) return "an array";
    if (cJSON_IsObject(item)) return "an object";
    if (cJSON_IsBool(item)) return "a boolean";
    return "null";
}

/* An integer in [lo, hi], checked for type and range. */
static tg_status get_int_item(const cJSON *item, const char *key, long lo, long hi,
                              const char *label, int32_t *out) {
    if (!cJSON_IsNumber(item))
        return tg_set_error_at(TG_ERR_PARSE, label, "\"%s\" is %s, expected an integer", key,
                               json_type_name(item));
    double v = item->valuedouble;
    if (!isfinite(v) || v != floor(v))
        return tg_set_error_at(TG_ERR_PARSE, label, "\"%s\" is %g, expected an integer", key, v);
    if (v < (double)lo || v > (double)hi)
        return tg_set_error_at(TG_ERR_PARSE, label, "\"%s\" is %.0f, expected %ld to %ld", key, v,
                               lo, hi);
    *out = (int32_t)v;
    return TG_OK;
}

static tg_status get_int(const cJSON *root, const char *key, bool required, long lo, long hi,
                         const char *label, int *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!item || (!required && cJSON_IsNull(item))) {
        if (required) return tg_set_error_at(TG_ERR_PARSE, label, "missing key \"%s\"", key);
        return TG_OK;
    }
    int32_t v = 0;
    tg_status status = get_int_item(item, key, lo, hi, label, &v);
    if (status == TG_OK) *out = v;
    return status;
}

static cJSON *parse_object(const char *json, size_t len, const char *label, tg_status *status) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        if (at >= json && at <= json + len)
            *status = tg_set_error_at(TG_ERR_PARSE, label, "not valid JSON (at byte %ld)",
                                      (long)(at - json));
        else
            *status = tg_set_error_at(TG_ERR_PARSE, label, "not valid JSON");
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        *status =
            tg_set_error_at(TG_ERR_PARSE, label, "is %s, not a JSON object", json_type_name(root));
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

static const char *const activations[] = {"gelu", "gelu_new", "gelu_pytorch_tanh",
                                          "relu", "silu",     "swish"};

tg_status tg_whisper_config_parse(const char *json, size_t len, const char *label,
                                  tg_whisper_config *cfg) {
    if (!label) label = "<memory>";
    if (!cfg || (!json && len > 0))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_config_parse: NULL argument");
    tg_whisper_config c;
    memset(&c, 0, sizeof c);
    c.decoder_start_token_id = c.eos_token_id = c.pad_token_id = c.bos_token_id = -1;
    c.no_timestamps_token_id = c.transcribe_token_id = c.translate_token_id = -1;
    snprintf(c.activation_function, sizeof c.activation_function, "gelu");

    tg_status status = TG_OK;
    cJSON *root = parse_object(json ? json : "", len, label, &status);
    if (!root) return status;

    const cJSON *type = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "whisper") == 0))
        status = tg_set_error_at(TG_ERR_UNSUPPORTED, label,
                                 "\"model_type\" is %s%.40s%s, expected \"whisper\"",
                                 cJSON_IsString(type) ? "\"" : "",
                                 cJSON_IsString(type) ? type->valuestring : json_type_name(type),
                                 cJSON_IsString(type) ? "\"" : "");
    struct {
        const char *key;
        int *field;
    } dims[] = {
        {"d_model", &c.d_model},
        {"encoder_layers", &c.encoder_layers},
        {"decoder_layers", &c.decoder_layers},
        {"encoder_attention_heads", &c.encoder_attention_heads},
        {"decoder_attention_heads", &c.decoder_attention_heads},
        {"encoder_ffn_dim", &c.encoder_ffn_dim},
        {"decoder_ffn_dim", &c.decoder_ffn_dim},
        {"num_mel_bins", &c.num_mel_bins},
        {"max_source_positions", &c.max_source_positions},
        {"max_target_positions", &c.max_target_positions},
        {"vocab_size", &c.vocab_size},
    };
    for (size_t i = 0; status == TG_OK && i < sizeof dims / sizeof dims[0]; i++)
        status = get_int(root, dims[i].key, true, 1, MAX_DIM, label, dims[i].field);
    if (status == TG_OK && c.d_model % c.encoder_attention_heads != 0)
        status =
            tg_set_error_at(TG_ERR_PARSE, label,
                            "\"d_model\" %d is not a multiple of \"encoder_attention_heads\" %d",
                            c.d_model, c.encoder_attention_heads);
    if (status == TG_OK && c.d_model % c.decoder_attention_heads != 0)
        status =
            tg_set_error_at(TG_ERR_PARSE, label,
                            "\"d_model\" %d is not a multiple of \"decoder_attention_heads\" %d",
                            c.d_model, c.decoder_attention_heads);
    const char *ids[] = {"decoder_start_token_id", "eos_token_id", "pad_token_id", "bos_token_id"};
    int *id_fields[] = {&c.decoder_start_token_id, &c.eos_token_id, &c.pad_token_id,
                        &c.bos_token_id};
    for (int i = 0; status == TG_OK && i < 4; i++)
        status = get_int(root, ids[i], false, 0, c.vocab_size - 1, label, id_fields[i]);

    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "activation_function");
    if (status == TG_OK && act) {
        bool known = false;
        for (size_t i = 0; cJSON_IsString(act) && i < sizeof activations / sizeof *activations; i++)
            if (strcmp(act->valuestring, activations[i]) == 0) known = true;
        if (!cJSON_IsString(act))
            status = tg_set_error_at(TG_ERR_PARSE, label,
                                     "\"activation_function\" is %s, expected a string",
                                     json_type_name(act));
        else if (!known)
            status = tg_set_error_at(TG_ERR_UNSUPPORTED, label,
                                     "\"activation_function\" \"%.40s\" is not supported (gelu, "
                                     "gelu_new, gelu_pytorch_tanh, relu, silu)",
                                     act->valuestring);
        else
            snprintf(c.activation_function, sizeof c.activation_function, "%s", act->valuestring);
    }
    const cJSON *scale = cJSON_GetObjectItemCaseSensitive(root, "scale_embedding");
    if (status == TG_OK && scale) {
        if (!cJSON_IsBool(scale))
            status = tg_set_error_at(TG_ERR_PARSE, label,
                                     "\"scale_embedding\" is %s, expected a boolean",
                                     json_type_name(scale));
        else
            c.scale_embedding = cJSON_IsTrue(scale);
    }
    cJSON_Delete(root);
    if (status != TG_OK) return status;
    *cfg = c;
    return TG_OK;
}

/* An array of token ids into out[0..cap). */
static tg_status get_id_list(const cJSON *root, const char *key, int vocab, int cap,
                             const char *label, int32_t *out, int *n) {
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!arr || cJSON_IsNull(arr)) return TG_OK;
    if (!cJSON_IsArray(arr))
        return tg_set_error_at(TG_ERR_PARSE, label, "\"%s\" is %s, expected an array of token ids",
                               key, json_type_name(arr));
    int count = cJSON_GetArraySize(arr);
    if (count > cap)
        return tg_set_error_at(TG_ERR_UNSUPPORTED, label,
                               "\"%s\" has %d entries; tg keeps at most %d", key, count, cap);
    int k = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, arr) {
        char where[64];
        snprintf(where, sizeof where, "%s[%d]", key, k);
        tg_status status = get_int_item(item, where, 0, vocab - 1, label, &out[k]);
        if (status != TG_OK) return status;
        k++;
    }
    *n = k;
    return TG_OK;
}

tg_status tg_whisper_generation_config_parse(const char *json, size_t len, const char *label,
                                             tg_whisper_config *cfg) {
    if (!label) label = "<memory>";
    if (!cfg || (!json && len > 0) || cfg->vocab_size <= 0)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_generation_config_parse: NULL argument or no vocab_size");
    tg_status status = TG_OK;
    cJSON *root = parse_object(json ? json : "", len, label, &status);
    if (!root) return status;
    tg_whisper_config c = *cfg; /* changed only if everything parses */
    int vocab = c.vocab_size;
    status = get_id_list(root, "suppress_tokens", vocab, TG_WHISPER_MAX_SUPPRESS, label,
                         c.suppress_tokens, &c.n_suppress_tokens);
    if (status == TG_OK)
        status = get_id_list(root, "begin_suppress_tokens", vocab, TG_WHISPER_MAX_BEGIN_SUPPRESS,
                             label, c.begin_suppress_tokens, &c.n_begin_suppress_tokens);
    if (status == TG_OK)
        status = get_int(root, "no_timestamps_token_id", false, 0, vocab - 1, label,
                         &c.no_timestamps_token_id);
    const char *ids[] = {"decoder_start_token_id", "eos_token_id", "pad_token_id", "bos_token_id"};
    int *id_fields[] = {&c.decoder_start_token_id, &c.eos_token_id, &c.pad_token_id,
                        &c.bos_token_id};
    for (int i = 0; status == TG_OK && i < 4; i++)
        status = get_int(root, ids[i], false, 0, vocab - 1, label, id_fields[i]);
    const cJSON *multi = cJSON_GetObjectItemCaseSensitive(root, "is_multilingual");
    if (status == TG_OK && multi) {
        if (!cJSON_IsBool(multi))
            status = tg_set_error_at(TG_ERR_PARSE, label,
                                     "\"is_multilingual\" is %s, expected a boolean",
                                     json_type_name(multi));
        else
            c.is_multilingual = cJSON_IsTrue(multi);
    }

    const cJSON *langs = cJSON_GetObjectItemCaseSensitive(root, "lang_to_id");
    if (status == TG_OK && langs && !cJSON_IsNull(langs)) {
        if (!cJSON_IsObject(langs))
            status = tg_set_error_at(TG_ERR_PARSE, label,
                                     "\"lang_to_id\" is %s, expected an object of token: id",
                                     json_type_name(langs));
        else if (cJSON_GetArraySize(langs) > TG_WHISPER_MAX_LANGUAGES)
            status = tg_set_error_at(TG_ERR_UNSUPPORTED, label,
                                     "\"lang_to_id\" has %d entries; tg keeps at most %d",
                                     cJSON_GetArraySize(langs), TG_WHISPER_MAX_LANGUAGES);
        c.n_languages = 0;
        const cJSON *item;
        if (status == TG_OK) cJSON_ArrayForEach(item, langs) {
                char where[64];
                snprintf(where, sizeof where, "lang_to_id[\"%.30s\"]", item->string);
                tg_whisper_language *l = &c.languages[c.n_languages];
                if (strlen(item->string) >= sizeof l->token) {
                    status =
                        tg_set_error_at(TG_ERR_PARSE, label, "%s: the token is too long", where);
                    break;
                }
                status = get_int_item(item, where, 0, vocab - 1, label, &l->id);
                if (status != TG_OK) break;
                snprintf(l->token, sizeof l->token, "%s", item->string);
                c.n_languages++;
            }
    }
    const cJSON *tasks = cJSON_GetObjectItemCaseSensitive(root, "task_to_id");
    if (status == TG_OK && tasks && !cJSON_IsNull(tasks)) {
        if (!cJSON_IsObject(tasks))
            status = tg_set_error_at(TG_ERR_PARSE, label,
                                     "\"task_to_id\" is %s, expected an object of task: id",
                                     json_type_name(tasks));
        if (status == TG_OK)
            status =
                get_int(tasks, "transcribe", false, 0, vocab - 1, label, &c.transcribe_token_id);
        if (status == TG_OK)
            status = get_int(tasks, "translate", false, 0, vocab - 1, label, &c.translate_token_id);
    }
    cJSON_Delete(root);
    if (status != TG_OK) return status;
    c.has_generation_config = true;
    *cfg = c;
    return TG_OK;
}

static tg_status parse_file(const char *path, tg_whisper_config *cfg, bool generation) {
    char *text;
    size_t len;
    tg_status status = tg_read_whole_file(path, MAX_CONFIG_FILE, &text, &len);
    if (status != TG_OK) return status;
    status = generation ? tg_whisper_generation_config_parse(text, len, path, cfg)
                        : tg_whisper_config_parse(text, len, path, cfg);
    free(text);
    return status;
}

tg_status tg_whisper_config_load(const char *dir, tg_whisper_config *cfg) {
    if (!dir || !cfg)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_config_load: NULL argument");
    size_t n = strlen(dir) + 32;
    char *config = malloc(n), *generation = malloc(n);
    tg_status status = TG_OK;
    if (!config || !generation) {
        status = tg_set_error(TG_ERR_NO_MEMORY, "%s: out of memory", dir);
    } else {
        snprintf(config, n, "%s/config.json", dir);
        snprintf(generation, n, "%s/generation_config.json", dir);
        tg_whisper_config c;
        struct stat sb;
        status = parse_file(config, &c, false);
        if (status == TG_OK && stat(generation, &sb) == 0)
            status = parse_file(generation, &c, true);
        if (status == TG_OK) *cfg = c;
    }
    free(config);
    free(generation);
    return status;
}
