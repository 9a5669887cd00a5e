/* test_vk_plan.c — the scheduler and arena planner of backend/exec_plan.c
 * on synthetic kernels and lifetimes with results worked out by hand. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backend/exec_plan.h"

/* A buffer live over [first, last]. */
static tg_plan_buf buf(uint64_t bytes, int first, int last) {
    return (tg_plan_buf){.bytes = bytes, .first = first, .last = last, .same_as = -1};
}

/* No two buffers of a chunk overlap in memory while both are live. */
static void assert_no_conflicts(int n, const tg_plan_buf *b) {
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            if (b[i].chunk != b[j].chunk || b[i].last < b[j].first || b[j].last < b[i].first)
                continue;
            if (b[i].same_as == j || b[j].same_as == i) continue;
            bool apart =
                b[i].offset + b[i].bytes <= b[j].offset || b[j].offset + b[j].bytes <= b[i].offset;
            assert_true(apart);
        }
}

/* Greedy by size with best fit: P 64 [0,0] at 0; Q 48 [0,4] after it at
 * 64; R 32 [2,2] where P was (the only gap); S 16 [2,3] in the rest of
 * that gap, at 32; T 16 [3,3] has two gaps that fit, [0,32) (waste 16)
 * and [48,64) (exact): best fit takes 48, first fit would take 0. */
static void test_greedy_by_size_best_fit(void **state) {
    (void)state;
    tg_plan_buf b[] = {buf(64, 0, 0), buf(48, 0, 4), buf(32, 2, 2), buf(16, 2, 3), buf(16, 3, 3)};
    uint64_t *chunks = NULL;
    int n_chunks = 0;
    tg_plan_stats st;
    assert_int_equal(tg_plan_offsets(5, b, 16, 1 << 20, &chunks, &n_chunks, &st), TG_OK);
    uint64_t want[] = {0, 64, 0, 32, 48};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(b[i].chunk, 0);
        assert_int_equal(b[i].offset, want[i]);
    }
    assert_int_equal(n_chunks, 1);
    assert_int_equal(chunks[0], 112);
    assert_int_equal(st.arena, 112);
    assert_int_equal(st.naive, 64 + 48 + 32 + 16 + 16);
    assert_int_equal(st.lower_bound, 112); /* P and Q at position 0: optimal */
    assert_no_conflicts(5, b);
    free(chunks);
}

/* Ties of size: A 32 [0,1], B 32 [3,5], C 16 [2,3], D 32 [0,2]. Earliest
 * first places A at 0, D at 32, B at 0 and C above both at 64: 80 bytes.
 * Longest lived first places D at 0, B at 0, A at 32 and C at 32 beside
 * the dead A: 64, the lower bound. The planner keeps the smaller. */
static void test_size_ties_longest_lived_first(void **state) {
    (void)state;
    tg_plan_buf b[] = {buf(32, 0, 1), buf(32, 3, 5), buf(16, 2, 3), buf(32, 0, 2)};
    uint64_t *chunks = NULL;
    int n_chunks = 0;
    tg_plan_stats st;
    assert_int_equal(tg_plan_offsets(4, b, 16, 1 << 20, &chunks, &n_chunks, &st), TG_OK);
    assert_int_equal(st.lower_bound, 64);
    assert_int_equal(st.arena, 64);
    uint64_t want[] = {32, 0, 32, 0};
    for (int i = 0; i < 4; i++) assert_int_equal(b[i].offset, want[i]);
    assert_no_conflicts(4, b);
    free(chunks);
}

/* The same set in chunks of at most 64 bytes: Q cannot follow P, so it
 * opens chunk 1; the rest fit in chunk 0 around P's lifetime. */
