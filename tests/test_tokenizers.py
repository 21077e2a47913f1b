"""bert4keras.tokenizers against transformers.BertTokenizerFast and sentencepiece, on real text."""

import os
import unicodedata
import warnings
import zipfile

import pytest
import sentencepiece
from transformers import BertTokenizerFast

from bert4keras.tokenizers import SpTokenizer, Tokenizer, load_vocab, save_vocab


def _data_dir():
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'data')
    return os.environ.get('BERT4KERAS_DATA') or default


def _data(*parts):
    return os.path.join(_data_dir(), *parts)


EN_VOCAB = _data('vocab', 'bert_base_uncased_vocab.txt')
ZH_VOCAB = _data('vocab', 'chinese_bert_vocab.txt')


def _sst2_sentences():
    with open(_data('en', 'sst2_test.tsv'), encoding='utf-8') as f:
        rows = f.read().splitlines()[1:]  # header row
    return [row.split('\t')[0] for row in rows if row]


def _chinese_sentences(n=500):
    with zipfile.ZipFile(_data('zh', 'sentiment.zip')) as z:
        lines = z.read('sentiment/sentiment.test.data').decode('utf-8').splitlines()
    return [line.split('\t')[0] for line in lines[:n]]


@pytest.fixture(scope='module')
def sst2():
    sentences = _sst2_sentences()
    assert len(sentences) == 872
    return sentences


@pytest.fixture(scope='module')
def chinese():
    sentences = _chinese_sentences()
    assert len(sentences) == 500
    return sentences


def _reference(vocab_path, size, **kwargs):
    # Positional path: in transformers 5.x `vocab_file=` silently builds a 5-token vocab.
    ref = BertTokenizerFast(vocab_path, do_lower_case=True, **kwargs)
    assert len(ref) == size
    return ref


@pytest.fixture(scope='module')
def en():
    return Tokenizer(EN_VOCAB, do_lower_case=True), _reference(EN_VOCAB, 30522)


@pytest.fixture(scope='module')
def zh():
    return Tokenizer(ZH_VOCAB, do_lower_case=True), _reference(ZH_VOCAB, 21128)


def _corpus(request, name):
    return request.getfixturevalue({'en': 'sst2', 'zh': 'chinese'}[name])


# ---------------------------------------------------------------- ids against BertTokenizerFast


@pytest.mark.parametrize('lang', ['en', 'zh'])
def test_encode_matches_bert_tokenizer_fast(request, lang):
    ours, ref = request.getfixturevalue(lang)
    for text in _corpus(request, lang):
        expected = ref(text)
        token_ids, segment_ids = ours.encode(text)
        assert token_ids == expected['input_ids'], text
        assert segment_ids == expected['token_type_ids'], text
        assert ours.tokenize(text) == ref.convert_ids_to_tokens(expected['input_ids']), text


@pytest.mark.parametrize('lang', ['en', 'zh'])
def test_encode_pair_matches_bert_tokenizer_fast(request, lang):
    ours, ref = request.getfixturevalue(lang)
    texts = _corpus(request, lang)
    for a, b in zip(texts[:-1], texts[1:]):
        expected = ref(a, b)
        assert ours.encode(a, b) == (expected['input_ids'], expected['token_type_ids']), (a, b)


@pytest.mark.parametrize('lang', ['en', 'zh'])
@pytest.mark.parametrize('truncate_from', ['right', 'left'])
def test_truncation_matches_bert_tokenizer_fast(request, lang, truncate_from):
    ours, _ = request.getfixturevalue(lang)
    vocab, size = {'en': (EN_VOCAB, 30522), 'zh': (ZH_VOCAB, 21128)}[lang]
    ref = _reference(vocab, size, truncation_side=truncate_from)
    texts = _corpus(request, lang)[: {'en': 120, 'zh': 40}[lang]]  # the reference is slow on long pairs
    # small and odd/even budgets: one segment cut, both cut, either one longer
    for maxlen in [3, 4, 9, 16, 31]:
        for a, b in zip(texts[:-1], texts[1:]):
            single = ref(a, truncation=True, max_length=maxlen)['input_ids']
            assert ours.encode(a, maxlen=maxlen, truncate_from=truncate_from)[0] == single, (maxlen, a)
            if truncate_from == 'right':  # tokenize always cuts from the right
                assert ours.tokenize(a, maxlen=maxlen) == ref.convert_ids_to_tokens(single), (maxlen, a)
            pair = ref(a, b, truncation='longest_first', max_length=maxlen)
            ids = ours.encode(a, b, maxlen=maxlen, truncate_from=truncate_from)
            assert ids == (pair['input_ids'], pair['token_type_ids']), (maxlen, a, b)


