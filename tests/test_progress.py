import io

from pipeline.core.progress import progress


def test_progress_yields_everything_and_reports_every_tenth_in_a_log():
    stream = io.StringIO()
    assert list(progress(range(50), 50, "[x]", stream=stream)) == list(range(50))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("[x] 5/50 (10%") and lines[-1].startswith("[x] 50/50 (100%")
    assert all(", eta " in line and line.endswith(" s)") for line in lines[:-1])
    assert "eta" not in lines[-1]  # done: nothing left to wait for


def test_a_slow_loop_shows_its_rate_with_a_decimal(monkeypatch):
    clock = iter([0.0, 4.0, 8.0])  # start, then one item every 4 s: 0.25/s
    monkeypatch.setattr("pipeline.core.progress.time.time", lambda: next(clock))
    stream = io.StringIO()
    list(progress(range(2), 2, "[x]", stream=stream))
    assert stream.getvalue().splitlines()[0] == "[x] 1/2 (50%, 0.2/s, eta 4 s)"


def test_progress_of_nothing_prints_nothing():
    stream = io.StringIO()
    assert list(progress([], 0, "[x]", stream=stream)) == []
    assert stream.getvalue() == ""
