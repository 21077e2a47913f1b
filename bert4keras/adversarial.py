"""Adversarial training, gradient penalty and virtual adversarial training on a model's token
embeddings, trained with ``model.fit`` on TensorFlow, JAX and PyTorch; integrated gradients over
the same embeddings.

bert4keras 0.11.5 did these in four example scripts by patching Keras 2's graph
(``model._make_train_function()``, a replaced ``model.train_function``, ``K.gradients(
model.total_loss, [embeddings])``, ``K.function``, ``K.gradients`` inside a Layer). This module
owns their Keras 3 ways::

    model = adversarial_training(model, 'Embedding-Token', epsilon=0.5)   # FGM
    model = gradient_penalty(model, 'Embedding-Token', epsilon=1)          # loss + eps/2 |dL/de|^2
    model_vat = virtual_adversarial_training(model, 'Embedding-Token')     # VAT (unlabeled batches)
    model.compile(...); model.fit(...)                                     # as usual, any backend
    scores = integrated_gradients(model, [token_ids, segment_ids])        # (batch, seq_len, size)

The three training functions return a new model of the same layers (the weights are shared with
the model passed in), of a `keras.Model` subclass that can also be built like a functional model,
``AdversarialTrainingModel(inputs, outputs, embedding_name=..., epsilon=...)``, and serializes.
Its ``train_step`` follows Keras' guides "Customizing what happens in fit()": one per backend
(TensorFlow's GradientTape, ``jax.value_and_grad`` over the state tuple, torch autograd), each a
thin shell around one backend-agnostic ``_training_loss(trainable_values, non_trainable_values,
x, y, sample_weight)`` that computes the model at explicit variable values
(`keras.StatelessScope`). A perturbation of the embedding matrix is therefore a different value
of that variable during one forward pass, never written into the variable: after a step the
weights are exactly what the optimizer made of the gradients, with nothing added or subtracted.

Gradient penalty and integrated gradients need the gradient at each *position's* token embedding
(the rows of the ``tf.IndexedSlices`` that bert4keras read), not at the matrix; they run the
model's functional graph with the embedding layer's output replaced (`_call_with_embeddings`,
on Keras' ``Functional._run_through_graph``, as ``keras.models.clone_model`` does). That needs the
embedding layer to be a layer of the model's own graph (as in every bert4keras script: the
classifier is built on ``bert.model.output``), called once on token ids; with ``with_mlm`` its
second, tied-output call is left alone.

Sources: Goodfellow et al. 2015 (FGSM), Miyato et al. 2017 (adversarial training for text, FGM on
embeddings), Miyato et al. 2018 (VAT), Sundararajan et al. 2017 (integrated gradients); Su
Jianlin, kexue.fm/archives/7234 (adversarial training and gradient penalty), 7466 (VAT), 7533
(integrated gradients); bert4keras 0.11.5 examples task_iflytek_adversarial_training.py,
task_iflytek_gradient_penalty.py, task_sentiment_virtual_adversarial_training.py,
task_sentiment_integrated_gradients.py.
"""

import contextlib

import keras
from keras import ops

from bert4keras import _keras_internals as internals

_BACKEND = keras.backend.backend()
if _BACKEND == "tensorflow":
    import tensorflow as tf
elif _BACKEND == "jax":
    import jax
elif _BACKEND == "torch":
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel


def search_embedding_layer(model, name):
    """The layer called ``name`` in ``model`` or in a model nested in it, which must hold an
    ``embeddings`` matrix (`keras.layers.Embedding` and subclasses such as bert4keras's
    ``Embedding-Token``).

    Raises:
        ValueError: no such layer (the message lists the model's Embedding layers), or the layer
            has no ``embeddings`` weight.
    Source: bert4keras 0.11.5 ``search_layer``, which found it by walking back from an output.
    """
    layers = list(_walk_layers(model))
    for layer in layers:
        if layer.name == name:
            if not isinstance(getattr(layer, "embeddings", None), keras.Variable):
                raise ValueError(f"Layer {name!r} of model {model.name!r} has no `embeddings` matrix "
                                 f"(it is a {type(layer).__name__}).")
            return layer
    found = [layer.name for layer in layers if isinstance(layer, keras.layers.Embedding)]
    raise ValueError(f"No layer named {name!r} in model {model.name!r}; its Embedding layers are {found}.")


