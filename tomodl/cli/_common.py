# SPDX-License-Identifier: BSD-3-Clause
"""Shared CLI plumbing: one-line errors with exit code 2, logging set-up, command classes.

Every error a user can cause (a :class:`~tomodl.errors.TomodlError`, any ``ValueError`` or
``OSError`` from the library, and click's own usage errors) is printed as ONE line
``Error: ...`` on stderr and the process exits with code 2, with the command-line advice of a
TomodlError (:func:`cli_text`).  ``tomodl -v`` additionally prints the traceback of library
errors.

Option names are the same in every sub-command (``--out-path``, ``--fbp-filter``,
``--rotation-axis``); older spellings stay accepted as hidden aliases (:class:`AliasOption`).
"""
from __future__ import annotations

import functools
import logging
import sys
import traceback
from typing import Any, Callable

import click

from tomodl.errors import TomodlError

#: Exit code of every user error (click uses 2 for usage errors too).
EXIT_USER_ERROR = 2
#: ``-v`` count -> log level of the ``tomodl`` logger.
LOG_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}
#: Library exceptions reported as one line.
USER_ERRORS = (TomodlError, ValueError, OSError)


def one_line(text: Any) -> str:
    """Collapse whitespace and newlines so that a message prints on one line."""
    return " ".join(str(text).split())


class CliError(click.ClickException):
    """Printed by click as ``Error: <message>`` on stderr; exit code 2."""

    exit_code = EXIT_USER_ERROR

    def __init__(self, message: Any):
        super().__init__(one_line(message))


def _usage_line(err: click.UsageError) -> CliError:
    ctx = err.ctx
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return CliError(err.format_message() + hint)


class OneLineCommand(click.Command):
    """A click command whose usage errors are one line (no usage block)."""

    def parse_args(self, ctx: click.Context, args: list) -> list:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:
            raise _usage_line(err) from None


class OneLineGroup(click.Group):
    """A click group with one-line usage errors, also for unknown sub-commands."""

    command_class = OneLineCommand

    def parse_args(self, ctx: click.Context, args: list) -> list:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:
            raise _usage_line(err) from None

    def resolve_command(self, ctx: click.Context, args: list):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as err:
            raise _usage_line(err) from None


class AliasOption(click.Option):
    """An option whose first name is shown in ``--help``; later names are old spellings kept
    so that scripts do not break (accepted, not shown)."""

    def get_help_record(self, ctx: click.Context):
        opts = self.opts
        self.opts = opts[:1]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = opts


class HiddenArgument(click.Argument):
    """A positional argument kept for old scripts, left out of the usage line."""

    def get_usage_pieces(self, ctx: click.Context) -> list:
        return []


def cli_text(err: BaseException) -> str:
    """What a command-line user reads for ``err``: a TomodlError's :meth:`cli_message`, with the
    Python-only advice of the errors it wraps (its causes) swapped for theirs as well."""
    text = err.cli_message() if isinstance(err, TomodlError) else str(err)
    seen, cause = {id(err)}, err.__cause__ or err.__context__
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, TomodlError) and cause.cli_fix is not None and cause.fix:
            text = text.replace(cause.fix, cause.cli_fix)
        cause = cause.__cause__ or cause.__context__
    return text


def verbosity() -> int:
    """The ``-v`` count of the current invocation (0 outside a click context)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return 0
    return int((ctx.find_root().obj or {}).get("verbose", 0))


def handle_errors(func: Callable) -> Callable:
    """Decorate a command callback: library user errors become one line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except USER_ERRORS as err:
            if verbosity():
                traceback.print_exc(file=sys.stderr)
            raise CliError(cli_text(err)) from err

    return wrapper


def setup_logging(verbose: int) -> None:
    """Log ``tomodl`` messages on stderr at the level ``verbose`` (0 warning, 1 info, 2 debug)."""
    logger = logging.getLogger("tomodl")
    for handler in [h for h in logger.handlers if getattr(h, "_tomodl_cli", False)]:
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler._tomodl_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(LOG_LEVELS[min(int(verbose), 2)])
