/* test_ir_roundtrip.c — the text IR: print -> parse -> print is
 * byte-identical for a graph holding every op; parsing gives identical
 * nodes; non-canonical input prints canonically; constants round-trip
 * bit-exactly; the example files in tests/data parse; DOT output. */
#define _POSIX_C_SOURCE 200809L
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "graph/graph_internal.h"
#include "test_util.h"

#include <float.h>
#include <math.h>

static tg_graph *parse_string(const char *text) {
    tg_graph *g = tg_graph_parse(text, strlen(text), "test.tgir");
    if (!g) fprintf(stderr, "parse error: %s\n", tg_last_error());
    return g;
}

/* A graph using every op of the tg_op enum, with representative attributes,
 * every dtype, dynamic dims, odd names and every constant form. */
static tg_graph *build_every_op_graph(void) {
    tg_graph *g = tg_graph_new();
    int64_t s23[] = {2, 3}, s33[] = {3, 3}, sdyn[] = {-1, 3}, s3[] = {3}, s4[] = {4};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, s23);
    tg_tensor xd = tg_placeholder(g, "x dyn \"quoted\"\n", TG_F32, 2, sdyn);
    tg_tensor w = tg_variable(g, "layer.0/w", TG_F32, 2, s33, true);
    tg_tensor state = tg_variable(g, "state", TG_F32, 2, s23, false);

    /* constants: dense, splat, hex (too long, or not printable exactly) */
    float c1[] = {1.0f, 2.5f, -3.0f};
    tg_tensor k1 = tg_constant(g, TG_F32, 1, s3, c1);
    tg_tensor_set_name(g, k1, "c1");
    float c2[6] = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    tg_constant(g, TG_F32, 2, s23, c2);
    float c3[20];
    for (int i = 0; i < 20; i++) c3[i] = (float)i * 0.1f;
    int64_t s20[] = {20};
    tg_constant(g, TG_F32, 1, s20, c3);
    float odd[8] = {0.1f, -0.0f, FLT_MAX, FLT_MIN, 1e-45f, INFINITY, -INFINITY, NAN};
    int64_t s8[] = {8};
    tg_constant(g, TG_F32, 1, s8, odd);
    uint32_t payload_nan = 0x7fc01234u;
    float nan2[2];
    memcpy(&nan2[0], &payload_nan, 4);
    nan2[1] = 1.0f;
    int64_t s2[] = {2};
    tg_constant(g, TG_F32, 1, s2, nan2);
    uint16_t h[4] = {tg_f32_to_f16(1.0f), tg_f32_to_f16(0.333f), tg_f32_to_f16(-65504.0f), 0x0001};
    tg_constant(g, TG_F16, 1, s4, h);
    uint16_t bf[2] = {tg_f32_to_bf16(3.14159f), tg_f32_to_bf16(-1e30f)};
    tg_constant(g, TG_BF16, 1, s2, bf);
    int32_t ints[3] = {-1, 0, INT32_MAX};
    tg_constant(g, TG_I32, 1, s3, ints);
    int8_t i8s[2] = {-128, 127};
    tg_constant(g, TG_I8, 1, s2, i8s);
    uint8_t u8s[2] = {0, 255};
    tg_constant(g, TG_U8, 1, s2, u8s);
    tg_tensor half = tg_scalar(g, TG_F32, 0.1);

    /* elementwise unary */
    tg_tensor (*unary[])(tg_graph *, tg_tensor) = {
        tg_neg,        tg_abs,     tg_exp,  tg_log, tg_sqrt, tg_rsqrt,
        tg_reciprocal, tg_square,  tg_tanh, tg_erf, tg_gelu, tg_gelu_tanh,
        tg_relu,       tg_sigmoid, tg_silu, tg_sin, tg_cos,  tg_stop_gradient};
    for (size_t i = 0; i < sizeof unary / sizeof unary[0]; i++) unary[i](g, x);
    tg_cast(g, x, TG_F16);
    tg_cast(g, xd, TG_I32);

    /* elementwise binary */
    tg_tensor (*binary[])(tg_graph *, tg_tensor, tg_tensor) = {
        tg_add, tg_sub, tg_mul, tg_div, tg_pow, tg_maximum, tg_minimum,
        tg_eq,  tg_ne,  tg_lt,  tg_le,  tg_gt,  tg_ge};
    for (size_t i = 0; i < sizeof binary / sizeof binary[0]; i++) binary[i](g, x, half);
    tg_tensor mask = tg_gt(g, x, half);
    tg_where(g, mask, x, xd);
    tg_tensor d1 = tg_add(g, x, half);
    tg_tensor d2 = tg_mul(g, x, half);
    tg_tensor_set_name(g, d1, "dup"); /* duplicate names print as name= */
    tg_tensor_set_name(g, d2, "dup");
    tg_tensor_set_name(g, tg_sub(g, x, half), "007"); /* all digits: name= */

    /* reductions */
    int ax1[] = {1}, axm1[] = {-1};
    tg_sum(g, x, 1, ax1, true);
    tg_mean(g, x, 0, NULL, false);
    tg_max(g, xd, 1, axm1, false);
    tg_min(g, x, 1, ax1, true);
    tg_argmax(g, x, -1, true);

    /* data movement */
    int64_t rs[] = {3, -1}, rs0[] = {0, 3, 1};
    tg_reshape(g, x, 2, rs);
    tg_reshape(g, xd, 3, rs0);
    int perm[] = {1, 0};
    tg_permute(g, x, 2, perm);
    tg_transpose(g, xd);
    int64_t bs[] = {4, 2, 3};
    tg_broadcast_to(g, x, 3, bs);
    int64_t b[] = {0, -2}, e[] = {INT64_MAX, 3}, st[] = {1, 2};
    tg_slice(g, x, b, e, st);
    tg_slice(g, xd, b, e, st);
    tg_tensor parts[] = {x, x, xd};
    tg_concat(g, 3, parts, 0);
    int64_t lo[] = {1, 0}, hi[] = {0, 2};
    tg_pad(g, x, lo, hi, -1.5);
    int32_t idx_data[] = {2, 0, 1, 0};
    tg_tensor idx = tg_constant(g, TG_I32, 1, s4, idx_data);
    tg_tensor gathered = tg_gather(g, w, idx, 0);
    int64_t s43[] = {4, 3};
    tg_tensor target = tg_placeholder(g, "target", TG_F32, 2, s33);
    tg_tensor updates = tg_placeholder(g, "updates", TG_F32, 2, s43);
    tg_scatter_add(g, target, idx, updates, 0);
    tg_one_hot(g, idx, 5, TG_F32);
    tg_iota(g, TG_I32, 2, s23, 1);
    (void)gathered;

    /* linear algebra */
    tg_tensor mm = tg_matmul(g, x, w, false, true);
    tg_matmul(g, w, x, true, true);
    int64_t sx[] = {1, 3, 8}, sw[] = {4, 3, 3};
    tg_tensor cx = tg_placeholder(g, "audio", TG_F32, 3, sx);
    tg_tensor cw = tg_variable(g, "conv.w", TG_F32, 3, sw, true);
    tg_conv1d(g, cx, cw, 2, 1, 1);

    /* composites */
    tg_tensor sm = tg_softmax(g, mm, -1);
    tg_tensor_set_name(g, sm, "probs");
    tg_log_softmax(g, mm, 0);
    tg_tensor gamma = tg_variable(g, "ln.weight", TG_F32, 1, s3, true);
    tg_tensor beta = tg_variable(g, "ln.bias", TG_F32, 1, s3, true);
    tg_layer_norm(g, x, gamma, beta, 1e-5);
    int64_t sq[] = {2, 5, 8}, sk[] = {2, 7, 8}, smask[] = {5, 7};
    tg_tensor q = tg_placeholder(g, "q", TG_F32, 3, sq);
    tg_tensor k = tg_placeholder(g, "k", TG_F32, 3, sk);
    tg_tensor amask = tg_placeholder(g, "mask", TG_F32, 2, smask);
    tg_attention(g, q, k, k, TG_INVALID, true, 0.125);
    tg_attention(g, q, k, k, amask, false, 0.0);
    int64_t sl[] = {2};
    tg_tensor labels = tg_placeholder(g, "labels", TG_I32, 1, sl);
    tg_cross_entropy(g, x, labels, -100);

    /* state */
    tg_assign(g, state, tg_add(g, state, x));
    tg_tensor kv = tg_variable(g, "kv", TG_F32, 2, s43, false);
    int64_t s13[] = {1, 3};
    tg_tensor upd = tg_placeholder(g, "upd", TG_F32, 2, s13);
    tg_tensor start = tg_placeholder(g, "start", TG_I32, 1, s2);
    tg_slice_update(g, kv, upd, start);

    /* backward ops (made by tg_gradients) and optimizers */
    tg_node_add(g, TG_OP_GELU_GRAD, 2, (tg_tensor[]){x, x}, NULL, TG_F32);
    tg_node_add(g, TG_OP_GELU_TANH_GRAD, 2, (tg_tensor[]){x, x}, NULL, TG_F32);
    tg_attrs axis1 = {.axis = 1}, ln_eps = {.eps = 1e-5};
    tg_node_add(g, TG_OP_SOFTMAX_GRAD, 2, (tg_tensor[]){sm, x}, &axis1, TG_F32);
    tg_node_add(g, TG_OP_LOG_SOFTMAX_GRAD, 2, (tg_tensor[]){sm, x}, &axis1, TG_F32);
    tg_node_add(g, TG_OP_LAYER_NORM_GRAD_X, 3, (tg_tensor[]){x, x, gamma}, &ln_eps, TG_F32);
    tg_node_add(g, TG_OP_LAYER_NORM_GRAD_WB, 2, (tg_tensor[]){x, x}, &ln_eps, TG_F32);
    tg_tensor dout = tg_placeholder(g, "dout", TG_F32, 3, sq);
    tg_attrs att = {.causal = true, .scale = 0.125}, att_mask = {.scale = 0.5, .has_mask = true};
    tg_node_add(g, TG_OP_ATTENTION_GRAD_Q, 4, (tg_tensor[]){q, k, k, dout}, &att, TG_F32);
    tg_node_add(g, TG_OP_ATTENTION_GRAD_K, 5, (tg_tensor[]){q, k, k, amask, dout}, &att_mask,
                TG_F32);
    tg_node_add(g, TG_OP_ATTENTION_GRAD_V, 4, (tg_tensor[]){q, k, k, dout}, &att, TG_F32);
    tg_tensor lse = tg_node_add(g, TG_OP_ATTENTION_LSE, 3, (tg_tensor[]){q, k, k}, &att, TG_F32);
    tg_node_add(g, TG_OP_ATTENTION_GRAD_Q, 6, (tg_tensor[]){q, k, k, dout, lse, lse}, &att, TG_F32);
    tg_node_add(g, TG_OP_ATTENTION_GRAD_V, 7, (tg_tensor[]){q, k, k, amask, dout, lse, lse},
                &att_mask, TG_F32);
    tg_attrs ignore = {.ignore_index = -100};
    tg_tensor dloss = tg_scalar(g, TG_F32, 0.5);
    tg_node_add(g, TG_OP_CROSS_ENTROPY_GRAD, 3, (tg_tensor[]){x, labels, dloss}, &ignore, TG_F32);
    int64_t sdy[] = {1, 4, 4};
    tg_tensor cdy = tg_placeholder(g, "conv.dy", TG_F32, 3, sdy);
    tg_attrs conv = {.stride = 2, .padding = 1, .dilation = 1};
    tg_node_add(g, TG_OP_CONV1D_GRAD_INPUT, 3, (tg_tensor[]){cdy, cx, cw}, &conv, TG_F32);
    tg_node_add(g, TG_OP_CONV1D_GRAD_WEIGHT, 3, (tg_tensor[]){cdy, cx, cw}, &conv, TG_F32);
    tg_tensor sliced = tg_slice(g, x, b, e, st);
    tg_node_add(g, TG_OP_SLICE_GRAD, 2, (tg_tensor[]){sliced, x}, &g->nodes[sliced.id].attrs,
                TG_F32);
    tg_tensor lr = tg_placeholder(g, "lr", TG_F32, 0, NULL);
    tg_tensor step = tg_placeholder(g, "step", TG_I32, 0, NULL);
    tg_tensor wgrad = tg_mul(g, w, w);
    tg_adamw(g, w, wgrad, lr, step, 0.9, 0.999, 1e-8, 0.01);
    tg_sgd(g, w, wgrad, lr, step, 0.9, 0, true, 1e-4);
    tg_sgd(g, state, x, lr, TG_INVALID, 0, 0, false, 0);
    return g;
}

