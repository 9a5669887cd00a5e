/* test_audio.c — frontend/lib_audio.c: reading with libsndfile, downmixing,
 * resampling with libsoxr, and errors for bad files.
 *
 * Files are written here with libsndfile (16-bit PCM WAV, FLAC) or by hand
 * (broken headers). A 16-bit sample reads back as value / 32768 exactly;
 * a resampled sine is compared with the analytic one away from the edges
 * (libsoxr HQ: error well below 1e-3 of full scale). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "test_checks.h"
#include "test_util.h"
#include <sndfile.h>

#include "frontend/audio.h"
#include "tg.h"

#define PI 3.14159265358979323846

static char dir[256];

/* Writes interleaved 16-bit samples with libsndfile. */
static void write_file(const char *path, int format, int rate, int channels, const short *data,
                       int64_t frames) {
    SF_INFO info = {0};
    info.samplerate = rate;
    info.channels = channels;
    info.format = format;
    SNDFILE *f = sf_open(path, SFM_WRITE, &info);
    if (!f) fail_msg("sf_open %s: %s", path, sf_strerror(NULL));
    assert_int_equal(sf_writef_short(f, data, frames), frames);
    sf_close(f);
}

static void path_of(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "%s/%s", dir, name);
}

static void test_stereo_wav_downmix(void **state) {
    (void)state;
    enum { N = 1000 };
    short *data = malloc(2 * N * sizeof *data);
    for (int i = 0; i < N; i++) {
        data[2 * i] = (short)(i * 7 - 3000);
        data[2 * i + 1] = (short)(1000 - i * 3);
    }
    char path[512];
    path_of(path, sizeof path, "stereo.wav");
    write_file(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 2, data, N);
    float *s = NULL;
    int64_t n = 0;
    OK(tg_audio_load(path, 16000, &s, &n));
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++) {
        float want =
            (float)(((double)data[2 * i] / 32768.0 + (double)data[2 * i + 1] / 32768.0) / 2);
        if (s[i] != want) fail_msg("sample %d: got %.9g, want %.9g", i, s[i], want);
    }
    free(s);
    free(data);
}

static void test_flac_resampled(void **state) {
    (void)state;
    /* 1 s of a 440 Hz sine at 8 kHz, FLAC -> 16 kHz */
    enum { N = 8000 };
    short *data = malloc(N * sizeof *data);
    for (int i = 0; i < N; i++) data[i] = (short)lrint(16000.0 * sin(2 * PI * 440.0 * i / 8000.0));
    char path[512];
    path_of(path, sizeof path, "sine8k.flac");
    write_file(path, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 8000, 1, data, N);
    float *s = NULL;
    int64_t n = 0;
    OK(tg_audio_load(path, 16000, &s, &n));
    assert_int_equal(n, 2 * N);
    double worst = 0;
    for (int i = 400; i < 2 * N - 400; i++) {
        double want = 16000.0 / 32768.0 * sin(2 * PI * 440.0 * i / 16000.0);
        double e = fabs(s[i] - want);
        if (e > worst) worst = e;
    }
    if (!(worst < 1e-3)) fail_msg("resampled sine: max error %g", worst);
    free(s);
    free(data);

    /* equal rates copy; bad rates are errors */
    float in[4] = {1, 2, 3, 4}, *out = NULL;
    int64_t n_out = 0;
    OK(tg_audio_resample(in, 4, 16000, 16000, &out, &n_out));
    assert_int_equal(n_out, 4);
    assert_true(out[3] == 4);
    free(out);
    assert_int_equal(tg_audio_resample(in, 4, 0, 16000, &out, &n_out), TG_ERR_INVALID_ARGUMENT);
}

