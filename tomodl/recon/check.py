# SPDX-License-Identifier: BSD-3-Clause
"""How far the network can be trusted, measured on the user's own data (issue 13).

On a sample of rows, an interleaved subset of the measured angles is set aside
(:func:`tomodl.recon.refine.holdout_split`: every 4th angle); FBP and the network reconstruct
from the rest, both are forward-projected at the set-aside angles
(:class:`~tomodl.recon.projector.ParallelProjector`) and compared with what was measured
there.  The residual is differentiated along the detector first, so that detail counts and a
smooth offset does not, and divided by the norm of the differentiated measurement:

    score = ||D (P_held x - y_held)|| / ||D y_held||      (per row; 0 = perfectly consistent)

The score is scale-free and comparable between scans.  The disagreement map is the FBP (the
ramp-filtered adjoint) of the residual at the set-aside angles: in attenuation per pixel, it
is positive where the image holds more than the set-aside projections support (an invented
bright feature) and negative where it holds less (an invented pore).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence, Tuple, Union

import numpy as np

from tomodl.errors import TomodlError

logger = logging.getLogger(__name__)

#: Rows checked by default: this many, spread evenly over the selected rows.
CHECK_ROWS = 8
#: The automatic check (``check=None``) checks at most one row in this many (and at least 2
#: rows), so that it costs below about a quarter of the run (a checked row costs about 4.4
#: reconstructed rows with :data:`FOLDS` folds; ``docs/usage.md``).
AUTO_ROWS_PER_CHECKED = 20
#: Folds of a file run's check (every angle set aside once: the map has all directions).
FOLDS = 4
#: The map's grey scale in the PNG: +-this fraction of the slice's 1-99 % grey range.
MAP_RANGE = 0.2


@dataclass(frozen=True)
class CheckResult:
    """Per-row consistency scores and disagreement maps of a check.

    Attributes
    ----------
    rows : tuple of int
        Rows checked (indices into the data given, or detector rows in a file run).
    held : tuple of int
        Indices of the set-aside angles.
    fbp, network : ndarray, shape (n_checked,), float64
        Scores (``network`` None without a network).
    images : ndarray, shape (n_checked, N, N), float32
        The network's output (or the FBP) from the kept angles.
    maps : ndarray, shape (n_checked, N, N), float32
        Disagreement maps of ``images`` (attenuation per pixel).
    """

    rows: Tuple[int, ...]
    held: Tuple[int, ...]
    fbp: np.ndarray
    network: Optional[np.ndarray]
    images: np.ndarray
    maps: np.ndarray

    @property
    def network_worse(self) -> bool:
        """The network's median score is above the FBP's (less consistent with the data)."""
        return self.network is not None and bool(np.median(self.network) > np.median(self.fbp))

    def summary(self) -> str:
        """One line: medians (and ranges) of both scores."""
        def fmt(v):
            return f"{np.median(v):.3f} (rows {np.min(v):.3f}-{np.max(v):.3f})"
        net = "" if self.network is None else f", network {fmt(self.network)}"
        return (f"check on {len(self.rows)} rows, {len(self.held)} set-aside angles: held-out "
                f"residual FBP {fmt(self.fbp)}{net} (lower = more consistent)")

    def provenance(self) -> dict:
        """The record stored in the output's provenance."""
        return {"rows": [int(r) for r in self.rows], "held_out_angles": len(self.held),
                "score": "||D(P x - y)|| / ||D y|| at set-aside angles, D = d/d detector",
                "fbp": [round(float(v), 5) for v in self.fbp],
                "network": None if self.network is None
                else [round(float(v), 5) for v in self.network],
                "fbp_median": round(float(np.median(self.fbp)), 5),
                "network_median": None if self.network is None
                else round(float(np.median(self.network)), 5)}


