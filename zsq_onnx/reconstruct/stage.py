"""The reconstruction stage: after the weight quantizers are inserted (their grids fixed by the
weights' own ranges), round each weight by its layer's output error on the calibration batches
instead of to the nearest level (GPTQ: :mod:`~zsq_onnx.reconstruct.gptq`; AdaRound:
:mod:`~zsq_onnx.reconstruct.adaround`; both read the layer only through its input Hessian
H = 2 X X^T / n, so its inputs are summed batch by batch and never kept). Layers go in graph order; each one's input is measured in ORT
(float QDQ, the same on every CPU) in the quantized graph whose earlier layers are already
reconstructed, as GPTQ does.

The rounded weights are written back as the float source of the weight's quantizer: they lie on
its grid, so the quantizer reproduces them exactly and emission turns them into the same
integers, or for a lookup-table quantizer (POST, powers of two) the same codes into its table
(each weight is table[code] * alpha, which the quantizer's midpoint comparisons map back to
that code; checked per layer). Per row (output channel) the result is kept only where it does not raise the
calibration objective over nearest rounding, so the stage never makes a layer worse on it."""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

from zsq_onnx import distributed
from zsq_onnx.errors import InternalError
from zsq_onnx.plan.calibrate import stream
from zsq_onnx.plan.targets import weight_axis
from zsq_onnx.quantizers.lut import LUT
from zsq_onnx.quantizers.registry import Role, input_for, integer_range, is_calibrated_static, kind_of
from zsq_onnx.recipe import ReconstructConfig
from zsq_onnx.reconstruct.gptq import Grid, gptq_levels, output_error
from zsq_onnx.reconstruct.layers import LayerShape

logger = logging.getLogger(__name__)

METADATA_KEY = "zsq.reconstruct"


@dataclass(frozen=True)
class LayerResult:
    """One reconstructed layer: calibration objective (sum over rows of (w - w_q) H (w - w_q)^T,
    H averaged over positions) with nearest rounding and after, and the seconds it took."""

    node: str
    nearest_error: float
    error: float
    rows_changed: int
    seconds: float

    def to_dict(self) -> dict:
        return {"node": self.node, "nearest_error": self.nearest_error, "error": self.error, "rows_changed": self.rows_changed, "seconds": self.seconds}


def weight_quantizer(node: ir.Node, lookup_tables: bool = False) -> ir.Node | None:
    """The weight quantizer of constants that feeds ``node``'s weight, or None: a calibrated static
    (uniform) one, or with ``lookup_tables`` a lookup-table one (POST, powers of two) too."""
    if weight_axis(node) is None or len(node.inputs) < 2 or node.inputs[1] is None:
        return None
    producer = node.inputs[1].producer()
    if is_calibrated_static(producer):
        roles = (Role.SOURCE, Role.SCALE, Role.ZERO_POINT)
    elif lookup_tables and producer is not None and kind_of(producer) is LUT:
        roles = (Role.SOURCE, Role.SCALE, Role.LEVEL_TABLE)
    else:
        return None
    if any(value is None or value.const_value is None for value in (input_for(producer, role) for role in roles)):
        return None
    return producer


def grid_of(quantizer: ir.Node, shape: LayerShape | None = None) -> Grid:
    """The grid of a weight quantizer, read from its initializers, per row of ``shape`` (see
    :meth:`LayerShape.rows`; needed for a lookup table's per-channel alpha, which has the
    weight's rank). A symmetric uniform one (zero points 0, signed range) keeps to [-qmax,
    qmax], the levels nearest rounding of its own weight reaches: reconstruction changes which
    levels weights take, never the integer range a target sees (e.g. -128 stays out of int8
    weights). A lookup table's codes index its table, every one of them."""
    if kind_of(quantizer) is LUT:
        weight = input_for(quantizer, Role.SOURCE).const_value.numpy()
        alpha = np.asarray(input_for(quantizer, Role.SCALE).const_value.numpy(), np.float32)
        if alpha.size > 1:
            if shape is None:
                raise InternalError(f"reconstruct: the per-channel alpha of {quantizer.name} needs the layer's shape")
            alpha = np.ascontiguousarray(shape.rows(np.broadcast_to(alpha, weight.shape))[:, 0])
        return Grid.lookup(alpha.reshape(-1) if alpha.size > 1 else alpha.reshape(()), input_for(quantizer, Role.LEVEL_TABLE).const_value.numpy())
    qmin, qmax = integer_range(quantizer)
    scale = np.asarray(input_for(quantizer, Role.SCALE).const_value.numpy(), np.float32)
    zero_point = np.asarray(input_for(quantizer, Role.ZERO_POINT).const_value.numpy()).astype(np.int64)
    if qmin == -qmax - 1 and not zero_point.any():
        qmin = -qmax
    return Grid(scale, zero_point, qmin, qmax)


