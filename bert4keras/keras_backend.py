"""Keras 2's backend API on `keras.ops`; imported by bert4keras users as ``K``.

bert4keras 0.11.5 scripts do ``from bert4keras.backend import keras, K`` and write their losses and
layers with ``K.sum``, ``K.sparse_categorical_crossentropy``, ``K.in_train_phase``, ... (Keras 2's
``keras.backend``). Keras 3 removed almost all of these. This module re-implements them with Keras 2.3's
argument names, orders and defaults, for the TensorFlow, JAX and PyTorch backends, plus what bert4keras
attached to ``K``: `infinity`, `set_infinity`, `symbolic`, and its flexible `reshape` and `flatten`.
It never patches ``keras.backend``.

Rules the functions share:

- Static in, static out. `shape` is ``tf.shape(x)`` on TensorFlow (dynamic dimensions work inside
  graphs) and a NumPy int32 array on JAX and PyTorch, where shapes are always concrete (under
  ``jax.jit`` any jnp op would turn them into tracers, and ``reshape`` would then fail). A function
  whose tensor arguments are all Python numbers, tuples/lists or NumPy arrays computes with NumPy and
  returns NumPy, so ``K.reshape(x, (K.shape(x)[0], -1, K.prod(K.shape(x)[2:])))`` works on every
  backend, compiled or not. This holds for the math, comparison, reduction, cast and shape functions;
  activations, losses, `dot`/`batch_dot` and the constructors (`zeros`, `ones`, `eye`, `constant`,
  `variable`, random) always return backend tensors. Python ints become int32 and Python floats
  ``floatx()``, as TensorFlow converts them.
- Symbolic ``keras.KerasTensor`` inputs go through `keras.ops` and give KerasTensors; `shape` of one
  is its static shape tuple (None for unknown dimensions).
- Random functions take ``seed`` None, an int or a `keras.random.SeedGenerator`. Under JAX tracing
  (``jit``, ``model.fit``, building a functional model) an unseeded draw raises ValueError: give the
  layer ``self.seed_generator = keras.random.SeedGenerator()`` and pass ``seed=self.seed_generator``.
- Keras 3 has no graph and no session: `gradients`, `function`, `placeholder`, `get_session`,
  `set_session`, `learning_phase_scope`, `set_learning_phase` exist but raise NotImplementedError that
  names the Keras 3 way.

Imports: keras and NumPy (TensorFlow, JAX, torch lazily, on their backends). Nothing from the rest of
bert4keras: `bert4keras.backend` imports this module as ``K`` and re-exports the bert4keras additions.
"""

import builtins
import functools
import math
import operator

import keras
import numpy as np
from keras import ops

from bert4keras import _keras_internals as internals

_PORTING = "see README 'Porting from bert4keras 0.11'"
_INFINITY = {"value": 1e12}


# -- helpers ---------------------------------------------------------------------------------------


def _backend():
    return keras.config.backend()


def _is_dim(x):
    """True for a JAX symbolic dimension: a size Keras 3 leaves unknown (None) while it infers a JAX
    layer's output shape (``jax.eval_shape`` with shape polymorphism). It acts as an int in shapes."""
    if isinstance(x, (int, float, np.ndarray, np.generic)) or _backend() != "jax":
        return False
    from jax import export

    return export.is_symbolic_dim(x)


def _as_dim(d):
    """A shape entry as a Python int, or the JAX symbolic dimension it is."""
    return d if _is_dim(d) else int(d)


def _has_dims(x):
    if _is_dim(x):
        return True
    if isinstance(x, np.ndarray) and x.dtype == object:
        return builtins.any(_is_dim(d) for d in x.ravel())
    if isinstance(x, (list, tuple)):
        return builtins.any(_has_dims(v) for v in x)
    return False


def _is_static(x):
    """True for Python numbers, NumPy arrays/scalars, JAX symbolic dimensions, and (nested)
    lists/tuples of them."""
    if isinstance(x, (bool, int, float, np.ndarray, np.generic)) or _is_dim(x):
        return True
    if isinstance(x, (list, tuple)):
        return builtins.all(_is_static(v) for v in x)
    return False


def _np(x):
    """NumPy value of a static ``x``; Python ints become int32 and floats floatx, as in TensorFlow."""
    if isinstance(x, (np.ndarray, np.generic)) or _is_dim(x):
        return x
    if _has_dims(x):
        return np.array(x, dtype=object)
    a = np.asarray(x)
    if a.dtype == np.int64 and (a.size == 0 or np.abs(a).max() < 2**31):
        a = a.astype("int32")
    elif a.dtype == np.float64:
        a = a.astype(floatx())
    return a[()] if a.ndim == 0 else a  # Python scalars give NumPy scalars


def _float_np(a):
    """``a`` (NumPy) as floatx when it is bool or integer (for exp, log, mean, ...)."""
    return a.astype(floatx()) if a.dtype.kind in "biu" else a


def _axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


def _dims(x):
    """Per-dimension sizes: Python ints where known, else dynamic scalars of `shape`."""
    static = int_shape(x)
    if builtins.all(d is not None for d in static):
        return list(static)
    dynamic = shape(x)
    return [d if d is not None else dynamic[i] for i, d in enumerate(static)]


def _shape_arg(shape_):
    """A shape argument: a tuple of Python ints when static, else as given (a TensorFlow tensor)."""
    if _is_static(shape_):
        return tuple(_as_dim(d) for d in np.reshape(np.asarray(_np(shape_)), (-1,)))
    if isinstance(shape_, (list, tuple)):
        return [_as_dim(d) if _is_static(d) else d for d in shape_]
    return shape_




def _in_jax_trace():
    if _backend() != "jax":
        return False
    import jax

    return isinstance(jax.numpy.ones(()), jax.core.Tracer)


def _unsupported(name, instead):
    def function(*args, **kwargs):
        raise NotImplementedError(
            f"K.{name}: Keras 3 has no symbolic graph or session, so Keras 2's `K.{name}` cannot work. "
            f"{instead} ({_PORTING})."
        )

    function.__name__ = name
    function.__qualname__ = name
    function.__doc__ = f"Not available in Keras 3: raises NotImplementedError. {instead}."
    return function


# -- configuration ----------------------------------------------------------------------------------


def floatx():
    """Default float dtype, a str (``'float32'``). Source: Keras 2.3 `keras.backend.floatx`."""
    return keras.config.floatx()


def set_floatx(value):
    """Set the default float dtype (``'float16'``, ``'bfloat16'``, ``'float32'``, ``'float64'``).

    Raises: ValueError for other values. Source: Keras 2.3 `keras.backend.set_floatx`.
    """
    keras.config.set_floatx(value)


def epsilon():
    """The fuzz factor (default 1e-7), a float. Source: Keras 2.3 `keras.backend.epsilon`."""
    return keras.config.epsilon()