def heldout_scores(images, y_held, projector) -> np.ndarray:
    """Scores ``(B,)`` of images ``(B, N, N)`` against measured ``y_held (B, n_held, n_det)``
    at the projector's angles (see the module docstring)."""
    num, den = _squared_norms(images, y_held, projector)
    return np.sqrt(num / np.maximum(den, 1e-60))


def _squared_norms(images, y_held, projector):
    """``(||D(P x - y)||^2, ||D y||^2)``, each ``(B,)`` float64."""
    p = projector.forward(images)
    y = p.new_tensor(np.asarray(y_held))
    num = detector_derivative(p - y).square().sum(dim=(-2, -1))
    den = detector_derivative(y).square().sum(dim=(-2, -1))
    return num.double().cpu().numpy(), den.double().cpu().numpy()


def _residual(images, y_held, projector):
    p = projector.forward(images)
    return p - p.new_tensor(np.asarray(y_held))


def detector_derivative(s, sigma: float = 0.0):
    """Finite difference along the detector (last axis) of sinograms ``(..., n_det)``: the
    filter of the consistency score and of ``tomodl adapt``'s ``loss_filter="derivative"``,
    so that detail counts and a smooth offset does not.

    With ``sigma`` > 0 (pixels) the sinograms are first smoothed by a Gaussian (``valid``
    convolution, ``ceil(3 sigma)`` pixels lost at each end): the derivative of a Gaussian, a
    band-pass that ignores detector-pixel-scale detail and noise.  (It was introduced against
    the ripple of an earlier pixel-driven projector near 45 degrees; the footprint projector
    of :mod:`tomodl.recon.projector` has none.)  numpy or torch in, the same kind out
    (torch: differentiable; ``sigma`` > 0 needs torch).
    """
    if sigma > 0:
        import torch

        r = int(np.ceil(3 * sigma))
        g = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
        k = s.new_tensor(g / g.sum()).view(1, 1, -1)
        flat = s.reshape(-1, 1, s.shape[-1])
        s = torch.nn.functional.conv1d(flat, k).reshape(s.shape[:-1] + (-1,))
    return s[..., 1:] - s[..., :-1]


def holdout_folds(n_angles: int, folds: int = 1):
    """``[(kept, set_aside), ...]``: the interleaved split of
    :func:`tomodl.recon.refine.holdout_split` and, for ``folds`` > 1, the same split shifted
    by one angle per fold (at most :data:`~tomodl.recon.refine.HOLDOUT_EVERY` folds: then every
    angle is set aside once).  Raises TomodlError when the scan has too few angles."""
    from tomodl.recon.refine import HOLDOUT_EVERY, holdout_split

    split = holdout_split(n_angles)
    if split is None:
        raise TomodlError(f"{n_angles} angles are too few to set any aside for the check",
                          fix="check scans with at least 8 projections")
    idx, held0 = np.arange(n_angles), split[1]
    out = [split]
    for j in range(1, min(int(folds), HOLDOUT_EVERY)):
        held = (held0 + j) % n_angles
        out.append((np.setdiff1d(idx, held), np.sort(held)))
    return out


