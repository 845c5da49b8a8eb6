"""Hub hand-off, up to the point where the network is needed."""
import datasets

from fret.cli import main
from fret.core import shards
from fret.core.records import Unified, schema_of


def write_shards(folder):
    rows = [Unified(id=f"r{i}", task="t", query=f"q{i}", positive=f"p{i}", negatives=[f"n{i}"],
                    negative_titles=[None], source="fret", task_type="qa", symmetric=False,
                    language="en", meta="{}").model_dump() for i in range(5)]
    shards.write_table(folder / "part-00000.parquet", rows[:3], schema_of(Unified))
    shards.write_table(folder / "part-00001.parquet", rows[3:], schema_of(Unified))
    return rows


def test_export_push_to_hub_builds_the_dataset_and_pushes(tmp_path, monkeypatch, capsys):
    rows = write_shards(tmp_path)
    pushed = {}

    def fake_push(self, repo, **kwargs):  # the network part: captured, not sent
        pushed.update(repo=repo, rows=self.to_list(), **kwargs)

    monkeypatch.setattr(datasets.Dataset, "push_to_hub", fake_push)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("MY_TOKEN", "hf_secret")
    assert main(["export", str(tmp_path), "--push-to-hub", "me/fret-data", "--token-env", "MY_TOKEN"]) == 0
    assert pushed["repo"] == "me/fret-data" and pushed["token"] == "hf_secret"
    assert pushed["rows"] == rows
    assert "pushed 5 rows" in capsys.readouterr().out


def test_export_errors_are_one_line(tmp_path, monkeypatch, capsys):
    assert main(["export", str(tmp_path), "--push-to-hub", "me/x"]) == 2
    assert "no part-*.parquet shards" in capsys.readouterr().err
    write_shards(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["export", str(tmp_path), "--push-to-hub", "me/x"]) == 2
    assert "HF_HUB_OFFLINE=1" in capsys.readouterr().err
