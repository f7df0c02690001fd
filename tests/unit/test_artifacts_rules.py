"""The pure rules of files back and artifacts: which names may be written, which paths a glob takes,
how --artifacts is parsed and shown."""

from __future__ import annotations

import time

import pytest

from jupyter_worker.errors import SpecError, WorkerError
from jupyter_worker.flags import job_request
from jupyter_worker.formatting import artifacts_line, bytes_words
from jupyter_worker.limits import Limits
from jupyter_worker.spec import Artifacts, Glob, JobRecord, JobRequest, JobStatus, Mount
from jupyter_worker.transfer import KIND_WORDS, Download, never_copied, unsafe_name, work_path


@pytest.mark.parametrize("name", ["model.pt", "a b", "Ünïcödé.txt", "...", ".hidden", "x" * 255, "日本" * 42])
def test_plain_names_may_be_written(name):
    assert unsafe_name(name) is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "a/b",
        "a\0b",
        "esc\x1b[31m",
        "new\nline",
        "bell\x07",
        "c1\x9b",
        "rtl\u202egpj.exe",
        "zero\u200bwidth",
        "bad\udcffutf8",
        "replaced\ufffd",
        "x" * 256,
        "日本" * 43,
        None,
    ],
)
def test_names_that_could_escape_forge_or_hide_are_refused(name):
    assert unsafe_name(name) is not None


@pytest.mark.parametrize(
    ("pattern", "taken", "left"),
    [
        ("*.csv", ["a.csv"], ["d/a.csv", "a.csvx", "a.txt"]),
        ("**/*.csv", ["a.csv", "d/a.csv", "d/e/a.csv"], ["a.txt", "d/a.txt"]),
        ("plots", ["plots", "plots/a.png", "plots/x/y"], ["plotsx", "a/plots"]),
        ("plots/**", ["plots/a.png", "plots/x/y"], ["other/a.png"]),
        ("run-?.log", ["run-1.log"], ["run-10.log", "run-/.log"]),
        ("[ab].txt", ["a.txt", "b.txt"], ["c.txt"]),
        ("[!ab].txt", ["c.txt"], ["a.txt"]),
        ("[a-c]*.txt", ["b1.txt"], ["d1.txt"]),
        ("a+b(c).txt", ["a+b(c).txt"], ["aab(c).txt"]),
        ("./out/", ["out", "out/a"], ["outx"]),
        ("**/**/**/x", ["x", "a/x", "a/b/c/x"], ["y", "a/xy"]),
    ],
)
def test_globs_match_paths_relative_to_work_and_a_folder_takes_its_contents(pattern, taken, left):
    glob = Glob(pattern)
    assert [p for p in taken if glob.matches(p)] == taken
    assert [p for p in left if glob.matches(p)] == []


def test_a_glob_of_24_levels_of_stars_fails_to_match_a_deep_path_fast():
    deep = "/".join(["a"] * 200) + "/b"
    started = time.monotonic()
    assert not Glob("**/" * 24 + "*a*a*a*a*a*a*a*a*a*a*a*a*c").matches(deep)
    assert not Glob("/".join(["**/*"] * 24) + "/c").matches(deep)
    assert not Glob("*" * 24 + "a" * 24 + "c").matches("a" * 255)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("given", "taken"), [("./a/*.csv", "a/*.csv"), ("out/", "out"), ("**/**/x", "**/x"), (" a//b ", "a/b")]
)
def test_globs_are_normalised_at_submission(given, taken):
    request = JobRequest.from_dict({"command": ["true"], "artifacts": {"destination": "/a", "patterns": [given]}})
    assert request.artifacts.patterns == (taken,)


@pytest.mark.parametrize("pattern", ["[abc", "x/[z-a].txt", "./", "../x", "a/../b"])
def test_bad_globs_are_refused_at_submission_in_one_error(pattern):
    with pytest.raises(SpecError, match="artifacts"):
        JobRequest.from_dict({"command": ["true"], "artifacts": {"destination": "/a", "patterns": [pattern]}})


def test_a_relative_destination_or_mount_with_dot_dot_is_the_folder_beside():
    assert Artifacts.parse("../out", cwd="/home/a/nb") == Artifacts("/home/a/out")
    assert Artifacts.from_value({"destination": "../out"}, cwd="/home/a/nb") == Artifacts("/home/a/out")
    assert Artifacts.from_value({"destination": "out", "patterns": ["*"]}, cwd="/n") == Artifacts("/n/out", ("*",))
    assert Mount.parse("../data:/data", cwd="/home/a/nb").source == "/home/a/data"


