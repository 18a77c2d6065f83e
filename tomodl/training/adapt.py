# SPDX-License-Identifier: BSD-3-Clause
"""``tomodl adapt``: teach a released network the user's sample from the sparse scan alone.

Self-supervision by splitting the measured angles (Noise2Inverse, Hendriksen et al. 2020; with
the loss in the projection domain as in Sparse2Inverse, Gruber et al. 2024).  The angles are
split into ``K`` interleaved subsets (:func:`interleaved_subsets`).  For subset ``k`` of a row
the network sees the FBP of the *other* ``K - 1`` subsets, normalized with the weights' policy
(:class:`tomodl.normalization.Policy`) exactly as at inference; its output, mapped back to
attenuation, is forward-projected at the angles of subset ``k``
(:class:`~tomodl.recon.projector.ParallelProjector`) and compared with what was measured there,
filtered along the detector and divided by the same norm of the measurement (per row):

    loss = ||F (P_k x - y_k)||^2 / ||F y_k||^2

A streak, an invented pore or a bent edge is not in the set-aside projections; the true image
is (up to noise, which is independent between angles). ``F`` (:data:`LOSS_FILTERS`) is by
default a ramp ``|f|`` (with a floor, :data:`RAMP_FLOOR`, for the low frequencies): by the
Fourier-slice theorem the squared error of the image weights the projections' spectrum by
``|f|``, so every scale counts as it does in the image (the detector derivative, ``~f^2``, is
the alternative). Both come after a Gaussian of :data:`SMOOTH` px.  It was introduced against
the ripple of an earlier, pixel-driven projector near 45 degrees (larger than the image's own
fine detail there; a network trained against it learned to pre-distort its output: PSNR
against the truth fell from 25 to 8 dB in 30 steps).  The footprint projector of
:mod:`tomodl.recon.projector` has no such ripple; the smoothing is kept (it also damps the
detector-pixel noise) and was not re-measured without it.

Validation is the same loss on blocks of rows held out of training, every subset,
deterministic; the reference scores (FBP of the other subsets, base, adapted) are its square
root pooled over the held-out rows, a consistency score like that of ``tomodl recon --check``
(:mod:`tomodl.recon.check`).

Cost.  Whole slices are needed (line integrals cross the slice), so each step runs the network
on full slices: the slices are cut to the smallest centred square that holds the sample
(:func:`support_size`, found from the sinogram, a multiple of 16) -- the network and the
projector then work on fewer pixels, on the same pixel lattice as the full grid.  One projector
is built per subset and reused.  The network at inference sees all ``n`` angles, in training
``(K - 1) / K`` of them; ``K`` = :data:`FOLDS` keeps that gap small while each set-aside subset
still holds at least 2 angles.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from tomodl.errors import TomodlError

logger = logging.getLogger(__name__)

#: Interleaved subsets of the angles (fewer when the scan has few angles: each >= 2).
FOLDS = 4
#: Fewest projections adapt accepts (2 set aside per subset and >= 6 seen by the network).
MIN_ANGLES = 8
#: Rows read from a scan file by default (spread evenly over the detector).
ROWS = 16
#: Fraction of the rows held out (one contiguous block) for validation.
VAL_FRACTION = 0.25
#: The support crop: line integrals above this fraction of the largest one are "sample".
SUPPORT_LEVEL = 0.03
#: ... and the square is widened by this many pixels (plus 4 % of the grid) around it.
SUPPORT_MARGIN = 12
#: The crop is a multiple of this (the network's size multiple: no padding).
SIZE_MULTIPLE = 16
#: Adam learning rate and warm-up steps of adapt (few steps fit a budget of minutes).
LR = 5e-5
WARMUP = 3
#: Rows per step (all with the same set-aside subset).
BATCH = 2
#: Weight of the proximity to the base's output (normalized units) in adapt's loss: on the
#: tooth (one training row) at 19 projections, 0 lost 0.6 dB against the release, 10 gained.
PROXIMITY = 10.0
#: The ramp filter's floor, in units of ``1 / n_det``: frequencies below ``RAMP_FLOOR / n_det``
#: weigh as much as that one.  With 1 (a ramp that only keeps the mean) adapt added a smooth
#: shading error to a training-family foam the release already handles (-0.52 dB in 8 steps,
#: the held-out loss blind to it); with 8, -0.03 dB, and dendrites still gained +0.34 dB.
RAMP_FLOOR = 8.0
#: Gaussian smoothing (detector pixels) before the loss filter (introduced against an earlier
#: projector's ripple near 45 degrees, kept with the footprint projector; see the docstring).
SMOOTH = 1.0


@dataclass(frozen=True)
class AdaptSettings:
    """Settings of the adapt task (recorded in the provenance).

    Attributes
    ----------
    folds : int
        ``K``, interleaved angle subsets (:func:`choose_folds`).
    batch : int
        Rows per step (all with the same set-aside subset).
    proximity : float
        Weight of ``mean((f(x) - f_base(x))^2)`` in normalized units (0: off here;
        :func:`adapt` uses :data:`PROXIMITY`): a brake on drifting away from the base on tiny
        data (one slice can be fitted by outputs the full-angle input does not support).
    crop : bool
        Cut slices to the sample's support (:func:`support_size`).
    loss_filter : str
        A key of :data:`LOSS_FILTERS`.
    """

    folds: int = FOLDS
    batch: int = BATCH
    proximity: float = 0.0
    crop: bool = True
    loss_filter: str = "ramp"

    def __post_init__(self) -> None:
        if self.loss_filter not in LOSS_FILTERS:
            raise TomodlError(f"Unknown loss filter {self.loss_filter!r}",
                              fix=f"choose one of {list(LOSS_FILTERS)}")
        if int(self.folds) < 2 or int(self.batch) < 1 or not self.proximity >= 0:
            raise TomodlError(f"adapt settings out of range: folds={self.folds} (>= 2), "
                              f"batch={self.batch} (>= 1), proximity={self.proximity} (>= 0)")


# -- the split and the loss -------------------------------------------------------------------
def choose_folds(n_angles: int, folds: Optional[int] = None) -> int:
    """``K`` for a scan of ``n_angles``: ``folds`` (default :data:`FOLDS`), lowered so that each
    subset holds at least 2 angles.  Raises TomodlError below :data:`MIN_ANGLES` angles or when
    ``folds`` leaves fewer than 6 angles for the network."""
    n = int(n_angles)
    if n < MIN_ANGLES:
        raise TomodlError(f"{n} projections are too few to adapt on: adapt sets 2 or more "
                          f"angles aside per subset and shows the network the rest",
                          fix=f"adapt needs at least {MIN_ANGLES} projections")
    k = FOLDS if folds is None else int(folds)
    if k < 2:
        raise TomodlError(f"folds={folds} must be at least 2")
    k = min(k, n // 2)
    if n - -(-n // k) < 6:
        raise TomodlError(f"folds={folds} leaves fewer than 6 of {n} angles for the network",
                          fix="use more folds")
    return k


def interleaved_subsets(theta, folds: int) -> List[np.ndarray]:
    """``K`` interleaved subsets of the angle indices: by increasing direction (angle modulo
    ``pi``), angle ``i`` goes to subset ``i mod K``.  They partition ``range(n_angles)``; each
    is sorted."""
    th = np.mod(np.asarray(theta, dtype=np.float64).ravel(), np.pi)
    order = np.argsort(th, kind="stable")
    return [np.sort(order[k::int(folds)]) for k in range(int(folds))]


#: Filters of the held-out residual along the detector (both after a Gaussian of
#: :data:`SMOOTH` px): ``ramp`` weights the residual's power by ``|f| + RAMP_FLOOR/n_det`` (by
#: the Fourier-slice theorem ``|f|`` is what the image's squared error weights; the floor
#: keeps the low frequencies from drifting); ``derivative`` is
#: :func:`tomodl.recon.check.detector_derivative` (``~f^2``: fine detail counts most).
LOSS_FILTERS = {
    "ramp": "|f| + RAMP_FLOOR/n_det (image-domain squared error; the default)",
    "derivative": "(2 sin(pi f))^2: the consistency score of tomodl recon --check",
}


def projection_residual(images, y, projector, loss_filter: str = "ramp",
                        sigma: float = SMOOTH):
    """``(||F (P x - y)||^2, ||F y||^2)`` per image, torch ``(B,)`` float32, differentiable in
    ``images`` ``(B, N, N)`` (attenuation per pixel); ``y`` ``(B, n_angles, n_det)``; ``F`` a
    filter of :data:`LOSS_FILTERS` after a Gaussian of ``sigma`` detector pixels."""
    from tomodl.recon.check import detector_derivative

    if loss_filter not in LOSS_FILTERS:
        raise TomodlError(f"Unknown loss filter {loss_filter!r}",
                          fix=f"choose one of {list(LOSS_FILTERS)}")
    p = projector.forward(images)
    y = p.new_tensor(y) if not hasattr(y, "device") else y.to(p.device, p.dtype)
    if loss_filter == "ramp":
        return _ramp_norm(p - y, sigma), _ramp_norm(y, sigma).clamp_min(1e-30)
    num = detector_derivative(p - y, sigma).square().sum(dim=(-2, -1))
    den = detector_derivative(y, sigma).square().sum(dim=(-2, -1))
    return num, den.clamp_min(1e-30)


def _ramp_norm(r, sigma: float):
    """``sum_f (|f| + 1/n) exp(-4 pi^2 sigma^2 f^2) |R(f)|^2`` over angles, per image (Parseval,
    one-sided spectrum)."""
    import torch

    n = r.shape[-1]
    f = torch.fft.rfftfreq(n, device=r.device)
    h2 = (f.abs() + RAMP_FLOOR / n) * torch.exp(-4 * np.pi ** 2 * sigma ** 2 * f ** 2)
    w = torch.full_like(f, 2.0)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    spec = torch.fft.rfft(r, dim=-1).abs().square()
    return (spec * (h2 * w)).sum(dim=(-2, -1)) / n


def projection_loss(images, y, projector, loss_filter: str = "ramp"):
    """Relative squared held-out residual per image, torch ``(B,)`` (0 = consistent)."""
    num, den = projection_residual(images, y, projector, loss_filter)
    return num / den


# -- the slice crop ---------------------------------------------------------------------------
def support_size(sinos, center: float, n: int) -> int:
    """Side of the centred square (same pixel lattice as the ``n x n`` grid) that holds the
    sample: the detector columns whose largest line integral over angles and rows exceeds
    :data:`SUPPORT_LEVEL` of the largest, widened by a margin; a multiple of 16, at most
    ``n`` (``n`` itself when the crop would save little)."""
    s = np.asarray(sinos, dtype=np.float32)
    prof = s.reshape(-1, s.shape[-1]).max(axis=0)
    cols = np.flatnonzero(prof > SUPPORT_LEVEL * max(float(prof.max()), 1e-12))
    if cols.size == 0:
        return int(n)
    radius = max(abs(cols[0] - 0.5 - center), abs(cols[-1] + 0.5 - center))
    side = 2 * (radius + SUPPORT_MARGIN + 0.04 * n)
    m = int(SIZE_MULTIPLE * np.ceil(side / SIZE_MULTIPLE))
    return int(n) if m >= 0.9 * n else max(m, SIZE_MULTIPLE)


def crop_offsets(n: int, m: int) -> Tuple[int, int]:
    """``(row0, col0)`` of the ``m x m`` grid inside the ``n x n`` one: pixel ``(i, j)`` of the
    small grid is pixel ``(row0 + i, col0 + j)`` of the large (:mod:`tomodl.recon.geometry`)."""
    from tomodl.recon.geometry import grid_origin

    col0 = int(grid_origin(n) - grid_origin(m))
    row0 = int((n - 1 - grid_origin(n)) - (m - 1 - grid_origin(m)))
    return row0, col0


@dataclass
class _Fold:
    """One set-aside subset: its angles, the network inputs and the held-out measurements."""

    held: np.ndarray            # angle indices set aside
    x: Any                      # (R, 1, m, m) normalized FBP of the other angles
    lo: Any                     # (R, 1, 1, 1) policy offsets
    span: Any                   # (R, 1, 1, 1) hi - lo
    y: Any                      # (R, n_held, n_det) measured line integrals
    projector: Any


class AdaptTask:
    """The self-supervised objective of ``tomodl adapt`` for :func:`run_budgeted`.

    Parameters
    ----------
    sinos : ndarray, shape (n_rows, n_angles, n_det), float32
        Line integrals of the rows used (pre-processed as ``tomodl recon`` does).
    theta : array_like, shape (n_angles,)
        Angles in radians.
    center : float
        Rotation axis, detector pixels.
    val_rows : sequence of int
        Indices into ``sinos`` held out for validation (never trained on).
    policy : tomodl.normalization.Policy
        The base weights' normalization.
    filter_name : str
        FBP filter (the base weights').
    settings : AdaptSettings
    source : dict, optional
        Provenance of the data (file, sha256, detector rows).
    base_model : torch.nn.Module, optional
        The base network, needed only with ``settings.proximity > 0``.
    row_ids : sequence of int, optional
        Detector rows of ``sinos`` (for the provenance; default their indices).
    device : str or torch.device
    """

    kind = "adapt"

    def __init__(self, sinos, theta, center: float, val_rows: Sequence[int], *, policy,
                 filter_name: str = "shepp", settings: AdaptSettings = AdaptSettings(),
                 source: Optional[Dict[str, Any]] = None, base_model=None,
                 row_ids: Optional[Sequence[int]] = None, device: Any = "cpu") -> None:
        import torch

        s = np.ascontiguousarray(sinos, dtype=np.float32)
        th = np.asarray(theta, dtype=np.float64).ravel()
        if s.ndim != 3 or s.shape[1] != th.size or not np.isfinite(s).all():
            raise TomodlError(f"adapt needs finite sinograms (rows, n_angles={th.size}, n_det), "
                              f"got shape {s.shape}")
        self.device = torch.device(device)
        self.settings, self.source = settings, dict(source or {})
        self.row_ids = [int(r) for r in (range(s.shape[0]) if row_ids is None else row_ids)]
        self.folds = choose_folds(th.size, settings.folds)
        self.center, self.n = float(center), s.shape[2]
        self.val_rows = np.unique(np.asarray(val_rows, dtype=int))
        train = np.setdiff1d(np.arange(s.shape[0]), self.val_rows)
        self.train_rows = train if train.size else self.val_rows
        if train.size == 0:
            logger.warning("adapt: one row only, so validation uses the training row: the "
                           "held-out check against over-fitting is weak; give more rows")
        self.m = support_size(s, self.center, self.n) if settings.crop else self.n
        self._fold_data = [self._fold(s, th, held, policy, filter_name)
                           for held in interleaved_subsets(th, self.folds)]
        self._base = base_model
        self._base_out: Dict[Tuple[int, int], Any] = {}
        logger.info("adapt: %d angles in %d interleaved subsets, %d training and %d validation "
                    "rows, slices cut to %d of %d px", th.size, self.folds, self.train_rows.size,
                    self.val_rows.size, self.m, self.n)

    def _fold(self, s, th, held, policy, filter_name) -> _Fold:
        import torch

        from tomodl.recon.fbp import fbp
        from tomodl.recon.projector import ParallelProjector

        keep = np.setdiff1d(np.arange(th.size), held)
        rec = np.asarray(fbp(s[:, keep], th[keep], self.center, filter_name=filter_name,
                             num_gridx=self.n), dtype=np.float32)
        lo, hi = policy.stats(rec)                  # from the full grid, as at inference
        r0, c0 = crop_offsets(self.n, self.m)
        x = policy.forward(rec[:, r0:r0 + self.m, c0:c0 + self.m], lo, hi)

        def t(a):
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(self.device)

        proj = ParallelProjector(self.m, th[held], self.n, self.center, device=self.device)
        return _Fold(held, t(x[:, None]), t(lo[:, None]), t((hi - lo)[:, None]), t(s[:, held]),
                     proj)

    # -- the Task protocol ------------------------------------------------------------------
    def _images(self, model, fold: _Fold, rows):
        """The network's output for ``rows`` in attenuation units ``(B, m, m)`` float32."""
        import torch

        idx = torch.as_tensor(np.asarray(rows), device=self.device)
        out = model(fold.x[idx])
        with torch.autocast(self.device.type, enabled=False):
            return (out.float() * fold.span[idx] + fold.lo[idx])[:, 0], out

    def train_loss(self, model, rng: np.random.Generator):
        """One step: a random subset ``k`` and ``batch`` random training rows."""
        import torch

        k = int(rng.integers(self.folds))
        fold = self._fold_data[k]
        b = min(self.settings.batch, self.train_rows.size)
        rows = np.sort(rng.choice(self.train_rows, size=b, replace=False))
        images, out = self._images(model, fold, rows)
        with torch.autocast(self.device.type, enabled=False):
            loss = projection_loss(images, fold.y[torch.as_tensor(rows)], fold.projector,
                                   self.settings.loss_filter).mean()
            if self.settings.proximity > 0:
                ref = self._base_outputs(k, rows)
                loss = loss + self.settings.proximity * (out.float() - ref).square().mean()
        return loss

    def _base_outputs(self, k: int, rows) -> Any:
        """The base network's outputs (normalized units), computed once per (subset, row)."""
        import torch

        if self._base is None:
            raise TomodlError("AdaptTask: proximity > 0 needs base_model")
        missing = [int(r) for r in rows if (k, int(r)) not in self._base_out]
        if missing:
            self._base.eval()
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False):
                out = self._base(self._fold_data[k].x[torch.as_tensor(missing)]).float()
            self._base_out.update({(k, r): o for r, o in zip(missing, out)})
        return torch.stack([self._base_out[(k, int(r))] for r in rows])

    def _residuals(self, model) -> np.ndarray:
        """``(folds, rows, 2)`` squared residual norms and measurement norms on the validation
        rows (``model=None``: the FBP input itself)."""
        import torch

        out = np.zeros((self.folds, self.val_rows.size, 2))
        for k, fold in enumerate(self._fold_data):
            for i, r in enumerate(self.val_rows):
                if model is None:
                    img = fold.x[r:r + 1, 0] * fold.span[r:r + 1, 0] + fold.lo[r:r + 1, 0]
                else:
                    img = self._images(model, fold, [r])[0]
                with torch.autocast(self.device.type, enabled=False):
                    num, den = projection_residual(img.float(), fold.y[r:r + 1],
                                                   fold.projector, self.settings.loss_filter)
                out[k, i] = float(num[0]), float(den[0])
        return out

    def validation_loss(self, model) -> float:
        """Mean relative held-out residual over the validation rows and every subset."""
        res = self._residuals(model)
        return float(np.mean(res[..., 0] / res[..., 1]))

    def reference_scores(self, model) -> Dict[str, Dict[str, float]]:
        """Consistency scores ``||D(P x - y)|| / ||D y||`` pooled over the validation rows and
        subsets, for the FBP of the other subsets and for ``model``'s output."""
        def score(res):
            return {"consistency": round(float(np.sqrt(res[..., 0].sum() / res[..., 1].sum())),
                                         5),
                    "loss": round(float(np.mean(res[..., 0] / res[..., 1])), 6)}

        return {"fbp": score(self._residuals(None)), "network": score(self._residuals(model))}

    def provenance(self) -> Dict[str, Any]:
        """The data and settings (deterministic)."""
        sizes = [int(f.held.size) for f in self._fold_data]
        return {**self.source, "angles": int(sum(sizes)), "folds": self.folds,
                "held_out_angles_per_subset": sizes, "center": round(self.center, 4),
                "grid": self.n, "crop": self.m,
                "rows_trained": [self.row_ids[r] for r in self.train_rows],
                "rows_validated": [self.row_ids[r] for r in self.val_rows],
                "loss": f"||F(P_k x - y_k)||^2 / ||F y_k||^2, F = {self.settings.loss_filter} "
                        f"filter after a Gaussian of {SMOOTH:g} px, x from the FBP of the "
                        "other subsets",
                "settings": asdict(self.settings)}


