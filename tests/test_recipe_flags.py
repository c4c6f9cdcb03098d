"""Options declared on dataclass fields: the walk that collects them and the rebuild by path."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from zsq_onnx.errors import BadInputError, InternalError
from zsq_onnx.options import Granularity
from zsq_onnx.recipe_flags import COMMA_INTEGERS, WHOLE, Flag, check_unique, dashed, declared_options, flag, replace_paths, shared_flags


@dataclass(frozen=True)
class Spec:
    bits: int = 8
    granularity: Granularity = Granularity.PER_TENSOR

    def __post_init__(self) -> None:
        object.__setattr__(self, "granularity", Granularity(self.granularity))


@dataclass(frozen=True)
class Inner:
    steps: int = field(default=3, metadata=flag("--inner-steps", "Steps.", synth="--steps"))
    widths: tuple[int, ...] = field(default=(2, 4), metadata=flag("--widths", spelling=COMMA_INTEGERS))
    minutes: float | None = field(default=None, metadata=flag("--minutes"))
    hidden: int = 7

    def __post_init__(self) -> None:
        if self.steps < 0 and self.minutes is None:
            raise BadInputError("steps must be >= 0 without minutes")


@dataclass(frozen=True)
class Outer:
    spec: Spec = field(default_factory=Spec, metadata=shared_flags(granularity=Flag("--spec-granularity", spelling=dashed(Granularity))))
    inner: Inner = field(default_factory=Inner, metadata=WHOLE)
    switch: bool = field(default=True, metadata=flag("--switch/--no-switch", keyword="switched"))
    mode: Granularity = field(default=Granularity.PER_CHANNEL, metadata=flag("--mode"))


def test_declarations_are_collected_in_field_order_with_their_defaults_and_types():
    options = declared_options(Outer())
    assert [(o.keyword, o.path, o.cli_default, o.kind) for o in options] == [
        ("spec_granularity", ("spec", "granularity"), "per-tensor", str),
        ("inner", ("inner",), None, Inner),
        ("inner_steps", ("inner", "steps"), 3, int),
        ("widths", ("inner", "widths"), "2,4", str),
        ("minutes", ("inner", "minutes"), None, float),
        ("switched", ("switch",), True, bool),
        ("mode", ("mode",), "per_channel", str),
    ]
    assert options[-1].spelling.choices == tuple(member.value for member in Granularity)
    assert [o.flag.option("synth") for o in options if o.flag] == [None, "--steps", None, None, None, None]


def test_values_are_parsed_from_their_spelling_or_taken_as_field_values():
    granularity, _, _, widths, *_ = declared_options(Outer())
    assert granularity.parse("per-channel") == granularity.parse(Granularity.PER_CHANNEL) == "per_channel"
    assert widths.parse("3,8") == widths.parse([3, 8]) == (3, 8)
    with pytest.raises(BadInputError, match=r"--widths takes comma-separated integers such as 2,4, got '3,x'"):
        widths.parse("3,x")


def test_replace_paths_rebuilds_each_config_once_with_all_its_changes():
    outer = Outer()
    changed = replace_paths(outer, {("inner", "steps"): -1, ("inner", "minutes"): 2.0, ("spec", "granularity"): "per_channel"})
    assert changed.inner == Inner(steps=-1, minutes=2.0) and changed.spec.granularity is Granularity.PER_CHANNEL and changed.mode == outer.mode
    whole = replace_paths(outer, {("inner",): Inner(hidden=1), ("inner", "steps"): 5})
    assert whole.inner == Inner(steps=5, hidden=1)
    assert replace_paths(outer, {}) is outer


def test_an_option_declared_twice_is_an_internal_error():
    options = declared_options(Outer())
    check_unique(options)
    with pytest.raises(InternalError, match="inner_steps"):
        check_unique([*options, options[2]])
