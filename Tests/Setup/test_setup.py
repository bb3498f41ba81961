"""The set-up scripts (Tools/demo.sh, Tools/test.sh, Tools/install.sh) on a machine that lacks things.

Each runs from a copy of Tools/ in a scratch tree, with stand-ins on PATH for the system commands it asks
(`id`, `dpkg-query`, `apt-get`, `swift`, `python3`): they report what the test says is installed or who
the user is, and record how they were called, so the scripts are checked without touching this machine.
"""
import os
import pathlib
import shutil
import stat
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

# Every stand-in appends "name arguments" to $CALLS.
STANDINS = {
    "id": 'echo "id $*" >> "$CALLS"; [ "$1" = -u ] && echo "${FAKE_UID:-0}"',
    # Installed unless named in $MISSING (spaces around each name).
    "dpkg-query": 'pkg="${!#}"; case " $MISSING " in *" $pkg "*) exit 1 ;; esac; printf "install ok installed"',
    "apt-get": 'echo "apt-get $*" >> "$CALLS"',
    "swift": 'echo "swift $*" >> "$CALLS"; [ "${!#}" = --show-bin-path ] && echo "$PWD/.build/debug"; exit 0',
    # `python3 -m venv DIR` fails when $NO_VENV is set, otherwise makes DIR/bin/python, itself a stand-in
    # whose imports fail, whose pip exists and whose `pip install` fails when $NO_PYPI is set.
    "python3": r'''echo "python3 $*" >> "$CALLS"
[ -n "${NO_VENV:-}" ] && exit 1
mkdir -p "$3/bin"
cat > "$3/bin/python" <<'INNER'
#!/bin/bash
echo "venv-python $*" >> "$CALLS"
case "$1 $2 ${3:-}" in
    "-m pip --version") exit 0 ;;
    "-m pip install") [ -n "${NO_PYPI:-}" ] && exit 1; exit 0 ;;
    "-m pytest"*) exit 0 ;;
esac
exit 1
INNER
chmod +x "$3/bin/python"''',
}


@pytest.fixture
def tree(tmp_path):
    """A scratch checkout: Tools/ copied, a stand-in release blip2 and Tests/ARM/run.sh, and the stand-in bin."""
    shutil.copytree(ROOT / "Tools", tmp_path / "Tools", ignore=shutil.ignore_patterns("*.py", "*.service", "*.md"))
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    bins = tmp_path / "standins"
    bins.mkdir()
    scripts = dict(STANDINS)
    scripts[".build/release/blip2"] = 'echo "blip2 $*" >> "$CALLS"'
    scripts["Tests/ARM/run.sh"] = 'echo "arm $*" >> "$CALLS"'
    scripts["Tools/fuzz.sh"] = 'echo "fuzz $*" >> "$CALLS"'
    for name, body in scripts.items():
        path = (tmp_path / name) if "/" in name else bins / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/bash\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return tmp_path


def run(tree, script, *args, uid=0, missing=(), **env):
    calls = tree / "calls.log"
    calls.write_text("")
    environment = {"PATH": f"{tree / 'standins'}:/usr/bin:/bin", "CALLS": str(calls), "FAKE_UID": str(uid),
                   "MISSING": " ".join(missing), "HOME": str(tree), **env}
    result = subprocess.run(["/bin/bash", str(tree / script), *args], capture_output=True, text=True, env=environment,
                            stdin=subprocess.DEVNULL, timeout=60)
    return result, calls.read_text().splitlines()


def test_demo_without_root_names_the_apt_line_and_builds_nothing(tree):
    result, calls = run(tree, "Tools/demo.sh", uid=1000, missing=("libedit-dev", "libzstd-dev"))
    assert result.returncode == 1
    assert "sudo apt-get update && sudo apt-get install -y libzstd-dev libedit-dev" in result.stderr
    assert not [c for c in calls if c.startswith(("swift build", "apt-get", "blip2"))]


def test_demo_as_root_installs_then_builds_and_captions(tree):
    result, calls = run(tree, "Tools/demo.sh", uid=0, missing=("libpng-dev",))
    assert result.returncode == 0, result.stderr
    assert calls.index("apt-get update -qq") < calls.index("apt-get install -y -qq libpng-dev")
    assert calls.index("apt-get install -y -qq libpng-dev") < calls.index("swift build -c release")
    assert calls[-1].startswith("blip2 caption Models/demo-q8.blip2 Models/examples/")


