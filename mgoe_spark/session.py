"""The one SparkSession factory, for local runs and for spark-submit.

- Run directly (``mgoe ...``, tests): master is ``spark.master`` from the config or ``local[*]``.
- Under ``spark-submit``: the master, deploy mode and resources are spark-submit's; this never sets them.
- Local runs pin ``PYSPARK_PYTHON`` to the running interpreter so Spark's Python workers import the same
  packages (FAISS, numpy, this project) as the driver.
- Extra Spark conf comes from the config's ``spark.conf`` mapping.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from mgoe_spark.config import SparkSettings

MIN_JAVA = 17


class EnvironmentProblem(RuntimeError):
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


def get_spark(settings: SparkSettings | None = None, app_name: str | None = None):
    """Return the SparkSession (created on first call; later calls return the active one).

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
    for key, value in {**defaults, **settings.conf}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if master is not None and master.startswith("local"):
        spark.sparkContext.setLogLevel("WARN")
    return spark
