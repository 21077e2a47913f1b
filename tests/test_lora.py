"""LoRA adapters (bert4keras.lora): a LoRA model starts as its base model, trains only its adapters
(and new layers), and its adapters save, load and merge without changing what it computes."""

import os

import keras
import numpy as np
import pytest

from bert4keras.lora import enable_lora, load_lora_weights, lora_weights, merge_lora, save_lora_weights
from bert4keras.models import build_transformer_model
from conftest import TINY_BERT

RANK = 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random tiny BERT written as an official checkpoint (the 'pretrained' base)."""
    builder = build_transformer_model(**TINY_BERT, return_keras_model=False)
    return builder.save_weights_as_checkpoint(str(tmp_path_factory.mktemp("base")) + os.sep)


@pytest.fixture
def inputs():
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, TINY_BERT["vocab_size"], size=(4, 12)).astype("int32")
    return [token_ids, np.zeros_like(token_ids)]


def adapter_paths(targets=("q_dense", "v_dense")):
    return {f"Transformer-{i}-MultiHeadSelfAttention/{t}/lora_kernel_{ab}"
            for i in range(TINY_BERT["num_hidden_layers"]) for t in targets for ab in "ab"}


def randomize_adapters(model, seed=1):
    """Stand-in for training: non-zero B matrices, so the adapters change the output."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        if variable.name == "lora_kernel_b":
            variable.assign(rng.normal(0, 0.5, variable.shape).astype("float32"))


def test_lora_model_starts_as_its_base_and_trains_only_the_adapters(checkpoint, inputs):
    base = build_transformer_model(**TINY_BERT, checkpoint_path=checkpoint)
    bert = build_transformer_model(**TINY_BERT, checkpoint_path=checkpoint, lora_rank=RANK)
    np.testing.assert_allclose(bert.predict_on_batch(inputs), base.predict_on_batch(inputs), atol=1e-6, rtol=0)
    assert {v.path for v in bert.trainable_weights} == adapter_paths()

    pooled = keras.layers.GlobalAveragePooling1D(name="Head-Pool")(bert.output)
    output = keras.layers.Dense(2, activation="softmax", name="Head-Dense")(pooled)
    classifier = keras.Model(bert.inputs, output)
    classifier.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    before = {v.path: keras.ops.convert_to_numpy(v).copy() for v in classifier.weights}
    labels = np.array([0, 1, 1, 0])
    for _ in range(3):
        classifier.train_on_batch(inputs, labels)
    changed = {v.path for v in classifier.weights
               if not np.array_equal(keras.ops.convert_to_numpy(v), before[v.path])}
    head = {"Head-Dense/kernel", "Head-Dense/bias"}
    assert changed <= adapter_paths() | head  # nothing frozen moved
    # every B moved (A's gradient is zero while B is, and tiny for a few steps after)
    assert {p for p in adapter_paths() if p.endswith("_b")} | head <= changed


def test_trainable_layers_stay_trainable():
    bert = build_transformer_model(**TINY_BERT, with_pool=True)
    enable_lora(bert, 2, trainable_layers=("Pooler-Dense",))
    assert {v.path for v in bert.trainable_weights} == \
        adapter_paths() | {"Pooler-Dense/kernel", "Pooler-Dense/bias"}
    with pytest.raises(ValueError, match="'Pooler' matches no layer"):
        enable_lora(build_transformer_model(**TINY_BERT), 2, trainable_layers=("Pooler",))


def test_targets_by_name_or_path_glob(checkpoint):
    bert = build_transformer_model(**TINY_BERT, lora_rank=2, lora_targets=("*FeedForward/o_dense", "k_dense"))
    paths = set(lora_weights(bert))
    assert paths == {f"Transformer-{i}-FeedForward/o_dense/lora_kernel_{ab}" for i in range(2) for ab in "ab"} | \
        adapter_paths(["k_dense"])
    assert lora_weights(bert)["Transformer-0-FeedForward/o_dense/lora_kernel_a"].shape == (TINY_BERT["intermediate_size"], 2)