def set_epsilon(value):
    """Set the fuzz factor. Source: Keras 2.3 `keras.backend.set_epsilon`."""
    keras.config.set_epsilon(value)


def image_data_format():
    """``'channels_last'`` or ``'channels_first'``. Source: Keras 2.3 `keras.backend.image_data_format`."""
    return keras.config.image_data_format()


def set_image_data_format(data_format):
    """Source: Keras 2.3 `keras.backend.set_image_data_format`."""
    keras.config.set_image_data_format(data_format)


def backend():
    """The Keras 3 backend in use: ``'tensorflow'``, ``'jax'`` or ``'torch'`` (Keras 2 said
    ``'tensorflow'``). Source: Keras 2.3 `keras.backend.backend`."""
    return _backend()


def clear_session():
    """Reset Keras' global state (layer name counters, ...). Source: Keras 2.3 `keras.backend.clear_session`."""
    keras.utils.clear_session()


def name_scope(name):
    """Context manager naming the variables and ops created inside.

    Source: Keras 2.3 `keras.backend.name_scope`.
    """
    return keras.name_scope(name)


def infinity():
    """The large number bert4keras uses for masking (default 1e12), a float.

    Source: bert4keras 0.11.5 `backend.infinity` (attached to K).
    """
    return _INFINITY["value"]


def set_infinity(value):
    """Set what `infinity` returns (e.g. 1e4 for float16 models).

    Source: bert4keras 0.11.5 `backend.set_infinity` (attached to K).
    """
    _INFINITY["value"] = value


def symbolic(f):
    """Identity decorator (old Keras compatibility). Source: bert4keras 0.11.5 `backend.symbolic`."""
    return f


# -- learning phase ---------------------------------------------------------------------------------


def learning_phase():
    """1 inside a layer call made with ``training=True`` (``model.fit``), else 0.

    Reads the flag Keras 3 passes down nested layer calls, so a layer whose ``call`` has no
    ``training`` argument (as bert4keras 0.11.5 user layers) still sees it. Outside any layer call: 0.
    Returns: int 0 or 1 (or the tensor given as ``training``, if one was).
    Source: Keras 2.3 `keras.backend.learning_phase`.
    """
    training = internals.call_context_training()
    if training is None:
        return 0
    if isinstance(training, (bool, int, np.bool_, np.integer)):
        return int(bool(training))
    return training


def in_train_phase(x, alt, training=None):
    """``x`` in the training phase, ``alt`` otherwise.

    Args:
        x, alt: tensors, or callables returning one (only the chosen one is called when the phase is
            known in Python).
        training: None (use `learning_phase`), a bool/int, or a scalar bool tensor (then `switch`).
    Source: Keras 2.3 `keras.backend.in_train_phase`.
    """
    if training is None:
        training = learning_phase()
    if _is_static(training) and np.ndim(training) == 0:
        chosen = x if training else alt
        return chosen() if callable(chosen) else chosen
    return switch(training, x, alt)


def in_test_phase(x, alt, training=None):
    """``x`` in the test phase, ``alt`` in training. Source: Keras 2.3 `keras.backend.in_test_phase`."""
    return in_train_phase(alt, x, training=training)


# -- shapes, dtypes ----------------------------------------------------------------------------------


def is_keras_tensor(x):
    """True for a symbolic `keras.KerasTensor` (a functional model's input or output).

    Keras 2 raised ValueError for non-tensors; this returns False.
    Source: Keras 2.3 `keras.backend.is_keras_tensor`.
    """
    return isinstance(x, keras.KerasTensor)


def is_tensor(x):
    """True for a backend tensor, a `keras.Variable` or a KerasTensor.

    Source: Keras 2.3 `keras.backend.is_tensor`.
    """
    return isinstance(x, (keras.KerasTensor, keras.Variable)) or ops.is_tensor(x)


def int_shape(x):
    """Static shape, a tuple of int (None where unknown). Source: Keras 2.3 `keras.backend.int_shape`."""
    if not hasattr(x, "shape"):
        return np.shape(x)
    return tuple(None if d is None or _is_dim(d) else int(d) for d in x.shape)


def ndim(x):
    """Number of axes, an int. Source: Keras 2.3 `keras.backend.ndim`."""
    return len(int_shape(x))


def dtype(x):
    """Dtype name, a str (``'float32'``). Source: Keras 2.3 `keras.backend.dtype`."""
    value = x.dtype if hasattr(x, "dtype") else _np(x).dtype
    return keras.backend.standardize_dtype(value)


def shape(x):
    """Shape of ``x`` for shape arithmetic, int32, ``(ndim(x),)``.

    Returns:
        ``tf.shape(x)`` on TensorFlow (dynamic dimensions work in graphs); a NumPy int32 array on JAX
        and PyTorch (shapes are concrete there) and for NumPy / Python inputs; for a KerasTensor, its
        static shape tuple (None for unknown dimensions). While Keras infers a JAX layer's output shape
        from symbolic sizes, a NumPy object array holding them (they act as ints in shapes).
    Source: Keras 2.3 `keras.backend.shape`.
    """
    if is_keras_tensor(x):
        return ops.shape(x)
    if _is_static(x):
        return np.array(np.shape(x), dtype="int32")
    if _backend() == "tensorflow":
        import tensorflow as tf

        return tf.shape(ops.convert_to_tensor(x))
    dims = tuple(x.shape)
    if builtins.any(_is_dim(d) for d in dims):
        return np.array(dims, dtype=object)
    return np.array(dims, dtype="int32")


def _dims_to_tensor(x):
    """A backend tensor of a static value that holds JAX symbolic dimensions."""
    if _is_dim(x):
        return ops.convert_to_tensor(x)
    flat = [ops.convert_to_tensor(d) for d in np.reshape(x, (-1,))]
    return ops.reshape(ops.stack(flat), np.shape(x))


def count_params(x):
    """Number of scalars in ``x``, an int. Source: Keras 2.3 `keras.backend.count_params`."""
    return int(np.prod(int_shape(x)))


def cast(x, dtype):
    """``x`` as ``dtype`` (float -> int truncates toward zero). Source: Keras 2.3 `keras.backend.cast`."""
    dtype = keras.backend.standardize_dtype(dtype)
    if _has_dims(x):
        return ops.cast(_dims_to_tensor(_np(x)), dtype)
    if _is_static(x):
        return _np(x).astype(dtype)
    return ops.cast(x, dtype)


def cast_to_floatx(x):
    """NumPy array of ``x`` in floatx. Source: Keras 2.3 `keras.backend.cast_to_floatx`."""
    return np.asarray(x, dtype=floatx())


def _product(dims):
    """Product of sizes (ints or dynamic scalars); None if any is None (a KerasTensor's unknown size)."""
    if builtins.any(d is None for d in dims):
        return None
    return functools.reduce(operator.mul, dims, 1)


