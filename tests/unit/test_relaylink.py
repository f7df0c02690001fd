"""The head-relay handshake (relaylink.py): only an answer made with the job's secret, for this
connection's nonce and a known verb, gets past the relay; anything else is closed without a reply.
And the relay's pure parts (slurmstep.py): its step request and the Comments it leaves."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from jupyter_worker import relaylink, slurmstep

SECRET = bytes(range(32))


async def _with_relay(
    body: Callable[[int, list[str | None]], Awaitable[Any]], timeout: float = relaylink.HANDSHAKE_S, reply: str = "ok"
) -> tuple[Any, list[str | None]]:
    """A loopback relay that accepts with SECRET and answers reply to a good verb; body(port, verbs)
    runs against it; returns body's result and the verbs (or Nones) accept returned."""
    verbs: list[str | None] = []
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted = await relaylink.accept(reader, writer, SECRET, timeout)
        verbs.append(accepted.verb if accepted is not None else None)
        if accepted is not None:
            writer.write(accepted.reply(SECRET, reply))
            await writer.drain()
            writer.close()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        result = await body(port, verbs)
        await asyncio.wait_for(done.wait(), 10)
    finally:
        server.close()
    return result, verbs


async def _raw(port: int, send: Callable[[str], bytes]) -> bytes:
    """Read the greeting, send what send(nonce) makes, and return all the relay says after it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    greeting = (await reader.readline()).decode()
    assert greeting.startswith("JW-RELAY 1 ")
    writer.write(send(greeting.split()[2]))
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return rest


HEAD_NONCE = "ab" * 32


def _answer(nonce: str, signed_verb: str, verb: str) -> bytes:
    """The head's answer line: a MAC made for signed_verb, naming verb."""
    return f"{relaylink.answer_mac(SECRET, nonce, signed_verb)} {verb} {HEAD_NONCE}\n".encode()


def test_an_answer_made_with_the_secret_is_accepted_with_its_verb():
    async def body(port: int, verbs: list) -> Any:
        _reader, writer = await relaylink.open_relay("127.0.0.1", port, SECRET, "pipe")
        writer.close()
        return True

    assert asyncio.run(_with_relay(body)) == (True, ["pipe"])


def test_a_release_before_the_job_ended_is_told_to_wait():
    async def body(port: int, verbs: list) -> Any:
        with pytest.raises(relaylink.RelayWait, match="still runs its job"):
            await relaylink.open_relay("127.0.0.1", port, SECRET, "release")

    assert asyncio.run(_with_relay(body, reply="wait"))[1] == ["release"]


def test_a_wrong_secret_is_closed_without_a_reply():
    async def body(port: int, verbs: list) -> Any:
        with pytest.raises(relaylink.RelayError, match="refused us"):
            await relaylink.open_relay("127.0.0.1", port, b"\1" * 32, "pipe")

    assert asyncio.run(_with_relay(body))[1] == [None]


def test_an_unknown_verb_is_refused_even_with_a_good_mac():
    async def body(port: int, verbs: list) -> bytes:
        return await _raw(port, lambda nonce: _answer(nonce, "shell", "shell"))

    assert asyncio.run(_with_relay(body)) == (b"", [None])


def test_a_mac_made_for_one_verb_does_not_open_the_other():
    async def body(port: int, verbs: list) -> bytes:
        return await _raw(port, lambda nonce: _answer(nonce, "release", "pipe"))

    assert asyncio.run(_with_relay(body)) == (b"", [None])


def test_an_overlong_line_is_refused_at_once_without_waiting_for_a_newline():
    async def body(port: int, verbs: list) -> bytes:
        return await _raw(port, lambda nonce: b"a" * (relaylink.MAX_LINE + 50))

    started = time.monotonic()
    assert asyncio.run(_with_relay(body)) == (b"", [None])
    assert time.monotonic() - started < relaylink.HANDSHAKE_S


