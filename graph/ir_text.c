/* ir_text.c — the text IR: tg_graph_to_text prints a graph, tg_graph_parse
 * reads it back. One node a line, MLIR-like; the syntax is specified in
 * docs/ir.md. Printing is canonical (print -> parse -> print is
 * byte-identical) and the parser treats its input as untrusted: every error
 * is "FILE:LINE:COL: message", never a crash. */
#include "graph/graph_internal.h"
#include "graph/strbuf.h"

#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define IR_HEADER "# tg ir v1"
#define IR_HEADER_PREFIX "# tg ir "
#define IR_VERSION "v1"
/* Limits that keep hostile input from asking for absurd allocations. */
#define IR_MAX_DIM ((int64_t)1 << 40)
#define IR_MAX_ELEMENTS ((int64_t)1 << 40)
#define IR_MAX_CONSTANT_BYTES ((int64_t)1 << 30)
/* Constants with at most this many elements are printed inline. */
#define IR_DENSE_MAX 16

/* ------------------------------------------------------------------ */
/* A string -> int hash table (node names, labels)                      */
/* ------------------------------------------------------------------ */

typedef struct name_table {
    char **keys;
    int *vals;
    size_t cap, n;
} name_table;

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

static size_t nt_slot(const name_table *t, const char *key, size_t n) {
    size_t i = (size_t)hash_bytes(key, n) & (t->cap - 1);
    while (t->keys[i] && !(strlen(t->keys[i]) == n && memcmp(t->keys[i], key, n) == 0))
        i = (i + 1) & (t->cap - 1);
    return i;
}

static int *nt_get(const name_table *t, const char *key, size_t n) {
    if (t->cap == 0) return NULL;
    size_t i = nt_slot(t, key, n);
    return t->keys[i] ? &t->vals[i] : NULL;
}

/* Inserts key (copied) with val, or overwrites. False if out of memory. */
static bool nt_put(name_table *t, const char *key, size_t n, int val) {
    if ((t->n + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        name_table bigger = {calloc(cap, sizeof(char *)), calloc(cap, sizeof(int)), cap, 0};
        if (!bigger.keys || !bigger.vals) {
            free(bigger.keys);
            free(bigger.vals);
            return false;
        }
        for (size_t i = 0; i < t->cap; i++) {
            if (!t->keys[i]) continue;
            size_t j = nt_slot(&bigger, t->keys[i], strlen(t->keys[i]));
            bigger.keys[j] = t->keys[i];
            bigger.vals[j] = t->vals[i];
            bigger.n++;
        }
        free(t->keys);
        free(t->vals);
        *t = bigger;
    }
    size_t i = nt_slot(t, key, n);
    if (!t->keys[i]) {
        char *copy = malloc(n + 1);
        if (!copy) return false;
        memcpy(copy, key, n);
        copy[n] = '\0';
        t->keys[i] = copy;
        t->n++;
    }
    t->vals[i] = val;
    return true;
}

static void nt_free(name_table *t) {
    for (size_t i = 0; i < t->cap; i++) free(t->keys[i]);
    free(t->keys);
    free(t->vals);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------------ */
/* Attributes: one row per printed field, in TG_ATTR_* bit order        */
/* ------------------------------------------------------------------ */

typedef enum attr_kind { ATTR_FLAG, ATTR_INT, ATTR_DOUBLE, ATTR_LIST } attr_kind;

typedef struct attr_field {
    unsigned bit;
    const char *name;
    attr_kind kind;
    size_t offset;       /* of the value (lists: of the int64_t array) */
    size_t count_offset; /* lists: of the int count, shared by begin/end/step */
} attr_field;

#define FIELD(bit, name, kind, field)                                                              \
    { bit, name, kind, offsetof(tg_attrs, field), 0 }
#define LIST(bit, name, field, count)                                                              \
    { bit, name, ATTR_LIST, offsetof(tg_attrs, field), offsetof(tg_attrs, count) }

/* TG_ATTR_HAS_MASK is not printed: it is implied by attention's 4th operand. */
static const attr_field attr_fields[] = {
    LIST(TG_ATTR_AXES, "axes", axes, n_axes),
    FIELD(TG_ATTR_KEEPDIMS, "keepdims", ATTR_FLAG, keepdims),
    FIELD(TG_ATTR_AXIS, "axis", ATTR_INT, axis),
    LIST(TG_ATTR_SHAPE, "shape", shape, n_shape),
    LIST(TG_ATTR_BEGIN, "begin", begin, n_slice),
    LIST(TG_ATTR_BEGIN, "end", end, n_slice),
    LIST(TG_ATTR_BEGIN, "step", step, n_slice),
    LIST(TG_ATTR_LO_HI, "lo", lo, n_slice),
    LIST(TG_ATTR_LO_HI, "hi", hi, n_slice),
    FIELD(TG_ATTR_VALUE, "value", ATTR_DOUBLE, value),
    FIELD(TG_ATTR_TRANSPOSE, "transpose_a", ATTR_FLAG, transpose_a),
    FIELD(TG_ATTR_TRANSPOSE, "transpose_b", ATTR_FLAG, transpose_b),
    FIELD(TG_ATTR_CONV, "stride", ATTR_INT, stride),
    FIELD(TG_ATTR_CONV, "padding", ATTR_INT, padding),
    FIELD(TG_ATTR_CONV, "dilation", ATTR_INT, dilation),
    FIELD(TG_ATTR_EPS, "eps", ATTR_DOUBLE, eps),
    FIELD(TG_ATTR_ATTENTION, "causal", ATTR_FLAG, causal),
    FIELD(TG_ATTR_ATTENTION, "scale", ATTR_DOUBLE, scale),
    FIELD(TG_ATTR_IGNORE, "ignore_index", ATTR_INT, ignore_index),
    FIELD(TG_ATTR_DEPTH, "depth", ATTR_INT, depth),
    FIELD(TG_ATTR_TRAINABLE, "trainable", ATTR_FLAG, trainable),
    FIELD(TG_ATTR_BETAS, "beta1", ATTR_DOUBLE, beta1),
    FIELD(TG_ATTR_BETAS, "beta2", ATTR_DOUBLE, beta2),
    FIELD(TG_ATTR_MOMENTUM, "momentum", ATTR_DOUBLE, momentum),
    FIELD(TG_ATTR_MOMENTUM, "dampening", ATTR_DOUBLE, dampening),
    FIELD(TG_ATTR_MOMENTUM, "nesterov", ATTR_FLAG, nesterov),
    FIELD(TG_ATTR_DECAY, "weight_decay", ATTR_DOUBLE, weight_decay),
};
#define N_ATTR_FIELDS ((int)(sizeof attr_fields / sizeof attr_fields[0]))

/* permute keeps its permutation in `axes` but calls it what it is. */
static const char *attr_name(tg_op op, const attr_field *f) {
    if (op == TG_OP_PERMUTE && f->bit == TG_ATTR_AXES) return "perm";
    return f->name;
}

static bool *attr_flag(tg_attrs *a, const attr_field *f) {
    return (bool *)((char *)a + f->offset);
}
static int64_t *attr_int(tg_attrs *a, const attr_field *f) {
    return (int64_t *)((char *)a + f->offset);
}
static double *attr_double(tg_attrs *a, const attr_field *f) {
    return (double *)((char *)a + f->offset);
}
static int *attr_count(tg_attrs *a, const attr_field *f) {
    return (int *)((char *)a + f->count_offset);
}

/* ------------------------------------------------------------------ */
/* Numbers                                                             */
/* ------------------------------------------------------------------ */

typedef struct number {
    double d;
    int64_t i;
    bool is_int; /* written as an integer that fits int64_t */
} number;

static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}
static bool is_ident_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_' || c == '.';
}