def layer_hessians(model: ir.Model, node: ir.Node, shape: LayerShape, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per group, H = 2/n sum x x^T over the n input columns of ``node`` on ``batches``, its input
    as ``model`` computes it in ORT; summed over ranks."""
    name = node.inputs[0].name
    sums: list[np.ndarray] | None = None
    count = 0
    for values in stream(model, [name], batches):
        columns = shape.columns(values[name].astype(np.float64))
        products = [group @ group.T for group in columns]
        sums = products if sums is None else [total + product for total, product in zip(sums, products)]
        count += columns[0].shape[1]
    parts = [part for part in distributed.gather((sums, count)) if part[0] is not None]
    if not parts:
        raise InternalError(f"reconstruct: no calibration inputs reached {node.name}")
    total = sum(part[1] for part in parts)
    return [2.0 * sum(part[0][g] for part in parts) / total for g in range(len(parts[0][0]))]


def reconstruct_layer(weight_rows: np.ndarray, hessians: list[np.ndarray], grid: Grid, config: ReconstructConfig) -> tuple[np.ndarray, float, float, int]:
    """The rows of one layer rounded by ``config``'s method (groups of rows share a Hessian), each
    row kept only where it is no worse than nearest; with the objective before and after and the
    number of rows that changed."""
    per_group = len(weight_rows) // len(hessians)
    rounded = grid.nearest(weight_rows)
    nearest_total = total = 0.0
    changed = 0
    for g, hessian in enumerate(hessians):
        rows = slice(g * per_group, (g + 1) * per_group)
        sub_grid = grid.select(rows)
        nearest = rounded[rows]
        candidate = sub_grid.values(_levels(weight_rows[rows], hessian, sub_grid, config))
        before = output_error(weight_rows[rows], nearest, hessian)
        after = output_error(weight_rows[rows], candidate, hessian)
        better = after < before
        rounded[rows] = np.where(better[:, None], candidate, nearest)
        nearest_total += float(before.sum())
        total += float(np.where(better, after, before).sum())
        changed += int(better.sum())
    return rounded, nearest_total, total, changed


def _levels(weight_rows: np.ndarray, hessian: np.ndarray, grid: Grid, config: ReconstructConfig) -> np.ndarray:
    """Integer levels of ``weight_rows`` by ``config``'s method."""
    if config.weight_rounding == "adaround":
        from zsq_onnx.reconstruct.adaround import adaround_levels

        return adaround_levels(weight_rows, hessian, grid, config.iterations)[0]
    return gptq_levels(weight_rows, hessian, grid, config.damping, config.block_size)


class ReconstructWeightsPass(ir.passes.InPlacePass):
    """Round the weights of ``nodes`` (whose static weight quantizers are already inserted) by
    ``config.weight_rounding`` on ``batches``; ``results`` holds a :class:`LayerResult` per layer.
    Uniform quantizers take integer levels of their grid, lookup-table ones (POST, powers of two)
    codes into their table. Weights shared by several nodes and ops GPTQ does not handle keep
    nearest rounding (logged at debug level)."""

    def __init__(self, nodes: Collection[str], batches: Sequence[np.ndarray], config: ReconstructConfig, progress: bool | None = None) -> None:
        super().__init__()
        self.nodes = nodes
        self.batches = batches
        self.config = config
        self.progress = progress
        self.results: list[LayerResult] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.results = []
        if self.config.weight_rounding == "nearest":
            return ir.passes.PassResult(model, modified=False)
        layers = [node for node in model.graph if node.name in self.nodes]
        for node in progress(layers, showing_progress(self.progress)):
            quantizer = weight_quantizer(node, lookup_tables=True)
            if quantizer is None:
                producer = node.inputs[1].producer() if len(node.inputs) > 1 and node.inputs[1] is not None else None
                level = logging.INFO if producer is not None and producer.domain == "zsq" else logging.DEBUG
                logger.log(level, "reconstruct keeps nearest rounding for %s: its weight has no static or lookup-table quantizer of constants", node.name)
                continue
            source = input_for(quantizer, Role.SOURCE)
            if len([use for use in source.uses()]) > 1:
                logger.debug("reconstruct skips %s: its weight %s is read elsewhere too", node.name, source.name)
                continue
            weight = source.const_value.numpy()
            shape = LayerShape.of(node, weight.shape)
            if shape is None:
                continue
            start = time.perf_counter()
            hessians = layer_hessians(model, node, shape, self.batches)
            grid = grid_of(quantizer, shape)
            rows, nearest, error, changed = reconstruct_layer(shape.rows(weight).astype(np.float64), hessians, grid, self.config)
            rounded = np.ascontiguousarray(shape.weight(rows, weight.shape), np.float32)
            source.const_value = ir.tensor(rounded, name=source.name)
            if not np.array_equal(_requantized(quantizer), rounded):
                raise InternalError(f"reconstruct: the weight of {node.name} left its quantizer's grid")
            result = LayerResult(node.name, nearest, error, changed, time.perf_counter() - start)
            self.results.append(result)
            logger.info("reconstruct %s: objective %.4g -> %.4g (%d rows changed), %.2f s", node.name, nearest, error, changed, result.seconds)
        model.metadata_props[METADATA_KEY] = json.dumps(self.record())
        return ir.passes.PassResult(model, modified=bool(self.results))


    def record(self) -> dict:
        """What the report reads (see :func:`zsq_onnx.validate.report.reconstruction_section`):
        the method, ``mode`` "layer", and per layer its :meth:`LayerResult.to_dict`."""
        method = str(self.config.weight_rounding)
        return {"method": method, "mode": "layer", "weight_rounding": method, "layers": [r.to_dict() for r in self.results]}


def _requantized(quantizer: ir.Node) -> np.ndarray:
    from zsq_onnx.quantizers.registry import constant_output

    output = constant_output(quantizer)
    if output is None:
        raise InternalError(f"reconstruct: {quantizer.name} cannot say its output in numpy")
    return output


_SHOW_PROGRESS: contextvars.ContextVar[bool] = contextvars.ContextVar("zsq_reconstruct_progress", default=False)


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """While active, reconstruction passes made without an explicit ``progress`` show a bar per
    layer or block when ``enabled`` (the pipeline's progress setting, see
    :func:`zsq_onnx.pipeline.convert`), so the stages between it and the pass need not carry it."""
    token = _SHOW_PROGRESS.set(enabled)
    try:
        yield
    finally:
        _SHOW_PROGRESS.reset(token)


def showing_progress(progress: bool | None = None) -> bool:
    """``progress`` when given, else what the enclosing :func:`progress_bars` says (off outside one)."""
    return _SHOW_PROGRESS.get() if progress is None else progress


def progress(items: list, enabled: bool, unit: str = "layer"):
    """``items``, behind a "reconstruct" bar counting ``unit``s when ``enabled``."""
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="reconstruct", unit=unit, leave=False)


def after_weight_quantizers(passes: Sequence[ir.passes.PassBase], reconstruction: ir.passes.PassBase) -> list[ir.passes.PassBase]:
    """``passes`` (see :func:`zsq_onnx.plan.insertion.quantizer_passes`) with ``reconstruction``
    right after the pass that inserts the weight quantizers, before bias correction."""
    from zsq_onnx.passes.quantize_weights import QuantizeWeightsPass

    passes = list(passes)
    index = next((i for i, step in enumerate(passes) if isinstance(step, QuantizeWeightsPass)), None)
    if index is None:
        raise InternalError("reconstruct: the quantizer passes insert no weight quantizers")
    return [*passes[: index + 1], reconstruction, *passes[index + 1 :]]
