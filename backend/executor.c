/* executor.c — tg_compile / tg_run / tg_encode / tg_wait: a graph compiled
 * for a device.
 *
 * An executable holds a copy of the graph, its targets and target ops, and
 * a least-recently-used cache of specialisations keyed by the feed shapes.
 * A specialisation ("spec") is the graph with concrete shapes, optimised by
 * the passes (passes/: simplification, then the fusion partition), and
 *  - one kernel per kernel of the partition (one per computing node when
 *    fusion is disabled; reshape and stop_gradient are aliases of their
 *    input's memory), each with its GLSL compiled to a pipeline (identical
 *    GLSL shares one pipeline), in an order that keeps memory low
 *    (exec_plan.c);
 *  - memory: kernel results, feeds and temporaries in an arena of a few
 *    large buffers, planned over their lifetimes (reused, in place where
 *    legal; exec_plan.c), constants in their own buffers, variables in the
 *    store's persistent device buffers (store_device.c);
 *  - one command buffer, recorded once and replayed at every run: feed
 *    copies (only when the arena is not host-visible), dispatches with a
 *    compute barrier wherever a kernel touches memory written (or, for
 *    writes, read: reused arena memory) since the last barrier, then
 *    copies of the targets.
 * The command buffer is re-recorded only when a variable's device buffer was
 * replaced (its dtype or shape changed in the store).
 *
 * State ops (assign, slice_update, the optimizer updates, which write
 * several variables: one kernel output each) write a variable's buffer in
 * place, unless a later node in the run reads the variable's old value (or
 * it is a target): then they write a temporary in the arena, copied into
 * the variable at the end of the command buffer, so all reads see the old
 * value. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/device_class.h"
#include "backend/exec_internal.h"
#include "backend/exec_plan.h"
#include "graph/strbuf.h"
#include "passes/passes.h"

#define DEFAULT_MAX_SPECS 8

typedef enum loc_kind { LOC_NONE = 0, LOC_ARENA, LOC_CONST, LOC_VAR, LOC_SCRATCH } loc_kind;

/* Where a tensor lives on the device. */
typedef struct loc {
    loc_kind kind;
    int buf;         /* arena or constant chunk; index into spec->vars for LOC_VAR */
    uint64_t offset; /* bytes */
    uint64_t bytes;  /* storage bytes of the value */
    uint64_t padded; /* bytes reserved: a multiple of 16 so any texel view fits */
} loc;

typedef struct exec_kernel {
    int32_t node;
    char name[64];
    int pipe;
    int n_bindings;
    tg_vk_binding_kind kinds[TG_VK_MAX_BINDINGS];
    tg_vk_texel_format formats[TG_VK_MAX_BINDINGS];
    loc at[TG_VK_MAX_BINDINGS]; /* inputs, then the output */
    int n_inputs;
    VkBufferView views[TG_VK_MAX_BINDINGS]; /* made at recording */
    uint32_t groups[3];
    uint32_t push_bytes;
    uint32_t push[32];
} exec_kernel;

typedef struct exec_var {
    int32_t node;
    uint64_t id; /* tg_dev_var id the command buffer was recorded with */
    int hint;    /* index of the store entry, to skip the lookup */
    tg_dev_var *v;
    bool written; /* by an assign or slice_update of this spec */
} exec_var;

typedef struct exec_io {
    int32_t node;
    tg_dtype dtype, storage;
    int64_t count;
    loc at;             /* feeds: where the value goes; targets: where it is read */
    loc src;            /* targets: where the value lives (== at unless snapshot) */
    bool snapshot;      /* targets: copied into the arena at the end of the run */
    tg_vk_buffer stage; /* staging (feeds) or readback (targets) when `at` is not mapped */
} exec_io;

/* A copy at the start (slice_update temporaries start as the variable) or
 * at the end (temporaries written back into their variable). */
typedef struct exec_copy {
    loc src, dst;
} exec_copy;

/* Where a state op writes its variable input `input` (> 0; input 0's is
 * the node's own location). */
typedef struct exec_out {
    int32_t node;
    int input;
    loc at;
} exec_out;

/* A pipeline shared by every spec of an executable that has a kernel with
 * this GLSL (shapes that a new specialisation leaves unchanged keep their
 * kernels: no pipeline creation, no driver JIT at the first dispatch). */
typedef struct exec_pipe {
    uint64_t hash;
    char *glsl;
    tg_vk_pipeline *p;
    int refs; /* specs using it */
} exec_pipe;

typedef struct spec {
    int64_t (*key)[TG_MAX_RANK]; /* shapes of the needed placeholders */
    bool ce_pair_rows;           /* tg_ce_pair_by_rows on this device */
    uint64_t last_used;
    tg_graph *g; /* specialised and optimised: ids differ from e->g's */
    bool *needed;
    int32_t *tgt, *ph, *tops; /* e->targets, e->ph, e->target_ops as ids of g */
    tg_partition *part;       /* the kernels */
    tg_plan_stats mem;
    char *peak;    /* what is live at the arena's peak (tg_executable_memory_peak) */
    int32_t *root; /* the node whose memory a node uses (aliases) */
    loc *locs;
    exec_kernel *kernels;
    int n_kernels;
    exec_pipe **pipes; /* each once, referenced */
    int n_pipes;
    tg_vk_buffer *arena;
    int n_arena;
    tg_vk_buffer *consts;
    int n_consts;
    tg_vk_buffer *scratch; /* kernels' own memory (tg_kernel_code.scratch_bytes) */
    int n_scratch;
    exec_var *vars;
    int n_vars;
    exec_io *feeds, *targets;
    int n_feeds, n_targets;
    exec_copy *preload, *writeback;
    int n_preload, n_writeback;
    exec_out *outs; /* state ops' outputs beyond the first (written inputs i > 0) */
    int n_outs;
    tg_vk_cmd *cmd;
    char (*dispatch_names)[64];
    int n_dispatch;
    bool profile;
} spec;

struct tg_executable {
    tg_vk_device *dev;
    char *disable_passes; /* options and TG_DISABLE_PASSES, or NULL */
    tg_graph *g;
    tg_store *store;
    int n_targets, n_target_ops;
    int32_t *targets, *target_ops;
    bool *needed;
    int n_ph;
    int32_t *ph; /* needed placeholders, in node order */
    int max_specs;
    bool profile;
    spec **specs;
    int n_specs;
    exec_pipe **pipes;
    int n_pipes;
    int compiles;
    uint64_t clock;
    spec *last;
    bool pending;
    tg_profile prof;
};

struct tg_pending {
    tg_executable *e;
    spec *s;
};

/* ------------------------------------------------------------------ */
/* Small helpers                                                       */
/* ------------------------------------------------------------------ */

static const char *node_label(const tg_graph *g, int32_t id, char *buf, size_t n) {
    const tg_node *nd = &g->nodes[id];
    char sh[96];
    tg_shape_str(nd->dtype, nd->rank, nd->shape, sh, sizeof sh);
    if (nd->name)
        snprintf(buf, n, "%s '%s' (node %d, %s)", tg_ops[nd->op].name, nd->name, id, sh);
    else
        snprintf(buf, n, "%s (node %d, %s)", tg_ops[nd->op].name, id, sh);
    return buf;
}

static int64_t node_count(const tg_node *n) {
    return tg_shape_count(n->rank, n->shape);
}

static bool env_is_1(const char *name);

static bool is_alias(const tg_node *n) {
    return n->op == TG_OP_RESHAPE || n->op == TG_OP_STOP_GRADIENT;
}

/* An op that writes variables (the op table's `writes` mask). */
static bool is_state(const tg_node *n) {
    return tg_ops[n->op].writes != 0;
}

/* The inputs a state node writes, as a mask over the inputs it has. */
static unsigned written_inputs(const tg_node *n) {
    unsigned have = n->n_inputs >= 32 ? ~0u : (1u << n->n_inputs) - 1;
    return tg_ops[n->op].writes & have;
}

/* ------------------------------------------------------------------ */
/* Freeing                                                             */
/* ------------------------------------------------------------------ */

static void free_views(tg_vk_device *dev, spec *s) {
    for (int k = 0; k < s->n_kernels; k++)
        for (int b = 0; b < s->kernels[k].n_bindings; b++) {
            tg_vk_buffer_view_destroy(dev, s->kernels[k].views[b]);
            s->kernels[k].views[b] = VK_NULL_HANDLE;
        }
}

/* Drops a spec's reference; the last one destroys the pipeline. */
static void release_pipe(tg_executable *e, exec_pipe *p) {
    if (--p->refs > 0) return;
    tg_vk_pipeline_destroy(e->dev, p->p);
    free(p->glsl);
    for (int i = 0; i < e->n_pipes; i++)
        if (e->pipes[i] == p) e->pipes[i] = e->pipes[--e->n_pipes];
    free(p);
}

static void free_spec(tg_executable *e, spec *s) {
    if (!s) return;
    tg_vk_device *dev = e->dev;
    tg_vk_cmd_free(s->cmd);
    free_views(dev, s);
    for (int i = 0; i < s->n_pipes; i++) release_pipe(e, s->pipes[i]);
    for (int i = 0; i < s->n_arena; i++) tg_vk_buffer_destroy(dev, &s->arena[i]);
    for (int i = 0; i < s->n_consts; i++) tg_vk_buffer_destroy(dev, &s->consts[i]);
    for (int i = 0; i < s->n_scratch; i++) tg_vk_buffer_destroy(dev, &s->scratch[i]);
    for (int i = 0; i < s->n_feeds; i++) tg_vk_buffer_destroy(dev, &s->feeds[i].stage);
    for (int i = 0; i < s->n_targets; i++) tg_vk_buffer_destroy(dev, &s->targets[i].stage);
    free(s->key);
    tg_graph_free(s->g);
    free(s->needed);
    free(s->tgt);
    free(s->ph);
    free(s->tops);
    tg_partition_free(s->part);
    free(s->peak);
    free(s->root);
    free(s->locs);
    free(s->kernels);
    free(s->pipes);
    free(s->arena);
    free(s->consts);
    free(s->scratch);
    free(s->vars);
    free(s->feeds);
    free(s->targets);
    free(s->preload);
    free(s->writeback);
    free(s->outs);
    free(s->dispatch_names);
    free(s);
}

void tg_executable_free(tg_executable *e) {
    if (!e) return;
    for (int i = 0; i < e->n_specs; i++) free_spec(e, e->specs[i]);
    free(e->specs);
    free(e->pipes);
    tg_graph_free(e->g);
    free(e->disable_passes);
    free(e->targets);
    free(e->target_ops);
    free(e->needed);
    free(e->ph);
    tg_profile_free(&e->prof);
    free(e);
}

/* ------------------------------------------------------------------ */
/* Memory: packing tensors into a few large buffers                    */
/* ------------------------------------------------------------------ */

typedef struct packer {
    uint64_t align, max_bytes;
    int n_chunks;
    uint64_t *used; /* bytes used per chunk */
    int cap;
} packer;

static tg_status pack(packer *p, loc_kind kind, uint64_t bytes, const char *what, loc *out) {
    uint64_t padded = tg_exec_align(bytes ? bytes : 16, 16);
    if (padded > p->max_bytes)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s needs %llu bytes, more than the largest buffer the device allows "
                            "(%llu bytes)",
                            what, (unsigned long long)bytes, (unsigned long long)p->max_bytes);
    uint64_t off = p->n_chunks ? tg_exec_align(p->used[p->n_chunks - 1], p->align) : 0;
    if (p->n_chunks == 0 || off + padded > p->max_bytes) {
        if (p->n_chunks == p->cap) {
            int cap = p->cap ? 2 * p->cap : 4;
            uint64_t *u = realloc(p->used, (size_t)cap * sizeof *u);
            if (!u) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
            p->used = u;
            p->cap = cap;
        }
        p->used[p->n_chunks++] = 0;
        off = 0;
    }
    p->used[p->n_chunks - 1] = off + padded;
    *out = (loc){kind, p->n_chunks - 1, off, bytes, padded};
    return TG_OK;
}

