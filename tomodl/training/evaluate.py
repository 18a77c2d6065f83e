# SPDX-License-Identifier: BSD-3-Clause
"""PSNR and SSIM of FBP and trained networks against the labels: the paper's Table 1.

Each image is scored in two protocols:

``8bit``
    The paper's (its equation 1, data range 255): label and prediction are mapped to 8 bits
    with the *label's* range ``[min, max]`` (:func:`tomodl.metrics.to_uint8`), then compared
    with ``data_range=255``.  (The paper prints ``2^{bits-1}``; the peak of 8-bit images is
    ``2^bits - 1 = 255``.)
``float``
    On the attenuation images themselves, with ``data_range`` = the label's range.

With ``mask=True`` only the inscribed reconstruction circle is scored (its range too).  The
scores are averaged over the images of each set, as in the paper.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import h5py
import numpy as np

from tomodl.metrics import circle_mask, psnr, ssim, to_uint8
from tomodl.training.data import SPLITS, split_shape

logger = logging.getLogger(__name__)

PROTOCOLS = {"8bit": "paper eq. 1: 8-bit images from the label's range, data range 255",
             "float": "attenuation images, data range = the label's range"}
#: name of the row of the network input
FBP = "FBP"


def image_scores(pred: np.ndarray, label: np.ndarray, mask: Optional[np.ndarray]
                 ) -> Optional[Dict[str, float]]:
    """PSNR and SSIM of one ``(H, W)`` image in both protocols (None for a constant label)."""
    ref = label[mask] if mask is not None else label
    lo, hi = float(ref.min()), float(ref.max())
    if not hi > lo:
        return None
    p8, l8 = to_uint8(pred, lo, hi), to_uint8(label, lo, hi)
    return {"8bit_psnr": psnr(p8, l8, data_range=255, mask=mask),
            "8bit_ssim": ssim(p8, l8, data_range=255, mask=mask),
            "float_psnr": psnr(pred, label, data_range=hi - lo, mask=mask),
            "float_ssim": ssim(pred, label, data_range=hi - lo, mask=mask)}


@dataclass
class EvalResult:
    """Per-image scores: ``scores[(method, split)]`` is a list of :func:`image_scores` dicts."""

    methods: List[str]
    splits: List[str]
    n_images: Dict[str, int]
    scores: Dict[Tuple[str, str], List[Dict[str, float]]] = field(default_factory=dict)
    examples: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)

    def mean(self, method: str, split: str, key: str) -> float:
        vals = [s[key] for s in self.scores.get((method, split), [])]
        return float(np.mean(vals)) if vals else float("nan")

    def rows(self) -> List[Dict]:
        """Long-format rows: method, split, protocol, psnr, ssim, n_images."""
        out = []
        for m in self.methods:
            for s in self.splits:
                for p in PROTOCOLS:
                    out.append({"method": m, "split": s, "protocol": p,
                                "psnr": self.mean(m, s, f"{p}_psnr"),
                                "ssim": self.mean(m, s, f"{p}_ssim"),
                                "n_images": len(self.scores.get((m, s), []))})
        return out


def _denoisers(models: Dict[str, str]):
    from tomodl.models.inference import load_denoiser
    from tomodl.models.weights import read_config

    return {name: load_denoiser(read_config(path).arch, path) for name, path in models.items()}


def evaluate(pairs: str, models: Dict[str, str], *, splits: Sequence[str] = SPLITS,
             mask: bool = False, max_slices: int = 0, example_slice: Optional[int] = None,
             device: str = "auto", dtype: str = "float32", chunk: int = 8) -> EvalResult:
    """Score FBP and each model on every slice of ``splits`` of a pairs file.

    Parameters
    ----------
    pairs : str
        Pairs file (``tomodl simulate pairs``); splits absent from the file or empty (a
        held-out file has only ``/test``) are skipped.
    models : dict
        Display name -> weights folder (its ``config.json`` names the architecture and the
        normalization policy, applied by :func:`tomodl.models.inference.denoise`).
    mask : bool
        Score only the reconstruction circle.
    max_slices : int
        Score the first N slices of each split (0 = all).
    example_slice : int, optional
        Keep the images of this slice of each split for the comparison figure (default: middle).
    device, dtype : str
        Inference device and compute dtype (float32 by default, for reproducible scores).
    chunk : int
        Slices read and denoised at a time.
    """
    from tomodl.models.inference import denoise

    dens = _denoisers(models)
    with h5py.File(pairs, "r") as f:
        present = [s for s in splits if s in f and f[s]["input"].shape[0] > 0]
    result = EvalResult([FBP] + list(models), present, {})
    for split in present:
        n, h, w = split_shape(pairs, split)
        n = min(n, max_slices) if max_slices else n
        result.n_images[split] = n
        m = circle_mask((h, w)) if mask else None
        keep = n // 2 if example_slice is None else min(example_slice, n - 1)
        for start in range(0, n, chunk):
            with h5py.File(pairs, "r") as f:
                stop = min(start + chunk, n)        # max_slices: exactly n images
                x = f[split]["input"][start:stop].astype(np.float32)
                y = f[split]["target"][start:stop].astype(np.float32)
            preds = {FBP: x}
            preds.update({name: denoise(x, d, device=device, dtype=dtype)
                          for name, d in dens.items()})
            for name, p in preds.items():
                for i in range(len(x)):
                    sc = image_scores(p[i], y[i], m)
                    if sc is not None:
                        result.scores.setdefault((name, split), []).append(sc)
            if start <= keep < start + len(x):
                j = keep - start
                result.examples[split] = {"label": y[j], **{k: v[j] for k, v in preds.items()}}
        logger.info("scored /%s: %d slices", split, n)
    return result


def table_markdown(result: EvalResult) -> str:
    """The paper's Table 1 layout, once per protocol, with the number of images per set."""
    lines = []
    for p, desc in PROTOCOLS.items():
        head = [f"PSNR {s}" for s in result.splits] + [f"SSIM {s}" for s in result.splits]
        lines += [f"**{p}** ({desc})", "", "| Model | " + " | ".join(head) + " |",
                  "|---" * (len(head) + 1) + "|"]
        for m in result.methods:
            vals = [f"{result.mean(m, s, f'{p}_psnr'):.4f}" for s in result.splits]
            vals += [f"{result.mean(m, s, f'{p}_ssim'):.4f}" for s in result.splits]
            lines.append(f"| {m} | " + " | ".join(vals) + " |")
        counts = [str(result.n_images[s]) for s in result.splits]
        lines += ["| images | " + " | ".join(counts + counts) + " |", ""]
    return "\n".join(lines)


def write_tables(result: EvalResult, out: Path) -> Tuple[Path, Path]:
    """Write ``table1.md`` and ``table1.csv`` (long format) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md, cs = out / "table1.md", out / "table1.csv"
    md.write_text("# PSNR and SSIM (paper Table 1)\n\n" + table_markdown(result))
    rows = result.rows()
    with open(cs, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return md, cs


def write_figure(result: EvalResult, path: Path) -> Path:
    """The paper's Fig. 6: label | networks | FBP input, one row per set (a, b, c)."""
    from tomodl.training.figures import comparison_figure

    rows = []
    for k, split in enumerate(result.splits):
        ex = result.examples[split]
        order = ["label"] + [m for m in result.methods if m != FBP] + [FBP]
        rows.append((f"({'abcdefgh'[k]}) {split}", {name: ex[name] for name in order}))
    comparison_figure(rows, path)
    return Path(path)
