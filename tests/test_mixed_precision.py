"""Mixed precision (``mixed_float16``, ``mixed_bfloat16``) on the current Keras backend.

Under each policy, tiny BERT (+MLM), T5 v1.1 and GlobalPointer / CRF heads: outputs
within tolerance of the float32 model with the same weights (float16 relative 5e-3,
bfloat16 2e-2, relative to the largest float32 logit; 1.5x for T5's deeper stack), masked logits finite and far below
the rest, a few training steps with finite losses (``compile`` wraps the optimizer in a
``LossScaleOptimizer`` under ``mixed_float16``), variables kept in float32, and ``.keras`` /
official-checkpoint round trips giving identical outputs.
"""

import json

import keras
import numpy as np
import pytest
from keras import ops

from bert4keras.backend import MASK_VALUE
from bert4keras.layers import ConditionalRandomField, GlobalPointer
from bert4keras.models import build_transformer_model

from test_round_trips import FAMILIES, inputs_for, outputs_of

TOLERANCE = {"mixed_float16": 5e-3, "mixed_bfloat16": 2e-2}
COMPUTE = {"mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


@pytest.fixture(params=list(TOLERANCE))
def policy(request):
    """Set the global dtype policy for the test; restore the previous one afterwards."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    try:
        yield request.param
    finally:
        keras.config.set_dtype_policy(previous)


def in_float32(build):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        return build()
    finally:
        keras.config.set_dtype_policy(previous)


def config_file(tmp_path, family):
    path = tmp_path / f"{family}.json"
    path.write_text(json.dumps(FAMILIES[family][0]))
    return str(path)


def moderate_weights(model, seed, std=0.2):
    """Random weights a little larger than the default init (std 0.2; LayerNorm ~1), so that
    attention is not uniform and rounding shows."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        v = rng.normal(0.0, std, tuple(w.shape))
        if "gamma" in w.path or "scale" in w.path:
            v = 1.0 + 0.5 * v
        values.append(v.astype("float32"))
    model.set_weights(values)


def assert_close_to_float32(got, want, policy, what, factor=1):
    tol = TOLERANCE[policy] * factor
    for i, (a, b) in enumerate(zip(got, want)):
        assert np.isfinite(a).all(), f"{what} output {i}: non-finite values under {policy}"
        scale = max(float(np.max(np.abs(b))), 1e-6)
        err = float(np.max(np.abs(a - b))) / scale
        assert err <= tol, f"{what} output {i}: max |mixed - float32| / max|float32| = {err:.2g} > {tol} ({policy})"


def check_float32_variables(model):
    bad = [w.path for w in model.weights if w.dtype != "float32"]
    assert not bad, f"variables not in float32: {bad[:3]}"


def builders(tmp_path):
    """name -> (build function, output kind) for the models under test."""
    def bert():
        return build_transformer_model(config_file(tmp_path, "bert"), with_mlm="linear", return_keras_model=False)

    def t5():
        return build_transformer_model(config_file(tmp_path, "t5.1.1"), model="t5.1.1", with_lm="linear",
                                       return_keras_model=False)

    return {"bert_mlm": bert, "t5.1.1": t5}


MODELS = ["bert_mlm", "t5.1.1"]  # GPT-2 shares BERT's float32 LayerNorm/softmax paths; left out to save CI time


@pytest.mark.parametrize("name", MODELS)
def test_logits_match_float32_and_checkpoint_round_trip(policy, name, tmp_path):
    build = builders(tmp_path)[name]
    mixed = build()
    model = mixed.model
    check_float32_variables(model)
    assert model.outputs[0].dtype in ("float32", COMPUTE[policy])
    # (std 0.2 makes T5's unscaled attention so sharp that its error varies 5x between draws)
    moderate_weights(model, seed=len(name), std=0.1 if name == "t5.1.1" else 0.2)
    reference = in_float32(build).model
    reference.set_weights(model.get_weights())
    inputs = inputs_for(model)
    got = outputs_of(model, inputs)
    # T5 runs twice as many blocks (encoder + decoder with cross-attention) with unscaled
    # attention logits; with std-0.1 weights its error over 8 draws is float16 <= 0.003 and
    # bfloat16 <= 0.018 (BERT, std 0.2: 0.0015 and 0.011), hence 1.5x the tolerance.
    assert_close_to_float32(got, outputs_of(reference, inputs), policy, name, factor=1.5 if name == "t5.1.1" else 1)

    if name == "bert_mlm":  # official checkpoint export -> import, under the mixed policy
        prefix = str(tmp_path / "ckpt" / "model.ckpt")
        mixed.save_weights_as_checkpoint(prefix)
        reloaded = build_transformer_model(config_file(tmp_path, "bert"), prefix, with_mlm="linear")
        for a, b in zip(outputs_of(reloaded, inputs), got):
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: checkpoint reload under {policy}")


def bert_with_heads(seed):
    """Tiny BERT with two task heads: GlobalPointer span logits and CRF emissions."""
    bert = build_transformer_model(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=32, max_position=32)
    x = bert.output
    spans = GlobalPointer(heads=2, head_size=8, name="GlobalPointer")(x)
    emissions = ConditionalRandomField(name="CRF")(keras.layers.Dense(5, name="Emissions")(x))
    model = keras.Model(bert.inputs, [spans, emissions])
    moderate_weights(model, seed)
    return model


def head_data(seed=0, n=8, length=10):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 60, size=(n, length)).astype("int32")
    lengths = rng.integers(4, length + 1, size=n)
    for i, l in enumerate(lengths):
        ids[i, l:] = 0
    return [ids, np.zeros_like(ids)], lengths


