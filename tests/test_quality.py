"""Data quality at a glance (fret.parts.quality, `fret report`), and the ablation's seed positives."""
import json
import shutil

import pyarrow.parquet as pq
import pytest

import fakes  # noqa: F401  (registers the fake backend)
from conftest import ROOT
from fret.cli import main
from fret.core import shards
from fret.core.runner import make_stage, open_run, run_pipeline
from fret.html_report import collect
from fret.parts.quality import copy_overlap, quality, quality_lines

FIXTURE = ROOT / "tests" / "fixtures" / "fret_run"


def row(query, positive, task="Given a question, find a passage", language="en", seed=None):
    meta = json.dumps({"positive_is_seed": seed}) if seed is not None else "{}"
    return {"task": task, "query": query, "positive": positive, "language": language, "meta": meta}


def test_copy_overlap_counts_the_querys_trigrams_in_the_positive():
    passage = "A chord is the simultaneous sound of two or more musical notes played together."
    assert copy_overlap("A chord is the simultaneous sound of two", passage) == 1.0
    assert copy_overlap("what is a chord in music", passage) == 0.0
    assert copy_overlap("chord sound of two notes", passage) == pytest.approx(1 / 3)  # 'sound of two'
    assert copy_overlap("chord", passage) == 1.0  # under 3 words: unigrams


def test_quality_figures_on_known_rows():
    rows = [
        row("A chord is the simultaneous sound of two notes", "A chord is the simultaneous sound of two notes.",
            seed=True),
        row("what is a chord in music theory", "A chord is the simultaneous sound of two notes.", seed=False),
        row("What is a chord in music theory?", "Chords are built from thirds.", task="Other task", seed=True),
        row("which river carries the most water in the world", "El Amazonas es el río más caudaloso.",
            language="es", seed=True),
    ]
    q = quality(rows, {"en": 3, "es": 1})
    assert q["rows"] == 4
    assert q["copied"] == q["near_copy"] == 0.25
    assert q["duplicate_queries"] == 0.25  # the third normalizes to the second
    assert q["distinct_tasks"] == 2 and q["top_tasks"][0] == ("Given a question, find a passage", 3)
    assert q["positive_is_seed"] == 0.75
    assert q["languages"] == {"en": 3, "es": 1}
    assert q["wrong_language"] > 0  # the English query of the Spanish row
    lines = quality_lines(q, previous={**q, "copied": 0.5})
    assert any("25.0% copied" in line and "(before: 50.0%)" in line for line in lines)
    assert any(line.startswith("seed sample languages: en 75%, es 25%") for line in lines)


@pytest.fixture
def run_copy(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    return run


def test_report_shows_quality_notes_and_the_previous_export(run_copy, capsys):
    assert main(["report", str(run_copy)]) == 0
    first = capsys.readouterr().out
    assert "queries copying their positive" in first and "before:" not in first
    assert "LLM requests per (query, passage) pair" in first  # rerank's notes, through the stage class
    # The export made again under other settings: one shard fewer, another settings hash.
    export = run_copy / "export"
    manifest = shards.load_manifest(export)
    dropped = sorted(manifest["shards"])[-1]
    del manifest["shards"][dropped]
    (export / dropped).unlink()
    manifest["settings_hash"] = "0" * 16
    manifest["totals"]["rows_out"] = sum(pq.read_metadata(p).num_rows for p in export.glob("part-*.parquet"))
    shards.save_manifest(export, manifest)
    assert main(["report", str(run_copy)]) == 0
    second = capsys.readouterr().out
    assert "(before: " in second and "distinct tasks" in second
    history = json.loads((run_copy / "_quality.json").read_text())
    assert len(history["export"]) == 2
    data = collect(run_copy)
    figures, previous = data["quality"]["export"]
    assert previous is not None and figures["rows"] < previous["rows"]


def test_seed_positive_and_embedder_negative_without_the_llm(run_copy):
    overrides = json.loads((run_copy / "_settings.json").read_text())["overrides"]
    ctx = open_run(ROOT / "pipelines" / "fret.yaml", run_copy, [
        *overrides, "rerank.positive=seed", "rerank.fusion={embed: 1}"])
    run_pipeline(ctx, stages=["rerank", "export"], restart=True, progress=False)
    ranked = [r for p in shards.stage_shards(run_copy / "rerank") for r in shards.read_rows(p)]
    assert ranked and all(r["positive_id"] == r["passage_id"] for r in ranked)
    for r in ranked:
        pool = [c for c in r["candidate_ids"] if c != r["passage_id"]]
        assert r["negative_ids"] == pool[-1:]  # the embedder's last of its top N, never the seed
    assert shards.load_manifest(run_copy / "rerank")["totals"]["llm"]["calls"] == 0
    exported = [r for p in shards.stage_shards(run_copy / "export") for r in shards.read_rows(p)]
    assert all(json.loads(r["meta"])["positive_is_seed"] for r in exported)


def test_round_trip_consistency_rejects_queries_whose_seed_is_not_retrieved(run_copy):
    overrides = json.loads((run_copy / "_settings.json").read_text())["overrides"]
    ctx = open_run(ROOT / "pipelines" / "fret.yaml", run_copy, [*overrides, "rerank.max_seed_rank=1"])
    mined = [r for p in shards.stage_shards(run_copy / "mine") for r in shards.read_rows(p)]
    assert all(r["candidate_ids"][0] == r["passage_id"] for r in mined)  # the fixture's seeds all come first
    moved = {**mined[0], "candidate_ids": mined[0]["candidate_ids"][::-1]}
    kept, rejects = make_stage(ctx, "rerank")._consistent([moved, *mined[1:]])
    assert kept == mined[1:]
    assert [(r.id, r.reason) for r in rejects] == [(moved["id"], "seed_not_retrieved")]
    run_pipeline(ctx, stages=["rerank"], restart=True, progress=False)  # the stage keeps every seed at rank 1
    totals = shards.load_manifest(run_copy / "rerank")["totals"]
    assert totals["rows_in"] == totals["rows_out"] == len(mined) and not totals["rejected"]


def test_report_names_the_shards_a_lost_worker_made_retry(run_copy, capsys):
    rerank = run_copy / "rerank"
    manifest = shards.load_manifest(rerank)
    name = sorted(manifest["shards"])[0]
    manifest["shards"][name].update(retries=1, lost=["node 4f2a lost: ActorDiedError"], worker="4f2a-123",
                                    node="9858707178bcdeadbeef")
    shards.save_manifest(rerank, manifest)
    assert main(["report", str(run_copy)]) == 0
    out = capsys.readouterr().out
    assert f"retried {name}: 1 attempt(s) lost (node 4f2a lost: ActorDiedError); made by 4f2a-123 on node 9858707178bc" in out
