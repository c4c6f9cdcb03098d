"""A weighted layer as GPTQ sees it: its weight as rows (output channels) x columns (inputs one
output reads), and the columns of its input (im2col for a Conv) whose products make the Hessian.
Numpy only."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LayerShape:
    """How one Conv/Gemm/MatMul reads its input: ``groups`` independent row blocks, each with
    its own Hessian; Conv geometry (kernel, strides, pads [top, left, bottom, right], dilations)."""

    op_type: str
    groups: int = 1
    kernel: tuple[int, ...] = ()
    strides: tuple[int, ...] = (1, 1)
    pads: tuple[int, ...] = (0, 0, 0, 0)
    dilations: tuple[int, ...] = (1, 1)
    transposed: bool = False

    @classmethod
    def of(cls, node: ir.Node, weight_shape: tuple[int, ...]) -> LayerShape | None:
        """The shape of ``node``, or None when GPTQ does not handle it (a Conv that is not 2-D or
        pads by auto_pad SAME)."""
        attributes = node.attributes
        if node.op_type == "Conv":
            if len(weight_shape) != 4:
                logger.debug("reconstruct skips %s: only 2-D convolutions", node.name)
                return None
            auto_pad = attributes.get_string("auto_pad", "NOTSET")
            if auto_pad not in ("NOTSET", "VALID"):
                logger.debug("reconstruct skips %s: auto_pad %s", node.name, auto_pad)
                return None
            pads = tuple(attributes.get_ints("pads", (0, 0, 0, 0))) if auto_pad == "NOTSET" else (0, 0, 0, 0)
            return cls("Conv", attributes.get_int("group", 1), tuple(weight_shape[2:]), tuple(attributes.get_ints("strides", (1, 1))),
                       pads, tuple(attributes.get_ints("dilations", (1, 1))))
        if node.op_type == "Gemm":
            if attributes.get_int("transA", 0):
                logger.debug("reconstruct skips %s: transA", node.name)
                return None
            return cls("Gemm", transposed=not attributes.get_int("transB", 0))
        if node.op_type == "MatMul" and len(weight_shape) == 2:
            return cls("MatMul", transposed=True)
        return None

    def rows(self, weight: np.ndarray) -> np.ndarray:
        """The weight as [output channels, inputs per output]."""
        if self.op_type == "Conv":
            return weight.reshape(weight.shape[0], -1)
        return weight.T if self.transposed else weight

    def weight(self, rows: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        """Inverse of :meth:`rows`: the weight of ``shape`` again."""
        if self.op_type == "Conv":
            return rows.reshape(shape)
        return rows.T if self.transposed else rows

    def columns(self, value: np.ndarray) -> list[np.ndarray]:
        """Per group, the layer's input ``value`` as [inputs per output, positions]: im2col for a
        Conv (channel, kernel row, kernel column order, as the weight's rows), the rows of a
        Gemm/MatMul input (flattened to its last axis)."""
        if self.op_type != "Conv":
            return [value.reshape(-1, value.shape[-1]).T]
        top, left, bottom, right = self.pads
        padded = np.pad(value, ((0, 0), (0, 0), (top, bottom), (left, right)))
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilations
        windows = np.lib.stride_tricks.sliding_window_view(padded, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
        windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # [N, C, Ho, Wo, kh, kw]
        per_group = value.shape[1] // self.groups
        return [
            windows[:, g * per_group : (g + 1) * per_group].transpose(1, 4, 5, 0, 2, 3).reshape(per_group * kh * kw, -1)
            for g in range(self.groups)
        ]