def _reshape(x, new_shape):
    if isinstance(new_shape, (list, tuple)) and builtins.any(d is None for d in new_shape):
        # A KerasTensor's unknown sizes: Keras 3 has no symbolic shape to compute them from.
        if builtins.sum(1 for d in new_shape if d is None or _is_minus_one(d)) > 1:
            raise ValueError(
                f"K.reshape: target shape {tuple(new_shape)} of a symbolic KerasTensor has more than one "
                "unknown size; Keras 3 has no symbolic shapes, so do this inside a layer's call, where "
                "K.shape gives the sizes"
            )
        new_shape = [-1 if d is None else d for d in new_shape]
    if _is_static(new_shape):
        new_shape = _shape_arg(new_shape)
        return np.reshape(_np(x), new_shape) if _is_static(x) else ops.reshape(x, new_shape)
    return ops.reshape(x, _shape_arg(new_shape))


def reshape(tensor, *args):
    """Reshape, Keras 2's ``reshape(x, shape)`` or bert4keras's per-axis form.

    ``reshape(x, shape)``: ``shape`` may mix ints and `shape` entries (``-1`` once).
    ``reshape(x, shape1, axis1, shape2, axis2, ...)``: replace axis ``axis1`` of ``x`` by the axes
    ``shape1`` (a tuple, one ``-1`` allowed), ... ; e.g. ``reshape(x, (heads, -1), 2)`` turns
    ``(batch, seq_len, hidden)`` into ``(batch, seq_len, heads, hidden // heads)``.
    Raises: ValueError for an odd number of per-axis arguments or two ``-1`` in one group.
    Source: Keras 2.3 `keras.backend.reshape`; bert4keras 0.11.5 `backend.reshape` (attached to K).
    """
    if len(args) == 1:
        return _reshape(tensor, args[0])
    if len(args) % 2:
        raise ValueError(f"reshape: expected (shape, axis) pairs after the tensor, got {args!r}")
    dims = _dims(tensor)
    groups = [[d] for d in dims]
    for new, axis in zip(args[::2], args[1::2]):
        new = list(new)
        if new.count(-1) > 1:
            raise ValueError(f"reshape: at most one -1 per group, got {tuple(new)}")
        if -1 in new:
            known = _product([d for d in new if not _is_minus_one(d)])
            new[new.index(-1)] = None if dims[axis] is None else dims[axis] // known
        groups[axis] = new
    return _reshape(tensor, [d for group in groups for d in group])


def _is_minus_one(d):
    return _is_static(d) and not _is_dim(d) and np.ndim(d) == 0 and int(d) == -1


def flatten(tensor, start=None, end=None):
    """Merge axes ``start:end`` of ``tensor`` into one (defaults: all axes, Keras 2's ``flatten``).

    Shape ``(d0, ..., dn)`` -> ``(d0, ..., d_start * ... * d_{end-1}, ..., dn)``.
    Source: Keras 2.3 `keras.backend.flatten`; bert4keras 0.11.5 `backend.flatten` (attached to K).
    """
    start, end = start or 0, end or ndim(tensor)
    dims = _dims(tensor)
    return _reshape(tensor, dims[:start] + [_product(dims[start:end])] + dims[end:])


def batch_flatten(x):
    """``(batch, d1, ..., dn)`` -> ``(batch, d1 * ... * dn)``. Source: Keras 2.3 `keras.backend.batch_flatten`."""
    return _reshape(x, [-1, _product(_dims(x)[1:])])


def expand_dims(x, axis=-1):
    """Insert a size-1 axis at ``axis``. Source: Keras 2.3 `keras.backend.expand_dims`."""
    if _is_static(x):
        return np.expand_dims(_np(x), axis)
    return ops.expand_dims(x, axis)


def squeeze(x, axis):
    """Remove the size-1 axis ``axis``. Source: Keras 2.3 `keras.backend.squeeze`."""
    if _is_static(x):
        return np.squeeze(_np(x), axis)
    return ops.squeeze(x, axis)


def concatenate(tensors, axis=-1):
    """Join along ``axis``. Source: Keras 2.3 `keras.backend.concatenate`."""
    if _is_static(tensors):
        return np.concatenate([_np(t) for t in tensors], axis=axis)
    return ops.concatenate(list(tensors), axis=axis)


def stack(x, axis=0):
    """Stack a list of same-shape tensors along a new ``axis``. Source: Keras 2.3 `keras.backend.stack`."""
    if _is_static(x):
        return np.stack([_np(t) for t in x], axis=axis)
    return ops.stack(list(x), axis=axis)


def permute_dimensions(x, pattern):
    """Transpose by ``pattern`` (a tuple of axes). Source: Keras 2.3 `keras.backend.permute_dimensions`."""
    if _is_static(x):
        return np.transpose(_np(x), pattern)
    return ops.transpose(x, tuple(pattern))


def transpose(x):
    """Reverse the order of the axes. Source: Keras 2.3 `keras.backend.transpose`."""
    if _is_static(x):
        return np.transpose(_np(x))
    return ops.transpose(x, tuple(range(ndim(x)))[::-1])


def tile(x, n):
    """Repeat ``x`` ``n[i]`` times along axis i (an int ``n`` means ``(n,)``).

    Source: Keras 2.3 `keras.backend.tile`.
    """
    n = (n,) if isinstance(n, int) else n
    if _is_static(x) and _is_static(n):
        return np.tile(_np(x), _shape_arg(n))
    return ops.tile(x, _shape_arg(n) if _is_static(n) else n)


def repeat(x, n):
    """``(batch, dim)`` -> ``(batch, n, dim)``. Raises: ValueError unless x is 2-D.

    Source: Keras 2.3 `keras.backend.repeat`.
    """
    if ndim(x) != 2:
        raise ValueError(f"K.repeat expects a 2-D tensor, got shape {int_shape(x)}")
    if _is_static(x):
        return np.repeat(_np(x)[:, None], n, axis=1)
    return ops.repeat(ops.expand_dims(x, 1), n, axis=1)


def repeat_elements(x, rep, axis):
    """Repeat each element ``rep`` times along ``axis`` (as ``np.repeat``).

    Source: Keras 2.3 `keras.backend.repeat_elements`.
    """
    if _is_static(x):
        return np.repeat(_np(x), rep, axis=axis)
    return ops.repeat(x, rep, axis=axis)


def reverse(x, axes):
    """Reverse ``x`` along ``axes`` (int or tuple). Source: Keras 2.3 `keras.backend.reverse`."""
    axes = _axis(axes)
    if _is_static(x):
        return np.flip(_np(x), axes)
    return ops.flip(x, axes)


def _int_indices(indices):
    if _is_static(indices):
        return _np(indices).astype("int32")
    if not keras.backend.standardize_dtype(indices.dtype).startswith(("int", "uint")):
        return ops.cast(indices, "int32")
    return indices


