"""An authorizer of a hub admin's own, loaded by a test user's server (tests/hub/conftest.py): it
grants what JupyterHub's login grants and knows nothing of the worker's scopes."""

from __future__ import annotations

from jupyterhub.singleuser.extension import JupyterHubAuthorizer


class OwnAuthorizer(JupyterHubAuthorizer):
    """The admin's own rules would go here; the worker routes must not be left to them."""
