/* backend/gen_group.c — one dispatch for a group of independent kernels
 * (passes/fusion.c, "sibling matmuls": products that read one operand).
 *
 * A kernel whose members form several connected parts (no member of one
 * part reads a member of another) holding a matmul is a group. Each part
 * is generated alone by its own generator, exactly as if it were a kernel
 * of its own; the sources are then put side by side in one shader:
 *  - every name the part declares at file scope (bindings, buffer members,
 *    constants, functions, main) gets the prefix g<i>_;
 *  - its binding numbers become the group's (each part binds its own
 *    operands: a tensor two parts read is bound twice, maybe as different
 *    kinds; the executor takes the map in tg_kernel_code.io_of_binding);
 *  - gl_WorkGroupID, gl_GlobalInvocationID, gl_LocalInvocationID, ...
 *    become the part's own values, which main() sets: on GPUs the group's
 *    workgroups are the parts' workgroups one range after another, each
 *    running one part; on CPUs (tg_serial_parts) there are as many as the
 *    largest part has and workgroup w runs workgroup w of every part that
 *    has one, one part after another, since a CPU device pays for every
 *    part a workgroup could take, taken or not.
 * Parts that synchronise (barriers, subgroup operations) must have the
 * group's workgroup size; others may be smaller (the extra invocations
 * return). Push constants must be zeros (every tensor is bound at its own
 * offset): they become the constant 0u. */
#include "backend/gen_group.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/device_class.h"
#include "backend/gen_common.h"
#include "passes/passes.h"

#define MAX_PARTS 16

/* The node x reads, through aliases (reshape): the node holding its memory. */
static int32_t through_aliases(const tg_graph *g, int32_t x) {
    while (tg_node_is_alias(&g->nodes[x])) x = g->nodes[x].inputs[0];
    return x;
}

static int member_index(const tg_kernel *k, int32_t id) {
    for (int i = 0; i < k->n_nodes; i++)
        if (k->nodes[i] == id) return i;
    return -1;
}

bool tg_gen_is_group(const tg_kernel *k) {
    bool has_matmul = false;
    for (int i = 0; i < k->n_nodes; i++)
        has_matmul |= tg_ops[k->g->nodes[k->nodes[i]].op].klass == TG_CLASS_MATMUL;
    if (!has_matmul || k->n_nodes < 2) return false;
    int *part = malloc((size_t)k->n_nodes * sizeof *part);
    int n = part ? tg_connected_parts(k->g, k->n_nodes, k->nodes, part) : 0;
    free(part);
    return n > 1;
}

/* ---- one part as a kernel of its own ---- */

typedef struct part_kernel {
    tg_kernel k;
    int32_t nodes[256];
    int in_io[TG_KERNEL_MAX_IO];  /* group I/O index of each input */
    int out_io[TG_KERNEL_MAX_IO]; /* group I/O index (after the inputs) of each output */
    tg_kernel_code code;
    uint32_t local[3];
    bool syncs;     /* barriers: needs its exact workgroup */
    bool subgroups; /* subgroup operations: needs whole subgroups */
} part_kernel;

static int io_index(const int32_t *list, int n, int32_t id) {
    for (int i = 0; i < n; i++)
        if (list[i] == id) return i;
    return -1;
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* The part's inputs and outputs in the order the executor gives a kernel
 * (backend/executor.c, kernel_io): the root's operands first (repeats
 * included), then the other inputs by id; the last member's result first
 * among the outputs, then the others by id. */
