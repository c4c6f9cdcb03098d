"""TorchGraph: run an ONNX graph as a differentiable torch.nn.Module, and write parameters back.

Initializers become parameters (float) or buffers (integer); each node runs the torch function
that ``torch_ops.OPS`` maps it to (standard ops), or its quantizer kind's torch implementation
(``zsq`` quantizers, see :mod:`zsq_onnx.quantizers.registry`), told which of its inputs are
initializers and their element types. After training, :meth:`TorchGraph.write_back` puts
parameter values into the ONNX model by initializer name, so the model that was trained is
exactly the one emitted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx_ir as ir
import torch

from zsq_onnx.errors import BadInputError, UnsupportedOpError
from zsq_onnx.executors.torch_ops import OPS, OpFn
from zsq_onnx.quantizers import registry

FLOAT_TYPES = (ir.DataType.FLOAT, ir.DataType.FLOAT16, ir.DataType.DOUBLE)


@dataclass(frozen=True)
class _Step:
    fn: OpFn
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    label: str


def _attr_value(attr: ir.Attr) -> Any:
    value = attr.value
    if attr.type == ir.AttributeType.TENSOR:
        return torch.from_numpy(np.array(value.numpy()))
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return value


def _op_function(node: ir.Node) -> OpFn:
    """The torch function of ``node``: a standard op's from OPS, or its quantizer kind's torch
    implementation bound to what it knows of the node's inputs."""
    kind = registry.kind_of(node)
    if kind is not None:
        return functools.partial(kind.torch_op, node=registry.NodeInputs.of(node))
    if node.domain in ("", "ai.onnx") and node.op_type in OPS:
        return OPS[node.op_type]
    domain = f"{node.domain}." if node.domain else ""
    raise UnsupportedOpError(f"op {domain}{node.op_type} (node {node.name!r}) is not supported by the torch executor")


def _to_torch(tensor: ir.TensorProtocol) -> torch.Tensor:
    array = np.asarray(tensor.numpy())
    if tensor.dtype in (ir.DataType.INT4, ir.DataType.UINT4):
        array = array.astype(np.int8 if tensor.dtype == ir.DataType.INT4 else np.uint8)
    return torch.from_numpy(np.array(array, copy=True))


def torch_device(name: str) -> torch.device:
    """The torch device of a ``--device`` choice; BadInputError when CUDA is asked for and absent."""
    if name == "cuda" and not torch.cuda.is_available():
        raise BadInputError("--device cuda: torch sees no CUDA device here (this torch build or machine has none)")
    return torch.device(name)


