"""Under JupyterHub, the hub's custom scopes decide who may read and who may run a server's jobs.

Set `c.ServerApp.authorizer_class = "jupyter_worker.server.hub.WorkerHubAuthorizer"` in the
single-user servers (docs/jupyterhub.md); a server under a hub without it installs it itself where
the authorizer it has is one of Jupyter's or JupyterHub's own (which grant whatever the login
grants), and otherwise closes its worker routes (`secure_worker_routes`).

A token reaches the worker routes of alice's server only with `custom:jupyter-worker:read` (list,
status, logs, /work files, the websockets) or `custom:jupyter-worker:run` (also run, stop,
delete), filtered to `!user=alice` or `!server=alice/NAME` or unfiltered. Whoever is not alice
reaches nothing else on her server (the access:servers scope a read-only role needs would
otherwise open her files, kernels and terminals), except the hub's admins: whoever holds
admin:servers for it.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.auth.authorizer import AllowAllAuthorizer, Authorizer
from jupyterhub.singleuser.extension import JupyterHubAuthorizer, JupyterHubIdentityProvider
from traitlets import Bool

from .handlers import AUTH_RESOURCE

READ_SCOPE = "custom:jupyter-worker:read"
RUN_SCOPE = "custom:jupyter-worker:run"
ADMIN_SCOPE = "admin:servers"
AUTHORIZER = "jupyter_worker.server.hub.WorkerHubAuthorizer"
# Authorizers that allow whatever the hub's login allowed: ours, which only narrows that, replaces them.
REPLACEABLE = (Authorizer, AllowAllAuthorizer, JupyterHubAuthorizer)


class WorkerHubAuthorizer(JupyterHubAuthorizer):
    others_reach_only_jobs = Bool(
        True,
        help="users and services other than the server's owner reach only its worker routes, as their "
        "scopes allow; False leaves every other route to JupyterHub's access:servers check",
    ).tag(config=True)
    admins_reach_everything = Bool(
        True,
        help=f"others holding {ADMIN_SCOPE} for this server (JupyterHub's admin role) reach its other routes "
        "as JupyterHub's access:servers check allows; False: they too reach only the worker routes",
    ).tag(config=True)

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        if not super().is_authorized(handler, user, action, resource):
            return False
        if resource != AUTH_RESOURCE:
            return _is_owner(user.hub_user) or not self.others_reach_only_jobs or self._is_admin(user.hub_user)
        scope = READ_SCOPE if action == "read" else RUN_SCOPE
        allowed = self._holds(scope, user.hub_user)
        if not allowed:
            self.log.info(
                "jupyter-worker: %s %s lacks %s for this server",
                user.hub_user.get("kind"),
                user.hub_user.get("name"),
                scope,
            )
        return allowed

    def _holds(self, scope: str, hub_user: dict[str, Any]) -> bool:
        return bool(self.hub_auth.check_scopes(_on_this_server(scope), hub_user))

    def _is_admin(self, hub_user: dict[str, Any]) -> bool:
        return self.admins_reach_everything and self._holds(ADMIN_SCOPE, hub_user)


def _owner() -> tuple[str, str]:
    return os.environ.get("JUPYTERHUB_USER", ""), os.environ.get("JUPYTERHUB_SERVER_NAME", "")


def _is_owner(hub_user: dict[str, Any]) -> bool:
    return hub_user.get("kind") == "user" and hub_user.get("name") == _owner()[0]


def _on_this_server(scope: str) -> set[str]:
    """The scope filtered to this server; a held scope that is unfiltered or names this user or
    server matches, one naming anybody else does not."""
    user, server = _owner()
    return {f"{scope}!user={user}", f"{scope}!server={user}/{server}"}


def secure_worker_routes(serverapp: Any) -> str | None:
    """Under a hub, make the hub's worker scopes govern the worker routes whatever the server was
    started with (Spawner.args replaced, say): install WorkerHubAuthorizer in place of an authorizer
    that grants whatever the login grants. None when they do now; else why they cannot (the
    caller closes the worker routes, server/app.py)."""
    authorizer, provider = serverapp.authorizer, serverapp.identity_provider
    if isinstance(authorizer, WorkerHubAuthorizer):
        return None
    name = f"{type(authorizer).__module__}.{type(authorizer).__name__}"
    if not isinstance(provider, JupyterHubIdentityProvider):
        return (
            "this server has JupyterHub's environment ($JUPYTERHUB_API_TOKEN) but not JupyterHub's login "
            f"(identity provider {type(provider).__name__}), so the hub's worker scopes cannot be checked: "
            "start it with jupyterhub-singleuser, or without the JUPYTERHUB_* environment"
        )
    if type(authorizer) not in REPLACEABLE:
        return (
            f"this server runs under JupyterHub with the authorizer {name}, which does not check the hub's "
            f"worker scopes: the hub's admin sets c.ServerApp.authorizer_class = {AUTHORIZER!r} (or a "
            "subclass of it) for the single-user servers, e.g. with "
            f"c.Spawner.args.append('--ServerApp.authorizer_class={AUTHORIZER}') (docs/jupyterhub.md)"
        )
    ours = WorkerHubAuthorizer(parent=serverapp, identity_provider=provider)
    serverapp.authorizer = ours
    serverapp.web_app.settings["authorizer"] = ours  # what handlers read
    serverapp.log.info("jupyter-worker: installed %s in place of %s (the server's arguments lack it)", AUTHORIZER, name)
    return None
