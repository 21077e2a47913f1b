"""`parallel_apply` and `parallel_apply_generator`: multiprocess / multithread map.

References are the serial `map` of the same function. Pure Python and NumPy, no Keras, so
results cannot depend on the Keras backend: the file runs only under
``KERAS_BACKEND=tensorflow`` (the default backend) and is skipped on the others, to keep
the three-backend CI budget.
"""

import contextlib
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

from bert4keras.snippets import parallel_apply, parallel_apply_generator

if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
    pytest.skip(
        "parallel_apply does not use Keras: tested once, under KERAS_BACKEND=tensorflow",
        allow_module_level=True,
    )

# Every test runs under a 30 s SIGALRM deadline (see `_no_leaked_workers`), so a hang fails.
MODES = [pytest.param(False, id="processes"), pytest.param(True, id="threads")]


def square_slowly(x):
    """Top-level (picklable) function; uneven sleeps make completion order differ from input order."""
    time.sleep(0.002 * ((x * 7) % 5))
    return x * x


def fail_on_13(x):
    if x == 13:
        raise ZeroDivisionError("no thirteen")
    return x


def draw(_):
    time.sleep(0.02)  # keep every worker busy so each takes some items
    return os.getpid(), float(np.random.random())


def no_children_left(timeout=5.0):
    end = time.monotonic() + timeout
    while multiprocessing.active_children() and time.monotonic() < end:
        time.sleep(0.05)
    return not multiprocessing.active_children()


@contextlib.contextmanager
def deadline(seconds):
    """Fail instead of hanging: SIGALRM interrupts the waiting main thread.

    `pytest.fail` raises a BaseException; a TimeoutError (an OSError) would be swallowed by
    `multiprocessing`'s `waitpid` wrapper.
    """

    def on_alarm(signum, frame):
        pytest.fail(f"no result within {seconds} s: parallel_apply hangs")

    if not hasattr(signal, "setitimer"):  # not on Windows: run without a deadline
        yield
        return
    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, on_alarm)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        # Restore an enclosing deadline (the autouse fixture's) with the time it has left.
        signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3) if outer else 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def _no_leaked_workers():
    state = np.random.get_state()
    with deadline(30):
        yield
    np.random.set_state(state)
    assert no_children_left(), f"live child processes: {multiprocessing.active_children()}"


@pytest.mark.parametrize("dummy", MODES)
def test_ordered_results_equal_serial_map(dummy):
    items = list(range(40))
    out = parallel_apply(square_slowly, items, workers=3, max_queue_size=4, dummy=dummy, unordered=False)
    assert out == list(map(square_slowly, items))


@pytest.mark.parametrize("dummy", MODES)
def test_unordered_results_are_the_same_multiset(dummy):
    items = list(range(40)) + [5, 5, 5]
    out = parallel_apply(square_slowly, items, workers=3, max_queue_size=2, dummy=dummy)
    assert sorted(out) == sorted(map(square_slowly, items))


@pytest.mark.parametrize("dummy", MODES)
def test_callback_in_input_order(dummy):
    got = []
    ret = parallel_apply(square_slowly, range(30), 3, 2, callback=got.append, dummy=dummy, unordered=False)
    assert ret is None
    assert got == [x * x for x in range(30)]


@pytest.mark.parametrize("dummy", MODES)
def test_callback_unordered_gets_every_result(dummy):
    got = []
    assert parallel_apply(square_slowly, range(30), 3, 2, callback=got.append, dummy=dummy) is None
    assert sorted(got) == [x * x for x in range(30)]


def test_closure_runs_in_forked_workers():
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("closures need the 'fork' start method")
    offset = 1000
    out = parallel_apply(lambda x: x + offset, range(10), 2, 2, unordered=False)
    assert out == [x + 1000 for x in range(10)]


@pytest.mark.parametrize("dummy", MODES)
def test_generator_yields_index_result_pairs_covering_all_indices(dummy):
    items = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    pairs = list(parallel_apply_generator(square_slowly, items, 2, 3, dummy=dummy))
    assert sorted(i for i, _ in pairs) == list(range(len(items)))
    assert all(r == items[i] ** 2 for i, r in pairs)


