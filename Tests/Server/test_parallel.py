"""`blip2 serve --parallel`: concurrent clients (the official openai client, each on its own thread) share
the model's decode steps, and each stream still carries its own tokens, in order, equal to the CLI's."""
import base64
import json
import threading
import time
import urllib.request

import openai

from conftest import EXAMPLES, MODEL, Server, cli, long_stream

IMAGES = sorted(EXAMPLES.glob("*.png"))
QUESTIONS = ["what color is the circle?", "how many shapes are there?", "what shape is on the left?"]


def data_url(path):
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def health(server):
    with urllib.request.urlopen(server.url + "/health", timeout=10) as answer:
        return json.load(answer)


def metric(server, name):
    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
    return None


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_concurrent_streams_get_their_own_tokens_in_order():
    jobs = []
    for i, image in enumerate(IMAGES):
        jobs.append((image, None, cli("caption", str(MODEL), str(image))[0]))
        question = QUESTIONS[i % len(QUESTIONS)]
        jobs.append((image, question, cli("ask", str(MODEL), str(image), question)[0]))
    server = Server("--parallel", "4", "--queue", str(len(jobs)))
    try:
        # A long generation keeps a slot decoding, so every other request's steps are shared with it.
        background = long_stream(server, IMAGES[0])
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        start = threading.Barrier(len(jobs))
        results = [None] * len(jobs)

        def run(index, image, question):
            content = [{"type": "image_url", "image_url": {"url": data_url(image)}}]
            if question:
                content.append({"type": "text", "text": question})
            start.wait(timeout=60)
            pieces = []
            for chunk in client.chat.completions.create(model="demo-q8", messages=[{"role": "user", "content": content}],
                                                        temperature=0, stream=True):
                if chunk.choices:
                    pieces.append(chunk.choices[0].delta.content or "")
            results[index] = "".join(pieces)

        threads = [threading.Thread(target=run, args=(i, image, question)) for i, (image, question, _) in enumerate(jobs)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not any(t.is_alive() for t in threads), "a client did not finish"
        background.close()
        for (image, question, expected), got in zip(jobs, results):
            assert got == expected, f"{image.name} {question!r}"
        one = metric(server, 'blip2_decode_step_sequences_bucket{le="1.0"}') or 0
        total = metric(server, "blip2_decode_step_sequences_count") or 0
        assert total - one > 0, "no decode step was shared"
    finally:
        assert server.stop() == 0


def test_a_client_leaving_mid_stream_frees_its_slot():
    server = Server("--parallel", "2", "--queue", "0")
    try:
        first = long_stream(server, IMAGES[0])
        second = long_stream(server, IMAGES[0])
        assert health(server)["active_slots"] == 2
        first.close()
        assert wait_for(lambda: health(server)["active_slots"] == 1), "the slot of the client that left stayed taken"
        # The freed slot takes a new request while the other long one still runs.
        expected = cli("caption", str(MODEL), str(IMAGES[1]))[0]
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
        answer = client.chat.completions.create(
            model="demo-q8", temperature=0,
            messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(IMAGES[1])}}]}])
        assert answer.choices[0].message.content == expected
        assert health(server)["active_slots"] == 1
        second.close()
        assert wait_for(lambda: health(server)["active_slots"] == 0)
        assert metric(server, "blip2_generations_cancelled_total") == 2
    finally:
        assert server.stop() == 0
