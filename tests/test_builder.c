/* Graph builder: shape inference, attribute normalisation, the sticky
 * error and its messages, specialisation of dynamic dimensions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "graph/graph_internal.h"

static void assert_shape(tg_graph *g, tg_tensor t, tg_dtype dt, int rank, const int64_t *want) {
    int64_t shape[TG_MAX_RANK];
    assert_true(tg_tensor_valid(g, t));
    assert_int_equal(tg_tensor_dtype(g, t), dt);
    assert_int_equal(tg_tensor_shape(g, t, shape), rank);
    for (int i = 0; i < rank; i++) assert_int_equal(shape[i], want[i]);
}

static void assert_error_contains(tg_graph *g, const char *a, const char *b, const char *c) {
    const char *err = tg_graph_error(g);
    assert_non_null(err);
    if (a && !strstr(err, a)) fail_msg("'%s' lacks '%s'", err, a);
    if (b && !strstr(err, b)) fail_msg("'%s' lacks '%s'", err, b);
    if (c && !strstr(err, c)) fail_msg("'%s' lacks '%s'", err, c);
    assert_string_equal(tg_last_error(), err);
}

static void test_broadcast_shapes(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t sa[] = {2, 1, 3}, sb[] = {4, 1}, want[] = {2, 4, 3};
    tg_tensor a = tg_placeholder(g, "a", TG_F32, 3, sa);
    tg_tensor b = tg_placeholder(g, "b", TG_F32, 2, sb);
    assert_shape(g, tg_add(g, a, b), TG_F32, 3, want);
    assert_shape(g, tg_lt(g, a, b), TG_U8, 3, want);
    tg_tensor s = tg_scalar(g, TG_F32, 2.0);
    assert_shape(g, tg_mul(g, a, s), TG_F32, 3, sa);
    assert_int_equal(tg_graph_status(g), TG_OK);
    assert_null(tg_graph_error(g));
    tg_graph_free(g);
}

static void test_shape_error_names_op_and_shapes(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t sa[] = {2, 3}, sb[] = {4};
    tg_tensor a = tg_placeholder(g, "a", TG_F32, 2, sa);
    tg_tensor b = tg_placeholder(g, "b", TG_F32, 1, sb);
    tg_tensor c = tg_add(g, a, b);
    assert_false(tg_tensor_valid(g, c));
    assert_int_equal(tg_graph_status(g), TG_ERR_SHAPE);
    assert_error_contains(g, "add", "f32[2,3]", "f32[4]");
    /* Sticky: later ops on the invalid handle stay invalid, the first error stays. */
    tg_tensor d = tg_exp(g, c);
    assert_false(tg_tensor_valid(g, d));
    assert_error_contains(g, "add", "f32[2,3]", "f32[4]");
    tg_graph_free(g);
}

static void test_matmul_shapes_and_errors(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t sa[] = {2, 1, 3, 4}, sb[] = {5, 4, 2}, want[] = {2, 5, 3, 2};
    tg_tensor a = tg_placeholder(g, "a", TG_F32, 4, sa);
    tg_tensor b = tg_placeholder(g, "b", TG_F32, 3, sb);
    assert_shape(g, tg_matmul(g, a, b, false, false), TG_F32, 4, want);
    int64_t wt[] = {2, 5, 3, 5}; /* a x b^T with b [5,4,2]^T -> [5,2,4]: K 4 vs 2 fails */
    (void)wt;
    tg_tensor bad = tg_matmul(g, a, b, false, true);
    assert_false(tg_tensor_valid(g, bad));
    assert_error_contains(g, "matmul", "f32[2,1,3,4]", "f32[5,4,2]");
    tg_graph_free(g);

    g = tg_graph_new();
    int64_t sx[] = {3, 4};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, sx);
    tg_tensor i = tg_placeholder(g, "i", TG_I32, 2, sx);
    assert_false(tg_tensor_valid(g, tg_matmul(g, x, i, false, false)));
    assert_error_contains(g, "matmul", "f32", "i32");
    tg_graph_free(g);
}

