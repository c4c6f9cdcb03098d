"""Every profile converts every zoo model that runs here, and the result loads in ORT.

The net for profile changes: a crash on a residual graph once reached main because no test ran a
profile on one. Models with weights here use them (digits-cnn's embedded ones, the CIFAR
ResNets' from the assets, EfficientNet-Lite0's from its package); the torchvision backbones get
random weights and 32x32 inputs (they pool globally); bias correction (one ORT run per layer)
runs on digits-cnn and the CIFAR ResNets only (Lite0's is tested on real data elsewhere). Calibration uses two Gaussian samples:
what is checked is the graph each profile emits, not its accuracy (the benches measure that).
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch

from tests.conftest import ASSETS, randomize_batchnorm, to_proto
from zsq_onnx.errors import BadInputError
from zsq_onnx.executors.ort_graph import optimized_graph, saturating_kernels
from zsq_onnx.executors.runtime import Execution, make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.pipeline import quantize
from zsq_onnx.plan.calibrate import with_outputs
from zsq_onnx.profiles import PROFILES, emit
from zsq_onnx.recipe import build_recipe
from zsq_onnx.validate.diagnostics import ort_fusion
from zsq_onnx.validate.evaluate import validation_execution

CIFAR_WEIGHTS = {"resnet20-cifar10": "resnet20_cifar10.pt", "resnet32-cifar10": "resnet32_cifar10.pt"}
FUSED_MODELS = ("digits-cnn", *CIFAR_WEIGHTS, "efficientnet-lite0")
TORCHVISION = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0")
MODELS = (*FUSED_MODELS, *TORCHVISION)
LEVELS = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)


@functools.cache
def _fp32(name: str) -> onnx.ModelProto:
    """The FP32 export of zoo model ``name``; skips when its weights or extra are absent here."""
    from zsq_onnx.io.export import export_module
    from zsq_onnx.models import get_entry, torchvision_zoo
    from zsq_onnx.pipeline import load_model

    if name in CIFAR_WEIGHTS:
        path = ASSETS / "models" / CIFAR_WEIGHTS[name]
        if not path.exists():
            pytest.skip(f"assets not found under {ASSETS} (set ZSQ_ASSETS)")
        return load_model(name, path).model
    if name in TORCHVISION:
        try:
            module = torchvision_zoo.build_module(name)
        except BadInputError:
            pytest.skip('the torchvision entries need the extra: pip install "zsq-onnx[torchvision]"')
        torch.manual_seed(0)
        randomize_batchnorm(module)
        entry = get_entry(name)
        return export_module(module.eval(), (3, 32, 32), entry.preprocessing, name)
    try:
        return load_model(name).model
    except BadInputError as exc:
        pytest.skip(str(exc))


def _inputs(model: ir.Model, count: int, seed: int) -> np.ndarray:
    shape = list(model.graph.inputs[0].shape)[1:]
    return np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)


@functools.cache
def _converted(name: str, profile: str) -> tuple[ir.Model, ir.Model]:
    """(quantized graph with zsq functions, emitted model) of ``name`` for ``profile`` at W8A8."""
    fp32 = _fp32(name)
    quantized = quantize(fp32, [_inputs(fp32, 2, 0)], build_recipe(profile=profile))
    return quantized, emit(quantized)


@pytest.fixture(scope="module", autouse=True)
def release_models():
    yield
    _converted.cache_clear()
    _fp32.cache_clear()


@pytest.mark.slow
@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("name", MODELS)
def test_profile_converts_model_and_it_loads(name, profile):
    _, emitted = _converted(name, profile)
    onnx.checker.check_model(to_proto(emitted), full_check=True)
    inputs = _inputs(emitted, 2, 1)
    for level in LEVELS:
        logits = make_session(emitted, level=level, execution=Execution.INTEGER).run(None, {emitted.graph.inputs[0].name: inputs})[0]
        assert logits.shape[0] == 2 and np.isfinite(logits).all()


@pytest.mark.slow
@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("name", MODELS)
def test_emitted_model_is_exact_on_any_cpu_where_promised(name, profile):
    """Read from the graph ORT CPU runs, so it holds on every machine: `sim` and `ort-cpu` (7-bit
    weights) emit no integer kernel whose u8 x s8 sums saturate without VNNI; `tensorrt` and
    `ort-cuda` models, which do run such kernels on ORT CPU, are validated as float QDQ."""
    _, emitted = _converted(name, profile)
    if profile in ("sim", "ort-cpu"):
        assert saturating_kernels(optimized_graph(emitted)) == []
        assert validation_execution(emitted)[0] == (Execution.INTEGER if profile == "ort-cpu" else Execution.FLOAT_QDQ)
    else:
        assert validation_execution(emitted)[0] == Execution.FLOAT_QDQ


@pytest.mark.slow
@pytest.mark.parametrize("profile", [profile for profile in PROFILES if not PROFILES[profile].symmetric_int8_only])
@pytest.mark.parametrize("name", MODELS)
def test_lookup_table_weights_convert_and_load(name, profile):
    """POST weights (codes, Gather, Mul feeding float layers) on every profile that takes them
    (bias correction of such weights is tested in tests/passes/test_lut_weights.py)."""
    fp32 = _fp32(name)
    recipe = build_recipe(bits="W4A8", profile=profile, weight_quantizer="post", bias_correction=False)
    emitted = emit(quantize(fp32, [_inputs(fp32, 2, 0)], recipe))
    onnx.checker.check_model(to_proto(emitted), full_check=True)
    assert sum(node.op_type == "Gather" for node in emitted.graph) >= 1
    inputs = _inputs(emitted, 2, 1)
    for level in LEVELS:
        logits = make_session(emitted, level=level, execution=Execution.INTEGER).run(None, {emitted.graph.inputs[0].name: inputs})[0]
        assert logits.shape[0] == 2 and np.isfinite(logits).all()


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["tensorrt", "ort-cuda"])
@pytest.mark.parametrize("name", MODELS)
def test_tensorrt_constraints_hold(name, profile):
    emitted = to_proto(_converted(name, profile)[1])
    constants = {t.name: onnx.numpy_helper.to_array(t) for t in emitted.graph.initializer}
    qdq = [n for n in emitted.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        assert node.input[1] in constants, f"{node.name}: scales must be constant"
        if len(node.input) > 2:
            assert not constants[node.input[2]].any(), f"{node.name}: zero points must be 0"
            assert constants[node.input[2]].dtype == np.int8, f"{node.name}: int8 activations and weights"
        else:
            assert node.op_type == "DequantizeLinear" and constants[node.input[0]].dtype == np.int32, f"{node.name}: only int32 biases omit the zero point"


@pytest.mark.slow
@pytest.mark.parametrize("name", FUSED_MODELS)
def test_ort_cpu_runs_every_weighted_layer_as_an_integer_kernel(name):
    _, emitted = _converted(name, "ort-cpu")
    fusion = ort_fusion(emitted)
    assert fusion["unfused"] == 0 and fusion["fused"] > 0
    assert {"QLinearGlobalAveragePool", "QLinearAveragePool"} & set(fusion["integer_ops"]), "the pool runs on integers too"
    assert not [name for name, value in emitted.graph.initializers.items() if value.dtype == ir.DataType.FLOAT and len(value.shape) >= 2], "weights stay integer"


def _static_quantizer_scales(quantized: onnx.ModelProto) -> dict[str, float]:
    constants = {t.name: t for t in quantized.graph.initializer}
    return {
        n.output[0]: float(onnx.numpy_helper.to_array(constants[n.input[1]]).max())
        for n in quantized.graph.node
        if n.domain == "zsq" and n.op_type.startswith("Static") and n.input[0] not in constants
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_sim_ort_equals_torch_at_every_level(name):
    """ORT at every level computes what the torch simulation computes: the first quantizer
    (same input in both) within 1 LSB, and the logits within 5% of their range. Deeper
    quantizers are not compared level by level: float sums in another order flip a rounding
    now and then, and over tens of layers a flipped level moves later ones by several LSB."""
    quantized, emitted = _converted(name, "sim")
    scales = _static_quantizer_scales(to_proto(quantized))
    first, output = next(iter(scales)), emitted.graph.outputs[0].name
    inputs = _inputs(emitted, 2, 1) * 0.5
    input_name = emitted.graph.inputs[0].name
    with torch.no_grad():
        expected = {k: v.numpy() for k, v in TorchGraph(quantized).run({input_name: torch.from_numpy(inputs)}, [first, output]).items()}
    for level in LEVELS:
        actual = dict(zip([first, output], make_session(with_outputs(emitted, [first]), level=level, execution=Execution.INTEGER).run([first, output], {input_name: inputs})))
        assert np.abs(expected[first] - actual[first]).max() <= scales[first] * 1.001, f"{first} at {level}"
        assert np.abs(expected[output] - actual[output]).max() <= 0.05 * np.abs(expected[output]).max(), f"logits at {level}"
