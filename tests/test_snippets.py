"""bert4keras.snippets: closed-form checks, and DataGenerator feeding model.fit on the active backend."""

import os
import unicodedata

import keras
import numpy as np
import pytest

from bert4keras.snippets import (
    DataGenerator,
    LengthSortedGenerator,
    first_two_apart,
    is_string,
    length_sorted_batches,
    sequence_padding,
    text_segmentate,
    to_array,
    truncate_sequences,
)


def _data_dir():
    default = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'data')
    return os.environ.get('BERT4KERAS_DATA') or default


# ------------------------------------------------------------------------- sequence_padding


def test_sequence_padding_post_to_longest():
    out = sequence_padding([[1, 2, 3], [4], [5, 6]])
    np.testing.assert_array_equal(out, [[1, 2, 3], [4, 0, 0], [5, 6, 0]])
    assert out.shape == (3, 3) and out.dtype == np.int64


def test_sequence_padding_pre_value_and_cut():
    out = sequence_padding([[1, 2, 3, 4], [5]], length=3, value=-1, mode='pre')
    np.testing.assert_array_equal(out, [[1, 2, 3], [-1, -1, 5]])  # cut keeps the start


def test_sequence_padding_keeps_trailing_dims_and_dtype():
    inputs = [np.ones((2, 3), dtype='float32'), np.full((1, 3), 2, dtype='float32')]
    out = sequence_padding(inputs, length=4)
    assert out.shape == (2, 4, 3) and out.dtype == np.float32
    np.testing.assert_array_equal(out[1], [[2, 2, 2], [0, 0, 0], [0, 0, 0], [0, 0, 0]])


