#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Speed and accuracy of tomodl's FBP against peers measured in the same run.

Peers: ASTRA's CPU FBP (``pip install astra-toolbox``), algotom's FBP (``pip install algotom``,
numba on the CPU), scikit-image ``iradon``, and TomoPy gridrec when ``tomopy`` is importable
(it is not on PyPI).  Every method reconstructs the same exact analytic sinograms (ellipse
phantom, :mod:`tomodl.sim.analytic`); the table gives the wall time per slice, the ratio to
tomodl's, and each method's error against the phantom (relative RMS inside the
reconstruction circle, after finding the method's orientation and half-pixel grid offset on
a small case) and its mean in a flat region divided by the true attenuation.

Usage::

    python scripts/bench_fbp.py                 # the four cases of the issue (several minutes)
    python scripts/bench_fbp.py --scale 0.25    # same angles/size ratios at a quarter size
    python scripts/bench_fbp.py --ratios        # gridrec / tomodl intensity ratio per filter
    PYTHONPATH=/opt/tomopy-py python scripts/bench_fbp.py --vs-tomopy   # tomodl vs TomoPy only
    python scripts/bench_fbp.py --breakdown     # tomodl's FBP stages at 2048 x 1500
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import time
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_erosion

from tomodl.recon.fbp import fbp, fbp_plan
from tomodl.recon.geometry import image_coordinates
from tomodl.sim.analytic import ellipse_sinogram, rasterize_ellipses

CASES = [(2048, 75), (2048, 1500), (1024, 36), (1024, 720)]
# Shepp-Logan-like phantom, lengths in units of N, attenuation per pixel (flat body 0.010).
SHAPE = np.array([
    (0.00, 0.00, 0.345, 0.46, 0.0, 0.010), (0.00, -0.009, 0.33, 0.44, 0.0, 0.002),
    (0.11, 0.00, 0.055, 0.155, -0.31, -0.004), (-0.11, 0.00, 0.08, 0.205, 0.31, -0.004),
    (0.00, 0.175, 0.105, 0.125, 0.0, 0.003), (0.00, 0.05, 0.023, 0.023, 0.0, 0.003),
    (-0.04, -0.3, 0.023, 0.012, 0.0, 0.004), (0.03, -0.3, 0.012, 0.023, 0.0, 0.004),
])


def phantom(n):
    return SHAPE * [n, n, n, n, 1, 1]


# ------------------------------------------ methods: (sino (R, A, n), theta, centre) -> (R, n, n)
def tomodl_method(name):
    return lambda s, th, c: fbp(s, th, c, filter_name="shepp", method=name, device="cpu", ncore=2)


def tomodl_reused(name, ncore=2):
    """tomodl as the volume pipeline runs it: the plan built by the first call, then reused."""
    plans = {}

    def run(s, th, c):
        key = (s.shape[2], np.asarray(th).tobytes())
        if key not in plans:
            plans[key] = fbp_plan(s.shape[2], th, filter_name="shepp", method=name,
                                  device="cpu", ncore=ncore)
        return fbp(s, th, c, filter_name="shepp", method=name, device="cpu", ncore=ncore,
                   plan=plans[key])
    return run


def astra_fbp(s, th, c):
    import astra

    n = s.shape[-1]
    vol, geo = astra.create_vol_geom(n, n), astra.create_proj_geom("parallel", 1.0, n, th)
    pid = astra.create_projector("linear", geo, vol)
    out = []
    for row in s:
        sid, rid = astra.data2d.create("-sino", geo, row), astra.data2d.create("-vol", vol)
        cfg = astra.astra_dict("FBP")
        cfg.update(ReconstructionDataId=rid, ProjectionDataId=sid, ProjectorId=pid,
                   option={"FilterType": "shepp-logan"})
        aid = astra.algorithm.create(cfg)
        astra.algorithm.run(aid)
        out.append(astra.data2d.get(rid))
        astra.algorithm.delete(aid)
        astra.data2d.delete([sid, rid])
    astra.projector.delete(pid)
    return np.stack(out)


def algotom_fbp(s, th, c):
    from algotom.rec.reconstruction import fbp_reconstruction

    rec = fbp_reconstruction(np.ascontiguousarray(np.swapaxes(s, 0, 1)), c, angles=th, ratio=None,
                             filter_name=None, apply_log=False, gpu=False, ncore=2)
    return np.moveaxis(rec, 1, 0) if rec.ndim == 3 else rec[None]  # (n, rows, n) -> (rows, n, n)


