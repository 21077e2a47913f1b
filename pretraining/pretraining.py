"""Pretrain a BERT-style model: RoBERTa masked LM, GPT causal LM or UniLM seq2seq LM, on 1..N devices.

    python pretraining/pretraining.py --model roberta --work-dir /tmp/roberta_zh

Without --records it first writes TFRecord files from a built-in corpus (--corpus zh-sentiment: the
training texts of <data-dir>/zh/sentiment.zip; sst2: SST-2 training sentences; or a text file with one
document per line) with `data_utils` (several processes, a progress bar), then trains from them.
At the end the weights are exported as an official-format TF1 checkpoint with its bert_config.json and
vocab.txt in --work-dir, loadable by `build_transformer_model(config, checkpoint)` (e.g.
examples/task_sentiment_zh.py --config ... --checkpoint ... --vocab ...).

Devices (--strategy):
    none         one device
    mirrored     tf.distribute.MirroredStrategy over all local GPUs (TensorFlow backend)
    multiworker  tf.distribute.MultiWorkerMirroredStrategy; every host runs the same command with its
                 TF_CONFIG, e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]},
                 "task": {"type": "worker", "index": 0}}; worker 0 (the chief) exports the checkpoint
    tpu          tf.distribute.TPUStrategy (--tpu name or grpc:// address; records on GCS)
    jax-dp       keras.distribution.DataParallel over all devices (JAX backend); on several hosts call
                 `jax.distributed.initialize()` first: set --jax-coordinator host:port,
                 --jax-num-processes and --jax-process-id (or the cluster's own environment)
--cpu-devices N splits this machine's CPU into N logical devices so that mirrored and jax-dp run here.
The global --batch-size is split across the replicas; shapes are static (--sequence-length).

Optimizer: bert4keras's Adam with decoupled weight decay (AdamW), optionally LAMB (--lamb), a
piecewise-linear warmup then linear decay to 0 (--warmup-steps, --steps: optimizer updates) and
gradient accumulation (--grad-accum-steps k: k batches per update).

Crashes: the weights, optimizer state and dropout seeds are backed up every --backup-steps updates
(keras.callbacks.BackupAndRestore, via `bert4keras.snippets.BackupAndRestore`) in <work-dir>/backup;
the same command run again resumes from the last backup, with the data stream positioned at the same
batch, and ends with the same weights as an uninterrupted run.
"""

import argparse
import contextlib
import json
import os
import sys
import time
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STRATEGIES = ("none", "mirrored", "multiworker", "tpu", "jax-dp")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=("roberta", "gpt", "unilm"), default="roberta")
    p.add_argument("--strategy", choices=STRATEGIES, default="none")
    p.add_argument("--tpu", default=None, help="TPU name or grpc:// address (--strategy tpu)")
    p.add_argument("--cpu-devices", type=int, default=0, help="split the CPU into N logical devices (0: as is)")
    p.add_argument("--jax-coordinator", default=None, help="host:port of process 0 (multi-host jax-dp)")
    p.add_argument("--jax-num-processes", type=int, default=None)
    p.add_argument("--jax-process-id", type=int, default=None)
    p.add_argument("--work-dir", required=True, help="records, backups and the exported checkpoint go here")
    p.add_argument("--data-dir", default=os.environ.get("BERT4KERAS_DATA", os.path.join(REPO, "..", "shared", "data")))
    p.add_argument("--corpus", default="zh-sentiment", help="zh-sentiment, sst2, or a text file (a document per line)")
    p.add_argument("--corpus-size", type=int, default=0, help="use only the first N documents (0: all)")
    p.add_argument("--records", nargs="*", help="existing TFRecord files (globs, gs:// paths) written by data_utils")
    p.add_argument("--vocab", help="vocab.txt (default: the Chinese BERT vocab, simplified, for zh-sentiment; "
                                   "bert-base-uncased for sst2)")
    p.add_argument("--word-segment", choices=("none", "jieba"), default=None,
                   help="whole-word masking groups (default: jieba for Chinese corpora, WordPiece words otherwise)")
    p.add_argument("--workers", type=int, default=2, help="processes writing the records")
    p.add_argument("--config", help="bert_config.json to continue pretraining an official checkpoint")
    p.add_argument("--checkpoint", help="its checkpoint prefix")
    p.add_argument("--sequence-length", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=64, help="global batch size")
    p.add_argument("--steps", type=int, default=1000, help="optimizer updates")
    p.add_argument("--warmup-steps", type=int, default=None, help="default: 10%% of --steps")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--lamb", action="store_true", help="layer-wise adaptation (LAMB, You et al. 2019)")
    p.add_argument("--grad-accum-steps", type=int, default=1)
    p.add_argument("--backup-steps", type=int, default=100, help="updates between backups (and log lines)")
    p.add_argument("--max-minutes", type=float, default=0, help="stop after this long and export (0: no limit)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity")
    size = p.add_argument_group("model trained from scratch (without --config)")
    size.add_argument("--num-hidden-layers", type=int, default=4)
    size.add_argument("--hidden-size", type=int, default=256)
    size.add_argument("--num-attention-heads", type=int, default=4)
    size.add_argument("--intermediate-size", type=int, default=1024)
    size.add_argument("--dropout-rate", type=float, default=0.1)
    args = p.parse_args(argv)
    if bool(args.config) != bool(args.checkpoint):
        p.error("--config and --checkpoint go together")
    if args.strategy in ("mirrored", "multiworker", "tpu") and os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        p.error(f"--strategy {args.strategy} is tf.distribute: it needs KERAS_BACKEND=tensorflow")
    if args.strategy == "jax-dp" and os.environ.get("KERAS_BACKEND") != "jax":
        p.error("--strategy jax-dp is keras.distribution on JAX: it needs KERAS_BACKEND=jax")
    return args


