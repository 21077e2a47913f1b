"""Chinese sentiment classification (the task of task_sentiment_zh.py) trained data-parallel on all visible devices.

The same model and optimizer as examples/task_sentiment_zh.py (BERT pooled [CLS] -> Dropout -> Dense(2,
softmax); Keras AdamW, weight decay 0.01, linear warmup over 10% of the steps then cosine decay; the weights
that do best on the valid split restored before testing), with every batch split across the devices:

- TensorFlow: `tf.distribute.MirroredStrategy()` over all visible GPUs (else all logical CPUs); model,
  optimizer and `compile` are created inside `strategy.scope()`. With `--tpu NAME`,
  `tf.distribute.TPUStrategy` over a TPU found by `TPUClusterResolver(tpu=NAME)` ("local" on a TPU VM, a
  Cloud TPU name, or a grpc:// address), after `tf.config.experimental_connect_to_cluster` and
  `tf.tpu.experimental.initialize_tpu_system`.
- JAX: `keras.distribution.set_distribution(DataParallel(devices=keras.distribution.list_devices()))`
  before the model is built: variables are replicated, each batch is sharded over the devices (GPUs or
  TPU cores are picked up as they are, no flag needed).
- torch: refused (SystemExit); Keras's torch backend has no multi-device distribution API.

    KERAS_BACKEND=tensorflow python examples/task_sentiment_multi_device.py          # all GPUs of one host
    KERAS_BACKEND=tensorflow python examples/task_sentiment_multi_device.py --tpu local
    KERAS_BACKEND=jax python examples/task_sentiment_multi_device.py                 # all GPUs / TPU cores
    KERAS_BACKEND=jax python examples/task_sentiment_multi_device.py --cpu-devices 2  # 2 devices on a CPU

`--cpu-devices N` splits a CPU-only machine's CPU into N logical devices so that the data parallelism is
real there too: on TensorFlow with `tf.config.set_logical_device_configuration` before any op runs, on JAX
by adding `--xla_force_host_platform_device_count=N` to XLA_FLAGS before jax is imported. XLA reads that flag
once, when jax is first imported, and TensorFlow fixes its logical devices when its runtime starts; this is
why keras, tensorflow and jax (and bert4keras, which imports keras) are imported inside the functions,
after the arguments are parsed and the environment set, and not at the top of this module. For the same
reason, `main()` must run in a process that has not imported jax or started TensorFlow yet.

The input is what a TPU wants: fixed shapes (every text padded to --maxlen), a tf.data pipeline of
NumPy arrays (no py_function), `drop_remainder=True`; the global batch is --batch-size-per-device times the
number of replicas. Valid and test sets are padded up to a whole number of global batches with repeated
rows of sample weight 0 (compiled with `weighted_metrics=["accuracy"]`), so every text is scored once and
no batch is short: the valid and test accuracies are exact, val_loss is not (the last batch's loss is
averaged over its padding rows too). A larger global batch means fewer steps per epoch: scale --lr if the
device count grows.

Multi-host JAX (e.g. a TPU pod slice): this script does not call it, but add `jax.distributed.initialize()`
in `main()` right after `import keras`, before the distribution is set and the model built, and run the same
command on every host; `list_devices()` then returns the devices of all hosts and Keras's DataParallel gives
each process its share of every global batch.

Data: <data-dir>/zh/sentiment.zip, members sentiment/sentiment.{train,valid,test}.data (`text\\tlabel`),
read in place; vocab: <data-dir>/vocab/chinese_bert_vocab.txt. With
--config/--checkpoint it fine-tunes an official Chinese BERT instead of training a small one from scratch.
"""

import argparse
import contextlib
import json
import os
import re
import sys
import time
import zipfile

import numpy as np

