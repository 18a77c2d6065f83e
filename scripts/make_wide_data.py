"""Simulate the wider training pairs (issue 13): 2-D texture phantoms that are not foams.

Families trained on: random_phases, grains, dendrites, fine_cracks (tomodl.sim.textures).
Held out of training entirely (never written here): fibre_network and low_contrast.

Each "phantom" (the unit of the split, as one scan is in pairs_mixed.h5) is a group of
``--slices`` independent 2-D textures of one family (256 px, drawn on a 3x finer grid, largest
line integral 1.0-2.5 as in the foam families) with one random detector: flat-field flux
1e3-1e5 counts (log-uniform), detector blur 0-2 px (70 %), ring-causing gain drift 0-3 % (50 %),
zingers at 1e-4 (30 %): the acquisitions of make_training_data.py widened at both ends.
Measured sinograms at the angles of 1 in 4/10/20/40/80/120 of 1200 (slice i of phantom k uses
factor MIXED[(i + k) % 6], as pairs_mixed.h5) come from the fine image (no inverse crime), the
counts of tomodl.sim.acquisition.acquire (float32: no 16-bit saturation at 1e5 counts), then the
same -log(normalize) and FBP stages as ``tomodl recon`` (shepp filter, centre n/2).  Target:
the block mean of the fine image (attenuation per pixel), the ground truth of the foam scans.
Only the angles an input uses are projected (the label does not depend on the angles).
Split per family: 7 train / 1 val / 1 test phantoms of 9 (28/4/4 phantoms as pairs_mixed).

Usage:  python scripts/make_wide_data.py --out-path data     (writes data/pairs_wide.h5)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

TRAIN_FAMILIES = ("random_phases", "grains", "dendrites", "fine_cracks")
HELD_OUT = ("fibre_network", "low_contrast")
MIXED = (4, 10, 20, 40, 80, 120)
N_ANGLES = 1200
UPSAMPLE = 3


def acquisition_for(seed: int):
    """A random detector for phantom group ``seed``, wider than make_training_data.py's."""
    from tomodl.sim.config import Acquisition

    rng = np.random.default_rng([13, seed])
    return Acquisition(flux=float(10 ** rng.uniform(3.0, 5.0)),
                       blur=float(rng.uniform(0.0, 2.0)) if rng.random() < 0.7 else 0.0,
                       ring_strength=float(rng.uniform(0.0, 0.03)) if rng.random() < 0.5 else 0.0,
                       zinger_rate=1e-4 if rng.random() < 0.3 else 0.0, dtype="float32")


def split_of(j: int, per_family: int) -> str:
    """Phantom ``j`` of its family: the last but one is val, the last test, the rest train."""
    return "val" if j == per_family - 2 else "test" if j == per_family - 1 else "train"


def project_batch(fines, factor: int, size: int, chunk: int):
    """Line integrals ``(n, n_angles, size)`` of fine images at every ``factor``-th angle."""
    import torch

    from tomodl.recon.geometry import default_center
    from tomodl.recon.projector import ParallelProjector
    from tomodl.sim.textures import _embedding

    m, r0, c0 = _embedding(size, UPSAMPLE)
    theta = np.pi * np.arange(N_ANGLES)[::factor] / N_ANGLES
    op = ParallelProjector(m, theta, size * UPSAMPLE,
                           UPSAMPLE * default_center(size) + (UPSAMPLE - 1) / 2.0)
    out = []
    for k in range(0, len(fines), chunk):
        pad = torch.zeros((len(fines[k:k + chunk]), m, m))
        for i, f in enumerate(fines[k:k + chunk]):
            pad[i, r0:r0 + size * UPSAMPLE, c0:c0 + size * UPSAMPLE] = torch.from_numpy(f)
        s = op.forward(pad).numpy().astype(np.float64)
        out.extend(s.reshape(s.shape[0], s.shape[1], size, UPSAMPLE).mean(axis=3) / UPSAMPLE)
    return theta, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-path", "--out", dest="out", type=Path, default=Path("data"))
    ap.add_argument("--per-family", type=int, default=9, help="phantom groups per family")
    ap.add_argument("--slices", type=int, default=16, help="2-D phantoms per group")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--chunk", type=int, default=32, help="images projected at once")
    a = ap.parse_args()

    import torch

    from tomodl.recon.config import ReconConfig
    from tomodl.recon.geometry import default_center
    from tomodl.recon.preprocess import minus_log, normalize
    from tomodl.recon.stages import reconstruct_chunk
    from tomodl.sim.acquisition import acquire
    from tomodl.sim.pairs import write_slice_pairs
    from tomodl.sim.textures import downsample, make_texture

    torch.set_num_threads(1)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    center = default_center(a.size)
    groups, fines, where = [], {k: [] for k in MIXED}, {k: [] for k in MIXED}
    for fi, fam in enumerate(TRAIN_FAMILIES):
        for j in range(a.per_family):
            k = len(groups)
            seed = 1000 * fi + j
            rng = np.random.default_rng([13, 1, seed])
            targets = np.empty((a.slices, a.size, a.size), np.float32)
            for i in range(a.slices):
                fine = make_texture(fam, a.size, rng, upsample=UPSAMPLE)
                targets[i] = downsample(fine, UPSAMPLE)
                factor = MIXED[(i + k) % len(MIXED)]
                fines[factor].append(fine)
                where[factor].append((k, i))
            acq = acquisition_for(seed)
            groups.append({"split": split_of(j, a.per_family), "target": targets,
                           "input": np.empty_like(targets),
                           "n_angles": np.zeros(a.slices, np.int64),
                           "info": {"family": fam, "seed": seed, "center": center,
                                    "generator": "tomodl.sim.textures.make_texture",
                                    "acquisition": acq.to_dict()},
                           "acq": acq})
    print(f"textures: {time.perf_counter() - t0:.0f} s")
    cfg = ReconConfig(algorithm="fbp", center=float(center), filter_name="shepp", device="cpu")
    for factor in MIXED:
        theta, sinos = project_batch(fines[factor], factor, a.size, a.chunk)
        fines[factor] = None
        for (k, i), p in zip(where[factor], sinos):
            g = groups[k]
            rng = np.random.default_rng([13, 2, g["info"]["seed"], i])
            proj, flat, dark = acquire(p[:, None, :], g["acq"], rng)
            line = minus_log(normalize(proj, flat, dark))
            g["input"][i] = reconstruct_chunk(line, theta, float(center), cfg)[0]
            g["n_angles"][i] = theta.size
        print(f"factor {factor} ({theta.size} angles, {len(sinos)} slices): "
              f"{time.perf_counter() - t0:.0f} s")
    for g in groups:
        del g["acq"]
    out = write_slice_pairs(a.out / "pairs_wide.h5", groups, sparse=MIXED, seed=13,
                            overwrite=True)
    print(f"{out}: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
