"""The quantizer kinds by op type, and the questions the rest of the package asks about a zsq node.

A kind (:class:`QuantizerKind`) is one ``zsq`` op: its onnxscript function, its torch
implementation and the role of each input. Each kind's module registers it with
:func:`register`; importing :mod:`zsq_onnx.quantizers` registers the built-in kinds. Passes,
TorchGraph, fine-tuning and inspection then find a node's kind with :func:`kind_of` and its
inputs by role (:func:`input_for`, :func:`trainable_inputs`, :func:`integer_range`), never by op
type or position.
"""

from __future__ import annotations

import enum
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import onnx_ir as ir

from zsq_onnx.quantizers.common import DOMAIN, INTEGER_RANGES

if TYPE_CHECKING:
    from onnxscript.values import OnnxFunction

logger = logging.getLogger(__name__)


class Role(enum.Enum):
    """What one input of a quantizer is."""

    SOURCE = "source"
    """The tensor quantized: a weight, an activation or a bias."""
    SCALE = "scale"
    """The stored step size (per tensor or per channel); fine-tuning trains it with LSQ."""
    ZERO_POINT = "zero_point"
    """The integer zero point; its type is the container of the levels."""
    QMIN = "qmin"
    """The smallest integer level, when narrower than the container's range."""
    QMAX = "qmax"
    """The largest integer level, when narrower than the container's range."""
    LEVELS = "levels"
    """The level count 2^bits - 1 of a quantizer whose ranges the graph computes."""
    ADAPTER = "adapter"
    """A weight or bias of a small subnetwork that adapts the step per sample."""
    INPUT_SCALE = "input_scale"
    """The step of another quantizer (a layer input's) that this one reads, not owns."""
    WEIGHT_SCALE = "weight_scale"
    """The step of another quantizer (a layer weight's) that this one reads, not owns."""
    LEVEL_TABLE = "level_table"
    """The sorted levels a lookup-table quantizer rounds to, in units of its scale."""


@dataclass(frozen=True)
class InputRole:
    """One input of a quantizer: its name (the ONNX function's parameter), what it is, and
    whether fine-tuning trains it (a source is trained only when weights are)."""

    name: str
    role: Role
    trainable: bool = False


@dataclass(frozen=True)
class NodeInputs:
    """What a torch quantizer op knows of its node's inputs besides their values: which are
    initializers and their ONNX element types (None where unknown or omitted)."""

    constant: tuple[bool, ...]
    types: tuple[int | None, ...]

    @classmethod
    def of(cls, node: ir.Node) -> NodeInputs:
        """The inputs of ``node``, as its graph holds them."""
        constant = tuple(v is not None and v.const_value is not None for v in node.inputs)
        return cls(constant, tuple(_element_type(v) for v in node.inputs))


TorchOp = Callable[[list, dict[str, Any], NodeInputs], Any]
"""A kind's torch implementation: (input tensors, attributes, node inputs) -> output tensor."""


@dataclass(frozen=True)
class QuantizerKind:
    """One zsq quantizer op: ``function`` (onnxscript) is its ONNX body, ``torch_op`` what
    TorchGraph runs instead, ``inputs`` the role of each input in order. ``calibrated_static``:
    scale and zero point are initializers that calibration sets, per tensor or per channel on
    the ``axis`` attribute, so passes may read or replace them. ``constant_output``: the output
    of a node of this kind whose inputs are all constants, in numpy exactly as its ONNX body
    computes it (bias correction reads quantized weights through it); None for kinds that
    quantize activations."""

    op_type: str
    function: OnnxFunction
    torch_op: TorchOp
    inputs: tuple[InputRole, ...]
    calibrated_static: bool = False
    constant_output: Callable[[ir.Node], np.ndarray] | None = None

    def positions(self, role: Role) -> tuple[int, ...]:
        """The input positions that have ``role``."""
        return tuple(index for index, entry in enumerate(self.inputs) if entry.role == role)

    def function_proto(self) -> onnx.FunctionProto:
        """The FunctionProto of this kind (built once; do not mutate)."""
        return _function_proto(self.function)

    def make_node(self, inputs: Mapping[str, ir.Value], *, name: str, outputs: Sequence[ir.Value] | None = None,
                  attributes: Sequence[ir.Attr] = ()) -> ir.Node:
        """A node of this kind whose inputs are given by name (see :attr:`inputs`); one new output
        unless ``outputs`` are given."""
        names = [entry.name for entry in self.inputs]
        unknown, missing = sorted(set(inputs) - set(names)), [n for n in names if n not in inputs]
        if unknown or missing:
            raise ValueError(f"{self.op_type} takes inputs {names}; got unknown {unknown}, missing {missing}")
        values = [inputs[n] for n in names]
        if outputs is None:
            return ir.Node(DOMAIN, self.op_type, values, attributes=attributes, num_outputs=1, name=name)
        return ir.Node(DOMAIN, self.op_type, values, attributes=attributes, outputs=outputs, name=name)


