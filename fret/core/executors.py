"""Choosing an executor: the local runner (this process) or Ray (fret.core.ray_executor).

Both compute with `executor.threads` threads per model (the local process, each Ray model
worker), so they give the same output: see executor_settings.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Optional

from .executor_settings import ExecutorSettings, resolve_threads
from .runner import run_stage

THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")


def size_threads(n: int) -> Callable[[], None]:
    """Torch, BLAS, FAISS and tokenizers threads = n in this process; returns what undoes it.

    Set before torch is imported (the variables) and after (torch's own setting), so a model
    loaded later or already loaded computes with n threads."""
    saved = {var: os.environ.get(var) for var in (*THREAD_VARS, "TOKENIZERS_PARALLELISM")}
    torch, faiss = sys.modules.get("torch"), sys.modules.get("faiss")
    before = (torch.get_num_threads() if torch else None, faiss.omp_get_max_threads() if faiss else None)
    for var in THREAD_VARS:
        os.environ[var] = str(n)  # torch and faiss read these when first imported
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if torch is not None:
        torch.set_num_threads(n)
    if faiss is not None:
        faiss.omp_set_num_threads(n)

    def undo() -> None:
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
        if torch is not None:
            torch.set_num_threads(before[0])
        elif "torch" in sys.modules:  # imported since: back to its default for this machine
            sys.modules["torch"].set_num_threads(resolve_threads(ExecutorSettings()))
        if faiss is not None:
            faiss.omp_set_num_threads(before[1])

    return undo


def make_executor(settings: ExecutorSettings, kind: Optional[str] = None,
                  address: Optional[str] = None) -> tuple[Callable[..., dict], Callable[[], None]]:
    """(run_one for runner.run_pipeline, close): the local runner, or a connected RayExecutor.
    `settings.threads` is fixed to a number here (the run's saved settings record it). Ray is
    imported only here, and a missing Ray is one line saying how to install it."""
    threads = resolve_threads(settings)
    if (kind or settings.kind) == "local":
        undo = size_threads(threads)
        return run_stage, undo
    from .ray_executor import RayExecutor
    executor = RayExecutor(settings, address)
    return executor, executor.close
