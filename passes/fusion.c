/* fusion.c — partitions a graph into kernels (docs/passes.md, "fusion").
 *
 * Every needed node that computes something (not a source, not an alias
 * such as reshape) starts as its own kernel. Walking the nodes in order,
 * each node tries to merge its kernel with the kernel of each input; a
 * merge happens when it is one of
 *  - a chain: two kernels of elementwise ops (no root);
 *  - an epilogue: elementwise ops of the root's shape after a matmul,
 *    conv1d or reduction whose result is then used only inside the kernel;
 *  - a prologue: elementwise ops before a reduction, feeding the root
 *    directly; members used outside too, of the root input's shape, are
 *    also stored by the reduction (multi-output);
 *  - a batch sum: a sum over the batch axes of a matmul A^T B whose batch
 *    folds into K (weight gradients), one product;
 * and the merged kernel stays within the input/output limits and the
 * kernels stay acyclic. Then the optimizer updates are grouped: adamw
 * updates with equal hyperparameters whose results nothing reads share a
 * kernel (one dispatch for several variables, within the limits), each
 * taking the slice that produces its gradient (layer_norm_grad_wb's rows)
 * when nothing else reads it. Sibling matmuls (independent matmul kernels
 * that read one operand) share a kernel: backend/gen_group.c runs each
 * product on its own workgroups of one dispatch. Last, lone permutes, broadcasts and slices
 * of one node with one element count share a kernel (sibling copies).
 * The graph is not changed. These are exactly
 * the kernels the backend's generators take (backend/gen_dispatch.c):
 * other movement and opaque ops read their inputs from memory. */
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

/* Inputs and outputs of a kernel together: one binding each, at most
 * backend/vk.h's TG_VK_MAX_BINDINGS (lavapipe allows 32 storage buffers
 * per stage). */
#define TG_FUSION_MAX_BINDINGS 32

typedef struct fuser {
    const tg_graph *g;
    const tg_fusion_limits *lim;
    bool *needed, *is_target;
    tg_users users;
    int32_t *parent;             /* union-find over nodes; -1: in no kernel */
    int32_t *root;               /* per representative: the root node or -1 */
    int32_t *next, *head, *tail; /* member lists per representative */
    int32_t *seen;               /* stamps for distinct inputs and searches */
    int32_t stamp;
    int32_t *queue;
} fuser;

static int32_t find(fuser *f, int32_t x) {
    if (x < 0 || f->parent[x] < 0) return -1;
    while (f->parent[x] != x) {
        f->parent[x] = f->parent[f->parent[x]];
        x = f->parent[x];
    }
    return x;
}

static tg_op_class klass(const fuser *f, int32_t id) {
    return tg_ops[f->g->nodes[id].op].klass;
}

static bool same_shape(const tg_node *a, const tg_node *b) {
    return a->rank == b->rank &&
           memcmp(a->shape, b->shape, (size_t)a->rank * sizeof a->shape[0]) == 0;
}

#define FOR_MEMBERS(f, rep, m) for (int32_t m = (f)->head[rep]; m >= 0; m = (f)->next[m])

/* The kernel (representative) that produces node x's memory: through
 * aliases to the node they view; -1 for sources. */
static int32_t producer(fuser *f, int32_t x) {
    while (tg_node_is_alias(&f->g->nodes[x])) x = f->g->nodes[x].inputs[0];
    return find(f, x);
}

/* A needed node outside kernels a and b reads x, directly or through
 * aliases (an alias that is a target counts). */
static bool used_outside(fuser *f, int32_t x, int32_t a, int32_t b) {
    for (int32_t i = f->users.start[x]; i < f->users.start[x + 1]; i++) {
        int32_t u = f->users.list[i];
        if (!f->needed[u]) continue;
        if (tg_node_is_alias(&f->g->nodes[u]) ? f->is_target[u] || used_outside(f, u, a, b)
                                              : find(f, u) != a && find(f, u) != b)
            return true;
    }
    return false;
}

/* A member is an output when a needed node outside {a, b} uses it, it is
 * a target, or it writes state. */
static bool escapes(fuser *f, int32_t m, int32_t a, int32_t b) {
    return f->is_target[m] || klass(f, m) == TG_CLASS_STATE || used_outside(f, m, a, b);
}

/* The memory outputs of member m if it escapes: one per variable a state
 * op writes (backend/kernel.h), else one. */
static int output_count(fuser *f, int32_t m) {
    const tg_node *n = &f->g->nodes[m];
    if (klass(f, m) != TG_CLASS_STATE) return 1;
    int c = 0;
    for (int i = 0; i < n->n_inputs; i++) c += (int)(tg_ops[n->op].writes >> i & 1u);
    return c;
}

/* Would kernels a and b together stay within the limits? */
static bool within_limits(fuser *f, int32_t a, int32_t b) {
    int n_in = 0, n_out = 0;
    f->stamp++;
    int32_t reps[2] = {a, b};
    for (int r = 0; r < 2; r++) {
        FOR_MEMBERS(f, reps[r], m) {
            const tg_node *n = &f->g->nodes[m];
            for (int k = 0; k < n->n_inputs; k++) {
                int32_t x = n->inputs[k], gx = producer(f, x);
                if (gx == a || gx == b || f->seen[x] == f->stamp) continue;
                f->seen[x] = f->stamp;
                n_in++;
            }
            if (escapes(f, m, a, b)) n_out += output_count(f, m);
        }
    }
    return n_in <= f->lim->max_inputs && n_out <= f->lim->max_outputs &&
           n_in + n_out <= TG_FUSION_MAX_BINDINGS;
}

/* Would merging a and b make a cycle among kernels: does a path leave
 * {a, b} and come back? Kernels run whole, so reaching any member of a
 * kernel continues from all its members; a path through an alias counts
 * too (the alias reads memory the kernel would have to finish first). */
static bool makes_cycle(fuser *f, int32_t a, int32_t b) {
    int n = 0, done = 0;
    f->stamp++;
    int32_t reps[2] = {a, b};
    for (int r = 0; r < 2; r++) FOR_MEMBERS(f, reps[r], m) {
            f->seen[m] = f->stamp;
            f->queue[n++] = m;
        }
    while (done < n) {
        int32_t v = f->queue[done++];
        int32_t gv = find(f, v);
        bool outside = gv != a && gv != b;
        for (int32_t i = f->users.start[v]; i < f->users.start[v + 1]; i++) {
            int32_t u = f->users.list[i];
            if (!f->needed[u]) continue;
            int32_t gu = find(f, u);
            if (gu == a || gu == b) {
                if (outside) return true;
                continue;
            }
            if (f->seen[u] == f->stamp) continue;
            f->seen[u] = f->stamp;
            f->queue[n++] = u;
            if (gu < 0) continue;
            FOR_MEMBERS(f, gu, m) {
                if (f->seen[m] == f->stamp) continue;
                f->seen[m] = f->stamp;
                f->queue[n++] = m;
            }
        }
    }
    return false;
}

/* Elementwise ops the epilogue/prologue code of the generators evaluates
 * per element (iota and one_hot index by the kernel's own coordinates). */
