/* cli_run.c — `graph run`: feeds .npy files to a graph, runs it on the
 * reference interpreter and writes or prints the named outputs. */
#include "frontend/cli.h"
#include "frontend/npy.h"
#include "graph/graph_internal.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char cli_run_help[] =
    "usage: graph run FILE.tgir [--input NAME=IN.npy]... [--output NAME[=OUT.npy]]...\n"
    "                 [--var NAME=W.npy]... [--init-vars=zeros|random] [--seed N]\n"
    "                 [--init-scale X] [--op NAME]... [--save-var NAME=OUT.npy]...\n"
    "                 [--interp | --compare] [--profile[=TRACE.json]]\n"
    "\n"
    "Runs FILE.tgir on the Vulkan device (TG_DEVICE=N picks one). NAME is a node's\n"
    "name in the IR.\n"
    "  --input NAME=IN.npy     feed placeholder NAME from IN.npy\n"
    "  --output NAME=OUT.npy   compute node NAME and write it to OUT.npy\n"
    "  --output NAME           compute node NAME and print it (summarised if large)\n"
    "  --var NAME=W.npy        value of variable NAME\n"
    "  --init-vars=MODE        give variables without --var a value: zeros, or random\n"
    "                          (uniform in [-X, X]); without it they are an error\n"
    "  --seed N                seed for --init-vars=random (default 1)\n"
    "  --init-scale X          X for --init-vars=random (default 0.1)\n"
    "  --op NAME               run the assign or slice_update NAME for its effect\n"
    "  --save-var NAME=OUT.npy write variable NAME's value after the run to OUT.npy\n"
    "  --interp                use the reference interpreter instead\n"
    "  --compare               run on both; print the max abs and rel error per output\n"
    "                          (the written/printed values are the device's)\n"
    "  --profile[=TRACE.json]  print a per-kernel time table to stderr and write a\n"
    "                          Chrome trace (default trace.json); also TG_PROFILE=1\n";

typedef struct named_path {
    char name[256];
    const char *path; /* NULL: print (outputs only) */
} named_path;

typedef enum init_mode { INIT_NONE, INIT_ZEROS, INIT_RANDOM } init_mode;

typedef struct run_options {
    const char *graph_path;
    named_path *inputs, *outputs, *vars, *save_vars;
    int n_inputs, n_outputs, n_vars, n_save_vars;
    const char **ops;
    int n_ops;
    init_mode init;
    uint64_t seed;
    double init_scale;
    bool interp, compare, profile;
    const char *trace_path;
} run_options;

/* Parses "NAME=PATH" (or just "NAME" if path_optional) into *out. */
static int parse_named_path(const char *command, const char *flag, const char *arg,
                            bool path_optional, named_path *out) {
    if (strchr(arg, '=')) {
        if (!cli_split_assignment(arg, out->name, sizeof out->name, &out->path))
            return cli_usage_error(command, "%s expects NAME=FILE, got '%s'", flag, arg);
    } else if (path_optional && arg[0] != '\0') {
        snprintf(out->name, sizeof out->name, "%s", arg);
        out->path = NULL;
    } else {
        return cli_usage_error(command, "%s expects NAME=FILE, got '%s'", flag, arg);
    }
    return CLI_OK;
}

