/* profile.c — per-kernel timings of profiled runs: a text table and a
 * Chrome trace (JSON "traceEvents", viewable in Perfetto / chrome://tracing).
 *
 * The table sums the profiled runs of an executable but the first, in
 * which drivers that compile at first use (lavapipe's LLVM JIT: 14-180 ms
 * a kernel) time their compiler too, unless it is the only run; the trace
 * shows the most recent run. Timestamps are per dispatch durations, so the trace lays
 * dispatches end to end in recording order (barriers and gaps between
 * dispatches are not measured and not shown); each kernel gets its own row. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>

#include "backend/exec_internal.h"

static tg_profile_row *find_row(tg_profile *p, const char *name) {
    for (int i = 0; i < p->n_rows; i++)
        if (strcmp(p->rows[i].name, name) == 0) return &p->rows[i];
    if (p->n_rows == p->cap_rows) {
        int cap = p->cap_rows ? 2 * p->cap_rows : 32;
        tg_profile_row *r = realloc(p->rows, (size_t)cap * sizeof *r);
        if (!r) return NULL;
        p->rows = r;
        p->cap_rows = cap;
    }
    tg_profile_row *r = &p->rows[p->n_rows++];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    return r;
}

tg_status tg_profile_add_run(tg_profile *p, int n, const char (*names)[64], const double *us) {
    if (n > p->cap_last) {
        char(*nn)[64] = realloc(p->last_names, (size_t)n * sizeof *nn);
        if (nn) p->last_names = nn;
        double *nu = realloc(p->last_us, (size_t)n * sizeof *nu);
        if (nu) p->last_us = nu;
        if (!nn || !nu) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory profiling");
        p->cap_last = n;
    }
    p->n_last = n;
    for (int i = 0; i < n; i++) {
        memcpy(p->last_names[i], names[i], 64);
        p->last_us[i] = us[i];
        tg_profile_row *r = find_row(p, names[i]);
        if (!r) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory profiling");
        r->dispatches++;
        r->total_us += us[i];
        if (p->runs == 0) {
            r->first_dispatches++;
            r->first_us += us[i];
        }
    }
    p->runs++;
    return TG_OK;
}

static int by_total_desc(const void *a, const void *b) {
    const tg_profile_row *x = a, *y = b;
    if (x->total_us != y->total_us) return x->total_us < y->total_us ? 1 : -1;
    return strcmp(x->name, y->name);
}

/* A growing text buffer. */
typedef struct text {
    char *s;
    size_t n, cap;
    bool failed;
} text;

static void add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(text *t, const char *fmt, ...) {
    if (t->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(t->s ? t->s + t->n : NULL, t->s ? t->cap - t->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            t->failed = true;
            return;
        }
        if (t->s && t->n + (size_t)k < t->cap) {
            t->n += (size_t)k;
            return;
        }
        size_t cap = t->cap ? t->cap * 2 : 1024;
        while (cap < t->n + (size_t)k + 1) cap *= 2;
        char *s = realloc(t->s, cap);
        if (!s) {
            t->failed = true;
            return;
        }
        t->s = s;
        t->cap = cap;
    }
}

