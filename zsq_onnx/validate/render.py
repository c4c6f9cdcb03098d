"""The conversion report (:mod:`zsq_onnx.validate.report`) for people: a few summary lines, a
markdown page with its tables, and PNG plots of per-layer SQNR and the mixed-precision
frontier; each a pure function of the report's dict."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

logger = logging.getLogger(__name__)


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
