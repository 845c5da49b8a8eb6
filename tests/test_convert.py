"""Converters on fixtures written in each data set's published schema (tests/fixtures/convert/)."""
import json
from pathlib import Path

import pytest

from fret.core.records import Unified, schema_of
from fret.core.shards import write_table
from fret.parts.convert import CONVERTERS, convert, load_rows

F = Path(__file__).parent / "fixtures" / "convert"


def run(name, file, **kw):
    return convert(name, load_rows(F / file), seed=kw.pop("seed", 0), **kw)


def reasons(rejects):
    return sorted(r.reason for r in rejects)


def test_nq_simplified_and_hf_schemas():
    rows, rej = run("nq", "nq_simplified.jsonl")
    assert len(rows) == 2 and reasons(rej) == ["no_long_answer"]
    amazon, photo = rows
    assert amazon["positive"].startswith("The river system originates in the Andes")
    assert "<P>" not in amazon["positive"] and amazon["positive_title"] == "Amazon River"
    assert amazon["negatives"] and all("originates" not in n for n in amazon["negatives"])
    assert photo["positive"].startswith("Photosynthesis is the process")  # candidate_index 0 is gold
    assert json.loads(photo["meta"])["candidate_index"] == 0
    hf, rej = run("nq", "nq_hf.jsonl")
    assert not rej and hf[0]["positive"].startswith("Chlorophyll absorbs")
    assert hf[0]["positive_title"] == "Photosynthesis" and hf[0]["negatives"][0].startswith("Photosynthesis is")


def test_hotpotqa_hf_and_original_agree():
    rows, rej = run("hotpotqa", "hotpotqa_distractor.jsonl")
    assert len(rows) == 2 and reasons(rej) == ["no_supporting_facts"]
    first = rows[0]  # answer "Los Angeles" is in the Scott Derrickson paragraph
    assert first["positive_title"] == "Scott Derrickson" and "Los Angeles" in first["positive"]
    gold = {"Scott Derrickson", "Doctor Strange (2016 film)"}
    assert first["negative_titles"] and not gold & set(first["negative_titles"])
    orig, rej = run("hotpotqa", "hotpotqa_original.json")
    assert not rej and orig[0] == first  # same content and id from either schema


def test_fever_evidence_from_wiki_pages():
    rows, rej = run("fever", "fever_train.jsonl", wiki_pages=F / "fever_wiki")
    assert reasons(rej) == ["evidence_not_in_wiki_pages", "not_enough_info"]
    sup, ref = rows
    assert sup["task_type"] == "fact_check" and not sup["symmetric"]
    assert "Fox television series" in sup["positive"] and "Fox Broadcasting Company" in sup["positive"]
    assert sup["positive_title"] == "Nikolaj Coster-Waldau" and "-LRB-" not in sup["positive"]
    assert sup["negatives"] and sup["negatives"][0] not in sup["positive"]
    assert ref["positive"].startswith("He is best known for his vlogs")
    cited = {"He also has another YouTube channel called RomanAtwood , where he posts pranks ."}
    assert ref["negatives"] and not cited & set(ref["negatives"])
    assert json.loads(ref["meta"])["label"] == "REFUTES"
    with pytest.raises(ValueError, match="wiki_pages"):
        run("fever", "fever_train.jsonl")


def test_medmcqa_explanation_and_answer_modes():
    rows, rej = run("medmcqa", "medmcqa.jsonl")
    assert len(rows) == 2 and reasons(rej) == ["no_explanation"]
    assert rows[0]["query"].startswith("Chronic urethral") and "atrophy" in rows[0]["positive"]
    assert rows[0]["negatives"] == [] and json.loads(rows[0]["meta"])["answer"] == "Atrophy"
    rows, rej = run("medmcqa", "medmcqa.jsonl", positive="answer")
    assert not rej and [r["positive"] for r in rows] == ["Atrophy", "Vitamin B12", "Roux en Y duodenal bypass"]
    assert sorted(rows[1]["negatives"]) == ["Vitamin B7", "Vitamin C", "Vitamin D"]
    # the original release numbers options 1-4
    one_based = [dict(r, cop=r["cop"] + 1) for r in load_rows(F / "medmcqa.jsonl")]
    again, _ = convert("medmcqa", one_based, positive="answer", cop_base=1)
    assert [r["positive"] for r in again] == [r["positive"] for r in rows]


def test_snli_pairs_entailment_with_contradiction():
    rows, rej = run("snli", "snli.jsonl")
    assert reasons(rej) == ["neutral_not_used", "neutral_not_used", "no_contradiction_for_premise",
                            "no_entailment_for_premise", "no_gold_label"]
    assert len(rows) == 3 and all(r["symmetric"] and r["task_type"] == "nli" for r in rows)
    by_pos = {r["positive"]: r for r in rows}
    assert by_pos["A person is outdoors, on a horse."]["negatives"] == ["A person is at a diner, ordering an omelette."]
    assert by_pos["The children are waving"]["query"] == "Children smiling and waving at camera"
    assert by_pos["The children are waving"]["negatives"] == ["The kids are frowning"]
    loose, rej = run("snli", "snli.jsonl", require_negative=False)
    assert len(loose) == 4 and "no_contradiction_for_premise" not in reasons(rej)