static bool per_element(fuser *f, int32_t m) {
    tg_op op = f->g->nodes[m].op;
    return klass(f, m) == TG_CLASS_ELEMENTWISE && op != TG_OP_IOTA && op != TG_OP_ONE_HOT;
}

/* The distinct nodes outside p and c that the epilogue members (p and c
 * without the root r) read; *all_float: all of them are floats (a matmul
 * epilogue reads its extra inputs as floats). */
static int epilogue_extras(fuser *f, int32_t p, int32_t c, int32_t r, bool *all_float) {
    int n = 0;
    *all_float = true;
    f->stamp++;
    int32_t reps[2] = {p, c};
    for (int i = 0; i < 2; i++) FOR_MEMBERS(f, reps[i], m) {
            if (m == r) continue;
            const tg_node *nd = &f->g->nodes[m];
            for (int k = 0; k < nd->n_inputs; k++) {
                int32_t x = nd->inputs[k], gx = find(f, x);
                if (gx == p || gx == c || f->seen[x] == f->stamp) continue;
                f->seen[x] = f->stamp;
                *all_float = *all_float && tg_dtype_is_float(f->g->nodes[x].dtype);
                n++;
            }
        }
    return n;
}

/* Epilogue after root r (matmul-like or a reduction): elementwise ops of
 * r's shape, and r's result stays inside. A matmul epilogue is evaluated
 * on floats in the product's store, with at most TG_FUSION_MAX_EXTRA inputs
 * besides the epilogue members of p (backend/gen_matmul.h's extras), and
 * every output stored like the product. */
static bool legal_epilogue(fuser *f, int32_t p, int32_t c) {
    int32_t r = f->root[p];
    tg_op_class k = klass(f, r);
    if (k != TG_CLASS_MATMUL && k != TG_CLASS_REDUCTION) return false;
    FOR_MEMBERS(f, c, m) {
        if (!per_element(f, m) || !same_shape(&f->g->nodes[m], &f->g->nodes[r])) return false;
        if (k == TG_CLASS_MATMUL && f->g->nodes[m].dtype != f->g->nodes[r].dtype) return false;
    }
    bool floats;
    if (k == TG_CLASS_MATMUL &&
        (epilogue_extras(f, p, c, r, &floats) > TG_FUSION_MAX_EXTRA || !floats))
        return false;
    return !escapes(f, r, p, c);
}

/* Prologue of a reduction root r: elementwise kernel p feeds only r,
 * directly (opaque ops read their inputs from memory). A member used
 * outside too is stored by the reduction where it reads it, when it has
 * the shape of r's input (each input element is read once): a gradient
 * stored and summed for its bias is one kernel. */
static bool legal_prologue(fuser *f, int32_t p, int32_t c) {
    int32_t r = f->root[c];
    if (klass(f, r) != TG_CLASS_REDUCTION) return false;
    const tg_node *x = &f->g->nodes[f->g->nodes[r].inputs[0]];
    FOR_MEMBERS(f, p, m) {
        if (!per_element(f, m)) return false;
        if (escapes(f, m, p, c) && !same_shape(&f->g->nodes[m], x)) return false;
        for (int32_t i = f->users.start[m]; i < f->users.start[m + 1]; i++) {
            int32_t u = f->users.list[i];
            if (f->needed[u] && find(f, u) == c && u != r) return false;
        }
    }
    return true;
}

/* A movement op a chain reads its input through (index remapping): it
 * reads memory, outside kernels a and b, and only the chain reads it. */
static bool remapped_read(fuser *f, int32_t m, int32_t a, int32_t b) {
    tg_op op = f->g->nodes[m].op;
    int32_t px = producer(f, f->g->nodes[m].inputs[0]);
    return (op == TG_OP_PERMUTE || op == TG_OP_BROADCAST_TO || op == TG_OP_SLICE) && px != a &&
           px != b && !escapes(f, m, a, b);
}

/* A chain of elementwise ops: its outputs share one shape (the index
 * space the kernel runs over), and one_hot reads its indices from memory
 * (its output has one more axis than its input). Permute, broadcast_to
 * and slice join as remapped reads of a kernel input (backend/
 * gen_elementwise.c); other movement ops are kernels of their own. */
static bool legal_chain(fuser *f, int32_t a, int32_t b) {
    const tg_node *shape = NULL;
    int32_t reps[2] = {a, b};
    int n_elementwise = 0;
    for (int r = 0; r < 2; r++) {
        FOR_MEMBERS(f, reps[r], m) {
            const tg_node *nd = &f->g->nodes[m];
            if (klass(f, m) == TG_CLASS_MOVEMENT && remapped_read(f, m, a, b)) continue;
            if (klass(f, m) != TG_CLASS_ELEMENTWISE) return false;
            n_elementwise++;
            if (nd->op == TG_OP_ONE_HOT && find(f, nd->inputs[0]) == reps[1 - r]) return false;
            if (!escapes(f, m, a, b)) continue;
            if (shape && !same_shape(shape, nd)) return false;
            shape = nd;
        }
    }
    return n_elementwise > 0;
}

/* Kernel c joins kernel p: p becomes the representative, c's members
 * follow p's. */
static void merge(fuser *f, int32_t p, int32_t c) {
    FOR_MEMBERS(f, c, m) f->parent[m] = p;
    f->parent[c] = p;
    f->next[f->tail[p]] = f->head[c];
    f->tail[p] = f->tail[c];
    if (f->root[p] < 0) f->root[p] = f->root[c];
}

/* A sum over the batch axes of a matmul that only it reads, where the
 * batch folds into K: A^T B per batch with both operands dense and of the
 * full batch (a weight gradient: x^T dy summed over the batch is one
 * product with K = batch * rows). p and c are the lone matmul and sum. */
static bool legal_batch_sum(fuser *f, int32_t p, int32_t c) {
    if (f->head[p] != f->tail[p] || f->head[c] != f->tail[c]) return false;
    const tg_node *mm = &f->g->nodes[p], *s = &f->g->nodes[c];
    if (mm->op != TG_OP_MATMUL || s->op != TG_OP_SUM || s->inputs[0] != p ||
        !mm->attrs.transpose_a || mm->attrs.transpose_b || mm->rank < 3 || s->attrs.keepdims ||
        s->attrs.n_axes != mm->rank - 2 || escapes(f, p, p, c))
        return false;
    for (int d = 0; d < s->attrs.n_axes; d++)
        if (s->attrs.axes[d] != d) return false;
    for (int k = 0; k < 2; k++) {
        const tg_node *x = &f->g->nodes[mm->inputs[k]];
        if (x->rank != mm->rank ||
            memcmp(x->shape, mm->shape, (size_t)(mm->rank - 2) * sizeof x->shape[0]) != 0)
            return false;
    }
    return true;
}

