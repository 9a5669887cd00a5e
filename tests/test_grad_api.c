/* test_grad_api.c — how tg_gradients behaves around the rules: summing
 * over several uses, stop_gradient, unrelated and integer paths, seeds,
 * errors, tie conventions and the size of the gradient graph. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "graph/graph_internal.h"
#include "tg.h"

static const int64_t s4[] = {4};
static const float xv[4] = {0.5f, -1.0f, 2.0f, 0.25f};

/* Evaluates t (no feeds) and checks it equals want[0..4). */
static void expect4(tg_graph *g, tg_tensor t, const double *want) {
    if (tg_graph_status(g) != TG_OK) fail_msg("graph: %s", tg_graph_error(g));
    tg_array r = {0};
    if (tg_interpret(g, NULL, 0, NULL, 1, &t, &r, 0, NULL, TG_INTERP_F64) != TG_OK)
        fail_msg("%s", tg_last_error());
    assert_int_equal(tg_array_count(&r), 4);
    for (int i = 0; i < 4; i++)
        if (!(fabs(tg_array_get(&r, i) - want[i]) < 1e-6))
            fail_msg("element %d: got %g, want %g", i, tg_array_get(&r, i), want[i]);
    tg_array_free(&r);
}

static tg_tensor variable4(tg_graph *g) {
    return tg_constant(g, TG_F32, 1, s4, xv);
}

static tg_tensor grad_of(tg_graph *g, tg_tensor loss, tg_tensor x) {
    tg_tensor d = TG_INVALID;
    if (tg_gradients(g, loss, 1, &x, &d) != TG_OK) fail_msg("%s", tg_last_error());
    return d;
}

/* sum(x * x + sin(x) * 3): x is used four times; 2x + 3 cos(x). */
static void test_uses_are_summed(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor x = variable4(g);
    tg_tensor y = tg_add(g, tg_mul(g, x, x), tg_mul(g, tg_sin(g, x), tg_scalar(g, TG_F32, 3)));
    tg_tensor d = grad_of(g, tg_sum(g, y, 0, NULL, false), x);
    double want[4];
    for (int i = 0; i < 4; i++) want[i] = 2 * xv[i] + 3 * cos(xv[i]);
    expect4(g, d, want);
    tg_graph_free(g);
}

/* sum(x * stop_gradient(x)) has gradient x, not 2x. */
static void test_stop_gradient_blocks(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor x = variable4(g);
    tg_tensor d = grad_of(g, tg_sum(g, tg_mul(g, x, tg_stop_gradient(g, x)), 0, NULL, false), x);
    double want[4] = {xv[0], xv[1], xv[2], xv[3]};
    expect4(g, d, want);
    tg_graph_free(g);
}

/* A wrt the loss does not depend on, or only through argmax and integer
 * tensors, gets zeros of its shape. */
static void test_unrelated_gives_zeros(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor x = variable4(g), z = variable4(g);
    tg_tensor through_int = tg_cast(g, tg_cast(g, x, TG_I32), TG_F32);
    tg_tensor picked = tg_cast(g, tg_argmax(g, x, 0, false), TG_F32);
    tg_tensor loss = tg_add(g, tg_sum(g, tg_mul(g, through_int, z), 0, NULL, false), picked);
    tg_tensor wrt[2] = {x, z}, d[2];
    assert_int_equal(tg_gradients(g, loss, 2, wrt, d), TG_OK);
    double zeros[4] = {0, 0, 0, 0}, through[4] = {0, -1, 2, 0};
    int64_t shape[TG_MAX_RANK];
    assert_int_equal(tg_tensor_shape(g, d[0], shape), 1);
    assert_int_equal(shape[0], 4);
    expect4(g, d[0], zeros);
    expect4(g, d[1], through);
    tg_graph_free(g);
}

static void test_non_scalar_loss_is_an_error(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor x = variable4(g);
    tg_tensor d = {7};
    assert_int_equal(tg_gradients(g, tg_exp(g, x), 1, &x, &d), TG_ERR_SHAPE);
    assert_int_equal(d.id, -1);
    assert_non_null(strstr(tg_last_error(), "f32[4], not a scalar"));
    assert_non_null(strstr(tg_last_error(), "tg_gradients_seeded"));
    assert_int_equal(tg_graph_status(g), TG_OK); /* the graph stays usable */
    tg_graph_free(g);
}

