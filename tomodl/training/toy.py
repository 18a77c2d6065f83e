# SPDX-License-Identifier: BSD-3-Clause
"""A toy pairs file in the ``tomodl simulate pairs`` format, for tests, docs and profiling.

The targets are smooth random images (a few Gaussian blobs and discs inside the reconstruction
circle, attenuation about 0.01 per pixel); the inputs add streak-like perturbations (plane
waves at a few random angles, as sparse-view FBP produces) and a little noise.  It takes
milliseconds to make, so a training run can be tested without simulating projections.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Tuple

import h5py
import numpy as np

from tomodl.normalization import Policy


def toy_pair(size: Tuple[int, int], rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """One ``(input, target)`` pair of shape ``size``, float32, attenuation per pixel."""
    h, w = size
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    yy, xx = (yy - (h - 1) / 2) / (h / 2), (xx - (w - 1) / 2) / (w / 2)
    r2 = xx**2 + yy**2
    target = np.where(r2 < 0.8, 0.01, 0.0).astype(np.float32)
    for _ in range(rng.integers(3, 7)):
        cy, cx = rng.uniform(-0.5, 0.5, 2)
        s = rng.uniform(0.05, 0.25)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        target += rng.uniform(-0.006, 0.01) * blob.astype(np.float32)
    streaks = np.zeros_like(target)
    for _ in range(rng.integers(2, 5)):
        t = rng.uniform(0, np.pi)
        f = rng.uniform(4, 10)
        streaks += np.cos(np.pi * f * (xx * np.cos(t) + yy * np.sin(t)) + rng.uniform(0, 6.3))
    inp = target + 0.002 * streaks * (r2 < 1.0) + rng.normal(0, 2e-4, target.shape)
    return inp.astype(np.float32), target.astype(np.float32)


def write_toy_pairs(path: Path, *, counts: Dict[str, int] = None, size: Tuple[int, int] = (32, 32),
                    seed: int = 0) -> Path:
    """Write a toy pairs file with ``counts`` slices per split (default train 8, val 4, test 4).

    Each slice gets its own phantom id, so the splits are disjoint by phantom as in real pairs.
    """
    counts = counts or {"train": 8, "val": 4, "test": 4}
    rng = np.random.default_rng(seed)
    meta = {"sparse_factor": 20, "filter_name": "shepp", "normalization": Policy().to_dict(),
            "seed": seed, "source": "tomodl.training.toy"}
    pid = 0
    with h5py.File(path, "w") as f:
        f.attrs["metadata"] = json.dumps(meta)
        for split, n in counts.items():
            pairs = [toy_pair(size, rng) for _ in range(n)]
            g = f.create_group(split)
            g["input"] = np.stack([p[0] for p in pairs])
            g["target"] = np.stack([p[1] for p in pairs])
            g["phantom"] = np.arange(pid, pid + n, dtype=np.int64)
            pid += n
    return Path(path)
