/* test_vk_ops_data.c — reductions (sum, mean, max, min, argmax), data
 * movement (reshape, permute, broadcast_to, slice, concat, pad, gather,
 * scatter_add) and the state ops (assign, slice_update), each as a one-op
 * graph through tg_compile / tg_run against the interpreter
 * (tests/vk_ops_harness.h), in f32, f16 and integer dtypes.
 *
 * Tolerances (|dev - ref| <= atol + rtol * |ref|):
 *  - movement, gather, argmax, max/min and the state ops: 0 — values are
 *    copied, never computed.
 *  - sum/mean f32: atol 2e-7 * (reduced count) — f32 accumulation in
 *    another order than the interpreter's f64 errs by about n * 2^-24 *
 *    sum|x| at worst, and the inputs are in [-1, 1]. f16 adds the half
 *    rounding of the output: rtol 2^-10, atol + 1e-3.
 *  - scatter_add: repeated indices add a few terms in index order, as the
 *    interpreter does, rounded once more: f32 rtol 1e-6, atol 1e-5; f16
 *    rtol 2^-10, atol 1e-2 (values up to 9 * a few).
 */
#include "vk_ops_harness.h"

/* Sum-type tolerance: f32 accumulation in another order than the
 * interpreter's f64 errs by about n * 2^-24 * sum|x| at worst; the inputs
 * here are in [-1, 1], so atol = 2e-7 * (reduced count) + f16 output. */
static void test_reductions(void **state) {
    (void)state;
    static const struct {
        int rank;
        int64_t shape[4];
        int n_axes;
        int axes[3];
        bool keep;
    } cases[] = {
        {1, {1}, 0, {0}, false},         {2, {7, 129}, 1, {1}, false},
        {2, {7, 129}, 1, {0}, true},     {3, {3, 1, 67}, 2, {0, 2}, false},
        {3, {5, 300, 3}, 1, {-2}, true}, {4, {2, 3, 4, 5}, 2, {1, 3}, false},
        {2, {2, 1000}, 0, {0}, false},
    };
    typedef tg_tensor (*red_fn)(tg_graph *, tg_tensor, int, const int *, bool);
    red_fn fs[] = {tg_sum, tg_mean, tg_max, tg_min};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int64_t n_red = 1;
        for (int d = 0; d < cases[c].rank; d++) {
            bool r = cases[c].n_axes == 0;
            for (int a = 0; a < cases[c].n_axes; a++)
                r |= (cases[c].axes[a] + cases[c].rank) % cases[c].rank == d;
            if (r) n_red *= cases[c].shape[d];
        }
        for (int f = 0; f < 4; f++) {
            tg_dtype dts[] = {TG_F32, TG_F16, TG_I32};
            for (int d = 0; d < 3; d++) {
                if (dts[d] == TG_F16 && !have_f16()) continue;
                if (dts[d] == TG_I32 && fs[f] == tg_mean) continue;
                tg_graph *g = tg_graph_new();
                tg_tensor x = ph(g, dts[d], cases[c].rank, cases[c].shape, -1, 1);
                if (dts[d] == TG_I32) tg_array_set(last_feed(), 0, 0); /* keep it simple */
                tg_tensor y = fs[f](g, x, cases[c].n_axes, cases[c].axes, cases[c].keep);
                double atol = (fs[f] == tg_sum ? 2e-7 * (double)n_red : 2e-7);
                bool h = dts[d] == TG_F16;
                check(g, y, h ? 1.0 / 1024 : 0, h ? atol + 1e-3 : atol);
            }
        }
        /* argmax along the first listed axis */
        for (int d = 0; d < 2; d++) {
            tg_graph *g = tg_graph_new();
            tg_dtype dt = d ? TG_I32 : TG_F32;
            tg_tensor x = ph(g, dt, cases[c].rank, cases[c].shape, -3, 3); /* ints: many ties */
            check(g, tg_argmax(g, x, cases[c].axes[0], cases[c].keep), 0, 0);
        }
    }
    /* NaN propagates through max and min */
    tg_graph *g = tg_graph_new();
    int64_t s[] = {3, 200};
    tg_tensor x = ph(g, TG_F32, 2, s, -1, 1);
    tg_array_set(last_feed(), 250, NAN);
    int ax[] = {1};
    check(g, tg_max(g, x, 1, ax, false), 0, 0);
    g = tg_graph_new();
    x = ph(g, TG_F32, 2, s, -1, 1);
    tg_array_set(last_feed(), 5, NAN);
    check(g, tg_min(g, x, 1, ax, false), 0, 0);
}

