"""LoRA: low-rank adapters on a model's Dense layers, the rest frozen (Hu et al. 2021, arXiv:2106.09685).

Built on Keras' own `Dense.enable_lora`: an adapted layer computes ``x @ (W + alpha / rank * A @ B)
+ b`` with ``A`` ``(input_dim, rank)`` (He-uniform) and ``B`` ``(rank, units)`` (zeros, so the
model starts exactly as it was), and only ``A`` and ``B`` train.

    bert = build_transformer_model(config, checkpoint, lora_rank=8)   # q_dense, v_dense adapted
    output = keras.layers.Dense(2, activation="softmax")(bert.output)  # new layers train too
    ...fit...
    save_lora_weights(bert, "adapter.safetensors")   # the adapters only: a small file
    load_lora_weights(other_bert_with_lora, "adapter.safetensors")
    merge_lora(bert)   # W += alpha / rank * A @ B, A and B re-initialised (B = 0)

Keras also merges the adapters into the kernels when it saves weights (`model.save_weights`,
`.keras`), and `Transformer.save_weights_as_checkpoint` writes merged kernels under the official
names, so a LoRA-trained model loads anywhere as a plain one.
"""

import fnmatch
import os

import keras
import numpy as np
from keras import ops

from bert4keras import _keras_internals as internals
from bert4keras._checks import _check_int, _check_number

#: Variable names Keras gives a LoRA-enabled Dense's adapters.
ADAPTER_NAMES = ("lora_kernel_a", "lora_kernel_b")

#: The attention sublayers adapted by default (the LoRA paper's W_q and W_v).
DEFAULT_TARGETS = ("q_dense", "v_dense")


def dense_layers(model):
    """``{path: Dense}`` for every Dense layer inside ``model`` (nested sublayers included):
    the attention's ``.../q_dense``, ``k_dense``, ``v_dense``, ``o_dense``, the feed-forward's
    ``.../i0_dense`` (``i1_dense`` when gated) and ``.../o_dense``, pooler and heads."""
    return {layer.path: layer for layer in internals.sublayers(model) if isinstance(layer, keras.layers.Dense)}


def _matches(pattern, path):
    """A Dense layer's own name (``q_dense``) or a glob on its path (``*FeedForward/o_dense``)."""
    return pattern == path.rsplit("/", 1)[-1] or fnmatch.fnmatchcase(path, pattern)


def enable_lora(model, rank, targets=DEFAULT_TARGETS, alpha=None, trainable_layers=()):
    """Add rank-``rank`` LoRA adapters to the Dense layers of ``model`` named by ``targets`` and
    freeze every other weight of ``model`` (their biases too, as PEFT's default ``bias='none'``).

    Args:
        model: a built `keras.Model` (e.g. `build_transformer_model`'s), or a layer.
        rank: int >= 1, the adapters' inner size.
        targets: Dense sublayer names (``'q_dense'``, ``'k_dense'``, ``'v_dense'``, ``'o_dense'``:
            attention and feed-forward outputs both, ``'i0_dense'``) or globs on their paths
            (``'*MultiHeadSelfAttention/o_dense'``, ``'Transformer-1*'``); see `dense_layers`.
        alpha: the adapters' scale numerator (scale ``alpha / rank``); default ``rank`` (scale 1).
        trainable_layers: names or path globs of layers (e.g. a classification head inside
            ``model``) left fully trainable.
    Returns:
        list of str, the paths of the adapted Dense layers.
    Raises:
        ValueError: a target (or trainable layer) matches nothing (the message lists the
            Dense paths), a target layer already has LoRA, or ``rank``/``alpha`` out of range.
        TypeError: ``rank`` not an int, ``targets`` a single string.
    """
    rank = _check_int("enable_lora", "rank", rank, 1)
    alpha = _check_number("enable_lora", "alpha", alpha, 0, low_open=True, allow_none=True)
    for name, value in (("targets", targets), ("trainable_layers", trainable_layers)):
        if isinstance(value, str):
            raise TypeError(f"enable_lora: {name} must be a list of names, got the string {value!r} "
                            f"(write ({value!r},)).")
    denses = dense_layers(model)
    adapted = []
    for target in targets:
        found = [path for path in denses if _matches(target, path)]
        if not found:
            raise ValueError(f"enable_lora: target {target!r} matches no Dense layer of {model.name!r}; "
                             f"its Dense layers are {sorted(denses)}.")
        adapted += [path for path in found if path not in adapted]
    layers = internals.sublayers(model)
    kept = []
    for pattern in trainable_layers:
        found = [layer for layer in layers if _matches(pattern, layer.path or layer.name)]
        if not found:
            raise ValueError(f"enable_lora: trainable layer {pattern!r} matches no layer of {model.name!r}.")
        kept += found
    kept_ids = {id(v) for layer in kept for v in layer.weights}
    for path in adapted:
        if denses[path].lora_enabled:
            raise ValueError(f"enable_lora: {path} already has LoRA adapters.")
    for variable in model.weights:
        if id(variable) not in kept_ids:
            variable.trainable = False
    for path in adapted:
        layer = denses[path]
        layer.enable_lora(rank, lora_alpha=alpha)
    return adapted


