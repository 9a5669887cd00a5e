/* whisper_train.h — the Whisper training step (models/whisper_train.c).
 *
 * One graph holds the whole step: the encoder on a batch of log-Mel
 * windows, the decoder with teacher forcing, the mean cross-entropy over
 * the labels that are not -100, tg_gradients with respect to every
 * trainable weight (the encoder's sinusoidal position table is frozen, and
 * with freeze_encoder the whole encoder), global-norm clipping and one
 * AdamW op per weight. It is compiled once for one batch shape and
 * replayed; the learning rate and the step number are fed, so a schedule
 * on the host never recompiles anything. Built on the public API only
 * (include/tg.h, include/tg_whisper.h). */
#ifndef TG_MODELS_WHISPER_TRAIN_H
#define TG_MODELS_WHISPER_TRAIN_H

#include "tg_whisper.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The label that the loss ignores (transformers' -100). */
#define TG_WHISPER_IGNORE (-100)

typedef struct tg_whisper_train_options {
    int batch;    /* rows per step */
    int n_tokens; /* decoder positions per row (static T) */
    double beta1, beta2, eps, weight_decay;
    double max_grad_norm; /* <= 0: no clipping */
    bool freeze_encoder;
    /** Build conv1d and attention from primitives (im2col + matmul;
     *  matmul + softmax + matmul) instead of tg_conv1d / tg_attention:
     *  the same function, faster where those kernels are slow (CPU). */
    bool primitive_ops;
    /** Gradient accumulation: > 1 gives an optimizer step per accum_steps
     *  micro-batches (tg_whisper_trainer_accumulate each, then
     *  tg_whisper_trainer_apply); each micro-batch's gradient weighs
     *  1/accum_steps. 0 or 1: tg_whisper_trainer_step. */
    int accum_steps;
    /** Encoder positions of this step's windows: 0 is the config's
     *  max_source_positions; fewer (a length bucket) read the first rows
     *  of the position table, and mel is [B, mels, 2 * source_positions].
     *  Trainers of several bucket shapes can share one store. */
    int source_positions;
    /** TG_F32, or TG_F16 (mixed precision, needs primitive_ops): every
     *  matmul (linear layers, the im2col convolutions, attention scores
     *  and values, the output projection) reads f16 operands and
     *  accumulates in f32; master weights, AdamW moments, layer norms,
     *  softmax and the loss stay f32. The loss is multiplied by a dynamic
     *  scale before tg_gradients; gradients are unscaled before
     *  clipping; a step whose gradients are not finite is skipped
     *  (weights and moments unchanged) and halves the scale. */
    tg_dtype precision;
    double loss_scale;         /* the initial scale (65536) */
    int scale_growth_interval; /* good steps after which the scale doubles (2000) */
    /** With primitive_ops, an attention whose scores per row and head
     *  (Tq * Tk) reach this many elements, or whose scores of the whole
     *  batch [B, heads, Tq, Tk] would pass 64 MiB as f32, is tg_attention
     *  (the flash kernel: no [Tq, Tk] buffer; its backward recomputes the
     *  probabilities from the log-sum-exp) instead of matmul + softmax +
     *  matmul. It stays f32 with f16 precision (q, k, v are the f32
     *  outputs of the projections): its softmax is f32. Default 1,000,000:
     *  the 30-s encoder (1500^2) is fused, the 10-s one (500^2), cross
     *  and decoder attention are not (on lavapipe flash attention is 1.7x
     *  slower at T = 448 and on par at T = 1500, docs/training.md). 1:
     *  every attention. */
    int64_t fused_attention_min_scores;
    /** Label smoothing eps in [0, 1) (0, off): the loss is
     *  (1 - eps) * cross-entropy + eps * the mean over the vocabulary of
     *  -log p, each averaged over the labels that are not ignored, as
     *  torch.nn.functional.cross_entropy(label_smoothing = eps,
     *  ignore_index = -100) and transformers' LabelSmoother. The loss the
     *  trainer reports is this one. 0 adds nothing to the graph. */
    double label_smoothing;
} tg_whisper_train_options;

