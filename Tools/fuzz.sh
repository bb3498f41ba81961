#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer (AddressSanitizer + coverage instrumentation).
#
#   Tools/fuzz.sh TARGET SECONDS [libFuzzer arguments...]   fuzz one target (Tools/fuzz.sh --list)
#   Tools/fuzz.sh all SECONDS                               each target in turn, SECONDS each
#
# Builds blip2-fuzz into .build-fuzz (release, -sanitize=address, -D BLIP2_FUZZING, libFuzzer without its
# main), then fuzzes from the committed seeds (Tests/Fuzz/corpus/TARGET) and the inputs earlier runs
# found (.build-fuzz/corpus/TARGET). An input that crashes, hangs (-timeout), leaks or takes too much
# memory (-rss_limit_mb / -malloc_limit_mb) ends the run with a non-zero status and is saved under
# .build-fuzz/crashes/TARGET/; once fixed, commit it to Tests/Fuzz/crashes/TARGET/, which the test
# suite replays. Logs with the final statistics: .build-fuzz/logs/TARGET.log.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: Tools/fuzz.sh TARGET|all SECONDS [libFuzzer arguments...]; Tools/fuzz.sh --list" >&2; exit 64; }
scratch=.build-fuzz
binary=$scratch/release/blip2-fuzz

build() {
    local arch runtime
    arch=$(uname -m)
    # libFuzzer ships with the toolchain's clang runtime; the no-main variant leaves main to blip2-fuzz.
    runtime=$(find "$(dirname "$(readlink -f "$(command -v swiftc)")")/.." -name "libclang_rt.fuzzer_no_main-$arch.a" 2>/dev/null | head -n 1)
    [ -n "$runtime" ] || { echo "fuzz.sh: libclang_rt.fuzzer_no_main-$arch.a not found in the Swift toolchain" >&2; exit 1; }
    swift build -c release --product blip2-fuzz --scratch-path "$scratch" \
        -Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,trace-cmp,inline-8bit-counters,pc-table \
        -Xswiftc -DBLIP2_FUZZING -Xcc -fsanitize=address,fuzzer-no-link \
        -Xlinker "$runtime" -Xlinker -lstdc++ 2>&1 | grep -v "Cannot export local symbol" >&2
}

# Longest input per target: the seeds' size with room to grow (longer inputs only slow each run).
max_len() {
    case $1 in
        model-file|checkpoint) echo 65536 ;;
        jpeg|tokenizer|mjpeg) echo 32768 ;;
        t5-tokenizer) echo 49152 ;;
        png|imatrix) echo 16384 ;;
        *) echo 8192 ;;
    esac
}

fuzz() {
    local target=$1 seconds=$2; shift 2
    local corpus=$scratch/corpus/$target crashes=$scratch/crashes/$target log=$scratch/logs/$target.log
    mkdir -p "$corpus" "$crashes" "$(dirname "$log")"
    echo "fuzzing $target for $seconds s (log: $log)" >&2
    local status=0
    # The Swift runtime's own crash reporter would catch the trap first; libFuzzer must, to save the input.
    SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1} \
        "$binary" "$target" "$corpus" "Tests/Fuzz/corpus/$target" -max_total_time="$seconds" -timeout=20 \
        -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len="$(max_len "$target")" -artifact_prefix="$crashes/" \
        -print_final_stats=1 "$@" >"$log" 2>&1 || status=$?
    # The last status line (executions, coverage, corpus), then the final statistics or the failure.
    grep -E "^#[0-9]+" "$log" | tail -n 1 | sed "s/^/  $target: /" >&2 || true
    grep -E "^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|==[0-9]+==ERROR|SUMMARY|Done )" "$log" \
        | sed "s/^/  $target: /" >&2 || true
    if [ "$status" -ne 0 ]; then
        echo "fuzz.sh: $target failed (status $status); inputs: $(ls "$crashes" | tr '\n' ' ')" >&2
    fi
    return "$status"
}

[ $# -ge 1 ] || usage
if [ "$1" = "--list" ]; then
    swift run -q blip2-fuzz --list
    exit 0
fi
[ $# -ge 2 ] || usage
target=$1 seconds=$2; shift 2
build
if [ "$target" = "all" ]; then
    failed=0
    for t in $("$binary" --list); do fuzz "$t" "$seconds" "$@" || failed=1; done
    exit "$failed"
fi
fuzz "$target" "$seconds" "$@"
