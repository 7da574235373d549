"""Config files: the dataclasses of :mod:`stream.config` to and from TOML and JSON.

Reading goes through :func:`from_dict`, which checks every key and type and says what is
wrong (the key, what it must be, the valid keys); writing omits unset (None) values, since
TOML has no null. TOML is read with the standard library (``tomllib``) and written by
:func:`dumps_toml` (tables of strings, numbers, booleans and lists of strings: all a config
holds).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

import tomllib

from stream.config import ConfigError, PleuraConfig, flag_of

T = TypeVar("T")

_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def shape(tp: Any) -> tuple[Any, bool]:
    """(the type without ``| None``, whether None is allowed)."""
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


def _coerce(value: Any, tp: Any, where: str) -> Any:
    base, optional = shape(tp)
    if value is None and optional:
        return None
    if is_dataclass(base):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table ([{where}]), got "
                              f"{type(value).__name__}")
        return from_dict(base, value, where)
    if typing.get_origin(base) is tuple:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{where} must be a list of strings, got {type(value).__name__} "
                          f"{value!r:.60}")
    ok = (isinstance(value, base) and not (base is int and isinstance(value, bool))
          or base is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{where} must be {_NAMES.get(base, base.__name__)}, got "
                          f"{type(value).__name__} {value!r:.60}")
    return float(value) if base is float else value


def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
    """Make ``cls`` from a parsed file section (or flag values), checking keys and types.

    Args:
        cls: a config dataclass (its nested dataclass fields are sections).
        data: {key: value} as read from TOML / JSON.
        where: the section name, for error messages.

    Raises:
        ConfigError: an unknown key (the valid ones listed), a wrong type, a bad value, or a
            required key missing (with its flag).
    """
    at = f"[{where}] " if where else ""
    known = {f.name: f for f in fields(cls) if f.init}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{at}unknown key {unknown[0]!r}; valid keys: "
                          f"{', '.join(sorted(known))}")
    hints = typing.get_type_hints(cls)
    values = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    missing = [f for f in known.values() if f.name not in values and f.default is MISSING
               and f.default_factory is MISSING]
    if missing:
        f = missing[0]
        flag = f"{flag_of(f)} {f.metadata.get('metavar') or f.name.upper()}"
        raise ConfigError(f"{at}{f.name} is not set: give {flag} or {f.name} = ... in "
                          f"the [{getattr(cls, 'SECTION', where) or where}] section of --config")
    try:
        return cls(**values)
    except ConfigError as exc:
        raise ConfigError(f"{at}{exc}") from None


def to_dict(obj: Any) -> dict[str, Any]:
    """A config dataclass as plain data: tuples as lists, None values left out."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if is_dataclass(v):
            out[f.name] = to_dict(v)
        elif isinstance(v, tuple):
            out[f.name] = list(v)
        elif v is not None:
            out[f.name] = v
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")) if not math.isfinite(
            v) else repr(v)
    if isinstance(v, str):  # a TOML basic string: JSON's escapes, plus DEL
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise ConfigError(f"cannot write {type(v).__name__} {v!r:.60} to TOML")


def dumps_toml(data: dict[str, Any]) -> str:
    """{key: value, section: {key: value}} -> TOML text (top-level keys first)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines).lstrip("\n") + "\n"


def read_file(path: str | os.PathLike) -> dict[str, Any]:
    """A config file as {section: {key: value}}: TOML (``.toml``) or JSON (``.json``).

    Raises:
        ConfigError: a missing or unreadable file, text that is not UTF-8, a syntax error, or
            another suffix.
    """
    p = Path(path)
    if p.suffix not in (".toml", ".json"):
        raise ConfigError(f"config file {p} must end in .toml or .json")
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:  # e.g. saved as Latin-1 / Windows-1252 by an editor
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"config file {p} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x}"
                          f" on line {line}); save it as UTF-8") from None
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"config file {p} is not valid {p.suffix[1:].upper()}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a table of sections, got "
                          f"{type(data).__name__}")
    unknown = sorted(set(data) - {f.name for f in fields(PleuraConfig)})
    if unknown:
        raise ConfigError(f"config file {p}: unknown section {unknown[0]!r}; valid sections: "
                          f"{', '.join(f.name for f in fields(PleuraConfig))}")
    bad = next((k for k, v in data.items() if not isinstance(v, dict)), None)
    if bad is not None:
        raise ConfigError(f"config file {p}: {bad} must be a section ([{bad}]), got "
                          f"{type(data[bad]).__name__}")
    return data


def load(path: str | os.PathLike) -> PleuraConfig:
    """A whole config file (TOML or JSON), checked.

    Raises:
        ConfigError: see :func:`read_file` and :func:`from_dict`; the message names the file.
    """
    data = read_file(path)
    try:
        return from_dict(PleuraConfig, data)
    except ConfigError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None


def write(data: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write {section: {key: value}} as TOML or JSON (by suffix), atomically, mode 0600 (a
    file may hold a login)."""
    p = Path(path)
    text = dumps_toml(data) if p.suffix == ".toml" else json.dumps(data, indent=1) + "\n"
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, p)
    return p
