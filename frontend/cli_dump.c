/* cli_dump.c — `graph dump`: prints a graph as canonical text IR or DOT. */
#include "frontend/cli.h"
#include "graph/graph_internal.h"

#include <stdlib.h>
#include <string.h>

const char cli_dump_help[] =
    "usage: graph dump [--ir | --dot] FILE.tgir [-o OUT]\n"
    "       graph dump [--ir] FILE.tgir --after=PASS [--disable=PASS[,PASS]]... [-o OUT]\n"
    "       graph dump --stats FILE.tgir [--disable=PASS[,PASS]]...\n"
    "       graph dump --passes\n"
    "\n"
    "Parses FILE.tgir and prints it.\n"
    "  --ir           the canonical text IR (the default)\n"
    "  --dot          Graphviz DOT: ops as nodes, shapes on edges\n"
    "  --after=PASS   run the passes and print the IR after PASS (after\n"
    "                 'fusion': grouped by kernel)\n"
    "  --disable=PASS skip a pass (repeatable, or comma-separated); without\n"
    "                 --after, prints the IR after the last pass that runs\n"
    "  --stats        run the passes and print node, dispatch and memory counts\n"
    "                 and the buffers live at the arena's peak;\n"
    "                 then compile on the default device: kernels, dispatches,\n"
    "                 arena bytes, its lower bound and the naive sum\n"
    "  --passes       list the passes in the order they run\n"
    "  -o OUT         write to OUT instead of stdout\n"
    "Targets are the nodes no other node uses; state ops are target ops.\n"
    "TG_DUMP_IR=1 also prints the IR after every pass to stderr.\n";

/* The dump sink: keeps the IR after the pass asked for (without one, the
 * last IR it gets) and, with TG_DUMP_IR=1, writes every pass's IR to stderr. */
typedef struct dump_sink {
    const char *after;
    char *text;
} dump_sink;

static void sink(void *user, const char *pass, const char *ir) {
    dump_sink *s = user;
    const char *env = getenv("TG_DUMP_IR");
    if (env && strcmp(env, "1") == 0) fprintf(stderr, "# ---- IR after %s ----\n%s", pass, ir);
    if (s->after && strcmp(pass, s->after) != 0) return;
    size_t len = strlen(ir) + 1;
    char *copy = malloc(len);
    if (!copy) return; /* reported as an empty dump */
    memcpy(copy, ir, len);
    free(s->text);
    s->text = copy;
}

static void print_stats(FILE *out, const tg_pass_stats *s) {
    fprintf(out, "nodes_before: %d\nnodes_after: %d\n", s->nodes_before, s->nodes_after);
    fprintf(out,
            "nodes_by_class: source=%d elementwise=%d reduction=%d matmul=%d movement=%d "
            "opaque=%d state=%d alias=%d\n",
            s->sources, s->elementwise, s->reductions, s->matmuls, s->movements, s->opaque,
            s->state, s->aliases);
    fprintf(out, "dispatches_input: %d\ndispatches_unfused: %d\ndispatches_fused: %d\n",
            s->dispatches_input, s->dispatches_unfused, s->dispatches_fused);
    fprintf(out,
            "kernels_by_kind: elementwise=%d movement=%d reduction=%d matmul=%d opaque=%d "
            "state=%d\n",
            s->kernels_elementwise, s->kernels_movement, s->kernels_reduction, s->kernels_matmul,
            s->kernels_opaque, s->kernels_state);
    fprintf(out, "intermediate_bytes: %lld\n", (long long)s->intermediate_bytes);
}

/* The executable's figures (tg_compile of g on the default device, the
 * same targets as the passes: unused non-source nodes, every state op as
 * a target op, variables initialised at random): kernels and dispatches
 * recorded (kernels_by_kind above counts them by kind), the arena, its
 * lower bound and the naive sum of intermediates.
 * A graph with dynamic dims compiles at its first run: "unknown". */
static bool print_compiled_stats(FILE *out, const char *input, const tg_graph *g,
                                 const char *disable) {
    int n = g->n_nodes;
    bool *used = calloc((size_t)n + 1, sizeof *used);
    tg_tensor *targets = calloc((size_t)n + 1, sizeof *targets);
    tg_tensor *ops = calloc((size_t)n + 1, sizeof *ops);
    int n_targets = 0, n_ops = 0;
    bool ok = used && targets && ops;
    for (int id = 0; ok && id < n; id++)
        for (int k = 0; k < g->nodes[id].n_inputs; k++) used[g->nodes[id].inputs[k]] = true;
    for (int id = 0; ok && id < n; id++) {
        const tg_node *nd = &g->nodes[id];
        if (tg_ops[nd->op].writes)
            ops[n_ops++] = (tg_tensor){id};
        else if (!used[id] && tg_ops[nd->op].klass != TG_CLASS_SOURCE)
            targets[n_targets++] = (tg_tensor){id};
    }
    tg_device *dev = NULL;
    tg_store *store = ok ? tg_store_new() : NULL;
    tg_executable *e = NULL;
    tg_compile_options co = {.disable_passes = disable};
    uint64_t arena = 0, naive = 0, lower = 0;
    if (!ok || !store)
        cli_error("%s: out of memory", input);
    else if (tg_device_open(-1, &dev) != TG_OK ||
             tg_store_init_missing(store, g, 1, 0.02) != TG_OK ||
             tg_compile(dev, g, store, n_targets, targets, n_ops, ops, &co, &e) != TG_OK)
        cli_error("%s: %s", input, tg_last_error());
    else if (tg_executable_memory_stats(e, &arena, &naive, &lower) != TG_OK)
        fprintf(out, "compiled: at the first run (dynamic dims): arena figures unknown\n");
    else {
        fprintf(out, "dispatches_compiled: %d\n", tg_executable_dispatches(e));
        fprintf(out, "arena_bytes: %llu\nlower_bound_bytes: %llu\nnaive_bytes: %llu\n",
                (unsigned long long)arena, (unsigned long long)lower, (unsigned long long)naive);
        fprintf(out, "arena_over_lower_bound: %.3f\narena_over_naive: %.3f\n",
                lower ? (double)arena / (double)lower : 1.0,
                naive ? (double)arena / (double)naive : 1.0);
        char *peak = NULL;
        if (tg_executable_memory_peak(e, &peak) == TG_OK) fputs(peak, out);
        free(peak);
    }
    ok = ok && store && dev && e;
    tg_executable_free(e);
    tg_store_free(store);
    tg_device_free(dev);
    free(used);
    free(targets);
    free(ops);
    return ok;
}

