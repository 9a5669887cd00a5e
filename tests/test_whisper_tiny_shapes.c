/* test_whisper_tiny_shapes.c — Whisper's encoder and decoder at the real
 * whisper-tiny shapes (d_model 384, 4+4 layers, 6 heads, FFN 1536, vocab
 * 51865, 3000 Mel frames) on the Vulkan device, against the independent
 * PyTorch model (tests/reference/whisper_reference.py --tiny-shapes,
 * float64).
 *
 * No checkpoint is committed (151 MB): every weight comes from a formula
 * both sides evaluate bit for bit (documented in whisper_reference.py):
 * seed = FNV-1a 64 of the Hugging Face name, u = ((splitmix64(seed + i)
 * >> 40) * 2^-23 - 1) in [-1, 1), value = (float)(offset + amp * u) in
 * double, amp by the tensor's role; encoder positions are
 * tg_whisper_sinusoids (double, then float). The input log-Mel is u("mel",
 * i). weights_probe.txt (three elements and the sum of every tensor, from
 * Python) checks the generator first, so a formula mismatch is reported as
 * such rather than as wrong outputs.
 *
 * Checked (the reference files hold slices; full outputs would be 3 MB):
 *  - encoder output rows 0..3 and 1496..1499 and the sums of all 1500 rows
 *    within 1e-4 of the largest reference value;
 *  - the logits of a 4-token prefix (computed from tg's own encoder
 *    output, in the same compiled graph): vocab entries 0..63 and
 *    51801..51864 within 1e-4 relative, the full-row logsumexp within 1e-4
 *    relative and the full-row argmax identical (the reference margins are
 *    >= 0.17);
 *  - zero validation-layer messages. The interpreter is not run here (too
 *    slow at these shapes; test_whisper_model.c covers it). */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "test_checks.h"

#include "backend/vk.h"
#include "frontend/npy.h"
#include "tg.h"
#include "tg_whisper.h"

#include "test_util.h"

#define DATA TG_TEST_DATA_DIR "/whisper/tiny_shapes/"

static tg_device *dev; /* NULL when there is no Vulkan device */
static tg_whisper_config cfg;

/* ---- the weight formula (whisper_reference.py: formula_tensor) ---- */

static uint64_t fnv1a64(const char *s) {
    uint64_t h = 0xcbf29ce484222325u;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3u;
    return h;
}

