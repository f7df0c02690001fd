"""The Jupyter server extension: REST and websocket API for jobs, Jupyter auth, embedded executor."""

from .app import JupyterWorker

__all__ = ["JupyterWorker"]
