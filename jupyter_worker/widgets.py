"""The live job widget under a %%worker cell (or `%worker attach ID`): status, elapsed time,
resources and their chart, the log, Stop; and its lasting form, what the notebook keeps.

Updates come from one asyncio task on the kernel's event loop following the job through the
executor; they are gathered and drawn at most UPDATES_PER_S times a second (the job's display
output too, a batch at a time: DisplayOutputs), and the log shown is bounded (the last LOG_LINES
lines, "Show all" for the rest), so a job printing millions of lines never floods the notebook.

Output that lasts: the widget is displayed with a display_id in a bundle that also holds a
text/plain and a text/html form of the job (lasting_bundle: name, id, status or ending in words,
resources - peaks once ended -, the chart, the log's last lines, its display output), updated at
each change of state. JupyterLab's widget renderer draws "Error displaying widget: model not found"
for a widget view whose model is gone (a restarted kernel, a reopened notebook), never the other
forms of the bundle; so when the job has ended the output is replaced by the lasting forms alone,
which every viewer (JupyterLab without a kernel, nbviewer, GitHub, nbconvert) shows as they are.

The job's name, status words, log and errors are another user's text as far as this widget knows:
they are shown through formatting.inert / html_text (escaped, `$` spelled `&#36;`) inside
html_block, the class MathJax skips, as ipywidgets' HTML view typesets what it shows.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import html
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import ipywidgets as widgets
from IPython.display import DisplayHandle, display

from .client import AsyncClient
from .errors import WorkerError
from .formatting import MIB, bytes_words, elapsed, html_block, html_text, inert, seconds
from .jobs import Job
from .richoutput import DisplaySink
from .spec import JobRecord, JobStatus

UPDATES_PER_S = 10
LOG_LINES = 200
LASTING_LINES = 30  # the log's last lines in the lasting form
LASTING_EVERY_S = 30.0  # while it runs, the lasting form is refreshed at most this often (and at each change of state)
CHART_POINTS = 300  # at most this many points drawn a line (the history holds up to ~1200)
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
COLOURS = {
    "QUEUED": "#757575",
    "RUNNING": "#1976d2",
    "COMPLETED": "#2e7d32",
    "FAILED": "#c62828",
    "STOPPED": "#ef6c00",
}
CPU_COLOUR, MEMORY_COLOUR = "#1976d2", "#ef6c00"
# The log box follows the tail by itself: a scroll container laid out bottom-up stays anchored at
# its bottom as lines come, and where the user scrolled up it stays there (no JavaScript needed).
LOG_LAYOUT = {"display": "flex", "flex_flow": "column-reverse", "overflow": "auto", "max_height": "300px"}


@dataclasses.dataclass
class Sample:
    """One point of the chart: unix seconds, CPU percent of one core, memory bytes."""

    t: float
    cpu_percent: float
    memory_bytes: float


def nice_top(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above value (an axis' top), at least 1."""
    if value <= 1:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def thinned(samples: Sequence[Sample], points: int = CHART_POINTS) -> list[Sample]:
    """At most points samples, neighbours merged keeping each group's highest values (a peak is
    never drawn away)."""
    if len(samples) <= points:
        return list(samples)
    size = math.ceil(len(samples) / points)
    groups = [samples[i : i + size] for i in range(0, len(samples), size)]
    return [Sample(g[0].t, max(s.cpu_percent for s in g), max(s.memory_bytes for s in g)) for g in groups]


