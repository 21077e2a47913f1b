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
