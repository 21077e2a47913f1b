"""Pretraining data: raw text -> fixed-length instances in TFRecord files -> tf.data batches.

Three formats, as bert4keras's `pretraining/data_utils.py` had, on TensorFlow 2's tf.data:

    TrainingDatasetRoBERTa   masked LM: dynamic 15% masking, 80% [MASK] / 10% random / 10% kept,
                             whole words (a pluggable `word_segment`, e.g. jieba for Chinese)
    TrainingDatasetGPT       causal LM: predict every next token
    TrainingDatasetUniLM     seq2seq LM: [CLS] source [SEP] target [SEP], predict the target

Writing (`process`) packs the sentences of each document into instances of exactly
`sequence_length` tokens, tokenizing documents in several processes (`snippets.parallel_apply`)
with a progress bar, and writes `tf.train.Example` records to a TFRecord file (atomically: a
temporary file renamed when complete). Reading (`load_tfrecord`) is pure tf.data -- no
`py_function`, static shapes, `drop_remainder=True` -- so it runs under tf.distribute
(Mirrored, MultiWorkerMirrored, TPU reading from GCS) and feeds Keras' `fit` on every backend.

Masking is *dynamic* (RoBERTa, Liu et al. 2019): the records hold the clean tokens and word
boundaries, and every pass draws new masks inside tf.data from stateless random ops seeded by
(seed, index of the instance in the stream), so a stream is reproducible from any position
(`skip`), which resuming a killed run relies on.

Batches are `((token_ids, segment_ids), labels, sample_weight)`, each `(batch_size,
sequence_length)`; `labels` are the token ids to predict and `sample_weight` marks the positions
that count, divided by a constant (the mask rate for MLM), so that Keras' default loss reduction
("sum_over_batch_size") gives the mean loss per predicted token *in expectation* with a
denominator that does not depend on how a global batch is split across replicas: N replicas give
exactly the gradients of one device.

Sources: bert4keras `pretraining/data_utils.py` (Su Jianlin); whole-word masking as in Google's
`create_pretraining_data.py` (Devlin et al. 2019) and Cui et al. 2019 (Chinese, with a word
segmenter); 80/10/10 from Devlin et al. 2019, sec. 3.1.
"""

import os

import tensorflow as tf

from bert4keras.snippets import parallel_apply, text_segmentate

FEATURES = {
    "roberta": ("token_ids", "word_ids"),
    "gpt": ("token_ids",),
    "unilm": ("token_ids", "segment_ids"),
}


def split_sentences(text, maxlen=64, seps="\n。！？!?；;，,"):
    """Sentences (pieces of at most about `maxlen` characters) of a document, via `text_segmentate`."""
    return [s for s in text_segmentate(text, maxlen, seps) if s]


