"""Training-script utilities: padding, truncation, text splitting, and `DataGenerator`.

NumPy only at import time. `DataGenerator.to_dataset` imports TensorFlow and
`DataGenerator.to_pydataset` imports Keras, each when called.
"""

import functools
import threading

import numpy as np


def to_array(*args):
    """`np.array` of each argument; one array for one argument, else a list of arrays."""
    results = [np.array(a) for a in args]
    if len(args) == 1:
        return results[0]
    return results


def is_string(s):
    """True when `s` is a str."""
    return isinstance(s, str)


def sequence_padding(inputs, length=None, value=0, seq_dims=1, mode='post'):
    """Pad (or cut) a batch of sequences to one length and stack them.

    Args:
        inputs: list of array-likes; sample `i` has shape (len_i, ...) (with `seq_dims=2`,
            (len_i, len2_i, ...)); all other dimensions must agree.
        length: None (the longest in `inputs`, per padded dimension), an int (used for
            every padded dimension), or a list with one int per padded dimension. Longer
            sequences are cut to it, keeping their start.
        value: the padding value.
        seq_dims: int, how many leading dimensions to pad.
        mode: 'post' pads at the end, 'pre' at the start.
    Returns:
        np.ndarray of shape (batch_size, *length, ...), dtype as NumPy infers from `inputs`
        (int64 for lists of Python ints; pass arrays to choose another).
    Raises:
        ValueError: `mode` is not 'post'/'pre', or `inputs` is empty.
    Source: bert4keras 0.11.5 `sequence_padding`.
    """
    if mode not in ('post', 'pre'):
        raise ValueError('mode must be "post" or "pre", got %r' % (mode,))
    if len(inputs) == 0:
        raise ValueError('inputs is empty')
    if length is None:
        length = np.max([np.shape(x)[:seq_dims] for x in inputs], axis=0)
    elif not hasattr(length, '__getitem__'):
        length = [length] * seq_dims

    slices = tuple(np.s_[: length[i]] for i in range(seq_dims))
    outputs = []
    for x in inputs:
        x = np.asarray(x)[slices]
        pad_width = [(0, 0) for _ in np.shape(x)]
        for i in range(seq_dims):
            missing = length[i] - np.shape(x)[i]
            pad_width[i] = (0, missing) if mode == 'post' else (missing, 0)
        outputs.append(np.pad(x, pad_width, 'constant', constant_values=value))
    return np.array(outputs)


def truncate_sequences(maxlen, indices, *sequences):
    """Pop items until the sequences' total length is at most `maxlen`, longest first.

    Each step pops from the currently longest sequence (the first of equals) at its index
    in `indices`, e.g. -1 for the end, or -2 to keep a trailing `[SEP]`.

    Args:
        maxlen: int. indices: int, or a list with one int per non-empty sequence.
        sequences: lists, modified in place; None or empty ones are skipped.
    Returns:
        list of the non-empty sequences (the same list objects).
    Source: bert4keras 0.11.5 `truncate_sequences`.
    """
    sequences = [s for s in sequences if s]
    if not isinstance(indices, (list, tuple)):
        indices = [indices] * len(sequences)
    while True:
        lengths = [len(s) for s in sequences]
        if sum(lengths) > maxlen:
            i = int(np.argmax(lengths))
            sequences[i].pop(indices[i])
        else:
            return sequences


def text_segmentate(text, maxlen, seps='\n', strips=None):
    """Split `text` at separators into pieces of at most `maxlen` characters where possible.

    `seps[0]` is tried first; a piece still longer than `maxlen` is split again at
    `seps[1]`, and so on. Neighbouring pieces are merged while they fit. Separators stay
    at the end of their piece; `strips` characters are stripped from each piece's ends.
    A piece with no separator left may stay longer than `maxlen`.

    Args:
        text: str. maxlen: int. seps: str of separator characters, by priority.
        strips: None or str, characters to strip (None strips nothing but whitespace).
    Returns:
        list of str.
    Source: bert4keras 0.11.5 `text_segmentate`.
    """
    text = text.strip().strip(strips)
    if seps and len(text) > maxlen:
        pieces = text.split(seps[0])
        text, texts = '', []
        for i, p in enumerate(pieces):
            if text and p and len(text) + len(p) > maxlen - 1:
                texts.extend(text_segmentate(text, maxlen, seps[1:], strips))
                text = ''
            if i + 1 == len(pieces):
                text = text + p
            else:
                text = text + p + seps[0]
        if text:
            texts.extend(text_segmentate(text, maxlen, seps[1:], strips))
        return texts
    return [text]