/* Tries to merge producer kernel p into consumer kernel c. */
static void try_merge(fuser *f, int32_t p, int32_t c) {
    if (p < 0 || c < 0 || p == c) return;
    bool ok;
    if (f->root[p] >= 0 && f->root[c] >= 0)
        ok = legal_batch_sum(f, p, c);
    else if (f->root[p] >= 0)
        ok = legal_epilogue(f, p, c);
    else if (f->root[c] >= 0)
        ok = legal_prologue(f, p, c);
    else
        ok = legal_chain(f, p, c);
    if (!ok || !within_limits(f, p, c) || makes_cycle(f, p, c)) return;
    merge(f, p, c);
}

/* Node x is needed only by node `user`, directly or through aliases. */
static bool feeds_only(fuser *f, int32_t x, int32_t user) {
    if (f->is_target[x]) return false;
    for (int32_t i = f->users.start[x]; i < f->users.start[x + 1]; i++) {
        int32_t u = f->users.list[i];
        if (!f->needed[u] || u == user) continue;
        if (!tg_node_is_alias(&f->g->nodes[u]) || !feeds_only(f, u, user)) return false;
    }
    return true;
}

/* Nothing outside kernel rep reads its members: merging it with another
 * kernel of that kind cannot make a cycle. */
static bool is_sink(fuser *f, int32_t rep) {
    FOR_MEMBERS(f, rep, m) if (f->is_target[m] || used_outside(f, m, rep, rep)) return false;
    return true;
}

/* A member of kernel a reads a variable that a state member of kernel b
 * writes (in place, other invocations would race with the read). */
static bool reads_written(fuser *f, int32_t a, int32_t b) {
    FOR_MEMBERS(f, b, w) {
        const tg_node *wn = &f->g->nodes[w];
        if (klass(f, w) != TG_CLASS_STATE) continue;
        for (int i = 0; i < wn->n_inputs; i++) {
            if (!(tg_ops[wn->op].writes >> i & 1u)) continue;
            FOR_MEMBERS(f, a, m) {
                const tg_node *mn = &f->g->nodes[m];
                for (int k = 0; k < mn->n_inputs; k++) {
                    int32_t x = mn->inputs[k];
                    while (tg_node_is_alias(&f->g->nodes[x])) x = f->g->nodes[x].inputs[0];
                    if (x == wn->inputs[i] && !(m == w && k == i)) return true;
                }
            }
        }
    }
    return false;
}

static bool same_adamw(const tg_node *a, const tg_node *b) {
    return a->attrs.beta1 == b->attrs.beta1 && a->attrs.beta2 == b->attrs.beta2 &&
           a->attrs.eps == b->attrs.eps && a->attrs.weight_decay == b->attrs.weight_decay &&
           a->inputs[4] == b->inputs[4] && a->inputs[5] == b->inputs[5];
}

/* The multi-tensor optimizer: each adamw update (w, m, v, grad, lr, step)
 * takes the slice its gradient is (through aliases) when nothing else
 * reads it; then each update whose results nothing reads joins the first
 * earlier group with equal hyperparameters, lr and step that stays within
 * the limits, or starts a group. */
/* Kernel c (an update, with its slice) fits the optimizer group p: fewer
 * updates than the caller's count when it gives one (it sized the count
 * from the device's bindings: each update reads w, m, v and its gradient
 * and writes w, m and v), else within the kernel limits. */
static bool optimizer_fits(fuser *f, int32_t p, int32_t c) {
    int max = f->lim->max_optimizer_updates;
    if (max <= 0) return within_limits(f, p, c);
    int n = 0;
    FOR_MEMBERS(f, p, m) n += f->g->nodes[m].op == TG_OP_ADAMW_UPDATE;
    return n < max;
}

static void group_optimizer(fuser *f) {
    int32_t *groups = f->queue, n_groups = 0;
    for (int32_t id = 0; id < f->g->n_nodes; id++) {
        const tg_node *n = &f->g->nodes[id];
        int32_t c = find(f, id);
        if (c < 0 || n->op != TG_OP_ADAMW_UPDATE || f->head[c] != id || f->tail[c] != id) continue;
        int32_t x = n->inputs[3];
        while (tg_node_is_alias(&f->g->nodes[x])) x = f->g->nodes[x].inputs[0];
        int32_t s = find(f, x);
        if (s >= 0 && f->g->nodes[x].op == TG_OP_SLICE && f->head[s] == x && f->tail[s] == x &&
            feeds_only(f, x, id) && within_limits(f, s, c)) {
            merge(f, s, c);
            c = s;
        }
        if (!is_sink(f, c)) continue;
        int j = 0;
        while (j < n_groups && (!same_adamw(&f->g->nodes[f->root[groups[j]]], n) ||
                                !optimizer_fits(f, groups[j], c) ||
                                reads_written(f, groups[j], c) || reads_written(f, c, groups[j])))
            j++;
        if (j < n_groups)
            merge(f, groups[j], c);
        else
            groups[n_groups++] = c;
    }
}

/* Node id is alone in its kernel. */
static bool alone(fuser *f, int32_t id) {
    int32_t r = find(f, id);
    return r >= 0 && f->head[r] == id && f->tail[r] == id;
}

/* Merges kernel c into p when that stays within the limits and acyclic. */
static bool merge_if_legal(fuser *f, int32_t p, int32_t c) {
    if (p < 0 || c < 0 || p == c || !within_limits(f, p, c) || makes_cycle(f, p, c)) return false;
    merge(f, p, c);
    return true;
}

/* Slice s is row 0 (the weight's gradient) or row 1 (the bias's) of
 * layer_norm_grad_wb node wb, whole. */
static bool wb_row(const tg_graph *g, int32_t s, int32_t wb) {
    const tg_node *n = &g->nodes[s], *w = &g->nodes[wb];
    return n->op == TG_OP_SLICE && n->inputs[0] == wb && n->rank == 2 && n->shape[0] == 1 &&
           n->shape[1] == w->shape[1] && (n->attrs.begin[0] == 0 || n->attrs.begin[0] == 1) &&
           n->attrs.begin[1] == 0 && n->attrs.step[0] == 1 && n->attrs.step[1] == 1;
}

#define TG_FUSION_MAX_NORM_SUMS 4

/* Kernel e can follow layer_norm_grad_x node x in its kernel c (backend/
 * gen_nn.c computes it per element from dx): elementwise members of x's
 * shape after x (the residual add), and sums of x or of a member over
 * every axis but the last (bias gradients), which the kernel's column
 * workgroup computes, or over axes of extent 1 only (copies); members
 * read nothing of c but x and its elementwise members. *sums counts the
 * kernel's sums. */
