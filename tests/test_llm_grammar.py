"""Grammar-constrained decoding in the transformers backend (real SmolLM2, real xgrammar)."""
from __future__ import annotations

import json
import re
import warnings
from collections import Counter

import pytest

from fret.parts.llm import GenerateRequest, LLMError, LLMSettings, LoglikRequest, make_llm
from fret.parts.llm.grammar import GrammarError, constraint_of, server_constraint
from fret.parts.llm.hf import leading_special_tokens
from fret.stages.e5.records import GROUPS, first_json, validate
from fret.stages.shared.ask import Ask, Invalid, ask_all

SCHEMA = json.dumps(GROUPS["sts"].model.model_json_schema(), sort_keys=True)
PROMPT = ("Write three short English sentences about cats as a JSON object with the keys S1, S2 "
          "and S3; S1 and S2 mean the same, S3 does not.")


@pytest.fixture(scope="module")
def llm():
    return make_llm(LLMSettings(dtype="bfloat16", batch_size=4))


def test_one_constraint_per_request():
    assert constraint_of(GenerateRequest(prompt="x")) is None
    assert constraint_of(GenerateRequest(prompt="x", regex="a+")) == ("regex", "a+")
    with pytest.raises(LLMError, match="json_schema and regex"):
        constraint_of(GenerateRequest(prompt="x", json_schema="{}", regex="a+"))
    # requests without the new fields keep their cache keys
    assert "regex" not in GenerateRequest(prompt="x").key()
    assert GenerateRequest(prompt="x", grammar="g").key()["grammar"] == "g"


def test_server_fields_only_where_the_server_style_is_named():
    r = GenerateRequest(prompt="x", regex="a+")
    assert server_constraint(r, None) == {}  # OpenAI itself refuses unknown fields
    assert server_constraint(r, "structured_outputs") == {"structured_outputs": {"regex": "a+"}}
    assert server_constraint(GenerateRequest(prompt="x", grammar="g"), "guided") == {"guided_grammar": "g"}
    assert server_constraint(GenerateRequest(prompt="x", json_schema="{}"), "guided") == {}  # response_format
    with pytest.raises(LLMError, match="structured_outputs"):
        server_constraint(r, "sglang")


def test_json_schema_is_enforced_in_a_mixed_batch(llm):
    free = GenerateRequest(messages=(("user", PROMPT),), max_tokens=120)
    reqs = [GenerateRequest(messages=(("user", PROMPT),), max_tokens=120, json_schema=SCHEMA,
                            temperature=1.0, seed=s) for s in (1, 2)]
    got = llm.generate([reqs[0], free, reqs[1]])
    for g in (got[0], got[2]):
        assert g.finish_reason == "stop", g.text
        try:
            validate(GROUPS["sts"].model, first_json(g.text, "{"))
        except Invalid as err:  # a rule of content no JSON schema can state (S1 != S2): the form held
            assert err.reason == "identical_texts", err.reason
    assert got[1].text == llm.generate([free])[0].text  # the unconstrained row is left alone


def test_regex_and_ebnf_line_formats(llm):
    q = llm.generate([
        GenerateRequest(prompt="Is the Nile a river? Answer:", max_tokens=12,
                        regex=r" (Yes|No), it is [a-z]+\."),
        GenerateRequest(messages=(("user", "Which city is the capital of France?"),), max_tokens=12,
                        grammar='root ::= "The capital is " ("Paris" | "Rome" | "Berlin") "."'),
    ])
    assert re.fullmatch(r" (Yes|No), it is [a-z]+\.", q[0].text), q[0].text
    assert q[1].text == "The capital is Paris." and q[1].finish_reason == "stop"


def test_compiled_once_per_constraint(llm, monkeypatch):
    grammars = llm.grammars()
    calls = Counter()
    compile_regex = grammars.compiler.compile_regex
    monkeypatch.setattr(grammars.compiler, "compile_regex",
                        lambda text: calls.update([text]) or compile_regex(text))
    reqs = [GenerateRequest(prompt=f"Count: {i}", max_tokens=4, regex="[0-9]+ apples") for i in range(3)]
    llm.generate(reqs)
    llm.generate(reqs[:1])
    assert calls == Counter({"[0-9]+ apples": 1})


def test_bad_grammar_names_the_stage_and_the_schema(llm):
    bad = '{"type": "object", "properties": {"a": {"type": "strin"}}}'
    ask = Ask(key="k", request=lambda a: GenerateRequest(prompt="x", max_tokens=4, json_schema=bad),
              parse=str)
    with pytest.raises(LLMError, match=r"stage examples: cannot compile the json_schema .*strin") as exc:
        ask_all(llm, [ask], 1, Counter(), stage="examples")
    assert isinstance(exc.value.__cause__, GrammarError)
    with pytest.raises(GrammarError, match="regex"):
        llm.generate([GenerateRequest(prompt="x", regex="a(b")])


def test_leading_special_tokens_follow_the_tokenizer(llm):
    assert leading_special_tokens(llm.tokenizer) == []  # SmolLM2 adds none: prompts unchanged

    class BosTokenizer:  # a Llama-style tokenizer: BOS in front unless told not to
        bos_token = "<s>"

        def __call__(self, text, add_special_tokens=True):
            return {"input_ids": ([1] if add_special_tokens else []) + [ord(c) for c in text]}

    assert leading_special_tokens(BosTokenizer()) == [1]


def test_prefix_cache_uses_the_cache_api_without_deprecation_warnings(llm):
    prompt = "Read the passage and answer. " * 6
    reqs = [LoglikRequest(prompt + f"Passage {i}: a short text.", (" yes", " no")) for i in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        shared = llm.loglik(reqs)
    llm._prefixes.clear()
    alone = [llm.loglik([r])[0] for r in reqs]
    for a, b in zip(shared, alone):
        # bf16: a batch of 3 and a batch of 1 sum in other orders (measured up to 2.0% with
        # transformers 5.25 / xgrammar 0.2.9); fp32 equality is checked in test_llm_hf
        assert a.logprobs == pytest.approx(b.logprobs, rel=0.03)


def test_prompt_too_long_is_rejected_once_with_its_reason():
    from fret.parts.llm import Generation

    class TooLong:
        calls = 0

        def generate(self, requests):
            TooLong.calls += 1
            return [Generation("", finish_reason="prompt_too_long") for _ in requests]

    counts = Counter()
    ask = Ask("k", lambda attempt: GenerateRequest(prompt="x" * 10), lambda text: text)
    answers, failures = ask_all(TooLong(), [ask], 3, counts, stage="queries")
    assert answers == {} and failures["k"].reason == "prompt_too_long"
    assert TooLong.calls == 1 and counts["prompt_too_long"] == 1  # not retried
