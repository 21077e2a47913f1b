"""Checkpoint files: reading official TF1 checkpoints and safetensors, writing TF1 checkpoints.

Owns the file formats only; which names a model family uses lives in `models.py`. A mapping
entry is a `Var`: a checkpoint name plus how the stored array relates to our weight.
"""

import glob
import json
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
            if var.name in out and not np.array_equal(out[var.name], value):
                raise ValueError(
                    f"Cannot write '{var.name}': several weights map to this one checkpoint "
                    "variable and their values differ (e.g. albert_unshared's blocks after "
                    "fine-tuning; the ALBERT format holds one shared block)."
                )
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


def count_nonfinite(value):
    """Number of NaN / +-Inf entries of a NumPy array (0 for integer arrays)."""
    value = np.asarray(value)
    if value.dtype.kind in "biu":
        return 0
    finite = np.isfinite(value)
    return 0 if finite.all() else int(finite.size - np.count_nonzero(finite))


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")


class CheckpointReader:
    """Read-only ``{name: ndarray}`` view of a checkpoint, loaded lazily by name.

    Opens a Google TF1 checkpoint (a prefix such as ``bert_model.ckpt``, or a directory with a
    ``checkpoint`` state file or a single ``*.index`` file), a ``.safetensors`` file, or a Hugging
    Face model directory containing ``model.safetensors``. Pickle-based files (``.bin``, ``.pt``,
    ``.pth``, ``.pkl``, e.g. ``pytorch_model.bin``) can run arbitrary code when unpickled, so they
    are refused unless ``allow_pickle=True``; then they are read with
    ``torch.load(path, map_location="cpu", weights_only=True)`` (PyTorch's restricted unpickler,
    which accepts tensors and plain containers only), importing torch only at that point.

    Args:
        path: str or os.PathLike, file, prefix or directory as above.
        strip_prefixes: name prefixes to drop from Hugging Face names (``'bert.'``, ...).
        allow_pickle: bool, opt in to reading pickle-based PyTorch files (default False).
    Attributes:
        format: ``'tf'`` (official TF names) or ``'hf'`` (Hugging Face names, from a
            safetensors or an opted-in PyTorch pickle file).
        path: the resolved file or prefix.
    Raises:
        FileNotFoundError: nothing readable at ``path``.
        ValueError: a pickle-based file without ``allow_pickle=True`` (the message names the
            file and the opt-in), a directory with several pickle files and no
            ``pytorch_model.bin`` (sharded: not supported), or a file that cannot be parsed (named).
        ImportError: ``allow_pickle=True`` on a pickle file but PyTorch is not installed.
    """

    def __init__(self, path, strip_prefixes=(), allow_pickle=False):
        path = os.fspath(path)
        self.path, kind = self._resolve(path, allow_pickle)
        self.format = "tf" if kind == "tf" else "hf"
        if kind == "tf":
            import tensorflow as tf

            try:
                self._reader = tf.train.load_checkpoint(self.path)
            except Exception as e:  # tf raises DataLossError / NotFoundError with long messages
                raise ValueError(f"Cannot read TF checkpoint '{self.path}': {type(e).__name__}: {e}") from e
            self._shapes = self._reader.get_variable_to_shape_map()
            return
        if kind == "safetensors":
            from safetensors import SafetensorError, safe_open

            try:
                self._file = safe_open(self.path, framework="numpy")
            except (SafetensorError, OSError) as e:
                raise ValueError(f"Cannot read safetensors file '{self.path}': {e}") from e
            stored = list(self._file.keys())
        else:
            self._tensors = _torch_load(self.path)
            stored = list(self._tensors)
        self._keys = {}
        for key in stored:
            short = key
            for prefix in strip_prefixes:
                if key.startswith(prefix):
                    short = key[len(prefix):]
                    break
            self._keys.setdefault(short, key)

    @staticmethod
    def _resolve(path, allow_pickle=False):
        """``path`` -> ``(file or prefix, kind)`` with kind ``'tf'``, ``'safetensors'`` or ``'pickle'``."""
        if os.path.isdir(path):
            if os.path.isfile(os.path.join(path, "model.safetensors")):
                return os.path.join(path, "model.safetensors"), "safetensors"
            state = os.path.join(path, "checkpoint")
            if os.path.isfile(state):
                import tensorflow as tf

                prefix = tf.train.latest_checkpoint(path)
                if prefix:
                    return prefix, "tf"
            indexes = glob.glob(os.path.join(path, "*.index"))
            if len(indexes) == 1:
                return indexes[0][: -len(".index")], "tf"
            pickles = sorted(f for f in os.listdir(path) if f.endswith(PICKLE_SUFFIXES))
            if pickles:
                preferred = [f for f in pickles if f == "pytorch_model.bin"] or pickles
                if allow_pickle and len(preferred) == 1:
                    return os.path.join(path, preferred[0]), "pickle"
                if allow_pickle:
                    raise ValueError(
                        f"Checkpoint directory '{path}' holds several pickle files {pickles}; "
                        "pass the file to load."
                    )
                raise ValueError(
                    f"Checkpoint directory '{path}' holds only pickle-based weights {pickles}, "
                    "which are not loaded by default because unpickling can run arbitrary code. "
                    "Convert them to model.safetensors, or opt in with allow_pickle=True "
                    "(build_transformer_model(..., allow_pickle=True)) to read them with "
                    "torch.load(weights_only=True)."
                )
            raise FileNotFoundError(
                f"No checkpoint found in directory '{path}': expected model.safetensors, a TF "
                "'checkpoint' state file, or exactly one '*.index' file."
            )
        if path.endswith(".safetensors"):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Checkpoint file '{path}' does not exist.")
            return path, "safetensors"
        if path.endswith(PICKLE_SUFFIXES):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"Checkpoint file '{path}' does not exist.")
            if allow_pickle:
                return path, "pickle"
            raise ValueError(
                f"Checkpoint '{path}' is pickle-based and is not loaded by default because "
                "unpickling can run arbitrary code. Convert it to safetensors, or opt in with "
                "allow_pickle=True (build_transformer_model(..., allow_pickle=True)) to read it "
                "with torch.load(weights_only=True)."
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
        return name in (self._shapes if self.format == "tf" else self._keys)

    def names(self):
        return list(self._shapes if self.format == "tf" else self._keys)

    def shape(self, name):
        if self.format == "tf":
            return tuple(self._shapes[name])
        if hasattr(self, "_tensors"):
            return tuple(self._tensors[self._keys[name]].shape)
        return tuple(self._file.get_slice(self._keys[name]).get_shape())

    def __getitem__(self, name):
        if self.format == "tf":
            return self._reader.get_tensor(name)
        if hasattr(self, "_tensors"):
            tensor = self._tensors[self._keys[name]].detach().cpu()
            if not tensor.dtype.is_floating_point or tensor.dtype.itemsize >= 4:
                return tensor.numpy()
            return tensor.float().numpy()  # bfloat16 / float16 have no exact NumPy twin here
        return self._file.get_tensor(self._keys[name])


def _torch_load(path):
    """``{name: torch.Tensor}`` from a PyTorch pickle, with the restricted ``weights_only`` unpickler."""
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"Reading the pickle-based checkpoint '{path}' (allow_pickle=True) needs PyTorch, "
            "which is not installed; install torch or convert the file to safetensors."
        ) from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for forbidden globals, RuntimeError for bad files
        raise ValueError(
            f"Cannot load '{path}' with torch.load(weights_only=True): {type(e).__name__}: {e}"
        ) from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)} if isinstance(state, dict) else {}
    if not tensors:
        raise ValueError(
            f"Pickle checkpoint '{path}' holds no state dict of tensors (got {type(state).__name__})."
        )
    return tensors


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