@pytest.mark.parametrize('lang', ['en', 'zh'])
@pytest.mark.parametrize('maxlen', [None, 64])
def test_encode_batch_matches_reference_and_encode(request, lang, maxlen):
    ours, ref = request.getfixturevalue(lang)
    texts = _corpus(request, lang)
    firsts, seconds = texts[:-1], texts[1:]
    truncation = dict(truncation=True, max_length=maxlen) if maxlen else {}

    token_ids, segment_ids = ours.encode_batch(firsts, maxlen=maxlen)
    expected = ref(firsts, **truncation)
    assert token_ids == expected['input_ids']
    assert segment_ids == expected['token_type_ids']

    token_ids, segment_ids = ours.encode_batch(firsts, seconds, maxlen=maxlen)
    expected = ref(firsts, seconds, **truncation)
    assert token_ids == expected['input_ids']
    assert segment_ids == expected['token_type_ids']
    assert [ours.encode(a, b, maxlen=maxlen) for a, b in zip(firsts[:50], seconds[:50])] == list(
        zip(token_ids[:50], segment_ids[:50])
    )


def test_special_tokens_and_vocab_size(en):
    ours, ref = en
    assert ours.vocab_size == len(ref) == 30522
    assert ours._token_pad_id == ref.pad_token_id
    assert ours._token_unk_id == ref.unk_token_id
    assert ours._token_start_id == ref.cls_token_id
    assert ours._token_end_id == ref.sep_token_id
    assert ours._token_mask_id == ref.mask_token_id
    assert ours.token_to_id('hello') == ref.convert_tokens_to_ids('hello')
    assert ours.token_to_id('no-such-token') == ref.unk_token_id
    assert ours.id_to_token(7592) == ref.convert_ids_to_tokens(7592)
    assert ours.ids_to_tokens([101, 7592, 102]) == ref.convert_ids_to_tokens([101, 7592, 102])
    assert ours.tokens_to_ids(['[CLS]', 'hello']) == ref.convert_tokens_to_ids(['[CLS]', 'hello'])


def test_bytes_are_decoded_as_utf8(zh):
    ours, ref = zh
    text = '这本书很好看'
    assert ours.encode(text.encode('utf-8'))[0] == ref(text)['input_ids']


# ------------------------------------------------------------------------------- rematch


@pytest.mark.parametrize('lang', ['en', 'zh'])
def test_rematch_equals_reference_offsets(request, lang):
    ours, ref = request.getfixturevalue(lang)
    for text in _corpus(request, lang):
        offsets = ref(text, return_offsets_mapping=True)['offset_mapping']
        assert ours.rematch(text, ours.tokenize(text)) == [list(range(s, e)) for s, e in offsets], text
        truncated = ref(text, truncation=True, max_length=10, return_offsets_mapping=True)['offset_mapping']
        mapping = ours.rematch(text, ours.tokenize(text, maxlen=10))
        assert mapping == [list(range(s, e)) for s, e in truncated], text


def _fold(text):
    text = unicodedata.normalize('NFD', text.lower())
    return ''.join(c for c in text if unicodedata.category(c) != 'Mn')


@pytest.mark.parametrize('lang', ['en', 'zh'])
def test_rematch_cuts_text_back_into_tokens(request, lang):
    ours, ref = request.getfixturevalue(lang)
    for text in _corpus(request, lang) + ['Café Déjà-vu, naïve İstanbul: 北京欢迎你！']:
        tokens = ref.convert_ids_to_tokens(ref(text)['input_ids'])
        mapping = ours.rematch(text, tokens)
        assert mapping[0] == mapping[-1] == []
        for token, indices in zip(tokens[1:-1], mapping[1:-1]):
            piece = ''.join(text[i] for i in indices)
            if token == '[UNK]':
                assert piece.strip(), (text, indices)
            else:
                assert _fold(piece) == Tokenizer.stem(token), (text, token, piece)


# ---------------------------------------------------------------------- decode, options


