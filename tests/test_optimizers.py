"""bert4keras.optimizers: every update rule against a NumPy replica or closed form written here,
under `model.fit` and a compiled custom loop (tf.function / jax.jit(stateless_apply) / torch)."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

from bert4keras import optimizers as O

BACKEND = keras.backend.backend()
MODES = ["fit", "loop"]
# "auto" means plain tf.function on a TF CPU; the small fit tests ask for XLA, the tiny BERT does not.
JIT_COMPILE = True if BACKEND == "tensorflow" else "auto"


# --- a linear regression whose gradients NumPy knows -------------------------------------------

RNG = np.random.default_rng(0)
X = RNG.normal(size=(12, 3)).astype("float32")
T = RNG.normal(size=(12, 2)).astype("float32")
W0 = RNG.normal(size=(3, 2)).astype("float32")
B0 = RNG.normal(size=(2,)).astype("float32")


def linear_model(name="dense", kernel=W0, bias=B0):
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(
        2,
        name=name,
        kernel_initializer=keras.initializers.Constant(kernel),
        bias_initializer=keras.initializers.Constant(bias),
    )
    return keras.Model(inputs, dense(inputs))


def mse_grads(params, x, t):
    """Gradients of keras' 'mse' (mean over every element) for y = x W + b."""
    w, b = params
    d = 2.0 * (x @ w + b - t) / t.size
    return [x.T @ d, d.sum(0)]


def weights(model):
    return [np.array(ops.convert_to_numpy(v)) for v in model.trainable_variables]


class Loop:
    """A compiled custom training step: tf.function, jax.jit(stateless_apply), or torch no_grad."""

    def __init__(self, optimizer, variables):
        self.optimizer, self.variables = optimizer, list(variables)
        optimizer.build(self.variables)
        if BACKEND == "tensorflow":
            import tensorflow as tf

            self.step = tf.function(lambda grads: optimizer.apply(grads, self.variables))
        elif BACKEND == "jax":
            import jax

            self.step = jax.jit(optimizer.stateless_apply)

    def __call__(self, grads):
        grads = [ops.convert_to_tensor(np.asarray(g, "float32")) for g in grads]
        if BACKEND == "jax":
            new_vars, new_opt = self.step(
                [v.value for v in self.optimizer.variables], grads, [v.value for v in self.variables]
            )
            for v, value in zip(self.variables, new_vars):
                v.assign(value)
            for v, value in zip(self.optimizer.variables, new_opt):
                v.assign(value)
        elif BACKEND == "tensorflow":
            self.step(grads)
        else:
            import torch

            with torch.no_grad():
                self.optimizer.apply(grads, self.variables)


def train(optimizer, mode, model=None, batch_size=12, epochs=1, x=X, t=T):
    """Train the linear model (fit: compiled Keras loop; loop: NumPy gradients into `Loop`)."""
    model = model or linear_model()
    if mode == "fit":
        model.compile(optimizer=optimizer, loss="mse", jit_compile=JIT_COMPILE)
        model.fit(x, t, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    else:
        loop = Loop(optimizer, model.trainable_variables)
        for _ in range(epochs):
            for s in range(0, len(x), batch_size):
                loop(mse_grads(weights(model), x[s : s + batch_size], t[s : s + batch_size]))
    return weights(model)


def reference(step, batch_size=12, epochs=1, params=(W0, B0), x=X, t=T):
    """NumPy replica of `train`: step(params, grads, call) -> params, call counting from 0."""
    params = [np.asarray(p, "float64") for p in params]
    call = 0
    for _ in range(epochs):
        for s in range(0, len(x), batch_size):
            params = step(params, mse_grads(params, x[s : s + batch_size], t[s : s + batch_size]), call)
            call += 1
    return params


def np_sgd(lr, multiplier=lambda call: 1.0):
    return lambda params, grads, call: [w - lr * multiplier(call) * g for w, g in zip(params, grads)]


def np_adam(lr, beta_1=0.9, beta_2=0.999, eps=1e-6, bias_correction=True):
    """Adam as in bert4keras: eps added to the bias-corrected sqrt(v_hat)."""
    state = {"t": 0}

    def step(params, grads, call):
        state["t"] += 1
        t, out = state["t"], []
        for i, (w, g) in enumerate(zip(params, grads)):
            m = beta_1 * state.get(("m", i), 0.0) + (1 - beta_1) * g
            v = beta_2 * state.get(("v", i), 0.0) + (1 - beta_2) * g * g
            state["m", i], state["v", i] = m, v
            if bias_correction:
                m, v = m / (1 - beta_1**t), v / (1 - beta_2**t)
            out.append(w - lr * m / (np.sqrt(v) + eps))
        return out

    return step


def assert_params(actual, expected, atol=1e-6, rtol=1e-5):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, atol=atol, rtol=rtol)


