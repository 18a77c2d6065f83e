# SPDX-License-Identifier: BSD-3-Clause
"""The weights shipped in ``tomodl/weights/``, and which of them serves a given scan.

A network trained on sparse-view FBP learns the streaks of a particular angular sampling: the
angle between neighbouring streaks is ``pi / n`` for ``n`` projections over a half turn.  So the
shipped weights are described — and chosen — by **projections per half turn** (180 degrees),
which a scan's ``theta`` gives directly, whatever its detector width or nominal subsampling.

Each shipped folder's ``config.json`` has a ``release`` record::

    {"name": "resattunet", "sparse_factors": [4, 10, 20, 40, 80, 120],
     "angles": [10, 300],        # projections per half turn it was trained on
     "min_angles": 9,            # below this it was never validated on real data: FBP is kept
     "max_angles": 600,          # above this the FBP has no sparse-view streaks to remove
     "auto": true,               # false: only used when named (--model resattunet-x20)
     "caution_below": 30,        # applied, with a warning: measured to invent structure here
     "description": "...", "metrics": {...}}

:func:`select_weights` picks the folder for ``fbp+<arch>`` (``sparse=K`` picks the one trained
for 1 in ``K`` angles; otherwise the angle count decides); :func:`fallback_reason` says when the
network must not be applied (outside the range it was validated for), :func:`caution` when it is
applied with a warning, and :func:`screen` applies both rules for the reconstruction paths.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import List, Optional


from tomodl.errors import WeightsError
from tomodl.models.registry import WEIGHTS_DIR, check_model_name
from tomodl.models.weights import WeightsConfig, read_config
from tomodl.recon.geometry import angles_per_half_turn  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)


def released_models() -> List[str]:
    """Names of the weights folders shipped in ``tomodl/weights/``."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.name for p in WEIGHTS_DIR.iterdir() if (p / "config.json").is_file())


def release_folder(name: str) -> Optional[Path]:
    """``tomodl/weights/<name>`` if ``name`` is a shipped release, else None."""
    folder = WEIGHTS_DIR / str(name)
    return folder if str(name) in released_models() else None


def _release_configs(arch: str) -> List[tuple]:
    out = []
    for name in released_models():
        cfg = read_config(WEIGHTS_DIR / name)
        if cfg.arch == arch:
            out.append((WEIGHTS_DIR / name, cfg))
    return out


def select_weights(arch: str, *, n_angles: Optional[float] = None,
                   sparse: Optional[int] = None) -> Path:
    """The shipped weights folder that ``fbp+<arch>`` uses for a scan.

    Parameters
    ----------
    arch : str
        Registered network.
    n_angles : float, optional
        Projections per half turn of the data (:func:`angles_per_half_turn`).  The folder whose
        trained range contains it wins (the narrowest if several do), else the nearest range
        on a log scale.
    sparse : int, optional
        The data are 1 in ``sparse`` angles of a full scan: the folder trained for that factor.

    Releases marked ``"auto": false`` (reference models such as the paper-setting
    ``resattunet-x20``) are only used when named explicitly.

    Raises
    ------
    tomodl.errors.WeightsError
        Nothing is shipped for ``arch``, or nothing for ``sparse``.
    """
    check_model_name(arch)
    found = _release_configs(arch)
    if not found:
        raise WeightsError(f"no released weights for {arch!r} in {WEIGHTS_DIR}; train a model "
                           "(tomodl train) and pass its best/ folder with --model")
    found = [pc for pc in found if (pc[1].release or {}).get("auto", True)] or found
    if sparse is not None:
        hits = [(p, c) for p, c in found if int(sparse) in _factors(c)]
        if not hits:
            have = sorted({k for _, c in found for k in _factors(c)})
            raise WeightsError(f"no released {arch!r} weights for 1 in {sparse} angles; "
                               f"released factors: {have} (or omit --sparse to choose by the "
                               "number of angles)")
        found = hits
    if n_angles is None or len(found) == 1:
        default = [pc for pc in found if pc[0].name == arch]
        return (default or found)[0][0]
    return min(found, key=lambda pc: _distance(pc[1], float(n_angles)))[0]


def _factors(cfg: WeightsConfig) -> List[int]:
    rel = cfg.release or {}
    if rel.get("sparse_factors"):
        return [int(k) for k in rel["sparse_factors"]]
    return [] if cfg.sparse_factor is None else [int(cfg.sparse_factor)]


def _distance(cfg: WeightsConfig, n: float) -> tuple:
    lo, hi = (cfg.release or {}).get("angles", (1, 10**6))
    n = max(n, 1.0)
    outside = max(math.log(lo / n), math.log(n / hi), 0.0)
    return (outside, math.log(hi / lo))


def fallback_reason(cfg: Optional[WeightsConfig], n_angles: Optional[float]) -> Optional[str]:
    """Why the network of ``cfg`` must not be applied to data with ``n_angles`` per half turn.

    ``None`` when it may (or nothing is known).  A release sets ``min_angles`` where its
    network was measured to make real data worse than the FBP it starts from, and
    ``max_angles`` above which the scan is not sparse-view (no streaks to remove; the network
    was never trained on such data).
    """
    if cfg is None or n_angles is None:
        return None
    rel = cfg.release or {}
    low, high = rel.get("min_angles"), rel.get("max_angles")
    if low is not None and n_angles < float(low) - 0.01:      # 9 angles may come out 8.9999
        return (f"{n_angles:.0f} projections per half turn is below the {low} the {cfg.arch} "
                f"weights were validated for; the network is skipped and the FBP returned "
                f"unchanged (pass your own --model to force it)")
    if high is not None and n_angles > float(high):
        return (f"{n_angles:.0f} projections per half turn is a dense scan (the {cfg.arch} "
                f"weights serve up to {high}): no sparse-view streaks to remove, the FBP is "
                f"returned unchanged (pass your own --model to force the network)")
    return None


def caution(cfg: Optional[WeightsConfig], n_angles: Optional[float]) -> Optional[str]:
    """A warning for data the network improves on average but where it was seen to invent
    structure (``release["caution_below"]`` projections per half turn), else None."""
    if cfg is None or n_angles is None:
        return None
    below = (cfg.release or {}).get("caution_below")
    if below is None or n_angles >= float(below):
        return None
    return (f"{n_angles:.0f} projections per half turn: the {cfg.arch} output improves PSNR and "
            f"SSIM over the FBP but was seen to invent pore-like features below {below} "
            f"projections (docs/results.md); refine it against the data (--refine 60 "
            f"--refine-rounds 2, docs/refine.md) and compare with --algorithm fbp before "
            f"measuring small structures")


def screen(cfg: Optional[WeightsConfig], n_angles: Optional[float]) -> Optional[str]:
    """Apply the release's rules to a scan: log a warning for :func:`fallback_reason` or
    :func:`caution`; return the fallback reason (the network must be skipped) or None."""
    reason = fallback_reason(cfg, n_angles)
    note = reason if reason is not None else caution(cfg, n_angles)
    if note is not None:
        logger.warning("%s", note)
    return reason
