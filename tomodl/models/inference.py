# SPDX-License-Identifier: BSD-3-Clause
"""Slice-by-slice denoising of FBP reconstructions with a trained network.

:func:`load_denoiser` bundles a network with the data contract of its weights (intensity
normalization, sparse factor, FBP filter); :func:`denoise` applies it to any number of slices of
any size, in attenuation units in and out:

1. per slice, ``(lo, hi)`` from the input with the weights' :class:`~tomodl.normalization.Policy`,
   ``x_n = (x - lo) / (hi - lo)``;
2. reflection-pad to a multiple of ``2 ** (depth - 1)`` (16 for the paper's networks);
3. run the network in batches sized to a memory budget, in FP16 autocast on CUDA, BF16 autocast
   on CPUs with native BF16 instructions (AVX512-BF16 or AMX; 3x faster than FP32 on the
   development machine, see ``docs/models.md``), FP32 otherwise, under ``torch.inference_mode``;
   batch norm is folded into the convolutions first;
4. a slice too large for the budget is cut into tiles that overlap by the network's receptive
   margin, so tiled and whole-slice results agree to rounding;
5. crop, map back with the inverse affine map.
"""
from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Tuple, Union

import numpy as np

from tomodl.backend import array_kind, resolve_device, torch_threads
from tomodl.errors import WeightsError
from tomodl.models.memory import (
    IO_BYTES_PER_PIXEL,
    bytes_per_pixel,
    default_memory_budget,
    fixed_bytes,
)
from tomodl.models.registry import check_model_name, model_class
from tomodl.models.releases import release_folder, released_models, select_weights
from tomodl.models.weights import WeightsConfig, load_weights
from tomodl.normalization import Policy

logger = logging.getLogger(__name__)

#: compute dtypes accepted by :func:`denoise`
DTYPES = ("auto", "float32", "bfloat16", "float16")
#: largest automatic batch
MAX_AUTO_BATCH = 32


@dataclass(frozen=True)
class Denoiser:
    """A network ready for :func:`denoise`, with the data contract of its weights.

    Attributes
    ----------
    module : torch.nn.Module
        float32, CPU, eval mode.
    arch : str
        Registry name.
    config : WeightsConfig or None
        ``None`` for an in-memory module (default normalization policy).
    source : str
        Weights folder, or ``"<module>"``.
    """

    module: Any
    arch: str
    config: Optional[WeightsConfig] = None
    source: str = "<module>"
    #: the prepared inference network of the last call, keyed by device, dtype and the version
    #: counters of the module's tensors (an in-place weight update invalidates it)
    _prepared: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def policy(self) -> Policy:
        """Intensity normalization of the training pairs."""
        return self.config.policy if self.config is not None else Policy()

    @property
    def sparse_factor(self) -> Optional[int]:
        """Angular subsampling the weights were trained for (``None`` if unknown)."""
        return None if self.config is None else self.config.sparse_factor

    @property
    def filter_name(self) -> Optional[str]:
        """FBP filter of the training inputs (``None`` if unknown)."""
        return None if self.config is None else self.config.filter_name


def load_denoiser(arch: str, model: Any = None, *, n_angles: Optional[float] = None,
                  sparse: Optional[int] = None) -> Denoiser:
    """Load a network and its weights' data contract for :func:`denoise`.

    Parameters
    ----------
    arch : str
        Registered network, one of :func:`tomodl.list_models`.
    model : None, str, path, torch.nn.Module or Denoiser
        ``None``: the weights shipped for ``arch`` that serve the data (see ``n_angles`` and
        ``sparse``).  A path to a weights folder, or the name of a shipped folder.  An
        in-memory module of class ``arch`` (default normalization policy).
    n_angles : float, optional
        Projections per half turn of the data; with ``model=None`` it chooses among the
        shipped weights (:func:`tomodl.models.releases.select_weights`).
    sparse : int, optional
        With ``model=None``: the shipped weights trained for 1 in ``sparse`` angles.

    Raises
    ------
    ValueError
        Unknown ``arch``.
    tomodl.errors.WeightsError
        Missing, corrupt or mismatched weights, or a module of another architecture.
    """
    import torch

    check_model_name(arch)
    if isinstance(model, Denoiser):
        if model.arch != arch:
            raise WeightsError(f"denoiser {model.source} is a {model.arch!r}, not {arch!r}")
        return model
    if isinstance(model, torch.nn.Module):
        if not isinstance(model, model_class(arch)):
            raise WeightsError(f"model is a {type(model).__name__}, not a {arch!r} network")
        return Denoiser(model, arch)
    if model is None:
        folder = select_weights(arch, n_angles=n_angles, sparse=sparse)
    else:
        folder = Path(model).expanduser()
        if not folder.exists() and release_folder(str(model)) is not None:
            folder = release_folder(str(model))
        elif not folder.exists():
            raise WeightsError(
                f"no weights folder {str(model)!r}; pass a folder written by save_weights or "
                f"one of the released models {released_models()}"
            )
    module, cfg = load_weights(folder, expected_arch=arch)
    return Denoiser(module, arch, cfg, str(folder))


