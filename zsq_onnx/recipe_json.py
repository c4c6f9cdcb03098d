"""The recipe's JSON round trip, generic over frozen dataclasses: fields are encoded and decoded
by walking them (:data:`CODECS` holds the per-type hooks, checked before the generic enum and
dataclass rules)."""

from __future__ import annotations

import dataclasses
import enum
import logging
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zsq_onnx.errors import BadInputError, InternalError
from zsq_onnx.profiles import Profile, get_profile

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Codec:
    """How values of one field type go to JSON and back: ``encode(value)`` and
    ``decode(value, key)``, where ``key`` is the field's dotted path for error messages."""

    encode: Callable[[Any], Any]
    decode: Callable[[Any, str], Any]


def _scalar(kind: type) -> Codec:
    """JSON scalars pass through unchanged once checked (an int is a float; a bool is neither)."""
    accepted = (int, float) if kind is float else (kind,)

    def read(value: Any, key: str) -> Any:
        if not isinstance(value, accepted) or (kind is not bool and isinstance(value, bool)):
            raise BadInputError(f"recipe key {key!r}: expected {kind.__name__}, got {value!r}")
        return value

    return Codec(lambda value: value, read)


# Per-type hooks of the JSON round trip, looked up before the generic enum and dataclass rules;
# a field type that is neither (or a dataclass stored otherwise than field by field) adds one.
def _profile() -> Codec:
    """A profile is written by name and resolved by name (the one place a recipe name enters)."""

    def read(value: Any, key: str) -> Profile:
        if not isinstance(value, str):
            raise BadInputError(f"recipe key {key!r}: expected a profile name, got {value!r}")
        return get_profile(value)

    return Codec(lambda profile: profile.name, read)


CODECS: dict[type, Codec] = {**{kind: _scalar(kind) for kind in (bool, int, float, str)}, Profile: _profile()}


def encode(value: Any) -> Any:
    """``value`` as JSON data: by its codec, an enum as its value, a tuple as a list, a dataclass field by field."""
    codec = CODECS.get(type(value))
    if codec is not None:
        return codec.encode(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple):
        return [encode(item) for item in value]
    if dataclasses.is_dataclass(value):
        return {item.name: encode(getattr(value, item.name)) for item in dataclasses.fields(value)}
    return value


def decode(kind: Any, value: Any, key: str) -> Any:
    """The value of type ``kind`` from JSON data ``value`` (``key``: its dotted path, for errors)."""
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, list):
            raise BadInputError(f"recipe key {key!r}: expected a list, got {value!r}")
        return tuple(decode(typing.get_args(kind)[0], item, f"{key}[{index}]") for index, item in enumerate(value))
    if isinstance(kind, types.UnionType):
        options = [option for option in typing.get_args(kind) if option is not types.NoneType]
        if len(options) != 1:
            raise InternalError(f"recipe field {key!r}: only X | None unions are decoded, got {kind}")
        return None if value is None else decode(options[0], value, key)
    if kind in CODECS:
        return CODECS[kind].decode(value, key)
    if isinstance(kind, enum.EnumType):
        try:
            return kind(value)
        except ValueError:
            raise BadInputError(f"recipe key {key!r}: unknown value {value!r}; expected one of {', '.join(repr(m.value) for m in kind)}") from None
    if dataclasses.is_dataclass(kind):
        return _decode_fields(kind, value, key)
    raise InternalError(f"recipe field {key!r} has type {kind}, which has no decoder: add one to CODECS")


def _decode_fields(kind: type, data: Any, key: str) -> Any:
    """The dataclass ``kind`` from a dict of its fields; missing ones keep their defaults."""
    prefix = f"{key}." if key else ""
    if not isinstance(data, dict):
        raise BadInputError(f"recipe key {key!r}: expected an object, got {data!r}")
    hints = typing.get_type_hints(kind)
    names = {item.name for item in dataclasses.fields(kind) if item.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise BadInputError(f"recipe: unknown key(s) {', '.join(prefix + name for name in unknown)}")
    return kind(**{name: decode(hints[name], value, prefix + name) for name, value in data.items()})