static tg_status create_chunks(tg_vk_device *dev, const packer *p, tg_vk_buffer **out, int *n) {
    *out = NULL;
    *n = 0;
    if (p->n_chunks == 0) return TG_OK;
    tg_vk_buffer *b = calloc((size_t)p->n_chunks, sizeof *b);
    if (!b) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    *out = b;
    for (int i = 0; i < p->n_chunks; i++) {
        tg_status st = tg_vk_buffer_create(dev, p->used[i] ? p->used[i] : 16,
                                           TG_VK_BUFFER_STORAGE | TG_VK_BUFFER_TEXEL, &b[i]);
        if (st != TG_OK) return st;
        (*n)++;
    }
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Building a specialisation                                           */
/* ------------------------------------------------------------------ */

typedef struct builder {
    tg_executable *e;
    spec *s;
    const tg_vk_caps *caps;
    packer arena, consts, scratch;
    /* arena buffers to plan: a LOC_ARENA loc holds its index in `buf`
     * until the plan gives it a chunk and an offset (place_arena) */
    tg_plan_buf *reqs;
    int n_reqs, cap_reqs;
} builder;

/* Asks for `bytes` of arena for a value of `count` elements stored as
 * `storage`; *out refers to the request until the arena is planned. */
static tg_status request(builder *b, uint64_t bytes, int64_t count, tg_dtype storage,
                         const char *what, loc *out) {
    uint64_t padded = tg_exec_align(bytes ? bytes : 16, 16);
    if (padded > b->arena.max_bytes)
        return tg_set_error(TG_ERR_UNSUPPORTED,
                            "%s needs %llu bytes, more than the largest buffer the device allows "
                            "(%llu bytes)",
                            what, (unsigned long long)bytes,
                            (unsigned long long)b->arena.max_bytes);
    if (b->n_reqs == b->cap_reqs) {
        int cap = b->cap_reqs ? 2 * b->cap_reqs : 64;
        tg_plan_buf *r = realloc(b->reqs, (size_t)cap * sizeof *r);
        if (!r) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        b->reqs = r;
        b->cap_reqs = cap;
    }
    b->reqs[b->n_reqs] = (tg_plan_buf){
        .bytes = padded, .shape_key = ((uint64_t)count << 8) | (uint64_t)storage, .same_as = -1};
    *out = (loc){LOC_ARENA, b->n_reqs++, 0, bytes, padded};
    return TG_OK;
}

/* True if state node m writes variable `var`. */
static bool writes_var(const tg_node *m, int32_t var) {
    unsigned w = written_inputs(m);
    for (int k = 0; k < m->n_inputs; k++)
        if ((w >> k & 1u) && m->inputs[k] == var) return true;
    return false;
}

/* Decides, for each variable a state op writes (assign, slice_update: its
 * input 0; optimizer updates: the weight and its moments), whether the op
 * can write it in place: only if no kernel after it reads the variable's
 * old value and the variable is not a target (whose value must be the old
 * one). Kernels run in node order, and a kernel that writes memory read
 * since the last barrier gets a barrier first, so reads by earlier nodes
 * (a training step's forward and backward reading the weights that its
 * optimizer updates) are done before the write. in_place[id] is a mask
 * over the node's inputs. */
static tg_status plan_state(builder *b, unsigned *in_place) {
    const tg_executable *e = b->e;
    const tg_graph *g = b->s->g;
    for (int id = 0; id < g->n_nodes; id++) {
        const tg_node *n = &g->nodes[id];
        in_place[id] = 0;
        if (!b->s->needed[id] || !is_state(n)) continue;
        unsigned w = written_inputs(n);
        if (!(w & 1u)) {
            char lab[160];
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "tg_compile: %s does not write its first input; the node's value "
                                "is that variable's new value",
                                node_label(g, id, lab, sizeof lab));
        }
        for (int i = 0; i < n->n_inputs; i++) {
            if (!(w >> i & 1u)) continue;
            int32_t var = n->inputs[i];
            bool ok = true;
            for (int j = 0; j < g->n_nodes; j++) {
                const tg_node *m = &g->nodes[j];
                if (!b->s->needed[j] || j == id || is_alias(m) ||
                    tg_ops[m->op].klass == TG_CLASS_SOURCE)
                    continue;
                if (is_state(m) && writes_var(m, var)) {
                    char lab[160];
                    return tg_set_error(TG_ERR_UNSUPPORTED,
                                        "tg_compile: variable '%s' is written twice in one run (by "
                                        "node %d and %s)",
                                        g->nodes[var].name, id, node_label(g, j, lab, sizeof lab));
                }
                for (int k = 0; j > id && k < m->n_inputs && ok; k++)
                    if (b->s->root[m->inputs[k]] == var) ok = false;
            }
            for (int t = 0; t < e->n_targets && ok; t++)
                if (b->s->root[b->s->tgt[t]] == var) ok = false;
            if (ok) in_place[id] |= 1u << i;
        }
    }
    return TG_OK;
}

static tg_status add_var(spec *s, int32_t node, int *index) {
    for (int i = 0; i < s->n_vars; i++)
        if (s->vars[i].node == node) {
            *index = i;
            return TG_OK;
        }
    exec_var *v = realloc(s->vars, (size_t)(s->n_vars + 1) * sizeof *v);
    if (!v) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    s->vars = v;
    s->vars[s->n_vars] = (exec_var){.node = node, .hint = -1};
    *index = s->n_vars++;
    return TG_OK;
}

/* Where state node `id` writes the new value of its variable input i: the
 * variable's buffer (in place) or a temporary in the arena, copied into
 * the variable at the end of the run (slice_update's temporary starts as
 * the variable: it writes only a slab). Input 0's is the node's own
 * location (its value); the others are extra kernel outputs (s->outs). */
static tg_status place_written(builder *b, int32_t id, int i, bool in_place, const char *lab) {
    spec *s = b->s;
    const tg_node *n = &s->g->nodes[id];
    int32_t var = n->inputs[i];
    int vi = 0;
    tg_status st = add_var(s, var, &vi);
    if (st != TG_OK) return st;
    s->vars[vi].written = true;
    loc at = s->locs[var];
    if (!in_place) {
        const tg_node *vn = &s->g->nodes[var];
        st = request(b, s->locs[var].bytes, node_count(vn), tg_storage_dtype(b->caps, vn->dtype),
                     lab, &at);
        if (st != TG_OK) return st;
        /* written back at the end; slice_update's starts as the variable */
        b->reqs[at.buf].at_end = true;
        b->reqs[at.buf].at_start = n->op == TG_OP_SLICE_UPDATE;
        exec_copy *wb = realloc(s->writeback, (size_t)(s->n_writeback + 1) * sizeof *wb);
        if (!wb) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        s->writeback = wb;
        wb[s->n_writeback++] = (exec_copy){at, s->locs[var]};
        if (n->op == TG_OP_SLICE_UPDATE) {
            exec_copy *pl = realloc(s->preload, (size_t)(s->n_preload + 1) * sizeof *pl);
            if (!pl) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
            s->preload = pl;
            pl[s->n_preload++] = (exec_copy){s->locs[var], at};
        }
    }
    if (i == 0) {
        s->locs[id] = at;
        return TG_OK;
    }
    exec_out *o = realloc(s->outs, (size_t)(s->n_outs + 1) * sizeof *o);
    if (!o) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    s->outs = o;
    o[s->n_outs++] = (exec_out){id, i, at};
    return TG_OK;
}

/* True if node id is written to memory by its kernel. */
static bool is_kernel_output(const spec *s, int32_t id) {
    int kk = s->part->kernel_of[id];
    if (kk < 0) return false;
    const tg_part_kernel *pk = &s->part->kernels[kk];
    for (int j = 0; j < pk->n_outputs; j++)
        if (pk->outputs[j] == id) return true;
    return false;
}

/* Gives every needed node that lives in memory a location: sources,
 * aliases (their root's), and the outputs of kernels; members used only
 * inside their kernel have none. */
static tg_status place_nodes(builder *b) {
    spec *s = b->s;
    const tg_graph *g = s->g;
    const bool *needed = s->needed;
    unsigned *in_place = calloc((size_t)(g->n_nodes > 0 ? g->n_nodes : 1), sizeof *in_place);
    if (!in_place) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    tg_status st = plan_state(b, in_place);
    char lab[160];
    for (int id = 0; st == TG_OK && id < g->n_nodes; id++) {
        const tg_node *n = &g->nodes[id];
        if (!needed[id]) continue;
        uint64_t bytes = tg_exec_storage_bytes(tg_storage_dtype(b->caps, n->dtype), node_count(n));
        node_label(g, id, lab, sizeof lab);
        if (is_alias(n)) {
            s->locs[id] = s->locs[s->root[id]];
        } else if (n->op == TG_OP_CONSTANT) {
            st = pack(&b->consts, LOC_CONST, bytes, lab, &s->locs[id]);
        } else if (n->op == TG_OP_VARIABLE) {
            int vi = 0;
            st = add_var(s, id, &vi);
            s->locs[id] = (loc){LOC_VAR, vi, 0, bytes, tg_exec_align(bytes ? bytes : 16, 16)};
        } else if (is_state(n)) {
            unsigned w = written_inputs(n);
            for (int i = 0; st == TG_OK && i < n->n_inputs; i++)
                if (w >> i & 1u) st = place_written(b, id, i, in_place[id] >> i & 1u, lab);
        } else if (n->op == TG_OP_PLACEHOLDER || is_kernel_output(s, id)) {
            st = request(b, bytes, node_count(n), tg_storage_dtype(b->caps, n->dtype), lab,
                         &s->locs[id]);
            if (st == TG_OK && n->op == TG_OP_PLACEHOLDER) b->reqs[s->locs[id].buf].at_start = true;
        }
    }
    free(in_place);
    return st;
}

/* Feeds and targets: where they are written and read. */
static tg_status place_io(builder *b) {
    spec *s = b->s;
    tg_executable *e = b->e;
    s->feeds = calloc((size_t)(e->n_ph ? e->n_ph : 1), sizeof *s->feeds);
    s->targets = calloc((size_t)(e->n_targets ? e->n_targets : 1), sizeof *s->targets);
    if (!s->feeds || !s->targets) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < e->n_ph; i++) {
        const tg_node *n = &s->g->nodes[s->ph[i]];
        exec_io *f = &s->feeds[s->n_feeds++];
        f->node = s->ph[i];
        f->dtype = n->dtype;
        f->storage = tg_storage_dtype(b->caps, n->dtype);
        f->count = node_count(n);
        f->at = f->src = s->locs[f->node];
    }
    for (int i = 0; i < e->n_targets; i++) {
        const tg_node *n = &s->g->nodes[s->tgt[i]];
        exec_io *t = &s->targets[s->n_targets++];
        t->node = s->tgt[i];
        t->dtype = n->dtype;
        t->storage = tg_storage_dtype(b->caps, n->dtype);
        t->count = node_count(n);
        t->src = t->at = s->locs[s->root[t->node]];
        if (t->src.kind != LOC_ARENA) {
            /* variables and constants are read back through an arena copy
             * made after the kernels (and before write-backs) */
            char lab[160];
            tg_status st = request(b, t->src.bytes, t->count, t->storage,
                                   node_label(s->g, t->node, lab, sizeof lab), &t->at);
            if (st != TG_OK) return st;
            t->snapshot = true;
        }
        b->reqs[t->at.buf].at_end = true;
    }
    return TG_OK;
}

