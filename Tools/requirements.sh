# Sourced by Tools/demo.sh and Tools/test.sh (not run on its own): checks the Debian/Ubuntu packages and the
# Python test tools a command needs before it starts, so a fresh machine fails at once with the line to run
# rather than half-way through a build or a test run.

# require_swift: the toolchain itself cannot come from apt on every release, so it is only checked.
require_swift() {
    if ! command -v swift >/dev/null 2>&1; then
        echo "error: swift not found: install a Swift 6 toolchain (https://www.swift.org/install/linux/) and put it on PATH" >&2
        exit 1
    fi
}

# require_packages WHAT PACKAGE...: installs the missing packages when running as root (as CI does), and
# otherwise stops with the exact apt-get line to run. WHAT says what needs them.
require_packages() {
    local what=$1
    shift
    if ! command -v dpkg-query >/dev/null 2>&1; then
        echo "note: not a Debian/Ubuntu system; $what needs these packages (or your system's equivalents): $*" >&2
        return 0
    fi
    local missing=() p
    for p in "$@"; do
        # "install ok installed", not merely known to dpkg (a package left unpacked or removed is missing).
        [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing system packages for $what: ${missing[*]}" >&2
        echo "       install them, then run this again:" >&2
        echo "" >&2
        echo "    sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
        echo "" >&2
        exit 1
    fi
    echo "installing for $what: ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" </dev/null
}

# The system packages the build links against (Package.swift's system-library targets).
build_packages=(pkg-config libjpeg-dev libpng-dev libzstd-dev libedit-dev)

# require_venv DIR MODULE=PACKAGE...: a virtual environment at DIR holding the Python packages (imported as
# MODULE, installed as PACKAGE); made or completed with pip when something is missing. Debian refuses
# `pip install` outside a virtual environment (externally-managed-environment), hence DIR.
require_venv() {
    local venv=$1
    shift
    local modules=() packages=() spec
    for spec in "$@"; do
        modules+=("${spec%%=*}")
        packages+=("${spec#*=}")
    done
    local check='import importlib.util, sys; sys.exit(any(importlib.util.find_spec(m) is None for m in sys.argv[1:]))'
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" "${modules[@]}" >/dev/null 2>&1; then
        return 0
    fi
    if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        rm -rf "$venv"
        if ! python3 -m venv "$venv" >/dev/null 2>&1; then
            rm -rf "$venv"
            echo "error: python3 -m venv $venv failed: the test tools need Python 3 with venv and pip" >&2
            echo "       (Debian/Ubuntu: sudo apt-get update && sudo apt-get install -y python3-venv python3-pip)" >&2
            exit 1
        fi
    fi
    echo "installing into $venv: ${packages[*]}" >&2
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "${packages[@]}" </dev/null; then
        echo "error: pip could not install the test tools; with network access to PyPI, run:" >&2
        echo "" >&2
        echo "    $venv/bin/python -m pip install ${packages[*]}" >&2
        echo "" >&2
        exit 1
    fi
}
