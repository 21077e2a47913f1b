"""Task layers and losses: CRF / MEMM / Viterbi against brute-force enumeration, GlobalPointer
against a NumPy reference, ZLPR losses against their closed forms, toy fits, .keras round trips,
activations, entity scoring and the intermediate-output helper."""

import itertools

import keras
import numpy as np
import pytest
from keras import ops

from bert4keras.backend import (
    get_activation,
    global_pointer_crossentropy,
    leaky_relu,
    multilabel_categorical_crossentropy,
    sequence_masking,
    soft_multilabel_categorical_crossentropy,
    sparse_global_pointer_crossentropy,
    sparse_multilabel_categorical_crossentropy,
    squareplus,
)
from bert4keras.layers import (
    ConditionalRandomField,
    EfficientGlobalPointer,
    GlobalPointer,
    LayerNormalization,
    Loss,
    MaximumEntropyMarkovModel,
)
from bert4keras.models import build_transformer_model
from bert4keras.snippets import ViterbiDecoder, entity_scores, extract_entities, get_layer_output
from conftest import random_ids

NEG = -1e11  # anything at or below this is a masked logit


def np_(x):
    return ops.convert_to_numpy(x)


def lengths_mask(lengths, seq_len):
    return (np.arange(seq_len)[None] < np.array(lengths)[:, None]).astype("int32")


