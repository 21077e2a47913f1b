"""bert4keras.snippets.AutoRegressiveDecoder on NumPy toy models whose answers can be enumerated.

The toy "language model" is a transition table: the next-token logits are `table[prev]` plus a
bias chosen by the sample's input and one chosen by the position (so that sequences with the same
transitions do not tie), so every sequence's log-probability is a sum of table entries and the
best sequence can be found by listing all of them.
"""

import collections
import itertools

import keras
import numpy as np
import pytest

from bert4keras.snippets import AutoRegressiveDecoder, softmax

VOCAB = 5
END = 0
START = 4


def log_softmax(x):
    x = np.asarray(x, dtype='float64')
    return x - np.log(np.sum(np.exp(x - x.max()))) - x.max()


def random_table(seed, vocab=VOCAB, scale=2.0):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=scale, size=(vocab + 1, vocab)), rng.normal(size=(3, 16, vocab))


class Markov(AutoRegressiveDecoder):
    """Logits `table[prev] + bias[inputs[0][0], position]`; row `vocab` of the table is used before any token.

    Every call is checked against the contract: inputs and output_ids have one row per beam.
    """

    def __init__(self, table, bias, **kwargs):
        super().__init__(**kwargs)
        self.table, self.bias = table, bias
        self.calls = 0

    def logits(self, inputs, output_ids):
        assert output_ids.ndim == 2 and all(i.shape[0] == output_ids.shape[0] for i in inputs)
        assert all((i == i[:1]).all() for i in inputs)  # one sample, repeated per row
        prev = output_ids[:, -1] if output_ids.shape[1] else np.full(len(output_ids), len(self.table) - 1)
        self.calls += 1
        return self.table[prev] + self.bias[inputs[0][:, 0], output_ids.shape[1]]

    @AutoRegressiveDecoder.wraps(default_rtype='logits')
    def predict(self, inputs, output_ids, states):
        return self.logits(inputs, output_ids)

    def step_logprobs(self, condition, prefix):
        """Reference log-probabilities of the next token after `prefix` (a list of ids)."""
        prev = prefix[-1] if prefix else len(self.table) - 1
        return log_softmax(self.table[prev] + self.bias[condition, len(prefix)])

    def sequence_logprob(self, condition, seq, start=()):
        full = list(start) + list(seq)
        return sum(self.step_logprobs(condition, full[:t])[full[t]] for t in range(len(start), len(full)))


class MarkovProbas(Markov):
    """The same model, declared as returning probabilities."""

    @AutoRegressiveDecoder.wraps(default_rtype='probas')
    def predict(self, inputs, output_ids, states):
        return softmax(self.logits(inputs, output_ids))


def finished(seq, decoder, min_ends):
    return len(seq) >= decoder.minlen and decoder.end_id is not None and list(seq).count(decoder.end_id) >= min_ends


def reference_beam(decoder, condition, topk, min_ends=1):
    """Beam search as documented, on Python lists: keep the topk extensions by total log-probability;
    return the best one when it is finished, drop the other finished ones."""
    start = [] if decoder.start_id is None else [decoder.start_id]
    beams = [(0.0, start)]
    for _ in range(decoder.maxlen):
        candidates = [
            (score + lp, seq + [token])
            for score, seq in beams
            for token, lp in enumerate(decoder.step_logprobs(condition, seq))
        ]
        candidates.sort(key=lambda c: -c[0])
        candidates = candidates[:topk]
        if finished(candidates[0][1], decoder, min_ends):
            return candidates[0][1]
        beams = [c for c in candidates if not finished(c[1], decoder, min_ends)]
        topk = len(beams)
    return beams[0][1]


# ------------------------------------------------------------------------- beam search and greedy


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('cls', [Markov, MarkovProbas])
def test_wide_beam_finds_the_most_probable_sequence(seed, cls):
    table, bias = random_table(seed)
    decoder = cls(table, bias, start_id=START, end_id=None, maxlen=4)
    condition = seed % 3
    everything = list(itertools.product(range(VOCAB), repeat=4))
    best = max(everything, key=lambda s: decoder.sequence_logprob(condition, s, [START]))
    out = decoder.beam_search([np.array([condition, 1, 2])], topk=len(everything))
    np.testing.assert_array_equal(out, [START, *best])