static bool legal_norm_epilogue(fuser *f, int32_t c, int32_t e, int32_t x, int *sums) {
    const tg_node *xn = &f->g->nodes[x];
    bool reads_x = false;
#define FROM_DX(in)                                                                                \
    ((in) == x || find(f, in) == e || (find(f, in) == c && (in) > x && per_element(f, in)))
    int n_sums = *sums;
    FOR_MEMBERS(f, e, m) {
        const tg_node *n = &f->g->nodes[m];
        if (m < x || n->dtype != TG_F32) return false;
        if (n->op == TG_OP_SUM &&
            tg_shape_count(n->rank, n->shape) == tg_shape_count(xn->rank, xn->shape)) {
            /* over axes of extent 1 (a batch of 1): a copy, stored per element */
            int32_t in = n->inputs[0];
            if (!same_shape(&f->g->nodes[in], xn) || !FROM_DX(in)) return false;
        } else if (n->op == TG_OP_SUM) {
            int32_t in = n->inputs[0];
            if (xn->rank < 2 || n->attrs.keepdims || n->attrs.n_axes != xn->rank - 1 ||
                !same_shape(&f->g->nodes[in], xn) || !FROM_DX(in) ||
                ++n_sums > TG_FUSION_MAX_NORM_SUMS)
                return false;
            for (int d = 0; d < n->attrs.n_axes; d++)
                if (n->attrs.axes[d] != d) return false;
        } else if (!per_element(f, m) || !same_shape(n, xn))
            return false;
        for (int k = 0; k < n->n_inputs; k++) {
            int32_t in = n->inputs[k];
            if (producer(f, in) != c) continue;
            if (!FROM_DX(in) || !same_shape(&f->g->nodes[in], xn)) return false;
            reads_x = true;
        }
    }
#undef FROM_DX
    *sums = n_sums;
    return reads_x;
}

/* The layer norm backward as one kernel (backend/gen_nn.c): each lone
 * layer_norm_grad_x takes its layer_norm_grad_wb sibling (same dy and x),
 * the lone slices of its weight and bias rows, and the kernels that
 * consume dx per element (the residual add) and sum it for a bias. */
static void merge_norm_grads(fuser *f) {
    const tg_graph *g = f->g;
    for (int32_t x = 0; x < g->n_nodes; x++) {
        const tg_node *xn = &g->nodes[x];
        if (xn->op != TG_OP_LAYER_NORM_GRAD_X || xn->dtype != TG_F32 || !alone(f, x)) continue;
        int32_t c = find(f, x);
        int32_t dx_in = xn->inputs[1];
        for (int32_t i = f->users.start[dx_in]; i < f->users.start[dx_in + 1]; i++) {
            int32_t wb = f->users.list[i];
            const tg_node *wn = &g->nodes[wb];
            if (wn->op != TG_OP_LAYER_NORM_GRAD_WB || wn->inputs[0] != xn->inputs[0] ||
                wn->inputs[1] != dx_in || wn->dtype != TG_F32 || !alone(f, wb) ||
                !merge_if_legal(f, c, find(f, wb)))
                continue;
            for (int32_t j = f->users.start[wb]; j < f->users.start[wb + 1]; j++) {
                int32_t s = f->users.list[j];
                if (alone(f, s) && wb_row(g, s, wb)) merge_if_legal(f, c, find(f, s));
            }
            break;
        }
        /* consumers of dx, then of the members they bring (a second sum
         * of the residual add) */
        int sums = 0;
        for (int32_t v = x; v < g->n_nodes; v++) {
            if (v != x && (find(f, v) != c || !per_element(f, v))) continue;
            for (int32_t i = f->users.start[v]; i < f->users.start[v + 1]; i++) {
                int32_t e = find(f, f->users.list[i]);
                if (e < 0 || e == c) continue;
                int s = sums;
                if (legal_norm_epilogue(f, c, e, x, &s) && merge_if_legal(f, c, e)) sums = s;
            }
        }
    }
}

/* Nodes a and b: the same inputs, attention attributes and dtype. */
static bool same_attention_operands(const tg_node *a, const tg_node *b) {
    if (a->n_inputs != b->n_inputs || a->dtype != b->dtype || a->attrs.causal != b->attrs.causal ||
        a->attrs.scale != b->attrs.scale || a->attrs.transpose_a != b->attrs.transpose_a ||
        a->attrs.has_mask != b->attrs.has_mask)
        return false;
    for (int i = 0; i < a->n_inputs; i++)
        if (a->inputs[i] != b->inputs[i]) return false;
    return true;
}

/* Head dims backend/gen_attention.c's flash forward unrolls: up to 256
 * as vec4 texels, up to 64 as scalar ones. */
static bool flash_head_dims(const tg_graph *g, const tg_node *n) {
    int64_t d = g->nodes[n->inputs[0]].shape[g->nodes[n->inputs[0]].rank - 1];
    int64_t dv = g->nodes[n->inputs[2]].shape[g->nodes[n->inputs[2]].rank - 1];
    int64_t lim = d % 4 == 0 && dv % 4 == 0 ? 256 : 64;
    return d >= 1 && dv >= 1 && d <= lim && dv <= lim;
}

/* Attention pairs of one kernel each (backend/gen_attention.c): the
 * forward writes its rows' log-sum-exp for the backward's attention_lse
 * of the same operands (which then costs nothing), and attention_grad_k
 * and attention_grad_v (with lse and delta) walk the query rows once for
 * both. */
static void merge_attention(fuser *f) {
    const tg_graph *g = f->g;
    for (int32_t id = 0; id < g->n_nodes; id++) {
        const tg_node *n = &g->nodes[id];
        tg_op want = n->op == TG_OP_ATTENTION_LSE      ? TG_OP_ATTENTION
                     : n->op == TG_OP_ATTENTION_GRAD_V ? TG_OP_ATTENTION_GRAD_K
                                                       : TG_OP_CONSTANT;
        if (want == TG_OP_CONSTANT || !alone(f, id) || !flash_head_dims(g, n) ||
            (want == TG_OP_ATTENTION_GRAD_K && n->n_inputs != (n->attrs.has_mask ? 7 : 6)))
            continue;
        int32_t q = n->inputs[0];
        for (int32_t i = f->users.start[q]; i < f->users.start[q + 1]; i++) {
            int32_t o = f->users.list[i];
            if (g->nodes[o].op == want && alone(f, o) && same_attention_operands(&g->nodes[o], n) &&
                merge_if_legal(f, find(f, o), find(f, id)))
                break;
        }
    }
}

/* Classes of a cross-entropy pair: backend/gen_nn.c runs the loss in one
 * workgroup beside the gradient's, walking rows serially on CPU devices;
 * longer rows keep the loss's own kernel. */
#define TG_FUSION_MAX_CE_CLASSES 1024

/* True if x (no alias) and its aliases are read by no needed node but a
 * and b, and are no target. */
static bool read_only_by(fuser *f, int32_t x, int32_t a, int32_t b) {
    if (f->is_target[x]) return false;
    for (int32_t i = f->users.start[x]; i < f->users.start[x + 1]; i++) {
        int32_t u = f->users.list[i];
        if (!f->needed[u] || u == a || u == b) continue;
        if (!tg_node_is_alias(&f->g->nodes[u]) || !read_only_by(f, u, a, b)) return false;
    }
    return true;
}

/* cross_entropy and its cross_entropy_grad (same logits, labels and
 * ignore_index), each alone, share a kernel (backend/gen_nn.c): the
 * logits are read by one dispatch for both. Not where the logits are an
 * intermediate that only the pair reads: there the gradient kernel alone
 * writes over the logits in place (backend/executor.c), which saves a
 * [tokens, classes] buffer at the training step's peak; the loss reads
 * them in a kernel before it. Unless the device's pair kernel reads each
 * row whole before writing its gradient (limits.ce_pair_in_place): then
 * the pair is one kernel writing over the logits. */