def _walk_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _walk_layers(layer)


def _value_and_grad(fn, x, create_graph=False):
    """``((value, aux), grad)`` of ``value, aux = fn(x)`` with respect to ``x`` (a tensor or a list
    of tensors; the gradient has the same structure, dense, zero where ``value`` does not depend on
    it). ``create_graph``: keep the gradient differentiable (torch; TensorFlow's enclosing tapes and
    JAX's transformations always do). The one place where the three backends differ in what the
    train steps compute."""
    if _BACKEND == "jax":
        return jax.value_and_grad(fn, has_aux=True)(x)
    if _BACKEND == "tensorflow":
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            value, aux = fn(x)
        grad = tape.gradient(value, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grad = tf.nest.map_structure(tf.convert_to_tensor, grad)  # IndexedSlices of a gather -> dense
        return (value, aux), grad
    if _BACKEND == "torch":
        xs = x if isinstance(x, (list, tuple)) else [x]
        # A tensor outside autograd's graph becomes a leaf; one inside it (a parameter, or the
        # embedding output whose gradient is penalized) is used as it is.
        xs = [t if t.requires_grad else t.detach().requires_grad_(True) for t in xs]
        value, aux = fn(xs if isinstance(x, (list, tuple)) else xs[0])
        grads = torch.autograd.grad(value, xs, create_graph=create_graph, allow_unused=True)
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(xs, grads)]
        return (value, aux), (grads if isinstance(x, (list, tuple)) else grads[0])
    raise NotImplementedError(f"bert4keras.adversarial does not support the {_BACKEND} backend.")


def _twice_differentiable():
    """Context in which the forward pass can be differentiated twice: on torch, attention through
    the math kernel (the fused CPU/GPU kernels have no double backward); elsewhere nothing."""
    if _BACKEND == "torch":
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def _l2_normalize(x):
    """``x / (||x|| + 1e-8)`` over all entries, as bert4keras's scripts."""
    return x / (ops.sqrt(ops.sum(ops.square(x))) + 1e-8)


