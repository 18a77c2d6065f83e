# SPDX-License-Identifier: BSD-3-Clause
"""Propagation-based phase contrast with known truth: the Fresnel-propagated intensity of a
homogeneous object (the check of :func:`tomodl.recon.phase.retrieve_phase`).

Units follow Tomocupy's options: energy keV, distance mm, pixel size micrometres; thickness in
pixels.
"""
from __future__ import annotations

import math

import numpy as np


def sphere_thickness(n_rows: int, n_det: int, radius: float, *, center=None,
                     supersample: int = 8) -> np.ndarray:
    """Projected thickness ``2 sqrt(R^2 - r^2)`` of a sphere (pixels), averaged over each pixel.

    Returns ``(n_rows, n_det)`` float64; ``center`` (row, column) defaults to the middle.
    """
    cy, cx = ((n_rows - 1) / 2, (n_det - 1) / 2) if center is None else center
    s = supersample
    y = (np.arange(n_rows * s) + 0.5) / s - 0.5 - cy
    x = (np.arange(n_det * s) + 0.5) / s - 0.5 - cx
    t = 2 * np.sqrt(np.clip(radius ** 2 - y[:, None] ** 2 - x[None, :] ** 2, 0, None))
    return t.reshape(n_rows, s, n_det, s).mean(axis=(1, 3))


def fresnel_intensity(attenuation, *, energy: float, propagation_distance: float,
                      pixel_size: float, alpha: float) -> np.ndarray:
    """Intensity ``|U_z|^2`` (flat beam = 1) behind a homogeneous object of line integrals
    ``attenuation = mu T`` (``(..., rows, det)``, unitless), ``alpha = beta / delta``.

    The exit wave ``exp(-mu T / 2 - i k delta T)`` is propagated by the exact Fresnel
    propagator ``exp(-i pi lambda z f^2)`` on the periodic grid (pad the object yourself).
    """
    from tomodl.recon.phase import wavelength

    mu_t = np.asarray(attenuation, dtype=np.float64)
    lam = wavelength(energy)
    # phase k delta T = (delta / beta) * (mu T) / 2, since mu = 2 k beta
    u0 = np.exp(-mu_t / 2 - 1j * mu_t / (2 * alpha))
    px = pixel_size * 1e-6
    fy = np.fft.fftfreq(mu_t.shape[-2], d=px)
    fx = np.fft.fftfreq(mu_t.shape[-1], d=px)
    prop = np.exp(-1j * math.pi * lam * propagation_distance * 1e-3
                  * (fy[:, None] ** 2 + fx[None, :] ** 2))
    return np.abs(np.fft.ifft2(np.fft.fft2(u0) * prop)) ** 2
