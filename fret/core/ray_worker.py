"""What runs inside a Ray worker: rebuild the driver's stage, set it up once, make shards.

Kept apart from ray_executor (the driver side) and free of `import ray` at the top, so the
worker code is plain Python that a test can also call in-process.
"""
from __future__ import annotations

import importlib
import os
import socket
import sys
from pathlib import Path

from .config import config_from_dict
from .executors import size_threads
from .runner import make_stage, process_shard
from .stage import RunContext


def _ray_context():
    """Ray's runtime context inside a Ray worker, else None: outside one (a test calling the
    worker in-process) asking for it would start a whole local Ray instance."""
    ray = sys.modules.get("ray")
    return ray.get_runtime_context() if ray is not None and ray.is_initialized() else None


def _identity() -> tuple[str, str]:
    """(node, worker): the Ray node id (the host's name outside Ray) and a name unique on the
    cluster, e.g. 'a1b2c3d4-4711'. Not the host's name alone: every node of one machine, or of
    one container image, can share it."""
    context = _ray_context()
    node_id = (context.get_node_id() if context else None) or socket.gethostname()
    return node_id, f"{node_id[:8]}-{os.getpid()}"


def _gpu_ids() -> list[str]:
    """The GPUs Ray gave this worker (CUDA_VISIBLE_DEVICES is set to them), e.g. ['1']."""
    context = _ray_context()
    return [str(g) for g in context.get_accelerator_ids().get("GPU", [])] if context else []


def _for_actor(config: dict) -> dict:
    """vLLM with tensor parallelism inside an actor: the actor already holds its
    tensor_parallel_size GPUs (num_gpus, one node, like a STRICT_PACK placement group), so the
    engine starts its TP workers as local processes on exactly those GPUs instead of asking Ray
    for a placement group from inside an actor (which some Ray + vLLM pairs hang on)."""
    llm = config.get("llm", {})
    if llm.get("backend") == "vllm" and llm.get("tensor_parallel_size", 1) > 1:
        args = llm.setdefault("extra", {}).setdefault("engine_args", {})
        args.setdefault("distributed_executor_backend", "mp")
    return config


def shutdown_llm(llm) -> None:
    """Shut an in-process vLLM engine down explicitly: dropping the reference leaves its engine
    core and TP worker processes orphaned when the actor exits."""
    backend = getattr(llm, "llm", llm)  # CachedLLM wraps the backend
    engine = getattr(backend, "_engine", None)
    if engine is None:
        return
    core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
    if callable(getattr(core, "shutdown", None)):
        core.shutdown()
    try:
        from vllm.distributed.parallel_state import (destroy_distributed_environment,
                                                     destroy_model_parallel)
    except ImportError:
        return
    destroy_model_parallel()
    destroy_distributed_environment()


class ShardWorker:
    """One worker (a Ray actor for model stages): `process(stage, index)` shard after shard, with
    each stage built and `setup()` (model loading) once, at its first shard. An actor serves one
    stage after another: the models live in its run context (`ctx.llm`, `ctx.model`), so the
    stages that share one (queries and rerank the LLM, embed and mine the embedder) load it once."""

    def __init__(self, spec: dict):
        if os.path.isdir(spec["cwd"]):  # relative paths in the settings mean what they meant
            os.chdir(spec["cwd"])        # to the driver (on a cluster: where the run folder is shared)
        self.threads = spec["threads"]  # executor.threads on a model worker, as the local run
        size_threads(self.threads)
        for module in spec["imports"]:
            importlib.import_module(module)  # registers the LLM backend the pipeline names
        config = config_from_dict(_for_actor(dict(spec["config"])))
        pipeline = Path(spec["pipeline_path"]) if spec["pipeline_path"] else None
        self.ctx = RunContext(Path(spec["run_dir"]), config, pipeline)
        self.node, self.worker = _identity()
        self.gpus = _gpu_ids()
        self.ctx.cache_writer = self.worker  # its own request cache file (see parts/llm/cache.py)
        self.stage, self.stage_name = None, None

    def process(self, stage: str, index: int) -> dict:
        if self.stage_name != stage:
            # As in the local runner: shard_indices() first (some stages plan their shards
            # there, e.g. `sample` draws its ids), then setup(), then shards.
            self.stage = self.stage_name = None  # the last stage's data (an index) goes first
            built = make_stage(self.ctx, stage)
            if not built.uses_llm and self.ctx.config.llm.backend == "vllm":
                # vLLM keeps most of its GPU's memory for its KV cache: a stage with another
                # model (embed on the same GPU) would not fit beside it. Other backends stay.
                self._release_llm()
            built.shard_indices()
            built.setup()
            size_threads(self.threads)  # torch is imported by now: set its threads live too
            self.stage, self.stage_name = built, stage
        entry = process_shard(self.stage, index)
        entry.update(node=self.node, host=socket.gethostname(), worker=self.worker)
        if self.gpus:
            entry["gpus"] = self.gpus
        return entry

    def whoami(self) -> dict:
        """Answers once the actor is placed and built: who it is, where."""
        return {"node": self.node, "worker": self.worker}

    def _release_llm(self) -> None:
        if self.ctx._llm is not None:
            shutdown_llm(self.ctx._llm)
            self.ctx._llm.close()
            self.ctx._llm = None

    def close(self) -> None:
        self._release_llm()
        self.ctx.close()


def run_one_shard(spec: dict, stage: str, index: int) -> dict:
    """A Ray task for a stage without a model: build, set up, make one shard."""
    worker = ShardWorker(spec)
    try:
        return worker.process(stage, index)
    finally:
        worker.close()
