"""bert4keras.adversarial on the current backend: FGM, gradient penalty and VAT training steps, and
integrated gradients, on tiny BERTs from `build_transformer_model`.

References are computed without the classes under test: gradients come from Keras' own trainer
(one ``SGD(1)`` step of a plain functional model of the same layers, ``g = w_before - w_after``),
function values from ``model.predict`` with the embedding matrix set by hand, and derivatives from
central finite differences. Dropout is 0 so that training and inference passes agree.
"""

import numpy as np
import pytest

import keras
from bert4keras.adversarial import (
    AdversarialTrainingModel,
    GradientPenaltyModel,
    VirtualAdversarialModel,
    adversarial_training,
    gradient_penalty,
    integrated_gradients,
    virtual_adversarial_training,
)
from bert4keras.models import build_transformer_model

VOCAB = 50
SEQ_LEN = 8


def tiny_bert(with_mlm=False, dropout_rate=0.0, seed=0, vocab_size=VOCAB):
    """Tiny BERT: pooled [CLS] -> Dense(2, softmax) classifier, or the MLM head's probabilities."""
    keras.utils.set_random_seed(seed)
    bert = build_transformer_model(
        None, None, vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position=32, return_keras_model=False, dropout_rate=dropout_rate,
        with_pool=not with_mlm, with_mlm=with_mlm,
    )
    if with_mlm:
        return keras.Model(bert.model.inputs, bert.model.output)
    output = keras.layers.Dense(2, activation="softmax", name="Classifier")(bert.model.output)
    return keras.Model(bert.model.inputs, output)


