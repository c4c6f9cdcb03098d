"""Op by op, TorchGraph runs exported graphs like the torch module that produced them and like ORT.

Every case is a tiny module exported twice: per case by ``export_module`` (TorchScript exporter,
then ``tidy``), and grouped with the other cases of its input shape by the dynamo exporter, whose
raw output is what users bring. TorchGraph must match the native module (forward and input
gradient) and ONNX Runtime (forward) within ``TOLERANCE``. Hand-written graphs cover ONNX
semantics that no torch exporter emits.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable

import numpy as np
import onnx
import onnx_ir as ir
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tests.conftest import randomize_batchnorm
from zsq_onnx.errors import UnsupportedOpError
from zsq_onnx.executors.runtime import make_session
from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.io.export import export_module
from zsq_onnx.io.preprocessing import Preprocessing

TOLERANCE = 1e-4
IMAGE = (4, 8, 8)


class Fn(nn.Module):
    """A module that applies a plain function to its input."""

    def __init__(self, function: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.function = function

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.function(x)


class Group(nn.Module):
    """Several cases on one input: their outputs flattened and concatenated."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([member(x).flatten(1) for member in self.members], dim=1)


def _batchnorm() -> nn.Module:
    layer = nn.BatchNorm2d(4)
    randomize_batchnorm(layer)
    return layer