def test_beam_search_beats_greedy_on_a_garden_path():
    # 1 is the likelier first token, but every continuation of 2 is far likelier than those of 1.
    table = np.log(
        np.array(
            [
                [0.2, 0.2, 0.2, 0.2, 0.2],
                [0.2, 0.2, 0.2, 0.2, 0.2],
                [0.01, 0.01, 0.01, 0.96, 0.01],
                [0.2, 0.2, 0.2, 0.2, 0.2],
                [0.2, 0.2, 0.2, 0.2, 0.2],
                [0.01, 0.55, 0.43, 0.005, 0.005],
            ]
        )
    )
    decoder = Markov(table, np.zeros((1, 16, VOCAB)), start_id=None, end_id=None, maxlen=2)
    np.testing.assert_array_equal(decoder.greedy([[0]]), [1, 0])
    np.testing.assert_array_equal(decoder.beam_search([[0]], topk=2), [2, 3])


@pytest.mark.parametrize('seed', range(8))
@pytest.mark.parametrize('topk', [1, 2, 3, 7])
@pytest.mark.parametrize('min_ends', [1, 2])
def test_beam_search_matches_the_documented_rule(seed, topk, min_ends):
    table, bias = random_table(seed + 100, scale=1.0)
    decoder = Markov(table, bias, start_id=START, end_id=END, maxlen=7, minlen=2)
    out = decoder.beam_search([np.array([seed % 3])], topk=topk, min_ends=min_ends)
    np.testing.assert_array_equal(out, reference_beam(decoder, seed % 3, topk, min_ends))


@pytest.mark.parametrize('seed', range(8))
def test_wide_beam_with_end_token_matches_enumeration(seed):
    # With a beam holding every candidate, the rule reads: at step t, among all sequences of
    # length t whose first t-1 tokens are unfinished, return the best one if it is finished.
    table, bias = random_table(seed + 200, scale=1.0)
    maxlen = 4
    decoder = Markov(table, bias, start_id=None, end_id=END, maxlen=maxlen)
    expected = None
    for t in range(1, maxlen + 1):
        live = [s for s in itertools.product(range(VOCAB), repeat=t) if END not in s[:-1]]
        best = max(live, key=lambda s: decoder.sequence_logprob(1, s))
        if best[-1] == END or t == maxlen:
            expected = best
            break
    out = decoder.beam_search([np.array([1])], topk=VOCAB**maxlen)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize('seed', range(10))
def test_greedy_follows_the_argmax_path(seed):
    table, bias = random_table(seed + 300)
    decoder = Markov(table, bias, start_id=START, end_id=END, maxlen=6)
    seq = [START]
    for _ in range(6):
        seq.append(int(np.argmax(decoder.step_logprobs(2, seq))))
        if seq[-1] == END:
            break
    out = decoder.greedy([np.array([2])])
    np.testing.assert_array_equal(out, seq)
    np.testing.assert_array_equal(decoder.beam_search([np.array([2])], topk=1), out)


def test_greedy_and_beam_search_stop_at_the_first_end():
    table = np.full((VOCAB + 1, VOCAB), -5.0)
    table[:, END] = 5.0  # the end token is by far the likeliest everywhere
    decoder = Markov(table, np.zeros((1, 16, VOCAB)), start_id=START, end_id=END, maxlen=10)
    np.testing.assert_array_equal(decoder.greedy([[0]]), [START, END])
    np.testing.assert_array_equal(decoder.beam_search([[0]], topk=3), [START, END])
    assert decoder.calls == 2  # one step each


# ------------------------------------------------------------------------- length rules


def markov_sampler(seed=0, **kwargs):
    table, bias = random_table(seed, scale=1.0)
    table[:, END] += 1.0  # frequent ends, so that every rule gets exercised
    return Markov(table, bias, **kwargs)


