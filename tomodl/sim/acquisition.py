# SPDX-License-Identifier: BSD-3-Clause
"""Detector counts from line integrals: beam profile, flats, darks, noise, blur, rings, zingers.

Model (per detector pixel ``(row, col)``, counts)::

    photons  = flux * blur(beam(row, col) * exp(-p))        # scintillator blur of the image
    proj     = Poisson(gain * ring * photons) + dark + read_noise + zingers
    flat     = Poisson(gain * flux * blur(beam))  + dark + read_noise
    dark     = dark + read_noise

``beam`` is a smooth random profile (horizontal fall-off and low-frequency structure), ``gain``
a per-pixel detector gain, both of relative amplitude ``flat_nonuniformity``; flat-field
correction removes them.  ``ring`` is a per-pixel gain change between the flats and the
projections (standard deviation ``ring_strength``) that flats do *not* remove: it produces
ring artifacts.  ``dark`` is a per-pixel dark current around ``dark_level``.  All randomness
comes from the ``rng`` argument; inputs are never modified.
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from tomodl.sim.config import Acquisition

#: Projections processed at once (bounds the float64 work arrays).
ANGLE_CHUNK = 32
#: Largest value of a uint16 detector.
UINT16_MAX = 65535


def _smooth_field(shape: Tuple[int, int], scale: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean random field of unit peak, smooth over ``scale`` pixels."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape), sigma=max(scale, 1.0), mode="wrap")
    f -= f.mean()
    peak = np.abs(f).max()
    return f / peak if peak > 0 else f


def detector_maps(n_rows: int, n_det: int, acq: Acquisition,
                  rng: np.random.Generator) -> Tuple[np.ndarray, ...]:
    """Fixed detector and beam properties of one scan.

    Returns
    -------
    beam, gain, ring, dark : ndarray, shape (n_rows, n_det), float64
        Beam profile (mean ~1), per-pixel gain (mean 1), gain change during the projections
        (mean 1) and dark current (counts).
    """
    a = acq.flat_nonuniformity
    col = (np.arange(n_det) - (n_det - 1) / 2) / max(n_det, 1)
    width = rng.uniform(0.8, 1.5)
    beam = np.exp(-a * (col / width * 2) ** 2)[None, :] * np.ones((n_rows, 1))
    beam = beam * (1.0 + 0.5 * a * _smooth_field((n_rows, n_det), n_det / 8, rng))
    gain = 1.0 + 0.2 * a * rng.standard_normal((n_rows, n_det))
    ring = 1.0 + acq.ring_strength * rng.standard_normal((n_rows, n_det))
    dark = acq.dark_level * (1.0 + 0.05 * rng.standard_normal((n_rows, n_det)))
    floor = (0.05, 0.05, 0.05, 0.0)
    return tuple(np.clip(m, f, None) for m, f in zip((beam, gain, ring, dark), floor))


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur over the last two axes (rows, columns) of ``(n, rows, det)``."""
    if sigma <= 0:
        return img
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma=(0, sigma, sigma), mode="nearest")


def _read_out(expected: np.ndarray, dark: np.ndarray, acq: Acquisition,
              rng: np.random.Generator) -> np.ndarray:
    """Counting noise, dark current and read noise of frames ``(n, rows, det)``."""
    if not acq.noise:
        return expected + dark
    counts = rng.poisson(expected).astype(np.float64) + dark
    return counts + acq.read_noise * rng.standard_normal(expected.shape)


def _store(counts: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint16":
        return np.clip(np.rint(counts), 0, UINT16_MAX).astype(np.uint16)
    return counts.astype(np.float32)


def acquire(line_integrals, acq: Acquisition, rng=None, *,
            progress: Optional[Callable[[int], None]] = None
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Simulate the raw frames of a scan.

    Parameters
    ----------
    line_integrals : array_like, shape (n_angles, n_rows, n_det)
        Exact line integrals (dimensionless, attenuation per pixel x pixels).
    acq : Acquisition
        Source and detector physics.
    rng : None, int or numpy.random.Generator
    progress : callable, optional
        Called with the number of projections done after each chunk.

    Returns
    -------
    proj : ndarray, shape (n_angles, n_rows, n_det)
    flat : ndarray, shape (n_flat, n_rows, n_det)
    dark : ndarray, shape (n_dark, n_rows, n_det)
        Detector counts, uint16 or float32 (:attr:`Acquisition.count_dtype`).
    """
    p = np.asarray(line_integrals)
    if p.ndim != 3:
        raise ValueError(f"line_integrals must be (n_angles, n_rows, n_det), got shape {p.shape}")
    rng = np.random.default_rng(rng)
    n_ang, n_rows, n_det = p.shape
    beam, gain, ring, dark = detector_maps(n_rows, n_det, acq, rng)
    dtype = acq.count_dtype
    proj = np.empty(p.shape, dtype=dtype)
    for start in range(0, n_ang, ANGLE_CHUNK):
        chunk = p[start:start + ANGLE_CHUNK].astype(np.float64)
        photons = acq.flux * _blur(beam * np.exp(-chunk), acq.blur)
        counts = _read_out(gain * ring * photons, dark, acq, rng)
        if acq.zinger_rate > 0:
            hit = rng.random(counts.shape) < acq.zinger_rate
            counts[hit] += acq.zinger_strength * acq.flux * rng.uniform(0.5, 1.5, int(hit.sum()))
        proj[start:start + ANGLE_CHUNK] = _store(counts, dtype)
        if progress is not None:
            progress(chunk.shape[0])
    white = acq.flux * _blur(beam[None], acq.blur)
    flat = _store(_read_out(np.repeat(gain * white, acq.n_flat, axis=0), dark, acq, rng), dtype)
    dark_frames = _read_out(np.zeros((acq.n_dark, n_rows, n_det)), dark, acq, rng)
    return proj, flat, _store(dark_frames, dtype)
