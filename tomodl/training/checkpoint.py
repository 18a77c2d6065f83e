# SPDX-License-Identifier: BSD-3-Clause
"""Per-epoch checkpoints that resume a run exactly, without unpickling anything.

A checkpoint is a folder ``checkpoints/epoch_NNN/`` with

- ``model.safetensors``: the network's state dict (parameters and batch-norm buffers);
- ``state.pt``: the optimizer, scheduler and grad-scaler states, the torch RNG states, the
  epoch and the best validation loss so far.  It holds only tensors, dicts, lists, tuples,
  strings and numbers, so it loads with ``torch.load(path, weights_only=True)``.

Folders are written under a temporary name and renamed, so an interrupted write never leaves
a half checkpoint that ``--resume`` would pick up.
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any, Dict, Optional

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^epoch_(\d{3,})$")


def checkpoint_dir(out: Path, epoch: int) -> Path:
    """``out/checkpoints/epoch_NNN`` (``epoch`` counts completed epochs, from 1)."""
    return Path(out) / "checkpoints" / f"epoch_{epoch:03d}"


def latest_checkpoint(out: Path) -> Optional[Path]:
    """The checkpoint folder with the highest epoch under ``out/checkpoints`` (None if none)."""
    root = Path(out) / "checkpoints"
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = _NAME.match(p.name)
            if m and (p / "state.pt").is_file() and (p / "model.safetensors").is_file():
                found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def _rng_state() -> Dict[str, Any]:
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, epoch: int, model, optimizer, scheduler, scaler,
                    extra: Dict[str, Any], keep: int) -> Path:
    """Write the checkpoint of completed ``epoch`` and delete all but the newest ``keep``.

    Parameters
    ----------
    model : torch.nn.Module
        The bare network (not the DDP wrapper).
    extra : dict
        JSON-like values stored with the states (e.g. the best epoch and its loss).
    """
    import torch
    from safetensors.torch import save_file

    from tomodl.io.atomic import remove_path, replace_dir, temp_then_rename

    final = checkpoint_dir(out, epoch)
    tmp = final.with_name(final.name + ".tmp")
    remove_path(tmp)
    tmp.mkdir(parents=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    state = {"epoch": epoch, "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
             "rng": _rng_state(), "extra": extra}
    try:
        with temp_then_rename(tmp / "model.safetensors") as f:
            save_file(tensors, str(f))
        with temp_then_rename(tmp / "state.pt") as f:
            torch.save(state, f)
        replace_dir(tmp, final)
    except BaseException:
        remove_path(tmp)
        raise
    _prune(Path(out), keep)
    return final


def _prune(out: Path, keep: int) -> None:
    root = out / "checkpoints"
    dirs = sorted(p for p in root.iterdir() if _NAME.match(p.name))
    for p in dirs[:-keep]:
        shutil.rmtree(p, ignore_errors=True)


def load_checkpoint(path: Path, model, optimizer, scheduler, scaler, device) -> Dict[str, Any]:
    """Restore every state saved by :func:`save_checkpoint`; return ``{"epoch", "extra"}``."""
    import torch
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(Path(path) / "model.safetensors"), device=str(device)))
    # on the CPU: RNG states must stay there; the optimizer moves its state to the parameters
    state = torch.load(Path(path) / "state.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    _set_rng_state(state["rng"])
    logger.info("resumed from %s (epoch %d)", path, state["epoch"])
    return {"epoch": int(state["epoch"]), "extra": state["extra"]}
