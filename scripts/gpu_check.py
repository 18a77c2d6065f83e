#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Check and time tomodl's CUDA paths against the CPU, for the day a GPU is there.

On a machine with a CUDA device this script, in under five minutes:

1. runs the GPU-marked tests (``pytest -m gpu tests``) in a subprocess;
2. compares CPU and GPU results:

   * FBP of an exact sinogram of a simulated phantom (``tomodl.recon(..., algorithm="fbp")``,
     256 px, 60 angles), limit 2e-4 of the largest value (as ``tests/test_fbp.py``);
   * denoising of a few sparse-view FBP slices with the shipped weights: GPU float16 and
     bfloat16 autocast against the CPU in float32, limit 5 % of the largest correction the
     network makes (the documented low-precision bound, ``tests/test_inference.py``);
   * one mixed-precision (AMP) training step of a tiny non-residual ResAttUnet (so that its
     output depends on the precision) as the trainer sets it up
     (float16 autocast and a gradient scaler on CUDA), against the same step in float32 on the
     CPU: the loss (limit 1 %) and the unscaled gradients (limit 5 % of the largest);

3. times FBP (4 slices of 2048^2 from 90 projections) and float16 denoising (4 slices of
   2048^2) on the GPU, after a warm-up, with ``torch.cuda.synchronize()`` around each timed
   call, and one slice of each on the CPU for comparison;

and prints one summary table (check, CPU value, GPU value, max abs / rel difference, limit,
pass/fail, CPU and GPU seconds).  Exit code 0 when every check passes, 1 otherwise.

Without a CUDA device (or without torch) it says so in one line and exits 0.

Usage::

    python scripts/gpu_check.py                 # everything
    python scripts/gpu_check.py --no-tests      # skip the pytest run
    python scripts/gpu_check.py --size 1024     # time at 1024^2 instead of 2048^2
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
#: wall-clock limit of the pytest subprocess, seconds
TEST_TIMEOUT = 150
#: 1 in 20 of 1200 angles over 180 degrees (the shipped weights' validated setting)
THETA = np.linspace(0.0, np.pi, 1200, endpoint=False)[::20]
COLUMNS = ("check", "CPU", "GPU", "max abs diff", "max rel diff", "limit", "result", "CPU s",
           "GPU s")


def cuda_status() -> Optional[str]:
    """None when a CUDA device is usable, else the one-line reason."""
    try:
        import torch
    except ImportError:
        return "gpu_check: torch is not installed; no CUDA device to check, nothing done"
    if not torch.cuda.is_available():
        return (f"gpu_check: no CUDA device available (torch {torch.__version__}, CUDA build "
                f"{torch.version.cuda or 'none'}); nothing to check")
    return None


