"""Build `argparse` parsers from configuration dataclasses, so each option is documented once.

A field's ``metadata["help"]`` is its documentation; ``metadata["positional"]`` makes it a
positional argument; ``metadata["aliases"]`` adds extra flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

__all__ = ["add_dataclass_arguments", "dataclass_from_namespace"]

T = TypeVar("T")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _field_kwargs(field: dataclasses.Field, tp: Any) -> dict[str, Any]:
    tp, _ = _unwrap_optional(tp)
    kwargs: dict[str, Any] = {"help": field.metadata.get("help", "")}
    if field.default is not dataclasses.MISSING:
        kwargs["default"] = field.default
    elif field.default_factory is not dataclasses.MISSING:
        kwargs["default"] = field.default_factory()
    else:
        kwargs["required"] = not field.metadata.get("positional", False)
        if kwargs["required"]:
            kwargs["help"] += " (required)"
    origin = get_origin(tp)
    if tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif origin is Literal:
        kwargs["choices"] = list(get_args(tp))
        kwargs["type"] = type(get_args(tp)[0])
    elif origin in (list, tuple):
        item = get_args(tp)[0]
        item, _ = _unwrap_optional(item)
        if get_origin(item) is Literal:
            kwargs["choices"] = list(get_args(item))
            item = type(get_args(item)[0])
        kwargs["nargs"] = "+"
        kwargs["type"] = item
    else:
        kwargs["type"] = Path if tp is Path else tp
    if "default" in kwargs and kwargs["default"] is not None and "action" not in kwargs:
        kwargs["help"] += f" (default: {_show(kwargs['default'])})"
    if kwargs.get("nargs") == "+":
        # `--model A --model B` and `--model A B` both give (A, B). argparse would extend a default list in
        # place, so an absent flag leaves no attribute and the dataclass default applies.
        kwargs.update(action="extend", default=argparse.SUPPRESS)
    return kwargs


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return " ".join(str(v) for v in value)
    return str(value)


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type) -> argparse.ArgumentParser:
    """Add one argument per field of the dataclass `cls` to `parser`."""
    hints = get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if not field.init or field.metadata.get("cli") is False:
            continue
        kwargs = _field_kwargs(field, hints[field.name])
        if field.metadata.get("positional"):
            kwargs.pop("required", None)
            if "default" in kwargs:
                kwargs["nargs"] = "?"
            parser.add_argument(field.name, metavar=field.name.upper(), **kwargs)
        else:
            flags = [f"--{field.name.replace('_', '-')}", *field.metadata.get("aliases", ())]
            parser.add_argument(*flags, dest=field.name, **kwargs)
    return parser


def dataclass_from_namespace(cls: type[T], namespace: argparse.Namespace) -> T:
    """Instantiate `cls` from the parsed values of its fields (lists become tuples where declared).

    A None for a field that is not optional counts as absent; an optional field keeps it.
    """
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if not field.init or not hasattr(namespace, field.name):
            continue
        value = getattr(namespace, field.name)
        tp, optional = _unwrap_optional(hints[field.name])
        # None is a value of an optional field (YAML `null`: "keep all", "no validation"); for any other field
        # it means "not given" (a list flag's parser default), and the dataclass default applies.
        if (
            value is None
            and not optional
            and (field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING)
        ):
            continue
        if get_origin(tp) is tuple and isinstance(value, list):
            value = tuple(value)
        values[field.name] = value
    return cls(**values)
