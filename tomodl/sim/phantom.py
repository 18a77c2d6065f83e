# SPDX-License-Identifier: BSD-3-Clause
"""3-D analytic phantoms: ellipsoids and vertical elliptic cylinders, and their exact projections.

A :class:`Phantom` is a sum of primitives, each with an additive attenuation ``value`` (per
pixel; holes are negative values inside a positive material):

* ellipsoids ``(k, 10)``: ``(x, y, z, a, b, c, alpha, beta, gamma, value)``, centre and semi-axes
  in pixels; the orientation is the ZYZ Euler rotation ``Rz(alpha) Ry(beta) Rz(gamma)``
  (radians) applied to the axes ``(a, b, c)``.  Spheres, fibres (needles) and cracks (thin
  discs) are ellipsoids.
* cylinders ``(m, 8)``: ``(x, y, a, b, phi, z_lo, z_hi, value)``, elliptic cross-section as in
  :mod:`tomodl.sim.analytic`, axis along ``z`` (the rotation axis), from ``z_lo`` to ``z_hi``
  (``+-inf`` allowed: a sample longer than the field of view).

Coordinates are those of :mod:`tomodl.recon.geometry` with ``z`` pointing up: detector row
``i`` of ``n_rows`` is centred at ``z = (n_rows - 1) / 2 - i`` and covers one pixel in ``z``.
Parallel rays stay in a plane ``z = const``, and every plane section of an ellipsoid or a
vertical cylinder is an ellipse, so each detector row is the exact 2-D ellipse projection of
the sections, averaged over ``supersample_z`` planes across the row's height.  Ground-truth
slices average the same planes, so projections and ground truth describe one object.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import numpy as np

from tomodl.recon.geometry import default_center
from tomodl.sim.analytic import ellipse_sinogram, rasterize_rows

logger = logging.getLogger(__name__)

ELLIPSOID_COLUMNS = ("x", "y", "z", "a", "b", "c", "alpha", "beta", "gamma", "value")
CYLINDER_COLUMNS = ("x", "y", "a", "b", "phi", "z_lo", "z_hi", "value")


def rotation_zyz(alpha, beta, gamma) -> np.ndarray:
    """Rotation matrices ``Rz(alpha) @ Ry(beta) @ Rz(gamma)``, shape ``(..., 3, 3)``."""
    al, be, ga = (np.asarray(v, dtype=np.float64) for v in (alpha, beta, gamma))
    ca, sa, cb, sb, cg, sg = np.cos(al), np.sin(al), np.cos(be), np.sin(be), np.cos(ga), np.sin(ga)
    rows = [
        [ca * cb * cg - sa * sg, -ca * cb * sg - sa * cg, ca * sb],
        [sa * cb * cg + ca * sg, -sa * cb * sg + ca * cg, sa * sb],
        [-sb * cg, sb * sg, cb],
    ]
    return np.stack([np.stack(np.broadcast_arrays(*r), axis=-1) for r in rows], axis=-2)


def _frozen(arr, columns, name) -> np.ndarray:
    a = np.array(arr, dtype=np.float64, copy=True).reshape(-1, len(columns))
    if a.shape[0] and np.any(a[:, 3:6 if name == "ellipsoids" else 2:4] <= 0):
        raise ValueError(f"{name}: semi-axes must be positive")
    a.setflags(write=False)
    return a


@dataclass(frozen=True)
class Phantom:
    """A 3-D analytic phantom (see the module docstring for the column layouts).

    Attributes
    ----------
    ellipsoids : ndarray, shape (k, 10), float64
    cylinders : ndarray, shape (m, 8), float64
    meta : dict
        Provenance: family, seed, parameters (JSON-ready).
    """

    ellipsoids: np.ndarray = field(default_factory=lambda: np.zeros((0, 10)))
    cylinders: np.ndarray = field(default_factory=lambda: np.zeros((0, 8)))
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ellipsoids", _frozen(self.ellipsoids, ELLIPSOID_COLUMNS,
                                                       "ellipsoids"))
        object.__setattr__(self, "cylinders", _frozen(self.cylinders, CYLINDER_COLUMNS,
                                                      "cylinders"))

    def scaled(self, factor: float) -> "Phantom":
        """A copy with every attenuation value multiplied by ``factor``."""
        e, c = self.ellipsoids.copy(), self.cylinders.copy()
        e[:, 9] *= factor
        c[:, 7] *= factor
        return Phantom(e, c, dict(self.meta))

    def sectioner(self) -> Callable[[float], np.ndarray]:
        """A function ``z -> (k, 6)`` 2-D ellipses of the section at height ``z``."""
        return _Sectioner(self)


class _Sectioner:
    """Pre-computed plane-section coefficients of a phantom's ellipsoids."""

    def __init__(self, ph: Phantom) -> None:
        e = ph.ellipsoids
        rot = rotation_zyz(e[:, 6], e[:, 7], e[:, 8])
        quad = np.einsum("kij,kj,klj->kil", rot, 1.0 / e[:, 3:6] ** 2, rot)   # R diag(1/a^2) R^T
        q2, qv = quad[:, :2, :2], quad[:, :2, 2]
        self.w = np.linalg.solve(q2, qv[..., None])[..., 0] if e.shape[0] else np.zeros((0, 2))
        self.schur = quad[:, 2, 2] - np.einsum("ki,ki->k", qv, self.w)
        self.q2 = q2
        self.e = e
        self.half_z = 1.0 / np.sqrt(self.schur)
        self.cyl = ph.cylinders

    def __call__(self, z: float) -> np.ndarray:
        e = self.e
        dz = z - e[:, 2]
        hit = np.abs(dz) < self.half_z
        dz = dz[hit]
        k = 1.0 - dz * dz * self.schur[hit]
        centre = e[hit, :2] - dz[:, None] * self.w[hit]
        m = self.q2[hit] / k[:, None, None]
        p, q, r = m[:, 0, 0], m[:, 0, 1], m[:, 1, 1]
        phi = 0.5 * np.arctan2(2.0 * q, p - r)
        lam1 = p * np.cos(phi) ** 2 + 2.0 * q * np.sin(phi) * np.cos(phi) + r * np.sin(phi) ** 2
        lam2 = p + r - lam1
        ell = np.column_stack([centre, 1.0 / np.sqrt(lam1), 1.0 / np.sqrt(lam2), phi, e[hit, 9]])
        c = self.cyl
        c = c[(c[:, 5] <= z) & (z < c[:, 6])]
        return np.concatenate([c[:, [0, 1, 2, 3, 4, 7]], ell], axis=0)


