/* test_mel.c — Whisper's log-Mel front end (models/mel.c).
 *
 *  - The Slaney filterbank computed in C equals Whisper's own
 *    mel_filters.npz (mel_80, mel_128; extracted to tests/data/whisper by
 *    tests/reference/mel_reference.py) within 1e-6.
 *  - The log-Mel graph matches openai-whisper's torch.stft computation
 *    (tests/reference/mel_reference.py) within 1e-4 on speech (espeak-ng),
 *    a 440 Hz sine and silence, 30-second windows, on the interpreter and
 *    on the Vulkan device. torch's own f32 result differs from f64 by up to
 *    3.2e-5 here; a wrong window, frame offset or padding gives errors of
 *    order 0.1. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "test_checks.h"

#include "backend/vk.h"
#include "frontend/audio.h"
#include "frontend/npy.h"
#include "tg.h"
#include "tg_whisper.h"

#define DATA TG_TEST_DATA_DIR "/whisper/"

static tg_device *dev;

static void check_filters(int n_mels) {
    char name[64];
    snprintf(name, sizeof name, "mel_filters_%d.npy", n_mels);
    tg_array want = tg_test_load_npy(DATA, name);
    assert_int_equal(want.shape[0], n_mels);
    assert_int_equal(want.shape[1], 201);
    float *got = malloc((size_t)n_mels * 201 * sizeof *got);
    OK(tg_whisper_mel_filters(n_mels, got));
    const float *w = want.data;
    double worst = 0;
    for (int i = 0; i < n_mels * 201; i++) {
        double e = fabs((double)got[i] - w[i]);
        if (e > worst) worst = e;
        if (!(e <= 1e-6))
            fail_msg("mel_%d[%d][%d]: got %.9g, want %.9g", n_mels, i / 201, i % 201, got[i], w[i]);
    }
    free(got);
    tg_array_free(&want);
}

static void test_filters_80(void **state) {
    (void)state;
    check_filters(80);
}

static void test_filters_128(void **state) {
    (void)state;
    check_filters(128);
    float f[201];
    assert_int_equal(tg_whisper_mel_filters(0, f), TG_ERR_INVALID_ARGUMENT);
}

/* The three clips, each padded to 30 s, as a batch [3, 480000]. */
static tg_array clips(void) {
    tg_array audio = {0};
    int64_t shape[2] = {3, TG_WHISPER_N_SAMPLES};
    OK(tg_array_alloc(&audio, TG_F32, 2, shape));
    float *a = audio.data;
    float *speech = NULL;
    int64_t n = 0;
    OK(tg_audio_load(DATA "speech.wav", TG_WHISPER_SAMPLE_RATE, &speech, &n));
    assert_int_equal(n, 58700);
    tg_whisper_pad_or_trim(speech, n, a, TG_WHISPER_N_SAMPLES);
    free(speech);
    tg_array sine = tg_test_load_npy(DATA, "sine.npy");
    tg_whisper_pad_or_trim(sine.data, sine.shape[0], a + TG_WHISPER_N_SAMPLES,
                           TG_WHISPER_N_SAMPLES);
    tg_array_free(&sine);
    /* row 2: silence (zeros) */
    return audio;
}

/* got [n_mels, 3000] (one batch row) against the stored first frames and
 * the constant tail. */
static void compare_mel(const float *got, int n_mels, const char *ref_name, float tail,
                        const char *what) {
    tg_array want = tg_test_load_npy(DATA, ref_name);
    assert_int_equal(want.shape[0], n_mels);
    int64_t kept = want.shape[1];
    const float *w = want.data;
    double worst = 0;
    for (int m = 0; m < n_mels; m++) {
        for (int64_t t = 0; t < TG_WHISPER_N_FRAMES; t++) {
            double ref = t < kept ? w[m * kept + t] : tail;
            double e = fabs(got[(int64_t)m * TG_WHISPER_N_FRAMES + t] - ref);
            if (e > worst) worst = e;
            if (!(e <= 1e-4))
                fail_msg("%s: mel %d frame %lld: got %.7f, want %.7f", what, m, (long long)t,
                         got[(int64_t)m * TG_WHISPER_N_FRAMES + t], ref);
        }
    }
    printf("# %s: max |tg - torch| = %.2e\n", what, worst);
    tg_array_free(&want);
}

