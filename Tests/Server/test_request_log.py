"""`blip2 serve` logs one line per request on standard error (time, method, path, status, milliseconds to the
answer's head), through real requests with the openai client and curl; `--quiet` turns it off."""
import re
import signal
import subprocess

import openai

from conftest import BLIP2, MODEL

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z (GET|POST) (\S+) (\d{3}) \d+\.\d ms$")


def serve_and_log(*extra):
    """Starts a server, makes three requests, stops it, and returns the log lines it wrote."""
    process = subprocess.Popen([str(BLIP2), "serve", str(MODEL), "--port", "0", *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = re.search(r"(http://127\.0\.0\.1:\d+)/", process.stdout.readline()).group(1)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
        client.models.list()
        subprocess.run(["curl", "--silent", "--output", "/dev/null", "--max-time", "30", url + "/health"], check=True)
        subprocess.run(["curl", "--silent", "--output", "/dev/null", "--max-time", "30", url + "/v1/nothing"], check=True)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    return [match.groups() for match in map(LINE.match, stderr.splitlines()) if match]


def test_one_line_per_request():
    assert serve_and_log() == [("GET", "/v1/models", "200"), ("GET", "/health", "200"), ("GET", "/v1/nothing", "404")]


def test_quiet_logs_nothing():
    assert serve_and_log("--quiet") == []
