#!/usr/bin/env python
"""`make demo`: the main job on an embedded default, with nothing downloaded.

1. simulate a small sparse-view scan (60 projections: 1 in 20 of a 1200-angle scan) of a random
   multi-material phantom never used in training (exact analytic projections, Poisson noise,
   flats and darks), written as a DXchange HDF5 file;
2. reconstruct it with ``tomodl recon`` twice: FBP alone, and the default FBP+ResAttUnet with the
   weights shipped in the package (automatic rotation axis, TomoPy's shepp filter);
3. write TIFFs and a side-by-side PNG (ground truth | sparse FBP | FBP+ResAttUnet) and print the
   PSNR and SSIM of both against the ground truth.

Run again, it replaces its own outputs.  Where the folder holds a file that tomodl may not
replace (one it did not write, e.g. the unmarked preview.png of an older tomodl), the demo
leaves it alone and writes into the first free ``<folder>_<n>`` instead, saying so in one line.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def run_cli(args):
    """Run one ``tomodl`` command in-process; stop the demo on failure."""
    from tomodl.cli import main

    print("$ tomodl " + " ".join(map(str, args)), flush=True)
    code = main.main(list(map(str, args)), standalone_mode=False)
    if code:
        sys.exit(code)


#: what the demo writes in its folder -> the kinds of tomodl output each may replace
OUTPUTS = {"scan.h5": ("scan",), "scan_fbp": ("volume",), "scan_fbp_resattunet": ("volume",),
           "preview.png": ("image",)}


def output_folder(wanted: Path) -> Path:
    """``wanted``, or the first ``<wanted>_<n>`` where every output of the demo may be written.

    The check is :func:`tomodl.io.atomic.check_replace`, the rule of every tomodl command:
    nothing is deleted or replaced that tomodl did not write.
    """
    from tomodl.errors import OutputError
    from tomodl.io.atomic import check_replace

    refusal = None
    for n in range(1, 100):
        folder = wanted if n == 1 else wanted.with_name(f"{wanted.name}_{n}")
        try:
            for name, kinds in OUTPUTS.items():
                check_replace(folder / name, overwrite=True, kinds=kinds)
        except OutputError as err:
            refusal = refusal or err
            continue
        if refusal is not None:
            print(f"Note: {refusal}; the demo leaves it alone and writes to {folder}/ instead",
                  flush=True)
        return folder
    raise refusal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-path", "--out", dest="out", type=Path, default=Path("demo_out"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--angles", type=int, default=60)
    args = parser.parse_args()

    import tifffile

    from tomodl.io import write_png
    from tomodl.metrics import circle_mask, psnr, ssim
    from tomodl.sim.scan import read_ground_truth

    args.out = output_folder(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    scan = args.out / "scan.h5"
    run_cli(["simulate", "foam", "--out-path", scan, "--family", "mixed", "--size", args.size,
             "--slices", args.slices, "--angles", args.angles, "--seed", 2026, "--overwrite",
             "--no-progress"])
    gt = read_ground_truth(scan)[0]
    mid = gt.shape[0] // 2
    mask = circle_mask(gt.shape[1:], 0.95)
    rng = float(gt[mid][mask].max() - gt[mid][mask].min())
    recs, lines = {}, []
    for alg in ("fbp", "fbp+resattunet"):
        out = args.out / f"scan_{alg.replace('+', '_')}"
        run_cli(["recon", scan, "--algorithm", alg, "--rotation-axis", "auto", "--out-path", out,
                 "--overwrite", "--no-progress"])
        tiffs = sorted(out.glob("*.tif*"))
        recs[alg] = tifffile.imread(tiffs[mid])
        lines.append(f"{alg:15s} TIFFs in {out}/ ({len(tiffs)} slices); middle slice vs ground "
                     f"truth: PSNR {psnr(recs[alg], gt[mid], data_range=rng, mask=mask):6.2f} dB, "
                     f"SSIM {ssim(recs[alg], gt[mid], data_range=rng, mask=mask):.3f}")
    preview = args.out / "preview.png"
    write_png(preview, np.concatenate([gt[mid], recs["fbp"], recs["fbp+resattunet"]], axis=1),
              vmin=float(gt[mid].min()), vmax=float(gt[mid].max()), overwrite=True)
    print(f"\nscan (DXchange HDF5, {args.angles} angles): {scan}")
    print("\n".join(lines))
    print(f"side-by-side PNG: {preview}  (ground truth | sparse FBP | FBP+ResAttUnet)")


if __name__ == "__main__":
    import click

    try:
        main()
    except (ValueError, OSError, click.ClickException) as error:   # TomodlError is a ValueError
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)
