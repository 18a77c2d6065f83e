"""Collect ``tomodl evaluate`` results on held-out files of several sparse factors into one table.

Each ``DIR`` is the ``--out-path`` of ``tomodl evaluate heldout_xK.h5 ...`` (its
``table1.csv``); the factor ``K`` and the angle count are read from the pairs file named with
``--pairs``:

    python scripts/factor_table.py results/heldout_x{4,10,20,40,80,120} \\
        --pairs data/heldout_x{4,10,20,40,80,120}.h5 --out-path results/factors.md
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dirs", type=Path, nargs="+")
    ap.add_argument("--pairs", type=Path, nargs="+", required=True)
    ap.add_argument("--protocol", default="float", choices=("float", "8bit"))
    ap.add_argument("--out-path", "--out", dest="out", type=Path, required=True)
    a = ap.parse_args()

    import h5py

    if len(a.dirs) != len(a.pairs):
        ap.error("give one --pairs file per result folder")
    table, methods = [], []
    for d, p in zip(a.dirs, a.pairs):
        with h5py.File(p, "r") as f:
            meta = json.loads(f.attrs["metadata"])
        rows = [r for r in csv.DictReader(open(d / "table1.csv", newline=""))
                if r["protocol"] == a.protocol and r["split"] == "test"]
        for r in rows:
            if r["method"] not in methods:
                methods.append(r["method"])
        table.append((meta["sparse_factors"], meta["n_angles"], {r["method"]: r for r in rows}))
    head = ["1 in", "angles"] + [f"{m} PSNR / SSIM" for m in methods]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for factors, n_angles, by in sorted(table, key=lambda t: -t[1][0]):
        fbp = float(by["FBP"]["psnr"])
        cells = [",".join(map(str, factors)), ",".join(map(str, n_angles))]
        for m in methods:
            r = by.get(m)
            gain = "" if m == "FBP" or r is None else f" ({float(r['psnr']) - fbp:+.2f})"
            cells.append("-" if r is None else
                         f"{float(r['psnr']):.2f}{gain} / {float(r['ssim']):.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    text = (f"{a.protocol} protocol, held-out phantoms (never seen in training), mean over "
            f"slices; PSNR in dB (gain over FBP)\n\n" + "\n".join(lines) + "\n")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
