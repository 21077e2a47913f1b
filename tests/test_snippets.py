"""bert4keras.snippets: closed-form checks, and DataGenerator feeding model.fit on the active backend."""

import os

import keras
import numpy as np
import pytest

from bert4keras.snippets import (
    DataGenerator,
    is_string,
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
    with pytest.raises(ValueError, match='no batch in a whole pass'):
        next(stream)


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