static double formula_u(uint64_t seed, uint64_t i) {
    uint64_t z = seed + i + 0x9E3779B97F4A7C15u;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    z ^= z >> 31;
    return (double)(z >> 40) * 0x1p-23 - 1.0;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Fills `a` (f32, allocated here) with the formula's values for `name`. */
static void formula_tensor(const char *name, int rank, const int64_t *shape, tg_array *a) {
    OK(tg_array_alloc(a, TG_F32, rank, shape));
    float *p = a->data;
    int64_t n = tg_array_count(a);
    if (strcmp(name, "model.encoder.embed_positions.weight") == 0) {
        OK(tg_whisper_sinusoids((int)shape[0], (int)shape[1], p));
        return;
    }
    double offset = 0, amp;
    if (strstr(name, "layer_norm.")) {
        bool w = ends_with(name, ".weight");
        offset = w ? 1.0 : 0.0;
        amp = w ? 0.1 : 0.05;
    } else if (ends_with(name, ".bias")) {
        amp = 0.05;
    } else if (strcmp(name, "model.decoder.embed_tokens.weight") == 0) {
        amp = 0.2;
    } else if (strcmp(name, "model.decoder.embed_positions.weight") == 0) {
        amp = 1.0;
    } else {
        int64_t fan_in = 1;
        for (int d = 1; d < rank; d++) fan_in *= shape[d];
        amp = sqrt(3.0 / (double)fan_in);
    }
    uint64_t seed = fnv1a64(name);
    for (int64_t i = 0; i < n; i++) {
        double s = amp * formula_u(seed, (uint64_t)i);
        p[i] = (float)(offset + s);
    }
}

static tg_store *formula_store(void) {
    tg_store *s = tg_store_new();
    int n = tg_whisper_weight_count(&cfg);
    for (int i = 0; i < n; i++) {
        char name[96];
        int rank;
        int64_t shape[TG_MAX_RANK];
        OK(tg_whisper_weight_info(&cfg, i, name, sizeof name, &rank, shape));
        tg_array a = {0};
        formula_tensor(name, rank, shape, &a);
        OK(tg_store_set(s, name, &a));
        tg_array_free(&a);
    }
    return s;
}

/* Max |got[i] - want[i]| <= tol * max |want|; returns the relative error. */
static double check_close(const float *got, const tg_array *want, double tol, const char *what) {
    double max_ref = 0, max_err = 0;
    int64_t worst = 0, n = tg_array_count(want);
    for (int64_t i = 0; i < n; i++) {
        double w = tg_array_get(want, i), e = fabs((double)got[i] - w);
        if (fabs(w) > max_ref) max_ref = fabs(w);
        if (!(e <= max_err)) {
            max_err = isnan(e) ? INFINITY : e;
            worst = i;
        }
    }
    double rel = max_err / max_ref;
    printf("# %s: max error %.2e of max |ref| %.3g (relative %.2e)\n", what, max_err, max_ref, rel);
    if (!(max_err <= tol * max_ref))
        fail_msg("%s: element %lld: got %.9g, want %.9g (relative error %.3g, allowed %.3g)", what,
                 (long long)worst, got[worst], tg_array_get(want, worst), rel, tol);
    return rel;
}

static double seconds(struct timespec a, struct timespec b) {
    return (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
}

/* ---- tests ---- */

/* The C generator gives the values Python wrote: first, middle and last
 * element exactly, the sum to 1e-9 relative (summation order differs). */
static void test_weight_formula_matches_reference(void **state) {
    (void)state;
    FILE *f = fopen(DATA "weights_probe.txt", "r");
    if (!f) fail_msg("cannot open " DATA "weights_probe.txt");
    int lines = 0, n = tg_whisper_weight_count(&cfg);
    char line[256];
    while (fgets(line, sizeof line, f)) {
        char want_name[128];
        double v0, vm, vl, sum;
        if (sscanf(line, "%127s %lf %lf %lf %lf", want_name, &v0, &vm, &vl, &sum) != 5)
            fail_msg("bad probe line: %s", line);
        lines++;
        int found = -1;
        char name[96];
        int rank;
        int64_t shape[TG_MAX_RANK];
        for (int i = 0; i < n && found < 0; i++) {
            OK(tg_whisper_weight_info(&cfg, i, name, sizeof name, &rank, shape));
            if (strcmp(name, want_name) == 0) found = i;
        }
        if (found < 0) fail_msg("probe names %s, not a whisper-tiny weight", want_name);
        tg_array a = {0};
        formula_tensor(name, rank, shape, &a);
        const float *p = a.data;
        int64_t count = tg_array_count(&a);
        double s = 0;
        for (int64_t i = 0; i < count; i++) s += p[i];
        if (p[0] != (float)v0 || p[count / 2] != (float)vm || p[count - 1] != (float)vl)
            fail_msg("%s: elements %.9g %.9g %.9g, reference %.9g %.9g %.9g", name, p[0],
                     p[count / 2], p[count - 1], v0, vm, vl);
        if (fabs(s - sum) > 1e-9 * (fabs(sum) + count))
            fail_msg("%s: sum %.17g, reference %.17g", name, s, sum);
        tg_array_free(&a);
    }
    fclose(f);
    assert_int_equal(lines, n);
}

static void test_encoder_and_logits_vulkan(void **state) {
    (void)state;
    if (!dev) skip();
    struct timespec t0, tw, t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    tg_store *s = formula_store();
    clock_gettime(CLOCK_MONOTONIC, &tw);

    int frames = 2 * cfg.max_source_positions, n_mels = cfg.num_mel_bins;
    int64_t mshape[3] = {1, n_mels, frames};
    tg_array mel = {0};
    OK(tg_array_alloc(&mel, TG_F32, 3, mshape));
    uint64_t seed = fnv1a64("mel");
    float *m = mel.data;
    for (int64_t i = 0; i < tg_array_count(&mel); i++) m[i] = (float)formula_u(seed, (uint64_t)i);
    tg_array prefix = tg_test_load_npy(DATA, "prefix.npy");

    tg_graph *g = tg_graph_new();
    tg_tensor x = tg_placeholder(g, "mel", TG_F32, 3, mshape);
    tg_tensor t = tg_placeholder(g, "tokens", TG_I32, 2, prefix.shape);
    tg_tensor enc = tg_whisper_build_encoder(g, &cfg, x);
    tg_tensor logits = tg_whisper_build_decoder(g, &cfg, t, enc);
    if (tg_graph_status(g) != TG_OK) fail_msg("%s", tg_graph_error(g));
    tg_tensor targets[2] = {enc, logits};
    tg_executable *e = NULL;
    OK(tg_compile(dev, g, s, 2, targets, 0, NULL, NULL, &e));
    tg_feed feeds[2] = {{x, &mel}, {t, &prefix}};
    tg_array got[2] = {{0}, {0}};
    clock_gettime(CLOCK_MONOTONIC, &t1);
    OK(tg_run(e, 2, feeds, got));
    clock_gettime(CLOCK_MONOTONIC, &t2);
    printf("# weights %.2f s, compile %.2f s, first run (with driver JIT) %.2f s\n",
           seconds(t0, tw), seconds(tw, t1), seconds(t1, t2));

    /* encoder: [1, 1500, 384] */
    int S = cfg.max_source_positions, d = cfg.d_model;
    assert_int_equal(got[0].rank, 3);
    assert_int_equal(got[0].shape[1], S);
    assert_int_equal(got[0].shape[2], d);
    const float *eo = got[0].data;
    tg_array want_rows = tg_test_load_npy(DATA, "encoder_rows.npy"),
             want_sums = tg_test_load_npy(DATA, "encoder_row_sums.npy");
    assert_int_equal(tg_array_count(&want_rows), 8 * d);
    assert_int_equal(tg_array_count(&want_sums), S);
    float *rows = malloc((size_t)8 * d * sizeof *rows);
    memcpy(rows, eo, (size_t)4 * d * sizeof *rows);
    memcpy(rows + 4 * d, eo + (size_t)(S - 4) * d, (size_t)4 * d * sizeof *rows);
    check_close(rows, &want_rows, 1e-4, "encoder rows 0..3, 1496..1499");
    float *sums = malloc((size_t)S * sizeof *sums);
    for (int r = 0; r < S; r++) {
        double acc = 0;
        for (int c = 0; c < d; c++) acc += eo[(size_t)r * d + c];
        sums[r] = (float)acc;
    }
    check_close(sums, &want_sums, 1e-4, "encoder row sums");

    /* logits: [1, 4, 51865] */
    int T = (int)prefix.shape[1], V = cfg.vocab_size;
    assert_int_equal(got[1].rank, 3);
    assert_int_equal(got[1].shape[1], T);
    assert_int_equal(got[1].shape[2], V);
    const float *lo = got[1].data;
    float *head = malloc((size_t)T * 64 * sizeof *head),
          *tail = malloc((size_t)T * 64 * sizeof *tail);
    float lse[16];
    int32_t arg[16];
    for (int r = 0; r < T; r++) {
        const float *row = lo + (size_t)r * V;
        memcpy(head + r * 64, row, 64 * sizeof *head);
        memcpy(tail + r * 64, row + V - 64, 64 * sizeof *tail);
        int best = 0;
        for (int k = 1; k < V; k++)
            if (row[k] > row[best]) best = k;
        double acc = 0;
        for (int k = 0; k < V; k++) acc += exp((double)row[k] - row[best]);
        arg[r] = best;
        lse[r] = (float)(row[best] + log(acc));
    }
    tg_array want_head = tg_test_load_npy(DATA, "logits_head.npy"),
             want_tail = tg_test_load_npy(DATA, "logits_tail.npy");
    tg_array want_lse = tg_test_load_npy(DATA, "logits_logsumexp.npy"),
             want_arg = tg_test_load_npy(DATA, "logits_argmax.npy");
    assert_int_equal(tg_array_count(&want_head), T * 64);
    assert_int_equal(tg_array_count(&want_tail), T * 64);
    assert_int_equal(tg_array_count(&want_lse), T);
    assert_int_equal(tg_array_count(&want_arg), T);
    check_close(head, &want_head, 1e-4, "logits vocab 0..63");
    check_close(tail, &want_tail, 1e-4, "logits vocab 51801..51864");
    check_close(lse, &want_lse, 1e-4, "logits logsumexp");
    for (int r = 0; r < T; r++)
        if (arg[r] != ((const int32_t *)want_arg.data)[r])
            fail_msg("row %d: argmax %d, reference %d", r, arg[r],
                     ((const int32_t *)want_arg.data)[r]);

    if (tg_vk_validation_message_count() != 0)
        fail_msg("validation: %s", tg_vk_validation_first_message());

    free(rows);
    free(sums);
    free(head);
    free(tail);
    tg_array_free(&want_rows);
    tg_array_free(&want_sums);
    tg_array_free(&want_head);
    tg_array_free(&want_tail);
    tg_array_free(&want_lse);
    tg_array_free(&want_arg);
    tg_array_free(&got[0]);
    tg_array_free(&got[1]);
    tg_executable_free(e);
    tg_graph_free(g);
    tg_array_free(&mel);
    tg_array_free(&prefix);
    tg_store_free(s);
}

static int setup(void **state) {
    (void)state;
    if (tg_whisper_config_preset("tiny", &cfg) != TG_OK) {
        fprintf(stderr, "config: %s\n", tg_last_error());
        return -1;
    }
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
    if (!tg_test_device_env(cache, sizeof cache, "tg_test_whisper_tiny_shapes", false)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weight_formula_matches_reference),
        cmocka_unit_test(test_encoder_and_logits_vulkan),
    };
    int failed = cmocka_run_group_tests(tests, setup, teardown);
    tg_test_remove_tree(cache);
    return failed;
}
