/* test_vk_norm_fusion.c — the fused backward kernels of passes/fusion.c's
 * merge_norm_grads and backend/gen_nn.c: layer_norm_grad_x with its
 * layer_norm_grad_wb sibling, the rows of the weight and bias gradients,
 * the residual add and the bias sums in one dispatch (and cross_entropy
 * with cross_entropy_grad). Each graph runs with every pass off, with the
 * passes on and on the interpreter; the results agree, the fused IR shows
 * the kernel, the validation layer (with synchronization validation) says
 * nothing. Row lengths cover one invocation per row (40, 64, 384), a
 * workgroup per row with two column blocks (1100), rows not a multiple of
 * the workgroup; cross-entropy rows of 96 and 1000 classes, ignored labels. */
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

#include "tg.h"

static tg_device *dev;
static char cache_dir[256];

#define ALL_PASSES "flash_attention,dce,cse,fold,algebra,permute_matmul,gelu_derivative,fusion"
#define MAX_T 12

static void assert_close(const tg_array *got, const tg_array *want, double tol, const char *what) {
    assert_int_equal(tg_array_count(got), tg_array_count(want));
    for (int64_t i = 0; i < tg_array_count(got); i++) {
        double g = tg_array_get(got, i), w = tg_array_get(want, i);
        if (!(fabs(g - w) <= tol + tol * fabs(w)))
            fail_msg("%s element %lld: got %.9g, want %.9g", what, (long long)i, g, w);
    }
}

static tg_array ramp(int rank, const int64_t *shape, float start, float step, int mod) {
    tg_array a = {0};
    OK(tg_array_alloc(&a, TG_F32, rank, shape));
    for (int64_t i = 0; i < tg_array_count(&a); i++)
        ((float *)a.data)[i] = start + step * (float)((i * 7) % mod);
    return a;
}

typedef struct fused_ir {
    char text[1 << 16];
} fused_ir;

static void keep_ir(void *user, const char *pass, const char *ir) {
    (void)pass;
    snprintf(((fused_ir *)user)->text, sizeof((fused_ir *)user)->text, "%s", ir);
}

/* Runs e once on feeds with their float values changed: a kernel that
 * counts in scratch memory (the layer norm backward's last-workgroup
 * sums) must leave the count ready for the run after, which then
 * computes on other values. */
static void run_other_values(tg_executable *e, int n, int n_feeds, const tg_feed *feeds) {
    tg_array copy[4], res[MAX_T];
    tg_feed f[4];
    assert_true(n_feeds <= 4 && n <= MAX_T);
    for (int i = 0; i < n_feeds; i++) {
        const tg_array *a = feeds[i].value;
        OK(tg_array_alloc(&copy[i], a->dtype, a->rank, a->shape));
        memcpy(copy[i].data, a->data, (size_t)tg_array_count(a) * tg_dtype_size(a->dtype));
        if (a->dtype == TG_F32)
            for (int64_t j = 0; j < tg_array_count(a); j++)
                ((float *)copy[i].data)[j] = 0.5f * ((float *)a->data)[j] + 0.25f;
        f[i] = (tg_feed){feeds[i].tensor, &copy[i]};
    }
    OK(tg_run(e, n_feeds, f, res));
    for (int i = 0; i < n; i++) tg_array_free(&res[i]);
    for (int i = 0; i < n_feeds; i++) tg_array_free(&copy[i]);
}

/* Runs targets of g on the interpreter, with every pass off and with the
 * passes on (after a run on other values); compares; returns the
 * dispatches with the passes on and off and the fused IR in *ir. */
