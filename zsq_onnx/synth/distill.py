"""ZeroQ distillation: inputs whose BatchNorm input statistics match the running statistics."""

from __future__ import annotations

import json
import logging
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx_ir as ir

from zsq_onnx import distributed
from zsq_onnx.errors import BadInputError, NoBatchNormError
from zsq_onnx.io import onnx_io
from zsq_onnx.io.preprocessing import Preprocessing
from zsq_onnx.recipe import SynthConfig

logger = logging.getLogger(__name__)

SYNTH_BYTES = 1 << 30
ACTIVATIONS_PER_INPUT = 100


@dataclass(frozen=True)
class BatchNormStat:
    """One BatchNormalization node: the tensors entering and leaving it, and its parameters' and
    running statistics' names."""

    node: str
    input: str
    output: str
    scale: str
    bias: str
    mean: str
    var: str
    epsilon: float


@dataclass(frozen=True)
class SynthResult:
    """Calibration inputs (normalized NCHW float32, one array per batch) and how they were made:
    the distillation (or generator) loss curve and final per-BN losses (empty for real images);
    ``game`` is the generator game that made them, which fine-tuning goes on playing."""

    batches: list[np.ndarray]
    loss_curve: list[float]
    final_bn_losses: dict[str, float]
    seconds: float
    source: str = "distilled"
    game: Any = None

    @property
    def inputs(self) -> np.ndarray:
        """All distilled samples in one array."""
        return np.concatenate(self.batches)


def save_synthetic(result: SynthResult, path: str | Path, config: SynthConfig, seed: int, model_name: str) -> Path:
    """Write distilled inputs, their settings and the per-BN loss to an .npz (atomically)."""
    import io

    settings = {"model": model_name, "seed": seed, **asdict(config), "seconds": result.seconds}
    buffer = io.BytesIO()
    np.savez(
        buffer,
        inputs=result.inputs,
        batch_sizes=np.array([len(b) for b in result.batches]),
        loss_curve=np.array(result.loss_curve),
        bn_names=np.array(list(result.final_bn_losses), dtype=str),
        bn_losses=np.array(list(result.final_bn_losses.values())),
        settings=np.array(json.dumps(settings)),
    )
    return onnx_io.write_bytes_atomic(buffer.getvalue(), path)


def load_synthetic(path: str | Path, input_shape: tuple[int, ...]) -> SynthResult:
    """Read an .npz written by :func:`save_synthetic`; its inputs must fit ``input_shape``."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no such synthetic-data file")
    try:
        with np.load(path, allow_pickle=False) as archive:
            inputs, sizes = archive["inputs"].astype(np.float32), archive["batch_sizes"]
            curve, names, losses = archive["loss_curve"], archive["bn_names"], archive["bn_losses"]
            seconds = float(json.loads(str(archive["settings"])).get("seconds", 0.0))
    except (OSError, ValueError, KeyError, AttributeError, TypeError, zipfile.BadZipFile) as exc:
        hint = "; a generator saved by `zsq-onnx synth --synthesizer generator` is read with --synthesizer generator" if path.suffix == ".pt" else ""
        raise BadInputError(f"{path}: not a synthetic-data file written by `zsq-onnx synth` ({exc}){hint}") from None
    if tuple(inputs.shape[1:]) != tuple(input_shape):
        raise BadInputError(f"{path}: inputs have shape {tuple(inputs.shape[1:])}, the model expects {tuple(input_shape)}")
    if len(inputs) == 0:
        raise BadInputError(f"{path}: holds no inputs; distill some with `zsq-onnx synth`")
    if not np.isfinite(inputs).all():
        raise BadInputError(f"{path}: holds NaN or inf inputs; distill them again with `zsq-onnx synth`")
    if sizes.ndim != 1 or sizes.dtype.kind not in "iu" or np.any(sizes <= 0) or sizes.sum() != len(inputs):
        raise BadInputError(f"{path}: not a synthetic-data file written by `zsq-onnx synth` (batch sizes {sizes.tolist()} for {len(inputs)} inputs)")
    batches = np.split(inputs, np.cumsum(sizes)[:-1])
    logger.info("%s: %d distilled inputs in %d batch(es)", path, len(inputs), len(batches))
    return SynthResult(batches, curve.tolist(), dict(zip(names.tolist(), losses.tolist())), seconds)


def batchnorm_stats(model: ir.Model, source: str = "model") -> list[BatchNormStat]:
    """Every BatchNormalization node with constant running statistics; none is NoBatchNormError."""
    graph = model.graph
    stats = []
    for node in graph:
        if node.op_type != "BatchNormalization":
            continue
        mean, var = node.inputs[3], node.inputs[4]
        if mean.const_value is None or var.const_value is None:
            continue
        epsilon = node.attributes.get_float("epsilon", 1e-5)
        stats.append(BatchNormStat(node.name, node.inputs[0].name, node.outputs[0].name, node.inputs[1].name, node.inputs[2].name, mean.name, var.name, epsilon))
    if not stats:
        raise NoBatchNormError(
            f"{source}: has no BatchNormalization nodes (folded away at export?), so there are no statistics to distill data from; "
            "re-export with BatchNorm kept (torch.onnx.export(..., dynamo=False, do_constant_folding=False) or training=torch.onnx.TrainingMode.PRESERVE; "
            "dynamo=True, optimize=False; or `zsq-onnx export` for a zoo model), or pass --calibration-data DATA to calibrate on real images"
        )
    return stats


def input_prior(model: ir.Model, channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(mean, std, low, high) per input channel for distillation: natural-image statistics and
    the range raw pixels can reach under the preprocessing recorded in ``model`` (see
    :meth:`Preprocessing.natural_statistics`); without a record, ZeroQ's N(0, 1), unbounded."""
    preprocessing = Preprocessing.from_metadata(model.metadata_props)
    if preprocessing is None or len(preprocessing.mean) != channels:
        logger.debug("no preprocessing record for %d channel(s): ZeroQ's N(0, 1) input prior, unbounded", channels)
        return np.zeros(channels, np.float32), np.ones(channels, np.float32), np.full(channels, -np.inf, np.float32), np.full(channels, np.inf, np.float32)
    mean, std = preprocessing.natural_statistics()
    low, high = preprocessing.input_bounds()
    return mean, std, low, high