def _panel(
    x0: float,
    title: str,
    points: list[tuple[float, float]],
    *,
    top: float,
    ticks: Callable[[float], str],
    span: float,
    colour: str,
    limit: float | None = None,
    limit_words: str = "",
) -> str:
    """One chart panel of the SVG: axes, ticks labelled with units, the line, a dashed limit."""
    left, width, y0, height = x0 + 52, 300.0, 22.0, 100.0
    bottom = y0 + height

    def x(t: float) -> float:
        return left + (width * t / span if span > 0 else 0)

    def y(v: float) -> float:
        return bottom - height * min(v, top) / top

    parts = [
        f'<text x="{x0 + 4}" y="14" font-size="12" font-weight="bold" fill="currentColor">{html_text(title)}</text>',
        f'<line x1="{left}" y1="{y0}" x2="{left}" y2="{bottom}" stroke="#9e9e9e"/>',
        f'<line x1="{left}" y1="{bottom}" x2="{left + width}" y2="{bottom}" stroke="#9e9e9e"/>',
    ]
    for value in (0.0, top / 2, top):
        parts.append(
            f'<text x="{left - 4}" y="{y(value) + 4:.1f}" font-size="10" text-anchor="end" '
            f'fill="currentColor">{html_text(ticks(value))}</text>'
        )
    parts += [
        f'<text x="{left}" y="{bottom + 14}" font-size="10" fill="currentColor">0 s</text>',
        f'<text x="{left + width}" y="{bottom + 14}" font-size="10" text-anchor="end" '
        f'fill="currentColor">{html_text(seconds(span, 0))}</text>',
        f'<text x="{left + width / 2}" y="{bottom + 14}" font-size="10" text-anchor="middle" '
        f'fill="currentColor">time</text>',
    ]
    if limit:
        parts.append(
            f'<line x1="{left}" y1="{y(limit):.1f}" x2="{left + width}" y2="{y(limit):.1f}" stroke="{colour}" '
            f'stroke-dasharray="4 3" opacity="0.7"><title>{html_text(limit_words)}</title></line>'
        )
    if len(points) == 1:
        t, v = points[0]
        parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>')
    elif points:
        line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in points)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{line}"/>')
    return "".join(parts)


def chart_svg(
    samples: Sequence[Sample],
    memory_limit_bytes: float | None = None,
    cpu_limit_percent: float | None = None,
    run: tuple[float | None, float | None] = (None, None),
) -> str:
    """The job's CPU (% of one core) and memory (MiB, against its limit) over its run (started,
    finished: the time axis spans it where given), from its first sample, as an SVG as wide as the
    cell (viewBox, width 100%); "" with no sample yet."""
    if not samples:
        return ""
    drawn = thinned(samples)
    start = min(drawn[0].t, run[0] or drawn[0].t)
    span = max(drawn[-1].t, run[1] or 0.0) - start
    cpu_top = nice_top(max(100.0, cpu_limit_percent or 0.0, *(s.cpu_percent for s in drawn)))
    memory_peak = max(s.memory_bytes for s in drawn)
    # memory against its limit: the limit is the axis' top (the peak's round figure without one)
    memory_top = (
        memory_limit_bytes
        if memory_limit_bytes and memory_peak <= memory_limit_bytes
        else nice_top(memory_peak / MIB) * MIB
    )
    memory_title = "Memory MiB" + (f" (limit {memory_limit_bytes / MIB:.0f} MiB)" if memory_limit_bytes else "")
    series = (  # title, sample field, axis top, tick format, unit, colour, limit
        ("CPU % (100 = one core)", "cpu_percent", cpu_top, "{:.0f}%", 1, CPU_COLOUR, cpu_limit_percent),
        (memory_title, "memory_bytes", memory_top, "{:.0f}", MIB, MEMORY_COLOUR, memory_limit_bytes),
    )
    panels = "".join(
        _panel(
            370 * i,
            title,
            [(s.t - start, getattr(s, value)) for s in drawn],
            top=top,
            ticks=lambda v, words=words, unit=unit: words.format(v / unit),
            span=span,
            colour=colour,
            limit=limit,
            limit_words=f"limit {words.format((limit or 0) / unit)}",
        )
        for i, (title, value, top, words, unit, colour, limit) in enumerate(series)
    )
    return (
        '<svg viewBox="0 0 740 142" width="100%" style="max-width:1100px" role="img" '
        'aria-label="CPU and memory over the job\'s run" xmlns="http://www.w3.org/2000/svg">'
        f"{panels}</svg>"
    )