static void test_bad_arguments(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor x = variable4(g), d;
    tg_tensor loss = tg_sum(g, x, 0, NULL, false);
    tg_tensor idx = tg_cast(g, x, TG_I32);
    assert_int_equal(tg_gradients(g, loss, 1, &idx, &d), TG_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(tg_last_error(), "only float tensors"));
    assert_int_equal(tg_gradients(g, TG_INVALID, 1, &x, &d), TG_ERR_INVALID_ARGUMENT);
    assert_int_equal(tg_gradients(NULL, loss, 1, &x, &d), TG_ERR_INVALID_ARGUMENT);
    tg_tensor wrong_seed = tg_scalar(g, TG_F32, 1);
    assert_int_equal(tg_gradients_seeded(g, x, wrong_seed, 1, &x, &d), TG_ERR_SHAPE);
    assert_int_equal(tg_graph_status(g), TG_OK);
    tg_graph_free(g);
}

/* y = x * w elementwise; the VJP with seed s is s * w. */
static void test_seeded_vjp(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor x = variable4(g);
    float wv[4] = {2, 3, -1, 0.5f}, sv[4] = {1, -2, 0.5f, 4};
    tg_tensor y = tg_mul(g, x, tg_constant(g, TG_F32, 1, s4, wv));
    tg_tensor d;
    assert_int_equal(tg_gradients_seeded(g, y, tg_constant(g, TG_F32, 1, s4, sv), 1, &x, &d),
                     TG_OK);
    double want[4];
    for (int i = 0; i < 4; i++) want[i] = sv[i] * wv[i];
    expect4(g, d, want);
    tg_graph_free(g);
}

/* max splits the gradient among ties; maximum gives a tie to its first
 * input. */
static void test_tie_conventions(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    float tv[4] = {1, 3, 3, 2}, bv[4] = {1, 0, 3, 5};
    tg_tensor t = tg_constant(g, TG_F32, 1, s4, tv), b = tg_constant(g, TG_F32, 1, s4, bv);
    double split[4] = {0, 0.5, 0.5, 0};
    expect4(g, grad_of(g, tg_max(g, t, 0, NULL, false), t), split);
    tg_tensor m = tg_sum(g, tg_maximum(g, t, b), 0, NULL, false);
    tg_tensor wrt[2] = {t, b}, d[2];
    assert_int_equal(tg_gradients(g, m, 2, wrt, d), TG_OK);
    double to_a[4] = {1, 1, 1, 0}, to_b[4] = {0, 0, 0, 1};
    expect4(g, d[0], to_a);
    expect4(g, d[1], to_b);
    tg_graph_free(g);
}

/* A mask that would need a gradient is refused, naming the op. */
static void test_attention_mask_gradient_refused(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {2, 3}, sm[] = {2, 2};
    tg_tensor q = tg_placeholder(g, "q", TG_F32, 2, s);
    tg_tensor mask = tg_placeholder(g, "mask", TG_F32, 2, sm);
    tg_tensor loss = tg_sum(g, tg_attention(g, q, q, q, mask, false, 0), 0, NULL, false);
    tg_tensor wrt[2] = {q, mask}, d[2];
    assert_int_equal(tg_gradients(g, loss, 2, wrt, d), TG_ERR_UNSUPPORTED);
    assert_non_null(strstr(tg_last_error(), "attention: the mask gets no gradient"));
    assert_int_equal(d[0].id, -1);
    tg_graph_free(g);
}

/* The gradient graph has no "* 1" and no zeros added: for
 * loss = mean(x * w) the gradient of x is dy reshaped, times 1/4, broadcast,
 * times w. */
static void test_gradient_graph_is_small(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    tg_tensor x = variable4(g), w = variable4(g);
    tg_tensor loss = tg_mean(g, tg_mul(g, x, w), 0, NULL, false);
    int before = tg_graph_node_count(g);
    tg_tensor d = grad_of(g, loss, x);
    /* seed 1, reshape, 1/4, mul, broadcast_to, mul */
    assert_true(tg_graph_node_count(g) - before <= 6);
    for (int id = before; id < tg_graph_node_count(g); id++) {
        const tg_node *n = &g->nodes[id];
        assert_true(n->op != TG_OP_ADD);
        for (int k = 0; k < n->n_inputs && n->op == TG_OP_MUL; k++) {
            const tg_node *c = &g->nodes[n->inputs[k]];
            if (c->op == TG_OP_CONSTANT && c->rank == 0)
                assert_true(*(const float *)c->data != 1.0f);
        }
    }
    double want[4];
    for (int i = 0; i < 4; i++) want[i] = xv[i] / 4;
    expect4(g, d, want);
    /* the loss with respect to itself: the seed */
    tg_tensor self = grad_of(g, loss, loss);
    assert_string_equal(tg_tensor_op(g, self), "constant");
    tg_graph_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uses_are_summed),
        cmocka_unit_test(test_stop_gradient_blocks),
        cmocka_unit_test(test_unrelated_gives_zeros),
        cmocka_unit_test(test_non_scalar_loss_is_an_error),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_seeded_vjp),
        cmocka_unit_test(test_tie_conventions),
        cmocka_unit_test(test_attention_mask_gradient_refused),
        cmocka_unit_test(test_gradient_graph_is_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
