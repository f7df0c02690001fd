"""The head executor's Slurm settings (config section `SlurmBackend`)."""

from __future__ import annotations

import sys

from traitlets import Bool, Float, Int, Unicode
from traitlets.config import Configurable

DEFAULT_PATH = "/usr/bin:/bin:/usr/sbin:/sbin"


class SlurmBackendConfig(Configurable):
    """Where the Slurm cluster is and how jobs are placed on it."""

    enabled = Bool(
        False, help="offer the 'slurm' backend: requests with backend 'slurm' are submitted to the Slurm cluster"
    ).tag(config=True)
    slurm_conf = Unicode(
        "", help="SLURM_CONF given to every Slurm command (sbatch, squeue, scancel, scontrol); '' = Slurm's default"
    ).tag(config=True)
    bin_dir = Unicode(
        "", help=f"folder of sbatch, squeue, scancel and scontrol; '' = found on PATH {DEFAULT_PATH}"
    ).tag(config=True)
    node_socket = Unicode(
        "/run/jupyter-worker/executor.sock",
        help="the jupyter-worker executor's socket on each node; %n is replaced by the node's name",
    ).tag(config=True)
    node_python = Unicode(
        sys.executable, help="the Python on the nodes that has jupyter_worker (runs the job's relay step)"
    ).tag(config=True)
    poll_s = Float(1.0, help="seconds between two looks at squeue for the backend's jobs").tag(config=True)
    start_poll_s = Float(
        0.05,
        help="seconds between two looks at squeue while a job is starting (submitted, not yet followed on "
        "its node: its start is seen this soon); a job still pending after a few seconds is looked at "
        "every poll_s",
    ).tag(config=True)
    linger_s = Int(
        600, help="seconds a job's relay waits for this executor once the node job ended (to hand back logs and /work)"
    ).tag(config=True)
    time_margin_s = Int(
        120,
        help="seconds added to a job's timeout for Slurm's --time (rounded up to whole minutes); "
        "a job without a timeout gets no --time",
    ).tag(config=True)
    default_partition = Unicode("", help="partition for jobs that name none; '' = the cluster's default").tag(
        config=True
    )
    max_return_mb = Int(1024, help="MiB of a job's /work brought back from the node at its end, at most").tag(
        config=True
    )

    @classmethod
    def section_names(cls) -> list[str]:
        """Configured as `SlurmBackend` (c.SlurmBackend.enabled, --SlurmBackend.enabled=True)."""
        return ["SlurmBackend", cls.__name__]  # the latter as --help-all names it

    def command(self, name: str) -> str:
        """The path of a Slurm command (sbatch, squeue...)."""
        return f"{self.bin_dir.rstrip('/')}/{name}" if self.bin_dir else name

    def env(self) -> dict[str, str]:
        """The environment of every Slurm command: PATH and SLURM_CONF only."""
        env = {"PATH": f"{self.bin_dir}:{DEFAULT_PATH}" if self.bin_dir else DEFAULT_PATH}
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        return env
