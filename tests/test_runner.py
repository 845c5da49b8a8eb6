"""The shared runner: resume, settings hashes, rejects, user queries, config errors.

Real corpus, real MiniLM, real FAISS and Parquet; the LLM is the fake of tests/fakes.py, since
these tests are about control flow (the real-model run is tests/test_fret_e2e.py).
"""
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import fakes
from fret.cli import main
from fret.core import shards
from fret.core.config import load_pipeline
from fret.core.errors import ConfigError
from fret.core.runner import open_run, run_pipeline, run_stage
from fret.core.stage import StageError
from fret.parts.embed import Embedder

PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "fret.yaml"
SMALL = ["llm.backend=fake", "corpus.sources.0.limit=120", "sample.size=12", "sample.shard_size=4",
         "mine.top_n=5", "queries.max_attempts=2"]


def rows_of(run_dir: Path, stage: str) -> list[dict]:
    return [r for _, rows in shards.iter_stage_rows(run_dir / stage) for r in rows]


EMBEDDER_LOADS = []


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("clean")
    fakes.FakeLLM.sent.clear()
    real = Embedder.__init__

    def counted(self, *args, **kwargs):
        EMBEDDER_LOADS.append(args)
        real(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Embedder, "__init__", counted)
        run_pipeline(open_run(PIPELINE, run_dir, SMALL), progress=False)
    return run_dir, len(fakes.FakeLLM.sent)


def test_pipeline_output_and_invariants(clean_run):
    run_dir, _ = clean_run
    unified = rows_of(run_dir, "export")
    assert len(unified) == 12
    assert len({r["id"] for r in unified}) == 12
    ranked = rows_of(run_dir, "rerank")
    for r in ranked:
        assert r["positive_id"] in r["candidate_ids"]
        assert r["positive_id"] not in r["negative_ids"]
        assert sorted(r["ql_ranks"]) == list(range(1, 6))
    for u in unified:
        assert u["positive"] not in u["negatives"]
        assert json.loads(u["meta"])["seed_passage_id"]
    m = shards.load_manifest(run_dir / "rerank")
    assert m["complete"] and m["totals"]["rows_out"] == 12
    assert m["totals"]["llm"]["calls"] == 12 * 5 * 2  # one QL and one RC request per pair
    assert (run_dir / "settings.yaml").exists()
    assert len(EMBEDDER_LOADS) == 1  # embed and mine share the seed embedder: loaded once


def test_rerun_is_a_no_op(clean_run):
    run_dir, _ = clean_run
    fakes.FakeLLM.sent.clear()
    before = pq.read_table(run_dir / "export" / "part-00000.parquet").to_pylist()
    run_pipeline(open_run(PIPELINE, run_dir, SMALL), progress=False)
    assert fakes.FakeLLM.sent == []
    assert pq.read_table(run_dir / "export" / "part-00000.parquet").to_pylist() == before


def test_crash_then_resume_is_identical_and_resends_nothing(clean_run, tmp_path):
    clean_dir, total_requests = clean_run
    fakes.FakeLLM.sent.clear()
    crash_at = total_requests - 50  # inside rerank
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(open_run(PIPELINE, tmp_path, SMALL + [f"llm.extra={{crash_after: {crash_at}}}"]),
                     progress=False)
    answered_before = len(fakes.FakeLLM.sent)
    assert not shards.load_manifest(tmp_path / "rerank").get("complete")
    fakes.FakeLLM.sent.clear()
    # llm.extra is not part of the LLM identity, so the same cache and settings hash apply.
    run_pipeline(open_run(PIPELINE, tmp_path, SMALL), progress=False)
    # Answers already received were not asked for again (batches are committed whole, so
    # only the batch in flight at the crash is lost).
    assert answered_before + len(fakes.FakeLLM.sent) <= total_requests + 8
    for stage in ("queries", "mine", "rerank", "export"):
        assert rows_of(tmp_path, stage) == rows_of(clean_dir, stage), stage


def test_changed_settings_refuse_then_restart(clean_run, tmp_path):
    run_dir = tmp_path
    run_pipeline(open_run(PIPELINE, run_dir, SMALL), progress=False)
    ctx = open_run(PIPELINE, run_dir, SMALL + ["rerank.rrf_k=60"])
    with pytest.raises(StageError, match="--restart"):
        run_stage(ctx, "rerank", progress=False)
    run_stage(ctx, "rerank", restart=True, progress=False)
    with pytest.raises(StageError, match="--restart"):  # export was made from the old rerank
        run_stage(ctx, "export", progress=False)
    assert main(["generate", "export", str(PIPELINE), "--run-dir", str(run_dir), "--quiet",
                 "--restart", *sum((["--set", s] for s in SMALL + ["rerank.rrf_k=60"]), [])]) == 0


def test_malformed_answers_are_retried_then_rejected_with_reason(tmp_path):
    fakes.FakeLLM.sent.clear()
    # Passages holding " the " get a useless answer every time.
    ctx = open_run(PIPELINE, tmp_path, SMALL + ["llm.extra={malformed: the}"])
    ctx.allow_empty = True  # nearly every passage holds " the ": the stage may end with 0 rows
    run_pipeline(ctx, stages=["corpus", "sample", "queries"], progress=False)
    rejects = [r for p in sorted((tmp_path / "queries" / "_rejects").glob("*.parquet"))
               for r in shards.read_rows(p)]
    assert rejects and all(r["reason"] == "no_query_line" for r in rejects)
    assert all("cannot help" in r["raw"] for r in rejects)
    m = shards.load_manifest(tmp_path / "queries")["totals"]
    assert m["rejected"]["no_query_line"] == len(rejects)
    assert m["rows_out"] + len(rejects) == 12
    assert m["counts"]["attempts"] == 12 + len(rejects)  # one retry each, max_attempts=2


