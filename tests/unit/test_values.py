"""Values between a kernel and a job (issue 16): the in-job runner (cell.py, run here as a plain
subprocess, values to a temporary folder) writes safe formats; the kernel's reader (values.py)
trusts none of the job's files. Pure logic: no root, no sandbox."""

from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys

import numpy
import pandas
import pytest

from jupyter_worker import cell, values
from jupyter_worker.errors import SpecError, WorkerError


class FolderClient:
    """The executor's file operations (files, read_file, capabilities) over a local folder standing
    for the job's /work: what the reader sees of a job's files, whatever wrote them."""

    def __init__(self, work: str, max_value_bytes: int = 1 << 20):
        self.work = work
        self.max_value_bytes = max_value_bytes
        self.read_bytes = 0

    def capabilities(self) -> dict:  # as Client.capabilities(): the policy's settings for this caller
        return {"max_value_bytes": self.max_value_bytes, "max_jobs_per_user": 4}

    def files(self, job_id: str, path: str) -> dict:
        folder = os.path.join(self.work, path)
        if not os.path.isdir(folder):
            raise WorkerError("not_found", f"/work/{path}: no such folder")
        entries = [
            {"name": n, "type": "file", "size": os.path.getsize(os.path.join(folder, n))} for n in os.listdir(folder)
        ]
        return {"path": path, "entries": entries, "truncated": False}

    def read_file(self, job_id: str, path: str, offset: int, max_bytes: int) -> tuple[bytes, int]:
        with open(os.path.join(self.work, path), "rb") as f:
            f.seek(offset)
            data = f.read(min(max_bytes, 1 << 20))
            self.read_bytes += len(data)
            return data, os.fstat(f.fileno()).st_size


