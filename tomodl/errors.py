# SPDX-License-Identifier: BSD-3-Clause
"""The package's own exception types.

Every error a user can cause derives from :class:`TomodlError`, which is also a
``ValueError`` so that ``except ValueError`` in existing scripts keeps working.  The CLI
prints ``str(err)`` on one line and exits with code 2.  Messages name the file, the
dataset and the fix.
"""


class TomodlError(ValueError):
    """Base class of every error caused by input or arguments."""


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


class ChunkError(TomodlError):
    """A chunk of rows failed; finished chunks are kept in the partial output for a rerun."""