def test_user_queries_relabel_without_generation(tmp_path):
    run_pipeline(open_run(PIPELINE, tmp_path / "a", SMALL), stages=["corpus"], progress=False)
    corpus = rows_of(tmp_path / "a", "corpus")
    user = tmp_path / "queries.jsonl"
    lines = [json.dumps({"query": corpus[0]["title"], "positive_id": corpus[0]["id"]}),
             json.dumps({"query": "history of " + corpus[5]["title"], "task": "Find the article"}),
             "{not json", json.dumps({"task": "no query here"})]
    user.write_text("\n".join(lines) + "\n")
    fakes.FakeLLM.sent.clear()
    run_pipeline(open_run(PIPELINE, tmp_path / "a", SMALL + [f"queries.from_file={user}"]),
                 stages=["queries", "embed", "mine", "rerank", "export"], progress=False)
    assert not any(getattr(r, "prompt", "") and "Task type" in r.prompt for r in fakes.FakeLLM.sent)
    queries = rows_of(tmp_path / "a", "queries")
    assert [q["origin"] for q in queries] == ["user", "user"]
    assert queries[0]["passage_id"] == corpus[0]["id"] and queries[1]["task"] == "Find the article"
    reasons = shards.load_manifest(tmp_path / "a" / "queries")["totals"]["rejected"]
    assert reasons == {"malformed_row": 1, "missing_query": 1}
    assert len(rows_of(tmp_path / "a", "export")) == 2


@pytest.mark.parametrize("override, expected", [
    ("rerank.rrf_k=abc", "rerank.rrf_k: Input should be a valid number"),
    ("rerank.bogus=1", "rerank.bogus: unknown key"),
    ("queries.from_file=/no/such/file.jsonl", "queries.from_file: path does not exist"),
    ("corpus.sources.0.type=nope", "corpus.sources.0"),
])
def test_config_errors_are_one_clear_line(override, expected, capsys, tmp_path):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        load_pipeline(PIPELINE, [override])
    code = main(["run", str(PIPELINE), "--run-dir", str(tmp_path), "--set", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"(from --set {override})" in err[0] and "Traceback" not in err[0]


def test_missing_pipeline_file_and_unknown_stage(capsys, tmp_path):
    assert main(["run", "nope.yaml", "--run-dir", str(tmp_path)]) == 2
    assert "pipeline file not found: nope.yaml" in capsys.readouterr().err
    assert main(["generate", "bogus", str(PIPELINE), "--run-dir", str(tmp_path)]) == 2
    assert "has no stage 'bogus'" in capsys.readouterr().err


def test_stage_before_its_input_says_what_to_run(tmp_path):
    ctx = open_run(PIPELINE, tmp_path, SMALL)
    with pytest.raises(StageError, match="run `fret generate corpus"):
        run_stage(ctx, "sample", progress=False)


def test_bootstrap_seed_embedder_trained_on_queries_then_used_by_mine(clean_run, tmp_path):
    """Gecko's first FRet step: train the seed embedder on (query, seed passage), mine with it."""
    import shutil
    run_dir = tmp_path / "run"
    shutil.copytree(clean_run[0], run_dir)  # the module's reference run stays as it is
    model = tmp_path / "seed-embedder"
    assert main(["train", "--data", str(run_dir / "queries"), "--model", "default", "--output", str(model),
                 "--set", "max_steps=2", "--set", "batch_size=4", "--set", "mode=prefinetune"]) == 0
    ctx = open_run(PIPELINE, run_dir, SMALL + [f"embed.model={model}"])
    with pytest.raises(StageError, match="--restart"):  # the corpus embeddings came from MiniLM
        run_stage(ctx, "embed", progress=False)
    run_stage(ctx, "embed", restart=True, progress=False)
    manifest = run_stage(ctx, "mine", restart=True, progress=False)
    assert manifest["complete"] and manifest["totals"]["rows_out"] == 12
    embedder = shards.load_manifest(run_dir / "embed")
    assert str(model) in json.dumps(embedder["settings"])
    mined = rows_of(run_dir, "mine")
    assert sum(m["passage_id"] in m["candidate_ids"] for m in mined) >= 6  # it still retrieves seeds


def test_toml_pipeline_files_work_too(tmp_path):
    path = tmp_path / "fret.toml"
    path.write_text('pipeline = "fret"\nseed = 3\n\n[sample]\nsize = 5\n\n[mine]\ntop_n = 7\n')
    config = load_pipeline(path, ["rerank.rrf_k=60"])
    assert (config.seed, config.sample.size, config.mine.top_n, config.rerank.rrf_k) == (3, 5, 7, 60)
    path.write_text('pipeline = "fret"\n[sample\n')
    with pytest.raises(ConfigError, match=r"fret\.toml: not valid TOML"):
        load_pipeline(path)
