"""Benchmarks/report.py's own arithmetic: the performance-goal verdicts and the reading of blip2-kernel-bench."""
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "Benchmarks"))
import report  # noqa: E402

BIN = pathlib.Path(os.environ.get("BLIP2", ROOT / ".build" / "debug" / "blip2")).parent


def row(name, vision, qformer, caption, fraction=None, file_bytes=None, rss=None, process=None):
    return {"name": name, "stages": {"vision": vision, "qformer_projection": qformer, "caption": caption},
            "bandwidth_fraction": fraction, "file_bytes": file_bytes, "peak_rss_bytes": rss, "process_caption_ms": process}


def verdicts(rows, scaling=None, kernels=None, threads=2):
    return {goal.split(" (")[0].split(" <=")[0].split(" >=")[0]: (measured, met)
            for goal, measured, met in report.goals(rows, scaling, kernels or {}, threads)}


def test_goals_against_hand_computed_ratios():
    rows = [
        # encode 1300 + 100 = 1400 ms against PyTorch's 2000: 0.70x, on the boundary, met.
        row("q8", 1300, 100, 9000, fraction=0.80, file_bytes=4_000_000_000, rss=4_300_000_001),
        # 3599 / 6000 = 0.5998x: met; 1 / 0.79 = 1.266x the floor: not met.
        row("q4", 900, 100, 5000, fraction=0.79, file_bytes=2_000_000_000, rss=2_300_000_000, process=3599),
        row("pytorch int8 dynamic", 1900, 100, 6000),
    ]
    scaling = {"variant": "q8", "threads": 2, "one_thread_ms": {"vision": 1800, "prefill": 1000},
               "threads_ms": {"vision": 1000, "prefill": 556}}
    kernels = {2: {"peak": 200.0, "q8p": 110.0, "q4p": 93.0}}
    v = verdicts(rows, scaling, kernels)
    assert v["q8 product"] == ("110.0 of 200.0 GOP/s = 55%", True)
    assert v["q4 product within 15% of q8"][1] is False          # 93 < 0.85 x 110 = 93.5
    assert v["image encode"] == ("1400 / 2000 ms = 0.70x", True)
    assert v["q4 caption, whole process,"][1] is True
    assert v["decode"] == ("1.27x the floor", False)            # the last decode line is q4's
    assert v["vision 1 -> 2 threads"] == ("1.80x", True)
    assert v["prefill 1 -> 2 threads"][1] is False               # 1000 / 556 = 1.7986
    assert v["peak RSS"] == ("file + 300 MB", True)              # q4: exactly 300 MB over the file
    goals = report.goals(rows, scaling, kernels, 2)
    q8_rss = [met for goal, _, met in goals if goal.startswith("peak RSS (q8)")]
    assert q8_rss == [False]                                     # one byte over 300 MB


def test_goals_leave_out_what_was_not_measured():
    # No PyTorch rows, no kernels, no scaling: only decode and memory can be judged.
    goals = report.goals([row("q4", 900, 100, 5000, fraction=0.9, file_bytes=10, rss=20)], None, {}, 2)
    assert [goal for goal, _, _ in goals] == ["decode (q4) within 1.25x of the read-bandwidth floor",
                                            "peak RSS (q4) <= file + 300 MB"]


def test_kernel_bench_output_is_read():
    bench = BIN / "blip2-kernel-bench"
    assert bench.exists(), f"{bench} is missing: build the package first (swift build)"
    shares = report.kernel_shares(BIN, 2, shape="64x64x5")
    assert set(shares) == {1, 2}
    for figures in shares.values():
        assert set(figures) == {"peak", "q8p", "q4p"}
        assert all(value > 0 for value in figures.values())
