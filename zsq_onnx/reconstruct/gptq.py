"""GPTQ (Frantar et al. 2022) on one weight matrix, in numpy: rows are output channels, columns
the inputs a row reads (Cin/group x kh x kw for a Conv, in im2col order). Columns are rounded one
at a time, left to right, each one's rounding error spread over the columns not yet rounded
through the upper Cholesky factor of the inverse Hessian, in blocks of ``block_size`` columns as
the paper does. Any grid works that can say its nearest level per row: :class:`Grid` is the
uniform grid of a zsq static quantizer (scale and zero point per row or shared, [qmin, qmax]) or
the non-uniform one of a lookup-table quantizer (POST, powers of two)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from zsq_onnx.errors import InternalError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grid:
    """The levels a weight quantizer rounds to, per row, and the integer codes that name them.

    Uniform (``table`` None): code q in [qmin, qmax] stands for (q - zero_point) * scale, and
    the nearest code is QuantizeLinear's (half to even, in float32). Lookup table (see
    :meth:`lookup`): code q in [0, len(table) - 1] stands for table[q] * scale, ``table`` the
    sorted levels in units of each row's scale (POST, powers of two), and the nearest code is
    the lookup-table quantizer's (:func:`zsq_onnx.quantizers.lut.codes`: ties to the lower
    level). Either way a row's levels are sorted by code, which is all GPTQ (the nearest level)
    and AdaRound (the levels below and above) need. ``scale`` and ``zero_point`` hold one value
    per row (or one for all rows)."""

    scale: np.ndarray
    zero_point: np.ndarray
    qmin: int
    qmax: int
    table: np.ndarray | None = None

    @classmethod
    def lookup(cls, scale: np.ndarray, table: np.ndarray) -> Grid:
        """The grid of a lookup-table quantizer: ``table`` (sorted, in units of ``scale``) times
        ``scale`` per row."""
        table = np.asarray(table, np.float32).reshape(-1)
        if np.any(np.diff(table) <= 0):
            raise InternalError(f"a level table must be strictly increasing, got {table}")
        return cls(np.asarray(scale, np.float32), np.zeros((), np.int64), 0, len(table) - 1, table)

    def select(self, rows: slice | np.ndarray) -> Grid:
        """The grid of the rows ``rows`` alone."""
        pick = lambda param: param if np.size(param) == 1 else np.asarray(param).reshape(-1)[rows]  # noqa: E731
        return Grid(pick(self.scale), pick(self.zero_point), self.qmin, self.qmax, self.table)

    def levels(self, values: np.ndarray, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Nearest code of ``values`` ([rows] or [rows, columns]) as the quantizer computes it."""
        scale = self._per_row(self.scale, rows, values).astype(np.float32)
        scaled = np.asarray(values).astype(np.float32) / scale
        if self.table is not None:
            midpoints = ((self.table[1:] + self.table[:-1]) * np.float32(0.5)).astype(np.float32)
            return np.searchsorted(midpoints, scaled, side="left").astype(np.int64)
        zero_point = self._per_row(self.zero_point, rows, values)
        return np.clip(np.rint(scaled).astype(np.int64) + zero_point.astype(np.int64), self.qmin, self.qmax)

    def values(self, levels: np.ndarray, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """The float32 weights of codes ``levels``, as the quantizer's output computes them."""
        scale = self._per_row(self.scale, rows, levels).astype(np.float32).astype(np.float64)
        if self.table is not None:
            return (self.table[levels].astype(np.float64) * scale).astype(np.float32)
        zero_point = self._per_row(self.zero_point, rows, levels)
        return ((levels - zero_point.astype(np.int64)) * scale).astype(np.float32)

    def nearest(self, values: np.ndarray, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """``values`` rounded to the grid (float32)."""
        return self.values(self.levels(values, rows), rows)

    def floor(self, values: np.ndarray, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Per value, the code of the highest level at or below it (``qmin`` below the grid,
        ``qmax`` above it), compared on the levels' float32 values."""
        values = np.asarray(values, np.float64)
        scale = self._per_row(self.scale, rows, values).astype(np.float32).astype(np.float64)
        if self.table is not None:
            floor = np.searchsorted(self.table.astype(np.float64), values / scale, side="right") - 1
        else:
            floor = np.floor(values / scale).astype(np.int64) + self._per_row(self.zero_point, rows, values).astype(np.int64)
        floor = np.clip(floor, self.qmin, self.qmax).astype(np.int64)
        # the division may land a hair off a level: settle on the levels' own values
        above = np.minimum(floor + 1, self.qmax)
        floor = np.where((above > floor) & (self.values(above, rows) <= values), above, floor)
        below = np.maximum(floor - 1, self.qmin)
        return np.where((below < floor) & (self.values(floor, rows) > values), below, floor)

    @staticmethod
    def _per_row(param: np.ndarray, rows: slice | np.ndarray, like: np.ndarray) -> np.ndarray:
        param = np.asarray(param)
        if param.size == 1:
            return param.reshape(())
        param = param.reshape(-1)[rows]
        return param.reshape(param.shape + (1,) * (np.ndim(like) - 1))


def dampened(hessian: np.ndarray, damping: float) -> np.ndarray:
    """``hessian`` with dead inputs (zero diagonal: never nonzero on the calibration data) set to
    1 on the diagonal, and ``damping`` times the mean diagonal added to it."""
    hessian = np.array(hessian, np.float64)
    diagonal = np.diag(hessian).copy()
    dead = diagonal == 0
    hessian[dead, dead] = 1.0
    mean = float(np.mean(np.diag(hessian)))
    hessian[np.diag_indices_from(hessian)] += damping * (mean if mean > 0 else 1.0)
    return hessian


def inverse_cholesky(hessian: np.ndarray) -> np.ndarray:
    """The upper Cholesky factor U of H^-1 (H^-1 = U^T U) for a positive definite ``hessian``."""
    lower = np.linalg.cholesky(hessian)
    lower_inverse = np.linalg.solve(lower, np.eye(len(hessian)))
    inverse = lower_inverse.T @ lower_inverse
    return np.linalg.cholesky(inverse).T


def gptq_levels(weight: np.ndarray, hessian: np.ndarray, grid: Grid, damping: float = 0.01, block_size: int = 128) -> np.ndarray:
    """Integer levels of ``weight`` [rows, columns] chosen by GPTQ for the Hessian ``hessian``
    [columns, columns] of the layer's inputs (2 X X^T), on ``grid``. Retries with ten times the
    damping when the dampened Hessian is not numerically positive definite."""
    rows, columns = weight.shape
    if hessian.shape != (columns, columns):
        raise InternalError(f"GPTQ: a weight of {columns} columns needs a {columns}x{columns} Hessian, got {hessian.shape}")
    for attempt in range(4):
        try:
            upper = inverse_cholesky(dampened(hessian, damping * 10**attempt))
            break
        except np.linalg.LinAlgError:
            logger.debug("GPTQ: Hessian not positive definite at damping %g; retrying with more", damping * 10**attempt)
    else:
        raise InternalError("GPTQ: the dampened Hessian is not positive definite even at 1000x the damping")
    work = np.array(weight, np.float64)
    levels = np.zeros((rows, columns), np.int64)
    for start in range(0, columns, block_size):
        stop = min(start + block_size, columns)
        block = work[:, start:stop].copy()
        errors = np.zeros_like(block)
        inverse = upper[start:stop, start:stop]
        for i in range(stop - start):
            column = block[:, i]
            levels[:, start + i] = grid.levels(column)
            error = (column - grid.values(levels[:, start + i]).astype(np.float64)) / inverse[i, i]
            block[:, i:] -= np.outer(error, inverse[i, i:])
            errors[:, i] = error
        work[:, stop:] -= errors @ upper[start:stop, stop:]
    return levels


def output_error(weight: np.ndarray, rounded: np.ndarray, hessian: np.ndarray) -> np.ndarray:
    """Per row, (w - w_q) H (w - w_q)^T: the calibration objective ||W X - W_q X||^2 up to H's scale."""
    difference = np.asarray(weight, np.float64) - np.asarray(rounded, np.float64)
    return np.einsum("rc,cd,rd->r", difference, np.asarray(hessian, np.float64), difference)