class TrainingDataset:
    """Base class: documents -> packed instances -> TFRecord; TFRecord -> batches.

    Args:
        tokenizer: `bert4keras.tokenizers.Tokenizer` (or `SpTokenizer`); its [CLS], [SEP],
            [PAD]=0 ids frame and pad the instances.
        sequence_length: int, the length of every instance (static shape for XLA/TPU).
    Subclasses set `name` (a key of `FEATURES`) and implement `sentence_process` and
    `instance_from_sentences`.
    """

    name = None
    num_special_tokens = 2  # [CLS] ... [SEP]

    def __init__(self, tokenizer, sequence_length=512):
        if sequence_length < 4:
            raise ValueError(f"sequence_length must be >= 4, got {sequence_length}")
        self.tokenizer = tokenizer
        self.sequence_length = sequence_length
        self.token_pad_id = 0
        self.token_cls_id = tokenizer.token_to_id(tokenizer._token_start)
        self.token_sep_id = tokenizer.token_to_id(tokenizer._token_end)
        self.token_mask_id = tokenizer.token_to_id("[MASK]")
        self.vocab_size = tokenizer.vocab_size

    # -- writing ---------------------------------------------------------------------------

    def sentence_process(self, text):
        """One sentence -> a tuple of per-token lists (e.g. `(token_ids,)`), without [CLS]/[SEP]."""
        raise NotImplementedError

    def instance_from_sentences(self, sentences):
        """Processed sentences of one instance -> `{feature: list of sequence_length ints}`."""
        raise NotImplementedError

    def paragraph_process(self, document):
        """One document (str, or list of sentences) -> its instances.

        Sentences are added to an instance while it fits `sequence_length` with its special
        tokens; a sentence too long for any instance is cut.
        """
        sentences = split_sentences(document) if isinstance(document, str) else list(document)
        budget = self.sequence_length - self.num_special_tokens
        instances, current, used = [], [], 0
        for sentence in sentences:
            processed = self.sentence_process(sentence)
            length = len(processed[0])
            if length == 0:
                continue
            if length > budget:
                processed = tuple(feature[:budget] for feature in processed)
                length = budget
            if current and used + length > budget:
                instances.append(self.instance_from_sentences(current))
                current, used = [], 0
            current.append(processed)
            used += length
        if current:
            instances.append(self.instance_from_sentences(current))
        return instances

    def pad(self, ids, value=0):
        return ids + [value] * (self.sequence_length - len(ids))

    def serialize(self, instance):
        feature = {
            name: tf.train.Feature(int64_list=tf.train.Int64List(value=instance[name]))
            for name in FEATURES[self.name]
        }
        return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()

    def process(self, corpus, record_name, workers=4, max_queue_size=2000, total=None, verbose=True):
        """Write the instances of `corpus` to the TFRecord file `record_name`.

        Args:
            corpus: iterable of documents (str, split into sentences by `split_sentences`, or
                lists of sentences), read lazily.
            record_name: output path (local or `gs://`); written to `record_name + '.tmp'`
                and renamed when complete, so a crash never leaves a truncated file.
            workers: processes tokenizing documents (1: in this process).
            max_queue_size: documents in flight at most.
            total: number of documents, for the progress bar (default: `len(corpus)` if any).
        Returns:
            int, the number of instances written.
        """
        import keras

        if total is None and hasattr(corpus, "__len__"):
            total = len(corpus)
        progress = keras.utils.Progbar(total, unit_name="document", verbose=1 if verbose else 0,
                                       stateful_metrics=["instances"])
        count = 0
        tmp = record_name + ".tmp"
        with tf.io.TFRecordWriter(tmp) as writer:

            def write(instances):
                nonlocal count
                for instance in instances:
                    writer.write(self.serialize(instance))
                count += len(instances)
                progress.add(1, [("instances", count)])

            if workers > 1:
                parallel_apply(self.paragraph_process, corpus, workers, max_queue_size,
                               callback=write, unordered=False)
            else:
                for document in corpus:
                    write(self.paragraph_process(document))
        tf.io.gfile.rename(tmp, record_name, overwrite=True)
        return count

    # -- reading ---------------------------------------------------------------------------

    def parse(self, serialized):
        spec = {name: tf.io.FixedLenFeature([self.sequence_length], tf.int64) for name in FEATURES[self.name]}
        return {name: tf.cast(value, tf.int32) for name, value in tf.io.parse_single_example(serialized, spec).items()}

    def to_training_example(self, features, seed):
        """Parsed features and a stateless seed `(2,)` -> `((token_ids, segment_ids), labels, sample_weight)`."""
        raise NotImplementedError

    def load_tfrecord(self, record_names, batch_size, seed=0, shuffle_buffer=10000, repeat=True, skip_batches=0):
        """A tf.data pipeline of training batches from TFRecord files written by `process`.

        Args:
            record_names: path or list of paths (globs allowed, e.g. `gs://bucket/*.tfrecord`).
            batch_size: global batch size (Keras splits it across replicas/devices).
            seed: int; shuffling and masking are functions of it and of the position in the
                stream, so two pipelines with the same arguments yield the same batches.
            shuffle_buffer: instances shuffled together (0: no shuffling); see `shuffle_windows`.
            repeat: cycle forever (new shuffle order and new masks each pass).
            skip_batches: start after this many batches (resuming at optimizer step k).
        Returns:
            `tf.data.Dataset` of `((token_ids, segment_ids), labels, sample_weight)`, int32,
            int32, float32, each `(batch_size, sequence_length)`.
        Raises:
            FileNotFoundError: no file matches `record_names`.
        """
        patterns = [record_names] if isinstance(record_names, (str, os.PathLike)) else list(record_names)
        files = sorted(f for p in patterns for f in tf.io.gfile.glob(str(p)))
        if not files:
            raise FileNotFoundError(f"no TFRecord file matches {patterns}")
        dataset = tf.data.TFRecordDataset(files).map(self.parse, num_parallel_calls=tf.data.AUTOTUNE)
        if repeat:
            dataset = dataset.repeat()
        if shuffle_buffer:
            dataset = shuffle_windows(dataset, shuffle_buffer, seed)
        dataset = dataset.enumerate().map(
            lambda index, features: self.to_training_example(
                features, tf.stack([tf.constant(seed, tf.int64), index])),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )
        dataset = dataset.batch(batch_size, drop_remainder=True)
        if skip_batches:
            dataset = dataset.skip(skip_batches)
        return dataset.prefetch(tf.data.AUTOTUNE)