static void test_movement(void **state) {
    (void)state;
    tg_dtype dts[] = {TG_F32, TG_F16, TG_I32, TG_U8};
    for (int d = 0; d < 4; d++) {
        tg_dtype dt = dts[d];
        if (dt == TG_F16 && !have_f16()) continue;
        double lo = dt == TG_U8 ? 0 : -50, hi = 50;
        int64_t s3[] = {3, 5, 67}, s1[] = {1}, s2[] = {1, 129};
        tg_graph *g;
        /* reshape */
        int64_t r1[] = {15, -1}, r2[] = {1, 1}, r3[] = {129};
        g = tg_graph_new();
        check(g, tg_reshape(g, ph(g, dt, 3, s3, lo, hi), 2, r1), 0, 0);
        g = tg_graph_new();
        check(g, tg_reshape(g, ph(g, dt, 1, s1, lo, hi), 2, r2), 0, 0);
        g = tg_graph_new();
        check(g, tg_reshape(g, ph(g, dt, 2, s2, lo, hi), 1, r3), 0, 0);
        /* permute */
        int p1[] = {2, 0, 1}, p2[] = {1, 0}, p3[] = {0, 2, 1};
        int64_t s4[] = {2, 1, 33};
        g = tg_graph_new();
        check(g, tg_permute(g, ph(g, dt, 3, s3, lo, hi), 3, p1), 0, 0);
        g = tg_graph_new();
        check(g, tg_permute(g, ph(g, dt, 2, s2, lo, hi), 2, p2), 0, 0);
        g = tg_graph_new();
        check(g, tg_permute(g, ph(g, dt, 3, s4, lo, hi), 3, p3), 0, 0);
        /* broadcast_to */
        int64_t b1[] = {4, 3, 5, 67}, b2[] = {7, 129}, b3[] = {2, 5, 1};
        int64_t s5[] = {5, 1};
        g = tg_graph_new();
        check(g, tg_broadcast_to(g, ph(g, dt, 3, s3, lo, hi), 4, b1), 0, 0);
        g = tg_graph_new();
        check(g, tg_broadcast_to(g, ph(g, dt, 2, s2, lo, hi), 2, b2), 0, 0);
        g = tg_graph_new();
        check(g, tg_broadcast_to(g, ph(g, dt, 2, s5, lo, hi), 3, b3), 0, 0);
        /* slice: negative begin, steps, clamped end, empty-ish */
        int64_t bg[] = {1, -4, 3}, en[] = {3, INT64_MAX, 60}, st[] = {1, 2, 7};
        int64_t bg2[] = {0, 5}, en2[] = {1, 1000}, st2[] = {1, 1};
        int64_t bg3[] = {0}, en3[] = {1}, st3[] = {3};
        g = tg_graph_new();
        check(g, tg_slice(g, ph(g, dt, 3, s3, lo, hi), bg, en, st), 0, 0);
        g = tg_graph_new();
        check(g, tg_slice(g, ph(g, dt, 2, s2, lo, hi), bg2, en2, st2), 0, 0);
        g = tg_graph_new();
        check(g, tg_slice(g, ph(g, dt, 1, s1, lo, hi), bg3, en3, st3), 0, 0);
        /* concat of 1, 2 and 3 inputs on different axes */
        int64_t c1[] = {3, 2, 67}, c2[] = {3, 1, 67};
        g = tg_graph_new();
        tg_tensor xs[3] = {ph(g, dt, 3, s3, lo, hi), ph(g, dt, 3, c1, lo, hi),
                           ph(g, dt, 3, c2, lo, hi)};
        check(g, tg_concat(g, 3, xs, 1), 0, 0);
        g = tg_graph_new();
        xs[0] = ph(g, dt, 2, s2, lo, hi);
        xs[1] = ph(g, dt, 2, s2, lo, hi);
        check(g, tg_concat(g, 2, xs, -1), 0, 0);
        g = tg_graph_new();
        xs[0] = ph(g, dt, 1, s1, lo, hi);
        check(g, tg_concat(g, 1, xs, 0), 0, 0);
        /* pad */
        int64_t lo1[] = {1, 0, 2}, hi1[] = {0, 3, 1}, lo2[] = {0, 0}, hi2[] = {2, 130};
        int64_t lo3[] = {5}, hi3[] = {0};
        g = tg_graph_new();
        check(g, tg_pad(g, ph(g, dt, 3, s3, lo, hi), lo1, hi1, 7), 0, 0);
        g = tg_graph_new();
        check(g, tg_pad(g, ph(g, dt, 2, s2, lo, hi), lo2, hi2, -2.5), 0, 0);
        g = tg_graph_new();
        check(g, tg_pad(g, ph(g, dt, 1, s1, lo, hi), lo3, hi3, 0), 0, 0);
    }
}

