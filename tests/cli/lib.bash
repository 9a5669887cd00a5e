# lib.bash — helpers for the CLI tests (sourced, not a test itself).
# Every test script is run as: bash SCRIPT GRAPH_EXE DATA_DIR

# shellcheck disable=SC2034 # used by the scripts that source this
GRAPH=$1
# shellcheck disable=SC2034
DATA=$2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# expect_status CODE COMMAND...: runs COMMAND, keeping its stdout and stderr
# in $TMP/out and $TMP/err, and fails unless it exits with CODE.
expect_status() {
    local want=$1
    shift
    local got=0
    "$@" >"$TMP/out" 2>"$TMP/err" || got=$?
    if [ "$got" -ne "$want" ]; then
        echo "--- stdout:" >&2
        cat "$TMP/out" >&2
        echo "--- stderr:" >&2
        cat "$TMP/err" >&2
        fail "'$*' exited $got, expected $want"
    fi
}

# expect_in FILE TEXT: FILE contains TEXT (a fixed string).
expect_in() {
    grep -qF -- "$2" "$1" || {
        cat "$1" >&2
        fail "$1 does not contain '$2'"
    }
}

# expect_one_line_error TEXT: stderr is exactly one line, starts with
# "graph: " and contains TEXT.
expect_one_line_error() {
    [ "$(wc -l <"$TMP/err")" -eq 1 ] || {
        cat "$TMP/err" >&2
        fail "stderr is not one line"
    }
    expect_in "$TMP/err" "graph: "
    expect_in "$TMP/err" "$1"
}
