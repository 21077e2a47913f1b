"""Transformer model builders and their checkpoint mappings.

Owns: the `Transformer` base (inputs, layer cache, weight loading/saving), one class per model
family with its `variable_mapping()` (official TF checkpoint names) beside its
`hf_variable_mapping()` (Hugging Face safetensors names), the checkpoint readers/writer, and
`build_transformer_model`.
"""

import glob
import json
import os
import tempfile
import warnings
from typing import NamedTuple

import keras
import numpy as np
from keras import ops

from bert4keras.layers import (
    AttentionMask,
    BiasAdd,
    Embedding,
    FeedForward,
    LayerNormalization,
    MultiHeadAttention,
    PositionEmbedding,
    TakeToken,
)


class Var(NamedTuple):
    """One checkpoint variable in a mapping, with how it is laid out there.

    Args:
        name: the variable's name in the checkpoint.
        transpose: stored as the transpose of our weight (torch ``Linear.weight``, BERT's
            ``cls/seq_relationship/output_weights``).
        vocab: rows follow the token vocabulary, so ``keep_tokens`` / ``compound_tokens`` apply.
        offset: leading rows of the stored table to skip (HF RoBERTa's position table starts
            at ``pad_token_id + 1``).
    """

    name: str
    transpose: bool = False
    vocab: bool = False
    offset: int = 0


def T(name):
    """A variable stored transposed (torch ``nn.Linear.weight`` is ``(out, in)``)."""
    return Var(name, transpose=True)


# ---------------------------------------------------------------------------------------------
# Checkpoint readers and writer: they know file formats, not model names.


class CheckpointReader:
    """Read-only ``{name: ndarray}`` view of a checkpoint, loaded lazily by name.

    Opens a Google TF1 checkpoint (a prefix such as ``bert_model.ckpt``, or a directory with a
    ``checkpoint`` state file or a single ``*.index`` file), a ``.safetensors`` file, or a Hugging
    Face model directory containing ``model.safetensors``. Pickle-based files (``.bin``,
    ``.pt``) are refused: they can run arbitrary code when loaded.

    Attributes:
        format: ``'tf'`` or ``'hf'``.
        path: the resolved file or prefix.
    Raises:
        FileNotFoundError: nothing readable at ``path``.
        ValueError: a pickle-based file.
    """

    def __init__(self, path, strip_prefixes=()):
        path = os.fspath(path)
        self.path, self.format = self._resolve(path)
        if self.format == "hf":
            from safetensors import safe_open

            self._file = safe_open(self.path, framework="numpy")
            self._keys = {}
            for key in self._file.keys():
                short = key
                for prefix in strip_prefixes:
                    if key.startswith(prefix):
                        short = key[len(prefix):]
                        break
                self._keys.setdefault(short, key)
        else:
            import tensorflow as tf

            self._reader = tf.train.load_checkpoint(self.path)
            self._shapes = self._reader.get_variable_to_shape_map()

    @staticmethod
    def _resolve(path):
        if os.path.isdir(path):
            for name in ("model.safetensors",):
                if os.path.isfile(os.path.join(path, name)):
                    return os.path.join(path, name), "hf"
            state = os.path.join(path, "checkpoint")
            if os.path.isfile(state):
                import tensorflow as tf

                prefix = tf.train.latest_checkpoint(path)
                if prefix:
                    return prefix, "tf"
            indexes = glob.glob(os.path.join(path, "*.index"))
            if len(indexes) == 1:
                return indexes[0][: -len(".index")], "tf"
            if glob.glob(os.path.join(path, "*.bin")) or glob.glob(os.path.join(path, "*.pt")):
                raise ValueError(
                    f"Checkpoint directory '{path}' holds only pickle-based weights (*.bin/*.pt), "
                    "which are not loaded because unpickling can run arbitrary code; convert "
                    "them to model.safetensors."
                )
            raise FileNotFoundError(
                f"No checkpoint found in directory '{path}': expected model.safetensors, a TF "
                "'checkpoint' state file, or exactly one '*.index' file."
            )
        if path.endswith(".safetensors"):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Checkpoint file '{path}' does not exist.")
            return path, "hf"
        if path.endswith((".bin", ".pt", ".pth", ".pkl")):
            raise ValueError(
                f"Checkpoint '{path}' is pickle-based and is not loaded because unpickling can "
                "run arbitrary code; convert it to safetensors."
            )
        if path.endswith(".index"):
            path = path[: -len(".index")]
        if os.path.isfile(path + ".index"):
            return path, "tf"
        raise FileNotFoundError(
            f"Checkpoint '{path}' not found: expected a TF checkpoint prefix (with "
            f"'{os.path.basename(path)}.index' beside it), a .safetensors file or a directory."
        )

    def __contains__(self, name):
        return name in (self._keys if self.format == "hf" else self._shapes)

    def names(self):
        return list(self._keys if self.format == "hf" else self._shapes)

    def shape(self, name):
        if self.format == "hf":
            return tuple(self._file.get_slice(self._keys[name]).get_shape())
        return tuple(self._shapes[name])

    def __getitem__(self, name):
        if self.format == "hf":
            return self._file.get_tensor(self._keys[name])
        return self._reader.get_tensor(name)