static void test_dtype_rules(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {3};
    tg_tensor f = tg_placeholder(g, "f", TG_F32, 1, s);
    tg_tensor h = tg_placeholder(g, "h", TG_F16, 1, s);
    tg_tensor i = tg_placeholder(g, "i", TG_I32, 1, s);
    assert_shape(g, tg_cast(g, f, TG_F16), TG_F16, 1, s);
    assert_shape(g, tg_neg(g, i), TG_I32, 1, s);
    assert_shape(g, tg_argmax(g, f, -1, false), TG_I32, 0, s);
    assert_int_equal(tg_graph_status(g), TG_OK);
    assert_false(tg_tensor_valid(g, tg_exp(g, i))); /* exp needs a float */
    assert_error_contains(g, "exp", "i32", "float");
    tg_graph_free(g);

    g = tg_graph_new();
    f = tg_placeholder(g, "f", TG_F32, 1, s);
    h = tg_placeholder(g, "h", TG_F16, 1, s);
    assert_false(tg_tensor_valid(g, tg_add(g, f, h))); /* no implicit promotion */
    assert_error_contains(g, "add", "f32", "f16");
    tg_graph_free(g);
}

static void test_reductions_normalise_axes(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {3, 5, 7}, k[] = {3, 1, 7}, d[] = {3}, all[] = {0};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 3, s);
    int ax[] = {-2};
    tg_tensor r = tg_sum(g, x, 1, ax, true);
    assert_shape(g, r, TG_F32, 3, k);
    assert_int_equal(g->nodes[r.id].attrs.axes[0], 1);
    int ax2[] = {1, -1};
    assert_shape(g, tg_max(g, x, 2, ax2, false), TG_F32, 1, d);
    assert_shape(g, tg_mean(g, x, 0, NULL, false), TG_F32, 0, all);
    int dup[] = {0, -3};
    assert_false(tg_tensor_valid(g, tg_sum(g, x, 2, dup, false)));
    assert_error_contains(g, "sum", "twice", "f32[3,5,7]");
    tg_graph_free(g);
}

static void test_movement_shapes(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {2, 3, 4};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 3, s);
    int64_t rs[] = {0, -1}, rw[] = {2, 12};
    assert_shape(g, tg_reshape(g, x, 2, rs), TG_F32, 2, rw);
    int perm[] = {2, 0, 1};
    int64_t pw[] = {4, 2, 3};
    assert_shape(g, tg_permute(g, x, 3, perm), TG_F32, 3, pw);
    int64_t b[] = {0, -2, 1}, e[] = {INT64_MAX, 3, -1}, st[] = {1, 1, 2}, sw[] = {2, 2, 1};
    tg_tensor sl = tg_slice(g, x, b, e, st);
    assert_shape(g, sl, TG_F32, 3, sw);
    assert_int_equal(g->nodes[sl.id].attrs.begin[1], 1); /* -2 + 3 */
    assert_int_equal(g->nodes[sl.id].attrs.end[0], 2);   /* clamped */
    tg_tensor parts[] = {x, x, x};
    int64_t cw[] = {2, 9, 4};
    assert_shape(g, tg_concat(g, 3, parts, 1), TG_F32, 3, cw);
    int64_t lo[] = {0, 1, 2}, hi[] = {1, 0, 3}, padw[] = {3, 4, 9};
    assert_shape(g, tg_pad(g, x, lo, hi, 0.5), TG_F32, 3, padw);
    int64_t is[] = {5};
    tg_tensor idx = tg_placeholder(g, "idx", TG_I32, 1, is);
    int64_t gw[] = {2, 5, 4};
    assert_shape(g, tg_gather(g, x, idx, 1), TG_F32, 3, gw);
    int64_t ow[] = {5, 10};
    assert_shape(g, tg_one_hot(g, idx, 10, TG_F32), TG_F32, 2, ow);
    int64_t bw[] = {6, 2, 3, 4};
    assert_shape(g, tg_broadcast_to(g, x, 4, bw), TG_F32, 4, bw);
    assert_int_equal(tg_graph_status(g), TG_OK);
    int64_t bad[] = {5, 5};
    assert_false(tg_tensor_valid(g, tg_reshape(g, x, 2, bad)));
    assert_error_contains(g, "reshape", "24", "25");
    tg_graph_free(g);
}

