# SPDX-License-Identifier: BSD-3-Clause
"""The stages of a file reconstruction, each a plain function: read a chunk of rows, pre-process
it, find the centre, set up the denoiser, reconstruct.

Shared by the threaded conveyor (:mod:`tomodl.recon.volume`), the Dask workers
(:mod:`tomodl.recon.distributed`) and :mod:`tomodl.sim.pairs`, so every path computes the same
numbers.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any, Callable, Optional

import numpy as np

from tomodl.errors import ScanFileError
from tomodl.recon.chunks import select_rows
from tomodl.recon.config import ReconConfig, Rows
from tomodl.recon.corrections import NO_CORRECTIONS, Corrections

logger = logging.getLogger(__name__)


def load_chunk(path, rows: Rows, corr: Corrections = NO_CORRECTIONS):
    """Read projections, flats, darks and angles of detector rows ``rows`` only (binned rows
    with ``corr.binning``; the projections ``corr`` selects)."""
    from tomodl.io import read_dx
    from tomodl.recon.corrections import proj_slice, raw_rows

    if corr is NO_CORRECTIONS or corr == NO_CORRECTIONS:
        return read_dx(path, sino=rows)
    return read_dx(path, proj=proj_slice(corr), sino=raw_rows(rows, corr))


def preprocess_chunk(scan, path: Any = "", corr: Corrections = NO_CORRECTIONS) -> np.ndarray:
    """Line integrals ``(n_angles, rows, n_det)`` float32 of a raw chunk.

    ``-log(normalize(proj, flat, dark))`` with the row-local corrections of ``corr``:
    dezinger and binning of the raw counts, then stripe removal
    (:func:`tomodl.recon.corrections.line_integrals`).  The default ``corr`` changes nothing.
    A file of line integrals (:func:`holds_line_integrals`) is read as it is, binned and
    stripe-filtered the same way.
    """
    from tomodl.recon.corrections import correct_raw, line_integrals
    from tomodl.recon.preprocess import minus_log, normalize

    if holds_line_integrals(scan, path, corr):
        return _from_line_integrals(scan, path, corr)
    check_flats(scan, path)
    if corr is NO_CORRECTIONS or corr == NO_CORRECTIONS:
        return minus_log(normalize(scan.proj, scan.flat, scan.dark))
    scan = correct_raw(scan, corr)
    return line_integrals(normalize(scan.proj, scan.flat, scan.dark), corr)


def holds_line_integrals(scan, path: Any, corr: Corrections) -> bool:
    """Whether ``scan``'s projections are line integrals: ``corr.input_values`` says so, or
    (``"auto"``) the file has no flats and marks them
    (:func:`tomodl.io.dxchange.marked_line_integrals`)."""
    if corr.input_values != "auto":
        return corr.input_values == "line-integrals"
    if scan.flat is not None or not path:
        return False
    from tomodl.io.dxchange import marked_line_integrals

    return marked_line_integrals(path)


def _from_line_integrals(scan, path: Any, corr: Corrections) -> np.ndarray:
    from tomodl.recon.corrections import correct_raw, line_integrals

    if corr.dezinger:
        raise ScanFileError(f"{str(path)!r} holds line integrals (-log): --dezinger works on "
                            "raw counts (its threshold is in counts); drop --dezinger")
    proj = correct_raw(scan._replace(flat=None, dark=None), corr).proj
    proj = np.asarray(proj, dtype=np.float32)
    if corr.remove_stripe_method == "none":
        return proj
    return line_integrals(np.exp(-proj), corr)        # the stripe filter in its own domain


def check_flats(scan, path: Any = "") -> None:
    """Refuse a scan without flat fields (one line naming the file and the fix)."""
    if scan.flat is None:
        raise ScanFileError(f"{str(path)!r} has no flat fields (e.g. /exchange/data_white): "
                            "tomodl needs raw counts with flats, or line integrals: if the "
                            "projections are already -log'd, pass --input-values line-integrals "
                            "(Python: Corrections(input_values='line-integrals'))")


def resolve_center(path, info, cfg: ReconConfig) -> float:
    """The rotation axis: ``cfg.center``, or found once on the middle selected row."""
    if cfg.center != "auto":
        return float(cfg.center)
    from tomodl.recon.center import find_center

    start, stop = select_rows(info, cfg)
    mid = (start + stop) // 2
    scan = load_chunk(path, (mid, mid + 1), cfg.corrections)
    center = find_center(preprocess_chunk(scan, path, cfg.corrections), scan.theta, ind=0,
                         method=cfg.center_method, filter_name=cfg.filter_name,
                         device=cfg.device, ncore=cfg.ncore)
    logger.info("rotation axis found on row %d: %.2f px (detector middle %.1f)", mid, center,
                (info.n_det - 1) / 2)
    return center


def prepare_denoiser(cfg: ReconConfig, n_grid: int, theta=None):
    """``(ModelSpec, Denoiser, skipped)`` of ``cfg.algorithm`` (weights loaded once, screened;
    :func:`tomodl.recon.denoising.prepare_model`).

    ``(None, None, None)`` for plain FBP; ``(None, None, reason)`` when the shipped weights
    chosen for ``theta`` must not be applied (:func:`tomodl.models.releases.fallback_reason`).
    The spec's ``max_memory`` is set by the caller from the run's one memory plan.
    """
    from tomodl.recon.api import parse_algorithm
    from tomodl.recon.denoising import prepare_model

    n180 = None
    if theta is not None:
        from tomodl.recon.geometry import angles_per_half_turn

        n180 = angles_per_half_turn(theta)
    return prepare_model(parse_algorithm(cfg.algorithm).model, cfg.model, dtype=cfg.dtype,
                         batch_size=cfg.batch_size, device=cfg.device,
                         filter_name=cfg.filter_name, n_grid=n_grid, n_angles=n180,
                         sparse=cfg.sparse, corrections=cfg.corrections)


class RunCache:
    """What one run (or one Dask worker) computes once and reuses for every chunk: the FBP plan
    of each geometry and the refiner (its projectors, its chosen weights).  Owned by the run,
    never global, so two runs in one process share nothing."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._plans: dict = {}
        self._refiners: dict = {}

    def get(self, n_det: int, theta: np.ndarray, cfg: ReconConfig) -> Any:
        """The :class:`tomodl.recon.fbp.FbpPlan` of ``n_det`` columns, ``theta`` and ``cfg``."""
        from tomodl.recon.fbp import fbp_plan

        th = np.asarray(theta, np.float64)
        key = (int(n_det), th.tobytes(), cfg.filter_name, str(cfg.device))
        with self._lock:
            if key not in self._plans:
                self._plans[key] = fbp_plan(n_det, th, filter_name=cfg.filter_name,
                                            device=cfg.device, ncore=cfg.ncore)
            return self._plans[key]

    def refiner(self, cfg: ReconConfig, theta: np.ndarray) -> Any:
        """The run's :class:`tomodl.recon.refiner.Refiner` for ``cfg`` and ``theta``."""
        th = np.asarray(theta, np.float64)
        settings = cfg.refine_settings()
        key = (settings, th.tobytes())
        with self._lock:
            if key not in self._refiners:
                self._refiners[key] = _refiner(cfg, th)
            return self._refiners[key]


