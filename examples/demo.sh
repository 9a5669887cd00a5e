#!/bin/bash
# demo.sh — teach a small Whisper to transcribe, from random weights, on this
# machine: synthesise a speech data set with espeak-ng (several voices and
# speeds; held-out sentences never seen in training), train it with
# `graph train` (byte-level vocabulary, 3-second windows), then transcribe
# held-out utterances with `graph transcribe` next to their truth and print
# the character error rate.
#
#   examples/demo.sh            the default run
#   examples/demo.sh --long     more data and steps, for a lower error rate
#
# Environment: GRAPH (the graph binary; default build/release/graph, as .ci/setup builds it), OUT (default
# /tmp/tg-demo), STEPS, BATCH, TRAIN_SENTENCES to override the sizes.
# Needs espeak-ng, sox and python3.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
GRAPH=${GRAPH:-$root/build/release/graph}
OUT=${OUT:-/tmp/tg-demo}
LONG=0
[[ "${1:-}" == "--long" ]] && LONG=1
if (( LONG )); then
    STEPS=${STEPS:-800}; TRAIN_SENTENCES=${TRAIN_SENTENCES:-1000}
else
    STEPS=${STEPS:-400}; TRAIN_SENTENCES=${TRAIN_SENTENCES:-600}
fi
BATCH=${BATCH:-16}
EVAL_SENTENCES=${EVAL_SENTENCES:-50}
# lavapipe: its default thread pool (one thread per CPU). Inline dispatches
# (LP_NUM_THREADS=0) cost less each, but since the fifth session's kernels a
# training step is faster on both CPUs: 0.39 s vs 0.69 s a step here, the
# same losses; transcription takes the same time either way.

for tool in espeak-ng sox python3; do
    command -v "$tool" > /dev/null || { echo "demo: $tool is required" >&2; exit 1; }
done
[[ -x "$GRAPH" ]] || { echo "demo: $GRAPH not found (build first, or set GRAPH)" >&2; exit 1; }

start=$(date +%s)
echo "== 1. speech data: $TRAIN_SENTENCES training sentences x 3 voices/speeds, $EVAL_SENTENCES held-out" >&2
python3 "$here/demo/make_data.py" "$OUT/data" --train-sentences "$TRAIN_SENTENCES" \
    --eval-sentences "$EVAL_SENTENCES" --seed 1
echo "== 2. graph train: $STEPS steps of $BATCH utterances" >&2
"$GRAPH" train --train "$OUT/data/train.jsonl" --eval "$OUT/data/eval.jsonl" \
    --config "$here/demo/config.json" --tokenizer bytes --out "$OUT/run" \
    --steps "$STEPS" --batch-size "$BATCH" --max-tokens 48 --lr 2e-3 --warmup 40 \
    --schedule linear --weight-decay 0.01 --eval-every $(( STEPS / 2 )) --save-every $(( STEPS / 2 )) \
    --keep 1 --log-every 10 --seed 1
model="$OUT/run/best"
[[ -e "$model" ]] || model=$(ls -d "$OUT"/run/checkpoint-* | sort -t- -k2 -n | tail -1)

echo "== 3. held-out sentences (never in training), transcribed by $model" >&2
files=()
truths=()
while IFS=$'\t' read -r audio text; do
    files+=("$OUT/data/$audio")
    truths+=("$text")
done < <(python3 -c '
import json, sys
for line in list(open(sys.argv[1]))[:12]:
    r = json.loads(line)
    print(r["audio"] + "\t" + r["text"])' "$OUT/data/eval.jsonl")

if "$GRAPH" transcribe --help > /dev/null 2>&1; then
    mkdir -p "$OUT/transcripts"
    "$GRAPH" transcribe --model "$model" --language en --no-timestamps --batch-size 4 \
        --output-format txt --output-dir "$OUT/transcripts" "${files[@]}" > /dev/null
    refs="$OUT/refs.txt"; hyps="$OUT/hyps.txt"
    : > "$refs"; : > "$hyps"
    for i in "${!files[@]}"; do
        name=$(basename "${files[$i]}" .wav)
        heard=$(tr '\n' ' ' < "$OUT/transcripts/$name.txt" | sed 's/^ *//; s/ *$//')
        printf '  truth: %s\n  heard: %s\n' "${truths[$i]}" "$heard"
        echo "${truths[$i]}" >> "$refs"
        echo "$heard" >> "$hyps"
    done
    python3 - "$refs" "$hyps" <<'PY'
import re, sys
def norm(s):
    return " ".join(re.sub(r"[^a-z0-9' ]", "", s.lower()).split())
def lev(a, b):
    d = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(b) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] != b[j - 1]))
            prev, d[j] = d[j], cur
    return d[len(b)]
refs = [norm(l) for l in open(sys.argv[1], errors="replace")]
hyps = [norm(l) for l in open(sys.argv[2], errors="replace")]
e = sum(lev(h, r) for h, r in zip(hyps, refs)); n = sum(len(r) for r in refs)
print("graph transcribe: CER %.1f%% on %d held-out utterances" % (100.0 * e / max(n, 1), len(refs)))
PY
fi
grep '"cer"' "$OUT/run/metrics.jsonl" | tail -1 | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print("graph train eval at step %d: CER %.1f%%, WER %.1f%% on all held-out utterances" % (r["step"], 100 * r["cer"], 100 * r["wer"]))'
echo "total time: $(( $(date +%s) - start )) s; plot: $OUT/run/training.svg" >&2
