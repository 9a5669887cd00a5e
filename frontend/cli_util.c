/* cli_util.c — helpers shared by the `graph` subcommands: messages, option
 * parsing, files and printing arrays. */
#include "frontend/cli.h"
#include "frontend/safetensors.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void cli_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("graph: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

int cli_usage_error(const char *command, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "graph: %s: ", command);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'graph %s --help')\n", command);
    va_end(ap);
    return CLI_USAGE;
}

int cli_take_value(const char *command, int argc, char **argv, int *i, const char *name,
                   const char **value) {
    const char *arg = argv[*i];
    size_t n = strlen(name);
    if (strncmp(arg, name, n) != 0) return 0;
    if (arg[n] == '=') {
        *value = arg + n + 1;
        *i += 1;
        return 1;
    }
    if (arg[n] != '\0') return 0; /* a longer option that shares the prefix */
    if (*i + 1 >= argc) {
        cli_usage_error(command, "%s needs a value", name);
        return -1;
    }
    *value = argv[*i + 1];
    *i += 2;
    return 1;
}

bool cli_split_assignment(const char *arg, char *name, size_t name_size, const char **value) {
    const char *eq = strchr(arg, '=');
    if (!eq || eq == arg || eq[1] == '\0') return false;
    size_t n = (size_t)(eq - arg);
    if (n >= name_size) n = name_size - 1;
    memcpy(name, arg, n);
    name[n] = '\0';
    *value = eq + 1;
    return true;
}

char *cli_read_file(const char *path, size_t *len) {
    char *text = NULL;
    size_t n = 0;
    /* 1 GiB: far above any IR or text file the CLI reads whole */
    if (tg_read_whole_file(path, (size_t)1 << 30, &text, &n) != TG_OK) {
        cli_error("%s", tg_last_error());
        return NULL;
    }
    if (len) *len = n;
    return text;
}

tg_graph *cli_load_graph(const char *path) {
    size_t len;
    char *text = cli_read_file(path, &len);
    if (!text) return NULL;
    tg_graph *g = tg_graph_parse(text, len, path);
    free(text);
    if (!g) {
        const char *msg = tg_last_error();
        /* The parser's messages start with the file name; add it if not. */
        if (strncmp(msg, path, strlen(path)) == 0)
            cli_error("%s", msg);
        else
            cli_error("%s: %s", path, msg);
    }
    return g;
}

bool cli_write_text(const char *path, const char *text) {
    if (!path) {
        fputs(text, stdout);
        if (fflush(stdout) != 0) {
            cli_error("cannot write to stdout: %s", strerror(errno));
            return false;
        }
        return true;
    }
    FILE *f = fopen(path, "w");
    if (!f) {
        cli_error("%s: cannot open for writing: %s", path, strerror(errno));
        return false;
    }
    bool ok = fputs(text, f) >= 0;
    int err = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (!ok) cli_error("%s: cannot write: %s", path, strerror(err));
    return ok;
}

/* ---- printing arrays ---- */

enum { SUMMARY_THRESHOLD = 1000, EDGE_ITEMS = 3 };

static void print_value(FILE *out, const tg_array *a, int64_t i) {
    double v = tg_array_get(a, i);
    if (tg_dtype_is_float(a->dtype))
        fprintf(out, "%.6g", v);
    else
        fprintf(out, "%lld", (long long)v);
}

/* Prints the sub-array at `axis` starting at element `offset`. */
static void print_axis(FILE *out, const tg_array *a, const int64_t *strides, int axis,
                       int64_t offset, bool summarise) {
    if (axis < 0 || axis >= a->rank || axis >= TG_MAX_RANK) return; /* also tells gcc the bound */
    int64_t n = a->shape[axis];
    fputc('[', out);
    for (int64_t k = 0; k < n; k++) {
        if (summarise && n > 2 * EDGE_ITEMS && k == EDGE_ITEMS) {
            /* skip the middle */
            fputs(axis == a->rank - 1 ? "..., " : "...,\n", out);
            if (axis < a->rank - 1)
                for (int s = 0; s <= axis; s++) fputc(' ', out);
            k = n - EDGE_ITEMS;
        }
        if (axis == a->rank - 1)
            print_value(out, a, offset + k * strides[axis]);
        else
            print_axis(out, a, strides, axis + 1, offset + k * strides[axis], summarise);
        if (k + 1 < n) {
            if (axis == a->rank - 1) {
                fputs(", ", out);
            } else {
                fputs(",\n", out);
                for (int s = 0; s <= axis; s++) fputc(' ', out);
            }
        }
    }
    fputc(']', out);
}

void cli_format_shape(const tg_array *a, char *buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "%s[", tg_dtype_name(a->dtype));
    for (int i = 0; i < a->rank && used < n; i++)
        used +=
            (size_t)snprintf(buf + used, n - used, "%s%lld", i ? "," : "", (long long)a->shape[i]);
    if (used < n) snprintf(buf + used, n - used, "]");
}

void cli_print_array(FILE *out, const char *label, const tg_array *a) {
    char shape[96];
    cli_format_shape(a, shape, sizeof shape);
    fprintf(out, "%s: %s\n", label, shape);

    if (a->rank == 0) {
        print_value(out, a, 0);
    } else if (tg_array_count(a) == 0) {
        fputs("[]", out);
    } else {
        int64_t strides[TG_MAX_RANK];
        int64_t stride = 1;
        for (int i = a->rank - 1; i >= 0; i--) {
            strides[i] = stride;
            stride *= a->shape[i];
        }
        print_axis(out, a, strides, 0, 0, tg_array_count(a) > SUMMARY_THRESHOLD);
    }
    fputc('\n', out);
}
