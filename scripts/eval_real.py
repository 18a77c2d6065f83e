#!/usr/bin/env python
"""Score sparse FBP and FBP + networks against the full-angle FBP of a real scan.

For a DXchange scan (default ``../shared/data/tooth.h5`` next to the repository) the
full-angle FBP (shepp filter) is the reference.  For every factor ``k`` the scan is reduced to
every ``k``-th angle and reconstructed with FBP and with ``fbp+<arch>`` for each weights folder
given with ``--model NAME=FOLDER`` (``NAME=default:resattunet``: the shipped weights, chosen
and skipped exactly as for a user who passes no ``--model``).  PSNR and SSIM
(``tomodl.metrics``) are computed per slice inside the *sample region*, a mask derived from
the reference alone (:func:`sample_mask`), with ``data_range`` = the 1st-99.9th percentile
span of the reference inside the mask, and averaged over the slices; the same over the whole
reconstruction circle (``*_circle``) catches structures a network invents in the air around
the sample.  Outputs in ``--out-path``: ``table.md``, ``table.csv``, ``figure.png``, ``mask.png``.

Example::

    python scripts/eval_real.py --model ResAttUnet=runs/resattunet/best --factors 4 10 20
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCAN = REPO.parent / "shared" / "data" / "tooth.h5"
#: percentiles of the reference inside the mask that define ``data_range`` and the grey range
RANGE_PERCENTILES = (1.0, 99.9)


def sample_mask(ref: np.ndarray, *, sigma: float = 2.0, circle: float = 0.95,
                noise: float = 6.0, min_fraction: float = 0.05, close: int = 5,
                dilate: int = 5) -> np.ndarray:
    """Sample region of one reconstructed slice, from that slice alone (no tuning to a scan).

    Gaussian smoothing; threshold inside the reconstruction circle at the lower of Otsu's
    threshold and the background level (median of the pixels below Otsu's threshold) plus
    ``noise`` robust standard deviations (so faint materials next to dense ones stay in); the
    connected components of at least ``min_fraction`` of the largest one, binary closing,
    hole filling, then dilation.  An empty result falls back to the reconstruction circle.

    Parameters
    ----------
    ref : ndarray, shape (H, W), float
        Full-angle reconstruction (attenuation per pixel).
    sigma : float
        Gaussian smoothing in pixels before thresholding.
    circle : float
        Radius of the reconstruction circle, fraction of ``min(H, W) / 2``.
    noise : float
        Background standard deviations (from the median absolute deviation) above its median.
    min_fraction : float
        Components smaller than this fraction of the largest component are dropped.
    close, dilate : int
        Radii in pixels of the closing and of the final dilation disks.

    Returns
    -------
    ndarray, shape (H, W), bool
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu
    from skimage.morphology import disk

    from tomodl.metrics import circle_mask

    inside = circle_mask(ref.shape, circle)
    smooth = ndimage.gaussian_filter(np.asarray(ref, np.float64), sigma)
    values = smooth[inside]
    otsu = threshold_otsu(values)
    air = values[values <= otsu]  # background + faint material: robust noise level of the air
    level = np.median(air) + noise * 1.4826 * np.median(np.abs(air - np.median(air)))
    fg = inside & (smooth > min(otsu, level))
    labels, n = ndimage.label(fg)
    if n == 0:
        return inside
    sizes = np.bincount(labels.ravel())[1:]
    keep = np.flatnonzero(sizes >= min_fraction * sizes.max()) + 1
    fg = np.isin(labels, keep)
    fg = ndimage.binary_closing(np.pad(fg, close), disk(close))[close:-close, close:-close]
    fg = ndimage.binary_fill_holes(fg)
    return ndimage.binary_dilation(fg, disk(dilate)) & inside


def load_scan(path: Path, rows, center) -> Tuple[np.ndarray, np.ndarray, float]:
    """Read, normalize and ``-log`` a DXchange scan; find the centre once on the full data.

    Returns
    -------
    proj : ndarray, shape (n_angles, n_rows, n_det), float32
        Line integrals.
    theta : ndarray, shape (n_angles,), float32, radians
    center : float
        Rotation axis in detector pixels.
    """
    import tomodl

    proj, flat, dark, theta = tomodl.read_dx(path, sino=tuple(rows) if rows else None)
    proj = tomodl.minus_log(tomodl.normalize(proj, flat, dark))
    if center is None:
        center = tomodl.find_center(proj, theta)
    return proj, theta, float(center)


def reconstruct_all(proj, theta, center, factors, models) -> Dict[Tuple[int, str], np.ndarray]:
    """Reconstructions keyed by ``(factor, method)``; ``(1, "reference")`` is the full FBP.

    Parameters
    ----------
    models : dict
        ``NAME -> weights folder``; the architecture is read from its ``config.json``.
    """
    import tomodl
    from tomodl.models.weights import read_config

    recs = {(1, "reference"): tomodl.recon(proj, theta, center, filter_name="shepp",
                                           algorithm="fbp")}
    for k in factors:
        p, t = proj[::k], theta[::k]
        recs[(k, "sparse FBP")] = tomodl.recon(p, t, center, filter_name="shepp", algorithm="fbp")
        for name, folder in models.items():
            if folder.startswith("default:"):    # the shipped weights, chosen as for a user
                arch = folder.split(":", 1)[1]
                recs[(k, name)] = tomodl.recon(p, t, center, filter_name="shepp",
                                               algorithm=f"fbp+{arch}")
                continue
            arch = read_config(folder).arch
            recs[(k, name)] = tomodl.recon(p, t, center, filter_name="shepp",
                                           algorithm=f"fbp+{arch}", model=folder)
    return recs


def score(recs, masks: np.ndarray, data_range: float, factors, n_angles: int) -> List[dict]:
    """PSNR/SSIM per ``(factor, method)``, averaged over slices, with deltas vs sparse FBP.

    ``psnr``/``ssim`` are inside the sample mask; ``psnr_circle``/``ssim_circle`` over the
    whole reconstruction circle, so structures invented in the air around the sample count.
    """
    from tomodl.metrics import circle_mask, psnr, ssim

    ref, rows = recs[(1, "reference")], []
    circles = np.broadcast_to(circle_mask(ref.shape[1:], 0.95), ref.shape)
    for (k, method), rec in recs.items():
        if k == 1:
            continue
        row = {"factor": k, "n_angles": len(range(0, n_angles, k)), "method": method}
        for tag, ms in (("", masks), ("_circle", circles)):
            row["psnr" + tag] = float(np.mean([psnr(r, f, data_range=data_range, mask=m)
                                               for r, f, m in zip(rec, ref, ms)]))
            row["ssim" + tag] = float(np.mean([ssim(r, f, data_range=data_range, mask=m)
                                               for r, f, m in zip(rec, ref, ms)]))
        rows.append(row)
    base = {r["factor"]: r for r in rows if r["method"] == "sparse FBP"}
    for r in rows:
        # rounded to the printed precision (+ 0.0 drops "-0"): float round-off is no change
        for key, nd in (("psnr", 2), ("ssim", 4), ("psnr_circle", 2), ("ssim_circle", 4)):
            r["d_" + key] = round(r[key] - base[r["factor"]][key], nd) + 0.0
    return rows


def write_tables(rows: List[dict], out: Path, header: str) -> str:
    """Write ``table.md`` and ``table.csv`` to ``out``; return the markdown text."""
    lines = [header, "", "| factor | n_angles | method | PSNR (dB) | SSIM | dPSNR | dSSIM "
             "| PSNR circle | SSIM circle | dPSNR circle | dSSIM circle |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['factor']} | {r['n_angles']} | {r['method']} | {r['psnr']:.2f} | "
                     f"{r['ssim']:.4f} | {r['d_psnr']:+.2f} | {r['d_ssim']:+.4f} | "
                     f"{r['psnr_circle']:.2f} | {r['ssim_circle']:.4f} | "
                     f"{r['d_psnr_circle']:+.2f} | {r['d_ssim_circle']:+.4f} |")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text, encoding="utf-8")
    with open(out / "table.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return text


def crop_box(mask: np.ndarray, margin: int = 20) -> Tuple[slice, slice]:
    """Bounding box of ``mask`` plus ``margin`` pixels, clipped to the image."""
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return (slice(max(ys.min() - margin, 0), min(ys.max() + margin + 1, h)),
            slice(max(xs.min() - margin, 0), min(xs.max() + margin + 1, w)))


def save_mask_png(ref: np.ndarray, mask: np.ndarray, vrange, path: Path) -> None:
    """Reference slice with the sample-mask outline in red, whole slice."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(ref, cmap="gray", vmin=vrange[0], vmax=vrange[1])
    ax.contour(mask, levels=[0.5], colors="r", linewidths=0.8)
    ax.set_title(f"sample mask ({int(mask.sum())} px)")
    ax.axis("off")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def save_figure(recs, rows, mask, index: int, vrange, path: Path) -> None:
    """Rows = factors; columns = reference | sparse FBP | models, cropped to the sample."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    factors = sorted({r["factor"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    stats = {(r["factor"], r["method"]): r for r in rows}
    box = crop_box(mask)
    ncol = 1 + len(methods)
    fig, axes = plt.subplots(len(factors), ncol, figsize=(3 * ncol, 3 * len(factors)),
                             squeeze=False)
    for i, k in enumerate(factors):
        panels = [("full-angle FBP", recs[(1, "reference")])] + [(m, recs[(k, m)]) for m in methods]
        for j, (title, rec) in enumerate(panels):
            ax = axes[i, j]
            ax.imshow(rec[index][box], cmap="gray", vmin=vrange[0], vmax=vrange[1])
            if j:
                s = stats[(k, title)]
                title = f"{title}\n{s['psnr']:.2f} dB, SSIM {s['ssim']:.3f}"
            ax.set_title(title, fontsize=9)
            ax.set_xticks([]), ax.set_yticks([])
        axes[i, 0].set_ylabel(f"every {k}th angle ({stats[(k, methods[0])]['n_angles']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scan", nargs="?", type=Path, default=DEFAULT_SCAN)
    ap.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER")
    ap.add_argument("--factors", type=int, nargs="+", default=[4, 10, 20])
    ap.add_argument("--rotation-axis", "--center", dest="center", type=float, default=None,
                    help="default: tomodl.find_center")
    ap.add_argument("--rows", type=int, nargs=2, default=None, metavar=("START", "STOP"),
                    help="detector rows to read (default: all)")
    ap.add_argument("--out-path", "--out", dest="out", type=Path, default=Path("/tmp/eval_real"))
    args = ap.parse_args(argv)
    bad = [m for m in args.model if "=" not in m]
    if bad:
        ap.error(f"--model expects NAME=FOLDER, got {bad}")
    args.models = dict(m.split("=", 1) for m in args.model)
    return args


def main(argv=None) -> None:
    """Run the evaluation and write the table, the figure and the mask preview."""
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    proj, theta, center = load_scan(args.scan, args.rows, args.center)
    recs = reconstruct_all(proj, theta, center, args.factors, args.models)
    ref = recs[(1, "reference")]
    masks = np.stack([sample_mask(r) for r in ref])
    lo, hi = np.percentile(ref[masks], RANGE_PERCENTILES)
    rows = score(recs, masks, float(hi - lo), args.factors, len(theta))
    header = (f"{args.scan.name}: {len(theta)} angles, {ref.shape[0]} slices of {ref.shape[1]}^2, "
              f"centre {center:.2f} px; reference = full-angle FBP (shepp); metrics inside the "
              f"sample mask ({masks.mean():.1%} of the pixels), data_range = "
              f"P{RANGE_PERCENTILES[0]:g}-P{RANGE_PERCENTILES[1]:g} span of the reference "
              f"in the mask = {hi - lo:.4g} /px; mean over slices.")
    print(write_tables(rows, args.out, header))
    index = ref.shape[0] // 2
    save_mask_png(ref[index], masks[index], (lo, hi), args.out / "mask.png")
    save_figure(recs, rows, masks[index], index, (lo, hi), args.out / "figure.png")
    worse = [f"{r['method']} at {r['factor']}" for r in rows
             if r["method"] != "sparse FBP"
             and min(r["d_psnr"], r["d_ssim"], r["d_psnr_circle"], r["d_ssim_circle"]) < 0]
    print("worse than sparse FBP (PSNR or SSIM, sample or circle): " + (", ".join(worse) or "none"))
    print(f"wrote {args.out}/table.md, table.csv, figure.png, mask.png")


if __name__ == "__main__":
    main()
