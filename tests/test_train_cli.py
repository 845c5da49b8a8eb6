"""`fret train` end to end on real Parquet shards of real Wikipedia text: output, card, resume, errors."""
import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fret.core.errors import ConfigError
from fret.core.records import Unified, schema_of, stable_id
from fret.core.shards import write_json, write_table
from fret.parts.bundled import wiki_summaries
from fret.parts.train import cli
from fret.parts.train.data import DataSource
from fret.parts.train.loop import train
from fret.parts.train.settings import apply_overrides


pytestmark = pytest.mark.usefixtures("one_thread")

TASK = "Given a short description, find the Wikipedia article it describes"


def wiki_articles(language="en", n=64, skip=0):
    """Real articles with a description, in a fixed order: [(title, extract, description, topic)]."""
    data = json.loads(Path(wiki_summaries(language)).read_text())
    rows = [(v["title"], v["extract"], v["description"], v["topic"]) for _, v in sorted(data.items())
            if v.get("description") and len(v.get("extract", "")) > 80]
    return rows[skip:skip + n]


def write_unified(folder: Path, articles, shards=2, negatives=1):
    rows = []
    for i, (title, extract, desc, topic) in enumerate(articles):
        neg = articles[(i + 1) % len(articles)]
        rows.append(Unified(id=stable_id(desc, extract), task=TASK, query=desc, positive=extract,
                            positive_title=title, negatives=[neg[1]][:negatives], negative_titles=[neg[0]][:negatives],
                            source=f"wiki-{topic.lower()}", task_type="qa", symmetric=False, language="en",
                            meta="{}").model_dump())
    per = -(-len(rows) // shards)
    for s in range(shards):
        write_table(folder / f"part-{s:05d}.parquet", rows[s * per:(s + 1) * per], schema_of(Unified))
    write_json(folder / "_manifest.json", {"stage": "export", "settings_hash": "abc123",
                                           "shards": {f"part-{s:05d}.parquet": {"rows": per} for s in range(shards)}})
    (folder / "_rejects").mkdir()
    return folder


FAST = ["batch_size=8", "mini_batch_size=8", "max_length=64", "max_steps=4", "lr=5e-5", "checkpoint_every=2"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_unified(tmp_path_factory.mktemp("data") / "export", wiki_articles(n=32))


def test_bad_setting_is_one_line_error_exit_2(shards, tmp_path, capsys):
    assert cli.main(["--data", str(shards), "--output", str(tmp_path / "m"), "--set", "temprature=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "temprature" in err and "unknown" in err
    assert cli.main(["--data", str(shards), "--output", str(tmp_path / "m"), "--set", "batch_size=lots"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "batch_size" in err
    assert not (tmp_path / "m").exists()


def test_overrides_parse_types():
    s = apply_overrides(["matryoshka_dims=384,128", "temperature=0.02", "format=false", "max_steps=null"])
    assert s.matryoshka_dims == [384, 128] and s.temperature == 0.02 and s.format == "plain" and s.max_steps is None


def test_train_writes_loadable_model_with_card(shards, tmp_path):
    out = tmp_path / "model"
    code = cli.main(["--data", f"{shards}:1.5", "--model", "default", "--output", str(out),
                     "--set", "matryoshka_dims=384,128", *(f"--set={x}" for x in FAST)])
    assert code == 0
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(out), device="cpu")
    emb = model.encode(["task: x | query: a painting", "title: none | text: a film"])
    assert emb.shape == (2, 384)
    assert abs(float((emb[0] ** 2).sum()) - 1.0) < 1e-4  # normalised
    record = json.loads((out / "fret_training.json").read_text())
    assert record["matryoshka_dims"] == [384, 128] and record["steps"] == 4
    assert record["data"][0]["rows"] == 32 and record["data"][0]["used"] == 48  # weight 1.5
    assert record["data"][0]["manifest"]["settings_hash"] == "abc123"
    card = (out / "README.md").read_text()
    assert str(shards.resolve()) in card and "abc123" in card and '"temperature": 0.05' in card
    assert not (out / "checkpoints").exists()  # cleaned up once the model is saved
    # fret eval defaults to the Matryoshka dims the folder records
    from conftest import EVALDATA
    sts = EVALDATA / "stsb" / "sts-dev.csv"
    if sts.exists():
        from fret.parts.evaluation import cli as fret_eval

        figures = tmp_path / "eval.json"
        assert fret_eval.main(["--model", str(out), "--sts", str(sts), "--limit", "40", "--json", str(figures)]) == 0
        assert [r["dim"] for r in json.loads(figures.read_text())["results"]] == [384, 128]
    # the weights moved away from the base model
    base = SentenceTransformer(str(__import__("fret.parts.bundled", fromlist=["x"]).minilm_dir()), device="cpu")
    assert float(abs(base.encode(["a film"]) - model.encode(["a film"])).max()) > 1e-4


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_from_last_checkpoint(shards, tmp_path):
    settings = apply_overrides(FAST)
    sources = [DataSource(shards)]
    whole = train(sources, "default", tmp_path / "whole", settings)

    def crash_at_3(step, loss):
        if step == 3:
            raise Interrupt()

    out = tmp_path / "resumed"
    with pytest.raises(Interrupt):
        train(sources, "default", out, settings, on_step=crash_at_3)
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]
    seen = []
    train(sources, "default", out, settings, on_step=lambda step, loss: seen.append(step))
    assert seen == [3, 4]  # continued after the checkpoint, not from scratch

    from safetensors.torch import load_file

    wa, wb = load_file(whole / "model.safetensors"), load_file(out / "model.safetensors")
    assert wa.keys() == wb.keys()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=1e-5, msg=key)


def test_checkpoint_of_other_settings_is_refused(shards, tmp_path):
    settings = apply_overrides(FAST)
    out = tmp_path / "m"
    with pytest.raises(Interrupt):
        train([DataSource(shards)], "default", out, settings,
              on_step=lambda s, l: (_ for _ in ()).throw(Interrupt()) if s == 2 else None)
    other = apply_overrides([*FAST, "temperature=0.1"])
    with pytest.raises(ConfigError, match="same command with --restart"):
        train([DataSource(shards)], "default", out, other)


def test_finished_training_is_kept_unless_restart(shards, tmp_path):
    settings = apply_overrides(FAST)
    out = tmp_path / "done"
    train([DataSource(shards)], "default", out, settings)
    before = (out / "model.safetensors").stat().st_mtime_ns
    seen = []
    train([DataSource(shards)], "default", out, settings, on_step=lambda s, l: seen.append(s))
    assert seen == [] and (out / "model.safetensors").stat().st_mtime_ns == before  # same command: nothing to do
    with pytest.raises(ValueError, match="--restart"):
        train([DataSource(shards)], "default", out, apply_overrides([*FAST, "max_steps=5"]))
    train([DataSource(shards)], "default", out, settings, restart=True, on_step=lambda s, l: seen.append(s))
    assert seen == [1, 2, 3, 4]


def test_model_carries_its_formatting_and_eval_uses_it(shards, tmp_path, capsys):
    import numpy as np
    from sentence_transformers import SentenceTransformer

    from conftest import EVALDATA
    from fret.parts.evaluation import cli as fret_eval

    out = tmp_path / "gecko"
    assert cli.main(["--data", str(shards), "--output", str(out), "--set", "format=gecko",
                     *(f"--set={x}" for x in FAST)]) == 0
    assert "formatting gecko" in capsys.readouterr().err
    model = SentenceTransformer(str(out), device="cpu")
    assert model.prompts == {"query": f"task: {TASK} | query: ", "document": "title: none | text: ",
                             "query_qa": f"task: {TASK} | query: "}
    # encode_query / encode_document reproduce the training formatting
    assert np.allclose(model.encode_query(["a painting"]), model.encode([f"task: {TASK} | query: a painting"]), atol=1e-6)
    assert np.allclose(model.encode_document(["a film"]), model.encode(["title: none | text: a film"]), atol=1e-6)
    card = (out / "README.md").read_text()
    assert "model.encode_query(" in card and "model.encode_document(" in card and TASK in card
    # fret eval: the recorded formatting by default, --task overrides it, --no-format turns it off
    found, which = fret_eval.choose_formatting(str(out))
    assert found.format_query("x") == f"task: {TASK} | query: x" and "recorded by fret train" in which
    assert found.format_document("body", "T") == "title: T | text: body"  # titles kept where known
    assert fret_eval.choose_formatting(str(out), task="Other")[0].format_query("x") == "task: Other | query: x"
    assert fret_eval.choose_formatting(str(out), no_format=True)[0] is None
    assert fret_eval.choose_formatting("default")[0] is None  # MiniLM declares no prompts
    sts = EVALDATA / "stsb" / "sts-dev.csv"
    assert fret_eval.main(["--model", str(out), "--sts", str(sts), "--limit", "8"]) == 0
    assert f"formatting gecko ('task: {TASK} | query: QUERY'" in capsys.readouterr().err


def test_formatting_choice_follows_settings_and_base_model(tmp_path):
    import shutil

    from fret.parts.bundled import minilm_dir
    from fret.parts.train.data import Pair
    from fret.parts.train.loop import AUTO_FORMAT, resolve_formatting

    pairs = [Pair(TASK, "q", "p", task_type="qa")]
    plain_base = str(minilm_dir())
    assert resolve_formatting(apply_overrides([]), plain_base, pairs).style == AUTO_FORMAT
    e5 = resolve_formatting(apply_overrides(["format=prompts"]), plain_base, pairs)
    assert (e5.format_query("who?"), e5.format_document("body", "T")) == ("query: who?", "passage: body")
    custom = resolve_formatting(apply_overrides(["format=prompts", "query_prompt=Q {x}: "]), plain_base, pairs)
    assert custom.format_query("who?") == "Q {x}: who?"  # braces in a prompt are literal
    assert resolve_formatting(apply_overrides(["format=gecko", "default_task=Mine"]), plain_base,
                              pairs).format_query("x") == "task: Mine | query: x"
    # a base model with prompts of its own is trained with them under format=auto
    own = tmp_path / "own"
    shutil.copytree(plain_base, own)
    cfg = own / "config_sentence_transformers.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "prompts": {"query": "Represent: ", "passage": "Doc: "}}))
    mine = resolve_formatting(apply_overrides([]), str(own), pairs)
    assert (mine.style, mine.format_query("x"), mine.format_document("y")) == ("prompts", "Represent: x", "Doc: y")
