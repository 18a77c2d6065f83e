# SPDX-License-Identifier: BSD-3-Clause
"""The intensity normalization policy shared by training pairs and inference.

The paper maps every image to 8 bits before training.  A fixed 8-bit map cannot be applied
identically to real data (their attenuation range is unknown in advance), so tomodl uses a
per-slice affine map computed from the **network input only** (the sparse-view FBP):

``lo, hi`` = the ``low``-th and ``high``-th percentiles of the input inside the reconstruction
circle; ``x_n = (x - lo) / (hi - lo)``.  The training target is mapped with the same ``(lo, hi)``
and the network output is mapped back with the inverse, so ``tomodl.recon`` keeps attenuation
units.  The policy is recorded in pairs files and weight configs as :func:`Policy.to_dict`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Tuple

import numpy as np

from tomodl.metrics import circle_mask

#: span below which a slice is treated as empty (avoids dividing by ~0 on air-only slices)
MIN_SPAN = 1e-6


@dataclass(frozen=True)
class Policy:
    """Percentile normalization of a slice from its own FBP input.

    Attributes
    ----------
    low, high : float
        Percentiles (0-100) of the input that map to 0 and 1.
    circle : bool
        Compute the percentiles inside the inscribed reconstruction circle only.
    """

    low: float = 1.0
    high: float = 99.0
    circle: bool = True
    name: str = "percentile"

    def __post_init__(self) -> None:
        if self.name != "percentile":
            raise ValueError(f"Unknown normalization {self.name!r}; choose one of ['percentile']")
        if not 0.0 <= self.low < self.high <= 100.0:
            raise ValueError(f"need 0 <= low < high <= 100, got low={self.low}, high={self.high}")

    def to_dict(self) -> dict:
        """JSON-ready description, as stored in pairs files and weight configs."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Policy":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown normalization keys {sorted(unknown)}")
        return cls(**d)

    def stats(self, slices: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Per-slice ``(lo, hi)`` of an input stack.

        Parameters
        ----------
        slices : ndarray, shape (n, H, W) or (H, W)
            FBP input in attenuation units.

        Returns
        -------
        lo, hi : ndarray, shape (n, 1, 1) (or (1, 1)), float32
            ``hi - lo`` is at least :data:`MIN_SPAN`.
        """
        x = np.asarray(slices, dtype=np.float32)
        flat = x.reshape((-1,) + x.shape[-2:])
        if self.circle:
            vals = flat[:, circle_mask(flat.shape[-2:])]
        else:
            vals = flat.reshape(flat.shape[0], -1)
        lo, hi = np.percentile(vals, [self.low, self.high], axis=1).astype(np.float32)
        hi = np.maximum(hi, lo + MIN_SPAN)
        shape = x.shape[:-2] + (1, 1)
        return lo.reshape(shape), hi.reshape(shape)

    @staticmethod
    def forward(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Map attenuation values into the model's scale: ``(x - lo) / (hi - lo)``."""
        return (x - lo) / (hi - lo)

    @staticmethod
    def inverse(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Map model outputs back to attenuation units."""
        return x * (hi - lo) + lo
