/* cli_train.c — `graph train`: trains Whisper on a JSON Lines manifest,
 * evaluates (loss, greedy decoding, WER/CER), writes Hugging Face
 * compatible checkpoints that resume exactly, metrics.jsonl and a plot.
 * docs/training.md describes it. */
#define _POSIX_C_SOURCE 200809L
#include "frontend/cli.h"
#include "frontend/manifest.h"
#include "frontend/metrics.h"
#include "frontend/safetensors.h"
#include "models/tokenizer.h"
#include "models/whisper_train.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char cli_train_help[] =
    "usage: graph train --train MANIFEST --out DIR [options]\n"
    "\n"
    "Trains Whisper with teacher forcing on a JSON Lines manifest of\n"
    "{\"audio\": PATH, \"text\": TEXT} records (paths relative to the manifest).\n"
    "The training step (forward, cross-entropy, gradients, clipping, AdamW) is\n"
    "one executable compiled once; log-Mels are computed once on the device and\n"
    "cached in DIR/cache. Checkpoints are Hugging Face model directories plus\n"
    "optimizer state; --resume continues exactly. Ctrl-C saves a checkpoint.\n"
    "\n"
    "  --train MANIFEST       training data\n"
    "  --eval MANIFEST        evaluation data: loss, greedy WER/CER\n"
    "  --out DIR              output directory (checkpoints, metrics.jsonl, plot)\n"
    "  --config NAME|PATH     a preset (tiny, base, ...), a model directory or a\n"
    "                         config.json; with --init, its config is used\n"
    "  --init DIR             start from this checkpoint's weights (else random)\n"
    "  --tokenizer PATH|bytes tokenizer.json / a directory, or 'bytes': a\n"
    "                         byte-level vocabulary (256 bytes + special tokens)\n"
    "  --resume DIR           continue from a checkpoint (or the newest in DIR)\n"
    "  --steps N              optimizer steps in all (1000)\n"
    "  --batch-size N         utterances per step (16)\n"
    "  --max-tokens N         decoder positions per utterance (64)\n"
    "  --window-seconds S     encoder window: S*50 positions (default: the config's)\n"
    "  --lr X                 peak learning rate (1e-3)\n"
    "  --warmup N             linear warm-up steps (100)\n"
    "  --schedule linear|cosine  decay after warm-up (linear)\n"
    "  --weight-decay X       AdamW weight decay of matrices (0.01)\n"
    "  --max-grad-norm X      global-norm clipping, 0 = off (1.0)\n"
    "  --freeze-encoder       train the decoder only\n"
    "  --label-smoothing X    X in [0, 1): the loss is (1-X) * cross-entropy + X *\n"
    "                         the mean over the vocabulary of -log p, as PyTorch's\n"
    "                         cross_entropy(label_smoothing=X) (0: off)\n"
    "  --grad-accum N         micro-batches per optimizer step (1)\n"
    "  --precision f32|f16    f16: matmuls read f16 (f32 accumulation), master\n"
    "                         weights and optimizer state f32, dynamic loss scaling\n"
    "  --loss-scale X         f16: the initial loss scale (65536)\n"
    "  --scale-growth N       f16: double the scale after N good steps (2000)\n"
    "  --buckets S1,S2,...    length buckets in seconds (default: 1/6, 1/3, 2/3 of\n"
    "                         the window, as 5, 10, 20 s of 30); the full window\n"
    "                         is always the last; the default from random init\n"
    "  --pad-to-30s           pad every batch to the full window (no buckets): the\n"
    "                         default with --init, as the model was pretrained\n"
    "  --seed N               initialisation and data order (1)\n"
    "  --language CODE        the language token of the labels (en)\n"
    "  --eval-every N         evaluate every N steps (0: at the end only)\n"
    "  --eval-limit N         decode at most N eval utterances (all)\n"
    "  --save-every N         checkpoint every N steps (0: at the end only)\n"
    "  --keep N               checkpoints kept besides the best (2)\n"
    "  --log-every N          progress line and metrics every N steps (10)\n"
    "  --print-eval N         print N eval transcriptions with their truth (0)\n";

/* ------------------------------------------------------------------ */
/* Options                                                             */
/* ------------------------------------------------------------------ */

typedef struct options {
    const char *train, *eval, *out, *config, *init, *tokenizer, *resume, *language, *schedule;
    int steps, batch, max_tokens, warmup, eval_every, eval_limit, save_every, keep, log_every;
    int print_eval, grad_accum, scale_growth;
    double window_seconds, lr, weight_decay, max_grad_norm, loss_scale, label_smoothing;
    bool freeze_encoder;
    const char *precision, *buckets;
    int pad_to_window; /* 1: --pad-to-30s, 0: buckets, -1: the default */
    uint64_t seed;
} options;

/* snprintf through vsnprintf: paths are bounded by their buffers and
 * truncation is checked where it matters (gcc's warning does not apply). */
static void fmt(char *buf, size_t size, const char *f, ...) __attribute__((format(printf, 3, 4)));
static void fmt(char *buf, size_t size, const char *f, ...) {
    va_list ap;
    va_start(ap, f);
    vsnprintf(buf, size, f, ap);
    va_end(ap);
}

static volatile sig_atomic_t interrupted = 0;
static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int parse_options(int argc, char **argv, options *o) {
    memset(o, 0, sizeof *o);
    o->config = "tiny";
    o->tokenizer = NULL;
    o->language = "en";
    o->schedule = "linear";
    o->steps = 1000;
    o->batch = 16;
    o->max_tokens = 64;
    o->warmup = 100;
    o->save_every = 0;
    o->keep = 2;
    o->log_every = 10;
    o->eval_limit = -1;
    o->grad_accum = 1;
    o->lr = 1e-3;
    o->weight_decay = 0.01;
    o->max_grad_norm = 1.0;
    o->seed = 1;
    o->precision = "f32";
    o->loss_scale = 65536.0;
    o->scale_growth = 2000;
    o->pad_to_window = -1;
    for (int i = 1; i < argc;) {
        const char *v = NULL;
        int r;
#define STR(name, field)                                                                           \
    if ((r = cli_take_value("train", argc, argv, &i, name, &v)) != 0) {                            \
        if (r < 0) return CLI_USAGE;                                                               \
        o->field = v;                                                                              \
        continue;                                                                                  \
    }
#define NUM(name, field, conv)                                                                     \
    if ((r = cli_take_value("train", argc, argv, &i, name, &v)) != 0) {                            \
        if (r < 0) return CLI_USAGE;                                                               \
        char *end;                                                                                 \
        errno = 0;                                                                                 \
        double x = strtod(v, &end);                                                                \
        if (errno || *end || end == v || !isfinite(x))                                             \
            return cli_usage_error("train", "%s: '%s' is not a number", name, v);                  \
        o->field = conv;                                                                           \
        continue;                                                                                  \
    }
        STR("--train", train)
        STR("--eval", eval)
        STR("--out", out)
        STR("--config", config)
        STR("--init", init)
        STR("--tokenizer", tokenizer)
        STR("--resume", resume)
        STR("--language", language)
        STR("--schedule", schedule)
        STR("--precision", precision)
        STR("--buckets", buckets)
        NUM("--loss-scale", loss_scale, x)
        NUM("--scale-growth", scale_growth, (int)x)
        NUM("--steps", steps, (int)x)
        NUM("--batch-size", batch, (int)x)
        NUM("--max-tokens", max_tokens, (int)x)
        NUM("--warmup", warmup, (int)x)
        NUM("--eval-every", eval_every, (int)x)
        NUM("--eval-limit", eval_limit, (int)x)
        NUM("--save-every", save_every, (int)x)
        NUM("--keep", keep, (int)x)
        NUM("--log-every", log_every, (int)x)
        NUM("--print-eval", print_eval, (int)x)
        NUM("--grad-accum", grad_accum, (int)x)
        NUM("--window-seconds", window_seconds, x)
        NUM("--lr", lr, x)
        NUM("--weight-decay", weight_decay, x)
        NUM("--max-grad-norm", max_grad_norm, x)
        NUM("--label-smoothing", label_smoothing, x)
        NUM("--seed", seed, (uint64_t)x)
#undef STR
#undef NUM
        if (strcmp(argv[i], "--freeze-encoder") == 0) {
            o->freeze_encoder = true;
            i++;
            continue;
        }
        if (strcmp(argv[i], "--pad-to-30s") == 0 || strcmp(argv[i], "--pad-to-window") == 0) {
            o->pad_to_window = 1;
            i++;
            continue;
        }
        return cli_usage_error("train", "unknown argument '%s'", argv[i]);
    }
    if (!o->train && !o->resume) return cli_usage_error("train", "--train MANIFEST is required");
    if (!o->out && !o->resume) return cli_usage_error("train", "--out DIR is required");
    if (o->steps < 1 || o->batch < 1 || o->max_tokens < 8 || o->warmup < 0 || o->keep < 1 ||
        o->log_every < 1 || o->grad_accum < 1 || o->eval_every < 0 || o->save_every < 0 ||
        !(o->lr > 0) || o->window_seconds < 0 || o->weight_decay < 0 || o->max_grad_norm < 0)
        return cli_usage_error("train", "a numeric option is out of range");
    if (!(o->label_smoothing >= 0 && o->label_smoothing < 1))
        return cli_usage_error("train", "--label-smoothing must be in [0, 1), not %g",
                               o->label_smoothing);
    if (strcmp(o->schedule, "linear") != 0 && strcmp(o->schedule, "cosine") != 0)
        return cli_usage_error("train", "--schedule is linear or cosine, not '%s'", o->schedule);
    if (strcmp(o->precision, "f32") != 0 && strcmp(o->precision, "f16") != 0)
        return cli_usage_error("train", "--precision is f32 or f16, not '%s'", o->precision);
    if (!(o->loss_scale > 0) || o->scale_growth < 1)
        return cli_usage_error("train", "--loss-scale must be > 0, --scale-growth >= 1");
    if (o->buckets) {
        if (o->pad_to_window == 1)
            return cli_usage_error("train", "--buckets and --pad-to-30s exclude each other");
        o->pad_to_window = 0;
    }
    return CLI_OK;
}

