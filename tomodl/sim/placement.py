# SPDX-License-Identifier: BSD-3-Clause
"""Random, non-overlapping placement of ellipsoids inside elliptic-cylinder regions.

Features are placed one at a time (largest first) by vectorized rejection sampling: a batch of
candidate centres is drawn inside the region and tested against every feature placed so far at
once.  The tests are conservative (they may reject a valid position, never accept an overlap):

* every feature is grown by ``gap / 2`` (``E + ball(g)`` lies inside the ellipsoid with
  semi-axes ``a_i + g``, by comparing support functions); two grown features are disjoint if
  their bounding spheres are, or (ellipsoids) if the Perram-Wertheim contact function reaches 1
  on a grid of its parameter; for two spheres the test is exact;
* a feature lies inside a region (inside ``outer``, outside ``inner``, two 2-D ellipses) if the
  disc bounding its shadow on the ``xy`` plane does, using
  ``|p + d|_E <= |p|_E + |d| / min(a, b)``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from tomodl.sim.config import SimulationError

#: Candidate centres tested per batch.
BATCH = 64
#: Values of lambda at which the contact function of two ellipsoids is evaluated.
LAMBDA_STEPS = 24


@dataclass(frozen=True)
class Region:
    """Where features may go: inside ``outer``, outside ``inner``, centres in ``z_range``.

    ``outer`` and ``inner`` are 2-D ellipses ``(x, y, a, b, phi)`` in pixels; ``value`` is the
    attenuation of the material there (a hole in it has value ``-value``).
    """

    outer: Tuple[float, float, float, float, float]
    inner: Optional[Tuple[float, float, float, float, float]]
    z_range: Tuple[float, float]
    value: float

    def room(self) -> float:
        """Largest radius a feature's shadow may have to fit (half the band of a shell)."""
        a, b = self.outer[2:4]
        if self.inner is None:
            return float(min(a, b))
        offset = np.hypot(self.inner[0] - self.outer[0], self.inner[1] - self.outer[1])
        ratio = max(self.inner[2] / a, self.inner[3] / b)
        return float(max(0.0, 0.5 * ((1.0 - ratio) * min(a, b) - offset)))

    def area(self) -> float:
        """Cross-section area in pixels**2."""
        a = np.pi * self.outer[2] * self.outer[3]
        return a - (np.pi * self.inner[2] * self.inner[3] if self.inner else 0.0)


def _ellipse_norm(p: np.ndarray, ell) -> np.ndarray:
    """``|p - centre|_E`` for points ``p`` (..., 2): < 1 inside the ellipse."""
    x0, y0, a, b, phi = ell
    dx, dy = p[..., 0] - x0, p[..., 1] - y0
    u = (dx * np.cos(phi) + dy * np.sin(phi)) / a
    v = (-dx * np.sin(phi) + dy * np.cos(phi)) / b
    return np.sqrt(u * u + v * v)


def shadow_radius(axes: np.ndarray, rot: np.ndarray) -> float:
    """Radius of the disc bounding an ellipsoid's shadow on the ``xy`` plane."""
    cov = (rot * axes[None, :] ** 2) @ rot.T
    return float(np.sqrt(np.linalg.eigvalsh(cov[:2, :2]).max()))


def contact_function(r: np.ndarray, cov_a: np.ndarray, cov_b: np.ndarray,
                     n_lambda: int = LAMBDA_STEPS) -> np.ndarray:
    """Perram-Wertheim contact function of ellipsoid pairs, maximised over a grid of lambda.

    ``F = max_l l (1 - l) r^T [(1 - l) S_a + l S_b]^{-1} r`` with ``S = R diag(axes**2) R^T``
    and ``r`` the centre difference; the ellipsoids overlap iff the true maximum is < 1.  The
    grid maximum is a lower bound, so ``>= 1`` on the grid proves them disjoint.

    Parameters
    ----------
    r : ndarray, shape (p, 3)
    cov_a, cov_b : ndarray, shape (p, 3, 3)

    Returns
    -------
    ndarray, shape (p,)
    """
    lam = ((np.arange(n_lambda) + 0.5) / n_lambda)[:, None, None, None]
    m = (1.0 - lam) * cov_a[None] + lam * cov_b[None]                       # (L, p, 3, 3)
    a, b, c = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    d, e, f = m[..., 0, 1], m[..., 1, 2], m[..., 0, 2]
    c00, c11, c22 = b * c - e * e, a * c - f * f, a * b - d * d               # adjugate (symmetric)
    c01, c12, c02 = e * f - d * c, d * f - a * e, d * e - b * f
    det = a * c00 + d * c01 + f * c02
    x, y, z = r[:, 0], r[:, 1], r[:, 2]
    quad = (x * x * c00 + y * y * c11 + z * z * c22
            + 2.0 * (x * y * c01 + y * z * c12 + x * z * c02)) / det
    lam = lam[:, 0, 0, 0][:, None]
    return np.max(lam * (1.0 - lam) * quad, axis=0)


