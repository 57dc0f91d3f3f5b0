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
  "$py" -m pip install --quiet --upgrade pip
  if [ -n "$install" ]; then
    "$install"
  else
    "$py" -m pip install --quiet -e ".[$extra]"
  fi
  touch "$stamp"
  echo "Done installing $what." >&2
}
