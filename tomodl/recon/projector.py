# SPDX-License-Identifier: BSD-3-Clause
"""The parallel-beam forward projector of tomodl and its exact adjoint, in torch.

One operator on the grid and geometry of the FBP (:mod:`tomodl.recon.geometry`, TomoPy's):
image ``img[row, col]`` of size ``n x n`` with pixel centres ``x = col - x0``,
``y = (n - 1 - row) - x0``; the ray at angle ``theta`` through ``(x, y)`` meets the detector
at column ``u = x cos(theta) + y sin(theta) + center`` (detector pixel centres at integers).

``forward`` uses a separable footprint (SF-TR, :func:`footprint`): the shadow of a pixel (a unit
square) at angle ``theta`` is a trapezoid in the detector coordinate, centred at ``u``, with
base ``a + b``, top ``a - b`` and height ``1 / a`` (``a = max(|cos|, |sin|)``,
``b = min(|cos|, |sin|)``).  Its area is 1, so a pixel of value ``mu`` adds ``mu x 1 pixel`` to
the line integrals of each angle (a uniform disk of attenuation ``mu`` per pixel projects to
``mu`` x chord length in pixels); detector column ``j`` receives the trapezoid's integral over
``[j - 1/2, j + 1/2]``, nonzero only for the three columns around ``round(u)``.  At 0 and 90
degrees the trapezoid is a unit box and the weights are exactly linear interpolation's
``1 - frac(u)`` and ``frac(u)``; unlike linear interpolation, the footprint does not ripple near
45 degrees (a disk, n = 129: 0.36 % relative L2 against the exact chords at 45 degrees, where
linear interpolation gave 6.65 %).
``adjoint`` is its exact transpose, ``s -> sum_theta sum_j w_j(x, y, theta) s_theta[j]``.
:func:`tomodl.recon.fbp.fbp`'s ``"direct"`` back-projection remains linear interpolation at the
same ``u`` (of a 4x band-limited upsampled filtered sinogram, weighted by ``pi / n_angles``):
the FBP is a filtered, weighted back-projection on the same geometry, equal to this operator's
adjoint up to the footprint (both spread a pixel with variance ``1/6`` px^2 at every angle;
0.41 % apart on the smooth sinogram of ``tests/test_projector.py``).

Two backends compute the same operator from the same weights (:func:`footprint`).
``"sparse"`` (chosen by ``"auto"`` when the matrices fit in :data:`SPARSE_BYTES`) builds CSR
matrices of ``A`` and ``A^T`` once per centre and is the faster on batches of slices;
``"grid"`` is matrix-free: per block of angles, the forward scatter-adds ``x * w`` into
(angle, column) with ``index_add_`` and the adjoint gathers the three columns of each pixel
and sums them weighted; blocks bound the working memory.  Both are transposes of each other to
rounding, run unchanged on the CPU and on CUDA, and are differentiable (each one's backward is
the other).
"""
from __future__ import annotations

import functools
import logging
import math
import warnings
from typing import Any, List, Optional, Tuple

import numpy as np

from tomodl.errors import TomodlError
from tomodl.recon.geometry import default_center, image_coordinates

logger = logging.getLogger(__name__)

#: Kernels of :class:`ParallelProjector` (the same operator; ``"auto"`` picks ``"sparse"``
#: when its matrices fit in :data:`SPARSE_BYTES`).
BACKENDS = {
    "auto": "sparse when it fits in SPARSE_BYTES (and its build in RAM / 4), else grid",
    "sparse": "CSR matrices of A and A^T, built once per centre (fast, 16 bytes/nonzero)",
    "grid": "matrix-free: footprint weights per angle block, index_add (A) and gather (A^T)",
}

#: Bytes of temporary memory one angle block may use (on CUDA; on other devices
#: :data:`CPU_BLOCK_BYTES`), and of footprint weights kept cached.
BLOCK_BYTES = 1 << 28
GRID_CACHE_BYTES = 1 << 28
#: Block temporaries on the CPU: small blocks reuse their memory instead of faulting in fresh
#: pages (measured 2.5-4x faster forward and adjoint than with :data:`BLOCK_BYTES`).
CPU_BLOCK_BYTES = 1 << 24

#: Bytes the sparse matrices of ``A`` and ``A^T`` (8 bytes per nonzero each, 3 nonzeros per
#: pixel and angle: 48 bytes) may take; larger geometries use the matrix-free kernels.
SPARSE_BYTES = 3 << 29

