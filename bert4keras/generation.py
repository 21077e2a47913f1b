"""Autoregressive generation: the decoder, the cached step, the predictors and the KV cache.

One step of cached decoding, top to bottom:

1. `AutoRegressiveDecoder` (`greedy`, `beam_search`, `random_sample`) calls its `predict(inputs,
   output_ids, states)`; with a model's `predictor(max_length)` that is a `CachedPredictor`.
2. `CachedPredictor.__call__` picks the tokens to run now (`Transformer.chunk_inputs`: the prompt
   and any given output at the first step, then the newest token) and feeds the step model by
   name: the model's own inputs for those tokens, ``Cache-Index`` (the position of the chunk's
   first token) and one ``Cache-<block>`` per Transformer block (zeros at the first step).
3. The step model (`build_step_model`, ``predictor.model``) is a Keras model over the builder's
   own layers (so its own weights), compiled once per input shape (`compiled_step`). Its call runs
   the family's graph, `Transformer.call_builder(inputs, step)`, with a `DecodingStep` holding
   ``Cache-Index`` and the caches: each block's self-attention takes its block's cache, and
   `MultiHeadAttention(..., cache=, cache_index=)` writes the chunk's keys/values at
   ``Cache-Index`` and attends over the whole cache; the masks and positions (`AttentionMask`,
   `PositionEmbedding`, relative and rotary positions) take ``start_index``/``key_length``.
   Its outputs: ``Output``, the model's output at the chunk's last position, and the updated
   ``Cache-<block>`` tensors.
4. The predictor returns ``Output`` as NumPy and a `KVCache` (the updated caches, which stay
   backend tensors, and the next position) as the decoder's states; the decoder reorders it
   with its beams (`KVCache.reorder`).

NumPy only at import time (so `bert4keras.snippets`, which re-exports `AutoRegressiveDecoder`
and `softmax` under their 0.11.5 import path, stays NumPy-only); the predictors import Keras.
"""

import functools

import numpy as np

from bert4keras._checks import _check_int, _check_number

def softmax(x, axis=-1):
    """NumPy softmax along `axis`, shifted by the maximum for stability."""
    x = np.asarray(x)
    x = np.exp(x - x.max(axis=axis, keepdims=True))
    return x / x.sum(axis=axis, keepdims=True)


