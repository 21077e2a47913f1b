"""Golden lists: the official checkpoint names each family loads, for a 2-layer model.

Written out from the released checkpoints' conventions (not from our mappings):
Google BERT (google-research/bert, `bert/encoder/layer_%d/...`), ALBERT (google-research/albert,
one shared `group_0/inner_group_0` block), ELECTRA (google-research/electra: `electra/` for the
discriminator, `generator/` for the generator's blocks), NEZHA and RoFormer (BERT's names, as
their releases and bert4keras 0.11.5), RoFormer-V2 (BERT's names without biases and norms),
bert4keras's converted CDial-GPT (`gpt/transformer/layer_%d/...`) and CPM-LM GPT-2 names
(`.../input/LayerNorm`, `gpt/output/LayerNorm`), OpenAI's GPT-2 release (openai/gpt-2:
`model/h%d/attn/c_attn/w` with q|k|v fused) and GPT2-ML (imcaspar/gpt2-ml, `newslm/layer%02d/`).
Each list is per layer, in the order of the layer's weights.
"""

import pytest

from bert4keras.checkpoints import as_var
from bert4keras.models import build_transformer_model

TINY = dict(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            hidden_act="gelu", max_position=32)
KB, BG = ("kernel", "bias"), ("beta", "gamma")


def pair(prefix, names=KB):
    return [f"{prefix}/{n}" for n in names]


def bert_embeddings(root, norm=True, segments=True):
    names = {"Embedding-Token": [f"{root}/embeddings/word_embeddings"]}
    if segments:
        names["Embedding-Segment"] = [f"{root}/embeddings/token_type_embeddings"]
    names["Embedding-Position"] = [f"{root}/embeddings/position_embeddings"]
    if norm:
        names["Embedding-Norm"] = pair(f"{root}/embeddings/LayerNorm", BG)
    return names


def bert_layer(i, p, attention_norm="attention/output/LayerNorm", output_norm="output/LayerNorm"):
    return {
        f"Transformer-{i}-MultiHeadSelfAttention": pair(p + "attention/self/query") + pair(p + "attention/self/key")
        + pair(p + "attention/self/value") + pair(p + "attention/output/dense"),
        f"Transformer-{i}-MultiHeadSelfAttention-Norm": pair(p + attention_norm, BG),
        f"Transformer-{i}-FeedForward": pair(p + "intermediate/dense") + pair(p + "output/dense"),
        f"Transformer-{i}-FeedForward-Norm": pair(p + output_norm, BG),
    }


def bert_heads():
    return {
        "Pooler-Dense": pair("bert/pooler/dense"),
        "NSP-Proba": ["cls/seq_relationship/output_weights", "cls/seq_relationship/output_bias"],
        "MLM-Dense": pair("cls/predictions/transform/dense"),
        "MLM-Norm": pair("cls/predictions/transform/LayerNorm", BG),
        "MLM-Bias": ["cls/predictions/output_bias"],
    }


def expected_bert():
    names = bert_embeddings("bert")
    for i in range(2):
        names.update(bert_layer(i, f"bert/encoder/layer_{i}/"))
    names.update(bert_heads())
    return names


def expected_relative():
    """NEZHA and RoFormer: BERT's names; their positions are relative / rotary, not embedded."""
    names = expected_bert()
    del names["Embedding-Position"]
    return names


def expected_albert():
    names = bert_embeddings("bert")
    names["Embedding-Mapping"] = pair("bert/encoder/embedding_hidden_mapping_in")
    p = "bert/encoder/transformer/group_0/inner_group_0/"
    names.update({
        "Transformer-MultiHeadSelfAttention": pair(p + "attention_1/self/query") + pair(p + "attention_1/self/key")
        + pair(p + "attention_1/self/value") + pair(p + "attention_1/output/dense"),
        "Transformer-MultiHeadSelfAttention-Norm": pair(p + "LayerNorm", BG),
        "Transformer-FeedForward": pair(p + "ffn_1/intermediate/dense") + pair(p + "ffn_1/intermediate/output/dense"),
        "Transformer-FeedForward-Norm": pair(p + "LayerNorm_1", BG),
    })
    names.update(bert_heads())
    return names


def expected_electra_discriminator():
    names = bert_embeddings("electra")
    names["Embedding-Mapping"] = pair("electra/embeddings_project")
    for i in range(2):
        names.update(bert_layer(i, f"electra/encoder/layer_{i}/"))
    names["Discriminator-Dense"] = pair("discriminator_predictions/dense")
    names["Discriminator-Prediction"] = pair("discriminator_predictions/dense_1")
    return names


def expected_electra_generator():
    names = bert_embeddings("electra")  # the generator shares the discriminator's embeddings
    names["Embedding-Mapping"] = pair("generator/embeddings_project")
    for i in range(2):
        names.update(bert_layer(i, f"generator/encoder/layer_{i}/"))
    names["MLM-Dense"] = pair("generator_predictions/dense")
    names["MLM-Norm"] = pair("generator_predictions/LayerNorm", BG)
    names["MLM-Bias"] = ["generator_predictions/output_bias"]
    return names