def as_numpy(x) -> np.ndarray:
    """A host float64 copy of a numpy, torch or CuPy array."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    elif hasattr(x, "get"):
        x = x.get()
    return np.asarray(x, dtype=np.float64)


def timed(fn: Callable, cuda: bool = False):
    """``(fn(), seconds)``, synchronizing the GPU before and after when ``cuda``."""
    import torch

    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if cuda:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def row(check, cpu="", gpu="", diff=None, scale=None, limit=None, ok=True, t_cpu=None,
        t_gpu=None) -> List[str]:
    """One table row; ``diff / scale`` is the relative difference compared with ``limit``."""
    rel = None if diff is None or not scale else diff / scale
    if rel is not None and limit is not None:
        ok = ok and bool(rel <= limit)
    def fmt(v):
        return "" if v is None else f"{v:.3g}"

    return [check, str(cpu), str(gpu), fmt(diff), fmt(rel), fmt(limit),
            "pass" if ok else "FAIL", fmt(t_cpu), fmt(t_gpu)]


def run_gpu_tests() -> List[str]:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
           str(REPO / "tests")]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                              timeout=TEST_TIMEOUT)
    except subprocess.TimeoutExpired:
        return row("pytest -m gpu", gpu=f"timed out after {TEST_TIMEOUT} s", ok=False)
    lines = [ln for ln in proc.stdout.splitlines() if re.search(r"passed|failed|error|skipped|"
                                                               r"deselected", ln)]
    summary = lines[-1].strip("= ") if lines else f"exit code {proc.returncode}"
    ok = proc.returncode == 0
    if not ok:
        print(proc.stdout[-3000:], proc.stderr[-2000:], sep="\n", file=sys.stderr)
    return row("pytest -m gpu", gpu=summary, ok=ok, t_gpu=time.perf_counter() - t0)


def sparse_scan(n: int = 256, rows: int = 4, seed: int = 4242):
    """Exact projections of a held-out foam phantom at 1 in 20 of 1200 angles."""
    from tomodl.sim import make_phantom, project

    return project(make_phantom("foam", n, rows, rng=seed), THETA, n, rows)


def check_fbp(proj) -> List[str]:
    import tomodl

    cpu, t_cpu = timed(lambda: tomodl.recon(proj, THETA, algorithm="fbp", device="cpu"))
    tomodl.recon(proj, THETA, algorithm="fbp", device="cuda")           # warm-up
    gpu, t_gpu = timed(lambda: tomodl.recon(proj, THETA, algorithm="fbp", device="cuda"), True)
    cpu, gpu = as_numpy(cpu), as_numpy(gpu)
    return row(f"FBP {proj.shape[-1]}^2 x{proj.shape[1]}", f"max {np.abs(cpu).max():.4g}",
               f"max {np.abs(gpu).max():.4g}", float(np.abs(gpu - cpu).max()),
               float(np.abs(cpu).max()), 2e-4, t_cpu=t_cpu, t_gpu=t_gpu)


def check_denoise(proj) -> List[List[str]]:
    import tomodl
    from tomodl.models.inference import denoise, load_denoiser

    fbp = as_numpy(tomodl.recon(proj, THETA, algorithm="fbp", device="cpu")).astype(np.float32)
    den = load_denoiser("resattunet", None, n_angles=len(THETA))
    ref, t_cpu = timed(lambda: denoise(fbp, den, device="cpu", dtype="float32"))
    scale = float(np.abs(ref - fbp).max())
    rows = []
    for dtype in ("float16", "bfloat16"):
        denoise(fbp, den, device="cuda", dtype=dtype)                     # warm-up
        out, t_gpu = timed(lambda d=dtype: denoise(fbp, den, device="cuda", dtype=d), True)
        rows.append(row(f"denoise {fbp.shape[-1]}^2 x{len(fbp)} {dtype}", "float32",
                        dtype, float(np.abs(out - ref).max()), scale, 0.05,
                        ok=bool(np.isfinite(out).all()), t_cpu=t_cpu, t_gpu=t_gpu))
    return rows


def _train_step(device: str, precision: str, x, y):
    """Loss and unscaled gradients of one trainer step (as tomodl.training.trainer sets it up)."""
    import torch

    from tomodl.training.config import TrainConfig
    from tomodl.training.distributed import DistInfo
    from tomodl.training.trainer import _autocast, _build

    cfg = TrainConfig(data=(), out="unused", arch="resattunet",
                      model_args={"base_filters": 8, "depth": 3, "residual": False},
                      precision=precision, seed=0,
                      device=device)
    parts = _build(cfg, DistInfo(), torch.device(device))
    x, y = x.to(parts.device), y.to(parts.device)
    for _ in range(8):                       # the scaler skips steps whose gradients overflow
        parts.optimizer.zero_grad(set_to_none=True)
        with _autocast(parts):
            pred = parts.net(x)
        loss = torch.nn.functional.mse_loss(pred.float(), y)
        parts.scaler.scale(loss).backward()
        parts.scaler.unscale_(parts.optimizer)
        grads = [p.grad for p in parts.model.parameters()]
        if all(bool(torch.isfinite(g).all()) for g in grads):
            break
        parts.scaler.step(parts.optimizer)   # skipped; lowers the scale
        parts.scaler.update()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    flat = torch.cat([g.detach().float().flatten().cpu() for g in grads])
    return float(loss.detach()), flat.numpy().astype(np.float64)


def check_amp_step() -> List[List[str]]:
    import torch

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 64, 64, generator=gen)
    y = x + 0.1 * torch.rand(4, 1, 64, 64, generator=gen)
    (l_cpu, g_cpu), t_cpu = timed(lambda: _train_step("cpu", "fp32", x, y))
    (l_gpu, g_gpu), t_gpu = timed(lambda: _train_step("cuda", "amp", x, y), True)
    return [row("AMP step: loss", f"{l_cpu:.6g} fp32", f"{l_gpu:.6g} amp", abs(l_gpu - l_cpu),
                abs(l_cpu), 0.01, t_cpu=t_cpu, t_gpu=t_gpu),
            row("AMP step: gradients", "fp32", "fp16 autocast", float(np.abs(g_gpu - g_cpu).max()),
                float(np.abs(g_cpu).max()), 0.05, ok=bool(np.isfinite(g_gpu).all()))]


def time_large(size: int, slices: int = 4) -> List[List[str]]:
    """FBP and float16 denoising at ``size``^2: ``slices`` on the GPU, one on the CPU."""
    import tomodl
    from tomodl.models.inference import denoise, load_denoiser
    from tomodl.sim.analytic import ellipse_sinogram

    theta = np.linspace(0.0, np.pi, 90, endpoint=False)
    disk = np.array([(0.0, 0.0, 0.4 * size, 0.35 * size, 0.2, 0.01),
                     (0.1 * size, 0.0, 0.05 * size, 0.08 * size, 0.0, 0.02)])
    sino = ellipse_sinogram(disk, theta, size, size / 2)
    proj = np.repeat(sino[:, None], slices, axis=1).astype(np.float32)
    _, t_cpu = timed(lambda: tomodl.recon(proj[:, :1], theta, algorithm="fbp", device="cpu"))
    tomodl.recon(proj[:, :1], theta, algorithm="fbp", device="cuda")     # warm-up
    rec, t_gpu = timed(lambda: tomodl.recon(proj, theta, algorithm="fbp", device="cuda"), True)
    rows = [row(f"time FBP {size}^2, 90 angles", "1 slice", f"{slices} slices",
                t_cpu=t_cpu, t_gpu=t_gpu)]
    rec = as_numpy(rec).astype(np.float32)
    den = load_denoiser("resattunet", None, n_angles=len(theta))
    _, t_cpu = timed(lambda: denoise(rec[:1], den, device="cpu"))
    denoise(rec[:1], den, device="cuda", dtype="float16")                 # warm-up
    out, t_gpu = timed(lambda: denoise(rec, den, device="cuda", dtype="float16"), True)
    rows.append(row(f"time denoise {size}^2 fp16", "1 slice (auto dtype)", f"{slices} slices",
                    ok=bool(np.isfinite(out).all()), t_cpu=t_cpu, t_gpu=t_gpu))
    return rows


def print_table(rows: List[List[str]]) -> None:
    widths = [max(len(r[i]) for r in [list(COLUMNS)] + rows) for i in range(len(COLUMNS))]
    for r in [list(COLUMNS), ["-" * w for w in widths]] + rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-tests", action="store_true", help="skip pytest -m gpu")
    ap.add_argument("--size", type=int, default=2048, help="timing slice size (default 2048)")
    a = ap.parse_args(argv)
    reason = cuda_status()
    if reason is not None:
        print(reason)
        return 0
    import torch

    print(f"gpu_check: {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}", flush=True)
    rows: List[List[str]] = []
    if not a.no_tests:
        rows.append(run_gpu_tests())
    proj = sparse_scan()
    for name, step in (("FBP", lambda: [check_fbp(proj)]), ("denoise", lambda: check_denoise(proj)),
                       ("AMP step", check_amp_step), ("timing", lambda: time_large(a.size))):
        try:
            rows.extend(step())
        except Exception as err:  # noqa: BLE001 - a failed check is a row, the others still run
            rows.append(row(name, gpu=f"{type(err).__name__}: {str(err)[:120]}", ok=False))
    print_table(rows)
    failed = sum(r[6] == "FAIL" for r in rows)
    print(f"gpu_check: {len(rows) - failed} of {len(rows)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
