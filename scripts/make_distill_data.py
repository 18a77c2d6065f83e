#!/usr/bin/env python
"""Distillation pairs (issue 15): the training targets replaced by a teacher network's output.

For each pairs file, writes ``<out>/<name>_distill.h5``: the same file, with the ``train``
split's ``target`` replaced by the teacher's denoised input (``tomodl.models.inference.denoise``,
attenuation units, float32 compute); ``val`` and ``test`` keep the ground truth, so the
validation loss of a student trained on these files is measured against the truth, comparable
with runs trained on the originals.  A student trained on them learns the teacher's mapping,
which is a deterministic function of the input (no irreducible noise in the targets).

Usage::

    python scripts/make_distill_data.py data/pairs_mixed.h5 data/pairs_wide.h5 --out-path data
    tomodl train configs/fast.toml --set 'data=["data/pairs_mixed_distill.h5", \\
        "data/pairs_wide_distill.h5"]'
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pairs", type=Path, nargs="+", help="pairs files (tomodl simulate pairs)")
    ap.add_argument("--out-path", type=Path, required=True)
    ap.add_argument("--teacher", default="resattunet",
                    help="ResAttUnet release name or weights folder")
    ap.add_argument("--chunk", type=int, default=32, help="slices per denoise call")
    a = ap.parse_args()

    import h5py

    from tomodl.models.inference import denoise, load_denoiser

    den = load_denoiser("resattunet", a.teacher)
    a.out_path.mkdir(parents=True, exist_ok=True)
    for src in a.pairs:
        dst = a.out_path / f"{src.stem}_distill.h5"
        tmp = dst.with_suffix(".h5.part")
        shutil.copyfile(src, tmp)
        t0 = time.perf_counter()
        with h5py.File(tmp, "r+") as f:
            inputs, targets = f["train/input"], f["train/target"]
            n = inputs.shape[0]
            for i in range(0, n, a.chunk):
                x = np.asarray(inputs[i:i + a.chunk], np.float32)
                targets[i:i + len(x)] = denoise(x, den, dtype="float32")
        tmp.replace(dst)
        print(f"{dst}: {n} train targets from {a.teacher}, "
              f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
