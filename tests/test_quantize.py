"""Post-training quantization (Keras' `Model.quantize`) on every family: the Dense layers inside
attention and feed-forward blocks, the token embeddings and the tied LM head are quantized, no
warning is raised, the outputs stay close to float32's, and the quantized model round-trips
through `.keras`."""

import warnings

import keras
import numpy as np
import pytest

from bert4keras import _keras_internals as internals
from bert4keras.models import build_transformer_model, quantizable

SIZES = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
FAMILIES = [
    ("bert", dict(with_mlm=True)),  # MLM head tied to the token embeddings
    ("albert", dict(with_mlm=True)),
    ("nezha", {}),
    ("roformer", {}),
    ("electra", {}),
    ("gpt2", {}),  # tied LM head
    ("gpt2_ml", {}),
    ("t5.1.0", {}),  # tied, rescaled LM head
    ("t5.1.1", {}),  # gated feed-forward, untied head
]
# Quantization is backend-independent Keras code around the same layers: every family runs on TensorFlow; on
# JAX and torch (where each family costs 20-45 s of compiling) one encoder with a tied MLM head, GPT-2 and T5.
if keras.backend.backend() != "tensorflow":
    FAMILIES = [(family, kwargs) for family, kwargs in FAMILIES if family in ("bert", "gpt2", "t5.1.1")]


def build(model, **kwargs):
    sizes = dict(SIZES, relative_attention_num_buckets=8) if model.startswith("t5") else dict(SIZES, max_position=64)
    return build_transformer_model(model=model, **sizes, **kwargs)


def inputs_for(model):
    rng = np.random.default_rng(0)
    x = [rng.integers(1, SIZES["vocab_size"], (2, 10)).astype("int32") for _ in model.inputs]
    if len(x) == 2 and model.inputs[1].name == "Input-Segment":
        x[1] = np.zeros_like(x[1])
    return x if len(x) > 1 else x[0]


def quantizable_layers(model):
    return [layer for layer in internals.sublayers(model)
            if isinstance(layer, (keras.layers.Dense, keras.layers.Embedding))]


def relative_error(got, expected):
    return np.linalg.norm(np.asarray(got) - expected) / np.linalg.norm(expected)


@pytest.mark.parametrize("family, kwargs", FAMILIES)
def test_int8_quantizes_every_dense_and_embedding_silently_and_round_trips(family, kwargs, tmp_path):
    model = build(family, **kwargs)
    x = inputs_for(model)
    expected = model.predict_on_batch(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not one warning per norm, input or position layer
        model.quantize("int8")
    layers = quantizable_layers(model)
    assert len(layers) >= 4 * SIZES["num_hidden_layers"]
    assert {layer.path: layer.quantization_mode for layer in layers} == {layer.path: "int8" for layer in layers}
    assert model.get_layer("Embedding-Token").embeddings.dtype == "int8"
    got = model.predict_on_batch(x)
    assert relative_error(got, expected) < 0.05

    model.save(tmp_path / "int8.keras")
    reloaded = keras.models.load_model(tmp_path / "int8.keras")
    assert {layer.path: layer.quantization_mode for layer in quantizable_layers(reloaded)} == \
        {layer.path: "int8" for layer in layers}
    np.testing.assert_allclose(reloaded.predict_on_batch(x), got, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["bert", "gpt2"] if keras.backend.backend() == "tensorflow" else ["gpt2"])
def test_int4_round_trips(family, tmp_path):
    model = build(family, **({"with_mlm": True} if family == "bert" else {}))
    x = inputs_for(model)
    expected = model.predict_on_batch(x)
    model.quantize("int4")
    got = model.predict_on_batch(x)
    assert all(layer.quantization_mode == "int4" for layer in quantizable_layers(model))
    assert relative_error(got, expected) < 0.2
    model.save(tmp_path / "int4.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "int4.keras").predict_on_batch(x), got,
                               atol=1e-6, rtol=0)


def test_a_classifier_built_around_the_encoder_quantizes_and_round_trips(tmp_path):
    bert = build("bert", with_pool=True)
    output = keras.layers.Dense(2, activation="softmax", name="Head")(bert.output)
    classifier = keras.Model(bert.inputs, output)
    x = inputs_for(bert)
    expected = classifier.predict_on_batch(x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier.quantize("int8", filters=quantizable)
    # none per input or dropout layer (Keras' own Dense "Head" may still warn about NumPy 2)
    assert not [w for w in caught if "does not have a `quantize`" in str(w.message)]
    assert classifier.get_layer("Transformer-0-MultiHeadSelfAttention").q_dense.quantization_mode == "int8"
    got = classifier.predict_on_batch(x)
    np.testing.assert_allclose(got, expected, atol=0.02, rtol=0)
    classifier.save(tmp_path / "classifier.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "classifier.keras").predict_on_batch(x), got,
                               atol=1e-6, rtol=0)


def test_cached_decoding_of_a_quantized_model_equals_its_full_recomputation():
    builder = build_transformer_model(model="gpt2", **SIZES, max_position=64, return_keras_model=False)
    builder.model.quantize("int8")
    prompt = np.random.default_rng(0).integers(1, SIZES["vocab_size"], (2, 6)).astype("int32")
    outputs = np.random.default_rng(1).integers(1, SIZES["vocab_size"], (2, 4)).astype("int32")
    full, cached = builder.predictor(), builder.predictor(max_length=16)
    states = None
    for t in range(outputs.shape[1] + 1):
        expected, _ = full([prompt], outputs[:, :t])
        got, states = cached([prompt], outputs[:, :t], states)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