def distill(model: ir.Model, input_shape: tuple[int, ...], config: SynthConfig, seed: int = 0, progress: bool = True, source: str = "model") -> SynthResult:
    """Distill ``config.samples`` inputs with Adam on the input only (ZeroQ, ALGORITHMS.md).

    The input is optimized in standardized units z, x = mean + std * z, with the mean and std
    that natural images have under the model's preprocessing (:func:`input_prior`); ZeroQ's
    learning rate and input loss (z against N(0, 1)) then mean the same for a model normalized
    to [-1, 1] as for one standardized per channel, and z is clamped after every step so that
    x stays in the range real pixels reach (the quantizer of the model input is calibrated on
    it: unbounded inputs spread to +-15 on EfficientNet-Lite0, 16x its real range).

    Each batch starts from noise seeded by its index (:func:`~zsq_onnx.distributed.batch_seed`);
    in a torch.distributed group each rank distills its :func:`~zsq_onnx.distributed.shard` of
    the batches and every rank gets all of them, the same as one process would distill."""
    import torch
    from tqdm import tqdm

    from zsq_onnx.executors.torch_graph import TorchGraph

    stats = batchnorm_stats(model, source)
    graph = TorchGraph(model, trainable=False).eval()
    targets = batchnorm_input_targets(graph, stats)
    channels = input_shape[0]
    view = (1, channels, *[1] * (len(input_shape) - 1))
    mean, std, low, high = (torch.from_numpy(v).reshape(view) for v in input_prior(model, channels))
    z_low, z_high = (low - mean) / std, (high - mean) / std
    micro = micro_batch_size(input_shape)
    sizes = [min(config.batch_size, config.samples - start) for start in range(0, config.samples, config.batch_size)]
    mine = distributed.shard(len(sizes))
    logger.debug("%s: distilling %d samples in %d batch(es) (%d here) from %d BatchNorm layers, %d Adam steps at lr %g, micro-batches of %d",
                 source, config.samples, len(sizes), len(mine), len(stats), config.steps, config.lr, micro)
    start_time = time.perf_counter()
    bar = tqdm(total=len(mine) * config.steps, desc="synth", disable=not progress, leave=False, unit="step")

    def distill_batch(index: int) -> tuple[np.ndarray, np.ndarray, list[float]]:
        z = torch.randn(sizes[index], *input_shape, generator=torch.Generator().manual_seed(distributed.batch_seed(seed, index)))
        result = _distill_batch(graph, targets, z.clamp_(z_low, z_high), (mean, std, z_low, z_high), config, micro, bar)
        logger.debug("%s: batch %d of %d distilled, loss %.3f", source, index + 1, len(sizes), result[1][-1])
        return result

    distilled = distributed.map_shards(len(sizes), distill_batch)
    bar.close()
    curve = np.zeros(config.steps)
    for _, batch_curve, _ in distilled:
        curve += batch_curve / len(sizes)
    seconds = time.perf_counter() - start_time
    logger.info("%s: distilled %d samples in %.1f s, BN-statistics loss %.3f -> %.3f", source, config.samples, seconds, curve[0], curve[-1])
    last_losses = dict(zip((s.node for s in stats), distilled[-1][2]))
    return SynthResult([inputs for inputs, _, _ in distilled], curve.tolist(), last_losses, seconds)