/* ------------------------------------------------------------------ */
/* Files                                                               */
/* ------------------------------------------------------------------ */

static bool is_dir(const char *p) {
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static bool write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return false;
    bool ok = fputs(text, f) >= 0;
    ok = fflush(f) == 0 && ok;
    ok = fsync(fileno(f)) == 0 && ok;
    return fclose(f) == 0 && ok;
}

static bool write_json(const char *path, cJSON *j) {
    char *s = cJSON_Print(j);
    bool ok = s && write_file(path, s);
    free(s);
    return ok;
}

static bool copy_file(const char *from, const char *to) {
    size_t len;
    char *buf;
    if (tg_read_whole_file(from, (size_t)1 << 30, &buf, &len) != TG_OK) return false;
    FILE *f = fopen(to, "wb");
    bool ok = f && fwrite(buf, 1, len, f) == len;
    if (f) ok = fclose(f) == 0 && ok;
    free(buf);
    return ok;
}

static void remove_tree(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        fmt(p, sizeof p, "%s/%s", dir, e->d_name);
        if (is_dir(p))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static void fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

/* ------------------------------------------------------------------ */
/* The byte-level tokenizer                                            */
/* ------------------------------------------------------------------ */

static const char *const byte_specials[] = {
    "<|endoftext|>", "<|startoftranscript|>", "<|en|>",       "<|translate|>",   "<|transcribe|>",
    "<|startoflm|>", "<|startofprev|>",       "<|nospeech|>", "<|notimestamps|>"};
#define N_BYTE_SPECIALS 9

/* tokenizer.json text of the byte-level vocabulary: ids 0..255 are the
 * bytes (in GPT-2's byte-level alphabet), then the special tokens. */
static char *byte_tokenizer_json(void) {
    cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject(),
          *vocab = cJSON_CreateObject();
    cJSON *added = cJSON_CreateArray();
    cJSON_AddStringToObject(root, "version", "1.0");
    for (int b = 0; b < 256; b++) {
        uint32_t cp = tg_bytelevel_char((unsigned char)b);
        char s[4] = {0};
        if (cp < 0x80)
            s[0] = (char)cp;
        else {
            s[0] = (char)(0xC0 | (cp >> 6));
            s[1] = (char)(0x80 | (cp & 0x3F));
        }
        cJSON_AddNumberToObject(vocab, s, b);
    }
    for (int i = 0; i < N_BYTE_SPECIALS; i++) {
        cJSON *t = cJSON_CreateObject();
        cJSON_AddNumberToObject(t, "id", 256 + i);
        cJSON_AddStringToObject(t, "content", byte_specials[i]);
        cJSON_AddBoolToObject(t, "special", true);
        cJSON_AddItemToArray(added, t);
        cJSON_AddNumberToObject(vocab, byte_specials[i], 256 + i);
    }
    cJSON_AddItemToObject(root, "added_tokens", added);
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", cJSON_CreateArray());
    cJSON_AddItemToObject(root, "model", model);
    char *s = cJSON_Print(root);
    cJSON_Delete(root);
    return s;
}

/* ------------------------------------------------------------------ */
/* Training state                                                      */
/* ------------------------------------------------------------------ */

typedef struct trainer_state {
    int step;         /* optimizer steps done */
    int64_t position; /* samples consumed of the data order */
    uint64_t seed;
    double best_wer, best_loss; /* the best checkpoint: lowest WER, then eval loss */
    int best_step;
    tg_whisper_loss_scaler scaler; /* f16 loss scaling (scale 0: not restored) */
} trainer_state;

typedef struct run {
    options o;
    tg_whisper_config cfg;
    tg_tokenizer *tok;
    char *tokenizer_json;      /* the byte-level tokenizer's text, or NULL */
    const char *tokenizer_dir; /* copy its files into checkpoints */
    int32_t sot, lang, transcribe, notimestamps, eot;
    tg_device *dev;
    tg_store *store;
    tg_whisper_trainer *trainer; /* the full window: evaluation, and padded batches */
    /* length buckets (NULL: every batch padded to the window); bucket i
     * trains with bucket_trainer[i] (which may be `trainer`) */
    tg_whisper_buckets *buckets;
    tg_whisper_trainer **bucket_trainer;
    tg_dataset *train, *eval;
    trainer_state state;
    FILE *metrics;
    char out[2048];
} run;

static cJSON *config_json(const tg_whisper_config *c) {
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "model_type", "whisper");
    cJSON *arch = cJSON_CreateArray();
    cJSON_AddItemToArray(arch, cJSON_CreateString("WhisperForConditionalGeneration"));
    cJSON_AddItemToObject(j, "architectures", arch);
    cJSON_AddNumberToObject(j, "d_model", c->d_model);
    cJSON_AddNumberToObject(j, "encoder_layers", c->encoder_layers);
    cJSON_AddNumberToObject(j, "decoder_layers", c->decoder_layers);
    cJSON_AddNumberToObject(j, "encoder_attention_heads", c->encoder_attention_heads);
    cJSON_AddNumberToObject(j, "decoder_attention_heads", c->decoder_attention_heads);
    cJSON_AddNumberToObject(j, "encoder_ffn_dim", c->encoder_ffn_dim);
    cJSON_AddNumberToObject(j, "decoder_ffn_dim", c->decoder_ffn_dim);
    cJSON_AddNumberToObject(j, "num_mel_bins", c->num_mel_bins);
    cJSON_AddNumberToObject(j, "max_source_positions", c->max_source_positions);
    cJSON_AddNumberToObject(j, "max_target_positions", c->max_target_positions);
    cJSON_AddNumberToObject(j, "vocab_size", c->vocab_size);
    cJSON_AddStringToObject(j, "activation_function", c->activation_function);
    cJSON_AddBoolToObject(j, "scale_embedding", c->scale_embedding);
    cJSON_AddNumberToObject(j, "decoder_start_token_id", c->decoder_start_token_id);
    cJSON_AddNumberToObject(j, "eos_token_id", c->eos_token_id);
    cJSON_AddNumberToObject(j, "pad_token_id", c->pad_token_id);
    cJSON_AddNumberToObject(j, "bos_token_id", c->bos_token_id);
    cJSON_AddBoolToObject(j, "tie_word_embeddings", true);
    cJSON_AddStringToObject(j, "torch_dtype", "float32");
    return j;
}

