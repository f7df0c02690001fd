"""A running job's pid 1 is the native init (sandbox/native/init.c), not a Python interpreter: it
holds nothing of the job's, reaps orphans, and reports the job's end as the Python init did."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time

import pytest

from jupyter_worker.limits import Limits
from jupyter_worker.sandbox import LaunchSpec, Sandbox, SandboxError, native
from jupyter_worker.sandbox.doctor import diagnose, render
from jupyter_worker.sandbox.mounts import UserNamespaceChild
from jupyter_worker.spec import MAX_COMMAND_BYTES, MAX_ENV_BYTES, Reason, validate_argv, validate_env
from tests.conftest import is_root

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

pytestmark = pytest.mark.skipif(not is_root(), reason="the sandbox engine needs root")


def started_pid(job) -> int:
    event = next(job.events(timeout=10))
    assert event["event"] == "started", event
    return event["pid"]


def fd_targets(pid: int) -> dict[int, str]:
    folder = f"/proc/{pid}/fd"
    return {int(fd): os.readlink(f"{folder}/{fd}") for fd in os.listdir(folder)}


def test_a_running_jobs_pid_1_is_the_native_init_with_no_capabilities_and_only_dev_null_and_its_status_line(
    sandbox,
):
    with sandbox.launch(LaunchSpec(["sleep", "30"], limits=Limits(timeout_s=60))) as job:
        init = started_pid(job)
        deadline = time.monotonic() + 5
        while len(fd_targets(init)) != 4 and time.monotonic() < deadline:
            time.sleep(0.01)  # the job may start a moment before its init's exec has closed what it held
        running, built = os.stat(f"/proc/{init}/exe"), os.stat(native.INIT_PATH)
        assert (running.st_dev, running.st_ino) == (built.st_dev, built.st_ino)  # the path differs in a VM's share
        with open(f"/proc/{init}/status") as f:
            status = dict(line.split(":", 1) for line in f)
        assert status["NSpid"].split()[-1] == "1"
        assert status["SigCgt"].strip() == "0000000000000000"  # no handler: pid 1's signal semantics
        assert {status[cap].strip() for cap in ("CapPrm", "CapEff", "CapBnd")} == {"0000000000000000"}
        fds = fd_targets(init)
        assert {fds[0], fds[1], fds[2]} == {"/dev/null"}
        others = [target for fd, target in fds.items() if fd > 2]
        assert len(others) == 1 and others[0].startswith("socket:"), fds  # the status line, nothing else
        job.stop(grace_s=5)
        outcome = job.wait(timeout=30)
    assert outcome is not None and outcome.reason is Reason.STOPPED


def set_inheritable_capabilities(full: bool) -> None:
    """This process's inheritable set: all it may hold (as an older container runtime leaves it) or none."""
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    data = (ctypes.c_uint32 * 6)()
    assert libc.syscall(125, header, data) == 0
    data[2], data[5] = (data[1], data[4]) if full else (0, 0)
    assert libc.syscall(126, header, data) == 0, ctypes.get_errno()


def capabilities(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f)
    return {name: status[name].strip() for name in ("CapInh", "CapPrm", "CapEff", "CapAmb")}


def test_an_executor_with_a_full_inheritable_set_gives_neither_the_native_init_nor_the_job_any_capability(
    runtime_dir,
):
    set_inheritable_capabilities(full=True)
    try:
        engine = Sandbox(runtime_dir=runtime_dir)
        engine.start()  # its spawner inherits the full inheritable set, and every init and job after it
    finally:
        set_inheritable_capabilities(full=False)
    none = dict.fromkeys(("CapInh", "CapPrm", "CapEff", "CapAmb"), "0000000000000000")
    try:
        with engine.launch(LaunchSpec(["sleep", "30"], limits=Limits(timeout_s=60))) as job:
            init = started_pid(job)
            with open(f"/proc/{init}/task/{init}/children") as f:
                (command,) = f.read().split()
            assert capabilities(init) == none
            assert capabilities(int(command)) == none
            job.stop(grace_s=0)
            assert job.wait(timeout=30).reason is Reason.STOPPED
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("script", "reason", "code", "signum"),
    [
        ("exit 0", Reason.EXIT, 0, None),
        ("exit 7", Reason.EXIT, 7, None),
        ("kill -TERM $$", Reason.SIGNAL, None, signal.SIGTERM),
        ("kill -SEGV $$", Reason.SIGNAL, None, signal.SIGSEGV),
    ],
)
def test_the_native_init_reports_the_jobs_exit_code_or_signal(sh, script, reason, code, signum):
    outcome = sh(script).outcome
    assert (outcome.reason, outcome.exit_code, outcome.signal) == (reason, code, signum)


