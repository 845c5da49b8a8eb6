"""Trainer benchmarks (printed ratios, not timed tests).

1. Step throughput of fret's gradient-cached Gecko loss with Matryoshka dims against
   sentence-transformers' CachedMultipleNegativesRankingLoss wrapped in MatryoshkaLoss: same
   model (bundled MiniLM), same data (real XQuAD question -> paragraph pairs), same batch and
   sub-batch sizes, same optimizer. Target: ratio >= 1.0.
2. Peak resident memory of one fret training step at batch 1024 vs batch 32, gradient caching
   on (sub-batch 32), each measured in a fresh subprocess (VmHWM). Target: ratio <= 1.3.

    python benchmarks/bench_train.py [--batch 64] [--steps 4] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
XQUAD = str(Path(__file__).resolve().parent.parent.parent / "shared" / "evaldata" / "xquad" / "xquad.en.json")
DIMS = [384, 256, 128, 64]


def pairs(n: int) -> list[tuple[str, str]]:
    from fret.parts.evaluation import read_squad_retrieval

    data = read_squad_retrieval(XQUAD)
    out = [(data.queries[q], data.corpus[d][1]) for q, rel in data.qrels.items() for d in rel]
    return (out * (n // len(out) + 1))[:n]


def fret_trainer(max_length: int):
    """A step function for fret's trainer (gradient cache + Gecko loss + Matryoshka)."""
    import torch

    from fret.parts.bundled import minilm_dir
    from fret.parts.train.data import Example
    from fret.parts.train.gradcache import cached_step
    from fret.parts.train.loop import batch_texts, make_loss_of
    from fret.parts.train.loss import GeckoLoss
    from fret.parts.train.model import Encoder

    torch.manual_seed(0)
    encoder = Encoder(str(minilm_dir()), "auto", max_length)
    encoder.train()
    opt = torch.optim.AdamW(encoder.parameters(), lr=2e-5)
    loss_fn = GeckoLoss(0.05, same_tower=True, dims=DIMS)

    def step(batch: list[tuple[str, str]], mini: int) -> float:
        texts, b, neg_pos = batch_texts([Example(q, p) for q, p in batch], 0)
        loss = cached_step(encoder, texts, make_loss_of(loss_fn, texts, b, neg_pos, torch.device("cpu")),
                           torch.device("cpu"), mini)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def st_trainer(max_length: int):
    """A step function for sentence-transformers' MatryoshkaLoss(CachedMultipleNegativesRankingLoss)."""
    import torch
    from sentence_transformers import SentenceTransformer
    try:
        from sentence_transformers.sentence_transformer.losses import (CachedMultipleNegativesRankingLoss,
                                                                       MatryoshkaLoss)
    except ImportError:
        from sentence_transformers.losses import CachedMultipleNegativesRankingLoss, MatryoshkaLoss

    from fret.parts.bundled import minilm_dir

    torch.manual_seed(0)
    model = SentenceTransformer(str(minilm_dir()), device="cpu")
    model.max_seq_length = max_length
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    losses = {}

    def step(batch: list[tuple[str, str]], mini: int) -> float:
        if mini not in losses:
            losses[mini] = MatryoshkaLoss(model, CachedMultipleNegativesRankingLoss(
                model, scale=20.0, mini_batch_size=mini), DIMS)
        features = [model.preprocess([q for q, _ in batch]), model.preprocess([p for _, p in batch])]
        loss = losses[mini](features, None)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def throughput(batches: list[list[tuple[str, str]]], mini: int, max_length: int) -> tuple[float, float]:
    """Seconds per step (fret, ST), steps interleaved so load changes on a shared machine hit both alike."""
    ours, theirs = fret_trainer(max_length), st_trainer(max_length)
    t_ours, t_theirs = [], []
    for i, batch in enumerate(batches):
        for fn, times in ((ours, t_ours), (theirs, t_theirs)) if i % 2 else ((theirs, t_theirs), (ours, t_ours)):
            t = time.perf_counter()
            fn(batch, mini)
            times.append(time.perf_counter() - t)
    return sum(t_ours[1:]) / len(t_ours[1:]), sum(t_theirs[1:]) / len(t_theirs[1:])  # first step warms up


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM belongs to the address space, so it starts afresh
    at exec; ru_maxrss does not (Linux carries the parent's high-water mark into the child)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def memory_child(batch_size: int, mini: int, max_length: int) -> None:
    """One gradient-cached fret step in this process; prints peak RSS in MiB as JSON."""
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
    loss = fret_trainer(max_length)(pairs(batch_size), mini)
    peak_mib = peak_rss_mib()
    print(json.dumps({"batch": batch_size, "peak_rss_mib": peak_mib, "loss": loss}))


def measure_memory(batch_size: int, mini: int, max_length: int, threads: int) -> float:
    env = {**os.environ, "BENCH_THREADS": str(threads)}
    out = subprocess.run([sys.executable, __file__, "--child-memory", str(batch_size), "--mini", str(mini),
                          "--max-length", str(max_length)], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--mini", type=int, default=32)
    ap.add_argument("--steps", type=int, default=4, help="timed steps (plus one warm-up)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--part", choices=["all", "throughput", "memory"], default="all")
    ap.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_memory:
        memory_child(args.child_memory, args.mini, args.max_length)
        return
    import torch

    torch.set_num_threads(args.threads)
    if args.part in ("all", "throughput"):
        data = pairs(args.batch * (args.steps + 1))
        steps = [data[i * args.batch:(i + 1) * args.batch] for i in range(args.steps + 1)]
        ours, theirs = throughput(steps, args.mini, args.max_length)
        print(f"throughput (batch {args.batch}, sub-batch {args.mini}, max_length {args.max_length}, "
              f"{args.threads} thread(s), dims {DIMS}):")
        print(f"  fret Gecko+MRL, gradient cache:         {ours:.2f} s/step")
        print(f"  ST MatryoshkaLoss(CachedMNRL):          {theirs:.2f} s/step")
        print(f"  throughput ratio fret/ST: {theirs / ours:.2f}x (target >= 1.0)")
    if args.part in ("all", "memory"):
        small = measure_memory(32, args.mini, args.max_length, args.threads)
        large = measure_memory(1024, args.mini, args.max_length, args.threads)
        print(f"peak RSS, gradient cache on (sub-batch {args.mini}, max_length {args.max_length}):")
        print(f"  batch 32: {small:.0f} MiB   batch 1024: {large:.0f} MiB   ratio {large / small:.2f}x (target <= 1.3)")


if __name__ == "__main__":
    main()