static void write_bytes(const char *path, const void *bytes, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

/* A 44-byte canonical WAV header. */
static void wav_header(unsigned char *h, uint16_t format, uint16_t channels, uint32_t rate,
                       uint16_t bits, uint32_t data_bytes) {
    memcpy(h, "RIFF", 4);
    uint32_t riff = 36 + data_bytes;
    memcpy(h + 4, &riff, 4);
    memcpy(h + 8, "WAVEfmt ", 8);
    uint32_t fmt_size = 16;
    memcpy(h + 16, &fmt_size, 4);
    memcpy(h + 20, &format, 2);
    memcpy(h + 22, &channels, 2);
    memcpy(h + 24, &rate, 4);
    uint32_t byte_rate = rate * channels * bits / 8;
    memcpy(h + 28, &byte_rate, 4);
    uint16_t align = (uint16_t)(channels * bits / 8);
    memcpy(h + 32, &align, 2);
    memcpy(h + 34, &bits, 2);
    memcpy(h + 36, "data", 4);
    memcpy(h + 40, &data_bytes, 4);
}

static void expect_error(const char *name, tg_status want) {
    char path[512];
    path_of(path, sizeof path, name);
    float *s = (float *)1;
    int64_t n = 7;
    tg_status st = tg_audio_load(path, 16000, &s, &n);
    if (st != want) fail_msg("%s: status %d, want %d: %s", name, st, want, tg_last_error());
    assert_null(s);
    assert_int_equal(n, 0);
    if (!strstr(tg_last_error(), path))
        fail_msg("error does not name the file: %s", tg_last_error());
}

static void test_bad_files(void **state) {
    (void)state;
    char path[512];
    /* missing */
    expect_error("does-not-exist.wav", TG_ERR_IO);
    /* empty (0 bytes) */
    path_of(path, sizeof path, "empty.wav");
    write_bytes(path, "", 0);
    expect_error("empty.wav", TG_ERR_IO);
    /* a valid header with no samples */
    unsigned char h[64];
    wav_header(h, 1, 1, 16000, 16, 0);
    path_of(path, sizeof path, "nosamples.wav");
    write_bytes(path, h, 44);
    expect_error("nosamples.wav", TG_ERR_PARSE);
    /* text, not audio */
    path_of(path, sizeof path, "text.wav");
    write_bytes(path, "this is not a sound file at all, just some words\n", 49);
    expect_error("text.wav", TG_ERR_IO);
    /* a wrong sample format: WAV format tag 0x7777 */
    unsigned char bad[44 + 32] = {0};
    wav_header(bad, 0x7777, 1, 16000, 16, 32);
    path_of(path, sizeof path, "badformat.wav");
    write_bytes(path, bad, sizeof bad);
    expect_error("badformat.wav", TG_ERR_IO);
    /* 0 channels */
    wav_header(bad, 1, 0, 16000, 16, 32);
    path_of(path, sizeof path, "nochannels.wav");
    write_bytes(path, bad, sizeof bad);
    expect_error("nochannels.wav", TG_ERR_IO);
    /* bad arguments */
    float *s = NULL;
    int64_t n = 0;
    assert_int_equal(tg_audio_load(NULL, 16000, &s, &n), TG_ERR_INVALID_ARGUMENT);
    path_of(path, sizeof path, "stereo.wav");
    assert_int_equal(tg_audio_load(path, 0, &s, &n), TG_ERR_INVALID_ARGUMENT);
}

static void test_committed_speech(void **state) {
    (void)state;
    float *s = NULL;
    int64_t n = 0;
    OK(tg_audio_load(TG_TEST_DATA_DIR "/whisper/speech.wav", 16000, &s, &n));
    assert_int_equal(n, 58700);
    double peak = 0;
    for (int64_t i = 0; i < n; i++) {
        double q = s[i] * 32768.0;
        if (q != floor(q)) fail_msg("sample %lld is not a 16-bit value: %g", (long long)i, q);
        if (fabs(s[i]) > peak) peak = fabs(s[i]);
    }
    assert_true(peak > 0.1 && peak <= 1.0);
    free(s);
}

int main(void) {
    if (!tg_test_temp_dir(dir, sizeof dir, "tg_test_audio")) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stereo_wav_downmix),
        cmocka_unit_test(test_flac_resampled),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_committed_speech),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    tg_test_remove_tree(dir);
    return failed;
}