def expected_roformer_v2():
    names = {"Embedding-Token": ["bert/embeddings/word_embeddings"],
             "Embedding-Segment": ["bert/embeddings/token_type_embeddings"]}
    for i in range(2):
        p = f"bert/encoder/layer_{i}/"
        names[f"Transformer-{i}-MultiHeadSelfAttention"] = [
            p + "attention/self/query/kernel", p + "attention/self/key/kernel", p + "attention/self/value/kernel",
            p + "attention/output/dense/kernel"]
        names[f"Transformer-{i}-FeedForward"] = [p + "intermediate/dense/kernel", p + "output/dense/kernel"]
    return names


def expected_gpt():
    names = bert_embeddings("gpt", norm=False)
    for i in range(2):
        names.update(bert_layer(i, f"gpt/transformer/layer_{i}/"))
    return names


def expected_gpt2_cpm():
    names = bert_embeddings("gpt", norm=False, segments=False)
    for i in range(2):
        names.update(bert_layer(i, f"gpt/transformer/layer_{i}/", "attention/input/LayerNorm", "input/LayerNorm"))
    names["Output-Norm"] = pair("gpt/output/LayerNorm", BG)
    return names


def expected_gpt2_openai():
    names = {"Embedding-Token": ["model/wte"], "Embedding-Position": ["model/wpe"]}
    for i in range(2):
        p = f"model/h{i}/"
        names.update({
            f"Transformer-{i}-MultiHeadSelfAttention-Norm": [p + "ln_1/b", p + "ln_1/g"],
            # q, k and v are thirds of the fused c_attn
            f"Transformer-{i}-MultiHeadSelfAttention": [p + "attn/c_attn/w", p + "attn/c_attn/b"] * 3
            + [p + "attn/c_proj/w", p + "attn/c_proj/b"],
            f"Transformer-{i}-FeedForward-Norm": [p + "ln_2/b", p + "ln_2/g"],
            f"Transformer-{i}-FeedForward": [p + "mlp/c_fc/w", p + "mlp/c_fc/b", p + "mlp/c_proj/w", p + "mlp/c_proj/b"],
        })
    names["Output-Norm"] = ["model/ln_f/b", "model/ln_f/g"]
    return names


def expected_gpt2_ml():
    names = {"Embedding-Token": ["newslm/embeddings/word_embed"], "Embedding-Position": ["newslm/embeddings/pos_embed"],
             "Embedding-Norm": pair("newslm/embeddings/LayerNorm_embed_norm", BG)}
    for i in range(2):
        p = f"newslm/layer{i:02d}/"
        names.update({
            f"Transformer-{i}-MultiHeadSelfAttention": pair(p + "query_layer") + pair(p + "key_layer")
            + pair(p + "value_layer") + pair(p + "context_projection_layer"),
            f"Transformer-{i}-FeedForward-Norm-0": pair(p + "LayerNorm_mlp_ln0", BG),
            f"Transformer-{i}-FeedForward": pair(p + "intermediate") + pair(p + "output"),
            f"Transformer-{i}-FeedForward-Norm-1": pair(p + "LayerNorm_mlp_ln1", BG),
        })
    return names


CASES = {
    "bert": (dict(model="bert", with_pool=True, with_nsp=True, with_mlm=True), "variable_mapping", expected_bert),
    "nezha": (dict(model="nezha", with_pool=True, with_nsp=True, with_mlm=True), "variable_mapping", expected_relative),
    "roformer": (dict(model="roformer", with_pool=True, with_nsp=True, with_mlm=True), "variable_mapping",
                 expected_relative),
    "roformer_v2": (dict(model="roformer_v2"), "variable_mapping", expected_roformer_v2),
    "albert": (dict(model="albert", embedding_size=8, with_pool=True, with_nsp=True, with_mlm=True),
               "variable_mapping", expected_albert),
    "electra": (dict(model="electra", embedding_size=8, with_discriminator=True), "variable_mapping",
                expected_electra_discriminator),
    "electra-generator": (dict(model="electra", embedding_size=8, with_mlm=True), "variable_mapping",
                          expected_electra_generator),
    "gpt": (dict(model="gpt"), "variable_mapping", expected_gpt),
    "gpt2-cpm": (dict(model="gpt2"), "variable_mapping", expected_gpt2_cpm),
    "gpt2-openai": (dict(model="gpt2"), "openai_variable_mapping", expected_gpt2_openai),
    "gpt2_ml": (dict(model="gpt2_ml"), "variable_mapping", expected_gpt2_ml),
}


@pytest.mark.parametrize("case", list(CASES))
def test_official_names_of_a_two_layer_model(case):
    kwargs, method, expected = CASES[case]
    builder = build_transformer_model(**TINY, **kwargs, return_keras_model=False)
    mapping = getattr(builder, method)()
    # layers with trainable weights (NEZHA's relative position table is a fixed sinusoid)
    weighted = {name: layer for name, layer in builder.layers.items() if getattr(layer, "trainable_weights", None)}
    loaded = {layer: [as_var(v).name for v in specs] for layer, specs in mapping.items() if layer in weighted}
    assert loaded == expected()
    # every weight of the model has a name (and nothing else does)
    for layer, names in loaded.items():
        assert len(names) == len(weighted[layer].weights), layer
    assert set(loaded) == set(weighted)
