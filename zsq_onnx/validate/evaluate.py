"""Judging a quantized model against its FP32 source in ONNX Runtime: accuracy, agreement, latency."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx_ir as ir
import onnxruntime as ort

from zsq_onnx import distributed
from zsq_onnx.errors import BadInputError
from zsq_onnx.executors.ort_graph import optimized_graph, saturating_kernels
from zsq_onnx.executors.runtime import Execution, describe_execution, latency_ms, make_session, run_batched
from zsq_onnx.io import onnx_io
from zsq_onnx.io.data import load_dataset
from zsq_onnx.io.foreign import free_batch
from zsq_onnx.io.preprocessing import Preprocessing
from zsq_onnx.profiles import METADATA_KEY as PROFILE_KEY
from zsq_onnx.profiles import ORT_CPU
from zsq_onnx.validate.diagnostics import layer_powers, layer_sqnr
from zsq_onnx.validate.metrics import agreement, agreement_count, power_ratio_db, signal_and_noise, sqnr_db, top1, top1_count, top5, top5_count

logger = logging.getLogger(__name__)

LAYER_SQNR_SAMPLES = 256
LATENCY_BUDGET_S = 2.0  # per model and batch size


@dataclass(frozen=True)
class Measures:
    """One model on one input set in ORT: top-1 and top-5 accuracy (fractions; None without
    labels) and median latency at batch 1 and 64."""

    top1: float | None
    top5: float | None
    latency_ms_b1: float
    latency_ms_b64: float


def measure(session: ort.InferenceSession, inputs: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, Measures]:
    """Logits of ``session`` over ``inputs``, and its :class:`Measures`."""
    logits = run_batched(session, inputs)
    return logits, Measures(top1(logits, labels) if labels is not None else None, top5(logits, labels) if labels is not None else None, *_latencies(session, inputs))


@dataclass(frozen=True)
class LayerSqnr:
    """SQNR (dB) of one weighted layer's output (``tensor``) in the quantized model against FP32."""

    layer: str
    tensor: str
    sqnr_db: float


@dataclass(frozen=True)
class Evaluation:
    """FP32 vs quantized on one input set (``dataset``, ``samples`` inputs), in ORT: each model's
    measures, their top-1 agreement (fraction of inputs with the same top-1 class), the SQNR (dB)
    of the quantized logits against FP32's, and per-layer SQNR; ``execution`` says how ORT ran
    the quantized model for accuracy (see :func:`validation_execution`)."""

    dataset: str
    samples: int
    fp32: Measures
    quantized: Measures
    agreement: float
    output_sqnr_db: float
    layers: tuple[LayerSqnr, ...]
    execution: dict[str, str]

    def to_dict(self) -> dict:
        """The report's sections on the evaluation: ``eval`` (with how it ran), ``fp32``,
        ``quantized`` (measures, agreement, output SQNR) and ``layers``."""
        return {
            "eval": {"dataset": self.dataset, "samples": self.samples, "execution": self.execution},
            "fp32": asdict(self.fp32),
            "quantized": {**asdict(self.quantized), "agreement": self.agreement, "output_sqnr_db": self.output_sqnr_db},
            "layers": [asdict(layer) for layer in self.layers],
        }


def validation_execution(model: ir.Model) -> tuple[Execution, str]:
    """How ORT CPU runs a quantized model to judge its accuracy, and why: with the integer kernels
    it deploys on where the model targets ORT CPU (zsq's ``ort-cpu`` or a file of no zsq profile)
    and none of them can saturate; else as float QDQ, which is what TensorRT, ORT CUDA and the
    simulation compute. Either way the figures are the same on every x86 CPU."""
    profile = model.metadata_props.get(PROFILE_KEY)
    if profile not in (None, ORT_CPU.name):
        return Execution.FLOAT_QDQ, f"profile {profile} is validated as the QDQ graph its target computes, not as ORT CPU's integer kernels"
    saturating = saturating_kernels(optimized_graph(model, Execution.INTEGER))
    if saturating:
        return Execution.FLOAT_QDQ, (f"{len(saturating)} integer kernel(s) with full-range int8 weights would saturate on x86 CPUs without VNNI "
                                     f"(first: {saturating[0]}): validated as QDQ in float, which VNNI CPUs compute")
    return Execution.INTEGER, "the integer kernels ORT CPU deploys; none can saturate"


def _execution_on(model: ir.Model, provider: str) -> tuple[Execution, str]:
    """:func:`validation_execution` on the CPU; float QDQ elsewhere (the provider runs QDQ itself)."""
    return validation_execution(model) if provider == "cpu" else (Execution.FLOAT_QDQ, f"{provider} provider")


