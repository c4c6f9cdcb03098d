"""The pool of distilled inputs that fine-tuning draws its batches from, with augmentation."""

from __future__ import annotations

import logging

import numpy as np

from zsq_onnx import distributed

logger = logging.getLogger(__name__)


class SyntheticPool:
    """Distilled inputs (normalized NCHW float32); each batch is drawn without replacement from a
    reshuffled pool, flipped left-right at random and shifted by a random crop of the input
    padded with zeros by 1/8 of its size, so the student sees new views of the few images. As a
    fine-tuning source it has no training of its own (``loss_curve`` stays empty)."""

    def __init__(self, inputs: np.ndarray, seed: int = 0, flip: bool = True, shift: bool = True) -> None:
        if len(inputs) == 0:
            raise ValueError("the synthetic pool is empty")
        self.inputs = np.ascontiguousarray(inputs, dtype=np.float32)
        self.rng = np.random.default_rng(seed)
        self.flip, self.shift = flip, shift
        self._order: list[int] = []
        self.loss_curve: list[float] = []
        logger.debug("synthetic pool: %d inputs of shape %s, flip %s, shift %s", len(inputs), tuple(inputs.shape[1:]), flip, shift)

    def __len__(self) -> int:
        return len(self.inputs)

    def _indices(self, size: int) -> np.ndarray:
        while len(self._order) < size:
            self._order += self.rng.permutation(len(self.inputs)).tolist()
        chosen, self._order = self._order[:size], self._order[size:]
        return np.asarray(chosen)

    def batch(self, size: int) -> np.ndarray:
        """``size`` augmented samples."""
        batch = self.inputs[self._indices(size)].copy()
        if self.flip:
            flipped = self.rng.random(size) < 0.5
            batch[flipped] = batch[flipped, ..., ::-1]
        if self.shift and batch.ndim == 4:
            pad = max(batch.shape[-1] // 8, 1)
            padded = np.pad(batch, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
            height, width = batch.shape[-2:]
            for index, (top, left) in enumerate(self.rng.integers(0, 2 * pad + 1, size=(size, 2))):
                batch[index] = padded[index, :, top : top + height, left : left + width]
        return batch

    def next_batch(self, size: int, student: object = None) -> np.ndarray:
        """The fine-tuning source (:class:`zsq_onnx.finetune.loop.BatchSource`): this rank's
        :func:`~zsq_onnx.distributed.part` of a batch of ``size``, whatever the student. Every
        rank draws the whole batch, so the ranks' parts together are the single-process batch."""
        return self.batch(size)[distributed.part(size)]

    def status(self) -> dict[str, str]:
        """Nothing to show beside fine-tuning's own loss."""
        return {}