static int parse_run_options(int argc, char **argv, run_options *o) {
    const char *command = argv[0];
    for (int i = 1; i < argc;) {
        const char *arg = argv[i], *value;
        int took;
#define TAKE(flag)                                                                                 \
    if ((took = cli_take_value(command, argc, argv, &i, flag, &value)) < 0) return CLI_USAGE;      \
    if (took > 0)
        TAKE("--input") {
            int st = parse_named_path(command, "--input", value, false, &o->inputs[o->n_inputs++]);
            if (st != CLI_OK) return st;
            continue;
        }
        TAKE("--output") {
            int st =
                parse_named_path(command, "--output", value, true, &o->outputs[o->n_outputs++]);
            if (st != CLI_OK) return st;
            continue;
        }
        TAKE("--var") {
            int st = parse_named_path(command, "--var", value, false, &o->vars[o->n_vars++]);
            if (st != CLI_OK) return st;
            continue;
        }
        TAKE("--save-var") {
            int st = parse_named_path(command, "--save-var", value, false,
                                      &o->save_vars[o->n_save_vars++]);
            if (st != CLI_OK) return st;
            continue;
        }
        TAKE("--op") {
            if (value[0] == '\0') return cli_usage_error(command, "--op needs a node name");
            o->ops[o->n_ops++] = value;
            continue;
        }
        TAKE("--init-vars") {
            if (strcmp(value, "zeros") == 0)
                o->init = INIT_ZEROS;
            else if (strcmp(value, "random") == 0)
                o->init = INIT_RANDOM;
            else
                return cli_usage_error(command, "--init-vars is zeros or random, not '%s'", value);
            continue;
        }
        TAKE("--seed") {
            char *end;
            errno = 0;
            unsigned long long seed = strtoull(value, &end, 10);
            if (end == value || *end != '\0' || errno != 0 || seed == 0 || value[0] == '-')
                return cli_usage_error(command, "--seed needs a positive integer, not '%s'", value);
            o->seed = seed;
            continue;
        }
        TAKE("--init-scale") {
            char *end;
            double scale = strtod(value, &end);
            if (end == value || *end != '\0' || !(scale > 0) || scale > 1e30)
                return cli_usage_error(command, "--init-scale needs a number > 0, not '%s'", value);
            o->init_scale = scale;
            continue;
        }
#undef TAKE
        if (strcmp(arg, "--interp") == 0) {
            o->interp = true;
        } else if (strcmp(arg, "--compare") == 0) {
            o->compare = true;
        } else if (strcmp(arg, "--profile") == 0 || strncmp(arg, "--profile=", 10) == 0) {
            o->profile = true;
            o->trace_path = arg[9] == '=' ? arg + 10 : "trace.json";
        } else if (arg[0] == '-' && arg[1] != '\0') {
            return cli_usage_error(command, "unknown option '%s'", arg);
        } else if (!o->graph_path) {
            o->graph_path = arg;
        } else {
            return cli_usage_error(command, "more than one graph file ('%s' and '%s')",
                                   o->graph_path, arg);
        }
        i++;
    }
    if (!o->graph_path) return cli_usage_error(command, "missing FILE.tgir");
    if (o->interp && (o->compare || o->profile))
        return cli_usage_error(command, "--interp runs no device: it excludes --compare and "
                                        "--profile");
    if (o->n_outputs == 0 && o->n_ops == 0)
        return cli_usage_error(command, "nothing to run: give --output NAME or --op NAME");
    return CLI_OK;
}

/* Looks a node up by name, printing an error naming the flag if absent. */
static bool find_node(const tg_graph *g, const run_options *o, const char *flag, const char *name,
                      tg_tensor *out) {
    *out = tg_graph_find(g, name);
    if (tg_tensor_valid(g, *out)) return true;
    cli_error("%s: no node named '%s' (in %s %s)", o->graph_path, name, flag, name);
    return false;
}

static void node_shape_str(const tg_graph *g, tg_tensor t, char *buf, size_t n) {
    int64_t shape[TG_MAX_RANK];
    int rank = tg_tensor_shape(g, t, shape);
    tg_shape_str(tg_tensor_dtype(g, t), rank, shape, buf, n);
}

/* Does the array fit the node's dtype and shape (-1 matches any size)? */
static bool array_fits_node(const tg_graph *g, tg_tensor t, const tg_array *a) {
    int64_t shape[TG_MAX_RANK];
    int rank = tg_tensor_shape(g, t, shape);
    if (a->dtype != tg_tensor_dtype(g, t) || a->rank != rank) return false;
    for (int i = 0; i < rank; i++)
        if (shape[i] >= 0 && shape[i] != a->shape[i]) return false;
    return true;
}

static bool check_fits(const tg_graph *g, const run_options *o, tg_tensor t, const char *kind,
                       const char *name, const char *path, const tg_array *a) {
    if (array_fits_node(g, t, a)) return true;
    char want[96], got[96];
    node_shape_str(g, t, want, sizeof want);
    cli_format_shape(a, got, sizeof got);
    cli_error("%s: holds %s but %s '%s' in %s is %s", path, got, kind, name, o->graph_path, want);
    return false;
}

