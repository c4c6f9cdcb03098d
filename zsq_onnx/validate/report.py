"""The conversion report: a JSON document and a short human summary."""

from __future__ import annotations

import json
import math
import resource
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx_ir as ir

from zsq_onnx.distributed import World
from zsq_onnx.errors import AccuracyGateError, BadInputError
from zsq_onnx.executors.ort_graph import runtime_record
from zsq_onnx.executors.runtime import Execution, describe_execution
from zsq_onnx.io.foreign import CONVERSION_KEY
from zsq_onnx.io.onnx_io import onnx_bytes, write_files_atomic
from zsq_onnx.plan.calibrate import recorded_calibration
from zsq_onnx.recipe import Recipe
from zsq_onnx.validate.evaluate import Evaluation
from zsq_onnx.validate.inspection import lookup_table_storage

if TYPE_CHECKING:
    from zsq_onnx.finetune.loop import FinetuneResult
    from zsq_onnx.synth.distill import SynthResult


def quantizer_counts(model: ir.Model) -> dict[str, int]:
    """Weight quantizers (DequantizeLinear of an 8/4-bit initializer), bias quantizers (of an int32
    initializer) and activation quantizers (QuantizeLinear)."""
    stored = [n.inputs[0].const_value.dtype for n in model.graph if n.op_type == "DequantizeLinear" and n.inputs[0].const_value is not None]
    return {
        "weights": sum(1 for dtype in stored if dtype != ir.DataType.INT32),
        "biases": sum(1 for dtype in stored if dtype == ir.DataType.INT32),
        "activations": sum(1 for n in model.graph if n.op_type == "QuantizeLinear"),
    }


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(
    name: str, recipe: Recipe, evaluation: Evaluation, calibration: SynthResult, fp32: ir.Model, quantized: ir.Model,
    diagnostics: dict[str, Any], seconds: dict[str, float], world: World | None = None,
) -> dict[str, Any]:
    """The report of one conversion (accuracies are fractions 0..1); ``world``: the
    torch.distributed group it ran in (one process by default), whose rank 0 timed the stages."""
    world = world or World()
    evaluated = evaluation.to_dict()
    evaluated["quantized"]["quantizers"] = quantizer_counts(quantized)
    return {
        "model": name,
        "recipe": recipe.to_dict(),
        **evaluated,
        **diagnostics,
        "size_bytes": {"fp32": ir.serde.serialize_model(fp32).ByteSize(), "quantized": ir.serde.serialize_model(quantized).ByteSize()},
        **({"lookup_tables": tables} if (tables := lookup_table_storage(quantized))["layers"] else {}),
        "calibration": {
            "source": calibration.source,
            "samples": sum(len(b) for b in calibration.batches),
            "synth_loss_start": calibration.loss_curve[0] if calibration.loss_curve else None,
            "synth_loss_end": calibration.loss_curve[-1] if calibration.loss_curve else None,
        },
        **observer_sections(recipe, quantized),
        **({"reconstruction": section} if (section := reconstruction_section(quantized)) is not None else {}),
        "seconds": {key: round(value, 3) for key, value in seconds.items()},
        "distributed": {"world_size": world.size, "backend": world.backend},
        "runtime": runtime_section(evaluation),
        **({"opset_conversion": fp32.metadata_props[CONVERSION_KEY]} if CONVERSION_KEY in fp32.metadata_props else {}),
        "peak_memory_mb": round(peak_memory_mb(), 1),
    }


def runtime_section(evaluation: Evaluation) -> dict[str, Any]:
    """The ORT version, the CPU features that decide its kernels, and how each kind of
    measurement ran (optimization level, float QDQ or integer kernels)."""
    measured = describe_execution(Execution.FLOAT_QDQ)
    return {
        **runtime_record(),
        "sessions": {"calibration": measured, "bias_correction": measured, "searches": measured, **evaluation.execution,
                     "search_latency": describe_execution(Execution.INTEGER)},
    }


