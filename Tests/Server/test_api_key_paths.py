"""`--api-key` holds however a client spells the path: the router ignores empty segments and a trailing
slash, so `//v1/models` or `/metrics/` reach the same routes as `/v1/models` and `/metrics`. curl with
--path-as-is sends each path exactly as written."""
import base64
import json
import subprocess

import pytest

from conftest import EXAMPLES, Server

KEY = "sekret"
IMAGE = base64.b64encode((EXAMPLES / "row-42-16.png").read_bytes()).decode()


@pytest.fixture(scope="module")
def keyed():
    s = Server("--api-key", KEY)
    yield s
    assert s.stop() == 0


def curl(url, *extra):
    """(status, body) of one request; curl's own time limit bounds it."""
    out = subprocess.run(["curl", "--silent", "--path-as-is", "--max-time", "60", "--output", "-",
                          "--write-out", "\n%{http_code}", *extra, url], capture_output=True, text=True, timeout=90)
    body, _, status = out.stdout.rpartition("\n")
    return int(status), body


GETS = ["//v1/models", "/v1//models", "/v1/models/", "//metrics", "/metrics/", "///metrics//"]
POSTS = ["//v1/caption", "/v1//caption", "/v1/caption/"]


@pytest.mark.parametrize("path", GETS)
def test_get_needs_key_however_spelled(keyed, path):
    status, body = curl(keyed.url + path)
    assert status == 401, body
    assert json.loads(body)["error"]["code"] == "invalid_api_key"
    status, body = curl(keyed.url + path, "--header", f"Authorization: Bearer {KEY}")
    assert status == 200, body
    status, _ = curl(keyed.url + path, "--header", "X-API-Key: " + KEY)
    assert status == 200


@pytest.mark.parametrize("path", POSTS)
def test_post_needs_key_however_spelled(keyed, path):
    body = json.dumps({"image": IMAGE, "max_new_tokens": 3})
    form = ["--header", "Content-Type: application/json", "--data-binary", body]
    status, answer = curl(keyed.url + path, *form)
    assert status == 401, answer
    assert json.loads(answer)["error"]["code"] == "invalid_api_key"
    status, answer = curl(keyed.url + path, *form, "--header", f"Authorization: Bearer {KEY}")
    assert status == 200, answer
    assert json.loads(answer)["text"]


def test_unknown_v1_path_without_key_is_401_and_open_routes_stay_open(keyed):
    assert curl(keyed.url + "//v1/nothing-here")[0] == 401
    assert curl(keyed.url + "//health")[0] == 200
    assert curl(keyed.url + "/")[0] == 200


def test_metrics_count_a_spelling_under_its_route(keyed):
    curl(keyed.url + "//v1//models", "--header", f"Authorization: Bearer {KEY}")
    status, text = curl(keyed.url + "/metrics", "--header", f"Authorization: Bearer {KEY}")
    assert status == 200
    assert 'blip2_http_requests_total{route="/v1/models",status="200"}' in text
