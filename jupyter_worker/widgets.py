"""The live job widget under a %%worker cell: status, elapsed time, resources, log, Stop.

Updates come from one asyncio task on the kernel's event loop following the job through the
executor; they are gathered and drawn at most UPDATES_PER_S times a second (the job's display
output too, a batch at a time: DisplayOutputs), and the log shown is
bounded (the last LOG_LINES lines, "Show all" for the rest), so a job printing millions of lines
never floods the notebook.

The job's name, status words and errors are another user's text as far as this widget knows: they
are shown through formatting.html_text (inert, escaped, `$` spelled `&#36;`) inside html_block, the
class MathJax skips, as ipywidgets' HTML view typesets what it shows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ipywidgets as widgets

from .client import AsyncClient
from .errors import WorkerError
from .formatting import MIB, elapsed, html_block, html_text
from .jobs import Job
from .richoutput import DisplaySink
from .spec import JobRecord

UPDATES_PER_S = 10
LOG_LINES = 200
CHART_POINTS = 60
COLOURS = {
    "QUEUED": "#757575",
    "RUNNING": "#1976d2",
    "COMPLETED": "#2e7d32",
    "FAILED": "#c62828",
    "STOPPED": "#ef6c00",
}


class DisplayOutputs(widgets.VBox):
    """A job's display output under its widget: each batch (gathered, drawn at most UPDATES_PER_S
    times a second) is its own Output widget, so each item goes to the front end once (setting one
    Output's outputs would send them all again each time) and the saved notebook keeps them all in
    its widget state. Bounded by the sink (richoutput: MAX_ITEMS items, MAX_TOTAL_BYTES bytes)."""

    def __init__(self) -> None:
        super().__init__([])
        self.pending: list[dict[str, Any]] = []

    def add(self, bundle: dict[str, str]) -> None:
        self.pending.append({"output_type": "display_data", "data": bundle, "metadata": {}})

    def flush(self) -> None:
        if self.pending:
            batch = widgets.Output()
            batch.outputs = tuple(self.pending)
            self.pending = []
            self.children = (*self.children, batch)

    @property
    def outputs(self) -> tuple[dict[str, Any], ...]:
        """Every display output shown so far, in order."""
        return tuple(o for child in self.children for o in child.outputs)


class JobWidget:
    """Shows one job (its JobRecord, kept current in `job`) as it runs; `box` is the ipywidget to
    display. Its display stream's output (sanitized) goes to DisplayOutputs at the bottom; when
    the job has ended, what --artifacts copied is said under the log, and on_end is awaited (a
    cell's --out values)."""

    def __init__(
        self,
        job: JobRecord,
        socket: str | None = None,
        on_end: Callable[[JobWidget], Awaitable[None]] | None = None,
    ):
        self.job = job
        self.socket = socket
        self.on_end = on_end
        self.lines: list[str] = []
        self.partial = ""
        self.samples: list[tuple[float, float]] = []
        self.header = widgets.HTML()
        self.resources = widgets.HTML()
        self.chart = widgets.HTML()
        self.log = widgets.HTML(layout=widgets.Layout(max_height="300px", overflow="auto"))
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop")
        self.show_all = widgets.Button(description="Show all", layout=widgets.Layout(display="none"))
        self.stop_button.on_click(lambda _: asyncio.ensure_future(self.stop()))
        self.show_all.on_click(lambda _: asyncio.ensure_future(self.load_all()))
        controls = widgets.HBox([self.stop_button, self.show_all])
        # The job's display output (sanitized, bounded: richoutput.py), under the widget as it comes.
        self.output = DisplayOutputs()
        self.sink = DisplaySink(self.output.add)
        self.box = widgets.VBox([self.header, self.resources, self.chart, self.log, controls, self.output])
        self.finished = False
        self._last_cpu: tuple[float, float] | None = None
        self.render()
        self.task = asyncio.ensure_future(self.follow())

    async def follow(self) -> None:
        next_draw = 0.0
        try:
            async for event in AsyncClient(self.socket).follow(self.job.id):
                self.take(event)
                if time.monotonic() >= next_draw:
                    self.render()
                    next_draw = time.monotonic() + 1 / UPDATES_PER_S
        except WorkerError as exc:
            self.partial += f"\n[jupyter-worker: {exc}]"
        self.finished = True
        self.notice(f"artifacts: {note}" if (note := Job(self.job).artifacts_note()) else "")
        self.render()
        if self.on_end is not None:
            await self.on_end(self)
            self.render()

    def notice(self, text: str) -> None:
        """A line of jupyter-worker's own under the job's log (e.g. which values came back)."""
        if text:
            self.partial += f"\n[jupyter-worker: {text}]"

    def take(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "log" and event["stream"] == "display":
            self.sink.feed(event["data"])
        elif kind == "log":
            text = self.partial + event["data"].decode(errors="replace")
            *complete, self.partial = text.split("\n")
            css = "color: var(--jp-error-color1, #c62828)" if event["stream"] != "stdout" else ""
            self.lines += [f'<span style="{css}">{html.escape(line)}</span>' for line in complete]
            if len(self.lines) > LOG_LINES:
                self.lines = self.lines[-LOG_LINES:]
                self.show_all.layout.display = ""
        elif kind in ("status", "end"):
            self.job = event["job"]
        elif kind == "metrics":
            self.job = dataclasses.replace(self.job, metrics=event["metrics"])
            self._sample(event["metrics"])

    def _sample(self, metrics: dict[str, Any]) -> None:
        now = metrics.get("wall_seconds", 0.0)
        cpu = metrics.get("cpu_seconds", 0.0)
        percent = 0.0
        if self._last_cpu and now > self._last_cpu[0]:
            percent = 100 * (cpu - self._last_cpu[1]) / (now - self._last_cpu[0])
        self._last_cpu = (now, cpu)
        self.samples = [*self.samples, (percent, metrics.get("memory_bytes", 0) / MIB)][-CHART_POINTS:]

    def render(self) -> None:
        job = self.job
        status = job.status.value
        ended = job.finished_at
        badge = (
            f'<span style="background:{COLOURS[status]};color:white;border-radius:4px;padding:1px 6px">'
            f"{html_text(status.lower() if not ended else job.ending)}</span>"
        )
        self.header.value = html_block(
            f"<b>{html_text(job.name)}</b> <code>{html_text(job.id[:8])}</code> {badge} {elapsed(job) or 0:.1f} s"
        )
        limit = job.limits.memory_mb
        self.resources.value = self._resources(job.metrics, limit, bool(ended))
        self.chart.value = self._chart(limit)
        tail = html.escape(self.partial)
        self.log.value = html_block(
            "<pre style='margin:0'>" + "\n".join(self.lines) + ("\n" + tail if tail else "") + "</pre>"
        )
        self.stop_button.disabled = bool(ended) or self.finished
        self.output.flush()

    def _resources(self, metrics: dict[str, Any], limit: int | None, ended: bool) -> str:
        """While it runs: CPU % and memory now; once ended: CPU time and the peak."""
        of_limit = f" / {limit} MiB" if limit else " MiB"
        peak = f"{metrics.get('memory_peak_bytes', 0) / MIB:.0f}"
        if ended:
            return f"CPU time {metrics.get('cpu_seconds', 0):.2f} s &nbsp; memory peak {peak}{of_limit}"
        cpu = f"{self.samples[-1][0]:.0f}%" if self.samples else "-"
        memory = f"{metrics.get('memory_bytes', 0) / MIB:.0f}{of_limit}"
        return f"CPU {cpu} &nbsp; memory {memory} &nbsp; peak {peak} MiB"

    def _chart(self, memory_limit: int | None) -> str:
        if len(self.samples) < 2:
            return ""
        width, height = 240, 40
        step = width / (CHART_POINTS - 1)
        top_cpu = max(100.0, *(s[0] for s in self.samples))
        top_memory = float(memory_limit or max(1.0, *(s[1] for s in self.samples)))

        def line(values: list[float], top: float, colour: str) -> str:
            points = " ".join(f"{i * step:.1f},{height - height * v / top:.1f}" for i, v in enumerate(values))
            return f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>'

        cpu_line = line([s[0] for s in self.samples], top_cpu, "#1976d2")
        memory_line = line([s[1] for s in self.samples], top_memory, "#ef6c00")
        return (
            f'<svg width="{width}" height="{height}" role="img" aria-label="CPU (blue) and memory (orange)">'
            f"{cpu_line}{memory_line}</svg>"
        )

    async def stop(self) -> None:
        self.stop_button.disabled = True
        try:
            async with AsyncClient(self.socket) as client:
                self.job = await client.stop(self.job.id)
        except WorkerError as exc:
            self.partial += f"\n[jupyter-worker: {exc}]"
        self.render()

    async def load_all(self) -> None:
        """The whole log, for when the bounded view is not enough."""
        text, offset = [], 0
        async with AsyncClient(self.socket) as client:
            while True:
                chunks, offset, _ = await client.logs(self.job.id, offset)
                if not chunks:
                    break
                text += [c.data.decode(errors="replace") for c in chunks if c.stream != "display"]
        self.log.value = html_block("<pre style='margin:0'>" + html.escape("".join(text)) + "</pre>")
        self.show_all.layout.display = "none"