static void test_chunks_respect_the_limit(void **state) {
    (void)state;
    tg_plan_buf b[] = {buf(64, 0, 0), buf(48, 0, 4), buf(32, 2, 2), buf(16, 2, 3), buf(16, 3, 3)};
    uint64_t *chunks = NULL;
    int n_chunks = 0;
    tg_plan_stats st;
    assert_int_equal(tg_plan_offsets(5, b, 16, 64, &chunks, &n_chunks, &st), TG_OK);
    assert_int_equal(n_chunks, 2);
    assert_int_equal(chunks[0], 64);
    assert_int_equal(chunks[1], 48);
    int want_chunk[] = {0, 1, 0, 0, 0};
    uint64_t want_off[] = {0, 0, 0, 32, 0};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(b[i].chunk, want_chunk[i]);
        assert_int_equal(b[i].offset, want_off[i]);
        assert_true(b[i].offset + b[i].bytes <= 64);
    }
    assert_no_conflicts(5, b);
    free(chunks);
    /* a buffer over the limit is an error */
    tg_plan_buf big[] = {buf(80, 0, 1)};
    assert_int_equal(tg_plan_offsets(1, big, 16, 64, &chunks, &n_chunks, &st), TG_ERR_UNSUPPORTED);
    assert_null(chunks);
}

/* Sizes round up to the alignment, so every offset is aligned. */
static void test_alignment(void **state) {
    (void)state;
    tg_plan_buf b[] = {buf(10, 0, 1), buf(300, 1, 2), buf(20, 0, 2)};
    uint64_t *chunks = NULL;
    int n_chunks = 0;
    tg_plan_stats st;
    assert_int_equal(tg_plan_offsets(3, b, 256, 1 << 20, &chunks, &n_chunks, &st), TG_OK);
    for (int i = 0; i < 3; i++) assert_int_equal(b[i].offset % 256, 0);
    assert_int_equal(st.naive, 256 + 512 + 256);
    assert_int_equal(st.arena, 1024); /* all three live at position 1 */
    assert_no_conflicts(3, b);
    free(chunks);
}

/* Lifetimes over a schedule, and in place: k0 writes a; k1 (elementwise)
 * reads a and writes b of the same shape, a's last use: b takes a's
 * memory; k2 reads b and the feed f and writes c, a target. */
static void test_lifetimes_and_in_place(void **state) {
    (void)state;
    enum { F, A, B, C };
    tg_plan_buf b[4] = {buf(64, 0, 0), buf(64, 0, 0), buf(64, 0, 0), buf(32, 0, 0)};
    for (int i = 0; i < 4; i++) b[i].shape_key = i == C ? 7 : 9;
    b[F].at_start = true;
    b[C].at_end = true;
    int r1[] = {A}, w0[] = {A}, w1[] = {B}, r2[] = {B, F}, w2[] = {C}, d1[] = {0}, d2[] = {1};
    tg_plan_kernel k[3] = {
        {.n_writes = 1, .writes = w0},
        {.n_reads = 1,
         .reads = r1,
         .n_writes = 1,
         .writes = w1,
         .n_deps = 1,
         .deps = d1,
         .in_place_ok = true},
        {.n_reads = 2,
         .reads = r2,
         .n_writes = 1,
         .writes = w2,
         .n_deps = 1,
         .deps = d2,
         .in_place_ok = true},
    };
    int order[] = {0, 1, 2};
    tg_plan_lifetimes(3, k, order, 4, b);
    assert_int_equal(b[F].first, 0);
    assert_int_equal(b[F].last, 3);
    assert_int_equal(b[B].same_as, A); /* in place */
    assert_int_equal(b[A].first, 1);
    assert_int_equal(b[A].last, 3);     /* a's memory lives on as b */
    assert_int_equal(b[C].same_as, -1); /* other shape: no reuse of b or f */
    assert_int_equal(b[C].first, 3);
    assert_int_equal(b[C].last, 4); /* a target: to the end */
    uint64_t *chunks = NULL;
    int n_chunks = 0;
    tg_plan_stats st;
    assert_int_equal(tg_plan_offsets(4, b, 16, 1 << 20, &chunks, &n_chunks, &st), TG_OK);
    assert_int_equal(b[B].offset, b[A].offset);
    assert_int_equal(st.in_place, 1);
    assert_int_equal(st.naive, 64 * 3 + 32);
    assert_int_equal(st.lower_bound, 64 + 64 + 32); /* f, a=b, c at position 3 */
    assert_int_equal(st.peak_at, 3);
    assert_int_equal(st.arena, 160);
    free(chunks);
}

