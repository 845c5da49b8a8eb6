"""Fuzzed converters (fret.parts.convert) on the published-schema fixtures, mutated: every input
row comes back as a unified row or a reject with its reason (NLI: or as another row's negative),
or the converter stops with its own error naming it; never a crash deep inside, never a row lost.
Also the file loader (load_rows) on damaged files."""
import json
import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from fret.core.records import Reject
from fret.parts.convert import convert, load_rows
from fuzzing import fuzz, mutated, mutated_tree

F = Path(__file__).parent / "fixtures" / "convert"
FILES = {"nq": "nq_simplified.jsonl", "nq ": "nq_hf.jsonl", "hotpotqa": "hotpotqa_distractor.jsonl",
         "hotpotqa ": "hotpotqa_original.json", "miracl": "miracl_sw.jsonl", "fever": "fever_train.jsonl",
         "medmcqa": "medmcqa.jsonl", "snli": "snli.jsonl", "mnli": "mnli.jsonl",
         "classification": "classification.csv"}
SEEDS = {key: list(load_rows(F / file)) for key, file in FILES.items()}
OPTIONS = {"fever": {"wiki_pages": F / "fever_wiki"}}


def _check(name: str, rows: list, **options) -> None:
    try:
        out, rejects = convert(name, rows, **{**OPTIONS.get(name, {}), **options})
    except (KeyError, TypeError, ValueError) as err:  # the converter's own errors name it
        assert "converter" in str(err), repr(err)
        return
    assert all(isinstance(r, Reject) and r.reason for r in rejects)
    if name not in ("snli", "mnli"):
        assert len(out) + len(rejects) == len(rows)
        return
    # NLI: a contradiction row is used as the negative of its premise's entailment rows.
    used = {o for row in out for o in json.loads(row["meta"])["negative_origin_ids"]}
    accounted = [json.loads(row["meta"])["origin_id"] for row in out] + list(used)
    accounted += [json.loads(r.raw).get("pairID") for r in rejects]
    assert sorted(accounted, key=repr) == sorted((r["pairID"] for r in rows), key=repr)


def _with_ids(rows: list) -> list:
    """NLI rows with unique pairIDs, so each can be found again in the output."""
    return [{**r, "pairID": f"r{i}"} if isinstance(r, dict) else r for i, r in enumerate(rows)]


@st.composite
def mutated_rows(draw):
    key = draw(st.sampled_from(sorted(SEEDS)))
    rows = [draw(mutated_tree(r, max_ops=2)) if draw(st.booleans()) else r for r in SEEDS[key]]
    rows = [r for r in rows if isinstance(r, dict)]  # load_rows gives objects, never other values
    return key.strip(), _with_ids(rows) if key in ("snli", "mnli") else rows


@fuzz(150)
@given(mutated_rows(), st.integers(0, 3))
@example(("nq", [{"question_text": "q?", "document_text": 5}]), 1)
@example(("snli", _with_ids([{"premise": "P.", "hypothesis": "E.", "label": 0},
                             {"premise": "P.", "hypothesis": "C1.", "label": 2},
                             {"premise": "P.", "hypothesis": "C2.", "label": 2}])), 1)
def test_converters(case, max_negatives):
    name, rows = case
    extra = {"max_negatives": max_negatives} if name not in ("medmcqa", "classification") else {}
    _check(name, rows, **extra)


@fuzz(100)
@given(st.sampled_from(sorted(FILES)).flatmap(
    lambda key: st.tuples(st.just(key), mutated((F / FILES[key]).read_bytes()))))
@example(("hotpotqa ", b"[1, 2]"))
@example(("classification", b"label\r\na,0,extra\r\n"))  # csv names the extra field None
@example(("classification", b"\xf4ext,label\r\na,0\r\n"))
def test_load_rows_damaged(case):
    key, data = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / FILES[key]
        path.write_bytes(data)
        try:
            rows = list(load_rows(path))
        except ValueError as err:
            assert str(path) in str(err), repr(err)
            return
    assert all(isinstance(r, dict) for r in rows)
    _check(key.strip(), _with_ids(rows) if key in ("snli", "mnli") else rows)
