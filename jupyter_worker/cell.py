"""The runner of a %%worker Python cell, INSIDE the job: values in, display hooks, the cell, values out.

The kernel runs it in the job as `python -u -m jupyter_worker.cell [options] -- CODE` where the job
sees this package installed, else as `python -u -c SOURCE [options] -- CODE` (so the job needs
nothing of jupyter_worker where it can see it: an editable checkout may live anywhere, even under
/work), and imports it itself for the names the two sides share. So it imports only the standard
library at the top; numpy, pandas, pyarrow, matplotlib and IPython when there.

    env JUPYTER_WORKER_IN  a pickle of {name: pickle of the value} the kernel wrote (its own values:
                       it trusts them); named in the environment, not the command line, which every
                       local user can read (--in FILE names it too: tests, a job started by hand)
    --out a,b          the names whose values are written back when the cell completes
    --out-pickle       a value with no safe format is pickled instead of refused
    --max-value-bytes  the policy's cap on one value (the kernel's reader enforces it too)
    --values-dir DIR   where values go (default VALUES_DIR)

Going out, each value becomes VALUES_DIR/NAME.EXT in a safe format (see FORMATS), or NAME.error
with the reason it was not sent; the kernel's reader (values.py) trusts none of these files.

Rich output: `display(...)` (a builtin here, and IPython.display's), IPython display objects,
a last expression's value (as in a notebook), `plt.show()` and figures left open at the end (PNG,
through a non-interactive backend) are written as one JSON line each to the display channel
(env JUPYTER_WORKER_DISPLAY_FD, see contracts); without one, their text goes to stdout.
"""

from __future__ import annotations

import ast
import base64
import builtins
import importlib.abc
import importlib.util
import io
import json
import linecache
import os
import pickle
import sys
import traceback
import types
from typing import Any

VALUES_DIR = "/work/.jupyter-worker/values"
DISPLAY_FD_ENV = "JUPYTER_WORKER_DISPLAY_FD"
IN_ENV = "JUPYTER_WORKER_IN"
# run(fn, ...)'s own names for what it sends, as errors call them
RUN_NAMES = {"__jw_fn__": "the function", "__jw_args__": "the arguments", "__jw_kwargs__": "the keyword arguments"}
RESULT_NAME = "return"  # run(fn): the function's return value (a keyword: never a variable's name)
# The safe formats, by file extension, and what the kernel gets back from each.
FORMATS = {
    "json": "None, bool, int, float, str, list, dict with str keys (a tuple comes back as a list)",
    "txt": "str",
    "bin": "bytes (a bytearray comes back as bytes)",
    "npy": "a numpy array or scalar (not of dtype object)",
    "parquet": "a pandas DataFrame (pyarrow)",
    "series.parquet": "a pandas Series (pyarrow)",
    "frame.json": "a pandas DataFrame (without pyarrow: JSON, orient='table')",
    "series.json": "a pandas Series (without pyarrow: JSON, orient='table')",
}
PICKLE = "pickle"  # only with --out-pickle on both sides
ERROR = "error"
JSON_DEPTH = 100
# A cell's display output: at most this many items and bytes, the job's own politeness here and
# enforced again by the kernel (richoutput.py uses these same numbers; docs/magics.md quotes them).
MAX_DISPLAYS = 200
MAX_DISPLAY_BYTES = 32 << 20
MPL_BACKEND = "_jupyter_worker_cell"  # matplotlib's backend in the job (module://...)


class Refused(Exception):
    """A value that is not sent back; the message names it and its type."""


def type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"