/* Marks every node the targets depend on (node inputs always come first). */
static bool *needed_nodes(const tg_graph *g, int n_targets, const tg_tensor *targets) {
    bool *needed = calloc((size_t)g->n_nodes + 1, sizeof *needed);
    if (!needed) return NULL;
    for (int i = 0; i < n_targets; i++) needed[targets[i].id] = true;
    for (int id = g->n_nodes - 1; id >= 0; id--) {
        if (!needed[id]) continue;
        const tg_node *n = &g->nodes[id];
        for (int k = 0; k < n->n_inputs; k++) needed[n->inputs[k]] = true;
    }
    return needed;
}

/* Every placeholder the targets need must be fed and every variable they
 * read must have a value (or --init-vars). Says which and how to fix it. */
static bool check_sources(const tg_graph *g, const run_options *o, tg_store *store,
                          const tg_feed *feeds, int n_feeds, const bool *needed) {
    for (int id = 0; id < g->n_nodes; id++) {
        if (!needed[id]) continue;
        const tg_node *n = &g->nodes[id];
        char shape[96];
        tg_shape_str(n->dtype, n->rank, n->shape, shape, sizeof shape);
        if (n->op == TG_OP_PLACEHOLDER) {
            bool fed = false;
            for (int f = 0; f < n_feeds; f++) fed |= feeds[f].tensor.id == id;
            if (!fed) {
                cli_error("%s: placeholder '%s' (%s) needs a value: give --input %s=FILE.npy",
                          o->graph_path, n->name, shape, n->name);
                return false;
            }
        } else if (n->op == TG_OP_VARIABLE && o->init == INIT_NONE &&
                   !tg_store_has(store, n->name)) {
            cli_error("%s: variable '%s' (%s) has no value: give --var %s=FILE.npy or "
                      "--init-vars=zeros|random",
                      o->graph_path, n->name, shape, n->name);
            return false;
        }
    }
    return true;
}

/* A copy of every variable, for the interpreter's half of --compare (both
 * engines apply their assigns to their own store). */
static tg_store *copy_store(tg_store *src) {
    tg_store *dst = tg_store_new();
    for (int i = 0; dst && i < tg_store_count(src); i++) {
        tg_array a;
        const char *name = tg_store_name(src, i);
        tg_status st = tg_store_get(src, name, &a);
        if (st == TG_OK) st = tg_store_set(dst, name, &a);
        tg_array_free(&a);
        if (st != TG_OK) {
            tg_store_free(dst);
            return NULL;
        }
    }
    return dst;
}

/* Max abs error and max rel error (over elements where want != 0). */
static void print_errors(const char *name, const tg_array *got, const tg_array *want) {
    double max_abs = 0, max_rel = 0;
    for (int64_t i = 0; i < tg_array_count(got); i++) {
        double a = tg_array_get(got, i), b = tg_array_get(want, i), d = fabs(a - b);
        if (d > max_abs || d != d) max_abs = d;
        if (b != 0 && (d / fabs(b) > max_rel || d != d)) max_rel = d / fabs(b);
    }
    printf("compare %s: max abs error %.3g, max rel error %.3g (device vs interpreter)\n", name,
           max_abs, max_rel);
}

/* Runs on the device (opened into *dev, closed by the caller after the
 * store, which keeps device copies of the variables). */
static bool run_device(const run_options *o, tg_graph *g, tg_store *store, const tg_feed *feeds,
                       tg_tensor *targets, tg_array *results, tg_device **dev) {
    tg_executable *e = NULL;
    tg_compile_options opts = {.profile = o->profile};
    const char *env = getenv("TG_PROFILE");
    bool profile = o->profile || (env && strcmp(env, "1") == 0);
    tg_status st = tg_device_open(-1, dev);
    if (st == TG_OK)
        st = tg_compile(*dev, g, store, o->n_outputs, targets, o->n_ops, targets + o->n_outputs,
                        &opts, &e);
    if (st == TG_OK) st = tg_run(e, o->n_inputs, feeds, results);
    char *table = NULL;
    const char *trace = o->trace_path ? o->trace_path : "trace.json";
    if (st == TG_OK && profile) st = tg_executable_profile(e, &table, trace);
    tg_executable_free(e);
    if (st != TG_OK) {
        cli_error("%s: %s", o->graph_path, tg_last_error());
        return false;
    }
    if (table) {
        fprintf(stderr, "%sgraph: trace written to %s\n", table, trace);
        free(table);
    }
    return true;
}

