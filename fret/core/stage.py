"""What a stage is, and the run context every stage gets.

A stage turns the shards of the stage before it into its own shards, one output shard per
input shard (same index). Subclasses set `Settings`, `input`, `schema` and implement
`process(index)`; `setup()` loads heavy things once, only when there is work to do.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Optional

import pyarrow as pa
from pydantic import BaseModel

from . import shards
from .errors import FretError
from .records import Reject, stable_id


class StageError(FretError, RuntimeError):
    """A stage cannot run (missing upstream, settings mismatch); the message says what to do."""


@dataclass
class ShardOutput:
    rows: list[dict]
    rejects: list[Reject] = field(default_factory=list)
    rows_in: int = 0
    counts: Counter = field(default_factory=Counter)  # stage-specific tallies


class RunContext:
    """The run folder, the resolved pipeline settings and lazily built shared resources."""

    def __init__(self, run_dir: Path, config: BaseModel, pipeline_path: Optional[Path] = None):
        self.run_dir = Path(run_dir)
        self.config = config
        self.pipeline_path = pipeline_path
        self.overrides: list[str] = []  # the --set items, saved with the resolved settings
        self.progress = True
        self.cache_writer: Optional[str] = None  # a Ray worker's name: it writes its own cache file
        self.verified: set[str] = set()  # stages whose shard checksums this command has checked
        self.command = "generate"  # the fret command running ("run" or "generate"): its hints say so
        self.allow_empty = False  # --allow-empty: a stage that ends with 0 rows does not stop the run
        self._llm = None
        self._models: dict[str, Any] = {}

    @property
    def seed(self) -> int:
        return self.config.seed

    def stage_dir(self, name: str) -> Path:
        return self.run_dir / name

    def rng(self, *parts: Any) -> random.Random:
        """A random generator seeded by the run seed and the given lineage."""
        return random.Random(stable_id(self.seed, *parts))

    @property
    def llm(self):
        if self._llm is None:
            from ..parts.llm import CachedLLM, make_llm
            llm = make_llm(self.config.llm)
            cache = self.config.cache
            if cache.enabled:
                path = cache.path or self.run_dir / "_cache" / "llm.sqlite"
                llm = CachedLLM(llm, path, writer=self.cache_writer)
            self._llm = llm
        return self._llm

    def model(self, key: str, build: Callable[[], Any]) -> Any:
        """The model `build` makes, built once per context under `key` and shared by every stage
        that asks for it: `embed` and `mine` load the seed embedder once per run, and a Ray actor
        that runs one stage after another keeps it."""
        if key not in self._models:
            self._models[key] = build()
        return self._models[key]

    def llm_identity(self) -> dict:
        """The settings that decide LLM outputs, without loading the model."""
        s = self.config.llm
        return {"backend": s.backend, "model": s.model, "gguf_file": s.gguf_file, "dtype": s.dtype}

    def read_shard(self, stage: str, index: int) -> list[dict]:
        return shards.read_rows(self.stage_dir(stage) / shards.shard_name(index))

    def read_stage_table(self, stage: str, columns=None, filters=None) -> pa.Table:
        paths = [str(p) for p in shards.stage_shards(self.stage_dir(stage))]
        if not paths:
            raise StageError(f"stage {stage!r} has no output in {self.run_dir}; run it first")
        tables = [shards.read_table(p, columns=columns, filters=filters) for p in paths]
        return pa.concat_tables(tables)

    def lookup(self, stage: str, ids) -> dict[str, dict]:
        """Rows of a stage by id, reading only the rows asked for."""
        ids = sorted(set(i for i in ids if i is not None))
        if not ids:
            return {}
        table = self.read_stage_table(stage, filters=[("id", "in", ids)])
        return {r["id"]: r for r in table.to_pylist()}

    def close(self) -> None:
        self._models.clear()
        if self._llm is not None:
            self._llm.close()
            self._llm = None


class Stage:
    name: ClassVar[str]
    Settings: ClassVar[type[BaseModel]]
    schema: ClassVar[pa.Schema]
    input: ClassVar[Optional[str]] = None  # whose shards map 1:1 onto ours
    depends: ClassVar[tuple[str, ...]] = ()  # other stages read whole (their hashes join ours)
    uses_llm: ClassVar[bool] = False
    # Executors: a stage that holds a model (LLM, embedder) runs on a pool of Ray actors that
    # set it up once; one that must run in the driver (sub-runs, training) is never shipped out.
    uses_model: ClassVar[bool] = False
    runs_in_driver: ClassVar[bool] = False

    def __init__(self, ctx: RunContext, settings: BaseModel):
        self.ctx = ctx
        self.settings = settings

    def fingerprint(self) -> dict:
        """Beyond the settings section: templates, model identities... anything that decides output."""
        return {}

    def shard_indices(self) -> list[int]:
        if self.input is None:
            raise NotImplementedError(f"stage {self.name} must say which shards it writes")
        return [shards.shard_index(p) for p in shards.stage_shards(self.ctx.stage_dir(self.input))]

    def setup(self) -> None:
        """Load models, indexes... once, before the first shard that needs work."""

    def process(self, index: int) -> ShardOutput:
        raise NotImplementedError

    @classmethod
    def report_notes(cls, totals: dict) -> list[str]:
        """Lines `fret report` (text and HTML) shows under this stage, read off its manifest's
        totals: what its counts mean that the counts alone do not say. None by default."""
        return []

    def reject(self, row_id: str, reason: str, detail: str = "", raw: str = "") -> Reject:
        return Reject(id=row_id, stage=self.name, reason=reason, detail=detail, raw=raw)
