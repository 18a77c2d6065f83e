# SPDX-License-Identifier: BSD-3-Clause
"""The ``tomodl`` command line (``tomodl --help``, also ``python -m tomodl``).

Sub-commands are listed in :data:`COMMANDS` (``name -> "module:function"``) and imported only
when used, so ``tomodl --help`` stays fast; adding a command is one line there.  Command modules
import only click at module level and do their heavy imports inside the command body.
"""
from __future__ import annotations

import importlib
from typing import Optional

import click

from tomodl import __version__
from tomodl.cli._common import OneLineGroup, setup_logging

#: Sub-commands: name -> "module:click command".
COMMANDS = {
    "recon": "tomodl.cli.recon:recon",
    "simulate": "tomodl.cli.simulate:simulate",
    "train": "tomodl.cli.train:train",
    "evaluate": "tomodl.cli.evaluate:evaluate",
    "finetune": "tomodl.cli.finetune:finetune",
    "adapt": "tomodl.cli.finetune:adapt",
}


class LazyGroup(OneLineGroup):
    """A group that imports each sub-command's module on demand."""

    def list_commands(self, ctx: click.Context) -> list:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tomodl")
@click.option("-v", "--verbose", count=True,
              help="More messages: -v progress information, -vv debugging (and tracebacks).")
@click.pass_context
def main(ctx: click.Context, verbose: int) -> None:
    """tomodl: sparse-view synchrotron tomography, TomoPy-compatible FBP + deep-learning
    streak removal."""
    ctx.obj = {"verbose": verbose}
    setup_logging(verbose)