static void merge_cross_entropy(fuser *f) {
    const tg_graph *g = f->g;
    for (int32_t gid = 0; gid < g->n_nodes; gid++) {
        const tg_node *gn = &g->nodes[gid];
        if (gn->op != TG_OP_CROSS_ENTROPY_GRAD || !alone(f, gid) || gn->rank < 1 ||
            gn->shape[gn->rank - 1] > TG_FUSION_MAX_CE_CLASSES)
            continue;
        int32_t src = gn->inputs[0];
        while (tg_node_is_alias(&g->nodes[src])) src = g->nodes[src].inputs[0];
        int32_t logits = gn->inputs[0];
        for (int32_t i = f->users.start[logits]; i < f->users.start[logits + 1]; i++) {
            int32_t l = f->users.list[i];
            const tg_node *ln = &g->nodes[l];
            if (ln->op == TG_OP_CROSS_ENTROPY && ln->inputs[0] == logits &&
                ln->inputs[1] == gn->inputs[1] &&
                ln->attrs.ignore_index == gn->attrs.ignore_index && alone(f, l) &&
                (f->lim->ce_pair_in_place || find(f, src) < 0 || !read_only_by(f, src, l, gid)) &&
                merge_if_legal(f, find(f, l), find(f, gid)))
                break;
        }
    }
}

/* Node id is a kernel of its own that copies its input: a permute,
 * broadcast_to or slice. */
static bool lone_copy(fuser *f, int32_t id) {
    int32_t r = find(f, id);
    tg_op op = f->g->nodes[id].op;
    return r >= 0 && f->head[r] == id && f->tail[r] == id &&
           (op == TG_OP_PERMUTE || op == TG_OP_BROADCAST_TO || op == TG_OP_SLICE);
}

/* Sibling copies: the lone permutes, broadcasts and slices of one node
 * with one element count share a kernel (backend/gen_movement.c), within
 * the limits (layer_norm_grad_wb's weight and bias rows when no
 * optimizer update took them). */
static void merge_siblings(fuser *f) {
    const tg_graph *g = f->g;
    for (int32_t x = 0; x < g->n_nodes; x++) {
        int32_t group = -1, first = -1;
        for (int32_t i = f->users.start[x]; i < f->users.start[x + 1]; i++) {
            int32_t u = f->users.list[i];
            if (!f->needed[u] || !lone_copy(f, u) || g->nodes[u].inputs[0] != x) continue;
            if (group < 0) {
                group = find(f, u);
                first = u;
                continue;
            }
            const tg_node *a = &g->nodes[first], *b = &g->nodes[u];
            int32_t c = find(f, u);
            if (c == group ||
                tg_shape_count(a->rank, a->shape) != tg_shape_count(b->rank, b->shape) ||
                !within_limits(f, group, c) || makes_cycle(f, group, c))
                continue;
            merge(f, group, c);
        }
    }
}

/* Kernel rep holds only copies (lone or siblings). */
static bool copies_only(fuser *f, int32_t rep) {
    FOR_MEMBERS(f, rep, m) {
        tg_op op = f->g->nodes[m].op;
        if (op != TG_OP_PERMUTE && op != TG_OP_BROADCAST_TO && op != TG_OP_SLICE) return false;
    }
    return true;
}

/* Copies alike: one op, one element count, a permute's permutation. */
static bool alike_copies(const tg_node *a, const tg_node *b) {
    return a->op == b->op &&
           tg_shape_count(a->rank, a->shape) == tg_shape_count(b->rank, b->shape) &&
           (a->op != TG_OP_PERMUTE ||
            (a->rank == b->rank &&
             memcmp(a->attrs.axes, b->attrs.axes, (size_t)a->rank * sizeof a->attrs.axes[0]) == 0));
}

/* A member of kernel a reads a member of kernel b (directly or through
 * aliases): copies read their inputs from memory, so they cannot share a
 * kernel with what they read. */
static bool reads_from(fuser *f, int32_t a, int32_t b) {
    FOR_MEMBERS(f, a, m) {
        const tg_node *n = &f->g->nodes[m];
        for (int k = 0; k < n->n_inputs; k++)
            if (producer(f, n->inputs[k]) == b) return true;
    }
    return false;
}

/* Copies of different nodes alike (the head permutes of q, k and v
 * before attention, of dq, dk and dv after its gradients): each kernel of
 * copies joins the latest earlier kernel of alike copies when that stays
 * acyclic and within the limits (one dispatch instead of several). */
static void merge_alike_copies(fuser *f) {
    const tg_graph *g = f->g;
    int n_groups = 0; /* each group's first node and representative, in order */
    int32_t *firsts = malloc(((size_t)g->n_nodes + 1) * sizeof *firsts);
    int32_t *reps = malloc(((size_t)g->n_nodes + 1) * sizeof *reps);
    if (!firsts || !reps) { /* only a missed merge */
        free(firsts);
        free(reps);
        return;
    }
    for (int32_t id = 0; id < g->n_nodes; id++) {
        int32_t c = find(f, id);
        if (c < 0 || f->head[c] != id || !copies_only(f, c)) continue;
        int j = n_groups - 1;
        while (j >= 0 && !alike_copies(&g->nodes[firsts[j]], &g->nodes[id])) j--;
        int32_t r = j >= 0 ? find(f, reps[j]) : -1;
        if (r >= 0 && r != c && !reads_from(f, c, r) && !reads_from(f, r, c) &&
            within_limits(f, r, c) && !makes_cycle(f, r, c)) {
            merge(f, r, c);
            continue;
        }
        firsts[n_groups] = id;
        reps[n_groups++] = c;
    }
    free(firsts);
    free(reps);
}

/* A kernel of one matmul (with its epilogue or batch sum) or a group of
 * them: the matmul groups below take these. */
static bool matmul_kernel(fuser *f, int32_t rep) {
    if (rep < 0 || f->root[rep] < 0 || f->g->nodes[f->root[rep]].op != TG_OP_MATMUL) return false;
    FOR_MEMBERS(f, rep, m) {
        if (klass(f, m) != TG_CLASS_MATMUL && !per_element(f, m) && f->g->nodes[m].op != TG_OP_SUM)
            return false;
    }
    return true;
}

/* Bindings of a kernel generated alone: its distinct inputs and outputs
 * (a group binds each member product's own, backend/gen_group.c). */
static int kernel_bindings(fuser *f, int32_t rep) {
    int n = 0;
    f->stamp++;
    FOR_MEMBERS(f, rep, m) {
        const tg_node *nd = &f->g->nodes[m];
        for (int k = 0; k < nd->n_inputs; k++) {
            int32_t x = nd->inputs[k];
            if (producer(f, x) == rep || f->seen[x] == f->stamp) continue;
            f->seen[x] = f->stamp;
            n++;
        }
        if (escapes(f, m, rep, rep)) n += output_count(f, m);
    }
    return n;
}

