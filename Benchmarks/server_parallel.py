#!/usr/bin/env python3
"""What `blip2 serve --parallel` buys: concurrent requests against one model, timed on this machine.

Two kiosk situations, each measured with the given --parallel and with --parallel 1 (one request at a time,
as before slots existed), on a server started here:

- questions: four visitors ask four questions about one picture that is already encoded (the kiosk's
  camera frame). Each question alone first (the baseline, median), then the four at once (wall time).
- captions: four pictures never seen before, captioned one after another, then four other new pictures
  captioned at once (image encoding is compute-bound and stays serial; the decodes share their steps).

Every request is greedy with exactly --tokens new tokens (EOS held back), so all runs do the same work.
Each answer given concurrently must equal the one the same request gets alone (the command line's answer:
the tests check that the server's equals it). Pictures are synthetic 640x480 PNGs made here.

    python3 Benchmarks/server_parallel.py MODEL [--blip2 .build/release/blip2] [--parallel 4] [--json out.json]

Standard library only. Name the machine (CPU) beside any figure you quote.
"""
import argparse
import http.client
import json
import os
import re
import statistics
import struct
import subprocess
import threading
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUESTIONS = ["what is in the picture?", "what color is the sky?", "how many people are there?", "where was this taken?"]


def png(seed, width=640, height=480):
    """A smooth gradient with hard edges, different for every seed."""
    rows = bytearray()
    for y in range(height):
        rows.append(0)
        for x in range(width):
            rows += bytes(((x * 255 // width + 37 * seed) % 256, (y * 255 // height + 91 * seed) % 256,
                           200 if ((x + 13 * seed) // 40 + y // 40) % 2 == 0 else 30))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(rows), 6)) + chunk(b"IEND", b"")


class Server:
    def __init__(self, blip2, model, parallel):
        self.process = subprocess.Popen([blip2, "serve", model, "--port", "0", "--parallel", str(parallel), "--queue", "16", "--quiet"],
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", self.process.stdout.readline())
        if not match:
            self.process.kill()
            raise SystemExit("blip2 serve did not start")
        self.port = int(match.group(1))

    def post(self, path, fields, image):
        boundary = "blip2-parallel-bench"
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n'
                     f"Content-Type: image/png\r\n\r\n".encode() + image + b"\r\n")
        parts.append(f"--{boundary}--\r\n".encode())
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1800)
        try:
            connection.request("POST", path, body=b"".join(parts), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
        if response.status != 200:
            raise SystemExit(f"{path}: HTTP {response.status}: {body[:300]!r}")
        return json.loads(body)["token_ids"]

    def stop(self):
        self.process.terminate()
        self.process.wait(timeout=120)


def timed(jobs):
    """Runs the callables at once; returns (wall seconds, results in order)."""
    results = [None] * len(jobs)

    def run(i):
        results[i] = jobs[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - start, results


def measure(blip2, model, parallel, tokens):
    server = Server(blip2, model, parallel)
    fixed = {"max_new_tokens": tokens, "min_new_tokens": tokens}
    try:
        frame = png(0)
        server.post("/v1/caption", fixed, frame)   # encodes the frame and keeps it (and warms the model)
        ask = [lambda q=q: server.post("/v1/ask", dict(fixed, question=q), frame) for q in QUESTIONS]
        alone = [timed([job]) for job in ask]
        together_s, together = timed(ask)
        captions_serial = [timed([lambda i=i: server.post("/v1/caption", fixed, png(i))]) for i in range(1, 5)]
        captions_s, captions = timed([lambda i=i: server.post("/v1/caption", fixed, png(i)) for i in range(5, 9)])
        # The same pictures alone, for the outputs (their timing is not used: these encodes hit the cache).
        captions_alone = [server.post("/v1/caption", fixed, png(i)) for i in range(5, 9)]
    finally:
        server.stop()
    return {
        "parallel": parallel,
        "question_alone_s": statistics.median(s for s, _ in alone),
        "four_questions_s": together_s,
        "four_questions_ratio": together_s / statistics.median(s for s, _ in alone),
        "four_captions_serial_s": sum(s for s, _ in captions_serial),
        "four_captions_concurrent_s": captions_s,
        "four_captions_ratio": captions_s / sum(s for s, _ in captions_serial),
        "questions_equal_alone": [r == a[1][0] for r, a in zip(together, alone)],
        "captions_equal_alone": [c == a for c, a in zip(captions, captions_alone)],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model")
    default = os.path.join(ROOT, ".build", "release", "blip2")
    parser.add_argument("--blip2", default=default if os.path.exists(default) else os.path.join(ROOT, ".build", "debug", "blip2"))
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--json")
    args = parser.parse_args()
    rows = [measure(args.blip2, args.model, p, args.tokens) for p in (args.parallel, 1)]
    report = {"model": args.model, "tokens": args.tokens, "cpu": cpu(), "load_before": os.getloadavg(), "rows": rows}
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w") as out:
            out.write(text + "\n")
    if not all(all(r["questions_equal_alone"]) and all(r["captions_equal_alone"]) for r in rows):
        raise SystemExit("an answer given concurrently differs from the same request alone")


def cpu():
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