#: The prefix written inside a directory given to `write_tf_checkpoint` (TF's ``Saver`` default).
DEFAULT_CHECKPOINT_NAME = "model.ckpt"


def checkpoint_prefix(path):
    """``(prefix, in_directory)`` that `write_tf_checkpoint` writes for ``path``: ``path`` itself,
    or ``path/model.ckpt`` when ``path`` is a directory (an existing one, or any path ending
    with a separator, as ``'out_dir/'``)."""
    path = os.fspath(path)
    separators = tuple(sep for sep in (os.sep, os.altsep) if sep)
    if path.endswith(separators) or os.path.isdir(path):
        return os.path.join(path, DEFAULT_CHECKPOINT_NAME), True
    return path, False


def _update_checkpoint_state(directory, prefix):
    """Point the directory's TF ``checkpoint`` state file at ``prefix`` (written atomically),
    keeping the other checkpoints it lists, so that reading the directory (`CheckpointReader`,
    ``tf.train.latest_checkpoint``) gives the checkpoint just written."""
    import tensorflow as tf

    state = tf.train.get_checkpoint_state(directory)
    name = os.path.basename(prefix)
    # TF returns the listed paths made absolute: those inside the directory go back to relative.
    paths = [os.path.basename(p) if os.path.dirname(os.path.abspath(p)) == directory else p
             for p in (state.all_model_checkpoint_paths if state else [])]
    paths = [p for p in paths if p != name]

    def quoted(path):  # a text-format proto string: only quotes, backslashes and controls escaped
        return json.dumps(path, ensure_ascii=False)

    text = f"model_checkpoint_path: {quoted(name)}\n" + "".join(
        f"all_model_checkpoint_paths: {quoted(p)}\n" for p in paths + [name]
    )
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".tmp")
    try:
        with open(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(directory, "checkpoint"))
        _fsync(directory)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_tf_checkpoint(prefix, variables):
    """Write ``{name: ndarray}`` as a TF1 checkpoint (``prefix.index`` + ``prefix.data-*``).

    ``prefix`` may be a directory (an existing one, or a path ending with a separator such as
    ``'out_dir/'``): the checkpoint is then written inside it as ``out_dir/model.ckpt``. In that
    case, and whenever the directory already has one, the directory's TF ``checkpoint`` state
    file (as ``tf.train.Saver`` writes it) is pointed at the new checkpoint once it is complete,
    so reading the directory (``build_transformer_model(config, 'out_dir')``) loads it.
    Returns the prefix written (str).

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

    prefix, in_directory = checkpoint_prefix(prefix)
    prefix = os.path.abspath(prefix)
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
    if in_directory or os.path.isfile(os.path.join(directory, "checkpoint")):
        _update_checkpoint_state(directory, prefix)
    return prefix