def check_length_rules(seq, decoder, min_ends):
    total = decoder.maxlen + (decoder.start_id is not None)
    assert len(seq) <= total
    if decoder.start_id is not None:
        assert seq[0] == decoder.start_id
    assert not finished(seq[:-1], decoder, min_ends), 'kept decoding after finishing'
    if len(seq) < total:
        assert finished(seq, decoder, min_ends), 'stopped before maxlen without finishing'


@pytest.mark.parametrize('minlen', [1, 4])
@pytest.mark.parametrize('min_ends', [1, 2])
@pytest.mark.parametrize('start_id', [START, None])
def test_random_sample_length_rules(minlen, min_ends, start_id):
    decoder = markov_sampler(start_id=start_id, end_id=END, maxlen=8, minlen=minlen)
    np.random.seed(0)
    results = decoder.random_sample([np.array([1])], n=200, min_ends=min_ends)
    assert len(results) == 200
    for seq in results:
        check_length_rules(seq, decoder, min_ends)
    lengths = collections.Counter(len(s) for s in results)
    assert len(lengths) > 2  # the rules were met at several lengths, maxlen included
    assert max(lengths) == decoder.maxlen + (start_id is not None)
    if minlen > 1:
        assert min(lengths) == minlen
        # minlen postpones finishing without masking the end token (as in bert4keras)
        assert any(END in s[:minlen - 1] for s in results)
    for seq in results:
        if finished(seq, decoder, min_ends) and minlen == 1:
            assert seq[-1] == END and list(seq).count(END) == min_ends


@pytest.mark.parametrize('minlen', [1, 3])
@pytest.mark.parametrize('min_ends', [1, 2])
@pytest.mark.parametrize('seed', range(4))
def test_beam_search_and_greedy_length_rules(minlen, min_ends, seed):
    decoder = markov_sampler(seed, start_id=START, end_id=END, maxlen=6, minlen=minlen)
    for out in [decoder.greedy([[0]], min_ends=min_ends), decoder.beam_search([[0]], topk=3, min_ends=min_ends)]:
        check_length_rules(out, decoder, min_ends)


def test_minlen_postpones_the_end():
    table = np.full((VOCAB + 1, VOCAB), -5.0)
    table[:, END] = 5.0
    decoder = Markov(table, np.zeros((1, 16, VOCAB)), start_id=START, end_id=END, maxlen=10, minlen=4)
    np.testing.assert_array_equal(decoder.greedy([[0]]), [START, END, END, END])
    np.testing.assert_array_equal(decoder.beam_search([[0]], topk=2), [START, END, END, END])
    np.random.seed(0)
    assert all(len(s) == 4 for s in decoder.random_sample([[0]], n=20))


@pytest.mark.parametrize('method', ['greedy', 'beam_search', 'random_sample'])
def test_no_end_id_runs_to_maxlen(method):
    table, bias = random_table(5)
    table[:, END] += 10.0
    decoder = Markov(table, bias, start_id=None, end_id=None, maxlen=5)
    np.random.seed(0)
    outs = {
        'greedy': lambda: [decoder.greedy([[0]])],
        'beam_search': lambda: [decoder.beam_search([[0]], topk=3)],
        'random_sample': lambda: decoder.random_sample([[0]], n=10),
    }[method]()
    assert [len(s) for s in outs] == [5] * len(outs)
    assert decoder.calls == 5


def test_start_id_none_starts_from_no_token():
    seen = []

    class Recorder(Markov):
        @AutoRegressiveDecoder.wraps(default_rtype='logits')
        def predict(self, inputs, output_ids, states):
            seen.append(output_ids.shape)
            return self.logits(inputs, output_ids)

    table, bias = random_table(1)
    decoder = Recorder(table, bias, start_id=None, end_id=None, maxlen=3)
    out = decoder.beam_search([[0]], topk=2)
    assert seen == [(1, 0), (2, 1), (2, 2)] and out.shape == (3,)
    assert np.issubdtype(out.dtype, np.integer)


# ------------------------------------------------------------------------- sampling


def tempered(probas, temperature):
    p = probas ** (1.0 / temperature)
    return p / p.sum()


def allowed_top_k(probas, k):
    return set(np.flatnonzero(probas >= np.sort(probas)[-k]))


