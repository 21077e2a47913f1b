"""bert4keras.metrics: ROUGE-L against its definition by brute force, sentence BLEU against nltk."""

import itertools
import math
import random

import pytest

from bert4keras.metrics import rouge_l, sentence_bleu


def _lcs_brute_force(a, b):
    """The longest subsequence of `a` that is also one of `b`, by trying them all (short inputs)."""

    def is_subsequence(s, t):
        it = iter(t)
        return all(x in it for x in s)

    return max(k for k in range(len(a) + 1) for s in itertools.combinations(a, k) if is_subsequence(s, b))


def test_rouge_l_is_the_f1_of_the_longest_common_subsequence():
    rng = random.Random(0)
    for _ in range(200):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 7))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 7))]
        lcs = _lcs_brute_force(a, b)
        expected = 0.0 if lcs == 0 else 2 * lcs / (len(a) + len(b))  # F1 = 2PR / (P + R)
        assert rouge_l(a, b) == pytest.approx(expected), (a, b)
    assert rouge_l("一种基于深度学习的方法", "一种基于深度学习的方法") == 1.0
    assert rouge_l("", "abc") == rouge_l("abc", "") == rouge_l("xyz", "abc") == 0.0


def test_sentence_bleu_matches_nltk_with_smoothing_1():
    nltk_bleu = pytest.importorskip("nltk.translate.bleu_score")
    smoothing = nltk_bleu.SmoothingFunction().method1
    rng = random.Random(1)
    pairs = [("一种基于深度学习的文本分类方法", "基于深度学习的中文文本分类方法研究"), ("研究", "一种方法的研究")]
    pairs += [([rng.choice("abcde") for _ in range(rng.randint(1, 12))],
               [rng.choice("abcde") for _ in range(rng.randint(1, 12))]) for _ in range(300)]
    for hyp, ref in pairs:
        if not set(hyp) & set(ref):
            continue  # nltk returns 0 with a warning; the zero case is checked below
        expected = nltk_bleu.sentence_bleu([list(ref)], list(hyp), smoothing_function=smoothing)
        assert sentence_bleu(list(hyp), list(ref)) == pytest.approx(expected, rel=1e-9, abs=1e-12), (hyp, ref)


def test_sentence_bleu_closed_forms():
    assert sentence_bleu("abcd", "abcd") == pytest.approx(1.0)
    assert sentence_bleu("", "abcd") == sentence_bleu("xyz", "abcd") == 0.0
    # "ab" vs "abcd": unigram and bigram precision 1, no 3- or 4-grams (0 of 1 counts as 0.1 / 1),
    # brevity exp(1 - 4 / 2).
    expected = math.exp(1 - 2) * math.exp((math.log(1) + math.log(1) + 2 * math.log(0.1)) / 4)
    assert sentence_bleu("ab", "abcd") == pytest.approx(expected)