def test_adapters_save_load_and_merge(checkpoint, inputs, tmp_path):
    builder = build_transformer_model(**TINY_BERT, checkpoint_path=checkpoint, lora_rank=RANK,
                                      return_keras_model=False)
    bert = builder.model
    randomize_adapters(bert)
    tuned = bert.predict_on_batch(inputs)
    base = build_transformer_model(**TINY_BERT, checkpoint_path=checkpoint)
    assert np.abs(tuned - base.predict_on_batch(inputs)).max() > 1e-2  # the adapters matter

    # only the adapters go to the file, and they load into a fresh LoRA model
    path = save_lora_weights(bert, tmp_path / "adapter.safetensors")
    from safetensors.numpy import load_file

    assert set(load_file(path)) == adapter_paths()
    fresh = build_transformer_model(**TINY_BERT, checkpoint_path=checkpoint, lora_rank=RANK)
    load_lora_weights(fresh, path)
    np.testing.assert_allclose(fresh.predict_on_batch(inputs), tuned, atol=1e-6, rtol=0)

    # the official checkpoint holds merged kernels: a plain model loads the tuned weights
    merged_ckpt = builder.save_weights_as_checkpoint(str(tmp_path / "merged") + os.sep)
    plain = build_transformer_model(**TINY_BERT, checkpoint_path=merged_ckpt)
    np.testing.assert_allclose(plain.predict_on_batch(inputs), tuned, atol=1e-5, rtol=0)

    # so do Keras' own weight files
    bert.save_weights(str(tmp_path / "tuned.weights.h5"))
    plain = build_transformer_model(**TINY_BERT)
    plain.load_weights(str(tmp_path / "tuned.weights.h5"))
    np.testing.assert_allclose(plain.predict_on_batch(inputs), tuned, atol=1e-5, rtol=0)

    # merging folds the adapters into the kernels: same outputs, adapters restarted at B = 0
    kernel = keras.ops.convert_to_numpy(bert.get_layer("Transformer-0-MultiHeadSelfAttention").q_dense.kernel)
    assert len(merge_lora(bert)) == 2 * TINY_BERT["num_hidden_layers"]
    np.testing.assert_allclose(bert.predict_on_batch(inputs), tuned, atol=1e-5, rtol=0)
    assert not any(v.any() for k, v in lora_weights(bert).items() if k.endswith("lora_kernel_b"))
    layer = bert.get_layer("Transformer-0-MultiHeadSelfAttention").q_dense
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.kernel), kernel, atol=1e-6, rtol=0)

    # a checkpoint loads into a LoRA model's kernels (the adapters are not in its mapping)
    builder.load_weights_from_checkpoint(checkpoint)
    np.testing.assert_allclose(bert.predict_on_batch(inputs), base.predict_on_batch(inputs), atol=1e-6, rtol=0)


def test_bad_lora_arguments_are_named(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="'nope' matches no Dense layer.*q_dense"):
        build_transformer_model(**TINY_BERT, lora_rank=2, lora_targets=("nope",))
    with pytest.raises(TypeError, match="without lora_rank"):
        build_transformer_model(**TINY_BERT, lora_targets=("q_dense",))
    with pytest.raises(ValueError, match="rank must be an int >= 1"):
        build_transformer_model(**TINY_BERT, lora_rank=0)
    with pytest.raises(TypeError, match="list of names"):
        build_transformer_model(**TINY_BERT, lora_rank=2, lora_targets="q_dense")
    bert = build_transformer_model(**TINY_BERT, lora_rank=2)
    with pytest.raises(ValueError, match="already has LoRA"):
        enable_lora(bert, 2)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        save_lora_weights(build_transformer_model(**TINY_BERT), tmp_path / "none.safetensors")
    path = save_lora_weights(bert, tmp_path / "rank2.safetensors")
    with pytest.raises(ValueError, match=r"shape \(16, 2\).*\(16, 4\)"):
        load_lora_weights(build_transformer_model(**TINY_BERT, lora_rank=4), path)
    with pytest.raises(ValueError, match="missing from the file.*k_dense"):
        load_lora_weights(build_transformer_model(**TINY_BERT, lora_rank=2, lora_targets=("q_dense", "k_dense",
                                                                                          "v_dense")), path)
    with pytest.raises(FileNotFoundError, match="no adapter file"):
        load_lora_weights(bert, tmp_path / "missing.safetensors")


def test_adapter_file_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    import safetensors.numpy

    bert = build_transformer_model(**TINY_BERT, lora_rank=2)
    path = save_lora_weights(bert, tmp_path / "adapter.safetensors")
    saved = open(path, "rb").read()
    randomize_adapters(bert)

    def failing_save(tensors, filename, metadata=None):
        open(filename, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", failing_save)
    with pytest.raises(OSError, match="disk full"):
        save_lora_weights(bert, path)
    assert open(path, "rb").read() == saved
    assert os.listdir(tmp_path) == ["adapter.safetensors"]


@pytest.mark.slow
def test_sst2_example_trains_lora_adapters_and_tests_the_quantized_model():
    import re
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, os.path.join(repo, "examples", "task_sentiment_sst2.py"), "--tiny", "--train-size", "128",
               "--batch-size", "16", "--maxlen", "32", "--valid-size", "0", "--test-size", "32",
               "--lora-rank", "4", "--quantize", "int8"]
    result = subprocess.run(command, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    trainable, total = (int(n.replace(",", "")) for n in
                        re.search(r"trainable parameters: ([\d,]+) of ([\d,]+)", result.stdout).groups())
    # LoRA on q/v of 2 blocks (hidden 32, rank 4), the pooler and the classifier
    assert trainable == 2 * 2 * (32 * 4 + 4 * 32) + (32 * 32 + 32) + (32 * 2 + 2)
    assert total > 10 * trainable
    assert re.search(r"SST-2 test accuracy, int8-quantized: [\d.]+ \(float: [\d.]+\)", result.stdout)
    assert "does not have a `quantize`" not in result.stderr
