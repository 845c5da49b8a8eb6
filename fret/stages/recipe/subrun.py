"""Recipe stages `fret`, `e5`, `multilongdoc`: run a whole pipeline file inside this run.

The sub-run lives in RUN/runs/STAGE and resumes like any run; this stage's shard is a copy of
the sub-run's unified `export` output, so `mix` can read every source the same way.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from ...core.config import ExistingPath, Section
from ...core.records import Unified, schema_of
from ...core.stage import ShardOutput, Stage


PIPELINES_DIR = Path(__file__).resolve().parents[3] / "pipelines"


class SubRunSettings(Section):
    pipeline: Optional[ExistingPath] = None  # default: pipelines/STAGE.yaml of this project
    overrides: list[str] = []  # `--set` items for the sub-pipeline
    export_stage: str = "export"


class SubRunStage(Stage):
    schema = schema_of(Unified)
    runs_in_driver = True  # a whole pipeline of its own (with its own executor)

    @classmethod
    def pipeline_file(cls, settings: SubRunSettings) -> Path:
        """The sub-run's pipeline file (checked with its overrides before the recipe starts)."""
        return Path(settings.pipeline or PIPELINES_DIR / f"{cls.name}.yaml")

    @property
    def pipeline(self) -> Path:
        return self.pipeline_file(self.settings)

    def fingerprint(self) -> dict:
        return {"pipeline_sha256": hashlib.sha256(self.pipeline.read_bytes()).hexdigest()}

    def shard_indices(self) -> list[int]:
        return [0]

    def process(self, index: int) -> ShardOutput:
        from ...core import shards
        from ...core.runner import open_run, run_pipeline
        sub_dir = self.ctx.run_dir / "runs" / self.name
        sub = open_run(self.pipeline, sub_dir, self.settings.overrides)
        run_pipeline(sub, progress=self.ctx.progress)
        rows = [r for _, part in shards.iter_stage_rows(sub_dir / self.settings.export_stage) for r in part]
        return ShardOutput(rows=rows, rows_in=len(rows))


class FretSubRun(SubRunStage):
    name = "fret"
    Settings = SubRunSettings


class E5SubRun(SubRunStage):
    name = "e5"
    Settings = SubRunSettings


class MultiLongDocSubRun(SubRunStage):
    name = "multilongdoc"
    Settings = SubRunSettings
