# Shared by dev/start and dev/test: where the environment lives and how it is made.
# JUPYTER_WORKER_VENV overrides the location; it must lie outside /work and /tmp, which jobs see
# as their own folders, so that the sandbox can show the environment at its own path. It is built
# on the system's Python so that every local user can run it (the tests start Jupyter servers as
# test users).
VENV=${JUPYTER_WORKER_VENV:-/opt/jupyter-worker/venv}
PYTHON=${PYTHON:-/usr/bin/python3}

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "$(basename "$0"): run as root: the sandbox engine makes namespaces and cgroups" >&2
    exit 2
  fi
}

# apt_install PKG...: install the Debian packages that are missing, and only those.
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# make_venv SPEC: a virtualenv with the project installed (editable) as SPEC, e.g. ".[test]".
# Installing from source builds the JupyterLab panel (src/, TypeScript), which needs Node.js.
make_venv() {
  apt_install python3 python3-venv
  command -v node >/dev/null || apt_install nodejs
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$1"
}
