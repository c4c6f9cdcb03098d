"""Load and export: zoo modules to ONNX with BatchNorm kept, safe ONNX loading, datasets, preprocessing."""
