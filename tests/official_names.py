"""Rename Hugging Face state dicts to the official TF checkpoint names of each model family.

Written from the official layouts (google-research/albert and electra, OpenAI gpt-2,
Mesh-TensorFlow T5, bert4keras's converted RoFormer), independently of bert4keras.models, so
that loading the result exercises the library's `variable_mapping()`. Each function consumes
every tensor of the state dict it is given (a leftover raises), returns ``{name: ndarray}``
with TF layouts (dense kernels ``(in, out)``), and never adds optimizer junk: see `with_junk`.
"""

import re

import numpy as np

from conftest import hf_to_google_names


class _Renamer:
    """Pops HF tensors by name and stores them under official names."""

    def __init__(self, state):
        self.state = dict(state)
        self.out = {}

    def take(self, hf_name, official, transform=None):
        value = np.asarray(self.state.pop(hf_name))
        self.out[official] = np.ascontiguousarray(transform(value) if transform else value)

    def dense(self, hf, official, bias=True):
        """torch ``Linear`` ``hf.{weight,bias}`` -> TF ``official/{kernel,bias}``."""
        self.take(hf + ".weight", official + "/kernel", np.transpose)
        if bias:
            self.take(hf + ".bias", official + "/bias")

    def layer_norm(self, hf, official):
        self.take(hf + ".weight", official + "/gamma")
        self.take(hf + ".bias", official + "/beta")

    def done(self, ignore=()):
        left = [k for k in self.state if not any(re.fullmatch(p, k) for p in ignore)]
        if left:
            raise AssertionError(f"HF tensors without an official name: {left}")
        return self.out


def _bert_body(state, hf_prefix, official_prefix):
    """The BERT-layout body under ``hf_prefix`` (``embeddings.*``, ``encoder.layer.*``, ...),
    renamed by conftest's Google BERT renamer, then moved under ``official_prefix``."""
    body = {"bert." + k[len(hf_prefix):]: v for k, v in state.items() if k.startswith(hf_prefix)}
    return {official_prefix + k[len("bert/"):]: v for k, v in hf_to_google_names(body).items()}


def albert(state):
    """AlbertForPreTraining / AlbertForMaskedLM -> google-research/albert names (one group)."""
    r = _Renamer(state)
    r.take("albert.embeddings.word_embeddings.weight", "bert/embeddings/word_embeddings")
    r.take("albert.embeddings.position_embeddings.weight", "bert/embeddings/position_embeddings")
    r.take("albert.embeddings.token_type_embeddings.weight", "bert/embeddings/token_type_embeddings")
    r.layer_norm("albert.embeddings.LayerNorm", "bert/embeddings/LayerNorm")
    r.dense("albert.encoder.embedding_hidden_mapping_in", "bert/encoder/embedding_hidden_mapping_in")
    hf = "albert.encoder.albert_layer_groups.0.albert_layers.0."
    tf = "bert/encoder/transformer/group_0/inner_group_0/"
    for part in ("query", "key", "value"):
        r.dense(hf + "attention." + part, tf + "attention_1/self/" + part)
    r.dense(hf + "attention.dense", tf + "attention_1/output/dense")
    r.layer_norm(hf + "attention.LayerNorm", tf + "LayerNorm")
    r.dense(hf + "ffn", tf + "ffn_1/intermediate/dense")
    r.dense(hf + "ffn_output", tf + "ffn_1/intermediate/output/dense")
    r.layer_norm(hf + "full_layer_layer_norm", tf + "LayerNorm_1")
    if "albert.pooler.weight" in r.state:
        r.dense("albert.pooler", "bert/pooler/dense")
    r.dense("predictions.dense", "cls/predictions/transform/dense")
    r.layer_norm("predictions.LayerNorm", "cls/predictions/transform/LayerNorm")
    r.take("predictions.bias", "cls/predictions/output_bias")
    if "sop_classifier.classifier.weight" in r.state:
        # BERT/ALBERT keep this one as (2, hidden), i.e. like torch.
        r.take("sop_classifier.classifier.weight", "cls/seq_relationship/output_weights")
        r.take("sop_classifier.classifier.bias", "cls/seq_relationship/output_bias")
    return r.done(ignore=[r"predictions\.decoder\..*"])


