"""Class-balanced batches (``avsearch train --sampler balanced --per-class M``).

The default sampler (``random``, :func:`avsearch.train.data.epoch_batches`) draws pairs in
proportion to their number, so a label with many pairs fills most of every batch: 5,000
AV-Digits pairs next to a few hundred natural pairs give batches of digits (issue #19). The
balanced sampler is the metric-learning field's class-balanced batch (pytorch-metric-learning's
``MPerClassSampler``), for the labeled pairs:

- each batch holds ``M`` labeled pairs of each of ``k = min(C, B_L // M)`` labels, the labels
  drawn without replacement, each with the same chance (C = labels among the labeled pairs,
  ``B_L`` = the labeled slots of a batch, as the random sampler counts them: all ``B`` of it
  when the method reads no hidden-label pair or there is none, else
  ``round(B · max(labeled share, min_labeled_share))``);
- a label with fewer than ``M`` labeled pairs gives all of them: no pair is twice in a batch,
  so a batch holds **at most** ``M`` pairs of a label;
- the pairs of a label are drawn without replacement, each with the same chance;
- **hidden labels**: pairs whose label is hidden (``--labeled-ratio`` < 1) or unknown (videos
  without a label) have no class to balance. When the method reads them (``infonce``, ``psd``)
  they fill the rest of each batch, ``B`` minus its labeled pairs, uniformly: drawn from
  successive seeded permutations of them, as the random sampler draws them, so each is seen
  about as often as the others; there are never more of them than exist;
- with fewer labels than ``B_L // M`` (10 digits and ``M = 4`` leave 216 of 256 slots), every
  label is in every batch with ``M`` pairs and the batch is shorter, not padded with more
  pairs of the same labels; the number of steps is ``ceil(N / L)`` for the batch length ``L``
  (N = all pairs), so an epoch draws about as many pairs as the random sampler's
  ``ceil(N / B)`` full batches.

Everything comes from the epoch's generator (``rng``), so the batches are a function of the
seed and the epoch, and a recorded command gives the same model byte for byte.
"""

from __future__ import annotations

import math

import numpy as np

from avsearch.errors import UsageError
from avsearch.train.data import cycle


def balanced_batches(
    rng: np.random.Generator,
    labeled: np.ndarray,
    codes: np.ndarray,
    unlabeled: np.ndarray,
    batch_size: int,
    per_class: int,
    *,
    use_unlabeled: bool,
    min_labeled_share: float,
) -> list[np.ndarray]:
    """One epoch's class-balanced batches of item indices (module docstring).

    ``labeled`` are the indices of the pairs whose label is known, ``codes`` their labels
    (``codes[i]`` is the label of ``labeled[i]``), ``unlabeled`` the indices of the others.
    Each batch lists its labeled pairs first (label by label), then the hidden-label ones.
    """
    labeled = np.asarray(labeled, dtype=np.int64)
    codes = np.asarray(codes)
    unlabeled = np.asarray(unlabeled, dtype=np.int64)
    if codes.shape != labeled.shape:
        raise ValueError(f"codes {codes.shape} must match labeled {labeled.shape}")
    if per_class < 1 or batch_size < 2:
        raise ValueError(f"per_class {per_class} and batch_size {batch_size} must be ≥ 1 and ≥ 2")
    if len(labeled) == 0:
        raise UsageError(
            "--sampler balanced needs labeled pairs, and none of the pairs has a label",
            hint="give labels (--labels CSV or class folders), or drop --sampler balanced",
        )
    classes = np.unique(codes)
    members = [labeled[codes == c] for c in classes]
    with_unlabeled = use_unlabeled and len(unlabeled) > 0
    n = len(labeled) + len(unlabeled)
    b = min(batch_size, n)
    if with_unlabeled:
        share = max(len(labeled) / n, min_labeled_share)
        b_l = min(len(labeled), max(1, round(b * share)))
    else:
        b_l = min(b, len(labeled))
    k = min(len(classes), max(1, b_l // per_class))
    sizes = np.array([min(per_class, len(m)) for m in members])
    # the typical labeled part of a batch: k labels of mean size (exact when all have ≥ M)
    typical = max(1, round(k * float(sizes.mean())))
    fill = min(len(unlabeled), b - typical) if with_unlabeled else 0
    steps = max(1, math.ceil(n / (typical + fill)))
    # the hidden-label stream: enough for every batch to take up to b - (its labeled part)
    pool = cycle(rng, unlabeled, steps * (b - 1)) if with_unlabeled else unlabeled[:0]
    taken = 0
    batches = []
    for _ in range(steps):
        chosen = np.sort(rng.choice(len(classes), size=k, replace=False))
        parts = [rng.choice(members[c], size=sizes[c], replace=False) for c in chosen]
        lab = np.concatenate(parts)
        u = min(len(unlabeled), b - len(lab)) if with_unlabeled else 0
        batches.append(np.concatenate([lab, pool[taken : taken + u]]))
        taken += u
    return batches