def test_streamed_iterable_is_read_lazily():
    # A generator far longer than the queue: it is never read more than
    # max_queue_size + workers items ahead of what has been yielded.
    workers, max_queue_size = 2, 3
    state = {"read": 0}

    def stream():
        for x in range(200):
            state["read"] += 1
            yield x

    seen, max_ahead = set(), 0
    for index, result in parallel_apply_generator(square_slowly, stream(), workers, max_queue_size):
        assert result == index * index
        seen.add(index)
        max_ahead = max(max_ahead, state["read"] - len(seen))
    assert seen == set(range(200))
    assert max_ahead <= max_queue_size + workers


@pytest.mark.parametrize("dummy", MODES)
def test_exception_in_func_propagates_with_index(dummy):
    with deadline(10), pytest.raises(RuntimeError, match=r"item 13\b.*no thirteen") as info:
        parallel_apply(fail_on_13, range(50), 2, 2, dummy=dummy)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_dead_worker_raises_instead_of_hanging():
    with deadline(10), pytest.raises(RuntimeError, match="died"):
        parallel_apply(os._exit, [0, 0, 0, 0], 2, 2)


def test_unpicklable_item_names_its_index():
    with pytest.raises(TypeError, match="item 2"):
        parallel_apply(str, [1, 2, lambda: 0, 4], 2, 2)


def return_a_closure(x):
    return lambda: x  # cannot be pickled back to the caller


def test_unpicklable_result_raises_with_index():
    with deadline(10), pytest.raises(RuntimeError, match=r"item \d+ of iterable"):
        parallel_apply(return_a_closure, range(4), 2, 2)


def test_random_seeds_true_gives_each_worker_its_own_draws():
    np.random.seed(0)  # forked workers would all inherit this state without reseeding
    out = parallel_apply(draw, range(12), 3, 3)
    by_worker = {}
    for pid, x in out:
        by_worker.setdefault(pid, []).append(x)
    assert len(by_worker) >= 2
    firsts = [xs[0] for xs in by_worker.values()]
    assert len(set(firsts)) == len(firsts)
    assert len({x for _, x in out}) == len(out)


def test_random_seeds_false_repeats_the_parents_state():
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("inheriting the parent's RNG state needs the 'fork' start method")
    np.random.seed(0)
    expected = np.random.RandomState(0).random_sample()
    out = parallel_apply(draw, range(6), 2, 2, random_seeds=False)
    firsts = {}
    for pid, x in out:
        firsts.setdefault(pid, x)
    assert all(x == expected for x in firsts.values())


def test_seed_list_gives_reproducible_draws():
    # One worker, so which worker takes which item is fixed; its draws are the seeded stream.
    first = parallel_apply(draw, range(5), 1, 2, random_seeds=[123], unordered=False)
    second = parallel_apply(draw, range(5), 1, 2, random_seeds=[123, 7], unordered=False)
    expected = list(np.random.RandomState(123).random_sample(5))
    assert [x for _, x in first] == expected
    assert [x for _, x in second] == expected


def test_seed_list_seeds_worker_k_with_seed_k():
    seeds = [11, 22]
    out = parallel_apply(draw, range(8), 2, 2, random_seeds=seeds)
    streams = [list(np.random.RandomState(s).random_sample(8)) for s in seeds]
    by_worker = {}
    for pid, x in out:
        by_worker.setdefault(pid, []).append(x)
    for xs in by_worker.values():
        assert any(xs == stream[: len(xs)] for stream in streams)


def test_break_from_generator_leaves_no_child_processes():
    for index, _ in parallel_apply_generator(square_slowly, range(10_000), 2, 4):
        break
    assert no_children_left()


def test_close_mid_stream_stops_workers():
    generator = parallel_apply_generator(square_slowly, iter(range(10_000)), 2, 4)
    next(generator)
    assert multiprocessing.active_children()
    generator.close()
    assert no_children_left()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(workers=0, max_queue_size=1), "workers"),
        (dict(workers=1.5, max_queue_size=1), "workers"),
        (dict(workers=2, max_queue_size=0), "max_queue_size"),
        (dict(workers=3, max_queue_size=1, random_seeds=[1, 2]), "2 seeds for 3 workers"),
        (dict(workers=1, max_queue_size=1, random_seeds=[-1]), "random_seeds"),
    ],
)
def test_bad_arguments_raise_value_error_before_starting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        parallel_apply_generator(square_slowly, range(3), **kwargs)
    assert not multiprocessing.active_children()
