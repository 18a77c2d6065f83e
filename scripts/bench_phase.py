#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Cost and figures of the projection-level steps of issue 14: Paganin phase retrieval,
double_fov stitching and the preview PNG.

``--time``: seconds of each step against the FBP of the same data (CPU, this machine's
threads), on a synthetic scan of ``--size`` (n_angles n_rows n_det).
``--figures DIR``: the before/after figures on real data (``../shared/data``):

* ``phase_tomo77.png``: tomo77 (nano-CT of porous gold, already -log; turned back into
  transmission with a flat of 1) reconstructed by ``tomodl recon`` without and with
  ``--retrieve-phase-method paganin`` (assumed parameters: the scan's geometry is not recorded),
  and the pipeline's own ``_preview.png`` of the Paganin run (``preview_tomo77.png``);
* ``double_fov_neutron.png``: the real 360-degree neutron sinogram cut to the columns right
  of column 200 (the axis, 245.2 px on the full detector, is then 45.2 px from the left edge),
  stitched with the axis found automatically, next to the 180-degree FBP of the full detector.
* ``paganin_sphere.png``: profiles through a Fresnel-propagated homogeneous sphere: the
  thickness, plain ``-log`` and Paganin.

Usage::

    python scripts/bench_phase.py --time --size 360 128 512
    python scripts/bench_phase.py --figures docs/img
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PHASE = dict(energy=20.0, propagation_distance=100.0, pixel_size=1.0, alpha=1e-2)


def _best(fn, repeat: int = 3) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def bench_projection_steps(n_angles: int, n_rows: int, n_det: int, ncore=None) -> dict:
    """Seconds of FBP, Paganin, stitching and the preview collector on one synthetic volume."""
    from tomodl.recon.fbp import fbp
    from tomodl.recon.phase import retrieve_phase
    from tomodl.recon.preview import PreviewCollector
    from tomodl.recon.stitch import find_center_360, stitch_360

    rng = np.random.default_rng(0)
    trans = np.exp(-rng.random((n_angles, n_rows, n_det), dtype=np.float32) * 0.1)
    theta = np.linspace(0, np.pi, n_angles, endpoint=False).astype(np.float32)
    proj = -np.log(trans)
    t = {"fbp": _best(lambda: fbp(np.swapaxes(proj, 0, 1), theta, n_det / 2, ncore=ncore), 1)}
    t["paganin"] = _best(lambda: retrieve_phase(trans, **PHASE))
    theta360 = np.linspace(0, 2 * np.pi, n_angles, endpoint=False)
    t["stitch_360"] = _best(lambda: stitch_360(proj, theta360, n_det / 8))
    t["find_center_360 (1 row)"] = _best(lambda: find_center_360(proj[:, n_rows // 2], theta360))
    rec = np.zeros((n_rows, n_det, n_det), np.float32)
    col = PreviewCollector(n_rows, n_det)
    t["preview collector"] = _best(lambda: col.add(0, rec))
    return t


def bench_pipeline(n_angles: int, n_rows: int, n_det: int) -> dict:
    """Wall seconds of ``reconstruct_file`` (FBP, HDF5 output) on a synthetic raw scan: plain,
    with the preview, with Paganin (projection pass + scratch file), and double_fov over 360
    degrees with the axis at n_det / 8 (given)."""
    from tomodl.io import write_dx
    from tomodl.recon.corrections import Corrections
    from tomodl.recon.pipeline import ReconConfig, reconstruct_file

    rng = np.random.default_rng(0)
    counts = (1e4 * np.exp(-0.1 * rng.random((n_angles, n_rows, n_det)))).astype(np.float32)
    flat = np.full((2, n_rows, n_det), 1e4, np.float32)
    dark = np.zeros((1, n_rows, n_det), np.float32)
    runs = {"plain": dict(), "preview": dict(preview=True),
            "paganin": dict(corrections=Corrections(
                retrieve_phase_method="paganin", energy=20.0, propagation_distance=100.0,
                pixel_size=1.0, retrieve_phase_alpha=1e-2)),
            "double_fov": dict(corrections=Corrections(file_type="double_fov"),
                               center=n_det / 8)}
    out = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name, kw in runs.items():
            span = 2 * np.pi if name == "double_fov" else np.pi
            theta = np.linspace(0, span, n_angles, endpoint=False)
            scan = write_dx(tmp / f"{name}.h5", counts, flat, dark, theta, theta_units="rad")
            cfg = ReconConfig(**{"algorithm": "fbp", "center": n_det / 2, "save_format": "h5",
                                 "progress": False, "out_path": tmp / f"{name}_rec.h5",
                                 "preview": False, **kw})
            t0 = time.perf_counter()
            reconstruct_file(scan, cfg)
            out[name] = time.perf_counter() - t0
    return out


def _pipeline_pair(scan: Path, tmp: Path, **phase):
    """The middle slice without / with Paganin through ``reconstruct_file`` (+ preview)."""
    from tomodl.io.writers import read_volume
    from tomodl.recon.corrections import Corrections
    from tomodl.recon.pipeline import ReconConfig, reconstruct_file

    out = []
    for name, corr in (("plain", Corrections()), ("paganin", Corrections(**phase))):
        cfg = ReconConfig(algorithm="fbp", center=38.5, save_format="h5", progress=False,
                          out_path=tmp / f"{name}.h5", corrections=corr, preview=True)
        res = reconstruct_file(scan, cfg)
        out.append(read_volume(res.path, "h5"))
    return out


def figure_phase(out_dir: Path) -> None:
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tomodl.io import write_dx

    with h5py.File(DATA / "tomo77" / "tomo77_minuslog.h5", "r") as f:
        att = f["/exchange/data"][:450, :78].astype(np.float32)
    theta = np.linspace(0, 180, 451)[:450]
    phase = dict(retrieve_phase_method="paganin", energy=11.0, propagation_distance=5.0,
                 pixel_size=0.5, retrieve_phase_alpha=0.2)  # assumed: kernel length 0.95 px
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        scan = write_dx(tmp / "tomo77.h5", np.exp(-att), np.ones((1,) + att.shape[1:],
                        np.float32), np.zeros((1,) + att.shape[1:], np.float32),
                        np.radians(theta), theta_units="rad")
        plain, pag = _pipeline_pair(scan, tmp, **phase)
        (out_dir / "preview_tomo77.png").write_bytes((tmp / "paganin_preview.png").read_bytes())
    fig, ax = plt.subplots(1, 3, figsize=(9, 3.2))
    r = 39
    lo, hi = np.percentile(plain[r], [1, 99.5])
    ax[0].imshow(plain[r], cmap="gray", vmin=lo, vmax=hi)
    ax[0].set_title("FBP (row 39)")
    ax[1].imshow(pag[r], cmap="gray", vmin=lo, vmax=hi)
    ax[1].set_title("Paganin + FBP")
    mid = plain.shape[1] // 2
    ax[2].plot(plain[r, mid], label="FBP")
    ax[2].plot(pag[r, mid], label="Paganin + FBP")
    ax[2].legend(fontsize=7)
    ax[2].set_title("middle line")
    for a in ax[:2]:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "phase_tomo77.png", dpi=90)
    plt.close(fig)


def figure_double_fov(out_dir: Path) -> None:
    import matplotlib
    import tifffile

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tomodl.recon.fbp import fbp
    from tomodl.recon.stitch import find_center_360, stitch_360

    s = tifffile.imread(DATA / "neutron_stripes" / "sinogram_360.tif").astype(np.float64)
    flat = np.concatenate([s[:, :30], s[:, -30:]], axis=1).mean(1, keepdims=True)
    t = s / flat
    for col, rows in ((314, slice(31, 203)), (346, slice(60, 175))):
        t[rows, col] = 0.5 * (t[rows, col - 1] + t[rows, col + 1])
    att = -np.log(np.clip(t, 1e-3, None))[:458]          # row 458 repeats row 0
    theta = np.radians(np.arange(458) * 360 / 458)
    full = fbp(att[None, :229].astype(np.float32), theta[:229], 245.2)[0]
    cut = att[:, 200:]
    c = find_center_360(cut, theta)
    t180, th180, c180 = stitch_360(cut[:, None], theta, c)
    rec = fbp(np.swapaxes(t180, 0, 1), th180, c180)[0]
    fig, ax = plt.subplots(1, 3, figsize=(10, 3.6))
    lo, hi = np.percentile(full, [1, 99.5])
    ax[0].imshow(cut, cmap="gray", aspect="auto")
    ax[0].set_title(f"360° sinogram, columns 200-502\n(axis found: {c:.1f} px)")
    ax[1].imshow(rec, cmap="gray", vmin=lo, vmax=hi)
    ax[1].set_title(f"stitched double_fov ({t180.shape[-1]} px)")
    ax[2].imshow(full, cmap="gray", vmin=lo, vmax=hi)
    ax[2].set_title("full detector, 180°, c = 245.2")
    for a in ax[1:]:
        a.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "double_fov_neutron.png", dpi=80)
    plt.close(fig)
    logging.getLogger(__name__).warning("double_fov: axis %.2f (full detector %.2f)", c, c + 200)


def figure_sphere(out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tomodl.recon.phase import retrieve_phase
    from tomodl.sim.fresnel import fresnel_intensity, sphere_thickness

    phys = dict(energy=20.0, propagation_distance=50.0, pixel_size=1.0, alpha=1e-2)
    mu_t = 0.4 * sphere_thickness(96, 101, 24.0) / 48
    inten = fresnel_intensity(mu_t, **phys)
    ret = -np.log(retrieve_phase(inten[None], **phys)[0])
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot(mu_t[48], "k", label="truth μT")
    ax.plot(-np.log(inten[48]), label="-log I (fringes)")
    ax.plot(ret[48], "--", label="Paganin")
    ax.legend(fontsize=7)
    ax.set_xlabel("detector column")
    fig.tight_layout()
    fig.savefig(out_dir / "paganin_sphere.png", dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--time", action="store_true")
    p.add_argument("--size", type=int, nargs=3, default=(360, 64, 256))
    p.add_argument("--figures", type=Path)
    a = p.parse_args()
    if a.time:
        t = bench_projection_steps(*a.size)
        print(f"size (n_angles, n_rows, n_det) = {tuple(a.size)}")
        for k, v in t.items():
            print(f"{k:26s} {v:8.3f} s   {v / t['fbp']:6.2f} x FBP")
        t = bench_pipeline(*a.size)
        print("reconstruct_file (FBP, h5):")
        for k, v in t.items():
            print(f"  {k:24s} {v:8.3f} s   {v / t['plain']:6.2f} x plain")
    if a.figures:
        a.figures.mkdir(parents=True, exist_ok=True)
        figure_sphere(a.figures)
        figure_double_fov(a.figures)
        figure_phase(a.figures)


if __name__ == "__main__":
    main()
