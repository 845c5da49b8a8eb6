"""Mixing (strategies, de-duplication, unique ids) and decontamination against real evaluation sets."""
import json
from collections import Counter

import pytest

from fret.core.records import Unified, stable_id
from fret.parts import bundled
from fret.parts.decontam import build_index, decontaminate, normalize, read_sts, words
from fret.parts.mix import apportion, mix

from conftest import EVALDATA as EVAL


def urow(source, task_type, query, positive, **kw):
    row = {"id": stable_id(source, query, positive, prefix=f"{source}-"), "task": "t", "query": query,
           "positive": positive, "positive_title": None, "negatives": [], "negative_titles": [],
           "source": source, "task_type": task_type, "symmetric": False, "language": "en", "meta": "{}"}
    row.update(kw)
    Unified.model_validate(row)
    return row


def make(source, task_type, n):
    return [urow(source, task_type, f"{source} question {i}", f"{source} passage number {i}") for i in range(n)]


SOURCES = {"a": make("a", "qa", 100), "b": make("b", "qa", 300), "c": make("c", "nli", 50),
           "d": make("d", "classification", 200)}


def by(rows, key):
    return dict(Counter(r[key] for r in rows))


def test_apportion_sums_and_rounds():
    assert apportion(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert sum(apportion(97, {"x": 0.3, "y": 0.7, "z": 1.1}).values()) == 97


def test_original_distribution():
    rows, stats, rej = mix(SOURCES, strategy="original", seed=0)
    assert len(rows) == 650 and not rej and stats["not_sampled"] == 0
    rows, stats, _ = mix(SOURCES, strategy="original", total=130, seed=0)
    assert by(rows, "source") == {"a": 20, "b": 60, "c": 10, "d": 40}


def test_weights_and_shortfall():
    rows, stats, _ = mix(SOURCES, strategy="weights", weights={"a": 1, "b": 1, "c": 2, "d": 0}, total=80, seed=0)
    assert by(rows, "source") == {"a": 20, "b": 20, "c": 40}
    rows, stats, _ = mix(SOURCES, strategy="weights", weights={"a": 1, "b": 1, "c": 2, "d": 0}, seed=0)
    assert by(rows, "source") == {"a": 25, "b": 25, "c": 50}  # largest total c can supply
    rows, stats, _ = mix(SOURCES, strategy="weights", weights={"a": 10, "b": 1, "c": 1, "d": 1}, total=520, seed=0)
    assert stats["pools"]["a"] == {"available": 100, "quota": 400, "taken": 100, "shortfall": 300}
    assert by(rows, "source") == {"a": 100, "b": 40, "c": 40, "d": 40}
    rows, stats, _ = mix({"a": SOURCES["a"], "e": []}, strategy="weights", weights={"a": 1, "e": 1}, total=10)
    assert len(rows) == 5 and stats["pools"]["e"]["shortfall"] == 5  # ratios kept, gap reported
    with pytest.raises(ValueError, match="missing"):
        mix(SOURCES, strategy="weights", weights={"a": 1})


def test_uniform_over_task_types_vs_original():
    rows, stats, _ = mix(SOURCES, strategy="uniform_task_type", total=90, seed=0)
    assert by(rows, "task_type") == {"qa": 30, "nli": 30, "classification": 30}
    qa = by([r for r in rows if r["task_type"] == "qa"], "source")
    assert qa["b"] > qa["a"]  # inside a task type, rows are drawn uniformly (b has 3x a's rows)
    rows, _, _ = mix(SOURCES, strategy="uniform_task_type", seed=0)
    assert by(rows, "task_type") == {"qa": 50, "nli": 50, "classification": 50}
    orig, _, _ = mix(SOURCES, strategy="original", total=150, seed=0)
    assert by(orig, "task_type") == {"qa": 92, "nli": 12, "classification": 46}


def test_deterministic_for_a_seed():
    one = mix(SOURCES, strategy="uniform_task_type", total=90, seed=7)
    two = mix(SOURCES, strategy="uniform_task_type", total=90, seed=7)
    assert one[0] == two[0] and one[1] == two[1]
    other = mix(SOURCES, strategy="uniform_task_type", total=90, seed=8)
    assert [r["id"] for r in other[0]] != [r["id"] for r in one[0]]


def test_dedup_exact_and_normalized_and_unique_ids():
    base = make("x", "qa", 10)
    exact = [dict(base[0]), dict(base[1], source="y", id="y-copy")]  # same (query, positive)
    loose = [urow("y", "qa", "X  QUESTION 2!", "x passage, number 2"),       # case, spaces, punctuation
             urow("y", "qa", "ｘ question 3", "x passage number 3.")]          # NFKC full-width x
    clash = urow("y", "qa", "another question", "another passage", id=base[5]["id"])  # id reused
    rows, stats, rej = mix({"x": base, "y": exact + loose + [clash]}, seed=0)
    assert stats["dropped"] == {"duplicate_exact": 2, "duplicate_normalized": 2}
    assert sorted(r.reason for r in rej) == ["duplicate_exact"] * 2 + ["duplicate_normalized"] * 2
    assert all(r.stage == "mix" and r.detail.startswith("same as x-") for r in rej)
    assert len(rows) == 11 and len({r["id"] for r in rows}) == 11 and stats["re_id"] == 1
    moved = [r for r in rows if "original_id" in json.loads(r["meta"])]
    assert len(moved) == 1 and json.loads(moved[0]["meta"])["original_id"] == base[5]["id"]
    assert normalize("Ｈello,  WORLD!") == "hello world"


# --- decontamination on real evaluation data ----------------------------------------------------


def wiki_rows(n, lang="en"):
    pages = json.loads(bundled.wiki_summaries(lang).read_text())
    out = []
    for key in sorted(pages)[:n]:
        p = pages[key]
        if p.get("extract"):
            out.append(urow("wiki", "qa", f"What is {p['title']}?", p["extract"]))
    return out


@pytest.fixture(scope="module")
def xquad_beir(tmp_path_factory):
    """BEIR folders (corpus.jsonl, queries.jsonl) built from XQuAD en and zh, read by path."""
    root = tmp_path_factory.mktemp("beir")
    for lang in ("en", "zh"):
        data = json.loads((EVAL / "xquad" / f"xquad.{lang}.json").read_text())["data"]
        folder = root / f"xquad-{lang}"
        folder.mkdir()
        paras = [p for art in data for p in art["paragraphs"]]
        with open(folder / "corpus.jsonl", "w") as c, open(folder / "queries.jsonl", "w") as q:
            for i, p in enumerate(paras):
                c.write(json.dumps({"_id": f"d{i}", "title": "", "text": p["context"]}, ensure_ascii=False) + "\n")
                for qa in p["qas"]:
                    q.write(json.dumps({"_id": qa["id"], "text": qa["question"]}, ensure_ascii=False) + "\n")
    return root, paras


def test_decontaminate_stsb(tmp_path):
    sts = EVAL / "stsb" / "sts-test.csv"
    index = build_index({"stsb": sts})
    test_sents = list(read_sts(sts))
    assert len(test_sents) == 2 * 1379 and index.sets["stsb"].texts == 2758
    train_only = sorted(set(read_sts(EVAL / "stsb" / "sts-train.csv")) - set(test_sents))
    contaminated = [urow("s", "sts", s.upper().replace(".", " !"), train_only[i])
                    for i, s in enumerate(test_sents[:40])]  # case and punctuation changed
    clean = wiki_rows(300)
    kept, dropped = decontaminate(contaminated + clean, index)
    assert Counter(r.reason for r in dropped) == {"contaminated_query:stsb": 40}
    assert len(kept) == len(clean) and all(r.stage == "decontam" for r in dropped)


def test_decontaminate_beir_from_xquad(xquad_beir):
    root, paras = xquad_beir
    index = build_index([root / "xquad-en", root / "xquad-zh"], ngram=8)
    assert set(index.sets) == {"xquad-en", "xquad-zh"} and index.sets["xquad-en"].texts == 240 + 1190
    en = json.loads((EVAL / "xquad" / "xquad.en.json").read_text())["data"]
    zh = json.loads((EVAL / "xquad" / "xquad.zh.json").read_text())["data"]
    en_p = [p for a in en for p in a["paragraphs"]]
    zh_p = [p for a in zh for p in a["paragraphs"]]

    def edit(text):  # every 30th word changed: about 3 in 4 of its 8-grams stay intact
        w = text.split()
        return " ".join("CHANGED" if i % 30 == 0 else t for i, t in enumerate(w))

    clean = wiki_rows(200)
    rows = ([urow("t", "qa", f"q{i}", edit(p["context"])) for i, p in enumerate(en_p[:20])]
            + [urow("t", "qa", p["qas"][0]["question"], clean[i]["positive"]) for i, p in enumerate(zh_p[:10])]
            + clean[20:])
    kept, dropped = decontaminate(rows, index, threshold=0.5)
    assert Counter(r.reason for r in dropped) == {"contaminated_positive:xquad-en": 20,
                                                  "contaminated_query:xquad-zh": 10}
    assert len(kept) == len(clean) - 20
    # a quarter of a test paragraph inside clean text: kept at 0.5, caught at 0.2
    w = en_p[30]["context"].split()
    mixed = urow("t", "qa", "q", " ".join(w[: len(w) // 4]) + " " + clean[0]["positive"])
    frac = index.match(mixed["positive"], 0.0)[1]
    assert 0.1 < frac < 0.5
    assert decontaminate([mixed], index, threshold=0.5)[0] == [mixed]
    assert decontaminate([mixed], index, threshold=frac)[1][0].reason == "contaminated_positive:xquad-en"
    # the same check from inside mix(), counted by reason with the other drops
    out, stats, rej = mix({"t": rows}, index=index, seed=0)
    assert stats["dropped"] == {"contaminated_positive:xquad-en": 20, "contaminated_query:xquad-zh": 10}
    assert len(out) == len(kept) and all(r.stage == "mix" for r in rej)
    assert words("東京,Tokyo")[:2] == ["東", "京"]