/* The products of a matmul kernel or group. */
static int products_in(fuser *f, int32_t rep) {
    int n = 0;
    FOR_MEMBERS(f, rep, m) n += f->g->nodes[m].op == TG_OP_MATMUL;
    return n;
}

/* A lone sum of x over every axis but the last (a bias gradient: the
 * column sums of dy), f32: backend/gen_group.c sums it in a group. */
static bool lone_bias_sum(fuser *f, int32_t u, int32_t x) {
    const tg_node *n = &f->g->nodes[u], *xn = &f->g->nodes[x];
    int32_t c = find(f, u);
    if (c < 0 || f->head[c] != u || f->tail[c] != u || n->op != TG_OP_SUM || n->inputs[0] != x ||
        n->dtype != TG_F32 || xn->dtype != TG_F32 || xn->rank < 2 || n->attrs.keepdims ||
        n->attrs.n_axes != xn->rank - 1)
        return false;
    for (int d = 0; d < n->attrs.n_axes; d++)
        if (n->attrs.axes[d] != d) return false;
    return true;
}

/* Kernel c (read by u, which reads x) may join a group of x's readers:
 * a matmul kernel, or in pass 1 a lone bias sum of x. */
static bool group_candidate(fuser *f, int32_t u, int32_t c, int32_t x, int pass) {
    if (!f->needed[u]) return false;
    if (pass == 1) return lone_bias_sum(f, u, x);
    return f->g->nodes[u].op == TG_OP_MATMUL && matmul_kernel(f, c);
}

/* The matmul kernels that read node x join groups: each the first group
 * of this x it can join, else it starts one (groups: scratch). In round 0
 * only kernels reading nothing but their operands take part; in round 1
 * a bias sum of x then joins a group of x too. bindings[rep] is a group's
 * count of bindings (each product binds its own). */
static void group_readers(fuser *f, int32_t x, int round, int32_t *bindings, int32_t *groups) {
    int n_groups = 0;
    for (int pass = 0; pass < 1 + round; pass++) { /* the products, then the bias sums */
        for (int32_t i = f->users.start[x]; i < f->users.start[x + 1]; i++) {
            int32_t u = f->users.list[i], c = find(f, u);
            if (!group_candidate(f, u, c, x, pass)) continue;
            if (bindings[c] < 0) bindings[c] = kernel_bindings(f, c);
            if (round == 0 && kernel_bindings(f, c) > 3 * products_in(f, c)) continue; /* A, B, C */
            bool joined = false;
            for (int j = 0; j < n_groups && !joined; j++) {
                int32_t p = find(f, groups[j]);
                joined = p == c;
                if (joined || bindings[p] + bindings[c] > TG_FUSION_MAX_BINDINGS ||
                    reads_from(f, p, c) || reads_from(f, c, p) || !within_limits(f, p, c) ||
                    makes_cycle(f, p, c))
                    continue;
                int32_t total = bindings[p] + bindings[c];
                merge(f, p, c);
                bindings[p] = total;
                joined = true;
            }
            if (!joined && pass == 0) groups[n_groups++] = c;
        }
    }
}

/* Sibling matmuls: matmul kernels that read one operand (the q, k and v
 * projections of x; a weight gradient x^T dy and the input gradient
 * dy w^T) share a dispatch, each product on its own range of workgroups
 * (backend/gen_group.c), when neither reads the other, no path joins
 * them and the group's bindings fit. Products that read only their
 * operands group first: a product whose epilogue adds others (dx =
 * dv wv^T + dk wk^T + dq wq^T) would keep those out of its group. */
static void group_matmuls(fuser *f) {
    const tg_graph *g = f->g;
    int32_t *bindings = malloc(((size_t)g->n_nodes + 1) * sizeof *bindings);
    int32_t *groups = malloc(((size_t)g->n_nodes + 1) * sizeof *groups);
    if (bindings && groups) { /* else only missed merges */
        for (int32_t id = 0; id < g->n_nodes; id++) bindings[id] = -1;
        for (int round = 0; round < 2; round++)
            for (int32_t x = 0; x < g->n_nodes; x++) group_readers(f, x, round, bindings, groups);
    }
    free(bindings);
    free(groups);
}

static bool kernel_node(const tg_node *n) {
    return tg_ops[n->op].klass != TG_CLASS_SOURCE && !tg_node_is_alias(n);
}

static tg_status fuser_init(fuser *f, const tg_graph *g, int n_targets, const int32_t *targets,
                            int n_target_ops, const int32_t *target_ops,
                            const tg_fusion_limits *lim) {
    size_t n = (size_t)g->n_nodes + 1;
    memset(f, 0, sizeof *f);
    f->g = g;
    f->lim = lim;
    f->needed = tg_needed_nodes(g, n_targets, targets, n_target_ops, target_ops);
    f->is_target = calloc(n, sizeof *f->is_target);
    f->parent = malloc(n * sizeof *f->parent);
    f->root = malloc(n * sizeof *f->root);
    f->next = malloc(n * sizeof *f->next);
    f->head = malloc(n * sizeof *f->head);
    f->tail = malloc(n * sizeof *f->tail);
    f->seen = calloc(n, sizeof *f->seen);
    f->queue = malloc(n * sizeof *f->queue);
    if (!f->needed || !f->is_target || !f->parent || !f->root || !f->next || !f->head || !f->tail ||
        !f->seen || !f->queue)
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    tg_status st = tg_users_build(g, &f->users);
    if (st != TG_OK) return st;
    for (int i = 0; i < n_targets; i++) f->is_target[targets[i]] = true;
    for (int id = 0; id < g->n_nodes; id++) {
        const tg_node *nd = &g->nodes[id];
        bool in = f->needed[id] && kernel_node(nd);
        tg_op_class k = tg_ops[nd->op].klass;
        f->parent[id] = in ? id : -1;
        f->root[id] = in && k != TG_CLASS_ELEMENTWISE && k != TG_CLASS_MOVEMENT ? id : -1;
        f->next[id] = -1;
        f->head[id] = f->tail[id] = id;
    }
    return TG_OK;
}

static void fuser_free(fuser *f) {
    free(f->needed);
    free(f->is_target);
    free(f->parent);
    free(f->root);
    free(f->next);
    free(f->head);
    free(f->tail);
    free(f->seen);
    free(f->queue);
    tg_users_free(&f->users);
}

