"""The Ray executor: every stage's shards on a Ray cluster, same shards, manifests and resume.

The driver (the `fret` command) plans each stage exactly as the local runner does
(`runner.plan_stage`), sends only the shards not yet done under the same settings hash, and is
the only writer of `_manifest.json`: a worker makes a shard with `runner.process_shard` (rows
and rejects under a temporary name unique to the attempt, then renamed into the run folder) and
returns its manifest entry, which the driver records. So output is identical to the local
executor's, and a killed driver resumes like a killed local run.

A stage that holds a model (`Stage.uses_model`: the LLM stages, embed, mine) runs on a pool of
actors, each building the stage and running `setup()` once, then `process(index)` shard after
shard. The pool outlives the stage: the next model stage asking for the same resources per
worker gets the same actors, which keep their models (FRet's queries, embed, mine and rerank
load SmolLM2 and MiniLM once per actor, not once per stage). A stage with no model runs on the
held pool too when its actors already hold what the stage asks per worker (FRet's export after
rerank), and the pool stays for the model stages after it; otherwise it runs as plain Ray tasks,
ending the pool first, since idle actors hold CPUs and GPUs that its tasks need. Stages that must
stay in the driver (sub-runs, training) run there through the local runner.

Faults: a system error (the worker process or its node died, an object was lost) sends the
shard again, to the restarted actor or another one, up to `executor.max_attempts` attempts;
then the stage fails naming the shard. An error raised by the stage's own code (bad input) is
not retried and is raised in the driver as it would be locally, with the same message.
Shards finished before either failure stay recorded.
"""
from __future__ import annotations

import os
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Callable, Optional

from tqdm import tqdm

from .errors import RunError, warn
from .executor_settings import ExecutorSettings, StageResources
from .runner import StagePlan, finish_stage, plan_stage, run_stage
from .stage import RunContext
from ..stages import stage_class
from .ray_worker import ShardWorker, run_one_shard

RECOVER_S = 300  # how long a restarting actor may take to answer again before it is given up
INSTALL_HINT = "--executor ray needs Ray, which is not installed: pip install 'fret[ray]'"


def import_ray():
    try:
        import ray
    except ImportError:
        raise RunError(INSTALL_HINT) from None
    return ray


def system_errors(ray) -> tuple[type, ...]:
    """Ray's errors that say a worker, node or object was lost: the shard itself did not fail."""
    e = ray.exceptions
    return (e.RayActorError, e.WorkerCrashedError, e.ObjectLostError, e.NodeDiedError,
            e.OutOfMemoryError, e.LocalRayletDiedError)


def backend_modules(ctx: RunContext) -> list[str]:
    """Modules a worker imports before building stages: the one that registered the LLM backend
    (a plugin's or a test's backend is registered by importing its module)."""
    from ..parts.llm.base import BACKENDS
    target = BACKENDS.get(ctx.config.llm.backend)
    module = target.partition(":")[0] if isinstance(target, str) else getattr(target, "__module__", None)
    return [module] if module and module != "__main__" else []


def worker_spec(ctx: RunContext, num_cpus: float) -> dict:
    """All a worker needs to rebuild the driver's stages, without the pipeline file."""
    return {"config": ctx.config.model_dump(mode="json"), "run_dir": str(ctx.run_dir.resolve()),
            "pipeline_path": str(ctx.pipeline_path) if ctx.pipeline_path else None,
            "num_cpus": num_cpus, "imports": backend_modules(ctx), "cwd": os.getcwd()}


def stage_resources(ctx: RunContext, plan: StagePlan) -> tuple[StageResources, float]:
    """(resources, GPUs per worker): vLLM stages get tensor_parallel_size GPUs by default."""
    res = ctx.config.executor.stages.get(plan.stage.name, StageResources())
    gpus = res.num_gpus
    if gpus is None:
        llm = ctx.config.llm
        gpus = llm.tensor_parallel_size if plan.stage.uses_llm and llm.backend == "vllm" else 0
    return res, float(gpus)


