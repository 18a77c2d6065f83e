# SPDX-License-Identifier: BSD-3-Clause
"""Train a released network further under a wall-clock budget: the engine of ``tomodl
finetune`` and ``tomodl adapt``.

A :class:`Task` says what to learn (one step's loss, a held-out validation loss, reference
scores and its provenance); :func:`run_budgeted` does the rest, the same for every task:

- loads the base weights (a shipped release name or a weights folder) in float32 and trains
  the whole network with Adam (a short linear warm-up of the learning rate), the forward pass
  in mixed precision (:mod:`tomodl.training.precision`); batch-norm statistics stay the
  base's (small batches from one sample would make them noisy);
- scores the base on the held-out data first: its validation loss is the first entry of the
  best-state record, so the export is never worse than the base on the held-out data;
- validates every ``validate_every`` seconds of training and at the end, keeping the state of
  the lowest validation loss;
- checkpoints (model, optimizer, scheduler, scaler, step, elapsed seconds, torch and numpy RNG
  states, the best state and its loss) atomically at every validation and at least every
  ``checkpoint_every`` seconds into the hidden work folder ``.<out name>.work/`` beside
  ``out`` (:func:`work_dir`); a rerun with ``resume=True`` continues it (refusing changed
  settings, naming the first one), and the folder is removed after a successful export;
- stops when ``minutes`` of training and validation wall time are spent (preparing the task,
  the base's scores and the final scores are not counted), and writes ``out`` as a weights
  folder (float16 tensors like the releases, the base's normalization policy and FBP filter)
  whose ``config.json`` ``extra["finetune"]`` holds the provenance (:func:`provenance`).
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Tuple, Union

import numpy as np

from tomodl.errors import TomodlError

logger = logging.getLogger(__name__)

#: BudgetConfig fields that may change when a run is resumed
RESUMABLE = ("minutes", "max_steps", "device", "threads", "validate_every", "checkpoint_every")
#: storage dtypes of the exported weights
WEIGHT_DTYPES = ("float16", "float32")


class Task(Protocol):
    """What :func:`run_budgeted` trains for (``finetune``: dense-scan labels; ``adapt``:
    self-supervision on the sparse scan).  Tensors live on ``device``."""

    kind: str
    device: Any

    def train_loss(self, model: Any, rng: np.random.Generator) -> Any:
        """One optimisation step's scalar loss (a float32 torch tensor), calling ``model`` on
        normalized inputs ``(N, 1, H, W)``; the engine wraps the call in autocast."""

    def validation_loss(self, model: Any) -> float:
        """Deterministic held-out loss (lower is better), called under ``torch.no_grad()``
        with ``model.eval()``."""

    def reference_scores(self, model: Any) -> Dict[str, Dict[str, float]]:
        """Held-out comparison for the provenance, e.g. ``{"fbp": {"psnr": ..}, "network":
        {..}}``; called with the base model at the start and the exported one at the end."""

    def provenance(self) -> Dict[str, Any]:
        """JSON-ready record of the data and settings (deterministic: compared on resume)."""


@dataclass(frozen=True)
class BudgetConfig:
    """Settings of :func:`run_budgeted`.

    Attributes
    ----------
    minutes : float
        Wall-clock budget of training and validation (minutes, > 0).
    lr : float
        Adam learning rate after the warm-up.
    precision : str
        Forward-pass precision, a key of :data:`tomodl.training.precision.PRECISIONS`.
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (recorded; the task's tensors decide).
    threads : int, optional
        torch CPU threads (None: torch's default).
    seed : int
        Seeds torch and the task's numpy generator.
    validate_every, checkpoint_every : float
        Seconds of training between validations / between checkpoints.
    warmup_steps : int
        Steps of linear learning-rate warm-up (protects the base weights from Adam's first,
        badly scaled steps).
    weight_dtype : str
        Storage dtype of the exported tensors (:data:`WEIGHT_DTYPES`).
    max_steps : int, optional
        Also stop after this many optimisation steps (reproducible short runs and tests).
    """

    minutes: float = 10.0
    lr: float = 1e-4
    precision: str = "auto"
    device: str = "auto"
    threads: Optional[int] = None
    seed: int = 0
    validate_every: float = 60.0
    checkpoint_every: float = 60.0
    warmup_steps: int = 20
    weight_dtype: str = "float16"
    max_steps: Optional[int] = None

    def __post_init__(self):
        from tomodl.training.precision import PRECISIONS

        checks = {"minutes": self.minutes > 0 and math.isfinite(self.minutes),
                  "lr": 0 < self.lr < 1, "validate_every": self.validate_every > 0,
                  "checkpoint_every": self.checkpoint_every > 0,
                  "warmup_steps": self.warmup_steps >= 0,
                  "threads": self.threads is None or self.threads >= 1,
                  "max_steps": self.max_steps is None or self.max_steps >= 1}
        for name, ok in checks.items():
            if not ok:
                raise TomodlError(f"BudgetConfig.{name}={getattr(self, name)!r} is out of range",
                                  fix="give a positive finite value")
        if self.precision not in PRECISIONS:
            raise TomodlError(f"Unknown precision {self.precision!r}",
                              fix=f"choose one of {list(PRECISIONS)}")
        if self.weight_dtype not in WEIGHT_DTYPES:
            raise TomodlError(f"Unknown weight_dtype {self.weight_dtype!r}",
                              fix=f"choose one of {list(WEIGHT_DTYPES)}")


@dataclass
class BudgetResult:
    """What :func:`run_budgeted` wrote and measured."""

    out: Path
    improved: bool
    steps: int
    seconds: float
    base_loss: float
    best_loss: float
    scores: Dict[str, Any]
    history: List[Dict[str, float]] = field(default_factory=list)
    resumed: bool = False


def work_dir(out: Union[str, Path]) -> Path:
    """The hidden folder ``.<name>.work`` beside ``out`` holding the run's checkpoints."""
    out = Path(out)
    return out.with_name(f".{out.name}.work")


def resolve_base(base: Union[str, Path]) -> Path:
    """The weights folder of ``base``: a shipped release name or a folder path."""
    from tomodl.errors import WeightsError
    from tomodl.models.releases import release_folder, released_models

    folder = Path(base).expanduser()
    if folder.is_dir():
        return folder.resolve()
    shipped = release_folder(str(base))
    if shipped is not None:
        return shipped
    raise WeightsError(f"no base weights {str(base)!r}",
                       fix=f"give a weights folder or one of the releases {released_models()}")


@dataclass
class _State:
    """Everything a checkpoint restores besides the torch objects."""

    step: int = 0
    elapsed: float = 0.0
    best_loss: float = float("inf")
    best_step: int = 0
    best: Optional[Dict[str, Any]] = None        # state dict (CPU tensors)
    base_loss: float = float("nan")
    base_scores: Dict[str, Any] = field(default_factory=dict)
    history: List[Dict[str, float]] = field(default_factory=list)
    rng: Optional[Dict[str, Any]] = None         # numpy bit-generator state


def run_budgeted(task: Task, base: Union[str, Path], out: Union[str, Path], cfg: BudgetConfig,
                 *, resume: bool = True, overwrite: bool = False,
                 progress: Optional[bool] = None) -> BudgetResult:
    """Train ``base`` on ``task`` for ``cfg.minutes`` and export the best state to ``out``.

    Parameters
    ----------
    task : Task
        The objective and the held-out data.
    base : str or path
        A shipped release name (``"resattunet"``) or a weights folder.
    out : path
        The weights folder to write (``model.safetensors`` + ``config.json``).  An existing
        ``out`` is replaced only with ``overwrite`` and only when tomodl wrote it
        (:func:`tomodl.io.atomic.check_replace`).
    cfg : BudgetConfig
    resume : bool
        Continue the interrupted run kept in :func:`work_dir` (``False``: start again).
    progress : bool, optional
        Show a tqdm bar with the loss and the time left (default: on a terminal).

    Returns
    -------
    BudgetResult

    Raises
    ------
    tomodl.errors.TomodlError
        ``out`` may not be written; a resumed run with other settings; a budget too small for
        one validation pass; missing or corrupt base weights.
    """
    from tomodl.backend import torch_threads
    from tomodl.io.atomic import OutputLock, check_replace

    out = Path(out).expanduser()
    folder = resolve_base(base)
    check_replace(out, overwrite=overwrite, kinds=("weights",),
                  protected=[(folder, "base weights folder")])
    out.parent.mkdir(parents=True, exist_ok=True)        # as tomodl recon does for its output
    lock = OutputLock(out)
    try:
        with torch_threads(cfg.threads):
            return _run(task, folder, out, cfg, resume, overwrite, progress)
    finally:
        lock.release()


def _settings(cfg: BudgetConfig, base_sha: str, task: Task) -> Dict[str, Any]:
    """What a resumed run must share with the interrupted one (flat, dotted keys)."""
    from tomodl.io.atomic import jsonable

    fixed = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE}
    return _flat({"kind": task.kind, "base_sha256": base_sha, "budget": fixed,
                  "task": jsonable(task.provenance())})


def _flat(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _check_settings(saved: Dict[str, Any], now: Dict[str, Any], work: Path) -> None:
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        k = changed[0]
        raise TomodlError(
            f"the interrupted run in {work} used {k}={saved.get(k)!r}, not {now.get(k)!r}"
            + (f" (and {len(changed) - 1} more settings)" if len(changed) > 1 else ""),
            fix="rerun with the same settings to continue it, or resume=False to start again",
            cli_fix="rerun with the same options to continue it, or --no-resume to start again")


@dataclass
class _Parts:
    model: Any
    optimizer: Any
    scheduler: Any
    scaler: Any
    amp: Any
    device: Any


def _build(folder: Path, cfg: BudgetConfig, device) -> Tuple[_Parts, Any]:
    import torch

    from tomodl.models.weights import load_weights
    from tomodl.training.precision import amp_dtype, grad_scaler

    torch.manual_seed(cfg.seed)
    model, wcfg = load_weights(folder)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    warm = max(int(cfg.warmup_steps), 0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if warm == 0 else min(1.0, (s + 1) / warm))
    amp = amp_dtype(cfg.precision, device)
    return _Parts(model, opt, sched, grad_scaler(device, amp), amp, device), wcfg


def _cpu_state(model) -> Dict[str, Any]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _validate(task: Task, parts: _Parts) -> float:
    import torch

    from tomodl.training.precision import autocast

    parts.model.eval()
    with torch.no_grad(), autocast(parts.device, parts.amp):
        value = float(task.validation_loss(parts.model))
    _train_mode(parts.model)
    return value


def _train_mode(model) -> None:
    """Training mode with frozen batch-norm statistics: fine-tuning batches are small and
    from one sample, so the base's running statistics are kept (their affine parameters
    still learn) and training and validation compute the same function."""
    import torch

    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eval()


def _step(task: Task, parts: _Parts, rng: np.random.Generator) -> float:
    from tomodl.training.precision import autocast

    _train_mode(parts.model)
    parts.optimizer.zero_grad(set_to_none=True)
    with autocast(parts.device, parts.amp):
        loss = task.train_loss(parts.model, rng)
    loss = loss.float()
    parts.scaler.scale(loss).backward()
    parts.scaler.step(parts.optimizer)
    parts.scaler.update()
    parts.scheduler.step()
    return float(loss.detach())


def _save(work: Path, parts: _Parts, st: _State, settings: Dict[str, Any]) -> None:
    from tomodl.training.checkpoint import save_checkpoint

    extra = {"settings": settings, "step": st.step, "elapsed": st.elapsed,
             "best_loss": st.best_loss, "best_step": st.best_step, "best": st.best,
             "base_loss": st.base_loss, "base_scores": st.base_scores, "history": st.history,
             "rng": st.rng}
    save_checkpoint(work, st.step + 1, parts.model, parts.optimizer, parts.scheduler,
                    parts.scaler, extra, keep=1)


def _restore(work: Path, parts: _Parts, settings: Dict[str, Any]) -> Optional[_State]:
    from tomodl.training.checkpoint import latest_checkpoint, load_checkpoint

    ckpt = latest_checkpoint(work)
    if ckpt is None:
        return None
    import torch

    saved = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=True)["extra"]
    _check_settings(saved["settings"], settings, work)
    extra = load_checkpoint(ckpt, parts.model, parts.optimizer, parts.scheduler, parts.scaler,
                            parts.device)["extra"]
    st = _State(**{k: extra[k] for k in _State.__dataclass_fields__})
    logger.info("resuming %s at step %d (%.0f s of the budget spent)", work, st.step,
                st.elapsed)
    return st


def _start(task: Task, parts: _Parts, cfg: BudgetConfig) -> _State:
    """Score the base: its validation loss (timed: the budget must hold a pass) and scores."""
    t0 = time.perf_counter()
    base_loss = _validate(task, parts)
    seconds = time.perf_counter() - t0
    budget = cfg.minutes * 60.0
    if budget < 3.0 * seconds:
        need = math.ceil(3.0 * seconds / 60.0 * 10) / 10
        raise TomodlError(
            f"a budget of {cfg.minutes:g} min is too small: one validation pass on the "
            f"held-out rows takes {seconds:.1f} s, and training needs at least two passes and "
            "the steps between them",
            fix=f"give minutes >= {need:g} or hold out fewer rows",
            cli_fix=f"give --minutes {need:g} or more, or hold out fewer rows")
    parts.model.eval()
    import torch

    with torch.no_grad():
        scores = task.reference_scores(parts.model)
    return _State(best_loss=base_loss, best=_cpu_state(parts.model), base_loss=base_loss,
                  base_scores=scores)


def _run(task: Task, folder: Path, out: Path, cfg: BudgetConfig, resume: bool,
         overwrite: bool, progress: Optional[bool]) -> BudgetResult:
    from tomodl.io.atomic import remove_path

    parts, wcfg = _build(folder, cfg, task.device)
    settings = _settings(cfg, wcfg.sha256, task)
    work = work_dir(out)
    st = _restore(work, parts, settings) if resume else None
    resumed = st is not None
    if st is None:
        remove_path(work)
        st = _start(task, parts, cfg)
        st.rng = np.random.default_rng(cfg.seed).bit_generator.state
        _save(work, parts, st, settings)         # a resumed run does not score the base again
    rng = np.random.default_rng()
    rng.bit_generator.state = st.rng
    _train(task, parts, st, cfg, rng, work, settings, progress)
    improved, final_loss, scores = _finish(task, parts, st, cfg, folder)
    _export(parts.model, wcfg, folder, out, overwrite, cfg, task, st, improved, final_loss,
            scores)
    shutil.rmtree(work, ignore_errors=True)
    return BudgetResult(out, improved, st.step, st.elapsed, st.base_loss, final_loss,
                        {"base": st.base_scores, "final": scores}, st.history, resumed)


def _train(task: Task, parts: _Parts, st: _State, cfg: BudgetConfig, rng, work: Path,
           settings: Dict[str, Any], progress: Optional[bool]) -> None:
    """Steps until the budget is spent; validate and checkpoint on schedule."""
    from tqdm.auto import tqdm

    budget = cfg.minutes * 60.0
    last_val = last_ckpt = st.elapsed
    bar = tqdm(total=round(budget), initial=min(round(st.elapsed), round(budget)),
               desc=task.kind, leave=False,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n}/{total} s of budget{postfix}",
               disable=None if progress is None else not progress)
    loss = float("nan")
    try:
        while st.elapsed < budget and st.step < (cfg.max_steps or math.inf):
            t0 = time.perf_counter()
            loss = _step(task, parts, rng)
            st.step += 1
            now = st.elapsed + time.perf_counter() - t0
            validate = (now >= budget or now - last_val >= cfg.validate_every
                        or st.step == cfg.max_steps)
            if validate:
                val = _validate(task, parts)
                if val < st.best_loss:
                    st.best_loss, st.best_step, st.best = val, st.step, _cpu_state(parts.model)
            st.elapsed += time.perf_counter() - t0
            if validate:
                last_val = st.elapsed
                st.history.append({"step": st.step, "seconds": round(st.elapsed, 2),
                                   "train_loss": loss, "val_loss": val})
                logger.info("%s step %d (%.0f s): train loss %.5g, held-out %.5g (base %.5g, "
                            "best %.5g)", task.kind, st.step, st.elapsed, loss, val,
                            st.base_loss, st.best_loss)
            if validate or st.elapsed - last_ckpt >= cfg.checkpoint_every:
                st.rng = rng.bit_generator.state
                _save(work, parts, st, settings)
                last_ckpt = st.elapsed
            bar.n = min(round(st.elapsed), round(budget))
            bar.set_postfix(loss=f"{loss:.4g}", best=f"{st.best_loss:.4g}",
                            left=f"{max(budget - st.elapsed, 0):.0f}s", refresh=False)
            bar.refresh()
    finally:
        bar.close()
    logger.info("%s: %d steps in %.0f s; held-out loss %.5g (base %.5g)", task.kind, st.step,
                st.elapsed, st.best_loss, st.base_loss)


