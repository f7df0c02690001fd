"""A job's log: its stdout, stderr and display output, in the order read, as framed records in one
append-only file.

Each record is a 5-byte header (stream, length) and the bytes. A record's offset is its position in
the file, so a reader can read history from any record boundary and go on following with no gap
and no duplicate. The supervisor is the only writer; readers never slow it down.

The display stream (a job that asked for it writes newline-delimited JSON mime bundles to a pipe of
its own: see launch_spec.DISPLAY_FD) is capped on its own too, below the log cap, so a job
flooding it cannot crowd out its stdout and stderr.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

HEADER = struct.Struct(">BI")
STDOUT, STDERR, NOTICE, DISPLAY = 1, 2, 3, 4
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr", NOTICE: "notice", DISPLAY: "display"}
STREAM_NUMBERS = {name: number for number, name in STREAM_NAMES.items()}
MAX_RECORD = 256 << 10
DISPLAY_SHARE = 4  # the display stream may take a quarter of the log cap


@dataclass
class Chunk:
    offset: int
    stream: int
    data: bytes

    @property
    def stream_name(self) -> str:
        return STREAM_NAMES.get(self.stream, "stdout")


class LogWriter:
    """Appends records; past the cap, one notice says how much is dropped and the rest is dropped.

    The display stream has a cap of its own (display_cap, a quarter of the log's unless given):
    past it, the display stream ends on a whole line (a line begun before is closed with a
    newline, which a reader skips as one malformed record), one notice says so and the rest of the
    display output is dropped; stdout and stderr go on.
    """

    def __init__(self, fd: int, cap_bytes: int, display_cap: int | None = None):
        self.fd = fd
        self.cap = cap_bytes
        self.size = os.fstat(fd).st_size
        self.dropped = 0
        self.display_cap = cap_bytes // DISPLAY_SHARE if display_cap is None else display_cap
        self.display_size = 0
        self.display_dropped = 0
        self._display_mid_line = False

    def write(self, stream: int, data: bytes) -> None:
        capped = False
        if stream == DISPLAY:
            data, capped = self._within_display_cap(data)
        for start in range(0, len(data), MAX_RECORD):
            self._record(stream, data[start : start + MAX_RECORD])
        if capped:
            self._record(
                NOTICE, f"[jupyter-worker: display cap of {self.display_cap} bytes reached; display output dropped]\n"
            )

    def _within_display_cap(self, data: bytes) -> tuple[bytes, bool]:
        """The part of display data to keep, and whether the display cap was reached just now."""
        if self.display_dropped:
            self.display_dropped += len(data)
            return b"", False
        room = self.display_cap - self.display_size
        if len(data) <= room:
            kept = data
        else:
            cut = data.rfind(b"\n", 0, room) + 1
            kept = data[:cut] or (b"\n" if self._display_mid_line else b"")
            self.display_dropped = len(data) - cut
        if kept:
            self.display_size += len(kept)
            self._display_mid_line = not kept.endswith(b"\n")
        return kept, bool(self.display_dropped)

    def _record(self, stream: int, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        if self.dropped or self.size + HEADER.size + len(raw) > self.cap:
            if not self.dropped:
                self._append(NOTICE, f"[jupyter-worker: log cap of {self.cap} bytes reached; output dropped]\n")
            self.dropped += len(raw)
            return
        self._append(stream, raw)

    def _append(self, stream: int, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        record = HEADER.pack(stream, len(raw)) + raw
        written = 0
        while written < len(record):
            written += os.write(self.fd, record[written:])
        self.size += len(record)

    def cut_torn_tail(self, whole: int) -> None:
        """Cut the log back to its last whole record, read from `whole` (an offset at which a
        record begins) on: what a writer killed in the middle of a record left."""
        reader = os.open(f"/proc/self/fd/{self.fd}", os.O_RDONLY | os.O_CLOEXEC)  # ours is write-only
        try:
            position = whole
            while position + HEADER.size <= self.size:
                _, length = HEADER.unpack(os.pread(reader, HEADER.size, position))
                if position + HEADER.size + length > self.size:
                    break
                position += HEADER.size + length
        finally:
            os.close(reader)
        if position < self.size:
            os.ftruncate(self.fd, position)
            self.size = position

    def close(self) -> None:
        # The final counts go in even past the log cap: they are small, and said once.
        if self.display_dropped:
            self._append(NOTICE, f"[jupyter-worker: {self.display_dropped} bytes of display output were dropped]\n")
        if self.dropped:
            self._append(NOTICE, f"[jupyter-worker: {self.dropped} bytes of output were dropped]\n")
        os.close(self.fd)


def read_chunks(path: str, offset: int = 0, max_bytes: int = 1 << 20) -> tuple[list[Chunk], int]:
    """Whole records from offset on (at most about max_bytes of data), and the offset after them.

    A record still being written is left for the next read. An offset that is not a record
    boundary reads as garbage-free nothing only if it lies past the end; callers pass offsets they
    were given.
    """
    chunks: list[Chunk] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return chunks, offset
    try:
        data = os.pread(fd, max_bytes + HEADER.size * 64, offset)
    finally:
        os.close(fd)
    position, total = 0, 0
    while position + HEADER.size <= len(data) and total < max_bytes:
        stream, length = HEADER.unpack_from(data, position)
        end = position + HEADER.size + length
        if end > len(data):
            if not chunks and length <= MAX_RECORD:
                return _read_one(path, offset)
            break
        chunks.append(Chunk(offset + position, stream, data[position + HEADER.size : end]))
        total += length
        position = end
    return chunks, offset + position


def _read_one(path: str, offset: int) -> tuple[list[Chunk], int]:
    """A single record larger than the read window: read exactly it, if it is complete."""
    with open(path, "rb") as f:
        f.seek(offset)
        header = f.read(HEADER.size)
        if len(header) < HEADER.size:
            return [], offset
        stream, length = HEADER.unpack(header)
        data = f.read(length)
    if len(data) < length:
        return [], offset
    return [Chunk(offset, stream, data)], offset + HEADER.size + length
