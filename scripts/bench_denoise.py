#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark of slice denoising: speed, FLOP rate, precision and peak memory (not a test).

For each slice size and compute dtype, one fresh subprocess runs ``tomodl.models.inference.denoise``
(warm-up slice, then timed slices) and reports slices per second and its peak RSS above the
baseline taken just before the call.  The network's FLOPs per slice are counted with
``torch.utils.flop_counter``; the achieved GFLOP/s are compared with a plain 64 -> 64 3x3
convolution on a 1024^2 image measured in the same run (same dtype, channels-last).  Also:
a tiled 2048^2 run under a 1 GiB budget (peak RSS vs the budget), the BF16-vs-FP32 difference
on one slice, and an ablation of batch-norm folding and channels-last memory format.

    python scripts/bench_denoise.py                 # ResAttUnet, 1024^2 and 2048^2
    python scripts/bench_denoise.py --arch unet --sizes 512 1024
    python scripts/bench_denoise.py --sizes 2048 --compare '{"stem": 2, "base_filters": 24}'

"batch" is the automatic batch size (25 % of available RAM); "B/pixel" is the peak RSS divided
by the pixels of one batch.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from functools import partial

import numpy as np


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def make_denoiser(arch: str, model_args: str = "{}"):
    """A random ``arch`` network (``model_args``: JSON constructor arguments), non-zero head."""
    import torch

    import tomodl
    from tomodl.models.inference import load_denoiser

    torch.manual_seed(0)
    net = tomodl.create_model(arch, **json.loads(model_args)).eval()
    torch.nn.init.normal_(net.head.weight, std=0.01)  # a non-zero correction, as after training
    return load_denoiser(arch, net)


def test_slices(n: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    disk = (((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (size / 2.5) ** 2) * 0.02
    return (disk + 0.002 * rng.standard_normal((n, size, size))).astype(np.float32)


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def worker(arch: str, size: int, dtype: str, n: int, max_memory, model_args: str = "{}") -> dict:
    """Runs in a fresh process: time ``denoise`` and measure its peak RSS."""
    import torch

    from tomodl.models.inference import denoise, plan_denoise, resolve_dtype

    den = make_denoiser(arch, model_args)
    x = test_slices(n, size)
    cpu = torch.device("cpu")
    plan = plan_denoise(den.module, x.shape, cpu, resolve_dtype(dtype, cpu), max_memory=max_memory)
    denoise(x[:1], den, dtype=dtype, max_memory=max_memory)  # warm-up: oneDNN primitives
    base = rss()
    t0 = time.perf_counter()
    y = denoise(x, den, dtype=dtype, max_memory=max_memory)
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    np.save(f"/tmp/bench_denoise_{os.getppid()}_{size}_{dtype}_{max_memory}.npy", y[0])
    return {"s_per_slice": dt / n, "peak_rss": peak - base, "batch": plan.batch,
            "tile": plan.tile, "budget": plan.budget}


def run_worker(args, size, dtype, n, max_memory=None, model_args: str = "{}") -> dict:
    cmd = [sys.executable, __file__, "--worker", args.arch, str(size), dtype, str(n),
           str(max_memory), model_args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def flops_per_pixel(arch: str, model_args: str = "{}") -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    net = make_denoiser(arch, model_args).module
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        net(torch.zeros(1, 1, 256, 256))
    return fc.get_total_flops() / 256**2


def timeit(f, repeats=3) -> float:
    f()
    t0 = time.perf_counter()
    for _ in range(repeats):
        f()
    return (time.perf_counter() - t0) / repeats


def conv_gflops(dtype: str) -> float:
    """GFLOP/s of a plain 64 -> 64 3x3 convolution on 1 x 64 x 1024 x 1024, channels-last."""
    import torch

    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).eval()
    conv = conv.to(memory_format=torch.channels_last)
    x = torch.randn(1, 64, 1024, 1024).contiguous(memory_format=torch.channels_last)
    low = getattr(torch, dtype)
    with torch.inference_mode(), torch.autocast("cpu", dtype=low, enabled=dtype != "float32"):
        t = timeit(lambda: conv(x))
    return 2 * 64 * 64 * 9 * 1024**2 / t / 1e9


def ablation(arch: str, size: int = 1024) -> list:
    """Seconds per slice with/without batch-norm folding and channels-last, FP32 and BF16."""
    import copy

    import torch

    from tomodl.models.inference import fuse_batchnorm

    net = make_denoiser(arch).module
    x = torch.randn(1, 1, size, size)
    rows = []
    for fused in (False, True):
        base = fuse_batchnorm(net) if fused else copy.deepcopy(net)
        for cl in (False, True):
            n2 = base.to(memory_format=torch.channels_last) if cl else base
            xi = x.contiguous(memory_format=torch.channels_last) if cl else x
            for dtype in ("float32", "bfloat16"):
                with torch.inference_mode(), torch.autocast(
                    "cpu", dtype=getattr(torch, dtype), enabled=dtype != "float32"
                ):
                    rows.append((fused, cl, dtype, timeit(partial(n2, xi), repeats=1)))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resattunet")
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048])
    p.add_argument("--no-ablation", action="store_true")
    p.add_argument("--compare", nargs="+", metavar="JSON",
                   help="only compare the speed of these model_args (JSON, e.g. "
                   "'{\"base_filters\": 16}') with the default, side by side, in --dtype")
    p.add_argument("--dtype", default="bfloat16", help="compute dtype of --compare")
    p.add_argument("--slices", type=int, default=2, help="timed slices per --compare run")
    p.add_argument("--rounds", type=int, default=2, help="--compare rounds (fastest kept)")
    p.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        arch, size, dtype, n, mm, margs = args.worker
        res = worker(arch, int(size), dtype, int(n), None if mm == "None" else int(mm), margs)
        print(json.dumps(res))
        return
    if args.compare:
        compare(args)
        return
    import torch

    from tomodl.models.inference import cpu_has_native_bf16

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, native BF16: "
          f"{cpu_has_native_bf16()}, load average at start: {load()}")
    fpp = flops_per_pixel(args.arch)
    conv = {d: conv_gflops(d) for d in ("float32", "bfloat16")}
    print(f"{args.arch}: {fpp / 1e3:.1f} kFLOP per pixel; plain conv: "
          f"{conv['float32']:.0f} GFLOP/s FP32, {conv['bfloat16']:.0f} GFLOP/s BF16\n")
    print(f"{'size':>6} {'dtype':>9} {'GFLOP/slice':>11} {'slices/s':>9} {'GFLOP/s':>8} "
          f"{'% of conv':>9} {'batch':>5} {'peak RSS MB':>11} {'B/pixel':>8}")
    speed = {}
    for size in args.sizes:
        for dtype in ("float32", "bfloat16"):
            r = run_worker(args, size, dtype, n=3 if size <= 1024 else 2)
            gf = fpp * size**2 / 1e9
            speed[size, dtype] = r["s_per_slice"]
            rate = gf / r["s_per_slice"]
            mb = r["peak_rss"] / 2**20
            print(f"{size:>6} {dtype:>9} {gf:>11.0f} {1 / r['s_per_slice']:>9.3f} {rate:>8.0f} "
                  f"{100 * rate / conv[dtype]:>8.0f}% {r['batch']:>5} {mb:>11.0f} "
                  f"{r['peak_rss'] / size**2 / r['batch']:>8.0f}")
        gain = speed[size, "float32"] / speed[size, "bfloat16"]
        print(f"{'':>6} BF16 speed-up over FP32: {gain:.2f}x")
    report_precision_and_tiling(args, speed)
    if not args.no_ablation:
        print("\nablation, one 1024^2 slice (s): fused-BN channels-last dtype")
        for fused, cl, dtype, t in ablation(args.arch):
            print(f"  fused={fused!s:5} channels_last={cl!s:5} {dtype:>9}: {t:.2f}")
    print(f"\nload average at end: {load()}")