def _finish(task: Task, parts: _Parts, st: _State, cfg: BudgetConfig, folder: Path
            ) -> Tuple[bool, float, Dict[str, Any]]:
    """Load the best state as it will be stored (rounded to the export dtype), check it is
    better than the base on the held-out data, and score it."""
    import torch

    state = st.best
    if cfg.weight_dtype == "float16":
        state = {k: v.to(torch.float16).to(v.dtype) if v.is_floating_point() else v
                 for k, v in state.items()}
    parts.model.load_state_dict(state)
    final = _validate(task, parts) if st.best_step > 0 else st.base_loss
    improved = st.best_step > 0 and final < st.base_loss
    if not improved:
        if st.best_step > 0:
            logger.warning("%s: the best state (step %d) is no better than the base on the "
                           "held-out data once stored; exporting the base", task.kind,
                           st.best_step)
        else:
            logger.warning("%s: training did not improve the held-out loss of the base "
                           "(%.5g); exporting the base weights unchanged (improved=false)",
                           task.kind, st.base_loss)
        from tomodl.models.weights import load_weights

        parts.model.load_state_dict(load_weights(folder)[0].state_dict())
        final = st.base_loss
    parts.model.eval()
    if not improved:
        return False, final, st.base_scores
    with torch.no_grad():
        scores = task.reference_scores(parts.model)
    return True, final, scores


