"""Transformer model builders and their checkpoint mappings.

Owns: the `Transformer` base (inputs, layer cache, weight loading/saving), one class per model
family with its `variable_mapping()` (official TF checkpoint names) beside its
`hf_variable_mapping()` (Hugging Face safetensors names), config reading, and
`build_transformer_model`. File formats live in `checkpoints.py`.
"""

import copy
import difflib
import functools
import inspect
import json
import os
import warnings

import keras
import numpy as np
from keras import ops

from bert4keras import _keras_internals as internals
from bert4keras.backend import check_token_ids, get_activation, unchecked_ids
from bert4keras.checkpoints import (
    CheckpointReader,
    T,
    Var,
    as_var,
    collect_stored,
    count_nonfinite,
    write_tf_checkpoint,
)
from bert4keras.generation import CachedPredictor, FullPredictor, build_step_model
from bert4keras.lora import DEFAULT_TARGETS, base_weights, checkpoint_weights, enable_lora
from bert4keras.layers import (
    Activation,
    Add,
    AttentionMask,
    BiasAdd,
    Dense,
    Dropout,
    Embedding,
    FeedForward,
    LayerNormalization,
    MultiHeadAttention,
    PositionEmbedding,
    RelativePositionEmbedding,
    RelativePositionEmbeddingT5,
    Rescaling,
    SequenceMasking,
    Sinusoidal,
    SinusoidalPositionEmbedding,
    TakeToken,
)


class Transformer:
    """Base builder: inputs, a cache of named layers, and checkpoint loading/saving.

    Subclasses define `get_inputs`, `apply_embeddings`, `apply_main_layers`,
    `apply_final_layers`, `variable_mapping` and `hf_variable_mapping`. Layers are created
    once per name by `apply`, so a layer's name is also its key in the mappings.

    Args:
        vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size:
            int sizes (Google BERT config names).
        hidden_act: activation of the feed-forward block (``'gelu'`` = erf form,
            ``'gelu_new'`` = tanh form; a list gives a gated block).
        dropout_rate, attention_dropout_rate: float.
        embedding_size: int, defaults to hidden_size.
        attention_head_size, attention_key_size: int, default ``hidden_size // heads``.
        sequence_length: int or None, static input length.
        keep_tokens: list of int, rows of the checkpoint's vocabulary to keep (in that order).
        compound_tokens: list of lists of int (ids after ``keep_tokens``); appends rows equal
            to the mean of those rows.
        layer_norm_epsilon: float (default: the family's).
        pad_token_id: int or None, the padding id masked out of attention (default: the
            family's; None = no padding mask).
        initializer_range: float, stddev of the truncated-normal initializer.
        application: ``'encoder'``, ``'lm'`` (causal mask) or ``'unilm'`` (seq2seq mask).
        ignore_invalid_weights: bool, warn instead of raising on missing/mis-shaped variables.
        layers: dict of already-built layers to share (T5's encoder and decoder).
        prefix: str, prepended to the name of every layer and input (two models side by side,
            e.g. BERT-of-Theseus's ``'Predecessor-'`` and ``'Successor-'``); the checkpoint
            mappings keep the unprefixed names.
        name: str, the Keras model's name.
    Attributes after `build`: ``model``; ``inputs``/``input`` and ``outputs``/``output`` (the
    model's, a list and its single element when there is one, as bert4keras 0.11.5).
    Inputs are float32, as bert4keras 0.11.5's (floatx) inputs were, so that scripts may do
    float arithmetic with token and segment ids (e.g. a loss multiplied by ``segment_ids``);
    layers cast them to int where they index. float32 rather than floatx keeps every id exact
    whatever ``floatx`` is.
    """

    default_layer_norm_epsilon = 1e-12
    default_pad_token_id = 0
    hf_prefixes = ()
    #: applications this family can be built for (its own mask decides the rest).
    applications = ("encoder", "lm", "unilm")

    def __init__(
        self,
        vocab_size,
        hidden_size,
        num_hidden_layers,
        num_attention_heads,
        intermediate_size,
        hidden_act,
        dropout_rate=None,
        attention_dropout_rate=None,
        embedding_size=None,
        attention_head_size=None,
        attention_key_size=None,
        sequence_length=None,
        keep_tokens=None,
        compound_tokens=None,
        layer_norm_epsilon=None,
        pad_token_id="default",
        initializer_range=0.02,
        application="encoder",
        ignore_invalid_weights=False,
        layers=None,
        prefix=None,
        name=None,
        **kwargs,
    ):
        if keep_tokens is not None:
            keep_tokens = [int(i) for i in keep_tokens]
            vocab_size = len(keep_tokens)
        if compound_tokens is not None:
            compound_tokens = [[int(i) for i in ids] for ids in compound_tokens]
            vocab_size += len(compound_tokens)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.attention_head_size = attention_head_size or hidden_size // num_attention_heads
        self.attention_key_size = attention_key_size or self.attention_head_size
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.dropout_rate = dropout_rate or 0.0
        self.attention_dropout_rate = attention_dropout_rate or 0.0
        self.embedding_size = embedding_size or hidden_size
        self.sequence_length = sequence_length
        self.keep_tokens = keep_tokens
        self.compound_tokens = compound_tokens
        self.layer_norm_epsilon = layer_norm_epsilon or self.default_layer_norm_epsilon
        self.pad_token_id = self.default_pad_token_id if pad_token_id == "default" else pad_token_id
        self.initializer_range = initializer_range
        if application not in self.applications:
            raise ValueError(
                f"model {type(self).__name__} cannot be built with application={application!r}; "
                f"it supports {list(self.applications)}."
            )
        self.application = application
        self.ignore_invalid_weights = ignore_invalid_weights
        self.name = name
        self.prefix = prefix or ""
        self.layers = {} if layers is None else layers
        self.position_bias = None
        self.decoding_step = None  # a `generation.DecodingStep` in a cached step's graph
        self.built = False

    @property
    def initializer(self):
        return keras.initializers.TruncatedNormal(stddev=self.initializer_range)

    def build(
        self,
        layer_norm_cond=None,
        layer_norm_cond_hidden_size=None,
        layer_norm_cond_hidden_act=None,
        additional_input_layers=None,
        **kwargs,
    ):
        """Create the Keras model as ``self.model`` (inputs -> embeddings -> blocks -> heads).

        Args:
            layer_norm_cond: optional tensor ``(batch_size, cond_size)`` (or per position)
                conditioning every LayerNormalization (Conditional Layer Normalization,
                Su Jianlin, kexue.fm 7124), e.g. a class embedding of an extra input.
            layer_norm_cond_hidden_size, layer_norm_cond_hidden_act: an optional Dense applied
                to the condition inside each norm.
            additional_input_layers: Keras inputs to add to the model's inputs (those that
                ``layer_norm_cond`` is computed from).
        """
        if self.built:
            return
        self.layer_norm_conds = [
            layer_norm_cond,
            layer_norm_cond_hidden_size,
            layer_norm_cond_hidden_act or "linear",
        ]
        inputs = self.get_inputs()
        if additional_input_layers is not None:
            extra = additional_input_layers
            inputs = inputs + (list(extra) if isinstance(extra, (list, tuple)) else [extra])
        self.set_inputs(inputs)
        x = self.apply_embeddings(self.inputs)
        for index in range(self.num_hidden_layers):
            x = self.apply_main_layers(x, index)
        self.set_outputs(self.apply_final_layers(x))
        self.model = TransformerModel(self.input, self.output, name=self.name)
        self.built = True

    def set_inputs(self, inputs):
        """``inputs`` (a list) and ``input`` (the single input, or the list)."""
        self.inputs = list(inputs)
        self.input = self.inputs[0] if len(self.inputs) == 1 else self.inputs

    def set_outputs(self, outputs):
        """``outputs`` (a list) and ``output`` (the single output, or the list)."""
        self.outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
        self.output = self.outputs[0] if len(self.outputs) == 1 else self.outputs

    def apply(self, inputs=None, layer=None, arguments=None, **kwargs):
        """Call the layer named ``kwargs['name']`` on ``inputs``, creating it on first use.

        Dropout with rate 0 is skipped. ``inputs=None`` returns the layer itself.
        """
        if layer is Dropout and not kwargs.get("rate"):
            return inputs
        name = kwargs["name"]
        if name not in self.layers:
            self.layers[name] = layer(**dict(kwargs, name=self.prefix + name))
        if inputs is None:
            return self.layers[name]
        return self.layers[name](inputs, **(arguments or {}))

    def input(self, name, shape=None, dtype="float32"):
        shape = (self.sequence_length,) if shape is None else shape
        if name not in self.layers:
            self.layers[name] = keras.Input(shape=shape, dtype=dtype, name=self.prefix + name)
        return self.layers[name]

    def apply_embeddings(self, inputs):
        """The embeddings of ``inputs`` (tensors as `get_inputs` gives), ``(batch_size, seq_len,
        hidden_size)``.

        Also computes the attention mask for these inputs (and forgets the position bias of
        earlier ones), so that `apply_main_layers` can then run on other tensors than the
        model's own inputs: BERT-of-Theseus builds a new graph from
        ``predecessor.apply_embeddings(inputs)`` and ``successor.apply_main_layers(x, i)``.
        """
        self.position_bias = None
        self.attention_mask = self.compute_attention_mask(inputs)
        return self.embed(inputs)

    def embed(self, inputs):
        """The family's embedding layers (token, segment, position, norm, ...)."""
        raise NotImplementedError

    def compute_attention_mask(self, inputs):
        """Boolean mask ``(batch_size, 1, q_len or 1, k_len)`` for `self.application`."""
        mode = {"encoder": "padding", "lm": "causal", "unilm": "unilm"}[self.application]
        mask_inputs = inputs[:2] if mode == "unilm" else inputs[0]
        return self.apply(
            inputs=mask_inputs,
            layer=AttentionMask,
            arguments=self.decoding_arguments(key_length=True),
            mode=mode,
            pad_id=self.pad_token_id,
            name="Attention-Mask",
        )

    # -- incremental decoding (the steps themselves: bert4keras.generation) --------------------

    @property
    def supports_cache(self):
        """Whether `predictor(max_length)` can cache: causal (``lm``) or ``unilm`` attention."""
        return self.application in ("lm", "unilm")

    def decoding_arguments(self, key_length=False):
        """Call arguments of the position and mask layers: in a cached step's graph the chunk's
        first position ``start_index`` (and the cache length ``key_length``) of
        `self.decoding_step`; {} in the model's own graph."""
        step = self.decoding_step
        if step is None:
            return {}
        if key_length:
            return {"start_index": step.index, "key_length": step.key_length}
        return {"start_index": step.index}

    def cached_attention(self, inputs, arguments, self_attention=True, **kwargs):
        """`MultiHeadAttention` through `apply`; in a cached step's graph a self-attention also
        takes its block's KV cache from `self.decoding_step` and hands the updated one back."""
        step = self.decoding_step
        if step is None or not (self_attention or step.cross_caches):
            return self.apply(inputs=inputs, layer=MultiHeadAttention, arguments=arguments, **kwargs)
        if not self_attention:  # the block's cross-attention keys/values, computed once per source
            arguments = dict(arguments, cache=step.cross_caches[step.block])
            return self.apply(inputs=inputs, layer=MultiHeadAttention, arguments=arguments, **kwargs)[0]
        arguments = dict(arguments, cache=step.cache(), cache_index=step.index)
        o, cache = self.apply(inputs=inputs, layer=MultiHeadAttention, arguments=arguments, **kwargs)
        step.update(cache)
        return o

    def cross_attention_layers(self):
        """The cross-attention layer of each block, whose keys and values a cached step computes
        once per source (`MultiHeadAttention.key_value_cache` of the first input); [] without."""
        return []

    def cache_shapes(self, max_length):
        """Shapes (without batch) of the KV caches, one per Transformer block."""
        if self.attention_key_size != self.attention_head_size:
            raise ValueError("Incremental decoding needs attention_key_size == attention_head_size.")
        shape = (2, int(max_length), self.num_attention_heads, self.attention_head_size)
        return [shape] * self.num_hidden_layers

    def call_builder(self, inputs, step=None):
        """Run the builder's graph again on other ``inputs`` (tensors as `get_inputs`), reusing
        every layer (and weight); returns the final output.

        It runs on a shallow copy sharing `layers`, so the builder's own graph state (``inputs``,
        ``attention_mask``, ``position_bias``) stays as it is. ``step``: a
        `generation.DecodingStep`, to build a cached step (its ``block`` is set before each block).
        """
        builder = copy.copy(self)
        builder.decoding_step = step
        builder.set_inputs(inputs)
        x = builder.apply_embeddings(builder.inputs)
        for index in range(self.num_hidden_layers):
            if step is not None:
                step.block = index
            x = builder.apply_main_layers(x, index)
        return builder.apply_final_layers(x)

    def build_cache_model(self, max_length):
        """The cached step as a functional Keras model over this builder's layers (see
        `generation.build_step_model`: inputs and outputs by name, caches included).

        Raises:
            ValueError: the model is not causal (``application`` not ``'lm'``/``'unilm'``).
        """
        return build_step_model(self, max_length)

    def predictor(self, max_length=None):
        """``predict(inputs, output_ids, states)`` for `AutoRegressiveDecoder`.

        With ``max_length`` and a causal model, a `generation.CachedPredictor` (KV cache, states
        carry it; use ``wraps(use_states=True)``); otherwise a `generation.FullPredictor` that
        recomputes the whole prefix each step. Both return the last position's output.
        """
        if max_length is not None and self.supports_cache:
            return CachedPredictor(self, max_length)
        return FullPredictor(self)

    def chunk_inputs(self, inputs, output_ids, first):
        """The model inputs for the tokens to run now: all of the prompt and ``output_ids`` at
        the first step, the last output token afterwards."""
        token_ids = np.concatenate([inputs[0], output_ids], 1) if first else output_ids[:, -1:]
        return [token_ids.astype("int32")]

    def compute_position_bias(self, x):
        """The position tensor given to every attention layer (None for absolute positions)."""
        return None

    # -- weights ------------------------------------------------------------------------------

    def variable_mapping(self):
        """``{layer name: [Var or name, ...]}`` in the order of ``layer.weights``, official names."""
        return {}

    def hf_variable_mapping(self):
        """The same as `variable_mapping`, with Hugging Face safetensors names."""
        return {}

    def mapping_for(self, reader):
        """The mapping matching the checkpoint's format (families with several override)."""
        return self.variable_mapping() if reader.format == "tf" else self.hf_variable_mapping()

    def load_embeddings(self, embeddings, axis=0):
        """Apply ``keep_tokens`` and ``compound_tokens`` along the vocabulary axis."""
        embeddings = np.moveaxis(embeddings, axis, 0)
        if self.keep_tokens is not None:
            out_of_range = [i for i in self.keep_tokens if not 0 <= i < embeddings.shape[0]]
            if out_of_range:
                raise ValueError(
                    f"keep_tokens has ids {out_of_range[:5]} outside the checkpoint's vocabulary "
                    f"of {embeddings.shape[0]} rows."
                )
            embeddings = embeddings[self.keep_tokens]
        if self.compound_tokens is not None:
            rows = [np.mean(embeddings[ids], axis=0) for ids in self.compound_tokens]
            embeddings = np.concatenate([embeddings, np.stack(rows)], axis=0)
        return np.moveaxis(embeddings, 0, axis)

    def load_variable(self, reader, var):
        value = var.to_weight(reader[var.name])
        if var.vocab is not None:
            value = self.load_embeddings(value, var.vocab)
        return value

    def load_weights_from_checkpoint(self, checkpoint, mapping=None, allow_pickle=False, allow_nonfinite=False):
        """Load an official TF checkpoint or HF safetensors into the model.

        Variables of the checkpoint that the mapping does not name (optimizer slots,
        ``global_step``, heads the model was built without) are ignored.

        Args:
            checkpoint: path (see `CheckpointReader`).
            mapping: optional ``{layer name: [names]}`` overriding the family's mapping.
            allow_pickle: read a PyTorch ``.bin``/``.pt`` file with
                ``torch.load(weights_only=True)`` instead of refusing it (default False).
            allow_nonfinite: load variables holding NaN or +-Inf (after the cast to the
                weight's dtype) with one warning naming them, instead of refusing them
                (default False: such a weight makes every output NaN).
        Raises:
            ValueError: a variable is missing or has the wrong shape (message names the
                variable, the layer, the expected and found shapes), unless
                ``ignore_invalid_weights=True`` made it a warning and the weight was skipped;
                when none of the family's variables is in the checkpoint, the message says so
                and quotes some of the checkpoint's names (a checkpoint of another family);
                a variable holds NaN/Inf values (named, with their count) and
                ``allow_nonfinite`` is False; a pickle file without ``allow_pickle=True``.
            FileNotFoundError: nothing readable at ``checkpoint``.
        """
        reader = CheckpointReader(checkpoint, strip_prefixes=self.hf_prefixes, allow_pickle=allow_pickle)
        mapping = self.mapping_for(reader) if mapping is None else mapping
        expected = [as_var(v).name for k, specs in mapping.items() if k in self.layers for v in specs]
        if expected and not any(name in reader for name in expected):
            found = sorted(reader.names())[:3]
            family_hint = (
                f" None of the {len(expected)} variables {type(self).__name__} expects is in this "
                f"checkpoint (it holds e.g. {found}): is it a checkpoint of another model family? "
                "Check model=."
            )
        else:
            family_hint = ""
        nonfinite = []
        for layer_name, specs in mapping.items():
            if layer_name not in self.layers:
                continue
            weights = base_weights(self.layers[layer_name])  # LoRA adapters are not in checkpoints
            for weight, spec in zip(weights, map(as_var, specs)):
                problem = None
                if spec.name not in reader:
                    problem = (
                        f"Variable '{spec.name}' (for weight '{weight.path}' of layer "
                        f"'{layer_name}') not found in checkpoint '{reader.path}'."
                    )
                else:
                    value = self.load_variable(reader, spec)
                    if tuple(value.shape) != tuple(weight.shape):
                        problem = (
                            f"Variable '{spec.name}' in checkpoint '{reader.path}' has shape "
                            f"{tuple(value.shape)} after mapping, but weight '{weight.path}' of "
                            f"layer '{layer_name}' expects {tuple(weight.shape)}."
                        )
                if problem:
                    if self.ignore_invalid_weights:
                        warnings.warn(problem + " Skipped (ignore_invalid_weights=True).")
                        continue
                    raise ValueError(problem + family_hint)
                with np.errstate(over="ignore"):  # an overflow to Inf is reported below
                    cast = value.astype(weight.dtype)
                bad = count_nonfinite(cast)
                if bad:
                    stored = count_nonfinite(value)
                    found = (
                        f"Variable '{spec.name}' in checkpoint '{reader.path}' (for weight '{weight.path}' "
                        f"of layer '{layer_name}') has {bad} non-finite value(s) (NaN or Inf) out of "
                        f"{cast.size}"
                        + ("" if stored == bad else f", {bad - stored} of them overflowing the cast from "
                           f"{value.dtype} to {weight.dtype}")
                    )
                    if not allow_nonfinite:
                        raise ValueError(
                            found + ": every output of the model would be NaN. Re-download or re-export "
                            "the checkpoint (a diverged training run saves NaN), or load it anyway with "
                            "allow_nonfinite=True (build_transformer_model(..., allow_nonfinite=True))."
                        )
                    nonfinite.append(found)
                weight.assign(cast)
        if nonfinite:
            warnings.warn(
                f"Loaded {len(nonfinite)} variable(s) with non-finite values (allow_nonfinite=True): "
                + "; ".join(nonfinite[:3]) + ("; ..." if len(nonfinite) > 3 else "") + "."
            )

    def save_weights_as_checkpoint(self, filename, mapping=None, dtype=None):
        """Write the weights as an official-format TF1 checkpoint (atomic; see `write_tf_checkpoint`).

        Args:
            filename: checkpoint prefix, e.g. ``out/bert_model.ckpt`` (files
                ``out/bert_model.ckpt.index`` and ``.data-*``), or a directory (an existing
                one, or a path ending with a separator such as ``'out_dir/'``): then the
                checkpoint is ``out_dir/model.ckpt``, and ``out_dir``'s TF ``checkpoint`` state
                file points at it, so the directory loads as a checkpoint path.
            mapping: optional override of `variable_mapping()` (e.g. GPT-2's
                `openai_variable_mapping()`).
            dtype: optional NumPy dtype to cast to (default: the weights' dtype).
        Returns:
            str, the prefix written.
        """
        mapping = self.variable_mapping() if mapping is None else mapping
        pairs = []
        for layer_name, specs in mapping.items():
            if layer_name not in self.layers:
                continue
            # LoRA adapters merged into their kernels
            for (_, value), spec in zip(checkpoint_weights(self.layers[layer_name]), map(as_var, specs)):
                pairs.append((spec, value.astype(dtype) if dtype else value))
        return write_tf_checkpoint(filename, collect_stored(pairs))