def _channel_shuffle(x: torch.Tensor) -> torch.Tensor:
    batch, channels, height, width = x.shape
    return x.view(batch, 2, channels // 2, height, width).transpose(1, 2).reshape(batch, -1, height, width)


class SqueezeExcite(nn.Module):
    """Squeeze-excite as torchvision builds it: GlobalAveragePool, 1x1 convs, gate, Mul."""

    def __init__(self, activation: Callable[[], nn.Module], gate: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.squeeze = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(4, 2, 1), activation(), nn.Conv2d(2, 4, 1), gate())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.squeeze(x)


def _split(x: torch.Tensor) -> torch.Tensor:
    first, rest = torch.split(x, [1, 3], dim=1)
    left, middle, right = rest.chunk(3, dim=3)
    return torch.cat([right * first[..., :2], left + middle], dim=3)


# name: (module factory, input shape without batch, ops the TorchScript export must contain)
CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], tuple[str, ...]]] = {
    "conv_bias_stride": (lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1), IMAGE, ("Conv",)),
    "conv_dilation": (lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2, bias=False), IMAGE, ("Conv",)),
    "conv_zeropad_asymmetric": (lambda: nn.Sequential(nn.ZeroPad2d((1, 0, 2, 1)), nn.Conv2d(4, 5, 3, stride=2)), IMAGE, ("Pad", "Conv")),
    "conv_grouped": (lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2), IMAGE, ("Conv",)),
    "conv_depthwise": (lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4), IMAGE, ("Conv",)),
    "conv1d": (lambda: nn.Conv1d(3, 5, 3, stride=2, padding=1), (3, 10), ("Conv",)),
    "conv_transpose": (lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1), IMAGE, ("ConvTranspose",)),
    "conv_transpose_grouped": (lambda: nn.ConvTranspose2d(4, 6, 2, stride=2, groups=2, dilation=2), IMAGE, ("ConvTranspose",)),
    "batchnorm": (_batchnorm, IMAGE, ("BatchNormalization",)),
    "relu": (nn.ReLU, IMAGE, ("Relu",)),
    "relu6": (nn.ReLU6, IMAGE, ("Clip",)),
    "clip_min_max": (lambda: Fn(lambda x: x.clamp(-0.5, 0.7)), IMAGE, ("Clip",)),
    "clip_max_only": (lambda: Fn(lambda x: x.clamp(max=0.3)), IMAGE, ("Clip",)),
    "leaky_relu": (lambda: nn.LeakyReLU(0.2), IMAGE, ("LeakyRelu",)),
    "sigmoid": (nn.Sigmoid, IMAGE, ("Sigmoid",)),
    "hard_sigmoid": (nn.Hardsigmoid, IMAGE, ("HardSigmoid",)),
    "hard_swish": (nn.Hardswish, IMAGE, ("HardSwish",)),
    "silu": (nn.SiLU, IMAGE, ("Sigmoid", "Mul")),
    "squeeze_excite_silu_sigmoid": (lambda: SqueezeExcite(nn.SiLU, nn.Sigmoid), IMAGE, ("GlobalAveragePool", "Conv", "Sigmoid", "Mul")),
    "squeeze_excite_relu_hard_sigmoid": (lambda: SqueezeExcite(nn.ReLU, nn.Hardsigmoid), IMAGE, ("GlobalAveragePool", "Relu", "HardSigmoid", "Mul")),
    "dropout_eval": (lambda: nn.Sequential(nn.Dropout(0.2), nn.Flatten()), IMAGE, ("Flatten",)),
    "tanh": (nn.Tanh, IMAGE, ("Tanh",)),
    "gelu": (nn.GELU, IMAGE, ("Gelu",)),
    "gelu_tanh": (lambda: nn.GELU("tanh"), IMAGE, ("Gelu",)),
    "add_broadcast": (lambda: Fn(lambda x: x + x[:, :1]), IMAGE, ("Add",)),
    "sub_broadcast": (lambda: Fn(lambda x: x - x[:, :, :1]), IMAGE, ("Sub",)),
    "mul_broadcast": (lambda: Fn(lambda x: x * x[:, :1, :, :1]), IMAGE, ("Mul",)),
    "div_broadcast": (lambda: Fn(lambda x: x / (x[:, :, :1].abs() + 1.0)), IMAGE, ("Div", "Abs")),
    "max_min": (lambda: Fn(lambda x: torch.maximum(x, x[:, :1]) - torch.minimum(x, x[:, :, :1])), IMAGE, ("Max", "Min")),
    "gemm": (lambda: nn.Linear(12, 5), (12,), ("Gemm",)),
    "gemm_no_bias": (lambda: nn.Linear(12, 5, bias=False), (12,), ("MatMul",)),
    "matmul_batched_linear": (lambda: nn.Linear(5, 3), (4, 5), ("MatMul", "Add")),
    "matmul_batched": (lambda: Fn(lambda x: x @ x.transpose(-1, -2)), (4, 5), ("MatMul", "Transpose")),
    "matmul_2d": (lambda: Fn(lambda x: x @ x[:1].t()), (12,), ("MatMul",)),
    "global_average_pool": (lambda: nn.AdaptiveAvgPool2d(1), IMAGE, ("GlobalAveragePool",)),
    "average_pool": (lambda: nn.AvgPool2d(3, stride=2, padding=1), IMAGE, ("AveragePool",)),
    "average_pool_exclude_pad": (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), IMAGE, ("AveragePool",)),
    "average_pool_ceil": (lambda: nn.AvgPool2d(3, stride=2, ceil_mode=True), IMAGE, ("AveragePool",)),
    "average_pool_ceil_pad": (lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), IMAGE, ("AveragePool",)),
    "max_pool_pad": (lambda: nn.MaxPool2d(3, stride=2, padding=1), IMAGE, ("MaxPool",)),
    "max_pool_ceil": (lambda: nn.MaxPool2d(3, stride=2, ceil_mode=True), IMAGE, ("MaxPool",)),
    "max_pool_ceil_pad": (lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), IMAGE, ("MaxPool",)),
    "max_pool_dilation": (lambda: nn.MaxPool2d(2, dilation=2), IMAGE, ("MaxPool",)),
    "reduce_mean_keepdims": (lambda: Fn(lambda x: x.mean(dim=(2, 3), keepdim=True)), IMAGE, ("ReduceMean",)),
    "reduce_mean_no_keepdims": (lambda: Fn(lambda x: x.mean(dim=-1)), IMAGE, ("ReduceMean",)),
    "reduce_sum": (lambda: Fn(lambda x: x.sum(dim=1) + x.sum(dim=(2, 3), keepdim=True).sum(dim=1)), IMAGE, ("ReduceSum",)),
    "reduce_max": (lambda: Fn(lambda x: x.amax(dim=1)), IMAGE, ("ReduceMax",)),
    "flatten": (nn.Flatten, IMAGE, ("Flatten",)),
    "reshape_view": (lambda: Fn(lambda x: x.view(x.size(0), -1)), IMAGE, ("Shape", "Gather", "Reshape")),
    "reshape_channel_shuffle": (lambda: Fn(_channel_shuffle), IMAGE, ("Div", "Reshape", "Transpose")),
    "transpose": (lambda: Fn(lambda x: x.permute(0, 2, 3, 1)), IMAGE, ("Transpose",)),
    "squeeze_unsqueeze": (lambda: Fn(lambda x: x.mean(dim=1, keepdim=True).squeeze(1).unsqueeze(-1)), IMAGE, ("Squeeze", "Unsqueeze")),
    "concat": (lambda: Fn(lambda x: torch.cat([x, x * 2.0, x[:, :1]], dim=1)), IMAGE, ("Concat",)),
    "slice_positive": (lambda: Fn(lambda x: x[:, 1:, 1:-1, ::2]), IMAGE, ("Slice",)),
    "slice_negative_start": (lambda: Fn(lambda x: x[:, -3:, -5:-1]), IMAGE, ("Slice",)),
    "slice_negative_step": (lambda: Fn(lambda x: torch.flip(x, [1, 3])), IMAGE, ("Slice",)),
    "split_chunk": (lambda: Fn(_split), IMAGE, ("Split", "Div", "Slice")),
    "pad_constant_value": (lambda: Fn(lambda x: F.pad(x, (2, 1, 0, 3), value=0.5)), IMAGE, ("Pad",)),
    "pad_reflect": (lambda: Fn(lambda x: F.pad(x, (2, 1, 1, 3), mode="reflect")), IMAGE, ("Pad",)),
    "pad_reflect_last_axis": (lambda: Fn(lambda x: F.pad(x, (1, 2, 0, 0), mode="reflect")), IMAGE, ("Pad",)),
    "pad_edge": (lambda: Fn(lambda x: F.pad(x, (1, 2, 3, 0), mode="replicate")), IMAGE, ("Pad",)),
    "pad_circular": (lambda: Fn(lambda x: F.pad(x, (1, 2, 2, 1), mode="circular")), IMAGE, ("Slice", "Concat")),
    "softmax": (lambda: nn.Softmax(dim=1), IMAGE, ("Softmax",)),
    "log_softmax": (lambda: nn.LogSoftmax(dim=-1), IMAGE, ("LogSoftmax",)),
    "resize_nearest": (lambda: nn.Upsample(scale_factor=2, mode="nearest"), IMAGE, ("Resize",)),
    "resize_nearest_size": (lambda: Fn(lambda x: F.interpolate(x, size=(5, 11), mode="nearest")), IMAGE, ("Resize",)),
    "resize_bilinear": (lambda: nn.Upsample(scale_factor=2, mode="bilinear"), IMAGE, ("Resize",)),
    "resize_bilinear_align_corners": (lambda: Fn(lambda x: F.interpolate(x, scale_factor=1.5, mode="bilinear", align_corners=True)), IMAGE, ("Resize",)),
    "resize_bilinear_size_down": (lambda: Fn(lambda x: F.interpolate(x, size=(5, 3), mode="bilinear")), IMAGE, ("Resize",)),
    "resize_bicubic": (lambda: Fn(lambda x: F.interpolate(x, scale_factor=2, mode="bicubic")), IMAGE, ("Resize",)),
}


