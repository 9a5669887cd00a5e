/* test_pass_simplify.c — every simplification pass IR in, IR out:
 * tests/data/passes/NAME.in.tgir names the passes to run on its second
 * line ("# passes: algebra,dce"); the printed result must equal
 * NAME.out.tgir, and the input and the result must give the same values on
 * the interpreter (random feeds and variables, targets = the nodes nothing
 * uses, state ops as target ops). The full pipeline runs on mlp.tgir and
 * attention.tgir and a training step (train_step.tgir; expected:
 * *.fused.tgir, the IR after fusion).
 * TG_UPDATE_GOLDEN=1 rewrites the expected files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_pass_harness.h"

#define PASS_DIR TG_TEST_DATA_DIR "/passes/"

static void check_golden(const char *path, const char *text) {
    const char *update = getenv("TG_UPDATE_GOLDEN");
    if (update && strcmp(update, "1") == 0) {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
    }
    char *expected = read_text(path);
    if (!expected) fprintf(stderr, "missing %s (TG_UPDATE_GOLDEN=1 writes it)\n", path);
    assert_non_null(expected);
    if (strcmp(expected, text) != 0) fprintf(stderr, "%s differs; got:\n%s", path, text);
    assert_string_equal(text, expected);
    free(expected);
}

/* "fold,dce" from the "# passes: " line -> disable every other pass. */
static void disabled_passes(const char *text, char *disable, size_t n) {
    const char *line = strstr(text, "# passes: ");
    assert_non_null(line);
    line += strlen("# passes: ");
    size_t len = strcspn(line, "\n");
    disable[0] = '\0';
    for (int i = 0; i < tg_pass_count(); i++) {
        const char *name = tg_pass_name(i);
        bool listed = false;
        for (const char *p = line; p < line + len;) {
            size_t w = strcspn(p, ",\n");
            if (w == strlen(name) && memcmp(p, name, w) == 0) listed = true;
            p += w + 1;
        }
        if (!listed)
            snprintf(disable + strlen(disable), n - strlen(disable), "%s%s", disable[0] ? "," : "",
                     name);
    }
}

/* Targets named on a "# targets: a,b" line (state ops become target ops);
 * without one, the default targets. */
static void read_targets(const char *text, const tg_graph *g, targets *t) {
    const char *line = strstr(text, "# targets: ");
    if (!line) {
        default_targets(g, t);
        return;
    }
    line += strlen("# targets: ");
    t->n = t->n_ops = 0;
    while (*line && *line != '\n') {
        char name[64];
        size_t w = strcspn(line, ",\n");
        snprintf(name, sizeof name, "%.*s", (int)w, line);
        tg_tensor x = tg_graph_find(g, name);
        assert_true(x.id >= 0);
        if (tg_ops[g->nodes[x.id].op].writes)
            t->ops[t->n_ops++] = x;
        else
            t->t[t->n++] = x;
        line += w + (line[w] == ',');
    }
}

static void run_case(const char *name) {
    char in_path[512], out_path[512], disable[256];
    snprintf(in_path, sizeof in_path, PASS_DIR "%s.in.tgir", name);
    snprintf(out_path, sizeof out_path, PASS_DIR "%s.out.tgir", name);
    char *text = read_text(in_path);
    assert_non_null(text);
    disabled_passes(text, disable, sizeof disable);
    tg_graph *g = load_graph(in_path);
    targets t, t_opt;
    read_targets(text, g, &t);
    free(text);
    char *before = tg_graph_to_text(g);
    tg_pass_options o = {.disable = disable};
    tg_graph *opt = optimize_for(g, &o, &t, &t_opt, NULL);
    char *after = tg_graph_to_text(opt);
    check_golden(out_path, after);
    /* the caller's graph is left alone */
    char *again = tg_graph_to_text(g);
    assert_string_equal(before, again);
    assert_same_results(g, &t, opt, &t_opt, 7);
    free(before);
    free(after);
    free(again);
    tg_graph_free(opt);
    tg_graph_free(g);
}

