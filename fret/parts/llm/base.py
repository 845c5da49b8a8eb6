"""The LLM protocol: two batched primitives, `generate` and `loglik`, and a name registry.

Backends subclass `LLM` and register under a name in `BACKENDS` (a plain dict of import paths,
so `import fret.parts.llm` stays light). Tests register fakes through the same dict.
"""
from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from pydantic import BaseModel, ConfigDict

from ...core.errors import FretError


class LLMSettings(BaseModel):
    """The `llm:` section of a pipeline file."""
    model_config = ConfigDict(extra="forbid")

    backend: str = "transformers"
    model: str = "default"  # "default" = the bundled SmolLM2-135M-Instruct GGUF
    gguf_file: Optional[str] = None
    dtype: str = "auto"  # auto | bfloat16 | float32 | float16
    device: str = "auto"  # auto | cpu | cuda
    batch_size: int = 8
    max_length: int = 2048  # prompt + continuation tokens; longer prompts are cut from the left
    # openai backend
    base_url: Optional[str] = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 6
    # vllm backend
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    extra: dict[str, Any] = {}


@dataclass(frozen=True)
class GenerateRequest:
    """A plain-text prompt (`prompt`) or a chat (`messages`), with its sampling settings."""
    prompt: Optional[str] = None
    messages: Optional[tuple[tuple[str, str], ...]] = None  # ((role, content), ...)
    max_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0
    json_schema: Optional[str] = None  # JSON text of a schema the answer must follow
    regex: Optional[str] = None  # a regular expression the whole answer must match
    grammar: Optional[str] = None  # an EBNF grammar (`root ::= ...`) the answer must follow

    def key(self) -> dict:
        # unset regex/grammar are left out, so requests without them keep their cached answers
        fields = {k: v for k, v in asdict(self).items() if v is not None or k not in ("regex", "grammar")}
        return {"kind": "generate", **fields}


@dataclass(frozen=True)
class LoglikRequest:
    """Score each continuation after the prompt: tokens(prompt) + tokens(continuation).

    Prompt and continuation are tokenized separately and concatenated, so a score is always
    log P(continuation tokens | prompt tokens) with no merge across the boundary.
    """
    prompt: str
    continuations: tuple[str, ...]

    def key(self) -> dict:
        return {"kind": "loglik", **asdict(self)}


@dataclass(frozen=True)
class LabelRequest:
    """log P(label | prompt) for each label of a closed set (a classifier prompt's answers).

    Labels are written as they follow the prompt (" Highly relevant"). Backends that read the
    answer's top log-probabilities (openai) score each label by its first token, so labels must
    start with distinct words there; the default scores each whole label with `loglik`.
    """
    prompt: str
    labels: tuple[str, ...]

    def key(self) -> dict:
        return {"kind": "labels", **asdict(self)}


@dataclass
class Generation:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = ""


@dataclass
class Loglik:
    """Per continuation: summed log-probability and the number of tokens it spans."""
    logprobs: list[float]
    n_tokens: list[int]
    prompt_tokens: int = 0


@dataclass
class Usage:
    calls: int = 0  # requests answered by the backend (not the cache)
    cached: int = 0  # requests answered from the request cache
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0  # requests sent again after a transient failure (429, 5xx, timeout, broken answer)

    def add(self, other: "Usage") -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)

    def minus(self, before: "Usage") -> "Usage":
        """What was used since `before`: Usage(calls=5).minus(Usage(calls=2)) == Usage(calls=3)"""
        return Usage(**{k: v - getattr(before, k) for k, v in asdict(self).items()})


class LLMError(FretError, RuntimeError):
    """A backend cannot do what was asked (e.g. a server without prompt logprobs)."""


class ServerError(LLMError):
    """A server that kept failing past the retries: a failure at run time, the same command resumes."""
    exit_code = 1


