"""fret through a flaky server: the real llama.cpp server behind a fault-injecting proxy (tests/faultproxy.py).

At 20% faults (429 with and without Retry-After, 500, 503, hangs past the client timeout, dropped
connections, cut-short JSON) a FRet run (queries, embed, mine, rerank, export) and an E5 run end
with the output of a fault-free run, every input row accounted for, and the retries counted in the
manifest. Through an outage the command stops with one clear line naming the server; run again
after recovery, it finishes without sending any answered request again.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from faultproxy import FaultProxy
from fret.core import shards
from fret.core.runner import open_run, run_pipeline
from llm_server import llama_server  # noqa: F401 (pytest fixture)

pytestmark = [pytest.mark.server, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 90  # the client's (generous: a loaded machine must not time out for real); a hang lasts longer


def openai_sets(proxy: FaultProxy) -> list[str]:
    return ["llm.backend=openai", f"llm.base_url={proxy.base_url}", "llm.concurrency=1",
            f"llm.timeout_s={TIMEOUT_S}", "llm.max_retries=8"]


def stage_rows(run: Path, stage: str) -> str:
    """A stage's rows as canonical JSON, so that NaN scores (QL unavailable on llama.cpp) compare equal."""
    return json.dumps([r for path in shards.stage_shards(run / stage) for r in shards.read_rows(path)],
                      sort_keys=True, default=str)


def accounting(run: Path, stage: str) -> tuple:
    """(rows in, rows out, rejects by reason): every input row ends as output or as a reject."""
    totals = shards.load_manifest(run / stage)["totals"]
    return totals["rows_in"], totals["rows_out"], totals["rejected"]


def retries(run: Path, stages: list[str]) -> int:
    return sum(shards.load_manifest(run / s)["totals"]["llm"].get("retries", 0) for s in stages)


def upstream(server) -> str:
    return server.base_url.rsplit("/v1", 1)[0]


FRET_SETS = ["corpus.sources.0.limit=40", "sample.size=4", "mine.top_n=3", "queries.max_tokens=48"]
FRET_STAGES = ["corpus", "sample", "queries", "embed", "mine", "rerank", "export"]


def run_fret(run: Path, proxy: FaultProxy) -> None:
    ctx = open_run(ROOT / "pipelines" / "fret.yaml", run, FRET_SETS + openai_sets(proxy))
    run_pipeline(ctx, stages=FRET_STAGES, progress=False)


def test_fret_run_through_20_percent_faults_equals_a_fault_free_run(llama_server, tmp_path):
    with FaultProxy(upstream(llama_server), rate=0.0) as clean:
        run_fret(tmp_path / "clean", clean)
    with FaultProxy(upstream(llama_server), rate=0.2, seed=1, hang_s=TIMEOUT_S + 1) as flaky:
        run_fret(tmp_path / "flaky", flaky)
    assert sum(flaky.injected.values()) > 0, "the proxy drew no fault: nothing was tested"
    for stage in ("queries", "rerank", "export"):
        assert stage_rows(tmp_path / "flaky", stage) == stage_rows(tmp_path / "clean", stage), stage
        rows_in, rows_out, rejected = accounting(tmp_path / "flaky", stage)
        assert rows_in == rows_out + sum(rejected.values())  # one row per input row here
        assert (rows_in, rows_out, rejected) == accounting(tmp_path / "clean", stage)
    # every injected fault cost a resend, counted in a manifest (a real timeout on a loaded machine adds more)
    assert retries(tmp_path / "flaky", ["queries", "rerank"]) >= sum(flaky.injected.values()), flaky.injected
    assert resent(flaky) == []  # no answered request was sent twice


# Greedy decoding: llama.cpp reuses its KV cache across requests, which moves logits slightly, and
# at temperature 1 that flips sampled tokens between two runs of the same requests. SmolLM2's JSON
# under llama.cpp's json_object grammar is junk for a task list, so brainstorm reads a plain list.
E5_SETS = ["llm.extra.response_format=json_object",  # llama-cpp-python's form of a JSON schema
           "brainstorm.groups=[short_long,sts]", "brainstorm.tasks_per_request=5", "brainstorm.max_tokens=256",
           "brainstorm.json_schema=false", "brainstorm.temperature=0", "brainstorm.retry_temperature=0",
           "examples.max_tokens=128", "examples.max_tasks_per_group=2", "examples.temperature=0",
           "examples.retry_temperature=0", "examples.language_check.enabled=false"]


def run_e5(run: Path, proxy: FaultProxy) -> None:
    ctx = open_run(ROOT / "pipelines" / "e5.yaml", run, E5_SETS + openai_sets(proxy))
    run_pipeline(ctx, progress=False)


def test_e5_run_through_20_percent_faults_equals_a_fault_free_run(llama_server, tmp_path):
    with FaultProxy(upstream(llama_server), rate=0.0) as clean:
        run_e5(tmp_path / "clean", clean)
    with FaultProxy(upstream(llama_server), rate=0.2, seed=2, hang_s=TIMEOUT_S + 1) as flaky:
        run_e5(tmp_path / "flaky", flaky)
    assert sum(flaky.injected.values()) > 0
    assert accounting(tmp_path / "clean", "export")[1] > 0, "no E5 row: nothing was compared"
    for stage in ("brainstorm", "examples", "export"):  # (brainstorm: many tasks per request)
        assert stage_rows(tmp_path / "flaky", stage) == stage_rows(tmp_path / "clean", stage), stage
        assert accounting(tmp_path / "flaky", stage) == accounting(tmp_path / "clean", stage), stage
    assert retries(tmp_path / "flaky", ["brainstorm", "examples"]) >= sum(flaky.injected.values())
    assert resent(flaky) == []


def fret_cli(run: Path, proxy: FaultProxy) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "fret.cli", "run", str(ROOT / "pipelines" / "fret.yaml"), "--run-dir", str(run),
            "--quiet"]
    for s in [*FRET_SETS, *openai_sets(proxy), "llm.max_retries=2"]:
        argv += ["--set", s]
    return subprocess.run(argv, capture_output=True, text=True, timeout=1200)


def resent(proxy: FaultProxy) -> list[str]:
    """Bodies answered more than once, the backend's echo alignment probe aside (sent once per process)."""
    return [h for h, n in proxy.answered.items() if n > 1 and b'"echo":true' not in proxy.bodies[h].replace(b" ", b"")]


def test_an_outage_stops_the_run_clearly_and_recovery_resends_nothing_answered(llama_server, tmp_path):
    run = tmp_path / "run"
    with FaultProxy(upstream(llama_server), rate=0.0) as proxy:
        ctx = open_run(ROOT / "pipelines" / "fret.yaml", run, FRET_SETS + openai_sets(proxy))
        run_pipeline(ctx, stages=["corpus", "sample", "queries"], progress=False)
        proxy.outage_after = proxy.forwarded + 5  # the server goes down part-way through rerank's first batch
        down = fret_cli(run, proxy)
        assert down.returncode == 1, down.stderr
        message = down.stderr.strip().splitlines()[-1]
        assert f"the server at {proxy.base_url} failed 3 attempts (HTTP 503)" in message, down.stderr
        assert "run the same command" in message and "Traceback" not in down.stderr
        assert not (run / "rerank" / "part-00000.parquet").exists()
        proxy.outage_after = None  # back up: the same command finishes the job
        again = fret_cli(run, proxy)
        assert again.returncode == 0, again.stderr
    assert proxy.injected["outage"] > 0
    assert resent(proxy) == [], "an answered request was sent again"
    assert shards.load_manifest(run / "export")["complete"]