def observer_sections(recipe: Recipe, quantized: ir.Model) -> dict[str, Any]:
    """How activation ranges were chosen (``activation_ranges``: the observer method and, per
    static activation quantizer, its range and the share of calibration values outside it) and
    the bias correction (``bias_correction``: per corrected layer the largest bias change), as
    recorded in the quantized model."""
    recorded = recorded_calibration(quantized) or {}
    return {
        "activation_ranges": {
            "method": recorded.get("method", recipe.calibration_method),
            **({"percentile": recorded["percentile"]} if "percentile" in recorded else {}),
            "tensors": recorded.get("tensors", []),
        },
        "bias_correction": recorded.get("bias_correction", {"enabled": recipe.bias_correction, "max_abs_shift": {}}),
    }


def reconstruction_section(quantized: ir.Model) -> dict[str, Any] | None:
    """The weight reconstruction as the stage recorded it in the model's metadata (see
    :data:`zsq_onnx.reconstruct.stage.METADATA_KEY`), or None when the weights were rounded to
    nearest: ``method`` (gptq, adaround), ``mode`` (layer or block) and per ``units`` entry (a
    layer, or a block named by its block or first node) the output error on the calibration
    inputs with nearest rounding (``error_before``) and after (``error_after``) and the seconds
    it took; ``total`` sums them. Layer and block records share this shape."""
    from zsq_onnx.reconstruct.stage import METADATA_KEY

    text = quantized.metadata_props.get(METADATA_KEY)
    if text is None:
        return None
    recorded = json.loads(text)
    mode = recorded.get("mode", "layer")
    entries = recorded.get("blocks" if mode == "block" else "layers", recorded.get("layers", recorded.get("blocks", [])))
    synonyms = {"name": ("block", "name", "node"), "error_before": ("error_before", "nearest_error"), "error_after": ("error_after", "error"), "seconds": ("seconds",)}
    units = []
    for entry in entries:
        found = {field: next((key for key in keys if entry.get(key) is not None), None) for field, keys in synonyms.items()}
        unit = {field: entry[key] if key is not None else None for field, key in found.items()}
        units.append({**unit, **{key: value for key, value in entry.items() if key not in found.values()}})  # other keys as recorded
    total = lambda key: float(sum(unit[key] for unit in units if unit[key] is not None))  # noqa: E731
    return {
        "method": recorded.get("method", recorded.get("weight_rounding")),
        "mode": mode,
        "units": units,
        "total": {"units": len(units), "improved": sum(1 for u in units if None not in (u["error_before"], u["error_after"]) and u["error_after"] < u["error_before"]),
                  "error_before": total("error_before"), "error_after": total("error_after"), "seconds": round(total("seconds"), 3)},
    }


def finetune_section(result: FinetuneResult) -> dict[str, Any]:
    """The fine-tuning part of the report: steps, time, loss and agreement at start and end, and
    a generator's loss at start and end when the batches came from one."""
    head, tail = slice(0, 20), slice(-20, None)
    mean = lambda values: float(sum(values) / len(values)) if values else None  # noqa: E731
    return {
        "steps": result.steps,
        "seconds": round(result.seconds, 2),
        "device": result.device,
        "trained": result.trained,
        "loss_start": mean(result.loss_curve[head]),
        "loss_end": mean(result.loss_curve[tail]),
        "batch_agreement_start": mean(result.agreement_curve[head]),
        "batch_agreement_end": mean(result.agreement_curve[tail]),
        "generator_loss_start": mean(result.source_loss_curve[head]),
        "generator_loss_end": mean(result.source_loss_curve[tail]),
    }


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def to_json(report: dict[str, Any]) -> str:
    """Strict JSON text (non-finite numbers become null)."""
    return json.dumps(_finite(report), indent=2, sort_keys=False) + "\n"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _bits(report: dict[str, Any]) -> str:
    recipe, precision = report["recipe"], report.get("mixed_precision")
    if precision is not None:
        return f"W{_chosen(precision)['avg_wbits']:.2f}(mixed)A{recipe['activations']['bits']}"
    return f"W{recipe['weights']['bits']}A{recipe['activations']['bits']}"


def _chosen(precision: dict[str, Any]) -> dict[str, Any]:
    return precision["frontier"][precision["chosen"]]


