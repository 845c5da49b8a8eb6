"""Runs made by an earlier fret resume with this one: same stage names, same settings hashes.

tests/fixtures/fret_run is a tiny FRet run (fake LLM, 24 passages, 4 queries) made with the code
of commit c5357da, before the package layout changed; running its pipeline again must find every
stage done and redo nothing. HASHES are the settings hashes of every pipeline as that code
computed them (no stage run). A change of settings, defaults or prompt templates made on purpose
changes them: then update the constants, and say in the change that older runs must restart.
"""
import os
import shutil
from pathlib import Path

import pytest

import e5_fakes  # noqa: F401  (registers the e5fake backend)
import fakes
from fret.core import shards
from fret.core.runner import _inputs, make_stage, open_run, run_pipeline, settings_hash
from fret.stages import PIPELINES

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "fret_run"
FIXTURE_SETTINGS = ["llm.backend=fake", "corpus.sources.0.limit=24", "sample.size=4",
                    "sample.shard_size=2", "mine.top_n=3", "queries.max_attempts=2",
                    # the fixture was made before these queries checks existed: their old behaviour
                    "queries.max_copy_overlap=1.0", "queries.check_language=false", "queries.language_templates={}"]

# Overrides keep the hashes free of this machine: fake backends, no local files whose mtime
# counts (convert), no Python version (the multilongdoc `pydoc` source).
OVERRIDES = {
    "fret": ["llm.backend=fake"],
    "e5": ["llm.backend=e5fake"],
    "multilongdoc": ["llm.backend=e5fake", "longdocs.sources.0.type=wiki"],
    "mixture": ["convert.datasets=[]"],
    "recipe": ["convert.datasets=[]"],
}
HASHES = {
    "fret": {"corpus": "fddd5e850616ef60", "sample": "2816312016325f14", "queries": "bf5ba1606ee40360",
             "embed": "db2344a2bcf932c0", "mine": "4132ef48f283be03", "rerank": "821c45bcb92db29a",
             "export": "d0d1f33f92222fac"},
    "e5": {"brainstorm": "9a20e47ee570adb1", "examples": "a45238ce24af41b9", "export": "80510de674ba8a15"},
    "multilongdoc": {"longdocs": "9cc4843e79eccaad", "questions": "e1ad1607bd25dda8",
                     "embed": "ebca306a52b45ab9", "mine": "5df4ba3cf87b442b", "export": "8871264830505dd7"},
    "mixture": {"convert": "2b60a824b72ededb", "mix": "63d4991842bc68af"},
    "recipe": {"fret": "16c3af6a3cd8b9eb", "e5": "742a933cbe2b8bcc", "multilongdoc": "bb4ce06dc7097d21",
               "convert": "2b60a824b72ededb", "mix": "ac5cf2b035cb5dde", "train": "8b149c3092112cd7",
               "eval": "0513bd95a29ef4a8"},
}


@pytest.mark.parametrize("kind", sorted(HASHES))
def test_stage_names_and_settings_hashes_are_unchanged(kind, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # pipeline files name data by paths relative to the repository
    ctx = open_run(Path("pipelines") / f"{kind}.yaml", tmp_path, OVERRIDES[kind])
    assert list(PIPELINES[kind]) == list(HASHES[kind])
    found: dict[str, str] = {}
    for name in PIPELINES[kind]:
        stage = make_stage(ctx, name)
        found[name] = settings_hash(stage, {n: found[n] for n in _inputs(stage)})
    assert found == HASHES[kind]


def test_a_run_made_before_resumes_with_nothing_to_redo(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    files = {p: os.stat(p).st_mtime_ns for p in run_dir.glob("*/part-*.parquet")}
    before = {d.name: shards.load_manifest(d) for d in run_dir.iterdir() if d.is_dir()}
    fakes.FakeLLM.sent.clear()
    run_pipeline(open_run(Path("pipelines/fret.yaml"), run_dir, FIXTURE_SETTINGS), progress=False)
    assert fakes.FakeLLM.sent == []
    assert {p: os.stat(p).st_mtime_ns for p in run_dir.glob("*/part-*.parquet")} == files
    after = {d.name: shards.load_manifest(d) for d in run_dir.iterdir() if d.is_dir() and d.name != "_cache"}
    assert sorted(after) == sorted(before) == sorted(PIPELINES["fret"])
    for name, manifest in after.items():
        assert manifest["settings_hash"] == before[name]["settings_hash"]
        assert manifest["shards"] == before[name]["shards"]