def test_mnli_multi_nli_schema():
    rows, rej = run("mnli", "mnli.jsonl")
    assert len(rows) == 1 and reasons(rej) == ["neutral_not_used", "no_contradiction_for_premise"]
    assert rows[0]["source"] == "mnli" and rows[0]["negatives"] == ["Cream skimming has no dimensions at all."]
    assert json.loads(rows[0]["meta"])["origin_id"] == "31193e"


def test_miracl_positive_and_provided_negative():
    rows, rej = run("miracl", "miracl_sw.jsonl", language="sw", max_negatives=2)
    assert reasons(rej) == ["no_positive_passage"] and all(r["language"] == "sw" for r in rows)
    assert rows[0]["positive_title"] == "Kimbunga" and len(rows[0]["negatives"]) == 2
    assert set(rows[0]["negative_titles"]) <= {"Mvua", "Bahari", "Upepo"}
    assert rows[1]["negatives"] == [] and rows[1]["positive"].endswith("Tanzania.")


def test_classification_same_and_other_label():
    names = json.loads((F / "classification_labels.json").read_text())
    src = list(load_rows(F / "classification.csv"))
    label = {r["text"]: r["label"] for r in src}
    rows, rej = convert("classification", src, seed=3, label_names=names, source="banking77",
                        task="Given a banking question, retrieve a question with the same intent")
    assert reasons(rej) == ["empty_text", "label_has_one_text"] and len(rows) == 9
    for r in rows:
        assert r["positive"] != r["query"] and label[r["positive"]] == label[r["query"]]
        assert label[r["negatives"][0]] != label[r["query"]]
        assert r["source"] == "banking77" and r["task"].startswith("Given a banking question")
    assert json.loads(rows[0]["meta"])["label_name"] == "activate_my_card"
    other, _ = convert("classification", src, seed=4, label_names=names)
    assert [r["positive"] for r in other] != [r["positive"] for r in rows] or \
        [r["negatives"] for r in other] != [r["negatives"] for r in rows]  # the seed matters


ALL = [("nq", "nq_simplified.jsonl", {}), ("hotpotqa", "hotpotqa_distractor.jsonl", {}),
       ("fever", "fever_train.jsonl", {"wiki_pages": F / "fever_wiki"}), ("medmcqa", "medmcqa.jsonl", {}),
       ("snli", "snli.jsonl", {}), ("mnli", "mnli.jsonl", {}), ("miracl", "miracl_sw.jsonl", {}),
       ("classification", "classification.csv", {})]


@pytest.mark.parametrize("name,file,kw", ALL, ids=[a[0] for a in ALL])
def test_stable_ids_schema_and_default_task(name, file, kw):
    a, ra = run(name, file, **kw)
    b, rb = run(name, file, **kw)
    assert a == b and [r.id for r in ra] == [r.id for r in rb]  # same input and seed: same rows
    assert len({r["id"] for r in a}) == len(a)
    for r in a:
        assert set(r) == set(Unified.model_fields) and r["task"] == CONVERTERS[name].task
        assert r["id"].startswith(CONVERTERS[name].source + "-") and r["query"] and r["positive"]
        assert len(r["negatives"]) == len(r["negative_titles"]) and json.loads(r["meta"])["converter"] == name
    assert all(rj.stage == "convert" and rj.raw for rj in ra)


def test_limit_options_and_unknown_names(tmp_path):
    rows, _ = run("snli", "snli.jsonl", limit=1)
    assert len(rows) == 1
    with pytest.raises(KeyError, match="unknown converter"):
        convert("squad", [])
    with pytest.raises(TypeError, match="no option"):
        convert("nq", [], max_negative=2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        list(load_rows(bad))
    with pytest.raises(FileNotFoundError):
        load_rows(tmp_path / "missing.parquet")


def test_load_rows_from_saved_dataset_and_parquet_roundtrip(tmp_path):
    import datasets

    src = list(load_rows(F / "snli.jsonl"))
    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"])})
    ok = [r for r in src if r["label"] >= 0]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ok, features=features)}).save_to_disk(tmp_path / "snli")
    from_disk, _ = convert("snli", load_rows(tmp_path / "snli", split="train"))
    from_file, _ = convert("snli", [r for r in src if r["label"] >= 0])
    assert from_disk == from_file and len(from_disk) == 3
    with pytest.raises(ValueError, match="no split"):
        load_rows(tmp_path / "snli", split="test")
    # written as a shard, loaded back by the Hub's parquet loader
    rows = from_disk + run("nq", "nq_simplified.jsonl")[0] + run("miracl", "miracl_sw.jsonl")[0]
    write_table(tmp_path / "out" / "part-00000.parquet", rows, schema_of(Unified))
    ds = datasets.load_dataset("parquet", data_files=str(tmp_path / "out" / "*.parquet"), split="train",
                               cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == len(rows) and ds.to_list() == rows
