"""build_transformer_model: parity with transformers (torch) on real and random weights,
official TF1 checkpoints in and out, attention masks, bad input, training and saving."""

import json
import os

import keras
import numpy as np
import pytest

from bert4keras.models import build_transformer_model
from conftest import hf_to_google_names, random_ids, write_google_checkpoint


def sequence_and_pooled(model):
    """A model returning (last hidden states, pooled output) from a with_pool=True BERT."""
    last = model.get_layer(f"Transformer-{5}-FeedForward-Norm").output
    return keras.Model(model.inputs, [last, model.output])


# --- real weights -----------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["hf_safetensors", "official_tf1"])
def test_bert_matches_transformers(source, minilm_dir, minilm_google_checkpoint, reference_bert, sst2_sentences):
    if source == "hf_safetensors":
        model = build_transformer_model(minilm_dir, minilm_dir, with_pool=True)
    else:
        model = build_transformer_model(*minilm_google_checkpoint, with_pool=True)
    enc, ref_last, ref_pooled = reference_bert(sst2_sentences[:48])
    assert (enc["attention_mask"] == 0).any(), "the batch should contain padding"
    last, pooled = sequence_and_pooled(model).predict(
        [enc["input_ids"], enc["token_type_ids"]], batch_size=16, verbose=0
    )
    np.testing.assert_allclose(last, ref_last, atol=1e-4, rtol=0)
    np.testing.assert_allclose(pooled, ref_pooled, atol=1e-4, rtol=0)


def test_save_weights_as_checkpoint_round_trip(tmp_path, minilm_dir, reference_bert, sst2_sentences):
    import tensorflow as tf
    from safetensors.numpy import load_file

    bert = build_transformer_model(minilm_dir, minilm_dir, with_pool=True, return_keras_model=False)
    prefix = str(tmp_path / "out" / "bert_model.ckpt")
    bert.save_weights_as_checkpoint(prefix)

    expected = hf_to_google_names(load_file(os.path.join(minilm_dir, "model.safetensors")))
    reader = tf.train.load_checkpoint(prefix)
    assert set(reader.get_variable_to_shape_map()) == set(expected)
    for name, value in expected.items():
        np.testing.assert_array_equal(reader.get_tensor(name), value, err_msg=name)

    reloaded = build_transformer_model(os.path.join(minilm_dir, "config.json"), prefix, with_pool=True)
    enc, ref_last, ref_pooled = reference_bert(sst2_sentences[48:80])
    last, pooled = sequence_and_pooled(reloaded).predict([enc["input_ids"], enc["token_type_ids"]], verbose=0)
    np.testing.assert_allclose(last, ref_last, atol=1e-4, rtol=0)
    np.testing.assert_allclose(pooled, ref_pooled, atol=1e-4, rtol=0)


def test_padding_does_not_change_valid_outputs(minilm_dir, reference_bert, sst2_sentences):
    model = build_transformer_model(minilm_dir, minilm_dir)
    enc, _, _ = reference_bert(sst2_sentences[:8])
    batch = model.predict([enc["input_ids"], enc["token_type_ids"]], verbose=0)
    for i in range(8):
        n = int(enc["attention_mask"][i].sum())
        alone = model.predict([enc["input_ids"][i:i + 1, :n], enc["token_type_ids"][i:i + 1, :n]], verbose=0)
        np.testing.assert_allclose(batch[i, :n], alone[0], atol=1e-5, rtol=0)


# --- random weights: heads and other families ---------------------------------------------------


def tiny_hf_dir(tmp_path, model_cls, config_cls, **config):
    import torch

    torch.manual_seed(0)
    hf = model_cls(config_cls(**config)).eval()
    hf.save_pretrained(tmp_path)
    return hf, str(tmp_path)


HF_TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=40,
    hidden_act="gelu",
)