# -- the command ------------------------------------------------------------------------------
def adapt(scan: Union[str, Path], out: Union[str, Path], *, base: Optional[Union[str, Path]] = None,
          minutes: float = 10.0, center: Optional[float] = None, corrections=None,
          device: str = "auto", threads: Optional[int] = None, seed: int = 0,
          lr: float = LR, precision: str = "auto", folds: Optional[int] = None,
          batch: int = BATCH, proximity: float = PROXIMITY, loss_filter: str = "ramp",
          rows: Optional[Sequence[int]] = None,
          holdout_rows: Optional[Sequence[int]] = None, max_rows: int = ROWS,
          max_steps: Optional[int] = None, validate_every: float = 30.0, resume: bool = True,
          overwrite: bool = False, progress: Optional[bool] = None):
    """Adapt a released network to a sparse scan, self-supervised (no dense scan needed).

    Parameters
    ----------
    scan : path
        The sparse DXchange / NeXus scan (raw counts with flats, or a ``-log`` file marked
        ``normalisation="minus_log"``), read and pre-processed as ``tomodl recon`` does.
    out : path
        Weights folder to write (``tomodl recon SCAN --model out``).
    base : str or path, optional
        Release name or weights folder to start from (default: the release ``tomodl recon``
        chooses for this scan's angles).
    minutes : float
        Training and validation wall time (reading, preparation and final scoring are extra).
    center : float, optional
        Rotation axis in raw detector pixels (default: found as ``tomodl recon`` finds it).
    corrections : tomodl.recon.corrections.Corrections, optional
        Pre-processing, as for ``tomodl recon`` (``proj_step`` etc. select the projections).
    folds, batch, proximity, loss_filter
        :class:`AdaptSettings` (``folds`` None: :data:`FOLDS`, fewer for few angles).
    rows, holdout_rows : list of int, optional
        Detector rows (after binning) to train on / to hold out (default: the middle fifth
        held out, :func:`tomodl.training.scan_data.choose_rows`); at most ``max_rows``
        training rows are kept, evenly spread.
    lr, precision, seed, threads, device, max_steps, validate_every
        :class:`tomodl.training.budgeted.BudgetConfig`.
    resume, overwrite, progress
        As :func:`tomodl.training.budgeted.run_budgeted`.

    Returns
    -------
    tomodl.training.budgeted.BudgetResult
        ``scores["base"]`` / ``scores["final"]``: :meth:`AdaptTask.reference_scores` of the
        base and of the exported network on the held-out rows.

    Raises
    ------
    tomodl.errors.TomodlError
        Too few projections to split (:data:`MIN_ANGLES`), a scan of one row without
        ``rows``/``holdout_rows``, a budget too small for one validation pass, an output that
        may not be replaced.
    """
    from tomodl.backend import resolve_device
    from tomodl.io.atomic import check_replace
    from tomodl.io.dxchange import scan_info
    from tomodl.models.releases import select_weights
    from tomodl.recon.geometry import angles_per_half_turn
    from tomodl.models.weights import load_weights, read_config
    from tomodl.recon.corrections import NO_CORRECTIONS, effective_info
    from tomodl.training.budgeted import BudgetConfig, resolve_base, run_budgeted
    from tomodl.training.scan_data import line_integrals, plan_scan, thin

    path, corr = Path(scan).expanduser(), corrections or NO_CORRECTIONS
    check_replace(Path(out).expanduser(), overwrite=overwrite, kinds=("weights",),
                  protected=[path])              # before any work: the output may be written
    settings = AdaptSettings(folds=FOLDS if folds is None else int(folds), batch=batch,
                             proximity=proximity, loss_filter=loss_filter)
    cfg = BudgetConfig(minutes=minutes, lr=lr, precision=precision, device=str(device),
                       threads=threads, seed=seed, validate_every=validate_every,
                       max_steps=max_steps, warmup_steps=WARMUP)
    theta = np.asarray(effective_info(scan_info(path), corr).theta, np.float64)
    choose_folds(theta.size, settings.folds)     # refuse too few angles before any work
    folder = resolve_base(base) if base is not None else \
        select_weights("resattunet", n_angles=angles_per_half_turn(theta))
    wcfg = read_config(folder)
    dev = resolve_device(device)
    fbp_device = "cpu" if dev.type == "cpu" else str(dev)
    filt = wcfg.filter_name or "shepp"
    plan = plan_scan(path, corrections=corr, center=center, filter_name=filt, rows=rows,
                     holdout_rows=holdout_rows, device=fbp_device, ncore=threads)
    train, held = thin(list(plan.train_rows), max_rows), list(plan.holdout_rows)
    ids = sorted(train + held)
    sinos = np.stack([line_integrals(path, (r, r + 1), corr, plan.minus_log)[0][:, 0]
                      for r in ids])
    task = AdaptTask(sinos, plan.theta, plan.center, [ids.index(r) for r in held],
                     policy=wcfg.policy, filter_name=filt, settings=settings,
                     source={"scan": plan.provenance()}, row_ids=ids, device=dev,
                     base_model=load_weights(folder)[0].to(dev) if proximity > 0 else None)
    return run_budgeted(task, folder, out, cfg, resume=resume, overwrite=overwrite,
                        progress=progress)
