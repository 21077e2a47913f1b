"""Training-script utilities: padding, truncation, text splitting, `DataGenerator`, multiprocess
map (`parallel_apply`), a resumable `BackupAndRestore` callback, and the rest of bert4keras
0.11.5's snippets: its file class `open` (line-indexed random access), string helpers,
`insert_arguments`/`delete_arguments`, longest common substring/subsequence; `WebServing` lives in
`bert4keras.serving` and is re-exported here.

NumPy only at import time. `DataGenerator.to_dataset` imports TensorFlow,
`DataGenerator.to_pydataset` imports Keras and `WebServing` imports bottle (and waitress),
each when used.

The module-level name `open` is bert4keras's file class, so that `from bert4keras.snippets
import open` works as in 0.11.5; it shadows the builtin here too: code in this module that
needs the builtin calls `builtins.open`.
"""

import builtins
import codecs
import contextlib
import functools
import itertools
import json
import os
import re
import sys
import tempfile
import threading
import unicodedata

import numpy as np

from bert4keras._checks import _check_int
# 0.11.5 import path; the decoder lives with its predictors and KV cache in bert4keras.generation
from bert4keras.generation import AutoRegressiveDecoder, softmax  # noqa: F401


def to_array(*args):
    """`np.array` of each argument; one array for one argument, else a list of arrays."""
    results = [np.array(a) for a in args]
    if len(args) == 1:
        return results[0]
    return results


def is_string(s):
    """True when `s` is a str."""
    return isinstance(s, str)