static bool same_pipe(const exec_pipe *p, uint64_t h, const tg_kernel_code *code) {
    return p->hash == h && strcmp(p->glsl, code->glsl) == 0 &&
           p->p->n_bindings == code->n_bindings && p->p->push_constant_bytes == code->push_bytes &&
           memcmp(p->p->bindings, code->kinds, (size_t)code->n_bindings * sizeof code->kinds[0]) ==
               0;
}

static tg_status create_pipe(tg_executable *e, uint64_t h, const tg_kernel_code *code,
                             exec_pipe **out) {
    exec_pipe **grown = realloc(e->pipes, (size_t)(e->n_pipes + 1) * sizeof *grown);
    if (grown) e->pipes = grown;
    exec_pipe *p = calloc(1, sizeof *p);
    char *copy = malloc(strlen(code->glsl) + 1);
    if (!grown || !p || !copy) {
        free(p);
        free(copy);
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    }
    strcpy(copy, code->glsl);
    tg_vk_spirv spirv = {0};
    tg_status st = tg_vk_compile_glsl(code->glsl, code->name, 0, NULL, &spirv);
    tg_vk_pipeline_desc desc = {
        .name = code->name,
        .spirv = spirv.words,
        .n_words = spirv.n_words,
        .n_bindings = code->n_bindings,
        .push_constant_bytes = code->push_bytes,
    };
    memcpy(desc.bindings, code->kinds, (size_t)code->n_bindings * sizeof code->kinds[0]);
    if (st == TG_OK) st = tg_vk_pipeline_create(e->dev, &desc, &p->p);
    tg_vk_spirv_free(&spirv);
    if (st != TG_OK) {
        free(p);
        free(copy);
        return st;
    }
    p->hash = h;
    p->glsl = copy;
    e->pipes[e->n_pipes++] = p;
    *out = p;
    return TG_OK;
}

/* The pipeline of a kernel: shared with earlier kernels of the same GLSL,
 * in this spec or another of the executable. *index is into s->pipes. */
static tg_status add_pipeline(builder *b, const tg_kernel_code *code, int *index) {
    spec *s = b->s;
    tg_executable *e = b->e;
    uint64_t h = tg_vk_hash64(TG_VK_HASH_INIT, code->glsl, strlen(code->glsl));
    h = tg_vk_hash64(h, code->kinds, (size_t)code->n_bindings * sizeof code->kinds[0]);
    h = tg_vk_hash64(h, &code->push_bytes, sizeof code->push_bytes);
    for (int i = 0; i < s->n_pipes; i++)
        if (same_pipe(s->pipes[i], h, code)) {
            *index = i;
            return TG_OK;
        }
    exec_pipe **grown = realloc(s->pipes, (size_t)(s->n_pipes + 1) * sizeof *grown);
    if (!grown) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    s->pipes = grown;
    exec_pipe *p = NULL;
    for (int i = 0; i < e->n_pipes && !p; i++)
        if (same_pipe(e->pipes[i], h, code)) p = e->pipes[i];
    if (!p) {
        tg_status st = create_pipe(e, h, code, &p);
        if (st != TG_OK) return st;
    }
    p->refs++;
    s->pipes[s->n_pipes] = p;
    *index = s->n_pipes++;
    return TG_OK;
}

/* The member giving a kernel its kind (as backend/gen_dispatch.c finds it):
 * its first node that is neither elementwise nor movement, else its last. */
static int32_t kernel_root(const tg_graph *g, const tg_part_kernel *pk) {
    for (int i = 0; i < pk->n_nodes; i++) {
        tg_op_class c = tg_ops[g->nodes[pk->nodes[i]].op].klass;
        if (c != TG_CLASS_ELEMENTWISE && c != TG_CLASS_MOVEMENT) return pk->nodes[i];
    }
    return pk->nodes[pk->n_nodes - 1];
}

/* id, or the node it views through aliases, is a member of the kernel. */
static bool is_member(const tg_graph *g, const tg_part_kernel *pk, int32_t id) {
    while (is_alias(&g->nodes[id])) id = g->nodes[id].inputs[0];
    for (int i = 0; i < pk->n_nodes; i++)
        if (pk->nodes[i] == id) return true;
    return false;
}

/* The kernel's inputs and outputs in the order the generators bind them
 * (backend/kernel.h): the root's operands first, in operand order (a
 * matmul's A and B, a single op's inputs as the op lists them, repeats
 * included), then the partition's other inputs; the last member's result
 * first among the outputs (a matmul epilogue's C), then the others. */
static tg_status kernel_io(const tg_graph *g, const tg_part_kernel *pk, int32_t root,
                           tg_kernel *kern, const char *lab) {
    const tg_node *r = &g->nodes[root];
    kern->n_inputs = 0;
    for (int i = 0; i < r->n_inputs; i++)
        if (!is_member(g, pk, r->inputs[i])) {
            if (kern->n_inputs == TG_KERNEL_MAX_IO) goto too_many;
            kern->inputs[kern->n_inputs++] = r->inputs[i];
        }
    for (int i = 0; i < pk->n_inputs; i++) {
        bool listed = false;
        for (int j = 0; j < kern->n_inputs; j++) listed |= kern->inputs[j] == pk->inputs[i];
        if (listed) continue;
        if (kern->n_inputs == TG_KERNEL_MAX_IO) goto too_many;
        kern->inputs[kern->n_inputs++] = pk->inputs[i];
    }
    if (pk->n_outputs > TG_KERNEL_MAX_IO) goto too_many;
    int32_t last = pk->nodes[pk->n_nodes - 1];
    kern->n_outputs = 0;
    for (int j = 0; j < pk->n_outputs; j++)
        if (pk->outputs[j] == last) kern->outputs[kern->n_outputs++] = last;
    for (int j = 0; j < pk->n_outputs; j++)
        if (pk->outputs[j] != last) kern->outputs[kern->n_outputs++] = pk->outputs[j];
    return TG_OK;
too_many:
    return tg_set_error(TG_ERR_UNSUPPORTED, "tg_compile: the kernel of %s has more than %d inputs",
                        lab, TG_KERNEL_MAX_IO);
}

/* A fused kernel is named by its members' ops, for profiles:
 * "matmul+add+gelu_12" (the last member's id), cut to fit. */
static void fused_name(const tg_graph *g, const tg_part_kernel *pk, char *name, size_t size) {
    char id[16];
    int n = snprintf(id, sizeof id, "_%d", (int)pk->nodes[pk->n_nodes - 1]);
    size_t len = 0, room = size - (size_t)n - 1;
    name[0] = 0;
    for (int i = 0; i < pk->n_nodes; i++) {
        const char *op = tg_ops[g->nodes[pk->nodes[i]].op].name;
        if (len + strlen(op) + 1 > room) break;
        len += (size_t)snprintf(name + len, size - len, "%s%s", i ? "+" : "", op);
    }
    snprintf(name + len, size - len, "%s", id);
}

/* One kernel for kernel `pk` of the partition: generate, compile,
 * describe its bindings. */
static tg_status make_kernel(builder *b, const tg_part_kernel *pk, exec_kernel *k) {
    spec *s = b->s;
    const tg_graph *g = s->g;
    int32_t id = kernel_root(g, pk);
    const tg_node *n = &g->nodes[id];
    char lab[160];
    node_label(g, id, lab, sizeof lab);
    tg_kernel kern = {.g = g, .n_nodes = pk->n_nodes, .nodes = pk->nodes};
    k->node = id;
    tg_status st = kernel_io(g, pk, id, &kern, lab);
    if (st != TG_OK) return st;
    for (int i = 0; i < kern.n_inputs; i++)
        kern.input_storage[i] = tg_storage_dtype(b->caps, g->nodes[kern.inputs[i]].dtype);
    for (int j = 0; j < kern.n_outputs; j++)
        kern.output_storage[j] = tg_storage_dtype(b->caps, g->nodes[kern.outputs[j]].dtype);
    /* a state op writing several variables: one output per written input
     * after the first (whose new value is the node's), in input order; for
     * every state member (the multi-tensor optimizer) */
    loc out_at[TG_KERNEL_MAX_IO];
    for (int j = 0; j < kern.n_outputs; j++) out_at[j] = s->locs[kern.outputs[j]];
    for (int o = 0; o < s->n_outs; o++) {
        const tg_node *sn = &g->nodes[s->outs[o].node];
        if (!is_state(sn) || !is_member(g, pk, s->outs[o].node)) continue;
        if (kern.n_outputs == TG_KERNEL_MAX_IO)
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "tg_compile: the kernel of %s has more than "
                                "%d outputs",
                                lab, TG_KERNEL_MAX_IO);
        int32_t var = sn->inputs[s->outs[o].input];
        kern.outputs[kern.n_outputs] = var;
        kern.output_storage[kern.n_outputs] = tg_storage_dtype(b->caps, g->nodes[var].dtype);
        out_at[kern.n_outputs++] = s->outs[o].at;
    }

    tg_kernel_code code;
    memset(&code, 0, sizeof code);
    st = tg_gen_kernel(b->caps, &kern, &code);
    int n_io = code.n_bindings - code.scratch_bindings;
    if (st == TG_OK && (code.scratch_bindings < 0 || n_io < 0 ||
                        (code.scratch_bindings > 0) != (code.scratch_bytes > 0)))
        st =
            tg_set_error(TG_ERR_RUNTIME, "the generator of %s made %d scratch bindings of %u bytes",
                         lab, code.scratch_bindings, code.scratch_bytes);
    if (st == TG_OK && !code.io_mapped && n_io != kern.n_inputs + kern.n_outputs)
        st = tg_set_error(TG_ERR_RUNTIME, "the generator of %s made %d bindings, expected %d", lab,
                          n_io, kern.n_inputs + kern.n_outputs);
    loc scratch = {0};
    if (st == TG_OK && code.scratch_bytes)
        st = pack(&b->scratch, LOC_SCRATCH, code.scratch_bytes, lab, &scratch);
    int n_input_bindings = code.io_mapped ? 0 : kern.n_inputs;
    for (int i = 0; st == TG_OK && code.io_mapped && i < n_io; i++) {
        int io = code.io_of_binding[i];
        bool input = io < kern.n_inputs;
        if (io < 0 || io >= kern.n_inputs + kern.n_outputs || (input && i != n_input_bindings))
            st = tg_set_error(TG_ERR_RUNTIME, "the generator of %s maps binding %d to %d", lab, i,
                              io);
        n_input_bindings += input;
    }
    if (st == TG_OK && (code.push_bytes > sizeof code.push || code.push_bytes % 4))
        st = tg_set_error(TG_ERR_RUNTIME, "the generator of %s asks for %u push constant bytes",
                          lab, code.push_bytes);
    if (st == TG_OK && !code.name[0])
        snprintf(code.name, sizeof code.name, "%s_%d", tg_ops[n->op].name, id);
    if (st == TG_OK && pk->n_nodes > 1) fused_name(g, pk, code.name, sizeof code.name);
    if (st == TG_OK) st = add_pipeline(b, &code, &k->pipe);
    if (st != TG_OK) {
        tg_kernel_code_free(&code);
        return tg_exec_wrap_error(st, "tg_compile: %s", lab);
    }
    memcpy(k->name, code.name, sizeof k->name);
    k->name[sizeof k->name - 1] = 0;
    k->n_bindings = code.n_bindings;
    k->n_inputs = n_input_bindings;
    memcpy(k->kinds, code.kinds, sizeof k->kinds);
    memcpy(k->formats, code.texel_formats, sizeof k->formats);
    for (int i = 0; i < n_io; i++) {
        int io = code.io_mapped ? code.io_of_binding[i] : i;
        k->at[i] =
            io < kern.n_inputs ? s->locs[s->root[kern.inputs[io]]] : out_at[io - kern.n_inputs];
    }
    for (int i = n_io; i < code.n_bindings; i++) k->at[i] = scratch;
    memcpy(k->groups, code.groups, sizeof k->groups);
    k->push_bytes = code.push_bytes;
    memcpy(k->push, code.push, code.push_bytes);
    tg_kernel_code_free(&code);
    return TG_OK;
}

