# SPDX-License-Identifier: BSD-3-Clause
"""The package's own exception types.

Every error a user can cause derives from :class:`TomodlError`, which is also a
``ValueError`` so that ``except ValueError`` in existing scripts keeps working.  The CLI
prints ``str(err)`` on one line and exits with code 2.  Messages name the file, the
dataset and the fix.
"""
from typing import Optional


class TomodlError(ValueError):
    """Base class of every error caused by input or arguments.

    ``TomodlError(problem, fix=..., cli_fix=...)`` reads ``"problem; fix"``.  Where the fix
    names a Python argument (``center=``, ``nonfinite='warn'``), ``cli_fix`` is the advice for
    a command-line user (an option, or none): the CLI prints :meth:`cli_message`, and swaps the
    fix of such an error also where another message quotes it.
    """

    def __init__(self, problem: str = "", *, fix: str = "", cli_fix: Optional[str] = None):
        self.problem, self.fix, self.cli_fix = str(problem), str(fix or ""), cli_fix
        super().__init__(_join(self.problem, self.fix))

    def cli_message(self) -> str:
        """The message with the command-line advice (the same as ``str(self)`` without it)."""
        return str(self) if self.cli_fix is None else _join(self.problem, self.cli_fix)

    def __reduce__(self):  # keep fix/cli_fix through pickling (Dask workers)
        return (_rebuild, (type(self), self.problem, self.fix, self.cli_fix))


def _join(problem: str, fix: str) -> str:
    return f"{problem}; {fix}" if fix else problem


def _rebuild(cls, problem, fix, cli_fix):
    return cls(problem, fix=fix, cli_fix=cli_fix)


class ScanFileError(TomodlError):
    """A scan file cannot be read: not HDF5, truncated, missing or malformed datasets."""


class WeightsError(TomodlError):
    """Model weights are missing, corrupt, or do not match the requested architecture."""


class OutputError(TomodlError):
    """An output cannot be written: exists (no overwrite), would replace the input, no space."""


class SelectionError(TomodlError):
    """A ``proj=`` / ``sino=`` range selects nothing or is malformed (step <= 0, not a range)."""


class SimulationError(TomodlError):
    """Simulation parameters that cannot be realised (spheres that cannot fit, zero angles...)."""


class ConfigError(TomodlError):
    """A training configuration is invalid: unknown key, bad value or missing data file."""


class PairsFileError(TomodlError):
    """A pairs file is missing a split or its datasets do not match the documented format."""


class GeometryError(TomodlError):
    """Angles or rotation axis that cannot give an image (one direction, axis off the detector)."""


class ChunkError(TomodlError):
    """A chunk of rows failed; finished chunks are kept in the partial output for a rerun."""
