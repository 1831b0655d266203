"""The data both sides of a parity run see: numpy arrays, generated or loaded once.

Every array is made here, in float64 numpy, and handed to the torch program and to the JAX run
alike (each casts it to the run's dtype), so the two sides start from bit-identical inputs and
draw their minibatches in the same order.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np


@dataclasses.dataclass(frozen=True)
class ParityData:
    """A classification training set shared by the torch and the JAX side of a run."""

    name: str  # "random" or the dataset's name ("fashion_mnist", "digits")
    x: np.ndarray  # float64 [n, features], already normalized
    y: np.ndarray  # int64 [n], labels in [0, num_classes)
    num_classes: int

    @property
    def features(self) -> int:
        """Input dimension."""
        return int(self.x.shape[1])


def random_classification(
    seed: int = 0, n: int = 100, features: int = 10, num_classes: int = 2
) -> ParityData:
    """The width examples' dummy data: ``x ~ N(0, 1)`` of shape ``[n, features]``, uniform labels.

    The source draws ``torch.randn(100, 10)`` and ``torch.randint(0, 2, (100,))`` from torch's
    global generator; here the same distributions come from a seeded numpy generator so that
    both sides get identical arrays.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features))
    y = rng.integers(0, num_classes, size=n).astype(np.int64)
    return ParityData("random", x, y, num_classes)


@functools.cache
def image_classification(name: str = "auto", data_dir: str | None = None) -> ParityData:
    """The training split of the image examples' dataset, normalized, as float64 numpy.

    Loaded with :func:`jaxlr.data.load_dataset` (``download=False``: a parity run never touches
    the network) and standardized by its ``normalize`` (one scalar mean/std of the training
    pixels), computed in float64.

    Args:
      name: ``"fashion_mnist"``, ``"mnist"``, ``"digits"`` (sklearn's 8x8 digits: 64 features,
        1,437 training images), or ``"auto"``: Fashion-MNIST when its IDX files are found in
        :mod:`jaxlr.data`'s default places, else digits. Files that are found but corrupt are an
        error, never a reason to fall back.
      data_dir: where the IDX files are, if not in jaxlr's default places. Naming it makes
        ``"auto"`` mean Fashion-MNIST from there: a directory without them is an error.

    Returns:
      The training images flattened to ``[n, features]`` and their labels.
    """
    from jaxlr.data import find_idx_dir, load_dataset

    if name == "auto":
        found = data_dir is not None or find_idx_dir("fashion_mnist") is not None
        return image_classification("fashion_mnist" if found else "digits", data_dir)
    ds = load_dataset(name, data_dir=data_dir, download=False)
    x = np.asarray(ds.normalize(np.asarray(ds.x_train), np.float64), np.float64)
    y = np.asarray(ds.y_train).astype(np.int64)
    return ParityData(ds.name, x.reshape(len(x), -1), y, int(ds.num_classes))


def batch_indices(seed: int, n: int, batch_size: int, steps: int) -> np.ndarray:
    """Minibatch indices for ``steps`` SGD steps: shuffled epochs, last partial batch dropped.

    Epoch ``e`` uses ``np.random.default_rng([seed, e]).permutation(n)`` cut into
    ``n // batch_size`` batches (as ``DataLoader(shuffle=True, drop_last=True)`` would: 60,000
    images in batches of 64 give the Fashion-MNIST width experiment's 937 batches per epoch).

    Returns:
      int64 array ``[steps, batch_size]``; row ``t`` is the batch of step ``t``.
    """
    per_epoch = n // batch_size
    if per_epoch == 0:
        raise ValueError(f"batch size {batch_size} is larger than the dataset ({n})")
    epochs = -(-steps // per_epoch)
    rows = [
        np.random.default_rng([seed, e]).permutation(n)[: per_epoch * batch_size]
        for e in range(epochs)
    ]
    return np.concatenate(rows).reshape(-1, batch_size)[:steps].astype(np.int64)
