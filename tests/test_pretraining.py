"""pretraining/: the data pipeline's masking on real text, and the pretraining script end to end
(mirrored == one device, a SIGKILLed run resumed == an uninterrupted run, export loadable by
`build_transformer_model`).

The pipeline tests are backend-independent (tf.data) and run under KERAS_BACKEND=tensorflow only;
the script runs on the current backend (jax-dp under jax); torch has no multi-device strategy.
"""

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from conftest import REPO, data_path, kill_after_first_backup

pytestmark = pytest.mark.slow  # runs pretraining/pretraining.py in subprocesses: deselect with -m 'not slow'

sys.path.insert(0, os.path.join(REPO, "pretraining"))
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")
tf_only = pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.data pipeline: backend-independent, run once")


@pytest.fixture(scope="module")
def zh_texts():
    with zipfile.ZipFile(data_path("zh", "sentiment.zip")) as z:
        lines = z.read("sentiment/sentiment.train.data").decode("utf-8").splitlines()
    return [line.rsplit("\t", 1)[0] for line in lines[:400]]


@pytest.fixture(scope="module")
def zh_tokenizer():
    from bert4keras.tokenizers import Tokenizer, load_vocab

    token_dict, _ = load_vocab(data_path("vocab", "chinese_bert_vocab.txt"), simplified=True,
                               startswith=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    return Tokenizer(token_dict, do_lower_case=True)


@pytest.fixture(scope="module")
def roberta_records(zh_texts, zh_tokenizer, tmp_path_factory):
    import jieba

    import data_utils

    jieba.setLogLevel(60)
    dataset = data_utils.TrainingDatasetRoBERTa(zh_tokenizer, word_segment=jieba.lcut, sequence_length=64)
    path = str(tmp_path_factory.mktemp("records") / "roberta.tfrecord")
    count = dataset.process(zh_texts, path, workers=2, verbose=False)
    return dataset, path, count


def batches(dataset, path, n, **kwargs):
    out = []
    for (inputs, segments), labels, weights in dataset.load_tfrecord(path, 32, **kwargs).take(n):
        out.append((inputs.numpy(), segments.numpy(), labels.numpy(), weights.numpy()))
    return out


@tf_only
def test_records_hold_every_token_once_with_words_from_the_segmenter(roberta_records, zh_texts, zh_tokenizer):
    import tensorflow as tf

    dataset, path, count = roberta_records
    rows = [dataset.parse(r) for r in tf.data.TFRecordDataset(path)]
    assert len(rows) == count > len(zh_texts) // 2
    token_ids = np.stack([r["token_ids"].numpy() for r in rows])
    word_ids = np.stack([r["word_ids"].numpy() for r in rows])
    assert token_ids.shape == (count, 64)
    assert (token_ids[:, 0] == zh_tokenizer.token_to_id("[CLS]")).all()
    # Text tokens (neither special nor padding) are exactly the ones with a word number.
    special = np.isin(token_ids, [0, dataset.token_cls_id, dataset.token_sep_id])
    np.testing.assert_array_equal(word_ids > 0, ~special)
    # The records' text tokens are the documents' tokens, in order (nothing lost in packing).
    written = [t for row in token_ids for t in row if t not in (0, dataset.token_cls_id, dataset.token_sep_id)]
    expected = [t for text in zh_texts for t in zh_tokenizer.encode(text)[0][1:-1]]
    assert len(written) >= 0.97 * len(expected)  # only sentences longer than an instance are cut
    # jieba makes multi-character words: a good share of tokens share their word with another.
    multi = sum(np.sum(np.bincount(row[row > 0])[1:] > 1) for row in word_ids)
    assert multi > 0.2 * word_ids.max(axis=1).sum()


@tf_only
def test_dynamic_whole_word_masking_statistics(roberta_records):
    dataset, path, _ = roberta_records
    chosen_n = maskable_n = masked_n = random_n = kept_n = 0
    for (inputs, segments), labels, weights in dataset.load_tfrecord(path, 64, seed=3).take(40):
        inputs, labels, weights = inputs.numpy(), labels.numpy(), weights.numpy()
        chosen = weights > 0
        np.testing.assert_allclose(weights[chosen], 1 / dataset.mask_rate)
        np.testing.assert_array_equal(inputs[~chosen], labels[~chosen])  # only chosen tokens change
        assert (segments.numpy() == 0).all()
        maskable = ~np.isin(labels, [0, dataset.token_cls_id, dataset.token_sep_id])
        assert not (chosen & ~maskable).any(), "special tokens or padding were chosen"
        chosen_n += chosen.sum()
        maskable_n += maskable.sum()
        masked_n += (inputs[chosen] == dataset.token_mask_id).sum()
        kept_n += (inputs[chosen] == labels[chosen]).sum()
        random_n += ((inputs[chosen] != labels[chosen]) & (inputs[chosen] != dataset.token_mask_id)).sum()
    assert maskable_n > 100_000
    # Words are chosen with p = 0.15, so tokens are too (in expectation): 0.15 +- 0.01.
    assert abs(chosen_n / maskable_n - 0.15) < 0.01, chosen_n / maskable_n
    assert abs(masked_n / chosen_n - 0.8) < 0.015
    assert abs(random_n / chosen_n - 0.1) < 0.015
    assert abs(kept_n / chosen_n - 0.1) < 0.015


@tf_only
def test_masks_cover_whole_words(roberta_records):
    import tensorflow as tf

    dataset, path, _ = roberta_records
    word_ids = np.stack([dataset.parse(r)["word_ids"].numpy() for r in tf.data.TFRecordDataset(path)])
    split_words = 0
    # Without shuffling, batches follow the file order.
    for start, ((inputs, _), labels, weights) in enumerate(
            dataset.load_tfrecord(path, 32, shuffle_buffer=0, repeat=False)):
        chosen = weights.numpy() > 0
        words = word_ids[start * 32:(start + 1) * 32]
        for row_chosen, row_words in zip(chosen, words):
            for w in np.unique(row_words[row_words > 0]):
                flags = row_chosen[row_words == w]
                split_words += flags.any() and not flags.all()
    assert split_words == 0


@tf_only
def test_stream_is_reproducible_dynamic_and_skippable(roberta_records):
    dataset, path, count = roberta_records
    first = batches(dataset, path, 6, seed=5)
    again = batches(dataset, path, 6, seed=5)
    for a, b in zip(first, again):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    resumed = batches(dataset, path, 2, seed=5, skip_batches=4)
    for a, b in zip(first[4:], resumed):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    # Dynamic masking: the same instances are masked differently on the next pass.
    stream = batches(dataset, path, 1, seed=5, shuffle_buffer=0)
    # The second pass starts `count` instances into the stream.
    second = dataset.load_tfrecord(path, 32, seed=5, shuffle_buffer=0).unbatch().skip(count).batch(32)
    (_, _), labels, weights = next(iter(second))
    np.testing.assert_array_equal(labels.numpy(), stream[0][2])  # same instances
    assert not np.array_equal(weights.numpy(), stream[0][3])  # other masks


@tf_only
@pytest.mark.parametrize("name", ["gpt", "unilm"])
def test_lm_labels_are_the_next_tokens(name, zh_texts, zh_tokenizer, tmp_path):
    import data_utils

    dataset = data_utils.DATASETS[name](zh_tokenizer, sequence_length=48)
    path = str(tmp_path / f"{name}.tfrecord")
    dataset.process(zh_texts[:60], path, workers=1, verbose=False)
    inputs, segments, labels, weights = batches(dataset, path, 1, shuffle_buffer=0)[0]
    np.testing.assert_array_equal(labels[:, :-1], inputs[:, 1:])
    assert (labels[:, -1] == 0).all()
    if name == "gpt":
        np.testing.assert_array_equal(weights, labels != 0)
        assert (segments == 0).all()
    else:
        # UniLM: [CLS] source [SEP] target [SEP]; the targets (segment 1) are predicted.
        np.testing.assert_array_equal(weights[:, :-1], segments[:, 1:])
        for row_inputs, row_segments in zip(inputs, segments):
            target = row_inputs[row_segments == 1]
            assert len(target) >= 1 and target[-1] == dataset.token_sep_id
            source = row_inputs[(row_segments == 0) & (row_inputs != 0)]
            assert source[0] == dataset.token_cls_id and source[-1] == dataset.token_sep_id


# -- the script ---------------------------------------------------------------------------------

SCRIPT = os.path.join(REPO, "pretraining", "pretraining.py")
TINY = ["--corpus-size", "200", "--sequence-length", "32", "--batch-size", "8", "--num-hidden-layers", "2",
        "--hidden-size", "32", "--num-attention-heads", "2", "--intermediate-size", "64", "--workers", "1",
        "--seed", "3", "--verbose", "0"]


def script(work_dir, *args):
    return [sys.executable, SCRIPT, "--work-dir", str(work_dir), *TINY, *args]


def environment():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=BACKEND)


