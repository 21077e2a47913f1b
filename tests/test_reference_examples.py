"""bert4keras 0.11.5's own example scripts run here unchanged.

The 32 scripts are read in place from ``../shared/reference/bert4keras-0.11.5-examples/`` (never
copied into the project). Each is run as ``python script.py`` in a subprocess on the current
backend, after the substitutions listed in `SUBSTITUTIONS` (file paths, sizes, epochs, and the file
names Keras 3 requires: ``*.weights.h5``, ``*.keras``), against stand-ins made by this module:
tiny random checkpoints in each script's official format (Google BERT/ALBERT, bert4keras's CPM-LM
names, GPT2-ML's ``newslm`` names, Mesh-TF mT5) over the real vocabularies of ``../shared/data``,
and a few dozen examples of data in each script's own file format, cut from the real data sets
there. The four scripts built on Keras 2 graph internals (`PORTED`) run after the line changes
of the README's "Porting from bert4keras 0.11" and nothing else.
"""

import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile

import keras
import numpy as np
import pytest

from conftest import REPO, data_path

pytestmark = pytest.mark.slow  # runs bert4keras 0.11.5's example scripts in subprocesses: deselect with -m 'not slow'

REFERENCE = pathlib.Path(
    os.environ.get("BERT4KERAS_REFERENCE") or REPO.parent / "shared" / "reference" / "bert4keras-0.11.5-examples"
)
BACKEND = keras.backend.backend()
TIMEOUT = 900

if not REFERENCE.is_dir():
    pytest.skip(f"bert4keras 0.11.5's examples not found at {REFERENCE} (set BERT4KERAS_REFERENCE)",
                allow_module_level=True)

# -- substitutions ------------------------------------------------------------------------------
# Applied to every script: absolute data/checkpoint paths point into the stand-in tree, which
# mirrors /root/; the relative datasets/ too; Keras 3 saves weights only to *.weights.h5 files
# and models only to *.keras files.
COMMON = [
    (re.compile(r"(['\"])/root/"), r"\1{assets}/"),
    (re.compile(r"(['\"])datasets/"), r"\1{assets}/datasets/"),
    (re.compile(r"(\.weights)(['\"])"), r"\1.h5\2"),
    (re.compile(r"'test\.model'"), "'test.keras'"),
]

