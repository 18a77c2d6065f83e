# SPDX-License-Identifier: BSD-3-Clause
"""Exact parallel-beam projections and anti-aliased rasterization of 2-D ellipse phantoms.

An ellipse phantom is an array ``(k, 6)`` of rows ``(x0, y0, a, b, phi, value)``: centre and
semi-axes in pixels (in the frame of :mod:`tomodl.recon.geometry`), rotation ``phi`` in radians
and an attenuation ``value`` per pixel that *adds* where ellipses overlap (Shepp-Logan style).
The line integral through an ellipse is closed-form, so projections are exact: no pixel-grid
forward projector is involved (no inverse crime).
"""
from __future__ import annotations

import numpy as np

from tomodl.recon.geometry import image_coordinates


def _check_ellipses(ellipses) -> np.ndarray:
    e = np.atleast_2d(np.asarray(ellipses, dtype=np.float64))
    if e.ndim != 2 or e.shape[1] != 6:
        raise ValueError(f"ellipses must have shape (k, 6) = (x0, y0, a, b, phi, value), got {e.shape}")
    if np.any(e[:, 2:4] <= 0):
        raise ValueError("ellipse semi-axes a, b must be positive")
    return e


def ellipse_sinogram(ellipses, theta, n_det: int, center: float, *, supersample: int = 4) -> np.ndarray:
    """Exact line integrals of an ellipse phantom, averaged over each detector pixel.

    Parameters
    ----------
    ellipses : array_like, shape (k, 6)
        ``(x0, y0, a, b, phi, value)`` rows, lengths in pixels, ``phi`` in radians.
    theta : array_like, shape (n_angles,)
        Projection angles in radians.
    n_det : int
        Number of detector columns.
    center : float
        Rotation axis in detector-pixel units.
    supersample : int
        Sub-samples per detector pixel (area average).

    Returns
    -------
    ndarray, shape (n_angles, n_det), float64
        Line integrals in (attenuation per pixel) x pixels.
    """
    e = _check_ellipses(ellipses)
    th = np.asarray(theta, dtype=np.float64).ravel()[:, None, None]
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    s = (np.arange(n_det)[:, None] + sub[None, :] - center)[None]  # (1, det, sub)
    out = np.zeros((th.shape[0], n_det, supersample))
    for x0, y0, a, b, phi, val in e:
        s0 = x0 * np.cos(th) + y0 * np.sin(th)
        r2 = (a * np.cos(th - phi)) ** 2 + (b * np.sin(th - phi)) ** 2
        out += 2.0 * val * a * b * np.sqrt(np.clip(r2 - (s - s0) ** 2, 0.0, None)) / r2
    return out.mean(axis=-1)


def rasterize_ellipses(ellipses, n: int, *, supersample: int = 4) -> np.ndarray:
    """Anti-aliased image of an ellipse phantom on the ``n x n`` reconstruction grid.

    Returns
    -------
    ndarray, shape (n, n), float32
        Attenuation per pixel, each pixel the average over ``supersample**2`` sub-pixels.
    """
    e = _check_ellipses(ellipses)
    x, y = image_coordinates(n)
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    xs = (x[:, None] + sub[None, :]).ravel()
    ys = (y[:, None] - sub[None, :]).ravel()
    X, Y = np.meshgrid(xs, ys, indexing="xy")
    img = np.zeros_like(X)
    for x0, y0, a, b, phi, val in e:
        dx, dy = X - x0, Y - y0
        u = (dx * np.cos(phi) + dy * np.sin(phi)) / a
        v = (-dx * np.sin(phi) + dy * np.cos(phi)) / b
        img += val * (u * u + v * v <= 1.0)
    return img.reshape(n, supersample, n, supersample).mean(axis=(1, 3)).astype(np.float32)