/* Per-write masks (a matmul's epilogue): k1 reads a and e, both dying
 * there, and writes b of their shape; its mask lets b take e's memory
 * only (a is a matmul operand: other invocations read it). */
static void test_in_place_reads_mask(void **state) {
    (void)state;
    enum { A, E, B };
    tg_plan_buf b[3] = {buf(64, 0, 0), buf(64, 0, 0), buf(64, 0, 0)};
    for (int i = 0; i < 3; i++) b[i].shape_key = 9;
    b[B].at_end = true;
    int w0[] = {A, E}, r1[] = {A, E}, w1[] = {B}, d1[] = {0};
    uint64_t mask[] = {1u << 1}; /* write 0 may take read 1 (e) */
    tg_plan_kernel k[2] = {
        {.n_writes = 2, .writes = w0},
        {.n_reads = 2,
         .reads = r1,
         .n_writes = 1,
         .writes = w1,
         .n_deps = 1,
         .deps = d1,
         .in_place_reads = mask},
    };
    int order[] = {0, 1};
    tg_plan_lifetimes(2, k, order, 3, b);
    assert_int_equal(b[B].same_as, E);
    mask[0] = 0; /* nothing allowed: b has its own memory */
    tg_plan_lifetimes(2, k, order, 3, b);
    assert_int_equal(b[B].same_as, -1);
}

/* The scheduler runs, of the ready kernels, the one that frees the most net
 * of what it allocates: k1 (reads the 64-byte feed g for the last time,
 * writes 16) before k0 (reads 16, writes 64), although k0 comes first. */
static void test_schedule_frees_memory_first(void **state) {
    (void)state;
    tg_plan_buf b[5] = {buf(16, 0, 0), buf(64, 0, 0), buf(64, 0, 0), buf(16, 0, 0), buf(16, 0, 0)};
    b[0].at_start = b[1].at_start = true;
    int r0[] = {0}, w0[] = {2}, r1[] = {1}, w1[] = {3}, r2[] = {2, 3}, w2[] = {4}, d2[] = {0, 1};
    tg_plan_kernel k[3] = {
        {.n_reads = 1, .reads = r0, .n_writes = 1, .writes = w0},
        {.n_reads = 1, .reads = r1, .n_writes = 1, .writes = w1},
        {.n_reads = 2, .reads = r2, .n_writes = 1, .writes = w2, .n_deps = 2, .deps = d2},
    };
    int order[3];
    assert_int_equal(tg_plan_schedule(3, k, 5, b, order), TG_OK);
    assert_int_equal(order[0], 1);
    assert_int_equal(order[1], 0);
    assert_int_equal(order[2], 2);
    /* a cycle of constraints is an error */
    int c0[] = {1}, c1[] = {0};
    tg_plan_kernel cyc[2] = {{.n_deps = 1, .deps = c0}, {.n_deps = 1, .deps = c1}};
    assert_int_equal(tg_plan_schedule(2, cyc, 0, b, order), TG_ERR_UNSUPPORTED);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy_by_size_best_fit),
        cmocka_unit_test(test_chunks_respect_the_limit),
        cmocka_unit_test(test_alignment),
        cmocka_unit_test(test_size_ties_longest_lived_first),
        cmocka_unit_test(test_lifetimes_and_in_place),
        cmocka_unit_test(test_in_place_reads_mask),
        cmocka_unit_test(test_schedule_frees_memory_first),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
