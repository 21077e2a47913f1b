"""TF SavedModel export (`TransformerModel.export`, `models.export_saved_model`): the serving
signature takes our inputs by name as int32 ids, and a fresh process that never imports bert4keras
loads it with `tf.saved_model.load` and gets the same outputs as `model.predict`, at sequence
lengths the export never saw. TensorFlow and JAX backends; torch says why it cannot."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from bert4keras.models import build_transformer_model, export_saved_model
from conftest import TINY_BERT

BACKEND = keras.backend.backend()

# Runs in a fresh interpreter: TensorFlow only, no bert4keras, no Keras.
LOAD_AND_SERVE = """
import json, sys
import numpy as np
import tensorflow as tf

cases = json.load(open(sys.argv[1]))
for case in cases:
    serve = tf.saved_model.load(case["path"]).signatures["serving_default"]
    inputs = dict(np.load(case["inputs"]))
    outputs = serve(**{name: tf.constant(value) for name, value in inputs.items()})
    np.save(case["outputs"], list(outputs.values())[0].numpy())
    print(case["path"], sorted(serve.structured_input_signature[1]))
"""


def classifier():
    bert = build_transformer_model(**TINY_BERT, with_pool=True)
    output = keras.layers.Dense(2, activation="softmax", name="Classifier")(bert.output)
    return keras.Model(bert.inputs, output), ["Input_Token", "Input_Segment"]


def gpt2_lm():
    config = dict(TINY_BERT, max_position=64)
    config.pop("segment_vocab_size")
    return build_transformer_model(model="gpt2", **config), ["Input_Token"]


def t5():
    config = dict(TINY_BERT, relative_attention_num_buckets=8)
    for key in ("segment_vocab_size", "max_position"):
        config.pop(key)
    return build_transformer_model(model="t5.1.1", **config), ["Encoder_Input_Token", "Decoder_Input_Token"]


@pytest.mark.slow
@pytest.mark.skipif(BACKEND == "torch", reason="torch cannot export a SavedModel here (see the torch test)")
def test_saved_model_serves_the_same_outputs_in_a_fresh_process(tmp_path):
    rng = np.random.default_rng(0)
    cases, expected = [], {}
    for build in (classifier, gpt2_lm, t5):
        model, names = build()
        path = str(tmp_path / build.__name__)
        if build is classifier:
            export_saved_model(model, path, verbose=False)  # a plain keras.Model around ours
        else:
            model.export(path, verbose=False)
        for length in (7, 13):  # one lengths per input group: T5's encoder and decoder differ
            inputs = {name: rng.integers(1, TINY_BERT["vocab_size"], (3, length + 2 * i)).astype("int32")
                      for i, name in enumerate(names)}
            if "Input_Segment" in inputs:
                inputs["Input_Segment"] = (inputs["Input_Segment"][:, :length] % 2).astype("int32")
                inputs["Input_Token"] = inputs["Input_Token"][:, :length]
            key = f"{build.__name__}_{length}"
            np.savez(tmp_path / f"{key}_in.npz", **inputs)
            cases.append({"path": path, "inputs": str(tmp_path / f"{key}_in.npz"),
                          "outputs": str(tmp_path / f"{key}_out.npy")})
            arrays = [inputs[name] for name in names]
            expected[key] = model.predict_on_batch(arrays if len(arrays) > 1 else arrays[0])
    with open(tmp_path / "cases.json", "w") as f:
        json.dump(cases, f)
    result = subprocess.run([sys.executable, "-c", LOAD_AND_SERVE, str(tmp_path / "cases.json")],
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "'Input_Segment', 'Input_Token'" in result.stdout
    for case in cases:
        key = os.path.basename(case["outputs"])[: -len("_out.npy")]
        np.testing.assert_allclose(np.load(case["outputs"]), expected[key], atol=2e-5, rtol=0)


@pytest.mark.skipif(BACKEND == "torch", reason="torch cannot export a SavedModel here")
def test_serving_signature_takes_int32_ids_by_name(tmp_path):
    import tensorflow as tf

    model, _ = classifier()
    export_saved_model(model, str(tmp_path / "m"), verbose=False)
    signature = tf.saved_model.load(str(tmp_path / "m")).signatures["serving_default"]
    specs = signature.structured_input_signature[1]
    assert {name: (spec.dtype, tuple(spec.shape)) for name, spec in specs.items()} == {
        "Input_Token": (tf.int32, (None, None)), "Input_Segment": (tf.int32, (None, None))}


@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend's limitation")
def test_torch_export_says_why_not(tmp_path):
    model, _ = classifier()
    with pytest.raises(NotImplementedError, match="torch_xla.*KERAS_BACKEND=tensorflow or jax"):
        export_saved_model(model, str(tmp_path / "m"))
    with pytest.raises(NotImplementedError, match="torch_xla"):
        build_transformer_model(**TINY_BERT).export(str(tmp_path / "m"))
