"""Chinese sentence-pair matching on LCQMC: `[CLS] s1 [SEP] s2 [SEP]` -> pooled [CLS] -> Dense(2), accuracy.

The two questions are encoded together (an interaction-based matcher, bert4keras's
examples/task_sentence_similarity_lcqmc.py). With an official Chinese BERT it fine-tunes that checkpoint:

    python examples/task_sentence_similarity_lcqmc.py --config bert_config.json --checkpoint bert_model.ckpt [--vocab vocab.txt]

Without one (the default) it trains a small BERT from scratch over the Google Chinese vocab simplified by
`load_vocab(..., simplified=True)` (a 4-layer, hidden-256 one did not get past chance in 6 epochs; the
2-layer, hidden-128 default learns, to about 0.64 on dev):

    python examples/task_sentence_similarity_lcqmc.py

Data: <data-dir>/zh/lcqmc_{test,dev}.txt (`s1\ts2\tlabel`, label 1 = same intent), read in place. The
original train split is not available: it trains on the 12,500 test pairs and reports accuracy on the
8,802 dev pairs. Vocab: <data-dir>/vocab/chinese_bert_vocab.txt. KERAS_BACKEND=tensorflow|jax|torch.
"""

import argparse
import os
import time

import numpy as np

from bert4keras.snippets import LengthSortedGenerator, data_file, quiet_tensorflow_startup

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("BERT4KERAS_DATA", os.path.join(REPO, "..", "shared", "data")),
                   help="folder holding zh/lcqmc_*.txt and vocab/ (default: $BERT4KERAS_DATA or <repo>/../shared/data)")
    p.add_argument("--config", help="bert_config.json of a Chinese BERT (with --checkpoint)")
    p.add_argument("--checkpoint", help="its TF1 checkpoint prefix or safetensors")
    p.add_argument("--vocab", help="vocab.txt (default: <data-dir>/vocab/chinese_bert_vocab.txt)")
    p.add_argument("--maxlen", type=int, default=64, help="tokens per pair, special tokens included")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, help="default: 4 from scratch, 2 with a checkpoint")
    p.add_argument("--lr", type=float, help="peak learning rate; default: 1e-3 from scratch, 2e-5 with a checkpoint")
    p.add_argument("--train-size", type=int, default=0, help="use only the first N training pairs (0: all 12500)")
    p.add_argument("--test-size", type=int, default=0, help="evaluate on only the first N dev pairs (0: all 8802)")
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


def load_pairs(filename, limit=0):
    """[(s1, s2, label)] from a `s1\\ts2\\tlabel` file."""
    data = []
    with open(filename, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 3:
                data.append((parts[0], parts[1], int(parts[2])))
    return data[:limit] if limit else data


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    keras.utils.set_random_seed(args.seed)
    pretrained = bool(args.checkpoint)
    if pretrained and not args.config:
        raise SystemExit("--checkpoint needs --config")
    epochs = args.epochs or (2 if pretrained else 4)
    lr = args.lr or (2e-5 if pretrained else 1e-3)
    vocab_path = args.vocab or data_file(args.data_dir, "vocab/chinese_bert_vocab.txt")

    train_data = load_pairs(data_file(args.data_dir, "zh/lcqmc_test.txt"), args.train_size)
    test_data = load_pairs(data_file(args.data_dir, "zh/lcqmc_dev.txt"), args.test_size)

    if pretrained:
        tokenizer = Tokenizer(vocab_path, do_lower_case=True)
        bert = build_transformer_model(args.config, args.checkpoint, with_pool=True)
        model_desc = f"pretrained {args.checkpoint}"
    else:
        token_dict, _ = load_vocab(vocab_path, simplified=True, startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
        tokenizer = Tokenizer(token_dict, do_lower_case=True)
        bert = build_transformer_model(
            None, None, with_pool=True, vocab_size=len(token_dict), hidden_size=args.hidden_size,
            num_hidden_layers=args.num_hidden_layers, num_attention_heads=args.num_attention_heads,
            intermediate_size=args.intermediate_size, hidden_act="gelu", max_position=args.maxlen, dropout_rate=0.1,
        )
        model_desc = (f"from scratch: layers={args.num_hidden_layers} hidden={args.hidden_size} "
                      f"heads={args.num_attention_heads} intermediate={args.intermediate_size} vocab={len(token_dict)}")

    def batches(data):  # (token_ids, segment_ids) of each pair -> label, padded per batch to a multiple of 8;
        # shapes_apart keeps the batch order the README's figure was measured with
        encoded = [(*tokenizer.encode(s1, s2, maxlen=args.maxlen), label) for s1, s2, label in data]
        return LengthSortedGenerator(encoded, args.batch_size, pad_to_multiple_of=8, shapes_apart=True)

    train_gen, test_gen = batches(train_data), batches(test_data)

    output = keras.layers.Dropout(0.1, name="Matching-Dropout")(bert.output)
    output = keras.layers.Dense(
        2, activation="softmax", kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        name="Matching-Dense",
    )(output)
    model = keras.Model(bert.inputs, output)

    # AdamW, no decay on biases and norms, warmup over 10% of the steps then cosine decay
    model.compile(optimizer=create_optimizer(lr, len(train_gen) * epochs), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(train_gen.forfit(), steps_per_epoch=len(train_gen), epochs=epochs, shuffle=False)
    _, accuracy = model.evaluate(test_gen.forfit(random=False), steps=len(test_gen), verbose=0)
    wall = time.time() - start

    print(
        f"LCQMC dev accuracy: {accuracy:.4f} ({len(test_data)} pairs; majority class "
        f"{max(np.mean([d[2] for d in test_data]), 1 - np.mean([d[2] for d in test_data])):.4f}) "
        f"| wall time: {wall:.0f}s | backend: {keras.backend.backend()}"
    )
    print(
        f"settings: {model_desc} train_size={len(train_data)} (lcqmc_test) epochs={epochs} "
        f"batch_size={args.batch_size} maxlen={args.maxlen} lr={lr} seed={args.seed}"
    )
    return accuracy


if __name__ == "__main__":
    main()
