"""The recipe: generation sub-run -> converted sets -> mix -> train -> eval, in one run folder.

The FRet sub-run uses the fake LLM here (control flow); its real-model run is test_fret_e2e.py.
"""
import json

import pytest

import fakes  # noqa: F401  (registers the fake backend)
from conftest import EVALDATA, ROOT
from fret.core import shards
from fret.core.runner import open_run, run_pipeline
from fret.html_report import collect

OVERRIDES = [
    'fret.overrides=["llm.backend=fake", "corpus.sources.0.limit=80", "sample.size=8", "mine.top_n=4"]',
    "mix.stages={fret: 1.0}",
    "train.settings.max_steps=2", "train.settings.batch_size=8", "train.settings.mini_batch_size=8",
    "train.settings.checkpoint_every=1",
    f"eval.retrieval=[{EVALDATA / 'xquad' / 'xquad.en.json'}]", "eval.sts=[]", "eval.classification=[]",
    "eval.limit=40",
]
STAGES = ["fret", "convert", "mix", "train", "eval"]


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_recipe_runs_end_to_end_and_resumes(in_root, tmp_path):
    run_pipeline(open_run(ROOT / "pipelines" / "recipe.yaml", tmp_path, OVERRIDES), stages=STAGES,
                 progress=False)
    sub = shards.load_manifest(tmp_path / "runs" / "fret" / "export")
    assert sub["complete"] and sub["totals"]["rows_out"] == 8
    mixed = [r for _, rows in shards.iter_stage_rows(tmp_path / "mix") for r in rows]
    assert {"fret", "snli", "nq", "hotpotqa", "banking77"} <= {r["source"] for r in mixed}
    model = shards.read_rows(tmp_path / "train" / "part-00000.parquet")[0]["model_path"]
    record = json.loads((tmp_path / "train" / "model" / "fret_training.json").read_text())
    assert record["matryoshka_dims"] == [384, 128] and model.endswith("model")
    figures = [r for _, rows in shards.iter_stage_rows(tmp_path / "eval") for r in rows]
    models = {r["model"] for r in figures if r["metric"] == "ndcg@10"}
    assert models == {"default", "trained"}
    assert all(0 <= r["value"] <= 1 for r in figures if r["metric"] == "ndcg@10")
    assert collect(tmp_path)["eval"]  # the HTML report shows the figures
    # A second run finds every stage done and changes nothing.
    before = {s: shards.load_manifest(tmp_path / s)["shards"] for s in STAGES}
    run_pipeline(open_run(ROOT / "pipelines" / "recipe.yaml", tmp_path, OVERRIDES), stages=STAGES,
                 progress=False)
    assert {s: shards.load_manifest(tmp_path / s)["shards"] for s in STAGES} == before
