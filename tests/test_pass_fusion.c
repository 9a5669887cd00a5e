/* test_pass_fusion.c — the fusion partition: the kernels of a
 * transformer-block-like graph (layer_norm, matmul epilogues with bias,
 * GELU and residual, scaled masked scores, softmax, a reduction with
 * prologue and epilogue), prologues of softmax and reductions, aliases as
 * boundaries, merges refused because of a cycle or the input limit, and
 * the invariants every partition keeps (members in one kernel, kernels in
 * dependency order, inputs and outputs as described). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "test_pass_harness.h"

static const tg_fusion_limits default_limits = {TG_FUSION_MAX_INPUTS, TG_FUSION_MAX_OUTPUTS, 0,
                                                false};

/* "matmul+add+gelu": the ops of a kernel's members. */
static void kernel_ops(const tg_graph *g, const tg_part_kernel *k, char *buf, size_t n) {
    buf[0] = '\0';
    for (int i = 0; i < k->n_nodes; i++)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", i ? "+" : "",
                 tg_ops[g->nodes[k->nodes[i]].op].name);
}

static bool is_member(const tg_part_kernel *k, int32_t id) {
    for (int i = 0; i < k->n_nodes; i++)
        if (k->nodes[i] == id) return true;
    return false;
}

/* The invariants of any partition of g for targets t. */
static void check_partition(const tg_graph *g, const targets *t, const tg_partition *p,
                            const tg_fusion_limits *lim) {
    int32_t ids[256], ops[64];
    for (int i = 0; i < t->n; i++) ids[i] = t->t[i].id;
    for (int i = 0; i < t->n_ops; i++) ops[i] = t->ops[i].id;
    bool *needed = tg_needed_nodes(g, t->n, ids, t->n_ops, ops);
    int members = 0;
    for (int k = 0; k < p->n_kernels; k++) {
        const tg_part_kernel *kr = &p->kernels[k];
        assert_true(kr->n_nodes > 0);
        if (kr->n_nodes > 1) {
            assert_true(kr->n_inputs <= lim->max_inputs);
            assert_true(kr->n_outputs <= lim->max_outputs);
        }
        assert_true(is_member(kr, kr->root));
        for (int i = 0; i < kr->n_nodes; i++) {
            int32_t m = kr->nodes[i];
            if (i) assert_true(m > kr->nodes[i - 1]);
            assert_int_equal(p->kernel_of[m], k);
            members++;
            /* every input is a member or a listed input made earlier */
            for (int j = 0; j < g->nodes[m].n_inputs; j++) {
                int32_t x = g->nodes[m].inputs[j];
                if (is_member(kr, x)) continue;
                bool listed = false;
                for (int q = 0; q < kr->n_inputs; q++) listed = listed || kr->inputs[q] == x;
                assert_true(listed);
                while (tg_node_is_alias(&g->nodes[x])) x = g->nodes[x].inputs[0];
                if (tg_ops[g->nodes[x].op].klass != TG_CLASS_SOURCE) {
                    assert_true(p->kernel_of[x] >= 0 && p->kernel_of[x] < k);
                    /* ... and an output of its kernel */
                    const tg_part_kernel *pk = &p->kernels[p->kernel_of[x]];
                    bool out = false;
                    for (int q = 0; q < pk->n_outputs; q++) out = out || pk->outputs[q] == x;
                    assert_true(out);
                }
            }
        }
        for (int q = 0; q < kr->n_outputs; q++) assert_true(is_member(kr, kr->outputs[q]));
    }
    /* every needed node that computes something is in exactly one kernel */
    int computing = 0;
    for (int id = 0; id < g->n_nodes; id++) {
        const tg_node *n = &g->nodes[id];
        bool counts = needed[id] && tg_ops[n->op].klass != TG_CLASS_SOURCE && !tg_node_is_alias(n);
        computing += counts;
        assert_int_equal(p->kernel_of[id] >= 0, counts);
    }
    assert_int_equal(members, computing);
    assert_int_equal(p->unfused, computing);
    for (int i = 0; i < t->n; i++) {
        int32_t x = t->t[i].id;
        if (p->kernel_of[x] < 0) continue;
        const tg_part_kernel *kr = &p->kernels[p->kernel_of[x]];
        bool out = false;
        for (int q = 0; q < kr->n_outputs; q++) out = out || kr->outputs[q] == x;
        assert_true(out);
    }
    free(needed);
}

