"""Deployment profiles: every emitted model passes the full checker and loads in ORT; TensorRT's
constraints hold; ORT output equals the torch simulation within 1 LSB at every bit width."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort
import pytest
import torch

from tests.conftest import to_proto
from zsq_onnx.errors import BadInputError
from zsq_onnx.executors.ort_graph import optimized_graph, saturating_kernels
from zsq_onnx.executors.runtime import Execution, make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.models.digits_cnn import digits_split
from zsq_onnx.pipeline import quantize
from zsq_onnx.plan.calibrate import with_outputs
from zsq_onnx.profiles import emit
from zsq_onnx.recipe import build_recipe
from zsq_onnx.synth.distill import distill


@pytest.fixture(scope="module")
def setting(digits):
    _, model, entry = digits
    batches = distill(model, entry.input_shape, build_recipe(samples=64, synth_steps=30).synth, 0, progress=False).batches
    inputs = entry.preprocessing.apply(digits_split("test").images[:128])
    return model, batches, inputs


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {t.name: t for t in model.graph.initializer}


@pytest.mark.parametrize("profile", ["ort-cpu", "tensorrt", "ort-cuda", "sim"])
def test_every_profile_passes_full_check_and_loads(setting, profile):
    model, batches, inputs = setting
    emitted = to_proto(emit(quantize(model, batches, build_recipe(profile=profile))))
    onnx.checker.check_model(emitted, full_check=True)
    assert not emitted.functions and {n.domain for n in emitted.graph.node} == {""}
    assert make_session(emitted).run(None, {"input": inputs[:4]})[0].shape == (4, 10)


def test_tensorrt_graph_is_symmetric_int8_with_constant_scales(setting):
    model, batches, _ = setting
    emitted = to_proto(emit(quantize(model, batches, build_recipe(profile="tensorrt"))))
    inits = _initializers(emitted)
    qdq = [n for n in emitted.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq
    for node in qdq:
        assert node.input[1] in inits, "scales must be constant initializers"
        if len(node.input) > 2:
            assert not onnx.numpy_helper.to_array(inits[node.input[2]]).any(), "zero points must be 0"
    for node in (n for n in emitted.graph.node if n.op_type == "QuantizeLinear"):
        assert inits[node.input[2]].data_type == onnx.TensorProto.INT8
        assert onnx.numpy_helper.to_array(inits[node.input[1]]).ndim == 0, "activations per tensor"
    weights = [n for n in emitted.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert len(weights) == 4
    assert all(onnx.numpy_helper.to_array(inits[n.input[1]]).ndim == 1 for n in weights), "weights per channel"


def test_tensorrt_refuses_low_bits_and_asymmetry():
    with pytest.raises(BadInputError, match="symmetric int8"):
        build_recipe(bits="W4A8", profile="tensorrt")
    with pytest.raises(BadInputError, match="symmetric int8"):
        build_recipe(profile="ort-cuda", act_symmetric=False)


def _quantizer_outputs(model: onnx.ModelProto) -> dict[str, float]:
    inits = _initializers(model)
    return {
        n.output[0]: float(onnx.numpy_helper.to_array(inits[n.input[1]]).max())
        for n in model.graph.node
        if n.domain == "zsq" and n.op_type.startswith("Static") and n.input[0] not in inits
    }


def _assert_ort_equals_torch(quantized: ir.Model, emitted: onnx.ModelProto, inputs: np.ndarray) -> None:
    """ORT's integer kernels compute what the torch simulation computes: every quantizer's output
    within 1 LSB, but for at most 1% of values, which may sit one level of a coarser quantizer
    upstream away (a conv output on a rounding tie flips a 4-bit level in one executor, and the
    8-bit quantizer after a pool reads it as many of its own LSBs)."""
    scales = _quantizer_outputs(to_proto(quantized))
    names = list(scales)
    with torch.no_grad():
        expected = TorchGraph(quantized).run({"input": torch.from_numpy(inputs)}, names)
    actual = make_session(with_outputs(ir.serde.deserialize_model(emitted), names), execution=Execution.INTEGER).run(names, {"input": inputs})
    coarsest = max(scales.values())
    for name, value in zip(names, actual):
        difference = np.abs(expected[name].numpy() - value)
        assert (difference > scales[name] * 1.001).mean() <= 0.01, name
        assert difference.max() <= coarsest * 1.001, name


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_sim_ort_equals_torch_within_one_lsb(setting, bits):
    model, batches, inputs = setting
    quantized = quantize(model, batches, build_recipe(wbits=bits, abits=bits, profile="sim", keep_ends_8bit=False))
    emitted = to_proto(emit(quantized))
    if bits == 4:
        types = {t.data_type for t in emitted.graph.initializer}
        assert onnx.TensorProto.INT4 in types and onnx.TensorProto.UINT4 in types
    _assert_ort_equals_torch(quantized, emitted, inputs)


def test_ort_cpu_int4_activations_with_int8_weights_run_at_default_level(setting):
    model, batches, inputs = setting
    quantized = quantize(model, batches, build_recipe(bits="W8A4", profile="ort-cpu"))
    emitted = to_proto(emit(quantized))
    assert not {onnx.TensorProto.INT4, onnx.TensorProto.UINT4} & {t.data_type for t in emitted.graph.initializer}
    session = make_session(emitted, execution=Execution.INTEGER)
    assert np.isfinite(session.run(None, {"input": inputs})[0]).all()
    _assert_ort_equals_torch(quantized, emitted, inputs)


def test_sim_int4_activations_with_int8_weights_run_at_default_level(setting):
    model, batches, inputs = setting
    quantized = quantize(model, batches, build_recipe(bits="W8A4", profile="sim"))
    emitted = to_proto(emit(quantized))
    assert np.isfinite(make_session(emitted, execution=Execution.INTEGER).run(None, {"input": inputs})[0]).all()
    _assert_ort_equals_torch(quantized, emitted, inputs)


@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu and a CUDA device")
def test_ort_cuda_runs_on_the_cuda_provider(setting):
    model, batches, inputs = setting
    emitted = to_proto(emit(quantize(model, batches, build_recipe(profile="ort-cuda"))))
    gpu = make_session(emitted, "cuda").run(None, {"input": inputs})[0]
    cpu = make_session(emitted, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL).run(None, {"input": inputs})[0]
    assert (gpu.argmax(1) == cpu.argmax(1)).mean() > 0.99


def test_ort_cpu_fuses_every_resnet_layer(resnet20_random):
    from zsq_onnx.validate.diagnostics import ort_fusion

    _, model, entry = resnet20_random
    batches = [np.random.default_rng(0).standard_normal((16, *entry.input_shape)).astype(np.float32)]
    fusion = ort_fusion(emit(quantize(model, batches, build_recipe())))
    assert fusion["fused"] == 20 and fusion["unfused"] == 0
    assert fusion["integer_ops"].get("QLinearAdd", 0) == 9


@pytest.mark.parametrize("bits", ["W8A8", "W4A8"])
def test_ort_cpu_reduces_every_8bit_weight_range_by_default(setting, bits):
    model, batches, _ = setting

    def widest(reduce_range: bool | None) -> int:
        emitted = to_proto(emit(quantize(model, batches, build_recipe(bits=bits, reduce_range=reduce_range))))
        weights = [onnx.numpy_helper.to_array(t) for t in emitted.graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.name.endswith("weight.quantized")]
        return max(int(np.abs(w.astype(np.int16)).max()) for w in weights)

    assert widest(None) == 63, "7-bit weights, the 8-bit ends included"
    assert widest(False) == 127


def test_sim_full_range_weights_run_exactly_at_every_level(setting):
    model, batches, inputs = setting
    emitted = to_proto(emit(quantize(model, batches, build_recipe(bits="W8A8", profile="sim"))))
    assert onnx.TensorProto.UINT8 in {t.data_type for t in emitted.graph.initializer if t.name.endswith("weight.quantized.u8")}
    basic = make_session(emitted, level=ort.GraphOptimizationLevel.ORT_ENABLE_BASIC).run(None, {"input": inputs})[0]
    full = make_session(emitted, execution=Execution.INTEGER).run(None, {"input": inputs})[0]
    assert saturating_kernels(optimized_graph(emitted)) == [], "what makes it exact on every CPU, read from the graph ORT runs"
    difference = np.abs(full - basic)
    assert difference.mean() <= 1e-3 * np.abs(basic).max(), "a saturating kernel moves most logits"
    assert difference.max() <= 0.05 * np.abs(basic).max(), "a rounding tie may flip one level of one activation"


def _mobile_block_model():
    """A tiny EfficientNet-Lite-style net: ReLU6, a TF "SAME" padded stride-2 depthwise conv
    (explicit Pad), an inverted residual with an identity skip, a dead BN channel, a linear head."""
    import torch.nn as nn
    import torch.nn.functional as F

    from tests.conftest import randomize_batchnorm
    from zsq_onnx.io.export import export_module
    from zsq_onnx.io.preprocessing import Preprocessing

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem, self.bn0 = nn.Conv2d(3, 8, 3, 2, bias=False), nn.BatchNorm2d(8)
            self.expand, self.bn1 = nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16)
            self.depthwise, self.bn2 = nn.Conv2d(16, 16, 3, 1, 1, groups=16, bias=False), nn.BatchNorm2d(16)
            self.project, self.bn3 = nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8)
            self.fc = nn.Linear(8, 10)

        def forward(self, x):
            out = F.relu6(self.bn0(self.stem(F.pad(x, (0, 1, 0, 1)))))
            inner = F.relu6(self.bn1(self.expand(out)))
            inner = F.relu6(self.bn2(self.depthwise(inner)))
            out = out + self.bn3(self.project(inner))
            return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))

    torch.manual_seed(0)
    net = Net()
    randomize_batchnorm(net)
    net.bn1.weight.data[3] = 0.0  # a dead channel: constant output, all its folded weights zero
    net.bn1.bias.data[3] = 2.0
    return export_module(net.eval(), (3, 16, 16), Preprocessing(1.0, (0.0,) * 3, (1.0,) * 3), "mobile-block")


def test_ort_cpu_fuses_relu6_same_padded_mobile_blocks_with_int8_weights():
    from zsq_onnx.validate.diagnostics import ort_fusion

    model = _mobile_block_model()
    batches = [np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)]
    emitted = to_proto(emit(quantize(model, batches, build_recipe())))
    assert "Pad" not in {n.op_type for n in emitted.graph.node}, "SAME padding folds into the conv"
    assert not [t.name for t in emitted.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) >= 2], "weights stay int8"
    fusion = ort_fusion(ir.serde.deserialize_model(emitted))
    assert fusion["fused"] == 5 and fusion["unfused"] == 0
    fp32 = make_session(model).run(None, {"input": batches[0]})[0]
    quantized = make_session(emitted).run(None, {"input": batches[0]})[0]
    assert np.abs(quantized - fp32).max() < 0.05 * np.abs(fp32).max()


def test_sim_w4a4_relu6_network_loads_at_every_level_and_equals_torch():
    """ReLU6 outputs at 4 bits keep an 8-bit container: ORT cannot load Clip -> uint4 QuantizeLinear."""
    model = _mobile_block_model()
    batches = [np.random.default_rng(0).standard_normal((8, 3, 16, 16)).astype(np.float32)]
    quantized = quantize(model, batches, build_recipe(bits="W4A4", profile="sim"))
    emitted = to_proto(emit(quantized))
    for level in (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, ort.GraphOptimizationLevel.ORT_ENABLE_ALL):
        assert make_session(emitted, level=level, execution=Execution.INTEGER).run(None, {"input": batches[0]})[0].shape == (8, 10)
    _assert_ort_equals_torch(quantized, emitted, batches[0])
