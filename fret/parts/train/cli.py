"""`fret train --data SHARD_DIR[:WEIGHT] [--data ...] --model MODEL --output DIR [--set key=value ...]`"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import nullcontext
from pathlib import Path

from fret.core.lock import folder_lock
from fret.parts.train.settings import SettingsError, TrainSettings, apply_overrides


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fret train",
        description="Fine-tune an embedding model on unified shards (or a FRet run's queries stage).")
    p.add_argument("--data", action="append", required=True, metavar="SHARD_DIR[:WEIGHT]",
                   help="folder of part-*.parquet shards; WEIGHT scales its share (2 = twice, 0.5 = half)")
    p.add_argument("--model", default="default",
                   help="Hugging Face encoder or sentence-transformers folder; 'default' = bundled MiniLM")
    p.add_argument("--output", required=True, type=Path, help="folder for the trained model")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help=f"training setting, one of: {', '.join(TrainSettings.model_fields)}")
    p.add_argument("--restart", action="store_true", help="ignore existing checkpoints in OUTPUT")
    return p


def main(argv: list[str]) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:  # argparse already printed the usage line
        return int(exit_.code or 0)
    try:
        settings = apply_overrides(args.overrides)
    except SettingsError as err:
        print(f"fret train: {err}", file=sys.stderr)
        return 2
    from fret.parts.train.data import parse_data_arg

    sources = [parse_data_arg(d) for d in args.data]
    for src in sources:
        if not src.path.is_dir():
            print(f"fret train: --data {src.path}: no such folder", file=sys.stderr)
            return 2
    from fret.parts.bundled import resolve_embedder
    resolve_embedder(args.model, "--model")  # a bad model path is named before OUTPUT is made
    # One writer per output folder, held by rank 0 alone (every rank of a torchrun job writes there
    # together); taken before the model loads, so a second `fret train` stops at once.
    lock = folder_lock(args.output, "output folder") if os.environ.get("RANK", "0") == "0" else nullcontext()
    try:
        with lock:
            from fret.parts.train.loop import train  # torch: after the lock, so a refusal is quick
            out = train(sources, args.model, args.output, settings, restart=args.restart)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"fret train: {err}", file=sys.stderr)
        return 1
    finally:
        # started by train() under torchrun; not even imported when the lock was refused
        torch_dist = sys.modules.get("torch.distributed")
        if torch_dist is not None and torch_dist.is_available() and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
    print(f"fret train: saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
