#!/usr/bin/env python
# SPDX-License-Identifier: BSD-3-Clause
"""End-to-end time of ``tomodl recon`` on a large sparse scan: FBP alone, the default network
and the fast CPU release, per slice and extrapolated to a whole volume (not a test).

A simulated foam scan (default 2048 px, 6 rows, 75 projections over 180 degrees: a 1500-angle
scan subsampled 1 in 20; the rotation axis is given) is reconstructed by the command line, each
method in a fresh process (``python -m tomodl -v recon``), to an HDF5 file.  For each method
the table gives the wall time of the command (start-up, model loading and the chunk loop), the
wall time of the chunk loop and the busy seconds of each stage (read, preprocess, fbp,
denoise, write: the line the volume pipeline logs with ``-v``), then seconds per slice and
the time of a ``--total-slices`` volume: ``start-up + total * loop wall / rows``.

    python scripts/bench_e2e.py                                # ~3 min on 2 busy cores
    python scripts/bench_e2e.py --fast runs/fast/best --slices 4

For volumes of 40 rows or more the default also checks the network on a few rows
(``--check``, 8 rows by default, not timed here: 8 / 2048 of the network time).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("read", "preprocess", "fbp", "denoise", "write")
BUSY = re.compile(r"busy seconds per stage: (?P<parts>.*?); stages sum .*? wall (?P<wall>[\d.]+) s")


def load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def simulate(work: Path, size: int, rows: int, angles: int) -> Path:
    path = work / f"foam_{size}px_{rows}rows_{angles}a.h5"
    if not path.exists():
        subprocess.run([sys.executable, "-m", "tomodl", "simulate", "foam", "--out-path",
                        str(path), "--size", str(size), "--slices", str(rows), "--angles",
                        str(angles), "--seed", "1", "--no-progress"], check=True,
                       capture_output=True)
    return path


def recon(scan: Path, out: Path, center: float, extra: list) -> dict:
    """Run ``tomodl -v recon`` in a fresh process; wall time and the logged busy seconds."""
    cmd = [sys.executable, "-m", "tomodl", "-v", "recon", str(scan), "--rotation-axis",
           str(center), "--save-format", "h5", "--out-path", str(out), "--no-progress",
           "--no-preview", "--overwrite", *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    m = BUSY.search(proc.stderr)
    if m is None:
        sys.exit(f"no busy-seconds line in the log of {' '.join(cmd)}")
    busy = {k: float(v) for k, v in (p.rsplit(" ", 1) for p in m["parts"].split(", "))}
    return {"wall": wall, "loop": float(m["wall"]), "busy": busy}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=2048, help="detector columns = slice size")
    ap.add_argument("--slices", type=int, default=6, help="detector rows simulated")
    ap.add_argument("--angles", type=int, default=75, help="projections (1500 / 20 = 75)")
    ap.add_argument("--total-slices", type=int, default=2048, help="volume to extrapolate to")
    ap.add_argument("--fast", default="resattunet-fast",
                    help="the fast release (a released name or a weights folder)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="keep the scan here (default: a temporary folder, deleted)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        bench(args, work)


def bench(args, work: Path) -> None:
    scan = simulate(work, args.size, args.slices, args.angles)
    print(f"# tomodl recon end to end: {os.cpu_count()} cores, load average at start {load()}; "
          f"{args.size} px, {args.slices} rows, {args.angles} projections; extrapolated to "
          f"{args.total_slices} slices", flush=True)
    methods = [("FBP", ["--algorithm", "fbp"]),
               ("FBP + ResAttUnet (default)", ["--algorithm", "fbp+resattunet"]),
               (f"FBP + {args.fast}", ["--algorithm", "fbp+resattunet", "--model", args.fast])]
    print("| method | command s | loop s | " + " | ".join(f"{s} s" for s in STAGES)
          + f" | s / slice | {args.total_slices} slices (h) |")
    print("|---" * (len(STAGES) + 5) + "|")
    for name, extra in methods:
        r = recon(scan, work / "rec.h5", args.size / 2, extra)
        per = r["loop"] / args.slices
        total = (r["wall"] - r["loop"] + per * args.total_slices) / 3600
        print(f"| {name} | {r['wall']:.1f} | {r['loop']:.1f} | "
              + " | ".join(f"{r['busy'].get(s, 0.0):.1f}" for s in STAGES)
              + f" | {per:.2f} | {total:.2f} |", flush=True)
    print(f"# load average at end {load()}")


if __name__ == "__main__":
    main()