# --- Adam, AdaFactor, Lion ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias_correction", [True, False])
def test_adam_adds_epsilon_to_bias_corrected_root(mode, bias_correction):
    # A large epsilon makes its placement visible: Keras' Adam would differ by ~1e-3 here.
    kwargs = dict(learning_rate=0.01, epsilon=0.1, bias_correction=bias_correction)
    got = train(O.Adam(**kwargs), mode, epochs=3)
    expected = reference(np_adam(0.01, eps=0.1, bias_correction=bias_correction), epochs=3)
    assert_params(got, expected)
    keras_adam = train(keras.optimizers.Adam(0.01, epsilon=0.1), "loop", epochs=3)
    assert np.abs(keras_adam[0] - expected[0]).max() > 1e-4


def np_adafactor(lr, beta1, eps1=1e-30, eps2=1e-3, clip=1.0, min_dim=2, no_scale=("bias",)):
    """AdaFactor (Shazeer & Stern 2018) with bert4keras's choices, lr/beta2 from the step count."""
    state = {"t": 0}

    def rms(a):
        return np.sqrt(np.mean(np.square(a)))

    def step(params, grads, call):
        state["t"] += 1
        t = state["t"]
        beta2 = 1.0 - t**-0.8
        step_size = lr if lr is not None else min(1.0 / np.sqrt(t), 0.01)
        out = []
        for i, (w, g) in enumerate(zip(params, grads)):
            g2 = g * g + eps1
            big = sorted(range(w.ndim), key=lambda a: w.shape[a])[-2:] if w.ndim >= 2 else []
            if big and w.shape[big[0]] >= min_dim:
                axis_r, axis_c = big[1], big[0]  # vr averages the largest axis, vc the second largest
                vr = beta2 * state.get(("vr", i), 0.0) + (1 - beta2) * g2.mean(axis_r, keepdims=True)
                vc = beta2 * state.get(("vc", i), 0.0) + (1 - beta2) * g2.mean(axis_c, keepdims=True)
                state["vr", i], state["vc", i] = vr, vc
                v = vr * vc / vr.mean(axis_c, keepdims=True)
            else:
                v = beta2 * state.get(("v", i), 0.0) + (1 - beta2) * g2
                state["v", i] = v
            u = g / np.sqrt(v + eps1)
            u = u / max(1.0, rms(u) / clip)
            if beta1:
                u = beta1 * state.get(("m", i), 0.0) + (1 - beta1) * u
                state["m", i] = u
            if not (i == 1 and "bias" in no_scale):
                u = u * max(rms(w), eps2)
            out.append(w - step_size * u)
        return out

    return step


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("learning_rate,beta1", [(None, 0.0), (0.05, 0.9)])
def test_adafactor_matches_numpy_replica(mode, learning_rate, beta1):
    # kernel (3, 2) is factored (min_dim_size_to_factor=2), the bias is not and skips the scale.
    optimizer = O.AdaFactor(
        learning_rate=learning_rate, beta1=beta1, min_dim_size_to_factor=2, exclude_from_parameter_scale=["bias"]
    )
    got = train(optimizer, mode, epochs=3)
    assert_params(got, reference(np_adafactor(learning_rate, beta1), epochs=3))
    assert [v.shape for v in optimizer.variables if "_vr" in v.name or "_vc" in v.name] == [(1, 2), (3, 1)]


def test_lion_has_bert4keras_defaults_and_rule():
    optimizer = O.Lion()
    assert optimizer.get_config()["learning_rate"] == pytest.approx(3e-4)
    assert (optimizer.beta_1, optimizer.beta_2) == (0.95, 0.98)
    lr, b1, b2, state = 0.01, 0.95, 0.98, {}

    def step(params, grads, call):
        out = []
        for i, (w, g) in enumerate(zip(params, grads)):
            m = state.get(i, 0.0)
            out.append(w - lr * np.sign(b1 * m + (1 - b1) * g))
            state[i] = b2 * m + (1 - b2) * g
        return out

    assert_params(train(O.Lion(learning_rate=lr), "loop", epochs=3), reference(step, epochs=3))