def _module(name: str) -> nn.Module:
    torch.manual_seed(0)
    return CASES[name][0]().eval()


@functools.cache
def _torchscript(name: str) -> tuple[nn.Module, ir.Model]:
    """A case's module and its export by ``export_module``, built once."""
    module, shape = _module(name), CASES[name][1]
    return module, export_module(module, shape, Preprocessing(1.0, (0.0,) * shape[0], (1.0,) * shape[0]), name)


@functools.cache
def _dynamo(shape: tuple[int, ...]) -> tuple[nn.Module, ir.Model]:
    """Every case of ``shape`` as one Group, exported raw by the dynamo exporter (dynamic batch).

    One export per input shape: the dynamo exporter takes about a second per call.
    """
    module = Group([_module(name) for name, case in CASES.items() if case[1] == shape]).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (torch.zeros(2, *shape),),
            buffer,
            dynamo=True,
            optimize=False,
            opset_version=21,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    return module, ir.serde.deserialize_model(onnx.load_from_string(buffer.getvalue()))


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    difference = (actual - expected).abs().max().item()
    assert difference <= TOLERANCE, f"{what}: max abs difference {difference:.3g}"


def _check(module: nn.Module, model: ir.Model, shape: tuple[int, ...], batch: int) -> None:
    """TorchGraph against the native module (forward, input gradient) and ORT (forward)."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, *shape, generator=generator)
    native_x, graph_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    native = module(native_x)
    ours = TorchGraph(model)(graph_x)
    _assert_close(ours, native, "forward vs torch")
    weights = torch.randn(native.shape, generator=generator)
    (native * weights).sum().backward()
    (ours * weights).sum().backward()
    _assert_close(graph_x.grad, native_x.grad, "input gradient vs torch")
    session = make_session(model)
    expected = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    _assert_close(ours.detach(), torch.from_numpy(expected), "forward vs onnxruntime")


@pytest.mark.parametrize("name", list(CASES))
def test_torchscript_export_matches_torch_and_onnxruntime(name: str) -> None:
    """export_module's graph keeps the op under test and runs like torch and ORT."""
    module, model = _torchscript(name)
    op_types = {node.op_type for node in model.graph}
    assert set(CASES[name][2]) <= op_types, f"export kept {sorted(op_types)}"
    _check(module, model, CASES[name][1], batch=3)


