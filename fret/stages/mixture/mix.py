"""Stage `mix`: unified rows from several sources -> one de-duplicated, decontaminated mixture.

Sources are this run's `convert` shards (one source per data set) and any folders of unified
shards listed in `inputs` (e.g. other runs' export folders). Strategies: `original` (Gecko's
original distribution), `weights`, `uniform_task_type` (Gecko's uniform sampling over task types).
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import pyarrow.parquet as pq

from ...core import shards
from ...core.config import ExistingPath, Section
from ...core.records import Unified, schema_of
from ...core.stage import ShardOutput, Stage


class MixInput(Section):
    name: str
    path: ExistingPath  # a folder of unified part-*.parquet shards
    weight: float = 1.0


class DecontamSettings(Section):
    sets: dict[str, ExistingPath] = {}  # name -> BEIR folder, STS file, JSONL or text file
    ngram: int = 8
    threshold: float = 0.5


class MixSettings(Section):
    inputs: list[MixInput] = []
    use_convert: bool = True  # include this run's `convert` output, one source per data set
    convert_weight: float = 1.0
    stages: dict[str, float] = {}  # other stages of this run with unified output -> weight (recipes)
    strategy: Literal["original", "weights", "uniform_task_type"] = "original"
    total: Optional[int] = None
    decontaminate: DecontamSettings = DecontamSettings()
    shard_size: int = 5000


def read_unified(folder: Path) -> list[dict]:
    return [r for p in sorted(Path(folder).glob("part-*.parquet")) for r in pq.read_table(p).to_pylist()]


class MixStage(Stage):
    name = "mix"
    Settings = MixSettings
    schema = schema_of(Unified)

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.depends = (("convert",) if settings.use_convert else ()) + tuple(settings.stages)

    def fingerprint(self) -> dict:
        return {i.name: shards.load_manifest(Path(i.path)).get("settings_hash")
                or sorted(p.name for p in Path(i.path).glob("part-*.parquet"))
                for i in self.settings.inputs}

    def _sources(self) -> tuple[dict[str, list[dict]], dict[str, float]]:
        s = self.settings
        sources, weights = {}, {}
        if s.use_convert:
            converted = shards.iter_stage_rows(self.ctx.stage_dir("convert"))
            for d, (_, rows) in zip(self.ctx.config.convert.datasets, converted):
                name = d.source or d.converter
                sources[name], weights[name] = rows, s.convert_weight
        for name, weight in s.stages.items():
            sources[name] = [r for _, rows in shards.iter_stage_rows(self.ctx.stage_dir(name)) for r in rows]
            weights[name] = weight
        for i in s.inputs:
            sources[i.name], weights[i.name] = read_unified(i.path), i.weight
        return sources, weights

    def shard_indices(self) -> list[int]:
        from ...parts.decontam import build_index
        from ...parts.mix import mix
        s = self.settings
        sources, weights = self._sources()
        index = (build_index(dict(s.decontaminate.sets), ngram=s.decontaminate.ngram)
                 if s.decontaminate.sets else None)
        self.rows, self.stats, self.rejects = mix(
            sources, weights=weights, strategy=s.strategy, total=s.total, seed=self.ctx.seed,
            index=index, threshold=s.decontaminate.threshold)
        self.rows_in = sum(len(r) for r in sources.values())
        return list(range(max(1, -(-len(self.rows) // s.shard_size))))

    def process(self, index: int) -> ShardOutput:
        per = self.settings.shard_size
        first = index == 0  # whole-mixture rejects and stats are recorded once, with shard 0
        counts = {f"out_{k}": v for k, v in self.stats["out_by_task_type"].items()} if first else {}
        if first:
            counts["not_sampled"] = self.stats["not_sampled"]
        return ShardOutput(rows=self.rows[index * per:(index + 1) * per],
                           rejects=self.rejects if first else [],
                           rows_in=self.rows_in if first else 0, counts=counts)