class _KeepMask(keras.layers.Layer):
    """``_KeepMask()(source, value)`` returns ``value`` carrying ``source``'s Keras mask."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, source, value):
        return value


class _EmbeddingsFound(Exception):
    pass


def _is_embedding_call(kwargs):
    """Whether a call of the embedding layer looks up token ids (not bert4keras's tied output
    projection ``mode='dense'``, nor `keras.layers.ReversibleEmbedding`'s ``reverse=True``)."""
    return kwargs.get("mode", "embedding") != "dense" and not kwargs.get("reverse", False)


def _call_with_embeddings(model, layer, inputs, edit, training=None):
    """``model(inputs, training=training)`` with the output ``e`` of ``layer``'s call on token ids
    replaced by ``edit(e)`` (which keeps ``e``'s padding mask).

    Runs the functional graph as ``Functional.call`` does (training passed to every operation that
    takes it); the layer must be called on token ids exactly once in ``model``'s own graph.
    Raises:
        ValueError: ``layer`` is not called on token ids in ``model``'s graph (e.g. it sits in a
            nested model), or is called more than once.
    """
    edited = []
    keep_mask = _KeepMask(name="keep_mask")

    def operation_fn(operation):
        def call(*args, **kwargs):
            if training is not None and "training" in internals.call_context_args(operation):
                kwargs["training"] = training
            outputs = operation(*args, **kwargs)
            if operation is layer and _is_embedding_call(kwargs):
                edited.append(layer)
                outputs = keep_mask(outputs, edit(outputs))
            return outputs

        return call

    outputs = internals.run_through_graph(model, inputs, operation_fn)
    if len(edited) != 1:
        raise ValueError(
            f"Layer {layer.name!r} is called on token ids {len(edited)} times in the graph of model "
            f"{model.name!r}; gradient penalty and integrated gradients need exactly one call in the "
            "model's own graph (build the model on the layers' outputs, e.g. bert.model.output, "
            "rather than nesting a model that holds the embedding)."
        )
    if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
        return outputs[0]
    return outputs


def _embedding_output(model, layer, inputs):
    """The output of ``layer``'s call on token ids when ``model`` runs on ``inputs``
    ``(batch_size, seq_len, embedding_size)``, computing only the graph up to it."""

    def stop(embeddings):
        raise _EmbeddingsFound(embeddings)

    try:
        _call_with_embeddings(model, layer, inputs, stop)
    except _EmbeddingsFound as found:
        return found.args[0]
    raise ValueError(f"Layer {layer.name!r} is not called on token ids in model {model.name!r}.")


class _EmbeddingTrainingModel(keras.Model):
    """Base of the three training models: finds the embedding layer, computes the model at explicit
    variable values and holds the per-backend ``train_step``. Subclasses define
    ``_training_loss(trainable_values, non_trainable_values, x, y, sample_weight) -> (loss, (y_true,
    y_pred, non_trainable_values))``, the loss whose gradient the optimizer applies, and the
    targets/predictions the compiled metrics see.
    """

    _config_keys = ("embedding_name",)

    def __init__(self, *args, embedding_name="Embedding-Token", **kwargs):
        super().__init__(*args, **kwargs)
        self.embedding_name = embedding_name
        search_embedding_layer(self, embedding_name)  # fail early on a wrong name

    @property
    def embedding_layer(self):
        return search_embedding_layer(self, self.embedding_name)

    def _embedding_index(self):
        """Index of the embedding matrix in ``self.trainable_variables``."""
        embeddings = self.embedding_layer.embeddings
        for i, variable in enumerate(self.trainable_variables):
            if variable is embeddings:
                return i
        raise ValueError(f"The embedding matrix of layer {self.embedding_name!r} is not trainable; "
                         "it cannot be perturbed or penalized through training.")

    def _forward(self, trainable_values, non_trainable_values, x, y=None, sample_weight=None,
                 training=False, edit=None):
        """``(loss, (y_pred, non_trainable_values))``: one forward pass at the given variable values
        (with the token embeddings replaced by ``edit(embeddings)`` if given) and its compiled loss
        (``None`` when ``y`` is None), with the losses that layers add (`add_loss`, regularizers)."""
        mapping = list(zip(self.trainable_variables, trainable_values))
        mapping += list(zip(self.non_trainable_variables, non_trainable_values))
        with keras.StatelessScope(state_mapping=mapping, collect_losses=True) as scope:
            if edit is None:
                y_pred = self(x, training=training)
            else:
                y_pred = _call_with_embeddings(self, self.embedding_layer, x, edit, training=training)
            loss = None if y is None else self.compute_loss(x, y, y_pred, sample_weight, training=training)
        non_trainable_values = [scope.get_current_value(v) for v in self.non_trainable_variables]
        return loss, (y_pred, non_trainable_values)

    def _update_metrics(self, loss, x, y, y_pred, sample_weight):
        batch_size = ops.shape(keras.tree.flatten(x)[0])[0]
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss, sample_weight=batch_size)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    if _BACKEND == "jax":

        def train_on_batch(self, *args, **kwargs):
            # Keras' JAX fit empties the variables it trains during an epoch (the weights live in
            # its state); this model shares them when called from a callback of another's fit.
            if any(internals.variable_value(v) is None for v in self.trainable_variables):
                raise RuntimeError(
                    f"{type(self).__name__}.train_on_batch: its weights are held by another model's "
                    "fit (on JAX, Keras keeps them out of the shared variables during an epoch). In "
                    "the callback, read `self.model` first: it writes fit's weights back, and fit "
                    "reads them again for its next step."
                )
            return super().train_on_batch(*args, **kwargs)

        def train_step(self, state, data):
            trainable, non_trainable, optimizer_variables, metrics_variables = state
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            (loss, (y_true, y_pred, non_trainable)), grads = _value_and_grad(
                lambda values: self._training_loss(values, non_trainable, x, y, sample_weight), trainable
            )
            trainable, optimizer_variables = self.optimizer.stateless_apply(optimizer_variables, grads, trainable)
            with keras.StatelessScope(state_mapping=list(zip(self.metrics_variables, metrics_variables))) as scope:
                logs = self._update_metrics(loss, x, y_true, y_pred, sample_weight)
            metrics_variables = [scope.get_current_value(v) for v in self.metrics_variables]
            return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)

    else:

        def train_step(self, data):
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            trainable = [v.value for v in self.trainable_variables]
            non_trainable = [v.value for v in self.non_trainable_variables]
            (loss, (y_true, y_pred, non_trainable)), grads = _value_and_grad(
                lambda values: self._training_loss(values, non_trainable, x, y, sample_weight), trainable
            )
            if _BACKEND == "torch":
                loss, y_pred = loss.detach(), keras.tree.map_structure(lambda t: t.detach(), y_pred)
                with torch.no_grad():
                    self.optimizer.apply(grads, self.trainable_variables)
            else:
                self.optimizer.apply(grads, self.trainable_variables)
            for variable, value in zip(self.non_trainable_variables, non_trainable):
                variable.assign(value)
            return self._update_metrics(loss, x, y_true, y_pred, sample_weight)

    def get_config(self):
        return {**super().get_config(), **{key: getattr(self, key) for key in self._config_keys}}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        own = {key: config.pop(key) for key in cls._config_keys if key in config}
        functional = keras.Model.from_config(config, custom_objects=custom_objects)
        return cls(functional.input, functional.output, name=functional.name, **own)


