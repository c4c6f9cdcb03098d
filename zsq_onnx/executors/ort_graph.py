"""What ONNX Runtime CPU actually runs: the graph it optimizes a model into, the integer kernels
in it that can saturate, and the CPU features that decide which kernels it picks.

The check reads the optimized graph, not numbers: on x86 CPUs without VNNI (AVX2 only, AMD Zen 3
among them) ORT's u8 x s8 kernels add pairs of products in int16 with saturation, so an integer
kernel whose int8 weights reach beyond ±64 computes another result than its QDQ graph there and
the same result on a VNNI CPU. Reading the graph tells on every machine alike."""

from __future__ import annotations

import logging
import platform
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
from onnx import numpy_helper

from zsq_onnx.executors.runtime import Execution, session_options

logger = logging.getLogger(__name__)

# integer kernels ORT CPU fuses QDQ groups into, and the input index of their weights
INTEGER_KERNEL_WEIGHT = {"QLinearConv": 3, "QLinearMatMul": 3, "QGemm": 3, "MatMulIntegerToFloat": 1, "ConvInteger": 1, "MatMulInteger": 1, "DynamicQuantizeMatMul": 1}
SAFE_INT8_WEIGHT = 64  # 2 x 255 x 64 fits int16: u8 x s8 pair sums cannot saturate
CPU_FEATURES = {"avx2": ("avx2",), "avx512": ("avx512f",), "vnni": ("avx512_vnni", "avx_vnni"), "amx": ("amx_int8", "amx_tile")}


def optimized_graph(model: ir.Model | onnx.ModelProto, execution: Execution = Execution.INTEGER,
                    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL) -> onnx.ModelProto:
    """The graph ORT CPU runs for ``model`` under ``execution`` at ``level`` (its optimized model)."""
    proto = ir.serde.serialize_model(model) if isinstance(model, ir.Model) else model
    with tempfile.TemporaryDirectory() as folder:
        options = session_options(execution, level)
        options.optimized_model_filepath = str(Path(folder) / "optimized.onnx")
        ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return onnx.load(options.optimized_model_filepath)


def integer_kernels(graph: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes of an optimized graph that run as integer kernels with weights."""
    return [node for node in graph.graph.node if node.op_type in INTEGER_KERNEL_WEIGHT]


def saturating_kernels(graph: onnx.ModelProto) -> list[str]:
    """The integer kernels of an optimized graph (see :func:`optimized_graph`) whose int8 weights
    reach beyond ±64: their u8 x s8 pair sums saturate int16 on x86 CPUs without VNNI. Named as
    ``op_type name (largest |weight|)``."""
    initializers = {tensor.name: tensor for tensor in graph.graph.initializer}
    found = []
    for node in integer_kernels(graph):
        index = INTEGER_KERNEL_WEIGHT[node.op_type]
        weight = initializers.get(node.input[index]) if len(node.input) > index else None
        if weight is None or weight.data_type != onnx.TensorProto.INT8:
            continue
        widest = int(np.abs(numpy_helper.to_array(weight).astype(np.int16)).max(initial=0))
        if widest > SAFE_INT8_WEIGHT:
            found.append(f"{node.op_type} {node.name or node.output[0]} (|w| up to {widest})")
    return found


def cpu_features() -> dict[str, object]:
    """The CPU and the instruction sets that decide ORT CPU's integer kernels (from
    /proc/cpuinfo where there is one)."""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "flags" and not flags:
                flags = set(value.split())
            elif key.strip() == "model name":
                model = value.strip()
    return {"model": model, "machine": platform.machine(), **{name: any(flag in flags for flag in names) for name, names in CPU_FEATURES.items()}}


def runtime_record() -> dict[str, object]:
    """The ORT version and CPU features a report's measurements ran with."""
    return {"onnxruntime": ort.__version__, "cpu": cpu_features()}