/** Dynamic loss scaling state (f16): kept by the trainer, saved in
 *  checkpoints. Several trainers sharing one store (length buckets) share
 *  it by get/set around each step. */
typedef struct tg_whisper_loss_scaler {
    double scale;
    int good_steps;  /* finite steps since the scale last changed */
    int64_t skipped; /* steps skipped because a gradient was not finite */
} tg_whisper_loss_scaler;

/** batch 8, n_tokens 64, AdamW (0.9, 0.999, 1e-8, weight decay 0.01),
 *  clipping at 1.0, encoder trained, primitive ops with fused attention
 *  from 1,000,000 scores per head, f32 (f16: loss scale 65536, doubled
 *  after 2000 good steps as PyTorch's GradScaler). */
void tg_whisper_train_options_default(tg_whisper_train_options *o);

typedef struct tg_whisper_trainer tg_whisper_trainer;

/** Builds the training graph for `cfg` (f32 weights) and compiles it for
 *  `dev` (NULL: every step runs on the reference interpreter). Weights and
 *  AdamW moments live in `store`; the moments missing from it are set to
 *  zero here, the weights must be there already (tg_whisper_init_weights
 *  or a loaded checkpoint). */
tg_status tg_whisper_trainer_new(const tg_whisper_config *cfg, const tg_whisper_train_options *o,
                                 tg_store *store, tg_device *dev, tg_whisper_trainer **out);
void tg_whisper_trainer_free(tg_whisper_trainer *t);

/** One step: mel f32 [B, n_mels, 2 * source_positions], tokens and
 *  labels i32 [B, T] (labels TG_WHISPER_IGNORE where there is nothing to
 *  predict), lr, and the 1-based optimizer step (with f16, AdamW's bias
 *  correction counts only the steps not skipped, as PyTorch's). *loss
 *  receives the mean cross-entropy before the update, *grad_norm the
 *  global gradient norm before clipping (either may be NULL; with f16 the
 *  norm is not finite when the step was skipped). */
tg_status tg_whisper_trainer_step(tg_whisper_trainer *t, const float *mel, const int32_t *tokens,
                                  const int32_t *labels, float lr, int step, double *loss,
                                  double *grad_norm);
/** With accum_steps > 1: adds one micro-batch's gradients (times
 *  1/accum_steps) to the accumulators; *loss receives its mean loss. */
tg_status tg_whisper_trainer_accumulate(tg_whisper_trainer *t, const float *mel,
                                        const int32_t *tokens, const int32_t *labels, double *loss);
/** With accum_steps > 1: clips the accumulated gradients, runs AdamW with
 *  them and zeroes the accumulators. *grad_norm: their norm before
 *  clipping. */
tg_status tg_whisper_trainer_apply(tg_whisper_trainer *t, float lr, int step, double *grad_norm);

/** The loss of a batch without updating anything (a forward-only
 *  executable, compiled at the first call). */
tg_status tg_whisper_trainer_loss(tg_whisper_trainer *t, const float *mel, const int32_t *tokens,
                                  const int32_t *labels, double *loss);
/** The loss of a batch and the gradient of every trainable weight before
 *  clipping, without updating anything (an executable compiled at the
 *  first call): grads[0 .. param_count) receive them (allocated, in the
 *  order of tg_whisper_trainer_param_name; tg_array_free each). For
 *  comparing against a reference implementation. */
tg_status tg_whisper_trainer_gradients(tg_whisper_trainer *t, const float *mel,
                                       const int32_t *tokens, const int32_t *labels, double *loss,
                                       tg_array *grads);
/** The encoder's output f32 [B, S, d] for a batch of B mels (an
 *  encoder-only executable compiled at the first call; B = the batch). */
tg_status tg_whisper_trainer_encode(tg_whisper_trainer *t, const float *mel, tg_array *out);

/** The loss-scaling state (scale 1 and nothing skipped with f32). */
void tg_whisper_trainer_get_scaler(const tg_whisper_trainer *t, tg_whisper_loss_scaler *s);
/** Sets it (resume, or sharing it between bucket trainers); the scale
 *  must be a positive finite number. */
