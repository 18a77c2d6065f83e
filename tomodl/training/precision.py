# SPDX-License-Identifier: BSD-3-Clause
"""Mixed precision for training, in one place: the compute dtype, the autocast context and
the gradient scaler of ``tomodl train`` and of the budgeted fine-tuning engine.

Master weights always stay float32; only the forward pass runs in the lower precision.
``"auto"`` is fp16 on CUDA and fp32 on the CPU, where bf16 training steps were measured slower
(helper A's notes of 2026-12-01: ResAttUnet, 256 px, 2 threads, 5.1 s bf16 vs 3.9 s fp32).
float16 needs loss scaling (CUDA); bfloat16 has float32's exponent range and needs none.
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional

#: precision names -> meaning (``"amp"`` is the name of ``tomodl train``'s configs)
PRECISIONS = {
    "auto": "fp16 on CUDA, fp32 on the CPU",
    "amp": "fp16 on CUDA, bf16 on any CPU",
    "fp32": "no mixed precision",
    "bf16": "bfloat16 forward passes",
    "fp16": "float16 forward passes with loss scaling (CUDA)",
}


def amp_dtype(precision: str, device: Any) -> Optional[Any]:
    """The autocast dtype for ``precision`` on ``device`` (a ``torch.device``); None for fp32.

    Raises
    ------
    ValueError
        Unknown ``precision`` (the message lists :data:`PRECISIONS`), or ``"fp16"`` on a CPU.
    """
    import torch

    name = str(precision).lower()
    if name not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose one of {list(PRECISIONS)}")
    cuda = device.type == "cuda"
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if name == "fp16":
        if not cuda:
            raise ValueError("precision 'fp16' needs a CUDA device; use 'bf16' or 'auto' on "
                             "the CPU")
        return torch.float16
    if cuda:
        return torch.float16
    # "auto" on the CPU is fp32: even on a CPU with native bf16 (AMX), training steps of
    # ResAttUnet measured 1.3x slower in bf16 than in fp32 (the backward pass gains nothing),
    # unlike inference (tomodl.models.inference.cpu_has_native_bf16)
    return torch.bfloat16 if name == "amp" else None


def autocast(device: Any, dtype: Optional[Any]):
    """``torch.autocast`` on ``device`` with ``dtype``, or a no-op context for fp32 (None)."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: Any, dtype: Optional[Any]):
    """A ``torch.amp.GradScaler``, enabled only for float16 on CUDA."""
    import torch

    return torch.amp.GradScaler(device.type,
                                enabled=dtype is torch.float16 and device.type == "cuda")
