/* cli_transcribe.c — `graph transcribe --model DIR FILES...`: audio files
 * to transcripts with a Whisper checkpoint (or random weights of a preset's
 * shape, for benchmarks), on the Vulkan device. */
#define _POSIX_C_SOURCE 200809L /* stat, mkdir */
#include "frontend/audio.h"
#include "frontend/cli.h"
#include "frontend/transcript.h"
#include "tg_whisper.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char cli_transcribe_help[] =
    "usage: graph transcribe --model DIR|PRESET [options] AUDIO...\n"
    "\n"
    "Transcribes audio files (any format libsndfile reads) with Whisper, window\n"
    "after 30-second window, seeking by the last timestamp as openai-whisper does.\n"
    "  --model DIR       a Hugging Face model directory: config.json,\n"
    "                    model.safetensors (or sharded), tokenizer.json (or\n"
    "                    vocab.json + merges.txt), generation_config.json\n"
    "  --model PRESET    tiny, base, small, ... with RANDOM weights: the output is\n"
    "                    meaningless (for benchmarks; text is shown as token ids)\n"
    "  --language L      a language code (en, de, ...) or auto (default: detect\n"
    "                    on each file's first window)\n"
    "  --task T          transcribe (default) or translate (to English)\n"
    "  --beam-size N     beams of the beam search (default 1: greedy)\n"
    "  --batch-size N    files decoded together (default 1)\n"
    "  --output-format F txt (default), json, srt or vtt\n"
    "  --output-dir DIR  write DIR/NAME.FORMAT per file (default: stdout)\n"
    "  --dtype D         weights in f32 (default) or f16 (activations stay f32)\n"
    "  --max-len N       decoder cache length per window, prompt included\n"
    "                    (default: the model's max_target_positions)\n"
    "  --no-timestamps   decode without timestamp tokens (one segment a window)\n"
    "  --interp          run on the reference interpreter instead of the device\n";

typedef struct options {
    const char *model, *language, *task, *format, *output_dir, *dtype;
    int beam_size, batch_size, max_len;
    bool timestamps, interp;
} options;

/* Parses a positive integer option value. */
static bool positive(const char *command, const char *flag, const char *value, int *out) {
    char *end = NULL;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || !end || *end || v < 1 || v > 100000) {
        cli_usage_error(command, "%s takes a positive integer, got '%s'", flag, value);
        return false;
    }
    *out = (int)v;
    return true;
}

/* Random weights of the config's shapes: N(0, 0.02)-like uniform values,
 * LayerNorm weights 1, the sinusoidal encoder positions. */
static tg_status random_weights(tg_store *store, const tg_whisper_config *cfg, tg_dtype dtype) {
    uint64_t state = 0x9e3779b97f4a7c15ull;
    int n = tg_whisper_weight_count(cfg);
    tg_status st = TG_OK;
    for (int i = 0; i < n && st == TG_OK; i++) {
        char name[96];
        int rank;
        int64_t shape[TG_MAX_RANK];
        st = tg_whisper_weight_info(cfg, i, name, sizeof name, &rank, shape);
        tg_array a = {0};
        if (st == TG_OK) st = tg_array_alloc(&a, TG_F32, rank, shape);
        if (st != TG_OK) break;
        float *x = a.data;
        int64_t count = tg_array_count(&a);
        bool norm_weight = strstr(name, "layer_norm.weight") != NULL;
        if (strcmp(name, "model.encoder.embed_positions.weight") == 0) {
            st = tg_whisper_sinusoids((int)shape[0], (int)shape[1], x);
        } else {
            for (int64_t k = 0; k < count; k++) {
                state = state * 6364136223846793005ull + 1442695040888963407ull;
                double u = (double)(state >> 11) / 9007199254740992.0; /* [0, 1) */
                x[k] = norm_weight ? 1.0f : (float)(0.07 * (u - 0.5));
            }
        }
        if (st == TG_OK && dtype != TG_F32) {
            tg_array c = {0};
            st = tg_array_alloc(&c, dtype, rank, shape);
            for (int64_t k = 0; st == TG_OK && k < count; k++) tg_array_set(&c, k, x[k]);
            tg_array_free(&a);
            a = c;
        }
        if (st == TG_OK) st = tg_store_set(store, name, &a);
        tg_array_free(&a);
    }
    return st;
}

static bool is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* "dir/name.flac" -> "name" */
static void base_name(const char *path, char *out, size_t size) {
    const char *slash = strrchr(path, '/');
    const char *b = slash ? slash + 1 : path;
    snprintf(out, size, "%s", b);
    char *dot = strrchr(out, '.');
    if (dot && dot != out) *dot = '\0';
}

typedef struct progress_state {
    char **files;
    int n_files;
    const int64_t *frames;
} progress_state;

