"""`embed.engine: onnx`: the bundled MiniLM exported to ONNX gives torch's token ids and vectors,
in a process without torch, and the embed and mine stages give the same neighbours with it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import fakes  # noqa: F401,E402  (registers the fake LLM backend of the fixture run)
from fret.core import shards  # noqa: E402
from fret.core.errors import FretError  # noqa: E402
from fret.core.runner import open_run, run_pipeline  # noqa: E402
from fret.parts import onnx_embed  # noqa: E402
from fret.parts.corpus import CorpusSettings, iter_passages  # noqa: E402
from fret.parts.embed import Embedder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "fret_run"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def pair(exported):
    torch_side = Embedder("default", device="cpu", max_seq_length=256, batch_size=16)
    onnx_side = Embedder("default", device="cpu", max_seq_length=256, batch_size=16,
                         engine="onnx", export_cache=exported)
    return torch_side, onnx_side


def test_same_token_lengths_and_vectors_as_torch(pair):
    torch_side, onnx_side = pair
    settings = CorpusSettings(sources=[{"type": "wiki", "limit": 30}])  # en, es, fr
    texts = [p.text for p in iter_passages(settings) if hasattr(p, "text")][:80]
    texts += ["", "  spaced  ", "word " * 400]  # empty, stripped by nobody, truncated at 256
    np.testing.assert_array_equal(onnx_side.token_lengths(texts), torch_side.token_lengths(texts))
    ours, theirs = onnx_side.encode(texts), torch_side.encode(texts)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_tokenized_once_in_lanes_in_input_order(pair, monkeypatch):
    """Chunks tokenized side by side come back in input order, with the one-call ids, and the
    vectors do not depend on the lanes or the chunking."""
    _, onnx_side = pair
    texts = [f"passage {i}: " + "word " * (i % 37) for i in range(23)]
    whole = [e.ids for e in onnx_side._onnx.tokenizer.encode_batch(texts)]
    want = onnx_side.encode(texts)
    monkeypatch.setattr(onnx_embed, "TOKENIZE_CHUNK", 4)
    monkeypatch.setattr(onnx_side._onnx, "lanes", 3)
    assert [ids.tolist() for ids in onnx_side._onnx.tokenize(texts)] == whole
    tokenized = []
    real = onnx_side._onnx._tokenize_chunk
    monkeypatch.setattr(onnx_side._onnx, "_tokenize_chunk",
                        lambda chunk: tokenized.extend(chunk) or real(chunk))
    np.testing.assert_array_equal(onnx_side.encode(texts), want)
    assert sorted(tokenized) == sorted(texts)  # each text once: lengths and batches share the ids


def test_identity_names_the_engine_and_export_is_reused(pair, exported, monkeypatch):
    torch_side, onnx_side = pair
    ident = dict(onnx_side.identity())
    assert ident.pop("engine") == "onnx" and ident == torch_side.identity()
    folder = next(p for p in exported.iterdir() if (p / "export.json").exists())
    assert (folder / "model.onnx.data").stat().st_size > 80e6  # the weights, mapped at load
    assert onnx_side.batch_tokens == 512  # bounds a batch's activations by default

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(subprocess, "run", no_export)
    again = Embedder("default", max_seq_length=256, engine="onnx", export_cache=exported)
    assert again.identity() == onnx_side.identity()


def test_encoding_process_holds_no_torch(pair, exported):
    code = ("import sys, json; from fret.parts.embed import Embedder; "
            f"e = Embedder('default', max_seq_length=256, engine='onnx', export_cache={str(exported)!r}); "
            "v = e.encode(['a river', 'a city']); "
            "print(json.dumps([v.shape[1], sorted(m for m in ('torch', 'sentence_transformers', "
            "'transformers') if m in sys.modules)]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [384, []]


def test_unfaithful_export_is_refused(pair, exported):
    torch_side, _ = pair
    folder = next(p for p in exported.iterdir() if (p / "export.json").exists())
    encoder = onnx_embed.OnnxEncoder(folder, threads=1)
    encoder.tokenizer.enable_truncation(8)  # injected fault: a tokenizer that cuts texts short
    with pytest.raises(RuntimeError, match="other token ids"):
        onnx_embed.check(torch_side.model, encoder)


def test_export_failure_and_missing_runtime_are_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(RuntimeError, match="ONNX export failed .*engine: torch"):
        onnx_embed.ensure_exported(str(tmp_path / "no-such-model"), "x", 256, tmp_path)
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(FretError, match=r"pip install 'fret\[onnx\]'"):
        onnx_embed.ensure_exported("default", "x", 256, tmp_path)
    with pytest.raises(ValueError, match="engine onnx"):
        Embedder("default", pooling="mcls", engine="onnx")


def test_embed_and_mine_stages_find_the_same_neighbours(tmp_path, monkeypatch):
    """The fixture run (torch engine) against the same run re-embedded and re-mined on onnx."""
    monkeypatch.chdir(ROOT)
    run = tmp_path / "run"
    shutil.copytree(FIXTURE, run)
    settings = ["llm.backend=fake", "corpus.sources.0.limit=24", "sample.size=4",
                "sample.shard_size=2", "mine.top_n=3", "queries.max_attempts=2"]
    before = [r["candidate_ids"] for _, rows in shards.iter_stage_rows(run / "mine") for r in rows]
    for stage in ("embed", "mine"):  # what --restart does: the onnx settings hash differs
        shutil.rmtree(run / stage)
    run_pipeline(open_run(Path("pipelines/fret.yaml"), run, settings + ["embed.engine=onnx"]),
                 ["embed", "mine"], progress=False)
    after = [r["candidate_ids"] for _, rows in shards.iter_stage_rows(run / "mine") for r in rows]
    assert after == before and len(before) == 4
    assert any((run / "_cache" / "onnx").iterdir())  # exported into the run folder
