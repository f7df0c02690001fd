"""Build hook: compile a job's native stages (jupyter_worker/sandbox/native/: init.c, the init, and
job.c, the job stage; fds.h is theirs) into the package.

Runs for the wheel and for editable installs (`pip install -e .` builds them in the checkout, where
the package is imported from); `python hatch_build.py` does the same by hand. The binaries are
static, so they run inside a job's root with no loader or libc there, and platform-specific: the
wheel is tagged for this platform. CC and CFLAGS from the environment are honoured; the default is
`cc -O2`.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile

SOURCE = os.path.join("jupyter_worker", "sandbox", "native", "init.c")
BINARY = os.path.join("jupyter_worker", "sandbox", "native", "jw-init")
# The job process's last steps (job.c), built the same way beside it.
JOB_SOURCE = os.path.join("jupyter_worker", "sandbox", "native", "job.c")
JOB_BINARY = os.path.join("jupyter_worker", "sandbox", "native", "jw-job")


def build_native_init(root: str) -> str:
    """Compile init.c (and job.c) next to itself; returns the init's path."""
    _build(root, JOB_SOURCE, JOB_BINARY)
    return _build(root, SOURCE, BINARY)


def _build(root: str, source: str, binary: str) -> str:
    """Compile one source; the binary is replaced by a rename, so an engine running the old one (an
    editable install in use) never sees a half-written file."""
    source, binary = os.path.join(root, source), os.path.join(root, binary)
    compiler = shlex.split(os.environ.get("CC") or "cc")
    flags = shlex.split(os.environ.get("CFLAGS") or "-O2")
    fd, partial = tempfile.mkstemp(prefix=os.path.basename(binary) + ".", dir=os.path.dirname(binary))
    os.close(fd)
    try:
        command = [*compiler, *flags, "-static", "-Wall", "-Wextra", "-o", partial, source]
        try:
            subprocess.run(command, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise RuntimeError(
                f"could not compile {os.path.basename(source)} ({shlex.join(command)}: {exc}); jupyter-worker needs "
                "a C compiler and a static libc to install (Debian: apt install gcc libc6-dev)"
            ) from None
        os.chmod(partial, 0o755)
        os.replace(partial, binary)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return binary


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # `python hatch_build.py` outside a build
    BuildHookInterface = object  # type: ignore[assignment,misc]


class NativeInitHook(BuildHookInterface):  # type: ignore[misc,valid-type]
    """Compiles the native init for the wheel (carried in it) and editable installs (in place)."""

    PLUGIN_NAME = "native-init"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        build_native_init(self.root)
        # the binary is gitignored, which hatch would otherwise take as "leave out"
        build_data["artifacts"].append("/" + BINARY.replace(os.sep, "/"))
        build_data["artifacts"].append("/" + JOB_BINARY.replace(os.sep, "/"))
        if version == "standard":
            # a static executable: any Python 3 on this platform, so no interpreter or ABI in the tag
            build_data["pure_python"] = False
            build_data["tag"] = f"py3-none-{sysconfig.get_platform().replace('-', '_').replace('.', '_')}"


if __name__ == "__main__":
    print(build_native_init(os.path.dirname(os.path.abspath(__file__))), file=sys.stderr)
