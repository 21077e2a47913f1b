"""Small numerics on `keras.ops`, shared by layers and models.

Owns: the activation names used in checkpoint configs (``gelu`` is the erf form, ``gelu_new`` /
``gelu_pytorch_tanh`` / ``gelu_tanh`` the tanh approximation), and the masking constant used
in attention. Imports nothing from the rest of the package.
"""

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


def attention_mask_to_bias(mask, dtype="float32"):
    """Turn a boolean mask (True = attend) into an additive bias of 0 / ``MASK_VALUE``."""
    return ops.where(mask, ops.zeros((), dtype), ops.full((), MASK_VALUE, dtype))
