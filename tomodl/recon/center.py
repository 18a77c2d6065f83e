# SPDX-License-Identifier: BSD-3-Clause
"""Rotation-axis (centre) finding: sinogram estimates refined by reconstruction sharpness.

Two cheap estimates come from the sinogram of one detector row
(:mod:`tomodl.recon.center_estimates`), and a reconstruction criterion decides:

``"com"``
    Helgason-Ludwig consistency: the centre of mass of every projection of a parallel-beam
    scan follows ``x0 cos(theta) + y0 sin(theta) + center``.  A least-squares fit gives the
    axis for any set of angles (sparse, partial, unsorted, 180 or 360 degrees), provided the
    sample stays inside the field of view (checked: air at the detector edges, constant
    projected mass).  A straight background through the edge strips is removed first.
``"registration"``
    Projections ``pi`` apart are mirror images about the axis; the summed cross-correlation
    of every such pair (smoothed derivatives) with the mirrored partner gives ``2 * center``.
    Needs pairs within one angular step (any 180- or 360-degree scan); an inexact partner is
    interpolated in angle.  Works for samples wider than the field of view.
``"sharpness"``
    FBP reconstructions of the row at trial centres, scored by :func:`sharpness`; a
    coarse-to-fine hill climb from ``init`` (default: the detector middle).
``"auto"`` (default)
    Starts the sharpness climb from the better-scoring of the sinogram estimates and keeps it
    within 5 % of the detector width, so the result is the sharpest reconstruction near a
    physically motivated start.  Where image criteria are unreliable it returns a sinogram
    estimate instead (``com``, else ``registration``, else ``init``): angles that do not sample
    ``[0, pi)`` evenly (limited or irregular: FBP artefacts), too few of them (sparse-view
    streaks that move with the centre: :data:`SHARPNESS_MIN_DENSITY`), a sample wider than
    the field of view (truncation errors), or no sharpness maximum inside the window.

A centre error ``d`` multiplies each Fourier slice by a phase ``exp(-2 pi i w d)``, which
leaves the power spectrum of the reconstruction unchanged: quadratic criteria (gradient
energy, variance) cannot see it.  :func:`sharpness` is therefore a sparsity ratio (L2 / L1)
of the slightly smoothed slice, which falls as a wrong centre spreads each feature into arcs.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from tomodl.metrics import circle_mask
from tomodl.recon.geometry import angles_per_half_turn
from tomodl.recon.center_estimates import (com_center, is_truncated, registration_center,
                                           regular_coverage)

logger = logging.getLogger(__name__)

#: Largest reconstruction grid of the coarse sharpness search (larger detectors are binned).
SCORE_GRID = 512
#: Largest grid of the final sub-pixel search (detectors wider than this are binned by 2, 4..).
FINE_GRID = 1024
#: Width (pixels) of the background removed before scoring slices of a truncated sample.
TRUNCATED_BACKGROUND = 4.0
#: Half-width of the sharpness search around the sinogram estimate, as a fraction of n_det.
AUTO_WINDOW = 0.05
#: ``"auto"`` trusts the sharpness of trial reconstructions only with at least this many
#: projections per half turn per detector pixel (and :data:`SHARPNESS_MIN_ANGLES`): sparser
#: FBPs are dominated by streaks that move with the centre.  The tooth (640 px): 46 angles
#: give the axis within 0.1 px, 19 angles 10 px off (the ``com`` estimate: 0.1 px).
SHARPNESS_MIN_DENSITY = 1.0 / 16
SHARPNESS_MIN_ANGLES = 32
#: Trial centres reconstructed per FBP call (bounds memory to ~ this x SCORE_GRID**2 floats).
BATCH = 8
#: Most trial centres one try mode / :func:`write_center` call reconstructs (one image each).
MAX_TRIAL_CENTERS = 500


class CenterScan(NamedTuple):
    """Result of :func:`write_center`: trial centres (pixels), their sharpness, the best one."""

    centers: np.ndarray
    sharpness: np.ndarray
    best: float


class _Opts(NamedTuple):
    filter_name: str
    ratio: float
    device: str
    ncore: Optional[int]
    background: Optional[float] = None


# -- reconstruction scoring -------------------------------------------------------------------
def sharpness(rec, *, ratio: float = 0.9, sigma: float = 1.0,
              background: Optional[float] = None) -> np.ndarray:
    """Sharpness score of reconstructed slices: L2 / L1 norm ratio inside the circle.

    Parameters
    ----------
    rec : array_like, shape (n, H, W) or (H, W)
        Reconstructed slices (any units; the score is scale invariant).
    ratio : float
        Radius of the scored disk as a fraction of ``min(H, W) / 2``.
    sigma : float
        Gaussian smoothing (pixels) applied first, to damp noise and interpolation ripple.
    background : float, optional
        If given, a Gaussian blur of this width (pixels) is subtracted (a band-pass), so that
        edges rather than large uniform regions are scored; used for samples wider than the
        field of view, whose slowly varying truncation errors swamp the plain score.

    Returns
    -------
    ndarray, shape (n,) (or a 0-d array for one slice), float64
        ``sqrt(mean(f**2)) / mean(|f|)`` over the disk; higher is sharper (1 for a constant).
    """
    from scipy.ndimage import gaussian_filter

    arr = np.asarray(rec, dtype=np.float64)
    single = arr.ndim == 2
    arr = arr[None] if single else arr
    mask = circle_mask(arr.shape[-2:], ratio)
    out = np.empty(arr.shape[0])
    for i, img in enumerate(arr):
        f = gaussian_filter(img, sigma) if sigma > 0 else img
        if background is not None:
            f = f - gaussian_filter(img, background)
        v = f[mask]
        l1 = np.abs(v).mean()
        out[i] = np.sqrt(np.mean(v * v)) / l1 if l1 > 0 else 0.0
    return out[0] if single else out


def _reconstruct(sino: np.ndarray, theta: np.ndarray, centers, opts: _Opts,
                 num_gridx: Optional[int] = None) -> np.ndarray:
    """FBP of one sinogram ``(n_angles, n_det)`` at each trial centre -> ``(k, N, N)``."""
    from tomodl.recon.fbp import fbp

    centers = np.atleast_1d(np.asarray(centers, dtype=np.float64))
    out = []
    for start in range(0, centers.size, BATCH):
        c = centers[start:start + BATCH]
        stack = np.ascontiguousarray(np.broadcast_to(sino, (c.size,) + sino.shape), np.float32)
        out.append(np.asarray(fbp(stack, theta, c, filter_name=opts.filter_name,
                                  num_gridx=num_gridx, device=opts.device, ncore=opts.ncore)))
    return np.concatenate(out)


class _Scorer:
    """Sharpness of trial centres on a (possibly binned) copy of the sinogram, cached."""

    def __init__(self, sino: np.ndarray, theta: np.ndarray, opts: _Opts, binning: int):
        n = sino.shape[1] // binning * binning
        self.b = binning
        self.sino = sino[:, :n].reshape(sino.shape[0], -1, binning).mean(axis=2)
        self.theta, self.opts = theta, opts
        self.cache: Dict[float, float] = {}

    def __call__(self, centers) -> np.ndarray:
        """Scores of full-resolution centres (pixels)."""
        centers = [round(float(c), 6) for c in np.atleast_1d(centers)]
        new = sorted({c for c in centers if c not in self.cache})
        if new:
            binned = (np.asarray(new) - (self.b - 1) / 2.0) / self.b
            rec = _reconstruct(self.sino, self.theta, binned, self.opts)
            score = sharpness(rec, ratio=self.opts.ratio, background=self.opts.background)
            self.cache.update(zip(new, score))
        return np.array([self.cache[c] for c in centers])


def _climb(score: _Scorer, start: float, step: float, lo: float, hi: float) -> float:
    """Hill-climb ``score`` on the lattice ``start + k * step`` inside ``[lo, hi]``."""
    k_lo, k_hi = math.ceil((lo - start) / step), math.floor((hi - start) / step)
    ks = list(range(max(-2, k_lo), min(2, k_hi) + 1)) or [0]
    while True:
        vals = score([start + k * step for k in ks])
        best = int(np.argmax(vals))
        if best == 0 and ks[0] > k_lo:
            ks = list(range(max(ks[0] - 3, k_lo), ks[0])) + ks
        elif best == len(ks) - 1 and ks[-1] < k_hi:
            ks = ks + list(range(ks[-1] + 1, min(ks[-1] + 3, k_hi) + 1))
        else:
            return start + ks[best] * step


def _vertex(x: np.ndarray, y: np.ndarray) -> float:
    """Sub-step maximum: vertex of a parabola fitted around the best of ``(x, y)``."""
    k = int(np.argmax(y))
    sel = slice(max(k - 2, 0), min(k + 3, x.size))
    if sel.stop - sel.start < 3:
        return float(x[k])
    a, b, _ = np.polyfit(x[sel] - x[k], y[sel], 2)
    if a >= 0:
        return float(x[k])
    step = float(np.median(np.diff(x)))
    return float(x[k] + np.clip(-b / (2 * a), -step, step))


def _binning(n_det: int, grid: int) -> int:
    """Smallest power-of-two binning that brings ``n_det`` down to at most ``grid`` pixels."""
    b = 1
    while n_det // b > grid:
        b *= 2
    return b


def _refine(sino: np.ndarray, theta: np.ndarray, start: float, opts: _Opts,
            width: Optional[float] = None) -> Optional[float]:
    """Sharpest centre within ``start +- width`` (default: the whole detector).

    Climbs on binned copies (each reconstructing the whole field of view: a cropped grid
    biases the score), halving the binning down to ``FINE_GRID`` pixels, then fits a parabola
    through quarter-step scores.  Returns None when the climb ends on the edge of the window:
    far from the axis the L2/L1 score can rise again (e.g. for a sample wider than the field of
    view, as the reconstruction empties), so an edge maximum is not trusted.
    """
    n_det = sino.shape[1]
    lo, hi = 0.0, n_det - 1.0
    if width is not None:
        lo, hi = max(lo, start - width), min(hi, start + width)
    b, fine = _binning(n_det, SCORE_GRID), _binning(n_det, FINE_GRID)
    c = float(start)
    while True:
        score = _Scorer(sino, theta, opts, b)
        c = _climb(score, c, float(b), lo, hi)
        if min(c - lo, hi - c) < b and width is not None:
            return None
        if b <= fine:
            break
        b //= 2
    xs = c + b * np.arange(-1.0, 1.01, 0.25)
    xs = xs[(xs >= lo) & (xs <= hi)]
    return _vertex(xs, score(xs))


# -- methods ----------------------------------------------------------------------------------
def _method_com(sino, theta, init, opts) -> float:
    c = com_center(sino, theta)
    if c is None:
        raise ValueError("method='com' needs a sample inside the field of view (constant "
                         "projected mass) and angles spanning more than a few degrees; use "
                         "method='auto' or 'sharpness'")
    return c


def _method_registration(sino, theta, init, opts) -> float:
    c = registration_center(sino, theta)
    if c is None:
        raise ValueError("method='registration' needs projections 180 degrees apart; use "
                         "method='auto', 'com' or 'sharpness'")
    return c


def _method_sharpness(sino, theta, init, opts) -> float:
    start = sino.shape[1] / 2.0 if init is None else float(init)
    return _refine(sino, theta, start, opts)


def _too_sparse(theta, n_det: int) -> bool:
    """Too few projections per half turn for the sharpness of trial FBPs to find the axis."""
    n = angles_per_half_turn(theta)
    return n < max(SHARPNESS_MIN_ANGLES, SHARPNESS_MIN_DENSITY * n_det)


def _method_auto(sino, theta, init, opts) -> float:
    found = {"com": com_center(sino, theta), "registration": registration_center(sino, theta),
             "init": init}
    n_det = sino.shape[1]
    cands = {k: float(v) for k, v in found.items() if v is not None and 0 <= v <= n_det - 1}
    logger.info("centre estimates: %s", ", ".join(f"{k} {v:.2f}" for k, v in cands.items()))
    fallback = next((k for k in ("com", "registration", "init") if k in cands), None)
    why = ("the angles do not sample [0, pi) evenly" if not regular_coverage(theta) else
           "the sample reaches the detector edges" if opts.background is not None else
           "too few angles for a sharpness criterion" if _too_sparse(theta, n_det) else None)
    if why is not None:
        if fallback is not None:
            logger.info("%s: sharpness refinement skipped, using the %s estimate", why, fallback)
            return cands[fallback]
        logger.warning("%s and no sinogram estimate applies: the centre from the sharpness "
                       "search may be biased; check it with the try mode", why)
    if not cands:
        return _refine(sino, theta, n_det / 2.0, opts)
    scores = _Scorer(sino, theta, opts, _binning(n_det, SCORE_GRID))(list(cands.values()))
    start = list(cands.values())[int(np.argmax(scores))]
    center = _refine(sino, theta, start, opts, width=max(AUTO_WINDOW * n_det, 5.0))
    if center is None:
        logger.warning("no sharpness maximum within %.0f px of the estimate %.2f; using the %s "
                       "estimate; check it with the try mode (write_center)",
                       max(AUTO_WINDOW * n_det, 5.0), start, fallback)
        return cands[fallback]
    return center


#: Centre-finding methods: name -> function(sino, theta, init, opts) -> centre (pixels).
CENTER_METHODS: Dict[str, Callable[..., float]] = {
    "auto": _method_auto,
    "sharpness": _method_sharpness,
    "com": _method_com,
    "registration": _method_registration,
}


def _row(tomo, theta, ind: Optional[int], sinogram_order: bool
         ) -> Tuple[np.ndarray, np.ndarray, int]:
    from tomodl.recon.api import as_sinograms

    sinos, theta = as_sinograms(tomo, theta, sinogram_order)
    n_rows = sinos.shape[0]
    ind = n_rows // 2 if ind is None else int(ind)
    if not -n_rows <= ind < n_rows:
        raise ValueError(f"ind={ind} is outside the {n_rows} detector rows")
    sino = np.asarray(sinos[ind], dtype=np.float64)
    if not np.all(np.isfinite(sino)):
        raise ValueError(f"row {ind} contains NaN or inf; run normalize and minus_log first")
    return sino, theta.astype(np.float64), ind


def find_center(tomo, theta, *, ind: Optional[int] = None, method: str = "auto",
                init: Optional[float] = None, sinogram_order: bool = False,
                filter_name: str = "shepp", ratio: float = 0.9, device: str = "auto",
                ncore: Optional[int] = None) -> float:
    """Estimate the rotation axis from the data of one detector row.

    Parameters
    ----------
    tomo : array_like, shape (n_angles, n_rows, n_det)
        Line integrals (after :func:`~tomodl.recon.preprocess.normalize` and
        :func:`~tomodl.recon.preprocess.minus_log`); ``(n_rows, n_angles, n_det)`` with
        ``sinogram_order=True``.
    theta : array_like, shape (n_angles,)
        Angles in radians (any order and range).
    ind : int, optional
        Detector row used (default: the middle row).
    method : str
        One of :data:`CENTER_METHODS` (see the module docstring).
    init : float, optional
        Starting guess in pixels (``"sharpness"``; an extra candidate for ``"auto"``).
    filter_name : str
        FBP filter for the trial reconstructions.
    ratio : float
        Radius of the scored disk, as a fraction of the reconstruction's half width.
    device, ncore
        Passed to :func:`tomodl.recon.fbp.fbp`.

    Returns
    -------
    float
        Rotation axis, in detector pixels (column index), TomoPy's ``center``.
    """
    try:
        func = CENTER_METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown centre method {method!r}; choose one of "
                         f"{sorted(CENTER_METHODS)}") from None
    sino, th, ind = _row(tomo, theta, ind, sinogram_order)
    background = TRUNCATED_BACKGROUND if is_truncated(sino) else None
    if background is not None:
        logger.info("row %d: the sample reaches the detector edges; scoring band-passed slices",
                    ind)
    opts = _Opts(filter_name, float(ratio), device, ncore, background)
    center = float(func(sino, th, init, opts))
    logger.info("rotation centre %.2f (method %s, row %d)", center, method, ind)
    return center


def write_center(tomo, theta, dpath, cen_range: Sequence[float], *, ind: Optional[int] = None,
                 sinogram_order: bool = False, filter_name: str = "shepp",
                 num_gridx: Optional[int] = None, ratio: float = 0.9,
                 formats: Sequence[str] = ("tiff", "png"), overwrite: bool = False,
                 device: str = "auto", ncore: Optional[int] = None) -> CenterScan:
    """Reconstruct one row at a range of centres and save one image per centre (try mode).

    Parameters
    ----------
    tomo, theta, ind, sinogram_order, filter_name, device, ncore
        As in :func:`find_center`.
    dpath : str or Path
        Output folder (created).  Images are named ``center_<c>.tiff`` / ``.png`` with
        ``<c>`` formatted ``%07.2f`` (``center_0295.90.tiff``), as TomoPy's ``write_center``.
    cen_range : (start, stop, step)
        Trial centres ``numpy.arange(start, stop, step)`` in pixels (``stop`` excluded).
    num_gridx : int, optional
        Reconstruction grid size (default ``n_det``).
    ratio : float
        Scored disk for :func:`sharpness`.
    formats : sequence of {"tiff", "png"}
        Image formats written.  PNGs share one grey scale so they can be compared by eye.
    overwrite : bool
        Replace existing images of the same names (only images that tomodl wrote).

    Returns
    -------
    CenterScan
        The centres, their sharpness (higher is sharper) and the sharpest centre.
    """
    from tomodl.io import write_png

    centers = _centre_list(cen_range)
    unknown = sorted(set(formats) - {"tiff", "png"})
    if unknown:
        raise ValueError(f"Unknown image formats {unknown}; choose from ['png', 'tiff']")
    sino, th, ind = _row(tomo, theta, ind, sinogram_order)
    opts = _Opts(filter_name, ratio, device, ncore)
    dpath = Path(dpath)
    # one grey scale for every PNG, from the middle centre; then BATCH slices in memory at once
    mid = _reconstruct(sino, th, centers[centers.size // 2], opts, num_gridx)[0]
    vmin, vmax = (float(v) for v in np.percentile(mid[circle_mask(mid.shape, ratio)], (0.5, 99.5)))
    score = np.empty(centers.size)
    for start in range(0, centers.size, BATCH):
        part = slice(start, start + BATCH)
        rec = _reconstruct(sino, th, centers[part], opts, num_gridx)
        score[part] = sharpness(rec, ratio=ratio)
        for c, img in zip(centers[part], rec):
            name = f"center_{c:07.2f}"
            if "tiff" in formats:
                _write_tiff(dpath / f"{name}.tiff", img, overwrite)
            if "png" in formats:
                write_png(dpath / f"{name}.png", img, vmin=vmin, vmax=vmax, overwrite=overwrite)
    best = float(centers[int(np.argmax(score))])
    logger.info("wrote %d trial centres (row %d) to %s; sharpest %.2f", centers.size, ind,
                dpath, best)
    return CenterScan(centers, score, best)


def _centre_list(cen_range) -> np.ndarray:
    try:
        start, stop, step = (float(v) for v in cen_range)
    except (TypeError, ValueError):
        raise ValueError(f"cen_range must be (start, stop, step) in pixels, got {cen_range!r}"
                         ) from None
    if not (np.isfinite([start, stop, step]).all() and step > 0 and stop > start):
        raise ValueError(f"cen_range=(start, stop, step) needs finite values, step > 0 and "
                         f"stop > start, got {cen_range!r}")
    count = math.ceil((stop - start) / step)          # before anything is allocated
    if count > MAX_TRIAL_CENTERS:
        raise ValueError(f"cen_range {cen_range!r} gives {count} trial centres; at most "
                         f"{MAX_TRIAL_CENTERS} are reconstructed: use a larger step or a "
                         "narrower range")
    return np.arange(start, stop, step)


def _write_tiff(path: Path, img: np.ndarray, overwrite: bool) -> None:
    from tomodl.io.writers import write_tiff

    write_tiff(path, img, overwrite=overwrite)