def resolve_dtype(dtype: Any, device: "torch.device") -> "torch.dtype":  # noqa: F821
    """Compute dtype; ``"auto"``: float16 on CUDA, bfloat16 on native-BF16 CPUs, else float32."""
    import torch

    name = str(dtype).replace("torch.", "")
    if name not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of {list(DTYPES)}")
    if name == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    return getattr(torch, name)


def cpu_has_native_bf16() -> bool:
    """True when the CPU executes BF16 dot products in hardware (AVX512-BF16 or AMX).

    oneDNN also runs BF16 on plain AVX-512 by emulation, which is slower than FP32, so torch's
    ``mkldnn_bf16`` check is not enough.
    """
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def fuse_batchnorm(module: Any) -> Any:
    """An eval-mode copy of ``module`` with each Conv2d -> BatchNorm2d pair folded into one conv."""
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = copy.deepcopy(module).eval()
    for seq in fused.modules():
        if not isinstance(seq, torch.nn.Sequential):
            continue
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d):
                seq[i] = fuse_conv_bn_eval(conv, bn)
                seq[i + 1] = torch.nn.Identity()
    return fused


def _prepared_runner(den: Denoiser, device, dtype) -> Callable:
    """:func:`_runner` for ``den``, reused while the device, dtype and weights are unchanged."""
    tensors = list(den.module.parameters()) + list(den.module.buffers())
    key = (str(device), dtype, tuple(t._version for t in tensors), tuple(map(id, tensors)))
    if den._prepared.get("key") != key:
        den._prepared.clear()
        den._prepared.update(key=key, run=_runner(den.module, device, dtype))
    return den._prepared["run"]


def _runner(module: Any, device: "torch.device", dtype: "torch.dtype") -> Callable:  # noqa: F821
    """``run(x)``: ``(N, 1, H, W)`` float32 on ``device`` -> float32 network output."""
    import torch

    net = fuse_batchnorm(module).to(device)
    channels_last = device.type == "cpu"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    autocast = dtype != torch.float32

    def run(x: "torch.Tensor") -> "torch.Tensor":
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=dtype, enabled=autocast):
            y = net(x)
        return y.float().contiguous()

    return run


