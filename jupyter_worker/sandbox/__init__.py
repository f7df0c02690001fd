"""Linux mechanics of a sandboxed job: namespaces, root filesystem, cgroups, seccomp, launch.

Imports nothing from Jupyter; usable on its own. See engine.Sandbox for the entry point.
"""

from .control import unix_address
from .engine import CaptureFiles, RunningJob, RunResult, Sandbox, SandboxError
from .launch_spec import LaunchSpec

__all__ = ["CaptureFiles", "LaunchSpec", "RunResult", "RunningJob", "Sandbox", "SandboxError", "unix_address"]