static bool execute(const run_options *o, tg_graph *g, tg_store *store, const tg_feed *feeds,
                    tg_tensor *targets, tg_array *results, tg_device **dev) {
    if (o->interp) {
        if (tg_interpret(g, store, o->n_inputs, feeds, o->n_outputs, targets, results, o->n_ops,
                         targets + o->n_outputs, 0) == TG_OK)
            return true;
        cli_error("%s: %s", o->graph_path, tg_last_error());
        return false;
    }
    if (!o->compare) return run_device(o, g, store, feeds, targets, results, dev);
    tg_store *ref_store = copy_store(store);
    tg_array *ref = calloc((size_t)o->n_outputs + 1, sizeof *ref);
    bool ok = ref_store && ref;
    if (!ok) cli_error("out of memory");
    if (ok && tg_interpret(g, ref_store, o->n_inputs, feeds, o->n_outputs, targets, ref, o->n_ops,
                           targets + o->n_outputs, 0) != TG_OK) {
        cli_error("%s: interpreter: %s", o->graph_path, tg_last_error());
        ok = false;
    }
    ok = ok && run_device(o, g, store, feeds, targets, results, dev);
    for (int i = 0; ok && i < o->n_outputs; i++)
        print_errors(o->outputs[i].name, &results[i], &ref[i]);
    for (int i = 0; ref && i < o->n_outputs; i++) tg_array_free(&ref[i]);
    free(ref);
    tg_store_free(ref_store);
    return ok;
}

