# SPDX-License-Identifier: BSD-3-Clause
"""Exact parallel-beam projections and anti-aliased rasterization of 2-D ellipse phantoms.

An ellipse phantom is an array ``(k, 6)`` of rows ``(x0, y0, a, b, phi, value)``: centre and
semi-axes in pixels (in the frame of :mod:`tomodl.recon.geometry`), rotation ``phi`` in radians
(``a`` lies along the direction ``phi``) and an attenuation ``value`` per pixel that *adds*
where ellipses overlap (Shepp-Logan style).

Projections are exact: the chord of an ellipse is ``2 v a b / r**2 * sqrt(r**2 - t**2)`` at
distance ``t`` from its projected centre (``r`` its half-width at that angle), and its integral
over a detector pixel is closed-form, so every detector value is the exact average over the
pixel width (no sub-sampling, no pixel-grid forward projector: no inverse crime).  Only the
pixels an ellipse shadows are evaluated (ragged, vectorized index arrays), so the cost grows
with the summed widths of the ellipses, not with ``n_ellipses * n_det``.

Rasterization is exact along ``x`` (each pixel gets the length of the ellipse's chord inside
it) and super-sampled along ``y``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from tomodl.recon.geometry import detector_coordinate, image_coordinates

#: Elements of the ragged work arrays processed at once (bounds memory to ~10 x 8 x this bytes).
RAGGED_CHUNK = 2_000_000


def _check_ellipses(ellipses) -> np.ndarray:
    e = np.asarray(ellipses, dtype=np.float64)
    if e.size == 0:
        return np.zeros((0, 6))
    e = np.atleast_2d(e)
    if e.ndim != 2 or e.shape[1] != 6:
        raise ValueError(f"ellipses must have shape (k, 6) = (x0, y0, a, b, phi, value), got "
                         f"{e.shape}")
    if np.any(e[:, 2:4] <= 0):
        raise ValueError("ellipse semi-axes a, b must be positive")
    return e


def ragged_ranges(starts: np.ndarray, counts: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Concatenated integer ranges ``starts[i] + arange(counts[i])``.

    Returns
    -------
    seg : ndarray of int64, shape (sum(counts),)
        Which range each element belongs to.
    pos : ndarray of int64, same shape
        The integer values.
    """
    counts = np.asarray(counts, dtype=np.int64)
    offsets = np.cumsum(counts) - counts
    seg = np.repeat(np.arange(counts.size), counts)
    pos = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - offsets, counts)
    return seg, pos


def _chunks(counts: np.ndarray, limit: int):
    """Split ``range(len(counts))`` into consecutive slices of summed counts near ``limit``."""
    cum = np.cumsum(counts)
    start = 0
    while start < counts.size:
        base = cum[start - 1] if start else 0
        stop = int(np.searchsorted(cum, base + limit, side="right"))
        stop = max(stop, start + 1)
        yield slice(start, stop)
        start = stop


def _exact_sinogram(e: np.ndarray, theta: np.ndarray, n_det: int, center: float) -> np.ndarray:
    """Pixel-integrated line integrals, ``(n_angles, n_det)`` float64 (see module docstring)."""
    m = theta.size
    out = np.zeros(m * n_det)
    if e.shape[0] == 0 or m == 0:
        return out.reshape(m, n_det)
    x0, y0, a, b, phi, val = (e[:, i][None, :] for i in range(6))
    th = theta[:, None]
    s0 = detector_coordinate(x0, y0, th, center)                           # (m, k)
    r = np.sqrt((a * np.cos(th - phi)) ** 2 + (b * np.sin(th - phi)) ** 2)
    # detector edge j sits at u = j - 0.5; keep the edges that bracket [s0 - r, s0 + r]
    lo = np.clip(np.floor(s0 - r + 0.5), 0, n_det).astype(np.int64).ravel()
    hi = np.clip(np.ceil(s0 + r + 0.5), 0, n_det).astype(np.int64).ravel()
    counts = hi - lo + 1
    s0, r = s0.ravel(), r.ravel()
    mass = np.broadcast_to(val * a * b, (m, e.shape[0])).ravel()          # pi * mass = area * value
    row = np.repeat(np.arange(m), e.shape[0]) * n_det
    for part in _chunks(counts, RAGGED_CHUNK):
        seg, j = ragged_ranges(lo[part], counts[part])
        seg += part.start
        tau = np.clip((j - 0.5 - s0[seg]) / r[seg], -1.0, 1.0)
        prim = tau * np.sqrt(1.0 - tau * tau) + np.arcsin(tau)             # antiderivative / mass
        keep = seg[1:] == seg[:-1]                                          # edge j -> edge j + 1
        sk = seg[:-1][keep]
        w = (prim[1:] - prim[:-1])[keep] * mass[sk]
        out += np.bincount(row[sk] + j[:-1][keep], weights=w, minlength=m * n_det)
    return out.reshape(m, n_det)