static void assert_same_attrs(tg_op op, const tg_attrs *a, const tg_attrs *b) {
    unsigned s = tg_ops[op].attrs;
    if (s & TG_ATTR_AXES) {
        assert_int_equal(a->n_axes, b->n_axes);
        for (int i = 0; i < a->n_axes; i++) assert_int_equal(a->axes[i], b->axes[i]);
    }
    if (s & TG_ATTR_KEEPDIMS) assert_int_equal(a->keepdims, b->keepdims);
    if (s & TG_ATTR_AXIS) assert_int_equal(a->axis, b->axis);
    if (s & TG_ATTR_SHAPE) {
        assert_int_equal(a->n_shape, b->n_shape);
        for (int i = 0; i < a->n_shape; i++) assert_int_equal(a->shape[i], b->shape[i]);
    }
    if (s & (TG_ATTR_BEGIN | TG_ATTR_LO_HI)) assert_int_equal(a->n_slice, b->n_slice);
    for (int i = 0; i < a->n_slice; i++) {
        if (s & TG_ATTR_BEGIN) {
            assert_int_equal(a->begin[i], b->begin[i]);
            assert_int_equal(a->end[i], b->end[i]);
            assert_int_equal(a->step[i], b->step[i]);
        }
        if (s & TG_ATTR_LO_HI) {
            assert_int_equal(a->lo[i], b->lo[i]);
            assert_int_equal(a->hi[i], b->hi[i]);
        }
    }
    if (s & TG_ATTR_VALUE) assert_memory_equal(&a->value, &b->value, sizeof(double));
    if (s & TG_ATTR_TRANSPOSE) {
        assert_int_equal(a->transpose_a, b->transpose_a);
        assert_int_equal(a->transpose_b, b->transpose_b);
    }
    if (s & TG_ATTR_CONV) {
        assert_int_equal(a->stride, b->stride);
        assert_int_equal(a->padding, b->padding);
        assert_int_equal(a->dilation, b->dilation);
    }
    if (s & TG_ATTR_EPS) assert_memory_equal(&a->eps, &b->eps, sizeof(double));
    if (s & TG_ATTR_ATTENTION) {
        assert_int_equal(a->causal, b->causal);
        assert_memory_equal(&a->scale, &b->scale, sizeof(double));
    }
    if (s & TG_ATTR_IGNORE) assert_int_equal(a->ignore_index, b->ignore_index);
    if (s & TG_ATTR_DEPTH) assert_int_equal(a->depth, b->depth);
    if (s & TG_ATTR_TRAINABLE) assert_int_equal(a->trainable, b->trainable);
    if (s & TG_ATTR_HAS_MASK) assert_int_equal(a->has_mask, b->has_mask);
    if (s & TG_ATTR_BETAS) {
        assert_memory_equal(&a->beta1, &b->beta1, sizeof(double));
        assert_memory_equal(&a->beta2, &b->beta2, sizeof(double));
    }
    if (s & TG_ATTR_MOMENTUM) {
        assert_memory_equal(&a->momentum, &b->momentum, sizeof(double));
        assert_memory_equal(&a->dampening, &b->dampening, sizeof(double));
        assert_int_equal(a->nesterov, b->nesterov);
    }
    if (s & TG_ATTR_DECAY) assert_memory_equal(&a->weight_decay, &b->weight_decay, sizeof(double));
}

