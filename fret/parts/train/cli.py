"""`fret train --data SHARD_DIR[:WEIGHT] [--data ...] --model MODEL --output DIR [--set key=value ...]`"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

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
    from fret.parts.train.loop import train

    sources = [parse_data_arg(d) for d in args.data]
    for src in sources:
        if not src.path.is_dir():
            print(f"fret train: --data {src.path}: no such folder", file=sys.stderr)
            return 2
    try:
        out = train(sources, args.model, args.output, settings, restart=args.restart)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        print(f"fret train: {err}", file=sys.stderr)
        return 1
    finally:
        import torch.distributed as torch_dist

        if torch_dist.is_available() and torch_dist.is_initialized():  # started by train() under torchrun
            torch_dist.destroy_process_group()
    print(f"fret train: saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
