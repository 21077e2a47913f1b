"""Every private Keras API bert4keras relies on, in one place (tested with keras 3.15).

Keras 3 lacks a public way to do each of the things below; each function names what is
missing. When a Keras release moves one of them, this module is where it breaks and where
it is fixed (`.ci/run` also runs the fast tests against the newest Keras on the registry).

Besides the accessors here, bert4keras subclasses override these protected hooks:

- `keras.optimizers.Optimizer._get_current_learning_rate` (optimizers.py: piecewise-linear
  learning rates, and AdaFactor's relative step size): no public hook scales the learning
  rate per step on top of any schedule the user set.
- `keras.optimizers.Optimizer._backend_apply_gradients` (optimizers.py, gradient
  accumulation under tf.distribute): Keras' own accumulation calls `merge_call` inside
  `ops.cond`, which tf.distribute refuses (keras-team/keras#20582).
- `keras.callbacks.BackupAndRestore._save_model` (snippets.BackupAndRestore): the only hook
  that runs when a backup is written, where the seed states are saved beside it.
- `GeneratorDataAdapter` (snippets, `DataGenerator.forfit`): see `generator_data_adapter`.
"""


def variable_index(optimizer, variable):
    """The index of `variable` among the variables `optimizer` was built for, which its slot
    lists (moments, accumulators, slow weights) follow: no public map (Keras' own optimizers
    use this private one in `update_step`)."""
    return optimizer._get_variable_index(variable)


def trained_variables(optimizer):
    """The model variables `optimizer` was built for, in slot order (`build(variables)`'s)."""
    return optimizer._trainable_variables


def call_count(optimizer):
    """How many times `apply` ran, counting the calls that only accumulate gradients
    (`optimizer.iterations` is this divided by `gradient_accumulation_steps`)."""
    return optimizer._iterations


def optimizer_variable(optimizer, variable):
    """The model's `keras.Variable` that `variable` (what `update_step` receives: a backend
    variable on TensorFlow) is the value of. No public map from an update to its variable
    (`variable.path` is what bert4keras's regex options match)."""
    return trained_variables(optimizer)[variable_index(optimizer, variable)]


def accumulated_gradient(optimizer, variable):
    """Keras' gradient-accumulation slot of `variable` (`gradient_accumulation_steps`): not public."""
    return optimizer._accumulated_gradients[variable_index(optimizer, variable)]


def all_reduce_sum_gradients(optimizer, grads_and_vars):
    """`[(summed_grad, variable)]` over tf.distribute replicas, as Keras' TF optimizer does it."""
    return optimizer._all_reduce_sum_gradients(grads_and_vars)


def clip_gradients(optimizer, grads):
    """`grads` clipped by the optimizer's `clipnorm` / `clipvalue` / `global_clipnorm`."""
    return optimizer._clip_gradients(grads)


def uses_weight_decay(optimizer, variable):
    """Whether Keras' own `weight_decay` applies to `variable` (its exclusion lists)."""
    return optimizer._use_weight_decay(variable)


def distribution_strategy(optimizer):
    """The tf.distribute strategy the optimizer was created under."""
    return optimizer._distribution_strategy


def inbound_nodes(layer):
    """The graph nodes of `layer`'s calls in functional models (`Layer._inbound_nodes`): Keras 3
    has no public node API (Keras 2 had `get_input_at(i)`)."""
    return layer._inbound_nodes


def keras_history(tensor):
    """`(operation, node_index, tensor_index)` of a symbolic KerasTensor, or None for a value:
    where in the functional graph it was produced (no public accessor)."""
    return getattr(tensor, "_keras_history", None)


def variable_value(variable):
    """The backend value a `keras.Variable` holds, None while Keras' JAX trainer has moved it
    into its own state (during `fit`, or after a step that raised)."""
    return variable._value


def set_variable_value(variable, value):
    """Put `value` back into `variable` without `assign`, which fails on an emptied JAX variable."""
    variable._value = value


def compile_arguments(model):
    """The objects `model.compile()` was given (optimizer, loss, metrics, ...):
    `get_compile_config()` holds only their serialized form, which loses unregistered losses."""
    return model._compile_config.config


def run_through_graph(model, inputs, operation_fn):
    """Run a functional `model` on `inputs`, calling each layer through `operation_fn(layer)`:
    `keras.models.clone_model` does the same privately; there is no public graph walker."""
    return model._run_through_graph(model._standardize_inputs(inputs), operation_fn=operation_fn)


def call_context_args(layer):
    """The call-context arguments (e.g. `training`) `layer.call` takes."""
    return getattr(layer, "_call_context_args", ())


def call_context_training():
    """The `training` flag of the Keras layer call being run, or None outside any call
    (Keras 2's `K.learning_phase()`); Layer.__call__ keeps it in its call context."""
    from keras.src.backend.common import global_state

    context = global_state.get_global_attribute("current_call_ctx")
    return None if context is None else getattr(context, "training", None)


def forget_initial_epoch(model):
    """Undo the `initial_epoch` that `BackupAndRestore.on_train_begin` sets on `model`, for a
    restore outside `fit` (the script passes `initial_epoch` to `fit` itself)."""
    model._initial_epoch = None


def generator_data_adapter():
    """`(GeneratorDataAdapter, data_adapter_utils)`: Keras has no public way to give a
    generator's tf.data signature; `fit` uses any DataAdapter it is handed as it is."""
    from keras.src.trainers.data_adapters import data_adapter_utils
    from keras.src.trainers.data_adapters.generator_data_adapter import GeneratorDataAdapter

    return GeneratorDataAdapter, data_adapter_utils


def sublayers(layer):
    """Every layer inside `layer` (itself first, then nested sublayers, depth first), once each
    (`Layer._flatten_layers`): Keras 3 has no public iterator over a layer's nested sublayers,
    e.g. the q/k/v Dense layers inside our MultiHeadAttention."""
    return list(layer._flatten_layers(include_self=True, recursive=True))


def dense_kernel(layer):
    """The kernel variable of a `keras.layers.Dense` (`Dense._kernel`): with LoRA on, the public
    `kernel` is the merged value (kernel + adapter), and the variable has no public accessor."""
    return layer._kernel
