"""Property tests (hypothesis) of `Tokenizer` and `SpTokenizer` on random Unicode text.

Texts mix arbitrary code points (control characters, combining marks, CJK, emoji, private use,
unassigned), whitespace runs, very long words and literal special tokens (``[SEP]``). For
every text: no exception, ``len(token_ids) <= maxlen``, segment ids as long, ids inside the
vocabulary, `rematch` offsets inside the text and non-decreasing, and pure lowercase-ASCII
texts decode back to themselves.

Profiles (``settings.register_profile``), chosen by the environment variable
``HYPOTHESIS_PROFILE``:

* ``ci`` (default): 10,200 examples in total over the tests below, no deadline.
* ``long``: 20x as many (204,000 examples), run by hand::

      HYPOTHESIS_PROFILE=long KERAS_BACKEND=tensorflow /work/venv/bin/python -m pytest -q \\
          tests/test_fuzz_tokenizers.py

The tokenizers are pure Python / Rust and never touch Keras, so the results cannot depend on
the Keras backend: the file runs only under ``KERAS_BACKEND=tensorflow`` (the default
backend) and is skipped on the others, to keep the three-backend CI budget.
"""

import os
import string

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bert4keras.tokenizers import SpTokenizer, Tokenizer  # noqa: E402

if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
    pytest.skip(
        "tokenizers do not use Keras: fuzzed once, under KERAS_BACKEND=tensorflow",
        allow_module_level=True,
    )

