"""Stage `export` (E5-mistral): examples -> unified training rows (its columns: README.md, the unified record).

STS and bitext are symmetric (the target is formatted like the query); classification keeps
(input, label, misleading label) as (query, positive, negative), the Instructor-style form the
trainer reads like any other. `meta` carries the task, its group and the sampled attributes.
"""
from __future__ import annotations

import json

from ...core.config import Section
from ...core.records import Unified, schema_of, stable_id
from ...core.stage import ShardOutput, Stage
from .records import GROUPS


class E5ExportSettings(Section):
    source: str = "e5"


class E5ExportStage(Stage):
    name = "export"
    Settings = E5ExportSettings
    schema = schema_of(Unified)
    input = "examples"

    def process(self, index: int) -> ShardOutput:
        from ...core.shards import load_manifest
        examples = self.ctx.read_shard("examples", index)
        hashes = {n: load_manifest(self.ctx.stage_dir(n)).get("settings_hash")
                  for n in ("brainstorm", "examples")}
        llm = self.ctx.llm_identity()
        rows = []
        for e in examples:
            meta = {"example_id": e["id"], "task_id": e["task_id"], "group": e["group"],
                    "attributes": json.loads(e["attributes"]),
                    "language_checks": json.loads(e["language_checks"]),
                    "target_language": e["target_language"], "attempts": e["attempts"],
                    "llm": llm, "settings_hashes": hashes}
            rows.append(Unified(
                id=stable_id("e5", e["id"], e["query"], e["positive"], prefix="e5-"),
                task=e["task"], query=e["query"], positive=e["positive"], positive_title=None,
                negatives=[e["negative"]], negative_titles=[None], source=self.settings.source,
                task_type=e["task_type"], symmetric=GROUPS[e["group"]].symmetric,
                language=e["language"], meta=json.dumps(meta, sort_keys=True)).model_dump())
        return ShardOutput(rows=rows, rows_in=len(examples))