# --- weight decay and layer adaptation ---------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_weight_decay_one_step_is_adamw(mode):
    lr, rate = 0.01, 0.1
    optimizer = O.AdamW(learning_rate=lr, weight_decay_rate=rate, exclude_from_weight_decay=["bias"])
    got = train(optimizer, mode)
    gw, gb = mse_grads([W0, B0], X, T)
    expected_kernel = W0 - lr * gw / (np.abs(gw) + 1e-6) - lr * rate * W0  # step 1: m_hat = g, v_hat = g^2
    expected_bias = B0 - lr * gb / (np.abs(gb) + 1e-6)  # excluded by name: no decay
    assert_params(got, [expected_kernel, expected_bias])


def test_weight_decay_uses_scheduled_learning_rate():
    AdamWLR = O.extend_with_piecewise_linear_lr(O.AdamW)
    lr, rate = 0.01, 0.1
    got = train(AdamWLR(learning_rate=lr, weight_decay_rate=rate, lr_schedule={0: 0.5}), "loop")
    gw, gb = mse_grads([W0, B0], X, T)
    expected = [w - 0.5 * lr * g / (np.abs(g) + 1e-6) - 0.5 * lr * rate * w for w, g in ((W0, gw), (B0, gb))]
    assert_params(got, expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("exclude", [[], ["kernel"]])
def test_layer_adaptation_trust_ratio(mode, exclude):
    # SGD + weight decay inside the trust ratio; the bias starts at 0, so its ratio is 1.
    SGDWLA = O.extend_with_layer_adaptation(O.extend_with_weight_decay(keras.optimizers.SGD))
    lr, rate = 0.1, 0.05
    optimizer = SGDWLA(learning_rate=lr, weight_decay_rate=rate, exclude_from_layer_adaptation=exclude)
    got = train(optimizer, mode, model=linear_model(bias=np.zeros(2)))
    expected, ratios = [], []
    for w, g in zip([W0, np.zeros(2)], mse_grads([W0, np.zeros(2)], X, T)):
        dx = -lr * g - lr * rate * w  # the whole update, decay included
        w_norm, u_norm = np.linalg.norm(w), np.linalg.norm(dx / lr)
        ratios.append(w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0)
        expected.append(w + dx * ratios[-1])
    if exclude:
        expected[0] = W0 - lr * mse_grads([W0, 0], X, T)[0] - lr * rate * W0
    assert abs(ratios[0] - 1) > 0.1 and ratios[1] == 1.0
    assert_params(got, expected)


def test_lamb_is_layer_adapted_adamw():
    lr, rate = 0.01, 0.01
    got = train(O.LAMB(learning_rate=lr, weight_decay_rate=rate), "loop")
    expected = []
    for w, g in zip([W0, B0], mse_grads([W0, B0], X, T)):
        dx = -lr * g / (np.abs(g) + 1e-6) - lr * rate * w
        expected.append(w + dx * np.linalg.norm(w) / np.linalg.norm(dx / lr))
    assert_params(got, expected)


# --- learning-rate schedules -------------------------------------------------------------------

SCHEDULE = {4: 1.0, 8: 0.25}


def multiplier(call):
    return float(np.interp(call, [0, 4, 8], [0.0, 1.0, 0.25]))


def test_piecewise_linear_interpolates():
    steps = np.arange(0, 15)
    schedule = O.PiecewiseLinearSchedule(0.1, SCHEDULE)
    expected = 0.1 * np.interp(steps, [0, 4, 8], [0, 1, 0.25])
    np.testing.assert_allclose(ops.convert_to_numpy(schedule(steps)), expected, rtol=1e-6)
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(schedule)))
    restored = keras.saving.deserialize_keras_object(serialized)
    np.testing.assert_allclose(ops.convert_to_numpy(restored(steps)), expected, rtol=1e-6)
    no_zero = O.piecewise_linear(steps, {3: 2.0, 5: 1.0}, from_zero=False)
    np.testing.assert_allclose(ops.convert_to_numpy(no_zero), np.interp(steps, [3, 5], [2.0, 1.0]), rtol=1e-6)


