# SPDX-License-Identifier: BSD-3-Clause
"""Parallel-beam filtered back-projection (placeholder reference; being replaced)."""
from __future__ import annotations

import numpy as np


def fbp(sino, theta, center=None, *, filter_name="shepp", filter_par=None, num_gridx=None,
        method="auto", device="auto", ncore=None):
    """Reconstruct sinogram-ordered data ``(n_rows, n_angles, n_det)`` into ``(n_rows, N, N)``."""
    import torch

    from tomodl.backend import to_tensor

    s, back = to_tensor(sino, device)
    nrow, nang, ndet = s.shape
    n = num_gridx or ndet
    c = torch.full((nrow,), (ndet - 1) / 2 if center is None else 0.0, dtype=torch.float64)
    if center is not None:
        c = torch.as_tensor(np.broadcast_to(np.asarray(center, np.float64), (nrow,)).copy())
    th = torch.as_tensor(np.asarray(theta, np.float64))
    npad = 1 << int(np.ceil(np.log2(2 * ndet)))
    freq = torch.fft.rfftfreq(npad, dtype=torch.float64)
    filt = (2 * freq).to(s.dtype)
    f = torch.fft.irfft(torch.fft.rfft(s, npad, dim=-1) * filt, npad, dim=-1)[..., :ndet]
    grid = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
    y, x = torch.meshgrid(grid, grid, indexing="ij")
    out = torch.zeros((nrow, n, n), dtype=s.dtype)
    for r in range(nrow):
        for a in range(nang):
            t = x * torch.cos(th[a]) + y * torch.sin(th[a]) + c[r]
            i0 = torch.floor(t).long()
            w = (t - i0).to(s.dtype)
            ok0 = (i0 >= 0) & (i0 < ndet)
            ok1 = (i0 + 1 >= 0) & (i0 + 1 < ndet)
            row = f[r, a]
            v0 = torch.where(ok0, row[i0.clamp(0, ndet - 1)], 0)
            v1 = torch.where(ok1, row[(i0 + 1).clamp(0, ndet - 1)], 0)
            out[r] += v0 * (1 - w) + v1 * w
    return back(out * (np.pi / nang))