def test_decode_closed_form(en, zh):
    ours, _ = en
    ids = ours.tokens_to_ids(['[CLS]', 'the', 'cat', "'", 's', 'play', '##ing', ',', 'ok', '[SEP]'])
    assert ours.decode(ids) == "the cat's playing, ok"
    ours, _ = zh
    assert ours.decode(ours.encode('今天天气很好，我们去公园。')[0]) == '今天天气很好，我们去公园。'
    assert ours.decode(None, tokens=['[CLS]', '我', '有', '3', '.', '5', '元', '[SEP]']) == '我有3.5元'


def _toy_dict():
    tokens = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', '中国', '中', '国', '人', '我', '爱', '你']
    return {t: i for i, t in enumerate(tokens)}


def test_pre_tokenize_keeps_vocabulary_words_whole():
    plain = Tokenizer(_toy_dict())
    assert plain.tokenize('中国人') == ['[CLS]', '中', '国', '人', '[SEP]']
    words = Tokenizer(_toy_dict(), pre_tokenize=lambda s: ['中国', '人'])
    assert words.tokenize('中国人') == ['[CLS]', '中国', '人', '[SEP]']
    assert words.encode('中国人') == ([2, 5, 8, 3], [0, 0, 0, 0])
    assert words.rematch('中国人', ['[CLS]', '中国', '人', '[SEP]']) == [[], [0, 1], [2], []]
    # a word outside the vocabulary is tokenized as usual
    words = Tokenizer(_toy_dict(), pre_tokenize=lambda s: ['我爱', '你'])
    assert words.tokenize('我爱你') == ['[CLS]', '我', '爱', '你', '[SEP]']


def test_token_translate():
    tokenizer = Tokenizer(_toy_dict(), token_translate={'我': '[MASK]'})
    assert tokenizer.tokenize('我爱你') == ['[CLS]', '[MASK]', '爱', '你', '[SEP]']
    assert tokenizer.encode('我爱你', '中国') == ([2, 4, 10, 11, 3, 6, 7, 3], [0, 0, 0, 0, 0, 1, 1, 1])
    assert tokenizer.rematch('我爱你', tokenizer.tokenize('我爱你')) == [[], [0], [1], [2], []]


def test_token_lists_and_patterns():
    tokenizer = Tokenizer(_toy_dict())
    assert tokenizer.encode(['[CLS]', '我', '[SEP]'], ['[CLS]', '你', '[SEP]']) == ([2, 9, 3, 11, 3], [0, 0, 0, 1, 1])
    assert tokenizer.encode('我', '你', pattern='S*ES*E') == ([2, 9, 3, 2, 11, 3], [0, 0, 0, 1, 1, 1])
    no_ends = Tokenizer(_toy_dict(), token_start=None, token_end=None)
    assert no_ends.encode('我爱', '你') == ([9, 10, 11], [0, 0, 1])
    assert no_ends._token_start_id is None


def test_truncate_from_index_pops_there():
    tokenizer = Tokenizer(_toy_dict())
    # bert4keras semantics: pop at index 1 (right after [CLS]) from the longest segment
    assert tokenizer.encode('我爱你中国', maxlen=4, truncate_from=1)[0] == [2, 6, 7, 3]


# ------------------------------------------------------------------------------ empty texts


@pytest.mark.parametrize('lang', ['en', 'zh'])
def test_empty_text_is_start_and_end(request, lang):
    # bert4keras 0.11.5: tokenize('') is [CLS] [SEP]; the reading-comprehension scripts encode
    # empty answers. The ids are BertTokenizerFast's for '' and for pairs with an empty side.
    ours, ref = request.getfixturevalue(lang)
    assert ours.tokenize('') == ['[CLS]', '[SEP]']
    assert ours.tokenize(b'') == ['[CLS]', '[SEP]']
    expected = ref('')
    assert expected['input_ids'] == [ref.cls_token_id, ref.sep_token_id]
    assert ours.encode('') == (expected['input_ids'], expected['token_type_ids'])
    for a, b in [('hello', ''), ('', 'hello'), ('', '')]:
        # BertTokenizerFast drops an empty second text; bert4keras keeps the segment:
        # ids(a) + ids(b) without its [CLS], segment 1 for the second part.
        ids_a, ids_b = ref(a)['input_ids'], ref(b)['input_ids'][1:]
        assert ours.encode(a, b) == (ids_a + ids_b, [0] * len(ids_a) + [1] * len(ids_b)), (a, b)
    assert ours.encode('', maxlen=2) == ours.encode('')
    assert ours.encode_batch(['hello', '', 'world']) == tuple(
        list(x) for x in zip(*[ours.encode(t) for t in ['hello', '', 'world']])
    )