@pytest.mark.parametrize("mode", MODES)
def test_piecewise_lr_effective_rate(mode):
    SGDLR = O.extend_with_piecewise_linear_lr(keras.optimizers.SGD)
    got = train(SGDLR(learning_rate=0.1, lr_schedule=SCHEDULE), mode, batch_size=4, epochs=4)
    assert_params(got, reference(np_sgd(0.1, multiplier), batch_size=4, epochs=4))
    scheduled = train(keras.optimizers.SGD(O.PiecewiseLinearSchedule(0.1, SCHEDULE)), mode, batch_size=4, epochs=4)
    assert_params(scheduled, got)


@pytest.mark.parametrize("order", ["accumulation_outside", "accumulation_inside"])
def test_piecewise_lr_clock_counts_accumulation_micro_steps(order):
    if order == "accumulation_outside":
        cls = O.extend_with_gradient_accumulation(O.extend_with_piecewise_linear_lr(keras.optimizers.SGD))
    else:
        cls = O.extend_with_piecewise_linear_lr(O.extend_with_gradient_accumulation(keras.optimizers.SGD))
    optimizer = cls(learning_rate=0.1, lr_schedule=SCHEDULE, grad_accum_steps=2)
    model = linear_model()
    loop = Loop(optimizer, model.trainable_variables)
    rng = np.random.default_rng(1)
    w = W0.astype("float64")
    for call in range(10):
        lr = float(ops.convert_to_numpy(optimizer.learning_rate))
        np.testing.assert_allclose(lr, 0.1 * multiplier(call), rtol=1e-6)
        grads = [rng.normal(size=(3, 2)), np.zeros(2)]
        loop(grads)
        if call % 2 == 0:
            pending = grads[0]
        else:  # the k-th call applies the mean gradient at the schedule of that call
            w = w - 0.1 * multiplier(call) * (pending + grads[0]) / 2
        np.testing.assert_allclose(weights(model)[0], w, atol=1e-6)


# --- gradient accumulation ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("base", ["SGD", "Adam"])
def test_gradient_accumulation_matches_big_batch(mode, base):
    k, b = 3, 4
    if base == "SGD":
        make, step = (lambda: keras.optimizers.SGD(0.1)), np_sgd(0.1)
        accumulated = O.extend_with_gradient_accumulation(keras.optimizers.SGD)(0.1, grad_accum_steps=k)
    else:
        make, step = (lambda: O.Adam(0.01)), np_adam(0.01)
        accumulated = O.AdamG(0.01, grad_accum_steps=k)
    got = train(accumulated, mode, batch_size=b, epochs=2)  # 2 x 3 micro-batches of 4 = 2 updates
    big_batch = train(make(), mode, batch_size=k * b, epochs=2)
    expected = reference(step, batch_size=k * b, epochs=2)
    assert_params(got, expected, atol=1e-6, rtol=0)
    assert_params(got, big_batch, atol=1e-6, rtol=0)


def test_gradient_accumulation_keeps_weights_bit_identical_between_updates():
    optimizer = O.extend_with_exponential_moving_average(O.AdamG)(0.01, grad_accum_steps=3)
    model = linear_model()
    loop = Loop(optimizer, model.trainable_variables)

    def state():  # moments, EMA slots, learning rate: everything but the counter and accumulators
        return [np.array(ops.convert_to_numpy(v)) for v in optimizer.variables
                if "iteration" not in v.name and "accumulator" not in v.name]

    before, state_before = weights(model), state()
    for s in (0, 4):
        loop(mse_grads(before, X[s : s + 4], T[s : s + 4]))
        for a, e in zip(weights(model) + state(), before + state_before):
            np.testing.assert_array_equal(a, e)
    loop(mse_grads(before, X[8:12], T[8:12]))
    assert not np.array_equal(weights(model)[0], before[0])
    assert int(ops.convert_to_numpy(optimizer.iterations)) == 1


# --- lookahead ---------------------------------------------------------------------------------


def np_lookahead(inner, k, alpha, params0):
    slow = [np.asarray(p, "float64") for p in params0]
    count = {"updates": 0}

    def step(params, grads, call):
        fast = inner(params, grads, call)
        count["updates"] += 1
        if count["updates"] % k:
            return fast
        for i, w in enumerate(fast):
            slow[i] = slow[i] + alpha * (w - slow[i])
        return [s.copy() for s in slow]

    return step, slow