def grad_wrt_input(fn, x):
    """(fn(x), d sum(fn(x)) / dx) on the active backend; fn maps a tensor to a tensor."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.Variable(x)
        with tf.GradientTape() as tape:
            y = fn(x)
            total = tf.reduce_sum(y)
        return np_(y), tape.gradient(total, x).numpy()
    if backend == "jax":
        import jax

        y, vjp = jax.vjp(fn, x)
        return np.asarray(y), np.asarray(vjp(ops.ones_like(y))[0])
    import torch

    x = torch.tensor(x, requires_grad=True)
    y = fn(x)
    y.sum().backward()
    return np_(y), x.grad.numpy()


# --- NumPy references ----------------------------------------------------------------------------


def all_paths(length, num_labels):
    return [np.array(p) for p in itertools.product(range(num_labels), repeat=length)]


def path_score(emissions, trans, path):
    score = emissions[np.arange(len(path)), path].sum()
    return score + sum(trans[a, b] for a, b in zip(path[:-1], path[1:]))


def logsumexp(v):
    v = np.asarray(v, dtype="float64")
    return v.max() + np.log(np.exp(v - v.max()).sum())


def crf_reference(emissions, trans, labels, length):
    """-log p(labels), emission marginals P(y_t = j) and pair marginals, by enumeration."""
    e = emissions[:length].astype("float64")
    paths = all_paths(length, trans.shape[0])
    scores = np.array([path_score(e, trans, p) for p in paths])
    log_z = logsumexp(scores)
    probas = np.exp(scores - log_z)
    marginals = np.zeros_like(e)
    pairs = np.zeros_like(trans, dtype="float64")
    for p, q in zip(paths, probas):
        marginals[np.arange(length), p] += q
        for a, b in zip(p[:-1], p[1:]):
            pairs[a, b] += q
    return log_z - path_score(e, trans, labels[:length]), marginals, pairs


def zlpr_reference(y_true, y_pred):
    """log(1 + sum_neg e^s) + log(1 + sum_pos e^-s), row by row."""
    out = []
    for t, s in zip(y_true.reshape(-1, y_true.shape[-1]), y_pred.reshape(-1, y_pred.shape[-1])):
        s = s.astype("float64")
        out.append(np.log1p(np.exp(s[t == 0]).sum()) + np.log1p(np.exp(-s[t == 1]).sum()))
    return np.array(out).reshape(y_true.shape[:-1])


def rotary_reference(x):
    """RoPE on x (..., seq_len, d) at positions 0..seq_len-1: pairs (x0, x1) rotated by p * theta_i."""
    seq_len, d = x.shape[-2], x.shape[-1]
    theta = 10000.0 ** (-2 * np.arange(d // 2) / d)
    angle = np.arange(seq_len)[:, None] * theta[None]  # (seq_len, d / 2)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * np.cos(angle) - x1 * np.sin(angle)
    out[..., 1::2] = x1 * np.cos(angle) + x0 * np.sin(angle)
    return out


# --- CRF -----------------------------------------------------------------------------------------


@pytest.fixture
def crf_batch():
    rng = np.random.default_rng(0)
    batch_size, seq_len, num_labels = 3, 5, 3
    emissions = rng.normal(size=(batch_size, seq_len, num_labels)).astype("float32")
    labels = rng.integers(0, num_labels, size=(batch_size, seq_len)).astype("int32")
    lengths = [5, 3, 1]
    return emissions, labels, lengths, lengths_mask(lengths, seq_len)


def test_crf_negative_log_likelihood_matches_enumeration(crf_batch):
    emissions, labels, lengths, mask = crf_batch
    crf = ConditionalRandomField()
    y_pred = crf([emissions, mask])
    trans = np_(crf.trans)
    expected = [crf_reference(emissions[b], trans, labels[b], n)[0] for b, n in enumerate(lengths)]
    np.testing.assert_allclose(np_(crf.sparse_loss(labels, y_pred)), expected, rtol=1e-5, atol=1e-5)
    one_hot = np.eye(3, dtype="float32")[labels]
    np.testing.assert_allclose(np_(crf.dense_loss(one_hot, y_pred)), expected, rtol=1e-5, atol=1e-5)
    assert (np_(y_pred)[mask == 0] <= NEG).all() and (np_(y_pred)[mask == 1] > NEG).all()


def test_crf_gradient_is_marginals_minus_labels(crf_batch):
    emissions, labels, lengths, mask = crf_batch
    crf = ConditionalRandomField()
    crf.build(emissions.shape)
    trans = np_(crf.trans)
    _, grads = grad_wrt_input(lambda x: crf.sparse_loss(labels, crf([x, mask])), emissions)
    assert np.isfinite(grads).all()
    for b, n in enumerate(lengths):
        _, marginals, _ = crf_reference(emissions[b], trans, labels[b], n)
        expected = marginals - np.eye(3)[labels[b, :n]]
        np.testing.assert_allclose(grads[b, :n], expected, atol=1e-5)
        np.testing.assert_array_equal(grads[b, n:], 0.0)


def test_crf_sgd_step_moves_transitions_by_expected_counts(crf_batch):
    emissions, labels, lengths, mask = crf_batch
    x, m = keras.Input((None, 3)), keras.Input((None,), dtype="int32")
    crf = ConditionalRandomField(lr_multiplier=1)
    model = keras.Model([x, m], crf([x, m]))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=crf.sparse_loss)
    before = np_(crf.trans)
    model.train_on_batch([emissions, mask], labels)
    after = np_(crf.trans)
    grad = np.zeros((3, 3))
    for b, n in enumerate(lengths):
        _, _, pairs = crf_reference(emissions[b], before, labels[b], n)
        counts = np.zeros((3, 3))
        for a, c in zip(labels[b, : n - 1], labels[b, 1:n]):
            counts[a, c] += 1
        grad += (pairs - counts) / len(lengths)
    assert np.isfinite(after).all()
    np.testing.assert_allclose(after, before - 0.1 * grad, atol=1e-5)


def test_crf_trains_on_batches_of_different_lengths():
    # TensorFlow retraces with an unknown sequence length once it has seen two lengths
    keras.utils.set_random_seed(14)
    rng = np.random.default_rng(14)
    x, m = keras.Input((None, 3)), keras.Input((None,), dtype="int32")
    crf = ConditionalRandomField()
    model = keras.Model([x, m], crf([keras.layers.Dense(3)(x), m]))
    model.compile(optimizer="adam", loss=crf.sparse_loss)
    for seq_len in (4, 5, 6, 7):
        emissions = rng.normal(size=(2, seq_len, 3)).astype("float32")
        loss = model.train_on_batch([emissions, np.ones((2, seq_len), "int32")], np.zeros((2, seq_len), "int32"))
        assert np.isfinite(loss)


def test_crf_lr_multiplier_scales_the_stored_matrix():
    keras.utils.set_random_seed(1)
    crf = ConditionalRandomField(lr_multiplier=100)
    crf.build((None, None, 4))
    stored = crf.get_weights()[0]
    np.testing.assert_allclose(np_(crf.trans), stored * 100, rtol=1e-6)
    limit = np.sqrt(6 / 8)  # glorot_uniform of a 4 x 4 matrix, before the division
    assert np.abs(stored).max() <= limit / 100 and np.abs(np_(crf.trans)).max() > limit / 100


def test_crf_sparse_accuracy_ignores_padding(crf_batch):
    emissions, labels, lengths, mask = crf_batch
    crf = ConditionalRandomField()
    y_pred = crf([emissions, mask])
    hits = (emissions.argmax(-1) == labels) & (mask == 1)
    np.testing.assert_allclose(np_(crf.sparse_accuracy(labels, y_pred)), hits.sum() / mask.sum(), rtol=1e-6)


@pytest.mark.parametrize("constrained", [False, True])
def test_viterbi_matches_enumeration(constrained):
    rng = np.random.default_rng(2)
    num_labels = 4
    trans = rng.normal(size=(num_labels, num_labels))
    starts, ends = ([0, 1], [0, 2]) if constrained else (None, None)
    decoder = ViterbiDecoder(trans, starts=starts, ends=ends)
    for length in (1, 2, 5):
        nodes = rng.normal(size=(length, num_labels))
        copy = nodes.copy()
        candidates = [
            p for p in all_paths(length, num_labels)
            if starts is None or (p[0] in starts and p[-1] in ends)
        ]
        best = max(candidates, key=lambda p: path_score(nodes, trans, p))
        np.testing.assert_array_equal(decoder.decode(nodes), best)
        np.testing.assert_array_equal(nodes, copy)


def test_viterbi_decodes_a_trained_crf_layer(crf_batch):
    emissions, _, _, mask = crf_batch
    crf = ConditionalRandomField()
    y_pred = np_(crf([emissions, mask]))
    trans = np_(crf.trans)
    path = ViterbiDecoder(trans).decode(y_pred[1, :3])
    best = max(all_paths(3, 3), key=lambda p: path_score(emissions[1, :3], trans, p))
    np.testing.assert_array_equal(path, best)


# --- MEMM ----------------------------------------------------------------------------------------


def memm_reference(emissions, trans, labels, lengths):
    """Mean over directions of the mean token cross-entropy of softmax((e_t + A[y_{t-1}]) / 2)."""

    def direction(trans, backwards):
        total, count = 0.0, 0
        for b, n in enumerate(lengths):
            e, y = emissions[b, :n].astype("float64"), labels[b, :n]
            if backwards:
                e, y = e[::-1], y[::-1]
            for t in range(n):
                logits = e[t] if t == 0 else (e[t] + trans[y[t - 1]]) / 2
                total += logsumexp(logits) - logits[y[t]]
                count += 1
        return total / count

    return (direction(trans, False) + direction(trans.T, True)) / 2


@pytest.mark.parametrize("hidden_dim", [None, 2])
def test_memm_loss_matches_reference(crf_batch, hidden_dim):
    emissions, labels, lengths, mask = crf_batch
    memm = MaximumEntropyMarkovModel(lr_multiplier=10, hidden_dim=hidden_dim)
    y_pred = memm([emissions, mask])
    expected = memm_reference(emissions, np_(memm.trans), labels, lengths)
    np.testing.assert_allclose(np_(memm.sparse_loss(labels, y_pred)), expected, rtol=1e-5)
    np.testing.assert_allclose(np_(memm.dense_loss(np.eye(3)[labels], y_pred)), expected, rtol=1e-5)
    trans = np_(memm.trans)
    hits = []
    for direction, matrix in ((1, trans), (-1, trans.T)):
        right = total = 0
        for b, n in enumerate(lengths):
            e, y = emissions[b, :n][::direction], labels[b, :n][::direction]
            for t in range(n):
                logits = e[t] if t == 0 else (e[t] + matrix[y[t - 1]]) / 2
                right += int(np.argmax(logits) == y[t])
                total += 1
        hits.append(right / total)
    np.testing.assert_allclose(np_(memm.sparse_accuracy(labels, y_pred)), np.mean(hits), rtol=1e-6)


# --- GlobalPointer -------------------------------------------------------------------------------


def global_pointer_reference(layer, x, mask):
    """Logits from the layer's weights in NumPy (masked spans set to -inf)."""
    heads, d = layer.heads, layer.head_size
    if isinstance(layer, EfficientGlobalPointer):
        (pk, pb), (qk, qb) = layer.p_dense.get_weights(), layer.q_dense.get_weights()
        h = x @ pk + pb  # (b, n, 2d)
        q, k = rotary_reference(h[..., ::2]), rotary_reference(h[..., 1::2])
        logits = np.einsum("bmd,bnd->bmn", q, k)[:, None] / np.sqrt(d)
        bias = np.transpose(h @ qk + qb, (0, 2, 1)) / 2  # (b, 2 * heads, n)
        logits = logits + bias[:, 0::2, None, :] + bias[:, 1::2, :, None]
    else:
        kernel, bias = layer.dense.get_weights()
        h = (x @ kernel + bias).reshape(x.shape[0], x.shape[1], heads, 2 * d).transpose(0, 2, 1, 3)
        q, k = rotary_reference(h[..., :d]), rotary_reference(h[..., d:])
        logits = np.einsum("bhmd,bhnd->bhmn", q, k) / np.sqrt(d)
    n = x.shape[1]
    valid = (mask[:, :, None] * mask[:, None, :]).astype(bool)[:, None] & np.triu(np.ones((n, n), bool))
    return np.where(valid, logits, -np.inf)


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_global_pointer_logits_and_masks(cls):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 6, 8)).astype("float32")
    mask = lengths_mask([6, 4], 6)
    layer = cls(heads=3, head_size=4)
    out = np_(layer([x, mask]))
    assert out.shape == (2, 3, 6, 6) and out.dtype == np.float32
    expected = global_pointer_reference(layer, x.astype("float64"), mask)
    masked = np.isinf(expected)
    assert masked[1, :, 4:, :].all() and masked[1, :, :, 4:].all() and masked[:, :, 1, 0].all()
    assert (out[masked] <= NEG).all()
    np.testing.assert_allclose(out[~masked], expected[~masked], rtol=1e-4, atol=1e-5)
    # token_ids with 0 padding serve as the mask, and a Keras mask is honoured too
    token_ids = np.where(mask == 1, 7, 0)
    np.testing.assert_array_equal(np_(layer([x, token_ids])), out)
    masked_x = keras.layers.Masking(0.0)(np.where(mask[..., None] == 1, x, 0.0))
    np.testing.assert_allclose(np_(layer(masked_x)), out, rtol=1e-6)


