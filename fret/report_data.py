"""What `fret report` (text) and `fret report --html` both show beyond the counts: each stage's own
notes and the data quality of every folder of unified rows, with the figures of that folder's
previous export.

A stage's notes come from its class (`Stage.report_notes`, looked up in the stage registry by the
run's pipeline kind), plus any `notes` a manifest carries itself (`fret eval --rerank`'s teacher).
Quality figures (`fret.parts.quality`) are remembered per folder in RUN/_quality.json under the
folder's settings hash and shard checksums, so a report after the folder was made again (other
settings, `--restart`) shows the last other export's figures beside the new ones.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Optional

import pyarrow.parquet as pq

from .core import shards
from .core.errors import FretError
from .core.records import Unified, schema_of

UNIFIED_COLUMNS = set(schema_of(Unified).names)
HISTORY = "_quality.json"
KEEP = 10  # exports remembered per folder


def _pipeline_kind(run_dir: Path) -> Optional[str]:
    try:
        return json.loads((run_dir / "_settings.json").read_text())["settings"]["pipeline"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stage_notes(stage_dir: Path, totals: dict) -> list[str]:
    """The stage's own lines for its report (see the module doc)."""
    from .stages import stage_class
    notes = [str(n) for n in totals.get("notes") or []]
    kind = _pipeline_kind(stage_dir.parent)
    if kind is None:
        return notes
    name = shards.load_manifest(stage_dir).get("stage") or stage_dir.name
    try:
        cls = stage_class(kind, name)
    except FretError:  # a folder the pipeline does not name (e.g. eval --rerank's teacher)
        return notes
    return notes + cls.report_notes(totals)


def is_unified(stage_dir: Path) -> bool:
    paths = shards.stage_shards(stage_dir)
    return bool(paths) and set(pq.read_schema(paths[0]).names) == UNIFIED_COLUMNS


def _sample_languages(run_dir: Path) -> dict[str, int]:
    paths = shards.stage_shards(run_dir / "sample")
    if not paths or "language" not in pq.read_schema(paths[0]).names:
        return {}
    return dict(Counter(x for p in paths for x in pq.read_table(p, columns=["language"])["language"].to_pylist())
                .most_common())


def _key(stage_dir: Path) -> str:
    m = shards.load_manifest(stage_dir)
    blob = [m.get("settings_hash"), sorted((k, v.get("sha256") or v.get("bytes")) for k, v in m.get("shards", {}).items())]
    return json.dumps(blob, sort_keys=True)


def stage_quality(run_dir: Path, stage_dir: Path) -> tuple[dict, Optional[dict]]:
    """(figures of this folder's rows, figures of its previous other export or None); remembers
    the figures in RUN/_quality.json (skipped where the folder cannot be written)."""
    from .parts.quality import SERIES, quality
    rows = [r for p in shards.stage_shards(stage_dir)
            for r in pq.read_table(p, columns=["task", "query", "positive", "language", "meta"]).to_pylist()]
    figures = quality(rows, _sample_languages(stage_dir.parent))
    path, name, key = run_dir / HISTORY, str(stage_dir.relative_to(run_dir)), _key(stage_dir)
    try:
        history = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        history = {}
    entries = [e for e in history.get(name, []) if isinstance(e, dict) and "key" in e]
    previous = next((e["figures"] for e in reversed(entries) if e["key"] != key), None)
    if not entries or entries[-1]["key"] != key:
        kept = {k: v for k, v in figures.items() if k not in SERIES}
        history[name] = [*entries, {"key": key, "figures": kept}][-KEEP:]
        try:
            path.write_text(json.dumps(history, indent=1, ensure_ascii=False))
        except OSError:
            pass
    return figures, previous
