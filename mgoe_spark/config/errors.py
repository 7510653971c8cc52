"""The one exception a config mistake raises, and the helper every check uses to raise it."""

from __future__ import annotations

from mgoe_spark.core.errors import UserError


class ConfigError(UserError, ValueError):
    """A user mistake in a config file or override; the message names the key and the allowed values."""


ConfigError.__module__ = "mgoe_spark.config"  # its public home: tracebacks read mgoe_spark.config.ConfigError


def require(cond: bool, key: str, message: str) -> None:
    """Raise ``ConfigError("config key '<key>' <message>")`` unless ``cond``."""
    if not cond:
        raise ConfigError(f"config key '{key}' {message}")