def test_global_pointer_without_tril_mask_keeps_lower_triangle():
    x = np.random.default_rng(4).normal(size=(1, 4, 8)).astype("float32")
    out = np_(GlobalPointer(2, 4, RoPE=False, tril_mask=False)(x))
    assert (out > NEG).all()


def test_global_pointer_rejects_odd_head_size_with_rope():
    with pytest.raises(ValueError, match="even head_size"):
        GlobalPointer(2, 5)


# --- ZLPR losses ---------------------------------------------------------------------------------


@pytest.fixture
def zlpr_batch():
    rng = np.random.default_rng(5)
    y_pred = (3 * rng.normal(size=(4, 3, 7))).astype("float32")
    y_true = (rng.random(size=(4, 3, 7)) < 0.3).astype("float32")
    y_true[0, 0] = 0  # a row without positives
    y_true[0, 1] = 1  # a row without negatives
    return y_true, y_pred


def test_multilabel_crossentropy_matches_closed_form(zlpr_batch):
    y_true, y_pred = zlpr_batch
    out = np_(multilabel_categorical_crossentropy(y_true, y_pred))
    np.testing.assert_allclose(out, zlpr_reference(y_true, y_pred), rtol=1e-5, atol=1e-6)


def test_multilabel_crossentropy_treats_masked_logits_as_negatives(zlpr_batch):
    y_true, y_pred = zlpr_batch
    extra_true = np.concatenate([y_true, np.zeros_like(y_true[..., :2])], axis=-1)
    extra_pred = np.concatenate([y_pred, np.full_like(y_pred[..., :2], -1e12)], axis=-1)
    np.testing.assert_allclose(
        np_(multilabel_categorical_crossentropy(extra_true, extra_pred)),
        np_(multilabel_categorical_crossentropy(y_true, y_pred)),
        rtol=1e-6,
    )


