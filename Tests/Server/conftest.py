"""Starts `blip2 serve` on loopback for the Python tests (the official openai client, a real browser, load)."""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BLIP2 = pathlib.Path(os.environ.get("BLIP2", ROOT / ".build" / "debug" / "blip2"))
MODEL = ROOT / "Models" / "demo-q8.blip2"
EXAMPLES = ROOT / "Models" / "examples"


class Server:
    def __init__(self, *extra, stdin=None, model=MODEL):
        """stdin: subprocess.PIPE to feed `--camera -` from the test (then `self.process.stdin`, binary)."""
        self.process = subprocess.Popen([str(BLIP2), "serve", str(model), "--port", "0", *extra], stdin=stdin,
                                        stdout=subprocess.PIPE, text=stdin is None)  # stderr: pytest captures it
        line = self.process.stdout.readline()  # the URL, printed once bound
        if isinstance(line, bytes):
            line = line.decode()
        match = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        if not match:
            self.process.kill()
            raise RuntimeError(f"blip2 serve did not start: {line!r}")
        self.url = match.group(1)

    def stop(self):
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise


def long_stream(server, image, tokens=400):
    """Starts a streamed caption of `image` (a path) whose EOS is held back for `tokens` tokens, keeping a
    slot busy; returns the open socket once the first event arrived (the generation is running)."""
    import base64
    import json
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"image": base64.b64encode(image.read_bytes()).decode(), "stream": True,
                       "min_new_tokens": tokens, "max_new_tokens": tokens}).encode()
    connection = socket.create_connection((host, int(port)), timeout=60)
    connection.sendall(b"POST /v1/caption HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    seen = b""
    while b"data:" not in seen:
        chunk = connection.recv(4096)
        assert chunk, "the long caption ended before its first event"
        seen += chunk
    return connection


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    assert s.stop() == 0


def cli(*args, stdin=None):
    """Runs the blip2 CLI and returns its standard output lines."""
    out = subprocess.run([str(BLIP2), *args], input=stdin, capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.splitlines()


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium through chromedriver, headless (imported here so the other tests run without Selenium)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