from bert4keras.snippets import data_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("BERT4KERAS_DATA", os.path.join(REPO, "..", "shared", "data")),
                   help="folder holding zh/sentiment.zip and vocab/ (default: $BERT4KERAS_DATA or <repo>/../shared/data)")
    p.add_argument("--config", help="bert_config.json of an official Chinese BERT (with --checkpoint)")
    p.add_argument("--checkpoint", help="its TF1 checkpoint prefix, e.g. .../bert_model.ckpt")
    p.add_argument("--vocab", help="vocab.txt (default: <data-dir>/vocab/chinese_bert_vocab.txt)")
    p.add_argument("--maxlen", type=int, default=128, help="every text is cut or padded to this many tokens")
    p.add_argument("--batch-size-per-device", type=int, default=32,
                   help="global batch = this x number of replicas")
    p.add_argument("--epochs", type=int, default=None, help="default: 3 from scratch, 2 with a checkpoint")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate; default: 1e-3 from scratch, 2e-5 with a checkpoint")
    p.add_argument("--train-size", type=int, default=0, help="use only N training texts (0: all 16883)")
    p.add_argument("--valid-size", type=int, default=0, help="validate on only N texts (0: all 2111)")
    p.add_argument("--test-size", type=int, default=0, help="evaluate on only N test texts (0: all 2111)")
    p.add_argument("--seed", type=int, default=42)
    devices = p.add_argument_group("devices")
    devices.add_argument("--cpu-devices", type=int, default=0,
                         help="split the CPU into N logical devices (0: leave the devices as they are)")
    devices.add_argument("--tpu", default=None, metavar="NAME",
                         help="TensorFlow only: TPUStrategy on TPUClusterResolver(tpu=NAME), e.g. 'local' on a TPU VM")
    scratch = p.add_argument_group("model trained from scratch (when no --checkpoint)")
    scratch.add_argument("--num-hidden-layers", type=int, default=2)
    scratch.add_argument("--hidden-size", type=int, default=128)
    scratch.add_argument("--num-attention-heads", type=int, default=2)
    scratch.add_argument("--intermediate-size", type=int, default=512)
    args = p.parse_args(argv)
    for name in ("maxlen", "batch_size_per_device"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.cpu_devices < 0:
        p.error(f"--cpu-devices must be >= 0, got {args.cpu_devices}")
    if args.tpu is not None and args.cpu_devices:
        p.error("--tpu and --cpu-devices exclude each other")
    return args


def keras_backend_name():
    """The backend `import keras` will pick, found without importing it (Keras's own order): $KERAS_BACKEND,
    else "backend" in $KERAS_HOME/keras.json (default ~/.keras/keras.json, /tmp/.keras if home is read-only),
    else "tensorflow"."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    if "KERAS_HOME" in os.environ:
        keras_dir = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        keras_dir = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    try:
        with open(os.path.join(os.path.expanduser(keras_dir), "keras.json")) as f:
            return json.load(f).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def request_jax_cpu_devices(n):
    """Ask XLA for n host (CPU) devices via XLA_FLAGS; only takes effect if jax is not imported yet."""
    if "jax" in sys.modules:
        raise SystemExit(f"--cpu-devices {n}: jax is already imported in this process, so XLA_FLAGS can no "
                         "longer change its device count; run this example in a fresh process")
    flag = f"--xla_force_host_platform_device_count={n}"
    flags = re.sub(r"--xla_force_host_platform_device_count=\S*", "", os.environ.get("XLA_FLAGS", "")).split()
    os.environ["XLA_FLAGS"] = " ".join(flags + [flag])


def split_tf_cpu(n):
    """Split the first physical CPU into n logical devices; must run before TensorFlow's runtime starts."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
    except RuntimeError as e:
        raise SystemExit(f"--cpu-devices {n}: TensorFlow's runtime already started in this process, its "
                         f"logical devices can no longer change ({e}); run this example in a fresh process")


def tf_strategy(tpu):
    """MirroredStrategy over all visible devices, or TPUStrategy on the TPU named `tpu`."""
    import tensorflow as tf

    if tpu is None:
        return tf.distribute.MirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def load_data(zip_path, split, limit=0):
    """[(text, label)] of one split, read from the zip in place."""
    with zipfile.ZipFile(zip_path) as z:
        lines = z.read(f"sentiment/sentiment.{split}.data").decode("utf-8").splitlines()
    data = [(text, int(label)) for text, label in (line.rsplit("\t", 1) for line in lines)]
    return data[:limit] if limit else data


def make_tokenizer(args):
    """(tokenizer, vocab_size, epochs, lr): a checkpoint's vocab as it is (fine-tuned 2 epochs at
    2e-5 by default), or for a model trained from scratch the vocab simplified (3 epochs at 1e-3)."""
    from bert4keras.tokenizers import Tokenizer, load_vocab

    pretrained = bool(args.checkpoint)
    if pretrained and not args.config:
        raise SystemExit("--checkpoint needs --config")
    vocab_path = args.vocab or data_file(args.data_dir, "vocab/chinese_bert_vocab.txt")
    epochs, lr = args.epochs or (2 if pretrained else 3), args.lr or (2e-5 if pretrained else 1e-3)
    if pretrained:
        return Tokenizer(vocab_path, do_lower_case=True), None, epochs, lr
    # A randomly initialised model has no use for the ~7,500 [unused], ## and foreign-script tokens.
    token_dict, _ = load_vocab(vocab_path, simplified=True, startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    return Tokenizer(token_dict, do_lower_case=True), len(token_dict), epochs, lr


def build_and_compile(args, vocab_size, lr, total_steps):
    """(model, description): BERT pooled [CLS] -> Dropout -> Dense(2, softmax), as in task_sentiment_zh.py,
    compiled with AdamW (weight decay 0.01, not on biases and norms), 10% linear warmup, cosine decay."""
    import keras
    from bert4keras.models import build_transformer_model
    from bert4keras.optimizers import create_optimizer

    if args.checkpoint:
        bert = build_transformer_model(args.config, args.checkpoint, model="bert", with_pool=True)
        desc = f"pretrained {args.checkpoint}"
    else:
        bert = build_transformer_model(None, None, model="bert", with_pool=True, vocab_size=vocab_size,
                                       hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
                                       num_attention_heads=args.num_attention_heads,
                                       intermediate_size=args.intermediate_size, hidden_act="gelu",
                                       max_position=args.maxlen, dropout_rate=0.1)
        desc = (f"from scratch: layers={args.num_hidden_layers} hidden={args.hidden_size} heads={args.num_attention_heads} "
                f"intermediate={args.intermediate_size} vocab={vocab_size}")
    x = keras.layers.Dropout(0.1, name="Classifier-Dropout")(bert.output)
    init = keras.initializers.TruncatedNormal(stddev=0.02)
    model = keras.Model(bert.inputs, keras.layers.Dense(2, "softmax", kernel_initializer=init, name="Classifier-Dense")(x))
    optimizer = create_optimizer(lr, total_steps)  # AdamW, warmup over 10% of the steps, cosine decay
    # Weighted, so that the zero-weight rows padding valid and test up to whole batches do not count.
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", weighted_metrics=["accuracy"])
    return model, desc


def encode(data, tokenizer, maxlen):
    """[(text, label)] -> (token_ids, segment_ids, labels): int32 arrays of shapes (n, maxlen) x2 and (n,)."""
    from bert4keras.snippets import sequence_padding

    token_ids, segment_ids = zip(*(tokenizer.encode(text, maxlen=maxlen) for text, _ in data))
    return (sequence_padding(token_ids, length=maxlen).astype("int32"),
            sequence_padding(segment_ids, length=maxlen).astype("int32"),
            np.array([label for _, label in data], dtype="int32"))


def train_dataset(arrays, global_batch, seed):
    """tf.data of ((token_ids, segment_ids), labels), reshuffled every epoch, whole global batches only."""
    import tensorflow as tf

    token_ids, segment_ids, labels = arrays
    return (tf.data.Dataset.from_tensor_slices(((token_ids, segment_ids), labels))
            .shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
            .batch(global_batch, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))


def eval_dataset(arrays, global_batch):
    """tf.data of ((token_ids, segment_ids), labels, sample_weight) in order, padded to whole global batches.

    The padding repeats the first rows with weight 0: real token ids (no all-[PAD] row whose masked
    attention could give NaN) that count for nothing in the weighted accuracy.
    """
    import tensorflow as tf

    n = len(arrays[2])
    total = -(-n // global_batch) * global_batch
    index = np.arange(total) % n
    token_ids, segment_ids, labels = (a[index] for a in arrays)
    weights = (np.arange(total) < n).astype("float32")
    return (tf.data.Dataset.from_tensor_slices(((token_ids, segment_ids), labels, weights))
            .batch(global_batch, drop_remainder=True)
            .prefetch(tf.data.AUTOTUNE))


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    backend = keras_backend_name()
    if backend not in ("tensorflow", "jax"):
        raise SystemExit(f"multi-device training needs the tensorflow or jax backend (KERAS_BACKEND=tensorflow "
                         f"or jax); the {backend} backend has no Keras distribution API")
    if args.tpu is not None and backend != "tensorflow":
        raise SystemExit("--tpu is for KERAS_BACKEND=tensorflow; JAX uses TPU cores as they are, drop --tpu")
    if args.cpu_devices and backend == "jax":
        request_jax_cpu_devices(args.cpu_devices)
    if args.cpu_devices and backend == "tensorflow":
        split_tf_cpu(args.cpu_devices)

    # Only now: these imports fix the device list (see the module docstring).
    import keras

    if keras.backend.backend() != backend:
        raise SystemExit(f"expected Keras to pick the {backend} backend, it picked {keras.backend.backend()}: "
                         "set KERAS_BACKEND=tensorflow or jax explicitly")

    if backend == "tensorflow":
        strategy = tf_strategy(args.tpu)
        replicas = strategy.num_replicas_in_sync
        device_names = list(getattr(strategy.extended, "worker_devices", []))
        scope = strategy.scope()
    else:
        devices = keras.distribution.list_devices()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        replicas, device_names = len(devices), devices
        scope = contextlib.nullcontext()
    if args.cpu_devices and replicas != args.cpu_devices:
        raise SystemExit(f"--cpu-devices {args.cpu_devices} asked for {args.cpu_devices} devices, but {backend} "
                         f"sees {replicas}: {device_names}")
    global_batch = args.batch_size_per_device * replicas
    print(f"replicas: {replicas} ({', '.join(map(str, device_names))}) | global batch: {global_batch} = "
          f"{args.batch_size_per_device} per device x {replicas}", flush=True)

    keras.utils.set_random_seed(args.seed)

    zip_path = data_file(args.data_dir, "zh/sentiment.zip")
    train_data = load_data(zip_path, "train", args.train_size)
    valid_data = load_data(zip_path, "valid", args.valid_size)
    test_data = load_data(zip_path, "test", args.test_size)
    steps_per_epoch = len(train_data) // global_batch
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(train_data)} training texts make no full global batch of {global_batch}: "
                         "raise --train-size or lower --batch-size-per-device")

    tokenizer, vocab_size, epochs, lr = make_tokenizer(args)
    train = train_dataset(encode(train_data, tokenizer, args.maxlen), global_batch, args.seed)
    valid = eval_dataset(encode(valid_data, tokenizer, args.maxlen), global_batch)
    test = eval_dataset(encode(test_data, tokenizer, args.maxlen), global_batch)

    with scope:
        model, model_desc = build_and_compile(args, vocab_size, lr, total_steps=steps_per_epoch * epochs)

    best = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=1, restore_best_weights=True, verbose=1)
    model.fit(train, epochs=epochs, validation_data=valid, callbacks=[best], shuffle=False)  # tf.data shuffles
    _, test_accuracy = model.evaluate(test, verbose=0)
    wall = time.time() - start

    print(
        f"sentiment (zh) test accuracy: {test_accuracy:.4f} ({len(test_data)} texts; best valid accuracy "
        f"{best.best:.4f} at epoch {best.best_epoch + 1}) | wall time: {wall:.0f}s | backend: {keras.backend.backend()}"
    )
    print(
        f"settings: {model_desc} train_size={len(train_data)} epochs={epochs} replicas={replicas} "
        f"global_batch={global_batch} ({steps_per_epoch} steps/epoch) maxlen={args.maxlen} lr={lr} seed={args.seed}"
    )
    return test_accuracy


if __name__ == "__main__":
    main()
