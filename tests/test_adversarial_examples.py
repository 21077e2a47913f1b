"""The examples built on bert4keras.adversarial (FGM and the gradient penalty are one script), end to
end with tiny settings on the current backend, each in a subprocess (as a user runs them): they train, print their result line, and the
integrated-gradients one explains its sentences. A few seconds to a minute each.
"""

import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
# The training steps these scripts use are tested on every backend in test_adversarial.py; the scripts
# themselves run under TensorFlow only (CI time).
pytestmark = [pytest.mark.slow,  # runs the example scripts in subprocesses: deselect with -m 'not slow'
              pytest.mark.skipif(BACKEND != "tensorflow", reason="the scripts run under TensorFlow; "
                                 "their training steps are tested on every backend in test_adversarial.py")]
TINY = ["--test-size", "64", "--epochs", "1", "--maxlen", "16", "--batch-size", "16",
        "--num-hidden-layers", "1", "--hidden-size", "16", "--num-attention-heads", "2", "--intermediate-size", "32"]


TRAINING = ["--valid-size", "64"]


def run_example(name, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=BACKEND)
    result = subprocess.run([sys.executable, os.path.join(REPO, "examples", name), *TINY, *args],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{name} failed:\n{result.stderr[-3000:]}"
    return result.stdout


def check_accuracy_line(out, technique):
    score = re.search(r"sentiment \(zh\) test accuracy: (\d\.\d{4}) \(64 texts; .*\| " + technique
                      + r" \| wall time: \d+s \| backend: (\w+)", out)
    assert score, f"no result line in:\n{out[-2000:]}"
    assert 0.0 <= float(score.group(1)) <= 1.0 and score.group(2) == BACKEND


@pytest.mark.parametrize("off", [False, True], ids=["fgm", "baseline"])
def test_adversarial_training_example(off):
    out = run_example("task_sentiment_adversarial_training.py", *TRAINING, "--train-size", "64",
                      *(["--no-adversarial"] if off else []))
    check_accuracy_line(out, "adversarial: none" if off else r"adversarial: FGM epsilon=0\.01")


def test_gradient_penalty_example():
    out = run_example("task_sentiment_adversarial_training.py", *TRAINING, "--train-size", "64",
                      "--method", "gradient_penalty")
    check_accuracy_line(out, r"adversarial: gradient penalty epsilon=0\.03")


def test_virtual_adversarial_training_example():
    out = run_example("task_sentiment_virtual_adversarial_training.py", *TRAINING, "--train-size", "160",
                      "--train-frac", "0.2")
    check_accuracy_line(out, r"VAT: epsilon=0\.1 xi=1\.0 iters=1")
    assert "labeled=32 unlabeled=128" in out


def test_integrated_gradients_example(tmp_path):
    weights = str(tmp_path / "ig.weights.h5")
    out = run_example("task_sentiment_integrated_gradients.py", "--train-size", "64", "--weights", weights,
                      "--text", "这是一本很好看的书", "--steps", "4")
    assert os.path.exists(weights)
    explained = re.search(r"这是一本很好看的书  ->  label (\d) .*\n  signed \(sum over the embedding\): (.*)\n", out)
    assert explained, f"no attributions in:\n{out[-2000:]}"
    assert len(explained.group(2).split()) == 9  # one score per character
    out = run_example("task_sentiment_integrated_gradients.py", "--weights", weights, "--text", "这家店真黑心",
                      "--steps", "4")
    assert f"loaded {weights}" in out and "这家店真黑心  ->  label" in out