def electra(discriminator, generator=None):
    """ElectraForPreTraining (+ ElectraForMaskedLM sharing its embeddings) -> the names of
    google-research/electra's pretraining checkpoint: ``electra/...`` discriminator body,
    ``discriminator_predictions/dense{,_1}``, ``generator/...`` body and
    ``generator_predictions/...`` head, one ``electra/embeddings`` for both."""
    r = _Renamer(discriminator)
    r.out.update(_bert_body(r.state, "electra.", "electra/"))
    r.state = {k: v for k, v in r.state.items() if not k.startswith("electra.")}
    r.dense("discriminator_predictions.dense", "discriminator_predictions/dense")
    r.dense("discriminator_predictions.dense_prediction", "discriminator_predictions/dense_1")
    out = r.done()
    if generator is not None:
        g = _Renamer(generator)
        for name, value in _bert_body(g.state, "electra.", "generator/").items():
            if name.startswith("generator/embeddings/"):
                shared = "electra/" + name[len("generator/"):]
                np.testing.assert_array_equal(value, out[shared], err_msg=f"{name} is not shared")
            else:
                g.out[name] = value
        g.state = {k: v for k, v in g.state.items() if not k.startswith("electra.")}
        g.dense("generator_predictions.dense", "generator_predictions/dense")
        g.layer_norm("generator_predictions.LayerNorm", "generator_predictions/LayerNorm")
        g.take("generator_lm_head.bias", "generator_predictions/output_bias")
        out.update(g.done(ignore=[r"generator_lm_head\.weight"]))
    return out


def roformer(state):
    """RoFormerForMaskedLM -> bert4keras's converted RoFormer names: BERT's, without a
    position table (HF's ``embed_positions`` is the fixed sinusoidal table)."""
    r = _Renamer(state)
    body = {k: v for k, v in r.state.items() if k.startswith("roformer.") and "embed_positions" not in k}
    r.out.update(_bert_body(body, "roformer.", "bert/"))
    r.state = {k: v for k, v in r.state.items() if not k.startswith("roformer.")}
    r.dense("cls.predictions.transform.dense", "cls/predictions/transform/dense")
    r.layer_norm("cls.predictions.transform.LayerNorm", "cls/predictions/transform/LayerNorm")
    r.take("cls.predictions.bias", "cls/predictions/output_bias")
    return r.done(ignore=[r"cls\.predictions\.decoder\..*"])


def gpt2_openai(state):
    """GPT2LMHeadModel -> OpenAI's gpt-2 TF names. HF's Conv1D weights are already
    ``(in, out)``; OpenAI stores them as 1x1 convolutions ``[1, in, out]``."""
    r = _Renamer(state)
    r.take("transformer.wte.weight", "model/wte")
    r.take("transformer.wpe.weight", "model/wpe")
    layers = sorted({int(m.group(1)) for k in state for m in [re.match(r"transformer\.h\.(\d+)\.", k)] if m})
    for i in layers:
        hf, tf = f"transformer.h.{i}.", f"model/h{i}/"
        for norm in ("ln_1", "ln_2"):
            r.take(hf + norm + ".weight", tf + norm + "/g")
            r.take(hf + norm + ".bias", tf + norm + "/b")
        for dense in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
            path = tf + dense.replace(".", "/")
            r.take(hf + dense + ".weight", path + "/w", lambda w: w[None])
            r.take(hf + dense + ".bias", path + "/b")
    r.take("transformer.ln_f.weight", "model/ln_f/g")
    r.take("transformer.ln_f.bias", "model/ln_f/b")
    return r.done(ignore=[r"lm_head\.weight", r".*\.attn\.(masked_)?bias"])


def gpt2_hparams(config):
    """OpenAI's ``hparams.json`` for an HF GPT2Config."""
    return dict(n_vocab=config.vocab_size, n_ctx=config.n_positions, n_embd=config.n_embd,
                n_head=config.n_head, n_layer=config.n_layer)


