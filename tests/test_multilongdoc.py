"""MultiLongDoc: long documents -> BGE-M3 questions -> (question, whole document) unified rows.

Real documents (CPython's help topics, a JSONL file), real MiniLM + FAISS for the hard
negatives; the fake LLM of e5_fakes.py for control flow, the bundled SmolLM2 for the real run.
"""
import json
import re
from collections import Counter
from pathlib import Path

import pytest

import e5_fakes
from fret.core import shards
from fret.core.runner import open_run, run_pipeline
from fret.parts.prompts import load_template
from fret.stages.e5.records import Invalid
from fret.stages.multilongdoc.export import segment_starts, shuffle_three_segments
from fret.stages.multilongdoc.questions import (QUESTION_REGEX, QUESTION_REGEX_ZH, QuestionsSettings,
                                               cut_words, is_prose, paragraphs, parse_question)

PIPELINE = Path(__file__).resolve().parent.parent / "pipelines" / "multilongdoc.yaml"
FAKE = ["llm.backend=e5fake", "longdocs.min_tokens=1500", "longdocs.docs_per_shard=4"]
EN_PROMPT = ("You are a curious AI assistant, please generate one specific and valuable question "
             "based on the following text. The generated question should revolve around the core "
             "content of this text, and avoid using pronouns (e.g., \"this\"). Note that you should "
             "generate only one question, without including additional content:")


def rows_of(run_dir: Path, stage: str) -> list[dict]:
    return [r for _, rows in shards.iter_stage_rows(run_dir / stage) for r in rows]


def rejects_of(run_dir: Path, stage: str) -> list[dict]:
    return [r for p in sorted((run_dir / stage / shards.REJECTS).glob("*.parquet"))
            for r in shards.read_rows(p)]


def test_prompts_are_bgem3_verbatim():
    assert load_template("mld_question_en.jinja").render(paragraph="P") == EN_PROMPT + "\n\nP\n"
    zh = load_template("mld_question_zh.jinja").render(paragraph="段落")
    assert zh.startswith("你是一个好奇的 AI 助手,请根据以下文本生成一个特定且有价值的问题。") and zh.endswith("段落\n")


@pytest.mark.parametrize("answer, expected", [
    ("What is a generator expression?", "What is a generator expression?"),
    ('Question: "How are slots declared?"', "How are slots declared?"),
    ("装饰器的作用是什么？", "装饰器的作用是什么？"),
    ("", "empty_answer"),
    ("Python has classes.", "not_a_question"),
    ("What is X? And what is Y?", "multiple_questions"),
    ("What is X?\nThis question is about X.", "extra_content"),
    ("What is X? It is great", "extra_content"),
    ("Why " + "very " * 70 + "long?", "too_long"),
])
def test_single_question_or_reason(answer, expected):
    if expected.endswith(("?", "？")):
        assert parse_question(answer, 64) == expected
    else:
        with pytest.raises(Invalid) as e:
            parse_question(answer, 64)
        assert e.value.reason == expected


def test_paragraph_helpers():
    text = "First para has words.\n\n   code line\n   more code\n\nLast one."
    spans = paragraphs(text)
    assert [text[a:b] for a, b in spans] == ["First para has words.", "   code line\n   more code", "Last one."]
    assert is_prose("A\nB") and not is_prose("A\n   b\n   c")
    assert cut_words("a  b c", 2) == "a  b"


def test_three_segments_at_paragraphs_else_sentences():
    import random

    paras = "\n\n".join(f"Paragraph {i} says something." for i in range(6))
    assert segment_starts(paras) == [m for m in range(len(paras)) if paras.startswith("Paragraph", m)][1:]
    orders = set()
    for seed in range(30):
        text, order = shuffle_three_segments(paras, random.Random(seed))
        assert order != [0, 1, 2] and sorted(order) == [0, 1, 2]
        assert sorted(text.split("\n\n")) == sorted(paras.split("\n\n"))  # cut at breaks only
        orders.add(tuple(order))
    assert len(orders) == 5  # every non-identity order occurs
    sentences = "One two. Three four! Five six? Seven eight."
    text, order = shuffle_three_segments(sentences, random.Random(0))
    assert sorted(text.split()) == sorted(sentences.split()) and text != sentences
    assert shuffle_three_segments("Only one sentence. And two.", random.Random(0)) is None


def test_segment_shuffle_in_export_is_seeded_and_counted(clean_run, tmp_path):
    clean_dir, _ = clean_run
    over = FAKE + ["export.shuffle_segments=1.0"]
    run_pipeline(open_run(PIPELINE, tmp_path, over), progress=False)
    rows = rows_of(tmp_path, "export")
    assert [r["query"] for r in rows] == [r["query"] for r in rows_of(clean_dir, "export")]
    orders = [json.loads(r["meta"])["segment_order"] for r in rows]
    assert all(o is not None for o in orders) and len({tuple(o) for o in orders}) > 1
    counts = shards.load_manifest(tmp_path / "export")["totals"]["counts"]
    assert counts["segments_shuffled"] == len(rows)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("mldclean")
    e5_fakes.E5FakeLLM.sent.clear()
    run_pipeline(open_run(PIPELINE, run_dir, FAKE), progress=False)
    return run_dir, len(e5_fakes.E5FakeLLM.sent)


