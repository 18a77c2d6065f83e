#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""Benchmark of whole-volume reconstruction (``tomodl recon`` on a scan file); not a test.

For simulated scans (default 512 px, 256 and 1024 slices, 75 angles = 1 in 20 of 1500) it runs
each configuration in a fresh Python process and prints one table:

- wall time of the chunk loop against the sum of the busy seconds of the stages (read,
  preprocess, fbp, denoise, write) and against the slowest stage: ``wall / slowest`` near 1
  means reading, pre-processing and writing are hidden behind the computation (target <= 1.15);
  the sequential run (``queue_depth=0``) is the peer;
- peak RSS of the process (``ru_maxrss``) for a volume and one 4x longer with the same chunk
  size (target: within 10 %), next to the pipeline's own estimate of the data in flight;
- FBP alone and FBP + ResAttUnet (randomly initialised weights saved with
  ``tomodl.models.weights.save_weights``: no trained weights ship yet; the speed is that of
  trained ones), and 1 vs 2 local Dask workers;
- how far the GIL lets an h5py read overlap a torch FBP in two threads.

Usage::

    python scripts/bench_volume.py                       # the full benchmark (~10 min, 2 cores)
    python scripts/bench_volume.py --size 128 --slices 32,128 --dl-slices 8,32   # quick look
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def rss_mib() -> float:
    """Current resident set size of this process, MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(spec: dict) -> None:
    """Run one reconstruction (in a fresh process) and print a JSON line of measurements."""
    import h5py  # noqa: F401 - the modules a run imports, loaded before the baseline RSS
    import torch  # noqa: F401
    import tqdm  # noqa: F401

    import tomodl.io  # noqa: F401
    import tomodl.recon.center  # noqa: F401
    import tomodl.recon.fbp  # noqa: F401
    from tomodl.recon.pipeline import ReconConfig, reconstruct_file

    base = rss_mib()
    cfg = ReconConfig(progress=False, overwrite=True, resume=False, **spec["cfg"])
    res = reconstruct_file(spec["scan"], cfg)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"wall": res.pipeline_seconds, "total": res.seconds, "stages": res.stages,
                      "rows": res.chunk_rows, "n": res.n_slices, "base": base, "peak": peak,
                      "children_peak": kids, "estimate": res.memory_estimate / 2**20}))


def run_child(scan: Path, out: Path, **cfg) -> dict:
    spec = {"scan": str(scan), "cfg": dict(cfg, out_path=str(out))}
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"child failed: {proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def simulate(work: Path, size: int, slices: int, angles: int) -> Path:
    path = work / f"foam_{size}px_{slices}sl_{angles}a.h5"
    if not path.exists():
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tomodl", "simulate", "foam", "--out-path",
                        str(path), "--size", str(size), "--slices", str(slices), "--angles",
                        str(angles), "--seed", "1", "--no-progress"], check=True,
                       capture_output=True)
        print(f"# simulated {path.name} in {time.perf_counter() - t:.0f} s", flush=True)
    return path


def random_weights(work: Path, sparse: int) -> Path:
    from tomodl.models.registry import create_model
    from tomodl.models.weights import save_weights

    folder = work / "resattunet_random"
    if not (folder / "model.safetensors").exists():
        import torch

        torch.manual_seed(0)
        save_weights(create_model("resattunet"), folder, arch="resattunet", model_args={},
                     filter_name="shepp", sparse_factor=sparse,
                     training_data="none: random initialisation, for timing only")
    return folder


def gil_overlap(scan: Path, rows: int) -> dict:
    """How much the GIL lets the conveyor's stages overlap with an FBP in another thread.

    For 8 chunks: seconds of the FBP alone (1 torch thread), of reading them (``read_dx``:
    h5py) or pre-processing them (numpy) repeated to last about as long, and of each pair run
    in two threads.  ``overlap`` = (a + b - both) / min(a, b): 1 = fully parallel, 0 = one
    after the other, < 0 = slower than one after the other.
    """
    import numpy as np

    from tomodl.io import scan_info
    from tomodl.recon.fbp import fbp
    from tomodl.recon.pipeline import load_chunk, preprocess_chunk

    info = scan_info(scan)
    chunks = [(r, r + rows) for r in range(0, min(info.n_rows, 8 * rows), rows)]
    raw = [load_chunk(scan, c) for c in chunks]
    data = [preprocess_chunk(r, scan) for r in raw]

    def computing():
        for p in data:
            fbp(np.swapaxes(p, 0, 1), raw[0].theta, info.n_det / 2, ncore=1)

    def timed(*funcs):
        t = time.perf_counter()
        threads = [threading.Thread(target=f) for f in funcs]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        return time.perf_counter() - t

    stages = {"read": lambda: [load_chunk(scan, c) for c in chunks],
              "preprocess": lambda: [preprocess_chunk(r, scan) for r in raw]}
    computing()                                         # warm-up (plans, page cache)
    t_fbp = timed(computing)
    out = {"fbp": t_fbp}
    for name, once in stages.items():
        reps = max(1, round(t_fbp / timed(once)))

        def repeated(once=once, reps=reps):
            for _ in range(reps):
                once()

        t, both = timed(repeated), timed(repeated, computing)
        out[name] = {"alone": t, "both": both, "reps": reps,
                     "overlap": (t + t_fbp - both) / min(t, t_fbp)}
    return out


def row(name: str, r: dict) -> str:
    st = {k: v for k, v in r["stages"].items() if k != "cluster"}
    slowest = max(st, key=st.get)
    total = sum(st.values())
    return (f"| {name} | {r['n']} | {r['rows']} | {r['wall']:.1f} | {r['n'] / r['wall']:.1f} | "
            f"{total:.1f} | {slowest} {st[slowest]:.1f} | {r['wall'] / st[slowest]:.2f} | "
            f"{r['wall'] / total:.2f} | {r['peak']:.0f} | {r['peak'] - r['base']:.0f} | "
            f"{r['estimate']:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=512, help="detector columns = slice size (px)")
    ap.add_argument("--slices", default="256,1024", help="two volume lengths (rows)")
    ap.add_argument("--angles", type=int, default=75, help="projections (1500 / 20 = 75)")
    ap.add_argument("--nsino", type=int, default=32, help="rows per chunk (all runs)")
    ap.add_argument("--dl-slices", default="64,256",
                    help="volume lengths for FBP+ResAttUnet (slower; '' to skip)")
    ap.add_argument("--dl-dtype", default="bfloat16", help="denoiser compute dtype")
    ap.add_argument("--workers", default="1,2", help="Dask worker counts ('' to skip)")
    ap.add_argument("--dask-slices", type=int, default=None,
                    help="volume length of the Dask runs (default: the longer one)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep scans here (default: a temporary folder, deleted)")
    args = ap.parse_args()
    if args.child:
        return child(json.loads(args.child))
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bench(args, work)


def bench(args, work: Path) -> None:
    small, big = (int(s) for s in args.slices.split(","))
    dl = [int(s) for s in args.dl_slices.split(",") if s]
    print(f"# tomodl bench_volume: {os.cpu_count()} cores, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.size} px, {args.angles} "
          f"angles, chunks of {args.nsino} rows", flush=True)
    n_dask = args.dask_slices or big
    scans = {n: simulate(work, args.size, n, args.angles)
             for n in sorted({small, big, n_dask, *dl})}
    center = args.size / 2
    base = {"algorithm": "fbp", "center": center, "nsino_per_chunk": args.nsino,
            "save_format": "h5"}
    runs = [("FBP, conveyor", scans[small], dict(base)),
            ("FBP, sequential (peer)", scans[small], dict(base, queue_depth=0)),
            ("FBP, conveyor", scans[big], dict(base))]
    weights = random_weights(work, 20) if dl else None
    for n in dl:
        runs.append(("FBP+ResAttUnet (random weights)", scans[n],
                     dict(base, algorithm="fbp+resattunet", model=str(weights),
                          dtype=args.dl_dtype)))
    for w in [int(x) for x in args.workers.split(",") if x]:
        runs.append((f"FBP, Dask {w} worker{'s' * (w > 1)}*", scans[n_dask],
                     dict(base, workers=w)))
    print("| run | slices | chunk | wall s | slices/s | stages sum s | slowest s | "
          "wall/slowest | wall/sum | peak RSS MiB | peak - base | estimate MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    results = []
    for name, scan, cfg in runs:
        r = run_child(scan, work / "out.h5", **cfg)
        results.append((name, r))
        print(row(name, r), flush=True)
    dask = [(n, r) for n, r in results if "cluster" in r["stages"]]
    if dask:
        print("\\* Dask: the wall time includes starting the cluster (" + ", ".join(
            f"{r['stages']['cluster']:.1f} s" for _, r in dask) + ") and importing torch in the "
            "workers, the stage seconds are summed over the workers, and the peak RSS is the "
            "driver's (workers: " + ", ".join(f"{r['children_peak']:.0f} MiB" for _, r in dask)
            + ").")
    fbp_small, fbp_big = results[0][1], results[2][1]
    print(f"\npeak RSS {big} vs {small} slices (FBP): {fbp_big['peak']:.0f} vs "
          f"{fbp_small['peak']:.0f} MiB, ratio {fbp_big['peak'] / fbp_small['peak']:.3f}")
    if len(dl) == 2:
        a, b = results[3][1], results[4][1]
        print(f"peak RSS {dl[1]} vs {dl[0]} slices (FBP+ResAttUnet): {b['peak']:.0f} vs "
              f"{a['peak']:.0f} MiB, ratio {b['peak'] / a['peak']:.3f}")
    g = gil_overlap(scans[small], args.nsino)
    for name, what in (("read", "read_dx, h5py"), ("preprocess", "normalize + -log, numpy")):
        r = g[name]
        print(f"GIL: FBP of 8 chunks (1 torch thread) {g['fbp']:.2f} s; {name} ({what}) x"
              f"{r['reps']} {r['alone']:.2f} s; both in two threads {r['both']:.2f} s: overlap "
              f"{r['overlap']:.0%} (100 % parallel, 0 % one after the other)")
    print(f"# load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