tg_status tg_profile_table(const tg_profile *p, char **out) {
    *out = NULL;
    if (p->runs == 0)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_executable_profile: no profiled run yet (compile with "
                            "opts.profile or TG_PROFILE=1, then run)");
    tg_profile_row *rows = malloc((size_t)(p->n_rows ? p->n_rows : 1) * sizeof *rows);
    if (!rows) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    memcpy(rows, p->rows, (size_t)p->n_rows * sizeof *rows);
    bool skip_first = p->runs > 1;
    double first = 0;
    int n_rows = 0;
    for (int i = 0; i < p->n_rows; i++) {
        first += rows[i].first_us;
        if (skip_first) {
            rows[i].dispatches -= rows[i].first_dispatches;
            rows[i].total_us -= rows[i].first_us;
        }
        if (rows[i].dispatches > 0) rows[n_rows++] = rows[i];
    }
    qsort(rows, (size_t)n_rows, sizeof *rows, by_total_desc);
    double total = 0;
    int dispatches = 0;
    for (int i = 0; i < n_rows; i++) {
        total += rows[i].total_us;
        dispatches += rows[i].dispatches;
    }
    text t = {0};
    if (skip_first)
        add(&t,
            "profile: %d runs after the first, %d dispatches, %.1f us of kernels (the first "
            "run, left out: %.1f us, driver compiles included)\n",
            p->runs - 1, dispatches, total, first);
    else
        add(&t, "profile: 1 run, %d dispatches, %.1f us of kernels (driver compiles included)\n",
            dispatches, total);
    add(&t, "%-40s %10s %12s %10s %7s\n", "kernel", "dispatches", "total us", "mean us", "share");
    for (int i = 0; i < n_rows; i++) {
        const tg_profile_row *r = &rows[i];
        add(&t, "%-40s %10d %12.1f %10.2f %6.1f%%\n", r->name, r->dispatches, r->total_us,
            r->total_us / r->dispatches, total > 0 ? 100.0 * r->total_us / total : 0.0);
    }
    free(rows);
    if (t.failed) {
        free(t.s);
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory writing the profile table");
    }
    *out = t.s;
    return TG_OK;
}

tg_status tg_profile_write_trace(const tg_profile *p, const char *path) {
    if (p->runs == 0)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_executable_profile: no profiled run yet (compile with "
                            "opts.profile or TG_PROFILE=1, then run)");
    cJSON *root = cJSON_CreateObject();
    cJSON *events = cJSON_AddArrayToObject(root, "traceEvents");
    bool ok = root && events;
    /* one row (tid) per distinct kernel name, in order of first dispatch */
    int *tid = calloc((size_t)(p->n_last ? p->n_last : 1), sizeof *tid);
    ok = ok && tid;
    int n_tids = 0;
    double ts = 0;
    for (int i = 0; ok && i < p->n_last; i++) {
        tid[i] = -1;
        for (int j = 0; j < i; j++)
            if (strcmp(p->last_names[j], p->last_names[i]) == 0) tid[i] = tid[j];
        if (tid[i] < 0) {
            tid[i] = ++n_tids;
            cJSON *m = cJSON_CreateObject();
            cJSON_AddItemToArray(events, m);
            cJSON_AddStringToObject(m, "name", "thread_name");
            cJSON_AddStringToObject(m, "ph", "M");
            cJSON_AddNumberToObject(m, "pid", 1);
            cJSON_AddNumberToObject(m, "tid", tid[i]);
            cJSON *args = cJSON_AddObjectToObject(m, "args");
            ok = args && cJSON_AddStringToObject(args, "name", p->last_names[i]);
        }
        cJSON *e = cJSON_CreateObject();
        cJSON_AddItemToArray(events, e);
        ok = ok && e && cJSON_AddStringToObject(e, "name", p->last_names[i]) &&
             cJSON_AddStringToObject(e, "cat", "kernel") && cJSON_AddStringToObject(e, "ph", "X") &&
             cJSON_AddNumberToObject(e, "ts", ts) &&
             cJSON_AddNumberToObject(e, "dur", p->last_us[i]) &&
             cJSON_AddNumberToObject(e, "pid", 1) && cJSON_AddNumberToObject(e, "tid", tid[i]);
        ts += p->last_us[i];
    }
    free(tid);
    ok = ok && cJSON_AddStringToObject(root, "displayTimeUnit", "ns");
    char *json = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!json) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory writing the trace");
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(json);
        return tg_set_error(TG_ERR_IO, "cannot write the trace file '%s'", path);
    }
    size_t len = strlen(json);
    bool written = fwrite(json, 1, len, f) == len;
    written = (fclose(f) == 0) && written;
    free(json);
    if (!written) return tg_set_error(TG_ERR_IO, "error writing the trace file '%s'", path);
    return TG_OK;
}

void tg_profile_free(tg_profile *p) {
    free(p->rows);
    free(p->last_names);
    free(p->last_us);
    memset(p, 0, sizeof *p);
}
