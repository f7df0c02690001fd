"""A Jupyter server with the extension, in-process (pytest-jupyter), against a real executor."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from openapi_schema_validator import OAS30Validator

from jupyter_worker.client import HOLDER_ENV
from jupyter_worker.server.handlers import OPENAPI
from tests.executor.conftest import started_daemon


@pytest.fixture(scope="module")
def executor_daemon():
    with started_daemon(["--Policy.max_memory_limit=2048"]) as daemon:
        yield daemon


@pytest.fixture(autouse=True)
def worker_environment_restored():
    """The in-process extension sets these for its kernels in this very process; each test leaves
    them as it found them."""
    saved = {name: os.environ.get(name) for name in ("JUPYTER_WORKER_SOCKET", HOLDER_ENV)}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def executor_socket(executor_daemon) -> str:
    """Where the server under test finds its executor; a test class may point it elsewhere."""
    return executor_daemon.socket


@pytest.fixture
def jp_server_config(executor_socket):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_worker": True}, "allow_unauthenticated_access": False},
        "JupyterWorker": {"socket": executor_socket, "embedded_executor": False},
    }


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
