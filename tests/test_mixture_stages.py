"""The `convert` and `mix` stages through the shared runner, on real-schema fixtures and real data."""

import datasets
import pytest

from conftest import EVALDATA, ROOT
from fret.core import shards
from fret.core.records import Unified, schema_of
from fret.core.runner import open_run, run_pipeline

PIPELINE = ROOT / "pipelines" / "mixture.yaml"


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # the pipeline's paths are relative to the project root


def test_mixture_pipeline(in_root, tmp_path):
    other = tmp_path / "other"
    stsb_sentence = (EVALDATA / "stsb" / "sts-test.csv").read_text().splitlines()[0].split("\t")[5]
    rows = [Unified(id=f"x{i}", task="t", query=q, positive=f"positive {i} " * 5, negatives=[],
                    negative_titles=[], source="other", task_type="qa", symmetric=False,
                    language="en", meta="{}").model_dump()
            for i, q in enumerate(["a fresh query about rivers", stsb_sentence, "another fresh query"])]
    shards.write_table(other / "part-00000.parquet", rows, schema_of(Unified))
    run_pipeline(open_run(PIPELINE, tmp_path / "run", [
        f"mix.inputs=[{{name: other, path: {other}}}]", "mix.strategy=original"]), progress=False)
    convert = shards.load_manifest(tmp_path / "run" / "convert")
    assert convert["complete"] and len(convert["shards"]) == 5
    mixed = [r for _, rs in shards.iter_stage_rows(tmp_path / "run" / "mix") for r in rs]
    assert len({r["id"] for r in mixed}) == len(mixed)
    assert {"snli", "nq", "hotpotqa", "medmcqa", "banking77", "other"} <= {r["source"] for r in mixed}
    assert stsb_sentence not in {r["query"] for r in mixed}  # decontaminated against STS-B test
    rejected = shards.load_manifest(tmp_path / "run" / "mix")["totals"]["rejected"]
    assert rejected.get("contaminated_query:stsb-test", 0) >= 1
    # Hugging Face hand-off: the shards load as a `datasets` Parquet data set.
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "run" / "mix" / "part-*.parquet"),
                               split="train")
    assert ds.num_rows == len(mixed) and set(ds.column_names) == set(schema_of(Unified).names)


def test_uniform_over_task_types(in_root, tmp_path):
    run_pipeline(open_run(PIPELINE, tmp_path, []), progress=False)
    mixed = [r for _, rs in shards.iter_stage_rows(tmp_path / "mix") for r in rs]
    counts = {}
    for r in mixed:
        counts[r["task_type"]] = counts.get(r["task_type"], 0) + 1
    assert len(set(counts.values())) == 1, counts  # equal share per task type