def gather(reference, indices):
    """Rows ``reference[indices]`` (axis 0); float indices (bert4keras 0.11.5's float inputs) are cast
    to int32. Output: ``indices.shape + reference.shape[1:]``. Source: Keras 2.3 `keras.backend.gather`."""
    indices = _int_indices(indices)
    if _is_static(reference) and _is_static(indices):
        return np.take(_np(reference), indices, axis=0)
    return ops.take(reference, indices, axis=0)


def one_hot(indices, num_classes):
    """One-hot of integer (or integer-valued float) ``indices``: ``shape + (num_classes,)``, floatx.

    ``num_classes`` may be ``K.shape(x)[-1]``. Source: Keras 2.3 `keras.backend.one_hot`.
    """
    indices = _int_indices(indices)
    if _is_static(num_classes):
        num_classes = _as_dim(num_classes)
        if _is_static(indices) and not _is_dim(num_classes):
            return (indices[..., None] == np.arange(num_classes)).astype(floatx())
    return ops.one_hot(indices, num_classes, dtype=floatx())


def temporal_padding(x, padding=(1, 1)):
    """Zero-pad axis 1 of a 3-D tensor by ``padding = (left, right)``.

    Source: Keras 2.3 `keras.backend.temporal_padding`.
    """
    left, right = (_as_dim(p) if _is_static(p) else p for p in padding)
    return ops.pad(x, [[0, 0], [left, right], [0, 0]])


# -- reductions, elementwise math -------------------------------------------------------------------


def _reduce(name, x, axis, keepdims, float_input=False):
    axis = _axis(axis)
    if _is_static(x):
        a = _np(x)
        if float_input or a.dtype == bool:
            a = _float_np(a)
        result = getattr(np, name)(a, axis=axis, keepdims=keepdims)
        if a.dtype.kind in "iu" and name in ("sum", "prod"):
            result = result.astype(a.dtype)
        return result
    if float_input and not keras.backend.is_float_dtype(dtype(x)):
        x = ops.cast(x, floatx())
    return getattr(ops, name)(x, axis=axis, keepdims=keepdims)


def sum(x, axis=None, keepdims=False):
    """Sum over ``axis`` (None: all). Source: Keras 2.3 `keras.backend.sum`."""
    return _reduce("sum", x, axis, keepdims)


def prod(x, axis=None, keepdims=False):
    """Product over ``axis``; keeps int32 for shapes. Source: Keras 2.3 `keras.backend.prod`."""
    return _reduce("prod", x, axis, keepdims)


def max(x, axis=None, keepdims=False):
    """Maximum over ``axis``. Source: Keras 2.3 `keras.backend.max`."""
    return _reduce("max", x, axis, keepdims)


def min(x, axis=None, keepdims=False):
    """Minimum over ``axis``. Source: Keras 2.3 `keras.backend.min`."""
    return _reduce("min", x, axis, keepdims)


def mean(x, axis=None, keepdims=False):
    """Mean over ``axis``; bool and int inputs give floatx. Source: Keras 2.3 `keras.backend.mean`."""
    return _reduce("mean", x, axis, keepdims, float_input=True)


def var(x, axis=None, keepdims=False):
    """Population variance (``ddof=0``) over ``axis``. Source: Keras 2.3 `keras.backend.var`."""
    return _reduce("var", x, axis, keepdims, float_input=True)


def std(x, axis=None, keepdims=False):
    """Population standard deviation over ``axis``. Source: Keras 2.3 `keras.backend.std`."""
    return _reduce("std", x, axis, keepdims, float_input=True)


def any(x, axis=None, keepdims=False):
    """Logical OR over ``axis`` of ``x != 0``, bool. Source: Keras 2.3 `keras.backend.any`."""
    if _is_static(x):
        return np.any(_np(x).astype(bool), axis=_axis(axis), keepdims=keepdims)
    return ops.any(ops.cast(x, "bool"), axis=_axis(axis), keepdims=keepdims)


def all(x, axis=None, keepdims=False):
    """Logical AND over ``axis`` of ``x != 0``, bool. Source: Keras 2.3 `keras.backend.all`."""
    if _is_static(x):
        return np.all(_np(x).astype(bool), axis=_axis(axis), keepdims=keepdims)
    return ops.all(ops.cast(x, "bool"), axis=_axis(axis), keepdims=keepdims)


def cumsum(x, axis=0):
    """Cumulative sum along ``axis``. Source: Keras 2.3 `keras.backend.cumsum`."""
    if _is_static(x):
        a = _np(x)
        return np.cumsum(a, axis=axis).astype(a.dtype)
    return ops.cumsum(x, axis=axis)


def cumprod(x, axis=0):
    """Cumulative product along ``axis``. Source: Keras 2.3 `keras.backend.cumprod`."""
    if _is_static(x):
        a = _np(x)
        return np.cumprod(a, axis=axis).astype(a.dtype)
    return ops.cumprod(x, axis=axis)


def argmax(x, axis=-1):
    """Index of the maximum along ``axis``, int32 (Keras 2: int64). Source: Keras 2.3 `keras.backend.argmax`."""
    if _is_static(x):
        return np.argmax(_np(x), axis=axis).astype("int32")
    return ops.argmax(x, axis=axis)


def argmin(x, axis=-1):
    """Index of the minimum along ``axis``, int32. Source: Keras 2.3 `keras.backend.argmin`."""
    if _is_static(x):
        return np.argmin(_np(x), axis=axis).astype("int32")
    return ops.argmin(x, axis=axis)


def logsumexp(x, axis=None, keepdims=False):
    """``log(sum(exp(x), axis))``, computed stably. Source: Keras 2.3 `keras.backend.logsumexp`;
    bert4keras 0.11.5 attached it to tf.keras' K."""
    axis = _axis(axis)
    if _is_static(x):
        a = _float_np(_np(x))
        m = np.max(a, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, 0)
        result = np.log(np.sum(np.exp(a - m), axis=axis, keepdims=True)) + m
        return result if keepdims else np.squeeze(result, axis=axis)
    return ops.logsumexp(x, axis=axis, keepdims=keepdims)


def _unary(np_fn, ops_fn, x, float_input=False):
    if _is_static(x):
        a = _np(x)
        return np_fn(_float_np(a) if float_input else a)
    return ops_fn(x)


def exp(x):
    """Elementwise ``e^x``. Source: Keras 2.3 `keras.backend.exp`."""
    return _unary(np.exp, ops.exp, x, float_input=True)


def log(x):
    """Elementwise natural logarithm. Source: Keras 2.3 `keras.backend.log`."""
    return _unary(np.log, ops.log, x, float_input=True)


