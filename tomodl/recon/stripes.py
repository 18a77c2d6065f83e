# SPDX-License-Identifier: BSD-3-Clause
"""Stripe (ring artifact) removal on sinograms, vectorised over detector rows.

Three published methods, under Tomocupy's names (:data:`STRIPE_METHODS`):

* ``fw`` -- :func:`remove_stripe_fw`, Münch, Trtik, Marone & Stampanoni, Opt. Express 17,
  8567 (2009): wavelet decomposition of each sinogram, the detail coefficients that are
  smooth along the angles and sharp across the detector (the stripes) are damped by a
  Gaussian notch at zero angular frequency in Fourier space, then the sinogram is rebuilt.
* ``ti`` -- :func:`remove_stripe_ti`, after Titarenko (2016): the mean over the angles of
  each detector column is split into a smooth part (two-sided exponential smoothing) and the
  stripe part, which is subtracted from every angle.
* ``vo-all`` -- :func:`remove_all_stripe`, Vo, Atwood & Drakopoulos, Opt. Express 26, 28396
  (2018): unresponsive and large stripes are detected from column statistics and corrected,
  then the remaining small stripes are removed by median filtering each sinogram after sorting
  every column along the angles.

Every function takes and returns float32 arrays in TomoPy's layout ``(n_angles, n_rows,
n_det)``; each detector row (sinogram) is processed independently, so row chunks give the
same numbers as a whole scan.  The pipeline applies ``vo-all`` to the flat-field-corrected
transmission (as Vo et al.) and ``fw``/``ti`` to the ``-log`` data (:data:`STRIPE_DOMAINS`).
CPU (numpy/scipy; PyWavelets for ``fw``) only.
"""
from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)


def _as_stack(tomo) -> np.ndarray:
    a = np.asarray(tomo, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"tomo must be 3-D (n_angles, n_rows, n_det), got shape {a.shape}; "
                         "use arr[:, None, :] for one sinogram")
    return a


