/* main.c — the `graph` command line tool: dispatches to subcommands.
 * Exit codes: 0 success, 1 failure, 2 usage error (see cli.h). */
#include "frontend/cli.h"

#include <stdio.h>
#include <string.h>

typedef struct cli_command {
    const char *name;
    const char *summary; /* one line for `graph --help` */
    const char *help;    /* the full text for `graph NAME --help` */
    cli_command_fn run;
} cli_command;

/* One row per subcommand. */
static const cli_command commands[] = {
    {"dump", "print a graph's IR or Graphviz DOT", cli_dump_help, cli_dump},
    {"run", "run a graph on Vulkan (or --interp: the reference interpreter)", cli_run_help, cli_run},
    {"compare", "compare two .npy files within a tolerance", cli_compare_help, cli_compare},
    {"devices", "list the Vulkan devices and their limits", cli_devices_help, cli_devices},
    {"mel", "write the Whisper log-Mel spectrogram of an audio file", cli_mel_help, cli_mel},
    {"train", "train Whisper on a manifest of audio and transcripts", cli_train_help, cli_train},
    {"transcribe", "transcribe audio files with Whisper", cli_transcribe_help, cli_transcribe},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void print_main_help(FILE *out) {
    fprintf(out,
            "usage: graph COMMAND [ARGS...]\n"
            "       graph --version | --help\n"
            "\n"
            "tg %s: a tensor graph compiler. Commands:\n",
            TG_VERSION_STRING);
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fputs("\n'graph COMMAND --help' describes a command; docs/cli.md has all of them.\n", out);
}

static bool asks_for_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return true;
    return false;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_main_help(stderr);
        return CLI_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        print_main_help(stdout);
        return CLI_OK;
    }
    if (strcmp(name, "--version") == 0) {
        printf("graph (tg) %s\n", TG_VERSION_STRING);
        return CLI_OK;
    }
    for (int i = 0; i < N_COMMANDS; i++) {
        if (strcmp(name, commands[i].name) != 0) continue;
        if (asks_for_help(argc - 1, argv + 1)) {
            fputs(commands[i].help, stdout);
            return CLI_OK;
        }
        return commands[i].run(argc - 1, argv + 1);
    }
    if (name[0] == '-')
        cli_error("unknown option '%s' (see 'graph --help')", name);
    else
        cli_error("unknown command '%s' (see 'graph --help')", name);
    return CLI_USAGE;
}