void tg_partition_free(tg_partition *p) {
    if (!p) return;
    for (int k = 0; k < p->n_kernels; k++) {
        free(p->kernels[k].nodes);
        free(p->kernels[k].inputs);
        free(p->kernels[k].outputs);
    }
    free(p->kernels);
    free(p->kernel_of);
    free(p);
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int32_t index_in(const int32_t *list, int n, int32_t id) {
    for (int i = 0; i < n; i++)
        if (list[i] == id) return i;
    return -1;
}

static int part_root(int *parent, int i) {
    while (parent[i] != i) i = parent[i] = parent[parent[i]];
    return i;
}

int tg_connected_parts(const tg_graph *g, int n, const int32_t *members, int *part) {
    int *parent = malloc(((size_t)n + 1) * sizeof *parent);
    if (!parent) return 0;
    for (int i = 0; i < n; i++) parent[i] = i;
    for (int i = 0; i < n; i++) {
        const tg_node *nd = &g->nodes[members[i]];
        for (int j = 0; j < nd->n_inputs; j++) {
            int32_t x = nd->inputs[j];
            while (tg_node_is_alias(&g->nodes[x])) x = g->nodes[x].inputs[0];
            int m = index_in(members, n, x);
            if (m >= 0) parent[part_root(parent, i)] = part_root(parent, m);
        }
    }
    int n_parts = 0;
    for (int i = 0; i < n; i++) part[i] = -1;
    for (int i = 0; i < n; i++) {
        int r = part_root(parent, i);
        if (part[r] < 0) part[r] = n_parts++;
        part[i] = part[r];
    }
    free(parent);
    return n_parts;
}

/* The root and kind of a kernel of members `nodes`, as describe_kernel
 * gives them: its matmul, reduction or opaque member, else the last. */
static void part_kind(const tg_graph *g, tg_part_kernel *k) {
    static const tg_op_class order[] = {TG_CLASS_STATE, TG_CLASS_MATMUL, TG_CLASS_OPAQUE,
                                        TG_CLASS_REDUCTION};
    bool movement_only = true;
    for (int i = 0; i < k->n_nodes; i++)
        movement_only =
            movement_only && tg_ops[g->nodes[k->nodes[i]].op].klass == TG_CLASS_MOVEMENT;
    k->root = k->nodes[k->n_nodes - 1];
    k->kind = movement_only ? TG_CLASS_MOVEMENT : TG_CLASS_ELEMENTWISE;
    for (int c = 0; c < 4; c++)
        for (int i = 0; i < k->n_nodes; i++)
            if (tg_ops[g->nodes[k->nodes[i]].op].klass == order[c]) {
                k->root = k->nodes[i];
                k->kind = order[c];
                return;
            }
}

/* Fills part kernel `out` with the members of kernel k in part `part`. */
static tg_status fill_part(const tg_graph *g, const tg_part_kernel *k, const int *part_of, int part,
                           tg_part_kernel *out) {
    memset(out, 0, sizeof *out);
    out->nodes = malloc((size_t)k->n_nodes * sizeof *out->nodes);
    out->inputs = malloc(((size_t)k->n_inputs + 1) * sizeof *out->inputs);
    out->outputs = malloc(((size_t)k->n_outputs + 1) * sizeof *out->outputs);
    if (!out->nodes || !out->inputs || !out->outputs)
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < k->n_nodes; i++)
        if (part_of[i] == part) out->nodes[out->n_nodes++] = k->nodes[i];
    for (int x = 0; x < k->n_inputs; x++) {
        bool read = false;
        for (int i = 0; i < out->n_nodes && !read; i++) {
            const tg_node *n = &g->nodes[out->nodes[i]];
            for (int j = 0; j < n->n_inputs; j++) read = read || n->inputs[j] == k->inputs[x];
        }
        if (read) out->inputs[out->n_inputs++] = k->inputs[x];
    }
    for (int o = 0; o < k->n_outputs; o++)
        if (index_in(out->nodes, out->n_nodes, k->outputs[o]) >= 0)
            out->outputs[out->n_outputs++] = k->outputs[o];
    part_kind(g, out);
    return TG_OK;
}

tg_status tg_partition_split_kernel(const tg_graph *g, const tg_partition *p, int k,
                                    tg_partition **out) {
    *out = NULL;
    const tg_part_kernel *pk = &p->kernels[k];
    int *part_of = malloc(((size_t)pk->n_nodes + 1) * sizeof *part_of);
    if (!part_of) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    int n_parts = tg_connected_parts(g, pk->n_nodes, pk->nodes, part_of);
    if (n_parts == 0) {
        free(part_of);
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    }
    if (n_parts < 2) {
        free(part_of);
        return TG_OK;
    }
    tg_partition *q = calloc(1, sizeof *q);
    tg_status st = q ? TG_OK : tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    if (st == TG_OK) {
        q->n_nodes = p->n_nodes;
        q->unfused = p->unfused;
        q->kernel_of = malloc(((size_t)p->n_nodes + 1) * sizeof *q->kernel_of);
        q->kernels = calloc((size_t)(p->n_kernels + n_parts - 1), sizeof *q->kernels);
        if (!q->kernel_of || !q->kernels) st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    }
    for (int i = 0; st == TG_OK && i < p->n_kernels; i++) {
        if (i == k) {
            for (int part = 0; st == TG_OK && part < n_parts; part++)
                st = fill_part(g, pk, part_of, part, &q->kernels[q->n_kernels++]);
            continue;
        }
        const tg_part_kernel *src = &p->kernels[i];
        tg_part_kernel *d = &q->kernels[q->n_kernels++];
        *d = *src;
        d->nodes = malloc(((size_t)src->n_nodes + 1) * sizeof *d->nodes);
        d->inputs = malloc(((size_t)src->n_inputs + 1) * sizeof *d->inputs);
        d->outputs = malloc(((size_t)src->n_outputs + 1) * sizeof *d->outputs);
        if (!d->nodes || !d->inputs || !d->outputs) {
            st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
            break;
        }
        memcpy(d->nodes, src->nodes, (size_t)src->n_nodes * sizeof *d->nodes);
        memcpy(d->inputs, src->inputs, (size_t)src->n_inputs * sizeof *d->inputs);
        memcpy(d->outputs, src->outputs, (size_t)src->n_outputs * sizeof *d->outputs);
    }
    free(part_of);
    if (st != TG_OK) {
        tg_partition_free(q);
        return st;
    }
    for (int id = 0; id < q->n_nodes; id++) q->kernel_of[id] = -1;
    for (int i = 0; i < q->n_kernels; i++)
        for (int m = 0; m < q->kernels[i].n_nodes; m++) q->kernel_of[q->kernels[i].nodes[m]] = i;
    *out = q;
    return TG_OK;
}

/* Fills kernel k of the partition from representative rep. */
static tg_status describe_kernel(fuser *f, int32_t rep, tg_part_kernel *k) {
    int n = 0;
    FOR_MEMBERS(f, rep, m) n++;
    k->nodes = malloc((size_t)n * sizeof *k->nodes);
    if (!k->nodes) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    k->n_nodes = 0;
    FOR_MEMBERS(f, rep, m) k->nodes[k->n_nodes++] = m;
    qsort(k->nodes, (size_t)n, sizeof *k->nodes, cmp_i32);
    int n_in = 0;
    for (int i = 0; i < n; i++) n_in += f->g->nodes[k->nodes[i]].n_inputs;
    k->inputs = malloc(((size_t)n_in + 1) * sizeof *k->inputs);
    k->outputs = malloc((size_t)n * sizeof *k->outputs);
    if (!k->inputs || !k->outputs) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    f->stamp++;
    bool movement_only = true;
    for (int i = 0; i < n; i++) {
        int32_t m = k->nodes[i];
        const tg_node *nd = &f->g->nodes[m];
        movement_only = movement_only && klass(f, m) == TG_CLASS_MOVEMENT;
        for (int j = 0; j < nd->n_inputs; j++) {
            int32_t x = nd->inputs[j];
            if (producer(f, x) == rep || f->seen[x] == f->stamp) continue;
            f->seen[x] = f->stamp;
            k->inputs[k->n_inputs++] = x;
        }
        if (escapes(f, m, rep, rep)) k->outputs[k->n_outputs++] = m;
    }
    qsort(k->inputs, (size_t)k->n_inputs, sizeof *k->inputs, cmp_i32);
    k->root = f->root[rep] >= 0 ? f->root[rep] : k->nodes[n - 1];
    k->kind = f->root[rep] >= 0 ? klass(f, k->root)
              : movement_only   ? TG_CLASS_MOVEMENT
                                : TG_CLASS_ELEMENTWISE;
    return TG_OK;
}