def numpy_outputs(model, inputs):
    return [keras.ops.convert_to_numpy(o) for o in model(inputs, training=False)]


def test_task_heads_train_save_and_match_float32(policy, tmp_path):
    from bert4keras.backend import global_pointer_crossentropy

    model = bert_with_heads(seed=3)
    check_float32_variables(model)
    inputs, lengths = head_data()
    reference = in_float32(lambda: bert_with_heads(seed=3))
    reference.set_weights(model.get_weights())
    for head, got, want in zip(["GlobalPointer", "CRF"], numpy_outputs(model, inputs), numpy_outputs(reference, inputs)):
        assert got.dtype == np.float32, f"{head} logits are {got.dtype}, expected float32"
        assert np.isfinite(got).all(), f"{head}: masked logits overflow under {policy}"
        valid = got > MASK_VALUE / 10
        np.testing.assert_array_equal(valid, want > MASK_VALUE / 10)
        if head == "GlobalPointer":  # (the CRF masks only what Keras masking passes it; none here)
            assert (~valid).any(), "the batch should contain masked spans"
        # a span logit is a product q.k of two rounded vectors: twice their relative error
        assert_close_to_float32([np.where(valid, got, 0)], [np.where(valid, want, 0)], policy, head,
                                factor=2 if head == "GlobalPointer" else 1)

    # a few training steps on both heads
    spans = np.zeros((8, 2, 10, 10), "float32")
    for i, l in enumerate(lengths):
        spans[i, i % 2, 1, min(2, l - 1)] = 1
    tags = np.random.default_rng(1).integers(0, 5, size=inputs[0].shape).astype("int32")
    losses = [global_pointer_crossentropy, model.get_layer("CRF").sparse_loss]
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=losses)
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer), "compile did not add loss scaling"
        # the same, starting from a loss scale of 2**8 instead of 2**15: the default needs more
        # steps (each overflowing step is skipped and halves the scale) than a test affords
        optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3), initial_scale=2.0**8)
    else:
        optimizer = keras.optimizers.Adam(1e-3)
    model.compile(optimizer=optimizer, loss=losses, jit_compile=False)  # no XLA: compiling costs more than 4 steps
    before = [np.array(w) for w in model.get_weights()]
    history = model.fit(inputs, [spans, tags], batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all(), history.history["loss"]
    changed = sum(not np.array_equal(a, np.array(b)) for a, b in zip(before, model.get_weights()))
    assert changed >= len(before) // 2, f"only {changed} of {len(before)} weights changed in training"
    check_float32_variables(model)

    # .keras round trip keeps the policy and the outputs
    path = str(tmp_path / "heads.keras")
    model.save(path)
    after = numpy_outputs(model, inputs)
    loaded = keras.saving.load_model(path, compile=False)
    assert loaded.get_layer("Transformer-0-FeedForward").dtype_policy.name == policy
    for a, b in zip(numpy_outputs(loaded, inputs), after):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("mask_kind", ["bool", "additive", "bool+t5_bias"])
def test_attention_with_fully_masked_rows_stays_finite(policy, mask_kind):
    """A query row whose keys are all masked (an all-padding sequence) must give finite outputs
    as in float32, not NaN: the -1e12 mask constant would be -inf in float16, and softmax over
    a row of -inf is NaN. The other sequence must match float32."""
    from bert4keras.layers import MultiHeadAttention

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 8)).astype("float32")
    keep = np.ones((2, 1, 1, 5), bool)
    keep[1] = False  # the second sequence: every key masked
    if mask_kind == "bool":
        extra, kwargs = [keep], {}
    elif mask_kind == "additive":
        extra, kwargs = [np.where(keep, 0.0, MASK_VALUE).astype("float32")], {}
    else:
        extra, kwargs = [keep, rng.normal(size=(5, 5, 2)).astype("float32")], dict(p_bias="t5_relative")

    def run():
        layer = MultiHeadAttention(heads=2, head_size=4, name="mha")
        out = layer([x, x, x] + extra, **kwargs)
        return layer, out

    layer, out = run()
    ref_layer, _ = in_float32(run)
    ref_layer.set_weights(layer.get_weights())
    got = keras.ops.convert_to_numpy(layer([x, x, x] + extra, **kwargs)).astype("float32")
    want = keras.ops.convert_to_numpy(ref_layer([x, x, x] + extra, **kwargs))
    assert np.isfinite(got).all(), f"NaN/inf in rows {np.unique(np.nonzero(~np.isfinite(got))[0])} under {policy}"
    # the fully masked sequence's values are meaningless (padding): only finiteness is asked
    assert_close_to_float32([got[:1]], [want[:1]], policy, f"attention, {mask_kind} mask")


def test_sequence_masking_minus_inf_is_finite_in_float16():
    """'-inf' masking of a float16 tensor: finite, below every real value, softmax puts ~0 there."""
    from bert4keras.backend import mask_value, sequence_masking

    x = ops.convert_to_tensor(np.array([[1.0, 2.0, 3.0]], "float16"))
    out = keras.ops.convert_to_numpy(sequence_masking(x, np.array([[1, 1, 0]]), "-inf"))
    assert out.dtype == np.float16 and np.isfinite(out).all(), out
    assert out[0, 2] == np.float16(mask_value("float16")) and out[0, 2] < -30000
    probs = keras.ops.convert_to_numpy(ops.softmax(ops.cast(out, "float32")))
    assert probs[0, 2] == 0.0
    assert mask_value("float32") == mask_value("bfloat16") == MASK_VALUE  # bfloat16 has float32's range
