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
    /** The dtype of the weight variables the graph builders declare
     *  (TG_F32, the zero value, or TG_F16 / TG_BF16: read into f32 by a
     *  cast, so activations and accumulation stay f32). Not read from
     *  files: set it to match the dtype given to tg_whisper_load_weights. */
    tg_dtype weight_dtype;
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

/* ------------------------------------------------------------------ */
/* Model graphs (models/whisper.c, whisper_decode.c, mel.c)             */
/* ------------------------------------------------------------------ */

/* Whisper is built on the public graph API (docs/whisper.md). Weights are
 * variables named exactly as in Hugging Face checkpoints
 * ("model.encoder.layers.0.self_attn.q_proj.weight", ...), so a store
 * loaded from model.safetensors feeds the graphs directly. The logits use
 * model.decoder.embed_tokens.weight (proj_out is tied to it). */

#define TG_WHISPER_SAMPLE_RATE 16000
#define TG_WHISPER_N_FFT 400
#define TG_WHISPER_HOP 160
#define TG_WHISPER_N_SAMPLES 480000 /* 30 s */
#define TG_WHISPER_N_FRAMES 3000    /* log-Mel frames in 30 s */
/** Largest number of decoder layers the decoding helpers take. */
#define TG_WHISPER_MAX_LAYERS 64

/* Weights ----------------------------------------------------------- */

/** Number of tensors the model of `cfg` needs (proj_out.weight, tied, is
 *  not counted), and the i-th's Hugging Face name and shape (shape has
 *  TG_MAX_RANK entries). Names are at most 96 bytes with the NUL. */
int tg_whisper_weight_count(const tg_whisper_config *cfg);
tg_status tg_whisper_weight_info(const tg_whisper_config *cfg, int i, char *name, size_t name_size,
                                 int *rank, int64_t *shape);
/** Loads every weight from an open checkpoint into `store` as `dtype`
 *  (a float dtype), under the names above. Accepts names with or without
 *  the "model." prefix; proj_out.weight may be absent (tied) or equal to
 *  embed_tokens. Every missing, mis-shaped or unexpected tensor is
 *  reported in one TG_ERR_SHAPE / TG_ERR_NOT_FOUND message naming it and
 *  the expected and actual shapes; the store is changed only if all pass. */
tg_status tg_whisper_load_weights(tg_store *store, const tg_whisper_config *cfg,
                                  const tg_safetensors *st, tg_dtype dtype);
/** openai-whisper's sinusoidal encoder positions: out [length, channels]
 *  (channels even, >= 4): sin(t * e^(-i*ln(10000)/(channels/2-1))) in the
 *  first half, cos in the second. */
tg_status tg_whisper_sinusoids(int length, int channels, float *out);

/* Graphs ------------------------------------------------------------ */

/** The encoder on `mel` f32 [B, num_mel_bins, 2 * max_source_positions]:
 *  returns the hidden states f32 [B, max_source_positions, d_model]. */
tg_tensor tg_whisper_build_encoder(tg_graph *g, const tg_whisper_config *cfg, tg_tensor mel);
/** The full-sequence decoder (teacher forcing): tokens i32 [B, T] with a
 *  static T <= max_target_positions, encoder_out [B, S, d_model] -> logits
 *  f32 [B, T, vocab_size]. Causal: logits at t depend on tokens <= t only. */
tg_tensor tg_whisper_build_decoder(tg_graph *g, const tg_whisper_config *cfg, tg_tensor tokens,
                                   tg_tensor encoder_out);

/** Names of the decoding state variables: the self-attention cache of
 *  layer i ("whisper.cache.self.<i>.k" / ".v", f32 [B, heads, max_len,
 *  head_dim]) and the cross-attention keys/values ("whisper.cache.cross.
 *  <i>.k" / ".v", f32 [B, heads, max_source_positions, head_dim]). */
void tg_whisper_cache_name(char *buf, size_t size, bool cross, int layer, char kv);

/** The cross-attention keys and values of every decoder layer from
 *  `encoder_out` [B, S, d_model], written into their cache variables:
 *  assigns[0 .. 2*decoder_layers) receive the assign ops (run them as
 *  target operations once per audio window). */