static void check_log_mel(tg_device *d) {
    tg_array audio = clips(), tails = tg_test_load_npy(DATA, "mel_tails.npy");
    const float *tail = tails.data;
    tg_graph *g = tg_graph_new();
    tg_tensor x = tg_placeholder(g, "audio", TG_F32, 2, audio.shape);
    tg_tensor y80 = tg_whisper_log_mel(g, x, 80);
    int64_t b1[2] = {1, TG_WHISPER_N_SAMPLES};
    tg_tensor x1 = tg_placeholder(g, "speech", TG_F32, 2, b1);
    tg_tensor y128 = tg_whisper_log_mel(g, x1, 128);
    if (tg_graph_status(g) != TG_OK) fail_msg("%s", tg_graph_error(g));
    tg_array speech = {0};
    OK(tg_array_alloc(&speech, TG_F32, 2, b1));
    memcpy(speech.data, audio.data, TG_WHISPER_N_SAMPLES * sizeof(float));
    tg_feed feeds[2] = {{x, &audio}, {x1, &speech}};
    tg_tensor targets[2] = {y80, y128};
    tg_array got[2] = {{0}, {0}};
    if (d) {
        tg_executable *e = NULL;
        OK(tg_compile(d, g, NULL, 2, targets, 0, NULL, NULL, &e));
        OK(tg_run(e, 2, feeds, got));
        tg_executable_free(e);
    } else {
        OK(tg_interpret(g, NULL, 2, feeds, 2, targets, got, 0, NULL, 0));
    }
    assert_int_equal(got[0].shape[0], 3);
    assert_int_equal(got[0].shape[1], 80);
    assert_int_equal(got[0].shape[2], TG_WHISPER_N_FRAMES);
    const float *m80 = got[0].data;
    size_t row = (size_t)80 * TG_WHISPER_N_FRAMES;
    char what[64];
    snprintf(what, sizeof what, "speech mel80 (%s)", d ? "vulkan" : "interpreter");
    compare_mel(m80, 80, "speech_mel80.npy", tail[0], what);
    snprintf(what, sizeof what, "speech mel128 (%s)", d ? "vulkan" : "interpreter");
    compare_mel(got[1].data, 128, "speech_mel128.npy", tail[1], what);
    snprintf(what, sizeof what, "sine mel80 (%s)", d ? "vulkan" : "interpreter");
    compare_mel(m80 + row, 80, "sine_mel80.npy", tail[2], what);
    snprintf(what, sizeof what, "silence mel80 (%s)", d ? "vulkan" : "interpreter");
    compare_mel(m80 + 2 * row, 80, "silence_mel80.npy", tail[3], what);
    tg_array_free(&got[0]);
    tg_array_free(&got[1]);
    tg_array_free(&speech);
    tg_array_free(&audio);
    tg_array_free(&tails);
    tg_graph_free(g);
    if (d && tg_vk_validation_message_count() != 0)
        fail_msg("validation: %s", tg_vk_validation_first_message());
}

static void test_log_mel_interpreter(void **state) {
    (void)state;
    check_log_mel(NULL);
}

static void test_log_mel_vulkan(void **state) {
    (void)state;
    if (!dev) skip();
    check_log_mel(dev);
}

static void test_errors_and_padding(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t bad[2] = {1, 1000}; /* not a multiple of 160 */
    tg_tensor x = tg_placeholder(g, "audio", TG_F32, 2, bad);
    assert_false(tg_tensor_valid(g, tg_whisper_log_mel(g, x, 80)));
    assert_int_equal(tg_graph_status(g), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_graph_error(g), "[1,1000]"));
    tg_graph_free(g);

    float in[3] = {1, 2, 3}, out[5];
    tg_whisper_pad_or_trim(in, 3, out, 5);
    assert_true(out[0] == 1 && out[2] == 3 && out[3] == 0 && out[4] == 0);
    tg_whisper_pad_or_trim(in, 3, out, 2);
    assert_true(out[0] == 1 && out[1] == 2);
}

static int setup(void **state) {
    (void)state;
    return tg_test_open_device(&dev, false);
}

static int teardown(void **state) {
    (void)state;
    tg_device_free(dev);
    dev = NULL;
    return 0;
}

int main(void) {
    char cache[256];
    if (!tg_test_device_env(cache, sizeof cache, "tg_test_mel", false)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filters_80),         cmocka_unit_test(test_filters_128),
        cmocka_unit_test(test_errors_and_padding), cmocka_unit_test(test_log_mel_interpreter),
        cmocka_unit_test(test_log_mel_vulkan),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