static tg_partition *partition(const tg_graph *g, const targets *t, const tg_fusion_limits *lim) {
    int32_t ids[256], ops[64];
    for (int i = 0; i < t->n; i++) ids[i] = t->t[i].id;
    for (int i = 0; i < t->n_ops; i++) ops[i] = t->ops[i].id;
    tg_partition *p = NULL;
    assert_int_equal(tg_partition_graph(g, t->n, ids, t->n_ops, ops, lim, &p), TG_OK);
    check_partition(g, t, p, lim);
    return p;
}

static void assert_kernels(const tg_graph *g, const tg_partition *p, int n, const char **expected) {
    char buf[256];
    for (int k = 0; k < p->n_kernels; k++) {
        kernel_ops(g, &p->kernels[k], buf, sizeof buf);
        fprintf(stderr, "  kernel %d: %s\n", k, buf);
    }
    assert_int_equal(p->n_kernels, n);
    for (int k = 0; k < n; k++) {
        kernel_ops(g, &p->kernels[k], buf, sizeof buf);
        assert_string_equal(buf, expected[k]);
    }
}

static tg_tensor var(tg_graph *g, const char *name, int64_t a, int64_t b) {
    int64_t s[] = {a, b};
    return tg_variable(g, name, TG_F32, b ? 2 : 1, b ? s : &s[0], true);
}

/* layer_norm -> matmul + bias -> gelu -> matmul + bias -> residual add ->
 * scores (matmul * scale + mask) -> softmax -> matmul -> (o - x)^2 ->
 * mean + eps -> rsqrt -> (o - x) * rsqrt */
static tg_graph *transformer_block(void) {
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {8, 16}, ms[] = {8, 8};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor mask = tg_placeholder(g, "mask", TG_F32, 2, ms);
    tg_tensor h = tg_layer_norm(g, x, var(g, "ln.w", 16, 0), var(g, "ln.b", 16, 0), 1e-5);
    tg_tensor a =
        tg_add(g, tg_matmul(g, h, var(g, "fc1.w", 16, 32), false, false), var(g, "fc1.b", 32, 0));
    tg_tensor m = tg_add(g, tg_matmul(g, tg_gelu(g, a), var(g, "fc2.w", 32, 16), false, false),
                         var(g, "fc2.b", 16, 0));
    tg_tensor r = tg_add(g, x, m);
    tg_tensor s = tg_matmul(g, r, r, false, true);
    s = tg_add(g, tg_mul(g, s, tg_scalar(g, TG_F32, 0.25)), mask);
    tg_tensor p = tg_softmax(g, s, -1);
    tg_tensor o = tg_matmul(g, p, r, false, false);
    tg_tensor d = tg_sub(g, o, x);
    int ax[] = {1};
    tg_tensor ms2 = tg_mean(g, tg_square(g, d), 1, ax, true);
    tg_tensor rs = tg_rsqrt(g, tg_add(g, ms2, tg_scalar(g, TG_F32, 1e-5)));
    tg_tensor out = tg_mul(g, d, rs);
    tg_tensor_set_name(g, out, "out");
    assert_int_equal(tg_graph_status(g), TG_OK);
    return g;
}

static void test_transformer_block(void **state) {
    (void)state;
    tg_graph *g = transformer_block();
    targets t;
    default_targets(g, &t);
    assert_int_equal(t.n, 1);
    tg_partition *p = partition(g, &t, &default_limits);
    const char *expected[] = {
        "layer_norm", "matmul+add+gelu",   "matmul+add+add", "matmul+mul+add",
        "softmax",    "matmul+sub+square", "mean+add+rsqrt", "mul",
    };
    assert_kernels(g, p, 8, expected);
    assert_int_equal(p->unfused, 18);
    /* kinds, roots, inputs and outputs of two kernels */
    const tg_part_kernel *k1 = &p->kernels[1];
    assert_int_equal(k1->kind, TG_CLASS_MATMUL);
    assert_int_equal(g->nodes[k1->root].op, TG_OP_MATMUL);
    assert_int_equal(k1->n_inputs, 3); /* h, fc1.w, fc1.b */
    assert_int_equal(k1->n_outputs, 1);
    assert_int_equal(g->nodes[k1->outputs[0]].op, TG_OP_GELU);
    const tg_part_kernel *k5 = &p->kernels[5];
    /* o - x is read by the last kernel too: an output besides square */
    assert_int_equal(k5->n_outputs, 2);
    assert_int_equal(g->nodes[k5->outputs[0]].op, TG_OP_SUB);
    assert_int_equal(g->nodes[k5->outputs[1]].op, TG_OP_SQUARE);
    assert_int_equal(p->kernels[6].kind, TG_CLASS_REDUCTION);
    assert_int_equal(p->kernels[4].kind, TG_CLASS_OPAQUE);
    assert_int_equal(p->kernels[7].kind, TG_CLASS_ELEMENTWISE);
    tg_partition_free(p);

    /* the same through the manager: stats, and equal values with passes
     * on and off */
    targets t_opt;
    tg_pass_stats st;
    tg_graph *opt = optimize(g, NULL, &t, &t_opt, &st);
    assert_int_equal(st.dispatches_input, 18);
    assert_int_equal(st.dispatches_unfused, 18);
    assert_int_equal(st.dispatches_fused, 8);
    assert_int_equal(st.kernels_matmul, 4);
    assert_int_equal(st.kernels_opaque, 2);
    assert_int_equal(st.kernels_reduction, 1);
    assert_int_equal(st.kernels_elementwise, 1);
    /* 18 f32 results: [8,16] x 8, [8,32] x 3, [8,8] x 4, [8,1] x 3 */
    assert_int_equal(st.intermediate_bytes, 4 * (8 * 128 + 3 * 256 + 4 * 64 + 3 * 8));
    assert_same_results(g, &t, opt, &t_opt, 5);
    tg_graph_free(opt);
    tg_graph_free(g);
}

