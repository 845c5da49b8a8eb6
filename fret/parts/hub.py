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


def push(folder: Path, repo: str, private: bool = False, token_env: str = "HF_TOKEN",
         split: str = "train") -> str:
    dataset = load_shards(folder)
    token: Optional[str] = os.environ.get(token_env)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FretError("HF_HUB_OFFLINE=1 is set: unset it to push to the Hugging Face Hub")
    dataset.push_to_hub(repo, private=private, token=token, split=split)
    return f"pushed {dataset.num_rows} rows from {folder} to https://huggingface.co/datasets/{repo}"
