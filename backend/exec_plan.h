/* backend/exec_plan.h — scheduling kernels and planning the arena
 * (exec_plan.c). Independent of Vulkan: the executor describes kernels and
 * the buffers they read and write, and gets back an order and offsets.
 *
 * Positions: 0 is the start of a run (feeds are written, temporaries
 * preloaded), kernel at schedule index i runs at position i + 1, and
 * n_kernels + 1 is the end (targets read back, temporaries written back). */
#ifndef TG_BACKEND_EXEC_PLAN_H
#define TG_BACKEND_EXEC_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "tg.h"

/* A buffer of the arena. */
typedef struct tg_plan_buf {
    uint64_t bytes;     /* rounded up to the offset alignment by the planner */
    int first, last;    /* positions it is live over (inclusive), set by tg_plan_lifetimes */
    bool at_start;      /* written before the kernels (a feed, a preloaded temporary) */
    bool at_end;        /* read after the kernels (a target, a write-back) */
    uint64_t shape_key; /* in place only between buffers of equal nonzero keys (the
                           executor: element count and storage dtype, so an
                           elementwise kernel reads and writes the same index) */
    int same_as;        /* in place: shares the memory of this buffer (-1: own) */
    /* out: where it lives */
    int chunk;
    uint64_t offset;
} tg_plan_buf;

/* A kernel: the buffers it reads and writes, and the kernels that must run
 * before it (producers of what it reads, and ordering constraints). */
typedef struct tg_plan_kernel {
    int n_reads, n_writes, n_deps;
    const int *reads, *writes, *deps;
    bool in_place_ok;               /* an output may take the memory of an input that dies here
                                       (elementwise: each element is read before it is written) */
    const uint64_t *in_place_reads; /* else, per write (may be NULL): bit r set if the
                                       write may take read r's memory (r < 64): a
                                       matmul epilogue's operand read at the element
                                       the same invocation then writes */
} tg_plan_kernel;

typedef struct tg_plan_stats {
    uint64_t arena;       /* bytes of all chunks */
    uint64_t naive;       /* sum of every buffer, no reuse */
    uint64_t lower_bound; /* most bytes live at one position */
    int peak_at;          /* the first position with lower_bound bytes live */
    int chunks, in_place;
} tg_plan_stats;

/* Orders the kernels: a topological order that, among the ready kernels,
 * runs the one that frees the most bytes net of what it allocates (ties:
 * the lowest index). order[i] = the kernel at schedule index i. */
tg_status tg_plan_schedule(int n_kernels, const tg_plan_kernel *k, int n_bufs,
                           const tg_plan_buf *bufs, int *order);

/* first/last of every buffer over the schedule `order`, and same_as for
 * outputs that take a dying input's memory of the same size (in kernels
 * with in_place_ok, or where in_place_reads allows the pair). */
void tg_plan_lifetimes(int n_kernels, const tg_plan_kernel *k, const int *order, int n_bufs,
                       tg_plan_buf *bufs);

/* Offsets by greedy-by-size best fit: buffers (with their in-place
 * sharers) from the largest down, each at the lowest-waste gap among the
 * buffers already placed whose lifetimes overlap, in the first chunk of at
 * most max_bytes where it fits. chunk_bytes (malloc'ed, *n_chunks
 * entries) receives each chunk's size. */
tg_status tg_plan_offsets(int n_bufs, tg_plan_buf *bufs, uint64_t align, uint64_t max_bytes,
                          uint64_t **chunk_bytes, int *n_chunks, tg_plan_stats *stats);

#endif
