"""Data and model parallelism: the tiny BERT masked LM trained with bert4keras optimizers under
tf.distribute (MirroredStrategy, MultiWorkerMirroredStrategy) and keras.distribution (JAX
DataParallel, ModelParallel) ends with the weights of the same run on one device.

Devices must be set up before TensorFlow or JAX initialises (logical CPUs, TF_CONFIG, XLA_FLAGS),
so every run is a fresh process executing one shared worker script; weights come back as .npz.
Every run starts from the initial weights of the one-device run and sees the same global batches.
Masked tokens carry sample weight 1 / 0.15 and the loss ("sum_over_batch_size", divided by the
replica count under tf.distribute) divides by the token count, so each token's weight is a constant
and the loss of a global batch is the mean of its replicas' losses however the batch is split (a
per-batch normalisation by the number of masked tokens would not be).
"""

import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # starts multi-process jobs: deselect with -m 'not slow'

BACKEND = keras.backend.backend()
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-5
MOVED = 1e-4  # every variable with a gradient moves by more than this: 10x TOLERANCE
# Optimizer slots (gradients ~1e-7..1e-1, their squares, accumulators) are compared to their own
# scale; the floor absorbs the rounding noise (~1e-13) of the attention key biases, whose gradient
# is exactly zero (softmax is invariant to a shift shared by all keys).
SLOT_RTOL, SLOT_FLOOR = 1e-4, 1e-8
ZERO_GRADIENT = re.compile(r"MultiHeadSelfAttention/k_dense/bias")
GLOBAL_BATCH = 8
TIMEOUT = 300  # generous: CI machines are slow and shared

only_tensorflow = pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute: KERAS_BACKEND=tensorflow")
only_jax = pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution: KERAS_BACKEND=jax")

WORKER = textwrap.dedent(
    """
    import json, os, sys

    cfg = json.loads(sys.argv[1])
    mode, backend = cfg["mode"], os.environ["KERAS_BACKEND"]
    if mode == "mirrored":  # two logical CPUs, before anything initialises TF
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import contextlib

    import keras
    import numpy as np

    sys.path.insert(0, cfg["repo"])
    from bert4keras import optimizers
    from bert4keras.models import build_transformer_model, get_layout_map

    # Deterministic masked-LM data: ids in [5, 50), ~15% replaced by [MASK] = 4, weights 1/0.15.
    steps, batch, seq_len = cfg["steps"], cfg["global_batch"], 16
    rng = np.random.default_rng(0)
    labels = rng.integers(5, 50, size=(steps * batch, seq_len)).astype("int32")
    masked = rng.random((steps * batch, seq_len)) < 0.15
    token_ids = np.where(masked, 4, labels).astype("int32")
    segment_ids = np.zeros_like(token_ids)
    weights = (masked / 0.15).astype("float32")

    scope, strategy = contextlib.nullcontext(), None
    if mode in ("mirrored", "mwms"):
        import tensorflow as tf

        if mode == "mirrored":
            strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        else:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
        scope = strategy.scope()
    elif mode in ("jax_dp", "jax_mp"):
        import jax

        devices = jax.devices()
        assert len(devices) == 2, devices
        if mode == "jax_dp":
            distribution = keras.distribution.DataParallel(devices=devices)
        else:
            mesh = keras.distribution.DeviceMesh((1, 2), ["batch", "model"], devices)
            layout_map = get_layout_map(mesh)
            distribution = keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch")
        keras.distribution.set_distribution(distribution)

    keras.utils.set_random_seed(0)
    with scope:  # optimizers too: they bind to the strategy current at creation
        if cfg["optimizer"] == "lamb":
            optimizer = optimizers.extend_with_piecewise_linear_lr(optimizers.LAMB)(
                learning_rate=1e-2, weight_decay_rate=0.01, exclude_from_weight_decay=["Norm", "bias"],
                lr_schedule={0: 1.0, 4: 0.2},
            )
        else:
            optimizer = optimizers.AdamWLRG(
                learning_rate=1e-2, weight_decay_rate=0.01, exclude_from_weight_decay=["Norm", "bias"],
                lr_schedule={0: 1.0, 4: 0.2}, grad_accum_steps=2,
            )
        model = build_transformer_model(
            None, None, with_mlm="linear", vocab_size=50, hidden_size=16, num_hidden_layers=2,
            num_attention_heads=2, intermediate_size=32, hidden_act="gelu", max_position=32,
            dropout_rate=0.0,
        )
        if cfg.get("init"):
            init = np.load(cfg["init"])
            for v in model.weights:
                v.assign(init["model/" + v.path])
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def state(prefix, variables):
        return {prefix + v.path: np.array(keras.ops.convert_to_numpy(v)) for v in variables}

    out = {"data/token_ids": token_ids, **{"init/" + k: v for k, v in state("", model.weights).items()}}
    out["logits_before"] = np.asarray(keras.ops.convert_to_numpy(model([token_ids[:batch], segment_ids[:batch]])))
    if backend == "tensorflow":
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices(((token_ids, segment_ids), labels, weights))
        dataset = dataset.batch(batch, drop_remainder=True)
        if mode != "mwms":
            model.fit(dataset, epochs=1, verbose=0, shuffle=False)
        else:
            # Each worker takes its half of every global batch (rebatch into 2 x 4 rows, then shard by element).
            options = tf.data.Options()
            options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
            dataset = strategy.experimental_distribute_dataset(dataset.with_options(options))
            # Keras' fit fails under MultiWorkerMirroredStrategy (keras-team/keras#20585: its symbolic
            # build reduces the input batch, a nest, across workers), so this is fit's step by hand;
            # the Keras loss divides by the replica count as in fit, apply_gradients all-reduces.
            loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

            @tf.function
            def train_step(data):
                def step(x, y, sample_weight):
                    with tf.GradientTape() as tape:
                        loss = loss_fn(y, model(x, training=True), sample_weight=sample_weight)
                    grads = tape.gradient(loss, model.trainable_variables)
                    optimizer.apply_gradients(zip(grads, model.trainable_variables))

                strategy.run(step, args=data)

            seen = []
            for data in dataset:
                seen.append(np.concatenate([np.asarray(t) for t in strategy.experimental_local_results(data[0][0])]))
                train_step(data)
            out["seen/token_ids"] = np.stack(seen)
    else:
        x = [token_ids, segment_ids]
        model.fit(x, labels, sample_weight=weights, batch_size=batch, epochs=1, verbose=0, shuffle=False)
    if mode == "jax_mp":
        out["sharded"] = np.array(sorted(v.path for v in model.weights if not v.value.sharding.is_fully_replicated))
    out.update(state("model/", model.weights))
    out.update(state("optimizer/", optimizer.variables))
    np.savez(cfg["out"], **out)
    print("ok", mode)
    """
)


