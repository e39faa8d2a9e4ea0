#!/usr/bin/env bash
# Install the FinOps Foundation's focus-validator into its own virtual environment, .venv-focus.
#
# focus-validator 2.x needs Python >= 3.12 (found with pyenv, or as python3.12 on PATH). It pins numpy < 2,
# but the pyarrow it pulls in needs numpy >= 2 and the validator works with it, so numpy is upgraded after.
# Only PyPI is used; the validator itself is run with --block-download. Safe to run again: it stops early
# when the pinned version is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${FOCUS_VALIDATOR_VENV:-.venv-focus}"
FOCUS_VALIDATOR_VERSION=2.2.1

installed() {
  [ -x "$VENV/bin/focus-validator" ] || return 1
  "$VENV/bin/python" - "$FOCUS_VALIDATOR_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version

import numpy
import pyarrow  # noqa: F401  (fails to import with numpy < 2)

assert version("focus_validator") == sys.argv[1] and int(numpy.__version__.split(".")[0]) >= 2
PY
}

if installed; then
  echo "focus-validator $FOCUS_VALIDATOR_VERSION already installed in $VENV"
  exit 0
fi

python312=""
if command -v pyenv >/dev/null 2>&1; then
  # 3.12 first: the validator's pins (numpy, pandas) install from wheels there; on 3.13 numpy is compiled.
  version=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.[0-9]+)?$' | sort -V | tail -1)
  [ -n "$version" ] || version=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[3-9])(\.[0-9]+)?$' | sort -V | head -1)
  [ -n "$version" ] && python312="$(pyenv root)/versions/$version/bin/python"
fi
if [ -z "$python312" ]; then
  for candidate in python3.12 python3.13; do
    if command -v "$candidate" >/dev/null 2>&1; then python312="$(command -v "$candidate")"; break; fi
  done
fi
if [ -z "$python312" ] && [ -d "$HOME/.pyenv/versions" ]; then
  python312="$(ls -d "$HOME"/.pyenv/versions/3.1[2-9]* 2>/dev/null | sort -V | tail -1)/bin/python"
fi
if [ -z "$python312" ] || ! "$python312" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
  # No Python >= 3.12 here (e.g. the python:3.11 image of Cloud Build): fetch one with uv, itself from PyPI.
  echo "no Python >= 3.12 found; installing one with uv" >&2
  python3 -m venv .venv-uv && .venv-uv/bin/pip install -q --disable-pip-version-check uv
  .venv-uv/bin/uv python install 3.12 >/dev/null
  python312="$(.venv-uv/bin/uv python find 3.12)"
fi
if [ -z "$python312" ] || ! "$python312" -c 'import sys; assert sys.version_info >= (3, 12)' 2>/dev/null; then
  echo "focus-validator needs Python >= 3.12: install it (e.g. pyenv install 3.12) and run this again" >&2
  exit 1
fi

rm -rf "$VENV"
"$python312" -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check "focus-validator==$FOCUS_VALIDATOR_VERSION"
"$VENV/bin/pip" install -q --disable-pip-version-check "numpy>=2,<3" 2>&1 | grep -v "dependency conflicts\|focus-validator .* requires numpy" || true
installed || { echo "focus-validator did not install cleanly into $VENV" >&2; exit 1; }
echo "focus-validator $FOCUS_VALIDATOR_VERSION installed in $VENV ($("$VENV/bin/python" --version))"
