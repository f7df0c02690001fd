"""What a job can see and do: only its own processes, files, identity and (no) network."""

from __future__ import annotations

import os
import socket
import sys
import uuid

import pytest

from jupyter_worker.spec import Mount, Reason


def test_a_job_sees_only_its_own_processes(sh):
    result = sh("sleep 30 & ps -eo pid,user,comm --no-headers; kill %1")
    rows = [line.split() for line in result.stdout.decode().splitlines()]
    assert {row[1] for row in rows} == {"nobody"}
    assert {row[2] for row in rows} >= {"sh", "sleep", "ps"}
    assert all(int(row[0]) < 100 for row in rows), rows


def test_the_command_runs_as_the_requested_unprivileged_user(sh):
    result = sh("id -u; id -g; whoami; python3 -c 'import getpass; print(getpass.getuser())'", uid=12345, gid=12346)
    assert result.stdout.decode().split() == ["12345", "12346", "user12345", "user12345"]


def test_default_user_is_nobody_with_no_capabilities(sh):
    out = sh("whoami; grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; grep NoNewPrivs /proc/self/status")
    lines = out.stdout.decode().splitlines()
    assert lines[0] == "nobody"
    assert all(line.split()[1] == "0000000000000000" for line in lines[1:6]), lines
    assert lines[6].split()[1] == "1"


def test_host_files_are_not_visible(sh, tmp_path):
    secret = f"/root/jupyter-worker-secret-{uuid.uuid4().hex}"
    with open(secret, "w") as f:
        f.write("host secret")
    try:
        result = sh(f"cat {secret}; ls /home /var/lib /root 2>&1; cat /etc/passwd; cat /etc/shadow")
    finally:
        os.unlink(secret)
    out = result.stdout.decode()
    assert "host secret" not in out
    with open("/etc/passwd") as f:
        host_users = {line.split(":")[0] for line in f} - {"root", "nobody"}
    sandbox_users = {line.split(":")[0] for line in out.splitlines() if line.count(":") == 6}
    assert sandbox_users == {"root", "nobody"}
    assert not host_users & sandbox_users
    assert b"No such file" in result.stderr or b"cannot access" in result.stdout


def test_the_executors_state_is_not_visible(sh, runtime_dir):
    result = sh(f"ls {runtime_dir}")
    assert result.outcome.exit_code != 0


def test_system_files_are_read_only(sh):
    result = sh("touch /usr/x 2>&1; touch /etc/x 2>&1; touch /x 2>&1; (echo x > /proc/sys/kernel/hostname) 2>&1; true")
    errors = result.stdout.decode().splitlines()
    assert len(errors) == 4
    assert all("Read-only file system" in e or "Permission denied" in e for e in errors), errors


def test_tmp_and_work_are_private_and_writable(sh):
    result = sh("echo a > /tmp/a && echo b > /work/b && echo c > /dev/shm/c && cat /tmp/a /work/b /dev/shm/c && pwd")
    assert result.stdout.decode().split() == ["a", "b", "c", "/work"]
    assert sh("ls /tmp /dev/shm").stdout == b"/dev/shm:\n\n/tmp:\n"


