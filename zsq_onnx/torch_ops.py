"""ONNX op -> torch function table used by TorchGraph.

Every function takes ``(inputs, attrs)``: the node's input tensors (None for omitted optional
inputs) and its attributes as Python values (plus ``_input_types``, the ONNX element types of
the inputs), and returns one tensor or a tuple of tensors.
"""

from __future__ import annotations

import math
from typing import Any, Callable

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


def _split_pads(pads: list[int], spatial: int) -> tuple[list[int], bool]:
    begins, ends = pads[:spatial], pads[spatial:]
    return begins, begins == ends


def _torch_pad_list(begins: list[int], ends: list[int]) -> list[int]:
    """ONNX per-axis (begin, end) pads, first axis first -> torch's last-axis-first list."""
    flat: list[int] = []
    for begin, end in zip(reversed(begins), reversed(ends)):
        flat += [begin, end]
    return flat


def _check_auto_pad(attrs: dict[str, Any], op: str) -> None:
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise NotImplementedError(f"{op} with auto_pad={attrs['auto_pad']}")


def conv(inputs: list, attrs: dict[str, Any]):
    x, weight = inputs[0], inputs[1]
    bias = inputs[2] if len(inputs) > 2 else None
    _check_auto_pad(attrs, "Conv")
    spatial = weight.ndim - 2
    pads = attrs.get("pads", [0] * 2 * spatial)
    begins, symmetric = _split_pads(pads, spatial)
    if not symmetric:
        x = F.pad(x, _torch_pad_list(begins, pads[spatial:]))
        begins = [0] * spatial
    function = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[spatial]
    return function(
        x, weight, bias, attrs.get("strides", [1] * spatial), begins, attrs.get("dilations", [1] * spatial), attrs.get("group", 1)
    )


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


def _pool_args(x, attrs: dict[str, Any], op: str):
    _check_auto_pad(attrs, op)
    kernel = attrs["kernel_shape"]
    spatial = len(kernel)
    pads = attrs.get("pads", [0] * 2 * spatial)
    begins, symmetric = _split_pads(pads, spatial)
    if not symmetric:
        raise NotImplementedError(f"{op} with asymmetric pads")
    return kernel, attrs.get("strides", [1] * spatial), begins, bool(attrs.get("ceil_mode", 0))


def max_pool(inputs: list, attrs: dict[str, Any]):
    x = inputs[0]
    kernel, strides, pads, ceil = _pool_args(x, attrs, "MaxPool")
    function = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[len(kernel)]
    return function(x, kernel, strides, pads, attrs.get("dilations", [1] * len(kernel)), ceil)


def average_pool(inputs: list, attrs: dict[str, Any]):
    x = inputs[0]
    kernel, strides, pads, ceil = _pool_args(x, attrs, "AveragePool")
    function = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[len(kernel)]
    return function(x, kernel, strides, pads, ceil, bool(attrs.get("count_include_pad", 0)))


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
    axis = attrs.get("axis", 1) % max(x.ndim, 1)
    return x.reshape(math.prod(x.shape[:axis]), -1)


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
    mode = {"edge": "replicate"}.get(mode, mode)
    first = next((i for i in range(x.ndim) if begins[i] or ends[i]), x.ndim)
    flat = _torch_pad_list(begins[first:], ends[first:])
    if mode == "constant":
        return F.pad(x, flat, value=value)
    return F.pad(x, flat, mode=mode)


def clip(inputs: list, attrs: dict[str, Any]):
    x = inputs[0]
    low = inputs[1] if len(inputs) > 1 and inputs[1] is not None else None
    high = inputs[2] if len(inputs) > 2 and inputs[2] is not None else None
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


OPS: dict[str, OpFn] = {
    "Conv": conv,
    "BatchNormalization": batch_norm,
    "Gemm": gemm,
    "MatMul": lambda i, a: torch.matmul(i[0], i[1]),
    "Relu": lambda i, a: F.relu(i[0]),
    "LeakyRelu": lambda i, a: F.leaky_relu(i[0], a.get("alpha", 0.01)),
    "Sigmoid": lambda i, a: torch.sigmoid(i[0]),
    "HardSigmoid": lambda i, a: torch.clamp(a.get("alpha", 0.2) * i[0] + a.get("beta", 0.5), 0, 1),
    "HardSwish": lambda i, a: F.hardswish(i[0]),
    "Tanh": lambda i, a: torch.tanh(i[0]),
    "Clip": clip,
    "Add": lambda i, a: i[0] + i[1],
    "Sub": lambda i, a: i[0] - i[1],
    "Mul": lambda i, a: i[0] * i[1],
    "Div": lambda i, a: i[0] / i[1],
    "Neg": lambda i, a: -i[0],
    "Sqrt": lambda i, a: torch.sqrt(i[0]),
    "Exp": lambda i, a: torch.exp(i[0]),
    "Pow": lambda i, a: torch.pow(i[0], i[1]),
    "Identity": lambda i, a: i[0],
    "Dropout": lambda i, a: i[0],
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
    "Pad": pad,
    "Shape": lambda i, a: torch.tensor(i[0].shape[a.get("start", 0) : a.get("end", None)], dtype=torch.int64),
    "Gather": _gather,
    "Cast": lambda i, a: i[0].to(TORCH_DTYPES[a["to"]]),
    "ConstantOfShape": _constant_of_shape,
    "Constant": _constant,
    "Softmax": lambda i, a: torch.softmax(i[0], dim=a.get("axis", -1)),
}
