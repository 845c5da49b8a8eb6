"""`fret train --data SHARD_DIR[:WEIGHT] [--data ...] --model MODEL --output DIR [--set key=value ...]`

Everything that can be checked before the model loads is checked first (settings, data folders,
model, output), every problem at once; errors follow fret's contract (docs/errors.md).
"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from fret.core.errors import ArgumentParser, Problems, guarded
from fret.core.lock import folder_lock
from fret.parts.train.settings import TrainSettings, apply_overrides


def parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="fret train",
        description="Fine-tune an embedding model on unified shards (or a FRet run's queries stage). "
                    "Progress: a bar with the time left on a terminal, a line every 30 s in a log.")
    p.add_argument("--data", action="append", required=True, metavar="SHARD_DIR[:WEIGHT]",
                   help="folder of part-*.parquet shards; WEIGHT scales its share (2 = twice, 0.5 = half)")
    p.add_argument("--model", default="default",
                   help="Hugging Face encoder or sentence-transformers folder; 'default' = bundled MiniLM")
    p.add_argument("--output", required=True, type=Path, help="folder for the trained model")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help=f"training setting, one of: {', '.join(TrainSettings.model_fields)}")
    p.add_argument("--restart", action="store_true", help="ignore existing checkpoints in OUTPUT")
    return p


def check(args) -> tuple[TrainSettings, list]:
    """(settings, data sources), or a ConfigError naming every problem: before the model loads."""
    from fret.parts.bundled import resolve_embedder
    from fret.parts.train.data import folder_kind, parse_data_arg
    problems = Problems()
    settings = problems.check(apply_overrides, args.overrides)
    sources = [parse_data_arg(d) for d in args.data]
    for src in sources:
        if not src.path.is_dir():
            problems.add(f"--data {src.path}: no such folder")
        elif not any(src.path.glob("part-*.parquet")):
            problems.add(f"--data {src.path}: no part-*.parquet shards (give a stage folder such as "
                         f"RUN/export, RUN/mix or RUN/queries)")
        elif src.weight <= 0:
            problems.add(f"--data {src.path}:{src.weight:g}: the weight must be > 0")
        else:
            try:
                folder_kind(src.path)
            except (ValueError, OSError) as err:
                problems.add(f"--data {src.path}: {err}")
    problems.check(resolve_embedder, args.model, "--model")  # named before OUTPUT is made
    if args.output.exists() and not args.output.is_dir():
        problems.add(f"--output {args.output}: a file, not a folder")
    problems.raise_if_any()
    return settings, sources


def run(argv: list[str]) -> int:
    """`fret train` under the error contract of its caller (fret.cli or `main` below)."""
    args = parser().parse_args(argv)
    settings, sources = check(args)
    # One writer per output folder, held by rank 0 alone (every rank of a torchrun job writes there
    # together); taken before the model loads, so a second `fret train` stops at once.
    lock = folder_lock(args.output, "output folder") if os.environ.get("RANK", "0") == "0" else nullcontext()
    try:
        with lock:
            from fret.parts.train.loop import train  # torch: after the lock, so a refusal is quick
            out = train(sources, args.model, args.output, settings, restart=args.restart)
    finally:
        # started by train() under torchrun; not even imported when the lock was refused
        torch_dist = sys.modules.get("torch.distributed")
        if torch_dist is not None and torch_dist.is_available() and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
    print(f"fret train: saved {out}")
    return 0


def main(argv: list[str]) -> int:
    """`python -m fret.parts.train.cli` (what torchrun starts): the same contract as `fret train`."""
    return guarded(run, argv, "train")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