static tg_status part_io(const tg_kernel *gk, part_kernel *p) {
    tg_kernel *k = &p->k;
    const tg_graph *g = gk->g;
    int root = k->n_nodes - 1;
    for (int i = 0; i < k->n_nodes; i++) {
        tg_op_class c = tg_ops[g->nodes[k->nodes[i]].op].klass;
        if (c != TG_CLASS_ELEMENTWISE && c != TG_CLASS_MOVEMENT) {
            root = i;
            break;
        }
    }
    int32_t others[TG_KERNEL_MAX_IO];
    int n_others = 0;
    k->n_inputs = 0;
    const tg_node *r = &g->nodes[k->nodes[root]];
    for (int j = 0; j < r->n_inputs; j++)
        if (member_index(k, through_aliases(g, r->inputs[j])) < 0) {
            if (k->n_inputs == TG_KERNEL_MAX_IO) goto too_many;
            k->inputs[k->n_inputs++] = r->inputs[j];
        }
    for (int i = 0; i < k->n_nodes; i++) {
        const tg_node *n = &g->nodes[k->nodes[i]];
        for (int j = 0; j < n->n_inputs; j++) {
            int32_t x = n->inputs[j];
            if (member_index(k, through_aliases(g, x)) >= 0 ||
                io_index(k->inputs, k->n_inputs, x) >= 0 || io_index(others, n_others, x) >= 0)
                continue;
            if (n_others == TG_KERNEL_MAX_IO) goto too_many;
            others[n_others++] = x;
        }
    }
    qsort(others, (size_t)n_others, sizeof others[0], cmp_i32);
    for (int i = 0; i < n_others; i++) {
        if (k->n_inputs == TG_KERNEL_MAX_IO) goto too_many;
        k->inputs[k->n_inputs++] = others[i];
    }
    int32_t last = k->nodes[k->n_nodes - 1];
    k->n_outputs = 0;
    if (io_index(gk->outputs, gk->n_outputs, last) >= 0) k->outputs[k->n_outputs++] = last;
    for (int i = 0; i < k->n_nodes - 1; i++)
        if (io_index(gk->outputs, gk->n_outputs, k->nodes[i]) >= 0)
            k->outputs[k->n_outputs++] = k->nodes[i];
    for (int i = 0; i < k->n_inputs; i++) {
        p->in_io[i] = io_index(gk->inputs, gk->n_inputs, k->inputs[i]);
        if (p->in_io[i] < 0)
            return tg_set_error(TG_ERR_RUNTIME,
                                "group kernel: input %d of a part is not the group's",
                                (int)k->inputs[i]);
        k->input_storage[i] = gk->input_storage[p->in_io[i]];
    }
    for (int j = 0; j < k->n_outputs; j++) {
        p->out_io[j] = io_index(gk->outputs, gk->n_outputs, k->outputs[j]);
        k->output_storage[j] = gk->output_storage[p->out_io[j]];
    }
    return TG_OK;
too_many:
    return tg_set_error(TG_ERR_UNSUPPORTED, "group kernel: a part has more than %d inputs",
                        TG_KERNEL_MAX_IO);
}

/* A part that is a lone sum of a f32 [..., N] tensor over every axis but
 * the last (a bias gradient, passes/fusion.c lone_bias_sum): one
 * invocation per column, no barriers, so it fits any group. */
static bool bias_sum_part(const part_kernel *p) {
    const tg_graph *g = p->k.g;
    if (p->k.n_nodes != 1 || p->k.n_inputs != 1 || p->k.n_outputs != 1) return false;
    const tg_node *n = &g->nodes[p->k.nodes[0]], *x = &g->nodes[p->k.inputs[0]];
    if (n->op != TG_OP_SUM || n->attrs.keepdims || x->rank < 2 || n->attrs.n_axes != x->rank - 1 ||
        p->k.input_storage[0] != TG_F32 || p->k.output_storage[0] != TG_F32)
        return false;
    for (int d = 0; d < n->attrs.n_axes; d++)
        if (n->attrs.axes[d] != d) return false;
    return true;
}

/* The code of a lone part: its GLSL and name; one binding for x, one
 * for the sums, `groups` workgroups of 64. */
static tg_status bias_sum_code(part_kernel *p, tg_sb *b, bool texel, tg_vk_texel_format fmt,
                               uint64_t groups) {
    tg_kernel_code *c = &p->code;
    if (b->oom) {
        free(b->s);
        return tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    }
    memset(c, 0, sizeof *c);
    c->glsl = b->s;
    snprintf(c->name, sizeof c->name, "sum_%d", (int)p->k.nodes[0]);
    c->n_bindings = 2;
    c->kinds[0] = texel ? TG_VK_BIND_TEXEL : TG_VK_BIND_STORAGE;
    c->texel_formats[0] = fmt;
    c->kinds[1] = TG_VK_BIND_STORAGE;
    c->groups[0] = (uint32_t)groups;
    c->groups[1] = c->groups[2] = 1;
    return TG_OK;
}

/* Column sums of x [R, N], N a multiple of 4, a lane a quad of columns
 * (vec4 texels), four rows a step. */