def allowed_top_p(probas, p):
    # a token is in the nucleus when the tokens likelier than it hold less than p
    return {i for i in range(len(probas)) if probas[probas > probas[i]].sum() < p}


def sample_steps(decoder, results, condition, start):
    """Yield (distribution, emitted token) for every sampled position."""
    for seq in results:
        seq = list(seq)
        for t in range(len(start), len(seq)):
            yield np.exp(decoder.step_logprobs(condition, seq[:t])), seq[t]


VOCAB_WIDE = 12


def wide_sampler(seed):
    table, bias = random_table(seed, vocab=VOCAB_WIDE, scale=1.5)
    return Markov(table, bias, start_id=START, end_id=END, maxlen=6)


def first_tokens(topk=None, topp=None, temperature=1):
    decoder = wide_sampler(0)
    np.random.seed(0)
    results = decoder.random_sample([[1]], n=1000, topk=topk, topp=topp, temperature=temperature)
    return {int(s[1]) for s in results}, np.exp(decoder.step_logprobs(1, [START]))


@pytest.mark.parametrize('topk', [1, 3, 6])
def test_top_k_never_leaves_the_k_likeliest(topk):
    for seed in range(40):
        decoder = wide_sampler(seed % 4)
        np.random.seed(seed)
        results = decoder.random_sample([[1]], n=8, topk=topk, temperature=0.7)
        for probas, token in sample_steps(decoder, results, 1, [START]):
            assert token in allowed_top_k(probas, topk)
    emitted, probas = first_tokens(topk=topk)
    assert emitted == allowed_top_k(probas, topk)  # every allowed token does occur


@pytest.mark.parametrize('topp,temperature', [(0.3, 1.0), (0.6, 1.0), (0.9, 1.0), (0.6, 2.0), (0.6, 0.5)])
def test_top_p_never_leaves_the_nucleus(topp, temperature):
    for seed in range(40):
        decoder = wide_sampler(seed % 4)
        np.random.seed(seed)
        results = decoder.random_sample([[1]], n=8, topp=topp, temperature=temperature)
        for probas, token in sample_steps(decoder, results, 1, [START]):
            assert token in allowed_top_p(tempered(probas, temperature), topp)
    emitted, probas = first_tokens(topp=topp, temperature=temperature)
    assert emitted == allowed_top_p(tempered(probas, temperature), topp)


def test_top_k_then_top_p():
    for seed in range(30):
        decoder = wide_sampler(seed % 3)
        np.random.seed(seed)
        results = decoder.random_sample([[2]], n=8, topk=5, topp=0.7)
        for probas, token in sample_steps(decoder, results, 2, [START]):
            kept = sorted(allowed_top_k(probas, 5))
            renormalised = np.zeros_like(probas)
            renormalised[kept] = probas[kept] / probas[kept].sum()
            assert token in allowed_top_p(renormalised, 0.7) and token in kept


@pytest.mark.parametrize(
    'topk,topp,temperature', [(None, None, 1.0), (4, None, 1.0), (None, 0.8, 1.0), (None, None, 0.6), (3, 0.9, 1.5)]
)
@pytest.mark.parametrize('cls', [Markov, MarkovProbas])
def test_first_token_frequencies_follow_the_truncated_distribution(topk, topp, temperature, cls):
    table, bias = random_table(7, vocab=VOCAB_WIDE, scale=1.0)
    decoder = cls(table, bias, start_id=START, end_id=None, maxlen=1)
    np.random.seed(1)
    n = 6000
    results = decoder.random_sample([[0]], n=n, topk=topk, topp=topp, temperature=temperature)
    freq = np.bincount([s[1] for s in results], minlength=VOCAB_WIDE) / n
    p = tempered(np.exp(decoder.step_logprobs(0, [START])), temperature)
    if topk is not None:
        p = np.where(np.isin(np.arange(VOCAB_WIDE), sorted(allowed_top_k(p, topk))), p, 0)
        p /= p.sum()
    if topp is not None:
        p = np.where(np.isin(np.arange(VOCAB_WIDE), sorted(allowed_top_p(p, topp))), p, 0)
        p /= p.sum()
    np.testing.assert_allclose(freq, p, atol=4 * np.sqrt(0.25 / n))


