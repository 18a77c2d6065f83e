# SPDX-License-Identifier: BSD-3-Clause
"""TomoPy-compatible entry point (placeholder; being written)."""


def recon(tomo, theta, center=None, **kwargs):
    """Placeholder."""
    raise NotImplementedError


def tomopy_algorithm(tomo, center, recon, theta, **kwargs):
    """Placeholder."""
    raise NotImplementedError
