/* whisper_transcribe.c — files to transcripts: the log-Mel of a whole
 * file, then window after window (openai-whisper's transcribe() at
 * temperature 0) for a batch of files at once:
 *
 *   every file with audio left gives the window at its seek (Mel frames
 *   [seek, seek + 3000)); the batch runs through the encoder (one
 *   executable, batch_size rows, finished files feed zeros), then
 *   tg_whisper_decode; each window's tokens become segments and move the
 *   file's seek (tg_whisper_split_segments).
 *
 * Executables: log-Mel [1, window samples], encoder [batch, n_mels, 3000],
 * and the decoder's (whisper_decode.c), each compiled once. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime */
#include "models/whisper.h"
#include "graph/graph_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct tg_whisper_transcriber {
    tg_whisper_config cfg;
    tg_store *store;
    tg_device *dev;
    int batch, beam;

    tg_graph *mel_graph;
    tg_tensor audio, mel;
    tg_executable *mel_exe;

    tg_graph *enc_graph;
    tg_tensor enc_in, enc_out;
    tg_executable *enc_exe;

    tg_whisper_decoder *dec;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int tg_whisper_window_frames(const tg_whisper_config *cfg) {
    return cfg ? 2 * cfg->max_source_positions : 0;
}

void tg_whisper_transcriber_free(tg_whisper_transcriber *t) {
    if (!t) return;
    tg_whisper_decoder_free(t->dec);
    tg_executable_free(t->mel_exe);
    tg_executable_free(t->enc_exe);
    tg_graph_free(t->mel_graph);
    tg_graph_free(t->enc_graph);
    free(t);
}

tg_status tg_whisper_transcriber_new(const tg_whisper_config *cfg, tg_store *store, tg_device *dev,
                                     int batch_size, int beam_size, int max_len,
                                     tg_whisper_transcriber **out) {
    if (!cfg || !store || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_transcriber_new: NULL argument");
    *out = NULL;
    tg_status st = tg_whisper_check_config(cfg);
    if (st != TG_OK) return st;
    if (batch_size < 1 || beam_size < 1 || batch_size * beam_size > 1024)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_transcriber_new: batch_size %d, beam_size %d", batch_size,
                            beam_size);
    tg_whisper_transcriber *t = calloc(1, sizeof *t);
    if (!t) return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_transcriber_new: out of memory");
    t->cfg = *cfg;
    t->store = store;
    t->dev = dev;
    t->batch = batch_size;
    t->beam = beam_size;
    int frames = tg_whisper_window_frames(cfg);

    t->mel_graph = tg_graph_new();
    t->enc_graph = tg_graph_new();
    if (!t->mel_graph || !t->enc_graph) {
        tg_whisper_transcriber_free(t);
        return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_transcriber_new: out of memory");
    }
    int64_t ashape[2] = {1, (int64_t)frames * TG_WHISPER_HOP};
    t->audio = tg_placeholder(t->mel_graph, "audio", TG_F32, 2, ashape);
    t->mel = tg_whisper_log_mel(t->mel_graph, t->audio, cfg->num_mel_bins);
    int64_t mshape[3] = {batch_size, cfg->num_mel_bins, frames};
    t->enc_in = tg_placeholder(t->enc_graph, "mel", TG_F32, 3, mshape);
    t->enc_out = tg_whisper_build_encoder(t->enc_graph, cfg, t->enc_in);
    if (tg_graph_status(t->mel_graph) != TG_OK)
        st = tg_set_error(tg_graph_status(t->mel_graph), "log-Mel graph: %s",
                          tg_graph_error(t->mel_graph));
    else if (tg_graph_status(t->enc_graph) != TG_OK)
        st = tg_set_error(tg_graph_status(t->enc_graph), "encoder graph: %s",
                          tg_graph_error(t->enc_graph));
    if (st == TG_OK && dev)
        st = tg_compile(dev, t->mel_graph, NULL, 1, &t->mel, 0, NULL, NULL, &t->mel_exe);
    if (st == TG_OK && dev)
        st = tg_compile(dev, t->enc_graph, store, 1, &t->enc_out, 0, NULL, NULL, &t->enc_exe);
    if (st == TG_OK)
        st = tg_whisper_decoder_new(cfg, store, dev, batch_size * beam_size, max_len, &t->dec);
    if (st != TG_OK) {
        tg_whisper_transcriber_free(t);
        return st;
    }
    *out = t;
    return TG_OK;
}

