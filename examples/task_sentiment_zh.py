"""Chinese sentiment classification on bert4keras's sentiment set: BERT pooled [CLS] -> Dense(2).

With an official Chinese BERT (e.g. chinese_L-12_H-768_A-12) it fine-tunes that checkpoint:

    python examples/task_sentiment_zh.py --config bert_config.json --checkpoint bert_model.ckpt [--vocab vocab.txt]

Without one (the default) it trains a small BERT from scratch on the same task, over the Google Chinese
vocab simplified by `load_vocab(..., simplified=True)`, so it runs anywhere in a few minutes:

    python examples/task_sentiment_zh.py

Data: <data-dir>/zh/sentiment.zip, members sentiment/sentiment.{train,valid,test}.data (`text\tlabel`),
read in place; vocab: <data-dir>/vocab/chinese_bert_vocab.txt. The weights that do best on the valid
split are restored before testing. Choose the backend with KERAS_BACKEND=tensorflow|jax|torch.
"""

import argparse
import os
import time
import zipfile

from bert4keras.snippets import LengthSortedGenerator, data_file, quiet_tensorflow_startup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("BERT4KERAS_DATA", os.path.join(REPO, "..", "shared", "data")),
                   help="folder holding zh/sentiment.zip and vocab/ (default: $BERT4KERAS_DATA or <repo>/../shared/data)")
    p.add_argument("--config", help="bert_config.json of an official Chinese BERT (with --checkpoint)")
    p.add_argument("--checkpoint", help="its TF1 checkpoint prefix, e.g. .../bert_model.ckpt")
    p.add_argument("--vocab", help="vocab.txt (default: <data-dir>/vocab/chinese_bert_vocab.txt)")
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=None, help="default: 3 from scratch, 2 with a checkpoint")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate; default: 1e-3 from scratch, 2e-5 with a checkpoint")
    p.add_argument("--train-size", type=int, default=0, help="use only N training texts (0: all 16883)")
    p.add_argument("--test-size", type=int, default=0, help="evaluate on only N test texts (0: all 2111)")
    p.add_argument("--seed", type=int, default=42)
    scratch = p.add_argument_group("model trained from scratch (when no --checkpoint)")
    scratch.add_argument("--num-hidden-layers", type=int, default=2)
    scratch.add_argument("--hidden-size", type=int, default=128)
    scratch.add_argument("--num-attention-heads", type=int, default=2)
    scratch.add_argument("--intermediate-size", type=int, default=512)
    return p.parse_args(argv)


if __name__ == "__main__":  # answer --help and bad arguments before the seconds TensorFlow takes to import
    parse_args()

with quiet_tensorflow_startup():  # TensorFlow's C++ start-up lines (oneDNN, CPU features, CUDA probing)
    import keras
    from bert4keras.models import build_transformer_model
    from bert4keras.optimizers import create_optimizer
    from bert4keras.tokenizers import Tokenizer, load_vocab


def load_data(zip_path, split, limit=0):
    """[(text, label)] of one split, read from the zip in place."""
    with zipfile.ZipFile(zip_path) as z:
        lines = z.read(f"sentiment/sentiment.{split}.data").decode("utf-8").splitlines()
    data = []
    for line in lines:
        text, label = line.rsplit("\t", 1)
        data.append((text, int(label)))
    return data[:limit] if limit else data


def resolve_settings(args):
    """(pretrained, epochs, lr, vocab_path): the arguments with their defaults, which depend on whether a
    checkpoint is fine-tuned (2 epochs, lr 2e-5) or a small model trained from scratch (3 epochs, lr 1e-3)."""
    pretrained = bool(args.checkpoint)
    if pretrained and not args.config:
        raise SystemExit("--checkpoint needs --config")
    epochs = args.epochs or (2 if pretrained else 3)
    lr = args.lr or (2e-5 if pretrained else 1e-3)
    vocab_path = args.vocab or data_file(args.data_dir, "vocab/chinese_bert_vocab.txt")
    return pretrained, epochs, lr, vocab_path


