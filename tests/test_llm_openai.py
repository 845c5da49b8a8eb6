"""The openai backend against a real OpenAI-compatible server on loopback (llama-cpp-python's,
with the bundled GGUF), plus small loopback HTTP servers that inject failures (429, 5xx, 400,
timeouts) or return hand-made echo logprobs, for the control flow a real server will not show.
"""
from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
import torch

from fret.parts.llm import GenerateRequest, LLMError, LLMSettings, LoglikRequest, make_llm
from fret.parts.llm.logprobs import (PROBE_TEXT, check_label_starts, continuation_span, echo_is_shifted,
                                      label_scores, token_spans)
from llm_server import llama_server  # noqa: F401 (pytest fixture)

CHAT_OK = {"id": "c1", "object": "chat.completion", "created": 0, "model": "m",
           "choices": [{"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "hello"}}],
           "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


# ---- pure helpers -----------------------------------------------------------------------------
def test_continuation_span_by_offsets():
    assert continuation_span([(0, 3), (3, 7), (7, 11)], 3, 11) == [1, 2]
    assert continuation_span([(0, 3), (3, 7), (7, 11), (11, 12)], 7, 11) == [2]  # not the extra token
    assert continuation_span([(0, 2), (2, 7)], 3, 7) == [1]  # a token straddling the boundary
    assert continuation_span([(0, 0), (0, 3), (3, 7)], 0, 3) == [1]  # a BOS spans nothing


def test_token_spans_walk_bos_and_sentencepiece():
    assert token_spans(["<s>", "The", "cat"], "The cat") == [(0, 0), (0, 3), (3, 7)]
    assert token_spans(["The", "\u2581cat", "."], "The cat.") == [(0, 3), (3, 7), (7, 8)]
    assert token_spans(["The", " dog"], "The cat") is None


def test_label_scores_from_first_token_top_logprobs():
    tops = {" High": -0.5, " Not": -1.2, "not": -2.0, "Other": -3.0, " ": -4.0}
    got = label_scores(tops, [" Highly relevant", " Not relevant", " Somewhat relevant"])
    assert got[0] == pytest.approx(-0.5) and got[2] == pytest.approx(-4.0)  # absent: the floor
    assert got[1] == pytest.approx(math.log(math.exp(-1.2) + math.exp(-2.0)))
    with pytest.raises(LLMError, match="'Perfect match' and 'Perfectly relevant'"):
        check_label_starts([" Perfect match", " Perfectly relevant", " Not relevant"])


# ---- the real server --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server_llm(llama_server):
    llm = make_llm(LLMSettings(backend="openai", base_url=llama_server.base_url, concurrency=2,
                               extra={"response_format": "json_object"}))
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def hf32():
    return make_llm(LLMSettings(dtype="float32"))


@pytest.mark.server
def test_chat_and_completion_generate_with_usage(server_llm):
    chat, plain = server_llm.generate([
        GenerateRequest(messages=(("user", "What is the capital of France?"),), max_tokens=24),
        GenerateRequest(prompt="Paris is the capital of", max_tokens=16, stop=(".",)),
    ])
    # a 135M model at 4 bits answers loosely; the template (with its default system prompt) and
    # the token accounting are what is checked
    assert chat.text.strip() and chat.finish_reason in ("stop", "length")
    assert chat.prompt_tokens > 20 and 0 < chat.completion_tokens <= 24
    assert "." not in plain.text and plain.text.strip()
    assert server_llm.usage.calls >= 2 and server_llm.usage.completion_tokens >= chat.completion_tokens
    assert server_llm.identity()["model"] == "smollm2"  # 'default' resolved from /v1/models


@pytest.mark.server
def test_json_schema_answer_parses(server_llm):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    (g,) = server_llm.generate([GenerateRequest(
        messages=(("user", "Answer in JSON: what is the capital of France?"),), max_tokens=40,
        json_schema=json.dumps(schema))])
    assert isinstance(json.loads(g.text)["city"], str)


@pytest.mark.server
def test_chat_top_logprobs_match_the_model(server_llm, hf32):
    """Chat logprobs from the server are right: the greedy tokens' logprobs agree with the same
    GGUF weights run by transformers (llama.cpp quantizes activations, hence the tolerance)."""
    messages = [{"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": "What is the capital of France?"}]
    resp = server_llm.client.chat.completions.create(model=server_llm.model, messages=messages,
                                                     max_tokens=6, temperature=0, logprobs=True,
                                                     top_logprobs=3)
    content = resp.choices[0].logprobs.content
    assert len(content) == resp.usage.completion_tokens
    for item in content:
        tops = [t.logprob for t in item.top_logprobs]
        assert tops == sorted(tops, reverse=True) and item.logprob == pytest.approx(tops[0])
    text = hf32.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    answer = "".join(item.token for item in content)
    ref = hf32.loglik([LoglikRequest(text, (answer,))])[0]
    assert ref.n_tokens[0] == len(content)
    assert sum(item.logprob for item in content) == pytest.approx(ref.logprobs[0], abs=0.5)


@pytest.mark.server
def test_llama_cpp_echo_logprobs_are_shifted_and_loglik_refuses(server_llm, hf32):
    """llama.cpp's server reports, for prompt token i, log P(token i | tokens <= i): the logits
    one position late. Shown here against transformers on the same weights; our loglik detects
    it with its probe and refuses with a clear error instead of returning wrong scores."""
    echo = server_llm._echo(server_llm.model, PROBE_TEXT, top=5)
    assert echo_is_shifted(echo)
    ids = hf32.encode(PROBE_TEXT)
    assert [hf32.tokenizer.decode([i]) for i in ids] == echo.tokens[:len(ids)]  # same tokens
    with torch.inference_mode():
        logp = torch.log_softmax(hf32.model(torch.tensor([ids])).logits[0].float(), -1)  # (n, vocab)
    server = echo.token_logprobs[1:len(ids)]
    right = [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]  # log P(t_i | t_<i)
    shifted = [logp[i, ids[i]].item() for i in range(1, len(ids))]  # log P(t_i | t_<=i)
    err = lambda ref: sum(abs(a - b) for a, b in zip(server, ref)) / len(ref)  # noqa: E731
    assert err(shifted) < 0.5 and err(right) > 1.0 + 5 * err(shifted), (err(shifted), err(right))
    with pytest.raises(LLMError, match="shifted by one token"):
        server_llm.loglik([LoglikRequest("The capital of France is", (" Paris",))])


# ---- failure injection on loopback ------------------------------------------------------------
class Scripted:
    """A loopback HTTP server answering POSTs from a script of (status, body, delay_s[, headers]);
    a `bytes` body is sent as it is (e.g. cut-short JSON)."""

    def __init__(self, script):
        self.script, self.requests = list(script), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                outer.requests.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                status, body, delay, *headers = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                time.sleep(delay)
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for key, value in (headers[0] if headers else {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def llm(self, **settings):
        settings = {"max_retries": 3, **settings}
        return make_llm(LLMSettings(backend="openai", model="m",
                                    base_url=f"http://127.0.0.1:{self.httpd.server_port}/v1", **settings))


ASK = [GenerateRequest(messages=(("user", "hi"),), max_tokens=4, temperature=0.3, top_p=0.9, seed=5,
                       stop=("\n",))]


def test_retries_on_429_and_5xx_then_succeeds():
    error = {"error": {"message": "slow down", "type": "rate_limit"}}
    with Scripted([(429, error, 0), (503, error, 0), (200, CHAT_OK, 0)]) as server:
        llm = server.llm()
        (g,) = llm.generate(ASK)
    assert g.text == "hello" and g.prompt_tokens == 5
    assert len(server.requests) == 3 and llm.usage.retries == 2 and llm.usage.calls == 1
    path, body = server.requests[-1]
    assert path == "/v1/chat/completions"
    assert (body["seed"], body["temperature"], body["top_p"], body["stop"], body["max_tokens"]) == \
        (5, 0.3, 0.9, ["\n"], 4)


def test_retry_after_is_honoured_and_cut_short_json_is_retried():
    error = {"error": {"message": "slow down", "type": "rate_limit"}}
    cut = json.dumps(CHAT_OK).encode()[:40]  # a 200 whose body ends mid-string
    with Scripted([(429, error, 0, {"Retry-After": "1.5"}), (200, cut, 0), (200, CHAT_OK, 0)]) as server:
        llm = server.llm()
        started = time.monotonic()
        (g,) = llm.generate(ASK)
    assert g.text == "hello" and len(server.requests) == 3 and llm.usage.retries == 2
    assert time.monotonic() - started >= 1.5  # the server's wait, not our first back-off (~0.5 s)


def test_no_retry_on_400():
    with Scripted([(400, {"error": {"message": "bad request"}}, 0), (200, CHAT_OK, 0)]) as server:
        with pytest.raises(openai.BadRequestError):
            server.llm().generate(ASK)
    assert len(server.requests) == 1


def test_timeouts_are_retried_then_raised():
    with Scripted([(200, CHAT_OK, 1.5)]) as server:
        with pytest.raises(LLMError, match=r"server at http://127\.0\.0\.1:\d+/v1 failed 2 attempts \(timed out\)"):
            server.llm(timeout_s=0.3, max_retries=1).generate(ASK)
    assert len(server.requests) == 2


def echo_body(text: str, tokens: list[str], logprobs: list[float | None], tops) -> dict:
    offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
    return {"id": "e", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": "length",
                         "logprobs": {"tokens": tokens, "token_logprobs": logprobs,
                                      "text_offset": offsets, "top_logprobs": tops}}]}


def test_loglik_sums_the_continuation_tokens_of_an_aligned_echo():
    probe_tokens = ["Mon"] + [f" w{i}" for i in range(20)]  # the probe only reads the alignment
    aligned_tops = [None] + [{t: -0.1, "zzz": -3.0} for t in probe_tokens[1:]]  # top = this token
    probe = echo_body(PROBE_TEXT, probe_tokens, [None] + [-0.1] * (len(probe_tokens) - 1), aligned_tops)
    answer = echo_body("The cat sat.", ["The", " cat", " sat", "."], [None, -2.0, -3.0, -1.0],
                       [None, {}, {}, {}])
    with Scripted([(200, probe, 0), (200, answer, 0)]) as server:
        (got,) = server.llm().loglik([LoglikRequest("The cat", (" sat",))])
    assert got.logprobs == [-3.0] and got.n_tokens == [1] and got.prompt_tokens == 2
    body = server.requests[-1][1]
    assert (body["prompt"], body["echo"], body["logprobs"], body["max_tokens"]) == ("The cat sat", True, 1, 1)


@pytest.mark.parametrize("tokens", [
    ["<s>", "The", " cat", " sat", "."],  # a BOS the server added (offsets shifted by 3)
    ["The", "cat", "sat", "."],  # SentencePiece: each token decoded alone drops its space
])
def test_loglik_aligns_by_tokens_where_they_do_not_rebuild_the_text(tokens):
    probe_tokens = ["Mon"] + [f" w{i}" for i in range(20)]
    probe = echo_body(PROBE_TEXT, probe_tokens, [None] + [-0.1] * 20,
                      [None] + [{t: -0.1, "zzz": -3.0} for t in probe_tokens[1:]])
    values = {"<s>": None, "The": -1.5, " cat": -2.0, "cat": -2.0, " sat": -3.0, "sat": -3.0, ".": -1.0}
    logprobs = [values[t] for t in tokens]
    logprobs[tokens.index("The")] = None if tokens[0] == "The" else -1.5
    answer = echo_body("The cat sat.", tokens, logprobs, [None] * len(tokens))
    with Scripted([(200, probe, 0), (200, answer, 0)]) as server:
        (got,) = server.llm().loglik([LoglikRequest("The cat", (" sat",))])
    assert got.logprobs == [-3.0] and got.n_tokens == [1]


def test_server_without_prompt_logprobs_gets_a_clear_error():
    no_logprobs = {"id": "e", "object": "text_completion", "created": 0, "model": "m",
                   "choices": [{"index": 0, "text": "x", "finish_reason": "length", "logprobs": None}]}
    with Scripted([(200, no_logprobs, 0)]) as server:
        with pytest.raises(LLMError, match="no prompt logprobs.*transformers"):
            server.llm().loglik([LoglikRequest("a", (" b",))])


# ---- relevance labels from top_logprobs: one request per (query, passage) ------------------------
RC_LABELS = (" Perfectly relevant", " Highly relevant", " Somewhat relevant", " Not relevant")


@pytest.mark.server
def test_label_logprobs_from_chat_top_logprobs(server_llm):
    """One chat request per pair on the real server; each label scored by the answer's first
    token, read from the server's (correct) chat top_logprobs."""
    from fret.parts.llm import LabelRequest
    from fret.parts.prompts import load_template
    prompt = load_template("fret_rc.jinja").render(
        query="which river carries the most water", passage="The Amazon has the largest discharge of any river.")
    before = server_llm.usage.calls
    (got,) = server_llm.label_logprobs([LabelRequest(prompt, RC_LABELS)])
    assert server_llm.usage.calls - before == 1 and got.n_tokens == [1] * 4
    resp = server_llm.client.chat.completions.create(
        model=server_llm.model, messages=[{"role": "user", "content": prompt}], max_tokens=1,
        temperature=0, logprobs=True, top_logprobs=20)
    tops = {t.token: t.logprob for t in resp.choices[0].logprobs.content[0].top_logprobs}
    assert got.logprobs == pytest.approx(label_scores(tops, list(RC_LABELS)), abs=1e-4)
    assert max(got.logprobs) > min(tops.values())  # at least one label among the top tokens
    assert not server_llm.has_prompt_logprobs()  # llama.cpp's echo is shifted: QL is not available


@pytest.mark.server
@pytest.mark.slow
def test_rerank_on_a_server_without_prompt_logprobs(llama_server, tmp_path):
    """rerank on llama.cpp's server: QL cannot be had (shifted echo), so the stage fuses RC with
    the embedder's rank, one request per pair, and says so in the manifest and the report."""
    from fret.core import shards
    from fret.core.runner import open_run, run_pipeline
    from fret.html_report import collect
    from pathlib import Path
    pipeline = Path(__file__).resolve().parent.parent / "pipelines" / "fret.yaml"
    base = ["corpus.sources.0.limit=40", "mine.top_n=3", "llm.backend=openai",
            f"llm.base_url={llama_server.base_url}", "llm.concurrency=2"]
    run_pipeline(open_run(pipeline, tmp_path, base), stages=["corpus"], progress=False)
    corpus = shards.read_rows(tmp_path / "corpus" / "part-00000.parquet")
    user = tmp_path / "q.jsonl"
    user.write_text("".join(json.dumps({"query": f"history of {r['title']}", "positive_id": r["id"]}) + "\n"
                            for r in corpus[:2]))
    run_pipeline(open_run(pipeline, tmp_path, base + [f"queries.from_file={user}"]),
                 stages=["queries", "embed", "mine", "rerank"], progress=False)
    totals = shards.load_manifest(tmp_path / "rerank")["totals"]
    counts = totals["counts"]
    assert counts["pairs_scored"] == 6 and counts["ql_unavailable"] == 6
    assert counts["rc_requests"] == 6 and "ql_requests" not in counts  # 1 request per pair (was 1 + 4)
    assert totals["llm"]["calls"] == 6
    rows = shards.read_rows(tmp_path / "rerank" / "part-00000.parquet")
    assert len(rows) == 2 and all(r["ql_ranks"] == [0, 0, 0] for r in rows)
    assert all(sorted(r["rc_ranks"]) == [1, 2, 3] for r in rows)
    notes = collect(tmp_path)["notes"]
    assert any("QL left out for 6 of 6 pairs" in n for n in notes)
    assert any("1.00 LLM requests per (query, passage) pair" in n for n in notes)
