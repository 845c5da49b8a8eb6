"""`fret eval --rerank`: the LLM teacher measured on labelled retrieval data.

The orders and metrics are checked on hand-made scores; the command runs end to end with the
real bundled models (MiniLM retrieves, SmolLM2 scores with the rerank stage's code) on a tiny
BEIR folder, and a second run is answered wholly from the request cache.
"""
import json
from pathlib import Path

import pytest

from fret.core import shards
from fret.html_report import collect
from fret.parts.evaluation.cli import main
from fret.parts.evaluation.teacher import measure, orders_of, top1
from fret.stages.fret.rerank import fuse, rc_score, usable_fusion

PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "fret.yaml"


def test_orders_follow_each_signal_and_the_fusion():
    candidates = {"q1": ["a", "b", "c"], "q2": ["d", "e"]}
    ql = [-5.0, -1.0, -3.0, -2.0, -1.0]  # q1: b > c > a; q2: e > d
    rc = [0.5, 0.1, 0.9, 2.0, 0.0]  # q1: c > a > b; q2: d > e
    orders = orders_of(candidates, ql, rc, {"ql": 2.0, "embed": 1.0}, k=0.0)
    assert orders["embedder"] == {"q1": ["a", "b", "c"], "q2": ["d", "e"]}
    assert orders["ql"]["q1"] == ["b", "c", "a"] and orders["rc"]["q1"] == ["c", "a", "b"]
    assert orders["rrf_ql_rc"]["q1"] == ["c", "b", "a"]  # b: 1 + 1/3, c: 1/2 + 1, a: 1/3 + 1/2
    assert orders["rerank"]["q1"] == ["b", "a", "c"]  # 2/1 + 1/2, 2/3 + 1, 2/2 + 1/3
    no_ql = orders_of(candidates, None, rc, {"ql": 1.0, "rc": 1.0}, k=0.0)
    assert set(no_ql) == {"embedder", "rc", "rerank"}  # orders needing QL are left out


def test_measure_ndcg_mrr_and_top1():
    qrels = {"q1": {"c": 1}, "q2": {"d": 1}}
    figures = measure({"x": {"q1": ["c", "a", "b"], "q2": ["e", "d"]}}, qrels)["x"]
    assert figures["top1"] == pytest.approx(50.0)
    assert figures["mrr@10"] == pytest.approx(75.0)
    assert figures["ndcg@10"] == pytest.approx(100 * (1 + 1 / 1.5849625) / 2, abs=1e-3)
    assert top1([], {"a": 1}) == 0.0


def test_calibrated_and_log_ratio_rc_scores():
    grades = [3.0, 0.0]
    # the model says "Not relevant" everywhere; relative to its prior for the query, this pair is relevant
    assert rc_score([-2.0, -0.2], grades, "expected") < 1.0
    assert rc_score([-2.0, -0.2], grades, "calibrated", prior=[-4.0, -0.05]) > 1.5
    assert rc_score([-2.0, -0.2], grades, "log_ratio") == pytest.approx(-1.8)


def test_fusion_without_ql_uses_rc_and_the_embedder():
    assert usable_fusion({"ql": 1.0, "rc": 1.0}, has_ql=False) == {"rc": 1.0, "embed": 1.0}
    assert usable_fusion({"ql": 1.0, "embed": 2.0}, has_ql=True) == {"ql": 1.0, "embed": 2.0}
    assert fuse({"ql": 1.0, "rc": 0.0}, {"ql": [2, 1], "rc": [1, 2]}, k=0.0) == [0.5, 1.0]


def beir(folder: Path) -> Path:
    docs = {"d1": "The Amazon River carries more water than any other river in the world.",
            "d2": "Marie Curie was the first woman to win a Nobel Prize, for work on radioactivity.",
            "d3": "The Great Wall of China was built to protect Chinese states from nomadic raids.",
            "d4": "Mount Everest is the highest mountain above sea level, in the Himalayas."}
    queries = {"q1": "which river carries the most water", "q2": "who was the first woman to win a nobel prize"}
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    return folder


def test_fret_eval_rerank_end_to_end(tmp_path):
    data, run = beir(tmp_path / "beir"), tmp_path / "run"
    argv = ["--model", "default", "--retrieval", str(data), "--rerank", str(PIPELINE), "--run-dir", str(run),
            "--top-n", "2", "--set", "rerank.rc_score=calibrated", "--json", str(tmp_path / "f.json")]
    assert main(argv) == 0
    rows = json.loads((tmp_path / "f.json").read_text())["results"]
    teacher = {r["order"]: r for r in rows if r["task"] == "rerank"}
    assert set(teacher) == {"embedder", "ql", "rc", "rrf_ql_rc", "rrf_ql_rc_embed", "rerank"}
    assert teacher["embedder"]["top1"] == 100.0  # MiniLM gets these two right
    assert teacher["ql"]["top1"] == 100.0  # and so does SmolLM2's query likelihood
    assert all(0 <= r[m] <= 100 for r in teacher.values() for m in ("ndcg@10", "mrr@10", "top1"))
    manifest = shards.load_manifest(run / "teacher")
    counts = manifest["totals"]["counts"]
    timings = {k: counts.pop(k) for k in ("encode_seconds", "score_seconds")}
    assert min(timings.values()) >= 0  # where the time went, shown and recorded
    assert counts == {"pairs_scored": 4, "ql_requests": 4, "rc_requests": 4, "rc_prior_requests": 2, "queries": 2,
                      "documents": counts["documents"]}
    assert manifest["totals"]["llm"]["calls"] == 10
    shown = collect(run)
    assert {r["model"] for r in shown["eval"]} == set(teacher)  # the HTML report's evaluation table
    assert any("LLM teacher" in n for n in shown["notes"])
    assert main(argv) == 0  # the same command again: every answer from the request cache
    llm = shards.load_manifest(run / "teacher")["totals"]["llm"]
    assert (llm["calls"], llm["cached"]) == (0, 10)
