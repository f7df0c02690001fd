"""The executor's socket is open to every local user from the moment it exists, made without
touching the process's umask (the threads making job folders meanwhile would make them under it)."""

from __future__ import annotations

import os
import socket
import stat

from jupyter_worker.executor.server import _open_to_everyone


def test_the_socket_is_0666_in_place_of_an_old_one_and_the_umask_is_never_changed(tmp_path, monkeypatch):
    path = str(tmp_path / "executor.sock")
    (tmp_path / "executor.sock").write_text("an old socket's leftover")
    umasks: list[int] = []
    monkeypatch.setattr(os, "umask", lambda mask: umasks.append(mask) or 0o077)
    sock = _open_to_everyone(path)
    try:
        info = os.stat(path)
        assert stat.S_ISSOCK(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o666
        assert sorted(os.listdir(tmp_path)) == ["executor.sock"]  # its private folder gone
        sock.listen(1)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
    finally:
        sock.close()
    assert umasks == []
