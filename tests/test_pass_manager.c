/* test_pass_manager.c — the pass manager: the pass list, the dump sink
 * (after every pass with dump_all or TG_DUMP_IR=1, after one pass with
 * dump_after, never without a callback), disabling passes, unknown names,
 * targets carried across renumbering (a target that becomes another node,
 * a target op), the caller's graph left unchanged, bad arguments. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_pass_harness.h"

typedef struct sink_log {
    int calls;
    char passes[32][32];
    char *last;
} sink_log;

static void sink(void *user, const char *pass, const char *ir) {
    sink_log *l = user;
    if (l->calls < 32) snprintf(l->passes[l->calls], sizeof l->passes[0], "%s", pass);
    l->calls++;
    free(l->last);
    l->last = malloc(strlen(ir) + 1);
    strcpy(l->last, ir);
}

static tg_graph *mlp(void) {
    return load_graph(TG_TEST_DATA_DIR "/mlp.tgir");
}

static void test_pass_list(void **state) {
    (void)state;
    const char *order[] = {"flash_attention", "fold", "algebra", "permute_matmul",
                           "gelu_derivative", "cse",  "dce",     "fusion"};
    assert_int_equal(tg_pass_count(), 8);
    for (int i = 0; i < 8; i++) {
        assert_string_equal(tg_pass_name(i), order[i]);
        assert_true(strlen(tg_pass_description(i)) > 10);
    }
    assert_null(tg_pass_name(8));
    assert_null(tg_pass_name(-1));
}

static void test_dump_all(void **state) {
    (void)state;
    tg_graph *g = mlp();
    sink_log l = {0};
    tg_pass_options o = {.dump_all = true, .dump = sink, .dump_user = &l};
    targets t, t_opt;
    tg_graph *opt = optimize(g, &o, &t, &t_opt, NULL);
    assert_int_equal(l.calls, 1 + tg_pass_count());
    assert_string_equal(l.passes[0], "input");
    for (int i = 0; i < tg_pass_count(); i++) assert_string_equal(l.passes[i + 1], tg_pass_name(i));
    assert_non_null(strstr(l.last, "# kernel 0 matmul: matmul + add + relu"));
    tg_graph_free(opt);
    free(l.last);

    /* TG_DUMP_IR=1 does the same; without a callback nothing is called */
    setenv("TG_DUMP_IR", "1", 1);
    sink_log l2 = {0};
    tg_pass_options o2 = {.dump = sink, .dump_user = &l2};
    opt = optimize(g, &o2, &t, &t_opt, NULL);
    assert_int_equal(l2.calls, 1 + tg_pass_count());
    tg_graph_free(opt);
    free(l2.last);
    tg_pass_options none = {0};
    opt = optimize(g, &none, &t, &t_opt, NULL);
    tg_graph_free(opt);
    setenv("TG_DUMP_IR", "0", 1);
    sink_log l3 = {0};
    tg_pass_options o3 = {.dump = sink, .dump_user = &l3};
    opt = optimize(g, &o3, &t, &t_opt, NULL);
    assert_int_equal(l3.calls, 0);
    tg_graph_free(opt);
    unsetenv("TG_DUMP_IR");
    tg_graph_free(g);
}

static void test_dump_after_and_disable(void **state) {
    (void)state;
    tg_graph *g = mlp();
    char *plain = tg_graph_to_text(g);
    sink_log l = {0};
    tg_pass_options o = {.dump_after = "cse", .dump = sink, .dump_user = &l};
    targets t, t_opt;
    tg_graph *opt = optimize(g, &o, &t, &t_opt, NULL);
    assert_int_equal(l.calls, 1);
    assert_string_equal(l.passes[0], "cse");
    assert_string_equal(l.last, plain); /* nothing to simplify in the MLP */
    tg_graph_free(opt);

    /* fusion disabled: no kernels, dispatches fused = unfused; --after of
     * a disabled pass shows the IR where it would have run */
    tg_pass_stats st;
    tg_pass_options o2 = {
        .disable = "fusion,fold", .dump_after = "fusion", .dump = sink, .dump_user = &l};
    opt = optimize(g, &o2, &t, &t_opt, &st);
    assert_int_equal(l.calls, 2);
    assert_string_equal(l.last, plain);
    assert_int_equal(st.dispatches_unfused, 6);
    assert_int_equal(st.dispatches_fused, 6);
    assert_int_equal(st.kernels_matmul, 0);
    tg_graph_free(opt);

    opt = optimize(g, NULL, &t, &t_opt, &st);
    assert_int_equal(st.nodes_before, 11);
    assert_int_equal(st.nodes_after, 11);
    assert_int_equal(st.sources, 5);
    assert_int_equal(st.elementwise, 3);
    assert_int_equal(st.matmuls, 2);
    assert_int_equal(st.opaque, 1);
    assert_int_equal(st.dispatches_fused, 3);
    /* h, h_bias, hidden f32[2,8]; logits_mm, logits, probs f32[2,3] */
    assert_int_equal(st.intermediate_bytes, 4 * (3 * 16 + 3 * 6));
    tg_graph_free(opt);
    free(l.last);
    free(plain);
    tg_graph_free(g);
}

