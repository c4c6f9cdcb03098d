"""Torch-side fine-tuning of the quantized graph: KD from the FP32 graph, LSQ steps, write-back."""