static void test_gather_scatter(void **state) {
    (void)state;
    static const struct {
        int rx, ri, axis;
        int64_t x[3], idx[2];
    } cases[] = {
        {2, 1, 0, {10, 67}, {13}},      /* embedding lookup */
        {3, 2, 1, {2, 7, 3}, {4, 5}},   /* middle axis, 2-d indices */
        {1, 1, 0, {1}, {3}},            /* size-1 table */
        {2, 2, -1, {3, 129}, {1, 130}}, /* last axis */
        {3, 2, 1, {2, 7, 8}, {4, 5}},   /* rows of whole vec4s (CPU: by texels) */
        {2, 1, 0, {96, 64}, {2501}},    /* an embedding gradient (CPU: vec4 rows in
                                           registers, three index chunks) */
    };
    for (int c = 0; c < (int)(sizeof cases / sizeof cases[0]); c++) {
        tg_dtype dts[] = {TG_F32, TG_F16, TG_I32};
        for (int d = 0; d < 3; d++) {
            if (dts[d] == TG_F16 && !have_f16()) continue;
            int64_t dim = cases[c].x[(cases[c].axis + cases[c].rx) % cases[c].rx];
            tg_graph *g = tg_graph_new();
            tg_tensor x = ph(g, dts[d], cases[c].rx, cases[c].x, -9, 9);
            /* a few out-of-range indices: zeros (gather), dropped (scatter) */
            tg_tensor idx = ph(g, TG_I32, cases[c].ri, cases[c].idx, -1, (double)dim);
            tg_tensor y = tg_gather(g, x, idx, cases[c].axis);
            check(g, y, 0, 0);

            g = tg_graph_new();
            tg_tensor t = ph(g, dts[d], cases[c].rx, cases[c].x, -9, 9);
            idx = ph(g, TG_I32, cases[c].ri, cases[c].idx, -1, (double)dim);
            int64_t us[TG_MAX_RANK];
            int ax = (cases[c].axis + cases[c].rx) % cases[c].rx, ur = 0;
            for (int i = 0; i < ax; i++) us[ur++] = cases[c].x[i];
            for (int i = 0; i < cases[c].ri; i++) us[ur++] = cases[c].idx[i];
            for (int i = ax + 1; i < cases[c].rx; i++) us[ur++] = cases[c].x[i];
            tg_tensor u = ph(g, dts[d], ur, us, -9, 9);
            /* repeated indices add in index order: f32 sums of a few terms
             * in the same order as the interpreter, rounded once more */
            bool h = dts[d] == TG_F16;
            check(g, tg_scatter_add(g, t, idx, u, cases[c].axis), h ? 1.0 / 1024 : 1e-6,
                  h ? 1e-2 : 1e-5);
        }
    }
    /* an embedding gradient's size: 20000 indices (about 7 per row, a few
     * out of range) into a [3000, 96] table, several row blocks */
    tg_graph *g = tg_graph_new();
    tg_tensor t = ph(g, TG_F32, 2, (int64_t[]){3000, 96}, -9, 9);
    tg_tensor idx = ph(g, TG_I32, 1, (int64_t[]){20000}, -1, 3000);
    tg_tensor u = ph(g, TG_F32, 2, (int64_t[]){20000, 96}, -9, 9);
    check(g, tg_scatter_add(g, t, idx, u, 0), 1e-6, 1e-5);
}

