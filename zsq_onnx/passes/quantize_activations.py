"""Insert zsq static quantizers on the activation uses that the rule table selects."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import onnx_ir as ir

from zsq_onnx.errors import InternalError
from zsq_onnx.passes.quantizer_nodes import add_granular_quantizer, add_static_quantizer, ensure_quantizer_functions
from zsq_onnx.plan.targets import activation_uses
from zsq_onnx.quantizers.params import range_params
from zsq_onnx.quantizers.spec import QuantSpec

logger = logging.getLogger(__name__)

Range = tuple[np.ndarray, np.ndarray]


class QuantizeActivationsPass(ir.passes.InPlacePass):
    """One quantizer per selected tensor (shared by all its selected uses): static ones with scale
    and zero point from calibrated ``ranges`` (per-tensor scalars, or per-channel vectors on
    axis 1), granular ones (GranQ) with ranges computed in the graph.

    With ``all_readers`` every other node reading a quantized tensor reads the quantized value
    too, as integer deployments do: a residual block's output that feeds both the next conv and
    a Slice/Pad shortcut then has one quantized form, and ORT can fuse the Add that produced it.

    ``use_4bit_types`` stores 4-bit levels as int4/uint4, except after a Clip (ReLU6): ORT CPU
    (1.32) fails to load a Clip followed by a 4-bit QuantizeLinear at its EXTENDED level and
    above (its Clip-into-QuantizeLinear fusion reads only 8-bit zero points), so those use an
    8-bit container with the same levels."""

    def __init__(
        self, specs: Mapping[str, QuantSpec], ranges: Mapping[str, Range], rules: Sequence[str], use_4bit_types: bool = True, all_readers: bool = False
    ) -> None:
        super().__init__()
        self.specs = specs
        self.ranges = ranges
        self.rules = tuple(rules)
        self.use_4bit_types = use_4bit_types
        self.all_readers = all_readers

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        done: dict[str, ir.Value] = {}
        for node, index in activation_uses(graph, self.rules):
            name = node.inputs[index].name
            if name not in self.specs:
                logger.debug("quantize activations skips %s: the plan keeps its input %s float", node.name, name)
                continue
            if name not in done:
                done[name] = self._insert(model, node, node.inputs[index])
            node.replace_input_with(index, done[name])
        if self.all_readers:
            for quantized in done.values():
                source = quantized.producer().inputs[0]
                for reader, index in list(source.uses()):
                    if reader is not quantized.producer():
                        reader.replace_input_with(index, quantized)
        logger.debug("quantize activations: %d quantizers inserted", len(done))
        return ir.passes.PassResult(model, modified=bool(done))

    def _insert(self, model: ir.Model, first_use: ir.Node, source: ir.Value) -> ir.Value:
        """A quantizer for ``source`` placed right after its producer (first, for graph inputs)."""
        ensure_quantizer_functions(model)
        spec = self.specs[source.name]
        if spec.granularity == "granular":
            quantizer = add_granular_quantizer(model.graph, source, spec)
        elif source.name not in self.ranges:
            raise InternalError(f"no calibrated range for planned static activation {source.name!r} read by node {first_use.name!r}")
        else:
            low, high = (np.asarray(v, np.float32) for v in self.ranges[source.name])
            scale, zero_point = range_params(low, high, spec)
            quantizer = add_static_quantizer(model.graph, source, scale, zero_point, spec, 1, self.use_4bit_types and not _clipped(source))
        producer = source.producer()
        if producer is not None:
            model.graph.insert_after(producer, quantizer)
        else:
            model.graph.insert_before(model.graph.node(0), quantizer)
        return quantizer.outputs[0]


def _clipped(value: ir.Value) -> bool:
    producer = value.producer()
    return producer is not None and producer.op_type == "Clip"
