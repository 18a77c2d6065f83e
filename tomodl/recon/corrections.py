# SPDX-License-Identifier: BSD-3-Clause
"""Pre-processing options of a reconstruction (Tomocupy's names) and the row-local steps.

:class:`Corrections` holds every option, frozen and checked once; :func:`correct_raw` and
:func:`line_integrals` apply them in the pre-process stage
(:func:`tomodl.recon.stages.preprocess_chunk`), in this order::

    raw counts --dezinger (proj, flats, darks)--> --binning--> normalize
        -> [phase retrieval] -> -log with --remove-stripe-method (:func:`line_integrals`) -> FBP

Tomocupy applies every stripe filter to the transmission; here each filter works in the domain
its model assumes: ``vo-all`` (ratios of column statistics, as Vo et al. and algotom) on the
transmission, ``fw`` and ``ti`` (additive filters) on the ``-log`` data, where a detector gain
error is an additive stripe (``scripts/bench_corrections.py``: on the neutron sinogram fw
leaves 4x less ring amplitude that way).  Dezinger and stripe removal work row by row
(Tomocupy's median footprint over angles and columns), so row chunks give the same numbers.

The projection subset (``start_proj``/``end_proj``/``proj_step``) is read from the file
(:func:`raw_rows`, :func:`effective_info`).  Every step is also a plain function of arrays in
TomoPy's layout ``(n_angles, n_rows, n_det)``: :func:`remove_outlier`, :func:`bin_projections`
and the stripe filters of :mod:`tomodl.recon.stripes`.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional, Tuple

import numpy as np

logger = logging.getLogger(__name__)

#: Choices of ``--binning``: bin 2**k x 2**k detector pixels.
BINNINGS = (0, 1, 2, 3)
#: Wavelets of ``--fw-filter`` (Tomocupy's choices; any PyWavelets name works from Python).
FW_FILTERS = ("haar", "db5", "sym5", "sym16")
#: What the scan's projections hold (``--input-values``).
INPUT_VALUES = {
    "auto": "raw counts with flats; line integrals when the file has no flats and its root "
            "attribute normalisation says minus_log",
    "counts": "raw detector counts, normalized with the file's flats and darks",
    "line-integrals": "already flat-field corrected and -log'd: read as they are (flats "
                      "and darks in the file are ignored)",
}


def _check_projection_steps(corr: Corrections) -> None:
    """The phase-retrieval and double_fov options (:mod:`tomodl.recon.phase`,
    :mod:`tomodl.recon.stitch`)."""
    from tomodl.recon.phase import PHASE_METHODS, check_phase_args
    from tomodl.recon.stitch import FILE_TYPES

    if corr.retrieve_phase_method not in PHASE_METHODS:
        raise ValueError(f"Unknown retrieve_phase_method {corr.retrieve_phase_method!r}; "
                         f"choose one of {list(PHASE_METHODS)}")
    if corr.file_type not in FILE_TYPES:
        raise ValueError(f"Unknown file_type {corr.file_type!r}; choose one of "
                         f"{list(FILE_TYPES)}")
    if corr.retrieve_phase_method != "none":
        check_phase_args(corr.energy, corr.propagation_distance, corr.pixel_size,
                         corr.retrieve_phase_alpha)


@dataclass(frozen=True)
class Corrections:
    """Pre-processing options (Tomocupy's names and defaults); the defaults do nothing.

    Attributes
    ----------
    remove_stripe_method : {"none", "fw", "ti", "vo-all"}
        Stripe (ring) removal on the sinograms (:data:`tomodl.recon.stripes.STRIPE_METHODS`,
        :func:`line_integrals`).
    fw_sigma, fw_filter, fw_level, fw_pad
        Fourier-wavelet filter (Münch et al. 2009): damping width (Fourier pixels), wavelet,
        decomposition levels (clipped to the size), pad the sinogram first.
    ti_beta, ti_mask
        Titarenko filter: smoothing parameter in (0, 1) and the centred fraction (0, 1] of the
        detector width corrected.
    vo_all_snr, vo_all_la_size, vo_all_sm_size
        Vo et al. 2018 ``remove_all_stripe``: detection ratio, window (px) for large and
        unresponsive stripes, window (px) of the sorting filter.
    dezinger : int
        Median window (px, over angles and detector columns, as Tomocupy) for outlier
        removal on the raw counts; 0 = off.
    dezinger_threshold : float
        Counts above the median that mark a zinger.
    binning : {0, 1, 2, 3}
        Average 2**binning x 2**binning detector pixels (rows and columns) of the raw counts.
    start_proj, end_proj, proj_step : int
        Projections ``[start_proj:end_proj:proj_step]`` (Python slicing) are used.
    retrieve_phase_method : {"none", "paganin"}
        Phase retrieval on whole projections (:mod:`tomodl.recon.phase`; the pipeline then
        runs a projection-chunked first pass).
    retrieve_phase_alpha : float
        ``beta / delta`` of the material (TomoPy's and Tomocupy's ``alpha``).
    energy, propagation_distance, pixel_size : float, optional
        keV, mm (sample to detector), micrometres (of a raw detector pixel); needed by
        ``"paganin"``.
    file_type : {"standard", "double_fov"}
        ``"double_fov"``: a 360-degree scan with the axis off centre, stitched into a
        double-width 180-degree scan (:mod:`tomodl.recon.stitch`).
    input_values : {"auto", "counts", "line-integrals"}
        What the projections hold (:data:`INPUT_VALUES`): line integrals skip the flat-field
        normalization and the ``-log`` (:func:`tomodl.recon.stages.preprocess_chunk`).
    """

    remove_stripe_method: str = "none"
    fw_sigma: float = 1.0
    fw_filter: str = "sym16"
    fw_level: int = 7
    fw_pad: bool = True
    ti_beta: float = 0.022
    ti_mask: float = 1.0
    vo_all_snr: float = 3.0
    vo_all_la_size: int = 61
    vo_all_sm_size: int = 21
    dezinger: int = 0
    dezinger_threshold: float = 5000.0
    binning: int = 0
    start_proj: Optional[int] = None
    end_proj: Optional[int] = None
    proj_step: int = 1
    retrieve_phase_method: str = "none"
    retrieve_phase_alpha: float = 1e-3
    energy: Optional[float] = None
    propagation_distance: Optional[float] = None
    pixel_size: Optional[float] = None
    file_type: str = "standard"
    input_values: str = "auto"

    def __post_init__(self):
        from tomodl.recon.stripes import STRIPE_METHODS

        if self.remove_stripe_method not in STRIPE_METHODS:
            raise ValueError(f"Unknown remove_stripe_method {self.remove_stripe_method!r}; "
                             f"choose one of {list(STRIPE_METHODS)}")
        if self.input_values not in INPUT_VALUES:
            raise ValueError(f"Unknown input_values {self.input_values!r}; choose one of "
                             f"{list(INPUT_VALUES)}")
        if self.binning not in BINNINGS:
            raise ValueError(f"binning must be one of {list(BINNINGS)}, got {self.binning!r}")
        checks = {"fw_sigma": self.fw_sigma > 0, "fw_level": self.fw_level >= 1,
                  "ti_beta": 0 < self.ti_beta < 1, "ti_mask": 0 < self.ti_mask <= 1,
                  "vo_all_snr": self.vo_all_snr > 0, "vo_all_la_size": self.vo_all_la_size >= 1,
                  "vo_all_sm_size": self.vo_all_sm_size >= 1, "dezinger": self.dezinger >= 0,
                  "dezinger_threshold": self.dezinger_threshold >= 0,
                  "proj_step": self.proj_step >= 1}
        _check_projection_steps(self)
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError("out of range: " + ", ".join(f"{k}={getattr(self, k)!r}"
                                                          for k in bad)
                             + " (see tomodl.recon.corrections.Corrections for the ranges)")

    @property
    def factor(self) -> int:
        """Detector pixels binned per output pixel along each axis (``2**binning``)."""
        return 2 ** self.binning

    def provenance(self) -> dict:
        """Every option (JSON types), for the output's provenance and the resume check."""
        return asdict(self)

    def active(self) -> dict:
        """The options that differ from the defaults (empty: nothing is changed)."""
        default = Corrections()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name)}