def _lookup_table_size(tables: dict[str, int] | None) -> str:
    """The size line's part on lookup-table weights, empty without them."""
    if tables is None:
        return ""
    return f" (of which {tables['layers']} lookup-table weights: {tables['bytes'] / 1024:.1f} KiB of codes, tables and alphas)"


def _cpu_flags(cpu: dict[str, Any]) -> str:
    """The CPU and which of the features that pick ORT's kernels it has."""
    flags = ", ".join(f"{name} {'yes' if cpu[name] else 'no'}" for name in ("avx2", "avx512", "vnni", "amx"))
    return f"{cpu['model']} ({flags})"


def summary(report: dict[str, Any]) -> str:
    """A few human-readable lines: accuracies, agreement, sizes, latency, time, warnings."""
    bits = _bits(report)
    fp32, quantized, size = report["fp32"], report["quantized"], report["size_bytes"]
    calibration = report["calibration"]
    lines = [
        f"{report['model']}: {bits} {report['recipe']['profile']}, calibrated on {calibration['samples']} {calibration['source']} samples, "
        f"evaluated on {report['eval']['dataset']} ({report['eval']['samples']} samples)",
        f"  ran as  {report['eval']['execution']['accuracy']} ({report['eval']['execution']['why']}); ORT {report['runtime']['onnxruntime']} on {_cpu_flags(report['runtime']['cpu'])}",
        f"  top-1   FP32 {_percent(fp32['top1'])}   {bits} {_percent(quantized['top1'])}   agreement {_percent(quantized['agreement'])}   output SQNR {quantized['output_sqnr_db']:.1f} dB",
        f"  size    FP32 {size['fp32'] / 1024:.1f} KiB   {bits} {size['quantized'] / 1024:.1f} KiB" + _lookup_table_size(report.get("lookup_tables")),
        f"  latency FP32 b1 {fp32['latency_ms_b1']:.2f} ms, b64 {fp32['latency_ms_b64']:.2f} ms   {bits} b1 {quantized['latency_ms_b1']:.2f} ms, b64 {quantized['latency_ms_b64']:.2f} ms",
        _calibration_line(report["activation_ranges"], report["bias_correction"]),
    ]
    choice = report.get("granularity_choice")
    if choice is not None:
        kinds = Counter(row["choice"] for row in choice["tensors"])
        lines.append(f"  granularity auto: {', '.join(f'{count} {kind}' for kind, count in kinds.items())}; latency at batch 64 {choice['chosen_vs_fp32']:.2f}x FP32 "
                     f"(limit {choice['limit_vs_fp32']:.2f}x, all static {choice['static_vs_fp32']:.2f}x)")
    precision = report.get("mixed_precision")
    if precision is not None:
        point, budget = _chosen(precision), precision["budget"]
        lines.append(f"  mixed precision within {budget['kind']} {budget['value']:g}: average weight bits {point['avg_wbits']:.2f}, weights {point['size_bytes'] / 1024:.1f} KiB ({point['disk_bytes'] / 1024:.1f} KiB on disk), "
                     f"{point['bops']:.3g} GBOPs, sensitivity {point['sensitivity']:.4g} (point {precision['chosen'] + 1} of {len(precision['frontier'])} on the frontier)")
    rebuilt = report.get("reconstruction")
    if rebuilt is not None:
        lines.append(_reconstruction_line(rebuilt))
    tuned = report.get("finetune")
    if tuned is not None:
        lines.append(f"  finetune {tuned['steps']} steps in {tuned['seconds']:.0f} s on {tuned['device']}: KD loss {tuned['loss_start']:.4f} -> {tuned['loss_end']:.4f}, "
                     f"batch agreement {_percent(tuned['batch_agreement_start'])} -> {_percent(tuned['batch_agreement_end'])}"
                     + (f", generator loss {tuned['generator_loss_start']:.3f} -> {tuned['generator_loss_end']:.3f}" if tuned.get("generator_loss_start") is not None else ""))
    fusion = report.get("ort_cpu_fusion")
    if fusion is not None:
        lines.append(f"  ORT CPU weighted layers: {fusion['fused']} integer kernels, {fusion['unfused']} float")
    worst = min(report["layers"], key=lambda layer: layer["sqnr_db"], default=None)
    if worst is not None:
        lines.append(f"  worst layer {worst['layer']} at {worst['sqnr_db']:.1f} dB SQNR")
    lines += [f"  note: {note}" for note in report.get("notes", [])]
    lines += [f"  warning: {warning}" for warning in report.get("warnings", [])]
    processes = report.get("distributed", {}).get("world_size", 1)
    lines.append("  seconds " + "  ".join(f"{k} {v:.2f}" for k, v in report["seconds"].items()) + f"   peak memory {report['peak_memory_mb']:.0f} MiB"
                 + (f" per process, {processes} processes" if processes > 1 else ""))
    return "\n".join(lines)


