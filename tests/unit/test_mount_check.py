"""The one check of every path that becomes a mount (spec.check_mount): mounts, Python prefixes,
the working folder, and the engine's own spec all refuse the same paths."""

from __future__ import annotations

import pytest

from jupyter_worker.errors import SpecError
from jupyter_worker.sandbox.launch_spec import LaunchSpec
from jupyter_worker.spec import JobRequest, Mount, check_destination, check_mount

RESERVED = ["/", "/proc", "/proc/self", "/etc", "/etc/ssl", "/usr", "/usr/local/lib", "/dev/shm", "/sys/fs", "/lib64"]
RESERVED += ["/bin", "/sbin/x", "/lib", "/lib32", "/libx32", "//etc", "/etc/", "/usr/./bin", "/./proc"]
BAD_PATHS = ["relative", "", "/data/../etc", "/a/..", "/a\0b", 7, None]


@pytest.mark.parametrize("destination", RESERVED)
def test_a_reserved_destination_is_refused_for_a_mount_a_prefix_and_a_working_folder(destination):
    with pytest.raises(SpecError, match="reserved"):
        check_mount("/home", destination)
    with pytest.raises(SpecError, match="reserved"):
        Mount("/home", destination)
    with pytest.raises(SpecError, match="reserved"):
        JobRequest(command=["true"], python_prefixes=[destination])
    with pytest.raises(SpecError, match="reserved"):
        JobRequest(command=["true"], cwd=destination)
    with pytest.raises(SpecError, match="reserved"):
        LaunchSpec(argv=["true"], uid=1000, gid=1000, python_prefixes=[destination])
    with pytest.raises(SpecError, match="reserved"):
        LaunchSpec(argv=["true"], uid=1000, gid=1000, cwd=destination)


@pytest.mark.parametrize("path", BAD_PATHS)
def test_a_path_that_is_not_absolute_and_clean_is_refused_everywhere(path):
    for attempt in (
        lambda: check_mount(path, "/data"),
        lambda: Mount(path, "/data"),
        lambda: check_mount("/data", path),
        lambda: JobRequest(command=["true"], python_prefixes=[path]),
        lambda: JobRequest(command=["true"], cwd=path),
    ):
        with pytest.raises(SpecError):
            attempt()


@pytest.mark.parametrize("source", ["/proc/self/root", "/proc", "/sys/kernel", "/", "//proc/1/root"])
def test_a_kernel_interface_or_the_whole_host_is_never_a_source(source):
    with pytest.raises(SpecError, match="cannot be shown"):
        check_mount(source, "/data")
    with pytest.raises(SpecError, match="cannot be shown"):
        JobRequest.from_dict({"command": ["true"], "mounts": [f"{source}:/data"]})


def test_a_prefix_list_that_is_not_a_list_is_refused():
    with pytest.raises(SpecError, match="python_prefixes"):
        JobRequest(command=["true"], python_prefixes="/opt/venv")


def test_ordinary_paths_pass_cleaned():
    assert check_mount("/home/alice/./data/", "/data//in") == ("/home/alice/data", "/data/in")
    assert check_destination("/work", "cwd") == "/work"
    assert check_mount("/usr/share/dict", "/dict") == ("/usr/share/dict", "/dict")
    assert check_mount("/opt/venv", "/opt/venv") == ("/opt/venv", "/opt/venv")
    assert check_mount("/home/x", "/procfs") == ("/home/x", "/procfs")  # a name that only starts alike
    request = JobRequest(command=["true"], cwd="/home/alice/nb", python_prefixes=["/opt/venv"])
    assert (request.cwd, request.python_prefixes) == ("/home/alice/nb", ["/opt/venv"])