class DataGenerator:
    """Template for batch generators: subclass it and write `__iter__`.

    `__iter__(random)` yields batches, typically `(inputs, labels)` where `inputs` is an
    array or a list of arrays of shape (batch_size, seq_len) (e.g. token ids and segment
    ids as int arrays from `sequence_padding`) and `labels` an array (batch_size, ...).
    It usually loops over `self.sample(random)` and yields when `len(batch) ==
    self.batch_size or is_end`, so an epoch has `len(self)` batches:

        class data_generator(DataGenerator):
            def __iter__(self, random=False):
                batch_token_ids, batch_segment_ids, batch_labels = [], [], []
                for is_end, (text, label) in self.sample(random):
                    token_ids, segment_ids = tokenizer.encode(text, maxlen=maxlen)
                    ...
                    if len(batch_token_ids) == self.batch_size or is_end:
                        yield [sequence_padding(batch_token_ids), ...], np.array(batch_labels)
                        batch_token_ids, batch_segment_ids, batch_labels = [], [], []

        model.fit(train_generator.forfit(), steps_per_epoch=len(train_generator), epochs=3)
        model.fit(train_generator.to_pydataset(), epochs=3)   # same, as a keras PyDataset

    Args:
        data: a list (or anything with `__len__` and `__getitem__`) of samples, or any
            iterable (then `len(self)` is unknown and shuffling uses a buffer).
        batch_size: int.
        buffer_size: int, shuffle buffer for data without `__len__`
            (default `batch_size * 1000`).
    Source: bert4keras 0.11.5 `DataGenerator`.
    """

    def __init__(self, data, batch_size=32, buffer_size=None):
        self.data = data
        self.batch_size = batch_size
        if hasattr(self.data, '__len__'):
            self.steps = len(self.data) // self.batch_size
            if len(self.data) % self.batch_size != 0:
                self.steps += 1
        else:
            self.steps = None
        self.buffer_size = buffer_size or batch_size * 1000

    def __len__(self):
        """Batches per epoch, ceil(len(data) / batch_size). TypeError when data has no length."""
        return self.steps

    def sample(self, random=False):
        """Yield `(is_end, sample)` over one pass of the data; `is_end` is True for the last.

        With `random=True` the order is a random permutation (data with a length) or a
        shuffle buffer of `buffer_size` samples (plain iterables). Uses `np.random`.
        """
        if random:
            if self.steps is None:

                def generator():
                    caches, isfull = [], False
                    for d in self.data:
                        caches.append(d)
                        if isfull:
                            i = np.random.randint(len(caches))
                            yield caches.pop(i)
                        elif len(caches) == self.buffer_size:
                            isfull = True
                    while caches:
                        i = np.random.randint(len(caches))
                        yield caches.pop(i)

            else:

                def generator():
                    for i in np.random.permutation(len(self.data)):
                        yield self.data[i]

            data = generator()
        else:
            data = iter(self.data)

        try:
            d_current = next(data)
        except StopIteration:
            return
        for d_next in data:
            yield False, d_current
            d_current = d_next
        yield True, d_current

    def __iter__(self, random=False):
        """Yield the batches of one epoch; write it in a subclass."""
        raise NotImplementedError

    def forfit(self, random=True):
        """Endless stream of batches (epoch after epoch) for `model.fit(..., steps_per_epoch=len(gen))`.

        Raises:
            ValueError: a whole pass of `__iter__` yielded nothing (empty data, or a one-shot
            iterator already used up: pass a list or an object whose `__iter__` restarts).
        """
        while True:
            empty = True
            for d in self.__iter__(random):
                empty = False
                yield d
            if empty:
                raise ValueError(
                    '%s yielded no batch in a whole pass: the data is empty or an iterator '
                    'that was already consumed (use a list or a re-iterable object)' % type(self).__name__
                )

    def fortest(self, random=False):
        """Endless stream of the inputs of each batch (`d[0]`), for `model.predict(..., steps=len(gen))`."""
        for d in self.forfit(random):
            yield d[0]

    def to_dataset(self, types, shapes, names=None, padded_batch=False):
        """A `tf.data.Dataset` of batches built from `forfit()`.

        Here `__iter__` must yield single samples (not batches): the dataset batches them
        by `batch_size`, padding each batch to its longest sample when `padded_batch`.

        Args:
            types: a dtype (e.g. 'int32') or a nested tuple of them, one per sample field.
            shapes: the matching per-sample shapes, e.g. `([None], [None])`; None marks a
                variable dimension (allowed only with `padded_batch=True`).
            names: None, a str, a tuple of str (one per field) or a tuple of tuples of str
                (for `(inputs, labels)` samples): wraps fields into dicts keyed by these
                names, e.g. the model's input layer names `('Input-Token', 'Input-Segment')`.
            padded_batch: bool, pad each batch (with 0) instead of stacking.
        Returns:
            tf.data.Dataset, infinite, whose elements have shapes (batch_size, *shape) and
            dtypes `types`. Works with `model.fit` on every Keras backend.
        Source: bert4keras 0.11.5 `DataGenerator.to_dataset`.
        """
        import tensorflow as tf

        if names is None:
            generator = self.forfit
        else:
            if is_string(names):
                warps = lambda k, v: {k: v}
            elif is_string(names[0]):
                warps = lambda k, v: dict(zip(k, v))
            else:
                warps = lambda k, v: tuple(dict(zip(i, j)) for i, j in zip(k, v))

            def generator():
                for d in self.forfit():
                    yield warps(names, d)

            types = warps(names, types)
            shapes = warps(names, shapes)

        def spec(dtype, shape):  # walk the structure of types: shapes are lists themselves
            if isinstance(dtype, dict):
                return {k: spec(dtype[k], shape[k]) for k in dtype}
            if isinstance(dtype, (tuple, list)):
                return tuple(spec(d, s) for d, s in zip(dtype, shape))
            return tf.TensorSpec(shape=shape, dtype=dtype)

        signature = spec(types, shapes)
        dataset = tf.data.Dataset.from_generator(generator, output_signature=signature)
        if padded_batch:
            return dataset.padded_batch(self.batch_size, shapes)
        return dataset.batch(self.batch_size)

    def to_pydataset(self, random=True, workers=1, max_queue_size=10):
        """A `keras.utils.PyDataset` serving the batches of `forfit(random)`.

        Lets `model.fit(gen.to_pydataset(), epochs=n)` run on the TensorFlow, JAX and
        PyTorch backends without `steps_per_epoch`: item `i` is the next batch of the
        stream and an epoch is `len(self)` batches (`None`, i.e. endless, when the data has
        no length; then pass `steps_per_epoch`). `__iter__` yields whole batches, as for
        `forfit`. Batches come out in stream order whatever index Keras asks for, so
        shuffling is `__iter__`'s job (via `sample(random)`).

        Args:
            random: bool, passed to `__iter__`.
            workers: int, threads filling the queue; they take batches from the one
                stream in turn, so this overlaps data preparation with training rather
                than parallelising it. (Multiprocessing is not offered: each process
                would replay the same stream.)
            max_queue_size: int, batches prepared ahead.
        Returns:
            keras.utils.PyDataset.
        """
        return _batch_stream_class()(self, random, workers=workers, max_queue_size=max_queue_size)


@functools.lru_cache(maxsize=None)
def _batch_stream_class():
    """The PyDataset subclass behind `DataGenerator.to_pydataset`, built once Keras is imported."""
    import keras

    class DataGeneratorPyDataset(keras.utils.PyDataset):
        """Item `i` is the next batch of `generator.forfit(random)`."""

        def __init__(self, generator, random=True, **kwargs):
            super().__init__(**kwargs)
            self.generator = generator
            self.stream = generator.forfit(random)
            self.lock = threading.Lock()  # a Python generator can't be advanced by two threads

        @property
        def num_batches(self):
            return self.generator.steps

        def __len__(self):
            return len(self.generator)

        def __getitem__(self, index):
            with self.lock:
                return next(self.stream)

    return DataGeneratorPyDataset