def test_pretraining_heads_match_transformers(tmp_path):
    import torch
    from transformers import BertConfig, BertForPreTraining

    hf, path = tiny_hf_dir(tmp_path / "hf", BertForPreTraining, BertConfig, **HF_TINY)
    ids = random_ids(3, 12, 99, seed=1)
    segments = np.zeros_like(ids)
    segments[:, 6:] = 1
    with torch.no_grad():
        out = hf(input_ids=torch.tensor(ids), token_type_ids=torch.tensor(segments),
                 attention_mask=torch.tensor((ids != 0).astype("int64")))

    bert = build_transformer_model(path, path, with_nsp="linear", with_mlm="linear", return_keras_model=False)
    nsp, mlm = bert.model.predict([ids, segments], verbose=0)
    valid = ids != 0
    np.testing.assert_allclose(mlm[valid], out.prediction_logits.numpy()[valid], atol=1e-4, rtol=0)
    np.testing.assert_allclose(nsp, out.seq_relationship_logits.numpy(), atol=1e-4, rtol=0)

    # The same heads through the official names and back.
    prefix = str(tmp_path / "tf" / "bert_model.ckpt")
    bert.save_weights_as_checkpoint(prefix)
    again = build_transformer_model(path, prefix, with_nsp="linear", with_mlm="linear")
    nsp2, mlm2 = again.predict([ids, segments], verbose=0)
    np.testing.assert_array_equal(nsp2, nsp)
    np.testing.assert_array_equal(mlm2, mlm)


def test_roberta_matches_transformers(tmp_path):
    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM

    config = dict(HF_TINY, max_position_embeddings=42, type_vocab_size=1, pad_token_id=1)
    hf, path = tiny_hf_dir(tmp_path, RobertaForMaskedLM, RobertaConfig, **config)
    ids = random_ids(3, 12, 97, seed=2) + 2  # real tokens >= 2
    ids[1, 9:] = 1  # RoBERTa pads with id 1
    ids[2, 5:] = 1
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor(ids.astype("int64")),
                 attention_mask=torch.tensor((ids != 1).astype("int64"))).logits.numpy()
    model = build_transformer_model(path, path, model="roberta", with_mlm="linear")
    ours = model.predict([ids, np.zeros_like(ids)], verbose=0)
    valid = ids != 1
    np.testing.assert_allclose(ours[valid], ref[valid], atol=1e-4, rtol=0)


def test_keep_tokens_selects_vocabulary_rows(tmp_path):
    from transformers import BertConfig, BertForPreTraining

    _, path = tiny_hf_dir(tmp_path, BertForPreTraining, BertConfig, **HF_TINY)
    keep_tokens = [0, 5, 7, 11, 42, 98]
    full = build_transformer_model(path, path, with_mlm="linear")
    kept = build_transformer_model(path, path, with_mlm="linear", keep_tokens=keep_tokens,
                                   compound_tokens=[[1, 2]])  # rows of the kept table
    assert kept.get_layer("Embedding-Token").weights[0].shape == (len(keep_tokens) + 1, 32)
    new_ids = np.array([[1, 2, 3, 4, 5]], "int32")  # positions in keep_tokens
    old_ids = np.array([keep_tokens[1:6]], "int32")
    ours = kept.predict([new_ids, np.zeros_like(new_ids)], verbose=0)
    ref = full.predict([old_ids, np.zeros_like(old_ids)], verbose=0)
    np.testing.assert_allclose(ours[..., : len(keep_tokens)], ref[..., keep_tokens], atol=1e-5)
    table = keras.ops.convert_to_numpy(kept.get_layer("Embedding-Token").embeddings)
    full_table = keras.ops.convert_to_numpy(full.get_layer("Embedding-Token").embeddings)
    np.testing.assert_allclose(table[-1], (full_table[5] + full_table[7]) / 2, atol=1e-6)


# --- attention masks and positions ---------------------------------------------------------------


def changed_positions(model, ids, segments, position):
    other = ids.copy()
    other[0, position] = (ids[0, position] % 40) + 1 if ids[0, position] != 41 else 2
    a = model.predict([ids, segments], verbose=0)
    b = model.predict([other, segments], verbose=0)
    return np.abs(a - b).max(axis=-1)[0] > 1e-6


def test_lm_application_is_causal(tiny_bert_kwargs):
    model = build_transformer_model(application="lm", with_mlm="linear", **tiny_bert_kwargs)
    ids = random_ids(1, 10, 50, seed=3)
    changed = changed_positions(model, ids, np.zeros_like(ids), 4)
    np.testing.assert_array_equal(changed, np.arange(10) >= 4)


