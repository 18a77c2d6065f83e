# SPDX-License-Identifier: BSD-3-Clause
"""``tomodl finetune``: teach a released network the user's own sample from a dense scan.

:func:`finetune` reads one or more densely sampled scans, makes full-angle labels and sparse
inputs for the projection counts the user will scan with (:mod:`tomodl.training.scan_data`,
the same pre-processing and FBP as ``tomodl recon``), and trains the base weights under a
wall-clock budget with :func:`tomodl.training.budgeted.run_budgeted` (:class:`FinetuneTask`),
writing a weights folder that ``tomodl recon --model`` uses.  See docs/finetune.md.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from tomodl.errors import TomodlError
from tomodl.recon.corrections import NO_CORRECTIONS, Corrections
from tomodl.training.budgeted import BudgetConfig, BudgetResult
from tomodl.training.scan_data import DEFAULT_MEMORY, RowStore, ScanPlan

logger = logging.getLogger(__name__)

#: projections per half turn trained when none are given: the sparse-view range where the
#: network matters most (typical fast scans), each kept only where the dense scan can label it
DEFAULT_COUNTS = (60, 30, 15)
#: a dense scan must hold this many times the largest sparse count (per half turn) ...
LABEL_FACTOR = 3
#: ... and at least this many projections per half turn
MIN_LABEL_ANGLES = 60
#: training crop size (pixels) and crops per step
CROP = 128
BATCH = 4
#: validation crops (deterministic, on the held-out rows)
VAL_CROPS = 16
#: reference scores are computed inside a circle of this fraction of the slice width (radius
#: 0.45 N: the protocol of docs/results.md, away from the circle's noisy rim)
RATIO = 0.9
#: pixels of the whole held-out slices scored at the start and the end (the network runs on
#: each): 12 slices of 640 px; wider scans score fewer rows (at least one per count)
SCORE_PIXELS = 12 * 640 ** 2


class FinetuneTask:
    """Dense-scan labels for :func:`tomodl.training.budgeted.run_budgeted`.

    Training: random crops (``crop`` px, inside the reconstruction circle, flipped) of the FBP
    of a random interleaved subset of the angles of a random training row, for a random
    requested count, against the full-angle FBP; both normalized with the base's policy from
    the whole sparse slice; MSE.  Validation: MSE on fixed crops of the held-out rows (offset 0
    subsets).  Reference scores: PSNR and SSIM of the FBP and of the network (run by
    :func:`tomodl.models.inference.denoise`, as ``tomodl recon`` runs it) on whole held-out
    slices, inside a circle of radius :data:`RATIO` ``* N / 2`` with ``data_range`` the label's
    range there, per count (keys ``psnr@<count>``).
    """

    kind = "finetune"

    def __init__(self, store: RowStore, counts: Sequence[float], base_config: Any, *,
                 corrections: Corrections = NO_CORRECTIONS, crop: int = CROP,
                 batch_size: int = BATCH, val_crops: int = VAL_CROPS, device: Any = None):
        import torch

        self.store, self.counts, self.config = store, tuple(counts), base_config
        self.policy, self.corrections = base_config.policy, corrections
        self.crop = min(int(crop), min(p.n_det for p in store.plans))
        self.batch_size = int(batch_size)
        self.device = device if device is not None else torch.device("cpu")
        self._held = {(k, c): store.sparse(k, c, 0.0) for k in store.holdout for c in counts}
        self._val = self._val_set(max(1, val_crops))
        self._scored = self._score_rows()

    def _pair(self, inp: np.ndarray, label: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        lo, hi = self.policy.stats(inp)
        return self.policy.forward(inp, lo, hi), self.policy.forward(label, lo, hi)

    def _val_set(self, total: int) -> List[Tuple[Any, Any]]:
        """Normalized validation crops, as ``(x, y)`` tensors of equal-sized crops."""
        from tomodl.training.scan_data import fixed_crops

        per = max(1, math.ceil(total / max(1, len(self._held))))
        xs, ys = [], []
        for (k, _), inp in self._held.items():
            x, y = self._pair(inp, self.store.label(k))
            c = self.crop
            for y0, x0 in fixed_crops(x.shape[-1], c, per, seed=k):
                xs.append(x[y0:y0 + c, x0:x0 + c])
                ys.append(y[y0:y0 + c, x0:x0 + c])
        return [(self._tensor(xs[i:i + 8]), self._tensor(ys[i:i + 8]))
                for i in range(0, len(xs), 8)]

    def _score_rows(self) -> List[Tuple[int, float]]:
        """The ``(row, count)`` pairs of the reference scores: every held-out row of a scan
        while its slices at every count stay within :data:`SCORE_PIXELS`, else fewer rows
        (evenly spread; at least one)."""
        from tomodl.training.scan_data import thin

        out = []
        for i, plan in enumerate(self.store.plans):
            rows = [k for k in self.store.holdout if self.store.rows[k][0] == i]
            n = max(1, SCORE_PIXELS // (plan.n_det ** 2 * len(self.counts)))
            out += [(k, c) for k in thin(rows, n) for c in self.counts]
        return out

    def _tensor(self, arrays: Sequence[np.ndarray]) -> Any:
        import torch

        return torch.from_numpy(np.stack(arrays)[:, None].astype(np.float32)).to(self.device)

    def train_loss(self, model: Any, rng: np.random.Generator) -> Any:
        """MSE of a batch of random crops (normalized units)."""
        import torch.nn.functional as F

        from tomodl.training.scan_data import random_crop

        xs, ys = [], []
        for _ in range(self.batch_size):
            k = int(rng.choice(self.store.train))
            count = self.counts[int(rng.integers(len(self.counts)))]
            x, y = self._pair(self.store.sparse(k, count, float(rng.random())),
                              self.store.label(k))
            x, y = random_crop(x, y, self.crop, rng)
            xs.append(x)
            ys.append(y)
        return F.mse_loss(model(self._tensor(xs)).float(), self._tensor(ys))

    def validation_loss(self, model: Any) -> float:
        """Mean MSE over the fixed held-out crops (normalized units)."""
        import torch.nn.functional as F

        total, n = 0.0, 0
        for x, y in self._val:
            total += float(F.mse_loss(model(x).float(), y, reduction="sum")) / x[0].numel()
            n += x.shape[0]
        return total / n

    def reference_scores(self, model: Any) -> Dict[str, Dict[str, float]]:
        """PSNR/SSIM of FBP and network on whole held-out slices, per count."""
        from tomodl.metrics import circle_mask, psnr, ssim
        from tomodl.models.inference import Denoiser, denoise

        den = Denoiser(model, self.config.arch, self.config)
        out: Dict[str, Dict[str, List[float]]] = {"fbp": {}, "network": {}}
        for k, count in self._scored:
            inp, label = self._held[(k, count)], self.store.label(k)
            mask = circle_mask(label.shape, RATIO)
            rng_ = float(label[mask].max() - label[mask].min()) or 1.0
            net = denoise(inp[None], den, device=self.device, dtype="auto")[0]
            for name, img in (("fbp", inp), ("network", net)):
                for metric, fn in (("psnr", psnr), ("ssim", ssim)):
                    out[name].setdefault(f"{metric}@{count:g}", []).append(
                        fn(img, label, data_range=rng_, mask=mask))
        return {name: {k: round(float(np.mean(v)), 4) for k, v in d.items()}
                for name, d in out.items()}

    def provenance(self) -> Dict[str, Any]:
        """Scans and their hashes, rows, counts and the data settings."""
        return {"scans": [p.provenance() for p in self.store.plans],
                "empty_rows_left_out": [list(r) for r in self.store.empty],
                "scored_rows": sorted({tuple(self.store.rows[k][:2]) for k, _ in self._scored}),
                "angles_per_half_turn": [float(c) for c in self.counts],
                "filter_name": self.store.filter_name, "normalization": self.policy.to_dict(),
                "corrections": self.corrections.provenance(), "crop": self.crop,
                "batch_size": self.batch_size,
                "validation_crops": int(sum(x.shape[0] for x, _ in self._val))}


def parse_counts(angles: Optional[Sequence[float]], sparse: Optional[Sequence[int]],
                 n180: float) -> Tuple[float, ...]:
    """Projections per half turn to train for: ``angles`` as given, or ``n180 / k`` for each
    ``sparse`` factor ``k`` of the (first) dense scan, or :data:`DEFAULT_COUNTS` that the scan
    can label (at least one: ``n180 / LABEL_FACTOR`` when none can)."""
    if angles is not None and sparse is not None:
        raise TomodlError("give the projection counts once", fix="pass angles= or sparse=, "
                          "not both", cli_fix="pass --angles or --sparse, not both")
    if angles is not None:
        counts = [float(a) for a in angles]
    elif sparse is not None:
        counts = [round(n180 / int(k), 1) for k in sparse]
    else:
        counts = [c for c in DEFAULT_COUNTS if c * LABEL_FACTOR <= n180]
        counts = counts or [math.floor(n180 / LABEL_FACTOR)]
    if not counts or any(not (c >= 2 and math.isfinite(c)) for c in counts):
        raise TomodlError(f"projection counts {counts} must be at least 2",
                          fix="give counts such as angles=[36, 18]",
                          cli_fix="give counts such as --angles 36,18")
    return tuple(sorted(set(counts), reverse=True))


def check_counts(counts: Sequence[float], base_config: Any, base_name: str) -> None:
    """Refuse counts outside the range the base release was validated for."""
    rel = base_config.release or {}
    low, high = rel.get("min_angles"), rel.get("max_angles")
    bad = [c for c in counts if (low is not None and c < low) or (high is not None and c > high)]
    if bad:
        raise TomodlError(
            f"{base_name} was validated for {low}-{high} projections per half turn, not "
            f"{[f'{c:g}' for c in bad]}; fine-tuning starts from it, so it must be in range",
            fix="choose counts in that range or another base", cli_fix="choose --angles in "
            "that range or another --model")


def check_label(path: Path, n180: float, counts: Sequence[float]) -> None:
    """Refuse a 'dense' scan with too few projections to serve as a label."""
    need = max(LABEL_FACTOR * max(counts), MIN_LABEL_ANGLES)
    if n180 + 0.5 < need:
        raise TomodlError(
            f"{path} has {n180:.0f} projections per half turn, too few for a full-angle label: "
            f"it needs {math.ceil(need)} ({LABEL_FACTOR}x the largest sparse count "
            f"{max(counts):g}, so that the label's own streaks stay far below the input's, and "
            f"at least {MIN_LABEL_ANGLES})", fix="use a denser scan or smaller counts",
            cli_fix="use a denser scan or smaller --angles/--sparse counts")


def default_base(counts: Sequence[float], arch: str = "resattunet") -> Path:
    """The release ``tomodl recon`` would choose for ``counts`` (their geometric mean)."""
    from tomodl.models.releases import select_weights

    mean = float(np.exp(np.mean(np.log(np.asarray(counts, np.float64)))))
    return select_weights(arch, n_angles=mean)


def finetune(scans: Union[str, Path, Sequence[Union[str, Path]]], out: Union[str, Path], *,
             angles: Optional[Sequence[float]] = None, sparse: Optional[Sequence[int]] = None,
             base: Optional[Union[str, Path]] = None, minutes: float = 10.0,
             center: Optional[Union[float, Sequence[float]]] = None,
             corrections: Corrections = NO_CORRECTIONS, device: str = "auto",
             threads: Optional[int] = None, lr: float = 2e-4, precision: str = "auto",
             seed: int = 0, rows: Optional[Sequence[int]] = None,
             holdout_rows: Optional[Sequence[int]] = None, memory: int = DEFAULT_MEMORY,
             crop: int = CROP, batch_size: int = BATCH, max_steps: Optional[int] = None,
             validate_every: float = 60.0, resume: bool = True, overwrite: bool = False,
             progress: Optional[bool] = None) -> BudgetResult:
    """Fine-tune a released network on dense scans of the user's sample.

    Parameters
    ----------
    scans : path or list of paths
        Dense DXchange / NeXus scans (raw counts with flats, or ``-log`` files marked
        ``normalisation="minus_log"``); widths may differ (training uses crops).
    out : path
        Weights folder to write (``tomodl recon --model out``).
    angles : list of float, optional
        Projections per half turn of the sparse scans to come, e.g. ``[36, 18]``.
    sparse : list of int, optional
        Instead: sparse factors of the (first) dense scan, e.g. ``[10, 20]``.  Neither: the
        :data:`DEFAULT_COUNTS` (60, 30, 15) that the dense scan can label.
    base : str or path, optional
        Release name or weights folder to start from (default: the release ``tomodl recon``
        would choose for these counts).
    minutes : float
        Training and validation wall time (preparation and final scoring are extra).
    center : float or list of float, optional
        Rotation axis of each scan in raw detector pixels (default: found as ``tomodl recon``
        finds it).
    corrections : Corrections
        Pre-processing, as for ``tomodl recon``.
    rows, holdout_rows : list of int, optional
        Detector rows (after binning) to train on / to hold out, for every scan (default: the
        middle fifth held out, :func:`tomodl.training.scan_data.choose_rows`).
    memory : int
        Bytes for the kept rows (labels and line integrals) of all scans together.
    crop, batch_size, max_steps, validate_every, lr, precision, seed, threads
        Training settings (:class:`tomodl.training.budgeted.BudgetConfig`).
    resume, overwrite, progress
        As :func:`tomodl.training.budgeted.run_budgeted`.

    Returns
    -------
    BudgetResult
        ``improved``, the held-out losses, ``scores["base"]`` and ``scores["final"]``
        (:meth:`FinetuneTask.reference_scores`).

    Raises
    ------
    tomodl.errors.TomodlError
        A scan with too few projections for a label (:data:`LABEL_FACTOR`,
        :data:`MIN_LABEL_ANGLES`), counts outside the base's validated range, a budget too
        small for one validation pass, an output that may not be replaced, bad rows.
    """
    from tomodl.backend import resolve_device
    from tomodl.io.atomic import check_replace
    from tomodl.models.weights import read_config
    from tomodl.training.budgeted import resolve_base, run_budgeted

    paths = [Path(scans)] if isinstance(scans, (str, Path)) else [Path(s) for s in scans]
    if not paths:
        raise TomodlError("no dense scan given", fix="pass at least one scan")
    check_replace(Path(out).expanduser(), overwrite=overwrite, kinds=("weights",),
                  protected=paths)               # before any work: the output may be written
    cfg = BudgetConfig(minutes=minutes, lr=lr, precision=precision, device=str(device),
                       threads=threads, seed=seed, validate_every=validate_every,
                       max_steps=max_steps, warmup_steps=10)
    infos = _geometry(paths, corrections)
    counts = parse_counts(angles, sparse, infos[0][1])
    folder = resolve_base(base) if base is not None else default_base(counts)
    wcfg = read_config(folder)
    check_counts(counts, wcfg, folder.name)
    for path, n180 in infos:
        check_label(path, n180, counts)
    dev = resolve_device(device)
    fbp_device = "cpu" if dev.type == "cpu" else str(dev)
    plans = _plans(paths, center, corrections, wcfg.filter_name or "shepp", memory, rows,
                   holdout_rows, fbp_device, threads)
    store = RowStore(plans, corrections, wcfg.filter_name or "shepp", fbp_device, threads)
    logger.info("fine-tuning %s for %s projections per half turn on %d training and %d "
                "held-out rows (%.0f MB)", folder.name, [f"{c:g}" for c in counts],
                len(store.train), len(store.holdout), store.nbytes() / 1e6)
    task = FinetuneTask(store, counts, wcfg, corrections=corrections, crop=crop,
                        batch_size=batch_size, device=dev)
    return run_budgeted(task, folder, out, cfg, resume=resume, overwrite=overwrite,
                        progress=progress)


def _geometry(paths: List[Path], corr: Corrections) -> List[Tuple[Path, float]]:
    from tomodl.io.dxchange import scan_info
    from tomodl.recon.geometry import angles_per_half_turn
    from tomodl.recon.corrections import effective_info

    return [(p, angles_per_half_turn(effective_info(scan_info(p), corr).theta)) for p in paths]


def _plans(paths: List[Path], center: Any, corr: Corrections, filter_name: str, memory: int,
           rows: Any, holdout_rows: Any, device: str, ncore: Optional[int]) -> List[ScanPlan]:
    from tomodl.training.scan_data import plan_scan

    centers = list(center) if isinstance(center, (list, tuple)) else [center] * len(paths)
    if len(centers) != len(paths):
        raise TomodlError(f"{len(centers)} centres for {len(paths)} scans",
                          fix="give one centre per scan", cli_fix="give one --rotation-axis "
                          "per scan, comma-separated")
    share = max(1, int(memory) // len(paths))
    return [plan_scan(p, corrections=corr, center=c, filter_name=filter_name, memory=share,
                      rows=rows, holdout_rows=holdout_rows, device=device, ncore=ncore)
            for p, c in zip(paths, centers)]
