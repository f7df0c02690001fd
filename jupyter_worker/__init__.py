"""jupyter-worker: run notebook cells, scripts and commands as sandboxed background jobs."""

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict]:
    # Imported here: the sandbox layer and the CLI import this package and need no Jupyter server.
    from .server import JupyterWorker  # noqa: PLC0415

    return [{"module": "jupyter_worker", "app": JupyterWorker}]


def _jupyter_labextension_paths() -> list[dict]:
    """The built JupyterLab panel, for `jupyter labextension develop`."""
    return [{"src": "labextension", "dest": "jupyter-worker"}]


def load_ipython_extension(ipython) -> None:
    """%load_ext jupyter_worker: the %%worker and %worker magics, and errors of the Python API
    shown in one line."""
    from .errors import WorkerError  # noqa: PLC0415
    from .magics import WorkerMagics, one_line_error  # noqa: PLC0415 - IPython only where the magics are loaded

    ipython.register_magics(WorkerMagics)
    ipython.set_custom_exc((WorkerError,), one_line_error)


def __getattr__(name: str):
    """jupyter_worker.run, Job and its errors, imported on first use (the sandbox processes never
    need them)."""
    if name in ("run", "Job", "JobFailed", "attach"):
        from . import jobs  # noqa: PLC0415

        return getattr(jobs, name)
    if name == "ValuesNotReturned":
        from . import values  # noqa: PLC0415

        return values.ValuesNotReturned
    raise AttributeError(name)
