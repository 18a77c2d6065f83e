# SPDX-License-Identifier: BSD-3-Clause
"""Memory budget of the denoising networks.

:func:`bytes_per_pixel` estimates the peak working memory of one forward pass per input pixel;
:func:`tomodl.models.inference.denoise` divides a budget (:func:`default_memory_budget`, or the
caller's ``max_memory``) by it to choose a batch size, or a tile size when one slice does not fit.

The estimate was calibrated with :class:`PeakMemory` (peak bytes of live CPU tensors) on the
fused inference networks: the peak is 6.56 ``base_filters`` activation elements per pixel for
both UNet and ResAttUnet, at every width, in FP32 and in BF16 autocast, reached in the
full-resolution decoder level (skip, up-sampled and concatenated features alive together).
Peak process RSS of one ``denoise`` call on the paper's ResAttUnet, above the RSS before the
call and the ~60 MB of weight copies (:func:`fixed_bytes`), was 1180, 869 and 854 B/pixel in
FP32 for 512^2, 1024^2 and 2048^2 slices and 440 B/pixel in BF16 for 2048^2; the estimate
(:func:`bytes_per_pixel` + :data:`IO_BYTES_PER_PIXEL`) is 1225 B/pixel in FP32 and 621 in BF16.
"""
from __future__ import annotations

import os
import weakref
from typing import Any

#: fraction of free memory used by default: CPU RAM (available), CUDA (free device memory)
MEMORY_FRACTION = {"cpu": 0.25, "cuda": 0.5}
#: peak activation elements per input pixel, per base filter (measured 6.56, rounded up)
ELEMENTS_PER_PIXEL_PER_FILTER = 7.0
#: peak full-resolution elements per pixel per stem filter at the end of a stem network
#: (features, shuffled features, their concatenation, the last conv: measured 5.1, rounded up)
STEM_ELEMENTS_PER_FILTER = 6.0
#: margin for allocator fragmentation and oneDNN reorder buffers
MEMORY_SAFETY = 1.35
#: FP32 bytes per slice pixel besides the activations: normalized input, padded input,
#: network output and cropped output of the whole slice
IO_BYTES_PER_PIXEL = 16
#: weight copies alive during inference, in units of the FP32 weights
WEIGHT_COPIES = 2


def bytes_per_pixel(module: Any, dtype: "torch.dtype") -> float:  # noqa: F821
    """Estimated peak activation memory of one forward pass of ``module``, per input pixel.

    Parameters
    ----------
    module : tomodl.models.layers.EncoderDecoder
        Its first level's width (``base_filters``, divided by ``stem**2`` for a
        space-to-depth stem: measured 157.5 B/pixel in FP32 for ``stem=2, base_filters=24``,
        i.e. 6.56 elements per pixel per ``24 / 4`` filters; ``stem_filters`` full-resolution
        features add theirs) sets the activation size.
    dtype : torch.dtype
        Compute dtype of the activations (float32, or bfloat16/float16 under autocast).

    Returns
    -------
    float
        ``MEMORY_SAFETY * ELEMENTS_PER_PIXEL_PER_FILTER * base_filters * itemsize`` bytes
        (without a stem).
    """
    import torch

    # a space-to-depth stem (ResAttUnet(stem=s)) runs the first level at 1/s of the resolution;
    # its c full-resolution filters stay alive throughout and peak at the last layer
    base = module.down[0].conv1[0].out_channels / getattr(module, "stem", 1) ** 2
    c = getattr(module, "stem_filters", 0)
    elements = max(ELEMENTS_PER_PIXEL_PER_FILTER * base + c, STEM_ELEMENTS_PER_FILTER * c)
    size = torch.empty((), dtype=dtype).element_size()
    return MEMORY_SAFETY * elements * size


def fixed_bytes(module: Any) -> int:
    """Memory that does not scale with the batch: the fused FP32 copy of the weights and the
    low-precision weight copies of autocast (``WEIGHT_COPIES`` times the FP32 weights)."""
    return int(WEIGHT_COPIES * 4 * sum(p.numel() for p in module.parameters()))


def default_memory_budget(device: "torch.device") -> int:  # noqa: F821
    """Bytes the network may use: :data:`MEMORY_FRACTION` of the free memory of ``device``."""
    import torch

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = available_ram()
    return int(MEMORY_FRACTION[device.type] * free)


def available_ram() -> int:
    """Available host memory in bytes (psutil, else ``sysconf``, else 4 GiB)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 * 2**30


class PeakMemory:
    """Context manager recording the peak bytes of CPU tensors alive inside the block.

    A diagnostic (used by the tests and ``scripts/bench_denoise.py``): it sees every tensor
    created by an ATen operator inside the block, counting each storage once until its last
    tensor is freed; tensors created before the block (inputs, weights) and library-internal
    scratch buffers (oneDNN) are not counted.

    Examples
    --------
    >>> import torch
    >>> with PeakMemory() as pm:
    ...     y = torch.ones(1000) * 2
    >>> pm.peak
    8000
    """

    def __init__(self) -> None:
        self.peak = 0
        self.current = 0
        self._live: dict = {}
        self._mode = None

    def __enter__(self) -> "PeakMemory":
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker._record(out)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)

    def _record(self, out: Any) -> None:
        import torch
        from torch.utils._pytree import tree_flatten

        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type != "cpu":
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key not in self._live:
                self._live[key] = [storage.nbytes(), 0]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            self._live[key][1] += 1
            weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[key]
