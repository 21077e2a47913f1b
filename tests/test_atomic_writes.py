"""A writer killed with SIGKILL mid-save never leaves a partial checkpoint.

A subprocess builds a small BERT, saves it once with `save_weights_as_checkpoint` (values V0,
read back by the test while the writer waits), then keeps saving to the same prefix with every weight set to
``V0 + k`` for k = 1, 2, ... . The test kills it at varied moments, several times in a row on
the same prefix (so leftovers of one kill meet the next writer), and after each kill asserts
that the checkpoint at the prefix loads and equals ``V0 + k`` for one k: the old or a new
complete save, never a mix.

The write path is NumPy -> TensorFlow file ops whatever the Keras backend, so the test runs
once, under KERAS_BACKEND=tensorflow (skipped on the other backends to save CI time).
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bert4keras.checkpoints import CheckpointReader

pytestmark = pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow",
    reason="checkpoint files are written by TensorFlow ops on every backend: tested once, under tensorflow",
)

WRITER = r"""
import sys
import keras
import numpy as np
from bert4keras.models import build_transformer_model

keras.utils.set_random_seed(0)  # the same V0 in every round
prefix = sys.argv[1]
builder = build_transformer_model(
    vocab_size=3000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
    max_position=64, with_mlm=True, return_keras_model=False)
weights = builder.model.get_weights()
builder.save_weights_as_checkpoint(prefix)
print("READY", flush=True)
sys.stdin.readline()  # the test reads V0 first
k = 0
while True:
    k += 1
    builder.model.set_weights([w + k for w in weights])
    builder.save_weights_as_checkpoint(prefix)
    print("SAVED", k, flush=True)
"""


def read_all(prefix):
    reader = CheckpointReader(prefix)
    return {name: reader[name] for name in reader.names()}


def offset_of(values, base):
    """The k with ``values == base + k`` for every variable, else an AssertionError naming one
    variable that disagrees."""
    assert sorted(values) == sorted(base), f"variables differ: {sorted(set(values) ^ set(base))[:5]}"
    first = next(iter(base))
    k = float(np.round(np.mean(values[first] - base[first])))
    for name in base:
        np.testing.assert_array_equal(values[name], base[name] + np.float32(k),
                                      err_msg=f"{name}: not base + {k} like {first} (a mixed checkpoint)")
    return int(k)


@pytest.mark.slow
def test_sigkill_during_repeated_saves_leaves_old_or_new_checkpoint(tmp_path):
    prefix = str(tmp_path / "ckpt" / "model.ckpt")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    rng = np.random.default_rng(0)
    base, seen = None, []
    for round_ in range(5):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, prefix], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        try:
            line = proc.stdout.readline()
            assert line.strip() == "READY", f"writer did not start (round {round_}): {line!r}"
            if base is None:
                base = read_all(prefix)  # V0: the first complete save
            assert offset_of(read_all(prefix), base) == 0
            proc.stdin.write("GO\n")
            proc.stdin.flush()
            time.sleep(float(rng.uniform(0.05, 1.2)))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        # Only whole lines: the kill can cut the last "SAVED k" line short (e.g. "SAVED" alone).
        lines = proc.stdout.read().split("\n")[:-1]
        saved = [int(x.split()[1]) for x in lines if x.startswith("SAVED")]
        k = offset_of(read_all(prefix), base)
        last = saved[-1] if saved else 0
        assert k in (last, last + 1), f"round {round_}: checkpoint holds save {k}, last completed was {last}"
        seen.append((last, k))
    assert any(last > 0 for last, _ in seen), f"no save completed before a kill: {seen}"
    # only one checkpoint's data files beside the index (stale ones are removed by later saves)
    # and at most the killed writers' temporary directories
    names = os.listdir(tmp_path / "ckpt")
    data = [n for n in names if ".data-" in n]
    assert len({n[-5:] for n in data}) <= 2, names


class Crash(Exception):
    pass


@pytest.mark.parametrize("crash_at", range(4))
def test_crash_at_every_file_operation_leaves_old_or_new_checkpoint(tmp_path, monkeypatch, crash_at):
    """Deterministic complement of the kill test: the save dies at its ``crash_at``-th rename or
    delete (every point where a kill could split the files), then a later save must recover."""
    from bert4keras.checkpoints import write_tf_checkpoint

    rng = np.random.default_rng(1)
    base = {f"layer_{i}/kernel": rng.standard_normal((5, 7)).astype("float32") for i in range(4)}
    prefix = str(tmp_path / "model.ckpt")
    for k in (0, 1):  # two complete saves first: the data files of both shard layouts exist
        write_tf_checkpoint(prefix, {n: v + k for n, v in base.items()})
    calls = []

    def failing(real):
        def op(*args, **kwargs):
            calls.append(args)
            if len(calls) == crash_at + 1:
                raise Crash(args)
            return real(*args, **kwargs)
        return op

    monkeypatch.setattr(os, "replace", failing(os.replace))
    monkeypatch.setattr(os, "remove", failing(os.remove))
    try:
        write_tf_checkpoint(prefix, {n: v + 2 for n, v in base.items()})
        crashed = False
    except Crash:
        crashed = True
    monkeypatch.undo()
    if not crashed:
        assert len(calls) <= crash_at, "the save finished although an operation raised"
        pytest.skip(f"a save makes only {len(calls)} renames/deletes")
    assert offset_of(read_all(prefix), base) in (1, 2)
    write_tf_checkpoint(prefix, {n: v + 3 for n, v in base.items()})
    assert offset_of(read_all(prefix), base) == 3