static void assert_same_graph(const tg_graph *a, const tg_graph *b) {
    assert_int_equal(a->n_nodes, b->n_nodes);
    for (int i = 0; i < a->n_nodes; i++) {
        const tg_node *x = &a->nodes[i], *y = &b->nodes[i];
        assert_int_equal(x->op, y->op);
        assert_int_equal(x->dtype, y->dtype);
        assert_int_equal(x->rank, y->rank);
        for (int d = 0; d < x->rank; d++) assert_int_equal(x->shape[d], y->shape[d]);
        assert_int_equal(x->n_inputs, y->n_inputs);
        for (int k = 0; k < x->n_inputs; k++) assert_int_equal(x->inputs[k], y->inputs[k]);
        assert_same_attrs(x->op, &x->attrs, &y->attrs);
        if (x->name || y->name) {
            assert_non_null(x->name);
            assert_non_null(y->name);
            assert_string_equal(x->name, y->name);
        }
        assert_int_equal(x->data_bytes, y->data_bytes);
        if (x->data_bytes) assert_memory_equal(x->data, y->data, x->data_bytes);
    }
}

static void test_every_op_round_trip(void **state) {
    (void)state;
    tg_graph *g = build_every_op_graph();
    if (tg_graph_status(g) != TG_OK) fprintf(stderr, "build: %s\n", tg_graph_error(g));
    assert_int_equal(tg_graph_status(g), TG_OK);
    bool used[TG_OP_COUNT] = {false};
    for (int i = 0; i < g->n_nodes; i++) used[g->nodes[i].op] = true;
    for (int op = 0; op < TG_OP_COUNT; op++) {
        if (!used[op]) fprintf(stderr, "op %s is not in the graph\n", tg_ops[op].name);
        assert_true(used[op]);
    }

    char *text = tg_graph_to_text(g);
    assert_non_null(text);
    tg_graph *g2 = parse_string(text);
    assert_non_null(g2);
    char *text2 = tg_graph_to_text(g2);
    assert_non_null(text2);
    assert_string_equal(text, text2);
    assert_same_graph(g, g2);

    /* The checked-in example is this very graph, printed. */
    char path[1024];
    snprintf(path, sizeof path, "%s/every_op.tgir", TG_TEST_DATA_DIR);
    if (getenv("TG_UPDATE_GOLDEN")) { /* after an intended format change */
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fputs(text, f);
        fclose(f);
    }
    char *golden = tg_test_read_file(path, NULL);
    assert_non_null(golden);
    if (strcmp(golden, text) != 0) fprintf(stderr, "every_op.tgir differs; now:\n%s", text);
    assert_string_equal(golden, text);

    free(golden);
    free(text);
    free(text2);
    tg_graph_free(g);
    tg_graph_free(g2);
}

