"""How jobs look to people: the jobs table (text and HTML), times and durations, a job's detail
lines, and a job's log written to stdout and stderr as it comes.

The CLI, the magics, `jobs.Job` and the notebook widget all show jobs through here, so a job reads
the same wherever it is shown.
"""

from __future__ import annotations

import codecs
import datetime
import html
import sys
import time
from collections.abc import Iterable
from typing import Any, TextIO

from .errors import ErrorReason, WorkerError
from .spec import JobRecord

TABLE_COLUMNS = ("ID", "STATUS", "NAME", "COMMAND", "STARTED", "DURATION", "CPU", "MEMORY")
MIB = 1 << 20


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
    """A duration as '12.3s', or '-' for none."""
    return "-" if value is None else f"{value:.{digits}f}s"


def mib(size: float) -> str:
    """A size in bytes as '12.3 MiB'."""
    return f"{size / MIB:.1f} MiB"


def table_row(record: JobRecord, now: float | None = None) -> tuple[str, ...]:
    """One job as the listings show it: CPU is CPU time, MEMORY the peak."""
    metrics = record.metrics
    peak = metrics.get("memory_peak_bytes") or metrics.get("memory_bytes")
    return (
        record.id[:8],
        record.status.value,
        record.name or "",
        " ".join(" ".join(record.command).split())[:40],
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
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in table_row(record, now)) + "</tr>"
        for record in records
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def job_lines(record: JobRecord) -> list[str]:
    """A job in detail, a 'Field: value' line each (the CLI's run and status)."""
    ending = f" ({record.ending})" if record.finished else ""
    lines = [
        f"ID:        {record.id}",
        f"Name:      {record.name}",
        f"Owner:     {record.owner}",
        f"Command:   {' '.join(record.command)}",
        f"Status:    {record.status.value}{ending}",
        f"StartTime: {clock(record.started_at)}",
        f"Limits:    {', '.join(f'{key}={value}' for key, value in record.limits.given().items())}",
    ]
    if record.stopped_by:
        lines.append(f"StoppedBy: {record.stopped_by}")
    metrics = record.metrics
    if metrics:
        lines.append(
            f"Usage:     cpu {seconds(metrics.get('cpu_seconds', 0), 2)}, "
            f"memory peak {mib(metrics.get('memory_peak_bytes', 0))}, wall {seconds(metrics.get('wall_seconds', 0), 2)}"
        )
    return lines


class LogWriter:
    """Writes a job's log as it comes: its stdout to stdout; its stderr and the executor's notices
    to stderr. Where a stream has a binary buffer (a terminal, a pipe, a file) the bytes go there as
    the job wrote them; elsewhere (a kernel's output) they are decoded, a character split between
    two chunks kept whole."""

    def __init__(self, stdout: TextIO | None = None, stderr: TextIO | None = None):
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self._decoders: dict[bool, codecs.IncrementalDecoder] = {}

    def write(self, stream: str, data: bytes) -> None:
        to_stdout = stream == "stdout"
        out = self.stdout if to_stdout else self.stderr
        buffer = getattr(out, "buffer", None)
        if buffer is not None:
            out.flush()  # what was printed as text before goes first
            buffer.write(data)
        else:
            decoder = self._decoders.setdefault(to_stdout, codecs.getincrementaldecoder("utf-8")(errors="replace"))
            out.write(decoder.decode(data))
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