def _reconstruction_line(section: dict[str, Any]) -> str:
    total = section["total"]
    kind = "blocks" if section["mode"] == "block" else "layers"
    before, after = total["error_before"], total["error_after"]
    change = f" ({100 * (after - before) / before:+.1f}%)" if before else ""
    return (f"  reconstruction {section['method']} ({section['mode']} mode): {total['units']} {kind}, {total['improved']} improved, "
            f"output error on the calibration inputs {before:.4g} -> {after:.4g}{change} in {total['seconds']:.1f} s")


def _reconstruction_table(section: dict[str, Any]) -> str:
    number = lambda value, form: "" if value is None else format(value, form)  # noqa: E731
    rows = [f"| {'block' if section['mode'] == 'block' else 'layer'} | error, nearest | error, after | change | seconds |", "|---|---|---|---|---|"]
    for unit in section["units"]:
        before, after = unit["error_before"], unit["error_after"]
        change = number(100 * (after - before) / before if before and after is not None else None, "+.1f")
        rows.append(f"| {unit['name']} | {number(before, '.4g')} | {number(after, '.4g')} | {change + '%' if change else ''} | {number(unit['seconds'], '.2f')} |")
    return "\n".join(rows)


def _calibration_line(ranges: dict[str, Any], correction: dict[str, Any]) -> str:
    tensors = ranges["tensors"]
    text = f"  activation ranges {ranges['method']}"
    if tensors:
        worst = max(tensors, key=lambda row: row["clipped_fraction"])
        text += f": {len(tensors)} static quantizers, at most {_percent(worst['clipped_fraction'])} of values clipped ({worst['tensor']})"
    shifts = correction["max_abs_shift"]
    return text + (f"; bias correction on {len(shifts)} layers (largest change {max(shifts.values(), default=0.0):.3g})" if correction["enabled"] else "; no bias correction")


def _ranges_table(ranges: dict[str, Any]) -> str:
    rows = ["| tensor | low | high | clipped |", "|---|---|---|---|"]
    for row in ranges["tensors"]:
        low, high = (f"{v:.4g}" if isinstance(v, float) else f"{len(v)} channels" for v in (row["low"], row["high"]))
        rows.append(f"| {row['tensor']} | {low} | {high} | {_percent(row['clipped_fraction'])} |")
    return "\n".join(rows)


def _granularity_table(choice: dict[str, Any]) -> str:
    kinds = list(choice["tensors"][0]["sqnr_db"]) if choice["tensors"] else []
    header = "| tensor | choice | " + " | ".join(f"SQNR {k} (dB) | ms {k}" for k in kinds) + " |"
    rows = [header, "|---|---|" + "---|---|" * len(kinds)]
    for row in choice["tensors"]:
        cells = " | ".join(f"{row['sqnr_db'][k]:.1f} | {row['cost_ms'][k]:.2f}" for k in kinds)
        rows.append(f"| {row['tensor']} | {row['choice']} | {cells} |")
    return "\n".join(rows)


def _precision_table(precision: dict[str, Any]) -> str:
    widths = sorted({bits for layer in precision["layers"] for bits in layer["sensitivity"]}, key=int)
    rows = ["| layer | parameters | bits | " + " | ".join(f"KL at {w} bits" for w in widths) + " |", "|---|---|---|" + "---|" * len(widths)]
    for layer in precision["layers"]:
        cells = " | ".join(f"{layer['sensitivity'][w]:.3g}" if w in layer["sensitivity"] else "" for w in widths)
        rows.append(f"| {layer['node']} | {layer['params']} | {layer['bits']} | {cells} |")
    return "\n".join(rows)


