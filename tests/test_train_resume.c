/* test_train_resume.c — `graph train` end to end on a tiny model and a
 * tiny synthetic data set (tones with made-up transcripts):
 *  - resuming from a checkpoint continues exactly: the loss of every step
 *    after it equals the uninterrupted run's within 1e-6, and the final
 *    weights are identical;
 *  - a half-written checkpoint (a crash during a save) is ignored;
 *  - SIGINT saves a checkpoint and exits cleanly;
 *  - SIGKILL in the middle of a save leaves the previous checkpoint
 *    loadable, and training resumes from it;
 *  - metrics.jsonl and the SVG plot are written. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dirent.h>

#include <cmocka.h>

#include "test_checks.h"
#include <sndfile.h>

#include "test_util.h"

static char dir[256], cache[256];

static void write_wav(const char *path, int n, double freq, double noise) {
    SF_INFO info = {.samplerate = 16000, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    SNDFILE *f = sf_open(path, SFM_WRITE, &info);
    assert_non_null(f);
    float *x = malloc((size_t)n * sizeof *x);
    uint32_t s = (uint32_t)(freq * 7);
    for (int i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = (float)(0.4 * sin(2 * 3.14159265 * freq * i / 16000.0) +
                       noise * ((double)(s >> 8) / 16777216.0 - 0.5));
    }
    assert_int_equal(sf_write_float(f, x, n), n);
    sf_close(f);
    free(x);
}

static int setup(void **state) {
    (void)state;
    if (!tg_test_temp_dir(dir, sizeof dir, "tg-train-resume")) return -1;
    tg_test_cache_dir(cache, sizeof cache, "tg-train-resume-cache");
    char p[512];
    snprintf(p, sizeof p, "%s/m.jsonl", dir);
    FILE *m = fopen(p, "w");
    const char *texts[4] = {"la", "do re", "mi", "fa so"};
    for (int i = 0; i < 12; i++) {
        snprintf(p, sizeof p, "%s/c%d.wav", dir, i);
        write_wav(p, 6000 + 100 * i, 200.0 + 150.0 * (i % 4), 0.05 * (i / 4));
        fprintf(m, "{\"audio\": \"c%d.wav\", \"text\": \"%s\"}\n", i, texts[i % 4]);
    }
    fprintf(m, "{\"audio\": \"missing.wav\", \"text\": \"gone\"}\nnot json\n");
    fclose(m);
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *c = fopen(p, "w");
    fputs("{\"d_model\": 32, \"encoder_layers\": 1, \"decoder_layers\": 1,\n"
          " \"encoder_attention_heads\": 2, \"decoder_attention_heads\": 2,\n"
          " \"encoder_ffn_dim\": 64, \"decoder_ffn_dim\": 64, \"num_mel_bins\": 80,\n"
          " \"max_source_positions\": 25, \"max_target_positions\": 16, \"vocab_size\": 265,\n"
          " \"activation_function\": \"gelu\", \"scale_embedding\": false,\n"
          " \"decoder_start_token_id\": 257, \"eos_token_id\": 256, \"pad_token_id\": 256,\n"
          " \"bos_token_id\": 256}\n",
          c);
    fclose(c);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    tg_test_remove_tree(dir);
    tg_test_remove_tree(cache);
    return 0;
}

#define COMMON                                                                                     \
    "--train %s/m.jsonl --config %s/config.json --tokenizer bytes --batch-size 4 "                 \
    "--max-tokens 12 --warmup 2 --lr 3e-3 --log-every 1 --seed 5"

static void test_resume_is_exact(void **state) {
    (void)state;
    /* the uninterrupted run: 8 steps, checkpoints at 4 and 8 */
    assert_int_equal(tg_test_sh("%s train " COMMON " --steps 8 --save-every 4 --keep 5 --out %s/a",
                                TG_GRAPH_EXE, dir, dir, dir),
                     0);
    /* the interrupted one: its checkpoint at step 4, then a resume */
    assert_int_equal(tg_test_sh("mkdir -p %s/b && cp -r %s/a/checkpoint-4 %s/b/", dir, dir, dir),
                     0);
    /* a save that died half way (SIGKILL during a save) leaves a temporary
     * directory; the resume must ignore it */
    assert_int_equal(tg_test_sh("mkdir -p %s/b/.tmp-checkpoint-6 && echo junk > "
                                "%s/b/.tmp-checkpoint-6/model.safetensors",
                                dir, dir),
                     0);
    /* the display options are not part of the state: --log-every again */
    assert_int_equal(tg_test_sh("%s train --resume %s/b --save-every 4 --keep 5 --log-every 1",
                                TG_GRAPH_EXE, dir),
                     0);
    double a[9], b[9];
    char pa[512], pb[512];
    snprintf(pa, sizeof pa, "%s/a", dir);
    snprintf(pb, sizeof pb, "%s/b", dir);
    tg_test_read_losses(pa, a, 8);
    tg_test_read_losses(pb, b, 8);
    for (int s = 1; s <= 8; s++) assert_false(isnan(a[s]));
    for (int s = 1; s <= 4; s++) assert_true(isnan(b[s])); /* not rerun */
    for (int s = 5; s <= 8; s++) {
        if (isnan(b[s]) || fabs(a[s] - b[s]) > 1e-6)
            fail_msg("step %d: loss %.9g uninterrupted, %.9g resumed", s, a[s], b[s]);
    }
    /* it learned something: the last loss is below the first */
    assert_true(a[8] < a[1]);
    snprintf(pa, sizeof pa, "%s/a/checkpoint-8/model.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/b/checkpoint-8/model.safetensors", dir);
    assert_true(tg_test_same_file(pa, pb));
    snprintf(pa, sizeof pa, "%s/a/checkpoint-8/optimizer.safetensors", dir);
    snprintf(pb, sizeof pb, "%s/b/checkpoint-8/optimizer.safetensors", dir);
    assert_true(tg_test_same_file(pa, pb));
    /* a Hugging Face directory: config, generation config, tokenizer; the plot */
    const char *files[] = {"config.json", "generation_config.json", "tokenizer.json",
                           "trainer_state.json"};
    for (int i = 0; i < 4; i++) {
        snprintf(pa, sizeof pa, "%s/a/checkpoint-8/%s", dir, files[i]);
        assert_int_equal(access(pa, R_OK), 0);
    }
    snprintf(pa, sizeof pa, "%s/a/training.svg", dir);
    assert_int_equal(access(pa, R_OK), 0);
}