def _command(tmp_path, mode, optimizer, steps, out, init=None):
    script = tmp_path / "worker.py"
    if not script.exists():
        script.write_text(WORKER)
    cfg = dict(mode=mode, optimizer=optimizer, steps=steps, global_batch=GLOBAL_BATCH, out=str(out), repo=REPO)
    cfg["init"] = None if init is None else str(init)
    return [sys.executable, str(script), json.dumps(cfg)]


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "XLA_FLAGS")}
    env.update(KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    env.update(extra)
    return env


def _log_tail(path, n=3000):
    return path.read_text(errors="replace")[-n:] if path.exists() else ""


def run_workers(tmp_path, mode, optimizer, steps, init=None, envs=({},)):
    """Run one worker process per entry of `envs` (concurrently, extra environment variables each)
    and return their .npz contents. All must finish within TIMEOUT s; any failure stops the rest."""
    procs = []
    try:
        for i, extra in enumerate(envs):
            out, log = tmp_path / f"{mode}-{optimizer}-{i}.npz", tmp_path / f"{mode}-{optimizer}-{i}.log"
            with open(log, "w") as f:
                command = _command(tmp_path, mode, optimizer, steps, out, init)
                proc = subprocess.Popen(command, env=_env(**extra), stdout=f, stderr=subprocess.STDOUT, cwd=tmp_path)
            procs.append((proc, out, log))
        deadline = time.monotonic() + TIMEOUT
        while any(proc.poll() is None for proc, _, _ in procs):
            if any(proc.poll() not in (None, 0) for proc, _, _ in procs):
                break  # the others may wait forever for a dead peer
            if time.monotonic() > deadline:
                logs = "\n".join(_log_tail(log) for *_, log in procs)
                pytest.fail(f"{mode} workers timed out after {TIMEOUT} s:\n{logs}")
            time.sleep(0.2)
        failed = [(proc.returncode, log) for proc, _, log in procs if proc.poll() not in (None, 0)]
        assert not failed, f"{mode} worker failed ({failed[0][0]}):\n{_log_tail(failed[0][1])}"
        results = []
        for _, out, _ in procs:
            with np.load(out) as f:
                results.append(dict(f))
        return results
    finally:
        for proc, _, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    """`one_device(optimizer, steps)`: the reference run on one device, cached per module."""
    cache = {}

    def run(optimizer, steps):
        if (optimizer, steps) not in cache:
            path = tmp_path_factory.mktemp(f"one-device-{optimizer}")
            (result,) = run_workers(path, "single", optimizer, steps)
            init = path / "init.npz"
            np.savez(init, **{"model/" + k[len("init/"):]: v for k, v in result.items() if k.startswith("init/")})
            cache[optimizer, steps] = result, init
        return cache[optimizer, steps]

    return run


def max_diffs(result, reference, prefix, scaled=False):
    """{key: max |result - reference|} over the arrays under `prefix`, divided by max |reference| if `scaled`."""
    keys = sorted(k for k in reference if k.startswith(prefix))
    assert keys and keys == sorted(k for k in result if k.startswith(prefix)), prefix
    diffs = {}
    for key in keys:
        ref = reference[key].astype("float64")
        diff = float(np.max(np.abs(result[key] - ref), initial=0.0))
        diffs[key] = diff / max(float(np.max(np.abs(ref), initial=0.0)), SLOT_FLOOR) if scaled else diff
    return diffs


def assert_same_training(result, reference):
    """Same data, same start; after training weights within TOLERANCE, optimizer slots within
    SLOT_RTOL of their scale; every weight with a gradient moved by more than MOVED."""
    np.testing.assert_array_equal(result["data/token_ids"], reference["data/token_ids"])
    init = max_diffs(result, reference, "init/")
    assert max(init.values()) == 0.0, "runs started from different weights"
    np.testing.assert_allclose(result["logits_before"], reference["logits_before"], rtol=0, atol=TOLERANCE)
    trained = [k for k in init if not ZERO_GRADIENT.search(k)]
    moved = {k: float(np.max(np.abs(reference["model/" + k[len("init/"):]] - reference[k]))) for k in trained}
    assert min(moved.values()) > MOVED, sorted(moved.items(), key=lambda kv: kv[1])[:3]
    weights = max_diffs(result, reference, "model/")
    slots = max_diffs(result, reference, "optimizer/", scaled=True)
    worst_weight, worst_slot = max(weights, key=weights.get), max(slots, key=slots.get)
    print(f"max |weight diff| {weights[worst_weight]:.1e} ({worst_weight}); "
          f"max slot diff / scale {slots[worst_slot]:.1e} ({worst_slot}); smallest move {min(moved.values()):.1e}")
    assert weights[worst_weight] <= TOLERANCE, sorted(weights.items(), key=lambda kv: -kv[1])[:5]
    assert slots[worst_slot] <= SLOT_RTOL, sorted(slots.items(), key=lambda kv: -kv[1])[:5]


def free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


# --------------------------------------------------------------------------------- tf.distribute

# LAMB with a piecewise learning rate; AdamW with gradient accumulation (2 micro-steps): 5 steps
# are two updates and one gradient still in the accumulators, both compared.
CASES = [("lamb", 3), ("adamwlrg", 5)]


@only_tensorflow
@pytest.mark.parametrize("optimizer,steps", CASES)
def test_mirrored_strategy_trains_like_one_device(tmp_path, one_device, optimizer, steps):
    reference, init = one_device(optimizer, steps)
    (result,) = run_workers(tmp_path, "mirrored", optimizer, steps, init=init)
    assert_same_training(result, reference)


@only_tensorflow
def test_multi_worker_mirrored_strategy_trains_like_one_device(tmp_path, one_device):
    optimizer, steps = CASES[1]
    reference, init = one_device(optimizer, steps)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    envs = [{"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})} for i in range(2)]
    results = run_workers(tmp_path, "mwms", optimizer, steps, init=init, envs=envs)
    # Step k of worker 0 and worker 1 together are exactly global batch k, in order.
    tokens = reference["data/token_ids"].reshape(steps, GLOBAL_BATCH, -1)
    np.testing.assert_array_equal(np.concatenate([r["seen/token_ids"] for r in results], axis=1), tokens)
    for result in results:
        assert_same_training(result, reference)


# ----------------------------------------------------------------------------- keras.distribution

MP_KERNELS = [f"MultiHeadSelfAttention/{x}_dense" for x in "qkvo"] + ["FeedForward/i0_dense", "FeedForward/o_dense"]
JAX_TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


@only_jax
@pytest.mark.parametrize("mode", ["jax_dp", "jax_mp"])
def test_jax_distribution_trains_like_one_device(tmp_path, one_device, mode):
    optimizer, steps = CASES[0]
    reference, init = one_device(optimizer, steps)
    (result,) = run_workers(tmp_path, mode, optimizer, steps, init=init, envs=[JAX_TWO_DEVICES])
    if mode == "jax_mp":  # the layout map reached every big kernel, and they stayed split through fit
        blocks = [f"Transformer-{i}-{name}/kernel" for i in range(2) for name in MP_KERNELS]
        assert sorted(result["sharded"]) == sorted(["Embedding-Token/embeddings"] + blocks)
    assert_same_training(result, reference)