#: Peak bytes per pixel and angle while the sparse matrices are built (counting-sort
#: temporaries on top of the 48 kept; measured 133-137 at 256 and 512 px, 60-180 angles).
SPARSE_PEAK_BYTES = 144

#: Pixels x angles per :func:`footprint` call (its float64 temporaries then stay small).
FOOTPRINT_CHUNK = 1 << 18

#: Detector columns of zero padding on each side in the grid kernels: a pixel whose
#: ``round(u)`` is clipped to ``[-2, n_det + 1]`` then writes and reads inside the padding.
_PAD = 3

#: Power iterations of :meth:`ParallelProjector.norm` (from a positive start it converges
#: in a handful: ``A^T A`` has nonnegative entries, so its top eigenvector is positive).
NORM_ITERATIONS = 12



def footprint(x, y, cos, sin, center: float, n_det: int, dtype=None):
    """Separable-footprint (SF-TR) weights of pixels to detector columns, for a block of angles.

    Parameters
    ----------
    x, y : torch.Tensor, shape (n,), float64
        Pixel-centre coordinates of the columns and of the rows
        (:func:`~tomodl.recon.geometry.image_coordinates`), in pixels.
    cos, sin : torch.Tensor, shape (n_block,), float64
        Cosines and sines of the block's angles.
    center : float
        Rotation axis in detector columns.
    n_det : int
        Detector columns.
    dtype : torch.dtype, optional
        Of the weights (default float64); ``u`` and ``round(u)`` are always float64.

    Returns
    -------
    j0 : torch.Tensor, shape (n_block, n * n), int32
        ``round(u)`` of every angle and pixel (pixels row-major, ``img[row, col]``), clipped to
        ``[-2, n_det + 1]`` (a clipped pixel reaches no column of ``[0, n_det)`` either way).
    w : torch.Tensor, shape (3, n_block, n * n)
        Weights to the columns ``j0 - 1``, ``j0``, ``j0 + 1`` (each triple sums to 1): the
        integrals over ``[j - 1/2, j + 1/2]`` of the pixel's trapezoid centred at ``u``.
    """
    import torch

    u = (x[None, None, :] * cos[:, None, None] + y[None, :, None] * sin[:, None, None]
         + center).reshape(cos.shape[0], -1)
    j0 = torch.round(u)
    d = u.sub_(j0).to(dtype or torch.float64)            # in [-1/2, 1/2]
    a = torch.maximum(cos.abs(), sin.abs())[:, None].to(d.dtype)
    b = torch.minimum(cos.abs(), sin.abs())[:, None].to(d.dtype)
    # the trapezoid lies within u +- 0.71 and is symmetric: the weight of column j0 - 1 is its
    # mass left of u - (d + 1/2), that of j0 + 1 its mass left of u - (1/2 - d)
    left = _left_mass(-0.5 - d, a, b)
    right = _left_mass(d - 0.5, a, b)
    w = torch.stack([left, 1.0 - left - right, right])
    return j0.clamp_(-2, n_det + 1).to(torch.int32), w


def _left_mass(t, a, b):
    """Integral up to ``t <= 0`` of the unit-area trapezoid centred at 0 with base ``a + b``,
    top ``a - b`` and height ``1 / a`` (``a >= b >= 0``); exact for ``b = 0`` (a box)."""
    rise = (t + 0.5 * (a + b)).clamp_min_(0.0).minimum(b)        # along the rising edge
    flat = t.add_(0.5 * (a - b)).clamp_min_(0.0)                 # t is consumed
    return (rise * rise * (0.5 / b.clamp_min(1e-30)) + flat) / a


