"""The one SparkSession factory, for local runs and for spark-submit.

- Run directly (``mgoe ...``, tests): master is ``spark.master`` from the config or ``local[*]``.
- Under ``spark-submit``: the master, deploy mode and resources are spark-submit's; this never sets them.
- Local runs pin ``PYSPARK_PYTHON`` to the running interpreter so Spark's Python workers import the same
  packages (FAISS, numpy, this project) as the driver. Under spark-submit with a local master and
  ``PYSPARK_PYTHON`` set, that interpreter is checked first (exists, same Python minor version as the driver,
  imports numpy / pyarrow): otherwise the first Python UDF would fail deep inside a Spark task.
- Extra Spark conf comes from the config's ``spark.conf`` mapping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from mgoe_spark.config import SparkSettings
from mgoe_spark.core.errors import UserError

MIN_JAVA = 17


class EnvironmentProblem(UserError, RuntimeError):
    """The machine cannot run Spark as set up (Java missing / too old, wrong Python); the message says how
    to fix it."""


def under_spark_submit() -> bool:
    """True when this Python process was launched by spark-submit (the JVM already runs)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def java_major_version(java: str | None = None) -> int | None:
    """The major version of the ``java`` Spark will use (``JAVA_HOME`` first), or None if there is none."""
    if java is None:
        home = os.environ.get("JAVA_HOME")
        java = os.path.join(home, "bin", "java") if home else shutil.which("java")
    if not java or not os.path.exists(java):
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2)) if major == 1 and match.group(2) else major


def check_java() -> None:
    """Fail with a one-line hint when Java is missing or older than 17 (Spark 4 needs 17+)."""
    major = java_major_version()
    hint = "install it (Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME"
    if major is None:
        raise EnvironmentProblem(f"Java {MIN_JAVA}+ not found (Spark needs it): {hint}")
    if major < MIN_JAVA:
        raise EnvironmentProblem(f"Java {major} is too old; Spark 4 needs Java {MIN_JAVA}+: {hint}")


# What every job's Python workers import; faiss only in the k-means stages (the quality gate runs without it).
WORKER_MODULES = ("numpy", "pyarrow")


def check_worker_python(python: str, driver: tuple[int, int] | None = None) -> None:
    """Fail with a one-line hint unless ``python`` (``PYSPARK_PYTHON``) can run this project's Spark
    workers: it exists, has the driver's major.minor version (pickled functions are version-specific) and
    imports numpy and pyarrow. One subprocess call."""
    driver = driver or sys.version_info[:2]
    want = f"{driver[0]}.{driver[1]}"
    hint = f"set PYSPARK_PYTHON to a Python {want} with the project's packages, e.g. {sys.executable}"
    resolved = python if os.path.sep in python else shutil.which(python)
    if not resolved or not os.path.exists(resolved):
        raise EnvironmentProblem(f"PYSPARK_PYTHON={python} does not exist: {hint}")
    code = "import sys; print('%d.%d' % sys.version_info[:2]); import " + ", ".join(WORKER_MODULES)
    try:
        done = subprocess.run([resolved, "-c", code], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise EnvironmentProblem(f"PYSPARK_PYTHON={python} cannot be run ({exc}): {hint}") from None
    lines = done.stdout.strip().splitlines()
    version = lines[0].strip() if lines else "?"
    if version != want:
        raise EnvironmentProblem(f"PYSPARK_PYTHON={python} is Python {version} but the driver runs {want}: {hint}")
    if done.returncode != 0:
        errors = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
        why = errors[-1].strip() if errors else f"exit code {done.returncode}"
        raise EnvironmentProblem(f"PYSPARK_PYTHON={python} cannot import the worker packages ({why}): {hint}")


def local_driver_memory(total_bytes: int | None = None) -> str:
    """Heap for a local-mode JVM: a quarter of the machine's memory, between 1g and 16g."""
    if total_bytes is None:
        try:
            total_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total_bytes = 4 << 30
    gib = min(16, max(1, total_bytes // 4 // (1 << 30)))
    return f"{gib}g"


def get_spark(settings: SparkSettings | None = None, app_name: str | None = None, jvm_log: str | None = None):
    """Return the SparkSession (created on first call; later calls return the active one).

    ``jvm_log``: when this call starts a local JVM, the JVM's own console output (its start-up notices and
    Spark's log lines) goes to this file instead of the terminal, so a command prints only its own lines;
    a failing Spark job still raises in Python with the Java error in its message.

    >>> spark = get_spark(SparkSettings(master="local[2]"))  # doctest: +SKIP
    """
    from pyspark.sql import SparkSession

    settings = settings or SparkSettings()
    builder = SparkSession.builder.appName(app_name or settings.app_name)
    submitted = under_spark_submit()
    master = None if submitted else (settings.master or "local[*]")
    if master is not None:
        check_java()
        builder = builder.master(master)
    if master is not None and master.startswith("local"):
        # Workers must run this interpreter, not whatever `python3` is first on PATH.
        os.environ["PYSPARK_PYTHON"] = sys.executable
        os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    defaults = {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
        "spark.sql.parquet.compression.codec": "zstd",
    }
    if master is not None and master.startswith("local"):
        # On one machine Spark's 200 default shuffle partitions are mostly scheduling overhead, and the
        # console progress bars drown the one line per stage the jobs print. Config can override both.
        defaults["spark.sql.shuffle.partitions"] = str(4 * (os.cpu_count() or 2))
        defaults["spark.ui.showConsoleProgress"] = "false"
        # Local mode runs every executor inside the driver JVM, whose default heap (1g) is too small for
        # a few million events (broadcast joins chosen at run time fail with OutOfMemoryError). Only takes
        # effect when this call starts the JVM.
        defaults["spark.driver.memory"] = local_driver_memory()
    for key, value in {**defaults, **settings.conf}.items():
        builder = builder.config(key, value)
    if jvm_log and master is not None and master.startswith("local"):
        spark = _quietly(builder, jvm_log)
    else:
        spark = builder.getOrCreate()
    worker_python = os.environ.get("PYSPARK_PYTHON")
    if submitted and worker_python and spark.sparkContext.master.startswith("local"):
        # Local workers run on this machine: check their interpreter before the first task needs it.
        check_worker_python(worker_python)
    if master is not None and master.startswith("local"):
        spark.sparkContext.setLogLevel("WARN")
    return spark


def _quietly(builder, jvm_log: str):
    """``builder.getOrCreate()`` with the stderr that a newly started JVM inherits pointed at ``jvm_log``
    (the JVM keeps it; this process gets its own stderr back). Nothing changes if the JVM already runs."""
    from pyspark import SparkContext

    if SparkContext._gateway is not None:  # the JVM already runs: its output goes where it went
        return builder.getOrCreate()
    os.makedirs(os.path.dirname(os.path.abspath(jvm_log)), exist_ok=True)
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(jvm_log, "ab") as log:
            os.dup2(log.fileno(), 2)
        return builder.getOrCreate()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
