# SPDX-License-Identifier: BSD-3-Clause
"""The one definition of the reconstruction grid and the detector coordinate.

Every projector and back-projector in tomodl (FBP, the analytic simulators, centre finding)
uses these two functions, so simulated data and reconstructions share one grid and one
orientation: TomoPy gridrec's.

Image ``img[row, col]`` has pixel centres at ``x = col - c``, ``y = c - row`` (``y`` points
up, ``c = (N - 1) / 2``), in units of pixels.  A ray at angle ``theta`` (radians) through the
point ``(x, y)`` meets the detector at column ``u = x cos(theta) + y sin(theta) + center``,
with ``center`` the rotation axis in detector-pixel units.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def image_coordinates(n: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates of an ``n x n`` reconstruction grid.

    Parameters
    ----------
    n : int
        Grid size (``num_gridx``).

    Returns
    -------
    x : ndarray, shape (n,), float64
        ``x`` of each column, in pixels from the rotation axis.
    y : ndarray, shape (n,), float64
        ``y`` of each row, in pixels from the rotation axis (decreasing: row 0 is the top).
    """
    c = (n - 1) / 2.0
    idx = np.arange(n, dtype=np.float64)
    return idx - c, c - idx


def detector_coordinate(x, y, theta, center):
    """Detector column hit by the ray at angle ``theta`` through ``(x, y)``.

    All arguments broadcast; ``theta`` in radians, the rest in pixels.
    """
    return x * np.cos(theta) + y * np.sin(theta) + center


def default_center(n_det: int) -> float:
    """TomoPy's default rotation axis for ``n_det`` detector columns: the detector middle."""
    return n_det / 2.0
