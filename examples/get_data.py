"""Download the public data files the examples read, checking each one's SHA-256.

    python examples/get_data.py [--data-dir DIR] [--only zh/sentiment.zip ...] [--list]

Each file is the original bytes of a file in a public GitHub repository (the table SOURCES.md gives,
printed by --list with its license). It is fetched from raw.githubusercontent.com, written to a
temporary file beside its destination and renamed into place only when its checksum matches, so an
interrupted or corrupted download never leaves a file the examples would read. Files already there
with the right checksum are skipped. Standard library only: nothing here imports TensorFlow.

The examples read the folder given by their --data-dir (default: $BERT4KERAS_DATA, else
<repo>/../shared/data), the same default as here.
"""

import argparse
import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_URL = "https://raw.githubusercontent.com"

# file in the data folder: (GitHub repository, path there, license, SHA-256 of the bytes the README's figures used)
FILES = {
    "en/sst2_train.tsv": ("forest-snow/alps", "data/SST-2/train.tsv", "MIT",
                          "920e317b2c52e12cd22db1da2c6708312bd7dc4f3712b9bbf1b50ee6c2c792ba"),
    "en/sst2_dev.tsv": ("forest-snow/alps", "data/SST-2/dev.tsv", "MIT",
                        "92353770071a2a889f75d000a38a9e541ea8f0a5499e50f040b17917a5cbf66f"),
    "en/sst2_test.tsv": ("forest-snow/alps", "data/SST-2/test.tsv", "MIT",
                         "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"),
    "en/conll2003_train.txt": ("kyzhouhzau/BERT-NER", "data/train.txt", "MIT",
                               "fc41b646fd7d5dd5618a7ded3af89b3a6f6a86e72582c2f5a8a55209954c994c"),
    "en/conll2003_dev.txt": ("kyzhouhzau/BERT-NER", "data/dev.txt", "MIT",
                             "01867a2b33ea7604589ea534ea075a196ce04e7cee9b384e05debbbaf55ff46d"),
    "en/conll2003_test.txt": ("kyzhouhzau/BERT-NER", "data/test.txt", "MIT",
                              "6eb99dced172ba24e83db081446a9443be19993171e75c211501ce398e668074"),
    "zh/sentiment.zip": ("bojone/bert4keras", "examples/datasets/sentiment.zip", "Apache-2.0",
                         "866256a80e4019e538d2681b5f4bf2f21be3c24139b4100ca266c2fca8be86c9"),
    "zh/people_daily_example.dev": ("zjy-ucas/ChineseNER", "data/example.dev", "none stated",
                                    "7d8e6fcd1745e6adcb99d90307d84c3a0f9f8ff5ee6fe62ca27646cb765fc38a"),
    "zh/people_daily_example.test": ("zjy-ucas/ChineseNER", "data/example.test", "none stated",
                                     "233299005f941a4b055e38aadcf3ee853e44bc1f88166078d3b52b26b77ea362"),
    "zh/lcqmc_dev.txt": ("IceFlameWorm/NLP_Datasets", "LCQMC/dev.txt", "none stated (research use)",
                         "d3cd41ed89b8f6196a76ebff2aa03d5ecf42edcd12942aa865d34f7e570af7c2"),
    "zh/lcqmc_test.txt": ("IceFlameWorm/NLP_Datasets", "LCQMC/test.txt", "none stated (research use)",
                          "8969f9c16050f40df9da6f591443a47bc14c17a504a354ee4cc4ab5b9aa303d9"),
    "zh/csl_ts_dev.tsv": ("ydli-ai/CSL", "benchmark/ts/dev.tsv", "Apache-2.0",
                          "63fc67552bdad69b392e89295c8055e2c1b8d5e8acf6fec614738056451ccb45"),
    "zh/csl_ts_test.tsv": ("ydli-ai/CSL", "benchmark/ts/test.tsv", "Apache-2.0",
                           "51900a71a26193525e98fa4e65c0e78ea4ca0b84cd1f0da0de0690ffdb85791d"),
    "vocab/chinese_bert_vocab.txt": ("CLUEbenchmark/CLUENER2020", "tf_version/vocab.txt", "none stated",
                                     "45bbac6b341c319adc98a532532882e91a9cefc0329aa57bac9ae761c27b291c"),
    "vocab/bert_base_uncased_vocab.txt": ("pytorch/text", "test/torchtext_unittest/asset/bert_base_uncased_vocab.txt",
                                          "BSD-3-Clause",
                                          "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3"),
    "vocab/bert_base_cased_vocab.txt": ("pytorch/text", "test/torchtext_unittest/asset/bert_base_cased_vocab.txt",
                                        "BSD-3-Clause",
                                        "eeaa9875b23b04b4c54ef759d03db9d1ba1554838f8fb26c5d96fa551df93d02"),
    "spm/sp_test_model.model": ("google/sentencepiece", "python/test/test_model.model", "Apache-2.0",
                                "4884d27bf50494e080aa99dbb868f27b68b6a3b6bd128da37ad6057c5e3cf5a2"),
    "spm/t5_tokenizer_base.model": ("pytorch/text", "test/torchtext_unittest/asset/t5_tokenizer_base.model",
                                    "BSD-3-Clause",
                                    "d60acb128cf7b7f2536e8f38a5b18a05535c9e14c7a355904270e15b0945ea86"),
    "spm/cpm_chinese_vocab.model": ("TsinghuaAI/CPM-1-Generate", "bpe_3w_new/chinese_vocab.model", "MIT",
                                    "25c1d178d54901291c1735cd2ae0788be90df4de01fb445e8a8a998cab35ba43"),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("BERT4KERAS_DATA", os.path.join(REPO, "..", "shared", "data")),
                   help="where to put the files (default: $BERT4KERAS_DATA or <repo>/../shared/data)")
    p.add_argument("--only", nargs="+", metavar="FILE", choices=sorted(FILES),
                   help="download only these files (default: all); --list shows the names")
    p.add_argument("--list", action="store_true", help="print each file's origin and license, download nothing")
    p.add_argument("--base-url", default=BASE_URL,
                   help="where <repository>/HEAD/<path> is fetched from (default: %(default)s; a mirror or a test server)")
    p.add_argument("--timeout", type=float, default=60, help="seconds to wait for a server answer")
    return p.parse_args(argv)


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url, destination, expected, timeout):
    """Download `url` to `destination` through a temporary file renamed only when the SHA-256 matches.

    Returns None, or a message saying what went wrong (nothing is then written)."""
    folder = os.path.dirname(destination)
    os.makedirs(folder, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=folder, prefix=".partial-")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != expected:
            return f"checksum mismatch for {url}: got sha256 {digest.hexdigest()}, expected {expected}"
        os.replace(partial, destination)
        return None
    except (urllib.error.URLError, OSError) as e:
        return f"could not download {url}: {e}"
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def main(argv=None):
    args = parse_args(argv)
    names = args.only or sorted(FILES)
    if args.list:
        for name in names:
            repo, path, license_, _ = FILES[name]
            print(f"{name}\t{repo}: {path}\t{license_}")
        return 0
    failures = 0
    for name in names:
        repo, path, _, expected = FILES[name]
        destination = os.path.join(args.data_dir, *name.split("/"))
        if os.path.isfile(destination) and sha256(destination) == expected:
            print(f"{name}: already there")
            continue
        url = f"{args.base_url.rstrip('/')}/{repo}/HEAD/{path}"
        error = fetch(url, destination, expected, args.timeout)
        if error:
            failures += 1
            print(f"{name}: {error}", file=sys.stderr)
        else:
            print(f"{name}: downloaded from {url}")
    where = os.path.abspath(args.data_dir)
    if failures:
        print(f"{failures} of {len(names)} files failed; nothing was written for them in {where}", file=sys.stderr)
        return 1
    print(f"{len(names)} files in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
