"""The widget's pure parts: its lasting form (text/plain and text/html of a job), the chart's
scales and axes, the words for a queued, running and ended job, a cell job's default name."""

from __future__ import annotations

import re

from jupyter_worker.formatting import MIB
from jupyter_worker.magics import cell_name
from jupyter_worker.spec import _NAME_RE, JobRecord
from jupyter_worker.widgets import (
    CHART_POINTS,
    Sample,
    Snapshot,
    chart_svg,
    lasting_bundle,
    nice_top,
    resources_words,
    status_words,
    thinned,
)
from tests.unit.conftest import make_record


def record(**fields) -> JobRecord:
    base = {"id": "1a2b3c4d5e6f", "name": "counting", "command": ["python", "-"], "started_at": 100.0}
    return make_record(**{**base, "limits": {"memory_mb": 256}, "created_at": 100.0, **fields})


def ended(**fields) -> JobRecord:
    return record(
        status="COMPLETED",
        reason="exit",
        exit_code=0,
        finished_at=104.0,
        metrics={"cpu_seconds": 1.5, "memory_peak_bytes": 40 * MIB, "memory_bytes": 1 * MIB},
        **fields,
    )


def test_an_ended_jobs_lasting_form_says_its_ending_peaks_and_log_tail_in_text_and_html():
    samples = [Sample(100 + i, 10.0 * i, i * 10 * MIB) for i in range(5)]
    lines = [("stdout", f"step {i}") for i in range(100)] + [("stderr", "<oops> $x$")]
    bundle = lasting_bundle(Snapshot(ended(), lines=lines, samples=samples, memory_limit_bytes=256 * MIB))
    assert set(bundle) == {"text/plain", "text/html"}
    text = bundle["text/plain"]
    assert text.startswith("job counting 1a2b3c4d: exit code 0 (ran 4.0s)\n")
    assert "CPU time 1.50s, peak 40%; memory peak 40.0 MiB of 256 MiB" in text
    assert "step 99" in text and "step 69" not in text and "71 earlier lines: %worker logs 1a2b3c4d" in text
    page = bundle["text/html"]
    assert "exit code 0" in page and "step 99" in page and "now" not in page
    assert "&lt;oops&gt; &#36;x&#36;" in page and "<oops>" not in page and "mathjax_ignore" in page
    assert "#2e7d32" in page and "<svg" in page


def test_hostile_log_lines_and_names_are_inert_in_both_forms():
    bundle = lasting_bundle(Snapshot(ended(name="n<b>"), lines=[("stdout", "\x1b[2J\u202eevil")]))
    assert "\\x1b[2J\\u202eevil" in bundle["text/plain"] and "\x1b" not in bundle["text/plain"]
    assert "n&lt;b&gt;" in bundle["text/html"] and "\u202e" not in bundle["text/html"]


def test_a_queued_job_says_its_place_and_why_it_waits():
    job = record(status="QUEUED", started_at=None, queue={"position": 2, "reason": "4 of 4 running slots in use"})
    assert status_words(job) == "queued: number 2 in line, waiting because 4 of 4 running slots in use"
    assert "waiting because 4 of 4 running slots in use" in lasting_bundle(Snapshot(job))["text/plain"]


def test_a_running_job_shows_now_and_an_ended_one_its_peaks():
    samples = [Sample(100, 50.0, 30 * MIB), Sample(101, 20.0, 10 * MIB)]
    running = record(metrics={"memory_bytes": 10 * MIB, "memory_peak_bytes": 30 * MIB})
    assert resources_words(running, samples) == "CPU 20%; memory 10.0 MiB of 256 MiB (peak 30.0 MiB)"
    assert resources_words(ended(), samples) == "CPU time 1.50s, peak 50%; memory peak 40.0 MiB of 256 MiB"


def test_the_chart_has_labelled_axes_with_units_fills_the_width_and_starts_at_one_sample():
    assert chart_svg([]) == ""
    one = chart_svg([Sample(100, 12.0, 5 * MIB)], memory_limit_bytes=256 * MIB)
    assert "<circle" in one and 'width="100%"' in one and "viewBox" in one
    svg = chart_svg([Sample(100 + i, 150.0, 100 * MIB) for i in range(90)], 256 * MIB, 200.0)
    labels = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert "CPU % (100 = one core)" in labels and "Memory MiB (limit 256 MiB)" in labels
    assert {"0%", "100%", "200%", "0", "128", "256", "0 s", "1m 29s", "time"} <= set(labels), labels
    assert "stroke-dasharray" in svg  # the limits, dashed
    whole_run = chart_svg([Sample(101, 5.0, MIB), Sample(102, 5.0, MIB)], run=(100.0, 130.0))
    assert ">30s<" in whole_run and ">0 s<" in whole_run  # the time axis spans the run, not only the samples


def test_axis_tops_are_round_and_thinning_keeps_peaks():
    assert [nice_top(v) for v in (0, 0.5, 1, 3, 100, 101, 256, 999)] == [1, 1, 1, 5, 100, 200, 500, 1000]
    samples = [Sample(i, 100.0 if i == 777 else 1.0, i) for i in range(1200)]
    thin = thinned(samples)
    assert len(thin) <= CHART_POINTS and max(s.cpu_percent for s in thin) == 100.0
    assert thin[-1].memory_bytes == 1199


def test_cell_jobs_are_named_by_notebook_and_first_line_within_the_name_rule():
    assert cell_name("/home/u/work/demo.ipynb", "\nimport numpy; print(numpy.ones(3))\n") == (
        "demo.ipynb - import numpy print numpy.ones 3"
    )
    assert cell_name(None, "sleep 10 # nap") == "sleep 10 nap"
    assert cell_name("", "  \n") is None
    long = cell_name("x.ipynb", "a" * 500)
    assert long is not None and len(long) == 100 and _NAME_RE.fullmatch(long)
    assert _NAME_RE.fullmatch(cell_name("$x$/ü.ipynb", "#!/bin/sh -e") or "")
