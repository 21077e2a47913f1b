"""Title generation on CSL (Chinese paper abstract -> title) with UniLM on BERT, decoded by beam search.

UniLM (Dong et al. 2019) turns a BERT encoder into a seq2seq model with one attention mask: the
abstract (segment 0) attends to itself both ways, the title (segment 1) attends to the abstract and
causally to itself, and the masked-LM head predicts each next title token. bert4keras's
`application='unilm'` builds exactly that; decoding runs through the model's KV cache
(`predictor(max_length)`), so each beam-search step costs one token, not the whole prefix.

With an official Chinese BERT (e.g. chinese_L-12_H-768_A-12) it fine-tunes that checkpoint:

    python examples/task_seq2seq_autotitle_csl.py --config bert_config.json --checkpoint bert_model.ckpt

Without one (the default) it trains a small BERT from scratch on the 1000 training pairs, so it runs
anywhere in minutes. Expect low scores: a model that has seen 1000 titles learns their house phrasing
(一种基于...的研究) but hardly any copying from the abstract, let alone Chinese; the printed `lead`
baseline (the abstract's first characters) puts the numbers in context.

Data: <data-dir>/zh/csl_ts_{test,dev}.tsv (`to title\tabstract\ttitle`, 1000 rows each, read in place;
the CSL benchmark's train split is not among them, so we train on `test` and evaluate on `dev`);
vocab: <data-dir>/vocab/chinese_bert_vocab.txt, simplified by `load_vocab(..., simplified=True)` (13,584
tokens; from scratch, further cut to the ~4,000 that occur in the training pairs).
Scores: character-level ROUGE-L F1 and BLEU-4 averaged over the dev titles (`bert4keras.metrics`).
Choose the backend with KERAS_BACKEND=tensorflow|jax|torch.
"""

import argparse
import os
import time

import numpy as np

from bert4keras.snippets import (
    AutoRegressiveDecoder, DataGenerator, data_file, first_two_apart,
    length_sorted_batches, quiet_tensorflow_startup, sequence_padding,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("BERT4KERAS_DATA", os.path.join(REPO, "..", "shared", "data")),
                   help="folder holding zh/csl_ts_*.tsv and vocab/ (default: $BERT4KERAS_DATA or <repo>/../shared/data)")
    p.add_argument("--config", help="bert_config.json of an official Chinese BERT (with --checkpoint)")
    p.add_argument("--checkpoint", help="its TF1 checkpoint prefix, e.g. .../bert_model.ckpt")
    p.add_argument("--vocab", help="vocab.txt (default: <data-dir>/vocab/chinese_bert_vocab.txt)")
    p.add_argument("--maxlen", type=int, default=256, help="abstract + title tokens")
    p.add_argument("--title-maxlen", type=int, default=32, help="tokens generated at most (the [SEP] included)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=None, help="default: 16 from scratch, 5 with a checkpoint")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate; default: 1e-3 from scratch, 2e-5 with a checkpoint")
    p.add_argument("--beam-size", type=int, default=3)
    p.add_argument("--train-size", type=int, default=0, help="use only N training pairs (0: all 1000)")
    p.add_argument("--dev-size", type=int, default=0, help="evaluate on only N dev pairs (0: all 1000)")
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
    from keras import ops
    from bert4keras.layers import Loss
    from bert4keras.metrics import rouge_l, sentence_bleu
    from bert4keras.models import build_transformer_model
    from bert4keras.optimizers import create_optimizer
    from bert4keras.tokenizers import Tokenizer, load_vocab


def load_data(path, limit=0):
    """[(title, abstract)] from a CSL `to title\tabstract\ttitle` file."""
    data = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            _, abstract, title = line.rstrip("\n").split("\t")
            data.append((title, abstract))
    return data[:limit] if limit else data