tg_status tg_whisper_transcriber_mel(tg_whisper_transcriber *t, const float *samples, int64_t n,
                                     tg_array *mel, int64_t *content_frames) {
    if (!t || (!samples && n > 0) || n < 0 || !mel || !content_frames)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_transcriber_mel: bad argument");
    int frames = tg_whisper_window_frames(&t->cfg), n_mels = t->cfg.num_mel_bins;
    int64_t window = (int64_t)frames * TG_WHISPER_HOP;
    /* One window of zeros after the content, as openai-whisper pads. */
    int64_t chunks = (n + window + window - 1) / window;
    int64_t shape[2] = {n_mels, chunks * frames};
    tg_status st = tg_array_alloc(mel, TG_F32, 2, shape);
    tg_array audio = {0};
    int64_t ashape[2] = {1, window};
    if (st == TG_OK) st = tg_array_alloc(&audio, TG_F32, 2, ashape);
    float *m = mel->data;
    for (int64_t c = 0; c < chunks && st == TG_OK; c++) {
        int64_t from = c * window;
        tg_whisper_pad_or_trim(samples ? samples + (from < n ? from : n) : NULL,
                               from < n ? n - from : 0, audio.data, window);
        tg_feed feed = {t->audio, &audio};
        tg_array part = {0};
        if (t->dev)
            st = tg_run(t->mel_exe, 1, &feed, &part);
        else
            st = tg_interpret(t->mel_graph, NULL, 1, &feed, 1, &t->mel, &part, 0, NULL, 0);
        if (st != TG_OK) break;
        const float *p = part.data;
        for (int k = 0; k < n_mels; k++)
            memcpy(m + (size_t)k * shape[1] + (size_t)(c * frames), p + (size_t)k * frames,
                   (size_t)frames * sizeof *p);
        tg_array_free(&part);
    }
    tg_array_free(&audio);
    if (st != TG_OK) {
        tg_array_free(mel);
        return st;
    }
    /* Each chunk was clamped to its own max - 8 (that is (max-8+4)/4 after
     * scaling: max' - 2); clamping again at the global max' - 2 gives what
     * one spectrogram of the whole file would. */
    int64_t count = tg_array_count(mel);
    float top = m[0];
    for (int64_t i = 1; i < count; i++) top = m[i] > top ? m[i] : top;
    for (int64_t i = 0; i < count; i++) m[i] = m[i] > top - 2.0f ? m[i] : top - 2.0f;
    *content_frames = n / TG_WHISPER_HOP;
    return TG_OK;
}

void tg_whisper_transcript_free(tg_whisper_transcript *t) {
    if (!t) return;
    for (int i = 0; i < t->n_segments; i++) free(t->segments[i].tokens);
    free(t->segments);
    memset(t, 0, sizeof *t);
}

/* Appends the segments of one window to a transcript. */
static tg_status add_segments(tg_whisper_transcript *tr, const tg_whisper_decoding *r,
                              const tg_whisper_segment *segs, int n) {
    tg_whisper_segment *grown =
        realloc(tr->segments, (size_t)(tr->n_segments + n) * sizeof *grown);
    if (!grown) return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_transcribe: out of memory");
    tr->segments = grown;
    for (int i = 0; i < n; i++) {
        tg_whisper_segment s = segs[i];
        s.tokens = malloc((size_t)(s.n_tokens > 0 ? s.n_tokens : 1) * sizeof *s.tokens);
        if (!s.tokens) return tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_transcribe: out of memory");
        memcpy(s.tokens, r->tokens + s.first, (size_t)s.n_tokens * sizeof *s.tokens);
        s.avg_logprob = r->avg_logprob;
        tr->segments[tr->n_segments++] = s;
    }
    return TG_OK;
}