def test_silence_is_closed_after_the_handshake_timeout():
    async def body(port: int, verbs: list) -> bytes:
        return await _raw(port, lambda nonce: b"")

    started = time.monotonic()
    assert asyncio.run(_with_relay(body, timeout=0.3)) == (b"", [None])
    assert 0.3 <= time.monotonic() - started < 5


def test_an_answer_replayed_to_another_nonce_is_refused():
    recorded: list[str] = []

    def record(nonce: str) -> bytes:
        recorded.append(f"{relaylink.answer_mac(SECRET, nonce, 'pipe')} pipe {HEAD_NONCE}\n")
        return recorded[0].encode()

    async def body(port: int, verbs: list) -> tuple[bytes, bytes]:
        first = await _raw(port, record)
        second = await _raw(port, lambda nonce: recorded[0].encode())
        return first, second

    (first, second), verbs = asyncio.run(_with_relay(body))
    assert first == f"ok {relaylink.answer_mac(SECRET, HEAD_NONCE, 'ok')}\n".encode()
    assert second == b""
    assert verbs == ["pipe", None]


def test_a_listener_that_does_not_know_the_secret_is_not_taken_for_the_relay():
    """Whoever took the port of a dead relay greets like one and says ok; its ok is not signed
    with the job's secret, so the head refuses it before reading a byte of protocol from it."""

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"JW-RELAY 1 {'0' * 64}\n".encode())
        await reader.readline()
        writer.write(f"ok {'1' * 64}\n".encode())
        await writer.drain()

    async def scenario() -> str:
        server = await asyncio.start_server(impostor, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            await relaylink.open_relay("127.0.0.1", port, SECRET, "pipe")
        except relaylink.RelayError as exc:
            return str(exc)
        finally:
            server.close()
        return "accepted"

    assert "did not prove it knows the job's secret" in asyncio.run(scenario())


def test_bytes_that_are_not_printable_ascii_are_refused():
    async def body(port: int, verbs: list) -> bytes:
        return await _raw(port, lambda nonce: f"{relaylink.answer_mac(SECRET, nonce, 'pipe')} pipe\x1b\n".encode())

    assert asyncio.run(_with_relay(body)) == (b"", [None])


def test_a_relay_that_is_not_there_is_an_error_in_words():
    async def body() -> None:
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        await relaylink.open_relay("127.0.0.1", port, SECRET, "pipe")

    with pytest.raises(relaylink.RelayError, match=r"the relay at 127\.0\.0\.1:\d+ cannot be reached"):
        asyncio.run(body())


def test_a_peer_that_is_not_a_relay_is_an_error_in_words():
    async def body() -> None:
        async def greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"SSH-2.0-OpenSSH\n")
            await writer.drain()

        server = await asyncio.start_server(greet, "127.0.0.1", 0)
        try:
            await relaylink.open_relay("127.0.0.1", server.sockets[0].getsockname()[1], SECRET, "pipe")
        finally:
            server.close()

    with pytest.raises(relaylink.RelayError, match="did not greet as a jupyter-worker relay"):
        asyncio.run(body())


def test_the_secret_is_the_bytes_its_hex_spells():
    secret = relaylink.new_secret()
    assert relaylink.secret_key(secret) == bytes.fromhex(secret)
    for bad in ("", "ab", secret.upper(), secret + "0", None):
        with pytest.raises(ValueError, match="64 lowercase hex"):
            relaylink.secret_key(bad)  # type: ignore[arg-type]


# ---- the relay's pure parts (slurmstep.py): its step request and its Comments


def _step(**changes: Any) -> bytes:
    request = {"version": 1, "job": {"command": ["true"]}, "socket": "/nodes/%n/executor.sock"}
    request |= {"secret": "ab" * 32, "linger_s": 600, **changes}
    return json.dumps(request).encode()


