"""A Jupyter server with the extension, in-process (pytest-jupyter), against a real executor."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from jupyter_worker.server.handlers import OPENAPI
from tests.executor.conftest import started_daemon


@pytest.fixture(scope="module")
def executor_daemon():
    with started_daemon(["--Policy.max_memory_limit=2048"]) as daemon:
        yield daemon


@pytest.fixture
def jp_server_config(executor_daemon):
    saved = os.environ.get("JUPYTER_WORKER_SOCKET")
    yield {
        "ServerApp": {"jpserver_extensions": {"jupyter_worker": True}, "allow_unauthenticated_access": False},
        "JupyterWorker": {"socket": executor_daemon.socket, "embedded_executor": False},
    }
    if saved is None:
        os.environ.pop("JUPYTER_WORKER_SOCKET", None)
    else:
        os.environ["JUPYTER_WORKER_SOCKET"] = saved


@pytest.fixture(scope="session")
def openapi():
    with open(OPENAPI) as f:
        return yaml.safe_load(f)


@pytest.fixture
def conforms(openapi):
    """conforms(response_body, "Job") checks a real response against the OpenAPI schema."""

    def check(body, schema: str):
        data = json.loads(body) if isinstance(body, (bytes, str)) else body
        resolver_doc = {"components": openapi["components"], **openapi["components"]["schemas"][schema]}
        OAS30Validator(resolver_doc).validate(data)
        return data

    return check
