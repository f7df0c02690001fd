"""The Slurm backend of a head executor: jobs placed on a Slurm cluster, run there in the sandbox
of a jupyter-worker executor on the node (docs/slurm.md).

config.py: the `SlurmBackend` settings. commands.py: what is said to Slurm and how its answers are
read (pure, unit-tested), and running Slurm's commands as a user. backend.py: `SlurmBackend`, the
poll of squeue, the follower that copies the node job's log and outcome through the relay
(jupyter_worker/slurmstep.py), the pull of /work back.
"""

from .backend import SlurmBackend
from .config import SlurmBackendConfig

__all__ = ["SlurmBackend", "SlurmBackendConfig"]