static void test_sigint_saves(void **state) {
    (void)state;
    char out[300], metrics[400];
    snprintf(out, sizeof out, "%s/int", dir);
    snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", out);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "exec %s train " COMMON " --steps 100000 --out %s", TG_GRAPH_EXE, dir,
             dir, out);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    /* wait for three logged steps (at most 10 minutes) */
    for (int i = 0; i < 6000; i++) {
        int lines = 0;
        FILE *f = fopen(metrics, "r");
        if (f) {
            int c;
            while ((c = fgetc(f)) != EOF) lines += c == '\n';
            fclose(f);
        }
        if (lines >= 3) break;
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
    }
    kill(pid, SIGINT);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    /* a checkpoint of the last step exists and resumes (for one more step) */
    char p[600];
    int found = -1;
    for (int s = 3; s < 1000 && found < 0; s++) {
        snprintf(p, sizeof p, "%s/checkpoint-%d/trainer_state.json", out, s);
        if (access(p, R_OK) == 0) found = s;
    }
    assert_true(found >= 3);
    assert_int_equal(tg_test_sh("%s train --resume %s --steps %d", TG_GRAPH_EXE, out, found + 1),
                     0);
    snprintf(p, sizeof p, "%s/checkpoint-%d/model.safetensors", out, found + 1);
    assert_int_equal(access(p, R_OK), 0);
}

/* True if directory `out` holds a ".tmp-checkpoint-*" entry: a save in
 * progress (or one that died). */
static bool save_in_progress(const char *out) {
    DIR *d = opendir(out);
    bool found = false;
    if (!d) return false;
    for (struct dirent *e; !found && (e = readdir(d));)
        found = strncmp(e->d_name, ".tmp-checkpoint-", 16) == 0;
    closedir(d);
    return found;
}

/* The newest complete checkpoint's step in `out`, or -1. */
static int newest_checkpoint(const char *out) {
    char p[600];
    int newest = -1;
    for (int s = 1; s < 2000; s++) {
        snprintf(p, sizeof p, "%s/checkpoint-%d/trainer_state.json", out, s);
        if (access(p, R_OK) == 0) newest = s;
    }
    return newest;
}

static void test_sigkill_during_save(void **state) {
    (void)state;
    char out[300];
    snprintf(out, sizeof out, "%s/kill", dir);
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "exec %s train " COMMON " --steps 100000 --save-every 1 --keep 2 --out %s",
             TG_GRAPH_EXE, dir, dir, out);
    /* A save takes milliseconds: watch for one to start and kill the
     * trainer then; retry until a kill lands while the temporary
     * directory still exists (a save cut short), at most 20 times. */
    bool cut_short = false;
    for (int attempt = 0; attempt < 20 && !cut_short; attempt++) {
        assert_int_equal(tg_test_sh("rm -rf %s", out), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
            _exit(127);
        }
        /* after the first checkpoint, kill as soon as a later save starts
         * (at most 10 minutes) */
        bool seen = false;
        int status;
        for (int i = 0; i < 600000 && !seen; i++) {
            seen = newest_checkpoint(out) >= 1 && save_in_progress(out);
            if (!seen) {
                /* a run that ended (or crashed) before the save: fail now */
                if (waitpid(pid, &status, WNOHANG) == pid)
                    fail_msg("graph train exited (status %d) before a save was seen", status);
                struct timespec ts = {0, 1000000};
                nanosleep(&ts, NULL);
            }
        }
        kill(pid, SIGKILL);
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));
        cut_short = save_in_progress(out);
    }
    assert_true(cut_short);
    /* the previous checkpoint is complete and training resumes from it */
    int last = newest_checkpoint(out);
    assert_true(last >= 1);
    assert_int_equal(tg_test_sh("%s train --resume %s --steps %d", TG_GRAPH_EXE, out, last + 1), 0);
    char p[600];
    snprintf(p, sizeof p, "%s/checkpoint-%d/model.safetensors", out, last + 1);
    assert_int_equal(access(p, R_OK), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_is_exact),
        cmocka_unit_test(test_sigint_saves),
        cmocka_unit_test(test_sigkill_during_save),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
