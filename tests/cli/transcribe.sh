#!/bin/bash
# graph transcribe on the tiny random checkpoint (tests/data/whisper/tiny:
# its window is 100 Mel frames = 1 s, so speech.wav's 3.7 s take several
# windows): output formats, batching, --output-dir, and the errors.
set -euo pipefail
# shellcheck source=tests/cli/lib.bash
source "$(dirname "$0")/lib.bash"
export TG_CACHE_DIR="$TMP/cache"
MODEL="$DATA/whisper/tiny"
WAV="$DATA/whisper/speech.wav"
cp "$WAV" "$TMP/a.wav"
# a second, different file: the first 2.5 s of the speech, made with sox-free python
/usr/bin/python3 - "$WAV" "$TMP/b.wav" <<'PY'
import sys, wave
src = wave.open(sys.argv[1]); dst = wave.open(sys.argv[2], "wb")
dst.setparams(src.getparams()); dst.writeframes(src.readframes(40000)); dst.close()
PY

# json: segments with start, end, text and token ids; progress on stderr
expect_status 0 "$GRAPH" transcribe --model "$MODEL" "$TMP/a.wav" --output-format json --language en
expect_in "$TMP/err" "window 1 at 0.0 of 3.7 s"
expect_in "$TMP/err" "tokens/s"
cp "$TMP/out" "$TMP/a.json"
/usr/bin/python3 - "$TMP/a.json" <<'PY' || fail "json: $(head -c 400 "$TMP/a.json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["language"] == "en" and j["file"].endswith("a.wav"), j
segs = j["segments"]
assert len(segs) >= 4, segs  # 3.7 s in 1-s windows
for s in segs:
    assert set(s) >= {"id", "start", "end", "text", "tokens"}, s
    assert 0 <= s["start"] <= s["end"] <= 3.7 + 1.4, s
    assert all(isinstance(t, int) and 0 <= t < 100 for t in s["tokens"]), s
assert [s["id"] for s in segs] == list(range(len(segs)))
PY

# srt and vtt: numbered cues / the WEBVTT header, HH:MM:SS,mmm --> HH:MM:SS,mmm
expect_status 0 "$GRAPH" transcribe --model "$MODEL" "$TMP/a.wav" --output-format srt --language en
head -2 "$TMP/out" | grep -qxE '1|[0-9]{2}:[0-9]{2}:[0-9]{2},[0-9]{3} --> [0-9]{2}:[0-9]{2}:[0-9]{2},[0-9]{3}' ||
    fail "srt: $(head -3 "$TMP/out")"
expect_status 0 "$GRAPH" transcribe --model "$MODEL" "$TMP/a.wav" --output-format vtt --language en
[ "$(head -1 "$TMP/out")" = "WEBVTT" ] || fail "vtt header: $(head -1 "$TMP/out")"
grep -qE '^00:00:0[0-9]\.[0-9]{3} --> 00:00:0[0-9]\.[0-9]{3}$' "$TMP/out" || fail "vtt: $(head -4 "$TMP/out")"

# two files in one batch, beam search: each equals its transcript alone
for f in a b; do
    expect_status 0 "$GRAPH" transcribe --model "$MODEL" "$TMP/$f.wav" --beam-size 2 \
        --output-format json --output-dir "$TMP/alone"
done
expect_status 0 "$GRAPH" transcribe --model "$MODEL" "$TMP/a.wav" "$TMP/b.wav" --beam-size 2 \
    --batch-size 2 --output-format json --output-dir "$TMP/batch"
expect_in "$TMP/err" "-> $TMP/batch/b.json"
cmp "$TMP/alone/a.json" "$TMP/batch/a.json" || fail "batch a differs"
cmp "$TMP/alone/b.json" "$TMP/batch/b.json" || fail "batch b differs"
cmp -s "$TMP/batch/a.json" "$TMP/batch/b.json" && fail "a and b should differ"

# f16 weights run too; translate and auto language are accepted
expect_status 0 "$GRAPH" transcribe --model "$MODEL" "$TMP/b.wav" --dtype f16 --task translate \
    --language auto --max-len 20
expect_in "$TMP/err" "f16 weights"

# errors name what is wrong
expect_status 2 "$GRAPH" transcribe "$TMP/a.wav"
expect_one_line_error "missing --model"
expect_status 2 "$GRAPH" transcribe --model "$MODEL" "$TMP/a.wav" --output-format doc
expect_one_line_error "--output-format is txt, json, srt or vtt, got 'doc'"
expect_status 2 "$GRAPH" transcribe --model "$MODEL" "$TMP/a.wav" --beam-size 0
expect_one_line_error "--beam-size takes a positive integer"
expect_status 1 "$GRAPH" transcribe --model "$MODEL" "$TMP/missing.wav"
expect_in "$TMP/err" "missing.wav"
expect_status 1 "$GRAPH" transcribe --model "$MODEL" "$TMP/a.wav" --language xx
expect_in "$TMP/err" "unknown language 'xx'"
expect_status 1 "$GRAPH" transcribe --model "$TMP/nowhere" "$TMP/a.wav"
expect_in "$TMP/err" "$TMP/nowhere: not a model directory"
mkdir "$TMP/empty"
expect_status 1 "$GRAPH" transcribe --model "$TMP/empty" "$TMP/a.wav"
expect_in "$TMP/err" "$TMP/empty/config.json"
# a preset means random weights: a clear warning (stopped here by the language)
expect_status 1 "$GRAPH" transcribe --model tiny "$TMP/a.wav" --language xx
expect_in "$TMP/err" "RANDOM weights, the output is meaningless"
echo "transcribe: ok"