def skimage_iradon(s, th, c):
    from skimage.transform import iradon

    return np.stack([iradon(r.T, np.rad2deg(th), output_size=r.shape[-1],
                            filter_name="shepp-logan", circle=True) for r in s])


def tomopy_gridrec(s, th, c):
    import tomopy

    return tomopy.recon(s, th, center=c, sinogram_order=True, algorithm="gridrec",
                        filter_name="shepp", ncore=2)


def tomopy_gridrec_padded(s, th, c):
    """gridrec on the detector padded to twice its width (edge values), cropped back to n x n.

    ``tomopy.recon`` itself never pads beyond the next power of two >= n_det (``pdim`` in
    gridrec.c), so at power-of-two widths gridrec's ramp has no zero padding; padding the
    sinogram first (``tomopy.pad``) is the accurate way to call it.
    """
    import tomopy

    n = s.shape[-1]
    p = n // 2
    rec = tomopy.recon(tomopy.pad(s, axis=2, npad=p, mode="edge", ncore=2), th,
                       center=c + p, sinogram_order=True, algorithm="gridrec",
                       filter_name="shepp", ncore=2)
    return rec[:, p:p + n, p:p + n]


def peers():
    found = {"tomodl fourier": tomodl_method("fourier"), "tomodl direct": tomodl_method("direct")}
    for mod, name, fn in (("tomopy", "TomoPy gridrec", tomopy_gridrec),
                          ("tomopy", "TomoPy gridrec, padded 2x", tomopy_gridrec_padded),
                          ("astra", "ASTRA CPU FBP", astra_fbp),
                          ("algotom", "algotom FBP (numba)", algotom_fbp),
                          ("skimage", "scikit-image iradon", skimage_iradon)):
        if importlib.util.find_spec(mod) is not None:
            found[name] = fn
    return found


# ---------------------------------------------------------------- accuracy
def fov(n, frac=0.95):
    x, y = image_coordinates(n)
    return x[None, :] ** 2 + y[:, None] ** 2 < (frac * n / 2) ** 2


def truth_image(n, shift):
    e = phantom(n).copy()
    e[:, 0] += shift[0]
    e[:, 1] += shift[1]
    return rasterize_ellipses(e, n)


def alignment(fn, n=128, n_ang=180):
    """Orientation (k rot90, flip) and half-pixel phantom shift that best match ``fn``'s output."""
    th = np.linspace(0, np.pi, n_ang, endpoint=False)
    rec = fn(ellipse_sinogram(phantom(n), th, n, n / 2)[None].astype(np.float32), th, n / 2)[0]
    mask = fov(n)
    best = (-2.0, None)
    for shift in [(dx, dy) for dx in (-1, -0.5, 0, 0.5, 1) for dy in (-1, -0.5, 0, 0.5, 1)]:
        t = truth_image(n, shift)[mask]
        for k in range(4):
            for flip in (False, True):
                img = orient(rec, (k, flip, shift))
                c = np.corrcoef(img[mask], t)[0, 1]
                best = max(best, (c, (k, flip, shift)), key=lambda b: b[0])
    return best[1]


def orient(img, align):
    k, flip, _ = align
    img = np.rot90(img, k)
    return img[:, ::-1] if flip else img


def errors(rec, n, align):
    truth = truth_image(n, align[2])
    img = orient(rec, align)
    mask = fov(n)
    rms = np.sqrt(np.mean((img - truth)[mask] ** 2) / np.mean(truth[mask] ** 2))
    flat = binary_erosion(np.isclose(truth, 0.012) & mask, iterations=4)
    return float(rms), float(img[flat].mean() / 0.012), float(img[flat].std() / 0.012)


# ---------------------------------------------------------------- timing
def run_case(n, n_ang, methods, aligns, rows):
    th = np.linspace(0, np.pi, n_ang, endpoint=False)
    center = n / 2
    sino = ellipse_sinogram(phantom(n), th, n, center).astype(np.float32)
    results = []
    for name, fn in methods.items():
        if name == "tomodl direct" and n * n * n_ang > 2048 * 2048 * 150:
            continue  # N^2 n_angles gather: minutes per slice at dense angles
        batch = rows if name.startswith(("tomodl fourier", "algotom", "TomoPy")) else 1
        for r in sorted({1, batch}) if name == "tomodl fourier" else [batch]:
            data = np.repeat(sino[None], r, axis=0)
            t0 = time.perf_counter()
            rec = np.asarray(fn(data, th, center))
            per_slice = (time.perf_counter() - t0) / r
            rms, flat, _ = errors(rec[0], n, aligns[name])
            results.append((f"{name} ({r} row{'s' if r > 1 else ''}/call)", per_slice, rms, flat))
    return results