class PartialBatch(LLMError):
    """A batch failed part-way: `answers` maps the index of each request that was answered to its
    result, so the request cache keeps what was paid for; the message is the first failure's."""

    def __init__(self, error: BaseException, answers: dict[int, Any]):
        super().__init__(str(error))
        self.answers = answers
        self.exit_code = getattr(error, "exit_code", 1)  # the failure's own (run time, unless it says)


class LLM:
    """Base class. Subclasses implement `_generate` and `_loglik` over one batch."""

    name = "base"

    def __init__(self, settings: LLMSettings):
        self.settings = settings
        self.usage = Usage()

    @property
    def batch_size(self) -> int:
        return self.settings.batch_size

    def identity(self) -> dict:
        """What decides the outputs: goes into request-cache keys and stage hashes."""
        return {"backend": self.name, "model": self.settings.model, "gguf_file": self.settings.gguf_file}

    def generate(self, requests: Sequence[GenerateRequest]) -> list[Generation]:
        out: list[Generation] = []
        for start in range(0, len(requests), self.batch_size):
            batch = list(requests[start:start + self.batch_size])
            out.extend(self.generate_batch(batch))
        return out

    def loglik(self, requests: Sequence[LoglikRequest]) -> list[Loglik]:
        out: list[Loglik] = []
        for start in range(0, len(requests), self.batch_size):
            batch = list(requests[start:start + self.batch_size])
            out.extend(self.loglik_batch(batch))
        return out

    def label_logprobs(self, requests: Sequence[LabelRequest]) -> list[Loglik]:
        out: list[Loglik] = []
        for start in range(0, len(requests), self.batch_size):
            out.extend(self.label_batch(list(requests[start:start + self.batch_size])))
        return out

    def has_prompt_logprobs(self) -> bool:
        """Whether `loglik` works here (an OpenAI-compatible server may have no prompt logprobs)."""
        return True

    def _counted(self, call, batch: list, continuations: bool = False) -> list:
        """call(batch), its answers counted in `usage` (those of a batch that failed part-way too);
        `continuations`: the scored continuations' tokens were sent too (loglik)."""
        def count(results) -> None:
            self.usage.calls += len(results)
            self.usage.prompt_tokens += sum(r.prompt_tokens + (sum(r.n_tokens) if continuations else 0)
                                            for r in results)
            self.usage.completion_tokens += sum(getattr(r, "completion_tokens", 0) for r in results)
        try:
            results = call(batch)
        except PartialBatch as partial:
            count(list(partial.answers.values()))
            raise
        count(results)
        return results

    def generate_batch(self, batch: list[GenerateRequest]) -> list[Generation]:
        return self._counted(self._generate, batch)

    def loglik_batch(self, batch: list[LoglikRequest]) -> list[Loglik]:
        return self._counted(self._loglik, batch, continuations=True)

    def label_batch(self, batch: list[LabelRequest]) -> list[Loglik]:
        return self._counted(self._label_logprobs, batch)

    def _label_logprobs(self, batch: list[LabelRequest]) -> list[Loglik]:
        """Default: each whole label's log-likelihood after the prompt, one `loglik` request."""
        return self._loglik([LoglikRequest(r.prompt, r.labels) for r in batch])

    def _generate(self, batch: list[GenerateRequest]) -> list[Generation]:
        raise NotImplementedError

    def _loglik(self, batch: list[LoglikRequest]) -> list[Loglik]:
        raise NotImplementedError

    def close(self) -> None:
        """Release servers, threads or GPU memory. Default: nothing to release."""


BACKENDS: dict[str, Any] = {
    "transformers": "fret.parts.llm.hf:TransformersLLM",
    "openai": "fret.parts.llm.openai_backend:OpenAILLM",
    "vllm": "fret.parts.llm.vllm_backend:VLLMLLM",
}


def make_llm(settings: LLMSettings) -> LLM:
    target = BACKENDS.get(settings.backend)
    if target is None:
        raise LLMError(f"unknown llm backend {settings.backend!r}; known: {', '.join(sorted(BACKENDS))}")
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
    return target(settings)