def _distill_batch(graph, targets: list[tuple], z, prior: tuple, config: SynthConfig, micro: int, bar) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """One batch distilled from its starting point ``z`` (standardized units): the inputs, the
    loss after every step and the final loss of each BN layer."""
    import torch

    mean, std, z_low, z_high = prior
    names = tuple(name for name, *_ in targets)
    channels = z.shape[1]
    z.requires_grad_(True)
    optimizer = torch.optim.Adam([z], lr=config.lr)
    curve = np.zeros(config.steps)
    for step in range(config.steps):
        optimizer.zero_grad(set_to_none=True)
        if len(z) <= micro:
            values = graph.run({graph.input_names[0]: mean + std * z}, outputs=names)
            losses = [stat_loss(values[name], target_mean, target_std, eps) for name, target_mean, target_std, eps in targets]
            loss = torch.stack(losses).sum() + stat_loss(z, torch.zeros(channels), torch.ones(channels), 0.0)
            loss.backward()
        else:
            loss, losses = _micro_batched_backward(graph, z, mean, std, targets, micro)
        optimizer.step()
        with torch.no_grad():
            z.clamp_(z_low, z_high)
        curve[step] = loss.item()
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
    return (mean + std * z).detach().numpy().astype(np.float32), curve, [value.item() for value in losses]


def batchnorm_input_targets(graph, stats: list[BatchNormStat]) -> list[tuple]:
    """(BN input name, running mean, sqrt(running var + eps), eps) of each BatchNorm in ``stats``,
    read from the TorchGraph ``graph`` of the FP32 model: what ZeroQ's loss matches."""
    import torch

    return [(s.input, graph.parameter(s.mean).detach(), torch.sqrt(graph.parameter(s.var).detach() + s.epsilon), s.epsilon) for s in stats]


def micro_batch_size(input_shape: tuple[int, ...]) -> int:
    """Samples whose autograd graph fits ``SYNTH_BYTES`` (a CNN keeps about
    ``ACTIVATIONS_PER_INPUT`` input-sized tensors per sample for the backward pass)."""
    return max(1, SYNTH_BYTES // (4 * int(np.prod(input_shape)) * ACTIVATIONS_PER_INPUT))


def _micro_batched_backward(graph, z, mean, std, targets, micro: int):
    """The BN-statistics loss of the whole batch ``z`` and its exact gradient in ``z.grad``, with
    only ``micro`` samples' autograd graph in memory at a time: a first pass without gradients
    sums each BN input's values and squares per channel (float64); the loss is a function of
    those sums, so its gradient reaches every sample through d loss / d sums, which a second
    pass applies micro-batch by micro-batch. One extra forward pass, a fraction of the memory."""
    import torch

    names = [name for name, *_ in targets]
    sums = {name: [0.0, 0.0, 0] for name in names}
    with torch.no_grad():
        for chunk in z.split(micro):
            values = graph.run({graph.input_names[0]: mean + std * chunk}, outputs=names)
            for name in names:
                value = values[name].double()
                dims = [0, *range(2, value.ndim)]
                sums[name][0] = sums[name][0] + value.sum(dims)
                sums[name][1] = sums[name][1] + (value * value).sum(dims)
                sums[name][2] += value.numel() // value.shape[1]
    leaves = {name: (first.requires_grad_(True), second.requires_grad_(True), count) for name, (first, second, count) in sums.items()}
    losses = []
    for name, target_mean, target_std, eps in targets:
        first, second, count = leaves[name]
        batch_mean = first / count
        batch_var = (second / count - batch_mean**2).clamp_min(0)
        losses.append(torch.linalg.vector_norm(batch_mean - target_mean.double()) + torch.linalg.vector_norm(torch.sqrt(batch_var + eps) - target_std.double()))
    channels = z.shape[1]
    loss = torch.stack(losses).sum() + stat_loss(z, torch.zeros(channels), torch.ones(channels), 0.0).double()
    loss.backward()
    for chunk in z.split(micro):
        values = graph.run({graph.input_names[0]: mean + std * chunk}, outputs=names)
        surrogate = 0.0
        for name in names:
            value, (first, second, _) = values[name], leaves[name]
            dims = [0, *range(2, value.ndim)]
            surrogate = surrogate + (first.grad.float() * value.sum(dims)).sum() + (second.grad.float() * (value * value).sum(dims)).sum()
        surrogate.backward()
    return loss.float(), [value.float() for value in losses]


def stat_loss(x, mean, std, eps: float):
    """‖μ̃ − μ‖₂ + ‖σ̃ − σ‖₂ of ``x``'s per-channel statistics over (N, H, W)."""
    import torch

    dims = [0, *range(2, x.ndim)]
    batch_mean = x.mean(dim=dims)
    batch_std = torch.sqrt(x.var(dim=dims, unbiased=False) + eps)
    return torch.linalg.vector_norm(batch_mean - mean) + torch.linalg.vector_norm(batch_std - std)
