#!/usr/bin/env bash
# One command from a fresh clone: set up (Java check, .venv, pinned installs) and run the main job on the
# embedded default (generated data, local Spark). Extra arguments go to `mgoe demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mgoe demo "$@"
