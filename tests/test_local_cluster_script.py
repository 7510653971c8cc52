"""scripts/local_cluster.sh keeps its state (pid files, logs) in a private ``mktemp -d`` folder, not at a
predictable path in the shared /tmp: a folder another user made there first is neither emptied by ``start``
nor read by ``stop`` (whose pid files would make it kill whatever pids they name). A stub ``spark-class``
stands in for the JVMs (it listens on the master's port and prints the worker's registration line), so the
script's own logic runs in about 2 s."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

STUB = """#!{python}
import socket, sys, time
args = sys.argv[1:]
if args[0].endswith("Master"):
    server = socket.socket()
    server.bind(("127.0.0.1", int(args[args.index("--port") + 1])))
    server.listen()
else:
    print("Successfully registered with master", flush=True)
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[:1]


def _setup(tmp_path: Path) -> tuple[Path, dict, Path]:
    """A copy of the script in its own checkout (its .cache is the test's), a stub spark-class, a TMPDIR, and
    the predictable folder the old script used, made first by "someone else" with a pid file in it."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    script = checkout / "scripts" / "local_cluster.sh"
    shutil.copy(REPO / "scripts" / "local_cluster.sh", script)
    stub = tmp_path / "spark-class"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(0o755)
    tmpdir = tmp_path / "tmp"
    planted = tmpdir / "mgoe-local-cluster-mgoe-test"
    planted.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MGOE_CLUSTER_DIR", "SPARK_HOME")}
    env.update(TMPDIR=str(tmpdir), USER="mgoe-test", SPARK_CLASS=str(stub), PYTHON=sys.executable)
    env["SPARK_HOME"] = str(tmp_path)  # the stub needs no Spark
    return script, env, planted


def test_state_is_in_a_private_mktemp_folder_and_a_planted_one_is_ignored(tmp_path):
    script, env, planted = _setup(tmp_path)
    victim = subprocess.Popen(["sleep", "60"])  # a process of this user that a planted pid file names
    try:
        (planted / "master.pid").write_text(str(victim.pid))
        (planted / "keep").write_text("someone else's")
        stopped = subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0, stopped.stderr
        time.sleep(0.3)
        assert _alive(victim.pid), "stop killed a pid from a folder it did not make"

        started = subprocess.run([script, "start"], env=env, capture_output=True, text=True, timeout=120)
        assert started.returncode == 0, started.stdout + started.stderr
        assert started.stdout.strip().splitlines()[-1].startswith("spark://127.0.0.1:")
        assert (planted / "keep").read_text() == "someone else's"  # not emptied, not written into
        assert sorted(p.name for p in planted.iterdir()) == ["keep", "master.pid"]
        state = Path((script.parents[1] / ".cache" / "local-cluster.dir").read_text().strip())
        assert state.parent == Path(env["TMPDIR"]) and state != planted
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        pids = [int((state / f"{name}.pid").read_text()) for name in ("master", "worker-1", "worker-2")]
        assert all(_alive(pid) for pid in pids)

        status = subprocess.run([script, "status"], env=env, capture_output=True, text=True, timeout=60)
        assert status.stdout.count("running") == 3, status.stdout
        stopped = subprocess.run([script, "stop"], env=env, capture_output=True, text=True, timeout=60)
        assert stopped.returncode == 0 and "stopped 3 process(es)" in stopped.stdout, stopped.stdout
        assert not any(_alive(pid) for pid in pids)
        assert _alive(victim.pid)
    finally:
        victim.kill()
        victim.wait()