def test_the_job_ends_when_its_process_does_though_a_daemonized_orphan_lives_on(sh):
    start = time.monotonic()
    result = sh("setsid sleep 60 </dev/null >/dev/null 2>&1 & (sleep 0.2 &); echo out; exit 3")
    assert result.outcome.reason is Reason.EXIT and result.outcome.exit_code == 3
    assert result.stdout == b"out\n"
    assert time.monotonic() - start < 10


def test_the_native_init_reaps_orphans_while_the_job_runs(sandbox):
    script = "for i in 1 2 3 4 5; do (sleep 0.1 &); done; sleep 30"
    with sandbox.launch(LaunchSpec(["/bin/sh", "-c", script], limits=Limits(timeout_s=60))) as job:
        init = started_pid(job)
        time.sleep(1.0)
        zombies = []
        for task in os.listdir(f"/proc/{init}/task"):
            with open(f"/proc/{init}/task/{task}/children") as f:
                for child in f.read().split():
                    with open(f"/proc/{child}/stat") as stat:
                        if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                            zombies.append(child)
        assert zombies == []
        job.stop(grace_s=0)
        assert job.wait(timeout=30).reason is Reason.STOPPED


def test_a_timeout_still_ends_a_job_under_the_native_init(run):
    start = time.monotonic()
    outcome = run(["sleep", "30"], limits=Limits(timeout_s=1)).outcome
    assert outcome.reason is Reason.TIMEOUT
    assert time.monotonic() - start < 15


def test_the_engine_refuses_to_start_without_the_native_init_and_doctor_says_why(monkeypatch, tmp_path):
    missing = str(tmp_path / "jw-init")
    monkeypatch.setattr(native, "INIT_PATH", missing)
    with pytest.raises(SandboxError, match=f"the native init {missing} is missing"):
        Sandbox(runtime_dir=str(tmp_path / "run")).start()
    report = diagnose()
    assert report["native_init"]["why_not"].startswith(f"the native init {missing} is missing")
    assert f"native init:      NO - the native init {missing} is missing" in render(report)


def test_a_native_init_on_a_noexec_filesystem_is_named_as_the_problem(monkeypatch, tmp_path):
    place = tmp_path / "noexec"
    place.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "noexec", "jw-test-noexec", str(place)], check=True)
    try:
        copy = place / native.INIT_NAME
        shutil.copy2(native.INIT_PATH, copy)
        monkeypatch.setattr(native, "INIT_PATH", str(copy))
        assert (
            native.init_problem()
            == f"the native init {copy} is on a filesystem mounted noexec: install where programs may run"
        )
    finally:
        subprocess.run(["umount", str(place)], check=True)


@pytest.mark.parametrize(
    ("modes", "problem"),
    [
        ((0o775, 0o755, 0), "is not owned by root or is writable by others than root"),
        ((0o755, 0o755, 65534), "is not owned by root or is writable by others than root"),
        ((0o755, 0o757, 0), "is writable by its group or others"),
    ],
)
def test_the_engine_refuses_a_native_binary_someone_but_root_could_have_written(monkeypatch, tmp_path, modes, problem):
    binary_mode, folder_mode, owner = modes
    folder = tmp_path / "native"
    folder.mkdir()
    for name, path in (("INIT_PATH", native.INIT_PATH), ("JOB_STAGE_PATH", native.JOB_STAGE_PATH)):
        copy = folder / os.path.basename(path)
        shutil.copy2(path, copy)
        os.chown(copy, owner, 0)
        copy.chmod(binary_mode)
        monkeypatch.setattr(native, name, str(copy))
    folder.chmod(folder_mode)
    with pytest.raises(SandboxError, match=f"the .*native binary {folder}/jw-.* {problem}"):
        Sandbox(runtime_dir=str(tmp_path / "run")).start()
    with pytest.raises(native.UntrustedBinary, match=problem):
        os.close(native.open_trusted(str(folder / native.INIT_NAME)))


