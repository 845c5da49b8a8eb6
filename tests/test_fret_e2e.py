"""FRet end to end on the embedded default: real Wikipedia text, SmolLM2-135M, MiniLM, FAISS.

One uninterrupted run (the reference) and one run killed with SIGKILL in the middle of the
rerank stage, then started again with the same command: identical output, row for row, and no
LLM request that had been answered is sent again.
"""
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fret.core import shards

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipelines" / "fret.yaml"
# 8 seed passages in 2 shards, N = 4 (the rerank stage's 64 requests are most of the run's time);
# float32 so the QL check below can be tight.
SEEDS, TOP_N = 8, 4
SETTINGS = ["corpus.sources.0.limit=300", f"sample.size={SEEDS}", "sample.shard_size=4", f"mine.top_n={TOP_N}",
            "queries.max_attempts=2", "llm.dtype=float32"]
STAGES = ("corpus", "sample", "queries", "embed", "mine", "rerank", "export")


def command(run_dir: Path) -> list[str]:
    sets = [a for s in SETTINGS for a in ("--set", s)]
    return [sys.executable, "-m", "fret.cli", "run", str(PIPELINE), "--run-dir", str(run_dir),
            "--quiet", *sets]


def rows_of(run_dir: Path, stage: str) -> list[dict]:
    return [r for _, rows in shards.iter_stage_rows(run_dir / stage) for r in rows]


def llm_calls(run_dir: Path, stages=STAGES) -> int:
    return sum(e.get("llm", {}).get("calls", 0)
               for s in stages for e in shards.load_manifest(run_dir / s).get("shards", {}).values())


def cached_answers(run_dir: Path) -> int:
    path = run_dir / "_cache" / "llm.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(path, timeout=30) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        except sqlite3.OperationalError:  # table not created yet
            return 0


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    subprocess.run(command(run_dir), check=True, cwd=ROOT, timeout=1200)
    return run_dir


def test_invariants(reference):
    queries = rows_of(reference, "queries")
    ranked = rows_of(reference, "rerank")
    unified = rows_of(reference, "export")
    rejected = shards.load_manifest(reference / "queries")["totals"].get("rejected", {})
    assert len(queries) + sum(rejected.values()) == SEEDS  # every seed is a query or a counted reject
    assert len(queries) >= SEEDS // 4, "the bundled model should turn some seed passages into queries"
    assert len(unified) == len(ranked) == len(queries)
    assert len({u["id"] for u in unified}) == len(unified)
    assert len({q["id"] for q in queries}) == len(queries)
    for r in ranked:
        assert len(r["candidate_ids"]) == TOP_N
        assert r["positive_id"] in r["candidate_ids"]
        assert r["positive_id"] not in r["negative_ids"] and len(r["negative_ids"]) == 1
        assert sorted(r["ql_ranks"]) == sorted(r["rc_ranks"]) == list(range(1, TOP_N + 1))
        assert r["positive_is_seed"] == (r["positive_id"] == r["passage_id"])
        best = max(range(TOP_N), key=lambda i: (r["rrf_scores"][i], -i))
        assert r["candidate_ids"][best] == r["positive_id"]
    for u in unified:
        assert u["positive"] not in u["negatives"]
        meta = json.loads(u["meta"])
        assert meta["seed_passage_id"] and meta["llm"]["backend"] == "transformers"
    totals = shards.load_manifest(reference / "rerank")["totals"]
    assert totals["llm"]["calls"] == 2 * TOP_N * len(ranked)  # one QL and one RC request per pair


def test_ql_score_equals_an_independent_log_probability(reference):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from fret.parts import bundled
    from fret.parts.prompts import render

    row = rows_of(reference, "rerank")[0]
    pid = row["candidate_ids"][3]
    passage = next(p for p in rows_of(reference, "corpus") if p["id"] == pid)
    prompt = render("fret_ql.jinja", passage=" ".join(passage["text"].split()[:200]))
    gguf = bundled.smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tok(" " + row["query"], add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([p_ids + c_ids])).logits[0].float()  # (seq, vocab)
    logp = torch.log_softmax(logits, -1)
    expected = sum(logp[len(p_ids) - 1 + i, t].item() for i, t in enumerate(c_ids))
    assert row["ql_scores"][3] == pytest.approx(expected, abs=1e-3)


def test_kill_during_rerank_then_resume(reference, tmp_path):
    # The stages before rerank are the reference's, copied without the request cache, so every
    # rerank request goes to the model (kills in every stage: the kill -9 trials, docs/reliability.md).
    before_rerank = STAGES[:STAGES.index("rerank")]
    for stage in before_rerank:
        shutil.copytree(reference / stage, tmp_path / stage)
    proc = subprocess.Popen(command(tmp_path), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 900
    try:
        while not shards.load_manifest(tmp_path / "mine").get("complete"):
            assert proc.poll() is None and time.monotonic() < deadline, "run ended before rerank"
            time.sleep(0.2)
        start = cached_answers(tmp_path)
        while cached_answers(tmp_path) < start + 8:  # at least one rerank batch answered
            assert proc.poll() is None and time.monotonic() < deadline, "rerank ended before the kill"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not shards.load_manifest(tmp_path / "rerank").get("complete")
    answered, calls_before = cached_answers(tmp_path), llm_calls(tmp_path)

    subprocess.run(command(tmp_path), check=True, cwd=ROOT, timeout=1200)
    for stage in STAGES:
        assert rows_of(tmp_path, stage) == rows_of(reference, stage), stage
    # Requests sent after the restart + answers received before the kill = the requests of an
    # uninterrupted run: nothing answered was asked again.
    rerank_calls = llm_calls(reference) - llm_calls(reference, before_rerank)
    assert answered + (llm_calls(tmp_path) - calls_before) == rerank_calls
