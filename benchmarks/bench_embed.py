"""Seed-embedder throughput: length-sorted batches against corpus order, same passages, one run.

    python benchmarks/bench_embed.py [--n 2000] [--batch-size 64] [--rounds 1] [--model default]

Both sides call `Embedder.encode` on the same real Wikipedia passages (bundled en/es/fr extracts,
chunked as the corpus stage does) with the same batch size; the only difference is whether batches
are formed after sorting by token length. Rounds alternate the two orders so that machine load
drifts hit both alike. Also prints the share of padding tokens each order computes, which is where
the difference comes from, and checks that both orders give the same vectors.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from fret.parts.corpus import CorpusSettings, iter_passages
from fret.parts.embed import Embedder
from fret.core.records import Passage


def padding_share(lengths: np.ndarray, batch_size: int) -> float:
    """Padded positions / all positions: padding_share(np.array([4, 2]), 2) -> 0.25."""
    total = sum(int(lengths[i:i + batch_size].max()) * len(lengths[i:i + batch_size])
                for i in range(0, len(lengths), batch_size))
    return 1 - int(lengths.sum()) / total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--model", default="default")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    settings = CorpusSettings(sources=[{"type": "wiki", "limit": args.n}])
    passages = [p for p in iter_passages(settings) if isinstance(p, Passage)]
    # interleave languages so the sample mixes en/es/fr the way a multilingual corpus would
    by_lang = [[p for p in passages if p.language == lang] for lang in ("en", "es", "fr")]
    mixed = [p for group in zip(*by_lang) for p in group][:args.n]
    texts = [p.text for p in mixed]
    emb = Embedder(args.model, device=args.device, batch_size=args.batch_size)
    lengths = emb.token_lengths(texts)
    print(f"model {emb.path} on {emb.device}; {len(texts)} passages, tokens per passage "
          f"min {lengths.min()} median {int(np.median(lengths))} max {lengths.max()}, "
          f"batch size {args.batch_size}")
    print(f"padding share: corpus order {padding_share(lengths, args.batch_size):.1%}, "
          f"length-sorted {padding_share(np.sort(lengths)[::-1], args.batch_size):.1%}")

    emb.encode(texts[:args.batch_size])  # warm-up: first-call allocations, thread pools
    seconds = {True: 0.0, False: 0.0}
    vectors = {}
    for r in range(args.rounds):
        for sort in ((True, False) if r % 2 == 0 else (False, True)):
            t0 = time.perf_counter()
            vectors[sort] = emb.encode(texts, sort_by_length=sort)
            dt = time.perf_counter() - t0
            seconds[sort] += dt
            name = "length-sorted" if sort else "corpus order "
            print(f"round {r + 1} {name}: {len(texts) / dt:8.1f} passages/s ({dt:.1f} s)")
    diff = float(np.abs(vectors[True] - vectors[False]).max())
    fast, slow = (len(texts) * args.rounds / seconds[s] for s in (True, False))
    print(f"length-sorted {fast:.1f} passages/s, corpus order {slow:.1f} passages/s, "
          f"ratio {fast / slow:.2f}x; max |difference| between the two orders' vectors {diff:.1e}")


if __name__ == "__main__":
    main()