def _jsonable(value: Any, depth: int = 0) -> bool:
    if depth > JSON_DEPTH:
        return False
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_jsonable(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(key, str) and _jsonable(item, depth + 1) for key, item in value.items())
    return False


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def encode(value: Any, allow_pickle: bool = False) -> tuple[str, bytes]:
    """The extension and bytes of a value in the first safe format that takes it; Refused if none
    does (and pickling is not allowed)."""
    numpy = sys.modules.get("numpy")
    pandas = sys.modules.get("pandas")
    if isinstance(value, str):
        return "txt", value.encode("utf-8", "surrogatepass")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "bin", bytes(value)
    if numpy is not None and isinstance(value, (numpy.ndarray, numpy.generic)) and not value.dtype.hasobject:
        buffer = io.BytesIO()
        numpy.save(buffer, numpy.asarray(value), allow_pickle=False)
        return "npy", buffer.getvalue()
    if pandas is not None and isinstance(value, (pandas.DataFrame, pandas.Series)):
        try:
            return _encode_pandas(value, pandas)
        except Exception as exc:  # a column pyarrow cannot type (objects of any class)
            if not allow_pickle:
                raise Refused(f"a {type_name(value)} that has no safe format ({exc})") from None
    elif _jsonable(value):
        text = json.dumps(value, ensure_ascii=False)
        return "json", text.encode("utf-8", "surrogatepass")
    if allow_pickle:
        return PICKLE, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    raise Refused(
        f"a {type_name(value)} has no safe format (JSON-able values, str, bytes, numpy arrays, "
        "pandas DataFrames and Series); --out-pickle sends it pickled"
    )


def _encode_pandas(value: Any, pandas: Any) -> tuple[str, bytes]:
    series = isinstance(value, pandas.Series)
    if _has_pyarrow():
        import pyarrow  # noqa: PLC0415
        import pyarrow.parquet  # noqa: PLC0415

        frame = value.to_frame(name="value" if value.name is None else value.name) if series else value
        table = pyarrow.Table.from_pandas(frame)
        if series:
            meta = dict(table.schema.metadata or {})
            meta[b"jupyter_worker"] = json.dumps({"series_name": _plain(value.name)}).encode()
            table = table.replace_schema_metadata(meta)
        buffer = io.BytesIO()
        pyarrow.parquet.write_table(table, buffer)
        return ("series.parquet" if series else "parquet"), buffer.getvalue()
    text = value.to_json(orient="table")
    return ("series.json" if series else "frame.json"), text.encode()


def _plain(name: Any) -> Any:
    return name if name is None or isinstance(name, (str, int, float, bool)) else str(name)


def write_value(folder: str, name: str, value: Any, allow_pickle: bool, max_bytes: int | None) -> str | None:
    """Write one value as folder/NAME.EXT (or NAME.error); returns the refusal, None when sent."""
    try:
        extension, data = encode(value, allow_pickle)
        if max_bytes is not None and len(data) > max_bytes:
            raise Refused(f"{len(data)} bytes as {extension}, above the cap of {max_bytes} bytes per value")
    except Refused as refused:
        why = f"{name}: {refused}"
        with open(os.path.join(folder, f"{name}.{ERROR}"), "w", encoding="utf-8") as out:
            out.write(why)
        return why
    with open(os.path.join(folder, f"{name}.{extension}"), "wb") as out:
        out.write(data)
    return None


# ---- display


class DisplayChannel:
    """Display data as JSON lines to the display fd (bounded in count and bytes); text to stdout
    where the job has no display channel."""

    def __init__(self) -> None:
        fd = os.environ.get(DISPLAY_FD_ENV)
        try:
            self.out = os.fdopen(int(fd), "wb", buffering=0) if fd and fd.isdigit() else None
        except OSError:  # named but not open (a job started by hand): text instead
            self.out = None
        self.count = 0
        self.bytes = 0
        self.warned = False

    def send(self, data: dict[str, Any], metadata: dict[str, Any] | None = None) -> None:
        data = {mime: _jsonable_data(value) for mime, value in data.items()}
        if self.out is None:
            if data.get("text/plain"):
                print(data["text/plain"])
            return
        try:
            line = json.dumps({"data": data, "metadata": metadata or {}}).encode() + b"\n"
        except (TypeError, ValueError):  # a type's own bundle that JSON cannot carry: its text only
            line = json.dumps({"data": {"text/plain": str(data.get("text/plain", ""))}, "metadata": {}}).encode()
            line += b"\n"
        if self.count >= MAX_DISPLAYS or self.bytes + len(line) > MAX_DISPLAY_BYTES:
            if not self.warned:
                past = f"{MAX_DISPLAYS} items or {MAX_DISPLAY_BYTES} bytes"
                print(f"[jupyter-worker: display output past {past} dropped]", file=sys.stderr)
                self.warned = True
            return
        self.count += 1
        self.bytes += len(line)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            self.out.write(line)
        except OSError:  # the reader is gone: the job goes on without rich output
            self.out = None


