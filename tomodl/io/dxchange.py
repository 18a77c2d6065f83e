# SPDX-License-Identifier: BSD-3-Clause
"""DXchange / NeXus readers (placeholder; being written)."""


def read_dx(path, proj=None, sino=None):
    """Read a DXchange scan. Placeholder."""
    raise NotImplementedError