def _refiner(cfg: ReconConfig, theta: np.ndarray) -> Any:
    from tomodl.recon.refiner import Refiner

    return Refiner(cfg.refine_settings(), np.asarray(theta, np.float64))


def reconstruct_chunk(proj: np.ndarray, theta: np.ndarray, center: float, cfg: ReconConfig,
                      step: Optional[Callable] = None, clock=None,
                      plans: Optional[RunCache] = None) -> np.ndarray:
    """FBP (and denoising, and ``cfg.refine`` iterations of refinement against the
    projections) of projections ``(n_angles, rows, n_det)`` -> ``(rows, N, N)``.

    ``clock`` (a :class:`tomodl.recon.conveyor.StageClock`) receives the busy seconds;
    ``plans`` (the run's :class:`RunCache`) keeps the FBP plan and the refiner between chunks.
    """
    from tomodl.recon.fbp import fbp

    with _timed(clock, "fbp"):
        plan = None if plans is None else plans.get(proj.shape[2], theta, cfg)
        rec = fbp(np.swapaxes(proj, 0, 1), theta, center, filter_name=cfg.filter_name,
                  device=cfg.device, ncore=cfg.ncore, plan=plan)
    if step is not None:
        with _timed(clock, "denoise"):
            rec = step(rec, device=cfg.device, ncore=cfg.ncore)
    if cfg.refine:
        with _timed(clock, "refine"):
            denoise = None if step is None else \
                (lambda r: step(r, device=cfg.device, ncore=cfg.ncore))
            refiner = (_refiner(cfg, theta) if plans is None
                       else plans.refiner(cfg, theta))
            rec = refiner(rec, np.swapaxes(proj, 0, 1), center, device=cfg.device,
                          ncore=cfg.ncore, denoise=denoise,
                          reconstruct=lambda r: fbp(r, theta, center, filter_name=cfg.filter_name,
                                                    device=cfg.device, ncore=cfg.ncore,
                                                    plan=plan))
    return np.asarray(rec, dtype=np.float32)


def _timed(clock, stage: str):
    return clock.time(stage) if clock is not None else contextlib.nullcontext()