# Per script: (text, replacement) pairs; each text must occur in the script.
SUBSTITUTIONS = {
    "basic_extract_features.py": [],
    "basic_gibbs_sampling_via_mlm.py": [("steps = 10000", "steps = 20"), ("converged_steps = 1000", "converged_steps = 10")],
    "basic_language_model_cpm_lm.py": [("maxlen=16,", "maxlen=4,")],
    "basic_language_model_gpt2_ml.py": [("maxlen=256,", "maxlen=12,"), ("minlen=128", "minlen=6")],
    "basic_language_model_nezha_gen_gpt.py": [("maxlen=256,", "maxlen=12,"), ("minlen=128", "minlen=6")],
    "basic_make_uncased_model_cased.py": [],
    "basic_masked_language_model.py": [],
    "basic_simple_web_serving_simbert.py": [("port=8864", "port={port}")],
    "task_conditional_language_model.py": [("maxlen = 128", "maxlen = 16"), ("epochs = 20", "epochs = 1")],
    "task_iflytek_adversarial_training.py": [("num_classes = 119", "num_classes = 2"), ("epochs=50", "epochs=1")],
    "task_iflytek_bert_of_theseus.py": [("num_classes = 119", "num_classes = 2"), ("num_hidden_layers=3", "num_hidden_layers=1"), ("epochs=5", "epochs=1"),
                                        ("epochs=10", "epochs=1")],
    "task_iflytek_gradient_penalty.py": [("num_classes = 119", "num_classes = 2"), ("epochs=50", "epochs=1")],
    "task_iflytek_multigpu.py": [("num_classes = 119", "num_classes = 2"), ("epochs=10", "epochs=1")],
    "task_image_caption.py": [("maxlen = 64", "maxlen = 12"), ("steps_per_epoch = 1000", "steps_per_epoch = 2"),
                              ("epochs = 10000", "epochs = 1"), ("img_size = 299", "img_size = 32"),
                              # offline: no ImageNet weights to download
                              ("MobileNetV2(include_top=False, pooling='avg')",
                               "MobileNetV2(include_top=False, pooling='avg', weights=None)")],
    "task_language_model.py": [("maxlen = 256", "maxlen = 16"), ("steps_per_epoch = 1000", "steps_per_epoch = 2"),
                               ("epochs = 10000", "epochs = 1")],
    "task_language_model_chinese_chess.py": [("maxlen = 512", "maxlen = 64"), ("steps_per_epoch = 1000", "steps_per_epoch = 2"),
                                             ("epochs = 10000", "epochs = 1")],
    "task_question_answer_generation_by_seq2seq.py": [("epochs = 100", "epochs = 1"), ("steps_per_epoch=1000", "steps_per_epoch=2")],
    "task_reading_comprehension_by_mlm.py": [("max_p_len = 256", "max_p_len = 64"), ("epochs = 10", "epochs = 1")],
    "task_reading_comprehension_by_seq2seq.py": [("max_p_len = 256", "max_p_len = 64"), ("epochs = 8", "epochs = 1")],
    "task_relation_extraction.py": [("epochs=20", "epochs=1")],
    "task_relation_extraction_gplinker.py": [("epochs=20", "epochs=1")],
    "task_sentence_similarity_lcqmc.py": [("epochs=20", "epochs=1")],
    "task_sentiment_albert.py": [("epochs=10", "epochs=1")],
    "task_sentiment_integrated_gradients.py": [],
    "task_sentiment_virtual_adversarial_training.py": [("train_frac = 0.01", "train_frac = 0.25"),
                                                       ("steps_per_epoch=30", "steps_per_epoch=2"), ("epochs=100", "epochs=1")],
    "task_seq2seq_ape210k_math_word_problem.py": [("epochs = 100", "epochs = 1"), ("maxlen=64)", "maxlen=8)")],
    "task_seq2seq_autotitle.py": [("maxlen = 256", "maxlen = 48"), ("steps_per_epoch = 1000", "steps_per_epoch = 2"),
                                  ("epochs = 10000", "epochs = 1"), ("maxlen=32)", "maxlen=8)")],
    "task_seq2seq_autotitle_csl.py": [("maxlen = 256", "maxlen = 64"), ("epochs = 20", "epochs = 1"),
                                      ("maxlen=32)", "maxlen=8)")],
    "task_seq2seq_autotitle_csl_mt5.py": [("max_c_len = 256", "max_c_len = 64"), ("max_t_len = 32", "max_t_len = 8"),
                                          ("epochs = 40", "epochs = 1")],
    "task_seq2seq_autotitle_multigpu.py": [("maxlen = 256", "maxlen = 48"), ("steps_per_epoch = 1000", "steps_per_epoch = 2"),
                                           ("epochs = 10000", "epochs = 1"), ("maxlen=32)", "maxlen=8)")],
    "task_sequence_labeling_cws_crf.py": [("maxlen = 256", "maxlen = 64"), ("epochs = 10", "epochs = 1"),
                                          ("bert_layers = 12", "bert_layers = 2")],
    "task_sequence_labeling_ner_crf.py": [("maxlen = 256", "maxlen = 64"), ("epochs = 10", "epochs = 1"),
                                          ("bert_layers = 12", "bert_layers = 2")],
}