@pytest.mark.parametrize("mode", [0o755, 0o1777])
def test_the_engine_refuses_a_native_binary_beneath_a_folder_someone_but_root_owns(monkeypatch, tmp_path, mode):
    # a user who owns any folder on the way could swap what is beneath it (say, for a link to an
    # older install's binaries): refused even where the binaries and their own folder are root's
    theirs = tmp_path / "theirs"
    folder = theirs / "native"
    folder.mkdir(parents=True)
    for name, path in (("INIT_PATH", native.INIT_PATH), ("JOB_STAGE_PATH", native.JOB_STAGE_PATH)):
        copy = folder / os.path.basename(path)
        shutil.copy2(path, copy)
        monkeypatch.setattr(native, name, str(copy))
    os.chown(theirs, 65534, 65534)
    theirs.chmod(mode)
    refusal = f"the folder {theirs} of the native binary .* is not owned by root"
    with pytest.raises(native.UntrustedBinary, match=refusal):
        os.close(native.open_trusted(str(folder / native.INIT_NAME)))
    assert "is not owned by root" in (native.init_problem() or "")


def test_the_spawner_holds_each_native_binary_open_once_for_every_standby(sandbox, run):
    opened = sorted(fd_targets(sandbox._process.pid).values())
    assert opened.count(os.path.realpath(native.INIT_PATH)) == 1
    assert opened.count(os.path.realpath(native.JOB_STAGE_PATH)) == 1
    assert run(["true"]).outcome.reason is Reason.EXIT


