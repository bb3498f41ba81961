#!/usr/bin/env bash
# The README's first command: checks (as root: installs) the system packages the build needs, builds both
# tools for release, and captions the bundled examples with the demo model.
#
#   Tools/demo.sh            # then try .build/release/blip2 ask / chat / serve (README)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -gt 0 ]; then
    echo "usage: Tools/demo.sh (no arguments: builds for release and captions Models/examples/*.png)" >&2
    [ "$1" = "-h" ] || [ "$1" = "--help" ] && exit 0
    exit 64
fi
source Tools/requirements.sh

require_swift
require_packages "building blip2" "${build_packages[@]}"
swift build -c release
.build/release/blip2 caption Models/demo-q8.blip2 Models/examples/*.png
