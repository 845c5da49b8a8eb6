"""Ray executor overhead: the same small FRet run with the local executor and with Ray.

    python benchmarks/bench_ray.py                 # bundled SmolLM2 + MiniLM (slow on 2 cores)
    python benchmarks/bench_ray.py --fake          # the tests' fake LLM: executor overhead only

(a) Ray with one worker per stage holding all the cores (num_cpus = --cpus) vs local with
    --cpus torch threads: target <= 1.15x the local wall time.
(b) Ray with two workers of one CPU each for the model stages vs local with 2 threads.

Each run is a fresh run folder; Ray's wall time is given with and without starting the local
cluster (`ray.init`, paid once per command). Outputs are checked equal to the local run's.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIPELINE = ROOT / "pipelines" / "fret.yaml"
MODEL_STAGES = ("queries", "embed", "mine", "rerank")


def settings(size: int, fake: bool) -> list[str]:
    s = [f"sample.size={size}", "sample.shard_size=4", "corpus.sources.0.limit=300", "mine.top_n=8",
         "queries.max_attempts=2"]
    return s + (["llm.backend=fake"] if fake else [])


def rows(run_dir: Path) -> list[dict]:
    from fret.core import shards
    return [r for _, rs in shards.iter_stage_rows(run_dir / "export") for r in rs]


STAGE_SECONDS: dict[str, dict[str, float]] = {}  # run name -> stage -> wall seconds in the driver


def run(run_dir: Path, overrides: list[str], executor: str) -> float:
    from fret.core.executors import make_executor
    from fret.core.runner import open_run, run_pipeline
    started = time.perf_counter()
    ctx = open_run(PIPELINE, run_dir, overrides)
    run_one, close = make_executor(ctx.config.executor, executor)
    seconds = STAGE_SECONDS.setdefault(run_dir.name, {})

    def timed(ctx, name, **kwargs):
        t = time.perf_counter()
        try:
            return run_one(ctx, name, **kwargs)
        finally:
            seconds[name] = time.perf_counter() - t

    try:
        run_pipeline(ctx, progress=False, run_one=timed)
    finally:
        close()
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=16, help="seed passages (4 per shard)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--fake", action="store_true", help="the tests' fake LLM (no model compute)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.fake:  # workers import the fake backend's module, so tests/ goes on their path too
        tests = str(ROOT / "tests")
        sys.path.insert(0, tests)
        os.environ["PYTHONPATH"] = os.pathsep.join([tests, str(ROOT), os.environ.get("PYTHONPATH", "")])
        import fakes  # noqa: F401
    import ray
    import torch

    base = settings(args.size, args.fake)
    one = base + [f"executor.stages.{s}={{num_cpus: {args.cpus}, workers: 1}}" for s in MODEL_STAGES]
    two = base + [f"executor.stages.{s}={{num_cpus: 1, workers: 2}}" for s in MODEL_STAGES]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        torch.set_num_threads(args.cpus)
        t_local = run(tmp / "local", base, "local")
        torch.set_num_threads(2)
        t_local2 = run(tmp / "local2", base, "local")
        started = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level="WARNING")
        t_init = time.perf_counter() - started
        t_one = run(tmp / "ray1", one, "ray")
        t_two = run(tmp / "ray2", two, "ray") if args.cpus >= 2 else float("nan")
        ray.shutdown()
        same = rows(tmp / "local") == rows(tmp / "ray1") == rows(tmp / "local2")
        same = same and (args.cpus < 2 or rows(tmp / "ray2") == rows(tmp / "local"))
    print(f"FRet run, {args.size} seeds, {'fake LLM' if args.fake else 'SmolLM2 + MiniLM'}, "
          f"{args.cpus} CPUs; outputs identical: {same}")
    print(f"  local, {args.cpus} torch threads        {t_local:8.1f} s")
    print(f"  ray, 1 worker x {args.cpus} CPUs           {t_one:8.1f} s  (+ {t_init:.1f} s ray.init)")
    print(f"  (a) ray 1 worker / local           {t_one / t_local:8.2f}x  "
          f"({(t_one + t_init) / t_local:.2f}x with ray.init; target <= 1.15x)")
    print(f"  local, 2 torch threads             {t_local2:8.1f} s")
    print(f"  ray, 2 workers x 1 CPU             {t_two:8.1f} s")
    print(f"  (b) ray 2x1 / local 2 threads      {t_two / t_local2:8.2f}x")
    runs = [r for r in ("local", "ray1", "local2", "ray2") if r in STAGE_SECONDS]
    print("  per stage, wall s in the driver:   " + "".join(f"{r:>9}" for r in runs))
    for stage in STAGE_SECONDS["local"]:
        print(f"    {stage:<32}" + "".join(f"{STAGE_SECONDS[r].get(stage, float('nan')):9.1f}" for r in runs))


if __name__ == "__main__":
    main()