def batch(distinct=True, padded=False, batch_size=3, seed=1):
    """([token_ids, segment_ids], labels). ``distinct``: no token id twice in the whole batch, so the
    gradient at each position's embedding is a row of the matrix's gradient."""
    rng = np.random.default_rng(seed)
    n = batch_size * SEQ_LEN
    ids = rng.permutation(np.arange(1, VOCAB))[:n] if distinct else rng.integers(1, 6, n)
    ids = ids.reshape(batch_size, SEQ_LEN).astype("int32")
    if padded:
        ids[0, 5:] = 0
        ids[1, 3:] = 0
    segments = np.zeros_like(ids)
    segments[:, SEQ_LEN // 2:] = 1
    labels = rng.integers(0, 2, batch_size).astype("int32")
    return [ids, segments], labels


def values(variables):
    return [np.array(v) for v in variables]


def embeddings_of(model):
    return model.get_layer("Embedding-Token").embeddings


def keras_gradients(model, loss, x, y):
    """Gradients of the compiled ``loss`` with respect to ``model.trainable_variables``, by Keras'
    own trainer (a plain model of the same layers, one SGD step of rate 1; weights restored)."""
    plain = keras.Model(model.inputs, model.outputs)
    plain.compile(optimizer=keras.optimizers.SGD(1.0), loss=loss, run_eagerly=True)
    before = values(plain.trainable_variables)
    plain.train_on_batch(x, y)
    after = values(plain.trainable_variables)
    for variable, value in zip(plain.trainable_variables, before):
        variable.assign(value)
    return [b - a for b, a in zip(before, after)]


def keras_loss(model, loss, x, y):
    plain = keras.Model(model.inputs, model.outputs)
    plain.compile(loss=loss, run_eagerly=True)
    return float(plain.evaluate(x, y, verbose=0))


def embedding_position(model):
    return next(i for i, v in enumerate(model.trainable_variables) if v is embeddings_of(model))


def l2_normalize(g):
    return g / (np.sqrt((g ** 2).sum()) + 1e-8)


# -- adversarial training (FGM) -------------------------------------------------------------------


@pytest.mark.parametrize("with_mlm", [False, True], ids=["classifier", "tied_mlm"])
def test_fgm_step_is_the_step_at_the_perturbed_embeddings(with_mlm):
    model = tiny_bert(with_mlm=with_mlm)
    x, y = batch(padded=True)
    if with_mlm:
        y = np.random.default_rng(2).integers(1, VOCAB, x[0].shape).astype("int32")
    loss, epsilon, lr = "sparse_categorical_crossentropy", 0.5, 0.1
    w0 = values(model.trainable_variables)
    e = embedding_position(model)

    grads = keras_gradients(model, loss, x, y)
    delta = epsilon * l2_normalize(grads[e])
    embeddings_of(model).assign(w0[e] + delta)
    adversarial_grads = keras_gradients(model, loss, x, y)
    adversarial_loss = keras_loss(model, loss, x, y)
    embeddings_of(model).assign(w0[e])

    adv = adversarial_training(model, "Embedding-Token", epsilon=epsilon)
    adv.compile(optimizer=keras.optimizers.SGD(lr), loss=loss)
    history = adv.fit(x, y, batch_size=len(y), epochs=1, shuffle=False, verbose=0)
    for w, g, new in zip(w0, adversarial_grads, values(model.trainable_variables)):
        np.testing.assert_allclose(new - w, -lr * g, rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(history.history["loss"][0], adversarial_loss, rtol=1e-4)
    # the perturbation mattered: the plain step would have been another
    assert np.abs(adversarial_grads[e] - grads[e]).max() > 100 * np.abs(grads[e]).max() * 1e-3


def test_fgm_removes_the_perturbation_exactly():
    model = tiny_bert()
    x, y = batch()
    w0 = values(model.weights)
    adv = adversarial_training(model, "Embedding-Token", epsilon=0.5)
    adv.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    adv.train_on_batch(x, y)
    for before, after in zip(w0, values(model.weights)):
        np.testing.assert_array_equal(before, after)


# -- gradient penalty -----------------------------------------------------------------------------


def test_gradient_penalty_loss_is_crossentropy_plus_squared_embedding_gradient():
    model = tiny_bert()
    x, y = batch(distinct=True)
    epsilon = 0.5
    g = keras_gradients(model, "sparse_categorical_crossentropy", x, y)[embedding_position(model)]
    expected = keras_loss(model, "sparse_categorical_crossentropy", x, y) + 0.5 * epsilon * (g ** 2).sum()
    gp = gradient_penalty(model, "Embedding-Token", epsilon=epsilon)
    gp.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    loss = gp.train_on_batch(x, y)
    assert 0.5 * epsilon * (g ** 2).sum() > 0.1 * expected  # the penalty is a visible part
    np.testing.assert_allclose(loss, expected, rtol=1e-4)


def test_gradient_penalty_counts_each_position_of_a_repeated_token():
    """bert4keras squared the IndexedSlices' rows, one per position: with repeated tokens that is
    not the matrix gradient's norm (here two examples are the same, so their positions' gradients
    add up in the matrix's rows). Reference: a model whose vocabulary gives every position its own
    row (a copy of the token's), so that the matrix gradient's rows are per position."""
    x, y = batch(distinct=False)
    x[0][1], x[1][1], y[1] = x[0][0], x[1][0], y[0]
    ids = x[0]
    assert len(np.unique(ids)) < ids.size
    epsilon = 0.01
    model = tiny_bert()
    per_position = tiny_bert(vocab_size=ids.size + 1, seed=5)
    e = embedding_position(model)
    for target, source in zip(per_position.trainable_variables, model.trainable_variables):
        if target is not embeddings_of(per_position):
            target.assign(np.array(source))
    table = np.array(embeddings_of(model))
    embeddings_of(per_position).assign(np.concatenate([table[:1], table[ids.ravel()]]))
    position_ids = np.arange(1, ids.size + 1, dtype="int32").reshape(ids.shape)
    g_rows = keras_gradients(per_position, "sparse_categorical_crossentropy", [position_ids, x[1]], y)[e]
    ce = keras_loss(per_position, "sparse_categorical_crossentropy", [position_ids, x[1]], y)
    np.testing.assert_allclose(ce, keras_loss(model, "sparse_categorical_crossentropy", x, y), rtol=1e-5)
    g_matrix = keras_gradients(model, "sparse_categorical_crossentropy", x, y)[e]
    assert abs((g_rows ** 2).sum() - (g_matrix ** 2).sum()) > 0.05 * (g_rows ** 2).sum()

    gp = gradient_penalty(model, "Embedding-Token", epsilon=epsilon)
    gp.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    np.testing.assert_allclose(gp.train_on_batch(x, y), ce + 0.5 * epsilon * (g_rows ** 2).sum(), rtol=1e-4)


def test_gradient_penalty_step_descends_the_penalized_loss():
    """The step's direction is the gradient of CE + eps/2 |g|^2 (second derivatives included): its
    length equals the penalized loss's central difference along it."""
    model = tiny_bert()
    x, y = batch(distinct=True)
    epsilon, lr, h = 0.5, 1.0, 1e-3
    e = embedding_position(model)

    def penalized_loss():
        g = keras_gradients(model, "sparse_categorical_crossentropy", x, y)[e]
        return keras_loss(model, "sparse_categorical_crossentropy", x, y) + 0.5 * epsilon * (g ** 2).sum()

    w0 = values(model.trainable_variables)
    ce_grads = keras_gradients(model, "sparse_categorical_crossentropy", x, y)
    gp = gradient_penalty(model, "Embedding-Token", epsilon=epsilon)
    gp.compile(optimizer=keras.optimizers.SGD(lr), loss="sparse_categorical_crossentropy")
    gp.train_on_batch(x, y)
    step = [(w - new) / lr for w, new in zip(w0, values(model.trainable_variables))]
    norm = np.sqrt(sum((s ** 2).sum() for s in step))
    # the penalty's own gradient is a large part of the step
    assert np.sqrt(sum(((s - g) ** 2).sum() for s, g in zip(step, ce_grads))) > 0.3 * norm

    def loss_at(t):
        for variable, w, s in zip(model.trainable_variables, w0, step):
            variable.assign(w + t * s / norm)
        return penalized_loss()

    slope = (loss_at(h) - loss_at(-h)) / (2 * h)
    np.testing.assert_allclose(slope, norm, rtol=0.02)


# -- virtual adversarial training -----------------------------------------------------------------


def vat_reference(model, x, seed, epsilon, xi):
    """(p, r): clean predictions and the one-iteration VAT perturbation, from Keras' trainer."""
    e = embedding_position(model)
    table = np.array(embeddings_of(model))
    p = model.predict(x, verbose=0)
    d = np.array(keras.random.normal(table.shape, seed=keras.random.SeedGenerator(seed)))
    embeddings_of(model).assign(table + xi * l2_normalize(d))
    g = keras_gradients(model, "kld", x, p)[e]
    embeddings_of(model).assign(table)
    return p, epsilon * l2_normalize(g)


def test_vat_perturbation_is_the_normalized_gradient_at_the_random_start():
    model = tiny_bert()
    x, _ = batch(padded=True)
    epsilon, xi, seed = 0.3, 0.1, 7
    _, expected = vat_reference(model, x, seed, epsilon, xi)
    vat = virtual_adversarial_training(model, "Embedding-Token", epsilon=epsilon, xi=xi, seed=seed)
    vat.compile(optimizer=keras.optimizers.SGD(0.0), loss="kld")
    r = vat.virtual_adversarial_perturbation(x)
    np.testing.assert_allclose(np.sqrt((r ** 2).sum()), epsilon, rtol=1e-5)
    unused = np.setdiff1d(np.arange(VOCAB), x[0])
    assert np.abs(r[unused]).max() == 0.0  # the random start is gone, only the batch's tokens move
    np.testing.assert_allclose(r, expected, rtol=1e-3, atol=1e-5 * np.abs(expected).max())


def test_vat_step_loss_is_the_divergence_at_the_perturbation_and_draws_anew():
    model = tiny_bert()
    x, _ = batch(padded=True)
    epsilon, xi, seed = 0.3, 0.1, 7
    p, r = vat_reference(model, x, seed, epsilon, xi)
    table = np.array(embeddings_of(model))
    embeddings_of(model).assign(table + r)
    expected = keras_loss(model, "kld", x, p)
    embeddings_of(model).assign(table)
    assert expected > 1e-4

    vat = virtual_adversarial_training(model, "Embedding-Token", epsilon=epsilon, xi=xi, seed=seed)
    assert any(v is vat.seed_generator.state for v in vat.non_trainable_variables)
    vat.compile(optimizer=keras.optimizers.SGD(0.0), loss="kld")
    state = np.array(vat.seed_generator.state)
    labels = np.zeros((len(p), 2), "float32")  # ignored: the targets are the clean predictions
    history = vat.fit(x, labels, batch_size=len(p), epochs=1, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], expected, rtol=1e-3)
    assert not np.array_equal(state, np.array(vat.seed_generator.state))


# -- integrated gradients -------------------------------------------------------------------------


def predict_with_table(model, x, table):
    embeddings = embeddings_of(model)
    saved = np.array(embeddings)
    embeddings.assign(table)
    try:
        return keras.ops.convert_to_numpy(model(x, training=False))
    finally:
        embeddings.assign(saved)


def test_integrated_gradients_are_complete():
    model = tiny_bert()
    x, _ = batch(padded=True)
    table = np.array(embeddings_of(model))
    probas = predict_with_table(model, x, table)
    baseline = predict_with_table(model, x, np.zeros_like(table))
    classes = probas.argmax(-1)
    rows = np.arange(len(classes))
    attributions = integrated_gradients(model, x, "Embedding-Token", steps=64)
    assert attributions.shape == (len(classes), SEQ_LEN, 16)
    np.testing.assert_allclose(
        attributions.sum(axis=(1, 2)), probas[rows, classes] - baseline[rows, classes], atol=2e-4
    )


def test_integrated_gradients_match_finite_differences():
    """Per token: e_i . sum_k w_k grad_i f(alpha_k e), each term a central difference of f when the
    matrix is alpha_k E and token i's row moves along itself (tokens are distinct)."""
    model = tiny_bert()
    x, _ = batch(distinct=True, batch_size=1)
    steps, h, cls = 4, 1e-2, 1
    table = np.array(embeddings_of(model))
    expected = np.zeros(SEQ_LEN)
    for k in range(steps + 1):
        weight = (0.5 if k in (0, steps) else 1.0) / steps
        for i, token in enumerate(x[0][0]):
            move = np.zeros_like(table)
            move[token] = table[token]
            up = predict_with_table(model, x, (k / steps) * table + h * move)[0, cls]
            down = predict_with_table(model, x, (k / steps) * table - h * move)[0, cls]
            expected[i] += weight * (up - down) / (2 * h)
    attributions = integrated_gradients(model, x, class_index=cls, steps=steps)
    np.testing.assert_allclose(attributions.sum(-1)[0], expected, atol=2e-5, rtol=1e-2)


def test_integrated_gradients_on_a_masked_average():
    """Embedding(mask_zero) -> masked average -> softmax: complete, and padding gets nothing."""
    keras.utils.set_random_seed(3)
    token_ids = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, 8, mask_zero=True, name="Embedding-Token")(token_ids)
    h = keras.layers.GlobalAveragePooling1D()(h)
    model = keras.Model(token_ids, keras.layers.Dense(3, activation="softmax")(h * 30.0))
    ids, _ = batch(padded=True)
    ids = ids[0]
    table = np.array(embeddings_of(model))
    probas = predict_with_table(model, ids, table)
    baseline = predict_with_table(model, ids, np.zeros_like(table))
    attributions = integrated_gradients(model, ids, class_index=2, steps=64)
    np.testing.assert_allclose(attributions.sum(axis=(1, 2)), probas[:, 2] - baseline[:, 2], atol=2e-4)
    assert np.abs(attributions[0, 5:]).max() == 0.0  # padding positions: zero embedding, zero weight


