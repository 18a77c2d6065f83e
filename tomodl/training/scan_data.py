# SPDX-License-Identifier: BSD-3-Clause
"""Training data from the user's own dense scans: full-angle labels and sparse inputs made on
the fly, with exactly the pre-processing and FBP of ``tomodl recon``.

For each scan (DXchange or NeXus, raw counts with flats and darks; or line integrals already
``-log``'d, as ``tomodl recon`` reads them: marked by the file, e.g. the root attribute
``normalisation="minus_log"``, or named by ``Corrections(input_values="line-integrals")``):

1. the projections are read row block by row block (:func:`tomodl.recon.stages.load_chunk`)
   and turned into line integrals by :func:`tomodl.recon.stages.preprocess_chunk` with the
   run's :class:`~tomodl.recon.corrections.Corrections` (:func:`line_integrals`);
2. the rotation axis is the one given (raw detector pixels, like ``--rotation-axis``) or found
   on the middle row as ``tomodl recon`` finds it (:func:`tomodl.recon.center.find_center`);
3. rows are chosen within a memory budget (:func:`choose_rows`): a contiguous block in the
   middle of the scan is held out for validation (neighbouring rows are nearly identical, so
   random rows would leak), with a guard band of rows on each side that is used for nothing;
4. each chosen row keeps its line integrals ``(n_angles, n_det)`` and its label, the FBP of
   all angles ``(N, N)`` (``N = n_det``) with the base weights' filter;
5. a sparse input for ``c`` projections per half turn is the FBP of an interleaved subset of
   the measured angles (:func:`subset`), with a random offset each time, normalized with the
   base weights' :class:`~tomodl.normalization.Policy` computed on the whole sparse slice (as
   inference does); the label is mapped with the same ``(lo, hi)``.

Nothing is written to disk.
"""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tomodl.errors import TomodlError
from tomodl.recon.corrections import NO_CORRECTIONS, Corrections

logger = logging.getLogger(__name__)

#: default memory for the rows kept (labels and line integrals of every scan), bytes
DEFAULT_MEMORY = 1 << 30
#: fraction of a scan's rows in the held-out block
HOLDOUT_FRACTION = 0.2
#: at most this many held-out rows per scan are kept (validation and reference scores)
MAX_HOLDOUT_ROWS = 4
#: rows read and reconstructed at a time while building the labels
BLOCK_ROWS = 8
#: a training row whose label spans less than this fraction of the widest row's is left out
EMPTY_ROW = 0.1


@dataclass(frozen=True)
class ScanPlan:
    """One dense scan as the fine-tuning sees it.

    Attributes
    ----------
    path : Path
    sha256 : str
        Of the whole file.
    theta : ndarray, float64, shape (n_angles,)
        Radians, after the projection selection of the corrections.
    n180 : float
        Projections per half turn (:func:`tomodl.recon.geometry.angles_per_half_turn`).
    n_rows, n_det : int
        After binning.
    center : float
        Rotation axis in (binned) detector pixels.
    minus_log : bool
        The file holds line integrals (no flats).
    train_rows, holdout_rows : tuple of int
        Detector rows (binned) used for training / held out.
    """

    path: Path
    sha256: str
    theta: np.ndarray
    n180: float
    n_rows: int
    n_det: int
    center: float
    minus_log: bool
    train_rows: Tuple[int, ...]
    holdout_rows: Tuple[int, ...]

    def provenance(self) -> Dict[str, Any]:
        """JSON-ready record (file, hash, geometry, rows)."""
        return {"file": str(self.path), "sha256": self.sha256, "n_angles": int(self.theta.size),
                "angles_per_half_turn": round(self.n180, 2), "n_det": self.n_det,
                "center": round(self.center, 3), "minus_log": self.minus_log,
                "train_rows": list(self.train_rows), "holdout_rows": list(self.holdout_rows)}