class TrainingDatasetRoBERTa(TrainingDataset):
    """Masked LM with dynamic whole-word masking.

    Args:
        tokenizer, sequence_length: see `TrainingDataset`.
        word_segment: None or callable `str -> list of str` (e.g. `jieba.lcut`): the words whose
            tokens are masked together. None groups WordPiece continuations ("##xx") with their
            word, which for Chinese text is one character per word.
        mask_rate: float, the probability that a word is chosen for prediction (0.15).
    Records: `token_ids` and `word_ids` (the number of the word a token belongs to, from 1 in
    each instance; 0 for [CLS], [SEP] and padding, which are never masked).
    Examples: `token_ids` of the corrupted text; labels the clean `token_ids`; sample_weight
    `chosen / mask_rate`. A chosen token becomes [MASK] with probability 0.8, a random token
    (ids from 1) with 0.1, and stays itself with 0.1, drawn per token.
    """

    name = "roberta"

    def __init__(self, tokenizer, word_segment=None, mask_rate=0.15, sequence_length=512):
        super().__init__(tokenizer, sequence_length)
        if not 0 < mask_rate < 1:
            raise ValueError(f"mask_rate must be in (0, 1), got {mask_rate}")
        if self.token_mask_id is None:
            raise ValueError("the tokenizer has no [MASK] token, which masked-LM pretraining needs")
        self.word_segment = word_segment
        self.mask_rate = mask_rate

    def words(self, text):
        """Token ids of `text`, grouped into words: a list of lists of ids."""
        if self.word_segment is not None:
            groups = [self.tokenizer.encode(word)[0][1:-1] for word in self.word_segment(text)]
            return [g for g in groups if g]
        groups = []
        for token in self.tokenizer.tokenize(text)[1:-1]:
            if token.startswith("##") and groups:
                groups[-1].append(token)
            else:
                groups.append([token])
        return [self.tokenizer.tokens_to_ids(g) for g in groups]

    def sentence_process(self, text):
        token_ids, word_ids = [], []
        for number, ids in enumerate(self.words(text), 1):
            token_ids += ids
            word_ids += [number] * len(ids)
        return token_ids, word_ids

    def instance_from_sentences(self, sentences):
        token_ids, word_ids, offset = [self.token_cls_id], [0], 0
        for ids, words in sentences:
            token_ids += ids
            word_ids += [w + offset for w in words]
            offset = word_ids[-1]
        token_ids.append(self.token_sep_id)
        word_ids.append(0)
        return {"token_ids": self.pad(token_ids), "word_ids": self.pad(word_ids)}

    def to_training_example(self, features, seed):
        token_ids, word_ids = features["token_ids"], features["word_ids"]
        length = self.sequence_length
        seeds = tf.random.experimental.stateless_split(seed, 3)
        # One draw per word number (word_ids run from 1 to < length): a word is chosen whole.
        word_draw = tf.random.stateless_uniform([length + 1], seeds[0])
        chosen = tf.logical_and(word_ids > 0, tf.gather(word_draw, word_ids) < self.mask_rate)
        action = tf.random.stateless_uniform([length], seeds[1])
        random_ids = tf.random.stateless_uniform([length], seeds[2], minval=1, maxval=self.vocab_size, dtype=tf.int32)
        corrupted = tf.where(action < 0.8, self.token_mask_id, tf.where(action < 0.9, random_ids, token_ids))
        inputs = tf.where(chosen, corrupted, token_ids)
        weights = tf.cast(chosen, tf.float32) / self.mask_rate
        return (inputs, tf.zeros_like(inputs)), token_ids, weights


