"""Model zoo: ALBERT, ELECTRA, RoFormer, GPT-2 and T5/mT5 against transformers (torch) on real
text, loaded from HF safetensors and from official TF checkpoints; NEZHA, GPT (CDial), GPT2-ML
and RoFormer-V2 against NumPy forward passes written from their papers; checkpoint round trips
through the official names; checkpoints of the wrong family."""

import csv
import dataclasses
import json
import math
import os
import re
import warnings

import keras
import numpy as np
import pytest

import official_names
from bert4keras.checkpoints import as_var
from bert4keras.models import build_transformer_model
from conftest import data_path, write_google_checkpoint

ATOL = 1e-4


# --- real text -------------------------------------------------------------------------------


def wordpiece(vocab_file, vocab_size):
    from transformers import BertTokenizerFast

    # positional: BertTokenizerFast(vocab_file=...) silently builds a 5-token vocabulary
    tokenizer = BertTokenizerFast(data_path("vocab", vocab_file))
    assert tokenizer.vocab_size == vocab_size
    return tokenizer


def sentencepiece(model_file):
    import sentencepiece as spm

    return spm.SentencePieceProcessor(model_file=data_path("spm", model_file))


def lcqmc_pairs(start, count):
    with open(data_path("zh", "lcqmc_test.txt"), encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    return [(a, b) for a, b, _ in rows[start:start + count]]


def csl_rows(start, count):
    """(abstract, title) pairs of the CSL title-generation set."""
    with open(data_path("zh", "csl_ts_test.tsv"), encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [(abstract, title) for _, abstract, title in rows[start:start + count]]


def pad(rows, value=0):
    """Right-pad lists of ids into an int32 array and its mask of real tokens."""
    length = max(map(len, rows))
    ids = np.full((len(rows), length), value, "int32")
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    valid = np.arange(length)[None] < np.array([len(r) for r in rows])[:, None]
    return ids, valid


def wordpiece_batch(tokenizer, texts, pairs=None, max_length=64):
    enc = tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    assert (enc["attention_mask"] == 0).any(), "the batch should contain padding"
    return enc["input_ids"].astype("int32"), enc["token_type_ids"].astype("int32"), enc["attention_mask"] == 1


# --- running models ----------------------------------------------------------------------------


def run(model, inputs):
    """Outputs of a Keras model as a list of NumPy arrays (inference mode)."""
    outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [keras.ops.convert_to_numpy(o) for o in outputs]


def assert_close(got, want, valid, what):
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if valid is not None:
        got, want = got[valid], want[valid]
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=0, err_msg=what)


@dataclasses.dataclass
class Case:
    """One model built from a checkpoint, with what it must output.

    reference: expected outputs in the model's output order; valid: per output, a mask of the
    leading axes to compare (non-padding positions) or None for all.
    """

    model: str
    kwargs: dict
    inputs: list
    reference: list
    valid: list
    official_config: str
    official_prefix: str
    official: dict  # official name -> array, without optimizer junk
    hf_dir: str = None  # None: the family has no transformers class
    save_mapping: str = None  # the builder's method giving the mapping to write, if not the default
    extra: dict = dataclasses.field(default_factory=dict)

    def paths(self, source):
        return (self.hf_dir, self.hf_dir) if source == "hf" else (self.official_config, self.official_prefix)

    def build(self, source, **kwargs):
        return build_transformer_model(*self.paths(source), model=self.model, **{**self.kwargs, **kwargs})

    def check(self, outputs):
        assert len(outputs) == len(self.reference), f"{len(outputs)} outputs, expected {len(self.reference)}"
        for i, (got, want, valid) in enumerate(zip(outputs, self.reference, self.valid)):
            assert_close(got, want, valid, f"{self.model} output {i}")


# --- transformers references -------------------------------------------------------------------


def hf_model(model_cls, config, seed, untie_lm_head=False):
    """A random transformers model with weights large enough that attention is far from uniform
    (the default 0.02 init would hide position and mask errors below the tolerance)."""
    import torch

    torch.manual_seed(seed)
    model = model_cls(config).eval()
    if untie_lm_head:
        # transformers 5 always ties T5's lm_head; t5.1.1 / mT5 have their own
        model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:  # RoFormer's fixed sinusoidal table
                continue
            if p.ndim == 1:
                scale = re.search(r"(norm|ln_\w+)\.weight$", name, re.IGNORECASE) is not None
                p.copy_(float(scale) + 0.2 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return model


def hf_forward(model, **arrays):
    import torch

    with torch.no_grad():
        return model(**{k: torch.from_numpy(np.asarray(v, "int64")) for k, v in arrays.items()})


def save_hf(model, directory):
    from safetensors.numpy import load_file

    model.save_pretrained(directory)
    return load_file(os.path.join(directory, "model.safetensors"))


def write_official(directory, variables, optimizer="adam", name="model.ckpt"):
    return write_google_checkpoint(os.path.join(directory, name), official_names.with_junk(variables, optimizer))


def numpy_of(tensor):
    return tensor.detach().numpy()


def albert_cases(root):
    from transformers import AlbertConfig, AlbertForMaskedLM, AlbertForPreTraining

    pairs = lcqmc_pairs(0, 6)
    ids, segments, valid = wordpiece_batch(wordpiece("chinese_bert_vocab.txt", 21128), *zip(*pairs))
    config = AlbertConfig(vocab_size=21128, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                          num_attention_heads=4, intermediate_size=48, max_position_embeddings=64,
                          hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    assert config.hidden_act == "gelu_new"
    cases = {}
    for name, cls, seed in [("albert", AlbertForPreTraining, 1), ("albert_mlm", AlbertForMaskedLM, 2)]:
        hf = hf_model(cls, config, seed)
        out = hf_forward(hf, input_ids=ids, token_type_ids=segments, attention_mask=valid)
        official = official_names.albert(save_hf(hf, root / name))
        if name == "albert":
            kwargs = dict(with_nsp="linear", with_mlm="linear")
            reference, masks = [numpy_of(out.sop_logits), numpy_of(out.prediction_logits)], [None, valid]
        else:
            kwargs = dict(with_mlm="linear")
            reference, masks = [numpy_of(out.logits)], [valid]
        cases[name] = Case("albert", kwargs, [ids, segments], reference, masks,
                           str(root / name / "config.json"), write_official(root / name, official),
                           official, hf_dir=str(root / name))
    return cases


def electra_cases(root, sentences):
    """Discriminator and generator sharing one embedding table, written together as the
    official pretraining checkpoint, and separately as two HF directories."""
    from transformers import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

    ids, segments, valid = wordpiece_batch(wordpiece("bert_base_uncased_vocab.txt", 30522), sentences[:6])
    common = dict(vocab_size=30522, embedding_size=24, max_position_embeddings=64,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    discriminator = hf_model(ElectraForPreTraining, ElectraConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48, **common), seed=3)
    generator = hf_model(ElectraForMaskedLM, ElectraConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, **common), seed=4)
    generator.electra.embeddings.load_state_dict(discriminator.electra.embeddings.state_dict())

    d_out = hf_forward(discriminator, input_ids=ids, token_type_ids=segments, attention_mask=valid)
    g_out = hf_forward(generator, input_ids=ids, token_type_ids=segments, attention_mask=valid)
    official = official_names.electra(save_hf(discriminator, root / "discriminator"),
                                      save_hf(generator, root / "generator"))
    prefix = write_official(root, official)
    generator_names = ("generator", "electra/embeddings/")  # the generator shares the embeddings
    return {
        "electra_discriminator": Case(
            "electra", dict(with_discriminator="linear"), [ids, segments],
            [numpy_of(d_out.logits)[..., None]], [valid], str(root / "discriminator" / "config.json"), prefix,
            {k: v for k, v in official.items() if not k.startswith("generator")},
            hf_dir=str(root / "discriminator")),
        "electra_generator": Case(
            "electra", dict(with_mlm="linear"), [ids, segments], [numpy_of(g_out.logits)], [valid],
            str(root / "generator" / "config.json"), prefix,
            {k: v for k, v in official.items() if k.startswith(generator_names)}, hf_dir=str(root / "generator")),
    }


def roformer_cases(root):
    from transformers import RoFormerConfig, RoFormerForMaskedLM

    ids, segments, valid = wordpiece_batch(wordpiece("chinese_bert_vocab.txt", 21128), *zip(*lcqmc_pairs(6, 6)))
    config = RoFormerConfig(vocab_size=21128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=48, max_position_embeddings=64, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0)
    hf = hf_model(RoFormerForMaskedLM, config, seed=5)
    out = hf_forward(hf, input_ids=ids, token_type_ids=segments, attention_mask=valid)
    official = official_names.roformer(save_hf(hf, root))
    return {"roformer": Case("roformer", dict(with_mlm="linear"), [ids, segments], [numpy_of(out.logits)],
                             [valid], str(root / "config.json"), write_official(root, official, name="bert_model.ckpt"),
                             official, hf_dir=str(root))}


def gpt2_cases(root):
    """GPT-2 on CPM's Chinese SentencePiece ids. Its vocabulary has no padding token, so the batch
    is unpadded: 24 tokens of each abstract."""
    from transformers import GPT2Config, GPT2LMHeadModel

    sp = sentencepiece("cpm_chinese_vocab.model")
    ids = np.array([sp.encode(abstract)[:24] for abstract, _ in csl_rows(0, 4)], "int32")
    ids[1, 5:8] = 0  # id 0 is a real token for GPT-2 ('!'), never padding
    config = GPT2Config(vocab_size=30000, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = hf_model(GPT2LMHeadModel, config, seed=6)
    logits = numpy_of(hf_forward(hf, input_ids=ids).logits)
    official = official_names.gpt2_openai(save_hf(hf, root))
    hparams = root / "hparams.json"
    hparams.write_text(json.dumps(official_names.gpt2_hparams(config)))
    return {"gpt2": Case("gpt2", dict(final_activation="linear"), [ids], [logits], [None], str(hparams),
                         write_official(root, official), official, hf_dir=str(root),
                         save_mapping="openai_variable_mapping")}


T5_SETUPS = {
    # version: (transformers class, SentencePiece model, vocab_size, text, config)
    "t5.1.0": ("T5ForConditionalGeneration", "t5_tokenizer_base.model", 32128, "sst2",
               dict(feed_forward_proj="relu", num_layers=2)),
    "t5.1.1": ("T5ForConditionalGeneration", "t5_tokenizer_base.model", 32128, "sst2",
               dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_layers=2, num_decoder_layers=3,
                    relative_attention_num_buckets=16, relative_attention_max_distance=20)),
    "mt5.1.1": ("MT5ForConditionalGeneration", "cpm_chinese_vocab.model", 30000, "csl",
                dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False, num_layers=2,
                     layer_norm_epsilon=1e-3)),
}


def t5_text(text, sp, sentences):
    """(encoder rows, decoder rows): real sentences -> summaries/continuations, longest first.
    Decoder rows start with T5's start token, the pad id 0."""
    if text == "sst2":
        chosen = [s for s in sentences if 20 <= len(sp.encode(s)) <= 40][:5]
        sources = [sp.encode("sst2 sentence: " + s) + [1] for s in chosen]
        targets = [sp.encode(s)[: 4 + 2 * i] for i, s in enumerate(chosen)]
    else:
        rows = csl_rows(10, 5)
        # CPM's id 0 is <unk>; T5 pads with 0, so unknown pieces are dropped
        sources = [[t for t in sp.encode(a) if t != 0][: 40 - 5 * i] + [sp.eos_id()] for i, (a, _) in enumerate(rows)]
        targets = [[t for t in sp.encode(title) if t != 0][:12] for _, title in rows]
    order = np.argsort([-len(s) for s in sources], kind="stable")
    sources = [sources[i] for i in order]
    targets = [[0] + targets[i] for i in order]
    return pad(sources), pad(targets)


def t5_case(root, version, sentences):
    import transformers

    cls_name, spm_file, vocab_size, text, extra = T5_SETUPS[version]
    cls = getattr(transformers, cls_name)
    config = cls.config_class(vocab_size=vocab_size, d_model=32, d_kv=8, d_ff=48, num_heads=4, dropout_rate=0.0,
                              **extra)
    hf = hf_model(cls, config, seed=7, untie_lm_head=version != "t5.1.0")
    (enc_ids, enc_valid), (dec_ids, dec_valid) = t5_text(text, sentencepiece(spm_file), sentences)
    out = hf_forward(hf, input_ids=enc_ids, attention_mask=enc_valid, decoder_input_ids=dec_ids)
    official = official_names.t5_mesh_tf(save_hf(hf, root), version)
    return Case(version, dict(with_lm="linear"), [enc_ids, dec_ids], [numpy_of(out.logits)], [dec_valid],
                str(root / "config.json"), write_official(root, official, optimizer="adafactor"), official,
                hf_dir=str(root), extra=dict(encoder_states=numpy_of(out.encoder_last_hidden_state),
                                             encoder_valid=enc_valid))


# --- NumPy references (NEZHA, GPT, GPT2-ML, RoFormer-V2) -------------------------------------------

_erf = np.vectorize(math.erf)


def gelu(x):
    """GELU, erf form (Hendrycks & Gimpel 2016): what 'gelu' means in these configs."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def relu(x):
    return np.maximum(x, 0.0)


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def rms_norm(x, eps):
    """RoFormer-V2's norm: no mean subtraction, no gamma/beta."""
    return x / np.sqrt((x ** 2).mean(-1, keepdims=True) + eps)


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def nezha_relative_positions(n, d, max_distance=64):
    """NEZHA (Wei et al. 2019, sec. 3.2): r_ij = row clip(j - i, -64, 64) + 64 of a fixed table
    whose row p is [sin(p w_0), cos(p w_0), sin(p w_1), ...], w_k = 10000^(-2k/d)."""
    p = np.arange(2 * max_distance + 1)[:, None]
    w = 10000.0 ** (-2.0 * np.arange(d // 2) / d)
    table = np.zeros((2 * max_distance + 1, d))
    table[:, 0::2], table[:, 1::2] = np.sin(p * w), np.cos(p * w)
    i = np.arange(n)
    return table[np.clip(i[None, :] - i[:, None], -max_distance, max_distance) + max_distance]


def rotary(x):
    """RoPE (Su et al. 2021, eq. 34): rotate pairs (x_2k, x_2k+1) at position m by m * theta_k,
    theta_k = 10000^(-2k/d). x: (heads, n, d)."""
    n, d = x.shape[-2:]
    angle = np.arange(n)[:, None] * 10000.0 ** (-2.0 * np.arange(d // 2) / d)
    cos, sin = np.cos(angle), np.sin(angle)
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
    out[..., 1::2] = x[..., 1::2] * cos + x[..., 0::2] * sin
    return out


def attention(q, k, v, heads, causal=False, position=None):
    """Scaled dot-product attention of one unpadded sequence; q, k, v: (n, heads * d)."""
    n = q.shape[0]
    q, k, v = (t.reshape(n, heads, -1).transpose(1, 0, 2) for t in (q, k, v))
    d = q.shape[-1]
    if position == "rotary":
        q, k = rotary(q), rotary(k)
    logits = q @ k.transpose(0, 2, 1)
    if position == "nezha":
        r = nezha_relative_positions(n, d)
        logits = logits + np.einsum("hid,ijd->hij", q, r)
    logits = logits / math.sqrt(d)
    if causal:
        logits = np.where(np.tril(np.ones((n, n), bool)), logits, -np.inf)
    a = softmax(logits)
    out = a @ v
    if position == "nezha":
        out = out + np.einsum("hij,ijd->hid", a, r)
    return out.transpose(1, 0, 2).reshape(n, -1)


def bert_block(x, w, p, heads, norm, act, bias=True, causal=False, position=None):
    """Post-LN block (Vaswani et al. 2017; BERT's names under prefix p)."""
    def dense(h, name):
        return h @ w[p + name + "/kernel"] + (w[p + name + "/bias"] if bias else 0.0)

    q, k, v = (dense(x, f"attention/self/{t}") for t in ("query", "key", "value"))
    x = norm(x + dense(attention(q, k, v, heads, causal, position), "attention/output/dense"),
             p + "attention/output/LayerNorm")
    return norm(x + dense(act(dense(x, "intermediate/dense")), "output/dense"), p + "output/LayerNorm")


def gamma_beta_norm(w, eps):
    return lambda x, name: layer_norm(x, w[name + "/gamma"], w[name + "/beta"], eps)


def nezha_forward(w, ids, segments, c):
    x = w["bert/embeddings/word_embeddings"][ids] + w["bert/embeddings/token_type_embeddings"][segments]
    norm = gamma_beta_norm(w, 1e-12)
    x = norm(x, "bert/embeddings/LayerNorm")
    for i in range(c["num_hidden_layers"]):
        x = bert_block(x, w, f"bert/encoder/layer_{i}/", c["num_attention_heads"], norm, gelu, position="nezha")
    return [x]


def gpt_forward(w, ids, segments, c):
    """OpenAI GPT (Radford et al. 2018) as CDial-GPT: no embedding norm, post-LN causal blocks,
    output tied to the token embedding."""
    e = w["gpt/embeddings/word_embeddings"]
    x = e[ids] + w["gpt/embeddings/token_type_embeddings"][segments]
    x = x + w["gpt/embeddings/position_embeddings"][:len(ids)]
    norm = gamma_beta_norm(w, 1e-12)
    for i in range(c["num_hidden_layers"]):
        x = bert_block(x, w, f"gpt/transformer/layer_{i}/", c["num_attention_heads"], norm, gelu, causal=True)
    return [x @ e.T]


def gpt2_ml_forward(w, ids, c):
    """GPT2-ML / Grover: x = LN(tok + pos); per layer x = x + MHA(x); x = LN1(x + FFN(LN0(x)))."""
    e = w["newslm/embeddings/word_embed"]
    norm = gamma_beta_norm(w, 1e-5)
    x = norm(e[ids] + w["newslm/embeddings/pos_embed"][:len(ids)], "newslm/embeddings/LayerNorm_embed_norm")
    for i in range(c["num_hidden_layers"]):
        p = "newslm/layer%02d/" % i

        def dense(h, name):
            return h @ w[p + name + "/kernel"] + w[p + name + "/bias"]

        q, k, v = (dense(x, f"{t}_layer") for t in ("query", "key", "value"))
        x = x + dense(attention(q, k, v, c["num_attention_heads"], causal=True), "context_projection_layer")
        h = dense(gelu(dense(norm(x, p + "LayerNorm_mlp_ln0"), "intermediate")), "output")
        x = norm(x + h, p + "LayerNorm_mlp_ln1")
    return [x @ e.T]


def roformer_v2_forward(w, ids, segments, c):
    """RoFormer-V2: rotary attention, no biases, parameter-free RMS norms, MLM logits h E^T."""
    e = w["bert/embeddings/word_embeddings"]

    def norm(x, name):
        return rms_norm(x, 1e-12)

    x = norm(e[ids] + w["bert/embeddings/token_type_embeddings"][segments], None)
    for i in range(c["num_hidden_layers"]):
        x = bert_block(x, w, f"bert/encoder/layer_{i}/", c["num_attention_heads"], norm, relu, bias=False,
                       position="rotary")
    return [x @ e.T]


def bert_block_shapes(prefix, c, bias=True, norm=True):
    h, inner = c["hidden_size"], c["intermediate_size"]
    shapes = {}
    for i in range(c["num_hidden_layers"]):
        p = prefix % i
        for name, (fan_in, fan_out) in {
            "attention/self/query": (h, h), "attention/self/key": (h, h), "attention/self/value": (h, h),
            "attention/output/dense": (h, h), "intermediate/dense": (h, inner), "output/dense": (inner, h),
        }.items():
            shapes[p + name + "/kernel"] = (fan_in, fan_out)
            if bias:
                shapes[p + name + "/bias"] = (fan_out,)
        if norm:
            for name in ("attention/output/LayerNorm", "output/LayerNorm"):
                shapes[p + name + "/gamma"] = shapes[p + name + "/beta"] = (h,)
    return shapes


def official_shapes(family, c):
    v, h, n = c["vocab_size"], c["hidden_size"], c.get("max_position_embeddings")
    if family == "nezha":
        return {"bert/embeddings/word_embeddings": (v, h), "bert/embeddings/token_type_embeddings": (2, h),
                "bert/embeddings/LayerNorm/gamma": (h,), "bert/embeddings/LayerNorm/beta": (h,),
                **bert_block_shapes("bert/encoder/layer_%d/", c)}
    if family == "gpt":
        return {"gpt/embeddings/word_embeddings": (v, h), "gpt/embeddings/position_embeddings": (n, h),
                "gpt/embeddings/token_type_embeddings": (2, h),
                **bert_block_shapes("gpt/transformer/layer_%d/", c)}
    if family == "roformer_v2":
        return {"bert/embeddings/word_embeddings": (v, h), "bert/embeddings/token_type_embeddings": (2, h),
                **bert_block_shapes("bert/encoder/layer_%d/", c, bias=False, norm=False)}
    shapes = {"newslm/embeddings/word_embed": (v, h), "newslm/embeddings/pos_embed": (n, h),
              "newslm/embeddings/LayerNorm_embed_norm/gamma": (h,), "newslm/embeddings/LayerNorm_embed_norm/beta": (h,)}
    for i in range(c["num_hidden_layers"]):
        p = "newslm/layer%02d/" % i
        for name in ("query_layer", "key_layer", "value_layer", "context_projection_layer"):
            shapes[p + name + "/kernel"], shapes[p + name + "/bias"] = (h, h), (h,)
        inner = c["intermediate_size"]
        shapes[p + "intermediate/kernel"], shapes[p + "intermediate/bias"] = (h, inner), (inner,)
        shapes[p + "output/kernel"], shapes[p + "output/bias"] = (inner, h), (h,)
        for name in ("LayerNorm_mlp_ln0", "LayerNorm_mlp_ln1"):
            shapes[p + name + "/gamma"] = shapes[p + name + "/beta"] = (h,)
    return shapes


def random_official(shapes, seed):
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("/gamma"):
            value = 1.0 + 0.2 * rng.standard_normal(shape)
        elif len(shape) == 1:
            value = 0.2 * rng.standard_normal(shape)
        elif name.endswith("/kernel"):
            value = rng.standard_normal(shape) / math.sqrt(shape[0])
        else:  # embedding tables
            value = rng.standard_normal(shape) / math.sqrt(shape[1])
        out[name] = value.astype("float32")
    return out


NUMPY_FAMILIES = {
    # family: (bert4keras model, extra config, forward, build kwargs)
    "nezha": ("nezha", dict(max_relative_position=64, use_relative_position=True), nezha_forward, {}),
    "gpt": ("gpt", dict(max_position_embeddings=128), gpt_forward, dict(final_activation="linear")),
    "gpt2_ml": ("gpt2_ml", dict(max_position_embeddings=128), gpt2_ml_forward, dict(final_activation="linear")),
    "roformer_v2": ("roformer_v2", dict(hidden_act="relu"), roformer_v2_forward, dict(with_mlm="linear")),
}


def numpy_case(root, family):
    """Random weights under the official names, a Google-style config, real Chinese text, and
    the reference computed sentence by sentence (no padding in the reference)."""
    model, extra, forward, kwargs = NUMPY_FAMILIES[family]
    c = dict(vocab_size=21128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
             hidden_act="gelu", max_position_embeddings=512, type_vocab_size=2, hidden_dropout_prob=0.1,
             attention_probs_dropout_prob=0.1, initializer_range=0.02)
    c.update(extra)
    tokenizer = wordpiece("chinese_bert_vocab.txt", 21128)
    if family == "nezha":  # longer than 64 tokens, to reach the clipped relative distances
        rows = [tokenizer(a, t, truncation="only_first", max_length=length) for (a, t), length
                in zip(csl_rows(0, 4), (100, 90, 72, 30))]
    elif family == "gpt2_ml":
        rows = [tokenizer(t) for _, t in csl_rows(20, 5)]
    else:
        rows = [tokenizer(a, b) for a, b in lcqmc_pairs(20, 5)]
    ids, valid = pad([r["input_ids"] for r in rows])
    segments, _ = pad([r["token_type_ids"] for r in rows])
    assert family != "nezha" or valid.sum(1).max() > 65, "NEZHA needs distances beyond 64"
    weights = random_official(official_shapes(family, c), seed=list(NUMPY_FAMILIES).index(family))
    per_row = []
    for i in range(len(rows)):
        n = int(valid[i].sum())
        args = (ids[i, :n],) if family == "gpt2_ml" else (ids[i, :n], segments[i, :n])
        per_row.append(forward({k: v.astype("float64") for k, v in weights.items()}, *args, c))
    reference = []
    for j in range(len(per_row[0])):
        out = np.zeros(ids.shape + per_row[0][j].shape[-1:], "float32")
        for i, row in enumerate(per_row):
            out[i, : len(row[j])] = row[j]
        reference.append(out)
    config = root / "bert_config.json"
    config.write_text(json.dumps(c))
    inputs = [ids] if family == "gpt2_ml" else [ids, segments]
    return Case(model, kwargs, inputs, reference, [valid] * len(reference), str(config),
                write_official(root, weights, name="bert_model.ckpt"), weights)


# --- fixtures ------------------------------------------------------------------------------------

HF_CASES = ["albert", "albert_mlm", "electra_discriminator", "electra_generator", "roformer", "gpt2"]
T5_VERSIONS = list(T5_SETUPS)
NUMPY_CASES = list(NUMPY_FAMILIES)


class Zoo:
    """Cases built on first use and kept for the module, and the models loaded from them (each
    checkpoint is loaded once: parity and round-trip tests share the builder)."""

    def __init__(self, tmp_path_factory, sentences):
        self.tmp_path_factory, self.sentences = tmp_path_factory, sentences
        self.cases, self.loaded = {}, {}

    def __call__(self, name):
        if name not in self.cases:
            root = self.tmp_path_factory.mktemp(name.replace(".", "_"))
            if name.startswith("albert"):
                self.cases.update(albert_cases(root))
            elif name.startswith("electra"):
                self.cases.update(electra_cases(root, self.sentences))
            elif name == "roformer":
                self.cases.update(roformer_cases(root))
            elif name == "gpt2":
                self.cases.update(gpt2_cases(root))
            elif name in T5_SETUPS:
                self.cases[name] = t5_case(root, name, self.sentences)
            else:
                self.cases[name] = numpy_case(root, name)
        return self.cases[name]

    def load(self, name, source):
        """(builder, outputs on the case's inputs) of the case's model loaded from ``source``."""
        if (name, source) not in self.loaded:
            case = self(name)
            builder = case.build(source, return_keras_model=False)
            self.loaded[name, source] = builder, run(builder.model, case.inputs)
        return self.loaded[name, source]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, sst2_sentences):
    return Zoo(tmp_path_factory, sst2_sentences)


# --- parity ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["hf", "official"])
@pytest.mark.parametrize("name", HF_CASES + T5_VERSIONS)
def test_matches_transformers(zoo, name, source):
    zoo(name).check(zoo.load(name, source)[1])


@pytest.mark.parametrize("name", NUMPY_CASES)
def test_matches_numpy_reference(zoo, name):
    zoo(name).check(zoo.load(name, "official")[1])


@pytest.mark.parametrize("version", T5_VERSIONS)
def test_t5_encoder_and_decoder_match_transformers(zoo, version):
    """t5.encoder gives the encoder states (padded positions aside); t5.decoder maps those
    states, padding included, and the decoder ids to the same logits as the whole model."""
    case = zoo(version)
    t5 = zoo.load(version, "official")[0]
    enc_ids, dec_ids = case.inputs
    states = run(t5.encoder, [enc_ids])[0]
    assert_close(states, case.extra["encoder_states"], case.extra["encoder_valid"], "encoder states")
    np.testing.assert_array_equal(states[~case.extra["encoder_valid"]], 0.0)
    case.check(run(t5.decoder, [states, dec_ids]))


def test_albert_unshared_matches_transformers(zoo):
    """'albert_unshared' copies the one official ALBERT block into every layer."""
    case = zoo("albert")
    model = build_transformer_model(*case.paths("official"), model="albert_unshared", **case.kwargs)
    assert model.get_layer("Transformer-2-FeedForward") is not model.get_layer("Transformer-0-FeedForward")
    case.check(run(model, case.inputs))


def test_t5_encoder_and_decoder_model_names(zoo):
    """'mt5.1.1_encoder' and 'mt5.1.1_decoder' load their halves of the same checkpoint."""
    case = zoo("mt5.1.1")
    enc_ids, dec_ids = case.inputs
    encoder = build_transformer_model(*case.paths("official"), model="mt5.1.1_encoder")
    decoder = build_transformer_model(*case.paths("official"), model="mt5.1.1_decoder", with_lm="linear")
    states = run(encoder, [enc_ids])[0]
    assert_close(states, case.extra["encoder_states"], case.extra["encoder_valid"], "encoder states")
    case.check(run(decoder, [states, dec_ids]))


def test_gpt2_token_id_zero_is_not_padding(zoo):
    """Row 1 holds id 0 in the middle: every later position must still see it."""
    case = zoo("gpt2")
    ids = case.inputs[0]
    assert (ids[1] == 0).any() and ids[1, -1] != 0
    logits = zoo.load("gpt2", "hf")[1][0]
    np.testing.assert_allclose(logits[1], case.reference[0][1], atol=ATOL, rtol=0)


# --- official names in and out -------------------------------------------------------------------


@pytest.mark.parametrize("name", HF_CASES + T5_VERSIONS + NUMPY_CASES)
def test_save_weights_as_checkpoint_round_trip(zoo, name, tmp_path):
    """save_weights_as_checkpoint writes exactly the official names and values (no junk), and the
    written checkpoint loads back to identical outputs."""
    import tensorflow as tf

    case = zoo(name)
    builder, before = zoo.load(name, "official")
    prefix = str(tmp_path / "out" / "model.ckpt")
    mapping = getattr(builder, case.save_mapping)() if case.save_mapping else None
    builder.save_weights_as_checkpoint(prefix, mapping=mapping)

    reader = tf.train.load_checkpoint(prefix)
    assert sorted(reader.get_variable_to_shape_map()) == sorted(case.official)
    for variable, value in case.official.items():
        np.testing.assert_array_equal(reader.get_tensor(variable), value, err_msg=variable)

    reloaded = build_transformer_model(case.official_config, prefix, model=case.model, **case.kwargs)
    for a, b in zip(run(reloaded, case.inputs), before):
        np.testing.assert_array_equal(a, b)


# The released Mesh-TF names of a T5 v1.1 / mT5 with 2 encoder and 2 decoder blocks, written out
# from Google's checkpoints (t5.1.1: text-to-text-transfer-transformer; mT5: multilingual-t5).
T5_V11_NAMES = [
    "shared/embedding",
    "encoder/block_000/layer_000/SelfAttention/q",
    "encoder/block_000/layer_000/SelfAttention/k",
    "encoder/block_000/layer_000/SelfAttention/v",
    "encoder/block_000/layer_000/SelfAttention/o",
    "encoder/block_000/layer_000/SelfAttention/relative_attention_bias",
    "encoder/block_000/layer_001/DenseReluDense/wi_0/kernel",
    "encoder/block_000/layer_001/DenseReluDense/wi_1/kernel",
    "encoder/block_000/layer_001/DenseReluDense/wo/kernel",
    "encoder/block_001/layer_000/SelfAttention/q",
    "encoder/block_001/layer_000/SelfAttention/k",
    "encoder/block_001/layer_000/SelfAttention/v",
    "encoder/block_001/layer_000/SelfAttention/o",
    "encoder/block_001/layer_001/DenseReluDense/wi_0/kernel",
    "encoder/block_001/layer_001/DenseReluDense/wi_1/kernel",
    "encoder/block_001/layer_001/DenseReluDense/wo/kernel",
    "decoder/block_000/layer_000/SelfAttention/q",
    "decoder/block_000/layer_000/SelfAttention/k",
    "decoder/block_000/layer_000/SelfAttention/v",
    "decoder/block_000/layer_000/SelfAttention/o",
    "decoder/block_000/layer_000/SelfAttention/relative_attention_bias",
    "decoder/block_000/layer_001/EncDecAttention/q",
    "decoder/block_000/layer_001/EncDecAttention/k",
    "decoder/block_000/layer_001/EncDecAttention/v",
    "decoder/block_000/layer_001/EncDecAttention/o",
    "decoder/block_000/layer_002/DenseReluDense/wi_0/kernel",
    "decoder/block_000/layer_002/DenseReluDense/wi_1/kernel",
    "decoder/block_000/layer_002/DenseReluDense/wo/kernel",
    "decoder/block_001/layer_000/SelfAttention/q",
    "decoder/block_001/layer_000/SelfAttention/k",
    "decoder/block_001/layer_000/SelfAttention/v",
    "decoder/block_001/layer_000/SelfAttention/o",
    "decoder/block_001/layer_001/EncDecAttention/q",
    "decoder/block_001/layer_001/EncDecAttention/k",
    "decoder/block_001/layer_001/EncDecAttention/v",
    "decoder/block_001/layer_001/EncDecAttention/o",
    "decoder/block_001/layer_002/DenseReluDense/wi_0/kernel",
    "decoder/block_001/layer_002/DenseReluDense/wi_1/kernel",
    "decoder/block_001/layer_002/DenseReluDense/wo/kernel",
    "decoder/logits/kernel",
]
T5_V11_NORM_NAMES = {
    "t5.1.1": [
        "encoder/block_000/layer_000/layer_norm/scale",
        "encoder/block_000/layer_001/layer_norm/scale",
        "encoder/block_001/layer_000/layer_norm/scale",
        "encoder/block_001/layer_001/layer_norm/scale",
        "encoder/final_layer_norm/scale",
        "decoder/block_000/layer_000/layer_norm/scale",
        "decoder/block_000/layer_001/layer_norm/scale",
        "decoder/block_000/layer_002/layer_norm/scale",
        "decoder/block_001/layer_000/layer_norm/scale",
        "decoder/block_001/layer_001/layer_norm/scale",
        "decoder/block_001/layer_002/layer_norm/scale",
        "decoder/final_layer_norm/scale",
    ],
    "mt5.1.1": [
        "encoder/block_000/layer_000/rms_norm/scale",
        "encoder/block_000/layer_001/rms_norm/scale",
        "encoder/block_001/layer_000/rms_norm/scale",
        "encoder/block_001/layer_001/rms_norm/scale",
        "encoder/rms_norm/scale",
        "decoder/block_000/layer_000/rms_norm/scale",
        "decoder/block_000/layer_001/rms_norm/scale",
        "decoder/block_000/layer_002/rms_norm/scale",
        "decoder/block_001/layer_000/rms_norm/scale",
        "decoder/block_001/layer_001/rms_norm/scale",
        "decoder/block_001/layer_002/rms_norm/scale",
        "decoder/rms_norm/scale",
    ],
}


@pytest.mark.parametrize("version", list(T5_V11_NORM_NAMES))
def test_t5_variable_mapping_gives_the_released_names(version):
    builder = build_transformer_model(None, None, model=version, return_keras_model=False, vocab_size=50,
                                      hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=24, hidden_act=["gelu_new", "linear"])
    names = [as_var(spec).name for specs in builder.variable_mapping().values() for spec in specs]
    assert sorted(names) == sorted(T5_V11_NAMES + T5_V11_NORM_NAMES[version])


@pytest.mark.parametrize("version, norms", [("t5.1.1", "layer_norm"), ("t5.1.1", "rms_norm"),
                                            ("mt5.1.1", "rms_norm"), ("mt5.1.1", "layer_norm")])
def test_t5_checkpoint_with_the_other_norm_names_loads_with_one_warning(zoo, version, norms, tmp_path):
    """t5.1.1 and mt5.1.1 checkpoints differ only in their norm names. Named the other
    version's way, one loads anyway, with one warning naming both conventions, to the same
    outputs, and saves back under its own version's names; named its own way, without warning."""
    import tensorflow as tf
    from safetensors.numpy import load_file

    case = zoo(version)
    mixed_up = norms != official_names.T5_VERSION_NORMS[version]
    variables = official_names.t5_mesh_tf(load_file(os.path.join(case.hf_dir, "model.safetensors")), version,
                                          norms=norms)
    assert (set(variables) != set(case.official)) == mixed_up
    prefix = write_official(tmp_path, variables, optimizer="adafactor")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        builder = build_transformer_model(case.official_config, prefix, model=version, return_keras_model=False,
                                          **case.kwargs)
    messages = [str(w.message) for w in caught]
    if mixed_up:
        assert len(messages) == 1, messages
        assert "'layer_norm', 'final_layer_norm'" in messages[0] and "'rms_norm'" in messages[0], messages[0]
    else:
        assert messages == []
    outputs = run(builder.model, case.inputs)
    case.check(outputs)
    for got, want in zip(outputs, zoo.load(version, "official")[1]):
        np.testing.assert_array_equal(got, want)
    saved = str(tmp_path / "out" / "model.ckpt")
    builder.save_weights_as_checkpoint(saved)
    assert sorted(tf.train.load_checkpoint(saved).get_variable_to_shape_map()) == sorted(case.official)


def test_gpt2_cpm_names_round_trip(zoo, tmp_path):
    """GPT-2's default save writes bert4keras's CPM-LM names, which load back identically."""
    import tensorflow as tf

    case = zoo("gpt2")
    builder = zoo.load("gpt2", "hf")[0]
    prefix = str(tmp_path / "model.ckpt")
    builder.save_weights_as_checkpoint(prefix)
    names = set(tf.train.load_checkpoint(prefix).get_variable_to_shape_map())
    assert "gpt/embeddings/word_embeddings" in names and "gpt/output/LayerNorm/gamma" in names
    assert "gpt/transformer/layer_1/attention/input/LayerNorm/beta" in names
    assert not any(n.startswith("model/") for n in names)
    reloaded = build_transformer_model(case.official_config, prefix, model="gpt2", **case.kwargs)
    case.check(run(reloaded, case.inputs))


# Checkpoint of one family, loaded as another: the first variable of the target's mapping is named.
WRONG_FAMILY = [
    # (checkpoint of, loaded as, source, message)
    ("albert", "electra_discriminator", "official", r"'electra/embeddings/word_embeddings'.*not found"),
    ("electra_discriminator", "albert", "official", r"'bert/embeddings/word_embeddings'.*not found"),
    ("gpt2", "t5.1.0", "official", r"'shared/embedding'.*not found"),
    ("t5.1.1", "roformer", "official", r"'bert/embeddings/word_embeddings'.*not found"),
    ("roformer", "gpt2_ml", "official", r"'newslm/embeddings/word_embed'.*not found"),
    ("albert", "roformer", "hf", r"'(roformer\.)?embeddings\.word_embeddings\.weight'.*not found"),
    ("gpt2", "t5.1.1", "hf", r"'shared\.weight'.*not found"),
    ("t5.1.0", "gpt2", "hf", r"'(transformer\.)?wte\.weight'.*not found"),
]


@pytest.mark.parametrize("source_case, target_case, source, message", WRONG_FAMILY,
                         ids=[f"{a}-as-{b}-{s}" for a, b, s, _ in WRONG_FAMILY])
def test_checkpoint_of_another_family_names_first_missing_variable(zoo, source_case, target_case, source, message):
    checkpoint = zoo(source_case).paths(source)[1]
    target = zoo(target_case)
    with pytest.raises(ValueError, match=message):
        build_transformer_model(target.paths(source)[0], checkpoint, model=target.model, **target.kwargs)