def test_sparse_multilabel_crossentropy_equals_dense(zlpr_batch):
    y_true, y_pred = zlpr_batch
    rows_true, rows_pred = y_true.reshape(-1, 7), y_pred.reshape(-1, 7)
    width = int(rows_true.sum(-1).max())
    # class indices shifted by one so that 0 can pad (mask_zero): pad the logits with a column too
    indices = [np.flatnonzero(t) + 1 for t in rows_true]
    padded = np.array([np.pad(i, (0, width - len(i))) for i in indices], dtype="int32")
    shifted = np.concatenate([np.zeros_like(rows_pred[:, :1]), rows_pred], axis=-1)
    out = np_(sparse_multilabel_categorical_crossentropy(padded, shifted, mask_zero=True))
    np.testing.assert_allclose(out, zlpr_reference(rows_true, rows_pred).ravel(), rtol=1e-4, atol=1e-5)
    # without mask_zero every row lists exactly its positives
    rng = np.random.default_rng(5)
    positives = np.array([rng.choice(7, size=2, replace=False) for _ in rows_pred], dtype="int32")
    dense = np.zeros_like(rows_true)
    np.put_along_axis(dense, positives, 1.0, axis=-1)
    out = np_(sparse_multilabel_categorical_crossentropy(positives, rows_pred))
    np.testing.assert_allclose(out, zlpr_reference(dense, rows_pred), rtol=1e-4, atol=1e-5)


