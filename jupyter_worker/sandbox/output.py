"""A job's log: its stdout and stderr, in the order read, as framed records in one append-only file.

Each record is a 5-byte header (stream, length) and the bytes. A record's offset is its position in
the file, so a reader can read history from any record boundary and go on following with no gap
and no duplicate. The supervisor is the only writer; readers never slow it down.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

HEADER = struct.Struct(">BI")
STDOUT, STDERR, NOTICE = 1, 2, 3
STREAM_NAMES = {STDOUT: "stdout", STDERR: "stderr", NOTICE: "notice"}
MAX_RECORD = 256 << 10


@dataclass
class Chunk:
    offset: int
    stream: int
    data: bytes

    @property
    def stream_name(self) -> str:
        return STREAM_NAMES.get(self.stream, "stdout")


class LogWriter:
    """Appends records; past the cap, one notice says how much is dropped and the rest is dropped."""

    def __init__(self, fd: int, cap_bytes: int):
        self.fd = fd
        self.cap = cap_bytes
        self.size = os.fstat(fd).st_size
        self.dropped = 0

    def write(self, stream: int, data: bytes) -> None:
        for start in range(0, len(data), MAX_RECORD):
            self._record(stream, data[start : start + MAX_RECORD])

    def _record(self, stream: int, data: bytes) -> None:
        if self.dropped or self.size + HEADER.size + len(data) > self.cap:
            if not self.dropped:
                self._append(NOTICE, f"[jupyter-worker: log cap of {self.cap} bytes reached; output dropped]\n")
            self.dropped += len(data)
            return
        self._append(stream, data)

    def _append(self, stream: int, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        record = HEADER.pack(stream, len(raw)) + raw
        written = 0
        while written < len(record):
            written += os.write(self.fd, record[written:])
        self.size += len(record)

    def close(self) -> None:
        if self.dropped:
            self._append_final_count()
        os.close(self.fd)

    def _append_final_count(self) -> None:
        record = f"[jupyter-worker: {self.dropped} bytes of output were dropped]\n".encode()
        os.write(self.fd, HEADER.pack(NOTICE, len(record)) + record)


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