class ParallelProjector:
    """Parallel-beam projector ``A`` on TomoPy's grid and its exact adjoint ``A^T``.

    Parameters
    ----------
    n : int
        Image size ``N`` (``num_gridx`` of the FBP).
    theta : array_like, shape (n_angles,)
        Projection angles in radians, any order and range.
    n_det : int
        Detector columns.
    center : float or array_like of shape (n_rows,), optional
        Rotation axis in detector columns (default TomoPy's ``n_det / 2``).  One value per row
        makes the operator act on stacks ``(..., n_rows, n, n)`` whose row ``r`` uses
        ``center[r]``.
    device : str or torch.device
        Where the operator computes (inputs are moved there).
    dtype : torch.dtype
        Compute dtype (float32; float64 for gradient checks).
    angle_block : int, optional
        Angles per block (default: as many as fit in :data:`BLOCK_BYTES`).

    Notes
    -----
    The configuration is frozen at construction; the grid backend caches the footprint weights
    when they fit in :data:`GRID_CACHE_BYTES`.  Line integrals come out in (attenuation per
    pixel) x pixels, the units of the simulator and of :func:`tomodl.recon.fbp.fbp`'s input.
    """

    def __init__(self, n: int, theta, n_det: int, center=None, *, device: Any = "cpu",
                 dtype: Any = None, angle_block: Optional[int] = None,
                 backend: str = "auto") -> None:
        import torch

        if int(n) != n or n < 2 or int(n_det) != n_det or n_det < 2:
            raise TomodlError(f"n and n_det must be integers >= 2, got n={n!r}, n_det={n_det!r}")
        th = np.asarray(theta, dtype=np.float64).ravel()
        if th.size < 1 or not np.all(np.isfinite(th)):
            raise TomodlError("theta must hold at least one finite angle in radians")
        c = np.asarray(default_center(n_det) if center is None else center, dtype=np.float64)
        if c.ndim > 1 or c.size < 1 or not np.all(np.isfinite(c)):
            raise TomodlError(f"center must be a finite float or one float per row, got {center!r}")
        if angle_block is not None and int(angle_block) < 1:
            raise TomodlError(f"angle_block must be a positive integer, got {angle_block!r}")
        self.n, self.n_det, self.theta = int(n), int(n_det), th
        self.n_angles = th.size
        self.center = float(c) if c.ndim == 0 else c.copy()
        self.per_row = c.ndim == 1
        self.device = torch.device(device)
        self.dtype = dtype or torch.float32
        self._block = angle_block
        self._norm: Optional[float] = None
        centers = np.atleast_1d(c)
        uniq, inverse = np.unique(centers, return_inverse=True)
        # rows sharing a centre are computed together (as channels of one kernel call)
        self._groups: List[Tuple[float, Any]] = [
            (float(v), torch.as_tensor(np.flatnonzero(inverse == k), device=self.device))
            for k, v in enumerate(uniq)]
        self._weights_cache: dict = {}
        self._mats: dict = {}
        per_pixel = len(uniq) * self.n_angles * self.n * self.n
        self.backend = choose_backend(backend, per_pixel, self.device.type == "cuda")
        self._cache = (self.backend == "grid"
                       and per_pixel * (4 + 3 * self._itemsize()) <= GRID_CACHE_BYTES)

    # ------------------------------------------------------------------ geometry
    def _itemsize(self) -> int:
        import torch

        return torch.empty((), dtype=self.dtype).element_size()

    def _weights(self, center: float, a0: int, a1: int):
        """:func:`footprint` of angles ``a0:a1``: ``j0 (nb, n*n)`` int32, ``w (3, nb, n*n)`` in
        the compute dtype (for all angles at once, then cached, when they fit)."""
        import torch

        if self._cache and center in self._weights_cache:
            j0, w = self._weights_cache[center]
            return j0[a0:a1], w[:, a0:a1]
        lo, hi = (0, self.n_angles) if self._cache else (a0, min(a1, self.n_angles))
        kw = {"dtype": torch.float64, "device": self.device}
        x, y = (torch.as_tensor(v, **kw) for v in image_coordinates(self.n))
        cos = torch.as_tensor(np.cos(self.theta[lo:hi]), **kw)
        sin = torch.as_tensor(np.sin(self.theta[lo:hi]), **kw)
        j0 = torch.empty((hi - lo, self.n * self.n), dtype=torch.int32, device=self.device)
        w = torch.empty((3,) + j0.shape, dtype=self.dtype, device=self.device)
        step = max(1, FOOTPRINT_CHUNK // (self.n * self.n))
        for b in range(0, hi - lo, step):         # small temporaries: ~4x faster on the CPU
            j0[b:b + step], w[:, b:b + step] = footprint(
                x, y, cos[b:b + step], sin[b:b + step], center, self.n_det, self.dtype)
        if self._cache:
            self._weights_cache[center] = (j0, w)
            return j0[a0:a1], w[:, a0:a1]
        return j0, w

    def _matrices(self, center: float):
        """CSR matrices ``(A, A^T)`` for rows sharing ``center`` (built once, then cached).

        ``A^T`` has one row per pixel holding the three footprint weights of every angle (no
        sorting needed; columns off the detector hold explicit zeros).  ``A`` holds the same
        weights by detector column (see :meth:`_forward_csr`).
        """
        import torch

        if center in self._mats:
            return self._mats[center]
        n_pix, n_det, n_ang = self.n * self.n, self.n_det, self.n_angles
        dev = self.device
        j0, w = self._weights(center, 0, n_ang)
        bins = j0[None] + torch.arange(-1, 2, dtype=torch.int32, device=dev)[:, None, None]
        vals = (w * ((bins >= 0) & (bins < n_det))).permute(2, 1, 0).reshape(-1)
        base = torch.arange(n_ang, dtype=torch.int32, device=dev)[:, None] * n_det
        cols = (bins.clamp_(0, n_det - 1) + base).permute(2, 1, 0).reshape(-1)
        del bins
        crow_t = torch.arange(0, 3 * n_ang * n_pix + 1, 3 * n_ang, device=dev)
        a = self._forward_csr(j0, w)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            a_t = torch.sparse_csr_tensor(crow_t.to(torch.int32), cols, vals,
                                          size=(n_pix, n_ang * n_det))
        self._mats[center] = (a, a_t)
        return a, a_t

    def _forward_csr(self, j0, w):
        """CSR of ``A`` from :func:`footprint`'s ``j0 (angles, n*n)`` and ``w (3, angles, n*n)``.

        Row ``j`` of an angle holds its pixels with ``j0 = j + 1`` (weight ``w[0]``), then
        ``j0 = j`` (``w[1]``), then ``j0 = j - 1`` (``w[2]``).  The pixels of each angle are
        sorted by ``j0`` (one batched sort), and each entry is placed in its row at its rank
        within its ``j0`` (a counting sort, no global argsort).
        """
        import torch

        n_ang, n_pix = j0.shape
        n_det, dev = self.n_det, j0.device
        width = n_det + 4
        key = j0.long() + 2                                  # j0 in [-2, n_det + 1]
        skey, perm = torch.sort(key, dim=1, stable=True)     # contiguous rows: a fast sort
        rows = torch.arange(n_ang, device=dev)[:, None]
        cnt = torch.bincount((rows * width + key).reshape(-1), minlength=n_ang * width)
        cnt = cnt.reshape(n_ang, width)
        first = torch.cumsum(cnt, 1) - cnt
        rank = torch.arange(n_pix, device=dev)[None, :] - first.gather(1, skey)
        c_next, c_same = cnt[:, 3:n_det + 3], cnt[:, 2:n_det + 2]   # j0 = j + 1, j0 = j
        lengths = c_next + c_same + cnt[:, 1:n_det + 1]              # ... and j0 = j - 1
        crow = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths.reshape(-1), 0)])
        row_start = crow[:-1].reshape(n_ang, n_det)
        nnz = int(crow[-1])
        cols = torch.empty(nnz + 1, dtype=torch.int32, device=dev)  # slot nnz: discarded
        vals = torch.empty(nnz + 1, dtype=w.dtype, device=dev)
        pix = perm.to(torch.int32)
        for k, before in ((-1, None), (0, c_next), (1, c_next + c_same)):
            j = skey + (k - 2)                               # the column this entry goes to
            jc = j.clamp(0, n_det - 1)
            pos = row_start.gather(1, jc) + rank
            if before is not None:
                pos += before.gather(1, jc)
            pos = torch.where((j >= 0) & (j < n_det), pos, nnz)
            cols[pos] = pix
            vals[pos] = w[k + 1].gather(1, perm)
        cols, vals = cols[:nnz], vals[:nnz]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(crow.to(torch.int32), cols, vals,
                                           size=(n_ang * n_det, n_pix))

    def _project_sparse(self, x, center: float):
        a, _ = self._matrices(center)
        ch = x.shape[0]
        out = a @ x.reshape(ch, -1).t().contiguous()
        return out.t().reshape(ch, self.n_angles, self.n_det)

    def _backproject_sparse(self, s, center: float):
        _, a_t = self._matrices(center)
        ch = s.shape[0]
        out = a_t @ s.reshape(ch, -1).t().contiguous()
        return out.t().reshape(ch, self.n, self.n)

    def _angle_step(self, channels: int) -> int:
        if self._block is not None:
            return int(self._block)
        per_angle = self.n * self.n * ((6 * channels + 3) * self._itemsize() + 28)
        budget = BLOCK_BYTES if self.device.type == "cuda" else CPU_BLOCK_BYTES
        return int(max(1, min(self.n_angles, budget // per_angle)))

    # ------------------------------------------------------------------ kernels
    def _block_index(self, j0):
        """Flat indices ``(3, nb, n*n)`` into a zero-padded ``(nb, n_det + 2 _PAD)`` block."""
        import torch

        width = self.n_det + 2 * _PAD
        start = torch.arange(j0.shape[0], device=j0.device)[:, None] * width + _PAD
        return (j0 + start)[None] + torch.arange(-1, 2, device=j0.device)[:, None, None]

    def _project_group(self, x, center: float):
        """``x (C, n, n)`` -> ``(C, n_angles, n_det)`` for rows sharing ``center``."""
        import torch

        ch, width = x.shape[0], self.n_det + 2 * _PAD
        out = torch.empty((ch, self.n_angles, self.n_det), dtype=x.dtype, device=x.device)
        xf = x.reshape(ch, 1, 1, -1)
        step = self._angle_step(ch)
        for a0 in range(0, self.n_angles, step):
            j0, w = self._weights(center, a0, min(self.n_angles, a0 + step))
            nb = j0.shape[0]
            acc = x.new_zeros((ch, nb * width))
            acc.index_add_(1, self._block_index(j0).reshape(-1), (xf * w).reshape(ch, -1))
            out[:, a0:a0 + nb] = acc.reshape(ch, nb, width)[:, :, _PAD:_PAD + self.n_det]
        return out

    def _backproject_group(self, s, center: float):
        """``s (C, n_angles, n_det)`` -> ``(C, n, n)`` for rows sharing ``center``."""
        import torch

        ch, width = s.shape[0], self.n_det + 2 * _PAD
        out = torch.zeros((ch, self.n * self.n), dtype=s.dtype, device=s.device)
        step = self._angle_step(ch)
        for a0 in range(0, self.n_angles, step):
            j0, w = self._weights(center, a0, min(self.n_angles, a0 + step))
            nb = j0.shape[0]
            padded = s.new_zeros((ch, nb, width))
            padded[:, :, _PAD:_PAD + self.n_det] = s[:, a0:a0 + nb]
            got = padded.reshape(ch, -1).index_select(1, self._block_index(j0).reshape(-1))
            out += (got.reshape((ch,) + w.shape) * w).sum((1, 2))
        return out.reshape(ch, self.n, self.n)

    def _apply(self, t, kernel, out_tail):
        """Run ``kernel`` on ``t (..., [rows,] *in_tail)`` group by group of equal centre."""
        import torch

        lead = t.shape[:-2]
        if not self.per_row:
            flat = t.reshape((-1,) + t.shape[-2:])
            return kernel(flat, self.center).reshape(lead + out_tail)
        rows = len(np.atleast_1d(self.center))
        if len(lead) < 1 or lead[-1] != rows:
            raise TomodlError(f"this projector has one centre per row ({rows} rows) but the "
                              f"input has shape {tuple(t.shape)}; pass (..., {rows}, *, *)")
        t3 = t.reshape((-1, rows) + t.shape[-2:])
        out = torch.empty(t3.shape[:2] + out_tail, dtype=t.dtype, device=t.device)
        for center, idx in self._groups:
            sub = t3.index_select(1, idx)
            res = kernel(sub.reshape((-1,) + t.shape[-2:]), center)
            out[:, idx] = res.reshape(sub.shape[:2] + out_tail)
        return out.reshape(lead + out_tail)

    def _check(self, t, tail, what):
        import torch

        t = torch.as_tensor(t)
        if tuple(t.shape[-2:]) != tail or t.ndim < 2:
            raise TomodlError(f"{what} must have shape (..., {tail[0]}, {tail[1]}), got "
                              f"{tuple(t.shape)}")
        return t.to(device=self.device, dtype=self.dtype)

    # ------------------------------------------------------------------ public
    def forward(self, x):
        """Line integrals of images.

        Parameters
        ----------
        x : torch.Tensor or ndarray, shape (..., n, n)
            Attenuation per pixel.

        Returns
        -------
        torch.Tensor, shape (..., n_angles, n_det), the projector's dtype and device
            Line integrals in (attenuation per pixel) x pixels.
        """
        x = self._check(x, (self.n, self.n), "x")
        if x.requires_grad:
            return _functions()[0].apply(x, self)
        return self._forward_raw(x)

    def adjoint(self, s):
        """Exact transpose of :meth:`forward` (unweighted back-projection with the same footprint).

        Parameters
        ----------
        s : torch.Tensor or ndarray, shape (..., n_angles, n_det)

        Returns
        -------
        torch.Tensor, shape (..., n, n)
        """
        s = self._check(s, (self.n_angles, self.n_det), "s")
        if s.requires_grad:
            return _functions()[1].apply(s, self)
        return self._adjoint_raw(s)

    __call__ = forward

    def _forward_raw(self, x):
        import torch

        with torch.no_grad():
            kernel = self._project_sparse if self.backend == "sparse" else self._project_group
            return self._apply(x, kernel, (self.n_angles, self.n_det))

    def _adjoint_raw(self, s):
        import torch

        with torch.no_grad():
            sparse = self.backend == "sparse"
            kernel = self._backproject_sparse if sparse else self._backproject_group
            return self._apply(s, kernel, (self.n, self.n))

    def norm(self) -> float:
        """Operator 2-norm ``||A||`` by power iteration on ``A^T A`` (cached; +-1 % or better)."""
        import torch

        if self._norm is None:
            lead = (len(np.atleast_1d(self.center)),) if self.per_row else ()
            v = torch.ones(lead + (self.n, self.n), dtype=self.dtype, device=self.device)
            est = 0.0
            for _ in range(NORM_ITERATIONS):
                v = v / torch.linalg.vector_norm(v)
                w = self._adjoint_raw(self._forward_raw(v))
                est = float(torch.sum(v * w))
                v = w
            self._norm = math.sqrt(max(est, 0.0))
            logger.debug("projector norm %.4g (n=%d, %d angles)", self._norm, self.n,
                         self.n_angles)
        return self._norm


@functools.lru_cache(maxsize=1)
def _functions():
    """The autograd Functions ``(Forward, Adjoint)``: each one's backward is the other."""
    import torch

    class Forward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, proj):
            ctx.proj = proj
            return proj._forward_raw(x)

        @staticmethod
        def backward(ctx, grad):
            return ctx.proj.adjoint(grad), None

    class Adjoint(torch.autograd.Function):
        @staticmethod
        def forward(ctx, s, proj):
            ctx.proj = proj
            return proj._adjoint_raw(s)

        @staticmethod
        def backward(ctx, grad):
            return ctx.proj.forward(grad), None

    return Forward, Adjoint


def choose_backend(backend: str, pixel_angles: int, cuda: bool = False) -> str:
    """``backend`` with ``"auto"`` resolved for ``pixel_angles`` (pixels x angles x centres):
    ``"sparse"`` when its matrices (48 bytes each) fit in :data:`SPARSE_BYTES` and, on the CPU,
    their build peak (:data:`SPARSE_PEAK_BYTES` each) in a quarter of the available RAM (both
    backends compute the same operator, to float rounding)."""
    if backend not in BACKENDS:
        raise TomodlError(f"Unknown backend {backend!r}; choose one of {list(BACKENDS)}")
    if backend == "auto":
        fits = pixel_angles * 48 <= SPARSE_BYTES
        if fits and not cuda:
            from tomodl.models.memory import available_ram

            fits = pixel_angles * SPARSE_PEAK_BYTES <= available_ram() // 4
        return "sparse" if fits else "grid"
    return backend


def projector_bytes(n: int, n_angles: int, n_centers: int = 1, *, threads: int = 1,
                    cuda: bool = False, backend: str = "auto") -> int:
    """Peak bytes of a :class:`ParallelProjector` on an ``n x n`` grid with ``n_angles`` angles
    and ``n_centers`` distinct centres (what a run's memory budget must hold for it): the
    sparse matrices while they are built (:data:`SPARSE_PEAK_BYTES` per pixel and angle), or
    the grid kernels' cached weights and four blocks of temporaries per thread (weights,
    indices, gathered values; measured 72 MiB at 512 px x 180 angles on one thread)."""
    pixel_angles = int(n_centers) * int(n_angles) * int(n) ** 2
    if choose_backend(backend, pixel_angles, cuda) == "sparse":
        return pixel_angles * SPARSE_PEAK_BYTES
    cache = pixel_angles * 16 if pixel_angles * 16 <= GRID_CACHE_BYTES else 0
    return cache + 4 * max(1, int(threads)) * (BLOCK_BYTES if cuda else CPU_BLOCK_BYTES)
