"""A user's server whose executor socket is closed to that user answers each worker route with a
JSON 403 `forbidden` saying so, never a 500 with a traceback in its log. Tried as alice, her own
Jupyter server pointed at a socket in a folder only root may enter."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

from jupyter_worker.errors import ErrorReason
from tests.security.conftest import SERVER_ERROR, Rest, logged_user_server

ALICE = "jwtest-alice"


def test_a_socket_closed_to_the_servers_user_is_a_403_saying_so_not_a_500(users):
    folder = tempfile.mkdtemp(prefix="jupyter-worker-test-closed-")
    os.chmod(folder, 0o700)  # root's alone
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path = os.path.join(folder, "executor.sock")
        listener.bind(path)
        listener.listen()
        with logged_user_server(ALICE, path) as (server, server_log):
            rest = Rest(server)
            for method, route in (("GET", "jobs"), ("POST", "jobs")):
                code, body = rest.call(method, route, b'{"command": ["true"]}' if method == "POST" else None)
                assert (code, body.get("reason")) == (403, ErrorReason.FORBIDDEN.value), (route, code, body)
                assert body["message"] == f"{path}: this user may not reach that socket"
            code, body = rest.call("GET", "capabilities")  # says what the server knows, and why no more
            assert code == 200 and "this user may not reach that socket" in str(body), body
            assert "Traceback" not in server_log.text() and not SERVER_ERROR.search(server_log.text())
    finally:
        listener.close()
        shutil.rmtree(folder)