def test_empty_text_on_the_python_path():
    # pre_tokenize and token_translate run bert4keras's own encode; '' gives the same.
    words = Tokenizer(_toy_dict(), pre_tokenize=lambda s: s.split())
    assert words.tokenize('') == ['[CLS]', '[SEP]']
    assert words.encode('') == ([2, 3], [0, 0])
    assert words.encode('我', '') == ([2, 9, 3, 3], [0, 0, 0, 1])
    assert words.rematch('', ['[CLS]', '[SEP]']) == [[], []]


# ------------------------------------------------------- vocabularies without special tokens


def _chess_dict():
    # task_language_model_chinese_chess.py of bert4keras 0.11.5
    chars = ['[PAD]'] + list('0123456789abcdefghi')
    return dict(zip(chars, range(len(chars))))


def _expected_ids(token_dict, tokens, unk_id):
    """bert4keras 0.11.5: `token_dict.get(token, _token_unk_id)` for each token."""
    return [token_dict.get(t, unk_id) for t in tokens]


def test_vocabulary_without_cls_sep_unk_warns_once_and_encodes_with_the_set_unk_id():
    token_dict = _chess_dict()
    with pytest.warns(UserWarning) as record:
        tokenizer = Tokenizer(token_dict)
    assert len(record) == 1
    message = str(record[0].message)
    for token in ['[CLS]', '[SEP]', '[UNK]', '[MASK]']:
        assert repr(token) in message
    assert "'[PAD]'" not in message and '_token_unk_id' in message
    assert tokenizer._token_start_id is tokenizer._token_end_id is tokenizer._token_unk_id is None
    assert tokenizer._token_pad_id == 0 and tokenizer._vocab_size == 20

    text = ' '.join('h2e2c3c4')
    assert tokenizer.tokenize(text) == ['[CLS]'] + list('h2e2c3c4') + ['[SEP]']
    with pytest.raises(ValueError, match=r"token '\[CLS\]' is not in the vocabulary.*set tokenizer\._token_unk_id"):
        tokenizer.encode(text)
    with pytest.raises(ValueError, match=r"token 'z' is not in the vocabulary"):
        tokenizer.token_to_id('z')

    tokenizer._token_unk_id = 0  # as the chess script does, after construction
    tokens = ['[CLS]'] + list('h2e2c3c4') + ['[SEP]']
    assert tokenizer.encode(text) == (_expected_ids(token_dict, tokens, 0), [0] * len(tokens))
    assert tokenizer.encode(text, maxlen=5)[0] == _expected_ids(token_dict, tokens[:4] + ['[SEP]'], 0)
    assert tokenizer.encode('a b', 'c') == ([0, 11, 12, 0, 13, 0], [0, 0, 0, 0, 1, 1])
    assert tokenizer.encode_batch([text, 'a z']) == (
        [_expected_ids(token_dict, tokens, 0), [0, 11, 0, 0]], [[0] * len(tokens), [0, 0, 0, 0]]
    )
    assert tokenizer.token_to_id('[SEP]') == tokenizer.token_to_id('z') == 0
    tokenizer._token_unk_id = 1  # read at each call
    assert tokenizer.encode('a z') == ([1, 11, 1, 1], [0, 0, 0, 0])


def test_vocabulary_without_unk_only_fails_on_unknown_words():
    token_dict = {'[CLS]': 0, '[SEP]': 1, 'hello': 2, 'world': 3}
    with pytest.warns(UserWarning, match=r"has no '\[UNK\]'.*token_to_id maps tokens not in the vocabulary"):
        tokenizer = Tokenizer(token_dict)
    assert tokenizer.encode('hello world') == ([0, 2, 3, 1], [0, 0, 0, 0])
    with pytest.raises(ValueError, match=r"token '\[UNK\]' is not in the vocabulary .* has no '\[UNK\]'"):
        tokenizer.encode('hello there')
    tokenizer._token_unk_id = 3
    assert tokenizer.encode('hello there') == ([0, 2, 3, 1], [0, 0, 0, 0])


