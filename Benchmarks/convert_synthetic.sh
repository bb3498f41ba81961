#!/usr/bin/env bash
# Converts the synthetic full-size blip2-opt-2.7b checkpoint at each precision and reports wall time,
# peak RSS and output size. Usage: Benchmarks/convert_synthetic.sh [WORK_DIR] [PRECISIONS...]
# WORK_DIR (default /tmp/blip2-bench) receives the checkpoint (7.5 GB) and the outputs.
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-/tmp/blip2-bench}
shift || true
precisions=("${@:-q4}")
mkdir -p "$work"
checkpoint="$work/synthetic-fp16"
if [ ! -f "$checkpoint/config.json" ]; then
    python3 Tools/make_synthetic_checkpoint.py "$checkpoint" --tokenizer-dir ../shared/tokenizers/opt
fi
swift build -c release --product blip2-quantize >/dev/null
printf '%-6s %-6s %10s %12s %14s\n' weights zstd seconds "peak RSS MB" "output bytes"
for weights in "${precisions[@]}"; do
    for compress in none zstd; do
        out="$work/synthetic-$weights-$compress.blip2"
        /usr/bin/time -f '%e %M' -o "$work/time.txt" .build/release/blip2-quantize "$checkpoint" --output "$out" \
            --weights "$weights" --compress "$compress" --json > "$work/report-$weights-$compress.json"
        read -r seconds rss_kb < "$work/time.txt"
        printf '%-6s %-6s %10s %12d %14d\n' "$weights" "$compress" "$seconds" $((rss_kb / 1024)) "$(stat -c %s "$out")"
    done
done