def test_long_documents_questions_and_export(clean_run):
    from pydoc_data.topics import topics
    run_dir, _ = clean_run
    docs = rows_of(run_dir, "longdocs")
    assert docs and all(d["n_tokens"] >= 1500 for d in docs)
    assert {d["title"] for d in docs} == {k for k, v in topics.items() if len(v.split()) >= 1500}
    assert all(d["text"] == topics[d["title"]].strip() for d in docs)  # whole, real documents
    too_short = [r for r in rejects_of(run_dir, "longdocs") if r["reason"] == "too_short"]
    assert len(docs) + len(too_short) == len(topics)
    by_id = {d["id"]: d for d in docs}
    questions = rows_of(run_dir, "questions")
    for q in questions:
        assert q["paragraph_text"] in by_id[q["passage_id"]]["text"] and q["query"].endswith("?")
        assert q["task_type"] == "long_doc"
    unified = rows_of(run_dir, "export")
    assert len(unified) == len(questions) > 0
    for u in unified:
        meta = json.loads(u["meta"])
        assert u["task_type"] == "long_doc" and u["source"] == "multilongdoc" and not u["symmetric"]
        text = by_id[meta["document_id"]]["text"]
        if meta["segment_order"] is None:
            assert u["positive"] == text  # the whole document
        else:  # BGE-M3's 0.2% segment shuffle: the same words in another order
            assert sorted(u["positive"].split()) == sorted(text.split())
        assert len(u["negatives"]) == 1 and u["negatives"][0] != u["positive"]
        assert meta["negative_ids"][0] in by_id


def test_kill_mid_stage_then_resume_is_identical(clean_run, tmp_path):
    clean_dir, total = clean_run
    e5_fakes.E5FakeLLM.sent.clear()
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(open_run(PIPELINE, tmp_path, FAKE + [f"llm.extra={{crash_after: {total - 3}}}"]),
                     progress=False)
    assert not shards.load_manifest(tmp_path / "questions").get("complete")
    e5_fakes.E5FakeLLM.sent.clear()
    run_pipeline(open_run(PIPELINE, tmp_path, FAKE), progress=False)
    for stage in ("longdocs", "questions", "export"):
        assert rows_of(tmp_path, stage) == rows_of(clean_dir, stage), stage


def test_bad_answers_rejected_with_reason_no_negatives_without_mine(tmp_path):
    over = FAKE + ["llm.extra={bad_rate: 0.6}", "questions.max_attempts=2", "export.num_negatives=0"]
    run_pipeline(open_run(PIPELINE, tmp_path, over), stages=["longdocs", "questions", "export"],
                 progress=False)
    m = shards.load_manifest(tmp_path / "questions")["totals"]
    reasons = Counter(r["reason"] for r in rejects_of(tmp_path, "questions"))
    assert reasons["not_a_question"] > 0 and m["rejected"] == dict(reasons)
    assert m["rows_out"] + sum(reasons.values()) == m["rows_in"]
    assert all(u["negatives"] == [] for u in rows_of(tmp_path, "export"))


def test_any_corpus_source_and_chinese_prompt(tmp_path):
    path = tmp_path / "docs.jsonl"
    zh = "。".join(["长文档检索需要模型理解整篇文章的内容"] * 40) + "。"
    en = " ".join(["Long documents need models that read the whole article."] * 30)
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        {"title": "zh", "text": zh, "lang": "zh"}, {"title": "en", "text": en, "lang": "en"},
        {"title": "short", "text": "Too short.", "lang": "en"}]) + "\n")
    src = f"longdocs.sources=[{{type: jsonl, path: '{path}', language_field: lang}}]"
    e5_fakes.E5FakeLLM.sent.clear()
    run_pipeline(open_run(PIPELINE, tmp_path / "run", ["llm.backend=e5fake", src, "longdocs.min_tokens=200",
                                                       "questions.min_paragraph_words=20"]),
                 stages=["longdocs", "questions"], progress=False)
    assert sorted(d["title"] for d in rows_of(tmp_path / "run", "longdocs")) == ["en", "zh"]
    prompts = [r.messages[-1][1] for r in e5_fakes.E5FakeLLM.sent]
    assert sum(p.startswith("你是一个好奇的 AI 助手") for p in prompts) == 1
    assert sum(p.startswith(EN_PROMPT) for p in prompts) == 1
    # Each language's answer form: Chinese has no spaces to count words by.
    regex_of = {r.messages[-1][1][:3]: r.regex for r in e5_fakes.E5FakeLLM.sent}
    assert regex_of["你是一"] == QUESTION_REGEX_ZH and regex_of[EN_PROMPT[:3]] == QUESTION_REGEX


def test_question_regex_per_language_or_one_for_all():
    assert re.fullmatch(QUESTION_REGEX_ZH, "长文档检索需要模型理解整篇文章的哪些内容？")
    assert not re.fullmatch(QUESTION_REGEX, "What does it build？")  # English ends with "?"
    assert QuestionsSettings(regex="a+\\?").regex == {"en": "a+\\?"}
    assert QuestionsSettings(regex=None).regex is None
    with pytest.raises(ValueError, match="'en' entry"):
        QuestionsSettings(regex={"zh": "x"})


@pytest.mark.slow  # the bundled SmolLM2 on 2 shared CPU cores: minutes
def test_bundled_model_questions_or_counted_rejects(tmp_path):
    over = ["longdocs.min_tokens=3000", "questions.max_attempts=2", "questions.max_tokens=48",
            "questions.max_paragraph_words=120", "export.num_negatives=0"]
    run_pipeline(open_run(PIPELINE, tmp_path, over), stages=["longdocs", "questions", "export"],
                 progress=False)
    m = shards.load_manifest(tmp_path / "questions")["totals"]
    assert m["rows_in"] >= 5
    assert m["rows_out"] + sum(m["rejected"].values()) == m["rows_in"]
    for q in rows_of(tmp_path, "questions"):
        assert q["query"].endswith("?") and q["query"].count("?") == 1, q["query"]
    assert len(rows_of(tmp_path, "export")) == m["rows_out"]