def provenance(folder: Path, wcfg: Any, cfg: BudgetConfig, task: Task, st: _State,
               improved: bool, final_loss: float, scores: Dict[str, Any]) -> Dict[str, Any]:
    """``extra["finetune"]`` of the exported weights."""
    return {"kind": task.kind, "improved": bool(improved),
            "base": {"name": (wcfg.release or {}).get("name") or folder.name,
                     "folder": str(folder), "sha256": wcfg.sha256,
                     "release_angles": (wcfg.release or {}).get("angles"),
                     "min_angles": (wcfg.release or {}).get("min_angles"),
                     "max_angles": (wcfg.release or {}).get("max_angles")},
            "task": task.provenance(), "budget": asdict(cfg),
            "steps": st.step, "seconds": round(st.elapsed, 1), "best_step": st.best_step,
            "held_out": {"val_loss_base": st.base_loss, "val_loss": final_loss,
                         "base": st.base_scores, "exported": scores},
            "history": st.history[-50:]}


def _export(model, wcfg, folder: Path, out: Path, overwrite: bool, cfg: BudgetConfig,
            task: Task, st: _State, improved: bool, final_loss: float,
            scores: Dict[str, Any]) -> None:
    import torch

    from tomodl.io.atomic import jsonable
    from tomodl.models.weights import save_weights

    extra = {"finetune": jsonable(provenance(folder, wcfg, cfg, task, st, improved,
                                             final_loss, scores))}
    desc = f"{wcfg.arch} {task.kind} of {folder.name}" + ("" if improved else " (unchanged)")
    save_weights(model.to("cpu"), out, arch=wcfg.arch, model_args=dict(wcfg.model_args),
                 normalization=dict(wcfg.normalization), sparse_factor=None,
                 filter_name=wcfg.filter_name, training_data=desc,
                 dtype=getattr(torch, cfg.weight_dtype), extra=extra, overwrite=overwrite)
