#!/usr/bin/env bash
# One command from a fresh clone: set up (Java check, .venv, pinned installs) and run the demo on the embedded
# default (generated data, local Spark) at the quickstart's size (`--profile demo`: a quarter of the default
# data, one seed; about two minutes on 2 cores). Extra arguments go to `mgoe demo` (`--profile default`: the
# full-size demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mgoe demo --profile demo "$@"