def lora_layers(model):
    """``{path: Dense}`` of the LoRA-enabled Dense layers inside ``model``."""
    return {path: layer for path, layer in dense_layers(model).items() if layer.lora_enabled}


def lora_weights(model):
    """``{variable path: ndarray}`` of every adapter (``.../q_dense/lora_kernel_a``, ``..._b``)."""
    weights = {}
    for layer in lora_layers(model).values():
        for variable in (layer.lora_kernel_a, layer.lora_kernel_b):
            weights[variable.path] = ops.convert_to_numpy(variable)
    return weights


def save_lora_weights(model, filename):
    """Write the adapters of ``model`` (only them) to a ``.safetensors`` file, atomically (a
    temporary file renamed over ``filename``, so an existing file is replaced whole or not at all).
    The metadata records each layer's rank and alpha.

    Raises:
        ValueError: ``model`` has no LoRA adapters.
    """
    from safetensors.numpy import save_file

    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"save_lora_weights: {model.name!r} has no LoRA adapters (see enable_lora).")
    metadata = {path: f"rank={layer.lora_rank} alpha={layer.lora_alpha}" for path, layer in layers.items()}
    filename = os.fspath(filename)
    tmp = f"{filename}.tmp-{os.getpid()}"
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in lora_weights(model).items()}, tmp, metadata=metadata)
        os.replace(tmp, filename)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return filename


def load_lora_weights(model, filename):
    """Load adapters written by `save_lora_weights` into ``model``, whose LoRA layers (same
    paths, ranks) must be enabled already, e.g. ``build_transformer_model(..., lora_rank=8)``.

    Raises:
        FileNotFoundError: no ``filename``.
        ValueError: the file's adapters and the model's differ (the message names the missing,
            unexpected or mis-shaped ones).
    """
    from safetensors.numpy import load_file

    filename = os.fspath(filename)
    if not os.path.exists(filename):
        raise FileNotFoundError(f"load_lora_weights: no adapter file {filename!r}.")
    stored = load_file(filename)
    variables = {v.path: v for layer in lora_layers(model).values() for v in (layer.lora_kernel_a, layer.lora_kernel_b)}
    missing, unexpected = sorted(set(variables) - set(stored)), sorted(set(stored) - set(variables))
    if missing or unexpected:
        raise ValueError(f"load_lora_weights: the adapters in {filename!r} do not fit {model.name!r}: "
                         f"missing from the file {missing}, not in the model {unexpected} (enable the "
                         "same targets with enable_lora first).")
    for path, variable in variables.items():
        if tuple(stored[path].shape) != tuple(variable.shape):
            raise ValueError(f"load_lora_weights: {path} in {filename!r} has shape {stored[path].shape}, "
                             f"the model's {tuple(variable.shape)} (another rank?).")
    for path, variable in variables.items():
        variable.assign(stored[path])


def merge_lora(model):
    """Fold every adapter into its kernel (``W += alpha / rank * A @ B``) and restart it (``B = 0``,
    ``A`` re-drawn), so ``model`` computes the same as before and its kernels are the tuned ones.

    Returns:
        list of str, the paths of the merged layers.
    """
    merged = lora_layers(model)
    for path, layer in merged.items():
        if layer.quantization_mode is not None:
            raise ValueError(f"merge_lora: {path} is quantized ({layer.quantization_mode}); merge before quantizing.")
    for layer in merged.values():
        internals.dense_kernel(layer).assign(layer.kernel)  # the `kernel` property adds the adapter
        layer.lora_kernel_a.assign(keras.initializers.HeUniform()(layer.lora_kernel_a.shape))
        layer.lora_kernel_b.assign(ops.zeros(layer.lora_kernel_b.shape))
    return sorted(merged)


def checkpoint_weights(layer):
    """``[(variable, value)]`` of ``layer``'s weights as a checkpoint mapping lists them: LoRA
    adapters left out and merged into their kernels (values as NumPy)."""
    merged = {id(internals.dense_kernel(d)): d for d in internals.sublayers(layer)
              if isinstance(d, keras.layers.Dense) and d.lora_enabled}
    pairs = []
    for variable in base_weights(layer):
        value = merged[id(variable)].kernel if id(variable) in merged else variable
        pairs.append((variable, ops.convert_to_numpy(value)))
    return pairs


def base_weights(layer):
    """``layer.weights`` without LoRA adapters (the weights a checkpoint mapping lists)."""
    return [w for w in layer.weights if w.name not in ADAPTER_NAMES]
