#!/bin/bash
# graph run on the Vulkan device (the default): --compare against the
# interpreter, --profile's table and trace, --interp, and the usage errors.
set -euo pipefail
# shellcheck source=tests/cli/lib.bash
source "$(dirname "$0")/lib.bash"
export TG_CACHE_DIR="$TMP/cache"

vars=()
for v in w1 b1 w2 b2; do vars+=(--var "$v=$DATA/mlp_$v.npy"); done
run=("$GRAPH" run "$DATA/mlp.tgir" --input "x=$DATA/mlp_x.npy" "${vars[@]}")

# the device's probabilities match NumPy's (tests/reference/mlp_reference.py)
expect_status 0 "${run[@]}" --output "probs=$TMP/probs.npy"
expect_status 0 "$GRAPH" compare "$TMP/probs.npy" "$DATA/mlp_probs.npy" --atol 1e-6 --rtol 1e-5

# --compare prints one error line per output; f32 kernels agree to ~1e-7
expect_status 0 "${run[@]}" --output probs --output hidden --compare
expect_in "$TMP/out" "compare probs: max abs error "
expect_in "$TMP/out" "compare hidden: max abs error "
expect_in "$TMP/out" "probs: f32[2,3]"
awk '/^compare / { if ($6 + 0 > 1e-5) bad = 1 } END { exit bad }' "$TMP/out" ||
    fail "errors too large: $(cat "$TMP/out")"

# --profile: the table on stderr, the trace a JSON file with one event per dispatch
expect_status 0 "${run[@]}" --output probs --profile="$TMP/trace.json"
expect_in "$TMP/err" "dispatches"
expect_in "$TMP/err" "matmul"
expect_in "$TMP/err" "trace written to $TMP/trace.json"
/usr/bin/python3 - "$TMP/trace.json" <<'PY' || fail "trace: $(head -c 300 "$TMP/trace.json")"
import json, sys
events = json.load(open(sys.argv[1]))["traceEvents"]
complete = [e for e in events if e["ph"] == "X"]
assert len(complete) >= 3 and all(e["dur"] >= 0 for e in complete), complete  # fused: matmul+add+relu, matmul+add, softmax
assert any("matmul" in e["name"] for e in complete)
PY

# --interp gives the same answer without a device
expect_status 0 "${run[@]}" --interp --output "probs=$TMP/probs_interp.npy"
expect_status 0 "$GRAPH" compare "$TMP/probs.npy" "$TMP/probs_interp.npy" --atol 1e-6 --rtol 1e-5

# --interp excludes the device-only flags
expect_status 2 "${run[@]}" --interp --compare --output probs
expect_in "$TMP/err" "--interp runs no device"
echo ok
