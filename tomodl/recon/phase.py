# SPDX-License-Identifier: BSD-3-Clause
"""Single-material phase retrieval (Paganin et al., J. Microsc. 206, 33-40, 2002).

Propagation-based phase contrast turns every edge of the sample into a bright/dark fringe
pair.  For one homogeneous material (refractive index ``n = 1 - delta + i beta``) the
transport-of-intensity equation gives, at distance ``z`` behind the sample,

    I_z / I_0 = (1 - (z delta / mu) Laplacian) exp(-mu T),     mu = 4 pi beta / lambda,

so the filter ``H(f) = 1 / (1 + pi lambda z f^2 / alpha)`` (``f`` in cycles per length,
``alpha = beta / delta``) applied to the normalised projection returns ``exp(-mu T)``, and
``-log`` of the result is the attenuation line integral ``mu T`` with the fringes removed.

TomoPy's and Tomocupy's ``retrieve_phase`` use ``1 / (lambda z w^2 / (4 pi) + alpha)`` with
``w = 2 pi f``: the same filter divided by ``alpha`` (their DC gain is ``1 / alpha``).  Here the
DC gain is 1, so ``-log`` of the output stays in attenuation per pixel and a sample without
edges is left unchanged.  Units follow Tomocupy's options: energy in keV, propagation distance
in mm, pixel size in micrometres.  One torch implementation for CPU and CUDA.
"""
from __future__ import annotations

import logging
import math
from typing import Tuple

import numpy as np

logger = logging.getLogger(__name__)

#: Values of ``--retrieve-phase-method``.
PHASE_METHODS = ("none", "paganin")
#: h c in keV * m: the wavelength of a photon of energy E keV is ``HC_KEV_M / E`` metres.
HC_KEV_M = 1.239841984e-9
#: The padding of each side is this many decay lengths of the filter's kernel (exp(-8)).
PAD_DECAY_LENGTHS = 8.0


def wavelength(energy: float) -> float:
    """Photon wavelength in metres for ``energy`` in keV."""
    return HC_KEV_M / float(energy)


def check_phase_args(energy: float, propagation_distance: float, pixel_size: float,
                     alpha: float) -> None:
    """Raise a ValueError naming the option when a Paganin parameter is not a finite positive
    number (units: keV, mm, micrometres; ``alpha = beta / delta``)."""
    for name, value, unit in (("energy", energy, "keV"),
                              ("propagation_distance", propagation_distance, "mm"),
                              ("pixel_size", pixel_size, "micrometres"),
                              ("alpha", alpha, "(beta/delta, e.g. 1e-3)")):
        if value is None or not (isinstance(value, (int, float, np.floating))
                                 and math.isfinite(value) and value > 0):
            raise ValueError(f"Paganin phase retrieval needs {name} > 0 in {unit}, got "
                             f"{value!r} (CLI: --{name.replace('_', '-')}"
                             f"{'' if name != 'alpha' else ' as --retrieve-phase-alpha'})")


def kernel_length(energy: float, propagation_distance: float, pixel_size: float,
                  alpha: float) -> float:
    """Decay length of the filter's real-space kernel, in pixels: ``sqrt(lambda z /
    (4 pi alpha)) / pixel`` (the kernel is ``K0(r / L) / (2 pi L^2)``)."""
    lz = wavelength(energy) * propagation_distance * 1e-3
    return math.sqrt(lz / (4 * math.pi * alpha)) / (pixel_size * 1e-6)


def phase_padding(shape: Tuple[int, int], energy: float, propagation_distance: float,
                  pixel_size: float, alpha: float) -> Tuple[int, int]:
    """Edge padding ``(rows, columns)`` per side: :data:`PAD_DECAY_LENGTHS` kernel lengths,
    at most the image size itself (so the padded image is at most 3x each way)."""
    pad = math.ceil(PAD_DECAY_LENGTHS * kernel_length(energy, propagation_distance,
                                                      pixel_size, alpha))
    return min(pad, shape[0]), min(pad, shape[1])


