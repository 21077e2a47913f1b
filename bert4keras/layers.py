"""Keras 3 layers for transformers, written with `keras.ops` only (TensorFlow, JAX, PyTorch).

Every layer is serializable (`get_config`, registered under the ``bert4keras`` package) and
names its sublayers, so that a layer's weights come in a fixed order that the checkpoint
mappings in `models.py` rely on.
"""

import math

import keras
from keras import ops

from bert4keras.backend import (
    MASK_VALUE,
    apply_rotary_position_embeddings,
    get_activation,
    sinusoidal_embeddings,
    t5_relative_position_buckets,
)

register = keras.saving.register_keras_serializable(package="bert4keras")


@register
class Embedding(keras.layers.ReversibleEmbedding):
    """Token embedding whose table doubles as the tied output projection.

    ``mode='embedding'``: int token_ids ``(batch_size, seq_len)`` -> ``(batch_size, seq_len,
    output_dim)``. ``mode='dense'``: hidden states ``(batch_size, seq_len, output_dim)`` ->
    logits ``(batch_size, seq_len, input_dim)`` (multiplied by the transposed table), as
    bert4keras's ``Embedding(mode='dense')`` for the MLM head.
    Weights: ``embeddings`` of shape ``(input_dim, output_dim)``.
    """

    def __init__(self, input_dim, output_dim, **kwargs):
        kwargs.setdefault("tie_weights", True)
        super().__init__(input_dim, output_dim, **kwargs)

    def call(self, inputs, mode="embedding"):
        return super().call(inputs, reverse=(mode == "dense"))

    def compute_output_spec(self, inputs, mode="embedding"):
        return super().compute_output_spec(inputs, reverse=(mode == "dense"))


