"""The %%worker widget under a job printing a million lines, beside a plain follower of the same
job from the same run (run as root).

    python bench/widget.py [--lines N]

Figures: the widget's redraws per second (target: about 10 at most), the widget state it would
send to the browser per second, the longest stall of the kernel's event loop while it follows
(what decides whether the notebook stays responsive), and how long the widget takes to reach the
job's end beside a plain `Job.wait` follower (the anchor) and the job's own run time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

from jupyter_worker.client import Client
from jupyter_worker.flags import job_request
from jupyter_worker.jobs import Job, python_code
from jupyter_worker.spec import JobRecord
from jupyter_worker.widgets import JobWidget

sys.path.insert(0, os.path.dirname(__file__))
from executor import Daemon


class CountingWidget(JobWidget):
    """The real widget; each redraw is counted with the size of the state it changes."""

    def __init__(self, *args, **kwargs):
        self.redraws, self.state_bytes = 0, 0
        super().__init__(*args, **kwargs)

    def render(self) -> None:
        super().render()
        self.redraws += 1
        self.state_bytes += sum(len(w.value) for w in (self.header, self.resources, self.chart, self.log))


async def loop_stalls(stop: asyncio.Event, tick_s: float = 0.01) -> float:
    """The longest time the loop was kept from running a 10 ms timer, in ms."""
    worst = 0.0
    while not stop.is_set():
        start = time.perf_counter()
        await asyncio.sleep(tick_s)
        worst = max(worst, time.perf_counter() - start - tick_s)
    return worst * 1000


async def follow_with_widget(socket: str, record: JobRecord) -> tuple[CountingWidget, float, float]:
    stop = asyncio.Event()
    stalls = asyncio.ensure_future(loop_stalls(stop))
    start = time.perf_counter()
    widget = CountingWidget(record, socket)
    await widget.task
    elapsed = time.perf_counter() - start
    stop.set()
    return widget, elapsed, await stalls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    lines = parser.parse_args().lines

    with tempfile.TemporaryDirectory(prefix="jupyter-worker-bench-") as folder:
        os.chmod(folder, 0o755)
        daemon = Daemon(folder)
        try:
            request = job_request(
                python_code(f"for i in range({lines}): print('line', i)"),
                limits={"memory_mb": 512},
                name="million",
                cwd=folder,
            )
            with Client(daemon.socket) as client:
                plain = Job(client.run(request), daemon.socket)
            start = time.perf_counter()
            with open(os.devnull, "w") as sink:
                final = plain.wait(stream=True, stdout=sink, stderr=sink)
            plain_s = time.perf_counter() - start
            job_s = final.metrics["wall_seconds"]
            with Client(daemon.socket) as client:
                record = client.run(request)
            widget, widget_s, stall_ms = asyncio.run(follow_with_widget(daemon.socket, record))
        finally:
            daemon.stop()
    print(f"a job printing {lines:,} lines (python -u, as a %%worker cell runs)")
    print(f"  the job's own run time:                 {job_s:8.2f} s")
    print(f"  anchor: plain follower (Job.wait) done: {plain_s:8.2f} s")
    print(f"  widget reached the end in:              {widget_s:8.2f} s  ({widget_s / plain_s:.2f}x the anchor)")
    print(f"  widget redraws: {widget.redraws} = {widget.redraws / widget_s:.1f}/s (target <= ~10/s)")
    print(
        f"  widget state per second: {widget.state_bytes / widget_s / 1024:.0f} KiB/s; "
        f"log lines kept: {len(widget.lines)}"
    )
    print(f"  longest event-loop stall while following: {stall_ms:.1f} ms")
    assert widget.job.status == "COMPLETED" and widget.lines[-1].endswith(f"line {lines - 1}</span>")


if __name__ == "__main__":
    main()
