"""The SparkSession factory: local defaults, conf from config, Java checks."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from mgoe_spark.core import session
from mgoe_spark.core.session import EnvironmentProblem, check_java, java_major_version


def test_local_session_pins_python_and_applies_conf(spark):
    assert spark.sparkContext.master == "local[2]"
    assert os.environ["PYSPARK_PYTHON"] == sys.executable
    assert spark.conf.get("spark.sql.shuffle.partitions") == "4"
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    # Workers run the same interpreter as the driver.
    worker_python = spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("sys").executable).collect()
    assert worker_python == [sys.executable]


def _fake_java(tmp_path, version_line: str) -> str:
    path = tmp_path / "java"
    path.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


@pytest.mark.parametrize(
    ("line", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('openjdk version "21" 2023-09-19', 21),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "11.0.2" 2019-01-15', 11),
    ],
)
def test_java_version_parsing(tmp_path, line, major):
    assert java_major_version(_fake_java(tmp_path, line)) == major


def test_java_missing_or_old_gives_one_line_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(session, "java_major_version", lambda java=None: None)
    with pytest.raises(EnvironmentProblem, match=r"Java 17\+ not found .*apt-get install -y openjdk-17"):
        check_java()
    monkeypatch.setattr(session, "java_major_version", lambda java=None: 11)
    with pytest.raises(EnvironmentProblem, match="Java 11 is too old; Spark 4 needs Java 17"):
        check_java()


def test_under_spark_submit_detection(monkeypatch):
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    assert not session.under_spark_submit()
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "12345")
    assert session.under_spark_submit()


def _fake_python(tmp_path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_worker_python_is_checked(tmp_path):
    driver = f"{sys.version_info.major}.{sys.version_info.minor}"
    session.check_worker_python(sys.executable)  # the test interpreter has every package
    cases = [
        (str(tmp_path / "nope" / "python3"), "does not exist"),
        (_fake_python(tmp_path, "py38", "echo 3.8"), f"is Python 3.8 but the driver runs {driver}"),
        (
            _fake_python(
                tmp_path,
                "nopyarrow",
                f"echo {driver}; echo \"ModuleNotFoundError: No module named 'pyarrow'\" >&2; exit 1",
            ),
            "cannot import the worker packages (ModuleNotFoundError: No module named 'pyarrow')",
        ),
    ]
    for python, message in cases:
        with pytest.raises(EnvironmentProblem) as err:
            session.check_worker_python(python)
        text = str(err.value)
        assert message in text and f"PYSPARK_PYTHON={python}" in text and sys.executable in text
        assert "\n" not in text


@pytest.mark.parametrize(("total_gib", "expected"), [(2, "1g"), (24, "6g"), (512, "16g")])
def test_local_driver_memory_is_a_quarter_of_the_machine_within_bounds(total_gib, expected):
    from mgoe_spark.core.session import local_driver_memory

    assert local_driver_memory(total_gib << 30) == expected
