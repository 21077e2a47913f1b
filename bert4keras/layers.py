"""Keras 3 layers for transformers, written with `keras.ops` only (TensorFlow, JAX, PyTorch).

Every layer is serializable (`get_config`, registered under the ``bert4keras`` package) and
names its sublayers, so that a layer's weights come in a fixed order that the checkpoint
mappings in `models.py` rely on.
"""

import math
import warnings

import keras
from keras import ops

from bert4keras import _keras_internals as internals
from bert4keras.backend import (
    MASK_VALUE,
    Sinusoidal,  # noqa: F401  (lives in backend.py as in 0.11.5; models.py imports it from here)
    apply_rotary_position_embeddings,
    checked_ids,
    get_activation,
    mask_value,
    sinusoidal_embeddings,
    t5_relative_position_buckets,
)

register = keras.saving.register_keras_serializable(package="bert4keras")


def _first_mask(mask):
    """The Keras mask of a layer's first input (``mask`` is one mask or a list, one per input)."""
    return mask[0] if isinstance(mask, (list, tuple)) else mask


def _keras_mask(x):
    """The Keras mask a symbolic tensor carries (None without one)."""
    return getattr(x, "_keras_mask", None)


def _with_sublayer_dtypes(layer, config):
    """``config`` of a layer built from sublayers (attention, feed-forward, ...), whose ``dtype``
    becomes a `keras.dtype_policies.DTypePolicyMap` of the quantized sublayers' policies (by
    path) once `Model.quantize` has quantized some: the reloaded layer passes it to the
    sublayers it builds (``dtype=self.dtype_policy``), which then build quantized weights, so a
    quantized model round-trips through ``.keras``. Unchanged otherwise (a reloaded map is
    serialized as it is)."""
    if isinstance(layer.dtype_policy, keras.dtype_policies.DTypePolicyMap):
        return config
    quantized = [sub for sub in internals.sublayers(layer)[1:] if sub.quantization_mode is not None]
    if quantized:
        policies = keras.dtype_policies.DTypePolicyMap(default_policy=layer.dtype_policy)
        for sub in quantized:
            policies[sub.path] = sub.dtype_policy
        config["dtype"] = keras.dtype_policies.serialize(policies)
    return config


class NodeAccessors:
    """Keras 2's per-call accessors, for bert4keras 0.11.5 scripts that read a layer's inputs or
    outputs at one of its calls, e.g. ``model.get_layer('Transformer-FeedForward-Norm')
    .get_output_at(3)`` (ALBERT's shared blocks) or ``bert.model.layers[-2].get_output_at(-1)``.

    ``node_index`` counts the layer's calls in the functional graphs built so far (negative
    counts from the last). Mixed into every layer class the model builders create.
    Raises:
        ValueError: the layer has no call with that index.
    Source: Keras 2.3 ``Layer.get_output_at`` and friends.
    """

    def _call_node(self, node_index):
        nodes = [node for node in internals.inbound_nodes(self) if not node.is_input]
        if not -len(nodes) <= node_index < len(nodes):
            raise ValueError(
                f"Layer '{self.name}' has been called {len(nodes)} time(s) in a functional graph; "
                f"node_index={node_index} is out of range."
            )
        return nodes[node_index]

    def get_input_at(self, node_index):
        """The input of call ``node_index``: a KerasTensor, or the list the layer was called on."""
        return self._call_node(node_index).arguments.args[0]

    def get_output_at(self, node_index):
        """The output of call ``node_index``: a KerasTensor (a list for several outputs)."""
        outputs = self._call_node(node_index).output_tensors
        return outputs[0] if len(outputs) == 1 else list(outputs)

    def get_input_shape_at(self, node_index):
        return keras.tree.map_structure(lambda x: tuple(x.shape), self.get_input_at(node_index))

    def get_output_shape_at(self, node_index):
        return keras.tree.map_structure(lambda x: tuple(x.shape), self.get_output_at(node_index))

    def get_input_mask_at(self, node_index):
        return keras.tree.map_structure(_keras_mask, self.get_input_at(node_index))

    def get_output_mask_at(self, node_index):
        return keras.tree.map_structure(_keras_mask, self.get_output_at(node_index))

    def quantize(self, mode=None, type_check=True, config=None):
        """Nothing to quantize: `Model.quantize` calls this on every layer without sublayers, and
        ours keep their weights (norms, position tables, CRF transitions) in float. `Dense` and
        `Embedding` override it with Keras' quantization."""


def _keras_quantize(keras_class, layer, mode, config):
    """``keras_class.quantize`` on ``layer``, a subclass whose call is the Keras class's (Keras
    refuses subclasses by default), without the two warnings Keras' quantizers raise on every
    layer: NumPy 2's about keras Variable's ``__array__`` lacking ``copy``, and torch's about
    ``x.T`` of a batched tensor."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"__array__ implementation doesn't accept a copy keyword")
        warnings.filterwarnings("ignore", message=r"The use of `x\.T` on tensors of dimension other than 2")
        keras_class.quantize(layer, mode, type_check=False, config=config)


@register
class Add(NodeAccessors, keras.layers.Add):
    """`keras.layers.Add` with Keras 2's node accessors and mask rule: the output's mask is the
    AND of the inputs' masks that exist (Keras 3 drops it when any input has none, which would
    lose the padding mask at ``token + segment`` embeddings). Source: Keras 2.3 ``_Merge``."""

    def compute_mask(self, inputs, mask=None):
        masks = [m for m in (mask or []) if m is not None]
        if not masks:
            return None
        output_mask = masks[0]
        for m in masks[1:]:
            output_mask = ops.logical_and(output_mask, m)
        return output_mask


@register
class Dense(NodeAccessors, keras.layers.Dense):
    """`keras.layers.Dense` with Keras 2's node accessors."""

    def quantize(self, mode=None, type_check=True, config=None):
        """Keras' `Dense.quantize` (``'int8'``, ``'int4'``, ``'float8'``, ...): this class's call is Dense's."""
        _keras_quantize(keras.layers.Dense, self, mode, config)


@register
class Dropout(NodeAccessors, keras.layers.Dropout):
    """`keras.layers.Dropout` with Keras 2's node accessors."""


@register
class Activation(NodeAccessors, keras.layers.Activation):
    """`keras.layers.Activation` with Keras 2's node accessors."""


@register
class Rescaling(NodeAccessors, keras.layers.Rescaling):
    """`keras.layers.Rescaling` with Keras 2's node accessors."""


def query_positions(seq_len, start_index=None):
    """Positions ``start + arange(seq_len)`` of a chunk; ``start_index`` is a scalar or
    ``(batch_size,)`` int tensor (its first entry is used) in incremental decoding."""
    positions = ops.arange(seq_len, dtype="int32")
    if start_index is not None:
        positions = positions + ops.cast(ops.reshape(start_index, (-1,))[0], "int32")
    return positions