def test_demo_with_everything_installed_asks_apt_nothing(tree):
    result, calls = run(tree, "Tools/demo.sh", uid=0)
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c.startswith("apt-get")]


def test_demo_without_swift(tree):
    (tree / "standins" / "swift").unlink()
    # Only dirname beside the stand-ins, so a toolchain in /usr/bin is not found either.
    (tree / "standins" / "dirname").symlink_to(shutil.which("dirname"))
    result, _ = run(tree, "Tools/demo.sh", PATH=f"{tree / 'standins'}")
    assert result.returncode == 1
    assert "error: swift not found" in result.stderr and "swift.org/install" in result.stderr


def test_tests_without_root_name_curl_venv_pip_and_chromium(tree):
    missing = ("curl", "python3-venv", "python3-pip", "chromium-driver")
    result, calls = run(tree, "Tools/test.sh", uid=1000, missing=missing)
    assert result.returncode == 1
    assert "sudo apt-get update && sudo apt-get install -y chromium-driver curl python3-venv python3-pip" \
        in result.stderr
    assert not [c for c in calls if c.startswith(("swift build", "swift test", "python3"))]


def test_tests_make_the_venv_with_the_four_tools_then_run_everything_in_order(tree):
    result, calls = run(tree, "Tools/test.sh", uid=0)
    assert result.returncode == 0, result.stderr
    assert "python3 -m venv .venv" in calls
    assert "venv-python -m pip install --quiet --disable-pip-version-check openai selenium pytest tokenizers" in calls
    steps = [c for c in calls if c.startswith(("swift build", "swift test", "arm", "venv-python -m pytest"))]
    assert steps == ["swift build", "swift test", "arm ", "swift build --show-bin-path",
                     "venv-python -m pytest -q Tests/Server Tests/Benchmarks Tests/Setup"]


def test_tests_without_venv_module(tree):
    result, calls = run(tree, "Tools/test.sh", uid=0, NO_VENV="1")
    assert result.returncode == 1
    assert "sudo apt-get update && sudo apt-get install -y python3-venv python3-pip" in result.stderr
    assert not (tree / ".venv").exists()
    assert not [c for c in calls if c.startswith("swift test")]


def test_tests_without_pypi_give_the_pip_line(tree):
    result, _ = run(tree, "Tools/test.sh", uid=1000, NO_PYPI="1")
    assert result.returncode == 1
    assert ".venv/bin/python -m pip install openai selenium pytest tokenizers" in result.stderr


def test_ci_runs_the_test_command_then_fuzzes(tree):
    result, calls = run(tree, ".ci/run", uid=0, missing=("g++",), CI="true")
    assert result.returncode == 0, result.stderr
    assert "venv-python -m pytest -q Tests/Server Tests/Benchmarks Tests/Setup" in calls
    assert calls.index("apt-get install -y -qq g++") < calls.index("fuzz all 30")
    # Then both sanitizer builds, each in its own folder, before the fuzzers.
    tsan = calls.index("swift build --build-tests --build-path .build-tsan --sanitize=thread")
    asan = next(i for i, c in enumerate(calls) if c.startswith("swift build --build-tests --build-path .build-asan --sanitize=address"))
    pytest_call = calls.index("venv-python -m pytest -q Tests/Server Tests/Benchmarks Tests/Setup")
    assert pytest_call < tsan < asan < calls.index("fuzz all 30")


def test_install_help_prints_usage_and_builds_nothing(tree):
    result, calls = run(tree, "Tools/install.sh", "--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: Tools/install.sh [PREFIX]")
    assert not (tree / "--help").exists() and not [c for c in calls if c.startswith("swift")]


def test_install_refuses_an_unwritable_prefix_before_building(tree):
    (tree / "a-file").write_text("")
    result, calls = run(tree, "Tools/install.sh", str(tree / "a-file" / "prefix"))
    assert result.returncode == 1
    assert f"error: cannot write to {tree}/a-file/prefix/bin" in result.stderr
    assert "Tools/install.sh ~/.local" in result.stderr
    assert not [c for c in calls if c.startswith("swift")]


def test_install_refuses_an_unknown_option(tree):
    result, calls = run(tree, "Tools/install.sh", "--prefix=/opt")
    assert result.returncode == 64
    assert "error: unknown option '--prefix=/opt'" in result.stderr and "usage:" in result.stderr
    assert not calls
