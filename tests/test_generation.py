"""Incremental decoding: the KV-cache path equals full recomputation, and greedy / beam search
with our cached decoder equal `transformers` `generate` on the same random weights."""

import keras
import numpy as np
import pytest

import official_names
from bert4keras.models import build_transformer_model
from bert4keras.snippets import AutoRegressiveDecoder
from conftest import TINY_BERT, write_google_checkpoint

MAX_NEW = 8


class Decoder(AutoRegressiveDecoder):
    """bert4keras-style decoder whose predict is a (cached or full) predictor of ours."""

    def __init__(self, predict_fn, **kwargs):
        super().__init__(**kwargs)
        self.predict_fn = predict_fn

    @AutoRegressiveDecoder.wraps(default_rtype="probas", use_states=True)
    def predict(self, inputs, output_ids, states):
        return self.predict_fn(inputs, output_ids, states)


def tiny(model, **kwargs):
    config = dict(TINY_BERT, max_position=64)
    config.pop("segment_vocab_size")
    return build_transformer_model(model=model, return_keras_model=False, **{**config, **kwargs})


@pytest.mark.parametrize("model, kwargs, n_inputs", [
    ("bert", dict(application="unilm"), 2),
    ("albert", dict(application="unilm"), 2),  # one attention layer shared by the blocks
    ("nezha", dict(application="lm"), 2),
    ("roformer", dict(application="lm"), 2),
    ("roformer_v2", dict(application="unilm"), 2),
    ("gpt", {}, 2),
    ("gpt2", {}, 1),
    ("gpt2_ml", {}, 1),
])
def test_cached_steps_equal_full_recomputation(model, kwargs, n_inputs):
    builder = tiny(model, **kwargs)
    rng = np.random.default_rng(0)
    prompt = rng.integers(1, 50, size=(3, 6)).astype("int32")
    inputs = [prompt, np.zeros_like(prompt)][:n_inputs]
    outputs = rng.integers(1, 50, size=(3, 5)).astype("int32")
    full, cached = builder.predictor(), builder.predictor(max_length=16)
    states = None
    for t in range(outputs.shape[1] + 1):
        expected, _ = full(inputs, outputs[:, :t])
        got, states = cached(inputs, outputs[:, :t], states)
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert_step_traced(cached)
    with pytest.raises(ValueError, match="past the KV cache"):
        for t in range(outputs.shape[1] + 1, 20):
            _, states = cached(inputs, np.ones((3, t), "int32"), states)


@pytest.mark.parametrize("version, kwargs", [("t5.1.1", {}), ("t5.1.0", dict(cross_position_bias=True))])
def test_t5_cached_steps_equal_full_recomputation(version, kwargs):
    """T5's decoder: the cross attentions' keys and values of the source are computed once, at the
    first step (one ``Cross-Cache`` per block in the states), and every step equals recomputing
    the whole prefix; also with a relative position bias in the cross attention."""
    t5 = build_transformer_model(model=version, return_keras_model=False, vocab_size=50, hidden_size=16,
                                 num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                 relative_attention_num_buckets=8, **kwargs)
    rng = np.random.default_rng(0)
    source = rng.integers(2, 50, size=(3, 7)).astype("int32")
    source[0, 5:] = 0  # padding: its context rows are masked in the cross attention
    context = t5.encoder.predict_on_batch(source)
    outputs = np.concatenate([np.zeros((3, 1), "int32"), rng.integers(2, 50, size=(3, 5)).astype("int32")], 1)
    full, cached = t5.predictor(), t5.predictor(max_length=8)
    assert len(cached.model.cross_names) == 2
    states = None
    for t in range(1, outputs.shape[1] + 1):
        expected, _ = full([context], outputs[:, :t])
        got, states = cached([context], outputs[:, :t], states)
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert sorted(states.caches) == ["Cache-0", "Cache-1", "Cross-Cache-0", "Cross-Cache-1"]
    assert tuple(states.caches["Cross-Cache-0"].shape) == (3, 2, 7, 2, 8)
    assert_step_traced(cached)


def assert_step_traced(predictor):
    """On PyTorch, the repeated one-token step ran as a traced graph: no family falls back to
    eager Keras (`TracedTorchStep.untraced` names the reason when one does)."""
    if keras.backend.backend() == "torch":
        assert predictor.step.untraced == {}
        assert any(graph is not None for graph in predictor.step.graphs.values())


