"""`fret report --html`: a self-contained page whose plots load in headless Chromium."""
import shutil
import subprocess

import pytest

import fakes  # noqa: F401  (registers the fake backend)
from conftest import ROOT
from fret.cli import main
from fret.core.runner import open_run, run_pipeline
from fret.html_report import collect, score_series

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("report")
    run_pipeline(open_run(ROOT / "pipelines" / "fret.yaml", run_dir, [
        "llm.backend=fake", "corpus.sources.0.limit=80", "sample.size=6", "mine.top_n=4",
        "llm.extra={malformed: war}"]), progress=False)
    return run_dir


def test_collect_reads_scores_of_positives_and_negatives(run_dir):
    data = collect(run_dir)
    assert data["stages"]["export"] == len(data["unified"]) > 0
    series = score_series(data["rerank"], "rrf_scores")
    assert len(series["positives"]) == len(data["rerank"])
    assert min(series["positives"]) >= max(series["negatives"])  # RRF picks the positive


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_page_and_plots_load_in_chromium(run_dir, tmp_path, capsys):
    page = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--html", str(page)]) == 0
    assert "<img" in page.read_text() and "http" not in page.read_text().split("<body>")[1][:2000]
    dom = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=10000", "--dump-dom", page.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    n_plots = page.read_text().count("<img")
    assert n_plots >= 7  # rows, task types, languages, lengths, QL, RC, RRF (+ rejects)
    assert f"{n_plots} of {n_plots} plots loaded" in dom
    assert "Sample rows" in dom and "positive differs from the seed passage" in dom