def _replace(values, index, value):
    values = list(values)
    values[index] = value
    return values


@keras.saving.register_keras_serializable(package="bert4keras")
class AdversarialTrainingModel(_EmbeddingTrainingModel):
    """A functional model trained on adversarial perturbations of its embedding matrix (FGM).

    Each training step: ``g`` = gradient of the compiled loss with respect to the embedding matrix
    ``E`` (computed in inference mode, without dropout, as bert4keras's ``K.function`` at learning
    phase 0); ``delta = epsilon * g / (||g|| + 1e-8)`` (Frobenius norm of the whole matrix, which
    is zero in the rows of tokens absent from the batch); the optimizer applies the gradients of the
    loss at ``E + delta`` (training mode) to the weights, ``E`` included, as they were. With
    ``with_mlm`` models ``E`` is also the tied output projection and is perturbed there too, as in
    bert4keras. Evaluation and prediction are the plain model's.

    Args (besides `keras.Model`'s ``inputs, outputs, name``):
        embedding_name: str, the embedding layer (found in nested models too).
        epsilon: float, size of the perturbation.
    Raises:
        ValueError: no embedding layer of that name (its message lists the model's Embedding
            layers); epsilon < 0.
    Source: Miyato et al. 2017 (FGM), Goodfellow et al. 2015; kexue.fm/archives/7234;
    bert4keras 0.11.5 example ``adversarial_training``.
    """

    _config_keys = ("embedding_name", "epsilon")

    def __init__(self, *args, embedding_name="Embedding-Token", epsilon=1.0, **kwargs):
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}.")
        super().__init__(*args, embedding_name=embedding_name, **kwargs)
        self.epsilon = epsilon

    def _training_loss(self, trainable, non_trainable, x, y, sample_weight):
        i = self._embedding_index()

        def clean_loss(embeddings):
            loss, _ = self._forward(_replace(trainable, i, embeddings), non_trainable, x, y, sample_weight)
            return loss, ()

        _, grad = _value_and_grad(clean_loss, trainable[i])
        delta = self.epsilon * _l2_normalize(ops.stop_gradient(grad))
        loss, (y_pred, non_trainable) = self._forward(
            _replace(trainable, i, trainable[i] + delta), non_trainable, x, y, sample_weight, training=True
        )
        return loss, (y, y_pred, non_trainable)