/* The kernels in schedule order (s->part's order is replaced by it). */
static tg_status make_kernels(builder *b, const int *order) {
    spec *s = b->s;
    int n = s->part->n_kernels;
    s->kernels = calloc((size_t)(n ? n : 1), sizeof *s->kernels);
    if (!s->kernels) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < n; i++) {
        tg_status st = make_kernel(b, &s->part->kernels[order[i]], &s->kernels[s->n_kernels]);
        if (st != TG_OK) return st;
        s->n_kernels++;
    }
    return TG_OK;
}

/* Converts every constant into its storage dtype and uploads each
 * constant buffer once. */
static tg_status upload_constants(builder *b) {
    spec *s = b->s;
    tg_status st = create_chunks(b->e->dev, &b->consts, &s->consts, &s->n_consts);
    for (int c = 0; st == TG_OK && c < s->n_consts; c++) {
        unsigned char *img = calloc(1, (size_t)s->consts[c].size);
        if (!img) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        for (int id = 0; id < s->g->n_nodes; id++) {
            const tg_node *n = &s->g->nodes[id];
            if (!s->needed[id] || n->op != TG_OP_CONSTANT || s->locs[id].buf != c) continue;
            tg_exec_to_storage(n->dtype, tg_storage_dtype(b->caps, n->dtype), n->data,
                               img + s->locs[id].offset, node_count(n));
        }
        st = tg_vk_buffer_upload(b->e->dev, &s->consts[c], 0, img, s->consts[c].size);
        free(img);
    }
    return st;
}

/* The kernels' scratch buffers, zeroed (tg_kernel_code.scratch_bytes). */
static tg_status create_scratch(builder *b) {
    spec *s = b->s;
    tg_status st = create_chunks(b->e->dev, &b->scratch, &s->scratch, &s->n_scratch);
    for (int c = 0; st == TG_OK && c < s->n_scratch; c++) {
        void *zeros = calloc(1, (size_t)s->scratch[c].size);
        if (!zeros) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        st = tg_vk_buffer_upload(b->e->dev, &s->scratch[c], 0, zeros, s->scratch[c].size);
        free(zeros);
    }
    return st;
}

/* Staging buffers for feeds and readback buffers for targets whose arena
 * chunk is not host-visible. */
static tg_status create_staging(builder *b) {
    spec *s = b->s;
    for (int i = 0; i < s->n_feeds; i++) {
        exec_io *f = &s->feeds[i];
        if (s->arena[f->at.buf].mapped) continue;
        tg_status st = tg_vk_buffer_create(b->e->dev, f->at.padded, TG_VK_BUFFER_HOST, &f->stage);
        if (st != TG_OK) return st;
    }
    for (int i = 0; i < s->n_targets; i++) {
        exec_io *t = &s->targets[i];
        if (s->arena[t->at.buf].mapped) continue;
        tg_status st = tg_vk_buffer_create(b->e->dev, t->at.padded, TG_VK_BUFFER_HOST, &t->stage);
        if (st != TG_OK) return st;
    }
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Passes, schedule and memory plan                                    */
/* ------------------------------------------------------------------ */

static void dump_ir(void *user, const char *pass, const char *ir) {
    (void)user;
    fprintf(stderr, "# tg_compile: IR after %s\n%s", pass, ir);
}

/* One kernel per computing node: the partition when fusion is disabled. */
static tg_status single_partition(const tg_graph *g, const bool *needed, tg_partition **out) {
    tg_partition *p = calloc(1, sizeof *p);
    if (!p) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    *out = p;
    size_t n = (size_t)g->n_nodes + 1;
    p->n_nodes = g->n_nodes;
    p->kernel_of = malloc(n * sizeof *p->kernel_of);
    p->kernels = calloc(n, sizeof *p->kernels);
    if (!p->kernel_of || !p->kernels) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int id = 0; id < g->n_nodes; id++) {
        const tg_node *nd = &g->nodes[id];
        p->kernel_of[id] = -1;
        if (!needed[id] || is_alias(nd) || tg_ops[nd->op].klass == TG_CLASS_SOURCE) continue;
        tg_part_kernel *k = &p->kernels[p->n_kernels];
        k->nodes = malloc(sizeof *k->nodes);
        k->outputs = malloc(sizeof *k->outputs);
        k->inputs = malloc(((size_t)nd->n_inputs + 1) * sizeof *k->inputs);
        if (!k->nodes || !k->outputs || !k->inputs) {
            free(k->nodes);
            free(k->outputs);
            free(k->inputs);
            return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        }
        k->root = k->nodes[0] = k->outputs[0] = id;
        k->n_nodes = k->n_outputs = 1;
        k->kind = tg_ops[nd->op].klass;
        for (int i = 0; i < nd->n_inputs; i++) {
            bool seen = false;
            for (int j = 0; j < k->n_inputs; j++) seen |= k->inputs[j] == nd->inputs[i];
            if (!seen) k->inputs[k->n_inputs++] = nd->inputs[i];
        }
        p->kernel_of[id] = p->n_kernels++;
    }
    p->unfused = p->n_kernels;
    return TG_OK;
}

/* Runs the passes on the specialised graph: s->g becomes the optimised
 * graph, with the targets, placeholders and target ops mapped into it, and
 * s->part its kernels. Placeholders go in as targets, so that feeds keep
 * their place even where a pass would have no use for them. */
/* adamw updates one multi-tensor optimizer kernel may hold on this
 * device (backend/gen_optim.c): each binds w, m, v and its gradient as
 * inputs (texel buffers on CPU devices, else storage buffers) and w, m, v
 * as storage outputs; lr and step once. lavapipe: 32 storage buffers per
 * stage -> 10. 0 (fewer than 4): fusion's kernel limits decide. */
static int optimizer_updates_per_kernel(const tg_vk_caps *caps) {
    bool texel = caps->device_class == TG_VK_CLASS_CPU && caps->texel_r32f;
    int64_t storage = caps->max_per_stage_storage_buffers,
            sampled = caps->max_per_stage_sampled_images;
    int64_t n = (storage - 2) / (texel ? 3 : 7);
    if (texel && (sampled - 1) / 4 < n) n = (sampled - 1) / 4;
    if ((TG_VK_MAX_BINDINGS - 2) / 7 < n) n = (TG_VK_MAX_BINDINGS - 2) / 7;
    if ((TG_KERNEL_MAX_IO - 2) / 4 < n) n = (TG_KERNEL_MAX_IO - 2) / 4;
    return n >= 4 ? (int)n : 0;
}

static tg_status optimise(tg_executable *e, spec *s) {
    int n = e->n_targets + e->n_ph;
    int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids);
    s->ph = malloc((size_t)(e->n_ph ? e->n_ph : 1) * sizeof *s->ph);
    if (!ids || !s->ph) {
        free(ids);
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    }
    memcpy(ids, e->targets, (size_t)e->n_targets * sizeof *ids);
    memcpy(ids + e->n_targets, e->ph, (size_t)e->n_ph * sizeof *ids);
    /* kernels as large as the bindings allow (fusion keeps inputs +
     * outputs within TG_FUSION_MAX_BINDINGS = 32); optimizer kernels as
     * the device's per-type limits allow */
    tg_pass_options o = {.disable = e->disable_passes,
                         .fusion_max_inputs = TG_KERNEL_FUSED_IO,
                         .fusion_max_outputs = TG_KERNEL_FUSED_IO,
                         .fusion_max_optimizer_updates =
                             optimizer_updates_per_kernel(&e->dev->caps),
                         .fusion_ce_pair_in_place = tg_ce_pair_by_rows(&e->dev->caps)};
    if (env_is_1("TG_DUMP_IR")) {
        o.dump = dump_ir;
        o.dump_all = true;
    }
    tg_pass_result r;
    memset(&r, 0, sizeof r);
    tg_status st = tg_passes_run(s->g, n, ids, e->n_target_ops, e->target_ops, &o, &r);
    free(ids);
    if (st != TG_OK) return tg_exec_wrap_error(st, "tg_compile: passes");
    tg_graph_free(s->g);
    s->g = r.g;
    s->tgt = r.targets;
    s->tops = r.target_ops;
    s->part = r.partition;
    memcpy(s->ph, r.targets + e->n_targets, (size_t)e->n_ph * sizeof *s->ph);
    s->needed = tg_needed_nodes(s->g, n, r.targets, e->n_target_ops, r.target_ops);
    if (!s->needed) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    if (!s->part) return single_partition(s->g, s->needed, &s->part);
    return TG_OK;
}

/* The arena buffer (request index) a loc refers to, or -1. */
static int req_of(const loc *l) {
    return l->kind == LOC_ARENA ? l->buf : -1;
}

/* Adds kernel `x` to deps (once). */
static void add_dep(tg_plan_kernel *k, int *deps, int x) {
    for (int i = 0; i < k->n_deps; i++)
        if (deps[i] == x) return;
    deps[k->n_deps++] = x;
}

/* The variables state member sid of kernel kk writes: their arena
 * buffers (input 0's is the node's own location, among the outputs
 * already) and, where it writes a variable in place, every other kernel
 * reading that variable comes first. */
static void state_writes(const spec *s, int kk, int32_t sid, tg_plan_kernel *k, int *writes,
                         int *deps) {
    const tg_partition *p = s->part;
    const tg_graph *g = s->g;
    const tg_node *n = &g->nodes[sid];
    for (int i = 0; i < n->n_inputs; i++) {
        if (!(written_inputs(n) >> i & 1u)) continue;
        const loc *at = i == 0 ? &s->locs[sid] : NULL;
        for (int o = 0; !at && o < s->n_outs; o++)
            if (s->outs[o].node == sid && s->outs[o].input == i) at = &s->outs[o].at;
        if (!at) continue;
        if (i > 0 && req_of(at) >= 0) writes[k->n_writes++] = req_of(at);
        if (at->kind != LOC_VAR) continue;
        int32_t var = n->inputs[i];
        for (int other = 0; other < p->n_kernels; other++) {
            const tg_part_kernel *ok = &p->kernels[other];
            for (int m = 0; other != kk && m < ok->n_nodes; m++) {
                const tg_node *mn = &g->nodes[ok->nodes[m]];
                for (int q = 0; q < mn->n_inputs; q++)
                    if (s->root[mn->inputs[q]] == var) add_dep(k, deps, other);
            }
        }
    }
}

