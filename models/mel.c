/* mel.c — Whisper's log-Mel spectrogram as graph ops, and the Slaney Mel
 * filterbank it uses.
 *
 * For audio [B, N] (N a multiple of the hop, 160), as openai-whisper's
 * log_mel_spectrogram (torch.stft with center=True, reflect padding):
 *
 *   padded  = reflect(x[200..1]) ++ x ++ reflect(x[N-2..N-121])   gathers + concat
 *   blocks  = padded as [B, N/160 + 2, 160]                        reshape
 *   frames  = blocks[j] ++ blocks[j+1] ++ blocks[j+2][:80]          [B, N/160, 400]
 *             (N/160 frames: the last stft frame is dropped)
 *   spec    = frames @ [hann * cos | hann * -sin]                  [B, F, 402]
 *   power   = re^2 + im^2                                           [B, F, 201]
 *   mel     = filters @ power^T                                     [B, n_mels, F]
 *   log     = log10(max(mel, 1e-10)); max(log, max(log) - 8); (log + 4) / 4
 *
 * Only 120 samples of the right reflection are needed: the dropped last
 * frame is the only one reading further. */
#include "models/whisper.h"
#include "graph/graph_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PI 3.14159265358979323846
#define N_BINS (TG_WHISPER_N_FFT / 2 + 1) /* 201 */

/* Slaney's mel scale (librosa htk=False): linear below 1 kHz, log above. */
static const double f_sp = 200.0 / 3.0, min_log_hz = 1000.0;

static double hz_to_mel(double hz) {
    double min_log_mel = min_log_hz / f_sp, logstep = log(6.4) / 27.0;
    if (hz >= min_log_hz) return min_log_mel + log(hz / min_log_hz) / logstep;
    return hz / f_sp;
}

static double mel_to_hz(double mel) {
    double min_log_mel = min_log_hz / f_sp, logstep = log(6.4) / 27.0;
    if (mel >= min_log_mel) return min_log_hz * exp(logstep * (mel - min_log_mel));
    return f_sp * mel;
}

tg_status tg_whisper_mel_filters(int n_mels, float *out) {
    if (n_mels < 1 || n_mels > 512 || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_mel_filters: n_mels %d (need 1..512) or NULL output",
                            n_mels);
    /* librosa.filters.mel(sr=16000, n_fft=400, n_mels, fmin=0, fmax=8000,
     * htk=False, norm="slaney"), float32 as librosa stores it. */
    double sr = TG_WHISPER_SAMPLE_RATE, f_max = sr / 2;
    double *mel_f = malloc((size_t)(n_mels + 2) * sizeof *mel_f);
    if (!mel_f) return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_mel_filters: out of memory");
    double max_mel = hz_to_mel(f_max);
    for (int i = 0; i < n_mels + 2; i++) mel_f[i] = mel_to_hz(max_mel * i / (n_mels + 1));
    for (int m = 0; m < n_mels; m++) {
        double lo = mel_f[m + 1] - mel_f[m], hi = mel_f[m + 2] - mel_f[m + 1];
        double enorm = 2.0 / (mel_f[m + 2] - mel_f[m]);
        for (int k = 0; k < N_BINS; k++) {
            double f = k * sr / TG_WHISPER_N_FFT;
            double lower = (f - mel_f[m]) / lo, upper = (mel_f[m + 2] - f) / hi;
            double w = fmax(0.0, fmin(lower, upper));
            out[(size_t)m * N_BINS + k] = (float)((double)(float)w * enorm);
        }
    }
    free(mel_f);
    return TG_OK;
}

void tg_whisper_pad_or_trim(const float *samples, int64_t n, float *out, int64_t n_out) {
    if (!out || n_out <= 0) return;
    int64_t k = samples && n > 0 ? (n < n_out ? n : n_out) : 0;
    if (k) memcpy(out, samples, (size_t)k * sizeof *out);
    if (k < n_out) memset(out + k, 0, (size_t)(n_out - k) * sizeof *out);
}

/* The windowed DFT basis [400, 402]: columns 0..200 hann * cos, 201..401
 * hann * -sin, with angles reduced exactly (k * n mod 400). */
static float *dft_basis(void) {
    int n_fft = TG_WHISPER_N_FFT;
    float *b = malloc((size_t)n_fft * 2 * N_BINS * sizeof *b);
    if (!b) return NULL;
    for (int n = 0; n < n_fft; n++) {
        double w = 0.5 - 0.5 * cos(2.0 * PI * n / n_fft); /* periodic Hann */
        for (int k = 0; k < N_BINS; k++) {
            double a = 2.0 * PI * (double)((k * n) % n_fft) / n_fft;
            b[(size_t)n * 2 * N_BINS + k] = (float)(w * cos(a));
            b[(size_t)n * 2 * N_BINS + N_BINS + k] = (float)(-w * sin(a));
        }
    }
    return b;
}

