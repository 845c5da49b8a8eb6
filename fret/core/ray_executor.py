"""The Ray executor: every stage's shards on a Ray cluster, same shards, manifests and resume.

The driver (the `fret` command) plans each stage exactly as the local runner does
(`runner.plan_stage`), sends only the shards not yet done under the same settings hash, and is
the only writer of `_manifest.json`: a worker makes a shard with `runner.process_shard` (rows
and rejects under a temporary name unique to the attempt, then renamed into the run folder) and
returns its manifest entry, which the driver records. So output is identical to the local
executor's (model workers compute with `executor.threads`, as the local run does), and a
killed driver resumes like a killed local run.

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
shard again, to another actor, up to `executor.max_attempts` attempts (recorded in the shard's
entry: `retries`, `lost`), and a new actor is asked for in the lost one's place; then the stage
fails naming the shard. Ray restarts no actor itself: a restart that no live node can hold
would keep the shards sent to it waiting forever, so an actor gets shards only once it has
answered, and a worker no live node can hold ends the stage in one line. An error raised by the
stage's own code (bad input) is not retried and is raised in the driver as it would be locally,
with the same message. Shards finished before either failure stay recorded.
"""
from __future__ import annotations

import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Optional

from .errors import RunError, warn
from .executor_settings import ExecutorSettings, StageResources, resolve_threads
from .progress import Progress
from .runner import StagePlan, finish_stage, plan_stage, run_stage
from .stage import RunContext
from ..stages import stage_class
from .ray_worker import ShardWorker, run_one_shard

WAIT_S = 2.0  # how often the driver looks at the cluster while no shard finishes
PLACE_WARN_S = 60  # a worker Ray has not placed by then (and no shard running): said once
INSTALL_HINT = "--executor ray needs Ray, which is not installed: pip install 'fret[ray]'"


def import_ray():
    try:
        import ray
    except ImportError:
        raise RunError(INSTALL_HINT) from None
    return ray


def reenter_cwd() -> None:
    """Stand in the working directory again if it was deleted under this process.

    A driver run by `ray job submit --working-dir` stands in the job's unpacked copy, which Ray
    may unpack anew (delete and create again, same path), e.g. when a worker node on the same
    host sets the job up: relative paths and `os.getcwd()` then fail with a bare
    FileNotFoundError. $PWD still names it. Checked at each stage and each worker spec."""
    try:
        os.getcwd()
    except FileNotFoundError:
        pwd = os.environ.get("PWD", "")
        if not os.path.isdir(pwd):
            raise RunError("the working directory of this command was deleted (by Ray?) and "
                           "$PWD names none: run it from a folder that stays") from None
        os.chdir(pwd)


def system_errors(ray) -> tuple[type, ...]:
    """Ray's errors that say a worker, node or object was lost: the shard itself did not fail."""
    e = ray.exceptions
    return (e.RayActorError, e.WorkerCrashedError, e.ObjectLostError, e.NodeDiedError,
            e.OutOfMemoryError, e.LocalRayletDiedError, e.ActorUnavailableError)


def backend_modules(ctx: RunContext) -> list[str]:
    """Modules a worker imports before building stages: the one that registered the LLM backend
    (a plugin's or a test's backend is registered by importing its module)."""
    from ..parts.llm.base import BACKENDS
    target = BACKENDS.get(ctx.config.llm.backend)
    module = target.partition(":")[0] if isinstance(target, str) else getattr(target, "__module__", None)
    return [module] if module and module != "__main__" else []


def worker_spec(ctx: RunContext, threads: int) -> dict:
    """All a worker needs to rebuild the driver's stages, without the pipeline file."""
    reenter_cwd()
    return {"config": ctx.config.model_dump(mode="json"), "run_dir": str(ctx.run_dir.resolve()),
            "pipeline_path": str(ctx.pipeline_path) if ctx.pipeline_path else None,
            "threads": threads, "imports": backend_modules(ctx), "cwd": os.getcwd()}


@dataclass(frozen=True)
class Shape:
    """What one worker of a stage asks Ray for, and the threads it computes with."""
    cpus: float
    gpus: float
    resources: tuple  # custom Ray resources, sorted (name, amount) pairs
    threads: int

    def wants(self) -> dict:
        return {"CPU": self.cpus, "GPU": self.gpus, **dict(self.resources)}

    def describe(self) -> str:
        return ", ".join(f"{n:g} {key}" for key, n in self.wants().items() if n)


