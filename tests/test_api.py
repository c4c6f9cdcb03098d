"""The public API: what ``import zsq_onnx`` gives, without importing torch."""

from __future__ import annotations

import subprocess
import sys

import zsq_onnx


def test_public_names_resolve():
    assert {"convert", "load_model", "quantize", "emit", "build_recipe", "Recipe", "QuantSpec", "SynthConfig", "FinetuneConfig", "Preprocessing",
            "Evaluation", "ConversionResult", "ZsqError", "BadInputError"} <= set(zsq_onnx.__all__)
    assert all(getattr(zsq_onnx, name) is not None for name in zsq_onnx.__all__)


def test_import_does_not_load_torch():
    code = "import sys, zsq_onnx; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
