/* audio.h — reading audio files for Whisper (frontend/lib_audio.c).
 *
 * Files are read with libsndfile (every format Debian's build reads: WAV,
 * FLAC, Ogg Vorbis/Opus, MP3, AIFF, ...), downmixed to mono by averaging
 * the channels, and resampled with libsoxr (its "high quality" preset) when
 * the file's rate differs from the rate asked for. Samples are floats in
 * [-1, 1] as libsndfile scales them (16-bit PCM: value / 32768). Files are
 * untrusted input: errors name the file and what is wrong. */
#ifndef TG_FRONTEND_AUDIO_H
#define TG_FRONTEND_AUDIO_H

#include "tg.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Largest number of samples (per channel) a file may hold: 2^31 - 1. */
#define TG_AUDIO_MAX_FRAMES 2147483647LL

/** Reads `path` as mono at `rate` Hz (e.g. TG_WHISPER_SAMPLE_RATE).
 *  *samples is malloc'ed (free() it), *n its length. An unreadable file,
 *  a file of an unknown or broken format, or one without samples is an
 *  error naming the file. */
tg_status tg_audio_load(const char *path, int rate, float **samples, int64_t *n);

/** Resamples mono `in` (n samples at in_rate) to out_rate with libsoxr
 *  (high quality). *out is malloc'ed (free() it). Equal rates copy. */
tg_status tg_audio_resample(const float *in, int64_t n, double in_rate, double out_rate,
                            float **out, int64_t *n_out);

#ifdef __cplusplus
}
#endif
#endif /* TG_FRONTEND_AUDIO_H */