static cJSON *generation_json(const run *r) {
    const tg_whisper_config *c = &r->cfg;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "decoder_start_token_id", c->decoder_start_token_id);
    cJSON_AddNumberToObject(j, "eos_token_id", c->eos_token_id);
    cJSON_AddNumberToObject(j, "pad_token_id", c->pad_token_id);
    cJSON_AddNumberToObject(j, "bos_token_id", c->bos_token_id);
    cJSON_AddNumberToObject(j, "no_timestamps_token_id", r->notimestamps);
    cJSON_AddBoolToObject(j, "is_multilingual", r->lang >= 0);
    cJSON *langs = cJSON_CreateObject();
    if (r->lang >= 0) {
        char tok[64];
        fmt(tok, sizeof tok, "<|%s|>", r->o.language);
        cJSON_AddNumberToObject(langs, tok, r->lang);
    }
    cJSON_AddItemToObject(j, "lang_to_id", langs);
    cJSON *tasks = cJSON_CreateObject();
    cJSON_AddNumberToObject(tasks, "transcribe", r->transcribe);
    int32_t tr = tg_tokenizer_token_id(r->tok, "<|translate|>");
    if (tr >= 0) cJSON_AddNumberToObject(tasks, "translate", tr);
    cJSON_AddItemToObject(j, "task_to_id", tasks);
    cJSON_AddItemToObject(j, "suppress_tokens", cJSON_CreateArray());
    cJSON *begin = cJSON_CreateArray();
    cJSON_AddItemToArray(begin, cJSON_CreateNumber(c->eos_token_id));
    cJSON_AddItemToObject(j, "begin_suppress_tokens", begin);
    cJSON_AddNumberToObject(j, "max_length", c->max_target_positions);
    return j;
}

/* Names of the weights (HF) and of the optimizer state. */
static char **weight_names(const tg_whisper_config *cfg, int *n) {
    *n = tg_whisper_weight_count(cfg);
    char **names = calloc((size_t)*n, sizeof *names);
    if (!names) return NULL;
    for (int i = 0; i < *n; i++) {
        names[i] = malloc(128);
        int rank;
        int64_t shape[TG_MAX_RANK];
        if (!names[i] || tg_whisper_weight_info(cfg, i, names[i], 128, &rank, shape) != TG_OK) {
            for (int k = 0; k <= i; k++) free(names[k]);
            free(names);
            return NULL;
        }
    }
    return names;
}

static void free_names(char **names, int n) {
    if (!names) return;
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

static bool save_tokenizer(const run *r, const char *dir) {
    char p[4096], q[4096];
    if (r->tokenizer_json) {
        fmt(p, sizeof p, "%s/tokenizer.json", dir);
        return write_file(p, r->tokenizer_json);
    }
    static const char *files[] = {"tokenizer.json",
                                  "vocab.json",
                                  "merges.txt",
                                  "added_tokens.json",
                                  "special_tokens_map.json",
                                  "tokenizer_config.json",
                                  "normalizer.json"};
    bool any = false;
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (is_dir(r->tokenizer_dir))
            fmt(p, sizeof p, "%s/%s", r->tokenizer_dir, files[i]);
        else if (i == 0)
            fmt(p, sizeof p, "%s", r->tokenizer_dir);
        else
            continue;
        if (access(p, R_OK) != 0) continue;
        fmt(q, sizeof q, "%s/%s", dir, files[i]);
        if (!copy_file(p, q)) return false;
        any = true;
    }
    return any;
}

/* Keeps the newest `keep` checkpoints besides the best one. */
static void prune_checkpoints(const run *r) {
    DIR *d = opendir(r->out);
    if (!d) return;
    int steps[4096], n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < 4096) {
        int s;
        char tail;
        if (sscanf(e->d_name, "checkpoint-%d%c", &s, &tail) == 1) steps[n++] = s;
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        int newer = 0;
        for (int k = 0; k < n; k++) newer += steps[k] > steps[i];
        if (newer >= r->o.keep && steps[i] != r->state.best_step) {
            char p[4096];
            fmt(p, sizeof p, "%s/checkpoint-%d", r->out, steps[i]);
            remove_tree(p);
        }
    }
}

/* Writes OUT/checkpoint-STEP atomically: everything goes to a temporary
 * directory that is renamed when complete, so a crash during a save leaves
 * the previous checkpoints as they were. */
static bool save_checkpoint(run *r) {
    char tmp[4096], final[4096], p[4096];
    fmt(final, sizeof final, "%s/checkpoint-%d", r->out, r->state.step);
    fmt(tmp, sizeof tmp, "%s/.tmp-checkpoint-%d", r->out, r->state.step);
    remove_tree(tmp);
    if (mkdir(tmp, 0777) != 0) {
        cli_error("%s: cannot create: %s", tmp, strerror(errno));
        return false;
    }
    int n;
    char **names = weight_names(&r->cfg, &n);
    bool ok = names != NULL;
    const char *meta[] = {"format", "pt", NULL};
    if (ok) {
        tg_array *arrays = calloc((size_t)n, sizeof *arrays);
        ok = arrays != NULL;
        for (int i = 0; ok && i < n; i++)
            ok = tg_store_get(r->store, names[i], &arrays[i]) == TG_OK;
        fmt(p, sizeof p, "%s/model.safetensors", tmp);
        ok = ok && tg_safetensors_save(p, n, (const char *const *)names, arrays, meta) == TG_OK;
        for (int i = 0; arrays && i < n; i++) tg_array_free(&arrays[i]);
        free(arrays);
    }
    /* optimizer state: the AdamW moments of the trained weights */
    int np = tg_whisper_trainer_param_count(r->trainer);
    char **onames = calloc((size_t)(2 * np + 1), sizeof *onames);
    ok = ok && onames;
    for (int i = 0; ok && i < np; i++) {
        const char *w = tg_whisper_trainer_param_name(r->trainer, i);
        size_t l = strlen(w) + 8;
        onames[2 * i] = malloc(l);
        onames[2 * i + 1] = malloc(l);
        ok = onames[2 * i] && onames[2 * i + 1];
        if (ok) {
            fmt(onames[2 * i], l, "%s.adam_m", w);
            fmt(onames[2 * i + 1], l, "%s.adam_v", w);
        }
    }
    fmt(p, sizeof p, "%s/optimizer.safetensors", tmp);
    ok = ok && tg_store_save_safetensors(r->store, p, 2 * np, (const char *const *)onames) == TG_OK;
    if (onames)
        for (int i = 0; i < 2 * np; i++) free(onames[i]);
    free(onames);
    free_names(names, n);
    if (!ok) cli_error("saving a checkpoint: %s", tg_last_error());

    cJSON *j = config_json(&r->cfg);
    fmt(p, sizeof p, "%s/config.json", tmp);
    ok = ok && write_json(p, j);
    cJSON_Delete(j);
    j = generation_json(r);
    fmt(p, sizeof p, "%s/generation_config.json", tmp);
    ok = ok && write_json(p, j);
    cJSON_Delete(j);
    ok = ok && save_tokenizer(r, tmp);

    j = cJSON_CreateObject();
    cJSON_AddNumberToObject(j, "step", r->state.step);
    cJSON_AddNumberToObject(j, "data_position", (double)r->state.position);
    char seed[32];
    fmt(seed, sizeof seed, "%llu", (unsigned long long)r->state.seed);
    cJSON_AddStringToObject(j, "seed", seed); /* a string: 64-bit exact */
    if (isfinite(r->state.best_wer)) cJSON_AddNumberToObject(j, "best_wer", r->state.best_wer);
    if (isfinite(r->state.best_loss))
        cJSON_AddNumberToObject(j, "best_eval_loss", r->state.best_loss);
    cJSON_AddNumberToObject(j, "best_step", r->state.best_step);
    cJSON_AddNumberToObject(j, "total_steps", r->o.steps);
    cJSON_AddNumberToObject(j, "batch_size", r->o.batch);
    cJSON_AddNumberToObject(j, "grad_accum", r->o.grad_accum);
    cJSON_AddNumberToObject(j, "max_tokens", r->o.max_tokens);
    cJSON_AddNumberToObject(j, "lr", r->o.lr);
    cJSON_AddNumberToObject(j, "warmup", r->o.warmup);
    cJSON_AddStringToObject(j, "schedule", r->o.schedule);
    cJSON_AddNumberToObject(j, "weight_decay", r->o.weight_decay);
    cJSON_AddNumberToObject(j, "max_grad_norm", r->o.max_grad_norm);
    cJSON_AddNumberToObject(j, "label_smoothing", r->o.label_smoothing);
    cJSON_AddBoolToObject(j, "freeze_encoder", r->o.freeze_encoder);
    cJSON_AddStringToObject(j, "language", r->o.language);
    cJSON_AddStringToObject(j, "precision", r->o.precision);
    cJSON_AddNumberToObject(j, "loss_scale", r->state.scaler.scale);
    cJSON_AddNumberToObject(j, "scale_good_steps", r->state.scaler.good_steps);
    cJSON_AddNumberToObject(j, "skipped_steps", (double)r->state.scaler.skipped);
    cJSON_AddNumberToObject(j, "scale_growth", r->o.scale_growth);
    cJSON_AddBoolToObject(j, "pad_to_window", r->o.pad_to_window == 1);
    if (r->o.buckets) cJSON_AddStringToObject(j, "buckets", r->o.buckets);
    if (r->o.train) cJSON_AddStringToObject(j, "train", r->o.train);
    if (r->o.eval) cJSON_AddStringToObject(j, "eval", r->o.eval);
    fmt(p, sizeof p, "%s/trainer_state.json", tmp);
    ok = ok && write_json(p, j);
    cJSON_Delete(j);

    if (ok) {
        fsync_dir(tmp);
        remove_tree(final); /* a re-save of the same step */
        ok = rename(tmp, final) == 0;
        fsync_dir(r->out);
    }
    if (!ok) {
        cli_error("checkpoint %s not written", final);
        remove_tree(tmp);
        return false;
    }
    fprintf(stderr, "saved %s\n", final);
    prune_checkpoints(r);
    return true;
}