def test_work_dir_is_bound_and_kept(sh, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    os.chown(work, 65534, 65534)
    assert sh("echo kept > /work/out.txt", work_dir=str(work)).outcome.exit_code == 0
    assert (work / "out.txt").read_text() == "kept\n"


def test_minimal_dev_and_no_controlling_terminal(sh):
    result = sh("ls /dev; ls /dev/pts; tty; head -c 4 /dev/urandom | wc -c; echo x > /dev/null && echo ok")
    out = result.stdout.decode().split()
    assert {"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx"} <= set(out)
    assert not {"sda", "vda", "mem", "kmsg", "kvm"} & set(out)
    assert "not" in out and "4" in out and "ok" in out


def test_proc_is_fresh_and_sensitive_files_are_masked(sh):
    result = sh(
        "cat /proc/kcore | wc -c; cat /proc/1/environ 2>&1; ls /proc/sys/kernel/hostname; echo 1 > /proc/sysrq-trigger"
    )
    out = result.stdout.decode()
    assert out.splitlines()[0].strip() == "0"
    assert result.outcome.exit_code != 0


def test_own_hostname(sh):
    assert sh("hostname").stdout.decode().strip() == "jupyter-worker"
    assert sh("hostname", hostname="job-1").stdout.decode().strip() == "job-1"
    assert socket.gethostname() != "job-1"


def test_only_descriptors_0_to_2_reach_the_job(run):
    code = "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))"
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        out = run(["python3", "-c", code]).stdout.decode()
    finally:
        os.close(fd)
    assert out.strip() == "[0, 1, 2, 3]"


def test_environment_is_scrubbed(run, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-secret")
    result = run(["env"], env={"MY_SETTING": "1"})
    env = dict(line.split("=", 1) for line in result.stdout.decode().splitlines())
    assert set(env) == {"PATH", "HOME", "LANG", "MY_SETTING", "PWD"} - ({"PWD"} - set(env))
    assert env["HOME"] == "/work"
    assert "hub-secret" not in result.stdout.decode()


def test_the_callers_python_environment_works_inside(run):
    code = "import sys, pyseccomp; print(sys.prefix)"
    result = run(["python3", "-c", code])
    assert result.outcome.exit_code == 0, result.stderr
    assert result.stdout.decode().strip() == sys.prefix


def test_no_network_in_mode_none(run):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    code = (
        "import socket, os\n"
        "s = socket.socket(); s.settimeout(2)\n"
        f"try:\n    s.connect(('127.0.0.1', {port})); print('reached')\n"
        "except OSError as e:\n    print('refused', e.errno)\n"
        "print([n for _, n in socket.if_nameindex()])\n"
    )
    try:
        out = run(["python3", "-c", code]).stdout.decode()
    finally:
        server.close()
    assert "reached" not in out and "refused" in out
    assert out.splitlines()[-1] == "['lo']"


def test_loopback_is_up_in_mode_none(run):
    code = (
        "import socket\ns = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "c = socket.create_connection(s.getsockname()); print('up')"
    )
    assert run(["python3", "-c", code]).stdout == b"up\n"


def test_host_mode_shares_the_network(run):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    code = f"import socket; socket.create_connection(('127.0.0.1', {server.getsockname()[1]}), 2); print('reached')"
    try:
        assert run(["python3", "-c", code], network="host").stdout == b"reached\n"
    finally:
        server.close()


SYSCALL_PROBE = r"""
import ctypes, errno, fcntl, os, sys, termios
libc = ctypes.CDLL(None, use_errno=True)
def attempt(name, fn):
    r = fn()
    print(name, "blocked" if r == -1 and ctypes.get_errno() == errno.EPERM else f"ALLOWED {r} {ctypes.get_errno()}")
attempt("keyctl", lambda: libc.syscall(250, 0, 0, 0, 0, 0))
attempt("add_key", lambda: libc.syscall(248, b"user", b"x", b"y", 1, -2))
attempt("unshare", lambda: libc.unshare(0x10000000))
attempt("unshare-net", lambda: libc.unshare(0x40000000))
attempt("mount", lambda: libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
attempt("bpf", lambda: libc.syscall(321, 0, 0, 0))
attempt("ptrace", lambda: libc.ptrace(16, 1, 0, 0))
fd = os.open("/dev/ptmx", os.O_RDWR)
attempt("TIOCSTI", lambda: libc.ioctl(fd, termios.TIOCSTI, b"x"))
attempt("TIOCSTI-high-bits", lambda: libc.ioctl(fd, ctypes.c_ulong(0xFFFFFFFF00000000 | termios.TIOCSTI), b"x"))
attempt("io_uring_setup", lambda: libc.syscall(425, 1, ctypes.create_string_buffer(120)))
attempt("userfaultfd", lambda: libc.syscall(323, 0))
"""


def test_seccomp_blocks_kernel_surfaces_and_sandbox_escapes(run):
    result = run(["python3", "-c", SYSCALL_PROBE])
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 11, result.stderr
    assert all(line.endswith("blocked") for line in lines), lines


def test_non_native_abi_is_killed(run, tmp_path):
    source = tmp_path / "i386.c"
    source.write_text('int main(void){ long r; __asm__ volatile("int $0x80" : "=a"(r) : "a"(20)); return 0; }\n')
    binary = tmp_path / "i386"
    if os.system(f"cc -o {binary} {source} 2>/dev/null") != 0:
        pytest.skip("no C compiler")
    os.chmod(tmp_path, 0o755)
    result = run(["/opt/i386"], mounts=[Mount(str(binary), "/opt/i386")])
    assert result.outcome.reason is Reason.SIGNAL and result.outcome.signal == 31


def test_extra_mounts_are_read_only_unless_asked(sh, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("input")
    os.chmod(data, 0o777)
    ro = sh("cat /data/in.txt; touch /data/new 2>&1", mounts=[Mount(str(data), "/data")])
    assert ro.stdout.decode().startswith("input") and "Read-only" in ro.stdout.decode()
    rw = sh("touch /data/new && echo done", mounts=[Mount(str(data), "/data", rw=True)])
    assert rw.stdout == b"done\n" and (data / "new").exists()


def test_mount_sources_are_resolved_with_the_requesters_permissions(sh, tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "secret").write_text("root only")
    link = tmp_path / "link"
    link.symlink_to(private)
    os.chmod(tmp_path, 0o755)
    result = sh("cat /data/secret", mounts=[Mount(str(link), "/data")], requester_uid=4242, requester_gid=4242)
    assert result.outcome.reason is Reason.START_ERROR
    assert "Permission denied" in result.outcome.error


def test_mount_points_are_never_created_inside_host_folders(sh, tmp_path):
    outer = tmp_path / "outer"
    outer.mkdir()
    inner = tmp_path / "inner"
    inner.mkdir()
    os.chmod(tmp_path, 0o755)
    result = sh("true", mounts=[Mount(str(outer), "/data"), Mount(str(inner), "/data/missing/inner")])
    assert result.outcome.reason is Reason.START_ERROR
    assert "does not exist in /data" in result.outcome.error
    assert not (outer / "missing").exists()


def test_mount_points_do_not_follow_symlinks(sh, tmp_path):
    outer = tmp_path / "outer"
    outer.mkdir()
    (outer / "escape").symlink_to("/etc")
    inner = tmp_path / "inner"
    inner.mkdir()
    os.chmod(tmp_path, 0o755)
    result = sh("true", mounts=[Mount(str(outer), "/data"), Mount(str(inner), "/data/escape/x")])
    assert result.outcome.reason is Reason.START_ERROR
    assert "symlinks are not followed" in result.outcome.error


def test_a_missing_command_is_a_start_error(run):
    result = run(["no-such-command-here"])
    assert result.outcome.reason is Reason.START_ERROR
    assert result.outcome.error == "command not found: no-such-command-here"


def test_init_reaps_orphans(sh):
    script = "for i in 1 2 3 4 5; do (sleep 0.1 &) ; done; sleep 0.5; ps -eo stat --no-headers | grep -c Z || true"
    assert sh(script).stdout.decode().strip() == "0"