static tg_status gen_bias_sum_quads(part_kernel *p, int64_t R, int64_t N) {
    typedef unsigned long long ull;
    tg_sb b = {0};
    tg_sb_printf(&b,
                 "#version 450\n"
                 "layout(local_size_x = 64, local_size_y = 1, local_size_z = 1) in;\n"
                 "layout(binding = 0) uniform samplerBuffer tX;\n"
                 "layout(std430, binding = 1) writeonly buffer BY { vec4 ys[]; };\n"
                 "void main() {\n"
                 "    uint q = gl_GlobalInvocationID.x;\n"
                 "    if (q >= %lluu) return;\n"
                 "    vec4 a0 = vec4(0.0), a1 = vec4(0.0), a2 = vec4(0.0), a3 = vec4(0.0);\n"
                 "    uint r = 0u;\n"
                 "    for (; r + 4u <= %lluu; r += 4u) {\n"
                 "        a0 += texelFetch(tX, int(r * %lluu + q));\n"
                 "        a1 += texelFetch(tX, int((r + 1u) * %lluu + q));\n"
                 "        a2 += texelFetch(tX, int((r + 2u) * %lluu + q));\n"
                 "        a3 += texelFetch(tX, int((r + 3u) * %lluu + q));\n"
                 "    }\n"
                 "    for (; r < %lluu; r++) a0 += texelFetch(tX, int(r * %lluu + q));\n"
                 "    ys[q] = (a0 + a1) + (a2 + a3);\n"
                 "}\n",
                 (ull)(N / 4), (ull)R, (ull)(N / 4), (ull)(N / 4), (ull)(N / 4), (ull)(N / 4),
                 (ull)R, (ull)(N / 4));
    return bias_sum_code(p, &b, true, TG_VK_TEXEL_RGBA32F, (uint64_t)(N / 4 + 63) / 64);
}

/* Column sums of x [R, N] (texel fetches where the device has R32F texel
 * buffers: gathers on lavapipe, where storage loads are per-lane loops),
 * four rows a step. */
static tg_status gen_bias_sum(const tg_vk_caps *caps, part_kernel *p) {
    const tg_node *x = &p->k.g->nodes[p->k.inputs[0]];
    int64_t N = x->shape[x->rank - 1], R = tg_shape_count(x->rank, x->shape) / N;
    bool texel = caps->texel_r32f && (uint64_t)(R * N) <= caps->max_texel_buffer_elements;
    /* CPUs: a lane sums a quad of columns from vec4 texels (a texel fetch
     * is a call on lavapipe: a quarter of them, and of the lanes; the
     * part's workgroups are few and serial anyway). charlm's [1024, 256]
     * bias gradient: see docs/kernels.md. */
    if (caps->device_class == TG_VK_CLASS_CPU && N % 4 == 0 &&
        tg_gen_texel_input_ok(caps, &p->k, 0, true))
        return gen_bias_sum_quads(p, R, N);
    tg_sb b = {0};
    tg_sb_printf(&b, "#version 450\n"
                     "layout(local_size_x = 64, local_size_y = 1, local_size_z = 1) in;\n");
    if (texel)
        tg_sb_printf(&b, "layout(binding = 0) uniform samplerBuffer tX;\n");
    else
        tg_sb_printf(&b, "layout(std430, binding = 0) readonly buffer BX { float xs[]; };\n");
    tg_sb_printf(&b, "layout(std430, binding = 1) writeonly buffer BY { float ys[]; };\n");
    tg_sb_printf(&b,
                 "void main() {\n"
                 "    uint n = gl_GlobalInvocationID.x;\n"
                 "    if (n >= %lluu) return;\n"
                 "    float a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;\n"
                 "    uint r = 0u;\n"
                 "    for (; r + 4u <= %lluu; r += 4u) {\n",
                 (unsigned long long)N, (unsigned long long)R);
    for (int k = 0; k < 5; k++) {
        char idx[64];
        snprintf(idx, sizeof idx, "(r + %du) * %lluu + n", k % 4, (unsigned long long)N);
        char load[96];
        if (texel)
            snprintf(load, sizeof load, "texelFetch(tX, int(%s)).r", idx);
        else
            snprintf(load, sizeof load, "xs[%s]", idx);
        if (k < 4)
            tg_sb_printf(&b, "        a%d += %s;\n", k, load);
        else
            tg_sb_printf(&b, "    }\n    for (; r < %lluu; r++) a0 += %s;\n", (unsigned long long)R,
                         load);
    }
    tg_sb_printf(&b, "    ys[n] = (a0 + a1) + (a2 + a3);\n}\n");
    return bias_sum_code(p, &b, texel, TG_VK_TEXEL_R32F, (uint64_t)(N + 63) / 64);
}

/* ---- renaming a part's source ---- */

static bool ident_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool ident_char(char c) {
    return ident_start(c) || (c >= '0' && c <= '9');
}

/* Words that may stand at file scope without being declared there. */
static bool reserved(const char *w, size_t n) {
    static const char *const words[] = {
        "layout",        "uniform",        "buffer",         "readonly", "writeonly", "restrict",
        "coherent",      "volatile",       "shared",         "const",    "in",        "out",
        "inout",         "struct",         "void",           "float",    "int",       "uint",
        "bool",          "double",         "float16_t",      "vec2",     "vec3",      "vec4",
        "ivec2",         "ivec3",          "ivec4",          "uvec2",    "uvec3",     "uvec4",
        "bvec2",         "bvec3",          "bvec4",          "mat2",     "mat3",      "mat4",
        "samplerBuffer", "isamplerBuffer", "usamplerBuffer", "highp",    "mediump",   "lowp",
        "precise",       "f16vec2",        "f16vec4",        "int16_t",  "uint16_t",  "int8_t",
        "uint8_t",       "imageBuffer",    "int64_t",        "uint64_t", "u64vec2",
    };
    for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
        if (strlen(words[i]) == n && strncmp(words[i], w, n) == 0) return true;
    return false;
}

