"""Judging a quantized model against its FP32 source in ONNX Runtime: accuracy, agreement, latency."""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

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
from zsq_onnx.validate.diagnostics import layer_powers
from zsq_onnx.validate.metrics import agreement_count, power_ratio_db, signal_and_noise, top1_count, top5_count

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


@dataclass(frozen=True)
class LayerSqnr:
    """SQNR (dB) of one weighted layer's output (``tensor``) in the quantized model against FP32."""

    layer: str
    tensor: str
    sqnr_db: float


@dataclass(frozen=True)
class ModelSizes:
    """Serialized size in bytes of the FP32 model (None without one) and of the quantized model,
    as they were evaluated: the size of their files, less what loading changed in a foreign file
    (a free batch dimension, the record of its declared interface)."""

    fp32: int | None
    quantized: int


@dataclass(frozen=True)
class Evaluation:
    """A quantized model against its FP32 model on one input set (``dataset``, ``samples``
    inputs) in ORT on ``provider``: each model's measures, their top-1 agreement (fraction of
    inputs with the same top-1 class), the SQNR (dB) of the quantized logits against FP32's,
    per-layer SQNR and both sizes; ``execution`` says how ORT ran the quantized model for
    accuracy (see :func:`validation_execution`). Without an FP32 model (``zsq-onnx eval``
    without ``--reference``) ``fp32``, ``agreement`` and ``output_sqnr_db`` are None and
    ``layers`` is empty."""

    dataset: str
    samples: int
    provider: str
    fp32: Measures | None
    quantized: Measures
    agreement: float | None
    output_sqnr_db: float | None
    layers: tuple[LayerSqnr, ...]
    execution: dict[str, str]
    size_bytes: ModelSizes

    def to_dict(self) -> dict:
        """The evaluation's sections, in the conversion report and in ``zsq-onnx eval --json``
        alike: ``eval`` (what ran and how), ``fp32``, ``quantized`` (measures, agreement,
        output SQNR), ``layers`` and ``size_bytes``."""
        return {
            "eval": {"dataset": self.dataset, "samples": self.samples, "provider": self.provider, "execution": self.execution},
            "fp32": asdict(self.fp32) if self.fp32 is not None else None,
            "quantized": {**asdict(self.quantized), "agreement": self.agreement, "output_sqnr_db": self.output_sqnr_db},
            "layers": [asdict(layer) for layer in self.layers],
            "size_bytes": asdict(self.size_bytes),
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


def evaluate(fp32: ir.Model | None, quantized: ir.Model, inputs: np.ndarray, labels: np.ndarray | None, dataset: str, provider: str = "cpu") -> Evaluation:
    """Run both models over preprocessed ``inputs`` and compare them (and with ``labels``); on
    the CPU the quantized model runs as :func:`validation_execution` says, and is timed with
    the integer kernels it deploys on. Without ``fp32`` the quantized model is measured alone.

    In a torch.distributed group each rank runs its :func:`~zsq_onnx.distributed.part` of the
    inputs and the counts and power sums are added over ranks; rank 0 alone times the models."""
    execution, reason = _execution_on(quantized, provider)
    q_session = make_session(quantized, provider, execution=execution, purpose="evaluate")
    fp_session = make_session(fp32, provider, purpose="evaluate") if fp32 is not None else None
    count, agreeing, signal, noise, fp_top1, fp_top5, q_top1, q_top5 = _counts(fp_session, q_session, inputs, labels)
    compared = fp32 is not None
    layers = _layer_sqnrs(fp32, quantized, inputs[:LAYER_SQNR_SAMPLES]) if compared else ()
    latencies = distributed.from_main(lambda: _latencies(fp_session, inputs) + _latencies(_timing(quantized, provider, q_session, execution), inputs), 4)
    fraction = (lambda value: float(value / count)) if labels is not None else (lambda value: None)
    evaluation = Evaluation(
        dataset=dataset, samples=len(inputs), provider=provider,
        fp32=Measures(fraction(fp_top1), fraction(fp_top5), *latencies[:2]) if compared else None,
        quantized=Measures(fraction(q_top1), fraction(q_top5), *latencies[2:]),
        agreement=float(agreeing / count) if compared else None,
        output_sqnr_db=power_ratio_db(signal, noise) if compared else None,
        layers=layers,
        execution=execution_record(execution, reason),
        size_bytes=ModelSizes(serialized_bytes(fp32) if compared else None, serialized_bytes(quantized)),
    )
    logger.info("%s (%d samples): top-1 FP32 %s, quantized %s, agreement %s, output SQNR %s dB", dataset, len(inputs),
                _percent(evaluation.fp32.top1 if compared else None), _percent(evaluation.quantized.top1), _percent(evaluation.agreement),
                "n/a" if evaluation.output_sqnr_db is None else f"{evaluation.output_sqnr_db:.1f}")
    return evaluation


def serialized_bytes(model: ir.Model) -> int:
    """The size of ``model`` as an ONNX protobuf, as it is written to a file."""
    return ir.serde.serialize_model(model).ByteSize()


def _counts(fp_session: ort.InferenceSession | None, q_session: ort.InferenceSession, inputs: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
    """The :func:`_tallies` of both sessions' logits over ``inputs``, summed over ranks (each
    runs its part)."""
    mine = distributed.part(len(inputs))
    fp_logits, q_logits = (run_batched(session, inputs[mine]) if session is not None and mine.stop > mine.start else None for session in (fp_session, q_session))
    return np.sum(distributed.gather(_tallies(fp_logits, q_logits, labels[mine] if labels is not None else None)), axis=0)


def _tallies(fp_logits: np.ndarray | None, q_logits: np.ndarray | None, labels: np.ndarray | None) -> np.ndarray:
    """Counts and sums over one shard that add up across shards: samples, agreeing samples,
    signal and noise power of the logits, and FP32's and the quantized model's top-1 and top-5
    hits (0 without labels; FP32's figures 0 without FP32 logits)."""
    if q_logits is None:
        return np.zeros(8)
    if fp_logits is not None and fp_logits.shape != q_logits.shape:
        raise BadInputError(f"the reference model gives outputs of shape {fp_logits.shape[1:]}, the quantized model {q_logits.shape[1:]}; "
                            "a reference gives the same outputs")
    hits = [count(logits, labels) if labels is not None and logits is not None else 0 for logits in (fp_logits, q_logits) for count in (top1_count, top5_count)]
    compared = [agreement_count(fp_logits, q_logits), *signal_and_noise(fp_logits, q_logits)] if fp_logits is not None else [0, 0.0, 0.0]
    return np.array([len(q_logits), *compared, *hits], np.float64)


def _layer_sqnrs(fp32: ir.Model, quantized: ir.Model, inputs: np.ndarray) -> tuple[LayerSqnr, ...]:
    """Per weighted layer the SQNR of the quantized model's output against FP32's on ``inputs``,
    the signal and noise powers summed over ranks (each runs its part)."""
    layers, signal, noise = layer_powers(fp32, quantized, inputs[distributed.part(len(inputs))])
    totals = np.sum(distributed.gather(np.concatenate([signal, noise])), axis=0)
    signal, noise = totals[: len(layers)], totals[len(layers) :]
    return tuple(LayerSqnr(layer, tensor, power_ratio_db(s, n)) for (layer, tensor), s, n in zip(layers, signal, noise))


def _timing(model: ir.Model, provider: str, session: ort.InferenceSession, execution: Execution) -> ort.InferenceSession:
    """The session that times ``model``: as ORT CPU deploys it (integer kernels), reusing
    ``session`` when it already runs so."""
    if provider != "cpu" or execution == Execution.INTEGER:
        return session
    return make_session(model, provider, execution=Execution.INTEGER, purpose="latency")


def _latencies(session: ort.InferenceSession | None, inputs: np.ndarray) -> list[float]:
    """Median latency of ``session`` at batch 1 and 64 (``inputs`` repeated to fill the batch), in
    ms; NaN without a session."""
    if session is None:
        return [math.nan, math.nan]
    batch = np.resize(inputs, (64, *inputs.shape[1:])).astype(np.float32)
    return [latency_ms(session, batch[:1], repeats=50, budget_s=LATENCY_BUDGET_S), latency_ms(session, batch, budget_s=LATENCY_BUDGET_S)]


def evaluate_files(model_path: str, data_path: str, reference_path: str | None = None, provider: str = "cpu", preprocessing: Preprocessing | None = None) -> Evaluation:
    """:func:`evaluate` of an .onnx model against an FP32 ``reference_path`` (or alone) on a
    dataset of raw images, preprocessed as ``preprocessing`` or the model's metadata says."""
    model = _load(model_path)
    preprocessing = preprocessing or Preprocessing.from_metadata(model.metadata_props)
    if preprocessing is None:
        raise BadInputError(f"{model_path}: carries no zsq preprocessing metadata; pass --input-scale/--mean/--std")
    expected = onnx_io.image_input_shape(model, model_path)
    reference = _load(reference_path) if reference_path is not None else None
    if reference is not None:
        _check_reference(reference, reference_path, model, model_path)
    data = load_dataset(data_path, expected)
    return evaluate(reference, model, _model_inputs(data.images, preprocessing, expected, model_path), data.labels, data.name, provider)


def _load(path: str) -> ir.Model:
    """The .onnx file at ``path`` with a free batch size."""
    return free_batch(ir.serde.deserialize_model(onnx_io.load_onnx(path)), path)


def _check_reference(reference: ir.Model, reference_path: str, model: ir.Model, model_path: str) -> None:
    """BadInputError unless ``reference`` takes the inputs ``model`` takes and, where both
    declare them, gives outputs of the same shape."""
    expected = onnx_io.image_input_shape(model, model_path)
    if onnx_io.image_input_shape(reference, reference_path) != expected:
        raise BadInputError(f"{reference_path}: takes inputs of shape {onnx_io.image_input_shape(reference, reference_path)}, "
                            f"{model_path} {expected}; a reference takes the same inputs")
    outputs = [tuple(list(m.graph.outputs[0].shape or [None])[1:]) for m in (reference, model)]
    if all(dims and all(isinstance(d, int) for d in dims) for dims in outputs) and outputs[0] != outputs[1]:
        raise BadInputError(f"{reference_path}: gives outputs of shape {outputs[0]}, {model_path} {outputs[1]}; a reference gives the same outputs")


def file_report(evaluation: Evaluation, model_path: str, reference_path: str | None) -> dict:
    """``zsq-onnx eval --json``'s document: the files (``model``, ``reference``), then the
    evaluation's sections, as a conversion report has them (see :meth:`Evaluation.to_dict`)."""
    return {"model": model_path, "reference": reference_path, **evaluation.to_dict()}


def _model_inputs(images: np.ndarray, preprocessing: Preprocessing, expected: tuple[int, ...], model_path: str) -> np.ndarray:
    """Raw NHWC ``images`` (already checked against the model's shape ``expected``, (C, H, W), by
    :func:`load_dataset`) preprocessed; BadInputError when the preprocessing has other channels."""
    if len(preprocessing.mean) != expected[0]:
        raise BadInputError(f"{model_path}: takes {expected[0]} input channel(s), but the preprocessing (--mean/--std, or the model's metadata) has {len(preprocessing.mean)}")
    return preprocessing.apply(images)


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def describe(evaluation: Evaluation, model_path: str, reference_path: str | None) -> str:
    """Human-readable lines for :func:`evaluate_files`' evaluation."""
    def line(label: str, measures: Measures, size: int | None) -> str:
        return (f"{label}: top-1 {_percent(measures.top1)}  top-5 {_percent(measures.top5)}  latency b1 {measures.latency_ms_b1:.2f} ms, "
                f"b64 {measures.latency_ms_b64:.2f} ms  size {size / 1024:.1f} KiB")

    execution = evaluation.execution
    lines = [f"{evaluation.dataset} ({evaluation.samples} samples, {evaluation.provider}; ran as {execution['accuracy']}: {execution['why']})",
             line(model_path, evaluation.quantized, evaluation.size_bytes.quantized)]
    if evaluation.fp32 is not None:
        lines.append(line(reference_path, evaluation.fp32, evaluation.size_bytes.fp32))
        lines.append(f"agreement {_percent(evaluation.agreement)}, output SQNR {evaluation.output_sqnr_db:.1f} dB")
        lines += [f"  {layer.layer:<40} SQNR {layer.sqnr_db:6.1f} dB" for layer in evaluation.layers]
    return "\n".join(lines)