# Scripts built on Keras 2 graph internals (K.gradients, model._make_train_function, K.function):
# no Keras 3 library can run them unchanged. They run after the README's porting changes, one
# (text or pattern, replacement) pair per row of its table "Porting from bert4keras 0.11".
_M = re.S | re.M
PORTED = {
    "task_iflytek_adversarial_training.py": [
        (re.compile(r"^def adversarial_training\(model, embedding_name.*?^    model\.train_function = train_function.*?\n", _M), ""),
        (re.compile(r"^adversarial_training\(model, ", re.M),
         "from bert4keras.adversarial import adversarial_training\nmodel = adversarial_training(model, "),
    ],
    "task_iflytek_gradient_penalty.py": [
        (re.compile(r"^def loss_with_gradient_penalty\(.*?^    return loss \+ 0\.5 \* epsilon \* gp\n", _M), ""),
        ("loss=loss_with_gradient_penalty,", "loss=sparse_categorical_crossentropy,"),
        ("\n\n\ndef evaluate(data):", "\nfrom bert4keras.adversarial import gradient_penalty\n"
                                       "model = gradient_penalty(model, 'Embedding-Token', epsilon=1)\n\n\ndef evaluate(data):"),
    ],
    "task_sentiment_virtual_adversarial_training.py": [
        (re.compile(r"^def virtual_adversarial_training\(.*?^    model\.train_function = train_function.*?\n", _M), ""),
        (re.compile(r"^virtual_adversarial_training\(model_vat, ", re.M),
         "from bert4keras.adversarial import virtual_adversarial_training\n"
         "model_vat = virtual_adversarial_training(model_vat, "),
        ("            model_vat.train_on_batch(dx, dy)",
         "            self.model  # JAX: fit's weights back into the variables it shares with model_vat\n"
         "            model_vat.train_on_batch(dx, dy)"),
    ],
    "task_sentiment_integrated_gradients.py": [
        (re.compile(r"^class Gradient\(Layer\):.*?^values = K\.eval\(embeddings\)\n", _M),
         "from bert4keras.adversarial import integrated_gradients\n"),
        ("model.predict([[token_ids], [segment_ids]])", "model.predict([np.array([token_ids]), np.array([segment_ids])])"),
        (re.compile(r"^pred_grads = \[\]\n.*?^pred_grads = np\.mean\(pred_grads, 0\)\n", _M),
         "n = 20\npred_grads = integrated_gradients(model, [np.array([token_ids]), np.array([segment_ids])], "
         "class_index=label, steps=n)[0]\n"),
    ],
}

# On JAX a layer cannot draw unseeded random numbers inside a compiled step (Keras 3 needs a
# SeedGenerator in the layer): the README's porting row for BERT-of-Theseus's BinaryRandomChoice.
JAX_PORTED = {
    "task_iflytek_bert_of_theseus.py": [
        ("        self.supports_masking = True\n",
         "        self.supports_masking = True\n        self.seed_generator = keras.random.SeedGenerator()\n"),
        ("K.random_binomial(shape=[1], p=0.5)", "K.random_binomial(shape=[1], p=0.5, seed=self.seed_generator)"),
    ],
}

# What each script must print (regular expressions over stdout), beyond exiting with 0.
EXPECT = {
    "basic_extract_features.py": [r"===== reloading and predicting =====", r"\[\[\["],
    "basic_gibbs_sampling_via_mlm.py": [r"部分随机采样结果"],
    "basic_make_uncased_model_cased.py": [r"'Welcome', 'to', 'BE'"],
    "task_iflytek_bert_of_theseus.py": [r"val_acc: .*best_val_acc"],
    "task_iflytek_multigpu.py": [r"val_acc: .*best_val_acc"],
    "task_relation_extraction.py": [r"f1: .*best f1"],
    "task_relation_extraction_gplinker.py": [r"f1: .*best f1"],
    "task_sentence_similarity_lcqmc.py": [r"final test acc"],
    "task_sentiment_albert.py": [r"final test acc"],
    "task_seq2seq_ape210k_math_word_problem.py": [r"valid_data: \{'acc'"],
    "task_seq2seq_autotitle_csl.py": [r"valid_data: .*'bleu'"],
    "task_seq2seq_autotitle_csl_mt5.py": [r"valid_data: .*'bleu'"],
    "task_sequence_labeling_cws_crf.py": [r"acc: .*best acc"],
    "task_sequence_labeling_ner_crf.py": [r"test:  f1"],
}


def test_every_reference_script_is_covered():
    scripts = sorted(p.name for p in REFERENCE.glob("*.py"))
    assert len(scripts) == 32, scripts
    assert sorted(SUBSTITUTIONS) == scripts


# -- stand-in checkpoints -------------------------------------------------------------------------

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2,
            hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, initializer_range=0.02)


def _vocab_size(path):
    with open(path, encoding="utf-8") as f:
        return sum(1 for _ in f)