typedef struct name_set {
    char **names;
    int n, cap;
} name_set;

static bool has_name(const name_set *s, const char *w, size_t n) {
    for (int i = 0; i < s->n; i++)
        if (strlen(s->names[i]) == n && strncmp(s->names[i], w, n) == 0) return true;
    return false;
}

static bool add_name(name_set *s, const char *w, size_t n) {
    if (reserved(w, n) || has_name(s, w, n) || (n > 3 && strncmp(w, "gl_", 3) == 0)) return true;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        char **g = realloc(s->names, (size_t)cap * sizeof *g);
        if (!g) return false;
        s->names = g;
        s->cap = cap;
    }
    s->names[s->n] = malloc(n + 1);
    if (!s->names[s->n]) return false;
    memcpy(s->names[s->n], w, n);
    s->names[s->n++][n] = 0;
    return true;
}

static void free_names(name_set *s) {
    for (int i = 0; i < s->n; i++) free(s->names[i]);
    free(s->names);
}

/* Past a comment or a preprocessor line starting at s (else s). */
static const char *skip_comment(const char *s) {
    if (s[0] == '/' && s[1] == '/') {
        while (*s && *s != '\n') s++;
    } else if (s[0] == '/' && s[1] == '*') {
        const char *e = strstr(s + 2, "*/");
        s = e ? e + 2 : s + strlen(s);
    }
    return s;
}

/* The last non-blank character before p (or 0). */
static char before(const char *start, const char *p) {
    while (p > start && (p[-1] == ' ' || p[-1] == '\n' || p[-1] == '\t')) p--;
    return p > start ? p[-1] : 0;
}

/* After the block whose '{' is at p: is its '}' followed by an instance
 * name (members then read as name.member: not renamed)? */
static bool named_block(const char *p) {
    int depth = 0;
    for (; *p; p++) {
        if (*p == '{') depth++;
        if (*p == '}' && --depth == 0) break;
    }
    if (!*p) return false;
    p++;
    while (*p == ' ' || *p == '\n' || *p == '\t') p++;
    return ident_start(*p);
}

/* The names src declares at file scope: declarators, function names,
 * members of buffer blocks without an instance name. */
static bool collect_globals(const char *src, name_set *names) {
    int brace = 0, paren = 0;
    bool init = false, struct_decl = false, members = false;
    const char *stmt = src; /* start of the current file-scope statement */
    for (const char *p = src; *p;) {
        const char *q = skip_comment(p);
        if (q != p) {
            p = q;
            continue;
        }
        if (*p == '#') { /* preprocessor lines were checked before */
            while (*p && *p != '\n') p++;
            continue;
        }
        if (ident_start(*p)) {
            const char *w = p;
            while (ident_char(*p)) p++;
            size_t n = (size_t)(p - w);
            if (brace == 0 && n == 6 && strncmp(w, "struct", 6) == 0) struct_decl = true;
            bool file_scope = brace == 0 && paren == 0 && !init;
            bool member = brace == 1 && members && paren == 0;
            if ((file_scope || member) && !add_name(names, w, n)) return false;
            continue;
        }
        if (*p >= '0' && *p <= '9') {
            while (ident_char(*p) || *p == '.') p++;
            continue;
        }
        char c = *p;
        if (c == '(') paren++;
        if (c == ')') paren--;
        if (brace == 0 && paren == 0) {
            if (c == '=') init = true;
            if (c == ',' || c == ';') init = false;
            if (c == ';') {
                struct_decl = false;
                stmt = p + 1;
            }
        }
        if (c == '{') {
            if (brace == 0) {
                char b = before(stmt, p);
                members = b != ')' && b != '=' && !struct_decl && !named_block(p);
            }
            brace++;
        }
        if (c == '}' && --brace == 0) {
            members = false;
            stmt = p + 1;
        }
        p++;
    }
    return true;
}

/* The builtin variables a part reads, replaced by its own. */
static const struct {
    const char *builtin, *own;
} builtins[] = {
    {"gl_WorkGroupID", "wg"},        {"gl_GlobalInvocationID", "gid"},
    {"gl_LocalInvocationID", "lid"}, {"gl_LocalInvocationIndex", "lidx"},
    {"gl_NumWorkGroups", "nwg"},     {"gl_WorkGroupSize", "wgs"},
};

