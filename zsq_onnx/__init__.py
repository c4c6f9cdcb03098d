"""zsq-onnx: data-free (zero-shot) quantization of CNNs to deployable ONNX."""

from zsq_onnx.pipeline import ConversionResult, LoadedModel, convert, load_model
from zsq_onnx.recipe import QuantSpec, Recipe, SynthConfig

__all__ = ["ConversionResult", "LoadedModel", "QuantSpec", "Recipe", "SynthConfig", "convert", "load_model"]
