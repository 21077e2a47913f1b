"""Tokenizers with bert4keras's API: BERT WordPiece and SentencePiece.

Owns vocabulary files (`load_vocab`, `save_vocab`), `Tokenizer` (BERT WordPiece, run by the
Hugging Face `tokenizers` library) and `SpTokenizer` (SentencePiece models, e.g. T5, ALBERT).
No Keras imports: token ids are plain Python lists of int; pad them with
`bert4keras.snippets.sequence_padding`.
"""

import os
import re
import tempfile
import unicodedata
import warnings

import numpy as np
import sentencepiece
import tokenizers
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors

from bert4keras.backend import check_token_ids  # noqa: F401  (public here since it was written)
from bert4keras._checks import _check_int
from bert4keras.snippets import is_string, truncate_sequences


def _vocab_token(line):
    """The token of one `vocab.txt` line: its first whitespace-separated field (files with
    `token count` lines), or the stripped line when it is blank (bert4keras 0.11.5's rule)."""
    token = line.split()
    return token[0] if token else line.strip()


def _decode_error(path, encoding, error):
    """A ValueError naming the file, the first undecodable byte (offset and line) and `encoding`."""
    try:
        with open(path, 'rb') as f:
            data = f.read()
        data.decode(encoding)  # again, on the whole file: positions in the file, not in a chunk
    except UnicodeDecodeError as e:
        error = e
        where = 'byte 0x%02x at offset %d (line %d)' % (
            e.object[e.start], e.start, e.object.count(b'\n', 0, e.start) + 1)
    else:
        where = 'byte at offset %d of a chunk' % error.start
    return ValueError(
        'vocabulary file %r cannot be decoded with encoding=%r: %s: %s. Pass the file\'s encoding, '
        "e.g. load_vocab(path, encoding='gbk') (and Tokenizer(load_vocab(path, encoding=...)))"
        % (path, encoding, where, error.reason)
    )


def load_vocab(dict_path, encoding='utf-8', simplified=False, startswith=None):
    """Read a BERT `vocab.txt` (one token a line, id = line number).

    A line's token is its first whitespace-separated field (the whole stripped line when it
    is blank); a UTF-8 byte order mark at the start of the file is dropped.

    Args:
        dict_path: str or os.PathLike.
        encoding: str, the file's encoding.
        simplified: bool. If True, drop tokens BERT's tokenizer can never produce
            (a token longer than one character whose stem, without `##`, contains a CJK
            character or punctuation, e.g. `##的`, `##，`, `[unused1]`) and renumber the rest,
            as bert4keras did to shrink the embedding matrix.
        startswith: list of str, tokens put first when simplified (e.g.
            `['[PAD]', '[UNK]', '[CLS]', '[SEP]']`, which would otherwise be dropped).
    Returns:
        token_dict: dict str -> int. With `simplified=True`, `(token_dict, keep_tokens)`
        where `keep_tokens[i]` is the original id of new id `i` (pass it as `keep_tokens`
        to `build_transformer_model` to slice the embedding matrix).
    Raises:
        FileNotFoundError: `dict_path` does not exist.
        ValueError: a token appears on two lines (the message names the token, both line
            numbers and the file): bert4keras 0.11.5 silently gave every later token the id
            of the line before it, Hugging Face keeps the last line and leaves a gap, so the ids
            no longer match the checkpoint's embedding rows either way; or the file does not
            decode with `encoding` (naming the file, the byte offset and line, and `encoding`).
        KeyError: a token of `startswith` is not in the vocabulary.
    Source: bert4keras 0.11.5 `load_vocab`.
    """
    dict_path = os.fspath(dict_path)
    if not os.path.isfile(dict_path):
        raise FileNotFoundError('vocab file not found: %r' % dict_path)
    token_dict = {}
    try:
        with open(dict_path, encoding=encoding) as reader:
            for line in reader:
                if not token_dict and line.startswith('\ufeff'):
                    line = line[1:]  # a BOM, written by some editors (Notepad) before the first token
                token = _vocab_token(line)
                if token in token_dict:
                    raise ValueError(
                        'vocabulary file %r has token %r%s on line %d and again on line %d: a token\'s id '
                        'is its line number, so a repeated token would shift or drop the ids of the '
                        'tokens after it; remove one of the two lines'
                        % (dict_path, token, ' (a blank or whitespace-only line)' if not token else '',
                           token_dict[token] + 1, len(token_dict) + 1)
                    )
                token_dict[token] = len(token_dict)
    except UnicodeDecodeError as e:
        raise _decode_error(dict_path, encoding, e) from None

    if not simplified:
        return token_dict

    new_token_dict, keep_tokens = {}, []
    for t in startswith or []:
        if t not in token_dict:
            raise KeyError('startswith token %r is not in %r' % (t, dict_path))
        new_token_dict[t] = len(new_token_dict)
        keep_tokens.append(token_dict[t])
    for t, i in sorted(token_dict.items(), key=lambda s: s[1]):
        if t not in new_token_dict and not Tokenizer._is_redundant(t):
            new_token_dict[t] = len(new_token_dict)
            keep_tokens.append(i)
    return new_token_dict, keep_tokens


def _check_token_dict(token_dict, source):
    """TypeError unless `token_dict` maps str tokens to non-negative int ids."""
    if not hasattr(token_dict, 'items'):
        raise TypeError('token_dict must be a dict str -> int or a vocab.txt path, got %s' % type(token_dict).__name__)
    for token, i in token_dict.items():
        is_id = isinstance(i, (int, np.integer)) and not isinstance(i, (bool, np.bool_)) and i >= 0
        if not isinstance(token, str) or not is_id:
            raise TypeError(
                'vocabulary %s must map str tokens to non-negative int ids, got %r: %r' % (source, token, i)
            )


