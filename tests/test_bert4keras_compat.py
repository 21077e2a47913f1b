"""Model and data-pipeline behaviours of bert4keras 0.11.5 that its users' scripts rely on.

(The `K` namespace and the snippets/tokenizer surface have their own test files; the 32 reference
scripts themselves run in test_reference_examples.py.)
"""

import keras
import numpy as np
import pytest
from keras import ops

from bert4keras.layers import Loss
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator, sequence_padding

TINY = dict(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position=32)
T5_TINY = dict(TINY, hidden_act=["gelu", "linear"])
del T5_TINY["max_position"]  # T5's relative position buckets have no maximum
TOKENS = np.array([[2, 5, 6, 3, 7, 8, 3], [2, 9, 3, 4, 3, 0, 0], [2, 11, 3, 0, 0, 0, 0]])
SEGMENTS = np.array([[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0, 0]])


def builder(**kwargs):
    keras.utils.set_random_seed(0)
    return build_transformer_model(None, None, return_keras_model=False, **{**TINY, **kwargs})


def test_inputs_are_float32_and_take_int_or_float_ids():
    bert = builder()
    assert [t.dtype for t in bert.model.inputs] == ["float32", "float32"]
    as_int = bert.model.predict([TOKENS, SEGMENTS], verbose=0)
    as_float = bert.model.predict([TOKENS.astype("float32"), SEGMENTS.astype("float32")], verbose=0)
    np.testing.assert_array_equal(as_int, as_float)


def test_builder_exposes_input_and_output():
    bert = builder(with_pool=True)
    assert bert.output is bert.outputs[0] is bert.model.outputs[0]
    assert bert.input == bert.inputs == bert.model.inputs
    both = builder(with_pool=True, with_mlm=True)
    assert both.output == both.outputs and len(both.outputs) == 2
    gpt2 = build_transformer_model(None, None, model="gpt2", return_keras_model=False, **TINY)
    assert gpt2.input is gpt2.inputs[0] and gpt2.input.name == "Input-Token"


def test_prefix_names_every_layer_and_input():
    bert = builder(prefix="Successor-", with_mlm=True)
    names = [layer.name for layer in bert.model.layers]
    assert all(n.startswith("Successor-") for n in names), names
    assert [t.name for t in bert.model.inputs] == ["Successor-Input-Token", "Successor-Input-Segment"]
    # two prefixed models side by side in one model, weights kept apart
    other = builder(prefix="Predecessor-")
    joint = keras.Model(bert.model.inputs + other.model.inputs, [bert.model.outputs[0], other.model.outputs[0]])
    assert len(joint.weights) == len(bert.model.weights) + len(other.model.weights)


def test_prefixed_model_loads_and_saves_official_names(tmp_path):
    source = builder(with_mlm=True)
    source.save_weights_as_checkpoint(str(tmp_path / "bert_model.ckpt"))
    loaded = builder(with_mlm=True, prefix="Predecessor-")
    loaded.load_weights_from_checkpoint(str(tmp_path / "bert_model.ckpt"))
    np.testing.assert_array_equal(loaded.model.predict([TOKENS, SEGMENTS], verbose=0),
                                  source.model.predict([TOKENS, SEGMENTS], verbose=0))


def expected_mask(tokens):
    """bert4keras 0.11.5: token_ids != 0, the first position always kept."""
    mask = tokens != 0
    mask[:, 0] = True
    return mask


@pytest.mark.parametrize("kwargs", [dict(), dict(with_mlm=True), dict(application="unilm"), dict(model="roformer"),
                                    dict(model="nezha"), dict(model="albert")])
def test_outputs_carry_the_padding_mask(kwargs):
    bert = builder(**kwargs)
    output = bert.outputs[-1]
    probe = keras.Model(bert.model.inputs, output._keras_mask)
    np.testing.assert_array_equal(probe.predict([TOKENS, SEGMENTS], verbose=0), expected_mask(TOKENS))


def test_pooled_output_has_no_mask():
    bert = builder(with_pool=True)
    assert getattr(bert.output, "_keras_mask", None) is None


def test_t5_decoder_output_carries_its_mask():
    t5 = build_transformer_model(None, None, model="t5.1.1", return_keras_model=False, **T5_TINY)
    decoder_ids = np.array([[0, 5, 6, 1], [0, 7, 1, 0], [0, 1, 0, 0]])
    probe = keras.Model(t5.model.inputs, t5.model.outputs[0]._keras_mask)
    np.testing.assert_array_equal(probe.predict([TOKENS, decoder_ids], verbose=0), expected_mask(decoder_ids))