/* Lines of the printed every-op graph that pin down the syntax. */
static void test_every_op_syntax(void **state) {
    (void)state;
    tg_graph *g = build_every_op_graph();
    char *text = tg_graph_to_text(g);
    assert_non_null(text);
    const char *expected[] = {
        "# tg ir v1\n%x = placeholder \"x\" : f32[2,3]\n",
        "\n%1 = placeholder \"x dyn \\\"quoted\\\"\\n\" : f32[?,3]\n",
        "\n%2 = variable \"layer.0/w\" {trainable} : f32[3,3]\n",
        "\n%state = variable \"state\" : f32[2,3]\n",
        "\n%c1 = constant dense<[1, 2.5, -3]> : f32[3]\n",
        "constant splat<0.5> : f32[2,3]\n",
        "constant hex<\"00000000cdcccc3dcdcc4c3e",
        ("constant dense<[0.1, -0, 3.4028235e+38, 1.1754944e-38, 1e-45, inf, -inf, nan]> : "
         "f32[8]\n"),
        "constant hex<\"3412c07f0000803f\"> : f32[2]\n",
        "constant dense<[1, 0.333, -6.55e+04, 6e-08]> : f16[4]\n",
        "constant dense<[3.14, -1e+30]> : bf16[2]\n",
        "constant dense<[-1, 0, 2147483647]> : i32[3]\n",
        "constant dense<[-128, 127]> : i8[2]\n",
        "constant dense<[0, 255]> : u8[2]\n",
        "constant dense<[0.1]> : f32[]\n",
        " = cast %x : f16[2,3]\n",
        " = cast %1 : i32[?,3]\n",
        " = add %x, %14 {name=\"dup\"} : f32[2,3]\n",
        " = sub %x, %14 {name=\"007\"} : f32[2,3]\n",
        " = sum %x {axes=[1], keepdims} : f32[2,1]\n",
        " = mean %x {axes=[]} : f32[]\n",
        " = max %1 {axes=[1]} : f32[?]\n",
        " = argmax %x {keepdims, axis=1} : i32[2,1]\n", /* bit order */
        " = reshape %x {shape=[3,-1]} : f32[3,2]\n",
        " = reshape %1 {shape=[0,3,1]} : f32[?,3,1]\n",
        " = permute %x {perm=[1,0]} : f32[3,2]\n",
        " = broadcast_to %x {shape=[4,2,3]} : f32[4,2,3]\n",
        " = slice %x {begin=[0,1], end=[2,3], step=[1,2]} : f32[2,1]\n",
        " = slice %1 {begin=[0,1], end=[9223372036854775807,3], step=[1,2]} : f32[?,1]\n",
        "\n%probs = softmax %74 {axis=1} : f32[2,3]\n", /* axis normalised */
        " = concat %x, %x, %1 {axis=0} : f32[?,3]\n",
        " = pad %x {lo=[1,0], hi=[0,2], value=-1.5} : f32[3,5]\n",
        " = one_hot %",
        "{depth=5} : f32[4,5]\n",
        " = iota {axis=1, shape=[2,3]} : i32[2,3]\n",
        " = matmul %x, %2 {transpose_b} : f32[2,3]\n",
        " = matmul %2, %x {transpose_a, transpose_b} : f32[3,2]\n",
        " {stride=2, padding=1, dilation=1} : f32[1,4,4]\n",
        "\n%probs = softmax %",
        " {eps=1e-05} : f32[2,3]\n",
        " = attention %q, %k, %k {causal, scale=0.125} : f32[2,5,8]\n",
        " = attention %q, %k, %k, %mask {scale=0.35355339059327373} : f32[2,5,8]\n",
        " = cross_entropy %x, %labels {ignore_index=-100} : f32[]\n",
        " = assign %state, %",
        " = slice_update %kv, %upd, %start : f32[4,3]\n",
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        if (!strstr(text, expected[i])) fprintf(stderr, "missing: [%s]\n", expected[i]);
        assert_non_null(strstr(text, expected[i]));
    }
    free(text);
    tg_graph_free(g);
}