static bool same_shape(const tg_node *a, const tg_node *b) {
    if (a->rank != b->rank) return false;
    for (int d = 0; d < a->rank; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

static int member_of(const tg_part_kernel *pk, int32_t id) {
    for (int m = 0; m < pk->n_nodes; m++)
        if (pk->nodes[m] == id) return m;
    return -1;
}

/* True if matmul kernel pk's output member `out` may take the memory of
 * its input `x`: x is read only by elementwise epilogue members of the
 * part computing `out` (part[m]: member m's connected part), all of the
 * matmul's shape, so gen_matmul.c's store_c reads x at the element it
 * then stores, in the invocation storing it. */
static bool epilogue_in_place(const spec *s, const tg_part_kernel *pk, int32_t x, int32_t out,
                              const int *part) {
    const tg_graph *g = s->g;
    int o = member_of(pk, out);
    if (o < 0) return false;
    int32_t mm = -1;
    for (int m = 0; m < pk->n_nodes; m++) {
        if (part[m] != part[o]) continue;
        tg_op_class c = tg_ops[g->nodes[pk->nodes[m]].op].klass;
        if (c == TG_CLASS_MATMUL && mm < 0)
            mm = pk->nodes[m];
        else if (c != TG_CLASS_ELEMENTWISE)
            return false;
    }
    if (mm < 0 || !same_shape(&g->nodes[out], &g->nodes[mm]) ||
        !same_shape(&g->nodes[x], &g->nodes[mm]))
        return false;
    for (int m = 0; m < pk->n_nodes; m++) {
        const tg_node *n = &g->nodes[pk->nodes[m]];
        for (int i = 0; i < n->n_inputs; i++)
            if (n->inputs[i] == x &&
                (part[m] != part[o] || pk->nodes[m] == mm || !same_shape(n, &g->nodes[mm])))
                return false;
    }
    return true;
}

/* The cross_entropy_grad node of kernel pk when it writes its gradient
 * row by row after reading the row whole, so the gradient may take the
 * logits' memory: a cross_entropy_grad kernel of its own (gen_grad.c: by
 * its invocation, or by the workgroup before a barrier), or a pair with
 * its cross_entropy on a device that runs pairs by rows
 * (tg_ce_pair_by_rows); else -1. */
static int32_t ce_grad_by_rows(const spec *s, const tg_part_kernel *pk) {
    if (pk->n_nodes == 1 && s->g->nodes[pk->nodes[0]].op == TG_OP_CROSS_ENTROPY_GRAD)
        return pk->nodes[0];
    if (pk->n_nodes != 2 || !s->ce_pair_rows) return -1;
    for (int m = 0; m < 2; m++)
        if (s->g->nodes[pk->nodes[m]].op == TG_OP_CROSS_ENTROPY_GRAD &&
            s->g->nodes[pk->nodes[1 - m]].op == TG_OP_CROSS_ENTROPY)
            return pk->nodes[m];
    return -1;
}

/* True if kernel pk's output `out` may take the memory of its input `x`
 * (request `req`) where x dies there: no other input shares that memory,
 * and x is a matmul epilogue operand read at the element it becomes, or
 * the logits of a gradient written by rows (ce_grad_by_rows). */
static bool may_take(const spec *s, const tg_part_kernel *pk, int32_t x, int req, int32_t out,
                     const int *part) {
    for (int i = 0; i < pk->n_inputs; i++)
        if (pk->inputs[i] != x && req_of(&s->locs[s->root[pk->inputs[i]]]) == req) return false;
    int32_t grad = ce_grad_by_rows(s, pk);
    if (grad >= 0) return s->g->nodes[grad].inputs[0] == x && out == grad;
    return epilogue_in_place(s, pk, x, out, part);
}

/* The planner's view of kernel kk: the arena buffers it reads and writes,
 * and the kernels before it: producers of its inputs and, for a state op
 * writing a variable in place, every kernel reading that variable. */
static void describe_kernel(const spec *s, int kk, tg_plan_kernel *k, int *reads, int *writes,
                            int *deps, uint64_t *in_place_reads, int *part) {
    const tg_partition *p = s->part;
    const tg_part_kernel *pk = &p->kernels[kk];
    int32_t read_node[64];
    bool pairs =
        (pk->kind == TG_CLASS_MATMUL || ce_grad_by_rows(s, pk) >= 0) && pk->n_outputs <= 64;
    /* out of memory: no reuse in place, still a valid plan */
    if (pairs) pairs = tg_connected_parts(s->g, pk->n_nodes, pk->nodes, part) > 0;
    memset(k, 0, sizeof *k);
    for (int i = 0; i < pk->n_inputs; i++) {
        int32_t r = s->root[pk->inputs[i]];
        if (req_of(&s->locs[r]) >= 0) {
            if (k->n_reads < 64) read_node[k->n_reads] = pk->inputs[i];
            reads[k->n_reads++] = req_of(&s->locs[r]);
        }
        if (p->kernel_of[r] >= 0) add_dep(k, deps, p->kernel_of[r]);
    }
    for (int j = 0; j < pk->n_outputs; j++)
        if (req_of(&s->locs[pk->outputs[j]]) >= 0) {
            in_place_reads[k->n_writes] = 0;
            for (int r = 0; pairs && r < k->n_reads && r < 64; r++)
                if (may_take(s, pk, read_node[r], reads[r], pk->outputs[j], part))
                    in_place_reads[k->n_writes] |= 1ull << r;
            writes[k->n_writes++] = req_of(&s->locs[pk->outputs[j]]);
        }
    if (pairs) k->in_place_reads = in_place_reads;
    /* in place: each element is read and written by one invocation, not
     * so through a movement member (a permuted or sliced read) */
    k->in_place_ok = pk->kind == TG_CLASS_ELEMENTWISE;
    for (int m = 0; m < pk->n_nodes; m++)
        if (tg_ops[s->g->nodes[pk->nodes[m]].op].klass == TG_CLASS_MOVEMENT) k->in_place_ok = false;
    for (int m = 0; m < pk->n_nodes; m++)
        if (is_state(&s->g->nodes[pk->nodes[m]]))
            state_writes(s, kk, pk->nodes[m], k, writes, deps);
    k->reads = reads;
    k->writes = writes;
    k->deps = deps;
}

/* Replaces a request index by its planned chunk and offset. */
static void place_loc(const tg_plan_buf *reqs, loc *l) {
    if (l->kind != LOC_ARENA) return;
    const tg_plan_buf *r = &reqs[l->buf];
    l->buf = r->chunk;
    l->offset = r->offset;
}

/* A plan of the arena for s->part: the kernels' order (order[i]: the
 * partition index of the i-th to run), every request's lifetime and
 * place, the chunks' sizes and the figures. */
typedef struct arena_plan {
    int *order;
    tg_plan_buf *reqs;
    uint64_t *chunks;
    int n_chunks;
    tg_plan_stats mem;
} arena_plan;

static void arena_plan_free(arena_plan *p) {
    free(p->order);
    free(p->reqs);
    free(p->chunks);
    memset(p, 0, sizeof *p);
}

/* Plans s->part over the requests reqs0: the memory-aware schedule or
 * the partition's order, whichever needs the smaller arena. */
static tg_status plan_partition(const builder *b, const tg_plan_buf *reqs0, arena_plan *out) {
    const spec *s = b->s;
    int nk = s->part->n_kernels, nr = b->n_reqs;
    memset(out, 0, sizeof *out);
    size_t per = 2 * TG_KERNEL_MAX_IO + (size_t)nk + 1;
    for (int i = 0; i < nk; i++) per += (size_t)s->part->kernels[i].n_inputs;
    int max_members = 1;
    for (int i = 0; i < nk; i++)
        if (s->part->kernels[i].n_nodes > max_members) max_members = s->part->kernels[i].n_nodes;
    tg_plan_kernel *pk = calloc((size_t)nk + 1, sizeof *pk);
    int *pool = malloc(((size_t)nk + 1) * 3 * per * sizeof *pool);
    uint64_t *masks = malloc(((size_t)nk + 1) * 64 * sizeof *masks);
    int *part = malloc((size_t)max_members * sizeof *part);
    arena_plan alt = {0};
    out->order = malloc(((size_t)nk + 1) * sizeof *out->order);
    out->reqs = malloc(((size_t)nr + 1) * sizeof *out->reqs);
    alt.order = malloc(((size_t)nk + 1) * sizeof *alt.order);
    alt.reqs = malloc(((size_t)nr + 1) * sizeof *alt.reqs);
    tg_status st = pk && pool && masks && part && out->order && out->reqs && alt.order && alt.reqs
                       ? TG_OK
                       : tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; st == TG_OK && i < nk; i++)
        describe_kernel(s, i, &pk[i], pool + (size_t)i * 3 * per, pool + (size_t)i * 3 * per + per,
                        pool + (size_t)i * 3 * per + 2 * per, masks + (size_t)i * 64, part);
    if (st == TG_OK) st = tg_plan_schedule(nk, pk, nr, reqs0, out->order);
    if (st == TG_OK) {
        memcpy(out->reqs, reqs0, (size_t)nr * sizeof *out->reqs);
        tg_plan_lifetimes(nk, pk, out->order, nr, out->reqs);
        st = tg_plan_offsets(nr, out->reqs, b->arena.align, b->arena.max_bytes, &out->chunks,
                             &out->n_chunks, &out->mem);
    }
    /* the partition's own order (a topological order of the data flow;
     * kept only if it also satisfies the state ops' constraints) */
    bool ok = st == TG_OK;
    for (int i = 0; i < nk; i++) alt.order[i] = i;
    for (int i = 0; i < nk && ok; i++)
        for (int d = 0; d < pk[i].n_deps; d++) ok = ok && pk[i].deps[d] < i;
    if (ok) {
        memcpy(alt.reqs, reqs0, (size_t)nr * sizeof *alt.reqs);
        tg_plan_lifetimes(nk, pk, alt.order, nr, alt.reqs);
        st = tg_plan_offsets(nr, alt.reqs, b->arena.align, b->arena.max_bytes, &alt.chunks,
                             &alt.n_chunks, &alt.mem);
        if (st == TG_OK && alt.mem.arena < out->mem.arena) {
            arena_plan t = *out;
            *out = alt;
            alt = t;
        }
    }
    arena_plan_free(&alt);
    free(pk);
    free(pool);
    free(masks);
    free(part);
    if (st != TG_OK) arena_plan_free(out);
    return st;
}

/* The partition index of the kernel running at plan p's peak, or -1 (the
 * start or the end). */
static int peak_kernel(const arena_plan *p, int nk) {
    int at = p->mem.peak_at;
    return at >= 1 && at <= nk ? p->order[at - 1] : -1;
}

static int cmp_bytes_desc(const void *a, const void *b) {
    const tg_plan_buf *x = *(const tg_plan_buf *const *)a, *y = *(const tg_plan_buf *const *)b;
    return (x->bytes < y->bytes) - (x->bytes > y->bytes);
}

/* The text of tg_executable_memory_peak for plan p: its peak (found by
 * tg_plan_offsets) and, largest first, the (32 largest) buffers live
 * there, each named by a node that lives in it. NULL on out of memory. */
static char *describe_peak(const spec *s, const arena_plan *p, int nr) {
    int nk = s->part->n_kernels, at = p->mem.peak_at, n = 0;
    uint64_t most = p->mem.lower_bound;
    const tg_plan_buf **live = malloc(((size_t)nr + 1) * sizeof *live);
    tg_sb b = {0};
    if (!live) return NULL;
    for (int r = 0; r < nr; r++)
        if (p->reqs[r].same_as < 0 && p->reqs[r].first <= at && at <= p->reqs[r].last)
            live[n++] = &p->reqs[r];
    qsort(live, (size_t)n, sizeof *live, cmp_bytes_desc);
    char lab[200];
    if (at >= 1 && at <= nk)
        tg_sb_printf(&b, "peak: %llu bytes in %d buffers, at kernel %d of %d (%s)\n",
                     (unsigned long long)most, n, at, nk,
                     node_label(s->g, s->part->kernels[p->order[at - 1]].root, lab, sizeof lab));
    else
        tg_sb_printf(&b, "peak: %llu bytes in %d buffers, %s the kernels\n",
                     (unsigned long long)most, n, at == 0 ? "before" : "after");
    for (int i = 0; i < n && i < 32; i++) {
        int r = (int)(live[i] - p->reqs), who = -1, then = -1;
        for (int id = 0; id < s->g->n_nodes; id++) {
            int q = s->locs[id].kind == LOC_ARENA ? s->locs[id].buf : -1;
            if (q == r && who < 0) who = id;
            if (q >= 0 && q < nr && q != r && p->reqs[q].same_as == r && then < 0) then = id;
        }
        tg_sb_printf(&b, "  %12llu  %s", (unsigned long long)live[i]->bytes,
                     who >= 0 ? node_label(s->g, who, lab, sizeof lab) : "a feed or temporary");
        if (then >= 0)
            tg_sb_printf(&b, ", then in place %s", node_label(s->g, then, lab, sizeof lab));
        tg_sb_printf(&b, ", live over kernels %d..%d\n", live[i]->first, live[i]->last);
    }
    if (n > 32) tg_sb_printf(&b, "  and %d smaller buffers\n", n - 32);
    free(live);
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    return b.s;
}

/* Orders the kernels and plans the arena (plan_partition). Where a
 * kernel of independent parts (a matmul group, sibling copies, an
 * optimizer group) runs at the peak, its parts as kernels of their own
 * may need less (a part's last reader of a large buffer runs first and
 * frees it): split while that lowers the arena by 64 KiB and 1/64 or
 * more (a dispatch is worth more than a few bytes), one dispatch a part.
 * Then every arena loc gets its place; *order_out: malloc'ed. */
static tg_status plan_arena(builder *b, int **order_out) {
    spec *s = b->s;
    int nr = b->n_reqs;
    *order_out = NULL;
    tg_plan_buf *reqs0 = malloc(((size_t)nr + 1) * sizeof *reqs0);
    if (!reqs0) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    memcpy(reqs0, b->reqs, (size_t)nr * sizeof *reqs0);
    arena_plan best;
    tg_status st = plan_partition(b, reqs0, &best);
    for (int tries = 0; st == TG_OK && tries < 8; tries++) {
        int k = peak_kernel(&best, s->part->n_kernels);
        tg_partition *split = NULL;
        if (k >= 0) st = tg_partition_split_kernel(s->g, s->part, k, &split);
        if (!split) break;
        tg_partition *whole = s->part;
        arena_plan cand;
        s->part = split;
        st = plan_partition(b, reqs0, &cand);
        uint64_t gain =
            st == TG_OK && cand.mem.arena < best.mem.arena ? best.mem.arena - cand.mem.arena : 0;
        if (gain >= 65536 && gain >= best.mem.arena / 64) {
            arena_plan_free(&best);
            best = cand;
            tg_partition_free(whole);
            continue;
        }
        if (st == TG_OK) arena_plan_free(&cand);
        s->part = whole;
        tg_partition_free(split);
        break;
    }
    free(reqs0);
    if (st != TG_OK) return st;
    memcpy(b->reqs, best.reqs, (size_t)nr * sizeof *b->reqs);
    s->mem = best.mem;
    free(s->peak);
    s->peak = describe_peak(s, &best, nr);
    free(b->arena.used);
    b->arena.used = best.chunks;
    b->arena.n_chunks = b->arena.cap = best.n_chunks;
    best.chunks = NULL;
    *order_out = best.order;
    best.order = NULL;
    arena_plan_free(&best);
    for (int id = 0; id < s->g->n_nodes; id++) place_loc(b->reqs, &s->locs[id]);
    for (int i = 0; i < s->n_outs; i++) place_loc(b->reqs, &s->outs[i].at);
    for (int i = 0; i < s->n_writeback; i++) {
        place_loc(b->reqs, &s->writeback[i].src);
        place_loc(b->reqs, &s->writeback[i].dst);
    }
    for (int i = 0; i < s->n_preload; i++) {
        place_loc(b->reqs, &s->preload[i].src);
        place_loc(b->reqs, &s->preload[i].dst);
    }
    for (int i = 0; i < s->n_feeds; i++) {
        place_loc(b->reqs, &s->feeds[i].at);
        place_loc(b->reqs, &s->feeds[i].src);
    }
    for (int i = 0; i < s->n_targets; i++) {
        place_loc(b->reqs, &s->targets[i].at);
        place_loc(b->reqs, &s->targets[i].src);
    }
    return TG_OK;
}

static tg_status check_static(const tg_executable *e, const tg_graph *g) {
    for (int id = 0; id < g->n_nodes; id++) {
        const tg_node *n = &g->nodes[id];
        if (!e->needed[id]) continue;
        for (int d = 0; d < n->rank; d++)
            if (n->shape[d] < 0) {
                char lab[160];
                return tg_set_error(TG_ERR_UNSUPPORTED,
                                    "tg_compile: %s has a dynamic dimension that no feed fixes "
                                    "(variables must have static shapes)",
                                    node_label(g, id, lab, sizeof lab));
            }
    }
    return TG_OK;
}

static tg_status build_spec(tg_executable *e, const int64_t (*shapes)[TG_MAX_RANK], spec **out) {
    *out = NULL;
    spec *s = calloc(1, sizeof *s);
    if (!s) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    builder b = {.e = e, .s = s, .caps = &e->dev->caps};
    const tg_vk_caps *caps = b.caps;
    uint64_t align = 16;
    if (caps->min_storage_buffer_offset_alignment > align)
        align = caps->min_storage_buffer_offset_alignment;
    if (caps->min_texel_buffer_offset_alignment > align)
        align = caps->min_texel_buffer_offset_alignment;
    /* TG_ARENA_MAX_BYTES (debug) lowers the buffer size limit, so tests can
     * exercise an arena split into many buffers without huge tensors. */
    uint64_t max_bytes = caps->max_buffer_bytes;
    const char *env = getenv("TG_ARENA_MAX_BYTES");
    if (env && strtoull(env, NULL, 10) >= 16 && strtoull(env, NULL, 10) < max_bytes)
        max_bytes = strtoull(env, NULL, 10);
    b.arena = b.consts = b.scratch = (packer){.align = align, .max_bytes = max_bytes};
    s->profile = e->profile;
    s->ce_pair_rows = tg_ce_pair_by_rows(caps);

    tg_status st = TG_OK;
    s->key = calloc((size_t)(e->n_ph ? e->n_ph : 1), sizeof *s->key);
    if (!s->key) st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    if (st == TG_OK && e->n_ph) memcpy(s->key, shapes, (size_t)e->n_ph * sizeof *s->key);
    if (st == TG_OK) {
        tg_tensor *ph = malloc((size_t)(e->n_ph ? e->n_ph : 1) * sizeof *ph);
        if (!ph) st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        for (int i = 0; ph && i < e->n_ph; i++) ph[i].id = e->ph[i];
        if (ph) s->g = tg_graph_specialize(e->g, e->n_ph, ph, shapes);
        free(ph);
        if (st == TG_OK && !s->g) st = TG_ERR_SHAPE; /* message set by the specialisation */
    }
    if (st == TG_OK) st = check_static(e, s->g);
    if (st == TG_OK) st = optimise(e, s);
    if (st == TG_OK) {
        int n = s->g->n_nodes;
        s->root = malloc((size_t)(n ? n : 1) * sizeof *s->root);
        s->locs = calloc((size_t)(n ? n : 1), sizeof *s->locs);
        if (!s->root || !s->locs) st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        for (int id = 0; st == TG_OK && id < n; id++) {
            const tg_node *nd = &s->g->nodes[id];
            s->root[id] = is_alias(nd) ? s->root[nd->inputs[0]] : id;
        }
    }
    int *order = NULL;
    if (st == TG_OK) st = place_nodes(&b);
    if (st == TG_OK) st = place_io(&b);
    if (st == TG_OK) st = plan_arena(&b, &order);
    /* the arena exists before the kernels so that a bad size fails early */
    if (st == TG_OK) st = create_chunks(e->dev, &b.arena, &s->arena, &s->n_arena);
    if (st == TG_OK) st = upload_constants(&b);
    if (st == TG_OK) st = create_staging(&b);
    if (st == TG_OK) st = make_kernels(&b, order);
    if (st == TG_OK) st = create_scratch(&b);
    free(order);
    free(b.reqs);
    free(b.arena.used);
    free(b.consts.used);
    free(b.scratch.used);
    if (st != TG_OK) {
        free_spec(e, s);
        return st;
    }
    *out = s;
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Recording                                                           */
/* ------------------------------------------------------------------ */

typedef struct region {
    VkBuffer buf;
    uint64_t offset, size;
    bool write;
} region;

typedef struct recorder {
    spec *s;
    tg_vk_cmd *cmd;
    region *touched; /* since the last barrier */
    int n_touched, cap_touched;
} recorder;

static const tg_vk_buffer *loc_buffer(const spec *s, const loc *l) {
    switch (l->kind) {
    case LOC_ARENA: return &s->arena[l->buf];
    case LOC_CONST: return &s->consts[l->buf];
    case LOC_VAR: return &s->vars[l->buf].v->buf;
    case LOC_SCRATCH: return &s->scratch[l->buf];
    default: return NULL;
    }
}

static region region_of(const spec *s, const loc *l, bool write) {
    return (region){loc_buffer(s, l)->buffer, l->offset, l->padded, write};
}

static bool regions_overlap(const region *a, const region *b) {
    return a->buf == b->buf && a->offset < b->offset + b->size && b->offset < a->offset + a->size;
}

/* True if dispatching kernel k must wait for what ran since the last
 * barrier: it reads something written, or writes something touched. */
static bool needs_barrier(const recorder *r, const exec_kernel *k) {
    for (int i = 0; i < k->n_bindings; i++) {
        region mine = region_of(r->s, &k->at[i], i >= k->n_inputs);
        for (int j = 0; j < r->n_touched; j++)
            if ((mine.write || r->touched[j].write) && regions_overlap(&mine, &r->touched[j]))
                return true;
    }
    return false;
}

static tg_status touch(recorder *r, const exec_kernel *k) {
    if (r->n_touched + k->n_bindings > r->cap_touched) {
        int cap = r->cap_touched ? 2 * r->cap_touched : 64;
        while (cap < r->n_touched + k->n_bindings) cap *= 2;
        region *t = realloc(r->touched, (size_t)cap * sizeof *t);
        if (!t) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        r->touched = t;
        r->cap_touched = cap;
    }
    for (int i = 0; i < k->n_bindings; i++)
        r->touched[r->n_touched++] = region_of(r->s, &k->at[i], i >= k->n_inputs);
    return TG_OK;
}

static tg_status record_copy(recorder *r, const loc *src, const loc *dst, uint64_t bytes) {
    if (bytes == 0) return TG_OK;
    return tg_vk_cmd_copy(r->cmd, loc_buffer(r->s, src), src->offset, loc_buffer(r->s, dst),
                          dst->offset, bytes);
}

static tg_status record_dispatches(tg_executable *e, recorder *r) {
    spec *s = r->s;
    tg_status st = TG_OK;
    for (int i = 0; st == TG_OK && i < s->n_kernels; i++) {
        exec_kernel *k = &s->kernels[i];
        if (!k->groups[0] || !k->groups[1] || !k->groups[2]) continue; /* empty tensor */
        tg_vk_binding bind[TG_VK_MAX_BINDINGS];
        memset(bind, 0, sizeof bind);
        for (int j = 0; st == TG_OK && j < k->n_bindings; j++) {
            const tg_vk_buffer *buf = loc_buffer(s, &k->at[j]);
            bind[j].buffer = buf;
            bind[j].offset = k->at[j].offset;
            bind[j].range = k->at[j].padded;
            if (tg_vk_bind_is_texel(k->kinds[j])) {
                size_t ts = tg_vk_texel_size(k->formats[j]);
                uint64_t range = tg_exec_align(k->at[j].bytes ? k->at[j].bytes : ts, ts);
                st = tg_vk_buffer_view_create(e->dev, buf, k->formats[j], k->at[j].offset, range,
                                              &k->views[j]);
                bind[j].view = k->views[j];
            }
        }
        if (st == TG_OK && needs_barrier(r, k)) {
            st = tg_vk_cmd_compute_barrier(r->cmd);
            r->n_touched = 0;
        }
        if (st == TG_OK) st = touch(r, k);
        if (st == TG_OK)
            st = tg_vk_cmd_dispatch(r->cmd, s->pipes[k->pipe]->p, bind,
                                    k->push_bytes ? k->push : NULL, k->push_bytes, k->groups);
        if (st == TG_OK) {
            memcpy(s->dispatch_names[s->n_dispatch], k->name, 64);
            s->n_dispatch++;
        }
        if (st != TG_OK) {
            char lab[160];
            st = tg_exec_wrap_error(st, "recording %s", node_label(s->g, k->node, lab, sizeof lab));
        }
    }
    return st;
}

/* Records the command buffer of a spec whose variables are prepared. */
static tg_status record(tg_executable *e, spec *s) {
    tg_vk_cmd_free(s->cmd);
    s->cmd = NULL;
    free_views(e->dev, s);
    s->n_dispatch = 0;
    if (!s->dispatch_names) {
        s->dispatch_names = calloc((size_t)(s->n_kernels ? s->n_kernels : 1), 64);
        if (!s->dispatch_names) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    }
    recorder r = {.s = s};
    tg_status st = tg_vk_cmd_begin(e->dev, s->profile ? TG_VK_CMD_PROFILE : 0, &r.cmd);
    if (st != TG_OK) return st;

    /* start: feeds from staging, temporaries from their variables */
    bool copied = false;
    for (int i = 0; st == TG_OK && i < s->n_feeds; i++) {
        exec_io *f = &s->feeds[i];
        if (!f->stage.buffer || !f->at.bytes) continue;
        st = tg_vk_cmd_copy(r.cmd, &f->stage, 0, &s->arena[f->at.buf], f->at.offset, f->at.bytes);
        copied = true;
    }
    for (int i = 0; st == TG_OK && i < s->n_preload; i++) {
        st = record_copy(&r, &s->preload[i].src, &s->preload[i].dst, s->preload[i].dst.bytes);
        copied = true;
    }
    if (st == TG_OK && copied)
        st = tg_vk_cmd_barrier(r.cmd, TG_VK_SYNC_TRANSFER, TG_VK_SYNC_COMPUTE);

    if (st == TG_OK) st = record_dispatches(e, &r);

    /* end: snapshots of targets outside the arena, write-backs, readbacks */
    bool any_snapshot = false, any_readback = false;
    for (int i = 0; i < s->n_targets; i++) {
        any_snapshot |= s->targets[i].snapshot;
        any_readback |= s->targets[i].stage.buffer != VK_NULL_HANDLE;
    }
    if (st == TG_OK && (any_snapshot || any_readback || s->n_writeback))
        st = tg_vk_cmd_barrier(r.cmd, TG_VK_SYNC_COMPUTE, TG_VK_SYNC_TRANSFER);
    for (int i = 0; st == TG_OK && i < s->n_targets; i++)
        if (s->targets[i].snapshot)
            st = record_copy(&r, &s->targets[i].src, &s->targets[i].at, s->targets[i].src.bytes);
    if (st == TG_OK && any_snapshot && (s->n_writeback || any_readback))
        st = tg_vk_cmd_barrier(r.cmd, TG_VK_SYNC_TRANSFER, TG_VK_SYNC_TRANSFER);
    for (int i = 0; st == TG_OK && i < s->n_writeback; i++)
        st = record_copy(&r, &s->writeback[i].src, &s->writeback[i].dst, s->writeback[i].src.bytes);
    for (int i = 0; st == TG_OK && i < s->n_targets; i++) {
        exec_io *t = &s->targets[i];
        if (t->stage.buffer && t->at.bytes)
            st = tg_vk_cmd_copy(r.cmd, &s->arena[t->at.buf], t->at.offset, &t->stage, 0,
                                t->at.bytes);
    }
    if (st == TG_OK) st = tg_vk_cmd_end(r.cmd);
    free(r.touched);
    if (st != TG_OK) {
        tg_vk_cmd_free(r.cmd);
        free_views(e->dev, s);
        return st;
    }
    s->cmd = r.cmd;
    for (int i = 0; i < s->n_vars; i++) s->vars[i].id = s->vars[i].v->id;
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Compile                                                             */
/* ------------------------------------------------------------------ */

static void mark_needed(const tg_graph *g, int n_targets, const int32_t *targets, int n_ops,
                        const int32_t *ops, bool *needed) {
    for (int i = 0; i < n_targets; i++) needed[targets[i]] = true;
    for (int i = 0; i < n_ops; i++) needed[ops[i]] = true;
    for (int id = g->n_nodes - 1; id >= 0; id--) {
        if (!needed[id]) continue;
        const tg_node *n = &g->nodes[id];
        for (int k = 0; k < n->n_inputs; k++) needed[n->inputs[k]] = true;
    }
}

static tg_status copy_handles(const tg_graph *g, int n, const tg_tensor *ts, const char *what,
                              int32_t **out) {
    *out = NULL;
    if (n < 0 || (n > 0 && !ts))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_compile: bad %s array (count %d)", what,
                            n);
    *out = malloc((size_t)(n ? n : 1) * sizeof **out);
    if (!*out) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < n; i++) {
        if (!tg_tensor_valid(g, ts[i]))
            return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_compile: %s[%d] is not a valid tensor",
                                what, i);
        (*out)[i] = ts[i].id;
    }
    return TG_OK;
}

