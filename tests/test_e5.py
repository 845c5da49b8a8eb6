"""E5-mistral pipeline: brainstorm -> examples -> export through the shared runner.

Control flow (retries, rejects, kill-and-resume, determinism) with the fake of e5_fakes.py;
the real bundled SmolLM2 run is test_bundled_model_every_group_rows_or_counted_rejects.
"""
import json
import random
from collections import Counter
from pathlib import Path

import pytest

import e5_fakes
from fret.core import shards
from fret.core.runner import open_run, run_pipeline
from fret.parts import langid
from fret.stages.e5.attributes import LANGUAGES, default_language_weights, sample_attributes
from fret.stages.e5.records import GROUPS, Invalid, LongShort, first_json, validate

PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "e5.yaml"
FAKE = ["llm.backend=e5fake", "examples.languages={en: 2, fr: 1, de: 1}"]


def rows_of(run_dir: Path, stage: str) -> list[dict]:
    return [r for _, rows in shards.iter_stage_rows(run_dir / stage) for r in rows]


def rejects_of(run_dir: Path, stage: str) -> list[dict]:
    return [r for p in sorted((run_dir / stage / shards.REJECTS).glob("*.parquet"))
            for r in shards.read_rows(p)]


def test_93_languages_english_dominant_and_seeded_attributes():
    assert len(LANGUAGES) == 93
    weights = default_language_weights()
    rng = random.Random(0)
    drawn = Counter(sample_attributes(rng, "short_long", weights, [50])["language"] for _ in range(3000))
    assert 0.45 < drawn["en"] / 3000 < 0.62 and len(drawn) > 40
    a = sample_attributes(random.Random(7), "bitext", {"de": 1.0}, [100, 200])
    assert a == sample_attributes(random.Random(7), "bitext", {"de": 1.0}, [100, 200])
    assert a["language"] == "de" and a["target_language"] == "en" and a["num_words"] in (100, 200)


def test_answer_parsing_reasons():
    assert first_json('Sure!\n```json\n["a b", "c"]\n```', "[") == ["a b", "c"]
    for text, reason in [("no json here", "no_json"), ('{"input_text": "x",', "invalid_json")]:
        with pytest.raises(Invalid) as e:
            first_json(text, "{")
        assert e.value.reason == reason
    for value, reason in [({"input_text": "x", "label": "a"}, "missing_field:misleading_label"),
                          ({"input_text": "x", "label": 3, "misleading_label": "b"}, "invalid_field:label"),
                          ({"input_text": "x", "label": "A!", "misleading_label": "a"}, "identical_texts"),
                          (["x"], "not_an_object")]:
        with pytest.raises(Invalid) as e:
            validate(LongShort, value)
        assert e.value.reason == reason


def test_language_check_verdicts():
    assert langid.check("Der Fluss überschwemmt das Tal jedes Frühjahr.", "de").status == "ok"
    wrong = langid.check("The river floods the valley every spring after the snow melts.", "de")
    assert wrong.rejects and wrong.reason == "wrong_language:en!=de"
    assert langid.check("Hallo Welt", "de").status == "short"  # too few words to judge
    assert langid.check("The river floods the valley every spring.", "om").status == "unknown"
    assert langid.same_language("nb", "no") and langid.base_code("zh-Hans") == "zh"


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("e5clean")
    e5_fakes.E5FakeLLM.sent.clear()
    run_pipeline(open_run(PIPELINE, run_dir, FAKE), progress=False)
    return run_dir, len(e5_fakes.E5FakeLLM.sent)


def test_groups_dedup_export_and_meta(clean_run):
    run_dir, _ = clean_run
    tasks = rows_of(run_dir, "brainstorm")
    assert Counter(t["group"] for t in tasks) == {g: 3 for g in GROUPS}
    for g in GROUPS:  # de-duplicated within the group on normalized text
        texts = [" ".join(t["task"].lower().split()) for t in tasks if t["group"] == g]
        assert len(texts) == len(set(texts))
    reasons = Counter(r["reason"] for r in rejects_of(run_dir, "brainstorm"))
    assert reasons == {"duplicate_task": 6, "bad_task": 6}
    unified = rows_of(run_dir, "export")
    assert len(unified) == 18 and len({u["id"] for u in unified}) == 18
    for u in unified:
        meta = json.loads(u["meta"])
        group = meta["group"]
        assert u["symmetric"] == (group in ("sts", "bitext"))
        assert u["task_type"] == GROUPS[group].task_type and u["source"] == "e5"
        assert meta["attributes"]["language"] == u["language"] and u["task"]
        assert len(u["negatives"]) == 1 and u["negatives"][0] != u["positive"]
        if group == "bitext":
            assert meta["target_language"] != u["language"]
            assert langid.detect(u["positive"])[0] == meta["target_language"]
        elif group != "long_short":
            assert langid.detect(u["positive"])[0] == u["language"]
    assert {"en", "fr", "de"} <= {u["language"] for u in unified}