static void on_progress(void *user, const tg_whisper_progress *p) {
    const progress_state *s = user;
    double total = (double)s->frames[p->file] * TG_WHISPER_HOP / TG_WHISPER_SAMPLE_RATE;
    fprintf(stderr,
            "graph transcribe: %s: window %d at %.1f of %.1f s: %d tokens, %.1f tokens/s "
            "(encoder %.2f s, decoder %.2f s for the batch)\n",
            s->files[p->file], p->window + 1, p->seconds, total, p->tokens,
            p->decode_seconds > 0 ? p->tokens / p->decode_seconds : 0.0, p->encode_seconds,
            p->decode_seconds);
}

static int parse(int argc, char **argv, options *o, char ***files, int *n_files) {
    const char *command = "transcribe";
    memset(o, 0, sizeof *o);
    o->beam_size = o->batch_size = 1;
    o->timestamps = true;
    o->format = "txt";
    o->dtype = "f32";
    *files = calloc((size_t)argc, sizeof **files);
    *n_files = 0;
    if (!*files) {
        cli_error("out of memory");
        return CLI_FAIL;
    }
    struct {
        const char *flag;
        const char **value;
    } strings[] = {{"--model", &o->model},
                   {"--language", &o->language},
                   {"--task", &o->task},
                   {"--output-format", &o->format},
                   {"--output-dir", &o->output_dir},
                   {"--dtype", &o->dtype}};
    struct {
        const char *flag;
        int *value;
    } ints[] = {{"--beam-size", &o->beam_size},
                {"--batch-size", &o->batch_size},
                {"--max-len", &o->max_len}};
    for (int i = 1; i < argc;) {
        bool matched = false;
        for (size_t k = 0; k < sizeof strings / sizeof strings[0] && !matched; k++) {
            int took = cli_take_value(command, argc, argv, &i, strings[k].flag, strings[k].value);
            if (took < 0) return CLI_USAGE;
            matched = took;
        }
        for (size_t k = 0; k < sizeof ints / sizeof ints[0] && !matched; k++) {
            const char *value = NULL;
            int took = cli_take_value(command, argc, argv, &i, ints[k].flag, &value);
            if (took < 0) return CLI_USAGE;
            if (took && !positive(command, ints[k].flag, value, ints[k].value)) return CLI_USAGE;
            matched = took;
        }
        if (matched) continue;
        if (strcmp(argv[i], "--no-timestamps") == 0)
            o->timestamps = false;
        else if (strcmp(argv[i], "--interp") == 0)
            o->interp = true;
        else if (argv[i][0] == '-' && argv[i][1])
            return cli_usage_error(command, "unknown option '%s'", argv[i]);
        else
            (*files)[(*n_files)++] = argv[i];
        i++;
    }
    if (!o->model) return cli_usage_error(command, "missing --model DIR|PRESET");
    if (*n_files == 0) return cli_usage_error(command, "missing AUDIO files");
    tg_transcript_format f;
    if (!tg_transcript_format_from_name(o->format, &f))
        return cli_usage_error(command, "--output-format is txt, json, srt or vtt, got '%s'",
                               o->format);
    if (o->task && strcmp(o->task, "transcribe") != 0 && strcmp(o->task, "translate") != 0)
        return cli_usage_error(command, "--task is transcribe or translate, got '%s'", o->task);
    if (strcmp(o->dtype, "f32") != 0 && strcmp(o->dtype, "f16") != 0)
        return cli_usage_error(command, "--dtype is f32 or f16, got '%s'", o->dtype);
    return CLI_OK;
}

