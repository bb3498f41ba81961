"""Bounded load on loopback: 2,000 requests from 16 concurrent clients on the demo model.

Only 503s carrying Retry-After may fail; the server's resident memory at request 2,000 must be within 10%
of what it was at request 500. `LOAD_REPORT=path` writes the figures (docs/SERVER.md quotes them).
"""
import http.client
import json
import os
import statistics
import threading
import time
import uuid

from conftest import EXAMPLES, Server

REQUESTS = 2000
CLIENTS = 16
IMAGES = sorted(EXAMPLES.glob("*.png"))


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def multipart(fields, image):
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{image.name}"\r\n'
                 f'Content-Type: image/png\r\n\r\n'.encode() + image.read_bytes() + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def test_load():
    server = Server("--queue", str(CLIENTS))
    host, port = server.url.removeprefix("http://").split(":")
    bodies = []
    for i, image in enumerate(IMAGES):
        bodies.append(("/v1/caption", *multipart({}, image)))
        bodies.append(("/v1/ask", *multipart({"question": "how many objects are there?"}, image)))
    lock = threading.Lock()
    issued = 0
    results = []  # (latency seconds, status, retry_after)
    rss = {}
    deadline = time.monotonic() + 600

    def client():
        nonlocal issued
        while time.monotonic() < deadline:
            with lock:
                if issued >= REQUESTS:
                    return
                index = issued
                issued += 1
            path, body, content_type = bodies[index % len(bodies)]
            start = time.monotonic()
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            try:
                connection.request("POST", path, body=body, headers={"Content-Type": content_type})
                response = connection.getresponse()
                response.read()
                outcome = (time.monotonic() - start, response.status, response.getheader("Retry-After"))
            except OSError as error:
                outcome = (time.monotonic() - start, f"connection error: {error}", None)
            finally:
                connection.close()
            with lock:
                results.append(outcome)
                if len(results) in (500, REQUESTS):
                    rss[len(results)] = rss_bytes(server.process.pid)

    began = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=660)
    elapsed = time.monotonic() - began
    assert server.stop() == 0

    assert len(results) == REQUESTS, f"only {len(results)} requests finished in time"
    errors = [r for r in results if r[1] != 200 and not (r[1] == 503 and r[2])]
    assert not errors, f"{len(errors)} errors other than 503 with Retry-After, e.g. {errors[:3]}"
    ok = sorted(r[0] for r in results if r[1] == 200)
    report = {
        "requests": REQUESTS, "clients": CLIENTS, "ok": len(ok), "busy_503": REQUESTS - len(ok),
        "seconds": round(elapsed, 2), "requests_per_second": round(REQUESTS / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(ok), 1), "p99_ms": round(1000 * ok[int(0.99 * (len(ok) - 1))], 1),
        "rss_at_500_mb": round(rss[500] / 2**20, 1), "rss_at_2000_mb": round(rss[REQUESTS] / 2**20, 1),
    }
    print(json.dumps(report))
    if os.environ.get("LOAD_REPORT"):
        with open(os.environ["LOAD_REPORT"], "w") as out:
            json.dump(report, out, indent=1)
    assert abs(rss[REQUESTS] - rss[500]) <= 0.10 * rss[500], f"RSS moved more than 10%: {report}"