@pytest.mark.parametrize("shape", sorted({case[1] for case in CASES.values()}), ids=str)
def test_dynamo_export_matches_torch_and_onnxruntime(shape: tuple[int, ...]) -> None:
    """The dynamo exporter's raw graph (Constant, CastLike, sequences, ...) runs like torch and ORT."""
    module, model = _dynamo(shape)
    _check(module, model, shape, batch=3)


# name: (nodes, input shape, initializers); hand-written ONNX semantics, checked against ORT only
GRAPHS: dict[str, tuple[str, tuple[int, ...], str]] = {
    "conv_asymmetric_pads": ("y = Conv <pads = [0, 1, 2, 1], strides = [2, 1]> (x, w)", (1, 3, 7, 6), ""),
    "conv_same_upper": ('y = Conv <auto_pad = "SAME_UPPER", strides = [2, 2]> (x, w)', (1, 3, 7, 6), ""),
    "conv_transpose_asymmetric_pads": ("y = ConvTranspose <pads = [0, 1, 2, 0], strides = [2, 2]> (x, wt)", (1, 3, 4, 5), ""),
    "max_pool_asymmetric_pads": ("y = MaxPool <kernel_shape = [3, 3], pads = [0, 1, 2, 1]> (x)", (1, 2, 6, 5), ""),
    "max_pool_same_lower": ('y = MaxPool <kernel_shape = [2, 3], strides = [2, 2], auto_pad = "SAME_LOWER"> (x)', (1, 2, 7, 5), ""),
    "average_pool_asymmetric_exclude_pad": ("y = AveragePool <kernel_shape = [3, 3], pads = [1, 0, 2, 1]> (x)", (1, 2, 6, 5), ""),
    "average_pool_asymmetric_include_pad": ("y = AveragePool <kernel_shape = [3, 3], pads = [1, 0, 2, 1], count_include_pad = 1> (x)", (1, 2, 6, 5), ""),
    "reshape_zero_and_minus_one": ("y = Reshape (x, s)", (2, 3, 4, 5), "int64[3] s = {0, 0, -1}"),
    "dropout_inference_mask": ("d, mask = Dropout (x, r)\n m = Cast <to = 1> (mask)\n y = Mul (d, m)", (2, 3, 4, 5), "float r = {0.3}"),
    "flatten_axis_0": ("y = Flatten <axis = 0> (x)", (2, 3, 4, 5), ""),
    "flatten_axis_rank": ("y = Flatten <axis = 4> (x)", (2, 3, 4, 5), ""),
    "flatten_negative_axis": ("y = Flatten <axis = -1> (x)", (2, 3, 4, 5), ""),
    "slice_negative_steps": (
        "y = Slice (x, st, en, ax, sp)",
        (2, 3, 6, 7),
        "int64[2] st = {-2, 4}, int64[2] en = {-9223372036854775807, 0}, int64[2] ax = {-1, 2}, int64[2] sp = {-2, -3}",
    ),
    "slice_clamped_ends": ("y = Slice (x, st, en, ax)", (2, 3, 6, 7), "int64[2] st = {1, -100}, int64[2] en = {9223372036854775807, -2}, int64[2] ax = {1, 3}"),
    "pad_edge_axes": ('y = Pad <mode = "edge"> (x, p, , a)', (2, 3, 4, 5), "int64[4] p = {2, 0, 1, 3}, int64[2] a = {1, -1}"),
    "pad_reflect_axes": ('y = Pad <mode = "reflect"> (x, p, , a)', (2, 3, 4, 5), "int64[2] p = {2, 1}, int64[1] a = {1}"),
    "pad_constant_negative": ("y = Pad (x, p, v)", (2, 3, 4, 5), "int64[8] p = {0, 0, -1, 2, 0, 1, 1, -2}, float v = {1.5}"),
    "split_num_outputs_uneven": ("a, b, c = Split <axis = 2, num_outputs = 3> (x)\n y = Concat <axis = 2> (c, a, b)", (2, 3, 7, 5), ""),
    "sum_mean_variadic": ("s = Sum (x, r, c)\n m = Mean (x, r, c)\n y = Sub (s, m)", (2, 3, 4, 5), "float[1, 3, 1, 1] r = {1, 2, 3}, float[5] c = {-1, 0, 1, 2, 3}"),
    "max_min_variadic": ("s = Max (x, r, c)\n m = Min (x, r, c)\n y = Add (s, m)", (2, 3, 4, 5), "float[1, 3, 1, 1] r = {0.1, 0.2, 0.3}, float[5] c = {-1, 0, 1, 2, 3}"),
    "gemm_trans_a_alpha_beta": ("t = Transpose (x)\n y = Gemm <transA = 1, transB = 1, alpha = 0.5, beta = 2.0> (t, g, c)", (6, 3), "float[4] c = {1, 2, 3, 4}"),
    "resize_nearest_half_pixel_sizes": ('y = Resize <mode = "nearest", coordinate_transformation_mode = "half_pixel"> (x, , , s)', (2, 3, 7, 6), "int64[4] s = {2, 3, 5, 11}"),
    "resize_nearest_ceil_align_corners": (
        'y = Resize <mode = "nearest", nearest_mode = "ceil", coordinate_transformation_mode = "align_corners"> (x, , s)',
        (2, 3, 7, 6),
        "float[4] s = {1, 1, 1.7, 0.6}",
    ),
    "resize_nearest_prefer_ceil_asymmetric": (
        'y = Resize <mode = "nearest", nearest_mode = "round_prefer_ceil", coordinate_transformation_mode = "asymmetric"> (x, , s)',
        (2, 3, 7, 6),
        "float[4] s = {1, 1, 2.5, 0.5}",
    ),
    "resize_linear_pytorch_half_pixel_axes": (
        'y = Resize <mode = "linear", coordinate_transformation_mode = "pytorch_half_pixel", axes = [3, 2]> (x, , , s)',
        (2, 3, 7, 6),
        "int64[2] s = {1, 9}",
    ),
    "resize_linear_half_pixel_symmetric": (
        'y = Resize <mode = "linear", coordinate_transformation_mode = "half_pixel_symmetric"> (x, , s)',
        (2, 3, 7, 6),
        "float[4] s = {1, 1, 1.5, 0.7}",
    ),
    "resize_cubic_exclude_outside": ('y = Resize <mode = "cubic", exclude_outside = 1, cubic_coeff_a = -0.5> (x, , s)', (2, 3, 7, 6), "float[4] s = {1, 1, 2.0, 0.5}"),
    "split_to_sequence": (
        "q = SplitToSequence <axis = 1, keepdims = 0> (x)\n a = SequenceAt (q, i)\n b = SequenceAt (q, j)\n y = Sub (a, b)",
        (2, 3, 4, 5),
        "int64 i = {-1}, int64 j = {0}",
    ),
    "integer_div_truncates": ("n = Shape (x)\n d = Div (n, k)\n f = Cast <to = 1> (d)\n y = Mul (x, f)", (2, 3, 4, 4), "int64[4] k = {-3, -2, 3, 3}"),
}

