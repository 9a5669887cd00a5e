/* lib_metrics.c — WER/CER, reading metrics.jsonl and plotting it as SVG
 * (metrics.h). */
#define _POSIX_C_SOURCE 200809L
#include "frontend/metrics.h"
#include "frontend/safetensors.h"
#include "graph/graph_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* Error rates                                                         */
/* ------------------------------------------------------------------ */

static bool is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

char *tg_text_normalize(const char *text) {
    if (!text) return NULL;
    size_t n = strlen(text);
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t k = 0;
    bool pending_space = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)text[i];
        if (is_space(c)) {
            pending_space = k > 0;
            continue;
        }
        bool keep = c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    (c >= '0' && c <= '9') || c == '\'';
        if (!keep) continue; /* punctuation: removed, not a word break */
        if (pending_space) out[k++] = ' ';
        pending_space = false;
        out[k++] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    out[k] = '\0';
    return out;
}

int64_t tg_levenshtein(int64_t n, int64_t m, bool (*eq)(void *user, int64_t i, int64_t j),
                       void *user) {
    if (n == 0) return m;
    if (m == 0) return n;
    int64_t *row = malloc((size_t)(m + 1) * sizeof *row);
    if (!row) return -1;
    for (int64_t j = 0; j <= m; j++) row[j] = j;
    for (int64_t i = 1; i <= n; i++) {
        int64_t diag = row[0]; /* d[i-1][j-1] */
        row[0] = i;
        for (int64_t j = 1; j <= m; j++) {
            int64_t up = row[j]; /* d[i-1][j] */
            int64_t best = diag + (eq(user, i - 1, j - 1) ? 0 : 1);
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            diag = up;
            row[j] = best;
        }
    }
    int64_t d = row[m];
    free(row);
    return d;
}

typedef struct words {
    int n;
    const char **start;
    int *len;
} words;

static bool split_words(char *s, words *w) {
    int cap = 1;
    for (char *p = s; *p; p++) cap += *p == ' ';
    w->start = malloc((size_t)cap * sizeof *w->start);
    w->len = malloc((size_t)cap * sizeof *w->len);
    w->n = 0;
    if (!w->start || !w->len) return false;
    char *p = s;
    while (*p) {
        char *e = strchr(p, ' ');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        w->start[w->n] = p;
        w->len[w->n++] = (int)l;
        p += l + (e ? 1 : 0);
    }
    return true;
}

typedef struct pair {
    const void *a, *b;
} pair;

static bool eq_chars(void *user, int64_t i, int64_t j) {
    pair *p = user;
    return ((const char *)p->a)[i] == ((const char *)p->b)[j];
}

static bool eq_words(void *user, int64_t i, int64_t j) {
    pair *p = user;
    const words *a = p->a, *b = p->b;
    return a->len[i] == b->len[j] && memcmp(a->start[i], b->start[j], (size_t)a->len[i]) == 0;
}

tg_status tg_error_counts_add(tg_error_counts *c, const char *hypothesis, const char *reference) {
    if (!c || !hypothesis || !reference)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_error_counts_add: NULL argument");
    char *h = tg_text_normalize(hypothesis), *r = tg_text_normalize(reference);
    words wh = {0}, wr = {0};
    tg_status st = TG_OK;
    if (!h || !r || !split_words(h, &wh) || !split_words(r, &wr)) {
        st = tg_set_error(TG_ERR_NO_MEMORY, "tg_error_counts_add: out of memory");
    } else {
        pair pc = {h, r}, pw = {&wh, &wr};
        int64_t ce = tg_levenshtein((int64_t)strlen(h), (int64_t)strlen(r), eq_chars, &pc);
        int64_t we = tg_levenshtein(wh.n, wr.n, eq_words, &pw);
        if (ce < 0 || we < 0) {
            st = tg_set_error(TG_ERR_NO_MEMORY, "tg_error_counts_add: out of memory");
        } else {
            c->char_edits += ce;
            c->chars += (int64_t)strlen(r);
            c->word_edits += we;
            c->words += wr.n;
        }
    }
    free(wh.start);
    free(wh.len);
    free(wr.start);
    free(wr.len);
    free(h);
    free(r);
    return st;
}

static double rate(int64_t edits, int64_t len) {
    if (len == 0) return edits == 0 ? 0.0 : (double)edits;
    return (double)edits / (double)len;
}

double tg_wer(const tg_error_counts *c) { return rate(c->word_edits, c->words); }
double tg_cer(const tg_error_counts *c) { return rate(c->char_edits, c->chars); }

/* ------------------------------------------------------------------ */
/* metrics.jsonl                                                       */
/* ------------------------------------------------------------------ */

