"""Every refusal names the field the client sent, in the API's own spelling (the native routes' snake-case
fields, OpenAI's names on /v1/chat/completions), in the message and in `param`; never a Swift property or
a command-line flag."""
import base64
import json
import urllib.error
import urllib.request

import openai
import pytest

from conftest import EXAMPLES, MODEL, cli

IMAGE_PATH = EXAMPLES / "row-42-16.png"
IMAGE = base64.b64encode(IMAGE_PATH.read_bytes()).decode()
NOT_AN_IMAGE = base64.b64encode(b"just some text, not a picture").decode()
SWIFT_OR_CLI = ["numBeams", "doSample", "maxNewTokens", "topK", "numReturnSequences", "--", "ImageDecodeOptions", "image: image:"]


def post(server, path, body, timeout=60):
    request = urllib.request.Request(server.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def refused(server, path, body):
    status, answer = post(server, path, body)
    assert status == 400, answer
    error = answer["error"]
    for name in SWIFT_OR_CLI:
        assert name not in error["message"], error
    return error


def completion(text=None, url=None, **options):
    content = [{"type": "image_url", "image_url": {"url": url or "data:image/png;base64," + IMAGE}}]
    if text:
        content.append({"type": "text", "text": text})
    return {"messages": [{"role": "user", "content": content}], **options}


@pytest.fixture(scope="module")
def context(server):
    with urllib.request.urlopen(server.url + "/health", timeout=30) as response:
        return json.loads(response.read())["context_tokens"]


@pytest.mark.parametrize("options, param, says", [
    ({"beams": 0}, "beams", "beams = 0"),
    ({"max_new_tokens": 0}, "max_new_tokens", "max_new_tokens = 0"),
    ({"sample": True, "temperature": 0}, "temperature", "leave sample off"),
    ({"sample": "true", "top_k": -1}, "top_k", "top_k = -1"),
    ({"num_return_sequences": 2}, "num_return_sequences", "beams above 1 or sample"),
    ({"beams": 2, "num_return_sequences": 3}, "num_return_sequences", "at most beams (2)"),
    ({"repetition_penalty": 0}, "repetition_penalty", "repetition_penalty = 0"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size", "no_repeat_ngram_size = -1"),
])
def test_native_generation_options(server, options, param, says):
    error = refused(server, "/v1/caption", {"image": IMAGE, **options})
    assert error["param"] == param
    assert error["code"] == "invalid_generation_option"
    assert says in error["message"]


@pytest.mark.parametrize("options, param", [
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_completion_tokens": 0}, "max_completion_tokens"),
    ({"temperature": 1, "top_p": 0}, "top_p"),
])
def test_openai_generation_options(server, options, param):
    error = refused(server, "/v1/chat/completions", completion(**options))
    assert error["param"] == param
    assert f"{param} = 0" in error["message"]


def test_context_overflow_names_the_token_limit_or_the_prompt(server, context):
    error = refused(server, "/v1/caption", {"image": IMAGE, "max_new_tokens": context})
    assert error["param"] == "max_new_tokens" and error["code"] == "context_length_exceeded"
    assert error["message"].startswith(f"max_new_tokens = {context}: ")
    error = refused(server, "/v1/chat/completions", completion("what is it?", max_tokens=context))
    assert error["param"] == "max_tokens" and error["message"].startswith(f"max_tokens = {context}: ")
    error = refused(server, "/v1/chat/completions", completion("what is it?", max_completion_tokens=context))
    assert error["param"] == "max_completion_tokens"

    long = "what is the colour of the thing " * 200
    error = refused(server, "/v1/ask", {"image": IMAGE, "question": long})
    assert error["param"] == "question" and error["message"].startswith("question: the prompt is ")
    error = refused(server, "/v1/caption", {"image": IMAGE, "prompt": long})
    assert error["param"] == "prompt"
    error = refused(server, "/v1/chat/completions", completion(long))
    assert error["param"] == "messages" and error["code"] == "context_length_exceeded"


def test_undecodable_images_name_their_field_once(server):
    error = refused(server, "/v1/caption", {"image": NOT_AN_IMAGE})
    assert error["param"] == "image" and error["code"] == "not_an_image"
    assert error["message"].startswith("image: not a JPEG or PNG image")
    error = refused(server, "/v1/chat/completions", completion(url="data:image/png;base64," + NOT_AN_IMAGE))
    assert error["param"] == "image_url" and error["code"] == "not_an_image"
    assert error["message"].startswith("image_url: not a JPEG or PNG image")


def test_openai_temperature_and_top_p_ranges(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)
    for temperature in (-1, -0.01, 2.01, 10):
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="demo-q8", messages=completion("what is it?")["messages"], temperature=temperature)
        assert caught.value.param == "temperature"
        assert "temperature" in caught.value.message and "2" in caught.value.message
    for top_p in (-0.5, 1.5):
        error = refused(server, "/v1/chat/completions", completion("what is it?", top_p=top_p))
        assert error["param"] == "top_p"
    # The edges are OpenAI's too.
    for temperature in (0, 2):
        response = client.chat.completions.create(model="demo-q8", messages=completion("what is it?")["messages"],
                                                  temperature=temperature, max_tokens=2, seed=1)
        assert response.choices[0].message.content is not None


QUESTION = "where is the red circle?"
BIG = 2**53 + 1  # a double rounds it to 2^53


def test_seeds_beyond_double_precision_are_exact(server):
    expected = cli("ask", str(MODEL), str(IMAGE_PATH), QUESTION, "--sample", "--temperature", "1.5", "--seed", str(BIG))[0]
    neighbour = cli("ask", str(MODEL), str(IMAGE_PATH), QUESTION, "--sample", "--temperature", "1.5", "--seed", str(BIG - 1))[0]
    assert expected != neighbour, "these seeds must sample differently for the test to tell them apart"
    status, body = post(server, "/v1/chat/completions", completion(QUESTION, temperature=1.5, seed=BIG))
    assert status == 200, body
    assert body["choices"][0]["message"]["content"] == expected
    status, body = post(server, "/v1/ask", {"image": IMAGE, "question": QUESTION, "sample": True, "temperature": 1.5, "seed": BIG})
    assert status == 200, body
    assert body["text"] == expected
    status, body = post(server, "/v1/chat/completions", completion(QUESTION, temperature=1.5, seed=2**64 - 1, max_tokens=2))
    assert status == 200, body


@pytest.mark.parametrize("seed", [2**64, -1, 1.5, "x"])
def test_seeds_outside_the_range_are_refused(server, seed):
    for path, body in (("/v1/chat/completions", completion(QUESTION, temperature=1, seed=seed)),
                       ("/v1/ask", {"image": IMAGE, "question": QUESTION, "sample": True, "seed": seed})):
        error = refused(server, path, body)
        assert error["param"] == "seed"
        assert error["message"] == f"seed: expected an integer from 0 to {2**64 - 1}, got {json.dumps(seed)}"
