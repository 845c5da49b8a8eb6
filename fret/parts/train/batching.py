"""The batch plan of an epoch: seeded, optionally one source per batch, grouped by length.

The plan is a pure function of (examples, settings, epoch), so a resumed run rebuilds the same
batches and skips the ones already trained on.
"""
from __future__ import annotations

import random
from collections import defaultdict

from fret.parts.train.data import Example

LENGTH_POOL = 50  # batches per length-sorting pool: big enough to group, small enough to stay random


def example_length(ex: Example) -> int:
    """Characters of the longest text of an example, a cheap proxy for its padded token count."""
    return max([len(ex.query), len(ex.positive), *(len(n) for n in ex.negatives)])


def chunk(items: list, size: int) -> list[list]:
    """chunk([1, 2, 3, 4, 5], 2) -> [[1, 2], [3, 4], [5]]"""
    return [items[i:i + size] for i in range(0, len(items), size)]


def _batches_of(indices: list[int], examples: list[Example], batch_size: int, by_length: bool,
                rng: random.Random) -> list[list[int]]:
    rng.shuffle(indices)
    if not by_length:
        return chunk(indices, batch_size)
    batches = []
    for pool in chunk(indices, batch_size * LENGTH_POOL):
        pool.sort(key=lambda i: example_length(examples[i]))
        batches.extend(chunk(pool, batch_size))
    return batches


def auto_batch_size(n_examples: int, dim: int, n_dims: int, negatives: int, free_bytes: int,
                    multiple_of: int = 1) -> int:
    """The largest power-of-two batch whose loss tensors fit in half the free memory, capped by the data.

    With gradient caching the encoder's memory no longer grows with the batch; what does is the
    score matrix, B x (2B + K) floats, kept for backward once per Matryoshka dim (with its
    softmax and masks, ~4 copies), plus the cached embeddings, B x (2 + K) x dim.
    auto_batch_size(10**6, 384, 1, 0, 8 * 2**30) -> 8192
    """
    def need(b: int) -> int:
        return 4 * (4 * n_dims * b * (2 * b + negatives) + 3 * b * (2 + negatives) * dim)

    size = 1
    while size * 2 <= n_examples and need(size * 2) <= free_bytes // 2:
        size *= 2
    return max(size - size % multiple_of, multiple_of)


def plan_epoch(examples: list[Example], batch_size: int, seed: int, epoch: int,
               one_source_per_batch: bool = False, group_by_length: bool = True,
               multiple_of: int = 1) -> list[list[int]]:
    """Batches of example indices for one epoch. Incomplete batches are dropped (every rank
    must hold the same number of examples), except that a data set smaller than one batch gives
    a single batch of all its examples, trimmed to a multiple of `multiple_of`."""
    rng = random.Random(f"{seed}:{epoch}")
    size = min(batch_size, len(examples))
    size -= size % multiple_of
    if size == 0:
        raise ValueError(f"{len(examples)} examples cannot be split over {multiple_of} processes")
    groups: dict[str, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        groups[ex.source if one_source_per_batch else ""].append(i)
    batches = []
    for key in sorted(groups):
        batches.extend(_batches_of(groups[key], examples, size, group_by_length, rng))
    batches = [b for b in batches if len(b) == size]
    rng.shuffle(batches)
    return batches
