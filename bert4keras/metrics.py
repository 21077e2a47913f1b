"""Scores of generated text against a reference: ROUGE-L F1 and sentence BLEU.

bert4keras 0.11.5's seq2seq examples called the `rouge` and `nltk` packages for these; here they are
short exact implementations of the same definitions, over any sequences of units (characters for
Chinese, tokens, words). Pure Python: no Keras, no NumPy.
"""

import collections
import math

__all__ = ["rouge_l", "sentence_bleu"]


def _lcs_length(a, b):
    """Length of the longest common subsequence of `a` and `b` (dynamic programming, one row kept)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        curr = [0]
        for j, y in enumerate(b):
            curr.append(prev[j] + 1 if x == y else max(prev[j + 1], curr[j]))
        prev = curr
    return prev[-1]


def rouge_l(hypothesis, reference):
    """ROUGE-L F1 (beta = 1) of one hypothesis against one reference.

    With `lcs` the length of their longest common subsequence, precision is `lcs / len(hypothesis)`,
    recall `lcs / len(reference)` and the score their harmonic mean.

    Args:
        hypothesis, reference: sequences of comparable units (a str compares characters).
    Returns:
        float in [0, 1]; 0.0 when they share nothing (or either is empty).
    Source: Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries", sec. 3.1; equals
    `rouge_score`'s rougeL fmeasure on the same units.
    """
    lcs = _lcs_length(hypothesis, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(hypothesis), lcs / len(reference)
    return 2 * precision * recall / (precision + recall)


def sentence_bleu(hypothesis, reference, max_n=4, epsilon=0.1):
    """BLEU of one hypothesis against one reference, smoothed for short sentences.

    The geometric mean of the clipped n-gram precisions for n = 1..max_n, times the brevity penalty
    `exp(1 - len(reference) / len(hypothesis))` when the hypothesis is not longer; a zero n-gram
    count (n > 1) counts as `epsilon` ("smoothing 1").

    Args:
        hypothesis, reference: sequences of comparable units (a str compares characters).
        max_n: int, the longest n-grams (4: BLEU-4).
        epsilon: float, the count given to an n-gram order without a match.
    Returns:
        float in [0, 1]; 0.0 for an empty hypothesis or one without a unigram in the reference.
    Source: Papineni et al. 2002; smoothing: Chen & Cherry 2014, method 1. Equals nltk's
    `sentence_bleu([reference], hypothesis, smoothing_function=SmoothingFunction().method1)`.
    """

    def ngrams(tokens, n):
        return collections.Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))

    if not hypothesis:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        hyp_ngrams, ref_ngrams = ngrams(hypothesis, n), ngrams(reference, n)
        matches = sum(min(count, ref_ngrams[g]) for g, count in hyp_ngrams.items())
        if n == 1 and matches == 0:
            return 0.0
        total = max(1, sum(hyp_ngrams.values()))
        log_precision += math.log((matches or epsilon) / total) / max_n
    brevity = 1.0 if len(hypothesis) > len(reference) else math.exp(1 - len(reference) / len(hypothesis))
    return brevity * math.exp(log_precision)
