"""Semi-supervised Chinese sentiment classification with virtual adversarial training (VAT).

The Keras 3 port of bert4keras 0.11.5's task_sentiment_virtual_adversarial_training.py: a fraction
(--train-frac) of the sentiment set's training texts keep their labels, the rest are unlabeled. After
each supervised step, the VAT model (the same layers) takes one step on an unlabeled batch: it finds
the perturbation of the embedding matrix (size epsilon, one power iteration from a random start of
size xi) that changes the predictions most, and is trained to keep its predictions there (KL
divergence; Miyato et al. 2018, kexue.fm/archives/7466). bert4keras's line after compile,

    virtual_adversarial_training(model_vat, 'Embedding-Token')

becomes one line before it,

    model_vat = virtual_adversarial_training(model, 'Embedding-Token')

and its callback's `model_vat.train_on_batch(dx, dy)` stays (the labels are ignored).

No Chinese pretrained BERT ships offline, so a small BERT (2 layers, hidden 128, the Google Chinese vocab
simplified) is trained from scratch; --no-vat trains the same model on the labeled texts only. Its
embeddings start small (matrix norm ~23) and bert4keras's epsilon=1, xi=10, chosen for a pretrained BERT base,
keep it at chance; the defaults are 0.1 and 1.

    python examples/task_sentiment_virtual_adversarial_training.py [--no-vat] [--train-frac 0.05]

Data: <data-dir>/zh/sentiment.zip (sentiment/sentiment.{train,valid,test}.data, `text\\tlabel`), read in
place; vocab: <data-dir>/vocab/chinese_bert_vocab.txt. The weights that do best on the valid split are
restored before testing. Choose the backend with KERAS_BACKEND=tensorflow|jax|torch.
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
    p.add_argument("--train-frac", type=float, default=0.05,
                   help="fraction of the training texts that keep their labels (bert4keras: 0.01)")
    p.add_argument("--no-vat", action="store_true", help="train on the labeled texts only (the baseline)")
    p.add_argument("--epsilon", type=float, default=0.1,
                   help="size of the VAT perturbation (bert4keras: 1, for BERT base; here 1 leaves the model at chance)")
    p.add_argument("--xi", type=float, default=1.0, help="size of the power iteration's start (bert4keras: 10)")
    p.add_argument("--iters", type=int, default=1, help="power iterations (bert4keras: 1)")
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--train-size", type=int, default=0,
                   help="use only N training texts, labeled and unlabeled (0: all 16883)")
    p.add_argument("--valid-size", type=int, default=0, help="validate on only N texts (0: all 2111)")
    p.add_argument("--test-size", type=int, default=0, help="evaluate on only N test texts (0: all 2111)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--num-hidden-layers", type=int, default=2)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--num-attention-heads", type=int, default=2)
    p.add_argument("--intermediate-size", type=int, default=512)
    return p.parse_args(argv)


if __name__ == "__main__":  # answer --help and bad arguments before the seconds TensorFlow takes to import
    parse_args()

with quiet_tensorflow_startup():  # TensorFlow's C++ start-up lines (oneDNN, CPU features, CUDA probing)
    import keras
    from bert4keras.adversarial import virtual_adversarial_training
    from bert4keras.models import build_transformer_model
    from bert4keras.optimizers import create_optimizer
    from bert4keras.tokenizers import Tokenizer, load_vocab


def load_data(zip_path, split, limit=0):
    """[(text, label)] of one split, read from the zip in place."""
    with zipfile.ZipFile(zip_path) as z:
        lines = z.read(f"sentiment/sentiment.{split}.data").decode("utf-8").splitlines()
    data = [(text, int(label)) for text, label in (line.rsplit("\t", 1) for line in lines)]
    return data[:limit] if limit else data


def build_classifier(args, vocab_size):
    """BERT from scratch, pooled [CLS] -> Dropout -> Dense(2, softmax)."""
    bert = build_transformer_model(
        None, None, model="bert", with_pool=True, vocab_size=vocab_size, hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers, num_attention_heads=args.num_attention_heads,
        intermediate_size=args.intermediate_size, hidden_act="gelu", max_position=args.maxlen, dropout_rate=0.1,
    )
    output = keras.layers.Dropout(0.1, name="Classifier-Dropout")(bert.output)
    output = keras.layers.Dense(2, activation="softmax", name="Classifier-Dense",
                                kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02))(output)
    return keras.Model(bert.inputs, output)


class VirtualAdversarialSteps(keras.callbacks.Callback):
    """After each supervised step, one VAT step on the next unlabeled batch (bert4keras's
    ``Evaluator.on_batch_end``)."""

    def __init__(self, model_vat, unlabeled_batches):
        super().__init__()
        self.model_vat = model_vat
        self.unlabeled_batches = unlabeled_batches

    def on_train_batch_end(self, batch, logs=None):
        # Reading self.model makes JAX's fit write its weights back to the shared variables and read
        # them again before its next step, so that the two models train the same weights.
        self.model  # noqa: B018
        x, _ = next(self.unlabeled_batches)
        self.model_vat.train_on_batch(x)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    keras.utils.set_random_seed(args.seed)
    zip_path = data_file(args.data_dir, "zh/sentiment.zip")
    train_data = load_data(zip_path, "train", args.train_size)
    num_labeled = int(len(train_data) * args.train_frac)
    unlabeled_data = [(text, 0) for text, _ in train_data[num_labeled:]]
    train_data = train_data[:num_labeled]
    valid_data = load_data(zip_path, "valid", args.valid_size)
    test_data = load_data(zip_path, "test", args.test_size)
    vocab = data_file(args.data_dir, "vocab/chinese_bert_vocab.txt")
    token_dict, _ = load_vocab(vocab, simplified=True, startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tokenizer = Tokenizer(token_dict, do_lower_case=True)

    def batches(data):  # padded to a multiple of 16 so that XLA and JAX compile a handful of shapes; shapes_apart
        # keeps the batch order the README's figures were measured with
        encoded = [(*tokenizer.encode(text, maxlen=args.maxlen), label) for text, label in data]
        return LengthSortedGenerator(encoded, args.batch_size, pad_to_multiple_of=16, shapes_apart=True)

    train_gen, valid_gen, test_gen = (batches(d) for d in (train_data, valid_data, test_data))
    total_steps = len(train_gen) * args.epochs

    model = build_classifier(args, len(token_dict))
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=args.epochs,
                                               restore_best_weights=True)]
    if not args.no_vat:
        model_vat = virtual_adversarial_training(model, "Embedding-Token", epsilon=args.epsilon, xi=args.xi,
                                                 iters=args.iters, seed=args.seed)
        model_vat.compile(optimizer=create_optimizer(args.lr / 2, total_steps), loss="kld")
        unlabeled_gen = batches(unlabeled_data)
        callbacks.append(VirtualAdversarialSteps(model_vat, unlabeled_gen.forfit()))
    model.compile(optimizer=create_optimizer(args.lr, total_steps), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train_gen.forfit(), steps_per_epoch=len(train_gen), shuffle=False, epochs=args.epochs,
              validation_data=valid_gen.forfit(random=False), validation_steps=len(valid_gen), callbacks=callbacks)
    best = callbacks[0]
    _, test_accuracy = model.evaluate(test_gen.forfit(random=False), steps=len(test_gen), verbose=0)
    wall = time.time() - start
    technique = "none" if args.no_vat else f"epsilon={args.epsilon} xi={args.xi} iters={args.iters}"
    print(f"sentiment (zh) test accuracy: {test_accuracy:.4f} ({len(test_data)} texts; best valid accuracy "
          f"{best.best:.4f} at epoch {best.best_epoch + 1}) | VAT: {technique} | wall time: {wall:.0f}s "
          f"| backend: {keras.backend.backend()}")
    print(f"settings: layers={args.num_hidden_layers} hidden={args.hidden_size} labeled={len(train_data)} "
          f"unlabeled={len(unlabeled_data)} epochs={args.epochs} batch_size={args.batch_size} maxlen={args.maxlen} "
          f"lr={args.lr} seed={args.seed}")
    return test_accuracy


if __name__ == "__main__":
    main()
