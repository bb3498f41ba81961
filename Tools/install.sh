#!/usr/bin/env bash
# Builds blip2 and blip2-quantize for release with the Swift runtime linked in, so they run on machines
# without a Swift toolchain (only the system libraries: libjpeg, libpng, libzstd, libedit), and installs
# them into PREFIX/bin (default /usr/local) with shell completions, and man pages if generated
# (`swift package generate-manual` first).
#
#   Tools/install.sh                 # /usr/local/bin/blip2, /usr/local/bin/blip2-quantize
#   Tools/install.sh ~/.local        # no root needed; put ~/.local/bin on PATH
#   Tools/install.sh --help
set -euo pipefail
usage="usage: Tools/install.sh [PREFIX]    (default /usr/local; Tools/install.sh ~/.local needs no root)"
case "${1:-}" in
    -h|--help) echo "$usage"; exit 0 ;;
    -*) echo "error: unknown option '$1'" >&2; echo "$usage" >&2; exit 64 ;;
esac
if [ $# -gt 1 ]; then
    echo "error: one PREFIX at most (got $#: $*)" >&2; echo "$usage" >&2; exit 64
fi
prefix="${1:-/usr/local}"
cd "$(dirname "$0")/.."

# Before the build (minutes), not after it: a prefix that cannot be written.
if ! install -d "$prefix/bin" 2>/dev/null || [ ! -w "$prefix/bin" ]; then
    echo "error: cannot write to $prefix/bin: run as root (sudo Tools/install.sh $*) or give a PREFIX you own," \
        "e.g. Tools/install.sh ~/.local" >&2
    exit 1
fi
source Tools/requirements.sh
require_swift
require_packages "building blip2" "${build_packages[@]}"

build=(swift build -c release --static-swift-stdlib)
"${build[@]}" --product blip2
"${build[@]}" --product blip2-quantize
bin="$("${build[@]}" --show-bin-path)"

install -d "$prefix/bin"
for tool in blip2 blip2-quantize; do
    install -m 755 "$bin/$tool" "$prefix/bin/$tool"
    # The point of a static build: nothing from the toolchain is needed at run time.
    if ldd "$prefix/bin/$tool" | grep -E 'libswift|libFoundation|libdispatch|libBlocksRuntime|/opt/swift'; then
        echo "error: $prefix/bin/$tool still needs the Swift runtime libraries above" >&2
        exit 1
    fi
    # Run it with an empty environment, as on a machine that never saw the toolchain.
    env -i LD_LIBRARY_PATH= "$prefix/bin/$tool" --version >/dev/null

    install -d "$prefix/share/bash-completion/completions" "$prefix/share/zsh/site-functions" \
        "$prefix/share/fish/vendor_completions.d"
    "$prefix/bin/$tool" --generate-completion-script bash > "$prefix/share/bash-completion/completions/$tool"
    "$prefix/bin/$tool" --generate-completion-script zsh > "$prefix/share/zsh/site-functions/_$tool"
    "$prefix/bin/$tool" --generate-completion-script fish > "$prefix/share/fish/vendor_completions.d/$tool.fish"

    page=".build/plugins/GenerateManual/outputs/$tool/$tool.1"
    if [ -f "$page" ]; then
        install -d "$prefix/share/man/man1"
        install -m 644 "$page" "$prefix/share/man/man1/$tool.1"
    fi
done
echo "installed blip2 $("$prefix/bin/blip2" --version) and blip2-quantize in $prefix/bin"