def make_tokenizer(vocab_path, pretrained):
    """(tokenizer, vocab_size): the checkpoint's vocab as it is, or, for a model trained from scratch,
    simplified (vocab_size is then the new size; None for a checkpoint, whose config has it)."""
    if pretrained:
        return Tokenizer(vocab_path, do_lower_case=True), None
    # A randomly initialised model has no use for the ~7,500 [unused], ## and foreign-script tokens.
    token_dict, _ = load_vocab(vocab_path, simplified=True, startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    return Tokenizer(token_dict, do_lower_case=True), len(token_dict)


def build_classifier(args, vocab_size=None):
    """(model, description): BERT pooled [CLS] -> Dropout -> Dense(2, softmax), from --checkpoint or from
    scratch (vocab_size given) with the --num-hidden-layers ... sizes."""
    if args.checkpoint:
        bert = build_transformer_model(args.config, args.checkpoint, model="bert", with_pool=True)
        model_desc = f"pretrained {args.checkpoint}"
    else:
        bert = build_transformer_model(
            None, None, model="bert", with_pool=True,
            vocab_size=vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
            num_attention_heads=args.num_attention_heads, intermediate_size=args.intermediate_size,
            hidden_act="gelu", max_position=args.maxlen, dropout_rate=0.1,
        )
        model_desc = (f"from scratch: layers={args.num_hidden_layers} hidden={args.hidden_size} "
                      f"heads={args.num_attention_heads} intermediate={args.intermediate_size} vocab={vocab_size}")
    output = keras.layers.Dropout(0.1, name="Classifier-Dropout")(bert.output)
    output = keras.layers.Dense(
        2, activation="softmax", kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        name="Classifier-Dense",
    )(output)
    return keras.Model(bert.inputs, output), model_desc


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    keras.utils.set_random_seed(args.seed)
    pretrained, epochs, lr, vocab_path = resolve_settings(args)

    zip_path = data_file(args.data_dir, "zh/sentiment.zip")
    train_data = load_data(zip_path, "train", args.train_size)
    valid_data = load_data(zip_path, "valid")
    test_data = load_data(zip_path, "test", args.test_size)

    tokenizer, vocab_size = make_tokenizer(vocab_path, pretrained)

    def batches(data):  # padded to a multiple of 16 so that XLA and JAX compile a handful of shapes; shapes_apart
        # keeps the batch order the README's figures were measured with
        encoded = [(*tokenizer.encode(text, maxlen=args.maxlen), label) for text, label in data]
        return LengthSortedGenerator(encoded, args.batch_size, pad_to_multiple_of=16, shapes_apart=True)

    train_gen, valid_gen, test_gen = (batches(d) for d in (train_data, valid_data, test_data))

    model, model_desc = build_classifier(args, vocab_size)
    # AdamW, no decay on biases and norms, warmup over 10% of the steps then cosine decay
    model.compile(optimizer=create_optimizer(lr, len(train_gen) * epochs), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    best = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=1, restore_best_weights=True, verbose=1)
    model.fit(
        train_gen.forfit(),
        steps_per_epoch=len(train_gen),
        shuffle=False,  # the generator shuffles
        epochs=epochs,
        validation_data=valid_gen.forfit(random=False),
        validation_steps=len(valid_gen),
        callbacks=[best],
    )
    _, test_accuracy = model.evaluate(test_gen.forfit(random=False), steps=len(test_gen), verbose=0)
    wall = time.time() - start

    print(
        f"sentiment (zh) test accuracy: {test_accuracy:.4f} ({len(test_data)} texts; best valid accuracy "
        f"{best.best:.4f} at epoch {best.best_epoch + 1}) | wall time: {wall:.0f}s | backend: {keras.backend.backend()}"
    )
    print(
        f"settings: {model_desc} train_size={len(train_data)} epochs={epochs} batch_size={args.batch_size} "
        f"maxlen={args.maxlen} lr={lr} seed={args.seed}"
    )
    return test_accuracy


if __name__ == "__main__":
    main()
