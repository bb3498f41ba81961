"""The official openai client against `blip2 serve`: its text must equal `blip2 caption` / `blip2 chat`."""
import base64

import openai
import pytest

from conftest import EXAMPLES, MODEL, cli

IMAGE = EXAMPLES / "row-42-16.png"
QUESTIONS = ["what color is the cross?", "what shape is on the left?"]


def data_url(path):
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=60)


def image_part():
    return {"type": "image_url", "image_url": {"url": data_url(IMAGE)}}


def complete(client, messages, stream):
    if not stream:
        response = client.chat.completions.create(model="demo-q8", messages=messages, temperature=0)
        assert response.choices[0].message.role == "assistant"
        assert response.usage.completion_tokens > 0
        assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens
        return response.choices[0].message.content
    pieces, finish = [], None
    for chunk in client.chat.completions.create(model="demo-q8", messages=messages, temperature=0, stream=True):
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    assert finish in ("stop", "length")
    assert any(pieces), "no content arrived in the stream"
    return "".join(pieces)


@pytest.mark.parametrize("stream", [False, True])
def test_caption(client, stream):
    expected = cli("caption", str(MODEL), str(IMAGE))[0]
    assert complete(client, [{"role": "user", "content": [image_part()]}], stream) == expected


@pytest.mark.parametrize("stream", [False, True])
def test_two_turn_chat(client, stream):
    expected = cli("chat", str(MODEL), str(IMAGE), stdin="\n".join(QUESTIONS) + "\n")
    assert len(expected) == 2
    messages = [{"role": "user", "content": [image_part(), {"type": "text", "text": QUESTIONS[0]}]}]
    first = complete(client, messages, stream)
    assert first == expected[0]
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": QUESTIONS[1]}]
    assert complete(client, messages, stream) == expected[1]


def test_models(client):
    assert [m.id for m in client.models.list().data] == ["demo-q8"]


def test_remote_image_refused(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="demo-q8", messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}])
    assert "offline" in str(error.value)


def test_n_choices_are_the_command_lines_samples(client):
    """n > 1: independent samples decoded together; choice i is the CLI's sequence i for the same seed."""
    expected = cli("ask", str(MODEL), str(IMAGE), QUESTIONS[0], "--sample", "--temperature", "1.5", "--top-p", "1",
                   "--seed", "5", "--num-return-sequences", "3")
    assert len(expected) == 3
    response = client.chat.completions.create(
        model="demo-q8", n=3, temperature=1.5, seed=5,
        messages=[{"role": "user", "content": [image_part(), {"type": "text", "text": QUESTIONS[0]}]}])
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert [c.message.content for c in response.choices] == expected
    assert all(c.finish_reason in ("stop", "length") for c in response.choices)


@pytest.mark.parametrize("settings, says", [({"n": 2, "temperature": 0}, "need sampling"),
                                             ({"n": 2, "temperature": 1, "stream": True}, "answered whole"),
                                             ({"n": 17, "temperature": 1}, "from 1 to 16")])
def test_n_refused_where_it_cannot_be_served(client, settings, says):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="demo-q8", messages=[{"role": "user", "content": [image_part()]}], **settings)
    assert refused.value.body["param"] == "n" and says in refused.value.body["message"]
