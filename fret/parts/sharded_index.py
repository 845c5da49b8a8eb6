"""Searching a corpus index in shards, for corpora whose vectors do not fit one worker.

The corpus vectors are cut into row ranges of at most `shard_rows`; a query block is searched
against each range in turn (only that range's vectors and index in memory), and each query's
top-N are merged across ranges. With exact (flat) search the merged top-N is the top-N of one
index over the whole corpus: every true top-N vector is in its own range's top-N.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .index import IndexSettings, build_index


def row_ranges(n: int, shard_rows: int) -> list[tuple[int, int]]:
    """row_ranges(10, 4) -> [(0, 4), (4, 8), (8, 10)]"""
    return [(lo, min(lo + shard_rows, n)) for lo in range(0, n, shard_rows)]


def merge_topk(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge per-shard (scores (nq, k_i), global indices (nq, k_i)) into the best k per query:
    highest score first, ties to the lower index; empty slots (-1, -inf) last."""
    scores = np.concatenate([s for s, _ in parts], axis=1)  # (nq, sum k_i)
    indices = np.concatenate([i for _, i in parts], axis=1)  # (nq, sum k_i)
    empty = indices < 0
    tie = np.where(empty, np.iinfo(np.int64).max, indices)
    order = np.lexsort((tie, -scores), axis=1)[:, :k]  # (nq, k)
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


def search_sharded(queries: np.ndarray, n: int, shard_rows: int,
                   load: Callable[[int, int], np.ndarray], k: int,
                   settings: IndexSettings | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of (nq, dim) queries over n corpus vectors read range by range with
    `load(lo, hi) -> (hi - lo, dim)`; indices are global row numbers."""
    parts = []
    for lo, hi in row_ranges(n, shard_rows):
        index = build_index(load(lo, hi), settings)
        scores, found = index.search(queries, k)  # (nq, min(k, hi - lo)) each
        parts.append((scores, np.where(found >= 0, found + lo, -1)))
        del index
    return merge_topk(parts, min(k, n))