def validation_session(model: ir.Model | str, provider: str = "cpu") -> ort.InferenceSession:
    """A session that runs a quantized model (IR or .onnx path) as :func:`validation_execution`
    says (on the CPU)."""
    model = ir.load(model) if isinstance(model, str) else model
    return make_session(model, provider, execution=_execution_on(model, provider)[0], purpose="evaluate")


def execution_record(execution: Execution, reason: str) -> dict[str, str]:
    """The report's account of how an evaluation ran."""
    return {"accuracy": describe_execution(execution), "why": reason, "latency": describe_execution(Execution.INTEGER), "layers": describe_execution(Execution.FLOAT_QDQ)}


def evaluate(fp32: ir.Model, quantized: ir.Model, inputs: np.ndarray, labels: np.ndarray | None, name: str, provider: str = "cpu") -> Evaluation:
    """Run both models over preprocessed ``inputs`` and compare them (and with ``labels``); on
    the CPU the quantized model runs as :func:`validation_execution` says, and is timed with
    the integer kernels it deploys on.

    In a torch.distributed group each rank runs its :func:`~zsq_onnx.distributed.part` of the
    inputs and the counts and power sums are added over ranks; rank 0 alone times the models."""
    mine = distributed.part(len(inputs))
    execution, reason = _execution_on(quantized, provider)
    fp_session, q_session = make_session(fp32, provider, purpose="evaluate"), make_session(quantized, provider, execution=execution, purpose="evaluate")
    fp_logits, q_logits = (run_batched(session, inputs[mine]) if mine.stop > mine.start else None for session in (fp_session, q_session))
    layer_inputs = inputs[:LAYER_SQNR_SAMPLES]
    layers, layer_signal, layer_noise = layer_powers(fp32, quantized, layer_inputs[distributed.part(len(layer_inputs))])
    local = np.concatenate([_tallies(fp_logits, q_logits, labels[mine] if labels is not None else None), layer_signal, layer_noise])
    totals = np.sum(distributed.gather(local), axis=0)
    count, agreeing, signal, noise, fp_top1, fp_top5, q_top1, q_top5 = totals[:8]
    layer_signal, layer_noise = totals[8 : 8 + len(layers)], totals[8 + len(layers) :]
    latencies = distributed.from_main(lambda: _latencies(fp_session, inputs) + _latencies(_timing(quantized, provider, q_session, execution), inputs), 4)
    fraction = (lambda value: float(value / count)) if labels is not None else (lambda value: None)
    fp_measures = Measures(fraction(fp_top1), fraction(fp_top5), *latencies[:2])
    q_measures = Measures(fraction(q_top1), fraction(q_top5), *latencies[2:])
    layer_sqnrs = tuple(LayerSqnr(layer, tensor, power_ratio_db(s, n)) for (layer, tensor), s, n in zip(layers, layer_signal, layer_noise))
    evaluation = Evaluation(name, len(inputs), fp_measures, q_measures, float(agreeing / count), power_ratio_db(signal, noise), layer_sqnrs,
                            execution_record(execution, reason))
    logger.info("%s (%d samples): top-1 FP32 %s, quantized %s, agreement %s, output SQNR %.1f dB", name, len(inputs),
                _percent(fp_measures.top1), _percent(q_measures.top1), _percent(evaluation.agreement), evaluation.output_sqnr_db)
    return evaluation


def _tallies(fp_logits: np.ndarray | None, q_logits: np.ndarray | None, labels: np.ndarray | None) -> np.ndarray:
    """Counts and sums over one shard that add up across shards: samples, agreeing samples,
    signal and noise power of the logits, and FP32's and the quantized model's top-1 and top-5
    hits (0 without labels)."""
    if fp_logits is None:
        return np.zeros(8)
    hits = [count(logits, labels) if labels is not None else 0 for logits in (fp_logits, q_logits) for count in (top1_count, top5_count)]
    return np.array([len(fp_logits), agreement_count(fp_logits, q_logits), *signal_and_noise(fp_logits, q_logits), *hits], np.float64)


def _timing(model: ir.Model, provider: str, session: ort.InferenceSession, execution: Execution) -> ort.InferenceSession:
    """The session that times ``model``: as ORT CPU deploys it (integer kernels), reusing
    ``session`` when it already runs so."""
    if provider != "cpu" or execution == Execution.INTEGER:
        return session
    return make_session(model, provider, execution=Execution.INTEGER, purpose="latency")


