"""How jobs look to people: the jobs table (text and HTML), times and durations, a job's detail
lines, and a job's log written to stdout and stderr as it comes.

The CLI, the magics, `jobs.Job` and the notebook widget all show jobs through here, so a job reads
the same wherever it is shown.

Every string in a job record came from some user (its name, command, owner, error), and the person
looking may be another (an admin's `jupyter-worker list`). So text is made inert here, once:
`inert` spells out what a terminal would obey or what would forge text (control characters C0, DEL
and C1 incl. the one-byte CSI \\x9b, bidi overrides and isolates, zero-width and other invisible
format characters, line and paragraph separators, lone surrogates) as a visible `\\x1b`, `\\u202e`;
`html_text` is that, HTML-escaped, with `$` as `&#36;`; and `html_block` wraps HTML in the class
MathJax skips, so `$x$` in a name is never typeset as LaTeX by JupyterLab, Notebook or a widget.
"""

from __future__ import annotations

import codecs
import datetime
import html
import sys
import time
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any, TextIO

from .errors import ErrorReason, WorkerError
from .limits import duration_words
from .spec import JobRecord

TABLE_COLUMNS = ("ID", "STATUS", "NAME", "COMMAND", "STARTED", "DURATION", "CPU", "MEMORY")
MIB = 1 << 20

# Unicode categories a terminal obeys or a reader cannot see: controls (C0, DEL, C1), format
# characters (bidi embeddings, overrides and isolates, LRM/RLM/ALM, zero-width space/joiners, BOM,
# soft hyphen, tag characters), surrogates (lone ones cannot even be printed), line/paragraph separators.
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
# MathJax 3 (JupyterLab) skips elements of class mathjax_ignore, MathJax 2 (Notebook 6) tex2jax_ignore.
NO_MATH = "tex2jax_ignore mathjax_ignore"


