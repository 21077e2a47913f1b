"""bert4keras's ``K`` (Keras 2's backend API on keras.ops) and 0.11.5's backend helpers.

References: NumPy closed forms, and real Keras 2 (``tf_keras.backend``, the legacy Keras 2 package) on
the same NumPy inputs where the semantics are subtle. Runs on the backend chosen by KERAS_BACKEND.
"""

import numpy as np
import pytest

import keras
from keras import ops

from bert4keras.backend import (
    K,
    Sinusoidal,
    align,
    attention_normalize,
    batch_gather,
    divisible_temporal_padding,
    get_available_gpus,
    pool1d,
    recompute_grad,
    root_mean_square,
    search_layer,
    sequence_masking,
)
from bert4keras.backend import keras as b4k_keras

BACKEND = keras.config.backend()
RNG = np.random.default_rng(0)
X = RNG.normal(size=(2, 3, 4)).astype("float32")


def value(x):
    """NumPy value of a K result (a backend tensor or NumPy)."""
    return np.asarray(ops.convert_to_numpy(x))


@pytest.fixture(scope="module")
def k2():
    """Keras 2's backend: ``tf_keras.backend`` called on tf tensors made from the same NumPy inputs."""
    import tensorflow as tf
    import tf_keras
    import tf_keras.src.backend  # the implementation: it also has what tf.keras stopped exporting (logsumexp)

    def call(name, *args, **kwargs):
        args = [tf.constant(a) if isinstance(a, np.ndarray) else a for a in args]
        function = getattr(tf_keras.backend, name, None) or getattr(tf_keras.src.backend, name)
        return np.asarray(function(*args, **kwargs))

    return call


# -- the namespace ------------------------------------------------------------------------------------

NAMES = """sum mean max min prod cumsum cumprod var std any all cast floatx set_floatx epsilon set_epsilon
int_shape shape ndim dtype reshape flatten batch_flatten expand_dims squeeze concatenate stack
permute_dimensions transpose tile repeat repeat_elements gather batch_dot dot exp log sqrt square abs sign
pow clip round maximum minimum equal not_equal greater greater_equal less less_equal switch where zeros_like
ones_like zeros ones eye arange one_hot argmax argmin softmax relu elu sigmoid hard_sigmoid tanh softplus
l2_normalize logsumexp stop_gradient categorical_crossentropy sparse_categorical_crossentropy
binary_crossentropy random_uniform random_normal random_binomial truncated_normal dropout in_train_phase
in_test_phase learning_phase set_value get_value batch_set_value batch_get_value eval variable constant
update update_add update_sub count_params is_tensor is_keras_tensor image_data_format backend clear_session
name_scope infinity set_infinity symbolic gradients function placeholder get_session set_session
learning_phase_scope""".split()


def test_namespace_has_keras2_and_bert4keras_names():
    assert b4k_keras is keras
    missing = [name for name in NAMES if not callable(getattr(K, name, None))]
    assert missing == []


@pytest.mark.parametrize(
    "name", ["gradients", "function", "placeholder", "get_session", "set_session", "learning_phase_scope"]
)
def test_graph_functions_raise_with_the_keras3_way(name):
    with pytest.raises(NotImplementedError, match="Porting from bert4keras 0.11"):
        getattr(K, name)([], [])


def test_gradients_points_to_train_step_and_helpers():
    with pytest.raises(NotImplementedError, match="train_step.*gradient-penalty"):
        K.gradients(None, [])


# -- reductions and elementwise math against NumPy --------------------------------------------------


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "prod", "var", "std"])
@pytest.mark.parametrize("axis,keepdims", [(None, False), (1, False), (-1, True), ([0, 2], False)])
def test_reductions_match_numpy(name, axis, keepdims):
    np_axis = tuple(axis) if isinstance(axis, list) else axis
    expected = getattr(np, name)(X, axis=np_axis, keepdims=keepdims)
    got = getattr(K, name)(ops.convert_to_tensor(X), axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(value(got), expected, rtol=1e-5, atol=1e-6)
    static = getattr(K, name)(X, axis=axis, keepdims=keepdims)
    assert isinstance(static, (np.ndarray, np.generic))
    np.testing.assert_allclose(static, expected, rtol=1e-5, atol=1e-6)


def test_mean_of_bool_is_float():
    mask = np.array([[True, False, True, True]])
    assert float(value(K.mean(ops.convert_to_tensor(mask)))) == pytest.approx(0.75)


@pytest.mark.parametrize("name", ["any", "all"])
def test_any_all_match_numpy(name):
    x = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]], "float32")
    for axis in (None, 0, 1):
        expected = getattr(np, name)(x != 0, axis=axis)
        np.testing.assert_array_equal(value(getattr(K, name)(ops.convert_to_tensor(x), axis=axis)), expected)


@pytest.mark.parametrize("name", ["cumsum", "cumprod"])
def test_cumulative_match_numpy(name):
    for axis in (0, 1, 2):
        expected = getattr(np, name)(X, axis=axis)
        np.testing.assert_allclose(
            value(getattr(K, name)(ops.convert_to_tensor(X), axis=axis)), expected, rtol=1e-5
        )
    np.testing.assert_allclose(
        value(getattr(K, name)(ops.convert_to_tensor(X))), getattr(np, name)(X, axis=0), rtol=1e-5
    )


def test_argmax_argmin_match_numpy():
    tensor = ops.convert_to_tensor(X)
    np.testing.assert_array_equal(value(K.argmax(tensor)), np.argmax(X, -1))
    np.testing.assert_array_equal(value(K.argmin(tensor, axis=1)), np.argmin(X, 1))


UNARY = [
    ("exp", np.exp, X),
    ("log", np.log, np.abs(X) + 0.1),
    ("sqrt", lambda a: np.sqrt(np.maximum(a, 0)), X),  # Keras 2 clips negatives to 0
    ("square", np.square, X),
    ("abs", np.abs, X),
    ("sign", np.sign, X),
    ("round", np.round, np.array([0.5, 1.5, 2.5, -0.5, 1.2, -1.7], "float32")),
    ("sin", np.sin, X),
    ("cos", np.cos, X),
    ("tanh", np.tanh, X),
    ("sigmoid", lambda a: 1 / (1 + np.exp(-a)), X),
    ("softplus", lambda a: np.log1p(np.exp(a)), X),
    ("softsign", lambda a: a / (1 + np.abs(a)), X),
    ("elu", lambda a: np.where(a > 0, a, np.exp(a) - 1), X),
]