WEIGHTS = {
    "w": np.random.default_rng(0).standard_normal((4, 3, 3, 2)).astype(np.float32),
    "wt": np.random.default_rng(1).standard_normal((3, 2, 3, 3)).astype(np.float32),
    "g": np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32),
}


def _graph(name: str, shape: tuple[int, ...], nodes: str, initializers: str = "") -> ir.Model:
    """An opset-21 model ``x => y`` from ONNX text, with the WEIGHTS it uses as initializers."""
    dims = ", ".join(map(str, shape))
    declared = f"<{initializers}>" if initializers else ""
    model = onnx.parser.parse_model(f'<ir_version: 10, opset_import: ["" : 21]>\n{name} (float[{dims}] x) => (float y) {declared} {{\n {nodes}\n}}')
    model.graph.output[0].type.tensor_type.ClearField("shape")  # the parser reads "float y" as a scalar
    used = {value for node in model.graph.node for value in node.input}
    model.graph.initializer.extend(onnx.numpy_helper.from_array(array, key) for key, array in WEIGHTS.items() if key in used)
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model, full_check=True)
    return ir.serde.deserialize_model(model)


@pytest.mark.parametrize("name", list(GRAPHS))
def test_hand_written_graph_matches_onnxruntime(name: str) -> None:
    """ONNX-only semantics (pads, axes, steps, Resize modes, ...) match ORT; gradients flow."""
    nodes, shape, initializers = GRAPHS[name]
    model = _graph(name, shape, nodes, initializers)
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2), requires_grad=True)
    ours = TorchGraph(model)(x)
    ours.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    session = make_session(model)
    _assert_close(ours.detach(), torch.from_numpy(session.run(None, {"x": x.detach().numpy()})[0]), "forward vs onnxruntime")


