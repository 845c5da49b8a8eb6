"""`fret eval` and its function API on real data from ../shared/evaldata."""
import csv
import json
import os

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fret.parts.evaluation import cli as fret_eval
from fret.parts.evaluation import (EvalDataError, evaluate_retrieval, load_model, read_beir, read_classification,
                             read_squad_retrieval)
from fret.parts.evaluation.tasks import encode

from conftest import EVALDATA

pytestmark = [pytest.mark.skipif(not EVALDATA.exists(), reason="shared evaldata not present"),
              pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def model():
    return load_model("default", "cpu")


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    """A BEIR folder made from the first 40 English XQuAD paragraphs and their questions."""
    data = read_squad_retrieval(EVALDATA / "xquad" / "xquad.en.json")
    docs = list(data.corpus)[:40]
    folder = tmp_path_factory.mktemp("beir")
    with open(folder / "corpus.jsonl", "w") as f:
        for d in docs:
            f.write(json.dumps({"_id": d, "title": data.corpus[d][0], "text": data.corpus[d][1]}) + "\n")
    qids = [q for q, rel in data.qrels.items() if next(iter(rel)) in docs][:80]
    with open(folder / "queries.jsonl", "w") as f:
        for q in qids:
            f.write(json.dumps({"_id": q, "text": data.queries[q]}) + "\n")
    (folder / "qrels").mkdir()
    with open(folder / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in qids:
            f.write(f"{q}\t{next(iter(data.qrels[q]))}\t1\n")
    return folder


def test_retrieval_cli_table_and_json(beir, tmp_path, capsys):
    out = tmp_path / "figures.json"
    assert fret_eval.main(["--model", "default", "--retrieval", str(beir), "--dims", "384,64", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ndcg@10=" in printed and "mrr@10=" in printed and "recall@100=" in printed
    rows = json.loads(out.read_text())["results"]
    assert [r["dim"] for r in rows] == [384, 64] and rows[0]["queries"] == 80
    full, small = rows
    assert 0.7 < full["ndcg@10"] <= 1 and full["recall@100"] == 1.0  # 40 docs: all retrieved
    assert full["ndcg@10"] > small["ndcg@10"]  # MiniLM was not trained for 64 dims


def test_mrr_from_pytrec_eval_matches_ranks(beir, model):
    data = read_beir(beir)
    figures = evaluate_retrieval(model, data.corpus, data.queries, data.qrels, dims=[384])
    doc_ids = list(data.corpus)
    d = encode(model, [t for _, t in data.corpus.values()])
    q = encode(model, list(data.queries.values()))
    ranks = []
    for row, qid in zip(q @ d.T, data.queries):
        gold = doc_ids.index(next(iter(data.qrels[qid])))
        rank = int((row > row[gold]).sum()) + 1
        ranks.append(1 / rank if rank <= 10 else 0.0)
    assert figures[384]["mrr@10"] == pytest.approx(float(np.mean(ranks)), abs=1e-6)


def test_sts_bitext_and_cross_lingual(tmp_path, capsys):
    xq = EVALDATA / "xquad"
    out = tmp_path / "f.json"
    code = fret_eval.main(["--model", "default", "--sts", str(EVALDATA / "stsb" / "sts-dev.csv"),
                           "--bitext", str(xq / "xquad.de.json"), str(xq / "xquad.en.json"),
                           "--retrieval", str(xq / "xquad.es.json"), "--corpus-from", str(xq / "xquad.en.json"),
                           "--limit", "60", "--json", str(out)])
    assert code == 0
    rows = {r["task"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["sts"]["pairs"] == 60 and 60 < rows["sts"]["spearman"] <= 100
    assert rows["bitext"]["pairs"] == 60 and 10 < rows["bitext"]["accuracy"] < 100
    assert rows["retrieval"]["queries"] == 60 and "corpus" in rows["retrieval"]["data"]
    assert 0.1 < rows["retrieval"]["ndcg@10"] < 1


def test_classification_probe_on_banking77(tmp_path):
    out = tmp_path / "f.json"
    # --limit samples rows with a fixed seed (the files are sorted by category)
    assert fret_eval.main(["--model", "default", "--classification", str(EVALDATA / "banking77"),
                           "--limit", "500", "--dims", "384,128", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    print(f"\nbanking77 (500 train / 500 test rows): accuracy {rows[0]['accuracy']:.1f} (384), {rows[1]['accuracy']:.1f} (128)")
    assert rows[0]["train"] == rows[0]["test"] == 500
    assert rows[0]["accuracy"] > 40  # 77 classes: chance is 1.3%


def test_malformed_inputs_name_the_file(tmp_path, capsys):
    bad = tmp_path / "beir"
    (bad / "qrels").mkdir(parents=True)
    (bad / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n{"_id": "d2", "text": \n')
    (bad / "queries.jsonl").write_text('{"_id": "q1", "text": "y"}\n')
    (bad / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    with pytest.raises(EvalDataError, match=r"corpus\.jsonl:2: .*malformed_json"):
        read_beir(bad)
    (bad / "corpus.jsonl").write_text('{"_id": "d1", "text": "x"}\n')
    (bad / "qrels" / "test.tsv").write_text("q1\td1\n")
    with pytest.raises(EvalDataError, match=r"test\.tsv:1: expected query-id"):
        read_beir(bad)
    (bad / "queries.jsonl").unlink()
    with pytest.raises(EvalDataError, match=r"queries\.jsonl: missing"):
        read_beir(bad)
    sts = tmp_path / "sts.tsv"
    sts.write_text("main\tf\t2012\t1\t5.0\ta\tb\nmain\tf\t2012\t2\t4.0\tonly six\n")
    assert fret_eval.main(["--model", "default", "--sts", str(sts)]) == 2  # input: found before the model loads
    err = capsys.readouterr().err
    assert f"{sts}:2: expected 7 tab-separated fields" in err
    cls = tmp_path / "cls"
    cls.mkdir()
    with open(cls / "train.csv", "w", newline="") as f:
        csv.writer(f).writerows([["sentence", "label"], ["a", "b"]])
    (cls / "test.csv").write_text("text,category\na,b\n")
    with pytest.raises(EvalDataError, match=r"train\.csv: header must have columns text,category"):
        read_classification(cls)
    (tmp_path / "a.txt").write_text("one\ntwo\n")
    (tmp_path / "b.txt").write_text("uno\n")
    assert fret_eval.main(["--model", "default", "--bitext", str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]) == 2
    assert "must align" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    assert fret_eval.main(["--model", "default"]) == 2
    assert fret_eval.main(["--model", "default", "--sts", "x.tsv", "--dims", "a,b"]) == 2
