# SPDX-License-Identifier: BSD-3-Clause
"""Shared fixtures: tiny synthetic DXchange scans and the path of the shared real data."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

#: Shared read-only material (real scan, peer fixtures), next to the repository; tests skip
#: when it is absent.
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TOOTH = SHARED / "data" / "tooth.h5"

#: A small ellipse phantom (x0, y0, a, b, phi, value) in pixels, attenuation per pixel.
PHANTOM = np.array([
    (0.0, 0.0, 13.0, 10.0, 0.3, 0.010),
    (3.0, -2.0, 3.5, 2.0, 0.0, 0.020),
    (-5.0, 4.0, 2.0, 2.5, 0.0, -0.005),
    (6.0, 5.0, 1.5, 1.0, 0.5, 0.030),
])


class TinyScan(NamedTuple):
    """A synthetic scan on disk and the exact data it was made from."""

    path: Path
    lineint: np.ndarray    # (n_angles, n_rows, n_det) float32 exact line integrals
    theta: np.ndarray      # (n_angles,) float32 radians
    center: float          # true rotation axis, pixels


def make_lineint(theta, n_rows: int, n_det: int, center: float) -> np.ndarray:
    """Exact line integrals ``(n_angles, n_rows, n_det)`` float32: one phantom per row, scaled."""
    from tomodl.sim.analytic import ellipse_sinogram

    rows = [ellipse_sinogram(PHANTOM * [1, 1, 1, 1, 1, 1 + 0.5 * r], theta, n_det, center)
            for r in range(n_rows)]
    return np.stack(rows, axis=1).astype(np.float32)


def write_scan(path: Path, theta, n_rows: int = 3, n_det: int = 37,
               center: float = 17.3) -> TinyScan:
    """Write raw counts ``dark + (flat - dark) exp(-p)`` with flats and darks as DXchange."""
    from tomodl.io import write_dx

    theta = np.asarray(theta, dtype=np.float32)
    p = make_lineint(theta, n_rows, n_det, center)
    dark = np.full((4, n_rows, n_det), 100.0, np.float32)
    flat = np.full((5, n_rows, n_det), 10000.0, np.float32)
    flat *= 1.0 + 0.05 * np.sin(np.arange(n_det) / 3.0)       # a non-uniform beam profile
    proj = dark[0] + (flat[0] - dark[0]) * np.exp(-p)
    write_dx(path, proj.astype(np.float32), flat, dark, theta, theta_units="deg")
    return TinyScan(Path(path), p, theta, center)


@pytest.fixture
def rng():
    """A seeded generator."""
    return np.random.default_rng(1234)


@pytest.fixture
def tiny_scan(tmp_path) -> TinyScan:
    """33 angles over [0, pi) x 3 rows x 37 detector columns, axis at 17.3 (middle 18.5)."""
    theta = np.linspace(0.0, np.pi, 33, endpoint=False)
    return write_scan(tmp_path / "tiny.h5", theta)


@pytest.fixture
def tooth_path() -> Path:
    """The real tooth scan (skips when the shared data are absent)."""
    if not TOOTH.is_file():
        pytest.skip(f"shared real data not found at {TOOTH}")
    return TOOTH


def save_tiny_unet(folder: Path, **config) -> Path:
    """Save a tiny untrained U-Net (base 4, depth 2) as a weights folder; ``config`` goes to
    ``save_weights`` (e.g. ``filter_name``, ``sparse_factor``).  An untrained residual network
    returns its input, so outputs stay checkable."""
    from tomodl.models.registry import create_model
    from tomodl.models.weights import save_weights

    args = {"base_filters": 4, "depth": 2}
    return save_weights(create_model("unet", **args), folder, arch="unet", model_args=args,
                        **config)