/* The newest checkpoint-N in dir, or dir itself when it is a checkpoint. */
static bool find_checkpoint(const char *dir, char *out, size_t size) {
    char p[4096];
    fmt(p, sizeof p, "%s/trainer_state.json", dir);
    if (access(p, R_OK) == 0) {
        fmt(out, size, "%s", dir);
        return true;
    }
    DIR *d = opendir(dir);
    if (!d) return false;
    int best = -1;
    struct dirent *e;
    while ((e = readdir(d))) {
        int s;
        char tail;
        if (sscanf(e->d_name, "checkpoint-%d%c", &s, &tail) == 1 && s > best) best = s;
    }
    closedir(d);
    if (best < 0) return false;
    fmt(out, size, "%s/checkpoint-%d", dir, best);
    return true;
}

static const cJSON *jget(const cJSON *j, const char *k) {
    return cJSON_GetObjectItemCaseSensitive(j, k);
}

/* Reads trainer_state.json; options not given on the command line come
 * from it (the run continues as it was started). */
static bool load_state(run *r, const char *ckpt, int argc, char **argv) {
    char p[4096];
    fmt(p, sizeof p, "%s/trainer_state.json", ckpt);
    size_t len;
    char *buf;
    if (tg_read_whole_file(p, 1 << 20, &buf, &len) != TG_OK) {
        cli_error("%s", tg_last_error());
        return false;
    }
    cJSON *j = cJSON_ParseWithLength(buf, len);
    free(buf);
    const cJSON *step = jget(j, "step"), *pos = jget(j, "data_position"), *seed = jget(j, "seed");
    if (!cJSON_IsNumber(step) || !cJSON_IsNumber(pos) || !cJSON_IsString(seed)) {
        cli_error("%s: not a trainer state (step, data_position, seed)", p);
        cJSON_Delete(j);
        return false;
    }
    r->state.step = step->valueint;
    r->state.position = (int64_t)pos->valuedouble;
    r->state.seed = strtoull(seed->valuestring, NULL, 10);
    const cJSON *v;
    if ((v = jget(j, "best_wer")) && cJSON_IsNumber(v)) r->state.best_wer = v->valuedouble;
    if ((v = jget(j, "best_eval_loss")) && cJSON_IsNumber(v)) r->state.best_loss = v->valuedouble;
    if ((v = jget(j, "best_step")) && cJSON_IsNumber(v)) r->state.best_step = v->valueint;
    /* options of the original run unless given again */
    {
        struct {
            const char *flag, *key;
            int *ival;
            double *dval;
            const char **sval;
        } map[] = {
            {"--steps", "total_steps", &r->o.steps, NULL, NULL},
            {"--batch-size", "batch_size", &r->o.batch, NULL, NULL},
            {"--grad-accum", "grad_accum", &r->o.grad_accum, NULL, NULL},
            {"--max-tokens", "max_tokens", &r->o.max_tokens, NULL, NULL},
            {"--warmup", "warmup", &r->o.warmup, NULL, NULL},
            {"--lr", "lr", NULL, &r->o.lr, NULL},
            {"--weight-decay", "weight_decay", NULL, &r->o.weight_decay, NULL},
            {"--max-grad-norm", "max_grad_norm", NULL, &r->o.max_grad_norm, NULL},
            {"--label-smoothing", "label_smoothing", NULL, &r->o.label_smoothing, NULL},
            {"--schedule", "schedule", NULL, NULL, &r->o.schedule},
            {"--precision", "precision", NULL, NULL, &r->o.precision},
            {"--buckets", "buckets", NULL, NULL, &r->o.buckets},
            {"--scale-growth", "scale_growth", &r->o.scale_growth, NULL, NULL},
            {"--language", "language", NULL, NULL, &r->o.language},
            {"--train", "train", NULL, NULL, &r->o.train},
            {"--eval", "eval", NULL, NULL, &r->o.eval},
        };
        for (size_t k = 0; k < sizeof map / sizeof map[0]; k++) {
            bool g = false;
            for (int a = 1; a < argc; a++)
                if (strncmp(argv[a], map[k].flag, strlen(map[k].flag)) == 0) g = true;
            if (g) continue;
            v = jget(j, map[k].key);
            if (map[k].ival && cJSON_IsNumber(v)) *map[k].ival = v->valueint;
            if (map[k].dval && cJSON_IsNumber(v)) *map[k].dval = v->valuedouble;
            if (map[k].sval && cJSON_IsString(v)) {
                static char keep[16][1024];
                fmt(keep[k], sizeof keep[k], "%s", v->valuestring);
                *map[k].sval = keep[k];
            }
        }
        bool g = false;
        for (int a = 1; a < argc; a++)
            if (!strcmp(argv[a], "--freeze-encoder")) g = true;
        if (!g && (v = jget(j, "freeze_encoder"))) r->o.freeze_encoder = cJSON_IsTrue(v);
        g = false;
        for (int a = 1; a < argc; a++)
            if (!strcmp(argv[a], "--pad-to-30s") || !strcmp(argv[a], "--pad-to-window") ||
                !strncmp(argv[a], "--buckets", 9))
                g = true;
        if (!g && (v = jget(j, "pad_to_window"))) r->o.pad_to_window = cJSON_IsTrue(v) ? 1 : 0;
        /* the loss scaler continues where it was */
        const cJSON *sc = jget(j, "loss_scale"), *good = jget(j, "scale_good_steps"),
                    *skipped = jget(j, "skipped_steps");
        const cJSON *prec = jget(j, "precision");
        bool was_f16 = cJSON_IsString(prec) && strcmp(prec->valuestring, "f16") == 0;
        if (was_f16 && cJSON_IsNumber(sc) && sc->valuedouble > 0) {
            r->state.scaler.scale = sc->valuedouble;
            r->state.scaler.good_steps = cJSON_IsNumber(good) ? good->valueint : 0;
            r->state.scaler.skipped = cJSON_IsNumber(skipped) ? (int64_t)skipped->valuedouble : 0;
        }
    }
    cJSON_Delete(j);
    return true;
}

