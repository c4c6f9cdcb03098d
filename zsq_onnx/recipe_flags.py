"""The recipe's options, declared once on the configs' fields and collected by walking them.

A field becomes an option by its metadata: ``field(default=..., metadata=flag("--weight-range",
"help"))``. A field whose type serves several roles (a :class:`~zsq_onnx.quantizers.spec.QuantSpec`
for weights and for activations) declares the options of its type's fields on itself instead:
``metadata=shared_flags(bits=Flag("--wbits", ...), ...)``; a nested config that
:func:`zsq_onnx.recipe.build_recipe` also takes whole is marked ``metadata=WHOLE``.
:func:`declared_options` walks a recipe and returns one :class:`RecipeOption` per declaration,
with its default, value type and choices read from the field: the CLI makes its click options
from them and ``build_recipe`` its keywords. No click here, and nothing from zsq_onnx but errors.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from zsq_onnx.errors import BadInputError, InternalError

logger = logging.getLogger(__name__)

COMMANDS = ("convert", "synth")
_FLAG = "zsq.flag"
_SHARED = "zsq.shared_flags"
_WHOLE = "zsq.whole"
WHOLE = types.MappingProxyType({_WHOLE: True})
"""Field metadata of a nested config that ``build_recipe`` also takes whole, by the field's name
(its flags then change that config)."""


@dataclass(frozen=True)
class Spelling:
    """How a field's values are written as option text, for fields whose values are not their own
    text: ``text(value)`` for the default shown, ``parse(value)`` for a keyword's value (option
    text or already a field value; a ValueError is reported as "OPTION takes ``form``"),
    ``choices`` the texts the option accepts (None: any)."""

    text: Callable[[Any], str]
    parse: Callable[[Any], Any]
    choices: tuple[str, ...] | None = None
    form: str = ""


def choice_of(members: Iterable[enum.StrEnum]) -> Spelling:
    """Enum members by their values; the field's own check turns text into its member."""
    return Spelling(text=lambda value: value.value, parse=lambda value: value, choices=tuple(member.value for member in members))


def dashed(members: Iterable[enum.StrEnum]) -> Spelling:
    """Enum members with ``-`` for ``_`` (per-channel for per_channel); either is accepted."""
    return Spelling(text=lambda value: value.value.replace("_", "-"), parse=lambda value: str(value).replace("-", "_"),
                    choices=tuple(member.value.replace("_", "-") for member in members))


COMMA_INTEGERS = Spelling(text=lambda values: ",".join(map(str, values)), form="comma-separated integers",
                          parse=lambda value: tuple(int(text) for text in value.split(",")) if isinstance(value, str) else tuple(value))
"""A tuple of integers as ``2,3,4``."""


@dataclass(frozen=True)
class Flag:
    """One recipe option as declared on its field.

    ``name`` is the option of ``zsq-onnx convert`` (``--x/--no-x`` for an on/off switch of a bool
    field, ``--x`` alone for a flag that turns it on); ``build_recipe``'s keyword is the name as
    click names it (``synth_steps`` for ``--synth-steps``) unless ``keyword`` says otherwise.
    ``synth`` is the option's name in ``zsq-onnx synth`` where that command has it, ``convert``
    False where only ``synth`` does. ``unset``: the option has no default (None), and a rule of
    ``build_recipe`` decides when it is not given. ``spelling`` for values that are not their own
    text (enum fields get :func:`choice_of` their enum)."""

    name: str
    help: str | None = None
    synth: str | None = None
    convert: bool = True
    keyword: str | None = None
    unset: bool = False
    spelling: Spelling | None = None

    def option(self, command: str) -> str | None:
        """The option's name in ``command`` (convert or synth); None where it has none there."""
        return {"convert": self.name if self.convert else None, "synth": self.synth}[command]


def flag(name: str, help: str | None = None, **settings: Any) -> dict[str, Flag]:
    """Field metadata declaring the field's option (see :class:`Flag`)."""
    return {_FLAG: Flag(name, help, **settings)}


def shared_flags(**flags: Flag) -> dict[str, Mapping[str, Flag]]:
    """Field metadata declaring options for fields of the field's own dataclass type, by their
    names, for a type that serves in several fields (weights and activations)."""
    return {_SHARED: flags}


