"""Loading a config: YAML files and profiles, type checks and coercion, ``--set`` overrides.

Layers, later wins:

1. the dataclass defaults (the ``default`` profile: the values SPEC.md gives),
2. a named profile shipped with the package (``mgoe_spark/profiles/<name>.yaml``; ``test`` is small),
3. a user config file (``--config my.yaml``; it may name its own ``profile:``),
4. command-line overrides (``--set kmeans.k_user=64``; values are parsed as YAML scalars / lists).

Every key is checked against the dataclass fields and their types. A typo or a bad value fails with a
:class:`ConfigError` that names the dotted key and what is allowed, e.g.::

    >>> load_config(overrides=["kmeans.kk_user=3"])
    Traceback (most recent call last):
    ...
    mgoe_spark.config.ConfigError: unknown config key 'kmeans.kk_user' (did you mean 'kmeans.k_user'?) ...

The checks types cannot express run last (:func:`mgoe_spark.config.tree.validate`).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from mgoe_spark.config.errors import ConfigError
from mgoe_spark.config.tree import MgoeConfig, validate

PROFILES = ("default", "demo", "test")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        k, v = typing.get_args(tp)
        return f"a mapping of {_describe(k)} to {_describe(v)}"
    if tp is type(None):
        return "null"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp, str(tp))


_FLOAT_LITERAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
"""A decimal number as typed on a command line or in YAML (``1e-4``, ``0.5``, ``3.``); not nan / inf."""


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against type ``tp``; return it (ints widen to float). Raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    bad = ConfigError(f"config key '{key}' must be {_describe(tp)}, got {value!r}")
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise bad
    if origin is list:
        if not isinstance(value, list):
            raise bad
        (item_tp,) = typing.get_args(tp)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad
        k_tp, v_tp = typing.get_args(tp)
        return {_coerce(k, k_tp, key): _coerce(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is None:
            return None
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        # YAML 1.1 reads 1e-4 (no dot) as a string; it is a number to anyone typing it
        if isinstance(value, str) and _FLOAT_LITERAL.fullmatch(value.strip()) and math.isfinite(float(value)):
            return float(value)
        raise bad
    if tp is str:
        # YAML turns 2017-11-25 into a date; a string was meant.
        if isinstance(value, str):
            return value
        if hasattr(value, "isoformat") and not isinstance(value, bool):
            return value.isoformat()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise bad
    raise TypeError(f"unsupported config type {tp!r} for {key}")


def _merge_into(obj: Any, data: dict[str, Any], prefix: str = "") -> None:
    """Set fields of dataclass ``obj`` from nested mapping ``data`` (validated, in place)."""
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in names:
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
            allowed = ", ".join(f"{prefix}{n}" for n in names)
            raise ConfigError(f"unknown config key '{key}'{hint}; allowed keys here: {allowed}")
        current = getattr(obj, name)
        if dataclasses.is_dataclass(current):
            _merge_into(current, value, f"{key}.")
        else:
            setattr(obj, name, _coerce(value, hints[name], key))


def _parse_override(text: str) -> dict[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value (e.g. kmeans.k_user=64)")
    dotted, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc.problem})") from None
    out: dict[str, Any] = {}
    node = out
    parts = dotted.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{origin}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of sections")
    return data


def profile_data(name: str) -> dict[str, Any]:
    """The overrides a named profile applies on top of the defaults."""
    if name not in PROFILES:
        raise ConfigError(f"unknown profile '{name}'; allowed profiles: {', '.join(PROFILES)}")
    text = resources.files("mgoe_spark").joinpath("profiles", f"{name}.yaml").read_text()
    return _read_yaml(text, f"profile '{name}'")


def load_config(
    path: str | Path | None = None,
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> MgoeConfig:
    """Build the config: defaults <- profile <- file at ``path`` <- ``overrides`` (``a.b=value``).

    The profile is ``profile`` if given, else the file's ``profile:`` key, else ``default``.

    >>> cfg = load_config(profile="test", overrides=["kmeans.k_user=8"])
    >>> cfg.kmeans.k_user
    8
    """
    file_data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file '{p}' does not exist")
        file_data = _read_yaml(p.read_text(), str(p))
    file_profile = file_data.pop("profile", None)
    cfg = MgoeConfig()
    _merge_into(cfg, profile_data(profile or file_profile or "default"))
    _merge_into(cfg, file_data)
    for text in overrides:
        _merge_into(cfg, _parse_override(text))
    validate(cfg)
    return cfg


def with_overrides(cfg: MgoeConfig, overrides: list[str] | tuple[str, ...]) -> MgoeConfig:
    """A validated copy of ``cfg`` with ``a.b=value`` overrides applied (``cfg`` is left unchanged)."""
    out = copy.deepcopy(cfg)
    for text in overrides:
        _merge_into(out, _parse_override(text))
    validate(out)
    return out
