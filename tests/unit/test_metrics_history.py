"""The metric history's arithmetic: CPU from counters, merging neighbours, the bound, its file."""

from __future__ import annotations

import os

from jupyter_worker.executor import history
from jupyter_worker.executor.history import MAX_POINTS, Point, Series, bounded, halved, load
from jupyter_worker.spec import Usage


def usage(second: float, cpu_seconds: float, memory: int = 1 << 20, pids: int = 1) -> Usage:
    return Usage(cpu_seconds=cpu_seconds, wall_seconds=second, memory_bytes=memory, pids=pids)


def test_cpu_is_the_share_of_one_core_since_the_last_report_and_the_first_since_the_start(tmp_path):
    series = Series(str(tmp_path / "metrics"))
    series.add(1000.0, usage(2.0, 1.0))  # half a core on average since it began
    series.add(1001.0, usage(3.0, 3.0))  # two cores busy over the last second
    series.add(1002.0, usage(4.0, 3.0))  # idle
    assert [p["cpu_percent"] for p in series.samples()] == [50.0, 200.0, 0.0]
    assert [p["t"] for p in series.samples()] == [1000.0, 1001.0, 1002.0]


def test_merged_neighbours_start_at_the_first_average_cpu_and_keep_the_peaks():
    merged = Point(10.0, 100.0, 5 << 20, 3).merged(Point(11.0, 0.0, 9 << 20, 2))
    assert merged == Point(10.0, 50.0, 9 << 20, 3, span=2)
    wider = merged.merged(Point(12.0, 20.0, 1 << 20, 1))
    assert round(wider.cpu_percent, 6) == round((50.0 * 2 + 20.0) / 3, 6) and wider.span == 3


def test_halving_merges_pairs_and_keeps_an_odd_last_point():
    points = [Point(float(i), float(i), i, i) for i in range(5)]
    assert [(p.t, p.span) for p in halved(points)] == [(0.0, 2), (2.0, 2), (4.0, 1)]
    assert len(bounded([Point(float(i), 0.0, 0, 0) for i in range(5000)])) <= MAX_POINTS


def test_a_long_job_keeps_at_most_the_bound_at_an_even_resolution(tmp_path):
    series = Series(str(tmp_path / "metrics"))
    for second in range(1, 10_001):
        series.add(float(second), usage(float(second), second * 0.5, memory=second))
    points = series.whole()
    assert len(points) < MAX_POINTS and series.count == len(points) and len(series.fresh) < MAX_POINTS
    assert {p.span for p in points[:-1]} == {series.stride} and series.stride == 16
    assert points[0].t == 1.0 and abs(points[0].cpu_percent - 50.0) < 1e-9
    assert max(p.memory_bytes for p in points) >= 10_000 - series.stride  # the peak is never smoothed away
    assert len(series.samples()) <= MAX_POINTS


def test_the_file_holds_what_was_persisted_and_a_halving_rewrites_it(tmp_path):
    path = str(tmp_path / "metrics")
    series = Series(path)
    for second in range(1, 11):
        series.add(float(second), usage(float(second), 0.0))
    series.persist()
    assert len(load(path)) == 10
    for second in range(11, MAX_POINTS + 5):
        series.add(float(second), usage(float(second), 0.0))
    series.persist(final=True)
    kept = load(path)
    assert [p.to_dict() for p in kept] == series.samples()
    assert len(kept) < MAX_POINTS and not os.path.exists(path + ".new")


def test_a_resumed_series_goes_on_from_its_file_at_its_resolution(tmp_path):
    path = tmp_path / "metrics"
    path.write_text("1.000 10.00 100 1 4\n5.000 20.00 200 2 4\n9.000 5.00 300 1 2\n")
    series = Series.resume(str(tmp_path))
    assert series.stride == 4 and series.count == 3 and series.fresh == []
    for second in range(11, 15):
        series.add(float(second), usage(float(second), 0.0))
    assert len(series.whole()) == 4 and series.whole()[-1].span == 4 and len(series.fresh) == 1


def test_a_torn_last_line_or_a_missing_file_is_no_error(tmp_path):
    path = tmp_path / "metrics"
    assert load(str(path)) == []
    path.write_text("1.000 10.00 100 1 1\n2.000 1")
    assert load(str(path)) == [Point(1.0, 10.0, 100, 1, 1)]


def test_the_reply_gives_limits_in_bytes_and_percent():
    assert history.reply([], 512, 150) == {"samples": [], "memory_limit_bytes": 512 << 20, "cpu_limit_percent": 150.0}
    assert history.reply([], None, None) == {"samples": [], "memory_limit_bytes": None, "cpu_limit_percent": None}


def test_a_running_job_keeps_in_memory_only_the_points_its_file_lacks(tmp_path):
    series = Series(str(tmp_path / "metrics"))
    for second in range(1, 51):
        series.add(float(second), usage(float(second), 0.0))
    assert len(series.fresh) == 50
    series.persist()
    assert series.fresh == [] and len(series.samples()) == 50


def test_a_history_that_cannot_be_written_is_dropped_not_kept_in_memory(tmp_path):
    series = Series(str(tmp_path / "gone" / "metrics"))  # its folder does not exist
    for second in range(1, MAX_POINTS + 10):
        series.add(float(second), usage(float(second), 0.0))
        if second % 10 == 0:
            series.persist()
    assert len(series.fresh) < 10 and series.count < 10
