"""scikit-learn's bundled 8x8 digits: the embedded default data set (no download)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch

from dilt.data import DataBundle, TensorImages, register_dataset, stratified_split


def read_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 images (n, 8, 8) and labels, read from the CSV inside scikit-learn's package
    (the same data as ``sklearn.datasets.load_digits``, without its ~1 s import)."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(np.int64)


def _digits(root, seed: int, val_fraction: float, test_fraction: float, transpose: bool,
            name: str) -> DataBundle:
    images, target = read_digits()
    x = torch.tensor(images, dtype=torch.float32) / 16.0  # pixel values 0..16 -> 0..1
    if transpose:
        x = x.transpose(1, 2).flip(2)  # a rotated copy: the same classes, new spatial statistics
    x = ((x - 0.5) / 0.5).unsqueeze(1)  # (n, 1, 8, 8), centred
    y = target
    # the test split is fixed (seed 0) so every seed is evaluated on the same images;
    # the validation split is carved from the remaining training images with ``seed``
    trainval, test = stratified_split(y, test_fraction, seed=0)
    rest, val = stratified_split(y[trainval], val_fraction, seed=seed)
    tr, va = trainval[rest], trainval[val]

    def part(idx):
        return TensorImages(x[idx], torch.as_tensor(y[idx]))

    return DataBundle(name, part(tr), part(va), part(test), y[tr], y[va], y[test],
                      num_classes=10, input_shape=(1, 8, 8), class_names=[str(i) for i in range(10)])


@register_dataset("digits")
def digits(root=None, *, seed: int = 0, val_fraction: float, test_fraction: float = 0.25):
    return _digits(root, seed, val_fraction, test_fraction, transpose=False, name="digits")


@register_dataset("digits_rot")
def digits_rot(root=None, *, seed: int = 0, val_fraction: float, test_fraction: float = 0.25):
    """Digits rotated by 90 degrees: a transfer target with the same size but new features."""
    return _digits(root, seed, val_fraction, test_fraction, transpose=True, name="digits_rot")
