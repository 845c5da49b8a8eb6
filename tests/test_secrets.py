"""An API key given through `llm.api_key_env` leaves no trace: not in the settings files, manifests,
shards, rejects, the request cache, the text or HTML report, a trained model and its card, nor in
anything the commands print.

A sentinel key is planted in the environment of real `fret` processes: a FRet run through the
openai backend against the real llama.cpp server (the fault proxy in front, passing everything,
shows that the key did reach the server), `fret report --html`, and `fret train` on its export.
Then every file under the run folder is searched for it, byte by byte.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from faultproxy import FaultProxy
from llm_server import llama_server  # noqa: F401 (pytest fixture)

pytestmark = [pytest.mark.server, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
SENTINEL = f"sk-sentinel-{secrets.token_hex(16)}"
# The whole key, and its last 8 characters: what a masked echo ("sk-...abcd1234") would keep.
TRACES = (SENTINEL, SENTINEL[-8:])


def fret(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "FRET_TEST_KEY": SENTINEL}
    done = subprocess.run([sys.executable, "-m", "fret.cli", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def files_holding(folder: Path, trace: str) -> list[str]:
    return [str(p.relative_to(folder)) for p in sorted(folder.rglob("*"))
            if p.is_file() and trace.encode() in p.read_bytes()]


def test_api_key_from_api_key_env_is_in_no_file_and_no_output(llama_server, tmp_path):
    run = tmp_path / "run"
    sets = ["corpus.sources.0.limit=40", "sample.size=4", "mine.top_n=3", "queries.max_tokens=48",
            "llm.backend=openai", "llm.api_key_env=FRET_TEST_KEY", "llm.concurrency=1"]
    with FaultProxy(llama_server.base_url.rsplit("/v1", 1)[0], rate=0.0) as proxy:
        outputs = [fret("run", ROOT / "pipelines" / "fret.yaml", "--run-dir", run, "--quiet",
                        *sum((["--set", s] for s in [*sets, f"llm.base_url={proxy.base_url}"]), []))]
    assert proxy.keys == {f"Bearer {SENTINEL}": proxy.forwarded} and proxy.forwarded > 0
    outputs.append(fret("report", run, "--html", run / "report.html"))
    outputs.append(fret("train", "--data", run / "export", "--output", run / "model",
                        *sum((["--set", s] for s in ["batch_size=2", "mini_batch_size=2", "max_steps=1",
                                                      "max_length=64"]), [])))
    written = {p.relative_to(run).parts[0] for p in run.rglob("*") if p.is_file()}
    assert {"settings.yaml", "_settings.json", "_cache", "queries", "rerank", "export", "report.html",
            "model"} <= written  # every kind of file the issue names was made and is searched
    for trace in TRACES:
        assert files_holding(run, trace) == []
        assert all(trace not in out.stdout + out.stderr for out in outputs)
