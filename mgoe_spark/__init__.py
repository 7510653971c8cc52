"""mgoe_spark: the Spark side of MGOE. Pure DataFrame -> DataFrame transforms; I/O lives in ``jobs/``."""

__version__ = "0.1.0"
