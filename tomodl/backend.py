# SPDX-License-Identifier: BSD-3-Clause
"""Array kinds and compute devices.

tomodl computes with torch on the CPU or on CUDA, through one code path.  Callers may pass
numpy arrays, torch tensors or CuPy arrays; :func:`to_tensor` moves them into torch (CuPy
through DLPack, without a copy to the host) and the returned callable converts a result back
to the caller's kind.  Nothing here imports torch or CuPy at module import time.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Iterator, Optional, Tuple

import numpy as np

DEVICES = ("auto", "cpu", "cuda")


def array_kind(x: Any) -> str:
    """Return ``"numpy"``, ``"torch"`` or ``"cupy"`` for an array-like ``x``."""
    mod = type(x).__module__.split(".")[0]
    if mod == "torch":
        return "torch"
    if mod == "cupy":
        return "cupy"
    return "numpy"


def resolve_device(device: Any = "auto") -> "torch.device":  # noqa: F821
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N" | torch.device`` into a ``torch.device``.

    ``"auto"`` picks CUDA when torch sees a GPU and the CPU otherwise.  Asking for CUDA on a
    machine without one raises a ``ValueError`` that says so.
    """
    import torch

    if isinstance(device, torch.device):
        dev = device
    elif device is None or device == "auto":
        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        name = str(device)
        if name.split(":")[0] not in DEVICES:
            raise ValueError(
                f"Unknown device {device!r}; choose one of {list(DEVICES)} or 'cuda:N'")
        dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        from tomodl.errors import TomodlError

        raise TomodlError(f"device={device!r} was requested but torch sees no CUDA GPU",
                          fix="use device='cpu' (or 'auto')", cli_fix="use --device cpu (or auto)")
    return dev


def to_tensor(
    x: Any, device: Any = "auto", dtype: Optional["torch.dtype"] = None  # noqa: F821
) -> Tuple["torch.Tensor", Callable[[Any], Any]]:  # noqa: F821
    """Convert ``x`` to a float32 torch tensor on ``device``.

    Parameters
    ----------
    x : numpy.ndarray, torch.Tensor or cupy.ndarray
        Input array of any real dtype.
    device : str or torch.device
        Compute device; ``"auto"`` keeps a GPU array on its GPU and otherwise follows
        :func:`resolve_device`.
    dtype : torch.dtype, optional
        Compute dtype, float32 by default.

    Returns
    -------
    tensor : torch.Tensor
    back : callable
        ``back(result_tensor)`` returns the result as the caller's array kind (numpy on the
        host, a torch tensor on the input's device, or a CuPy array through DLPack).
    """
    import torch

    dtype = dtype or torch.float32
    kind = array_kind(x)
    if kind == "cupy":
        t = torch.from_dlpack(x)
    elif kind == "torch":
        t = x.detach()
    else:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    in_device = t.device
    if device == "auto" and t.device.type == "cuda":
        dev = t.device
    else:
        dev = resolve_device(device)
    t = t.to(device=dev, dtype=dtype)

    def back(result: "torch.Tensor") -> Any:  # noqa: F821
        if kind == "cupy":
            import cupy

            return cupy.from_dlpack(result.contiguous())
        if kind == "torch":
            return result.to(in_device)
        return result.detach().cpu().numpy()

    return t, back


@contextlib.contextmanager
def torch_threads(ncore: Optional[int]) -> Iterator[None]:
    """Run the block with ``ncore`` torch CPU threads, restoring the previous setting after.

    ``None`` keeps torch's current setting (by default one thread per core).
    """
    import torch

    if ncore is None:
        yield
        return
    if int(ncore) < 1:
        raise ValueError(f"ncore must be a positive number of threads, got {ncore}")
    previous = torch.get_num_threads()
    torch.set_num_threads(min(int(ncore), os.cpu_count() or 1))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