def write_tf_checkpoint(prefix, variables):
    """Write ``{name: ndarray}`` as a TF1 checkpoint (``prefix.index`` + ``prefix.data-*``).

    The files are written in a temporary directory beside ``prefix`` and then renamed into
    place (data before index), so an interrupted save leaves any earlier checkpoint intact.
    Readable by ``tf.train.load_checkpoint`` and by TF1's ``tf.train.Saver``.
    """
    import tensorflow as tf

    prefix = os.path.abspath(os.fspath(prefix))
    directory = os.path.dirname(prefix)
    os.makedirs(directory, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".tmp-ckpt-") as tmp:
        tmp_prefix = os.path.join(tmp, "model.ckpt")
        with tf.Graph().as_default():
            tf_vars, feeds, assigns = [], {}, []
            for name, value in variables.items():
                value = np.asarray(value)
                var = tf.compat.v1.Variable(tf.zeros(value.shape, value.dtype), name=name)
                placeholder = tf.compat.v1.placeholder(value.dtype, value.shape)
                assigns.append(var.assign(placeholder))
                feeds[placeholder] = value
                tf_vars.append(var)
            saver = tf.compat.v1.train.Saver(tf_vars)
            with tf.compat.v1.Session() as sess:
                sess.run(assigns, feed_dict=feeds)
                saver.save(sess, tmp_prefix, write_meta_graph=False, write_state=False)
        files = sorted(os.listdir(tmp), key=lambda f: f.endswith(".index"))
        for f in files:
            os.replace(os.path.join(tmp, f), prefix + f[len("model.ckpt"):])


# ---------------------------------------------------------------------------------------------
# Model families.


