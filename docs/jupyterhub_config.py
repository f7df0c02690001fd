"""JupyterHub with jupyter-worker: local users, one system executor, access to jobs by scope.

Copy to /etc/jupyterhub/jupyterhub_config.py and fill in the users; docs/jupyterhub.md explains
each part. The project's hub tests (tests/hub) load this very file.
"""

import os
import sys

c = get_config()  # noqa: F821 - JupyterHub's config loader provides it

# --- Activity and idle culling (docs/jupyterhub.md, section 5). A server with a running job is
# active: the extension looks for running jobs every JOBS_ACTIVITY_S, the server reports its
# activity to the hub every SERVER_ACTIVITY_S (give or take 10%), and the hub records a report
# that is at least ACTIVITY_RESOLUTION_S newer than the last. So the hub's record of such a server
# is never older than their sum (with the 10%), and a culler timeout of twice the sum spares it
# with room to spare: SHORTEST_CULL_TIMEOUT_S is the least to set; idle servers go after CULL_TIMEOUT_S.
JOBS_ACTIVITY_S = 10
SERVER_ACTIVITY_S = 30
ACTIVITY_RESOLUTION_S = 10
SHORTEST_CULL_TIMEOUT_S = 2 * (JOBS_ACTIVITY_S + SERVER_ACTIVITY_S + ACTIVITY_RESOLUTION_S)  # 100 s
CULL_TIMEOUT_S = 3600
assert CULL_TIMEOUT_S >= SHORTEST_CULL_TIMEOUT_S, "the culler would cull servers whose jobs still run"

# --- Users: local accounts log in with their passwords; each gets a server running as themselves.
c.JupyterHub.authenticator_class = "pam"
c.JupyterHub.spawner_class = "localprocess"
c.Authenticator.allowed_users = {"alice", "bob"}

# --- Single-user servers: they reach the node's executor on its socket as their own uid, and the
# hub's scopes decide who may read or run jobs through their REST API (the authorizer below; a
# server under a hub installs it itself when its arguments lack it). Add options to these lists
# and dicts, e.g. c.Spawner.args.append("--JupyterWorker.jobs_on_server_stop=stop"): assigning a
# new list drops what is here.
c.Spawner.default_url = "/lab"
c.Spawner.args = [
    "--ServerApp.authorizer_class=jupyter_worker.server.hub.WorkerHubAuthorizer",
    f"--JupyterWorker.activity_interval={JOBS_ACTIVITY_S}",
]
c.Spawner.environment = {
    "JUPYTER_WORKER_SOCKET": "/run/jupyter-worker/executor.sock",
    # how often a server reports its activity (running jobs included) to the hub
    "JUPYTERHUB_ACTIVITY_INTERVAL": str(SERVER_ACTIVITY_S),
}
c.JupyterHub.activity_resolution = ACTIVITY_RESOLUTION_S
# Browser sessions act for the server's owner: the hub gives them the owner's own worker scopes.
c.Spawner.oauth_client_allowed_scopes = ["custom:jupyter-worker:run"]

# --- Scopes: read = list, status, logs, /work files, live streams; run = also run, stop, delete.
c.JupyterHub.custom_scopes = {
    "custom:jupyter-worker:read": {
        "description": "See jobs of a server: list, status, logs, /work files.",
    },
    "custom:jupyter-worker:run": {
        "description": "Run, stop and delete jobs on a server, and see them.",
        "subscopes": ["custom:jupyter-worker:read"],
    },
}

c.JupyterHub.load_roles = [
    # every user runs jobs on their own servers (the default user role is just "self")
    {"name": "user", "scopes": ["self", "custom:jupyter-worker:run!user"]},
    # example of a read-only grant: carol watches alice's jobs, and can do nothing else there
    # {"name": "alice-jobs-reader", "users": ["carol"],
    #  "scopes": ["access:servers!user=alice", "custom:jupyter-worker:read!user=alice"]},
    {
        "name": "idle-culler",
        "services": ["idle-culler"],
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
    },
]

# --- Idle culling: servers idle for CULL_TIMEOUT_S are stopped; running jobs count as activity.
# What a server's end does to the jobs started from it is the servers' own setting:
# c.Spawner.args.append("--JupyterWorker.jobs_on_server_stop=stop") ends them with it (default: keep).
c.JupyterHub.services = [
    {
        "name": "idle-culler",
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={CULL_TIMEOUT_S}"],
    },
]

# --- A dashboard service that reads every user's jobs (its token from the environment).
if os.environ.get("JOBS_DASHBOARD_TOKEN"):
    c.JupyterHub.services.append({"name": "jobs-dashboard", "api_token": os.environ["JOBS_DASHBOARD_TOKEN"]})
    c.JupyterHub.load_roles.append(
        {
            "name": "jobs-dashboard",
            "services": ["jobs-dashboard"],
            "scopes": ["list:users", "read:servers", "access:servers", "custom:jupyter-worker:read"],
        }
    )