/* Limits: with at most 2 inputs per kernel, bias adds that would bring a
 * third input stay out of the matmul kernels. */
static void test_input_limit(void **state) {
    (void)state;
    tg_graph *g = transformer_block();
    targets t;
    default_targets(g, &t);
    tg_fusion_limits lim = {2, 16, 0, false};
    tg_partition *p = partition(g, &t, &lim);
    assert_true(p->n_kernels > 8);
    for (int k = 0; k < p->n_kernels; k++) {
        const tg_part_kernel *kr = &p->kernels[k];
        if (kr->n_nodes > 1) assert_true(kr->n_inputs <= 2);
    }
    tg_partition_free(p);
    tg_graph_free(g);
}

/* Prologues: elementwise ops used only by a reduction join it; movement
 * ops, an escaping op, and whatever feeds an opaque op (softmax reads its
 * input from memory: the generators take no prologue there) do not. The
 * permute joins exp as a remapped read (an elementwise chain), and the
 * chain, holding a movement op, stays out of the sum. */
static void test_prologues(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {4, 6};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor sm = tg_softmax(g, tg_mul(g, x, tg_scalar(g, TG_F32, 0.5)), 1);
    int perm[] = {1, 0}, ax[] = {1};
    tg_tensor red = tg_sum(g, tg_exp(g, tg_permute(g, x, 2, perm)), 1, ax, false);
    tg_tensor shared = tg_tanh(g, x); /* used by softmax and a target: no prologue */
    tg_tensor sm2 = tg_softmax(g, shared, 0);
    tg_tensor other = tg_neg(g, shared);
    targets t = {.n = 4, .t = {sm, red, sm2, other}};
    tg_partition *p = partition(g, &t, &default_limits);
    const char *expected[] = {"mul", "softmax", "permute+exp", "sum", "tanh+neg", "softmax"};
    assert_kernels(g, p, 6, expected);
    tg_partition_free(p);
    tg_graph_free(g);
}

/* A bias gradient: g = a * b read by a matmul and summed over its rows
 * is one reduction kernel storing g too (its shape is the sum's input);
 * an escaping member of another shape (exp of a broadcast) is not taken.
 * Sibling slices of one node (layer_norm_grad_wb's two rows) with one
 * element count share a movement kernel; a permute of another count
 * stays alone. The fused IR shows both. */