static void run_three(const tg_graph *g, int n, const tg_tensor *targets, int n_feeds,
                      const tg_feed *feeds, double tol, int *on, int *off, fused_ir *ir) {
    tg_array res[3][MAX_T];
    assert_true(n <= MAX_T);
    tg_store *st = tg_store_new();
    OK(tg_store_init_missing(st, g, 7, 0.3));
    OK(tg_interpret(g, st, n_feeds, feeds, n, targets, res[0], 0, NULL, 0));
    for (int pass = 0; pass < 2; pass++) {
        tg_compile_options o = {.disable_passes = pass ? NULL : ALL_PASSES};
        tg_executable *e = NULL;
        OK(tg_compile(dev, g, st, n, targets, 0, NULL, &o, &e));
        if (pass) run_other_values(e, n, n_feeds, feeds);
        OK(tg_run(e, n_feeds, feeds, res[1 + pass]));
        *(pass ? on : off) = tg_executable_dispatches(e);
        tg_executable_free(e);
        tg_test_assert_validation_silent();
    }
    for (int i = 0; i < n; i++) {
        char what[64];
        snprintf(what, sizeof what, "target %d passes off vs interpreter", i);
        assert_close(&res[1][i], &res[0][i], tol, what);
        snprintf(what, sizeof what, "target %d passes on vs off", i);
        assert_close(&res[2][i], &res[1][i], tol, what);
        for (int k = 0; k < 3; k++) tg_array_free(&res[k][i]);
    }
    tg_pass_options po = {.dump_after = "fusion", .dump = keep_ir, .dump_user = ir};
    tg_graph *opt = NULL;
    tg_tensor nt[MAX_T];
    ir->text[0] = 0;
    OK(tg_optimize(g, n, targets, 0, NULL, &po, &opt, nt, NULL, NULL));
    tg_graph_free(opt);
    tg_store_free(st);
}

/* out = ln2(x + tanh(ln1(x)) W + b) (W a row: no matmul), loss = sum(out * c): the gradients of x,
 * both layer norms' weights and biases, W and b. ln2's backward takes b's
 * sum (of dx); ln1's the residual add dx + dh (and, with `bias_after`, a
 * second bias: the sum of that add). */
static void check_norm_block(int64_t B, int64_t T, int64_t D, bool bias_after) {
    tg_graph *g = tg_graph_new();
    int64_t xs[3] = {B, T, D}, vs[1] = {D};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 3, xs);
    tg_tensor c = tg_placeholder(g, "c", TG_F32, 3, xs);
    tg_tensor w1 = tg_variable(g, "ln1.w", TG_F32, 1, vs, true);
    tg_tensor b1 = tg_variable(g, "ln1.b", TG_F32, 1, vs, true);
    tg_tensor w2 = tg_variable(g, "ln2.w", TG_F32, 1, vs, true);
    tg_tensor b2 = tg_variable(g, "ln2.b", TG_F32, 1, vs, true);
    tg_tensor W = tg_variable(g, "W", TG_F32, 1, vs, true);
    tg_tensor bias = tg_variable(g, "bias", TG_F32, 1, vs, true);
    tg_tensor pre = tg_variable(g, "pre", TG_F32, 1, vs, true);
    /* with bias_after: x + pre first, so the gradient of x + pre (the
     * residual add after ln1's dx) is summed for pre */
    tg_tensor x0 = bias_after ? tg_add(g, x, pre) : x;
    /* at batch 1, a position embedding [T, D]: its gradient sums over the
     * batch axis of extent 1, a copy the kernel stores per element */
    int64_t ps[2] = {T, D};
    tg_tensor pos = tg_variable(g, "pos", TG_F32, 2, ps, true);
    bool with_pos = bias_after && B == 1;
    if (with_pos) x0 = tg_add(g, x0, pos);
    tg_tensor h = tg_layer_norm(g, x0, w1, b1, 1e-5);
    h = tg_add(g, tg_add(g, x0, tg_mul(g, tg_tanh(g, h), W)), bias);
    tg_tensor out = tg_layer_norm(g, h, w2, b2, 1e-5);
    tg_tensor loss = tg_sum(g, tg_mul(g, out, c), 0, NULL, false);
    tg_tensor wrt[9] = {x, w1, b1, w2, b2, W, bias, pre, pos};
    int n = with_pos ? 9 : bias_after ? 8 : 7;
    tg_tensor targets[10];
    OK(tg_gradients(g, loss, n, wrt, targets));
    targets[n] = loss;
    OK(tg_graph_status(g));
    tg_array xv = ramp(3, xs, -1.0f, 0.013f, 97), cv = ramp(3, xs, -0.5f, 0.011f, 89);
    tg_feed f[2] = {{x, &xv}, {c, &cv}};
    int on, off;
    fused_ir *ir = malloc(sizeof *ir);
    assert_non_null(ir);
    run_three(g, n + 1, targets, 2, f, 2e-4, &on, &off, ir);
    /* both layer norms' backward: one kernel each, with the weight and
     * bias rows; ln2's with b's sum, ln1's with the residual add */
    const char *ln2 =
        strstr(ir->text, "layer_norm_grad_x + layer_norm_grad_wb + slice + slice + sum");
    const char *ln1 =
        strstr(ir->text, "layer_norm_grad_x + add + layer_norm_grad_wb + slice + slice");
    if (!ln2 || !ln1) fail_msg("layer norm backward kernels not fused:\n%s", ir->text);
    if (bias_after && !strstr(ln1, with_pos ? "slice + slice + sum + sum" : "slice + slice + sum"))
        fail_msg("the residual add's sums are not in ln1's kernel:\n%s", ir->text);
    assert_true(on < off);
    free(ir);
    tg_array_free(&xv);
    tg_array_free(&cv);
    tg_graph_free(g);
}

