"""Block-wise reconstruction (BRECQ, Li et al. 2021, with QDrop, Wei et al. 2022): each block of
the quantized graph (:mod:`zsq_onnx.reconstruct.blocks`: a residual block, an MBConv, a plain
layer with its activation) is fitted as a unit to the float model's output of that block.

Per block, in graph order:
- its input is measured in ORT (float QDQ) in the quantized graph whose earlier blocks are
  already reconstructed, and the float model's input and output of the block on the same
  calibration batches (streamed: only this block's tensors are held, for the calibration set);
- each weight with a uniform static quantizer goes to the level below or above it, chosen by a
  learned rectified sigmoid h(V) as AdaRound (:mod:`zsq_onnx.reconstruct.adaround`), the soft
  weights fed to the block in place of the quantizers' outputs; the steps of the block's static
  activation quantizers learn jointly (LSQ gradients), Adam for ``block_iterations`` steps on
  random batches of the calibration samples. The loss is the block output's mean squared error
  against the float one, relative to its value with nearest rounding, plus lambda times the mean
  of 1 - |2h - 1|^beta per layer, beta annealed from 20 to 2 after a warm-up without it;
- QDrop: during fitting each element of the block's input is the float model's with
  probability 0.5 (else the quantized graph's), and each activation quantizer inside the block
  passes its input unquantized with probability 0.5;
- at the end every weight takes its floor or ceiling level (V >= 0 rounds up), written back as
  the float source of its quantizer (on its grid, so the quantizer reproduces it), and the
  learned steps into their initializers; a block keeps the result only when its output error
  on the whole calibration set (no dropping) did not rise over nearest rounding.

With ``--nproc`` every rank streams its part of the batches and the parts are gathered; rank 0
fits the block and hands the result to every rank, so the result equals one process's."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from zsq_onnx import distributed
from zsq_onnx.errors import InternalError
from zsq_onnx.plan.calibrate import stream
from zsq_onnx.quantizers.registry import Role, input_for
from zsq_onnx.recipe import ReconstructConfig
from zsq_onnx.reconstruct.adaround import BETA, GAMMA, WARMUP, ZETA
from zsq_onnx.reconstruct.blocks import Block, float_name, partition
from zsq_onnx.reconstruct.stage import METADATA_KEY, _requantized, grid_of, progress, showing_progress, weight_quantizer

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DROP = 0.5  # QDrop: probability that an element keeps its float value
BATCH = 32  # calibration samples per Adam step
ROUNDING_LR = 1e-2  # Adam on V
SCALE_LR = 1e-3  # Adam on activation steps, relative to each step's initial value (cosine decay)
REGULARIZATION = 0.1  # lambda, against the normalised reconstruction loss
EVAL_CHUNK = 64


@dataclass(frozen=True)
class BlockResult:
    """One reconstructed block: output mean squared error on the calibration set with nearest
    rounding and calibrated steps (``nearest_error``) and as kept (``error``), rows (output
    channels) whose rounding changed, seconds, and whether the fit was kept."""

    node: str
    nearest_error: float
    error: float
    rows_changed: int
    seconds: float
    kept: bool
    layers: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    input: str = ""
    output: str = ""

    def to_dict(self) -> dict:
        """The layer-mode record's keys (``node`` naming the block) and the block's own."""
        return {"node": self.node, "nearest_error": self.nearest_error, "error": self.error, "rows_changed": self.rows_changed,
                "seconds": self.seconds, "kept": self.kept, "layers": list(self.layers), "steps": list(self.steps),
                "input": self.input, "output": self.output}


@dataclass
class _Rounding:
    """One weight rounded by the block: its quantizer, grid (broadcast on the quantizer's axis)
    and the floor levels of the float weight."""

    node: str
    quantizer: ir.Node
    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    floor: np.ndarray  # integer level at or below each weight (zero point added)
    fraction: np.ndarray

    def values(self, levels: np.ndarray) -> np.ndarray:
        """The float32 weights of integer ``levels``, as DequantizeLinear computes them."""
        return ((levels - self.zero_point) * self.scale.astype(np.float64)).astype(np.float32)


@dataclass
class _Fit:
    """What fitting one block produced (rank 0's, handed to every rank)."""

    weights: dict[str, np.ndarray] = field(default_factory=dict)  # quantizer name -> hard-rounded float weight
    scales: dict[str, np.ndarray] = field(default_factory=dict)  # initializer name -> learned step
    before: float = 0.0
    after: float = 0.0
    rows_changed: int = 0
    kept: bool = False


def _broadcast(param: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    param = np.asarray(param)
    if param.size == 1:
        return param.reshape(())
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return param.reshape(shape)


def _rounding(node: ir.Node, quantizer: ir.Node) -> _Rounding:
    grid = grid_of(quantizer)
    weight = input_for(quantizer, Role.SOURCE).const_value.numpy().astype(np.float64)
    axis = quantizer.attributes.get_int("axis", 1)
    scale = _broadcast(np.asarray(grid.scale, np.float32), weight.ndim, axis)
    zero_point = _broadcast(np.asarray(grid.zero_point, np.int64), weight.ndim, axis)
    scaled = weight / scale.astype(np.float64)
    floor = np.floor(scaled)
    return _Rounding(node.name, quantizer, scale, zero_point, grid.qmin, grid.qmax, floor.astype(np.int64) + zero_point, scaled - floor)


def _roundings(model: ir.Model, block: Block, nodes: Collection[str]) -> list[_Rounding]:
    """The weights of ``block`` that block mode rounds: those of ``nodes`` with a uniform static
    quantizer of constants, read by that quantizer alone."""
    found = []
    by_name = {node.name: node for node in model.graph}
    for name in block.layers:
        node = by_name[name]
        quantizer = weight_quantizer(node) if name in nodes else None
        if quantizer is None:
            logger.debug("block reconstruction keeps the weight of %s as it is: no uniform static quantizer of constants", name)
            continue
        source = input_for(quantizer, Role.SOURCE)
        if len(list(source.uses())) > 1 or len(list(quantizer.outputs[0].uses())) > 1:
            logger.debug("block reconstruction skips the weight of %s: it is shared", name)
            continue
        found.append(_rounding(node, quantizer))
    return found


def _steps(model: ir.Model, block: Block) -> list[str]:
    """The step (scale) initializers of ``block``'s static activation quantizers that block mode
    learns: float initializers read by quantizers of this block alone."""
    members = set(block.nodes)
    by_name = {node.name: node for node in model.graph}
    names = []
    for name in block.static_quantizers:
        scale = input_for(by_name[name], Role.SCALE)
        if scale is None or scale.const_value is None or scale.name not in model.graph.initializers or scale.const_value.dtype != ir.DataType.FLOAT:
            continue
        if any(user.name not in members for user, _ in scale.uses()):
            logger.debug("block reconstruction keeps the step %s: quantizers outside the block read it", scale.name)
            continue
        names.append(scale.name)
    return list(dict.fromkeys(names))


def _collect(model: ir.Model, names: Sequence[str], batches: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The tensors ``names`` of ``model`` (ORT, float QDQ) on all ``batches``, every sample, in
    batch order on every rank (each rank streams its part; the parts are gathered)."""
    mine = [index for index, batch in enumerate(batches) if len(batch[distributed.part(len(batch))])]
    local = dict(zip(mine, stream(model, list(names), batches)))
    parts = distributed.gather(local)
    return {name: np.concatenate([part[index][name] for index in range(len(batches)) for part in parts if index in part]) for name in names}


def soft_rounding(v):
    """h(V) in torch: the rectified sigmoid clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)."""
    import torch

    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


@dataclass
class _SoftWeights:
    """The block's rounded weights as fitting feeds them to torch: per weight its rounding, the V
    of h(V) (a parameter, started at the weight's fraction above its floor level) and its grid
    as tensors."""

    roundings: list[_Rounding]
    vs: list[torch.nn.Parameter]
    floors: list[torch.Tensor]
    scales: list[torch.Tensor]
    zero_points: list[torch.Tensor]

    @classmethod
    def start(cls, roundings: list[_Rounding]) -> _SoftWeights:
        """V for each of ``roundings`` such that h(V) is its fraction (the float weight)."""
        import torch

        start = [np.clip((r.fraction - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4) for r in roundings]
        return cls(
            roundings,
            [torch.nn.Parameter(torch.from_numpy(np.log(s / (1 - s)).astype(np.float32))) for s in start],
            [torch.from_numpy(r.floor.astype(np.float32)) for r in roundings],
            [torch.from_numpy(r.scale.astype(np.float32)) for r in roundings],
            [torch.from_numpy(r.zero_point.astype(np.float32)) for r in roundings],
        )

    def fed(self, hard: bool | None) -> dict[str, torch.Tensor]:
        """The block's weights by quantizer output: soft (h(V)), hard (V >= 0) or nearest (None:
        the quantizers' own, so none are fed)."""
        import torch

        if hard is None:
            return {}
        fed = {}
        for v, floor, scale, zero_point, r in zip(self.vs, self.floors, self.scales, self.zero_points, self.roundings):
            h = (v >= 0).to(v.dtype) if hard else soft_rounding(v)
            fed[r.quantizer.outputs[0].name] = (torch.clamp(floor + h, r.qmin, r.qmax) - zero_point) * scale
        return fed

    def regularization(self, beta: float) -> torch.Tensor:
        """AdaRound's rounding regularizer: per weight the mean of 1 - |2h - 1|^beta, summed."""
        return sum((1 - (2 * soft_rounding(v) - 1).abs().pow(beta)).mean() for v in self.vs)

    def harden(self, fit: _Fit) -> None:
        """Put each weight's hard-rounded values (V >= 0 rounds up) into ``fit``, counting the rows
        (output channels) whose rounding differs from nearest."""
        for r, v in zip(self.roundings, self.vs):
            levels = np.clip(r.floor + (v.detach().numpy() >= 0), r.qmin, r.qmax)
            nearest = _requantized(r.quantizer)
            fit.weights[r.quantizer.name] = r.values(levels)
            axis = r.quantizer.attributes.get_int("axis", 1) % levels.ndim if np.size(r.scale) > 1 else 0
            changed = np.moveaxis(fit.weights[r.quantizer.name] != nearest, axis, 0).reshape(levels.shape[axis], -1).any(axis=1)
            fit.rows_changed += int(changed.sum())


@dataclass(frozen=True)
class _BlockData:
    """A block's calibration tensors in torch: the quantized graph's block input (``inputs``),
    the float model's block input (``float_inputs``) and output (``targets``)."""

    inputs: torch.Tensor
    float_inputs: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def of(cls, data: dict[str, np.ndarray]) -> _BlockData:
        import torch

        return cls(torch.from_numpy(data["input"]), torch.from_numpy(data["float_input"]), torch.from_numpy(data["target"]))


def _block_error(graph, block: Block, soft: _SoftWeights, hard: bool | None, data: _BlockData) -> float:
    """The block output's mean squared error against the float one on all of ``data``, its
    weights as ``soft`` feeds them (see :meth:`_SoftWeights.fed`), without dropping."""
    import torch

    total = 0.0
    with torch.no_grad():
        fed = soft.fed(hard)
        for begin in range(0, len(data.inputs), EVAL_CHUNK):
            chunk = slice(begin, begin + EVAL_CHUNK)
            output = graph.run({block.input: data.inputs[chunk], **fed}, [block.output])[block.output]
            total += float(((output - data.targets[chunk]) ** 2).sum(dtype=torch.float64))
    return total / data.targets.numel()


def _parameter_groups(vs: list[torch.nn.Parameter], parameters: list[torch.nn.Parameter]) -> list[dict]:
    """Adam's groups: the Vs at a fixed rate, each activation step at a rate relative to its
    initial value that decays (cosine); ``base_lr`` is each group's starting rate."""
    groups = [{"params": vs, "lr": ROUNDING_LR, "base_lr": ROUNDING_LR, "decay": False}] if vs else []
    groups += [{"params": [p], "lr": SCALE_LR * float(p.detach().abs().mean().clamp(min=1e-8)), "decay": True} for p in parameters]
    for group in groups:
        group["base_lr"] = group["lr"]
    return groups


def _train(graph, block: Block, soft: _SoftWeights, parameters: list[torch.nn.Parameter], data: _BlockData, quantizer_outputs: list[str],
           iterations: int, seed: int, reference: float) -> None:
    """Adam on the Vs and the activation steps for ``iterations`` steps on random batches, with
    QDrop on the block input and at ``quantizer_outputs``; the loss is the output's squared error
    relative to ``reference`` (nearest rounding's), plus the annealed rounding regularizer."""
    import torch

    groups = _parameter_groups(soft.vs, parameters)
    optimizer = torch.optim.Adam(groups)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    warmup = int(WARMUP * iterations)
    count = len(data.inputs)

    def dropped(value, source):
        return torch.where(torch.rand(value.shape, generator=generator) < DROP, source, value)

    after = {name: (lambda value, node_inputs: dropped(value, node_inputs[0])) for name in quantizer_outputs}
    for step in range(iterations):
        index = torch.from_numpy(rng.choice(count, size=min(BATCH, count), replace=False))
        block_input = dropped(data.inputs[index], data.float_inputs[index])
        output = graph.run({block.input: block_input, **soft.fed(False)}, [block.output], after=after)[block.output]
        loss = ((output - data.targets[index]) ** 2).mean() / reference
        if step >= warmup and soft.vs:
            loss = loss + REGULARIZATION * soft.regularization(BETA[0] + (BETA[1] - BETA[0]) * (step - warmup) / max(iterations - warmup, 1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for group in groups:
            if group["decay"]:
                group["lr"] = group["base_lr"] * 0.5 * (1 + math.cos(math.pi * step / iterations))
        optimizer.step()
        with torch.no_grad():
            for parameter in parameters:
                parameter.clamp_(min=1e-8)


def fit_block(graph, model: ir.Model, block: Block, roundings: list[_Rounding], steps: list[str], data: dict[str, np.ndarray],
              iterations: int, seed: int) -> _Fit:
    """Fit ``block`` (see the module docstring) on ``data`` (``input``: the quantized graph's
    block input, ``float_input`` and ``target``: the float model's block input and output), with
    ``graph`` the quantized model's TorchGraph; nothing is written into ``model``."""
    import torch

    by_name = {node.name: node for node in model.graph}
    quantizer_outputs = [by_name[name].outputs[0].name for name in block.activation_quantizers]
    tensors = _BlockData.of(data)
    soft = _SoftWeights.start(roundings)
    parameters = [graph.parameter(name) for name in steps]
    initial = [p.detach().clone() for p in parameters]
    before = _block_error(graph, block, soft, None, tensors)
    fit = _Fit(before=before, after=before)
    if not roundings and not parameters:
        return fit
    for parameter in parameters:
        parameter.requires_grad_(True)
    try:
        _train(graph, block, soft, parameters, tensors, quantizer_outputs, iterations, seed, before if before > 0 else 1.0)
    finally:
        for parameter in parameters:
            parameter.requires_grad_(False)
    fit.after = _block_error(graph, block, soft, True, tensors)
    fit.kept = fit.after <= before
    if fit.kept:
        soft.harden(fit)
        fit.scales = {name: p.detach().numpy().astype(np.float32).copy() for name, p in zip(steps, parameters)}
    with torch.no_grad():
        for parameter, value in zip(parameters, initial):
            parameter.copy_(value)  # the caller writes kept steps into the model and the graph
    return fit


class BlockReconstructionPass(ir.passes.InPlacePass):
    """Block-wise reconstruction (see the module docstring) of the weights of ``nodes`` and the
    steps of the static activation quantizers around them, against ``reference`` (the float
    graph the quantizers were inserted into, which keeps its value names), on ``batches``;
    ``results`` holds a :class:`BlockResult` per block. ``progress`` None: a bar per block as the
    enclosing :func:`~zsq_onnx.reconstruct.stage.progress_bars` says."""

    def __init__(self, reference: ir.Model, nodes: Collection[str], batches: Sequence[np.ndarray], config: ReconstructConfig,
                 progress: bool | None = None, seed: int = 0) -> None:
        super().__init__()
        self.reference = reference
        self.nodes = nodes
        self.batches = batches
        self.config = config
        self.progress = progress
        self.seed = seed
        self.results: list[BlockResult] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        from zsq_onnx.executors.torch_graph import TorchGraph

        self.results = []
        blocks = partition(model)
        if not blocks:
            logger.warning("block reconstruction found no blocks (the graph has no single data input): weights keep nearest rounding")
        graph = TorchGraph(model)
        reference_names = {value.name for value in self.reference.graph.inputs} | {value.name for node in self.reference.graph for value in node.outputs}
        cached: dict[str, np.ndarray] = {}
        for index, block in enumerate(progress(blocks, showing_progress(self.progress), "block")):
            start = time.perf_counter()
            float_input, float_output = float_name(model, block.input), float_name(model, block.output)
            if float_input not in reference_names or float_output not in reference_names:
                logger.info("block reconstruction skips %s: the float graph has no %s", block.name, float_input if float_input not in reference_names else float_output)
                cached = {}
                continue
            roundings, steps = _roundings(model, block, self.nodes), _steps(model, block)
            if not roundings and not steps:
                continue
            data = _collect(model, [block.input], self.batches)
            missing = [name for name in (float_input, float_output) if name not in cached]
            cached = {name: cached[name] for name in (float_input, float_output) if name in cached} | (_collect(self.reference, missing, self.batches) if missing else {})
            data = {"input": data[block.input], "float_input": cached[float_input], "target": cached[float_output]}
            fit = fit_block(graph, model, block, roundings, steps, data, self.config.block_iterations, distributed.batch_seed(self.seed, index)) \
                if distributed.world().main else None
            fit = distributed.gather(fit)[0]
            self._write(model, graph, fit)
            result = BlockResult(block.name, fit.before, fit.after if fit.kept else fit.before, fit.rows_changed, time.perf_counter() - start, fit.kept,
                                 block.layers, tuple(steps), block.input, block.output)
            self.results.append(result)
            logger.info("reconstruct block %s: output MSE %.4g -> %.4g%s, %.2f s", block.name, fit.before, fit.after,
                        "" if fit.kept else " (worse: kept nearest)", result.seconds)
            del data
        model.metadata_props[METADATA_KEY] = json.dumps({"weight_rounding": str(self.config.weight_rounding), "mode": "block",
                                                         "layers": [r.to_dict() for r in self.results]})
        return ir.passes.PassResult(model, modified=any(r.kept for r in self.results))

    @staticmethod
    def _write(model: ir.Model, graph, fit: _Fit) -> None:
        """Put a kept fit's weights (as their quantizers' sources) and steps into ``model`` and
        its TorchGraph ``graph``."""
        import torch

        by_name = {node.name: node for node in model.graph}
        for name, weight in fit.weights.items():
            quantizer = by_name[name]
            source = input_for(quantizer, Role.SOURCE)
            source.const_value = ir.tensor(np.ascontiguousarray(weight, np.float32), name=source.name)
            if not np.array_equal(_requantized(quantizer), weight):
                raise InternalError(f"block reconstruction: the weight {source.name} left its quantizer's grid")
        for name, scale in fit.scales.items():
            value = model.graph.initializers[name]
            value.const_value = ir.tensor(np.asarray(scale, np.float32).reshape(value.const_value.shape.numpy()), name=name)
            with torch.no_grad():
                graph.parameter(name).copy_(torch.from_numpy(np.asarray(scale, np.float32)))

