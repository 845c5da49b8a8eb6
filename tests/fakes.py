"""A fake LLM for control-flow tests (failures, retries, resume), registered like real backends.

Never the only test of a feature: the real-model tests cover what the answers mean.
"""
from __future__ import annotations

import hashlib
import os
import re
import signal
import time
from pathlib import Path

from fret.parts.llm.base import BACKENDS, LLM, Generation, Loglik
from fret.parts.llm.cache import request_key

REQUEST_LOG = "FRET_FAKE_LLM_LOG"  # a file: every answered request's cache key, one per line


def log_answered(llm: LLM, request) -> None:
    """Count an answer at the backend, in a file that outlives a kill -9 of the process.

    Opened in append mode per line: each line is one write(2), already in the OS when the process
    dies, and the key is the request cache's, so a log line can be matched against the cache.
    """
    path = os.environ.get(REQUEST_LOG)
    if path:
        with open(path, "a") as f:
            f.write(request_key(llm.identity(), request) + "\n")


def _unit(*parts: str) -> float:
    """A deterministic number in [0, 1) from text."""
    return int(hashlib.sha256("|".join(parts).encode()).hexdigest()[:8], 16) / 2**32


class FakeLLM(LLM):
    """Answers the query prompt with words of the passage; scores by hashing.

    settings.extra: {"malformed": substring} answers garbage when the passage contains it;
    {"crash_after": n} raises after n backend batches (to simulate a crash mid-stage);
    {"fail_on": substring} raises ValueError for such a passage (a shard failing on bad input);
    {"delay": seconds} sleeps before each answer (to give a test time to kill something);
    {"kill_once": {"marker": path, "after": n}}: the process kills itself with SIGKILL at its n-th
    request, once per marker file (a Ray worker dying mid-shard; never use it in-process).
The environment variable FRET_FAKE_LLM_LOG names a file that logs every answered request (both
fakes), so a test counts at the backend what a killed process had asked.
    """
    name = "fake"
    sent: list = []  # every request the backend answered, across instances

    def _tick(self):
        extra = self.settings.extra
        if extra.get("delay"):
            time.sleep(extra["delay"])
        kill = extra.get("kill_once")
        if kill:
            self._answered = getattr(self, "_answered", 0) + 1
            marker = Path(kill["marker"])
            if self._answered >= kill["after"] and not marker.exists():
                marker.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
        limit = self.settings.extra.get("crash_after")
        if limit is not None and len(FakeLLM.sent) >= limit:
            raise KeyboardInterrupt("simulated crash")

    def _generate(self, batch):
        out = []
        for r in batch:
            self._tick()
            FakeLLM.sent.append(r)
            passage = r.prompt.rsplit("Passage:", 1)[1].split("\nTask:")[0].split()
            if self.settings.extra.get("fail_on", "\0") in " ".join(passage):
                raise ValueError(f"fake backend cannot answer a passage holding "
                                 f"{self.settings.extra['fail_on']!r}")
            bad = self.settings.extra.get("malformed")
            if bad and bad in " ".join(passage):
                text = " I cannot help with that."
            else:
                text = f" Given a question, find a passage that answers it\nQuery: {' '.join(passage[1:4])} ?"
            out.append(Generation(text=text, prompt_tokens=len(r.prompt.split()), completion_tokens=8))
            log_answered(self, r)
        return out

    def _loglik(self, batch):
        out = []
        for r in batch:
            self._tick()
            FakeLLM.sent.append(r)
            out.append(Loglik(logprobs=[-10 * _unit(r.prompt, c) for c in r.continuations],
                              n_tokens=[len(re.findall(r"\w+", c)) for c in r.continuations],
                              prompt_tokens=len(r.prompt.split())))
            log_answered(self, r)
        return out


BACKENDS["fake"] = FakeLLM
