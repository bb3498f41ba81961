#!/usr/bin/env bash
# The README's test command (and .ci/run's): checks (as root: installs) the system packages the tests need
# and the Python test tools in .venv, then runs the Swift test suite, the kernel paths this machine cannot
# run natively (AArch64 NEON/dotprod under qemu-user, AVX-512 through portable intrinsics; Tests/ARM/run.sh),
# `blip2 serve` through the official openai client, headless Chromium and a bounded load (Tests/Server),
# the report's own arithmetic (Tests/Benchmarks) and these set-up scripts themselves (Tests/Setup).
# Arguments go to `swift test` and `swift build` (e.g. --scratch-path).
set -euo pipefail
cd "$(dirname "$0")/.."
source Tools/requirements.sh

# gcc, the AArch64 cross compiler, qemu-user and SIMDe run the kernel paths this machine lacks; ffmpeg makes
# and serves the camera streams the `blip2 watch` tests read; chromium and chromium-driver run the kiosk
# page's browser test and curl the API-key tests (Tests/Server); python3-venv and python3-pip make .venv.
require_swift
require_packages "the tests" "${build_packages[@]}" ffmpeg gcc gcc-aarch64-linux-gnu libc6-dev-arm64-cross \
    qemu-user libsimde-dev chromium chromium-driver curl python3-venv python3-pip
# The server's client-side tests: the official openai client, Selenium, pytest; Hugging Face tokenizers as the
# reference for which chat turns fit the context.
require_venv .venv openai=openai selenium=selenium pytest=pytest tokenizers=tokenizers

swift build "$@"
swift test "$@"
Tests/ARM/run.sh
BLIP2="$(swift build "$@" --show-bin-path)/blip2" .venv/bin/python -m pytest -q Tests/Server Tests/Benchmarks Tests/Setup