def _write_checkpoint(prefix, config, model, **build_kwargs):
    """A random model built from ``config`` (bert4keras argument names) and saved under the
    family's official variable names: the stand-in of a released checkpoint."""
    from bert4keras.models import build_transformer_model

    keras.utils.set_random_seed(0)
    # from a config file, as the scripts read it: keys a family has no use for (ALBERT's
    # num_hidden_groups, ...) are ignored there, whereas typed keywords must all be used
    with tempfile.TemporaryDirectory() as tmp:
        config_path = os.path.join(tmp, "config.json")
        with open(config_path, "w", encoding="utf-8") as f:
            json.dump(config, f)
        builder = build_transformer_model(config_path, None, model=model, return_keras_model=False, **build_kwargs)
    builder.save_weights_as_checkpoint(str(prefix))


def _bert_config(vocab_size):
    return dict(TINY, vocab_size=vocab_size)


def _as_kwargs(config):
    """A Google-style config as build_transformer_model keyword arguments."""
    renames = {"max_position_embeddings": "max_position", "type_vocab_size": "segment_vocab_size",
               "hidden_dropout_prob": "dropout_rate", "attention_probs_dropout_prob": "attention_dropout_rate"}
    return {renames.get(k, k): v for k, v in config.items()}


def _link(target, link):
    link = pathlib.Path(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


def _bert_dir(root, name, ckpt, vocab, config, config_name="bert_config.json", ckpt_name="bert_model.ckpt",
              vocab_name="vocab.txt"):
    """``root/kg/bert/<name>/`` with the config, links to the checkpoint files and the vocab."""
    d = root / "kg" / "bert" / name
    d.mkdir(parents=True, exist_ok=True)
    (d / config_name).write_text(json.dumps(config), encoding="utf-8")
    for f in ckpt.parent.glob(ckpt.name + ".*"):
        _link(f, d / (ckpt_name + f.name[len(ckpt.name):]))
    if vocab is not None:
        _link(vocab, d / vocab_name)
    return d


def make_checkpoints(root):
    zh_vocab = data_path("vocab", "chinese_bert_vocab.txt")
    en_vocab = data_path("vocab", "bert_base_uncased_vocab.txt")
    cpm_spm = data_path("spm", "cpm_chinese_vocab.model")
    ckpts = root / "ckpts"
    ckpts.mkdir()

    zh = _bert_config(_vocab_size(zh_vocab))
    _write_checkpoint(ckpts / "bert_zh" / "bert_model.ckpt", _as_kwargs(zh), "bert",
                      with_pool=True, with_nsp=True, with_mlm=True)
    for name in ("chinese_L-12_H-768_A-12", "chinese_wwm_L-12_H-768_A-12", "chinese_roberta_wwm_ext_L-12_H-768_A-12",
                 "chinese_simbert_L-12_H-768_A-12", "uer/mixed_corpus_bert_base_model"):
        _bert_dir(root, name, ckpts / "bert_zh" / "bert_model.ckpt", zh_vocab, zh)
    # NEZHA-Gen GPT (huawei-noah): BERT's names and config, loaded as a BERT lm
    _bert_dir(root, "chinese_nezha_gpt_L-12_H-768_A-12", ckpts / "bert_zh" / "bert_model.ckpt", zh_vocab, zh,
              config_name="config.json", ckpt_name="gpt.ckpt")

    en = _bert_config(_vocab_size(en_vocab))
    _write_checkpoint(ckpts / "bert_en" / "bert_model.ckpt", _as_kwargs(en), "bert", with_pool=True, with_mlm=True)
    _bert_dir(root, "uncased_L-12_H-768_A-12", ckpts / "bert_en" / "bert_model.ckpt", en_vocab, en)

    # google-research/albert's config keys
    albert = dict(zh, embedding_size=16, num_hidden_groups=1, inner_group_num=1, net_structure_type=0,
                  gap_size=0, num_memory_blocks=0, down_scale_factor=1)
    _write_checkpoint(ckpts / "albert" / "albert_model.ckpt", _as_kwargs(albert), "albert", with_pool=True, with_mlm=True)
    _bert_dir(root, "albert_small_zh_google", ckpts / "albert" / "albert_model.ckpt", zh_vocab, albert,
              config_name="albert_config.json", ckpt_name="albert_model.ckpt")

    # CPM-LM as converted for bert4keras: BERT-style config, GPT-2 blocks under gpt/ names
    cpm = dict(TINY, vocab_size=30000)
    cpm.pop("type_vocab_size")
    _write_checkpoint(ckpts / "cpm" / "model.ckpt", _as_kwargs(cpm), "gpt2")
    _bert_dir(root, "CPM_LM_2.6B_TF", ckpts / "cpm" / "model.ckpt", cpm_spm, cpm,
              config_name="config.json", ckpt_name="model.ckpt", vocab_name="chinese_vocab.model")

    # GPT2-ML (imcaspar/gpt2-ml): its config.json, newslm/ names
    gpt2_ml = dict(TINY, vocab_size=_vocab_size(zh_vocab))
    gpt2_ml.pop("type_vocab_size")
    _write_checkpoint(ckpts / "gpt2_ml" / "model.ckpt", _as_kwargs(gpt2_ml), "gpt2_ml")
    _bert_dir(root, "gpt2_ml", ckpts / "gpt2_ml" / "model.ckpt", zh_vocab, gpt2_ml,
              config_name="config.json", ckpt_name="model.ckpt-100000")

    # mT5 base as in bojone/t5_in_bert4keras: its config format, Mesh-TF names; the Chinese
    # SentencePiece model and the keep_tokens list that maps it into mT5's vocabulary
    mt5 = {"hidden_act": ["gelu", "linear"], "hidden_size": 32, "embedding_size": 32, "num_hidden_layers": 2,
           "vocab_size": 30000, "num_attention_heads": 2, "attention_head_size": 16, "intermediate_size": 64,
           "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "layer_norm_epsilon": 1e-6}
    _write_checkpoint(ckpts / "mt5" / "model.ckpt", _as_kwargs(mt5), "mt5.1.1")
    _bert_dir(root, "mt5/mt5_base", ckpts / "mt5" / "model.ckpt", None, mt5,
              config_name="mt5_base_config.json", ckpt_name="model.ckpt-1000000")
    _link(cpm_spm, root / "kg" / "bert" / "mt5" / "sentencepiece_cn.model")
    (root / "kg" / "bert" / "mt5" / "sentencepiece_cn_keep_tokens.json").write_text(json.dumps(list(range(30000))))


# -- stand-in data ----------------------------------------------------------------------------------


def _sentiment(split, n):
    with zipfile.ZipFile(data_path("zh", "sentiment.zip")) as z:
        lines = z.read(f"sentiment/sentiment.{split}.data").decode("utf-8").splitlines()
    rows = [line.split("\t") for line in lines if line.count("\t") == 1]
    return [(text, int(label)) for text, label in rows[:n] if text.strip()]


def _csl(split, n):
    """(title, abstract) pairs of the CSL title-generation set."""
    with open(data_path("zh", f"csl_ts_{split}.tsv"), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    return [(r[2], r[1]) for r in rows[:n]]


def _write(path, text, encoding="utf-8"):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)


def _json_lines(path, rows):
    _write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def make_data(root):
    rng = np.random.default_rng(0)
    train, valid, test = _sentiment("train", 48), _sentiment("valid", 24), _sentiment("test", 24)
    # bert4keras's sentiment and LCQMC sets, as the scripts' relative datasets/ paths
    for split, rows in (("train", train), ("valid", valid), ("test", test)):
        _write(root / "datasets" / "sentiment" / f"sentiment.{split}.data", "".join(f"{t}\t{l}\n" for t, l in rows))
    with open(data_path("zh", "lcqmc_dev.txt"), encoding="utf-8") as f:
        lcqmc = f.read().splitlines()
    for split, rows in (("train", lcqmc[:48]), ("valid", lcqmc[48:72]), ("test", lcqmc[72:96])):
        _write(root / "datasets" / "lcqmc" / f"lcqmc.{split}.data", "\n".join(rows) + "\n")
    # CLUE iflytek: JSON lines with sentence and label (119 classes)
    iflytek = root / "CLUE-master" / "baselines" / "CLUEdataset" / "iflytek"
    _json_lines(iflytek / "train.json", [{"label": str(l), "sentence": t} for t, l in train])
    _json_lines(iflytek / "dev.json", [{"label": str(l), "sentence": t} for t, l in valid])
    # WebQA / SogouQA: questions with passages, the answer a span of the passage
    qa = []
    for i, (text, _) in enumerate(train + valid):
        passage = text[:100]
        qa.append({"id": f"q{i}", "question": "这句话的开头是什么", "passages": [
            {"passage": passage, "answer": passage[:3]}, {"passage": valid[i % len(valid)][0][:100], "answer": ""}]})
    _write(root / "qa_datasets" / "WebQA.json", json.dumps(qa[:36], ensure_ascii=False))
    _write(root / "qa_datasets" / "SogouQA.json", json.dumps(qa[36:], ensure_ascii=False))
    # Baidu DuIE: text with subject-predicate-object triples that occur in it, and the schemas
    predicates = ["开头", "结尾"]
    _json_lines(root / "kg" / "datasets" / "all_50_schemas", [{"predicate": p, "subject_type": "词", "object_type": "词"}
                                                              for p in predicates])
    for name, rows in (("train_data.json", train), ("dev_data.json", valid)):
        _json_lines(root / "kg" / "datasets" / name, [
            # short texts: an untrained GPLinker finds about half of all n^4 (subject, object) pairs
            {"text": t[:16], "spo_list": [{"subject": t[:2], "predicate": predicates[l], "object": t[3:5]}]}
            for t, l in rows if len(t) >= 6])
    # ape210k: word problems with an equation and its answer
    problems = []
    for i in range(32):
        a, b = int(rng.integers(1, 50)), int(rng.integers(1, 50))
        problems.append({"id": str(i), "original_text": f"小明有{a}个苹果，又买了{b}个，一共有多少个？",
                         "equation": f"x={a}+{b}", "ans": str(a + b)})
    for split, rows in (("train", problems[:24]), ("valid", problems[24:28]), ("test", problems[28:])):
        _json_lines(root / "ape210k" / f"{split}.ape.json", rows)
    # THUCNews: one news text per file, its title on the first line
    for i, (title, abstract) in enumerate(_csl("dev", 40)):
        _write(root / "thuctc" / "THUCNews" / ("科技" if i % 2 else "教育") / f"{i}.txt", f"{title}\n{abstract}")
    # CSL as the scripts read it: title<TAB>abstract
    csl_train, csl_valid = _csl("test", 32), _csl("dev", 4)
    for split, rows in (("train", csl_train), ("val", csl_valid), ("test", csl_valid)):
        _write(root / "csl" / f"{split}.tsv", "".join(f"{t}\t{a}\n" for t, a in rows))
    # Jin Yong's novels: GBK text files, one folder per book, sentences ending with 。
    for book in range(2):
        chars = "".join(re.sub(r"[^\u4e00-\u9fff]", "", t) for t, _ in train[book::2])
        chars = chars.encode("gbk", "ignore").decode("gbk")
        text = "".join(chars[i:i + 9] + "。" for i in range(0, 600, 9))
        _write(root / "金庸" / f"book{book}" / "part1.txt", "\u3000\u3000" + text + "\r\n", encoding="gbk")
    # COCO captions: the annotation files and the images they name
    import cv2

    sst2 = open(data_path("en", "sst2_train.tsv"), encoding="utf-8").read().splitlines()[1:41]
    captions = [line.split("\t")[0].strip() for line in sst2]
    for split, count in (("train2014", 8), ("val2014", 4)):
        images, annotations = [], []
        for i in range(count):
            name = f"COCO_{split}_{i:012d}.jpg"
            images.append({"id": i, "file_name": name, "coco_url": f"http://images.cocodataset.org/{split}/{name}"})
            annotations += [{"image_id": i, "id": 10 * i + j, "caption": captions[(4 * i + j) % len(captions)]}
                            for j in range(2)]
            img = rng.integers(0, 256, size=(40 + 8 * (i % 3), 48, 3)).astype("uint8")
            (root / "caption" / "coco" / split).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "caption" / "coco" / split / name), img)
        _write(root / "caption" / "coco" / "annotations" / f"captions_{split}.json",
               json.dumps({"images": images, "annotations": annotations}))
    # Chinese chess games in ICCS notation (bojone/gpt_cchess's qipu.json)
    moves = ["h2e2", "h9g7", "h0g2", "i9h9", "i0h0", "b9c7", "b0c2", "a9b9", "c3c4", "g6g5"]
    _json_lines(root / "qipu.json", [{"fen": "", "iccs": "".join(moves[: 4 + i % 6]),
                                      "items": {"棋局结果": str(i % 3)}} for i in range(24)])
    # SIGHAN 2005 PKU word segmentation: space-separated words, one sentence a line
    import jieba

    jieba.setLogLevel(60)
    _write(root / "icwb2-data" / "training" / "pku_training.utf8",
           "".join("  ".join(w for w in jieba.lcut(t[:60]) if w.strip()) + "\n" for t, _ in train))
    # People's Daily NER: char TAG lines, sentences separated by a blank line
    with open(data_path("zh", "people_daily_example.dev"), encoding="utf-8") as f:
        sentences = [s for s in f.read().split("\n\n") if s.strip()]
    ner = root / "ner" / "china-people-daily-ner-corpus"
    for split, rows in (("train", sentences[:48]), ("dev", sentences[48:64]), ("test", sentences[64:80])):
        _write(ner / f"example.{split}", "\n\n".join(rows))


