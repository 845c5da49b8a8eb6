"""The transformers backend on the bundled SmolLM2 GGUF: exact log-likelihoods and generation."""
from __future__ import annotations

import json

import pytest
import torch

from fret.parts.bundled import wiki_summaries
from fret.parts.llm import GenerateRequest, LLMSettings, LoglikRequest, make_llm
from fret.parts.llm.hf import MIN_SHARED_PREFIX, common_prefix_len, truncate_prompt
from fret.parts.prompts import render

LABELS = (" Perfectly relevant", " Highly relevant", " Somewhat relevant", " Not relevant")


@pytest.fixture(scope="module")
def passages() -> list[str]:
    data = json.loads(wiki_summaries("en").read_text(encoding="utf-8"))
    texts = [v["extract"] for v in data.values() if len(v["extract"]) > 400]
    return [t[:240] for t in texts[:3]]


@pytest.fixture(scope="module")
def llm32():
    return make_llm(LLMSettings(dtype="float32", batch_size=8))


@pytest.fixture(scope="module")
def llm16():
    return make_llm(LLMSettings(dtype="bfloat16", batch_size=8))


def ql(passage: str, query: str) -> LoglikRequest:
    return LoglikRequest(render("fret_ql", passage=passage).rstrip("\n"), (" " + query,))


def rc(passage: str, query: str) -> LoglikRequest:
    return LoglikRequest(render("fret_rc", query=query, passage=passage).rstrip("\n"), LABELS)


