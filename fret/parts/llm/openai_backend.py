"""The `openai` backend: any OpenAI-compatible server through the official client.

Requests of a batch go out in parallel (a thread pool of `concurrency`), each retried with
exponential back-off on 429, 5xx, timeouts and dropped connections (never on other 4xx: they
would fail again). `loglik` asks the completions endpoint to echo the prompt with its token
logprobs (`echo=True, logprobs=1, max_tokens=1`; llama.cpp reads max_tokens=0 as "no limit") and
sums the tokens that carry the continuation's characters: by `text_offset` where the echoed
tokens rebuild the prompt, else by walking the tokens through it (a BOS string the server added,
SentencePiece tokens whose decode drops the leading space). Before the first `loglik` a short
probe checks that the echoed logprobs are aligned; servers that return none, or shifted ones
(llama.cpp's server), get an LLMError saying what to use instead (`has_prompt_logprobs` asks
without raising).

`label_logprobs` (relevance classification) needs no prompt logprobs: one chat request
(`llm.extra.label_endpoint: chat`, the default) or completions request with `max_tokens=1` and
`top_logprobs`, each label scored by the answer's first token, so one request per (query, passage)
whatever the number of labels. Labels must start with distinct words.
"""
from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ...core.errors import warn
from .base import (LLM, Generation, GenerateRequest, LabelRequest, LLMError, LLMSettings, Loglik,
                   LoglikRequest, PartialBatch, ServerError)
from .grammar import server_constraint
from .logprobs import (INSTEAD, PROBE_TEXT, TOP_LOGPROBS, check_label_starts, echo_is_shifted,
                       label_scores, require_prompt_logprobs, sum_echo_logprobs)

_WARNED_UNSET: set[str] = set()  # api_key_env variables already warned about

def response_format(schema: dict, style: str) -> dict:
    """The `response_format` asking for JSON that follows `schema`: OpenAI's form ("json_schema":
    OpenAI, vLLM, SGLang), or llama-cpp-python's ("json_object", set llm.extra.response_format)."""
    if style == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    if style == "json_object":
        return {"type": "json_object", "schema": schema}
    raise LLMError(f"llm.extra.response_format must be 'json_schema' or 'json_object', not {style!r}")


def is_retryable(error: BaseException) -> bool:
    """429, 5xx, timeouts, dropped connections, and a 200 whose body is cut short (broken JSON)."""
    import openai
    if isinstance(error, (openai.APITimeoutError, openai.APIConnectionError, openai.RateLimitError,
                          openai.APIResponseValidationError, json.JSONDecodeError)):
        return True
    return isinstance(error, openai.APIStatusError) and error.status_code >= 500


def retry_after(error: BaseException) -> float | None:
    """Seconds a server asked us to wait (`Retry-After: 3` -> 3.0); None when it did not say."""
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: rare from API servers; fall back to our own back-off
        return None


def describe(error: BaseException) -> str:
    """One line for a transport failure: 'HTTP 503 (injected 503)', 'timed out', 'connection error'."""
    import openai
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}"
    if isinstance(error, openai.APITimeoutError):
        return "timed out"
    if isinstance(error, json.JSONDecodeError):
        return "answer was not complete JSON"
    return str(error).rstrip(".").lower() or type(error).__name__