static bool env_is_1(const char *name) {
    const char *v = getenv(name);
    return v && strcmp(v, "1") == 0;
}

static tg_status setup(tg_executable *e, const tg_graph *g, int n_targets, const tg_tensor *targets,
                       int n_target_ops, const tg_tensor *target_ops) {
    e->g = tg_graph_clone(g);
    if (!e->g) return tg_exec_wrap_error(TG_ERR_NO_MEMORY, "tg_compile: cannot copy the graph");
    tg_status st = copy_handles(g, n_targets, targets, "targets", &e->targets);
    if (st == TG_OK) st = copy_handles(g, n_target_ops, target_ops, "target_ops", &e->target_ops);
    if (st != TG_OK) return st;
    e->n_targets = n_targets;
    e->n_target_ops = n_target_ops;
    e->needed = calloc((size_t)(g->n_nodes ? g->n_nodes : 1), sizeof *e->needed);
    e->ph = malloc((size_t)(g->n_nodes ? g->n_nodes : 1) * sizeof *e->ph);
    if (!e->needed || !e->ph) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    mark_needed(g, n_targets, e->targets, n_target_ops, e->target_ops, e->needed);
    for (int id = 0; id < g->n_nodes; id++) {
        const tg_node *n = &g->nodes[id];
        if (!e->needed[id]) continue;
        if (n->op == TG_OP_PLACEHOLDER) e->ph[e->n_ph++] = id;
        if (n->op == TG_OP_VARIABLE && !e->store)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "tg_compile: the graph uses variable '%s' but no store was given",
                                n->name);
    }
    return TG_OK;
}

