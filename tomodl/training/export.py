# SPDX-License-Identifier: BSD-3-Clause
"""Export the best epoch of a run as a released weights folder.

The folder (``model.safetensors`` + ``config.json``, written by
:func:`tomodl.models.weights.save_weights`) carries the data contract of the training pairs —
normalization policy, sparse factor and FBP filter from the pairs metadata — and, in ``extra``,
the training configuration and the best epoch's losses, so ``tomodl recon`` and
``tomodl evaluate`` use the weights exactly as they were trained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from tomodl.normalization import Policy
from tomodl.training.config import TrainConfig
from tomodl.training.data import SliceStore, read_metadata


def describe_data(cfg: TrainConfig, train_set: SliceStore) -> str:
    """One line describing the training data: files, split, number and size of the slices."""
    h, w = train_set.shape
    return (f"{len(train_set)} slices of {h}x{w} from /{cfg.train_split} of "
            f"{', '.join(Path(p).name for p in cfg.data)}")


def data_contract(paths) -> Dict[str, Any]:
    """``sparse_factor`` and ``filter_name`` from the first pairs file's metadata (or None)."""
    meta = read_metadata(paths[0])
    sparse = meta.get("sparse_factor", meta.get("sparse"))
    filt = meta.get("filter_name", meta.get("filter"))
    return {"sparse_factor": None if sparse is None else int(sparse),
            "filter_name": None if filt is None else str(filt)}


def export_best(model, directory: Path, cfg: TrainConfig, policy: Policy,
                train_set: SliceStore, best: Dict[str, float]) -> Path:
    """Write ``model`` (the bare network) as a weights folder at ``directory`` (replaced)."""
    from tomodl.models.weights import save_weights

    extra = {"training_config": cfg.to_dict(),
             "metrics": {k: (int(v) if k == "epoch" else float(v)) for k, v in best.items()},
             "pairs_metadata": read_metadata(cfg.data[0])}
    return save_weights(model, directory, arch=cfg.arch, model_args=dict(cfg.model_args),
                        normalization=policy.to_dict(), training_data=describe_data(cfg, train_set),
                        extra=extra, overwrite=True, **data_contract(cfg.data))
