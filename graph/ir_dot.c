/* ir_dot.c — tg_graph_to_dot: the graph as Graphviz DOT. One DOT node per
 * graph node (labelled with the op and the node's name), one edge per
 * operand (labelled with the producer's type, e.g. f32[4,384]). */
#include "graph/graph_internal.h"
#include "graph/strbuf.h"

#include <stdlib.h>
#include <string.h>

/* Appends s for use inside a DOT double-quoted string. Quotes and
 * backslashes are escaped (a backslash would otherwise start a DOT escape
 * such as \N); control bytes become '?' so that no name can break the
 * file. */
static void dot_escaped(tg_sb *b, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            tg_sb_append(b, esc, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            tg_sb_puts(b, "?");
        } else {
            tg_sb_append(b, (const char *)p, 1);
        }
    }
}

char *tg_graph_to_dot(const tg_graph *g) {
    if (!g) {
        tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_graph_to_dot: graph is NULL");
        return NULL;
    }
    if (g->status != TG_OK) {
        tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_graph_to_dot: the graph has an error: %s",
                     g->error);
        return NULL;
    }
    tg_sb b = {0};
    char line[160];
    tg_sb_puts(&b, "digraph tg {\n  node [shape=box, fontname=\"monospace\"];\n"
                   "  edge [fontname=\"monospace\", fontsize=10];\n");
    for (int i = 0; i < g->n_nodes; i++) {
        const tg_node *n = &g->nodes[i];
        snprintf(line, sizeof line, "  n%d [label=\"", i);
        tg_sb_puts(&b, line);
        dot_escaped(&b, tg_ops[n->op].name);
        tg_sb_puts(&b, "\\n");
        if (n->name) {
            dot_escaped(&b, n->name);
        } else {
            snprintf(line, sizeof line, "%%%d", i);
            tg_sb_puts(&b, line);
        }
        tg_sb_puts(&b, "\"");
        if (tg_ops[n->op].klass == TG_CLASS_SOURCE) tg_sb_puts(&b, ", shape=ellipse");
        tg_sb_puts(&b, "];\n");
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const tg_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_inputs; k++) {
            const tg_node *in = &g->nodes[n->inputs[k]];
            char type[128];
            tg_shape_str(in->dtype, in->rank, in->shape, type, sizeof type);
            snprintf(line, sizeof line, "  n%d -> n%d [label=\"", n->inputs[k], i);
            tg_sb_puts(&b, line);
            dot_escaped(&b, type);
            tg_sb_puts(&b, "\"];\n");
        }
    }
    tg_sb_puts(&b, "}\n");
    if (b.oom) {
        free(b.s);
        tg_set_error(TG_ERR_NO_MEMORY, "tg_graph_to_dot: out of memory");
        return NULL;
    }
    return b.s;
}
