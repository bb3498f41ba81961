"""`blip2 serve` on a Flan-T5 BLIP-2 model file: the same routes and the same answers as the command line."""
import base64
import json
import pathlib
import subprocess
import urllib.request

import openai
import pytest

from conftest import BLIP2, EXAMPLES, ROOT, Server, cli

CHECKPOINT = ROOT / "Tests" / "Fixtures" / "models-t5" / "gated-tied" / "checkpoint"
IMAGE = EXAMPLES / "row-42-16.png"
QUESTION = "what color is the cross?"


@pytest.fixture(scope="module")
def t5_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("t5") / "gated-tied.blip2"
    quantize = pathlib.Path(str(BLIP2) + "-quantize")
    subprocess.run([str(quantize), str(CHECKPOINT), "--output", str(path), "--weights", "f32"], check=True,
                   capture_output=True, timeout=300)
    return path


def test_native_and_openai_routes_answer_as_the_command_line(t5_model):
    caption = cli("caption", str(t5_model), str(IMAGE), "--max-new-tokens", "8")[0]
    answer = cli("ask", str(t5_model), str(IMAGE), QUESTION, "--max-new-tokens", "8")[0]
    server = Server(model=t5_model)
    try:
        body = json.dumps({"image": base64.b64encode(IMAGE.read_bytes()).decode(), "question": QUESTION,
                           "max_new_tokens": 8}).encode()
        request = urllib.request.Request(server.url + "/v1/ask", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as reply:
            assert json.load(reply)["text"] == answer
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(IMAGE.read_bytes()).decode()}}
        pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model=t5_model.stem, messages=[{"role": "user", "content": [image]}], max_tokens=8, temperature=0, stream=True)
            if chunk.choices]
        assert "".join(pieces) == caption
    finally:
        assert server.stop() == 0

