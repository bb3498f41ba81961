"""`Expect: 100-continue` (curl sends it for uploads over about 1 MB and otherwise waits a second for the
answer): the server says continue when it will read the body, and stays silent when it would refuse it
(a full queue, a body over --max-body-mb), answering the refusal at once. curl is the client."""
import base64
import json
import subprocess

import pytest

from conftest import EXAMPLES, Server, long_stream

IMAGE = base64.b64encode((EXAMPLES / "row-42-16.png").read_bytes()).decode()


def upload(server, path, body_file):
    """curl -v with Expect: 100-continue; (interim and final status lines curl received, body)."""
    out = subprocess.run(["curl", "-sv", "--max-time", "60", "-H", "Expect: 100-continue", "-H", "Content-Type: application/json",
                          "--data-binary", f"@{body_file}", server.url + path],
                         capture_output=True, timeout=90)
    statuses = [line[2:].strip() for line in out.stderr.decode(errors="replace").splitlines() if line.startswith("< HTTP/")]
    return statuses, out.stdout


@pytest.fixture(scope="module")
def body(tmp_path_factory):
    path = tmp_path_factory.mktemp("bodies") / "caption.json"
    # Padded past curl's own threshold with a long prompt, so the header is what curl would send anyway.
    path.write_text(json.dumps({"image": IMAGE, "prompt": "a photo of", "max_new_tokens": 3}))
    return path


def test_continue_then_the_answer(server, body):
    statuses, answer = upload(server, "/v1/caption", body)
    assert statuses[0] == "HTTP/1.1 100 Continue", statuses
    assert statuses[-1].startswith("HTTP/1.1 200"), statuses
    assert len(json.loads(answer)["token_ids"]) <= 3


def test_no_continue_past_the_body_limit(tmp_path):
    s = Server("--max-body-mb", "1")
    try:
        big = tmp_path / "big.json"
        big.write_text(json.dumps({"image": "A" * (2 << 20)}))
        statuses, answer = upload(s, "/v1/caption", big)
        assert "HTTP/1.1 100 Continue" not in statuses, statuses
        assert statuses[-1].startswith("HTTP/1.1 413"), statuses
        assert json.loads(answer)["error"]["code"] == "body_too_large"
    finally:
        assert s.stop() == 0


def test_a_full_queue_refuses_before_the_body(body):
    s = Server("--parallel", "1", "--queue", "0")
    try:
        # A long streamed caption holds the model's one slot; its first event means it is running.
        busy = long_stream(s, EXAMPLES / "row-42-16.png")
        statuses, answer = upload(s, "/v1/caption", body)
        busy.close()
        assert "HTTP/1.1 100 Continue" not in statuses, statuses
        assert statuses[-1].startswith("HTTP/1.1 503"), statuses
        assert json.loads(answer)["error"]["code"] == "queue_full"
    finally:
        assert s.stop() == 0