def save_vocab(dict_path, token_dict, encoding='utf-8'):
    """Write `token_dict` (e.g. a simplified one) as a `vocab.txt`, tokens ordered by id.

    The file is written to a temporary file beside `dict_path` and moved into place, so a
    crash never leaves a half-written vocabulary.

    Raises:
        TypeError: `token_dict` does not map str to int.
        ValueError: the file would not read back as `token_dict` with `load_vocab`: the ids
            are not 0..N-1 each once (a line number is the id), a token holds whitespace or a
            line break (`load_vocab` keeps a line's first field), or a token cannot be encoded
            with `encoding`; the message names the token.
    """
    dict_path = os.fspath(dict_path)
    _check_token_dict(token_dict, '(token_dict)')
    items = sorted(token_dict.items(), key=lambda s: s[1])
    for n, (token, i) in enumerate(items):
        if i != n:
            if n > 0 and items[n - 1][1] == i:
                problem = 'tokens %r and %r both have id %d' % (items[n - 1][0], token, i)
            else:
                problem = 'no token has id %d' % n
            raise ValueError(
                'save_vocab(%r): %s; a vocab.txt line number is the token id, so the ids of '
                'token_dict must be 0..%d, each once' % (dict_path, problem, len(items) - 1)
            )
        if _vocab_token(token + '\n') != token or (n == 0 and token.startswith('\ufeff')):
            raise ValueError(
                'save_vocab(%r): token %r (id %d) would not read back as itself from a vocab.txt line '
                '(load_vocab keeps the first whitespace-separated field of a line, and drops a '
                'leading byte order mark): it holds whitespace or a line break' % (dict_path, token, i)
            )
    folder = os.path.dirname(os.path.abspath(dict_path))
    fd, tmp_path = tempfile.mkstemp(dir=folder, prefix='.vocab-', suffix='.tmp')
    try:
        with open(fd, 'w', encoding=encoding, newline='\n') as writer:
            for token, i in items:
                try:
                    writer.write(token + '\n')
                except UnicodeEncodeError as e:
                    raise ValueError(
                        'save_vocab(%r): token %r (id %d) cannot be encoded with encoding=%r: %s'
                        % (dict_path, token, i, encoding, e.reason)
                    ) from None
        os.replace(tmp_path, dict_path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.remove(tmp_path)
        raise


def _longest_first(n1, n2, budget):
    """Lengths of two segments of lengths `n1`, `n2` cut to `budget` tokens in all by the
    `tokenizers` library's `longest_first` rule: only the longer is cut if that suffices,
    else both are cut to half, the odd token going to the one that was longer."""
    if n1 + n2 <= budget:
        return n1, n2
    swap = n1 > n2
    if swap:
        n1, n2 = n2, n1
    n2 = n1 if n1 > budget else max(n1, budget - n1)
    if n1 + n2 > budget:
        n1 = budget // 2
        n2 = n1 + budget % 2
    return (n2, n1) if swap else (n1, n2)


_SURROGATE = re.compile('[\ud800-\udfff]')


def _check_surrogates(text, name):
    """ValueError when `text` holds a surrogate code point: not a character, and not encodable
    as UTF-8 (the `tokenizers` and SentencePiece libraries reject such text with a message
    naming neither the text nor the position). `isascii` is O(1) and true for most texts."""
    if not text.isascii():
        match = _SURROGATE.search(text)
        if match:
            raise ValueError(
                '%s has a surrogate code point %r at index %d (in %r): not valid Unicode text, e.g. an '
                'emoji cut in half in UTF-16 or JSON data; repair it first, e.g. with '
                "text.encode('utf-16', 'surrogatepass').decode('utf-16', 'replace') (joins pairs, "
                'replaces the rest with U+FFFD)'
                % (name, match.group(), match.start(), text[max(0, match.start() - 10): match.start() + 10])
            )


def _as_text(text, name):
    """`text` as a str (possibly empty: it encodes to `[CLS] [SEP]`, as in bert4keras 0.11.5);
    bytes are decoded as UTF-8; a surrogate code point is refused (see `_check_surrogates`)."""
    if isinstance(text, bytes):
        try:
            text = text.decode('utf-8')
        except UnicodeDecodeError as e:
            raise ValueError('%s is not valid UTF-8: %s' % (name, e)) from None
    elif not isinstance(text, str):
        raise TypeError('%s must be str, got %s' % (name, type(text).__name__))
    else:
        _check_surrogates(text, name)
    return text


def _as_texts(texts, name):
    """`texts` as a list of str (see `_as_text`)."""
    if isinstance(texts, (str, bytes)) or not hasattr(texts, '__iter__'):
        raise TypeError('%s must be a list of str, got %s' % (name, type(texts).__name__))
    texts = list(texts)
    if all(type(t) is str for t in texts):  # the common case, without a call per text
        for i, t in enumerate(texts):
            if not t.isascii():
                _check_surrogates(t, '%s[%d]' % (name, i))
        return texts
    return [_as_text(t, '%s[%d]' % (name, i)) for i, t in enumerate(texts)]


def _as_maxlen(maxlen):
    """TypeError unless `maxlen` is None or an int (NumPy ints too; not bool or float)."""
    if maxlen is not None and (isinstance(maxlen, (bool, np.bool_)) or not isinstance(maxlen, (int, np.integer))):
        raise TypeError(
            'maxlen must be an int or None, got %r (%s)%s' % (
                maxlen, type(maxlen).__name__,
                ': pass int(maxlen)' if isinstance(maxlen, (float, np.floating)) and float(maxlen).is_integer() else '')
        )


def _as_ids(ids, name='ids'):
    """`ids` as a list of int: a list, tuple or 1-D array (NumPy or a backend tensor) of int."""
    if hasattr(ids, '__array__') and not isinstance(ids, (list, tuple)):
        ids = np.asarray(ids)
        if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
            raise TypeError('%s must be a 1-D sequence of int token ids, got an array of shape %s and dtype %s'
                            % (name, ids.shape, ids.dtype))
        return ids.tolist()
    if isinstance(ids, (str, bytes)) or not hasattr(ids, '__iter__'):
        raise TypeError('%s must be a list of int token ids, got %s' % (name, type(ids).__name__))
    ids = list(ids)
    for k, i in enumerate(ids):
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise TypeError('%s[%d] must be an int token id, got %r (%s)' % (name, k, i, type(i).__name__))
    return ids


def _as_batch(first_texts, second_texts):
    """Validated `(first_texts, second_texts)` for `encode_batch`; second may be None."""
    first_texts = _as_texts(first_texts, 'first_texts')
    if second_texts is None:
        return first_texts, None
    second_texts = _as_texts(second_texts, 'second_texts')
    if len(second_texts) != len(first_texts):
        raise ValueError(
            'first_texts and second_texts differ in length: %d != %d' % (len(first_texts), len(second_texts))
        )
    return first_texts, second_texts


class TokenizerBase:
    """Shared logic of `Tokenizer` and `SpTokenizer`: special tokens, truncation, segments.

    Args:
        token_start: str or None, prepended to every segment's tokens (`[CLS]`).
        token_end: str or None, appended to every segment's tokens (`[SEP]`).
        pre_tokenize: None or a callable str -> iterable of str (e.g. `jieba.cut`), run
            first; its words are then tokenized as usual (`Tokenizer` keeps a word whole
            when it is in the vocabulary).
        token_translate: dict str -> str, replaces tokens after tokenization.
    Source: bert4keras 0.11.5 `TokenizerBase`.
    """

    def __init__(self, token_start='[CLS]', token_end='[SEP]', pre_tokenize=None, token_translate=None):
        self._token_pad = '[PAD]'
        self._token_unk = '[UNK]'
        self._token_mask = '[MASK]'
        self._token_start = token_start
        self._token_end = token_end
        self._pre_tokenize = pre_tokenize
        self._token_translate = token_translate or {}
        self._token_translate_inv = {v: k for k, v in self._token_translate.items()}

    @property
    def vocab_size(self):
        """int, number of tokens in the vocabulary."""
        return self._vocab_size

    def _max_id(self):
        return self._vocab_size - 1

    def check_vocab_size(self, vocab_size, strict=False):
        """Check that every id this tokenizer can emit is a row of the model's token embedding.

        A vocabulary file larger than the model's embedding gives ids >= vocab_size, which
        TensorFlow (CPU) and PyTorch reject at call time but JAX turns silently into NaN
        outputs; call this once after building the model.

        Args:
            vocab_size: int, or an object with a ``vocab_size`` attribute (the builder from
                ``build_transformer_model(..., return_keras_model=False)``), the number of
                embedding rows.
            strict: also require the sizes to be equal (a smaller vocabulary is otherwise
                fine: T5 and others pad their embedding beyond the SentencePiece model).
        Raises:
            ValueError: naming the vocabulary source, its size and the model's vocab_size.
            TypeError: `vocab_size` is neither an int nor has an int ``vocab_size``.
        """
        rows = getattr(vocab_size, 'vocab_size', vocab_size)
        if isinstance(rows, bool) or not isinstance(rows, (int, np.integer)):
            raise TypeError('vocab_size must be an int or have an int vocab_size, got %r' % (vocab_size,))
        top = self._max_id() + 1
        if top > rows or (strict and top != rows):
            raise ValueError(
                'vocabulary %s has %d ids (largest %d) but the model has vocab_size=%d embedding rows%s'
                % (self._source, top, top - 1, rows,
                   '; token ids >= %d would be out of range' % rows if top > rows else ' (strict=True)')
            )

    def tokenize(self, text, maxlen=None):
        """Tokens of `text` with `token_start`/`token_end` around them.

        Args:
            text: str (or UTF-8 bytes); '' gives just the start and end tokens.
            maxlen: None or int, total length including the special tokens; longer
                outputs lose tokens from the right (before `token_end`).
        Returns:
            list of str.
        Raises:
            TypeError: `text` is not str/bytes, or `maxlen` is not None or an int.
            ValueError: `text` is invalid UTF-8 or holds a surrogate code point (named with
            its index), or `maxlen` is smaller than the number of special tokens.
        """
        text = _as_text(text, 'text')
        self._check_maxlen(maxlen, pair=False)
        tokens = self._tokenize_with_ends(text)
        if maxlen is not None:
            truncate_sequences(maxlen, -int(self._token_end is not None) - 1, tokens)
        return tokens

    def _tokenize_with_ends(self, text):
        tokens = [self._token_translate.get(t) or t for t in self._tokenize(text)]
        if self._token_start is not None:
            tokens.insert(0, self._token_start)
        if self._token_end is not None:
            tokens.append(self._token_end)
        return tokens

    def token_to_id(self, token):
        """int id of `token` (the unknown token's id when it is not in the vocabulary)."""
        raise NotImplementedError

    def tokens_to_ids(self, tokens):
        """list of int ids of `tokens`."""
        return [self.token_to_id(token) for token in tokens]

    def id_to_token(self, i):
        """str token of id `i`."""
        raise NotImplementedError

    def ids_to_tokens(self, ids):
        """list of str tokens of `ids`."""
        return [self.id_to_token(i) for i in ids]

    def _num_special(self, pair, pattern='S*E*E'):
        ends = int(self._token_start is not None) + int(self._token_end is not None)
        if not pair:
            return ends
        if pattern == 'S*E*E':
            return ends + int(self._token_end is not None)
        return 2 * ends

    def _check_maxlen(self, maxlen, pair, pattern='S*E*E'):
        _as_maxlen(maxlen)
        if maxlen is None:
            return
        needed = self._num_special(pair, pattern)
        if maxlen < max(needed, 1):
            raise ValueError(
                'maxlen=%r is too small: %s needs at least %d tokens'
                % (maxlen, 'two segments' if pair else 'one segment', max(needed, 1))
            )

    def _segment_tokens(self, text, name):
        if isinstance(text, (list, tuple)):
            return list(text)  # already tokens; copied because truncation pops in place
        if text is None:
            raise TypeError('%s must be str or a list of tokens, got None' % name)
        return self._tokenize_with_ends(_as_text(text, name))

    def encode(self, first_text, second_text=None, maxlen=None, pattern='S*E*E', truncate_from='right'):
        """Token ids and segment ids of one text or a pair, BERT style.

        Args:
            first_text: str (or UTF-8 bytes), or a list of tokens; '' is a segment of no
                tokens (`[CLS] [SEP]`, as in bert4keras 0.11.5).
            second_text: None, or like `first_text`.
            maxlen: None or int, total length including special tokens.
            pattern: 'S*E*E' ([CLS] a [SEP] b [SEP], BERT) or 'S*ES*E' (the second
                segment keeps its own `token_start`).
            truncate_from: 'right', 'left', or an int index at which tokens are popped.
                The longer segment loses tokens first (bert4keras `truncate_sequences`).
        Returns:
            (token_ids, segment_ids): two lists of int of equal length; segment ids are 0
            for the first segment and 1 for the second.
        Raises:
            TypeError: a text is None or not str/bytes/list; `maxlen` is not None or an int.
            ValueError: a text is invalid UTF-8 or holds a surrogate code point (named with
            its index); `maxlen` is smaller than the number of special tokens.
        """
        pair = second_text is not None
        self._check_maxlen(maxlen, pair, pattern)
        first_tokens = self._segment_tokens(first_text, 'first_text')
        second_tokens = self._segment_tokens(second_text, 'second_text') if pair else None

        if maxlen is not None:
            if truncate_from == 'right':
                index = -int(self._token_end is not None) - 1
            elif truncate_from == 'left':
                index = int(self._token_start is not None)
            elif isinstance(truncate_from, int):
                index = truncate_from
            else:
                raise ValueError("truncate_from must be 'right', 'left' or an int, got %r" % (truncate_from,))
            if pair and pattern == 'S*E*E':
                maxlen += int(bool(self._token_start))  # the second segment's start token is dropped below
            truncate_sequences(maxlen, index, first_tokens, second_tokens)

        token_ids = self.tokens_to_ids(first_tokens)
        segment_ids = [0] * len(token_ids)
        if pair:
            if pattern == 'S*E*E':
                second_tokens = second_tokens[int(bool(self._token_start)):]
            second_ids = self.tokens_to_ids(second_tokens)
            token_ids.extend(second_ids)
            segment_ids.extend([1] * len(second_ids))
        return token_ids, segment_ids

    def encode_batch(self, first_texts, second_texts=None, maxlen=None, truncate_from='right'):
        """`encode` over lists of texts.

        Args:
            first_texts: list of str. second_texts: None or a list as long.
            maxlen, truncate_from: as in `encode`.
        Returns:
            (batch_token_ids, batch_segment_ids): two lists (one entry per text) of lists of
            int, unpadded; `sequence_padding` turns each into an int array
            (batch_size, max_len).
        Raises:
            TypeError/ValueError as `encode`, naming the offending item (`first_texts[3]`);
            ValueError when the two lists differ in length.
        """
        first_texts, second_texts = _as_batch(first_texts, second_texts)
        batch_token_ids, batch_segment_ids = [], []
        for a, b in zip(first_texts, second_texts or [None] * len(first_texts)):
            token_ids, segment_ids = self.encode(a, b, maxlen=maxlen, truncate_from=truncate_from)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
        return batch_token_ids, batch_segment_ids

    def decode(self, ids):
        """Readable text of `ids`."""
        raise NotImplementedError

    def _tokenize(self, text):
        """Tokens of `text`, without start/end tokens and before `token_translate`."""
        raise NotImplementedError


class Tokenizer(TokenizerBase):
    """BERT's WordPiece tokenizer, run by the Hugging Face `tokenizers` library.

    The pipeline is Google BERT's (and `transformers.BertTokenizerFast`'s): BertNormalizer
    (control characters removed, whitespace unified, spaces around every CJK character so
    Chinese splits one character per token, lowercasing and accent stripping when
    `do_lower_case`), BertPreTokenizer (whitespace and punctuation), WordPiece (greedy
    longest match, `##` continuations, a word with no match becomes `[UNK]`).
    `[PAD] [UNK] [CLS] [SEP] [MASK]` are registered special tokens, so written literally in
    a text they are matched as themselves.

    Args:
        token_dict: path of a `vocab.txt`, or dict str -> int (e.g. from `load_vocab`).
        do_lower_case: bool, True for uncased and Chinese BERT checkpoints.
        word_maxlen: int, words longer than this many characters become `[UNK]`.
        token_start, token_end, pre_tokenize, token_translate: see `TokenizerBase`.
    A vocabulary may lack `[PAD] [UNK] [CLS] [SEP] [MASK]` (e.g. a handful of characters for a
    toy language model). One warning then names the missing tokens when `[UNK]`, `[CLS]` or
    `[SEP]` is among them (a missing `[PAD]`/`[MASK]` alone, as in vocabularies simplified
    without them, only leaves their id None). As in bert4keras 0.11.5, `tokenize` still
    emits `[CLS]`/`[SEP]` as strings, and `token_to_id` maps them and every other token not
    in the vocabulary to `_token_unk_id`, read at each call: a script may set it after
    construction (`tokenizer._token_unk_id = 0`).

    Attributes:
        `_token_pad_id`, `_token_unk_id`, `_token_mask_id`, `_token_start_id`,
        `_token_end_id`: int, or None when the token is not in the vocabulary.
        `_vocab_size`, `_do_lower_case`, `_token_dict`, `_token_dict_inv`: as bert4keras's.
    Raises:
        FileNotFoundError: `token_dict` is a path that does not exist.
        ValueError: the vocabulary is empty, has a token twice or does not decode (see
            `load_vocab`; the message names the file).
        TypeError: a dict `token_dict` maps a non-str token or a non-int id.
    Source: bert4keras 0.11.5 `Tokenizer`; Devlin et al. 2019 (BERT) for the algorithm.
    """

    def __init__(self, token_dict, do_lower_case=False, word_maxlen=200, **kwargs):
        super().__init__(**kwargs)
        if is_string(token_dict) or isinstance(token_dict, os.PathLike):
            self._source = repr(os.fspath(token_dict))
            token_dict = load_vocab(token_dict)
        else:
            self._source = "(token dict)"
            _check_token_dict(token_dict, self._source)
        self._do_lower_case = do_lower_case
        self._token_dict = dict(token_dict)
        self._token_dict_inv = {v: k for k, v in self._token_dict.items()}
        self._vocab_size = len(self._token_dict)
        if not self._token_dict:
            raise ValueError('vocabulary %s is empty' % self._source)
        self._word_maxlen = _check_int(type(self).__name__, 'word_maxlen', word_maxlen, 1)
        for name in ['pad', 'unk', 'mask', 'start', 'end']:
            token = getattr(self, '_token_%s' % name)
            setattr(self, '_token_%s_id' % name, self._token_dict.get(token))
        self._warn_missing_special_tokens()
        self._backend = self._build_backend()

    def _warn_missing_special_tokens(self):
        """One warning when `[UNK]`, `[CLS]` or `[SEP]` is not in the vocabulary (see the class)."""
        missing = [t for t in dict.fromkeys([self._token_start, self._token_end, self._token_unk,
                                             self._token_pad, self._token_mask])
                   if t is not None and t not in self._token_dict]
        emitted = [t for t in missing if t in (self._token_start, self._token_end)]
        if not emitted and self._token_unk not in missing:
            return
        if emitted:
            what = 'tokenize still emits %s as strings; token_to_id maps them and any other token not in ' \
                   'the vocabulary' % ', '.join(map(repr, emitted))
        else:
            what = 'token_to_id maps tokens not in the vocabulary'
        if self._token_unk_id is None:
            unk = 'None here: set it (e.g. tokenizer._token_unk_id = 0) or encoding such a token raises ValueError'
        else:
            unk = 'now %d, the id of %r' % (self._token_unk_id, self._token_unk)
        warnings.warn(
            'vocabulary %s has no %s. %s to tokenizer._token_unk_id, read at each call: %s.'
            % (self._source, ', '.join(map(repr, missing)), what, unk),
            stacklevel=3,
        )

    def _build_backend(self):
        # The unknown, start and end tokens need ids in the backend even when they are not in
        # the vocabulary: those get ids past it there, so the backend still emits them, and
        # `_ids` replaces them (and [UNK]'s id) with what `token_to_id` says at call time.
        extra = [t for t in dict.fromkeys([self._token_unk, self._token_start, self._token_end])
                 if t is not None and t not in self._token_dict]
        self._backend_extra_ids = {t: self._max_id() + 1 + k for k, t in enumerate(extra)}
        vocab = self._token_dict
        if self._token_unk in self._backend_extra_ids:
            vocab = {**vocab, self._token_unk: self._backend_extra_ids[self._token_unk]}
        self._backend_remapped = {i: t for t, i in self._backend_extra_ids.items()}  # backend id -> token
        self._backend_remapped[vocab[self._token_unk]] = self._token_unk
        backend = tokenizers.Tokenizer(
            models.WordPiece(
                vocab=vocab,
                unk_token=self._token_unk,
                max_input_chars_per_word=self._word_maxlen,
            )
        )
        backend.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=self._do_lower_case
        )
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece()
        specials = [self._token_pad, self._token_unk, self._token_start, self._token_end, self._token_mask]
        backend.add_special_tokens(
            [
                tokenizers.AddedToken(t, special=True, normalized=False)
                for t in dict.fromkeys(specials)
                if t is not None and t in self._token_dict
            ]
        )
        start = [] if self._token_start is None else [self._token_start]
        end = [] if self._token_end is None else [self._token_end]
        ids = {**self._token_dict, **self._backend_extra_ids}
        backend.post_processor = processors.TemplateProcessing(
            single=start + ['$A'] + end,
            pair=start + ['$A'] + end + ['$B:1'] + [t + ':1' for t in end],
            special_tokens=[(t, ids[t]) for t in dict.fromkeys(start + end)],
        )
        return backend

    def _backend_ids_exact(self):
        """True when the backend's ids are ours: every special token it emits is in the
        vocabulary and `_token_unk_id` (read now: scripts may set it) is the id of `[UNK]`.
        Otherwise the backend's tokens are mapped with `token_to_id`."""
        return not self._backend_extra_ids and self._token_unk_id == self._token_dict[self._token_unk]

    def _ids(self, encoding, maxlen, truncate_from, pair):
        """(token_ids, segment_ids) of a template-processed `encoding`, cut to `maxlen`."""
        token_ids, segment_ids = self._truncated(encoding, maxlen, truncate_from, pair)
        if not self._backend_ids_exact():
            remapped = self._backend_remapped
            token_ids = [self.token_to_id(remapped[i]) if i in remapped else i for i in token_ids]
        return token_ids, segment_ids

    @property
    def backend_tokenizer(self):
        """The `tokenizers.Tokenizer` doing the work (no truncation set), e.g. to save it.

        Special tokens missing from the vocabulary have ids past it there."""
        return self._backend

    def _truncated(self, encoding, maxlen, truncate_from, pair, fields=('ids', 'type_ids')):
        """`fields` of a template-processed `encoding` cut to `maxlen` tokens.

        Same result as the backend's `longest_first` truncation (BertTokenizerFast's), but
        without the overflowing windows the backend builds, which for long pairs cost
        several times the tokenization itself.
        """
        values = [getattr(encoding, f) for f in fields]
        length = len(values[0])
        if maxlen is None or length <= maxlen:
            return values
        s, e = int(self._token_start is not None), int(self._token_end is not None)
        n_b = encoding.type_ids.count(1) - e if pair else 0
        n_a = length - n_b - s - e * (1 + pair)
        k_a, k_b = _longest_first(n_a, n_b, maxlen - self._num_special(pair))
        a0, b0 = s, s + n_a + e
        if truncate_from == 'right':
            keep_a, keep_b = (a0, a0 + k_a), (b0, b0 + k_b)
        else:
            keep_a, keep_b = (a0 + n_a - k_a, a0 + n_a), (b0 + n_b - k_b, b0 + n_b)
        spans = [(0, s), keep_a, (a0 + n_a, b0)]
        if pair:
            spans += [keep_b, (b0 + n_b, length)]
        return [[x for start, stop in spans for x in v[start:stop]] for v in values]

    def _is_fast(self):
        """True when the backend's own pipeline gives our tokens (no Python-side steps)."""
        return self._pre_tokenize is None and not self._token_translate

    def _max_id(self):
        return max(self._token_dict.values())

    def token_to_id(self, token):
        """int id of `token`; `_token_unk_id` (read at each call) for the unknown token and
        any token not in the vocabulary.

        Raises:
            ValueError: `token` is not in the vocabulary and `_token_unk_id` is None (the
                vocabulary has no `[UNK]`), naming the token.
        Source: bert4keras 0.11.5 `Tokenizer.token_to_id`.
        """
        if token != self._token_unk:
            i = self._token_dict.get(token)
            if i is not None:
                return i
        unk = self._token_unk_id
        if unk is None:
            raise ValueError(
                'token %r is not in the vocabulary %s, which has no %r: set tokenizer._token_unk_id '
                'to the id such tokens get (e.g. tokenizer._token_unk_id = 0)' % (token, self._source, self._token_unk)
            )
        return unk

    def id_to_token(self, i):
        """str token of id `i`. Raises KeyError for an unknown id."""
        return self._token_dict_inv[i]

    def _check_ids(self, ids):
        """`ids` as a list of int, each an id of the vocabulary (ValueError naming the first that is not)."""
        ids = _as_ids(ids)
        inv = self._token_dict_inv
        for k, i in enumerate(ids):
            if i not in inv:
                raise ValueError(
                    'ids[%d] = %d is not an id of the vocabulary %s (%d tokens, ids 0..%d)'
                    % (k, i, self._source, self._vocab_size, self._max_id())
                )
        return ids

    def tokenize(self, text, maxlen=None):
        """Tokens of `text`, e.g. `['[CLS]', 'hello', 'world', '##s', '[SEP]']`.

        Args and errors as `TokenizerBase.tokenize`.
        """
        if not self._is_fast():
            return super().tokenize(text, maxlen)
        text = _as_text(text, 'text')
        self._check_maxlen(maxlen, pair=False)
        return self._truncated(self._backend.encode(text), maxlen, 'right', False, ('tokens',))[0]

    def encode(self, first_text, second_text=None, maxlen=None, pattern='S*E*E', truncate_from='right'):
        """Token ids and segment ids of one text or a pair: `[CLS] a [SEP] b [SEP]`.

        Same arguments, results and errors as `TokenizerBase.encode`. Texts are encoded by
        the `tokenizers` library, ids identical to `transformers.BertTokenizerFast`
        including truncation (`longest_first`). That rule and bert4keras's
        `truncate_sequences` (used for token lists, `pre_tokenize`, `token_translate`, other
        patterns and integer `truncate_from`) agree except for one tie: when both segments
        must be cut to an odd total, the `tokenizers` rule gives the odd token to the
        segment that was longer, bert4keras to the second.
        """
        pair = second_text is not None
        fast = (
            self._is_fast()
            and truncate_from in ('right', 'left')
            and (not pair or pattern == 'S*E*E')
            and not isinstance(first_text, (list, tuple))
            and not isinstance(second_text, (list, tuple))
        )
        if not fast:
            return super().encode(first_text, second_text, maxlen, pattern, truncate_from)
        self._check_maxlen(maxlen, pair)
        inputs = (_as_text(first_text, 'first_text'),)
        if pair:
            inputs += (_as_text(second_text, 'second_text'),)
        return self._ids(self._backend.encode(*inputs), maxlen, truncate_from, pair)

    def encode_batch(self, first_texts, second_texts=None, maxlen=None, truncate_from='right'):
        """`encode` over lists of texts in one call of the `tokenizers` library (parallel, in Rust).

        Args:
            first_texts: list of str. second_texts: None or a list as long.
            maxlen: None or int. truncate_from: 'right' or 'left'.
        Returns:
            (batch_token_ids, batch_segment_ids): two lists (one per text) of lists of int,
            unpadded, identical to `encode` of each text.
        Raises:
            as `TokenizerBase.encode_batch`.
        """
        if not self._is_fast() or truncate_from not in ('right', 'left'):
            return super().encode_batch(first_texts, second_texts, maxlen, truncate_from)
        first_texts, second_texts = _as_batch(first_texts, second_texts)
        pair = second_texts is not None
        self._check_maxlen(maxlen, pair)
        inputs = list(zip(first_texts, second_texts)) if pair else first_texts
        encodings = self._backend.encode_batch_fast(inputs)  # no offsets: not needed for ids
        if maxlen is None and self._backend_ids_exact():
            return [e.ids for e in encodings], [e.type_ids for e in encodings]
        batch_token_ids, batch_segment_ids = [], []
        for e in encodings:
            token_ids, segment_ids = self._ids(e, maxlen, truncate_from, pair)
            batch_token_ids.append(token_ids)
            batch_segment_ids.append(segment_ids)
        return batch_token_ids, batch_segment_ids

    def _tokenize(self, text):
        return [token for token, _, _ in self._pieces(text)]

    def _pieces(self, text):
        """[(token, start, end)] of `text`: tokens without start/end tokens, after
        `pre_tokenize`, before `token_translate`; `text[start:end]` is where each came from."""
        if self._pre_tokenize is not None:
            return self._pre_tokenized_pieces(text)
        encoding = self._backend.encode(text, add_special_tokens=False)
        return [(t, s, e) for t, (s, e) in zip(encoding.tokens, encoding.offsets)]

    def _pre_tokenized_pieces(self, text):
        # As bert4keras: pre_tokenize sees the lowercased text; a word in the vocabulary is
        # one token, any other word is tokenized as usual.
        normalized, char_mapping = self._normalize(text)
        pieces, cursor = [], 0
        for word in self._pre_tokenize(normalized):
            start = normalized.find(word, cursor) if word else -1
            located = start >= 0
            start = start if located else cursor
            if word in self._token_dict:
                spans = [(word, 0, len(word))]
            else:
                encoding = self._backend.encode(word, add_special_tokens=False)
                spans = [(t, s, e) for t, (s, e) in zip(encoding.tokens, encoding.offsets)]
            for token, s, e in spans:
                if located and e > s:
                    pieces.append((token, char_mapping[start + s], char_mapping[start + e - 1] + 1))
                else:  # pre_tokenize changed the text: no known position
                    pieces.append((token, 0, 0))
            if located:
                cursor = start + len(word)
        return pieces

    def _normalize(self, text):
        """bert4keras's normalization (lowercase, strip accents when `do_lower_case`; drop
        control characters) and, per character of the result, its index in `text`."""
        normalized, char_mapping = [], []
        for i, ch in enumerate(text):
            if self._do_lower_case:
                ch = unicodedata.normalize('NFD', ch.lower())
                ch = ''.join(c for c in ch if unicodedata.category(c) != 'Mn')
            ch = ''.join(c for c in ch if not (ord(c) == 0 or ord(c) == 0xFFFD or self._is_control(c)))
            normalized.append(ch)
            char_mapping.extend([i] * len(ch))
        return ''.join(normalized), char_mapping

    def rematch(self, text, tokens):
        """Map tokens back to the characters of the original `text` they came from.

        Args:
            text: the str that was tokenized.
            tokens: list of str, `tokenize(text)` or a truncation of it.
        Returns:
            list (one per token) of lists of int: indices into `text`, e.g. `text[i]` for
            `i` in `mapping[k]` spells token `k` up to case, accents and `##`.
            Start/end tokens, and tokens not found in `text`'s tokenization, get `[]`.
        Source: bert4keras 0.11.5 `Tokenizer.rematch`; the offsets are the `tokenizers`
            library's alignments, so they hold through lowercasing and accent stripping.
        """
        text = _as_text(text, 'text')
        pieces = [(self._token_translate.get(t) or t, s, e) for t, s, e in self._pieces(text)]
        if self._token_start is not None:
            pieces.insert(0, (self._token_start, 0, 0))
        if self._token_end is not None:
            pieces.append((self._token_end, 0, 0))
        mapping, j = [], 0
        for token in tokens:
            k = j
            while k < len(pieces) and pieces[k][0] != token:
                k += 1
            if k < len(pieces):
                _, start, end = pieces[k]
                mapping.append(list(range(start, end)))
                j = k + 1
            else:
                mapping.append([])
        return mapping

    def decode(self, ids, tokens=None):
        """Readable text of `ids` (or of `tokens` when given): `##` pieces glued, CJK
        characters unspaced, special tokens (`[...]`) dropped.

        Args:
            ids: list (or 1-D array) of int. tokens: optional list of str, used instead of `ids`.
        Returns:
            str.
        Raises:
            TypeError: `ids` is not a sequence of int. ValueError: an id is not in the
                vocabulary (the message names its position and the vocabulary's size).
        Source: bert4keras 0.11.5 `Tokenizer.decode`.
        """
        tokens = tokens or self.ids_to_tokens(self._check_ids(ids))
        tokens = [token for token in tokens if not self._is_special(token)]

        text = ''
        for i, token in enumerate(tokens):
            if token[:2] == '##':
                text += token[2:]
            elif len(token) == 1 and self._is_cjk_character(token):
                text += token
            elif len(token) == 1 and self._is_punctuation(token):
                text += token
                text += ' '
            elif i > 0 and self._is_cjk_character(text[-1]):
                text += token
            else:
                text += ' '
                text += token

        text = re.sub(' +', ' ', text)
        text = re.sub(r"' (re|m|s|t|ve|d|ll) ", r"'\1 ", text)
        punctuation = self._cjk_punctuation() + '+-/={(<['
        punctuation_regex = '|'.join([re.escape(p) for p in punctuation])
        punctuation_regex = '(%s) ' % punctuation_regex
        text = re.sub(punctuation_regex, r'\1', text)
        text = re.sub(r'(\d\.) (\d)', r'\1\2', text)
        return text.strip()

    @staticmethod
    def stem(token):
        """`token` without a leading `##`."""
        if token[:2] == '##':
            return token[2:]
        return token

    @staticmethod
    def _is_space(ch):
        return ch == ' ' or ch == '\n' or ch == '\r' or ch == '\t' or unicodedata.category(ch) == 'Zs'

    @staticmethod
    def _is_punctuation(ch):
        """ASCII symbols and Unicode category P* (full and half width), as Google BERT."""
        code = ord(ch)
        return (
            33 <= code <= 47
            or 58 <= code <= 64
            or 91 <= code <= 96
            or 123 <= code <= 126
            or unicodedata.category(ch).startswith('P')
        )

    @staticmethod
    def _cjk_punctuation():
        return (
            '\uff02\uff03\uff04\uff05\uff06\uff07\uff08\uff09\uff0a\uff0b\uff0c\uff0d\uff0f'
            '\uff1a\uff1b\uff1c\uff1d\uff1e\uff20\uff3b\uff3c\uff3d\uff3e\uff3f\uff40\uff5b'
            '\uff5c\uff5d\uff5e\uff5f\uff60\uff62\uff63\uff64\u3000\u3001\u3003\u3008\u3009'
            '\u300a\u300b\u300c\u300d\u300e\u300f\u3010\u3011\u3014\u3015\u3016\u3017\u3018'
            '\u3019\u301a\u301b\u301c\u301d\u301e\u301f\u3030\u303e\u303f\u2013\u2014\u2018'
            '\u2019\u201b\u201c\u201d\u201e\u201f\u2026\u2027\ufe4f\ufe51\ufe54\u00b7\uff01'
            '\uff1f\uff61\u3002'
        )

    @staticmethod
    def _is_cjk_character(ch):
        """CJK Unified Ideographs and extensions, as Google BERT's `_is_chinese_char`."""
        code = ord(ch)
        return (
            0x4E00 <= code <= 0x9FFF
            or 0x3400 <= code <= 0x4DBF
            or 0x20000 <= code <= 0x2A6DF
            or 0x2A700 <= code <= 0x2B73F
            or 0x2B740 <= code <= 0x2B81F
            or 0x2B820 <= code <= 0x2CEAF
            or 0xF900 <= code <= 0xFAFF
            or 0x2F800 <= code <= 0x2FA1F
        )

    @staticmethod
    def _is_control(ch):
        return unicodedata.category(ch) in ('Cc', 'Cf')

    @staticmethod
    def _is_special(ch):
        """True for bracketed tokens such as `[CLS]`, `[unused1]`."""
        return bool(ch) and (ch[0] == '[') and (ch[-1] == ']')

    @staticmethod
    def _is_redundant(token):
        """True when BERT's tokenizer cannot produce `token` (see `load_vocab`)."""
        if len(token) > 1:
            for ch in Tokenizer.stem(token):
                if Tokenizer._is_cjk_character(ch) or Tokenizer._is_punctuation(ch):
                    return True
        return False