def paganin_filter(shape: Tuple[int, int], energy: float, propagation_distance: float,
                   pixel_size: float, alpha: float, device="cpu"):
    """The Fourier filter ``1 / (1 + pi lambda z f^2 / alpha)`` of an image of ``shape``
    (rows, columns), a float32 torch tensor laid out for ``torch.fft.rfft2`` (last axis
    halved)."""
    import torch

    px = pixel_size * 1e-6
    fy = torch.fft.fftfreq(shape[0], d=px, dtype=torch.float64, device=device)
    fx = torch.fft.rfftfreq(shape[1], d=px, dtype=torch.float64, device=device)
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2
    c = math.pi * wavelength(energy) * propagation_distance * 1e-3 / alpha
    return (1.0 / (1.0 + c * f2)).to(torch.float32)


def retrieve_phase(tomo, *, energy: float, propagation_distance: float, pixel_size: float,
                   alpha: float = 1e-3, method: str = "paganin", pad: bool = True,
                   device: str = "cpu", batch: int = 32) -> np.ndarray:
    """Paganin phase retrieval of normalised projections (before ``-log``), TomoPy's layout.

    Parameters
    ----------
    tomo : array_like, shape (n_angles, n_rows, n_det)
        Flat/dark-corrected transmission (``tomodl.normalize``), whole projections (every
        row the detector recorded: the filter mixes rows).
    energy : float
        Photon energy, keV.
    propagation_distance : float
        Sample to detector distance, mm.
    pixel_size : float
        Detector pixel size at the sample, micrometres.
    alpha : float
        ``beta / delta`` of the material (TomoPy's and Tomocupy's ``alpha``); smaller is
        stronger smoothing.
    method : {"paganin", "none"}
        ``"none"`` returns the input unchanged (as float32).
    pad : bool
        Pad each side by :func:`phase_padding` (edge values) before filtering, as TomoPy does;
        without it the filter wraps around the image.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    batch : int
        Projections filtered at once (bounds the memory: about ``batch * 16`` bytes per
        padded pixel).

    Returns
    -------
    ndarray, shape (n_angles, n_rows, n_det), float32
        Filtered transmission; apply ``tomodl.minus_log`` next.  Same mean as the input on a
        flat background (DC gain 1).

    Examples
    --------
    >>> flat = np.full((1, 9, 11), 0.5, np.float32)
    >>> out = retrieve_phase(flat, energy=20, propagation_distance=100, pixel_size=1)
    >>> bool(np.allclose(out, 0.5))
    True
    """
    if method not in PHASE_METHODS:
        raise ValueError(f"Unknown phase retrieval method {method!r}; choose one of "
                         f"{list(PHASE_METHODS)}")
    arr = np.asarray(tomo, dtype=np.float32)
    if arr.ndim != 3 or 0 in arr.shape:
        raise ValueError(f"tomo must be a non-empty 3-D array (n_angles, n_rows, n_det), got "
                         f"shape {arr.shape}")
    if method == "none":
        return arr.copy()
    check_phase_args(energy, propagation_distance, pixel_size, alpha)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    return _paganin(arr, energy, propagation_distance, pixel_size, alpha, pad, device, batch)


def _paganin(arr: np.ndarray, energy, distance, pixel_size, alpha, pad: bool, device,
             batch: int) -> np.ndarray:
    import torch

    from tomodl.backend import resolve_device

    dev = resolve_device(device)
    py, px = phase_padding(arr.shape[1:], energy, distance, pixel_size, alpha) if pad else (0, 0)
    shape = (arr.shape[1] + 2 * py, arr.shape[2] + 2 * px)
    filt = paganin_filter(shape, energy, distance, pixel_size, alpha, device=dev)
    out = np.empty_like(arr)
    for a in range(0, arr.shape[0], batch):
        x = torch.from_numpy(arr[a:a + batch]).to(dev)
        if py or px:
            x = torch.nn.functional.pad(x[:, None], (px, px, py, py), mode="replicate")[:, 0]
        y = torch.fft.irfft2(torch.fft.rfft2(x) * filt, s=shape)
        out[a:a + batch] = y[:, py:py + arr.shape[1], px:px + arr.shape[2]].cpu().numpy()
    logger.debug("Paganin filter: %d projections, padding (%d, %d) px, kernel length %.2f px",
                 arr.shape[0], py, px, kernel_length(energy, distance, pixel_size, alpha))
    return out
