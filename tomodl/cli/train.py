# SPDX-License-Identifier: BSD-3-Clause
"""``tomodl train CONFIG.toml``: train ResAttUnet or UNet on pairs files.

Every config field can be overridden: ``--set key=value`` (repeatable; ``model_args.base_filters=8``
for nested tables) or the common flags below, which win over ``--set``.  The same command runs
on several GPUs or nodes under ``torchrun``::

    torchrun --standalone --nproc_per_node=4 -m tomodl train configs/paper.toml
"""
from __future__ import annotations

from typing import Optional, Tuple

import click

from tomodl.cli._common import AliasOption, OneLineCommand, handle_errors

#: command-line flags that set the config field of the same name (they win over --set)
FLAG_FIELDS = ("data", "out", "arch", "epochs", "batch_size", "crop_size", "lr", "precision",
               "seed", "device")


@click.command(cls=OneLineCommand)
@click.argument("config", required=False, type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field (repeatable), e.g. --set lr=1e-4 "
                   "--set model_args.base_filters=16.")
@click.option("--data", multiple=True, metavar="PAIRS.h5",
              help="Pairs file(s) from `tomodl simulate pairs` (repeatable).")
@click.option("--out-path", "--out", "out", cls=AliasOption, metavar="DIR",
              help="Output directory (the config field 'out').")
@click.option("--arch", help="Network: resattunet or unet.")
@click.option("--epochs", type=int, help="Number of epochs (the paper: 65).")
@click.option("--batch-size", type=int, help="Crops per step and per process.")
@click.option("--crop-size", type=int, help="Side of the random crops (0: whole slices).")
@click.option("--lr", type=float, help="Initial learning rate (the paper: 3e-4).")
@click.option("--precision", metavar="fp32|amp",
              help="amp: float16 autocast + GradScaler on CUDA, bfloat16 autocast on CPU.")
@click.option("--seed", type=int, help="Seed of the initialization, data order and augmentation.")
@click.option("--device", help="auto, cpu, cuda or cuda:N (under torchrun: the local GPU).")
@click.option("--resume", is_flag=True,
              help="Continue the run in --out-path from its newest checkpoint (exactly).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar (default: when stderr is a terminal).")
@handle_errors
def train(config: Optional[str], overrides: Tuple[str, ...], resume: bool,
          progress: Optional[bool], **flags) -> None:
    """Train a network on pairs files with the paper's recipe (see docs/training.md).

    CONFIG is a TOML file (configs/paper.toml, configs/cpu.toml); without it the defaults
    apply and --data is required.  Writes config.toml, metrics.csv, loss.png, checkpoints/
    and best/ (a weights folder for `tomodl recon --algorithm fbp+ARCH --model`)
    into --out-path.
    """
    from tomodl.training.config import from_mapping, load_config
    from tomodl.training.distributed import dist_info
    from tomodl.training.trainer import train as run

    values = load_config(config, overrides).to_dict()
    for name in FLAG_FIELDS:
        value = flags.get(name)
        if value is not None and value != ():
            values[name] = list(value) if isinstance(value, tuple) else value
    cfg = from_mapping(values)
    result = run(cfg, resume=resume, progress=progress)
    if dist_info().is_main:
        click.echo(f"best epoch {result.best_epoch}: validation loss {result.best_val_loss:.6g}")
        click.echo(f"weights: {result.weights}")
        click.echo(f"metrics: {result.out / 'metrics.csv'}, {result.out / 'loss.png'}")