def test_soft_label_version_reduces_to_hard_labels(zlpr_batch):
    y_true, y_pred = zlpr_batch
    np.testing.assert_allclose(
        np_(soft_multilabel_categorical_crossentropy(y_true, y_pred)),
        np_(multilabel_categorical_crossentropy(y_true, y_pred)),
        rtol=1e-6,
        atol=1e-6,
    )


def test_soft_label_version_matches_closed_form_and_optimum():
    rng = np.random.default_rng(6)
    t = rng.uniform(0.05, 0.95, size=(5, 6))
    s = rng.normal(size=(5, 6))
    expected = np.log1p(((1 - t) * np.exp(s)).sum(-1)) + np.log1p((t * np.exp(-s)).sum(-1))
    out = np_(soft_multilabel_categorical_crossentropy(t.astype("float32"), s.astype("float32")))
    np.testing.assert_allclose(out, expected, rtol=1e-5)
    # one class: the loss is smallest where sigmoid(2 s) = t
    grid = np.linspace(-4, 4, 8001, dtype="float32")[:, None]
    for target in (0.2, 0.5, 0.9):
        losses = np_(soft_multilabel_categorical_crossentropy(np.full_like(grid, target), grid))
        best = grid[np.argmin(losses), 0]
        np.testing.assert_allclose(1 / (1 + np.exp(-2 * best)), target, atol=1e-3)


def global_pointer_toy_data(rng, batch_size=8, seq_len=6, heads=2, hidden=8):
    """Spans determined by the inputs: type t spans (i, i + t + 1) where feature t of token i is
    > 0.5 (never span (0, 0), which the sparse labels use as padding)."""
    x = rng.normal(size=(batch_size, seq_len, hidden)).astype("float32")
    y = np.zeros((batch_size, heads, seq_len, seq_len), "float32")
    for b, i, t in itertools.product(range(batch_size), range(seq_len - 2), range(heads)):
        if x[b, i, t] > 0.5:
            y[b, t, i, i + t + 1] = 1
    return x, y


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_global_pointer_toy_fit_decreases_zlpr_loss(cls):
    keras.utils.set_random_seed(7)
    x, y = global_pointer_toy_data(np.random.default_rng(7))
    inputs = keras.Input((None, 8))
    model = keras.Model(inputs, cls(2, 8)(keras.layers.Dense(16, activation="relu")(inputs)))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=global_pointer_crossentropy)
    history = model.fit(x, y, epochs=30, batch_size=8, verbose=0).history["loss"]
    assert history[-1] < 0.5 * history[0]