@keras.saving.register_keras_serializable(package="bert4keras")
class TransformerModel(keras.Model):
    """The functional `keras.Model` of a builder (``build_transformer_model(...)``, ``.model``).

    The same graph, weights and config as ``keras.Model(inputs, outputs)``, with two guards on
    `predict`, `fit`, `evaluate` and the ``*_on_batch`` methods:

    - Array inputs (NumPy arrays, nested lists) are checked before Keras runs: a ragged list
      (rows of different lengths; pad with `bert4keras.snippets.sequence_padding`), an empty
      batch, token and segment ids of different lengths, ids outside an embedding's rows and
      sequences longer than ``max_position`` raise ValueError naming the input. (The embedding layers check ids on every call too, see
      `bert4keras.backend.checked_ids`; this gives the plain message before any compiled code.)
    - On JAX, Keras' trainer detaches the weights from the variables while it runs and leaves them
      detached when a step raises, so every later call fails with ``'NoneType' object is not
      callable``. After a failed call the weights are put back (the last synced state, else the
      state before the call; optimizer slots Keras created in the failed call start at zero).
      On every backend the compiled functions are dropped after a failed call (TensorFlow
      otherwise refuses the next ``fit``: "Creating variables on a non-first call").

    Inputs given as datasets, generators or backend tensors reach Keras unchecked here.
    Raises: ValueError as above; whatever Keras raises otherwise.
    """

    @functools.cached_property
    def _id_inputs(self):
        """``{input index: (input name, rows)}`` (read once from the graph, which does not change)."""
        return id_inputs(self)

    @functools.cached_property
    def _max_position(self):
        """The smallest absolute position table's size, or None (relative positions only)."""
        limits = [layer.input_dim for layer in self.layers if isinstance(layer, PositionEmbedding)
                  and not layer.hierarchical and not layer.custom_position_ids]
        return min(limits) if limits else None

    def _check_inputs(self, x):
        if not isinstance(x, (list, tuple, np.ndarray)) or not self.inputs:
            return
        n = len(self.inputs)
        if n == 1:
            values = [x[0]] if isinstance(x, (list, tuple)) and len(x) == 1 and isinstance(x[0], np.ndarray) else [x]
        elif isinstance(x, (list, tuple)) and len(x) == n:
            values = list(x)
        else:
            return
        arrays = {}
        for i, value in enumerate(values):
            name = self.inputs[i].name
            if not isinstance(value, (list, tuple, np.ndarray)):
                continue
            try:
                array = np.asarray(value)
            except ValueError:
                array = np.asarray(value, dtype=object)
            if array.dtype == object:
                lengths = _row_lengths(value)
                raise ValueError(
                    f"Input '{name}' is a ragged list (row lengths {lengths}): pad it to one length with "
                    "bert4keras.snippets.sequence_padding (and the other inputs to the same length)."
                )
            if array.ndim and array.shape[0] == 0:
                raise ValueError(f"Input '{name}' is an empty batch (shape {array.shape}): give at least one sample.")
            arrays[i] = array
        limit = self._max_position
        for i, (name, rows) in self._id_inputs.items():
            if i in arrays:
                check_token_ids(arrays[i], rows, name=f"Input '{name}'")
                if limit and arrays[i].ndim == 2 and arrays[i].shape[1] > limit:
                    raise ValueError(f"Input '{name}': sequence length {arrays[i].shape[1]} exceeds max_position "
                                     f"{limit}: truncate the texts (e.g. tokenizer.encode(text, maxlen=...)).")
        by_name = {self.inputs[i].name: a for i, a in arrays.items()}
        for token_name, array in by_name.items():
            if token_name.endswith("Input-Token"):
                segment_name = token_name[: -len("Token")] + "Segment"
                other = by_name.get(segment_name)
                if other is not None and array.shape[:2] != other.shape[:2]:
                    raise ValueError(
                        f"Inputs '{token_name}' and '{segment_name}' must have the same (batch_size, seq_len), "
                        f"got {array.shape[:2]} and {other.shape[:2]}: pad both with sequence_padding."
                    )

    def _guarded(self, method, x, *args, **kwargs):
        self._check_inputs(x)
        jax = keras.backend.backend() == "jax"
        variables = self._state_variables() if jax else []
        values = [internals.variable_value(v) for v in variables]  # JAX arrays are immutable: references suffice
        try:
            return method(x, *args, **kwargs)
        except BaseException:
            # A failed trace stays cached (TensorFlow then refuses to create the optimizer's
            # variables on a "non-first call"): the next call compiles afresh.
            self.train_function = self.test_function = self.predict_function = None
            if not jax:
                raise
            self.jax_state_sync()
            saved = {id(v): value for v, value in zip(variables, values)}
            for v in self._state_variables():
                if internals.variable_value(v) is None:
                    value = saved.get(id(v))
                    if value is None:  # created by the failed call
                        value = ops.zeros(v.shape, v.dtype)
                    internals.set_variable_value(v, value)
            raise

    def _state_variables(self):
        optimizer = getattr(self, "optimizer", None)
        extra = list(optimizer.variables) if optimizer is not None and optimizer.built else []
        return list(self.variables) + extra + list(self.metrics_variables)

    def predict(self, x, *args, **kwargs):
        return self._guarded(super().predict, x, *args, **kwargs)

    def fit(self, x=None, *args, **kwargs):
        return self._guarded(super().fit, x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        return self._guarded(super().evaluate, x, *args, **kwargs)

    def predict_on_batch(self, x):
        return self._guarded(super().predict_on_batch, x)

    def train_on_batch(self, x, *args, **kwargs):
        return self._guarded(super().train_on_batch, x, *args, **kwargs)

    def test_on_batch(self, x, *args, **kwargs):
        return self._guarded(super().test_on_batch, x, *args, **kwargs)

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, **kwargs):
        """Keras' `Model.export`; a TF SavedModel gets our serving signature (see `export_saved_model`)."""
        if format == "tf_saved_model" and input_signature is None:
            return export_saved_model(self, filepath, verbose=verbose, **kwargs)
        return super().export(filepath, format=format, verbose=verbose, input_signature=input_signature, **kwargs)

    def quantize(self, mode=None, config=None, filters=None, **kwargs):
        """Keras' `Model.quantize` (``'int8'``, ``'int4'``, ``'float8'``, ...) over the layers that
        can be quantized: the Dense layers (inside attention and feed-forward blocks too), the
        token embeddings and, tied to them, the LM head; norms, position tables and the like
        stay in float. Without ``filters`` the layers Keras cannot quantize (inputs) are skipped
        instead of warned about one by one. A quantized model saves and reloads as ``.keras``.
        """
        if filters is None:
            filters = quantizable
        return super().quantize(mode, config=config, filters=filters, **kwargs)