def print_table(n, n_ang, results):
    ref = min(t for name, t, _, _ in results if name.startswith("tomodl fourier"))
    print(f"\n## {n} px x {n_ang} angles (per slice, load {os.getloadavg()[0]:.1f})")
    print("| method | s / slice | x tomodl | rel. RMS error | flat mean / truth |")
    print("|---|---|---|---|---|")
    for name, t, rms, flat in results:
        print(f"| {name} | {t:.3f} | {t / ref:.1f} | {rms:.4f} | {flat:.4f} |")


def best_of(fn, data, th, center, repeats):
    """Best wall time of ``repeats`` calls after one warm-up call, and the last output."""
    rec = np.asarray(fn(data, th, center))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        rec = np.asarray(fn(data, th, center))
        times.append(time.perf_counter() - t0)
    return min(times), rec


def vs_tomopy(scale, rows, repeats):
    """tomodl's FBP and TomoPy's gridrec (plain and padded) on the same rows, same 2 threads."""
    methods = {"tomodl fourier": tomodl_method("fourier"),
               "tomodl fourier, plan reused": tomodl_reused("fourier"),
               "TomoPy gridrec": tomopy_gridrec,
               "TomoPy gridrec, padded 2x": tomopy_gridrec_padded}
    aligns = {name: alignment(fn) for name, fn in methods.items()}
    print("alignment (rot90 k, flip, phantom shift):", aligns)
    for n, n_ang in [(2048, 1500), (1024, 720), (2048, 75), (1024, 36)]:
        n = int(round(n * scale / 2)) * 2
        th = np.linspace(0, np.pi, n_ang, endpoint=False)
        data = np.repeat(ellipse_sinogram(phantom(n), th, n, n / 2).astype(np.float32)[None],
                         rows, axis=0)
        res = {}
        for name, fn in methods.items():
            t, rec = best_of(fn, data, th, n / 2, repeats)
            res[name] = (t / rows, *errors(rec[0], n, aligns[name]))
        ref = res["tomodl fourier"][0]
        print(f"\n#### {n} px x {n_ang} angles, {rows} rows/call, best of {repeats} after a "
              f"warm-up (load {os.getloadavg()[0]:.2f})")
        print("| method | s / slice | tomodl / this | rel. RMS error | flat mean / truth "
              "| flat std / truth |")
        print("|---|---|---|---|---|---|")
        for name, (t, rms, flat, std) in res.items():
            print(f"| {name} | {t:.3f} | {ref / t:.2f} | {rms:.4f} | {flat:.4f} | {std:.4f} |")


def breakdown(n, n_ang, rows, repeats):
    """Where tomodl's dense FBP time goes: plan, filtering, row FFT, spreading, 2-D FFT, crop.

    Stages run as in :func:`tomodl.recon.fbp._reconstruct` (one torch thread per worker);
    per-pair stages are timed on one thread (best of ``repeats``), then the whole call on
    1 and 2 workers.
    """
    import torch

    from tomodl.backend import torch_threads
    from tomodl.recon.fbp import _filtered_windows, make_setup
    from tomodl.recon.nufft import make_plan

    th = np.linspace(0, np.pi, n_ang, endpoint=False)
    sino = torch.as_tensor(np.repeat(ellipse_sinogram(phantom(n), th, n, n / 2)
                                     .astype(np.float32)[None], rows, axis=0))
    cen = torch.full((2,), n / 2, dtype=torch.float64)

    def best(fn):
        out, times = fn(), []
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    t = {}
    with torch.no_grad(), torch_threads(1):
        t["setup (filter table)"], setup = best(lambda: make_setup(n, th, n, "shepp", None, "cpu"))
        for w in (1, 2):
            t[f"plan, {w} worker(s)"], plan = best(lambda w=w: make_plan(
                setup.theta, n, setup.length, setup.x0, "cpu", workers=w))
        t["filter + windows (pair)"], win = best(lambda: _filtered_windows(sino[:2], cen, setup))
        t["row FFT x phase (pair)"], spec = best(lambda: torch.view_as_real(
            torch.fft.fft(torch.complex(win[0], win[1]), dim=-1) * plan.phase).view(-1, 2))
        t["spreading, CSR @ (pair)"], grid = best(lambda: plan.matrix @ spec)
        t["2-D inverse FFT (pair)"], img = best(lambda: torch.fft.ifft2(
            torch.view_as_complex(grid).view(plan.m, plan.m), norm="forward"))
        deapod = plan.deapod_row[:, None] * plan.deapod_col[None, :]
        t["crop + deapodize (pair)"], _ = best(lambda: img[plan.row0:plan.row0 + n,
                                                           plan.col0:plan.col0 + n].real * deapod)
    for w in (1, 2):
        t[f"whole fbp, {rows} rows, {w} worker(s)"], _ = best(
            lambda w=w: fbp(sino.numpy(), th, n / 2, method="fourier", device="cpu", ncore=w))
        reused = tomodl_reused("fourier", w)
        t[f"whole fbp, {rows} rows, {w} worker(s), plan reused"], _ = best(
            lambda f=reused: f(sino.numpy(), th, n / 2))
    print(f"\n#### tomodl fourier, {n} px x {n_ang} angles: L = {setup.length}, "
          f"n_pad = {setup.n_pad}, M = {plan.m}, nnz = {plan.matrix.values().numel():,} "
          f"(load {os.getloadavg()[0]:.2f}, best of {repeats})")
    print("| stage | s |\n|---|---|")
    for name, v in t.items():
        print(f"| {name} | {v:.3f} |")


