"""The Ray executor on a cluster of several Ray nodes on this host (Ray's own `Cluster`): a head
with no CPUs and two worker nodes of 2 CPUs. One FRet run, driven by the `fret` command with
`--ray-address` as a cluster user would: its driver killed mid-run and the same command run
again, then a whole worker node removed (raylet and worker processes) while its actor holds a
rerank shard. The export must equal a local run's, the manifests name both nodes by Ray node
id, the lost shard is recorded as retried, and no answered request is sent again.

The threads a model computes with are a recorded setting (`executor.threads`): a resume with
other threads is refused in one line (tested without Ray below).
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cluster_fakes  # registers the node-saying fake backend
from fret.cli import main
from fret.core import shards

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
FRET = ROOT / "pipelines" / "fret.yaml"

MODEL_STAGES = ("queries", "embed", "mine", "rerank")
SETS = ["llm.backend=nodefake", "corpus.sources.0.limit=120", "sample.size=12",
        "sample.shard_size=4", "mine.top_n=5", "queries.max_attempts=2",
        "llm.batch_size=1"]  # one request per cache commit: a lost worker loses no stored answer
ON_TWO_NODES = [f"executor.stages.{s}={{workers: 2}}" for s in MODEL_STAGES]  # 2 CPUs each: one a node
CLI = "import sys, cluster_fakes; from fret.cli import main; sys.exit(main(sys.argv[1:]))"


def wait_for(condition, what: str, driver=None, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert driver is None or driver.poll() is None, f"the driver ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory):
    pytest.importorskip("ray")
    from ray.cluster_utils import Cluster
    logs = tmp_path_factory.mktemp("logs")
    # Every node's processes inherit this environment: fret from this tree, the fakes from tests/,
    # and the fakes' logs (each answered request; the node of each scoring request).
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")])
    os.environ["FRET_FAKE_LLM_LOG"] = str(logs / "answered.log")
    os.environ[cluster_fakes.NODE_LOG] = str(logs / "nodes.log")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False,
        # a vanished node is declared dead in about 2 s, not 30
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4}})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    cluster.wait_for_nodes()
    try:
        yield cluster, workers, logs
    finally:
        cluster.shutdown()
        for var in ("FRET_FAKE_LLM_LOG", cluster_fakes.NODE_LOG):
            os.environ.pop(var, None)


@pytest.fixture
def drivers():
    """The `fret` driver processes a test starts: none outlives it, even when it fails."""
    started: list[subprocess.Popen] = []
    yield started
    for driver in started:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


@pytest.mark.slow  # three Ray nodes and two FRet runs: under a minute on 2 quiet cores
def test_several_nodes_driver_killed_then_a_node_lost(three_nodes, drivers, tmp_path, monkeypatch):
    from test_ray import FRET_STAGES, assert_same_run, rows_of, run  # needs Ray: imported here
    cluster, (node_a, node_b), logs = three_nodes
    with monkeypatch.context() as m:  # the local reference run logs nothing
        m.delenv("FRET_FAKE_LLM_LOG")
        m.delenv(cluster_fakes.NODE_LOG)
        run(tmp_path / "local", FRET, SETS)
    run_dir = tmp_path / "ray"
    sets = [a for s in SETS + ON_TWO_NODES + ["llm.extra={delay: 0.05}"] for a in ("--set", s)]
    cmd = [sys.executable, "-c", CLI, "run", str(FRET), "--run-dir", str(run_dir), "--quiet",
           "--executor", "ray", "--ray-address", cluster.address, *sets]

    # 1. The driver killed once its first model stage has made a shard; the same command again.
    driver = subprocess.Popen(cmd, cwd=TESTS)
    drivers.append(driver)
    wait_for(lambda: shards.load_manifest(run_dir / "queries").get("shards"), "a queries shard", driver)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    assert not shards.load_manifest(run_dir / "export").get("complete")
    nodes_log = logs / "nodes.log"
    before = len(lines(nodes_log))
    driver = subprocess.Popen(cmd, cwd=TESTS, stderr=subprocess.PIPE, text=True)
    drivers.append(driver)

    # 2. Node B vanishes while its actor is in the middle of a rerank shard (its third request
    # of a shard of 20 or more): its worker processes and its raylet, killed.
    def b_scoring() -> list[str]:
        log = lines(nodes_log)[2 * before:]
        return [pid for node, pid in zip(log[::2], log[1::2]) if node == node_b.node_id]

    wait_for(lambda: len(b_scoring()) >= 3, "node B's actor to score", driver)
    for pid in set(b_scoring()):
        os.kill(int(pid), signal.SIGKILL)
    cluster.remove_node(node_b, allow_graceful=False)
    _, err = driver.communicate(timeout=240)  # before the fix: hung at export (past 150 s)
    assert driver.returncode == 0, err
    assert "was lost" in err  # the retry is said

    assert_same_run(tmp_path / "local", run_dir, FRET_STAGES, manifests=False)
    assert rows_of(run_dir, "export") and len(rows_of(run_dir, "export")) == 12
    made_on = {e["node"] for s in MODEL_STAGES
               for e in shards.load_manifest(run_dir / s)["shards"].values()}
    assert made_on == {node_a.node_id, node_b.node_id}  # Ray node ids, not the host's name
    rerank = shards.load_manifest(run_dir / "rerank")
    retried = {k: e for k, e in rerank["shards"].items() if e.get("retries")}
    assert retried and all(e["node"] == node_a.node_id for e in retried.values())
    assert all(lost["node"] == node_b.node_id for e in retried.values() for lost in e["lost"])
    assert rerank["threads"] == 2  # executor.threads unset: the driver's cores, as locally
    assert shards.load_manifest(tmp_path / "local" / "rerank")["threads"] == 2
    # No answered request sent again: a request is asked twice only if its worker died after
    # the fake answered and before the answer reached the worker's cache (one request at most,
    # with one request per batch), and then its answer is in no cache file.
    answered = lines(logs / "answered.log")
    twice = {k for k in answered if answered.count(k) > 1}
    assert len(twice) <= 1, twice

    # 3. A stage that no live node can hold says so in one line (node A has 2 CPUs).
    big = subprocess.run([*cmd[:-len(sets)], "--run-dir", str(tmp_path / "big"), *sets,
                          "--set", "executor.threads=4"], cwd=TESTS, capture_output=True,
                         text=True, timeout=180)
    assert big.returncode == 1
    assert "no live node of the Ray cluster can hold a worker of 4 CPU" in big.stderr
    assert len([ln for ln in big.stderr.splitlines() if "no live node" in ln]) == 1


def test_resume_with_other_threads_is_refused_in_one_line(tmp_path, capsys):
    args = ["generate", "queries", str(FRET), "--run-dir", str(tmp_path), "--quiet",
            "--set", "llm.backend=nodefake", "--set", "sample.size=4", "--set", "corpus.sources.0.limit=40"]
    for stage in ("corpus", "sample"):
        assert main([args[0], stage, *args[2:]]) == 0
    assert main(args + ["--set", "executor.threads=2"]) == 0
    assert shards.load_manifest(tmp_path / "queries")["threads"] == 2
    assert main(args + ["--set", "executor.threads=2"]) == 0  # the same threads: nothing to redo
    capsys.readouterr()
    assert main(args + ["--set", "executor.threads=1"]) == 2  # settings that do not match the data
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "made with 2 threads per model worker and this command would use 1" in err
    assert "--set executor.threads=2" in err
