# Sourced by demo.sh and test.sh: make .venv with the project installed (editable) and its extras.
# Usage: source ops/scripts/bootstrap.sh [extra]   (extra: "test" to add the test dependencies)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating $VENV"
    "$PY" -m venv "$VENV"
fi
extra="${1:-}"
spec="$ROOT"
[ -n "$extra" ] && spec="$ROOT[$extra]"
stamp="$VENV/.installed-$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-${extra:-base}"
if [ ! -f "$stamp" ]; then
    echo "==> installing tark-supervisor${extra:+ [$extra]} into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec"
    touch "$stamp"
fi
echo "==> building example plugins"
"$VENV/bin/python" "$ROOT/examples/build.py"
export PATH="$VENV/bin:$PATH"
