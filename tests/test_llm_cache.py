"""The request cache: every answered request is stored once, keyed by the whole request.

A counting fake backend checks control flow (what is sent, what is stored); one test runs the
real transformers backend through the cache.
"""
from __future__ import annotations

import dataclasses

import pytest

from fret.parts.llm import (BACKENDS, CachedLLM, Generation, GenerateRequest, LLM, LLMSettings, Loglik,
                      LoglikRequest, make_llm, request_key)


class CountingLLM(LLM):
    """Answers deterministically from the request; records every batch it is sent."""
    name = "counting"
    fail_on_batch: int | None = None

    def __init__(self, settings):
        super().__init__(settings)
        self.batches: list[list] = []

    def _generate(self, batch):
        self._record(batch)
        return [Generation(text=f"answer to {r.prompt or r.messages}", prompt_tokens=3,
                           completion_tokens=2, finish_reason="stop") for r in batch]

    def _loglik(self, batch):
        self._record(batch)
        return [Loglik(logprobs=[-float(len(r.prompt + c)) for c in r.continuations],
                       n_tokens=[len(c) for c in r.continuations], prompt_tokens=len(r.prompt))
                for r in batch]

    def _record(self, batch):
        if self.fail_on_batch is not None and len(self.batches) == self.fail_on_batch:
            raise RuntimeError("injected failure")
        self.batches.append(list(batch))


@pytest.fixture(autouse=True)
def register():
    BACKENDS["counting"] = CountingLLM
    yield
    BACKENDS.pop("counting")


def fresh(tmp_path, **settings) -> CachedLLM:
    return CachedLLM(make_llm(LLMSettings(backend="counting", batch_size=2, **settings)),
                     tmp_path / "cache.sqlite")


def test_hit_and_miss(tmp_path):
    cached = fresh(tmp_path)
    reqs = [GenerateRequest(prompt=f"p{i}") for i in range(3)]
    first = cached.generate(reqs)
    again = cached.generate(reqs + [GenerateRequest(prompt="p3")])
    assert again[:3] == first and again[3].text == "answer to p3"
    sent = [r.prompt for b in cached.llm.batches for r in b]
    assert sent == ["p0", "p1", "p2", "p3"]  # p0..p2 answered once, from the cache the second time
    assert cached.usage.calls == 4 and cached.usage.cached == 3
    assert cached.usage.prompt_tokens == 12 and cached.usage.completion_tokens == 8


def test_loglik_round_trips_through_the_cache(tmp_path):
    reqs = [LoglikRequest("abc", (" x", " yy")), LoglikRequest("d", ("e",))]
    first = fresh(tmp_path).loglik(reqs)
    reopened = fresh(tmp_path)
    assert reopened.loglik(reqs) == first and isinstance(first[0], Loglik)
    assert reopened.llm.batches == []


def test_key_changes_with_every_field():
    identity = {"backend": "counting", "model": "m", "gguf_file": None}
    base_g = GenerateRequest(prompt="p", messages=None)
    changes = {"prompt": "q", "messages": (("user", "p"),), "max_tokens": 7, "temperature": 0.5,
               "top_p": 0.9, "stop": ("\n",), "seed": 1, "json_schema": "{}", "regex": "a+", "grammar": "root ::= \"a\""}
    assert set(changes) == {f.name for f in dataclasses.fields(GenerateRequest)}
    keys = {request_key(identity, base_g)}
    for name, value in changes.items():
        keys.add(request_key(identity, dataclasses.replace(base_g, **{name: value})))
    base_l = LoglikRequest("p", (" a",))
    keys |= {request_key(identity, base_l), request_key(identity, LoglikRequest("q", (" a",))),
             request_key(identity, LoglikRequest("p", (" b",))),
             request_key(identity, LoglikRequest("p", (" a", " b")))}
    keys |= {request_key({**identity, "model": "other"}, base_g),
             request_key({**identity, "dtype": "float32"}, base_g)}
    assert len(keys) == 1 + len(changes) + 4 + 2
    assert request_key(identity, base_g) == request_key(dict(identity), GenerateRequest(prompt="p"))


def test_no_resend_after_reopening(tmp_path):
    reqs = [GenerateRequest(prompt=f"p{i}", temperature=0.7, seed=i) for i in range(4)]
    first = fresh(tmp_path)
    answers = first.generate(reqs)
    first.close()
    second = fresh(tmp_path)
    assert second.generate(reqs) == answers
    assert second.llm.batches == [] and second.usage.cached == 4 and second.usage.calls == 0


def test_each_batch_is_committed_on_its_own(tmp_path):
    reqs = [GenerateRequest(prompt=f"p{i}") for i in range(6)]
    crashing = fresh(tmp_path)
    crashing.llm.fail_on_batch = 2  # batches of 2: the third batch fails
    with pytest.raises(RuntimeError, match="injected"):
        crashing.generate(reqs)
    rerun = fresh(tmp_path)
    rerun.generate(reqs)
    # the first two batches survived the failure; only the third is asked again
    assert [[r.prompt for r in b] for b in rerun.llm.batches] == [["p4", "p5"]]


def test_real_backend_through_the_cache(tmp_path):
    llm = make_llm(LLMSettings(dtype="float32"))
    reqs = [LoglikRequest("The capital of France is", (" Paris", " London"))]
    cached = CachedLLM(llm, tmp_path / "cache.sqlite")
    first = cached.loglik(reqs)
    assert first[0].logprobs[0] > first[0].logprobs[1]  # the model knows its capitals
    calls = llm.usage.calls
    assert CachedLLM(llm, tmp_path / "cache.sqlite").loglik(reqs) == first and llm.usage.calls == calls
    assert "dtype" in llm.identity()