def file_sha256(path: Path, block: int = 1 << 24) -> str:
    """SHA-256 of a file, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()


def subset(n_total: int, m: int, offset: float) -> np.ndarray:
    """``m`` interleaved indices out of ``n_total`` angles, evenly spaced from ``offset``.

    ``offset`` is in ``[0, n_total / m)``; the indices are increasing and distinct.

    Examples
    --------
    >>> subset(12, 4, 1.0).tolist()
    [1, 4, 7, 10]
    """
    step = n_total / m
    idx = np.floor(offset + step * np.arange(m) + 1e-9).astype(np.int64)
    return np.clip(idx, 0, n_total - 1)


def subset_size(count: float, n_angles: int, n180: float) -> int:
    """Measured angles taken for ``count`` projections per half turn."""
    return int(min(n_angles, max(2, round(count * n_angles / n180))))


def choose_rows(n_rows: int, per_row: int, memory: int,
                rows: Optional[Sequence[int]] = None,
                holdout: Optional[Sequence[int]] = None) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Training and held-out rows of a scan of ``n_rows`` rows.

    Without ``rows``/``holdout``: the held-out block is the middle :data:`HOLDOUT_FRACTION` of
    the rows (at least one row), with a guard band of a quarter of its height (at least one row,
    when there are rows to spare) on each side; training uses the other rows.  Either list is
    then thinned evenly: the held-out rows to :data:`MAX_HOLDOUT_ROWS`, the training rows to
    what ``memory`` holds at ``per_row`` bytes a row.

    Raises
    ------
    TomodlError
        Fewer than two rows, rows outside the scan, or overlapping lists.
    """
    if holdout is None:
        if n_rows < 2:
            raise TomodlError(
                f"the scan has {n_rows} row: one row cannot be split into training and "
                "held-out rows", fix="add a scan with more rows, or give rows= and holdout_rows=",
                cli_fix="add a scan with more rows")
        h = max(1, round(HOLDOUT_FRACTION * n_rows))
        start = n_rows // 2 - h // 2
        guard = max(1, h // 4) if n_rows - h >= 2 + 2 * max(1, h // 4) else 0
        holdout = range(start, start + h)
        excluded = set(range(start - guard, start + h + guard))
        rows = [r for r in (range(n_rows) if rows is None else rows) if r not in excluded]
    elif rows is None:
        rows = [r for r in range(n_rows) if r not in set(holdout)]
    rows, holdout = sorted(set(int(r) for r in rows)), sorted(set(int(r) for r in holdout))
    bad = [r for r in rows + holdout if not 0 <= r < n_rows]
    if bad or set(rows) & set(holdout) or not rows or not holdout:
        raise TomodlError(
            f"rows {rows} and held-out rows {holdout} must be distinct, non-empty and inside "
            f"the scan's {n_rows} rows", fix="give other rows")
    holdout = thin(holdout, MAX_HOLDOUT_ROWS)
    room = max(1, int(memory // max(per_row, 1)) - len(holdout))
    return tuple(thin(rows, room)), tuple(holdout)


def thin(rows: List[int], k: int) -> List[int]:
    """``k`` of ``rows`` evenly spread (all when there are no more)."""
    if len(rows) <= k:
        return list(rows)
    pick = np.round(np.linspace(0, len(rows) - 1, k)).astype(int)
    return [rows[i] for i in pick]


def line_integrals(path: Path, rows: Tuple[int, int], corr: Corrections,
                   minus_log: Optional[bool] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``(line integrals (n_angles, rows, n_det) float32, theta float64)`` of detector rows
    ``rows``, pre-processed exactly as ``tomodl recon`` does
    (:func:`tomodl.recon.stages.preprocess_chunk`, which also reads files of line integrals
    as they are).  ``minus_log`` is not needed (kept for callers that pass it)."""
    from tomodl.recon.stages import load_chunk, preprocess_chunk

    scan = load_chunk(path, rows, corr)
    return preprocess_chunk(scan, path, corr), np.asarray(scan.theta, np.float64)


def _check_corrections(corr: Corrections) -> None:
    if corr.retrieve_phase_method != "none" or corr.file_type != "standard":
        raise TomodlError("phase retrieval and double_fov scans are not supported by "
                          "fine-tuning yet", fix="fine-tune on a standard scan without them")


def plan_scan(path: Any, *, corrections: Corrections = NO_CORRECTIONS,
              center: Optional[float] = None, filter_name: str = "shepp",
              memory: int = DEFAULT_MEMORY, rows: Optional[Sequence[int]] = None,
              holdout_rows: Optional[Sequence[int]] = None, device: str = "auto",
              ncore: Optional[int] = None) -> ScanPlan:
    """Read a scan's geometry, choose its rows and find its rotation axis (no labels yet).

    ``center`` is in raw detector pixels (like ``tomodl recon --rotation-axis``); None finds
    it on the middle row of the scan as ``tomodl recon`` does.
    """
    from tomodl.io.dxchange import scan_info
    from tomodl.recon.geometry import angles_per_half_turn
    from tomodl.recon.corrections import binned_center, effective_info

    path = Path(path)
    _check_corrections(corrections)
    info = effective_info(scan_info(path), corrections)
    minus_log = (corrections.input_values == "line-integrals"
                 or (corrections.input_values == "auto" and info.line_integrals))
    if not info.has_flat:   # refused now what tomodl recon refuses (no flats and not marked
        line_integrals(path, (0, 1), corrections)          # as line integrals, dezinger on them)
    theta = np.asarray(info.theta, np.float64)
    per_row = 4 * (theta.size * info.n_det + info.n_det ** 2)
    train, held = choose_rows(info.n_rows, per_row, memory, rows, holdout_rows)
    if center is None:
        mid = (info.n_rows - 1) // 2
        center = _find_center(path, mid, corrections, filter_name, device, ncore)
    else:
        center = binned_center(float(center), corrections.binning)
    return ScanPlan(path, file_sha256(path), theta, angles_per_half_turn(theta), info.n_rows,
                    info.n_det, float(center), minus_log, train, held)


def _find_center(path: Path, row: int, corr: Corrections, filter_name: str, device: str,
                 ncore: Optional[int]) -> float:
    from tomodl.recon.center import find_center

    li, theta = line_integrals(path, (row, row + 1), corr)
    c = find_center(li, theta, ind=0, filter_name=filter_name, device=device, ncore=ncore)
    logger.info("%s: rotation axis found on row %d: %.2f px", path.name, row, c)
    return float(c)


class RowStore:
    """Line integrals and full-angle labels of the chosen rows of every scan, in memory.

    Parameters
    ----------
    plans : list of ScanPlan
    corrections : Corrections
    filter_name : str
        FBP filter (the base weights' ``filter_name``).
    device, ncore
        Of the FBP.
    """

    def __init__(self, plans: Sequence[ScanPlan], corrections: Corrections, filter_name: str,
                 device: str = "auto", ncore: Optional[int] = None):
        self.plans = list(plans)
        self.filter_name, self.device, self.ncore = filter_name, device, ncore
        #: per kept row: (scan index, row, sinogram (n_angles, n_det), label (N, N))
        self.rows: List[Tuple[int, int, np.ndarray, np.ndarray]] = []
        for i, plan in enumerate(self.plans):
            for row, sino, label in self._load(plan, corrections):
                self.rows.append((i, row, sino, label))
        self.train = self._useful([k for k, r in enumerate(self.rows)
                                   if r[1] in self.plans[r[0]].train_rows])
        self.holdout = [k for k, r in enumerate(self.rows)
                        if r[1] in self.plans[r[0]].holdout_rows]

    def _useful(self, rows: List[int]) -> List[int]:
        """Drop empty rows (air or padding: a label range below :data:`EMPTY_ROW` of the
        largest), which would only teach the network to return flat images."""
        from tomodl.metrics import circle_mask

        spans = []
        for k in rows:
            label = self.rows[k][3]
            lo, hi = np.percentile(label[circle_mask(label.shape)], [1, 99])
            spans.append(hi - lo)
        keep = [k for k, s in zip(rows, spans) if s >= EMPTY_ROW * max(spans, default=0)]
        keep = keep or rows
        #: (scan index, row) of the empty training rows left out
        self.empty = [self.rows[k][:2] for k in rows if k not in keep]
        if self.empty:
            logger.info("%d empty training rows left out", len(self.empty))
        return keep

    def _load(self, plan: ScanPlan, corr: Corrections):
        from tomodl.recon.fbp import fbp, fbp_plan

        wanted = sorted(plan.train_rows + plan.holdout_rows)
        fplan = fbp_plan(plan.n_det, plan.theta, filter_name=self.filter_name,
                         device=self.device, ncore=self.ncore)
        for start in range(0, len(wanted), BLOCK_ROWS):
            block = wanted[start:start + BLOCK_ROWS]
            li, _ = line_integrals(plan.path, (block[0], block[-1] + 1), corr)
            sinos = np.swapaxes(li, 0, 1)[[r - block[0] for r in block]]
            labels = fbp(sinos, plan.theta, plan.center, filter_name=self.filter_name,
                         device=self.device, ncore=self.ncore, plan=fplan)
            for j, r in enumerate(block):
                yield r, np.ascontiguousarray(sinos[j], np.float32), \
                    np.asarray(labels[j], np.float32)

    def nbytes(self) -> int:
        """Bytes held."""
        return sum(s.nbytes + lab.nbytes for _, _, s, lab in self.rows)

    def sparse(self, k: int, count: float, offset: float) -> np.ndarray:
        """FBP ``(N, N)`` float32 of row ``k`` from ``count`` projections per half turn, the
        interleaved subset starting at ``offset`` (a fraction of the subset's step, [0, 1))."""
        from tomodl.recon.fbp import fbp

        i, _, sino, _ = self.rows[k]
        plan = self.plans[i]
        m = subset_size(count, plan.theta.size, plan.n180)
        idx = subset(plan.theta.size, m, offset * plan.theta.size / m)
        rec = fbp(sino[None, idx], plan.theta[idx], plan.center, filter_name=self.filter_name,
                  device=self.device, ncore=self.ncore)
        return np.asarray(rec[0], np.float32)

    def label(self, k: int) -> np.ndarray:
        """The full-angle FBP ``(N, N)`` of row ``k``."""
        return self.rows[k][3]


def random_crop(x: np.ndarray, y: np.ndarray, size: int, rng: np.random.Generator
                ) -> Tuple[np.ndarray, np.ndarray]:
    """The same random ``size``-square crop of ``x`` and ``y`` (``(N, N)``), its centre inside
    the reconstruction circle so that the crop lies in it as far as it can, randomly flipped
    along each axis."""
    n = x.shape[-1]
    c = min(size, n)
    y0, x0 = _corner(n, c, rng)
    xs, ys = x[y0:y0 + c, x0:x0 + c], y[y0:y0 + c, x0:x0 + c]
    for axis in (0, 1):
        if rng.random() < 0.5:
            xs, ys = np.flip(xs, axis), np.flip(ys, axis)
    return np.ascontiguousarray(xs), np.ascontiguousarray(ys)


def fixed_crops(n: int, size: int, k: int, seed: int = 12345) -> List[Tuple[int, int]]:
    """``k`` deterministic crop corners ``(y0, x0)`` of a ``size`` square in an ``N x N``
    slice, centred inside the reconstruction circle (one when the crop is the whole slice)."""
    if size >= n:
        return [(0, 0)]
    rng = np.random.default_rng(seed)
    return sorted({_corner(n, size, rng) for _ in range(k)})


def _corner(n: int, c: int, rng: np.random.Generator) -> Tuple[int, int]:
    radius = max(0.0, n / 2 - c / math.sqrt(2))
    r, a = radius * math.sqrt(rng.random()), 2 * math.pi * rng.random()
    cy = min(max(n / 2 + r * math.sin(a), c / 2), n - c / 2)
    cx = min(max(n / 2 + r * math.cos(a), c / 2), n - c / 2)
    return int(round(cy - c / 2)), int(round(cx - c / 2))
