# SPDX-License-Identifier: BSD-3-Clause
"""360-degree scans with the rotation axis off centre (Tomocupy's ``--file-type double_fov``).

A sample wider than the detector is scanned over 360 degrees with the axis near one edge: the
projection at ``theta + 180`` deg, mirrored about the axis, sees the other half of the sample.
:func:`stitch_360` joins each pair into one projection about twice as wide (the overlap blended
linearly) over 180 degrees, centred on the axis, which FBP reconstructs as an ordinary scan;
:func:`find_center_360` finds the axis by matching the mirrored overlap (the idea of algotom's
``find_center_360`` / ``convert_sinogram_360_to_180``; own implementation).

The stitching mixes only values of the same detector row, so row chunks give the same numbers
as a whole volume.  Positions are detector pixels, pixel ``j`` centred at ``j`` (TomoPy).
"""
from __future__ import annotations

import logging
import math
from typing import Tuple

import numpy as np

logger = logging.getLogger(__name__)

#: Values of ``--file-type``: an ordinary scan, or a 360-degree scan to stitch.
FILE_TYPES = ("standard", "double_fov")
#: Pairs of angles used to find the axis (more are subsampled).
MAX_PAIRS = 256
#: Smallest overlap (px) tried by :func:`find_center_360`.
MIN_OVERLAP = 8


def half_turn_pairs(theta) -> int:
    """Number ``h`` of projections per half turn: projection ``k + h`` must be at ``theta[k] +
    pi`` (to within a quarter step) for every ``k < h``; raises a ValueError naming the fix."""
    t = np.asarray(theta, dtype=np.float64).ravel()
    n = t.size
    if n < 4 or n % 2:
        raise ValueError(f"a 360-degree (double_fov) scan needs an even number >= 4 of angles "
                         f"evenly covering 0..360 degrees, got {n}; select them with "
                         "--start-proj/--end-proj (e.g. drop a repeated 360-degree projection)")
    h = n // 2
    step = float(np.median(np.abs(np.diff(t)))) or 1.0
    gap = np.angle(np.exp(1j * (t[h:] - t[:h] - math.pi)))
    worst = float(np.max(np.abs(gap)))
    if worst > 0.25 * step:
        raise ValueError(f"projection k + {h} is not opposite projection k (off by up to "
                         f"{math.degrees(worst):.2f} deg): a double_fov scan needs angles evenly "
                         "covering 0..360 degrees; drop a repeated last projection with "
                         "--end-proj")
    return h