# -- devices -----------------------------------------------------------------------------------


def set_up_devices(args):
    """Create the distribution for `args.strategy`. Returns a tf.distribute strategy, or None.

    Must run before Keras builds anything (and, for --cpu-devices with jax, before jax starts).
    """
    if args.strategy == "jax-dp":
        if args.cpu_devices:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                       + f" --xla_force_host_platform_device_count={args.cpu_devices}")
        import jax
        import keras

        if args.jax_coordinator or args.jax_num_processes:
            jax.distributed.initialize(args.jax_coordinator, args.jax_num_processes, args.jax_process_id)
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=keras.distribution.list_devices()))
        return None
    if args.strategy == "none":
        return None
    import tensorflow as tf

    if args.cpu_devices:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * args.cpu_devices)
    if args.strategy == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or (
            [d.name for d in tf.config.list_logical_devices("CPU")] if args.cpu_devices else None)
        return tf.distribute.MirroredStrategy(devices)
    if args.strategy == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=args.tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)


def worker_index():
    """This process's index among the workers: TF_CONFIG's task index, or jax's process index."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    if tf_config:
        return int(tf_config.get("task", {}).get("index", 0))
    if os.environ.get("KERAS_BACKEND") == "jax":
        import jax

        return jax.process_index()
    return 0


# -- data --------------------------------------------------------------------------------------


def load_corpus(args):
    """The documents to pretrain on (a list of str) and whether they are Chinese."""
    if args.corpus == "zh-sentiment":
        with zipfile.ZipFile(os.path.join(args.data_dir, "zh", "sentiment.zip")) as z:
            lines = z.read("sentiment/sentiment.train.data").decode("utf-8").splitlines()
        documents, chinese = [line.rsplit("\t", 1)[0] for line in lines], True
    elif args.corpus == "sst2":
        with open(os.path.join(args.data_dir, "en", "sst2_train.tsv"), encoding="utf-8") as f:
            documents, chinese = [line.split("\t")[0] for line in f.read().splitlines()[1:]], False
    else:
        with open(args.corpus, encoding="utf-8") as f:
            documents = [line for line in f.read().splitlines() if line.strip()]
        chinese = sum(map(is_cjk, "".join(documents[:100]))) > 0.3 * len("".join(documents[:100]))
    return (documents[:args.corpus_size] if args.corpus_size else documents), chinese


def is_cjk(ch):
    return "\u4e00" <= ch <= "\u9fff"


def load_tokenizer(args, chinese):
    """The tokenizer and the vocabulary (token -> id) the model is built on."""
    from bert4keras.tokenizers import Tokenizer, load_vocab

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    if args.vocab:
        token_dict = load_vocab(args.vocab)
    elif chinese and not args.config:
        # A model trained from scratch has no use for the ~7,500 [unused], ## and foreign-script tokens.
        token_dict, _ = load_vocab(os.path.join(args.data_dir, "vocab", "chinese_bert_vocab.txt"),
                                   simplified=True, startswith=special)
    else:
        name = "chinese_bert_vocab.txt" if chinese else "bert_base_uncased_vocab.txt"
        token_dict = load_vocab(os.path.join(args.data_dir, "vocab", name))
    return Tokenizer(token_dict, do_lower_case=True), token_dict


def make_records(args, dataset, documents):
    """TFRecord files for training: --records, or written once into <work-dir>/records/."""
    if args.records:
        return args.records
    path = os.path.join(args.work_dir, "records", f"{args.model}-{args.sequence_length}.tfrecord")
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        print(f"writing {path} from {len(documents)} documents ({args.workers} processes)")
        count = dataset.process(documents, path, workers=args.workers)
        print(f"{count} instances of {args.sequence_length} tokens")
    return [path]


# -- model -------------------------------------------------------------------------------------


def model_kwargs(args, vocab_size):
    if args.config:
        return {}
    return dict(vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
                num_attention_heads=args.num_attention_heads, intermediate_size=args.intermediate_size,
                hidden_act="gelu", max_position=args.sequence_length, dropout_rate=args.dropout_rate)


def build_pretraining_model(args, vocab_size):
    """(builder, training model): the model's logits `(batch_size, sequence_length, vocab_size)`.

    RoBERTa and UniLM are BERT with a pooler (kept untrained so the export is a complete BERT
    checkpoint, as RoBERTa's) and the tied MLM head; GPT is bert4keras's `gpt`.
    """
    import keras
    from bert4keras.layers import DropMask
    from bert4keras.models import build_transformer_model

    kwargs = model_kwargs(args, vocab_size)
    if args.model == "gpt":
        builder = build_transformer_model(args.config, args.checkpoint, model="gpt", final_activation="linear",
                                          return_keras_model=False, **kwargs)
    else:
        application = "unilm" if args.model == "unilm" else "encoder"
        builder = build_transformer_model(args.config, args.checkpoint, model="bert", application=application,
                                          with_pool=True, with_mlm="linear", return_keras_model=False, **kwargs)
    # The sample weights normalise per token; the padding mask would renormalise by each replica's count.
    logits = DropMask(name="MLM-Logits")(builder.model.outputs[-1])
    model = keras.Model(builder.model.inputs, logits, name=f"{args.model}_pretraining")
    return builder, model


def make_optimizer(args):
    from bert4keras import optimizers as O

    Optimizer = O.extend_with_weight_decay(O.Adam)
    if args.lamb:
        Optimizer = O.extend_with_layer_adaptation(Optimizer)
    Optimizer = O.extend_with_piecewise_linear_lr(Optimizer)
    warmup = args.warmup_steps if args.warmup_steps is not None else max(1, args.steps // 10)
    # The schedule counts batches (every optimizer call); --steps counts updates.
    k = args.grad_accum_steps
    kwargs = dict(learning_rate=args.lr, weight_decay_rate=args.weight_decay, exclude_from_weight_decay=["Norm", "bias"],
                  lr_schedule={warmup * k: 1.0, args.steps * k: 0.0})
    if args.lamb:
        kwargs["exclude_from_layer_adaptation"] = ["Norm", "bias"]
    if k > 1:
        Optimizer = O.extend_with_gradient_accumulation(Optimizer)
        kwargs["grad_accum_steps"] = k
    return Optimizer(**kwargs)


def export(args, builder, token_dict):
    """Write bert_model.ckpt, bert_config.json and vocab.txt into --work-dir (atomically each)."""
    from bert4keras.tokenizers import save_vocab

    prefix = os.path.join(args.work_dir, "bert_model.ckpt")
    builder.save_weights_as_checkpoint(prefix)
    if args.config:
        with open(args.config, encoding="utf-8-sig") as f:
            config = json.load(f)
    else:
        config = dict(vocab_size=len(token_dict), hidden_size=args.hidden_size,
                      num_hidden_layers=args.num_hidden_layers, num_attention_heads=args.num_attention_heads,
                      intermediate_size=args.intermediate_size, hidden_act="gelu",
                      max_position_embeddings=args.sequence_length, type_vocab_size=2,
                      hidden_dropout_prob=args.dropout_rate, attention_probs_dropout_prob=args.dropout_rate,
                      initializer_range=0.02)
    config_path = os.path.join(args.work_dir, "bert_config.json")
    with open(config_path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2)
    os.replace(config_path + ".tmp", config_path)
    save_vocab(os.path.join(args.work_dir, "vocab.txt"), token_dict)  # atomic itself
    return prefix


def time_limit(minutes):
    """A Keras callback stopping `fit` after `minutes` of training (0: never)."""
    import keras

    class TimeLimit(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start = time.time()

        def on_train_batch_end(self, batch, logs=None):
            if minutes and time.time() - self.start > 60 * minutes:
                self.model.stop_training = True

    return TimeLimit()


def fit_with_strategy_run(strategy, model, data, epochs, initial_epoch, steps_per_epoch, callbacks):
    """`model.fit` for MultiWorkerMirroredStrategy, where Keras 3's own fails (keras-team/keras#20585):
    the same epochs, compiled loss, optimizer and callbacks, one `strategy.run` per batch."""
    import keras
    import tensorflow as tf

    @tf.function
    def train_step(iterator):
        def step(inputs, labels, sample_weight):
            with tf.GradientTape() as tape:
                # Keras' loss divides by the number of replicas, as in fit; apply_gradients all-reduces.
                loss = model.loss(labels, model(inputs, training=True), sample_weight=sample_weight)
            gradients = tape.gradient(loss, model.trainable_variables)
            model.optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss

        return strategy.reduce("SUM", strategy.run(step, args=next(iterator)), axis=None)

    iterator = iter(strategy.experimental_distribute_dataset(data))
    callbacks = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    callbacks.on_train_begin()
    for epoch in range(initial_epoch, epochs):
        callbacks.on_epoch_begin(epoch)
        for batch in range(steps_per_epoch):
            logs = {"loss": float(train_step(iterator))}
            callbacks.on_train_batch_end(batch, logs)
            if model.stop_training:
                break
        print(f"epoch {epoch + 1}/{epochs} - loss: {logs['loss']:.4f}")
        callbacks.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callbacks.on_train_end()


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    os.makedirs(args.work_dir, exist_ok=True)
    strategy = set_up_devices(args)

    import keras
    import tensorflow as tf

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import data_utils
    from bert4keras.snippets import BackupAndRestore

    keras.utils.set_random_seed(args.seed)
    documents, chinese = load_corpus(args)
    tokenizer, token_dict = load_tokenizer(args, chinese)
    segment = args.word_segment or ("jieba" if chinese else "none")
    if segment == "jieba":
        import jieba

        jieba.setLogLevel(60)
        word_segment = jieba.lcut
    else:
        word_segment = None
    Dataset = data_utils.DATASETS[args.model]
    kwargs = {"word_segment": word_segment} if args.model == "roberta" else {}
    dataset = Dataset(tokenizer, sequence_length=args.sequence_length, **kwargs)
    records = make_records(args, dataset, documents)

    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        builder, model = build_pretraining_model(args, len(token_dict))
        model.compile(
            optimizer=make_optimizer(args),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        )
    if strategy is not None:
        replicas = strategy.num_replicas_in_sync
    else:
        replicas = len(keras.distribution.list_devices()) if args.strategy == "jax-dp" else 1
    if args.batch_size % replicas:
        raise SystemExit(f"--batch-size {args.batch_size} does not split evenly over {replicas} replicas")

    index = worker_index()
    backup_dir = os.path.join(args.work_dir, "backup" if index == 0 else f"backup-worker{index}")
    backup = BackupAndRestore(backup_dir, save_freq="epoch", double_checkpoint=True, delete_checkpoint=True)
    k = args.grad_accum_steps
    steps_per_epoch = args.backup_steps * k  # one "epoch" per backup: Keras resumes at epoch ends
    epochs = -(-args.steps * k // steps_per_epoch)
    done = 0
    if backup.restore(model):
        done = int(keras.ops.convert_to_numpy(model.optimizer.iterations)) * k
        print(f"resumed from {backup_dir} at batch {done} (update {done // k})")
    data = dataset.load_tfrecord(records, args.batch_size, seed=args.seed, skip_batches=done)
    if args.strategy == "multiworker":
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        data = data.with_options(options)
    print(f"{args.model}: {model.count_params():,} parameters | strategy {args.strategy} over {replicas} "
          f"replica(s) | global batch {args.batch_size} x {args.sequence_length} tokens | {args.steps} updates")
    callbacks = [backup, time_limit(args.max_minutes)]
    if args.strategy == "multiworker":
        fit_with_strategy_run(strategy, model, data, epochs, done // steps_per_epoch, steps_per_epoch, callbacks)
    else:
        model.fit(data, epochs=epochs, initial_epoch=done // steps_per_epoch, steps_per_epoch=steps_per_epoch,
                  callbacks=callbacks, shuffle=False, verbose=args.verbose)
    updates = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    if index == 0:
        prefix = export(args, builder, token_dict)
        print(f"exported {prefix} (+ bert_config.json, vocab.txt) after {updates} updates "
              f"| wall time {time.time() - start:.0f}s | backend {keras.backend.backend()}")
    return model


if __name__ == "__main__":
    main()