static int run_graph(const run_options *o) {
    int status = CLI_FAIL;
    tg_graph *g = cli_load_graph(o->graph_path);
    if (!g) return CLI_FAIL;
    tg_store *store = tg_store_new();
    int n_targets = o->n_outputs + o->n_ops;
    tg_tensor *targets = calloc((size_t)n_targets + 1, sizeof *targets);
    tg_feed *feeds = calloc((size_t)o->n_inputs + 1, sizeof *feeds);
    tg_array *inputs = calloc((size_t)o->n_inputs + 1, sizeof *inputs);
    tg_array *results = calloc((size_t)o->n_outputs + 1, sizeof *results);
    bool *needed = NULL;
    tg_device *dev = NULL;
    if (!store || !targets || !feeds || !inputs || !results) {
        cli_error("out of memory");
        goto done;
    }

    for (int i = 0; i < o->n_outputs; i++)
        if (!find_node(g, o, "--output", o->outputs[i].name, &targets[i])) goto done;
    for (int i = 0; i < o->n_ops; i++) {
        tg_tensor *t = &targets[o->n_outputs + i];
        if (!find_node(g, o, "--op", o->ops[i], t)) goto done;
        const char *op = tg_tensor_op(g, *t);
        if (strcmp(op, "assign") != 0 && strcmp(op, "slice_update") != 0) {
            cli_error("%s: --op %s: node '%s' is a %s, not an assign or slice_update (use "
                      "--output to compute it)",
                      o->graph_path, o->ops[i], o->ops[i], op);
            goto done;
        }
    }

    for (int i = 0; i < o->n_inputs; i++) {
        const named_path *in = &o->inputs[i];
        tg_tensor t;
        if (!find_node(g, o, "--input", in->name, &t)) goto done;
        if (strcmp(tg_tensor_op(g, t), "placeholder") != 0) {
            cli_error("%s: --input %s: node '%s' is a %s, not a placeholder%s", o->graph_path,
                      in->name, in->name, tg_tensor_op(g, t),
                      strcmp(tg_tensor_op(g, t), "variable") == 0 ? " (use --var)" : "");
            goto done;
        }
        if (tg_npy_read(in->path, &inputs[i]) != TG_OK) {
            cli_error("%s", tg_last_error());
            goto done;
        }
        if (!check_fits(g, o, t, "placeholder", in->name, in->path, &inputs[i])) goto done;
        feeds[i] = (tg_feed){t, &inputs[i]};
    }

    for (int i = 0; i < o->n_vars; i++) {
        const named_path *var = &o->vars[i];
        tg_tensor t;
        if (!find_node(g, o, "--var", var->name, &t)) goto done;
        if (strcmp(tg_tensor_op(g, t), "variable") != 0) {
            cli_error("%s: --var %s: node '%s' is a %s, not a variable", o->graph_path, var->name,
                      var->name, tg_tensor_op(g, t));
            goto done;
        }
        tg_array value;
        if (tg_npy_read(var->path, &value) != TG_OK) {
            cli_error("%s", tg_last_error());
            goto done;
        }
        bool fits = check_fits(g, o, t, "variable", var->name, var->path, &value);
        tg_status st = fits ? tg_store_set(store, var->name, &value) : TG_OK;
        tg_array_free(&value);
        if (!fits) goto done;
        if (st != TG_OK) {
            cli_error("%s: %s", var->path, tg_last_error());
            goto done;
        }
    }

    needed = needed_nodes(g, n_targets, targets);
    if (!needed) {
        cli_error("out of memory");
        goto done;
    }
    if (!check_sources(g, o, store, feeds, o->n_inputs, needed)) goto done;
    if (o->init != INIT_NONE) {
        uint64_t seed = o->init == INIT_RANDOM ? o->seed : 0;
        if (tg_store_init_missing(store, g, seed, o->init_scale) != TG_OK) {
            cli_error("%s: %s", o->graph_path, tg_last_error());
            goto done;
        }
    }

    if (!execute(o, g, store, feeds, targets, results, &dev)) goto done;
    status = CLI_OK;
    for (int i = 0; i < o->n_outputs; i++) {
        const named_path *out = &o->outputs[i];
        if (!out->path) {
            cli_print_array(stdout, out->name, &results[i]);
        } else if (tg_npy_write(out->path, &results[i]) != TG_OK) {
            cli_error("%s", tg_last_error());
            status = CLI_FAIL;
        }
    }
    for (int i = 0; i < o->n_save_vars; i++) {
        const named_path *sv = &o->save_vars[i];
        tg_array value;
        if (tg_store_get(store, sv->name, &value) != TG_OK) {
            cli_error("--save-var %s: %s", sv->name, tg_last_error());
            status = CLI_FAIL;
            continue;
        }
        if (tg_npy_write(sv->path, &value) != TG_OK) {
            cli_error("%s", tg_last_error());
            status = CLI_FAIL;
        }
        tg_array_free(&value);
    }
    if (fflush(stdout) != 0) {
        cli_error("cannot write to stdout: %s", strerror(errno));
        status = CLI_FAIL;
    }

done:
    for (int i = 0; results && i < o->n_outputs; i++) tg_array_free(&results[i]);
    for (int i = 0; inputs && i < o->n_inputs; i++) tg_array_free(&inputs[i]);
    free(needed);
    free(results);
    free(inputs);
    free(feeds);
    free(targets);
    tg_store_free(store);
    tg_device_free(dev); /* after the store: it held device copies of variables */
    tg_graph_free(g);
    return status;
}

int cli_run(int argc, char **argv) {
    run_options o = {.seed = 1, .init_scale = 0.1};
    /* each repeated flag uses at least one argument, so argc bounds them */
    size_t n = (size_t)argc;
    o.inputs = calloc(n, sizeof *o.inputs);
    o.outputs = calloc(n, sizeof *o.outputs);
    o.vars = calloc(n, sizeof *o.vars);
    o.save_vars = calloc(n, sizeof *o.save_vars);
    o.ops = calloc(n, sizeof *o.ops);
    int status;
    if (!o.inputs || !o.outputs || !o.vars || !o.save_vars || !o.ops) {
        cli_error("out of memory");
        status = CLI_FAIL;
    } else {
        status = parse_run_options(argc, argv, &o);
        if (status == CLI_OK) status = run_graph(&o);
    }
    free(o.inputs);
    free(o.outputs);
    free(o.vars);
    free(o.save_vars);
    free(o.ops);
    return status;
}