class TrainingDatasetGPT(TrainingDataset):
    """Causal LM: `[CLS] s1 s2 ... [SEP]`; position i predicts token i+1; padding does not count.

    sample_weight is 1 for every real next token (a constant denominator: the sequence length).
    """

    name = "gpt"

    def sentence_process(self, text):
        return (self.tokenizer.encode(text)[0][1:-1],)

    def instance_from_sentences(self, sentences):
        token_ids = [self.token_cls_id] + [i for (ids,) in sentences for i in ids] + [self.token_sep_id]
        return {"token_ids": self.pad(token_ids)}

    def to_training_example(self, features, seed):
        token_ids = features["token_ids"]
        labels = tf.concat([token_ids[1:], [self.token_pad_id]], axis=0)
        weights = tf.cast(labels != self.token_pad_id, tf.float32)
        return (token_ids, tf.zeros_like(token_ids)), labels, weights


class TrainingDatasetUniLM(TrainingDataset):
    """Seq2seq LM (Dong et al. 2019): `[CLS] source [SEP] target [SEP]`, segment 0 / 1.

    An instance's first half of sentences (at least one) is the source, the rest the target; an
    instance of one sentence is split in the middle of its tokens. The target tokens (and its
    final [SEP]) are predicted from the previous position, with `application='unilm'`.
    """

    name = "unilm"
    num_special_tokens = 3

    def sentence_process(self, text):
        return (self.tokenizer.encode(text)[0][1:-1],)

    def instance_from_sentences(self, sentences):
        sentences = [ids for (ids,) in sentences]
        if len(sentences) == 1:
            half = max(1, len(sentences[0]) // 2)
            sentences = [sentences[0][:half], sentences[0][half:]]
        half = (len(sentences) + 1) // 2
        source = [i for ids in sentences[:half] for i in ids]
        target = [i for ids in sentences[half:] for i in ids]
        token_ids = [self.token_cls_id] + source + [self.token_sep_id] + target + [self.token_sep_id]
        segment_ids = [0] * (len(source) + 2) + [1] * (len(target) + 1)
        return {"token_ids": self.pad(token_ids), "segment_ids": self.pad(segment_ids)}

    def to_training_example(self, features, seed):
        token_ids, segment_ids = features["token_ids"], features["segment_ids"]
        labels = tf.concat([token_ids[1:], [self.token_pad_id]], axis=0)
        targets = tf.concat([segment_ids[1:], [0]], axis=0)
        return (token_ids, segment_ids), labels, tf.cast(targets, tf.float32)


def shuffle_windows(dataset, size, seed):
    """Shuffle `dataset` window by window: each run of `size` elements in a random order of its own.

    The permutations come from stateless random ops seeded by `(seed, window number)`, so the order
    depends on nothing else. `Dataset.shuffle` does not give that: its seed is combined with the
    global (graph-level) seed, which differs when tf.distribute re-traces the pipeline for its
    replicas, so one device and N replicas would see different batches.
    """

    def permute(window_number, window):
        count = tf.shape(tf.nest.flatten(window)[0])[0]
        keys = tf.random.stateless_uniform([count], tf.stack([tf.constant(seed, tf.int64), window_number]))
        order = tf.argsort(keys)
        return tf.nest.map_structure(lambda t: tf.gather(t, order), window)

    return dataset.batch(size).enumerate().map(permute).unbatch()


DATASETS = {cls.name: cls for cls in (TrainingDatasetRoBERTa, TrainingDatasetGPT, TrainingDatasetUniLM)}
