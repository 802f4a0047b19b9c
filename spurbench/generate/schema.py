"""Parsed YAML -> typed dataclasses, every error naming its key path: the reading shared by every part of a
recipe (the method schemas in recipe.py and methods/, and the `verify:` section in verify_stage.py)."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

from spurbench.errors import SpurbenchError

_TYPE_WORDS = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "a mapping",
    list: "a list",
}


def convert(tp: Any, value: Any, where: str) -> Any:
    """Parsed YAML -> the schema dataclass `tp`, every error naming its key path (`where`)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            if len(args) != len(typing.get_args(tp)):
                return None
            raise SpurbenchError(f"key '{where}' must not be empty")
        return convert(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise SpurbenchError(f"key '{where or '<top level>'}' must be a mapping, got {_describe(value)}")
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = [k for k in value if k not in fields]
        if unknown:
            raise SpurbenchError(
                f"unknown key '{_join(where, str(unknown[0]))}'; allowed keys there: {', '.join(fields)}"
            )
        kwargs = {}
        for name, f in fields.items():
            key = _join(where, name)
            if name not in value:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise SpurbenchError(f"missing key '{key}'")
                continue
            kwargs[name] = convert(hints[name], value[name], key)
        return tp(**kwargs)
    if origin is list:
        if not isinstance(value, list):
            raise SpurbenchError(f"key '{where}' must be a list, got {_describe(value)}")
        (item,) = typing.get_args(tp)
        return [convert(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is dict:
        if not isinstance(value, Mapping):
            raise SpurbenchError(f"key '{where}' must be a mapping, got {_describe(value)}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpurbenchError(f"key '{where}' must be a number, got {_describe(value)}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SpurbenchError(f"key '{where}' must be an integer, got {_describe(value)}")
        return value
    if tp in (str, bool):
        if type(value) is not tp:
            raise SpurbenchError(f"key '{where}' must be {_TYPE_WORDS[tp]}, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported schema type {tp!r}")  # a bug in the schema, not a user mistake


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _describe(value: Any) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, (dict, list)) else type(value).__name__


def plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    return obj
