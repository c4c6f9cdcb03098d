"""Validation in ONNX Runtime: accuracy and agreement, per-layer diagnostics, inspection, report."""
