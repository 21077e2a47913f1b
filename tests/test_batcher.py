"""bert4keras.serving.Batcher: concurrent single calls become batched calls of one function,
each caller gets its own result, and failures reach every caller of the batch."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from bert4keras.serving import Batcher


def test_concurrent_calls_are_batched_and_answered_in_order():
    seen_threads = set()

    def square_all(items):
        seen_threads.add(threading.get_ident())
        time.sleep(0.01)  # a model call: the other requests queue meanwhile
        return [x * x for x in items]

    batcher = Batcher(square_all, max_batch_size=8, max_delay=0.05)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(batcher, range(64)))
    batcher.close()
    assert results == [x * x for x in range(64)]
    assert sum(batcher.batch_sizes) == 64
    assert max(batcher.batch_sizes) > 1 and max(batcher.batch_sizes) <= 8
    assert len(seen_threads) == 1  # func runs in the batcher's thread only


def test_a_failing_batch_fails_each_of_its_calls():
    def fail_on_negative(items):
        if any(x < 0 for x in items):
            raise ValueError("negative item")
        return items

    batcher = Batcher(fail_on_negative, max_batch_size=1)
    with pytest.raises(ValueError, match="negative item"):
        batcher(-1)
    assert batcher(2) == 2  # the batcher keeps serving
    wrong = Batcher(lambda items: items[:-1], max_batch_size=1)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
        wrong(1)
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher(1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_batch_size=0), "max_batch_size must be an int >= 1"),
    (dict(max_delay=-1), "max_delay must be a number of seconds >= 0"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Batcher(lambda items: items, **kwargs)