/* Scans a number at s[0..]: [+-]? (inf | nan | digits [. digits] [e [+-] digits]
 * | . digits [exp]). Deliberately narrower than strtod (no hex floats, no
 * "infinity"), so that what is accepted is exactly what docs/ir.md says.
 * Sets *end to the length scanned; false if there is no number. s must be
 * NUL-terminated. */
static bool scan_number(const char *s, size_t *end, number *out) {
    size_t i = 0;
    bool neg = false;
    if (s[i] == '+' || s[i] == '-') neg = s[i++] == '-';
    if (strncmp(s + i, "inf", 3) == 0 || strncmp(s + i, "nan", 3) == 0) {
        bool inf = s[i] == 'i';
        *end = i + 3;
        out->is_int = false;
        out->i = 0;
        out->d = inf ? (neg ? -INFINITY : INFINITY) : NAN;
        return true;
    }
    size_t digits = 0;
    bool is_int = true;
    while (is_digit(s[i])) i++, digits++;
    if (s[i] == '.') {
        is_int = false;
        i++;
        while (is_digit(s[i])) i++, digits++;
    }
    if (digits == 0) return false;
    if (s[i] == 'e' || s[i] == 'E') {
        size_t j = i + 1;
        if (s[j] == '+' || s[j] == '-') j++;
        if (is_digit(s[j])) {
            while (is_digit(s[j])) j++;
            i = j;
            is_int = false;
        }
    }
    char tmp[128];
    if (i >= sizeof tmp) return false;
    memcpy(tmp, s, i);
    tmp[i] = '\0';
    out->d = strtod(tmp, NULL);
    out->i = 0;
    out->is_int = false;
    if (is_int) {
        errno = 0;
        long long v = strtoll(tmp, NULL, 10);
        if (errno == 0) {
            out->i = v;
            out->is_int = true;
        }
    }
    *end = i;
    return true;
}

static bool parse_number_string(const char *s, number *out) {
    size_t end;
    return scan_number(s, &end, out) && s[end] == '\0';
}

/* The shortest of %.1g .. %.17g that reads back as exactly v. NaN prints as
 * "nan" (its sign and payload are not kept). */
static void format_double(double v, char *buf, size_t n) {
    if (isnan(v)) {
        snprintf(buf, n, "nan");
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        number back;
        if (parse_number_string(buf, &back) && memcmp(&back.d, &v, sizeof v) == 0) return;
    }
    snprintf(buf, n, "%.17g", v);
}

/* Converts a parsed number to one element of dtype at dst. On failure
 * returns a static reason. */
static const char *encode_element(tg_dtype dt, const number *num, void *dst) {
    if (!tg_dtype_is_float(dt)) {
        if (!num->is_int) return "expected an integer";
        int64_t v = num->i;
        switch (dt) {
        case TG_I32: {
            if (v < INT32_MIN || v > INT32_MAX) return "value out of range for i32";
            int32_t i32 = (int32_t)v;
            memcpy(dst, &i32, 4);
            return NULL;
        }
        case TG_I8: {
            if (v < INT8_MIN || v > INT8_MAX) return "value out of range for i8";
            int8_t i8 = (int8_t)v;
            memcpy(dst, &i8, 1);
            return NULL;
        }
        case TG_U8: {
            if (v < 0 || v > UINT8_MAX) return "value out of range for u8";
            uint8_t u8 = (uint8_t)v;
            memcpy(dst, &u8, 1);
            return NULL;
        }
        default: return "unsupported dtype";
        }
    }
    double d = num->d;
    /* Values beyond FLT_MAX by more than half an ulp overflow; converting
     * them with a cast would be undefined. */
    if (isfinite(d) && fabs(d) >= 0x1.ffffffp127) return "value out of range for a float";
    float f = (float)d;
    if (dt == TG_F32) {
        memcpy(dst, &f, 4);
    } else {
        uint16_t h = dt == TG_F16 ? tg_f32_to_f16(f) : tg_f32_to_bf16(f);
        memcpy(dst, &h, 2);
    }
    return NULL;
}

/* Formats one element so that it reads back to the same bytes; false if no
 * text form does (e.g. a NaN with a payload): the constant is then printed
 * as hex. */
