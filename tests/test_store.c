/* test_store.c — the variable store: set/get copies, replacement, order,
 * seeded initialisation, backend hooks and error cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <math.h>
#include <string.h>

#include "graph/graph_internal.h"
#include "tg.h"

static tg_array f32_array(int rank, const int64_t *shape, float *data) {
    tg_array a = {.dtype = TG_F32, .rank = rank, .data = data};
    memcpy(a.shape, shape, (size_t)rank * sizeof *shape);
    return a;
}

static void test_set_get_copies(void **state) {
    (void)state;
    tg_store *s = tg_store_new();
    assert_non_null(s);
    float data[] = {1, 2, 3, 4, 5, 6};
    int64_t shape[] = {2, 3};
    tg_array a = f32_array(2, shape, data);
    assert_int_equal(tg_store_set(s, "w", &a), TG_OK);
    data[0] = 100; /* the store holds its own copy */

    tg_array out = {0};
    assert_int_equal(tg_store_get(s, "w", &out), TG_OK);
    assert_int_equal(out.dtype, TG_F32);
    assert_int_equal(out.rank, 2);
    assert_int_equal(out.shape[0], 2);
    assert_int_equal(out.shape[1], 3);
    const float *v = out.data;
    assert_true(v[0] == 1.0f && v[5] == 6.0f);
    ((float *)out.data)[1] = -1; /* and get hands out a copy */
    tg_array again = {0};
    assert_int_equal(tg_store_get(s, "w", &again), TG_OK);
    assert_true(((float *)again.data)[1] == 2.0f);
    tg_array_free(&out);
    tg_array_free(&again);
    tg_store_free(s);
}

static void test_replace_changes_dtype_and_shape(void **state) {
    (void)state;
    tg_store *s = tg_store_new();
    float data[] = {1, 2, 3};
    int64_t shape3[] = {3};
    tg_array a = f32_array(1, shape3, data);
    assert_int_equal(tg_store_set(s, "v", &a), TG_OK);

    int32_t idata[] = {7, 8, 9, 10};
    tg_array b = {.dtype = TG_I32, .rank = 2, .shape = {2, 2}, .data = idata};
    assert_int_equal(tg_store_set(s, "v", &b), TG_OK);
    assert_int_equal(tg_store_count(s), 1);

    tg_array out = {0};
    assert_int_equal(tg_store_get(s, "v", &out), TG_OK);
    assert_int_equal(out.dtype, TG_I32);
    assert_int_equal(out.rank, 2);
    assert_int_equal(((int32_t *)out.data)[3], 10);
    tg_array_free(&out);
    tg_store_free(s);
}

static void test_names_in_insertion_order(void **state) {
    (void)state;
    tg_store *s = tg_store_new();
    float x = 1;
    tg_array a = {.dtype = TG_F32, .rank = 0, .data = &x};
    const char *names[] = {"zeta", "alpha", "mid"};
    for (int i = 0; i < 3; i++) assert_int_equal(tg_store_set(s, names[i], &a), TG_OK);
    assert_int_equal(tg_store_set(s, "alpha", &a), TG_OK); /* replacing keeps the slot */
    assert_int_equal(tg_store_count(s), 3);
    for (int i = 0; i < 3; i++) assert_string_equal(tg_store_name(s, i), names[i]);
    assert_null(tg_store_name(s, 3));
    assert_null(tg_store_name(s, -1));
    assert_true(tg_store_has(s, "mid"));
    assert_false(tg_store_has(s, "nope"));
    assert_int_equal(tg_store_count(NULL), 0);
    tg_store_free(s);
}

static void test_errors(void **state) {
    (void)state;
    tg_store *s = tg_store_new();
    tg_array out = {0};
    assert_int_equal(tg_store_get(s, "missing", &out), TG_ERR_NOT_FOUND);
    assert_non_null(strstr(tg_last_error(), "missing"));
    assert_null(out.data);
    float x = 1;
    tg_array a = {.dtype = TG_F32, .rank = 0, .data = &x};
    assert_int_equal(tg_store_set(s, NULL, &a), TG_ERR_INVALID_ARGUMENT);
    assert_int_equal(tg_store_set(s, "", &a), TG_ERR_INVALID_ARGUMENT);
    assert_int_equal(tg_store_set(s, "x", NULL), TG_ERR_INVALID_ARGUMENT);
    tg_array bad = {.dtype = TG_F32, .rank = 9, .data = &x};
    assert_int_equal(tg_store_set(s, "x", &bad), TG_ERR_INVALID_ARGUMENT);
    assert_int_equal(tg_store_count(s), 0);
    tg_store_free(s);
    tg_store_free(NULL);
}