class SpTokenizer(TokenizerBase):
    """A SentencePiece model (T5, ALBERT, mT5, CPM, ...) behind bert4keras's tokenizer API.

    Args:
        sp_model_path: str or os.PathLike, a `.model` file.
        token_start, token_end, pre_tokenize, token_translate: see `TokenizerBase`; the
            defaults are `[CLS]`/`[SEP]` as in bert4keras (right for ALBERT); for T5 pass
            `token_start=None, token_end='</s>'`. A token missing from the model maps to
            the unknown id.
    Attributes:
        `_token_pad`, `_token_unk`: the model's own pad and unknown pieces (pad is None
        when the model has none); `_token_*_id` as in `Tokenizer`.
    Raises:
        FileNotFoundError: no file at `sp_model_path`. ValueError: the file is not a
        SentencePiece model.
    Source: bert4keras 0.11.5 `SpTokenizer`.
    """

    def __init__(self, sp_model_path, **kwargs):
        super().__init__(**kwargs)
        sp_model_path = os.fspath(sp_model_path)
        self._source = repr(sp_model_path)
        if not os.path.isfile(sp_model_path):
            raise FileNotFoundError('SentencePiece model not found: %r' % sp_model_path)
        self.sp_model = sentencepiece.SentencePieceProcessor()
        try:
            self.sp_model.Load(sp_model_path)
        except (RuntimeError, OSError) as e:
            raise ValueError('cannot load SentencePiece model %r: %s' % (sp_model_path, e)) from e
        pad_id = self.sp_model.pad_id()
        self._token_pad = self.sp_model.id_to_piece(pad_id) if pad_id >= 0 else None
        self._token_unk = self.sp_model.id_to_piece(self.sp_model.unk_id())
        self._vocab_size = self.sp_model.get_piece_size()
        for name in ['pad', 'unk', 'mask', 'start', 'end']:
            token = getattr(self, '_token_%s' % name)
            setattr(self, '_token_%s_id' % name, None if token is None else self.sp_model.piece_to_id(token))

    def token_to_id(self, token):
        """int id of `token` (the unknown id when it is not a piece)."""
        return self.sp_model.piece_to_id(token)

    def id_to_token(self, i):
        """str piece of id `i`; '' for ids beyond the model (padded embedding rows)."""
        if i < self._vocab_size:
            return self.sp_model.id_to_piece(i)
        return ''

    def decode(self, ids):
        """Readable text of `ids` (list or 1-D array of int); control pieces such as `</s>`
        vanish, ids beyond the model (padded embedding rows) too.

        Raises:
            TypeError: `ids` is not a sequence of int. ValueError: a negative id (named).
        """
        ids = _as_ids(ids)
        negative = next((k for k, i in enumerate(ids) if i < 0), None)
        if negative is not None:
            raise ValueError('ids[%d] = %d is negative: not an id of the SentencePiece model %s'
                             % (negative, ids[negative], self._source))
        tokens = [self._token_translate_inv.get(token) or token for token in self.ids_to_tokens(ids)]
        return self.sp_model.decode_pieces(tokens)

    def _tokenize(self, text):
        if self._pre_tokenize is not None:
            text = ' '.join(self._pre_tokenize(text))
        return self.sp_model.encode_as_pieces(text)

    def _is_special(self, i):
        """True for control, unknown and unused ids."""
        return self.sp_model.is_control(i) or self.sp_model.is_unknown(i) or self.sp_model.is_unused(i)

    def _is_decodable(self, i):
        """True for ids that `decode` should print."""
        return (i < self._vocab_size) and not self._is_special(i)