@pytest.mark.parametrize("mode", MODES)
def test_lookahead_slow_weights_follow_paper(mode):
    SGDLA = O.extend_with_lookahead(keras.optimizers.SGD)
    optimizer = SGDLA(learning_rate=0.1, steps_per_slow_update=3, slow_step_size=0.5)
    got = train(optimizer, mode, batch_size=4, epochs=3)  # 9 updates: syncs after the 3rd, 6th and 9th
    step, slow = np_lookahead(np_sgd(0.1), 3, 0.5, (W0, B0))
    expected = reference(step, batch_size=4, epochs=3)
    assert_params(got, expected)
    slow_vars = [np.array(ops.convert_to_numpy(v)) for v in optimizer.variables if "slow_weight" in v.name]
    assert_params(slow_vars, slow)


def test_lookahead_syncs_only_every_k_steps():
    SGDLA = O.extend_with_lookahead(keras.optimizers.SGD)
    optimizer = SGDLA(learning_rate=0.1, steps_per_slow_update=3, slow_step_size=0.5)
    model = linear_model()
    loop = Loop(optimizer, model.trainable_variables)
    rng = np.random.default_rng(2)
    fast, slow = W0.astype("float64"), W0.astype("float64")
    for n in range(1, 8):
        g = rng.normal(size=(3, 2))
        loop([g, np.zeros(2)])
        fast = fast - 0.1 * g
        if n % 3 == 0:
            slow = slow + 0.5 * (fast - slow)
            fast = slow.copy()
        np.testing.assert_allclose(weights(model)[0], fast, atol=1e-6)


# --- lazy optimization -------------------------------------------------------------------------


def embedding_model():
    token_ids = keras.Input((2,), dtype="int32")
    x = keras.layers.Embedding(6, 3, name="Embedding-Token")(token_ids)
    x = keras.layers.Flatten()(x)
    return keras.Model(token_ids, keras.layers.Dense(1, name="head")(x))


@pytest.mark.parametrize("mode", MODES)
def test_lazy_optimization_leaves_untouched_rows_bit_identical(mode):
    LazyAdam = O.extend_with_lazy_optimization(O.Adam)
    keras.utils.set_random_seed(0)
    model = embedding_model()
    optimizer = LazyAdam(learning_rate=0.01, include_in_lazy_optimization=["Embedding-Token"])
    batches = [np.array([[1, 2], [2, 1]], "int32"), np.array([[3, 4], [4, 3]], "int32")]
    targets = np.ones((2, 1), "float32")
    def moments():
        return [np.array(ops.convert_to_numpy(v)) for v in optimizer.variables if v.name.endswith("embeddings_m")][0]

    table, m = [weights(model)[0]], []
    if mode == "fit":
        model.compile(optimizer=optimizer, loss="mse", jit_compile=JIT_COMPILE)
        for ids in batches:
            model.fit(ids, targets, batch_size=2, epochs=1, shuffle=False, verbose=0)
            table.append(weights(model)[0])
            m.append(moments())
    else:
        loop = Loop(optimizer, model.trainable_variables)
        rng = np.random.default_rng(3)
        for rows in ([1, 2], [3, 4]):
            g = np.zeros((6, 3))
            g[rows] = rng.normal(size=(2, 3))
            loop([g, rng.normal(size=(6, 1)), rng.normal(size=(1,))])
            table.append(weights(model)[0])
            m.append(moments())
    initial, first, second = table
    np.testing.assert_array_equal(second[[0, 5]], initial[[0, 5]])  # never touched
    np.testing.assert_array_equal(second[[1, 2]], first[[1, 2]])  # touched only in step 1
    assert (np.abs(first[[1, 2]] - initial[[1, 2]]) > 1e-4).all()
    assert (np.abs(second[[3, 4]] - first[[3, 4]]) > 1e-4).all()
    # Moments update for every row: on the rows left alone m2 = beta_1 * m1 != 0.
    np.testing.assert_allclose(m[1][[1, 2]], 0.9 * m[0][[1, 2]], rtol=1e-6)
    assert (m[1][[1, 2]] != 0).all()


def test_lazy_optimization_is_what_keeps_rows_still():
    # Control: plain Adam moves the rows of step 1 again in step 2 (its moments are non-zero).
    model = embedding_model()
    loop = Loop(O.Adam(0.01), model.trainable_variables)
    g = np.zeros((6, 3))
    g[[1, 2]] = 1.0
    loop([g, np.ones((6, 1)), np.ones(1)])
    first = weights(model)[0]
    loop([np.zeros((6, 3)), np.ones((6, 1)), np.ones(1)])
    assert (weights(model)[0][[1, 2]] != first[[1, 2]]).all()


# --- exponential moving average ----------------------------------------------------------------