def run_runner(tmp_path, code: str, *options: str, inputs: dict | None = None) -> subprocess.CompletedProcess:
    """cell.py's source run as the job runs it (python -c SOURCE ... -- CODE), values under tmp_path,
    the inputs (as values.Inputs writes them) named by the environment."""
    values_dir = tmp_path / cell.VALUES_DIR.removeprefix("/")
    words = ["--values-dir", str(values_dir), *options]
    env = {k: v for k, v in os.environ.items() if k != cell.DISPLAY_FD_ENV}
    if inputs is not None:
        given = tmp_path / "in.pickle"
        given.write_bytes(pickle.dumps({name: pickle.dumps(value) for name, value in inputs.items()}))
        env[cell.IN_ENV] = str(given)
    with open(cell.__file__) as source:
        runner = source.read()
    return subprocess.run(
        [sys.executable, "-u", "-c", runner, *words, "--", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def read_back(tmp_path, names, **kwargs):
    client = FolderClient(str(tmp_path / "work"), **{k: kwargs.pop(k) for k in ("max_value_bytes",) if k in kwargs})
    return values.read_values(client, "job", names, **kwargs)


def test_every_safe_type_goes_out_and_comes_back_as_itself(tmp_path):
    code = (
        "import numpy as np, pandas as pd\n"
        "j = {'a': [1, 2.5, None, True], 'b': {'c': 'd'}}\nt = (1, (2, 3))\ns = 'héllo \\U0001f600'\n"
        "b = bytes(range(256))\nba = bytearray(b'xy')\narr = np.arange(12, dtype=np.int16).reshape(3, 4)\n"
        "sc = np.float32(1.5)\ndf = pd.DataFrame({'x': [1, 2], 'y': ['a', 'b']}, index=['r1', 'r2'])\n"
        "se = pd.Series([1.0, 2.0], name='z')\nn = None\ni = 2**80"
    )
    names = "j,t,s,b,ba,arr,sc,df,se,n,i"
    done = run_runner(tmp_path, code, "--out", names)
    assert done.returncode == 0, done.stderr
    got, problems = read_back(tmp_path, names.split(","))
    assert problems == []
    assert got["j"] == {"a": [1, 2.5, None, True], "b": {"c": "d"}}
    assert got["t"] == [1, [2, 3]]  # tuples come back as lists (JSON)
    assert got["s"] == "héllo \U0001f600" and got["b"] == bytes(range(256)) and got["ba"] == b"xy"
    assert got["arr"].dtype == numpy.int16 and got["arr"].tolist() == numpy.arange(12).reshape(3, 4).tolist()
    assert isinstance(got["sc"], numpy.float32) and got["sc"] == 1.5
    pandas.testing.assert_frame_equal(got["df"], pandas.DataFrame({"x": [1, 2], "y": ["a", "b"]}, index=["r1", "r2"]))
    pandas.testing.assert_series_equal(got["se"], pandas.Series([1.0, 2.0], name="z"))
    assert got["n"] is None and got["i"] == 2**80


def test_a_value_without_a_safe_format_is_refused_naming_its_type(tmp_path):
    code = "import numpy as np\nclass Thing: pass\nst = {1, 2}\nth = Thing()\nobj = np.array([object()])\nok = 1"
    done = run_runner(tmp_path, code, "--out", "st,th,obj,ok,gone")
    assert done.returncode == 0
    assert "value not sent back: st: a set has no safe format" in done.stderr
    got, problems = read_back(tmp_path, ["st", "th", "obj", "ok", "gone"])
    assert got == {"ok": 1}
    assert problems[0].startswith("st: a set has no safe format") and "--out-pickle" in problems[0]
    assert problems[1].startswith("th: a __main__.Thing has no safe format")
    assert problems[2].startswith("obj: a numpy.ndarray has no safe format")
    assert problems[3] == "gone: not defined in the job when the cell ended"


def test_dict_keys_must_be_strings_and_nesting_is_bounded(tmp_path):
    code = "k = {1: 'a'}\ndeep = []\nx = deep\nfor _ in range(500):\n    x.append([]); x = x[0]"
    run_runner(tmp_path, code, "--out", "k,deep")
    got, problems = read_back(tmp_path, ["k", "deep"])
    assert got == {} and all("has no safe format" in p for p in problems)


def test_pickle_only_when_both_sides_ask_for_it(tmp_path):
    done = run_runner(tmp_path, "st = {1, 2}", "--out", "st", "--out-pickle")
    assert done.returncode == 0
    got, problems = read_back(tmp_path, ["st"])
    assert got == {} and problems == ["st: the job sent it pickled, which this kernel reads only with --out-pickle"]
    got, problems = read_back(tmp_path, ["st"], allow_pickle=True)
    assert got == {"st": {1, 2}} and problems == []


def test_a_planted_pickle_is_never_loaded_without_out_pickle(tmp_path):
    """The job controls /work: a .pickle beside (or instead of) a safe file is never unpickled."""
    folder = tmp_path / "work" / ".jupyter-worker" / "values"
    folder.mkdir(parents=True)
    marker = tmp_path / "pwned"
    evil = pickle.dumps(type("E", (), {"__reduce__": lambda self: (open, (str(marker), "w"))})())
    (folder / "v.pickle").write_bytes(evil)
    (folder / "w.pickle").write_bytes(evil)
    (folder / "w.json").write_text("7")
    got, problems = read_back(tmp_path, ["v", "w"])
    assert got == {"w": 7} and "reads only with --out-pickle" in problems[0]
    assert not marker.exists()


def test_the_reader_never_reads_past_the_cap(tmp_path):
    folder = tmp_path / "work" / ".jupyter-worker" / "values"
    folder.mkdir(parents=True)
    (folder / "big.bin").write_bytes(b"x" * (3 << 20))
    client = FolderClient(str(tmp_path / "work"), max_value_bytes=1 << 20)
    got, problems = values.read_values(client, "job", ["big"])
    assert got == {} and problems == [f"big: {3 << 20} bytes, above the cap of {1 << 20} bytes per value"]
    assert client.read_bytes <= (1 << 20) + 1


def test_the_runner_refuses_a_value_past_the_cap(tmp_path):
    done = run_runner(tmp_path, "b = b'x' * 5000", "--out", "b", "--max-value-bytes", "1000")
    assert "b: 5000 bytes as bin, above the cap of 1000 bytes per value" in done.stderr


def test_malformed_files_are_named_not_raised(tmp_path):
    folder = tmp_path / "work" / ".jupyter-worker" / "values"
    folder.mkdir(parents=True)
    (folder / "a.json").write_text("{not json")
    (folder / "b.npy").write_bytes(b"\x93NUMPY garbage")
    (folder / "c.parquet").write_bytes(b"PAR1 nope")
    (folder / "d.error").write_text("d: \x1b[31mred\u202e")
    got, problems = read_back(tmp_path, ["a", "b", "c", "d"])
    assert got == {}
    assert [p.split(":")[0] for p in problems] == ["a", "b", "c", "d"]
    assert "cannot be read" in problems[0] and "\\x1b" in problems[3] and "\\u202e" in problems[3]


def test_inputs_reach_the_cell_and_a_failing_cell_sends_nothing(tmp_path):
    done = run_runner(tmp_path, "c = a + sum(b)\nprint(c)", "--out", "c", inputs={"a": 1, "b": [2, 3]})
    assert done.stdout == "6\n"
    assert read_back(tmp_path, ["c"])[0] == {"c": 6}
    done = run_runner(tmp_path / "2", "c = 1\nraise ValueError('boom')", "--out", "c")
    assert done.returncode == 1
    assert done.stderr.startswith("Traceback") and 'File "<cell>", line 2' in done.stderr
    assert "ValueError: boom" in done.stderr and "jupyter_worker" not in done.stderr
    assert not (tmp_path / "2" / "work").exists()
    assert run_runner(tmp_path / "3", "raise SystemExit(3)").returncode == 3


def test_names_are_checked():
    assert values.parse_names("a, b_2", "--out") == ["a", "b_2"]
    for bad in ("a-b", "1a", "a,a", "None", "x.y"):
        with pytest.raises(SpecError):
            values.parse_names(bad, "--out")


def test_input_folders_are_private_and_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    mine = values.Inputs({"a": 1}, other_user=False)
    assert os.stat(mine.folder).st_mode & 0o777 == 0o700 and os.stat(mine.path).st_mode & 0o777 == 0o600
    other = values.Inputs({"a": 1}, other_user=True)
    assert os.stat(other.folder).st_mode & 0o777 == 0o711 and os.stat(other.path).st_mode & 0o777 == 0o644
    assert len(os.path.basename(other.path)) > 30  # unguessable: the folder cannot be listed by others
    assert mine.mount == f"{mine.folder}:{mine.folder}"
    with open(other.path, "rb") as f:
        assert {k: pickle.loads(v) for k, v in pickle.load(f).items()} == {"a": 1}
    assert other.env == {cell.IN_ENV: other.path}
    mine.remove()
    assert not os.path.exists(mine.folder)
    values._remove_all()
    assert not os.path.exists(other.folder)
    with pytest.raises(SpecError, match="cannot be pickled"):
        values.Inputs({"g": (x for x in ())})
    assert os.listdir(tmp_path) == []


def top_level(x, y=1):
    return x * y


def test_functions_go_by_reference_or_by_source():
    code, given = values.function_call(json.dumps, ([1],), {})
    assert given["__jw_fn__"] is json.dumps and "__jw_fn__(*__jw_args__" in code
    top_level.__module__ = "__main__"
    try:
        code, given = values.function_call(top_level, (3,), {"y": 2})
    finally:
        top_level.__module__ = __name__
    assert code.startswith("def top_level(x, y=1):") and given == {"__jw_args__": (3,), "__jw_kwargs__": {"y": 2}}
    namespace: dict = dict(given)
    exec(code, namespace)
    assert namespace["return"] == 6

    def inner():
        return 1

    inner.__module__ = "__main__"
    with pytest.raises(SpecError, match="not a top-level function"):
        values.function_call(inner, (), {})
    lam = lambda: 1  # noqa: E731
    lam.__module__ = "__main__"
    with pytest.raises(SpecError, match="not a top-level function"):
        values.function_call(lam, (), {})


def test_without_pyarrow_frames_go_as_table_json():
    frame = pandas.DataFrame({"x": [1, 2]})
    text = frame.to_json(orient="table").encode()
    pandas.testing.assert_frame_equal(values.decode("frame.json", text), frame)


def test_the_runner_works_the_same_as_a_module_where_the_job_sees_the_package(tmp_path):
    """An installed package runs as `-m jupyter_worker.cell`; an editable checkout sends the source."""
    package_parent = os.path.dirname(os.path.dirname(cell.__file__))
    command = values.runner_command("x = 6 * 7", outputs=["x"], out_pickle=False, max_value_bytes=None)
    assert command[3] == ("jupyter_worker.cell" if values.runner_importable() else open(cell.__file__).read())
    module = [sys.executable, "-u", "-m", "jupyter_worker.cell", "--values-dir", str(tmp_path / "work"), "--out", "x"]
    env = {**os.environ, "PYTHONPATH": package_parent}
    done = subprocess.run([*module, "--", "x = 6 * 7\nx"], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "42\n"
    with open(tmp_path / "work" / "x.json") as f:
        assert json.load(f) == 42


def test_a_json_bomb_is_refused_before_it_is_decoded(tmp_path):
    bomb = b"[" + b"{}," * 300_000 + b"{}]"  # under 1 MB stored; json.loads would make 300,000 dicts
    with pytest.raises(WorkerError, match=r"would take about .* above 4 times the cap"):
        values.decode("json", bomb, limit=1 << 20)
    with pytest.raises(WorkerError, match="would take about"):
        values.decode("frame.json", bomb, limit=1 << 20)
    assert values.decode("json", b'{"a": [1, 2, 3]}', limit=1 << 20) == {"a": [1, 2, 3]}
    folder = tmp_path / "work" / values.VALUES_PATH
    folder.mkdir(parents=True)
    (folder / "x.json").write_bytes(bomb)
    got, problems = read_back(tmp_path, ["x"], max_value_bytes=1 << 20)
    assert got == {} and problems[0].startswith("x: its .json file would take about")


def test_an_npy_header_promising_more_than_its_file_holds_is_refused_before_loading(tmp_path):
    buffer = io.BytesIO()
    numpy.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": (1 << 30,)})
    with pytest.raises(WorkerError, match="promises 8589934592 bytes"):
        values.decode("npy", buffer.getvalue() + b"\0" * 64, limit=1 << 20)
    buffer = io.BytesIO()
    numpy.save(buffer, numpy.arange(1000.0))
    with pytest.raises(WorkerError, match="above 4 times the cap of 1000 bytes"):
        values.decode("npy", buffer.getvalue(), limit=1000)
    assert values.decode("npy", buffer.getvalue(), limit=1 << 20).tolist() == list(numpy.arange(1000.0))


def test_a_parquet_file_that_would_decode_far_past_the_cap_is_refused_from_its_metadata():
    frame = pandas.DataFrame({"s": [""] * 400_000, "n": [0] * 400_000})  # compresses to almost nothing
    extension, data = cell.encode(frame)
    assert extension == "parquet" and len(data) < 1 << 18
    with pytest.raises(WorkerError, match=r"its \.parquet file would take about"):
        values.decode("parquet", data, limit=1 << 18)
    small = pandas.DataFrame({"x": [1.5, 2.5], "y": ["a", "b"]})
    pandas.testing.assert_frame_equal(values.decode("parquet", cell.encode(small)[1], limit=1 << 18), small)


def test_an_unpicklable_input_is_named_and_run_says_which_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(SpecError, match=r"^--in: lock cannot be pickled \(TypeError"):
        values.Inputs({"ok": 1, "lock": __import__("threading").Lock()})
    with pytest.raises(SpecError, match=r"^run\(\) arguments: argument 2 cannot be pickled"):
        values.Inputs({"__jw_args__": (1, (x for x in ()))}, what="run() arguments")
    with pytest.raises(SpecError, match=r"^run\(\) arguments: argument power cannot be pickled"):
        values.Inputs({"__jw_kwargs__": {"power": (x for x in ())}}, what="run() arguments")
    assert os.listdir(tmp_path) == []


def test_the_input_file_is_named_by_the_jobs_environment_never_its_command(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    inputs = values.Inputs({"a": 1}, other_user=False)
    try:
        command = values.runner_command("print(a)", outputs=["b"], out_pickle=False, max_value_bytes=10)
        assert not any(inputs.path in word or inputs.folder in word for word in command)
        assert inputs.env == {cell.IN_ENV: inputs.path}
    finally:
        inputs.remove()


def test_a_root_kernel_never_puts_its_inputs_in_the_system_temporary_folder(monkeypatch):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", "/proc/no-such-place/runtime")  # cannot be made
    with pytest.raises(SpecError, match="no private Jupyter runtime folder"):
        values.Inputs({"a": 1}, other_user=True)


def test_a_class_defined_in_the_notebook_is_one_clear_message_in_the_job(tmp_path, monkeypatch):
    local = type("Local", (), {"__module__": "__main__"})  # as a class defined in a notebook is
    monkeypatch.setattr(sys.modules["__main__"], "Local", local, raising=False)
    given = tmp_path / "in.pickle"
    given.write_bytes(pickle.dumps({"obj": pickle.dumps(local())}))
    env = {k: v for k, v in os.environ.items() if k != cell.DISPLAY_FD_ENV}
    env[cell.IN_ENV] = str(given)
    with open(cell.__file__) as source:
        runner = source.read()
    done = subprocess.run(
        [sys.executable, "-c", runner, "--", "print(obj)"], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("jupyter-worker: obj cannot be unpickled in the job (AttributeError")
    assert "defined in the notebook" in done.stderr
