# SPDX-License-Identifier: BSD-3-Clause
"""Consistency scores of FBP and the shipped network against set-aside measured angles
(issue 13), their cost against the reconstruction, and the figure docs/img/check_tooth.png.

    .venv/bin/python scripts/bench_check.py --tooth /work/shared/data/tooth.h5 \
        --figure docs/img/check_tooth.png

Tooth: every k-th of the 181 angles for 46 / 19 / 10 projections; simulated: a foam phantom
(256 px) with exact projections, the network and the network plus an invented blob.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import tomodl
from tomodl.recon.check import check, check_sinograms


def tooth(path, counts, figure):
    scan = tomodl.read_dx(path)
    tomo = tomodl.minus_log(tomodl.normalize(scan.proj, scan.flat, scan.dark))
    center = tomodl.find_center(tomo, scan.theta, ind=0)
    print(f"tooth {tomo.shape}, centre {center:.2f}")
    shown = None
    for n in counts:
        idx = np.round(np.linspace(0, len(scan.theta) - 1, n)).astype(int)
        t, th = np.ascontiguousarray(tomo[idx]), scan.theta[idx]
        t0 = time.perf_counter()
        rec = tomodl.recon(t, th, center, device="cpu")
        t_rec = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = check(t, th, center, device="cpu")
        t_chk = time.perf_counter() - t0
        net = "skipped" if res.network is None else \
            " ".join(f"{v:.3f}" for v in res.network)
        print(f"tooth {n:3d} proj: FBP {' '.join(f'{v:.3f}' for v in res.fbp)} | network "
              f"{net} | recon {t_rec:.1f} s, check {t_chk:.1f} s ({rec.shape[0]} rows)")
        if n == 19:
            shown = (n, res, tomodl.recon(t, th, center, algorithm="fbp"))
    if figure and shown is not None:
        _figure(figure, *shown)


def _figure(path, n, res, fbp_all):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img, m = res.images[0], res.maps[0]
    lo, hi = np.percentile(img, (1, 99))
    lim = np.percentile(np.abs(m), 99.5)
    fig, ax = plt.subplots(1, 3, figsize=(15, 5.4))
    ax[0].imshow(fbp_all[0], cmap="gray", vmin=lo, vmax=hi)
    ax[0].set_title(f"FBP, all {n} projections")
    ax[1].imshow(img, cmap="gray", vmin=lo, vmax=hi)
    ax[1].set_title(f"network from {n - len(res.held)} kept projections\n"
                    f"score {res.network[0]:.3f} (FBP {res.fbp[0]:.3f})")
    im = ax[2].imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax[2].set_title("disagreement with the set-aside projections (4 folds: each angle\n"
                    "set aside once); red: more than measured, blue: less")
    fig.colorbar(im, ax=ax[2], fraction=0.046, label="attenuation / pixel")
    for a in ax:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print(f"figure: {path}")


def simulated(counts, n=255, seed=3):
    from tomodl.recon.api import load_model_step, parse_algorithm
    from tomodl.sim.families import make_phantom
    from tomodl.sim.phantom import ground_truth, project

    ph = make_phantom("foam", n, 1, rng=np.random.default_rng(seed))
    gt = ground_truth(ph, n, 1)[0]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    where = np.hypot(xx - 30, yy + 20)
    for k in counts:
        th = np.linspace(0, np.pi, k, endpoint=False)
        sino = np.swapaxes(project(ph, th, n, 1), 0, 1).astype(np.float32)
        step = load_model_step(parse_algorithm("fbp+resattunet"), {}, "shepp", th,
                               device="cpu", n_grid=n)
        res = check_sinograms(sino, th, n / 2, step, folds=4)
        blob = 0.5 * np.percentile(gt, 99) * (where < 6)

        def liar(rec, step=step, blob=blob, **kw):
            return (step(rec, **kw) if step is not None else rec) + blob

        bad = check_sinograms(sino, th, n / 2, liar, folds=4)
        ring = (where > 12) & (np.hypot(xx, yy) < 0.45 * n)
        ratio = np.abs(bad.maps[0][blob > 0]).mean() / np.abs(bad.maps[0][ring]).mean()
        m = bad.maps[0] - res.maps[0]
        alone = np.abs(m[blob > 0]).mean() / np.abs(m[ring]).mean()
        fbp_all = tomodl.recon(sino, th, n / 2, sinogram_order=True, algorithm="fbp")[0]
        net_all = fbp_all if step is None else step(fbp_all[None], device="cpu")[0]
        rmse = [float(np.sqrt(np.mean((v - gt)[np.hypot(xx, yy) < 0.45 * n] ** 2)))
                for v in (fbp_all, net_all)]
        net = "skipped" if res.network is None else f"{res.network[0]:.3f}"
        print(f"foam {k:3d} proj: FBP {res.fbp[0]:.3f} | network {net} | network+blob "
              f"{bad.network[0]:.3f}; map |in blob| / |elsewhere| {ratio:.1f} (blob's part "
              f"{alone:.1f}); RMSE vs truth (all angles) FBP {rmse[0]:.4f} network {rmse[1]:.4f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tooth", default=None)
    ap.add_argument("--figure", default=None)
    ap.add_argument("--counts", type=int, nargs="+", default=[46, 19, 10])
    ap.add_argument("--no-sim", action="store_true")
    a = ap.parse_args()
    if a.tooth:
        tooth(a.tooth, a.counts, a.figure)
    if not a.no_sim:
        simulated(a.counts)


if __name__ == "__main__":
    main()