static void test_unknown_pass(void **state) {
    (void)state;
    tg_graph *g = mlp();
    tg_graph *out = (tg_graph *)1;
    tg_pass_options o = {.disable = "dce,frobnicate"};
    assert_int_equal(tg_optimize(g, 0, NULL, 0, NULL, &o, &out, NULL, NULL, NULL),
                     TG_ERR_INVALID_ARGUMENT);
    assert_null(out);
    assert_non_null(strstr(tg_last_error(), "unknown pass 'frobnicate'"));
    assert_non_null(strstr(tg_last_error(), "permute_matmul"));
    tg_pass_options o2 = {.dump_after = "fuse"};
    assert_int_equal(tg_optimize(g, 0, NULL, 0, NULL, &o2, &out, NULL, NULL, NULL),
                     TG_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(tg_last_error(), "unknown pass 'fuse'"));
    tg_tensor bad = {99}, res;
    assert_int_equal(tg_optimize(g, 1, &bad, 0, NULL, NULL, &out, &res, NULL, NULL),
                     TG_ERR_INVALID_ARGUMENT);
    assert_int_equal(tg_optimize(NULL, 0, NULL, 0, NULL, NULL, &out, NULL, NULL, NULL),
                     TG_ERR_INVALID_ARGUMENT);
    tg_graph_free(g);
}

/* flash_attention off on a graph with a dynamic time axis: the causal
 * bias needs static Tq and Tk (tg_compile lowers each specialisation, whose
 * shapes are static), so tg_optimize says which node; without causal
 * masking the lowering needs no sizes. */
static void test_attention_lowering_dynamic(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {2, -1, 8};
    tg_tensor q = tg_placeholder(g, "q", TG_F32, 3, s);
    tg_tensor causal = tg_attention(g, q, q, q, TG_INVALID, true, 0);
    tg_tensor plain = tg_attention(g, q, q, q, TG_INVALID, false, 0);
    assert_int_equal(tg_graph_status(g), TG_OK);
    tg_graph *out = NULL;
    tg_tensor res;
    tg_pass_options o = {.disable = "flash_attention"};
    assert_int_equal(tg_optimize(g, 1, &causal, 0, NULL, &o, &out, &res, NULL, NULL),
                     TG_ERR_INVALID_ARGUMENT);
    assert_null(out);
    assert_non_null(strstr(tg_last_error(), "needs static Tq and Tk"));
    tg_status st = tg_optimize(g, 1, &plain, 0, NULL, &o, &out, &res, NULL, NULL);
    if (st != TG_OK) fprintf(stderr, "%s\n", tg_last_error());
    assert_int_equal(st, TG_OK);
    assert_string_equal(tg_tensor_op(out, res), "matmul");
    tg_graph_free(out);
    tg_graph_free(g);
}

/* Targets survive renumbering: y = (x * 1) becomes x itself; an unused
 * dead node before it shifts ids; the assign (a target op) stays. */
static void test_target_mapping(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {3};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 1, s);
    tg_tensor v = tg_variable(g, "v", TG_F32, 1, s, false);
    tg_exp(g, x); /* dead */
    tg_tensor y = tg_mul(g, x, tg_scalar(g, TG_F32, 1.0));
    tg_tensor z = tg_add(g, tg_relu(g, v), tg_exp(g, x));
    tg_tensor upd = tg_assign(g, v, tg_neg(g, z));
    char *before = tg_graph_to_text(g);
    tg_tensor targets_in[2] = {y, z}, targets_out[2], ops_out[1];
    tg_graph *out = NULL;
    assert_int_equal(tg_optimize(g, 2, targets_in, 1, &upd, NULL, &out, targets_out, ops_out, NULL),
                     TG_OK);
    assert_string_equal(tg_tensor_op(out, targets_out[0]), "placeholder");
    assert_string_equal(tg_tensor_name(out, targets_out[0]), "x");
    assert_string_equal(tg_tensor_op(out, targets_out[1]), "add");
    assert_string_equal(tg_tensor_op(out, ops_out[0]), "assign");
    /* dead exp and the multiply by one are gone; the two exp(x) are one */
    assert_int_equal(tg_graph_node_count(out), 7);
    char *again = tg_graph_to_text(g);
    assert_string_equal(before, again);
    targets t = {.n = 2, .t = {y, z}, .n_ops = 1, .ops = {upd}};
    targets t_opt = {
        .n = 2, .t = {targets_out[0], targets_out[1]}, .n_ops = 1, .ops = {ops_out[0]}};
    assert_same_results(g, &t, out, &t_opt, 9);
    free(before);
    free(again);
    tg_graph_free(out);
    tg_graph_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pass_list),
        cmocka_unit_test(test_dump_all),
        cmocka_unit_test(test_dump_after_and_disable),
        cmocka_unit_test(test_unknown_pass),
        cmocka_unit_test(test_attention_lowering_dynamic),
        cmocka_unit_test(test_target_mapping),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