def check_sinograms(sinos, theta, centers, step: Optional[Callable] = None, *,
                    filter_name: str = "shepp", num_gridx: Optional[int] = None,
                    rows: Optional[Sequence[int]] = None, device: str = "cpu", ncore=None,
                    folds: int = 1) -> CheckResult:
    """Run the check on sinograms ``(B, n_angles, n_det)`` (float32 line integrals).

    ``centers``: a float or one per sinogram; ``step(slices (B, N, N), device=, ncore=)``: the
    network step (:meth:`~tomodl.recon.denoising.ModelSpec.step`) or None for FBP only.
    ``folds`` (1-4, :func:`holdout_folds`): each fold costs one FBP and one network pass per
    row; scores pool the folds' residuals, the map sums the folds' maps (more set-aside
    directions: fewer streaks) and ``images`` are the first fold's.  FBP and network run on
    ``device``, the projections on the CPU (matrix-free: a few rows).  Raises TomodlError
    when the scan has fewer than 8 angles.
    """
    from tomodl.recon.fbp import fbp
    from tomodl.recon.projector import ParallelProjector

    s = np.asarray(sinos, dtype=np.float32)
    th = np.asarray(theta, dtype=np.float64)
    if s.ndim != 3 or s.shape[1] != th.size:
        raise TomodlError(f"check needs sinograms (rows, n_angles={th.size}, n_det), got "
                          f"shape {s.shape}")
    splits = holdout_folds(th.size, folds)
    c = np.broadcast_to(np.asarray(centers, dtype=np.float64), (s.shape[0],))
    n, b = int(num_gridx or s.shape[2]), s.shape[0]
    recs = np.concatenate([fbp(s[:, keep], th[keep], c, filter_name=filter_name, num_gridx=n,
                               device=device, ncore=ncore) for keep, _ in splits])
    recs = np.asarray(recs, dtype=np.float32)
    nets = None if step is None else \
        np.asarray(step(recs, device=device, ncore=ncore), dtype=np.float32)  # one batch
    acc = np.zeros((3, b))                            # FBP num, network num, den
    maps = np.zeros((b, n, n), np.float32)
    for j, (_, held) in enumerate(splits):
        proj = ParallelProjector(n, th[held], s.shape[2], float(c[0]) if np.all(c == c[0])
                                 else c, backend="grid")  # matrix-free: no set-up
        y, img = s[:, held], (recs if nets is None else nets)[j * b:(j + 1) * b]
        f_num, den = _squared_norms(recs[j * b:(j + 1) * b], y, proj)
        acc += np.stack([f_num, 0 * f_num if nets is None else _squared_norms(img, y, proj)[0],
                         den])
        maps += disagreement_map(img, y, th[held], proj) * (len(held) / th.size)
    den = np.maximum(acc[2], 1e-60)
    return CheckResult(tuple(int(r) for r in (range(b) if rows is None else rows)),
                       tuple(int(h) for h in splits[0][1]), np.sqrt(acc[0] / den),
                       None if step is None else np.sqrt(acc[1] / den),
                       (recs if nets is None else nets)[:b], maps)


def disagreement_map(images, y_held, theta_held, projector, *,
                     filter_name: str = "parzen") -> np.ndarray:
    """Filtered back-projection (``projector``'s adjoint, scaled as FBP) of the residual
    ``P_held images - y_held`` at the set-aside angles, ``(B, N, N)``: where the images
    contradict the set-aside measurements (positive: more than measured)."""
    from tomodl.recon.filters import get_filter

    r = _residual(images, y_held, projector).double().cpu().numpy()
    pad = 2 * r.shape[-1]
    h = get_filter(filter_name, pad)
    rf = np.fft.irfft(np.fft.rfft(r, pad) * h, pad)[..., :r.shape[-1]]
    back = projector.adjoint(rf).double().cpu().numpy()
    return (np.pi / len(theta_held) * back).astype(np.float32)