int cli_transcribe(int argc, char **argv) {
    options o;
    char **files = NULL;
    int n_files = 0;
    int rc = parse(argc, argv, &o, &files, &n_files);
    if (rc != CLI_OK) {
        free(files);
        return rc;
    }
    rc = CLI_FAIL;
    tg_dtype dtype = strcmp(o.dtype, "f16") == 0 ? TG_F16 : TG_F32;
    tg_transcript_format format;
    tg_transcript_format_from_name(o.format, &format);

    tg_whisper_config cfg;
    tg_store *store = tg_store_new();
    tg_tokenizer *tok = NULL;
    tg_device *dev = NULL;
    tg_whisper_transcriber *tr = NULL;
    tg_array *mels = calloc((size_t)n_files, sizeof *mels);
    int64_t *frames = calloc((size_t)n_files, sizeof *frames);
    tg_whisper_transcript *out = calloc((size_t)n_files, sizeof *out);
    if (!store || !mels || !frames || !out) {
        cli_error("out of memory");
        goto done;
    }

    /* The model: a directory, or a preset with random weights. */
    if (is_dir(o.model)) {
        tg_safetensors *st = NULL;
        if (tg_whisper_config_load(o.model, &cfg) != TG_OK ||
            tg_tokenizer_load(o.model, &tok) != TG_OK ||
            tg_safetensors_open_dir(o.model, &st) != TG_OK) {
            cli_error("%s", tg_last_error());
            goto done;
        }
        tg_status s = tg_whisper_load_weights(store, &cfg, st, dtype);
        tg_safetensors_close(st);
        if (s != TG_OK) {
            cli_error("%s: %s", o.model, tg_last_error());
            goto done;
        }
    } else if (tg_whisper_config_preset(o.model, &cfg) == TG_OK) {
        fprintf(stderr,
                "graph transcribe: warning: --model %s is a preset: RANDOM weights, the output "
                "is meaningless (use a model directory for real transcripts)\n",
                o.model);
        if (random_weights(store, &cfg, dtype) != TG_OK) {
            cli_error("random weights: %s", tg_last_error());
            goto done;
        }
    } else {
        cli_error("%s: not a model directory, and %s", o.model, tg_last_error());
        goto done;
    }
    cfg.weight_dtype = dtype;

    tg_whisper_decode_options dopt;
    tg_whisper_decode_options_default(&dopt);
    dopt.beam_size = o.beam_size;
    dopt.translate = o.task && strcmp(o.task, "translate") == 0;
    dopt.timestamps = o.timestamps;
    if (o.language && strcmp(o.language, "auto") != 0) {
        dopt.language = tg_whisper_language_id(&cfg, o.language);
        if (dopt.language < 0) {
            cli_error("%s: unknown language '%s' (the model has %d language tokens)", o.model,
                      o.language, cfg.n_languages);
            goto done;
        }
    }
    int max_len = o.max_len ? o.max_len : cfg.max_target_positions;
    if (max_len > cfg.max_target_positions) {
        cli_error("--max-len %d exceeds the model's max_target_positions %d", max_len,
                  cfg.max_target_positions);
        goto done;
    }

    if (!o.interp && tg_device_open(-1, &dev) != TG_OK) {
        cli_error("%s", tg_last_error());
        goto done;
    }
    fprintf(stderr, "graph transcribe: compiling (batch %d, beam %d, max_len %d, %s weights)\n",
            o.batch_size, o.beam_size, max_len, o.dtype);
    if (tg_whisper_transcriber_new(&cfg, store, dev, o.batch_size, o.beam_size, max_len, &tr) !=
        TG_OK) {
        cli_error("%s: %s", o.model, tg_last_error());
        goto done;
    }
    for (int i = 0; i < n_files; i++) {
        float *samples = NULL;
        int64_t n = 0;
        if (tg_audio_load(files[i], TG_WHISPER_SAMPLE_RATE, &samples, &n) != TG_OK) {
            cli_error("%s", tg_last_error());
            goto done;
        }
        tg_status s = tg_whisper_transcriber_mel(tr, samples, n, &mels[i], &frames[i]);
        free(samples);
        if (s != TG_OK) {
            cli_error("%s: log-Mel: %s", files[i], tg_last_error());
            goto done;
        }
    }
    progress_state ps = {files, n_files, frames};
    if (tg_whisper_transcribe(tr, n_files, mels, frames, &dopt, on_progress, &ps, out) != TG_OK) {
        cli_error("transcribing: %s", tg_last_error());
        goto done;
    }
    if (o.output_dir && !is_dir(o.output_dir) && mkdir(o.output_dir, 0777) != 0) {
        cli_error("%s: cannot create the directory: %s", o.output_dir, strerror(errno));
        goto done;
    }
    rc = CLI_OK;
    for (int i = 0; i < n_files && rc == CLI_OK; i++) {
        char *text = NULL;
        if (tg_transcript_render(&out[i], tok, &cfg, files[i], format, &text) != TG_OK) {
            cli_error("%s: %s", files[i], tg_last_error());
            rc = CLI_FAIL;
            break;
        }
        char path[4096], name[1024];
        base_name(files[i], name, sizeof name);
        snprintf(path, sizeof path, "%s/%s.%s", o.output_dir ? o.output_dir : ".", name,
                 tg_transcript_format_name(format));
        if (!cli_write_text(o.output_dir ? path : NULL, text)) rc = CLI_FAIL;
        else if (o.output_dir)
            fprintf(stderr, "graph transcribe: %s -> %s\n", files[i], path);
        free(text);
    }
done:
    for (int i = 0; i < n_files; i++) {
        if (mels) tg_array_free(&mels[i]);
        if (out) tg_whisper_transcript_free(&out[i]);
    }
    free(mels);
    free(frames);
    free(out);
    tg_whisper_transcriber_free(tr);
    tg_tokenizer_free(tok);
    tg_store_free(store);
    tg_device_free(dev);
    free(files);
    return rc;
}