def markdown(report: dict[str, Any]) -> str:
    """The summary, the auto granularity choice per tensor (SQNR at its readers' outputs and ORT
    cost of each candidate), the mixed-precision choice, the output error per reconstructed layer
    or block, the activation ranges with their clipped fractions and a per-layer
    SQNR table, as markdown."""
    rows = "\n".join(f"| {layer['layer']} | {layer['sqnr_db']:.1f} |" for layer in report["layers"])
    choice = report.get("granularity_choice")
    granularity = f"\n## Granularity choice\n\n{_granularity_table(choice)}\n" if choice is not None else ""
    precision = report.get("mixed_precision")
    granularity += f"\n## Mixed precision\n\n{_precision_table(precision)}\n" if precision is not None else ""
    rebuilt = report.get("reconstruction")
    granularity += f"\n## Reconstruction ({rebuilt['method']}, {rebuilt['mode']} mode)\n\n{_reconstruction_table(rebuilt)}\n" if rebuilt is not None else ""
    observed = report["activation_ranges"]
    ranges = f"\n## Activation ranges ({observed['method']})\n\n{_ranges_table(observed)}\n" if observed["tensors"] else ""
    return f"# zsq-onnx report: {report['model']}\n\n```\n{summary(report)}\n```\n{granularity}{ranges}\n| layer | SQNR (dB) |\n|---|---|\n{rows}\n"


def _figure(size: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=size)


def _png(figure: Any) -> bytes:
    import io

    import matplotlib.pyplot as plt

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def plot_layers(report: dict[str, Any]) -> bytes:
    """A PNG bar chart of per-layer SQNR."""
    layers = report["layers"]
    figure, axes = _figure((max(6.0, 0.35 * len(layers)), 4.0))
    axes.bar(range(len(layers)), [min(layer["sqnr_db"], 80.0) for layer in layers], color="#3b7dd8")
    axes.set_xticks(range(len(layers)), [layer["layer"] for layer in layers], rotation=90, fontsize=7)
    axes.set_ylabel("SQNR vs FP32 (dB)")
    axes.set_title(f"{report['model']} {_bits(report)} {report['recipe']['profile']}: per-layer SQNR")
    return _png(figure)