static bool format_element(tg_dtype dt, const void *src, char *buf, size_t n) {
    size_t size = tg_dtype_size(dt);
    switch (dt) {
    case TG_I32: {
        int32_t v;
        memcpy(&v, src, 4);
        snprintf(buf, n, "%" PRId32, v);
        return true;
    }
    case TG_I8: snprintf(buf, n, "%d", (int)*(const int8_t *)src); return true;
    case TG_U8: snprintf(buf, n, "%d", (int)*(const uint8_t *)src); return true;
    default: break;
    }
    float f;
    if (dt == TG_F32) {
        memcpy(&f, src, 4);
    } else {
        uint16_t h;
        memcpy(&h, src, 2);
        f = dt == TG_F16 ? tg_f16_to_f32(h) : tg_bf16_to_f32(h);
    }
    unsigned char back[4];
    number num;
    if (isnan(f)) {
        snprintf(buf, n, "nan");
        return parse_number_string(buf, &num) && !encode_element(dt, &num, back) &&
               memcmp(back, src, size) == 0;
    }
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)f);
        if (parse_number_string(buf, &num) && !encode_element(dt, &num, back) &&
            memcmp(back, src, size) == 0)
            return true;
    }
    return false;
}

/* ------------------------------------------------------------------ */
/* Printing                                                            */
/* ------------------------------------------------------------------ */

static void print_string(tg_sb *b, const char *s) {
    tg_sb_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"')
            tg_sb_puts(b, "\\\"");
        else if (*p == '\\')
            tg_sb_puts(b, "\\\\");
        else if (*p == '\n')
            tg_sb_puts(b, "\\n");
        else if (*p < 0x20 || *p > 0x7e)
            tg_sb_printf(b, "\\x%02x", *p);
        else
            tg_sb_append(b, (const char *)p, 1);
    }
    tg_sb_puts(b, "\"");
}

static void print_type(tg_sb *b, tg_dtype dt, int rank, const int64_t *shape) {
    tg_sb_printf(b, "%s[", tg_dtype_name(dt));
    for (int i = 0; i < rank; i++) {
        if (i) tg_sb_puts(b, ",");
        if (shape[i] < 0)
            tg_sb_puts(b, "?");
        else
            tg_sb_printf(b, "%" PRId64, shape[i]);
    }
    tg_sb_puts(b, "]");
}

/* A name can be the node's %identifier if it is made of [A-Za-z0-9_.] and is
 * not all digits (those are node ids). Uniqueness is checked separately. */
static bool name_is_identifier(const char *name) {
    bool all_digits = true;
    if (!name[0]) return false;
    for (const char *p = name; *p; p++) {
        if (!is_ident_char(*p)) return false;
        if (!is_digit(*p)) all_digits = false;
    }
    return !all_digits;
}

static void print_ident(tg_sb *b, const tg_graph *g, const bool *use_name, int id) {
    if (use_name[id])
        tg_sb_printf(b, "%%%s", g->nodes[id].name);
    else
        tg_sb_printf(b, "%%%d", id);
}

static void print_constant(tg_sb *b, const tg_node *n) {
    size_t size = tg_dtype_size(n->dtype);
    size_t count = size ? n->data_bytes / size : 0;
    const unsigned char *data = n->data;
    char text[64];
    bool all_text = true, all_equal = true;
    for (size_t i = 0; i < count && all_text; i++) {
        all_text = format_element(n->dtype, data + i * size, text, sizeof text);
        if (i > 0 && memcmp(data + i * size, data, size) != 0) all_equal = false;
    }
    if (all_text && count >= 2 && all_equal) {
        format_element(n->dtype, data, text, sizeof text);
        tg_sb_printf(b, " splat<%s>", text);
    } else if (all_text && count <= IR_DENSE_MAX) {
        tg_sb_puts(b, " dense<[");
        for (size_t i = 0; i < count; i++) {
            format_element(n->dtype, data + i * size, text, sizeof text);
            tg_sb_printf(b, "%s%s", i ? ", " : "", text);
        }
        tg_sb_puts(b, "]>");
    } else {
        tg_sb_puts(b, " hex<\"");
        for (size_t i = 0; i < n->data_bytes; i++) tg_sb_printf(b, "%02x", data[i]);
        tg_sb_puts(b, "\">");
    }
}

/* Prints the braces: name= first (if the name is not the identifier), then
 * the op's attributes in TG_ATTR_* order; flags only when true. */
static void print_attrs(tg_sb *b, const tg_node *n, bool name_attr) {
    unsigned schema = tg_ops[n->op].attrs;
    tg_attrs *a = (tg_attrs *)&n->attrs; /* only read */
    int printed = 0;
    if (name_attr) {
        tg_sb_puts(b, " {name=");
        print_string(b, n->name);
        printed++;
    }
    for (int i = 0; i < N_ATTR_FIELDS; i++) {
        const attr_field *f = &attr_fields[i];
        if (!(schema & f->bit)) continue;
        if (f->kind == ATTR_FLAG && !*attr_flag(a, f)) continue;
        tg_sb_puts(b, printed++ ? ", " : " {");
        tg_sb_puts(b, attr_name(n->op, f));
        char text[64];
        switch (f->kind) {
        case ATTR_FLAG: break;
        case ATTR_INT: tg_sb_printf(b, "=%" PRId64, *attr_int(a, f)); break;
        case ATTR_DOUBLE:
            format_double(*attr_double(a, f), text, sizeof text);
            tg_sb_printf(b, "=%s", text);
            break;
        case ATTR_LIST: {
            int count = *attr_count(a, f);
            const int64_t *v = attr_int(a, f);
            tg_sb_puts(b, "=[");
            for (int k = 0; k < count && k < TG_MAX_RANK; k++)
                tg_sb_printf(b, "%s%" PRId64, k ? "," : "", v[k]);
            tg_sb_puts(b, "]");
            break;
        }
        }
    }
    if (printed) tg_sb_puts(b, "}");
}