/* ------------------------------------------------------------------ */
/* Evaluation                                                          */
/* ------------------------------------------------------------------ */

typedef struct eval_result {
    double loss, wer, cer;
    int n;
} eval_result;

static bool evaluate(run *r, tg_whisper_decoder *dec, int print, eval_result *res) {
    const tg_dataset *d = r->eval;
    int B = r->o.batch, T = r->o.max_tokens;
    size_t per_mel = (size_t)d->n_mels * (size_t)d->frames;
    float *mel = malloc((size_t)B * per_mel * sizeof *mel);
    int32_t *tokens = malloc((size_t)B * T * sizeof *tokens);
    int32_t *labels = malloc((size_t)B * T * sizeof *labels);
    int32_t *out = malloc((size_t)B * T * sizeof *out);
    int *lens = malloc((size_t)B * sizeof *lens), *idx = malloc((size_t)B * sizeof *idx);
    bool ok = mel && tokens && labels && out && lens && idx;
    double loss_sum = 0, label_count = 0;
    tg_error_counts counts = {0};
    int n = d->n;
    if (r->o.eval_limit >= 0 && r->o.eval_limit < n) n = r->o.eval_limit;
    int32_t prompt[4] = {r->sot, r->lang, r->transcribe, r->notimestamps};
    int n_prompt = 0;
    int32_t pr[4];
    for (int i = 0; i < 4; i++)
        if (prompt[i] >= 0) pr[n_prompt++] = prompt[i];
    int32_t *prompts = malloc((size_t)B * 4 * sizeof *prompts);
    ok = ok && prompts;
    for (int b = 0; ok && b < B; b++) memcpy(prompts + b * n_prompt, pr, (size_t)n_prompt * 4);
    int printed = 0;
    for (int start = 0; ok && start < n; start += B) {
        int k = n - start < B ? n - start : B;
        for (int b = 0; b < B; b++) idx[b] = start + (b < k ? b : 0);
        tg_dataset_batch(d, idx, B, T, r->eot, mel, tokens, labels);
        for (int b = k; b < B; b++)
            for (int t = 0; t < T; t++) labels[b * T + t] = TG_WHISPER_IGNORE;
        int count = 0;
        for (int i = 0; i < B * T; i++) count += labels[i] != TG_WHISPER_IGNORE;
        double loss;
        tg_array enc = {0};
        ok = tg_whisper_trainer_loss(r->trainer, mel, tokens, labels, &loss) == TG_OK;
        ok = ok && tg_whisper_trainer_encode(r->trainer, mel, &enc) == TG_OK;
        ok = ok && tg_whisper_decoder_set_audio(dec, &enc) == TG_OK;
        ok = ok && tg_whisper_greedy(dec, prompts, n_prompt, r->eot, out, lens) == TG_OK;
        tg_array_free(&enc);
        if (!ok) break;
        loss_sum += loss * count;
        label_count += count;
        for (int b = 0; b < k; b++) {
            int len = lens[b];
            int m = len - n_prompt;
            const int32_t *ids = out + (size_t)b * T + n_prompt;
            if (m > 0 && ids[m - 1] == r->eot) m--;
            char *text = NULL;
            size_t tl;
            if (tg_tokenizer_decode(r->tok, ids, m > 0 ? m : 0, TG_DECODE_SKIP_SPECIAL, &text,
                                    &tl) != TG_OK) {
                ok = false;
                break;
            }
            const char *truth = d->texts[start + b];
            tg_error_counts_add(&counts, text, truth);
            if (printed < print) {
                tg_error_counts one = {0};
                tg_error_counts_add(&one, text, truth);
                printf("truth: %s\nheard: %s   (CER %.1f%%)\n", truth, text, 100 * tg_cer(&one));
                printed++;
            }
            free(text);
        }
    }
    if (!ok) cli_error("evaluation: %s", tg_last_error());
    res->loss = label_count > 0 ? loss_sum / label_count : NAN;
    res->wer = tg_wer(&counts);
    res->cer = tg_cer(&counts);
    res->n = n;
    free(mel);
    free(tokens);
    free(labels);
    free(out);
    free(lens);
    free(idx);
    free(prompts);
    return ok;
}

/* ------------------------------------------------------------------ */
/* Setup                                                               */
/* ------------------------------------------------------------------ */

static bool load_config(run *r, const char *what) {
    if (is_dir(what)) {
        if (tg_whisper_config_load(what, &r->cfg) == TG_OK) return true;
    } else if (access(what, R_OK) == 0) {
        size_t len;
        char *buf;
        if (tg_read_whole_file(what, 1 << 20, &buf, &len) == TG_OK) {
            tg_status st = tg_whisper_config_parse(buf, len, what, &r->cfg);
            free(buf);
            if (st == TG_OK) return true;
        }
    } else if (tg_whisper_config_preset(what, &r->cfg) == TG_OK) {
        return true;
    }
    cli_error("config %s: %s", what, tg_last_error());
    return false;
}

static bool setup_tokenizer(run *r) {
    const char *t = r->o.tokenizer;
    if (!t) t = r->o.init ? r->o.init : NULL;
    if (!t) {
        cli_error("train: --tokenizer PATH|bytes is required when training from scratch");
        return false;
    }
    tg_status st;
    if (strcmp(t, "bytes") == 0) {
        r->tokenizer_json = byte_tokenizer_json();
        if (!r->tokenizer_json) return false;
        st =
            tg_tokenizer_parse_json(r->tokenizer_json, strlen(r->tokenizer_json), "bytes", &r->tok);
    } else {
        /* tokenizer.json is kept in memory: checkpoints copy it even when
         * the directory it came from is pruned */
        char p[4096];
        size_t len;
        fmt(p, sizeof p, is_dir(t) ? "%s/tokenizer.json" : "%s", t);
        r->tokenizer_dir = t;
        if (access(p, R_OK) == 0 &&
            tg_read_whole_file(p, (size_t)1 << 28, &r->tokenizer_json, &len) == TG_OK)
            st = tg_tokenizer_parse_json(r->tokenizer_json, len, p, &r->tok);
        else
            st = tg_tokenizer_load(t, &r->tok);
    }
    if (st != TG_OK) {
        cli_error("tokenizer: %s", tg_last_error());
        return false;
    }
    char lang[64];
    fmt(lang, sizeof lang, "<|%s|>", r->o.language);
    r->sot = tg_tokenizer_token_id(r->tok, "<|startoftranscript|>");
    r->eot = tg_tokenizer_token_id(r->tok, "<|endoftext|>");
    r->lang = tg_tokenizer_token_id(r->tok, lang);
    r->transcribe = tg_tokenizer_token_id(r->tok, "<|transcribe|>");
    r->notimestamps = tg_tokenizer_token_id(r->tok, "<|notimestamps|>");
    if (r->sot < 0 || r->eot < 0) {
        cli_error("tokenizer: no <|startoftranscript|> or <|endoftext|> token");
        return false;
    }
    return true;
}

static void print_warnings(const char *what, const char *why, char *const *w, int n_kept,
                           int n_skipped) {
    for (int i = 0; i < n_kept && i < 10; i++) fprintf(stderr, "warning: %s\n", w[i]);
    if (n_skipped > 0)
        fprintf(stderr, "warning: %s: %d record%s skipped (%s)\n", what, n_skipped,
                n_skipped == 1 ? "" : "s", why);
}

static tg_dataset *load_data(run *r, const char *manifest) {
    tg_manifest *m;
    if (tg_manifest_load(manifest, &m) != TG_OK) {
        cli_error("%s", tg_last_error());
        return NULL;
    }
    print_warnings(manifest, "bad lines", m->warnings, m->n_warnings, m->n_skipped);
    char cache[4096];
    fmt(cache, sizeof cache, "%s/cache", r->out);
    tg_dataset_options o = {.tokenizer = r->tok,
                            .prompt = {r->sot, r->lang, r->transcribe, r->notimestamps},
                            .eot = r->eot,
                            .n_mels = r->cfg.num_mel_bins,
                            .window_samples = 320 * r->cfg.max_source_positions,
                            .max_tokens = r->o.max_tokens + 1,
                            .dev = r->dev,
                            .cache_dir = cache};
    double t0 = now();
    tg_dataset *d = NULL;
    tg_status st = tg_dataset_build(m, &o, &d);
    tg_manifest_free(m);
    if (st != TG_OK) {
        cli_error("%s: %s", manifest, tg_last_error());
        return NULL;
    }
    print_warnings(manifest, "audio or labels", d->warnings, d->n_warnings, d->n_skipped);
    fprintf(stderr, "%s: %d utterances (log-Mel %s, %.1f s)\n", manifest, d->n,
            d->from_cache ? "from the cache" : "computed", now() - t0);
    if (d->n == 0) {
        cli_error("%s: no usable records", manifest);
        tg_dataset_free(d);
        return NULL;
    }
    return d;
}

