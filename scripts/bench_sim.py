#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark of the foam simulator: 512 px x 64 slices x 1500 angles, >= 300 spheres.

Stages are timed separately (phantom, exact projection, detector model, ground truth, DXchange
write) and end to end.  Peers, measured in the same run on a few rows and scaled to 64 rows:

* ``dense analytic``: every ellipse evaluated on every detector sample (the midpoint rule with
  4 samples per pixel, ``ellipse_sinogram(..., supersample=4)``), i.e. no sparse windows;
* ``skimage radon``: a pixel-grid forward projector of the ground-truth slices (what this
  simulator avoids: the inverse crime), at the same number of angles.

Usage::

    python scripts/bench_sim.py [--size 512 --slices 64 --angles 1500 --spheres 300]
    python scripts/bench_sim.py --figure docs/img/sim_foam_fbp.png   # the figure only
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def figure(out: Path, size: int, angles: int) -> None:
    """Ground-truth slice | FBP of all angles | FBP of 1 in 20 angles, for three families."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tomodl.io.dxchange import read_dx
    from tomodl.recon.fbp import fbp
    from tomodl.recon.preprocess import minus_log, normalize
    from tomodl.sim.config import ScanGeometry
    from tomodl.sim.scan import read_ground_truth, simulate_scan

    families = ("foam_intense", "cracked", "mixed")
    fig, axes = plt.subplots(len(families), 3, figsize=(12, 4 * len(families)))
    with tempfile.TemporaryDirectory() as d:
        for row, family in zip(axes, families):
            path = simulate_scan(Path(d) / f"{family}.h5", family, seed=1,
                                 geometry=ScanGeometry(n_det=size, n_rows=3, n_angles=angles))
            gt, meta = read_ground_truth(path, rows=(1, 2))
            images = [gt[0]]
            for step in (1, 20):
                scan = read_dx(path, proj=(0, angles, step), sino=(1, 2))
                lines = minus_log(normalize(scan.proj, scan.flat, scan.dark))
                images.append(fbp(np.swapaxes(lines, 0, 1), scan.theta,
                                  meta["geometry"]["center"])[0])
            lo, hi = np.percentile(gt[0], [0.5, 99.5])
            titles = (f"{family}: ground truth", f"FBP, {angles} angles",
                      f"FBP, 1 in 20 ({len(range(0, angles, 20))} angles)")
            for ax, img, title in zip(row, images, titles):
                ax.imshow(img, cmap="gray", vmin=lo, vmax=hi)
                ax.set_title(title)
                ax.axis("off")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--angles", type=int, default=1500)
    ap.add_argument("--spheres", type=int, default=300)
    ap.add_argument("--peer-rows", type=int, default=1, help="rows measured for the peers")
    ap.add_argument("--figure", type=Path, default=None,
                    help="only write the comparison figure (PNG) and exit")
    args = ap.parse_args()
    if args.figure is not None:
        return figure(args.figure, args.size, args.angles)

    from tomodl.sim.acquisition import acquire
    from tomodl.sim.analytic import ellipse_sinogram
    from tomodl.sim.config import Acquisition, ScanGeometry
    from tomodl.sim.families import make_phantom
    from tomodl.sim.phantom import ground_truth, project, row_heights
    from tomodl.sim.scan import scan_angles, simulate_scan

    load0 = os.getloadavg()
    n, rows, m = args.size, args.slices, args.angles
    geo = ScanGeometry(n_det=n, n_rows=rows, n_angles=m)
    theta = scan_angles(geo)
    ph, t_ph = timed(make_phantom, "foam", n, rows, rng=0, n_spheres=args.spheres)
    lines, t_proj = timed(project, ph, theta, n, rows)
    _, t_acq = timed(acquire, lines, Acquisition(), 1)
    gt, t_gt = timed(ground_truth, ph, n, rows)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bench.h5"
        _, t_total = timed(simulate_scan, path, "foam", seed=0, geometry=geo,
                           n_spheres=args.spheres)
        size_mb = path.stat().st_size / 2**20
    load1 = os.getloadavg()

    k = args.peer_rows
    section = ph.sectioner()
    planes = row_heights(rows, 2)[rows // 2: rows // 2 + k]
    _, t_dense = timed(lambda: [ellipse_sinogram(section(z), theta, n, n / 2, supersample=4)
                                for z in planes.ravel()])
    from skimage.transform import radon

    deg = np.rad2deg(theta)
    _, t_radon = timed(lambda: [radon(g, deg, circle=True) for g in gt[rows // 2: rows // 2 + k]])
    scale = rows / k

    print(f"scan {n} px x {rows} slices x {m} angles, {ph.ellipsoids.shape[0]} spheres, "
          f"{os.cpu_count()} cores; load average before {load0[0]:.2f}, after {load1[0]:.2f}")
    print(f"{'stage':34s} {'seconds':>9s}")
    for name, t in (("phantom (placement)", t_ph), ("exact projection", t_proj),
                    ("detector model (noise, flats)", t_acq), ("ground truth", t_gt),
                    (f"end to end incl. write ({size_mb:.0f} MB)", t_total)):
        print(f"{name:34s} {t:9.2f}")
    print(f"\n{'projector (64 rows)':34s} {'seconds':>9s} {'ratio':>7s}")
    for name, t in (("tomodl exact, sparse windows", t_proj),
                    (f"dense analytic (from {k} rows)", t_dense * scale),
                    (f"skimage radon of GT (from {k} rows)", t_radon * scale)):
        print(f"{name:34s} {t:9.2f} {t / t_proj:7.2f}")
    print(f"\ntarget: end to end <= 60 s -> {'met' if t_total <= 60 else 'NOT met'}")


if __name__ == "__main__":
    main()
