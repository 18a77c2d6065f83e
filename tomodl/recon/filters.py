# SPDX-License-Identifier: BSD-3-Clause
"""Reconstruction filters, defined as TomoPy's gridrec defines them.

TomoPy's gridrec (``source/libtomo/gridrec/filters.c``) evaluates each filter at the
normalized frequency ``x = j / n`` (cycles per detector pixel, ``0 <= x <= 1/2``) as the ramp
``|2x|`` times a window, with ``filter_par`` defaulting to ``[0.5, 8]``
(``tomopy/recon/algorithm.py``):

==============  =======================================================
``none``        ``1`` (no ramp: an unfiltered back-projection)
``ramlak``      ``|2x|``
``shepp``       ``|2x| * sin(pi x) / (pi x)``
``cosine``      ``|2x| * cos(pi x)``
``hann``        ``|2x| * 0.5 (1 + cos(2 pi x / p0))``
``hamming``     ``|2x| * (0.54 + 0.46 cos(2 pi x / p0))``
``parzen``      ``|2x| * (1 - |x| / p0) ** 3``
``butterworth`` ``|2x| / (1 + (x / p0) ** (2 p1))``
==============  =======================================================

The windows and their parameters are TomoPy's, literally (note that with the default
``p0 = 0.5`` TomoPy's ``hann`` and ``hamming`` have period ``x = 0.5``: they dip at
``x = 0.25`` and return to 1 at Nyquist; that is what ``tomopy.recon`` computes, so it is what
the same name computes here).  Only the ramp differs, and only in scale and near zero
frequency: tomodl uses the band-limited ramp of Kak & Slaney (the DFT of its spatial kernel
``h[0] = 1/4``, ``h[k] = -1/(pi k)^2`` for odd ``k``), which is ``|x|`` in cycles per pixel
except for a small positive value at ``x = 0`` that makes zero-padded FBP reproduce absolute
attenuation (gridrec zeroes that frequency).  ``none`` is scaled by ``1/2`` so that its ratio
to ``ramlak`` is TomoPy's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence, Union

import numpy as np

from tomodl.errors import TomodlError

#: TomoPy's default ``filter_par`` (``tomopy.recon.algorithm._get_algorithm_kwargs``).
DEFAULT_FILTER_PAR = (0.5, 8.0)


@dataclass(frozen=True)
class FilterSpec:
    """A named reconstruction filter.

    Attributes
    ----------
    window : callable
        ``window(x, par) -> ndarray``: the factor multiplying the ramp, at normalized
        frequencies ``x`` (cycles per pixel, float64) with parameters ``par`` (float64, length 2).
    ramp : bool
        Whether the window multiplies the ramp (False only for ``none``).
    doc : str
        One-line definition in TomoPy's terms.
    """

    window: Callable[[np.ndarray, np.ndarray], np.ndarray]
    ramp: bool
    doc: str


def _ones(x, par):
    return np.ones_like(x)


def _sinc(x, par):
    return np.sinc(x)  # sin(pi x) / (pi x), 1 at x = 0


def _cosine(x, par):
    return np.cos(np.pi * x)


def _hann(x, par):
    return 0.5 * (1.0 + np.cos(2.0 * np.pi * x / par[0]))


def _hamming(x, par):
    return 0.54 + 0.46 * np.cos(2.0 * np.pi * x / par[0])


def _parzen(x, par):
    return (1.0 - np.abs(x) / par[0]) ** 3


def _butterworth(x, par):
    return 1.0 / (1.0 + (x / par[0]) ** (2.0 * par[1]))


#: Every filter tomodl knows, by TomoPy's ``filter_name``.
FILTERS: Dict[str, FilterSpec] = {
    "none": FilterSpec(_ones, False, "1 (unfiltered back-projection)"),
    "ramlak": FilterSpec(_ones, True, "|2x|"),
    "shepp": FilterSpec(_sinc, True, "|2x| sin(pi x)/(pi x)"),
    "cosine": FilterSpec(_cosine, True, "|2x| cos(pi x)"),
    "hann": FilterSpec(_hann, True, "|2x| 0.5 (1 + cos(2 pi x / p0))"),
    "hamming": FilterSpec(_hamming, True, "|2x| (0.54 + 0.46 cos(2 pi x / p0))"),
    "parzen": FilterSpec(_parzen, True, "|2x| (1 - |x| / p0)^3"),
    "butterworth": FilterSpec(_butterworth, True, "|2x| / (1 + (x / p0)^(2 p1))"),
}


def check_filter_name(filter_name: str) -> FilterSpec:
    """The :class:`FilterSpec` of ``filter_name``; unknown names raise, listing the choices."""
    try:
        return FILTERS[filter_name]
    except (KeyError, TypeError):
        raise TomodlError(
            f"Unknown filter_name {filter_name!r}; choose one of {sorted(FILTERS)}"
        ) from None


def filter_parameters(filter_par: Optional[Union[float, Sequence[float]]] = None) -> np.ndarray:
    """Normalize ``filter_par`` to TomoPy's two parameters ``[p0, p1]`` (float64).

    ``None`` gives TomoPy's defaults ``[0.5, 8]``; a scalar or a one-element sequence sets
    ``p0`` and keeps the default ``p1``.  Extra entries are ignored, as TomoPy ignores them.
    """
    par = np.array(DEFAULT_FILTER_PAR, dtype=np.float64)
    if filter_par is None:
        return par
    given = np.atleast_1d(np.asarray(filter_par, dtype=np.float64)).ravel()
    if given.size == 0 or not np.all(np.isfinite(given)):
        raise TomodlError(f"filter_par must be finite numbers [p0, p1], got {filter_par!r}")
    n = min(2, given.size)
    par[:n] = given[:n]
    if par[0] == 0:
        raise TomodlError("filter_par[0] (the cut-off p0, cycles per pixel) must be non-zero")
    return par


def ramp_response(n: int) -> np.ndarray:
    """Band-limited ramp ``|x|`` for a zero-padded length-``n`` convolution (Kak & Slaney).

    Parameters
    ----------
    n : int
        Padded length (even or odd), at least 2.

    Returns
    -------
    ndarray, shape (n // 2 + 1,), float64
        Real frequency response at ``numpy.fft.rfftfreq(n)``: about ``|x|`` (cycles per pixel),
        with the small positive zero-frequency value of the truncated spatial kernel.
    """
    k = np.fft.fftfreq(n, d=1.0 / n)  # integer offsets in [-n/2, n/2)
    h = np.zeros(n)
    h[0] = 0.25
    odd = (k.astype(np.int64) % 2) == 1
    h[odd] = -1.0 / (np.pi * k[odd]) ** 2
    return np.fft.rfft(h).real


def get_filter(filter_name: str, n: int, filter_par=None) -> np.ndarray:
    """Frequency response of a named filter for an FFT of padded length ``n``.

    Parameters
    ----------
    filter_name : str
        One of :data:`FILTERS` (TomoPy's names).
    n : int
        Padded length of the detector-row FFT.
    filter_par : float or sequence of float, optional
        TomoPy's ``filter_par`` ``[p0, p1]`` (default ``[0.5, 8]``; see :func:`filter_parameters`).

    Returns
    -------
    ndarray, shape (n // 2 + 1,), float32
        Multiplier of ``numpy.fft.rfft(row, n)``.  With it, ``(pi / n_angles)`` times the sum of
        the back-projected filtered rows is the attenuation per pixel (for ramp filters).
    """
    spec = check_filter_name(filter_name)
    if int(n) < 2:
        raise TomodlError(f"the padded filter length n must be at least 2, got {n}")
    n = int(n)
    par = filter_parameters(filter_par)
    x = np.fft.rfftfreq(n)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        window = spec.window(x, par)
    base = ramp_response(n) if spec.ramp else np.full(x.shape, 0.5)
    return (base * window).astype(np.float32)