static double num(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

tg_status tg_metrics_read(const char *path, tg_metric_point **points, int *n) {
    if (!path || !points || !n) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_metrics_read: NULL");
    *points = NULL;
    *n = 0;
    char *buf;
    size_t len;
    tg_status st = tg_read_whole_file(path, (size_t)1 << 30, &buf, &len);
    if (st != TG_OK) return st;
    int cap = 0;
    tg_metric_point *p = NULL;
    char *line = buf;
    while (line < buf + len) {
        char *nl = memchr(line, '\n', (size_t)(buf + len - line));
        size_t l = nl ? (size_t)(nl - line) : (size_t)(buf + len - line);
        cJSON *o = cJSON_ParseWithLength(line, l);
        line += l + 1;
        if (!cJSON_IsObject(o)) {
            cJSON_Delete(o);
            continue;
        }
        double step = num(o, "step");
        tg_metric_point q = {0, num(o, "loss"), num(o, "eval_loss"), num(o, "wer"), num(o, "cer")};
        cJSON_Delete(o);
        if (isnan(step) || (isnan(q.train_loss) && isnan(q.eval_loss) && isnan(q.wer))) continue;
        q.step = (int)step;
        if (*n == cap) {
            cap = cap ? 2 * cap : 256;
            tg_metric_point *np = realloc(p, (size_t)cap * sizeof *np);
            if (!np) {
                free(p);
                free(buf);
                return tg_set_error(TG_ERR_NO_MEMORY, "tg_metrics_read: out of memory");
            }
            p = np;
        }
        p[(*n)++] = q;
    }
    free(buf);
    *points = p;
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* The plot                                                            */
/* ------------------------------------------------------------------ */

#define W 800
#define H 480
#define L 70  /* left margin */
#define R 70  /* right margin */
#define TOP 40
#define BOT 50

typedef double (*getter)(const tg_metric_point *);
static double get_train(const tg_metric_point *p) { return p->train_loss; }
static double get_eval(const tg_metric_point *p) { return p->eval_loss; }
static double get_wer(const tg_metric_point *p) { return 100.0 * p->wer; }
static double get_cer(const tg_metric_point *p) { return 100.0 * p->cer; }

static void polyline(FILE *f, const tg_metric_point *p, int n, getter get, double x0, double x1,
                     double y0, double y1, const char *color, bool dots) {
    bool open = false;
    for (int i = 0; i < n; i++) {
        double v = get(&p[i]);
        if (isnan(v) || isinf(v)) continue;
        double x = L + (W - L - R) * (x1 > x0 ? (p[i].step - x0) / (x1 - x0) : 0.5);
        double y = TOP + (H - TOP - BOT) * (1.0 - (y1 > y0 ? (v - y0) / (y1 - y0) : 0.5));
        if (dots) fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", x, y, color);
        if (!open) {
            fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", color);
            open = true;
        }
        fprintf(f, "%.1f,%.1f ", x, y);
    }
    if (open) fputs("\"/>\n", f);
}

static void range(const tg_metric_point *p, int n, getter get, double *lo, double *hi) {
    for (int i = 0; i < n; i++) {
        double v = get(&p[i]);
        if (isnan(v) || isinf(v)) continue;
        if (v < *lo) *lo = v;
        if (v > *hi) *hi = v;
    }
}

tg_status tg_metrics_plot_svg(const char *path, const tg_metric_point *points, int n,
                              const char *title) {
    if (!path || (!points && n)) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "plot: NULL");
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return tg_set_error(TG_ERR_IO, "%s: cannot write", tmp);
    double x0 = 1e300, x1 = -1e300;
    for (int i = 0; i < n; i++) {
        if (points[i].step < x0) x0 = points[i].step;
        if (points[i].step > x1) x1 = points[i].step;
    }
    double l0 = 0, l1 = -1e300, e0 = 0, e1 = -1e300;
    range(points, n, get_train, &l0, &l1);
    range(points, n, get_eval, &l0, &l1);
    range(points, n, get_wer, &e0, &e1);
    range(points, n, get_cer, &e0, &e1);
    if (l1 < l0) l1 = 1;
    if (e1 < e0 || e1 < 1) e1 = 100;
    fprintf(f,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
            "font-family=\"sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
            "<text x=\"%d\" y=\"24\" font-size=\"15\">%s</text>\n",
            W, H, L, title ? title : "training");
    /* axes and ticks */
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" stroke=\"#444\"/>\n",
            L, TOP, W - L - R, H - TOP - BOT);
    for (int k = 0; k <= 4; k++) {
        double y = TOP + (H - TOP - BOT) * (1.0 - k / 4.0);
        fprintf(f, "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", L,
                W - R, y, y);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n", L - 6, y + 4,
                l0 + (l1 - l0) * k / 4.0);
        fprintf(f, "<text x=\"%d\" y=\"%.1f\">%.3g%%</text>\n", W - R + 6, y + 4,
                e0 + (e1 - e0) * k / 4.0);
        double x = L + (W - L - R) * k / 4.0;
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.0f</text>\n", x, H - BOT + 18,
                n ? x0 + (x1 - x0) * k / 4.0 : 0.0);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">step</text>\n", (L + W - R) / 2,
            H - 12);
    fprintf(f, "<text x=\"16\" y=\"%d\" transform=\"rotate(-90 16 %d)\" text-anchor=\"middle\">"
               "loss</text>\n", (TOP + H - BOT) / 2, (TOP + H - BOT) / 2);
    fprintf(f, "<text x=\"%d\" y=\"%d\" transform=\"rotate(90 %d %d)\" text-anchor=\"middle\">"
               "error rate</text>\n", W - 14, (TOP + H - BOT) / 2, W - 14, (TOP + H - BOT) / 2);
    polyline(f, points, n, get_train, x0, x1, l0, l1, "#1f77b4", false);
    polyline(f, points, n, get_eval, x0, x1, l0, l1, "#ff7f0e", true);
    polyline(f, points, n, get_wer, x0, x1, e0, e1, "#2ca02c", true);
    polyline(f, points, n, get_cer, x0, x1, e0, e1, "#d62728", true);
    const char *names[4] = {"train loss", "eval loss", "WER", "CER"};
    const char *colors[4] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"};
    for (int k = 0; k < 4; k++)
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"14\" height=\"4\" fill=\"%s\"/>"
                   "<text x=\"%d\" y=\"%d\">%s</text>\n",
                W - R - 330 + 85 * k, 28, colors[k], W - R - 312 + 85 * k, 33, names[k]);
    fputs("</svg>\n", f);
    bool ok = fflush(f) == 0 && !ferror(f);
    ok = (fclose(f) == 0) && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return tg_set_error(TG_ERR_IO, "%s: cannot write", path);
    }
    return TG_OK;
}