def row_heights(n_rows: int, supersample_z: int = 2) -> np.ndarray:
    """Heights ``z`` of the planes sampled across each detector row.

    Returns
    -------
    ndarray, shape (n_rows, supersample_z), float64
        Row ``i`` covers ``z`` in ``(n_rows - 1) / 2 - i +- 0.5``; planes at the midpoints of
        ``supersample_z`` equal parts.
    """
    if int(supersample_z) < 1:
        raise ValueError(f"supersample_z must be a positive integer, got {supersample_z}")
    sub = 0.5 - (np.arange(supersample_z) + 0.5) / supersample_z
    return ((n_rows - 1) / 2.0 - np.arange(n_rows))[:, None] + sub[None, :]


def project(phantom: Phantom, theta, n_det: int, n_rows: int, *, center: Optional[float] = None,
            supersample_z: int = 2, rows: Optional[slice] = None,
            progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """Exact parallel-beam line integrals of a phantom, detector-pixel averaged.

    Parameters
    ----------
    phantom : Phantom
    theta : array_like, shape (n_angles,)
        Angles in radians.
    n_det, n_rows : int
        Detector columns and rows (rows are slices ``z``, see :func:`row_heights`).
    center : float, optional
        Rotation axis in detector pixels; default :func:`tomodl.recon.geometry.default_center`.
    supersample_z : int
        Planes averaged across each detector row's height (columns are integrated exactly).
    rows : slice, optional
        Compute only these detector rows.
    progress : callable, optional
        Called with ``1`` after each row (e.g. ``tqdm.update``).

    Returns
    -------
    ndarray, shape (n_angles, n_rows_selected, n_det), float32
        Line integrals (attenuation per pixel x pixels), TomoPy projection order.
    """
    th = np.asarray(theta, dtype=np.float64).ravel()
    center = default_center(n_det) if center is None else float(center)
    z = row_heights(n_rows, supersample_z)[rows if rows is not None else slice(None)]
    section = phantom.sectioner()
    out = np.empty((th.size, z.shape[0], n_det), dtype=np.float32)
    for i, planes in enumerate(z):
        acc = np.zeros((th.size, n_det))
        for zz in planes:
            acc += ellipse_sinogram(section(zz), th, n_det, center)
        out[:, i] = acc / planes.size
        if progress is not None:
            progress(1)
    return out


def ground_truth(phantom: Phantom, n: int, n_rows: int, *, supersample: int = 8,
                 supersample_z: int = 2, rows: Optional[slice] = None) -> np.ndarray:
    """Anti-aliased slices of a phantom on the reconstruction grid.

    Parameters
    ----------
    n : int
        Grid size (``num_gridx``, normally ``n_det``); pixel centres from
        :func:`tomodl.recon.geometry.image_coordinates`.
    n_rows : int
        Detector rows (one slice each).
    supersample, supersample_z : int
        Sub-rows per pixel row and planes per slice (coverage along ``x`` is exact).

    Returns
    -------
    ndarray, shape (n_rows_selected, n, n), float32
        Attenuation per pixel, in the units and grid of :func:`tomodl.recon`.
    """
    z = row_heights(n_rows, supersample_z)[rows if rows is not None else slice(None)]
    section = phantom.sectioner()
    out = np.empty((z.shape[0], n, n), dtype=np.float32)
    for i, planes in enumerate(z):
        acc = np.zeros((n, n))
        for zz in planes:
            acc += rasterize_rows(section(zz), n, supersample=supersample)
        out[i] = acc / planes.size
    return out
