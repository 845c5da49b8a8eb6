"""The `executor:` block of a pipeline file: where stages run (this process, or a Ray cluster).

    executor:
      kind: ray              # local (default) | ray; `--executor` on the command line wins
      address: auto          # none: start a local Ray; auto: join this node's cluster; ray://HOST:PORT
      threads: 8             # compute threads of each model worker; default: the driver's cores
      stages:
        rerank: {num_gpus: 1, workers: 8}
        embed: {num_gpus: 0.5, workers: 2}

Per-stage resources are per worker (a Ray actor for stages that hold a model, a Ray task
otherwise); `workers` is the size of a model stage's actor pool, and for a stage without a model
the fewest actors of a held pool it runs on (else tasks, as many as the cluster fits). None of
this changes a stage's output or its settings hash.

`threads` does change output: a model on the CPU sums floats in an order that depends on its
threads, which can flip a greedy token. So the local run and every model worker on Ray compute
with the same `threads` (a CPU model worker asks Ray for that many CPUs unless its stage says
`num_cpus`), and each model stage's manifest records it: a run resumed with other threads is
refused in one line instead of mixing shards made two ways.
"""
from __future__ import annotations

import os
from typing import Literal, Optional

from pydantic import Field

from .section import Section


class StageResources(Section):
    num_cpus: Optional[float] = Field(None, gt=0)  # None: `threads` for a CPU model worker, else 1
    num_gpus: Optional[float] = Field(None, ge=0)  # None: 0, or tensor_parallel_size for vLLM
    workers: int = Field(1, ge=1)
    resources: dict[str, float] = {}  # custom Ray resources, e.g. {accelerator_type:H100: 0.01}


class ExecutorSettings(Section):
    kind: Literal["local", "ray"] = "local"
    address: Optional[str] = None
    max_attempts: int = Field(3, ge=1)  # per shard, on system errors only (worker died, node lost)
    threads: Optional[int] = Field(None, ge=1)  # per model worker; None: the driver's usable cores
    stages: dict[str, StageResources] = {}


def usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def resolve_threads(settings: ExecutorSettings) -> int:
    """`executor.threads`, fixed to a number once per command (the driver's cores when unset),
    so the resolved settings saved with the run and every worker see the same figure."""
    if settings.threads is None:
        settings.threads = usable_cores()
    return settings.threads


def check_stage_names(settings: ExecutorSettings, stage_names, source: str) -> list[str]:
    """One error line per `executor.stages` key that is not a stage of the pipeline."""
    return [f"{source}: executor.stages.{name}: unknown stage; the pipeline's stages: "
            f"{', '.join(stage_names)}" for name in settings.stages if name not in stage_names]


def check_threads(manifest: dict, threads: int, stage: str, run_dir) -> Optional[str]:
    """Record in a model stage's manifest the threads its shards are made with; or, when its
    shards were made with other threads, one line saying why they must not be mixed."""
    made = manifest.get("threads")
    if manifest.get("shards") and made is not None and made != threads:
        return (f"stage {stage!r} in {run_dir} was made with {made} threads per model worker and "
                f"this command would use {threads} (executor.threads; unset, it is the driver's "
                f"cores): a model on the CPU gives other output on other threads, so shards made "
                f"both ways would not match; run with --set executor.threads={made} to go on")
    manifest["threads"] = threads
    return None