def queue_words(job: JobRecord) -> str:
    """Why a queued job waits and where it is in line, in words ("" when not queued)."""
    if job.status is not JobStatus.QUEUED:
        return ""
    queue = job.queue or {}
    position, reason = queue.get("position"), queue.get("reason")
    words = "queued" + (f": number {position} in line" if position else "")
    return words + (f", waiting because {inert(reason)}" if reason else "")


def status_words(job: JobRecord) -> str:
    """The job's state for a reader: its ending once ended, else queued (place, reason) or running."""
    if job.finished_at:
        return inert(job.ending)
    return queue_words(job) or job.status.value.lower()


def resources_words(job: JobRecord, samples: Sequence[Sample]) -> str:
    """While it runs: CPU % and memory now (and the peak); once ended: CPU time and the peaks."""
    metrics = job.metrics or {}
    limit = job.limits.memory_mb
    of_limit = f" of {limit} MiB" if limit else ""
    peak = max([metrics.get("memory_peak_bytes") or 0, *(s.memory_bytes for s in samples)])
    if job.finished_at:
        if not metrics and not samples:
            return "no resources used" if not job.started_at else ""
        cpu_peak = f", peak {max(s.cpu_percent for s in samples):.0f}%" if samples else ""
        return (
            f"CPU time {seconds(metrics.get('cpu_seconds', 0.0), 2)}{cpu_peak}; "
            f"memory peak {bytes_words(peak)}{of_limit}"
        )
    if job.status is JobStatus.QUEUED:
        return ""
    cpu = f"{samples[-1].cpu_percent:.0f}%" if samples else "-"
    now = metrics.get("memory_bytes", samples[-1].memory_bytes if samples else 0)
    return f"CPU {cpu}; memory {bytes_words(now)}{of_limit} (peak {bytes_words(peak)})"


@dataclasses.dataclass
class Snapshot:
    """What the lasting form shows: the job, its log (stream, line) pairs, chart samples, the
    chart's limits, its display output and notes of jupyter-worker's own."""

    job: JobRecord
    lines: Sequence[tuple[str, str]] = ()
    samples: Sequence[Sample] = ()
    memory_limit_bytes: float | None = None
    cpu_limit_percent: float | None = None
    displays: Sequence[dict[str, Any]] = ()
    notes: Sequence[str] = ()
    log_lines: int = 0  # how many lines the whole log has (when more than shown)


def _log_html(line: str) -> str:
    return html.escape(inert(line, keep="\t\n")).replace("$", "&#36;")


def _display_html(bundle: dict[str, Any]) -> str:
    """A display item (already sanitized by richoutput) as HTML: its image, its HTML, or its text."""
    for mime in ("image/png", "image/jpeg"):
        if isinstance(bundle.get(mime), str):
            data = base64.b64encode(base64.b64decode(bundle[mime])).decode()  # only base64 gets in
            return f'<img src="data:{mime};base64,{data}" style="max-width:100%">'
    if isinstance(bundle.get("text/html"), str):
        return bundle["text/html"]
    return f"<pre>{_log_html(str(bundle.get('text/plain', '')))}</pre>"


