#!/bin/bash
# Mixed precision on the demo's data: `graph train --precision f16` trains
# the demo model (examples/demo/config.json: d_model 128, 2+2 layers, byte
# vocabulary) to within 5% of the f32 loss after 200 steps. The data is the
# demo's, made by examples/demo/make_data.py with espeak-ng (a smaller set:
# 100 sentences x 3 voices/speeds), and both runs see the same batches in
# the same order (same seed). Compared: the mean of the losses logged at
# steps 160-200 (one batch's loss alone is noisy), and every run must stay
# finite with no skipped step. Batch 4 and one padded window keep the test
# to a few minutes on lavapipe (the f16 step is ~2x slower there).
set -euo pipefail
# shellcheck source=tests/cli/lib.bash
source "$(dirname "$0")/lib.bash"
export TG_CACHE_DIR="$TMP/cache" LP_NUM_THREADS=${LP_NUM_THREADS:-0}
root=$(cd "$(dirname "$0")/../.." && pwd)
for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null || fail "$tool is required (.ci/setup installs it)"
done

/usr/bin/python3 "$root/examples/demo/make_data.py" "$TMP/data" --train-sentences 100 \
    --eval-sentences 2 --seed 3 >"$TMP/make_data.log" 2>&1 || {
    cat "$TMP/make_data.log" >&2
    fail "make_data.py"
}

for p in f32 f16; do
    expect_status 0 "$GRAPH" train --train "$TMP/data/train.jsonl" \
        --config "$root/examples/demo/config.json" --tokenizer bytes --out "$TMP/run-$p" \
        --steps 200 --batch-size 4 --max-tokens 48 --lr 2e-3 --warmup 20 --pad-to-30s \
        --log-every 10 --seed 1 --precision "$p"
done

/usr/bin/python3 - "$TMP/run-f32/metrics.jsonl" "$TMP/run-f16/metrics.jsonl" <<'PY' ||
import json, math, sys
def tail_loss(path):
    rows = [json.loads(l) for l in open(path) if '"loss"' in l and '"step"' in l]
    train = [r for r in rows if "eval_loss" not in r and "loss" in r]
    assert train[-1]["step"] == 200, (path, train[-1])
    assert all(math.isfinite(r["loss"]) for r in train), path
    assert train[-1].get("skipped_steps", 0) == 0, (path, train[-1])
    last = [r["loss"] for r in train if 160 <= r["step"] <= 200]
    assert len(last) == 5, (path, last)
    return sum(last) / len(last), train[0]["loss"]
f32, f32_first = tail_loss(sys.argv[1])
f16, f16_first = tail_loss(sys.argv[2])
rel = (f16 - f32) / f32
print(f"loss at steps 160-200: f32 {f32:.4f}, f16 {f16:.4f} ({100 * rel:+.2f}%); "
      f"step 1: {f32_first:.4f} / {f16_first:.4f}")
assert f32 < 0.5 * f32_first, "f32 did not learn"
assert abs(rel) <= 0.05, f"f16 {f16} vs f32 {f32}: {100 * rel:+.2f}% (bound 5%)"
PY
    fail "f16 vs f32 on the demo data"
echo "ok"
