"""Typed settings: dataclass fields that carry their help text and checks, and a strict loader.

Every settings class in fewstep (the config sections, each sampler's settings) is a dataclass whose
fields are made by :func:`opt`: a default, a help string (shown by ``fewstep config``) and checks
(``min``, ``max``, ``choices``). :func:`from_dict` builds one from nested dicts (YAML), refusing
unknown keys, wrong types, NaN or infinite numbers and out-of-range values with a
``FewstepError`` that names the key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import field
from typing import Any

from .errors import FewstepError

MAX_SHOWN = 60
"""Longest user value quoted back in an error message."""

_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
"""A number in exponent notation without a dot (1e-3, 2E6): YAML 1.1 reads it as a string."""


def opt(default: Any, help: str, **checks: Any) -> Any:
    """A settings field with its documentation and checks (min, max, choices)."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **checks})
    if dataclasses.is_dataclass(default):
        return field(default_factory=lambda: dataclasses.replace(default), metadata={"help": help, **checks})
    return field(default=default, metadata={"help": help, **checks})


def shown(value: Any) -> str:
    """``repr(value)``, shortened so an error message stays one readable line."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**12:
        return f"{value:.3g}"
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _check_value(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_value(value, inner, key)
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise FewstepError(f"config key {key} must be a list, got {shown(value)}")
        return [_check_value(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise FewstepError(f"config key {key} must be true or false, got {shown(value)}")
        return value
    if hint is int:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            value = float(value)  # 1e6 is an integer written in exponent notation
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # YAML reads 1.0e4 as a float
        if isinstance(value, bool) or not isinstance(value, int):
            raise FewstepError(f"config key {key} must be an integer, got {shown(value)}")
        return value
    if hint is float:
        if isinstance(value, str) and _EXPONENT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FewstepError(f"config key {key} must be a number, got {shown(value)}")
        if not math.isfinite(value):
            raise FewstepError(f"config key {key} must be a finite number, got {shown(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise FewstepError(f"config key {key} must be a string, got {shown(value)}")
        return value
    raise TypeError(f"unsupported config type {hint} for {key}")


def _check_range(key: str, value: Any, meta: dict) -> None:
    for v in value if isinstance(value, list) else [value]:
        if v is None:
            continue
        if "choices" in meta and v not in meta["choices"]:
            raise FewstepError(f"config key {key} is {shown(v)}; choose one of {', '.join(map(str, meta['choices']))}")
        if "min" in meta and v < meta["min"]:
            raise FewstepError(f"config key {key} is {shown(v)}; it must be >= {meta['min']}")
        if "above" in meta and v <= meta["above"]:
            raise FewstepError(f"config key {key} is {shown(v)}; it must be > {meta['above']}")
        if "max" in meta and v > meta["max"]:
            raise FewstepError(f"config key {key} is {shown(v)}; it must be <= {meta['max']}")


def from_dict(cls: type, data: dict | None, prefix: str = "") -> Any:
    """Build the dataclass ``cls`` from nested dicts, checking keys, types and ranges."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise FewstepError(f"config section {prefix.rstrip('.') or '(top level)'} must be a mapping, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(data) - set(fields))
    if unknown:
        raise FewstepError(f"unknown config key {prefix}{unknown[0]} (known in this section: {', '.join(fields)})")
    values = {}
    for name, value in data.items():
        key, hint = prefix + name, hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = from_dict(hint, value, key + ".")
            continue
        value = _check_value(value, hint, key)
        _check_range(key, value, fields[name].metadata)
        values[name] = value
    return cls(**values)


def from_dict_keeping(cls: type, data: dict | None, strict: tuple[str, ...], prefix: str = "") -> tuple[Any, list]:
    """Like :func:`from_dict`, but in the sections not named in ``strict`` a key that is unknown or
    invalid (a setting of another fewstep version) is dropped, its default taken; returns the
    settings and the dropped keys. The ``strict`` sections are read as :func:`from_dict` reads them."""
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise FewstepError(f"config section {prefix.rstrip('.') or '(top level)'} must be a mapping, got {shown(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values, dropped = {}, []
    for name, value in data.items():
        key = prefix + str(name)
        if name not in fields:
            dropped.append(key)
            continue
        hint = hints[name]
        try:
            if dataclasses.is_dataclass(hint):
                if name in strict:
                    values[name] = from_dict(hint, value, key + ".")
                else:
                    values[name], inner = from_dict_keeping(hint, value, (), key + ".")
                    dropped += inner
                continue
            value = _check_value(value, hint, key)
            _check_range(key, value, fields[name].metadata)
            values[name] = value
        except FewstepError:
            if name in strict:
                raise
            dropped.append(key)
    return cls(**values), dropped


def to_dict(settings: Any) -> dict:
    return dataclasses.asdict(settings)


def check(settings: Any, prefix: str = "") -> Any:
    """``settings`` (a dataclass made in Python, not read from YAML) checked as :func:`from_dict` checks YAML."""
    if not dataclasses.is_dataclass(settings) or isinstance(settings, type):
        raise FewstepError(f"expected {prefix.rstrip('.') or 'a settings object'}, got {shown(settings)}")
    data = {}
    hints = typing.get_type_hints(type(settings))
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            if not (dataclasses.is_dataclass(value) and isinstance(value, hints[f.name])):
                raise FewstepError(
                    f"config section {prefix}{f.name} must be a {hints[f.name].__name__}, got {shown(value)}"
                )
            check(value, f"{prefix}{f.name}.")
        else:
            data[f.name] = value
    return from_dict(type(settings), data, prefix)


def missing_keys(cls: type, data: Any, prefix: str = "") -> list[str]:
    """The keys of ``cls`` (nested) that the mapping ``data`` lacks: a complete record has none."""
    if not isinstance(data, dict):
        return [prefix.rstrip(".") or "(everything)"]
    missing = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            missing.append(prefix + f.name)
        elif dataclasses.is_dataclass(hints[f.name]):
            missing += missing_keys(hints[f.name], data[f.name], prefix + f.name + ".")
    return missing


def describe(cls: type, prefix: str = "") -> list[str]:
    """One line per field: key, default and help (for ``fewstep config``)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            lines += describe(hints[f.name], prefix + f.name + ".")
        else:
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            lines.append(f"{prefix + f.name} = {default!r}  # {f.metadata.get('help', '')}")
    return lines
