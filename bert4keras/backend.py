"""Small numerics on `keras.ops`, shared by layers and models, and bert4keras's ``K`` namespace.

Owns: the activation names used in checkpoint configs (``gelu`` is the erf form, ``gelu_new`` /
``gelu_pytorch_tanh`` / ``gelu_tanh`` the tanh approximation), the masking constant used in
attention, and bert4keras 0.11.5's helpers (`search_layer`, `batch_gather`, `sequence_masking`,
`recompute_grad`, ...). ``from bert4keras.backend import keras, K`` gives Keras and Keras 2's backend
API, which lives in `bert4keras.keras_backend`; from bert4keras, that module imports only
`bert4keras._keras_internals` (every private Keras API used), and this one only those two (and
re-exports the bert4keras additions `infinity`, `set_infinity`, `symbolic`, `reshape`, `flatten`).
"""

import contextlib
import functools
import math
import os
import threading

import keras
import numpy as np
from keras import ops

from bert4keras import _keras_internals as internals
from bert4keras import keras_backend as K
from bert4keras.keras_backend import flatten, infinity, reshape, set_infinity, symbolic  # noqa: F401

#: Logit given to masked attention positions before the softmax (computed in float32).
MASK_VALUE = -1e12


def mask_value(dtype):
    """``-infinity()`` (-1e12 unless changed by `set_infinity`, i.e. `MASK_VALUE`) as a finite
    number of ``dtype``: for float16 (largest finite 65504, so -1e12 would become -inf and a fully
    masked softmax row NaN) at most half its most negative value, -32752, leaving room to add a
    logit without overflowing. float."""
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype == "float16":
        return -min(infinity(), 65504.0 / 2)
    return -infinity()


@keras.saving.register_keras_serializable(package="bert4keras")
def gelu_erf(x):
    """GELU, exact form ``x * Phi(x)`` (Hendrycks & Gimpel 2016); Google BERT's ``gelu``."""
    return keras.activations.gelu(x, approximate=False)


@keras.saving.register_keras_serializable(package="bert4keras")
def gelu_tanh(x):
    """GELU, tanh approximation (OpenAI GPT-2's ``gelu_new``, T5 v1.1's ``gelu_new``)."""
    return keras.activations.gelu(x, approximate=True)


_ACTIVATIONS = {
    "gelu": gelu_erf,
    "gelu_erf": gelu_erf,
    "gelu_tanh": gelu_tanh,
    "gelu_new": gelu_tanh,
    "gelu_fast": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
    "silu": keras.activations.silu,
    "swish": keras.activations.silu,
}


def set_gelu(version):
    """Choose what the name ``gelu`` means: ``'erf'`` (default, official BERT) or ``'tanh'``.

    Raises:
        ValueError: for any other version.
    """
    version = version.lower()
    if version not in ("erf", "tanh"):
        raise ValueError(f"set_gelu: version must be 'erf' or 'tanh', got {version!r}")
    _ACTIVATIONS["gelu"] = gelu_erf if version == "erf" else gelu_tanh


def get_activation(activation):
    """Resolve an activation given by name (as in HF / Google configs) or as a callable.

    Args:
        activation: str (``'gelu'``, ``'gelu_new'``, ``'relu'``, ``'tanh'``, ``'linear'``, ...),
            a callable, or None (identity).
    Returns:
        A callable acting elementwise on tensors.
    Raises:
        ValueError: the name is neither ours nor a Keras activation.
    """
    if activation is None:
        return keras.activations.linear
    if callable(activation):
        return activation
    if activation in _ACTIVATIONS:
        return _ACTIVATIONS[activation]
    try:
        return keras.activations.get(activation)
    except (ValueError, TypeError) as e:
        raise ValueError(f"Unknown activation {activation!r}") from e


