/* manifest.h — speech data sets for training (frontend/lib_manifest.c).
 *
 * A manifest is JSON Lines, one utterance a line:
 *
 *   {"audio": "clips/0001.wav", "text": "the red cat sat"}
 *
 * Audio paths are relative to the manifest's directory (absolute paths are
 * kept). Manifests and audio are untrusted input: a bad line (not JSON,
 * not an object, "audio" or "text" missing, not a string or empty, a NUL
 * byte) is skipped with a warning; so is, when the data set is built, a
 * record whose audio cannot be read, is longer than the window, or whose
 * labels do not fit the decoder. Nothing aborts: the warnings are counted
 * and kept for the caller to print.
 *
 * A data set holds, for every usable record, the log-Mel spectrogram of its
 * audio padded to the window (computed on the device once, and cached as
 * .npy in a cache directory keyed by the manifest's contents and the
 * window), and its label sequence
 *   <|startoftranscript|> <|lang|> <|transcribe|> <|notimestamps|> text <|endoftext|>
 * A batch gives the decoder the sequence without its last token (inputs
 * shifted right) and the loss the sequence without its first; positions
 * past the end are padded with <|endoftext|> and labelled -100.
 *
 * Batches follow a deterministic order: epoch e is a permutation of the
 * records drawn from (seed, e); the k-th batch is samples k*B .. k*B+B-1 of
 * the concatenated epochs. The position in the data is thus one number. */
#ifndef TG_FRONTEND_MANIFEST_H
#define TG_FRONTEND_MANIFEST_H

#include "tg_whisper.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Warnings kept verbatim (more are only counted). */
#define TG_MANIFEST_MAX_WARNINGS 64

typedef struct tg_manifest_record {
    char *audio; /* the path, resolved against the manifest's directory */
    char *text;
    int line; /* 1-based line in the manifest */
} tg_manifest_record;

typedef struct tg_manifest {
    int n; /* usable records */
    tg_manifest_record *records;
    int n_skipped;  /* bad lines */
    int n_warnings; /* kept messages, <= TG_MANIFEST_MAX_WARNINGS */
    char *warnings[TG_MANIFEST_MAX_WARNINGS];
    uint64_t hash; /* FNV-1a of the manifest's bytes and directory */
} tg_manifest;

/** Parses manifest text. `dir` is what relative audio paths are relative
 *  to (NULL or "": kept as written); `label` names it in warnings. Blank
 *  lines are ignored. Bad lines are skipped and counted. Fails only on
 *  NULL arguments or when out of memory. */
tg_status tg_manifest_parse(const char *text, size_t len, const char *dir, const char *label,
                            tg_manifest **out);
/** Reads and parses a manifest file (at most 1 GiB). */
tg_status tg_manifest_load(const char *path, tg_manifest **out);
void tg_manifest_free(tg_manifest *m);

/* ------------------------------------------------------------------ */
/* Data sets                                                           */
/* ------------------------------------------------------------------ */

typedef struct tg_dataset_options {
    const tg_tokenizer *tokenizer;
    int32_t prompt[4]; /* sot, language, task, notimestamps; -1 entries are left out */
    int32_t eot;
    int n_mels;
    int window_samples;    /* a multiple of 160, >= 480: 64000 for 4 s */
    int max_tokens;        /* the longest label sequence kept (prompt + text + eot) */
    tg_device *dev;        /* computes the log-Mel; NULL: the interpreter */
    const char *cache_dir; /* NULL: no cache */
} tg_dataset_options;

typedef struct tg_dataset {
    int n;              /* usable records */
    int n_mels, frames; /* frames = window_samples / 160 */
    float *mels;        /* [n, n_mels, frames] */
    int max_tokens;
    int32_t *seqs; /* [n, max_tokens] label sequences */
    int *seq_len;  /* [n] */
    char **texts;  /* [n] the transcripts */
    int *record;   /* [n] index of the manifest record */
    int n_skipped;
    int n_warnings;
    char *warnings[TG_MANIFEST_MAX_WARNINGS];
    bool from_cache;
} tg_dataset;

/** Builds the data set of a manifest: tokenizes the texts, reads every
 *  audio file at 16 kHz mono, computes the log-Mel spectrograms (or reads
 *  them from the cache). Records that cannot be used are skipped with a
 *  warning. */
tg_status tg_dataset_build(const tg_manifest *m, const tg_dataset_options *o, tg_dataset **out);
void tg_dataset_free(tg_dataset *d);

/** Epoch `epoch`'s order of the records: perm[0 .. n) receives a
 *  permutation of 0 .. n-1 drawn from (seed, epoch). Sample p of the data
 *  order is record perm_{p / n}[p % n]. */
void tg_dataset_permutation(const tg_dataset *d, uint64_t seed, int64_t epoch, int *perm);

/** Fills one batch: the records idx[0 .. B): mel [B, n_mels, frames],
 *  tokens and labels [B, T] (sequences longer than T + 1 are cut). */
void tg_dataset_batch(const tg_dataset *d, const int *idx, int B, int T, int32_t pad, float *mel,
                      int32_t *tokens, int32_t *labels);

/** A loader thread that assembles batch k+1 while batch k trains, in two
 *  buffers. Batches are named by a key: the shuffled order of
 *  tg_loader_new keys them by their first sample's position (the next is
 *  position + B); tg_loader_new_custom takes any order through a fill
 *  function and a key stride (e.g. the bucketed order of `graph train`,
 *  keyed by batch index). */
typedef struct tg_loader tg_loader;

/** One batch: mel [B, n_mels, frames], tokens and labels [B, T], with
 *  the frames and T of its shape; `bucket` is the fill's to set. */
typedef struct tg_loader_batch {
    float *mel;
    int32_t *tokens, *labels;
    int bucket;
} tg_loader_batch;

/** Writes batch `key` into b (runs on the loader thread, or on the
 *  caller's when the batch was not prefetched; never both at once). */
typedef void (*tg_loader_fill)(void *ctx, int64_t key, tg_loader_batch *b);

/** The shuffled order of d (tg_dataset_permutation): batches of B records,
 *  labels T long. */
tg_status tg_loader_new(const tg_dataset *d, uint64_t seed, int B, int T, int32_t pad,
                        tg_loader **out);
/** Any order: buffers of mel_floats floats and label_count tokens and
 *  labels (the largest batch); after batch key, key + stride is
 *  prepared. */
tg_status tg_loader_new_custom(int B, size_t mel_floats, size_t label_count, int64_t stride,
                               tg_loader_fill fill, void *ctx, tg_loader **out);
/** Batch `key`, valid until the next call; starts preparing the next. */
tg_status tg_loader_next(tg_loader *l, int64_t key, const tg_loader_batch **out);
/** The batch starting at sample `position` of the order: pointers into
 *  the loader's buffers, valid until the next call. Starts preparing the
 *  batch at position + B before it returns. */
tg_status tg_loader_get(tg_loader *l, int64_t position, const float **mel, const int32_t **tokens,
                        const int32_t **labels);
void tg_loader_free(tg_loader *l);

#ifdef __cplusplus
}
#endif
#endif /* TG_FRONTEND_MANIFEST_H */
