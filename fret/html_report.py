"""`fret report RUN_DIR --html FILE`: one self-contained HTML page with plots and sample rows.

Plots are matplotlib PNGs inlined as data URIs, so the page needs nothing but itself. Stages of
sub-runs (a recipe's RUN/runs/NAME) are included, named NAME/STAGE.
"""
from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq

from .core import shards
from .parts.quality import quality_lines
from .report_data import UNIFIED_COLUMNS, stage_notes, stage_quality


def _stages(run_dir: Path) -> list[tuple[str, Path]]:
    found = sorted(run_dir.rglob(shards.MANIFEST), key=lambda p: p.stat().st_ctime_ns)
    return [(str(p.parent.relative_to(run_dir)).replace("runs/", ""), p.parent) for p in found]


def _rows(stage_dir: Path, columns=None) -> list[dict]:
    return [r for p in shards.stage_shards(stage_dir) for r in pq.read_table(p, columns=columns).to_pylist()]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _bar(title: str, counts: dict, horizontal: bool = True) -> str:
    import matplotlib.pyplot as plt
    items = sorted(counts.items(), key=lambda kv: -kv[1])[:25]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(items) + 1.2))
    labels, values = [str(k) for k, _ in items], [v for _, v in items]
    ax.barh(labels[::-1], values[::-1], color="#4c72b0")
    ax.set_title(title)
    return _png(fig)


def _hist(title: str, series: dict[str, list[float]], xlabel: str) -> str:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.2))
    for name, values in series.items():
        if values:
            ax.hist(values, bins=30, alpha=0.55, label=f"{name} (n={len(values)})")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.legend()
    return _png(fig)


def collect(run_dir: Path) -> dict:
    """Everything the page shows, as plain data (also handy for tests)."""
    data: dict = {"stages": {}, "rejects": Counter(), "unified_by_stage": {}, "rerank": [], "eval": [],
                  "notes": [], "quality": {}}
    for name, d in _stages(run_dir):
        m = shards.load_manifest(d)
        totals = m.get("totals") or {}
        data["notes"].extend(f"{name}: {note}" for note in stage_notes(d, totals))
        if m.get("stage") == "teacher":
            s = m.get("settings", {})
            data["notes"].append(
                f"{name}: the LLM teacher ({s.get('llm', {}).get('model')}) reordered the embedder's top "
                f"{s.get('top_n')} for {totals.get('rows_in', 0)} labelled queries of "
                f"{', '.join(s.get('data', []))}; rerank fusion {s.get('rerank', {}).get('fusion')}, "
                f"rc_score {s.get('rerank', {}).get('rc_score')} (figures x100 under Evaluation)")
        data["stages"][name] = totals.get("rows_out", 0)
        for reason, n in totals.get("rejected", {}).items():
            data["rejects"][f"{name}: {reason}"] += n
        paths = shards.stage_shards(d)
        names = set(pq.read_schema(paths[0]).names) if paths else set()
        if names == UNIFIED_COLUMNS:
            data["quality"][name] = stage_quality(run_dir, d)
            if name.split("/")[-1] in ("export", "mix"):
                data["unified_by_stage"][name] = _rows(d)
        if {"ql_scores", "positive_id", "positive_is_seed"} <= names:
            data["rerank"].extend(_rows(d))
        if {"metric", "value"} <= names:
            data["eval"].extend(_rows(d))
    # A recipe's mixture already holds its sub-runs' exports: count each example once.
    by_stage = data.pop("unified_by_stage")
    data["unified"] = by_stage.get("mix") or [r for rows in by_stage.values() for r in rows]
    return data


def score_series(ranked: list[dict], key: str) -> dict[str, list[float]]:
    """Scores of chosen positives vs chosen negatives, e.g. key='ql_scores'."""
    pos, neg = [], []
    for r in ranked:
        at = {c: i for i, c in enumerate(r["candidate_ids"])}
        pos.append(r[key][at[r["positive_id"]]])
        neg.extend(r[key][at[c]] for c in r["negative_ids"])
    return {"positives": pos, "negatives": neg}


def _quality_plots(name: str, q: dict) -> list[tuple[str, str]]:
    """How much queries copy their positive, and which languages the queries are really in."""
    if not q.get("rows"):
        return []
    return [(f"{name}: queries copying their positive", _hist(
                "share of the query's word trigrams found in its positive", {"queries": q["overlaps"]},
                "overlap (1 = copied)")),
            (f"{name}: languages", _bar("rows (asked) vs queries (detected)", {
                **{f"row {k}": v for k, v in q["languages"].items()},
                **{f"query {k}": v for k, v in q["query_languages"].items()}}))]


def _table(rows: list[dict], columns: list[str], limit: int = 8) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r.get(c, ''))[:300])}</td>" for c in columns)
                   + "</tr>" for r in rows[:limit])
    return f"<table><tr>{head}</tr>{body}</table>"


def write_html(run_dir: Path, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    data = collect(Path(run_dir))
    plots: list[tuple[str, str]] = [("Rows out per stage", _bar("rows out", data["stages"]))]
    facts = []
    unified = data["unified"]
    if unified:
        plots.append(("Task types", _bar("examples by task_type", Counter(r["task_type"] for r in unified))))
        plots.append(("Languages", _bar("examples by language", Counter(r["language"] for r in unified))))
        plots.append(("Lengths", _hist("length in words", {
            "query": [len(r["query"].split()) for r in unified],
            "positive": [len(r["positive"].split()) for r in unified]}, "words")))
    ranked = data["rerank"]
    if ranked:
        for key, label in (("ql_scores", "QL"), ("rc_scores", "RC"), ("rrf_scores", "RRF")):
            series = {k: [v for v in vs if v == v] for k, vs in score_series(ranked, key).items()}  # NaN: not scored
            if any(series.values()):
                plots.append((f"{label} scores", _hist(f"{label}: positives vs hard negatives", series, label)))
        differs = 1 - sum(r["positive_is_seed"] for r in ranked) / len(ranked)
        facts.append(f"The LLM's positive differs from the seed passage for {differs:.1%} of "
                     f"{len(ranked)} queries.")
    facts.extend(data["notes"])
    for name, (q, previous) in data["quality"].items():
        plots.extend(_quality_plots(name, q))
        facts.extend(f"{name}: {line}" for line in quality_lines(q, previous))
    if data["rejects"]:
        plots.append(("Reject reasons", _bar("rejected rows by stage and reason", data["rejects"])))
    sections = [f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='{src}'>" for t, src in plots]
    if data["eval"]:
        cols = [c for c in data["eval"][0] if c != "id"]
        sections.append("<h2>Evaluation</h2>" + _table(data["eval"], cols, limit=200))
    if unified:
        sections.append("<h2>Sample rows</h2>" + _table(
            unified, ["task_type", "language", "task", "query", "positive", "negatives"]))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>fret report: {html.escape(str(run_dir))}</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}img{{max-width:100%}}
table{{border-collapse:collapse;font-size:12px}}td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}</style>
</head><body><h1>fret report</h1><p>{html.escape(str(run_dir))}</p>
{''.join(f'<p>{html.escape(f)}</p>' for f in facts)}
{''.join(sections)}
<p id="plots-status">loading plots...</p>
<script>window.addEventListener("load", () => {{
  const imgs = [...document.images], ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.getElementById("plots-status").textContent = ok + " of " + imgs.length + " plots loaded";
}});</script>
<script type="application/json" id="fret-data">{html.escape(json.dumps({"stages": data["stages"]}))}</script>
</body></html>"""
    Path(out).write_text(page, encoding="utf-8")