def test_vocabulary_without_pad_or_mask_is_silent():
    # load_vocab(..., simplified=True, startswith=['[PAD]', '[UNK]', '[CLS]', '[SEP]']) drops [MASK]
    token_dict = {'[UNK]': 0, '[CLS]': 1, '[SEP]': 2, '中': 3}
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        tokenizer = Tokenizer(token_dict)
    assert tokenizer._token_mask_id is None and tokenizer._token_pad_id is None
    assert tokenizer.encode('中国') == ([1, 3, 0, 2], [0, 0, 0, 0])


def test_unk_id_set_after_construction_is_used_with_a_full_vocabulary(sst2):
    # A script's tokenizer._token_unk_id = k applies to unknown words: BertTokenizerFast's ids
    # with its [UNK] id replaced by k.
    ref = _reference(EN_VOCAB, 30522)
    tokenizer = Tokenizer(EN_VOCAB, do_lower_case=True)
    tokenizer._token_unk_id = 0
    texts = ['snowman \u2603 and \U0001F600 faces', 'plain words'] + sst2[:50]
    for text in texts:
        expected = [0 if i == ref.unk_token_id else i for i in ref(text)['input_ids']]
        assert tokenizer.encode(text)[0] == expected, text
    assert 0 in tokenizer.encode(texts[0])[0]
    expected = [[0 if i == ref.unk_token_id else i for i in ids] for ids in ref(texts)['input_ids']]
    assert tokenizer.encode_batch(texts)[0] == expected


def test_bert4keras_attribute_names(en):
    ours, ref = en
    assert ours._vocab_size == len(ours._token_dict) == 30522
    assert ours._do_lower_case is True
    assert ours._token_dict['hello'] == ref.convert_tokens_to_ids('hello')
    assert ours._token_dict_inv[ours._token_dict['hello']] == 'hello'


# ---------------------------------------------------------------------------------- errors


def test_errors_name_the_argument(en):
    ours, _ = en
    with pytest.raises(TypeError, match='first_text'):
        ours.encode(None)
    with pytest.raises(TypeError, match='second_text'):
        ours.encode('hello', 3)
    with pytest.raises(TypeError, match='text must be str'):
        ours.tokenize(None)
    with pytest.raises(ValueError, match='first_text is not valid UTF-8'):
        ours.encode(b'\xff\xfe caf\xe9')
    with pytest.raises(ValueError, match='maxlen=1 is too small: two segments'):
        ours.encode('hello', 'world', maxlen=1)
    with pytest.raises(ValueError, match='maxlen=1 is too small: one segment'):
        ours.tokenize('hello', maxlen=1)
    with pytest.raises(ValueError, match='truncate_from'):
        ours.encode('hello world', maxlen=3, truncate_from='middle')
    with pytest.raises(TypeError, match=r'first_texts\[1\] must be str, got NoneType'):
        ours.encode_batch(['hello', None])
    with pytest.raises(TypeError, match='first_texts must be a list'):
        ours.encode_batch('hello')
    with pytest.raises(ValueError, match='differ in length'):
        ours.encode_batch(['a', 'b'], ['c'])


def test_missing_vocab_file_names_the_path(tmp_path):
    path = str(tmp_path / 'no_vocab.txt')
    with pytest.raises(FileNotFoundError, match='no_vocab.txt'):
        Tokenizer(path)
    with pytest.raises(FileNotFoundError, match='no_vocab.txt'):
        load_vocab(path)


# --------------------------------------------------------------------------------- vocab files


def test_load_vocab_simplified_closed_form(tmp_path):
    tokens = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[unused1]', 'a', '##b', '##的', '中国', '，', '##,', 'hello', '的']
    path = tmp_path / 'vocab.txt'
    path.write_text(''.join(t + '\n' for t in tokens), encoding='utf-8')
    assert load_vocab(path) == {t: i for i, t in enumerate(tokens)}
    token_dict, keep_tokens = load_vocab(path, simplified=True, startswith=['[PAD]', '[UNK]', '[CLS]', '[SEP]'])
    kept = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', 'a', '##b', '，', 'hello', '的']
    assert token_dict == {t: i for i, t in enumerate(kept)}
    assert keep_tokens == [0, 1, 2, 3, 5, 6, 9, 11, 12]


@pytest.mark.parametrize('lang', ['en', 'zh'])
def test_simplified_vocab_tokenizes_the_same(request, lang):
    _, ref = request.getfixturevalue(lang)
    vocab = {'en': EN_VOCAB, 'zh': ZH_VOCAB}[lang]
    startswith = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
    token_dict, keep_tokens = load_vocab(vocab, simplified=True, startswith=startswith)
    assert len(token_dict) < len(ref) - 1000  # dropped tokens the tokenizer can't produce
    small = Tokenizer(token_dict, do_lower_case=True)
    for text in _corpus(request, lang):
        assert [keep_tokens[i] for i in small.encode(text)[0]] == ref(text)['input_ids'], text


