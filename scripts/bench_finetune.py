#!/usr/bin/env python
"""Benchmark of issue 12 section 3: ``finetune`` (and ``adapt``) on held-out simulated samples.

For each held-out texture family of :mod:`tomodl.sim.textures` (never used in training):

1. **Simulate a dense scan** of ``--rows`` rows, each row an independent realization of the
   family (a "similar sample"), drawn on a 3x finer grid, projected exactly at ``--angles``
   angles over 180 degrees (no inverse crime), with flats, darks and Poisson/read noise
   (:func:`tomodl.sim.acquisition.acquire`, ``--flux`` counts per pixel), written as raw
   DXchange counts (:func:`tomodl.io.write_dx`); the truth of each row is kept beside it.
2. **Fine-tune** the shipped release on it with :func:`tomodl.training.finetune.finetune`
   (the CLI defaults except a short ``--minutes`` budget and the counts ``--counts``); it holds
   out the middle block of rows (its default split).
3. **Adapt** (``--adapt-counts``, when :func:`tomodl.training.adapt.adapt` exists): the
   self-supervised adaptation on the *sparse* scan (every k-th of the dense angles, the
   ``proj_step`` correction) of the same file, its default rows (the middle block held out for
   its own validation), ``--adapt-minutes`` each.
4. **Score** on the held-out rows of the fine-tuning: sparse FBP, the release
   (``tomodl.recon(..., algorithm="fbp+resattunet")``), the fine-tuned and the adapted folders
   (``model=...``) at each count, against the truth and against the full-angle FBP: PSNR/SSIM
   (``tomodl.metrics``) inside the circle of radius 0.45 N, ``data_range`` = max - min of the
   reference there; and **invented structure** against the truth (features of the output
   outside the truth's local range by > 0.1 data_range, at least 4 px: ``invented`` of
   ``scripts/bench_refine.py``, loaded from beside this file).
5. Print a markdown table (with the wall time of each training and ``uptime`` load), write it
   to ``--out/table.md`` and ``results.json``, and one figure per family of one held-out row
   (rows: counts; columns: truth, full-angle FBP, sparse FBP, release, fine-tuned[, adapted]),
   quantized to 64 colours, to ``--figdir/finetune_sim_<family>.png``.

Example (about 25 minutes on 2 busy cores)::

    .venv/bin/python scripts/bench_finetune.py --families grains,fine_cracks --minutes 3 \
        --adapt-minutes 2 --out /tmp/r_work
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

REPO = Path(__file__).resolve().parents[1]
UPSAMPLE = 3
CIRCLE = 0.9            # radius 0.45 N


def uptime() -> str:
    return "load %.2f, %.2f, %.2f" % os.getloadavg()


def bench_refine():
    """``scripts/bench_refine.py`` as a module (its ``Case`` and ``invented``)."""
    spec = importlib.util.spec_from_file_location("bench_refine", REPO / "scripts" /
                                                  "bench_refine.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_refine"] = mod          # its dataclass looks itself up there
    spec.loader.exec_module(mod)
    return mod


# -- simulation -------------------------------------------------------------------------------
def simulate(family: str, args, work: Path) -> Path:
    """Dense raw scan of ``args.rows`` realizations of ``family``; truth in ``<scan>.truth.npy``."""
    import torch

    import tomodl
    from tomodl.recon.geometry import default_center
    from tomodl.recon.projector import ParallelProjector
    from tomodl.sim.acquisition import acquire
    from tomodl.sim.config import Acquisition
    from tomodl.sim.textures import _embedding, downsample, make_texture

    scan = work / f"{family}_dense.h5"
    if scan.is_file() and scan.with_suffix(".truth.npy").is_file():
        return scan
    n, up = args.n, UPSAMPLE
    m, r0, c0 = _embedding(n, up)
    theta = np.linspace(0, np.pi, args.angles, endpoint=False)
    fine = np.zeros((args.rows, m, m), np.float32)
    truth = np.empty((args.rows, n, n), np.float32)
    for r in range(args.rows):
        img = make_texture(family, n, rng=[args.seed, r], upsample=up)
        fine[r, r0:r0 + n * up, c0:c0 + n * up] = img
        truth[r] = downsample(img, up)
    t0 = time.time()
    op = ParallelProjector(m, theta, n * up, up * default_center(n) + (up - 1) / 2.0)
    sino = np.asarray(op.forward(torch.from_numpy(fine)).numpy(), np.float64)
    del fine
    lines = sino.reshape(args.rows, args.angles, n, up).mean(axis=3) / up   # (rows, angles, n)
    logging.info("%s: projected %d rows x %d angles in %.0f s", family, args.rows, args.angles,
                 time.time() - t0)
    acq = Acquisition(flux=args.flux)
    proj, flat, dark = acquire(lines.transpose(1, 0, 2), acq, rng=[args.seed, 99])
    tomodl.write_dx(scan, proj, flat, dark, theta, overwrite=True)
    np.save(scan.with_suffix(".truth.npy"), truth)
    return scan


# -- training ---------------------------------------------------------------------------------
def run_finetune(scan: Path, args, work: Path) -> dict:
    from tomodl.recon.geometry import default_center
    from tomodl.training.finetune import finetune

    out = work / f"{scan.stem}_ft"
    load0, t0 = uptime(), time.time()
    res = finetune(scan, out, angles=args.counts, minutes=args.minutes,
                   center=default_center(args.n), threads=args.threads, progress=False,
                   overwrite=True, resume=False)
    wall = time.time() - t0
    extra = json.loads((out / "config.json").read_text())["extra"]["finetune"]
    held = [int(r) for r in extra["task"]["scans"][0]["holdout_rows"]]
    return {"out": str(out), "wall_s": round(wall, 1), "steps": res.steps,
            "improved": res.improved, "base_loss": res.base_loss, "best_loss": res.best_loss,
            "load_start": load0, "load_end": uptime(), "holdout_rows": held}


def run_adapt(scan: Path, count: int, args, work: Path) -> dict:
    from tomodl.recon.corrections import Corrections
    from tomodl.recon.geometry import default_center
    from tomodl.training.adapt import adapt

    out = work / f"{scan.stem}_ad{count}"
    step = args.angles // count
    load0, t0 = uptime(), time.time()
    res = adapt(scan, out, minutes=args.adapt_minutes, center=default_center(args.n),
                corrections=Corrections(proj_step=step), threads=args.threads, progress=False,
                overwrite=True, resume=False)
    return {"out": str(out), "wall_s": round(time.time() - t0, 1), "steps": res.steps,
            "improved": res.improved, "base_loss": res.base_loss, "best_loss": res.best_loss,
            "load_start": load0, "load_end": uptime()}


# -- evaluation -------------------------------------------------------------------------------
def evaluate(family: str, scan: Path, ft: dict, adapted: Dict[int, dict], args) -> List[dict]:
    """Scores of every method at every count, mean over the held-out rows; images kept."""
    import tomodl
    from tomodl.metrics import circle_mask, psnr, ssim
    from tomodl.recon.geometry import default_center

    br = bench_refine()
    proj, flat, dark, theta = tomodl.read_dx(scan)
    rows = ft["holdout_rows"]
    li = tomodl.minus_log(tomodl.normalize(proj[:, rows], flat[:, rows], dark[:, rows]))
    truth = np.load(scan.with_suffix(".truth.npy"))[rows]
    c = default_center(args.n)
    full = tomodl.recon(li, theta, c, algorithm="fbp", filter_name="shepp")
    mask = circle_mask(truth.shape[-2:], CIRCLE)
    out = []
    for count in args.counts:
        step = args.angles // count
        s, th = li[::step], np.asarray(theta[::step])
        imgs = {"fbp": tomodl.recon(s, th, c, algorithm="fbp", filter_name="shepp"),
                "release": tomodl.recon(s, th, c, algorithm="fbp+resattunet")}
        imgs["finetuned"] = tomodl.recon(s, th, c, algorithm="fbp+resattunet", model=ft["out"])
        if count in adapted:
            imgs["adapted"] = tomodl.recon(s, th, c, algorithm="fbp+resattunet",
                                           model=adapted[count]["out"])
        for meth, im in imgs.items():
            sc = {"truth": [], "full": [], "inv": [], "inv_px": []}
            for i in range(len(rows)):
                for key, ref in (("truth", truth[i]), ("full", full[i])):
                    dr = float(ref[mask].max() - ref[mask].min())
                    sc[key].append((psnr(im[i], ref, data_range=dr, mask=mask),
                                    ssim(im[i], ref, data_range=dr, mask=mask)))
                case = br.Case(family, count, s[:, i], th, c, truth[i], True)
                _, k, px = br.invented(im[i], case)
                sc["inv"].append(k)
                sc["inv_px"].append(px)
            t, f = np.mean(sc["truth"], axis=0), np.mean(sc["full"], axis=0)
            out.append({"family": family, "count": count, "method": meth,
                        "psnr_truth": round(float(t[0]), 2), "ssim_truth": round(float(t[1]), 3),
                        "psnr_full": round(float(f[0]), 2), "ssim_full": round(float(f[1]), 3),
                        "invented": round(float(np.mean(sc["inv"])), 1),
                        "inv_px": round(float(np.mean(sc["inv_px"])), 0),
                        "img": im[args.fig_row], "truth": truth[args.fig_row],
                        "full": full[args.fig_row]})
    return out


def md_table(header: List[str], cells: List[List[str]]) -> List[str]:
    """Markdown table lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in cells]