SCALE = {"ci": 1, "long": 20}
# No example database: nothing written into the work tree; failures print a reproduction blob.
_common = dict(deadline=None, database=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
settings.register_profile("ci", **_common)
settings.register_profile("long", **_common)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
if PROFILE not in SCALE:
    raise ValueError(f"HYPOTHESIS_PROFILE must be one of {sorted(SCALE)}, got {PROFILE!r}")
settings.load_profile(PROFILE)


def examples(n):
    """Per-test example count: ``n`` in the ci profile, ``SCALE[profile] * n`` otherwise."""
    return settings(max_examples=n * SCALE[PROFILE])


def _data(*parts):
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data")
    return os.path.join(os.environ.get("BERT4KERAS_DATA") or default, *parts)


# ------------------------------------------------------------------------------ text strategies

WHITESPACE = " \t\n\r\u00a0\u2000\u2003\u3000\u200b\u2028\x0b\x0c"
fragments = st.one_of(
    st.text(min_size=1, max_size=12),  # any code point hypothesis draws (all categories)
    st.text(st.characters(categories=["Cc", "Cf", "Co", "Cn"]), min_size=1, max_size=4),
    st.text(st.characters(categories=["Mn", "Mc", "Me"]), min_size=1, max_size=4),  # combining
    st.text(st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1, max_size=8),  # CJK
    st.text(st.characters(min_codepoint=0x1F300, max_codepoint=0x1FAFF), min_size=1, max_size=4),  # emoji
    st.text(st.sampled_from(WHITESPACE), min_size=1, max_size=30),  # whitespace runs
    st.text(st.sampled_from(string.ascii_letters + string.digits + string.punctuation), min_size=1, max_size=20),
    st.builds(lambda c, n: c * n, st.sampled_from("aZé中😀x"), st.integers(150, 400)),  # very long words
    st.sampled_from(["[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "</s>", "<unk>", "##", "▁"]),
)
texts = st.lists(fragments, min_size=1, max_size=8).map("".join)
maxlens = st.integers(min_value=3, max_value=64)
ascii_words = st.lists(st.text(st.sampled_from(string.ascii_lowercase), min_size=1, max_size=15), min_size=1, max_size=10)


# ----------------------------------------------------------------------------------- tokenizers


@pytest.fixture(scope="module")
def en(minilm_dir):
    return Tokenizer(os.path.join(minilm_dir, "vocab.txt"), do_lower_case=True)


@pytest.fixture(scope="module")
def zh():
    return Tokenizer(_data("vocab", "chinese_bert_vocab.txt"), do_lower_case=True)


@pytest.fixture(scope="module")
def en_pre(minilm_dir):
    # pre_tokenize takes the pure-Python path (`_pre_tokenized_pieces`) instead of the Rust one.
    return Tokenizer(os.path.join(minilm_dir, "vocab.txt"), do_lower_case=True, pre_tokenize=str.split)


@pytest.fixture(scope="module")
def sp():
    return SpTokenizer(_data("spm", "t5_tokenizer_base.model"), token_start=None, token_end="</s>")


def check_ids(tokenizer, token_ids, segment_ids, maxlen):
    assert len(token_ids) <= maxlen, f"{len(token_ids)} ids > maxlen={maxlen}"
    assert len(segment_ids) == len(token_ids), f"{len(segment_ids)} segment ids for {len(token_ids)} ids"
    bad = [i for i in token_ids if not (isinstance(i, int) and 0 <= i < tokenizer.vocab_size)]
    assert not bad, f"ids outside [0, {tokenizer.vocab_size}): {bad}"
    assert set(segment_ids) <= {0, 1}, f"segment ids {sorted(set(segment_ids))}"


def check_rematch(tokenizer, text, tokens):
    mapping = tokenizer.rematch(text, tokens)
    assert len(mapping) == len(tokens), f"{len(mapping)} mappings for {len(tokens)} tokens"
    last = 0
    for token, indices in zip(tokens, mapping):
        if not indices:
            continue
        assert all(0 <= i < len(text) for i in indices), f"{token!r} -> {indices} outside len(text)={len(text)}"
        assert indices == list(range(indices[0], indices[-1] + 1)), f"{token!r} -> non-contiguous {indices}"
        assert indices[0] >= last, f"{token!r} starts at {indices[0]}, before the previous token's start {last}"
        last = indices[0]


def _lang_tokenizer(request, lang):
    return request.getfixturevalue(lang)


@pytest.mark.parametrize("lang", ["en", "zh", "en_pre"])
@examples(1600)
@given(text=texts, maxlen=maxlens)
def test_encode_single(request, lang, text, maxlen):
    tokenizer = _lang_tokenizer(request, lang)
    token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
    check_ids(tokenizer, token_ids, segment_ids, maxlen)
    assert token_ids[0] == tokenizer._token_start_id and token_ids[-1] == tokenizer._token_end_id
    tokens = tokenizer.tokenize(text, maxlen=maxlen)
    assert tokenizer.tokens_to_ids(tokens) == token_ids
    check_rematch(tokenizer, text, tokens)
    check_rematch(tokenizer, text, tokenizer.tokenize(text))


@pytest.mark.parametrize("lang", ["en", "zh"])
@examples(1000)
@given(first=texts, second=texts, maxlen=maxlens, side=st.sampled_from(["right", "left"]))
def test_encode_pair(request, lang, first, second, maxlen, side):
    tokenizer = _lang_tokenizer(request, lang)
    token_ids, segment_ids = tokenizer.encode(first, second, maxlen=maxlen, truncate_from=side)
    check_ids(tokenizer, token_ids, segment_ids, maxlen)
    assert segment_ids == sorted(segment_ids), "segment ids are not 0...0 1...1"
    assert segment_ids[-1] == 1, "the second segment was cut away entirely"
    batch_ids, batch_segments = tokenizer.encode_batch([first], [second], maxlen=maxlen, truncate_from=side)
    assert (batch_ids[0], batch_segments[0]) == (token_ids, segment_ids), "encode_batch differs from encode"


@examples(1000)
@given(words=ascii_words)
def test_lowercase_ascii_decodes_back(en, words):
    # Every lowercase letter and its `##` continuation are WordPiece tokens of the uncased
    # vocabulary, so no word becomes [UNK] and decoding glues the pieces back.
    text = " ".join(words)
    token_ids, _ = en.encode(text)
    assert en._token_unk_id not in token_ids
    assert en.decode(token_ids) == text


@examples(1800)
@given(text=texts, maxlen=maxlens)
def test_sentencepiece_encode(sp, text, maxlen):
    token_ids, segment_ids = sp.encode(text, maxlen=maxlen)
    check_ids(sp, token_ids, segment_ids, maxlen)
    assert token_ids[-1] == sp._token_end_id
    first, second = text[: len(text) // 2] or text, text[len(text) // 2:] or text
    token_ids, segment_ids = sp.encode(first, second, maxlen=maxlen)
    check_ids(sp, token_ids, segment_ids, maxlen)
    sp.decode(token_ids)  # no exception


@examples(600)
@given(words=ascii_words)
def test_sentencepiece_lowercase_ascii_decodes_back(sp, words):
    text = " ".join(words)
    token_ids, _ = sp.encode(text)
    assert sp.sp_model.unk_id() not in token_ids
    assert sp.decode(token_ids) == text
