#!/usr/bin/env python
"""Benchmark of the forward projector (:mod:`tomodl.recon.projector`): accuracy and speed,
optionally against another version of the module.

Accuracy: relative L2 of ``forward(rasterize_ellipses(...))`` against the exact detector-pixel
averages (``ellipse_sinogram``) of the phantom of ``tests/test_projector.py`` (37 angles,
n = 33 / 65 / 129), and per angle for a disk (n = 129, radius 40.3 px, 16x supersampled)
against its exact chord lengths: the 45-degree ripple of a pixel-driven linear-interpolation
kernel shows there.

Speed: one forward and one adjoint of a ``(8, 256, 256)`` stack at 90 angles and a
``(2, 512, 512)`` stack at 180 angles, both backends, float32, one torch thread: the first call
(sparse: it builds the CSR matrices; grid: it computes, and caches when they fit, the footprint
weights) and the best of ``--repeat`` forward and adjoint calls after it.

``--old FILE`` loads another projector module (e.g. ``git show <rev>:tomodl/recon/projector.py
> /tmp/old_projector.py``) and prints both, with new/old ratios.  From the repository root:

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python scripts/bench_projector.py \
        --old /tmp/old_projector.py
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import numpy as np

from tomodl.recon.geometry import image_coordinates
from tomodl.recon.projector import ParallelProjector
from tomodl.sim.analytic import ellipse_sinogram, rasterize_ellipses

# the phantom of tests/test_projector.py: (x0, y0, a, b, phi, value), x0..b in units of n
SHAPE = np.array([
    (0.00, 0.00, 0.40, 0.30, 0.3, 0.010),
    (0.09, -0.06, 0.11, 0.06, 0.0, 0.020),
    (-0.15, 0.12, 0.06, 0.08, 0.0, -0.005),
    (0.18, 0.15, 0.05, 0.03, 0.5, 0.030),
])
DEGREES = (0, 10, 30, 44, 45, 46, 60, 90, 135)


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def load(path):
    spec = importlib.util.spec_from_file_location("projector_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ParallelProjector


def accuracy(kernels):
    import torch

    theta = np.linspace(0.0, np.pi, 37, endpoint=False)
    print("phantom of tests/test_projector.py, 37 angles: relative L2 (%) vs exact")
    for n, center in ((33, 16.5), (33, 15.2), (65, 31.7), (129, 64.5)):
        phantom = SHAPE * [n, n, n, n, 1, 1]
        img = rasterize_ellipses(phantom, n, supersample=8)
        exact = ellipse_sinogram(phantom, theta, n, center)
        errs = [rel(P(n, theta, n, center, dtype=torch.float64).forward(img).numpy(), exact)
                for P in kernels.values()]
        print(f"  n = {n:3d}, centre {center:5.1f}: "
              + "  ".join(f"{k} {100 * e:.2f}" for k, e in zip(kernels, errs)))
    n, radius, sub = 129, 40.3, 16
    off = (np.arange(sub) + 0.5) / sub - 0.5
    xs, ys = image_coordinates(n)
    gx = (xs[:, None] + off[None, :]).reshape(-1)[None, :]
    gy = (ys[:, None] - off[None, :]).reshape(-1)[:, None]
    img = ((gx ** 2 + gy ** 2) < radius ** 2).reshape(n, sub, n, sub).mean((1, 3))
    c0 = (n - 1) / 2.0
    t = np.arange(n) - c0
    chord = 2.0 * np.sqrt(np.clip(radius ** 2 - t ** 2, 0.0, None))
    th = np.deg2rad(np.array(DEGREES, dtype=np.float64))
    print(f"disk n = {n}, radius {radius} px, per angle: relative L2 (%) vs exact chords")
    print("  degrees " + "".join(f"{d:7d}" for d in DEGREES))
    for name, P in kernels.items():
        sino = P(n, th, n, c0, dtype=torch.float64).forward(img).numpy()
        print(f"  {name:7s} " + "".join(f"{100 * rel(sino[i], chord):7.2f}"
                                        for i in range(len(DEGREES))))


def speed(kernels, repeat: int):
    import torch

    rng = np.random.default_rng(0)
    for batch, n, n_ang in ((8, 256, 90), (2, 512, 180)):
        theta = np.linspace(0.0, np.pi, n_ang, endpoint=False)
        x = torch.as_tensor(rng.standard_normal((batch, n, n)), dtype=torch.float32)
        s = torch.as_tensor(rng.standard_normal((batch, n_ang, n)), dtype=torch.float32)
        for backend in ("sparse", "grid"):
            got = {}
            for name, P in kernels.items():
                proj = P(n, theta, n, backend=backend)
                t0 = time.perf_counter()
                proj.forward(x[:1])
                first = time.perf_counter() - t0
                fwd, adj = [], []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    proj.forward(x)
                    t1 = time.perf_counter()
                    proj.adjoint(s)
                    fwd.append(t1 - t0)
                    adj.append(time.perf_counter() - t1)
                got[name] = (first, min(fwd), min(adj))
                print(f"({batch}, {n}, {n}) x {n_ang} angles, {backend:6s} {name:4s}: first call "
                      f"{first:6.2f} s, forward {min(fwd):5.2f} s, adjoint {min(adj):5.2f} s",
                      flush=True)
            if len(got) == 2:
                (f_o, a_o, b_o), (f_n, a_n, b_n) = got.values()
                print(f"    new/old: first call {f_n / f_o:.2f}, forward {a_n / a_o:.2f}, "
                      f"adjoint {b_n / b_o:.2f}, forward + adjoint "
                      f"{(a_n + b_n) / (a_o + b_o):.2f}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", help="another projector module to compare with (a .py file)")
    ap.add_argument("--repeat", type=int, default=3, help="timed calls (best kept)")
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    kernels = {"old": load(args.old)} if args.old else {}
    kernels["new"] = ParallelProjector
    accuracy(kernels)
    if not args.skip_speed:
        speed(kernels, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