def compare(args) -> None:
    """Seconds per slice of the default ``arch`` and of each ``--compare`` variant, each in a
    fresh subprocess (one warm-up slice, then ``--slices`` timed), in one run: ``--rounds``
    rounds that take the variants in turn (so a change of load hits all of them), the fastest
    round of each reported."""
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.dtype}, "
          f"load average at start: {load()}")
    variants = ["{}"] + args.compare
    best = {}
    for r in range(args.rounds):
        for margs in variants:
            for size in args.sizes:
                t = run_worker(args, size, args.dtype, args.slices,
                               model_args=margs)["s_per_slice"]
                best[margs, size] = min(t, best.get((margs, size), float("inf")))
                print(f"# round {r + 1}: {margs} {size}^2 {t:.2f} s/slice, load {load()}",
                      flush=True)
    print(f"{'model_args':>40} {'kFLOP/px':>9} {'size':>5} {'s/slice':>8} {'GFLOP/s':>8} "
          f"{'speed-up':>8}")
    for margs in variants:
        fpp = flops_per_pixel(args.arch, margs)
        for size in args.sizes:
            t = best[margs, size]
            print(f"{margs:>40} {fpp / 1e3:>9.1f} {size:>5} {t:>8.2f} "
                  f"{fpp * size**2 / t / 1e9:>8.0f} {best['{}', size] / t:>7.2f}x")
    print(f"load average at end: {load()}")


def report_precision_and_tiling(args, speed) -> None:
    size = max(args.sizes)
    pid = os.getpid()
    f32 = np.load(f"/tmp/bench_denoise_{pid}_{size}_float32_None.npy")
    b16 = np.load(f"/tmp/bench_denoise_{pid}_{size}_bfloat16_None.npy")
    x = test_slices(1, size)[0]
    rng = float(np.ptp(f32))
    diff = np.abs(b16 - f32).max()
    print(f"\nBF16 vs FP32 at {size}^2: max |diff| = {diff / rng:.2e} of the image range, "
          f"{diff / np.abs(f32 - x).max():.2%} of the largest correction")
    budget = 2**30
    r = run_worker(args, size, "float32", n=1, max_memory=budget)
    tiled = np.load(f"/tmp/bench_denoise_{pid}_{size}_float32_{budget}.npy")
    print(f"tiled FP32 at {size}^2 under a {budget / 2**20:.0f} MB budget ({r['tile']}-pixel "
          f"tiles + overlap): peak RSS "
          f"{r['peak_rss'] / 2**20:.0f} MB, {r['s_per_slice']:.1f} s/slice "
          f"({r['s_per_slice'] / speed[size, 'float32']:.2f}x whole), max |tiled - whole| = "
          f"{np.abs(tiled - f32).max() / rng:.1e} of the range")
    for name in os.listdir("/tmp"):
        if name.startswith(f"bench_denoise_{pid}_"):
            os.remove(os.path.join("/tmp", name))


if __name__ == "__main__":
    main()
