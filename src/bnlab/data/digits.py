"""scikit-learn's bundled digits (UCI optical digits): 1797 8x8 grey images, values 0..16.

Split deterministically: a stratified shuffle with a fixed seed puts 1437 images in train and 360
in test. Pixels are divided by 16 so they lie in [0, 1]; x has shape (N, 1, 8, 8).
"""

from __future__ import annotations

import numpy as np
import torch

from .dataset import Dataset

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def load() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    return Dataset(
        "digits",
        x_train=torch.from_numpy(np.ascontiguousarray(x_tr)),
        y_train=torch.from_numpy(y_tr),
        x_test=torch.from_numpy(np.ascontiguousarray(x_te)),
        y_test=torch.from_numpy(y_te),
        classes=tuple(str(d) for d in range(10)),
    )
