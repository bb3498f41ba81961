"""`--idle-timeout`: a connection with no request on it is closed after that long (idle sockets used to be
held forever); a request that takes longer than that to answer is not cut. Raw sockets, so that nothing
but the test decides what is sent and when."""
import base64
import json
import socket
import time

import pytest

from conftest import EXAMPLES, Server

IMAGE = base64.b64encode((EXAMPLES / "row-42-16.png").read_bytes()).decode()


# Short enough that the long answer below lasts many timeouts on any machine (8 beams x 450 tokens: 4 x 300
# took 0.9 s on a Zen 4 once beams stopped copying their shared positions), long enough that a loaded
# machine still accepts the request in time.
IDLE_TIMEOUT = 0.3


@pytest.fixture(scope="module")
def quick():
    s = Server("--idle-timeout", str(IDLE_TIMEOUT))
    yield s
    assert s.stop() == 0


def connect(server):
    host, port = server.url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=10)
    connection.settimeout(10)
    return connection


# The closes below must come within this long: far past any scheduling delay of a loaded machine, far short
# of read_until_closed's limit, which is what a connection held for ever gets.
CLOSED_WITHIN = 20


def read_until_closed(connection, limit=30):
    """Everything the server sends until it closes the connection; (bytes, seconds taken)."""
    started = time.monotonic()
    received = b""
    while time.monotonic() - started < limit:
        try:
            chunk = connection.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        received += chunk
    return received, time.monotonic() - started


def test_silent_connection_is_closed(quick):
    connection = connect(quick)
    received, seconds = read_until_closed(connection)
    connection.close()
    assert received == b""
    assert IDLE_TIMEOUT * 0.9 <= seconds < CLOSED_WITHIN, seconds


def test_keep_alive_connection_is_closed_after_its_answer(quick):
    connection = connect(quick)
    connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    received, seconds = read_until_closed(connection)
    connection.close()
    assert received.startswith(b"HTTP/1.1 200")
    assert b'"status":"ok"' in received
    assert seconds < CLOSED_WITHIN, seconds


def test_stalled_request_head_is_closed(quick):
    connection = connect(quick)
    connection.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
    received, seconds = read_until_closed(connection)
    connection.close()
    assert b"200" not in received
    assert seconds < CLOSED_WITHIN, seconds


def test_an_answer_that_takes_longer_than_the_timeout_is_not_cut(quick):
    body = json.dumps({"image": IMAGE, "beams": 8, "min_new_tokens": 450, "max_new_tokens": 450}).encode()
    connection = connect(quick)
    connection.settimeout(120)
    connection.sendall(b"POST /v1/caption HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                       + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    received, seconds = read_until_closed(connection, limit=120)
    connection.close()
    assert seconds > 3 * IDLE_TIMEOUT, "the generation must outlast the idle timeout for this test to tell anything"
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    answer = json.loads(received.split(b"\r\n\r\n", 1)[1])
    assert len(answer["token_ids"]) == 450


def test_flag_is_checked():
    import subprocess
    from conftest import BLIP2, MODEL
    for value in ("0", "-1", "nan", "100000"):
        out = subprocess.run([str(BLIP2), "serve", str(MODEL), "--port", "0", "--idle-timeout", value],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0
        assert "--idle-timeout" in out.stderr
