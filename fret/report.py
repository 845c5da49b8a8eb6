"""`fret report RUN_DIR`: what each stage did (from its manifest) and a few of its rows."""
from __future__ import annotations

import json
import textwrap
from collections import Counter
from pathlib import Path
from typing import Optional

import pyarrow.parquet as pq

from .core import shards
from .core.errors import FretError
from .report_data import is_unified, stage_notes, stage_quality

BREAKDOWN_COLUMNS = ("group", "task_type", "language", "source", "reason")


def stage_dirs(run_dir: Path) -> list[Path]:
    """Stage folders in the order they were first finished, a recipe's sub-runs (runs/NAME/STAGE) too."""
    found = [p.parent for pattern in (f"*/{shards.MANIFEST}", f"runs/*/*/{shards.MANIFEST}")
             for p in run_dir.glob(pattern)]
    return sorted(found, key=lambda d: (d / shards.MANIFEST).stat().st_ctime_ns)


def metrics_table(rows: list[dict]) -> list[str]:
    """Evaluation rows (model, task, data, dim, metric, value) as aligned text lines."""
    return [f"   {r['model']:<10} {r['task']:<15} {r['dim']:>5} {r['metric']:<11} {r['value']:>9.4f}  {r['data']}"
            for r in rows]


def stage_summary(stage_dir: Path) -> dict:
    m = shards.load_manifest(stage_dir)
    totals = m.get("totals") or {}
    if not m.get("complete"):  # an unfinished stage: add up the shards done so far
        from .core.runner import _sum_into
        for entry in m.get("shards", {}).values():
            _sum_into(totals, entry)
    return {"stage": stage_dir.name, "complete": bool(m.get("complete")),
            "shards": len(m.get("shards", {})), **totals}


def breakdowns(paths: list[Path]) -> dict[str, Counter]:
    """Value counts of the columns in BREAKDOWN_COLUMNS that the shards have."""
    out: dict[str, Counter] = {}
    for path in paths:
        names = set(pq.read_schema(path).names)
        cols = [c for c in BREAKDOWN_COLUMNS if c in names]
        if cols:
            table = pq.read_table(path, columns=cols)
            for c in cols:
                out.setdefault(c, Counter()).update(table[c].to_pylist())
    return out


def _short(value, width: int = 100) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return textwrap.shorten(text, width=width, placeholder=" ...")


def retried_shards(stage_dir: Path) -> list[str]:
    """The shards a Ray run sent again after the worker holding them was lost (their manifest
    entries' `retries` and `lost`), and where they were finally made."""
    lines = []
    for name, entry in sorted(shards.load_manifest(stage_dir).get("shards", {}).items()):
        if entry.get("retries"):
            lost = "; ".join(_short(x, 160) for x in entry.get("lost") or [])
            lines.append(f"retried {name}: {entry['retries']} attempt(s) lost ({lost}); made by "
                         f"{entry.get('worker', '?')} on node {str(entry.get('node', '?'))[:12]}")
    return lines


def format_stage(stage_dir: Path, examples: int, run_dir: Path) -> str:
    s = stage_summary(stage_dir)
    s["stage"] = str(stage_dir.relative_to(run_dir)).replace("runs/", "", 1)
    llm = s.get("llm", {})
    lines = [f"== {s['stage']} ({'complete' if s['complete'] else 'unfinished'}, {s['shards']} shards)",
             f"   rows in {s.get('rows_in', 0)}, rows out {s.get('rows_out', 0)}, "
             f"seconds {s.get('seconds', 0):.1f}"]
    if llm.get("calls") or llm.get("cached"):
        lines.append(f"   llm: {llm.get('calls', 0)} calls, {llm.get('cached', 0)} from cache, "
                     f"{llm.get('prompt_tokens', 0)} prompt tokens, "
                     f"{llm.get('completion_tokens', 0)} generated tokens")
    for reason, n in sorted(s.get("rejected", {}).items(), key=lambda kv: -kv[1]):
        lines.append(f"   rejected {n}: {reason}")
    for key, n in sorted(s.get("counts", {}).items()):
        lines.append(f"   {key}: {n}")
    lines.extend(f"   {note}" for note in stage_notes(stage_dir, s))
    lines.extend(f"   {line}" for line in retried_shards(stage_dir))
    paths = shards.stage_shards(stage_dir)
    for col, counter in breakdowns(paths).items():
        lines.append(f"   by {col}: " + ", ".join(f"{k}={v}" for k, v in counter.most_common(12)))
    if is_unified(stage_dir):
        from .parts.quality import quality_lines
        lines.extend(f"   {line}" for line in quality_lines(*stage_quality(run_dir, stage_dir)))
    if paths and {"metric", "value", "model"} <= set(pq.read_schema(paths[0]).names):
        return "\n".join(lines + metrics_table([r for p in paths for r in shards.read_rows(p)]))
    shown = 0
    for path in paths:
        for row in shards.read_rows(path):
            if shown >= examples:
                break
            shown += 1
            lines.append("   example:")
            lines.extend(f"     {k}: {_short(v)}" for k, v in row.items())
    return "\n".join(lines)


def report(run_dir: Path, html: Optional[Path] = None, examples: int = 2) -> int:
    run_dir = Path(run_dir)
    dirs = stage_dirs(run_dir) if run_dir.is_dir() else []
    if not dirs:
        raise FretError(f"{run_dir}: no stage output found (is this a run folder?)")
    if html is not None and Path(html).is_dir():
        raise FretError(f"--html {html} is a folder; give a file path, e.g. {Path(html) / 'report.html'}")
    if html is not None and not Path(html).parent.is_dir():  # said before the report is printed
        raise FretError(f"--html {html}: folder {Path(html).parent} does not exist; create it or "
                        f"give another path")
    print(f"run {run_dir}")
    for d in dirs:
        print(format_stage(d, examples, run_dir))
    if html is not None:
        from .html_report import write_html
        write_html(run_dir, Path(html))
        print(f"wrote {html}")
    return 0