tg_status tg_whisper_build_cross_kv(tg_graph *g, const tg_whisper_config *cfg,
                                    tg_tensor encoder_out, tg_tensor *assigns);

/** The single-token decoder step for a KV cache of `max_len` positions. */
typedef struct tg_whisper_step {
    tg_tensor tokens;   /* placeholder "tokens" i32 [B, 1] */
    tg_tensor position; /* placeholder "position" i32 [1]: where the token goes */
    tg_tensor logits;   /* f32 [B, vocab_size] */
    int n_updates;      /* 2 * decoder_layers */
    tg_tensor updates[2 * TG_WHISPER_MAX_LAYERS]; /* slice_update ops: target operations */
} tg_whisper_step;

/** Builds the step: the token at `position` attends to cache entries
 *  0..position (an additive mask from iota > position), its keys and
 *  values are written into the cache with slice_update, and the
 *  cross-attention reads the cross cache. One graph for every position:
 *  compiled once, fed the position per step. */
tg_status tg_whisper_build_step(tg_graph *g, const tg_whisper_config *cfg, int batch, int max_len,
                                tg_whisper_step *out);

/* Decoding ---------------------------------------------------------- */

/** A decoder with a KV cache: the cross-KV and step graphs, compiled once
 *  for `dev`, or run on the reference interpreter when dev is NULL.
 *  Weights are read from `store` (which also holds the caches). */
typedef struct tg_whisper_decoder tg_whisper_decoder;

tg_status tg_whisper_decoder_new(const tg_whisper_config *cfg, tg_store *store, tg_device *dev,
                                 int batch, int max_len, tg_whisper_decoder **out);
void tg_whisper_decoder_free(tg_whisper_decoder *d);
/** Computes the cross-attention cache from encoder_out f32 [B, S, d]. */
tg_status tg_whisper_decoder_set_audio(tg_whisper_decoder *d, const tg_array *encoder_out);
/** One step: tokens[B] at `position` -> logits f32 [B, vocab] (allocated). */
tg_status tg_whisper_decoder_step(tg_whisper_decoder *d, const int32_t *tokens, int position,
                                  tg_array *logits);
/** Shape specialisations the step executable has compiled: 1 after any
 *  number of steps on a device (the position is data), 0 on the
 *  interpreter. */
int tg_whisper_decoder_step_compiles(const tg_whisper_decoder *d);
/** Greedy decoding after set_audio. prompt is [B, n_prompt] row-major;
 *  out is [B, max_len] row-major and receives the prompt followed by the
 *  argmax tokens, until every row has produced `eos` (eos < 0: never) or
 *  max_len tokens exist. lengths[b] receives row b's length (eos
 *  included); rows that ended are padded with eos. */
tg_status tg_whisper_greedy(tg_whisper_decoder *d, const int32_t *prompt, int n_prompt, int32_t eos,
                            int32_t *out, int *lengths);

/** Rows of the step (n_audio * beam_size for tg_whisper_decode), its
 *  cache length, and the config it was built for. */
int tg_whisper_decoder_batch(const tg_whisper_decoder *d);
int tg_whisper_decoder_max_len(const tg_whisper_decoder *d);
const tg_whisper_config *tg_whisper_decoder_config(const tg_whisper_decoder *d);
/** Reorders the self-attention caches for beam search: row b becomes the
 *  old row source[b] (rows may repeat). A gather executable compiled at
 *  the first call; an identity source does nothing. */
tg_status tg_whisper_decoder_reorder(tg_whisper_decoder *d, const int32_t *source);

/* Search: language, logit filters, greedy and beam search (whisper_search.c) */

/** Options of one window's decoding: openai-whisper's DecodingOptions at
 *  temperature 0. Fill with tg_whisper_decode_options_default. */