NO_CORRECTIONS = Corrections()

#: Parameters of each ``remove_stripe_method``.
STRIPE_PARAMS = {"none": (), "fw": ("fw_sigma", "fw_filter", "fw_level", "fw_pad"),
                 "ti": ("ti_beta", "ti_mask"),
                 "vo-all": ("vo_all_snr", "vo_all_la_size", "vo_all_sm_size")}
#: Options of the row-local steps that change the FBP input without changing the geometry
#: (stripe removal, dezinger): what the simulator's training pairs apply too
#: (:func:`tomodl.sim.pairs.make_pairs`).
ROW_LOCAL = ("remove_stripe_method", *(p for ps in STRIPE_PARAMS.values() for p in ps),
             "dezinger", "dezinger_threshold")


def row_local(corr: Corrections) -> dict:
    """The row-local steps of ``corr`` that act, with the parameters that matter (``{}``: none);
    equal records mean the FBP sees the same input."""
    out = {}
    if corr.remove_stripe_method != "none":
        out["remove_stripe_method"] = corr.remove_stripe_method
        out.update({p: getattr(corr, p) for p in STRIPE_PARAMS[corr.remove_stripe_method]})
    if corr.dezinger:
        out.update(dezinger=corr.dezinger, dezinger_threshold=corr.dezinger_threshold)
    return out