def sinusoidal_embeddings(position_ids, dim, base=10000):
    """Interleaved sinusoidal table ``[sin(p w_0), cos(p w_0), sin(p w_1), ...]``.

    ``w_i = base^(-2i / dim)`` (Vaswani et al. 2017, sec. 3.5, with sin/cos interleaved as in
    bert4keras and RoFormer). position_ids: int or float tensor of any shape ``S``; returns
    float32 ``S + (dim,)``.
    """
    frequencies = ops.power(float(base), -2.0 * ops.arange(dim // 2, dtype="float32") / dim)
    angles = ops.cast(position_ids, "float32")[..., None] * frequencies
    embeddings = ops.stack([ops.sin(angles), ops.cos(angles)], axis=-1)
    return ops.reshape(embeddings, ops.shape(angles)[:-1] + (dim // 2 * 2,))


def apply_rotary_position_embeddings(sinusoidal, *tensors):
    """Rotate query/key heads by their positions (RoPE; Su et al. 2021, RoFormer, eq. 34).

    Args:
        sinusoidal: ``(batch_size or 1, seq_len, head_size)`` interleaved table from
            `sinusoidal_embeddings`.
        *tensors: ``(batch_size, seq_len, heads, head_size)``.
    Returns:
        The rotated tensors, same shapes: ``x * cos + rotate_half(x) * sin`` where
        ``rotate_half`` maps pairs ``(x0, x1) -> (-x1, x0)``.
    """
    sinusoidal = sinusoidal[:, :, None, :]
    cos = ops.repeat(sinusoidal[..., 1::2], 2, axis=-1)
    sin = ops.repeat(sinusoidal[..., ::2], 2, axis=-1)
    outputs = []
    for x in tensors:
        rotated = ops.reshape(ops.stack([-x[..., 1::2], x[..., ::2]], axis=-1), ops.shape(x))
        outputs.append(x * ops.cast(cos, x.dtype) + rotated * ops.cast(sin, x.dtype))
    return outputs


def t5_relative_position_buckets(relative_position, bidirectional=True, num_buckets=32, max_distance=128):
    """Bucket ``key_position - query_position`` as Mesh-TF / HF T5 ``_relative_position_bucket``.

    Half the buckets are exact small distances, the rest log-spaced up to ``max_distance``;
    bidirectional splits them between keys before and after the query (Raffel et al. 2020).
    Returns int32 bucket ids of the same shape.
    """
    relative_position = ops.cast(relative_position, "int32")
    buckets = ops.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + ops.cast(relative_position > 0, "int32") * num_buckets
        distance = ops.abs(relative_position)
    else:
        distance = -ops.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    scaled = ops.log(ops.cast(ops.maximum(distance, 1), "float32") / max_exact)
    scaled = scaled / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    large = ops.minimum(max_exact + ops.cast(scaled, "int32"), num_buckets - 1)
    return buckets + ops.where(is_small, distance, large)


# -- activations registered by name (bert4keras's custom objects) -------------------------------


@keras.saving.register_keras_serializable(package="bert4keras")
def swish(x):
    """Swish / SiLU ``x * sigmoid(x)`` (Ramachandran et al. 2017); bert4keras's ``swish``."""
    return keras.activations.silu(x)


@keras.saving.register_keras_serializable(package="bert4keras")
def leaky_relu(x, alpha=0.2):
    """Leaky ReLU ``max(x, alpha * x)`` with bert4keras's default slope ``alpha = 0.2``."""
    return keras.activations.leaky_relu(x, negative_slope=alpha)


@keras.saving.register_keras_serializable(package="bert4keras")
def squareplus(x, b=4.0):
    """SquarePlus ``(x + sqrt(x^2 + b)) / 2``, a smooth ReLU without exp (Barron 2021, arXiv
    2112.11687; Su Jianlin, "SquarePlus：可能是运算最简单的ReLU光滑近似", kexue.fm 8833).

    b = 4 (the paper's default) makes it an upper bound of softplus near 0.
    """
    x = ops.convert_to_tensor(x)
    return (x + ops.sqrt(ops.square(x) + b)) / 2


_ACTIVATIONS.update({"leaky_relu": leaky_relu, "squareplus": squareplus})  # "swish" is already silu


# -- sequence masks and task losses ---------------------------------------------------------------


def sequence_masking(x, mask, value=0, axis=None):
    """Set the padding positions of ``x`` along ``axis`` to ``value``.

    Args:
        x: tensor ``(batch_size, ..., seq_len at axis, ...)``.
        mask: None (returns x) or ``(batch_size, seq_len)``; nonzero / True marks real tokens,
            so 0-padded token_ids can be passed as they are.
        value: float, or ``'-inf'`` / ``'inf'`` for ``-/+ infinity()`` (1e12 by default; finite
            in x's dtype, see `mask_value`).
        axis: int, the sequence axis of ``x`` (>= 1; negative counts from the end); None means 1.
    Returns:
        A tensor of x's shape and dtype.
    Raises:
        ValueError: ``axis`` is the batch axis.
    Source: bert4keras 0.11.5 ``backend.sequence_masking``.
    """
    if mask is None:
        return x
    if value == "-inf":
        value = mask_value(x.dtype)
    elif value == "inf":
        value = -mask_value(x.dtype)
    ndim = len(x.shape)
    axis = 1 if axis is None else axis
    axis = axis + ndim if axis < 0 else axis
    if axis <= 0:
        raise ValueError(f"sequence_masking: axis must point past the batch axis, got {axis}")
    mask = ops.cast(mask, "bool") if "bool" in str(mask.dtype) else ops.not_equal(mask, 0)
    mask = ops.reshape(mask, ops.shape(mask) + (1,) * (ndim - 2))
    if axis != 1:
        mask = ops.moveaxis(mask, 1, axis)
    return ops.where(mask, x, ops.cast(value, x.dtype))


def multilabel_categorical_crossentropy(y_true, y_pred):
    """Softmax cross-entropy generalised to multi-label classification (ZLPR), dense labels.

    ``log(1 + sum_{i in neg} e^{s_i}) + log(1 + sum_{j in pos} e^{-s_j})``: every positive
    score should exceed 0 and every negative stay below, with the threshold 0 acting as an
    extra class. Predict the classes whose logit is > 0. Logits at ``<= -1e11`` (masked, e.g.
    GlobalPointer padding) count as certain negatives.

    Args:
        y_true: ``(..., num_classes)``, 0/1.
        y_pred: ``(..., num_classes)`` logits over the whole real line (no sigmoid/softmax).
    Returns:
        float32 ``(...)``, the loss per row.
    Source: Su Jianlin, "将“Softmax+交叉熵”推广到多标签分类问题", kexue.fm 7359; Su et al. 2022,
    ZLPR, arXiv 2208.02955, eq. 7. bert4keras 0.11.5 ``multilabel_categorical_crossentropy``.
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    positive = ops.greater(y_true, 0.5)
    y_neg = ops.where(positive, MASK_VALUE, y_pred)
    y_pos = ops.where(positive, -y_pred, MASK_VALUE)
    zeros = ops.zeros_like(y_pred[..., :1])
    neg_loss = ops.logsumexp(ops.concatenate([y_neg, zeros], axis=-1), axis=-1)
    pos_loss = ops.logsumexp(ops.concatenate([y_pos, zeros], axis=-1), axis=-1)
    return neg_loss + pos_loss


def soft_multilabel_categorical_crossentropy(y_true, y_pred, epsilon=1e-7):
    """Soft-label ZLPR: ``log(1 + sum_i (1 - t_i) e^{s_i}) + log(1 + sum_i t_i e^{-s_i})``.

    Labels ``t_i`` in [0, 1] (label smoothing, mixup, distillation); on 0/1 labels it equals
    `multilabel_categorical_crossentropy`. For one class the minimum is at ``t = sigmoid(2 s)``.
    Terms with ``t_i < epsilon`` (resp. ``1 - t_i < epsilon``) are dropped from the positive
    (negative) sum, and logits ``<= -1e11`` count as masked.

    Args:
        y_true: ``(..., num_classes)`` floats in [0, 1].
        y_pred: ``(..., num_classes)`` logits.
    Returns:
        float32 ``(...)``.
    Source: Su Jianlin, "多标签“Softmax+交叉熵”的软标签版本", kexue.fm 9064; ZLPR, arXiv
    2208.02955; bert4keras 0.11.5 (soft form of ``multilabel_categorical_crossentropy``).
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(y_pred, "float32")
    valid = ops.greater(y_pred, MASK_VALUE / 10)
    n_mask = ops.logical_and(ops.less(y_true, 1 - epsilon), valid)
    p_mask = ops.logical_and(ops.greater(y_true, epsilon), valid)
    # Clipping inside log keeps the discarded branch of `where` finite (no NaN gradients).
    y_neg = ops.where(n_mask, y_pred + ops.log(ops.maximum(1 - y_true, epsilon)), MASK_VALUE)
    y_pos = ops.where(p_mask, -y_pred + ops.log(ops.maximum(y_true, epsilon)), MASK_VALUE)
    zeros = ops.zeros_like(y_pred[..., :1])
    neg_loss = ops.logsumexp(ops.concatenate([y_neg, zeros], axis=-1), axis=-1)
    pos_loss = ops.logsumexp(ops.concatenate([y_pos, zeros], axis=-1), axis=-1)
    return neg_loss + pos_loss


def sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=False, epsilon=1e-7):
    """`multilabel_categorical_crossentropy` with the positives given as class indices.

    Cheaper when there are many classes and few positives (e.g. GlobalPointer spans flattened to
    ``seq_len * seq_len`` classes). The negative term is computed as ``log(sum_all e^s -
    sum_pos e^s)``, i.e. ``all + log(1 - exp(pos - all))`` clipped at ``epsilon``.

    Args:
        y_true: int ``(..., num_positive)``, class indices, each positive once. Rows with
            fewer positives are padded with 0 under ``mask_zero=True`` (then class 0 can never
            be positive: reserve it, as GlobalPointer's span (0, 0) on ``[CLS]``).
        y_pred: ``(..., num_classes)`` logits.
        mask_zero: bool.
    Returns:
        float32 ``(...)``.
    Source: Su Jianlin, kexue.fm 7359 (sparse version, "GlobalPointer" follow-ups);
    bert4keras 0.11.5 ``sparse_multilabel_categorical_crossentropy``.
    """
    y_true = ops.cast(y_true, "int32")
    y_pred = ops.cast(y_pred, "float32")
    zeros = ops.zeros_like(y_pred[..., :1])
    y_pred = ops.concatenate([y_pred, zeros], axis=-1)
    if mask_zero:
        infs = zeros - MASK_VALUE
        y_pred = ops.concatenate([infs, y_pred[..., 1:]], axis=-1)
    y_pos_2 = ops.take_along_axis(y_pred, y_true, axis=-1)
    y_pos_1 = ops.concatenate([y_pos_2, zeros], axis=-1)
    if mask_zero:
        y_pred = ops.concatenate([-infs, y_pred[..., 1:]], axis=-1)
        y_pos_2 = ops.take_along_axis(y_pred, y_true, axis=-1)
    pos_loss = ops.logsumexp(-y_pos_1, axis=-1)
    all_loss = ops.logsumexp(y_pred, axis=-1)
    aux_loss = ops.logsumexp(y_pos_2, axis=-1) - all_loss
    aux_loss = ops.clip(1 - ops.exp(aux_loss), epsilon, 1)
    neg_loss = all_loss + ops.log(aux_loss)
    return pos_loss + neg_loss


def global_pointer_crossentropy(y_true, y_pred):
    """Mean ZLPR loss of GlobalPointer logits, one multi-label problem per (sample, type).

    Args:
        y_true: ``(batch_size, heads, seq_len, seq_len)`` 0/1, 1 at (type, start, end).
        y_pred: GlobalPointer logits, same shape (masked spans hold -1e12).
    Returns:
        float32 scalar.
    Source: bert4keras 0.11.5 ``examples/task_sequence_labeling_ner_global_pointer.py``.
    """
    shape = ops.shape(y_pred)
    y_true = ops.reshape(y_true, (shape[0] * shape[1], -1))
    y_pred = ops.reshape(y_pred, (shape[0] * shape[1], -1))
    return ops.mean(multilabel_categorical_crossentropy(y_true, y_pred))


def sparse_global_pointer_crossentropy(y_true, y_pred):
    """`global_pointer_crossentropy` with labels ``(batch_size, heads, num_spans)`` of flat
    span ids ``start * seq_len + end``, padded with 0: span (0, 0), the ``[CLS]`` token, is
    never an entity, and its logit is left out of the loss. Returns a float32 scalar."""
    shape = ops.shape(y_pred)
    y_true = ops.reshape(ops.cast(y_true, "int32"), (shape[0] * shape[1], -1))
    y_pred = ops.reshape(y_pred, (shape[0] * shape[1], -1))
    return ops.mean(sparse_multilabel_categorical_crossentropy(y_true, y_pred, mask_zero=True))


def global_pointer_f1_score(y_true, y_pred):
    """Span-level F1 of a batch, ``2 |pred & true| / (|pred| + |true|)`` with pred = logits > 0.

    A training-time metric (micro over the batch); evaluate on whole data sets with
    `bert4keras.snippets.entity_scores`. Returns a float32 scalar.
    """
    y_true = ops.cast(y_true, "float32")
    y_pred = ops.cast(ops.greater(y_pred, 0), "float32")
    return 2 * ops.sum(y_true * y_pred) / ops.maximum(ops.sum(y_true + y_pred), 1.0)


# -- bert4keras 0.11.5's helpers ------------------------------------------------------------------


def search_layer(inputs, name, exclude_from=None):
    """Find the layer called ``name`` upstream of ``inputs`` in a functional graph.

    Walks from ``inputs`` towards the model inputs (through every call of a shared layer when
    starting from a layer, through the producing call when starting from a tensor), looking also
    inside nested models' ``.layers``.
    Args:
        inputs: a `keras.KerasTensor` (e.g. ``model.output``) or a layer.
        name: str, the layer's name (e.g. ``'Embedding-Token'``).
        exclude_from: optional collection of layers not to enter.
    Returns:
        The layer (or Keras operation) named ``name``, or None.
    Raises:
        ValueError: ``inputs`` is a value rather than a graph tensor (in Keras 3 a loss receives
            values: search from ``model.output`` or use ``model.get_layer(name)``).
    Source: bert4keras 0.11.5 ``backend.search_layer``.
    """
    if isinstance(inputs, keras.Operation):
        if inputs.name == name:
            return inputs
        operations, nodes = [inputs], list(internals.inbound_nodes(inputs))
    elif internals.keras_history(inputs) is not None:
        operation, node_index, _ = internals.keras_history(inputs)
        operations, nodes = [], [internals.inbound_nodes(operation)[node_index]]
    else:
        raise ValueError(
            f"search_layer needs a layer or a symbolic KerasTensor such as model.output, got a "
            f"{type(inputs).__name__}: in Keras 3 losses receive values, not graph tensors; search from "
            "model.output or use model.get_layer(name)."
        )
    seen = {id(layer) for layer in (exclude_from or ())}
    for operation in operations:
        seen.add(id(operation))
    stack = list(reversed(nodes))
    seen_nodes = set()
    while stack:
        node = stack.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        operation = node.operation
        if id(operation) not in seen:
            seen.add(id(operation))
            if operation.name == name:
                return operation
            found = _search_nested(operation, name)
            if found is not None:
                return found
        stack.extend(reversed(node.parent_nodes))
    return None


def _search_nested(layer, name):
    """The layer called ``name`` among a (nested) model's layers, or None."""
    for sublayer in getattr(layer, "layers", None) or ():
        if sublayer.name == name:
            return sublayer
        found = _search_nested(sublayer, name)
        if found is not None:
            return found
    return None


def batch_gather(params, indices):
    """``tf.gather(params, indices, batch_dims=ndim(indices) - 1)``: per batch entry, gather along
    the axis after the batch axes.

    Args:
        params: ``(b_1, ..., b_k, n, *rest)``.
        indices: ``(b_1, ..., b_k, m)`` in ``[0, n)``, int or integer-valued float (cast to int32).
    Returns:
        ``(b_1, ..., b_k, m, *rest)``, params' dtype.
    Source: bert4keras 0.11.5 ``backend.batch_gather``.
    """
    if not keras.backend.is_int_dtype(K.dtype(indices)):
        indices = ops.cast(indices, "int32")
    batch_dims = K.ndim(indices) - 1
    for _ in range(K.ndim(params) - batch_dims - 1):
        indices = ops.expand_dims(indices, -1)  # take_along_axis broadcasts the trailing axes
    return ops.take_along_axis(params, indices, axis=batch_dims)


def align(tensor, axes, ndim=None):
    """Place axis ``i`` of ``tensor`` at axis ``axes[i]`` of a rank-``ndim`` result by inserting
    size-1 axes (a batched ``expand_dims``), e.g. a mask ``(batch, seq_len)`` with ``axes=[0, 2]``,
    ``ndim=4`` -> ``(batch, 1, seq_len, 1)``.

    Args:
        axes: one int per axis of ``tensor``, in increasing order (negative ones count from ``ndim``).
        ndim: rank of the result; default ``max(axes) + 1``.
    Raises:
        ValueError: ``len(axes) != ndim(tensor)``, or negative axes without ``ndim``.
    Source: bert4keras 0.11.5 ``backend.align``.
    """
    if len(axes) != K.ndim(tensor):
        raise ValueError(f"align: {len(axes)} axes for a tensor of rank {K.ndim(tensor)}")
    if ndim is None:
        if min(axes) < 0:
            raise ValueError("align: negative axes need ndim")
        ndim = max(axes) + 1
    axes = sorted(a + ndim if a < 0 else a for a in axes)
    for i in range(ndim):
        if i not in axes:
            tensor = ops.expand_dims(tensor, i)
    return tensor


def root_mean_square(x, axis=None, keepdims=False):
    """``sqrt(mean(x**2, axis))``. Source: bert4keras 0.11.5 ``backend.root_mean_square``."""
    return ops.sqrt(ops.mean(ops.square(x), axis=axis, keepdims=keepdims))


def recompute_grad(call):
    """Decorator for a layer's ``call(self, inputs, **kwargs)``: with the environment variable
    ``RECOMPUTE=1`` (read when decorating), recompute the call's activations in the backward pass
    instead of storing them (`keras.remat`: ``tf.recompute_grad``, ``jax.checkpoint``, torch
    checkpointing), trading compute for memory (Chen et al. 2016, arXiv 1604.06174). Otherwise
    ``call`` unchanged. Source: bert4keras 0.11.5 ``backend.recompute_grad``.
    """
    if os.environ.get("RECOMPUTE", "0").strip().lower() not in ("1", "true", "yes", "on", "y", "t"):
        return call

    @functools.wraps(call)
    def recomputed_call(self, inputs, **kwargs):
        flat = keras.tree.flatten(inputs)

        def forward(*flat_inputs):
            return call(self, keras.tree.pack_sequence_as(inputs, list(flat_inputs)), **kwargs)

        return keras.remat(forward)(*flat)

    return recomputed_call


def attention_normalize(a, axis=-1, method="softmax"):
    """Normalise attention logits ``a`` along ``axis``.

    Methods: ``'softmax'``; ``'squared_relu'``, ``relu(a)**2 / n`` (Hua et al. 2022, FLASH, arXiv
    2202.10447); ``'softmax_plus'``, ``softmax(a * log(n) / log(512))`` (Su Jianlin, kexue.fm 8823),
    where ``n`` counts the unmasked positions (logits above ``-infinity() / 10``).
    Returns: ``a``'s shape. Raises: ValueError for another method (0.11.5 returned ``a``).
    Source: bert4keras 0.11.5 ``backend.attention_normalize``.
    """
    if method == "softmax":
        return ops.softmax(a, axis=axis)
    if method not in ("squared_relu", "softmax_plus"):
        raise ValueError(f"attention_normalize: unknown method {method!r}")
    mask = ops.cast(ops.greater(a, -infinity() / 10), a.dtype)
    n = ops.maximum(ops.sum(mask, axis=axis, keepdims=True), 1)
    if method == "squared_relu":
        return ops.square(ops.relu(a)) / n
    return ops.softmax(a * ops.log(n) / np.log(512), axis=axis)


def pool1d(x, pool_size, strides=1, padding="valid", data_format=None, pool_mode="max"):
    """Max or average pooling over the sequence of ``(batch, seq_len, channels)`` (channels_last).

    Raises: ValueError for a ``pool_mode`` other than ``'max'`` / ``'avg'``.
    Source: bert4keras 0.11.5 ``backend.pool1d``.
    """
    data_format = data_format or keras.config.image_data_format()
    if pool_mode == "max":
        return ops.max_pool(x, pool_size, strides, padding, data_format)
    if pool_mode == "avg":
        return ops.average_pool(x, pool_size, strides, padding, data_format)
    raise ValueError(f"pool1d: pool_mode must be 'max' or 'avg', got {pool_mode!r}")


def divisible_temporal_padding(x, n):
    """Right-pad axis 1 of ``(batch, seq_len, dim)`` with zeros to a multiple of ``n``.

    Source: bert4keras 0.11.5 ``backend.divisible_temporal_padding``.
    """
    pad = (n - K.shape(x)[1] % n) % n
    return K.temporal_padding(x, (0, pad))


def check_token_ids(token_ids, vocab_size, name="token_ids"):
    """Check a batch of ids on the host: every id must be in ``[0, vocab_size)``.

    The model runs the same check on every call (`checked_ids`); this NumPy version is for data
    before it reaches a model (e.g. in a data generator).

    Args:
        token_ids: array-like of int (or floats holding integers), any shape.
        vocab_size: int, the number of embedding rows.
        name: str, how the message calls `token_ids`.
    Raises:
        ValueError: naming the first offending position, its id, the valid range and how many
            ids are out of range; or `token_ids` holding non-integer values.
    """
    ids = np.asarray(token_ids)
    if ids.size and not np.issubdtype(ids.dtype, np.integer):
        if not (np.issubdtype(ids.dtype, np.floating) and np.array_equal(ids, np.round(ids))):
            raise ValueError("%s must hold integers, got dtype %s" % (name, ids.dtype))
    bad = np.argwhere((ids < 0) | (ids >= vocab_size))
    if len(bad):
        where = tuple(int(i) for i in bad[0])
        raise ValueError(
            "%s%s = %d is outside [0, vocab_size=%d) (%d id(s) out of range)"
            % (name, list(where), int(ids[where]), vocab_size, len(bad))
        )


_unchecked = threading.local()


@contextlib.contextmanager
def _nested(state, name):
    """Count ``state.<name>`` up for the block (nesting-safe), back down after it."""
    depth = getattr(state, name, 0)
    setattr(state, name, depth + 1)
    try:
        yield
    finally:
        setattr(state, name, depth)


@contextlib.contextmanager
def unchecked_ids():
    """Within it, `checked_ids` returns ids unchecked: for tracing a graph that cannot call back to
    Python, such as a SavedModel exported from JAX (`TransformerModel.export`)."""
    with _nested(_unchecked, "depth"):
        yield


@contextlib.contextmanager
def asserted_ids():
    """Within it, on PyTorch, `checked_ids` adds its check to the graph being traced as
    ``torch._assert_async`` instead of reading the ids back to the host: for tracing a step into
    a graph of aten ops (`bert4keras.generation.compiled_step`). A failing check raises a
    RuntimeError whose message starts with `ID_ASSERTION`."""
    with _nested(_unchecked, "asserted"):
        yield


ID_ASSERTION = "bert4keras id check"


def checked_ids(ids, vocab_size, name):
    """``ids`` (an int tensor) after checking that every id is in ``[0, vocab_size)``.

    Keras' gather wraps negative ids around to the last rows on every backend, and an id
    ``>= vocab_size`` gives a bare IndexError on torch and NaN rows on JAX; this raises instead,
    with `check_token_ids`'s message:
    - eager calls (``model(x)`` on every backend, ``predict``/``fit`` on torch): ValueError;
    - TensorFlow graphs (``predict``/``fit``): an in-graph assertion, InvalidArgumentError
      carrying the message (XLA drops assertions: not checked under ``jit_compile=True``);
    - JAX under ``jit`` (``predict``/``fit``): a host callback raising the ValueError, which JAX
      re-raises as a JaxRuntimeError carrying the message.
    - PyTorch steps traced under `asserted_ids` (cached decoding): ``torch._assert_async``; the
      decoding step then reruns eagerly, so the user still gets the ValueError.
    The cost is a min/max over the ids (measured in benchmarks/bench_id_check.py).

    Args:
        ids: int tensor, any shape. vocab_size: int. name: str, e.g. ``"Embedding-Token: token_ids"``.
    Returns: ``ids`` (TensorFlow graphs: an identity depending on the assertion).
    """
    if getattr(_unchecked, "depth", 0):
        return ids
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        if isinstance(ids, jax.core.Tracer):
            jax.debug.callback(functools.partial(check_token_ids, vocab_size=vocab_size, name=name), ids)
            return ids
    elif backend == "tensorflow":
        import tensorflow as tf

        if not tf.executing_eagerly():
            valid = tf.logical_and(tf.reduce_min(ids) >= 0, tf.reduce_max(ids) < vocab_size)
            message = "%s: an id is outside [0, vocab_size=%d); smallest, largest id:" % (name, vocab_size)
            check = tf.debugging.Assert(valid, [message, tf.reduce_min(ids), tf.reduce_max(ids)])
            with tf.control_dependencies([check]):
                return tf.identity(ids)
    elif backend == "torch":
        if ids.device.type == "meta":  # shape inference
            return ids
        if getattr(_unchecked, "asserted", 0):
            import torch

            message = "%s: %s: an id is outside [0, vocab_size=%d)" % (ID_ASSERTION, name, vocab_size)
            torch._assert_async((ops.min(ids) >= 0) & (ops.max(ids) < vocab_size), message)
            return ids
    if keras.backend.is_keras_tensor(ids) or 0 in tuple(ids.shape):
        return ids
    low, high = ops.convert_to_numpy(ops.min(ids)), ops.convert_to_numpy(ops.max(ids))
    if low < 0 or high >= vocab_size:
        check_token_ids(ops.convert_to_numpy(ids), vocab_size, name)
    return ids


def get_available_gpus():
    """Names of the GPUs Keras' backend sees (``'gpu:0'``, ...; ``'cuda:0'``, ... on torch), a list
    of str, empty without GPUs. Source: bert4keras 0.11.5 ``backend.get_available_gpus``."""
    if keras.config.backend() == "torch":
        import torch

        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    try:
        return list(keras.distribution.list_devices("gpu"))
    except RuntimeError:  # JAX without a GPU platform
        return []


@keras.saving.register_keras_serializable(package="bert4keras")
class Sinusoidal(keras.initializers.Initializer):
    """Initializer: row ``p`` of a ``(rows, dim)`` table is ``[sin(p w_0), cos(p w_0), ...]``, with
    ``w_i = 10000^(-2i / dim)`` (Vaswani et al. 2017, sec. 3.5, sin/cos interleaved); for odd ``dim``
    the last column is 0. Source: bert4keras 0.11.5 ``backend.Sinusoidal``."""

    def __call__(self, shape, dtype=None):
        rows, dim = shape
        table = sinusoidal_embeddings(ops.arange(rows), dim)
        if dim % 2:
            table = ops.pad(table, [[0, 0], [0, 1]])
        return ops.cast(table, dtype or "float32")
