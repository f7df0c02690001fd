"""The relay: a Slurm job's batch step, run as the job's user on its node.

    PYTHON -I -m jupyter_worker.slurmstep <<'EOF'
    {"version": 1, "job": {...}, "socket": "/run/jupyter-worker/executor.sock", "secret": "<64 hex>",
     "linger_s": 600}
    EOF

The head executor submitted this Slurm job as the user; here, on the node, the relay

1. reads the step request (stdin) and checks it;
2. connects to the node's own jupyter-worker executor over its Unix socket (as the user, so the node
   executor runs the job in its sandbox under the user's uid and limits, as it would a local job);
3. opens a `hold` as holder `slurm-<SLURM_JOB_ID>` and submits the job naming that holder: however
   this process ends (scancel, a node problem, SIGKILL), the hold closes and the node executor
   stops the job;
4. listens on TCP 0.0.0.0:0 and publishes `jw1:port=<port>,job=<node job id>` in the Slurm job's
   Comment, where the head finds it;
5. serves the head (relaylink.py: every connection proves it knows the secret): `pipe` connections
   are piped to new connections to the node executor, so the head speaks the executor protocol as
   the user; `release` lets the relay exit once the node job has ended;
6. polls the node job every second and exits 0 once it has ended and the head released it (or
   linger_s after its end without a release), or at once on SIGTERM/SIGINT.

Slurm sends the step's output to /dev/null, so an error that stops the relay is written into the
Comment instead (`jw1:error=<words>`), and the relay exits 3 (Slurm: FAILED), which the head reads.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import protocol, relaylink
from .client import AsyncClient, Hold
from .errors import WorkerError
from .spec import JobRecord, JobRequest, validate_holder

STEP_VERSION = 1
EXIT_ERROR = 3
EXIT_SIGNALLED = 128 + signal.SIGTERM
MAX_REQUEST_BYTES = 1 << 20
MAX_CONNECTIONS = 16
MAX_WORDS = 300
MAX_LINGER_S = 7 * 86400
POLL_S = 1.0
PIPE_CHUNK = 1 << 16
SCONTROL_TIMEOUT_S = 60
SUBMIT_TIMEOUT_S = 60
BIN_ENV = "JUPYTER_WORKER_SLURM_BIN"
DEFAULT_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"
# what the head sets in the step request and the relay must not take from it: the relay names the
# holder itself, and owner, artifacts and the cluster placement are the head's business
HEAD_FIELDS = ("owner", "holder", "artifacts", "placement")
REQUEST_KEYS = {"version", "job", "socket", "secret", "linger_s"}
_NODE_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
# sun_path holds 108 bytes with its terminating NUL
MAX_SOCKET_BYTES = 107

Runner = Callable[[list[str]], int]


class StepError(Exception):
    """Why the relay cannot run the job, in words for the Comment."""


@dataclass(frozen=True)
class StepRequest:
    job: JobRequest
    socket: str  # with %n replaced by the node's name
    secret: bytes
    linger_s: float


def parse_request(raw: bytes, node: str) -> StepRequest:
    """The step request in raw (JSON), checked; StepError says what is wrong."""
    if len(raw) > MAX_REQUEST_BYTES:
        raise StepError(f"the step request is larger than {MAX_REQUEST_BYTES} bytes")
    try:
        data = protocol.load_object(raw, "the step request")
    except WorkerError as exc:
        raise StepError(exc.message) from None
    if data.get("version") != STEP_VERSION:
        raise StepError(f"the step request is not version {STEP_VERSION} (head and node differ in version?)")
    unknown = set(data) - REQUEST_KEYS
    if unknown:
        raise StepError(f"the step request has unknown field(s) {', '.join(sorted(unknown))}")
    job = data.get("job")
    if not isinstance(job, dict):
        raise StepError("job: must be an object")
    for name in HEAD_FIELDS:
        if job.get(name) is not None:
            raise StepError(f"job: {name} is not for the node")
    if job.get("backend", "local") not in (None, "local"):
        raise StepError("job: the node runs it locally (backend local)")
    try:
        request = JobRequest.from_dict({key: value for key, value in job.items() if key != "backend"})
    except WorkerError as exc:
        raise StepError(f"job: {exc.message}") from None
    return StepRequest(request, _socket(data.get("socket"), node), _secret(data.get("secret")), _linger(data))


def _socket(value: Any, node: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise StepError("socket: the node executor's socket, an absolute path")
    if "%n" in value and not _NODE_RE.fullmatch(node):
        raise StepError("SLURMD_NODENAME is not a node name (letters, digits and . _ -)")
    path = value.replace("%n", node)
    if len(path.encode(errors="surrogatepass")) > MAX_SOCKET_BYTES:
        raise StepError(f"socket: at most {MAX_SOCKET_BYTES} bytes")
    return path


def _secret(value: Any) -> bytes:
    try:
        return relaylink.secret_key(value)
    except ValueError as exc:
        raise StepError(str(exc)) from None


def _linger(data: dict[str, Any]) -> float:
    value = data.get("linger_s")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_LINGER_S:
        raise StepError(f"linger_s: seconds from 0 to {MAX_LINGER_S}")
    return float(value)


# ---- the Slurm job's Comment: where the head reads the port, or why the relay gave up


def comment_words(text: str) -> str:
    """text as printable ASCII for a Comment: anything else, and quotes and backslashes (which
    Slurm's tools or a shell could take apart), spelled as \\xNN/\\uNNNN; at most MAX_WORDS chars."""

    def spelled(char: str) -> str:
        if " " <= char <= "~" and char not in "\"'\\":
            return char
        code = ord(char)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"

    words = "".join(spelled(c) for c in text)
    return words if len(words) <= MAX_WORDS else words[: MAX_WORDS - 3] + "..."


def scontrol_path(env: Mapping[str, str]) -> str:
    """$JUPYTER_WORKER_SLURM_BIN/scontrol if that is set, else scontrol on PATH."""
    folder = env.get(BIN_ENV)
    if folder:
        return os.path.join(folder, "scontrol")
    return shutil.which("scontrol", path=env.get("PATH") or DEFAULT_PATH) or "scontrol"


def run_quietly(argv: list[str]) -> int:
    """Run a command, its output discarded (no one would see it); its exit status, 127 if it
    could not be started, 124 if it did not finish in time."""
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=SCONTROL_TIMEOUT_S, check=False
        )
    except OSError:
        return 127
    except subprocess.TimeoutExpired:
        return 124
    return done.returncode