def id_inputs(model):
    """``{input index: (input name, rows)}`` for the inputs of a functional ``model`` that feed an
    `Embedding` directly (token ids, segment ids, ...)."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, Embedding):
            for node in internals.inbound_nodes(layer):
                for i, x in enumerate(model.inputs):
                    if not node.is_input and node.arguments.args and node.arguments.args[0] is x:
                        found[i] = (x.name, layer.input_dim)
    return found


def export_saved_model(model, filepath, verbose=None, **kwargs):
    """Export a functional model built from ours (the `TransformerModel`, or a classifier composed
    around it) as a TF SavedModel for serving (TensorFlow and JAX backends), via Keras' `export`.

    The serving signature (``serving_default``, also the ``serve`` endpoint) takes the inputs by
    Keras' sanitised names (``Input_Token``, ``Input_Segment``, ...): the inputs that hold ids as
    int32 ``(batch_size, seq_len)``, other inputs (T5's decoder context) in their own dtype. On JAX
    inputs of one group share one symbolic length (BERT's token and segment ids; T5's encoder and
    decoder ids apart; jax2tf otherwise treats them as unrelated lengths and refuses to add the
    token and segment embeddings) and ids are not
    checked inside the exported graph (it cannot call back to Python; TensorFlow's keeps its
    assertion). Load it with ``tf.saved_model.load(path)``; bert4keras is not needed there.

    Args:
        model: a built functional `keras.Model`. filepath: the SavedModel directory.
        **kwargs: passed to `keras.Model.export` (e.g. ``jax2tf_kwargs``).
    Raises:
        NotImplementedError: on the torch backend, whose SavedModel export needs torch_xla
            (StableHLO), which has no wheel for the pinned CPU torch; export from TensorFlow or
            JAX (the weights are the same: ``model.save_weights`` and load them there).
    """
    backend = keras.backend.backend()
    if backend == "torch":
        raise NotImplementedError(
            "A TF SavedModel cannot be exported from the torch backend here: Keras does it through torch_xla "
            "(StableHLO), which has no wheel for the pinned CPU torch. Save the weights "
            "(model.save_weights('m.weights.h5')) and export from KERAS_BACKEND=tensorflow or jax."
        )
    ids = id_inputs(model)
    specs = [
        keras.InputSpec(shape=(None,) + tuple(x.shape[1:]), dtype="int32" if i in ids else x.dtype, name=x.name)
        for i, x in enumerate(model.inputs)
    ]
    input_signature = [specs if len(specs) > 1 else specs[0]]
    if backend != "jax":
        return keras.Model.export(model, filepath, format="tf_saved_model", verbose=verbose,
                                  input_signature=input_signature, **kwargs)
    if "jax2tf_kwargs" not in kwargs:
        shapes = [_polymorphic_shape(x) for x in model.inputs]
        kwargs["jax2tf_kwargs"] = {"polymorphic_shapes": [shapes if len(shapes) > 1 else shapes[0]]}
    with unchecked_ids():
        return keras.Model.export(model, filepath, format="tf_saved_model", verbose=verbose,
                                  input_signature=input_signature, **kwargs)


def _polymorphic_shape(x):
    """jax2tf's shape of input ``x``: inputs named ``<group>Input-...`` (BERT's ``Input-Token`` and
    ``Input-Segment``; T5's ``Encoder-Input-Token`` apart from ``Decoder-Input-Token``) share one
    symbolic length per group, other unknown dimensions get their own."""
    group = x.name.split("Input-")[0] if "Input-" in x.name else x.name
    prefix = "".join(c if c.isalnum() else "_" for c in group).lower()
    dims = ["batch"] + [str(d) if d is not None else f"{prefix}len{i}" for i, d in enumerate(x.shape[1:])]
    return "(" + ", ".join(dims) + ")"


def quantizable(layer):
    """Whether ``layer`` implements Keras' `quantize` (Dense, Embedding, ..., and ours): a
    ``filters`` for `Model.quantize` on a model composed around ours, e.g.
    ``classifier.quantize('int8', filters=quantizable)``, so that Keras does not warn once per
    input or dropout layer."""
    return type(layer).quantize is not keras.layers.Layer.quantize


def _row_lengths(value, limit=6):
    """The first lengths of a nested list's rows, for a message."""
    lengths = [len(row) if hasattr(row, "__len__") else None for row in list(value)[:limit]]
    return lengths + ["..."] if len(value) > limit else lengths


class BERT(Transformer):
    """BERT (Devlin et al. 2018), post-LayerNorm encoder; Google's official checkpoint names.

    Extra args:
        max_position: int, number of absolute positions.
        segment_vocab_size: int, 0 removes the segment input.
        with_pool: bool or activation, adds the [CLS] ``Pooler-Dense`` (tanh by default).
        with_nsp: bool or activation, adds next-sentence prediction ``NSP-Proba`` (softmax).
        with_mlm: bool or activation, adds the tied masked-LM head (softmax by default;
            ``'linear'`` gives logits).
        hierarchical_position: None/True/float, see `PositionEmbedding`.
        custom_position_ids: bool, adds an ``Input-Position`` input of position ids.
    Inputs: ``Input-Token`` (and ``Input-Segment``), int32 ``(batch_size, seq_len)``.
    Outputs (bert4keras's convention): the last hidden states ``(batch_size, seq_len,
    hidden_size)`` alone; with one head, that head's output alone (pooled
    ``(batch_size, hidden_size)``, NSP ``(batch_size, 2)`` or MLM ``(batch_size, seq_len,
    vocab_size)``); with pool/NSP and MLM, the list of both.
    """

    hf_prefixes = ("bert.",)
    #: bert4keras's p_bias of the attention layers (None: absolute position embeddings).
    p_bias = None
    #: whether Dense/attention/feed-forward layers have biases.
    use_bias = True

    def __init__(
        self,
        max_position=512,
        segment_vocab_size=2,
        with_pool=False,
        with_nsp=False,
        with_mlm=False,
        hierarchical_position=None,
        custom_position_ids=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.max_position = max_position
        self.segment_vocab_size = segment_vocab_size
        self.with_pool = with_pool or bool(with_nsp)
        self.with_nsp = with_nsp
        # As bert4keras: a language model (lm / unilm) predicts tokens unless told otherwise.
        self.with_mlm = with_mlm or (self.application in ("lm", "unilm"))
        self.hierarchical_position = hierarchical_position
        self.custom_position_ids = custom_position_ids

    def get_inputs(self):
        inputs = [self.input("Input-Token")]
        if self.segment_vocab_size > 0:
            inputs.append(self.input("Input-Segment"))
        if self.custom_position_ids:
            inputs.append(self.input("Input-Position"))
        return inputs

    def chunk_inputs(self, inputs, output_ids, first):
        chunk = super().chunk_inputs(inputs, output_ids, first)
        if self.segment_vocab_size > 0:
            # generated tokens: segment 1 for UniLM, else the prompt's last segment id
            segment = 1 if self.application == "unilm" else inputs[1][:, -1:]
            generated = np.ones_like(output_ids) * segment
            segment_ids = np.concatenate([inputs[1], generated], 1) if first else generated[:, -1:]
            chunk.append(segment_ids.astype("int32"))
        return chunk

    def compute_attention_mask(self, inputs):
        if self.application == "unilm" and self.segment_vocab_size <= 0:
            raise ValueError("application='unilm' needs segment ids: segment_vocab_size must be > 0.")
        return super().compute_attention_mask(inputs)

    def norm(self, x, name, **kwargs):
        """The family's LayerNormalization (BERT: mean/variance, gamma and beta), conditional on
        ``layer_norm_cond`` when the model was built with one."""
        cond, hidden_units, hidden_act = getattr(self, "layer_norm_conds", (None, None, None))
        if cond is not None:
            x = [x, cond]
            kwargs.update(conditional=True, hidden_units=hidden_units, hidden_activation=hidden_act,
                          hidden_initializer=self.initializer)
        return self.apply(inputs=x, layer=LayerNormalization, epsilon=self.layer_norm_epsilon, name=name, **kwargs)

    def dropout(self, x, name):
        return self.apply(inputs=x, layer=Dropout, rate=self.dropout_rate, name=name)

    def dense(self, x, units, name, activation=None, use_bias=None):
        return self.apply(
            inputs=x,
            layer=Dense,
            units=units,
            activation=get_activation(activation),
            use_bias=self.use_bias if use_bias is None else use_bias,
            kernel_initializer=self.initializer,
            name=name,
        )

    def apply_token_embeddings(self, inputs):
        """Token (+ segment) embeddings, ``(batch_size, seq_len, embedding_size)``."""
        x = self.apply(
            inputs=inputs[0],
            layer=Embedding,
            input_dim=self.vocab_size,
            output_dim=self.embedding_size,
            embeddings_initializer=self.initializer,
            pad_id=self.pad_token_id,
            name="Embedding-Token",
        )
        if self.segment_vocab_size > 0:
            s = self.apply(
                inputs=inputs[1],
                layer=Embedding,
                input_dim=self.segment_vocab_size,
                output_dim=self.embedding_size,
                embeddings_initializer=self.initializer,
                name="Embedding-Segment",
            )
            x = self.apply(inputs=[x, s], layer=Add, name="Embedding-Token-Segment")
        return x

    def apply_position_embeddings(self, x, inputs):
        if self.p_bias is not None:  # relative / rotary families have no absolute positions
            return x
        if self.custom_position_ids:
            x = [x, inputs[2 if self.segment_vocab_size > 0 else 1]]
        return self.apply(
            inputs=x,
            layer=PositionEmbedding,
            arguments=self.decoding_arguments(),
            input_dim=self.max_position,
            output_dim=self.embedding_size,
            merge_mode="add",
            hierarchical=self.hierarchical_position,
            embeddings_initializer=self.initializer,
            custom_position_ids=self.custom_position_ids,
            name="Embedding-Position",
        )

    def embed(self, inputs):
        x = self.apply_token_embeddings(inputs)
        x = self.apply_position_embeddings(x, inputs)
        x = self.norm(x, "Embedding-Norm")
        x = self.dropout(x, "Embedding-Dropout")
        if self.embedding_size != self.hidden_size:
            x = self.dense(x, self.hidden_size, "Embedding-Mapping")
        return x

    def block_name(self, index, suffix):
        """Name of block ``index``'s sublayer; ALBERT shares one name across blocks."""
        return f"Transformer-{index}-{suffix}"

    def attention(self, x, name, mask=None, context=None, position=None):
        """Multi-head attention of ``x`` over ``context`` (default: self-attention)."""
        self_attention = context is None
        context = x if context is None else context
        inputs = [x, context, context] + [t for t in (mask, position) if t is not None]
        return self.cached_attention(
            inputs,
            {"p_bias": self.p_bias if position is not None else None},
            self_attention=self_attention,
            heads=self.num_attention_heads,
            head_size=self.attention_head_size,
            out_dim=self.hidden_size,
            key_size=self.attention_key_size,
            use_bias=self.use_bias,
            attention_scale=self.attention_scale,
            attention_dropout=self.attention_dropout_rate,
            kernel_initializer=self.initializer,
            name=name,
        )

    attention_scale = True

    def feed_forward(self, x, name):
        return self.apply(
            inputs=x,
            layer=FeedForward,
            units=self.intermediate_size,
            activation=self.hidden_act,
            use_bias=self.use_bias,
            kernel_initializer=self.initializer,
            name=name,
        )

    def apply_main_layers(self, x, index):
        """One post-LN block: x = LN(x + Dropout(MHA(x))); x = LN(x + Dropout(FFN(x)))."""
        attention_name = self.block_name(index, "MultiHeadSelfAttention")
        feed_forward_name = self.block_name(index, "FeedForward")
        position = self.compute_position_bias(x)
        xi = x
        x = self.attention(x, attention_name, mask=self.attention_mask, position=position)
        x = self.dropout(x, f"{attention_name}-Dropout")
        x = self.apply(inputs=[xi, x], layer=Add, name=f"{attention_name}-Add")
        x = self.norm(x, f"{attention_name}-Norm")
        xi = x
        x = self.feed_forward(x, feed_forward_name)
        x = self.dropout(x, f"{feed_forward_name}-Dropout")
        x = self.apply(inputs=[xi, x], layer=Add, name=f"{feed_forward_name}-Add")
        x = self.norm(x, f"{feed_forward_name}-Norm")
        return x

    def apply_pooler(self, x):
        pooled = self.apply(inputs=x, layer=TakeToken, index=0, name="Pooler")
        pooled = self.dense(pooled, self.hidden_size, "Pooler-Dense",
                            activation="tanh" if self.with_pool is True else self.with_pool)
        if self.with_nsp:
            pooled = self.dense(pooled, 2, "NSP-Proba",
                                activation="softmax" if self.with_nsp is True else self.with_nsp)
        return pooled

    mlm_activation = None  # None: the feed-forward activation

    def apply_mlm(self, x):
        activation = self.mlm_activation or self.hidden_act
        y = self.dense(x, self.embedding_size, "MLM-Dense", activation=activation)
        y = self.norm(y, "MLM-Norm")
        y = self.apply(inputs=y, layer=Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        y = self.apply(inputs=y, layer=BiasAdd, name="MLM-Bias")
        activation = "softmax" if self.with_mlm is True else self.with_mlm
        return self.apply(inputs=y, layer=Activation, activation=activation, name="MLM-Activation")

    def apply_final_layers(self, x):
        outputs = [x]
        if self.with_pool:
            outputs.append(self.apply_pooler(x))
        if self.with_mlm:
            outputs.append(self.apply_mlm(x))
        if len(outputs) == 1:
            return outputs[0]
        if len(outputs) == 2:
            return outputs[1]
        return outputs[1:]

    # -- official names ---------------------------------------------------------------------

    def variable_mapping(self):
        mapping = {
            "Embedding-Token": [Var("bert/embeddings/word_embeddings", vocab=0)],
            "Embedding-Segment": ["bert/embeddings/token_type_embeddings"],
            "Embedding-Position": ["bert/embeddings/position_embeddings"],
            "Embedding-Norm": ["bert/embeddings/LayerNorm/beta", "bert/embeddings/LayerNorm/gamma"],
            "Embedding-Mapping": [
                "bert/encoder/embedding_hidden_mapping_in/kernel",
                "bert/encoder/embedding_hidden_mapping_in/bias",
            ],
            "Pooler-Dense": ["bert/pooler/dense/kernel", "bert/pooler/dense/bias"],
            "NSP-Proba": [T("cls/seq_relationship/output_weights"), "cls/seq_relationship/output_bias"],
            "MLM-Dense": ["cls/predictions/transform/dense/kernel", "cls/predictions/transform/dense/bias"],
            "MLM-Norm": ["cls/predictions/transform/LayerNorm/beta", "cls/predictions/transform/LayerNorm/gamma"],
            "MLM-Bias": [Var("cls/predictions/output_bias", vocab=0)],
        }
        for i in range(self.num_hidden_layers):
            mapping.update(self.official_block_mapping(self.block_name(i, ""), f"bert/encoder/layer_{i}/"))
        return mapping

    @staticmethod
    def official_block_mapping(name, prefix, attention_norm="attention/output/LayerNorm",
                               output_norm="output/LayerNorm"):
        """One BERT block under Google's names (``prefix`` e.g. ``'bert/encoder/layer_0/'``);
        ``name`` is the block's layer-name prefix. bert4keras's converted GPT-2 (CPM) checkpoints
        name the two norms ``attention/input/LayerNorm`` and ``input/LayerNorm``."""
        return {
            f"{name}MultiHeadSelfAttention": [
                prefix + "attention/self/query/kernel",
                prefix + "attention/self/query/bias",
                prefix + "attention/self/key/kernel",
                prefix + "attention/self/key/bias",
                prefix + "attention/self/value/kernel",
                prefix + "attention/self/value/bias",
                prefix + "attention/output/dense/kernel",
                prefix + "attention/output/dense/bias",
            ],
            f"{name}MultiHeadSelfAttention-Norm": [prefix + attention_norm + "/beta", prefix + attention_norm + "/gamma"],
            f"{name}FeedForward": [
                prefix + "intermediate/dense/kernel",
                prefix + "intermediate/dense/bias",
                prefix + "output/dense/kernel",
                prefix + "output/dense/bias",
            ],
            f"{name}FeedForward-Norm": [prefix + output_norm + "/beta", prefix + output_norm + "/gamma"],
        }

    def hf_variable_mapping(self):
        """BertModel / BertForPreTraining names (the ``bert.`` prefix is optional)."""
        mapping = {
            "Embedding-Token": [Var("embeddings.word_embeddings.weight", vocab=0)],
            "Embedding-Segment": ["embeddings.token_type_embeddings.weight"],
            "Embedding-Position": ["embeddings.position_embeddings.weight"],
            "Embedding-Norm": ["embeddings.LayerNorm.bias", "embeddings.LayerNorm.weight"],
            "Embedding-Mapping": [T("embeddings_project.weight"), "embeddings_project.bias"],
            "Pooler-Dense": [T("pooler.dense.weight"), "pooler.dense.bias"],
            "NSP-Proba": [T("cls.seq_relationship.weight"), "cls.seq_relationship.bias"],
            "MLM-Dense": [T("cls.predictions.transform.dense.weight"), "cls.predictions.transform.dense.bias"],
            "MLM-Norm": ["cls.predictions.transform.LayerNorm.bias", "cls.predictions.transform.LayerNorm.weight"],
            "MLM-Bias": [Var("cls.predictions.bias", vocab=0)],
        }
        for i in range(self.num_hidden_layers):
            mapping.update(self.hf_block_mapping(self.block_name(i, ""), f"encoder.layer.{i}."))
        return mapping

    @staticmethod
    def hf_block_mapping(name, prefix):
        """One BERT block under HF ``BertLayer`` names."""
        return {
            f"{name}MultiHeadSelfAttention": [
                T(prefix + "attention.self.query.weight"),
                prefix + "attention.self.query.bias",
                T(prefix + "attention.self.key.weight"),
                prefix + "attention.self.key.bias",
                T(prefix + "attention.self.value.weight"),
                prefix + "attention.self.value.bias",
                T(prefix + "attention.output.dense.weight"),
                prefix + "attention.output.dense.bias",
            ],
            f"{name}MultiHeadSelfAttention-Norm": [
                prefix + "attention.output.LayerNorm.bias",
                prefix + "attention.output.LayerNorm.weight",
            ],
            f"{name}FeedForward": [
                T(prefix + "intermediate.dense.weight"),
                prefix + "intermediate.dense.bias",
                T(prefix + "output.dense.weight"),
                prefix + "output.dense.bias",
            ],
            f"{name}FeedForward-Norm": [
                prefix + "output.LayerNorm.bias",
                prefix + "output.LayerNorm.weight",
            ],
        }


class RoBERTa(BERT):
    """RoBERTa (Liu et al. 2019): BERT's architecture. Official (BERT-format, e.g. the Chinese
    RoBERTa-wwm) checkpoints use BERT's names; HF ``RobertaModel`` / ``RobertaForMaskedLM``
    safetensors use ``roberta.``/``lm_head.`` names, ``pad_token_id`` 1, and a position table
    whose first ``pad_token_id + 1`` rows are skipped (positions start after the padding id).
    """

    hf_prefixes = ("roberta.",)

    def __init__(self, hf_position_offset=0, **kwargs):
        super().__init__(**kwargs)
        self.hf_position_offset = hf_position_offset

    def hf_variable_mapping(self):
        mapping = super().hf_variable_mapping()
        mapping["Embedding-Position"] = [
            Var("embeddings.position_embeddings.weight", offset=self.hf_position_offset)
        ]
        mapping["MLM-Dense"] = [T("lm_head.dense.weight"), "lm_head.dense.bias"]
        mapping["MLM-Norm"] = ["lm_head.layer_norm.bias", "lm_head.layer_norm.weight"]
        mapping["MLM-Bias"] = [Var("lm_head.bias", vocab=0)]
        return mapping


class ALBERT(BERT):
    """ALBERT (Lan et al. 2019): one Transformer block shared by all layers, factorized
    embeddings (``Embedding-Mapping`` when embedding_size != hidden_size)."""

    hf_prefixes = ("albert.",)

    def block_name(self, index, suffix):
        return f"Transformer-{suffix}"

    _OFFICIAL = "bert/encoder/transformer/group_0/inner_group_0/"
    _HF = "encoder.albert_layer_groups.0.albert_layers.0."

    def official_shared_block(self, name):
        p = self._OFFICIAL
        return {
            f"{name}MultiHeadSelfAttention": [
                p + "attention_1/self/query/kernel", p + "attention_1/self/query/bias",
                p + "attention_1/self/key/kernel", p + "attention_1/self/key/bias",
                p + "attention_1/self/value/kernel", p + "attention_1/self/value/bias",
                p + "attention_1/output/dense/kernel", p + "attention_1/output/dense/bias",
            ],
            f"{name}MultiHeadSelfAttention-Norm": [p + "LayerNorm/beta", p + "LayerNorm/gamma"],
            f"{name}FeedForward": [
                p + "ffn_1/intermediate/dense/kernel", p + "ffn_1/intermediate/dense/bias",
                p + "ffn_1/intermediate/output/dense/kernel", p + "ffn_1/intermediate/output/dense/bias",
            ],
            f"{name}FeedForward-Norm": [p + "LayerNorm_1/beta", p + "LayerNorm_1/gamma"],
        }

    def hf_shared_block(self, name):
        p = self._HF
        return {
            f"{name}MultiHeadSelfAttention": [
                T(p + "attention.query.weight"), p + "attention.query.bias",
                T(p + "attention.key.weight"), p + "attention.key.bias",
                T(p + "attention.value.weight"), p + "attention.value.bias",
                T(p + "attention.dense.weight"), p + "attention.dense.bias",
            ],
            f"{name}MultiHeadSelfAttention-Norm": [p + "attention.LayerNorm.bias", p + "attention.LayerNorm.weight"],
            f"{name}FeedForward": [
                T(p + "ffn.weight"), p + "ffn.bias", T(p + "ffn_output.weight"), p + "ffn_output.bias",
            ],
            f"{name}FeedForward-Norm": [p + "full_layer_layer_norm.bias", p + "full_layer_layer_norm.weight"],
        }

    def block_names(self):
        return sorted({self.block_name(i, "") for i in range(self.num_hidden_layers)})

    def variable_mapping(self):
        mapping = {k: v for k, v in super().variable_mapping().items() if not k.startswith("Transformer-")}
        for name in self.block_names():
            mapping.update(self.official_shared_block(name))
        return mapping

    def hf_variable_mapping(self):
        mapping = {k: v for k, v in super().hf_variable_mapping().items() if not k.startswith("Transformer-")}
        mapping.update({
            "Embedding-Mapping": [T("encoder.embedding_hidden_mapping_in.weight"), "encoder.embedding_hidden_mapping_in.bias"],
            "Pooler-Dense": [T("pooler.weight"), "pooler.bias"],
            "NSP-Proba": [T("sop_classifier.classifier.weight"), "sop_classifier.classifier.bias"],
            "MLM-Dense": [T("predictions.dense.weight"), "predictions.dense.bias"],
            "MLM-Norm": ["predictions.LayerNorm.bias", "predictions.LayerNorm.weight"],
            "MLM-Bias": [Var("predictions.bias", vocab=0)],
        })
        for name in self.block_names():
            mapping.update(self.hf_shared_block(name))
        return mapping


class ALBERT_Unshared(ALBERT):
    """ALBERT's weights loaded into an ordinary BERT stack (every block its own copy)."""

    block_name = BERT.block_name


class NEZHA(BERT):
    """NEZHA (Wei et al. 2019): BERT with functional relative positions instead of absolute.

    Attention adds clipped relative position embeddings (a fixed sinusoidal table, max
    distance ``max_relative_position``, 64) to keys and values; BERT's official names.
    """

    p_bias = "typical_relative"

    def __init__(self, max_relative_position=64, **kwargs):
        super().__init__(**kwargs)
        self.max_relative_position = max_relative_position

    def compute_position_bias(self, x):
        if self.position_bias is None:
            self.position_bias = self.apply(
                inputs=[x, x],
                layer=RelativePositionEmbedding,
                arguments=self.decoding_arguments(key_length=True),
                input_dim=2 * self.max_relative_position + 1,
                output_dim=self.attention_key_size,
                embeddings_initializer=Sinusoidal(),
                trainable=False,
                name="Embedding-Relative-Position",
            )
        return self.position_bias


class RoFormer(BERT):
    """RoFormer (Su et al. 2021): BERT with rotary position embeddings in attention.

    Official names: bert4keras's converted checkpoints (BERT's); HF ``RoFormerModel`` names.
    """

    p_bias = "rotary"
    hf_prefixes = ("roformer.",)

    def __init__(self, rotary_value=False, **kwargs):
        if rotary_value:
            raise ValueError("RoFormer with rotary_value=True (rotating values too) is not supported.")
        super().__init__(**kwargs)

    def compute_position_bias(self, x):
        if self.position_bias is None:
            self.position_bias = self.apply(
                inputs=x,
                layer=SinusoidalPositionEmbedding,
                arguments=self.decoding_arguments(),
                output_dim=self.attention_key_size,
                merge_mode="zero",
                name="Embedding-Rotary-Position",
            )
        return self.position_bias


class RoFormerV2(RoFormer):
    """RoFormer-V2 (Su 2022, kexue.fm 8998): RoFormer without biases, with parameter-free RMS
    norms ``x / sqrt(mean(x^2) + eps)``, dropout before the embedding norm and an MLM head
    that is the tied embedding alone (``Output-Mapping`` first if embedding_size differs).
    """

    use_bias = False

    def norm(self, x, name):
        return super().norm(x, name, zero_mean=False, scale=False, center=False)

    def embed(self, inputs):
        x = self.apply_token_embeddings(inputs)
        x = self.dropout(x, "Embedding-Dropout")
        x = self.norm(x, "Embedding-Norm")
        if self.embedding_size != self.hidden_size:
            x = self.dense(x, self.hidden_size, "Embedding-Mapping")
        return x

    def apply_final_layers(self, x):
        if not self.with_mlm:
            return x
        if self.embedding_size != self.hidden_size:
            x = self.dense(x, self.embedding_size, "Output-Mapping")
        x = self.dropout(x, "Output-MLM-Dropout")
        x = self.apply(inputs=x, layer=Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        activation = "softmax" if self.with_mlm is True else self.with_mlm
        return self.apply(inputs=x, layer=Activation, activation=activation, name="Output-MLM-Activation")

    def variable_mapping(self):
        """BERT's names for the weights RoFormer-V2 keeps: kernels and embeddings only."""
        mapping = {
            "Embedding-Token": [Var("bert/embeddings/word_embeddings", vocab=0)],
            "Embedding-Segment": ["bert/embeddings/token_type_embeddings"],
            "Embedding-Mapping": ["bert/encoder/embedding_hidden_mapping_in/kernel"],
            "MLM-Dense": ["cls/predictions/transform/dense/kernel"],
        }
        for i in range(self.num_hidden_layers):
            p = f"bert/encoder/layer_{i}/"
            mapping[self.block_name(i, "MultiHeadSelfAttention")] = [
                p + "attention/self/query/kernel",
                p + "attention/self/key/kernel",
                p + "attention/self/value/kernel",
                p + "attention/output/dense/kernel",
            ]
            mapping[self.block_name(i, "FeedForward")] = [p + "intermediate/dense/kernel", p + "output/dense/kernel"]
        return mapping

    def hf_variable_mapping(self):
        raise ValueError("RoFormer-V2 has no Hugging Face transformers class; load its official checkpoint.")


class ELECTRA(BERT):
    """ELECTRA (Clark et al. 2020): BERT-like encoder with official ``electra/...`` names.

    Extra args:
        with_discriminator: bool or activation: the replaced-token-detection head
            ``Discriminator-Dense`` -> ``Discriminator-Prediction``, output ``(batch_size,
            seq_len, 1)`` (sigmoid probabilities by default; ``'linear'`` for logits).
        with_mlm: bool or activation: the generator's MLM head (``generator_predictions``);
            the official pretraining checkpoint keeps the generator's blocks under
            ``generator/`` (embeddings shared under ``electra/embeddings``).
    """

    hf_prefixes = ("electra.",)
    applications = ("encoder",)
    mlm_activation = "gelu"

    unsupported_options = {
        "with_pool": "ELECTRA has no pooler (its checkpoints hold none)",
        "with_nsp": "ELECTRA has no next-sentence head",
    }

    def __init__(self, with_discriminator=False, **kwargs):
        kwargs.pop("with_pool", None)
        kwargs.pop("with_nsp", None)
        super().__init__(**kwargs)
        self.with_discriminator = with_discriminator

    def apply_final_layers(self, x):
        if self.with_mlm:
            return self.apply_mlm(x)
        if self.with_discriminator:
            x = self.dense(x, self.hidden_size, "Discriminator-Dense", activation=self.hidden_act)
            activation = "sigmoid" if self.with_discriminator is True else self.with_discriminator
            x = self.dense(x, 1, "Discriminator-Prediction", activation=activation)
        return x

    def variable_mapping(self):
        """Google's ELECTRA names: embeddings under ``electra/embeddings``; the blocks and the
        embedding projection under ``electra/`` (discriminator) or ``generator/`` (with_mlm)."""
        body = "generator/" if self.with_mlm else "electra/"
        mapping = {
            "Embedding-Token": [Var("electra/embeddings/word_embeddings", vocab=0)],
            "Embedding-Segment": ["electra/embeddings/token_type_embeddings"],
            "Embedding-Position": ["electra/embeddings/position_embeddings"],
            "Embedding-Norm": ["electra/embeddings/LayerNorm/beta", "electra/embeddings/LayerNorm/gamma"],
        }
        for i in range(self.num_hidden_layers):
            mapping.update(self.official_block_mapping(self.block_name(i, ""), f"{body}encoder/layer_{i}/"))
        mapping["Embedding-Mapping"] = [body + "embeddings_project/kernel", body + "embeddings_project/bias"]
        mapping["Discriminator-Dense"] = ["discriminator_predictions/dense/kernel", "discriminator_predictions/dense/bias"]
        mapping["Discriminator-Prediction"] = ["discriminator_predictions/dense_1/kernel", "discriminator_predictions/dense_1/bias"]
        mapping["MLM-Dense"] = ["generator_predictions/dense/kernel", "generator_predictions/dense/bias"]
        mapping["MLM-Norm"] = ["generator_predictions/LayerNorm/beta", "generator_predictions/LayerNorm/gamma"]
        mapping["MLM-Bias"] = [Var("generator_predictions/output_bias", vocab=0)]
        return mapping

    def hf_variable_mapping(self):
        mapping = super().hf_variable_mapping()
        mapping["Discriminator-Dense"] = [T("discriminator_predictions.dense.weight"), "discriminator_predictions.dense.bias"]
        mapping["Discriminator-Prediction"] = [
            T("discriminator_predictions.dense_prediction.weight"),
            "discriminator_predictions.dense_prediction.bias",
        ]
        mapping["MLM-Dense"] = [T("generator_predictions.dense.weight"), "generator_predictions.dense.bias"]
        mapping["MLM-Norm"] = ["generator_predictions.LayerNorm.bias", "generator_predictions.LayerNorm.weight"]
        mapping["MLM-Bias"] = [Var("generator_lm_head.bias", vocab=0)]
        return mapping


class GPT(BERT):
    """GPT (Radford et al. 2018) as bert4keras's converted CDial-GPT checkpoints: post-LN
    blocks, token + segment + position embeddings without a norm, causal attention and a tied
    output. Output: ``(batch_size, seq_len, vocab_size)`` probabilities (``final_activation``).
    """

    applications = ("encoder", "lm")
    default_pad_token_id = None  # causal attention never looks at trailing padding
    unsupported_options = {
        "with_pool": "GPT has no pooler: its output is the LM head's",
        "with_nsp": "GPT has no next-sentence head",
        "with_mlm": "GPT always ends in its tied LM head (set final_activation instead)",
    }

    def __init__(self, final_activation="softmax", **kwargs):
        kwargs.pop("with_pool", None)
        kwargs.pop("with_mlm", None)
        super().__init__(**kwargs)  # checks `application` against `applications`
        self.application = "lm"  # causal either way: GPT is a language model
        self.with_pool = self.with_mlm = False
        self.final_activation = final_activation

    def embed(self, inputs):
        x = self.apply_token_embeddings(inputs)
        x = self.apply_position_embeddings(x, inputs)
        x = self.dropout(x, "Embedding-Dropout")
        if self.embedding_size != self.hidden_size:
            x = self.dense(x, self.hidden_size, "Embedding-Mapping")
        return x

    def apply_final_layers(self, x):
        if self.embedding_size != self.hidden_size:
            x = self.dense(x, self.embedding_size, "Output-Mapping")
        x = self.apply(inputs=x, layer=Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
        return self.apply(inputs=x, layer=Activation, activation=self.final_activation, name="LM-Activation")

    def variable_mapping(self):
        """bert4keras's converted CDial-GPT names: BERT's layout under ``gpt/``, the blocks
        under ``gpt/transformer/layer_%d/``."""
        mapping = {
            "Embedding-Token": [Var("gpt/embeddings/word_embeddings", vocab=0)],
            "Embedding-Segment": ["gpt/embeddings/token_type_embeddings"],
            "Embedding-Position": ["gpt/embeddings/position_embeddings"],
            "Embedding-Mapping": [
                "gpt/transformer/embedding_hidden_mapping_in/kernel",
                "gpt/transformer/embedding_hidden_mapping_in/bias",
            ],
        }
        for i in range(self.num_hidden_layers):
            mapping.update(self.official_block_mapping(self.block_name(i, ""), f"gpt/transformer/layer_{i}/"))
        return mapping

    def hf_variable_mapping(self):
        raise ValueError("GPT (CDial-GPT) is loaded from bert4keras's converted TF checkpoint names.")


class GPT2(GPT):
    """GPT-2 (Radford et al. 2019): pre-LN blocks, ``Output-Norm``, tied output, tanh GELU.

    Loads OpenAI's original TF checkpoint (``model/h%d/attn/c_attn`` fused q|k|v), bert4keras's
    converted CPM-LM names (``gpt/transformer/layer_%d/...``), and HF ``GPT2LMHeadModel``.
    Input: ``Input-Token`` only.
    """

    default_layer_norm_epsilon = 1e-5
    hf_prefixes = ("transformer.",)

    unsupported_options = dict(
        GPT.unsupported_options, segment_vocab_size="GPT2 has no segment embeddings"
    )

    def __init__(self, **kwargs):
        kwargs["segment_vocab_size"] = 0
        super().__init__(**kwargs)

    def apply_main_layers(self, x, index):
        """x = x + Dropout(MHA(LN(x))); x = x + Dropout(FFN(LN(x)))."""
        attention_name = self.block_name(index, "MultiHeadSelfAttention")
        feed_forward_name = self.block_name(index, "FeedForward")
        xi = x
        x = self.norm(x, f"{attention_name}-Norm")
        x = self.attention(x, attention_name, mask=self.attention_mask)
        x = self.dropout(x, f"{attention_name}-Dropout")
        x = self.apply(inputs=[xi, x], layer=Add, name=f"{attention_name}-Add")
        xi = x
        x = self.norm(x, f"{feed_forward_name}-Norm")
        x = self.feed_forward(x, feed_forward_name)
        x = self.dropout(x, f"{feed_forward_name}-Dropout")
        return self.apply(inputs=[xi, x], layer=Add, name=f"{feed_forward_name}-Add")

    def apply_final_layers(self, x):
        x = self.norm(x, "Output-Norm")
        x = self.dropout(x, "Output-Dropout")
        return super().apply_final_layers(x)

    def mapping_for(self, reader):
        if reader.format == "tf" and "model/wte" in reader:
            return self.openai_variable_mapping()
        return super().mapping_for(reader)

    def variable_mapping(self):
        """bert4keras's converted CPM-LM names: GPT's, with the pre-norms of each block named
        ``attention/input/LayerNorm`` and ``input/LayerNorm``, and ``gpt/output/LayerNorm``."""
        mapping = {
            "Embedding-Token": [Var("gpt/embeddings/word_embeddings", vocab=0)],
            "Embedding-Position": ["gpt/embeddings/position_embeddings"],
            "Embedding-Mapping": [
                "gpt/transformer/embedding_hidden_mapping_in/kernel",
                "gpt/transformer/embedding_hidden_mapping_in/bias",
            ],
            "Output-Norm": ["gpt/output/LayerNorm/beta", "gpt/output/LayerNorm/gamma"],
        }
        for i in range(self.num_hidden_layers):
            mapping.update(self.official_block_mapping(
                self.block_name(i, ""), f"gpt/transformer/layer_{i}/",
                attention_norm="attention/input/LayerNorm", output_norm="input/LayerNorm",
            ))
        return mapping

    def openai_variable_mapping(self):
        """OpenAI's released TF checkpoint names (github.com/openai/gpt-2)."""
        mapping = {
            "Embedding-Token": [Var("model/wte", vocab=0)],
            "Embedding-Position": ["model/wpe"],
            "Output-Norm": ["model/ln_f/b", "model/ln_f/g"],
        }
        for i in range(self.num_hidden_layers):
            mapping.update(self.fused_block_mapping(
                i, f"model/h{i}/", sep="/", weight="w", bias="b", gain="g", squeeze=True))
        return mapping

    def hf_variable_mapping(self):
        """HF GPT2Model / GPT2LMHeadModel (Conv1D weights are stored ``(in, out)``)."""
        mapping = {
            "Embedding-Token": [Var("wte.weight", vocab=0)],
            "Embedding-Position": ["wpe.weight"],
            "Output-Norm": ["ln_f.bias", "ln_f.weight"],
        }
        for i in range(self.num_hidden_layers):
            mapping.update(self.fused_block_mapping(
                i, f"h.{i}.", sep=".", weight="weight", bias="bias", gain="weight", squeeze=False))
        return mapping

    def fused_block_mapping(self, i, p, sep, weight, bias, gain, squeeze):
        """Block ``i`` under GPT-2's own names, ``p`` + ``ln_1``, ``attn/c_attn`` (q|k|v fused
        along the output axis, read as three thirds), ``attn/c_proj``, ``ln_2``, ``mlp/c_fc``,
        ``mlp/c_proj``; ``sep`` joins the parts (``'/'`` in OpenAI's TF release, ``'.'`` in HF's),
        ``weight``/``bias``/``gain`` name the leaves (``w``/``b``/``g``; HF: ``weight``/``bias``/
        ``weight``) and ``squeeze`` drops the leading 1 of OpenAI's ``(1, in, out)`` kernels."""
        w, b, g = weight, bias, gain
        attention = self.block_name(i, "MultiHeadSelfAttention")
        feed_forward = self.block_name(i, "FeedForward")
        c_attn = f"{p}attn{sep}c_attn{sep}"
        qkv = []
        for index in range(3):
            qkv += [Var(c_attn + w, squeeze=squeeze, split=(index, 3)), Var(c_attn + b, split=(index, 3))]
        c_proj = f"{p}attn{sep}c_proj{sep}"
        return {
            f"{attention}-Norm": [f"{p}ln_1{sep}{b}", f"{p}ln_1{sep}{g}"],
            attention: qkv + [Var(c_proj + w, squeeze=squeeze), c_proj + b],
            f"{feed_forward}-Norm": [f"{p}ln_2{sep}{b}", f"{p}ln_2{sep}{g}"],
            feed_forward: [
                Var(f"{p}mlp{sep}c_fc{sep}{w}", squeeze=squeeze), f"{p}mlp{sep}c_fc{sep}{b}",
                Var(f"{p}mlp{sep}c_proj{sep}{w}", squeeze=squeeze), f"{p}mlp{sep}c_proj{sep}{b}",
            ],
        }


class GPT2_ML(GPT):
    """GPT2-ML (github.com/imcaspar/gpt2-ml): embedding norm, then blocks
    ``x = x + MHA(x); x = LN1(x + FFN(LN0(x)))``; official ``newslm/...`` names."""

    default_layer_norm_epsilon = 1e-5

    unsupported_options = dict(
        GPT.unsupported_options, segment_vocab_size="GPT2_ML has no segment embeddings"
    )

    def __init__(self, **kwargs):
        kwargs["segment_vocab_size"] = 0
        super().__init__(**kwargs)

    def embed(self, inputs):
        x = self.apply_token_embeddings(inputs)
        x = self.apply_position_embeddings(x, inputs)
        x = self.norm(x, "Embedding-Norm")
        if self.embedding_size != self.hidden_size:
            x = self.dense(x, self.hidden_size, "Embedding-Mapping")
        return x

    def apply_main_layers(self, x, index):
        attention_name = self.block_name(index, "MultiHeadSelfAttention")
        feed_forward_name = self.block_name(index, "FeedForward")
        xi = x
        x = self.attention(x, attention_name, mask=self.attention_mask)
        x = self.dropout(x, f"{attention_name}-Dropout")
        x = self.apply(inputs=[xi, x], layer=Add, name=f"{attention_name}-Add")
        xi = x
        x = self.norm(x, f"{feed_forward_name}-Norm-0")
        x = self.feed_forward(x, feed_forward_name)
        x = self.dropout(x, f"{feed_forward_name}-Dropout")
        x = self.apply(inputs=[xi, x], layer=Add, name=f"{feed_forward_name}-Add")
        return self.norm(x, f"{feed_forward_name}-Norm-1")

    def variable_mapping(self):
        mapping = {
            "Embedding-Token": [Var("newslm/embeddings/word_embed", vocab=0)],
            "Embedding-Position": ["newslm/embeddings/pos_embed"],
            "Embedding-Norm": [
                "newslm/embeddings/LayerNorm_embed_norm/beta",
                "newslm/embeddings/LayerNorm_embed_norm/gamma",
            ],
        }
        for i in range(self.num_hidden_layers):
            p = "newslm/layer%02d/" % i
            mapping.update({
                f"Transformer-{i}-MultiHeadSelfAttention": [
                    p + "query_layer/kernel", p + "query_layer/bias",
                    p + "key_layer/kernel", p + "key_layer/bias",
                    p + "value_layer/kernel", p + "value_layer/bias",
                    p + "context_projection_layer/kernel", p + "context_projection_layer/bias",
                ],
                f"Transformer-{i}-FeedForward-Norm-0": [p + "LayerNorm_mlp_ln0/beta", p + "LayerNorm_mlp_ln0/gamma"],
                f"Transformer-{i}-FeedForward": [
                    p + "intermediate/kernel", p + "intermediate/bias", p + "output/kernel", p + "output/bias",
                ],
                f"Transformer-{i}-FeedForward-Norm-1": [p + "LayerNorm_mlp_ln1/beta", p + "LayerNorm_mlp_ln1/gamma"],
            })
        return mapping

    def hf_variable_mapping(self):
        raise ValueError("GPT2-ML is loaded from its official TF checkpoint names.")


class T5_Base(Transformer):
    """T5 (Raffel et al. 2020), numerics of the official Mesh-TF / HF implementation.

    Pre-norm blocks with RMS LayerNorm (no mean, no beta), no biases, unscaled attention
    logits with a bucketed relative position bias computed once per stack.

    Official names (`variable_mapping`) are those of the Mesh-TF checkpoints Google released
    (google-research/text-to-text-transfer-transformer for T5 and T5 v1.1,
    google-research/multilingual-t5 for mT5), as bert4keras 0.11.5 maps them:
    ``shared/embedding``; ``{encoder,decoder}/block_%03d/layer_%03d/`` + ``SelfAttention/{q,k,v,o}``
    (block 0 also ``relative_attention_bias``), ``EncDecAttention/{q,k,v,o}``,
    ``DenseReluDense/wi/kernel`` (t5.1.0) or ``wi_0``/``wi_1`` (v1.1), ``DenseReluDense/wo/kernel``;
    ``decoder/logits/kernel`` (v1.1 only; t5.1.0 ties the logits to the embedding). The norm
    scales follow one of two conventions (`NORM_CONVENTIONS`):

    - ``'layer_norm'``, T5 (t5.1.0) and T5 v1.1 (t5.1.1): ``.../layer_%03d/layer_norm/scale``,
      ``{encoder,decoder}/final_layer_norm/scale``;
    - ``'rms_norm'``, mT5 (mt5.1.1, also bojone's t5-pegasus): ``.../layer_%03d/rms_norm/scale``,
      ``{encoder,decoder}/rms_norm/scale``.

    A TF checkpoint holding only the other convention's norm names (t5.1.1 and mt5.1.1 mixed
    up) loads with one warning; `save_weights_as_checkpoint` writes the version's own names.

    Extra args:
        version: ``'t5.1.0'`` (ReLU FFN, logits tied to the embedding and scaled by
            ``hidden_size**-0.5``), ``'t5.1.1'`` / ``'mt5.1.1'`` (gated-GELU FFN, separate
            ``Decoder-Output-LM``, no scaling; they differ only in their norm names).
        num_decoder_layers: int, decoder depth (default: num_hidden_layers).
        relative_attention_num_buckets, relative_attention_max_distance: ints (32, 128).
        cross_position_bias: bool, add a relative position bias in cross attention too, as
            bert4keras 0.11.5 did (default False: the official T5 has none there).
        with_lm: bool or activation for the decoder's output (softmax by default).
    """

    default_layer_norm_epsilon = 1e-6
    applications = ("encoder",)
    hf_prefixes = ()

    def __init__(
        self,
        version="t5.1.0",
        num_decoder_layers=None,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        cross_position_bias=False,
        with_lm=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if version not in ("t5.1.0", "t5.1.1", "mt5.1.1"):
            raise ValueError(f"Unknown T5 version {version!r}; expected 't5.1.0', 't5.1.1' or 'mt5.1.1'.")
        self.version = version
        self.num_decoder_layers = num_decoder_layers or self.num_hidden_layers
        self.relative_attention_num_buckets = relative_attention_num_buckets
        self.relative_attention_max_distance = relative_attention_max_distance
        self.cross_position_bias = cross_position_bias
        self.with_lm = with_lm

    def norm(self, x, name):
        return self.apply(
            inputs=x,
            layer=LayerNormalization,
            center=False,
            zero_mean=False,
            epsilon=self.layer_norm_epsilon,
            name=name,
        )

    def dropout(self, x, name):
        return self.apply(inputs=x, layer=Dropout, rate=self.dropout_rate, name=name)

    def attention(self, x, name, mask=None, context=None, position=None):
        self_attention = context is None
        context = x if context is None else context
        inputs = [x, context, context] + [t for t in (mask, position) if t is not None]
        return self.cached_attention(
            inputs,
            {"p_bias": "t5_relative" if position is not None else None},
            self_attention=self_attention,
            heads=self.num_attention_heads,
            head_size=self.attention_head_size,
            out_dim=self.hidden_size,
            key_size=self.attention_key_size,
            use_bias=False,
            attention_scale=False,
            attention_dropout=self.attention_dropout_rate,
            kernel_initializer=self.initializer,
            name=name,
        )

    def feed_forward(self, x, name):
        return self.apply(
            inputs=x,
            layer=FeedForward,
            units=self.intermediate_size,
            activation=self.hidden_act,
            use_bias=False,
            kernel_initializer=self.initializer,
            name=name,
        )

    def residual(self, x, name, sublayer):
        """x + Dropout(sublayer(RMSNorm(x))), the T5 pre-norm residual."""
        y = sublayer(self.norm(x, f"{name}-Norm"))
        y = self.dropout(y, f"{name}-Dropout")
        return self.apply(inputs=[x, y], layer=Add, name=f"{name}-Add")

    def relative_position(self, q, k, bidirectional, name, self_attention=True):
        return self.apply(
            inputs=[q, k],
            layer=RelativePositionEmbeddingT5,
            arguments=self.decoding_arguments(key_length=self_attention),
            input_dim=self.relative_attention_num_buckets,
            output_dim=self.num_attention_heads,
            max_distance=self.relative_attention_max_distance,
            bidirectional=bidirectional,
            embeddings_initializer=self.initializer,
            name=name,
        )

    def token_embeddings(self, x):
        return self.apply(
            inputs=x,
            layer=Embedding,
            input_dim=self.vocab_size,
            output_dim=self.embedding_size,
            embeddings_initializer=self.initializer,
            pad_id=self.pad_token_id,
            name="Embedding-Token",
        )

    # -- names --------------------------------------------------------------------------------

    #: Mesh-TF names of the norm scales per naming convention: (in each block, after each stack).
    NORM_CONVENTIONS = {
        "layer_norm": ("layer_norm", "final_layer_norm"),  # T5 and T5 v1.1 releases
        "rms_norm": ("rms_norm", "rms_norm"),  # mT5 releases (and t5-pegasus)
    }

    @property
    def norm_convention(self):
        """The version's own norm naming (a key of `NORM_CONVENTIONS`): mT5's ``'rms_norm'``,
        else ``'layer_norm'``."""
        return "rms_norm" if self.version == "mt5.1.1" else "layer_norm"

    @property
    def _gated(self):
        return isinstance(self.hidden_act, (list, tuple)) and len(self.hidden_act) > 1

    def _ffn(self, prefix, hf=False):
        if hf:
            wi = [T(prefix + "DenseReluDense.wi_0.weight"), T(prefix + "DenseReluDense.wi_1.weight")] if self._gated \
                else [T(prefix + "DenseReluDense.wi.weight")]
            return wi + [T(prefix + "DenseReluDense.wo.weight")]
        wi = [prefix + "DenseReluDense/wi_0/kernel", prefix + "DenseReluDense/wi_1/kernel"] if self._gated \
            else [prefix + "DenseReluDense/wi/kernel"]
        return wi + [prefix + "DenseReluDense/wo/kernel"]

    def variable_mapping(self, norms=None):
        """Mesh-TF names (see the class docstring); ``norms`` picks the norm naming of
        `NORM_CONVENTIONS` (default: the version's, `norm_convention`)."""
        n, final = self.NORM_CONVENTIONS[norms or self.norm_convention]
        mapping = {
            "Embedding-Token": [Var("shared/embedding", vocab=0)],
            "Encoder-Embedding-Relative-Position": [
                T("encoder/block_000/layer_000/SelfAttention/relative_attention_bias")
            ],
            "Encoder-Output-Norm": [f"encoder/{final}/scale"],
            "Decoder-Embedding-Relative-Position": [
                T("decoder/block_000/layer_000/SelfAttention/relative_attention_bias")
            ],
            "Decoder-Output-Norm": [f"decoder/{final}/scale"],
            "Decoder-Output-LM": [Var("decoder/logits/kernel", vocab=1)],
        }
        for i in range(self.num_hidden_layers):
            p = "encoder/block_%03d/" % i
            e = f"Encoder-Transformer-{i}-"
            mapping[e + "MultiHeadSelfAttention"] = [p + f"layer_000/SelfAttention/{w}" for w in "qkvo"]
            mapping[e + "MultiHeadSelfAttention-Norm"] = [p + f"layer_000/{n}/scale"]
            mapping[e + "FeedForward"] = self._ffn(p + "layer_001/")
            mapping[e + "FeedForward-Norm"] = [p + f"layer_001/{n}/scale"]
        for i in range(self.num_decoder_layers):
            p = "decoder/block_%03d/" % i
            d = f"Decoder-Transformer-{i}-"
            mapping[d + "MultiHeadSelfAttention"] = [p + f"layer_000/SelfAttention/{w}" for w in "qkvo"]
            mapping[d + "MultiHeadSelfAttention-Norm"] = [p + f"layer_000/{n}/scale"]
            mapping[d + "MultiHeadCrossAttention"] = [p + f"layer_001/EncDecAttention/{w}" for w in "qkvo"]
            mapping[d + "MultiHeadCrossAttention-Norm"] = [p + f"layer_001/{n}/scale"]
            mapping[d + "FeedForward"] = self._ffn(p + "layer_002/")
            mapping[d + "FeedForward-Norm"] = [p + f"layer_002/{n}/scale"]
        return mapping

    def mapping_for(self, reader):
        mapping = super().mapping_for(reader)
        if reader.format == "tf":
            return self._mapping_for_norm_names(reader, mapping)
        if "lm_head.weight" not in reader:
            # transformers 5 ties T5's lm_head to the embedding and may not save it; real
            # t5.1.1 / mT5 files carry a separate lm_head.weight, used when present.
            mapping["Decoder-Output-LM"] = [T("shared.weight", vocab=1)]
        return mapping

    def _mapping_for_norm_names(self, reader, mapping):
        """``mapping``, or the other convention's when the checkpoint holds none of our norm
        names and some of its (a t5.1.1 checkpoint loaded as mt5.1.1 or the reverse), with a
        warning naming both conventions. Other missing names still raise in the loader."""
        other = "rms_norm" if self.norm_convention == "layer_norm" else "layer_norm"
        alternative = self.variable_mapping(norms=other)

        def names(m):
            return {as_var(s).name for layer, specs in m.items() if layer in self.layers for s in specs}

        ours, theirs = names(mapping), names(alternative)
        ours, theirs = ours - theirs, theirs - ours  # the norm scales only
        if not ours or any(n in reader for n in ours) or not any(n in reader for n in theirs):
            return mapping
        conventions = {"layer_norm": "T5 / T5 v1.1 ('layer_norm', 'final_layer_norm'; model='t5.1.1')",
                       "rms_norm": "mT5 ('rms_norm'; model='mt5.1.1')"}

        def example(found):  # the shortest: a stack's final norm
            return min(found, key=lambda n: (len(n), n))

        warnings.warn(
            f"T5 checkpoint '{reader.path}' names its norms in the {conventions[other]} convention "
            f"(e.g. '{example(theirs)}'), not in the {conventions[self.norm_convention]} one that "
            f"version '{self.version}' expects (e.g. '{example(ours)}'). Loaded them under the "
            f"checkpoint's names; save_weights_as_checkpoint writes '{self.version}' names."
        )
        return alternative

    def hf_variable_mapping(self):
        """HF T5ForConditionalGeneration / MT5ForConditionalGeneration names."""
        mapping = {
            "Embedding-Token": [Var("shared.weight", vocab=0)],
            "Encoder-Embedding-Relative-Position": ["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
            "Encoder-Output-Norm": ["encoder.final_layer_norm.weight"],
            "Decoder-Embedding-Relative-Position": ["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
            "Decoder-Output-Norm": ["decoder.final_layer_norm.weight"],
            "Decoder-Output-LM": [T("lm_head.weight", vocab=1)],
        }
        for i in range(self.num_hidden_layers):
            p = f"encoder.block.{i}."
            e = f"Encoder-Transformer-{i}-"
            mapping[e + "MultiHeadSelfAttention"] = [T(p + f"layer.0.SelfAttention.{w}.weight") for w in "qkvo"]
            mapping[e + "MultiHeadSelfAttention-Norm"] = [p + "layer.0.layer_norm.weight"]
            mapping[e + "FeedForward"] = self._ffn(p + "layer.1.", hf=True)
            mapping[e + "FeedForward-Norm"] = [p + "layer.1.layer_norm.weight"]
        for i in range(self.num_decoder_layers):
            p = f"decoder.block.{i}."
            d = f"Decoder-Transformer-{i}-"
            mapping[d + "MultiHeadSelfAttention"] = [T(p + f"layer.0.SelfAttention.{w}.weight") for w in "qkvo"]
            mapping[d + "MultiHeadSelfAttention-Norm"] = [p + "layer.0.layer_norm.weight"]
            mapping[d + "MultiHeadCrossAttention"] = [T(p + f"layer.1.EncDecAttention.{w}.weight") for w in "qkvo"]
            mapping[d + "MultiHeadCrossAttention-Norm"] = [p + "layer.1.layer_norm.weight"]
            mapping[d + "FeedForward"] = self._ffn(p + "layer.2.", hf=True)
            mapping[d + "FeedForward-Norm"] = [p + "layer.2.layer_norm.weight"]
        return mapping


class T5_Encoder(T5_Base):
    """T5 encoder: ``Encoder-Input-Token`` ``(batch_size, seq_len)`` (pad 0) -> encoder states
    ``(batch_size, seq_len, hidden_size)``, zero at padding positions."""

    def get_inputs(self):
        return [self.input("Encoder-Input-Token")]

    def compute_attention_mask(self, inputs):
        return self.apply(inputs=inputs[0], layer=AttentionMask, mode="padding", pad_id=self.pad_token_id,
                          name="Encoder-Attention-Mask")

    def embed(self, inputs):
        self.token_ids = inputs[0]  # padding rows of the output are zeroed by these ids
        x = self.token_embeddings(inputs[0])
        x = self.dropout(x, "Encoder-Embedding-Dropout")
        self.position_bias = self.relative_position(x, x, True, "Encoder-Embedding-Relative-Position")
        return x

    def apply_main_layers(self, x, index):
        name = f"Encoder-Transformer-{index}-"
        x = self.residual(x, name + "MultiHeadSelfAttention",
                          lambda y: self.attention(y, name + "MultiHeadSelfAttention",
                                                   mask=self.attention_mask, position=self.position_bias))
        return self.residual(x, name + "FeedForward", lambda y: self.feed_forward(y, name + "FeedForward"))

    def apply_final_layers(self, x):
        x = self.norm(x, "Encoder-Output-Norm")
        x = self.dropout(x, "Encoder-Output-Dropout")
        return self.apply(inputs=[x, self.token_ids], layer=SequenceMasking, pad_id=self.pad_token_id,
                          name="Encoder-Output-Masked")


class T5_Decoder(T5_Base):
    """T5 decoder: ``[Input-Context (batch_size, src_len, hidden_size), Decoder-Input-Token
    (batch_size, tgt_len)]`` -> token probabilities ``(batch_size, tgt_len, vocab_size)``.

    Cross attention ignores context rows that are all zero (the encoder's padding).
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.num_hidden_layers = self.num_decoder_layers

    def get_inputs(self):
        return [
            self.input("Input-Context", shape=(self.sequence_length, self.hidden_size), dtype="float32"),
            self.input("Decoder-Input-Token"),
        ]

    supports_cache = True

    def chunk_inputs(self, inputs, output_ids, first):
        """``inputs`` is ``[context]``: the encoder output for the prompt."""
        token_ids = output_ids if first else output_ids[:, -1:]
        return [inputs[0], token_ids.astype("int32")]

    def cross_attention_layers(self):
        return [self.layers[f"Decoder-Transformer-{index}-MultiHeadCrossAttention"]
                for index in range(self.num_hidden_layers)]

    def compute_attention_mask(self, inputs):
        self.context_mask = self.apply(inputs=inputs[0], layer=AttentionMask, mode="context",
                                       name="Decoder-Context-Mask")
        # causal only: the decoder's start token is the pad id 0
        return self.apply(inputs=inputs[1], layer=AttentionMask, arguments=self.decoding_arguments(key_length=True),
                          mode="causal", pad_id=None, name="Decoder-Attention-Mask")

    def embed(self, inputs):
        c, x = inputs
        x = self.token_embeddings(x)
        x = self.dropout(x, "Decoder-Embedding-Dropout")
        self.position_bias = self.relative_position(x, x, False, "Decoder-Embedding-Relative-Position")
        self.cross_bias = None
        if self.cross_position_bias:
            self.cross_bias = self.relative_position(x, c, False, "Decoder-Embedding-Relative-Position",
                                                     self_attention=False)
        return [c, x]

    def apply_main_layers(self, inputs, index):
        c, x = inputs
        name = f"Decoder-Transformer-{index}-"
        x = self.residual(x, name + "MultiHeadSelfAttention",
                          lambda y: self.attention(y, name + "MultiHeadSelfAttention",
                                                   mask=self.attention_mask, position=self.position_bias))
        x = self.residual(x, name + "MultiHeadCrossAttention",
                          lambda y: self.attention(y, name + "MultiHeadCrossAttention", context=c,
                                                   mask=self.context_mask, position=self.cross_bias))
        x = self.residual(x, name + "FeedForward", lambda y: self.feed_forward(y, name + "FeedForward"))
        return [c, x]

    def apply_final_layers(self, inputs):
        c, x = inputs
        x = self.norm(x, "Decoder-Output-Norm")
        x = self.dropout(x, "Decoder-Output-Dropout")
        if not self.with_lm:
            return x
        activation = "softmax" if self.with_lm is True else self.with_lm
        if self.version == "t5.1.0":
            x = self.apply(inputs=x, layer=Rescaling, scale=self.hidden_size**-0.5,
                           name="Decoder-Output-Scale")
            x = self.apply(inputs=x, layer=Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
            return self.apply(inputs=x, layer=Activation, activation=activation,
                              name="Decoder-Output-LM-Activation")
        return self.apply(
            inputs=x,
            layer=Dense,
            units=self.vocab_size,
            activation=activation,
            use_bias=False,
            kernel_initializer=self.initializer,
            name="Decoder-Output-LM",
        )


class T5(T5_Base):
    """T5 encoder-decoder. Attributes after `build`: ``encoder`` (`T5_Encoder`'s model),
    ``decoder`` (`T5_Decoder`'s model) and ``model``: ``[Encoder-Input-Token,
    Decoder-Input-Token]`` -> decoder output; the two halves share ``Embedding-Token``."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        name = kwargs.pop("name", None)
        kwargs["layers"] = self.layers
        self._encoder = T5_Encoder(name=f"{name}_Encoder" if name else "Encoder", **kwargs)
        self._decoder = T5_Decoder(name=f"{name}_Decoder" if name else "Decoder", **kwargs)

    def build(self, **kwargs):
        if self.built:
            return
        self._encoder.build()
        self._decoder.build()
        self.encoder, self.decoder = self._encoder.model, self._decoder.model
        self.inputs = self.encoder.inputs + self.decoder.inputs[1:]
        # One flat graph (the decoder's layers called again on the encoder's output), not the
        # decoder model nested: Keras reloads a layer shared between a nested model and its
        # parent (Embedding-Token) with its call nodes mixed up.
        self.outputs = [self._decoder.call_builder(self.encoder.outputs + self.decoder.inputs[1:])]
        self.model = TransformerModel(self.inputs, self.outputs[0], name=self.name)
        self.built = True

    def build_cache_model(self, max_length):
        """The decoder's cache model (see `Transformer.build_cache_model`)."""
        return self._decoder.build_cache_model(max_length)

    def predictor(self, max_length=None):
        """Decoder predictor; its ``inputs`` are ``[encoder output]`` (see `Transformer.predictor`)."""
        return self._decoder.predictor(max_length)


MODELS = {
    "bert": BERT,
    "roberta": RoBERTa,
    "albert": ALBERT,
    "albert_unshared": ALBERT_Unshared,
    "nezha": NEZHA,
    "roformer": RoFormer,
    "roformer_v2": RoFormerV2,
    "electra": ELECTRA,
    "gpt": GPT,
    "gpt2": GPT2,
    "gpt2_ml": GPT2_ML,
    "t5": T5,
    "t5_encoder": T5_Encoder,
    "t5_decoder": T5_Decoder,
}
for _version in ("t5.1.0", "t5.1.1", "mt5.1.1"):
    MODELS[_version] = T5
    MODELS[_version + "_encoder"] = T5_Encoder
    MODELS[_version + "_decoder"] = T5_Decoder
APPLICATIONS = ("encoder", "lm", "unilm")

# Config names of Google BERT / HF / OpenAI GPT-2 / HF T5 -> bert4keras argument names.
_CONFIG_RENAMES = {
    "max_position_embeddings": "max_position",
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "type_vocab_size": "segment_vocab_size",
    "layer_norm_eps": "layer_norm_epsilon",
    # GPT-2 (HF config.json and OpenAI hparams.json)
    "n_vocab": "vocab_size",
    "n_ctx": "max_position",
    "n_positions": "max_position",
    "n_embd": "hidden_size",
    "n_head": "num_attention_heads",
    "n_layer": "num_hidden_layers",
    "n_inner": "intermediate_size",
    "activation_function": "hidden_act",
    "resid_pdrop": "dropout_rate",
    "attn_pdrop": "attention_dropout_rate",
    # T5 (HF config.json)
    "d_model": "hidden_size",
    "d_ff": "intermediate_size",
    "d_kv": "attention_head_size",
    "num_heads": "num_attention_heads",
    "num_layers": "num_hidden_layers",
}
_REQUIRED_INT = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)


def read_config(config_path):
    """Read a Google ``bert_config.json``, HF ``config.json``, OpenAI ``hparams.json`` (or an HF
    model directory), with bert4keras's argument names.

    Returns:
        dict with bert4keras argument names (``max_position``, ``dropout_rate``,
        ``attention_dropout_rate``, ``segment_vocab_size``, ``layer_norm_epsilon``, ...).
    Raises:
        FileNotFoundError: no such file. ValueError: not a JSON object.
    """
    config_path = os.fspath(config_path)
    if os.path.isdir(config_path):
        for name in ("config.json", "bert_config.json", "hparams.json"):
            if os.path.isfile(os.path.join(config_path, name)):
                config_path = os.path.join(config_path, name)
                break
        else:
            raise FileNotFoundError(f"No config.json or bert_config.json in directory '{config_path}'.")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"Config file '{config_path}' does not exist.")
    try:
        with open(config_path, encoding="utf-8-sig") as f:  # -sig: a byte order mark is dropped
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"Config file '{config_path}' is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"Config file '{config_path}' must hold a JSON object, got {type(raw).__name__}.")
    configs = {}
    for key, value in raw.items():
        configs[_CONFIG_RENAMES.get(key, key)] = value
    model_type = raw.get("model_type")
    if model_type == "roberta" and _is_int(configs.get("max_position")):
        # HF RoBERTa reserves the first pad_token_id + 1 positions.
        pad_token_id = raw.get("pad_token_id", 1)
        if not _is_int(pad_token_id) or pad_token_id < 0:
            raise ValueError(
                f"Config key 'pad_token_id' in config '{config_path}' must be a non-negative int "
                f"for model_type 'roberta' (its positions start after it), got {pad_token_id!r}."
            )
        offset = int(pad_token_id) + 1
        configs["max_position"] -= offset
        configs["hf_position_offset"] = offset
    if "n_embd" in raw or model_type == "gpt2":
        if configs.get("intermediate_size") is None and isinstance(configs.get("hidden_size"), int):
            configs["intermediate_size"] = 4 * configs["hidden_size"]
        configs.setdefault("hidden_act", "gelu_new")
        configs.setdefault("pad_token_id", None)
    if "feed_forward_proj" in raw:  # HF T5 / mT5
        if not isinstance(raw["feed_forward_proj"], str):
            raise ValueError(
                f"Config key 'feed_forward_proj' in config '{config_path}' must be a str such as "
                f"'relu' or 'gated-gelu', got {raw['feed_forward_proj']!r}."
            )
        gated = raw["feed_forward_proj"].startswith("gated-")
        act = raw["feed_forward_proj"].split("-")[-1]
        act = "gelu_new" if act == "gelu" else act
        configs["hidden_act"] = [act, "linear"] if gated else act
        configs["version"] = ("mt5.1.1" if model_type == "mt5" else "t5.1.1") if gated else "t5.1.0"
        configs.pop("tie_word_embeddings", None)  # the version decides (see T5_Base)
    configs["_config_path"] = config_path
    configs["_config_family"] = _config_family(raw)
    return configs


# The three config layouts: T5's, GPT-2's (OpenAI / HF) and BERT's (Google / HF BERT-likes, and
# bert4keras's own configs). Told apart by HF's model_type, else by raw keys no other layout uses.
# `type_vocab_size` alone is weak evidence: bert4keras's converted GPT-2 checkpoints (CPM-LM) and
# GPT2-ML come with BERT-style configs, so it refuses only T5 models.
_CONFIG_FAMILIES = {
    "t5": dict(
        name="T5",
        model_types=("t5", "mt5", "umt5", "longt5"),
        keys=("d_model", "d_ff", "d_kv", "num_heads", "feed_forward_proj", "relative_attention_num_buckets"),
        use="model='t5.1.0', 't5.1.1' or 'mt5.1.1' (or their _encoder / _decoder)",
    ),
    "gpt2": dict(name="GPT-2", model_types=("gpt2",), keys=("n_embd", "n_head", "n_layer"), use="model='gpt2'"),
    "bert": dict(
        name="BERT-style",
        model_types=("bert", "roberta", "xlm-roberta", "albert", "electra", "nezha", "roformer", "camembert",
                     "ernie", "megatron-bert"),
        keys=("type_vocab_size",),
        use="model='bert' (or 'roberta', 'albert', 'nezha', 'roformer', 'electra', ...)",
    ),
}


def _config_family(raw):
    """``(family, evidence, strong)`` of a raw config (a key of `_CONFIG_FAMILIES`), or None."""
    model_type = raw.get("model_type")
    for family, signature in _CONFIG_FAMILIES.items():
        if model_type in signature["model_types"]:
            return family, f"model_type={model_type!r}", True
    for family, signature in _CONFIG_FAMILIES.items():
        keys = [key for key in signature["keys"] if key in raw]
        if keys:
            return family, "key(s) " + ", ".join(map(repr, keys)), family != "bert"
    return None


def _model_family(model):
    """The config layout `model` reads: ``'t5'``, ``'gpt2'`` or ``'bert'``."""
    if model.startswith(("t5", "mt5")):
        return "t5"
    return "gpt2" if model == "gpt2" else "bert"


def _check_config_family(configs, model):
    """ValueError when the config file is of another family than ``model`` (before its keys are
    validated: a T5 config read as BERT would otherwise build a wrong model, or fail later on
    a key that is not the real problem)."""
    found = configs.pop("_config_family", None)
    if found is None:
        return
    family, evidence, strong = found
    wanted = _model_family(model)
    if family == wanted or not (strong or wanted == "t5"):
        return
    raise ValueError(
        f"Config '{configs.get('_config_path')}' looks like a {_CONFIG_FAMILIES[family]['name']} config "
        f"({evidence}), but model={model!r} builds a {_CONFIG_FAMILIES[wanted]['name']} model. Pass "
        f"{_CONFIG_FAMILIES[family]['use']}, or the config of the model you meant."
    )


def _total_memory():
    """This machine's physical memory in bytes (``os.sysconf``, else psutil), or None if unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except Exception:  # not installed, or no answer on this platform
        return None


def _format_bytes(n):
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:,.0f} EB"


def _parameter_count(model, configs, from_kwargs=()):
    """``(count, largest part)``: a lower bound of the parameters ``model`` gets from the
    validated ``configs`` (token embedding, absolute position table, attention and feed-forward
    kernels; biases and norms left out), computed before any layer exists."""
    c = configs

    def kv(key, value=None):
        value = c.get(key) if value is None else value
        return f"{key}={value}" + (" (keyword argument)" if key in from_kwargs else "")

    cls = MODELS[model]
    hidden, heads, inner = c["hidden_size"], c["num_attention_heads"], c["intermediate_size"]
    head = c.get("attention_head_size") or hidden // heads
    key = c.get("attention_key_size") or head
    embedding = c.get("embedding_size") or hidden
    vocab = len(c["keep_tokens"]) if c.get("keep_tokens") is not None else c["vocab_size"]
    vocab += len(c.get("compound_tokens") or ())
    acts = c.get("hidden_act")
    gates = len(acts) if isinstance(acts, (list, tuple)) else 1  # a gated FFN has one input kernel per activation
    block = hidden * heads * (2 * key + 2 * head) + inner * hidden * (gates + 1)
    layers = c["num_hidden_layers"]
    if issubclass(cls, ALBERT) and not issubclass(cls, ALBERT_Unshared):
        blocks = 1  # one block shared by all layers
    elif issubclass(cls, T5_Base):
        decoder = c.get("num_decoder_layers")
        decoder = decoder if _is_int(decoder) and decoder > 0 else layers
        blocks = layers if cls is T5_Encoder else decoder if cls is T5_Decoder else layers + decoder
    else:
        blocks = layers
    parts = [
        (vocab * embedding, f"Embedding-Token, {kv('vocab_size', vocab)} x {kv('embedding_size', embedding)}"),
        (blocks * block, f"{blocks} transformer block(s) of {kv('hidden_size')}, {kv('intermediate_size')}, "
                         f"{kv('num_attention_heads')} heads of size {head}"),
    ]
    if issubclass(cls, BERT) and cls.p_bias is None:
        positions = c.get("max_position") or 512
        parts.append((positions * embedding, f"Embedding-Position, {kv('max_position', positions)} x embedding_size"))
    return sum(n for n, _ in parts), max(parts)[1]


def _check_parameter_memory(model, configs, source, from_kwargs=()):
    """ValueError, before any allocation, when the parameters alone would exceed this machine's
    physical memory (times the devices of a `keras.distribution.ModelParallel` mesh, which shards
    them): absurd sizes (``hidden_size=10**9``, a typo) would otherwise make the backend try
    (JAX aborts the process). Skipped when the memory size is unknown (no ``os.sysconf``, no psutil)."""
    limit = _total_memory()
    if limit is None:
        return
    distribution = keras.distribution.distribution()
    if isinstance(distribution, keras.distribution.ModelParallel):
        limit *= max(1, int(np.size(distribution.device_mesh.devices)))
    count, largest = _parameter_count(model, configs, from_kwargs)
    dtype = keras.config.dtype_policy().variable_dtype
    try:
        itemsize = np.dtype(dtype).itemsize
    except TypeError:
        itemsize = 4
    if count * itemsize <= limit:
        return
    origin = f"config '{source}'" if source else "the keyword arguments"
    raise ValueError(
        f"The sizes in {origin} would need ~{_format_bytes(count * itemsize)} of {dtype} parameters "
        f"(at least {count:.2g} parameters; the largest part: {largest}), more than this machine's "
        f"{_format_bytes(limit)} of memory. Check these sizes (a typo such as extra zeros?)."
    )


_POSITIVE_INT = ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size")
_OPTIONAL_POSITIVE_INT = ("max_position", "embedding_size", "attention_head_size", "attention_key_size")


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value):
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _validate_configs(configs, from_kwargs=()):
    """Check the sizes and rates before any layer is built; errors name the key, its source
    (the config file or a keyword argument), what was expected and the value got."""
    source = configs.pop("_config_path", None)

    def where(key):
        if key in from_kwargs:
            return " (keyword argument)"
        return f" in config '{source}'" if source else ""

    def fail(key, expected, value):
        raise ValueError(
            f"Config key '{key}'{where(key)} must be {expected}, got {value!r} ({type(value).__name__})."
        )

    missing = [key for key in _REQUIRED_INT if configs.get(key) is None]
    if missing:
        origin = f" in config '{source}'" if source else " (no config_path given)"
        raise ValueError(f"Missing required config key(s) {missing}{origin}.")
    for key in _REQUIRED_INT + _OPTIONAL_POSITIVE_INT + ("segment_vocab_size",):
        value = configs.get(key)
        if value is None:
            continue
        if not _is_int(value) or value < 0:
            fail(key, "a non-negative int", value)
        if value == 0 and key in _POSITIVE_INT + _OPTIONAL_POSITIVE_INT:
            fail(key, "> 0", value)
    for key in ("dropout_rate", "attention_dropout_rate"):
        value = configs.get(key)
        if value is not None and not (_is_number(value) and 0 <= value < 1):
            fail(key, "a number in [0, 1)", value)
    value = configs.get("layer_norm_epsilon")
    if value is not None and not (_is_number(value) and value > 0):
        fail("layer_norm_epsilon", "a number > 0", value)
    value = configs.get("initializer_range")
    if value is not None and not (_is_number(value) and value >= 0):
        fail("initializer_range", "a number >= 0", value)
    act = configs.get("hidden_act")
    acts = act if isinstance(act, (list, tuple)) else [act]
    if act is not None and not all(isinstance(a, str) or callable(a) for a in acts):
        fail("hidden_act", "an activation name (str) or a list of them", act)
    if configs["hidden_size"] % configs["num_attention_heads"] and not configs.get("attention_head_size"):
        raise ValueError(
            f"hidden_size {configs['hidden_size']} is not divisible by num_attention_heads "
            f"{configs['num_attention_heads']}{where('hidden_size') or where('num_attention_heads')}."
        )
    keep = configs.get("keep_tokens")
    if keep is not None:
        if isinstance(keep, (str, bytes)) or not hasattr(keep, "__len__") or not all(_is_int(i) for i in keep):
            fail("keep_tokens", "a list of int token ids", keep)
        bad = [(n, int(i)) for n, i in enumerate(keep) if not 0 <= i < configs["vocab_size"]]
        if bad:
            raise ValueError(
                f"keep_tokens[{bad[0][0]}] = {bad[0][1]} is outside the vocabulary of vocab_size "
                f"{configs['vocab_size']}{where('vocab_size')} ({len(bad)} id(s) out of range)."
            )
    compound = configs.get("compound_tokens")
    if compound is not None:
        if isinstance(compound, (str, bytes)) or not all(
            hasattr(ids, "__len__") and len(ids) > 0 and all(_is_int(i) and i >= 0 for i in ids) for ids in compound
        ):
            fail("compound_tokens", "a list of non-empty lists of non-negative int token ids", compound)
    configs.setdefault("hidden_act", "gelu")


def build_transformer_model(
    config_path=None,
    checkpoint_path=None,
    model="bert",
    application="encoder",
    return_keras_model=True,
    allow_pickle=False,
    allow_nonfinite=False,
    lora_rank=None,
    lora_alpha=None,
    lora_targets=None,
    **kwargs,
):
    """Build a transformer from a config file and optionally load a checkpoint (bert4keras API).

    Args:
        config_path: Google ``bert_config.json``, HF ``config.json``, OpenAI GPT-2
            ``hparams.json``, an HF model directory, or None (then every size must be given in
            ``kwargs``).
        checkpoint_path: TF1 checkpoint prefix or directory, ``.safetensors`` file or HF
            directory, or None for random initialisation.
        model: one of `MODELS` (``'bert'``, ``'roberta'``, ``'albert'``, ``'albert_unshared'``,
            ``'nezha'``, ``'roformer'``, ``'roformer_v2'``, ``'electra'``, ``'gpt'``,
            ``'gpt2'``, ``'gpt2_ml'``, ``'t5'``, ``'t5.1.0'``, ``'t5.1.1'``, ``'mt5.1.1'`` and
            their ``_encoder`` / ``_decoder``).
        application: ``'encoder'``, ``'lm'`` (causal attention) or ``'unilm'`` (seq2seq mask
            from segment_ids); both of the latter switch ``with_mlm`` on unless it is given.
        return_keras_model: return the ``keras.Model`` if True (a `TransformerModel`: functional,
            checks its array inputs and, on JAX, keeps its weights after a failed call), else the
            builder (with ``.model``, ``save_weights_as_checkpoint``,
            ``load_weights_from_checkpoint``; T5's has ``.encoder`` and ``.decoder``).
        allow_pickle: opt in to loading a pickle-based PyTorch ``checkpoint_path``
            (``pytorch_model.bin``, ``*.pt``) with ``torch.load(weights_only=True)``; by
            default such files are refused because unpickling can run arbitrary code.
        allow_nonfinite: load checkpoint variables holding NaN or Inf (with a warning); by
            default they are refused, naming the variable (see `load_weights_from_checkpoint`).
        lora_rank: None, or an int >= 1: after loading, add LoRA adapters of this rank to the
            ``lora_targets`` Dense layers and freeze every other weight (`bert4keras.lora.enable_lora`;
            layers added on top of the model later train as usual).
        lora_alpha: the adapters' scale numerator (scale ``lora_alpha / lora_rank``; default
            ``lora_rank``). lora_targets: Dense sublayer names or path globs (default
            ``('q_dense', 'v_dense')``, the attention's query and value projections).
        **kwargs: override config values and set builder options (``with_pool``, ``with_nsp``,
            ``with_mlm``, ``keep_tokens``, ``compound_tokens``, ``segment_vocab_size``,
            ``max_position``, ``hierarchical_position``, ``sequence_length``, ``dropout_rate``,
            ``ignore_invalid_weights``, ``name``, ...). Config-file names (``hidden_dropout_prob``,
            ``max_position_embeddings``, ...) are read as their bert4keras names, as in 0.11.5.
    Returns:
        A `TransformerModel` (``return_keras_model=True``) or the builder. Inputs: ``token_ids``
        int32 ``(batch_size, seq_len)``, then ``segment_ids`` of the same shape for families
        with segment embeddings (not GPT-2, GPT2_ML, T5, or ``segment_vocab_size=0``). Outputs,
        float32 (probabilities unless an activation such as ``with_mlm='linear'`` is given):

        - ``'encoder'``: the last hidden states ``(batch_size, seq_len, hidden_size)``;
          ``with_pool``: the pooled ``[CLS]`` vector ``(batch_size, hidden_size)`` instead;
          ``with_nsp``: next-sentence probabilities ``(batch_size, 2)`` instead;
          ``with_mlm``: token probabilities ``(batch_size, seq_len, vocab_size)`` instead, or
          after the pooled/NSP output as a list ``[pooled_or_nsp, mlm]`` when both are asked;
          ELECTRA ``with_discriminator``: ``(batch_size, seq_len, 1)``.
        - ``'lm'`` and ``'unilm'``: token probabilities ``(batch_size, seq_len, vocab_size)``
          (causal, resp. seq2seq attention); GPT, GPT-2 and GPT2_ML always give these.
        - T5 (inputs ``[encoder_token_ids, decoder_token_ids]``): decoder token probabilities
          ``(batch_size, decoder_seq_len, vocab_size)``; ``*_encoder``: the encoder states
          ``(batch_size, seq_len, hidden_size)``; ``*_decoder`` (inputs ``[encoder_states,
          decoder_token_ids]``): the decoder's probabilities.
    Raises:
        TypeError: a keyword no part of the chosen family uses (``with_pol=True``; the message
            lists close option names), or one it cannot honour (``with_pool`` on GPT, segment
            ids on GPT-2, says why); keys of a config file may go unused.
        ValueError: unknown model/application; missing config keys or invalid values (the
            message names the key, where it came from, what was expected and the value got);
            a config of another family than ``model`` (a T5 config with ``model='bert'``,
            a GPT-2 ``n_embd`` config with a BERT-style model, a BERT config with a T5 model;
            named, with the keys or ``model_type`` that tell); sizes whose parameters alone
            would exceed this machine's physical memory (with the estimate; raised before
            anything is allocated); checkpoint variables missing, mis-shaped or non-finite
            (unless ``allow_nonfinite=True``); a pickle checkpoint without
            ``allow_pickle=True``. FileNotFoundError: missing config/checkpoint.
    """
    if not isinstance(model, str) or model.lower() not in MODELS:
        raise ValueError(f"Unknown model={model!r}; expected one of {sorted(MODELS)}.")
    if application not in APPLICATIONS:
        raise ValueError(f"Unknown application={application!r}; expected one of {list(APPLICATIONS)}.")
    model = model.lower()
    if checkpoint_path is None and (allow_pickle or allow_nonfinite):
        raise TypeError("allow_pickle / allow_nonfinite apply to a checkpoint: without checkpoint_path nothing uses them.")
    if lora_rank is None and (lora_alpha is not None or lora_targets is not None):
        raise TypeError("lora_alpha / lora_targets apply to LoRA adapters: without lora_rank nothing uses them.")
    configs = read_config(config_path) if config_path is not None else {}
    _check_config_family(configs, model)
    source = configs.get("_config_path")
    if model.startswith(("t5.", "mt5.")):
        configs["version"] = model.split("_")[0]
    kwargs = _check_options(MODELS[model], model, kwargs)
    configs.update(kwargs)
    _validate_configs(configs, from_kwargs=set(kwargs))
    _check_parameter_memory(model, configs, source, from_kwargs=set(kwargs))
    configs["application"] = application
    transformer = MODELS[model](**configs)
    transformer.build(**configs)
    if checkpoint_path is not None:
        transformer.load_weights_from_checkpoint(
            checkpoint_path, allow_pickle=allow_pickle, allow_nonfinite=allow_nonfinite
        )
    if lora_rank is not None:
        targets = DEFAULT_TARGETS if lora_targets is None else lora_targets
        enable_lora(transformer.model, lora_rank, targets, alpha=lora_alpha)
    return transformer.model if return_keras_model else transformer


# bert4keras 0.11.5 options this library does not build (so a script using them hears so).
_OPTIONS_NOT_PORTED = {
    "residual_attention_scores": "RealFormer residual attention scores",
    "autoresize_weights": "resizing of checkpoint weights to other sizes",
    "shared_segment_embeddings": "segment embeddings shared with the token embeddings (GPT)",
}


def _options(cls):
    """The keyword arguments a builder class uses: the named parameters of ``__init__`` and
    ``build`` along its class hierarchy."""
    names = set()
    for klass in cls.__mro__:
        for method in (klass.__dict__.get("__init__"), klass.__dict__.get("build")):
            if method is None:
                continue
            for parameter in inspect.signature(method).parameters.values():
                if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                    names.add(parameter.name)
    names.discard("self")
    return names


def _check_options(cls, model, kwargs):
    """``kwargs`` of `build_transformer_model` with config names renamed (``hidden_dropout_prob``
    -> ``dropout_rate``, as bert4keras 0.11.5 read them), once every key is an option of ``cls``.

    Keys from a config file may go unused (configs carry more than a model needs); a keyword
    the user typed may not.

    Raises:
        TypeError: a keyword no part of ``cls`` uses (with the closest option names), one
            ``cls`` cannot honour (``with_pool`` on GPT: says why), or one given twice under
            two names (``max_position`` and ``max_position_embeddings``).
    """
    renamed = {}
    for key, value in kwargs.items():
        name = _CONFIG_RENAMES.get(key, key)
        if name in renamed:
            raise TypeError(f"build_transformer_model got {name!r} twice (as {key!r} and as {renamed[name][0]!r}).")
        renamed[name] = (key, value)
    known = _options(cls) | set(inspect.signature(build_transformer_model).parameters)
    unsupported = getattr(cls, "unsupported_options", {})
    for name, (key, value) in renamed.items():
        if name in unsupported and value:
            raise TypeError(f"model={model!r} cannot honour {key}={value!r}: {unsupported[name]}.")
        if name not in known and name not in unsupported:
            close = difflib.get_close_matches(name, sorted(known), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            if name in _OPTIONS_NOT_PORTED:
                hint = f" (bert4keras 0.11.5's {_OPTIONS_NOT_PORTED[name]}, not built here)"
            raise TypeError(
                f"build_transformer_model got an unexpected keyword argument {key!r}: "
                f"no part of model={model!r} ({cls.__name__}) uses it{hint}"
            )
    return {name: value for name, (key, value) in renamed.items()}


def get_layout_map(device_mesh, model_dim="model"):
    """A `keras.distribution.LayoutMap` sharding the transformer's large weights over `model_dim`.

    Megatron-style tensor parallelism (Shoeybi et al. 2019): the q/k/v projections and the first
    feed-forward dense (gated ones too) split their output units, the attention output and the
    second feed-forward dense their input units, and the token embeddings
    `(vocab_size, embedding_size)` their embedding dimension; everything else is replicated. The
    keys are regular expressions matching the whole `variable.path` for every family built here (BERT-likes,
    GPT, GPT-2, T5 encoder and decoder, self- and cross-attention).

        mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"], keras.distribution.list_devices())
        keras.distribution.set_distribution(keras.distribution.ModelParallel(
            layout_map=get_layout_map(mesh), batch_dim_name="batch"))
        model = build_transformer_model(...)   # built after set_distribution

    Args:
        device_mesh: `keras.distribution.DeviceMesh` with an axis named `model_dim`.
        model_dim: str, the mesh axis the weights are split over.
    Returns:
        `keras.distribution.LayoutMap`.
    Raises:
        ValueError: `model_dim` is not an axis of `device_mesh`.
    Source: KerasHub's `Backbone.get_layout_map`; Keras' distribution guide.
    """
    if model_dim not in device_mesh.axis_names:
        raise ValueError(f"model_dim={model_dim!r} is not an axis of the device mesh {list(device_mesh.axis_names)}")
    layout_map = keras.distribution.LayoutMap(device_mesh)
    layout_map[r".*Embedding-Token/embeddings"] = (None, model_dim)
    layout_map[r".*MultiHead\w*Attention/[qkv]_dense/kernel"] = (None, model_dim)
    layout_map[r".*MultiHead\w*Attention/o_dense/kernel"] = (model_dim, None)
    layout_map[r".*FeedForward/i\d+_dense/kernel"] = (None, model_dim)
    layout_map[r".*FeedForward/o_dense/kernel"] = (model_dim, None)
    return layout_map