static void log_metrics(run *r, const char *json) {
    if (!r->metrics) return;
    fputs(json, r->metrics);
    fputc('\n', r->metrics);
    fflush(r->metrics);
}

static void write_plot(run *r) {
    char p[4096], q[4096];
    fmt(p, sizeof p, "%s/metrics.jsonl", r->out);
    fmt(q, sizeof q, "%s/training.svg", r->out);
    tg_metric_point *pts;
    int n;
    if (tg_metrics_read(p, &pts, &n) != TG_OK) return;
    if (tg_metrics_plot_svg(q, pts, n, "graph train") == TG_OK) fprintf(stderr, "plot: %s\n", q);
    free(pts);
}

/* Marks checkpoint-STEP as the best: OUT/best is a symlink to it,
 * replaced atomically. */
static void mark_best(run *r) {
    char link[4096], tmp[4096], target[64];
    fmt(target, sizeof target, "checkpoint-%d", r->state.best_step);
    fmt(link, sizeof link, "%s/best", r->out);
    fmt(tmp, sizeof tmp, "%s/.best.tmp", r->out);
    unlink(tmp);
    if (symlink(target, tmp) == 0) rename(tmp, link);
}

/* ------------------------------------------------------------------ */
/* Length buckets and their loader thread                              */
/* ------------------------------------------------------------------ */

/* The bucketed order of tg_whisper_buckets (only `graph train` reads it):
 * batch k is mel [B, n_mels, frames of its bucket], tokens and labels
 * [B, tokens of its bucket]; tg_loader prepares batch k + 1 while batch k
 * trains. */
typedef struct bucket_order {
    const tg_dataset *d;
    tg_whisper_buckets *plan;
    int B;
    int32_t pad;
    int *idx; /* [B] */
} bucket_order;

static void bucket_fill(void *ctx, int64_t k, tg_loader_batch *b) {
    bucket_order *o = ctx;
    const tg_dataset *d = o->d;
    int frames, T;
    tg_whisper_buckets_batch(o->plan, k, &b->bucket, o->idx);
    tg_whisper_buckets_shape(o->plan, b->bucket, &frames, &T, NULL);
    for (int r = 0; r < o->B; r++) {
        int i = o->idx[r];
        int src = i >= 0 ? i : o->idx[0]; /* a padding row: any mel, no labels */
        for (int m = 0; m < d->n_mels; m++)
            memcpy(b->mel + ((size_t)r * d->n_mels + m) * frames,
                   d->mels + ((size_t)src * d->n_mels + m) * d->frames,
                   (size_t)frames * sizeof(float));
        const int32_t *seq = d->seqs + (size_t)src * d->max_tokens;
        int len = i >= 0 ? d->seq_len[i] : 0;
        for (int t = 0; t < T; t++) {
            bool in = t + 1 < len;
            b->tokens[(size_t)r * T + t] = in ? seq[t] : o->pad;
            b->labels[(size_t)r * T + t] = in ? seq[t + 1] : TG_WHISPER_IGNORE;
        }
    }
}

/* The bucket lengths in mel frames, ascending, the full window last:
 * --buckets in seconds, or 1/6, 1/3 and 2/3 of the window. */
static int bucket_bounds(const run *r, int *frames, int cap) {
    int S = r->cfg.max_source_positions, n = 0;
    double secs[16];
    int n_secs = 0;
    if (r->o.buckets) {
        const char *p = r->o.buckets;
        while (*p && n_secs < 16) {
            char *end;
            double x = strtod(p, &end);
            if (end == p) break;
            secs[n_secs++] = x;
            p = *end == ',' ? end + 1 : end;
        }
    } else {
        double full = S / 50.0;
        secs[n_secs++] = full / 6;
        secs[n_secs++] = full / 3;
        secs[n_secs++] = 2 * full / 3;
    }
    for (int i = 0; i < n_secs && n < cap - 1; i++) {
        int pos = (int)lround(secs[i] * 50.0);
        if (pos >= 2 && pos < S && (n == 0 || 2 * pos > frames[n - 1])) frames[n++] = 2 * pos;
    }
    frames[n++] = 2 * S;
    return n;
}

/* With TG_PROFILE=1: the per-kernel table of each training step that ran
 * (the full window's, then each bucket's). */
static void print_profiles(run *r) {
    const char *prof = getenv("TG_PROFILE");
    if (!prof || strcmp(prof, "1") != 0) return;
    int n = r->buckets ? tg_whisper_buckets_count(r->buckets) : 0;
    for (int i = -1; i < n; i++) {
        tg_whisper_trainer *t = i < 0 ? r->trainer : r->bucket_trainer[i];
        if (i >= 0 && t == r->trainer) continue;
        char *table = NULL;
        if (tg_whisper_trainer_profile(t, &table) != TG_OK) continue; /* never ran */
        if (i < 0)
            fprintf(stderr, "training step (full window), per kernel:\n%s", table);
        else
            fprintf(stderr, "training step (bucket %d), per kernel:\n%s", i, table);
        free(table);
    }
}

/* The bucketed order of the training set and one trainer per bucket
 * shape, all compiled here, before the first step; they share the store
 * (weights, AdamW moments). */
static bool setup_buckets(run *r, const tg_whisper_train_options *base) {
    const tg_dataset *d = r->train;
    int bounds[16];
    int nb = bucket_bounds(r, bounds, 16);
    int *rf = malloc((size_t)d->n * sizeof *rf), *rt = malloc((size_t)d->n * sizeof *rt);
    if (!rf || !rt) {
        free(rf);
        free(rt);
        return false;
    }
    for (int i = 0; i < d->n; i++) {
        rf[i] = tg_whisper_mel_frames_used(d->mels + (size_t)i * d->n_mels * d->frames, d->n_mels,
                                           d->frames);
        rt[i] = d->seq_len[i] - 1 < r->o.max_tokens ? d->seq_len[i] - 1 : r->o.max_tokens;
    }
    tg_status st = tg_whisper_buckets_new(d->n, rf, rt, nb, bounds, r->o.max_tokens, r->o.batch,
                                          r->state.seed, &r->buckets);
    free(rf);
    free(rt);
    if (st != TG_OK) {
        cli_error("buckets: %s", tg_last_error());
        return false;
    }
    int n = tg_whisper_buckets_count(r->buckets);
    r->bucket_trainer = calloc((size_t)n, sizeof *r->bucket_trainer);
    if (!r->bucket_trainer) return false;
    fprintf(stderr, "buckets:");
    for (int i = 0; i < n; i++) {
        int frames, T, count;
        tg_whisper_buckets_shape(r->buckets, i, &frames, &T, &count);
        fprintf(stderr, "%s %.2f s x %d tokens (%d utterances)", i ? "," : "", frames / 100.0, T,
                count);
        if (frames == d->frames && T == r->o.max_tokens) {
            r->bucket_trainer[i] = r->trainer;
            continue;
        }
        tg_whisper_train_options o = *base;
        o.source_positions = frames / 2;
        o.n_tokens = T;
        st = tg_whisper_trainer_new(&r->cfg, &o, r->store, r->dev, &r->bucket_trainer[i]);
        if (st != TG_OK) {
            fprintf(stderr, "\n");
            cli_error("training step of bucket %d: %s", i, tg_last_error());
            return false;
        }
    }
    fprintf(stderr, "\n");
    return true;
}

