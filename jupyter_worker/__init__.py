"""jupyter-worker: run notebook cells, scripts and commands as sandboxed background jobs."""

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict]:
    # Imported here: the sandbox layer and the CLI import this package and need no Jupyter server.
    from .server import JupyterWorker  # noqa: PLC0415

    return [{"module": "jupyter_worker", "app": JupyterWorker}]
