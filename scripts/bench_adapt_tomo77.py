# SPDX-License-Identifier: BSD-3-Clause
"""``tomodl adapt`` on the real nano-CT scan tomo77, scored like ``tomodl finetune`` there.

The sparse scan is every ``--step``-th of tomo77's 451 angles; adapt sees only those. The
score is PSNR / SSIM against the full-angle FBP of the rows ``tomodl finetune`` holds out by
default (31, 36, 41, 46), inside a circle of radius 0.45 N, data range from the reference, for
the sparse FBP, the shipped release and the adapted folder (docs/results.md)::

    python scripts/bench_adapt_tomo77.py --step 10 --minutes 3 [--proximity 10]
"""
import argparse
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

import tomodl
from tomodl.metrics import circle_mask, psnr, ssim
from tomodl.recon.corrections import Corrections
from tomodl.training.adapt import adapt

SCAN = Path(__file__).resolve().parents[1].parent / "shared/data/tomo77/tomo77_minuslog.h5"
ROWS = [31, 36, 41, 46]


def scores(images, ref):
    mask = circle_mask(ref.shape[-2:], 0.9)
    out = {}
    for name, im in images.items():
        vals = []
        for r in range(len(ref)):
            dr = float(np.ptp(ref[r][mask]))
            vals.append((psnr(im[r], ref[r], data_range=dr, mask=mask),
                         ssim(im[r], ref[r], data_range=dr, mask=mask)))
        out[name] = [round(float(np.mean([v[0] for v in vals])), 2),
                     round(float(np.mean([v[1] for v in vals])), 3)]
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scan", type=Path, default=SCAN)
    ap.add_argument("--step", type=int, default=10)
    ap.add_argument("--minutes", type=float, default=3.0)
    ap.add_argument("--proximity", type=float, default=None, help="default: adapt's")
    ap.add_argument("--out", type=Path, default=Path("bench_out/adapt_tomo77"))
    a = ap.parse_args()
    with h5py.File(a.scan, "r") as f:
        li = f["/exchange/data"][...].astype(np.float32)
        theta = np.radians(f["/exchange/theta"][...]).astype(np.float32)
    center = float(tomodl.find_center(li, theta, ind=39))
    ref = tomodl.recon(li[:, ROWS], theta, center, algorithm="fbp", filter_name="shepp")
    sparse, th = li[::a.step][:, ROWS], theta[::a.step]
    folder = a.out / f"adapted_{a.step}"
    kw = {} if a.proximity is None else {"proximity": a.proximity}
    load0, t0 = os.getloadavg(), time.time()
    res = adapt(a.scan, folder, minutes=a.minutes, center=center, progress=False,
                corrections=Corrections(proj_step=a.step), overwrite=True, resume=False, **kw)
    wall, load1 = time.time() - t0, os.getloadavg()
    images = {"fbp": tomodl.recon(sparse, th, center, algorithm="fbp", filter_name="shepp"),
              "release": tomodl.recon(sparse, th, center),
              "adapted": tomodl.recon(sparse, th, center, model=str(folder))}
    print(json.dumps({"projections": len(th), "center": round(center, 2), "steps": res.steps,
                      "improved": res.improved, "wall_s": round(wall, 1),
                      "load_start_end": [round(load0[0], 2), round(load1[0], 2)],
                      "held_out_loss": [res.base_loss, res.best_loss],
                      "psnr_ssim": scores(images, ref)}))


if __name__ == "__main__":
    main()