@pytest.mark.parametrize(
    ("nodes", "initializers", "reason"),
    [
        (
            'y = Resize <mode = "linear", coordinate_transformation_mode = "tf_crop_and_resize"> (x, r, s)',
            "float[8] r = {0, 0, 0, 0, 1, 1, 1, 1}, float[4] s = {1, 1, 2, 2}",
            "tf_crop_and_resize",
        ),
        ('y = Resize <mode = "linear", antialias = 1> (x, , s)', "float[4] s = {1, 1, 0.5, 0.5}", "antialias"),
        ("y = MaxPool <kernel_shape = [3, 3], pads = [0, 0, 1, 1], ceil_mode = 1> (x)", "", "ceil_mode"),
        ("y = AveragePool <kernel_shape = [2, 2], dilations = [2, 2]> (x)", "", "dilations"),
        ("y = Dropout (x, r, t)", "float r = {0.5}, bool t = {1}", "training_mode"),
    ],
    ids=["resize_crop", "resize_antialias", "max_pool_ceil_asymmetric", "average_pool_dilations", "dropout_training"],
)
def test_unsupported_attributes_raise_unsupported_op_error(nodes: str, initializers: str, reason: str) -> None:
    """Attributes TorchGraph cannot honour fail with UnsupportedOpError naming the reason."""
    model = _graph("unsupported", (1, 2, 6, 6), nodes, initializers)
    with pytest.raises(UnsupportedOpError, match=reason):
        TorchGraph(model)(torch.randn(1, 2, 6, 6))
