"""The zsq quantizers, one module per kind: its ONNX function (onnxscript), its torch
implementation and the role of each input, registered in :mod:`~zsq_onnx.quantizers.registry`.

Each quantizer is a node of domain ``zsq`` whose model-local function body is standard ONNX, so
ONNX Runtime runs the intermediate model as it is; TorchGraph runs the kind's torch
implementation instead (straight-through rounding, LSQ gradients), and emission inlines the
bodies. Kinds: :mod:`static` (StaticQuantize, StaticQuantizeClip), :mod:`granular` (GranQ),
:mod:`adaptive` (ASQ), :mod:`lut` (lookup-table weights: ASQ's POST, powers of two),
:mod:`bias` (int32 biases); shared constants and torch helpers live in
:mod:`common`. Importing this package registers them (and imports no torch).
"""

from zsq_onnx.quantizers import adaptive, bias, granular, lut, static  # noqa: F401  (registers the built-in kinds)
