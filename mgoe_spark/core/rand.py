"""Seeded, partitioning-independent randomness for Spark columns.

``F.rand(seed)`` depends on how rows are split into partitions, so the same seed can give different
results on another cluster. These helpers hash (seed, salt, key columns) instead: the same row always
gets the same number, wherever it is processed.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

_MANTISSA = (1 << 53) - 1


def uniform(seed: int, salt: str, *keys: Column | str) -> Column:
    """A uniform double in [0, 1) determined by ``seed``, ``salt`` and the key columns."""
    h = F.xxhash64(F.lit(int(seed)), F.lit(salt), *keys)
    return h.bitwiseAND(F.lit(_MANTISSA)) / float(1 << 53)


def normal(seed: int, salt: str, *keys: Column | str) -> Column:
    """A standard normal double (Box-Muller on two hashed uniforms)."""
    u1 = uniform(seed, salt + ":1", *keys)
    u2 = uniform(seed, salt + ":2", *keys)
    return F.sqrt(-2.0 * F.log(1.0 - u1)) * F.cos(2.0 * 3.141592653589793 * u2)