def stage_shape(ctx: RunContext, plan: StagePlan) -> Shape:
    """A model worker computes with executor.threads (as the local run does) and asks for as
    many CPUs unless it has GPUs or its stage says num_cpus; vLLM stages get
    tensor_parallel_size GPUs by default. A worker without a model asks for 1 CPU by default."""
    res = ctx.config.executor.stages.get(plan.stage.name, StageResources())
    gpus = res.num_gpus
    if gpus is None:
        llm = ctx.config.llm
        gpus = llm.tensor_parallel_size if plan.stage.uses_llm and llm.backend == "vllm" else 0
    threads = resolve_threads(ctx.config.executor)
    cpus = res.num_cpus
    if cpus is None:
        cpus = threads if plan.stage.uses_model and not gpus else 1
    return Shape(float(cpus), float(gpus), tuple(sorted(res.resources.items())),
                 threads if plan.stage.uses_model else max(1, int(cpus)))


def _app_error(exc) -> BaseException:
    """The stage's own exception out of Ray's wrapper, so the driver fails as a local run does."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else RunError(str(exc))


@dataclass
class Pool:
    """Actors of one shape, idle between stages; `new_actor` makes one more of that shape.
    An actor is `ready` once it has answered (placed on a node and built); until then it is
    `starting`, and no shard is sent to it: a shard never waits on an actor Ray cannot place."""
    shape: Shape
    spec: dict  # worker_spec: what each actor rebuilt the driver's stages from
    new_actor: Callable
    ready: list
    starting: dict  # its `whoami` call -> the actor
    who: dict = field(default_factory=dict)  # actor -> its whoami answer (node, worker)

    def actors(self) -> list:
        return self.ready + list(self.starting.values())


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
        reenter_cwd()
        if stage_class(ctx.config.pipeline, name).runs_in_driver:
            # A sub-run's own executor needs the cluster's CPUs, and training takes this machine's
            # CPUs and GPUs outside Ray: idle actors would hold them (and their models' memory).
            self._end_pool()
            return run_stage(ctx, name, restart=restart, progress=progress, on_work=on_work)
        plan = plan_stage(ctx, name, restart, on_work)
        if plan.todo:
            done = len(plan.manifest["shards"])  # as the local runner: the time left; lines in a log
            with Progress(done + len(plan.todo), f"{name:>10}", unit="shard", initial=done,
                          enabled=progress) as bar:
                if plan.stage.uses_model:
                    self._on_actors(ctx, plan, bar, self._take_actors(ctx, plan))
                elif self._pool_fits(ctx, plan):
                    self._on_actors(ctx, plan, bar, self._hand_over_pool())
                else:
                    self._as_tasks(ctx, plan, bar)
        return finish_stage(ctx, plan)

    def _record(self, plan: StagePlan, index: int, entry: dict, bar, lost: list) -> None:
        from .runner import record_shard
        if lost:  # attempts on workers that were lost: `fret report` names the retried shards
            entry.update(retries=len(lost), lost=lost)
        record_shard(plan, index, entry)
        bar.update(1, note=f"{entry['rows_out']} rows, {sum(entry['rejected'].values())} rejected")

    def _gave_up(self, plan: StagePlan, index: int, attempts: int, exc) -> RunError:
        from .shards import shard_name
        return RunError(f"stage {plan.stage.name!r}: shard {shard_name(index)} failed {attempts} "
                        f"times on lost workers ({type(exc).__name__}: {' '.join(str(exc).split())[:300]}); "
                        f"finished shards are kept: run the same command again to resume")

    def _node_fits(self, shape: Shape) -> tuple[bool, dict]:
        """(whether a live node of the cluster can hold one worker, the largest such node's
        resources). Per node, not summed: one actor runs on one node."""
        nodes = [n.get("Resources", {}) for n in self.ray.nodes() if n.get("Alive")]
        want = shape.wants()
        fits = any(all(have.get(k, 0) >= n for k, n in want.items() if n) for have in nodes)
        largest = max(nodes, key=lambda have: [have.get(k, 0) for k in want], default={})
        return fits, largest

    def _cannot_place(self, name: str, shape: Shape) -> RunError:
        _, largest = self._node_fits(shape)
        have = ", ".join(f"{largest.get(k, 0):g} {k}" for k, n in shape.wants().items() if n)
        return RunError(f"stage {name!r}: no live node of the Ray cluster can hold a worker of "
                        f"{shape.describe()} (executor.stages.{name}, executor.threads); the "
                        f"largest has {have or 'nothing'}; finished shards are kept")

    def _check_fits(self, name: str, shape: Shape) -> None:
        """A worker bigger than every node would wait forever: say so instead."""
        if not self._node_fits(shape)[0]:
            raise self._cannot_place(name, shape)

    def _end_pool(self) -> None:
        if self.pool is not None:
            self._close_actors(self.pool)
            self.pool = None

    def _take_actors(self, ctx: RunContext, plan: StagePlan) -> Pool:
        """Actors for a model stage: the held pool's if its shape matches, else new ones."""
        shape = stage_shape(ctx, plan)
        self._check_fits(plan.stage.name, shape)
        n = min(ctx.config.executor.stages.get(plan.stage.name, StageResources()).workers,
                len(plan.todo))
        spec = worker_spec(ctx, shape.threads)
        if self.pool is not None and (self.pool.shape, self.pool.spec) == (shape, spec):
            pool = self._hand_over_pool()
            extra = pool.actors()[n:]  # the surplus goes: the starting ones first
            keep = [a for a in pool.actors() if a not in extra]
            pool.ready = [a for a in pool.ready if a in keep]
            pool.starting = {ref: a for ref, a in pool.starting.items() if a in keep}
            self._kill(extra)
            for _ in range(n - len(keep)):
                pool.new_actor()
            return pool
        self._end_pool()
        # No restarts by Ray: a lost actor is replaced by a new one, which may land on any node,
        # and gets shards only once it has answered (see Pool).
        Worker = self.ray.remote(ShardWorker)
        options = dict(num_cpus=shape.cpus, num_gpus=shape.gpus,
                       resources=dict(shape.resources) or None, max_restarts=0, max_task_retries=0)
        pool = Pool(shape, spec, lambda: None, [], {})

        def new_actor():
            self.named += 1
            actor = Worker.options(name=f"fret-{os.getpid()}-{self.named}", **options).remote(spec)
            pool.starting[actor.whoami.remote()] = actor

        pool.new_actor = new_actor
        for _ in range(n):
            new_actor()
        return pool

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
        if self.pool is None or not self.pool.ready:
            return False
        held, want = self.pool.shape, stage_shape(ctx, plan)
        workers = ctx.config.executor.stages.get(plan.stage.name, StageResources()).workers
        return (held.cpus >= want.cpus and held.gpus >= want.gpus
                and len(self.pool.actors()) >= workers
                and all(dict(held.resources).get(k, 0) >= n for k, n in want.resources)
                and self.pool.spec == worker_spec(ctx, held.threads))

    def _on_actors(self, ctx: RunContext, plan: StagePlan, bar, pool: Pool) -> None:
        """Shards to ready actors, one at a time each. A lost actor (its process or node gone)
        has its shard sent again, up to max_attempts, and a new actor asked for in its place,
        at most `workers * max_attempts` in all; the stage goes on with the actors that remain
        meanwhile. With no shard running and no actor ready, a cluster whose live nodes cannot
        hold one worker ends the stage in one line."""
        ray, limit, name = self.ray, self.settings.max_attempts, plan.stage.name
        spare = len(pool.actors()) * limit
        pending, ready = deque(plan.todo), deque(pool.ready)
        pool.ready = []
        attempts: Counter = Counter()
        lost: dict[int, list] = {}  # shard -> the workers lost while making it
        running: dict = {}  # object ref -> (shard index, actor)
        failure: Optional[BaseException] = None
        waiting_since = time.monotonic()

        def replace(actor) -> None:
            nonlocal spare
            self._kill([actor])
            if spare > 0 and failure is None:
                spare -= 1
                pool.new_actor()

        try:
            while running or (pending and failure is None):
                while pending and ready and failure is None:
                    index, actor = pending.popleft(), ready.popleft()
                    attempts[index] += 1
                    running[actor.process.remote(name, index)] = (index, actor)
                if not running and not pool.starting:
                    failure = RunError(f"stage {name!r}: every worker was lost and none could be "
                                       f"replaced; finished shards are kept: run the same "
                                       f"command again to resume")
                    break
                done, _ = ray.wait([*running, *pool.starting], num_returns=1, timeout=WAIT_S)
                if not done:
                    if not running and not self._node_fits(pool.shape)[0]:
                        failure = self._cannot_place(name, pool.shape)
                    elif not running and time.monotonic() - waiting_since > PLACE_WARN_S:
                        warn(f"stage {name!r}: waiting for Ray to place a worker of "
                             f"{pool.shape.describe()} (`ray status` shows what holds the nodes)")
                        waiting_since = float("inf")
                    continue
                [ref] = done
                if ref in pool.starting:  # an actor placed and built, or lost on the way
                    actor = pool.starting.pop(ref)
                    try:
                        pool.who[actor] = ray.get(ref)
                        ready.append(actor)
                    except system_errors(ray):
                        replace(actor)
                    except ray.exceptions.RayTaskError as exc:  # building the stage failed
                        failure = failure or _app_error(exc)
                        self._kill([actor])
                    continue
                index, actor = running.pop(ref)
                waiting_since = time.monotonic()
                try:
                    result = ray.get(ref)
                except system_errors(ray) as exc:  # lost mid-shard: the shard goes back in the queue
                    lost.setdefault(index, []).append({**pool.who.get(actor, {}), "error": type(exc).__name__})
                    if not self._retry_or_fail(plan, index, attempts, limit, pending,
                                               type(exc).__name__):
                        failure = failure or self._gave_up(plan, index, attempts[index], exc)
                    replace(actor)
                    continue
                except ray.exceptions.RayTaskError as exc:  # the stage's own error: not retried
                    failure = failure or _app_error(exc)
                    ready.append(actor)
                    continue
                ready.append(actor)
                self._record(plan, index, result, bar, lost.get(index, []))
        finally:
            pool.ready = list(ready) + [actor for _, actor in running.values()]
            if failure is None:  # kept, models loaded, for the next stage of the same shape
                self.pool = pool
            else:
                self._close_actors(pool)
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

    def _kill(self, actors) -> None:
        for actor in actors:
            self.ray.kill(actor, no_restart=True)

    def _close_actors(self, pool: Pool) -> None:
        """Ask each ready actor to release its model (vLLM engines need it), then end them all:
        an actor not yet placed has nothing to release, and asking it would wait on Ray."""
        ray = self.ray
        closing = [a.close.remote() for a in pool.ready]
        try:
            ray.wait(closing, num_returns=len(closing), timeout=60)
        except ray.exceptions.RayError:
            pass  # an actor that is already gone has nothing to release
        self._kill(pool.actors())
        pool.ready, pool.starting = [], {}

    def _as_tasks(self, ctx: RunContext, plan: StagePlan, bar) -> None:
        """One Ray task per shard, as many at once as the cluster fits; a task lost with its
        worker or node is sent again (by this driver, to count it), up to max_attempts."""
        ray, limit = self.ray, self.settings.max_attempts
        self._end_pool()
        shape = stage_shape(ctx, plan)
        self._check_fits(plan.stage.name, shape)
        spec = worker_spec(ctx, shape.threads)
        task = ray.remote(run_one_shard).options(
            num_cpus=shape.cpus, num_gpus=shape.gpus, resources=dict(shape.resources) or None,
            max_retries=0, retry_exceptions=False)
        attempts: Counter = Counter(plan.todo)
        lost: dict[int, list] = {}
        running = {task.remote(spec, plan.stage.name, index): index for index in plan.todo}
        failure: Optional[BaseException] = None
        while running:
            done, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_S)
            if not done:
                if not self._node_fits(shape)[0]:
                    failure = failure or self._cannot_place(plan.stage.name, shape)
                    for other in running:
                        ray.cancel(other, force=True)
                    break
                continue
            index = running.pop(done[0])
            try:
                entry = ray.get(done[0])
            except ray.exceptions.RayTaskError as exc:
                failure = failure or _app_error(exc)
                for other in running:
                    ray.cancel(other)
                continue
            except ray.exceptions.TaskCancelledError:
                continue
            except system_errors(ray) as exc:
                lost.setdefault(index, []).append({"error": type(exc).__name__})
                if failure is None and attempts[index] < limit:
                    warn(f"stage {plan.stage.name!r}: the worker making shard {index} was lost "
                         f"({type(exc).__name__}); sending the shard again (attempt "
                         f"{attempts[index] + 1} of {limit})")
                    attempts[index] += 1
                    running[task.remote(spec, plan.stage.name, index)] = index
                else:
                    failure = failure or self._gave_up(plan, index, attempts[index], exc)
                continue
            self._record(plan, index, entry, bar, lost.get(index, []))
        if failure is not None:
            raise failure