/* Extra spaces, tabs, CRLF, comments, blank lines, arbitrary labels and
 * non-canonical constant forms all parse and print canonically. */
static void test_non_canonical_input(void **state) {
    (void)state;
    const char *messy = "\n   \n# tg ir v1   \r\n"
                        "# a comment line\n"
                        "\n"
                        "%in   =  placeholder   \"x\"   :   f32[ ? , 4 ]   # the input\n"
                        "\t%99 = constant splat< 2 > : f32[4]\r\n"
                        "%w=variable \"w\"{trainable}:f32[4,3]\n"
                        "%b = constant dense<[ 0.50 , 1e0,-2.5E+0 ]> {name=\"bias\"} : f32[3]\n"
                        "%5 = constant hex<\"0000803F\"> : f32[1] # uppercase hex\n"
                        "%mm = matmul %in,%w : f32[?,3]\n"
                        "%s = add %mm , %b {  } : f32[?,3]\n"
                        "%out = sum %s {keepdims,axes=[-1]} : f32[?,1]\n"
                        "\n# trailing comment without newline";
    tg_graph *g = parse_string(messy);
    assert_non_null(g);
    char *text = tg_graph_to_text(g);
    assert_non_null(text);
    const char *canonical = "# tg ir v1\n"
                            "%x = placeholder \"x\" : f32[?,4]\n"
                            "%1 = constant splat<2> : f32[4]\n"
                            "%w = variable \"w\" {trainable} : f32[4,3]\n"
                            "%bias = constant dense<[0.5, 1, -2.5]> : f32[3]\n"
                            "%4 = constant dense<[1]> : f32[1]\n"
                            "%mm = matmul %x, %w : f32[?,3]\n"
                            "%s = add %mm, %bias : f32[?,3]\n"
                            "%out = sum %s {axes=[1], keepdims} : f32[?,1]\n";
    assert_string_equal(text, canonical);
    /* The placeholder is named by its quoted name, not its label. */
    assert_int_equal(tg_graph_find(g, "x").id, 0);
    assert_int_equal(tg_graph_find(g, "in").id, -1);
    assert_int_equal(tg_graph_find(g, "bias").id, 3);
    assert_null(tg_tensor_name(g, (tg_tensor){4})); /* numeric label: no name */

    /* Parsing the canonical form gives the same text again. */
    tg_graph *g2 = parse_string(text);
    assert_non_null(g2);
    char *text2 = tg_graph_to_text(g2);
    assert_string_equal(text, text2);
    free(text2);
    tg_graph_free(g2);

    /* Without a trailing newline and with an empty graph. */
    tg_graph *empty = parse_string("# tg ir v1");
    assert_non_null(empty);
    assert_int_equal(tg_graph_node_count(empty), 0);
    char *etext = tg_graph_to_text(empty);
    assert_string_equal(etext, "# tg ir v1\n");
    free(etext);
    tg_graph_free(empty);

    /* The length argument is honoured: the text need not be NUL-terminated. */
    tg_graph *prefix = tg_graph_parse(text, strlen("# tg ir v1\n"), "t");
    assert_non_null(prefix);
    assert_int_equal(tg_graph_node_count(prefix), 0);
    tg_graph_free(prefix);

    free(text);
    tg_graph_free(g);
}