def _tile_size(shape: Tuple[int, int], margin: int, multiple: int, budget: float,
               bpp: float) -> int:
    """Largest tile core (a multiple of ``multiple``) whose tile plus margins fits ``budget``."""
    side = int(math.sqrt(max(budget, 0) / bpp)) - 2 * margin
    if side < multiple:
        logger.warning(
            "memory budget %.1f MB is too small for a %d-pixel tile with a %d-pixel overlap; "
            "using the smallest tile", budget / 2**20, multiple, margin
        )
    return min(max(multiple, side // multiple * multiple), max(shape))


def _run_tiled(run: Callable, x: "torch.Tensor", tile: int, margin: int) -> "torch.Tensor":  # noqa: F821
    """Apply ``run`` to overlapping tiles of ``x`` (N, 1, Hp, Wp) and keep each tile's core.

    Tile origins, sizes and margins are multiples of the network's size multiple, so pooling
    grids line up with the whole-slice computation and cores farther than the receptive margin
    from a tile's cut edge are computed exactly as in the whole slice.
    """
    import torch

    hp, wp = x.shape[-2:]
    out = torch.empty_like(x)
    for r0 in range(0, hp, tile):
        for c0 in range(0, wp, tile):
            r1, c1 = min(r0 + tile, hp), min(c0 + tile, wp)
            a, b = max(0, r0 - margin), min(hp, r1 + margin)
            c, d = max(0, c0 - margin), min(wp, c1 + margin)
            y = run(x[..., a:b, c:d])
            out[..., r0:r1, c0:c1] = y[..., r0 - a : r1 - a, c0 - c : c1 - c]
    return out


@dataclass(frozen=True)
class Plan:
    """How :func:`denoise` splits the work: ``tile == 0`` means whole slices."""

    batch: int
    tile: int
    margin: int
    multiple: int
    budget: int
    bytes_per_pixel: float


def plan_denoise(
    module: Any,
    shape: Tuple[int, int, int],
    device: "torch.device",  # noqa: F821
    dtype: "torch.dtype",  # noqa: F821
    *,
    batch_size: Union[int, str] = "auto",
    max_memory: Optional[int] = None,
    overlap: Optional[int] = None,
) -> Plan:
    """Choose the batch size, or the tile size when one slice exceeds the memory budget.

    Parameters
    ----------
    module : EncoderDecoder
    shape : (n, H, W)
    batch_size : "auto" or int
        ``"auto"``: as many slices as fit ``max_memory`` (at most :data:`MAX_AUTO_BATCH`).
    max_memory : int, optional
        Bytes for the network's working memory; default :func:`default_memory_budget`.
    overlap : int, optional
        Tile overlap in pixels (rounded up to the size multiple); default the receptive margin,
        which makes tiling exact.
    """
    if batch_size != "auto" and (isinstance(batch_size, str) or int(batch_size) < 1):
        raise ValueError(f"batch_size must be 'auto' or a positive integer, got {batch_size!r}")
    m = module.size_multiple
    n, h, w = shape
    hp, wp = m * math.ceil(h / m), m * math.ceil(w / m)
    budget = int(max_memory) if max_memory is not None else default_memory_budget(device)
    bpp = bytes_per_pixel(module, dtype)
    margin = module.receptive_margin if overlap is None else m * math.ceil(int(overlap) / m)
    free = budget - fixed_bytes(module)
    per_slice = (bpp + IO_BYTES_PER_PIXEL) * hp * wp
    if per_slice <= free:
        fit = int(free // per_slice)
        batch = min(n, MAX_AUTO_BATCH, fit) if batch_size == "auto" else int(batch_size)
        return Plan(max(1, batch), 0, margin, m, budget, bpp)
    tile = _tile_size((hp, wp), margin, m, free - IO_BYTES_PER_PIXEL * hp * wp, bpp)
    return Plan(1, tile, margin, m, budget, bpp)


def denoise(
    slices: Any,
    denoiser: Denoiser,
    *,
    batch_size: Union[int, str] = "auto",
    device: Any = "auto",
    dtype: Any = "auto",
    max_memory: Optional[int] = None,
    overlap: Optional[int] = None,
    ncore: Optional[int] = None,
) -> Any:
    """Remove sparse-view streaks from FBP slices with a trained network.

    Parameters
    ----------
    slices : ndarray, torch.Tensor or cupy.ndarray, shape (n, H, W) or (H, W)
        FBP reconstructions in attenuation units (any real dtype, any ``H, W``).  Intensity
        statistics are computed on the host, so GPU arrays make one round trip.
    denoiser : Denoiser
        From :func:`load_denoiser`.
    batch_size : "auto" or int
        Slices per forward pass; ``"auto"`` fits them to ``max_memory``.
    device : "auto", "cpu", "cuda" or torch.device
    dtype : "auto", "float32", "bfloat16" or "float16"
        Compute dtype (autocast); ``"auto"``: float16 on CUDA, bfloat16 on CPUs with native BF16
        (AVX512-BF16/AMX), else float32.
    max_memory : int, optional
        Bytes the network may use (default: 25 % of available RAM, 50 % of free CUDA memory).
        Slices larger than this are processed in overlapping tiles.
    overlap : int, optional
        Tile overlap in pixels; default the receptive margin (exact tiling).
    ncore : int, optional
        CPU threads for torch.

    Returns
    -------
    float32 array of the input's kind (numpy, torch on the input's device, or cupy), same shape
        Denoised slices in attenuation units.

    Raises
    ------
    tomodl.errors.WeightsError
        The network returned NaN or infinite values (checked for every batch): corrupt weights,
        or an overflow in float16.

    Examples
    --------
    >>> import numpy as np, tomodl
    >>> den = load_denoiser("unet", tomodl.create_model("unet", base_filters=4, depth=3))
    >>> x = np.random.default_rng(0).random((2, 37, 31), dtype=np.float32)
    >>> np.allclose(denoise(x, den), x, atol=1e-6)  # an untrained residual network is the identity
    True
    """
    import torch

    if not isinstance(denoiser, Denoiser):
        raise ValueError("denoiser must come from "
                         "tomodl.models.inference.load_denoiser(arch, model)")
    x, restore = _as_stack(slices)
    dev = resolve_device(device)
    cdtype = resolve_dtype(dtype, dev)
    plan = plan_denoise(denoiser.module, x.shape, dev, cdtype, batch_size=batch_size,
                        max_memory=max_memory, overlap=overlap)
    logger.info("denoise %s on %s in %s: %s", x.shape, dev, cdtype, plan)
    out = np.empty_like(x)
    with torch_threads(ncore), torch.inference_mode():
        run = _prepared_runner(denoiser, dev, cdtype)
        for s in range(0, x.shape[0], plan.batch):
            out[s : s + plan.batch] = _denoise_batch(x[s : s + plan.batch], run, denoiser.policy,
                                                     plan, dev)
            _check_output(out[s : s + plan.batch], denoiser, cdtype)
    return restore(out)


def _check_output(y: np.ndarray, denoiser: Denoiser, dtype) -> None:
    """A network output holding NaN or Inf (corrupt weights, or float16 overflow) is an error."""
    if np.isfinite(y).all():
        return
    low = str(dtype) != "torch.float32"
    py, cli = (" or dtype='float32'", " or --dtype float32") if low else ("", "")
    raise WeightsError(
        f"{denoiser.source}: the {denoiser.arch} network returned NaN or infinite values "
        f"(computed in {str(dtype).replace('torch.', '')})",
        fix=f"use other weights{py}, or algorithm='fbp'",
        cli_fix=f"use other weights{cli}, or --algorithm fbp",
    )


def _denoise_batch(xb: np.ndarray, run: Callable, policy: Policy, plan: Plan, device) -> np.ndarray:
    import torch

    from tomodl.models.layers import pad_to_multiple

    if not np.isfinite(xb).all():
        raise ValueError("slices contain NaN or infinite values; check the reconstruction input")
    lo, hi = policy.stats(xb)
    t = torch.from_numpy(policy.forward(xb, lo, hi).astype(np.float32)[:, None]).to(device)
    tp, (h, w) = pad_to_multiple(t, plan.multiple)
    y = _run_tiled(run, tp, plan.tile, plan.margin) if plan.tile else run(tp)
    y = y[:, 0, :h, :w].cpu().numpy()
    return policy.inverse(y, lo, hi)


def _as_stack(slices: Any) -> Tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """``(n, H, W)`` float32 numpy copy/view of ``slices``, and a function restoring kind/ndim."""
    kind = array_kind(slices)
    if kind == "torch":
        arr, dev = slices.detach().cpu().numpy(), slices.device
    elif kind == "cupy":
        arr, dev = slices.get(), None
    else:
        arr, dev = np.asarray(slices), None
    if arr.ndim not in (2, 3) or min(arr.shape[-2:]) < 1:
        raise ValueError(f"slices must have shape (n, H, W) or (H, W), got {arr.shape}")
    x = np.ascontiguousarray(arr, dtype=np.float32)
    squeeze = x.ndim == 2

    def restore(out: np.ndarray) -> Any:
        out = out[0] if squeeze else out
        if kind == "torch":
            import torch

            return torch.from_numpy(out).to(dev)
        if kind == "cupy":
            import cupy

            return cupy.asarray(out)
        return out

    return (x[None] if squeeze else x), restore
