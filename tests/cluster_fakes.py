"""The fake LLM of tests/fakes.py, saying which Ray node answers: for the several-node tests.

FRET_NODE_LOG names a file that gets one line per scoring (loglik) request, before it is
answered: 'NODE_ID PID', so a test knows when a node's worker is in the middle of a rerank
shard. Workers import this module by name (the executor ships the backend's module).
"""
from __future__ import annotations

import os

from fakes import FakeLLM
from fret.parts.llm.base import BACKENDS

NODE_LOG = "FRET_NODE_LOG"


def node_id() -> str:
    import ray
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


class NodeFakeLLM(FakeLLM):
    name = "nodefake"

    def _loglik(self, batch):
        path = os.environ.get(NODE_LOG)
        if path:
            with open(path, "a") as f:
                f.write(f"{node_id()} {os.getpid()}\n" * len(batch))
        return super()._loglik(batch)


BACKENDS["nodefake"] = NodeFakeLLM