static void test_norm_rows_serial(void **state) {
    (void)state;
    check_norm_block(2, 37, 64, false);
    check_norm_block(1, 300, 384, true);
    /* 40 columns: three groups of 40 lanes share 300 rows (3 chunks), 8
     * lanes idle, sums in the column part */
    check_norm_block(3, 100, 40, true);
}

static void test_norm_rows_workgroup(void **state) {
    (void)state;
    check_norm_block(1, 130, 1100, true);
}

/* loss = cross_entropy(tanh(x) * s, labels) with some labels ignored; the
 * gradient of x: cross_entropy and cross_entropy_grad share a kernel
 * (the logits are a target too: were the pair their only reader, the
 * gradient would be written over them in a kernel of its own,
 * test_vk_fusion's test_cross_entropy_grad_in_place). */
static void check_cross_entropy(int64_t rows, int64_t C) {
    tg_graph *g = tg_graph_new();
    int64_t xs[2] = {rows, C}, cs[1] = {C}, ls[1] = {rows};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor lab = tg_placeholder(g, "labels", TG_I32, 1, ls);
    tg_tensor sc = tg_variable(g, "scale", TG_F32, 1, cs, true);
    tg_tensor logits = tg_mul(g, tg_tanh(g, x), sc);
    tg_tensor loss = tg_cross_entropy(g, logits, lab, 3);
    tg_tensor targets[4];
    tg_tensor wrt[2] = {x, sc};
    OK(tg_gradients(g, loss, 2, wrt, targets));
    targets[2] = loss;
    targets[3] = logits;
    OK(tg_graph_status(g));
    tg_array xv = ramp(2, xs, -2.0f, 0.031f, 131), lv = {0};
    OK(tg_array_alloc(&lv, TG_I32, 1, ls));
    for (int64_t i = 0; i < rows; i++) ((int32_t *)lv.data)[i] = (int32_t)((i * 13) % C);
    tg_feed f[2] = {{x, &xv}, {lab, &lv}};
    int on, off;
    fused_ir *ir = malloc(sizeof *ir);
    assert_non_null(ir);
    run_three(g, 4, targets, 2, f, 1e-4, &on, &off, ir);
    if (!strstr(ir->text, "opaque: cross_entropy + cross_entropy_grad"))
        fail_msg("cross_entropy and its gradient not fused:\n%s", ir->text);
    assert_true(on < off);
    free(ir);
    tg_array_free(&xv);
    tg_array_free(&lv);
    tg_graph_free(g);
}