def plain_loglik(llm, prompt: str, continuation: str) -> float:
    """Independent reference: one full forward pass with full-vocabulary logits, fp32."""
    tok = llm.tokenizer
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    c = tok(continuation, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = llm.model(torch.tensor([p + c])).logits[0].float()  # (len(p + c), vocab)
    logp = torch.log_softmax(logits, dim=-1)
    return sum(logp[len(p) - 1 + k, t].item() for k, t in enumerate(c))


def test_pure_helpers():
    assert common_prefix_len([[1, 2, 3], [1, 2, 4], [1, 2]]) == 2
    assert common_prefix_len([[5], [6]]) == 0
    assert truncate_prompt([1, 2, 3, 4, 5], shared=1, budget=3) == [1, 4, 5]
    assert truncate_prompt([1, 2, 3], shared=1, budget=5) == [1, 2, 3]


def test_dtype_auto_is_bf16_where_the_cpu_supports_it():
    llm = make_llm(LLMSettings())
    expected = "bfloat16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "float32"
    assert llm.dtype == expected and llm.identity()["dtype"] == expected


def test_ql_score_equals_plain_forward_fp32(llm32, passages):
    reqs = [ql(p, q) for p, q in zip(passages, ["who founded it", "where is it", "when did it start"])]
    got = llm32.loglik(reqs)
    for r, g in zip(reqs, got):
        ref = plain_loglik(llm32, r.prompt, r.continuations[0])
        assert g.logprobs[0] == pytest.approx(ref, abs=2e-3)
        assert g.n_tokens[0] == len(llm32.encode(r.continuations[0]))
        assert g.logprobs[0] < 0


def test_bf16_close_to_fp32_reference(llm16, llm32, passages):
    r = ql(passages[0], "who founded it")
    got = llm16.loglik([r])[0].logprobs[0]
    ref = plain_loglik(llm32, r.prompt, r.continuations[0])
    assert got == pytest.approx(ref, abs=0.5 + 0.05 * abs(ref))


def test_all_labels_from_one_pass_equal_one_label_at_a_time(llm32, passages):
    r = rc(passages[1], "where is it")
    together = llm32.loglik([r])[0]
    alone = [llm32.loglik([LoglikRequest(r.prompt, (label,))])[0].logprobs[0] for label in LABELS]
    assert together.logprobs == pytest.approx(alone, abs=2e-4)
    assert together.logprobs[0] == pytest.approx(plain_loglik(llm32, r.prompt, LABELS[0]), abs=2e-3)


def test_scores_do_not_depend_on_batch_composition(llm32, passages):
    reqs = [rc(p, q) for p, q in zip(passages, ["who", "where is the city", "what year"])]
    batched = llm32.loglik(reqs)
    for r, b in zip(reqs, batched):
        assert llm32.loglik([r])[0].logprobs == pytest.approx(b.logprobs, abs=2e-4)
    reversed_ = llm32.loglik(reqs[::-1])[::-1]
    for a, b in zip(reversed_, batched):
        assert a.logprobs == pytest.approx(b.logprobs, abs=2e-4)


def test_prefix_cache_equals_no_cache_and_is_used(llm32, passages, monkeypatch):
    plain = make_llm(LLMSettings(dtype="float32", extra={"prefix_sharing": False}))
    reqs = [ql(p, "what is it") for p in passages]
    runs = []
    run_prefix = llm32._run_prefix
    monkeypatch.setattr(llm32, "_run_prefix", lambda *a: runs.append(len(a[0])) or run_prefix(*a))
    llm32._prefixes.clear()
    cached = llm32.loglik(reqs[:2]) + llm32.loglik(reqs[2:])
    # the few-shot part was computed once, and the later single-request batch reused it
    few_shot = common_prefix_len([llm32.encode(r.prompt) for r in reqs])
    assert len(runs) == 1 and runs[0] >= few_shot >= MIN_SHARED_PREFIX
    for a, b in zip(cached, plain.loglik(reqs)):
        assert a.logprobs == pytest.approx(b.logprobs, abs=2e-4)


def test_lm_head_runs_only_on_scored_positions(llm32, passages):
    seen = []
    head = llm32.model.lm_head
    hook = head.register_forward_hook(lambda mod, args, out: seen.append(tuple(args[0].shape)))
    try:
        got = llm32.loglik([rc(passages[0], "who"), ql(passages[1], "where is it")])
    finally:
        hook.remove()
    assert seen == [(sum(sum(g.n_tokens) for g in got), head.in_features)]


def test_over_long_prompt_is_cut_after_the_shared_prefix(passages):
    llm = make_llm(LLMSettings(dtype="float32", max_length=200))
    reqs = [ql(p, "what is it") for p in passages[:2]]
    got = llm.loglik(reqs)
    ids = [llm.encode(r.prompt) for r in reqs]
    shared = common_prefix_len(ids)
    for r, g, p in zip(reqs, got, ids):
        cont = llm.encode(r.continuations[0])
        kept = truncate_prompt(p, shared, 200 - len(cont))
        assert g.prompt_tokens == len(kept) == 200 - len(cont)
        with torch.inference_mode():
            logp = torch.log_softmax(llm.model(torch.tensor([kept + cont])).logits[0].float(), -1)
        ref = sum(logp[len(kept) - 1 + k, t].item() for k, t in enumerate(cont))
        assert g.logprobs[0] == pytest.approx(ref, abs=2e-3)


def test_generate_chat_plain_stop_and_usage(llm32):
    before = llm32.usage.completion_tokens
    chat, plain = llm32.generate([
        GenerateRequest(messages=(("user", "What is the capital of France?"),), max_tokens=24),
        GenerateRequest(prompt="Paris is the capital of", max_tokens=24, stop=(".",)),
    ])
    assert "Paris" in chat.text and chat.finish_reason == "stop"
    assert chat.prompt_tokens > 10 and 0 < chat.completion_tokens <= 24
    assert "." not in plain.text and plain.text.strip()
    assert llm32.usage.completion_tokens - before == chat.completion_tokens + plain.completion_tokens


def test_seeded_sampling_is_deterministic(llm32):
    reqs = [GenerateRequest(messages=(("user", "Write one sentence about cats."),), max_tokens=8,
                            temperature=1.0, seed=s) for s in (1, 2)]
    first, second = llm32.generate(reqs), llm32.generate(reqs)
    assert [g.text for g in first] == [g.text for g in second]
    other = llm32.generate([GenerateRequest(messages=reqs[0].messages, max_tokens=8, temperature=1.0,
                                            seed=7), reqs[1]])
    assert other[0].text != first[0].text