class data_generator(DataGenerator):
    """Batches of [token_ids, segment_ids] of `[CLS] abstract [SEP] title [SEP]`, from `data` =
    [(token_ids, segment_ids)], padded to a multiple of 32 tokens so compiled backends see a handful
    of shapes. No labels: the loss layer reads its targets from token_ids. Shuffled, the samples come
    in the order of `length_sorted_batches` (chunks of 20 batches), so that a batch pads little.
    """

    def sample(self, random=False):
        lengths = [len(token_ids) for token_ids, _ in self.data]
        order = [i for batch in length_sorted_batches(lengths, self.batch_size, 20, random=random) for i in batch]
        for n, i in enumerate(order):
            yield n + 1 == len(order), self.data[i]

    def __iter__(self, random=False):
        batches, batch_token_ids, batch_segment_ids = [], [], []
        for is_end, (token_ids, segment_ids) in self.sample(random):
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
            if len(batch_token_ids) == self.batch_size or is_end:
                # a 1-tuple (inputs,): Keras then trains on the inputs alone, on every backend
                batches.append(((sequence_padding(batch_token_ids, pad_to_multiple_of=32),
                                 sequence_padding(batch_segment_ids, pad_to_multiple_of=32)),))
                batch_token_ids, batch_segment_ids = [], []
        # first_two_apart keeps the batch order the README's figures were measured with
        yield from first_two_apart(batches, lambda batch: batch[0][0].shape[1])


class CrossEntropy(Loss):
    """Cross-entropy of the title tokens only: segment_ids mark the part to predict, shifted by one."""

    def compute_loss(self, inputs, mask=None):
        y_true, y_mask, y_pred = inputs
        y_true = y_true[:, 1:]  # the next token
        y_mask = ops.cast(y_mask[:, 1:], y_pred.dtype)  # 1 on the title and its [SEP]
        y_pred = y_pred[:, :-1]  # logits, one position behind
        loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        return ops.sum(loss * y_mask) / ops.maximum(ops.sum(y_mask), 1)


class AutoTitle(AutoRegressiveDecoder):
    """Seq2seq decoding with a `CachedPredictor`: its KV cache is the decoder's state, reordered
    with the beams by `AutoRegressiveDecoder`."""

    def __init__(self, predictor, tokenizer, max_prompt_len, **kwargs):
        super().__init__(**kwargs)
        self.predictor = predictor
        self.tokenizer = tokenizer
        self.max_prompt_len = max_prompt_len

    @AutoRegressiveDecoder.wraps(default_rtype="logits", use_states=True)
    def predict(self, inputs, output_ids, states):
        return self.predictor(inputs, output_ids, states)

    def generate(self, text, topk=1):
        token_ids, segment_ids = self.tokenizer.encode(text, maxlen=self.max_prompt_len)
        # Cut the abstract (keeping [SEP]) to a multiple of 8 tokens: the prompt's length is a shape of
        # the compiled step, and jax.jit / XLA compile once per shape: ~30 shapes instead of ~200.
        cut = len(token_ids) % 8
        if cut and len(token_ids) - cut > 8:
            token_ids = token_ids[:-cut - 1] + token_ids[-1:]
            segment_ids = segment_ids[:-cut]
        output_ids = self.beam_search([token_ids, segment_ids], topk=topk)
        return self.tokenizer.decode(output_ids)