@dataclass(frozen=True)
class RecipeOption:
    """One keyword of ``build_recipe`` and, with a ``flag``, one command-line option.

    ``path`` is the field it sets (None: a rule of ``build_recipe`` applies it), ``default`` the
    field's value on the default recipe, ``kind`` its value type on the command line (bool, int,
    float or str); without a ``flag`` it is a nested config given whole."""

    keyword: str
    path: tuple[str, ...] | None
    default: Any
    kind: type
    flag: Flag | None = None
    spelling: Spelling | None = None

    @property
    def cli_default(self) -> Any:
        """The default as the command line writes it; None when the option has none."""
        if self.default is None or self.flag is None or self.flag.unset:
            return None
        return self.spelling.text(self.default) if self.spelling is not None else self.default

    def parse(self, value: Any) -> Any:
        """``value`` (option text, or a field value from Python) as the field's value."""
        if self.spelling is None:
            return value
        try:
            return self.spelling.parse(value)
        except ValueError:
            raise BadInputError(f"{self.flag.name} takes {self.spelling.form} such as {self.cli_default}, got {value!r}") from None


def rule_option(declared: Flag, kind: type) -> RecipeOption:
    """An option that sets no one field: a rule of ``build_recipe`` applies it."""
    return RecipeOption(_keyword(declared), None, None, kind, declared)


def declared_options(config: Any, path: tuple[str, ...] = (), shared: Mapping[str, Flag] | None = None) -> list[RecipeOption]:
    """The options declared on ``config``'s fields and its nested configs', in field order, with
    defaults from ``config`` (the default recipe); ``shared``: declarations for its fields made
    by the field that holds it."""
    hints = typing.get_type_hints(type(config))
    options = []
    for item in dataclasses.fields(config):
        value, where = getattr(config, item.name), (*path, item.name)
        declared = (shared or {}).get(item.name) or item.metadata.get(_FLAG)
        if declared is not None:
            options.append(_option(declared, where, value, hints[item.name]))
        if item.metadata.get(_WHOLE):
            options.append(RecipeOption(item.name, where, value, type(value)))
        if dataclasses.is_dataclass(value):
            options += declared_options(value, where, item.metadata.get(_SHARED))
    return options


def check_unique(options: list[RecipeOption]) -> None:
    """InternalError when two declarations claim one keyword or one option name of a command."""
    for names in ([option.keyword for option in options],
                  *([option.flag.option(command) for option in options if option.flag and option.flag.option(command)] for command in COMMANDS)):
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise InternalError(f"recipe options declared twice: {', '.join(repeated)}")


def replace_paths(config: Any, changes: dict[tuple[str, ...], Any]) -> Any:
    """``config`` with ``changes``: values by field path below it, ``()`` for ``config`` given
    whole (the changes of its fields then apply to that). Each nested config is rebuilt once, in
    field order, so that its checks see all of its new values together."""
    config = changes.get((), config)
    updates = {}
    for item in dataclasses.fields(config) if dataclasses.is_dataclass(config) else ():
        below = {path[1:]: value for path, value in changes.items() if path[:1] == (item.name,)}
        if below:
            updates[item.name] = replace_paths(getattr(config, item.name), below)
    return dataclasses.replace(config, **updates) if updates else config


def _option(declared: Flag, path: tuple[str, ...], default: Any, hint: Any) -> RecipeOption:
    kind = _value_type(hint)
    spelling = declared.spelling or (choice_of(kind) if isinstance(kind, enum.EnumType) else None)
    return RecipeOption(_keyword(declared), path, default, str if spelling is not None else kind, declared, spelling)


def _keyword(declared: Flag) -> str:
    """``weight_symmetric`` for ``--weight-symmetric/--weight-asymmetric``, as click names it."""
    return declared.keyword or declared.name.split("/")[0].lstrip("-").replace("-", "_")


def _value_type(hint: Any) -> Any:
    """The field type without its ``| None``."""
    if isinstance(hint, types.UnionType):
        (hint,) = [option for option in typing.get_args(hint) if option is not types.NoneType]
    return hint