@functools.cache
def _function_proto(function: OnnxFunction) -> onnx.FunctionProto:
    return function.to_function_proto()


def _element_type(value: ir.Value | None) -> int | None:
    if value is None:
        return None
    if value.const_value is not None:
        return int(value.const_value.dtype)
    return int(value.dtype) if value.dtype else None


_KINDS: dict[str, QuantizerKind] = {}


def register(kind: QuantizerKind) -> QuantizerKind:
    """Make ``kind`` known by its op type (returns it, so a module can write
    ``STATIC = register(QuantizerKind(...))``). Its function must be named as the op type and
    take the inputs ``kind.inputs`` names, in that order."""
    proto = kind.function_proto()
    names = tuple(entry.name for entry in kind.inputs)
    if proto.name != kind.op_type or tuple(proto.input) != names:
        raise ValueError(f"quantizer kind {kind.op_type} with inputs {list(names)}: its function is {proto.name}({', '.join(proto.input)})")
    known = _KINDS.get(kind.op_type)
    if known is not None and known != kind:
        raise ValueError(f"quantizer op type {kind.op_type} is registered already (by {known.torch_op.__module__})")
    _KINDS[kind.op_type] = kind
    logger.debug("registered quantizer kind %s", kind.op_type)
    return kind


def unregister(op_type: str) -> None:
    """Forget the kind registered as ``op_type`` (for kinds a test registers)."""
    _KINDS.pop(op_type, None)


def kinds() -> tuple[QuantizerKind, ...]:
    """Every registered kind, in registration order."""
    return tuple(_KINDS.values())


def kind_for(op_type: str) -> QuantizerKind:
    """The kind registered as ``op_type``."""
    if op_type not in _KINDS:
        raise KeyError(f"no zsq quantizer kind {op_type!r}; registered: {', '.join(_KINDS)}")
    return _KINDS[op_type]


def kind_of(node: ir.Node) -> QuantizerKind | None:
    """The kind of ``node``, or None when it is not a registered zsq quantizer."""
    return _KINDS.get(node.op_type) if node.domain == DOMAIN else None


def function_protos() -> dict[str, onnx.FunctionProto]:
    """The FunctionProto of every registered kind, by op type (do not mutate)."""
    return {op_type: kind.function_proto() for op_type, kind in _KINDS.items()}


def is_calibrated_static(node: ir.Node | None) -> bool:
    """Whether ``node`` is a quantizer whose scale and zero point calibration stored."""
    kind = kind_of(node) if node is not None else None
    return kind is not None and kind.calibrated_static


def inputs_for(node: ir.Node, role: Role) -> tuple[ir.Value | None, ...]:
    """The inputs of quantizer ``node`` that have ``role`` (none for a node that is no quantizer)."""
    kind = kind_of(node)
    if kind is None:
        return ()
    return tuple(node.inputs[index] if index < len(node.inputs) else None for index in kind.positions(role))


def input_for(node: ir.Node, role: Role) -> ir.Value | None:
    """The input of quantizer ``node`` that has ``role``, or None when its kind has none; a
    role that several inputs share (adapters) needs :func:`inputs_for`."""
    found = inputs_for(node, role)
    if len(found) > 1:
        raise ValueError(f"{node.op_type} has {len(found)} inputs of role {role.value}: use inputs_for")
    return found[0] if found else None


def trainable_inputs(node: ir.Node) -> tuple[tuple[InputRole, ir.Value], ...]:
    """(role, value) of each present input of quantizer ``node`` that fine-tuning may train."""
    kind = kind_of(node)
    if kind is None:
        return ()
    return tuple((entry, value) for entry, value in zip(kind.inputs, node.inputs) if entry.trainable and value is not None)


def _constant_int(value: ir.Value | None) -> int | None:
    if value is None or value.const_value is None:
        return None
    return int(np.asarray(value.const_value.numpy()).astype(np.int64).item())


def integer_range(node: ir.Node) -> tuple[int, int] | None:
    """(qmin, qmax) of quantizer ``node``: its constant bounds, else its zero point's type range,
    else (0, levels) for a level count; None when it has none of them."""
    low, high = _constant_int(input_for(node, Role.QMIN)), _constant_int(input_for(node, Role.QMAX))
    if low is not None and high is not None:
        return low, high
    zero_point = input_for(node, Role.ZERO_POINT)
    if zero_point is not None and _element_type(zero_point) in INTEGER_RANGES:
        return INTEGER_RANGES[_element_type(zero_point)]
    levels = input_for(node, Role.LEVELS)
    if levels is not None and levels.const_value is not None:
        return 0, int(np.asarray(levels.const_value.numpy()).item())
    return None


def constant_output(node: ir.Node) -> np.ndarray | None:
    """The output of quantizer ``node`` when all its inputs are constants and its kind can say it
    in numpy (see :attr:`QuantizerKind.constant_output`), else None."""
    kind = kind_of(node)
    if kind is None or kind.constant_output is None:
        return None
    if any(value is None or value.const_value is None for value in node.inputs):
        return None
    return kind.constant_output(node)
