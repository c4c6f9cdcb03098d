"""The shared torch helpers: LSQ's step-size gradient and its scale."""

from __future__ import annotations

import math

import pytest
import torch

from zsq_onnx.quantizers.common import fake_quantize, lsq_gradient_scale, scale_gradient


def test_lsq_step_size_gradient():
    x = torch.linspace(-3, 3, 61)
    scale = torch.tensor(0.25, requires_grad=True)
    qmin, qmax = -8, 7
    g = lsq_gradient_scale(x, scale, qmax, per_sample=False)
    assert g == pytest.approx(1 / math.sqrt(61 * 7))
    fake_quantize(x, scale_gradient(scale, g), torch.tensor(0), qmin, qmax).sum().backward()
    ratio = x / 0.25
    expected = torch.where(ratio < qmin, torch.tensor(float(qmin)), torch.where(ratio > qmax, torch.tensor(float(qmax)), ratio.round() - ratio))
    assert scale.grad.item() == pytest.approx(float(expected.sum()) * g, rel=1e-5)


def test_lsq_gradient_scale_counts_elements_per_sample_for_activations():
    x = torch.zeros(8, 4, 5, 5)
    assert lsq_gradient_scale(x, torch.ones(()), 15, per_sample=True) == pytest.approx(1 / math.sqrt(100 * 15))
    assert lsq_gradient_scale(x, torch.ones(8), 7, per_sample=False) == pytest.approx(1 / math.sqrt(100 * 7))