static void test_dce(void **state) {
    (void)state;
    run_case("dce");
}

static void test_cse(void **state) {
    (void)state;
    run_case("cse");
}

static void test_fold(void **state) {
    (void)state;
    run_case("fold");
}

static void test_algebra(void **state) {
    (void)state;
    run_case("algebra");
}

static void test_permute_matmul(void **state) {
    (void)state;
    run_case("permute_matmul");
}

static void test_gelu_derivative(void **state) {
    (void)state;
    run_case("gelu_derivative");
}

/* flash_attention off (tests/data/passes/attention_lowered.in.tgir) */
static void test_attention_lowered(void **state) {
    (void)state;
    run_case("attention_lowered");
}

typedef struct captured {
    char *text;
} captured;

static void capture(void *user, const char *pass, const char *ir) {
    captured *c = user;
    (void)pass;
    free(c->text);
    c->text = malloc(strlen(ir) + 1);
    strcpy(c->text, ir);
}

/* The whole pipeline; the IR after fusion is the expected file. */
static void run_pipeline(const char *file, const char *expected) {
    tg_graph *g = load_graph(file);
    captured c = {NULL};
    tg_pass_options o = {.dump_after = "fusion", .dump = capture, .dump_user = &c};
    targets t, t_opt;
    tg_graph *opt = optimize(g, &o, &t, &t_opt, NULL);
    assert_non_null(c.text);
    check_golden(expected, c.text);
    /* the fused IR is still plain IR: it parses to a graph with the same nodes */
    tg_graph *back = tg_graph_parse(c.text, strlen(c.text), expected);
    assert_non_null(back);
    assert_int_equal(back->n_nodes, opt->n_nodes);
    tg_graph_free(back);
    assert_same_results(g, &t, opt, &t_opt, 11);
    free(c.text);
    tg_graph_free(opt);
    tg_graph_free(g);
}

static void test_pipeline_mlp(void **state) {
    (void)state;
    run_pipeline(TG_TEST_DATA_DIR "/mlp.tgir", PASS_DIR "mlp.fused.tgir");
}

static void test_pipeline_attention(void **state) {
    (void)state;
    run_pipeline(TG_TEST_DATA_DIR "/attention.tgir", PASS_DIR "attention.fused.tgir");
}

/* forward, backward and AdamW of a small transformer-like block (made by
 * tg_gradients and tg_adamw): the loss and every updated variable match */
static void test_pipeline_train_step(void **state) {
    (void)state;
    run_pipeline(PASS_DIR "train_step.tgir", PASS_DIR "train_step.fused.tgir");
}

/* Every pass case again with all passes on: still the same values. */
static void test_all_passes_same_results(void **state) {
    (void)state;
    const char *names[] = {"dce", "cse", "fold", "algebra", "permute_matmul", "gelu_derivative"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char path[512];
        snprintf(path, sizeof path, PASS_DIR "%s.in.tgir", names[i]);
        tg_graph *g = load_graph(path);
        targets t, t_opt;
        tg_graph *opt = optimize(g, NULL, &t, &t_opt, NULL);
        assert_same_results(g, &t, opt, &t_opt, 3);
        tg_graph_free(opt);
        tg_graph_free(g);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dce),
        cmocka_unit_test(test_cse),
        cmocka_unit_test(test_fold),
        cmocka_unit_test(test_algebra),
        cmocka_unit_test(test_permute_matmul),
        cmocka_unit_test(test_gelu_derivative),
        cmocka_unit_test(test_attention_lowered),
        cmocka_unit_test(test_pipeline_mlp),
        cmocka_unit_test(test_pipeline_attention),
        cmocka_unit_test(test_pipeline_train_step),
        cmocka_unit_test(test_all_passes_same_results),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
