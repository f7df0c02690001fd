"""Values between the kernel and a job: in by pickle (the kernel's own values), out in safe formats.

Going in, the named values are pickled into a file in a fresh private folder, shown read-only in
the job at its own path (a mount). The folder is 0700 when the job runs as the kernel's own user;
a kernel running as root has its jobs run as another user (`root_runs_as`, nobody), so then the
folder is 0711 (others may pass, not list) and the file 0644 under an unguessable name: only who is
told the name (the job, through its command) can open it. The folder goes when the job has ended,
or when the kernel exits.

Coming out, the job's runner (cell.py) writes each value to /work/.jupyter-worker/values/NAME.EXT.
Everything in /work is the sandboxed code's to write, so the reader here trusts nothing: it opens
only the names it asked for, only in the formats it allows (pickle only when asked for at both
ends), never reads past the policy's cap (`Policy.max_value_bytes`), and decodes with loaders that
run no code: json, np.load(allow_pickle=False), pyarrow's Parquet reader, pandas' JSON reader.
"""

from __future__ import annotations

import atexit
import inspect
import io
import json
import os
import pickle
import secrets
import shutil
import sys
import tempfile
import textwrap
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from . import cell
from .errors import ErrorReason, SpecError, WorkerError
from .formatting import inert
from .spec import python_prefixes

if TYPE_CHECKING:
    from .client import Client

VALUES_PATH = cell.VALUES_DIR.removeprefix("/work/")  # as the executor's file operations name it
DEFAULT_MAX_VALUE_BYTES = 256 << 20  # when the executor does not say (older executors)
# A value's file is decoded only when what it would take in the kernel's memory (estimated from
# its metadata or its structure, before decoding) is at most DECODE_FACTOR times the cap: a small
# file must not decode into a huge one (a bomb).
DECODE_FACTOR = 4
JSON_TOKEN_BYTES = 72  # a Python object per bracket, comma or colon (an empty dict is 64 bytes)
PARQUET_FIXED_BYTES = 8  # a number's cell in a pandas column
PARQUET_OBJECT_BYTES = 64  # a string's or a nested value's cell: a Python object each
PARQUET_COLUMN_BYTES = 1024  # a column's own bookkeeping
ERROR_BYTES = 4096  # a refusal's message, read no further
RESULT = cell.RESULT_NAME


class ValuesNotReturned(WorkerError):
    """One or more --out values did not come back; the message names each and why."""

    def __init__(self, problems: list[str]):
        super().__init__(ErrorReason.INVALID, "values not returned: " + "; ".join(problems))
        self.problems = problems

    def _render_traceback_(self) -> list[str]:
        """IPython shows this one line for a failed cell, not the reader's internal frames."""
        return [f"ValuesNotReturned: {inert(self.message)}"]


def parse_names(text: str | Iterable[str] | None, what: str) -> list[str]:
    """'a,b' (or a list) as names a cell can assign: identifiers, no keyword, each once."""
    if text is None:
        return []
    words = [w.strip() for w in (text.split(",") if isinstance(text, str) else text)]
    names: list[str] = []
    for word in words:
        if not word.isidentifier() or word in ("True", "False", "None"):
            raise SpecError(f"{what}: {word!r} is not a variable name")
        if word in names:
            raise SpecError(f"{what}: {word} is named twice")
        names.append(word)
    return names


def runtime_root(other_user: bool) -> str:
    """Where input folders are made: the user's Jupyter runtime folder (not /tmp, which a job's own
    /tmp would hide on older sandboxes, and where other users could see the folder's name); the
    system's temporary folder only for a kernel whose jobs run as itself (never for root's)."""
    try:
        from jupyter_core.paths import jupyter_runtime_dir  # noqa: PLC0415

        root = jupyter_runtime_dir()
        os.makedirs(root, mode=0o700, exist_ok=True)
        return root
    except (ImportError, OSError) as exc:
        if other_user:
            raise SpecError(f"--in: no private Jupyter runtime folder for the values ({exc})") from None
        return tempfile.gettempdir()


_LIVE: set[str] = set()


