"""Executors of one ONNX graph: TorchGraph (differentiable torch module) and ONNX Runtime sessions."""