def test_gradient_penalty_keeps_the_padding_mask_of_the_outputs():
    """Per-position outputs: Keras weights the loss by the mask the outputs carry, which must
    survive the replaced embeddings (with epsilon=0 the loss is the plain masked loss)."""
    keras.utils.set_random_seed(3)
    token_ids = keras.Input((None,), dtype="int32")
    h = keras.layers.Embedding(VOCAB, 8, mask_zero=True, name="Embedding-Token")(token_ids)
    model = keras.Model(token_ids, keras.layers.Dense(3, activation="softmax")(h))
    ids = batch(padded=True)[0][0]
    y = np.random.default_rng(4).integers(0, 3, ids.shape)
    masked = keras_loss(model, "sparse_categorical_crossentropy", ids, y)
    gp = gradient_penalty(model, "Embedding-Token", epsilon=0.0)
    gp.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
    np.testing.assert_allclose(gp.train_on_batch(ids, y), masked, rtol=1e-5)


# -- usage and errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", ["fgm", "gp", "vat"])
def test_trains_with_fit_and_dropout(wrap):
    model = tiny_bert(dropout_rate=0.1)
    x, y = batch(padded=True)
    if wrap == "fgm":
        model, loss = adversarial_training(model, "Embedding-Token", 0.5), "sparse_categorical_crossentropy"
    elif wrap == "gp":
        model, loss = gradient_penalty(model, "Embedding-Token", 0.01), "sparse_categorical_crossentropy"
    else:
        model, loss, y = virtual_adversarial_training(model, "Embedding-Token", xi=0.1), "kld", None
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"] if y is not None else None)
    history = model.fit(x, y, batch_size=len(x[0]), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert len(history.history["loss"]) == 2


def test_wrong_embedding_name_lists_the_embedding_layers():
    with pytest.raises(ValueError, match=r"'Embedding-Tokens'.*'Embedding-Token', 'Embedding-Segment'"):
        adversarial_training(tiny_bert(), "Embedding-Tokens")
    with pytest.raises(ValueError, match="no `embeddings` matrix"):
        gradient_penalty(tiny_bert(), "Classifier")


def test_a_compiled_model_gives_a_model_compiled_alike():
    """bert4keras 0.11.5's order: compile, then adversarial_training(model, ...)."""
    model = tiny_bert()
    optimizer = keras.optimizers.SGD(0.1)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    for wrap in (adversarial_training, gradient_penalty, virtual_adversarial_training):
        wrapped = wrap(model, "Embedding-Token")
        assert wrapped.compiled and wrapped.optimizer is optimizer
        assert wrapped._compile_config.config["loss"] == "sparse_categorical_crossentropy"
    assert not tiny_bert().compiled and not adversarial_training(tiny_bert(), "Embedding-Token").compiled


def test_embedding_inside_a_nested_model_is_refused_for_the_penalty():
    inner = tiny_bert()
    inputs = [keras.Input((None,)), keras.Input((None,))]
    model = keras.Model(inputs, inner(inputs))
    gp = gradient_penalty(model, "Embedding-Token")  # found by name in the nested model
    gp.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    x, y = batch()
    with pytest.raises(ValueError, match="called on token ids 0 times"):
        gp.train_on_batch(x, y)
    with pytest.raises(ValueError, match="called on token ids 0 times"):
        integrated_gradients(model, x)


def test_integrated_gradients_need_a_classifier_output():
    x, _ = batch()
    with pytest.raises(ValueError, match=r"\(batch_size, num_classes\)"):
        integrated_gradients(tiny_bert(with_mlm=True), x)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (AdversarialTrainingModel, {"epsilon": 0.25}),
        (GradientPenaltyModel, {"epsilon": 0.5}),
        (VirtualAdversarialModel, {"epsilon": 2.0, "xi": 0.5, "iters": 2, "seed": 3}),
    ],
)
def test_config_round_trip(cls, kwargs):
    model = tiny_bert()
    wrapped = cls(model.inputs, model.outputs, embedding_name="Embedding-Token", **kwargs)
    clone = cls.from_config(wrapped.get_config())
    assert type(clone) is cls
    for key, value in {"embedding_name": "Embedding-Token", **kwargs}.items():
        assert getattr(clone, key) == value
    assert len(clone.weights) == len(model.weights)