/* Runs the passes; returns the IR after `after` (or the last pass run) or,
 * with stats, prints them. */
static int run_passes(const char *input, tg_graph *g, const char *after, const char *disable,
                      bool stats, const char *output) {
    dump_sink s = {after, NULL};
    tg_pass_options o = {
        .disable = disable, .dump_after = after, .dump_all = !after, .dump = sink, .dump_user = &s};
    tg_pass_stats st;
    tg_graph *opt = NULL;
    if (tg_optimize(g, 0, NULL, 0, NULL, &o, &opt, NULL, NULL, &st) != TG_OK) {
        cli_error("%s: %s", input, tg_last_error());
        free(s.text);
        return CLI_FAIL;
    }
    tg_graph_free(opt);
    bool ok = true;
    if (stats) {
        print_stats(stdout, &st);
        ok = print_compiled_stats(stdout, input, g, disable);
    } else
        ok = cli_write_text(output, s.text ? s.text : "");
    free(s.text);
    return ok ? CLI_OK : CLI_FAIL;
}

/* True when `name` is one of the passes (a bad name is a usage error). */
static bool is_pass_name(const char *name) {
    for (int p = 0; p < tg_pass_count(); p++)
        if (strcmp(tg_pass_name(p), name) == 0) return true;
    return false;
}

int cli_dump(int argc, char **argv) {
    const char *command = argv[0];
    const char *input = NULL, *output = NULL, *after = NULL, *disable_arg = NULL;
    bool want_ir = false, want_dot = false, want_stats = false;
    char disable[512] = "";
    for (int i = 1; i < argc;) {
        const char *arg = argv[i];
        int took = cli_take_value(command, argc, argv, &i, "-o", &output);
        if (took < 0) return CLI_USAGE;
        if (took > 0) continue;
        took = cli_take_value(command, argc, argv, &i, "--output", &output);
        if (took < 0) return CLI_USAGE;
        if (took > 0) continue;
        took = cli_take_value(command, argc, argv, &i, "--after", &after);
        if (took < 0) return CLI_USAGE;
        if (took > 0) continue;
        took = cli_take_value(command, argc, argv, &i, "--disable", &disable_arg);
        if (took < 0) return CLI_USAGE;
        if (took > 0) {
            if (!is_pass_name(disable_arg) && !strchr(disable_arg, ','))
                return cli_usage_error(
                    command, "unknown pass '%s' (graph dump --passes lists them)", disable_arg);
            size_t used = strlen(disable);
            snprintf(disable + used, sizeof disable - used, "%s%s", used ? "," : "", disable_arg);
            continue;
        }
        if (strcmp(arg, "--ir") == 0) {
            want_ir = true;
        } else if (strcmp(arg, "--dot") == 0) {
            want_dot = true;
        } else if (strcmp(arg, "--stats") == 0) {
            want_stats = true;
        } else if (strcmp(arg, "--passes") == 0) {
            for (int p = 0; p < tg_pass_count(); p++)
                printf("%-16s %s\n", tg_pass_name(p), tg_pass_description(p));
            return CLI_OK;
        } else if (arg[0] == '-' && arg[1] != '\0') {
            return cli_usage_error(command, "unknown option '%s'", arg);
        } else if (!input) {
            input = arg;
        } else {
            return cli_usage_error(command, "more than one input file ('%s' and '%s')", input, arg);
        }
        i++;
    }
    if (want_ir && want_dot) return cli_usage_error(command, "give --ir or --dot, not both");
    if (!input) return cli_usage_error(command, "missing FILE.tgir");
    if (after && !is_pass_name(after))
        return cli_usage_error(command, "unknown pass '%s' (graph dump --passes lists them)",
                               after);
    bool passes = after || disable[0] || want_stats;
    if (passes && want_dot)
        return cli_usage_error(command,
                               "--dot prints the input graph; it does not take pass flags");

    tg_graph *g = cli_load_graph(input);
    if (!g) return CLI_FAIL;
    if (passes) {
        int rc = run_passes(input, g, after, disable[0] ? disable : NULL, want_stats, output);
        tg_graph_free(g);
        return rc;
    }
    char *text = want_dot ? tg_graph_to_dot(g) : tg_graph_to_text(g);
    tg_graph_free(g);
    if (!text) {
        cli_error("%s: %s", input, tg_last_error());
        return CLI_FAIL;
    }
    bool ok = cli_write_text(output, text);
    free(text);
    return ok ? CLI_OK : CLI_FAIL;
}