/* Runs the state op y (writing variable "v") on the device and on the
 * interpreter, each with its own store starting at `init`; the results
 * and the variable's new value must be equal. The interpreter gets
 * `interp_feeds` instead of the feeds when not NULL. */
static void check_state(const tg_graph *g, tg_tensor y, const tg_array *init,
                        const tg_feed *interp_feeds) {
    tg_store *si = tg_store_new(), *sd = tg_store_new();
    OK(tg_store_set(si, "v", init));
    OK(tg_store_set(sd, "v", init));
    tg_array want = {0}, got = {0}, vi = {0}, vd = {0};
    OK(tg_interpret(g, si, n_feeds, interp_feeds ? interp_feeds : feeds, 1, &y, &want, 0, NULL, 0));
    run_device(g, sd, y, &got);
    const char *op = tg_ops[g->nodes[y.id].op].name;
    compare(op, &got, &want, 0, 0);
    OK(tg_store_get(si, "v", &vi));
    OK(tg_store_get(sd, "v", &vd));
    compare(op, &vd, &vi, 0, 0);
    tg_array_free(&want);
    tg_array_free(&got);
    tg_array_free(&vi);
    tg_array_free(&vd);
    tg_store_free(si);
    tg_store_free(sd);
}

static void test_state(void **state) {
    (void)state;
    tg_dtype dts[] = {TG_F32, TG_F16, TG_I32};
    for (int d = 0; d < 3; d++) {
        if (dts[d] == TG_F16 && !have_f16()) continue;
        int64_t vs[3][3] = {{1}, {6, 67}, {2, 9, 5}}, us[3][3] = {{1}, {2, 67}, {1, 4, 5}};
        int ranks[3] = {1, 2, 3};
        for (int c = 0; c < 3; c++) {
            tg_array init;
            OK(tg_array_alloc(&init, dts[d], ranks[c], vs[c]));
            for (int64_t i = 0; i < tg_array_count(&init); i++) tg_array_set(&init, i, i % 7);

            /* assign: a copy of the value */
            tg_graph *g = tg_graph_new();
            tg_tensor v = tg_variable(g, "v", dts[d], ranks[c], vs[c], false);
            tg_tensor val = ph(g, dts[d], ranks[c], vs[c], -5, 5);
            check_state(g, tg_assign(g, v, val), &init, NULL);
            tg_graph_free(g);
            feeds_reset();

            /* slice_update at a run-time start in range */
            g = tg_graph_new();
            v = tg_variable(g, "v", dts[d], ranks[c], vs[c], false);
            tg_tensor up = ph(g, dts[d], ranks[c], us[c], -5, 5);
            int64_t rs[] = {ranks[c]};
            ph(g, TG_I32, 1, rs, 0, 0);
            for (int i = 0; i < ranks[c]; i++)
                tg_array_set(last_feed(), i, (double)(vs[c][i] - us[c][i]) * (i % 2 ? 1 : 0.5));
            tg_tensor su = tg_slice_update(g, v, up, feeds[1].tensor);
            check_state(g, su, &init, NULL);
            /* a start past the end is clamped so the slab fits: the same
             * result as the last in-range start on the interpreter */
            for (int i = 0; i < ranks[c]; i++) tg_array_set(last_feed(), i, 1000);
            tg_array clamped;
            OK(tg_array_alloc(&clamped, TG_I32, 1, rs));
            for (int i = 0; i < ranks[c]; i++)
                tg_array_set(&clamped, i, (double)(vs[c][i] - us[c][i]));
            tg_feed f2[2] = {feeds[0], {feeds[1].tensor, &clamped}};
            check_state(g, su, &init, f2);
            tg_array_free(&clamped);
            tg_array_free(&init);
            tg_graph_free(g);
            feeds_reset();
        }
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_reductions, reset_feeds),
        cmocka_unit_test_setup(test_movement, reset_feeds),
        cmocka_unit_test_setup(test_gather_scatter, reset_feeds),
        cmocka_unit_test_setup(test_state, reset_feeds),
        cmocka_unit_test_setup(test_validation_clean, reset_feeds),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