def test_the_client_makes_a_missing_artifacts_folder(tmp_path):
    request = job_request(["true"], cwd=str(tmp_path), artifacts="new/deeper")
    assert request.artifacts.destination == str(tmp_path / "new" / "deeper")
    assert (tmp_path / "new" / "deeper").is_dir()


@pytest.mark.parametrize(
    ("size", "words"), [(0, "0 B"), (12, "12 B"), (1536, "1.5 KiB"), (3 << 20, "3.0 MiB"), (5 << 30, "5.0 GiB")]
)
def test_sizes_are_told_in_the_unit_that_suits_them(size, words):
    assert bytes_words(size) == words


def test_every_kind_never_copied_has_its_words_and_none_says_a_other():
    for kind in KIND_WORDS:
        assert never_copied(kind).startswith(KIND_WORDS[kind])
    assert never_copied("fifo") == "a FIFO, never copied"
    assert "a other" not in never_copied("other")


def test_artifacts_parse_a_folder_relative_to_the_callers_and_its_globs():
    assert Artifacts.parse("out", cwd="/home/a/nb") == Artifacts("/home/a/nb/out")
    assert Artifacts.parse("/abs:*.csv,plots/**", cwd="/x") == Artifacts("/abs", ("*.csv", "plots/**"))
    assert Artifacts.parse(".:*.png", cwd="/home/a") == Artifacts("/home/a", ("*.png",))
    request = job_request(["true"], cwd="/tmp", artifacts="/tmp:*.csv")
    assert request.artifacts == Artifacts("/tmp", ("*.csv",))
    assert JobRequest.from_dict(request.to_dict()).artifacts == request.artifacts


@pytest.mark.parametrize(
    "value",
    [
        "relative/without/cwd",
        {"destination": "/a", "patterns": ["/etc/*"]},
        {"destination": "/a", "patterns": ["../x"]},
        {"destination": "/a", "patterns": "*.csv"},
        {"destination": "/a/../b"},
        {"destination": "/a", "extra": 1},
        {"patterns": ["*"]},
        {"destination": "/a", "patterns": ["*"] * 33},
        {"destination": "/a", "patterns": [""]},
        7,
    ],
)
def test_bad_artifacts_are_one_spec_error(value):
    with pytest.raises(SpecError):
        JobRequest.from_dict({"command": ["true"], "artifacts": value})


@pytest.mark.parametrize(
    ("path", "clean"), [("", ""), ("/", ""), ("/a//b/", "a/b"), ("./a/./b", "a/b"), ("results", "results")]
)
def test_paths_in_work_are_made_relative(path, clean):
    assert work_path(path) == clean


@pytest.mark.parametrize("path", ["../x", "a/../../b", "a\0b"])
def test_paths_leaving_work_are_refused(path):
    with pytest.raises(WorkerError):
        work_path(path)


def record(artifacts):
    limits = Limits.parse({})
    return JobRecord("id", "n", "alice", 1, ["true"], JobStatus.COMPLETED, limits, "none", 0.0, artifacts=artifacts)


def test_the_artifacts_line_says_what_came_back_in_words_and_inert():
    waiting = record({"destination": "/d", "patterns": []})
    assert artifacts_line(waiting) == "nothing copied to /d: the job never ran"
    waiting.status = JobStatus.RUNNING
    assert artifacts_line(waiting) == "to /d when the job ends"
    done = {
        "destination": "/d",
        "folder": "/d/1a2b3c4d",
        "copied": 2,
        "bytes": 3 << 20,
        "skipped": 4,
        "skipped_examples": [["l\x1b", "a symlink, never copied"], ["p", "a FIFO, never copied"]],
        "note": None,
        "error": None,
    }
    line = artifacts_line(record(done))
    assert line.startswith("2 files (3.0 MiB) copied to /d/1a2b3c4d; 4 skipped: l\\x1b (a symlink, never copied)")
    assert "\x1b" not in line
    failed = artifacts_line(record({"destination": "/d", "error": "gone"}))
    assert failed == "not copied to /d: gone"


def test_a_downloads_summary_names_what_it_skipped_inert():
    report = Download("/home/a/out", files=1, bytes=10, skipped=[("out/\x1b]0;x", "a symlink, never copied")])
    assert report.summary() == "copied 1 file (10 B) to /home/a/out; skipped 1: out/\\x1b]0;x (a symlink, never copied)"