def _jsonable_data(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):  # IPython's PNG and JPEG formatters give bytes
        return base64.b64encode(value).decode()
    return value


CHANNEL: DisplayChannel | None = None
_FORMATTER: Any = None


def _figure_bundle(figure: Any) -> dict[str, Any]:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return {
        "text/plain": repr(figure),
        "image/png": buffer.getvalue(),
    }


def bundle_of(value: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The mime bundle of a value, as IPython formats it (matplotlib figures as PNG)."""
    matplotlib_figure = sys.modules.get("matplotlib.figure")
    if matplotlib_figure is not None and isinstance(value, matplotlib_figure.Figure):
        return _figure_bundle(value), {}
    if _FORMATTER is None:
        return {"text/plain": repr(value)}, {}
    data, metadata = _FORMATTER.format(value)
    return dict(data), dict(metadata)


def display(*values: Any, raw: bool = False, metadata: dict[str, Any] | None = None, **_: Any) -> None:
    """IPython's display(), to the job's display channel (display ids and updates are not kept)."""
    if CHANNEL is None:
        return
    for value in values:
        if raw and isinstance(value, dict):
            CHANNEL.send(value, metadata)
            continue
        data, meta = bundle_of(value)
        if data:  # an _ipython_display_ object displayed itself
            CHANNEL.send(data, {**meta, **(metadata or {})})


def _clear_output(*_: Any, **__: Any) -> None:
    """clear_output() has nothing to clear in a job's stream of outputs."""


def show_figures(*_: Any, **__: Any) -> None:
    """plt.show(): every open figure as PNG, then closed."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    for number in pyplot.get_fignums():
        display(pyplot.figure(number))
    pyplot.close("all")


class _Backend(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """matplotlib's backend here (MPLBACKEND=module://_jupyter_worker_cell): Agg's canvas, and a
    show() that displays; made only when matplotlib asks for it."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        return importlib.util.spec_from_loader(name, self) if name == MPL_BACKEND else None

    def create_module(self, spec: Any) -> None:
        return None

    def exec_module(self, module: types.ModuleType) -> None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415

        module.FigureCanvas = FigureCanvasAgg  # type: ignore[attr-defined]
        module.show = show_figures  # type: ignore[attr-defined]


def install_display() -> None:
    """display() everywhere a cell may find it; matplotlib drawing to PNG through this module."""
    global CHANNEL, _FORMATTER
    CHANNEL = DisplayChannel()
    builtins.display = display  # type: ignore[attr-defined]
    try:
        import IPython.display  # noqa: PLC0415
        from IPython.core import display_functions  # noqa: PLC0415
        from IPython.core.formatters import DisplayFormatter  # noqa: PLC0415
    except ImportError:
        pass
    else:
        _FORMATTER = DisplayFormatter()
        for where in (display_functions, IPython.display):
            where.display = display  # type: ignore[attr-defined]
            where.clear_output = _clear_output  # type: ignore[attr-defined]
    sys.meta_path.append(_Backend())
    os.environ.setdefault("MPLBACKEND", f"module://{MPL_BACKEND}")


# ---- the cell


def _options(argv: list[str]) -> tuple[dict[str, Any], str]:
    options: dict[str, Any] = {
        "in": os.environ.pop(IN_ENV, None),
        "out": [],
        "pickle": False,
        "max": None,
        "dir": VALUES_DIR,
    }
    words = list(argv)
    while words and words[0] != "--":
        word = words.pop(0)
        if word == "--in":
            options["in"] = words.pop(0)
        elif word == "--out":
            options["out"] = [n for n in words.pop(0).split(",") if n]
        elif word == "--out-pickle":
            options["pickle"] = True
        elif word == "--max-value-bytes":
            options["max"] = int(words.pop(0))
        elif word == "--values-dir":  # elsewhere than /work (the tests', run outside a sandbox)
            options["dir"] = words.pop(0)
        else:
            raise SystemExit(f"jupyter-worker cell runner: unknown option {word!r}")
    return options, "\n".join(words[1:])


def run_cell(code: str, namespace: dict[str, Any]) -> None:
    """The cell as a notebook runs it: its last expression's value is displayed."""
    filename = "<cell>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    tree = ast.parse(code, filename)
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        tree.body.pop()
    # dont_inherit: the cell gets none of this file's __future__ imports (annotations stay objects)
    exec(compile(tree, filename, "exec", dont_inherit=True), namespace)
    if last is not None:
        value = eval(compile(ast.Expression(last.value), filename, "eval", dont_inherit=True), namespace)
        if value is not None:
            display(value)


def write_values(
    folder: str, namespace: dict[str, Any], names: list[str], allow_pickle: bool, max_bytes: int | None
) -> None:
    if names:  # /work/.jupyter-worker only when there are values to leave there
        os.makedirs(folder, exist_ok=True)
    for name in names:
        if name not in namespace:
            why = f"{name}: not defined in the job when the cell ended"
            with open(os.path.join(folder, f"{name}.{ERROR}"), "w", encoding="utf-8") as out:
                out.write(why)
        else:
            why = write_value(folder, name, namespace[name], allow_pickle, max_bytes)
        if why:
            print(f"[jupyter-worker: value not sent back: {why}]", file=sys.stderr)


def load_inputs(path: str) -> dict[str, Any]:
    """The kernel's values, each unpickled on its own, so that one that cannot be (its class or
    function defined in the notebook: the job has no such module) is one line naming it."""
    with open(path, "rb") as source:
        pickles = pickle.load(source)
    loaded: dict[str, Any] = {}
    for name, data in pickles.items():
        try:
            loaded[name] = pickle.loads(data)
        except Exception as exc:  # any failure is the same message
            label = RUN_NAMES.get(name, name)
            print(
                f"jupyter-worker: {label} cannot be unpickled in the job ({type(exc).__name__}: {exc}). "
                "A class or function defined in the notebook does not exist in the job: define it in a "
                "module the job can import, or send plain data (dicts, lists, arrays, DataFrames).",
                file=sys.stderr,
            )
            raise SystemExit(1) from None
    return loaded


def main(argv: list[str] | None = None) -> None:
    options, code = _options(sys.argv[1:] if argv is None else argv)
    install_display()
    user = types.ModuleType("__main__")  # the cell's own __main__, apart from this runner
    user.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = user
    sys.argv = ["<cell>"]
    if options["in"]:
        user.__dict__.update(load_inputs(options["in"]))
    try:
        run_cell(code, user.__dict__)
        show_figures()
    except SystemExit:
        raise
    except BaseException as exc:
        # The cell's own frames only: the runner's are not the user's business.
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != "<cell>":
            tb = tb.tb_next
        traceback.print_exception(type(exc), exc, tb)
        raise SystemExit(1) from None
    write_values(options["dir"], user.__dict__, options["out"], options["pickle"], options["max"])


if __name__ == "__main__":
    main()
