"""Chinese sentiment classification with adversarial training on the token embeddings: FGM or its
first-order form, a gradient penalty.

The Keras 3 port of bert4keras 0.11.5's task_iflytek_adversarial_training.py and
task_iflytek_gradient_penalty.py, on bert4keras's Chinese sentiment set (kexue.fm/archives/7234).

--method fgm (the default): each step perturbs the embedding matrix by epsilon * g / ||g|| (g the loss's
gradient there), takes the training step at the perturbed point and leaves the matrix as the optimizer
made it (Miyato et al. 2017). bert4keras's one line after compile,

    adversarial_training(model, 'Embedding-Token', 0.5)

becomes one line before it:

    model = adversarial_training(model, 'Embedding-Token', 0.5)

--method gradient_penalty: the loss is cross-entropy + 0.5 * epsilon * ||d cross-entropy / d e||^2, e the
token embeddings of the batch, one row per position. bert4keras's custom loss,

    loss=loss_with_gradient_penalty  (K.gradients(loss, [embeddings]) inside a Keras 2 loss)

becomes a model that computes the penalty in its training step, before compile (Keras 3's sparse
cross-entropy is twice differentiable, so the script's own version is not needed):

    model = gradient_penalty(model, 'Embedding-Token', epsilon=1)
    model.compile(loss='sparse_categorical_crossentropy', ...)

No Chinese pretrained BERT ships offline, so a small BERT (2 layers, hidden 128, the Google Chinese vocab
simplified) is trained from scratch; --no-adversarial trains the same model without either, for
comparison. Its embeddings start small (rows of norm ~0.2: 128 entries of std ~0.02), so bert4keras's
sizes, chosen for a pretrained BERT base, keep it at the constant prediction it starts from (FGM 0.5 and
0.1, penalty 1); the defaults are 0.01 (FGM) and 0.03 (penalty).

    python examples/task_sentiment_adversarial_training.py [--no-adversarial] [--epsilon 0.01]
    python examples/task_sentiment_adversarial_training.py --method gradient_penalty [--epsilon 0.03]

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
    p.add_argument("--method", choices=["fgm", "gradient_penalty"], default="fgm")
    p.add_argument("--epsilon", type=float, default=None,
                   help="FGM: size of the perturbation, default 0.01 (bert4keras: 0.5, for BERT base; here 0.5 and "
                        "0.1 leave the small model at chance); gradient_penalty: weight of the penalty, default "
                        "0.03 (bert4keras: 1, which leaves the small model at chance)")
    p.add_argument("--no-adversarial", action="store_true", help="train without either (the baseline)")
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--train-size", type=int, default=0, help="use only N training texts (0: all 16883)")
    p.add_argument("--valid-size", type=int, default=0, help="validate on only N texts (0: all 2111)")
    p.add_argument("--test-size", type=int, default=0, help="evaluate on only N test texts (0: all 2111)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--num-hidden-layers", type=int, default=2)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--num-attention-heads", type=int, default=2)
    p.add_argument("--intermediate-size", type=int, default=512)
    args = p.parse_args(argv)
    if args.epsilon is None:
        args.epsilon = 0.01 if args.method == "fgm" else 0.03
    return args


if __name__ == "__main__":  # answer --help and bad arguments before the seconds TensorFlow takes to import
    parse_args()

with quiet_tensorflow_startup():  # TensorFlow's C++ start-up lines (oneDNN, CPU features, CUDA probing)
    import keras
    from bert4keras.adversarial import adversarial_training, gradient_penalty
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


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    keras.utils.set_random_seed(args.seed)
    zip_path = data_file(args.data_dir, "zh/sentiment.zip")
    train_data = load_data(zip_path, "train", args.train_size)
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

    model = build_classifier(args, len(token_dict))
    if not args.no_adversarial:
        wrap = adversarial_training if args.method == "fgm" else gradient_penalty
        model = wrap(model, "Embedding-Token", epsilon=args.epsilon)
    model.compile(optimizer=create_optimizer(args.lr, len(train_gen) * args.epochs),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    best = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=1,
                                         restore_best_weights=True, verbose=1)
    model.fit(train_gen.forfit(), steps_per_epoch=len(train_gen), shuffle=False, epochs=args.epochs,
              validation_data=valid_gen.forfit(random=False), validation_steps=len(valid_gen), callbacks=[best])
    _, test_accuracy = model.evaluate(test_gen.forfit(random=False), steps=len(test_gen), verbose=0)
    wall = time.time() - start
    method = "FGM" if args.method == "fgm" else "gradient penalty"
    technique = "none" if args.no_adversarial else f"{method} epsilon={args.epsilon}"
    print(f"sentiment (zh) test accuracy: {test_accuracy:.4f} ({len(test_data)} texts; best valid accuracy "
          f"{best.best:.4f} at epoch {best.best_epoch + 1}) | adversarial: {technique} | wall time: {wall:.0f}s "
          f"| backend: {keras.backend.backend()}")
    print(f"settings: layers={args.num_hidden_layers} hidden={args.hidden_size} train_size={len(train_data)} "
          f"epochs={args.epochs} batch_size={args.batch_size} maxlen={args.maxlen} lr={args.lr} seed={args.seed}")
    return test_accuracy


if __name__ == "__main__":
    main()
