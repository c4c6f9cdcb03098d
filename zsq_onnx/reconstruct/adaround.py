"""AdaRound (Nagel et al. 2020) on one weight matrix, in numpy (gradients by hand, Adam): each
weight goes to the level below or above it on its quantizer's grid, chosen by a learned soft
variable h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1), minimising the layer's output
error (W - W~) H (W - W~)^T / 2 (H = 2 X X^T / n, so this is ||W x - W~ x||^2 summed over outputs
and averaged over positions), taken relative to its value for nearest rounding so that one
lambda fits every layer, plus lambda mean(1 - |2h - 1|^beta), beta annealed from 20 to 2 after a
warm-up without the regularizer. At the end h is 0 or 1 (V >= 0 rounds up).

A layer's matrices are small: numpy on one core runs an iteration in microseconds where torch's
per-op overhead costs milliseconds, and the result is the same on every machine."""

from __future__ import annotations

import numpy as np

from zsq_onnx.reconstruct.gptq import Grid

ZETA, GAMMA = 1.1, -0.1
REGULARIZATION = 3.0  # relative to the normalised reconstruction loss: chosen on random 3-bit layers, where 0.01-1 left h soft and lost to GPTQ
WARMUP = 0.2
BETA = (20.0, 2.0)
LEARNING_RATE = 1e-2
ADAM = (0.9, 0.999, 1e-8)


def floor_levels(weight: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Per weight, the code of the level at or below it on ``grid`` and the fraction of the way
    to the next level up it lies (0 at the top level, or beyond either end of the grid)."""
    weight = np.asarray(weight, np.float64)
    floor = grid.floor(weight)
    low, high = _bounds(floor, grid)
    step = high - low
    fraction = np.where(step > 0, (weight - low) / np.where(step > 0, step, 1.0), 0.0)
    return floor, np.clip(fraction, 0.0, 1.0)


def _bounds(floor: np.ndarray, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """The values of the levels ``floor`` and one above (the same at the top), in float64."""
    return grid.values(floor).astype(np.float64), grid.values(np.minimum(floor + 1, grid.qmax)).astype(np.float64)


def soft_rounding(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """h(V), the rectified sigmoid in [0, 1], and its derivative dh/dV (0 where clipped)."""
    sigmoid = 1.0 / (1.0 + np.exp(-v))
    unclipped = sigmoid * (ZETA - GAMMA) + GAMMA
    inside = (unclipped > 0) & (unclipped < 1)
    return np.clip(unclipped, 0.0, 1.0), np.where(inside, sigmoid * (1 - sigmoid) * (ZETA - GAMMA), 0.0)


def adaround_levels(weight: np.ndarray, hessian: np.ndarray, grid: Grid, iterations: int = 1000,
                    lr: float = LEARNING_RATE, regularization: float = REGULARIZATION) -> tuple[np.ndarray, np.ndarray]:
    """Integer codes of ``weight`` [rows, columns] chosen by AdaRound for the Hessian ``hessian``
    of the layer's inputs, on ``grid`` (uniform or a lookup table: the soft weight moves from the
    level below to the level above, however far apart they are); with the final h (0 or 1 per
    weight)."""
    weight = np.asarray(weight, np.float64)
    floor, fraction = floor_levels(weight, grid)
    low, high = _bounds(floor, grid)
    step = high - low  # 0 where the weight lies at or beyond the grid's top: nothing to learn there
    below = weight < low  # beyond the bottom: the floor is the bottom level, and so is the result
    step = np.where(below, 0.0, step)
    half = np.asarray(hessian, np.float64) / 2
    nearest = weight - grid.nearest(weight).astype(np.float64)
    reference = float(np.sum((nearest @ half) * nearest)) or 1.0
    start = np.clip((fraction - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
    v = np.log(start / (1 - start))
    moment, second = np.zeros_like(v), np.zeros_like(v)
    (beta1, beta2, epsilon), warmup = ADAM, int(WARMUP * iterations)
    for step_index in range(iterations):
        h, dh = soft_rounding(v)
        difference = weight - (low + h * step)
        gradient_h = -2 * (difference @ half) / reference * step
        if step_index >= warmup:
            beta = BETA[0] + (BETA[1] - BETA[0]) * (step_index - warmup) / max(iterations - warmup, 1)
            centred = 2 * h - 1
            gradient_h = gradient_h - regularization / h.size * beta * np.abs(centred) ** (beta - 1) * np.sign(centred) * 2
        gradient = gradient_h * dh
        moment = beta1 * moment + (1 - beta1) * gradient
        second = beta2 * second + (1 - beta2) * gradient**2
        v = v - lr * (moment / (1 - beta1 ** (step_index + 1))) / (np.sqrt(second / (1 - beta2 ** (step_index + 1))) + epsilon)
    final = ((v >= 0) & (step > 0)).astype(np.int64)  # a weight with one level in reach takes it
    return np.clip(floor + final, grid.qmin, grid.qmax), final