static void test_cross_entropy_pair(void **state) {
    (void)state;
    check_cross_entropy(1030, 96);
    check_cross_entropy(77, 1000);
}

/* 25 adamw updates of one weight decay: multi-tensor optimizer kernels
 * sized by the device's descriptor limits (lavapipe: 10 updates a kernel,
 * 72 bindings: 42 texel inputs, 30 storage outputs), so 3 dispatches;
 * weights and moments bit-equal to one kernel per update. */
static void test_adamw_many_bindings(void **state) {
    (void)state;
    enum { N = 25 };
    tg_graph *g = tg_graph_new();
    tg_tensor lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    tg_tensor step = tg_placeholder(g, "step", TG_I32, 0, NULL);
    tg_tensor updates[N];
    char names[3 * N][32];
    tg_array gv[N];
    tg_feed f[N + 2];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof names[i], "w%d", i);
        snprintf(names[N + i], sizeof names[i], "w%d.adam_m", i);
        snprintf(names[2 * N + i], sizeof names[i], "w%d.adam_v", i);
        int64_t sh[1] = {5 + 13 * i};
        char gn[16];
        snprintf(gn, sizeof gn, "g%d", i);
        tg_tensor gr = tg_placeholder(g, gn, TG_F32, 1, sh);
        gv[i] = ramp(1, sh, -0.4f + 0.03f * (float)i, 0.07f, 11);
        f[i] = (tg_feed){gr, &gv[i]};
        updates[i] = tg_adamw(g, tg_variable(g, names[i], TG_F32, 1, sh, true), gr, lr, step, 0.9,
                              0.99, 1e-8, 0.01);
    }
    OK(tg_graph_status(g));
    float lrv = 0.05f;
    int32_t stepv = 2;
    tg_array lra = {TG_F32, 0, {0}, &lrv}, sa = {TG_I32, 0, {0}, &stepv};
    f[N] = (tg_feed){lr, &lra};
    f[N + 1] = (tg_feed){step, &sa};
    tg_store *st[2];
    int disp[2];
    for (int pass = 0; pass < 2; pass++) {
        st[pass] = tg_store_new();
        OK(tg_store_init_missing(st[pass], g, 5, 0.2));
        tg_compile_options o = {.disable_passes = pass ? NULL : ALL_PASSES};
        tg_executable *e = NULL;
        OK(tg_compile(dev, g, st[pass], 0, NULL, N, updates, &o, &e));
        OK(tg_run(e, N + 2, f, NULL));
        disp[pass] = tg_executable_dispatches(e);
        tg_executable_free(e);
        tg_test_assert_validation_silent();
    }
    for (int i = 0; i < 3 * N; i++) {
        tg_array a = {0}, b = {0};
        OK(tg_store_get(st[0], names[i], &a));
        OK(tg_store_get(st[1], names[i], &b));
        assert_close(&b, &a, 0, names[i]);
        tg_array_free(&a);
        tg_array_free(&b);
    }
    assert_int_equal(disp[0], N);
    assert_true(disp[1] >= 2 && disp[1] <= 3);
    for (int i = 0; i < N; i++) tg_array_free(&gv[i]);
    tg_store_free(st[0]);
    tg_store_free(st[1]);
    tg_graph_free(g);
}

int main(void) {
    if (!tg_test_device_env(cache_dir, sizeof cache_dir, "tg_test_vk_norm_fusion", true)) return 1;
    unsetenv("TG_DISABLE_PASSES");
    unsetenv("TG_DUMP_IR");
    if (tg_test_open_device(&dev, true) != 0) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_norm_rows_serial),
        cmocka_unit_test(test_norm_rows_workgroup),
        cmocka_unit_test(test_cross_entropy_pair),
        cmocka_unit_test(test_adamw_many_bindings),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tg_device_free(dev);
    return rc;
}