typedef struct order_state {
    int n;
    int32_t *reps;               /* kernel i's representative, by first member */
    int32_t *slot;               /* representative -> i */
    int *pending;                /* inputs from kernels not yet placed */
    int32_t *edge_start, *edges; /* CSR: kernel -> consumers (one per input) */
    bool *placed;
    tg_part_kernel *desc;
} order_state;

static void order_free(order_state *o) {
    for (int i = 0; o->desc && i < o->n; i++) {
        free(o->desc[i].nodes);
        free(o->desc[i].inputs);
        free(o->desc[i].outputs);
    }
    free(o->desc);
    free(o->reps);
    free(o->slot);
    free(o->pending);
    free(o->edge_start);
    free(o->edges);
    free(o->placed);
}

/* Describes every kernel and its dependences. */
static tg_status order_init(fuser *f, order_state *o) {
    const tg_graph *g = f->g;
    size_t nn = (size_t)g->n_nodes + 1;
    memset(o, 0, sizeof *o);
    o->reps = malloc(nn * sizeof *o->reps);
    o->slot = malloc(nn * sizeof *o->slot);
    if (!o->reps || !o->slot) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int id = 0; id < g->n_nodes; id++) o->slot[id] = -1;
    for (int id = 0; id < g->n_nodes; id++) {
        int32_t r = find(f, id);
        if (r >= 0 && o->slot[r] < 0) {
            o->slot[r] = o->n;
            o->reps[o->n++] = r;
        }
    }
    size_t nk = (size_t)o->n + 1;
    o->desc = calloc(nk, sizeof *o->desc);
    o->pending = calloc(nk, sizeof *o->pending);
    o->placed = calloc(nk, sizeof *o->placed);
    o->edge_start = calloc(nk + 1, sizeof *o->edge_start);
    if (!o->desc || !o->pending || !o->placed || !o->edge_start)
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    int n_edges = 0;
    for (int i = 0; i < o->n; i++) {
        tg_status st = describe_kernel(f, o->reps[i], &o->desc[i]);
        if (st != TG_OK) return st;
        for (int j = 0; j < o->desc[i].n_inputs; j++) {
            int32_t r = producer(f, o->desc[i].inputs[j]);
            if (r < 0) continue;
            o->pending[i]++;
            o->edge_start[o->slot[r] + 2]++;
            n_edges++;
        }
    }
    o->edges = malloc(((size_t)n_edges + 1) * sizeof *o->edges);
    if (!o->edges) return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    for (int i = 2; i <= o->n + 1; i++) o->edge_start[i] += o->edge_start[i - 1];
    for (int i = 0; i < o->n; i++)
        for (int j = 0; j < o->desc[i].n_inputs; j++) {
            int32_t r = producer(f, o->desc[i].inputs[j]);
            if (r >= 0) o->edges[o->edge_start[o->slot[r] + 1]++] = i;
        }
    return TG_OK;
}

/* Orders the kernels topologically (of the ready ones, the one whose first
 * member comes first) and fills the partition. */
static tg_status build_partition(fuser *f, tg_partition *p) {
    order_state o;
    tg_status st = order_init(f, &o);
    if (st == TG_OK && !(p->kernels = calloc((size_t)o.n + 1, sizeof *p->kernels)))
        st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    while (st == TG_OK && p->n_kernels < o.n) {
        int pick = -1;
        for (int i = 0; i < o.n && pick < 0; i++)
            if (!o.placed[i] && o.pending[i] == 0) pick = i;
        if (pick < 0) {
            st = tg_set_error(TG_ERR_INVALID_ARGUMENT, "fusion: the kernels form a cycle");
            break;
        }
        o.placed[pick] = true;
        for (int e = o.edge_start[pick]; e < o.edge_start[pick + 1]; e++) o.pending[o.edges[e]]--;
        int k = p->n_kernels++;
        p->kernels[k] = o.desc[pick];
        memset(&o.desc[pick], 0, sizeof o.desc[pick]);
        for (int j = 0; j < p->kernels[k].n_nodes; j++) p->kernel_of[p->kernels[k].nodes[j]] = k;
    }
    order_free(&o);
    return st;
}

tg_status tg_partition_graph(const tg_graph *g, int n_targets, const int32_t *targets,
                             int n_target_ops, const int32_t *target_ops,
                             const tg_fusion_limits *limits, tg_partition **out) {
    *out = NULL;
    fuser f;
    tg_status st = fuser_init(&f, g, n_targets, targets, n_target_ops, target_ops, limits);
    for (int id = 0; st == TG_OK && id < g->n_nodes; id++) {
        const tg_node *n = &g->nodes[id];
        if (find(&f, id) < 0) continue;
        for (int k = 0; k < n->n_inputs; k++) try_merge(&f, find(&f, n->inputs[k]), find(&f, id));
    }
    if (st == TG_OK) group_optimizer(&f);
    if (st == TG_OK) merge_norm_grads(&f);
    if (st == TG_OK) merge_cross_entropy(&f);
    if (st == TG_OK) merge_attention(&f);
    if (st == TG_OK) group_matmuls(&f);
    if (st == TG_OK) merge_siblings(&f);
    if (st == TG_OK) merge_alike_copies(&f);
    tg_partition *p = st == TG_OK ? calloc(1, sizeof *p) : NULL;
    if (st == TG_OK &&
        (!p || !(p->kernel_of = malloc(((size_t)g->n_nodes + 1) * sizeof *p->kernel_of)))) {
        free(p);
        p = NULL;
        st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    }
    if (st == TG_OK) {
        p->n_nodes = g->n_nodes;
        for (int id = 0; id < g->n_nodes; id++) {
            p->kernel_of[id] = -1;
            p->unfused += find(&f, id) >= 0;
        }
        st = build_partition(&f, p);
    }
    fuser_free(&f);
    if (st != TG_OK) {
        tg_partition_free(p);
        return st;
    }
    *out = p;
    return TG_OK;
}

tg_status tg_pass_fusion(tg_graph **g, const tg_pass_ctx *ctx) {
    return tg_partition_graph(*g, ctx->n_targets, ctx->targets, ctx->n_target_ops, ctx->target_ops,
                              &ctx->limits, ctx->partition);
}
