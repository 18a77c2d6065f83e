# SPDX-License-Identifier: BSD-3-Clause
"""``tomodl finetune DENSE.h5 ...`` and ``tomodl adapt SPARSE.h5``: teach the released network
the user's own sample, from a dense scan (labels) or from the sparse scan itself
(self-supervised), under a wall-clock budget; both write a weights folder for
``tomodl recon --model``.  See docs/finetune.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import click

from tomodl.cli._common import AliasOption, OneLineCommand, handle_errors
from tomodl.cli._corrections import corrections_from, corrections_options
from tomodl.cli.recon import MemoryType


class NumberList(click.ParamType):
    """A comma-separated list of positive numbers (``36,18``)."""

    name = "N,N,..."

    def __init__(self, kind=float):
        self.kind = kind

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):
            return list(value)
        try:
            out = [self.kind(v) for v in str(value).split(",") if v.strip()]
        except ValueError:
            out = []
        if not out or min(out) <= 0:
            self.fail(f"{value!r} is not a comma-separated list of positive numbers "
                      "(e.g. 36,18)", param, ctx)
        return out


class RowList(click.ParamType):
    """Detector rows: ``0``, ``3,5,9`` or a range ``10:40``."""

    name = "ROWS"

    def convert(self, value, param, ctx):
        text = str(value).strip()
        try:
            if ":" in text:
                a, b = (int(v) for v in text.split(":"))
                rows = list(range(a, b))
            else:
                rows = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            rows = []
        if not rows or min(rows) < 0:
            self.fail(f"{value!r}: give detector rows as 0, 3,5,9 or 10:40", param, ctx)
        return rows


def _common(func):
    """Options shared by both commands (the budget, the base, the device, the output)."""
    opts = [
        click.option("--out-path", "--out", "out", cls=AliasOption, type=click.Path(
            path_type=Path), default=None,
            help="Weights folder to write (default: <first scan stem>_model next to it)."),
        click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=10.0,
                     show_default=True,
                     help="Wall-clock budget of training and validation (minutes)."),
        click.option("--model", "base", default=None, metavar="BASE",
                     help="Release name or weights folder to start from (default: the release "
                          "tomodl recon would choose for the projection counts)."),
        click.option("--rotation-axis", "--center", "center", cls=AliasOption,
                     type=NumberList(float), default=None,
                     help="Rotation axis in raw detector pixels, one per scan (default: found "
                          "as tomodl recon finds it)."),
        click.option("--rows", type=RowList(), default=None,
                     help="Detector rows to train on, e.g. 0 or 10:40 (default: all but the "
                          "held-out block and its guard bands, as many as fit)."),
        click.option("--holdout-rows", type=RowList(), default=None,
                     help="Detector rows held out for validation (default: the middle "
                          "fifth)."),
        click.option("--device", default="auto", show_default=True,
                     help="auto, cpu, cuda or cuda:N."),
        click.option("--ncore", type=click.IntRange(min=1), default=None, help="CPU threads."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seed of the crops, subsets and offsets."),
        click.option("--overwrite", is_flag=True,
                     help="Replace an existing weights folder that tomodl wrote (never "
                          "anything else)."),
        click.option("--resume/--no-resume", default=True, show_default=True,
                     help="Continue an interrupted run with the same options / start again."),
        click.option("--progress/--no-progress", default=None,
                     help="Progress bar with the loss and the time left (default: on a "
                          "terminal)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _out(out: Optional[Path], scan: Path) -> Path:
    return out if out is not None else scan.with_name(f"{scan.stem}_model")


def _center(center: Optional[List[float]], n: int):
    if center is None:
        return None
    return center[0] if n == 1 and len(center) == 1 else list(center)


def _report(res, kind: str, first: Path) -> None:
    """Print the result: held-out losses and scores, and how to use the weights."""
    word = "improved" if res.improved else "did NOT improve (the base weights were written)"
    click.echo(f"{kind}: {res.steps} steps in {res.seconds:.0f} s; held-out loss "
               f"{res.base_loss:.5g} -> {res.best_loss:.5g}: {word}")
    base, final = res.scores.get("base", {}), res.scores.get("final", {})
    for key in sorted(final.get("network", {})):
        fbp = base.get("fbp", {}).get(key)
        b, f = base.get("network", {}).get(key), final["network"][key]
        better = "higher" if key.startswith(("psnr", "ssim")) else "lower"
        click.echo(f"  held-out {key}: FBP {_fmt(fbp)}, base {_fmt(b)}, {kind} {_fmt(f)} "
                   f"({better} is better)")
    click.echo(f"Weights: {res.out}  (tomodl recon {first.name} --model {res.out})")


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.4g}"


@click.command(cls=OneLineCommand)
@click.argument("scans", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--angles", type=NumberList(float), default=None,
              help="Projections per half turn of the sparse scans to come, e.g. 36,18 "
                   "[default: 60,30,15, those the dense scan can label].")
@click.option("--sparse", type=NumberList(int), default=None,
              help="Instead of --angles: 1 in K of the dense scan's angles, e.g. 10,20.")
@click.option("--max-memory", type=MemoryType(), default=None,
              help="Memory for the kept rows (labels and line integrals), e.g. 2G "
                   "[default: 1 GiB].")
@_common
@corrections_options
@handle_errors
def finetune(scans, angles, sparse, max_memory, out, minutes, base, center, rows, holdout_rows,
             device, ncore, seed, overwrite, resume, progress, **corrections) -> None:
    """Fine-tune the released network on dense scan(s) of your sample.

    Each DENSE scan (DXchange or NeXus, raw counts with flats, or -log data marked
    normalisation=minus_log) is pre-processed and reconstructed as tomodl recon does; the FBP
    of all its angles is the label, and the FBP of interleaved subsets of its angles the
    input.  A block of rows is held out: the weights written are never worse there than the
    base.  Use them with tomodl recon SCAN --model OUT.
    """
    from tomodl.training.finetune import finetune as run
    from tomodl.training.scan_data import DEFAULT_MEMORY

    res = run(list(scans), _out(out, scans[0]), angles=angles, sparse=sparse, base=base,
              minutes=minutes, center=_center(center, len(scans)),
              corrections=corrections_from(corrections), device=device, threads=ncore,
              seed=seed, rows=rows, holdout_rows=holdout_rows,
              memory=max_memory or DEFAULT_MEMORY, resume=resume, overwrite=overwrite,
              progress=progress)
    _report(res, "finetune", scans[0])


@click.command(cls=OneLineCommand)
@click.argument("scan", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_common
@click.option("--proximity", type=click.FloatRange(min=0), default=None,
              help="Weight of the pull towards the base network's output [default: 10]. Lower "
                   "(1, 0) lets the data change more: on tomo77, where the release erases the "
                   "texture, 0 gained 5 dB; on one-row scans it let the result get worse "
                   "(docs/finetune.md).")
@corrections_options
@handle_errors
def adapt(scan, out, minutes, base, center, rows, holdout_rows, device, ncore, seed, overwrite,
          resume, progress, proximity, **corrections) -> None:
    """Adapt the released network to a SPARSE scan without any dense scan (self-supervised).

    The measured angles are split into interleaved subsets: the network sees the FBP of some
    and its output is projected and compared with the measured projections it did not see.
    Use the result with tomodl recon SCAN --model OUT.
    """
    from tomodl.training.adapt import PROXIMITY
    from tomodl.training.adapt import adapt as run

    res = run(scan, _out(out, scan), base=base, minutes=minutes,
              proximity=PROXIMITY if proximity is None else proximity,
              center=_center(center, 1), corrections=corrections_from(corrections),
              rows=rows, holdout_rows=holdout_rows, device=device, threads=ncore, seed=seed,
              resume=resume, overwrite=overwrite, progress=progress)
    _report(res, "adapt", scan)