def _app_error(exc) -> BaseException:
    """The stage's own exception out of Ray's wrapper, so the driver fails as a local run does."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else RunError(str(exc))


@dataclass
class Pool:
    """Actors of one shape, idle between stages; `new_actor` makes one more of that shape."""
    shape: tuple  # (CPUs, GPUs, custom resources) per actor
    spec: dict  # worker_spec: what each actor rebuilt the driver's stages from
    new_actor: Callable
    actors: list


class RayExecutor:
    """`run_one` for runner.run_pipeline: connects once, runs each stage on the cluster."""

    def __init__(self, settings: ExecutorSettings, address: Optional[str] = None):
        self.ray = import_ray()
        self.settings = settings
        self.started = False
        self.pool: Optional[Pool] = None  # the idle actors of the last stage run on actors
        self.named = 0  # actors are named fret-DRIVERPID-N (to find them in `ray list actors`)
        if not self.ray.is_initialized():
            address = address if address is not None else settings.address
            os.environ.setdefault("RAY_DEDUP_LOGS", "1")
            self.ray.init(address=address, include_dashboard=False, logging_level="WARNING",
                          log_to_driver=True)
            self.started = True  # ours to shut down; a cluster someone else started is left alone

    def close(self) -> None:
        self._end_pool()
        if self.started:
            self.ray.shutdown()
            self.started = False

    def __call__(self, ctx: RunContext, name: str, restart: bool = False, progress: bool = True,
                 on_work: Optional[Callable[[], None]] = None) -> dict:
        if stage_class(ctx.config.pipeline, name).runs_in_driver:
            # A sub-run's own executor needs the cluster's CPUs, and training takes this machine's
            # CPUs and GPUs outside Ray: idle actors would hold them (and their models' memory).
            self._end_pool()
            return run_stage(ctx, name, restart=restart, progress=progress, on_work=on_work)
        plan = plan_stage(ctx, name, restart, on_work)
        if plan.todo:
            bar = tqdm(total=len(plan.todo), desc=f"{name:>10}", unit="shard", disable=not progress,
                       leave=True)
            with bar:
                if plan.stage.uses_model:
                    self._on_actors(ctx, plan, bar, self._take_actors(ctx, plan))
                elif self._pool_fits(ctx, plan):
                    self._on_actors(ctx, plan, bar, self._hand_over_pool())
                else:
                    self._as_tasks(ctx, plan, bar)
        return finish_stage(ctx, plan)

    def _record(self, plan: StagePlan, index: int, entry: dict, bar) -> None:
        from .runner import record_shard
        record_shard(plan, index, entry)
        bar.update(1)
        bar.set_postfix(rows=entry["rows_out"], rejected=sum(entry["rejected"].values()))

    def _gave_up(self, plan: StagePlan, index: int, attempts: int, exc) -> RunError:
        from .shards import shard_name
        return RunError(f"stage {plan.stage.name!r}: shard {shard_name(index)} failed {attempts} "
                        f"times on lost workers ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
                        f"finished shards are kept: run the same command again to resume")

    def _check_fits(self, name: str, res: StageResources, gpus: float) -> None:
        """A worker bigger than the whole cluster would wait forever: say so instead."""
        have = self.ray.cluster_resources()
        want = {"CPU": res.num_cpus, "GPU": gpus, **res.resources}
        for key, n in want.items():
            if n and have.get(key, 0) < n:
                raise RunError(f"stage {name!r} asks for {n:g} {key} per worker (executor.stages."
                               f"{name}); the Ray cluster has {have.get(key, 0):g}")

    def _end_pool(self) -> None:
        if self.pool is not None:
            self._close_actors(self.pool.actors)
            self.pool = None

    def _take_actors(self, ctx: RunContext, plan: StagePlan) -> Pool:
        """Actors for a model stage: the held pool's if its shape matches, else new ones."""
        res, gpus = stage_resources(ctx, plan)
        self._check_fits(plan.stage.name, res, gpus)
        n = min(res.workers, len(plan.todo))
        shape = (res.num_cpus, gpus, tuple(sorted(res.resources.items())))
        spec = worker_spec(ctx, res.num_cpus)
        if self.pool is not None and (self.pool.shape, self.pool.spec) == (shape, spec):
            pool = self._hand_over_pool()
            self._close_actors(pool.actors[n:])
            pool.actors = pool.actors[:n] + [pool.new_actor() for _ in range(n - len(pool.actors))]
            return pool
        self._end_pool()
        # Ray restarts a dead actor (running __init__ again; a stage is set up at its next shard).
        Worker = self.ray.remote(ShardWorker)
        options = dict(num_cpus=res.num_cpus, num_gpus=gpus, resources=res.resources or None,
                       max_restarts=-1, max_task_retries=0)

        def new_actor():
            self.named += 1
            return Worker.options(name=f"fret-{os.getpid()}-{self.named}", **options).remote(spec)

        return Pool(shape, spec, new_actor, [new_actor() for _ in range(n)])

    def _hand_over_pool(self) -> Pool:
        """The held pool, for a stage to run on: no longer held (a failure ends it)."""
        pool, self.pool = self.pool, None
        return pool

    def _pool_fits(self, ctx: RunContext, plan: StagePlan) -> bool:
        """Whether a stage without a model runs on the held pool instead of as tasks.

        Ending the pool to free its CPUs for tasks costs seconds of waiting for Ray to hand them
        back, and the next model stage would start new actors and load its models again; the
        held actors are idle and already hold what each of the stage's shards asks for (a
        vLLM engine is shut down by the actor first, see ShardWorker.process). A stage that asks
        for more workers than the pool has (`executor.stages.NAME.workers`) runs as tasks."""
        if self.pool is None:
            return False
        cpus, gpus, resources = self.pool.shape
        res, want_gpus = stage_resources(ctx, plan)
        held = dict(resources)
        return (cpus >= res.num_cpus and gpus >= want_gpus and len(self.pool.actors) >= res.workers
                and all(held.get(k, 0) >= n for k, n in res.resources.items())
                and self.pool.spec == worker_spec(ctx, cpus))

    def _on_actors(self, ctx: RunContext, plan: StagePlan, bar, pool: Pool) -> None:
        ray, limit, name = self.ray, self.settings.max_attempts, plan.stage.name
        # Attempts per shard bound a shard that keeps killing its worker; an actor ended for good
        # (ray.kill, its node gone) is replaced, at most `workers * max_attempts` times in all.
        actors, new_actor = pool.actors, pool.new_actor
        n_workers = len(actors)
        spare = n_workers * limit
        pending, idle = deque(plan.todo), deque(actors)
        attempts: Counter = Counter()
        running: dict = {}  # object ref -> (shard index or None for a liveness probe, actor, since)
        failure: Optional[BaseException] = None
        try:
            while running or (pending and failure is None):
                while pending and idle and failure is None:
                    index, actor = pending.popleft(), idle.popleft()
                    attempts[index] += 1
                    running[actor.process.remote(name, index)] = (index, actor, 0.0)
                if not running:
                    failure = RunError(f"stage {name!r}: every worker was lost and none could be "
                                       f"restarted; finished shards are kept: run the same "
                                       f"command again to resume")
                    break
                [ref], _ = ray.wait(list(running), num_returns=1)
                index, actor, since = running.pop(ref)
                try:
                    result = ray.get(ref)
                except system_errors(ray) as exc:
                    if index is not None:  # lost mid-shard: the shard goes back in the queue
                        if not self._retry_or_fail(plan, index, attempts, limit, pending,
                                                   type(exc).__name__):
                            failure = failure or self._gave_up(plan, index, attempts[index], exc)
                        since = time.monotonic()
                    elif (isinstance(exc, ray.exceptions.ActorUnavailableError)
                          and time.monotonic() - since < RECOVER_S):
                        time.sleep(0.2)  # restarting: ask again shortly
                    else:  # ended for good (ray.kill, node gone) or never came back: replace it
                        actors.remove(actor)
                        ray.kill(actor, no_restart=True)
                        if spare > 0 and failure is None:
                            spare -= 1
                            actors.append(new_actor())
                            idle.append(actors[-1])
                        continue
                    # Is it back? A liveness probe answers once Ray has restarted the actor.
                    running[actor.pid.remote()] = (None, actor, since)
                    continue
                except ray.exceptions.RayTaskError as exc:  # the stage's own error: not retried
                    failure = failure or _app_error(exc)
                    idle.append(actor)
                    continue
                idle.append(actor)
                if index is not None:
                    self._record(plan, index, result, bar)
        finally:
            if failure is None:  # kept, models loaded, for the next stage of the same shape
                self.pool = pool
            else:
                self._close_actors(actors)
        if failure is not None:
            raise failure

    def _retry_or_fail(self, plan: StagePlan, index: int, attempts: Counter, limit: int,
                       pending: deque, why: str) -> bool:
        """Put a shard whose worker was lost back at the head of the queue, if it has attempts left."""
        if attempts[index] >= limit:
            return False
        warn(f"stage {plan.stage.name!r}: the worker making shard {index} was lost ({why}); "
              f"sending the shard again (attempt {attempts[index] + 1} of {limit})")
        pending.appendleft(index)
        return True

    def _close_actors(self, actors) -> None:
        """Ask each actor to release its model (vLLM engines need it), then end it."""
        ray = self.ray
        closing = [a.close.remote() for a in actors]
        try:
            ray.wait(closing, num_returns=len(closing), timeout=60)
        except ray.exceptions.RayError:
            pass  # an actor that is already gone has nothing to release
        for actor in actors:
            ray.kill(actor, no_restart=True)

    def _as_tasks(self, ctx: RunContext, plan: StagePlan, bar) -> None:
        ray = self.ray
        self._end_pool()
        res, gpus = stage_resources(ctx, plan)
        self._check_fits(plan.stage.name, res, gpus)
        spec = worker_spec(ctx, res.num_cpus)
        task = ray.remote(run_one_shard).options(
            num_cpus=res.num_cpus, num_gpus=gpus, resources=res.resources or None,
            max_retries=self.settings.max_attempts - 1, retry_exceptions=False)
        running = {task.remote(spec, plan.stage.name, index): index for index in plan.todo}
        failure: Optional[BaseException] = None
        while running:
            [ref], _ = ray.wait(list(running), num_returns=1)
            index = running.pop(ref)
            try:
                entry = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:
                failure = failure or _app_error(exc)
                for other in running:
                    ray.cancel(other)
                continue
            except system_errors(ray) as exc:
                failure = failure or self._gave_up(plan, index, self.settings.max_attempts, exc)
                continue
            except ray.exceptions.TaskCancelledError:
                continue
            self._record(plan, index, entry, bar)
        if failure is not None:
            raise failure

