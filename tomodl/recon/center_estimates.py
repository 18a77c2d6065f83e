# SPDX-License-Identifier: BSD-3-Clause
"""Sinogram-domain estimates of the rotation axis, used by :mod:`tomodl.recon.center`.

Both work on one detector row ``sino`` of shape ``(n_angles, n_det)`` (line integrals, float64)
with its angles ``theta`` (radians, any order and range) and return the axis in detector
pixels, or None when their assumptions do not hold:

:func:`com_center`
    Helgason-Ludwig consistency: the projections' centres of mass follow
    ``x0 cos(theta) + y0 sin(theta) + center``; a least-squares fit gives the axis.  Needs the
    sample inside the field of view (:func:`is_truncated` is False, constant projected mass).
:func:`registration_center`
    Projections ``pi`` apart are mirror images about the axis; the summed cross-correlation of
    such pairs gives ``2 * center``.  Needs pairs within one angular step.

:func:`regular_coverage` tells whether the angles sample ``[0, pi)`` evenly enough for the
reconstruction-sharpness criterion of :mod:`tomodl.recon.center`.
"""
from __future__ import annotations

import logging
from typing import Optional, Tuple

import numpy as np

logger = logging.getLogger(__name__)

#: Largest projected-mass variation (std / mean) for which the centre-of-mass fit is trusted.
COM_MAX_MASS_CV = 0.05


def _edges(sino: np.ndarray) -> Tuple[np.ndarray, np.ndarray, int]:
    """Mean of each projection's edge strips (2 % of the width each side) and the strip width."""
    k = max(2, sino.shape[1] // 50)
    return sino[:, :k].mean(axis=1), sino[:, -k:].mean(axis=1), k


def is_truncated(sino: np.ndarray) -> bool:
    """True when the sample reaches the detector edges (edge strips above 5 % of the maximum)."""
    left, right, _ = _edges(sino)
    return bool(max(np.abs(left).max(), np.abs(right).max()) > 0.05 * np.abs(sino).max())


def _remove_baseline(sino: np.ndarray) -> np.ndarray:
    """Subtract a straight line through the edge strips of each projection (air, see
    :func:`is_truncated`): a background offset, e.g. from flat-field drift, would pull the centre
    of mass toward the middle."""
    n = sino.shape[1]
    left, right, k = _edges(sino)
    a, b = (k - 1) / 2.0, n - 1 - (k - 1) / 2.0
    t = (np.arange(n) - a) / (b - a)
    return sino - (left[:, None] + (right - left)[:, None] * t[None, :])


def com_center(sino: np.ndarray, theta: np.ndarray) -> Optional[float]:
    """Centre from the sinusoid fitted to the projections' centres of mass (None if unsafe)."""
    if is_truncated(sino):
        logger.info("centre of mass not used: the sample reaches the detector edges")
        return None
    sino = _remove_baseline(sino)
    mass = sino.sum(axis=1)
    if not np.all(mass > 0):
        return None
    cv = float(mass.std() / mass.mean())
    design = np.stack([np.cos(theta), np.sin(theta), np.ones_like(theta)], axis=1)
    if cv > COM_MAX_MASS_CV or np.linalg.cond(design) > 1e3:
        logger.info("centre of mass not used (projected mass varies by %.1f %% or angle range "
                    "too narrow)", 100 * cv)
        return None
    m1 = sino @ np.arange(sino.shape[1], dtype=np.float64) / mass
    coef, *_ = np.linalg.lstsq(design, m1, rcond=None)
    return float(coef[2])


def _wrap(x):
    """Angles wrapped to ``(-pi, pi]``."""
    return np.angle(np.exp(1j * np.asarray(x)))


def _pairs(theta: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs ``(i, j)`` of angles about ``pi`` apart (within one angular step) and their
    signed mismatch ``delta = theta_j - theta_i - pi`` (wrapped)."""
    t = np.mod(theta, 2 * np.pi)
    steps = np.diff(np.unique(t))
    tol = 1.01 * (float(np.median(steps)) if steps.size else 0.0) + 1e-6
    delta = _wrap(t[None, :] - t[:, None] - np.pi)
    j = np.argmin(np.abs(delta), axis=1)
    i = np.arange(t.size)
    d = delta[i, j]
    keep = (np.abs(d) <= tol) & (i < j)
    return i[keep], j[keep], d[keep]


def _at_angle(sino: np.ndarray, theta: np.ndarray, i: int, delta: float) -> np.ndarray:
    """Projection at ``theta[i] + delta``, linearly inter/extrapolated from the nearest other
    measured angle (second-order accurate; ``sino[i]`` itself when ``delta`` is ~0)."""
    if abs(delta) < 1e-6:
        return sino[i]
    dist = _wrap(theta - theta[i])
    dist[np.abs(dist) < 1e-6] = np.inf   # theta[i] itself and its duplicates: no slope to use
    side = np.where(np.sign(dist) == np.sign(delta), np.abs(dist), np.inf)
    k = int(np.argmin(side)) if np.isfinite(side.min()) else int(np.argmin(np.abs(dist)))
    return sino[i] + (delta / dist[k]) * (sino[k] - sino[i])


def registration_center(sino: np.ndarray, theta: np.ndarray) -> Optional[float]:
    """Centre from the cross-correlation of projections with their mirrored partners.

    The partner of angle ``theta_i`` is the projection at ``theta_j`` about ``pi`` later; when
    they are not exactly ``pi`` apart (a 180-degree scan without its end angle), the projection
    at ``theta_j - pi`` is interpolated from ``theta_i`` and its neighbour.
    """
    from scipy.ndimage import gaussian_filter1d

    i, j, d = _pairs(theta)
    if i.size == 0:
        return None
    n = sino.shape[1]
    m = 2 * n
    a = np.stack([_at_angle(sino, theta, ii, dd) for ii, dd in zip(i, d)])
    # smoothed derivatives: immune to a background offset and zero outside the sample (no
    # bias toward lag 0 from the zero padding), with the noise of one pair averaged down
    a = gaussian_filter1d(a, 2.0, axis=1, order=1, mode="nearest")
    b = gaussian_filter1d(sino[j, ::-1], 2.0, axis=1, order=1, mode="nearest")
    # xc[t] = sum_u b(u + t) a(u); b(u) = a(u + 2c - n + 1) peaks at t = n - 1 - 2c
    spec = (np.fft.rfft(b, m, axis=1) * np.conj(np.fft.rfft(a, m, axis=1))).sum(axis=0)
    k = int(np.argmax(np.fft.irfft(spec, m)))
    lag = k if k < n else k - m
    taus = lag + np.linspace(-1.0, 1.0, 65)
    freq = np.arange(spec.size)
    weight = np.where((freq == 0) | (2 * freq == m), 1.0, 2.0)
    xc = (weight * spec * np.exp(2j * np.pi * np.outer(taus, freq) / m)).real.sum(axis=1)
    return (n - 1 - float(taus[int(np.argmax(xc))])) / 2.0


def regular_coverage(theta: np.ndarray) -> bool:
    """True when the angles sample ``[0, pi)`` (modulo ``pi``) without large gaps, so that FBP
    (equal angular weights) is artefact-free enough for the sharpness criterion."""
    t = np.sort(np.mod(theta, np.pi))
    t = t[np.append(True, np.diff(t) > 1e-4)]
    if t.size > 1 and t[-1] > np.pi - 1e-4:
        t = t[:-1]
    if t.size < 3:
        return False
    gaps = np.diff(np.append(t, t[0] + np.pi))
    return bool(gaps.max() <= 2.0 * np.pi / t.size)