def table(rows: List[dict]) -> List[str]:
    return md_table(["family", "proj.", "method", "vs truth PSNR / SSIM",
                     "vs full-angle FBP PSNR / SSIM", "invented (n / px)"],
                    [[r["family"], r["count"], r["method"],
                      f"{r['psnr_truth']:.2f} / {r['ssim_truth']:.3f}",
                      f"{r['psnr_full']:.2f} / {r['ssim_full']:.3f}",
                      f"{r['invented']:.1f} / {r['inv_px']:.0f}"] for r in rows])


def runs_table(runs: List[dict]) -> List[str]:
    return md_table(["family", "training", "wall s", "steps", "improved",
                     "held-out loss base -> best", "uptime start", "uptime end"],
                    [[r["family"], r["what"], r["wall_s"], r["steps"], r["improved"],
                      f"{r['base_loss']:.5g} -> {r['best_loss']:.5g}", r["load_start"],
                      r["load_end"]] for r in runs])


def figure(family: str, rows: List[dict], path: Path, row: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    counts = sorted({r["count"] for r in rows}, reverse=True)
    methods = ["fbp", "release", "finetuned", "adapted"]
    methods = [m for m in methods if any(r["method"] == m for r in rows)]
    cols = ["truth", "full-angle FBP"] + methods
    fig, ax = plt.subplots(len(counts), len(cols), figsize=(2.6 * len(cols), 2.7 * len(counts)))
    ax = np.atleast_2d(ax)
    for i, count in enumerate(counts):
        by = {r["method"]: r for r in rows if r["count"] == count}
        first = next(iter(by.values()))
        lo, hi = np.percentile(first["truth"], [0.5, 99.5])
        panels = [first["truth"], first["full"]] + [by[m]["img"] if m in by else None
                                                    for m in methods]
        for j, (img, name) in enumerate(zip(panels, cols)):
            a = ax[i, j]
            a.axis("off")
            if img is None:
                continue
            a.imshow(img, cmap="gray", vmin=lo, vmax=hi)
            label = name if j < 2 else f"{name} {by[name]['psnr_truth']:.1f} dB"
            a.set_title(f"{count}: {label}", fontsize=8)
    fig.suptitle(f"{family}, held-out row {row} (rows: projections per 180 deg)", fontsize=9)
    plt.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=70)
    plt.close(fig)
    Image.open(tmp).convert("RGB").quantize(64).save(path, optimize=True)
    tmp.unlink()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--families", default="grains,fine_cracks")
    p.add_argument("--n", type=int, default=256, help="detector columns = grid size")
    p.add_argument("--rows", type=int, default=10, help="rows (realizations) per scan")
    p.add_argument("--angles", type=int, default=540, help="dense angles over 180 degrees")
    p.add_argument("--counts", default="90,36,18", help="sparse counts (divide --angles)")
    p.add_argument("--adapt-counts", default="36,18", help="'' skips adapt")
    p.add_argument("--minutes", type=float, default=3.0, help="finetune budget")
    p.add_argument("--adapt-minutes", type=float, default=1.5)
    p.add_argument("--flux", type=float, default=2.0e4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--fig-row", type=int, default=0, help="index among the held-out rows")
    p.add_argument("--out", default="bench_out/finetune_sim")
    p.add_argument("--figdir", default=str(REPO / "docs" / "img"))
    a = p.parse_args(argv)
    a.families = [f for f in a.families.split(",") if f]
    a.counts = [int(c) for c in a.counts.split(",") if c]
    a.adapt_counts = [int(c) for c in a.adapt_counts.split(",") if c]
    bad = [c for c in a.counts + a.adapt_counts if a.angles % c]
    if bad:
        p.error(f"counts {bad} do not divide --angles {a.angles}")
    return a


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    try:
        from tomodl.training.adapt import adapt  # noqa: F401
    except ImportError:
        logging.warning("tomodl.training.adapt is not available: adapt skipped")
        args.adapt_counts = []
    start, t0 = uptime(), time.time()
    lines, runs, all_rows = [], [], []
    for family in args.families:
        ts = time.time()
        scan = simulate(family, args, work)
        sim_s = time.time() - ts
        ft = run_finetune(scan, args, work)
        runs.append({"family": family, "what": "finetune", "sim_s": round(sim_s, 1), **ft})
        adapted = {}
        for count in args.adapt_counts:
            adapted[count] = run_adapt(scan, count, args, work)
            runs.append({"family": family, "what": f"adapt {count}", **adapted[count]})
        rows = evaluate(family, scan, ft, adapted, args)
        figure(family, rows, Path(args.figdir) / f"finetune_sim_{family}.png",
               ft["holdout_rows"][args.fig_row])
        all_rows += rows
        lines = table(all_rows)
        print("\n".join(lines), flush=True)
    runs_md = runs_table(runs)
    text = "\n".join(lines + [""] + runs_md + ["", f"total {time.time() - t0:.0f} s; uptime "
                                                   f"{start} -> {uptime()}"])
    print(text)
    (work / "table.md").write_text(text + "\n")
    keep = [{k: v for k, v in r.items() if k not in ("img", "truth", "full")} for r in all_rows]
    (work / "results.json").write_text(json.dumps({"scores": keep, "runs": runs,
                                                   "args": vars(args)}, indent=1))


if __name__ == "__main__":
    main()
