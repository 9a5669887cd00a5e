#!/bin/bash
# graph dump with passes: --passes lists them, --after=fusion prints the
# fused IR (the expected file of test_pass_simplify), --after=dce the plain
# IR, --disable, --stats counts, TG_DUMP_IR=1 writes every pass to stderr,
# unknown passes are errors naming the pass.
set -euo pipefail
# shellcheck source=tests/cli/lib.bash
source "$(dirname "$0")/lib.bash"

expect_status 0 "$GRAPH" dump --passes
[ "$(cut -d' ' -f1 "$TMP/out" | tr '\n' ' ')" = "flash_attention fold algebra permute_matmul gelu_derivative cse dce fusion " ] ||
    fail "pass list: $(cat "$TMP/out")"

expect_status 0 "$GRAPH" dump --ir "$DATA/mlp.tgir" --after=fusion
diff -u "$DATA/passes/mlp.fused.tgir" "$TMP/out" || fail "--after=fusion differs from mlp.fused.tgir"
[ -s "$TMP/err" ] && fail "dump wrote to stderr: $(cat "$TMP/err")"

expect_status 0 "$GRAPH" dump "$DATA/mlp.tgir" --after dce
diff -u "$DATA/mlp.expected.tgir" "$TMP/out" || fail "--after=dce changed the MLP"

# without --after: the IR after the last pass that runs
expect_status 0 "$GRAPH" dump "$DATA/mlp.tgir" --disable=fusion --disable fold
diff -u "$DATA/mlp.expected.tgir" "$TMP/out" || fail "--disable=fusion should print plain IR"

expect_status 0 "$GRAPH" dump --stats "$DATA/mlp.tgir"
expect_in "$TMP/out" "dispatches_unfused: 6"
expect_in "$TMP/out" "dispatches_fused: 3"
expect_in "$TMP/out" "kernels_by_kind: elementwise=0 movement=0 reduction=0 matmul=2 opaque=1 state=0"
expect_in "$TMP/out" "intermediate_bytes: 264"
# what holds the peak: h's kernel writes hidden (2x8 f32) while x is live
expect_in "$TMP/out" "peak: 96 bytes in 2 buffers, at kernel 1 of 3 (matmul 'h'"
expect_in "$TMP/out" "64  relu 'hidden' (node 7, f32[2,8]), live over kernels 1..2"
expect_status 0 "$GRAPH" dump --stats "$DATA/mlp.tgir" --disable=fusion
expect_in "$TMP/out" "dispatches_fused: 6"

TG_DUMP_IR=1 expect_status 0 "$GRAPH" dump "$DATA/mlp.tgir" --after=cse
[ "$(grep -c '^# ---- IR after' "$TMP/err")" -eq 9 ] || fail "TG_DUMP_IR=1: $(cat "$TMP/err")"
expect_in "$TMP/err" "# ---- IR after fusion ----"

# flash_attention off: the attention is matmuls and a softmax
expect_status 0 "$GRAPH" dump "$DATA/attention.tgir" --disable=flash_attention,fusion
expect_in "$TMP/out" "softmax"
grep -q "= attention " "$TMP/out" && fail "--disable=flash_attention left an attention op"

# an unknown pass name is a usage error (exit 2), like an unknown flag
expect_status 2 "$GRAPH" dump "$DATA/mlp.tgir" --after=frobnicate
expect_one_line_error "unknown pass 'frobnicate'"
expect_status 2 "$GRAPH" dump "$DATA/mlp.tgir" --disable=frobnicate
expect_one_line_error "unknown pass 'frobnicate'"
expect_status 2 "$GRAPH" dump --dot "$DATA/mlp.tgir" --stats
echo ok
