# SPDX-License-Identifier: BSD-3-Clause
"""``tomodl recon SCAN.h5``: chunked reconstruction of a DXchange / NXtomo scan.

Option names follow Tomocupy (``--rotation-axis``, ``--reconstruction-type try|full``,
``--center-search-width``, ``--nsino-per-chunk``, ``--fbp-filter``, ``--save-format``,
``--out-path``) so that a Tomocupy user can switch without a manual.
"""
from __future__ import annotations

import importlib.util
import math
import shlex
import sys
from pathlib import Path

import click

from tomodl.cli._common import OneLineCommand, handle_errors, setup_logging
from tomodl.cli._corrections import corrections_from, corrections_options
from tomodl.io.writers import SAVE_FORMATS
from tomodl.models.inference import DTYPES
from tomodl.recon.api import ALGORITHMS
from tomodl.recon.center import CENTER_METHODS
from tomodl.recon.filters import FILTERS
from tomodl.recon.pipeline import RECONSTRUCTION_TYPES


def _save_formats() -> list:
    """Formats whose writer can run here (zarr only when installed)."""
    return [f for f in SAVE_FORMATS if f != "zarr" or importlib.util.find_spec("zarr")]


class AxisType(click.ParamType):
    """A rotation axis in pixels, or ``auto``."""

    name = "FLOAT|auto"

    def convert(self, value, param, ctx):
        if str(value).strip().lower() == "auto":
            return "auto"
        try:
            axis = float(value)
        except ValueError:
            self.fail(f"{value!r} is neither a number of pixels nor 'auto'", param, ctx)
        if not math.isfinite(axis):
            self.fail(f"{value!r} is not a finite number of pixels; give the axis or 'auto'",
                      param, ctx)
        return axis


