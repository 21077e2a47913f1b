"""Small numerics on `keras.ops`, shared by layers and models.

Owns: the activation names used in checkpoint configs (``gelu`` is the erf form, ``gelu_new`` /
``gelu_pytorch_tanh`` / ``gelu_tanh`` the tanh approximation), and the masking constant used
in attention. Imports nothing from the rest of the package.
"""

import math

import keras
from keras import ops

#: Logit given to masked attention positions before the softmax (computed in float32).
MASK_VALUE = -1e12


def mask_value(dtype):
    """`MASK_VALUE` as a finite number of ``dtype``: -1e12 for float32/bfloat16, and for float16
    (largest finite 65504, so -1e12 would become -inf and a fully masked softmax row NaN) half
    its most negative value, -32752, leaving room to add a logit without overflowing. float."""
    dtype = keras.backend.standardize_dtype(dtype)
    if dtype == "float16":
        return -65504.0 / 2
    return MASK_VALUE


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


def sequence_masking(x, mask, value=0.0, axis=1):
    """Set the padding positions of ``x`` along ``axis`` to ``value``.

    Args:
        x: tensor ``(batch_size, ..., seq_len at axis, ...)``.
        mask: None (returns x) or ``(batch_size, seq_len)``; nonzero / True marks real tokens,
            so 0-padded token_ids can be passed as they are.
        value: float, or ``'-inf'`` / ``'inf'`` for ``-/+ 1e12`` (bert4keras's infinity; finite
            in x's dtype, see `mask_value`).
        axis: int, the sequence axis of ``x`` (>= 1; negative counts from the end).
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