@pytest.mark.skipif(keras.backend.backend() != "torch", reason="the traced step is PyTorch's")
def test_traced_torch_step_checks_ids_and_reads_the_current_weights():
    builder = tiny("gpt2")
    predictor = builder.predictor(max_length=16)
    prompt = np.array([[5, 17, 42]], "int32")
    logits, states = predictor([prompt], np.zeros((1, 0), "int32"), None)
    for token in (7, 9):  # the second one-token call traces the step
        logits, states = predictor([prompt], np.array([[token]], "int32"), states)
    assert_step_traced(predictor)
    with pytest.raises(ValueError, match=r"outside \[0, vocab_size=50\)"):
        predictor([prompt], np.array([[60]], "int32"), states)
    # weights assigned after tracing are the ones the graphs multiply by
    for kernel in builder.model.weights:
        if kernel.path.endswith("o_dense/kernel"):
            kernel.assign(keras.ops.ones(kernel.shape) * 0.01)
    _, states = predictor([prompt], np.zeros((1, 0), "int32"), None)
    for token in (7, 9):
        got, states = predictor([prompt], np.array([[token]], "int32"), states)
    expected, _ = builder.predictor()([prompt], np.array([[7, 9]], "int32"))
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert sum(graph is not None for graph in predictor.step.graphs.values()) == 2  # prompt and one token


def test_cached_decoding_branches_from_one_state():
    """Two steps from the same `KVCache` (a branch, as a user exploring alternatives writes it):
    the second is as if the first had not run, also where the step writes the caches in place
    (PyTorch's traced step)."""
    builder = tiny("gpt2")
    predictor, full = builder.predictor(max_length=16), builder.predictor()
    prompt = np.array([[5, 17, 42]], "int32")
    _, states = predictor([prompt], np.zeros((1, 0), "int32"), None)
    for token in (7, 9, 11):  # traced from the second one-token step on
        _, states = predictor([prompt], np.array([[token]], "int32"), states)
    branches = [predictor([prompt], np.array([[7, 9, 11, token]], "int32"), states)[1] for token in (3, 4)]
    for token, branch in zip((3, 4), branches):  # each branch continues from its own token
        got, _ = predictor([prompt], np.array([[7, 9, 11, token, 8]], "int32"), branch)
        expected, _ = full([prompt], np.array([[7, 9, 11, token, 8]], "int32"))
        np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    assert_step_traced(predictor)


def test_step_model_takes_and_returns_its_caches_by_name():
    """The cached step's contract: inputs and outputs by name (with the builder's prefix), one
    cache per block, and building or running it leaves the builder's own graph as it was."""
    builder = tiny("bert", application="unilm", segment_vocab_size=2, prefix="p_")
    graph_state = [*builder.inputs, builder.attention_mask, builder.position_bias]
    step = builder.predictor(max_length=16).model
    assert step.input_names == ["p_Input-Token", "p_Input-Segment"]
    assert step.index_name == "p_Cache-Index"
    assert step.cache_shapes == {"p_Cache-0": (2, 16, 2, 8), "p_Cache-1": (2, 16, 2, 8)}
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, 50, size=(3, 4)).astype("int32")
    feeds = {"p_Input-Token": token_ids, "p_Input-Segment": np.zeros_like(token_ids),
             "p_Cache-Index": np.zeros(3, "int32")}
    feeds.update((name, np.zeros((3,) + shape, "float32")) for name, shape in step.cache_shapes.items())
    outputs = {name: np.asarray(keras.ops.convert_to_numpy(x)) for name, x in step(feeds).items()}
    assert sorted(outputs) == ["Output", "p_Cache-0", "p_Cache-1"]
    expected = builder.model.predict_on_batch([token_ids, np.zeros_like(token_ids)])[:, -1]
    np.testing.assert_allclose(outputs["Output"], expected, atol=1e-6, rtol=0)
    for name in ("p_Cache-0", "p_Cache-1"):  # keys/values written at positions 0..3, zeros after
        assert np.abs(outputs[name][:, :, :4]).max() > 0 and not outputs[name][:, :, 4:].any()
    # identity, not ==: == on symbolic tensors builds an op
    assert all(a is b for a, b in zip([*builder.inputs, builder.attention_mask, builder.position_bias], graph_state))
    assert builder.decoding_step is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(application="encoder"), "cannot decode incrementally"),
    (dict(application="unilm", with_pool=True, with_mlm=True), "one output"),
])
def test_step_model_refuses_what_it_cannot_cache(kwargs, message):
    builder = tiny("bert", segment_vocab_size=2, **kwargs)
    with pytest.raises(ValueError, match=message):
        builder.build_cache_model(16)