def test_sequence_padding_two_seq_dims_per_dim_length():
    a = np.arange(6).reshape(2, 3)
    b = np.arange(4).reshape(4, 1) + 10
    out = sequence_padding([a, b], seq_dims=2)
    assert out.shape == (2, 4, 3)
    np.testing.assert_array_equal(out[0], [[0, 1, 2], [3, 4, 5], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(out[1], [[10, 0, 0], [11, 0, 0], [12, 0, 0], [13, 0, 0]])
    out = sequence_padding([a, b], length=[3, 2], seq_dims=2)
    np.testing.assert_array_equal(out[0], [[0, 1], [3, 4], [0, 0]])
    np.testing.assert_array_equal(out[1], [[10, 0], [11, 0], [12, 0]])


def test_sequence_padding_errors():
    with pytest.raises(ValueError, match='mode'):
        sequence_padding([[1]], mode='middle')
    with pytest.raises(ValueError, match='empty'):
        sequence_padding([])


# ------------------------------------------------------------------------ truncate_sequences


def test_sequence_padding_pad_to_multiple_of():
    out = sequence_padding([[1, 2, 3, 4, 5], [6]], pad_to_multiple_of=4)
    np.testing.assert_array_equal(out, [[1, 2, 3, 4, 5, 0, 0, 0], [6, 0, 0, 0, 0, 0, 0, 0]])
    assert sequence_padding([[1, 2, 3, 4]], pad_to_multiple_of=4).shape == (1, 4)  # already a multiple
    assert sequence_padding([[1, 2]], length=5, pad_to_multiple_of=8).shape == (1, 8)  # `length` rounds too
    # seq_dims=2: each padded dimension is rounded on its own (3 -> 4, 5 -> 8), the trailing one is not
    out = sequence_padding([np.ones((3, 5, 2)), np.ones((1, 2, 2))], seq_dims=2, pad_to_multiple_of=4)
    assert out.shape == (2, 4, 8, 2) and out.sum() == 3 * 5 * 2 + 1 * 2 * 2
    # ragged nested lists take the other path through the function
    assert sequence_padding([[[1], [2, 3]]], seq_dims=2, pad_to_multiple_of=3).shape == (1, 3, 3)
    with pytest.raises(ValueError, match='pad_to_multiple_of'):
        sequence_padding([[1]], pad_to_multiple_of=0)
    with pytest.raises(TypeError, match='pad_to_multiple_of'):
        sequence_padding([[1]], pad_to_multiple_of=8.0)


def test_truncate_sequences_pops_from_the_longest():
    a, b = [1, 2, 3, 4], [5, 6, 7]
    out = truncate_sequences(5, -1, a, b)
    # lengths 4,3 -> pop a; 3,3 tie -> the first; 2,3 = 5
    assert a == [1, 2] and b == [5, 6, 7]
    assert out[0] is a and out[1] is b


def test_truncate_sequences_per_sequence_indices_and_skips_empty():
    cls_a, cls_b = ['[CLS]', 'x', 'y', 'z', '[SEP]'], ['[CLS]', 'u', 'v', 'w', '[SEP]']
    out = truncate_sequences(6, [-2, 1], cls_a, None, cls_b, [])
    # 5,5 -> a loses z; 4,5 -> b loses u; 4,4 -> a loses y; 3,4 -> b loses v
    assert cls_a == ['[CLS]', 'x', '[SEP]'] and cls_b == ['[CLS]', 'w', '[SEP]']
    assert len(out) == 2


# ---------------------------------------------------------------------------- text_segmentate


def test_text_segmentate_merges_while_fitting():
    assert text_segmentate('ab,cd,ef', 5, ',') == ['ab,', 'cd,', 'ef']
    assert text_segmentate('ab,cd,ef', 6, ',') == ['ab,cd,', 'ef']
    assert text_segmentate('ab,cd,ef', 6, ',', strips=',') == ['ab,cd', 'ef']
    assert text_segmentate('short', 10) == ['short']


def test_text_segmentate_falls_back_to_later_separators():
    assert text_segmentate('aaa,bbb,cc.dd', 5, ',.') == ['aaa,', 'bbb,', 'cc.dd']
    assert text_segmentate('aaa,bbb,cc.dd', 4, ',.') == ['aaa,', 'bbb,', 'cc.', 'dd']
    text = '今天天气很好。我们去公园玩吧！然后回家。'
    assert text_segmentate(text, 8, '。！') == ['今天天气很好。', '我们去公园玩吧！', '然后回家。']


def test_is_string_and_to_array():
    assert is_string('a') and not is_string(b'a') and not is_string(None)
    x, y = to_array([1, 2], [[3.0]])
    assert x.shape == (2,) and y.shape == (1, 1)
    assert to_array([1]).shape == (1,)


# ----------------------------------------------------------------------------- DataGenerator


def _sst2(n):
    path = os.path.join(_data_dir(), 'en', 'sst2_test.tsv')
    with open(path, encoding='utf-8') as f:
        rows = [line.split('\t') for line in f.read().splitlines()[1 : n + 1]]
    return [(text, int(label)) for text, label in rows]


def _char_ids(text, maxlen=24):
    return [ord(c) % 63 + 1 for c in text[:maxlen]]  # 1..63: 0 stays the padding


class _BatchGenerator(DataGenerator):
    """bert4keras-style: samples -> padded (batch_size, seq_len) int32 ids, (batch_size,) labels."""

    def __iter__(self, random=False):
        batch_ids, batch_labels = [], []
        for is_end, (text, label) in self.sample(random):
            batch_ids.append(_char_ids(text))
            batch_labels.append(label)
            if len(batch_ids) == self.batch_size or is_end:
                yield sequence_padding(batch_ids).astype('int32'), np.array(batch_labels, dtype='float32')
                batch_ids, batch_labels = [], []


class _SampleGenerator(DataGenerator):
    """For to_dataset: single samples (ids, label)."""

    def __iter__(self, random=False):
        for _, (text, label) in self.sample(random):
            yield _char_ids(text), label


def _tiny_model():
    model = keras.Sequential(
        [
            keras.Input(shape=(None,), dtype='int32'),
            keras.layers.Embedding(64, 8),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(1, activation='sigmoid'),
        ]
    )
    model.compile(optimizer='adam', loss='binary_crossentropy')
    return model


def test_sample_flags_the_last_item_and_shuffles_everything():
    generator = DataGenerator(list(range(5)), batch_size=2)
    assert len(generator) == 3
    assert list(generator.sample()) == [(False, 0), (False, 1), (False, 2), (False, 3), (True, 4)]
    flags, items = zip(*generator.sample(random=True))
    assert flags == (False,) * 4 + (True,) and sorted(items) == [0, 1, 2, 3, 4]
    stream = DataGenerator(iter(range(7)), batch_size=2, buffer_size=3)
    assert stream.steps is None
    assert sorted(d for _, d in stream.sample(random=True)) == list(range(7))
    assert list(DataGenerator([], batch_size=2).sample()) == []


def test_forfit_and_fortest_cycle_over_epochs():
    generator = _BatchGenerator(_sst2(5), batch_size=2)
    stream = generator.forfit(random=False)
    shapes = [next(stream)[0].shape[0] for _ in range(6)]
    assert shapes == [2, 2, 1, 2, 2, 1]
    inputs = next(generator.fortest())
    assert inputs.dtype == np.int32 and inputs.shape[0] == 2


def test_forfit_refuses_to_spin_on_exhausted_data():
    generator = _BatchGenerator(iter(_sst2(3)), batch_size=2)
    stream = generator.forfit(random=False)
    assert [len(next(stream)[1]) for _ in range(2)] == [2, 1]
    with pytest.raises(ValueError, match='no batch in 10 passes in a row'):
        next(stream)


class _LastMustQualify(DataGenerator):
    """bert4keras 0.11.5's relation-extraction pattern: samples are skipped by a data-dependent
    test and the batch is yielded inside it, so a shuffled pass ending on a skipped sample
    yields nothing; the next pass may."""

    def __iter__(self, random=False):
        batch = []
        for is_end, d in self.sample(random):
            if d % 2:
                batch.append(d)
                if len(batch) == self.batch_size or is_end:
                    yield np.array(batch), np.array(batch)
                    batch = []


def test_forfit_goes_on_after_a_pass_without_batches():
    generator = _LastMustQualify([2, 4, 1, 6, 3, 8], batch_size=4)  # in order: the pass ends on 8
    assert list(generator.__iter__()) == []
    generator.data = [1, 3, 5, 2]  # ends on 2: no batch in this pass either
    np.random.seed(0)
    stream = generator.forfit(random=True)
    batches = [next(stream)[0].tolist() for _ in range(3)]
    assert all(sorted(b) == [1, 3, 5] for b in batches)


def test_forfit_feeds_model_fit():
    generator = _BatchGenerator(_sst2(8), batch_size=4)
    model = _tiny_model()
    model.fit(generator.forfit(), steps_per_epoch=len(generator), epochs=1, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations) == 2


@pytest.mark.parametrize('workers', [1, 2])
def test_pydataset_feeds_model_fit(workers):
    generator = _BatchGenerator(_sst2(8), batch_size=4)
    dataset = generator.to_pydataset(workers=workers)
    assert isinstance(dataset, keras.utils.PyDataset)
    assert len(dataset) == dataset.num_batches == 2
    model = _tiny_model()
    model.fit(dataset, epochs=1, verbose=0)
    assert int(model.optimizer.iterations) == 2


def test_to_dataset_pads_each_batch():
    data = _sst2(8)
    generator = _SampleGenerator(data, batch_size=4)
    dataset = generator.to_dataset(types=('int32', 'float32'), shapes=([None], []), padded_batch=True)
    ids, labels = next(iter(dataset))
    ids, labels = ids.numpy(), labels.numpy()
    assert ids.dtype == np.int32 and labels.dtype == np.float32 and labels.shape == (4,)
    expected = {tuple(_char_ids(text)): label for text, label in data}
    rows = [tuple(row[: np.flatnonzero(row).max() + 1]) for row in ids]  # strip the padding
    assert all(expected[row] == label for row, label in zip(rows, labels))
    assert ids.shape[1] == max(len(row) for row in rows)

    named = generator.to_dataset(types=('int32', 'float32'), shapes=([None], []), names=('ids', 'label'), padded_batch=True)
    batch = next(iter(named))
    assert set(batch) == {'ids', 'label'}

    model = _tiny_model()
    model.fit(dataset, steps_per_epoch=2, epochs=1, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations) == 2


class _Reiterable:
    """Data without a length whose `__iter__` restarts, like a file reader."""

    def __init__(self, items):
        self.items = items

    def __iter__(self):
        return iter(self.items)


def test_pydataset_without_length_is_endless():
    generator = _BatchGenerator(_Reiterable(_sst2(8)), batch_size=4)
    dataset = generator.to_pydataset()
    assert dataset.num_batches is None
    model = _tiny_model()
    model.fit(dataset, steps_per_epoch=3, epochs=2, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations) == 6


def test_forfit_passes_list_inputs_as_tuples_to_fit():
    import keras

    class ListBatches(DataGenerator):
        def __iter__(self, random=False):
            for _, x in self.sample(random):
                yield [np.full((2, 3), x, "float32"), np.zeros((2, 3), "float32")], np.zeros((2, 1), "float32")

    a, b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Add()([a, b])))
    model.compile("sgd", "mse")
    gen = ListBatches([1.0, 2.0], batch_size=1)
    history = model.fit(gen.forfit(), steps_per_epoch=len(gen), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# ------------------------------------------------------------------- DataGenerator length bucketing


def _words(sample):
    return len(sample[1].split())  # SST-2 text is whitespace-tokenized


def _padding(batches):
    """Padded positions when each batch is padded to its longest sample."""
    return sum(max(map(_words, b)) * len(b) - sum(map(_words, b)) for b in batches)


def _epoch_batches(generator, seed_global=None):
    if seed_global is not None:
        np.random.seed(seed_global)
    items = [d for _, d in generator.sample(random=True)]
    return [items[i : i + generator.batch_size] for i in range(0, len(items), generator.batch_size)]


def test_bucket_by_yields_every_sample_once_in_length_homogeneous_batches():
    data = [(i, text) for i, (text, _) in enumerate(_sst2(872))]
    batch_size, window = 16, 160
    bucketed = DataGenerator(data, batch_size, buffer_size=window, bucket_by=_words, seed=0)
    plain = DataGenerator(data, batch_size, seed=0)
    for _ in range(2):  # two epochs
        batches = _epoch_batches(bucketed)
        assert len(batches) == len(bucketed) == 55
        assert sorted(i for b in batches for i, _ in b) == list(range(872))
        assert [len(b) for b in batches] == [16] * 54 + [8]  # only the last batch is short
        # Within each buffer the batches are consecutive runs of the length order: their
        # [min, max] ranges do not overlap.
        for w in range(0, len(batches), window // batch_size):
            spans = sorted((min(map(_words, b)), max(map(_words, b))) for b in batches[w : w + window // batch_size])
            assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:])), spans
        # Batches come in random order, not sorted by length across the buffer.
        firsts = [min(map(_words, b)) for b in batches[:10]]
        assert firsts != sorted(firsts)
        padding, padding_plain = _padding(batches), _padding(_epoch_batches(plain))
        assert padding < 0.25 * padding_plain, (padding, padding_plain)


def test_bucket_by_is_seeded_and_the_default_is_unchanged():
    data = [(i, text) for i, (text, _) in enumerate(_sst2(200))]
    a = DataGenerator(data, 8, buffer_size=64, bucket_by=_words, seed=3)
    b = DataGenerator(data, 8, buffer_size=64, bucket_by=_words, seed=3)
    epochs_a = [_epoch_batches(a) for _ in range(2)]
    assert epochs_a == [_epoch_batches(b) for _ in range(2)]
    assert epochs_a[0] != epochs_a[1]
    # Without bucket_by and seed: np.random.permutation as in bert4keras 0.11.5.
    np.random.seed(7)
    expected = [data[i] for i in np.random.permutation(len(data))]
    np.random.seed(7)
    assert [d for _, d in DataGenerator(data, 8).sample(random=True)] == expected
    # With a seed alone: the same permutation from np.random.default_rng(seed).
    expected = [data[i] for i in np.random.default_rng(5).permutation(len(data))]
    assert [d for _, d in DataGenerator(data, 8, seed=5).sample(random=True)] == expected
    # random=False keeps the data order even with bucket_by.
    assert [d for _, d in a.sample(random=False)] == data
    with pytest.raises(TypeError, match='bucket_by'):
        DataGenerator(data, 8, bucket_by=3)


def test_bucket_by_on_an_iterable_and_through_a_batching_subclass():
    data = _sst2(100)
    generator = DataGenerator(_Reiterable(data), 10, buffer_size=30, bucket_by=lambda d: len(d[0]), seed=1)
    items = [d for _, d in generator.sample(random=True)]
    assert sorted(items) == sorted(data)
    batches = _BatchGenerator(data, batch_size=10, buffer_size=50, bucket_by=lambda d: len(d[0]), seed=1)
    shapes = [x.shape for x, _ in batches.__iter__(random=True)]
    assert len(shapes) == 10 and sum(s[0] for s in shapes) == 100


def test_forfit_skip_starts_later_in_the_stream():
    generator = _BatchGenerator(_sst2(5), batch_size=2)  # batches of 2, 2, 1 per epoch
    sizes = [len(next(generator.forfit(random=False, skip=skip))[1]) for skip in range(5)]
    assert sizes == [2, 2, 1, 2, 2]  # skip 3 and 4 land in the second epoch
    first = [row.tolist() for row in next(generator.forfit(random=False, skip=2))[0]]
    assert first == [_char_ids(_sst2(5)[4][0])]
    model = _tiny_model()
    model.fit(generator.forfit(random=False, skip=1), steps_per_epoch=2, epochs=1, shuffle=False, verbose=0)
    assert int(model.optimizer.iterations) == 2
    with pytest.raises(ValueError, match='skip'):
        generator.forfit(skip=-1)


# ------------------------------------------------------------------- length_sorted_batches


def test_length_sorted_batches_in_order_without_random():
    assert length_sorted_batches([5, 1, 4, 2, 3], 2, random=False) == [[0, 1], [2, 3], [4]]
    assert length_sorted_batches([], 2, random=False) == []
    state = np.random.get_state()[1].copy()
    length_sorted_batches([5, 1, 4], 2, random=False)
    assert (np.random.get_state()[1] == state).all()  # no draws


def _expected_sorted_batches(lengths, batch_size, chunk_batches, permutation, shuffle):
    """The documented order built another way: rank-broken sort keys instead of a stable sort,
    the batches' shuffle as a permutation of their positions."""
    rank = {int(i): r for r, i in enumerate(permutation)}
    chunk = batch_size * chunk_batches
    batches = []
    for start in range(0, len(permutation), chunk):
        ids = sorted(permutation[start : start + chunk], key=lambda i: (lengths[i], rank[int(i)]))
        batches += [[int(i) for i in ids[k : k + batch_size]] for k in range(0, len(ids), batch_size)]
    return [batches[j] for j in shuffle(len(batches))]


@pytest.mark.parametrize('source', ['generator', 'global'])
def test_length_sorted_batches_sort_chunks_and_shuffle_the_batches(source):
    lengths = [len(text.split()) for text, _ in _sst2(500)]  # many ties: the random order breaks them
    if source == 'generator':
        batches = length_sorted_batches(lengths, 8, 10, rng=np.random.default_rng(11))
        reference = np.random.default_rng(11)
    else:  # np.random's global state, as bert4keras 0.11.5
        np.random.seed(11)
        batches = length_sorted_batches(lengths, 8, 10)
        after = np.random.get_state()[1].copy()
        np.random.seed(11)
        reference = np.random
    permutation = reference.permutation(500)
    expected = _expected_sorted_batches(lengths, 8, 10, permutation, reference.permutation)
    assert batches == expected
    if source == 'global':  # exactly those two draws were taken
        assert (np.random.get_state()[1] == after).all()
    # Properties: every index once, ceil(500 / 8) batches, one short (500 = 62 * 8 + 4).
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert sorted(map(len, batches)) == [4] + [8] * 62
    # The batches of one chunk (80 samples of the permutation, 10 batches) cover length ranges
    # that do not overlap; the epoch as a whole is not sorted.
    chunk_of = {int(i): k // 80 for k, i in enumerate(permutation)}
    assert all(len({chunk_of[i] for i in b}) == 1 for b in batches)
    for c in range(7):
        spans = sorted((min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches if chunk_of[b[0]] == c)
        assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:])), spans
    spans = [(min(lengths[i] for i in b), max(lengths[i] for i in b)) for b in batches]
    assert spans != sorted(spans)
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    plain = sum(len(b) * max(lengths[i] for i in b) for b in length_sorted_batches(lengths, 8, random=False))
    assert padded < 0.8 * plain, (padded, plain)


