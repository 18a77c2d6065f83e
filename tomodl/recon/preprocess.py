# SPDX-License-Identifier: BSD-3-Clause
"""Pre-processing of raw projections: flat/dark correction, ``-log`` and a circular mask.

TomoPy semantics (``tomopy.normalize``, ``tomopy.minus_log``, ``tomopy.circ_mask``), with
one difference: nothing here ever returns ``inf`` or ``NaN`` for finite input.  Detector
pixels whose flat minus dark is zero or negative (dead or saturated pixels) and
transmissions at or below zero (noise, over-subtracted dark) are clipped to a small
positive floor, and the number of clipped values is reported in ONE logged warning per call.
numpy in, float32 numpy out.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np

from tomodl.metrics import circle_mask

logger = logging.getLogger(__name__)

#: Smallest flat-minus-dark denominator, in counts (TomoPy clips at the same value).
FLAT_FLOOR = 1e-6
#: Smallest transmission passed to the logarithm; ``-log(1e-6) = 13.8``.
TRANSMISSION_FLOOR = 1e-6


def _mean_field(field, shape, name: str) -> np.ndarray:
    """Average a stack of flat or dark fields ``(n, rows, det)`` (or one ``(rows, det)`` image)."""
    f = np.asarray(field, dtype=np.float32)
    if f.ndim == 3:
        f = f.mean(axis=0, dtype=np.float64).astype(np.float32)
    if f.shape != tuple(shape):
        raise ValueError(
            f"{name} fields have shape {np.shape(field)}; expected (n, {shape[0]}, {shape[1]}) "
            f"or ({shape[0]}, {shape[1]}) to match the projections"
        )
    return f


def normalize(proj, flat, dark, *, cutoff: Optional[float] = None) -> np.ndarray:
    """Flat- and dark-field correction: ``(proj - dark) / (flat - dark)``.

    Parameters
    ----------
    proj : array_like, shape (n_angles, n_rows, n_det)
        Raw projections, counts (any real dtype).
    flat : array_like, shape (n_flat, n_rows, n_det) or (n_rows, n_det)
        Flat (white) fields, counts; averaged over the first axis.
    dark : array_like, shape (n_dark, n_rows, n_det) or (n_rows, n_det), or None
        Dark fields, counts; averaged over the first axis.  ``None`` means zero.
    cutoff : float, optional
        Upper limit of the normalized values (TomoPy's ``cutoff``), e.g. ``1.0``.

    Returns
    -------
    ndarray, shape (n_angles, n_rows, n_det), float32
        Transmission, nominally in ``(0, 1]``; never ``inf`` or ``NaN`` for finite input.
        Pixels where ``flat - dark <= 0`` use a denominator of :data:`FLAT_FLOOR`, and their
        count is logged in one warning.

    Examples
    --------
    >>> flat = np.full((2, 1, 3), 10.0, np.float32)
    >>> normalize(flat[:1], flat, np.zeros((1, 3), np.float32))[0, 0].tolist()
    [1.0, 1.0, 1.0]
    """
    out = np.array(proj, dtype=np.float32, copy=True)
    if out.ndim != 3:
        raise ValueError(f"proj must be 3-D (n_angles, n_rows, n_det), got shape {out.shape}")
    flat_m = _mean_field(flat, out.shape[1:], "flat")
    if dark is None:
        denom = flat_m
    else:
        dark_m = _mean_field(dark, out.shape[1:], "dark")
        out -= dark_m
        denom = flat_m - dark_m
    bad = ~(denom > FLAT_FLOOR)
    n_bad = int(np.count_nonzero(bad))
    if n_bad:
        logger.warning(
            "normalize: %d of %d detector pixels have flat - dark <= 0 (dead or saturated); "
            "their denominator is clipped to %g", n_bad, bad.size, FLAT_FLOOR,
        )
        denom = np.where(bad, np.float32(FLAT_FLOOR), denom)
    out /= denom
    if cutoff is not None:
        np.minimum(out, np.float32(cutoff), out=out)
    return out


def minus_log(proj, *, floor: float = TRANSMISSION_FLOOR) -> np.ndarray:
    """Line integrals from transmission: ``-log(max(proj, floor))``.

    Parameters
    ----------
    proj : array_like, any shape
        Flat/dark-corrected transmission, nominally in ``(0, 1]``.
    floor : float
        Smallest transmission taken into the logarithm.  Values below it (including zero,
        negative and NaN transmissions) are clipped to it and counted in one logged warning.

    Returns
    -------
    ndarray, float32, same shape as ``proj``
        Attenuation line integrals (dimensionless; in the units of the reconstruction pixel
        once divided by the pixel size), finite everywhere.

    Examples
    --------
    >>> float(minus_log(np.full((2, 1, 3), np.exp(-1.0), dtype=np.float32))[0, 0, 0].round(3))
    1.0
    """
    if not floor > 0:
        raise ValueError(f"floor must be a positive transmission, got {floor}")
    out = np.array(proj, dtype=np.float32, copy=True)
    low = ~(out >= floor)
    n_low = int(np.count_nonzero(low))
    if n_low:
        logger.warning(
            "minus_log: %d of %d values are below the transmission floor %g (noise or "
            "over-subtracted dark); they are clipped to it", n_low, out.size, floor,
        )
        out[low] = floor
    np.log(out, out=out)
    np.negative(out, out=out)
    return out


def circ_mask(rec, ratio: float = 1.0, val: float = 0.0) -> np.ndarray:
    """Set the values outside the inscribed circle of each slice to ``val``.

    Parameters
    ----------
    rec : array_like, shape (..., H, W)
        Reconstructed slices (the mask applies to the last two axes).
    ratio : float
        Radius of the circle as a fraction of ``min(H, W) / 2`` (TomoPy's ``ratio``).
    val : float
        Value written outside the circle.

    Returns
    -------
    ndarray, float32, same shape as ``rec``
        A masked copy.
    """
    if not ratio > 0:
        raise ValueError(f"ratio must be positive, got {ratio}")
    out = np.array(rec, dtype=np.float32, copy=True)
    if out.ndim < 2:
        raise ValueError(f"rec must have at least 2 dimensions (H, W), got shape {out.shape}")
    out[..., ~circle_mask(out.shape[-2:], ratio)] = val
    return out
