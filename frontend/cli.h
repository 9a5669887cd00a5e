/* cli.h — the `graph` command line tool: its subcommands and the helpers
 * they share. Adding a subcommand: write `int cli_NAME(int argc, char **argv)`
 * in frontend/cli_NAME.c, declare it and its help text here, and add one row
 * to the table in frontend/main.c. */
#ifndef TG_CLI_H
#define TG_CLI_H

#include "tg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* Exit codes of every subcommand. */
enum {
    CLI_OK = 0,    /* success */
    CLI_FAIL = 1,  /* anything that went wrong with files, graphs or values */
    CLI_USAGE = 2, /* bad command line: unknown command or flag, missing argument */
};

/* A subcommand gets argv[0] = its own name and the arguments after it;
 * `--help` is handled before it is called. It returns an exit code. */
typedef int (*cli_command_fn)(int argc, char **argv);

int cli_dump(int argc, char **argv);
int cli_run(int argc, char **argv);
int cli_compare(int argc, char **argv);
int cli_devices(int argc, char **argv);
int cli_mel(int argc, char **argv);
int cli_train(int argc, char **argv);
int cli_transcribe(int argc, char **argv);

extern const char cli_dump_help[];
extern const char cli_run_help[];
extern const char cli_compare_help[];
extern const char cli_devices_help[];
extern const char cli_mel_help[];
extern const char cli_train_help[];
extern const char cli_transcribe_help[];

/* ---- helpers (frontend/cli_util.c) ---- */

/* Prints "graph: <message>" and a newline to stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Prints "graph: <command>: <message> (see 'graph <command> --help')" to
 * stderr and returns CLI_USAGE. */
int cli_usage_error(const char *command, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Option matching for "--name=VALUE" and "--name VALUE". If argv[*i] is the
 * option `name`, stores its value, moves *i past it and returns 1; returns 0
 * if argv[*i] is something else; returns -1 if the value is missing (after
 * printing a usage error for `command`). */
int cli_take_value(const char *command, int argc, char **argv, int *i, const char *name,
                   const char **value);

/* Splits "NAME=VALUE" at the first '='. Returns false if there is no '=' or
 * either side is empty. name gets a copy of the name part (truncated to
 * name_size); *value points into `arg`. */
bool cli_split_assignment(const char *arg, char *name, size_t name_size, const char **value);

/* Reads a whole file (NUL-terminated, malloc'ed). On failure prints
 * "graph: PATH: cannot open: ..." and returns NULL. */
char *cli_read_file(const char *path, size_t *len);
/* Reads and parses a .tgir file; on failure prints the error and returns NULL. */
tg_graph *cli_load_graph(const char *path);
/* Writes `text` to `path`, or to stdout if path is NULL. Prints errors. */
bool cli_write_text(const char *path, const char *text);

/* Formats an array's dtype and shape: "f32[2,3]". */
void cli_format_shape(const tg_array *a, char *buf, size_t n);
/* Prints "label: f32[2,3]" and then the values, NumPy style, summarising
 * arrays of more than 1000 elements with "..." (first and last 3 per axis). */
void cli_print_array(FILE *out, const char *label, const tg_array *a);

#endif /* TG_CLI_H */