@register
class PositionEmbedding(keras.layers.Layer):
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

    def call(self, inputs):
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
            position_ids = ops.expand_dims(ops.arange(seq_len, dtype="int32"), 0)

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

    def compute_output_shape(self, input_shape):
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
class LayerNormalization(keras.layers.Layer):
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
                self.hidden_dense = keras.layers.Dense(
                    self.hidden_units,
                    activation=get_activation(self.hidden_activation),
                    use_bias=False,
                    kernel_initializer=self.hidden_initializer,
                    name="hidden_dense",
                )
                self.hidden_dense.build(cond_shape)
                cond_shape = cond_shape[:-1] + (self.hidden_units,)
            if self.center:
                self.beta_dense = keras.layers.Dense(
                    dim, use_bias=False, kernel_initializer="zeros", name="beta_dense"
                )
                self.beta_dense.build(cond_shape)
            if self.scale:
                self.gamma_dense = keras.layers.Dense(
                    dim, use_bias=False, kernel_initializer="zeros", name="gamma_dense"
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

    def compute_output_shape(self, input_shape):
        return input_shape[0] if self.conditional else input_shape

    def get_config(self):
        return {
            **super().get_config(),
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
class MultiHeadAttention(keras.layers.Layer):
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
            layer = keras.layers.Dense(
                units,
                use_bias=self.use_bias,
                kernel_initializer=self.kernel_initializer,
                name=name,
            )
            layer.build(shape)
            return layer

        q_shape, k_shape, v_shape = (tuple(shape) for shape in input_shape[:3])
        self.q_dense = dense(self.key_size * self.heads, "q_dense", q_shape)
        self.k_dense = dense(self.key_size * self.heads, "k_dense", k_shape)
        self.v_dense = dense(self.head_size * self.heads, "v_dense", v_shape)
        self.o_dense = dense(self.out_dim, "o_dense", v_shape[:-1] + (self.head_size * self.heads,))
        self.dropout = keras.layers.Dropout(self.attention_dropout, name="attention_dropout")

    def _split_heads(self, x, size):
        # (batch_size, seq_len, heads * size) -> (batch_size, seq_len, heads, size)
        return ops.reshape(x, (-1, ops.shape(x)[1], self.heads, size))

    def call(self, inputs, a_bias=None, p_bias=None, training=None):
        q, k, v = inputs[:3]
        extras = list(inputs[3:])
        position = extras.pop() if p_bias else None
        mask = extras[0] if extras else None
        qw = self._split_heads(self.q_dense(q), self.key_size)
        kw = self._split_heads(self.k_dense(k), self.key_size)
        vw = self._split_heads(self.v_dense(v), self.head_size)
        if p_bias == "rotary":
            qw, kw = apply_rotary_position_embeddings(position, qw, kw)
        scale = 1.0 / math.sqrt(self.key_size) if self.attention_scale else 1.0
        is_bool = mask is not None and "bool" in str(mask.dtype)
        bias = None if is_bool or mask is None else ops.cast(mask, "float32")
        if p_bias == "t5_relative":
            t5_bias = ops.expand_dims(ops.transpose(ops.cast(position, "float32"), (2, 0, 1)), 0)
            bias = t5_bias if bias is None else bias + t5_bias

        fused = (
            not self.return_attention_scores
            and self.key_size == self.head_size
            and p_bias != "typical_relative"
            and not (training and self.attention_dropout > 0)
        )
        if fused:
            if is_bool and bias is not None:  # some backends take a mask or a bias, not both
                bias = ops.where(mask, bias, MASK_VALUE)
                is_bool = False
            o = ops.dot_product_attention(
                qw,
                kw,
                vw,
                mask=mask if is_bool else None,
                bias=None if bias is None else ops.cast(bias, qw.dtype),
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
        if self.return_attention_scores:
            return [o, scores]
        return o

    def compute_output_shape(self, input_shape):
        q_shape, k_shape = input_shape[0], input_shape[1]
        o_shape = q_shape[:-1] + (self.out_dim,)
        if self.return_attention_scores:
            return [o_shape, (q_shape[0], self.heads, q_shape[1], k_shape[1])]
        return o_shape

    def get_config(self):
        return {
            **super().get_config(),
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
class FeedForward(keras.layers.Layer):
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

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        self.inner_denses = []
        for i, activation in enumerate(self.activation):
            layer = keras.layers.Dense(
                self.units,
                activation=get_activation(activation),
                use_bias=self.use_bias,
                kernel_initializer=self.kernel_initializer,
                name=f"i{i}_dense",
            )
            layer.build(input_shape)
            self.inner_denses.append(layer)
        self.o_dense = keras.layers.Dense(
            input_shape[-1],
            use_bias=self.use_bias,
            kernel_initializer=self.kernel_initializer,
            name="o_dense",
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
            **super().get_config(),
            "units": self.units,
            "activation": activation,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }


@register
class BiasAdd(keras.layers.Layer):
    """Adds a trainable bias vector on the last axis (bert4keras's ``MLM-Bias``).

    Input shape: ``(..., dim)``. Output shape: the same. Weights: ``bias`` ``(dim,)``.
    """

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, inputs):
        return inputs + self.bias

    def compute_output_shape(self, input_shape):
        return input_shape


@register
class TakeToken(keras.layers.Layer):
    """Selects one position of a sequence: ``(batch_size, seq_len, dim) -> (batch_size, dim)``.

    Used as bert4keras's ``Pooler`` (index 0, the [CLS] token) instead of a Lambda layer.
    """

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = index

    def call(self, inputs):
        return inputs[:, self.index]

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[2:])

    def get_config(self):
        return {**super().get_config(), "index": self.index}


@register
class AttentionMask(keras.layers.Layer):
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
    """

    def __init__(self, mode="padding", pad_id=0, **kwargs):
        super().__init__(**kwargs)
        if mode not in ("padding", "causal", "unilm", "context"):
            raise ValueError(f"AttentionMask: unknown mode {mode!r}")
        self.mode = mode
        self.pad_id = pad_id

    def call(self, inputs):
        if self.mode == "unilm":
            token_ids, segment_ids = inputs
        else:
            token_ids = inputs
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

    def compute_output_spec(self, inputs):
        token_ids = inputs[0] if self.mode == "unilm" else inputs
        batch_size, seq_len = token_ids.shape[:2]
        q_len = 1 if self.mode in ("padding", "context") else seq_len
        return keras.KerasTensor((batch_size, 1, q_len, seq_len), dtype="bool")

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "pad_id": self.pad_id}


@register
class SequenceMasking(keras.layers.Layer):
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

    def compute_output_shape(self, input_shape):
        return input_shape[0]

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


@register
class SinusoidalPositionEmbedding(keras.layers.Layer):
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

    def call(self, inputs):
        if self.custom_position_ids:
            inputs, position_ids = inputs
        else:
            position_ids = ops.arange(ops.shape(inputs)[1])[None]
        embeddings = ops.cast(sinusoidal_embeddings(position_ids, self.output_dim), inputs.dtype)
        embeddings = ops.broadcast_to(embeddings, ops.shape(inputs)[:2] + (self.output_dim,))
        if self.merge_mode == "add":
            return inputs + embeddings
        if self.merge_mode == "mul":
            return inputs * (embeddings + 1.0)
        if self.merge_mode == "zero":
            return embeddings
        return ops.concatenate([inputs, embeddings], axis=-1)

    def compute_output_shape(self, input_shape):
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
class Sinusoidal(keras.initializers.Initializer):
    """Initializer: row ``p`` of a ``(rows, dim)`` table is ``[sin(p w_0), cos(p w_0), ...]``."""

    def __call__(self, shape, dtype=None):
        table = sinusoidal_embeddings(ops.arange(shape[0]), shape[1])
        return ops.cast(table, dtype or "float32")


@register
class RelativePositionEmbedding(keras.layers.Layer):
    """Clipped relative position embedding of Shaw et al. 2018, as used by NEZHA.

    Row ``clip(j - i, -m, m) + m`` of an ``(input_dim = 2m + 1, output_dim)`` table for query
    position ``i`` and key position ``j``; NEZHA (Wei et al. 2019) uses m = 64 and a fixed
    sinusoidal table (``embeddings_initializer=Sinusoidal()``, ``trainable=False``).
    Inputs: ``[q, k]`` ``(batch_size, q_len, ...)``, ``(batch_size, k_len, ...)``.
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

    def compute_position_ids(self, inputs):
        q, k = inputs
        q_idxs = ops.arange(ops.shape(q)[1])
        k_idxs = ops.arange(ops.shape(k)[1])
        max_distance = (self.input_dim - 1) // 2
        relative = ops.clip(k_idxs[None, :] - q_idxs[:, None], -max_distance, max_distance)
        return relative + max_distance

    def call(self, inputs):
        return ops.take(self.embeddings, self.compute_position_ids(inputs), axis=0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][1], input_shape[1][1], self.output_dim)

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

    def compute_position_ids(self, inputs):
        q, k = inputs
        q_idxs = ops.arange(ops.shape(q)[1])
        k_idxs = ops.arange(ops.shape(k)[1])
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
