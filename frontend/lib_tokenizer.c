/* lib_tokenizer.c — loading byte-level BPE tokenizers from Hugging Face
 * files: tokenizer.json, or vocab.json + merges.txt (+ added_tokens.json).
 * The files are parsed here; models/tokenizer.c does the BPE. Every error
 * names the file and the entry at fault (docs/formats.md). */
#define _POSIX_C_SOURCE 200809L /* stat */
#include "frontend/safetensors.h"
#include "graph/graph_internal.h"
#include "models/tokenizer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_TOKENIZER_FILE (512u << 20)

/* Prefixes the current error (from models/tokenizer.c) with the file. */
static tg_status wrap(tg_status status, const char *label) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", tg_last_error());
    return tg_set_error_at(status, label, "%s", msg);
}

static bool json_id(const cJSON *item, int32_t *id) {
    if (!cJSON_IsNumber(item)) return false;
    double v = item->valuedouble;
    if (!isfinite(v) || v != floor(v) || v < 0 || v > TG_TOKENIZER_MAX_ID) return false;
    *id = (int32_t)v;
    return true;
}

/* Decodes a byte-level string into a malloc'ed buffer. */
static bool bytelevel(const char *s, unsigned char **out, size_t *n) {
    size_t len = strlen(s);
    *out = malloc(len ? len : 1);
    if (!*out) return false;
    if (!tg_bytelevel_decode(s, len, *out, n)) {
        free(*out);
        *out = NULL;
        return false;
    }
    return true;
}

/* Adds the entries of a {"token": id} object; byte_level: keys are in the
 * byte-level alphabet (vocabularies) or raw text (added tokens). */
static tg_status add_vocab(tg_tokenizer *t, const cJSON *vocab, const char *label, const char *what,
                           bool byte_level, unsigned flags) {
    const cJSON *item;
    cJSON_ArrayForEach(item, vocab) {
        int32_t id;
        if (!json_id(item, &id))
            return tg_set_error_at(TG_ERR_PARSE, label,
                                   "%s['%.60s'] is not an integer id in [0, %d]", what,
                                   item->string, TG_TOKENIZER_MAX_ID);
        tg_status status;
        if (byte_level) {
            unsigned char *bytes;
            size_t n;
            if (!bytelevel(item->string, &bytes, &n))
                return tg_set_error_at(TG_ERR_PARSE, label,
                                       "%s['%.60s'] (id %d) is not text of the byte-level alphabet",
                                       what, item->string, id);
            /* GPT-2's vocab.json holds <|endoftext|> as an ordinary entry;
             * tokens of that shape are special in every BPE vocabulary. */
            size_t k = strlen(item->string);
            unsigned f = flags;
            if (k > 4 && strncmp(item->string, "<|", 2) == 0 &&
                strcmp(item->string + k - 2, "|>") == 0)
                f |= TG_TOKEN_ADDED | TG_TOKEN_SPECIAL;
            status = tg_tokenizer_add_token(t, id, bytes, n, f);
            free(bytes);
        } else {
            status = tg_tokenizer_add_token(t, id, item->string, strlen(item->string), flags);
        }
        if (status != TG_OK) return wrap(status, label);
    }
    return TG_OK;
}

static tg_status add_merge_strings(tg_tokenizer *t, const char *a, const char *b, const char *label,
                                   const char *where) {
    unsigned char *ba, *bb;
    size_t na, nb;
    if (!bytelevel(a, &ba, &na))
        return tg_set_error_at(TG_ERR_PARSE, label, "%s: '%.60s' is not byte-level text", where, a);
    if (!bytelevel(b, &bb, &nb)) {
        free(ba);
        return tg_set_error_at(TG_ERR_PARSE, label, "%s: '%.60s' is not byte-level text", where, b);
    }
    tg_status status = tg_tokenizer_add_merge(t, ba, na, bb, nb);
    free(ba);
    free(bb);
    return status == TG_OK ? TG_OK : wrap(status, label);
}

/* "a b": exactly one space (tokens never hold a space: it is 'Ġ'). */
static tg_status add_merge_line(tg_tokenizer *t, const char *line, const char *label,
                                const char *where) {
    const char *sp = strchr(line, ' ');
    if (!sp || sp == line || !sp[1] || strchr(sp + 1, ' '))
        return tg_set_error_at(TG_ERR_PARSE, label,
                               "%s: \"%.60s\" is not two tokens separated by one space", where,
                               line);
    size_t n = (size_t)(sp - line);
    char *a = malloc(n + 1);
    if (!a) return tg_set_error_at(TG_ERR_NO_MEMORY, label, "out of memory");
    memcpy(a, line, n);
    a[n] = '\0';
    tg_status status = add_merge_strings(t, a, sp + 1, label, where);
    free(a);
    return status;
}