def test_unilm_application_masks_second_segment(tiny_bert_kwargs):
    model = build_transformer_model(application="unilm", with_mlm="linear", **tiny_bert_kwargs)
    ids = random_ids(1, 10, 50, seed=4)
    segments = np.array([[0] * 4 + [1] * 6], "int32")
    # a token of the second segment is seen by itself and later tokens only
    np.testing.assert_array_equal(changed_positions(model, ids, segments, 6), np.arange(10) >= 6)
    # a token of the first segment is seen by every position
    assert changed_positions(model, ids, segments, 1).all()


def test_hierarchical_position_extends_max_position(tiny_bert_kwargs):
    model = build_transformer_model(hierarchical_position=True, **tiny_bert_kwargs)
    plain = build_transformer_model(**tiny_bert_kwargs)
    plain.set_weights(model.get_weights())
    table = keras.ops.convert_to_numpy(model.get_layer("Embedding-Position").embeddings)
    n, alpha = tiny_bert_kwargs["max_position"], 0.4

    short = random_ids(2, n, 50, seed=5)
    np.testing.assert_allclose(model.predict([short, short * 0], verbose=0),
                               plain.predict([short, short * 0], verbose=0), atol=1e-5)

    long = random_ids(1, 3 * n, 50, seed=6)
    positions = keras.Model(model.inputs, model.get_layer("Embedding-Position").output)
    token_segment = keras.Model(model.inputs, model.get_layer("Embedding-Token-Segment").output)
    got = positions.predict([long, long * 0], verbose=0) - token_segment.predict([long, long * 0], verbose=0)
    u = (table - alpha * table[:1]) / (1 - alpha)
    i = np.arange(3 * n)
    np.testing.assert_allclose(got[0], alpha * u[i // n] + (1 - alpha) * u[i % n], atol=1e-5)


# --- training and saving -----------------------------------------------------------------------


def test_tiny_bert_fits(tiny_bert_kwargs):
    keras.utils.set_random_seed(0)
    bert = build_transformer_model(with_pool=True, **tiny_bert_kwargs)
    output = keras.layers.Dense(2, activation="softmax", name="classifier")(bert.output)
    model = keras.Model(bert.inputs, output)
    model.compile(optimizer=keras.optimizers.AdamW(3e-3), loss="sparse_categorical_crossentropy")
    ids = random_ids(64, 12, 50, seed=7)
    labels = (ids == 3).any(axis=1) | (ids == 4).any(axis=1)
    history = model.fit([ids, np.zeros_like(ids)], labels.astype("int32"), batch_size=16, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("application", ["encoder", "unilm"])
def test_keras_save_load_round_trip(tmp_path, tiny_bert_kwargs, application):
    model = build_transformer_model(application=application, with_pool=True, with_mlm=True,
                                    dropout_rate=0.1, **tiny_bert_kwargs)
    ids = random_ids(3, 9, 50, seed=8)
    segments = np.zeros_like(ids)
    segments[:, 5:] = 1
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)  # safe_mode stays on
    for a, b in zip(model.predict([ids, segments], verbose=0), loaded.predict([ids, segments], verbose=0)):
        np.testing.assert_array_equal(a, b)


# --- bad input --------------------------------------------------------------------------------------


def test_missing_variable_is_named(tmp_path, minilm_dir):
    from safetensors.numpy import load_file

    variables = hf_to_google_names(load_file(os.path.join(minilm_dir, "model.safetensors")))
    del variables["bert/encoder/layer_3/attention/self/key/bias"]
    prefix = write_google_checkpoint(str(tmp_path / "bert_model.ckpt"), variables)
    config = os.path.join(minilm_dir, "config.json")
    with pytest.raises(ValueError, match=r"'bert/encoder/layer_3/attention/self/key/bias'.*not found"):
        build_transformer_model(config, prefix)
    with pytest.warns(UserWarning, match="layer_3/attention/self/key/bias"):
        build_transformer_model(config, prefix, ignore_invalid_weights=True)


def test_wrong_shape_names_expected_and_found(minilm_dir):
    with pytest.raises(ValueError, match=r"intermediate\.dense\.weight.*\(384, 1536\).*expects \(384, 1000\)"):
        build_transformer_model(minilm_dir, minilm_dir, intermediate_size=1000)


def test_checkpoint_of_wrong_family_names_first_missing_variable(tmp_path, tiny_bert_kwargs):
    from transformers import GPT2Config, GPT2Model

    _, path = tiny_hf_dir(tmp_path, GPT2Model, GPT2Config, vocab_size=50, n_embd=16, n_layer=2, n_head=2)
    with pytest.raises(ValueError, match=r"'embeddings\.word_embeddings\.weight'.*not found"):
        build_transformer_model(None, path, model="bert", **tiny_bert_kwargs)


def test_config_missing_required_key(tmp_path):
    path = tmp_path / "bert_config.json"
    path.write_text(json.dumps({"vocab_size": 10, "hidden_size": 8, "num_attention_heads": 2,
                                "intermediate_size": 16}))
    with pytest.raises(ValueError, match=r"num_hidden_layers.*bert_config\.json"):
        build_transformer_model(str(path))


@pytest.mark.parametrize("content, match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps(dict(vocab_size="30522", hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=16)), "'vocab_size'.*non-negative int"),
])
def test_malformed_config(tmp_path, content, match):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        build_transformer_model(str(path))


def test_missing_files(tmp_path, tiny_bert_kwargs):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        build_transformer_model(str(tmp_path / "nope.json"))
    with pytest.raises(FileNotFoundError, match="bert_model.ckpt"):
        build_transformer_model(None, str(tmp_path / "bert_model.ckpt"), **tiny_bert_kwargs)


def test_pickle_checkpoints_are_refused(tmp_path, tiny_bert_kwargs):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="pickle"):
        build_transformer_model(None, str(tmp_path / "pytorch_model.bin"), **tiny_bert_kwargs)
    with pytest.raises(ValueError, match="pickle"):
        build_transformer_model(None, str(tmp_path), **tiny_bert_kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(model="bart"), "Unknown model='bart'"),
    (dict(application="seq2seq"), "Unknown application='seq2seq'"),
    (dict(application="unilm", segment_vocab_size=0), "segment_vocab_size"),
])
def test_unknown_names(tiny_bert_kwargs, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_transformer_model(**{**tiny_bert_kwargs, **kwargs})


def test_input_longer_than_max_position(tiny_bert_kwargs):
    model = build_transformer_model(**tiny_bert_kwargs)
    ids = random_ids(1, tiny_bert_kwargs["max_position"] + 1, 50)
    with pytest.raises(ValueError, match=r"sequence length 33 exceeds max_position 32"):
        model([ids, np.zeros_like(ids)])


def test_conditional_layer_norm(tiny_bert_kwargs):
    class_id = keras.Input(shape=(), dtype="int32", name="Input-Class")
    cond = keras.layers.Embedding(3, 8, name="Class-Embedding")(class_id)
    model = build_transformer_model(layer_norm_cond=cond, layer_norm_cond_hidden_size=6,
                                    additional_input_layers=class_id, **tiny_bert_kwargs)
    plain = build_transformer_model(**tiny_bert_kwargs)
    assert len(model.inputs) == 3
    for layer in plain.layers:
        if layer.weights and "Norm" not in layer.name:  # norms start at gamma=1, beta=0 in both
            layer.set_weights(model.get_layer(layer.name).get_weights())
    ids = random_ids(2, 7, 50, seed=9)
    x = [ids, np.zeros_like(ids)]
    # the condition's projections start at zero: the conditional model equals the plain one
    np.testing.assert_allclose(model.predict(x + [np.array([0, 2])], verbose=0),
                               plain.predict(x, verbose=0), atol=1e-5)
    norm = model.get_layer("Transformer-1-FeedForward-Norm")
    kernel = np.random.default_rng(0).normal(size=norm.gamma_dense.kernel.shape).astype("float32")
    norm.gamma_dense.kernel.assign(kernel)
    a = model.predict(x + [np.array([0, 0])], verbose=0)
    b = model.predict(x + [np.array([1, 1])], verbose=0)
    assert np.abs(a - b).max() > 1e-3
