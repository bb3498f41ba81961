#!/usr/bin/env bash
# The tests of the concurrent targets (the worker pool and compute context, the pipeline, the watcher, the
# server's parts) under ThreadSanitizer, and those of the kernels and the readers of untrusted bytes (model
# files, images, tokenizers, the fuzz seeds) under AddressSanitizer and UndefinedBehaviorSanitizer. Each
# sanitizer builds in a folder of its own (.build-tsan, .build-asan); any report fails the run.
#
#     Tools/sanitizers.sh            # both
#     Tools/sanitizers.sh thread     # or: memory
set -euo pipefail
cd "$(dirname "$0")/.."

which=${1:-all}
case "$which" in
    all|thread|memory) ;;
    *) echo "usage: Tools/sanitizers.sh [thread|memory]" >&2; exit 64 ;;
esac

thread_tests='WorkerPool|ComputeContext|Blip2WatchTests|Blip2PipelineTests|Blip2ServerTests.PartsTests|CameraPartsTests|JSONSyntax|Blip2CoreTests'
memory_tests='Blip2KernelTests|Blip2CoreTests|Blip2ModelFileTests|Blip2ImageTests|Blip2TokenizerTests|Blip2FuzzTests'

# run NAME FILTER FLAGS...: builds the tests with FLAGS, runs those matching FILTER, and fails on a test
# failure or on any sanitizer report (UBSan and TSan keep going after a report unless told otherwise).
run() {
    local name=$1 filter=$2
    shift 2
    local log=".build-$name/sanitizer.log"
    echo "== $name sanitizer: building"
    swift build --build-tests --build-path ".build-$name" "$@"
    echo "== $name sanitizer: $filter"
    mkdir -p ".build-$name"
    if ! swift test --skip-build --build-path ".build-$name" "$@" --filter "$filter" >"$log" 2>&1; then
        grep -E "WARNING: ThreadSanitizer|ERROR: AddressSanitizer|runtime error:|✘|error:" "$log" | head -40 >&2 || true
        echo "error: tests under the $name sanitizer failed (whole output: $log)" >&2
        exit 1
    fi
    if grep -qE "WARNING: ThreadSanitizer|ERROR: AddressSanitizer|runtime error:" "$log"; then
        grep -E -A12 "WARNING: ThreadSanitizer|ERROR: AddressSanitizer|runtime error:" "$log" | head -60 >&2
        echo "error: the $name sanitizer reported a problem (whole output: $log)" >&2
        exit 1
    fi
    grep -E "Test run with|Executed [0-9]+ tests" "$log" | tail -2 || true
}

if [ "$which" = all ] || [ "$which" = thread ]; then
    TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1" run tsan "$thread_tests" --sanitize=thread
fi
if [ "$which" = all ] || [ "$which" = memory ]; then
    # Leaks are the fuzzers' business (Tools/fuzz.sh); here: out-of-bounds, use after free, and undefined
    # behaviour in the C targets (swiftc has no UBSan on Linux; Swift itself traps on overflow and bounds),
    # where a report aborts the test process.
    ASAN_OPTIONS="detect_leaks=0" UBSAN_OPTIONS="print_stacktrace=1" \
        run asan "$memory_tests" --sanitize=address -Xcc -fsanitize=undefined -Xcc -fno-sanitize-recover=undefined \
            -Xswiftc -Xclang-linker -Xswiftc -fsanitize=undefined
fi