static const char *json_type_name(const cJSON *item) {
    if (!item) return "missing";
    if (cJSON_IsString(item)) return "a string";
    if (cJSON_IsNumber(item)) return "a number";
    if (cJSON_IsArray(item)) return "an array";
    if (cJSON_IsObject(item)) return "an object";
    if (cJSON_IsBool(item)) return "a boolean";
    return "null";
}

static tg_status parse_tokenizer_json(tg_tokenizer *t, const cJSON *root, const char *label) {
    if (!cJSON_IsObject(root)) return tg_set_error_at(TG_ERR_PARSE, label, "not a JSON object");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model))
        return tg_set_error_at(TG_ERR_PARSE, label, "\"model\" is %s, not an object",
                               json_type_name(model));
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (type && !(cJSON_IsString(type) && strcmp(type->valuestring, "BPE") == 0))
        return tg_set_error_at(TG_ERR_UNSUPPORTED, label,
                               "model.type is %s%.40s%s; tg reads only byte-level \"BPE\"",
                               cJSON_IsString(type) ? "\"" : "",
                               cJSON_IsString(type) ? type->valuestring : json_type_name(type),
                               cJSON_IsString(type) ? "\"" : "");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    if (!cJSON_IsObject(vocab))
        return tg_set_error_at(TG_ERR_PARSE, label, "model.vocab is %s, not an object",
                               json_type_name(vocab));
    tg_status status = add_vocab(t, vocab, label, "model.vocab", true, 0);
    if (status != TG_OK) return status;

    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsArray(added) && !cJSON_IsNull(added))
        return tg_set_error_at(TG_ERR_PARSE, label, "added_tokens is %s, not an array",
                               json_type_name(added));
    int k = 0;
    const cJSON *item;
    if (cJSON_IsArray(added)) cJSON_ArrayForEach(item, added) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive(item, "id");
            const cJSON *content = cJSON_GetObjectItemCaseSensitive(item, "content");
            const cJSON *special = cJSON_GetObjectItemCaseSensitive(item, "special");
            int32_t v;
            if (!cJSON_IsObject(item) || !json_id(id, &v) || !cJSON_IsString(content) ||
                (special && !cJSON_IsBool(special)))
                return tg_set_error_at(
                    TG_ERR_PARSE, label,
                    "added_tokens[%d] is not {\"id\": integer, \"content\": string, "
                    "\"special\": boolean}",
                    k);
            unsigned flags = TG_TOKEN_ADDED | (cJSON_IsTrue(special) ? TG_TOKEN_SPECIAL : 0);
            status = tg_tokenizer_add_token(t, v, content->valuestring,
                                            strlen(content->valuestring), flags);
            if (status != TG_OK) return wrap(status, label);
            k++;
        }

    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    if (!cJSON_IsArray(merges))
        return tg_set_error_at(TG_ERR_PARSE, label, "model.merges is %s, not an array",
                               json_type_name(merges));
    k = 0;
    cJSON_ArrayForEach(item, merges) {
        char where[48];
        snprintf(where, sizeof where, "model.merges[%d]", k++);
        if (cJSON_IsString(item)) {
            status = add_merge_line(t, item->valuestring, label, where);
        } else if (cJSON_IsArray(item) && cJSON_GetArraySize(item) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(item, 0)) &&
                   cJSON_IsString(cJSON_GetArrayItem(item, 1))) {
            status = add_merge_strings(t, cJSON_GetArrayItem(item, 0)->valuestring,
                                       cJSON_GetArrayItem(item, 1)->valuestring, label, where);
        } else {
            status = tg_set_error_at(TG_ERR_PARSE, label, "%s is %s, not \"a b\" or [\"a\", \"b\"]",
                                     where, json_type_name(item));
        }
        if (status != TG_OK) return status;
    }
    status = tg_tokenizer_finish(t);
    return status == TG_OK ? TG_OK : wrap(status, label);
}

static cJSON *parse_json(const char *json, size_t len, const char *label, tg_status *status) {
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        if (at >= json && at <= json + len)
            *status = tg_set_error_at(TG_ERR_PARSE, label, "not valid JSON (at byte %ld)",
                                      (long)(at - json));
        else
            *status = tg_set_error_at(TG_ERR_PARSE, label, "not valid JSON");
    }
    return root;
}

tg_status tg_tokenizer_parse_json(const char *json, size_t len, const char *label,
                                  tg_tokenizer **out) {
    if (!label) label = "<memory>";
    if (out) *out = NULL;
    if (!out || (!json && len > 0))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_tokenizer_parse_json: NULL argument");
    tg_status status = TG_OK;
    cJSON *root = parse_json(json ? json : "", len, label, &status);
    if (!root) return status;
    tg_tokenizer *t = tg_tokenizer_new();
    status = t ? parse_tokenizer_json(t, root, label) : TG_ERR_NO_MEMORY;
    cJSON_Delete(root);
    if (status != TG_OK) {
        tg_tokenizer_free(t);
        return status;
    }
    *out = t;
    return TG_OK;
}

