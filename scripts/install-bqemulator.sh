#!/usr/bin/env bash
# Install bqemulator into its own virtual environment, .venv-bqemulator (its pins conflict with ours).
#
# bqemulator runs `INSTALL spatial` (required) and `INSTALL avro` (optional) in DuckDB at start, which would
# download from DuckDB's extension site. Here both extensions come from PyPI wheels built for exactly the
# pinned DuckDB, and are installed from the wheel's file into DuckDB's extension directory, so the
# emulator's INSTALL finds them and never downloads. Only PyPI is used. Safe to run again: it stops early
# when everything is already in place.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${BQEMULATOR_VENV:-.venv-bqemulator}"
BQEMULATOR_VERSION=1.4.0
# bqemulator 1.4.0 accepts duckdb>=1.0 and would pull 2.x, but the extension wheels stop at 1.5.5.
DUCKDB_VERSION=1.5.5
NUMPY_VERSION=2.4.6

installed() {
  [ -x "$VENV/bin/bqemulator" ] || return 1
  "$VENV/bin/python" - "$BQEMULATOR_VERSION" "$DUCKDB_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version

import duckdb

assert version("bqemulator") == sys.argv[1] and duckdb.__version__ == sys.argv[2]
con = duckdb.connect()
con.execute("SET autoinstall_known_extensions = false")
for name in ("spatial", "avro"):
    con.execute(f"LOAD {name}")
EOF
}

if installed; then
  echo "bqemulator $BQEMULATOR_VERSION is installed in $VENV"
  exit 0
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check \
  "bqemulator==$BQEMULATOR_VERSION" \
  "duckdb==$DUCKDB_VERSION" \
  "duckdb-extension-spatial==$DUCKDB_VERSION" \
  "duckdb-extension-avro==$DUCKDB_VERSION" \
  "numpy==$NUMPY_VERSION"

"$VENV/bin/python" - <<'EOF'
import importlib
from pathlib import Path

import duckdb

con = duckdb.connect()
con.execute("SET autoinstall_known_extensions = false")
for name in ("spatial", "avro"):
    package = Path(importlib.import_module(f"duckdb_extension_{name}").__file__).parent
    (binary,) = package.glob(f"extensions/v{duckdb.__version__}/{name}.duckdb_extension")
    # A path, not a name: DuckDB copies the wheel's file into its extension directory; no network.
    con.execute(f"FORCE INSTALL '{binary}'")
    con.execute(f"LOAD {name}")
    print(f"DuckDB {duckdb.__version__}: {name} installed from {binary}")
EOF

installed || { echo "bqemulator installation in $VENV is incomplete" >&2; exit 1; }
echo "bqemulator $BQEMULATOR_VERSION is installed in $VENV"