class TorchGraph(torch.nn.Module):
    """An ONNX model as a torch module: ``forward(*inputs)`` returns the graph outputs."""

    def __init__(self, model: ir.Model, trainable: Callable[[str], bool] | bool = False) -> None:
        super().__init__()
        graph = model.graph
        self.input_names = [v.name for v in graph.inputs if v.const_value is None]
        self.output_names = [v.name for v in graph.outputs]
        self.params = torch.nn.ParameterDict()
        self._constants: dict[str, torch.Tensor] = {}
        self._param_keys: dict[str, str] = {}
        is_trainable = trainable if callable(trainable) else (lambda _name: bool(trainable))
        for index, (name, value) in enumerate(graph.initializers.items()):
            tensor = _to_torch(value.const_value)
            if value.const_value.dtype in FLOAT_TYPES:
                key = f"p{index}"
                self.params[key] = torch.nn.Parameter(tensor, requires_grad=is_trainable(name))
                self._param_keys[name] = key
            else:
                self.register_buffer(f"c{index}", tensor, persistent=False)
                self._constants[name] = f"c{index}"
        self._steps = [self._compile(node) for node in graph]
        self._plans: dict[tuple[tuple[str, ...], frozenset[str]], list[tuple[_Step, list[str]]]] = {}

    def _compile(self, node: ir.Node) -> _Step:
        fn = _op_function(node)
        attrs = {name: _attr_value(attr) for name, attr in node.attributes.items()}
        return _Step(fn, tuple(v.name if v is not None else "" for v in node.inputs), tuple(v.name for v in node.outputs), attrs, f"{node.op_type} {node.name!r}")

    def _plan(self, outputs: tuple[str, ...], fed: frozenset[str] = frozenset()) -> list[tuple[_Step, list[str]]]:
        """The steps needed for ``outputs`` when the values ``fed`` are given (their producers
        and what only those need are not run), each with the values that die after it (cached)."""
        key = (outputs, fed)
        if key not in self._plans:
            needed, chosen = set(outputs) - fed, []
            for index in range(len(self._steps) - 1, -1, -1):
                if needed.intersection(self._steps[index].outputs):
                    chosen.append(index)
                    needed.update(name for name in self._steps[index].inputs if name not in fed)
            steps = [self._steps[index] for index in reversed(chosen)]
            keep = set(outputs) | set(self._param_keys) | set(self._constants) | fed
            last = {name: position for position, step in enumerate(steps) for name in step.inputs}
            frees: list[list[str]] = [[] for _ in steps]
            for name, position in last.items():
                if name and name not in keep:
                    frees[position].append(name)
            self._plans[key] = list(zip(steps, frees))
        return self._plans[key]

    def parameter(self, initializer_name: str) -> torch.nn.Parameter:
        """The parameter that holds the float initializer ``initializer_name``."""
        return self.params[self._param_keys[initializer_name]]

    def computes(self, name: str) -> bool:
        """Whether some node of the graph computes the value called ``name``."""
        return any(name in step.outputs for step in self._steps)

    def named_initializer_parameters(self) -> dict[str, torch.nn.Parameter]:
        """Every float initializer's parameter, by initializer name."""
        return {name: self.params[key] for name, key in self._param_keys.items()}

    def constant(self, initializer_name: str) -> torch.Tensor:
        """The buffer that holds the non-float initializer ``initializer_name``."""
        return getattr(self, self._constants[initializer_name])

    def run(self, feeds: dict[str, torch.Tensor], outputs: Sequence[str] | None = None,
            after: Mapping[str, Callable[[torch.Tensor, list], torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
        """Run the graph on named inputs; return the requested values (graph outputs by default).

        ``feeds`` may name any value, not only graph inputs: a fed intermediate value (or
        initializer) replaces what the graph would compute or hold there, and the nodes that only
        served to compute it do not run, so feeding a block's input runs the block alone.
        ``after[name](value, inputs)`` replaces the value ``name`` right after the node that
        computes it, given that node's input tensors (e.g. to mix a quantizer's output with its
        input)."""
        wanted = tuple(outputs) if outputs is not None else tuple(self.output_names)
        env: dict[str, torch.Tensor] = {name: self.params[key] for name, key in self._param_keys.items()}
        env.update({name: getattr(self, key) for name, key in self._constants.items()})
        env.update(feeds)
        after = after or {}
        for step, frees in self._plan(wanted, frozenset(feeds)):
            inputs = [env[name] if name else None for name in step.inputs]
            try:
                result = step.fn(inputs, step.attrs)
            except NotImplementedError as exc:
                raise UnsupportedOpError(f"{step.label}: {exc} is not supported by the torch executor") from None
            for name, value in zip(step.outputs, result if isinstance(result, tuple) else (result,)):
                if name in feeds:
                    continue
                env[name] = after[name](value, inputs) if name in after else value
            for name in frees:
                del env[name]
        return {name: env[name] for name in wanted}

    def forward(self, *inputs: torch.Tensor):
        """Graph outputs for positional graph inputs: one tensor, or a tuple for several outputs."""
        values = self.run(dict(zip(self.input_names, inputs)))
        outputs = tuple(values[name] for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    def write_back(self, model: ir.Model) -> ir.Model:
        """A copy of ``model`` whose float initializers hold this module's parameter values."""
        result = model.clone()
        for name, value in result.graph.initializers.items():
            key = self._param_keys.get(name)
            if key is None:
                continue
            array = self.params[key].detach().cpu().numpy().astype(value.const_value.dtype.numpy())
            value.const_value = ir.tensor(array, name=name)
        return result


class GraphOutputs(torch.nn.Module):
    """The values ``names`` of ``graph`` on its first input, as a module whose ``forward`` returns
    them by name: what a wrapper that drives ``forward`` (DistributedDataParallel) trains."""

    def __init__(self, graph: TorchGraph, names: Sequence[str]) -> None:
        super().__init__()
        self.graph = graph
        self.names = tuple(names)

    def forward(self, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        """The named values for ``inputs``."""
        return self.graph.run({self.graph.input_names[0]: inputs}, self.names)
