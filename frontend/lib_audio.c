/* lib_audio.c — audio files to mono float samples at a given rate:
 * libsndfile reads, channels are averaged, libsoxr resamples. */
#include "frontend/audio.h"
#include "graph/graph_internal.h"

#include <math.h>
#include <sndfile.h>
#include <soxr.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

tg_status tg_audio_resample(const float *in, int64_t n, double in_rate, double out_rate,
                            float **out, int64_t *n_out) {
    if (!out || !n_out || (!in && n > 0) || n < 0)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_audio_resample: bad argument");
    *out = NULL;
    *n_out = 0;
    if (!(in_rate > 0) || !(out_rate > 0) || in_rate > 1e7 || out_rate > 1e7)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_audio_resample: rates %g -> %g Hz (need 0 < rate <= 1e7)", in_rate,
                            out_rate);
    double want = ceil((double)n * out_rate / in_rate);
    if (want > (double)TG_AUDIO_MAX_FRAMES)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_audio_resample: %lld samples at %g Hz is too long at %g Hz",
                            (long long)n, in_rate, out_rate);
    size_t cap = (size_t)want + 16;
    float *buf = malloc(cap * sizeof *buf);
    if (!buf) return tg_set_error(TG_ERR_NO_MEMORY, "tg_audio_resample: out of memory");
    if (in_rate == out_rate) {
        if (n) memcpy(buf, in, (size_t)n * sizeof *buf);
        *out = buf;
        *n_out = n;
        return TG_OK;
    }
    soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t q = soxr_quality_spec(SOXR_HQ, 0);
    size_t done = 0;
    soxr_error_t err =
        soxr_oneshot(in_rate, out_rate, 1, in, (size_t)n, NULL, buf, cap, &done, &io, &q, NULL);
    if (err) {
        free(buf);
        return tg_set_error(TG_ERR_RUNTIME, "tg_audio_resample: libsoxr: %s", err);
    }
    *out = buf;
    *n_out = (int64_t)done;
    return TG_OK;
}

tg_status tg_audio_load(const char *path, int rate, float **samples, int64_t *n) {
    if (!path || !samples || !n)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_audio_load: NULL argument");
    *samples = NULL;
    *n = 0;
    if (rate <= 0 || rate > 10000000)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_audio_load: %s: sample rate %d", path,
                            rate);
    SF_INFO info;
    memset(&info, 0, sizeof info);
    SNDFILE *f = sf_open(path, SFM_READ, &info);
    if (!f) return tg_set_error(TG_ERR_IO, "%s: cannot read audio: %s", path, sf_strerror(NULL));
    tg_status st = TG_OK;
    float *inter = NULL, *mono = NULL;
    if (info.channels <= 0 || info.channels > 1024 || info.samplerate <= 0) {
        st = tg_set_error(TG_ERR_PARSE, "%s: bad audio header (%d channels, %d Hz)", path,
                          info.channels, info.samplerate);
        goto done;
    }
    if (info.frames <= 0) {
        st = tg_set_error(TG_ERR_PARSE, "%s: the file holds no audio samples", path);
        goto done;
    }
    if (info.frames > TG_AUDIO_MAX_FRAMES / info.channels) {
        st = tg_set_error(TG_ERR_PARSE, "%s: %lld frames of %d channels is too long", path,
                          (long long)info.frames, info.channels);
        goto done;
    }
    inter = malloc((size_t)info.frames * (size_t)info.channels * sizeof *inter);
    mono = malloc((size_t)info.frames * sizeof *mono);
    if (!inter || !mono) {
        st = tg_set_error(TG_ERR_NO_MEMORY, "%s: out of memory for %lld frames", path,
                          (long long)info.frames);
        goto done;
    }
    sf_count_t got = sf_readf_float(f, inter, info.frames);
    if (got <= 0 || sf_error(f) != SF_ERR_NO_ERROR) {
        st = tg_set_error(TG_ERR_PARSE, "%s: cannot decode audio (%lld of %lld frames read): %s",
                          path, (long long)(got > 0 ? got : 0), (long long)info.frames,
                          sf_strerror(f));
        goto done;
    }
    /* a file shorter than its header says: keep what was read */
    for (sf_count_t i = 0; i < got; i++) {
        double sum = 0;
        for (int c = 0; c < info.channels; c++) sum += inter[(size_t)i * info.channels + c];
        mono[i] = (float)(sum / info.channels);
    }
    if (info.samplerate == rate) {
        *samples = mono;
        *n = got;
        mono = NULL;
    } else {
        st = tg_audio_resample(mono, got, info.samplerate, rate, samples, n);
        if (st != TG_OK) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", tg_last_error());
            st = tg_set_error(st, "%s: %s", path, msg);
        }
    }
done:
    free(inter);
    free(mono);
    sf_close(f);
    return st;
}
