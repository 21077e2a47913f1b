"""examples/task_sentiment_multi_device.py on two logical CPU devices (--cpu-devices 2) of this machine.

On the current KERAS_BACKEND: tensorflow (MirroredStrategy) and jax (DataParallel) train a tiny BERT over
2 replicas and print a test accuracy; torch is refused with a message naming the backends that work.
The example runs in a subprocess, because the device split must happen before TensorFlow starts or
jax is imported. About 15 s per backend.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # runs the example script in a subprocess: deselect with -m 'not slow'

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
EXAMPLE = os.path.join(EXAMPLES, "task_sentiment_multi_device.py")
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
TEST_SIZE = 50  # not a whole number of global batches (32): the last test batch is padded
TINY = ["--cpu-devices", "2", "--train-size", "256", "--valid-size", "40", "--test-size", str(TEST_SIZE),
        "--epochs", "1", "--maxlen", "32", "--batch-size-per-device", "16",
        "--num-hidden-layers", "1", "--hidden-size", "32", "--num-attention-heads", "2", "--intermediate-size", "64"]


def run_example(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=BACKEND)
    return subprocess.run([sys.executable, EXAMPLE, *args], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(BACKEND not in ("tensorflow", "jax"), reason="multi-device training needs tensorflow or jax")
def test_trains_on_two_replicas_and_prints_test_accuracy():
    result = run_example(*TINY)
    assert result.returncode == 0, f"example failed:\n{result.stderr[-3000:]}"
    out = result.stdout
    replicas = re.search(r"^replicas: (\d+) .*\| global batch: (\d+) = 16 per device x (\d+)$", out, re.M)
    assert replicas, f"no replicas line in:\n{out[-3000:]}"
    assert replicas.groups() == ("2", "32", "2")
    score = re.search(r"sentiment \(zh\) test accuracy: (\d\.\d{4}) \((\d+) texts; .*\| backend: (\w+)", out)
    assert score, f"no test accuracy in:\n{out[-3000:]}"
    accuracy, texts, backend = float(score.group(1)), int(score.group(2)), score.group(3)
    assert (texts, backend) == (TEST_SIZE, BACKEND)
    assert 0.0 <= accuracy <= 1.0
    # Scored over the 50 texts only, not over the 64 rows of the padded batches: k / 50 for a whole k.
    assert abs(accuracy * TEST_SIZE - round(accuracy * TEST_SIZE)) < 0.01


@pytest.mark.skipif(BACKEND != "torch", reason="the refusal is for the torch backend")
def test_torch_backend_is_refused_with_a_clear_message():
    result = run_example(*TINY)
    assert result.returncode != 0
    assert "multi-device training needs the tensorflow or jax backend" in result.stderr
    assert "Traceback" not in result.stderr


def test_eval_batches_are_whole_and_count_each_text_once():
    sys.path.insert(0, EXAMPLES)
    try:
        from task_sentiment_multi_device import eval_dataset
    finally:
        sys.path.remove(EXAMPLES)
    rng = np.random.default_rng(0)
    n, maxlen, global_batch = 77, 8, 32
    arrays = (rng.integers(1, 100, (n, maxlen)).astype("int32"), rng.integers(0, 2, (n, maxlen)).astype("int32"),
              rng.integers(0, 2, n).astype("int32"))
    batches = [tuple(np.asarray(t) for t in (x[0], x[1], y, w)) for x, y, w in eval_dataset(arrays, global_batch)]
    assert [b[0].shape for b in batches] == [(global_batch, maxlen)] * 3
    token_ids, segment_ids, labels, weights = (np.concatenate(parts) for parts in zip(*batches))
    assert set(np.unique(weights)) <= {0.0, 1.0}
    kept = weights == 1.0
    np.testing.assert_array_equal(token_ids[kept], arrays[0])
    np.testing.assert_array_equal(segment_ids[kept], arrays[1])
    np.testing.assert_array_equal(labels[kept], arrays[2])
    assert not (token_ids == 0).all(axis=1).any(), "a padding row of all [PAD] tokens"
