"""Simulate the training and held-out data behind the shipped weights (docs/results.md).

Scans: six phantom families in turn (foam, mixed, cracked, layered, fibres, foam_intense), 256 px,
1200 angles over 180 degrees, each with its own detector drawn at random (seeded): flat-field
flux 3e3-1e5 counts, detector blur 0-1.2 px, ring-causing gain drift 0-1 %, occasional zingers.
Real scans differ from the phantoms in every way, so the training set spans the detectors we
know of rather than one of them.

Pairs written to OUT:
  pairs_x20.h5     training scans at 1 in 20 angles (60): the paper's setting, Table 1
  pairs_mixed.h5   the same scans, slices interleaved over 1 in 4, 10, 20, 40, 80 and 120
                   (300, 120, 60, 30, 15 and 10 angles): one network for every sampling
  heldout_xK.h5    K in 2 4 10 20 40 80 120: scans of phantoms never used in training (other
                   seeds), all in /test

Usage:  python scripts/make_training_data.py --out-path data   (about 6 minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

FAMILIES = ("foam", "mixed", "cracked", "layered", "fibres", "foam_intense")
MIXED = (4, 10, 20, 40, 80, 120)
#: held-out factors: the trained ones and 1 in 2 (600 angles, denser than any training input)
HELDOUT = (2,) + MIXED


def acquisition_for(seed: int):
    """A random detector for scan ``seed`` (its own stream, so scans are reproducible)."""
    from tomodl.sim.config import Acquisition

    rng = np.random.default_rng([7, seed])
    return Acquisition(flux=float(10 ** rng.uniform(3.5, 5.0)),
                       blur=float(rng.uniform(0.0, 1.2)) if rng.random() < 0.7 else 0.0,
                       ring_strength=float(rng.uniform(0.0, 0.01)) if rng.random() < 0.5 else 0.0,
                       zinger_rate=1e-4 if rng.random() < 0.3 else 0.0)


def one_scan(job) -> str:
    from tomodl.sim.config import ScanGeometry
    from tomodl.sim.scan import simulate_scan

    path, seed, slices, size, angles = job
    if not Path(path).exists():
        simulate_scan(path, FAMILIES[seed % len(FAMILIES)], seed=seed,
                      geometry=ScanGeometry(n_det=size, n_rows=slices, n_angles=angles),
                      acquisition=acquisition_for(seed))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-path", "--out", dest="out", type=Path, default=Path("data"))
    ap.add_argument("--train-scans", type=int, default=36)
    ap.add_argument("--heldout-scans", type=int, default=12)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--angles", type=int, default=1200)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()

    import torch

    from tomodl.sim.pairs import make_pairs

    torch.set_num_threads(1)
    (a.out / "scans").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train = [(str(a.out / "scans" / f"s{s:03d}.h5"), s, a.slices, a.size, a.angles)
             for s in range(a.train_scans)]
    held = [(str(a.out / "scans" / f"h{s:04d}.h5"), s, max(a.slices // 2, 1), a.size, a.angles)
            for s in range(1000, 1000 + a.heldout_scans)]
    with ProcessPoolExecutor(a.workers) as ex:
        train_paths = list(ex.map(one_scan, train))
        held_paths = list(ex.map(one_scan, held))
    print(f"scans: {time.perf_counter() - t0:.0f} s")
    jobs = [(train_paths, a.out / "pairs_x20.h5", [20], (0.8, 0.1, 0.1)),
            (train_paths, a.out / "pairs_mixed.h5", list(MIXED), (0.8, 0.1, 0.1))]
    jobs += [(held_paths, a.out / f"heldout_x{k}.h5", [k], (0, 0, 1)) for k in HELDOUT]
    for scans, out, sparse, frac in jobs:
        make_pairs(scans, out, sparse=sparse, fractions=frac, overwrite=True, device="cpu")
        print(f"{out}: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
