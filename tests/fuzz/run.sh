#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for SECONDS.
#   tests/fuzz/run.sh [SECONDS=60] [BUILD_DIR=/tmp/tg-fuzz]
# Seeds come from tests/data and tests/fuzz/seeds; new corpus entries go to
# BUILD_DIR/corpus. A crash stops the script with libFuzzer's exit status
# and leaves the reproducer (crash-*) in BUILD_DIR.
set -euo pipefail
secs=${1:-60}
build=${2:-/tmp/tg-fuzz}
here=$(cd "$(dirname "$0")" && pwd)
data=$here/../data

CC=${CC:-clang} cmake -S "$here" -B "$build" >/dev/null
cmake --build "$build" -j2

run() {
  local name=$1
  shift
  mkdir -p "$build/corpus/$name"
  echo "== fuzz_$name for ${secs}s"
  (cd "$build" && "./fuzz_$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 "corpus/$name" "$@")
}

run safetensors "$here/seeds/safetensors"
run config "$data/whisper_tiny"
run tokenizer "$data/tokenizer"
run encode "$here/seeds/encode"
run npy "$data"
echo "all fuzz targets ran ${secs}s without a crash"
