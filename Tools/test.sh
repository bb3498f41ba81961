#!/usr/bin/env bash
# The README's test command: the Swift test suite, then the kernel paths this machine cannot run natively
# (AArch64 NEON/dotprod under qemu-user, AVX-512 through portable intrinsics; Tests/ARM/run.sh), then
# `blip2 serve` through the official openai client, headless Chromium and a bounded load (Tests/Server), and
# the report's own arithmetic (Tests/Benchmarks).
# Arguments go to `swift test` and `swift build --show-bin-path` (e.g. --scratch-path).
set -euo pipefail
cd "$(dirname "$0")/.."
swift test "$@"
Tests/ARM/run.sh
BLIP2="$(swift build "$@" --show-bin-path)/blip2" python3 -m pytest -q Tests/Server Tests/Benchmarks