class OpenAILLM(LLM):
    name = "openai"

    def __init__(self, settings: LLMSettings):
        super().__init__(settings)
        from openai import OpenAI
        key = os.environ.get(settings.api_key_env)
        if not key:
            if settings.base_url is None:
                raise LLMError(f"the openai backend needs an API key in ${settings.api_key_env} "
                               "(or llm.base_url pointing at a local server)")
            if "api_key_env" in settings.model_fields_set and settings.api_key_env not in _WARNED_UNSET:
                _WARNED_UNSET.add(settings.api_key_env)  # once per process, not once per stage
                warn(f"llm.api_key_env names ${settings.api_key_env}, which is not set: sending no "
                     f"key to {settings.base_url}")
            key = "EMPTY"  # local servers take any key
        # retries are ours (tenacity), so the client makes one attempt per call
        self.client = OpenAI(base_url=settings.base_url, api_key=key, timeout=settings.timeout_s,
                             max_retries=0)
        self.pool = ThreadPoolExecutor(max_workers=max(1, settings.concurrency))
        self._lock = threading.Lock()  # usage counters are bumped from the pool's threads
        self._model: str | None = None if settings.model in ("default", "") else settings.model
        self._aligned: bool | None = None

    def identity(self) -> dict:
        extra = {} if self.label_endpoint == "chat" else {"label_endpoint": self.label_endpoint}
        return {**super().identity(), "model": self.model, "base_url": self.settings.base_url, **extra}

    @property
    def label_endpoint(self) -> str:
        endpoint = self.settings.extra.get("label_endpoint", "chat")
        if endpoint not in ("chat", "completions"):
            raise LLMError(f"llm.extra.label_endpoint must be 'chat' or 'completions', not {endpoint!r}")
        return endpoint

    @property
    def model(self) -> str:
        """'default' -> the first model the server lists (local servers serve one)."""
        if self._model is None:
            models = self._call(self.client.models.list).data
            if not models:
                raise LLMError(f"the server at {self.settings.base_url} lists no models")
            self._model = models[0].id
        return self._model

    def _call(self, fn, *args, **kwargs):
        """fn(*args, **kwargs), sent again on transient failures (`llm.max_retries` times at most,
        exponential back-off, or longer where the server's `Retry-After` asks); each resend is
        counted in `usage.retries`. Out of retries: an LLMError naming the server and the failure."""
        from tenacity import RetryError, Retrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter
        backoff = wait_exponential_jitter(multiplier=0.5, max=30.0, jitter=0.5)

        def wait(state) -> float:
            asked = retry_after(state.outcome.exception())
            return max(backoff(state), min(asked, 120.0)) if asked is not None else backoff(state)

        def count(state) -> None:
            with self._lock:
                self.usage.retries += 1

        attempts = self.settings.max_retries + 1
        try:
            for attempt in Retrying(retry=retry_if_exception(is_retryable), wait=wait, before_sleep=count,
                                    stop=stop_after_attempt(attempts)):
                with attempt:
                    return fn(*args, **kwargs)
        except RetryError as err:
            last = err.last_attempt.exception()
            raise ServerError(f"the server at {self.settings.base_url or 'api.openai.com'} failed {attempts} "
                           f"attempts ({describe(last)}); when it answers again, run the same command: "
                           "answered requests are not sent again") from last

    # ---- generate -----------------------------------------------------------------------
    def _generate(self, batch: list[GenerateRequest]) -> list[Generation]:
        model = self.model
        return self._map(lambda r: self._generate_one(model, r), batch)

    def _map(self, fn, items: list) -> list:
        """[fn(x) for x in items] on the pool. Where some fail, the others still finish and come
        back in a PartialBatch, so the request cache keeps them (a rerun pays only for the rest)."""
        futures = [self.pool.submit(fn, x) for x in items]
        answers, first = {}, None
        for i, future in enumerate(futures):
            try:
                answers[i] = future.result()
            except Exception as err:  # noqa: BLE001 (re-raised below, after the others finished)
                first = first or err
        if first is None:
            return [answers[i] for i in range(len(items))]
        if not answers:
            raise first
        raise PartialBatch(first, answers) from first

    def _generate_one(self, model: str, r: GenerateRequest) -> Generation:
        common = {"model": model, "max_tokens": r.max_tokens, "temperature": r.temperature,
                  "top_p": r.top_p, "seed": r.seed, "stop": list(r.stop) or None}
        schema = None if r.json_schema is None else response_format(
            json.loads(r.json_schema), self.settings.extra.get("response_format", "json_schema"))
        body = server_constraint(r, self.settings.extra.get("structured_outputs"))  # regex/grammar
        if r.messages is not None:
            messages = [{"role": role, "content": content} for role, content in r.messages]
            extra = {"response_format": schema} if schema else {}
            extra.update({"extra_body": body} if body else {})
            resp = self._call(self.client.chat.completions.create, messages=messages, **common, **extra)
            choice = resp.choices[0]
            text = choice.message.content or ""
        elif r.prompt is not None:
            extra = {"extra_body": {**({"response_format": schema} if schema else {}), **body}}
            resp = self._call(self.client.completions.create, prompt=r.prompt, **common, **extra)
            choice = resp.choices[0]
            text = choice.text
        else:
            raise LLMError("a generate request needs a prompt or messages")
        usage = resp.usage
        return Generation(text=text, prompt_tokens=usage.prompt_tokens if usage else 0,
                          completion_tokens=usage.completion_tokens if usage else 0,
                          finish_reason=choice.finish_reason or "")

    # ---- loglik -------------------------------------------------------------------------
    def _echo(self, model: str, text: str, top: int = 1):
        import openai
        try:
            resp = self._call(self.client.completions.create, model=model, prompt=text, max_tokens=1,
                              echo=True, logprobs=top, temperature=0.0)
        except openai.BadRequestError as e:
            raise LLMError(f"the server at {self.settings.base_url} refused echo=True with logprobs "
                           f"({e.message}); it cannot do loglik: {INSTEAD}") from e
        return resp.choices[0].logprobs

    def check_echo_alignment(self) -> None:
        """Raise LLMError unless the server's echoed prompt logprobs are present and aligned."""
        if self._aligned is None:
            probe = self._echo(self.model, PROBE_TEXT, top=5)
            require_prompt_logprobs(probe)
            self._aligned = not echo_is_shifted(probe)
        if not self._aligned:
            raise LLMError(f"the server at {self.settings.base_url} returns echoed prompt logprobs "
                           "shifted by one token (log P(token i | tokens <= i), a known llama.cpp "
                           f"server bug), so its log-likelihoods would be wrong: {INSTEAD}")

    def has_prompt_logprobs(self) -> bool:
        try:
            self.check_echo_alignment()
        except LLMError:
            return False
        return True

    def _loglik(self, batch: list[LoglikRequest]) -> list[Loglik]:
        self.check_echo_alignment()
        model = self.model
        jobs = [(r.prompt, c) for r in batch for c in r.continuations]

        def score(job):
            prompt, cont = job
            return sum_echo_logprobs(self._echo(model, prompt + cont), prompt + cont, len(prompt))

        scored = iter(self.pool.map(score, jobs))
        out = []
        for r in batch:
            parts = [next(scored) for _ in r.continuations]
            out.append(Loglik(logprobs=[p[0] for p in parts], n_tokens=[p[1] for p in parts],
                              prompt_tokens=parts[0][2] if parts else 0))
        return out

    # ---- label_logprobs -----------------------------------------------------------------
    def _label_logprobs(self, batch: list[LabelRequest]) -> list[Loglik]:
        model, endpoint = self.model, self.label_endpoint
        for r in batch:
            check_label_starts(list(r.labels))
        return self._map(lambda r: self._labels_one(model, endpoint, r), batch)

    def _labels_one(self, model: str, endpoint: str, r: LabelRequest) -> Loglik:
        common = {"model": model, "max_tokens": 1, "temperature": 0.0}
        if endpoint == "chat":
            resp = self._call(self.client.chat.completions.create, **common, logprobs=True,
                              top_logprobs=TOP_LOGPROBS, messages=[{"role": "user", "content": r.prompt}])
            content = resp.choices[0].logprobs.content if resp.choices[0].logprobs else None
            tops = {t.token: t.logprob for t in content[0].top_logprobs} if content else {}
        else:
            resp = self._call(self.client.completions.create, **common, prompt=r.prompt,
                              logprobs=TOP_LOGPROBS)
            logprobs = resp.choices[0].logprobs
            tops = dict((logprobs.top_logprobs or [{}])[0] or {}) if logprobs else {}
        if not tops:
            raise LLMError(f"the server at {self.settings.base_url} returned no top_logprobs on the "
                           f"{endpoint} endpoint, so it cannot score labels")
        usage = resp.usage
        return Loglik(logprobs=label_scores(tops, list(r.labels)), n_tokens=[1] * len(r.labels),
                      prompt_tokens=usage.prompt_tokens if usage else 0)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.client.close()
