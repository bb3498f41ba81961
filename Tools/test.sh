#!/usr/bin/env bash
# The README's test command: the Swift test suite, then the kernel paths this machine cannot run natively
# (AArch64 NEON/dotprod under qemu-user, AVX-512 through portable intrinsics; Tests/ARM/run.sh).
# Arguments go to `swift test` (e.g. --scratch-path).
set -euo pipefail
cd "$(dirname "$0")/.."
swift test "$@"
Tests/ARM/run.sh
