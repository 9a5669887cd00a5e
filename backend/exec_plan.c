/* backend/exec_plan.c — the order kernels run in, the lifetime of every
 * arena buffer over that order, in-place reuse, and offsets in an arena of
 * chunks (greedy by size, best fit, as TFLite's arena planner and
 * ggml-alloc do). See exec_plan.h. */
#include "backend/exec_plan.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "graph/graph_internal.h"

/* True if read i is the first of its buffer in kernel k (a kernel may
 * read a buffer through several inputs). */
static bool first_read(const tg_plan_kernel *k, int i) {
    for (int j = 0; j < i; j++)
        if (k->reads[j] == k->reads[i]) return false;
    return true;
}

tg_status tg_plan_schedule(int n, const tg_plan_kernel *k, int n_bufs, const tg_plan_buf *bufs,
                           int *order) {
    int *pending = calloc((size_t)n + 1, sizeof *pending);
    int *readers = calloc((size_t)n_bufs + 1, sizeof *readers);
    bool *placed = calloc((size_t)n + 1, sizeof *placed);
    int *succ_start = calloc((size_t)n + 2, sizeof *succ_start);
    int n_edges = 0;
    for (int i = 0; i < n; i++) n_edges += k[i].n_deps;
    int *succ = malloc(((size_t)n_edges + 1) * sizeof *succ);
    tg_status st = TG_OK;
    if (!pending || !readers || !placed || !succ_start || !succ) {
        st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        pending[i] = k[i].n_deps;
        for (int d = 0; d < k[i].n_deps; d++) succ_start[k[i].deps[d] + 2]++;
        for (int r = 0; r < k[i].n_reads; r++)
            if (first_read(&k[i], r)) readers[k[i].reads[r]]++;
    }
    for (int i = 2; i <= n + 1; i++) succ_start[i] += succ_start[i - 1];
    for (int i = 0; i < n; i++)
        for (int d = 0; d < k[i].n_deps; d++) succ[succ_start[k[i].deps[d] + 1]++] = i;

    for (int placed_n = 0; placed_n < n; placed_n++) {
        int best = -1;
        int64_t best_score = 0;
        for (int i = 0; i < n; i++) {
            if (placed[i] || pending[i]) continue;
            int64_t score = 0;
            for (int w = 0; w < k[i].n_writes; w++) score -= (int64_t)bufs[k[i].writes[w]].bytes;
            for (int r = 0; r < k[i].n_reads; r++) {
                int b = k[i].reads[r];
                if (first_read(&k[i], r) && readers[b] == 1 && !bufs[b].at_end)
                    score += (int64_t)bufs[b].bytes;
            }
            if (best < 0 || score > best_score) {
                best = i;
                best_score = score;
            }
        }
        if (best < 0) {
            st = tg_set_error(TG_ERR_UNSUPPORTED, "the kernels' ordering constraints form a cycle");
            goto done;
        }
        placed[best] = true;
        order[placed_n] = best;
        for (int r = 0; r < k[best].n_reads; r++)
            if (first_read(&k[best], r)) readers[k[best].reads[r]]--;
        for (int e = succ_start[best]; e < succ_start[best + 1]; e++) pending[succ[e]]--;
    }
done:
    free(pending);
    free(readers);
    free(placed);
    free(succ_start);
    free(succ);
    return st;
}

static int group_of(const tg_plan_buf *bufs, int b) {
    while (bufs[b].same_as >= 0) b = bufs[b].same_as;
    return b;
}

void tg_plan_lifetimes(int n, const tg_plan_kernel *k, const int *order, int n_bufs,
                       tg_plan_buf *bufs) {
    for (int b = 0; b < n_bufs; b++) {
        bufs[b].first = bufs[b].at_start ? 0 : INT_MAX;
        bufs[b].last = bufs[b].at_end ? n + 1 : -1;
        bufs[b].same_as = -1;
    }
    for (int i = 0; i < n; i++) {
        const tg_plan_kernel *kk = &k[order[i]];
        for (int r = 0; r < kk->n_reads + kk->n_writes; r++) {
            tg_plan_buf *b = &bufs[r < kk->n_reads ? kk->reads[r] : kk->writes[r - kk->n_reads]];
            if (b->first > i + 1) b->first = i + 1;
            if (b->last < i + 1) b->last = i + 1;
        }
    }
    for (int b = 0; b < n_bufs; b++) {
        if (bufs[b].first == INT_MAX) bufs[b].first = n + 1; /* written by a copy at the end */
        if (bufs[b].last < bufs[b].first) bufs[b].last = bufs[b].first;
    }
    /* In place: an output takes the memory of an input group of the same
     * size whose life ends at this kernel; the group then lives on as the
     * output. One output per dying group. */
    int *claimed = malloc(((size_t)n_bufs + 1) * sizeof *claimed);
    if (!claimed) return; /* no reuse in place: still a valid plan */
    for (int b = 0; b < n_bufs; b++) claimed[b] = -1;
    for (int i = 0; i < n; i++) {
        const tg_plan_kernel *kk = &k[order[i]];
        if (!kk->in_place_ok && !kk->in_place_reads) continue;
        for (int w = 0; w < kk->n_writes; w++) {
            tg_plan_buf *o = &bufs[kk->writes[w]];
            for (int r = 0; r < kk->n_reads && o->same_as < 0; r++) {
                if (!kk->in_place_ok && (r >= 64 || !(kk->in_place_reads[w] >> r & 1u))) continue;
                int g = group_of(bufs, kk->reads[r]);
                tg_plan_buf *gb = &bufs[g];
                if (g == kk->writes[w] || gb->last != i + 1 || !o->shape_key ||
                    gb->shape_key != o->shape_key || claimed[g] == i)
                    continue;
                claimed[g] = i;
                o->same_as = g;
                if (gb->last < o->last) gb->last = o->last;
            }
        }
    }
    free(claimed);
}

