"""Title generation on CSL (Chinese paper abstract -> title) with T5 v1.1 and SentencePiece, beam search.

The encoder reads the abstract once; the decoder generates the title with its KV cache
(`t5.predictor(max_length)`, inputs `[encoder output]`), so each beam-search step runs one token.
Tokens come from a SentencePiece model through `bert4keras.tokenizers.SpTokenizer`: by default
CPM-LM's Chinese model (30,000 pieces, words and characters), read from <data-dir>/spm/. The T5 model
<data-dir>/spm/t5_tokenizer_base.model is English-only: Chinese text becomes <unk> pieces.

By default a tiny T5 is trained from scratch on the 1000 training pairs. Expect low scores: it learns
the house phrasing of titles and little else (at the defaults it gives most abstracts the same
title); the printed `lead` baseline, the abstract's first characters, puts the numbers in context:

    python examples/task_seq2seq_autotitle_csl_t5.py

A pretrained T5 / mT5 (HF directory or official checkpoint) with its own SentencePiece model:

    python examples/task_seq2seq_autotitle_csl_t5.py --config DIR --checkpoint DIR --spm DIR/spiece.model --model mt5.1.1

Data: <data-dir>/zh/csl_ts_{test,dev}.tsv (`to title\tabstract\ttitle`, 1000 rows each, read in place;
the CSL benchmark's train split is not among them, so we train on `test` and evaluate on `dev`).
Scores: character-level ROUGE-L F1 and BLEU-4 averaged over the dev titles, as in
task_seq2seq_autotitle_csl.py. Choose the backend with KERAS_BACKEND=tensorflow|jax|torch.
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
                   help="folder holding zh/csl_ts_*.tsv and spm/ (default: $BERT4KERAS_DATA or <repo>/../shared/data)")
    p.add_argument("--spm", help="SentencePiece model (default: <data-dir>/spm/cpm_chinese_vocab.model)")
    p.add_argument("--config", help="config of a pretrained T5 (HF config.json or directory; with --checkpoint)")
    p.add_argument("--checkpoint", help="its checkpoint (HF directory / safetensors, or official TF checkpoint)")
    p.add_argument("--model", default="t5.1.1", help="t5.1.0, t5.1.1 or mt5.1.1 (for --checkpoint)")
    p.add_argument("--maxlen", type=int, default=256, help="abstract tokens")
    p.add_argument("--title-maxlen", type=int, default=32, help="title tokens generated at most (</s> included)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=None, help="default: 10 from scratch, 5 with a checkpoint")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate; default: 2e-3 from scratch, 1e-4 with a checkpoint")
    p.add_argument("--beam-size", type=int, default=3)
    p.add_argument("--train-size", type=int, default=0, help="use only N training pairs (0: all 1000)")
    p.add_argument("--dev-size", type=int, default=0, help="evaluate on only N dev pairs (0: all 1000)")
    p.add_argument("--seed", type=int, default=42)
    scratch = p.add_argument_group("model trained from scratch (when no --checkpoint)")
    scratch.add_argument("--num-hidden-layers", type=int, default=2, help="encoder and decoder layers each")
    scratch.add_argument("--hidden-size", type=int, default=256)
    scratch.add_argument("--num-attention-heads", type=int, default=4)
    scratch.add_argument("--intermediate-size", type=int, default=512, help="gated GELU feed-forward size")
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
    from bert4keras.tokenizers import SpTokenizer


def load_data(path, limit=0):
    """[(title, abstract)] from a CSL `to title\tabstract\ttitle` file."""
    data = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            _, abstract, title = line.rstrip("\n").split("\t")
            data.append((title, abstract))
    return data[:limit] if limit else data


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


class data_generator(DataGenerator):
    """Batches of (encoder token ids, decoder token ids) from `data` = [(abstract ids, title ids)],
    both ending with </s>; the decoder's input starts with the pad id, T5's decoder start token.
    Each is padded to the batch's longest rounded up to a multiple (32, 8): few shapes to compile.
    Shuffled, the samples come in the order of `length_sorted_batches` (chunks of 20 batches, by
    abstract length), so that a batch pads little."""

    def __init__(self, data, pad_id, batch_size=32):
        super().__init__(data, batch_size=batch_size)
        self.pad_id = pad_id

    def sample(self, random=False):
        lengths = [len(c_token_ids) for c_token_ids, _ in self.data]
        order = [i for batch in length_sorted_batches(lengths, self.batch_size, 20, random=random) for i in batch]
        for n, i in enumerate(order):
            yield n + 1 == len(order), self.data[i]

    def __iter__(self, random=False):
        batches, batch_c_token_ids, batch_t_token_ids = [], [], []
        for is_end, (c_token_ids, t_token_ids) in self.sample(random):
            batch_c_token_ids.append(c_token_ids)
            batch_t_token_ids.append([self.pad_id] + t_token_ids)
            if len(batch_c_token_ids) == self.batch_size or is_end:
                # a 1-tuple (inputs,): Keras then trains on the inputs alone, on every backend
                batches.append(((sequence_padding(batch_c_token_ids, value=self.pad_id, pad_to_multiple_of=32),
                                 sequence_padding(batch_t_token_ids, value=self.pad_id, pad_to_multiple_of=8)),))
                batch_c_token_ids, batch_t_token_ids = [], []
        # first_two_apart keeps the batch order the README's figures were measured with
        yield from first_two_apart(batches, lambda batch: [x.shape[1] for x in batch[0]])


class CrossEntropy(Loss):
    """Cross-entropy of the next decoder token, padding excluded."""

    def __init__(self, pad_id, **kwargs):
        super().__init__(**kwargs)
        self.pad_id = pad_id

    def compute_loss(self, inputs, mask=None):
        y_true, y_pred = inputs
        y_true = y_true[:, 1:]  # the next token
        y_mask = ops.cast(ops.not_equal(y_true, self.pad_id), y_pred.dtype)
        y_pred = y_pred[:, :-1]  # logits, one position behind
        loss = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        return ops.sum(loss * y_mask) / ops.maximum(ops.sum(y_mask), 1)

    def get_config(self):
        return {**super().get_config(), "pad_id": self.pad_id}


class AutoTitle(AutoRegressiveDecoder):
    """T5 decoding: `inputs` is `[encoder output of one abstract]`; the decoder's KV cache is the
    state, reordered with the beams by `AutoRegressiveDecoder`."""

    def __init__(self, predictor, tokenizer, **kwargs):
        super().__init__(**kwargs)
        self.predictor = predictor
        self.tokenizer = tokenizer

    @AutoRegressiveDecoder.wraps(default_rtype="logits", use_states=True)
    def predict(self, inputs, output_ids, states):
        return self.predictor(inputs, output_ids, states)

    def generate(self, context, topk=1):
        output_ids = self.beam_search([context], topk=topk)
        return self.tokenizer.decode([int(i) for i in output_ids[1:]])  # the start token dropped


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    keras.utils.set_random_seed(args.seed)
    pretrained = bool(args.checkpoint)
    epochs = args.epochs or (5 if pretrained else 10)
    lr = args.lr or (1e-4 if pretrained else 2e-3)
    spm_path = args.spm or data_file(args.data_dir, "spm/cpm_chinese_vocab.model")

    train_data = load_data(data_file(args.data_dir, "zh/csl_ts_test.tsv"), args.train_size)
    dev_data = load_data(data_file(args.data_dir, "zh/csl_ts_dev.tsv"), args.dev_size)

    tokenizer = SpTokenizer(spm_path, token_start=None, token_end="</s>")
    # T5 pads with the SentencePiece pad piece (id 0 in T5's own models, 5 in CPM's), and the
    # decoder starts from it.
    pad_id = tokenizer._token_pad_id if tokenizer._token_pad_id is not None else 0
    if pretrained:
        t5 = build_transformer_model(args.config, args.checkpoint, model=args.model, with_lm="linear",
                                     pad_token_id=pad_id, return_keras_model=False)
        model_desc = f"pretrained {args.model} {args.checkpoint}"
    else:
        t5 = build_transformer_model(
            None, None, model="t5.1.1", with_lm="linear", return_keras_model=False, pad_token_id=pad_id,
            vocab_size=tokenizer.vocab_size, hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
            num_attention_heads=args.num_attention_heads, intermediate_size=args.intermediate_size,
            hidden_act=["gelu_new", "linear"], dropout_rate=0.1,
        )
        model_desc = (f"t5.1.1 from scratch: layers={args.num_hidden_layers}+{args.num_hidden_layers} "
                      f"hidden={args.hidden_size} heads={args.num_attention_heads} "
                      f"intermediate={args.intermediate_size} vocab={tokenizer.vocab_size}")

    encoded = [(tokenizer.encode(abstract, maxlen=args.maxlen)[0], tokenizer.encode(title, maxlen=args.title_maxlen)[0])
               for title, abstract in train_data]
    train_gen = data_generator(encoded, pad_id, batch_size=args.batch_size)
    output = CrossEntropy(pad_id, output_axis=1, name="CrossEntropy")([t5.model.inputs[1], t5.model.outputs[0]])
    model = keras.Model(t5.model.inputs, output)
    # AdamW, no decay on biases and norms (T5's RMS norms: scale), warmup over 10% of the steps, cosine decay
    optimizer = create_optimizer(lr, len(train_gen) * epochs, exclude_from_weight_decay=["bias", "gamma", "beta", "scale"])
    model.compile(optimizer=optimizer)
    model.fit(train_gen.forfit(), steps_per_epoch=len(train_gen), epochs=epochs, verbose=2)
    train_time = time.time() - start

    # Encode the dev abstracts in batches; each context keeps its own length rounded up to 32 (the
    # encoder zeroes padded rows and cross attention skips them), so the decoder compiles few shapes.
    decode_start = time.time()
    dev_ids = [tokenizer.encode(abstract, maxlen=args.maxlen)[0] for _, abstract in dev_data]
    contexts = []
    for i in range(0, len(dev_ids), 32):
        batch = dev_ids[i:i + 32]
        states = t5.encoder.predict(sequence_padding(batch, value=pad_id, pad_to_multiple_of=32), verbose=0)
        contexts += [c[:-(-len(ids) // 32) * 32] for c, ids in zip(states, batch)]
    autotitle = AutoTitle(t5.predictor(max_length=args.title_maxlen + 1), tokenizer,
                          start_id=pad_id, end_id=tokenizer._token_end_id, maxlen=args.title_maxlen)
    predictions = []
    for i, ((title, abstract), context) in enumerate(zip(dev_data, contexts)):
        predictions.append(autotitle.generate(context, topk=args.beam_size))
        if i < 3:
            print(f"abstract: {abstract[:60]}...\n  title:     {title}\n  generated: {predictions[-1]}")
    decode_time = time.time() - decode_start
    scores = score(zip(predictions, (title for title, _ in dev_data)))
    n = int(np.median([len(title) for title, _ in train_data]))
    lead = score((abstract[:n], title) for title, abstract in dev_data)
    wall = time.time() - start

    print(
        f"CSL title generation (T5), dev ({len(dev_data)} abstracts): ROUGE-L {scores['rouge-l']:.4f} "
        f"BLEU {scores['bleu']:.4f} (character level; lead-{n} baseline: ROUGE-L {lead['rouge-l']:.4f} "
        f"BLEU {lead['bleu']:.4f})"
    )
    print(
        f"wall time: {wall:.0f}s (training {train_time:.0f}s, encoding + beam search {decode_time:.0f}s = "
        f"{1000 * decode_time / len(dev_data):.0f} ms per title) | backend: {keras.backend.backend()}"
    )
    print(
        f"settings: {model_desc} spm={os.path.basename(spm_path)} train_size={len(train_data)} epochs={epochs} "
        f"batch_size={args.batch_size} maxlen={args.maxlen} title_maxlen={args.title_maxlen} lr={lr} "
        f"beam_size={args.beam_size} seed={args.seed}"
    )
    return scores


if __name__ == "__main__":
    main()