@register
class Embedding(NodeAccessors, keras.layers.ReversibleEmbedding):
    """Token embedding whose table doubles as the tied output projection.

    ``mode='embedding'``: token_ids ``(batch_size, seq_len)`` (int, or float holding integers
    as bert4keras 0.11.5's inputs) -> ``(batch_size, seq_len, output_dim)``.
    ``mode='dense'``: hidden states ``(batch_size, seq_len, output_dim)`` -> logits
    ``(batch_size, seq_len, input_dim)`` (multiplied by the transposed table), as bert4keras's
    ``Embedding(mode='dense')`` for the MLM head.

    Args:
        input_dim, output_dim: int, rows (vocab_size) and width of the table.
        pad_id: int or None. When set, the embedding's Keras mask is ``token_ids != pad_id``
            with the first position always kept (as bert4keras 0.11.5's ``mask_zero``, which
            kept it for T5's decoder, whose start token is the pad id); the mask then follows
            the hidden states to the model's outputs (``Loss.compute_loss(inputs, mask)``,
            Keras-masked losses). In ``mode='dense'`` the incoming mask passes through.
    Weights: ``embeddings`` of shape ``(input_dim, output_dim)``.
    Raises:
        ValueError (TensorFlow graphs: InvalidArgumentError; JAX under jit: JaxRuntimeError)
            carrying the message: an id outside ``[0, input_dim)``, named with its position
            (see `bert4keras.backend.checked_ids`).
    """

    def __init__(self, input_dim, output_dim, pad_id=None, **kwargs):
        kwargs.setdefault("tie_weights", True)
        super().__init__(input_dim, output_dim, **kwargs)
        self.pad_id = pad_id
        self.supports_masking = True

    def _checked(self, inputs, mode):
        if mode == "dense":
            return inputs
        if inputs.dtype not in ("int32", "int64"):
            inputs = ops.cast(inputs, "int32")
        return checked_ids(inputs, self.input_dim, "%s ids" % self.name)

    def call(self, inputs, mode="embedding"):
        return super().call(self._checked(inputs, mode), reverse=(mode == "dense"))

    def quantize(self, mode=None, type_check=True, config=None):
        """Keras' `ReversibleEmbedding.quantize` (``'int8'``, ``'int4'``): the table and, tied, the
        output projection. Keras refuses subclasses; this one's quantized call follows."""
        _keras_quantize(keras.layers.ReversibleEmbedding, self, mode, config)

    def quantized_call(self, inputs, mode="embedding"):
        return super().quantized_call(self._checked(inputs, mode), reverse=(mode == "dense"))

    def compute_output_spec(self, inputs, mode="embedding"):
        return super().compute_output_spec(inputs, reverse=(mode == "dense"))

    def compute_mask(self, inputs, mask=None):
        if len(inputs.shape) != 2:  # mode='dense': hidden states in, logits out
            return mask
        if self.pad_id is None:
            return None
        mask = ops.not_equal(inputs, ops.cast(self.pad_id, inputs.dtype))
        return ops.concatenate([ops.ones_like(mask[:, :1]), mask[:, 1:]], axis=1)

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@register
class PositionEmbedding(NodeAccessors, keras.layers.Layer):
    """Trainable absolute position embedding, merged with its input.

    Args:
        input_dim: int, number of positions (``max_position``).
        output_dim: int, embedding size.
        merge_mode: ``'add'`` (input + pos), ``'mul'`` (input * (pos + 1)), ``'zero'`` (pos
            only) or ``'concat'`` (concatenated on the last axis).
        hierarchical: None/False, True (alpha = 0.4) or a float alpha. Decomposes position
            ``i`` as ``(i // n, i % n)`` so that a model trained on ``n`` positions runs on up
            to ``n * n`` (Su Jianlin, "层次分解位置编码，让BERT可以处理超长文本", kexue.fm 7947).
        embeddings_initializer: initializer of the table.
        custom_position_ids: if True, inputs are ``[x, position_ids]``.
    Call args: start_index: optional int tensor, the position of the first input token
        (incremental decoding with a KV cache).
    Input shape: ``(batch_size, seq_len, output_dim)``. Output shape: the same (``'concat'``:
    last axis ``+ output_dim``).
    Raises:
        ValueError: ``seq_len > input_dim`` without ``hierarchical`` (when ``seq_len`` is known
            at call time, which it is in eager and JAX execution).
    """

    def __init__(
        self,
        input_dim,
        output_dim,
        merge_mode="add",
        hierarchical=None,
        embeddings_initializer="zeros",
        custom_position_ids=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if merge_mode not in ("add", "mul", "zero", "concat"):
            raise ValueError(f"PositionEmbedding: unknown merge_mode {merge_mode!r}")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.merge_mode = merge_mode
        self.hierarchical = hierarchical
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.custom_position_ids = custom_position_ids

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
        )

    def call(self, inputs, start_index=None):
        if self.custom_position_ids:
            inputs, position_ids = inputs
            position_ids = ops.cast(position_ids, "int32")
        else:
            seq_len = ops.shape(inputs)[1]
            if isinstance(seq_len, int) and seq_len > self.input_dim and not self.hierarchical:
                raise ValueError(
                    f"Layer '{self.name}': sequence length {seq_len} exceeds max_position "
                    f"{self.input_dim}. Truncate the input (e.g. Tokenizer.encode(..., "
                    f"maxlen={self.input_dim})) or build with hierarchical_position=True."
                )
            position_ids = ops.expand_dims(query_positions(seq_len, start_index), 0)

        if self.hierarchical:
            alpha = 0.4 if self.hierarchical is True else self.hierarchical
            embeddings = self.embeddings - alpha * self.embeddings[:1]
            embeddings = embeddings / (1 - alpha)
            embeddings_x = ops.take(embeddings, position_ids // self.input_dim, axis=0)
            embeddings_y = ops.take(embeddings, position_ids % self.input_dim, axis=0)
            embeddings = alpha * embeddings_x + (1 - alpha) * embeddings_y
        else:
            embeddings = ops.take(self.embeddings, position_ids, axis=0)
        embeddings = ops.cast(embeddings, inputs.dtype)

        if self.merge_mode == "add":
            return inputs + embeddings
        if self.merge_mode == "mul":
            return inputs * (embeddings + 1.0)
        if self.merge_mode == "zero":
            return ops.broadcast_to(embeddings, ops.shape(inputs)[:2] + (self.output_dim,))
        embeddings = ops.broadcast_to(embeddings, ops.shape(inputs)[:2] + (self.output_dim,))
        return ops.concatenate([inputs, embeddings], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return _first_mask(mask)

    def compute_output_shape(self, input_shape, **kwargs):
        if self.custom_position_ids:
            input_shape = input_shape[0]
        if self.merge_mode == "concat":
            return input_shape[:-1] + (input_shape[-1] + self.output_dim,)
        if self.merge_mode == "zero":
            return input_shape[:-1] + (self.output_dim,)
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "merge_mode": self.merge_mode,
            "hierarchical": self.hierarchical,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
            "custom_position_ids": self.custom_position_ids,
        }


@register
class LayerNormalization(NodeAccessors, keras.layers.Layer):
    """Layer normalization over the last axis, optionally conditioned on another input.

    ``y = (x - mean) / sqrt(var + epsilon) * gamma + beta``, computed in float32. With
    ``conditional=True`` the inputs are ``[x, cond]`` and ``gamma``/``beta`` are shifted by
    zero-initialised projections of ``cond`` (Su Jianlin's Conditional Layer Normalization,
    kexue.fm 7124).

    Args:
        center, scale: bool, whether ``beta`` / ``gamma`` exist.
        epsilon: float, added to the variance (default 1e-12, as Google BERT).
        zero_mean: bool, subtract the mean; False with ``center=False`` gives T5's RMS norm
            ``x / sqrt(mean(x^2) + epsilon) * gamma`` (Zhang & Sennrich 2019).
        unit_variance: bool, divide by the root mean square (False: only centre).
        conditional: bool. hidden_units / hidden_activation / hidden_initializer: an optional
            Dense applied to ``cond`` first.
    Input shape: ``(..., hidden_size)`` (``cond``: ``(batch_size, cond_size)`` or
    ``(batch_size, seq_len, cond_size)``). Output shape: same as ``x``.
    Weights, in order: ``beta``, ``gamma`` (as bert4keras), then the conditional projections.
    """

    def __init__(
        self,
        center=True,
        scale=True,
        epsilon=None,
        zero_mean=True,
        unit_variance=True,
        conditional=False,
        hidden_units=None,
        hidden_activation="linear",
        hidden_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.center = center
        self.scale = scale
        self.epsilon = 1e-12 if epsilon is None else epsilon
        self.zero_mean = zero_mean
        self.unit_variance = unit_variance
        self.conditional = conditional
        self.hidden_units = hidden_units
        self.hidden_activation = hidden_activation
        self.hidden_initializer = keras.initializers.get(hidden_initializer)

    def build(self, input_shape):
        x_shape, cond_shape = input_shape if self.conditional else (input_shape, None)
        cond_shape = tuple(cond_shape) if cond_shape is not None else None
        dim = x_shape[-1]
        if self.center:
            self.beta = self.add_weight(name="beta", shape=(dim,), initializer="zeros")
        if self.scale:
            self.gamma = self.add_weight(name="gamma", shape=(dim,), initializer="ones")
        if self.conditional:
            if self.hidden_units is not None:
                self.hidden_dense = Dense(
                    self.hidden_units,
                    activation=get_activation(self.hidden_activation),
                    use_bias=False,
                    kernel_initializer=self.hidden_initializer,
                    name="hidden_dense",
                    dtype=self.dtype_policy,
                )
                self.hidden_dense.build(cond_shape)
                cond_shape = cond_shape[:-1] + (self.hidden_units,)
            if self.center:
                self.beta_dense = Dense(
                    dim, use_bias=False, kernel_initializer="zeros", name="beta_dense",
                    dtype=self.dtype_policy,
                )
                self.beta_dense.build(cond_shape)
            if self.scale:
                self.gamma_dense = Dense(
                    dim, use_bias=False, kernel_initializer="zeros", name="gamma_dense",
                    dtype=self.dtype_policy,
                )
                self.gamma_dense.build(cond_shape)

    def call(self, inputs):
        if self.conditional:
            inputs, cond = inputs
            if self.hidden_units is not None:
                cond = self.hidden_dense(cond)
            for _ in range(len(inputs.shape) - len(cond.shape)):
                cond = ops.expand_dims(cond, 1)
            cond = ops.cast(cond, "float32")
        x = ops.cast(inputs, "float32")
        if not self.conditional and self.zero_mean and self.unit_variance:
            # Plain LayerNorm: the backend's fused kernel where it has one (torch's layer_norm).
            gamma = ops.cast(self.gamma, "float32") if self.scale else None
            beta = ops.cast(self.beta, "float32") if self.center else None
            x = ops.layer_normalization(x, gamma=gamma, beta=beta, axis=-1, epsilon=self.epsilon)
            return ops.cast(x, self.compute_dtype)
        if self.zero_mean:
            x = x - ops.mean(x, axis=-1, keepdims=True)
        if self.unit_variance:
            variance = ops.mean(ops.square(x), axis=-1, keepdims=True)
            x = x * ops.rsqrt(variance + self.epsilon)
        if self.scale:
            gamma = ops.cast(self.gamma, "float32")
            if self.conditional:
                gamma = gamma + ops.cast(self.gamma_dense(cond), "float32")
            x = x * gamma
        if self.center:
            beta = ops.cast(self.beta, "float32")
            if self.conditional:
                beta = beta + ops.cast(self.beta_dense(cond), "float32")
            x = x + beta
        return ops.cast(x, self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        return _first_mask(mask)

    def compute_output_shape(self, input_shape):
        return input_shape[0] if self.conditional else input_shape

    def get_config(self):
        return {
            **_with_sublayer_dtypes(self, super().get_config()),
            "center": self.center,
            "scale": self.scale,
            "epsilon": self.epsilon,
            "zero_mean": self.zero_mean,
            "unit_variance": self.unit_variance,
            "conditional": self.conditional,
            "hidden_units": self.hidden_units,
            "hidden_activation": self.hidden_activation,
            "hidden_initializer": keras.initializers.serialize(self.hidden_initializer),
        }


@register
class MultiHeadAttention(NodeAccessors, keras.layers.Layer):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017, sec. 3.2).

    Inputs: ``[q, k, v]``, then optionally ``a_bias``, then optionally a position tensor for
    ``p_bias``. q ``(batch_size, q_len, q_dim)``, k/v ``(batch_size, k_len, k_dim)``;
    ``a_bias`` is a boolean mask (True = attend) or an additive float bias, broadcastable to
    ``(batch_size, heads, q_len, k_len)`` (bert4keras's ``a_bias``: padding, causal, UniLM).
    Call args:
        a_bias: accepted for bert4keras compatibility; whether ``a_bias`` is present is read
            from the number of inputs.
        p_bias: None, ``'typical_relative'`` (NEZHA: position tensor ``(q_len, k_len,
            key_size)`` added to keys and values, Shaw et al. 2018), ``'rotary'`` (RoFormer:
            sinusoidal table ``(batch_size or 1, seq_len, key_size)`` rotating q and k, Su et al.
            2021) or ``'t5_relative'`` (T5: bias ``(q_len, k_len, heads)`` added to logits).
        cache, cache_index: incremental decoding. ``cache`` ``(batch_size, 2, max_length,
            heads, head_size)`` holds the keys and values of earlier positions; this call's
            keys/values are written at ``cache_index`` (int tensor) and the queries attend
            over the whole cache (the mask must hide unwritten positions). Returns
            ``[output, updated cache]``. With ``cache_index=None`` the cache is read as it is
            (a cross attention's keys and values from `key_value_cache`, ``k``/``v`` unused)
            and returned unchanged.
    Output: ``(batch_size, q_len, out_dim)``; with ``return_attention_scores=True`` also the
    attention probabilities ``(batch_size, heads, q_len, k_len)``.

    Args:
        heads: int, number of heads. head_size: int, size of each value head.
        out_dim: int, output size (default ``heads * head_size``).
        key_size: int, size of each query/key head (default ``head_size``).
        use_bias: bool, biases in the four projections.
        attention_scale: bool, divide logits by ``sqrt(key_size)``.
        attention_dropout: float, dropout on the attention probabilities.
        return_attention_scores: bool.
        kernel_initializer: initializer of the projections.
    Weights, in order: ``q_dense``, ``k_dense``, ``v_dense``, ``o_dense`` (kernel, bias each).
    Uses `keras.ops.dot_product_attention` (fused kernels where the backend has them) unless
    dropout is active, scores are requested, ``key_size != head_size`` or ``p_bias`` is
    ``'typical_relative'``.
    """

    def __init__(
        self,
        heads,
        head_size,
        out_dim=None,
        key_size=None,
        use_bias=True,
        attention_scale=True,
        attention_dropout=None,
        return_attention_scores=False,
        kernel_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.heads = heads
        self.head_size = head_size
        self.out_dim = out_dim or heads * head_size
        self.key_size = key_size or head_size
        self.use_bias = use_bias
        self.attention_scale = attention_scale
        self.attention_dropout = attention_dropout or 0.0
        self.return_attention_scores = return_attention_scores
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    def build(self, input_shape):
        def dense(units, name, shape):
            layer = Dense(
                units,
                use_bias=self.use_bias,
                kernel_initializer=self.kernel_initializer,
                name=name,
                dtype=self.dtype_policy,
            )
            layer.build(shape)
            return layer

        q_shape, k_shape, v_shape = (tuple(shape) for shape in input_shape[:3])
        self.q_dense = dense(self.key_size * self.heads, "q_dense", q_shape)
        self.k_dense = dense(self.key_size * self.heads, "k_dense", k_shape)
        self.v_dense = dense(self.head_size * self.heads, "v_dense", v_shape)
        self.o_dense = dense(self.out_dim, "o_dense", v_shape[:-1] + (self.head_size * self.heads,))
        self.dropout = Dropout(self.attention_dropout, name="attention_dropout", dtype=self.dtype_policy)

    def _split_heads(self, x, size):
        # (batch_size, seq_len, heads * size) -> (batch_size, seq_len, heads, size)
        return ops.reshape(x, (-1, ops.shape(x)[1], self.heads, size))

    def call(self, inputs, a_bias=None, p_bias=None, cache=None, cache_index=None, training=None):
        q, k, v = inputs[:3]
        extras = list(inputs[3:])
        position = extras.pop() if p_bias else None
        mask = extras[0] if extras else None
        qw = self._split_heads(self.q_dense(q), self.key_size)
        if cache is not None and cache_index is None:
            # A cache computed once (`key_value_cache`, cross attention): its keys/values as they are.
            kw, vw = ops.cast(cache[:, 0], qw.dtype), ops.cast(cache[:, 1], qw.dtype)
        else:
            kw = self._split_heads(self.k_dense(k), self.key_size)
            vw = self._split_heads(self.v_dense(v), self.head_size)
        if p_bias == "rotary":
            qw, kw = apply_rotary_position_embeddings(position, qw, kw)
        if cache is not None and cache_index is not None:
            # Write this chunk's keys/values at cache_index, then attend over the whole cache.
            start = ops.cast(ops.reshape(cache_index, (-1,))[0], "int32")
            chunk = ops.cast(ops.stack([kw, vw], axis=1), cache.dtype)
            cache = ops.slice_update(cache, (0, 0, start, 0, 0), chunk)
            kw, vw = cache[:, 0], cache[:, 1]
        scale = 1.0 / math.sqrt(self.key_size) if self.attention_scale else 1.0
        is_bool = mask is not None and "bool" in str(mask.dtype)
        bias = None
        if mask is not None and not is_bool:  # an additive mask may arrive autocast to float16: -1e12 -> -inf
            bias = ops.maximum(ops.cast(mask, "float32"), MASK_VALUE)
        if p_bias == "t5_relative":
            t5_bias = ops.expand_dims(ops.transpose(ops.cast(position, "float32"), (2, 0, 1)), 0)
            bias = t5_bias if bias is None else bias + t5_bias

        dtype = keras.backend.standardize_dtype(qw.dtype)
        fused = (
            not self.return_attention_scores
            and self.key_size == self.head_size
            and p_bias != "typical_relative"
            and not (training and self.attention_dropout > 0)
            # JAX's fused attention asks XLA for float16 x float16 -> float32 products, which
            # its CPU backend rejects ("precision 'F16_F16_F32' is not supported").
            and not (dtype == "float16" and keras.backend.backend() == "jax")
        )
        if fused:
            # Some backends take a mask or a bias, not both; in half precision the backends'
            # own handling of a fully masked row (all -inf) gives NaN, so masks become a
            # finite additive bias there.
            if is_bool and (bias is not None or dtype in ("float16", "bfloat16")):
                bias = ops.where(mask, 0.0 if bias is None else bias, MASK_VALUE)
                is_bool = False
            if bias is not None:
                bias = ops.cast(ops.maximum(bias, mask_value(dtype)), qw.dtype)
            o = ops.dot_product_attention(
                qw,
                kw,
                vw,
                mask=mask if is_bool else None,
                bias=bias,
                scale=scale,
            )
            scores = None
        else:
            logits = ops.cast(ops.einsum("bqhd,bkhd->bhqk", qw, kw), "float32")
            if p_bias == "typical_relative":
                position = ops.cast(position, qw.dtype)
                logits = logits + ops.cast(ops.einsum("bqhd,qkd->bhqk", qw, position), "float32")
            logits = logits * scale
            if bias is not None:
                logits = logits + bias
            if is_bool:
                logits = ops.where(mask, logits, MASK_VALUE)
            scores = ops.cast(ops.softmax(logits, axis=-1), qw.dtype)
            probas = self.dropout(scores, training=training)
            o = ops.einsum("bhqk,bkhd->bqhd", probas, vw)
            if p_bias == "typical_relative":
                o = o + ops.einsum("bhqk,qkd->bqhd", probas, position)
        o = ops.reshape(o, (-1, ops.shape(o)[1], self.heads * self.head_size))
        o = self.o_dense(o)
        if cache is not None:
            return [o, cache]
        if self.return_attention_scores:
            return [o, scores]
        return o

    def key_value_cache(self, k, v=None):
        """This layer's keys and values of ``k`` and ``v`` (default ``k``), ``(batch_size, len,
        hidden)``, as a cache ``(batch_size, 2, len, heads, head_size)`` to pass as ``cache`` with
        ``cache_index=None``: a cross attention's keys and values, computed once per source."""
        v = k if v is None else v
        kw = self._split_heads(self.k_dense(k), self.key_size)
        vw = self._split_heads(self.v_dense(v), self.head_size)
        return ops.stack([kw, vw], axis=1)

    def compute_mask(self, inputs, mask=None):
        mask = _first_mask(mask)  # the queries' padding mask
        return [mask, None] if self.return_attention_scores else mask

    def compute_output_shape(self, inputs_shape, cache_shape=None):
        q_shape, k_shape = inputs_shape[0], inputs_shape[1]
        o_shape = tuple(q_shape[:-1]) + (self.out_dim,)
        if cache_shape is not None:
            return [o_shape, tuple(cache_shape)]
        if self.return_attention_scores:
            return [o_shape, (q_shape[0], self.heads, q_shape[1], k_shape[1])]
        return o_shape

    def get_config(self):
        return {
            **_with_sublayer_dtypes(self, super().get_config()),
            "heads": self.heads,
            "head_size": self.head_size,
            "out_dim": self.out_dim,
            "key_size": self.key_size,
            "use_bias": self.use_bias,
            "attention_scale": self.attention_scale,
            "attention_dropout": self.attention_dropout,
            "return_attention_scores": self.return_attention_scores,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@register
class FeedForward(NodeAccessors, keras.layers.Layer):
    """Position-wise feed-forward block: Dense(units, activation) -> Dense(input_dim).

    Args:
        units: int, inner size (``intermediate_size`` in BERT configs).
        activation: str or list of str; a list gives a gated (GLU) variant as in T5 v1.1
            (the inner projections are multiplied elementwise).
        use_bias: bool.
        kernel_initializer: initializer of both projections.
    Input shape: ``(batch_size, seq_len, hidden_size)``. Output shape: the same.
    Weights, in order: ``i0_dense`` (``i1_dense``, ... for gated), ``o_dense``.
    Source: Vaswani et al. 2017, sec. 3.3; GLU variant: Shazeer 2020.
    """

    def __init__(
        self, units, activation="relu", use_bias=True, kernel_initializer="glorot_uniform", **kwargs
    ):
        super().__init__(**kwargs)
        self.units = units
        self.activation = activation if isinstance(activation, (list, tuple)) else [activation]
        self.activation = list(self.activation)
        self.use_bias = use_bias
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.inner_denses = []
        for i, activation in enumerate(self.activation):
            layer = Dense(
                self.units,
                activation=get_activation(activation),
                use_bias=self.use_bias,
                kernel_initializer=self.kernel_initializer,
                name=f"i{i}_dense",
                dtype=self.dtype_policy,
            )
            layer.build(input_shape)
            self.inner_denses.append(layer)
        self.o_dense = Dense(
            input_shape[-1],
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            name="o_dense",
            dtype=self.dtype_policy,
        )
        self.o_dense.build(input_shape[:-1] + (self.units,))

    def call(self, inputs):
        x = self.inner_denses[0](inputs)
        for dense in self.inner_denses[1:]:
            x = x * dense(inputs)
        return self.o_dense(x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        activation = self.activation[0] if len(self.activation) == 1 else self.activation
        return {
            **_with_sublayer_dtypes(self, super().get_config()),
            "units": self.units,
            "activation": activation,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@register
class BiasAdd(NodeAccessors, keras.layers.Layer):
    """Adds a trainable bias vector on the last axis (bert4keras's ``MLM-Bias``).

    Input shape: ``(..., dim)``. Output shape: the same. Weights: ``bias`` ``(dim,)``.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs):
        return inputs + self.bias

    def compute_output_shape(self, input_shape):
        return input_shape


@register
class TakeToken(NodeAccessors, keras.layers.Layer):
    """Selects one position of a sequence: ``(batch_size, seq_len, dim) -> (batch_size, dim)``.

    Used as bert4keras's ``Pooler`` (index 0, the [CLS] token) instead of a Lambda layer.
    """

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, inputs):
        return inputs[:, self.index]

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


@register
class DropMask(NodeAccessors, keras.layers.Layer):
    """Passes its input through without its Keras mask.

    The models' outputs carry the padding mask (as bert4keras 0.11.5's), and Keras weights a compiled
    loss by it, normalising by the number of real tokens of the batch. A loss whose sample weights
    already normalise per token (e.g. masked-LM weights ``chosen / mask_rate``, which make N data-
    parallel replicas give exactly one device's gradients) drops the mask with this layer first.
    Input: any tensor. Output: the same tensor, no mask.
    """

    def call(self, inputs):
        # A new tensor object without copying (views on TensorFlow/torch, free under jit): Keras
        # attaches the mask to the input object itself. (JAX's reshape to the same shape returns
        # the same object.)
        return ops.squeeze(ops.expand_dims(inputs, -1), -1)

    def compute_mask(self, inputs, mask=None):
        return None


@register
class AttentionMask(NodeAccessors, keras.layers.Layer):
    """Boolean attention mask ``(batch_size, 1, q_len or 1, k_len)``, True where attention is allowed.

    Args:
        mode: ``'padding'`` (keys that are not padding), ``'causal'`` (also lower-triangular,
            for ``application='lm'``), ``'unilm'`` (UniLM seq2seq mask from segment_ids: the
            first segment attends bidirectionally, the second causally; Dong et al. 2019) or
            ``'context'`` (keys are the rows of a float context that are not all zero, i.e. an
            encoder output masked by `SequenceMasking`, for cross attention).
        pad_id: int or None, the padding token id (None: no padding mask).
    Inputs: token_ids ``(batch_size, seq_len)``; for ``'unilm'`` ``[token_ids, segment_ids]``;
    for ``'context'`` a float ``(batch_size, seq_len, hidden_size)``.
    Call args (incremental decoding): start_index, int tensor, the position of the first
    token; key_length, int, the KV cache length. Then the output is the causal (UniLM: plus
    prefix) mask ``(batch_size, 1, seq_len, key_length)`` and padding is not masked.
    """

    def __init__(self, mode="padding", pad_id=0, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("padding", "causal", "unilm", "context"):
            raise ValueError(f"AttentionMask: unknown mode {mode!r}")
        self.mode = mode
        self.pad_id = pad_id

    def call(self, inputs, start_index=None, key_length=None):
        if self.mode == "unilm":
            token_ids, segment_ids = inputs
        else:
            token_ids = inputs
        if key_length is not None:
            return self._cached_mask(token_ids, segment_ids if self.mode == "unilm" else None,
                                     start_index, key_length)
        if self.mode == "context":
            keys = ops.any(ops.not_equal(token_ids, 0), axis=-1)
        elif self.pad_id is None:
            keys = ops.ones_like(token_ids, dtype="bool")
        else:
            keys = ops.not_equal(token_ids, self.pad_id)
        mask = keys[:, None, None, :]
        if self.mode == "causal":
            positions = ops.arange(ops.shape(token_ids)[1])
            causal = ops.greater_equal(positions[:, None], positions[None, :])
            mask = ops.logical_and(mask, causal[None, None])
        elif self.mode == "unilm":
            idxs = ops.cumsum(ops.cast(segment_ids, "int32"), axis=1)
            unilm = ops.less_equal(idxs[:, None, :], idxs[:, :, None])
            mask = ops.logical_and(mask, unilm[:, None])
        return mask

    def _cached_mask(self, token_ids, segment_ids, start_index, key_length):
        # A chunk of queries at start..start+q_len-1 over a cache of key_length positions:
        # causal, and for UniLM the segment-0 prefix (all in the first chunk) sees itself.
        q_pos = query_positions(ops.shape(token_ids)[1], start_index)
        k_pos = ops.arange(key_length, dtype="int32")
        mask = ops.less_equal(k_pos[None, :], q_pos[:, None])[None]
        if segment_ids is not None:
            first = ops.equal(ops.reshape(start_index, (-1,))[0], 0)
            prefix = ops.sum(ops.cast(ops.equal(segment_ids, 0), "int32"), axis=1)
            prefix = ops.where(first, prefix, 0)[:, None, None]
            mask = ops.logical_or(mask, ops.logical_and(k_pos[None, None, :] < prefix, q_pos[None, :, None] < prefix))
        return mask[:, None]

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, inputs, start_index=None, key_length=None):
        token_ids = inputs[0] if self.mode == "unilm" else inputs
        batch_size, seq_len = token_ids.shape[:2]
        if key_length is not None:
            return keras.KerasTensor((batch_size, 1, seq_len, key_length), dtype="bool")
        q_len = 1 if self.mode in ("padding", "context") else seq_len
        return keras.KerasTensor((batch_size, 1, q_len, seq_len), dtype="bool")

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "pad_id": self.pad_id}


@register
class SequenceMasking(NodeAccessors, keras.layers.Layer):
    """Zeroes the positions of padding tokens: ``x * (token_ids != pad_id)[..., None]``.

    Inputs: ``[x, token_ids]``, x ``(batch_size, seq_len, hidden_size)``, token_ids
    ``(batch_size, seq_len)``. Output: the shape of x. (bert4keras's ``Encoder-Output-Masked``.)
    """

    def __init__(self, pad_id=0, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = pad_id

    def call(self, inputs):
        x, token_ids = inputs
        return x * ops.cast(ops.not_equal(token_ids, self.pad_id), x.dtype)[..., None]

    def compute_mask(self, inputs, mask=None):
        return _first_mask(mask)

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@register
class SinusoidalPositionEmbedding(NodeAccessors, keras.layers.Layer):
    """Fixed sinusoidal position embedding (Vaswani et al. 2017), interleaved sin/cos.

    Args:
        output_dim: int, embedding size.
        merge_mode: ``'add'``, ``'mul'``, ``'zero'`` (the table alone, used for rotary
            attention) or ``'concat'``.
        custom_position_ids: if True, inputs are ``[x, position_ids]``.
    Input shape: ``(batch_size, seq_len, dim)``. Output: ``(batch_size, seq_len, dim)``
    (``'zero'``: ``(batch_size, seq_len, output_dim)``; ``'concat'``: ``dim + output_dim``).
    """

    def __init__(self, output_dim, merge_mode="add", custom_position_ids=False, **kwargs):
        super().__init__(**kwargs)
        self.output_dim = output_dim
        self.merge_mode = merge_mode
        self.custom_position_ids = custom_position_ids

    def call(self, inputs, start_index=None):
        if self.custom_position_ids:
            inputs, position_ids = inputs
        else:
            position_ids = query_positions(ops.shape(inputs)[1], start_index)[None]
        embeddings = ops.cast(sinusoidal_embeddings(position_ids, self.output_dim), inputs.dtype)
        embeddings = ops.broadcast_to(embeddings, ops.shape(inputs)[:2] + (self.output_dim,))
        if self.merge_mode == "add":
            return inputs + embeddings
        if self.merge_mode == "mul":
            return inputs * (embeddings + 1.0)
        if self.merge_mode == "zero":
            return embeddings
        return ops.concatenate([inputs, embeddings], axis=-1)

    def compute_mask(self, inputs, mask=None):
        return _first_mask(mask)

    def compute_output_shape(self, input_shape, **kwargs):
        if self.custom_position_ids:
            input_shape = input_shape[0]
        if self.merge_mode == "concat":
            return tuple(input_shape[:-1]) + (input_shape[-1] + self.output_dim,)
        if self.merge_mode == "zero":
            return tuple(input_shape[:-1]) + (self.output_dim,)
        return tuple(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "output_dim": self.output_dim,
            "merge_mode": self.merge_mode,
            "custom_position_ids": self.custom_position_ids,
        }


@register
class RelativePositionEmbedding(NodeAccessors, keras.layers.Layer):
    """Clipped relative position embedding of Shaw et al. 2018, as used by NEZHA.

    Row ``clip(j - i, -m, m) + m`` of an ``(input_dim = 2m + 1, output_dim)`` table for query
    position ``i`` and key position ``j``; NEZHA (Wei et al. 2019) uses m = 64 and a fixed
    sinusoidal table (``embeddings_initializer=Sinusoidal()``, ``trainable=False``).
    Inputs: ``[q, k]`` ``(batch_size, q_len, ...)``, ``(batch_size, k_len, ...)``.
    Call args (incremental decoding): start_index, the position of q's first token;
    key_length, the number of key positions (the KV cache's length) instead of k's.
    Output: ``(q_len, k_len, output_dim)``.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="zeros", **kwargs):
        super().__init__(**kwargs)
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings",
            shape=(self.input_dim, self.output_dim),
            initializer=self.embeddings_initializer,
            trainable=self.trainable,
        )

    def compute_position_ids(self, inputs, start_index=None, key_length=None):
        q, k = inputs
        q_idxs = query_positions(ops.shape(q)[1], start_index)
        k_idxs = ops.arange(ops.shape(k)[1] if key_length is None else key_length, dtype="int32")
        max_distance = (self.input_dim - 1) // 2
        relative = ops.clip(k_idxs[None, :] - q_idxs[:, None], -max_distance, max_distance)
        return relative + max_distance

    def call(self, inputs, start_index=None, key_length=None):
        position_ids = self.compute_position_ids(inputs, start_index, key_length)
        return ops.take(self.embeddings, position_ids, axis=0)

    def compute_mask(self, inputs, mask=None):
        return None

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }


@register
class RelativePositionEmbeddingT5(RelativePositionEmbedding):
    """T5's bucketed relative position bias (Raffel et al. 2020; Mesh-TF numerics).

    Args:
        input_dim: number of buckets (``relative_attention_num_buckets``, 32).
        output_dim: number of heads.
        max_distance: distance of the last bucket (``relative_attention_max_distance``, 128).
        bidirectional: True in the encoder, False in the decoder.
    Inputs: ``[q, k]``. Output: ``(q_len, k_len, heads)`` float bias.
    """

    def __init__(self, input_dim, output_dim, max_distance=128, bidirectional=True, **kwargs):
        super().__init__(input_dim, output_dim, **kwargs)
        self.max_distance = max_distance
        self.bidirectional = bidirectional

    def compute_position_ids(self, inputs, start_index=None, key_length=None):
        q, k = inputs
        q_idxs = query_positions(ops.shape(q)[1], start_index)
        k_idxs = ops.arange(ops.shape(k)[1] if key_length is None else key_length, dtype="int32")
        return t5_relative_position_buckets(
            k_idxs[None, :] - q_idxs[:, None],
            bidirectional=self.bidirectional,
            num_buckets=self.input_dim,
            max_distance=self.max_distance,
        )

    def get_config(self):
        return {
            **super().get_config(),
            "max_distance": self.max_distance,
            "bidirectional": self.bidirectional,
        }


# -- task heads: span pointers, CRF / MEMM, loss layers -------------------------------------------


def _inputs_and_mask(inputs, mask=None):
    """``x`` and a boolean ``(batch_size, seq_len)`` mask (or None) from ``x`` or ``[x, mask]``.

    An explicit mask is nonzero at real tokens, so 0-padded token_ids can serve as one; otherwise
    the Keras mask Keras passes along with ``x`` (if any) is used.
    """
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != 2:
            raise ValueError(f"expected x or [x, mask], got a list of {len(inputs)} tensors")
        x, mask = inputs
    else:
        x = inputs
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
    if mask is not None:
        mask = mask if "bool" in str(mask.dtype) else ops.not_equal(mask, 0)
    return x, mask


def _first_shape(input_shape):
    """The shape of ``x`` when a layer takes ``x`` or ``[x, mask]``."""
    if isinstance(input_shape, (list, tuple)) and input_shape and isinstance(input_shape[0], (list, tuple)):
        return tuple(input_shape[0])
    return tuple(input_shape)


def _span_masks(logits, mask, tril_mask):
    """-1e12 on spans touching padding and (``tril_mask``) on spans with start > end."""
    if mask is not None:
        pair = ops.logical_and(mask[:, None, :, None], mask[:, None, None, :])
        logits = ops.where(pair, logits, MASK_VALUE)
    if tril_mask:
        idxs = ops.arange(ops.shape(logits)[-1])
        upper = ops.greater_equal(idxs[None, :], idxs[:, None])
        logits = ops.where(upper[None, None], logits, MASK_VALUE)
    return logits


@register
class GlobalPointer(NodeAccessors, keras.layers.Layer):
    """Span scorer for (nested) NER: one logit per entity type and (start, end) token pair.

    ``s_t(i, j) = q_{t,i} . k_{t,j} / sqrt(head_size)``, where ``[q_t, k_t]`` come from one
    Dense layer and are rotated by RoPE so that the score sees the relative distance ``j - i``.
    Spans touching padding and, with ``tril_mask``, spans with ``start > end`` get -1e12. Train
    with `bert4keras.backend.global_pointer_crossentropy` (ZLPR); at inference a span is an
    entity of type t when its logit is > 0, so nested and overlapping entities come out alike.

    Args:
        heads: int, number of entity types.
        head_size: int, size of q and k per type (even when ``RoPE``).
        RoPE: bool, rotary position embedding on q and k.
        use_bias: bool.
        tril_mask: bool, mask spans with start > end.
        kernel_initializer: initializer of the projection (bert4keras: ``'lecun_normal'``).
    Inputs: ``x`` ``(batch_size, seq_len, hidden_size)`` or ``[x, mask]`` with ``mask``
        ``(batch_size, seq_len)``, nonzero / True at real tokens (0-padded token_ids work);
        without an explicit mask, a Keras mask on ``x`` is used if there is one.
    Output: float32 logits ``(batch_size, heads, seq_len, seq_len)``, index ``[b, t, start, end]``.
    Weights: ``dense`` (kernel ``(hidden_size, heads * 2 * head_size)``, bias); per type the
    units are ``[q (head_size), k (head_size)]``.
    Source: Su Jianlin, "GlobalPointer：用统一的方式处理嵌套和非嵌套NER", kexue.fm 8373;
    bert4keras 0.11.5 ``GlobalPointer``.
    """

    def __init__(
        self, heads, head_size, RoPE=True, use_bias=True, tril_mask=True, kernel_initializer="lecun_normal", **kwargs
    ):
        super().__init__(**kwargs)
        if RoPE and head_size % 2:
            raise ValueError(f"{type(self).__name__}: RoPE needs an even head_size, got {head_size}")
        self.heads = heads
        self.head_size = head_size
        self.RoPE = RoPE
        self.use_bias = use_bias
        self.tril_mask = tril_mask
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.supports_masking = True

    def build(self, input_shape):
        self.dense = Dense(
            self.heads * self.head_size * 2,
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            name="dense",
            dtype=self.dtype_policy,
        )
        self.dense.build(_first_shape(input_shape))

    def _rotate(self, *tensors):
        if not self.RoPE:
            return tensors
        position_ids = ops.arange(ops.shape(tensors[0])[1])[None]
        sinusoidal = sinusoidal_embeddings(position_ids, self.head_size)
        return apply_rotary_position_embeddings(sinusoidal, *tensors)

    def call(self, inputs, mask=None):
        x, mask = _inputs_and_mask(inputs, mask)
        x = self.dense(x)
        x = ops.reshape(x, (-1, ops.shape(x)[1], self.heads, 2 * self.head_size))
        qw, kw = self._rotate(x[..., : self.head_size], x[..., self.head_size :])
        logits = ops.cast(ops.einsum("bmhd,bnhd->bhmn", qw, kw), "float32") / math.sqrt(self.head_size)
        return _span_masks(logits, mask, self.tril_mask)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, inputs, mask=None):
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        return keras.KerasTensor((x.shape[0], self.heads, x.shape[1], x.shape[1]), dtype="float32")

    def get_config(self):
        return {
            **_with_sublayer_dtypes(self, super().get_config()),
            "heads": self.heads,
            "head_size": self.head_size,
            "RoPE": self.RoPE,
            "use_bias": self.use_bias,
            "tril_mask": self.tril_mask,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@register
class EfficientGlobalPointer(GlobalPointer):
    """GlobalPointer with the q/k projection shared by all types plus a per-type bias.

    ``s_t(i, j) = q_i . k_j / sqrt(head_size) + (w_t^s . h_i + w_t^e . h_j) / 2`` where
    ``h = Dense(2 * head_size)(x)`` holds ``q`` (even units) and ``k`` (odd units) and the
    type terms are a Dense(2 * heads) of ``h``. Far fewer parameters than `GlobalPointer`
    (``hidden_size * 2 * head_size + 2 * head_size * 2 * heads`` instead of ``hidden_size *
    2 * head_size * heads``) and in the author's experiments as good or better.

    Args, inputs, output and masking: as `GlobalPointer`.
    Weights, in order: ``p_dense`` (kernel ``(hidden_size, 2 * head_size)``, bias),
    ``q_dense`` (kernel ``(2 * head_size, 2 * heads)``, bias; unit ``2t`` scores the end
    token, ``2t + 1`` the start token of type t).
    Source: Su Jianlin, "Efficient GlobalPointer：少点参数，多点效果", kexue.fm 8877;
    bert4keras 0.11.5 ``EfficientGlobalPointer``.
    """

    def build(self, input_shape):
        x_shape = _first_shape(input_shape)
        self.p_dense = Dense(
            self.head_size * 2, use_bias=self.use_bias, kernel_initializer=self.kernel_initializer, name="p_dense",
            dtype=self.dtype_policy,
        )
        self.p_dense.build(x_shape)
        self.q_dense = Dense(
            self.heads * 2, use_bias=self.use_bias, kernel_initializer=self.kernel_initializer, name="q_dense",
            dtype=self.dtype_policy,
        )
        self.q_dense.build(x_shape[:-1] + (self.head_size * 2,))

    def call(self, inputs, mask=None):
        x, mask = _inputs_and_mask(inputs, mask)
        x = self.p_dense(x)
        qw, kw = x[..., ::2], x[..., 1::2]
        qw, kw = self._rotate(qw[:, :, None], kw[:, :, None])  # a head axis for the rotary helper
        logits = ops.cast(ops.einsum("bmd,bnd->bmn", qw[:, :, 0], kw[:, :, 0]), "float32")
        logits = logits / math.sqrt(self.head_size)
        bias = ops.transpose(ops.cast(self.q_dense(x), "float32"), (0, 2, 1)) / 2  # (b, 2 * heads, n)
        logits = logits[:, None] + bias[:, ::2, None] + bias[:, 1::2, :, None]
        return _span_masks(logits, mask, self.tril_mask)


@register
class ConditionalRandomField(NodeAccessors, keras.layers.Layer):
    """Linear-chain CRF on top of per-token label scores; the layer carries the loss.

    The layer itself passes the emission scores through, writing -1e12 at padding so that
    its losses and metrics can find the mask in ``y_pred``. With transition matrix ``A``
    (``A[i, j]``: label i followed by j) a path ``y`` scores ``sum_t e_t[y_t] + sum_t
    A[y_t, y_{t+1}]`` over the real tokens, and the loss is ``log Z - score(y_true)`` with
    ``log Z`` from the forward algorithm (log-sum-exp recursion, `keras.ops.scan`).

    Args:
        lr_multiplier: float, the transitions are stored divided by it and used multiplied by
            it, so their effective learning rate is this many times the optimizer's (bert4keras
            used 100-1000 with small encoder learning rates).
    Inputs: emissions ``(batch_size, seq_len, num_labels)`` or ``[emissions, mask]`` (mask
        ``(batch_size, seq_len)``, nonzero at real tokens; 0-padded token_ids work). Padding
        must be at the end of each row.
    Output: float32 emissions, the same shape, -1e12 at padding.
    Weights: ``trans`` ``(num_labels, num_labels)`` (read the effective matrix as `trans`).
    Use: ``model.compile(loss=crf.sparse_loss, metrics=[crf.sparse_accuracy])``; decode with
        ``bert4keras.snippets.ViterbiDecoder(keras.ops.convert_to_numpy(crf.trans))``.
    Source: Lafferty et al. 2001; Su Jianlin, "简明条件随机场CRF介绍（附带纯Keras实现）",
    kexue.fm 5542; bert4keras 0.11.5 ``ConditionalRandomField``.
    """

    def __init__(self, lr_multiplier=1, **kwargs):
        super().__init__(**kwargs)
        self.lr_multiplier = lr_multiplier
        self.supports_masking = True

    def build(self, input_shape):
        num_labels = _first_shape(input_shape)[-1]
        self._trans = self.add_weight(name="trans", shape=(num_labels, num_labels), initializer="glorot_uniform")
        if self.lr_multiplier != 1:
            self._trans.assign(self._trans / self.lr_multiplier)

    @property
    def trans(self):
        """The effective transition matrix ``(num_labels, num_labels)``, float32."""
        trans = ops.cast(self._trans, "float32")
        return trans * self.lr_multiplier if self.lr_multiplier != 1 else trans

    def call(self, inputs, mask=None):
        x, mask = _inputs_and_mask(inputs, mask)
        x = ops.cast(x, "float32")
        if mask is None:
            return x
        return ops.where(mask[..., None], x, MASK_VALUE)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_spec(self, inputs, mask=None):
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        return keras.KerasTensor(x.shape, dtype="float32")

    @staticmethod
    def _mask_of(y_pred):
        """Real tokens of an output of this layer: ``(batch_size, seq_len)`` bool."""
        return ops.all(ops.greater(y_pred, MASK_VALUE / 10), axis=-1)

    def _sparse_labels(self, y_true, y_pred):
        return ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")

    def target_score(self, y_true, y_pred):
        """Unnormalised score of the paths ``y_true`` (one-hot, zero at padding): ``(batch_size,)``."""
        point_score = ops.einsum("bni,bni->b", y_true, y_pred)
        trans_score = ops.einsum("bni,ij,bnj->b", y_true[:, :-1], self.trans, y_true[:, 1:])
        return point_score + trans_score

    def log_norm(self, y_pred, mask):
        """``log Z`` by the forward algorithm: ``(batch_size,)``.

        ``alpha_t[j] = logsumexp_i(alpha_{t-1}[i] + A[i, j]) + e_t[j]``, held at padding.
        """
        trans = self.trans[None]

        def step(alpha, inputs):
            emission, m = inputs[:, :-1], inputs[:, -1:]
            new = ops.logsumexp(alpha[:, :, None] + trans, axis=1) + emission
            new = ops.where(m > 0, new, alpha)
            return new, new  # TensorFlow's scan wants y shaped like the carry

        # One scanned tensor, the mask as an extra channel: Keras's TensorFlow scan cannot
        # check several inputs of unknown length against each other.
        xs = ops.concatenate([y_pred, ops.cast(mask, y_pred.dtype)[..., None]], axis=-1)
        alpha, _ = ops.scan(step, y_pred[:, 0], ops.transpose(xs[:, 1:], (1, 0, 2)))
        return ops.logsumexp(alpha, axis=-1)

    def dense_loss(self, y_true, y_pred):
        """Negative log-likelihood ``log Z - score(y_true)`` per sequence, ``(batch_size,)``.

        y_true: one-hot ``(batch_size, seq_len, num_labels)``; y_pred: this layer's output.
        """
        y_pred = ops.cast(y_pred, "float32")
        mask = self._mask_of(y_pred)
        y_pred = ops.where(mask[..., None], y_pred, 0.0)
        y_true = ops.cast(y_true, "float32") * ops.cast(mask, "float32")[..., None]
        return self.log_norm(y_pred, mask) - self.target_score(y_true, y_pred)

    def sparse_loss(self, y_true, y_pred):
        """`dense_loss` with int labels ``(batch_size, seq_len)`` (or ``(..., 1)``)."""
        y_true = self._sparse_labels(y_true, y_pred)
        return self.dense_loss(ops.one_hot(y_true, ops.shape(y_pred)[-1]), y_pred)

    def dense_accuracy(self, y_true, y_pred):
        """Per-token accuracy of the argmax of the emissions over real tokens (a cheap training
        signal; the decoded path is what counts). y_true one-hot."""
        return self.sparse_accuracy(ops.argmax(y_true, axis=-1), y_pred)

    def sparse_accuracy(self, y_true, y_pred):
        """`dense_accuracy` with int labels ``(batch_size, seq_len)``. Returns a float32 scalar."""
        mask = ops.cast(self._mask_of(y_pred), "float32")
        y_true = self._sparse_labels(y_true, y_pred)
        equal = ops.cast(ops.equal(y_true, ops.cast(ops.argmax(y_pred, axis=-1), "int32")), "float32")
        return ops.sum(equal * mask) / ops.maximum(ops.sum(mask), 1.0)

    def get_config(self):
        return {**super().get_config(), "lr_multiplier": self.lr_multiplier}


def _reverse_valid(x, lengths):
    """Reverse each row's first ``lengths[b]`` steps along axis 1, keeping the padding in place."""
    idxs = ops.arange(ops.shape(x)[1])[None]
    lengths = ops.cast(lengths, idxs.dtype)[:, None]
    idxs = ops.where(idxs < lengths, lengths - 1 - idxs, idxs)
    if len(x.shape) == 3:
        idxs = ops.broadcast_to(idxs[..., None], ops.shape(x))
    return ops.take_along_axis(x, idxs, axis=1)


@register
class MaximumEntropyMarkovModel(ConditionalRandomField):
    """Bidirectional MEMM: a locally normalised, faster stand-in for `ConditionalRandomField`.

    Each token's label distribution is ``softmax((e_t + A[y_{t-1}]) / 2)`` (the first token:
    ``softmax(e_0)``); the loss averages the cross-entropy over real tokens of a left-to-right
    pass with ``A`` and a right-to-left pass with ``A^T``. No partition function, so training
    is a plain softmax per token.

    Args:
        lr_multiplier: float, as in `ConditionalRandomField`.
        hidden_dim: None or int; if given, ``A = L R^T`` with ``L, R`` of shape
            ``(num_labels, hidden_dim)`` (low rank, for many labels).
    Inputs / output / use: as `ConditionalRandomField` (losses return a scalar: the mean over
    real tokens of the batch). The accuracies read the transitions, which Keras's JAX trainer
    keeps out of reach of compiled metrics: on JAX call them after `predict` rather than
    passing them to ``compile(metrics=...)``. Weights: ``trans``, or ``l_trans`` and ``r_trans``.
    Source: McCallum et al. 2000; Su Jianlin, "CRF用过了，不妨再了解下更快的MEMM？", kexue.fm 7213;
    bert4keras 0.11.5 ``MaximumEntropyMarkovModel``.
    """

    def __init__(self, lr_multiplier=1, hidden_dim=None, **kwargs):
        super().__init__(lr_multiplier=lr_multiplier, **kwargs)
        self.hidden_dim = hidden_dim

    def build(self, input_shape):
        if self.hidden_dim is None:
            return super().build(input_shape)
        num_labels = _first_shape(input_shape)[-1]
        self._l_trans = self.add_weight(
            name="l_trans", shape=(num_labels, self.hidden_dim), initializer="glorot_uniform"
        )
        self._r_trans = self.add_weight(
            name="r_trans", shape=(num_labels, self.hidden_dim), initializer="glorot_uniform"
        )
        if self.lr_multiplier != 1:
            self._l_trans.assign(self._l_trans / self.lr_multiplier)
            self._r_trans.assign(self._r_trans / self.lr_multiplier)

    @property
    def trans(self):
        """The effective transition matrix ``(num_labels, num_labels)``, float32."""
        if self.hidden_dim is None:
            return super().trans
        l_trans = ops.cast(self._l_trans, "float32") * self.lr_multiplier
        r_trans = ops.cast(self._r_trans, "float32") * self.lr_multiplier
        return ops.matmul(l_trans, ops.transpose(r_trans))

    def _history_logits(self, y_true, y_pred, mask, go_backwards):
        trans = self.trans
        if go_backwards:
            lengths = ops.sum(ops.cast(mask, "int32"), axis=1)
            y_true, y_pred = _reverse_valid(y_true, lengths), _reverse_valid(y_pred, lengths)
            trans = ops.transpose(trans)
        history = ops.take(trans, y_true, axis=0)  # row of the label at t scores the label at t + 1
        history = ops.concatenate([y_pred[:, :1], history[:, :-1]], axis=1)
        return y_true, (y_pred + history) / 2

    def basic_loss(self, y_true, y_pred, go_backwards=False):
        """Mean token cross-entropy of one direction (int labels). Returns a float32 scalar."""
        y_pred = ops.cast(y_pred, "float32")
        mask = self._mask_of(y_pred)
        y_pred = ops.where(mask[..., None], y_pred, 0.0)
        y_true = self._sparse_labels(y_true, y_pred)
        y_true, logits = self._history_logits(y_true, y_pred, mask, go_backwards)
        loss = keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
        mask = ops.cast(mask, "float32")
        return ops.sum(loss * mask) / ops.maximum(ops.sum(mask), 1.0)

    def sparse_loss(self, y_true, y_pred):
        """Mean of the left-to-right and right-to-left losses, int labels ``(batch_size, seq_len)``."""
        return (self.basic_loss(y_true, y_pred, False) + self.basic_loss(y_true, y_pred, True)) / 2

    def dense_loss(self, y_true, y_pred):
        """`sparse_loss` with one-hot labels."""
        return self.sparse_loss(ops.argmax(y_true, axis=-1), y_pred)

    def basic_accuracy(self, y_true, y_pred, go_backwards=False):
        """Per-token accuracy of one direction given the true previous label (teacher forcing)."""
        y_pred = ops.cast(y_pred, "float32")
        mask = self._mask_of(y_pred)
        y_pred = ops.where(mask[..., None], y_pred, 0.0)
        y_true = self._sparse_labels(y_true, y_pred)
        y_true, logits = self._history_logits(y_true, y_pred, mask, go_backwards)
        equal = ops.cast(ops.equal(y_true, ops.cast(ops.argmax(logits, axis=-1), "int32")), "float32")
        mask = ops.cast(mask, "float32")
        return ops.sum(equal * mask) / ops.maximum(ops.sum(mask), 1.0)

    def sparse_accuracy(self, y_true, y_pred):
        """Mean of both directions' `basic_accuracy`, int labels."""
        return (self.basic_accuracy(y_true, y_pred, False) + self.basic_accuracy(y_true, y_pred, True)) / 2

    def dense_accuracy(self, y_true, y_pred):
        return self.sparse_accuracy(ops.argmax(y_true, axis=-1), y_pred)

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim}


@register
class Loss(NodeAccessors, keras.layers.Layer):
    """Base of layers that add a loss computed from several tensors of the model.

    For losses that are not a function of ``(y_true, y_pred)`` alone (e.g. a seq2seq
    cross-entropy masked by segment_ids, a contrastive loss over a batch): subclass, write
    ``compute_loss(inputs, mask=None)`` returning a scalar, call the layer on the tensors it
    needs (labels may enter the model as inputs), then ``model.compile(optimizer)`` without a
    loss. The layer adds the loss with `add_loss` and passes inputs through.

    Args:
        output_axis: None (return ``inputs`` unchanged), an int (return ``inputs[i]``) or a
            list of int (return those).
    Inputs: any tensor or list of tensors. Output: as selected by ``output_axis``.
    Source: bert4keras 0.11.5 ``Loss``.
    """

    def __init__(self, output_axis=None, **kwargs):
        super().__init__(**kwargs)
        self.output_axis = output_axis

    def call(self, inputs, mask=None):
        self.add_loss(self.compute_loss(inputs, mask))
        return self._select(inputs)

    def compute_loss(self, inputs, mask=None):
        """The scalar loss; write it in a subclass."""
        raise NotImplementedError

    def _select(self, values):
        if self.output_axis is None:
            return values
        if isinstance(self.output_axis, (list, tuple)):
            return [values[i] for i in self.output_axis]
        return values[self.output_axis]

    def compute_output_spec(self, inputs, mask=None):
        spec = keras.tree.map_structure(lambda x: keras.KerasTensor(x.shape, dtype=x.dtype), inputs)
        return self._select(spec)

    def compute_mask(self, inputs, mask=None):
        if mask is None or self.output_axis is None:
            return mask
        return self._select(mask)

    def get_config(self):
        return {**super().get_config(), "output_axis": self.output_axis}