/* Appends part i's source to b without its version, extensions, local
 * size and push constants: declared names prefixed, binding numbers
 * mapped by `binding_of`, builtins replaced. */
static tg_status emit_part(tg_sb *b, const char *src, int i, const int *binding_of, int n_bindings,
                           const name_set *names, const char *push_name) {
    size_t push_len = push_name ? strlen(push_name) : 0;
    for (const char *p = src; *p;) {
        const char *q = skip_comment(p);
        if (q != p) {
            tg_sb_printf(b, "%.*s", (int)(q - p), p);
            p = q;
            continue;
        }
        if (ident_start(*p)) {
            const char *w = p;
            while (ident_char(*p)) p++;
            size_t n = (size_t)(p - w);
            bool member = w > src && w[-1] == '.';
            if (push_len && n == push_len && strncmp(w, push_name, n) == 0 && *p == '.' &&
                ident_start(p[1])) { /* a push constant: all zeros */
                p++;
                while (ident_char(*p)) p++;
                tg_sb_printf(b, "0u");
                continue;
            }
            if (!member && n == 7 && strncmp(w, "binding", 7) == 0) {
                const char *d = p;
                while (*d == ' ') d++;
                if (*d == '=') {
                    d++;
                    while (*d == ' ') d++;
                    int v = atoi(d);
                    if (v < 0 || v >= n_bindings)
                        return tg_set_error(TG_ERR_RUNTIME, "group kernel: part %d binds %d", i, v);
                    while (*d >= '0' && *d <= '9') d++;
                    tg_sb_printf(b, "binding = %d", binding_of[v]);
                    p = d;
                    continue;
                }
            }
            bool done = false;
            for (size_t j = 0; !member && j < sizeof builtins / sizeof builtins[0]; j++)
                if (strlen(builtins[j].builtin) == n && strncmp(w, builtins[j].builtin, n) == 0) {
                    tg_sb_printf(b, "g%d_%s", i, builtins[j].own);
                    done = true;
                }
            if (!done && !member && has_name(names, w, n))
                tg_sb_printf(b, "g%d_%.*s", i, (int)n, w);
            else if (!done)
                tg_sb_printf(b, "%.*s", (int)n, w);
            continue;
        }
        if (*p >= '0' && *p <= '9') {
            const char *w = p;
            while (ident_char(*p) || *p == '.') p++;
            tg_sb_printf(b, "%.*s", (int)(p - w), w);
            continue;
        }
        tg_sb_printf(b, "%c", *p++);
    }
    tg_sb_printf(b, "\n");
    return TG_OK;
}

/* Copies src without its #version, #extension (added to `ext`) and
 * local-size lines and its push-constant block (whose instance name goes
 * to push_name); reads the local size. */
static tg_status strip_header(const char *src, tg_sb *body, tg_sb *ext, uint32_t local[3],
                              char *push_name, size_t push_size) {
    local[0] = local[1] = local[2] = 1;
    push_name[0] = 0;
    const char *p = src;
    while (*p) {
        const char *eol = strchr(p, '\n');
        size_t n = eol ? (size_t)(eol - p) + 1 : strlen(p);
        if (strncmp(p, "#version", 8) == 0) {
        } else if (strncmp(p, "#extension", 10) == 0) {
            if (!ext->s || !strstr(ext->s, p) || strncmp(strstr(ext->s, p), p, n) != 0)
                tg_sb_printf(ext, "%.*s", (int)n, p);
        } else if (p[0] == '#') {
            return tg_set_error(TG_ERR_UNSUPPORTED,
                                "group kernel: a part has preprocessor line '%.*s'", (int)n - 1, p);
        } else if (strncmp(p, "layout(local_size_x", 19) == 0) {
            unsigned x = 1, y = 1, z = 1;
            if (sscanf(p, "layout(local_size_x = %u, local_size_y = %u, local_size_z = %u", &x, &y,
                       &z) < 1)
                return tg_set_error(TG_ERR_UNSUPPORTED, "group kernel: local size line '%.*s'",
                                    (int)n - 1, p);
            local[0] = x;
            local[1] = y;
            local[2] = z;
        } else if (strncmp(p, "layout(push_constant)", 21) == 0) {
            const char *e = strchr(p, '}');
            const char *semi = e ? strchr(e, ';') : NULL;
            if (!semi) return tg_set_error(TG_ERR_UNSUPPORTED, "group kernel: push constants");
            const char *w = e + 1;
            while (*w == ' ' || *w == '\n') w++;
            size_t len = 0;
            while (ident_char(w[len])) len++;
            if (len == 0 || len >= push_size)
                return tg_set_error(TG_ERR_UNSUPPORTED, "group kernel: push constants");
            memcpy(push_name, w, len);
            push_name[len] = 0;
            eol = strchr(semi, '\n');
            n = eol ? (size_t)(eol - p) + 1 : strlen(p);
        } else {
            tg_sb_printf(body, "%.*s", (int)n, p);
        }
        p += n;
    }
    return body->oom || ext->oom ? tg_set_error(TG_ERR_NO_MEMORY, "out of memory") : TG_OK;
}