def check(tomo, theta, center=None, *, algorithm: str = "fbp+resattunet", rows=None,
          sinogram_order: bool = False, filter_name: str = "shepp", model=None,
          num_gridx: Optional[int] = None, folds: int = FOLDS, device: str = "auto",
          ncore=None) -> CheckResult:
    """Measure how consistent FBP and the network are with set-aside measured angles.

    Parameters
    ----------
    tomo : array_like, shape (n_angles, n_rows, n_det)
        Line integrals as for :func:`tomodl.recon` (``(n_rows, n_angles, n_det)`` with
        ``sinogram_order=True``).
    theta : array_like, shape (n_angles,)
        Angles in radians.
    center : float or array_like of shape (n_rows,), optional
        Rotation axis in pixels (default: detector middle).
    algorithm : str
        ``"fbp"`` or ``"fbp+<model>"`` (as :func:`tomodl.recon`); ``model``: weights.
    rows : int or sequence of int, optional
        Rows to check: an int N checks N rows spread evenly (default :data:`CHECK_ROWS`).
    folds : int
        1-4 (:func:`check_sinograms`): 4 sets every angle aside once (the default).
    device, ncore : str, int
        Where FBP and the network run.

    Returns
    -------
    CheckResult
        ``.fbp`` / ``.network`` per-row scores, ``.maps``, ``.summary()``.
    """
    from tomodl.recon.api import as_sinograms, load_model_step, parse_algorithm

    sino, th = as_sinograms(tomo, theta, sinogram_order)
    sino = np.asarray(sino, dtype=np.float32)
    picked = spread_rows(0, sino.shape[0], CHECK_ROWS if rows is None else rows)
    c = np.asarray(sino.shape[2] / 2 if center is None else center, dtype=np.float64)
    c = c if c.ndim == 0 else c[list(picked)]
    n = int(num_gridx or sino.shape[2])
    step = load_model_step(parse_algorithm(algorithm), {"model": model}, filter_name, th,
                           device=device, n_grid=n)
    res = check_sinograms(sino[list(picked)], th, c, step, filter_name=filter_name,
                          num_gridx=n, rows=picked, device=device, ncore=ncore, folds=folds)
    logger.info("%s", res.summary())
    return res


