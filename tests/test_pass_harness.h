/* test_pass_harness.h — what the pass tests share: reading files, the
 * default targets (unused non-source nodes; state ops as target ops), and
 * running a graph and its optimised form on the interpreter with the same
 * random feeds and variables, asserting equal results and equal variables
 * afterwards. Include after cmocka.h. */
#ifndef TG_TEST_PASS_HARNESS_H
#define TG_TEST_PASS_HARNESS_H

#include "graph/graph_internal.h"
#include "frontend/safetensors.h" /* tg_read_whole_file */
#include "passes/passes.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The whole file as a NUL-terminated string, NULL if unreadable. */
static inline char *read_text(const char *path) {
    char *text = NULL;
    size_t n = 0;
    return tg_read_whole_file(path, (size_t)1 << 30, &text, &n) == TG_OK ? text : NULL;
}

static inline tg_graph *load_graph(const char *path) {
    char *text = read_text(path);
    if (!text) fprintf(stderr, "cannot read %s\n", path);
    assert_non_null(text);
    tg_graph *g = tg_graph_parse(text, strlen(text), path);
    if (!g) fprintf(stderr, "%s\n", tg_last_error());
    assert_non_null(g);
    free(text);
    return g;
}

typedef struct targets {
    int n, n_ops;
    tg_tensor t[256], ops[64];
} targets;

static inline void default_targets(const tg_graph *g, targets *t) {
    bool *used = calloc((size_t)g->n_nodes + 1, 1);
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_inputs; k++) used[g->nodes[i].inputs[k]] = true;
    t->n = t->n_ops = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const tg_node *n = &g->nodes[i];
        if (tg_ops[n->op].writes)
            t->ops[t->n_ops++] = (tg_tensor){i};
        else if (!used[i] && tg_ops[n->op].klass != TG_CLASS_SOURCE)
            t->t[t->n++] = (tg_tensor){i};
    }
    free(used);
}

/* Deterministic values for a placeholder: floats in [-1, 1], integers in
 * [0, 3) (valid indices for small axes), u8 0/1. */
static inline void fill_random(tg_array *a, uint32_t *state) {
    for (int64_t i = 0; i < tg_array_count(a); i++) {
        *state = *state * 1664525u + 1013904223u;
        double u = (double)(*state >> 8) / (double)(1u << 24);
        double v = tg_dtype_is_float(a->dtype) ? 2 * u - 1
                   : a->dtype == TG_U8         ? (u < 0.5)
                                               : (int)(u * 3);
        tg_array_set(a, i, v);
    }
}

/* Feeds every placeholder of g, by name, from `src` (the placeholders of
 * the original graph with their values). */
typedef struct feeds {
    int n;
    char *names[64];
    tg_array values[64];
} feeds;

static inline void make_feeds(const tg_graph *g, feeds *f, uint32_t seed) {
    f->n = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        const tg_node *n = &g->nodes[i];
        if (n->op != TG_OP_PLACEHOLDER) continue;
        int64_t shape[TG_MAX_RANK];
        for (int d = 0; d < n->rank; d++) shape[d] = n->shape[d] < 0 ? 3 : n->shape[d];
        assert_int_equal(tg_array_alloc(&f->values[f->n], n->dtype, n->rank, shape), TG_OK);
        fill_random(&f->values[f->n], &seed);
        /* scalars are hyperparameters (a learning rate, a 1-based step): 1, 2 or 3 */
        if (n->rank == 0)
            tg_array_set(&f->values[f->n], 0, 2 + round(tg_array_get(&f->values[f->n], 0)));
        f->names[f->n++] = n->name;
    }
}

static inline void free_feeds(feeds *f) {
    for (int i = 0; i < f->n; i++) tg_array_free(&f->values[i]);
}

static inline int feeds_for(const tg_graph *g, const feeds *f, tg_feed *out) {
    int n = 0;
    for (int i = 0; i < f->n; i++) {
        tg_tensor t = tg_graph_find(g, f->names[i]);
        if (t.id >= 0 && g->nodes[t.id].op == TG_OP_PLACEHOLDER)
            out[n++] = (tg_feed){t, &f->values[i]};
    }
    return n;
}

