#!/usr/bin/env bash
# Installs tark-supervisor into .venv, builds the bundled example plugins, installs them into a temporary data dir
# and runs them through the supervisor (each plugin in its own worker process).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"
cd "$ROOT"
exec python "$ROOT/ops/demo.py" "$@"