def lasting_bundle(snap: Snapshot) -> dict[str, str]:
    """The job as text/plain and text/html, for viewers without its widget (docs/magics.md)."""
    job = snap.job
    took = elapsed(job)
    head = f"job {inert(job.name)} {job.id[:8]}: {status_words(job)}" + (
        f" (ran {seconds(took)})" if took is not None and job.finished_at else ""
    )
    resources = resources_words(job, snap.samples)
    tail = list(snap.lines)[-LASTING_LINES:]
    earlier = max(snap.log_lines, len(snap.lines)) - len(tail)
    more = f"{earlier} earlier lines: %worker logs {job.id[:8]}" if earlier > 0 else ""
    text = [head, *([resources] if resources else [])]
    if tail:
        last = f"last {len(tail)} lines" if len(tail) > 1 else "last line"
        text += [f"--- the log's {last}{f' ({more})' if more else ''} ---"]
        text += [inert(line, keep="\t") for _, line in tail]
    text += [f"[jupyter-worker: {inert(note)}]" for note in snap.notes]
    if snap.displays:
        text.append(f"[{len(snap.displays)} display output{'s' if len(snap.displays) != 1 else ''}]")
    colour = COLOURS[job.status.value]
    badge = (
        f'<span style="background:{colour};color:white;border-radius:4px;padding:1px 6px">'
        f"{html_text(status_words(job))}</span>"
    )
    log = "\n".join(
        f'<span style="color:var(--jp-error-color1,#c62828)">{_log_html(line)}</span>'
        if stream != "stdout"
        else _log_html(line)
        for stream, line in tail
    )
    notes = "".join(f"<div><i>jupyter-worker: {html_text(note)}</i></div>" for note in snap.notes)
    parts = [
        f"<div><b>{html_text(job.name)}</b> <code>{html_text(job.id[:8])}</code> {badge}"
        + (f" {seconds(took)}" if took is not None else "")
        + "</div>",
        f"<div>{html_text(resources)}</div>" if resources else "",
        chart_svg(snap.samples, snap.memory_limit_bytes, snap.cpu_limit_percent, (job.started_at, job.finished_at)),
        f"<div><small>{html_text(more)}</small></div>" if more else "",
        f'<pre style="margin:0">{log}</pre>' if tail else "",  # a short tail, whole (no scroll box to place)
        notes,
        "".join(_display_html(item) for item in snap.displays),
    ]
    # the class names the job for the panel (src/index.ts: a job on screen gets no notification)
    page = f'<div class="jw-job-{html_text(job.id)}">{"".join(parts)}</div>'
    return {"text/plain": "\n".join(text) + "\n", "text/html": html_block(page)}


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
    """Shows one job (its JobRecord, kept current in `job`) as it runs; `show()` displays it (with
    its lasting form, see the module's docstring). Its display stream's output (sanitized) goes to
    DisplayOutputs at the bottom; when the job has ended, what --artifacts copied is said under the
    log, and on_end is awaited (a cell's --out values). `previous`: a job an earlier run of the same
    cell started that still runs, named with a Stop button of its own."""

    def __init__(
        self,
        job: JobRecord,
        socket: str | None = None,
        on_end: Callable[[JobWidget], Awaitable[None]] | None = None,
        previous: JobRecord | None = None,
    ):
        self.job = job
        self.socket = socket
        self.on_end = on_end
        self.lines: list[tuple[str, str]] = []  # (stream, line), the last LOG_LINES
        self.line_count = 0
        self.partial = ""
        self.notes: list[str] = []
        self.samples: list[Sample] = []
        self.memory_limit_bytes: float | None = job.limits.memory_mb * MIB if job.limits.memory_mb else None
        self.cpu_limit_percent: float | None = None
        self.handle: DisplayHandle | None = None
        self.header = widgets.HTML()
        self.resources = widgets.HTML()
        self.chart = widgets.HTML(layout=widgets.Layout(width="100%"))
        self.log = widgets.HTML(layout=widgets.Layout(**LOG_LAYOUT))
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop")
        self.show_all = widgets.Button(description="Show all", layout=widgets.Layout(display="none"))
        self.stop_button.on_click(lambda _: asyncio.ensure_future(self.stop()))
        self.show_all.on_click(lambda _: asyncio.ensure_future(self.load_all()))
        controls = [self.stop_button, self.show_all]
        if previous is not None:
            controls += self._previous(previous)
        # The job's display output (sanitized, bounded: richoutput.py), under the widget as it comes.
        self.output = DisplayOutputs()
        self.sink = DisplaySink(self.output.add)
        self.box = widgets.VBox(
            [self.header, self.resources, self.chart, self.log, widgets.HBox(controls), self.output],
            layout=widgets.Layout(width="100%"),
        )
        self.box.add_class(f"jw-job-{job.id}")  # the panel's sign of a job on screen (src/index.ts)
        self.finished = False
        self._last_cpu: tuple[float, float] | None = None
        self._lasting_at = 0.0
        self._lasting_state: tuple[Any, ...] = ()
        self.render()
        self.task = asyncio.ensure_future(self.follow())

    def _previous(self, previous: JobRecord) -> list[widgets.Widget]:
        """The earlier run of this cell, still running: named, with its own Stop."""
        words = widgets.HTML(
            html_block(f"an earlier run of this cell, job <code>{html_text(previous.id[:8])}</code>, is still running")
        )
        button = widgets.Button(description=f"Stop {previous.id[:8]}", icon="stop")

        async def stop_previous() -> None:
            button.disabled = True
            try:
                async with AsyncClient(self.socket) as client:
                    record = await client.stop(previous.id)
                said = html_text(status_words(record))
                words.value = html_block(f"the earlier run's job <code>{html_text(previous.id[:8])}</code>: {said}")
            except WorkerError as exc:
                words.value = html_block(html_text(str(exc)))

        button.on_click(lambda _: asyncio.ensure_future(stop_previous()))
        return [words, button]

    # ---- its output in the notebook: the widget, and the forms that last

    def snapshot(self) -> Snapshot:
        lines = self.lines + ([("stdout", self.partial)] if self.partial else [])
        return Snapshot(
            job=self.job,
            lines=lines,
            samples=self.samples,
            memory_limit_bytes=self.memory_limit_bytes,
            cpu_limit_percent=self.cpu_limit_percent,
            displays=[o["data"] for o in self.output.outputs],
            notes=self.notes,
            log_lines=self.line_count + (1 if self.partial else 0),
        )

    def bundle(self) -> dict[str, Any]:
        """What the cell's output holds: while the job can change, its widget view and the lasting
        forms; once it has ended, the lasting forms alone (what every viewer can draw)."""
        lasting = lasting_bundle(self.snapshot())
        if self.finished:
            return lasting
        view = {"model_id": self.box.model_id, "version_major": 2, "version_minor": 0}
        return {WIDGET_VIEW: view, **lasting}

    def show(self) -> JobWidget:
        """Display the widget in the running cell's output (a display_id it keeps updating)."""
        self.handle = display(self.bundle(), raw=True, display_id=True)
        self._lasting_at = time.monotonic()
        return self

    def _update_lasting(self, force: bool = False) -> None:
        """Refresh the output's lasting forms: at each change of state, the end, else now and then."""
        if self.handle is None:
            return
        state = (self.job.status, bool(self.job.finished_at), self.finished, len(self.notes))
        if force or state != self._lasting_state or time.monotonic() - self._lasting_at > LASTING_EVERY_S:
            self._lasting_state = state
            self._lasting_at = time.monotonic()
            self.handle.update(self.bundle(), raw=True)

    # ---- following the job

    async def follow(self) -> None:
        next_draw = 0.0
        try:
            async with AsyncClient(self.socket) as client:
                await self._history(client)
            async for event in AsyncClient(self.socket).follow(self.job.id):
                self.take(event)
                if time.monotonic() >= next_draw:
                    self.render()
                    next_draw = time.monotonic() + 1 / UPDATES_PER_S
        except WorkerError as exc:
            self.notes.append(str(exc))
        self.finished = True
        try:  # the whole run as the executor kept it (a quiet job sends few live samples)
            async with AsyncClient(self.socket) as client:
                await self._history(client)
        except WorkerError:
            pass
        self.notice(f"artifacts: {note}" if (note := Job(self.job).artifacts_note()) else "")
        self.render()
        if self.on_end is not None:
            await self.on_end(self)
            self.render()
        self._update_lasting(force=True)

    async def _history(self, client: AsyncClient) -> None:
        """The job's metric history so far, so the chart starts at its first sample (kept as it is
        when the executor has none)."""
        try:
            history = await client.metrics(self.job.id)
        except WorkerError:  # an executor without history: the chart starts now
            return
        self.memory_limit_bytes = history.get("memory_limit_bytes") or self.memory_limit_bytes
        self.cpu_limit_percent = history.get("cpu_limit_percent")
        kept = [Sample(p["t"], p["cpu_percent"], p["memory_bytes"]) for p in history.get("samples", [])]
        if len(kept) >= len(self.samples):
            self.samples = kept

    def notice(self, text: str) -> None:
        """A line of jupyter-worker's own under the job's log (e.g. which values came back)."""
        if text:
            self.notes.append(text)

    def take(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "log" and event["stream"] == "display":
            self.sink.feed(event["data"])
        elif kind == "log":
            text = self.partial + event["data"].decode(errors="replace")
            *complete, self.partial = text.split("\n")
            self.lines += [(event["stream"], line) for line in complete]
            self.line_count += len(complete)
            if len(self.lines) > LOG_LINES:
                self.lines = self.lines[-LOG_LINES:]
                self.show_all.layout.display = ""
        elif kind in ("status", "end"):
            self.job = event["job"]
        elif kind == "metrics":
            self.job = dataclasses.replace(self.job, metrics=event["metrics"])
            self._sample(event["metrics"])

    def _sample(self, metrics: dict[str, Any]) -> None:
        """A live point, after the history's last: CPU % from the CPU time between two events."""
        wall, cpu = metrics.get("wall_seconds", 0.0), metrics.get("cpu_seconds", 0.0)
        now = (self.job.started_at or time.time()) + wall
        last = self._last_cpu
        self._last_cpu = (wall, cpu)
        if last is None or wall <= last[0]:
            return
        if self.samples and now <= self.samples[-1].t:
            return  # the history has this moment already
        percent = 100 * (cpu - last[1]) / (wall - last[0])
        self.samples.append(Sample(now, percent, metrics.get("memory_bytes", 0)))
        if len(self.samples) > 4 * CHART_POINTS:
            self.samples = thinned(self.samples, 2 * CHART_POINTS)

    def render(self) -> None:
        job = self.job
        status = job.status.value
        badge = (
            f'<span style="background:{COLOURS[status]};color:white;border-radius:4px;padding:1px 6px">'
            f"{html_text(status_words(job))}</span>"
        )
        self.header.value = html_block(
            f"<b>{html_text(job.name)}</b> <code>{html_text(job.id[:8])}</code> {badge} {elapsed(job) or 0:.1f} s"
        )
        self.resources.value = html_block(html_text(resources_words(job, self.samples)))
        run = (job.started_at, job.finished_at)
        self.chart.value = html_block(chart_svg(self.samples, self.memory_limit_bytes, self.cpu_limit_percent, run))
        self.log.value = html_block(self._log_html())
        self.stop_button.disabled = bool(job.finished_at) or self.finished
        self.output.flush()
        self._update_lasting()

    def _log_html(self) -> str:
        css = "color: var(--jp-error-color1, #c62828)"
        lines = [
            f'<span style="{css}">{_log_html(line)}</span>' if stream != "stdout" else _log_html(line)
            for stream, line in self.lines
        ]
        if self.partial:
            lines.append(_log_html(self.partial))
        lines += [f"[jupyter-worker: {html_text(note)}]" for note in self.notes]
        return "<pre style='margin:0'>" + "\n".join(lines) + "</pre>"

    async def stop(self) -> None:
        self.stop_button.disabled = True
        try:
            async with AsyncClient(self.socket) as client:
                record = await client.stop(self.job.id)
        except WorkerError as exc:
            self.notes.append(str(exc))
        else:  # the answer may come after the follow saw the end: the ended record stays
            if not self.job.finished_at:
                self.job = record
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
        whole = "".join(text)
        self.log.value = html_block("<pre style='margin:0'>" + _log_html(whole) + "</pre>")
        self.show_all.layout.display = "none"