def np_ema(trajectory, momentum, bias_correction=True):
    ema = np.zeros_like(trajectory[0])
    for w in trajectory:
        ema = momentum * ema + (1 - momentum) * w
    return ema / (1 - momentum ** len(trajectory)) if bias_correction else ema


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bias_correction", [True, False])
def test_ema_apply_and_reset(mode, bias_correction):
    SGDEMA = O.extend_with_exponential_moving_average(keras.optimizers.SGD)
    optimizer = SGDEMA(learning_rate=0.1, ema_momentum=0.9)
    model = linear_model()
    raw = train(optimizer, mode, model=model, batch_size=4, epochs=2)
    trajectory, params = [], [W0.astype("float64"), B0.astype("float64")]
    for _ in range(2):
        for s in range(0, 12, 4):
            params = np_sgd(0.1)(params, mse_grads(params, X[s : s + 4], T[s : s + 4]), 0)
            trajectory.append(params)
    assert_params(raw, trajectory[-1])
    optimizer.apply_ema_weights(bias_correction=bias_correction)
    for i, got in enumerate(weights(model)):
        np.testing.assert_allclose(got, np_ema([p[i] for p in trajectory], 0.9, bias_correction), atol=1e-6, rtol=1e-5)
    optimizer.reset_old_weights()
    for got, expected in zip(weights(model), raw):
        np.testing.assert_array_equal(got, expected)


def test_ema_from_a_callback_during_fit():
    class EvaluateWithEMA(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.predictions = []

        def on_epoch_end(self, epoch, logs=None):
            self.model.optimizer.apply_ema_weights()
            self.predictions.append(self.model.predict(X, verbose=0))
            self.model.optimizer.reset_old_weights()

    model = linear_model()
    SGDEMA = O.extend_with_exponential_moving_average(keras.optimizers.SGD)
    model.compile(optimizer=SGDEMA(0.1, ema_momentum=0.8), loss="mse", jit_compile=JIT_COMPILE)
    callback = EvaluateWithEMA()
    model.fit(X, T, batch_size=6, epochs=3, shuffle=False, verbose=0, callbacks=[callback])
    trajectory, params = [], [W0.astype("float64"), B0.astype("float64")]
    for epoch in range(3):
        for s in (0, 6):
            params = np_sgd(0.1)(params, mse_grads(params, X[s : s + 6], T[s : s + 6]), 0)
            trajectory.append(params)
        w_ema, b_ema = (np_ema([p[i] for p in trajectory], 0.8) for i in range(2))
        np.testing.assert_allclose(callback.predictions[epoch], X @ w_ema + b_ema, atol=1e-5)
    assert_params(weights(model), trajectory[-1])  # training went on from the raw weights


# --- parameter-wise learning rates -------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_parameter_wise_lr_freezes_doubles_and_multiplies(mode):
    inputs = keras.Input((3,))
    layers = [keras.layers.Dense(2, name=n, kernel_initializer="glorot_uniform") for n in ("frozen", "fast", "plain")]
    model = keras.Model(inputs, keras.layers.Add()([layer(inputs) for layer in layers]))
    start = weights(model)
    d = 2.0 * (sum(X @ start[2 * i] + start[2 * i + 1] for i in range(3)) - T) / T.size
    grads = [X.T @ d, d.sum(0)] * 3  # every branch sees the same output gradient
    SGDPW = O.extend_with_parameter_wise_lr(keras.optimizers.SGD)
    optimizer = SGDPW(learning_rate=0.1, paramwise_lr_schedule={"frozen": 0.0, "fast": 2.0, "kernel": 0.5})
    if mode == "fit":
        model.compile(optimizer=optimizer, loss="mse", jit_compile=JIT_COMPILE)
        model.fit(X, T, batch_size=12, epochs=1, verbose=0)
    else:
        Loop(optimizer, model.trainable_variables)(grads)
    multipliers = [0.0, 0.0, 2.0 * 0.5, 2.0, 0.5, 1.0]  # frozen/kernel, frozen/bias, fast/kernel, ...
    got = weights(model)
    np.testing.assert_array_equal(got[0], start[0])
    np.testing.assert_array_equal(got[1], start[1])
    for w, w0, g, mult in zip(got, start, grads, multipliers):
        np.testing.assert_allclose(w - w0, -0.1 * mult * g, atol=1e-6)


# --- composition, naming, serialization --------------------------------------------------------


def test_composition_trains_tiny_bert():
    from bert4keras.models import build_transformer_model

    keras.utils.set_random_seed(0)
    bert = build_transformer_model(
        vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, hidden_act="gelu", max_position=32, with_pool=True,
    )
    model = keras.Model(bert.inputs, keras.layers.Dense(2, activation="softmax", name="head")(bert.output))
    Chain = O.extend_with_exponential_moving_average(
        O.extend_with_lazy_optimization(
            O.extend_with_gradient_accumulation(O.extend_with_piecewise_linear_lr(O.AdamW))
        )
    )
    optimizer = Chain(
        learning_rate=5e-3, weight_decay_rate=0.01, exclude_from_weight_decay=["Norm", "bias"],
        lr_schedule={4: 1.0}, grad_accum_steps=2, include_in_lazy_optimization=["Embedding-Token"],
        ema_momentum=0.9,
    )
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, 50, size=(16, 8)).astype("int32")
    segment_ids = np.zeros_like(token_ids)
    labels = (token_ids[:, 0] > 25).astype("int32")
    history = model.fit([token_ids, segment_ids], labels, batch_size=4, epochs=5, shuffle=False, verbose=0)
    losses = history.history["loss"]
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.5 * losses[0], losses
    assert int(ops.convert_to_numpy(optimizer.iterations)) == 10  # 20 calls / 2
    optimizer.apply_ema_weights()
    optimizer.reset_old_weights()


