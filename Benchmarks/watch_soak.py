#!/usr/bin/env python3
"""Long run of `blip2 watch` on an ffmpeg test pattern: does memory stay flat?

Feeds FRAMES frames of ffmpeg's testsrc (Motion-JPEG) at RATE frames per second into `blip2 watch` on
the demo model, through a pipe (`--source stdin`) or ffmpeg's own HTTP server (`--source http`), and
samples the process's resident memory (VmRSS in /proc) twice a second. The baseline is the RSS once the
first WARMUP frames were seen; the run passes when no later sample is more than 10% above it.

    python3 Benchmarks/watch_soak.py                       # 20,000 frames at 100 fps through a pipe (~3.5 min)
    python3 Benchmarks/watch_soak.py --source http --frames 5000

Needs ffmpeg; standard library only. Prints a Markdown summary; `--json FILE` writes every sample.
"""
import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_bytes(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        return None
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--rate", type=float, default=100, help="frames per second the camera sends")
    parser.add_argument("--size", default="160x120")
    parser.add_argument("--source", choices=["stdin", "http"], default="stdin")
    parser.add_argument("--warmup", type=int, default=1000, help="frames seen before the baseline sample")
    parser.add_argument("--model", default=os.path.join(ROOT, "Models", "demo-q8.blip2"))
    parser.add_argument("--blip2", default=None, help="the executable (default: .build/release/blip2, else .build/debug/blip2)")
    parser.add_argument("--json", help="write the samples and the summary here")
    args = parser.parse_args()

    blip2 = args.blip2
    if blip2 is None:
        for build in ("release", "debug"):
            candidate = os.path.join(ROOT, ".build", build, "blip2")
            if os.path.exists(candidate):
                blip2 = candidate
                break
    if blip2 is None or not os.path.exists(blip2):
        sys.exit("error: no blip2 executable; run `swift build` first or pass --blip2")

    pattern = f"testsrc=size={args.size}:rate={args.rate:g}"
    camera = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-f", "lavfi", "-i", pattern,
              "-frames:v", str(args.frames), "-q:v", "5"]
    watch = [blip2, "watch", args.model, "-", "--json", "--min-change", "0"]
    if args.source == "stdin":
        feeder = subprocess.Popen(camera + ["-f", "mjpeg", "-"], stdout=subprocess.PIPE)
        process = subprocess.Popen(watch, stdin=feeder.stdout, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        feeder.stdout.close()
    else:
        url = f"http://127.0.0.1:{free_port()}/cam"
        feeder = subprocess.Popen(camera + ["-f", "mpjpeg", "-listen", "1", url])
        watch[3] = url
        process = subprocess.Popen(watch, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    state = {"lines": 0, "seen": 0}
    stderr_lines = []

    def read_stdout():
        for line in process.stdout:
            state["lines"] += 1
            state["seen"] = json.loads(line)["frames_seen"]

    def read_stderr():
        for line in process.stderr:
            stderr_lines.append(line.rstrip("\n"))
            if args.source == "http" and "the server ended the stream" in line:
                process.terminate()  # ffmpeg's server serves one client once: the stream is over

    threads = [threading.Thread(target=read_stdout, daemon=True), threading.Thread(target=read_stderr, daemon=True)]
    for thread in threads:
        thread.start()

    samples = []
    started = time.monotonic()
    deadline = started + args.frames / args.rate * 3 + 120
    while process.poll() is None:
        rss = rss_bytes(process.pid)
        if rss is not None:
            samples.append({"t": round(time.monotonic() - started, 2), "frames_seen": state["seen"], "captions": state["lines"], "rss": rss})
        if time.monotonic() > deadline:
            process.kill()
            sys.exit("error: the run took far longer than the frames should; killed")
        time.sleep(0.5)
    for thread in threads:
        thread.join(timeout=5)
    feeder.wait(timeout=30)

    after = [s for s in samples if s["frames_seen"] >= args.warmup]
    if not after:
        sys.exit(f"error: never reached {args.warmup} frames; stderr: {stderr_lines[-5:]}")
    baseline = after[0]["rss"]
    peak = max(s["rss"] for s in after)
    last = after[-1]["rss"]
    totals = next((line for line in reversed(stderr_lines) if " frames: " in line), None)
    if totals is None:
        sys.exit(f"error: blip2 watch ended with status {process.returncode} and no totals line; stderr: {stderr_lines[-10:]}")
    flat = peak <= baseline * 1.10
    summary = {
        "executable": blip2, "source": args.source, "frames": args.frames, "rate": args.rate, "size": args.size,
        "seconds": round(time.monotonic() - started, 1), "captions": state["lines"], "totals": totals,
        "rss_at_warmup": baseline, "rss_peak_after_warmup": peak, "rss_last": last,
        "rss_first_sample": samples[0]["rss"] if samples else None, "peak_over_baseline": round(peak / baseline, 4), "flat": flat,
    }
    mb = lambda b: f"{b / 1e6:.1f} MB"
    print(f"| source | frames | rate | captions | seconds | RSS at {args.warmup} frames | peak after | last | peak / baseline |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {args.source} | {args.frames} | {args.rate:g}/s | {state['lines']} | {summary['seconds']} | {mb(baseline)} | {mb(peak)} | {mb(last)} | {peak / baseline:.3f} |")
    print()
    print(totals)
    print("flat (within 10%):", "yes" if flat else "NO")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"summary": summary, "samples": samples}, out, indent=1)
    sys.exit(0 if flat else 1)


if __name__ == "__main__":
    main()