# Norm-scale names of Google's released Mesh-TF checkpoints, (in each block, after each stack):
# T5 (t5.1.0) and T5 v1.1 (google-research/text-to-text-transfer-transformer) use layer_norm
# and final_layer_norm; mT5 (google-research/multilingual-t5) uses rms_norm for all of them.
T5_NORMS = {"layer_norm": ("layer_norm", "final_layer_norm"), "rms_norm": ("rms_norm", "rms_norm")}
T5_VERSION_NORMS = {"t5.1.0": "layer_norm", "t5.1.1": "layer_norm", "mt5.1.1": "rms_norm"}


def t5_mesh_tf(state, version, norms=None):
    """T5ForConditionalGeneration / MT5ForConditionalGeneration -> Mesh-TF names.

    version: ``'t5.1.0'`` (``wi``, logits tied to ``shared/embedding``), ``'t5.1.1'`` or
    ``'mt5.1.1'`` (``wi_0``/``wi_1``, ``decoder/logits/kernel``). norms: ``'layer_norm'``
    (``block_%03d/layer_%03d/layer_norm/scale``, ``{encoder,decoder}/final_layer_norm/scale``:
    the T5 and T5 v1.1 releases) or ``'rms_norm'`` (``.../rms_norm/scale`` and
    ``{encoder,decoder}/rms_norm/scale``: the mT5 releases); default the version's own.
    Mesh-TF keeps dense kernels ``(in, out)`` without a ``/kernel`` suffix in attention, and the
    relative attention bias as ``(heads, buckets)``.
    """
    v11 = version in ("t5.1.1", "mt5.1.1")
    block_norm, final_norm = T5_NORMS[norms or T5_VERSION_NORMS[version]]
    r = _Renamer(state)
    T = np.transpose
    r.take("shared.weight", "shared/embedding")
    for stack in ("encoder", "decoder"):
        blocks = sorted({int(m.group(1)) for k in state for m in [re.match(stack + r"\.block\.(\d+)\.", k)] if m})
        sublayers = ["SelfAttention", "DenseReluDense"] if stack == "encoder" else \
            ["SelfAttention", "EncDecAttention", "DenseReluDense"]
        for i in blocks:
            for j, sub in enumerate(sublayers):
                hf = f"{stack}.block.{i}.layer.{j}."
                tf = f"{stack}/block_{i:03d}/layer_{j:03d}/"
                if sub == "DenseReluDense":
                    for w in ("wi_0", "wi_1", "wo") if v11 else ("wi", "wo"):
                        r.take(hf + f"{sub}.{w}.weight", tf + f"{sub}/{w}/kernel", T)
                else:
                    for w in "qkvo":
                        r.take(hf + f"{sub}.{w}.weight", tf + f"{sub}/{w}", T)
                    if i == 0 and sub == "SelfAttention":
                        r.take(hf + f"{sub}.relative_attention_bias.weight", tf + f"{sub}/relative_attention_bias", T)
                r.take(hf + "layer_norm.weight", tf + f"{block_norm}/scale")
        r.take(f"{stack}.final_layer_norm.weight", f"{stack}/{final_norm}/scale")
    if v11:
        r.take("lm_head.weight", "decoder/logits/kernel", T)
    return r.done(ignore=[r"(encoder|decoder)\.embed_tokens\.weight", r"lm_head\.weight"])


def with_junk(variables, optimizer="adam"):
    """Add what real checkpoints carry besides the weights: ``global_step`` and the optimizer
    slots of two variables (Adam ``adam_m``/``adam_v``; Adafactor ``_slot_vc``/``_slot_vr``)."""
    out = dict(variables)
    out["global_step"] = np.array(123456, np.int64)
    for name in sorted(variables)[:2]:
        value = np.asarray(variables[name])
        if optimizer == "adam":
            out[name + "/adam_m"] = np.full_like(value, 7.0)
            out[name + "/adam_v"] = np.full_like(value, 9.0)
        else:
            out[name + "_slot_vc"] = np.full(value.shape[-1:], 7.0, value.dtype)
            out[name + "_slot_vr"] = np.full(value.shape[:1], 9.0, value.dtype)
    return out