static bool needed_static(const tg_executable *e) {
    for (int i = 0; i < e->n_ph; i++) {
        const tg_node *n = &e->g->nodes[e->ph[i]];
        for (int d = 0; d < n->rank; d++)
            if (n->shape[d] < 0) return false;
    }
    return true;
}

static tg_status insert_spec(tg_executable *e, spec *s);

tg_status tg_compile(tg_device *dev, const tg_graph *g, tg_store *store, int n_targets,
                     const tg_tensor *targets, int n_target_ops, const tg_tensor *target_ops,
                     const tg_compile_options *opts, tg_executable **out) {
    if (out) *out = NULL;
    if (!dev || !g || !out)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_compile: NULL device, graph or out");
    if (g->status != TG_OK)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_compile: the graph has an error: %s",
                            g->error);
    if (n_targets + n_target_ops <= 0)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_compile: nothing to compute: no targets and no target ops");
    tg_executable *e = calloc(1, sizeof *e);
    if (!e) return tg_set_error(TG_ERR_NO_MEMORY, "tg_compile: out of memory");
    e->dev = dev;
    e->store = store;
    e->max_specs =
        opts && opts->max_specializations > 0 ? opts->max_specializations : DEFAULT_MAX_SPECS;
    e->profile = (opts && opts->profile) || env_is_1("TG_PROFILE");
    const char *dis = opts ? opts->disable_passes : NULL, *env = getenv("TG_DISABLE_PASSES");
    if ((dis && dis[0]) || (env && env[0])) {
        size_t len = (dis ? strlen(dis) : 0) + (env ? strlen(env) : 0) + 2;
        e->disable_passes = malloc(len);
        if (e->disable_passes)
            snprintf(e->disable_passes, len, "%s%s%s", dis ? dis : "",
                     dis && dis[0] && env && env[0] ? "," : "", env ? env : "");
    }
    e->specs = calloc((size_t)e->max_specs, sizeof *e->specs);
    tg_status st = e->specs ? TG_OK : tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    if (st == TG_OK) st = setup(e, g, n_targets, targets, n_target_ops, target_ops);
    if (st == TG_OK && needed_static(e)) {
        /* no dynamic dims: compile now, keyed by the static shapes */
        int64_t(*shapes)[TG_MAX_RANK] = calloc(e->n_ph > 0 ? (size_t)e->n_ph : 1u, sizeof *shapes);
        if (!shapes) st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        for (int i = 0; shapes && i < e->n_ph; i++)
            memcpy(shapes[i], e->g->nodes[e->ph[i]].shape, sizeof shapes[i]);
        spec *s = NULL;
        if (st == TG_OK) st = build_spec(e, (const int64_t(*)[TG_MAX_RANK])shapes, &s);
        if (st == TG_OK) st = insert_spec(e, s);
        free(shapes);
    }
    if (st != TG_OK) {
        tg_executable_free(e);
        return st;
    }
    *out = e;
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* The specialisation cache                                            */
/* ------------------------------------------------------------------ */

static spec *find_spec(tg_executable *e, const int64_t (*shapes)[TG_MAX_RANK]) {
    for (int i = 0; i < e->n_specs; i++) {
        const spec *s = e->specs[i];
        bool same = true;
        for (int p = 0; p < e->n_ph && same; p++)
            for (int d = 0; d < e->g->nodes[e->ph[p]].rank && same; d++)
                same = s->key[p][d] == shapes[p][d];
        if (same) return e->specs[i];
    }
    return NULL;
}

/* Adds a compiled spec, evicting the least recently used when full. */
static tg_status insert_spec(tg_executable *e, spec *s) {
    e->compiles++;
    s->last_used = ++e->clock;
    if (e->n_specs == e->max_specs) {
        int lru = 0;
        for (int i = 1; i < e->n_specs; i++)
            if (e->specs[i]->last_used < e->specs[lru]->last_used) lru = i;
        if (e->last == e->specs[lru]) e->last = NULL;
        free_spec(e, e->specs[lru]);
        e->specs[lru] = e->specs[--e->n_specs];
    }
    e->specs[e->n_specs++] = s;
    e->last = s;
    return TG_OK;
}

