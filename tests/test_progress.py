"""Progress with the time left: periodic lines in a log, a bar on a terminal (fret.core.progress)."""
import io
import re

from fret.core.progress import Progress, clock


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_a_first_line_periodic_lines_and_a_last_one(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("fret.core.progress.time.monotonic", lambda: now[0])
    log = io.StringIO()
    bar = Progress(14, "fret train", unit="step", every=30, stream=log)
    for _ in range(14):
        now[0] += 10  # 10 s a step
        bar.update(1, note="loss 0.5")
    bar.close()
    lines = log.getvalue().splitlines()
    # after the first step (its estimate early), then every 30 s, and at the end
    assert lines[0] == "fret train: step 1/14 (7%), 10s elapsed, about 2m10s left; loss 0.5"
    assert len(lines) == 6 and lines[-1].startswith("fret train: step 14/14 (100%), 2m20s elapsed, about 0s left")
    assert all(re.search(r"about \S+ left", line) for line in lines)


def test_a_terminal_gets_a_bar_and_no_lines():
    term = Terminal()
    with Progress(3, "fret eval --rerank: scoring", unit="pair", stream=term) as bar:
        bar.update(3)
    assert "scoring" in term.getvalue() and "\n" not in term.getvalue().strip("\r\n ")


def test_resumed_work_estimates_from_this_process_only(monkeypatch):
    now = [0.0]
    monkeypatch.setattr("fret.core.progress.time.monotonic", lambda: now[0])
    bar = Progress(100, "x", initial=90, stream=io.StringIO())
    assert bar.left() is None
    now[0] = 5.0
    bar.update(5)
    assert bar.left() == 5.0  # 5 s for 5 steps, 5 steps left


def test_clock():
    assert [clock(s) for s in (0.4, 59.6, 70, 3725)] == ["0s", "1m00s", "1m10s", "1h02m"]