def test_extend_rejects_what_is_not_an_optimizer_class():
    for bad in (O.Adam(), "Adam", keras.layers.Dense):
        with pytest.raises(TypeError, match="BaseOptimizer"):
            O.extend_with_weight_decay(bad)


def test_derived_classes_are_named_registered_and_reused():
    assert O.extend_with_weight_decay(O.Adam, "AdamW") is O.AdamW
    assert keras.saving.get_registered_name(O.AdamWLRG) == "bert4keras>AdamWLRG"
    SGDW = O.extend_with_weight_decay(keras.optimizers.SGD)
    assert SGDW.__name__ == "KerasSGD_WeightDecay"
    assert O.extend_with_lookahead(SGDW).__name__ == "KerasSGD_WeightDecay_Lookahead"
    assert keras.saving.get_registered_object("bert4keras>KerasSGD_WeightDecay") is SGDW


READY_MADE = [
    (O.Adam, {"bias_correction": False}),
    (O.AdamW, {"weight_decay_rate": 0.1, "exclude_from_weight_decay": ["Norm", "bias"]}),
    (O.AdamLR, {"lr_schedule": {10: 1.0, 20: 0.1}}),
    (O.AdamWLR, {"lr_schedule": {10: 1.0}}),
    (O.AdamG, {"grad_accum_steps": 4}),
    (O.AdamWLRG, {"grad_accum_steps": 4, "lr_schedule": {10: 1.0}}),
    (O.AdamEMA, {"ema_momentum": 0.99}),
    (O.AdamLA, {"steps_per_slow_update": 6, "slow_step_size": 0.3}),
    (O.LAMB, {"exclude_from_layer_adaptation": ["bias"]}),
    (O.AdaFactor, {"learning_rate": None, "beta1": 0.9}),
    (O.Lion, {"beta_1": 0.9}),
    (O.extend_with_lazy_optimization(O.Adam), {"include_in_lazy_optimization": ["Embedding"]}),
    (O.extend_with_parameter_wise_lr(O.Adam), {"paramwise_lr_schedule": {"Transformer-0": 0.1}}),
]


@pytest.mark.parametrize("cls,kwargs", READY_MADE, ids=[c.__name__ for c, _ in READY_MADE])
def test_config_round_trips_through_json(cls, kwargs):
    optimizer = cls(**kwargs)
    config = optimizer.get_config()
    for key, value in kwargs.items():
        assert config[key] == value, key
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(optimizer)))
    assert serialized["registered_name"] == keras.saving.get_registered_name(cls)
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is cls
    assert restored.get_config() == config