static void test_nn_shapes_and_errors(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t qs[] = {2, 6, 10, 64}, ks[] = {2, 6, 15, 64}, ms[] = {10, 15};
    tg_tensor q = tg_placeholder(g, "q", TG_F32, 4, qs);
    tg_tensor k = tg_placeholder(g, "k", TG_F32, 4, ks);
    tg_tensor m = tg_placeholder(g, "m", TG_F32, 2, ms);
    tg_tensor a = tg_attention(g, q, k, k, m, true, 0);
    assert_shape(g, a, TG_F32, 4, qs);
    assert_true(g->nodes[a.id].attrs.scale > 0.1249 && g->nodes[a.id].attrs.scale < 0.1251);
    int64_t xs[] = {4, 7}, ws[] = {7}, ls[] = {4};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor w = tg_placeholder(g, "w", TG_F32, 1, ws);
    tg_tensor lab = tg_placeholder(g, "lab", TG_I32, 1, ls);
    assert_shape(g, tg_layer_norm(g, x, w, w, 1e-5), TG_F32, 2, xs);
    assert_shape(g, tg_cross_entropy(g, x, lab, -100), TG_F32, 0, ls);
    assert_int_equal(tg_graph_status(g), TG_OK);
    int64_t wb[] = {6};
    tg_tensor w6 = tg_placeholder(g, "w6", TG_F32, 1, wb);
    assert_false(tg_tensor_valid(g, tg_layer_norm(g, x, w6, w6, 1e-5)));
    assert_error_contains(g, "layer_norm", "f32[4,7]", "f32[6]");
    tg_graph_free(g);

    g = tg_graph_new();
    int64_t cx[] = {1, 80, 3000}, cw[] = {384, 80, 3}, co[] = {1, 384, 1500};
    tg_tensor in = tg_placeholder(g, "mel", TG_F32, 3, cx);
    tg_tensor kw = tg_variable(g, "conv2.weight", TG_F32, 3, cw, true);
    assert_shape(g, tg_conv1d(g, in, kw, 2, 1, 1), TG_F32, 3, co);
    int64_t cb[] = {384, 81, 3};
    tg_tensor kb = tg_variable(g, "bad", TG_F32, 3, cb, true);
    assert_false(tg_tensor_valid(g, tg_conv1d(g, in, kb, 1, 1, 1)));
    assert_error_contains(g, "conv1d", "f32[1,80,3000]", "f32[384,81,3]");
    tg_graph_free(g);
}

static void test_state_ops(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t vs[] = {4, 8}, us[] = {1, 8}, ss[] = {2}, ws[] = {4, 7};
    tg_tensor v = tg_variable(g, "cache", TG_F32, 2, vs, false);
    tg_tensor u = tg_placeholder(g, "u", TG_F32, 2, us);
    tg_tensor st = tg_placeholder(g, "pos", TG_I32, 1, ss);
    assert_shape(g, tg_slice_update(g, v, u, st), TG_F32, 2, vs);
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, vs);
    assert_shape(g, tg_assign(g, v, x), TG_F32, 2, vs);
    assert_false(tg_tensor_valid(g, tg_assign(g, x, v))); /* not a variable */
    assert_error_contains(g, "assign", "variable", NULL);
    tg_graph_free(g);

    g = tg_graph_new();
    v = tg_variable(g, "w", TG_F32, 2, vs, true);
    tg_tensor y = tg_placeholder(g, "y", TG_F32, 2, ws);
    assert_false(tg_tensor_valid(g, tg_assign(g, v, y)));
    assert_error_contains(g, "'w'", "f32[4,8]", "f32[4,7]");
    tg_graph_free(g);
}

