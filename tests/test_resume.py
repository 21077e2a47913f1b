"""examples/task_sentiment_sst2.py killed with SIGKILL mid-epoch and re-run with --resume ends
with the same weights (and optimizer state) as an uninterrupted run.

Tiny settings (``--tiny``: random 2-layer BERT, 256 training phrases, 2 epochs of 16 steps,
a backup every 8 steps). The example runs three times (uninterrupted, killed, resumed), about
a minute per backend. On torch it needs torch's global generator, which Keras' unseeded torch
dropout draws from, in the backup (`snippets.BackupAndRestore` keeps it and carries it from step
to step past the draws of each `fit`'s set-up).
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import kill_after_first_backup

pytestmark = pytest.mark.slow  # runs and kills a training script in subprocesses: deselect with -m 'not slow'

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(REPO, "examples", "task_sentiment_sst2.py")
TINY = ["--tiny", "--train-size", "256", "--batch-size", "16", "--epochs", "2", "--maxlen", "32",
        "--valid-size", "0", "--test-size", "32", "--backup-steps", "8", "--seed", "7"]
STEPS = 2 * 256 // 16
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


def command(*args):
    return [sys.executable, EXAMPLE, *TINY, *args]


def environment():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=BACKEND)


def run(*args):
    result = subprocess.run(command(*args), env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"example failed ({args}):\n{result.stderr[-3000:]}"
    return result.stdout


def h5_arrays(path):
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_killed_and_resumed_run_matches_uninterrupted_run(tmp_path):
    a_weights, b_weights = str(tmp_path / "a.weights.h5"), str(tmp_path / "b.weights.h5")
    run("--backup-dir", str(tmp_path / "backup_a"), "--save-weights", a_weights)
    assert not os.path.exists(tmp_path / "backup_a"), "a finished run should remove its backup"

    backup = tmp_path / "backup_b"
    kill_after_first_backup(command("--backup-dir", str(backup), "--save-weights", b_weights), environment(),
                            backup / "seeds-8.npz")
    assert not os.path.exists(b_weights), "the run was killed too late: it had finished"

    out = run("--backup-dir", str(backup), "--resume", "--save-weights", b_weights)
    match = re.search(r"resumed from .* at step (\d+)", out)
    assert match, f"the re-run did not resume:\n{out[-2000:]}"
    assert 0 < int(match.group(1)) < STEPS

    a, b = h5_arrays(a_weights), h5_arrays(b_weights)
    assert sorted(a) == sorted(b)
    assert len(a) > 20
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=1e-6, err_msg=name)
