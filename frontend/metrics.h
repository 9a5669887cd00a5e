/* metrics.h — error rates, the metrics log and its plot
 * (frontend/lib_metrics.c).
 *
 * WER and CER are Levenshtein distances (substitutions, insertions and
 * deletions, each costing 1) between a hypothesis and a reference after
 * normalisation: ASCII letters lower-cased, punctuation (every ASCII
 * character that is not a letter, digit, apostrophe or white space)
 * removed, runs of white space made one space, leading and trailing space
 * dropped. WER counts words, CER characters (bytes; spaces included) of
 * the normalised texts; both are edits / reference length, summed over a
 * corpus before dividing. */
#ifndef TG_FRONTEND_METRICS_H
#define TG_FRONTEND_METRICS_H

#include "tg.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The normalised text (malloc'ed), or NULL when out of memory. */
char *tg_text_normalize(const char *text);

/** Edit counts of one pair (normalised inside): word edits and reference
 *  words, character edits and reference characters. */
typedef struct tg_error_counts {
    int64_t word_edits, words, char_edits, chars;
} tg_error_counts;
tg_status tg_error_counts_add(tg_error_counts *c, const char *hypothesis, const char *reference);
/** edits / reference length; 0 for an empty reference with no edits,
 *  1 per edit when the reference is empty. */
double tg_wer(const tg_error_counts *c);
double tg_cer(const tg_error_counts *c);

/** Levenshtein distance of two sequences of n and m items, where item i of
 *  a equals item j of b when eq(user, i, j); -1 when out of memory. */
int64_t tg_levenshtein(int64_t n, int64_t m, bool (*eq)(void *user, int64_t i, int64_t j),
                       void *user);

/** One point of the training curves. NaN: not measured at that step. */
typedef struct tg_metric_point {
    int step;
    double train_loss, eval_loss, wer, cer;
} tg_metric_point;

/** Reads the points of a metrics.jsonl file: every line with "step" and
 *  any of "loss", "eval_loss", "wer", "cer" (other lines are ignored).
 *  *points is malloc'ed. */
tg_status tg_metrics_read(const char *path, tg_metric_point **points, int *n);
/** Writes an SVG plot of train loss, eval loss (left axis) and WER, CER
 *  (right axis, percent) against the step, atomically. */
tg_status tg_metrics_plot_svg(const char *path, const tg_metric_point *points, int n,
                              const char *title);

#ifdef __cplusplus
}
#endif
#endif /* TG_FRONTEND_METRICS_H */
