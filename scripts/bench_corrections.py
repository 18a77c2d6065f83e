#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Ring suppression and cost of the stripe filters (``--remove-stripe-method``); not a test.

For each method (none, fw, ti, vo-all; Tomocupy's defaults unless noted) on

- ``sim``: a simulated 255 px scan, 361 angles over 180 degrees, detector rings (per-pixel gain
  change of 1 %, :class:`tomodl.sim.config.Acquisition` ``ring_strength``), Poisson noise,
  with the exact line integrals and the phantom as truth;
- ``tooth``: ``../shared/data/tooth.h5`` (181 angles x 640 px, axis 295.9, 2 rows);
- ``neutron``: ``../shared/data/neutron_stripes/sinogram_360.tif`` (rows 0:229 = 180 degrees,
  normalised by the air columns and the two dead columns patched, as its README says; axis
  245.2),

it prints the ring amplitude (the mean |sharp part| of the angular mean of the slice in polar
coordinates about the rotation axis, i.e. about the middle of the FBP grid; for ``sim``
computed on the error against the truth), the stripe amplitude of the sinogram (the same on
the column means of the -log data; against the truth for ``sim``), the RMS error against the
truth (``sim``), and the seconds of the filter against those of the FBP of the same rows.
``--figures DIR`` writes before/after PNGs (``corrections_<data>.png``).

Usage::

    python scripts/bench_corrections.py                       # all three, ~1 min on 2 cores
    python scripts/bench_corrections.py --data sim --figures docs/img
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import map_coordinates, median_filter

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: label -> Corrections options: Tomocupy's defaults, and each filter tuned for detectors of a
#: few hundred pixels (the defaults suit ~2k px: ti's kernel is ~1/ti_beta px wide, vo-all's
#: windows are px).
METHODS = {"none": {}, "fw": {"remove_stripe_method": "fw"},
           "ti": {"remove_stripe_method": "ti"},
           "ti b=0.2": {"remove_stripe_method": "ti", "ti_beta": 0.2},
           "vo-all": {"remove_stripe_method": "vo-all"},
           "vo-all 31/11": {"remove_stripe_method": "vo-all", "vo_all_la_size": 31,
                            "vo_all_sm_size": 11}}


def sharp(profile: np.ndarray, size: int = 9) -> float:
    """Mean |profile - its running median| (rings/stripes are sharp, the sample is not)."""
    return float(np.abs(profile - median_filter(profile, size=size, mode="nearest")).mean())


def ring_amplitude(img: np.ndarray, r_max: float) -> float:
    """Sharp part of the angular mean of ``img`` in polar coordinates about its middle."""
    n = img.shape[-1]
    c = (n - 1) / 2
    r = np.arange(2, r_max)
    phi = np.linspace(0, 2 * np.pi, 720, endpoint=False)
    y = c + r[:, None] * np.sin(phi)[None]
    x = c + r[:, None] * np.cos(phi)[None]
    polar = map_coordinates(img, [y, x], order=1)
    return sharp(polar.mean(axis=1))


def simulated():
    from tomodl.sim.acquisition import acquire
    from tomodl.sim.analytic import ellipse_sinogram, rasterize_ellipses
    from tomodl.sim.config import Acquisition
    from tomodl.recon.preprocess import normalize

    n, n_ang, rows = 255, 361, 3
    theta = np.linspace(0, np.pi, n_ang, endpoint=False).astype(np.float32)
    ell = [(0, 0, 90, 70, 0.3, 0.01), (20, -10, 25, 15, 0.5, 0.01), (-30, 20, 10, 10, 0, -0.005),
           (40, 30, 6, 6, 0, 0.02)]
    p = np.repeat(ellipse_sinogram(ell, theta, n, (n - 1) / 2)[:, None], rows, axis=1)
    proj, flat, dark = acquire(p, Acquisition(ring_strength=0.01), rng=7)
    truth_img = rasterize_ellipses(ell, n)
    return dict(trans=normalize(proj, flat, dark), theta=theta, center=(n - 1) / 2,
                truth=p, truth_img=truth_img, r_max=110)


def tooth():
    from tomodl.io import read_dx
    from tomodl.recon.preprocess import normalize

    proj, flat, dark, theta = read_dx(SHARED / "tooth.h5")
    return dict(trans=normalize(proj, flat, dark), theta=theta, center=295.9, r_max=290)


def neutron():
    import tifffile

    s = tifffile.imread(SHARED / "neutron_stripes" / "sinogram_360.tif").astype(np.float64)
    s = s[:229]
    air = np.concatenate([s[:, :30], s[:, -30:]], axis=1).mean(axis=1, keepdims=True)
    t = s / air
    dead = t < 1000 / 47000
    left, right = np.roll(t, 1, axis=1), np.roll(t, -1, axis=1)
    t[dead] = 0.5 * (left + right)[dead]
    theta = np.deg2rad(np.linspace(0, 360, 459))[:229].astype(np.float32)
    return dict(trans=t[:, None, :].astype(np.float32), theta=theta, center=245.2, r_max=235)


DATA = {"sim": simulated, "tooth": tooth, "neutron": neutron}


def run(name: str, figures):
    from tomodl.recon.corrections import Corrections, line_integrals
    from tomodl.recon.fbp import fbp
    from tomodl.recon.preprocess import minus_log

    d = DATA[name]()
    fbp(np.swapaxes(minus_log(d["trans"]), 0, 1), d["theta"], d["center"])  # warm up
    t0 = time.perf_counter()
    fbp(np.swapaxes(minus_log(d["trans"]), 0, 1), d["theta"], d["center"])
    t_fbp = time.perf_counter() - t0
    rows, recs = [], {}
    for method, options in METHODS.items():
        corr = Corrections(**options)
        line_integrals(d["trans"][:, :1], corr)                  # warm up (imports)
        t0 = time.perf_counter()
        li = line_integrals(d["trans"], corr)
        t_f = time.perf_counter() - t0
        rec = np.asarray(fbp(np.swapaxes(li, 0, 1), d["theta"], d["center"]))
        recs[method] = rec[0]
        ref_li = d.get("truth", 0.0)
        stripe = sharp((li - ref_li).mean(axis=0)[0])
        err = rec[0] - (d["truth_img"] if "truth_img" in d else 0.0)
        row = dict(method=method, ring=ring_amplitude(err, d["r_max"]), stripe=stripe,
                   filter_s=t_f, fbp_s=t_fbp)
        if "truth_img" in d:
            row["rmse"] = float(np.sqrt(np.mean(err ** 2)))
        rows.append(row)
    print(f"\n{name}: sinogram {d['trans'].shape} (angles, rows, det)")
    print(f"{'method':12s} {'ring amp':>10s} {'stripe amp':>11s} {'rmse':>9s} "
          f"{'filter s':>9s} {'FBP s':>7s}")
    base = rows[0]
    for r in rows:
        print(f"{r['method']:12s} {r['ring']:10.3g} {r['stripe']:11.3g} "
              f"{r.get('rmse', float('nan')):9.3g} {r['filter_s']:9.3f} {r['fbp_s']:7.3f}"
              f"   rings x{r['ring'] / base['ring']:.2f}")
    if figures:
        save_figure(recs, Path(figures) / f"corrections_{name}.png", name, rows)
    return rows


def save_figure(recs: dict, path: Path, name: str, rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    imgs = list(recs.values())
    n = imgs[0].shape[-1]
    lo, hi = np.percentile(imgs[0][n // 4:3 * n // 4, n // 4:3 * n // 4], [1, 99.5])
    fig, axes = plt.subplots(2, (len(imgs) + 1) // 2, figsize=(2.6 * (len(imgs) + 1) // 2, 5.6),
                             dpi=70)
    axes = axes.T.ravel()
    for ax, (method, img), r in zip(axes, recs.items(), rows):
        a, b = int(0.2 * n), int(0.8 * n)                    # the middle, where rings are
        ax.imshow(img[a:b, a:b], cmap="gray", vmin=lo, vmax=hi)
        extra = f", rmse {r['rmse']:.2g}" if "rmse" in r else ""
        ax.set_title(f"{method}: rings {r['ring']:.2g}{extra}", fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{name}: FBP after --remove-stripe-method", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    print(f"wrote {path}")


def raw_costs(n_ang: int = 361, rows: int = 8, n_det: int = 255) -> None:
    """Seconds of --dezinger 3 and --binning 1 on raw counts against the FBP of the rows."""
    from tomodl.recon.corrections import bin_projections, remove_outlier
    from tomodl.recon.fbp import fbp

    rng = np.random.default_rng(0)
    raw = rng.poisson(2e4, (n_ang, rows, n_det)).astype(np.float32)
    theta = np.linspace(0, np.pi, n_ang, endpoint=False)
    li = np.swapaxes(-np.log(raw / 2e4), 0, 1)
    fbp(li, theta, (n_det - 1) / 2)
    out = {}
    for name, fn in (("FBP", lambda: fbp(li, theta, (n_det - 1) / 2)),
                     ("dezinger 3", lambda: remove_outlier(raw, 5000.0, 3)),
                     ("binning 1", lambda: bin_projections(raw, 1))):
        t0 = time.perf_counter()
        fn()
        out[name] = time.perf_counter() - t0
    print(f"\nraw counts {raw.shape}: " + ", ".join(
        f"{k} {v:.3f} s (x{v / out['FBP']:.2f} FBP)" for k, v in out.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="sim,tooth,neutron")
    ap.add_argument("--figures", default=None, help="folder for the PNGs (e.g. docs/img)")
    args = ap.parse_args()
    for name in args.data.split(","):
        run(name, args.figures)
    raw_costs()


if __name__ == "__main__":
    main()