@pytest.mark.parametrize("name,reference,x", UNARY, ids=[u[0] for u in UNARY])
def test_elementwise_match_numpy(name, reference, x):
    np.testing.assert_allclose(
        value(getattr(K, name)(ops.convert_to_tensor(x))), reference(x), rtol=1e-5, atol=1e-6
    )


def test_sqrt_of_negative_is_zero_not_nan():
    assert value(K.sqrt(ops.convert_to_tensor(np.array([-4.0, 4.0], "float32")))).tolist() == [0.0, 2.0]


@pytest.mark.parametrize(
    "name", ["maximum", "minimum", "equal", "not_equal", "greater", "greater_equal", "less", "less_equal"]
)
def test_binary_ops_match_numpy(name):
    a = np.array([1.0, 2.0, 3.0, 2.0], "float32")
    b = np.array([2.0, 2.0, 1.0, 5.0], "float32")
    expected = getattr(np, name)(a, b)
    np.testing.assert_array_equal(
        value(getattr(K, name)(ops.convert_to_tensor(a), ops.convert_to_tensor(b))), expected
    )
    np.testing.assert_array_equal(getattr(K, name)(a, b), expected)


def test_pow_matches_numpy():
    a = np.abs(X) + 0.5
    np.testing.assert_allclose(value(K.pow(ops.convert_to_tensor(a), 3)), a**3, rtol=1e-5)
    np.testing.assert_allclose(value(K.pow(ops.convert_to_tensor(a), 0.5)), a**0.5, rtol=1e-5)


@pytest.mark.parametrize("bounds", [(-0.5, 0.5), (None, 0.2), (-0.2, None), (0.5, -0.5)])
def test_clip_matches_keras2(k2, bounds):
    np.testing.assert_allclose(
        value(K.clip(ops.convert_to_tensor(X), *bounds)), k2("clip", X, *bounds), rtol=1e-6
    )


# -- activations against Keras 2 ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"alpha": 0.1},
        {"max_value": 0.5},
        {"max_value": 6.0},
        {"threshold": 0.3},
        {"alpha": 0.2, "max_value": 1.0, "threshold": -0.2},
    ],
)
def test_relu_matches_keras2(k2, kwargs):
    x = X * 4
    np.testing.assert_allclose(
        value(K.relu(ops.convert_to_tensor(x), **kwargs)), k2("relu", x, **kwargs), rtol=1e-6, atol=1e-6
    )


def test_elu_alpha_and_hard_sigmoid_match_keras2(k2):
    x = X * 4
    np.testing.assert_allclose(
        value(K.elu(ops.convert_to_tensor(x), 0.5)), k2("elu", x, 0.5), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        value(K.hard_sigmoid(ops.convert_to_tensor(x))), k2("hard_sigmoid", x), rtol=1e-6
    )


@pytest.mark.parametrize("axis", [-1, 1])
def test_softmax_matches_numpy(axis):
    e = np.exp(X - X.max(axis=axis, keepdims=True))
    np.testing.assert_allclose(
        value(K.softmax(ops.convert_to_tensor(X), axis=axis)), e / e.sum(axis, keepdims=True), rtol=1e-5
    )


