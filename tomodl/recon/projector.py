# SPDX-License-Identifier: BSD-3-Clause
"""The parallel-beam forward projector of tomodl and its exact adjoint, in torch.

One operator on the grid and geometry of the FBP (:mod:`tomodl.recon.geometry`, TomoPy's):
image ``img[row, col]`` of size ``n x n`` with pixel centres ``x = col - x0``,
``y = (n - 1 - row) - x0``; the ray at angle ``theta`` through ``(x, y)`` meets the detector
at column ``u = x cos(theta) + y sin(theta) + center`` (detector pixel centres at integers).

``forward`` is pixel-driven: each pixel's value is split between the two detector columns
around ``u`` with linear-interpolation weights ``1 - frac(u)`` and ``frac(u)`` (a pixel
of value ``mu`` adds ``mu x 1 pixel`` to the line integrals of each angle, so a uniform
disk of attenuation ``mu`` per pixel projects to ``mu`` x chord length in pixels).
``adjoint`` is its exact transpose, the linear-interpolation back-projection
``sum_theta s_theta(x cos + y sin + center)``: the back-projection of
:func:`tomodl.recon.fbp.fbp`'s ``"direct"`` method, which interpolates the filtered
sinogram at the same ``u`` (on a 4x band-limited upsampled copy) and weights it by
``pi / n_angles``; the FBP is a filtered, weighted adjoint of this operator.

Two backends compute the same operator.  ``"sparse"`` (chosen by ``"auto"`` when the matrices
fit in :data:`SPARSE_BYTES`) builds CSR matrices of ``A`` and ``A^T`` once per
centre and is ~10x faster on batches of slices; ``"grid"`` is matrix-free: one
``torch.nn.functional.grid_sample`` call (the gather) and its input-gradient kernel (the
scatter) on the same sampling grid, with angles in blocks that bound the working memory.  Both
are transposes of each other to rounding, run unchanged on the CPU and on CUDA, and are
differentiable (each one's backward is the other).
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
    "auto": "sparse when it fits in SPARSE_BYTES, else grid",
    "sparse": "CSR matrices of A and A^T, built once per centre (fast, 16 bytes/nonzero)",
    "grid": "matrix-free: grid_sample (gather) and its input gradient (scatter), angle blocks",
}

#: Bytes of temporary memory one angle block may use, and of sampling grids kept cached.
BLOCK_BYTES = 1 << 28
GRID_CACHE_BYTES = 1 << 28

#: Bytes the sparse matrices of ``A`` and ``A^T`` (8 bytes per nonzero each, 2 nonzeros per
#: pixel and angle) may take; larger geometries use the matrix-free ``grid_sample`` kernels.
SPARSE_BYTES = 3 << 29

#: Power iterations of :meth:`ParallelProjector.norm` (from a positive start it converges
#: in a handful: ``A^T A`` has nonnegative entries, so its top eigenvector is positive).
NORM_ITERATIONS = 12


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
    The configuration is frozen at construction; sampling grids are cached when they fit in
    :data:`GRID_CACHE_BYTES`.  Line integrals come out in (attenuation per pixel) x pixels,
    the units of the simulator and of :func:`tomodl.recon.fbp.fbp`'s input.
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
        # rows sharing a centre are computed together (as channels of one grid_sample)
        self._groups: List[Tuple[float, Any]] = [
            (float(v), torch.as_tensor(np.flatnonzero(inverse == k), device=self.device))
            for k, v in enumerate(uniq)]
        self._grids: dict = {}
        self._mats: dict = {}
        per_pixel = len(uniq) * self.n_angles * self.n * self.n
        self._cache = per_pixel * 2 * self._itemsize() <= GRID_CACHE_BYTES
        if backend not in BACKENDS:
            raise TomodlError(f"Unknown backend {backend!r}; choose one of {list(BACKENDS)}")
        if backend == "auto":
            backend = "sparse" if per_pixel * 32 <= SPARSE_BYTES else "grid"
        self.backend = backend

    # ------------------------------------------------------------------ geometry
    def _itemsize(self) -> int:
        import torch

        return torch.empty((), dtype=self.dtype).element_size()

    def _grid(self, center: float, a0: int, a1: int):
        """Sampling grid ``(a1 - a0, n, n, 2)`` of ``grid_sample`` (``align_corners=True``)."""
        import torch

        key = center
        if self._cache and key in self._grids:
            return self._grids[key][a0:a1]
        lo, hi = (0, self.n_angles) if self._cache else (a0, a1)
        x, y = image_coordinates(self.n)
        th = self.theta[lo:hi]
        kw = {"dtype": torch.float64, "device": self.device}
        xt, yt = torch.as_tensor(x, **kw), torch.as_tensor(y, **kw)
        cos, sin = torch.as_tensor(np.cos(th), **kw), torch.as_tensor(np.sin(th), **kw)
        u = xt[None, None, :] * cos[:, None, None] + yt[None, :, None] * sin[:, None, None]
        gx = (u + center) * (2.0 / (self.n_det - 1)) - 1.0
        grid = torch.stack([gx, torch.zeros_like(gx)], dim=-1).to(self.dtype).contiguous()
        if self._cache:
            self._grids[key] = grid
            return grid[a0:a1]
        return grid

    def _matrices(self, center: float):
        """CSR matrices ``(A, A^T)`` for rows sharing ``center`` (built once, then cached).

        ``A^T`` has one row per pixel holding the two linear-interpolation weights of every
        angle (no sorting needed).  ``A`` holds the same weights by detector bin: the pixels
        of each angle are sorted by the bin left of ``u`` (one batched sort), and each entry
        is placed in its row at its rank within its bin (a counting sort, no global argsort).
        """
        import torch

        if center in self._mats:
            return self._mats[center]
        n, n_det, n_ang = self.n, self.n_det, self.n_angles
        dev = self.device
        x, y = image_coordinates(n)
        kw = {"dtype": torch.float64, "device": dev}
        cos = torch.as_tensor(np.cos(self.theta), **kw)
        sin = torch.as_tensor(np.sin(self.theta), **kw)
        u = (torch.as_tensor(x, **kw)[None, :, None] * cos
             + torch.as_tensor(y, **kw)[:, None, None] * sin + center)      # (n, n, angles)
        i0 = torch.floor(u)
        frac = u - i0
        del u
        i0 = i0.long()
        w0, w1 = (1.0 - frac).to(self.dtype), frac.to(self.dtype)
        valid0, valid1 = (i0 >= 0) & (i0 < n_det), (i0 >= -1) & (i0 < n_det - 1)
        base = torch.arange(n_ang, device=dev) * n_det
        cols = torch.stack([base + i0.clamp(0, n_det - 1), base + (i0 + 1).clamp(0, n_det - 1)],
                           dim=-1).reshape(-1).to(torch.int32)
        vals = torch.stack([w0 * valid0, w1 * valid1], dim=-1).reshape(-1)
        crow_t = torch.arange(0, 2 * n_ang * n * n + 1, 2 * n_ang, device=dev)
        a = self._forward_csr(i0.reshape(n * n, n_ang).t(), w0.reshape(n * n, n_ang).t(),
                              w1.reshape(n * n, n_ang).t())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            a_t = torch.sparse_csr_tensor(crow_t.to(torch.int32), cols, vals,
                                          size=(n * n, n_ang * n_det))
        self._mats[center] = (a, a_t)
        return a, a_t

    def _forward_csr(self, i0, w0, w1):
        """CSR of ``A`` from the left bins ``i0`` and weights ``w0, w1``, all ``(angles, n*n)``."""
        import torch

        n_ang, n_pix = i0.shape
        n_det, dev = self.n_det, i0.device
        width = n_det + 3
        key = (i0.clamp(-2, n_det) + 2).contiguous()        # bin j <-> key j + 2
        skey, perm = torch.sort(key, dim=1, stable=True)     # contiguous rows: a fast sort
        rows = torch.arange(n_ang, device=dev)[:, None]
        cnt = torch.bincount((rows * width + key).reshape(-1), minlength=n_ang * width)
        cnt = cnt.reshape(n_ang, width)
        first = torch.cumsum(cnt, 1) - cnt
        rank = torch.arange(n_pix, device=dev)[None, :] - first.gather(1, skey)
        lengths = cnt[:, 2:n_det + 2] + cnt[:, 1:n_det + 1]  # left-bin pixels + right-bin pixels
        crow = torch.cat([lengths.new_zeros(1), torch.cumsum(lengths.reshape(-1), 0)])
        row_start = crow[:-1].reshape(n_ang, n_det)
        nnz = int(crow[-1])
        cols = torch.empty(nnz + 1, dtype=torch.int32, device=dev)  # slot nnz: discarded
        vals = torch.empty(nnz + 1, dtype=w0.dtype, device=dev)
        pix = perm.to(torch.int32)
        for j, w, extra in ((skey - 2, w0, None), (skey - 1, w1, cnt[:, 2:n_det + 2])):
            jc = j.clamp(0, n_det - 1)
            pos = row_start.gather(1, jc) + rank
            if extra is not None:
                pos += extra.gather(1, jc)
            pos = torch.where((j >= 0) & (j < n_det), pos, nnz)
            cols[pos] = pix
            vals[pos] = w.gather(1, perm)
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
        per_angle = self.n * self.n * (2 * channels + 2) * self._itemsize()
        return int(max(1, min(self.n_angles, BLOCK_BYTES // per_angle)))

    # ------------------------------------------------------------------ kernels
    def _project_group(self, x, center: float):
        """``x (C, n, n)`` -> ``(C, n_angles, n_det)`` for rows sharing ``center``."""
        import torch

        ch = x.shape[0]
        out = torch.empty((ch, self.n_angles, self.n_det), dtype=x.dtype, device=x.device)
        step = self._angle_step(ch)
        for a0 in range(0, self.n_angles, step):
            grid = self._grid(center, a0, min(self.n_angles, a0 + step))
            nb = grid.shape[0]
            grad_out = x.unsqueeze(0).expand(nb, ch, self.n, self.n)
            shape_of = x.new_zeros(()).expand(nb, ch, 1, self.n_det)
            g_in = torch.ops.aten.grid_sampler_2d_backward(
                grad_out, shape_of, grid, 0, 0, True, [True, False])[0]  # bilinear, zeros
            out[:, a0:a0 + nb] = g_in[:, :, 0].permute(1, 0, 2)
        return out

    def _backproject_group(self, s, center: float):
        """``s (C, n_angles, n_det)`` -> ``(C, n, n)`` for rows sharing ``center``."""
        import torch
        import torch.nn.functional as F

        ch = s.shape[0]
        out = torch.zeros((ch, self.n, self.n), dtype=s.dtype, device=s.device)
        step = self._angle_step(ch)
        for a0 in range(0, self.n_angles, step):
            grid = self._grid(center, a0, min(self.n_angles, a0 + step))
            nb = grid.shape[0]
            inp = s[:, a0:a0 + nb].permute(1, 0, 2).unsqueeze(2)  # (nb, C, 1, n_det)
            out += F.grid_sample(inp, grid, mode="bilinear", padding_mode="zeros",
                                 align_corners=True).sum(0)
        return out

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
        """Exact transpose of :meth:`forward` (unweighted linear-interpolation back-projection).

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