@pytest.mark.parametrize("cls", [GlobalPointer, EfficientGlobalPointer])
def test_global_pointer_losses_dense_and_sparse_agree(cls):
    rng = np.random.default_rng(13)
    x, y = global_pointer_toy_data(rng)
    mask = lengths_mask([6, 6, 5, 5, 4, 4, 6, 6], 6)
    y = y * (mask[:, None, :, None] * mask[:, None, None, :])
    logits = np_(cls(2, 8)([x, mask]))
    rows = [zlpr_reference(y[b, t].reshape(1, -1), logits[b, t].reshape(1, -1)) for b in range(8) for t in range(2)]
    np.testing.assert_allclose(np_(global_pointer_crossentropy(y, logits)), np.mean(rows), rtol=1e-5)
    flat = [[np.flatnonzero(y[b, t].ravel()) for t in range(2)] for b in range(8)]
    width = max(len(i) for row in flat for i in row)
    sparse = np.array([[np.pad(i, (0, width - len(i))) for i in row] for row in flat], "int32")
    # the sparse form reserves span (0, 0) for padding: it ignores that logit
    logits[:, :, 0, 0] = -1e12
    rows = [zlpr_reference(y[b, t].reshape(1, -1), logits[b, t].reshape(1, -1)) for b in range(8) for t in range(2)]
    np.testing.assert_allclose(np_(sparse_global_pointer_crossentropy(sparse, logits)), np.mean(rows), rtol=1e-4)


@pytest.mark.parametrize("cls", [ConditionalRandomField, MaximumEntropyMarkovModel])
def test_tagger_toy_fit_decreases_loss(cls):
    keras.utils.set_random_seed(8)
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 3, size=(16, 6)).astype("int32")
    x = 2 * np.eye(3, dtype="float32")[labels] + rng.normal(scale=0.5, size=(16, 6, 3)).astype("float32")
    mask = lengths_mask(rng.integers(2, 7, size=16), 6)
    inputs, m = keras.Input((None, 3)), keras.Input((None,), dtype="int32")
    layer = cls(lr_multiplier=10)
    model = keras.Model([inputs, m], layer([keras.layers.Dense(3)(inputs), m]))
    # MEMM's accuracy reads the transitions, which Keras's JAX trainer does not expose to metrics
    metrics = [layer.sparse_accuracy] if cls is ConditionalRandomField else []
    model.compile(optimizer=keras.optimizers.Adam(5e-2), loss=layer.sparse_loss, metrics=metrics)
    history = model.fit([x, mask], labels, epochs=40, batch_size=16, verbose=0).history
    assert history["loss"][-1] < 0.2 * history["loss"][0]
    assert np_(layer.sparse_accuracy(labels, model([x, mask]))) > 0.9


# --- Loss layer ----------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="bert4keras_tests")
class SquaredErrorLoss(Loss):
    """mean((prediction - target)^2), with the target entering the model as an input."""

    def compute_loss(self, inputs, mask=None):
        prediction, target = inputs
        return ops.mean(ops.square(prediction - target))


def test_loss_layer_adds_its_loss_and_trains():
    keras.utils.set_random_seed(9)
    rng = np.random.default_rng(9)
    x = rng.normal(size=(32, 4)).astype("float32")
    target = (x @ rng.normal(size=(4, 1))).astype("float32")
    x_in, t_in = keras.Input((4,)), keras.Input((1,))
    prediction = keras.layers.Dense(1)(x_in)
    output = SquaredErrorLoss(output_axis=0)([prediction, t_in])
    model = keras.Model([x_in, t_in], output)
    model.compile(optimizer=keras.optimizers.Adam(5e-2))
    history = model.fit([x, target], epochs=40, batch_size=32, verbose=0).history["loss"]
    assert history[-1] < 0.2 * history[0]
    mse = np.mean((model.predict([x, target], verbose=0) - target) ** 2)
    np.testing.assert_allclose(model.evaluate([x, target], verbose=0), mse, rtol=1e-4)
    assert model.output.shape == (None, 1)


def test_loss_layer_output_axis_selects_outputs():
    a, b = np.ones((2, 3), "float32"), np.zeros((2, 1), "float32")
    np.testing.assert_array_equal(np_(SquaredErrorLoss(output_axis=1)([a, b])), b)
    both = SquaredErrorLoss(output_axis=[1, 0])([a, b])
    np.testing.assert_array_equal(np_(both[1]), a)
    assert len(SquaredErrorLoss()([a, b])) == 2


