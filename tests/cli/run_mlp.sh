#!/bin/bash
# graph run on tests/data/mlp.tgir against probabilities NumPy computed
# independently (tests/reference/mlp_reference.py -> mlp_probs.npy).
set -euo pipefail
# shellcheck source=tests/cli/lib.bash
source "$(dirname "$0")/lib.bash"

vars=()
for v in w1 b1 w2 b2; do vars+=(--var "$v=$DATA/mlp_$v.npy"); done

expect_status 0 "$GRAPH" run "$DATA/mlp.tgir" --input "x=$DATA/mlp_x.npy" "${vars[@]}" \
    --output "probs=$TMP/probs.npy"
expect_status 0 "$GRAPH" compare "$TMP/probs.npy" "$DATA/mlp_probs.npy" --atol 1e-6 --rtol 1e-5
expect_in "$TMP/out" "6 elements"
expect_in "$TMP/out" "0 outside"

# the comparison can fail: the same graph on another input is far off
expect_status 0 "$GRAPH" run "$DATA/mlp.tgir" --input "x=$DATA/mlp_x.npy" "${vars[@]}" \
    --output "hidden=$TMP/hidden.npy"
expect_status 1 "$GRAPH" compare "$TMP/hidden.npy" "$DATA/mlp_probs.npy"
expect_one_line_error "have different shapes: f32[2,8] vs f32[2,3]"
expect_status 0 "$GRAPH" run "$DATA/mlp.tgir" --input "x=$DATA/mlp_x.npy" --init-vars=zeros \
    --output "probs=$TMP/uniform.npy"
expect_status 1 "$GRAPH" compare "$TMP/uniform.npy" "$DATA/mlp_probs.npy"
expect_one_line_error "differ: 6 of 6 elements outside the tolerance"

# printed: a header line with the shape, then the rows
expect_status 0 "$GRAPH" run "$DATA/mlp.tgir" --input "x=$DATA/mlp_x.npy" "${vars[@]}" \
    --output probs --output logits
expect_in "$TMP/out" "probs: f32[2,3]"
expect_in "$TMP/out" "logits: f32[2,3]"
expect_in "$TMP/out" "[[0.447345, 0.356739, 0.195916],"
expect_in "$TMP/out" " [0.610068, 0.326855, 0.0630766]]"

# a wrong-shaped input names the file and both shapes
expect_status 1 "$GRAPH" run "$DATA/mlp.tgir" --input "x=$DATA/npy_f32.npy" "${vars[@]}" \
    --output probs
expect_one_line_error "npy_f32.npy: holds f32[2,3] but placeholder 'x' in $DATA/mlp.tgir is f32[2,4]"
echo ok
