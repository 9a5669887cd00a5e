/* test_metrics.c — WER/CER on hand-worked examples, normalisation, the
 * metrics.jsonl reader and the SVG plot (frontend/lib_metrics.c). */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frontend/metrics.h"
#include "test_util.h"

static void one(const char *hyp, const char *ref, int64_t we, int64_t w, int64_t ce, int64_t c) {
    tg_error_counts k = {0};
    assert_int_equal(tg_error_counts_add(&k, hyp, ref), TG_OK);
    assert_int_equal(k.word_edits, we);
    assert_int_equal(k.words, w);
    assert_int_equal(k.char_edits, ce);
    assert_int_equal(k.chars, c);
}

static void test_normalize(void **state) {
    (void)state;
    char *s = tg_text_normalize("  Hello,   World!  It's\tfine. ");
    assert_string_equal(s, "hello world it's fine");
    free(s);
    s = tg_text_normalize("...");
    assert_string_equal(s, "");
    free(s);
}

static void test_hand_worked(void **state) {
    (void)state;
    /* identical */
    one("the cat sat", "the cat sat", 0, 3, 0, 11);
    /* one substitution (sat -> sit) and one deletion (the): 2 of 6 words;
     * characters: a -> i, and "the " deleted: 1 + 4 = 5 of 22 */
    one("the cat sit on mat", "the cat sat on the mat", 2, 6, 5, 22);
    /* kitten -> sitting: 3 character edits, 1 word edit */
    one("sitting", "kitten", 1, 1, 3, 6);
    /* normalisation makes these equal */
    one("Hello, world!", "hello world", 0, 2, 0, 11);
    /* empty hypothesis: every word and character deleted */
    one("", "a b", 2, 2, 3, 3);
    /* an insertion */
    one("a b", "a", 1, 1, 2, 1);
}

static void test_corpus_rates(void **state) {
    (void)state;
    tg_error_counts k = {0};
    tg_error_counts_add(&k, "the cat sit on mat", "the cat sat on the mat");
    tg_error_counts_add(&k, "sitting", "kitten");
    /* words (2 + 1) / (6 + 1), characters (5 + 3) / (22 + 6) */
    assert_float_equal(tg_wer(&k), 3.0 / 7.0, 1e-12);
    assert_float_equal(tg_cer(&k), 8.0 / 28.0, 1e-12);
    tg_error_counts z = {0};
    assert_float_equal(tg_wer(&z), 0.0, 0);
}

static void test_metrics_file_and_plot(void **state) {
    (void)state;
    char dir[256], path[512], svg[512];
    assert_true(tg_test_temp_dir(dir, sizeof dir, "tg-metrics"));
    snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    snprintf(svg, sizeof svg, "%s/plot.svg", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("{\"step\": 10, \"loss\": 3.5, \"lr\": 0.001}\n"
          "not json\n"
          "{\"step\": 20, \"loss\": 2.5}\n"
          "{\"step\": 20, \"eval_loss\": 2.75, \"wer\": 0.5, \"cer\": 0.25}\n"
          "{\"nostep\": 1}\n",
          f);
    fclose(f);
    tg_metric_point *p;
    int n;
    assert_int_equal(tg_metrics_read(path, &p, &n), TG_OK);
    assert_int_equal(n, 3);
    assert_int_equal(p[0].step, 10);
    assert_float_equal(p[0].train_loss, 3.5, 0);
    assert_float_equal(p[2].eval_loss, 2.75, 0);
    assert_float_equal(p[2].wer, 0.5, 0);
    assert_int_equal(tg_metrics_plot_svg(svg, p, n, "test"), TG_OK);
    free(p);
    char *text = NULL;
    f = fopen(svg, "r");
    assert_non_null(f);
    text = calloc(1, 1 << 16);
    size_t len = fread(text, 1, (1 << 16) - 1, f);
    fclose(f);
    assert_true(len > 100);
    assert_non_null(strstr(text, "<svg"));
    assert_non_null(strstr(text, "</svg>"));
    assert_non_null(strstr(text, "polyline"));
    free(text);
    tg_test_remove_tree(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_hand_worked),
        cmocka_unit_test(test_corpus_rates),
        cmocka_unit_test(test_metrics_file_and_plot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
