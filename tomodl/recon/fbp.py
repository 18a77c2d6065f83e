# SPDX-License-Identifier: BSD-3-Clause
"""Parallel-beam filtered back-projection (FBP), a drop-in for TomoPy's gridrec.

Same array layout, angle and centre conventions, orientation and pixel grid as
``tomopy.recon(..., algorithm="gridrec")`` (see :mod:`tomodl.recon.geometry`) and TomoPy's
filter definitions (:mod:`tomodl.recon.filters`), but the intensities are the true
attenuation per pixel (gridrec's scale depends on the detector width: +10 % at 640 columns,
+0.4 % at 256, -0.4 % at 1024; see ``docs/fbp.md``).

Pipeline, shared by every method and device:

1. each detector row is zero-padded to ``n_pad >= 2 n_det`` (no wrap-around), multiplied
   in Fourier space by the filter and by the phase ramp that moves the row's rotation axis
   (a float per row) onto a sample, and cut to a window of odd length ``L`` centred on the
   axis that covers the whole ``N x N`` output grid;
2. the windows are back-projected, ``(pi / n_angles) * sum_theta q_theta(x cos + y sin)``,
   by one of :data:`METHODS`: ``"fourier"`` (band-limited interpolation computed as an
   adjoint NUFFT, :mod:`tomodl.recon.nufft`; cost ``~ N^2 log N + n_angles L`` per slice plus a
   plan shared by all slices) or ``"direct"`` (linear interpolation of the 4x band-limited
   upsampled windows, one fused gather per pixel and angle, ``torch.nn.functional.grid_sample``;
   cost ``N^2 n_angles`` per slice).  Both compute the same band-limited FBP (they agree to
   ~0.2 % RMS); ``method="auto"`` picks the cheaper by :func:`estimate_cost`, which is
   ``"fourier"`` except for a handful of angles on small grids.
"""
from __future__ import annotations

import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import numpy as np

from tomodl.backend import resolve_device, to_tensor, torch_threads
from tomodl.errors import TomodlError
from tomodl.recon.filters import check_filter_name, get_filter
from tomodl.recon.geometry import (check_angles, check_center, default_center, grid_origin,
                                    image_coordinates)
from tomodl.recon.nufft import backproject as nufft_backproject
from tomodl.recon.nufft import fast_len, make_plan

logger = logging.getLogger(__name__)

#: Bytes of working memory one chunk of rows may use.
CHUNK_BYTES = 1 << 30


@dataclass(frozen=True)
class Setup:
    """Geometry shared by all rows of one :func:`fbp` call.

    Attributes
    ----------
    theta : ndarray, shape (n_angles,), float64
        Angles in radians.
    n, n_det, n_pad, length : int
        Output size ``N``, detector columns, padded FFT length, odd window length ``L``.
    x0 : float
        Column of the rotation axis in the output grid (:func:`~tomodl.recon.geometry.grid_origin`).
    filt : torch.Tensor
        ``(n_pad // 2 + 1,)`` float32 filter response on the compute device.
    """

    theta: np.ndarray
    n: int
    n_det: int
    n_pad: int
    length: int
    x0: float
    filt: Any


@dataclass(frozen=True)
class Method:
    """A back-projector: ``prepare(setup, workers) -> state`` once, then
    ``apply(windows, setup, state) -> images`` per task."""

    prepare: Callable[[Setup, int], Any]
    apply: Callable[[Any, Setup, Any], Any]
    doc: str


#: Upsampling of the windows before the direct method's linear interpolation.
DIRECT_UPSAMPLING = 4


def _prepare_direct(setup: Setup, workers: int = 1):
    import torch

    dev = setup.filt.device
    x, y = (torch.as_tensor(v, dtype=torch.float32, device=dev) for v in image_coordinates(setup.n))
    th = torch.as_tensor(setup.theta, dtype=torch.float32, device=dev)
    return x, y, torch.cos(th), torch.sin(th)


