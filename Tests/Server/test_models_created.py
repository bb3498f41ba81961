"""`/v1/models` through the official openai client: `created` is the model file's modification time, the same
in every answer and after a restart (OpenAI's `created` is when the model was made, not the request)."""
import os
import time

import openai

from conftest import MODEL, Server


def created(url):
    client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
    models = client.models.list().data
    assert len(models) == 1
    return models[0].created


def test_created_is_the_model_files_time(server):
    expected = int(os.stat(MODEL).st_mtime)
    first = created(server.url)
    time.sleep(1.1)
    assert created(server.url) == first == expected
    restarted = Server()
    try:
        assert created(restarted.url) == expected
    finally:
        assert restarted.stop() == 0