class Packer:
    """Placed features of one phantom (a builder's local state, never shared).

    Every feature is grown by ``gap / 2`` for the overlap tests, so placed features end up at
    least ``gap`` apart.  Pairs farther apart than their bounding spheres are disjoint; near
    pairs of spheres overlap; other near pairs are decided by :func:`contact_function`.
    """

    def __init__(self, gap: float, max_tries: int) -> None:
        self.gap = float(gap)
        self.max_tries = int(max_tries)
        self.centres: List[np.ndarray] = []
        self.covs: List[np.ndarray] = []
        self.radii: List[float] = []
        self.spheres: List[bool] = []

    def _disjoint(self, cand: np.ndarray, cov: np.ndarray, radius: float,
                  sphere: bool) -> np.ndarray:
        if not self.centres:
            return np.ones(cand.shape[0], dtype=bool)
        pc, pr = np.array(self.centres), np.array(self.radii)
        d = cand[:, None, :] - pc[None, :, :]                                 # (B, K, 3)
        near = np.einsum("bki,bki->bk", d, d) < (radius + pr[None, :]) ** 2
        both = near & (np.array(self.spheres)[None, :] & sphere)
        bi, ki = np.nonzero(near & ~both)
        clash = both
        if bi.size:
            covs = np.array(self.covs)
            f = contact_function(d[bi, ki], np.broadcast_to(cov, (bi.size, 3, 3)), covs[ki])
            clash = clash.copy()
            clash[bi[f < 1.0], ki[f < 1.0]] = True
        return ~clash.any(axis=1)

    def _candidates(self, region: Region, reach: float, rng: np.random.Generator) -> np.ndarray:
        x0, y0, a, b, phi = region.outer
        scale = 1.0 - reach / min(a, b)
        if scale <= 0:
            return np.zeros((0, 3))
        rad = scale * np.sqrt(rng.random(BATCH))
        ang = 2 * np.pi * rng.random(BATCH)
        u, v = a * rad * np.cos(ang), b * rad * np.sin(ang)
        xy = np.column_stack([x0 + u * np.cos(phi) - v * np.sin(phi),
                              y0 + u * np.sin(phi) + v * np.cos(phi)])
        if region.inner is not None:
            ok = _ellipse_norm(xy, region.inner) - reach / min(region.inner[2:4]) >= 1.0
            xy = xy[ok]
        z = rng.uniform(region.z_range[0], region.z_range[1], xy.shape[0])
        return np.column_stack([xy, z])

    def place(self, region: Region, axes, rot, rng: np.random.Generator,
              z_margin: float = 0.0, tries: Optional[int] = None) -> Optional[np.ndarray]:
        """Place one ellipsoid with semi-axes ``axes`` and rotation ``rot`` in ``region``.

        Centres are drawn with ``z`` in ``region.z_range`` widened by ``z_margin`` on both sides.
        Returns the centre ``(3,)``, or None after ``tries`` (default ``max_tries``) rejected
        candidates.
        """
        axes = np.asarray(axes, dtype=np.float64)
        grown = axes + self.gap / 2.0
        cov = (rot * grown[None, :] ** 2) @ rot.T
        sphere = bool(np.ptp(axes) <= 1e-12 * axes.max())
        reach = shadow_radius(axes, rot) + self.gap
        zr = (region.z_range[0] - z_margin, region.z_range[1] + z_margin)
        widened = Region(region.outer, region.inner, zr, region.value)
        for _ in range(max(1, (tries or self.max_tries) // BATCH)):
            cand = self._candidates(widened, reach, rng)
            if cand.shape[0] == 0:
                continue
            ok = np.flatnonzero(self._disjoint(cand, cov, float(grown.max()), sphere))
            if ok.size:
                self.centres.append(cand[ok[0]])
                self.covs.append(cov)
                self.radii.append(float(grown.max()))
                self.spheres.append(sphere)
                return cand[ok[0]]
        return None


def require_fit(region: Region, reach: float, what: str) -> None:
    """Raise :class:`SimulationError` if ``what`` (of shadow radius ``reach``) cannot fit."""
    if reach >= region.room():
        raise SimulationError(
            f"{what} of radius {reach:.1f} px cannot fit in an object of semi-axes "
            f"{region.outer[2]:.1f} x {region.outer[3]:.1f} px; use fewer/smaller spheres "
            "(--spheres, --porosity) or a larger --size")