static inline void copy_store(tg_store *from, tg_store *to) {
    for (int i = 0; i < tg_store_count(from); i++) {
        tg_array a;
        assert_int_equal(tg_store_get(from, tg_store_name(from, i), &a), TG_OK);
        assert_int_equal(tg_store_set(to, tg_store_name(from, i), &a), TG_OK);
        tg_array_free(&a);
    }
}

static inline void assert_arrays_close(const tg_array *a, const tg_array *b, const char *what) {
    assert_int_equal(a->dtype, b->dtype);
    assert_int_equal(a->rank, b->rank);
    assert_memory_equal(a->shape, b->shape, (size_t)a->rank * sizeof a->shape[0]);
    for (int64_t i = 0; i < tg_array_count(a); i++) {
        double x = tg_array_get(a, i), y = tg_array_get(b, i);
        bool same = (isnan(x) && isnan(y)) || x == y || fabs(x - y) <= 1e-6 * (1 + fabs(y));
        if (!same) fprintf(stderr, "%s: element %lld: %.9g vs %.9g\n", what, (long long)i, x, y);
        assert_true(same);
    }
}

/* Runs g (targets t) and opt (targets t_opt: the same values) on the
 * interpreter with the same feeds and variables; asserts equal results and
 * equal variables afterwards. */
static inline void assert_same_results(const tg_graph *g, const targets *t, const tg_graph *opt,
                                       const targets *t_opt, uint32_t seed) {
    feeds f;
    make_feeds(g, &f, seed);
    tg_store *s1 = tg_store_new(), *s2 = tg_store_new();
    assert_int_equal(tg_store_init_missing(s1, g, seed, 0.5), TG_OK);
    copy_store(s1, s2);
    tg_feed fd[64];
    tg_array r1[256], r2[256];
    int nf = feeds_for(g, &f, fd);
    tg_status st = tg_interpret(g, s1, nf, fd, t->n, t->t, r1, t->n_ops, t->ops, 0);
    if (st != TG_OK) fprintf(stderr, "original: %s\n", tg_last_error());
    assert_int_equal(st, TG_OK);
    nf = feeds_for(opt, &f, fd);
    st = tg_interpret(opt, s2, nf, fd, t_opt->n, t_opt->t, r2, t_opt->n_ops, t_opt->ops, 0);
    if (st != TG_OK) fprintf(stderr, "optimised: %s\n", tg_last_error());
    assert_int_equal(st, TG_OK);
    assert_int_equal(t->n, t_opt->n);
    for (int i = 0; i < t->n; i++) {
        assert_arrays_close(&r2[i], &r1[i], "target");
        tg_array_free(&r1[i]);
        tg_array_free(&r2[i]);
    }
    assert_int_equal(tg_store_count(s1), tg_store_count(s2));
    for (int i = 0; i < tg_store_count(s1); i++) {
        tg_array a, b;
        assert_int_equal(tg_store_get(s1, tg_store_name(s1, i), &a), TG_OK);
        assert_int_equal(tg_store_get(s2, tg_store_name(s1, i), &b), TG_OK);
        assert_arrays_close(&b, &a, tg_store_name(s1, i));
        tg_array_free(&a);
        tg_array_free(&b);
    }
    tg_store_free(s1);
    tg_store_free(s2);
    free_feeds(&f);
}

/* Optimises g for its default targets with `opts`; returns the new graph
 * and the targets in it (t: the targets in g). */
static inline tg_graph *optimize_for(const tg_graph *g, const tg_pass_options *opts,
                                     const targets *t, targets *t_opt, tg_pass_stats *stats) {
    tg_graph *out = NULL;
    t_opt->n = t->n;
    t_opt->n_ops = t->n_ops;
    tg_status st =
        tg_optimize(g, t->n, t->t, t->n_ops, t->ops, opts, &out, t_opt->t, t_opt->ops, stats);
    if (st != TG_OK) fprintf(stderr, "tg_optimize: %s\n", tg_last_error());
    assert_int_equal(st, TG_OK);
    assert_non_null(out);
    return out;
}

/* The same for the default targets of g (returned in t). */
static inline tg_graph *optimize(const tg_graph *g, const tg_pass_options *opts, targets *t,
                                 targets *t_opt, tg_pass_stats *stats) {
    default_targets(g, t);
    return optimize_for(g, opts, t, t_opt, stats);
}

#endif
