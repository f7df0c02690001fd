"""A folder of the server's file browser as a job's working folder (jupyter_worker/server/folders.py)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jupyter_worker.errors import ErrorReason, WorkerError
from jupyter_worker.server.folders import place_in_folder, resolve_folder
from jupyter_worker.spec import JobRequest


@pytest.fixture
def root(tmp_path):
    """A server root with a project folder, a file, a link inside and links leading out."""
    top = tmp_path / "root"
    (top / "proj" / "data").mkdir(parents=True)
    (top / "proj" / "train.py").write_text("print('hi')\n")
    (tmp_path / "outside").mkdir()
    (top / "inner").symlink_to("proj")
    (top / "out").symlink_to(tmp_path / "outside")
    (top / "proj" / "up").symlink_to("../..")
    (top / "loop").symlink_to("loop")
    return str(top)


def refusal(root: str, folder) -> str:
    with pytest.raises(WorkerError) as caught:
        resolve_folder(root, folder)
    assert caught.value.reason is ErrorReason.INVALID and caught.value.reason.http_status == 400
    return caught.value.message


def test_a_contents_path_resolves_to_the_folder_under_the_root(root):
    assert resolve_folder(root, "proj") == os.path.join(root, "proj")
    assert resolve_folder(root, "proj/data/") == os.path.join(root, "proj", "data")
    assert resolve_folder(root, "./proj//data") == os.path.join(root, "proj", "data")


def test_the_empty_path_is_the_root_itself(root):
    assert resolve_folder(root, "") == root


def test_a_link_inside_the_root_resolves_to_its_target(root):
    assert resolve_folder(root, "inner") == os.path.join(root, "proj")


def test_a_root_reached_through_a_symlink_is_resolved_too(root, tmp_path):
    (tmp_path / "alias").symlink_to(root)
    assert resolve_folder(str(tmp_path / "alias"), "proj") == os.path.join(root, "proj")


@pytest.mark.parametrize(
    ("folder", "words"),
    [
        (None, "relative to the server's root folder"),
        (7, "relative to the server's root folder"),
        ("proj\0", "NUL"),
        ("a" * 5000, "at most 4096 bytes"),
        ("/etc", "is absolute"),
        ("proj/../..", "must not contain '..'"),
        ("..", "must not contain '..'"),
        ("out", "leads outside the server's root folder"),
        ("proj/up", "leads outside the server's root folder"),
        ("missing", "does not exist"),
        ("proj/train.py", "is not a folder"),
        ("loop", "symlink loop"),
        ("proj\ud800", "is not a file name"),
    ],
)
def test_each_bad_folder_is_refused_with_its_own_words(root, folder, words):
    assert words in refusal(root, folder)


def test_a_link_out_of_the_root_is_refused_without_saying_whether_its_target_exists(root):
    words = refusal(root, "out/nothing-here")
    assert "leads outside" in words and "does not exist" not in words


def test_a_job_in_a_folder_runs_there_with_it_read_only_at_its_own_path():
    request = JobRequest.from_dict(place_in_folder({"command": ["python3", "train.py"]}, "/srv/proj"))
    assert request.cwd == "/srv/proj"
    assert [(m.source, m.destination, m.rw) for m in request.mounts] == [("/srv/proj", "/srv/proj", False)]


def test_relative_mounts_are_taken_from_the_folder():
    body = {"command": ["true"], "mounts": ["data:/data", "out:out:rw", "/abs:/abs"]}
    request = JobRequest.from_dict(place_in_folder(body, "/srv/proj"))
    assert [(m.source, m.destination, m.rw) for m in request.mounts] == [
        ("/srv/proj", "/srv/proj", False),
        ("/srv/proj/data", "/data", False),
        ("/srv/proj/out", "/srv/proj/out", True),
        ("/abs", "/abs", False),
    ]


def test_a_mount_of_the_folder_itself_replaces_the_read_only_one():
    request = JobRequest.from_dict(place_in_folder({"command": ["true"], "mounts": [".:.:rw"]}, "/srv/proj"))
    assert [(m.source, m.destination, m.rw) for m in request.mounts] == [("/srv/proj", "/srv/proj", True)]


def test_a_folder_and_a_cwd_together_are_refused():
    with pytest.raises(WorkerError, match="folder and cwd: give one"):
        place_in_folder({"command": ["true"], "cwd": "/srv"}, "/srv/proj")


def test_a_bad_mount_in_a_folder_is_refused_as_invalid():
    with pytest.raises(WorkerError, match="is not SRC:DST") as caught:
        place_in_folder({"command": ["true"], "mounts": ["nodestination"]}, "/srv/proj")
    assert caught.value.reason is ErrorReason.INVALID


@settings(
    derandomize=True, max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    folder=st.one_of(
        st.text(max_size=40),
        st.text(st.characters(codec=None, categories=["Cs", "Cc", "Lu", "Po"]), max_size=6),
        st.lists(
            st.sampled_from(["proj", "data", "..", ".", "", "out", "inner", "up", "loop", "train.py", "\0", "é"]),
            max_size=5,
        ).map("/".join),
        st.none(),
        st.integers(),
        st.lists(st.text(max_size=3), max_size=2),
    )
)
def test_any_folder_resolves_inside_the_root_or_is_refused_as_invalid(root, folder):
    try:
        path = resolve_folder(root, folder)
    except WorkerError as exc:
        assert exc.reason is ErrorReason.INVALID and exc.message.startswith("folder: ")
    else:
        assert path == root or path.startswith(root + "/")
        assert os.path.isdir(path) and os.path.realpath(path) == path
