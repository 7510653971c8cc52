#!/usr/bin/env bash
# A real Spark standalone cluster on this machine: one master and N workers, each its own JVM on 127.0.0.1.
#
#   scripts/local_cluster.sh start    # last line printed: the master URL, e.g. spark://127.0.0.1:40123
#   scripts/local_cluster.sh stop     # ends every process `start` launched (master, workers, executors)
#   scripts/local_cluster.sh status   # the recorded pids and whether they still run
#
# Then: spark-submit --master "$(tail -1 <(scripts/local_cluster.sh start))" --py-files dist/mgoe-*.zip \
#   --archives dist/mgoe-env-*.tar.gz#env --conf spark.pyspark.python=./env/bin/python jobs/build.py ...
#
# Environment (all optional):
#   MGOE_CLUSTER_DIR   state + logs + worker dirs (default: a new private `mktemp -d` folder under ${TMPDIR:-/tmp}
#                      per start, its path recorded in .cache/local-cluster.dir for stop / status: no predictable
#                      path in a shared /tmp that another user could create first, fill with pid files, or swap)
#   MGOE_CLUSTER_WORKERS (2), MGOE_WORKER_CORES (1), MGOE_WORKER_MEMORY (1g)
#   SPARK_CLASS        the spark-class launcher (default: next to .venv/bin/python, else on PATH)
# Ports are chosen free by the OS; every process is recorded by pid and stopped by pid, nothing by name.
set -euo pipefail
cd "$(dirname "$0")/.."
POINTER=.cache/local-cluster.dir
# The state dir: MGOE_CLUSTER_DIR, else the one the last `start` made and recorded (empty: none yet).
DIR=${MGOE_CLUSTER_DIR:-$(cat "$POINTER" 2>/dev/null || true)}
WORKERS=${MGOE_CLUSTER_WORKERS:-2}
CORES=${MGOE_WORKER_CORES:-1}
MEMORY=${MGOE_WORKER_MEMORY:-1g}
PY=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
SPARK_CLASS=${SPARK_CLASS:-$([ -x "$(dirname "$PY")/spark-class" ] && echo "$(dirname "$PY")/spark-class" || command -v spark-class || true)}