def _latencies(session: ort.InferenceSession, inputs: np.ndarray) -> list[float]:
    """Median latency of ``session`` at batch 1 and 64 (``inputs`` repeated to fill the batch), in ms."""
    batch = np.resize(inputs, (64, *inputs.shape[1:])).astype(np.float32)
    return [latency_ms(session, batch[:1], repeats=50, budget_s=LATENCY_BUDGET_S), latency_ms(session, batch, budget_s=LATENCY_BUDGET_S)]


def evaluate_files(model_path: str, data_path: str, reference_path: str | None = None, provider: str = "cpu", preprocessing: Preprocessing | None = None) -> dict:
    """An .onnx model's top-1/top-5 and latency on a dataset; with a reference model, the same for
    it plus agreement, output SQNR, per-layer SQNR and file sizes."""
    model = free_batch(ir.serde.deserialize_model(onnx_io.load_onnx(model_path)), model_path)
    preprocessing = preprocessing or Preprocessing.from_metadata(model.metadata_props)
    if preprocessing is None:
        raise BadInputError(f"{model_path}: carries no zsq preprocessing metadata; pass --input-scale/--mean/--std")
    expected = onnx_io.image_input_shape(model, model_path)
    reference = free_batch(ir.serde.deserialize_model(onnx_io.load_onnx(reference_path)), reference_path) if reference_path is not None else None
    if reference is not None and onnx_io.image_input_shape(reference, reference_path) != expected:
        raise BadInputError(f"{reference_path}: takes inputs of shape {onnx_io.image_input_shape(reference, reference_path)}, "
                            f"{model_path} {expected}; a reference takes the same inputs")
    data = load_dataset(data_path, expected)
    inputs = _model_inputs(data.images, preprocessing, expected, model_path)
    execution, reason = _execution_on(model, provider)
    logits, measures = measure(make_session(model, provider, execution=execution, purpose="evaluate"), inputs, data.labels)
    logger.info("%s on %s (%d samples): top-1 %s, latency b1 %.2f ms", model_path, data.name, len(data), _percent(measures.top1), measures.latency_ms_b1)
    result: dict = {"model": model_path, "dataset": data.name, "samples": len(data), "provider": provider, **asdict(measures), "size_bytes": Path(model_path).stat().st_size,
                    "execution": execution_record(execution, reason)}
    if reference is not None:
        reference_logits, reference_measures = measure(make_session(reference, provider, purpose="evaluate"), inputs, data.labels)
        if reference_logits.shape != logits.shape:
            raise BadInputError(f"{reference_path}: gives outputs of shape {reference_logits.shape[1:]}, {model_path} {logits.shape[1:]}; "
                                "a reference gives the same outputs")
        result["reference"] = {"model": reference_path, **asdict(reference_measures), "size_bytes": Path(reference_path).stat().st_size}
        result["agreement"] = agreement(reference_logits, logits)
        result["output_sqnr_db"] = sqnr_db(reference_logits, logits)
        result["layers"] = layer_sqnr(reference, model, inputs[:LAYER_SQNR_SAMPLES])
    return result


def _model_inputs(images: np.ndarray, preprocessing: Preprocessing, expected: tuple[int, ...], model_path: str) -> np.ndarray:
    """Raw NHWC ``images`` (already checked against the model's shape ``expected``, (C, H, W), by
    :func:`load_dataset`) preprocessed; BadInputError when the preprocessing has other channels."""
    if len(preprocessing.mean) != expected[0]:
        raise BadInputError(f"{model_path}: takes {expected[0]} input channel(s), but the preprocessing (--mean/--std, or the model's metadata) has {len(preprocessing.mean)}")
    return preprocessing.apply(images)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def describe(result: dict) -> str:
    """Human-readable lines for :func:`evaluate_files`' result."""
    def line(label: str, measures: dict) -> str:
        return (f"{label}: top-1 {_percent(measures['top1'])}  top-5 {_percent(measures['top5'])}  latency b1 {measures['latency_ms_b1']:.2f} ms, "
                f"b64 {measures['latency_ms_b64']:.2f} ms  size {measures['size_bytes'] / 1024:.1f} KiB")

    lines = [f"{result['dataset']} ({result['samples']} samples, {result['provider']}; ran as {result['execution']['accuracy']}: {result['execution']['why']})",
             line(result["model"], result)]
    if "reference" in result:
        lines.append(line(result["reference"]["model"], result["reference"]))
        lines.append(f"agreement {_percent(result['agreement'])}, output SQNR {result['output_sqnr_db']:.1f} dB")
        lines += [f"  {layer['layer']:<40} SQNR {layer['sqnr_db']:6.1f} dB" for layer in result["layers"]]
    return "\n".join(lines)
