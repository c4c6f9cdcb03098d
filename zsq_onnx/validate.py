"""ONNX Runtime sessions and the metrics that judge a quantized model against its FP32 source."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnxruntime as ort

from zsq_onnx import onnx_io
from zsq_onnx.data import load_dataset
from zsq_onnx.errors import BadInputError
from zsq_onnx.preprocessing import Preprocessing

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def make_session(model: onnx.ModelProto | str, provider: str = "cpu", level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> ort.InferenceSession:
    """An ORT session for a model (proto or path) on ``provider`` (cpu or cuda)."""
    if PROVIDERS.get(provider) not in ort.get_available_providers():
        raise BadInputError(f"provider {provider!r} is not available in this onnxruntime ({', '.join(ort.get_available_providers())})")
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 3
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(source, options, providers=[PROVIDERS[provider]])


def run_batched(session: ort.InferenceSession, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """First output of ``session`` over ``inputs`` in batches, concatenated."""
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: inputs[i : i + batch_size]})[0] for i in range(0, len(inputs), batch_size)])


def top1(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose arg-max equals the label."""
    return float((logits.argmax(axis=1) == labels).mean())


def agreement(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Fraction of samples where both models predict the same class."""
    return float((reference.argmax(axis=1) == candidate.argmax(axis=1)).mean())


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of ``candidate`` against ``reference``, in dB."""
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else float(10.0 * np.log10(signal / noise))


def latency_ms(session: ort.InferenceSession, sample: np.ndarray, repeats: int = 20) -> float:
    """Median wall time of one ``session.run`` on ``sample``, in milliseconds (after a warm-up)."""
    name = session.get_inputs()[0].name
    session.run(None, {name: sample})
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, {name: sample})
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


@dataclass(frozen=True)
class Evaluation:
    """FP32 vs quantized on one input set, in ORT; top-1 figures are None without labels."""

    dataset: str
    samples: int
    fp32_top1: float | None
    quantized_top1: float | None
    agreement: float
    output_sqnr_db: float
    fp32_latency_ms_b64: float
    quantized_latency_ms_b64: float

    def to_dict(self) -> dict:
        """Plain dict for the report."""
        return asdict(self)


def evaluate(fp32: onnx.ModelProto, quantized: onnx.ModelProto, inputs: np.ndarray, labels: np.ndarray | None, name: str, provider: str = "cpu") -> Evaluation:
    """Run both models over preprocessed ``inputs`` and compare them (and with ``labels``)."""
    fp_session, q_session = make_session(fp32, provider), make_session(quantized, provider)
    fp_logits, q_logits = run_batched(fp_session, inputs), run_batched(q_session, inputs)
    batch = np.resize(inputs, (64, *inputs.shape[1:])).astype(np.float32)
    return Evaluation(
        dataset=name,
        samples=len(inputs),
        fp32_top1=top1(fp_logits, labels) if labels is not None else None,
        quantized_top1=top1(q_logits, labels) if labels is not None else None,
        agreement=agreement(fp_logits, q_logits),
        output_sqnr_db=sqnr_db(fp_logits, q_logits),
        fp32_latency_ms_b64=latency_ms(fp_session, batch),
        quantized_latency_ms_b64=latency_ms(q_session, batch),
    )


def evaluate_files(model_path: str, data_path: str, reference_path: str | None = None, provider: str = "cpu", preprocessing: Preprocessing | None = None) -> dict:
    """Top-1 of an .onnx model on a dataset; with a reference model, agreement and SQNR too."""
    model = onnx_io.load_onnx(model_path)
    preprocessing = preprocessing or Preprocessing.from_metadata({p.key: p.value for p in model.metadata_props})
    if preprocessing is None:
        raise BadInputError(f"{model_path}: carries no zsq preprocessing metadata; pass --input-scale/--mean/--std")
    shape = model.graph.input[0].type.tensor_type.shape.dim
    data = load_dataset(data_path, (shape[2].dim_value, shape[3].dim_value) if len(shape) == 4 else None)
    inputs = preprocessing.apply(data.images)
    session = make_session(model, provider)
    logits = run_batched(session, inputs)
    batch = np.resize(inputs, (64, *inputs.shape[1:])).astype(np.float32)
    result: dict = {"model": model_path, "dataset": data.name, "samples": len(data), "top1": top1(logits, data.labels), "latency_ms_b64": latency_ms(session, batch)}
    if reference_path is not None:
        reference_session = make_session(onnx_io.load_onnx(reference_path), provider)
        reference_logits = run_batched(reference_session, inputs)
        result["reference"] = {
            "model": reference_path,
            "top1": top1(reference_logits, data.labels),
            "latency_ms_b64": latency_ms(reference_session, batch),
        }
        result["agreement"] = agreement(reference_logits, logits)
        result["output_sqnr_db"] = sqnr_db(reference_logits, logits)
    return result


def describe(result: dict) -> str:
    """Human-readable lines for :func:`evaluate_files`' result."""
    lines = [f"{result['model']}: top-1 {100 * result['top1']:.2f}% on {result['dataset']} ({result['samples']} samples), batch-64 latency {result['latency_ms_b64']:.2f} ms"]
    if "reference" in result:
        reference = result["reference"]
        lines.append(
            f"reference {reference['model']}: top-1 {100 * reference['top1']:.2f}%, latency {reference['latency_ms_b64']:.2f} ms; "
            f"agreement {100 * result['agreement']:.2f}%, output SQNR {result['output_sqnr_db']:.1f} dB"
        )
    return "\n".join(lines)
