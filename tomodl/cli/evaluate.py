# SPDX-License-Identifier: BSD-3-Clause
"""``tomodl evaluate PAIRS.h5 --model NAME=WEIGHTS ...``: the paper's Table 1 and Fig. 6;
``--profile-precision``: its Table 2 (fp32 vs amp memory and time) on this device.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import click

from tomodl.models.inference import DTYPES

from tomodl.cli._common import AliasOption, CliError, OneLineCommand, handle_errors


def _models(items: Tuple[str, ...]) -> dict:
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise CliError(f"--model {item!r}: expected NAME=WEIGHTS_FOLDER, "
                           "e.g. --model ResAttUnet=runs/resattunet/best")
        if name in out or name == "FBP":
            raise CliError(f"--model {item!r}: the name {name!r} is already used")
        out[name] = path
    return out


def _profile(out: Path, archs, size: int, batch: int, steps: int, args: Tuple[str, ...],
             device: str) -> Path:
    from tomodl.training.config import apply_overrides, check_network
    from tomodl.training.profile import ProfileSpec, profile, table2_markdown, write_table2

    model_args = apply_overrides({}, args)
    for arch in archs:   # before a child process allocates the network
        check_network(arch, model_args, "--profile-arg", "fix --profile-arg KEY=VALUE",
                      "--profile-arch")
    specs = [ProfileSpec(a, p, size=size, batch=batch, steps=steps, model_args=model_args,
                         device=device) for a in archs for p in ("fp32", "amp")]
    results = profile(specs)
    click.echo(table2_markdown(results))
    return write_table2(results, out)


@click.command(cls=OneLineCommand)
@click.argument("pairs", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "models", multiple=True, metavar="NAME=WEIGHTS",
              help="A trained weights folder and its name in the table (repeatable), e.g. "
                   "--model ResAttUnet=runs/resattunet/best --model UNet=runs/unet/best.")
@click.option("--out-path", "--out", "out", cls=AliasOption, type=click.Path(file_okay=False),
              default="evaluation", show_default=True,
              help="Folder for table1.md/.csv, fig6.png, table2.md/.csv.")
@click.option("--split", "splits", multiple=True, metavar="train|val|test",
              help="Sets to score (default: all present in the file).")
@click.option("--mask/--no-mask", default=False, show_default=True,
              help="Score only the reconstruction circle.")
@click.option("--max-slices", type=click.IntRange(min=0), default=0,
              help="Score the first N slices of each set (0: all).")
@click.option("--slice", "example_slice", type=click.IntRange(min=0), default=None,
              help="Slice of each set shown in fig6.png (default: the middle one).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
              help="Inference compute dtype: float32, bfloat16, float16 or auto.")
@click.option("--profile-precision", is_flag=True,
              help="Also measure Table 2: peak memory and time of fp32 vs amp training steps "
                   "for both networks, each in a fresh process.")
@click.option("--profile-arch", multiple=True, default=("resattunet", "unet"), show_default=True)
@click.option("--profile-size", type=click.IntRange(min=8), default=256, show_default=True,
              help="Crop side of the profiled training steps.")
@click.option("--profile-batch", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--profile-steps", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--profile-arg", multiple=True, metavar="KEY=VALUE",
              help="Network argument for profiling, e.g. --profile-arg base_filters=16.")
@handle_errors
def evaluate(pairs: Optional[str], models, out, splits, mask, max_slices, example_slice, device,
             dtype, profile_precision, profile_arch, profile_size, profile_batch, profile_steps,
             profile_arg) -> None:
    """PSNR/SSIM of FBP and each --model against the labels of PAIRS (the paper's Table 1,
    8-bit protocol and float), and the label | networks | FBP figure (the paper's Fig. 6)."""
    out = Path(out)
    if pairs is None and not profile_precision:
        raise CliError("give a pairs file to evaluate, or --profile-precision")
    if pairs is not None:
        from tomodl.training.data import SPLITS
        from tomodl.training.evaluate import evaluate as run
        from tomodl.training.evaluate import table_markdown, write_figure, write_tables

        bad = sorted(set(splits) - set(SPLITS))
        if bad:
            raise CliError(f"--split {bad}: choose from {list(SPLITS)}")
        result = run(pairs, _models(models), splits=splits or SPLITS, mask=mask,
                     max_slices=max_slices, example_slice=example_slice, device=device,
                     dtype=dtype)
        md, cs = write_tables(result, out)
        fig = write_figure(result, out / "fig6.png")
        click.echo(table_markdown(result))
        click.echo(f"wrote {md}, {cs}, {fig}")
    if profile_precision:
        table = _profile(out, profile_arch, profile_size, profile_batch, profile_steps,
                         profile_arg, device)
        click.echo(f"wrote {table}")