@pytest.fixture(scope="session")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("reference_assets")
    make_checkpoints(root)
    make_data(root)
    return root


# -- running a script ---------------------------------------------------------------------------------


def prepare(script, assets, workdir, **fields):
    """The script's source with every substitution applied, written to ``workdir``."""
    source = (REFERENCE / script).read_text(encoding="utf-8")
    values = {"assets": str(assets), **fields}
    for pattern, replacement in COMMON:
        source = pattern.sub(replacement.format(**values), source)
    ported = PORTED.get(script, []) + (JAX_PORTED.get(script, []) if BACKEND == "jax" else [])
    for text, replacement in SUBSTITUTIONS[script] + ported:
        replacement = replacement.format(**values)
        if isinstance(text, re.Pattern):
            source, count = text.subn(lambda _: replacement, source)
            assert count == 1, f"{script}: {text.pattern!r} matched {count} times"
        else:
            assert text in source, f"{script}: substitution target {text!r} not found"
            source = source.replace(text, replacement)
    path = workdir / script
    path.write_text(source, encoding="utf-8")
    return path


def environment():
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1",
               PYTHONHASHSEED="0", CUDA_VISIBLE_DEVICES="")
    env.pop("PYTHONPATH", None)
    return env


def run(path, timeout=TIMEOUT):
    """Run the script; its stdout. Raises AssertionError (with its output) when it fails."""
    result = subprocess.run([sys.executable, path.name], cwd=path.parent, env=environment(),
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{path.name} failed on {BACKEND}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return result.stdout


def workdir(tmp_path_factory, name):
    # the scripts keep '../random_order.json' beside their working directory
    work = tmp_path_factory.mktemp(name.replace(".py", "")) / "work"
    work.mkdir()
    return work


def check_output(script, stdout):
    for pattern in EXPECT.get(script, []):
        assert re.search(pattern, stdout), f"{script}: expected {pattern!r} in its output:\n{stdout[-3000:]}"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_and_query(assets, work):
    """basic_simple_web_serving_simbert.py serves SimBERT's synonym generation: queried over HTTP,
    with and without its required argument; the two JSON answers."""
    port = _free_port()
    path = prepare("basic_simple_web_serving_simbert.py", assets, work, port=port)
    proc = subprocess.Popen([sys.executable, path.name], cwd=path.parent, env=environment(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/gen_synonyms?" + urllib.parse.urlencode({"text": "苹果多少钱一斤", "n": 3, "k": 2})
        deadline = time.time() + TIMEOUT
        while True:
            assert proc.poll() is None, f"the server exited:\n{proc.stdout.read()[-5000:]}"
            try:
                with urllib.request.urlopen(url, timeout=120) as response:
                    answer = json.loads(response.read().decode("utf-8"))
                break
            except OSError:
                assert time.time() < deadline, "the server did not answer"
                time.sleep(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/gen_synonyms?n=3", timeout=60) as response:
            missing = json.loads(response.read().decode("utf-8"))
        return answer, missing
    finally:
        proc.kill()
        proc.wait()


def integrated_gradients_run(assets, work):
    """task_sentiment_integrated_gradients.py imports task_sentiment_albert (which loads the weights
    its own run saved there): both run in one directory; the second's stdout."""
    run(prepare("task_sentiment_albert.py", assets, work))
    return run(prepare("task_sentiment_integrated_gradients.py", assets, work))


# Scripts run like any other: everything but the web server (served and queried) and the
# integrated gradients (which imports task_sentiment_albert and its trained weights).
WEB, IG = "basic_simple_web_serving_simbert.py", "task_sentiment_integrated_gradients.py"
PLAIN = [s for s in SUBSTITUTIONS if s not in (WEB, IG)]

# Each backend runs a subset, so that CI runs every script on at least one backend: JAX and torch each a
# subset covering each family, head and API the scripts use between them, TensorFlow the scripts neither
# runs plus the ported ones (CI time: the whole suite must stay well under 50 minutes, and on a slower
# machine all 32 on TensorFlow took a third of it). BERT4KERAS_REFERENCE_ALL=1 runs all 32 everywhere.
SUBSET = {
    "jax": {
        "basic_extract_features.py", "basic_language_model_gpt2_ml.py", WEB, "task_conditional_language_model.py",
        "task_iflytek_bert_of_theseus.py", "task_iflytek_multigpu.py", "task_relation_extraction.py",
        "task_seq2seq_autotitle_csl_mt5.py", "task_sequence_labeling_ner_crf.py",
        "task_language_model_chinese_chess.py", *PORTED, IG,
    },
    "torch": {
        "basic_masked_language_model.py", "basic_language_model_cpm_lm.py", "task_image_caption.py",
        "task_iflytek_bert_of_theseus.py", "task_question_answer_generation_by_seq2seq.py",
        "task_seq2seq_ape210k_math_word_problem.py", "task_reading_comprehension_by_mlm.py",
        "task_sequence_labeling_cws_crf.py", "task_sentence_similarity_lcqmc.py", "task_seq2seq_autotitle_multigpu.py",
        "task_relation_extraction_gplinker.py", "basic_make_uncased_model_cased.py", *PORTED, IG,
    },
}


SUBSET["tensorflow"] = set(SUBSTITUTIONS) - SUBSET["jax"] - SUBSET["torch"] | {*PORTED, IG, WEB}


def selected(script):
    """Whether this backend runs ``script``; BERT4KERAS_REFERENCE_ALL=1 runs every one everywhere."""
    return script in SUBSET[BACKEND] or os.environ.get("BERT4KERAS_REFERENCE_ALL") == "1"


@pytest.fixture(scope="session")
def runs(request, assets, tmp_path_factory):
    """The runs the session's tests ask for, two at a time in the background (a run is mostly
    single-threaded Python: imports, tracing, decoding loops), in test order; script -> Future."""
    import concurrent.futures

    wanted = []
    for item in request.session.items:
        if item.module.__name__ != __name__:
            continue
        script = getattr(item, "callspec", None) and item.callspec.params.get("script")
        script = script or {"test_reference_web_serving_answers_http": WEB,
                            "test_reference_integrated_gradients": IG}.get(item.originalname)
        if script and selected(script) and script not in wanted:
            wanted.append(script)
    jobs = {WEB: serve_and_query, IG: integrated_gradients_run}
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
    futures = {}
    for script in wanted:
        work = workdir(tmp_path_factory, script)
        job = jobs.get(script) or (lambda script=script, work=work: run(prepare(script, assets, work)))
        futures[script] = pool.submit(job, assets, work) if script in jobs else pool.submit(job)
    yield futures
    pool.shutdown(cancel_futures=True)


def result_of(runs, script):
    if not selected(script):
        pytest.skip(f"on {BACKEND} a subset of the reference scripts runs (each runs on at least one backend)")
    return runs[script].result()


@pytest.mark.parametrize("script", [s for s in PLAIN if s not in PORTED])
def test_reference_script_runs(script, runs):
    """The script runs unchanged but for `COMMON` and `SUBSTITUTIONS` (on JAX, BERT-of-Theseus
    also takes `JAX_PORTED`'s seeded random layer)."""
    check_output(script, result_of(runs, script))


@pytest.mark.parametrize("script", [s for s in PLAIN if s in PORTED])
def test_reference_script_runs_after_porting(script, runs):
    check_output(script, result_of(runs, script))


def test_reference_web_serving_answers_http(runs):
    answer, missing = result_of(runs, WEB)
    assert answer["code"] == 0, answer
    assert isinstance(answer["data"], list) and len(answer["data"]) <= 2, answer
    assert missing["code"] == 1 and "text" in missing["desc"], missing


def test_reference_integrated_gradients(runs):
    stdout = result_of(runs, IG)
    assert stdout.count("[(") >= 2, stdout[-3000:]
