#!/bin/bash
# Exit codes and messages of the graph CLI: 0 success, 1 failure, 2 usage.
set -euo pipefail
# shellcheck source=tests/cli/lib.bash
source "$(dirname "$0")/lib.bash"

expect_status 0 "$GRAPH" --version
expect_in "$TMP/out" "graph (tg) 0."
expect_status 0 "$GRAPH" --help
expect_in "$TMP/out" "usage: graph COMMAND"
for command in dump run compare; do
    expect_status 0 "$GRAPH" "$command" --help
    expect_in "$TMP/out" "usage: graph $command"
done
expect_status 0 "$GRAPH" --help
for command in dump run compare; do expect_in "$TMP/out" "  $command "; done

# usage errors: 2
expect_status 2 "$GRAPH"
expect_status 2 "$GRAPH" frobnicate
expect_one_line_error "unknown command 'frobnicate'"
expect_status 2 "$GRAPH" --frobnicate
expect_one_line_error "unknown option '--frobnicate'"
expect_status 2 "$GRAPH" dump
expect_one_line_error "missing FILE.tgir"
expect_status 2 "$GRAPH" dump --bogus x.tgir
expect_one_line_error "unknown option '--bogus'"
expect_status 2 "$GRAPH" dump --after=no_such_pass x.tgir # an unknown pass is a usage error
expect_status 2 "$GRAPH" dump --ir --dot x.tgir
expect_status 2 "$GRAPH" dump x.tgir -o
expect_one_line_error "-o needs a value"
expect_status 2 "$GRAPH" run
expect_status 2 "$GRAPH" run x.tgir # nothing to run
expect_one_line_error "nothing to run"
expect_status 2 "$GRAPH" run x.tgir --output y --input
expect_one_line_error "--input needs a value"
expect_status 2 "$GRAPH" run x.tgir --input x.npy --output y
expect_one_line_error "--input expects NAME=FILE, got 'x.npy'"
expect_status 2 "$GRAPH" run x.tgir --output y --init-vars=ones
expect_status 2 "$GRAPH" run x.tgir --output y --seed -3
expect_status 2 "$GRAPH" compare a.npy
expect_status 2 "$GRAPH" compare a.npy b.npy --atol nan
expect_one_line_error "bad tolerance 'nan'"

# failures: 1, with one line naming the file and the problem
expect_status 1 "$GRAPH" dump "$TMP/missing.tgir"
expect_one_line_error "$TMP/missing.tgir: cannot open: No such file or directory"
expect_status 1 "$GRAPH" compare "$TMP/missing.npy" "$DATA/cli_x3.npy"
expect_one_line_error "$TMP/missing.npy: cannot open"
printf 'not a graph\n' >"$TMP/bad.tgir"
expect_status 1 "$GRAPH" dump "$TMP/bad.tgir"
expect_one_line_error "$TMP/bad.tgir"
printf '\x93NUMPY\x01\x00\x10\x00{"descr": "<f4"' >"$TMP/bad.npy"
expect_status 1 "$GRAPH" compare "$TMP/bad.npy" "$DATA/cli_x3.npy"
expect_one_line_error "$TMP/bad.npy: truncated header"
expect_status 1 "$GRAPH" compare "$DATA/npy_f64.npy" "$DATA/cli_x3.npy"
expect_one_line_error "npy_f64.npy: unsupported dtype '<f8'"
echo ok