def _spelled(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def inert(text: object, keep: str = "") -> str:
    """Text safe to show anyone: every hidden character (HIDDEN_CATEGORIES) spelled out as
    `\\x1b`, `\\u202e`...; those in keep (e.g. "\\n\\t" for a log) stay. The one function the CLI,
    the magics and the widget show user text through."""
    text = text if isinstance(text, str) else str(text)
    if text.isprintable():  # the common case, fast: no C*, Z* other than a plain space
        return text
    return "".join(_spelled(c) if c not in keep and unicodedata.category(c) in HIDDEN_CATEGORIES else c for c in text)


def html_text(text: object) -> str:
    """Text for HTML: inert, escaped (quotes too, so also for attributes), `$` as `&#36;`."""
    return html.escape(inert(text)).replace("$", "&#36;")


def html_block(inner: str, tag: str = "div") -> str:
    """HTML that MathJax leaves alone (a `$x$` stays text), in JupyterLab, Notebook and widgets."""
    return f'<{tag} class="{NO_MATH}">{inner}</{tag}>'


def clock(stamp: float | None) -> str:
    """A moment in local time, '2024-05-01 12:00:00', or '-' when there is none."""
    return datetime.datetime.fromtimestamp(stamp).strftime("%Y-%m-%d %H:%M:%S") if stamp else "-"


def elapsed(record: JobRecord, now: float | None = None) -> float | None:
    """Seconds the job has run: to its end, or to now while it runs; None before it starts."""
    if not record.started_at:
        return None
    end = record.finished_at or (time.time() if now is None else now)
    return end - record.started_at


def seconds(value: float | None, digits: int = 1) -> str:
    """A duration as '12.3s' under a minute, in words from there ('2h 30m', '100d'), '-' for none."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}s" if value < 60 else duration_words(value)


def mib(size: float) -> str:
    """A size in bytes as '12.3 MiB'."""
    return f"{size / MIB:.1f} MiB"


def bytes_words(size: float) -> str:
    """A size in the unit that suits it: '12 B', '3.4 KiB', '12.3 MiB', '1.5 GiB'."""
    if size < 1024:
        return f"{int(size)} B"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            break
    return f"{size:.1f} {unit}"


def table_row(record: JobRecord, now: float | None = None) -> tuple[str, ...]:
    """One job as the listings show it: CPU is CPU time, MEMORY the peak."""
    metrics = record.metrics
    peak = metrics.get("memory_peak_bytes") or metrics.get("memory_bytes")
    return (
        inert(record.id[:8]),
        record.status.value,
        inert(record.name or ""),
        inert(" ".join(" ".join(record.command).split()))[:40],
        clock(record.started_at),
        seconds(elapsed(record, now)),
        seconds(metrics.get("cpu_seconds"), 2),
        mib(peak) if peak else "-",
    )


def text_table(records: Iterable[JobRecord], now: float | None = None) -> str:
    """The jobs as aligned columns under a heading, one line each."""
    rows = [TABLE_COLUMNS, *(table_row(record, now) for record in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(TABLE_COLUMNS))]
    lines = ("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows)
    return "\n".join(lines) + "\n"


def html_table(records: Iterable[JobRecord], now: float | None = None) -> str:
    """The same table for a notebook's rich output."""
    head = "".join(f"<th>{column}</th>" for column in TABLE_COLUMNS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html_text(cell)}</td>" for cell in table_row(record, now)) + "</tr>"
        for record in records
    )
    return html_block(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")


def job_lines(record: JobRecord) -> list[str]:
    """A job in detail, a 'Field: value' line each (the CLI's run and status), every value inert."""
    ending = f" ({inert(record.ending)})" if record.finished else ""
    lines = [
        f"ID:        {inert(record.id)}",
        f"Name:      {inert(record.name)}",
        f"Owner:     {inert(record.owner)}",
        f"Command:   {inert(' '.join(' '.join(record.command).split()))}",  # one line: a newline could forge the next
        f"Status:    {record.status.value}{ending}",
        f"StartTime: {clock(record.started_at)}",
        f"Limits:    {', '.join(record.limits.words())}",  # in words with units: 'Timeout 1h', never 3600.0
    ]
    if record.backend != "local":  # where on the cluster: its node, partition and the cluster's id
        place = {**(record.placement or {}), **({"node": record.node} if record.node else {})}
        shown = ", ".join(f"{key} {inert(str(value))}" for key, value in place.items())
        lines.append(f"Backend:   {inert(record.backend)}" + (f" ({shown})" if shown else ""))
    if record.queue and record.queue.get("reason"):
        lines.append(f"Waiting:   {inert(str(record.queue['reason']))}")
    if record.stopped_by:
        lines.append(f"StoppedBy: {inert(record.stopped_by)}")
    metrics = record.metrics
    if metrics:
        lines.append(
            f"Usage:     cpu {seconds(metrics.get('cpu_seconds', 0), 2)}, "
            f"memory peak {mib(metrics.get('memory_peak_bytes', 0))}, wall {seconds(metrics.get('wall_seconds', 0), 2)}"
            + (f", disk {mib(metrics['disk_bytes'])}" if metrics.get("disk_bytes") else "")
        )
    if record.artifacts:
        lines.append(f"Artifacts: {artifacts_line(record)}")
    return lines


def artifacts_line(record: JobRecord) -> str:
    """What --artifacts copied, in one line: asked for, copied (how much, where), skipped, a cap, an error."""
    asked = record.artifacts or {}
    where = inert(asked.get("destination", ""))
    if "copied" not in asked and "error" not in asked:
        return f"nothing copied to {where}: the job never ran" if record.finished else f"to {where} when the job ends"
    if asked.get("folder"):  # each job's own new folder in DIR (executor/artifacts.py)
        where = inert(asked["folder"])
    if asked.get("error"):
        return f"not copied to {where}: {inert(asked['error'])}"
    count = asked.get("copied", 0)
    line = f"{count} file{'' if count == 1 else 's'} ({bytes_words(asked.get('bytes', 0))}) copied to {where}"
    if asked.get("skipped"):
        examples = ", ".join(f"{inert(path)} ({inert(why)})" for path, why in asked.get("skipped_examples", [])[:3])
        line += f"; {asked['skipped']} skipped: {examples}" + (", ..." if asked["skipped"] > 3 else "")
    if asked.get("note"):
        line += f"; {inert(asked['note'])}"
    return line


def html_job(record: JobRecord) -> str:
    """A job in detail for a notebook's rich output: job_lines as a two-column table."""
    rows = "".join(
        f"<tr><th>{html_text(key)}</th><td>{html_text(value.strip())}</td></tr>"
        for key, _, value in (line.partition(":") for line in job_lines(record))
    )
    return html_block(f"<table>{rows}</table>")


class LogWriter:
    """Writes a job's log as it comes: its stdout to stdout; its stderr and the executor's notices
    to stderr. Where a stream has a binary buffer (a terminal, a pipe, a file) the bytes go there as
    the job wrote them; elsewhere (a kernel's output) they are decoded, a character split between
    two chunks kept whole.

    With inert=True (the CLI's `log` of someone else's job) the log is decoded and shown through
    `inert`, only newlines and tabs kept: the job's owner chose those bytes, not the viewer.

    The display stream (newline-delimited JSON mime bundles, a record possibly split between
    chunks) is never printed as text: its bytes go to on_display as they come, or are dropped."""

    def __init__(
        self,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        inert: bool = False,
        on_display: Callable[[bytes], None] | None = None,
    ):
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.inert = inert
        self.on_display = on_display
        self._decoders: dict[bool, codecs.IncrementalDecoder] = {}

    def write(self, stream: str, data: bytes) -> None:
        if stream == "display":
            if self.on_display is not None:
                self.on_display(data)
            return
        to_stdout = stream == "stdout"
        out = self.stdout if to_stdout else self.stderr
        buffer = getattr(out, "buffer", None)
        if buffer is not None and not self.inert:
            out.flush()  # what was printed as text before goes first
            buffer.write(data)
        else:
            decoder = self._decoders.setdefault(to_stdout, codecs.getincrementaldecoder("utf-8")(errors="replace"))
            text = decoder.decode(data)
            out.write(inert(text, keep="\n\t") if self.inert else text)
        out.flush()


def follow_log(events: Iterable[dict[str, Any]], writer: LogWriter | None = None) -> JobRecord:
    """Follow a job's events to its end, writing its log with writer (if given); returns its final
    record."""
    for event in events:
        if event["event"] == "log" and writer is not None:
            writer.write(event["stream"], event["data"])
        elif event["event"] == "end":
            return event["job"]
    raise WorkerError(ErrorReason.DISCONNECTED, "the log ended before the job did")