def set_comment(
    slurm_job_id: str, comment: str, run: Runner = run_quietly, env: Mapping[str, str] = os.environ
) -> bool:
    """Set the Slurm job's Comment (`scontrol update`, as the user: Slurm lets users update their
    own job's Comment); whether scontrol said it did."""
    argv = [scontrol_path(env), "update", f"JobId={slurm_job_id}", f"Comment={comment}"]
    return run(argv) == 0


def port_comment(port: int, node_job_id: str) -> str:
    return f"jw1:port={port},job={node_job_id}"


def error_comment(words: str) -> str:
    return f"jw1:error={comment_words(words)}"


# ---- serving the head


class Relay:
    """The listening relay of one node job: pipes, release, and the wait for the job's end."""

    def __init__(self, step: StepRequest, client: AsyncClient, hold: Hold, holder: str, record: JobRecord):
        self.step = step
        self.client = client
        self.hold = hold
        self.holder = holder
        self.record = record
        self.connections = 0
        self.handshakes: dict[asyncio.StreamWriter, None] = {}  # connections not yet proven, oldest first
        self.ended = asyncio.Event()
        self.released = asyncio.Event()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One TCP connection: the handshake, then what its verb asks. Only connections that proved
        they know the secret count against MAX_CONNECTIONS; of those still in their handshake the
        oldest gives way to a new one, so idle connections of someone without the secret (the port
        is in the Comment, which every cluster user reads) never lock the head out."""
        if self.connections >= MAX_CONNECTIONS:
            writer.close()
            return
        if len(self.handshakes) >= MAX_CONNECTIONS:
            next(iter(self.handshakes)).close()  # its handshake reads the end and gives up
        self.handshakes[writer] = None
        try:
            accepted = await relaylink.accept(reader, writer, self.step.secret)
        except OSError:
            accepted = None
        finally:
            self.handshakes.pop(writer, None)
        if accepted is None:
            writer.close()
            return
        self.connections += 1
        try:
            if accepted.verb == "pipe":
                await self._pipe(reader, writer, accepted)
            elif accepted.verb == "release":
                await self._release(writer, accepted)
        except OSError:
            pass  # the head went away; nothing to tell anyone
        finally:
            self.connections -= 1
            writer.close()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, accepted: relaylink.Accepted
    ) -> None:
        """Bytes both ways between the head and a new connection to the node executor, which sees
        this process's uid: the user's. Ends when the node executor closes its side (it does once
        the head has closed its own, or at the end of a follow)."""
        try:
            node_reader, node_writer = await asyncio.open_unix_connection(self.step.socket)
        except OSError:
            writer.write(accepted.reply(self.step.secret, "unavailable"))
            await writer.drain()
            return
        writer.write(accepted.reply(self.step.secret, "ok"))
        await writer.drain()
        to_node = asyncio.create_task(_pump(reader, node_writer))
        try:
            await _pump(node_reader, writer)
        finally:
            to_node.cancel()
            node_writer.close()

    async def _release(self, writer: asyncio.StreamWriter, accepted: relaylink.Accepted) -> None:
        if not self.ended.is_set():
            await self._check()  # the head releases once it saw the end: it is likely over here too
        if not self.ended.is_set():
            # the head releases only after it saw the end; a race at worst
            writer.write(accepted.reply(self.step.secret, "wait"))
            await writer.drain()
            return
        writer.write(accepted.reply(self.step.secret, "ok"))
        await writer.drain()
        self.released.set()

    async def _keep_hold(self) -> None:
        """If the node executor restarts, hold again (it keeps the claim for its hold grace period)."""
        while True:
            await self.hold.lost()
            while True:
                await asyncio.sleep(POLL_S)
                try:
                    self.hold = await self.client.hold(self.holder)
                    break
                except (WorkerError, OSError):
                    continue

    async def _check(self) -> None:
        """Ask the node executor whether the node job has ended (ended is set once it has)."""
        try:
            record = await self.client.get(self.record.id)
        except (WorkerError, OSError):
            return  # a restarting node executor: ask again later
        if record.finished:
            self.record = record
            self.ended.set()

    async def run(self) -> int:
        """Until the node job has ended and the head released us (or linger_s has passed)."""
        keeper = asyncio.create_task(self._keep_hold())
        try:
            if self.record.finished:
                self.ended.set()
            while not self.ended.is_set():
                try:  # a release asks at once: the head saw the end
                    await asyncio.wait_for(self.ended.wait(), POLL_S)
                except TimeoutError:
                    await self._check()
            try:
                await asyncio.wait_for(self.released.wait(), self.step.linger_s)
            except TimeoutError:
                pass
            return 0
        finally:
            keeper.cancel()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until source ends, then end sink's sending half; a broken side closes sink."""
    try:
        while data := await source.read(PIPE_CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except OSError:
        sink.close()


async def _unreachable(path: str) -> str | None:
    """Why no executor can be reached at path, or None if one accepts connections there."""
    try:
        _, writer = await asyncio.open_unix_connection(path)
    except OSError as exc:
        return exc.strerror or str(exc)
    writer.close()
    return None


# ---- the step


async def step(raw: bytes, env: Mapping[str, str], run: Runner = run_quietly) -> int:
    """The relay's life, from the step request to its exit status."""
    slurm_job_id = env.get("SLURM_JOB_ID", "")
    if not slurm_job_id.isdigit():
        print("jupyter_worker.slurmstep runs as a Slurm batch step (no SLURM_JOB_ID)", file=sys.stderr)
        return EXIT_ERROR

    def give_up(words: str) -> int:
        set_comment(slurm_job_id, error_comment(words), run, env)
        return EXIT_ERROR

    node = env.get("SLURMD_NODENAME", "")
    if not node:
        return give_up("the relay found no SLURMD_NODENAME (it runs as a Slurm batch step)")
    try:
        request = parse_request(raw, node)
    except StepError as exc:
        return give_up(f"bad step request: {exc}")
    holder = validate_holder(f"slurm-{slurm_job_id}")

    why = await _unreachable(request.socket)
    if why is not None:
        return give_up(f"no jupyter-worker executor on node {node} ({request.socket}: {why})")
    client = AsyncClient(request.socket)

    async def hold_and_submit() -> tuple[Hold, JobRecord]:
        hold = await client.hold(holder)  # first: the job must never run unheld
        return hold, await client.run(replace(request.job, holder=holder))

    try:
        hold, record = await asyncio.wait_for(hold_and_submit(), SUBMIT_TIMEOUT_S)
    except WorkerError as exc:
        return give_up(exc.message)  # the node executor refused: its own words
    except TimeoutError:
        return give_up(f"the jupyter-worker executor on node {node} did not answer within {SUBMIT_TIMEOUT_S} s")
    except OSError as exc:
        return give_up(f"no jupyter-worker executor on node {node} ({request.socket}: {exc.strerror or exc})")

    relay = Relay(request, client, hold, holder, record)
    try:
        server = await asyncio.start_server(relay.connection, "0.0.0.0", 0)
    except OSError as exc:
        return give_up(f"the relay cannot listen on node {node} ({exc.strerror or exc})")
    port = server.sockets[0].getsockname()[1]
    if not set_comment(slurm_job_id, port_comment(port, record.id), run, env):
        return EXIT_ERROR  # the head could never reach the job: end it (the hold closes)
    try:
        return await relay.run()
    finally:
        server.close()  # not wait_closed: it would wait for the pipes, which end with the process


async def _until_signalled(work: Coroutine[Any, Any, int]) -> int:
    """work's result, or EXIT_SIGNALLED at once on SIGTERM/SIGINT (scancel, Slurm's time limit):
    the process ends, its hold closes and the node executor stops the job."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    for number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(number, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        return EXIT_SIGNALLED


def main() -> None:
    raw = sys.stdin.buffer.read(MAX_REQUEST_BYTES + 1)
    code = asyncio.run(_until_signalled(step(raw, os.environ)))
    sys.stdout.flush()
    os._exit(code)  # at once: no waiting on the pipes' or the hold's orderly close


if __name__ == "__main__":
    main()
