"""The report's and the emitted model's files: what a report at a path writes beside it, and
writing the model and report together, or, when an accuracy gate (:mod:`zsq_onnx.gates`)
fails, under rejected names instead."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnx_ir as ir

from zsq_onnx.errors import AccuracyGateError
from zsq_onnx.gates import Gates, check_gates
from zsq_onnx.io.onnx_io import onnx_bytes, write_files_atomic
from zsq_onnx.validate.render import markdown, plot_frontier, plot_layers
from zsq_onnx.validate.report import to_json

logger = logging.getLogger(__name__)


def paths(path: str | Path) -> list[Path]:
    """Every file a report at ``path`` may write: the JSON itself, and beside it its .md, its
    per-layer .png and, with mixed precision, the frontier's .frontier.png."""
    path = Path(path)
    return [path, path.with_suffix(".md"), path.with_suffix(".png"), path.with_suffix(".frontier.png")]


def report_files(report: dict[str, Any], path: str | Path) -> dict[Path, bytes]:
    """The report's files (see :func:`paths`) by path, as bytes: the .png only with layers, the
    .frontier.png only with mixed precision."""
    json_path, markdown_path, layers_path, frontier_path = paths(path)
    files = {json_path: to_json(report).encode(), markdown_path: markdown(report).encode()}
    if report["layers"]:
        files[layers_path] = plot_layers(report)
    if report.get("mixed_precision") is not None:
        files[frontier_path] = plot_frontier(report)
    return files


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
        return {model_path: onnx_bytes(model), **(report_files(content, json_path) if json_path is not None else {})}

    output, json_path = Path(output), Path(report_path) if report_path is not None else None
    try:
        check_gates(content, gates.min_agreement, gates.max_drop)
    except AccuracyGateError as failed:
        kept = write_files_atomic(files(rejected_path(output), rejected_path(json_path) if json_path is not None else None))
        raise AccuracyGateError(f"{failed}; {output} not written, the rejected model kept as {kept[0]}"
                                + (f" and its report as {kept[1]}" if json_path is not None else "")) from None
    return write_files_atomic(files(output, json_path))