def test_load_vocab_reads_real_vocab():
    token_dict = load_vocab(ZH_VOCAB)
    with open(ZH_VOCAB, encoding='utf-8') as f:
        lines = f.read().split('\n')[:-1]
    assert len(lines) == 21128
    assert sorted(token_dict.values()) == list(range(21128))
    # two lines hold U+2028 (a line separator to str.split); every other line is its token
    assert all(token_dict[t] == i for i, t in enumerate(lines) if '\u2028' not in t)


def test_save_vocab_round_trip(tmp_path):
    token_dict = {'[PAD]': 0, '[UNK]': 1, '中': 3, 'hello': 2}
    path = tmp_path / 'out' / 'vocab.txt'
    path.parent.mkdir()
    save_vocab(path, token_dict)
    assert path.read_text(encoding='utf-8') == '[PAD]\n[UNK]\nhello\n中\n'
    assert os.listdir(path.parent) == ['vocab.txt']  # no temporary file left behind


# ----------------------------------------------------------------------------------- SpTokenizer

SPM_MODELS = ['sp_test_model.model', 't5_tokenizer_base.model']


@pytest.mark.parametrize('name', SPM_MODELS)
def test_sp_tokenizer_matches_sentencepiece(sst2, name):
    path = _data('spm', name)
    sp = sentencepiece.SentencePieceProcessor(model_file=path)
    eos = sp.id_to_piece(sp.eos_id())
    ours = SpTokenizer(path, token_start=None, token_end=eos)
    assert ours.vocab_size == sp.get_piece_size()
    assert ours._token_unk == sp.id_to_piece(sp.unk_id())
    assert ours._token_unk_id == sp.unk_id()
    assert ours._token_end_id == sp.eos_id()
    assert ours._token_pad == (sp.id_to_piece(sp.pad_id()) if sp.pad_id() >= 0 else None)
    for text in sst2[:300]:
        ids = sp.encode(text)
        assert ours.tokenize(text) == sp.encode(text, out_type=str) + [eos], text
        assert ours.encode(text) == (ids + [sp.eos_id()], [0] * (len(ids) + 1)), text
        assert ours.decode(ids + [sp.eos_id()]) == sp.decode(ids), text
        assert ours.encode(text, maxlen=8)[0] == (ids[:7] + [sp.eos_id()]), text


def test_sp_tokenizer_pair_with_start_token(sst2):
    path = _data('spm', 'sp_test_model.model')
    sp = sentencepiece.SentencePieceProcessor(model_file=path)
    ours = SpTokenizer(path, token_start='<s>', token_end='</s>')
    assert ours._token_start_id == sp.bos_id()
    for a, b in zip(sst2[:50], sst2[1:51]):
        ids_a, ids_b = sp.encode(a), sp.encode(b)
        token_ids = [sp.bos_id()] + ids_a + [sp.eos_id()] + ids_b + [sp.eos_id()]
        segment_ids = [0] * (len(ids_a) + 2) + [1] * (len(ids_b) + 1)
        assert ours.encode(a, b) == (token_ids, segment_ids)


def test_sp_tokenizer_errors(tmp_path):
    missing = str(tmp_path / 'missing.model')
    with pytest.raises(FileNotFoundError, match='missing.model'):
        SpTokenizer(missing)
    with pytest.raises(ValueError, match='chinese_bert_vocab.txt'):
        SpTokenizer(ZH_VOCAB)
    ours = SpTokenizer(_data('spm', 't5_tokenizer_base.model'), token_start=None, token_end='</s>')
    with pytest.raises(TypeError, match='first_text'):
        ours.encode(None)


def test_sp_tokenizer_empty_text():
    # bert4keras 0.11.5: the pieces of '' (none, as sentencepiece says) and the end token.
    path = _data('spm', 't5_tokenizer_base.model')
    sp = sentencepiece.SentencePieceProcessor(model_file=path)
    ours = SpTokenizer(path, token_start=None, token_end='</s>')
    assert sp.encode('') == []
    assert ours.tokenize('') == ['</s>']
    assert ours.encode('') == ([sp.eos_id()], [0])