# --- serialization -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: GlobalPointer(3, 4, use_bias=False),
        lambda: EfficientGlobalPointer(3, 4, RoPE=False, tril_mask=False),
        lambda: ConditionalRandomField(lr_multiplier=10),
        lambda: MaximumEntropyMarkovModel(lr_multiplier=5, hidden_dim=2),
        lambda: SquaredErrorLoss(output_axis=0),
    ],
    ids=["GlobalPointer", "EfficientGlobalPointer", "CRF", "MEMM", "Loss"],
)
def test_layer_keras_save_load_round_trip(tmp_path, make):
    keras.utils.set_random_seed(10)
    x = np.random.default_rng(10).normal(size=(2, 5, 6)).astype("float32")
    mask = lengths_mask([5, 3], 5)
    layer = make()
    x_in, m_in = keras.Input((None, 6)), keras.Input((None,), dtype="int32")
    h = keras.layers.Dense(6, name="features")(x_in)
    if isinstance(layer, Loss):
        output = layer([h, x_in])
    else:
        output = layer([h, m_in])
    model = keras.Model([x_in, m_in], output)
    expected = model.predict([x, mask], verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict([x, mask], verbose=0), expected)
    restored = [l for l in loaded.layers if type(l) is type(layer)][0]
    assert restored.get_config() == layer.get_config()
    if isinstance(layer, ConditionalRandomField):
        np.testing.assert_array_equal(np_(restored.trans), np_(layer.trans))


def test_conditional_layer_norm_starts_as_plain_layer_norm(tmp_path):
    rng = np.random.default_rng(11)
    x, cond = rng.normal(size=(2, 3, 8)).astype("float32"), rng.normal(size=(2, 4)).astype("float32")
    x_in, c_in = keras.Input((3, 8)), keras.Input((4,))
    norm = LayerNormalization(conditional=True, hidden_units=5, hidden_activation="squareplus")
    model = keras.Model([x_in, c_in], norm([x_in, c_in]))
    out = model.predict([x, cond], verbose=0)
    reference = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-12)
    np.testing.assert_allclose(out, reference, atol=1e-5)  # zero-initialised projections
    path = str(tmp_path / "cln.keras")
    model.save(path)
    np.testing.assert_array_equal(keras.saving.load_model(path).predict([x, cond], verbose=0), out)


# --- activations and masking ---------------------------------------------------------------------


def test_activations_by_name():
    x = np.linspace(-3, 3, 13).astype("float32")
    np.testing.assert_allclose(np_(get_activation("squareplus")(x)), (x + np.sqrt(x * x + 4)) / 2, rtol=1e-6)
    np.testing.assert_allclose(np_(squareplus(x, b=0.0)), np.maximum(x, 0), atol=1e-6)
    np.testing.assert_allclose(np_(get_activation("leaky_relu")(x)), np.where(x > 0, x, 0.2 * x), rtol=1e-6)
    np.testing.assert_allclose(np_(get_activation("swish")(x)), x / (1 + np.exp(-x)), rtol=1e-5)
    gelu = 0.5 * x * (1 + np.vectorize(__import__("math").erf)(x / np.sqrt(2)))
    np.testing.assert_allclose(np_(get_activation("gelu")(x)), gelu, rtol=1e-5, atol=1e-6)
    for fn in (squareplus, leaky_relu):
        assert keras.activations.deserialize(keras.activations.serialize(fn)) is fn


def test_sequence_masking_along_any_axis():
    x = np.ones((2, 3, 3), "float32")
    mask = np.array([[1, 1, 0], [1, 0, 0]])
    out = np_(sequence_masking(x, mask, "-inf", axis=1))
    assert (out[0, 2] <= NEG).all() and (out[1, 1:] <= NEG).all() and (out[0, :2] == 1).all()
    out = np_(sequence_masking(x, mask, 0.0, axis=-1))
    np.testing.assert_array_equal(out, np.broadcast_to(mask[:, None, :], (2, 3, 3)))
    with pytest.raises(ValueError):
        sequence_masking(x, mask, axis=0)


# --- entities ------------------------------------------------------------------------------------


def test_extract_entities_follows_conlleval_chunks():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "B-MISC"]
    assert extract_entities(tags) == [(0, 1, "PER"), (3, 4, "LOC"), (5, 5, "LOC"), (6, 6, "ORG"), (7, 7, "MISC")]
    assert extract_entities(["S-PER", "B-LOC", "E-LOC", "O"]) == [(0, 0, "PER"), (1, 2, "LOC")]
    assert extract_entities(["O", "O"]) == []