@pytest.mark.parametrize("axis", [None, -1, 1, [1, 2]])
def test_l2_normalize_matches_keras2(k2, axis):
    x = X.copy()
    x[0, 0] = 0.0  # an all-zero row: Keras 2 divides by sqrt(1e-12), no NaN
    np.testing.assert_allclose(
        value(K.l2_normalize(ops.convert_to_tensor(x), axis=axis)),
        k2("l2_normalize", x, axis=axis),
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.parametrize("axis,keepdims", [(None, False), (-1, True), (1, False), ([0, 2], True)])
def test_logsumexp_matches_keras2(k2, axis, keepdims):
    x = X * 30  # large logits: needs the stable form
    expected = k2("logsumexp", x, axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(
        value(K.logsumexp(ops.convert_to_tensor(x), axis=axis, keepdims=keepdims)), expected, rtol=1e-5
    )
    np.testing.assert_allclose(K.logsumexp(x, axis=axis, keepdims=keepdims), expected, rtol=1e-5)


# -- shapes --------------------------------------------------------------------------------------------


def test_int_shape_ndim_dtype_match_keras2():
    import tensorflow as tf
    import tf_keras

    assert K.int_shape(ops.convert_to_tensor(X)) == tf_keras.backend.int_shape(tf.constant(X)) == (2, 3, 4)
    assert (
        K.int_shape(keras.Input((None, 4)))
        == tf_keras.backend.int_shape(tf_keras.Input((None, 4)))
        == (None, None, 4)
    )
    assert K.int_shape(K.variable(np.zeros((3, 5)))) == (3, 5)
    assert K.ndim(ops.convert_to_tensor(X)) == 3
    assert K.dtype(ops.convert_to_tensor(X)) == "float32"
    assert K.dtype(ops.convert_to_tensor(np.arange(3, dtype="int32"))) == "int32"
    assert K.count_params(K.variable(np.zeros((3, 5)))) == 15


def test_shape_is_tf_shape_on_tensorflow_and_numpy_elsewhere():
    s = K.shape(ops.convert_to_tensor(X))
    if BACKEND == "tensorflow":
        import tensorflow as tf

        assert tf.is_tensor(s)
    else:
        assert isinstance(s, np.ndarray)
    assert value(s).tolist() == [2, 3, 4] and value(s).dtype == np.int32
    assert K.shape(
        keras.Input((None, 4)),
    ) == (None, None, 4)


def test_static_in_static_out():
    s = np.array([2, 3, 4], "int32")
    assert K.prod(s[1:]) == 12 and isinstance(K.prod(s[1:]), np.generic) and K.prod(s[1:]).dtype == np.int32
    assert isinstance(K.cast(s[2], "float32"), np.generic) and K.cast(s[2], "float32") == 4.0
    assert K.concatenate([s[:1], [-1]]).tolist() == [2, -1]
    assert K.stack([s[0], 5]).tolist() == [2, 5]
    assert K.maximum(s, 3).tolist() == [3, 3, 4]
    assert K.switch(True, 1, 2) == 1 and K.switch(np.bool_(False), lambda: 1, lambda: 2) == 2
    assert K.arange(3).tolist() == [0, 1, 2] and K.arange(-3).tolist() == []
    assert isinstance(K.reshape(np.arange(6), (K.shape(np.zeros((2, 3)))[0], -1)), np.ndarray)


def test_reshape_and_flatten_match_numpy():
    tensor = ops.convert_to_tensor(X)
    np.testing.assert_array_equal(value(K.reshape(tensor, (2, -1))), X.reshape(2, -1))
    np.testing.assert_array_equal(value(K.reshape(tensor, [K.shape(tensor)[0], -1])), X.reshape(2, -1))
    # bert4keras's per-axis form: axis 2 (size 4) becomes (2, 2); axis 1 (size 3) stays
    np.testing.assert_array_equal(value(K.reshape(tensor, (2, -1), 2)), X.reshape(2, 3, 2, 2))
    np.testing.assert_array_equal(value(K.reshape(tensor, (3, 1), 1, (-1,), 2)), X.reshape(2, 3, 1, 4))
    np.testing.assert_array_equal(value(K.flatten(tensor)), X.reshape(-1))
    np.testing.assert_array_equal(value(K.flatten(tensor, 1)), X.reshape(2, 12))
    np.testing.assert_array_equal(value(K.flatten(tensor, 0, 2)), X.reshape(6, 4))
    np.testing.assert_array_equal(value(K.batch_flatten(tensor)), X.reshape(2, 12))
    with pytest.raises(ValueError):
        K.reshape(tensor, (-1, -1), 2)


def test_shape_manipulation_matches_numpy():
    tensor = ops.convert_to_tensor(X)
    np.testing.assert_array_equal(value(K.expand_dims(tensor)), X[..., None])
    np.testing.assert_array_equal(value(K.expand_dims(tensor, 1)), X[:, None])
    np.testing.assert_array_equal(value(K.squeeze(K.expand_dims(tensor, 1), 1)), X)
    np.testing.assert_array_equal(value(K.concatenate([tensor, tensor])), np.concatenate([X, X], -1))
    np.testing.assert_array_equal(value(K.concatenate([tensor, tensor], axis=0)), np.concatenate([X, X], 0))
    np.testing.assert_array_equal(value(K.stack([tensor, tensor], axis=1)), np.stack([X, X], 1))
    np.testing.assert_array_equal(value(K.transpose(tensor)), X.T)
    np.testing.assert_array_equal(value(K.tile(tensor, (1, 2, 3))), np.tile(X, (1, 2, 3)))
    np.testing.assert_array_equal(value(K.reverse(tensor, 1)), X[:, ::-1])
    np.testing.assert_array_equal(
        value(K.temporal_padding(tensor, (1, 2))), np.pad(X, [(0, 0), (1, 2), (0, 0)])
    )


def test_permute_repeat_gather_one_hot_arange_eye_match_keras2(k2):
    tensor = ops.convert_to_tensor(X)
    np.testing.assert_array_equal(
        value(K.permute_dimensions(tensor, (2, 0, 1))), k2("permute_dimensions", X, (2, 0, 1))
    )
    for axis in (0, 1, 2, -1):
        np.testing.assert_array_equal(
            value(K.repeat_elements(tensor, 2, axis)), k2("repeat_elements", X, 2, axis)
        )
    np.testing.assert_array_equal(value(K.repeat(ops.convert_to_tensor(X[0]), 3)), k2("repeat", X[0], 3))
    indices = np.array([[2, 0], [1, 1]], "int32")
    np.testing.assert_array_equal(
        value(K.gather(tensor, ops.convert_to_tensor(indices % 2))), k2("gather", X, indices % 2)
    )
    labels = np.array([[0, 3], [2, 1]], "int32")
    np.testing.assert_array_equal(
        value(K.one_hot(ops.convert_to_tensor(labels), 4)), k2("one_hot", labels, 4)
    )
    float_labels = ops.convert_to_tensor(labels.astype("float32"))  # 0.11.5 inputs were float
    np.testing.assert_array_equal(value(K.one_hot(float_labels, 4)), k2("one_hot", labels, 4))
    for args in [(5,), (2, 7), (1, 8, 3), (-2,)]:
        np.testing.assert_array_equal(value(K.arange(*args)), k2("arange", *args))
    np.testing.assert_array_equal(value(K.eye(3)), k2("eye", 3))


def test_zeros_ones_and_likes():
    np.testing.assert_array_equal(value(K.zeros((2, 3))), np.zeros((2, 3)))
    np.testing.assert_array_equal(value(K.ones(K.shape(ops.convert_to_tensor(X))[:2])), np.ones((2, 3)))
    assert K.dtype(K.zeros((2,))) == "float32" and K.dtype(K.ones((2,), dtype="int32")) == "int32"
    np.testing.assert_array_equal(value(K.zeros_like(ops.convert_to_tensor(X))), np.zeros_like(X))
    np.testing.assert_array_equal(value(K.ones_like(ops.convert_to_tensor(X))), np.ones_like(X))


# -- dot products, switch: against Keras 2 -------------------------------------------------------------


@pytest.mark.parametrize("x_shape,y_shape", [((2, 3), (3, 4)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (3, 4, 5))])
def test_dot_matches_keras2(k2, x_shape, y_shape):
    x = RNG.normal(size=x_shape).astype("float32")
    y = RNG.normal(size=y_shape).astype("float32")
    np.testing.assert_allclose(
        value(K.dot(ops.convert_to_tensor(x), ops.convert_to_tensor(y))),
        k2("dot", x, y),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize(
    "x_shape,y_shape,axes",
    [
        ((2, 3), (2, 3), None),
        ((2, 3), (2, 3), 1),
        ((2, 3, 4), (2, 4, 5), None),
        ((2, 5, 1), (2, 3, 5), (1, 2)),
        ((2, 3), (2, 3, 4), (1, 1)),
        ((2, 3, 4), (2, 4), (-1, -1)),
        ((2, 3, 4, 5), (2, 5, 6), None),
        ((2, 3, 4), (2, 6, 3, 5), (1, 2)),
    ],
)
def test_batch_dot_matches_keras2(k2, x_shape, y_shape, axes):
    x = RNG.normal(size=x_shape).astype("float32")
    y = RNG.normal(size=y_shape).astype("float32")
    expected = k2("batch_dot", x, y, axes=axes)
    got = value(K.batch_dot(ops.convert_to_tensor(x), ops.convert_to_tensor(y), axes=axes))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_switch_matches_keras2(k2):
    a, b = X, -X
    tensor_a, tensor_b = ops.convert_to_tensor(a), ops.convert_to_tensor(b)
    cond2 = X[..., 0] > 0  # (2, 3) condition on (2, 3, 4) expressions: tiled over the last axis
    np.testing.assert_array_equal(
        value(K.switch(ops.convert_to_tensor(cond2), tensor_a, tensor_b)), k2("switch", cond2, a, b)
    )
    cond3 = X > 0
    np.testing.assert_array_equal(
        value(K.switch(ops.convert_to_tensor(cond3), tensor_a, tensor_b)), k2("switch", cond3, a, b)
    )
    scalar = ops.convert_to_tensor(np.array(False))
    np.testing.assert_array_equal(
        value(K.switch(scalar, tensor_a, tensor_b)), k2("switch", np.array(False), a, b)
    )
    np.testing.assert_array_equal(value(K.switch(scalar, lambda: tensor_a, lambda: tensor_b)), b)
    with pytest.raises(ValueError, match="rank"):
        K.switch(ops.convert_to_tensor(cond3), tensor_a[0], tensor_b[0])


def test_switch_with_batch_condition_picks_rows():
    # Keras 2.3 on TF1: a (batch,) condition selects whole rows of (batch, dim) expressions
    cond = np.array([True, False])
    got = K.switch(
        ops.convert_to_tensor(cond), ops.convert_to_tensor(X[:, 0]), ops.convert_to_tensor(-X[:, 0])
    )
    np.testing.assert_array_equal(value(got), np.stack([X[0, 0], -X[1, 0]]))


def test_where_matches_numpy():
    cond = X > 0
    np.testing.assert_array_equal(
        value(K.where(ops.convert_to_tensor(cond), ops.convert_to_tensor(X), 0.0)), np.where(cond, X, 0)
    )


# -- losses against Keras 2 ---------------------------------------------------------------------------

PROBS = np.array(
    [[0.7, 0.3, 0.0], [0.0, 0.0, 1.0], [0.2, 0.5, 0.3], [0.1, 0.1, 0.2]], "float32"
)  # 0 and 1: clipping; last row unnormalised


@pytest.mark.parametrize("from_logits", [False, True])
def test_categorical_crossentropy_matches_keras2(k2, from_logits):
    target = np.eye(3, dtype="float32")[[0, 0, 1, 2]]
    output = PROBS if not from_logits else X[0, :, :3].repeat(2, 0)[:4] * 3
    expected = k2("categorical_crossentropy", target, output, from_logits=from_logits)
    got = K.categorical_crossentropy(
        ops.convert_to_tensor(target), ops.convert_to_tensor(output), from_logits=from_logits
    )
    np.testing.assert_allclose(value(got), expected, rtol=1e-5, atol=1e-6)


def test_categorical_crossentropy_axis_matches_keras2(k2):
    output = np.abs(X) + 0.01
    target = np.eye(3, dtype="float32")[[[0, 1, 2, 2], [1, 1, 0, 2]]].transpose(0, 2, 1)  # classes on axis 1
    expected = k2("categorical_crossentropy", target, output, axis=1)
    np.testing.assert_allclose(
        value(
            K.categorical_crossentropy(ops.convert_to_tensor(target), ops.convert_to_tensor(output), axis=1)
        ),
        expected,
        rtol=1e-5,
    )


SPARSE_TARGETS = {
    "int (batch,)": np.array([0, 1, 1, 2], "int32"),
    "int (batch, 1)": np.array([[0], [1], [1], [2]], "int32"),
    "float (batch,)": np.array([0.0, 1.0, 1.0, 2.0], "float32"),
    "float (batch, 1)": np.array([[0.0], [1.0], [1.0], [2.0]], "float32"),
}


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("kind", list(SPARSE_TARGETS))
def test_sparse_categorical_crossentropy_matches_keras2(k2, kind, from_logits):
    target = SPARSE_TARGETS[kind]
    output = PROBS if not from_logits else X[0, :, :3].repeat(2, 0)[:4] * 3
    expected = k2("sparse_categorical_crossentropy", target.astype("int32"), output, from_logits=from_logits)
    got = K.sparse_categorical_crossentropy(
        ops.convert_to_tensor(target), ops.convert_to_tensor(output), from_logits=from_logits
    )
    assert value(got).shape == (4,)
    np.testing.assert_allclose(value(got), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("trailing_one", [False, True])
def test_sparse_categorical_crossentropy_on_sequences_matches_keras2(k2, trailing_one):
    output = ops.convert_to_numpy(ops.softmax(ops.convert_to_tensor(X)))  # (batch, seq_len, classes)
    output[0, 0] = [1.0, 0.0, 0.0, 0.0]
    target = np.array([[1, 0, 3], [2, 2, 0]], "float32")  # float token ids, as 0.11.5's inputs
    if trailing_one:
        target = target[..., None]
    expected = k2("sparse_categorical_crossentropy", target.astype("int32"), output)
    got = value(
        K.sparse_categorical_crossentropy(ops.convert_to_tensor(target), ops.convert_to_tensor(output))
    )
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("from_logits", [False, True])
def test_binary_crossentropy_matches_keras2(k2, from_logits):
    target = (X > 0.3).astype("float32")
    output = np.clip(np.abs(X), 0, 1) if not from_logits else X * 3  # includes exact 1.0 probabilities
    output = output.copy()
    output[0, 0, 0] = 0.0
    expected = k2("binary_crossentropy", target, output, from_logits=from_logits)
    got = value(
        K.binary_crossentropy(
            ops.convert_to_tensor(target), ops.convert_to_tensor(output), from_logits=from_logits
        )
    )
    assert got.shape == X.shape  # elementwise, no mean
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# -- shape arithmetic inside compiled functions ------------------------------------------------------


def shape_arithmetic(x, labels):
    """0.11.5 example idioms (GPLinker loss, gradient-penalty loss, ...)."""
    shape = K.shape(x)
    merged = K.reshape(x, (shape[0], -1, K.prod(shape[2:])))
    flat_ids = labels[..., 0] * K.cast(shape[2], K.floatx()) + labels[..., 1]
    ones = K.ones(K.shape(x)[:2])
    doubled = K.zeros((K.shape(x)[0] * 2,))
    ids = K.reshape(labels[..., 0], K.shape(x)[:2])
    one_hot = K.one_hot(K.cast(ids, "int32"), K.shape(x)[-1])
    heads = K.reshape(merged, (4, -1), 2)
    return (
        merged,
        flat_ids,
        ones,
        doubled,
        one_hot,
        K.flatten(x, 1, 3),
        K.batch_flatten(x),
        heads,
        divisible_temporal_padding(x[:, :, 0], 2),
    )


SHAPE_X = RNG.normal(size=(2, 3, 4, 5)).astype("float32")
SHAPE_LABELS = np.array([[[1, 2], [0, 3], [4, 0]], [[2, 2], [3, 1], [0, 0]]], "float32")
SHAPE_EXPECTED = [
    SHAPE_X.reshape(2, 3, 20),
    SHAPE_LABELS[..., 0] * 4 + SHAPE_LABELS[..., 1],
    np.ones((2, 3)),
    np.zeros(4),
    np.eye(5)[SHAPE_LABELS[..., 0].astype(int)],
    SHAPE_X.reshape(2, 12, 5),
    SHAPE_X.reshape(2, 60),
    SHAPE_X.reshape(2, 3, 4, 5),
    np.pad(SHAPE_X[:, :, 0], [(0, 0), (0, 1), (0, 0)]),
]


def test_shape_arithmetic_compiles():
    x, labels = SHAPE_X, SHAPE_LABELS
    if BACKEND == "tensorflow":
        import tensorflow as tf

        fn = tf.function(
            shape_arithmetic, input_signature=[tf.TensorSpec((None,) * 4), tf.TensorSpec((None, None, 2))]
        )
    elif BACKEND == "jax":
        import jax

        fn = jax.jit(shape_arithmetic)
    else:
        fn = shape_arithmetic
    outputs = [value(o) for o in fn(ops.convert_to_tensor(x), ops.convert_to_tensor(labels))]
    for got, want in zip(outputs, SHAPE_EXPECTED):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_shape_arithmetic_in_a_functional_model():
    # Keras infers the output shapes from unknown sizes (JAX: symbolic dimensions), then runs it
    x = keras.Input((None, 4, 5))
    labels = keras.Input((None, 2))
    outputs = keras.layers.Lambda(lambda inputs: list(shape_arithmetic(*inputs)))([x, labels])
    assert [len(o.shape) for o in outputs] == [want.ndim for want in SHAPE_EXPECTED]
    model = keras.Model([x, labels], outputs)
    for got, want in zip(model.predict([SHAPE_X, SHAPE_LABELS], verbose=0), SHAPE_EXPECTED):
        np.testing.assert_allclose(got, want, rtol=1e-6)


# -- random --------------------------------------------------------------------------------------------


def test_random_functions_shapes_dtypes_and_ranges():
    u = value(K.random_uniform((2000,), -1.0, 2.0))
    assert u.dtype == np.float32 and u.min() >= -1 and u.max() < 2 and abs(u.mean() - 0.5) < 0.1
    n = value(K.random_normal((2000,), 1.0, 2.0))
    assert abs(n.mean() - 1.0) < 0.2 and abs(n.std() - 2.0) < 0.2
    t = value(K.truncated_normal((2000,), 0.0, 1.0))
    assert np.abs(t).max() <= 2.0 + 1e-6
    b = value(K.random_binomial((2000,), p=0.3))
    assert set(np.unique(b)) <= {0.0, 1.0} and abs(b.mean() - 0.3) < 0.05
    assert value(K.random_binomial(K.shape(ops.convert_to_tensor(X)), 0.5)).shape == X.shape


def test_dropout_scales_kept_entries():
    x = np.ones((1000,), "float32")
    y = value(K.dropout(ops.convert_to_tensor(x), 0.25))
    kept = y[y != 0]
    np.testing.assert_allclose(kept, 1 / 0.75, rtol=1e-6)
    assert abs(kept.size / 1000 - 0.75) < 0.06


def test_random_seeds():
    a = value(K.random_uniform((5,), seed=3))
    np.testing.assert_array_equal(a, value(K.random_uniform((5,), seed=3)))  # int seed: Keras 3, reproducible
    generator = keras.random.SeedGenerator(1)
    first, second = value(K.random_normal((5,), seed=generator)), value(K.random_normal((5,), seed=generator))
    assert not np.array_equal(first, second)
    assert not np.array_equal(value(K.random_uniform((5,))), value(K.random_uniform((5,))))
    with pytest.raises(TypeError):
        K.random_uniform((5,), seed="3")


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function")
def test_unseeded_random_draws_anew_in_tf_function():
    import tensorflow as tf

    fn = tf.function(lambda: (K.random_binomial((20,), 0.5), K.dropout(tf.ones((20,)), 0.5)))
    first, second = fn(), fn()
    assert not np.array_equal(first[0].numpy(), second[0].numpy())
    assert not np.array_equal(first[1].numpy(), second[1].numpy())


@pytest.mark.skipif(BACKEND != "jax", reason="JAX tracing")
def test_unseeded_random_under_jax_jit_says_what_to_do():
    import jax

    for fn in (
        lambda x: K.random_binomial((2,), 0.5) * x,
        lambda x: K.dropout(x, 0.5),
        lambda x: K.random_normal((2,)) + x,
    ):
        with pytest.raises(
            ValueError,
            match=r"self\.seed_generator = keras\.random\.SeedGenerator\(\).*seed=self\.seed_generator",
        ):
            jax.jit(fn)(np.ones(2, "float32"))
    generator = keras.random.SeedGenerator(0)
    assert K.random_uniform((2,), seed=generator).shape == (2,)  # eager: fine


# -- learning phase in layers ----------------------------------------------------------------------------


class TrainFlag(keras.layers.Layer):
    """A 0.11.5-style layer: no `training` argument."""

    def call(self, inputs):
        return K.in_train_phase(lambda: inputs * 0 + 1, inputs * 0)


class TestPhaseFlag(keras.layers.Layer):
    __test__ = False  # a layer, not a pytest class

    def call(self, inputs):
        return K.in_test_phase(inputs * 0 + 1, inputs * 0)


def test_learning_phase_outside_layers_is_zero():
    assert K.learning_phase() == 0
    assert K.in_train_phase(1, 2) == 2 and K.in_train_phase(1, 2, training=True) == 1
    assert K.in_train_phase(lambda: 1, lambda: 2, training=1) == 1 and K.in_test_phase(1, 2) == 1


@pytest.mark.parametrize("layer", [TrainFlag, TestPhaseFlag])
def test_in_train_phase_follows_fit_and_predict(layer):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, layer()(keras.layers.Dense(3)(inputs)))
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 3), "float32")
    train = 1.0 if layer is TrainFlag else 0.0
    history = model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(train)
    np.testing.assert_array_equal(model.predict(x, verbose=0), 1.0 - train)
    np.testing.assert_array_equal(value(model(x, training=True)), train)


class BinaryRandomChoice(keras.layers.Layer):
    """BERT-of-Theseus's layer as written for 0.11.5: unseeded random_binomial + in_train_phase."""

    def call(self, inputs):
        source, target = inputs
        mask = K.random_binomial(shape=[1], p=0.5, seed=getattr(self, "seed_generator", None))
        output = mask * source + (1 - mask) * target
        return K.in_train_phase(output, target)

    def compute_output_shape(self, input_shape):
        return input_shape[1]


class SeededBinaryRandomChoice(BinaryRandomChoice):
    """The JAX-ready form the error message asks for."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seed_generator = keras.random.SeedGenerator()


def theseus_model(layer):
    inputs = keras.Input((3,))
    source = keras.layers.Dense(3, kernel_initializer="ones", use_bias=False)(inputs)
    target = keras.layers.Dense(3, kernel_initializer="zeros", use_bias=False)(inputs)
    model = keras.Model(inputs, layer([source, target]))
    model.compile(optimizer="sgd", loss="mse")
    return model


@pytest.mark.parametrize("layer", [BinaryRandomChoice, SeededBinaryRandomChoice])
def test_random_choice_layer_trains(layer):
    model = theseus_model(layer())
    x, y = np.ones((4, 3), "float32"), np.zeros((4, 3), "float32")
    outputs = {float(value(model(x, training=True))[0, 0]) for _ in range(20)}
    assert outputs == {0.0, 3.0}  # both branches drawn in training (eager)
    if BACKEND == "jax" and layer is BinaryRandomChoice:  # fit and predict trace the call
        with pytest.raises(ValueError, match=r"seed=self\.seed_generator"):
            model.fit(x, y, epochs=1, verbose=0)
        with pytest.raises(ValueError, match=r"seed=self\.seed_generator"):
            model.predict(x, verbose=0)
    else:
        np.testing.assert_array_equal(model.predict(x, verbose=0), 0.0)  # target in inference
        history = model.fit(x, y, batch_size=4, epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()


# -- losses written as in 0.11.5's examples, trained with fit ---------------------------------------


def test_loss_layer_as_in_seq2seq_example_trains():
    from bert4keras.layers import Loss

    class CrossEntropy(Loss):
        def compute_loss(self, inputs, mask=None):
            y_true, y_mask, y_pred = inputs
            y_true = y_true[:, 1:]
            y_mask = y_mask[:, 1:]
            y_pred = y_pred[:, :-1]
            loss = K.sparse_categorical_crossentropy(y_true, y_pred)
            return K.sum(loss * y_mask) / K.sum(y_mask)

    token_ids = keras.Input((None,), dtype="float32")
    segment_ids = keras.Input((None,), dtype="float32")
    probas = keras.layers.Dense(10, activation="softmax")(keras.layers.Embedding(10, 8)(token_ids))
    outputs = CrossEntropy(output_axis=2)([token_ids, segment_ids, probas])
    model = keras.Model([token_ids, segment_ids], outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    tokens = np.array([[1, 4, 5, 2, 0], [1, 3, 9, 8, 2]], "float32")
    segments = np.array([[0, 0, 1, 1, 0], [0, 1, 1, 1, 1]], "float32")
    p = model.predict([tokens, segments], verbose=0)
    picked = np.take_along_axis(p[:, :-1], tokens[:, 1:, None].astype(int), -1)[..., 0]
    expected = np.sum(-np.log(picked) * segments[:, 1:]) / segments[:, 1:].sum()
    history = model.fit([tokens, segments], epochs=2, batch_size=2, verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-4)
    assert history.history["loss"][1] < history.history["loss"][0]


def test_compiled_loss_with_shape_arithmetic_trains():
    def sparse_categorical_crossentropy(y_true, y_pred):  # task_iflytek_gradient_penalty.py's
        y_true = K.reshape(y_true, K.shape(y_pred)[:-1])
        y_true = K.cast(y_true, "int32")
        y_true = K.one_hot(y_true, K.shape(y_pred)[-1])
        return K.categorical_crossentropy(y_true, y_pred)

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=sparse_categorical_crossentropy)
    x = RNG.normal(size=(6, 4)).astype("float32")
    y = np.array([[0], [1], [2], [1], [0], [2]], "float32")
    p = model.predict(x, verbose=0)
    expected = -np.log(np.take_along_axis(p, y.astype(int), -1)).mean()
    history = model.fit(x, y, batch_size=6, epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-4)


# -- variables and values ---------------------------------------------------------------------------


def test_variable_constant_and_values():
    v = K.variable(np.arange(6).reshape(2, 3), name="counts")
    assert isinstance(v, keras.Variable) and K.dtype(v) == "float32" and v.trainable and "counts" in v.name
    np.testing.assert_array_equal(K.eval(v), np.arange(6).reshape(2, 3))
    K.set_value(v, K.eval(v) + 1)
    np.testing.assert_array_equal(K.get_value(v), np.arange(1, 7).reshape(2, 3))
    K.batch_set_value([(v, np.zeros((2, 3)))])
    assert K.batch_get_value([v])[0].sum() == 0
    K.update_add(v, np.ones((2, 3), "float32"))
    K.update_sub(v, 0.5 * np.ones((2, 3), "float32"))
    np.testing.assert_array_equal(K.eval(v), 0.5)
    K.update(v, np.full((2, 3), 7.0, "float32"))
    np.testing.assert_array_equal(K.eval(v), 7.0)
    assert K.dtype(K.variable(3, dtype="int32")) == "int32"
    np.testing.assert_array_equal(value(K.constant(2.0, shape=(2, 2))), np.full((2, 2), 2.0))
    np.testing.assert_array_equal(value(K.constant([1, 2, 3, 4], shape=(2, 2))), [[1.0, 2.0], [3.0, 4.0]])
    assert K.dtype(K.constant(1)) == "float32"
    tensor = ops.convert_to_tensor(X)
    assert isinstance(K.eval(tensor), np.ndarray) and np.array_equal(K.eval(tensor), X)
    array = np.zeros(3)
    K.set_value(array, [1, 2, 3])
    assert array.tolist() == [1, 2, 3]
    assert K.is_tensor(tensor) and K.is_tensor(v) and not K.is_tensor(X)
    assert K.is_keras_tensor(keras.Input((2,))) and not K.is_keras_tensor(tensor)
    with pytest.raises(ValueError, match="predict"):
        K.eval(keras.Input((2,)))


@pytest.mark.skipif(BACKEND != "torch", reason="torch tensors are writable")
def test_set_value_on_torch_tensor():
    import torch

    t = torch.zeros(3)
    K.set_value(t, [1.0, 2.0, 3.0])
    assert t.tolist() == [1.0, 2.0, 3.0]


def test_stop_gradient_keeps_values():
    np.testing.assert_array_equal(value(K.stop_gradient(ops.convert_to_tensor(X))), X)
    assert len(K.stop_gradient([ops.convert_to_tensor(X), ops.convert_to_tensor(X)])) == 2


def test_configuration():
    assert K.floatx() == "float32" and K.epsilon() == 1e-7 and K.image_data_format() == "channels_last"
    assert K.backend() == BACKEND and K.infinity() == 1e12
    K.set_epsilon(1e-5)
    try:
        assert keras.config.epsilon() == 1e-5
    finally:
        K.set_epsilon(1e-7)
    K.set_floatx("float16")
    try:
        assert K.dtype(K.zeros((1,))) == "float16"
    finally:
        K.set_floatx("float32")
    with K.name_scope("block"):
        pass
    assert K.symbolic(len) is len


def test_set_infinity_changes_sequence_masking():
    x = ops.convert_to_tensor(np.ones((1, 3), "float32"))
    mask = ops.convert_to_tensor(np.array([[1, 1, 0]], "float32"))
    K.set_infinity(1e4)
    try:
        np.testing.assert_array_equal(value(sequence_masking(x, mask, "-inf")), np.float32([[1, 1, -1e4]]))
    finally:
        K.set_infinity(1e12)
    np.testing.assert_array_equal(value(sequence_masking(x, mask, "-inf")), np.float32([[1, 1, -1e12]]))


# -- bert4keras 0.11.5's backend helpers ---------------------------------------------------------------


def test_sequence_masking_default_axis_is_one():
    x = RNG.normal(size=(2, 4, 3)).astype("float32")
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 0]], "float32")
    expected = x * mask[:, :, None]
    np.testing.assert_allclose(
        value(sequence_masking(ops.convert_to_tensor(x), ops.convert_to_tensor(mask))), expected
    )
    xt = x.transpose(0, 2, 1)
    np.testing.assert_allclose(
        value(sequence_masking(ops.convert_to_tensor(xt), ops.convert_to_tensor(mask), 0, -1)),
        expected.transpose(0, 2, 1),
    )


@pytest.mark.parametrize(
    "params_shape,indices",
    [((2, 5, 3), [[1, 4], [0, 0]]), ((2, 5), [[4], [2]]), ((2, 3, 5), [[[1], [2], [0]], [[4], [4], [3]]])],
)
def test_batch_gather_matches_tf_gather(params_shape, indices):
    import tensorflow as tf

    params = RNG.normal(size=params_shape).astype("float32")
    indices = np.array(indices, "int32")
    expected = tf.gather(params, indices, batch_dims=indices.ndim - 1).numpy()
    got = value(batch_gather(ops.convert_to_tensor(params), ops.convert_to_tensor(indices.astype("float32"))))
    np.testing.assert_array_equal(got, expected)


def test_align_matches_numpy_indexing():
    mask = RNG.normal(size=(2, 5)).astype("float32")
    np.testing.assert_array_equal(
        value(align(ops.convert_to_tensor(mask), [0, 2], 4)), mask[:, None, :, None]
    )
    np.testing.assert_array_equal(value(align(ops.convert_to_tensor(mask), [0, -1], 3)), mask[:, None, :])
    np.testing.assert_array_equal(value(align(ops.convert_to_tensor(mask), [1, 3])), mask[None, :, None, :])
    with pytest.raises(ValueError):
        align(ops.convert_to_tensor(mask), [0])


def test_root_mean_square_matches_numpy():
    np.testing.assert_allclose(
        value(root_mean_square(ops.convert_to_tensor(X), axis=-1, keepdims=True)),
        np.sqrt((X**2).mean(-1, keepdims=True)),
        rtol=1e-6,
    )


def test_attention_normalize_matches_formulas():
    a = X.copy()
    a[0, 0, 2:] = -1e12  # masked keys
    n = (a > -1e11).sum(-1, keepdims=True)
    e = np.exp(a - a.max(-1, keepdims=True))
    np.testing.assert_allclose(
        value(attention_normalize(ops.convert_to_tensor(a))), e / e.sum(-1, keepdims=True), rtol=1e-5
    )
    np.testing.assert_allclose(
        value(attention_normalize(ops.convert_to_tensor(a), method="squared_relu")),
        np.maximum(a, 0) ** 2 / n,
        rtol=1e-5,
    )
    scaled = a * np.log(n) / np.log(512)
    e = np.exp(scaled - scaled.max(-1, keepdims=True))
    np.testing.assert_allclose(
        value(attention_normalize(ops.convert_to_tensor(a), method="softmax_plus")),
        e / e.sum(-1, keepdims=True),
        rtol=1e-5,
        atol=1e-7,
    )
    with pytest.raises(ValueError):
        attention_normalize(ops.convert_to_tensor(a), method="sparsemax")


def test_pool1d_matches_numpy():
    x = RNG.normal(size=(2, 6, 3)).astype("float32")
    windows = np.stack([x[:, i : i + 2] for i in range(0, 5, 2)], 1)  # pool 2, stride 2 -> 3 windows
    np.testing.assert_allclose(value(pool1d(ops.convert_to_tensor(x), 2, 2)), windows.max(2))
    np.testing.assert_allclose(
        value(pool1d(ops.convert_to_tensor(x), 2, 2, pool_mode="avg")), windows.mean(2), rtol=1e-6
    )


def test_divisible_temporal_padding():
    for length, n, padded in [(5, 4, 8), (8, 4, 8), (1, 3, 3)]:
        x = np.ones((2, length, 3), "float32")
        got = value(divisible_temporal_padding(ops.convert_to_tensor(x), n))
        np.testing.assert_array_equal(got, np.pad(x, [(0, 0), (0, padded - length), (0, 0)]))


@pytest.mark.parametrize("dim", [6, 5])
def test_sinusoidal_initializer_matches_closed_form(dim):
    expected = np.zeros((7, dim))
    for pos in range(7):
        for i in range(dim // 2):
            theta = pos / np.power(10000, 2.0 * i / dim)
            expected[pos, 2 * i], expected[pos, 2 * i + 1] = np.sin(theta), np.cos(theta)
    np.testing.assert_allclose(value(Sinusoidal()((7, dim))), expected, atol=1e-6)
    assert keras.saving.get_registered_name(Sinusoidal) == "bert4keras>Sinusoidal"


def test_get_available_gpus_is_empty_on_cpu():
    assert get_available_gpus() == []


def test_recompute_grad_trains_like_plain_call(monkeypatch):
    def block_call(self, inputs):
        return ops.tanh(self.dense(inputs)) * 2

    def make_block(call):
        class Block(keras.layers.Layer):
            def build(self, input_shape):
                self.dense = keras.layers.Dense(4)
                self.dense.build(input_shape)

            def compute_output_shape(self, input_shape):
                return input_shape[:-1] + (4,)

        Block.call = call
        return Block

    monkeypatch.delenv("RECOMPUTE", raising=False)
    assert recompute_grad(block_call) is block_call
    monkeypatch.setenv("RECOMPUTE", "1")
    recomputed = recompute_grad(block_call)
    assert recomputed is not block_call and recomputed.__wrapped__ is block_call
    x = RNG.normal(size=(8, 3)).astype("float32")
    y = RNG.normal(size=(8, 4)).astype("float32")
    weights = []
    for call in (block_call, recomputed):
        inputs = keras.Input((3,))
        layer = make_block(call)()
        model = keras.Model(inputs, layer(inputs))
        layer.dense.set_weights([np.full((3, 4), 0.1, "float32"), np.zeros(4, "float32")])
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
        weights.append(layer.dense.get_weights()[0])
    assert not np.allclose(weights[0], 0.1)
    np.testing.assert_allclose(weights[1], weights[0], rtol=1e-5, atol=1e-6)


def test_search_layer_finds_embedding_from_bert_output():
    from bert4keras.models import build_transformer_model

    bert = build_transformer_model(
        vocab_size=100,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        return_keras_model=False,
    )
    embedding = bert.model.get_layer("Embedding-Token")
    assert search_layer(bert.model.output, "Embedding-Token") is embedding
    last = bert.model.layers[-1]
    assert search_layer(last, "Embedding-Token") is embedding
    assert search_layer(last, last.name) is last
    assert search_layer(bert.model.output, "No-Such-Layer") is None
    assert search_layer(bert.model.output, "Embedding-Token", exclude_from={embedding}) is None
    # a BERT nested in a classifier, as in 0.11.5 fine-tuning scripts
    inputs = [keras.Input((None,)), keras.Input((None,))]
    outer = keras.Model(inputs, keras.layers.Dense(2)(bert.model(inputs)))
    assert search_layer(outer.output, "Embedding-Token") is embedding
    with pytest.raises(ValueError, match="model.output"):
        search_layer(ops.convert_to_tensor(X), "Embedding-Token")


def test_k_code_in_lambda_layers_runs_in_a_model():
    def extract_subject(inputs):  # task_relation_extraction.py's, with float subject ids
        output, subject_ids = inputs
        start = batch_gather(output, subject_ids[:, :1])
        end = batch_gather(output, subject_ids[:, 1:])
        subject = K.concatenate([start, end], 2)
        return subject[:, 0]

    hidden = keras.Input((None, 4))
    subject_ids = keras.Input((2,))
    subject = keras.layers.Lambda(extract_subject)([hidden, subject_ids])
    heads = keras.layers.Lambda(lambda x: K.reshape(x, (2, -1), 2))(hidden)  # dynamic batch and seq_len
    model = keras.Model([hidden, subject_ids], [subject, heads])
    h = RNG.normal(size=(2, 5, 4)).astype("float32")
    ids = np.array([[1, 3], [0, 4]], "float32")
    got_subject, got_heads = model.predict([h, ids], verbose=0)
    expected = np.stack([np.concatenate([h[b, int(ids[b, 0])], h[b, int(ids[b, 1])]]) for b in range(2)])
    np.testing.assert_array_equal(got_subject, expected)
    np.testing.assert_array_equal(got_heads, h.reshape(2, 5, 2, 2))


def test_symbolic_reshape_needs_at_most_one_unknown_size():
    assert K.batch_flatten(keras.Input((3, 4))).shape == (None, 12)
    assert K.reshape(keras.Input((3, 4)), (-1, 2), 2).shape == (None, 3, 2, 2)
    with pytest.raises(ValueError, match="inside a layer's call"):
        K.flatten(keras.Input((None, 4)), 1)