/* Doubles print in their shortest exact form and read back bit-exactly. */
static void test_double_attributes(void **state) {
    (void)state;
    double values[] = {0.1, 1e-5, 1.0 / 3.0, -0.0, 1e300, 5e-324, 0.125, 1e-12, 12345.678};
    const char *printed[] = {"value=0.1}",   "value=1e-05}",  "value=0.3333333333333333}",
                             "value=-0}",    "value=1e+300}", "value=5e-324}",
                             "value=0.125}", "value=1e-12}",  "value=12345.678}"};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        tg_graph *g = tg_graph_new();
        int64_t s[] = {2};
        int64_t lo[] = {1}, hi[] = {1};
        tg_pad(g, tg_placeholder(g, "x", TG_F32, 1, s), lo, hi, values[i]);
        char *text = tg_graph_to_text(g);
        assert_non_null(text);
        if (!strstr(text, printed[i])) fprintf(stderr, "%s", text);
        assert_non_null(strstr(text, printed[i]));
        tg_graph *g2 = parse_string(text);
        assert_non_null(g2);
        assert_memory_equal(&g2->nodes[1].attrs.value, &values[i], sizeof(double));
        free(text);
        tg_graph_free(g);
        tg_graph_free(g2);
    }
    /* Infinite and NaN values are spelled inf, -inf, nan. */
    tg_graph *g = parse_string("# tg ir v1\n%x = placeholder \"x\" : f32[2]\n"
                               "%p = pad %x {lo=[0], hi=[1], value=-inf} : f32[3]\n"
                               "%q = pad %x {lo=[0], hi=[1], value=nan} : f32[3]\n");
    assert_non_null(g);
    assert_true(isinf(g->nodes[1].attrs.value) && g->nodes[1].attrs.value < 0);
    assert_true(isnan(g->nodes[2].attrs.value));
    tg_graph_free(g);
}

