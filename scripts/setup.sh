#!/usr/bin/env bash
# Set up mgoe on a fresh Debian/Ubuntu machine: Java 17 check (apt install when root), a virtualenv in .venv
# with the pinned dependencies, and the `mgoe` command. Safe to re-run: it skips what is already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${MGOE_VENV:-.venv}

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.\([0-9]*\)\)\{0,1\}.*/\1 \3/p' | head -1 |
  awk '{ if ($1 == 1) print $2; else print $1 }'; }
if ! command -v java >/dev/null 2>&1 || [ "$(java_major)" -lt 17 ] 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Java 17 with apt-get"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else
    echo "[setup] Java 17+ is required by Spark 4: run 'sudo apt-get install -y openjdk-17-jre-headless'" \
         "(or set JAVA_HOME to a JDK 17+), then re-run this command." >&2
    exit 1
  fi
fi
echo "[setup] java $(java_major) OK"

if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "[setup] Python 3.11+ is required; set PYTHON=/path/to/python3.11 and re-run." >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -m venv "$VENV"; then
    echo "[setup] could not create a virtualenv: on Debian/Ubuntu run 'sudo apt-get install -y python3-venv'." >&2
    exit 1
  fi
fi
stamp="$VENV/.mgoe-installed"
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ]; then
  echo "[setup] installing pinned dependencies into $VENV (a minute with a warm pip cache, a few the first time)"
  log="$VENV/setup.log"
  : >"$log"
  # pip's own output (progress, build-backend warnings) goes to the log: shown only if a step fails.
  pip_logged() {
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@" >>"$log" 2>&1; then
      echo "[setup] pip install $* failed; its output ($log):" >&2
      tail -40 "$log" >&2
      exit 1
    fi
  }
  # torch first and alone: the pinned CPU build (PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
  # gives the CPU wheel where PyPI's default would be a CUDA build).
  pip_logged "torch==2.13.0"
  pip_logged -e ".[dev]"
  touch "$stamp"
fi
echo "[setup] ready: $VENV/bin/mgoe"