def test_malformed_answers_retried_then_rejected_with_reason(tmp_path):
    run_pipeline(open_run(PIPELINE, tmp_path, FAKE + ["llm.extra={bad_rate: 0.5}",
                                                      "examples.max_attempts=2"]), progress=False)
    m = shards.load_manifest(tmp_path / "examples")["totals"]
    rejects = rejects_of(tmp_path, "examples")
    assert rejects and {r["reason"] for r in rejects} == {"invalid_json"}  # '{not json' 
    assert all("cannot do that" in r["raw"] for r in rejects)
    assert m["rejected"]["invalid_json"] == len(rejects)
    assert m["rows_out"] + len(rejects) == m["rows_in"]  # nothing lost
    assert m["counts"]["retry_invalid_json"] > len(rejects)  # some recovered on their retry
    first = m["counts"]["first_valid"] + sum(n for k, n in m["counts"].items() if k.startswith("first_invalid_"))
    assert first == m["rows_in"] - m["counts"].get("prompt_too_long", 0)
    assert any(r["attempts"] == 2 for r in rows_of(tmp_path, "examples"))


def test_wrong_language_rejected_with_reason_and_counted(tmp_path):
    run_pipeline(open_run(PIPELINE, tmp_path, FAKE + ["llm.extra={english_only: true}",
                                                      "examples.max_attempts=1"]),
                 stages=["brainstorm", "examples"], progress=False)
    rows = rows_of(tmp_path, "examples")
    rejects = rejects_of(tmp_path, "examples")
    reasons = Counter(r["reason"] for r in rejects)
    assert set(reasons) <= {"wrong_language:en!=fr", "wrong_language:en!=de"} and reasons
    assert shards.load_manifest(tmp_path / "examples")["totals"]["rejected"] == dict(reasons)
    # Kept rows are English, except classification whose label fields are not checked but
    # whose input is, and bitext whose target side is English.
    assert all(r["language"] == "en" or (r["group"] == "bitext" and r["target_language"] == "en")
               for r in rows)


def test_kill_mid_stage_then_resume_is_identical(clean_run, tmp_path):
    clean_dir, total = clean_run
    e5_fakes.E5FakeLLM.sent.clear()
    with pytest.raises(KeyboardInterrupt):  # in `examples`, after two of its shards
        run_pipeline(open_run(PIPELINE, tmp_path, FAKE + [f"llm.extra={{crash_after: {total - 7}}}"]),
                     progress=False)
    assert not shards.load_manifest(tmp_path / "examples").get("complete")
    assert len(shards.load_manifest(tmp_path / "examples")["shards"]) >= 2
    before = len(e5_fakes.E5FakeLLM.sent)
    e5_fakes.E5FakeLLM.sent.clear()
    run_pipeline(open_run(PIPELINE, tmp_path, FAKE), progress=False)
    assert before + len(e5_fakes.E5FakeLLM.sent) <= total + 8  # answers received are not re-asked
    for stage in ("brainstorm", "examples", "export"):
        assert rows_of(tmp_path, stage) == rows_of(clean_dir, stage), stage


def test_same_seed_same_output_other_seed_other_draws(clean_run, tmp_path):
    clean_dir, _ = clean_run
    run_pipeline(open_run(PIPELINE, tmp_path / "same", FAKE), progress=False)
    assert rows_of(tmp_path / "same", "export") == rows_of(clean_dir, "export")
    run_pipeline(open_run(PIPELINE, tmp_path / "other", FAKE + ["seed=1"]), progress=False)
    attrs = lambda d: [r["attributes"] for r in rows_of(d, "examples")]  # noqa: E731
    assert attrs(tmp_path / "other") != attrs(clean_dir)


@pytest.mark.slow  # the bundled SmolLM2 on 2 shared CPU cores: minutes
def test_bundled_model_every_group_rows_or_counted_rejects(tmp_path):
    small = ["brainstorm.tasks_per_request=2", "brainstorm.max_tokens=96", "brainstorm.max_attempts=1",
             "examples.max_tasks_per_group=1", "examples.max_tokens=128", "examples.max_attempts=1",
             "examples.num_words=[50]", "examples.languages={en: 1}"]
    results = run_pipeline(open_run(PIPELINE, tmp_path, small), progress=False)
    brainstorm = shards.load_manifest(tmp_path / "brainstorm")["shards"]
    assert len(brainstorm) == len(GROUPS)
    for name, entry in brainstorm.items():  # one shard per group: tasks, or counted rejects
        assert entry["rows_out"] + sum(entry["rejected"].values()) >= 1, name
        assert entry["llm"]["calls"] + entry["llm"]["cached"] == 1
    for name, entry in shards.load_manifest(tmp_path / "examples")["shards"].items():
        # every task that went in came out as an example or as a reject with its reason
        assert entry["rows_out"] + sum(entry["rejected"].values()) == entry["rows_in"], name
    for stage in ("brainstorm", "examples"):
        rejects = rejects_of(tmp_path, stage)
        assert len(rejects) == sum(results[stage]["totals"]["rejected"].values())
        assert all(r["reason"] for r in rejects)
        assert {r["group"] for r in rows_of(tmp_path, stage)} <= set(GROUPS)
    for u in rows_of(tmp_path, "export"):
        assert u["query"].strip() and u["positive"].strip() and u["source"] == "e5"


def test_brainstorm_reads_a_plain_list_when_there_is_no_json():
    from fret.stages.e5.brainstorm import PlainList, parse_task_list
    from fret.stages.e5.records import Invalid

    answer = "Here are some tasks:\n1. Retrieve recipes for a dish\n2) Find news about a company\n- Given a claim, verify it"
    got = parse_task_list(answer, plain_lists=True)
    assert isinstance(got, PlainList)
    assert got == ["Retrieve recipes for a dish", "Find news about a company", "Given a claim, verify it"]
    assert parse_task_list('["a b c d"]', plain_lists=True) == ["a b c d"]
    with pytest.raises(Invalid):
        parse_task_list(answer)  # plain lists are opt-in