/* Every f16 and bf16 bit pattern that is not a NaN prints inline and reads
 * back to the same bits. */
static void test_half_constants_exact(void **state) {
    (void)state;
    for (int kind = 0; kind < 2; kind++) {
        tg_dtype dt = kind ? TG_BF16 : TG_F16;
        for (uint32_t base = 0; base < 65536; base += 16) {
            uint16_t v[16];
            bool any_nan = false;
            for (int i = 0; i < 16; i++) {
                v[i] = (uint16_t)(base + (uint32_t)i);
                float f = kind ? tg_bf16_to_f32(v[i]) : tg_f16_to_f32(v[i]);
                any_nan = any_nan || isnan(f);
            }
            tg_graph *g = tg_graph_new();
            int64_t s[] = {16};
            tg_constant(g, dt, 1, s, v);
            char *text = tg_graph_to_text(g);
            assert_non_null(text);
            if (!any_nan) assert_non_null(strstr(text, "dense<["));
            tg_graph *g2 = parse_string(text);
            assert_non_null(g2);
            assert_memory_equal(g2->nodes[0].data, v, sizeof v);
            free(text);
            tg_graph_free(g);
            tg_graph_free(g2);
        }
    }
}

/* Random f32 bit patterns round-trip exactly (inline or hex). */
static void test_f32_constants_exact(void **state) {
    (void)state;
    uint64_t rng = 12345;
    for (int round = 0; round < 400; round++) {
        uint32_t v[16];
        for (int i = 0; i < 16; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            v[i] = (uint32_t)(rng >> 32);
        }
        tg_graph *g = tg_graph_new();
        int64_t s[] = {4, 4};
        tg_constant(g, TG_F32, 2, s, v);
        char *text = tg_graph_to_text(g);
        tg_graph *g2 = parse_string(text);
        assert_non_null(g2);
        assert_memory_equal(g2->nodes[0].data, v, sizeof v);
        free(text);
        tg_graph_free(g);
        tg_graph_free(g2);
    }
}

static void check_example_file(const char *file) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", TG_TEST_DATA_DIR, file);
    size_t len = 0;
    char *src = tg_test_read_file(path, &len);
    assert_non_null(src);
    tg_graph *g = tg_graph_parse(src, len, file);
    if (!g) fprintf(stderr, "%s\n", tg_last_error());
    assert_non_null(g);
    char *text = tg_graph_to_text(g);
    assert_non_null(text);
    assert_string_equal(text, src); /* the examples are canonical */
    free(text);
    free(src);
    tg_graph_free(g);
}