typedef struct tg_whisper_decode_options {
    int beam_size;    /* 1: greedy; N: beam search with N beams */
    int32_t language; /* a language token id; -1: detect (multilingual models) */
    bool translate;   /* the task token: <|translate|> instead of <|transcribe|> */
    bool timestamps;  /* sample timestamp tokens (else <|notimestamps|>) */
    /** Most tokens sampled per window; 0: max_target_positions / 2. Also
     *  bounded by the decoder's max_len minus the prompt. */
    int sample_len;
    /** The first timestamp is at most this many seconds (1.0); < 0: any. */
    double max_initial_timestamp;
    bool suppress_blank;  /* begin_suppress_tokens at the first sampled token */
    bool suppress_tokens; /* suppress_tokens and the task/start/nospeech tokens */
} tg_whisper_decode_options;

/** beam 1, language -1, transcribe, no timestamps, max initial timestamp
 *  1 s, both suppressions on. */
void tg_whisper_decode_options_default(tg_whisper_decode_options *o);

/** The result of one audio's window. */
typedef struct tg_whisper_decoding {
    int32_t language;     /* the language token used; -1 for English-only models */
    double language_prob; /* its probability when detected, else 1 */
    int n_tokens;         /* sampled tokens, <|endoftext|> not included */
    int32_t *tokens;      /* malloc'ed */
    double sum_logprob;   /* of the tokens and the final <|endoftext|> */
    double avg_logprob;   /* sum_logprob / (n_tokens + 1) */
} tg_whisper_decoding;
void tg_whisper_decoding_free(tg_whisper_decoding *r);

/** Decodes one window per audio: encoder_out f32 [n_audio, S, d], with
 *  the decoder built for n_audio * beam_size rows. The cross caches are
 *  set here (each audio repeated for its beams). languages[a] >= 0 fixes
 *  audio a's language (NULL: o->language for all); otherwise multilingual
 *  models detect it. results[0 .. n_audio) receive the tokens. */
tg_status tg_whisper_decode(tg_whisper_decoder *d, const tg_array *encoder_out,
                            const tg_whisper_decode_options *o, const int32_t *languages,
                            tg_whisper_decoding *results);
/** After set_audio: one step of <|startoftranscript|> per row, the argmax
 *  over the language tokens (ids[row]) and its probability among them
 *  (probs may be NULL). */
tg_status tg_whisper_detect_language(tg_whisper_decoder *d, int32_t *ids, double *probs);
/** The logit filters of one row, in place, in openai-whisper's order:
 *  begin_suppress_tokens when n_tokens == sample_begin; suppress_tokens
 *  and <|startoftranscript|>, the task tokens, <|startofprev|>,
 *  <|startoflm|>, <|nospeech|>; with timestamps, its rules (timestamps in
 *  pairs, never decreasing, segments of nonzero length, the first token a
 *  timestamp <= max_initial_timestamp, and a timestamp forced when the
 *  timestamps' total probability exceeds every text token's). tokens holds
 *  the prompt (sample_begin tokens) and what was sampled. Timestamps follow
 *  <|notimestamps|> (no_timestamps_token_id + 1 = <|0.00|>), 0.02 s each. */
void tg_whisper_filter_logits(const tg_whisper_config *cfg, const tg_whisper_decode_options *o,
                              const int32_t *tokens, int n_tokens, int sample_begin,
                              float *logits);

/* Transcription: segments, windows, files (whisper_search.c, whisper_transcribe.c) */

/** A segment of a transcript: times in seconds from the file's start. */
typedef struct tg_whisper_segment {
    double start, end;
    int n_tokens;
    int32_t *tokens; /* in a transcript: malloc'ed, timestamps included */
    int first;       /* tg_whisper_split_segments: the first token's index */
    double avg_logprob; /* of the window it came from */
} tg_whisper_segment;

/** openai-whisper's transcribe() step after a window: the window's
 *  sampled tokens are cut into segments after every pair of consecutive
 *  timestamps (and at the end when it is a lone timestamp); without a
 *  pair the whole window is one segment. *seek_advance receives the Mel
 *  frames to move: to the last pair's timestamp, else the whole window
 *  (segment_frames). *segments is malloc'ed; their tokens are given by
 *  first and n_tokens (tokens is NULL). */
tg_status tg_whisper_split_segments(const tg_whisper_config *cfg, const int32_t *tokens,
                                    int n_tokens, double time_offset, int segment_frames,
                                    tg_whisper_segment **segments, int *n_segments,
                                    int *seek_advance);

