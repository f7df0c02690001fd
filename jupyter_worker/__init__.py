"""jupyter-worker: run notebook cells, scripts and commands as sandboxed background jobs."""

__version__ = "0.1.0"