def gridrec_ratios():
    """gridrec (emulated, validated in tests/test_tomopy_compat.py) / truth and tomodl / truth."""
    path = Path(__file__).resolve().parents[1] / "tests" / "test_tomopy_compat.py"
    spec = importlib.util.spec_from_file_location("tomopy_compat", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from tomodl.recon.filters import FILTERS

    print("| filter | N | gridrec / truth | tomodl / truth | gridrec / tomodl |")
    print("|---|---|---|---|---|")
    for n in (256, 640, 1024):
        th = np.linspace(0, np.pi, n, endpoint=False)
        sino = ellipse_sinogram(phantom(n), th, n, n / 2)[None].astype(np.float32)
        truth = truth_image(n, (0, 0))
        flat = binary_erosion(np.isclose(truth, 0.012) & fov(n), iterations=4)
        for name in FILTERS:
            if not FILTERS[name].ramp:
                continue
            g = mod.gridrec_emulator(sino, th, filter_name=name)[0][flat].mean() / 0.012
            t = fbp(sino, th, filter_name=name)[0][flat].mean() / 0.012
            print(f"| {name} | {n} | {g:.4f} | {t:.4f} | {g / t:.4f} |")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0,
                    help="multiply the image sizes (angles unchanged)")
    ap.add_argument("--rows", type=int, default=8, help="rows per call for the batched methods")
    ap.add_argument("--ratios", action="store_true",
                    help="print the gridrec intensity table and exit")
    ap.add_argument("--vs-tomopy", action="store_true",
                    help="only tomodl against TomoPy gridrec (plain and padded), best of 3")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls for --vs-tomopy")
    ap.add_argument("--breakdown", action="store_true",
                    help="time tomodl's FBP stages at 2048 x 1500 (sizes times --scale)")
    args = ap.parse_args()
    if args.breakdown:
        breakdown(int(round(2048 * args.scale / 2)) * 2, 1500, args.rows, args.repeats)
        return
    if args.vs_tomopy:
        if importlib.util.find_spec("tomopy") is None:
            raise SystemExit("Error: tomopy is not importable; build it with "
                             "scripts/build_tomopy.sh (docs/fbp.md, Benchmarking against TomoPy)")
        print(f"cores: {os.cpu_count()}; load average at start {os.getloadavg()}")
        vs_tomopy(args.scale, args.rows, args.repeats)
        return
    if args.ratios:
        gridrec_ratios()
        return
    methods = peers()
    print(f"methods: {list(methods)}; cores: {os.cpu_count()}; load at start {os.getloadavg()}")
    if "TomoPy gridrec" not in methods:
        print("TomoPy is not importable (not on PyPI): build it with scripts/build_tomopy.sh "
              "and run with PYTHONPATH=/opt/tomopy-py (docs/fbp.md).")
    aligns = {name: alignment(fn) for name, fn in methods.items()}  # also warms up JITs
    print("alignment (rot90 k, flip, phantom shift):", aligns)
    for n, n_ang in CASES:
        n = int(round(n * args.scale / 2)) * 2
        print_table(n, n_ang, run_case(n, n_ang, methods, aligns, args.rows))


if __name__ == "__main__":
    main()
