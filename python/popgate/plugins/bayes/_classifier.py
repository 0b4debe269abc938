"""Gary Robinson's token probabilities and Fisher's chi-square combining, as SpamBayes
computes them (spambayes/classifier.py, ``chi2_spamprob``).

A token seen in ``s`` of ``nspam`` spam and ``h`` of ``nham`` ham messages has the raw
probability ``(s/nspam) / (s/nspam + h/nham)``; Robinson's adjustment pulls it towards
``UNKNOWN_WORD_PROB`` the fewer times the token was seen, so a token seen once is weak
evidence and an unknown one is none: ``(S*x + n*p) / (S + n)`` with ``n = s + h``.
The ``MAX_DISCRIMINATORS`` tokens farthest from 0.5 (and at least
``MINIMUM_PROB_STRENGTH`` from it) are combined: ``S`` and ``H`` are Fisher's
chi-square tests of "these are spam" and "these are ham" probabilities, and the score
is ``(S - H + 1) / 2``: near 1 spam, near 0 ham, near 0.5 when the evidence is weak or
points both ways (which the unsure band catches).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# SpamBayes' defaults (Options.py, [Classifier]).
UNKNOWN_WORD_STRENGTH = 0.45
UNKNOWN_WORD_PROB = 0.5
MINIMUM_PROB_STRENGTH = 0.1
MAX_DISCRIMINATORS = 150

Counts = tuple[int, int]  # (spam, ham): messages the token was trained in


def chi2q(x2: float, degrees: int) -> float:
    """P(chi-square >= x2) with an even number of degrees of freedom."""
    m = x2 / 2.0
    term = math.exp(-m)
    total = term
    for i in range(1, degrees // 2):
        term *= m / i
        total += term
    return min(total, 1.0)


def token_prob(spam: int, ham: int, nspam: int, nham: int) -> float:
    """Robinson's adjusted probability that a message with this token is spam."""
    spam_ratio = spam / nspam if nspam else 0.0
    ham_ratio = ham / nham if nham else 0.0
    raw = spam_ratio / (spam_ratio + ham_ratio) if spam_ratio + ham_ratio else UNKNOWN_WORD_PROB
    n = spam + ham
    return (UNKNOWN_WORD_STRENGTH * UNKNOWN_WORD_PROB + n * raw) / (UNKNOWN_WORD_STRENGTH + n)


@dataclass(frozen=True)
class Score:
    p: float  # 0 ham .. 1 spam
    clues: tuple[tuple[str, float], ...]  # the tokens used, strongest first


def score(tokens: Iterable[str], counts: Mapping[str, Counts], nspam: int,
          nham: int) -> Score:
    """Combines the strongest tokens' probabilities; `counts` lacks tokens never trained."""
    clues: list[tuple[float, str, float]] = []
    for token in tokens:
        spam, ham = counts.get(token, (0, 0))
        prob = token_prob(spam, ham, nspam, nham)
        strength = abs(prob - 0.5)
        if strength >= MINIMUM_PROB_STRENGTH:
            clues.append((strength, token, prob))
    # Strongest first; ties by token, so a score never depends on set order.
    clues.sort(key=lambda clue: (-clue[0], clue[1]))
    used = clues[:MAX_DISCRIMINATORS]
    if not used:
        return Score(0.5, ())
    # Sums of logarithms: the products SpamBayes keeps with frexp() would underflow.
    ln_ham = math.fsum(math.log(prob) for _, _, prob in used)
    ln_spam = math.fsum(math.log1p(-prob) for _, _, prob in used)
    degrees = 2 * len(used)
    spam_evidence = 1.0 - chi2q(-2.0 * ln_spam, degrees)
    ham_evidence = 1.0 - chi2q(-2.0 * ln_ham, degrees)
    p = (spam_evidence - ham_evidence + 1.0) / 2.0
    return Score(min(max(p, 0.0), 1.0), tuple((token, prob) for _, token, prob in used))
