"""Optimizers: bert4keras's Adam, AdaFactor and Lion, and the `extend_with_*` family on Keras 3.

Each `extend_with_*(BaseOptimizer, name=None)` returns a new subclass of any
`keras.optimizers.Optimizer` subclass, so the tricks compose in any order:

    AdamW = extend_with_weight_decay(Adam, "AdamW")
    AdamWLR = extend_with_piecewise_linear_lr(AdamW, "AdamWLR")
    optimizer = AdamWLR(learning_rate=1e-5, weight_decay_rate=0.01,
                        exclude_from_weight_decay=["Norm", "bias"],
                        lr_schedule={1000: 1, 10000: 0.1})

How they hook in. Keras calls `update_step(gradient, variable, learning_rate)` once per variable
with the *scheduled* learning rate. A wrapper that changes the update reads the variable before
and after the base's `update_step` and assigns the transformed value, which is bert4keras's
"new_x = f(x, new_x)" rule; wrappers apply innermost first. Everything is `keras.ops` on optimizer
variables, so it runs under `model.fit` (tf.function/XLA, jax.jit via `stateless_apply`, torch)
and in custom loops. Two wrappers reuse Keras instead: gradient accumulation is Keras'
`gradient_accumulation_steps`, and the piecewise schedule multiplies Keras' learning rate.

Variables are matched by `variable.path` ("Transformer-0-FeedForward-Norm/gamma"), the Keras 3
counterpart of the TF1 names bert4keras matched, so patterns like `["Norm", "bias"]` keep working.

Generated classes are registered with Keras as "bert4keras>{name}" (`name` defaults to a
deterministic one built from the base class, e.g. "KerasSGD_WeightDecay"). A saved model
loads in a fresh process once the class exists again: import this module for the ready-made
names (`AdamW`, `AdamEMA`, `LAMB`, ...), or rerun the same `extend_with_*` call for your own.
"""

import functools
import inspect
import re

import keras
import numpy as np
from keras import ops

from bert4keras import _keras_internals as internals
from bert4keras._checks import _check_int, _check_number

__all__ = [
    "piecewise_linear",
    "PiecewiseLinearSchedule",
    "create_optimizer",
    "Adam",
    "AdaFactor",
    "Lion",
    "extend_with_weight_decay",
    "extend_with_layer_adaptation",
    "extend_with_piecewise_linear_lr",
    "extend_with_gradient_accumulation",
    "extend_with_lookahead",
    "extend_with_lazy_optimization",
    "extend_with_exponential_moving_average",
    "extend_with_parameter_wise_lr",
    "AdamW",
    "AdamLR",
    "AdamWLR",
    "AdamG",
    "AdamWLRG",
    "AdamEMA",
    "AdamLA",
    "LAMB",
]

_register = functools.partial(keras.saving.register_keras_serializable, package="bert4keras")


# ----------------------------------------------------------------------------------- helpers


def piecewise_linear(step, schedule, from_zero=True):
    """Piecewise-linear function of `step` through the points of `schedule` ({step: value}).

    `{1000: 1, 2000: 0.1}` rises linearly from 0 at step 0 to 1 at step 1000 (the implicit
    (0, 0) point is added when `from_zero` and the schedule has no step 0), falls to 0.1 at
    step 2000 and stays there. Before the first point the first value holds.
    `schedule` may also be a list of (step, value) pairs; steps are ints >= 0 in any order
    (digit strings, as a JSON config holds them, and floats are converted with `int`).
    Returns a float tensor of `step`'s shape.
    Raises TypeError / ValueError for an empty schedule, a step that is not a number >= 0,
    a step given twice, or a value that is not a finite number.
    """
    points = list(_step_schedule("piecewise_linear", "schedule", schedule, minimum=None).items())
    if not points:
        raise ValueError(f"piecewise_linear: schedule must have at least one {{step: value}} point, got {schedule!r}")
    if from_zero and points[0][0] != 0:
        points = [(0, 0.0)] + points
    t = ops.cast(step, keras.config.floatx())
    value = ops.zeros_like(t) + points[0][1]
    for (t0, v0), (t1, v1) in zip(points[:-1], points[1:]):
        segment = v0 + (v1 - v0) * (t - t0) / (t1 - t0)
        value = ops.where(t >= t0, segment, value)
    return ops.where(t >= points[-1][0], ops.zeros_like(t) + points[-1][1], value)