def ellipse_sinogram(ellipses, theta, n_det: int, center: float, *,
                     supersample: Optional[int] = None) -> np.ndarray:
    """Exact line integrals of an ellipse phantom, averaged over each detector pixel.

    Parameters
    ----------
    ellipses : array_like, shape (k, 6)
        ``(x0, y0, a, b, phi, value)`` rows, lengths in pixels, ``phi`` in radians.
    theta : array_like, shape (n_angles,)
        Projection angles in radians.
    n_det : int
        Number of detector columns; column ``j`` covers ``u`` in ``[j - 0.5, j + 0.5]``.
    center : float
        Rotation axis in detector-pixel units.
    supersample : int, optional
        ``None`` (default): the exact average over each detector pixel (closed form).  An
        integer: the midpoint rule with that many point samples per pixel (a reference
        implementation, kept for cross-checks).

    Returns
    -------
    ndarray, shape (n_angles, n_det), float64
        Line integrals in (attenuation per pixel) x pixels.

    Examples
    --------
    >>> s = ellipse_sinogram([(0, 0, 5, 5, 0, 0.01)], [0.0], 21, 10.0)
    >>> round(float(s.sum()), 4) == round(np.pi * 25 * 0.01, 4)
    True
    """
    e = _check_ellipses(ellipses)
    th = np.asarray(theta, dtype=np.float64).ravel()
    if supersample is None:
        return _exact_sinogram(e, th, int(n_det), float(center))
    if int(supersample) < 1:
        raise ValueError(f"supersample must be None or a positive integer, got {supersample}")
    th3 = th[:, None, None]
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    s = (np.arange(n_det)[:, None] + sub[None, :] - center)[None]  # (1, det, sub)
    out = np.zeros((th.size, n_det, supersample))
    for x0, y0, a, b, phi, val in e:
        s0 = x0 * np.cos(th3) + y0 * np.sin(th3)
        r2 = (a * np.cos(th3 - phi)) ** 2 + (b * np.sin(th3 - phi)) ** 2
        out += 2.0 * val * a * b * np.sqrt(np.clip(r2 - (s - s0) ** 2, 0.0, None)) / r2
    return out.mean(axis=-1)


def _row_intervals(e: np.ndarray, y_sub: np.ndarray, y_top: float, step: float):
    """Chord intervals ``[x_lo, x_hi]`` of every ellipse on every sub-row it crosses."""
    x0, y0, a, b, phi, val = e.T
    c, s = np.cos(phi), np.sin(phi)
    half_h = np.sqrt((a * s) ** 2 + (b * c) ** 2)
    # sub-row t sits at y_top - (t + 0.5) * step
    first = np.ceil((y_top - y0 - half_h) / step - 0.5).astype(np.int64)
    last = np.floor((y_top - y0 + half_h) / step - 0.5).astype(np.int64)
    first = np.clip(first, 0, y_sub.size)
    last = np.clip(last, -1, y_sub.size - 1)
    seg, t = ragged_ranges(first, np.maximum(last - first + 1, 0))
    dy = y_sub[t] - y0[seg]
    alpha = (c / a) ** 2 + (s / b) ** 2
    beta = dy * (c * s * (1.0 / a**2 - 1.0 / b**2))[seg]
    gamma = dy * dy * ((s / a) ** 2 + (c / b) ** 2)[seg] - 1.0
    root = np.sqrt(np.clip(beta * beta - alpha[seg] * gamma, 0.0, None))
    x_lo = x0[seg] + (-beta - root) / alpha[seg]
    x_hi = x0[seg] + (-beta + root) / alpha[seg]
    return t, x_lo, x_hi, val[seg]


def rasterize_ellipses(ellipses, n: int, *, supersample: int = 4) -> np.ndarray:
    """Anti-aliased image of an ellipse phantom on the ``n x n`` reconstruction grid.

    Parameters
    ----------
    ellipses : array_like, shape (k, 6)
        ``(x0, y0, a, b, phi, value)`` rows (see module docstring).
    n : int
        Grid size; pixel centres from :func:`tomodl.recon.geometry.image_coordinates`.
    supersample : int
        Sub-rows per pixel row.  Along ``x`` the coverage of each pixel is exact.

    Returns
    -------
    ndarray, shape (n, n), float32
        Attenuation per pixel: each pixel is the average of the phantom over its area.
    """
    return rasterize_rows(_check_ellipses(ellipses), n, supersample=supersample).astype(np.float32)


def rasterize_rows(ellipses: np.ndarray, n: int, *, supersample: int = 4) -> np.ndarray:
    """Like :func:`rasterize_ellipses` but float64 and without input checks (internal use)."""
    if int(supersample) < 1:
        raise ValueError(f"supersample must be a positive integer, got {supersample}")
    S = int(supersample)
    x, y = image_coordinates(n)
    step = 1.0 / S
    y_top = y[0] + 0.5
    y_sub = y_top - (np.arange(n * S) + 0.5) * step
    if ellipses.shape[0] == 0:
        return np.zeros((n, n))
    t, x_lo, x_hi, val = _row_intervals(ellipses, y_sub, y_top, step)
    # columns: pixel p covers [p - 0.5, p + 0.5]; accumulate v*(relu(e - lo) - relu(e - hi))
    # on the pixel edges e_k = k - 0.5 as second differences, then one cumulative sum.
    width = n + 2
    acc = np.zeros(n * S * width)
    for ends, sign in ((x_lo, 1.0), (x_hi, -1.0)):
        p = np.clip(ends - x[0], -0.5, n - 0.5)
        k0 = np.ceil(p + 0.5).astype(np.int64)
        f = k0 - 0.5 - p
        base = t * width + k0
        acc += np.bincount(base, weights=sign * val * f, minlength=acc.size)
        acc += np.bincount(base + 1, weights=sign * val * (1.0 - f), minlength=acc.size)
    cover = np.cumsum(acc.reshape(n * S, width), axis=1)[:, 1:n + 1]
    return cover.reshape(n, S, n).mean(axis=1)
