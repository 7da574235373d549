"""Command-line flags, derived from the config dataclasses of :mod:`stream.config`.

Every option is defined once, as a field of a config dataclass; :func:`add_flags` turns the
fields into flags (``--name-with-dashes``, type from the annotation, choices, checks and
help from the field), so ``pleura live`` and ``pleura capture|worker|ui`` accept the same
flags as the file accepts keys. Flags have no argparse default: a flag that is not given leaves
the file's value (or the dataclass default) in force, so every flag overrides ``--config``.
"""

from __future__ import annotations

import argparse
import typing
from dataclasses import MISSING, Field
from pathlib import Path
from typing import Any, TypeVar

import engines
from stream.config import (
    HIDDEN,
    SECTIONS,
    CaptureSettings,
    ConfigError,
    PleuraConfig,
    check_value,
    flag_of,
    option_fields,
)
from stream.configfile import from_dict, read_file, shape
from stream.sources import SourceOptions

T = TypeVar("T")


def add_config_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", default=None,
                   help="TOML or JSON config file (see stream/pleura.example.toml); every flag "
                        "overrides it")


def add_flags(p: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = (),
              title: str | None = None) -> None:
    """One flag per option field of ``cls`` (a :mod:`stream.config` dataclass).

    Values land in ``args`` as ``"<section>.<name>"`` only when given (:func:`given`).
    """
    group = p.add_argument_group(title) if title else p
    hints = typing.get_type_hints(cls)
    for f in option_fields(cls):
        if not f.metadata["cli"] or f.name in skip:
            continue
        base, _ = shape(hints[f.name])
        kw: dict[str, Any] = {"dest": f"{cls.SECTION}.{f.name}", "default": argparse.SUPPRESS,
                              "help": _help(f)}
        if f.metadata["metavar"] or not (base is bool or f.metadata["choices"]):
            kw["metavar"] = f.metadata["metavar"] or f.name.upper()
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(base) is tuple:
            kw["action"] = "append"
        else:
            kw["type"] = _parser(f, base)
            if f.metadata["choices"]:
                kw["choices"] = f.metadata["choices"]
        group.add_argument(flag_of(f), **kw)


def _help(f: Field) -> str:
    text = f.metadata["help"]
    if text == HIDDEN:
        return argparse.SUPPRESS
    if f.default not in (MISSING, None) and not isinstance(f.default, (bool, tuple)) \
            and "default" not in text:
        text += f" (default {f.default})"
    return text


def _parser(f: Field, base: type):
    def parse(text: str):
        value = base(text)
        try:
            check_value(f, value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return value
    parse.__name__ = base.__name__  # argparse's "invalid float value: 'x'"
    return parse


def given(args: argparse.Namespace, section: str) -> dict[str, Any]:
    """The flags of ``section`` given on the command line, as {key: value}."""
    pre = section + "."
    return {k[len(pre):]: v for k, v in vars(args).items() if k.startswith(pre)}


def process_config(cls: type[T], args: argparse.Namespace) -> T:
    """A process config: ``--config`` FILE's ``[cls.SECTION]`` section, then the flags given.

    Raises:
        ConfigError: a bad file, key, type or value, or a required address not given.
    """
    section = cls.SECTION
    data = dict(read_file(args.config).get(section, {})) if args.config else {}
    data.update(given(args, section))
    try:
        return from_dict(cls, data, section)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (config file {args.config})" if args.config else str(exc)) \
            from None


def live_config(args: argparse.Namespace) -> PleuraConfig:
    """``pleura live``'s config: the ``--config`` file's sections, each overridden by the
    flags given.

    Raises:
        ConfigError: a bad file, section, key, type or value.
    """
    data = read_file(args.config) if args.config else {}
    merged = {s: {**data.get(s, {}), **given(args, s)} for s in SECTIONS}
    try:
        return from_dict(PleuraConfig, merged)
    except ConfigError as exc:
        raise ConfigError(f"{exc} (config file {args.config})" if args.config else str(exc)) \
            from None


def source_options(cfg: CaptureSettings) -> SourceOptions:
    """The source layer's options (:class:`stream.sources.SourceOptions`) of a capture."""
    return SourceOptions(loop=bool(cfg.loop), speed=cfg.speed, fps=cfg.fps, size=cfg.size,
                         device_fps=cfg.device_fps, pixel_format=cfg.pixel_format)


def resolve_bundle(path: str | None) -> str:
    """The bundle folder to use; a missing default bundle gets a message saying what to do.

    Raises:
        SystemExit: when the bundle folder does not exist.
    """
    p = Path(path) if path else engines.default_bundle_path()
    if not (p / "manifest.json").exists():
        what = "the default bundle" if path is None else "bundle"
        raise SystemExit(f"pleura: {what} {p} not found (no manifest.json). Train and export "
                         "one (`pleura train frame ...` then `pleura export RUN --out DIR`) and "
                         "pass --bundle DIR, or reinstall pleura with its bundled model.")
    return str(p)