static void test_bad_arguments(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {2, 3, 4, 5, 6, 7, 8};
    assert_false(tg_tensor_valid(g, tg_placeholder(g, "x", TG_F32, 7, s)));
    assert_non_null(strstr(tg_graph_error(g), "rank 7"));
    tg_graph_free(g);

    g = tg_graph_new();
    assert_false(tg_tensor_valid(g, tg_placeholder(g, NULL, TG_F32, 1, s)));
    assert_non_null(strstr(tg_graph_error(g), "needs a name"));
    tg_graph_free(g);

    g = tg_graph_new();
    int64_t neg[] = {-3};
    assert_false(tg_tensor_valid(g, tg_variable(g, "v", TG_F32, 1, neg, true)));
    assert_non_null(strstr(tg_graph_error(g), "-3"));
    assert_false(tg_tensor_valid(g, tg_exp(g, (tg_tensor){42})));
    tg_graph_free(g);

    assert_false(tg_tensor_valid(NULL, tg_exp(NULL, (tg_tensor){0})));
    assert_non_null(strstr(tg_last_error(), "NULL"));
}

static void test_specialize(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {-1, -1, 384}, ws[] = {384, 64};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 3, xs);
    tg_tensor w = tg_variable(g, "w", TG_F32, 2, ws, true);
    tg_tensor y = tg_matmul(g, x, w, false, false);
    int64_t rs[] = {0, 0, 4, 16};
    tg_tensor r = tg_reshape(g, y, 4, rs);
    int64_t dyn[] = {-1, -1, 4, 16};
    assert_shape(g, r, TG_F32, 4, dyn);
    int64_t shapes[1][TG_MAX_RANK] = {{2, 5, 384}};
    tg_graph *s = tg_graph_specialize(g, 1, &x, shapes);
    assert_non_null(s);
    int64_t want[] = {2, 5, 4, 16};
    assert_shape(s, r, TG_F32, 4, want);
    assert_string_equal(tg_tensor_name(s, w), "w");
    tg_graph_free(s);
    int64_t wrong[1][TG_MAX_RANK] = {{2, 5, 100}};
    assert_null(tg_graph_specialize(g, 1, &x, wrong));
    assert_non_null(strstr(tg_last_error(), "f32[2,5,100]"));
    tg_graph_free(g);
}

static void test_half_conversions(void **state) {
    (void)state;
    assert_int_equal(tg_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(tg_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(tg_f32_to_f16(65520.0f), 0x7c00); /* rounds to Inf */
    assert_int_equal(tg_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(tg_f32_to_f16(5.9604645e-8f), 0x0001);      /* smallest subnormal */
    assert_int_equal(tg_f32_to_f16(1.0f + 1.0f / 2048), 0x3c00); /* tie -> even */
    assert_int_equal(tg_f32_to_f16(1.0f + 3.0f / 2048), 0x3c02); /* tie -> even (up) */
    assert_true(tg_f16_to_f32(0x0001) == 5.9604645e-8f);
    assert_true(tg_f16_to_f32(0x3555) == 0.333251953125f);
    assert_int_equal(tg_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(tg_f32_to_bf16(1.00390625f), 0x3f80); /* tie -> even */
    assert_true(tg_bf16_to_f32(0x4049) == 3.140625f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_broadcast_shapes),
        cmocka_unit_test(test_shape_error_names_op_and_shapes),
        cmocka_unit_test(test_matmul_shapes_and_errors),
        cmocka_unit_test(test_dtype_rules),
        cmocka_unit_test(test_reductions_normalise_axes),
        cmocka_unit_test(test_movement_shapes),
        cmocka_unit_test(test_nn_shapes_and_errors),
        cmocka_unit_test(test_state_ops),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_specialize),
        cmocka_unit_test(test_half_conversions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
