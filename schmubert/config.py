"""Typed dataclass configs that double as the command-line schema.

Declare a field with :func:`arg` (default + help); :func:`add_arguments` turns a dataclass into argparse options
(``--field-name``, choices from ``Literal`` types, ``--flag/--no-flag`` for booleans) and :func:`from_args` builds
the dataclass back from the parsed namespace.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def arg(default: Any, help: str, **metadata: Any) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field with a default and a help string (mutable defaults are copied per instance).
    An optional field's option reads ``none`` as None unless ``none_is_text=True`` (where 'none' is a value)."""
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def add_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "",
                  skip: tuple[str, ...] = ()) -> None:
    """Add one option per field of dataclass ``cls`` to ``parser``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        tp, optional = _unwrap_optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + prefix + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        kwargs: dict[str, Any] = {"dest": prefix.replace("-", "_") + f.name, "default": default}
        if "choices" in f.metadata:
            kwargs["choices"] = list(f.metadata["choices"])
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
            kwargs["type"] = type(kwargs["choices"][0])
        elif typing.get_origin(tp) in (list, tuple):  # repeatable, and comma-separated values
            item = typing.get_args(tp)[0]
            kwargs.update(type=lambda s, item=item: [item(v) for v in s.split(",") if v], action="extend",
                          default=None, metavar="A,B,...")
        elif tp in (int, float, str, Path):
            kwargs["type"] = tp
        if optional and "type" in kwargs and not f.metadata.get("none_is_text"):
            base = kwargs["type"]
            kwargs["type"] = lambda s, base=base: None if s.lower() in ("none", "") else base(s)
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        has_default = "default" in help_text.lower()
        kwargs["help"] = help_text if has_default else f"{help_text} (default: {shown})"
        parser.add_argument(flag, **kwargs)


def from_args(cls: type[T], namespace: argparse.Namespace, prefix: str = "", **extra: Any) -> T:
    """Build dataclass ``cls`` from the options :func:`add_arguments` added."""
    values = {}
    for f in dataclasses.fields(cls):
        key = prefix.replace("-", "_") + f.name
        if not f.init or not hasattr(namespace, key):
            continue
        value = getattr(namespace, key)
        if value is None and f.default_factory is not dataclasses.MISSING:  # a list option never given
            continue
        values[f.name] = value
    values.update(extra)
    return cls(**values)


def to_dict(config: Any) -> dict[str, Any]:
    """A dataclass as a JSON-friendly dict (paths as strings)."""
    out = dataclasses.asdict(config)
    return {k: str(v) if isinstance(v, Path) else v for k, v in out.items()}
