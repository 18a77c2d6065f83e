# SPDX-License-Identifier: BSD-3-Clause
"""Held-out pixel phantoms (tomodl.sim.textures): grid, families, projections."""
from pathlib import Path

import numpy as np
import pytest

from tomodl.errors import SimulationError
from tomodl.recon.geometry import image_coordinates
from tomodl.sim.textures import (OBJECT_RADIUS, TEXTURES, Grid, downsample, make_texture,
                                 project_fine, sparse_sinogram)

PACKAGE = Path(__file__).resolve().parents[1] / "tomodl"


def test_fine_grid_blocks_land_on_the_coarse_pixels():
    for n, up in ((33, 3), (32, 4), (20, 1)):
        g = Grid(n, up)
        x, y = image_coordinates(n)
        np.testing.assert_allclose(downsample(g.x, up), np.broadcast_to(x, (n, n)), atol=1e-12)
        np.testing.assert_allclose(downsample(g.y, up), np.broadcast_to(y[:, None], (n, n)),
                                   atol=1e-12)


@pytest.mark.parametrize("family", sorted(TEXTURES))
def test_families_are_seeded_bounded_and_structured(family):
    n, up = 47, 3
    a = make_texture(family, n, rng=3, upsample=up)
    assert a.shape == (n * up, n * up) and a.dtype == np.float32
    assert np.all(np.isfinite(a)) and a.min() >= 0
    np.testing.assert_array_equal(a, make_texture(family, n, rng=3, upsample=up))
    assert not np.array_equal(a, make_texture(family, n, rng=4, upsample=up))
    g = Grid(n, up)
    outside = np.hypot(g.x, g.y) > OBJECT_RADIUS * n / 2 + 0.5
    assert not np.any(a[outside])
    inside = a[np.hypot(g.x, g.y) < 0.3 * n]
    assert np.unique(inside).size >= 2           # not a uniform disc
    truth = downsample(a, up)
    peak = max(truth.sum(0).max(), truth.sum(1).max())
    assert 1.0 - 1e-4 <= peak <= 2.5 + 1e-4      # largest line integral in ABSORBANCE


def test_unknown_family_and_bad_sizes_name_the_fix():
    with pytest.raises(SimulationError, match="grains"):
        make_texture("foam", 32)
    with pytest.raises(SimulationError, match="n >= 16"):
        make_texture("grains", 8)
    with pytest.raises(ValueError, match="multiple"):
        downsample(np.zeros((7, 9)), 2)


def _disc(n, up, cx, cy, r, mu):
    g = Grid(n, up)
    return (((g.x - cx) ** 2 + (g.y - cy) ** 2) <= r * r).astype(np.float32) * mu


@pytest.mark.parametrize("n", [33, 40])
def test_project_fine_matches_the_analytic_disc(n):
    """Exact chord lengths and the ray geometry u = x cos + y sin + n/2 on the coarse detector."""
    cx, cy, r, mu = 4.3, -5.2, 6.0, 0.02
    theta = np.linspace(0, np.pi, 7, endpoint=False)
    p = project_fine(_disc(n, 3, cx, cy, r, mu), theta, n, 3)
    assert p.shape == (7, n)
    uc = cx * np.cos(theta) + cy * np.sin(theta) + n / 2
    d = np.arange(n)[None, :] - uc[:, None]

    def area(t):       # integral of the chord 2 sqrt(r^2 - t^2) from -r to t
        t = np.clip(t, -r, r)
        return t * np.sqrt(r * r - t * t) + r * r * np.arcsin(t / r)

    chord = mu * (area(d + 0.5) - area(d - 0.5))     # mean over each detector pixel
    assert np.abs(p - chord).max() < 0.05 * chord.max()
    centroid = (p * np.arange(n)).sum(1) / p.sum(1)
    np.testing.assert_allclose(centroid, uc, atol=0.03)


def test_project_fine_needs_an_odd_upsampling():
    with pytest.raises(SimulationError, match="odd"):
        project_fine(np.zeros((64, 64)), [0.0], 32, 2)
    with pytest.raises(SimulationError, match="must be"):
        project_fine(np.zeros((60, 60)), [0.0], 32, 3)


def test_sparse_sinogram_is_noisy_data_of_the_phantom():
    n = 41
    fine = make_texture("grains", n, rng=0, upsample=3)
    theta = np.linspace(0, np.pi, 9, endpoint=False)
    exact = project_fine(fine, theta, n, 3)
    s = sparse_sinogram(fine, theta, n, 3, rng=1, flux=1e6)
    assert s.shape == (9, n) and s.dtype == np.float32
    assert np.abs(s - exact).max() < 0.05 * exact.max()
    np.testing.assert_array_equal(s, sparse_sinogram(fine, theta, n, 3, rng=1, flux=1e6))
    noisy = sparse_sinogram(fine, theta, n, 3, rng=1, flux=1e3)
    assert np.std(noisy - exact) > 3 * np.std(s - exact)    # Poisson noise grows as flux drops


def test_training_never_uses_the_held_out_families():
    for path in (PACKAGE / "training").rglob("*.py"):
        assert "textures" not in path.read_text(encoding="utf-8"), path
