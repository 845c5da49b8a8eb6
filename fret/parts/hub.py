"""`fret export SHARD_DIR --push-to-hub REPO`: publish unified shards as a Hugging Face data set.

The shards are loaded with `datasets.load_dataset("parquet", ...)` (the same path any user takes)
and pushed with `Dataset.push_to_hub`; the token comes from the environment, never the command line.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from ..core.errors import FretError


def load_shards(folder: Path):
    """The unified shards of a stage folder (e.g. RUN/export or RUN/mix) as a `datasets.Dataset`."""
    import datasets
    files = sorted(str(p) for p in Path(folder).glob("part-*.parquet"))
    if not files:
        raise FretError(f"{folder}: no part-*.parquet shards to export")
    return datasets.load_dataset("parquet", data_files=files, split="train")


def check(folder: Path, repo: str, token_env: str = "HF_TOKEN") -> None:
    """Every problem `fret export` can see before it loads anything, all at once."""
    import re

    from ..core.errors import Problems
    problems = Problems()
    folder = Path(folder)
    if not folder.is_dir():
        problems.add(f"{folder}: no such folder (give a stage folder such as RUN/export or RUN/mix)")
    elif not any(folder.glob("part-*.parquet")):
        problems.add(f"{folder}: no part-*.parquet shards to export")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        problems.add(f"--push-to-hub {repo}: expected a data set name of the form user/name")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        problems.add("HF_HUB_OFFLINE=1 is set: unset it to push to the Hugging Face Hub")
    problems.raise_if_any()


def push(folder: Path, repo: str, private: bool = False, token_env: str = "HF_TOKEN",
         split: str = "train") -> str:
    import sys
    dataset = load_shards(folder)
    size = sum(p.stat().st_size for p in Path(folder).glob("part-*.parquet"))
    print(f"fret export: pushing {dataset.num_rows} rows ({size / 1e6:.1f} MB of Parquet) to {repo}",
          file=sys.stderr, flush=True)
    token: Optional[str] = os.environ.get(token_env)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FretError("HF_HUB_OFFLINE=1 is set: unset it to push to the Hugging Face Hub")
    dataset.push_to_hub(repo, private=private, token=token, split=split)
    return f"pushed {dataset.num_rows} rows from {folder} to https://huggingface.co/datasets/{repo}"