static void free_buckets(run *r) {
    int n = tg_whisper_buckets_count(r->buckets);
    for (int i = 0; r->bucket_trainer && i < n; i++)
        if (r->bucket_trainer[i] != r->trainer) tg_whisper_trainer_free(r->bucket_trainer[i]);
    free(r->bucket_trainer);
    tg_whisper_buckets_free(r->buckets);
    r->bucket_trainer = NULL;
    r->buckets = NULL;
}

/* ------------------------------------------------------------------ */
/* Main                                                                */
/* ------------------------------------------------------------------ */

static void run_free(run *r) {
    if (r->metrics) fclose(r->metrics);
    free_buckets(r);
    tg_whisper_trainer_free(r->trainer);
    tg_dataset_free(r->train);
    tg_dataset_free(r->eval);
    tg_store_free(r->store);
    tg_device_free(r->dev);
    tg_tokenizer_free(r->tok);
    free(r->tokenizer_json);
}

int cli_train(int argc, char **argv) {
    run r;
    memset(&r, 0, sizeof r);
    int rc = parse_options(argc, argv, &r.o);
    if (rc != CLI_OK) return rc;
    r.state.best_wer = INFINITY;
    r.state.best_loss = INFINITY;
    r.state.best_step = -1;
    r.state.seed = r.o.seed;

    /* where the weights come from: a checkpoint to resume, --init, or random */
    char ckpt[4096] = "";
    if (r.o.resume) {
        if (!find_checkpoint(r.o.resume, ckpt, sizeof ckpt)) {
            cli_error("--resume %s: no checkpoint there", r.o.resume);
            return CLI_FAIL;
        }
        if (!load_state(&r, ckpt, argc, argv)) return CLI_FAIL;
        if (!r.o.out) {
            static char parent[4096];
            fmt(parent, sizeof parent, "%s", ckpt);
            char *s = strrchr(parent, '/');
            if (s)
                *s = '\0';
            else
                fmt(parent, sizeof parent, ".");
            r.o.out = parent;
        }
        r.o.config = ckpt;
        r.o.tokenizer = ckpt;
        r.o.init = ckpt;
    } else if (r.o.init) {
        r.o.config = r.o.init;
    }
    if (!r.o.train) {
        cli_error("train: no training manifest (--train)");
        return CLI_USAGE;
    }
    fmt(r.out, sizeof r.out, "%s", r.o.out);
    mkdir(r.out, 0777);
    if (!is_dir(r.out)) {
        cli_error("%s: cannot create the output directory", r.out);
        return CLI_FAIL;
    }
    if (!load_config(&r, r.o.config)) return CLI_FAIL;
    r.cfg.weight_dtype = TG_F32;
    if (!setup_tokenizer(&r)) {
        run_free(&r);
        return CLI_FAIL;
    }
    if (!r.o.init) {
        /* from scratch: the vocabulary and special tokens of the tokenizer */
        r.cfg.vocab_size = tg_tokenizer_vocab_size(r.tok);
        r.cfg.decoder_start_token_id = r.sot;
        r.cfg.eos_token_id = r.cfg.pad_token_id = r.cfg.bos_token_id = r.eot;
        if (r.cfg.max_target_positions < r.o.max_tokens)
            r.cfg.max_target_positions = r.o.max_tokens;
    }
    int full_positions = r.cfg.max_source_positions;
    if (r.o.window_seconds > 0) {
        int s = (int)lround(r.o.window_seconds * 50.0);
        if (s < 2 || (r.o.init && s > full_positions)) {
            cli_error("--window-seconds %g: %d positions (the model has %d)", r.o.window_seconds, s,
                      full_positions);
            run_free(&r);
            return CLI_USAGE;
        }
        r.cfg.max_source_positions = s;
    }
    if (r.o.max_tokens > r.cfg.max_target_positions) {
        cli_error("--max-tokens %d exceeds max_target_positions %d", r.o.max_tokens,
                  r.cfg.max_target_positions);
        run_free(&r);
        return CLI_USAGE;
    }

    if (tg_device_open(-1, &r.dev) != TG_OK) {
        cli_error("device: %s", tg_last_error());
        run_free(&r);
        return CLI_FAIL;
    }
    r.store = tg_store_new();
    tg_status st = TG_OK;
    if (r.o.init) {
        /* the checkpoint's weights; a shorter window keeps the first rows
         * of the encoder position table */
        tg_whisper_config full = r.cfg;
        full.max_source_positions = full_positions;
        tg_safetensors *sf = NULL;
        st = tg_safetensors_open_dir(r.o.init, &sf);
        if (st == TG_OK) st = tg_whisper_load_weights(r.store, &full, sf, TG_F32);
        tg_safetensors_close(sf);
        if (st == TG_OK && full_positions != r.cfg.max_source_positions) {
            tg_array a = {0};
            st = tg_store_get(r.store, "model.encoder.embed_positions.weight", &a);
            if (st == TG_OK) {
                a.shape[0] = r.cfg.max_source_positions; /* row-major: a prefix */
                st = tg_store_set(r.store, "model.encoder.embed_positions.weight", &a);
            }
            tg_array_free(&a);
        }
        if (st == TG_OK && r.o.resume) {
            char p[4096];
            fmt(p, sizeof p, "%s/optimizer.safetensors", ckpt);
            st = tg_store_load_safetensors(r.store, p, 0, NULL);
        }
    } else {
        st = tg_whisper_init_weights(r.store, &r.cfg, r.o.seed);
    }
    if (st != TG_OK) {
        cli_error("weights: %s", tg_last_error());
        run_free(&r);
        return CLI_FAIL;
    }

    r.train = load_data(&r, r.o.train);
    if (!r.train || (r.o.eval && !(r.eval = load_data(&r, r.o.eval)))) {
        run_free(&r);
        return CLI_FAIL;
    }

    tg_whisper_train_options to;
    tg_whisper_train_options_default(&to);
    to.batch = r.o.batch;
    to.n_tokens = r.o.max_tokens;
    to.weight_decay = r.o.weight_decay;
    to.max_grad_norm = r.o.max_grad_norm;
    to.freeze_encoder = r.o.freeze_encoder;
    to.label_smoothing = r.o.label_smoothing;
    to.accum_steps = r.o.grad_accum;
    bool half = strcmp(r.o.precision, "f16") == 0;
    to.precision = half ? TG_F16 : TG_F32;
    to.loss_scale = r.o.loss_scale;
    to.scale_growth_interval = r.o.scale_growth;
    if (!(r.state.scaler.scale > 0))
        r.state.scaler = (tg_whisper_loss_scaler){half ? r.o.loss_scale : 1.0, 0, 0};
    /* buckets from random initialisation; a pretrained model saw 30-s
     * windows only: pad to the window */
    if (r.o.pad_to_window < 0) r.o.pad_to_window = r.o.init ? 1 : 0;
    if (r.o.pad_to_window == 0 && half && r.o.grad_accum > 1) {
        cli_error("train: --precision f16 with --grad-accum needs --pad-to-30s (buckets with "
                  "accumulation and loss scaling are not supported yet)");
        run_free(&r);
        return CLI_USAGE;
    }
    double t0 = now();
    fprintf(stderr,
            "model: d_model %d, %d+%d layers, %d heads, %d encoder positions (%.2f s), vocabulary "
            "%d; batch %d x %d tokens\n",
            r.cfg.d_model, r.cfg.encoder_layers, r.cfg.decoder_layers,
            r.cfg.encoder_attention_heads, r.cfg.max_source_positions,
            r.cfg.max_source_positions / 50.0, r.cfg.vocab_size, r.o.batch, r.o.max_tokens);
    st = tg_whisper_trainer_new(&r.cfg, &to, r.store, r.dev, &r.trainer);
    if (st != TG_OK) {
        cli_error("training step: %s", tg_last_error());
        run_free(&r);
        return CLI_FAIL;
    }
    if (r.o.pad_to_window == 0 && !setup_buckets(&r, &to)) {
        run_free(&r);
        return CLI_FAIL;
    }
    fprintf(stderr, "compiled the training step%s in %.1f s (%d trained tensors, %s)\n",
            r.buckets ? "s of every bucket" : "", now() - t0,
            tg_whisper_trainer_param_count(r.trainer), r.o.precision);

    tg_whisper_decoder *dec = NULL;
    if (r.eval &&
        tg_whisper_decoder_new(&r.cfg, r.store, r.dev, r.o.batch, r.o.max_tokens, &dec) != TG_OK) {
        cli_error("decoder: %s", tg_last_error());
        run_free(&r);
        return CLI_FAIL;
    }

    char p[4096];
    fmt(p, sizeof p, "%s/metrics.jsonl", r.out);
    r.metrics = fopen(p, "a");
    /* the bucketed order, or the shuffled one; buffers for the largest batch */
    tg_loader *loader = NULL;
    bucket_order border = {r.train, r.buckets, r.o.batch, r.eot, NULL};
    tg_status lst = TG_ERR_NO_MEMORY;
    if (!r.buckets) {
        lst = tg_loader_new(r.train, r.state.seed, r.o.batch, r.o.max_tokens, r.eot, &loader);
    } else if ((border.idx = malloc((size_t)r.o.batch * sizeof *border.idx))) {
        size_t B = (size_t)r.o.batch;
        lst = tg_loader_new_custom(r.o.batch, B * r.train->n_mels * r.train->frames,
                                   B * (size_t)r.o.max_tokens, 1, bucket_fill, &border, &loader);
    }
    if (lst != TG_OK) {
        cli_error("loader: %s", border.idx || !r.buckets ? tg_last_error() : "out of memory");
        free(border.idx);
        tg_whisper_decoder_free(dec);
        run_free(&r);
        return CLI_FAIL;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);

    bool cosine = strcmp(r.o.schedule, "cosine") == 0;
    bool ok = true;
    double window_t = now(), start_t = now(), loss_acc = 0;
    int window_steps = 0, first_step = r.state.step;
    while (ok && r.state.step < r.o.steps && !interrupted) {
        const float *mel;
        const int32_t *tokens, *labels;
        int step = r.state.step + 1;
        double lr = tg_whisper_lr_schedule(step, r.o.steps, r.o.warmup, r.o.lr, cosine);
        double loss = 0, gnorm = 0;
        tg_whisper_trainer *tr = r.trainer;
        /* micro-batch k of this step: its batch and the trainer of its shape */
#define GET_BATCH(k)                                                                               \
    do {                                                                                           \
        int64_t k_ = (k), pos_ = r.state.position + k_ * r.o.batch;                                \
        const tg_loader_batch *b_ = NULL;                                                          \
        ok = tg_loader_next(loader, r.buckets ? pos_ / r.o.batch : pos_, &b_) == TG_OK;            \
        if (ok) {                                                                                  \
            mel = b_->mel;                                                                         \
            tokens = b_->tokens;                                                                   \
            labels = b_->labels;                                                                   \
            if (r.buckets) tr = r.bucket_trainer[b_->bucket];                                      \
        }                                                                                          \
    } while (0)
        if (r.o.grad_accum == 1) {
            GET_BATCH(0);
            ok = ok && tg_whisper_trainer_set_scaler(tr, &r.state.scaler) == TG_OK;
            ok = ok && tg_whisper_trainer_step(tr, mel, tokens, labels, (float)lr, step, &loss,
                                               &gnorm) == TG_OK;
        } else {
            /* micro-batches k*B .. of this step, then one update (the
             * accumulators are variables of the shared store) */
            for (int k = 0; ok && k < r.o.grad_accum; k++) {
                double l = 0;
                GET_BATCH(k);
                ok = ok && tg_whisper_trainer_set_scaler(tr, &r.state.scaler) == TG_OK;
                ok = ok && tg_whisper_trainer_accumulate(tr, mel, tokens, labels, &l) == TG_OK;
                loss += l / r.o.grad_accum;
            }
            ok = ok && tg_whisper_trainer_apply(tr, (float)lr, step, &gnorm) == TG_OK;
        }
#undef GET_BATCH
        tg_whisper_trainer_get_scaler(tr, &r.state.scaler);
        if (!ok) {
            cli_error("step %d: %s", step, tg_last_error());
            break;
        }
        r.state.step = step;
        r.state.position += (int64_t)r.o.batch * r.o.grad_accum;
        loss_acc += loss;
        window_steps++;
        char line[512];
        fmt(line, sizeof line,
            "{\"step\": %d, \"loss\": %.9g, \"lr\": %.6g, \"grad_norm\": %.6g, \"epoch\": %.4f}",
            step, loss, lr, gnorm, (double)r.state.position / r.train->n);
        if (!isfinite(loss)) {
            cli_error("step %d: the loss is %g", step, loss);
            ok = false;
        }
        if (step % r.o.log_every == 0 || step == r.o.steps || step == first_step + 1) {
            double dt = now() - window_t;
            double ms = 1e3 * dt / window_steps;
            double eta = (r.o.steps - step) * ms / 1e3;
            char scaling[96] = "";
            if (half)
                fmt(scaling, sizeof scaling, "  scale %g  skipped %lld", r.state.scaler.scale,
                    (long long)r.state.scaler.skipped);
            fprintf(stderr,
                    "step %d/%d  loss %.4f  lr %.2e  grad norm %.3f  %.0f ms/step  %.1f "
                    "samples/s  ETA %dm%02ds%s\n",
                    step, r.o.steps, loss_acc / window_steps, lr, gnorm, ms,
                    r.o.batch * r.o.grad_accum * 1e3 / ms, (int)(eta / 60), (int)fmod(eta, 60),
                    scaling);
            fmt(line, sizeof line,
                "{\"step\": %d, \"loss\": %.9g, \"lr\": %.6g, \"grad_norm\": %.6g, "
                "\"epoch\": %.4f, \"ms_per_step\": %.1f, \"samples_per_s\": %.2f, "
                "\"loss_scale\": %.9g, \"skipped_steps\": %lld}",
                step, loss_acc / window_steps, lr, isfinite(gnorm) ? gnorm : -1.0,
                (double)r.state.position / r.train->n, ms, r.o.batch * r.o.grad_accum * 1e3 / ms,
                r.state.scaler.scale, (long long)r.state.scaler.skipped);
            log_metrics(&r, line);
            window_t = now();
            window_steps = 0;
            loss_acc = 0;
        }
        bool last = step == r.o.steps;
        bool do_eval = r.eval && ((r.o.eval_every > 0 && step % r.o.eval_every == 0) || last);
        bool do_save = (r.o.save_every > 0 && step % r.o.save_every == 0) || last;
        if (ok && do_eval) {
            double te = now();
            eval_result er;
            ok = evaluate(&r, dec, last ? r.o.print_eval : 0, &er);
            if (ok) {
                fprintf(stderr,
                        "eval at step %d: loss %.4f  WER %.2f%%  CER %.2f%%  (%d utterances, "
                        "%.1f s)\n",
                        step, er.loss, 100 * er.wer, 100 * er.cer, er.n, now() - te);
                fmt(line, sizeof line,
                    "{\"step\": %d, \"eval_loss\": %.9g, \"wer\": %.6g, \"cer\": %.6g, "
                    "\"eval_utterances\": %d}",
                    step, er.loss, er.wer, er.cer, er.n);
                log_metrics(&r, line);
                if (er.wer < r.state.best_wer ||
                    (er.wer == r.state.best_wer && er.loss < r.state.best_loss)) {
                    r.state.best_wer = er.wer;
                    r.state.best_loss = er.loss;
                    r.state.best_step = step;
                    do_save = true;
                }
            }
            window_t += now() - te; /* evaluation is not step time */
        }
        if (ok && do_save) {
            ok = save_checkpoint(&r);
            if (ok && r.state.best_step == step) mark_best(&r);
        }
    }
    if (interrupted && ok) {
        fprintf(stderr, "interrupted: saving a checkpoint at step %d\n", r.state.step);
        ok = save_checkpoint(&r);
    }
    double total = now() - start_t;
    fprintf(stderr, "%d steps in %.1f s\n", r.state.step - first_step, total);
    print_profiles(&r);
    tg_loader_free(loader);
    free(border.idx);
    tg_whisper_decoder_free(dec);
    if (r.metrics) {
        fclose(r.metrics);
        r.metrics = NULL;
    }
    write_plot(&r);
    run_free(&r);
    return ok ? CLI_OK : CLI_FAIL;
}
