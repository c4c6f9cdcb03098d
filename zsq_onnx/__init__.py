"""zsq-onnx: data-free (zero-shot) quantization of CNNs to deployable ONNX.

``convert`` runs every stage; ``load_model``, ``quantize`` and ``emit`` are the stages a caller
can run one by one, configured by a ``Recipe`` (or ``build_recipe``'s CLI-style options)."""

from zsq_onnx.errors import AccuracyGateError, BadInputError, NoBatchNormError, PeerFailedError, UnsupportedOpError, ZsqError
from zsq_onnx.gates import Gates
from zsq_onnx.io.preprocessing import Preprocessing
from zsq_onnx.pipeline import ConversionResult, LoadedModel, convert, load_model, quantize
from zsq_onnx.profiles import emit
from zsq_onnx.quantizers.spec import QuantSpec
from zsq_onnx.recipe import FinetuneConfig, Recipe, ReconstructConfig, SynthConfig, build_recipe
from zsq_onnx.validate.evaluate import Evaluation, LayerSqnr, Measures, ModelSizes

__all__ = [
    "AccuracyGateError", "BadInputError", "ConversionResult", "Evaluation", "FinetuneConfig", "Gates", "LayerSqnr", "LoadedModel", "Measures",
    "ModelSizes", "NoBatchNormError", "PeerFailedError", "Preprocessing", "QuantSpec", "Recipe", "ReconstructConfig", "SynthConfig", "UnsupportedOpError", "ZsqError",
    "build_recipe", "convert", "emit", "load_model", "quantize",
]