char *tg_graph_to_text(const tg_graph *g) {
    if (!g) {
        tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_graph_to_text: graph is NULL");
        return NULL;
    }
    if (g->status != TG_OK) {
        tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_graph_to_text: the graph has an error: %s",
                     g->error);
        return NULL;
    }
    /* A node is printed as %name when its name is an identifier used by no
     * other node; otherwise as %id. */
    name_table counts = {0};
    bool *use_name = calloc((size_t)g->n_nodes + 1, sizeof(bool));
    tg_sb b = {0};
    if (!use_name) goto oom;
    for (int i = 0; i < g->n_nodes; i++) {
        const char *name = g->nodes[i].name;
        if (!name || !name_is_identifier(name)) continue;
        int *c = nt_get(&counts, name, strlen(name));
        if (!nt_put(&counts, name, strlen(name), c ? *c + 1 : 1)) goto oom;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        const char *name = g->nodes[i].name;
        if (!name || !name_is_identifier(name)) continue;
        use_name[i] = *nt_get(&counts, name, strlen(name)) == 1;
    }

    tg_sb_puts(&b, IR_HEADER "\n");
    for (int i = 0; i < g->n_nodes; i++) {
        const tg_node *n = &g->nodes[i];
        print_ident(&b, g, use_name, i);
        tg_sb_printf(&b, " = %s", tg_ops[n->op].name);
        bool named_source = n->op == TG_OP_PLACEHOLDER || n->op == TG_OP_VARIABLE;
        if (named_source) {
            tg_sb_puts(&b, " ");
            print_string(&b, n->name ? n->name : "");
        }
        if (n->op == TG_OP_CONSTANT) print_constant(&b, n);
        for (int k = 0; k < n->n_inputs; k++) {
            tg_sb_puts(&b, k ? ", " : " ");
            print_ident(&b, g, use_name, n->inputs[k]);
        }
        print_attrs(&b, n, !named_source && n->name && !use_name[i]);
        tg_sb_puts(&b, " : ");
        print_type(&b, n->dtype, n->rank, n->shape);
        tg_sb_puts(&b, "\n");
    }
    if (b.oom) goto oom;
    nt_free(&counts);
    free(use_name);
    return b.s;

oom:
    nt_free(&counts);
    free(use_name);
    free(b.s);
    tg_set_error(TG_ERR_NO_MEMORY, "tg_graph_to_text: out of memory");
    return NULL;
}

/* ------------------------------------------------------------------ */
/* Parsing                                                             */
/* ------------------------------------------------------------------ */

typedef struct parser {
    const char *src; /* NUL-terminated copy of the input, no NULs inside */
    size_t len, pos;
    const char *file;
    int line;
    size_t line_start;
    tg_graph *g;
    name_table labels; /* label (without %) -> node id */
} parser;

/* A constant's value as written, converted once the type is known. */
typedef struct const_value {
    enum { CONST_NONE, CONST_DENSE, CONST_SPLAT, CONST_HEX } kind;
    number *values; /* dense: n_values; splat: 1 */
    size_t *value_pos;
    size_t n_values, cap_values;
    char *hex; /* hex: the digits */
    size_t hex_pos;
} const_value;

/* Everything one line holds; freed after each line. */
typedef struct node_line {
    size_t label_pos, op_pos;
    char *label;
    tg_op op;
    char *name; /* quoted source name or name= */
    tg_tensor *inputs;
    int n_inputs, cap_inputs;
    tg_attrs attrs;
    const_value value;
    tg_dtype dtype;
    int rank;
    int64_t shape[TG_MAX_RANK];
    size_t type_pos;
} node_line;

static void node_line_free(node_line *l) {
    free(l->label);
    free(l->name);
    free(l->inputs);
    free(l->value.values);
    free(l->value.value_pos);
    free(l->value.hex);
}

static bool fail_at(parser *p, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool fail_at(parser *p, size_t at, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t col = at >= p->line_start ? at - p->line_start + 1 : 1;
    tg_set_error(TG_ERR_PARSE, "%s:%d:%zu: %s", p->file, p->line, col, msg);
    return false;
}

static char peek(const parser *p) {
    return p->pos < p->len ? p->src[p->pos] : '\0';
}

static void skip_space(parser *p) {
    while (p->pos < p->len &&
           (p->src[p->pos] == ' ' || p->src[p->pos] == '\t' || p->src[p->pos] == '\r'))
        p->pos++;
}

static bool at_line_end(parser *p) {
    skip_space(p);
    char c = peek(p);
    return c == '\0' || c == '\n' || c == '#';
}

/* Describes the character at the cursor for messages. */
static const char *describe(const parser *p, char *buf, size_t n) {
    char c = peek(p);
    if (c == '\0') return "end of input";
    if (c == '\n') return "end of line";
    if ((unsigned char)c < 0x20 || (unsigned char)c > 0x7e)
        snprintf(buf, n, "byte 0x%02x", (unsigned char)c);
    else
        snprintf(buf, n, "'%c'", c);
    return buf;
}

static bool expect(parser *p, char c, const char *what) {
    skip_space(p);
    if (peek(p) == c) {
        p->pos++;
        return true;
    }
    char buf[32];
    return fail_at(p, p->pos, "expected %s, found %s", what, describe(p, buf, sizeof buf));
}

/* Checks that only blanks and an optional comment remain on the line;
 * leaves the cursor on the newline (or the end of input). */
static bool end_of_line(parser *p) {
    skip_space(p);
    if (peek(p) == '#')
        while (p->pos < p->len && p->src[p->pos] != '\n') p->pos++;
    if (p->pos < p->len && p->src[p->pos] != '\n') {
        char buf[32];
        return fail_at(p, p->pos, "unexpected %s at the end of the line",
                       describe(p, buf, sizeof buf));
    }
    return true;
}

/* Steps over the newline ending the current line. */
static void next_line(parser *p) {
    if (p->pos < p->len) p->pos++;
    p->line++;
    p->line_start = p->pos;
}

/* A word [A-Za-z_][A-Za-z0-9_]* into buf (op, dtype and attribute names). */
static bool parse_word(parser *p, char *buf, size_t n, const char *what) {
    skip_space(p);
    size_t start = p->pos;
    char c = peek(p);
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_')) {
        char d[32];
        return fail_at(p, p->pos, "expected %s, found %s", what, describe(p, d, sizeof d));
    }
    while (is_ident_char(peek(p)) && peek(p) != '.') p->pos++;
    size_t len = p->pos - start;
    if (len >= n) return fail_at(p, start, "%s is too long", what);
    memcpy(buf, p->src + start, len);
    buf[len] = '\0';
    return true;
}