@_register()
class PiecewiseLinearSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Learning rate `learning_rate * piecewise_linear(step, schedule)`, as a Keras schedule.

    The schedule form of `extend_with_piecewise_linear_lr`: `Adam(PiecewiseLinearSchedule(
    1e-3, {1000: 1}))` warms up linearly over 1000 steps. Keras calls it with the count of
    every `apply` call (accumulation micro-steps included), the same clock as the wrapper.
    Source: Su Jianlin, "6个派生优化器的简单介绍及其实现" (kexue.fm, 2019-11-25).
    """

    def __init__(self, learning_rate, schedule):
        self.learning_rate = _check_number("PiecewiseLinearSchedule", "learning_rate", learning_rate, 0)
        self.schedule = _step_schedule("PiecewiseLinearSchedule", "schedule", schedule)
        if not self.schedule:
            raise ValueError(
                f"PiecewiseLinearSchedule: schedule must have at least one {{step: multiplier}} point, got {schedule!r}"
            )

    def __call__(self, step):
        return self.learning_rate * piecewise_linear(step, self.schedule)

    def get_config(self):
        return {"learning_rate": self.learning_rate, "schedule": dict(self.schedule)}


def create_optimizer(learning_rate, total_steps, warmup_proportion=0.1, weight_decay=0.01,
                     exclude_from_weight_decay=("bias", "gamma", "beta"), **kwargs):
    """Keras `AdamW` with BERT's fine-tuning schedule: linear warmup to `learning_rate`, cosine decay to 0.

    The recipe of BERT-era fine-tuning scripts (Google's `run_classifier.py` warms up over
    `warmup_proportion` of the steps) with the cosine decay of HF's
    `get_cosine_schedule_with_warmup`, built from Keras' own `AdamW` and `CosineDecay`:

        model.compile(optimizer=create_optimizer(2e-5, total_steps=len(train_gen) * epochs), ...)

    Over `warmup_steps = max(1, int(total_steps * warmup_proportion))` steps (none when
    `warmup_proportion` is 0) the rate rises linearly from 0 to `learning_rate`, then follows
    a half cosine down to 0 at `total_steps`. Variables whose path contains one of
    `exclude_from_weight_decay` (biases and LayerNormalization's gamma and beta by default; add
    "scale" for T5's RMS norms) get no weight decay.

    Args:
        learning_rate: number > 0, the peak learning rate.
        total_steps: int >= 1, optimizer steps of the whole run (e.g. `len(train_gen) * epochs`).
        warmup_proportion: number in [0, 1].
        weight_decay: number >= 0, AdamW's decoupled weight decay.
        exclude_from_weight_decay: strings, parts of variable names left undecayed.
        **kwargs: passed to `keras.optimizers.AdamW` (`beta_1`, `epsilon`, `clipnorm`, ...); a
            keyword AdamW does not take raises its TypeError.
    Returns:
        a `keras.optimizers.AdamW` whose `learning_rate` is a `CosineDecay` schedule.
    Raises:
        TypeError, ValueError: an argument of the wrong type or out of range, named.
    """
    where = "create_optimizer"
    learning_rate = _check_number(where, "learning_rate", learning_rate, 0, low_open=True)
    total_steps = _check_int(where, "total_steps", total_steps, 1)
    warmup_proportion = _check_number(where, "warmup_proportion", warmup_proportion, 0, 1)
    weight_decay = _check_number(where, "weight_decay", weight_decay, 0)
    if isinstance(exclude_from_weight_decay, str) or not all(isinstance(n, str) for n in exclude_from_weight_decay):
        raise TypeError(f"{where}: exclude_from_weight_decay must be a list of strings, got {exclude_from_weight_decay!r}")
    if warmup_proportion > 0:
        warmup_steps = max(1, int(total_steps * warmup_proportion))
        schedule = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0, decay_steps=max(1, total_steps - warmup_steps),
            warmup_target=learning_rate, warmup_steps=warmup_steps,
        )
    else:
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay, **kwargs)
    optimizer.exclude_from_weight_decay(var_names=list(exclude_from_weight_decay))
    return optimizer


def _string_matching(string, patterns):
    return any(re.search(pattern, string) for pattern in patterns)


# Argument checks: a wrong type is a TypeError, a bad value a ValueError, each naming the class,
# the argument, the value and what is expected (`_check_int`/`_check_number` from snippets).


def _patterns(where, name, patterns):
    """`patterns` (None, or a list of regexes searched in variable paths) as a list."""
    if patterns is None:
        return []
    if not isinstance(patterns, (list, tuple, set, frozenset)):
        hint = f"; for one pattern write [{patterns!r}]" if isinstance(patterns, str) else ""
        raise TypeError(
            f"{where}: {name} must be a list of regex patterns (str), got {patterns!r} "
            f"({type(patterns).__name__}){hint}"
        )
    patterns = sorted(patterns) if isinstance(patterns, (set, frozenset)) else list(patterns)
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(
                f"{where}: {name} must be a list of regex patterns (str), got {pattern!r} "
                f"({type(pattern).__name__}) in {patterns!r}"
            )
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"{where}: {name} holds {pattern!r}, which is not a valid regex: {error}") from None
    return patterns


def _pairs(where, name, schedule, key, value):
    """The (key, value) pairs of a dict, or of a list of pairs."""
    if isinstance(schedule, dict):
        return list(schedule.items())
    if isinstance(schedule, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in schedule):
        return [tuple(p) for p in schedule]
    raise TypeError(
        f"{where}: {name} must be a dict {{{key}: {value}}} (or a list of ({key}, {value}) pairs), "
        f"got {schedule!r} ({type(schedule).__name__})"
    )


def _step_schedule(where, name, schedule, minimum=0):
    """`{step: value}` (or (step, value) pairs) as a dict sorted by step: int steps >= 0 (digit
    strings, as JSON configs hold them, and floats go through `int` as in bert4keras 0.11.5),
    float values >= `minimum` (None: any finite number)."""
    points = {}
    for key, value in _pairs(where, name, schedule, "step", "multiplier" if minimum == 0 else "value"):
        step = key
        if isinstance(step, str):
            try:
                step = int(step)
            except ValueError:
                pass
        if isinstance(step, bool) or not isinstance(step, (int, float, np.integer, np.floating)):
            raise TypeError(
                f"{where}: {name} steps must be ints >= 0 (optimizer iterations), got {key!r} ({type(key).__name__})"
            )
        if not np.isfinite(step) or step < 0:
            raise ValueError(f"{where}: {name} steps must be ints >= 0 (optimizer iterations), got {key!r}")
        step = int(step)
        if step in points:
            raise ValueError(f"{where}: {name} gives step {step} twice")
        points[step] = _check_number(where, f"{name}[{key!r}]", value, minimum)
    return dict(sorted(points.items()))


def _name_schedule(where, name, schedule):
    """`{substring of a variable path: multiplier >= 0}` (or such pairs) as a dict."""
    multipliers = {}
    for key, value in _pairs(where, name, schedule, "name substring", "multiplier"):
        if not isinstance(key, str):
            raise TypeError(
                f"{where}: {name} keys must be substrings of variable paths (str), got {key!r} ({type(key).__name__})"
            )
        if key in multipliers:
            raise ValueError(f"{where}: {name} gives {key!r} twice")
        multipliers[key] = _check_number(where, f"{name}[{key!r}]", value, 0)
    return multipliers


def _path(optimizer, variable):
    """Path of the model variable ('Embedding-Token/embeddings'): on TF `update_step` gets the tf.Variable."""
    reference = internals.optimizer_variable(optimizer, variable)
    return getattr(reference, "path", None) or reference.name


def _snapshot(variable):
    # A copy, not a view: torch assigns in place. stop_gradient keeps torch custom loops graph-free.
    return ops.copy(ops.stop_gradient(variable))


def _dense(gradient, variable):
    # TF gives embeddings tf.IndexedSlices gradients; adding zeros densifies them (a no-op elsewhere).
    if keras.backend.backend() == "tensorflow":
        return ops.add(ops.zeros(variable.shape, dtype=variable.dtype), gradient)
    return ops.cast(gradient, variable.dtype)


def _norm(x):
    return ops.sqrt(ops.sum(ops.square(x)))


def _rms(x):
    return ops.sqrt(ops.mean(ops.square(x)))


# -------------------------------------------------------------------------------- base optimizers


@_register()
class Adam(keras.optimizers.Optimizer):
    """Adam as bert4keras wrote it: epsilon added to the bias-corrected sqrt(v_hat).

        m <- b1 m + (1 - b1) g;   v <- b2 v + (1 - b2) g^2
        w <- w - lr * m_hat / (sqrt(v_hat) + eps),  m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)

    with t the update count (1-based). `bias_correction=False` uses m, v for m_hat, v_hat.
    Keras' own Adam adds eps to the uncorrected sqrt(v), which differs while t is small.

    Args:
        learning_rate: float or `LearningRateSchedule`.
        beta_1, beta_2: moment decay rates in [0, 1).
        epsilon: float >= 0, 1e-6 as in bert4keras (and Google's BERT AdamWeightDecayOptimizer).
        bias_correction: bool.
        **kwargs: Keras optimizer arguments (`clipnorm`, `global_clipnorm`, `name`, ...).
    Source: Kingma & Ba 2015, Algorithm 1 (eps placement as in the paper).
    """

    def __init__(
        self,
        learning_rate=0.001,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-6,
        bias_correction=True,
        **kwargs,
    ):
        where = type(self).__name__
        beta_1 = _check_number(where, "beta_1", beta_1, 0, 1, high_open=True)
        beta_2 = _check_number(where, "beta_2", beta_2, 0, 1, high_open=True)
        epsilon = _check_number(where, "epsilon", epsilon, 0)
        super().__init__(learning_rate=learning_rate, **kwargs)
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.bias_correction = bias_correction

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._m, self._v = self.add_optimizer_variables(variables, ["m", "v"])

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = _dense(gradient, variable)
        index = internals.variable_index(self, variable)
        m, v = self._m[index], self._v[index]
        m_t = self.beta_1 * m + (1.0 - self.beta_1) * g
        v_t = self.beta_2 * v + (1.0 - self.beta_2) * ops.square(g)
        self.assign(m, m_t)
        self.assign(v, v_t)
        if self.bias_correction:
            t = ops.cast(self.iterations + 1, dtype)
            m_t = m_t / (1.0 - ops.power(ops.cast(self.beta_1, dtype), t))
            v_t = v_t / (1.0 - ops.power(ops.cast(self.beta_2, dtype), t))
        self.assign_sub(variable, lr * m_t / (ops.sqrt(v_t) + self.epsilon))

    def get_config(self):
        return {
            **super().get_config(),
            "beta_1": self.beta_1,
            "beta_2": self.beta_2,
            "epsilon": self.epsilon,
            "bias_correction": self.bias_correction,
        }


@_register()
class AdaFactor(keras.optimizers.Optimizer):
    """AdaFactor as in bert4keras (factored second moments, update clipping, parameter scale).

        g2 = g^2 + eps1
        v <- b2 v + (1 - b2) g2                                (unfactored), or for a matrix
        vr <- b2 vr + (1 - b2) mean_c(g2); vc <- b2 vc + (1 - b2) mean_r(g2); v = vr vc / mean(vr)
        u = g / sqrt(v + eps1);  u <- u / max(1, rms(u) / clipping_threshold)
        m <- b1 m + (1 - b1) u; u = m                          (only if beta1 > 0)
        u <- u * max(rms(w), eps2)                             (multiply_by_parameter_scale)
        w <- w - lr u

    The two largest axes are factored when the smaller of them has at least
    `min_dim_size_to_factor` entries. `beta2=None` means 1 - t^-0.8 and `learning_rate=None`
    means min(1/sqrt(t), 0.01) (times 0.05 without parameter scale), t the update count.
    Keras' `Adafactor` differs (it always factors the last two axes, always scales by rms(w),
    has no beta1 and no exclusions, and steps by min(lr, 1/sqrt(t))), hence this port.

    Args:
        learning_rate: float, schedule or None (relative step size).
        beta1: float in [0, 1), momentum on the update; 0 keeps no first moment.
        beta2: float in [0, 1) or None.
        epsilon1, epsilon2: floats >= 0, as above.
        multiply_by_parameter_scale: bool.
        clipping_threshold: float > 0 or None.
        min_dim_size_to_factor: int >= 0.
        exclude_from_parameter_scale: list of regex patterns searched in variable paths.
    Source: Shazeer & Stern 2018 (arXiv:1804.04235); mesh_tensorflow's optimize.py.
    """

    def __init__(
        self,
        learning_rate=1e-3,
        beta1=0.0,
        beta2=None,
        epsilon1=1e-30,
        epsilon2=1e-3,
        multiply_by_parameter_scale=True,
        clipping_threshold=1.0,
        min_dim_size_to_factor=128,
        exclude_from_parameter_scale=None,
        **kwargs,
    ):
        where = type(self).__name__
        beta1 = _check_number(where, "beta1", beta1, 0, 1, high_open=True)
        beta2 = _check_number(where, "beta2", beta2, 0, 1, high_open=True, allow_none=True)
        epsilon1 = _check_number(where, "epsilon1", epsilon1, 0)
        epsilon2 = _check_number(where, "epsilon2", epsilon2, 0)
        clipping_threshold = _check_number(
            where, "clipping_threshold", clipping_threshold, 0, low_open=True, allow_none=True
        )
        min_dim_size_to_factor = _check_int(where, "min_dim_size_to_factor", min_dim_size_to_factor, 0)
        exclude_from_parameter_scale = _patterns(where, "exclude_from_parameter_scale", exclude_from_parameter_scale)
        # Keras wants a float; the relative step size replaces it in _get_current_learning_rate.
        super().__init__(learning_rate=0.01 if learning_rate is None else learning_rate, **kwargs)
        self.relative_step = learning_rate is None
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon1 = epsilon1
        self.epsilon2 = epsilon2
        self.multiply_by_parameter_scale = multiply_by_parameter_scale
        self.clipping_threshold = clipping_threshold
        self.min_dim_size_to_factor = min_dim_size_to_factor
        self.exclude_from_parameter_scale = exclude_from_parameter_scale

    def factored_shape(self, shape):
        """(shape of vr, axis averaged for vr, shape of vc, axis averaged for vc), or None."""
        if len(shape) < 2:
            return None
        shape = np.array(shape)
        indices = shape.argpartition(-2)
        if shape[indices[-2]] < self.min_dim_size_to_factor:
            return None
        shape1, shape2 = shape.copy(), shape.copy()
        shape1[indices[-1]] = 1
        shape2[indices[-2]] = 1
        return tuple(int(s) for s in shape1), int(indices[-1]), tuple(int(s) for s in shape2), int(indices[-2])

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self._m, self._v, self._vr, self._vc = [], [], [], []
        for variable in variables:
            prefix = variable.path.replace("/", "_")
            self._m.append(self.add_variable_from_reference(variable, "m") if self.beta1 > 0 else None)
            factored = self.factored_shape(variable.shape)
            if factored is None:
                self._v.append(self.add_variable_from_reference(variable, "v"))
                self._vr.append(None)
                self._vc.append(None)
            else:
                self._v.append(None)
                self._vr.append(self.add_variable(factored[0], dtype=variable.dtype, name=prefix + "_vr"))
                self._vc.append(self.add_variable(factored[2], dtype=variable.dtype, name=prefix + "_vc"))

    # a protected Keras hook (listed in bert4keras/_keras_internals.py)
    def _get_current_learning_rate(self):
        if not self.relative_step:
            return super()._get_current_learning_rate()
        t = ops.cast(self.iterations + 1, keras.config.floatx())
        lr = ops.minimum(1.0 / ops.sqrt(t), 0.01)
        return lr if self.multiply_by_parameter_scale else lr * 0.05

    def update_step(self, gradient, variable, learning_rate):
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = _dense(gradient, variable)
        index = internals.variable_index(self, variable)
        if self.beta2 is None:
            beta2 = 1.0 - ops.power(ops.cast(self.iterations + 1, dtype), -0.8)
        else:
            beta2 = ops.cast(self.beta2, dtype)
        g2 = ops.square(g) + self.epsilon1
        factored = self.factored_shape(variable.shape)
        if factored is None:
            v = self._v[index]
            v_t = beta2 * v + (1.0 - beta2) * g2
            self.assign(v, v_t)
        else:
            _, axis1, _, axis2 = factored
            vr, vc = self._vr[index], self._vc[index]
            vr_t = beta2 * vr + (1.0 - beta2) * ops.mean(g2, axis=axis1, keepdims=True)
            vc_t = beta2 * vc + (1.0 - beta2) * ops.mean(g2, axis=axis2, keepdims=True)
            self.assign(vr, vr_t)
            self.assign(vc, vc_t)
            v_t = vr_t * vc_t / ops.mean(vr_t, axis=axis2, keepdims=True)
        u = g / ops.sqrt(v_t + self.epsilon1)
        if self.clipping_threshold is not None:
            u = u / ops.maximum(1.0, _rms(u) / self.clipping_threshold)
        if self.beta1 > 0.0:
            m = self._m[index]
            u = self.beta1 * m + (1.0 - self.beta1) * u
            self.assign(m, u)
        if self.multiply_by_parameter_scale and not _string_matching(
            _path(self, variable), self.exclude_from_parameter_scale
        ):
            u = u * ops.maximum(_rms(variable), self.epsilon2)
        self.assign_sub(variable, lr * u)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "learning_rate": None if self.relative_step else config["learning_rate"],
                "beta1": self.beta1,
                "beta2": self.beta2,
                "epsilon1": self.epsilon1,
                "epsilon2": self.epsilon2,
                "multiply_by_parameter_scale": self.multiply_by_parameter_scale,
                "clipping_threshold": self.clipping_threshold,
                "min_dim_size_to_factor": self.min_dim_size_to_factor,
                "exclude_from_parameter_scale": list(self.exclude_from_parameter_scale),
            }
        )
        return config


@_register()
class Lion(keras.optimizers.Lion):
    """Keras' Lion with bert4keras's defaults (lr 3e-4, beta_1 0.95, beta_2 0.98).

        w <- w - lr * sign(b1 m + (1 - b1) g);   m <- b2 m + (1 - b2) g

    Source: Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms" (arXiv:2302.06675).
    """

    def __init__(self, learning_rate=3e-4, beta_1=0.95, beta_2=0.98, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, **kwargs)


# ------------------------------------------------------------------------- the extend_with family

_DERIVED = {}  # (extension, base class, name) -> class, so repeated calls return one class


def _base_stem(BaseOptimizer):
    registered = keras.saving.get_registered_name(BaseOptimizer)
    if registered.startswith("bert4keras>"):
        return registered.split(">", 1)[1]
    if ">" in registered:  # another package's registered class
        return registered.replace(">", "_")
    if BaseOptimizer.__module__.split(".")[0] == "keras":
        return "Keras" + BaseOptimizer.__name__
    return BaseOptimizer.__name__


def _extension(suffix):
    """Turn `make(BaseOptimizer) -> class` into `extend_with_*(BaseOptimizer, name=None)`."""

    def decorate(make):
        @functools.wraps(make)
        def extend(BaseOptimizer, name=None):
            if not (isinstance(BaseOptimizer, type) and issubclass(BaseOptimizer, keras.optimizers.Optimizer)):
                raise TypeError(
                    f"{make.__name__}: BaseOptimizer must be a subclass of keras.optimizers.Optimizer "
                    f"(the class, not an instance); got {BaseOptimizer!r}"
                )
            if name is not None and not isinstance(name, str):
                raise TypeError(f"{make.__name__}: name must be a str or None, got {name!r} ({type(name).__name__})")
            name = name or f"{_base_stem(BaseOptimizer)}_{suffix}"
            key = (make.__name__, BaseOptimizer, name)
            if key not in _DERIVED:
                cls = make(BaseOptimizer)
                cls.__name__ = cls.__qualname__ = name
                cls.__module__ = __name__
                cls.__doc__ = f"`{make.__name__}({BaseOptimizer.__name__})`.\n\n{inspect.cleandoc(make.__doc__)}"
                _DERIVED[key] = _register(name=name)(cls)
            return _DERIVED[key]

        del extend.__wrapped__  # show (BaseOptimizer, name=None), not make's signature
        return extend

    return decorate


@_extension("WeightDecay")
def extend_with_weight_decay(BaseOptimizer):
    """Add decoupled weight decay (AdamW) to `BaseOptimizer`; returns the new class.

        w_new = base_update(w) - lr_t * weight_decay_rate * w

    with w the value before the step and lr_t the scheduled learning rate (piecewise multiplier
    included). New arguments: `weight_decay_rate=0.01` (>= 0), `exclude_from_weight_decay=[]`
    (a list of regex patterns `re.search`ed in the variable path, e.g. `["Norm", "bias"]`).
    Independent of Keras' own `weight_decay`, which decays before the step and matches bare
    variable names.
    Source: Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization" (arXiv:1711.05101);
    Su Jianlin, "6个派生优化器的简单介绍及其实现" (kexue.fm, 2019-11-25).
    """

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, weight_decay_rate=0.01, exclude_from_weight_decay=None, **kwargs):
            where = type(self).__name__
            weight_decay_rate = _check_number(where, "weight_decay_rate", weight_decay_rate, 0)
            patterns = _patterns(where, "exclude_from_weight_decay", exclude_from_weight_decay)
            super().__init__(*args, **kwargs)
            self.weight_decay_rate = weight_decay_rate
            # Not `self.exclude_from_weight_decay`: that name is Keras' method.
            self.exclude_from_weight_decay_patterns = patterns

        def _do_weight_decay(self, variable):
            return not _string_matching(_path(self, variable), self.exclude_from_weight_decay_patterns)

        def update_step(self, gradient, variable, learning_rate):
            if not (self.weight_decay_rate and self._do_weight_decay(variable)):
                return super().update_step(gradient, variable, learning_rate)
            old = _snapshot(variable)
            super().update_step(gradient, variable, learning_rate)
            lr = ops.cast(learning_rate, variable.dtype)
            self.assign_sub(variable, lr * self.weight_decay_rate * old)

        def get_config(self):
            return {
                **super().get_config(),
                "weight_decay_rate": self.weight_decay_rate,
                "exclude_from_weight_decay": list(self.exclude_from_weight_decay_patterns),
            }

    return NewOptimizer


@_extension("LayerAdaptation")
def extend_with_layer_adaptation(BaseOptimizer):
    """Add the LAMB layer-wise trust ratio to `BaseOptimizer`; returns the new class.

        dx = new_w - w   (the whole update, weight decay included if applied inside)
        r = ||w|| / ||dx / max(lr_t, 1e-7)||   (Frobenius norms; r = 1 if either is 0)
        w_new = w + r * dx

    New argument: `exclude_from_layer_adaptation=[]` (regex patterns on variable paths).
    `extend_with_layer_adaptation(AdamW)` is LAMB (exported as `LAMB`).
    Source: You et al. 2020, "Large Batch Optimization for Deep Learning" (arXiv:1904.00962).
    """

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, exclude_from_layer_adaptation=None, **kwargs):
            patterns = _patterns(type(self).__name__, "exclude_from_layer_adaptation", exclude_from_layer_adaptation)
            super().__init__(*args, **kwargs)
            self.exclude_from_layer_adaptation = patterns

        def update_step(self, gradient, variable, learning_rate):
            if _string_matching(_path(self, variable), self.exclude_from_layer_adaptation):
                return super().update_step(gradient, variable, learning_rate)
            old = _snapshot(variable)
            super().update_step(gradient, variable, learning_rate)
            dx = ops.convert_to_tensor(variable) - old
            lr = ops.maximum(ops.cast(learning_rate, variable.dtype), keras.config.epsilon())
            w_norm, u_norm = _norm(old), _norm(dx / lr)
            ratio = ops.where(
                ops.logical_and(w_norm > 0, u_norm > 0), w_norm / ops.where(u_norm > 0, u_norm, 1.0), 1.0
            )
            self.assign(variable, old + dx * ratio)

        def get_config(self):
            return {
                **super().get_config(),
                "exclude_from_layer_adaptation": list(self.exclude_from_layer_adaptation),
            }

    return NewOptimizer


@_extension("PiecewiseLinearLR")
def extend_with_piecewise_linear_lr(BaseOptimizer):
    """Multiply the learning rate by a piecewise-linear schedule; returns the new class.

        lr_t = learning_rate * piecewise_linear(n, lr_schedule)

    with n the number of `apply` calls before this one, accumulation micro-steps included
    (Keras' `_iterations`, not the update count `iterations`). `lr_schedule={1000: 1, 2000: 0.1}`
    warms up from 0 over 1000 steps, decays to 10% at step 2000, then holds; the default {0: 1}
    is constant. Steps are ints >= 0 in any order, multipliers numbers >= 0; a list of
    (step, multiplier) pairs is taken as the same dict. Everything reading the learning rate
    (the base update, weight decay, layer adaptation, `optimizer.learning_rate`) sees lr_t.
    `PiecewiseLinearSchedule` is the same as a Keras `LearningRateSchedule`.
    Source: Su Jianlin, "6个派生优化器的简单介绍及其实现" (kexue.fm, 2019-11-25).
    """

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, lr_schedule=None, **kwargs):
            schedule = {} if lr_schedule is None else _step_schedule(type(self).__name__, "lr_schedule", lr_schedule)
            super().__init__(*args, **kwargs)
            self.lr_schedule = schedule or {0: 1.0}

        # a protected Keras hook (listed in bert4keras/_keras_internals.py)
        def _get_current_learning_rate(self):
            multiplier = piecewise_linear(internals.call_count(self), self.lr_schedule)
            return super()._get_current_learning_rate() * multiplier

        def get_config(self):
            return {**super().get_config(), "lr_schedule": dict(self.lr_schedule)}

    return NewOptimizer


@_extension("GradientAccumulation")
def extend_with_gradient_accumulation(BaseOptimizer):
    """Accumulate gradients over `grad_accum_steps` calls, then update once; returns the new class.

        every call: acc <- acc + g;   every k-th call: update with acc / k, acc <- 0

    The update uses the *mean* of the k gradients; on the other calls weights and optimizer
    state stay bit-identical. This is Keras' `gradient_accumulation_steps` under bert4keras's
    argument name, so it wraps the whole step wherever it sits in a chain: the base optimizer
    (Adam's bias correction, EMA, Lookahead) counts updates through `optimizer.iterations`,
    and the piecewise schedule keeps counting every call. k steps of batch b match one step of
    batch k*b. New argument: `grad_accum_steps=2` (1 disables it).
    Source: Su Jianlin, "用时间换取效果：Keras梯度累积优化器" (kexue.fm, 2019-07-08).
    """

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, grad_accum_steps=2, **kwargs):
            grad_accum_steps = _check_int(type(self).__name__, "grad_accum_steps", grad_accum_steps, 1)
            keras_steps = kwargs.pop("gradient_accumulation_steps", None)
            if keras_steps not in (None, grad_accum_steps):
                raise ValueError(
                    f"grad_accum_steps={grad_accum_steps} conflicts with "
                    f"gradient_accumulation_steps={keras_steps}; pass only grad_accum_steps"
                )
            steps = grad_accum_steps if grad_accum_steps > 1 else None
            super().__init__(*args, gradient_accumulation_steps=steps, **kwargs)
            self.grad_accum_steps = grad_accum_steps

        def get_config(self):
            config = super().get_config()
            config.pop("gradient_accumulation_steps", None)
            return {**config, "grad_accum_steps": self.grad_accum_steps}

        # a protected Keras hook (listed in bert4keras/_keras_internals.py)
        def _backend_apply_gradients(self, grads, trainable_variables):
            if self.gradient_accumulation_steps and _in_tf_replica_context():
                return _apply_accumulated_in_replica(self, grads, trainable_variables)
            return super()._backend_apply_gradients(grads, trainable_variables)

    return NewOptimizer


def _in_tf_replica_context():
    """True inside `strategy.run` of a (non-default) tf.distribute strategy, e.g. `fit` under
    `MirroredStrategy().scope()`."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context() is False


def _apply_accumulated_in_replica(optimizer, grads, trainable_variables):
    """Keras' gradient accumulation, rearranged for tf.distribute replicas.

    Keras puts the cross-replica update (an all-reduce, then `merge_call`) inside `ops.cond`, which
    tf.distribute refuses ("`merge_call` called while defining a new graph", keras-team/keras#20582).
    Here the gradients are all-reduced on every call, outside any branch, and the branch moves into
    the per-variable update that runs on each device: the same arithmetic as Keras' path (mean of
    the k gradients, clipping, Keras' `weight_decay`, then `update_step`), one synchronisation point.
    """
    import tensorflow as tf

    if optimizer.use_ema:
        raise ValueError(
            f"{type(optimizer).__name__}: Keras' use_ema=True together with gradient accumulation is not "
            "supported under a tf.distribute strategy; use extend_with_exponential_moving_average instead"
        )
    grads = [g for g, _ in internals.all_reduce_sum_gradients(optimizer, zip(grads, trainable_variables))]
    steps = optimizer.gradient_accumulation_steps
    accumulators = [internals.accumulated_gradient(optimizer, v) for v in trainable_variables]
    means = internals.clip_gradients(optimizer, [(g + ops.convert_to_tensor(a)) / steps for g, a in zip(grads, accumulators)])
    is_update_step = tf.equal((internals.call_count(optimizer) + 1) % steps, 0)
    variables = [v.value if isinstance(v, keras.Variable) else v for v in trainable_variables]

    def update(variable, grad, mean, is_update_step):
        accumulator = internals.accumulated_gradient(optimizer, variable)

        def apply():
            if optimizer.weight_decay is not None and internals.uses_weight_decay(optimizer, variable):
                lr = tf.cast(optimizer.learning_rate, variable.dtype)
                variable.assign_sub(variable * tf.cast(optimizer.weight_decay, variable.dtype) * lr)
            optimizer.update_step(mean, variable, optimizer.learning_rate)
            accumulator.assign(tf.zeros_like(accumulator))

        def accumulate():
            accumulator.assign_add(grad)

        tf.cond(is_update_step, apply, accumulate)

    def merge(distribution, grads, means, is_update_step):
        for variable, grad, mean in zip(variables, grads, means):
            distribution.extended.update(variable, update, args=(grad, mean, is_update_step), group=False)

    tf.__internal__.distribute.interim.maybe_merge_call(
        merge, internals.distribution_strategy(optimizer), grads, means, is_update_step
    )


@_extension("Lookahead")
def extend_with_lookahead(BaseOptimizer):
    """Add Lookahead ("k steps forward, 1 step back"); returns the new class.

        fast weights w: the base update;  slow weights phi start at the weights of the first step
        after every k-th update: phi <- phi + alpha (w - phi);  w <- phi

    New arguments: `steps_per_slow_update=5` (k, an int >= 1), `slow_step_size=0.5` (alpha, in
    (0, 1]; 0 would reset the weights to their start every k updates). Updates are
    counted by `optimizer.iterations` (accumulation-aware). The slow weights are optimizer
    variables (`slow_weight` slots), saved with the optimizer.
    Source: Zhang, Lucas, Hinton & Ba 2019 (arXiv:1907.08610), Algorithm 1; Su Jianlin,
    "Keras实现两个优化器：Lookahead和LazyOptimizer" (kexue.fm, 2019-07-30).
    """

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, steps_per_slow_update=5, slow_step_size=0.5, **kwargs):
            where = type(self).__name__
            steps_per_slow_update = _check_int(where, "steps_per_slow_update", steps_per_slow_update, 1)
            slow_step_size = _check_number(where, "slow_step_size", slow_step_size, 0, 1, low_open=True)
            super().__init__(*args, **kwargs)
            self.steps_per_slow_update = steps_per_slow_update
            self.slow_step_size = slow_step_size

        def build(self, variables):
            if self.built:
                return
            super().build(variables)
            self._slow_weights = self.add_optimizer_variables(variables, "slow_weight")

        def update_step(self, gradient, variable, learning_rate):
            old = _snapshot(variable)
            super().update_step(gradient, variable, learning_rate)
            slow = self._slow_weights[internals.variable_index(self, variable)]
            # The slow slots start at zero; the paper starts them at the initial weights, which
            # are `old` on the first update (read there so later-loaded checkpoints count).
            slow_t = ops.where(ops.equal(self.iterations, 0), old, ops.convert_to_tensor(slow))
            sync = ops.equal((self.iterations + 1) % self.steps_per_slow_update, 0)
            fast = ops.convert_to_tensor(variable)
            slow_t = ops.where(sync, slow_t + self.slow_step_size * (fast - slow_t), slow_t)
            self.assign(slow, slow_t)
            self.assign(variable, ops.where(sync, slow_t, fast))

        def get_config(self):
            return {
                **super().get_config(),
                "steps_per_slow_update": self.steps_per_slow_update,
                "slow_step_size": self.slow_step_size,
            }

    return NewOptimizer


@_extension("LazyOptimization")
def extend_with_lazy_optimization(BaseOptimizer):
    """Leave rows with a zero gradient untouched (lazy embeddings); returns the new class.

        r = any(g != 0, axis=-1);   w_new = where(r, base_update(w), w)

    Moments (and other slots) update for every row as usual; only the variable update is masked.
    New argument: `include_in_lazy_optimization=[]` (regex patterns on variable paths, e.g.
    `["Embedding-Token"]`); other variables are untouched by this wrapper.
    Source: Su Jianlin, "Keras实现两个优化器：Lookahead和LazyOptimizer" (kexue.fm, 2019-07-30).
    """

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, include_in_lazy_optimization=None, **kwargs):
            patterns = _patterns(type(self).__name__, "include_in_lazy_optimization", include_in_lazy_optimization)
            super().__init__(*args, **kwargs)
            self.include_in_lazy_optimization = patterns

        def update_step(self, gradient, variable, learning_rate):
            if not _string_matching(_path(self, variable), self.include_in_lazy_optimization):
                return super().update_step(gradient, variable, learning_rate)
            old = _snapshot(variable)
            super().update_step(gradient, variable, learning_rate)
            touched = ops.any(ops.not_equal(_dense(gradient, variable), 0), axis=-1, keepdims=True)
            self.assign(variable, ops.where(touched, ops.convert_to_tensor(variable), old))

        def get_config(self):
            return {
                **super().get_config(),
                "include_in_lazy_optimization": list(self.include_in_lazy_optimization),
            }

    return NewOptimizer