/* ---- the group ---- */

/* Barriers, gl_NumSubgroups: the part needs its exact workgroup size. */
static bool uses_barriers(const char *src) {
    return strstr(src, "barrier(") || strstr(src, "gl_NumSubgroups");
}

/* Other subgroup operations (shuffles within a subgroup): its workgroup
 * may sit in a larger one if it is whole subgroups (lanes are consecutive
 * local invocation indices). */
static bool uses_subgroups(const char *src) {
    return strstr(src, "subgroup") || strstr(src, "gl_Subgroup");
}

/* The shader: the parts, then main() choosing the part of the workgroup. */
static tg_status combine(const tg_vk_caps *caps, part_kernel *parts, int n_parts, int **binding_of,
                         int n_bindings, tg_kernel_code *out) {
    tg_sb head = {0}, body = {0}, ext = {0};
    uint32_t total[MAX_PARTS], group_size = 1, sync_size = 0;
    uint64_t start[MAX_PARTS + 1];
    start[0] = 0;
    tg_status st = TG_OK;
    for (int i = 0; i < n_parts; i++) {
        part_kernel *p = &parts[i];
        total[i] = p->local[0] * p->local[1] * p->local[2];
        if (total[i] > group_size) group_size = total[i];
        if (p->syncs) {
            if (sync_size && sync_size != total[i])
                st = tg_set_error(TG_ERR_UNSUPPORTED,
                                  "group kernel: parts synchronise over %u and %u invocations",
                                  sync_size, total[i]);
            sync_size = total[i];
        }
        start[i + 1] =
            start[i] + (uint64_t)p->code.groups[0] * p->code.groups[1] * p->code.groups[2];
    }
    if (st == TG_OK && sync_size && sync_size != group_size)
        st = tg_set_error(TG_ERR_UNSUPPORTED,
                          "group kernel: a part synchronises over %u invocations of %u", sync_size,
                          group_size);
    for (int i = 0; st == TG_OK && i < n_parts; i++)
        if (parts[i].subgroups && total[i] != group_size &&
            (!caps->subgroup_size || total[i] % caps->subgroup_size))
            st = tg_set_error(TG_ERR_UNSUPPORTED,
                              "group kernel: a part uses subgroups of %u over %u invocations",
                              caps->subgroup_size, total[i]);
    bool same_local = true;
    for (int i = 1; i < n_parts; i++)
        same_local &= memcmp(parts[i].local, parts[0].local, sizeof parts[0].local) == 0;
    /* serial: every workgroup runs its share of every part, one part after
     * another (tg_serial_parts); else each workgroup runs one part's */
    bool serial = tg_serial_parts(caps);
    uint64_t n_groups = start[n_parts];
    if (serial) { /* the largest part's workgroups: smaller parts skip some */
        n_groups = 0;
        for (int i = 0; i < n_parts; i++)
            if (start[i + 1] - start[i] > n_groups) n_groups = start[i + 1] - start[i];
    }
    uint64_t gx = n_groups < caps->max_workgroup_count[0] ? n_groups : caps->max_workgroup_count[0];
    uint64_t gy = gx ? (n_groups + gx - 1) / gx : 0;
    if (st == TG_OK && gy > caps->max_workgroup_count[1])
        st = tg_set_error(TG_ERR_UNSUPPORTED, "group kernel: %llu workgroups",
                          (unsigned long long)n_groups);
    for (int i = 0; st == TG_OK && i < n_parts; i++) {
        part_kernel *p = &parts[i];
        tg_sb stripped = {0};
        char push_name[32];
        st = strip_header(p->code.glsl, &stripped, &ext, p->local, push_name, sizeof push_name);
        for (uint32_t w = 0; st == TG_OK && w < p->code.push_bytes / 4; w++)
            if (p->code.push[w])
                st = tg_set_error(TG_ERR_UNSUPPORTED, "group kernel: nonzero push constants");
        name_set names = {0};
        if (st == TG_OK && !collect_globals(stripped.s ? stripped.s : "", &names))
            st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
        if (st == TG_OK) {
            tg_sb_printf(&body, "// part %d: %s\n", i, p->code.name);
            tg_sb_printf(&body,
                         "uvec3 g%d_wg, g%d_gid, g%d_lid;\nuint g%d_lidx;\n"
                         "const uvec3 g%d_nwg = uvec3(%uu, %uu, %uu);\n"
                         "const uvec3 g%d_wgs = uvec3(%uu, %uu, %uu);\n",
                         i, i, i, i, i, p->code.groups[0], p->code.groups[1], p->code.groups[2], i,
                         p->local[0], p->local[1], p->local[2]);
            st = emit_part(&body, stripped.s ? stripped.s : "", i, binding_of[i],
                           p->code.n_bindings, &names, push_name[0] ? push_name : NULL);
        }
        free_names(&names);
        free(stripped.s);
    }
    if (st == TG_OK) {
        tg_sb_printf(&head, "#version 450\n%s", ext.s ? ext.s : "");
        if (same_local)
            tg_sb_printf(&head,
                         "layout(local_size_x = %u, local_size_y = %u, local_size_z = %u) in;\n",
                         parts[0].local[0], parts[0].local[1], parts[0].local[2]);
        else
            tg_sb_printf(&head,
                         "layout(local_size_x = %u, local_size_y = 1, local_size_z = 1) in;\n",
                         group_size);
        tg_sb_printf(&body,
                     "void main() {\n    uint id = gl_WorkGroupID.y * %lluu + gl_WorkGroupID.x;\n",
                     (unsigned long long)gx);
        tg_sb_printf(&body, "    uint li = gl_LocalInvocationIndex;\n");
        for (int i = 0; i < n_parts; i++) {
            const uint32_t *g = parts[i].code.groups, *l = parts[i].local;
            uint64_t n_i = start[i + 1] - start[i];
            if (!serial)
                tg_sb_printf(&body, "    if (id < %lluu) {\n        uint w = id - %lluu;\n",
                             (unsigned long long)start[i + 1], (unsigned long long)start[i]);
            else if (n_i < n_groups) {
                /* spread over the grid (workgroup j of the part at id
                 * j * s + o): llvmpipe hands each thread a contiguous
                 * range of workgroups, so parts at ids 0 .. n_i - 1 all
                 * ran on the first thread (charlm's dW of fc2 beside dH:
                 * see docs/kernels.md); o staggers parts of one stride */
                unsigned long long s = n_groups / n_i, o = s * (unsigned long long)i / n_parts;
                if (s == 1)
                    tg_sb_printf(&body, "    if (id < %lluu) {\n        uint w = id;\n",
                                 (unsigned long long)n_i);
                else if (o == 0)
                    tg_sb_printf(&body,
                                 "    if (id %% %lluu == 0u && id < %lluu) {\n"
                                 "        uint w = id / %lluu;\n",
                                 s, s * n_i, s);
                else
                    tg_sb_printf(&body,
                                 "    if (id >= %lluu && (id - %lluu) %% %lluu == 0u && "
                                 "id < %lluu) {\n        uint w = (id - %lluu) / %lluu;\n",
                                 o, o, s, o + s * n_i, o, s);
            } else
                tg_sb_printf(&body, "    {\n        uint w = id;\n");
            tg_sb_printf(&body, "        g%d_wg = uvec3(w %% %uu, (w / %uu) %% %uu, w / %uu);\n", i,
                         g[0], g[0], g[1], g[0] * g[1]);
            bool fewer = !same_local && total[i] < group_size;
            if (same_local) {
                tg_sb_printf(&body, "        g%d_lid = gl_LocalInvocationID;\n", i);
            } else {
                /* serial: the extra invocations skip this part only */
                if (fewer)
                    tg_sb_printf(&body,
                                 serial ? "        if (li < %uu) {\n"
                                        : "        if (li >= %uu) return;\n",
                                 total[i]);
                tg_sb_printf(&body,
                             "        g%d_lid = uvec3(li %% %uu, (li / %uu) %% %uu, li / %uu);\n",
                             i, l[0], l[0], l[1], l[0] * l[1]);
            }
            tg_sb_printf(&body,
                         "        g%d_lidx = li;\n        g%d_gid = g%d_wg * g%d_wgs + g%d_lid;\n"
                         "        g%d_main();\n",
                         i, i, i, i, i, i);
            if (serial && fewer) tg_sb_printf(&body, "        }\n");
            tg_sb_printf(&body, serial ? "    }\n" : "        return;\n    }\n");
        }
        tg_sb_printf(&body, "}\n");
    }
    if (st == TG_OK && (head.oom || body.oom)) st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    if (st == TG_OK) {
        tg_sb_printf(&head, "%s", body.s);
        if (head.oom) st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    }
    free(body.s);
    free(ext.s);
    if (st != TG_OK) {
        free(head.s);
        return st;
    }
    out->glsl = head.s;
    out->groups[0] = (uint32_t)gx;
    out->groups[1] = (uint32_t)gy;
    out->groups[2] = 1;
    (void)n_bindings;
    return TG_OK;
}