static void test_multi_output_and_siblings(void **state) {
    (void)state;
    const char *src = "# tg ir v1\n"
                      "%a = placeholder \"a\" : f32[4,3]\n"
                      "%b = placeholder \"b\" : f32[4,3]\n"
                      "%w = placeholder \"w\" : f32[3,2]\n"
                      "%g = mul %a, %b : f32[4,3]\n"
                      "%mm = matmul %g, %w : f32[4,2]\n"
                      "%s = sum %g {axes=[0]} : f32[3]\n"
                      "%c = placeholder \"c\" : f32[3]\n"
                      "%e = exp %c : f32[3]\n"
                      "%f = mul %e, %a : f32[4,3]\n"
                      "%m = max %f {axes=[1]} : f32[4]\n"
                      "%r = slice %a {begin=[0,0], end=[1,3], step=[1,1]} : f32[1,3]\n"
                      "%q = slice %a {begin=[2,0], end=[3,3], step=[1,1]} : f32[1,3]\n"
                      "%p = permute %a {perm=[1,0]} : f32[3,4]\n";
    tg_graph *g = tg_graph_parse(src, strlen(src), "siblings.tgir");
    assert_non_null(g);
    targets t = {.n = 8, .t = {{4}, {5}, {7}, {8}, {9}, {10}, {11}, {12}}};
    tg_partition *p = partition(g, &t, &default_limits);
    char *text = tg_partition_to_text(g, p);
    assert_non_null(text);
    assert_string_equal(text, "# tg ir v1\n"
                              "# fused: 6 kernels, 9 dispatches unfused\n"
                              "%a = placeholder \"a\" : f32[4,3]\n"
                              "%b = placeholder \"b\" : f32[4,3]\n"
                              "%w = placeholder \"w\" : f32[3,2]\n"
                              "%c = placeholder \"c\" : f32[3]\n"
                              "# kernel 0 reduction: mul + sum <- %a, %b -> %g, %s\n"
                              "  %g = mul %a, %b : f32[4,3]\n"
                              "  %s = sum %g {axes=[0]} : f32[3]\n"
                              "# kernel 1 matmul: matmul <- %w, %g -> %mm\n"
                              "  %mm = matmul %g, %w : f32[4,2]\n"
                              "# kernel 2 elementwise: exp <- %c -> %e\n"
                              "  %e = exp %c : f32[3]\n"
                              "# kernel 3 reduction: mul + max <- %a, %e -> %f, %m\n"
                              "  %f = mul %e, %a : f32[4,3]\n"
                              "  %m = max %f {axes=[1]} : f32[4]\n"
                              "# kernel 4 movement: slice + slice <- %a -> %r, %q\n"
                              "  %r = slice %a {begin=[0,0], end=[1,3], step=[1,1]} : f32[1,3]\n"
                              "  %q = slice %a {begin=[2,0], end=[3,3], step=[1,1]} : f32[1,3]\n"
                              "# kernel 5 movement: permute <- %a -> %p\n"
                              "  %p = permute %a {perm=[1,0]} : f32[3,4]\n");
    check_partition(g, &t, p, &default_limits);
    free(text);
    tg_partition_free(p);
    tg_graph_free(g);
}

/* Alike copies of different nodes (head permutes of q, k, v) share a
 * kernel; a permute of one of their results (it depends on the kernel)
 * and a permute with another permutation stay apart. */
static void test_alike_copies(void **state) {
    (void)state;
    const char *src = "# tg ir v1\n"
                      "%a = placeholder \"a\" : f32[2,3,4]\n"
                      "%b = placeholder \"b\" : f32[2,3,4]\n"
                      "%c = placeholder \"c\" : f32[2,3,4]\n"
                      "%qa = exp %a : f32[2,3,4]\n"
                      "%pa = permute %qa {perm=[1,0,2]} : f32[3,2,4]\n"
                      "%qb = exp %b : f32[2,3,4]\n"
                      "%pb = permute %qb {perm=[1,0,2]} : f32[3,2,4]\n"
                      "%pc = permute %c {perm=[0,2,1]} : f32[2,4,3]\n"
                      "%pp = permute %pa {perm=[1,0,2]} : f32[2,3,4]\n";
    tg_graph *g = tg_graph_parse(src, strlen(src), "alike.tgir");
    assert_non_null(g);
    targets t = {.n = 4, .t = {{4}, {6}, {7}, {8}}};
    tg_partition *p = partition(g, &t, &default_limits);
    char *text = tg_partition_to_text(g, p);
    assert_non_null(text);
    assert_string_equal(text, "# tg ir v1\n"
                              "# fused: 5 kernels, 6 dispatches unfused\n"
                              "%a = placeholder \"a\" : f32[2,3,4]\n"
                              "%b = placeholder \"b\" : f32[2,3,4]\n"
                              "%c = placeholder \"c\" : f32[2,3,4]\n"
                              "# kernel 0 elementwise: exp <- %a -> %qa\n"
                              "  %qa = exp %a : f32[2,3,4]\n"
                              "# kernel 1 elementwise: exp <- %b -> %qb\n"
                              "  %qb = exp %b : f32[2,3,4]\n"
                              "# kernel 2 movement: permute + permute <- %qa, %qb -> %pa, %pb\n"
                              "  %pa = permute %qa {perm=[1,0,2]} : f32[3,2,4]\n"
                              "  %pb = permute %qb {perm=[1,0,2]} : f32[3,2,4]\n"
                              "# kernel 3 movement: permute <- %c -> %pc\n"
                              "  %pc = permute %c {perm=[0,2,1]} : f32[2,4,3]\n"
                              "# kernel 4 movement: permute <- %pa -> %pp\n"
                              "  %pp = permute %pa {perm=[1,0,2]} : f32[2,3,4]\n");
    check_partition(g, &t, p, &default_limits);
    free(text);
    tg_partition_free(p);
    tg_graph_free(g);
}