@_extension("EMA")
def extend_with_exponential_moving_average(BaseOptimizer):
    """Keep an exponential moving average of the weights; returns the new class.

        ema_0 = 0;   after every update t:  ema_t = m ema_{t-1} + (1 - m) w_t
        apply_ema_weights():       w <- ema_t / (1 - m^t)   (raw ema_t with bias_correction=False)
        reset_old_weights():       w <- the weights saved by apply_ema_weights, exactly

    New argument: `ema_momentum=0.999` (m). The averages are optimizer variables (`ema` slots,
    saved with the optimizer). Call `apply_ema_weights()` / `reset_old_weights()` around an
    evaluation, e.g. in a callback's `on_epoch_end`; with JAX inside `on_train_batch_end`
    call `model.jax_state_sync()` first. Keras' `use_ema` differs (its average starts at the
    first weights and may overwrite the model at the end of `fit`), so it is not used here.
    Source: Su Jianlin, "“让Keras更酷一些！”：中间变量、权重滑动和安全生成器"
    (kexue.fm, 2019-03-14).
    """

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, ema_momentum=0.999, **kwargs):
            if kwargs.get("use_ema"):
                raise ValueError("use either extend_with_exponential_moving_average or Keras' use_ema, not both")
            ema_momentum = _check_number(type(self).__name__, "ema_momentum", ema_momentum, 0, 1, high_open=True)
            # Keras' base optimizer owns the `ema_momentum` attribute and config entry.
            super().__init__(*args, ema_momentum=ema_momentum, **kwargs)
            self._old_weights = None

        def build(self, variables):
            if self.built:
                return
            super().build(variables)
            self._ema_weights = self.add_optimizer_variables(variables, "ema")

        def update_step(self, gradient, variable, learning_rate):
            super().update_step(gradient, variable, learning_rate)
            ema = self._ema_weights[internals.variable_index(self, variable)]
            m = ops.cast(self.ema_momentum, variable.dtype)
            self.assign(ema, m * ema + (1.0 - m) * ops.convert_to_tensor(variable))

        def apply_ema_weights(self, bias_correction=True):
            """Save the current weights, then set the (bias-corrected) moving averages."""
            weights = internals.trained_variables(self)
            if any(getattr(w, "_value", 0) is None for w in weights):
                raise RuntimeError(
                    "model weights are detached (JAX inside fit): call model.jax_state_sync() first"
                )
            self._old_weights = [np.array(ops.convert_to_numpy(w)) for w in weights]
            steps = int(ops.convert_to_numpy(self.iterations))
            if steps == 0:  # no update yet: the average is undefined, keep the weights
                return
            scale = 1.0 - np.power(np.float64(self.ema_momentum), steps) if bias_correction else 1.0
            for w, ema in zip(weights, self._ema_weights):
                if ema is not None:
                    w.assign((ops.convert_to_numpy(ema).astype("float64") / scale).astype(w.dtype))

        def reset_old_weights(self):
            """Restore the weights saved by the last `apply_ema_weights()`."""
            if self._old_weights is None:
                raise RuntimeError("reset_old_weights() called before apply_ema_weights()")
            for w, value in zip(internals.trained_variables(self), self._old_weights):
                w.assign(value)

    return NewOptimizer