def sqrt(x):
    """Elementwise square root, with negative inputs clipped to 0 first (never NaN), as Keras 2.

    Source: Keras 2.3 `keras.backend.sqrt`.
    """
    if _is_static(x):
        return np.sqrt(np.maximum(_float_np(_np(x)), 0))
    if not keras.backend.is_float_dtype(dtype(x)):
        x = ops.cast(x, floatx())
    return ops.sqrt(ops.maximum(x, 0.0))


def square(x):
    """Elementwise ``x**2``. Source: Keras 2.3 `keras.backend.square`."""
    return _unary(np.square, ops.square, x)


def abs(x):
    """Elementwise absolute value. Source: Keras 2.3 `keras.backend.abs`."""
    return _unary(np.abs, ops.abs, x)


def sign(x):
    """Elementwise sign (-1, 0, 1). Source: Keras 2.3 `keras.backend.sign`."""
    return _unary(np.sign, ops.sign, x)


def round(x):
    """Elementwise round, half to even. Source: Keras 2.3 `keras.backend.round`."""
    return _unary(np.round, ops.round, x)


def sin(x):
    """Source: Keras 2.3 `keras.backend.sin`."""
    return _unary(np.sin, ops.sin, x, float_input=True)


def cos(x):
    """Source: Keras 2.3 `keras.backend.cos`."""
    return _unary(np.cos, ops.cos, x, float_input=True)


def identity(x, name=None):
    """A tensor equal to ``x``. Source: Keras 2.3 `keras.backend.identity`."""
    return _np(x).copy() if _is_static(x) else ops.copy(x)


def pow(x, a):
    """Elementwise ``x ** a``. Source: Keras 2.3 `keras.backend.pow`."""
    if _is_static(x) and _is_static(a):
        return np.power(_np(x), _np(a))
    return ops.power(x, a)


def clip(x, min_value, max_value):
    """Elementwise clip to ``[min_value, max_value]``; None means unbounded, and ``max_value <
    min_value`` (numbers) is raised to ``min_value``, as Keras 2. Source: Keras 2.3 `keras.backend.clip`."""
    if _is_static(min_value) and _is_static(max_value) and np.ndim(min_value) == np.ndim(max_value) == 0:
        if max_value < min_value:
            max_value = min_value
    static = _is_static(x)
    xp = np if static else ops
    x = _np(x) if static else x
    if min_value is not None:
        x = xp.maximum(x, _np(min_value) if static and _is_static(min_value) else min_value)
    if max_value is not None:
        x = xp.minimum(x, _np(max_value) if static and _is_static(max_value) else max_value)
    return x


def _binary(name, x, y):
    if _is_static(x) and _is_static(y):
        return getattr(np, name)(_np(x), _np(y))
    return getattr(ops, name)(x, y)


def maximum(x, y):
    """Elementwise maximum. Source: Keras 2.3 `keras.backend.maximum`."""
    return _binary("maximum", x, y)


def minimum(x, y):
    """Elementwise minimum. Source: Keras 2.3 `keras.backend.minimum`."""
    return _binary("minimum", x, y)


def equal(x, y):
    """Elementwise ``x == y``, bool. Source: Keras 2.3 `keras.backend.equal`."""
    return _binary("equal", x, y)


def not_equal(x, y):
    """Elementwise ``x != y``, bool. Source: Keras 2.3 `keras.backend.not_equal`."""
    return _binary("not_equal", x, y)


def greater(x, y):
    """Elementwise ``x > y``, bool. Source: Keras 2.3 `keras.backend.greater`."""
    return _binary("greater", x, y)


def greater_equal(x, y):
    """Elementwise ``x >= y``, bool. Source: Keras 2.3 `keras.backend.greater_equal`."""
    return _binary("greater_equal", x, y)


def less(x, y):
    """Elementwise ``x < y``, bool. Source: Keras 2.3 `keras.backend.less`."""
    return _binary("less", x, y)


def less_equal(x, y):
    """Elementwise ``x <= y``, bool. Source: Keras 2.3 `keras.backend.less_equal`."""
    return _binary("less_equal", x, y)


def where(condition, x=None, y=None):
    """``x`` where ``condition`` else ``y`` (broadcasting); with one argument, the indices of the
    nonzero entries (as ``np.where``). Source: `tf.where` (Keras 2 users reached it through TF)."""
    if x is None and y is None:
        if _is_static(condition):
            return np.where(_np(condition))
        return ops.where(condition)
    if _is_static(condition) and _is_static(x) and _is_static(y):
        return np.where(_np(condition), _np(x), _np(y))
    return ops.where(condition, x, y)


def switch(condition, then_expression, else_expression):
    """Choose between two expressions by ``condition``.

    Args:
        condition: scalar (Python or tensor) or tensor of rank <= the expressions' rank; a tensor
            condition of lower rank selects along the leading axes (a ``(batch,)`` condition picks
            whole rows, as Keras 2.3 on TF1's ``tf.where``).
        then_expression, else_expression: tensors, or callables returning them (called only when the
            condition is a scalar; with a scalar tensor condition they go through `keras.ops.cond`, so
            both must give the same shape and dtype).
    Raises:
        ValueError: the condition has a higher rank than the expressions.
    Source: Keras 2.3 `keras.backend.switch`.
    """
    if _is_static(condition) and np.ndim(condition) == 0:
        chosen = then_expression if bool(condition) else else_expression
        return chosen() if callable(chosen) else chosen
    cond_ndim = ndim(condition)
    if cond_ndim == 0:
        condition = ops.cast(condition, "bool")
        if callable(then_expression) or callable(else_expression):
            then_fn = then_expression if callable(then_expression) else (lambda: then_expression)
            else_fn = else_expression if callable(else_expression) else (lambda: else_expression)
            return ops.cond(condition, then_fn, else_fn)
        return ops.where(condition, then_expression, else_expression)
    then_expression = then_expression() if callable(then_expression) else then_expression
    else_expression = else_expression() if callable(else_expression) else else_expression
    expr_ndim = ndim(then_expression)
    if cond_ndim > expr_ndim:
        raise ValueError(
            "K.switch: the rank of `condition` must be <= the rank of `then_expression` and "
            f"`else_expression`; got ndim(condition)={cond_ndim}, ndim(then_expression)={expr_ndim}"
        )
    if _is_static(condition) and _is_static(then_expression) and _is_static(else_expression):
        condition = np.reshape(_np(condition), np.shape(condition) + (1,) * (expr_ndim - cond_ndim))
        return np.where(condition.astype(bool), _np(then_expression), _np(else_expression))
    condition = ops.cast(condition, "bool")
    for _ in range(expr_ndim - cond_ndim):
        condition = ops.expand_dims(condition, -1)
    return ops.where(condition, then_expression, else_expression)


# -- constructors -----------------------------------------------------------------------------------