CHILD = """
import json, sys
import numpy as np
import keras
from bert4keras import optimizers as O

O.extend_with_lookahead(O.extend_with_exponential_moving_average(O.AdamW))  # recreate the custom chain
out = {}
for tag in ("ready_made", "custom"):
    model = keras.saving.load_model(sys.argv[1] + f"/{tag}.keras")
    data = np.load(sys.argv[1] + "/data.npz")
    x, t = data["x"], data["t"]
    model.fit(x, t, batch_size=12, epochs=1, shuffle=False, verbose=0)
    out[tag] = {"class": type(model.optimizer).__name__, "config": model.optimizer.get_config(),
                "weights": [np.asarray(keras.ops.convert_to_numpy(v)).tolist() for v in model.trainable_variables]}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_saved_model_loads_in_fresh_process(tmp_path):
    Custom = O.extend_with_lookahead(O.extend_with_exponential_moving_average(O.AdamW))
    optimizers = {
        "ready_made": O.AdamWLRG(learning_rate=0.01, lr_schedule={2: 1.0}, grad_accum_steps=2),
        "custom": Custom(learning_rate=0.01, steps_per_slow_update=2, ema_momentum=0.9),
    }
    np.savez(tmp_path / "data.npz", x=X, t=T)
    expected = {}
    for tag, optimizer in optimizers.items():
        model = linear_model()
        model.compile(optimizer=optimizer, loss="mse", jit_compile=JIT_COMPILE)
        model.fit(X, T, batch_size=12, epochs=3, shuffle=False, verbose=0)
        model.save(tmp_path / f"{tag}.keras")
        model.fit(X, T, batch_size=12, epochs=1, shuffle=False, verbose=0)  # what the reload must reproduce
        expected[tag] = (type(optimizer).__name__, optimizer.get_config(), weights(model))
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(tmp_path)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    for tag, (name, config, final) in expected.items():
        assert loaded[tag]["class"] == name
        assert loaded[tag]["config"] == json.loads(json.dumps(config))
        assert_params([np.array(w) for w in loaded[tag]["weights"]], final, atol=1e-6, rtol=0)


# --- create_optimizer: AdamW with warmup and cosine decay ---------------------------------------


def test_create_optimizer_warms_up_linearly_then_decays_on_a_half_cosine():
    lr, total = 3e-4, 50
    optimizer = O.create_optimizer(lr, total, warmup_proportion=0.2)
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.weight_decay == 0.01
    warmup = 10
    for step in [0, 1, 5, 10, 11, 30, 49, 50]:
        optimizer.iterations.assign(step)
        if step <= warmup:
            expected = lr * step / warmup
        else:
            expected = lr * 0.5 * (1 + np.cos(np.pi * (step - warmup) / (total - warmup)))
        np.testing.assert_allclose(float(optimizer.learning_rate), expected, rtol=1e-5, atol=1e-12)
    # No warmup: the decay starts at the peak.
    optimizer = O.create_optimizer(lr, total, warmup_proportion=0)
    np.testing.assert_allclose(float(optimizer.learning_rate), lr, rtol=1e-6)


def test_create_optimizer_leaves_biases_and_norms_undecayed():
    inputs = keras.Input((3,))
    outputs = keras.layers.LayerNormalization(name="norm")(keras.layers.Dense(4, name="dense")(inputs))
    model = keras.Model(inputs, outputs)
    optimizer = O.create_optimizer(0.1, 10, warmup_proportion=0, weight_decay=0.5, beta_1=0.5)
    assert float(optimizer.beta_1) == 0.5  # keywords reach AdamW
    before = {v.path: ops.convert_to_numpy(v).copy() for v in model.trainable_variables}
    # Zero gradients: Adam moves nothing, so whatever changes is the decoupled weight decay.
    optimizer.apply([ops.zeros(v.shape, v.dtype) for v in model.trainable_variables], model.trainable_variables)
    for v in model.trainable_variables:
        after = ops.convert_to_numpy(v)
        if v.path == "dense/kernel":
            np.testing.assert_allclose(after, before[v.path] * (1 - 0.1 * 0.5), rtol=1e-5)
        else:
            np.testing.assert_array_equal(after, before[v.path])


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((0, 10), {}, ValueError, "learning_rate"),
    ((1e-3, 0), {}, ValueError, "total_steps"),
    ((1e-3, 10.0), {}, TypeError, "total_steps"),
    ((1e-3, 10), {"warmup_proportion": 1.5}, ValueError, "warmup_proportion"),
    ((1e-3, 10), {"exclude_from_weight_decay": "bias"}, TypeError, "exclude_from_weight_decay"),
    ((1e-3, 10), {"warmup_steps": 3}, (TypeError, ValueError), "warmup_steps"),
])
def test_create_optimizer_bad_arguments_are_named(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        O.create_optimizer(*args, **kwargs)