tg_status tg_whisper_transcribe(tg_whisper_transcriber *t, int n_files, const tg_array *mels,
                                const int64_t *content_frames, const tg_whisper_decode_options *o,
                                tg_whisper_progress_fn progress, void *user,
                                tg_whisper_transcript *out) {
    if (!t || n_files < 0 || (n_files && (!mels || !content_frames || !out)) || !o)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_whisper_transcribe: NULL argument");
    if ((o->beam_size < 1 ? 1 : o->beam_size) != t->beam)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_whisper_transcribe: beam_size %d, but the transcriber was built "
                            "for %d",
                            o->beam_size, t->beam);
    int frames = tg_whisper_window_frames(&t->cfg), n_mels = t->cfg.num_mel_bins;
    for (int i = 0; i < n_files; i++) {
        memset(&out[i], 0, sizeof out[i]);
        out[i].language = -1;
        if (mels[i].rank != 2 || mels[i].dtype != TG_F32 || mels[i].shape[0] != n_mels ||
            content_frames[i] < 0 || content_frames[i] > mels[i].shape[1])
            return tg_set_error(TG_ERR_SHAPE,
                                "tg_whisper_transcribe: file %d: the log-Mel must be f32 [%d, "
                                "frames] with content_frames (%lld) <= frames",
                                i, n_mels, (long long)content_frames[i]);
    }
    int batch = t->batch;
    int64_t *seek = calloc((size_t)(n_files ? n_files : 1), sizeof *seek);
    int *slot_file = malloc((size_t)batch * sizeof *slot_file);
    int32_t *langs = malloc((size_t)batch * sizeof *langs);
    tg_whisper_decoding *res = calloc((size_t)batch, sizeof *res);
    tg_array in = {0}, enc = {0};
    int64_t ishape[3] = {batch, n_mels, frames};
    tg_status st = seek && slot_file && langs && res
                       ? tg_array_alloc(&in, TG_F32, 3, ishape)
                       : tg_set_error(TG_ERR_NO_MEMORY, "tg_whisper_transcribe: out of memory");
    /* Files enter the batch in order; a slot is refilled when its file ends. */
    for (int s = 0; s < batch; s++) slot_file[s] = -1;
    int next_file = 0;
    while (st == TG_OK) {
        for (int s = 0; s < batch; s++) {
            int f = slot_file[s];
            if (f >= 0 && seek[f] < content_frames[f]) continue;
            slot_file[s] = -1;
            while (next_file < n_files && content_frames[next_file] == 0) next_file++;
            if (next_file < n_files) slot_file[s] = next_file++;
        }
        bool any = false;
        float *x = in.data;
        size_t row = (size_t)n_mels * frames;
        memset(x, 0, row * batch * sizeof *x);
        for (int s = 0; s < batch; s++) {
            int f = slot_file[s];
            langs[s] = o->language;
            if (f < 0) continue;
            any = true;
            if (out[f].n_windows > 0) langs[s] = out[f].language;
            /* Frames [seek, seek + frames); past the array: zeros. */
            int64_t total = mels[f].shape[1];
            int64_t take = total - seek[f] < frames ? total - seek[f] : frames;
            const float *m = mels[f].data;
            for (int k = 0; k < n_mels; k++)
                memcpy(x + s * row + (size_t)k * frames, m + (size_t)k * total + seek[f],
                       (size_t)take * sizeof *m);
        }
        if (!any) break;

        double t0 = now();
        tg_feed feed = {t->enc_in, &in};
        if (t->dev)
            st = tg_run(t->enc_exe, 1, &feed, &enc);
        else
            st = tg_interpret(t->enc_graph, t->store, 1, &feed, 1, &t->enc_out, &enc, 0, NULL, 0);
        double t1 = now();
        if (st == TG_OK) st = tg_whisper_decode(t->dec, &enc, o, langs, res);
        double t2 = now();
        tg_array_free(&enc);
        for (int s = 0; s < batch && st == TG_OK; s++) {
            int f = slot_file[s];
            if (f < 0) continue;
            tg_whisper_transcript *tr = &out[f];
            if (tr->n_windows == 0) {
                tr->language = res[s].language;
                tr->language_prob = res[s].language_prob;
            }
            int64_t size = content_frames[f] - seek[f];
            int segment_frames = (int)(size < frames ? size : frames);
            double offset = (double)seek[f] * TG_WHISPER_HOP / TG_WHISPER_SAMPLE_RATE;
            tg_whisper_segment *segs = NULL;
            int n_segs = 0, advance = 0;
            st = tg_whisper_split_segments(&t->cfg, res[s].tokens, res[s].n_tokens, offset,
                                           segment_frames, &segs, &n_segs, &advance);
            if (st == TG_OK) st = add_segments(tr, &res[s], segs, n_segs);
            free(segs);
            if (progress && st == TG_OK) {
                tg_whisper_progress p = {f, tr->n_windows, offset, res[s].n_tokens, t1 - t0,
                                         t2 - t1};
                progress(user, &p);
            }
            tr->n_windows++;
            tr->n_sampled += res[s].n_tokens;
            seek[f] += advance;
        }
        for (int s = 0; s < batch; s++) tg_whisper_decoding_free(&res[s]);
    }
    if (st != TG_OK)
        for (int i = 0; i < n_files; i++) tg_whisper_transcript_free(&out[i]);
    tg_array_free(&in);
    free(seek);
    free(slot_file);
    free(langs);
    free(res);
    return st;
}