class MemoryType(click.ParamType):
    """A memory size: bytes, or a number with a unit (512M, 8G, 1.5GiB)."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        from tomodl.recon.budget import parse_memory

        try:
            return parse_memory(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


def _raise_verbosity(verbose: int) -> None:
    """Apply ``recon -v`` like ``tomodl -v`` (the larger of the two counts wins)."""
    ctx = click.get_current_context().find_root()
    ctx.obj = dict(ctx.obj or {})
    ctx.obj["verbose"] = max(int(ctx.obj.get("verbose", 0)), verbose)
    setup_logging(ctx.obj["verbose"])


@click.command(cls=OneLineCommand)
@click.argument("scan", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rotation-axis", type=AxisType(), default="auto", show_default=True,
              help="Rotation axis in detector pixels (column), or 'auto' to find it on the "
                   "middle row.")
@click.option("--center-method", type=click.Choice(sorted(CENTER_METHODS)), default="auto",
              show_default=True, help="Method of --rotation-axis auto.")
@click.option("--reconstruction-type", type=click.Choice(RECONSTRUCTION_TYPES), default="full",
              show_default=True,
              help="full: the whole volume; try: the middle row at a range of centres.")
@click.option("--center-search-width", type=click.FloatRange(min=0, min_open=True),
              default=10.0, show_default=True, help="Try mode: centres at axis +- this (px).")
@click.option("--center-search-step", type=click.FloatRange(min=0, min_open=True), default=0.5,
              show_default=True, help="Try mode: step between centres (px).")
@click.option("--start-row", type=int, default=None, help="First detector row (default 0).")
@click.option("--end-row", type=int, default=None,
              help="Row after the last one (exclusive; default all rows).")
@click.option("--nsino-per-chunk", type=click.IntRange(min=1), default=None,
              help="Rows per chunk (default: from --max-memory).")
@click.option("--max-memory", type=MemoryType(), default=None,
              help="Memory for the data in flight, e.g. 8G (per worker with Dask; default: "
                   "half the available RAM). Sets the chunk size.")
@click.option("--fbp-filter", type=click.Choice(list(FILTERS)), default="shepp",
              show_default=True, help="FBP filter (TomoPy's definitions).")
@click.option("--save-format", type=click.Choice(_save_formats()), default="tiff",
              show_default=True, help="Output format.")
@click.option("--out-path", type=click.Path(path_type=Path), default=None,
              help="Output (default next to SCAN: <stem>_rec/ for TIFF, <stem>_rec.h5, "
                   "<stem>_rec.zarr, <stem>_try/ in try mode).")
@click.option("--overwrite", is_flag=True,
              help="Replace an existing output that tomodl wrote (never anything else).")
@click.option("--resume/--no-resume", default=None,
              help="Continue an interrupted run (refusing other settings) / always start "
                   "again.  Default: continue it when the settings are the same.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Run on a local Dask cluster of N worker processes (loopback only).")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="Run on an existing Dask cluster: its address (tcp://10.0.0.5:8786) or "
                   "scheduler file; the scan and weights must be readable on every worker.")
@click.option("--algorithm", type=click.Choice(list(ALGORITHMS)), default="fbp+resattunet",
              show_default=True,
              help="FBP followed by a denoising network (the default uses the shipped "
                   "ResAttUnet, and keeps the FBP for scans outside the range of projections "
                   "it was validated for, e.g. dense scans), or fbp: FBP alone (TomoPy's "
                   "gridrec equivalent).")
@click.option("--model", default=None,
              help="Weights folder or released model name (fbp+<model>; default: released).")
@click.option("--sparse", type=click.IntRange(min=1), default=None,
              help="The scan holds 1 in SPARSE angles of a full scan: use the released weights "
                   "trained for that factor (fbp+<model>; default: chosen by the number of "
                   "projections per half turn).")
@click.option("--dtype", type=click.Choice(DTYPES), default=None,
              help="Network compute dtype (fbp+<model>; default auto).")
@click.option("--batch-size", type=click.IntRange(min=1), default=None,
              help="Slices per network batch (fbp+<model>; default from free memory).")
@click.option("--refine", type=click.IntRange(min=0), default=0, show_default=True,
              metavar="N",
              help="Refine the network's output against the measured projections with N "
                   "iterations (fbp+<model>; 0 = off; see docs/refine.md).")
@click.option("--refine-rounds", type=click.IntRange(min=1), default=1, show_default=True,
              metavar="R",
              help="Network passes of the refinement: 2 applies the network again to the "
                   "refined image plus the FBP of its data residual, then refines again "
                   "(better at 36 projections and fewer, twice the time; docs/refine.md).")
@click.option("--refine-allow-negative", is_flag=True, default=False,
              help="Let the refined images take negative values (default: kept >= 0, as "
                   "absorption is; use for data with real negative values, such as "
                   "propagation fringes without phase retrieval).")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, cuda or cuda:N.")
@click.option("--ncore", type=click.IntRange(min=1), default=None, help="CPU threads.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="Progress bar on stderr (slices/s and time left).")
@click.option("--preview/--no-preview", default=None,
              help="Write <out>_preview.png with the three orthogonal middle slices "
                   "[default: on for full runs when cheap].")
@click.option("--check/--no-check", default=None,
              help="Check FBP and the network against set-aside measured angles (every 4th) "
                   "on a few rows: scores in the log and the provenance, maps in "
                   "<out>_check/; the default algorithm keeps the FBP where the network is "
                   "less consistent (see docs/usage.md) [default: on with a network for "
                   "volumes of 40 rows or more, checking at most one row in 20].")
@click.option("--check-rows", default="8", show_default=True, metavar="N|ROWS",
              help="Rows checked: a count spread evenly over the volume, or detector rows "
                   "(e.g. 100,250).")
@click.option("-v", "--verbose", count=True,
              help="Log the chunk plan and, at the end, the busy seconds of each stage "
                   "(same as 'tomodl -v recon').")
@corrections_options
@handle_errors
def recon(scan: Path, rotation_axis, center_method, reconstruction_type, center_search_width,
          center_search_step, start_row, end_row, nsino_per_chunk, max_memory, fbp_filter,
          save_format, out_path, overwrite, resume, workers, scheduler, algorithm, model, sparse,
          dtype, batch_size, refine, refine_rounds, refine_allow_negative, device, ncore,
          progress, preview,
          check, check_rows, verbose,
          **corrections):
    """Reconstruct SCAN (DXchange or NeXus NXtomo HDF5), chunk by chunk.

    Reads only the rows of each chunk, normalizes with the flats and darks, takes -log,
    reconstructs by FBP (optionally followed by a denoising network) and writes the slices
    atomically: nothing appears under the final name until the volume is complete.
    """
    from tomodl.recon.check import parse_rows
    from tomodl.recon.pipeline import ReconConfig, reconstruct_file

    if verbose:
        _raise_verbosity(verbose)
    cfg = ReconConfig(
        algorithm=algorithm, center=rotation_axis, center_method=center_method,
        reconstruction_type=reconstruction_type, center_search_width=center_search_width,
        center_search_step=center_search_step, filter_name=fbp_filter, start_row=start_row,
        end_row=end_row, nsino_per_chunk=nsino_per_chunk, max_memory=max_memory,
        save_format=save_format, out_path=out_path, overwrite=overwrite,
        resume="auto" if resume is None else resume, workers=workers, scheduler=scheduler,
        model=model, sparse=sparse, batch_size=batch_size, dtype=dtype, refine=refine,
        refine_nonneg=not refine_allow_negative, refine_rounds=refine_rounds,
        device=device, ncore=ncore,
        progress=progress, corrections=corrections_from(corrections), preview=preview,
        check=check, check_rows=parse_rows(check_rows),
    )
    command = shlex.join(["tomodl"] + sys.argv[1:])
    res = reconstruct_file(scan, cfg, command=command)
    axis = "found" if rotation_axis == "auto" else "given"
    if cfg.corrections.binning:                   # res.center is on the binned detector
        axis += f", in pixels binned {cfg.corrections.factor}x"
    if reconstruction_type == "try":
        click.echo(f"Rotation axis ({axis}) {res.center:.2f} px; wrote {res.n_slices} trial "
                   f"centres +-{center_search_width:g} px in {res.seconds:.1f} s to {res.path}")
    else:
        again = "" if res.n_computed == res.n_slices else \
            f" ({res.n_slices - res.n_computed} were already done)"
        rate = res.n_computed / res.seconds if res.seconds > 0 else float("nan")
        click.echo(f"Rotation axis ({axis}) {res.center:.2f} px; reconstructed {res.n_computed} "
                   f"of {res.n_slices} slices{again} in {res.seconds:.1f} s ({rate:.1f} slices/s, "
                   f"chunks of {res.chunk_rows} rows)")
        click.echo(f"Output: {res.path}")