die() { echo "local_cluster: $*" >&2; exit 2; }
free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
alive() { kill -0 "$1" 2>/dev/null; }
# Direct children of a pid (the executor JVMs a worker launched), from /proc: no process-name matching.
children() { "$PY" - "$1" <<'PYEOF'
import os, sys
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            ppid = fh.read().rsplit(")", 1)[1].split()[1]
    except OSError:
        continue
    if ppid == sys.argv[1]:
        print(pid)
PYEOF
}
wait_port() { # pid port seconds: until something listens on 127.0.0.1:port (or the process died)
  for _ in $(seq 1 $(($3 * 5))); do
    alive "$1" || return 1
    "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.5)' "$2" \
      2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}
wait_log() { # pid file pattern seconds
  for _ in $(seq 1 $(($4 * 5))); do
    alive "$1" || return 1
    grep -q "$3" "$2" 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

start() {
  [ -n "$SPARK_CLASS" ] || die "spark-class not found: run scripts/setup.sh (pip's pyspark provides it) or set SPARK_CLASS"
  if [ -n "$DIR" ] && [ -f "$DIR/master.pid" ] && alive "$(cat "$DIR/master.pid")"; then
    echo "local_cluster: already running (stop it first: scripts/local_cluster.sh stop)" >&2
    cat "$DIR/master.url"
    return 0
  fi
  new_state_dir
  # pip's pyspark is a full Spark distribution; spark-class finds it only through SPARK_HOME.
  SPARK_HOME=${SPARK_HOME:-$("$PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')}
  export SPARK_HOME
  export SPARK_LOCAL_IP=127.0.0.1 SPARK_LOG_DIR="$DIR/logs" SPARK_WORKER_DIR="$DIR/work"
  export SPARK_DAEMON_MEMORY=${SPARK_DAEMON_MEMORY:-256m}
  local port url
  port=$(free_port)
  url="spark://127.0.0.1:$port"
  # spark-class execs java, so $! is the JVM's pid.
  nohup "$SPARK_CLASS" org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$port" --webui-port 0 \
    >"$DIR/logs/master.log" 2>&1 </dev/null &
  echo $! >"$DIR/master.pid"
  if ! wait_port "$!" "$port" 90; then
    tail -20 "$DIR/logs/master.log" >&2 || true
    stop >/dev/null
    die "the master did not start (log above: $DIR/logs/master.log)"
  fi
  echo "$url" >"$DIR/master.url"
  for i in $(seq 1 "$WORKERS"); do
    mkdir -p "$DIR/work/worker-$i"
    nohup "$SPARK_CLASS" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --port 0 --webui-port 0 \
      --cores "$CORES" --memory "$MEMORY" --work-dir "$DIR/work/worker-$i" "$url" \
      >"$DIR/logs/worker-$i.log" 2>&1 </dev/null &
    echo $! >"$DIR/worker-$i.pid"
  done
  for i in $(seq 1 "$WORKERS"); do
    if ! wait_log "$(cat "$DIR/worker-$i.pid")" "$DIR/logs/worker-$i.log" "Successfully registered with master" 90; then
      tail -20 "$DIR/logs/worker-$i.log" >&2 || true
      stop >/dev/null
      die "worker $i did not register with the master (log above: $DIR/logs/worker-$i.log)"
    fi
  done
  echo "local_cluster: master + $WORKERS workers x $CORES core(s) x $MEMORY on 127.0.0.1; state in $DIR"
  echo "$url"
}

# A fresh state dir: MGOE_CLUSTER_DIR emptied, or a new mode-700 mktemp folder (the previous one, which this
# script made and recorded, is removed: it only held the logs of a cluster that no longer runs).
new_state_dir() {
  if [ -n "${MGOE_CLUSTER_DIR:-}" ]; then
    rm -rf "$DIR" && mkdir -p "$DIR/logs"
    return
  fi
  if [ -n "$DIR" ] && [ -d "$DIR" ] && [ -O "$DIR" ] && [ ! -L "$DIR" ]; then rm -rf "$DIR"; fi
  DIR=$(mktemp -d "${TMPDIR:-/tmp}/mgoe-local-cluster.XXXXXX")
  mkdir "$DIR/logs"
  mkdir -p "$(dirname "$POINTER")"
  echo "$DIR" >"$POINTER"
}

stop() {
  [ -n "$DIR" ] && [ -d "$DIR" ] || { echo "local_cluster: nothing to stop (no state dir${DIR:+: $DIR absent})"; return 0; }
  local pids=() pid f
  for f in "$DIR"/worker-*.pid "$DIR"/master.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    alive "$pid" || continue
    # executors first (children of the worker JVM), then the worker / master itself
    for c in $(children "$pid"); do pids+=("$c"); done
    pids+=("$pid")
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local left=0
    for pid in "${pids[@]}"; do alive "$pid" && left=1; done
    [ "$left" = 0 ] && break
    sleep 0.2
  done
  for pid in "${pids[@]}"; do alive "$pid" && kill -9 "$pid" 2>/dev/null || true; done
  rm -f "$DIR"/*.pid "$DIR/master.url"
  echo "local_cluster: stopped ${#pids[@]} process(es)"
}

status() {
  local f
  [ -n "$DIR" ] || return 0
  for f in "$DIR"/master.pid "$DIR"/worker-*.pid; do
    [ -f "$f" ] || continue
    if alive "$(cat "$f")"; then echo "$(basename "$f" .pid) $(cat "$f") running"; else echo "$(basename "$f" .pid) $(cat "$f") gone"; fi
  done
  [ -f "$DIR/master.url" ] && cat "$DIR/master.url"
  return 0
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) die "usage: scripts/local_cluster.sh start|stop|status" ;;
esac
