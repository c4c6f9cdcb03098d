"""ONNX op -> torch function table used by TorchGraph.

Every function takes ``(inputs, attrs)``: the node's input tensors (None for omitted optional
inputs) and its attributes as Python values, and returns one tensor or a tuple of tensors.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import onnx
import torch
import torch.nn.functional as F

OpFn = Callable[[list, dict[str, Any]], Any]

TORCH_DTYPES: dict[int, torch.dtype] = {
    onnx.TensorProto.FLOAT: torch.float32,
    onnx.TensorProto.FLOAT16: torch.float16,
    onnx.TensorProto.DOUBLE: torch.float64,
    onnx.TensorProto.INT64: torch.int64,
    onnx.TensorProto.INT32: torch.int32,
    onnx.TensorProto.INT8: torch.int8,
    onnx.TensorProto.UINT8: torch.uint8,
    onnx.TensorProto.BOOL: torch.bool,
    onnx.TensorProto.INT4: torch.int8,
    onnx.TensorProto.UINT4: torch.uint8,
}


def _ints(tensor) -> list[int]:
    return [int(v) for v in tensor.reshape(-1).tolist()]


def _torch_pad_list(begins: list[int], ends: list[int]) -> list[int]:
    """ONNX per-axis (begin, end) pads, first axis first -> torch's last-axis-first list."""
    flat: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends)):
        flat += [begin, end]
    return flat


def _explicit_pads(attrs: dict[str, Any], sizes: tuple[int, ...], kernel: list[int], strides: list[int], dilations: list[int]) -> tuple[list[int], list[int]]:
    """(begins, ends) of a Conv or pool, from ``pads`` or from ``auto_pad`` and the spatial ``sizes``."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        totals = [max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0) for n, k, s, d in zip(sizes, kernel, strides, dilations)]
        small, large = [t // 2 for t in totals], [t - t // 2 for t in totals]
        return (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    if auto_pad == "VALID":
        return [0] * len(kernel), [0] * len(kernel)
    pads = attrs.get("pads", [0] * 2 * len(kernel))
    return pads[: len(kernel)], pads[len(kernel) :]


def conv(inputs: list, attrs: dict[str, Any]):
    """ONNX Conv (1-3 spatial dims, groups, dilations, any pads or auto_pad)."""
    x, weight = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    spatial = weight.ndim - 2
    strides, dilations = attrs.get("strides", [1] * spatial), attrs.get("dilations", [1] * spatial)
    begins, ends = _explicit_pads(attrs, tuple(x.shape[2:]), list(weight.shape[2:]), strides, dilations)
    if begins != ends:
        x = F.pad(x, _torch_pad_list(begins, ends))
        begins = [0] * spatial
    function = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    return function(x, weight, bias, strides, begins, dilations, attrs.get("group", 1))


def conv_transpose(inputs: list, attrs: dict[str, Any]):
    """ONNX ConvTranspose with explicit pads (asymmetric ones crop the full output)."""
    x, weight = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID") or attrs.get("output_shape"):
        raise NotImplementedError("ConvTranspose with auto_pad SAME_* or output_shape")
    spatial = weight.ndim - 2
    pads = [0] * 2 * spatial if auto_pad == "VALID" else attrs.get("pads", [0] * 2 * spatial)
    begins, ends = pads[:spatial], pads[spatial:]
    function = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[spatial]
    y = function(
        x,
        weight,
        bias,
        attrs.get("strides", [1] * spatial),
        begins if begins == ends else 0,
        attrs.get("output_padding", [0] * spatial),
        attrs.get("group", 1),
        attrs.get("dilations", [1] * spatial),
    )
    if begins == ends:
        return y
    return y[(slice(None), slice(None)) + tuple(slice(b, n - e) for b, e, n in zip(begins, ends, y.shape[2:]))]


def batch_norm(inputs: list, attrs: dict[str, Any]):
    x, gamma, beta, mean, var = inputs
    if attrs.get("training_mode", 0):
        raise NotImplementedError("BatchNormalization with training_mode=1")
    return F.batch_norm(x, mean, var, gamma, beta, False, 0.0, attrs.get("epsilon", 1e-5))


def gemm(inputs: list, attrs: dict[str, Any]):
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    a = a.t() if attrs.get("transA", 0) else a
    b = b.t() if attrs.get("transB", 0) else b
    alpha, beta = attrs.get("alpha", 1.0), attrs.get("beta", 1.0)
    if c is None:
        return alpha * (a @ b) if alpha != 1.0 else a @ b
    if alpha == 1.0 and beta == 1.0:
        return torch.addmm(c.expand(a.shape[0], b.shape[1]) if c.ndim < 2 else c, a, b)
    return alpha * (a @ b) + beta * c


def _pool_padding(x, attrs: dict[str, Any], op: str, dilations: list[int]) -> tuple[list[int], list[int]]:
    """(padding for torch's pooling call, F.pad list to apply first: empty when torch takes the pads)."""
    kernel = attrs["kernel_shape"]
    begins, ends = _explicit_pads(attrs, tuple(x.shape[2:]), kernel, attrs.get("strides", [1] * len(kernel)), dilations)
    if begins == ends and all(2 * p <= (k - 1) * d + 1 for p, k, d in zip(begins, kernel, dilations)):
        return begins, []
    if attrs.get("ceil_mode", 0):
        raise NotImplementedError(f"{op} with ceil_mode and asymmetric or large pads")
    return [0] * len(kernel), _torch_pad_list(begins, ends)


def max_pool(inputs: list, attrs: dict[str, Any]):
    """ONNX MaxPool (first output only)."""
    x, kernel = inputs[0], attrs["kernel_shape"]
    dilations = attrs.get("dilations", [1] * len(kernel))
    padding, padded = _pool_padding(x, attrs, "MaxPool", dilations)
    if padded:
        x = F.pad(x, padded, value=-math.inf)
    function = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(kernel)]
    return function(x, kernel, attrs.get("strides", [1] * len(kernel)), padding, dilations, bool(attrs.get("ceil_mode", 0)))