@keras.saving.register_keras_serializable(package="bert4keras")
class GradientPenaltyModel(_EmbeddingTrainingModel):
    """A functional model trained on ``loss + 0.5 * epsilon * ||dloss/de||^2``, ``e`` the token
    embeddings of the batch ``(batch_size, seq_len, embedding_size)`` (one row per position, the
    rows of the ``IndexedSlices`` gradient that bert4keras squared; a token used twice counts
    twice), computed in the same training-mode forward pass as the loss. Evaluation reports the
    plain loss.

    The step differentiates the loss twice: the compiled loss must allow it (Keras 3's
    cross-entropies do on every backend; bert4keras's script redefined the sparse one because
    Keras 2's did not). On torch, attention runs on the math kernel during the step (the fused
    kernels have no double backward).

    Args (besides `keras.Model`'s ``inputs, outputs, name``):
        embedding_name: str, the embedding layer; it must be called once on token ids in the
            model's own graph.
        epsilon: float, weight of the penalty.
    Raises:
        ValueError: no embedding layer of that name; epsilon < 0; (at the first step) the layer is
            not called once on token ids in the model's graph.
    Source: kexue.fm/archives/7234 (gradient penalty as adversarial training's first-order form);
    bert4keras 0.11.5 example ``loss_with_gradient_penalty``.
    """

    _config_keys = ("embedding_name", "epsilon")

    def __init__(self, *args, embedding_name="Embedding-Token", epsilon=1.0, **kwargs):
        if epsilon < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon}.")
        super().__init__(*args, embedding_name=embedding_name, **kwargs)
        self.epsilon = epsilon

    def _training_loss(self, trainable, non_trainable, x, y, sample_weight):
        mapping = list(zip(self.trainable_variables, trainable))
        mapping += list(zip(self.non_trainable_variables, non_trainable))
        with keras.StatelessScope(state_mapping=mapping):
            embeddings = _embedding_output(self, self.embedding_layer, x)

        def loss_at(e):
            return self._forward(trainable, non_trainable, x, y, sample_weight, training=True, edit=lambda _: e)

        with _twice_differentiable():
            (loss, (y_pred, non_trainable)), grad = _value_and_grad(loss_at, embeddings, create_graph=True)
        loss = loss + 0.5 * self.epsilon * ops.sum(ops.square(grad))
        return loss, (y, y_pred, non_trainable)