def _mirror_gather(proj: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """``proj[..., pos]`` along the last axis for positions ``pos = m - k + frac`` (``k``
    integers, one ``frac``): integer gather after a Fourier shift by ``frac`` (padded with the
    edge values, so no wrap-around; exact when ``frac`` is 0)."""
    n = proj.shape[-1]
    base = np.floor(pos + 1e-9)
    frac = float(np.median(pos - base))
    if abs(frac) > 1e-6:
        pad = n // 2 + 8
        p = np.pad(proj, [(0, 0)] * (proj.ndim - 1) + [(pad, pad)], mode="edge")
        f = np.fft.rfftfreq(p.shape[-1])
        p = np.fft.irfft(np.fft.rfft(p, axis=-1) * np.exp(2j * np.pi * f * frac), p.shape[-1],
                         axis=-1)
        proj = p[..., pad:pad + n].astype(np.float32)
    idx = np.clip(base.astype(np.int64), 0, n - 1)
    return proj[..., idx]


def stitched_geometry(n_det: int, center: float) -> Tuple[int, int, float]:
    """``(first, width, center)`` of the stitched detector: its pixel 0 is original position
    ``first`` (may be negative), ``width`` pixels, and the axis at ``center`` there."""
    c = float(center)
    lo = min(0, math.ceil(2 * c - (n_det - 1) - 1e-6))
    hi = max(n_det - 1, math.floor(2 * c + 1e-6))
    return lo, hi - lo + 1, c - lo


def stitch_360(tomo, theta, center: float) -> Tuple[np.ndarray, np.ndarray, float]:
    """Join opposite projections of a 360-degree scan into a double-width 180-degree scan.

    Parameters
    ----------
    tomo : array_like, shape (n_angles, n_rows, n_det)
        Line integrals (after ``-log``) over 360 degrees; projection ``k + n_angles / 2`` is
        opposite projection ``k`` (:func:`half_turn_pairs`).
    theta : array_like, shape (n_angles,)
        Angles, radians.
    center : float
        Rotation axis on the original detector, pixels (e.g. :func:`find_center_360`).

    Returns
    -------
    tomo180 : ndarray, shape (n_angles / 2, n_rows, width), float32
        Stitched projections; in the overlap ``[max(0, 2c - n_det + 1), min(n_det - 1, 2c)]``
        the direct and mirrored values are blended with linear weights.
    theta180 : ndarray, shape (n_angles / 2,), float32
        The first half of ``theta``.
    center180 : float
        The axis on the stitched detector (:func:`stitched_geometry`).
    """
    arr = np.asarray(tomo, dtype=np.float32)
    if arr.ndim != 3:
        raise ValueError(f"tomo must be 3-D (n_angles, n_rows, n_det), got shape {arr.shape}")
    n = arr.shape[-1]
    c = float(center)
    if not (math.isfinite(c) and -0.5 <= c <= n - 0.5):
        raise ValueError(f"center {center!r} is off the {n}-px detector; give the axis on the "
                         "original detector (0 .. n_det - 1)")
    h = half_turn_pairs(theta)
    if arr.shape[0] != 2 * h:
        raise ValueError(f"tomo has {arr.shape[0]} projections but theta {2 * h}")
    first, width, c180 = stitched_geometry(n, c)
    u = np.arange(first, first + width, dtype=np.float64)
    direct = (u >= 0) & (u <= n - 1)
    mirror_pos = 2 * c - u
    mirrored = (mirror_pos >= -1e-6) & (mirror_pos <= n - 1 + 1e-6)
    a, b = max(0.0, 2 * c - (n - 1)), min(n - 1.0, 2 * c)
    ramp = np.clip((u - a) / (b - a), 0, 1) if b > a else np.full(u.shape, 0.5)
    w_direct = np.where(direct & mirrored, ramp if c < (n - 1) / 2 else 1 - ramp,
                        direct.astype(np.float64)).astype(np.float32)
    out = np.zeros((h, arr.shape[1], width), np.float32)
    out[..., direct] = arr[:h, :, u[direct].astype(np.int64)] * w_direct[direct]
    m = mirrored
    out[..., m] += _mirror_gather(arr[h:], mirror_pos[m]) * (1 - w_direct[m])
    return out, np.ascontiguousarray(np.asarray(theta, np.float32)[:h]), c180


def find_center_360(sino, theta) -> float:
    """The rotation axis (original detector pixels) of a 360-degree sinogram.

    Compares projection ``k`` with the mirrored projection ``k + n/2`` for every integer
    shift with at least :data:`MIN_OVERLAP` overlapping pixels, scoring the mean squared
    difference over the overlap divided by the variance there (so a featureless overlap does
    not win), then refines the best shift with a parabola.

    Parameters
    ----------
    sino : array_like, shape (n_angles, n_det) or (n_angles, n_rows, n_det)
        Line integrals of one row (or several, averaged).
    theta : array_like, shape (n_angles,)
        Angles over 360 degrees, radians.

    Returns
    -------
    float
        Axis position in pixels (half-integers included).
    """
    s = np.asarray(sino, dtype=np.float64)
    if s.ndim == 3:
        s = s.mean(axis=1)
    if s.ndim != 2:
        raise ValueError(f"sino must be (n_angles, n_det) or (n_angles, n_rows, n_det), got "
                         f"shape {np.shape(sino)}")
    h = half_turn_pairs(theta)
    pick = np.linspace(0, h - 1, min(h, MAX_PAIRS)).round().astype(int)
    direct, flipped = s[pick], s[h + pick, ::-1]
    n = s.shape[1]
    shifts = np.arange(-(n - MIN_OVERLAP), n - MIN_OVERLAP + 1)
    score = np.array([_score(direct, flipped, d) for d in shifts])
    k = int(np.argmin(score))
    d = float(shifts[k])
    if 0 < k < len(score) - 1:
        y0, y1, y2 = score[k - 1:k + 2]
        den = y0 - 2 * y1 + y2
        if den > 0:
            d += float(np.clip(0.5 * (y0 - y2) / den, -0.5, 0.5))
    center = (d + n - 1) / 2
    logger.info("360-degree axis: %.2f px (overlap %.0f px of %d)", center, n - abs(d), n)
    return center


def _score(direct: np.ndarray, flipped: np.ndarray, d: int) -> float:
    """Normalised mismatch of ``direct[:, u]`` and ``flipped[:, u - d]`` over the overlap
    (``flipped[j]`` is the opposite projection at position ``n - 1 - j``, i.e. ``2c - u``
    with ``2c = d + n - 1``)."""
    n = direct.shape[1]
    a = direct[:, max(0, d):n + min(0, d)]
    b = flipped[:, max(0, -d):n - max(0, d)]
    var = a.var() + b.var()
    return float(np.mean((a - b) ** 2) / var) if var > 0 else np.inf