def test_the_largest_command_and_environment_the_spec_accepts_start(run):
    # each byte \x01, 6 bytes as JSON: the largest request the spec lets through the engine's lines
    filler = "\x01" * 1000
    argv = ["/bin/sh", "-c", 'printf "%s %s" "$#" "${#V0}"', "sh"]
    argv += [filler] * ((MAX_COMMAND_BYTES - sum(len(a) + 1 for a in argv)) // 1001)
    argv.append("x" * (MAX_COMMAND_BYTES - sum(len(a) + 1 for a in argv) - 1))
    env = {f"V{i}": filler for i in range(MAX_ENV_BYTES // 1004)}
    env["LAST"] = "y" * (MAX_ENV_BYTES - sum(len(n) + len(v) + 2 for n, v in env.items()) - len("LAST") - 2)
    assert validate_argv(argv) and validate_env(env)  # both at their limits exactly
    assert sum(len(a) + 1 for a in argv) == MAX_COMMAND_BYTES
    assert sum(len(n) + len(v) + 2 for n, v in env.items()) == MAX_ENV_BYTES
    result = run(argv, env=env)
    assert result.outcome.reason is Reason.EXIT and result.outcome.exit_code == 0, result.outcome
    assert result.stdout == f"{len(argv) - 4} 1000".encode()


def test_the_native_init_releases_the_job_only_once_it_holds_nothing_and_never_when_it_cannot_start():
    status_r, status_w = os.pipe()
    ready_r, ready_w = os.pipe()
    error_r, error_w = os.pipe()
    held_r, held_w = os.pipe()  # stands for a job's output pipe the Python init held at its exec
    child = subprocess.Popen(
        [native.INIT_PATH, str(os.getpid()), str(status_w), str(ready_w), str(error_w)],
        pass_fds=[status_w, ready_w, error_w, held_w],
    )
    for fd in (status_w, ready_w, error_w, held_w):
        os.close(fd)
    try:
        assert os.read(ready_r, 2) == b"1"
        assert os.read(held_r, 1) == b""  # closed before the release: the job's output ends with it
        assert os.read(ready_r, 1) == b""
        assert os.read(error_r, 1) == b""  # closed after the release, with nothing said: started
        assert child.wait(timeout=10) == 0  # no child at all: nothing to report
    finally:
        for fd in (status_r, ready_r, error_r, held_r):
            os.close(fd)
    ready_r, ready_w = os.pipe()
    refused = subprocess.Popen([native.INIT_PATH, "1", str(ready_w)], pass_fds=[ready_w])  # no ready fd
    os.close(ready_w)
    assert refused.wait(timeout=10) == 2
    assert os.read(ready_r, 1) == b""  # never released: the job process reads EOF and ends
    os.close(ready_r)


def test_a_native_init_step_that_fails_is_said_on_the_error_pipe_and_the_job_is_never_released():
    status_r, status_w = os.pipe()
    ready_r, ready_w = os.pipe()
    error_r, error_w = os.pipe()
    fds = [status_w, ready_w, error_w]
    # a mount namespace of its own whose /dev is empty: the init cannot open /dev/null
    script = 'mount -t tmpfs jw-test-nodev /dev && exec "$@"'
    command = ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", native.INIT_PATH]
    child = subprocess.Popen([*command, str(os.getpid()), *map(str, fds)], pass_fds=fds)
    for fd in fds:
        os.close(fd)
    try:
        assert child.wait(timeout=10) == 3
        said = os.read(error_r, 4096)
        assert said.endswith(b"\0") and said.count(b"\0") == 1
        assert said.startswith(b"sandbox setup failed: the native init could not close what it must not hold: ")
        assert os.read(ready_r, 1) == b""  # never released
        assert os.read(status_r, 1) == b""  # and no status: the supervisor says the job was lost, not code 3
    finally:
        for fd in (status_r, ready_r, error_r):
            os.close(fd)


def descendants(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
            for child in map(int, f.read().split()):
                found += [child, *descendants(child)]
    return found


def test_a_standing_by_job_stage_holds_no_host_folder_as_its_cwd(sandbox):
    built = os.stat(native.JOB_STAGE_PATH)
    stages = []
    deadline = time.monotonic() + 10
    while not stages and time.monotonic() < deadline:
        for pid in descendants(sandbox._process.pid):
            with contextlib.suppress(OSError):
                running = os.stat(f"/proc/{pid}/exe")
                if (running.st_dev, running.st_ino) == (built.st_dev, built.st_ino):
                    stages.append(pid)
        time.sleep(0.05)
    assert stages  # the standbys' job processes, waiting for a job
    assert {os.readlink(f"/proc/{pid}/cwd") for pid in stages} == {"/"}


def test_the_native_init_as_the_id_mapper_holds_only_its_pipes_in_a_user_namespace_of_its_own_until_told_to_end():
    binary = native.open_trusted(native.INIT_PATH)
    held_r, held_w = os.pipe()  # inheritable: stands for a line of the Python init's
    ours = os.readlink("/proc/self/ns/user")
    try:
        mapper = UserNamespaceChild(binary)
        try:
            deadline = time.monotonic() + 10
            while os.readlink(f"/proc/{mapper.pid}/ns/user") == ours:  # unshared once it holds nothing else
                assert time.monotonic() < deadline
                time.sleep(0.01)
            held = fd_targets(mapper.pid)
            assert os.readlink(f"/proc/{mapper.pid}/exe") == os.path.realpath(native.INIT_PATH)
            assert {held[fd] for fd in (0, 1, 2)} == {"/dev/null"}
            lines = [target for fd, target in held.items() if fd > 2]
            assert len(lines) == 2 and os.readlink(f"/proc/self/fd/{held_w}") not in lines  # its two pipes only
            namespace = mapper.namespace("/proc", (0, 0), (65534, 65534))  # maps written: it is told to end
            os.close(namespace)
        finally:
            mapper.reap()
        assert not os.path.exists(f"/proc/{mapper.pid}")
    finally:
        for fd in (binary, held_r, held_w):
            os.close(fd)
    assert subprocess.run([native.INIT_PATH, "map", "3", "3"], check=False).returncode == 2