def zeros(shape, dtype=None, name=None):
    """Tensor of zeros, ``dtype`` default floatx (Keras 2 returned a variable: wrap in `variable`
    for one). ``shape`` may come from `shape`. Source: Keras 2.3 `keras.backend.zeros`."""
    return ops.zeros(_shape_arg(shape), dtype=dtype or floatx())


def ones(shape, dtype=None, name=None):
    """Tensor of ones, ``dtype`` default floatx. Source: Keras 2.3 `keras.backend.ones`."""
    return ops.ones(_shape_arg(shape), dtype=dtype or floatx())


def eye(size, dtype=None, name=None):
    """Identity matrix ``(size, size)`` (or ``size = (rows, cols)``), ``dtype`` default floatx; a
    tensor, not a variable. Source: Keras 2.3 `keras.backend.eye`."""
    rows, cols = (size, size) if np.ndim(size) == 0 else tuple(size)
    return ops.eye(int(rows), int(cols), dtype=dtype or floatx())


def zeros_like(x, dtype=None, name=None):
    """Zeros with the shape (and, by default, dtype) of ``x``. Source: Keras 2.3 `keras.backend.zeros_like`."""
    if _is_static(x):
        return np.zeros_like(_np(x), dtype=dtype)
    return ops.zeros_like(x, dtype=dtype)


def ones_like(x, dtype=None, name=None):
    """Ones with the shape (and, by default, dtype) of ``x``. Source: Keras 2.3 `keras.backend.ones_like`."""
    if _is_static(x):
        return np.ones_like(_np(x), dtype=dtype)
    return ops.ones_like(x, dtype=dtype)


def arange(start, stop=None, step=1, dtype="int32"):
    """``[start, start + step, ...)`` below ``stop``; ``arange(n)`` counts from 0 and a negative
    ``start`` alone gives an empty range, as Keras 2. Source: Keras 2.3 `keras.backend.arange`."""
    if stop is None and _is_static(start) and not _has_dims(start) and start < 0:
        start = 0
    if _is_static((start, stop or 0, step)) and not _has_dims((start, stop or 0, step)):
        return (
            np.arange(start, stop, step).astype(dtype) if stop is not None else np.arange(start).astype(dtype)
        )
    return ops.arange(start, stop, step, dtype=dtype)


def constant(value, dtype=None, shape=None, name=None):
    """Tensor of ``value`` (``dtype`` default floatx); with ``shape``, a scalar is broadcast and a
    matching number of values reshaped. Raises: ValueError otherwise.
    Source: Keras 2.3 `keras.backend.constant`."""
    dtype = dtype or floatx()
    tensor = ops.convert_to_tensor(_np(value) if _is_static(value) else value, dtype=dtype)
    if shape is None:
        return tensor
    shape = _shape_arg(shape)
    size = count_params(tensor)
    if size == math.prod(shape):
        return ops.reshape(tensor, shape)
    if size == 1:
        return ops.broadcast_to(ops.reshape(tensor, ()), shape)
    raise ValueError(f"K.constant: {size} values cannot fill shape {shape}")


def variable(value, dtype=None, name=None, constraint=None):
    """A `keras.Variable` holding ``value`` (``dtype`` default floatx; trainable when float).

    Source: Keras 2.3 `keras.backend.variable`.
    """
    dtype = keras.backend.standardize_dtype(dtype or floatx())
    if isinstance(value, keras.Variable):
        value = value.value
    if _is_static(value):
        value = np.asarray(value, dtype=dtype)
    v = keras.Variable(value, dtype=dtype, name=name, trainable=keras.backend.is_float_dtype(dtype))
    if constraint is not None:
        v.constraint = constraint
    return v


# -- values of variables and tensors ----------------------------------------------------------------


def eval(x):
    """Value of a variable or tensor as a NumPy array. Raises: ValueError for a symbolic KerasTensor
    (no value; use ``model.predict``). Source: Keras 2.3 `keras.backend.eval`."""
    if is_keras_tensor(x):
        raise ValueError(
            "K.eval: a symbolic KerasTensor has no value in Keras 3; build a model and call predict "
            f"({_PORTING})."
        )
    if _is_static(x):
        return np.asarray(x)
    return ops.convert_to_numpy(x)


def get_value(x):
    """Value of a variable (or tensor) as NumPy. Source: Keras 2.3 `keras.backend.get_value`."""
    return eval(x)


def batch_get_value(tensors):
    """List of NumPy values. Source: Keras 2.3 `keras.backend.batch_get_value`."""
    return [eval(x) for x in tensors]


def set_value(x, value):
    """Assign the NumPy-convertible ``value`` to ``x`` in place.

    Args:
        x: a `keras.Variable` (or a `tf.Variable`), a NumPy array or a torch tensor.
    Raises:
        TypeError: ``x`` cannot be written in place (a JAX array, a TensorFlow tensor).
    Source: Keras 2.3 `keras.backend.set_value`.
    """
    if isinstance(x, keras.Variable) or hasattr(x, "assign"):
        x.assign(np.asarray(value, dtype=dtype(x)))
    elif isinstance(x, np.ndarray):
        x[...] = value
    elif type(x).__module__.startswith("torch"):
        import torch

        with torch.no_grad():
            x.copy_(torch.as_tensor(np.asarray(value)).to(x.dtype))
    else:
        raise TypeError(
            f"K.set_value: cannot write into a {type(x).__name__} in place; hold the value in a "
            "keras.Variable (K.variable)"
        )


def batch_set_value(tuples):
    """`set_value` for each ``(x, value)`` pair. Source: Keras 2.3 `keras.backend.batch_set_value`."""
    for x, value in tuples:
        set_value(x, value)


def update(x, new_x):
    """Assign ``new_x`` to the variable ``x``; returns ``x``. Source: Keras 2.3 `keras.backend.update`."""
    x.assign(new_x)
    return x


def update_add(x, increment):
    """``x += increment`` for a variable; returns ``x``. Source: Keras 2.3 `keras.backend.update_add`."""
    x.assign_add(increment)
    return x


def update_sub(x, decrement):
    """``x -= decrement`` for a variable; returns ``x``. Source: Keras 2.3 `keras.backend.update_sub`."""
    x.assign_sub(decrement)
    return x


def stop_gradient(variables):
    """``variables`` (a tensor or a list) with no gradient flowing back.

    Source: Keras 2.3 `keras.backend.stop_gradient`.
    """
    if isinstance(variables, (list, tuple)):
        return [ops.stop_gradient(v) for v in variables]
    return ops.stop_gradient(variables)


# -- linear algebra -------------------------------------------------------------------------------------


def dot(x, y):
    """``np.dot``: contract the last axis of ``x`` with the second-to-last of ``y`` (the only one for
    1-D ``y``). Shapes ``(..., n)``, ``(..., n, m)`` -> ``x.shape[:-1] + y.shape[:-2] + (m,)``.
    Source: Keras 2.3 `keras.backend.dot`."""
    y_axis = builtins.max(ndim(y) - 2, 0)
    return ops.tensordot(x, y, axes=[[ndim(x) - 1], [y_axis]])