def _upsample(windows, factor: int):
    """Band-limited (trigonometric) upsampling of odd-length windows by ``factor``, same centre."""
    import torch

    length = windows.shape[-1]
    spec = torch.fft.rfft(windows, dim=-1)
    fine = torch.fft.irfft(spec, n=factor * length, dim=-1) * factor
    return fine[..., : factor * (length - 1) + 1]  # sample i of the window at fine index factor * i


def _apply_direct(windows, setup: Setup, state):
    """Linear interpolation of upsampled windows, all rows of the chunk sharing each sample grid."""
    import torch
    import torch.nn.functional as F

    x, y, cos, sin = state
    rows, n_ang, length = windows.shape
    n = setup.n
    fine = _upsample(windows, DIRECT_UPSAMPLING)
    inp = fine.permute(1, 0, 2).unsqueeze(2).contiguous()  # (angles, rows, 1, U (L - 1) + 1)
    out = torch.zeros((rows, n, n), dtype=windows.dtype, device=windows.device)
    step = max(1, CHUNK_BYTES // (16 * n * n * (rows + 3)))
    scale = 2.0 / (length - 1)  # window centre -> 0, window ends -> -1, +1
    for a0 in range(0, n_ang, step):
        c, s = cos[a0:a0 + step, None, None], sin[a0:a0 + step, None, None]
        gx = (x[None, None, :] * c + y[None, :, None] * s) * scale
        grid = torch.stack([gx, torch.zeros_like(gx)], dim=-1)
        out += F.grid_sample(inp[a0:a0 + step], grid, mode="bilinear", padding_mode="zeros",
                             align_corners=True).sum(0)
    return out * (math.pi / n_ang)


def _prepare_fourier(setup: Setup, workers: int = 1):
    return make_plan(setup.theta, setup.n, setup.length, setup.x0, setup.filt.device,
                     workers=workers)


def _apply_fourier(windows, setup: Setup, plan):
    return nufft_backproject(windows, plan)


#: Back-projection methods by name (``method="auto"`` chooses among them).
METHODS: Dict[str, Method] = {
    "direct": Method(_prepare_direct, _apply_direct,
                     "linear interpolation of 4x upsampled projections, per pixel and angle"),
    "fourier": Method(_prepare_fourier, _apply_fourier,
                      "band-limited interpolation via an adjoint NUFFT (gridding, ES kernel)"),
}


def estimate_cost(method: str, n: int, n_angles: int, n_rows: int,
                  length: Optional[int] = None) -> float:
    """Rough single-thread CPU time in seconds of back-projecting ``n_rows`` slices.

    Constants were fitted on a 2-core AVX-512 machine (torch 2.13, MKL); only the ratio of
    the two methods matters for ``method="auto"``.
    """
    length = length or int(1.42 * n) + 8
    if method == "direct":
        return 1e-3 + 1.1e-8 * n * n * n_angles * (n_rows + 1)
    m = 1.5 * n + 8
    points = n_angles * length
    plan = 5e-3 + 6e-7 * points + 4e-8 * m * m
    per_row = 1e-3 + 1.6e-8 * points + 0.5e-9 * m * m * math.log2(m) + 5e-9 * n * n
    return plan + n_rows * per_row


#: ``method="auto"`` compares costs for this many rows, whatever the call's row count, so the
#: choice (and hence the result, to ~0.2 % RMS) depends on the geometry only, never on chunking.
AUTO_NOMINAL_ROWS = 16


def _choose_method(method: str, setup: Setup, n_rows: int) -> str:
    if method == "auto":
        del n_rows  # deliberately unused: see AUTO_NOMINAL_ROWS
        costs = {name: estimate_cost(name, setup.n, len(setup.theta), AUTO_NOMINAL_ROWS,
                                     setup.length)
                 for name in METHODS}
        method = min(costs, key=costs.get)
        logger.debug("fbp method costs %s -> %s", costs, method)
        return method
    if method not in METHODS:
        raise TomodlError(f"Unknown method {method!r}; choose one of {['auto', *METHODS]}")
    return method


def _filtered_windows(rows, centers, setup: Setup):
    """Filter rows ``(R, n_angles, n_det)``, cut windows ``(R, n_angles, L)`` around the axis."""
    import torch

    n_pad, length = setup.n_pad, setup.length
    spec = torch.fft.rfft(rows, n=n_pad, dim=-1)
    c_int = torch.floor(centers)
    frac = (centers - c_int).to(torch.float64)
    freq = torch.arange(n_pad // 2 + 1, dtype=torch.float64, device=rows.device) / n_pad
    shift = torch.polar(torch.ones_like(frac[:, None] * freq), 2 * math.pi * frac[:, None] * freq)
    spec = spec * (shift.to(torch.complex64) * setup.filt)[:, None, :]
    q = torch.fft.irfft(spec, n=n_pad, dim=-1)
    h = (length - 1) // 2
    out = torch.empty(q.shape[:2] + (length,), dtype=q.dtype, device=q.device)
    for r, start in enumerate(((c_int.long() - h) % n_pad).tolist()):
        k = min(length, n_pad - start)  # the window may wrap around the padded row
        out[r, :, :k] = q[r, :, start:start + k]
        out[r, :, k:] = q[r, :, :length - k]
    return out


def make_setup(n_det: int, theta, n: int, filter_name: str, filter_par, device) -> Setup:
    """Sizes, filter and grid of one reconstruction (see :class:`Setup`)."""
    import torch

    x, y = image_coordinates(n)
    reach = float(np.sqrt(np.max(x**2)[()] + np.max(y**2)[()]))
    length = fast_len(2 * math.ceil(reach) + 5, parity="odd")
    n_pad = fast_len(max(2 * n_det, length + 1))
    filt = torch.as_tensor(get_filter(filter_name, n_pad, filter_par), device=device)
    return Setup(theta=np.asarray(theta, np.float64), n=n, n_det=n_det, n_pad=n_pad,
                 length=length, x0=grid_origin(n), filt=filt)


def _check_args(shape, theta, center, num_gridx):
    if len(shape) != 3:
        raise TomodlError(
            f"sino must be 3-D (n_rows, n_angles, n_det) in sinogram order, got shape "
            f"{tuple(shape)}; "
            "for one sinogram pass sino[None]")
    n_rows, n_ang, n_det = shape
    if n_ang < 1 or n_det < 2:
        raise TomodlError("sino needs at least 1 angle and 2 detector columns, got shape "
                          f"{tuple(shape)}")
    th = np.asarray(theta, dtype=np.float64)
    if th.ndim != 1 or th.size != n_ang:
        raise TomodlError(f"theta has {th.size} angles but sino has {n_ang} (axis 1); pass one "
                          "angle "
                          "in radians per projection")
    if not np.all(np.isfinite(th)):
        raise TomodlError("theta contains NaN or Inf")
    c = default_center(n_det) if center is None else center
    c = np.asarray(c, dtype=np.float64)
    if c.ndim > 1 or (c.ndim == 1 and c.size not in (1, n_rows)):
        raise TomodlError(f"center must be a float or one float per row ({n_rows}), got shape "
                          f"{c.shape}")
    if not np.all(np.isfinite(c)):
        raise TomodlError("center contains NaN or Inf")
    check_angles(th)
    check_center(c, n_det)
    n = n_det if num_gridx is None else int(num_gridx)
    if num_gridx is not None and (n != num_gridx or n < 2):
        raise TomodlError(f"num_gridx must be an integer >= 2, got {num_gridx!r}")
    return th, np.broadcast_to(c.ravel() if c.ndim else c, (n_rows,)).copy(), n


def _rows_per_task(method: str, setup: Setup, n_rows: int, workers: int) -> int:
    """Rows filtered and back-projected together: a pair for ``fourier`` (one complex FFT)."""
    if method == "fourier":
        return 2
    per_row = 4 * len(setup.theta) * (3 * setup.n_pad + 6 * setup.length) + 8 * setup.n**2
    rows = int(max(2, min(16, CHUNK_BYTES // (workers * per_row))))
    return min(n_rows, rows)


@dataclass(frozen=True)
class FbpPlan:
    """What :func:`fbp` precomputes for one geometry, built once by :func:`fbp_plan` and
    reused for every chunk of rows (read-only once built, so threads may share it).

    It depends on the angles, the detector width, the output grid, the filter, the method and
    the device, not on the rotation axis (the centres only move the windows).

    Attributes
    ----------
    setup : Setup
        Sizes, filter response and grid.
    method : str
        The resolved back-projector, a key of :data:`METHODS`.
    state : object
        That method's precomputed state (the gridding matrix for ``"fourier"``).
    filter_name : str
    filter_par : tuple of float or None
    """

    setup: Setup
    method: str
    state: Any
    filter_name: str
    filter_par: Optional[tuple]

    def check(self, n_det: int, theta, n: int, filter_name: str, filter_par, method: str,
              device) -> None:
        """Raise ValueError unless this plan was built for exactly this reconstruction."""
        su = self.setup
        wrong = []
        if (n_det, n) != (su.n_det, su.n):
            wrong.append(f"n_det, N = {n_det}, {n} (plan: {su.n_det}, {su.n})")
        th = np.asarray(theta, np.float64)
        if th.shape != su.theta.shape or not np.array_equal(th, su.theta):
            wrong.append(f"theta ({th.size} angles differ from the plan's {su.theta.size})")
        if (filter_name, _par(filter_par)) != (self.filter_name, self.filter_par):
            wrong.append(f"filter {filter_name!r} {filter_par} (plan: {self.filter_name!r} "
                         f"{self.filter_par})")
        if method not in ("auto", self.method):
            wrong.append(f"method {method!r} (plan: {self.method!r})")
        if device != su.filt.device:
            wrong.append(f"device {device} (plan: {su.filt.device})")
        if wrong:
            raise ValueError("this FBP plan was built for another reconstruction: "
                             + "; ".join(wrong) + "; build one with fbp_plan() for this data")


def _par(filter_par) -> Optional[tuple]:
    return None if filter_par is None else tuple(float(v) for v in np.ravel(filter_par))


def fbp_plan(n_det: int, theta, num_gridx: Optional[int] = None, *, filter_name="shepp",
             filter_par=None, method="auto", device="auto", ncore=None) -> FbpPlan:
    """Precompute :func:`fbp`'s plan once, to pass as ``fbp(..., plan=...)`` to every chunk.

    Parameters are :func:`fbp`'s (``n_det`` = detector columns, ``sino.shape[2]``); ``device``
    ``"auto"`` follows :func:`tomodl.backend.resolve_device` (CUDA when available), so pass the
    device of GPU inputs explicitly.  ``ncore`` threads fill the matrix.

    Returns
    -------
    FbpPlan
    """
    import torch

    check_filter_name(filter_name)
    if method != "auto" and method not in METHODS:
        raise TomodlError(f"Unknown method {method!r}; choose one of {['auto', *METHODS]}")
    th, _, n = _check_args((1, np.size(theta), int(n_det)), theta, None, num_gridx)
    dev = torch.device(device) if isinstance(device, torch.device) else resolve_device(device)
    with torch.no_grad():
        setup = make_setup(int(n_det), th, n, filter_name, filter_par, dev)
        name = _choose_method(method, setup, AUTO_NOMINAL_ROWS)
        with torch_threads(1 if dev.type == "cpu" else None):
            state = METHODS[name].prepare(setup, _workers(dev, ncore))
    return FbpPlan(setup, name, state, filter_name, _par(filter_par))


def _workers(dev, ncore: Optional[int]) -> int:
    import torch

    if dev.type != "cpu":
        return 1
    workers = int(ncore) if ncore else torch.get_num_threads()
    return min(os.cpu_count() or 1, workers)


def fbp(sino, theta, center=None, *, filter_name="shepp", filter_par=None, num_gridx=None,
        method="auto", device="auto", ncore=None, plan: Optional[FbpPlan] = None):
    """Filtered back-projection of parallel-beam sinograms, TomoPy-gridrec compatible.

    Parameters
    ----------
    sino : numpy.ndarray, torch.Tensor or cupy.ndarray, shape (n_rows, n_angles, n_det)
        Sinograms (``-log`` of the normalized transmission, in units of attenuation x pixels),
        any real dtype; computed in float32.
    theta : array_like, shape (n_angles,)
        Angles in radians, any order and range (sparse, unsorted, not ending at pi).  Every
        projection gets the weight ``pi / n_angles``, as in gridrec.
    center : float or array_like of shape (n_rows,), optional
        Rotation axis in detector columns (pixel centres at integers); default TomoPy's
        ``n_det / 2``.
    filter_name : str
        One of :data:`tomodl.recon.filters.FILTERS` (TomoPy's names); default ``"shepp"``.
    filter_par : sequence of float, optional
        TomoPy's ``filter_par`` ``[p0, p1]``, default ``[0.5, 8]``.
    num_gridx : int, optional
        Output size ``N`` (default ``n_det``); the grid is TomoPy's (:mod:`tomodl.recon.geometry`).
    method : str
        ``"auto"`` or one of :data:`METHODS`.
    device : str or torch.device
        ``"auto"`` (the input's GPU, else CUDA when available, else CPU), ``"cpu"``, ``"cuda[:N]"``.
    ncore : int, optional
        Torch CPU threads for this call (default: torch's setting).
    plan : FbpPlan, optional
        From :func:`fbp_plan` with the same ``n_det``, ``theta``, ``num_gridx``, filter,
        method and device (checked: ValueError otherwise); default: built for this call.
        Pass one to reuse it across chunks of rows (the centres may differ).

    Returns
    -------
    array of the input's kind, shape (n_rows, N, N), float32
        Attenuation per pixel (a uniform disk of mu per pixel reconstructs to mu).
    """
    import torch

    check_filter_name(filter_name)
    if method != "auto" and method not in METHODS:
        raise TomodlError(f"Unknown method {method!r}; choose one of {['auto', *METHODS]}")
    th, centers, n = _check_args(tuple(sino.shape), theta, center, num_gridx)
    if ncore is not None and int(ncore) < 1:
        raise TomodlError(f"ncore must be a positive number of threads, got {ncore}")
    with torch.no_grad():
        s, back = to_tensor(sino, device)
        if not bool(torch.isfinite(s).all()):
            raise TomodlError("sino contains NaN or Inf (check flat/dark normalization and -log)")
        if plan is not None:
            plan.check(s.shape[2], th, n, filter_name, filter_par, method, s.device)
        if s.shape[0] == 0:
            return back(torch.empty((0, n, n), dtype=torch.float32, device=s.device))
        if plan is None:
            plan = fbp_plan(s.shape[2], th, n, filter_name=filter_name, filter_par=filter_par,
                            method=method, device=s.device, ncore=ncore)
        c = torch.as_tensor(centers, dtype=torch.float64, device=s.device)
        return back(_reconstruct(s, c, plan, ncore))


def _reconstruct(s, centers, plan: FbpPlan, ncore: Optional[int]):
    """Filter and back-project all rows of ``s``, in parallel tasks of a few rows on the CPU.

    On the CPU, ``ncore`` Python threads each run whole tasks with one torch thread (torch
    releases the GIL): no per-operation barrier, so a busy machine slows the job down
    gracefully instead of stalling every operation.  On a GPU the tasks run in sequence.
    """
    import torch

    setup, name, state = plan.setup, plan.method, plan.state
    n_rows, n = s.shape[0], setup.n
    cpu = s.device.type == "cpu"
    workers = _workers(s.device, ncore)
    out = torch.empty((n_rows, n, n), dtype=torch.float32, device=s.device)
    step = _rows_per_task(name, setup, n_rows, workers)

    def task(r0: int) -> None:
        windows = _filtered_windows(s[r0:r0 + step], centers[r0:r0 + step], setup)
        out[r0:r0 + step] = METHODS[name].apply(windows, setup, state)

    starts = range(0, n_rows, step)
    with torch_threads(1 if cpu else None):
        if workers == 1 or len(starts) == 1:
            for r0 in starts:
                task(r0)
        else:
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(task, starts))
    return out