def remove_outlier(arr, dif: float, size: int = 3) -> np.ndarray:
    """Replace bright outliers (zingers) by the local median (TomoPy's ``remove_outlier``).

    Parameters
    ----------
    arr : array_like, shape (n_angles, n_rows, n_det)
        Raw projections (counts) or flat/dark stacks.
    dif : float
        A value more than ``dif`` above the median of its window is replaced.
    size : int
        Median window (px) over angles and detector columns of each row (Tomocupy's footprint:
        each detector row is independent, so row chunks give the same result as a whole scan).

    Returns
    -------
    ndarray, float32, same shape
    """
    from scipy.ndimage import median_filter

    a = np.asarray(arr, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"arr must be 3-D (n_angles, n_rows, n_det), got shape {a.shape}")
    if size < 1:
        return a.copy()
    med = median_filter(a, size=(size, 1, size), mode="reflect")
    hit = (a - med) > dif
    n = int(np.count_nonzero(hit))
    if n:
        logger.debug("dezinger: replaced %d of %d values", n, a.size)
    return np.where(hit, med, a)


def bin_projections(arr, binning: int) -> np.ndarray:
    """Average ``2**binning x 2**binning`` pixels (rows and columns); a remainder is dropped.

    ``(n, n_rows, n_det)`` -> ``(n, n_rows // 2**binning, n_det // 2**binning)`` float32.
    """
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim != 3:
        raise ValueError(f"arr must be 3-D (n, n_rows, n_det), got shape {a.shape}")
    b = 2 ** int(binning)
    if b == 1:
        return a
    n, r, d = a.shape[0], a.shape[1] // b, a.shape[2] // b
    if r == 0 or d == 0:
        raise ValueError(f"binning {binning} needs at least {b} rows and columns, got "
                         f"{a.shape[1:]}")
    return a[:, :r * b, :d * b].reshape(n, r, b, d, b).mean(axis=(2, 4), dtype=np.float32)


def binned_center(center: float, binning: int) -> float:
    """A detector position (px, pixel ``j`` centred at ``j``) in binned pixels."""
    b = 2 ** int(binning)
    return (float(center) - (b - 1) / 2) / b


def proj_slice(corr: Corrections) -> Tuple[Optional[int], Optional[int], int]:
    """``(start, stop, step)`` of the projections read (for :func:`tomodl.io.read_dx`)."""
    return (corr.start_proj, corr.end_proj, corr.proj_step)


def raw_rows(rows: Tuple[int, int], corr: Corrections) -> Tuple[int, int]:
    """Raw detector rows holding binned rows ``rows``."""
    b = corr.factor
    return rows[0] * b, rows[1] * b


def effective_info(info, corr: Corrections):
    """The scan as the reconstruction sees it: binned rows and columns, the projection subset
    (``n_angles`` and ``theta``); ``info`` itself when nothing changes the geometry."""
    if corr.binning == 0 and (corr.start_proj, corr.end_proj, corr.proj_step) == (None, None, 1):
        return info
    theta = np.asarray(info.theta)[slice(*proj_slice(corr))]
    if theta.size < 2:
        raise ValueError(f"projections [{corr.start_proj}:{corr.end_proj}:{corr.proj_step}] "
                         f"select {theta.size} of {info.n_angles}; FBP needs at least 2")
    b = corr.factor
    if info.n_rows < b or info.n_det < b:
        raise ValueError(f"binning {corr.binning} needs at least {b} rows and columns; the "
                         f"scan has {info.n_rows} x {info.n_det}")
    return replace(info, n_angles=int(theta.size), theta=np.ascontiguousarray(theta),
                   n_rows=info.n_rows // b, n_det=info.n_det // b)


def effective_rows(start_row, end_row, n_rows: int, corr: Corrections):
    """Raw detector rows ``[start_row, end_row)`` (Python slice rules) as binned rows."""
    if corr.binning == 0:
        return start_row, end_row
    b = corr.factor
    start, stop, _ = slice(start_row, end_row).indices(n_rows)
    return start // b, min(math.ceil(stop / b), n_rows // b)


def correct_raw(scan, corr: Corrections):
    """Dezinger then bin the raw counts of ``scan`` (a :class:`tomodl.io.Scan`)."""
    if corr.dezinger == 0 and corr.binning == 0:
        return scan

    def fix(a):
        if a is None:
            return None
        if corr.dezinger:
            a = remove_outlier(a, corr.dezinger_threshold, corr.dezinger)
        return bin_projections(a, corr.binning)

    return scan._replace(proj=fix(scan.proj), flat=fix(scan.flat), dark=fix(scan.dark))


def line_integrals(transmission: np.ndarray, corr: Corrections) -> np.ndarray:
    """``-log`` of flat-field-corrected data ``(n_angles, n_rows, n_det)`` with the stripe
    removal of ``corr``, each filter in the domain its model assumes
    (:data:`tomodl.recon.stripes.STRIPE_DOMAINS`): ``vo-all`` (column ratios, Vo et al.) on the
    transmission, ``fw`` and ``ti`` (additive filters) on the line integrals, where a detector
    gain error is an additive stripe.  Plain ``minus_log`` when the method is ``"none"``."""
    from tomodl.recon.preprocess import minus_log
    from tomodl.recon.stripes import STRIPE_DOMAINS, remove_stripe

    method = corr.remove_stripe_method
    if method == "none":
        return minus_log(transmission)
    if STRIPE_DOMAINS[method] == "transmission":
        return minus_log(remove_stripe(transmission, corr))
    return remove_stripe(minus_log(transmission), corr)