def test_entity_scores_micro_and_per_type():
    y_true = [[(0, 1, "PER"), (3, 3, "LOC")], [(2, 4, "ORG")]]
    y_pred = [[(0, 1, "PER"), (3, 4, "LOC")], [(2, 4, "ORG"), (5, 5, "PER")]]
    scores = entity_scores(y_true, y_pred, per_type=True)
    assert (scores["true_positives"], scores["num_pred"], scores["num_true"]) == (2, 4, 3)
    assert scores["precision"] == 0.5 and scores["recall"] == 2 / 3 and scores["f1"] == 4 / 7
    assert scores["types"]["LOC"]["f1"] == 0.0 and scores["types"]["ORG"]["f1"] == 1.0
    assert scores["types"]["PER"]["precision"] == 0.5
    assert entity_scores([[]], [[]])["f1"] == 0.0
    with pytest.raises(ValueError):
        entity_scores([[]], [])


# --- intermediate outputs ------------------------------------------------------------------------


def sharpen_attention(layer, factor=30.0):
    """Scale the query/key kernels: random init at stddev 0.02 gives near-uniform attention."""
    weights = layer.get_weights()
    weights[0] = weights[0] * factor
    weights[2] = weights[2] * factor
    layer.set_weights(weights)


def attention_reference(hidden, layer, token_ids, heads):
    """softmax(q k^T / sqrt(d)) from the layer's weights and its input, padding keys masked."""
    qk, qb, kk, kb = layer.get_weights()[:4]
    batch_size, seq_len, _ = hidden.shape
    q = (hidden @ qk + qb).reshape(batch_size, seq_len, heads, -1).transpose(0, 2, 1, 3)
    k = (hidden @ kk + kb).reshape(batch_size, seq_len, heads, -1).transpose(0, 2, 1, 3)
    logits = np.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = np.where((token_ids != 0)[:, None, None, :], logits, -np.inf)
    probas = np.exp(logits - logits.max(-1, keepdims=True))
    return probas / probas.sum(-1, keepdims=True)


def test_get_layer_output_reads_hidden_states_and_attention(tiny_bert_kwargs):
    keras.utils.set_random_seed(12)
    model = build_transformer_model(**tiny_bert_kwargs)
    attention = model.get_layer("Transformer-1-MultiHeadSelfAttention")
    sharpen_attention(attention)
    token_ids = random_ids(3, 7, tiny_bert_kwargs["vocab_size"], seed=12)
    inputs = [token_ids, np.zeros_like(token_ids)]
    last = get_layer_output(model, "Transformer-1-FeedForward-Norm", inputs)
    np.testing.assert_allclose(last, model.predict(inputs, verbose=0), atol=1e-6)

    probas = get_layer_output(model, "Transformer-1-MultiHeadSelfAttention", inputs, return_attention_scores=True)
    assert probas.shape == (3, 2, 7, 7)
    hidden = get_layer_output(model, "Transformer-0-FeedForward-Norm", inputs)
    expected = attention_reference(hidden, attention, token_ids, heads=2)
    assert expected.max() > 0.5  # far from uniform, so the comparison means something
    np.testing.assert_allclose(probas, expected, atol=1e-5)

    with pytest.raises(ValueError):
        get_layer_output(model, "Transformer-1-FeedForward-Norm", inputs, node_index=1)


def test_get_layer_output_picks_a_call_of_a_shared_layer(tiny_bert_kwargs):
    # ALBERT calls one block per layer: node_index selects the block
    keras.utils.set_random_seed(15)
    model = build_transformer_model(model="albert", **tiny_bert_kwargs)
    attention = model.get_layer("Transformer-MultiHeadSelfAttention")
    sharpen_attention(attention)
    token_ids = random_ids(2, 6, tiny_bert_kwargs["vocab_size"], seed=15)
    inputs = [token_ids, np.zeros_like(token_ids)]
    outputs = [get_layer_output(model, "Transformer-FeedForward-Norm", inputs, node_index=i) for i in range(2)]
    np.testing.assert_allclose(outputs[1], model.predict(inputs, verbose=0), atol=1e-6)
    probas = get_layer_output(
        model, "Transformer-MultiHeadSelfAttention", inputs, node_index=1, return_attention_scores=True
    )
    expected = attention_reference(outputs[0], attention, token_ids, heads=2)
    np.testing.assert_allclose(probas, expected, atol=1e-5)