class Transformer:
    """Base builder: inputs, a cache of named layers, and checkpoint loading/saving.

    Subclasses define `get_inputs`, `apply_embeddings`, `apply_main_layers`,
    `apply_final_layers`, `variable_mapping` and `hf_variable_mapping`. Layers are created
    once per name by `apply`, so a layer's name is also its key in the mappings.

    Args:
        vocab_size, hidden_size, num_hidden_layers, num_attention_heads, intermediate_size:
            int sizes (Google BERT config names).
        hidden_act: str activation of the feed-forward block (``'gelu'`` = erf form).
        dropout_rate, attention_dropout_rate: float.
        embedding_size: int, defaults to hidden_size.
        attention_head_size, attention_key_size: int, default ``hidden_size // heads``.
        sequence_length: int or None, static input length.
        keep_tokens: list of int, rows of the checkpoint's vocabulary to keep (in that order).
        compound_tokens: list of lists of int; appends rows equal to the mean of those rows.
        layer_norm_epsilon: float. pad_token_id: int or None (padding mask; None = no mask).
        initializer_range: float, stddev of the truncated-normal initializer.
        application: ``'encoder'``, ``'lm'`` (causal mask) or ``'unilm'`` (seq2seq mask).
        ignore_invalid_weights: bool, warn instead of raising on missing/mis-shaped variables.
        name: str, the Keras model's name.
    """

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
        layer_norm_epsilon=1e-12,
        pad_token_id=0,
        initializer_range=0.02,
        application="encoder",
        ignore_invalid_weights=False,
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
        self.layer_norm_epsilon = layer_norm_epsilon
        self.pad_token_id = pad_token_id
        self.initializer_range = initializer_range
        self.application = application
        self.ignore_invalid_weights = ignore_invalid_weights
        self.name = name
        self.layers = {}
        self.built = False

    @property
    def initializer(self):
        return keras.initializers.TruncatedNormal(stddev=self.initializer_range)

    def build(self, **kwargs):
        """Create the Keras model as ``self.model`` (inputs -> embeddings -> blocks -> heads)."""
        if self.built:
            return
        inputs = self.get_inputs()
        self.inputs = inputs
        self.attention_mask = self.compute_attention_mask(inputs)
        x = self.apply_embeddings(inputs)
        for index in range(self.num_hidden_layers):
            x = self.apply_main_layers(x, index)
        outputs = self.apply_final_layers(x)
        self.outputs = outputs if isinstance(outputs, list) else [outputs]
        self.model = keras.Model(
            self.inputs if len(self.inputs) > 1 else self.inputs[0],
            outputs,
            name=self.name,
        )
        self.built = True

    def apply(self, inputs=None, layer=None, arguments=None, **kwargs):
        """Call the layer named ``kwargs['name']`` on ``inputs``, creating it on first use.

        Dropout with rate 0 is skipped. ``inputs=None`` returns the layer itself.
        """
        if layer is keras.layers.Dropout and not kwargs.get("rate"):
            return inputs
        name = kwargs["name"]
        if name not in self.layers:
            self.layers[name] = layer(**kwargs)
        if inputs is None:
            return self.layers[name]
        return self.layers[name](inputs, **(arguments or {}))

    def compute_attention_mask(self, inputs):
        """Boolean mask ``(batch_size, 1, q_len or 1, k_len)`` for `self.application`."""
        mode = {"encoder": "padding", "lm": "causal", "unilm": "unilm"}[self.application]
        mask_inputs = inputs[:2] if mode == "unilm" else inputs[0]
        return self.apply(
            inputs=mask_inputs,
            layer=AttentionMask,
            mode=mode,
            pad_id=self.pad_token_id,
            name="Attention-Mask",
        )

    # -- weights ------------------------------------------------------------------------------

    def variable_mapping(self):
        """``{layer name: [Var or name, ...]}`` in the order of ``layer.weights``, official names."""
        return {}

    def hf_variable_mapping(self):
        """The same as `variable_mapping`, with Hugging Face safetensors names."""
        return {}

    hf_prefixes = ()

    def _mapping_for(self, reader):
        mapping = self.variable_mapping() if reader.format == "tf" else self.hf_variable_mapping()
        mapping = {k: [v if isinstance(v, Var) else Var(v) for v in vs] for k, vs in mapping.items()}
        return {k: v for k, v in mapping.items() if k in self.layers}

    def load_embeddings(self, embeddings):
        """Apply ``keep_tokens`` and ``compound_tokens`` to rows that follow the vocabulary."""
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
        return embeddings

    def load_variable(self, reader, var):
        value = reader[var.name]
        if var.transpose:
            value = value.T
        if var.offset:
            value = value[var.offset:]
        if var.vocab:
            value = self.load_embeddings(value)
        return value

    def load_weights_from_checkpoint(self, checkpoint, mapping=None):
        """Load an official TF checkpoint or HF safetensors into the model.

        Args:
            checkpoint: path (see `CheckpointReader`).
            mapping: optional ``{layer name: [names]}`` overriding the family's mapping.
        Raises:
            ValueError: a variable is missing or has the wrong shape (message names the
                variable, the layer, the expected and found shapes), unless
                ``ignore_invalid_weights=True`` made it a warning and the weight was skipped.
        """
        reader = CheckpointReader(checkpoint, strip_prefixes=self.hf_prefixes)
        if mapping is None:
            mapping = self._mapping_for(reader)
        else:
            mapping = {k: [v if isinstance(v, Var) else Var(v) for v in vs] for k, vs in mapping.items()}
        for layer_name, specs in mapping.items():
            weights = self.layers[layer_name].weights
            for weight, spec in zip(weights, specs):
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
                    raise ValueError(problem)
                weight.assign(value.astype(weight.dtype))

    def save_weights_as_checkpoint(self, filename, mapping=None, dtype=None):
        """Write the weights as an official-format TF1 checkpoint (atomic; see `write_tf_checkpoint`).

        Args:
            filename: checkpoint prefix, e.g. ``out/bert_model.ckpt``.
            mapping: optional override of `variable_mapping()`.
            dtype: optional NumPy dtype to cast to (default: the weights' dtype).
        """
        mapping = self.variable_mapping() if mapping is None else mapping
        variables = {}
        for layer_name, specs in mapping.items():
            if layer_name not in self.layers:
                continue
            for weight, spec in zip(self.layers[layer_name].weights, specs):
                spec = spec if isinstance(spec, Var) else Var(spec)
                value = ops.convert_to_numpy(weight)
                if spec.transpose:
                    value = value.T
                variables[spec.name] = value.astype(dtype) if dtype else value
        write_tf_checkpoint(filename, variables)


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
    Inputs: ``Input-Token`` (and ``Input-Segment``), int32 ``(batch_size, seq_len)``.
    Outputs (bert4keras's convention): the last hidden states ``(batch_size, seq_len,
    hidden_size)`` alone; with one head, that head's output alone (pooled
    ``(batch_size, hidden_size)``, NSP ``(batch_size, 2)`` or MLM ``(batch_size, seq_len,
    vocab_size)``); with pool/NSP and MLM, the list of both.
    """

    hf_prefixes = ("bert.",)

    def __init__(
        self,
        max_position,
        segment_vocab_size=2,
        with_pool=False,
        with_nsp=False,
        with_mlm=False,
        hierarchical_position=None,
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

    def get_inputs(self):
        inputs = [keras.Input(shape=(self.sequence_length,), dtype="int32", name="Input-Token")]
        if self.segment_vocab_size > 0:
            inputs.append(
                keras.Input(shape=(self.sequence_length,), dtype="int32", name="Input-Segment")
            )
        return inputs

    def compute_attention_mask(self, inputs):
        if self.application == "unilm" and self.segment_vocab_size <= 0:
            raise ValueError("application='unilm' needs segment ids: segment_vocab_size must be > 0.")
        return super().compute_attention_mask(inputs)

    def apply_embeddings(self, inputs):
        x = inputs[0]
        x = self.apply(
            inputs=x,
            layer=Embedding,
            input_dim=self.vocab_size,
            output_dim=self.embedding_size,
            embeddings_initializer=self.initializer,
            name="Embedding-Token",
        )
        if self.segment_vocab_size > 0:
            s = self.apply(
                inputs=inputs[1],
                layer=keras.layers.Embedding,
                input_dim=self.segment_vocab_size,
                output_dim=self.embedding_size,
                embeddings_initializer=self.initializer,
                name="Embedding-Segment",
            )
            x = self.apply(inputs=[x, s], layer=keras.layers.Add, name="Embedding-Token-Segment")
        x = self.apply(
            inputs=x,
            layer=PositionEmbedding,
            input_dim=self.max_position,
            output_dim=self.embedding_size,
            merge_mode="add",
            hierarchical=self.hierarchical_position,
            embeddings_initializer=self.initializer,
            name="Embedding-Position",
        )
        x = self.apply(
            inputs=x, layer=LayerNormalization, epsilon=self.layer_norm_epsilon, name="Embedding-Norm"
        )
        x = self.apply(inputs=x, layer=keras.layers.Dropout, rate=self.dropout_rate, name="Embedding-Dropout")
        if self.embedding_size != self.hidden_size:
            x = self.apply(
                inputs=x,
                layer=keras.layers.Dense,
                units=self.hidden_size,
                kernel_initializer=self.initializer,
                name="Embedding-Mapping",
            )
        return x

    def apply_main_layers(self, x, index):
        """One post-LN block: x = LN(x + Dropout(MHA(x))); x = LN(x + Dropout(FFN(x)))."""
        attention_name = f"Transformer-{index}-MultiHeadSelfAttention"
        feed_forward_name = f"Transformer-{index}-FeedForward"
        xi = x
        x = self.apply(
            inputs=[x, x, x, self.attention_mask],
            layer=MultiHeadAttention,
            heads=self.num_attention_heads,
            head_size=self.attention_head_size,
            out_dim=self.hidden_size,
            key_size=self.attention_key_size,
            attention_dropout=self.attention_dropout_rate,
            kernel_initializer=self.initializer,
            name=attention_name,
        )
        x = self.apply(inputs=x, layer=keras.layers.Dropout, rate=self.dropout_rate, name=f"{attention_name}-Dropout")
        x = self.apply(inputs=[xi, x], layer=keras.layers.Add, name=f"{attention_name}-Add")
        x = self.apply(
            inputs=x, layer=LayerNormalization, epsilon=self.layer_norm_epsilon, name=f"{attention_name}-Norm"
        )
        xi = x
        x = self.apply(
            inputs=x,
            layer=FeedForward,
            units=self.intermediate_size,
            activation=self.hidden_act,
            kernel_initializer=self.initializer,
            name=feed_forward_name,
        )
        x = self.apply(inputs=x, layer=keras.layers.Dropout, rate=self.dropout_rate, name=f"{feed_forward_name}-Dropout")
        x = self.apply(inputs=[xi, x], layer=keras.layers.Add, name=f"{feed_forward_name}-Add")
        x = self.apply(
            inputs=x, layer=LayerNormalization, epsilon=self.layer_norm_epsilon, name=f"{feed_forward_name}-Norm"
        )
        return x

    def apply_final_layers(self, x):
        outputs = [x]
        if self.with_pool:
            pooled = self.apply(inputs=x, layer=TakeToken, index=0, name="Pooler")
            pooled = self.apply(
                inputs=pooled,
                layer=keras.layers.Dense,
                units=self.hidden_size,
                activation="tanh" if self.with_pool is True else self.with_pool,
                kernel_initializer=self.initializer,
                name="Pooler-Dense",
            )
            if self.with_nsp:
                pooled = self.apply(
                    inputs=pooled,
                    layer=keras.layers.Dense,
                    units=2,
                    activation="softmax" if self.with_nsp is True else self.with_nsp,
                    kernel_initializer=self.initializer,
                    name="NSP-Proba",
                )
            outputs.append(pooled)
        if self.with_mlm:
            from bert4keras.backend import get_activation

            y = self.apply(
                inputs=x,
                layer=keras.layers.Dense,
                units=self.embedding_size,
                activation=get_activation(self.hidden_act),
                kernel_initializer=self.initializer,
                name="MLM-Dense",
            )
            y = self.apply(inputs=y, layer=LayerNormalization, epsilon=self.layer_norm_epsilon, name="MLM-Norm")
            y = self.apply(inputs=y, layer=Embedding, arguments={"mode": "dense"}, name="Embedding-Token")
            y = self.apply(inputs=y, layer=BiasAdd, name="MLM-Bias")
            activation = "softmax" if self.with_mlm is True else self.with_mlm
            y = self.apply(inputs=y, layer=keras.layers.Activation, activation=activation, name="MLM-Activation")
            outputs.append(y)
        if len(outputs) == 1:
            return outputs[0]
        if len(outputs) == 2:
            return outputs[1]
        return outputs[1:]

    def variable_mapping(self):
        mapping = {
            "Embedding-Token": [Var("bert/embeddings/word_embeddings", vocab=True)],
            "Embedding-Segment": ["bert/embeddings/token_type_embeddings"],
            "Embedding-Position": ["bert/embeddings/position_embeddings"],
            "Embedding-Norm": ["bert/embeddings/LayerNorm/beta", "bert/embeddings/LayerNorm/gamma"],
            "Embedding-Mapping": [
                "bert/encoder/embedding_hidden_mapping_in/kernel",
                "bert/encoder/embedding_hidden_mapping_in/bias",
            ],
            "Pooler-Dense": ["bert/pooler/dense/kernel", "bert/pooler/dense/bias"],
            "NSP-Proba": [T("cls/seq_relationship/output_weights"), "cls/seq_relationship/output_bias"],
            "MLM-Dense": [
                "cls/predictions/transform/dense/kernel",
                "cls/predictions/transform/dense/bias",
            ],
            "MLM-Norm": [
                "cls/predictions/transform/LayerNorm/beta",
                "cls/predictions/transform/LayerNorm/gamma",
            ],
            "MLM-Bias": [Var("cls/predictions/output_bias", vocab=True)],
        }
        for i in range(self.num_hidden_layers):
            prefix = f"bert/encoder/layer_{i}/"
            mapping[f"Transformer-{i}-MultiHeadSelfAttention"] = [
                prefix + "attention/self/query/kernel",
                prefix + "attention/self/query/bias",
                prefix + "attention/self/key/kernel",
                prefix + "attention/self/key/bias",
                prefix + "attention/self/value/kernel",
                prefix + "attention/self/value/bias",
                prefix + "attention/output/dense/kernel",
                prefix + "attention/output/dense/bias",
            ]
            mapping[f"Transformer-{i}-MultiHeadSelfAttention-Norm"] = [
                prefix + "attention/output/LayerNorm/beta",
                prefix + "attention/output/LayerNorm/gamma",
            ]
            mapping[f"Transformer-{i}-FeedForward"] = [
                prefix + "intermediate/dense/kernel",
                prefix + "intermediate/dense/bias",
                prefix + "output/dense/kernel",
                prefix + "output/dense/bias",
            ]
            mapping[f"Transformer-{i}-FeedForward-Norm"] = [
                prefix + "output/LayerNorm/beta",
                prefix + "output/LayerNorm/gamma",
            ]
        return mapping

    def hf_variable_mapping(self):
        """BertModel / BertForPreTraining names (the ``bert.`` prefix is optional)."""
        mapping = {
            "Embedding-Token": [Var("embeddings.word_embeddings.weight", vocab=True)],
            "Embedding-Segment": ["embeddings.token_type_embeddings.weight"],
            "Embedding-Position": ["embeddings.position_embeddings.weight"],
            "Embedding-Norm": ["embeddings.LayerNorm.bias", "embeddings.LayerNorm.weight"],
            "Pooler-Dense": [T("pooler.dense.weight"), "pooler.dense.bias"],
            "NSP-Proba": [T("cls.seq_relationship.weight"), "cls.seq_relationship.bias"],
            "MLM-Dense": [T("cls.predictions.transform.dense.weight"), "cls.predictions.transform.dense.bias"],
            "MLM-Norm": ["cls.predictions.transform.LayerNorm.bias", "cls.predictions.transform.LayerNorm.weight"],
            "MLM-Bias": [Var("cls.predictions.bias", vocab=True)],
        }
        for i in range(self.num_hidden_layers):
            prefix = f"encoder.layer.{i}."
            mapping.update(self._hf_block_mapping(i, prefix))
        return mapping

    @staticmethod
    def _hf_block_mapping(i, prefix):
        return {
            f"Transformer-{i}-MultiHeadSelfAttention": [
                T(prefix + "attention.self.query.weight"),
                prefix + "attention.self.query.bias",
                T(prefix + "attention.self.key.weight"),
                prefix + "attention.self.key.bias",
                T(prefix + "attention.self.value.weight"),
                prefix + "attention.self.value.bias",
                T(prefix + "attention.output.dense.weight"),
                prefix + "attention.output.dense.bias",
            ],
            f"Transformer-{i}-MultiHeadSelfAttention-Norm": [
                prefix + "attention.output.LayerNorm.bias",
                prefix + "attention.output.LayerNorm.weight",
            ],
            f"Transformer-{i}-FeedForward": [
                T(prefix + "intermediate.dense.weight"),
                prefix + "intermediate.dense.bias",
                T(prefix + "output.dense.weight"),
                prefix + "output.dense.bias",
            ],
            f"Transformer-{i}-FeedForward-Norm": [
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
        mapping["MLM-Bias"] = [Var("lm_head.bias", vocab=True)]
        return mapping


MODELS = {"bert": BERT, "roberta": RoBERTa}
APPLICATIONS = ("encoder", "lm", "unilm")

# Google/HF config names -> bert4keras argument names.
_CONFIG_RENAMES = {
    "max_position_embeddings": "max_position",
    "hidden_dropout_prob": "dropout_rate",
    "attention_probs_dropout_prob": "attention_dropout_rate",
    "type_vocab_size": "segment_vocab_size",
    "layer_norm_eps": "layer_norm_epsilon",
}
_REQUIRED_INT = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
)


def read_config(config_path):
    """Read a Google ``bert_config.json`` or HF ``config.json`` (or an HF model directory).

    Returns:
        dict with bert4keras argument names (``max_position``, ``dropout_rate``,
        ``attention_dropout_rate``, ``segment_vocab_size``, ``layer_norm_epsilon``).
    Raises:
        FileNotFoundError: no such file. ValueError: not a JSON object.
    """
    config_path = os.fspath(config_path)
    if os.path.isdir(config_path):
        for name in ("config.json", "bert_config.json"):
            if os.path.isfile(os.path.join(config_path, name)):
                config_path = os.path.join(config_path, name)
                break
        else:
            raise FileNotFoundError(f"No config.json or bert_config.json in directory '{config_path}'.")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"Config file '{config_path}' does not exist.")
    try:
        with open(config_path, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"Config file '{config_path}' is not valid JSON: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"Config file '{config_path}' must hold a JSON object, got {type(raw).__name__}.")
    configs = {}
    for key, value in raw.items():
        configs[_CONFIG_RENAMES.get(key, key)] = value
    if raw.get("model_type") == "roberta" and "max_position" in configs:
        # HF RoBERTa reserves the first pad_token_id + 1 positions.
        offset = int(raw.get("pad_token_id", 1)) + 1
        configs["max_position"] -= offset
        configs["hf_position_offset"] = offset
    configs["_config_path"] = config_path
    return configs


def _validate_configs(configs):
    source = configs.pop("_config_path", None)
    where = f" in config '{source}'" if source else ""
    missing = [key for key in _REQUIRED_INT if configs.get(key) is None]
    if missing:
        raise ValueError(f"Missing required config key(s) {missing}{where}.")
    for key in _REQUIRED_INT + ("max_position", "segment_vocab_size"):
        value = configs.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"Config key '{key}'{where} must be a non-negative int, got {value!r}.")
    if configs["hidden_size"] % configs["num_attention_heads"] and not configs.get("attention_head_size"):
        raise ValueError(
            f"hidden_size {configs['hidden_size']} is not divisible by num_attention_heads "
            f"{configs['num_attention_heads']}{where}."
        )
    configs.setdefault("max_position", 512)
    configs.setdefault("hidden_act", "gelu")


def build_transformer_model(
    config_path=None,
    checkpoint_path=None,
    model="bert",
    application="encoder",
    return_keras_model=True,
    **kwargs,
):
    """Build a transformer from a config file and optionally load a checkpoint (bert4keras API).

    Args:
        config_path: Google ``bert_config.json``, HF ``config.json``, an HF model directory, or
            None (then every size must be given in ``kwargs``).
        checkpoint_path: TF1 checkpoint prefix or directory, ``.safetensors`` file or HF
            directory, or None for random initialisation.
        model: ``'bert'`` or ``'roberta'``.
        application: ``'encoder'``, ``'lm'`` (causal attention) or ``'unilm'`` (seq2seq mask
            from segment_ids); both of the latter switch ``with_mlm`` on unless it is given.
        return_keras_model: return ``keras.Model`` if True, else the builder (with ``.model``,
            ``save_weights_as_checkpoint``, ``load_weights_from_checkpoint``).
        **kwargs: override config values and set builder options (``with_pool``, ``with_nsp``,
            ``with_mlm``, ``keep_tokens``, ``compound_tokens``, ``segment_vocab_size``,
            ``max_position``, ``hierarchical_position``, ``sequence_length``, ``dropout_rate``,
            ``ignore_invalid_weights``, ``name``, ...).
    Raises:
        ValueError: unknown model/application, missing or invalid config keys, checkpoint
            variables missing or mis-shaped. FileNotFoundError: missing config/checkpoint.
    """
    if not isinstance(model, str) or model.lower() not in MODELS:
        raise ValueError(f"Unknown model={model!r}; expected one of {sorted(MODELS)}.")
    if application not in APPLICATIONS:
        raise ValueError(f"Unknown application={application!r}; expected one of {list(APPLICATIONS)}.")
    configs = read_config(config_path) if config_path is not None else {}
    configs.update(kwargs)
    _validate_configs(configs)
    configs["application"] = application
    transformer = MODELS[model.lower()](**configs)
    transformer.build()
    if checkpoint_path is not None:
        transformer.load_weights_from_checkpoint(checkpoint_path)
    return transformer.model if return_keras_model else transformer