tg_tensor tg_whisper_log_mel(tg_graph *g, tg_tensor audio, int n_mels) {
    if (!g || !tg_tensor_valid(g, audio)) return TG_INVALID;
    int64_t shape[TG_MAX_RANK];
    int rank = tg_tensor_shape(g, audio, shape);
    int64_t hop = TG_WHISPER_HOP;
    if (rank != 2 || tg_tensor_dtype(g, audio) != TG_F32 || shape[0] < 1 || shape[1] < 480 ||
        shape[1] % hop != 0) {
        tg_graph_fail(g, TG_ERR_SHAPE,
                      "tg_whisper_log_mel: audio is %s rank %d [%lld,%lld], expected f32[B,N] "
                      "with static N a multiple of %lld and >= 480",
                      tg_dtype_name(tg_tensor_dtype(g, audio)), rank,
                      (long long)(rank > 0 ? shape[0] : 0), (long long)(rank > 1 ? shape[1] : 0),
                      (long long)hop);
        return TG_INVALID;
    }
    if (n_mels < 1 || n_mels > 512) {
        tg_graph_fail(g, TG_ERR_INVALID_ARGUMENT, "tg_whisper_log_mel: n_mels %d (need 1..512)",
                      n_mels);
        return TG_INVALID;
    }
    int64_t b = shape[0], n = shape[1], frames = n / hop, half = TG_WHISPER_N_FFT / 2;

    /* reflect padding: 200 samples before, 120 after */
    int64_t right_n = 2 * hop - half;
    int32_t left_idx[200], right_idx[120];
    for (int i = 0; i < half; i++) left_idx[i] = (int32_t)(half - i);
    for (int i = 0; i < right_n; i++) right_idx[i] = (int32_t)(n - 2 - i);
    int64_t ls[1] = {half}, rs[1] = {right_n};
    tg_tensor parts[3] = {tg_gather(g, audio, tg_constant(g, TG_I32, 1, ls, left_idx), 1), audio,
                          tg_gather(g, audio, tg_constant(g, TG_I32, 1, rs, right_idx), 1)};
    tg_tensor padded = tg_concat(g, 3, parts, 1); /* [B, N + 320] */

    /* frames [B, F, 400] from three shifted views of 160-sample blocks */
    int64_t bshape[3] = {b, frames + 2, hop};
    tg_tensor blocks = tg_reshape(g, padded, 3, bshape);
    int64_t step[3] = {1, 1, 1};
    tg_tensor views[3];
    for (int s = 0; s < 3; s++) {
        int64_t begin[3] = {0, s, 0};
        int64_t end[3] = {b, s + frames, s == 2 ? TG_WHISPER_N_FFT - 2 * hop : hop};
        views[s] = tg_slice(g, blocks, begin, end, step);
    }
    tg_tensor framed = tg_concat(g, 3, views, 2);

    float *basis = dft_basis();
    float *filters = malloc((size_t)n_mels * N_BINS * sizeof *filters);
    if (!basis || !filters || tg_whisper_mel_filters(n_mels, filters) != TG_OK) {
        free(basis);
        free(filters);
        tg_graph_fail(g, TG_ERR_NO_MEMORY, "tg_whisper_log_mel: out of memory");
        return TG_INVALID;
    }
    int64_t bas_shape[2] = {TG_WHISPER_N_FFT, 2 * N_BINS}, fil_shape[2] = {n_mels, N_BINS};
    tg_tensor spec =
        tg_matmul(g, framed, tg_constant(g, TG_F32, 2, bas_shape, basis), false, false);
    tg_tensor fil = tg_constant(g, TG_F32, 2, fil_shape, filters);
    free(basis);
    free(filters);

    int64_t b0[3] = {0, 0, 0}, e0[3] = {b, frames, N_BINS};
    int64_t b1[3] = {0, 0, N_BINS}, e1[3] = {b, frames, 2 * N_BINS};
    tg_tensor re = tg_slice(g, spec, b0, e0, step), im = tg_slice(g, spec, b1, e1, step);
    tg_tensor power = tg_add(g, tg_square(g, re), tg_square(g, im)); /* [B, F, 201] */
    tg_tensor mel = tg_matmul(g, fil, power, false, true);           /* [B, n_mels, F] */

    tg_tensor lg = tg_mul(g, tg_log(g, tg_maximum(g, mel, tg_scalar(g, TG_F32, 1e-10))),
                          tg_scalar(g, TG_F32, 1.0 / log(10.0)));
    int axes[2] = {1, 2};
    tg_tensor top = tg_max(g, lg, 2, axes, true);
    lg = tg_maximum(g, lg, tg_sub(g, top, tg_scalar(g, TG_F32, 8.0)));
    return tg_mul(g, tg_add(g, lg, tg_scalar(g, TG_F32, 4.0)), tg_scalar(g, TG_F32, 0.25));
}