tg_status tg_whisper_trainer_set_scaler(tg_whisper_trainer *t, const tg_whisper_loss_scaler *s);
/** Whether the last step (or apply) was skipped for a non-finite gradient. */
bool tg_whisper_trainer_last_skipped(const tg_whisper_trainer *t);

/** Trainable tensors (the ones the optimizer updates) and their names;
 *  the optimizer's state is "<name>.adam_m" / "<name>.adam_v". */
int tg_whisper_trainer_param_count(const tg_whisper_trainer *t);
const char *tg_whisper_trainer_param_name(const tg_whisper_trainer *t, int i);
/** Dispatches per training step (after the first step on a device). */
int tg_whisper_trainer_dispatches(const tg_whisper_trainer *t);

/** The per-kernel profile table of the training executable (compiled
 *  with profiling when TG_PROFILE=1 is set); malloc'ed text. */
tg_status tg_whisper_trainer_profile(tg_whisper_trainer *t, char **table);

/** Gives every weight of `cfg` a fresh value in `store` as transformers'
 *  WhisperPreTrainedModel._init_weights does: linear, convolution and
 *  embedding weights normal(0, 0.02) (from a generator seeded with
 *  `seed`), biases 0, LayerNorm weights 1, the encoder positions the
 *  sinusoid table. */
tg_status tg_whisper_init_weights(tg_store *store, const tg_whisper_config *cfg, uint64_t seed);

/* ------------------------------------------------------------------ */
/* Length buckets                                                      */
/* ------------------------------------------------------------------ */

/** Mel frames holding audio in one log-Mel window [n_mels, frames]: one
 *  past the last frame with a value above the window's floor (the padding
 *  after the audio is all floor, Whisper's log-Mel clamps at max - 8).
 *  At least 1. */
int tg_whisper_mel_frames_used(const float *mel, int n_mels, int frames);

/** A bucketed data order. Record r goes to the first bucket whose frames
 *  hold its audio (bucket_frames ascending, the last the full window);
 *  a bucket's decoder length is its longest label sequence rounded up to
 *  a multiple of 8 (at most max_tokens). Epoch e: each bucket's records
 *  in an order drawn from (seed, e, bucket), cut into batches of B (the
 *  last one of a bucket padded with rows of index -1), and the batches of
 *  every bucket shuffled together from (seed, e). Batch k of the run is
 *  batch k % n of epoch k / n (n = batches per epoch), so the position in
 *  the data is one number and every record is in exactly one batch per
 *  epoch. */
typedef struct tg_whisper_buckets tg_whisper_buckets;

/** record_frames[r]: tg_whisper_mel_frames_used; record_tokens[r]: the
 *  decoder positions record r needs (its sequence length - 1). Empty
 *  buckets are dropped, except the last (the full window). */
tg_status tg_whisper_buckets_new(int n_records, const int *record_frames, const int *record_tokens,
                                 int n_buckets, const int *bucket_frames, int max_tokens, int batch,
                                 uint64_t seed, tg_whisper_buckets **out);
void tg_whisper_buckets_free(tg_whisper_buckets *b);
int tg_whisper_buckets_count(const tg_whisper_buckets *b);
/** Bucket i's mel frames, decoder positions and records. */
void tg_whisper_buckets_shape(const tg_whisper_buckets *b, int i, int *frames, int *n_tokens,
                              int *n_records);
int64_t tg_whisper_buckets_per_epoch(const tg_whisper_buckets *b);
/** Batch k of the order: *bucket, and idx[0 .. batch) the records (-1:
 *  a padding row). Keeps the last epoch's order: not for concurrent
 *  use. */
void tg_whisper_buckets_batch(tg_whisper_buckets *b, int64_t k, int *bucket, int *idx);

/** The learning rate at 1-based `step` of `total`: linear warm-up from 0
 *  over `warmup` steps to `peak`, then linear (cosine = false) or cosine
 *  decay to 0 at `total`. */
double tg_whisper_lr_schedule(int step, int total, int warmup, double peak, bool cosine);

#ifdef __cplusplus
}
#endif
#endif /* TG_MODELS_WHISPER_TRAIN_H */