# ---------------------------------------------------------------- Fourier-wavelet (Münch) ---
def remove_stripe_fw(tomo, level: int = 7, wname: str = "sym16", sigma: float = 1.0,
                     pad: bool = True) -> np.ndarray:
    """Fourier-wavelet stripe removal (Münch et al. 2009).

    Parameters
    ----------
    tomo : array_like, shape (n_angles, n_rows, n_det)
        Sinograms (transmission or line integrals).
    level : int
        Wavelet decomposition levels (clipped to what the sizes allow).
    wname : str
        PyWavelets wavelet name (``"haar"``, ``"db5"``, ``"sym5"``, ``"sym16"``, ...).
    sigma : float
        Width (angular Fourier pixels) of the Gaussian notch; larger damps more.
    pad : bool
        Pad by 1/8 on each side before the transforms: the angles mirrored, the detector with
        its edge values (the air beside the sample), which keeps the sample's mean profile.

    Returns
    -------
    ndarray, float32, same shape
    """
    import pywt

    a = _as_stack(tomo)
    if wname not in pywt.wavelist(kind="discrete"):
        raise ValueError(f"Unknown wavelet {wname!r}; choose a discrete PyWavelets wavelet, "
                         "e.g. one of ['haar', 'db5', 'sym5', 'sym16']")
    n_ang, n_det = a.shape[0], a.shape[2]
    p, q = (n_ang // 8, n_det // 8) if pad else (0, 0)
    work = np.pad(a, ((p, p), (0, 0), (0, 0)), mode="symmetric") if pad else a
    work = np.pad(work, ((0, 0), (0, 0), (q, q)), mode="edge") if pad else work
    wave = pywt.Wavelet(wname)
    top = pywt.dwt_max_level(min(work.shape[0], work.shape[2]), wave.dec_len)
    level = max(1, min(int(level), top))
    coeffs = pywt.wavedec2(work, wave, level=level, axes=(0, 2), mode="symmetric")
    out = [coeffs[0]]
    for c_ang, c_det, c_diag in coeffs[1:]:
        out.append((c_ang, _damp_zero_frequency(c_det, sigma), c_diag))
    rec = pywt.waverec2(out, wave, axes=(0, 2), mode="symmetric")
    return np.ascontiguousarray(rec[p:p + n_ang, :, q:q + n_det], dtype=np.float32)


def _damp_zero_frequency(c: np.ndarray, sigma: float) -> np.ndarray:
    """Multiply the angular spectrum (axis 0) of ``c`` by ``1 - exp(-k^2 / (2 sigma^2))``."""
    k = np.fft.fftfreq(c.shape[0]) * c.shape[0]
    damp = -np.expm1(-k ** 2 / (2 * sigma ** 2))
    spec = np.fft.fft(c, axis=0) * damp[:, None, None]
    return np.fft.ifft(spec, axis=0).real


# ---------------------------------------------------------------------------- Titarenko ---
def remove_stripe_ti(tomo, beta: float = 0.022, mask: float = 1.0) -> np.ndarray:
    """Stripe removal after Titarenko (2016) (Tomocupy's ``--remove-stripe-method ti``).

    The column means ``m(x)`` over the angles are smoothed by the two-sided exponential
    kernel ``beta * q**|k|``, ``q = (1 - beta) / (1 + beta)`` (unit sum), and ``m - smooth``
    is subtracted from every angle.

    Parameters
    ----------
    tomo : array_like, shape (n_angles, n_rows, n_det)
    beta : float
        In (0, 1); smaller keeps only sharper stripes (kernel width ~ 1/beta px).
    mask : float
        Centred fraction (0, 1] of the detector width that is corrected.

    Returns
    -------
    ndarray, float32, same shape
    """
    from scipy.signal import filtfilt

    a = _as_stack(tomo)
    if not 0 < beta < 1 or not 0 < mask <= 1:
        raise ValueError(f"beta must be in (0, 1) and mask in (0, 1], got {beta}, {mask}")
    q = (1 - beta) / (1 + beta)
    m = a.mean(axis=0, dtype=np.float64)                     # (rows, det)
    # forward then backward first-order recursion = the kernel beta * q**|k| (mirror edges)
    smooth = filtfilt([1 - q], [1, -q], m, axis=-1, padtype="even",
                      padlen=min(m.shape[-1] - 1, int(np.ceil(6 / beta))))
    stripe = (m - smooth).astype(np.float32)
    n = a.shape[2]
    width = int(round(mask * n))
    keep = np.zeros(n, np.float32)
    keep[(n - width) // 2:(n - width) // 2 + width] = 1
    return a - (stripe * keep)[None]


# ------------------------------------------------------------------------ Vo et al. 2018 ---
def remove_all_stripe(tomo, snr: float = 3.0, la_size: int = 61, sm_size: int = 21,
                      drop_ratio: float = 0.1) -> np.ndarray:
    """All stripe types (Vo et al. 2018): unresponsive, large, then small (sorting) stripes.

    Parameters
    ----------
    tomo : array_like, shape (n_angles, n_rows, n_det)
        Flat-field-corrected sinograms (positive).
    snr : float
        Detection ratio: a column statistic this many noise levels off the trend is a stripe.
    la_size : int
        Median window (px) for unresponsive and large stripes.
    sm_size : int
        Median window (px) of the sorting-based filter for small stripes.
    drop_ratio : float
        Fraction of the sorted values (half at each end) left out of the column statistics.

    Returns
    -------
    ndarray, float32, same shape
    """
    a = _as_stack(tomo)
    a = _remove_dead_stripe(a, snr, la_size)
    a = _remove_large_stripe(a, snr, la_size, drop_ratio)
    return _sorting_filter(a, sm_size)


def detect_stripe(stat: np.ndarray, snr: float) -> np.ndarray:
    """Columns whose statistic stands out of the trend of its sorted values, per row.

    ``stat`` ``(n_rows, n_det)``: a straight line is fitted to the middle half of each row's
    sorted values; its rise over the row is the noise level; values beyond the line's ends by
    more than ``snr / 2`` noise levels are stripes (only when the extreme value is at least
    ``snr`` noise levels out).  Returns a bool mask ``(n_rows, n_det)``.
    """
    srt = np.sort(stat, axis=-1).astype(np.float64)
    n = srt.shape[-1]
    lo, hi = int(0.25 * n), n - int(0.25 * n) - 1
    if hi - lo < 2:
        return np.zeros(stat.shape, bool)
    x = np.arange(lo, hi, dtype=np.float64)
    y = srt[:, lo:hi]
    xm, ym = x.mean(), y.mean(axis=-1, keepdims=True)
    slope = ((x - xm) * (y - ym)).sum(-1) / ((x - xm) ** 2).sum()
    start = ym[:, 0] - slope * xm
    end = start + slope * (n - 1)
    noise = np.clip(np.abs(end - start), 1e-6, None)
    up = (np.abs(srt[:, -1] - end) / noise >= snr)[:, None] & \
        (stat > (end + 0.5 * snr * noise)[:, None])
    down = (np.abs(start - srt[:, 0]) / noise >= snr)[:, None] & \
        (stat <= (start - 0.5 * snr * noise)[:, None])
    return up | down


def _dilate(mask: np.ndarray) -> np.ndarray:
    out = mask.copy()
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    ok = np.abs(den) > 1e-12
    return np.where(ok, num / np.where(ok, den, 1), 1.0)


def _remove_dead_stripe(a: np.ndarray, snr: float, size: int) -> np.ndarray:
    """Interpolate across columns that do not respond (little variation over the angles)."""
    from scipy.ndimage import median_filter, uniform_filter1d

    var = np.abs(a - uniform_filter1d(a, 10, axis=0, mode="reflect")).sum(axis=0)
    bck = median_filter(var, size=(1, size), mode="reflect")
    bck = np.where(bck == 0, np.abs(bck).mean(axis=1, keepdims=True), bck)
    mask = _dilate(detect_stripe(_safe_ratio(var, bck), snr))
    mask[:, :2] = mask[:, -2:] = False
    mask[mask.sum(axis=1) >= a.shape[2] // 3] = False   # too many: not stripes, leave the row
    if not mask.any():
        return a
    out = a.copy()
    cols = np.arange(a.shape[2])
    for r in np.flatnonzero(mask.any(axis=1)):
        good = ~mask[r]
        if good.sum() < 2:
            continue
        for i in range(a.shape[0]):
            out[i, r, ~good] = np.interp(cols[~good], cols[good], a[i, r, good])
    logger.debug("vo-all: %d unresponsive stripe pixels interpolated", int(mask.sum()))
    return out


def _sorted(a: np.ndarray):
    idx = np.argsort(a, axis=0, kind="stable")
    return idx, np.take_along_axis(a, idx, axis=0)


def _unsort(idx: np.ndarray, srt: np.ndarray) -> np.ndarray:
    out = np.empty_like(srt)
    np.put_along_axis(out, idx, srt, axis=0)
    return out


def _remove_large_stripe(a: np.ndarray, snr: float, size: int, drop_ratio: float) -> np.ndarray:
    """Normalise the column levels by the ratio of the sorted to the filtered sorted columns,
    and replace the columns of large stripes by the filtered values (sorted back)."""
    from scipy.ndimage import median_filter

    n = a.shape[0]
    drop = int(0.5 * drop_ratio * n)
    idx, srt = _sorted(a)
    smooth = median_filter(srt, size=(1, 1, size), mode="reflect")
    fact = _safe_ratio(srt[drop:n - drop].mean(axis=0), smooth[drop:n - drop].mean(axis=0))
    mask = _dilate(detect_stripe(fact, snr))
    a = (a / fact[None]).astype(np.float32)
    if not mask.any():
        return a
    return np.where(mask[None], _unsort(idx, smooth), a)


def _sorting_filter(a: np.ndarray, size: int) -> np.ndarray:
    """Median filter across the detector of every sinogram sorted along the angles."""
    from scipy.ndimage import median_filter

    idx, srt = _sorted(a)
    return _unsort(idx, median_filter(srt, size=(1, 1, size), mode="reflect"))


# ------------------------------------------------------------------------------ dispatch ---
def _fw(a, c):
    return remove_stripe_fw(a, c.fw_level, c.fw_filter, c.fw_sigma, c.fw_pad)


def _ti(a, c):
    return remove_stripe_ti(a, c.ti_beta, c.ti_mask)


def _vo(a, c):
    return remove_all_stripe(a, c.vo_all_snr, c.vo_all_la_size, c.vo_all_sm_size)


#: ``--remove-stripe-method`` name -> function of (stack, Corrections); ``none`` does nothing.
STRIPE_METHODS = {"none": None, "fw": _fw, "ti": _ti, "vo-all": _vo}
#: Where the pipeline applies each filter (:func:`tomodl.recon.corrections.line_integrals`):
#: ratio-based vo-all on the transmission, the additive fw and ti on the ``-log`` data.
STRIPE_DOMAINS = {"fw": "line integrals", "ti": "line integrals", "vo-all": "transmission"}


def remove_stripe(tomo, corr) -> np.ndarray:
    """Apply ``corr.remove_stripe_method`` (a :class:`~tomodl.recon.corrections.Corrections`)."""
    if corr.remove_stripe_method not in STRIPE_METHODS:
        raise ValueError(f"Unknown remove_stripe_method {corr.remove_stripe_method!r}; choose "
                         f"one of {list(STRIPE_METHODS)}")
    fn = STRIPE_METHODS[corr.remove_stripe_method]
    return _as_stack(tomo) if fn is None else fn(_as_stack(tomo), corr)
