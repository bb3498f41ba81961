#!/usr/bin/env python3
"""How long `blip2 serve` takes to refuse a multipart body built against boundary searches.

A body of 4 MiB of '-' with a 68-byte boundary of 67 '-' and an 'x' makes a naive search restart at every
byte (it was the server's slowest refusal); an ordinary 4 MiB upload of random bytes, refused as not an
image, is the yardstick. Both go to /v1/caption on a server started here; the best of RUNS is reported
for each, with their ratio. A linear search keeps the ratio near 1; the naive one made it tens.

    python3 Benchmarks/hostile_multipart.py                 # .build/release/blip2 if built, else debug
    python3 Benchmarks/hostile_multipart.py --runs 20 --blip2 .build/release/blip2

Standard library only. Prints one JSON object; name the machine (CPU) beside any figure you quote.
"""
import argparse
import http.client
import json
import os
import re
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BODY_BYTES = 4 << 20


def bodies():
    boundary = "-" * 67 + "x"
    hostile = b"-" * BODY_BYTES
    plain_boundary = "blip2-bench-boundary"
    head = (f"--{plain_boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"noise.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()
    tail = f"\r\n--{plain_boundary}--\r\n".encode()
    noise = os.urandom(BODY_BYTES - len(head) - len(tail))
    return {"hostile": (hostile, boundary), "ordinary": (head + noise + tail, plain_boundary)}


def refuse_seconds(port, body, boundary):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    try:
        started = time.perf_counter()
        connection.request("POST", "/v1/caption", body=body,
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        response = connection.getresponse()
        response.read()
        seconds = time.perf_counter() - started
    finally:
        connection.close()
    if response.status != 400:
        raise SystemExit(f"expected a 400, got {response.status}")
    return seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--model", default=os.path.join(ROOT, "Models", "demo-q8.blip2"))
    parser.add_argument("--blip2", default=None, help="the executable (default: .build/release/blip2, else .build/debug/blip2)")
    args = parser.parse_args()
    blip2 = args.blip2 or next(path for path in (os.path.join(ROOT, ".build", build, "blip2") for build in ("release", "debug"))
                               if os.path.exists(path))
    server = subprocess.Popen([blip2, "serve", args.model, "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    try:
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", server.stdout.readline())
        if not match:
            raise SystemExit("blip2 serve did not start")
        port = int(match.group(1))
        best = {}
        for name, (body, boundary) in bodies().items():
            best[name] = min(refuse_seconds(port, body, boundary) for _ in range(args.runs))
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(json.dumps({"blip2": blip2, "body_bytes": BODY_BYTES, "runs": args.runs,
                      "hostile_ms": round(1000 * best["hostile"], 1), "ordinary_ms": round(1000 * best["ordinary"], 1),
                      "ratio": round(best["hostile"] / best["ordinary"], 2)}))


if __name__ == "__main__":
    main()
