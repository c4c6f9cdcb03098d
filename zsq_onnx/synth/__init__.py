"""Synthetic calibration data: ZeroQ distillation from BatchNorm statistics, and the fine-tuning pool."""