# Chinese titles have no spaces, so the units are characters (as bert4keras's CSL example, which joined
# characters with spaces before calling the `rouge` and `nltk` packages). Both scores are per title and
# averaged; an empty prediction scores 0.
def score(pairs):
    """Mean character-level ROUGE-L F1 and BLEU-4 of [(predicted title, reference title)], over lowercased
    characters without whitespace (the tokenizer lowercases, and decode may add spaces)."""
    rouge, bleu = [], []
    for pred, title in pairs:
        hyp, ref = ([c for c in text.lower() if not c.isspace()] for text in (pred, title))
        rouge.append(rouge_l(hyp, ref) if hyp else 0.0)
        bleu.append(sentence_bleu(hyp, ref))
    return {"rouge-l": float(np.mean(rouge)), "bleu": float(np.mean(bleu))}


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    keras.utils.set_random_seed(args.seed)
    pretrained = bool(args.checkpoint)
    if pretrained and not args.config:
        raise SystemExit("--checkpoint needs --config")
    epochs = args.epochs or (5 if pretrained else 16)
    lr = args.lr or (2e-5 if pretrained else 1e-3)
    vocab_path = args.vocab or data_file(args.data_dir, "vocab/chinese_bert_vocab.txt")

    train_data = load_data(data_file(args.data_dir, "zh/csl_ts_test.tsv"), args.train_size)
    dev_data = load_data(data_file(args.data_dir, "zh/csl_ts_dev.tsv"), args.dev_size)

    # The simplified vocab drops ~7,500 tokens a Chinese text never produces; keep_tokens picks their
    # rows out of a checkpoint's embedding (and MLM bias).
    token_dict, keep_tokens = load_vocab(vocab_path, simplified=True, startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    tokenizer = Tokenizer(token_dict, do_lower_case=True)
    if not pretrained:
        # A model trained from scratch never learns a token it never sees: keep those of the training
        # pairs (about 4,000), which makes the output layer, most of the compute here, 3x cheaper.
        seen = {i for title, abstract in train_data for i in tokenizer.encode(abstract, title, maxlen=args.maxlen)[0]}
        tokens = sorted(token_dict, key=token_dict.get)
        token_dict = {t: n for n, t in enumerate(t for t in tokens if token_dict[t] < 4 or token_dict[t] in seen)}
        tokenizer = Tokenizer(token_dict, do_lower_case=True)
    if pretrained:
        bert = build_transformer_model(args.config, args.checkpoint, model="bert", application="unilm",
                                       keep_tokens=keep_tokens, with_mlm="linear", return_keras_model=False)
        model_desc = f"pretrained {args.checkpoint}"
    else:
        bert = build_transformer_model(
            None, None, model="bert", application="unilm", with_mlm="linear", return_keras_model=False,
            vocab_size=len(token_dict), hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
            num_attention_heads=args.num_attention_heads, intermediate_size=args.intermediate_size,
            hidden_act="gelu", max_position=args.maxlen, dropout_rate=0.1,
        )
        model_desc = (f"from scratch: layers={args.num_hidden_layers} hidden={args.hidden_size} "
                      f"heads={args.num_attention_heads} intermediate={args.intermediate_size} vocab={len(token_dict)}")

    output = CrossEntropy(output_axis=2, name="CrossEntropy")(bert.model.inputs + bert.model.outputs)
    model = keras.Model(bert.model.inputs, output)
    encoded = [tokenizer.encode(abstract, title, maxlen=args.maxlen) for title, abstract in train_data]
    train_gen = data_generator(encoded, batch_size=args.batch_size)
    optimizer = create_optimizer(lr, len(train_gen) * epochs)  # AdamW, warmup over 10% of the steps, cosine decay
    model.compile(optimizer=optimizer)
    model.fit(train_gen.forfit(), steps_per_epoch=len(train_gen), epochs=epochs, verbose=2)
    train_time = time.time() - start

    # Prompt and title share maxlen positions, as in training: the abstract leaves room for the title.
    autotitle = AutoTitle(bert.predictor(max_length=args.maxlen), tokenizer, args.maxlen - args.title_maxlen,
                          start_id=None, end_id=tokenizer._token_end_id, maxlen=args.title_maxlen)
    decode_start = time.time()
    predictions = []
    for i, (title, abstract) in enumerate(dev_data):
        predictions.append(autotitle.generate(abstract, topk=args.beam_size))
        if i < 3:
            print(f"abstract: {abstract[:60]}...\n  title:     {title}\n  generated: {predictions[-1]}")
    decode_time = time.time() - decode_start
    scores = score(zip(predictions, (title for title, _ in dev_data)))
    # lead baseline: the abstract's first n characters, n the median length of the training titles
    n = int(np.median([len(title) for title, _ in train_data]))
    lead = score((abstract[:n], title) for title, abstract in dev_data)
    wall = time.time() - start

    print(
        f"CSL title generation, dev ({len(dev_data)} abstracts): ROUGE-L {scores['rouge-l']:.4f} BLEU {scores['bleu']:.4f} "
        f"(character level; lead-{n} baseline: ROUGE-L {lead['rouge-l']:.4f} BLEU {lead['bleu']:.4f})"
    )
    print(
        f"wall time: {wall:.0f}s (training {train_time:.0f}s, beam search {decode_time:.0f}s = "
        f"{1000 * decode_time / len(dev_data):.0f} ms per title) | backend: {keras.backend.backend()}"
    )
    print(
        f"settings: {model_desc} train_size={len(train_data)} epochs={epochs} batch_size={args.batch_size} "
        f"maxlen={args.maxlen} title_maxlen={args.title_maxlen} lr={lr} beam_size={args.beam_size} seed={args.seed}"
    )
    return scores


if __name__ == "__main__":
    main()