@_extension("ParameterWiseLR")
def extend_with_parameter_wise_lr(BaseOptimizer):
    """Scale each variable's update by name (layer-wise learning rates); returns the new class.

        multiplier(w) = product of paramwise_lr_schedule[k] over keys k contained in w's path
        w_new = w + multiplier(w) * (base_update(w) - w)

    New argument: `paramwise_lr_schedule={}`, e.g. `{"Embedding-": 0.1, "Transformer-0-": 0.5}`
    (or a list of such pairs); plain substring match; multipliers >= 0, 0 freezes a variable
    (its slots still update).
    Source: Su Jianlin, "“让Keras更酷一些！”：分层的学习率和自由的梯度" (kexue.fm, 2019-03-10).
    """

    class NewOptimizer(BaseOptimizer):
        def __init__(self, *args, paramwise_lr_schedule=None, **kwargs):
            schedule = {}
            if paramwise_lr_schedule is not None:
                schedule = _name_schedule(type(self).__name__, "paramwise_lr_schedule", paramwise_lr_schedule)
            super().__init__(*args, **kwargs)
            self.paramwise_lr_schedule = schedule

        def _multiplier(self, variable):
            path = _path(self, variable)
            return float(np.prod([v for k, v in self.paramwise_lr_schedule.items() if k in path]))

        def update_step(self, gradient, variable, learning_rate):
            multiplier = self._multiplier(variable)
            if multiplier == 1.0:
                return super().update_step(gradient, variable, learning_rate)
            old = _snapshot(variable)
            super().update_step(gradient, variable, learning_rate)
            if multiplier == 0.0:
                self.assign(variable, old)
            else:
                self.assign(variable, old + multiplier * (ops.convert_to_tensor(variable) - old))

        def get_config(self):
            return {**super().get_config(), "paramwise_lr_schedule": dict(self.paramwise_lr_schedule)}

    return NewOptimizer


# ------------------------------------------------------------------------------ ready-made names

AdamW = extend_with_weight_decay(Adam, "AdamW")
AdamLR = extend_with_piecewise_linear_lr(Adam, "AdamLR")
AdamWLR = extend_with_piecewise_linear_lr(AdamW, "AdamWLR")
AdamG = extend_with_gradient_accumulation(Adam, "AdamG")
AdamWLRG = extend_with_gradient_accumulation(AdamWLR, "AdamWLRG")
AdamEMA = extend_with_exponential_moving_average(Adam, "AdamEMA")
AdamLA = extend_with_lookahead(Adam, "AdamLA")
LAMB = extend_with_layer_adaptation(AdamW, "LAMB")