def test_length_sorted_batches_seeded_per_epoch_repeats_and_epochs_differ():
    lengths = list(range(40)) * 2
    epoch = [length_sorted_batches(lengths, 4, 5, rng=np.random.default_rng([7, e])) for e in (0, 0, 1)]
    assert epoch[0] == epoch[1] != epoch[2]


def test_length_sorted_batches_errors():
    with pytest.raises(ValueError, match='batch_size'):
        length_sorted_batches([1, 2], 0)
    with pytest.raises(TypeError, match='chunk_batches'):
        length_sorted_batches([1, 2], 2, chunk_batches=1.5)
    with pytest.raises(TypeError, match='lengths'):
        length_sorted_batches(None, 2)
    with pytest.raises(TypeError, match='rng'):
        length_sorted_batches([1, 2], 2, rng='numpy')
    with pytest.raises(TypeError, match='shapes_apart'):
        length_sorted_batches([1, 2], 2, shapes_apart=16)


def _numbered_samples(lengths):
    """Sample i: token_ids [i + 1] * length (so a padded row says which sample it is), segment_ids of 1s, label i."""
    return [([i + 1] * n, [1] * n, i) for i, n in enumerate(lengths)]


def test_length_sorted_generator_pads_each_field_to_a_multiple_and_yields_every_sample_once():
    lengths = [int(n) for n in np.random.default_rng(3).integers(1, 40, size=103)]
    gen = LengthSortedGenerator(_numbered_samples(lengths), batch_size=8, pad_to_multiple_of=8, seed=0)
    seen = []
    for (token_ids, segment_ids), labels in gen.__iter__(random=True):
        assert token_ids.shape == segment_ids.shape and token_ids.shape[1] % 8 == 0
        assert labels.dtype == np.int32 and labels.shape == (len(token_ids),)
        for row, label in zip(token_ids, labels):
            n = lengths[label]
            assert list(row[:n]) == [label + 1] * n and not row[n:].any()  # the sample, then padding with 0
        longest = max(lengths[i] for i in labels)
        assert token_ids.shape[1] == -(-longest // 8) * 8
        seen += labels.tolist()
    assert sorted(seen) == list(range(len(lengths))) and len(gen) == 13
    # The batches are those of length_sorted_batches with the generator's seeded rng.
    expected = length_sorted_batches(lengths, 8, random=True, rng=np.random.default_rng(0))
    again = LengthSortedGenerator(_numbered_samples(lengths), batch_size=8, pad_to_multiple_of=8, seed=0)
    assert [labels.tolist() for _, labels in again.__iter__(random=True)] == expected
    # Not random: consecutive samples in data order.
    assert [labels.tolist() for _, labels in gen.__iter__(random=False)][:2] == [list(range(8)), list(range(8, 16))]


def test_length_sorted_generator_labels_one_field_padding_value_and_shapes_apart():
    # One id field: the batch is (token_ids, labels), not a 1-tuple; real labels are float32.
    gen = LengthSortedGenerator([([5] * n, n / 2) for n in (3, 1, 2)], batch_size=3, value=9)
    (token_ids, labels), = list(gen.__iter__())
    assert token_ids.tolist() == [[5, 5, 5], [5, 9, 9], [5, 5, 9]]
    assert labels.dtype == np.float32 and labels.tolist() == [1.5, 0.5, 1.0]
    # Tags, one per token: padded with 0 to the ids' padded length.
    gen = LengthSortedGenerator([([1, 2, 3], [4, 5, 6]), ([1], [7])], batch_size=2, pad_to_multiple_of=4)
    (token_ids, tags), = list(gen.__iter__())
    assert token_ids.shape == tags.shape == (2, 4) and tags.tolist() == [[4, 5, 6, 0], [7, 0, 0, 0]]
    # shapes_apart: the batch order first_two_apart gives on the padded lengths.
    lengths = [int(n) for n in np.random.default_rng(5).integers(1, 60, size=200)]
    gen = LengthSortedGenerator(_numbered_samples(lengths), 16, pad_to_multiple_of=16, shapes_apart=True, seed=1)
    padded = lambda batch: -(-max(lengths[i] for i in batch) // 16) * 16  # noqa: E731
    expected = first_two_apart(length_sorted_batches(lengths, 16, rng=np.random.default_rng(1)), padded)
    assert [labels.tolist() for _, labels in gen.__iter__(random=True)] == expected


@pytest.mark.parametrize('data, kwargs, error, match', [
    ('not a list', {}, TypeError, 'data must be a list'),
    ([([1, 2], 0), ([1], 0, 1)], {}, ValueError, 'sample 1 has 3 fields, sample 0 has 2'),
    ([([1, 2], 0), 3], {}, ValueError, 'sample 1 must be a tuple'),
    ([([1, 2], 0), (7, 1)], {}, TypeError, 'field 0 of sample 1 must be a sequence of ids'),
    ([([1, 2], [0, 1, 1])], {}, ValueError, 'sample 0 has 3 labels for 2 ids'),
    ([([1, 2], 0)], {'pad_to_multiple_of': 0}, ValueError, 'pad_to_multiple_of'),
    ([([1, 2], 0)], {'batch_size': 2.0}, TypeError, 'batch_size'),
])
def test_length_sorted_generator_bad_input_is_named(data, kwargs, error, match):
    with pytest.raises(error, match=match):
        LengthSortedGenerator(data, **kwargs)


def test_first_two_apart_moves_one_batch_only_when_needed():
    shapes = [16, 16, 16, 32, 48]
    assert first_two_apart(list(shapes), lambda s: s) == [16, 32, 16, 16, 48]
    for unchanged in ([16, 32, 16], [16, 16, 16, 16], [16, 16]):
        assert first_two_apart(list(unchanged), lambda s: s) == unchanged
    # Several lengths per batch: the second must differ from the first in every one of them.
    pairs = [(32, 8), (64, 8), (32, 16), (64, 16), (96, 24)]
    assert first_two_apart(list(pairs), lambda s: s) == [(32, 8), (64, 16), (32, 16), (64, 8), (96, 24)]
    # Through length_sorted_batches: batches of indices, padded to multiples of 16.
    lengths = [10] * 6 + [40] * 2
    batches = length_sorted_batches(lengths, 2, random=False, shapes_apart=lambda b: -(-max(lengths[i] for i in b) // 16) * 16)
    assert batches == [[0, 1], [6, 7], [4, 5], [2, 3]]


# ------------------------------------------------------------ bert4keras 0.11.5's other helpers


def test_uniout_and_is_py2_are_python3_no_ops():
    from bert4keras.snippets import is_py2, uniout

    assert uniout is None and is_py2 is False


def test_strQ2B_matches_nfkc_on_full_width_forms():
    from bert4keras.snippets import strQ2B

    full = '\u3000' + ''.join(chr(c) for c in range(0xFF01, 0xFF5F))
    assert strQ2B(full) == unicodedata.normalize('NFKC', full)  # NFKC maps them to ASCII
    assert strQ2B('中文，。ａｂ') == '中文,。ab'  # U+3002 (ideographic full stop) is not a full-width form


def test_convert_to_unicode_and_str():
    from bert4keras.snippets import convert_to_str, convert_to_unicode

    assert convert_to_unicode('你好'.encode('utf-8')) == '你好'
    assert convert_to_unicode(b'caf\xe9!') == 'caf!'  # errors='ignore' drops the bad byte
    assert convert_to_unicode('你好'.encode('gbk'), 'gbk') == '你好'
    assert convert_to_unicode('text') == 'text' and convert_to_unicode(3) == 3
    assert convert_to_str(b'abc') == 'abc' and convert_to_str('abc') == 'abc'


def test_string_matching_and_is_one_of():
    from bert4keras.snippets import is_one_of, string_matching

    assert string_matching('今天天气不错', ['下雨', '天气'])
    assert string_matching('price: 42', [r'\d+$'])
    assert not string_matching('abc', ['x', '^b'])
    a, b = np.zeros(3), np.zeros(3)
    with pytest.raises(ValueError):
        a in [b, a]  # == on arrays is ambiguous: what is_one_of avoids
    assert is_one_of(a, [b, a]) and not is_one_of(a, [b])


def test_lowercase_and_normalize_matches_bert_normalizer():
    from tokenizers.normalizers import BertNormalizer

    from bert4keras.snippets import lowercase_and_normalize

    reference = BertNormalizer(clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=True)
    texts = ['Café Ñandú ÅNGSTRÖM', 'Ελληνικά Τόνος', 'Tiếng Việt', '中文ＡＢＣ'] + [t for t, _ in _sst2(300)]
    for text in texts:
        assert lowercase_and_normalize(text) == reference.normalize_str(text), text


def test_insert_and_delete_arguments():
    from bert4keras.snippets import delete_arguments, insert_arguments

    class Base:
        def __init__(self, units=1, name=None):
            self.units, self.name = units, name

    class Child(Base):
        @insert_arguments(with_pool=False, pool_size=2)
        @delete_arguments('name')
        def __init__(self, **kwargs):
            """Child's init."""
            super().__init__(**kwargs)

    c = Child(units=3, with_pool=True)
    assert (c.units, c.with_pool, c.pool_size, c.name) == (3, True, 2, None)
    assert Child.__init__.__doc__ == "Child's init."
    with pytest.raises(TypeError, match="Child got an unexpected keyword argument 'name'"):
        Child(name='x')


def _random_strings(rng, n, alphabet, max_len):
    return [''.join(rng.choice(list(alphabet), size=rng.integers(0, max_len + 1))) for _ in range(n)]


def test_longest_common_substring_matches_difflib():
    import difflib

    from bert4keras.snippets import longest_common_substring

    assert longest_common_substring('我爱北京天安门', '北京欢迎你，天安门') == (3, (4, 7, 6, 9))
    assert longest_common_substring('abXcd', 'cdYab') == (2, (0, 2, 3, 5))  # a tie: first in source
    assert longest_common_substring('abc', 'xyz') == (0, (0, 0, 0, 0))
    rng = np.random.default_rng(0)
    for source, target in zip(_random_strings(rng, 300, 'abcd', 12), _random_strings(rng, 300, 'abcd', 12)):
        match = difflib.SequenceMatcher(None, source, target, autojunk=False).find_longest_match(
            0, len(source), 0, len(target))
        length, (i0, i1, j0, j1) = longest_common_substring(source, target)
        assert length == match.size, (source, target)
        if length:  # the same block: first in source, then first in target
            assert (i0, i1, j0, j1) == (match.a, match.a + length, match.b, match.b + length), (source, target)
            assert source[i0:i1] == target[j0:j1]


def _lcs_length_brute_force(source, target):
    import itertools

    subsequences = set()
    for r in range(len(source) + 1):
        subsequences.update(itertools.combinations(source, r))
    best = 0
    for sub in subsequences:
        it = iter(target)
        if all(ch in it for ch in sub):  # `in` on an iterator consumes it: a subsequence test
            best = max(best, len(sub))
    return best


def test_longest_common_subsequence_against_brute_force():
    from bert4keras.snippets import longest_common_subsequence

    assert longest_common_subsequence('abcbdab', 'bdcaba')[0] == 4  # CLRS's example
    assert longest_common_subsequence('', 'abc') == (0, [])
    rng = np.random.default_rng(1)
    for source, target in zip(_random_strings(rng, 200, 'abc', 8), _random_strings(rng, 200, 'abc', 8)):
        length, mapping = longest_common_subsequence(source, target)
        assert length == _lcs_length_brute_force(source, target) == len(mapping), (source, target)
        assert all(source[i] == target[j] for i, j in mapping)
        assert all(i1 < i2 and j1 < j2 for (i1, j1), (i2, j2) in zip(mapping, mapping[1:]))


def test_orthogonally_resize_closed_form():
    from bert4keras.snippets import orthogonally_resize

    a = np.arange(4.0)
    out = orthogonally_resize(a, (6,))
    expected = np.array([0, 1, 0, 1, 2, 3.0])  # blocks of window 2, each repeated, cut to 6
    np.testing.assert_allclose(out, expected * np.linalg.norm(a) / np.linalg.norm(expected))
    expected = np.array([0, 0, 1, 1, 2, 2.0])
    np.testing.assert_allclose(orthogonally_resize(a, (6,), window=1), expected * 14**0.5 / 10**0.5)
    w = np.random.default_rng(0).normal(size=(4, 6))
    grown = orthogonally_resize(w, (8, 9))
    assert grown.shape == (8, 9)
    np.testing.assert_allclose(np.linalg.norm(grown), np.linalg.norm(w))
    shrunk = orthogonally_resize(w, (2, 6))
    np.testing.assert_allclose(shrunk, w[:2] * np.linalg.norm(w) / np.linalg.norm(w[:2]))
    with pytest.raises(ValueError, match='new_shape'):
        orthogonally_resize(w, (8,))
    with pytest.raises(ValueError, match='axis 0 grows from 3 to 5 but 3 is not a multiple of window=2'):
        orthogonally_resize(np.ones((3, 2)), (5, 2))


# ----------------------------------------------------------------------------------- open


def test_open_shadows_the_builtin_and_reads_writes_like_it(tmp_path):
    import builtins
    import json

    from bert4keras.snippets import open

    assert open is not builtins.open
    path = str(tmp_path / 'a.json')
    json.dump({'文本': [1, 2]}, open(path, 'w', encoding='utf-8'), ensure_ascii=False)
    assert json.load(open(path, encoding='utf-8')) == {'文本': [1, 2]}
    assert json.load(open(path)) == {'文本': [1, 2]}  # locale encoding, as the builtin
    with open(path, 'a', encoding='utf-8') as f:
        f.write('\nline 2\n')
        assert not f.closed
    assert f.closed
    with builtins.open(path, encoding='utf-8') as f:
        expected = f.readlines()
    with open(path, encoding='utf-8') as f:
        assert list(f) == expected
    with open(path, encoding='utf-8') as f:
        assert f.readline() == expected[0] and next(f) == expected[1] and f.read() == ''.join(expected[2:])
    with open(path, 'rb') as f:
        assert f.read() == builtins.open(path, 'rb').read()


def test_open_gbk(tmp_path):
    import builtins

    from bert4keras.snippets import open

    text = '体育\t中国队获胜\n财经\t股市上涨\n'
    path = str(tmp_path / 'gbk.txt')
    with open(path, 'w', encoding='gbk') as f:
        f.write(text)
    assert builtins.open(path, 'rb').read() == text.encode('gbk')
    assert open(path, encoding='gbk').read() == text
    with pytest.raises(UnicodeDecodeError):
        open(path, encoding='utf-8').read()


def _lines_file(tmp_path, name, text, encoding='utf-8'):
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return str(path)


LINES_TEXT = '第一行 first\n二 second\r\n\n\tfourth 第四\nno newline at the end 末'


def _copies(n):
    return '\n'.join([LINES_TEXT] * n)  # 5 lines a copy, the last without a newline


@pytest.mark.parametrize('encoding', ['utf-8', 'gbk', 'utf-16'])
def test_open_indexable_random_access_equals_builtin_lines(tmp_path, encoding):
    import builtins

    from bert4keras.snippets import open

    path = _lines_file(tmp_path, 'lines.txt', _copies(3), encoding)
    with builtins.open(path, encoding=encoding) as f:
        expected = f.readlines()
    f = open(path, encoding=encoding, indexable=True)
    assert len(f) == len(expected) == 15
    for i in [7, 0, 14, 3, -1, 2, 9]:
        assert f[i] == expected[i], i
    assert list(f) == expected and list(f) == expected  # each iteration starts over
    with pytest.raises(IndexError):
        f[15]


def test_open_indexable_offsets_are_tell_positions(tmp_path):
    # bert4keras 0.11.5 recorded tell() at each line start: a cache it wrote is valid here.
    import builtins

    from bert4keras.snippets import open

    path = _lines_file(tmp_path, 'lines.txt', LINES_TEXT)
    expected, f = [], builtins.open(path, encoding='utf-8')
    while True:
        offset = f.tell()
        if not f.readline():
            break
        expected.append(offset)
    f.close()
    assert open(path, encoding='utf-8', indexable=True).offsets == expected
    raw = open(path, 'rb', indexable=True)
    assert raw.offsets == expected and raw[1] == '二 second\r\n'.encode('utf-8')


def test_open_indexable_lone_carriage_returns(tmp_path):
    import builtins

    from bert4keras.snippets import open

    path = _lines_file(tmp_path, 'cr.txt', 'a\rb\r\nc\nd\r')
    expected = builtins.open(path, encoding='utf-8').readlines()
    assert expected == ['a\n', 'b\n', 'c\n', 'd\n']
    f = open(path, encoding='utf-8', indexable=True)
    assert [f[i] for i in range(len(f))] == expected


def test_open_indexable_cache_is_written_atomically_and_reused(tmp_path, monkeypatch):
    import json

    from bert4keras import snippets
    from bert4keras.snippets import open

    path = _lines_file(tmp_path, 'lines.txt', _copies(2))
    cache = tmp_path / 'cache' / 'lines.index.json'
    cache.parent.mkdir()

    # A write that dies half-way leaves neither a cache nor a temporary file.
    real_dump = json.dump

    def failing_dump(obj, fp, **kwargs):
        fp.write('[0, 1')
        raise OSError('disk full')

    monkeypatch.setattr(snippets.json, 'dump', failing_dump)
    with pytest.raises(OSError, match='disk full'):
        open(path, encoding='utf-8', indexable=str(cache))
    assert os.listdir(cache.parent) == []
    monkeypatch.setattr(snippets.json, 'dump', real_dump)

    first = open(path, encoding='utf-8', indexable=str(cache))
    assert os.listdir(cache.parent) == ['lines.index.json']
    assert json.loads(cache.read_text()) == first.offsets == open(path, encoding='utf-8', indexable=True).offsets

    def no_indexing(self):
        raise AssertionError('the cache was not reused')

    monkeypatch.setattr(snippets.open, 'create_indexes', no_indexing)
    second = open(path, encoding='utf-8', indexable=cache)  # a PathLike works too
    assert second.offsets == first.offsets and second[8] == first[8] == '\tfourth 第四\n'


def test_open_indexable_bad_cache_and_arguments(tmp_path):
    from bert4keras.snippets import open

    path = _lines_file(tmp_path, 'lines.txt', LINES_TEXT)
    cache = tmp_path / 'bad.json'
    cache.write_text('[0, 5, 100000]')
    with pytest.raises(ValueError, match=r"index cache '.*bad\.json' does not hold increasing line offsets"):
        open(path, encoding='utf-8', indexable=str(cache))
    cache.write_text('{not json')
    with pytest.raises(ValueError, match=r"index cache '.*bad\.json' is not valid JSON"):
        open(path, encoding='utf-8', indexable=str(cache))
    with pytest.raises(ValueError, match="indexable needs a file opened for reading, got mode 'a'"):
        open(path, 'a', encoding='utf-8', indexable=True)
    with pytest.raises(TypeError, match='indexable must be True, False or a cache path, got int'):
        open(path, indexable=3)
    with pytest.raises(TypeError, match='not indexable'):
        len(open(path, encoding='utf-8'))
    with pytest.raises(FileNotFoundError):
        open(str(tmp_path / 'missing.txt'))


# ------------------------------------------------------------------------------- WebServing


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _get(port, path, params=None):
    import json
    import urllib.parse
    import urllib.request

    url = 'http://127.0.0.1:%d%s' % (port, path)
    if params is not None:
        url += '?' + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200 and r.headers['Content-Type'] == 'application/json; charset=utf-8'
        return json.loads(r.read().decode('utf-8'))


def _post(port, path, body, content_type):
    import json
    import urllib.request

    request = urllib.request.Request('http://127.0.0.1:%d%s' % (port, path), data=body,
                                     headers={'Content-Type': content_type})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert r.status == 200
        return json.loads(r.read().decode('utf-8'))


def _repeat(text, n=2, sep=''):
    if text == 'boom':
        raise RuntimeError('the model exploded')
    return sep.join([text] * n)


@pytest.fixture
def web():
    from bert4keras.snippets import WebServing

    server = WebServing(host='127.0.0.1', port=0)
    server.route('/repeat', _repeat, {'text': (None, True), 'n': (int, False), 'sep': (None, False)})
    server.route('/repeat_post', _repeat, {'text': (None, True), 'n': (int, False)}, method='POST')
    server.start(background=True)
    yield server
    server.stop()


def test_web_serving_get_envelope_and_converters(web):
    assert web.port != 0
    assert _get(web.port, '/repeat', {'text': '苹果多少钱一斤', 'n': '3', 'sep': '|'}) == {
        'code': 0, 'desc': 'succeeded', 'data': '苹果多少钱一斤|苹果多少钱一斤|苹果多少钱一斤'}
    assert _get(web.port, '/repeat', {'text': 'ab'})['data'] == 'abab'  # optional ones left to defaults


def test_web_serving_post_form_and_json(web):
    import json
    import urllib.parse

    form = urllib.parse.urlencode({'text': '你好', 'n': '3'}).encode()
    assert _post(web.port, '/repeat_post', form, 'application/x-www-form-urlencoded')['data'] == '你好你好你好'
    body = json.dumps({'text': '你好', 'n': 2}, ensure_ascii=False).encode('utf-8')
    assert _post(web.port, '/repeat_post', body, 'application/json')['data'] == '你好你好'
    bad = _post(web.port, '/repeat_post', b'{"text": ', 'application/json')
    assert bad['code'] == 1 and bad['desc'].startswith('the request body is not valid JSON')
    bad = _post(web.port, '/repeat_post', b'["text"]', 'application/json')
    assert bad == {'code': 1, 'desc': 'the JSON body must be an object {name: value}, got list', 'data': {}}


def test_web_serving_errors(web):
    assert _get(web.port, '/repeat', {'n': '2'}) == {'code': 1, 'desc': 'lack of "text" argument', 'data': {}}
    bad = _get(web.port, '/repeat', {'text': 'a', 'n': 'x'})
    assert bad['code'] == 1 and bad['data'] == {}
    assert bad['desc'] == 'bad "n" argument \'x\': ValueError: invalid literal for int() with base 10: \'x\''
    assert _get(web.port, '/repeat', {'text': 'boom'}) == {'code': 2, 'desc': 'the model exploded', 'data': {}}
    import urllib.error

    with pytest.raises(urllib.error.HTTPError) as error:  # a GET-only route
        _post(web.port, '/repeat', b'text=a', 'application/x-www-form-urlencoded')
    assert error.value.code == 405


def test_web_serving_concurrent_requests_are_answered_and_serialized():
    import threading
    import time

    from bert4keras.snippets import WebServing

    state = {'active': 0, 'max_active': 0}
    guard = threading.Lock()

    def square(x):
        with guard:
            state['active'] += 1
            state['max_active'] = max(state['max_active'], state['active'])
        time.sleep(0.002)
        with guard:
            state['active'] -= 1
        return {'x': x, 'square': np.int64(x) ** 2, 'array': np.arange(3) * x}

    web = WebServing(host='127.0.0.1', port=0)
    web.route('/square', square, {'x': (int, True)})
    web.start(background=True)
    results, errors = {}, []

    def client(k):
        try:
            for i in range(25):
                x = 100 * k + i
                results[x] = _get(web.port, '/square', {'x': x})
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        web.stop()
    assert errors == []
    assert len(results) == 200
    for x, reply in results.items():
        assert reply == {'code': 0, 'desc': 'succeeded', 'data': {'x': x, 'square': x * x, 'array': [0, x, 2 * x]}}
    assert state['max_active'] == 1  # serialize=True: one call at a time


def test_web_serving_without_serialize_runs_calls_in_parallel():
    import threading
    import time

    from bert4keras.snippets import WebServing

    state = {'active': 0, 'max_active': 0}
    guard = threading.Lock()

    def slow(x):
        with guard:
            state['active'] += 1
            state['max_active'] = max(state['max_active'], state['active'])
        time.sleep(0.2)
        with guard:
            state['active'] -= 1
        return x

    web = WebServing(host='127.0.0.1', port=0, serialize=False)
    web.route('/slow', slow, {'x': (int, True)})
    web.start(background=True)
    try:
        threads = [threading.Thread(target=_get, args=(web.port, '/slow', {'x': k})) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        web.stop()
    assert state['max_active'] > 1


def test_web_serving_keras_model_from_server_threads():
    import threading

    from bert4keras.snippets import WebServing

    model = keras.Sequential([keras.Input(shape=(4,)), keras.layers.Dense(3)])
    inputs = np.random.default_rng(0).normal(size=(16, 4)).astype('float32')
    expected = model.predict_on_batch(inputs)

    def predict(i):
        return model.predict_on_batch(inputs[i:i + 1])[0]

    web = WebServing(host='127.0.0.1', port=0)
    web.route('/predict', predict, {'i': (int, True)})
    web.start(background=True)
    replies = {}

    def client(k):
        for i in range(k, 16, 4):
            replies[i] = _get(web.port, '/predict', {'i': i})

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        web.stop()
    assert sorted(replies) == list(range(16))
    for i, reply in replies.items():
        assert reply['code'] == 0, reply
        np.testing.assert_allclose(reply['data'], expected[i], rtol=1e-5, atol=1e-6)


def test_web_serving_start_stop_restart_and_blocking_start_in_a_thread():
    import threading
    import urllib.error

    from bert4keras.snippets import WebServing

    web = WebServing(host='127.0.0.1', port=_free_port())
    web.route('/echo', lambda text: text, {'text': (None, True)})
    web.start(background=True)
    assert _get(web.port, '/echo', {'text': 'one'})['data'] == 'one'
    with pytest.raises(RuntimeError, match='already serving'):
        web.start(background=True)
    web.stop()
    with pytest.raises(urllib.error.URLError):
        _get(web.port, '/echo', {'text': 'gone'})
    web.stop()  # stopping a stopped server does nothing

    thread = threading.Thread(target=web.start)  # blocking, as bert4keras's start()
    thread.start()
    import time

    deadline = time.monotonic() + 30
    while True:
        try:
            assert _get(web.port, '/echo', {'text': 'two'})['data'] == 'two'
            break
        except urllib.error.URLError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    web.stop()
    thread.join(30)
    assert not thread.is_alive()


def test_web_serving_port_in_use():
    from bert4keras.snippets import WebServing

    first = WebServing(host='127.0.0.1', port=0)
    first.start(background=True)
    try:
        with pytest.raises(OSError, match=r'WebServing cannot listen on 127\.0\.0\.1:%d' % first.port):
            WebServing(host='127.0.0.1', port=first.port).start(background=True)
    finally:
        first.stop()


def test_web_serving_other_bottle_server():
    from bert4keras.snippets import WebServing

    web = WebServing(host='127.0.0.1', port=0, server='wsgiref')
    web.route('/echo', lambda text, n=1: text * n, {'text': (None, True), 'n': (int, False)})
    web.start(background=True)
    assert web.port != 0
    try:
        assert _get(web.port, '/echo', {'text': 'ab', 'n': 2}) == {'code': 0, 'desc': 'succeeded', 'data': 'abab'}
    finally:
        web.stop()


def test_snippets_imports_without_keras_or_bottle():
    import subprocess
    import sys

    code = ('import sys, bert4keras.snippets as s; s.open, s.WebServing; '
            'print(sorted(m for m in ("keras", "tensorflow", "bottle", "waitress") if m in sys.modules))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]'


def test_web_serving_bad_routes_and_settings():
    from bert4keras.snippets import WebServing

    web = WebServing(port=0)

    def gen(text, n=1):
        return text

    with pytest.raises(ValueError, match=r"arguments names 'k' but gen\(\) takes no such keyword argument"):
        web.route('/gen', gen, {'text': (None, True), 'k': (int, False)})
    with pytest.raises(ValueError, match=r"argument 'text' is optional in arguments but gen\(\) has no default"):
        web.route('/gen', gen, {'text': (None, False)})
    with pytest.raises(ValueError, match=r"gen\(\) needs argument 'text', which arguments does not declare"):
        web.route('/gen', gen, {'n': (int, False)})
    with pytest.raises(TypeError, match=r"arguments\['text'\] must be \(converter or None, required\)"):
        web.route('/gen', gen, {'text': 'str'})
    with pytest.raises(ValueError, match="method must be 'GET', 'POST'"):
        web.route('/gen', gen, {'text': (None, True)}, method='PUT')
    with pytest.raises(ValueError, match="unknown server 'no-such-server'"):
        WebServing(server='no-such-server')
    with pytest.raises(ValueError, match='port must be an int in'):
        WebServing(port=70000)