/** The transcript of one file. */
typedef struct tg_whisper_transcript {
    int32_t language;     /* detected on the first window, or given; -1: none */
    double language_prob;
    int n_windows;
    int n_segments;
    tg_whisper_segment *segments;
    int64_t n_sampled; /* tokens sampled over all windows */
} tg_whisper_transcript;
void tg_whisper_transcript_free(tg_whisper_transcript *t);

/** What a progress callback is told after each batch of windows. */
typedef struct tg_whisper_progress {
    int file;           /* index into the files of tg_whisper_transcribe */
    int window;         /* 0-based window of that file */
    double seconds;     /* where the window starts */
    int tokens;         /* tokens sampled in the window */
    double encode_seconds, decode_seconds; /* of the batch it was part of */
} tg_whisper_progress;
typedef void (*tg_whisper_progress_fn)(void *user, const tg_whisper_progress *p);

/** Encoder, log-Mel and decoder executables for batches of `batch_size`
 *  files decoded with `beam_size` beams and a cache of max_len tokens,
 *  compiled once for `dev` (NULL: the interpreter). */
typedef struct tg_whisper_transcriber tg_whisper_transcriber;
tg_status tg_whisper_transcriber_new(const tg_whisper_config *cfg, tg_store *store, tg_device *dev,
                                     int batch_size, int beam_size, int max_len,
                                     tg_whisper_transcriber **out);
void tg_whisper_transcriber_free(tg_whisper_transcriber *t);
/** Mel frames per window (2 * max_source_positions: 3000) and samples. */
int tg_whisper_window_frames(const tg_whisper_config *cfg);
/** The log-Mel of a whole file of n samples (16 kHz mono): f32 [n_mels,
 *  frames] with one window of padding after the content (as openai-whisper
 *  pads 30 s of zeros), computed window by window on the log-Mel graph and
 *  clamped to (global max - 8) as one spectrogram; *content_frames =
 *  n / 160. */
tg_status tg_whisper_transcriber_mel(tg_whisper_transcriber *t, const float *samples, int64_t n,
                                     tg_array *mel, int64_t *content_frames);
/** Transcribes files given as log-Mel f32 [n_mels, frames] (frames past
 *  content_frames[i] are padding), batch_size at a time, window after
 *  window: a window starts at the file's seek, is decoded, cut into
 *  segments, and the seek moves (tg_whisper_split_segments). Without a
 *  fixed language, each file's language is detected on its first window.
 *  progress may be NULL. out[0 .. n_files) receive the transcripts. */
tg_status tg_whisper_transcribe(tg_whisper_transcriber *t, int n_files, const tg_array *mels,
                                const int64_t *content_frames, const tg_whisper_decode_options *o,
                                tg_whisper_progress_fn progress, void *user,
                                tg_whisper_transcript *out);

/* Log-Mel front end ------------------------------------------------- */

/** The Slaney-style Mel filterbank of librosa (htk=False, norm="slaney",
 *  fmin 0, fmax 8000) for 16 kHz and n_fft 400: out [n_mels, 201]. */
tg_status tg_whisper_mel_filters(int n_mels, float *out);
/** Whisper's log-Mel spectrogram as graph ops: audio f32 [B, N] (N a
 *  multiple of 160, >= 480; 480000 for a 30-s window) -> f32 [B, n_mels,
 *  N / 160]: reflect padding by 200, periodic Hann, a DFT matmul, power,
 *  the last frame dropped, Mel filters, log10(max(x, 1e-10)), max(x,
 *  max(x) - 8) per batch item, (x + 4) / 4. */
tg_tensor tg_whisper_log_mel(tg_graph *g, tg_tensor audio, int n_mels);
/** Pads with zeros or trims `n` samples to `n_out` (TG_WHISPER_N_SAMPLES
 *  for a window): out has n_out floats. */
void tg_whisper_pad_or_trim(const float *samples, int64_t n, float *out, int64_t n_out);

#ifdef __cplusplus
}
#endif
#endif /* TG_WHISPER_H */
