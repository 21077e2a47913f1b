"""Which characters decide a sentiment classifier's prediction: integrated gradients on the token embeddings.

The Keras 3 port of bert4keras 0.11.5's task_sentiment_integrated_gradients.py. bert4keras scaled the
embedding matrix from 0 to its value with K.set_value and read the gradient with K.gradients inside a
Layer; here one call does it on any backend:

    attributions = integrated_gradients(model, [token_ids, segment_ids], 'Embedding-Token', steps=20)

(batch, seq_len, embedding_size), e * the average gradient along the path from zero token embeddings to e
(Sundararajan et al. 2017, kexue.fm/archives/7533). Summed over the last axis they add up to
p(class | text) - p(class | zero token embeddings); bert4keras reduced them per character with the norm
or the largest absolute value, scaled to [0, 1]. The script prints all three for a few sentences.

No Chinese pretrained BERT ships offline, so a small BERT (2 layers, hidden 128, the Google Chinese vocab
simplified) is first trained from scratch on bert4keras's sentiment set (or loaded with --weights):

    python examples/task_sentiment_integrated_gradients.py [--weights ig.weights.h5] [--text 这家店真黑心]

Data: <data-dir>/zh/sentiment.zip (sentiment/sentiment.{train,valid,test}.data, `text\\tlabel`), read in
place; vocab: <data-dir>/vocab/chinese_bert_vocab.txt. Choose the backend with KERAS_BACKEND=tensorflow|jax|torch.
"""

import argparse
import os
import time
import zipfile

import numpy as np

from bert4keras.snippets import LengthSortedGenerator, data_file, quiet_tensorflow_startup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("BERT4KERAS_DATA", os.path.join(REPO, "..", "shared", "data")),
                   help="folder holding zh/sentiment.zip and vocab/ (default: $BERT4KERAS_DATA or <repo>/../shared/data)")
    p.add_argument("--weights", help="load the classifier's weights from this file if it exists, else train it and "
                   "save them there (a .weights.h5 name)")
    p.add_argument("--text", action="append", help="a sentence to explain (repeatable; default: bert4keras's four)")
    p.add_argument("--steps", type=int, default=20, help="integration steps (bert4keras: 20)")
    p.add_argument("--maxlen", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate")
    p.add_argument("--train-size", type=int, default=0, help="use only N training texts (0: all 16883)")
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
    from bert4keras.adversarial import integrated_gradients
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


TEXTS = ["这家店真黑心", "图太乱了 有点看不懂重点  讲故事的时候很难让孩子集中", "这是一本很好看的书", "这是一本很糟糕的书"]


def scaled(scores):
    return (scores - scores.min()) / (scores.max() - scores.min() + 1e-12)


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    keras.utils.set_random_seed(args.seed)
    vocab = data_file(args.data_dir, "vocab/chinese_bert_vocab.txt")
    token_dict, _ = load_vocab(vocab, simplified=True, startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    model = build_classifier(args, len(token_dict))
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    zip_path = data_file(args.data_dir, "zh/sentiment.zip")
    test_data = load_data(zip_path, "test", args.test_size)

    def batches(data):  # padded to a multiple of 16 so that XLA and JAX compile a handful of shapes; shapes_apart
        # keeps the batch order the README's figures were measured with
        encoded = [(*tokenizer.encode(text, maxlen=args.maxlen), label) for text, label in data]
        return LengthSortedGenerator(encoded, args.batch_size, pad_to_multiple_of=16, shapes_apart=True)

    test_gen = batches(test_data)

    if args.weights and os.path.exists(args.weights):
        model.load_weights(args.weights)
        print(f"loaded {args.weights}")
    else:
        train_data = load_data(zip_path, "train", args.train_size)
        train_gen = batches(train_data)
        model.compile(optimizer=create_optimizer(args.lr, len(train_gen) * args.epochs),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(train_gen.forfit(), steps_per_epoch=len(train_gen), shuffle=False, epochs=args.epochs)
        if args.weights:
            model.save_weights(args.weights)
    _, test_accuracy = model.evaluate(test_gen.forfit(random=False), steps=len(test_gen), verbose=0)
    print(f"classifier test accuracy: {test_accuracy:.4f} ({len(test_data)} texts)")

    embeddings = model.get_layer("Embedding-Token").embeddings
    for text in args.text or TEXTS:
        token_ids, segment_ids = tokenizer.encode(text, maxlen=args.maxlen)
        inputs = [np.array([token_ids]), np.array([segment_ids])]
        probas = keras.ops.convert_to_numpy(model(inputs, training=False))[0]
        label = int(probas.argmax())
        attributions = integrated_gradients(model, inputs, "Embedding-Token", class_index=label, steps=args.steps)[0]
        # The baseline, for completeness: every token embedding zero (the matrix zero, as bert4keras's alpha = 0).
        table = keras.ops.convert_to_numpy(embeddings.value)
        embeddings.assign(np.zeros_like(table))
        baseline = keras.ops.convert_to_numpy(model(inputs, training=False))[0, label]
        embeddings.assign(table)
        print(f"\n{text}  ->  label {label} ({'positive' if label else 'negative'}, p={probas[label]:.3f}); attributions "
              f"sum to {attributions.sum():+.4f}, p - p(zero token embeddings) = {probas[label] - baseline:+.4f}")
        characters = [tokenizer.decode([t]) or tokenizer.id_to_token(t) for t in token_ids][1:-1]
        for name, scores, form in [
            ("signed (sum over the embedding)", attributions.sum(-1), "+.3f"),
            ("norm, scaled to [0, 1]", scaled(np.linalg.norm(attributions, axis=-1)[1:-1]), ".2f"),
            ("largest |.|, scaled to [0, 1]", scaled(np.abs(attributions).max(-1)[1:-1]), ".2f"),
        ]:
            scores = scores[1:-1] if len(scores) == len(characters) + 2 else scores
            print(f"  {name + ':':33}", " ".join(f"{c}{v:{form}}" for c, v in zip(characters, scores)))
    print(f"\nwall time: {time.time() - start:.0f}s | backend: {keras.backend.backend()}")
    print(f"settings: layers={args.num_hidden_layers} hidden={args.hidden_size} train_size={args.train_size or 16883} "
          f"epochs={args.epochs} batch_size={args.batch_size} maxlen={args.maxlen} lr={args.lr} seed={args.seed} "
          f"steps={args.steps}")
    return test_accuracy


if __name__ == "__main__":
    main()
