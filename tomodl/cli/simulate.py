# SPDX-License-Identifier: BSD-3-Clause
"""``tomodl simulate foam|pairs``: simulated scans with ground truth; sparse-view training pairs.

Examples::

    tomodl simulate foam --out-path foam0.h5 --size 256 --slices 64 --angles 1200 --seed 0
    tomodl simulate foam --out-path tooth3.h5 --family cracked --seed 3 --rings 0.005 --blur 0.8
    tomodl simulate pairs foam*.h5 tooth*.h5 --sparse 20 --out-path pairs.h5

Older spellings still work: the output as a positional argument (``simulate foam foam0.h5``),
``--center``, ``--out`` and ``--filter``.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Tuple

import click

from tomodl.cli._common import (AliasOption, CliError, HiddenArgument, OneLineGroup,
                                handle_errors)
from tomodl.cli._corrections import corrections_from, row_local_options

#: phantom families (kept in sync with tomodl.sim.families.FAMILIES by a test; listed here so
#: that `--help` does not import numpy-heavy modules)
FAMILY_NAMES = ("foam", "foam_intense", "layered", "cracked", "fibres", "mixed")


def _progress(flag: Optional[bool]) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _output(positional: Optional[Path], out_path: Optional[Path]) -> Path:
    """``--out-path``, or the old positional OUT (one of the two)."""
    if positional is not None and out_path is not None and positional != out_path:
        raise CliError(f"two outputs given ({str(positional)!r} and --out-path "
                       f"{str(out_path)!r}); give --out-path only")
    if positional is None and out_path is None:
        raise CliError("give the output file: --out-path scan.h5")
    return out_path if out_path is not None else positional


@click.group(cls=OneLineGroup)
def simulate() -> None:
    """Simulate scans of analytic phantoms and build sparse-view training pairs."""


@simulate.command()
@click.argument("out", required=False, cls=HiddenArgument,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out-path", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Scan file to write (DXchange HDF5).")
@click.option("--family", type=click.Choice(FAMILY_NAMES), default="foam", show_default=True,
              help="Phantom recipe (see docs/simulation.md).")
@click.option("--size", type=click.IntRange(min=8), default=256, show_default=True,
              help="Detector columns = reconstruction grid size (pixels).")
@click.option("--slices", type=click.IntRange(min=1), default=64, show_default=True,
              help="Detector rows (slices).")
@click.option("--angles", type=click.IntRange(min=1), default=1200, show_default=True,
              help="Projections over --arc degrees.")
@click.option("--arc", type=click.FloatRange(0, 360, min_open=True), default=180.0,
              show_default=True, help="Angular range in degrees.")
@click.option("--rotation-axis", "--center", "center", cls=AliasOption, type=float, default=None,
              help="Rotation axis in detector pixels [default: size/2, as TomoPy].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed (same seed, same file).")
@click.option("--spheres", type=click.IntRange(min=0), default=None,
              help="Number of spheres (holes/inclusions) [default: from the size].")
@click.option("--porosity", type=float, default=None, help="Volume fraction of the spheres.")
@click.option("--size-dist", type=click.Choice(("uniform", "lognormal", "powerlaw")),
              default=None, help="Distribution of the sphere radii.")
@click.option("--fill-fraction", type=float, default=None,
              help="Fraction of spheres filled with material of random intensity.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Any other phantom parameter, e.g. --set n_layers=3 --set n_cracks=2.")
@click.option("--flux", type=click.FloatRange(min=0, min_open=True), default=2.0e4,
              show_default=True, help="Flat-field counts per pixel.")
@click.option("--noise/--no-noise", default=True, show_default=True,
              help="Poisson and read noise.")
@click.option("--blur", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Detector blur, Gaussian sigma in pixels.")
@click.option("--rings", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Per-pixel gain error not removed by flats (relative std): ring artifacts.")
@click.option("--zingers", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Fraction of projection pixels hit by zingers.")
@click.option("--overwrite", is_flag=True, help="Replace --out-path if tomodl wrote it.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars (default: when stderr is a terminal).")
@handle_errors
def foam(out: Optional[Path], out_path: Optional[Path], family: str, size: int, slices: int,
         angles: int, arc: float, center: Optional[float], seed: int, sets: Tuple[str, ...],
         flux: float, noise: bool, blur: float, rings: float, zingers: float, overwrite: bool,
         progress: Optional[bool], **phantom_flags) -> None:
    """Simulate a scan of a random phantom into --out-path (DXchange HDF5 + ground truth).

    The file is read by `tomodl recon` like a measured scan; its /tomodl_sim group holds the
    ground-truth slices (attenuation per pixel) and the metadata.
    """
    from tomodl.sim.config import Acquisition, ScanGeometry
    from tomodl.sim.scan import simulate_scan
    from tomodl.training.config import apply_overrides

    out = _output(out, out_path)

    names = {"spheres": "n_spheres", "porosity": "porosity", "size_dist": "size_dist",
             "fill_fraction": "fill_fraction"}
    params = apply_overrides({}, sets)
    params.update({names[k]: v for k, v in phantom_flags.items() if v is not None})
    geometry = ScanGeometry(n_det=size, n_rows=slices, n_angles=angles, arc_degrees=arc,
                            center=center)
    acq = Acquisition(flux=flux, noise=noise, blur=blur, ring_strength=rings, zinger_rate=zingers)
    path = simulate_scan(out, family, seed=seed, geometry=geometry, acquisition=acq,
                         overwrite=overwrite, progress=_progress(progress), **params)
    click.echo(f"wrote {path}: {family} phantom, seed {seed}, {angles} angles x {slices} rows x "
               f"{size} px")


@simulate.command()
@click.argument("scans", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out-path", "--out", "out", cls=AliasOption, required=True,
              type=click.Path(dir_okay=False, path_type=Path), help="Pairs file to write (HDF5).")
@click.option("--sparse", default="20", show_default=True,
              help="Use every SPARSE-th angle for the input FBP (the paper: 20); several "
                   "factors like 4,10,20 are interleaved over the slices.")
@click.option("--fbp-filter", "--filter", "filter_name", cls=AliasOption, default="shepp",
              show_default=True, help="FBP filter, as for `tomodl recon`.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the train/val/test split (by phantom).")
@click.option("--fractions", default="0.8,0.1,0.1", show_default=True,
              help="Train,val,test fractions of the phantoms.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N.")
@click.option("--overwrite", is_flag=True, help="Replace --out-path if tomodl wrote it.")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")
@row_local_options
@handle_errors
def pairs(scans: Tuple[Path, ...], out: Path, sparse: str, filter_name: str, seed: int,
          fractions: str, device: str, overwrite: bool, progress: Optional[bool],
          **corrections) -> None:
    """Build (sparse-view FBP, ground truth) slice pairs from simulated SCANS.

    Each scan is one phantom; phantoms (never slices of one phantom) are split into
    /train, /val and /test.  Stripe removal and dezinger are applied to the input
    projections as `tomodl recon` applies them (train with them to apply the network after
    them); binning and projection subsets are not offered here (use --size and --sparse).
    """
    from tomodl.sim.pairs import make_pairs

    try:
        frac = tuple(float(x) for x in fractions.split(","))
    except ValueError:
        raise ValueError(f"--fractions expects three numbers like 0.8,0.1,0.1, got "
                         f"{fractions!r}") from None
    try:
        factors = [int(x) for x in sparse.split(",")]
    except ValueError:
        raise ValueError(f"--sparse expects integers like 20 or 4,10,20, got {sparse!r}") from None
    path = make_pairs(list(scans), out, sparse=factors, filter_name=filter_name, seed=seed,
                      fractions=frac, overwrite=overwrite, device=device,
                      progress=_progress(progress), corrections=corrections_from(corrections))
    click.echo(f"wrote {path}: {len(scans)} phantoms, 1 in {sparse} angles")