def sequence_padding(inputs, length=None, value=0, seq_dims=1, mode='post', pad_to_multiple_of=None):
    """Pad (or cut) a batch of sequences to one length and stack them.

    Args:
        inputs: list of array-likes; sample `i` has shape (len_i, ...) (with `seq_dims=2`,
            (len_i, len2_i, ...)); all other dimensions must agree. Within a sample, nested
            lists may be ragged in the padded dimensions: with `seq_dims=2`, `[[1, 2], [3]]`
            is padded like the (2, 2) array `[[1, 2], [3, 0]]`.
        length: None (the longest in `inputs`, per padded dimension), an int (used for
            every padded dimension), or a list with one int per padded dimension. Longer
            sequences are cut to it, keeping their start.
        value: the padding value.
        seq_dims: int >= 1, how many leading dimensions to pad.
        mode: 'post' pads at the end, 'pre' at the start (of every padded dimension).
        pad_to_multiple_of: None, or an int >= 1: each padded length (the longest, or
            `length`) is rounded up to a multiple of it, so that a compiled model (XLA, JAX)
            meets a handful of shapes instead of one per length.
    Returns:
        np.ndarray of shape (batch_size, *length, ...), dtype as NumPy infers from `inputs`
        (int64 for lists of Python ints; pass arrays to choose another).
    Raises:
        ValueError: `mode` is not 'post'/'pre'; `inputs` is empty (an empty batch); a sample
            has fewer than `seq_dims` dimensions, or trailing dimensions unlike the first
            sample's, or is ragged below its first `seq_dims` dimensions (the message names
            the sample, or the nested element, and both shapes); `seq_dims` or
            `pad_to_multiple_of` < 1; `length` is negative or has the wrong number of entries.
        TypeError: `inputs` is not a list-like of sequences (e.g. None or a str); `seq_dims`,
            an entry of `length` or `pad_to_multiple_of` is not an int.
    Source: bert4keras 0.11.5 `sequence_padding`; `pad_to_multiple_of` as in Hugging Face
    transformers' tokenizer `pad`.
    """
    where = 'sequence_padding'
    seq_dims = _check_int(where, 'seq_dims', seq_dims, 1)
    multiple = _check_int(where, 'pad_to_multiple_of', pad_to_multiple_of, 1, allow_none=True)
    if mode not in ('post', 'pre'):
        raise ValueError('mode must be "post" or "pre", got %r' % (mode,))
    if inputs is None or is_string(inputs) or not hasattr(inputs, '__len__'):
        raise TypeError('inputs must be a list of sequences, got %s' % type(inputs).__name__)
    if len(inputs) == 0:
        raise ValueError('inputs is empty: sequence_padding needs at least one sequence (an empty batch?)')
    arrays = [_regular_array(x) for x in inputs]  # None for a sample with ragged nested lists
    shapes, dtypes = [], []
    for i, (x, a) in enumerate(zip(inputs, arrays)):
        lengths, trailing, leaf_dtypes = _nested_shape(x, seq_dims, 'inputs[%d]' % i, seq_dims, array=a)
        shapes.append(lengths + trailing)
        dtypes.extend(leaf_dtypes)
        if trailing != shapes[0][seq_dims:]:
            raise ValueError(
                'inputs[%d] has shape %s, inputs[0] has %s: all dimensions after the first '
                'seq_dims=%d must agree' % (i, shapes[i], shapes[0], seq_dims)
            )
    if length is None:
        length = [int(n) for n in np.max([shape[:seq_dims] for shape in shapes], axis=0)]
    elif not hasattr(length, '__getitem__'):
        length = [length] * seq_dims
    if len(length) != seq_dims or any(
        not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0 for n in length
    ):
        error = ValueError if all(isinstance(n, (int, np.integer)) for n in length) else TypeError
        raise error('length must be a non-negative int or %d of them, got %r' % (seq_dims, length))
    length = [int(n) for n in length]
    if multiple is not None:
        length = [-(-n // multiple) * multiple for n in length]

    if all(a is not None for a in arrays):
        slices = tuple(np.s_[: length[i]] for i in range(seq_dims))
        outputs = []
        for x in arrays:
            x = x[slices]
            pad_width = [(0, 0) for _ in np.shape(x)]
            for i in range(seq_dims):
                missing = length[i] - np.shape(x)[i]
                pad_width[i] = (0, missing) if mode == 'post' else (missing, 0)
            outputs.append(np.pad(x, pad_width, 'constant', constant_values=value))
        return np.array(outputs)
    # Some sample is ragged: fill a padded array directly, nested list by nested list.
    dtype = np.result_type(*dtypes) if dtypes else np.float64
    outputs = np.full((len(inputs), *length, *shapes[0][seq_dims:]), value, dtype=dtype)
    for out, x, a in zip(outputs, inputs, arrays):
        _fill_padded(out, x if a is None else a, length, mode)
    return outputs


def _regular_array(x):
    """`x` as an ndarray, or None when its nested lists are ragged (NumPy cannot stack them)."""
    if isinstance(x, np.ndarray) and x.dtype != object:
        return x
    try:
        a = np.asarray(x)
    except ValueError:  # NumPy >= 1.24: "... has an inhomogeneous shape after 1 dimensions"
        return None
    if a.dtype == object and any(isinstance(e, (list, tuple, np.ndarray)) for e in a.flat):
        return None
    return a


def _nested_shape(x, seq_dims, where, total_dims, array=None):
    """(lengths of `x`'s first `seq_dims` dimensions, the longest over its ragged nested lists;
    the shape of the other dimensions; the dtypes of its non-empty parts), checking that only
    the first `seq_dims` dimensions are ragged. `array`: `_regular_array(x)` if known."""
    a = array if array is not None else _regular_array(x)
    if a is not None:
        if a.ndim < seq_dims:
            if seq_dims == total_dims:
                raise ValueError(
                    '%s has shape %s: fewer than seq_dims=%d dimensions to pad' % (where, a.shape, total_dims)
                )
            raise ValueError(
                '%s has shape %s: fewer than the %d dimension(s) left to pad at that depth (seq_dims=%d)'
                % (where, a.shape, seq_dims, total_dims)
            )
        # the dtype NumPy guesses for an empty Python list (float64) should not decide the batch's
        keep = a.size > 0 or isinstance(x, np.ndarray)
        return a.shape[:seq_dims], a.shape[seq_dims:], [a.dtype] if keep else []
    parts = [_nested_shape(p, max(seq_dims - 1, 0), '%s[%d]' % (where, j), total_dims) for j, p in enumerate(x)]
    inner = max(seq_dims - 1, 0)
    for j, (lengths, trailing, _) in enumerate(parts):
        if trailing != parts[0][1]:
            raise ValueError(
                '%s[%d] has shape %s, %s[0] has %s: %s is ragged below the first seq_dims=%d '
                'dimension(s), the only ones padded (a larger seq_dims pads more)'
                % (where, j, lengths + trailing, where, parts[0][0] + parts[0][1], where, total_dims)
            )
    if seq_dims == 0:  # not reached: parts of one shape would have made a regular array
        raise ValueError('%s is ragged below the first seq_dims=%d dimension(s)' % (where, total_dims))
    longest = tuple(int(n) for n in np.max([p[0] for p in parts], axis=0)) if inner else ()
    return (len(parts),) + longest, parts[0][1], [d for p in parts for d in p[2]]


def _fill_padded(out, x, length, mode):
    """Write `x` (nested lists, ragged in its first len(length) dimensions) into `out`, of shape
    (*length, ...), cutting each list to its length and aligning it by `mode`."""
    a = x if isinstance(x, np.ndarray) and x.dtype != object else _regular_array(x)
    if a is not None:
        a = a[tuple(slice(0, n) for n in length)]
        region = tuple(
            slice(0, k) if mode == 'post' else slice(n - k, n) for k, n in zip(a.shape, length)
        )
        out[region] = a
        return
    items = list(x)[: length[0]]
    offset = 0 if mode == 'post' else length[0] - len(items)
    for j, item in enumerate(items):
        _fill_padded(out[offset + j], item, length[1:], mode)


def truncate_sequences(maxlen, indices, *sequences):
    """Pop items until the sequences' total length is at most `maxlen`, longest first.

    Each step pops from the currently longest sequence (the first of equals) at its index
    in `indices`, e.g. -1 for the end, or -2 to keep a trailing `[SEP]`.

    Args:
        maxlen: int. indices: int, or a list with one int per non-empty sequence.
        sequences: lists, modified in place; None or empty ones are skipped.
    Returns:
        list of the non-empty sequences (the same list objects).
    Raises:
        ValueError: `maxlen` is not a non-negative int, or `indices` has fewer entries than
            there are non-empty sequences.
    Source: bert4keras 0.11.5 `truncate_sequences`.
    """
    if isinstance(maxlen, bool) or not isinstance(maxlen, (int, np.integer)) or maxlen < 0:
        raise ValueError('maxlen must be a non-negative int, got %r' % (maxlen,))
    sequences = [s for s in sequences if s]
    if not isinstance(indices, (list, tuple)):
        indices = [indices] * len(sequences)
    elif len(indices) < len(sequences):
        raise ValueError(
            'indices has %d entries for %d non-empty sequences' % (len(indices), len(sequences))
        )
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
    Raises:
        TypeError / ValueError: `maxlen` is not an int >= 0.
    Source: bert4keras 0.11.5 `text_segmentate`.
    """
    _check_int('text_segmentate', 'maxlen', maxlen, 0)
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


# ------------------------------------------------------------------ parallel map (processes or threads)


def _parallel_worker(func, in_queue, out_queue, seed, pickled):
    """Worker loop: take (index, item), put (index, ok, result or error); stop on None.

    With `pickled`, items arrive and results leave as pickle bytes, so an unpicklable
    result fails here, with its index, instead of silently in the queue's feeder thread.
    """
    import pickle
    import traceback

    if seed is not None:
        np.random.seed(seed)
    while True:
        message = in_queue.get()
        if message is None:
            return
        index, item = pickle.loads(message) if pickled else message
        try:
            reply = (index, True, func(item))
            if pickled:
                reply = pickle.dumps(reply)
        except Exception as e:
            reply = (index, False, (e, traceback.format_exc()))
            if pickled:
                try:  # the exception travels only if it survives the round trip
                    pickle.loads(pickle.dumps(e))
                except Exception:
                    reply = (index, False, (None, '%s: %s\n%s' % (type(e).__name__, e, reply[2][1])))
                reply = pickle.dumps(reply)
        out_queue.put(reply)


def _parallel_seeds(random_seeds, workers):
    """One seed (or None: leave the RNG alone) per worker; see `parallel_apply_generator`."""
    if random_seeds is True:
        import random

        return random.SystemRandom().sample(range(2**32), workers)
    if random_seeds is False or random_seeds is None:
        return [None] * workers
    if is_string(random_seeds) or not hasattr(random_seeds, '__len__'):
        raise TypeError(
            'random_seeds must be True, False or a list of ints, got %s' % type(random_seeds).__name__
        )
    if len(random_seeds) < workers:
        raise ValueError('random_seeds has %d seeds for %d workers' % (len(random_seeds), workers))
    seeds = list(random_seeds)[:workers]
    for seed in seeds:
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
            raise ValueError('random_seeds must hold ints in [0, 2**32), got %r' % (seed,))
    return [int(seed) for seed in seeds]


def _parallel_iter(func, iterable, workers, max_queue_size, dummy, seeds):
    """The generator behind `parallel_apply_generator`; starts the workers on first `next`."""
    import pickle
    import queue

    if dummy:
        in_queue, out_queue = queue.SimpleQueue(), queue.Queue()
        procs = [
            threading.Thread(target=_parallel_worker, args=(func, in_queue, out_queue, None, False), daemon=True)
            for _ in seeds
        ]
    else:
        import multiprocessing

        # 'fork' lets `func` be a closure or lambda, as in bert4keras; elsewhere it must pickle.
        if 'fork' in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context('fork')
        else:
            context = multiprocessing.get_context()
        # Input: synchronous puts (no feeder thread left blocked on a full pipe after an
        # early stop). Output: a Queue, whose feeder thread keeps a worker from blocking
        # on a full pipe while the caller is itself blocked sending it input.
        in_queue, out_queue = context.SimpleQueue(), context.Queue()
        procs = [
            context.Process(target=_parallel_worker, args=(func, in_queue, out_queue, seed, True), daemon=True)
            for seed in seeds
        ]

    def receive(block):
        while True:
            try:
                reply = out_queue.get(timeout=0.1) if block else out_queue.get_nowait()
                break
            except queue.Empty:
                dead = [p for p in procs if not p.is_alive()]
                if dead:
                    raise RuntimeError(
                        'parallel_apply: worker %s died (exitcode %s) while items were pending'
                        % (dead[0].name, getattr(dead[0], 'exitcode', None))
                    )
                if not block:
                    return None
        index, ok, value = reply if dummy else pickle.loads(reply)
        if not ok:
            error, worker_traceback = value
            detail = '' if dummy else '\n\nWorker traceback:\n%s' % worker_traceback
            raise RuntimeError(
                'parallel_apply: func raised on item %d of iterable: %s%s'
                % (index, worker_traceback.strip().splitlines()[-1], detail)
            ) from error
        return index, value

    for p in procs:
        p.start()
    try:
        in_count = out_count = 0
        for index, item in enumerate(iterable):
            # At most max_queue_size items wait in the queue and one per worker is in hand.
            while in_count - out_count >= max_queue_size + workers:
                yield receive(block=True)
                out_count += 1
            message = (index, item)
            if not dummy:
                try:
                    message = pickle.dumps(message)
                except Exception as e:
                    raise TypeError(
                        'parallel_apply: item %d of iterable cannot be pickled for a worker process '
                        '(dummy=True uses threads): %s' % (index, e)
                    ) from e
            in_queue.put(message)
            in_count += 1
            while in_count > out_count:  # hand on what is ready without waiting
                result = receive(block=False)
                if result is None:
                    break
                yield result
                out_count += 1
        while in_count > out_count:
            yield receive(block=True)
            out_count += 1
    finally:
        if dummy:  # threads cannot be killed: drop queued items, stop each after its current call
            while True:
                try:
                    in_queue.get_nowait()
                except queue.Empty:
                    break
            for _ in procs:
                in_queue.put(None)
            for p in procs:
                p.join()
        else:
            for p in procs:
                p.terminate()
            for p in procs:
                p.join()
            in_queue.close()
            out_queue.cancel_join_thread()
            out_queue.close()


def parallel_apply_generator(func, iterable, workers, max_queue_size, dummy=False, random_seeds=True):
    """Apply `func` to every item of `iterable` in worker processes (or threads); yield as done.

    Results come in completion order, not input order: the generator yields
    `(index, func(item))` pairs, `index` being the item's position in `iterable`. Items are
    read from `iterable` only as workers need them: at most `max_queue_size + workers`
    items are read but not yet yielded, so a long or streamed iterable is never read whole.
    Workers start at the first `next()`; they are stopped (processes terminated and joined,
    threads joined after their current call) when the generator ends, raises, or is closed
    early (`close()`, `break` out of a `for` loop over it, or garbage collection).

    Args:
        func: callable of one item. With processes it runs in a forked child where the
            'fork' start method exists (Linux), so closures work; elsewhere `func` must be a
            picklable top-level function. Items and results must pickle (processes only).
        iterable: any iterable of items.
        workers: int >= 1, number of worker processes (threads with `dummy=True`).
        max_queue_size: int >= 1, items waiting in the input queue.
        dummy: False for processes (`multiprocessing`), True for threads (as
            `multiprocessing.dummy`), for functions that release the GIL or do I/O.
        random_seeds: True (each worker process seeds NumPy's global RNG with its own fresh
            seed, so forked workers do not repeat the parent's draws), False or None (no
            seeding), or a sequence of at least `workers` ints in [0, 2**32) (worker `k`
            calls `np.random.seed(random_seeds[k])`). Threads share the caller's RNG, so with
            `dummy=True` the seeds are checked but not applied.
    Returns:
        generator of `(index, result)` tuples, one per item, in completion order.
    Raises:
        ValueError: `workers` or `max_queue_size` is not an int >= 1; `random_seeds` has
            fewer seeds than workers or a seed outside [0, 2**32).
        TypeError: `random_seeds` is neither a bool nor a sequence; (while iterating) an
            item cannot be pickled for a worker process.
        RuntimeError: (while iterating) `func` raised on some item: the message names the
            item's index and the error (with the worker's traceback for processes), and
            the original exception is the `__cause__`; or a worker process died.
    Source: bert4keras 0.11.x snippets.py `parallel_apply_generator` (Su Jianlin); the
    error propagation, dead-worker check and cleanup are additions.
    """
    for name, value in (('workers', workers), ('max_queue_size', max_queue_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError('%s must be an int >= 1, got %r' % (name, value))
    seeds = _parallel_seeds(random_seeds, int(workers))
    return _parallel_iter(func, iterable, int(workers), int(max_queue_size), dummy, seeds)


def parallel_apply(
    func, iterable, workers, max_queue_size, callback=None, dummy=False, random_seeds=True, unordered=True
):
    """Apply `func` to every item of `iterable` in worker processes (or threads).

    Args:
        func, iterable, workers, max_queue_size, dummy, random_seeds: as in
            `parallel_apply_generator`.
        callback: None, or a callable called once per result, in the caller's process.
        unordered: True for completion order; False for input order (with a callback,
            early results are held until all items before them are done).
    Returns:
        with `callback=None`, the list of `func(item)` results (in input order when
        `unordered=False`); otherwise None.
    Raises:
        as `parallel_apply_generator`; an exception of `callback` propagates unchanged.
        Workers are stopped in all cases.
    Source: bert4keras 0.11.x snippets.py `parallel_apply` (Su Jianlin).
    """
    import contextlib

    generator = parallel_apply_generator(func, iterable, workers, max_queue_size, dummy, random_seeds)
    with contextlib.closing(generator):
        if callback is None:
            if unordered:
                return [result for _, result in generator]
            return [result for _, result in sorted(generator, key=lambda pair: pair[0])]
        if unordered:
            for _, result in generator:
                callback(result)
            return None
        pending, next_index = {}, 0
        for index, result in generator:
            pending[index] = result
            while next_index in pending:
                callback(pending.pop(next_index))
                next_index += 1
    return None


def length_sorted_batches(lengths, batch_size, chunk_batches=100, random=True, rng=None, shapes_apart=None):
    """One epoch's batches, as lists of sample indices, each of samples of similar length.

    With `random=True` the samples are taken in random order `chunk_batches * batch_size` at
    a time; each chunk is sorted by length (a stable sort: ties stay in random order) and cut
    into batches of `batch_size`, and then all the batches are shuffled together. A batch
    padded to its longest sample then pads little, and the order of lengths is random. Only
    the last batch of the last chunk can be short, and it lands anywhere in the epoch. With
    `random=False`: consecutive batches in data order (`[0, .., batch_size - 1], ...`).

    Unlike `DataGenerator(bucket_by=...)`, which sorts within a shuffle buffer and shuffles
    the batches of each buffer among themselves, this needs the whole epoch's lengths (data
    with a length) and gives batches, not a sample order, so that a short batch stays one.

        class data_generator(DataGenerator):
            def __iter__(self, random=False):
                lengths = [len(token_ids) for token_ids, label in self.data]
                for batch in length_sorted_batches(lengths, self.batch_size, random=random):
                    token_ids, labels = zip(*(self.data[i] for i in batch))
                    yield sequence_padding(token_ids, pad_to_multiple_of=8), np.array(labels)

    Args:
        lengths: a sequence of numbers, sample `i`'s length (e.g. its token count).
        batch_size: int >= 1.
        chunk_batches: int >= 1, batches per sorted chunk: larger pads less, smaller keeps
            more randomness in which samples share a batch.
        random: bool.
        rng: None to draw from `np.random` (its global state, as bert4keras 0.11.5), or a
            `np.random.Generator` / `RandomState`. The draws are `rng.permutation(len(lengths))`
            then `rng.shuffle` of the list of batches, nothing else (none when `random=False`):
            e.g. `np.random.default_rng([seed, epoch])` makes each epoch reproducible alone.
        shapes_apart: None, or a callable: batch (list of indices) -> its padded length(s):
            the batches are then reordered by `first_two_apart(batches, shapes_apart)`, the
            old TensorFlow work-around that `DataGenerator.forfit` does not need.
    Returns:
        list of lists of int, `ceil(len(lengths) / batch_size)` batches holding every index
        once.
    Raises:
        TypeError: `lengths` has no length; `batch_size` or `chunk_batches` is not an int;
            `rng` has no `permutation` and `shuffle`; `shapes_apart` is not callable (or None).
        ValueError: `batch_size` or `chunk_batches` < 1.
    Source: the length-sorted batching of bert4keras-era scripts and fairseq's size-sorted
    batches; tf.data's `bucket_by_sequence_length` buckets by fixed boundaries instead.
    """
    where = 'length_sorted_batches'
    batch_size = _check_int(where, 'batch_size', batch_size, 1)
    chunk_batches = _check_int(where, 'chunk_batches', chunk_batches, 1)
    if not hasattr(lengths, '__len__') or is_string(lengths):
        raise TypeError('%s: lengths must be a sequence of numbers, got %r' % (where, lengths))
    if shapes_apart is not None and not callable(shapes_apart):
        raise TypeError('%s: shapes_apart must be None or a callable batch -> length(s), got %r' % (where, shapes_apart))
    lengths = list(lengths)
    if not random:
        batches = [list(range(i, min(i + batch_size, len(lengths)))) for i in range(0, len(lengths), batch_size)]
    else:
        rng = np.random if rng is None else rng
        if not (hasattr(rng, 'permutation') and hasattr(rng, 'shuffle')):
            raise TypeError('%s: rng must be None, a np.random.Generator or a RandomState, got %r' % (where, rng))
        order = rng.permutation(len(lengths)).tolist()
        chunk = batch_size * chunk_batches
        batches = []
        for start in range(0, len(order), chunk):
            ids = sorted(order[start : start + chunk], key=lengths.__getitem__)
            batches += [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
        rng.shuffle(batches)
    return batches if shapes_apart is None else first_two_apart(batches, shapes_apart)


def first_two_apart(batches, shape):
    """Reorder `batches` so that the first two differ in every padded length, if any batch does.

    When the second batch shares a length with the first, it trades places with the first
    later batch that differs from the first in every length; nothing else moves. This was the
    work-around for Keras' plain-generator adapter on TensorFlow, which fixes the dimensions
    its first two batches agree on; `DataGenerator.forfit` leaves them open and needs none of
    it. It stays for scripts whose batch order (and what they train to) was measured with it.

    Args:
        batches: a list (reordered in place), of anything `shape` takes.
        shape: callable, batch -> its padded length, or a sequence of them (one per input).
    Returns:
        `batches`.
    """
    if len(batches) > 2:
        first = np.atleast_1d(shape(batches[0]))

        def apart(batch):
            return bool(np.all(np.atleast_1d(shape(batch)) != first))

        if not apart(batches[1]):
            j = next((j for j in range(2, len(batches)) if apart(batches[j])), None)
            if j is not None:
                batches[1], batches[j] = batches[j], batches[1]
    return batches


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

    Lists in a batch are passed on as tuples (tf.data takes no lists). On the TensorFlow
    backend Keras fixes each input's shape from the first two batches it sees: if those two
    have the same padded length while later ones differ, pad to a fixed `length` or use
    `to_dataset(..., padded_batch=True)`, whose shapes are declared.

    Length bucketing (opt in, `bucket_by=len_of_sample`): with `random=True`, `sample`
    takes the shuffled samples `buffer_size` at a time, sorts each buffer by
    `bucket_by(sample)`, cuts it into runs of `batch_size` and yields the runs in random
    order. An `__iter__` that batches every `batch_size` samples as above then gets batches
    of similar lengths, so `sequence_padding` to the longest of each batch pads far less.
    Every sample is still yielded once per epoch; only a last, shorter run stays at the end
    of the epoch (it is the final batch). `random=False` keeps the data order.

    Args:
        data: a list (or anything with `__len__` and `__getitem__`) of samples, or any
            iterable (then `len(self)` is unknown and shuffling uses a buffer).
        batch_size: int.
        buffer_size: int, shuffle buffer for data without `__len__`, and with `bucket_by`
            the number of samples sorted together (rounded down to a multiple of
            `batch_size`, at least one batch). Default `batch_size * 1000`, with
            `bucket_by` `batch_size * 100`.
        bucket_by: None, or a callable sample -> number (e.g. the token count) to sort by.
        seed: None to draw from `np.random` (as bert4keras 0.11.5), or an int: the
            shuffling then comes from `np.random.default_rng(seed)`, created once, so the
            epochs differ from each other but the run repeats exactly.
    Raises:
        TypeError: `data` is not iterable; `batch_size` or `buffer_size` is not an int;
            `bucket_by` is not callable (or None).
        ValueError: `batch_size` < 1 or `buffer_size` < 0 (0, like None, means the default).
    Source: bert4keras 0.11.5 `DataGenerator`; length bucketing as in tf.data's
    `bucket_by_sequence_length` and fairseq's size-sorted batches.
    """

    def __init__(self, data, batch_size=32, buffer_size=None, bucket_by=None, seed=None):
        where = type(self).__name__
        if not (hasattr(data, '__iter__') or hasattr(data, '__getitem__')):
            raise TypeError('%s: data must be a list or an iterable of samples, got %r' % (where, data))
        batch_size = _check_int(where, 'batch_size', batch_size, 1)
        buffer_size = _check_int(where, 'buffer_size', buffer_size, 0, allow_none=True)
        if bucket_by is not None and not callable(bucket_by):
            raise TypeError('bucket_by must be None or a callable sample -> length, got %r' % (bucket_by,))
        self.data = data
        self.batch_size = batch_size
        if hasattr(self.data, '__len__'):
            self.steps = len(self.data) // self.batch_size
            if len(self.data) % self.batch_size != 0:
                self.steps += 1
        else:
            self.steps = None
        self.buffer_size = buffer_size or batch_size * (100 if bucket_by is not None else 1000)
        self.bucket_by = bucket_by
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(seed)

    def __len__(self):
        """Batches per epoch, ceil(len(data) / batch_size). TypeError when data has no length."""
        return self.steps

    def sample(self, random=False):
        """Yield `(is_end, sample)` over one pass of the data; `is_end` is True for the last.

        With `random=True` the order is a random permutation (data with a length) or a
        shuffle buffer of `buffer_size` samples (plain iterables), then sorted into
        length buckets when `bucket_by` is set (see the class). Uses `np.random`, or the
        generator seeded by `seed`.
        """
        if random:
            randint = np.random.randint if self._rng is None else self._rng.integers
            permutation = np.random.permutation if self._rng is None else self._rng.permutation
            if self.steps is None:

                def generator():
                    caches, isfull = [], False
                    for d in self.data:
                        caches.append(d)
                        if isfull:
                            i = randint(len(caches))
                            yield caches.pop(i)
                        elif len(caches) == self.buffer_size:
                            isfull = True
                    while caches:
                        i = randint(len(caches))
                        yield caches.pop(i)

            else:

                def generator():
                    for i in permutation(len(self.data)):
                        yield self.data[i]

            data = generator()
            if self.bucket_by is not None:
                data = self._bucketed(data, permutation)
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

    def _bucketed(self, samples, permutation):
        """`samples` re-ordered buffer by buffer: sorted by `bucket_by`, runs of `batch_size` shuffled."""
        size = max(self.buffer_size // self.batch_size, 1) * self.batch_size
        buffer = []
        for d in samples:
            buffer.append(d)
            if len(buffer) == size:
                yield from self._sorted_runs(buffer, permutation)
                buffer = []
        if buffer:
            yield from self._sorted_runs(buffer, permutation)

    def _sorted_runs(self, buffer, permutation):
        lengths = [self.bucket_by(d) for d in buffer]
        order = sorted(range(len(buffer)), key=lengths.__getitem__)  # stable: ties keep the shuffle
        runs = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        short = runs.pop() if len(runs[-1]) < self.batch_size else []  # a short run stays last
        for j in permutation(len(runs)):
            for i in runs[j]:
                yield buffer[i]
        for i in short:
            yield buffer[i]

    def __iter__(self, random=False):
        """Yield the batches of one epoch; write it in a subclass."""
        raise NotImplementedError

    def forfit(self, random=True, skip=0):
        """Endless stream of batches (epoch after epoch) for `model.fit(..., steps_per_epoch=len(gen))`.

        An iterator (``next(stream)`` gives the next batch, as bert4keras 0.11.5's generator)
        that is also a Keras data adapter: on TensorFlow its tf.data signature leaves every
        dimension but the batch's open, so batches padded to different lengths train whatever
        the first batches' lengths are (Keras fixes the dimensions that agree in the first
        two batches of a plain generator).

        `skip`: int >= 0, batches of the stream left out at its start, e.g. those of the
        current epoch that a run resumed from a mid-epoch backup has trained on already (its
        `__iter__` must then give that epoch's batches again, as with a per-epoch seed).

        Raises:
            TypeError, ValueError: `skip` is not an int >= 0.
        Raises (when iterated):
            ValueError: `max_empty_passes` (10) passes of `__iter__` in a row yielded nothing
            (empty data, or a one-shot iterator already used up: pass a list or an object whose
            `__iter__` restarts).
        """
        skip = _check_int('%s.forfit' % type(self).__name__, 'skip', skip, 0)
        return _fit_stream_class()(itertools.islice(self._batches(random), skip, None))

    #: Passes in a row without a batch after which `forfit` gives up (one may be legitimate: an
    #: `__iter__` that yields only inside a data-dependent branch can end a shuffled pass without one).
    max_empty_passes = 10

    def _batches(self, random):
        """The endless generator behind `forfit`."""
        empty = 0
        while True:
            empty += 1
            for d in self.__iter__(random):
                empty = 0
                yield _lists_to_tuples(d)
            if empty >= self.max_empty_passes:
                raise ValueError(
                    '%s yielded no batch in %d passes in a row: the data is empty or an iterator '
                    'that was already consumed (use a list or a re-iterable object)' % (type(self).__name__, empty)
                )

    def fortest(self, random=False):
        """Endless stream of the inputs of each batch (`d[0]`), for `model.predict(..., steps=len(gen))`.

        Iterated, it yields the inputs themselves; as a Keras data adapter (see `forfit`) it
        hands Keras `(inputs,)`, so that a two-input model does not take its second input for
        labels.
        """
        return _fit_stream_class()(((d[0],) for d in self._batches(random)), unwrap=True)

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
            # Keras 3 matches a dict of targets to a model's outputs only when it has several:
            # one label name stands for the single output, so its tensor is yielded bare.
            bare_label = (
                isinstance(names, (list, tuple)) and len(names) == 2 and not is_string(names[0])
                and not is_string(names[1]) and len(names[1]) == 1
            )
            if bare_label:
                names = (names[0], None)
                types, shapes = (types[0], types[1][0]), (shapes[0], shapes[1][0])

            def wrap(names, values):
                if names is None:
                    return values
                if is_string(names):
                    return {names: values}
                if all(is_string(n) for n in names):
                    return dict(zip(names, values))
                return tuple(wrap(n, v) for n, v in zip(names, values))

            def generator():
                for d in self.forfit():
                    yield wrap(names, (d[0], d[1][0]) if bare_label else d)

            types, shapes = wrap(names, types), wrap(names, shapes)

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
            workers: int >= 0, threads filling the queue (0 or 1: none, batches are made
                on demand); they take batches from the one stream in turn, so this overlaps
                data preparation with training rather than parallelising it.
                (Multiprocessing is not offered: each process would replay the same stream.)
            max_queue_size: int >= 1, batches prepared ahead.
        Returns:
            keras.utils.PyDataset.
        """
        where = '%s.to_pydataset' % type(self).__name__
        workers = _check_int(where, 'workers', workers, 0)
        max_queue_size = _check_int(where, 'max_queue_size', max_queue_size, 1)
        return _batch_stream_class()(self, random, workers=workers, max_queue_size=max_queue_size)


class LengthSortedGenerator(DataGenerator):
    """Padded batches of encoded samples of similar length: a `DataGenerator` with no `__iter__` to write.

    Each sample is a tuple `(ids_1, ..., ids_k, label)` of k >= 1 id sequences (token_ids,
    segment_ids, ...) and a label. A batch is `((ids_1, ..., ids_k), labels)` (`(ids_1,
    labels)` when k = 1): each id field padded by `sequence_padding` to the batch's longest,
    rounded up to a multiple of `pad_to_multiple_of`, so int arrays (batch_size, seq_len);
    labels stacked into (batch_size,) (int32 for integers, float32 for reals) or, when they
    are sequences (one tag per token), padded with 0 to the same seq_len, (batch_size, seq_len).
    Shuffled epochs come from `length_sorted_batches` over the first field's lengths:

        encode = lambda text, label: (*tokenizer.encode(text, maxlen=128), label)
        train_gen = LengthSortedGenerator([encode(t, l) for t, l in train_data], 32, pad_to_multiple_of=16)
        model.fit(train_gen.forfit(), steps_per_epoch=len(train_gen), epochs=3)

    Args:
        data: a list of samples, as above, every one with the same number of fields.
        batch_size: int >= 1.
        pad_to_multiple_of: None, or int >= 1 (e.g. 8 or 16, so that XLA and JAX compile a
            handful of shapes).
        value: the id that pads the id fields (0, [PAD] in BERT's vocabs).
        chunk_batches: int >= 1, see `length_sorted_batches`.
        shapes_apart: bool, reorder each epoch's batches by `first_two_apart` on their padded
            length: the old TensorFlow work-around, kept for scripts measured with it.
        seed: None to draw from `np.random`, or an int (see `DataGenerator`).
    Raises:
        TypeError: `data` is not a list of tuples; a field of a sample that should be an id
            sequence is not one (the sample and field are named).
        ValueError: samples with different numbers of fields, or fewer than 2; a sequence label
            longer than its sample's first field.
    Source: the `data_generator` of bert4keras 0.11.5's classification and tagging scripts,
    with the length-sorted batches of fairseq and HF's `group_by_length`.
    """

    def __init__(self, data, batch_size=32, pad_to_multiple_of=None, value=0, chunk_batches=100,
                 shapes_apart=False, seed=None):
        where = type(self).__name__
        if not hasattr(data, '__len__') or not hasattr(data, '__getitem__') or is_string(data):
            raise TypeError('%s: data must be a list of (ids, ..., label) tuples, got %r' % (where, type(data).__name__))
        super().__init__(data, batch_size=batch_size, seed=seed)
        self.pad_to_multiple_of = _check_int(where, 'pad_to_multiple_of', pad_to_multiple_of, 1, allow_none=True)
        self.value = value
        self.chunk_batches = _check_int(where, 'chunk_batches', chunk_batches, 1)
        self.shapes_apart = bool(shapes_apart)
        fields = None
        for i, sample in enumerate(data):
            if not isinstance(sample, (tuple, list)) or len(sample) < 2:
                raise ValueError('%s: sample %d must be a tuple (ids, ..., label) of at least 2 fields, got %r'
                                 % (where, i, sample))
            if fields is None:
                fields = len(sample)
            elif len(sample) != fields:
                raise ValueError('%s: sample %d has %d fields, sample 0 has %d' % (where, i, len(sample), fields))
            for j, ids in enumerate(sample[:-1]):
                if not hasattr(ids, '__len__') or is_string(ids):
                    raise TypeError('%s: field %d of sample %d must be a sequence of ids, got %r' % (where, j, i, ids))
            label = sample[-1]
            if hasattr(label, '__len__') and not is_string(label) and len(label) > len(sample[0]):
                raise ValueError('%s: sample %d has %d labels for %d ids' % (where, i, len(label), len(sample[0])))
        self.lengths = [len(sample[0]) for sample in data]

    def padded_length(self, batch):
        """The seq_len `batch` (a list of sample indices) is padded to."""
        longest = max(self.lengths[i] for i in batch)
        multiple = self.pad_to_multiple_of or 1
        return -(-longest // multiple) * multiple

    def batches(self, random=False):
        """One epoch's batches, as lists of indices into `data` (consecutive ones unless `random`)."""
        return length_sorted_batches(
            self.lengths, self.batch_size, self.chunk_batches, random=random, rng=self._rng,
            shapes_apart=self.padded_length if self.shapes_apart else None,
        )

    def __iter__(self, random=False):
        for batch in self.batches(random):
            *fields, labels = zip(*(self.data[i] for i in batch))
            inputs = tuple(sequence_padding(ids, value=self.value, pad_to_multiple_of=self.pad_to_multiple_of)
                           for ids in fields)
            if hasattr(labels[0], '__len__') and not is_string(labels[0]):
                labels = sequence_padding(labels, length=inputs[0].shape[1])
            else:
                labels = np.asarray(labels)
            if labels.dtype.kind in 'iub':
                labels = labels.astype('int32')
            elif labels.dtype.kind == 'f':
                labels = labels.astype('float32')
            yield (inputs if len(inputs) > 1 else inputs[0]), labels


def _lists_to_tuples(batch):
    """``([token_ids, segment_ids], labels)`` -> ``((token_ids, segment_ids), labels)``:
    tf.data (Keras' generator adapter on TensorFlow) accepts tuples, not lists."""
    if isinstance(batch, list):
        return tuple(_lists_to_tuples(x) for x in batch)
    if isinstance(batch, tuple):
        return type(batch)(*map(_lists_to_tuples, batch)) if hasattr(batch, '_fields') \
            else tuple(_lists_to_tuples(x) for x in batch)
    return batch


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


@functools.lru_cache(maxsize=None)
def _fit_stream_class():
    """The class of `DataGenerator.forfit`'s streams, built once Keras is imported."""
    from bert4keras._keras_internals import generator_data_adapter

    GeneratorDataAdapter, data_adapter_utils = generator_data_adapter()

    class BatchStream(GeneratorDataAdapter):
        """An endless iterator of batches that `model.fit` also takes as its data adapter.

        On TensorFlow the batches' tf.data signature has every dimension open (Keras'
        generator adapter fixes those on which its first two batches agree, and fails on a
        later batch padded to another length). With `unwrap`, the stream holds `(inputs,)`
        tuples for Keras and iterating it yields the inputs.
        """

        def __init__(self, batches, unwrap=False):
            super().__init__(batches)  # takes the first two batches ahead
            self.unwrap = unwrap
            self._iterator = None

        def __iter__(self):
            return self

        def __next__(self):
            if self._iterator is None:
                self._iterator = self.generator()
            batch = next(self._iterator)
            return batch[0] if self.unwrap else batch

        def get_tf_dataset(self):
            import tensorflow as tf

            def open_dims(spec):  # size-1 dimensions (labels (batch_size, 1)) stay: Keras squeezes them
                if not isinstance(spec, tf.TensorSpec):
                    return spec
                return tf.TensorSpec([None if d != 1 else 1 for d in spec.shape.as_list()], spec.dtype)

            if self._output_signature is None:
                spec = data_adapter_utils.get_tensor_spec(self._first_batches)
                self._output_signature = tf.nest.map_structure(open_dims, spec)
            return super().get_tf_dataset()

    return BatchStream


# ------------------------------------------------------------------------- autoregressive decoding


class ViterbiDecoder:
    """Most likely label path of a linear-chain CRF, in NumPy.

    Args:
        trans: ``(num_labels, num_labels)`` array, ``trans[i, j]`` the score of label i
            followed by label j (e.g. ``keras.ops.convert_to_numpy(crf.trans)``).
        starts: None or list of int, the labels a path may start with (others are excluded).
        ends: None or list of int, the labels a path may end with.
    Source: bert4keras 0.11.5 ``ViterbiDecoder``.
    """

    def __init__(self, trans, starts=None, ends=None):
        self.trans = np.asarray(trans)
        self.num_labels = len(self.trans)
        self.non_starts = [] if starts is None else [i for i in range(self.num_labels) if i not in starts]
        self.non_ends = [] if ends is None else [i for i in range(self.num_labels) if i not in ends]

    def decode(self, nodes):
        """Best path for emission scores ``nodes`` ``(seq_len, num_labels)`` (the real tokens
        only: cut the padding off first). Maximises ``sum_t nodes[t, y_t] + sum_t trans[y_t,
        y_{t+1}]``; returns int64 ``(seq_len,)``. ``nodes`` is not modified."""
        nodes = np.array(nodes, dtype='float64')
        if nodes.ndim != 2 or nodes.shape[1] != self.num_labels:
            raise ValueError('nodes must have shape (seq_len, %d), got %s' % (self.num_labels, nodes.shape))
        nodes[0, self.non_starts] -= np.inf
        nodes[-1, self.non_ends] -= np.inf
        labels = np.arange(self.num_labels).reshape((1, -1))
        scores = nodes[0].reshape((-1, 1))
        paths = labels
        for t in range(1, len(nodes)):
            m = scores + self.trans + nodes[t].reshape((1, -1))  # m[i, j]: best path ending i -> j
            idxs = m.argmax(0)
            scores = m.max(0).reshape((-1, 1))
            paths = np.concatenate([paths[:, idxs], labels], 0)
        return paths[:, scores[:, 0].argmax()]


def extract_entities(tags, outside='O'):
    """Entity spans of one tagged sequence, with conlleval's chunk rules (BIO / IOB2 and IOB1).

    A chunk starts at ``B-X``, or at ``I-X`` after ``O`` or after a chunk of another type, and
    runs over the following ``I-X``. Tags without a ``B-`` / ``I-`` prefix other than
    ``outside`` are single-token types (``'X'`` is read as ``I-X``).

    Args:
        tags: list of str, e.g. ``['B-PER', 'I-PER', 'O', 'B-LOC']``.
        outside: str, the tag of tokens outside entities.
    Returns:
        list of ``(start, end, type)`` with ``end`` inclusive (bert4keras's ``text[start:end +
        1]``), in order.
    Source: the chunk rules of CoNLL-2000's ``conlleval`` (startOfChunk / endOfChunk).
    """
    entities = []
    start, current = None, None
    for i, tag in enumerate(list(tags) + [outside]):
        if tag == outside:
            prefix, kind = outside, None
        elif len(tag) > 2 and tag[1] in '-_' and tag[0] in 'BIES':
            prefix, kind = tag[0], tag[2:]
        else:
            prefix, kind = 'I', tag
        begins = prefix in ('B', 'S') or (prefix in ('I', 'E') and kind != current)
        if current is not None and (prefix == outside or begins):
            entities.append((start, i - 1, current))
            current = None
        if prefix != outside and (begins or current is None):
            start, current = i, kind
        if prefix in ('E', 'S'):  # BIOES closes here
            entities.append((start, i, current))
            current = None
    return entities


def entity_scores(y_true, y_pred, per_type=False):
    """Entity-level micro precision / recall / F1 (exact span and type match).

    Args:
        y_true, y_pred: iterables of the same length, one collection of hashable entities per
            sample, e.g. ``(start, end, type)`` tuples from `extract_entities` (duplicates in a
            sample count once).
        per_type: bool, also score each type (the last element of an entity).
    Returns:
        dict with ``precision``, ``recall``, ``f1`` (floats, 0 when undefined), ``true_positives``,
        ``num_pred``, ``num_true``; with ``per_type``, ``types``: ``{type: same dict}``.
    Raises:
        ValueError: y_true and y_pred differ in length.
    """
    y_true, y_pred = list(y_true), list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError('y_true has %d samples but y_pred has %d' % (len(y_true), len(y_pred)))

    def score(pairs):
        tp = num_pred = num_true = 0
        for t, p in pairs:
            t, p = set(t), set(p)
            tp += len(t & p)
            num_pred += len(p)
            num_true += len(t)
        precision = tp / num_pred if num_pred else 0.0
        recall = tp / num_true if num_true else 0.0
        f1 = 2 * tp / (num_pred + num_true) if num_pred + num_true else 0.0
        return {'precision': precision, 'recall': recall, 'f1': f1,
                'true_positives': tp, 'num_pred': num_pred, 'num_true': num_true}

    result = score(zip(y_true, y_pred))
    if per_type:
        types = sorted({e[-1] for sample in y_true + y_pred for e in sample}, key=str)
        result['types'] = {
            k: score(([e for e in t if e[-1] == k], [e for e in p if e[-1] == k]) for t, p in zip(y_true, y_pred))
            for k in types
        }
    return result


def get_layer_output(model, name, inputs, node_index=0, return_attention_scores=False, batch_size=None):
    """Output of the layer called ``name`` inside a built Keras model, for ``inputs``.

    Reads intermediate values without rebuilding the model: a sub-model from ``model.inputs``
    to the layer's output is run (with `predict`, so ``inputs`` may be larger than a batch).
    With ``return_attention_scores=True`` the layer must take a ``return_attention_scores``
    argument (e.g. `bert4keras.layers.MultiHeadAttention`): its inputs are computed, and a copy
    of the layer with the same weights and ``return_attention_scores=True`` is applied to them,
    giving the attention probabilities. Imports Keras when called.

    Args:
        model: a functional `keras.Model`, e.g. from `build_transformer_model`.
        name: str, e.g. ``'Transformer-3-MultiHeadSelfAttention'`` or
            ``'Transformer-3-FeedForward-Norm'``.
        inputs: what ``model.predict`` takes, e.g. ``[token_ids, segment_ids]``.
        node_index: int, which call of the layer (a layer shared across blocks, as ALBERT's,
            has one call per block).
        return_attention_scores: bool.
        batch_size: int or None, passed to `predict`.
    Returns:
        np.ndarray (a list of them for a layer with several outputs); with
        ``return_attention_scores``, the probabilities ``(batch_size, heads, q_len, k_len)``.
    Raises:
        ValueError: no such layer, or ``node_index`` out of range.
        TypeError: ``node_index`` is not an int.
    Example:
        ``probas = get_layer_output(bert, 'Transformer-3-MultiHeadSelfAttention',
        [token_ids, segment_ids], return_attention_scores=True)``
    """
    import keras

    node_index = _check_int('get_layer_output', 'node_index', node_index, 0)
    layer = model.get_layer(name)
    from bert4keras._keras_internals import inbound_nodes

    nodes = [n for n in inbound_nodes(layer) if not n.is_input]
    if not 0 <= node_index < len(nodes):
        raise ValueError('layer %r has %d call(s) in the model; node_index=%d' % (name, len(nodes), node_index))
    node = nodes[node_index]
    if not return_attention_scores:
        outputs = node.output_tensors
        sub = keras.Model(model.inputs, outputs[0] if len(outputs) == 1 else outputs)
        return sub.predict(inputs, batch_size=batch_size, verbose=0)

    tensors = node.input_tensors
    values = keras.Model(model.inputs, list(tensors)).predict(inputs, batch_size=batch_size, verbose=0)
    values = {id(t): keras.ops.convert_to_tensor(v) for t, v in zip(tensors, values)}

    def fill(x):
        return values[id(x)] if isinstance(x, keras.KerasTensor) else x

    args = keras.tree.map_structure(fill, node.arguments.args)
    kwargs = keras.tree.map_structure(fill, node.arguments.kwargs)
    clone = type(layer).from_config({**layer.get_config(), 'return_attention_scores': True})
    clone(*args, **kwargs)  # builds the weights
    clone.set_weights(layer.get_weights())
    _, scores = clone(*args, **kwargs)
    return keras.ops.convert_to_numpy(scores)


# --------------------------------------------- bert4keras 0.11.5's other helpers: text, files, serving

is_py2 = False  # bert4keras 0.11.5 ran on Python 2 and 3; scripts may test this flag

# `from bert4keras.snippets import uniout` loaded the Python 2 `uniout` package, which made
# `print` show Chinese inside lists and dicts; 0.11.5 gave None on Python 3, as here.
uniout = None


def convert_to_unicode(text, encoding='utf-8', errors='ignore'):
    """`text` as str: bytes are decoded with `encoding` (undecodable bytes dropped by the
    default `errors='ignore'`), anything else is returned unchanged.

    Source: bert4keras 0.11.5 `convert_to_unicode`.
    """
    if isinstance(text, bytes):
        text = text.decode(encoding, errors=errors)
    return text


def convert_to_str(text, encoding='utf-8', errors='ignore'):
    """The same as `convert_to_unicode` on Python 3 (`str` is unicode); on Python 2 bert4keras
    encoded unicode to bytes here.

    Source: bert4keras 0.11.5 `convert_to_str`.
    """
    return convert_to_unicode(text, encoding, errors)


def strQ2B(ustring):
    """Full-width (quanjiao) forms to half-width (banjiao): U+3000 to a space and U+FF01..U+FF5E
    (e.g. `Ａ`, `１`, `，`, `？`) to ASCII; other characters are unchanged.

    Args:
        ustring: str.
    Returns:
        str of the same length.
    Source: bert4keras 0.11.5 `strQ2B` (its `unichr` was Python 2 only).
    """
    chars = []
    for ch in ustring:
        code = ord(ch)
        if code == 0x3000:
            code = 0x20
        elif 0xFF01 <= code <= 0xFF5E:
            code -= 0xFEE0
        chars.append(chr(code))
    return ''.join(chars)


def string_matching(s, keywords):
    """True when the regular expression of at least one of `keywords` is found in `s`
    (`re.search`; plain words match as substrings).

    Source: bert4keras 0.11.5 `string_matching`.
    """
    return any(re.search(k, s) for k in keywords)


def is_one_of(x, ys):
    """True when `x` is one of `ys` by identity (`is`): `x in ys` compares with `==`, which
    fails or broadcasts for arrays and tensors.

    Source: bert4keras 0.11.5 `is_one_of`.
    """
    return any(x is y for y in ys)


def lowercase_and_normalize(text):
    """Lowercase, decompose (NFD) and drop non-spacing marks (accents): `'Café'` -> `'cafe'`.

    The normalization of uncased BERT vocabularies (`do_lower_case=True`).
    Source: bert4keras 0.11.5 `lowercase_and_normalize`; Google BERT `_run_strip_accents`.
    """
    text = unicodedata.normalize('NFD', text.lower())
    return ''.join(ch for ch in text if unicodedata.category(ch) != 'Mn')


def insert_arguments(**arguments):
    """Decorator for a method (mostly `__init__`) adding keyword arguments with defaults.

    Each `name=default` becomes an attribute of `self` before the method runs: the caller's
    value when it passes `name=...` (removed from the keywords the method sees), else
    `default`. Used to give a subclass of a Keras layer new constructor arguments.

    Example:
        ``@insert_arguments(with_pool=False)`` on ``__init__(self, **kwargs)``: then
        ``Model(with_pool=True).with_pool is True``.
    Source: bert4keras 0.11.5 `insert_arguments`.
    """
    def decorator(func):
        @functools.wraps(func)
        def new_func(self, *args, **kwargs):
            for name, default in arguments.items():
                setattr(self, name, kwargs.pop(name, default))
            return func(self, *args, **kwargs)

        return new_func

    return decorator


def delete_arguments(*arguments):
    """Decorator for a method (mostly `__init__`) refusing keyword arguments a parent accepts.

    Raises:
        TypeError: at call time, when one of `arguments` is passed by keyword, naming the
            class and the argument, as Python does for an unexpected keyword.
    Source: bert4keras 0.11.5 `delete_arguments`.
    """
    def decorator(func):
        @functools.wraps(func)
        def new_func(self, *args, **kwargs):
            for name in arguments:
                if name in kwargs:
                    raise TypeError(
                        "%s got an unexpected keyword argument '%s'" % (type(self).__name__, name)
                    )
            return func(self, *args, **kwargs)

        return new_func

    return decorator


def longest_common_substring(source, target):
    """Longest common contiguous slice of two sequences (str, list, ...).

    Returns:
        `(length, (i0, i1, j0, j1))` with `source[i0:i1] == target[j0:j1]` of that length;
        `(0, (0, 0, 0, 0))` when nothing is shared. Of several longest slices, the one
        starting first in `source`, then first in `target` (as `difflib`'s
        `find_longest_match`).
    Source: bert4keras 0.11.5 `longest_common_substring` (O(len(source) * len(target))).
    """
    best, span = 0, (0, 0, 0, 0)
    previous = [0] * (len(target) + 1)  # previous[j]: common run ending at source[i-1], target[j-1]
    for i, s in enumerate(source, 1):
        current = [0] * (len(target) + 1)
        for j, t in enumerate(target, 1):
            if s == t:
                current[j] = previous[j - 1] + 1
                if current[j] > best:
                    best = current[j]
                    span = (i - best, i, j - best, j)
        previous = current
    return best, span


def longest_common_subsequence(source, target):
    """Longest common (not necessarily contiguous) subsequence of two sequences.

    Returns:
        `(length, mapping)`: `mapping` is a list of `length` pairs `(i, j)`, increasing in
        both, with `source[i] == target[j]`. Of several longest subsequences one is
        returned: built from the ends, equal last elements are always paired.
    Source: bert4keras 0.11.5 `longest_common_subsequence` (O(len(source) * len(target))).
    """
    n, m = len(source), len(target)
    table = [[0] * (m + 1) for _ in range(n + 1)]  # table[i][j]: LCS of source[:i], target[:j]
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            if source[i - 1] == target[j - 1]:
                table[i][j] = table[i - 1][j - 1] + 1
            else:
                table[i][j] = max(table[i][j - 1], table[i - 1][j])
    mapping, i, j = [], n, m
    while i > 0 and j > 0:
        if source[i - 1] == target[j - 1]:
            mapping.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif table[i][j - 1] > table[i - 1][j]:
            j -= 1
        else:
            i -= 1
    return table[n][m], mapping[::-1]


def orthogonally_resize(a, new_shape, window=2):
    """Resize an array to `new_shape` keeping its Frobenius norm, to grow a trained weight into
    a larger model.

    Along each axis that grows from `d1` to `d2`, the axis is cut into blocks of `window`
    entries, each block repeated `ceil(d2 / d1)` times in place and the result cut to `d2`
    (window 2, 4 -> 6: `[0, 1, 2, 3]` -> `[0, 1, 0, 1, 2, 3]`); an axis that shrinks is cut
    to its first `d2` entries. The result is then scaled to the norm of `a`.

    Args:
        a: np.ndarray. new_shape: tuple of int, one per axis of `a`. window: int >= 1.
    Returns:
        np.ndarray of shape `new_shape`.
    Raises:
        ValueError: `new_shape` has not `a.ndim` entries, or a growing axis's size is not a
            multiple of `window` (the message names the axis), or `window` < 1.
        TypeError: `window` is not an int.
    Source: bert4keras 0.11.5 `orthogonally_resize`.
    """
    window = _check_int('orthogonally_resize', 'window', window, 1)
    a = np.asarray(a)
    new_shape = tuple(int(d) for d in new_shape)
    if len(new_shape) != a.ndim:
        raise ValueError('new_shape %s has %d entries for an array of shape %s' % (new_shape, len(new_shape), a.shape))
    norm = np.linalg.norm(a)
    for axis, (d1, d2) in enumerate(zip(a.shape, new_shape)):
        k = -(-d2 // d1) if d1 else 1
        if k > 1:
            if d1 % window:
                raise ValueError(
                    'axis %d grows from %d to %d but %d is not a multiple of window=%d' % (axis, d1, d2, d1, window)
                )
            blocks = a.reshape(a.shape[:axis] + (d1 // window, window) + a.shape[axis + 1:])
            a = np.repeat(blocks, k, axis=axis).reshape(a.shape[:axis] + (d1 * k,) + a.shape[axis + 1:])
    a = a[tuple(slice(0, d) for d in new_shape)]
    return a / np.linalg.norm(a) * norm


# ------------------------------------------------------------------------------- open (files)


def _newline_is_one_byte(encoding):
    """True when, in files of `encoding`, every byte 0x0A is a line feed and a line start
    decodes from a fresh decoder (UTF-8, GBK, GB18030, Big5, Latin-1, ...), so line offsets
    can be found on the raw bytes. Not so for UTF-16/32, BOM-writing and stateful codecs."""
    try:
        name = codecs.lookup(encoding).name
        return '\n\r'.encode(encoding) == b'\n\r' and not name.startswith(('iso2022', 'utf-7', 'hz'))
    except (LookupError, UnicodeError):
        return False


def data_file(data_dir, name):
    """The path of data file `name` (e.g. "zh/sentiment.zip") in `data_dir`, checked to exist.

    The examples read public files from a data folder (`--data-dir`, default
    `$BERT4KERAS_DATA` or `<repo>/../shared/data`) laid out as its SOURCES.md lists them;
    `python examples/get_data.py --data-dir DIR` downloads them there with their checksums.

    Args:
        data_dir: str, the folder.
        name: str, the file's path inside it, with "/" separators.
    Returns:
        str, `os.path.join(data_dir, *name.split("/"))`.
    Raises:
        FileNotFoundError: the file is not there; the message names it, the folder, SOURCES.md
            and get_data.py.
    """
    path = os.path.join(data_dir, *name.split('/'))
    if not os.path.isfile(path):
        folder = os.path.abspath(data_dir)
        state = '' if os.path.isdir(folder) else ' (the folder does not exist)'
        raise FileNotFoundError(
            'data file %s not found in %s%s. The examples read public data files listed in the data '
            "folder's SOURCES.md; `python examples/get_data.py --data-dir %s` downloads them (with checksums), "
            'or pass --data-dir / set BERT4KERAS_DATA to a folder that has them.' % (name, folder, state, data_dir)
        )
    return path


#: What TensorFlow's native libraries write to file descriptor 2 while being imported: absl's note, then
#: INFO/WARNING/ERROR lines from these sources (oneDNN, CPU features, CUDA probing), with a continuation line.
_STARTUP_CHATTER = re.compile(
    r'WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR'
    r'|[IWE]\d{4} [\d:.]+\s+\d+ (port|cudart_stub|cpu_feature_guard|cuda_dnn|cuda_fft|cuda_blas|cuda_executor'
    r'|cuda_diagnostics|cuda_platform|gpu_device)\.cc:\d+\]'
    r'|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.'
)


@contextlib.contextmanager
def quiet_tensorflow_startup():
    """Hide TensorFlow's C++ start-up lines while importing it (directly or through `import keras`).

        with quiet_tensorflow_startup():
            import keras

    TensorFlow (2.21) writes its oneDNN, CPU-feature and CUDA-probing lines straight to the
    process's stderr before its logging is set up, so `TF_CPP_MIN_LOG_LEVEL` does not hide
    them, and it writes them twice; its CUDA probe (`cuInit`) follows at the first op, so the
    block lists the GPUs once TensorFlow is imported (which leaves the devices configurable:
    memory growth, visible devices). Inside the block, file descriptor 2 goes to a temporary
    file; at the end the lines matching those messages are dropped and everything else
    (Python warnings, errors, anything else a library printed) is written to stderr, in
    order. Nothing is hidden when fd 2 cannot be redirected (then the block just runs).
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
            if 'tensorflow' in sys.modules:  # probe the GPUs now (cuInit), as TF would at its first op;
                # listing them leaves the devices configurable (memory growth, visibility)
                sys.modules['tensorflow'].config.list_physical_devices('GPU')
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode('utf-8', 'replace').splitlines(keepends=True)
            kept = ''.join(line for line in lines if not _STARTUP_CHATTER.match(line))
            if kept:
                sys.stderr.write(kept)
                sys.stderr.flush()


class open:
    """bert4keras's file class: the builtin `open`, plus random access to a file's lines.

    Imported as `from bert4keras.snippets import open`, it replaces the builtin in a script,
    so `open(path)`, `open(path, 'w', encoding='utf-8')`, `json.load(open(path))`, `with`
    blocks, iteration over lines, `read`, `write` work as usual: methods and attributes not
    defined here (`read`, `readline`, `write`, `close`, `encoding`, `closed`, ...) are the
    underlying file object's (`self.file`).

    With `indexable`, the start of every line is recorded, so `f[i]` is line `i` (read with a
    seek, without reading the lines before it) and `len(f)` the number of lines; iterating
    goes through `f[0], f[1], ...` (lines end at `\\n`, `\\r\\n` or, in text mode, `\\r`, as
    when reading). Offsets are byte positions (what `tell()` gives at a line start), so a
    cache file written by bert4keras 0.11.5 for the same file is valid here and back.

    Args:
        name: path (str or os.PathLike), as for the builtin.
        mode, encoding, errors: as for the builtin (`encoding=None` is the locale's).
        indexable: False; True (index the lines on opening, one pass over the file); or the
            path of a JSON cache of the offsets: read when it exists, else the file is
            indexed and the list written there (atomically: a temporary file beside it, then
            renamed). A cache is not checked against the file beyond its size: delete it when
            the file changes.
    Attributes:
        file: the builtin file object. offsets: list of int (None when not indexable).
    Raises:
        the builtin's errors (FileNotFoundError, ...); TypeError: `indexable` is not a bool,
        str or path; ValueError: `indexable` with a file not opened for reading, or a cache
        that is not a list of offsets within the file (the message names the cache).
    Source: bert4keras 0.11.5 `open`.
    """

    def __init__(self, name, mode='r', encoding=None, errors=None, indexable=False):
        if not (isinstance(indexable, (bool, str)) or isinstance(indexable, os.PathLike)):
            raise TypeError('indexable must be True, False or a cache path, got %s' % type(indexable).__name__)
        self.file = builtins.open(name, mode, encoding=encoding, errors=errors)
        self.offsets = None
        self._iterator = None
        if indexable is False:
            return
        try:
            if not self.file.readable():
                raise ValueError('indexable needs a file opened for reading, got mode %r' % mode)
            cache = None if indexable is True else os.fspath(indexable)
            if cache is not None and os.path.exists(cache):
                self.offsets = self._read_cache(cache)
            else:
                self.create_indexes()
                if cache is not None:
                    self._write_cache(cache)
        except BaseException:
            self.file.close()
            raise

    def create_indexes(self):
        """(Re)build `offsets`, the byte position of the start of each line, and rewind."""
        binary = 'b' in self.file.mode
        if binary or _newline_is_one_byte(self.file.encoding):
            offsets = self._byte_offsets(self.file if binary else self.file.buffer, not binary)
        else:
            offsets = None
        if offsets is None:  # decode to find the lines, as bert4keras did (slower)
            self.file.seek(0)
            offsets, offset = [], 0
            while self.file.readline():
                offsets.append(offset)
                offset = self.file.tell()
        self.file.seek(0)
        self.offsets = offsets

    @staticmethod
    def _byte_offsets(raw, text_mode):
        """Line starts found on the bytes; None when a lone `\\r` (a line end in text mode)
        makes them differ from the decoded lines."""
        raw.seek(0)
        offsets, offset = [], 0
        for line in raw:
            if text_mode and b'\r' in line and line.find(b'\r') != len(line) - 2:
                return None
            offsets.append(offset)
            offset += len(line)
        return offsets

    def _read_cache(self, cache):
        try:
            with builtins.open(cache, encoding='utf-8') as f:
                offsets = json.load(f)
        except ValueError as e:
            raise ValueError(
                'index cache %r is not valid JSON (%s): delete it to rebuild the index' % (cache, e)
            ) from None
        size = os.fstat(self.file.fileno()).st_size
        if not (
            isinstance(offsets, list)
            and all(type(o) is int for o in offsets)
            and all(0 <= a < b for a, b in zip(offsets, offsets[1:]))
            and (not offsets or (offsets[0] == 0 and offsets[-1] < size))
        ):
            raise ValueError(
                'index cache %r does not hold increasing line offsets within %r (%d bytes): '
                'delete it to rebuild the index' % (cache, self.file.name, size)
            )
        return offsets

    def _write_cache(self, cache):
        import tempfile

        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(cache)), prefix='.index-', suffix='.tmp')
        try:
            with builtins.open(fd, 'w', encoding='utf-8') as f:
                json.dump(self.offsets, f)
            os.replace(tmp, cache)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    def __getitem__(self, i):
        if self.offsets is None:
            raise TypeError('this file is not indexable: open it with indexable=True')
        self.file.seek(self.offsets[i])
        return self.file.readline()

    def __len__(self):
        if self.offsets is None:
            raise TypeError('this file is not indexable: open it with indexable=True')
        return len(self.offsets)

    def __iter__(self):
        if self.offsets is None:
            return self
        return (self[i] for i in range(len(self.offsets)))

    def __next__(self):
        if self.offsets is None:
            return next(self.file)
        if self._iterator is None:
            self._iterator = iter(self)
        return next(self._iterator)

    next = __next__  # bert4keras 0.11.5 (Python 2 name)

    def seek(self, offset=0, whence=0):
        """As the file's `seek`, with bert4keras's default `offset=0` (rewind)."""
        return self.file.seek(offset, whence)

    def __getattr__(self, name):
        if name == 'file':  # not set yet: __init__ failed
            raise AttributeError(name)
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.file.close()

    def __repr__(self):
        return '<bert4keras.snippets.open %r mode=%r%s>' % (
            self.file.name, self.file.mode, '' if self.offsets is None else ' lines=%d' % len(self.offsets)
        )


from bert4keras.serving import WebServing  # noqa: E402,F401  (0.11.5's import path; no Keras, no bottle at import)


def _backup_and_restore_class():
    import keras

    from bert4keras import _keras_internals as internals

    class BackupAndRestore(keras.callbacks.BackupAndRestore):
        """`keras.callbacks.BackupAndRestore` that a script restores *before* `fit`, with the
        random-seed states of the model's layers.

        Keras' callback backs up the weights and optimizer state (every epoch or `save_freq`
        batches) and, at the start of `fit`, restores them and the epoch. Two things are left for
        an exact resume: the position in the data within an epoch, and the random state of dropout,
        which weight files leave out: the layers' `SeedGenerator` states, and on torch the global
        generator that Keras' unseeded torch dropout draws from. Here `restore(model)` loads the
        backup before `fit`, so the script can read `model.optimizer.iterations` and position its
        data stream there (and pass `initial_epoch`); the random states are saved beside each
        backup (the last three kept) and restored with it, torch's just before the first step
        (setting up `fit` draws from it). `on_train_begin` restores nothing. A killed and resumed
        run then ends with the weights of an uninterrupted one, on every backend.

        Args: as `keras.callbacks.BackupAndRestore` (`backup_dir`, `save_freq`,
        `double_checkpoint`, `delete_checkpoint`).
        Source: keras.callbacks.BackupAndRestore (Keras 3).
        """

        _torch_rng_state = None  # torch's global generator after the last step (a uint8 array)

        def _seed_states(self):
            return [v for v in self.model.non_trainable_variables if "seed_generator_state" in v.path]

        def _seeds_path(self, step):
            return os.path.join(self.backup_dir, f"seeds-{step}.npz")

        # a protected Keras hook (listed in bert4keras/_keras_internals.py)
        def _save_model(self):
            step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
            super()._save_model()  # on JAX this also syncs the variables from the training state
            states = {f"arr_{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(self._seed_states())}
            if self._torch_rng_state is not None:
                states["torch_rng_state"] = self._torch_rng_state
            tmp = os.path.join(self.backup_dir, "seeds.tmp.npz")
            np.savez(tmp, **states)
            os.replace(tmp, self._seeds_path(step))
            saved = sorted(int(name[len("seeds-"):-len(".npz")]) for name in os.listdir(self.backup_dir)
                           if name.startswith("seeds-") and name.endswith(".npz"))
            for old in saved[:-3]:
                os.remove(self._seeds_path(old))

        def restore(self, model):
            """Load the backup into `model` (built and compiled) and its optimizer, if there is one.

            Returns:
                bool, whether a backup was restored. The step to continue from is then
                `model.optimizer.iterations`.
            Raises:
                FileNotFoundError: the backup has weights but not the seed states of their step.
            """
            if not os.path.exists(self._weights_path):
                return False
            self.set_model(model)
            super().on_train_begin()
            internals.forget_initial_epoch(model)  # the script passes initial_epoch to fit itself
            step = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
            if not os.path.exists(self._seeds_path(step)):
                raise FileNotFoundError(f"{self._seeds_path(step)}: the seed states of the backup at step {step}")
            with np.load(self._seeds_path(step)) as seeds:
                for i, variable in enumerate(self._seed_states()):
                    variable.assign(seeds[f"arr_{i}"])
                # Set just before the first step (on_train_batch_begin): setting up `fit` draws from it too.
                self._torch_rng_state = seeds["torch_rng_state"] if "torch_rng_state" in seeds else None
            return True

        def on_train_begin(self, logs=None):
            pass

        # On torch, the generator is carried from one step to the next past anything else that draws
        # from it in between (`fit` set-up, a new data iterator each `fit`), so that the steps see
        # the same draws whether a run went through in one `fit` or was resumed in several.
        def on_train_batch_begin(self, batch, logs=None):
            if self._torch_rng_state is not None:
                import torch

                torch.set_rng_state(torch.from_numpy(self._torch_rng_state))

        def on_train_batch_end(self, batch, logs=None):
            if keras.backend.backend() == "torch":
                import torch

                self._torch_rng_state = torch.get_rng_state().numpy()
            super().on_train_batch_end(batch, logs)

    return BackupAndRestore


def __getattr__(name):
    # `BackupAndRestore` subclasses a Keras callback: Keras is imported when it is first used,
    # so that importing this module stays NumPy-only.
    if name == "BackupAndRestore":
        cls = globals()["BackupAndRestore"] = _backup_and_restore_class()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