@keras.saving.register_keras_serializable(package="bert4keras")
class VirtualAdversarialModel(_EmbeddingTrainingModel):
    """A functional model trained, on batches of inputs without labels, to keep its predictions
    under the perturbation of its embedding matrix that changes them most (VAT).

    Each training step: ``p`` = predictions on the clean batch (inference mode, held constant);
    ``d`` = a standard normal draw of the matrix's shape; ``iters`` times ``d`` = gradient with
    respect to the matrix of ``loss(p, model(E + xi * d / ||d||))`` (inference mode; power
    iteration towards the loss's top curvature direction); the optimizer then applies the
    gradients of ``loss(p, model(E + r))``, ``r = epsilon * d / ||d||``, in training mode. The loss
    is the compiled one, with ``p`` as its targets: compile with ``loss='kld'`` as bert4keras did.
    Labels in the data are ignored (``fit(x)`` works); compiled metrics compare with ``p``.
    bert4keras trained it with ``train_on_batch`` on unlabeled batches from a callback of the
    supervised model's ``fit`` (the two share their layers). On JAX such a callback must read
    ``self.model`` before that call: it makes ``fit`` write its weights back to the variables and
    read them again for its next step (without it, the variables are empty and the call fails).

    Args (besides `keras.Model`'s ``inputs, outputs, name``):
        embedding_name: str, the embedding layer (found in nested models too).
        epsilon: float, size of the final perturbation (norm of ``r`` over the whole matrix).
        xi: float, size of the perturbation at which the power iteration takes gradients.
        iters: int >= 1, power iterations.
        seed: int or None, seed of the random starts ``d``: the i-th step draws
            ``keras.random.normal(E.shape, seed=SeedGenerator(seed))``'s i-th draw.
    Raises:
        ValueError: no embedding layer of that name; epsilon < 0, xi <= 0 or iters < 1.
    Source: Miyato et al. 2018 (VAT); kexue.fm/archives/7466; bert4keras 0.11.5 example
    ``virtual_adversarial_training``.
    """

    _config_keys = ("embedding_name", "epsilon", "xi", "iters", "seed")

    def __init__(self, *args, embedding_name="Embedding-Token", epsilon=1.0, xi=10.0, iters=1, seed=None, **kwargs):
        if epsilon < 0 or xi <= 0 or iters < 1:
            raise ValueError(f"Need epsilon >= 0, xi > 0 and iters >= 1; got {epsilon}, {xi}, {iters}.")
        super().__init__(*args, embedding_name=embedding_name, **kwargs)
        self.epsilon = epsilon
        self.xi = xi
        self.iters = int(iters)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _perturbation(self, trainable, non_trainable, x, sample_weight):
        """``(p, r, non_trainable)``: clean predictions, the adversarial perturbation of the
        embedding matrix, and the non-trainable values after the random draw."""
        i = self._embedding_index()
        _, (p, non_trainable) = self._forward(trainable, non_trainable, x)
        p = ops.stop_gradient(p)
        mapping = list(zip(self.non_trainable_variables, non_trainable))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            d = keras.random.normal(ops.shape(trainable[i]), seed=self.seed_generator)
        non_trainable = [scope.get_current_value(v) for v in self.non_trainable_variables]
        embeddings = ops.stop_gradient(trainable[i])
        for _ in range(self.iters):

            def divergence(r):
                loss, _ = self._forward(_replace(trainable, i, embeddings + r), non_trainable, x, p, sample_weight)
                return loss, ()

            _, d = _value_and_grad(divergence, self.xi * _l2_normalize(d))
            d = ops.stop_gradient(d)
        return p, self.epsilon * _l2_normalize(d), non_trainable

    def _training_loss(self, trainable, non_trainable, x, y, sample_weight):
        p, r, non_trainable = self._perturbation(trainable, non_trainable, x, sample_weight)
        i = self._embedding_index()
        loss, (y_pred, non_trainable) = self._forward(
            _replace(trainable, i, trainable[i] + r), non_trainable, x, p, sample_weight, training=True
        )
        return loss, (p, y_pred, non_trainable)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        # Unlabeled data (``fit(x)``): the targets are the predictions themselves, a zero loss, so
        # that the symbolic build ``fit`` runs first, and ``evaluate(x)``, have a loss to compute.
        if y is None and y_pred is not None:
            y = ops.stop_gradient(y_pred)
        return super().compute_loss(x, y, y_pred, sample_weight, training=training)

    def virtual_adversarial_perturbation(self, x, sample_weight=None):
        """The perturbation ``r`` of the embedding matrix that the next training step on ``x``
        would use (it draws from the model's seed generator as that step would): a NumPy array of
        the matrix's shape, norm ``epsilon``. The model must be compiled (the loss defines ``r``).
        """
        trainable = [v.value for v in self.trainable_variables]
        non_trainable = [v.value for v in self.non_trainable_variables]
        _, r, non_trainable = self._perturbation(trainable, non_trainable, x, sample_weight)
        for variable, value in zip(self.non_trainable_variables, non_trainable):
            variable.assign(value)
        return ops.convert_to_numpy(r)


def _wrap(cls, model, **kwargs):
    """A ``cls`` of ``model``'s layers; compiled with ``model``'s own compile() arguments (the same
    optimizer, loss and metric objects) when ``model`` is compiled, so that the 0.11.5 order --
    compile, then ``adversarial_training(model, ...)`` -- needs only ``model = ...``."""
    wrapped = cls(model.input, model.output, name=model.name, **kwargs)
    if getattr(model, "compiled", False):
        # the objects compile() was given: get_compile_config() would lose unregistered losses
        wrapped.compile(**internals.compile_arguments(model))
    return wrapped


def adversarial_training(model, embedding_name="Embedding-Token", epsilon=1.0):
    """``AdversarialTrainingModel`` of ``model``'s layers (weights shared): FGM on the matrix of
    ``embedding_name``. Compile the returned model, or pass a compiled ``model``: the returned
    one is then compiled with the same arguments.
    Raises: ValueError: as `AdversarialTrainingModel`."""
    return _wrap(AdversarialTrainingModel, model, embedding_name=embedding_name, epsilon=epsilon)


