#!/bin/bash
# graph run with placeholders, variables (--var, --init-vars), an assign run
# for its effect (--op) and --save-var; graph compare on the results.
set -euo pipefail
# shellcheck source=tests/cli/lib.bash
source "$(dirname "$0")/lib.bash"

# dot = sum(x * w); step: w := w + 1
cat >"$TMP/dot.tgir" <<'IR'
# tg ir v1
%x = placeholder "x" : f32[?]
%w = variable "w" {trainable} : f32[3]
%2 = mul %x, %w : f32[3]
%dot = sum %2 {axes=[]} : f32[]
%4 = constant dense<[1]> : f32[]
%5 = add %w, %4 : f32[3]
%step = assign %w, %5 : f32[3]
IR
x="$DATA/cli_x3.npy" # [1, 2, 3]
w="$DATA/cli_w3.npy" # [0.5, -1, 2]

# printed output: 1*0.5 + 2*-1 + 3*2 = 4.5
expect_status 0 "$GRAPH" run "$TMP/dot.tgir" --input x="$x" --var w="$w" --output dot
expect_in "$TMP/out" "dot: f32[]"
[ "$(sed -n 2p "$TMP/out")" = "4.5" ] || fail "printed value: $(cat "$TMP/out")"

# written output, checked against NumPy's value (tests/reference/cli_fixtures.py)
expect_status 0 "$GRAPH" run --interp "$TMP/dot.tgir" --input "x=$x" --var "w=$w" \
    --output "dot=$TMP/dot.npy"
expect_status 0 "$GRAPH" compare "$TMP/dot.npy" "$DATA/cli_dot.npy" --atol 0 --rtol 0
expect_in "$TMP/out" "0 outside"

# the assign runs for its effect; the saved variable is w + 1
expect_status 0 "$GRAPH" run "$TMP/dot.tgir" --var "w=$w" --op step --save-var "w=$TMP/w1.npy"
expect_status 0 "$GRAPH" compare "$TMP/w1.npy" "$DATA/cli_w3_plus1.npy" --atol 0 --rtol 0
# ... and not without --op: w is saved unchanged, which compare must reject
expect_status 0 "$GRAPH" run "$TMP/dot.tgir" --input "x=$x" --var "w=$w" --output dot \
    --save-var "w=$TMP/w0.npy"
expect_status 1 "$GRAPH" compare "$TMP/w0.npy" "$DATA/cli_w3_plus1.npy"
expect_one_line_error "differ: 3 of 3 elements outside the tolerance"

# variables: missing is an error, --init-vars=zeros gives 0, random is seeded
expect_status 1 "$GRAPH" run "$TMP/dot.tgir" --input "x=$x" --output dot
expect_one_line_error "variable 'w' (f32[3]) has no value: give --var w=FILE.npy"
expect_status 0 "$GRAPH" run "$TMP/dot.tgir" --input "x=$x" --output dot --init-vars=zeros
[ "$(sed -n 2p "$TMP/out")" = "0" ] || fail "zeros: $(cat "$TMP/out")"
expect_status 0 "$GRAPH" run "$TMP/dot.tgir" --input "x=$x" --output dot --init-vars random \
    --seed 7 --save-var "w=$TMP/r1.npy"
expect_status 0 "$GRAPH" run "$TMP/dot.tgir" --input "x=$x" --output dot --init-vars random \
    --seed 7 --save-var "w=$TMP/r2.npy"
expect_status 0 "$GRAPH" compare "$TMP/r1.npy" "$TMP/r2.npy" --atol 0 --rtol 0
expect_status 0 "$GRAPH" run "$TMP/dot.tgir" --input "x=$x" --output dot --init-vars random \
    --seed 8 --save-var "w=$TMP/r3.npy"
expect_status 1 "$GRAPH" compare "$TMP/r1.npy" "$TMP/r3.npy" --atol 0 --rtol 0
# random values lie in [-0.1, 0.1] (the default --init-scale) and are not all zero
expect_status 0 "$GRAPH" run "$TMP/dot.tgir" --input "x=$x" --output dot --init-vars zeros \
    --save-var "w=$TMP/zeros.npy"
expect_status 0 "$GRAPH" compare "$TMP/r1.npy" "$TMP/zeros.npy" --atol 0.1 --rtol 0
expect_status 1 "$GRAPH" compare "$TMP/r1.npy" "$TMP/zeros.npy" --atol 0 --rtol 0
expect_status 1 "$GRAPH" run "$TMP/dot.tgir" --output dot --var "w=$w"
expect_one_line_error "placeholder 'x' (f32[?]) needs a value: give --input x=FILE.npy"

# wrong names, kinds, dtypes and shapes name the file and the problem
expect_status 1 "$GRAPH" run "$TMP/dot.tgir" --input "x=$x" --var "w=$w" --output nope
expect_one_line_error "dot.tgir: no node named 'nope'"
expect_status 1 "$GRAPH" run "$TMP/dot.tgir" --input "w=$x" --var "w=$w" --output dot
expect_one_line_error "node 'w' is a variable, not a placeholder (use --var)"
expect_status 1 "$GRAPH" run "$TMP/dot.tgir" --var "w=$w" --op dot
expect_one_line_error "node 'dot' is a sum, not an assign or slice_update"
expect_status 1 "$GRAPH" run "$TMP/dot.tgir" --input "x=$DATA/npy_i32.npy" --var "w=$w" --output dot
expect_one_line_error "npy_i32.npy: holds i32[3,2] but placeholder 'x' in $TMP/dot.tgir is f32[?]"
expect_status 1 "$GRAPH" run "$TMP/dot.tgir" --input "x=$x" --var "w=$DATA/npy_f32.npy" --output dot
expect_one_line_error "npy_f32.npy: holds f32[2,3] but variable 'w'"
printf 'junk' >"$TMP/bad.npy"
expect_status 1 "$GRAPH" run "$TMP/dot.tgir" --input "x=$TMP/bad.npy" --var "w=$w" --output dot
expect_one_line_error "$TMP/bad.npy: not a .npy file (bad magic bytes)"
expect_status 1 "$GRAPH" run "$TMP/dot.tgir" --input "x=$x" --var "w=$w" --output "dot=/nonexistent/d.npy"
expect_one_line_error "/nonexistent/d.npy: cannot open for writing"

# a large printed output is summarised: first and last 3 rows and columns
cat >"$TMP/neg.tgir" <<'IR'
# tg ir v1
%x = placeholder "x" : f32[?,?]
%y = abs %x : f32[?,?]
IR
header="{'descr': '<f4', 'fortran_order': False, 'shape': (40, 50), }"
{
    printf '\x93NUMPY\x01\x00'
    # shellcheck disable=SC2059 # the length byte is built as an escape
    printf "\\x$(printf %02x ${#header})\\x00"
    printf '%s' "$header"
    head -c 8000 /dev/zero
} >"$TMP/zeros.npy"
expect_status 0 "$GRAPH" run "$TMP/neg.tgir" --input "x=$TMP/zeros.npy" --output y
expect_in "$TMP/out" "y: f32[40,50]"
[ "$(wc -l <"$TMP/out")" -eq 8 ] || fail "summary is not 1 + 7 lines: $(cat "$TMP/out")"
[ "$(sed -n 2p "$TMP/out")" = "[[0, 0, 0, ..., 0, 0, 0]," ] || fail "first row: $(sed -n 2p "$TMP/out")"
[ "$(sed -n 5p "$TMP/out")" = " ...," ] || fail "row ellipsis: $(sed -n 5p "$TMP/out")"
echo ok