def spread_rows(start: int, stop: int, rows: Union[int, Sequence[int]]) -> Tuple[int, ...]:
    """Rows to check in ``[start, stop)``: ``rows`` evenly spread ones if an int, else the
    given rows (each must lie in the range)."""
    if isinstance(rows, (int, np.integer)):
        if rows < 1:
            raise TomodlError(f"check rows must be >= 1, got {rows}")
        k = min(int(rows), stop - start)
        return tuple(int(start + (2 * i + 1) * (stop - start) // (2 * k)) for i in range(k))
    picked = tuple(sorted({int(r) for r in rows}))
    bad = [r for r in picked if not start <= r < stop]
    if not picked or bad:
        raise TomodlError(f"check rows {list(bad) or '(none)'} are not among the reconstructed "
                          f"rows {start}..{stop - 1}", fix="name rows inside that range")
    return picked


def maps_folder(out) -> Path:
    """``<out without suffix>_check`` next to the output."""
    from tomodl.recon.preview import preview_path

    p = preview_path(out)
    return p.with_name(p.name[:-len("_preview.png")] + "_check")


def write_maps(res: CheckResult, folder, *, overwrite: bool = True) -> list:
    """Write ``folder/row_<r>.png`` (image | map side by side, atomic, tomodl's) per row.

    The map's grey scale is +-:data:`MAP_RANGE` of the slice's 1-99 % range (mid grey = the
    data agree).  Only tomodl's own images are replaced.
    """
    from tomodl.io.atomic import check_replace
    from tomodl.io.writers import write_png

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for r, img, m in zip(res.rows, res.images, res.maps):
        path = folder / f"row_{r:04d}.png"
        check_replace(path, overwrite=overwrite, kinds=("image",))
        paths.append(write_png(path, side_by_side(img, m), vmin=0.0, vmax=1.0,
                               overwrite=overwrite))
    return paths


def side_by_side(image, dmap) -> np.ndarray:
    """``[image | map]`` scaled to 0..1 (map: mid grey 0.5 = agreement)."""
    lo, hi = np.percentile(image, (1.0, 99.0))
    span = max(float(hi - lo), 1e-12)
    left = np.clip((image - lo) / span, 0.0, 1.0)
    right = np.clip(0.5 + dmap / (2 * MAP_RANGE * span), 0.0, 1.0)
    return np.hstack([left, np.full((image.shape[0], 2), 1.0), right])


# -- in a file run (tomodl recon --check) -----------------------------------------------------
def parse_rows(text) -> Union[int, Tuple[int, ...]]:
    """``"8"`` -> 8 (rows spread evenly); ``"100,250"`` -> (100, 250) (those rows)."""
    if isinstance(text, (int, np.integer)):
        return int(text)
    if isinstance(text, (tuple, list)):
        return tuple(int(r) for r in text)
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        vals = []
    if not vals or (len(parts) == 1 and vals[0] < 1) or min(vals) < 0:
        raise ValueError(f"check rows {text!r}: give a count (8) or detector rows (100,250)")
    return vals[0] if len(parts) == 1 else tuple(vals)


def wanted_rows(cfg, rows, has_network: bool) -> Tuple[int, ...]:
    """The rows to check in a file run: none when ``cfg.check`` is False; when it is None
    (auto) none without a network, else ``cfg.check_rows`` capped at one row in
    :data:`AUTO_ROWS_PER_CHECKED` (none when that leaves fewer than 2)."""
    start, stop = rows
    sel = parse_rows(cfg.check_rows)
    if cfg.check is False or cfg.reconstruction_type == "try":
        return ()
    if cfg.check is None:
        cap = (stop - start) // AUTO_ROWS_PER_CHECKED
        sel = min(sel, cap) if isinstance(sel, int) else sel
        if not has_network or cap < 2 or (not isinstance(sel, int) and len(sel) > cap):
            return ()
    return spread_rows(start, stop, sel)


def run_check(path, info, cfg, center: float, rows, step) -> Optional[CheckResult]:
    """Check rows of a scan file before its volume is reconstructed (None when not run).

    Each checked row is read and pre-processed as the pipeline does
    (:mod:`tomodl.recon.stages`); ``step`` is the pipeline's network step.
    """
    import time

    from tomodl.recon import stages

    picked = wanted_rows(cfg, rows, step is not None)
    if not picked:
        return None
    if cfg.corrections.file_type == "double_fov" or \
            cfg.corrections.retrieve_phase_method != "none":
        logger.warning("check skipped: not implemented for double_fov or phase retrieval yet")
        return None
    t0 = time.perf_counter()
    sinos = []
    for r in picked:
        scan = stages.load_chunk(path, (r, r + 1), cfg.corrections)
        sinos.append(stages.preprocess_chunk(scan, path, cfg.corrections)[:, 0])
    try:
        res = check_sinograms(np.stack(sinos), scan.theta, center, step,
                              filter_name=cfg.filter_name, num_gridx=info.n_det, rows=picked,
                              device=cfg.device, ncore=cfg.ncore, folds=FOLDS)
    except TomodlError as err:
        logger.warning("check skipped: %s", err.problem)
        return None
    logger.info("%s; %.1f s", res.summary(), time.perf_counter() - t0)
    return res


def fallback_reason(res: Optional[CheckResult], cfg) -> Optional[str]:
    """Why the FBP is kept for this scan, or None: with the default algorithm and shipped
    weights, when the network is less consistent with the set-aside angles than the FBP
    (warned with both scores either way)."""
    if res is None or not res.network_worse:
        return None
    from tomodl.recon.config import ReconConfig

    why = (f"the network is less consistent with the set-aside measured angles than the FBP "
           f"(held-out residual {np.median(res.network):.3f} vs FBP "
           f"{np.median(res.fbp):.3f}, median of {len(res.rows)} rows)")
    if cfg.algorithm == ReconConfig.algorithm and cfg.model is None:
        logger.warning("%s: keeping the FBP for this scan (name the weights with model= / "
                       "--model to keep the network)", why)
        return why
    logger.warning("%s; the network named is kept", why)
    return None


def write_check_maps(res: CheckResult, out) -> None:
    """Write the maps of a file run beside its output (``<out>_check/``); a file tomodl did
    not write in the way is left alone with a warning (the volume is already final)."""
    from tomodl.io.atomic import OutputError

    try:
        paths = write_maps(res, maps_folder(out))
    except (OutputError, OSError) as err:
        logger.warning("no check maps: %s", err)
        return
    logger.info("check maps (image | disagreement): %s/ (%d rows)", paths[0].parent,
                len(paths))