def run(work_dir, *args):
    result = subprocess.run(script(work_dir, *args), env=environment(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"pretraining failed ({args}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def exported(work_dir):
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(work_dir, "bert_model.ckpt"))
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def assert_same_weights(a, b, atol):
    assert sorted(a) == sorted(b) and len(a) > 20
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=0, atol=atol, err_msg=name)


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
    """Four updates on one device, dropout off (replicas would draw other masks)."""
    work_dir = tmp_path_factory.mktemp("one_device")
    run(work_dir, "--steps", "4", "--backup-steps", "2", "--dropout-rate", "0")
    return work_dir


@pytest.mark.skipif(BACKEND == "torch", reason="no multi-device strategy on torch")
def test_two_devices_train_like_one(one_device_run, tmp_path):
    strategy = "jax-dp" if BACKEND == "jax" else "mirrored"
    out = run(tmp_path, "--steps", "4", "--backup-steps", "2", "--dropout-rate", "0",
              "--strategy", strategy, "--cpu-devices", "2")
    assert "over 2 replica(s)" in out
    one, two = exported(one_device_run), exported(tmp_path)
    assert_same_weights(one, two, atol=1e-5)


@pytest.mark.skipif(BACKEND == "torch", reason="no multi-device strategy on torch")
def test_export_loads_as_a_bert_checkpoint(one_device_run):
    import keras

    from bert4keras.models import build_transformer_model

    config, checkpoint = os.path.join(one_device_run, "bert_config.json"), os.path.join(one_device_run, "bert_model.ckpt")
    builder = build_transformer_model(config, checkpoint, with_pool=True, with_mlm=True, return_keras_model=False)
    weights = exported(one_device_run)
    loaded = keras.ops.convert_to_numpy(builder.layers["Embedding-Token"].weights[0])
    np.testing.assert_array_equal(loaded, weights["bert/embeddings/word_embeddings"])


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute")
def test_two_workers_train_like_one_device(one_device_run, tmp_path):
    """--strategy multiworker: two processes on 127.0.0.1 (TF_CONFIG), the chief exports."""
    import json

    from test_distributed import free_ports

    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    procs = []
    try:
        for index in range(2):
            tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
            command = script(tmp_path / f"worker{index}", "--steps", "4", "--backup-steps", "2", "--dropout-rate", "0",
                             "--strategy", "multiworker", "--records", str(one_device_run / "records" / "*.tfrecord"))
            procs.append(subprocess.Popen(command, env=dict(environment(), TF_CONFIG=tf_config),
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        outputs = [proc.communicate(timeout=240)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    assert "over 2 replica(s)" in outputs[0]
    assert not os.path.exists(tmp_path / "worker1" / "bert_model.ckpt.index"), "only the chief exports"
    assert_same_weights(exported(one_device_run), exported(tmp_path / "worker0"), atol=1e-5)


def test_killed_pretraining_resumes_to_the_same_weights(tmp_path):
    """SIGKILL just after the first backup, the same command again: the weights equal an uninterrupted run's."""
    steps = ["--steps", "20", "--backup-steps", "2"]  # 18 updates left after the first backup: killed mid-run
    run(tmp_path / "a", *steps)
    assert not os.path.exists(tmp_path / "a" / "backup"), "a finished run removes its backup"

    work_dir = tmp_path / "b"
    kill_after_first_backup(script(work_dir, *steps), environment(), work_dir / "backup" / "seeds-2.npz")
    assert not os.path.exists(work_dir / "bert_model.ckpt.index"), "killed too late: the run had finished"

    out = run(work_dir, *steps)
    assert "resumed from" in out, out[-2000:]
    assert_same_weights(exported(tmp_path / "a"), exported(work_dir), atol=1e-6)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the formats once; roberta's script tests run on every backend")
@pytest.mark.parametrize("model", ["gpt", "unilm"])
def test_lm_pretraining_exports_a_loadable_checkpoint(model, tmp_path):
    import keras

    from bert4keras.models import build_transformer_model

    out = run(tmp_path, "--model", model, "--steps", "2", "--backup-steps", "1")
    assert "after 2 updates" in out
    config, checkpoint = tmp_path / "bert_config.json", tmp_path / "bert_model.ckpt"
    if model == "gpt":
        builder = build_transformer_model(str(config), str(checkpoint), model="gpt", return_keras_model=False)
    else:
        builder = build_transformer_model(str(config), str(checkpoint), application="unilm", with_pool=True,
                                          return_keras_model=False)
    weights = exported(tmp_path)
    name = next(n for n in weights if n.endswith("embeddings/word_embeddings"))
    loaded = keras.ops.convert_to_numpy(builder.layers["Embedding-Token"].weights[0])
    np.testing.assert_array_equal(loaded, weights[name])
