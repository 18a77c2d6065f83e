# SPDX-License-Identifier: BSD-3-Clause
"""The training loop of ``tomodl train``: the paper's recipe, resumable, mixed precision, DDP.

One function, :func:`train`, runs a whole configuration: it reads the pairs files, builds the
network, trains with Adam and StepLR, validates and checkpoints every epoch, and exports the
best epoch (lowest validation loss) as a released weights folder that
``tomodl.create_model(arch, pretrained=out / "best")`` loads.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from tomodl.errors import OutputError
from tomodl.io.atomic import write_atomic
from tomodl.training import data as D
from tomodl.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from tomodl.training.config import ConfigError, TrainConfig, load_config, to_toml
from tomodl.training.distributed import DistInfo, all_reduce_sum, dist_info
from tomodl.training.figures import plot_loss, read_history, write_history
from tomodl.training.precision import amp_dtype, autocast, grad_scaler

logger = logging.getLogger(__name__)

#: config fields that may differ between a run and its resumption
RESUMABLE_CHANGES = ("epochs", "device", "threads", "out", "keep_checkpoints", "val_batch_size",
                     "in_memory", "max_minutes")


@dataclass
class TrainResult:
    """What a finished run produced: the best epoch, its losses and the output paths."""

    out: Path
    best_epoch: int
    best_val_loss: float
    history: List[Dict[str, float]]
    weights: Path


@dataclass
class _Parts:
    model: Any            # the bare network (saved and exported)
    net: Any              # what is called in training: the DDP wrapper or the network
    optimizer: Any
    scheduler: Any
    scaler: Any
    device: Any
    amp_dtype: Any        # None for fp32


def train(cfg: TrainConfig, *, resume: bool = False, progress: Optional[bool] = None
          ) -> TrainResult:
    """Train ``cfg.arch`` on ``cfg.data`` and write everything into ``cfg.out``.

    Parameters
    ----------
    cfg : TrainConfig
        The run's configuration (saved as ``out/config.toml``).
    resume : bool
        Continue from the newest checkpoint in ``cfg.out``; the result equals an uninterrupted
        run (same data order, augmentation and RNG states).
    progress : bool, optional
        Show a tqdm bar (default: only when stderr is a terminal).  Only rank 0 shows it.

    Returns
    -------
    TrainResult
        On every rank (only rank 0 writes files).
    """
    from tomodl.backend import torch_threads
    from tomodl.training.distributed import init, shutdown

    cfg.check_files()
    warm = None if resume or not cfg.init else warm_start_state(cfg)
    info = dist_info()
    device = _device(cfg, info)
    init(info, device)
    try:
        with torch_threads(cfg.threads or None):
            result = _run(cfg, info, device, resume, progress, warm)
    except BaseException:
        shutdown(sync=False)
        raise
    shutdown()
    return result


def _device(cfg: TrainConfig, info: DistInfo):
    import torch

    from tomodl.backend import resolve_device

    try:
        dev = resolve_device(cfg.device)
    except ValueError as err:
        raise ConfigError(f"config key 'device': {err}") from None
    if dev.type == "cuda" and info.enabled:
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    return dev


def _prepare_out(cfg: TrainConfig, resume: bool, info: DistInfo) -> Optional[Path]:
    """Check the output folder; return the checkpoint to resume from (or None)."""
    out = Path(cfg.out)
    ckpt = latest_checkpoint(out)
    if resume:
        if ckpt is None:
            raise ConfigError(f"--resume: no checkpoint in {out / 'checkpoints'}; "
                              "run without --resume to start")
        saved = load_config(str(out / "config.toml")).to_dict()
        now = cfg.to_dict()
        diff = sorted(k for k in now if k not in RESUMABLE_CHANGES and now[k] != saved.get(k))
        if diff:
            raise ConfigError(f"--resume: {diff} differ from {out / 'config.toml'}; only "
                              f"{list(RESUMABLE_CHANGES)} may change when resuming")
    elif ckpt is not None:
        raise OutputError(f"{out} already holds a run ({ckpt.name}); pass --resume to "
                          "continue it or choose another --out-path")
    if info.is_main:
        write_atomic(out / "config.toml", to_toml(cfg))
    return ckpt


def warm_start_state(cfg: TrainConfig) -> Dict[str, Any]:
    """The tensors of the weights named by ``cfg.init`` (config key ``init``), float32.

    Loaded by :func:`tomodl.models.weights.load_weights` (safetensors, checked, never
    unpickled); :class:`ConfigError` unless their ``arch`` and full ``model_args`` equal the
    config's, or the weights are a full-resolution ResAttUnet and the config the same network
    with ``stem > 1`` (carried over by :func:`tomodl.models.resattunet.stem_state`).
    """
    from tomodl.errors import WeightsError
    from tomodl.models.checks import check_model_args
    from tomodl.models.weights import load_weights
    from tomodl.training.config import init_source

    source = init_source(cfg.init)
    try:
        model, wcfg = load_weights(source)
    except WeightsError as err:
        raise ConfigError(f"config key 'init': {err}") from None
    want = check_model_args(cfg.arch, dict(cfg.model_args), "training config")
    have = check_model_args(wcfg.arch, dict(wcfg.model_args), source)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if _stem_warm_start(wcfg.arch, have, cfg.arch, want):
        from tomodl.models.resattunet import stem_state

        logger.info("warm start from %s (stem 1) carried over to stem %d", source, want["stem"])
        return stem_state(state, want["stem"])
    if (wcfg.arch, have) != (cfg.arch, want):
        raise ConfigError(f"config key 'init': {source} holds {wcfg.arch!r} with {have}, the "
                          f"config trains {cfg.arch!r} with {want}; set arch and [model_args] "
                          "to the weights' (see their config.json) or init = \"\"")
    logger.info("warm start from %s (%s, %s)", source, wcfg.arch, wcfg.training_data)
    return state


def _stem_warm_start(src_arch: str, have: Dict[str, Any], arch: str, want: Dict[str, Any]
                     ) -> bool:
    """Whether ``init`` is a full-resolution ResAttUnet and the config the same network with a
    ``stem > 1`` (and no ``stem_filters``): :func:`tomodl.models.resattunet.stem_state`."""
    same = {k: v for k, v in want.items() if k != "stem"} == \
        {k: v for k, v in have.items() if k != "stem"}
    return (src_arch == arch == "resattunet" and same and have["stem"] == 1
            and want["stem"] > 1 and not want["stem_filters"])


def _build(cfg: TrainConfig, info: DistInfo, device, warm: Optional[Dict[str, Any]] = None
           ) -> _Parts:
    import torch

    from tomodl.models import create_model
    from tomodl.training.distributed import convert_sync_batchnorm

    torch.manual_seed(cfg.seed)
    try:
        model = create_model(cfg.arch, **dict(cfg.model_args))
    except TypeError as err:
        raise ConfigError(f"config key 'model_args' for {cfg.arch!r}: {err}") from None
    if warm is not None:
        model.load_state_dict(warm, strict=True)
    model = model.to(device)
    net = model
    if info.enabled:
        if cfg.sync_batchnorm:
            model = convert_sync_batchnorm(model, device)
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, eps=cfg.adam_eps)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.lr_step, gamma=cfg.lr_gamma)
    amp = amp_dtype(cfg.precision, device)        # "fp32" or "amp" (config.PRECISIONS)
    return _Parts(model, net, opt, sched, grad_scaler(device, amp), device, amp)


def _autocast(parts: _Parts):
    return autocast(parts.device, parts.amp_dtype)


def _loss_fn(name: str):
    import torch.nn.functional as F

    return {"mse": F.mse_loss, "l1": F.l1_loss}[name]


def _train_epoch(parts: _Parts, store: D.SliceStore, cfg: TrainConfig, epoch: int,
                 info: DistInfo, bar) -> float:
    """One pass over the training slices; returns the mean loss over all global batches."""
    import torch

    plan = D.epoch_plan(len(store), store.shape, cfg.crop_size, seed=cfg.seed, epoch=epoch,
                        augment=cfg.augment)
    steps = D.n_steps(len(store), cfg.batch_size * info.world)
    loss_fn = _loss_fn(cfg.loss)
    parts.net.train()
    total = 0.0
    for step in range(steps):
        pos = D.rank_batch(plan, step, batch_size=cfg.batch_size, rank=info.rank,
                           world=info.world)
        x, y = (torch.from_numpy(a).to(parts.device) for a in
                D.make_batch(store, plan, pos, cfg.crop_size))
        parts.optimizer.zero_grad(set_to_none=True)
        with _autocast(parts):
            pred = parts.net(x)
        loss = loss_fn(pred.float(), y)
        parts.scaler.scale(loss).backward()
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        value = float(loss.detach())
        total += value
        if bar is not None:
            bar.update(cfg.batch_size * info.world)
            bar.set_postfix(loss=f"{value:.4g}", refresh=False)
    s, n = all_reduce_sum([total, steps], parts.device)
    return s / n


def _validate(parts: _Parts, store: D.SliceStore, cfg: TrainConfig, info: DistInfo) -> float:
    """Mean loss over the whole validation slices (the network pads them internally)."""
    import torch

    loss_fn = _loss_fn(cfg.loss)
    idx = D.val_indices(len(store), rank=info.rank, world=info.world)
    bs = cfg.val_batch_size or cfg.batch_size
    parts.model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for k in range(0, len(idx), bs):
            pairs = [store.crop(int(j), 0, 0, store.shape) for j in idx[k:k + bs]]
            x, y = (torch.from_numpy(np.stack([p[i] for p in pairs])[:, None]).to(parts.device)
                    for i in (0, 1))
            with _autocast(parts):
                pred = parts.model(x)
            # sum over slices of the per-slice mean: the mean over slices after the reduction
            total += float(loss_fn(pred.float(), y, reduction="sum")) / (x.shape[-2] * x.shape[-1])
            count += len(pairs)
    s, n = all_reduce_sum([total, count], parts.device)
    return s / n


def _check_sizes(train: D.SliceStore, cfg: TrainConfig, model, world: int) -> None:
    ch, cw = D.crop_shape(train.shape, cfg.crop_size)
    multiple = getattr(model, "size_multiple", 1)
    if ch % multiple or cw % multiple:
        logger.warning("%dx%d crops are padded to multiples of %d by %s; a crop_size that is "
                       "a multiple of %d avoids the wasted work", ch, cw, multiple, cfg.arch,
                       multiple)
    need = cfg.batch_size * world
    if len(train) < need:
        raise ConfigError(f"{len(train)} training slices are fewer than one global batch "
                          f"({need}); lower batch_size or add data")


def _run(cfg: TrainConfig, info: DistInfo, device, resume: bool, progress: Optional[bool],
         warm: Optional[Dict[str, Any]] = None) -> TrainResult:
    from tomodl.training.export import export_best

    t_start = time.monotonic()
    ckpt = _prepare_out(cfg, resume, info)
    policy = D.policy_for(cfg.data, dict(cfg.normalization))
    train_set = D.SliceStore(cfg.data, cfg.train_split, policy, max_slices=cfg.max_train_slices,
                             in_memory=cfg.in_memory)
    val_set = D.SliceStore(cfg.data, cfg.val_split, policy, max_slices=cfg.max_val_slices,
                           in_memory=cfg.in_memory)
    parts = _build(cfg, info, device, warm)
    _check_sizes(train_set, cfg, parts.model, info.world)
    out = Path(cfg.out)
    start, best = 0, {"epoch": 0, "val_loss": float("inf")}
    history: List[Dict[str, float]] = []
    if ckpt is not None:
        state = load_checkpoint(ckpt, parts.model, parts.optimizer, parts.scheduler,
                                parts.scaler, device)
        start, best = state["epoch"], dict(state["extra"]["best"])
        history = [r for r in read_history(out / "metrics.csv") if r["epoch"] <= start]
    for epoch in range(start, cfg.epochs):
        row = _epoch(parts, train_set, val_set, cfg, epoch, info, progress)
        history.append(row)
        improved = row["val_loss"] < best["val_loss"]
        if improved:
            best = {"epoch": row["epoch"], "val_loss": row["val_loss"],
                    "train_loss": row["train_loss"]}
        if info.is_main:
            save_checkpoint(out, epoch + 1, parts.model, parts.optimizer, parts.scheduler,
                            parts.scaler, {"best": best}, cfg.keep_checkpoints)
            write_history(out / "metrics.csv", history)
            plot_loss(history, out / "loss.png", title=f"{cfg.arch}, {cfg.precision}")
            if improved:
                export_best(parts.model, out / "best", cfg, policy, train_set, best)
        logger.info("epoch %d/%d: train %.5g, val %.5g, %.1f s%s", row["epoch"], cfg.epochs,
                    row["train_loss"], row["val_loss"], row["seconds"],
                    " (best)" if improved else "")
        if _out_of_time(cfg, t_start, info, parts.device):
            logger.info("max_minutes = %g reached after epoch %d of %d; best epoch %d in %s "
                        "(--resume continues)", cfg.max_minutes, row["epoch"], cfg.epochs,
                        best["epoch"], out / "best")
            break
    return TrainResult(out, int(best["epoch"]), float(best["val_loss"]), history, out / "best")


def _out_of_time(cfg: TrainConfig, t_start: float, info: DistInfo, device) -> bool:
    """Whether this invocation has used ``cfg.max_minutes`` (rank 0 decides for all ranks)."""
    if not cfg.max_minutes:
        return False
    late = float(time.monotonic() - t_start >= 60.0 * cfg.max_minutes and info.is_main)
    return all_reduce_sum([late], device)[0] > 0


def _epoch(parts: _Parts, train_set, val_set, cfg: TrainConfig, epoch: int, info: DistInfo,
           progress: Optional[bool]) -> Dict[str, float]:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    lr = parts.optimizer.param_groups[0]["lr"]
    n = D.n_steps(len(train_set), cfg.batch_size * info.world) * cfg.batch_size * info.world
    bar = None
    if info.is_main:   # disable=None: tqdm shows the bar only on a terminal
        bar = tqdm(total=n, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="crop", leave=False,
                   disable=None if progress is None else not progress)
    train_loss = _train_epoch(parts, train_set, cfg, epoch, info, bar)
    t_train = time.perf_counter() - t0
    val_loss = _validate(parts, val_set, cfg, info)
    parts.scheduler.step()
    if bar is not None:
        bar.close()
    return {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "lr": lr,
            "seconds": time.perf_counter() - t0, "throughput": n / t_train}


def train_mapping(values: Dict[str, Any], resume: bool = False) -> None:
    """``train(from_mapping(values))``: a picklable entry point for :func:`launch_local`."""
    from tomodl.training.config import from_mapping

    train(from_mapping(values), resume=resume, progress=False)