tg_status tg_gen_group(const tg_vk_caps *caps, const tg_kernel *k, tg_kernel_code *out) {
    memset(out, 0, sizeof *out);
    int *part = malloc((size_t)k->n_nodes * sizeof *part);
    part_kernel *parts = calloc(MAX_PARTS, sizeof *parts);
    int n_parts = part && parts ? tg_connected_parts(k->g, k->n_nodes, k->nodes, part) : 0;
    tg_status st = TG_OK;
    if (n_parts == 0)
        st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
    else if (n_parts > MAX_PARTS)
        st = tg_set_error(TG_ERR_UNSUPPORTED, "group kernel: %d parts (at most %d)", n_parts,
                          MAX_PARTS);
    for (int i = 0; st == TG_OK && i < n_parts; i++) {
        part_kernel *p = &parts[i];
        p->k.g = k->g;
        p->k.nodes = p->nodes;
        for (int m = 0; m < k->n_nodes && st == TG_OK; m++) {
            if (part[m] != i) continue;
            if (p->k.n_nodes == (int)(sizeof p->nodes / sizeof p->nodes[0]))
                st = tg_set_error(TG_ERR_UNSUPPORTED, "group kernel: a part is too large");
            else
                p->nodes[p->k.n_nodes++] = k->nodes[m];
        }
        if (st == TG_OK) st = part_io(k, p);
        if (st == TG_OK)
            st = bias_sum_part(p) ? gen_bias_sum(caps, p) : tg_gen_kernel(caps, &p->k, &p->code);
        if (st == TG_OK && p->code.scratch_bytes)
            st = tg_set_error(TG_ERR_UNSUPPORTED, "group kernel: part %d keeps scratch memory", i);
        if (st == TG_OK && p->code.n_bindings != p->k.n_inputs + p->k.n_outputs)
            st =
                tg_set_error(TG_ERR_RUNTIME, "group kernel: part %d has %d bindings for %d tensors",
                             i, p->code.n_bindings, p->k.n_inputs + p->k.n_outputs);
        if (st == TG_OK) {
            p->syncs = uses_barriers(p->code.glsl);
            p->subgroups = uses_subgroups(p->code.glsl);
            char *ls = strstr(p->code.glsl, "layout(local_size_x");
            unsigned x = 1, y = 1, z = 1;
            if (ls)
                sscanf(ls, "layout(local_size_x = %u, local_size_y = %u, local_size_z = %u", &x, &y,
                       &z);
            p->local[0] = x;
            p->local[1] = y;
            p->local[2] = z;
        }
    }
    /* bindings: every part's inputs, then every part's outputs */
    int *binding_of[MAX_PARTS] = {0};
    int nb = 0;
    for (int pass = 0; st == TG_OK && pass < 2; pass++)
        for (int i = 0; st == TG_OK && i < n_parts; i++) {
            part_kernel *p = &parts[i];
            if (!binding_of[i] &&
                !(binding_of[i] = calloc((size_t)p->code.n_bindings + 1, sizeof(int))))
                st = tg_set_error(TG_ERR_NO_MEMORY, "out of memory");
            int lo = pass ? p->k.n_inputs : 0, hi = pass ? p->code.n_bindings : p->k.n_inputs;
            for (int j = lo; st == TG_OK && j < hi; j++) {
                if (nb == TG_VK_MAX_BINDINGS) {
                    st = tg_set_error(TG_ERR_UNSUPPORTED, "group kernel: more than %d bindings",
                                      TG_VK_MAX_BINDINGS);
                    break;
                }
                binding_of[i][j] = nb;
                out->kinds[nb] = p->code.kinds[j];
                out->texel_formats[nb] = p->code.texel_formats[j];
                out->io_of_binding[nb] =
                    (int8_t)(pass ? k->n_inputs + p->out_io[j - p->k.n_inputs] : p->in_io[j]);
                nb++;
            }
        }
    if (st == TG_OK) {
        out->n_bindings = nb;
        out->io_mapped = true;
        snprintf(out->name, sizeof out->name, "group_%d", (int)k->nodes[k->n_nodes - 1]);
        st = combine(caps, parts, n_parts, binding_of, nb, out);
    }
    for (int i = 0; i < n_parts && i < MAX_PARTS; i++) {
        free(binding_of[i]);
        tg_kernel_code_free(&parts[i].code);
    }
    free(parts);
    free(part);
    if (st != TG_OK) {
        free(out->glsl);
        memset(out, 0, sizeof *out);
    }
    return st;
}