def gradient_penalty(model, embedding_name="Embedding-Token", epsilon=1.0):
    """``GradientPenaltyModel`` of ``model``'s layers (weights shared): the loss plus ``0.5 *
    epsilon`` times the squared gradient at the token embeddings. Compile the returned model, or
    pass a compiled ``model`` (the returned one is then compiled with the same arguments).
    Raises: ValueError: as `GradientPenaltyModel`."""
    return _wrap(GradientPenaltyModel, model, embedding_name=embedding_name, epsilon=epsilon)


def virtual_adversarial_training(model, embedding_name="Embedding-Token", epsilon=1.0, xi=10.0, iters=1, seed=None):
    """``VirtualAdversarialModel`` of ``model``'s layers (weights shared), to compile (``loss='kld'``)
    and train on unlabeled batches; or pass a compiled ``model`` (the returned one is then compiled
    with the same arguments).
    Raises: ValueError: as `VirtualAdversarialModel`."""
    return _wrap(VirtualAdversarialModel, model, embedding_name=embedding_name, epsilon=epsilon, xi=xi,
                 iters=iters, seed=seed)


def integrated_gradients(model, inputs, embedding_name="Embedding-Token", class_index=None, steps=20):
    """Integrated gradients of a classifier's class probability with respect to its token embeddings.

    With ``e`` the embedding layer's output on ``inputs`` and ``f(e)`` the model's output for
    ``class_index``, returns ``e * integral_0^1 grad f(alpha * e) d alpha`` (trapezoid rule over
    ``steps`` intervals): a zero baseline for the token embeddings, segment and position embeddings
    unchanged. Summed over the last axis the attributions add up to ``f(e) - f(0)`` (completeness,
    up to the quadrature error); bert4keras's script reduced them per token with the norm or the
    largest absolute value over the last axis. (That script averaged ``alpha * e * grad`` at
    ``alpha = i / (n - 1)``, which is not complete; this is the paper's rule.)

    Args:
        model: a functional model whose output is ``(batch_size, num_classes)``.
        inputs: the model's inputs, e.g. ``[token_ids, segment_ids]`` of shape ``(batch_size,
            seq_len)``.
        embedding_name: str, the embedding layer, called once on token ids in the model's graph.
        class_index: None (each example's predicted class), an int, or ``(batch_size,)`` ints.
        steps: int >= 1, quadrature intervals (``steps + 1`` gradient evaluations).
    Returns: float32 NumPy array ``(batch_size, seq_len, embedding_size)``.
    Raises:
        ValueError: steps < 1; the output is not ``(batch_size, num_classes)``; no such embedding
            layer, or it is not called once on token ids in the model's own graph.
    Source: Sundararajan et al. 2017; kexue.fm/archives/7533; bert4keras 0.11.5 example
    task_sentiment_integrated_gradients.py.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}.")
    layer = search_embedding_layer(model, embedding_name)
    embeddings = ops.stop_gradient(_embedding_output(model, layer, inputs))
    probas = _call_with_embeddings(model, layer, inputs, lambda e: e, training=False)
    if isinstance(probas, (list, tuple)) or len(probas.shape) != 2:
        raise ValueError("integrated_gradients needs a model with one output of shape (batch_size, num_classes).")
    if class_index is None:
        class_index = ops.argmax(probas, axis=-1)
    class_index = ops.cast(ops.broadcast_to(ops.convert_to_tensor(class_index), ops.shape(probas)[:1]), "int32")

    def score(e):
        probas = _call_with_embeddings(model, layer, inputs, lambda _: e, training=False)
        return ops.sum(ops.take_along_axis(probas, class_index[:, None], axis=1)), ()

    total = ops.zeros_like(embeddings)
    for k in range(steps + 1):
        weight = (0.5 if k in (0, steps) else 1.0) / steps
        _, grad = _value_and_grad(score, (k / steps) * embeddings)
        total = total + weight * ops.stop_gradient(grad)
    return ops.convert_to_numpy(embeddings * total).astype("float32")
