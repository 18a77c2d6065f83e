# SPDX-License-Identifier: BSD-3-Clause
"""Memory budget of a chunked reconstruction: how many detector rows fit in one chunk.

A run keeps several chunks alive at once (:mod:`tomodl.recon.conveyor`): one being read and
pre-processed, ``queue_depth`` waiting to be reconstructed, one being reconstructed,
``queue_depth`` waiting to be written and one being written.  Per detector row of a chunk, with
``A`` angles, ``F`` flats + darks, ``D`` detector columns and an ``N x N`` output grid, the bytes
alive are (float32 everywhere):

==========================  =====================================================
reader                      ``4 D (3 A + F)``: raw frames, normalized, ``-log``
input queue                 ``4 D A`` per queued chunk
reconstruction              ``4 D A`` (line integrals) + ``4 D A`` (sinogram copy)
                            + ``4 N^2`` (FBP slices) [+ ``4 N^2`` denoised slices]
output queue and writer     ``4 N^2`` per chunk
refinement (``--refine``)   ``96 N^2 + 16 D A``: the solver's images, gradients and duals
==========================  =====================================================

On top come fixed amounts that do not grow with the chunk: the FBP workspace (each CPU thread
filters and back-projects two rows at a time: padded sinograms, FFT buffers and an
oversampled grid, :func:`fbp_workspace`), with ``--refine`` the projector
(:func:`tomodl.recon.projector.projector_bytes`: its sparse matrices at their build peak) and,
with a denoiser on the CPU, its weights and activations (:func:`denoiser_memory`).
:func:`plan_memory` splits one budget once between the network (passed on as ``max_memory``
to :func:`tomodl.models.inference.denoise`) and the chunks: the network gets at least its
minimum (one whole slice, or tiles whose core is at least :data:`MIN_TILE_MARGINS` receptive
margins wide, so tiling never costs more than 4x the computation), and a budget below the
minimum of the whole run is refused with the exact minimum, which then works.
``scripts/bench_volume.py`` prints this estimate next to the measured peak RSS.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Optional

#: Fraction of the available RAM used when no ``max_memory`` is given.
MEMORY_FRACTION = 0.5
#: At least this many chunks (when there are that many rows): reading and writing then
#: overlap the computation, and the progress bar moves.
MIN_CHUNKS = 8
#: Bytes per (angle x padded detector column) and per output pixel of one row in the FBP
#: workspace (complex128 padded rows, complex64 2x oversampled grid; conservative).
FBP_BYTES_PER_SINO_PIXEL = 48
FBP_BYTES_PER_GRID_PIXEL = 32
#: Bytes per output pixel and per (angle x detector column) of one row being refined
#: (:func:`tomodl.recon.refine.solve`: ~24 float32 images, gradients, temporaries and the
#: returned copy; measured 69-102 bytes per pixel at 256 px, 90 angles, 8-32 rows; 4
#: sinogram-sized duals and residuals).
REFINE_BYTES_PER_GRID_PIXEL = 96
REFINE_BYTES_PER_SINO_PIXEL = 16
#: Slices per denoiser batch that the budget is sized for on the CPU (more does not speed up).
DENOISE_BATCH = 4
#: Smallest tile core the network is given, in receptive margins (a tile of core ``c`` and
#: margin ``m`` computes ``((c + 2 m) / c)^2`` times the pixels it keeps: at most 4x here).
MIN_TILE_MARGINS = 2
#: Units accepted by :func:`parse_memory` (powers of 1024; ``GB`` = ``GiB``).
MEMORY_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
                "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40,
                "tib": 2**40}


def parse_memory(value: Any) -> int:
    """Bytes from ``4096``, ``"512M"``, ``"2.5G"``, ``"8GiB"`` (units :data:`MEMORY_UNITS`).

    Raises
    ------
    ValueError
        Not a positive size with a known unit.
    """
    if isinstance(value, (int, float)) and value > 0:
        return int(value)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in MEMORY_UNITS or float(match.group(1)) <= 0:
        raise ValueError(f"memory size {value!r} is not understood; write e.g. 512M, 8G or a "
                         f"number of bytes (units {sorted(set(MEMORY_UNITS) - {''})})")
    return int(float(match.group(1)) * MEMORY_UNITS[unit])


def default_max_memory() -> int:
    """:data:`MEMORY_FRACTION` of the available RAM, bytes."""
    from tomodl.models.memory import available_ram

    return int(MEMORY_FRACTION * available_ram())


def fbp_plan_bytes(n_angles: int, n_grid: int) -> int:
    """Bytes of the FBP plan that a run keeps from its first chunk to its end
    (:func:`tomodl.recon.fbp.fbp_plan`): the Fourier method's gridding matrix (``W^2`` entries of
    a float32 value and an int32 column per polar sample, ``~sqrt(2) N`` samples per angle), its
    int32 row pointers over the oversampled grid and one complex64 phase per sample.  An upper
    bound: the direct method's plan is far smaller."""
    from tomodl.recon.geometry import grid_origin
    from tomodl.recon.nufft import KERNEL_WIDTH, OVERSAMPLING, fast_len

    reach = math.sqrt(2.0) * max(grid_origin(n_grid), n_grid - 1 - grid_origin(n_grid))
    length = fast_len(2 * math.ceil(reach) + 5, parity="odd")          # make_setup's window
    m = fast_len(max(math.ceil(OVERSAMPLING * n_grid), n_grid + 2 * KERNEL_WIDTH), parity="even")
    samples = n_angles * length
    return int(samples * (8 * KERNEL_WIDTH ** 2 + 8) + 4 * (m * m + 1))


