"""Fuzzed LLM answers: every parser (FRet queries, E5 brainstorm and examples, MultiLongDoc
questions) returns its value or raises Invalid with a short reason, which `ask_all` turns into a
retry and, at the end, a reject; never another exception (that would stop the whole stage)."""
import json

from hypothesis import example, given
from hypothesis import strategies as st

from fret.stages.e5.brainstorm import parse_task_list, task_problem
from fret.stages.e5.records import GROUPS, first_json, validate
from fret.stages.fret.queries import parse_answer
from fret.stages.multilongdoc.questions import parse_question
from fret.stages.shared.ask import Invalid
from fuzzing import fuzz, mutated, mutated_tree


def _texts(*valid: str):
    """Random text, and valid answers after byte edits (decoded as a backend would: replaced)."""
    return st.text(max_size=80) | st.sampled_from(valid).flatmap(
        lambda v: mutated(v.encode()).map(lambda b: b.decode("utf-8", "replace")))


def _reason(call) -> object:
    try:
        return call()
    except Invalid as err:
        assert err.reason and " " not in err.reason.split(":")[0]  # short and countable
        return None


@fuzz(200)
@given(_texts("Given a question, find a passage that answers it\nQuery: who built the dam?",
              "Question: when did the war end?", " Task: Given a claim\nClaim: cats are mammals"))
def test_fret_query_answer(text):
    got = _reason(lambda: parse_answer(text, "The dam was built in 1930.", 48, "Given a question"))
    if got:
        task, query, defaulted = got
        assert isinstance(task, str) and query.strip() and isinstance(defaulted, bool)


@fuzz(200)
@given(_texts('["Retrieve documents that answer a medical question", "Find recipes"]',
              "1. Retrieve legal cases\n2. Find news articles", "```json\n[\"a b c\"]\n```"),
       st.booleans())
@example("[" * 3000, False)  # nested past Python's recursion limit
def test_e5_brainstorm_answer(text, plain_lists):
    items = _reason(lambda: parse_task_list(text, plain_lists))
    for item in items or []:
        assert isinstance(task_problem(item, 3, 30), str)


EXAMPLES = {
    "short_long": {"user_query": "how to boil eggs", "positive_document": "Boil for 9 minutes.",
                   "hard_negative_document": "Eggs are laid by hens."},
    "long_short": {"input_text": "I loved this film.", "label": "positive", "misleading_label": "negative"},
    "long_long": {"input": "A long text.", "positive_document": "Its match.", "hard_negative_document": "Other."},
    "sts": {"S1": "A man runs.", "S2": "A person is running.", "S3": "A man sleeps."},
}


@fuzz(150)
@given(st.sampled_from(sorted(GROUPS)).flatmap(lambda g: st.tuples(st.just(g), st.one_of(
    _texts(json.dumps(EXAMPLES.get(g, EXAMPLES["short_long"]), ensure_ascii=False)),
    mutated_tree(EXAMPLES.get(g, EXAMPLES["short_long"])).map(lambda t: "Sure! " + json.dumps(t))))))
@example(("sts", "{" * 3000))
@example(("sts", '{"S1": "a", "S2": "a", "S3": "b"}'))
def test_e5_example_answer(case):
    group, text = case
    got = _reason(lambda: validate(GROUPS[group].model, first_json(text, "{")).model_dump())
    if got:
        assert all(isinstance(v, str) and v.strip() for v in got.values())


@fuzz(200)
@given(_texts('Question: "What is the capital of France?"', "Why is the sky blue？", "What? Why?"))
def test_multilongdoc_question(text):
    got = _reason(lambda: parse_question(text, 40))
    if got:
        assert got.endswith(("?", "？"))
