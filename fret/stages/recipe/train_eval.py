"""Recipe stages `train` (fret train on the mixture) and `eval` (fret eval, base vs trained).

`train` writes the model to RUN/train/model (checkpoints there make it resumable) and one row
describing it; `eval` writes one row per (model, task, data, dim, metric), which `fret report`
and the HTML report show.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import pyarrow as pa

from ...core.config import Section
from ...core.records import stable_id
from ...core.stage import ShardOutput, Stage
from ...parts.evaluation.tasks import EVAL_SCHEMA
from ...parts.train.settings import TrainSettings

TRAIN_SCHEMA = pa.schema([("id", pa.string()), ("model_path", pa.string()), ("base_model", pa.string()),
                          ("data", pa.string()), ("settings", pa.string())])


class TrainStageSettings(Section):
    model: str = "default"
    data_stage: str = "mix"
    settings: TrainSettings = TrainSettings()


class TrainStage(Stage):
    name = "train"
    Settings = TrainStageSettings
    schema = TRAIN_SCHEMA
    runs_in_driver = True  # training and evaluation stay on torchrun / one process

    def __init__(self, ctx, settings):
        super().__init__(ctx, settings)
        self.input = None
        self.depends = (settings.data_stage,)

    def shard_indices(self) -> list[int]:
        return [0]

    def process(self, index: int) -> ShardOutput:
        from ...parts.train.data import DataSource
        from ...parts.train.loop import train
        s = self.settings
        ts = s.settings
        data = self.ctx.stage_dir(s.data_stage)
        out = train([DataSource(data)], s.model, self.ctx.stage_dir("train") / "model", ts)
        row = {"id": stable_id("train", str(out)), "model_path": str(out), "base_model": s.model,
               "data": str(data), "settings": json.dumps(ts.model_dump(), sort_keys=True)}
        return ShardOutput(rows=[row], rows_in=1)


class EvalStageSettings(Section):
    models: list[str] = ["default", "trained"]  # "trained" = this run's train stage output
    retrieval: list[str] = []  # BEIR folders or SQuAD/XQuAD JSON files
    corpus_from: Optional[str] = None
    split: str = "test"
    sts: list[str] = []
    classification: list[str] = []
    bitext: list[list[str]] = []
    dims: Optional[list[int]] = None
    task: Optional[str] = None
    limit: Optional[int] = None
    batch_size: int = 64


class EvalStage(Stage):
    name = "eval"
    Settings = EvalStageSettings
    schema = EVAL_SCHEMA
    runs_in_driver = True  # training and evaluation stay on torchrun / one process
    depends = ("train",)

    def shard_indices(self) -> list[int]:
        return list(range(len(self.settings.models)))

    def process(self, index: int) -> ShardOutput:
        from ...parts.evaluation import tasks
        from ...parts.evaluation.cli import choose_formatting, run_all
        s = self.settings
        name = s.models[index]
        path = self.ctx.read_shard("train", 0)[0]["model_path"] if name == "trained" else name
        args = argparse.Namespace(
            dims=s.dims or tasks.recorded_dims(path), batch_size=s.batch_size,
            retrieval=[Path(p) for p in s.retrieval], split=s.split, limit=s.limit,
            corpus_from=Path(s.corpus_from) if s.corpus_from else None,
            sts=[Path(p) for p in s.sts], classification=[Path(p) for p in s.classification],
            bitext=[tuple(Path(p) for p in pair) for pair in s.bitext])
        formatting, _ = choose_formatting(path, s.task)
        results = run_all(args, tasks.load_model(path), formatting)
        rows = [{"id": stable_id(name, r["task"], r["data"], r["dim"], k), "model": name,
                 "task": r["task"], "data": r["data"], "dim": int(r["dim"]), "metric": k,
                 "value": float(v)}
                for r in results for k, v in r.items()
                if k not in ("task", "data", "dim") and isinstance(v, (int, float))]
        return ShardOutput(rows=rows, rows_in=len(results))