def test_random_sample_is_repeatable_with_np_random_seed():
    decoder = wide_sampler(0)
    np.random.seed(3)
    a = decoder.random_sample([[0]], n=5, topp=0.9)
    np.random.seed(3)
    b = decoder.random_sample([[0]], n=5, topp=0.9)
    assert [list(s) for s in a] == [list(s) for s in b]


# ------------------------------------------------------------------------- wraps


def test_wraps_temperature_and_rtype():
    logits = np.array([[1.0, 2.0, -1.0, 0.5]])

    class L(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype='logits')
        def predict(self, inputs, output_ids, states):
            return logits

    class P(AutoRegressiveDecoder):
        @AutoRegressiveDecoder.wraps(default_rtype='probas', use_states=True)
        def predict(self, inputs, output_ids, states):
            return softmax(logits), 'unchanged'

    ids = np.zeros((1, 0), dtype=int)
    for t in [1.0, 0.5, 3.0]:
        expected = np.exp(logits / t) / np.exp(logits / t).sum()
        probas_l, states_l = L(None, None, 1).predict([], ids, None, t, 'probas')
        probas_p, states_p = P(None, None, 1).predict([], ids, None, t, 'probas')
        np.testing.assert_allclose(probas_l, expected, rtol=1e-12)
        np.testing.assert_allclose(probas_p, expected, rtol=1e-9)
        assert states_l is None and states_p == 'unchanged'
        np.testing.assert_allclose(L(None, None, 1).predict([], ids, None, t, 'logits')[0], np.log(expected), rtol=1e-12)
        np.testing.assert_allclose(P(None, None, 1).predict([], ids, None, t, 'logits')[0], np.log(expected), rtol=1e-9)
    with pytest.raises(ValueError):
        L(None, None, 1).predict([], ids, None, 1, 'scores')
    with pytest.raises(ValueError):
        AutoRegressiveDecoder.wraps(default_rtype='scores')


# ------------------------------------------------------------------------- states


class Cache:
    """A cache-like state: per-row lists, reordered through `reorder`, as a KV cache object would be."""

    def __init__(self, rows):
        self.rows = rows

    def reorder(self, indices):
        assert isinstance(indices, np.ndarray) and indices.dtype == np.int64 and indices.ndim == 1
        return Cache([list(self.rows[i]) for i in indices])


class Stateful(Markov):
    """Its states record each row's own history; every call checks them against output_ids.

    The states nest a NumPy array, a `reorder` object, a backend tensor and a dict in a tuple.
    """

    @AutoRegressiveDecoder.wraps(default_rtype='logits', use_states=True)
    def predict(self, inputs, output_ids, states):
        history, cache, extra = states
        seen = output_ids[:, :-1] if self.calls else output_ids[:, :0]
        np.testing.assert_array_equal(history, seen)
        assert [list(r) for r in cache.rows] == seen.tolist()
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(extra['tensor']), seen)
        assert extra['none'] is None
        logits = self.logits(inputs, output_ids)
        new = (
            output_ids.copy(),
            Cache([list(r) for r in output_ids]),
            {'tensor': keras.ops.convert_to_tensor(output_ids), 'none': None},
        )
        return logits, new

    def reorder_states(self, states, indices):
        self.reorders.append(indices)
        return super().reorder_states(states, indices)


def stateful(seed, **kwargs):
    table, bias = random_table(seed, scale=1.0)
    table[:, END] += 0.5
    decoder = Stateful(table, bias, **kwargs)
    decoder.reorders = []
    return decoder


def initial_states(decoder):
    empty = decoder.first_output_ids[:, :0]
    return (empty, Cache([[]]), {'tensor': keras.ops.convert_to_tensor(empty), 'none': None})


@pytest.mark.parametrize('seed', range(5))
def test_states_follow_the_beams(seed):
    decoder = stateful(seed, start_id=START, end_id=END, maxlen=7, minlen=3)  # no drop at the first step
    out = decoder.beam_search([[seed % 3]], topk=4, states=initial_states(decoder))
    np.testing.assert_array_equal(out, reference_beam(decoder, seed % 3, 4))
    assert len(decoder.reorders[0]) == 4 and not decoder.reorders[0].any()  # 1 row -> 4 rows
    # re-ranking moved rows around: the test saw non-trivial selections
    assert any((r != np.arange(len(r))).any() for r in decoder.reorders[1:])


