/* ir_dot.c — tg_graph_to_dot: the graph as Graphviz DOT. One DOT node per
 * graph node (labelled with the op and the node's name), one edge per
 * operand (labelled with the producer's type, e.g. f32[4,384]). */
#include "graph/graph_internal.h"

#include <stdlib.h>
#include <string.h>

typedef struct dot_buf {
    char *s;
    size_t len, cap;
    bool oom;
} dot_buf;

static void dot_append(dot_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void dot_puts(dot_buf *b, const char *s) {
    dot_append(b, s, strlen(s));
}

/* Appends s for use inside a DOT double-quoted string. Quotes and
 * backslashes are escaped (a backslash would otherwise start a DOT escape
 * such as \N); control bytes become '?' so that no name can break the
 * file. */
static void dot_escaped(dot_buf *b, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            dot_append(b, esc, 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            dot_puts(b, "?");
        } else {
            dot_append(b, (const char *)p, 1);
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
    dot_buf b = {0};
    char line[160];
    dot_puts(&b, "digraph tg {\n  node [shape=box, fontname=\"monospace\"];\n"
                 "  edge [fontname=\"monospace\", fontsize=10];\n");
    for (int i = 0; i < g->n_nodes; i++) {
        const tg_node *n = &g->nodes[i];
        snprintf(line, sizeof line, "  n%d [label=\"", i);
        dot_puts(&b, line);
        dot_escaped(&b, tg_ops[n->op].name);
        dot_puts(&b, "\\n");
        if (n->name) {
            dot_escaped(&b, n->name);
        } else {
            snprintf(line, sizeof line, "%%%d", i);
            dot_puts(&b, line);
        }
        dot_puts(&b, "\"");
        if (tg_ops[n->op].klass == TG_CLASS_SOURCE) dot_puts(&b, ", shape=ellipse");
        dot_puts(&b, "];\n");
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const tg_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_inputs; k++) {
            const tg_node *in = &g->nodes[n->inputs[k]];
            char type[128];
            tg_shape_str(in->dtype, in->rank, in->shape, type, sizeof type);
            snprintf(line, sizeof line, "  n%d -> n%d [label=\"", n->inputs[k], i);
            dot_puts(&b, line);
            dot_escaped(&b, type);
            dot_puts(&b, "\"];\n");
        }
    }
    dot_puts(&b, "}\n");
    if (b.oom) {
        free(b.s);
        tg_set_error(TG_ERR_NO_MEMORY, "tg_graph_to_dot: out of memory");
        return NULL;
    }
    return b.s;
}