/* A graph with variables a f32[2,3], b i32[4] and c f32[5]. */
static tg_graph *three_variables(void) {
    tg_graph *g = tg_graph_new();
    int64_t sa[] = {2, 3}, sb[] = {4}, sc[] = {5};
    tg_variable(g, "a", TG_F32, 2, sa, true);
    tg_variable(g, "b", TG_I32, 1, sb, false);
    tg_variable(g, "c", TG_F32, 1, sc, true);
    assert_int_equal(tg_graph_status(g), TG_OK);
    return g;
}

static void test_init_missing_zeros_and_keeps_existing(void **state) {
    (void)state;
    tg_graph *g = three_variables();
    tg_store *s = tg_store_new();
    float cdata[] = {9, 9, 9, 9, 9};
    int64_t sc[] = {5};
    tg_array c = f32_array(1, sc, cdata);
    assert_int_equal(tg_store_set(s, "c", &c), TG_OK);
    assert_int_equal(tg_store_init_missing(s, g, 0, 1.0), TG_OK);
    assert_int_equal(tg_store_count(s), 3);

    tg_array a = {0}, b = {0}, c2 = {0};
    assert_int_equal(tg_store_get(s, "a", &a), TG_OK);
    assert_int_equal(tg_store_get(s, "b", &b), TG_OK);
    assert_int_equal(tg_store_get(s, "c", &c2), TG_OK);
    assert_int_equal(a.dtype, TG_F32);
    assert_int_equal(a.shape[1], 3);
    assert_int_equal(b.dtype, TG_I32);
    for (int i = 0; i < 6; i++) assert_true(((float *)a.data)[i] == 0.0f);
    for (int i = 0; i < 4; i++) assert_int_equal(((int32_t *)b.data)[i], 0);
    for (int i = 0; i < 5; i++) assert_true(((float *)c2.data)[i] == 9.0f);
    tg_array_free(&a);
    tg_array_free(&b);
    tg_array_free(&c2);
    tg_store_free(s);
    tg_graph_free(g);
}

static void get_floats(tg_store *s, const char *name, float *out, int n) {
    tg_array a = {0};
    assert_int_equal(tg_store_get(s, name, &a), TG_OK);
    assert_int_equal(tg_array_count(&a), n);
    memcpy(out, a.data, (size_t)n * sizeof(float));
    tg_array_free(&a);
}

static void test_init_missing_seeded_is_deterministic(void **state) {
    (void)state;
    tg_graph *g = three_variables();
    tg_store *s1 = tg_store_new(), *s2 = tg_store_new(), *s3 = tg_store_new();
    assert_int_equal(tg_store_init_missing(s1, g, 42, 0.5), TG_OK);
    assert_int_equal(tg_store_init_missing(s2, g, 42, 0.5), TG_OK);
    assert_int_equal(tg_store_init_missing(s3, g, 43, 0.5), TG_OK);
    float a1[6], a2[6], a3[6], c1[5];
    get_floats(s1, "a", a1, 6);
    get_floats(s2, "a", a2, 6);
    get_floats(s3, "a", a3, 6);
    get_floats(s1, "c", c1, 5);
    assert_memory_equal(a1, a2, sizeof a1);
    assert_memory_not_equal(a1, a3, sizeof a1);
    /* within [-scale, scale], not constant, and each variable its own stream */
    bool differ = false;
    for (int i = 0; i < 6; i++) {
        assert_true(a1[i] >= -0.5f && a1[i] <= 0.5f);
        if (a1[i] != a1[0]) differ = true;
    }
    assert_true(differ);
    assert_memory_not_equal(a1, c1, 5 * sizeof(float));
    /* i32 values are truncated uniform values: with scale 0.5 all zero */
    tg_array b = {0};
    assert_int_equal(tg_store_get(s1, "b", &b), TG_OK);
    for (int i = 0; i < 4; i++) assert_int_equal(((int32_t *)b.data)[i], 0);
    tg_array_free(&b);
    tg_store_free(s1);
    tg_store_free(s2);
    tg_store_free(s3);
    tg_graph_free(g);
}