def batch_dot(x, y, axes=None):
    """Per-sample dot product: contract axis ``axes[0]`` of ``x`` with ``axes[1]`` of ``y``.

    Args:
        x, y: tensors of rank >= 2 with the same batch size (axis 0).
        axes: int, a pair of int, or None (``x``'s last axis with ``y``'s last if ``y`` is 2-D, else
            ``y``'s second-to-last).
    Returns:
        Shape: ``x``'s axes (without the contracted one) then ``y``'s (without batch and contracted
        axes); a result of rank 1 is returned as ``(batch, 1)``.
    Raises:
        ValueError: a rank < 2, an axis 0, or several axes per tensor.
    Source: Keras 2.3 `keras.backend.batch_dot`.
    """
    x_ndim, y_ndim = ndim(x), ndim(y)
    if x_ndim < 2 or y_ndim < 2:
        raise ValueError(f"K.batch_dot needs inputs of rank >= 2, got {int_shape(x)} and {int_shape(y)}")
    if isinstance(axes, int):
        axes = (axes, axes)
    if axes is None:
        axes = (x_ndim - 1, y_ndim - 1 if y_ndim == 2 else y_ndim - 2)
    if builtins.any(isinstance(a, (list, tuple)) for a in axes):
        raise ValueError(f"K.batch_dot: one axis per tensor is supported, got axes={axes}")
    a0 = axes[0] + x_ndim if axes[0] < 0 else axes[0]
    a1 = axes[1] + y_ndim if axes[1] < 0 else axes[1]
    if a0 == 0 or a1 == 0:
        raise ValueError("K.batch_dot cannot contract over the batch axis 0")
    letters = iter("cdefghijklmnopqrstuvwxyz")
    x_sub = ["a"] + [next(letters) for _ in range(x_ndim - 1)]
    y_sub = ["a"] + [next(letters) for _ in range(y_ndim - 1)]
    x_sub[a0] = y_sub[a1] = "b"
    out_sub = [s for s in x_sub if s != "b"] + [s for s in y_sub[1:] if s != "b"]
    result = ops.einsum(f"{''.join(x_sub)},{''.join(y_sub)}->{''.join(out_sub)}", x, y)
    if len(out_sub) == 1:
        result = ops.expand_dims(result, 1)
    return result


def bias_add(x, bias, data_format=None):
    """``x + bias`` on the channel axis (``data_format`` default `image_data_format`).

    Source: Keras 2.3 `keras.backend.bias_add`.
    """
    data_format = data_format or image_data_format()
    if data_format == "channels_first" and ndim(x) > 2:
        bias = ops.reshape(bias, (-1,) + (1,) * (ndim(x) - 2))
    return ops.add(x, bias)


def l2_normalize(x, axis=None):
    """``x / sqrt(max(sum(x**2, axis), 1e-12))`` (``tf.linalg.l2_normalize``).

    Source: Keras 2.3 `keras.backend.l2_normalize`.
    """
    square_sum = ops.sum(ops.square(x), axis=_axis(axis), keepdims=True)
    return x * ops.rsqrt(ops.maximum(square_sum, 1e-12))


# -- activations ----------------------------------------------------------------------------------------


def softmax(x, axis=-1):
    """Softmax along ``axis``. Source: Keras 2.3 `keras.backend.softmax`."""
    return ops.softmax(x, axis=axis)


def relu(x, alpha=0.0, max_value=None, threshold=0.0):
    """``x`` for ``threshold <= x < max_value`` (clipped at ``max_value``), ``alpha * (x - threshold)``
    below ``threshold``. Source: Keras 2.3 `keras.backend.relu`."""
    x = ops.convert_to_tensor(x)
    negative = ops.relu(threshold - x) if alpha != 0 else None
    if threshold != 0:
        x = x * ops.cast(ops.greater(x, threshold), x.dtype)
    else:
        x = ops.relu(x)
    if max_value is not None:
        x = ops.clip(x, 0, max_value)
    if negative is not None:
        x = x - alpha * negative
    return x


def elu(x, alpha=1.0):
    """``x`` for x > 0, ``alpha * (exp(x) - 1)`` otherwise. Source: Keras 2.3 `keras.backend.elu`."""
    return ops.elu(x, alpha=alpha)


def sigmoid(x):
    """``1 / (1 + exp(-x))``. Source: Keras 2.3 `keras.backend.sigmoid`."""
    return ops.sigmoid(x)


def hard_sigmoid(x):
    """Keras 2's piecewise-linear sigmoid ``clip(0.2 x + 0.5, 0, 1)`` (Keras 3's ``hard_sigmoid``
    is ``x / 6 + 0.5``). Source: Keras 2.3 `keras.backend.hard_sigmoid`."""
    return ops.clip(0.2 * ops.convert_to_tensor(x) + 0.5, 0.0, 1.0)


def tanh(x):
    """Source: Keras 2.3 `keras.backend.tanh`."""
    return ops.tanh(x)


def softplus(x):
    """``log(1 + exp(x))``. Source: Keras 2.3 `keras.backend.softplus`."""
    return ops.softplus(x)


def softsign(x):
    """``x / (1 + |x|)``. Source: Keras 2.3 `keras.backend.softsign`."""
    return ops.softsign(x)


# -- losses -------------------------------------------------------------------------------------------


def categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """Cross-entropy between a distribution ``target`` and ``output`` along ``axis``.

    Args:
        target: same shape as ``output`` (e.g. one-hot), cast to ``output``'s dtype.
        output: probabilities (renormalised to sum 1 along ``axis``, then clipped to
            ``[epsilon, 1 - epsilon]``), or logits with ``from_logits=True``.
    Returns: ``output``'s shape without ``axis``.
    Source: Keras 2.3 `keras.backend.categorical_crossentropy`.
    """
    output = ops.convert_to_tensor(output)
    target = ops.cast(target, output.dtype)
    if from_logits:
        return -ops.sum(target * ops.log_softmax(output, axis=axis), axis=axis)
    output = output / ops.sum(output, axis=axis, keepdims=True)
    output = ops.clip(output, epsilon(), 1.0 - epsilon())
    return -ops.sum(target * ops.log(output), axis=axis)


