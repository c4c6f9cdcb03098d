"""Fold a zero-valued constant Pad into the Conv that reads it (TensorFlow "SAME" padding)."""

from __future__ import annotations

import logging

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)


def _spatial_pads(pad: ir.Node) -> list[int] | None:
    """The Pad's spatial (begins..., ends...) when it pads only axes 2+ with zeros, else None."""
    if pad.attributes.get_string("mode", "constant") != "constant":
        return None
    pads = pad.inputs[1] if len(pad.inputs) > 1 else None
    if pads is None or pads.const_value is None:
        return None
    value = pad.inputs[2] if len(pad.inputs) > 2 else None
    if value is not None and (value.const_value is None or np.any(value.const_value.numpy() != 0)):
        return None
    if len(pad.inputs) > 3 and pad.inputs[3] is not None:
        return None
    amounts = [int(v) for v in pads.const_value.numpy().ravel()]
    rank = len(amounts) // 2
    if rank < 3 or any(v < 0 for v in amounts) or any(amounts[i] or amounts[rank + i] for i in range(2)):
        return None
    return amounts[2:rank] + amounts[rank + 2 :]


class FoldPadIntoConvPass(ir.passes.InPlacePass):
    """Replace Pad(x) -> Conv by Conv(x) with the pads added to its own: a Conv's ``pads`` may be
    asymmetric, so TensorFlow "SAME" padding (one more row/column at the end) needs no Pad node.
    Without the Pad the Conv reads its producer's activation directly, which lets the
    activation be quantized once where it is produced and ORT fuse both convs into integer
    kernels. Only zero constant pads of spatial axes, read by Convs alone, are folded."""

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        modified = False
        for pad in list(graph):
            if pad.op_type != "Pad" or pad.domain not in ("", "ai.onnx"):
                continue
            output = pad.outputs[0]
            readers = [node for node, _ in output.uses()]
            if not readers or any(node.op_type != "Conv" for node in readers) or output in graph.outputs:
                logger.debug("fold pad skips %s: its output is a graph output or read by other nodes than Convs", pad.name)
                continue
            extra = _spatial_pads(pad)
            if extra is None:
                logger.debug("fold pad skips %s: not a zero constant pad of spatial axes", pad.name)
                continue
            if any(not self._foldable(node) for node in readers):
                logger.debug("fold pad skips %s: a Conv reading it sets auto_pad", pad.name)
                continue
            for node in readers:
                own = node.attributes.get("pads")
                own = own.as_ints() if own is not None else [0] * len(extra)
                node.attributes["pads"] = ir.AttrInt64s("pads", [a + b for a, b in zip(own, extra)])
                node.replace_input_with(0, pad.inputs[0])
            graph.remove(pad, safe=True)
            modified = True
        return ir.passes.PassResult(model, modified=modified)

    @staticmethod
    def _foldable(conv: ir.Node) -> bool:
        return conv.attributes.get_string("auto_pad", "NOTSET") == "NOTSET"