/* A value depends on (seed, name) only, not on the other variables. */
static void test_init_missing_independent_of_others(void **state) {
    (void)state;
    tg_graph *g = three_variables();
    tg_graph *only_c = tg_graph_new();
    int64_t sc[] = {5};
    tg_variable(only_c, "c", TG_F32, 1, sc, true);
    tg_store *s1 = tg_store_new(), *s2 = tg_store_new();
    assert_int_equal(tg_store_init_missing(s1, g, 7, 1.0), TG_OK);
    assert_int_equal(tg_store_init_missing(s2, only_c, 7, 1.0), TG_OK);
    float c1[5], c2[5];
    get_floats(s1, "c", c1, 5);
    get_floats(s2, "c", c2, 5);
    assert_memory_equal(c1, c2, sizeof c1);
    tg_store_free(s1);
    tg_store_free(s2);
    tg_graph_free(g);
    tg_graph_free(only_c);
}

/* The builder refuses dynamic variables, so the node is edited directly:
 * the store must still refuse to invent a size, and add nothing. */
static void test_init_missing_dynamic_dim_fails(void **state) {
    (void)state;
    tg_graph *g = three_variables();
    int64_t sd[] = {3};
    tg_tensor d = tg_variable(g, "dyn", TG_F32, 1, sd, true);
    g->nodes[d.id].shape[0] = -1;
    tg_store *s = tg_store_new();
    assert_int_equal(tg_store_init_missing(s, g, 1, 1.0), TG_ERR_SHAPE);
    assert_non_null(strstr(tg_last_error(), "dyn"));
    assert_int_equal(tg_store_count(s), 0);
    assert_int_equal(tg_store_init_missing(NULL, g, 1, 1.0), TG_ERR_INVALID_ARGUMENT);
    tg_store_free(s);
    tg_graph_free(g);
}

/* ---- backend hooks ---- */

static int synced, released;

static tg_status fake_sync(tg_store *s, tg_store_entry *e) {
    (void)s;
    synced++;
    ((float *)e->value.data)[0] = 42; /* "download" a newer value */
    return TG_OK;
}

static void fake_release(tg_store *s, tg_store_entry *e) {
    (void)s;
    released++;
    e->device = NULL;
}

static void test_backend_hooks(void **state) {
    (void)state;
    static int device_token;
    synced = released = 0;
    tg_store *s = tg_store_new();
    s->sync_to_host = fake_sync;
    s->release_device = fake_release;
    float x = 1;
    tg_array a = {.dtype = TG_F32, .rank = 0, .data = &x};
    assert_int_equal(tg_store_set(s, "w", &a), TG_OK);
    assert_int_equal(released, 0); /* no device copy yet */

    tg_store_entry *e = tg_store_find(s, "w");
    assert_non_null(e);
    e->device = &device_token;
    e->host_stale = true;
    tg_array out = {0};
    assert_int_equal(tg_store_get(s, "w", &out), TG_OK);
    assert_int_equal(synced, 1);
    assert_true(((float *)out.data)[0] == 42.0f);
    assert_false(e->host_stale);
    tg_array_free(&out);
    assert_int_equal(tg_store_get(s, "w", &out), TG_OK); /* fresh now: no second sync */
    assert_int_equal(synced, 1);
    tg_array_free(&out);

    assert_int_equal(tg_store_set(s, "w", &a), TG_OK); /* replacing drops the mirror */
    assert_int_equal(released, 1);
    assert_null(tg_store_find(s, "w")->device);

    tg_store_find(s, "w")->device = &device_token;
    tg_store_free(s);
    assert_int_equal(released, 2);
}

static void test_stale_without_hook_is_an_error(void **state) {
    (void)state;
    tg_store *s = tg_store_new();
    float x = 1;
    tg_array a = {.dtype = TG_F32, .rank = 0, .data = &x};
    assert_int_equal(tg_store_set(s, "w", &a), TG_OK);
    tg_store_find(s, "w")->host_stale = true;
    tg_array out = {0};
    assert_int_equal(tg_store_get(s, "w", &out), TG_ERR_RUNTIME);
    assert_non_null(strstr(tg_last_error(), "'w'"));
    tg_store_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_set_get_copies),
        cmocka_unit_test(test_replace_changes_dtype_and_shape),
        cmocka_unit_test(test_names_in_insertion_order),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_init_missing_zeros_and_keeps_existing),
        cmocka_unit_test(test_init_missing_seeded_is_deterministic),
        cmocka_unit_test(test_init_missing_independent_of_others),
        cmocka_unit_test(test_init_missing_dynamic_dim_fails),
        cmocka_unit_test(test_backend_hooks),
        cmocka_unit_test(test_stale_without_hook_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