static uint64_t round_up(uint64_t v, uint64_t a) {
    return (v + a - 1) / a * a;
}

typedef struct placed {
    uint64_t offset, bytes;
} placed;

static int cmp_placed(const void *a, const void *b) {
    const placed *x = a, *y = b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

typedef struct size_key {
    uint64_t bytes;
    int first, last, index;
} size_key;

/* Largest first; then the earliest; then by index, so plans are stable. */
static int cmp_size(const void *a, const void *b) {
    const size_key *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
    if (x->first != y->first) return x->first < y->first ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* Largest first; then the longest lived (they box in the others); then
 * the earliest and by index. */
static int cmp_size_life(const void *a, const void *b) {
    const size_key *x = a, *y = b;
    if (x->bytes != y->bytes) return x->bytes < y->bytes ? 1 : -1;
    int lx = x->last - x->first, ly = y->last - y->first;
    if (lx != ly) return lx > ly ? -1 : 1;
    return cmp_size(a, b);
}

/* The offset in chunk c for group g: the smallest gap between the placed
 * groups whose lifetimes overlap g's that holds it, else after the last
 * of them; UINT64_MAX if that passes max_bytes. */
static uint64_t best_fit(const tg_plan_buf *bufs, const int *groups, int n_placed, int c,
                         const tg_plan_buf *g, uint64_t max_bytes, placed *tmp) {
    int n = 0;
    for (int i = 0; i < n_placed; i++) {
        const tg_plan_buf *p = &bufs[groups[i]];
        if (p->chunk != c || p->last < g->first || g->last < p->first) continue;
        tmp[n++] = (placed){p->offset, p->bytes};
    }
    qsort(tmp, (size_t)n, sizeof *tmp, cmp_placed);
    uint64_t end = 0, best = UINT64_MAX, waste = UINT64_MAX;
    for (int i = 0; i < n; i++) {
        if (tmp[i].offset >= end && tmp[i].offset - end >= g->bytes &&
            tmp[i].offset - end - g->bytes < waste) {
            waste = tmp[i].offset - end - g->bytes;
            best = end;
        }
        if (end < tmp[i].offset + tmp[i].bytes) end = tmp[i].offset + tmp[i].bytes;
    }
    if (best == UINT64_MAX) best = end;
    return best + g->bytes <= max_bytes ? best : UINT64_MAX;
}

/* Places the groups in the order of groups[] (best fit, chunk by chunk);
 * the chunks' sizes in *chunk_bytes (malloc'ed), their count in *n_chunks. */
static tg_status place_groups(tg_plan_buf *bufs, const int *groups, int n_groups,
                              uint64_t max_bytes, placed *tmp, uint64_t **chunk_bytes,
                              int *n_chunks) {
    tg_status st = TG_OK;
    uint64_t *chunks = NULL;
    int nc = 0;
    for (int i = 0; i < n_groups && st == TG_OK; i++) {
        tg_plan_buf *g = &bufs[groups[i]];
        if (g->bytes > max_bytes) {
            st = tg_set_error(TG_ERR_UNSUPPORTED,
                              "a buffer of %llu bytes is larger than the device allows (%llu)",
                              (unsigned long long)g->bytes, (unsigned long long)max_bytes);
            break;
        }
        g->chunk = -1;
        for (int c = 0; c < nc && g->chunk < 0; c++) {
            uint64_t off = best_fit(bufs, groups, i, c, g, max_bytes, tmp);
            if (off != UINT64_MAX) {
                g->chunk = c;
                g->offset = off;
            }
        }
        if (g->chunk < 0) {
            uint64_t *grown = realloc(chunks, (size_t)(nc + 1) * sizeof *grown);
            if (!grown) {
                st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
                break;
            }
            chunks = grown;
            chunks[nc] = 0;
            g->chunk = nc++;
            g->offset = 0;
        }
        if (chunks[g->chunk] < g->offset + g->bytes) chunks[g->chunk] = g->offset + g->bytes;
    }
    if (st != TG_OK) {
        free(chunks);
        return st;
    }
    *chunk_bytes = chunks;
    *n_chunks = nc;
    return TG_OK;
}

static uint64_t sum_chunks(const uint64_t *chunks, int n) {
    uint64_t s = 0;
    for (int c = 0; c < n; c++) s += chunks[c];
    return s;
}

tg_status tg_plan_offsets(int n_bufs, tg_plan_buf *bufs, uint64_t align, uint64_t max_bytes,
                          uint64_t **chunk_bytes, int *n_chunks, tg_plan_stats *stats) {
    memset(stats, 0, sizeof *stats);
    *chunk_bytes = NULL;
    *n_chunks = 0;
    int *groups = malloc(((size_t)n_bufs + 1) * sizeof *groups);
    placed *tmp = malloc(((size_t)n_bufs + 1) * sizeof *tmp);
    size_key *keys = malloc(((size_t)n_bufs + 1) * sizeof *keys);
    /* the best placement so far: per buffer, its chunk and offset */
    uint64_t *best_offset = malloc(((size_t)n_bufs + 1) * sizeof *best_offset);
    int *best_chunk = malloc(((size_t)n_bufs + 1) * sizeof *best_chunk);
    if (!groups || !tmp || !keys || !best_offset || !best_chunk) {
        free(groups);
        free(tmp);
        free(keys);
        free(best_offset);
        free(best_chunk);
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    }
    int n_groups = 0;
    for (int b = 0; b < n_bufs; b++) {
        bufs[b].bytes = round_up(bufs[b].bytes ? bufs[b].bytes : 1, align);
        stats->naive += bufs[b].bytes;
        if (bufs[b].same_as < 0)
            groups[n_groups++] = b;
        else
            stats->in_place++;
    }
    /* greedy by size with two tie-breaks among buffers of one size (ties
     * are common: a model's activations); the smaller arena wins */
    int (*orders[])(const void *, const void *) = {cmp_size, cmp_size_life};
    tg_status st = TG_OK;
    uint64_t *chunks = NULL, best_arena = UINT64_MAX;
    int nc = 0;
    for (size_t o = 0; o < sizeof orders / sizeof orders[0] && st == TG_OK; o++) {
        for (int i = 0; i < n_groups; i++) {
            const tg_plan_buf *g = &bufs[groups[i]];
            keys[i] = (size_key){g->bytes, g->first, g->last, groups[i]};
        }
        qsort(keys, (size_t)n_groups, sizeof *keys, orders[o]);
        for (int i = 0; i < n_groups; i++) groups[i] = keys[i].index;
        uint64_t *cand = NULL;
        int n_cand = 0;
        st = place_groups(bufs, groups, n_groups, max_bytes, tmp, &cand, &n_cand);
        if (st != TG_OK) break;
        if (sum_chunks(cand, n_cand) < best_arena) {
            best_arena = sum_chunks(cand, n_cand);
            free(chunks);
            chunks = cand;
            nc = n_cand;
            for (int b = 0; b < n_bufs; b++) {
                best_offset[b] = bufs[b].offset;
                best_chunk[b] = bufs[b].chunk;
            }
        } else {
            free(cand);
        }
    }
    for (int i = 0; st == TG_OK && i < n_groups; i++) {
        tg_plan_buf *g = &bufs[groups[i]];
        g->offset = best_offset[groups[i]];
        g->chunk = best_chunk[groups[i]];
    }
    free(keys);
    free(best_offset);
    free(best_chunk);
    for (int b = 0; st == TG_OK && b < n_bufs; b++) {
        int g = group_of(bufs, b);
        bufs[b].chunk = bufs[g].chunk;
        bufs[b].offset = bufs[g].offset;
    }
    /* the lower bound: the most bytes live at one position */
    int end = 0;
    for (int i = 0; i < n_groups; i++)
        if (bufs[groups[i]].last > end) end = bufs[groups[i]].last;
    for (int p = 0; st == TG_OK && p <= end; p++) {
        uint64_t live = 0;
        for (int i = 0; i < n_groups; i++)
            if (bufs[groups[i]].first <= p && p <= bufs[groups[i]].last)
                live += bufs[groups[i]].bytes;
        if (live > stats->lower_bound) stats->lower_bound = live, stats->peak_at = p;
    }
    free(groups);
    free(tmp);
    if (st != TG_OK) {
        free(chunks);
        return st;
    }
    for (int c = 0; c < nc; c++) stats->arena += chunks[c];
    stats->chunks = nc;
    *chunk_bytes = chunks;
    *n_chunks = nc;
    return TG_OK;
}
