"""TorchGraph vs the native torch module: forward+backward time (input gradient, as synthesis
does) measured side by side, interleaved, as a ratio. Prints one JSON line last.

    python bench/torch_graph_speed.py [--model resnet20-cifar10] [--batch 64] [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from zsq_onnx.executors.torch_graph import TorchGraph
from zsq_onnx.io.export import export_module
from zsq_onnx.models import get_entry


def _step_seconds(module: torch.nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    x.grad = None
    module(x).square().sum().backward()
    return time.perf_counter() - start


def main() -> None:
    """Run the comparison for one zoo model (random weights where the model needs a file)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="resnet20-cifar10")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.manual_seed(0)
    entry = get_entry(args.model)
    native = entry.build(None).eval()
    for parameter in native.parameters():
        parameter.requires_grad_(False)
    graph = TorchGraph(export_module(native, entry.input_shape, entry.preprocessing, entry.name)).eval()
    x = torch.randn(args.batch, *entry.input_shape, requires_grad=True)
    for module in (native, graph):
        _step_seconds(module, x)
    native_times, graph_times = [], []
    for _ in range(args.repeats):
        native_times.append(_step_seconds(native, x))
        graph_times.append(_step_seconds(graph, x))
    native_ms, graph_ms = statistics.median(native_times) * 1e3, statistics.median(graph_times) * 1e3
    print(json.dumps({
        "bench": "torch_graph_speed", "model": args.model, "batch": args.batch, "threads": torch.get_num_threads(),
        "native_ms": round(native_ms, 3), "torch_graph_ms": round(graph_ms, 3), "ratio": round(graph_ms / native_ms, 3),
    }))


if __name__ == "__main__":
    main()
