#!/usr/bin/env bash
# Runs the kernel paths this machine cannot run natively, from the package's own kernel sources:
#   - AArch64: cross-compiled with aarch64-linux-gnu-gcc, run under qemu-aarch64 as a Cortex-A72 (NEON,
#     Raspberry Pi 4) and a Cortex-A76 (NEON + dotprod, Raspberry Pi 5);
#   - x86 AVX2 and AVX-512 VNNI: compiled against SIMDe's portable intrinsics (libsimde-dev) and run here.
# Every run compares each kernel with the scalar reference (Tests/ARM/kernel_harness.c). Missing tools
# are an error, never a skip. The last line reads "ARM-kernels: N passed, M failed".
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
kernels="$root/Sources/CKernels"
harness="$root/Tests/ARM/kernel_harness.c"
sources=("$kernels/kernels.c" "$kernels/kernels_ref.c" "$kernels/cpu.c" "$kernels/fp16.c" "$kernels/types.c" "$kernels/quant.c" "$kernels/kquants.c")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

missing=()
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=("aarch64-linux-gnu-gcc (apt: gcc-aarch64-linux-gnu)")
command -v qemu-aarch64 >/dev/null || missing+=("qemu-aarch64 (apt: qemu-user)")
command -v gcc >/dev/null || missing+=("gcc (apt: gcc)")
[ -f /usr/include/simde/x86/avx512.h ] || missing+=("SIMDe headers (apt: libsimde-dev)")
if [ ${#missing[@]} -gt 0 ]; then
    echo "error: the cross-architecture kernel tests need: ${missing[*]}" >&2
    echo "       install them (.ci/run does) and run again" >&2
    exit 1
fi

total_passed=0
total_failed=0
# Runs one harness binary, echoes its output, and adds its closing counts to the totals.
run() {
    local output status=0
    output="$("$@" 2>&1)" || status=$?
    echo "$output" | grep -v ': [0-9]* passed, [0-9]* failed$' || true
    local counts
    counts="$(echo "$output" | sed -n 's/^.*: \([0-9]*\) passed, \([0-9]*\) failed$/\1 \2/p' | tail -1)"
    if [ -z "$counts" ]; then
        echo "error: '$*' ended without a result line (exit status $status)" >&2
        total_failed=$((total_failed + 1))
        return
    fi
    total_passed=$((total_passed + ${counts% *}))
    total_failed=$((total_failed + ${counts#* }))
    if [ "$status" -ne 0 ] && [ "${counts#* }" -eq 0 ]; then total_failed=$((total_failed + 1)); fi
}

aarch64-linux-gnu-gcc -O2 -Wall -Wextra -Werror -I"$kernels/include" -I"$kernels" -o "$work/harness-arm64" \
    "$harness" "${sources[@]}" "$kernels/kernels_neon.c" "$kernels/kernels_dotprod.c" -lm
gcc -O2 -w -Wno-psabi -DBLIP2_X86_EMULATED -I"$kernels/include" -I"$kernels" -I"$root/Tests/ARM" -o "$work/harness-x86-emulated" \
    "$harness" "${sources[@]}" "$kernels/kernels_avx2.c" "$kernels/kernels_avx512.c" -lm

# The package itself is built by clang (SwiftPM) on a Raspberry Pi: its target pragmas must compile there too.
if command -v clang >/dev/null; then
    for f in kernels.c kernels_ref.c kernels_neon.c kernels_dotprod.c; do
        clang --target=aarch64-linux-gnu -isystem /usr/aarch64-linux-gnu/include -O2 -Wall -Wextra -Werror \
            -I"$kernels/include" -I"$kernels" -c "$kernels/$f" -o "$work/clang-$f.o"
    done
    echo "clang, aarch64: kernel sources compile"
fi

echo "Cortex-A72 (NEON):"
run qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a72 "$work/harness-arm64" neon
echo "Cortex-A76 (NEON, dotprod):"
run qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu cortex-a76 "$work/harness-arm64" neon dotprod
echo "x86 AVX2 and AVX-512 VNNI through portable intrinsics:"
x86_before_passed=$total_passed x86_before_failed=$total_failed
run "$work/harness-x86-emulated" --emulated avx2 avx512
echo "x86 kernels (emulated): $((total_passed - x86_before_passed)) checks passed, $((total_failed - x86_before_failed)) failed"
echo "ARM-kernels: $((x86_before_passed)) passed, $((x86_before_failed)) failed"
[ "$total_failed" -eq 0 ]