/* ------------------------------------------------------------------ */
/* Running                                                             */
/* ------------------------------------------------------------------ */

/* Matches feeds to the needed placeholders; shapes[i] gets the shape of
 * e->ph[i]; value[i] its array. */
static tg_status match_feeds(tg_executable *e, const char *fn, int n_feeds, const tg_feed *feeds,
                             int64_t (*shapes)[TG_MAX_RANK], const tg_array **value) {
    if (n_feeds < 0 || (n_feeds > 0 && !feeds))
        return tg_set_error(TG_ERR_INVALID_ARGUMENT, "%s: bad feeds array (count %d)", fn, n_feeds);
    for (int i = 0; i < e->n_ph; i++) value[i] = NULL;
    for (int i = 0; i < n_feeds; i++) {
        const tg_node *n = tg_node_at(e->g, feeds[i].tensor);
        if (!n || n->op != TG_OP_PLACEHOLDER)
            return tg_set_error(TG_ERR_INVALID_ARGUMENT, "%s: feeds[%d] is not a placeholder", fn,
                                i);
        const tg_array *a = feeds[i].value;
        if (!a || (!a->data && tg_array_count(a) > 0))
            return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                                "%s: feed for placeholder '%s' has no data", fn, n->name);
        bool ok = a->dtype == n->dtype && a->rank == n->rank;
        for (int d = 0; ok && d < n->rank; d++)
            ok = a->shape[d] >= 0 && (n->shape[d] < 0 || n->shape[d] == a->shape[d]);
        if (!ok) {
            char want[96], got[96];
            return tg_set_error(TG_ERR_SHAPE, "%s: placeholder '%s' is %s; cannot feed %s", fn,
                                n->name,
                                tg_shape_str(n->dtype, n->rank, n->shape, want, sizeof want),
                                tg_shape_str(a->dtype, a->rank, a->shape, got, sizeof got));
        }
        for (int p = 0; p < e->n_ph; p++) {
            if (e->ph[p] != feeds[i].tensor.id) continue;
            if (value[p])
                return tg_set_error(TG_ERR_INVALID_ARGUMENT, "%s: placeholder '%s' is fed twice",
                                    fn, n->name);
            value[p] = a;
            memset(shapes[p], 0, sizeof shapes[p]);
            memcpy(shapes[p], a->shape, (size_t)a->rank * sizeof a->shape[0]);
        }
    }
    for (int p = 0; p < e->n_ph; p++)
        if (!value[p]) {
            const tg_node *n = &e->g->nodes[e->ph[p]];
            char want[96];
            return tg_set_error(
                TG_ERR_INVALID_ARGUMENT, "%s: placeholder '%s' %s (node %d) is needed but not fed",
                fn, n->name, tg_shape_str(n->dtype, n->rank, n->shape, want, sizeof want),
                e->ph[p]);
        }
    return TG_OK;
}

static tg_status prepare_vars(tg_executable *e, spec *s, bool *rerecord) {
    for (int i = 0; i < s->n_vars; i++) {
        exec_var *v = &s->vars[i];
        tg_status st =
            tg_store_device_prepare(e->store, e->dev, &s->g->nodes[v->node], &v->hint, &v->v);
        if (st != TG_OK) return st;
        if (v->v->id != v->id) *rerecord = true;
    }
    return TG_OK;
}

static tg_status write_feeds(tg_executable *e, spec *s, const tg_array **value) {
    for (int i = 0; i < s->n_feeds; i++) {
        exec_io *f = &s->feeds[i];
        if (f->count == 0) continue;
        tg_vk_buffer *dst = f->stage.buffer ? &f->stage : &s->arena[f->at.buf];
        uint64_t off = f->stage.buffer ? 0 : f->at.offset;
        const void *src = value[i]->data;
        void *tmp = NULL;
        if (f->storage != f->dtype) {
            tmp = malloc(f->at.bytes);
            if (!tmp) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory converting a feed");
            tg_exec_to_storage(f->dtype, f->storage, src, tmp, f->count);
            src = tmp;
        }
        tg_status st = tg_vk_buffer_upload(e->dev, dst, off, src, f->at.bytes);
        free(tmp);
        if (st != TG_OK) return st;
    }
    return TG_OK;
}

static tg_status encode(tg_executable *e, const char *fn, int n_feeds, const tg_feed *feeds,
                        spec **out) {
    if (!e) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "%s: NULL executable", fn);
    if (e->pending)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "%s: the executable has a run in flight; tg_wait for it first", fn);
    size_t np = (size_t)(e->n_ph ? e->n_ph : 1);
    int64_t(*shapes)[TG_MAX_RANK] = calloc(np, sizeof *shapes);
    const tg_array **value = calloc(np, sizeof *value);
    tg_status st = shapes && value ? TG_OK : tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    if (st == TG_OK) st = match_feeds(e, fn, n_feeds, feeds, shapes, value);
    spec *s = NULL;
    if (st == TG_OK) {
        s = find_spec(e, (const int64_t(*)[TG_MAX_RANK])shapes);
        if (!s) {
            st = build_spec(e, (const int64_t(*)[TG_MAX_RANK])shapes, &s);
            if (st == TG_OK) st = insert_spec(e, s);
        }
    }
    bool rerecord = false;
    if (st == TG_OK) {
        s->last_used = ++e->clock;
        e->last = s;
        st = prepare_vars(e, s, &rerecord);
    }
    if (st == TG_OK && (!s->cmd || rerecord)) st = record(e, s);
    if (st == TG_OK) st = write_feeds(e, s, value);
    if (st == TG_OK) st = tg_vk_cmd_submit(s->cmd);
    free(shapes);
    free(value);
    if (st != TG_OK) return st;
    e->pending = true;
    *out = s;
    return TG_OK;
}

static tg_status read_target(tg_executable *e, spec *s, exec_io *t, tg_array *out) {
    const tg_node *n = &s->g->nodes[t->node];
    tg_status st = tg_array_alloc(out, n->dtype, n->rank, n->shape);
    if (st != TG_OK || t->count == 0) return st;
    const tg_vk_buffer *src = t->stage.buffer ? &t->stage : &s->arena[t->at.buf];
    uint64_t off = t->stage.buffer ? 0 : t->at.offset;
    if (t->storage == t->dtype)
        return tg_vk_buffer_download(e->dev, src, off, out->data, t->at.bytes);
    void *tmp = malloc(t->at.bytes);
    if (!tmp) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory reading a result");
    st = tg_vk_buffer_download(e->dev, src, off, tmp, t->at.bytes);
    if (st == TG_OK) tg_exec_from_storage(t->storage, t->dtype, tmp, out->data, t->count);
    free(tmp);
    return st;
}

static tg_status record_profile(tg_executable *e, spec *s) {
    if (!tg_vk_cmd_profiling(s->cmd) || s->n_dispatch == 0) return TG_OK;
    double *us = malloc((size_t)s->n_dispatch * sizeof *us);
    if (!us) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    tg_status st = tg_vk_cmd_timings(s->cmd, us, s->n_dispatch);
    if (st == TG_OK)
        st = tg_profile_add_run(&e->prof, s->n_dispatch, (const char(*)[64])s->dispatch_names, us);
    free(us);
    return st;
}

static tg_status finish(tg_executable *e, spec *s, tg_array *results) {
    tg_status st = tg_vk_cmd_wait(s->cmd, UINT64_MAX);
    e->pending = false;
    if (st != TG_OK) return st;
    for (int i = 0; i < s->n_vars; i++)
        if (s->vars[i].written)
            tg_store_device_mark_written(e->store, s->g->nodes[s->vars[i].node].name);
    if (s->n_targets > 0 && !results)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_run: results is NULL but there are %d targets", s->n_targets);
    for (int i = 0; st == TG_OK && i < s->n_targets; i++)
        st = read_target(e, s, &s->targets[i], &results[i]);
    if (st == TG_OK) st = record_profile(e, s);
    if (st != TG_OK)
        for (int i = 0; i < s->n_targets; i++) tg_array_free(&results[i]);
    return st;
}

tg_status tg_run(tg_executable *e, int n_feeds, const tg_feed *feeds, tg_array *results) {
    if (e && results && e->n_targets > 0)
        memset(results, 0, (size_t)e->n_targets * sizeof *results);
    if (e && e->n_targets > 0 && !results)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_run: results is NULL but there are %d targets", e->n_targets);
    spec *s = NULL;
    tg_status st = encode(e, "tg_run", n_feeds, feeds, &s);
    if (st != TG_OK) return st;
    return finish(e, s, results);
}

tg_status tg_encode(tg_executable *e, int n_feeds, const tg_feed *feeds, tg_pending **out) {
    if (!out) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_encode: out is NULL");
    *out = NULL;
    tg_pending *p = calloc(1, sizeof *p);
    if (!p) return tg_set_error(TG_ERR_NO_MEMORY, "tg_encode: out of memory");
    spec *s = NULL;
    tg_status st = encode(e, "tg_encode", n_feeds, feeds, &s);
    if (st != TG_OK) {
        free(p);
        return st;
    }
    p->e = e;
    p->s = s;
    *out = p;
    return TG_OK;
}

tg_status tg_wait(tg_pending *p, tg_array *results) {
    if (!p) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_wait: NULL pending run");
    if (results && p->e->n_targets > 0)
        memset(results, 0, (size_t)p->e->n_targets * sizeof *results);
    tg_status st = finish(p->e, p->s, results);
    free(p);
    return st;
}

/* ------------------------------------------------------------------ */
/* Queries                                                             */
/* ------------------------------------------------------------------ */

int tg_executable_specializations(const tg_executable *e) {
    return e ? e->compiles : 0;
}

int tg_executable_cached(const tg_executable *e) {
    return e ? e->n_specs : 0;
}

tg_status tg_executable_memory_stats(const tg_executable *e, uint64_t *arena, uint64_t *naive,
                                     uint64_t *lower_bound) {
    if (!e || !e->last)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_executable_memory_stats: nothing compiled yet");
    if (arena) *arena = e->last->mem.arena;
    if (naive) *naive = e->last->mem.naive;
    if (lower_bound) *lower_bound = e->last->mem.lower_bound;
    return TG_OK;
}

tg_status tg_executable_memory_peak(const tg_executable *e, char **text) {
    if (!text) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_executable_memory_peak: NULL text");
    *text = NULL;
    if (!e || !e->last)
        return tg_set_error(TG_ERR_INVALID_ARGUMENT,
                            "tg_executable_memory_peak: nothing compiled yet");
    size_t n = e->last->peak ? strlen(e->last->peak) + 1 : 0;
    if (!n || !(*text = malloc(n))) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    memcpy(*text, e->last->peak, n);
    return TG_OK;
}

int tg_executable_dispatches(const tg_executable *e) {
    if (!e || !e->last) return 0;
    const spec *s = e->last;
    if (s->cmd) return tg_vk_cmd_dispatch_count(s->cmd);
    int n = 0;
    for (int i = 0; i < s->n_kernels; i++)
        n += s->kernels[i].groups[0] && s->kernels[i].groups[1] && s->kernels[i].groups[2];
    return n;
}

tg_status tg_executable_profile(tg_executable *e, char **table, const char *trace_path) {
    if (table) *table = NULL;
    if (!e) return tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_executable_profile: NULL executable");
    if (table) {
        tg_status st = tg_profile_table(&e->prof, table);
        if (st != TG_OK) return st;
    }
    if (trace_path) {
        tg_status st = tg_profile_write_trace(&e->prof, trace_path);
        if (st != TG_OK) {
            if (table) {
                free(*table);
                *table = NULL;
            }
            return st;
        }
    }
    return TG_OK;
}