def sparse_categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """Cross-entropy with the class given as an index.

    Args:
        target: int or float (bert4keras 0.11.5 model inputs were float) class ids, shape
            ``output.shape`` without ``axis`` (e.g. ``(batch,)``, ``(batch, seq_len)``), optionally with
            a trailing 1 (``(batch, 1)``, ``(batch, seq_len, 1)``).
        output: probabilities over ``axis`` (clipped to ``[epsilon, 1 - epsilon]``, then, as Keras 2,
            renormalised by a log-softmax), or logits with ``from_logits=True``.
    Returns: ``output``'s shape without ``axis``, ``output``'s dtype.
    Source: Keras 2.3 `keras.backend.sparse_categorical_crossentropy`.
    """
    output = ops.convert_to_tensor(output)
    out_ndim = ndim(output)
    axis = axis % out_ndim
    if axis != out_ndim - 1:
        output = ops.moveaxis(output, axis, -1)
    if not from_logits:
        output = ops.log(ops.clip(output, epsilon(), 1.0 - epsilon()))
    log_probs = ops.log_softmax(output, axis=-1)
    target = ops.convert_to_tensor(target)
    if ndim(target) == out_ndim:
        target = ops.squeeze(target, -1)
    elif ndim(target) != out_ndim - 1:
        target = reshape(target, shape(output)[:-1])
    target = ops.cast(target, "int32")
    picked = ops.take_along_axis(log_probs, ops.expand_dims(target, -1), axis=-1)
    return -ops.squeeze(picked, -1)


def binary_crossentropy(target, output, from_logits=False):
    """Elementwise binary cross-entropy (no mean over the last axis, unlike ``keras.losses``).

    ``-(t log(p + eps) + (1 - t) log(1 - p + eps))`` with ``p`` clipped to ``[eps, 1 - eps]``, or the
    stable logits form with ``from_logits=True``. Shapes: target and output the same; returns it.
    Source: Keras 2.3 `keras.backend.binary_crossentropy`.
    """
    output = ops.convert_to_tensor(output)
    target = ops.cast(target, output.dtype)
    if from_logits:
        return ops.relu(output) - output * target + ops.log1p(ops.exp(-ops.abs(output)))
    eps = epsilon()
    output = ops.clip(output, eps, 1.0 - eps)
    return -(target * ops.log(output + eps) + (1 - target) * ops.log(1 - output + eps))


# -- random -------------------------------------------------------------------------------------------


def _seed(seed, name):
    if isinstance(seed, keras.random.SeedGenerator):
        return seed
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return int(seed)
    if seed is not None:
        raise TypeError(f"K.{name}: seed must be None, an int or a keras.random.SeedGenerator, got {seed!r}")
    if _in_jax_trace():
        raise ValueError(
            f"K.{name} without a seed cannot run inside a compiled JAX function (model.fit, jit, or "
            "building a functional model): JAX would bake one random draw into it as a constant. In the "
            "layer's __init__ create `self.seed_generator = keras.random.SeedGenerator()` and call "
            f"`K.{name}(..., seed=self.seed_generator)`."
        )
    return None


def random_uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    """Uniform samples in ``[minval, maxval)``, ``dtype`` default floatx.

    ``seed``: None (Keras' global generator; a fresh draw each call, except under JAX tracing, where
    it raises ValueError), an int (Keras 3: the same draw for the same seed and shape, where Keras 2
    went on drawing) or a `keras.random.SeedGenerator` (fresh draws, also under JAX).
    Source: Keras 2.3 `keras.backend.random_uniform`.
    """
    seed = _seed(seed, "random_uniform")
    return keras.random.uniform(
        _shape_arg(shape), minval=minval, maxval=maxval, dtype=dtype or floatx(), seed=seed
    )


def random_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    """Normal samples; ``seed`` as in `random_uniform`. Source: Keras 2.3 `keras.backend.random_normal`."""
    seed = _seed(seed, "random_normal")
    return keras.random.normal(
        _shape_arg(shape), mean=mean, stddev=stddev, dtype=dtype or floatx(), seed=seed
    )


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    """Normal samples redrawn beyond 2 ``stddev``; ``seed`` as in `random_uniform`.

    Source: Keras 2.3 `keras.backend.truncated_normal`.
    """
    seed = _seed(seed, "truncated_normal")
    return keras.random.truncated_normal(
        _shape_arg(shape), mean=mean, stddev=stddev, dtype=dtype or floatx(), seed=seed
    )


def random_binomial(shape, p=0.0, dtype=None, seed=None):
    """Bernoulli samples: 1 with probability ``p``, else 0, ``dtype`` default floatx; ``seed`` as in
    `random_uniform`. Source: Keras 2.3 `keras.backend.random_binomial`."""
    seed = _seed(seed, "random_binomial")
    dtype = dtype or floatx()
    uniform = keras.random.uniform(_shape_arg(shape), dtype=dtype, seed=seed)
    return ops.cast(ops.less(uniform, p), dtype)


random_bernoulli = random_binomial


def dropout(x, level, noise_shape=None, seed=None):
    """Zero entries with probability ``level`` and scale the rest by ``1 / (1 - level)`` (always:
    wrap in `in_train_phase` for training only); ``seed`` as in `random_uniform`.
    Source: Keras 2.3 `keras.backend.dropout`."""
    seed = _seed(seed, "dropout")
    if noise_shape is not None:
        noise_shape = _shape_arg(noise_shape)
    return keras.random.dropout(x, level, noise_shape=noise_shape, seed=seed)


# -- pooling ------------------------------------------------------------------------------------------


def pool2d(x, pool_size, strides=(1, 1), padding="valid", data_format=None, pool_mode="max"):
    """2-D max or average pooling of ``(batch, rows, cols, channels)`` (channels_last).

    Raises: ValueError for a ``pool_mode`` other than ``'max'`` / ``'avg'``.
    Source: Keras 2.3 `keras.backend.pool2d`.
    """
    data_format = data_format or image_data_format()
    if pool_mode == "max":
        return ops.max_pool(x, pool_size, strides, padding, data_format)
    if pool_mode == "avg":
        return ops.average_pool(x, pool_size, strides, padding, data_format)
    raise ValueError(f"K.pool2d: pool_mode must be 'max' or 'avg', got {pool_mode!r}")


# -- what Keras 3 has no equivalent for ---------------------------------------------------------------

gradients = _unsupported(
    "gradients",
    "Take gradients in a custom `train_step` (tf.GradientTape, jax.grad, torch autograd), or use "
    "bert4keras's adversarial-training, gradient-penalty and integrated-gradients helpers",
)
function = _unsupported(
    "function",
    "Build a keras.Model from the inputs to the outputs and call `predict`, or call the model on tensors",
)
placeholder = _unsupported("placeholder", "Use keras.Input(shape, dtype=...)")
get_session = _unsupported("get_session", "Keras 3 runs eagerly or compiles functions itself")
set_session = _unsupported("set_session", "Keras 3 runs eagerly or compiles functions itself")
learning_phase_scope = _unsupported(
    "learning_phase_scope", "Pass training=True/False to the model or layer call"
)
set_learning_phase = _unsupported("set_learning_phase", "Pass training=True/False to the model or layer call")
