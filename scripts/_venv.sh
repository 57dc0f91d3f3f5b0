# Sourced by scripts/test and scripts/docs: the virtual environment they run in.
#
#   ensure_venv EXTRA "what it is" [INSTALL_FUNCTION]
#
# makes $VENV (default .venv) with $PYTHON (default python3) on first use, and installs the
# project with the extra EXTRA into it, saying so first, when it has not done that since
# pyproject.toml last changed. INSTALL_FUNCTION, if given, does the installing instead; it
# can use $py. Sets py to the venv's python.

ensure_venv() {
  local extra=$1 what=$2 install=${3:-}
  PYTHON=${PYTHON:-python3}
  VENV=${VENV:-.venv}
  if [ ! -x "$VENV/bin/python" ]; then
    echo "Creating $VENV with Python $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')" >&2
    "$PYTHON" -m venv "$VENV"
  fi
  py="$VENV/bin/python"
  local stamp="$VENV/.sqlitefair-$extra-deps"
  if [ ! -f "$stamp" ]; then
    echo "Installing $what into $VENV (first run, about a minute)..." >&2
  elif [ pyproject.toml -nt "$stamp" ]; then
    echo "pyproject.toml changed: updating $what in $VENV..." >&2
  else
    return 0
  fi
  pip_install --upgrade pip
  if [ -n "$install" ]; then
    "$install"
  else
    pip_install -e ".[$extra]"
  fi
  touch "$stamp"
  echo "Done installing $what." >&2
}

# pip install --quiet into $py's venv. pip's output goes to stderr, less one kind of line: the
# note pip prints for every package when a configured --find-links or index folder has no entry
# for it ("WARNING: Location 'file:///...' is ignored: it is neither a file nor a directory."),
# which says nothing about this project. Errors still show, and pip's exit status is kept.
pip_install() {
  local status=0
  "$py" -m pip install --quiet "$@" 2>&1 \
    | { grep -v -E "^WARNING: Location 'file:[^']*' is ignored: it is neither a file nor a directory\.$" || true; } >&2 \
    || status=$?
  return "$status"
}