def fbp_workspace(n_angles: int, n_det: int, n_grid: int, threads: int) -> int:
    """Bytes of FBP scratch memory: ``threads`` tasks of two rows each (see module docstring)."""
    pad = 2 ** math.ceil(math.log2(max(2 * n_det, 2)))
    per_row = FBP_BYTES_PER_SINO_PIXEL * n_angles * pad + FBP_BYTES_PER_GRID_PIXEL * n_grid ** 2
    return int(2 * max(1, threads) * per_row)


@dataclass(frozen=True)
class DenoiserMemory:
    """Bytes the denoiser needs on the CPU (weights and activations included).

    ``minimum``: one whole slice, or the smallest sane tile (:data:`MIN_TILE_MARGINS`) plus the
    whole-slice buffers, whichever is less; ``wanted``: :data:`DENOISE_BATCH` whole slices.
    """

    minimum: int
    wanted: int

    def share(self, free: int) -> int:
        """Bytes given to the network out of ``free``: ``wanted`` at most, never below
        ``minimum``."""
        return int(min(self.wanted, max(self.minimum, free)))


def denoiser_memory(module: Any, n_grid: int, dtype: Any) -> DenoiserMemory:
    """What :func:`tomodl.models.inference.plan_denoise` needs for ``N x N`` slices: with
    ``max_memory=minimum`` it runs whole slices or tiles of a core of at least
    :data:`MIN_TILE_MARGINS` receptive margins."""
    from tomodl.models.memory import IO_BYTES_PER_PIXEL, bytes_per_pixel, fixed_bytes

    m, margin = int(module.size_multiple), int(module.receptive_margin)
    side = m * math.ceil(n_grid / m)
    bpp = bytes_per_pixel(module, dtype)
    whole = (bpp + IO_BYTES_PER_PIXEL) * side ** 2
    core = m * math.ceil(MIN_TILE_MARGINS * margin / m)
    tiled = IO_BYTES_PER_PIXEL * side ** 2 + bpp * (core + 2 * margin + 1) ** 2
    weights = fixed_bytes(module)
    minimum = weights + math.ceil(min(whole, tiled))
    return DenoiserMemory(minimum, max(minimum, weights + math.ceil(DENOISE_BATCH * whole)))


@dataclass(frozen=True)
class MemoryPlan:
    """Estimated memory of a run: ``fixed + denoiser + rows * per_row`` bytes; ``rows`` per
    chunk; ``denoiser``: bytes given to the network on the CPU (0 without one)."""

    fixed: int
    per_row: int
    rows: int
    budget: int
    denoiser: int = 0

    @property
    def peak(self) -> int:
        """Estimated peak bytes above the interpreter and libraries."""
        return self.fixed + self.denoiser + self.rows * self.per_row


def per_row_bytes(info: Any, n_grid: int, queue_depth: int, denoised: bool,
                  refined: bool = False) -> int:
    """Bytes alive per detector row of a chunk (module docstring table)."""
    a, d = info.n_angles, info.n_det
    frames = 4 * d * (3 * a + info.n_flat + info.n_dark + queue_depth * a + 2 * a)
    slices = 4 * n_grid ** 2 * ((2 if denoised else 1) + queue_depth + 1)
    refine = (REFINE_BYTES_PER_GRID_PIXEL * n_grid ** 2 + REFINE_BYTES_PER_SINO_PIXEL * d * a
              if refined else 0)
    return int(frames + slices + refine)


def plan_memory(info: Any, n_rows: int, *, n_grid: int, queue_depth: int, budget: int,
                fixed: int, denoised: bool, nsino_per_chunk: Optional[int] = None,
                denoiser: Optional[DenoiserMemory] = None, refined: bool = False) -> MemoryPlan:
    """Split ``budget`` once between the network and the chunks.

    The network (``denoiser``, on the CPU) gets what it wants, at most half of what is left
    after ``fixed`` and never below its minimum; the chunks get ``nsino_per_chunk`` rows, else
    as many as fit the rest (even, so that the FBP's row pairs are the same in every run, and
    at most ``n_rows / MIN_CHUNKS``).

    Raises
    ------
    ValueError
        ``budget`` cannot hold the workspace, the network's minimum and one row; the message
        names the smallest budget that works.
    """
    per_row = per_row_bytes(info, n_grid, queue_depth, denoised, refined)
    net = 0
    if denoiser is not None:
        net = denoiser.share(min((budget - fixed) // 2, budget - fixed - per_row))
    if nsino_per_chunk is not None:
        return MemoryPlan(fixed, per_row, min(int(nsino_per_chunk), n_rows), budget, net)
    fit = (budget - fixed - net) // per_row
    if fit < 1:
        need = math.ceil((fixed + net + per_row) / 2**20)
        net_msg = "" if denoiser is None else \
            f", {net / 2**20:.1f} MiB for the denoiser (weights and activations)"
        raise ValueError(f"max_memory {budget / 2**20:.1f} MiB is too small for this scan: it "
                         f"needs {fixed / 2**20:.1f} MiB of FBP (and refinement) workspace"
                         f"{net_msg} and "
                         f"{per_row / 2**20:.1f} MiB per row of a chunk; pass --max-memory "
                         f"{need}M or more, or fewer threads with --ncore")
    rows = int(min(fit, max(1, math.ceil(n_rows / MIN_CHUNKS))))
    if rows > 1:
        rows -= rows % 2
    return MemoryPlan(fixed, per_row, rows, budget, net)


def cpu_threads(ncore: Optional[int]) -> int:
    """Threads one FBP call uses: ``ncore`` or every core."""
    return int(ncore) if ncore else (os.cpu_count() or 1)
