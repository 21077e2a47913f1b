"""Checkpoint files: reading official TF1 checkpoints and safetensors, writing TF1 checkpoints.

Owns the file formats only; which names a model family uses lives in `models.py`. A mapping
entry is a `Var`: a checkpoint name plus how the stored array relates to our weight.
"""

import glob
import os
import tempfile
from typing import NamedTuple, Optional, Tuple

import numpy as np


class Var(NamedTuple):
    """One checkpoint variable in a mapping, with how it is laid out there.

    Args:
        name: the variable's name in the checkpoint.
        transpose: stored as the transpose of our weight (torch ``Linear.weight``, BERT's
            ``cls/seq_relationship/output_weights``, Mesh-TF's ``relative_attention_bias``).
        vocab: the axis of the stored array (after `squeeze`/`transpose`) that follows the
            token vocabulary, so ``keep_tokens`` / ``compound_tokens`` apply; None if none.
        offset: leading rows of the stored table to skip (HF RoBERTa's position table starts
            at ``pad_token_id + 1``).
        squeeze: the stored array has an extra leading axis of size 1 (OpenAI GPT-2's
            ``[1, in, out]`` convolution weights).
        split: ``(index, parts)``: our weight is part ``index`` of ``parts`` equal slices of the
            stored array's last axis (fused q|k|v projections such as GPT-2's ``c_attn``).
    """

    name: str
    transpose: bool = False
    vocab: Optional[int] = None
    offset: int = 0
    squeeze: bool = False
    split: Optional[Tuple[int, int]] = None

    def to_weight(self, value):
        """Stored array -> our weight's layout (vocab selection is left to the model)."""
        if self.squeeze:
            value = value[0]
        if self.split is not None:
            index, parts = self.split
            value = np.split(value, parts, axis=-1)[index]
        if self.transpose:
            value = value.T
        if self.offset:
            value = value[self.offset:]
        return value

    def to_stored(self, value):
        """Our weight -> the stored layout (one part of it, for `split`)."""
        if self.transpose:
            value = value.T
        if self.squeeze and self.split is None:
            value = value[None]
        return value


def T(name, **kwargs):
    """A variable stored transposed (torch ``nn.Linear.weight`` is ``(out, in)``)."""
    return Var(name, transpose=True, **kwargs)


def as_var(spec):
    return spec if isinstance(spec, Var) else Var(spec)


def collect_stored(pairs):
    """``[(Var, our weight as ndarray)]`` -> ``{name: stored ndarray}``, re-fusing split parts."""
    out, parts = {}, {}
    for var, value in pairs:
        value = var.to_stored(value)
        if var.split is None:
            out[var.name] = value
        else:
            index, count = var.split
            parts.setdefault(var.name, [None] * count)[index] = (var, value)
    for name, pieces in parts.items():
        if any(p is None for p in pieces):
            raise ValueError(f"Cannot write '{name}': some of its {len(pieces)} fused parts are missing.")
        value = np.concatenate([v for _, v in pieces], axis=-1)
        out[name] = value[None] if pieces[0][0].squeeze else value
    return out


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


def _data_shard_counts(prefix):
    """Shard counts ``N`` of the ``prefix.data-*-of-N`` files present (any checkpoint)."""
    counts = set()
    for path in glob.glob(glob.escape(prefix) + ".data-?????-of-?????"):
        try:
            counts.add(int(path[-5:]))
        except ValueError:
            pass
    return counts


def _fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_tf_checkpoint(prefix, variables):
    """Write ``{name: ndarray}`` as a TF1 checkpoint (``prefix.index`` + ``prefix.data-*``).

    Atomic: a kill at any moment leaves either the previous checkpoint or the new one readable
    at ``prefix``, never a mix. The files are written and fsynced in a temporary directory beside
    ``prefix``; the new data files get a shard count ``N`` (``prefix.data-0000i-of-0000N``, N in
    1..3) that no data file at ``prefix`` has, so renaming them into place leaves the previous
    checkpoint's data untouched; renaming the index (which names its data files) is the single
    commit point; the previous data files are deleted after it. (With fewer than 3 variables
    the shard counts may run out; then the data file is replaced before the index and the
    guarantee holds except for that instant.) Readable by ``tf.train.load_checkpoint`` and
    TF1's ``tf.train.Saver``.
    """
    import tensorflow as tf

    prefix = os.path.abspath(os.fspath(prefix))
    directory = os.path.dirname(prefix)
    os.makedirs(directory, exist_ok=True)
    names = list(variables)
    if not names:
        raise ValueError(f"write_tf_checkpoint('{prefix}'): no variables to write.")
    used = _data_shard_counts(prefix)
    shards = next((n for n in (1, 2, 3) if n not in used and n <= len(names)), 1)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".tmp-ckpt-") as tmp:
        parts = []
        for i in range(shards):
            group = names[i::shards]
            parts.append(os.path.join(tmp, f"part-{i}"))
            tf.raw_ops.SaveV2(
                prefix=parts[-1],
                tensor_names=group,
                shape_and_slices=[""] * len(group),
                tensors=[np.asarray(variables[name]) for name in group],
            )
        merged = os.path.join(tmp, "model.ckpt")
        tf.raw_ops.MergeV2Checkpoints(checkpoint_prefixes=parts, destination_prefix=merged, delete_old_dirs=False)
        files = [f for f in os.listdir(tmp) if f.startswith("model.ckpt.")]
        for f in files:
            _fsync(os.path.join(tmp, f))
        for f in sorted(files, key=lambda f: f.endswith(".index")):  # data first, index last
            os.replace(os.path.join(tmp, f), prefix + f[len("model.ckpt"):])
            _fsync(directory)
    for stale in used - {shards}:
        for path in glob.glob(glob.escape(prefix) + ".data-?????-of-%05d" % stale):
            os.remove(path)