def test_states_follow_when_finished_beams_are_dropped():
    decoder = stateful(0, start_id=START, end_id=END, maxlen=8)
    # min_ends=3 keeps beams alive long enough to see some finish and get dropped
    decoder.beam_search([[0]], topk=6, states=initial_states(decoder), min_ends=3)
    assert any(len(r) < 6 for r in decoder.reorders)


@pytest.mark.parametrize('seed', range(3))
def test_states_follow_random_samples(seed):
    decoder = stateful(seed, start_id=None, end_id=END, maxlen=6)
    np.random.seed(seed)
    results = decoder.random_sample([[1]], n=10, topk=3, states=initial_states(decoder))
    assert len(results) == 10
    assert len(decoder.reorders[0]) == 10 and not decoder.reorders[0].any()
    assert any(len(r) < 10 for r in decoder.reorders[1:])  # finished samples were dropped


def test_greedy_carries_states_without_reordering():
    decoder = stateful(0, start_id=START, end_id=END, maxlen=5)
    out = decoder.greedy([[0]], states=initial_states(decoder))
    assert decoder.reorders == [] and len(out) >= 2


def test_reorder_states_structures():
    decoder = AutoRegressiveDecoder(None, None, 1)
    Pair = collections.namedtuple('Pair', 'a b')
    x = np.arange(6).reshape(3, 2)
    idx = np.array([2, 2, 0])
    states = [x, (x, None), Pair(x, Cache([[0], [1], [2]])), {'k': keras.ops.convert_to_tensor(x)}]
    out = decoder.reorder_states(states, idx)
    assert isinstance(out, list) and isinstance(out[1], tuple) and isinstance(out[2], Pair)
    for a in [out[0], out[1][0], out[2].a, keras.ops.convert_to_numpy(out[3]['k'])]:
        np.testing.assert_array_equal(a, x[idx])
    assert out[1][1] is None and out[2].b.rows == [[2], [2], [0]]
    assert decoder.reorder_states(None, idx) is None


# ------------------------------------------------------------------------- last_token


def test_last_token_single_input():
    inp = keras.Input(shape=(None,), dtype='int32')
    x = keras.layers.Embedding(7, 4)(inp)
    out = keras.layers.Dense(3, activation='softmax')(keras.layers.Dense(5)(x))
    model = keras.Model(inp, out)
    decoder = AutoRegressiveDecoder(None, None, 1)
    tokens = np.array([[1, 2, 3, 4], [6, 5, 0, 1]])
    last = decoder.last_token(model)
    assert decoder.last_token(model) is last
    got = last.predict(tokens, verbose=0)
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, model.predict(tokens, verbose=0)[:, -1], rtol=1e-5, atol=1e-6)


def test_last_token_several_inputs_and_outputs():
    token_ids = keras.Input(shape=(None,), dtype='int32')
    segment_ids = keras.Input(shape=(None,), dtype='int32')
    x = keras.layers.Embedding(7, 4)(token_ids) + keras.layers.Embedding(2, 4)(segment_ids)
    probas = keras.layers.Dense(6, activation='softmax')(x)
    model = keras.Model([token_ids, segment_ids], [probas, keras.layers.Dense(2)(x)])
    decoder = AutoRegressiveDecoder(None, None, 1)
    tokens, segments = np.array([[1, 2, 3], [4, 5, 6]]), np.array([[0, 0, 1], [0, 1, 1]])
    got = decoder.last_token(model).predict([tokens, segments], verbose=0)
    assert got.shape == (2, 6)
    np.testing.assert_allclose(got, model.predict([tokens, segments], verbose=0)[0][:, -1], rtol=1e-5, atol=1e-6)
    other = keras.Model(token_ids, keras.layers.Dense(3)(keras.layers.Embedding(7, 4)(token_ids)))
    assert decoder.last_token(other) is not decoder.last_token(model)