def average_pool(inputs: list, attrs: dict[str, Any]):
    """ONNX AveragePool; the divisor counts padded cells only with count_include_pad=1."""
    x, kernel = inputs[0], attrs["kernel_shape"]
    if any(d != 1 for d in attrs.get("dilations", [1] * len(kernel))):
        raise NotImplementedError("AveragePool with dilations")
    padding, padded = _pool_padding(x, attrs, "AveragePool", [1] * len(kernel))
    include_pad = bool(attrs.get("count_include_pad", 0))
    function = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(kernel)]

    def pool(t):
        t = F.pad(t, padded) if padded else t
        return function(t, kernel, attrs.get("strides", [1] * len(kernel)), padding, bool(attrs.get("ceil_mode", 0)), include_pad)

    if not padded or include_pad:
        return pool(x)
    return pool(x) / pool(torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device))


def _reduce_axes(inputs: list, attrs: dict[str, Any], ndim: int) -> list[int] | None:
    axes = _ints(inputs[1]) if len(inputs) > 1 and inputs[1] is not None else attrs.get("axes")
    if not axes:
        return None if not attrs.get("noop_with_empty_axes", 0) else []
    return [a % ndim for a in axes]


def _reducer(function: Callable) -> OpFn:
    def reduce(inputs: list, attrs: dict[str, Any]):
        x = inputs[0]
        axes = _reduce_axes(inputs, attrs, x.ndim)
        if axes == []:
            return x
        dims = list(range(x.ndim)) if axes is None else axes
        return function(x, dims, bool(attrs.get("keepdims", 1)))

    return reduce


def _reduce_max(x, dims, keepdim):
    return x.amax(dim=dims, keepdim=keepdim)


def _reduce_min(x, dims, keepdim):
    return x.amin(dim=dims, keepdim=keepdim)


def reshape(inputs: list, attrs: dict[str, Any]):
    x, shape = inputs[0], _ints(inputs[1])
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def flatten(inputs: list, attrs: dict[str, Any]):
    x = inputs[0]
    axis = attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