def plot_frontier(report: dict[str, Any]) -> bytes:
    """A PNG of the mixed-precision frontier: weight size against summed sensitivity, the chosen
    point (with its top-1 where labelled data was given) and the uniform widths marked."""
    precision = report["mixed_precision"]
    frontier, point = precision["frontier"], _chosen(precision)
    figure, axes = _figure((6.5, 4.5))
    axes.plot([p["size_bytes"] / 1024 for p in frontier], [p["sensitivity"] for p in frontier], ".-", color="#3b7dd8", label="Pareto frontier")
    uniform = precision["uniform"]
    axes.scatter([u["size_bytes"] / 1024 for u in uniform], [u["sensitivity"] for u in uniform], marker="s", color="#888888", label="uniform")
    for u in uniform:
        axes.annotate(f"W{u['bits']}", (u["size_bytes"] / 1024, u["sensitivity"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    top1 = report["quantized"]["top1"]
    label = f"chosen ({point['avg_wbits']:.2f} bits" + (f", top-1 {100 * top1:.2f}%)" if top1 is not None else ")")
    axes.scatter([point["size_bytes"] / 1024], [point["sensitivity"]], marker="*", s=180, color="#d83b3b", zorder=3, label=label)
    axes.set_yscale("symlog", linthresh=1e-4)
    axes.set_xlabel("weight size (KiB)")
    axes.set_ylabel("summed sensitivity (KL, synthetic data)")
    axes.set_title(f"{report['model']}: mixed precision within {precision['budget']['kind']} {precision['budget']['value']:g}")
    axes.legend(fontsize=8)
    return _png(figure)


def paths(path: str | Path) -> list[Path]:
    """Every file a report at ``path`` may write: the JSON itself, and beside it its .md, its
    per-layer .png and, with mixed precision, the frontier's .frontier.png."""
    path = Path(path)
    return [path, path.with_suffix(".md"), path.with_suffix(".png"), path.with_suffix(".frontier.png")]


def render(report: dict[str, Any], path: str | Path) -> dict[Path, bytes]:
    """The report's files (see :func:`paths`) by path, as bytes: the .png only with layers, the
    .frontier.png only with mixed precision."""
    json_path, markdown_path, layers_path, frontier_path = paths(path)
    files = {json_path: to_json(report).encode(), markdown_path: markdown(report).encode()}
    if report["layers"]:
        files[layers_path] = plot_layers(report)
    if report.get("mixed_precision") is not None:
        files[frontier_path] = plot_frontier(report)
    return files


@dataclass(frozen=True)
class Gates:
    """Accuracy gates of a conversion (exit 3 when one fails): top-1 agreement with FP32 of at
    least ``min_agreement`` (a fraction), a top-1 drop of at most ``max_drop`` points (needs
    labelled evaluation data). Checked when made, so a conversion never starts with a gate
    that cannot be checked."""

    min_agreement: float | None = None
    max_drop: float | None = None

    def __post_init__(self) -> None:
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise BadInputError(f"--min-agreement takes a fraction between 0 and 1 (0.95 for 95%), got {self.min_agreement}")
        if self.max_drop is not None and not 0 <= self.max_drop <= 100:
            raise BadInputError(f"--max-drop takes top-1 points between 0 and 100 (0.5 for half a point), got {self.max_drop}")

    def check_data(self, labelled: bool, where: str) -> None:
        """BadInputError when ``--max-drop`` is set and the evaluation set of ``where`` (the
        model) has no labels."""
        if self.max_drop is not None and not labelled:
            raise BadInputError(f"{where}: --max-drop compares top-1 on labelled images, and this model has no evaluation set of its own: add --eval-data DATA")


def rejected_path(path: str | Path) -> Path:
    """Where a file of a conversion that failed its gates is kept: ``out.onnx`` as ``out.rejected.onnx``."""
    path = Path(path)
    return path.with_name(f"{path.stem}.rejected{path.suffix}")


def publish(content: dict[str, Any], model: ir.Model, output: str | Path, report_path: str | Path | None, gates: Gates) -> list[Path]:
    """Write the emitted ``model`` to ``output`` and the report ``content`` to ``report_path``
    together (all files or none) when the gates pass. When one fails nothing is written there:
    the model and report are kept under their :func:`rejected_path` names instead, and
    AccuracyGateError (exit 3) says so."""
    def files(model_path: Path, json_path: Path | None) -> dict[Path, bytes]:
        return {model_path: onnx_bytes(model), **(render(content, json_path) if json_path is not None else {})}

    output, json_path = Path(output), Path(report_path) if report_path is not None else None
    try:
        check_gates(content, gates.min_agreement, gates.max_drop)
    except AccuracyGateError as failed:
        kept = write_files_atomic(files(rejected_path(output), rejected_path(json_path) if json_path is not None else None))
        raise AccuracyGateError(f"{failed}; {output} not written, the rejected model kept as {kept[0]}"
                                + (f" and its report as {kept[1]}" if json_path is not None else "")) from None
    return write_files_atomic(files(output, json_path))


def check_gates(report: dict[str, Any], min_agreement: float | None, max_drop: float | None) -> None:
    """Raise AccuracyGateError (exit 3) when the quantized model misses a gate: agreement with
    FP32 below ``min_agreement`` (0..1), or top-1 lower than FP32 by more than ``max_drop`` points."""
    agreement = report["quantized"]["agreement"]
    if min_agreement is not None and agreement < min_agreement:
        raise AccuracyGateError(f"accuracy gate failed: agreement {agreement:.4f} < --min-agreement {min_agreement}")
    if max_drop is not None:
        fp32, quantized = report["fp32"]["top1"], report["quantized"]["top1"]
        if fp32 is None or quantized is None:
            raise BadInputError("--max-drop needs labelled evaluation data (--eval-data)")
        drop = 100 * (fp32 - quantized)
        if drop > max_drop:
            raise AccuracyGateError(f"accuracy gate failed: top-1 drop {drop:.2f} points > --max-drop {max_drop}")
