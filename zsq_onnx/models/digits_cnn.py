"""The embedded default model: a small BatchNorm CNN trained on scikit-learn's digits.

Run ``python -m zsq_onnx.models.digits_cnn`` to retrain it and rewrite ``digits_cnn.pt``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zsq_onnx.io.data import Dataset
from zsq_onnx.io.preprocessing import Preprocessing
from zsq_onnx.models.entry import ZooEntry
from zsq_onnx.models.weights import load_strictly

ENTRY_NAME = "digits-cnn"
WEIGHTS = Path(__file__).with_name("digits_cnn.pt")
PREPROCESSING = Preprocessing(scale=1.0 / 16.0, mean=(0.3,), std=(0.4,), pixel_max=16.0)
SPLIT_SEED = 0
TRAIN_SEED = 0


def digits_split(split: str) -> Dataset:
    """The fixed train or test split of sklearn's digits, as uint8 [N,8,8,1] images (0..16)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.uint8)[..., None]
    train_x, test_x, train_y, test_y = train_test_split(
        images, digits.target, test_size=0.2, random_state=SPLIT_SEED, stratify=digits.target
    )
    if split == "train":
        return Dataset(train_x, train_y.astype(np.int64), "digits-train")
    return Dataset(test_x, test_y.astype(np.int64), "digits-test")


def build_module():
    """The untrained DigitsCNN module."""
    import torch.nn as nn

    def block(cin: int, cout: int, stride: int) -> list:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(1, 16, 1),
        *block(16, 32, 1),
        *block(32, 64, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def build(weights: Path | None = None):
    """DigitsCNN with the committed trained weights (or ``weights``, loaded strictly), in eval mode."""
    return load_strictly(build_module(), Path(weights) if weights is not None else WEIGHTS, ENTRY_NAME)


def train(epochs: int = 40, seed: int = TRAIN_SEED) -> tuple[object, float]:
    """Train DigitsCNN from scratch (seeded, CPU); return the module and its test top-1."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_set, test_set = digits_split("train"), digits_split("test")
    x_train = torch.from_numpy(PREPROCESSING.apply(train_set.images))
    y_train = torch.from_numpy(train_set.labels)
    module = build_module()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-2, weight_decay=1e-4)
    steps_per_epoch = (len(train_set) + 63) // 64
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-2, total_steps=epochs * steps_per_epoch)
    for _ in range(epochs):
        module.train()
        order = torch.from_numpy(rng.permutation(len(train_set)))
        for start in range(0, len(train_set), 64):
            index = order[start : start + 64]
            batch = x_train[index]
            shift = [int(v) for v in rng.integers(-1, 2, size=2)]
            batch = torch.roll(batch, shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(module(batch), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    module.eval()
    with torch.no_grad():
        logits = module(torch.from_numpy(PREPROCESSING.apply(test_set.images)))
    top1 = float((logits.argmax(1).numpy() == test_set.labels).mean())
    return module, top1


ENTRY = ZooEntry(
    name=ENTRY_NAME,
    build=build,
    input_shape=(1, 8, 8),
    preprocessing=PREPROCESSING,
    default_eval_data=lambda: digits_split("test"),
)


if __name__ == "__main__":
    import torch

    trained, accuracy = train()
    torch.save(trained.state_dict(), WEIGHTS)
    print(f"digits-cnn test top-1 {accuracy:.4f}; weights written to {WEIGHTS}")
