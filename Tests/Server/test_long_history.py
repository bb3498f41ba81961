"""OpenAI message histories against a reference: Hugging Face `tokenizers` (with the model file's own
vocabulary, merges and added tokens) and the rule the server keeps, the fewest oldest turns dropped so that the prompt and max_tokens fit the
context. A long history must be answered in time bounded by the context, not by the history (it used to
cost quadratic time on the one model thread)."""
import base64
import json
import random
import struct
import time
import urllib.error
import urllib.request

import pytest
from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

from conftest import EXAMPLES, MODEL

IMAGE = EXAMPLES / "row-42-16.png"
URL = "data:image/png;base64," + base64.b64encode(IMAGE.read_bytes()).decode()


def model_tokenizer():
    """The tokenizer section of the model file, read as docs/FORMAT.md lays it out."""
    data = MODEL.read_bytes()
    assert data[:8] == b"BLIP2EDG"
    offset, size = struct.unpack_from("<QQ", data, 56)
    (count,), position = struct.unpack_from("<I", data, offset), offset + 4
    for _ in range(count):
        (name_length,) = struct.unpack_from("<H", data, position)
        name = data[position + 2:position + 2 + name_length].decode()
        (json_length,) = struct.unpack_from("<Q", data, position + 2 + name_length)
        start = position + 2 + name_length + 8
        if name == "tokenizer":
            return json.loads(data[start:start + json_length])
        position = start + json_length
    raise AssertionError("the model file has no tokenizer section")


@pytest.fixture(scope="module")
def reference():
    """Hugging Face `tokenizers` built from the model's own vocabulary, merges and added tokens."""
    section = model_tokenizer()
    vocab = section["vocab"]
    if isinstance(vocab, list):  # tokens in id order
        vocab = {token: index for index, token in enumerate(vocab)}
    merges = [tuple(merge.split(" ")) for merge in section["merges"]]
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=section.get("add_prefix_space", False))
    tokenizer.add_special_tokens([AddedToken(t["content"], single_word=t["single_word"], lstrip=t["lstrip"], rstrip=t["rstrip"],
                                             normalized=t["normalized"]) for t in section["added_tokens"]])
    assert section.get("add_bos_token", True)
    return lambda text: 1 + len(tokenizer.encode(text).ids)  # BOS first


def prompt(turns, question):
    """BLIP-2's chat template (docs/SERVER.md)."""
    return " ".join([f"Question: {q} Answer: {a}." for q, a in turns] + [f"Question: {question} Answer:"])


def messages(turns, question):
    out = []
    for i, (q, a) in enumerate(turns + [(question, None)]):
        content = [{"type": "text", "text": q}]
        if i == 0:
            content.insert(0, {"type": "image_url", "image_url": {"url": URL}})
        out.append({"role": "user", "content": content})
        if a is not None:
            out.append({"role": "assistant", "content": a})
    return out


def post(server, body, timeout=300):
    request = urllib.request.Request(server.url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def budget(server, reference):
    """Prompt ids that fit with max_tokens 1, and the image embeddings usage counts in front of them."""
    with urllib.request.urlopen(server.url + "/health", timeout=30) as response:
        context = json.loads(response.read())["context_tokens"]
    status, body = post(server, {"messages": messages([], "what is it?"), "max_tokens": 1})
    assert status == 200, body
    image_tokens = body["usage"]["prompt_tokens"] - reference(prompt([], "what is it?"))
    assert image_tokens > 0
    return context - image_tokens - 1, image_tokens


def kept_turns(turns, question, fits, reference):
    """How many of the newest turns stay: the first count of dropped turns at which the prompt fits
    (binary search: each turn dropped removes ids)."""
    low, high = 0, len(turns)
    while low < high:
        middle = (low + high) // 2
        if reference(prompt(turns[middle:], question)) <= fits:
            high = middle
        else:
            low = middle + 1
    return len(turns) - low


WORDS = ["red", "circle", "a", "the", "cross", "  ", "it's", "don't", "ünïcode", "日本", "🙂", "42", "3.5", "...",
         "?", "'s", "\t", "x" * 30, "</s>x"]


def test_short_histories_drop_the_same_turns_as_the_reference(server, reference, budget):
    fits, image_tokens = budget
    rng = random.Random(7)

    def text(least, most):
        # Stripped as the server strips message text; a question is never empty (that is not a turn).
        while True:
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(least, most))).strip()
            if words or least == 0:
                return words

    dropped_some = 0
    for case in range(10):
        turns = [(text(1, 9), text(0, 9)) for _ in range(rng.randint(1, 24))]
        question = text(1, 6)
        keep = kept_turns(turns, question, fits, reference)
        status, body = post(server, {"messages": messages(turns, question), "max_tokens": 1})
        assert status == 200, (case, body)
        assert body["usage"]["prompt_tokens"] == image_tokens + reference(prompt(turns[len(turns) - keep:], question)), case
        dropped_some += keep < len(turns)
    assert 2 <= dropped_some <= 8, "the cases must both drop turns and keep them all"


def test_long_history_is_answered_quickly_with_the_turns_that_fit(server, reference, budget):
    fits, image_tokens = budget
    turns = [(f"and what is next to item {i}?", f"a red circle number {i}") for i in range(5000)]
    question = "what colour is the cross?"
    started = time.monotonic()
    # Squared in the history, 5000 turns ran for minutes; read once, they add well under a second (debug build).
    # The timeout only bounds a hang.
    status, body = post(server, {"messages": messages(turns, question), "temperature": 0, "max_tokens": 1}, timeout=300)
    elapsed = time.monotonic() - started
    assert status == 200, body
    keep = kept_turns(turns, question, fits, reference)
    assert 0 < keep < len(turns)
    assert body["usage"]["prompt_tokens"] == image_tokens + reference(prompt(turns[-keep:], question))
    # The kept turns alone get the same answer, and cost the same but for reading the longer request: the
    # prefill of a full context dominates both (seconds in a debug build). The bound grows with the machine's
    # slowness (it is relative to the short request), so only the minutes of the squared reading break it.
    started = time.monotonic()
    status, short = post(server, {"messages": messages(turns[-keep:], question), "temperature": 0, "max_tokens": 1})
    short_elapsed = time.monotonic() - started
    assert status == 200
    assert short["choices"][0]["message"]["content"] == body["choices"][0]["message"]["content"]
    assert elapsed < 2 * short_elapsed + 20, f"5000 turns took {elapsed:.1f} s, the {keep} that fit {short_elapsed:.1f} s"
