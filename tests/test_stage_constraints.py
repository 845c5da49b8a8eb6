"""Every stage that parses LLM output sends its schema or grammar with the request.

What the requests carry is checked through the fake backends (they record every request); what
the constraints do to the bundled SmolLM2's answers is checked on the real model.
"""
import json
import re
from pathlib import Path

import pytest

import e5_fakes
import fakes  # noqa: F401  (registers the "fake" backend)
from fret.core.runner import open_run, run_pipeline
from fret.parts.llm import GenerateRequest, LLMSettings, make_llm
from fret.parts.prompts import load_template
from fret.stages.e5.brainstorm import parse_task_list, task_list_schema
from fret.stages.e5.records import GROUPS, answer_schema
from fret.stages.fret.queries import DEFAULT_TASK_TYPES, QUERY_REGEX, parse_answer
from fret.stages.multilongdoc.questions import QUESTION_REGEX, parse_question

PIPELINES = Path(__file__).resolve().parent.parent / "pipelines"


def test_e5_requests_carry_each_groups_schema(tmp_path):
    e5_fakes.E5FakeLLM.sent.clear()
    run_pipeline(open_run(PIPELINES / "e5.yaml", tmp_path, [
        "llm.backend=e5fake", "examples.max_tasks_per_group=1", "examples.languages={en: 1}"]),
        stages=["brainstorm", "examples"], progress=False)
    sent = e5_fakes.E5FakeLLM.sent
    brainstorm = [r for r in sent if r.messages[-1][1].startswith("Brainstorm a list")]
    assert len(brainstorm) == len(GROUPS) and {r.json_schema for r in brainstorm} == {task_list_schema(20, 4)}
    schemas = {answer_schema(g) for g in GROUPS}
    examples = [r for r in sent if r not in brainstorm]
    assert len(examples) >= len(GROUPS) and {r.json_schema for r in examples} == schemas


def test_answer_schemas_keep_the_prompts_field_order():
    # Schema-enforcing decoders write properties in the order given: the query comes first.
    for name, group in GROUPS.items():
        assert tuple(json.loads(answer_schema(name))["properties"]) == group.roles


def test_mld_questions_and_fret_queries_carry_their_regex(tmp_path):
    e5_fakes.E5FakeLLM.sent.clear()
    run_pipeline(open_run(PIPELINES / "multilongdoc.yaml", tmp_path / "mld", [
        "llm.backend=e5fake", "longdocs.min_tokens=3000"]), stages=["longdocs", "questions"],
        progress=False)
    assert e5_fakes.E5FakeLLM.sent and {r.regex for r in e5_fakes.E5FakeLLM.sent} == {QUESTION_REGEX}
    fakes.FakeLLM.sent.clear()
    ebnf = 'root ::= " Given " [^\\n]+ "\\nQuery: " [^\\n]+'
    run_pipeline(open_run(PIPELINES / "fret.yaml", tmp_path / "fret", [
        "llm.backend=fake", "corpus.sources.0.limit=40", "sample.size=4",
        f"queries.grammar={json.dumps(ebnf)}"]), stages=["corpus", "sample", "queries"], progress=False)
    assert fakes.FakeLLM.sent and {(r.regex, r.grammar) for r in fakes.FakeLLM.sent} == {(None, ebnf)}


def test_the_constraints_accept_what_the_parsers_accept():
    assert re.fullmatch(QUERY_REGEX, " Given a claim, find support\nQuery: cats purr")
    assert parse_answer(" Given a claim, find support\nQuery: cats purr", "x", 48, "d") == \
        ("Given a claim, find support", "cats purr", False)
    assert re.fullmatch(QUESTION_REGEX, "What does a list comprehension build?")
    assert not re.fullmatch(QUESTION_REGEX, "Why? And how?")
    assert parse_task_list(json.dumps(["Retrieve a, b", "Given x"])) == ["Retrieve a, b", "Given x"]


@pytest.mark.slow  # the bundled SmolLM2 on 2 shared CPU cores: about a minute
def test_bundled_model_writes_the_task_line_under_the_regex():
    llm = make_llm(LLMSettings(batch_size=4))
    template = load_template("fret_query.jinja")
    passages = ["The Danube is the second-longest river in Europe. It flows through ten countries, "
                "from the Black Forest in Germany to the Black Sea.",
                "Penicillin was discovered in 1928 by Alexander Fleming, who noticed that a mould "
                "killed the bacteria growing around it on a culture plate."]
    reqs = [GenerateRequest(prompt=template.render(task_type=t.label, passage=p, title=""),
                            max_tokens=64, stop=("\nTask type:", "\nPassage:"), regex=QUERY_REGEX)
            for p in passages for t in (DEFAULT_TASK_TYPES["qa"], DEFAULT_TASK_TYPES["fact_check"])]
    for r, g in zip(reqs, llm.generate(reqs)):
        task, query, defaulted = parse_answer(g.text, "", 48, "default")
        assert not defaulted and task.startswith("Given") and query, g.text