def _pickled(name: str, value: Any, what: str) -> bytes:
    """One value pickled; one error naming it (or, for run(), the argument) when it cannot be."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # a lock, a generator, an open file: named, not a traceback
        label = cell.RUN_NAMES.get(name, name)
        if name in ("__jw_args__", "__jw_kwargs__"):  # which one, by position or keyword
            items = enumerate(value, 1) if isinstance(value, tuple) else dict(value).items()
            for key, item in items:
                try:
                    pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
                except Exception:  # the first that fails is the one named
                    label = f"argument {key}"
                    break
        raise SpecError(f"{what}: {label} cannot be pickled ({type(exc).__name__}: {exc})") from None


class Inputs:
    """The named kernel values, pickled into a private folder for one job (see the module's notes).
    The file holds {name: that value's own pickle}, so that each is named when it cannot be pickled
    here or unpickled in the job; the job finds it through its environment (`env`), never its
    command line (every local user sees a process's arguments)."""

    def __init__(self, values: Mapping[str, Any], other_user: bool | None = None, what: str = "--in"):
        other_user = os.geteuid() == 0 if other_user is None else other_user
        pickles = {name: _pickled(name, value, what) for name, value in values.items()}
        self.folder = tempfile.mkdtemp(prefix="jupyter-worker-in-", dir=runtime_root(other_user))
        _LIVE.add(self.folder)
        try:
            self.path = os.path.join(self.folder, f"{secrets.token_urlsafe(24)}.pickle")
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                pickle.dump(pickles, out, protocol=pickle.HIGHEST_PROTOCOL)
            if other_user:  # the job runs as another user (nobody): it may pass, not list
                os.chmod(self.path, 0o644)
                os.chmod(self.folder, 0o711)
        except BaseException:
            self.remove()
            raise

    @property
    def mount(self) -> str:
        """The folder, read-only at its own path in the job."""
        return f"{self.folder}:{self.folder}"

    @property
    def env(self) -> dict[str, str]:
        """The job's environment variable naming the file."""
        return {cell.IN_ENV: self.path}

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        _LIVE.discard(self.folder)


@atexit.register
def _remove_all() -> None:
    """The kernel exits: no input folder outlives it."""
    for folder in list(_LIVE):
        shutil.rmtree(folder, ignore_errors=True)


def gather(namespace: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    """The named kernel variables (--in), each of which must be defined."""
    missing = [name for name in names if name not in namespace]
    if missing:
        raise SpecError(f"--in: {', '.join(missing)} not defined in the kernel")
    return {name: namespace[name] for name in names}


def runner_command(code: str, *, outputs: list[str], out_pickle: bool, max_value_bytes: int | None) -> list[str]:
    """The job's command: this interpreter running the runner (cell.py) on the cell's code, as
    `-m jupyter_worker.cell` where the job sees this package (installed in a Python prefix it is
    shown), else as `-c` with the runner's source (an editable checkout, wherever it lives). The
    --in values are named by the job's environment (Inputs.env), not here."""
    options: list[str] = []
    if outputs:
        options += ["--out", ",".join(outputs)]
    if out_pickle:
        options.append("--out-pickle")
    if max_value_bytes is not None:
        options += ["--max-value-bytes", str(max_value_bytes)]
    if runner_importable():
        return [sys.executable, "-u", "-m", cell.__name__, *options, "--", code]
    with open(cell.__file__, encoding="utf-8") as source:
        return [sys.executable, "-u", "-c", source.read(), *options, "--", code]


def runner_importable() -> bool:
    """Whether a job imports this very package: it lies inside a Python prefix the job is shown."""
    here = os.path.realpath(cell.__file__)
    shown = [*python_prefixes(), "/usr"]  # /usr: the system's own, in every job
    return any(here.startswith(os.path.realpath(prefix) + os.sep) for prefix in shown)


def max_value_bytes(client: Client) -> int:
    """The policy's cap on one value, as the executor says."""
    try:
        value = client.capabilities().get("max_value_bytes")  # Client.capabilities(): the policy as it applies
    except WorkerError:
        value = None
    return int(value) if isinstance(value, int) and value > 0 else DEFAULT_MAX_VALUE_BYTES


def _read_bounded(client: Client, job_id: str, path: str, limit: int) -> bytes:
    """A file of the job's /work, never more than limit bytes read (WorkerError past it)."""
    data = bytearray()
    while True:
        piece, size = client.read_file(job_id, path, len(data), min(1 << 20, limit + 1 - len(data)))
        if size > limit or len(data) + len(piece) > limit:
            raise WorkerError(ErrorReason.TOO_LARGE, f"{size} bytes, above the cap of {limit} bytes per value")
        if not piece:
            return bytes(data)
        data += piece
        if len(data) >= size:
            return bytes(data)


def _too_big(extension: str, estimate: int, limit: int | None) -> None:
    """Refuse a file that would decode past DECODE_FACTOR times the cap (a bomb), before decoding."""
    if limit is not None and estimate > DECODE_FACTOR * limit:
        raise WorkerError(
            ErrorReason.TOO_LARGE,
            f"its .{extension} file would take about {estimate} bytes decoded, above {DECODE_FACTOR} times "
            f"the cap of {limit} bytes per value",
        )


def json_estimate(data: bytes) -> int:
    """An upper bound on the memory json.loads takes for data: its text (up to 4 bytes a
    character) and a Python object for each bracket, comma or colon (each value follows one)."""
    tokens = data.count(b"{") + data.count(b"[") + data.count(b",") + data.count(b":")
    return 5 * len(data) + JSON_TOKEN_BYTES * tokens


def parquet_estimate(parquet: Any) -> int:
    """What a Parquet file becomes as a DataFrame, from its footer alone: every column chunk's
    uncompressed size and a cell per value (its count includes nested values)."""
    meta = parquet.metadata
    total = meta.serialized_size * JSON_TOKEN_BYTES + meta.num_columns * PARQUET_COLUMN_BYTES
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        for column in range(row_group.num_columns):
            chunk = row_group.column(column)
            fixed = chunk.physical_type not in ("BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY")
            cell_bytes = PARQUET_FIXED_BYTES if fixed else PARQUET_OBJECT_BYTES
            total += chunk.total_uncompressed_size + chunk.num_values * cell_bytes
    return total


def _npy_check(data: bytes, limit: int | None) -> None:
    """An .npy file whose header promises no more than its data holds (np.load allocates what the
    header says before reading), within the cap."""
    import numpy  # noqa: PLC0415

    source = io.BytesIO(data)
    version = numpy.lib.format.read_magic(source)
    read_header = (
        numpy.lib.format.read_array_header_1_0 if version == (1, 0) else numpy.lib.format.read_array_header_2_0
    )
    shape, _, dtype = read_header(source)
    size = dtype.itemsize
    for length in shape:
        size *= length
    if size > len(data) - source.tell():
        raise WorkerError(ErrorReason.INVALID, f"its .npy header promises {size} bytes its file does not hold")
    _too_big("npy", size, limit)


def decode(extension: str, data: bytes, allow_pickle: bool = False, limit: int | None = None) -> Any:
    """A value from its file's bytes, by safe loaders only (pickle only when allowed); with limit
    (the cap per value), refused before decoding when it would decode past DECODE_FACTOR x limit."""
    if extension in ("json", "frame.json", "series.json"):
        _too_big(extension, json_estimate(data), limit)
    if extension == "json":
        return json.loads(data.decode("utf-8", "surrogatepass"))
    if extension == "txt":
        return data.decode("utf-8", "surrogatepass")
    if extension == "bin":
        return data
    if extension == "npy":
        import numpy  # noqa: PLC0415

        _npy_check(data, limit)
        array = numpy.load(io.BytesIO(data), allow_pickle=False)
        return array[()] if array.ndim == 0 else array
    if extension in ("parquet", "series.parquet"):
        import pyarrow.parquet  # noqa: PLC0415

        if tuple(int(p) for p in pyarrow.__version__.split(".")[:3] if p.isdigit()) < (14, 0, 1):
            # earlier pyarrow unpickles extension types a file declares (CVE-2023-47248)
            raise WorkerError(
                ErrorReason.INVALID, f"Parquet is read only with pyarrow 14.0.1 or later (not {pyarrow.__version__})"
            )

        parquet = pyarrow.parquet.ParquetFile(io.BytesIO(data))
        _too_big(extension, parquet_estimate(parquet), limit)
        table = parquet.read()
        frame = table.to_pandas()
        if extension == "parquet":
            return frame
        meta = json.loads((table.schema.metadata or {}).get(b"jupyter_worker", b"{}"))
        series = frame.iloc[:, 0]
        series.name = meta.get("series_name")
        return series
    if extension in ("frame.json", "series.json"):
        import pandas  # noqa: PLC0415

        kind = "series" if extension == "series.json" else "frame"
        return pandas.read_json(io.StringIO(data.decode()), orient="table", typ=kind)
    if extension == cell.PICKLE and allow_pickle:
        return pickle.loads(data)  # asked for with --out-pickle; its risk is documented
    raise WorkerError(ErrorReason.INVALID, f"not a format this kernel reads: .{extension}")


def read_values(
    client: Client, job_id: str, names: list[str], *, allow_pickle: bool = False, limit: int | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The named values a completed job wrote: (those that came back, a problem line for each
    that did not)."""
    limit = max_value_bytes(client) if limit is None else limit
    try:
        listing = client.files(job_id, VALUES_PATH)
        entries = {e["name"]: e for e in listing["entries"] if e.get("type") == "file"}
    except WorkerError:
        entries = {}
    allowed = [*cell.FORMATS, *([cell.PICKLE] if allow_pickle else [])]
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name in names:
        found = next((ext for ext in allowed if f"{name}.{ext}" in entries), None)
        if found is None:
            problems.append(_why_not(client, job_id, name, entries, allow_pickle))
            continue
        try:
            data = _read_bounded(client, job_id, f"{VALUES_PATH}/{name}.{found}", limit)
            values[name] = decode(found, data, allow_pickle, limit)
        except WorkerError as exc:
            problems.append(f"{name}: {exc.message}")
        except Exception as exc:  # a malformed file: the sandbox wrote it, so it is named, not raised
            problems.append(f"{name}: its .{found} file cannot be read ({type(exc).__name__}: {exc})")
    return values, problems


def _why_not(client: Client, job_id: str, name: str, entries: dict[str, Any], allow_pickle: bool) -> str:
    if f"{name}.{cell.ERROR}" in entries:
        try:
            data, _ = client.read_file(job_id, f"{VALUES_PATH}/{name}.{cell.ERROR}", 0, ERROR_BYTES)
            return inert(data.decode(errors="replace"))
        except WorkerError as exc:
            return f"{name}: {exc.message}"
    if f"{name}.{cell.PICKLE}" in entries and not allow_pickle:
        return f"{name}: the job sent it pickled, which this kernel reads only with --out-pickle"
    return f"{name}: not sent back by the job"


def function_call(fn: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """run(fn, *args): the code a job runs and the values it is given. A function of an importable
    module is sent by pickle (by reference: the job imports its module, which it must see); one
    defined in __main__ (a notebook, a script) by its source, which must be self-contained: a
    top-level def (no lambda, no closure), importing inside what it uses. Arguments go by pickle."""
    inputs: dict[str, Any] = {"__jw_args__": tuple(args), "__jw_kwargs__": dict(kwargs)}
    call = f"globals()[{RESULT!r}] = {{fn}}(*__jw_args__, **__jw_kwargs__)"
    if getattr(fn, "__module__", None) not in ("__main__", None):
        inputs["__jw_fn__"] = fn
        return call.format(fn="__jw_fn__"), inputs
    name = getattr(fn, "__name__", "")
    code = getattr(fn, "__code__", None)
    if name == "<lambda>" or "<locals>" in getattr(fn, "__qualname__", "<locals>") or code is None or code.co_freevars:
        raise SpecError(
            f"run: {name or type(fn).__name__} is not a top-level function (a lambda, a closure or a nested "
            "function cannot be sent by its source; define it with def at the top level)"
        )
    try:
        source = textwrap.dedent(inspect.getsource(fn))
    except (OSError, TypeError) as exc:
        raise SpecError(f"run: the source of {name} cannot be found ({exc})") from None
    return f"{source}\n{call.format(fn=name)}\n", inputs