static cJSON *read_json_file(const char *path, tg_status *status) {
    char *text;
    size_t len;
    *status = tg_read_whole_file(path, MAX_TOKENIZER_FILE, &text, &len);
    if (*status != TG_OK) return NULL;
    cJSON *root = parse_json(text, len, path, status);
    free(text);
    return root;
}

static tg_status load_merges_txt(tg_tokenizer *t, const char *path) {
    char *text;
    size_t len;
    tg_status status = tg_read_whole_file(path, MAX_TOKENIZER_FILE, &text, &len);
    if (status != TG_OK) return status;
    if (strlen(text) != len) {
        free(text);
        return tg_set_error_at(TG_ERR_PARSE, path, "contains a NUL byte");
    }
    char *line = text;
    for (int lineno = 1; status == TG_OK && *line; lineno++) {
        char *end = strchr(line, '\n');
        char *next = end ? end + 1 : line + strlen(line);
        if (end) *end = '\0';
        size_t n = strlen(line);
        if (n > 0 && line[n - 1] == '\r') line[--n] = '\0';
        /* "#version: 0.2" heads the files GPT-2 and Whisper ship. */
        bool skip = n == 0 || (lineno == 1 && strncmp(line, "#version", 8) == 0);
        if (!skip) {
            char where[32];
            snprintf(where, sizeof where, "line %d", lineno);
            status = add_merge_line(t, line, path, where);
        }
        line = next;
    }
    free(text);
    return status;
}

tg_status tg_tokenizer_load_files(const char *vocab_json, const char *merges_txt,
                                  const char *added_tokens_json, tg_tokenizer **out) {
    if (out) *out = NULL;
    if (!vocab_json || !merges_txt || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_tokenizer_load_files: NULL argument");
    tg_tokenizer *t = tg_tokenizer_new();
    if (!t) return TG_ERR_NO_MEMORY;
    tg_status status;
    cJSON *vocab = read_json_file(vocab_json, &status);
    if (vocab && !cJSON_IsObject(vocab))
        status = tg_set_error_at(TG_ERR_PARSE, vocab_json, "not a JSON object of token: id");
    else if (vocab)
        status = add_vocab(t, vocab, vocab_json, "vocab", true, 0);
    cJSON_Delete(vocab);
    if (status == TG_OK && added_tokens_json) {
        cJSON *added = read_json_file(added_tokens_json, &status);
        if (added && !cJSON_IsObject(added))
            status =
                tg_set_error_at(TG_ERR_PARSE, added_tokens_json, "not a JSON object of token: id");
        else if (added)
            status = add_vocab(t, added, added_tokens_json, "added_tokens", false,
                               TG_TOKEN_ADDED | TG_TOKEN_SPECIAL);
        cJSON_Delete(added);
    }
    if (status == TG_OK) status = load_merges_txt(t, merges_txt);
    if (status == TG_OK && tg_tokenizer_finish(t) != TG_OK) status = wrap(TG_ERR_PARSE, vocab_json);
    if (status != TG_OK) {
        tg_tokenizer_free(t);
        return status;
    }
    *out = t;
    return TG_OK;
}

static bool exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

tg_status tg_tokenizer_load(const char *path, tg_tokenizer **out) {
    if (out) *out = NULL;
    if (!path || !out) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_tokenizer_load: NULL");
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        size_t n = strlen(path) + 32;
        char *json = malloc(n), *vocab = malloc(n), *merges = malloc(n), *added = malloc(n);
        tg_status status = TG_OK;
        if (!json || !vocab || !merges || !added) {
            status = tg_set_error_at(TG_ERR_NO_MEMORY, path, "out of memory");
        } else {
            snprintf(json, n, "%s/tokenizer.json", path);
            snprintf(vocab, n, "%s/vocab.json", path);
            snprintf(merges, n, "%s/merges.txt", path);
            snprintf(added, n, "%s/added_tokens.json", path);
            if (exists(json))
                status = tg_tokenizer_load(json, out);
            else if (exists(vocab) && exists(merges))
                status = tg_tokenizer_load_files(vocab, merges, exists(added) ? added : NULL, out);
            else
                status = tg_set_error_at(TG_ERR_NOT_FOUND, path,
                                         "has neither tokenizer.json nor vocab.json + merges.txt");
        }
        free(json);
        free(vocab);
        free(merges);
        free(added);
        return status;
    }
    char *text;
    size_t len;
    tg_status status = tg_read_whole_file(path, MAX_TOKENIZER_FILE, &text, &len);
    if (status != TG_OK) return status;
    status = tg_tokenizer_parse_json(text, len, path, out);
    free(text);
    return status;
}
