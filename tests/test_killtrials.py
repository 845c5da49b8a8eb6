"""kill -9 trials (benchmarks/killtrials.py): real `fret run` processes killed with SIGKILL, then
the same command again; the output must equal an uninterrupted run's, with no row lost or
duplicated and no answered LLM request sent again.

The quick case here: E5 (LLM stages, counted through the fake LLM's request log) killed once at a
timed moment, once right after the backend answered a request (before the request cache
committed it) and once between a shard's rename and its manifest record. The whole campaign
(every pipeline, 10 timed kills each + one aimed kill of each kind, about 25 minutes on 2 free
cores) is the last test, run only with FRET_KILL_CAMPAIGN=1: with it, `.ci/run` would come too
close to CI's 90 minutes. Its figures are in docs/reliability.md.
"""
import os
import shutil
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import killtrials  # noqa: E402


@pytest.fixture(scope="module")
def e5(tmp_path_factory):
    """The E5 campaign with one timed and two aimed kills, and its work folder."""
    work = tmp_path_factory.mktemp("killtrials")
    return killtrials.campaign(["e5"], trials=1, aimed=1, seed=3, work=work, echo=lambda *_: None), work


def test_e5_killed_three_times_resumes_to_the_uninterrupted_output(e5):
    results, _ = e5
    reference = results["pipelines"]["e5"]["reference"]
    assert reference["requests"] > 0  # the backend's log counted something: the zero below is not vacuous
    trials = results["pipelines"]["e5"]["trials"]
    assert [t["kind"] for t in trials] == ["request", "record", "timed"]
    for t in trials:
        assert t["killed"] and t["completed"] and t["reruns"] == [0], t
        assert t["identical"], t["differing"]
        assert (t["rows_lost"], t["rows_duplicated"], t["repeated_requests"]) == (0, 0, 0), t
        assert t["in_flight_resent"] <= 2  # at most the batch in flight (llm.batch_size=2)
        assert t["leftovers"] == [], t["leftovers"]


def _rewrite(path, change) -> None:
    table = pq.read_table(path)
    pq.write_table(change(table), path)


@pytest.mark.parametrize("damage, lost, duplicated", [
    (lambda t: t.slice(1), 1, 0),
    (lambda t: pa.concat_tables([t, t.slice(0, 1)]), 0, 1),
])
def test_the_comparison_sees_a_lost_or_duplicated_row(e5, tmp_path, damage, lost, duplicated):
    """The trials' yardstick itself: a row taken out of (or repeated in) one shard is caught."""
    _, work = e5
    reference, damaged = work / "e5" / "reference", tmp_path / "run"
    shutil.copytree(reference, damaged)
    assert killtrials.compare(reference, damaged).differing == []
    _rewrite(damaged / "examples" / "part-00000.parquet", damage)
    found = killtrials.compare(reference, damaged)
    assert found.differing == ["examples"]
    assert (found.rows_lost, found.rows_duplicated) == (lost, duplicated)


def test_the_backend_log_and_the_request_cache_name_requests_alike(e5):
    """Repeats are counted as logged keys that the cache held at the kill: the two must agree."""
    _, work = e5
    committed = killtrials.committed_keys(work / "e5" / "reference")
    logged = killtrials.read_log(work / "e5" / "reference.log")
    assert committed and set(logged) == committed  # the log and the cache name requests alike


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FRET_KILL_CAMPAIGN") != "1",
                    reason="the whole campaign (~25 min): set FRET_KILL_CAMPAIGN=1")
def test_full_campaign(tmp_path):
    """Every pipeline, 10 timed kills each + one aimed kill of each kind (about 20 CPU minutes)."""
    results = killtrials.campaign(list(killtrials.PIPELINES), trials=10, aimed=1, seed=0, work=tmp_path)
    for row in killtrials.summary(results):
        assert row["completed"] == row["identical"] == row["trials"], row
        assert (row["rows_lost"], row["rows_duplicated"], row["repeated_requests"]) == (0, 0, 0), row