class SegmentCrossEntropy(Loss):
    """bert4keras 0.11.5's seq2seq loss, as its examples wrote it (float segment_ids as weights)."""

    seen = []

    def compute_loss(self, inputs, mask=None):
        y_true, y_mask, y_pred = inputs
        SegmentCrossEntropy.seen.append(mask)
        y_true, y_mask, y_pred = y_true[:, 1:], y_mask[:, 1:], y_pred[:, :-1]
        loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        return ops.sum(loss * y_mask) / ops.sum(y_mask)


def test_loss_layer_gets_masks_and_float_segment_ids():
    bert = builder(application="unilm")
    output = SegmentCrossEntropy(2)(bert.model.inputs + bert.model.outputs)
    model = keras.Model(bert.model.inputs, output)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    SegmentCrossEntropy.seen.clear()
    model([ops.convert_to_tensor(TOKENS, "float32"), ops.convert_to_tensor(SEGMENTS, "float32")])  # eagerly
    masks = SegmentCrossEntropy.seen[-1]
    loss = model.evaluate([TOKENS, SEGMENTS], batch_size=3, verbose=0)
    assert masks[0] is None and masks[1] is None
    np.testing.assert_array_equal(ops.convert_to_numpy(masks[2]), expected_mask(TOKENS))
    # the same loss from the model's probabilities, in NumPy
    probas = bert.model.predict([TOKENS, SEGMENTS], verbose=0)
    picked = np.take_along_axis(probas[:, :-1], TOKENS[:, 1:, None], axis=-1)[..., 0]
    weights = SEGMENTS[:, 1:]
    np.testing.assert_allclose(loss, np.sum(-np.log(picked) * weights) / weights.sum(), rtol=1e-5)
    history = model.fit([TOKENS, SEGMENTS], batch_size=3, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_bert_of_theseus_graph_from_two_builders():
    """BERT-of-Theseus: the successor's blocks run on the predecessor's inputs and embeddings."""
    predecessor = builder(prefix="Predecessor-", num_hidden_layers=2)
    successor = builder(prefix="Successor-", num_hidden_layers=1)
    inputs = predecessor.inputs
    x = predecessor.apply_embeddings(inputs)
    successor.apply_embeddings(inputs)  # as the script: the successor's embeddings of these inputs
    x = successor.apply_main_layers(x, 0)
    model = keras.Model(inputs, x)  # connected to the predecessor's inputs only
    got = model.predict([TOKENS, SEGMENTS], verbose=0)
    # the reference: the same layers applied by hand, with the padding mask of these tokens
    embeddings = keras.Model(predecessor.model.inputs,
                             predecessor.model.get_layer("Predecessor-Embedding-Norm").output)
    block_in = keras.Input((None, 16))
    mask_in = keras.Input((1, 1, None), dtype="bool")
    layers = {n: successor.model.get_layer("Successor-Transformer-0-" + n)
              for n in ("MultiHeadSelfAttention", "MultiHeadSelfAttention-Norm", "FeedForward", "FeedForward-Norm")}
    h = layers["MultiHeadSelfAttention-Norm"](block_in + layers["MultiHeadSelfAttention"]([block_in, block_in, block_in, mask_in]))
    h = layers["FeedForward-Norm"](h + layers["FeedForward"](h))
    block = keras.Model([block_in, mask_in], h)
    want = block.predict([embeddings.predict([TOKENS, SEGMENTS], verbose=0), (TOKENS != 0)[:, None, None, :]], verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_get_output_at_on_the_builders_layers():
    bert = builder()
    last_add = bert.model.layers[-2]
    assert last_add.name == "Transformer-1-FeedForward-Add"
    out = last_add.get_output_at(-1)
    probe = keras.Model(bert.model.inputs, out)
    norm = bert.model.layers[-1]
    want = ops.convert_to_numpy(norm(probe.predict([TOKENS, SEGMENTS], verbose=0)))
    np.testing.assert_allclose(bert.model.predict([TOKENS, SEGMENTS], verbose=0), want, atol=1e-5)
    assert last_add.get_output_shape_at(0) == (None, None, 16)
    with pytest.raises(ValueError, match="called 1 time"):
        last_add.get_output_at(1)
    # ALBERT's shared block: one call per layer
    albert = builder(model="albert", num_hidden_layers=3)
    shared = albert.model.get_layer("Transformer-FeedForward-Norm")
    assert shared.get_output_at(2) is albert.output
    assert shared.get_output_at(0) is not shared.get_output_at(1)


class Batches(DataGenerator):
    def __iter__(self, random=False):
        tokens, segments, labels = [], [], []
        for is_end, (ids, label) in self.sample(random):
            tokens.append(ids)
            segments.append([0] * len(ids))
            labels.append([label])
            if len(tokens) == self.batch_size or is_end:
                yield [sequence_padding(tokens), sequence_padding(segments)], sequence_padding(labels)
                tokens, segments, labels = [], [], []


def classifier():
    bert = builder(with_pool=True, num_hidden_layers=1)
    output = keras.layers.Dense(2, activation="softmax", name="Probas")(bert.output)
    model = keras.Model(bert.model.input, output)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    return model


def test_forfit_trains_on_batches_of_any_lengths():
    """The first two batches have the same length (Keras' generator adapter on TensorFlow would fix it)."""
    rng = np.random.default_rng(0)
    data = [(list(rng.integers(1, 50, n)), n % 2) for n in [5, 5, 5, 5, 9, 9, 3, 3, 12, 12]]
    gen = Batches(data, batch_size=2)
    model = classifier()
    history = model.fit(gen.forfit(random=False), steps_per_epoch=len(gen), epochs=2, verbose=0,
                        validation_data=gen.forfit(random=False), validation_steps=len(gen))
    assert len(history.history["val_loss"]) == 2
    probas = model.predict(gen.fortest(), steps=len(gen), verbose=0)
    assert probas.shape == (10, 2)
    # still an iterator of batches, as bert4keras's generator
    stream = gen.forfit(random=False)
    first, second = next(stream), next(stream)
    assert first[0][0].shape == (2, 5) and second[0][0].shape == (2, 5)
    assert [x.shape for x in next(gen.fortest())] == [(2, 5), (2, 5)]


class Samples(DataGenerator):
    def __iter__(self, random=False):
        for is_end, (ids, label) in self.sample(random):
            yield [ids, [0] * len(ids)], [[label]]


def test_to_dataset_with_input_and_label_names():
    """bert4keras's multi-GPU example: inputs and the one label keyed by layer names."""
    rng = np.random.default_rng(0)
    gen = Samples([(list(rng.integers(1, 50, n)), n % 2) for n in [4, 6, 6, 3, 8, 5]], batch_size=2)
    dataset = gen.to_dataset(types=[("float32", "float32"), ("float32",)], shapes=[([None], [None]), ([1],)],
                             names=[("Input-Token", "Input-Segment"), ("Probas",)], padded_batch=True)
    x, y = next(iter(dataset))
    assert sorted(x) == ["Input-Segment", "Input-Token"] and tuple(y.shape) == (2, 1)
    model = classifier()
    history = model.fit(dataset, steps_per_epoch=len(gen), epochs=1, verbose=0,
                        validation_data=dataset, validation_steps=len(gen))
    assert np.isfinite(history.history["val_loss"]).all()


def test_compiled_loss_averages_over_real_tokens_unless_the_mask_is_dropped():
    """As Keras 2 with bert4keras 0.11.5: a loss on a masked output counts the real tokens only;
    `DropMask` gives the plain mean over every position."""
    from bert4keras.layers import DropMask

    bert = builder(with_mlm="linear")
    labels = np.roll(TOKENS, -1, axis=1)
    logits = bert.model.predict([TOKENS, SEGMENTS], verbose=0)
    shifted = logits - logits.max(-1, keepdims=True)
    per_token = np.log(np.exp(shifted).sum(-1)) - np.take_along_axis(shifted, labels[..., None], -1)[..., 0]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    masked = keras.Model(bert.model.inputs, bert.model.outputs[0])
    masked.compile(loss=loss)
    real = expected_mask(TOKENS)
    np.testing.assert_allclose(masked.evaluate([TOKENS, SEGMENTS], labels, batch_size=3, verbose=0),
                               per_token[real].mean(), rtol=1e-5)
    plain = keras.Model(bert.model.inputs, DropMask()(bert.model.outputs[0]))
    plain.compile(loss=loss)
    np.testing.assert_allclose(plain.evaluate([TOKENS, SEGMENTS], labels, batch_size=3, verbose=0),
                               per_token.mean(), rtol=1e-5)
