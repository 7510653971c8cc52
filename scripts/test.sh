#!/usr/bin/env bash
# Run the whole test suite: lint, the main suite in .venv (set up first if needed), then the Airflow DAG tests
# in their own .venv-airflow (Airflow's dependency set must not share the project venv). Extra arguments go to
# the main pytest run. Each pytest run prints its 15 slowest tests and the load average at its start and end;
# this script prints the seconds of each phase.
set -euo pipefail
cd "$(dirname "$0")/.."
load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "[test] start $(date +%T), load average $(load)"
start=$(date +%s)
bash scripts/setup.sh
bash scripts/test_airflow.sh --setup-only
echo "[test] setup (both venvs): $(( $(date +%s) - start ))s"
.venv/bin/ruff check .
start=$(date +%s)
# Two worker processes, one test file each at a time (module fixtures stay in one process): the suite is
# latency-bound (JVM starts, Spark scheduling, subprocesses), so two files side by side keep both cores busy.
.venv/bin/python -m pytest -n "${MGOE_TEST_WORKERS:-2}" --dist loadfile "$@"
echo "[test] main suite: $(( $(date +%s) - start ))s"
start=$(date +%s)
bash scripts/test_airflow.sh -q
echo "[test] airflow DAG suite: $(( $(date +%s) - start ))s"
echo "[test] end $(date +%T), load average $(load)"