def _log_softmax(x, axis=-1):
    x = np.asarray(x)
    x = x - x.max(axis=axis, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


class AutoRegressiveDecoder:
    """Base class for autoregressive generation: greedy, beam search and random sampling.

    Subclass it and write `predict(self, inputs, output_ids, states)` decorated with
    `@AutoRegressiveDecoder.wraps(default_rtype='probas'|'logits', use_states=False|True)`:

        class AutoTitle(AutoRegressiveDecoder):
            @AutoRegressiveDecoder.wraps(default_rtype='probas')
            def predict(self, inputs, output_ids, states):
                token_ids, segment_ids = inputs
                ...
                return self.last_token(model).predict([token_ids, segment_ids])

        autotitle = AutoTitle(start_id=None, end_id=tokenizer._token_end_id, maxlen=32)
        token_ids = autotitle.beam_search([token_ids, segment_ids], topk=3)

    Decoding works on ONE sample: `inputs` is a list of 1-D arrays (e.g. the token ids
    and segment ids of one text). Internally every array gets a leading row axis and is
    repeated or re-selected per beam (beam search) or per sample (random sampling), so
    `predict` always receives a batch: `inputs[i]` of shape (rows, ...), `output_ids` of
    shape (rows, cur_len), and must return scores of shape (rows, vocab_size).

    States: with `use_states=True`, `predict` returns `(scores, new_states)`, and
    `new_states` comes back as the `states` argument of the next call (the first call gets
    the `states` passed to `beam_search` / `random_sample` / `greedy`). Whenever rows are
    re-selected, the states follow through `reorder_states(states, indices)`: after the
    first step (1 row -> `topk` or `n` rows), after each beam re-ranking (a beam's
    continuation keeps the states of the beam it extends), and when finished rows are
    dropped. This is how a key/value cache travels with its beam. States may be None, a
    NumPy array or backend tensor whose first axis is the row, an object with a
    `reorder(indices)` method (e.g. a cache object), anything supporting `s[indices]`, or
    a list/tuple/dict of these.

    Args:
        start_id: int >= 0 or None, first token of every output; None starts from no token
            (`output_ids` of shape (1, 0) at the first step, so the inputs must not be empty).
        end_id: int >= 0 or None, the end token; None never stops before `maxlen`.
        maxlen: int >= 0, number of decoding steps (tokens generated, the start token
            excluded); 0 returns the start (or nothing) without calling `predict`.
        minlen: int >= 0 or None (1, as in bert4keras), a sequence counts as finished only
            once `output_ids` (start token included) has at least `minlen` tokens. As in
            bert4keras, `end_id` is not masked before that: an end token emitted earlier
            stays in the sequence and counts towards `min_ends`.
    Raises:
        TypeError / ValueError: an argument of the constructor or of a search method
        (`topk`, `topp`, `n`, `temperature`, `min_ends`) of the wrong type or out of
        range; the message names it, the value and what is expected.
    Source: bert4keras 0.11.5 `AutoRegressiveDecoder`; state reordering and `greedy` are
    additions.
    """

    def __init__(self, start_id, end_id, maxlen, minlen=1):
        where = type(self).__name__
        self.start_id = _check_int(where, 'start_id', start_id, 0, allow_none=True)
        self.end_id = _check_int(where, 'end_id', end_id, 0, allow_none=True)
        self.maxlen = _check_int(where, 'maxlen', maxlen, 0)
        self.minlen = _check_int(where, 'minlen', minlen, 0, allow_none=True)
        self.minlen = 1 if self.minlen is None else self.minlen
        self.models = {}
        if start_id is None:
            self.first_output_ids = np.empty((1, 0), dtype='int64')
        else:
            self.first_output_ids = np.array([[start_id]], dtype='int64')

    @staticmethod
    def wraps(default_rtype='probas', use_states=False):
        """Decorator for `predict`: normalises its output for the search methods.

        Args:
            default_rtype: 'probas' if the decorated `predict` returns probabilities
                (rows sum to 1), 'logits' if it returns unnormalised scores.
            use_states: bool, whether the decorated `predict` returns `(scores, states)`
                (True) or only scores (False, states are then None).
        Returns:
            a decorator. The decorated method is called as
            `predict(inputs, output_ids, states, temperature=1, rtype=default_rtype)` and
            returns `(x, states)` where `x` has shape (rows, vocab_size) and holds
            probabilities for `rtype='probas'` and log-probabilities for `rtype='logits'`,
            both at `temperature` (probas ** (1 / temperature), renormalised; or
            softmax(logits / temperature)).
        """
        if default_rtype not in ('probas', 'logits'):
            raise ValueError('default_rtype must be "probas" or "logits", got %r' % (default_rtype,))

        def actual_decorator(predict):
            @functools.wraps(predict)
            def new_predict(self, inputs, output_ids, states, temperature=1, rtype=default_rtype):
                if rtype not in ('probas', 'logits'):
                    raise ValueError('rtype must be "probas" or "logits", got %r' % (rtype,))
                temperature = _check_temperature('%s.predict' % type(self).__name__, temperature)
                prediction = predict(self, inputs, output_ids, states)
                if not use_states:
                    prediction = (prediction, None)
                scores, states = prediction
                scores = np.asarray(scores, dtype='float64')
                if default_rtype == 'logits':
                    scores = scores / temperature
                    if rtype == 'probas':
                        return softmax(scores), states
                    return _log_softmax(scores), states
                if temperature != 1:
                    scores = np.power(scores, 1.0 / temperature)
                    scores = scores / scores.sum(axis=-1, keepdims=True)
                if rtype == 'probas':
                    return scores, states
                return np.log(scores + 1e-12), states

            return new_predict

        return actual_decorator

    def predict(self, inputs, output_ids, states=None):
        """The user's next-token prediction, to be decorated with `wraps`.

        Args:
            inputs: list of arrays of shape (rows, ...), the sample's inputs per row.
            output_ids: int array of shape (rows, cur_len), the tokens generated so far.
            states: whatever the previous call returned (reordered to the current rows),
                or the initial states at the first call.
        Returns:
            scores of shape (rows, vocab_size) (probabilities or logits, as declared to
            `wraps`), or `(scores, new_states)` when `use_states=True`.
        """
        raise NotImplementedError

    def last_token(self, model):
        """A Keras model with `model`'s inputs that returns its first output at the last position.

        Args:
            model: a functional Keras model, one or several inputs; its first output has
                shape (batch_size, seq_len, ...).
        Returns:
            keras.Model with output shape (batch_size, ...); built once per model and cached.
        """
        models = self.__dict__.setdefault('models', {})  # subclasses may skip __init__
        if model not in models:
            import keras

            models[model] = keras.Model(model.inputs, model.outputs[0][:, -1])
        return models[model]

    def reorder_states(self, states, indices):
        """Select rows of `states`: row `j` of the result is row `indices[j]` of `states`.

        Called by the search methods whenever rows are re-selected; `indices` may repeat
        rows and change their number (1 -> beam size after the first step, fewer rows when
        finished ones are dropped); beam search skips the call when a step keeps every row
        in place. Override it for states of another layout.

        Args:
            states: None; a list, tuple or dict (reordered element-wise, recursively); a
                NumPy array (`states[indices]`); an object with a `reorder(indices)`
                method (its result is used); a tensor of the Keras backend
                (`keras.ops.take(states, indices, axis=0)`); or any other object
                (`states[indices]`).
            indices: 1-D int64 NumPy array of row indices.
        Returns:
            the reordered states, of the same structure.
        """
        if states is None:
            return None
        if isinstance(states, dict):
            return type(states)((k, self.reorder_states(v, indices)) for k, v in states.items())
        if isinstance(states, tuple) and hasattr(states, '_fields'):  # namedtuple
            return type(states)(*[self.reorder_states(s, indices) for s in states])
        if isinstance(states, (list, tuple)):
            return type(states)(self.reorder_states(s, indices) for s in states)
        if isinstance(states, np.ndarray):
            return states[indices]
        if hasattr(states, 'reorder'):
            return states.reorder(indices)
        import keras

        if keras.ops.is_tensor(states):  # a tf.Tensor can't be indexed by an array
            return keras.ops.take(states, indices, axis=0)
        return states[indices]

    def _first_inputs(self, where, inputs):
        """The sample's inputs, each with a leading row axis, once checked."""
        if inputs is None or isinstance(inputs, str) or isinstance(inputs, dict) or not hasattr(inputs, '__iter__'):
            raise TypeError(
                '%s: inputs must be a list of arrays, the inputs of one sample (e.g. [token_ids, '
                'segment_ids]), got %s' % (where, type(inputs).__name__)
            )
        inputs = [np.array([i]) for i in inputs]
        if self.start_id is None and all(i.size == 0 for i in inputs):
            raise ValueError(
                '%s: the inputs are empty (%r) and start_id=None, so the first step would predict '
                'from no token at all; pass a non-empty input (e.g. the prompt) or give the decoder '
                'a start_id' % (where, [i[0].tolist() for i in inputs])
            )
        return inputs

    def _end_counts(self, output_ids):
        if self.end_id is None:
            return np.zeros(len(output_ids), dtype='int64')
        return (output_ids == self.end_id).sum(axis=1)

    def beam_search(self, inputs, topk, states=None, temperature=1, min_ends=1):
        """Beam search: keep the `topk` sequences of highest cumulative log-probability.

        At each step every beam is extended by every token, and the `topk` best of these
        candidates become the new beams. Once the output has `minlen` tokens, a beam with
        `min_ends` end tokens is finished: if it is the best beam it is returned, otherwise
        it is dropped and the beam size shrinks accordingly. After `maxlen` steps the best
        beam is returned.

        Args:
            inputs: list of 1-D arrays, the inputs of one sample.
            topk: int >= 1, the beam size (a beam wider than the candidates keeps them all).
            states: initial states for `predict` (see the class docstring).
            temperature: float > 0, passed to `predict`.
            min_ends: int >= 1, number of end tokens that finish a sequence.
        Returns:
            1-D int array, the best sequence (start token included if any).
        Raises:
            TypeError / ValueError: an argument of the wrong type or out of range, or empty
            inputs with `start_id=None`.
        """
        where = '%s.beam_search' % type(self).__name__
        topk = _check_int(where, 'topk', topk, 1)
        temperature = _check_temperature(where, temperature)
        min_ends = _check_int(where, 'min_ends', min_ends, 1)
        inputs = self._first_inputs(where, inputs)
        output_ids, output_scores = self.first_output_ids.copy(), np.zeros(1)
        for step in range(self.maxlen):
            scores, states = self.predict(inputs, output_ids, states, temperature, 'logits')
            num_rows = len(output_ids)
            scores = output_scores.reshape((-1, 1)) + scores
            k = min(topk, scores.size)
            # the k best, selected from the front of the negated scores: NumPy's selection from the
            # end of an array slows 10x when many scores are equal (underflowed probabilities)
            indices = (-scores).argpartition(k - 1, axis=None)[:k]
            indices_1 = indices // scores.shape[1]  # the beam each candidate extends
            indices_2 = (indices % scores.shape[1]).reshape((-1, 1))  # its new token
            output_ids = np.concatenate([output_ids[indices_1], indices_2], 1)
            output_scores = np.take_along_axis(scores, indices, axis=None)
            rows = indices_1  # at the first step all zeros: one row repeated k times
            end_counts = self._end_counts(output_ids)
            if output_ids.shape[1] >= self.minlen:
                best_one = output_scores.argmax()
                if end_counts[best_one] >= min_ends:
                    return output_ids[best_one]
                flag = end_counts < min_ends  # unfinished beams
                if not flag.all():
                    rows = rows[flag]
                    output_ids = output_ids[flag]
                    output_scores = output_scores[flag]
                    topk = int(flag.sum())
            # an identity selection (always, with topk=1) needs no gather of the states
            if len(rows) != num_rows or (rows != np.arange(num_rows)).any():
                inputs = [i[rows] for i in inputs]
                states = self.reorder_states(states, rows)
        return output_ids[output_scores.argmax()]

    def greedy(self, inputs, states=None, min_ends=1):
        """Greedy decoding: append the most probable token at each step.

        The same as `beam_search(inputs, topk=1, states, min_ends=min_ends)` (up to ties),
        with one row throughout, so `reorder_states` is never needed.

        Args:
            inputs: list of 1-D arrays, the inputs of one sample.
            states: initial states for `predict`.
            min_ends: int >= 1, number of end tokens that finish the sequence.
        Returns:
            1-D int array, the decoded sequence (start token included if any).
        Raises:
            TypeError / ValueError: `min_ends` of the wrong type or < 1, or empty inputs
            with `start_id=None`.
        """
        where = '%s.greedy' % type(self).__name__
        min_ends = _check_int(where, 'min_ends', min_ends, 1)
        inputs = self._first_inputs(where, inputs)
        output_ids = self.first_output_ids.copy()
        for _ in range(self.maxlen):
            scores, states = self.predict(inputs, output_ids, states, 1, 'logits')
            next_id = np.array([[scores[0].argmax()]], dtype=output_ids.dtype)
            output_ids = np.concatenate([output_ids, next_id], 1)
            if output_ids.shape[1] >= self.minlen and self._end_counts(output_ids)[0] >= min_ends:
                break
        return output_ids[0]

    def random_sample(self, inputs, n, topk=None, topp=None, states=None, temperature=1, min_ends=1):
        """Sample `n` sequences, each token drawn from the (truncated) predicted distribution.

        `topk` keeps only the `topk` most probable tokens at each step; `topp` keeps the
        most probable tokens whose cumulative probability first reaches `topp` (nucleus
        sampling). With both, top-k applies first and top-p to its renormalised result.
        Draws use NumPy's global random state (`np.random.seed` makes them repeatable).

        Args:
            inputs: list of 1-D arrays, the inputs of one sample.
            n: int >= 1, number of sequences.
            topk: None (no top-k) or int >= 1. topp: None (no top-p) or float > 0 (values
                >= 1 keep every token, as in bert4keras 0.11.5).
            states: initial states for `predict`.
            temperature: float > 0, passed to `predict`.
            min_ends: int >= 1, number of end tokens that finish a sequence.
        Returns:
            list of `n` 1-D int arrays: finished sequences in the order they finished, then
            the unfinished ones (which ran for `maxlen` steps; with `maxlen=0`, `n` copies of
            the start).
        Raises:
            TypeError / ValueError: an argument of the wrong type or out of range, or empty
            inputs with `start_id=None`.
        """
        where = '%s.random_sample' % type(self).__name__
        n = _check_int(where, 'n', n, 1)
        topk = _check_int(where, 'topk', topk, 1, allow_none=True)
        # > 0: a topp >= 1 keeps every token, as in bert4keras 0.11.5 (whose examples pass e.g. 5)
        topp = _check_number(where, 'topp', topp, 0, low_open=True, allow_none=True)
        temperature = _check_temperature(where, temperature)
        min_ends = _check_int(where, 'min_ends', min_ends, 1)
        inputs = self._first_inputs(where, inputs)
        if self.maxlen == 0:  # no step, so no first step to repeat the row n times
            return [self.first_output_ids[0].copy() for _ in range(n)]
        output_ids = self.first_output_ids
        results = []
        for step in range(self.maxlen):
            probas, states = self.predict(inputs, output_ids, states, temperature, 'probas')
            probas = probas / probas.sum(axis=1, keepdims=True)
            if step == 0:  # one row so far: repeat it for the n samples
                rows = np.zeros(n, dtype='int64')
                probas = probas[rows]
                inputs = [i[rows] for i in inputs]
                output_ids = output_ids[rows]
                states = self.reorder_states(states, rows)
            if topk is not None:
                k = min(topk, probas.shape[1])
                k_indices = probas.argpartition(-k, axis=1)[:, -k:]
                probas = np.take_along_axis(probas, k_indices, axis=1)
                probas /= probas.sum(axis=1, keepdims=True)
            if topp is not None:
                p_indices = probas.argsort(axis=1)[:, ::-1]
                probas = np.take_along_axis(probas, p_indices, axis=1)
                cumsum_probas = np.cumsum(probas, axis=1)
                flag = np.roll(cumsum_probas >= topp, 1, axis=1)  # past the token reaching topp
                flag[:, 0] = False
                probas[flag] = 0
                probas /= probas.sum(axis=1, keepdims=True)
            sample_ids = np.array([np.random.choice(len(p), p=p) for p in probas]).reshape((-1, 1))
            if topp is not None:
                sample_ids = np.take_along_axis(p_indices, sample_ids, axis=1)
            if topk is not None:
                sample_ids = np.take_along_axis(k_indices, sample_ids, axis=1)
            output_ids = np.concatenate([output_ids, sample_ids.astype(output_ids.dtype)], 1)
            if output_ids.shape[1] >= self.minlen:
                flag = self._end_counts(output_ids) >= min_ends  # finished
                if flag.any():
                    results.extend(output_ids[flag])
                    if flag.all():
                        return results
                    rows = np.flatnonzero(~flag)
                    inputs = [i[rows] for i in inputs]
                    output_ids = output_ids[rows]
                    states = self.reorder_states(states, rows)
        results.extend(output_ids)
        return results


def _check_temperature(where, temperature):
    return _check_number(
        where, 'temperature', temperature, 0, low_open=True,
        hint=' (for the most probable token use greedy(), or topk=1)',
    )


# -- cached steps ------------------------------------------------------------------------------


class DecodingStep:
    """The decoding tensors of one cached step, handed to the layers while the step is built.

    `Transformer.call_builder(inputs, step)` sets ``block`` before each Transformer block;
    `Transformer.decoding_arguments` gives the position and mask layers ``start_index`` (and
    ``key_length``); `Transformer.cached_attention` gives block ``block``'s self-attention
    `cache(block)` and stores what it returns with `update`.

    Args:
        index: int32 tensor ``(batch_size,)``, the position of the chunk's first token (equal
            across the batch).
        key_length: int, the caches' length (``max_length``).
        caches: list of tensors ``(batch_size, 2, key_length, heads, head_size)``, one per
            block: keys and values of the positions before ``index`` (the rest unused).
        cross_caches: None, or (T5's decoder) a list of tensors ``(batch_size, 2, src_len,
            heads, head_size)``, one per block: its cross attention's keys and values of the
            source, computed once (`Transformer.cross_attention_layers`).
    """

    def __init__(self, index, key_length, caches, cross_caches=None):
        self.index = index
        self.key_length = int(key_length)
        self.caches = list(caches)
        self.cross_caches = None if cross_caches is None else list(cross_caches)
        self.updated = {}
        self.block = None

    def cache(self):
        """The cache of the current block's self-attention."""
        return self.caches[self.block]

    def update(self, cache):
        """Record the current block's updated cache.

        Raises:
            ValueError: the block already stored one (a block with two cached self-attentions).
        """
        if self.block in self.updated:
            raise ValueError(f"Transformer block {self.block} runs a cached self-attention twice; "
                             "a cached step keeps one cache per block.")
        self.updated[self.block] = cache


def build_step_model(transformer, max_length):
    """The cached step of a built causal (``lm``/``unilm``) builder, as a Keras model.

    Inputs (a dict, by name): the model's own inputs for a chunk of new tokens, int32
    ``(batch_size, chunk_len)`` each (T5's decoder: ``Input-Context`` ``(batch_size, src_len,
    hidden_size)`` first); ``Cache-Index`` int32 ``(batch_size,)``, the position of the chunk's
    first token (equal across the batch); ``Cache-0`` ... ``Cache-<L-1>`` ``(batch_size, 2,
    max_length, heads, head_size)`` in the compute dtype, one per block (names carry the
    builder's ``prefix``). Outputs (a dict): ``Output``, the model's output at the chunk's last
    position (e.g. probabilities ``(batch_size, vocab_size)``), and the updated caches under the
    same names. Its call runs `Transformer.call_builder(inputs, DecodingStep(...))`, so every
    layer (and weight) is the builder's. Prompts must not contain padding (the rows of a batch
    share one length).

    Raises:
        ValueError: the builder is not causal, its keys and values differ in size, it has
            more than one output, or it is conditioned (``layer_norm_cond``).
    """
    if not transformer.supports_cache:
        raise ValueError(
            f"{type(transformer).__name__} with application={transformer.application!r} cannot decode "
            "incrementally; build it with application='lm' or 'unilm'."
        )
    if transformer.layer_norm_conds[0] is not None:
        raise ValueError("Cached decoding of a model with layer_norm_cond is not supported; use "
                         "predictor() without max_length (full recomputation).")
    if len(transformer.model.outputs) != 1:
        raise ValueError(f"Cached decoding needs a model with one output; {type(transformer).__name__} "
                         f"has {len(transformer.model.outputs)} (e.g. with_pool or with_nsp beside the LM head).")
    return _step_model_class()(transformer, max_length)


@functools.lru_cache(maxsize=None)
def _step_model_class():
    """The class of `build_step_model`'s models, built once Keras is imported."""
    import keras

    class StepModel(keras.Model):
        """See `build_step_model`. Attributes: ``input_names`` (the model's inputs),
        ``index_name``, ``cache_names`` (one per block), ``cache_shapes`` (without batch) and
        ``cross_names`` (one per block with a cross attention, else empty)."""

        def __init__(self, transformer, max_length):
            prefix = transformer.prefix
            super().__init__(name=f"{prefix}Step")
            self.transformer = transformer
            self.max_length = int(max_length)
            self.input_names = [x.name for x in transformer.inputs]
            self.index_name = f"{prefix}Cache-Index"
            shapes = transformer.cache_shapes(self.max_length)
            self.cache_names = [f"{prefix}Cache-{block}" for block in range(len(shapes))]
            self.cache_shapes = dict(zip(self.cache_names, shapes))
            self.cross_layers = transformer.cross_attention_layers()
            self.cross_names = [f"{prefix}Cross-Cache-{block}" for block in range(len(self.cross_layers))]
            # tracked so that a compiled step takes the weights as state
            self.shared_layers = [layer for layer in transformer.model.layers if layer.weights]
            self.built = True  # every layer is the builder's, built with its model

        def cross_caches(self, inputs):
            """``{Cross-Cache-<block>: keys and values (batch_size, 2, src_len, heads, head_size)}``
            of the source, the first input (T5's ``Input-Context``), in each block's cross
            attention; computed once per source, fed back at every step."""
            context = inputs[self.input_names[0]]
            return {name: layer.key_value_cache(context) for name, layer in zip(self.cross_names, self.cross_layers)}

        def call(self, inputs):
            cross = [inputs[n] for n in self.cross_names] or None
            step = DecodingStep(inputs[self.index_name], self.max_length, [inputs[n] for n in self.cache_names], cross)
            output = self.transformer.call_builder([inputs[n] for n in self.input_names], step)
            outputs = {"Output": output[:, -1]}
            outputs.update((name, step.updated[block]) for block, name in enumerate(self.cache_names))
            return outputs

    return StepModel


def compiled_step(model):
    """`model` (a step model) as a function of a dict of backend tensors, so the caches stay on the
    backend between steps (no NumPy round trip): ``tf.function(jit_compile=True)`` (XLA) on
    TensorFlow, ``jax.jit`` of `stateless_call` on JAX (the weights read at each call), a
    `TracedTorchStep` on PyTorch. Traced once per input shape (prompt, one token, batch)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # Plain Python over the layers, nothing for AutoGraph to convert.
        return tf.function(model.__call__, jit_compile=True, autograph=False)
    if backend == "jax":
        import jax

        @jax.jit
        def step(trainable, non_trainable, inputs):
            return model.stateless_call(trainable, non_trainable, inputs, return_losses=False)[0]

        # The variable lists are gathered once (walking the layers is per-step overhead); their
        # current values are read at every step.
        trainable_variables, non_trainable_variables = model.trainable_variables, model.non_trainable_variables

        def run(inputs):
            trainable = [v.value for v in trainable_variables]
            non_trainable = [v.value for v in non_trainable_variables]
            return step(trainable, non_trainable, inputs)

        return run
    if backend == "torch":
        return TracedTorchStep(model, donated=getattr(model, "cache_names", ()))
    return model


def _no_grad():
    """``torch.no_grad()`` on PyTorch, a no-op context elsewhere."""
    import contextlib

    import keras

    if keras.backend.backend() == "torch":
        import torch

        return torch.no_grad()
    return contextlib.nullcontext()


class TracedTorchStep:
    """The PyTorch backend's decoding step: `model` (a step model) called on a dict of torch
    tensors under ``torch.no_grad``, eagerly the first time an input signature (names, shapes,
    dtypes) is seen, then as a graph of aten ops traced from it.

    Eager Keras spends about as long in Python per layer call as a GPT-2 layer's products take at
    batch 1; the traced graph (``torch.fx.experimental.proxy_tensor.make_fx`` over fake tensors)
    runs the same torch kernels without it, 1.7x faster per token (benchmarks/README.md). The
    second call of a signature traces it (about 1 s for 12 GPT-2 layers), so a prompt length seen
    once costs no trace. The weights enter the graph as the variables' own tensors, so later
    assignments (``assign``, ``load_weights``, training) are seen. Token ids are checked in the
    graph (`bert4keras.backend.asserted_ids`); when that check fails, the step reruns eagerly and
    raises `checked_ids`' ValueError. A signature whose trace fails (e.g. Python reading a
    tensor's value) stays eager; ``untraced`` maps it to the reason.

    ``donated`` names inputs whose buffers the traced graph may write into, as JAX's
    ``donate_argnums``: the copy Keras' functional ``slice_update`` makes of a donated cache
    before writing the new keys/values (the whole cache, per block and step; at batch 8 more
    time than the attention itself) is dropped, so the write lands in the input's buffer, whose
    positions from the write index on nothing reads any more. `CachedPredictor` copies the
    caches of a `KVCache` it steps from a second time, so branching from one state stays exact.
    """

    def __init__(self, model, donated=()):
        self.model = model
        self.donated = tuple(donated)
        self.graphs = {}  # signature -> traced graph, or None after its first (eager) call
        self.untraced = {}  # signature -> why tracing failed

    def __call__(self, inputs):
        import torch

        signature = tuple((name, tuple(x.shape), str(x.dtype)) for name, x in sorted(inputs.items()))
        with torch.no_grad():
            if signature not in self.graphs:
                self.graphs[signature] = None
            elif self.graphs[signature] is None and signature not in self.untraced:
                self.graphs[signature] = self._trace(inputs, signature)
            graph = self.graphs[signature]
            if graph is None:
                return self.model(inputs)
            try:
                return graph(inputs)
            except RuntimeError as error:
                from bert4keras.backend import ID_ASSERTION

                if ID_ASSERTION not in str(error):
                    raise
                return self.model(inputs)  # raises checked_ids' ValueError

    def _trace(self, inputs, signature):
        from torch.fx.experimental.proxy_tensor import make_fx

        from bert4keras.backend import asserted_ids

        try:
            with asserted_ids():
                # Fake tensors for the inputs; the weights are real tensors the graph keeps.
                graph = make_fx(lambda feeds: self.model(feeds), tracing_mode="fake", _allow_non_fake_inputs=True)(inputs)
        except Exception as error:  # noqa: BLE001 - any failure leaves this signature eager
            self.untraced[signature] = "%s: %s" % (type(error).__name__, error)
            return None
        self._write_in_place(graph, inputs)
        return graph

    def _write_in_place(self, graph, inputs):
        """Drop ``clone`` of a donated input whose one use is the ``index_put_`` writing into it."""
        import torch

        placeholders = [node for node in graph.graph.nodes if node.op == "placeholder"]
        names = torch.utils._pytree.tree_flatten_with_path(inputs)[0]
        donated = {node for node, (path, _) in zip(placeholders, names) if path[-1].key in self.donated}
        for node in list(graph.graph.nodes):
            if (
                node.target is torch.ops.aten.clone.default
                and node.args[0] in donated
                and len(node.users) == 1
                and next(iter(node.users)).target is torch.ops.aten.index_put_.default
                and next(iter(node.users)).args[0] is node
            ):
                node.replace_all_uses_with(node.args[0])
                graph.graph.erase_node(node)
        graph.recompile()


class KVCache:
    """Decoding state of a `CachedPredictor`: ``caches``, ``{name: backend tensor (batch_size, 2,
    max_length, heads, head_size)}`` as the step model names them (T5's decoder adds its cross
    attentions' ``(batch_size, 2, src_len, heads, head_size)``), and ``index``, the next write
    position. `AutoRegressiveDecoder` calls `reorder` when it re-ranks beams or drops finished
    rows."""

    def __init__(self, caches, index):
        self.caches = caches
        self.index = index
        self.stepped = False  # set by the first CachedPredictor step from this state

    def reorder(self, indices):
        """A `KVCache` whose row ``j`` is row ``indices[j]`` of this one."""
        from keras import ops

        indices = ops.convert_to_tensor(np.asarray(indices, dtype="int32"))
        return KVCache({name: ops.take(cache, indices, axis=0) for name, cache in self.caches.items()}, self.index)


class FullPredictor:
    """``predict(inputs, output_ids, states)`` that reruns the whole prefix each step.

    Returns ``(the model's output at the last position (batch_size, vocab_size), states)``.
    """

    def __init__(self, transformer):
        self.transformer = transformer

    def __call__(self, inputs, output_ids, states=None):
        chunk = self.transformer.chunk_inputs(inputs, output_ids, first=True)
        outputs = self.transformer.model.predict_on_batch(chunk[0] if len(chunk) == 1 else chunk)
        return np.asarray(outputs)[:, -1], states


class CachedPredictor:
    """``predict(inputs, output_ids, states)`` with a fixed-size KV cache (see the module docstring).

    The first call runs the prompt and any ``output_ids`` in one chunk; each later call runs
    only the newest token. ``states`` is a `KVCache` (None at the first call), so the decoder
    must use ``wraps(use_states=True)``. Returns ``(the model's output at the last position
    (batch_size, vocab_size), KVCache)``. Attributes: ``model``, the step model
    (`build_step_model`).

    Raises:
        ValueError: the sequence would grow past ``max_length``; or see `build_step_model`.
    """

    def __init__(self, transformer, max_length):
        import keras

        self.transformer = transformer
        self.max_length = _check_int(type(self).__name__, "max_length", max_length, 1)
        self.model = build_step_model(transformer, self.max_length)
        self.step = compiled_step(self.model)
        self.dtype = keras.config.dtype_policy().compute_dtype

    def __call__(self, inputs, output_ids, states=None):
        from keras import ops

        output_ids = np.asarray(output_ids, dtype="int32")
        chunk = self.transformer.chunk_inputs(inputs, output_ids, first=states is None)
        batch_size, chunk_len = chunk[-1].shape[0], chunk[-1].shape[1]
        feeds = {name: ops.convert_to_tensor(x) for name, x in zip(self.model.input_names, chunk)}
        if states is None:
            shapes = self.model.cache_shapes
            caches = {name: ops.zeros((batch_size,) + shape, self.dtype) for name, shape in shapes.items()}
            if self.model.cross_names:
                with _no_grad():
                    caches.update(self.model.cross_caches(feeds))
            index = 0
        else:
            caches, index = states.caches, states.index
            donated = getattr(self.step, "donated", ())
            if states.stepped and donated:  # a second step from this state: keep its caches intact
                caches = {name: ops.copy(cache) if name in donated else cache for name, cache in caches.items()}
            states.stepped = True
        if index + chunk_len > self.max_length:
            raise ValueError(
                f"Decoding past the KV cache: position {index + chunk_len} > max_length "
                f"{self.max_length}; build the predictor with a larger max_length."
            )
        feeds[self.model.index_name] = ops.convert_to_tensor(np.full((batch_size,), index, "int32"))
        feeds.update(caches)
        outputs = self.step(feeds)
        updated = {name: outputs[name] for name in self.model.cache_names}
        updated.update((name, caches[name]) for name in self.model.cross_names)
        return ops.convert_to_numpy(outputs["Output"]), KVCache(updated, index + chunk_len)