def slice_(inputs: list, attrs: dict[str, Any]):
    x = inputs[0]
    starts, ends = _ints(inputs[1]), _ints(inputs[2])
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(len(starts)))
    steps = _ints(inputs[4]) if len(inputs) > 4 and inputs[4] is not None else [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis %= x.ndim
        indices = range(x.shape[axis])[slice(start, end, step)]
        if step > 0:
            x = x[(slice(None),) * axis + (slice(indices.start, indices.stop, step),)]
        else:
            x = x.index_select(axis, torch.tensor(list(indices), dtype=torch.long, device=x.device))
    return x


def pad(inputs: list, attrs: dict[str, Any]):
    x, pads = inputs[0], _ints(inputs[1])
    value = float(inputs[2].item()) if len(inputs) > 2 and inputs[2] is not None else 0.0
    axes = _ints(inputs[3]) if len(inputs) > 3 and inputs[3] is not None else list(range(x.ndim))
    axes = [a % x.ndim for a in axes]
    begins, ends = [0] * x.ndim, [0] * x.ndim
    for i, axis in enumerate(axes):
        begins[axis], ends[axis] = pads[i], pads[i + len(axes)]
    mode = attrs.get("mode", "constant")
    if not any(begins + ends):
        return x
    if mode == "constant":
        return F.pad(x, _torch_pad_list(begins, ends), value=value)
    first = next((i for i in range(x.ndim) if begins[i] or ends[i]), x.ndim)
    if x.ndim - first > 3:
        raise NotImplementedError(f"Pad mode {mode} on more than the last 3 axes")
    flat = _torch_pad_list(begins[first:], ends[first:])
    folded = x.reshape(-1, *x.shape[first:])
    padded = F.pad(folded, flat, mode={"edge": "replicate", "wrap": "circular"}.get(mode, mode))
    return padded.reshape(*x.shape[:first], *padded.shape[1:])


def clip(inputs: list, attrs: dict[str, Any]):
    x = inputs[0]
    low = inputs[1] if len(inputs) > 1 and inputs[1] is not None else None
    high = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
    if low is not None and high is not None and low.numel() == high.numel() == 1 and not (low.requires_grad or high.requires_grad):
        return F.hardtanh(x, float(low), float(high))  # one fused op: clamp with tensor bounds costs 5 in backward
    return torch.clamp(x, low, high)


def _unsqueeze(inputs: list, attrs: dict[str, Any]):
    x = inputs[0]
    axes = sorted(a % (x.ndim + len(_ints(inputs[1]))) for a in _ints(inputs[1]))
    for axis in axes:
        x = x.unsqueeze(axis)
    return x


def _squeeze(inputs: list, attrs: dict[str, Any]):
    x = inputs[0]
    if len(inputs) < 2 or inputs[1] is None:
        return x.squeeze()
    return x.squeeze(tuple(a % x.ndim for a in _ints(inputs[1])))


def _constant_of_shape(inputs: list, attrs: dict[str, Any]):
    value = attrs.get("value")
    fill = torch.as_tensor(value).reshape(-1) if value is not None else torch.zeros(1)
    return fill.expand(_ints(inputs[0])).clone()


def _constant(inputs: list, attrs: dict[str, Any]):
    for key in ("value", "value_float", "value_int", "value_floats", "value_ints"):
        if key in attrs:
            return torch.as_tensor(attrs[key])
    raise NotImplementedError("Constant without a value attribute")


def _gather(inputs: list, attrs: dict[str, Any]):
    data, index = inputs
    axis = attrs.get("axis", 0) % data.ndim
    index = torch.where(index < 0, index + data.shape[axis], index).long()
    return data.index_select(axis, index.reshape(-1)).reshape(data.shape[:axis] + index.shape + data.shape[axis + 1 :])


def _div(inputs: list, attrs: dict[str, Any]):
    """ONNX Div: integer tensors (shape arithmetic) divide truncating toward zero, like ORT."""
    a, b = inputs
    if a.dtype.is_floating_point or b.dtype.is_floating_point:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


def split(inputs: list, attrs: dict[str, Any]):
    """ONNX Split by the ``split`` input or, from opset 18, into ``num_outputs`` ceil-sized chunks."""
    x, axis = inputs[0], attrs.get("axis", 0)
    if len(inputs) > 1 and inputs[1] is not None:
        sizes = _ints(inputs[1])
    elif "num_outputs" in attrs:
        count, length = attrs["num_outputs"], x.shape[axis]
        chunk = -(-length // count)
        sizes = [chunk] * (count - 1) + [length - chunk * (count - 1)]
    else:
        raise NotImplementedError("Split into equal parts without num_outputs (opset < 18)")
    return tuple(torch.split(x, sizes, dim=axis))


def _split_to_sequence(inputs: list, attrs: dict[str, Any]):
    """ONNX SplitToSequence as a Python list (what SequenceAt indexes)."""
    x, axis = inputs[0], attrs.get("axis", 0)
    sizes = inputs[1] if len(inputs) > 1 else None
    if sizes is None:
        parts = torch.split(x, 1, dim=axis)
        return [p.squeeze(axis) for p in parts] if not attrs.get("keepdims", 1) else list(parts)
    return list(torch.split(x, int(sizes) if sizes.ndim == 0 else _ints(sizes), dim=axis))


def _dropout(inputs: list, attrs: dict[str, Any]):
    """ONNX Dropout at inference: the input unchanged and an all-true mask (a broadcast view)."""
    x = inputs[0]
    if len(inputs) > 2 and inputs[2] is not None and bool(inputs[2]):
        raise NotImplementedError("Dropout with training_mode=true")
    return x, torch.ones((), dtype=torch.bool, device=x.device).expand(x.shape)


def _variadic(function: Callable) -> OpFn:
    return lambda inputs, attrs: functools.reduce(function, inputs)


def _source_coordinates(attrs: dict[str, Any], out_length: int, in_length: int, scale: torch.Tensor) -> torch.Tensor:
    """Resize: the input coordinate of every output index on one axis (float32, as ONNX Runtime)."""
    x = torch.arange(out_length, dtype=torch.float32)
    mode = attrs.get("coordinate_transformation_mode", "half_pixel")
    if mode == "asymmetric":
        return x / scale
    if mode == "half_pixel":
        return (x + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (x + 0.5) / scale - 0.5 if out_length > 1 else torch.zeros(out_length)
    if mode == "align_corners":
        return x * (in_length - 1) / (out_length - 1) if out_length > 1 else torch.zeros(out_length)
    if mode == "half_pixel_symmetric":
        offset = in_length / 2 * (1 - out_length / (scale * in_length))
        return offset + (x + 0.5) / scale - 0.5
    raise NotImplementedError(f"Resize with coordinate_transformation_mode={mode}")


def _resize_taps(attrs: dict[str, Any], coordinates: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize: source indices and weights, each [outputs, taps], of one axis (edge-clamped)."""
    mode = attrs.get("mode", "nearest")
    if mode == "nearest":
        rounding = {
            "round_prefer_floor": lambda c: torch.ceil(c - 0.5),
            "round_prefer_ceil": lambda c: torch.floor(c + 0.5),
            "floor": torch.floor,
            "ceil": torch.ceil,
        }[attrs.get("nearest_mode", "round_prefer_floor")]
        return rounding(coordinates).long().clamp(0, length - 1)[:, None], torch.ones(len(coordinates), 1)
    base = torch.floor(coordinates)
    t = (coordinates - base)[:, None]
    if mode == "linear":
        offsets, weights = torch.tensor([0, 1]), torch.cat([1 - t, t], dim=1)
    else:
        a = attrs.get("cubic_coeff_a", -0.75)
        offsets = torch.tensor([-1, 0, 1, 2])
        d = (t - offsets).abs()
        weights = torch.where(d <= 1, ((a + 2) * d - (a + 3)) * d * d + 1, ((a * d - 5 * a) * d + 8 * a) * d - 4 * a)
    index = base.long()[:, None] + offsets
    if attrs.get("exclude_outside", 0):
        weights = weights * ((index >= 0) & (index < length))
        weights = weights / weights.sum(dim=1, keepdim=True)
    return index.clamp(0, length - 1), weights


def resize(inputs: list, attrs: dict[str, Any]):
    """ONNX Resize (nearest, linear, cubic; separable per axis) with exact coordinate semantics."""
    x = inputs[0]
    scales = inputs[2] if len(inputs) > 2 and inputs[2] is not None and inputs[2].numel() else None
    sizes = inputs[3] if len(inputs) > 3 and inputs[3] is not None and inputs[3].numel() else None
    if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch" and sizes is not None:
        raise NotImplementedError(f"Resize with keep_aspect_ratio_policy={attrs['keep_aspect_ratio_policy']}")
    axes = [a % x.ndim for a in attrs.get("axes", range(x.ndim))]
    y = x
    for position, axis in enumerate(axes):
        length = x.shape[axis]
        if sizes is not None:
            out_length = int(sizes[position])
            scale = torch.tensor(out_length / length, dtype=torch.float32)
        else:
            scale = torch.tensor(float(scales[position]), dtype=torch.float32)
            out_length = int(math.floor(float(scale) * length))
        if out_length == length and float(scale) == 1.0:
            continue
        if attrs.get("antialias", 0) and out_length < length and attrs.get("mode", "nearest") != "nearest":
            raise NotImplementedError("Resize with antialias when downsampling")
        index, weights = _resize_taps(attrs, _source_coordinates(attrs, out_length, length, scale), length)
        shape = [1] * x.ndim
        shape[axis] = out_length
        index, weights = index.to(y.device), weights.to(y.device, y.dtype)
        y = sum(y.index_select(axis, index[:, tap]) * weights[:, tap].reshape(shape) for tap in range(index.shape[1]))
    return y


OPS: dict[str, OpFn] = {
    "Conv": conv,
    "ConvTranspose": conv_transpose,
    "BatchNormalization": batch_norm,
    "Gemm": gemm,
    "MatMul": lambda i, a: torch.matmul(i[0], i[1]),
    "Relu": lambda i, a: F.relu(i[0]),
    "LeakyRelu": lambda i, a: F.leaky_relu(i[0], a.get("alpha", 0.01)),
    "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
    "HardSigmoid": lambda i, a: torch.clamp(a.get("alpha", 0.2) * i[0] + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda i, a: F.hardswish(i[0]),
    "Tanh": lambda i, a: torch.tanh(i[0]),
    "Gelu": lambda i, a: F.gelu(i[0], approximate=a.get("approximate", "none")),
    "Abs": lambda i, a: torch.abs(i[0]),
    "Clip": clip,
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": _div,
    "Sum": _variadic(torch.add),
    "Mean": lambda i, a: functools.reduce(torch.add, i) / len(i),
    "Max": _variadic(torch.maximum),
    "Min": _variadic(torch.minimum),
    "Neg": lambda i, a: -i[0],
    "Sqrt": lambda i, a: torch.sqrt(i[0]),
    "Exp": lambda i, a: torch.exp(i[0]),
    "Pow": lambda i, a: torch.pow(i[0], i[1]),
    "Identity": lambda i, a: i[0],
    "Dropout": _dropout,
    "GlobalAveragePool": lambda i, a: i[0].mean(dim=tuple(range(2, i[0].ndim)), keepdim=True),
    "GlobalMaxPool": lambda i, a: i[0].amax(dim=tuple(range(2, i[0].ndim)), keepdim=True),
    "MaxPool": max_pool,
    "AveragePool": average_pool,
    "ReduceMean": _reducer(torch.mean),
    "ReduceSum": _reducer(torch.sum),
    "ReduceMax": _reducer(_reduce_max),
    "ReduceMin": _reducer(_reduce_min),
    "Flatten": flatten,
    "Reshape": reshape,
    "Transpose": lambda i, a: i[0].permute(a["perm"]) if "perm" in a else i[0].permute(*reversed(range(i[0].ndim))),
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Concat": lambda i, a: torch.cat(i, dim=a["axis"]),
    "Slice": slice_,
    "Split": split,
    "SplitToSequence": _split_to_sequence,
    "SequenceAt": lambda i, a: i[0][int(i[1])],
    "Pad": pad,
    "Shape": lambda i, a: torch.tensor(i[0].shape[a.get("start", 0) : a.get("end", None)], dtype=torch.int64),
    "Gather": _gather,
    "Expand": lambda i, a: i[0].expand(torch.broadcast_shapes(i[0].shape, tuple(_ints(i[1])))),
    "Cast": lambda i, a: i[0].to(TORCH_DTYPES[a["to"]]),
    "CastLike": lambda i, a: i[0].to(i[1].dtype),
    "ConstantOfShape": _constant_of_shape,
    "Constant": _constant,
    "Softmax": lambda i, a: torch.softmax(i[0], dim=a.get("axis", -1)),
    "LogSoftmax": lambda i, a: torch.log_softmax(i[0], dim=a.get("axis", -1)),
    "Resize": resize,
}
