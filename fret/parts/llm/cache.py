"""Request cache on disk: every answered LLM request, keyed by a hash of the whole request.

The key covers the backend identity (backend, model, file) and every field of the request
(prompt or messages, sampling settings, seed, continuations), so a changed template or
temperature never returns a stale answer. Answers are committed one batch per SQLite
transaction: after a kill, a batch is either wholly cached or not at all, so the rerun forms
the same batches as the first run and gets the same numerics.

On a cluster (the Ray executor) every worker writes its own file, `llm-WORKER.sqlite` beside
`llm.sqlite`, and looks up in all of them. Why not one file: SQLite's locking is only as good as
the filesystem's, and a run folder that many nodes mount is typically NFS or similar, where
POSIX locks are unreliable and WAL mode does not work at all (its shared-memory index must be
on one host). Many hosts writing one file there can corrupt it. One writer per file needs no
cross-host lock; worker files use the rollback journal (not WAL) so that a reader on another
host only reads the database file; a reader that hits a file mid-write, or a hot journal of a
killed writer, treats it as a miss and asks the LLM again (a cache never returns a wrong answer,
at worst it repeats a request). Answers a killed worker had committed stay in its file and are
found by whichever worker redoes the shard, so no answered request is sent again.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from .base import LLM, Generation, GenerateRequest, LabelRequest, Loglik, LoglikRequest, PartialBatch, Usage


def request_key(identity: dict, request) -> str:
    blob = json.dumps({"llm": identity, "request": request.key()}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def worker_path(base: Path, writer: str) -> Path:
    """worker_path(Path('RUN/_cache/llm.sqlite'), 'n1a2-4711') -> Path('RUN/_cache/llm-n1a2-4711.sqlite')"""
    return base.with_name(f"{base.stem}-{writer}{base.suffix}")


def cache_family(base: Path) -> list[Path]:
    """The shared file and every worker's file, in a fixed order."""
    return [base] + sorted(base.parent.glob(f"{base.stem}-*{base.suffix}"))


class CachedLLM:
    """Wraps a backend with the same `generate` / `loglik` surface."""

    def __init__(self, llm: LLM, path: Path, writer: str | None = None):
        self.llm = llm
        self.base = Path(path)  # llm.sqlite: the local executor's file, and the family's name
        self.path = worker_path(self.base, writer) if writer else self.base
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60)
        self.db.execute(f"PRAGMA journal_mode={'DELETE' if writer else 'WAL'}")
        self._readers: dict[Path, sqlite3.Connection] = {}
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, kind TEXT, value TEXT)")
        self.db.commit()
        self.usage = Usage()

    def identity(self) -> dict:
        return self.llm.identity()

    @property
    def batch_size(self) -> int:
        return self.llm.batch_size

    def generate(self, requests: Sequence[GenerateRequest]) -> list[Generation]:
        return self._run(requests, self.llm.generate_batch, Generation)

    def loglik(self, requests: Sequence[LoglikRequest]) -> list[Loglik]:
        return self._run(requests, self.llm.loglik_batch, Loglik)

    def label_logprobs(self, requests: Sequence[LabelRequest]) -> list[Loglik]:
        return self._run(requests, self.llm.label_batch, Loglik)

    def has_prompt_logprobs(self) -> bool:
        return self.llm.has_prompt_logprobs()

    def _run(self, requests, call_batch, result_type):
        identity = self.llm.identity()
        out = []
        for start in range(0, len(requests), self.batch_size):
            batch = list(requests[start:start + self.batch_size])
            keys = [request_key(identity, r) for r in batch]
            found = self._lookup(keys)
            # Identical requests in one batch are sent once (e.g. two passages that got the same query).
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            missing = sorted(i for k, i in first.items() if k not in found)
            self.usage.cached += len(batch) - len(missing)
            if missing:
                before = Usage(**asdict(self.llm.usage))
                try:
                    answers = call_batch([batch[i] for i in missing])
                except PartialBatch as partial:  # keep what was answered: a rerun must not pay for it again
                    self._store([(keys[missing[i]], a) for i, a in sorted(partial.answers.items())])
                    raise
                finally:
                    spent = self.llm.usage.minus(before)
                    spent.cached = 0
                    self.usage.add(spent)
                self._store([(keys[i], a) for i, a in zip(missing, answers)])
                for i, a in zip(missing, answers):
                    found[keys[i]] = a
            out.extend(found[k] if isinstance(found[k], result_type) else result_type(**found[k])
                       for k in keys)
        return out

    def _lookup(self, keys: list[str]) -> dict:
        marks = ",".join("?" * len(keys))
        query = f"SELECT key, value FROM answers WHERE key IN ({marks})"
        found = {k: json.loads(v) for k, v in self.db.execute(query, keys)}
        for other in cache_family(self.base):
            missing = [k for k in keys if k not in found]
            if not missing:
                break
            if other == self.path:
                continue
            try:
                db = self._readers.get(other) or sqlite3.connect(f"file:{other}?mode=ro", uri=True,
                                                                 timeout=5)
                self._readers[other] = db
                marks = ",".join("?" * len(missing))
                rows = db.execute(f"SELECT key, value FROM answers WHERE key IN ({marks})", missing)
                found.update((k, json.loads(v)) for k, v in rows)
            except sqlite3.Error:  # being written, half-written by a killed worker: a miss
                continue
        return found

    def _store(self, items) -> None:
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO answers (key, kind, value) VALUES (?, ?, ?)",
                [(k, type(a).__name__, json.dumps(asdict(a))) for k, a in items])

    def close(self) -> None:
        for db in self._readers.values():
            db.close()
        self.db.close()
        self.llm.close()