def test_a_step_request_names_the_nodes_socket_and_the_secret_as_bytes():
    step = slurmstep.parse_request(_step(), "n3")
    assert step.socket == "/nodes/n3/executor.sock"
    assert step.secret == b"\xab" * 32 and step.linger_s == 600
    assert step.job.command == ["true"] and step.job.holder is None


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"version": 2}, "not version 1"),
        ({"extra": 1}, "unknown field(s) extra"),
        ({"job": {"command": []}}, "job: "),
        ({"job": {"command": ["true"], "holder": "x"}}, "holder is not for the node"),
        ({"job": {"command": ["true"], "owner": "root"}}, "owner is not for the node"),
        ({"job": {"command": ["true"], "backend": "slurm"}}, "backend local"),
        ({"socket": "relative.sock"}, "absolute path"),
        ({"socket": "/" + "x" * 200}, "at most 107 bytes"),
        ({"secret": "short"}, "64 lowercase hex"),
        ({"linger_s": -1}, "linger_s"),
        ({"linger_s": True}, "linger_s"),
    ],
)
def test_a_bad_step_request_is_refused_in_words(changes: dict, words: str):
    with pytest.raises(slurmstep.StepError, match=re.escape(words)):
        slurmstep.parse_request(_step(**changes), "n3")


def test_a_step_request_that_is_not_json_or_too_large_is_refused():
    for raw, words in ((b"{", "must hold JSON"), (b" " * (slurmstep.MAX_REQUEST_BYTES + 1), "larger than")):
        with pytest.raises(slurmstep.StepError, match=words):
            slurmstep.parse_request(raw, "n3")


def test_a_node_name_that_is_not_one_is_not_put_into_the_socket_path():
    with pytest.raises(slurmstep.StepError, match="not a node name"):
        slurmstep.parse_request(_step(), "../etc")


def test_the_comment_is_set_by_scontrol_update_of_the_slurm_job():
    calls: list[list[str]] = []

    def record(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    env = {"JUPYTER_WORKER_SLURM_BIN": "/opt/slurm/bin"}
    assert slurmstep.set_comment("42", slurmstep.port_comment(4711, "abc123"), record, env)
    assert calls == [["/opt/slurm/bin/scontrol", "update", "JobId=42", "Comment=jw1:port=4711,job=abc123"]]
    assert not slurmstep.set_comment("42", "x", lambda argv: 1, env)


def test_scontrol_comes_from_path_without_the_setting(tmp_path):
    scontrol = tmp_path / "scontrol"
    scontrol.write_text("#!/bin/sh\n")
    scontrol.chmod(0o755)
    assert slurmstep.scontrol_path({"PATH": str(tmp_path)}) == str(scontrol)


def test_error_words_in_a_comment_are_printable_ascii_and_short():
    comment = slurmstep.error_comment("bad \x1b[31m 'job' \"x\" \\ é \u202e" + "z" * 400)
    assert comment.startswith("jw1:error=bad \\x1b[31m \\x27job\\x27 \\x22x\\x22 \\x5c \\xe9 \\u202ezz")
    words = comment.removeprefix("jw1:error=")
    assert len(words) == slurmstep.MAX_WORDS and words.endswith("...")
    assert words.isascii() and words.isprintable()


def test_the_relay_outside_slurm_says_so_and_exits_3(capsys):
    assert asyncio.run(slurmstep.step(_step(), {})) == slurmstep.EXIT_ERROR
    assert "no SLURM_JOB_ID" in capsys.readouterr().err


def test_the_relay_without_a_node_name_leaves_the_words_in_the_comment():
    calls: list[list[str]] = []
    code = asyncio.run(slurmstep.step(_step(), {"SLURM_JOB_ID": "7", "PATH": ""}, lambda argv: calls.append(argv) or 0))
    assert code == slurmstep.EXIT_ERROR
    assert calls[0][1:3] == ["update", "JobId=7"]
    assert calls[0][3].startswith("Comment=jw1:error=the relay found no SLURMD_NODENAME")
