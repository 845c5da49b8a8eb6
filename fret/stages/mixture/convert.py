"""Stage `convert`: academic data sets -> unified rows, one output shard per listed data set.

Each entry names a converter of fret.parts.convert (nq, hotpotqa, miracl, fever, medmcqa, snli, mnli,
classification) and where its rows are: a local file or folder, or a `datasets` name.
"""
from __future__ import annotations

from typing import Any, Optional

from ...core.config import Section
from ...core.errors import FretError
from ...core.records import Unified, schema_of
from ...core.stage import ShardOutput, Stage


class DatasetEntry(Section):
    converter: str
    path: str  # a file (.jsonl .json .parquet .csv .tsv), a save_to_disk folder, or a hub name
    split: Optional[str] = None
    config: Optional[str] = None
    streaming: bool = False
    limit: Optional[int] = None  # at most this many unified rows
    task: Optional[str] = None  # override the converter's task description
    language: str = "en"
    source: Optional[str] = None  # name in the mixture; default: the converter's name
    options: dict[str, Any] = {}


class ConvertSettings(Section):
    datasets: list[DatasetEntry] = []


class ConvertStage(Stage):
    name = "convert"
    Settings = ConvertSettings
    schema = schema_of(Unified)

    def fingerprint(self) -> dict:
        from pathlib import Path
        # A local input file that changes must change the hash: its size and mtime stand for it.
        return {d.path: [Path(d.path).stat().st_size, Path(d.path).stat().st_mtime_ns]
                for d in self.settings.datasets if Path(d.path).is_file()}

    def shard_indices(self) -> list[int]:
        return list(range(len(self.settings.datasets)))

    def process(self, index: int) -> ShardOutput:
        from ...parts.convert import convert, load_rows
        d = self.settings.datasets[index]
        try:
            rows = list(load_rows(d.path, split=d.split, config=d.config, streaming=d.streaming))
            unified, rejects = convert(d.converter, rows, seed=self.ctx.seed, task=d.task,
                                       language=d.language, limit=d.limit, source=d.source, **d.options)
        except (KeyError, TypeError, ValueError, FileNotFoundError) as exc:
            raise FretError(f"convert: datasets.{index} ({d.converter}, {d.path}): {exc}") from None
        return ShardOutput(rows=unified, rejects=rejects, rows_in=len(rows))
