"""The handshake between a head executor and a Slurm job's relay (jupyter_worker.slurmstep).

The relay listens on TCP in a compute node, reachable by anyone on the cluster's network, so every
connection proves it knows the job's secret (32 random bytes the head put in the step request)
before a byte reaches the node executor:

    relay -> head:  JW-RELAY 1 <nonce: 64 hex>\\n
    head -> relay:  <hmac-sha256(secret, nonce + b" " + verb): 64 hex> <verb> <head nonce: 64 hex>\\n
    relay -> head:  <reply> <hmac-sha256(secret, head nonce + b" " + reply): 64 hex>\\n

verb is "pipe" (the relay replies "ok" and then pipes bytes to a new connection to the node
executor, or "unavailable" if it cannot connect there) or "release" (it replies "ok" once the node
job has ended, and exits, or "wait" while it runs). The HMAC key is the 32 bytes the step
request's 64 hex digits spell (secret_key). Each side proves it knows the secret on a nonce of the
other's: a process that took the port of a dead relay can neither reach the node executor nor feed
the head a log or an outcome of its own making.
A fresh nonce per connection makes a recorded answer worthless on another connection; the verb is
inside the MAC, so an answer cannot be turned from one verb into the other. A bad line, a wrong MAC
or silence for HANDSHAKE_S closes the connection without a reply. Lines are read a byte at a time,
at most MAX_LINE bytes, so nothing past a line is consumed and no peer can make either side buffer.

The standard library and protocol only: both the head executor and the relay import it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from . import protocol

GREETING = "JW-RELAY 1"
VERBS = ("pipe", "release")
MAX_LINE = 200
HANDSHAKE_S = 5.0
SECRET_BYTES = 32
# The head reads the executor's frames from the reader open_relay returns.
READ_LIMIT = protocol.MAX_FRAME + protocol.LENGTH.size

_HEX64 = "[0-9a-f]{64}"
_GREETING_RE = re.compile(rf"{GREETING} ({_HEX64})")
_ANSWER_RE = re.compile(rf"({_HEX64}) ([a-z]{{1,16}}) ({_HEX64})")
_REPLY_RE = re.compile(rf"([a-z]{{1,16}}) ({_HEX64})")


class RelayError(OSError):
    """The relay could not be reached or did not accept us; the message says why, in words."""


class RelayWait(RelayError):
    """A release came before the node job ended: the relay answered "wait" and keeps running."""


def new_secret() -> str:
    """A job's secret as the step request carries it: 64 hex digits."""
    return secrets.token_hex(SECRET_BYTES)


def secret_key(secret_hex: str) -> bytes:
    """The HMAC key: the 32 bytes the secret's 64 hex digits spell (ValueError if they do not)."""
    if not isinstance(secret_hex, str) or not re.fullmatch(_HEX64, secret_hex):
        raise ValueError("secret: 64 lowercase hex digits")
    return bytes.fromhex(secret_hex)


def answer_mac(secret: bytes, nonce: str, verb: str) -> str:
    return hmac.new(secret, nonce.encode() + b" " + verb.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Accepted:
    """A connection whose head proved it knows the secret: its verb, and the nonce on which the
    relay signs its reply."""

    verb: str
    head_nonce: str

    def reply(self, secret: bytes, word: str) -> bytes:
        """The relay's reply line ("ok", "wait", "unavailable"), signed for the head."""
        return f"{word} {answer_mac(secret, self.head_nonce, word)}\n".encode()


async def read_line(reader: asyncio.StreamReader) -> str | None:
    """One line of printable ASCII without its newline, or None: end of stream, an overlong line
    (MAX_LINE bytes without a newline) or bytes that are not printable ASCII."""
    line = bytearray()
    while len(line) < MAX_LINE:
        byte = await reader.read(1)
        if not byte:
            return None
        if byte == b"\n":
            text = line.decode("ascii", errors="replace")
            return text if text.isascii() and text.isprintable() else None
        line += byte
    return None


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass


async def accept(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes, timeout: float = HANDSHAKE_S
) -> Accepted | None:
    """The relay's side: greet with a fresh nonce and check the answer. Returns the verb and the
    head's nonce (reply with Accepted.reply), or None after closing the connection (no reply) for
    a bad line, a wrong MAC or nothing within timeout."""
    nonce = secrets.token_hex(32)
    try:
        writer.write(f"{GREETING} {nonce}\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(read_line(reader), timeout)
    except (OSError, TimeoutError):
        line = None
    match = _ANSWER_RE.fullmatch(line) if line is not None else None
    if match is not None:
        given, verb, head_nonce = match.groups()
        # compare_digest: the time taken says nothing about how much of a guessed MAC was right
        if verb in VERBS and hmac.compare_digest(given, answer_mac(secret, nonce, verb)):
            return Accepted(verb, head_nonce)
    await _close(writer)
    return None


async def open_relay(
    host: str, port: int, secret: bytes, verb: str, timeout: float = 10
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The head's side: connect, answer the relay's challenge for verb and wait for its "ok".
    "pipe" returns streams that speak the executor protocol to the node executor; "release"
    returns once the relay has agreed to exit (RelayWait if the node job still runs). Raises
    RelayError with words for anything else."""
    if verb not in VERBS:
        raise ValueError(f"verb: one of {', '.join(VERBS)}")
    where = f"the relay at {host}:{port}"
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, limit=READ_LIMIT), timeout)
    except TimeoutError:
        raise RelayError(f"{where} did not answer within {timeout:g} s") from None
    except OSError as exc:
        raise RelayError(f"{where} cannot be reached ({exc.strerror or exc})") from None
    try:
        reply = await asyncio.wait_for(_handshake(reader, writer, secret, verb, where), timeout)
    except TimeoutError:
        await _close(writer)
        raise RelayError(f"{where} did not finish the handshake within {timeout:g} s") from None
    except OSError as exc:
        await _close(writer)
        if isinstance(exc, RelayError):
            raise
        raise RelayError(f"{where} broke off the handshake ({exc.strerror or exc})") from None
    if reply == "ok":
        return reader, writer
    await _close(writer)
    if reply == "unavailable" and verb == "pipe":
        raise RelayError(f"{where} cannot reach the node's jupyter-worker executor")
    if reply == "wait" and verb == "release":
        raise RelayWait(f"{where} still runs its job: release it once the job has ended")
    if reply is None:
        raise RelayError(f"{where} refused us (a wrong secret, or not a jupyter-worker relay)")
    raise RelayError(f"{where} answered {reply[:40]!r}")


def _signed_reply(line: str | None, secret: bytes, head_nonce: str, where: str) -> str | None:
    """The relay's reply word, once its signature on our nonce is checked; None if it closed."""
    if line is None:
        return None
    match = _REPLY_RE.fullmatch(line)
    if match is None or not hmac.compare_digest(match.group(2), answer_mac(secret, head_nonce, match.group(1))):
        raise RelayError(f"{where} did not prove it knows the job's secret: not the job's relay")
    return match.group(1)


async def _handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, secret: bytes, verb: str, where: str
) -> str | None:
    """Answer the challenge; the relay's reply line ("ok", "wait"), or None if it closed."""
    line = await read_line(reader)
    match = _GREETING_RE.fullmatch(line) if line is not None else None
    if match is None:
        raise RelayError(f"{where} did not greet as a jupyter-worker relay")
    head_nonce = secrets.token_hex(32)
    writer.write(f"{answer_mac(secret, match.group(1), verb)} {verb} {head_nonce}\n".encode())
    await writer.drain()
    return _signed_reply(await read_line(reader), secret, head_nonce, where)