/* %label: returns a pointer into the source and its length. */
static bool parse_label(parser *p, const char **label, size_t *len) {
    skip_space(p);
    if (peek(p) != '%') {
        char d[32];
        return fail_at(p, p->pos, "expected a %%value, found %s", describe(p, d, sizeof d));
    }
    p->pos++;
    size_t start = p->pos;
    while (is_ident_char(peek(p))) p->pos++;
    if (p->pos == start) return fail_at(p, start - 1, "empty value name after '%%'");
    *label = p->src + start;
    *len = p->pos - start;
    return true;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A quoted string with escapes \" \\ \n \xNN; malloc'ed into *out. */
static bool parse_string(parser *p, char **out) {
    skip_space(p);
    size_t start = p->pos;
    if (peek(p) != '"') {
        char d[32];
        return fail_at(p, p->pos, "expected a quoted string, found %s", describe(p, d, sizeof d));
    }
    p->pos++;
    tg_sb b = {0};
    tg_sb_append(&b, "", 0); /* an empty string is still a string */
    for (;;) {
        char c = peek(p);
        if (c == '\0' || c == '\n') {
            free(b.s);
            return fail_at(p, start, "unterminated string");
        }
        if (c == '"') {
            p->pos++;
            break;
        }
        if ((unsigned char)c < 0x20 && c != '\t') {
            free(b.s);
            return fail_at(p, p->pos, "control character 0x%02x in string", (unsigned char)c);
        }
        if (c != '\\') {
            tg_sb_append(&b, &c, 1);
            p->pos++;
            continue;
        }
        size_t esc = p->pos++;
        char e = peek(p);
        char v;
        if (e == '"' || e == '\\') {
            v = e;
            p->pos++;
        } else if (e == 'n') {
            v = '\n';
            p->pos++;
        } else if (e == 'x' && p->pos + 2 < p->len && hex_digit(p->src[p->pos + 1]) >= 0 &&
                   hex_digit(p->src[p->pos + 2]) >= 0) {
            v = (char)(hex_digit(p->src[p->pos + 1]) * 16 + hex_digit(p->src[p->pos + 2]));
            p->pos += 3;
            if (v == '\0') {
                free(b.s);
                return fail_at(p, esc, "\\x00 is not allowed in a string");
            }
        } else {
            free(b.s);
            return fail_at(p, esc, "bad escape in string (use \\\" \\\\ \\n or \\xNN)");
        }
        tg_sb_append(&b, &v, 1);
    }
    if (b.oom) {
        free(b.s);
        return fail_at(p, start, "out of memory");
    }
    *out = b.s;
    return true;
}

static bool parse_number(parser *p, number *out, size_t *at) {
    skip_space(p);
    *at = p->pos;
    size_t end;
    if (!scan_number(p->src + p->pos, &end, out)) {
        char d[32];
        return fail_at(p, p->pos, "expected a number, found %s", describe(p, d, sizeof d));
    }
    p->pos += end;
    if (is_ident_char(peek(p))) return fail_at(p, *at, "malformed number");
    return true;
}

static bool parse_int(parser *p, int64_t *out, const char *what) {
    number num;
    size_t at;
    if (!parse_number(p, &num, &at)) return false;
    if (!num.is_int) return fail_at(p, at, "%s must be an integer (in int64 range)", what);
    *out = num.i;
    return true;
}

/* dtype[d0,d1,...] with ? for dynamic dims. */
static bool parse_type(parser *p, node_line *l) {
    char word[16];
    skip_space(p);
    l->type_pos = p->pos;
    if (!parse_word(p, word, sizeof word, "a dtype")) return false;
    if (!tg_dtype_from_name(word, &l->dtype))
        return fail_at(p, l->type_pos, "unknown dtype '%s'", word);
    if (peek(p) != '[') return expect(p, '[', "'[' after the dtype");
    size_t open = p->pos++;
    l->rank = 0;
    int64_t elements = 1;
    skip_space(p);
    if (peek(p) == ']') {
        p->pos++;
        return true;
    }
    for (;;) {
        skip_space(p);
        size_t at = p->pos;
        int64_t dim = 0;
        if (peek(p) == '?') {
            p->pos++;
            dim = -1;
        } else {
            if (!parse_int(p, &dim, "a dimension")) return false;
            if (dim < 0) return fail_at(p, at, "negative dimension %" PRId64, dim);
            if (dim > IR_MAX_DIM)
                return fail_at(p, at, "dimension %" PRId64 " is too large (max 2^40)", dim);
            if (dim > 0 && elements > IR_MAX_ELEMENTS / dim)
                return fail_at(p, at, "too many elements in shape (max 2^40)");
            elements *= dim;
        }
        if (l->rank == TG_MAX_RANK) return fail_at(p, open, "rank exceeds %d", TG_MAX_RANK);
        l->shape[l->rank++] = dim;
        skip_space(p);
        if (peek(p) == ',') {
            p->pos++;
            continue;
        }
        if (peek(p) == ']') {
            p->pos++;
            return true;
        }
        if (at_line_end(p)) return fail_at(p, open, "unterminated shape");
        char d[32];
        return fail_at(p, p->pos, "expected ',' or ']' in shape, found %s",
                       describe(p, d, sizeof d));
    }
}

static bool push_value(parser *p, const_value *v, const number *num, size_t at) {
    if (v->n_values == v->cap_values) {
        size_t cap = v->cap_values ? v->cap_values * 2 : 16;
        number *nv = realloc(v->values, cap * sizeof *nv);
        if (nv) v->values = nv;
        size_t *np = realloc(v->value_pos, cap * sizeof *np);
        if (np) v->value_pos = np;
        if (!nv || !np) return fail_at(p, at, "out of memory");
        v->cap_values = cap;
    }
    v->values[v->n_values] = *num;
    v->value_pos[v->n_values++] = at;
    return true;
}

/* dense<[v, ...]> | splat<v> | hex<"..."> */
static bool parse_constant_value(parser *p, const_value *v) {
    char word[16];
    skip_space(p);
    size_t at = p->pos;
    if (!parse_word(p, word, sizeof word, "a constant value (dense, splat or hex)")) return false;
    if (!expect(p, '<', "'<'")) return false;
    if (strcmp(word, "dense") == 0) {
        v->kind = CONST_DENSE;
        if (!expect(p, '[', "'[' after dense<")) return false;
        size_t open = p->pos - 1;
        skip_space(p);
        if (peek(p) == ']') {
            p->pos++;
        } else {
            for (;;) {
                number num;
                size_t num_at;
                if (at_line_end(p)) return fail_at(p, open, "unterminated list");
                if (!parse_number(p, &num, &num_at) || !push_value(p, v, &num, num_at))
                    return false;
                skip_space(p);
                if (peek(p) == ',') {
                    p->pos++;
                    continue;
                }
                if (peek(p) == ']') {
                    p->pos++;
                    break;
                }
                if (at_line_end(p)) return fail_at(p, open, "unterminated list");
                char d[32];
                return fail_at(p, p->pos, "expected ',' or ']' in list, found %s",
                               describe(p, d, sizeof d));
            }
        }
    } else if (strcmp(word, "splat") == 0) {
        v->kind = CONST_SPLAT;
        number num;
        size_t num_at;
        if (!parse_number(p, &num, &num_at) || !push_value(p, v, &num, num_at)) return false;
    } else if (strcmp(word, "hex") == 0) {
        v->kind = CONST_HEX;
        skip_space(p);
        v->hex_pos = p->pos;
        if (!parse_string(p, &v->hex)) return false;
    } else {
        return fail_at(p, at, "unknown constant form '%s' (expected dense, splat or hex)", word);
    }
    return expect(p, '>', "'>' closing the constant");
}

/* Turns the written value into row-major bytes of the declared type. */
static bool build_constant_data(parser *p, const node_line *l, void **data, size_t *bytes) {
    for (int i = 0; i < l->rank; i++)
        if (l->shape[i] < 0)
            return fail_at(p, l->type_pos, "a constant cannot have a '?' dimension");
    int64_t count = tg_shape_count(l->rank, l->shape);
    size_t size = tg_dtype_size(l->dtype);
    if (count < 0 || count > IR_MAX_CONSTANT_BYTES / (int64_t)size)
        return fail_at(p, l->type_pos, "constant is too large (max 2^30 bytes)");
    *bytes = (size_t)count * size;
    *data = malloc(*bytes ? *bytes : 1);
    if (!*data) return fail_at(p, l->type_pos, "out of memory");
    unsigned char *out = *data;
    const const_value *v = &l->value;
    const char *why;
    if (v->kind == CONST_HEX) {
        size_t digits = strlen(v->hex);
        if (digits != 2 * *bytes)
            return fail_at(p, v->hex_pos, "hex constant has %zu digits, the type needs %zu", digits,
                           2 * *bytes);
        for (size_t i = 0; i < *bytes; i++) {
            int hi = hex_digit(v->hex[2 * i]), lo = hex_digit(v->hex[2 * i + 1]);
            if (hi < 0 || lo < 0)
                return fail_at(p, v->hex_pos, "bad hex digit in constant (byte %zu)", i);
            out[i] = (unsigned char)(hi * 16 + lo);
        }
    } else if (v->kind == CONST_SPLAT) {
        unsigned char elem[8];
        if ((why = encode_element(l->dtype, &v->values[0], elem)))
            return fail_at(p, v->value_pos[0], "%s for %s", why, tg_dtype_name(l->dtype));
        for (int64_t i = 0; i < count; i++) memcpy(out + i * size, elem, size);
    } else {
        if ((int64_t)v->n_values != count)
            return fail_at(p, l->type_pos, "constant has %zu values, its type needs %" PRId64,
                           v->n_values, count);
        for (int64_t i = 0; i < count; i++)
            if ((why = encode_element(l->dtype, &v->values[i], out + i * size)))
                return fail_at(p, v->value_pos[i], "%s for %s", why, tg_dtype_name(l->dtype));
    }
    return true;
}

static const attr_field *find_attr(tg_op op, const char *name) {
    for (int i = 0; i < N_ATTR_FIELDS; i++)
        if ((tg_ops[op].attrs & attr_fields[i].bit) &&
            strcmp(attr_name(op, &attr_fields[i]), name) == 0)
            return &attr_fields[i];
    return NULL;
}

/* Every attribute but a flag must be written: there are no defaults. */
static bool check_required_attrs(parser *p, const node_line *l, const bool *seen, size_t at) {
    for (int i = 0; i < N_ATTR_FIELDS; i++) {
        const attr_field *f = &attr_fields[i];
        if ((tg_ops[l->op].attrs & f->bit) && f->kind != ATTR_FLAG && !seen[i])
            return fail_at(p, at, "op '%s' requires attribute '%s'", tg_ops[l->op].name,
                           attr_name(l->op, f));
    }
    return true;
}

/* {name="...", attr, attr=value, ...} */
static bool parse_attrs(parser *p, node_line *l) {
    bool seen[N_ATTR_FIELDS] = {0};
    bool named_source = l->op == TG_OP_PLACEHOLDER || l->op == TG_OP_VARIABLE;
    size_t open = p->pos;
    p->pos++; /* '{' */
    skip_space(p);
    if (peek(p) == '}') {
        p->pos++;
        goto check_required;
    }
    for (;;) {
        char word[32];
        if (at_line_end(p)) return fail_at(p, open, "unterminated attribute list");
        skip_space(p);
        size_t at = p->pos;
        if (!parse_word(p, word, sizeof word, "an attribute name")) return false;
        if (strcmp(word, "name") == 0 && !named_source) {
            if (l->name) return fail_at(p, at, "duplicate attribute 'name'");
            if (!expect(p, '=', "'=' after 'name'") || !parse_string(p, &l->name)) return false;
        } else {
            const attr_field *f = find_attr(l->op, word);
            if (!f)
                return fail_at(p, at, "op '%s' has no attribute '%s'", tg_ops[l->op].name, word);
            int index = (int)(f - attr_fields);
            if (seen[index]) return fail_at(p, at, "duplicate attribute '%s'", word);
            seen[index] = true;
            skip_space(p);
            if (f->kind == ATTR_FLAG) {
                if (peek(p) == '=')
                    return fail_at(
                        p, at, "attribute '%s' is a flag: write it bare, without a value", word);
                *attr_flag(&l->attrs, f) = true;
            } else if (!expect(p, '=', "'=' after the attribute name")) {
                return false;
            } else if (f->kind == ATTR_INT) {
                if (!parse_int(p, attr_int(&l->attrs, f), word)) return false;
            } else if (f->kind == ATTR_DOUBLE) {
                number num;
                size_t num_at;
                if (!parse_number(p, &num, &num_at)) return false;
                *attr_double(&l->attrs, f) = num.d;
            } else {
                if (!expect(p, '[', "'[' starting a list")) return false;
                size_t list_at = p->pos - 1;
                int n = 0;
                int64_t *values = attr_int(&l->attrs, f);
                skip_space(p);
                if (peek(p) == ']') {
                    p->pos++;
                } else {
                    for (;;) {
                        if (at_line_end(p)) return fail_at(p, list_at, "unterminated list");
                        if (n == TG_MAX_RANK)
                            return fail_at(p, p->pos, "too many entries in '%s' (max %d)", word,
                                           TG_MAX_RANK);
                        if (!parse_int(p, &values[n++], word)) return false;
                        skip_space(p);
                        if (peek(p) == ',') {
                            p->pos++;
                            continue;
                        }
                        if (peek(p) == ']') {
                            p->pos++;
                            break;
                        }
                        if (at_line_end(p)) return fail_at(p, list_at, "unterminated list");
                        char d[32];
                        return fail_at(p, p->pos, "expected ',' or ']' in list, found %s",
                                       describe(p, d, sizeof d));
                    }
                }
                /* begin/end/step (and lo/hi) share one count: they must agree. */
                for (int k = 0; k < N_ATTR_FIELDS; k++) {
                    const attr_field *o = &attr_fields[k];
                    if (k != index && seen[k] && o->kind == ATTR_LIST &&
                        o->count_offset == f->count_offset && *attr_count(&l->attrs, o) != n)
                        return fail_at(p, list_at, "'%s' has %d entries but '%s' has %d", word, n,
                                       attr_name(l->op, o), *attr_count(&l->attrs, o));
                }
                *attr_count(&l->attrs, f) = n;
            }
        }
        skip_space(p);
        if (peek(p) == ',') {
            p->pos++;
            continue;
        }
        if (peek(p) == '}') {
            p->pos++;
            break;
        }
        if (at_line_end(p)) return fail_at(p, open, "unterminated attribute list");
        char d[32];
        return fail_at(p, p->pos, "expected ',' or '}' in attributes, found %s",
                       describe(p, d, sizeof d));
    }
check_required:
    return check_required_attrs(p, l, seen, open);
}

/* Parses one node line (the cursor is at its first non-blank character)
 * and appends the node to the graph. */
static bool parse_node(parser *p) {
    node_line l;
    memset(&l, 0, sizeof l);
    bool ok = false;
    const char *label;
    size_t label_len;
    char word[32];
    void *data = NULL;
    size_t data_bytes = 0;

    l.label_pos = p->pos;
    if (!parse_label(p, &label, &label_len)) goto done;
    if (nt_get(&p->labels, label, label_len)) {
        fail_at(p, l.label_pos, "redefinition of %%%.*s", (int)label_len, label);
        goto done;
    }
    l.label = malloc(label_len + 1);
    if (!l.label) {
        fail_at(p, l.label_pos, "out of memory");
        goto done;
    }
    memcpy(l.label, label, label_len);
    l.label[label_len] = '\0';
    if (!expect(p, '=', "'=' after the value name")) goto done;

    skip_space(p);
    l.op_pos = p->pos;
    if (!parse_word(p, word, sizeof word, "an op name")) goto done;
    l.op = tg_op_from_name(word);
    if (l.op >= TG_OP_COUNT) {
        fail_at(p, l.op_pos, "unknown op '%s'", word);
        goto done;
    }
    const tg_op_info *info = &tg_ops[l.op];

    if (l.op == TG_OP_PLACEHOLDER || l.op == TG_OP_VARIABLE) {
        skip_space(p);
        if (peek(p) != '"') {
            fail_at(p, p->pos, "%s needs its name as a quoted string", info->name);
            goto done;
        }
        if (!parse_string(p, &l.name)) goto done;
    } else if (l.op == TG_OP_CONSTANT) {
        if (!parse_constant_value(p, &l.value)) goto done;
    } else {
        skip_space(p);
        if (peek(p) == '%') {
            for (;;) {
                const char *in;
                size_t in_len;
                skip_space(p);
                size_t in_at = p->pos;
                if (!parse_label(p, &in, &in_len)) goto done;
                int *id = nt_get(&p->labels, in, in_len);
                if (!id) {
                    fail_at(p, in_at, "use of undefined value %%%.*s", (int)in_len, in);
                    goto done;
                }
                if (l.n_inputs == l.cap_inputs) {
                    /* The builder takes at most 4096 operands (concat). */
                    int cap = l.cap_inputs ? 2 * l.cap_inputs : 4;
                    tg_tensor *grown =
                        cap <= 4096 ? realloc(l.inputs, (size_t)cap * sizeof *grown) : NULL;
                    if (!grown) {
                        fail_at(p, in_at, "too many operands");
                        goto done;
                    }
                    l.inputs = grown;
                    l.cap_inputs = cap;
                }
                l.inputs[l.n_inputs++] = (tg_tensor){*id};
                skip_space(p);
                if (peek(p) != ',') break;
                p->pos++;
            }
        }
        if (l.n_inputs < info->min_inputs ||
            (info->max_inputs >= 0 && l.n_inputs > info->max_inputs)) {
            if (info->min_inputs == info->max_inputs)
                fail_at(p, l.op_pos, "op '%s' takes %d operand%s, got %d", info->name,
                        info->min_inputs, info->min_inputs == 1 ? "" : "s", l.n_inputs);
            else if (info->max_inputs < 0)
                fail_at(p, l.op_pos, "op '%s' takes at least %d operands, got %d", info->name,
                        info->min_inputs, l.n_inputs);
            else
                fail_at(p, l.op_pos, "op '%s' takes %d to %d operands, got %d", info->name,
                        info->min_inputs, info->max_inputs, l.n_inputs);
            goto done;
        }
    }

    skip_space(p);
    if (peek(p) == '{') {
        if (!parse_attrs(p, &l)) goto done;
    } else {
        bool seen[N_ATTR_FIELDS] = {0};
        if (!check_required_attrs(p, &l, seen, p->pos)) goto done;
    }
    /* the mask is one optional input; attention_grad_* may add two more
     * (lse, delta), so an odd count over the minimum means a mask */
    if (info->attrs & TG_ATTR_HAS_MASK)
        l.attrs.has_mask = (l.n_inputs - info->min_inputs) % 2 == 1;

    skip_space(p);
    if (peek(p) != ':') {
        char d[32];
        fail_at(p, p->pos, "expected ':' and the type, found %s", describe(p, d, sizeof d));
        goto done;
    }
    p->pos++;
    if (!parse_type(p, &l) || !end_of_line(p)) goto done;

    tg_tensor t;
    if (l.op == TG_OP_PLACEHOLDER || l.op == TG_OP_VARIABLE) {
        t = tg_source_add(p->g, l.op, l.name, l.dtype, l.rank, l.shape, NULL, l.attrs.trainable);
    } else if (l.op == TG_OP_CONSTANT) {
        if (!build_constant_data(p, &l, &data, &data_bytes)) goto done;
        t = tg_source_add(p->g, l.op, NULL, l.dtype, l.rank, l.shape, data, false);
    } else {
        t = tg_node_add(p->g, l.op, l.n_inputs, l.inputs, &l.attrs, l.dtype);
    }
    if (!tg_tensor_valid(p->g, t)) {
        const char *err = tg_graph_error(p->g);
        fail_at(p, l.op_pos, "%s", err ? err : tg_last_error());
        goto done;
    }

    const tg_node *n = tg_node_at(p->g, t);
    bool same = n->dtype == l.dtype && n->rank == l.rank;
    for (int i = 0; same && i < l.rank; i++) same = n->shape[i] == l.shape[i];
    if (!same) {
        char declared[128], inferred[128];
        tg_shape_str(l.dtype, l.rank, l.shape, declared, sizeof declared);
        tg_shape_str(n->dtype, n->rank, n->shape, inferred, sizeof inferred);
        fail_at(p, l.type_pos, "%%%s: declared type %s does not match the inferred type %s",
                l.label, declared, inferred);
        goto done;
    }

    /* Other nodes are named by name= or else by a non-numeric label. */
    if (l.op != TG_OP_PLACEHOLDER && l.op != TG_OP_VARIABLE) {
        bool numeric = true;
        for (const char *c = l.label; *c; c++) numeric = numeric && is_digit(*c);
        const char *name = l.name ? l.name : numeric ? NULL : l.label;
        if (name && tg_tensor_set_name(p->g, t, name) != TG_OK) {
            fail_at(p, l.label_pos, "%s", tg_last_error());
            goto done;
        }
    }
    if (!nt_put(&p->labels, l.label, strlen(l.label), t.id)) {
        fail_at(p, l.label_pos, "out of memory");
        goto done;
    }
    next_line(p);
    ok = true;
done:
    free(data);
    node_line_free(&l);
    return ok;
}

/* The first non-blank line must be the header "# tg ir v1". */
static bool parse_header(parser *p) {
    for (;;) {
        skip_space(p);
        if (peek(p) != '\n') break;
        p->pos++;
        p->line++;
        p->line_start = p->pos;
    }
    if (p->pos >= p->len)
        return fail_at(p, p->pos, "empty input: expected the header '" IR_HEADER "'");
    size_t prefix = strlen(IR_HEADER_PREFIX);
    if (p->len - p->pos < prefix || memcmp(p->src + p->pos, IR_HEADER_PREFIX, prefix) != 0)
        return fail_at(p, p->pos, "missing header '" IR_HEADER "'");
    p->pos += prefix;
    size_t version = p->pos;
    while (p->pos < p->len && p->src[p->pos] != '\n' && p->src[p->pos] != ' ' &&
           p->src[p->pos] != '\t' && p->src[p->pos] != '\r')
        p->pos++;
    size_t vlen = p->pos - version;
    if (vlen != strlen(IR_VERSION) || memcmp(p->src + version, IR_VERSION, vlen) != 0)
        return fail_at(p, version,
                       "unsupported IR version '%.*s' (this build reads " IR_VERSION ")",
                       (int)(vlen > 32 ? 32 : vlen), p->src + version);
    if (!end_of_line(p)) return false;
    next_line(p);
    return true;
}

tg_graph *tg_graph_parse(const char *text, size_t len, const char *filename) {
    parser p;
    memset(&p, 0, sizeof p);
    p.file = filename ? filename : "<input>";
    p.line = 1;
    if (!text && len) {
        tg_set_error(TG_ERR_INVALID_ARGUMENT, "tg_graph_parse: text is NULL");
        return NULL;
    }
    /* Work on a NUL-terminated copy so that number scanning can never read
     * past the end; a NUL inside the input is an error. */
    char *copy = malloc(len + 1);
    if (!copy) {
        tg_set_error(TG_ERR_NO_MEMORY, "tg_graph_parse: out of memory");
        return NULL;
    }
    if (len) memcpy(copy, text, len);
    copy[len] = '\0';
    p.src = copy;
    p.len = len;
    p.g = tg_graph_new();
    if (!p.g) {
        free(copy);
        tg_set_error(TG_ERR_NO_MEMORY, "tg_graph_parse: out of memory");
        return NULL;
    }
    const char *nul = len ? memchr(copy, '\0', len) : NULL;
    if (nul) {
        for (const char *c = copy; c < nul; c++)
            if (*c == '\n') p.line++, p.line_start = (size_t)(c - copy) + 1;
        fail_at(&p, (size_t)(nul - copy), "NUL byte in input");
        goto fail;
    }
    if (!parse_header(&p)) goto fail;
    while (p.pos < p.len) {
        if (at_line_end(&p)) {
            if (!end_of_line(&p)) goto fail;
            next_line(&p);
            continue;
        }
        if (!parse_node(&p)) goto fail;
    }
    nt_free(&p.labels);
    free(copy);
    return p.g;

fail:
    nt_free(&p.labels);
    free(copy);
    tg_graph_free(p.g);
    return NULL;
}
