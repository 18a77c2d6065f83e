# SPDX-License-Identifier: BSD-3-Clause
"""The one definition of the reconstruction grid and the detector coordinate.

Every projector and back-projector in tomodl (FBP, the analytic simulators, centre finding)
uses these functions, so simulated data and reconstructions share one grid and one
orientation: TomoPy gridrec's.

Image ``img[row, col]`` of size ``N x N`` has pixel centres at::

    x = col - x0,    y = (N - 1 - row) - x0,    x0 = (N + 1) // 2

in units of pixels (``y`` points up).  This is where ``tomopy.recon(..., algorithm="gridrec")``
puts them (``gridrec.c``: output column ``j`` is spatial index ``j - offset`` and output row
``N - 1 - k`` is spatial index ``k - offset`` with ``offset = pdim/2 - (pdim - N)//2``): the
rotation axis sits at ``(row, col) = (N - 1 - x0, x0)``, half a pixel right of and above the
geometric centre ``((N - 1)/2, (N - 1)/2)`` for even ``N`` and one pixel for odd ``N``.

A ray at angle ``theta`` (radians) through ``(x, y)`` meets the detector at column
``u = x cos(theta) + y sin(theta) + center``, with ``center`` the rotation axis in
detector-pixel units (column index, pixel centres at integers).  TomoPy's default ``center``
is ``n_det / 2`` (``tomopy.sim.project.get_center``), not ``(n_det - 1) / 2``.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def grid_origin(n: int) -> float:
    """Column index ``x0`` of the rotation axis in an ``n x n`` grid (its row is ``n - 1 - x0``)."""
    return float((int(n) + 1) // 2)


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
    x0 = grid_origin(n)
    idx = np.arange(n, dtype=np.float64)
    return idx - x0, (n - 1 - idx) - x0


def detector_coordinate(x, y, theta, center):
    """Detector column hit by the ray at angle ``theta`` through ``(x, y)``.

    All arguments broadcast; ``theta`` in radians, the rest in pixels.
    """
    return x * np.cos(theta) + y * np.sin(theta) + center


def default_center(n_det: int) -> float:
    """TomoPy's default rotation axis for ``n_det`` detector columns: ``n_det / 2``."""
    return n_det / 2.0