def test_cached_and_full_decoding_give_the_same_tokens():
    builder = tiny("bert", application="unilm", segment_vocab_size=2)
    prompt = np.arange(3, 10)
    inputs = [prompt, np.zeros_like(prompt)]
    for method, args in [("greedy", ()), ("beam_search", (3,))]:
        results = []
        for predictor in (builder.predictor(), builder.predictor(max_length=32)):
            decoder = Decoder(predictor, start_id=None, end_id=None, maxlen=MAX_NEW)
            results.append(getattr(decoder, method)(inputs, *args))
        np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("num_beams", [1, 4])
def test_gpt2_decoding_matches_transformers_generate(tmp_path, num_beams):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=99, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=98, eos_token_id=98)
    hf = GPT2LMHeadModel(config).eval()
    hf.save_pretrained(tmp_path)
    prompt = np.array([[5, 17, 42, 8, 23, 61]])
    with torch.no_grad():
        expected = hf.generate(torch.tensor(prompt), max_new_tokens=MAX_NEW, min_new_tokens=MAX_NEW,
                               do_sample=False, num_beams=num_beams, length_penalty=1.0,
                               early_stopping=False, pad_token_id=0, eos_token_id=None)
    expected = expected.numpy()[0, prompt.shape[1]:]

    gpt2 = build_transformer_model(str(tmp_path), str(tmp_path), model="gpt2", return_keras_model=False)
    predictor = gpt2.predictor(max_length=32)
    decoder = Decoder(predictor, start_id=None, end_id=None, maxlen=MAX_NEW)
    got = decoder.greedy([prompt[0]]) if num_beams == 1 else decoder.beam_search([prompt[0]], topk=num_beams)
    np.testing.assert_array_equal(got, expected)
    assert_step_traced(predictor)


@pytest.mark.parametrize("weights", ["hf", "official"])
@pytest.mark.parametrize("num_beams", [1, 4])
def test_t5_decoding_matches_transformers_generate(tmp_path, num_beams, weights):
    """From the HF files, and from a Mesh-TF checkpoint under the names Google's T5 v1.1
    release uses (tests/official_names.py, from the published convention)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_decoder_layers=2,
                      num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                      decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    hf = T5ForConditionalGeneration(config).eval()
    hf.save_pretrained(tmp_path)
    source = np.array([[12, 7, 33, 90, 4, 4, 18]])
    with torch.no_grad():
        expected = hf.generate(torch.tensor(source), max_new_tokens=MAX_NEW, min_new_tokens=MAX_NEW,
                               do_sample=False, num_beams=num_beams, length_penalty=1.0,
                               early_stopping=False, eos_token_id=None)
    expected = expected.numpy()[0]  # starts with the decoder start token 0

    if weights == "hf":
        t5 = build_transformer_model(str(tmp_path), str(tmp_path), model="t5", return_keras_model=False)
    else:
        from safetensors.numpy import load_file

        state = load_file(str(tmp_path / "model.safetensors"))
        # transformers 5 ties T5's lm_head to the embedding and saves it once; t5.1.1 stores it apart
        state.setdefault("lm_head.weight", state["shared.weight"])
        variables = official_names.t5_mesh_tf(state, "t5.1.1")
        assert "encoder/final_layer_norm/scale" in variables and "decoder/logits/kernel" in variables
        (tmp_path / "official").mkdir()
        prefix = write_google_checkpoint(str(tmp_path / "official" / "model.ckpt"), variables)
        t5 = build_transformer_model(str(tmp_path / "config.json"), prefix, model="t5.1.1", return_keras_model=False)
    context = t5.encoder.predict(source, verbose=0)
    predictor = t5.predictor(max_length=16)
    decoder = Decoder(predictor, start_id=0, end_id=None, maxlen=MAX_NEW)
    got = decoder.greedy([context[0]]) if num_beams == 1 else decoder.beam_search([context[0]], topk=num_beams)
    np.testing.assert_array_equal(got, expected)
    assert_step_traced(predictor)
