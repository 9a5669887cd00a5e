/* fused_ir.c — the text IR grouped by kernel (docs/ir.md, "Fused IR").
 * It reuses the plain printer's lines (line i + 1 is node i), so nodes
 * print exactly as in plain IR, and only reorders them: sources, then each
 * kernel under a comment line, aliases as soon as what they view is
 * printed, unneeded nodes last. The result is still valid plain IR. */
#include "graph/strbuf.h"
#include "passes/passes.h"

#include <stdlib.h>
#include <string.h>

typedef struct printer {
    const tg_graph *g;
    const tg_partition *p;
    const char **line; /* per node: its line in the plain text */
    size_t *line_len;
    bool *printed;
    tg_sb out;
} printer;

static void print_node(printer *pr, int id, const char *indent) {
    tg_sb_puts(&pr->out, indent);
    tg_sb_append(&pr->out, pr->line[id], pr->line_len[id]);
    tg_sb_puts(&pr->out, "\n");
    pr->printed[id] = true;
}

/* The node's label ("%h"): the plain line up to " = ". */
static void print_label(printer *pr, int id) {
    const char *eq = strstr(pr->line[id], " = ");
    tg_sb_append(&pr->out, pr->line[id], eq ? (size_t)(eq - pr->line[id]) : 0);
}

static void print_list(printer *pr, const char *what, int n, const int32_t *ids) {
    tg_sb_puts(&pr->out, what);
    for (int i = 0; i < n; i++) {
        tg_sb_puts(&pr->out, i ? ", " : " ");
        print_label(pr, ids[i]);
    }
}

static const char *kind_name(tg_op_class k) {
    switch (k) {
    case TG_CLASS_ELEMENTWISE: return "elementwise";
    case TG_CLASS_REDUCTION: return "reduction";
    case TG_CLASS_MATMUL: return "matmul";
    case TG_CLASS_MOVEMENT: return "movement";
    case TG_CLASS_OPAQUE: return "opaque";
    case TG_CLASS_STATE: return "state";
    default: return "source";
    }
}

/* Prints every unprinted alias whose input is printed (chains in order). */
static void print_ready_aliases(printer *pr, const bool *needed, const char *indent) {
    for (int id = 0; id < pr->g->n_nodes; id++) {
        const tg_node *n = &pr->g->nodes[id];
        if (needed[id] && !pr->printed[id] && tg_node_is_alias(n) && pr->printed[n->inputs[0]])
            print_node(pr, id, indent);
    }
}

/* "# kernel 3 matmul: matmul + add + gelu <- %x, %w -> %5" */
static void print_kernel(printer *pr, int k, const bool *needed) {
    const tg_part_kernel *kr = &pr->p->kernels[k];
    char head[64];
    snprintf(head, sizeof head, "# kernel %d %s:", k, kind_name(kr->kind));
    tg_sb_puts(&pr->out, head);
    for (int i = 0; i < kr->n_nodes; i++) {
        tg_sb_puts(&pr->out, i ? " + " : " ");
        tg_sb_puts(&pr->out, tg_ops[pr->g->nodes[kr->nodes[i]].op].name);
    }
    print_list(pr, " <-", kr->n_inputs, kr->inputs);
    print_list(pr, " ->", kr->n_outputs, kr->outputs);
    tg_sb_puts(&pr->out, "\n");
    /* A member may read an alias of an earlier member (a multi-tensor update
     * reads its gradient slice through a reshape): print such aliases as
     * soon as what they view is printed, so the text stays valid IR. */
    for (int i = 0; i < kr->n_nodes; i++) {
        print_node(pr, kr->nodes[i], "  ");
        print_ready_aliases(pr, needed, "  ");
    }
}

static bool split_lines(printer *pr, char *text) {
    char *s = strchr(text, '\n'); /* skip the header */
    for (int id = 0; id < pr->g->n_nodes; id++) {
        if (!s) return false;
        s++;
        char *end = strchr(s, '\n');
        if (!end) return false;
        pr->line[id] = s;
        pr->line_len[id] = (size_t)(end - s);
        s = end;
    }
    return true;
}

char *tg_partition_to_text(const tg_graph *g, const tg_partition *p) {
    if (!g || !p || p->n_nodes != g->n_nodes) {
        tg_set_error(TG_ERR_INVALID_ARGUMENT,
                     "tg_partition_to_text: the partition is not of this graph");
        return NULL;
    }
    char *text = tg_graph_to_text(g);
    if (!text) return NULL;
    size_t n = (size_t)g->n_nodes + 1;
    printer pr = {.g = g, .p = p};
    pr.line = malloc(n * sizeof *pr.line);
    pr.line_len = malloc(n * sizeof *pr.line_len);
    pr.printed = calloc(n, sizeof *pr.printed);
    bool *needed = calloc(n, sizeof *needed);
    bool ok = pr.line && pr.line_len && pr.printed && needed && split_lines(&pr, text);
    if (ok) {
        /* needed = in a kernel, or an alias of something needed (backwards) */
        for (int id = g->n_nodes - 1; id >= 0; id--) {
            const tg_node *nd = &g->nodes[id];
            if (p->kernel_of[id] >= 0) needed[id] = true;
            if (!needed[id]) continue;
            for (int k = 0; k < nd->n_inputs; k++) {
                const tg_node *in = &g->nodes[nd->inputs[k]];
                if (tg_node_is_alias(in) || tg_ops[in->op].klass == TG_CLASS_SOURCE)
                    needed[nd->inputs[k]] = true;
            }
        }
        char summary[128];
        snprintf(summary, sizeof summary,
                 "# tg ir v1\n# fused: %d kernels, %d dispatches unfused\n", p->n_kernels,
                 p->unfused);
        tg_sb_puts(&pr.out, summary);
        for (int id = 0; id < g->n_nodes; id++)
            if (tg_ops[g->nodes[id].op].klass == TG_CLASS_SOURCE) print_node(&pr, id, "");
        print_ready_aliases(&pr, needed, "");
        for (int k = 0; k < p->n_kernels; k++) {
            print_kernel(&pr, k, needed);
            print_ready_aliases(&pr, needed, "");
        }
        bool header = false;
        for (int id = 0; id < g->n_nodes; id++) {
            if (pr.printed[id]) continue;
            if (!header) tg_sb_puts(&pr.out, "# not needed by the targets\n");
            header = true;
            print_node(&pr, id, "");
        }
    }
    free(text);
    free(pr.line);
    free(pr.line_len);
    free(pr.printed);
    free(needed);
    if (!ok || pr.out.oom) {
        free(pr.out.s);
        tg_set_error(TG_ERR_NO_MEMORY, "tg_partition_to_text: out of memory");
        return NULL;
    }
    return pr.out.s;
}