static void test_example_files(void **state) {
    (void)state;
    check_example_file("mlp.tgir");
    check_example_file("attention.tgir");
    check_example_file("every_op.tgir");

    /* Other tests rely on mlp.tgir's interface: x f32[2,4] in, probs out. */
    char path[1024];
    snprintf(path, sizeof path, "%s/mlp.tgir", TG_TEST_DATA_DIR);
    size_t len = 0;
    char *src = tg_test_read_file(path, &len);
    tg_graph *g = tg_graph_parse(src, len, "mlp.tgir");
    assert_non_null(g);
    tg_tensor x = tg_graph_find(g, "x");
    tg_tensor probs = tg_graph_find(g, "probs");
    assert_true(tg_tensor_valid(g, x) && tg_tensor_valid(g, probs));
    assert_string_equal(tg_tensor_op(g, x), "placeholder");
    assert_string_equal(tg_tensor_op(g, probs), "softmax");
    int64_t shape[TG_MAX_RANK];
    assert_int_equal(tg_tensor_shape(g, x, shape), 2);
    assert_int_equal(shape[0], 2);
    assert_int_equal(shape[1], 4);
    assert_int_equal(tg_tensor_dtype(g, x), TG_F32);
    free(src);
    tg_graph_free(g);

    /* The comments-and-blank-lines example parses to the same graph as
     * mlp.tgir. */
    snprintf(path, sizeof path, "%s/mlp_commented.tgir", TG_TEST_DATA_DIR);
    src = tg_test_read_file(path, &len);
    assert_non_null(src);
    g = tg_graph_parse(src, len, "mlp_commented.tgir");
    if (!g) fprintf(stderr, "%s\n", tg_last_error());
    assert_non_null(g);
    char *text = tg_graph_to_text(g);
    snprintf(path, sizeof path, "%s/mlp.tgir", TG_TEST_DATA_DIR);
    char *mlp = tg_test_read_file(path, NULL);
    assert_string_equal(text, mlp);
    free(mlp);
    free(text);
    free(src);
    tg_graph_free(g);
}

/* Many operands (concat of 300 tensors) and a long chain round-trip. */
static void test_large_graph(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t s[] = {1, 2};
    tg_tensor parts[300];
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, s);
    for (int i = 0; i < 300; i++) {
        x = tg_relu(g, x);
        parts[i] = x;
    }
    tg_concat(g, 300, parts, 0);
    char *text = tg_graph_to_text(g);
    assert_non_null(text);
    assert_non_null(strstr(text, "%301 = concat %1, %2, %3, "));
    assert_non_null(strstr(text, ", %300 {axis=0} : f32[300,2]\n"));
    tg_graph *g2 = parse_string(text);
    assert_non_null(g2);
    assert_same_graph(g, g2);
    free(text);
    tg_graph_free(g);
    tg_graph_free(g2);
}

/* A graph with a builder error cannot be printed. */
static void test_print_errors(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t a[] = {2}, b[] = {3};
    tg_add(g, tg_placeholder(g, "a", TG_F32, 1, a), tg_placeholder(g, "b", TG_F32, 1, b));
    assert_null(tg_graph_to_text(g));
    assert_non_null(strstr(tg_last_error(), "error"));
    assert_null(tg_graph_to_dot(g));
    assert_null(tg_graph_to_text(NULL));
    assert_null(tg_graph_to_dot(NULL));
    tg_graph_free(g);
}

static void test_dot(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {-1, 4}, ws[] = {4, 384};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor w = tg_variable(g, "w \"quoted\" \\ back", TG_F32, 2, ws, true);
    tg_tensor y = tg_matmul(g, x, w, false, false);
    tg_tensor z = tg_relu(g, y);
    tg_tensor_set_name(g, z, "out\nline");
    char *dot = tg_graph_to_dot(g);
    assert_non_null(dot);
    assert_int_equal(strncmp(dot, "digraph tg {\n", 13), 0);
    assert_non_null(strstr(dot, "  n0 [label=\"placeholder\\nx\", shape=ellipse];\n"));
    assert_non_null(
        strstr(dot, "  n1 [label=\"variable\\nw \\\"quoted\\\" \\\\ back\", shape=ellipse];\n"));
    assert_non_null(strstr(dot, "  n2 [label=\"matmul\\n%2\"];\n"));
    assert_non_null(strstr(dot, "  n3 [label=\"relu\\nout?line\"];\n"));
    assert_non_null(strstr(dot, "  n0 -> n2 [label=\"f32[?,4]\"];\n"));
    assert_non_null(strstr(dot, "  n1 -> n2 [label=\"f32[4,384]\"];\n"));
    assert_non_null(strstr(dot, "  n2 -> n3 [label=\"f32[?,384]\"];\n"));
    size_t len = strlen(dot);
    assert_true(len >= 2 && strcmp(dot + len - 2, "}\n") == 0);
    /* exactly three edges */
    int edges = 0;
    for (const char *p = dot; (p = strstr(p, " -> ")); p++) edges++;
    assert_int_equal(edges, 3);
    free(dot);
    tg_graph_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_op_round_trip),  cmocka_unit_test(test_every_op_syntax),
        cmocka_unit_test(test_non_canonical_input),  cmocka_unit_test(test_double_attributes),
        cmocka_unit_test(test_half_constants_exact), cmocka_unit_test(test_f32_constants_exact),
        cmocka_unit_test(test_example_files),        cmocka_unit_test(test_large_graph),
        cmocka_unit_test(test_print_errors),         cmocka_unit_test(test_dot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