/* Aliases (reshape) are views: no dispatch, and kernels do not fuse
 * through them. A merge that would make the kernels cyclic is refused:
 * c = a + matmul(a, w2) cannot put a and c in one kernel (w2: with w, the
 * two products would be sibling matmuls in one kernel). */
static void test_aliases_and_cycles(void **state) {
    (void)state;
    tg_graph *g = tg_graph_new();
    int64_t xs[] = {4, 4}, flat[] = {16}, back[] = {4, 4};
    tg_tensor x = tg_placeholder(g, "x", TG_F32, 2, xs);
    tg_tensor w = var(g, "w", 4, 4), w2 = var(g, "w2", 4, 4);
    tg_tensor mm = tg_matmul(g, x, w, false, false);
    tg_tensor r = tg_reshape(g, tg_reshape(g, mm, 1, flat), 2, back);
    tg_tensor y = tg_relu(g, r);
    tg_tensor a = tg_exp(g, x);
    tg_tensor c = tg_add(g, a, tg_matmul(g, a, w2, false, false));
    targets t = {.n = 2, .t = {y, c}};
    tg_partition *p = partition(g, &t, &default_limits);
    const char *expected[] = {"matmul", "relu", "exp", "matmul+add"};
    assert_kernels(g, p, 4, expected);
    assert_int_equal(p->unfused, 5);
    /* relu reads the reshape (an alias of the matmul's result) */
    assert_int_equal(p->kernels[1].n_inputs, 1);
    assert_int_equal(g->nodes[p->kernels[1].inputs[0]].op, TG_OP_RESHAPE);
    tg_partition_free(p);
    tg_graph_free(g);
}

/* A state op is its own kernel; the fused IR prints kernels in order and
 * parses back as plain IR. */
static void test_fused_ir(void **state) {
    (void)state;
    const char *src = "# tg ir v1\n"
                      "%x = placeholder \"x\" : f32[2,3]\n"
                      "%w = variable \"w\" : f32[2,3]\n"
                      "%a = add %x, %w : f32[2,3]\n"
                      "%b = exp %a : f32[2,3]\n"
                      "%upd = assign %w, %b : f32[2,3]\n"
                      "%s = sum %b {axes=[1]} : f32[2]\n"
                      "%dead = neg %x : f32[2,3]\n";
    tg_graph *g = tg_graph_parse(src, strlen(src), "fused.tgir");
    assert_non_null(g);
    targets t = {.n = 1, .t = {{5}}, .n_ops = 1, .ops = {{4}}};
    tg_partition *p = partition(g, &t, &default_limits);
    char *text = tg_partition_to_text(g, p);
    assert_non_null(text);
    assert_string_equal(text, "# tg ir v1\n"
                              "# fused: 2 kernels, 4 dispatches unfused\n"
                              "%x = placeholder \"x\" : f32[2,3]\n"
                              "%w = variable \"w\" : f32[2,3]\n"
                              "# kernel 0 reduction: add + exp + sum <- %x, %w -> %b, %s\n"
                              "  %a = add %x, %w : f32[2,3]\n"
                              "  %b = exp %a : f32[2,3]\n"
                              "  %s = sum %b {axes=[1]} : f32[2]\n"
                              "# kernel 1 state: assign <- %w, %b -> %upd\n"
                              "  %upd = assign %w, %b : f32[2,3]\n"
                              "# not needed by the targets\n"
                              "%dead = neg %x : f32[2,3]\n");
    tg_graph *back = tg_graph_parse(text, strlen(text), "fused-out.tgir");
    assert_non_null(back);
    assert_int_equal(back->n_nodes, g->n_nodes);
    tg_graph_free(back);
    free(text);
    tg_partition_free(p);
    tg_graph_free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transformer_block), cmocka_unit_test(test_input_limit),
        cmocka_unit_test(test_prologues),         cmocka_unit_test(test_aliases_and_cycles),
        cmocka_unit_test(test_fused_ir),          cmocka_unit_test(test_multi_output_and_siblings),
        cmocka_unit_test(test_alike_copies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
