/* cli_dump.c — `graph dump`: prints a graph as canonical text IR or DOT. */
#include "frontend/cli.h"

#include <stdlib.h>
#include <string.h>

const char cli_dump_help[] = "usage: graph dump [--ir | --dot] FILE.tgir [-o OUT]\n"
                             "\n"
                             "Parses FILE.tgir and prints it.\n"
                             "  --ir       the canonical text IR (the default)\n"
                             "  --dot      Graphviz DOT: ops as nodes, shapes on edges\n"
                             "  -o OUT     write to OUT instead of stdout\n";

int cli_dump(int argc, char **argv) {
    const char *command = argv[0];
    const char *input = NULL, *output = NULL;
    bool want_ir = false, want_dot = false;
    for (int i = 1; i < argc;) {
        const char *arg = argv[i];
        int took = cli_take_value(command, argc, argv, &i, "-o", &output);
        if (took < 0) return CLI_USAGE;
        if (took > 0) continue;
        took = cli_take_value(command, argc, argv, &i, "--output", &output);
        if (took < 0) return CLI_USAGE;
        if (took > 0) continue;
        if (strcmp(arg, "--ir") == 0) {
            want_ir = true;
        } else if (strcmp(arg, "--dot") == 0) {
            want_dot = true;
        }
        /* Pass-related flags (--after=PASS, --stats) are parsed here once the
         * pass manager exists; until then they are unknown options. */
        else if (arg[0] == '-' && arg[1] != '\0') {
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

    tg_graph *g = cli_load_graph(input);
    if (!g) return CLI_FAIL;
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
