"""The pure rules of files back and artifacts: which names may be written, which paths a glob takes,
what a copy is called when a name is taken, how --artifacts is parsed and shown."""

from __future__ import annotations

import pytest

from jupyter_worker.errors import SpecError, WorkerError
from jupyter_worker.executor.artifacts import collided, glob_regex
from jupyter_worker.flags import job_request
from jupyter_worker.formatting import artifacts_line
from jupyter_worker.limits import Limits
from jupyter_worker.spec import Artifacts, JobRecord, JobRequest, JobStatus
from jupyter_worker.transfer import Download, unsafe_name, work_path


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
        ("a+b(c).txt", ["a+b(c).txt"], ["aab(c).txt"]),
    ],
)
def test_globs_match_paths_relative_to_work_and_a_folder_takes_its_contents(pattern, taken, left):
    regex = glob_regex(pattern)
    assert [p for p in taken if regex.fullmatch(p)] == taken
    assert [p for p in left if regex.fullmatch(p)] == []


@pytest.mark.parametrize(
    ("name", "attempt", "copy"),
    [
        ("model.pt", 1, "model-1a2b3c4d.pt"),
        ("model.pt", 2, "model-1a2b3c4d-2.pt"),
        ("archive.tar.gz", 1, "archive.tar-1a2b3c4d.gz"),
        ("README", 1, "README-1a2b3c4d"),
        (".bashrc", 1, ".bashrc-1a2b3c4d"),
    ],
)
def test_a_copy_whose_name_is_taken_gets_the_jobs_id_before_its_extension(name, attempt, copy):
    assert collided(name, "1a2b3c4d", attempt) == copy


def test_artifacts_parse_a_folder_relative_to_the_callers_and_its_globs():
    assert Artifacts.parse("out", cwd="/home/a/nb") == Artifacts("/home/a/nb/out")
    assert Artifacts.parse("/abs:*.csv,plots/**", cwd="/x") == Artifacts("/abs", ("*.csv", "plots/**"))
    assert Artifacts.parse(".:*.png", cwd="/home/a") == Artifacts("/home/a", ("*.png",))
    request = job_request(["true"], cwd="/tmp", artifacts="res:*.csv")
    assert request.artifacts == Artifacts("/tmp/res", ("*.csv",))
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
        "copied": 2,
        "bytes": 3 << 20,
        "skipped": 4,
        "skipped_examples": [["l\x1b", "a symlink, never copied"], ["p", "a FIFO, never copied"]],
        "note": None,
        "error": None,
    }
    line = artifacts_line(record(done))
    assert line.startswith("2 files (3.0 MiB) copied to /d; 4 skipped: l\\x1b (a symlink, never copied)")
    assert "\x1b" not in line
    failed = artifacts_line(record({"destination": "/d", "error": "gone"}))
    assert failed == "not copied to /d: gone"


def test_a_downloads_summary_names_what_it_skipped_inert():
    report = Download("/home/a/out", files=1, bytes=10, skipped=[("out/\x1b]0;x", "a symlink, never copied")])
    assert (
        report.summary() == "copied 1 file (0.0 MiB) to /home/a/out; skipped 1: out/\\x1b]0;x (a symlink, never copied)"
    )