def test_saved_and_loaded_with_keras(tmp_path):
    model = tiny_bert()
    adv = adversarial_training(model, "Embedding-Token", epsilon=0.25)
    adv.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x, y = batch(padded=True)
    adv.train_on_batch(x, y)
    path = str(tmp_path / "adv.keras")
    adv.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is AdversarialTrainingModel and loaded.epsilon == 0.25
    np.testing.assert_allclose(loaded.predict(x, verbose=0), adv.predict(x, verbose=0), atol=1e-6)
    loaded.train_on_batch(x, y)


class VatFromCallback(keras.callbacks.Callback):
    """bert4keras 0.11.5's VAT pattern: a VAT step on an unlabeled batch after each supervised step."""

    def __init__(self, model_vat, unlabeled, sync):
        super().__init__()
        self.model_vat, self.unlabeled, self.sync, self.steps = model_vat, unlabeled, sync, 0

    def on_batch_end(self, batch, logs=None):
        if not self.sync:
            self.model_vat.train_on_batch(self.unlabeled)
            return
        self.model  # on JAX: fit's weights back into the variables the VAT model shares
        before = keras.ops.convert_to_numpy(self.model_vat.trainable_variables[0])
        self.model_vat.train_on_batch(self.unlabeled)
        after = keras.ops.convert_to_numpy(self.model_vat.trainable_variables[0])
        self.steps += int(not np.array_equal(before, after))


def test_vat_steps_from_a_callback_of_the_supervised_fit():
    model = tiny_bert()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    model_vat = virtual_adversarial_training(model, "Embedding-Token", epsilon=0.1, xi=1.0, seed=0)
    model_vat.compile(optimizer=keras.optimizers.SGD(0.1), loss="kld")
    x, y = batch()
    callback = VatFromCallback(model_vat, batch(seed=2)[0], sync=True)
    model.fit(x, y, batch_size=3, epochs=2, verbose=0, callbacks=[callback])
    assert callback.steps == 2  # every VAT step changed the shared weights
    if keras.backend.backend() == "jax":
        callback = VatFromCallback(model_vat, batch(seed=2)[0], sync=False)
        with pytest.raises(RuntimeError, match="read `self.model` first"):
            model.fit(x, y, batch_size=3, epochs=1, verbose=0, callbacks=[callback])
