# SPDX-License-Identifier: BSD-3-Clause
"""The training configuration: a frozen dataclass read from TOML, overridable field by field.

The defaults are the paper's recipe (section 3.2): MSE loss, Adam with ``lr=3e-4`` and
``eps=1e-7``, the learning rate multiplied by 0.95 every 10 epochs, 65 epochs.  Every field can
be set in the TOML file and overridden on the command line (``--set key=value``, nested tables
as ``--set model_args.base_filters=8``).  Relative paths are relative to the current directory.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

from tomodl.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

#: the numerical precision of training: name -> description (see docs/training.md)
PRECISIONS = {
    "fp32": "float32 everywhere (Apex O0)",
    "amp": "torch.autocast: float16 + GradScaler on CUDA, bfloat16 on CPU (Apex O1/O2 successor)",
}
#: training losses by name (the paper uses MSE)
LOSSES = {"mse": "mean squared error", "l1": "mean absolute error"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run.

    Attributes
    ----------
    data : tuple of str
        Pairs files written by ``tomodl simulate pairs`` (their splits are concatenated).
    out : str
        Output directory: ``config.toml``, ``metrics.csv``, ``loss.png``, ``checkpoints/``,
        ``best/`` (a released weights folder).
    arch, model_args : str, dict
        Network name in the ``tomodl.models`` registry and its keyword arguments.
    epochs : int
        Number of epochs (an epoch is one random crop of every training slice).
    batch_size : int
        Crops per optimizer step **per process** (the global batch is ``batch_size * world``).
    crop_size : int
        Side of the square random crops in pixels; 0 trains on whole slices.
    augment : bool
        Random flips and 90-degree rotations (seeded from ``(seed, epoch)``).
    lr, adam_eps, lr_step, lr_gamma : float, float, int, float
        Adam learning rate and epsilon; StepLR multiplies the rate by ``lr_gamma`` every
        ``lr_step`` epochs.
    loss : str
        One of :data:`LOSSES`.
    precision : str
        One of :data:`PRECISIONS`.
    seed : int
        Seeds the weight initialization, the data order and the augmentation.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` (under ``torchrun`` each process uses its local GPU).
    threads : int
        torch CPU threads (0 = torch's default, one per core).  On a shared machine 1 can be
        much faster for small networks: idle-waiting threads stall every operation.
    normalization : dict
        A :class:`tomodl.normalization.Policy` dict; empty = the policy in the pairs metadata.
    train_split, val_split : str
        Groups of the pairs files used for training and validation.
    max_train_slices, max_val_slices : int
        Use only the first N slices of each split (0 = all): quick runs and profiling.
    val_batch_size : int
        Whole slices per validation batch (0 = ``batch_size``).
    in_memory : bool
        Load the splits into RAM (fast); ``False`` reads crops from the HDF5 files on demand.
    sync_batchnorm : bool
        Synchronize batch-norm statistics across processes (DDP only).
    keep_checkpoints : int
        Number of per-epoch checkpoints kept on disk (the newest ones).
    init : str
        Warm start: ``""`` initializes the network at random (seeded); a released model's name
        (``"resattunet"``: the weights shipped in ``tomodl/weights/<name>/``) or a weights
        folder loads those weights (through the safetensors loader, never unpickling) before the
        first epoch.  Their ``arch`` and ``model_args`` must equal the config's.
    max_minutes : float
        Wall-clock budget of one invocation of ``train`` in minutes (0 = none): training stops
        after the epoch that crosses it; ``best/`` holds the best epoch so far, and ``--resume``
        continues the run.
    """

    data: Tuple[str, ...] = ()
    out: str = "runs/train"
    arch: str = "resattunet"
    model_args: Mapping[str, Any] = field(default_factory=dict)
    epochs: int = 65
    batch_size: int = 4
    crop_size: int = 256
    augment: bool = True
    lr: float = 3e-4
    adam_eps: float = 1e-7
    lr_step: int = 10
    lr_gamma: float = 0.95
    loss: str = "mse"
    precision: str = "fp32"
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    normalization: Mapping[str, Any] = field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    max_train_slices: int = 0
    max_val_slices: int = 0
    val_batch_size: int = 0
    in_memory: bool = True
    sync_batchnorm: bool = True
    keep_checkpoints: int = 2
    init: str = ""
    max_minutes: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), f.default,
                                                     f.default_factory))
        _check_values(self)

    def check_files(self) -> None:
        """Raise :class:`ConfigError` (or :class:`PairsFileError`) unless every data file is a
        readable pairs file with a ``train`` split."""
        if not self.data:
            raise ConfigError("no training data: set data = [\"pairs.h5\"] in the config "
                              "or --set data=pairs.h5")
        for p in self.data:
            if not Path(p).is_file():
                raise ConfigError(f"data file {p!r} does not exist; write one with "
                                  "`tomodl simulate pairs` or fix `data` in the config")
        from tomodl.training.data import split_shape

        for p in self.data:         # readable pairs files with a train split, before any output
            split_shape(str(p), "train")

    def to_dict(self) -> Dict[str, Any]:
        """A plain dict (lists instead of tuples), ready for JSON or TOML."""
        d = dataclasses.asdict(self)
        d["data"] = list(self.data)
        d["model_args"] = dict(self.model_args)
        d["normalization"] = dict(self.normalization)
        return d

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        return from_mapping({**self.to_dict(), **changes})


def _coerce(name: str, value: Any, default: Any, factory: Any) -> Any:
    """Convert a TOML/CLI value to the type of the field's default, or raise ConfigError."""
    ref = factory() if default is dataclasses.MISSING else default
    try:
        if isinstance(ref, bool):
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(ref, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if isinstance(ref, float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if isinstance(ref, str):
            if not isinstance(value, (str, Path)):
                raise TypeError
            return str(value)
        if isinstance(ref, tuple):
            items = [value] if isinstance(value, (str, Path)) else list(value)
            return tuple(str(v) for v in items)
        if isinstance(ref, dict):
            return dict(value)
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"config key {name!r}: {value!r} is not a valid {type(ref).__name__}")


def _check_values(cfg: TrainConfig) -> None:
    positive = ("epochs", "batch_size", "lr", "adam_eps", "lr_step", "lr_gamma",
                "keep_checkpoints")
    for name in positive:
        value = getattr(cfg, name)
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"config key {name!r} must be positive, got {value!r}")
    for name in ("threads", "crop_size", "max_train_slices", "max_val_slices", "val_batch_size",
                 "max_minutes"):
        if not getattr(cfg, name) >= 0:
            raise ConfigError(f"config key {name!r} must be >= 0, got {getattr(cfg, name)!r}")
    if cfg.precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision {cfg.precision!r}; "
                          f"choose one of {sorted(PRECISIONS)}")
    if cfg.loss not in LOSSES:
        raise ConfigError(f"Unknown loss {cfg.loss!r}; choose one of {sorted(LOSSES)}")
    if cfg.normalization:
        from tomodl.normalization import Policy

        try:
            Policy.from_dict(dict(cfg.normalization))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config key 'normalization': {err}") from None
    check_network(cfg.arch, cfg.model_args)


def init_source(init: str) -> Path:
    """The weights folder of config key ``init``: a released model's folder
    (:func:`tomodl.models.registry.shipped_weights`) or an existing folder, else ConfigError."""
    from tomodl.errors import WeightsError
    from tomodl.models.registry import list_models, shipped_weights

    if init in list_models() and not Path(init).is_dir():
        try:
            return shipped_weights(init)
        except WeightsError as err:
            raise ConfigError(f"config key 'init': {err}") from None
    if not Path(init).is_dir():
        raise ConfigError(f"config key 'init': {init!r} is neither a released model "
                          f"({list_models()}) nor a weights folder; use \"\" for a random "
                          "initialization")
    return Path(init)


def check_network(arch: str, model_args: Mapping[str, Any], source: str = "training config",
                  fix: str = "fix [model_args] in the config or --set model_args.KEY=VALUE",
                  arch_field: str = "config key 'arch'") -> None:
    """Raise :class:`ConfigError` unless ``arch`` and ``model_args`` describe a network that
    a weights folder could hold.

    The check applied to weights folders (:func:`tomodl.models.checks.check_model_args`, and the
    parameter count on torch's ``meta`` device), so that a network too large to build stops
    here, before anything is allocated.  ``source`` and ``fix`` start and end the message
    (``arch_field`` starts that of an unknown ``arch``).
    """
    from tomodl.errors import WeightsError
    from tomodl.models.checks import check_model_args, expected_tensors
    from tomodl.models.registry import check_model_name

    try:
        check_model_name(arch)
    except ValueError as err:
        raise ConfigError(f"{arch_field}: {err}") from None
    try:
        args = check_model_args(arch, dict(model_args), source, fix)
        expected_tensors(arch, args, source, fix)
    except WeightsError as err:
        raise ConfigError(str(err)) from None


def from_mapping(values: Mapping[str, Any]) -> TrainConfig:
    """Build a config from a dict; unknown keys raise :class:`ConfigError` listing valid keys."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; valid keys are {names}")
    return TrainConfig(**values)


def parse_override(item: str) -> Tuple[str, Any]:
    """Parse ``key=value`` (value as a TOML literal, else a plain string): the one parser of
    every ``--set`` / ``--profile-arg`` of the command line (through :func:`apply_overrides`)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not of the form KEY=VALUE (e.g. lr=1e-4, "
                          "model_args.base_filters=8, fill_range=[0.2, 1.5])")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key, value


def apply_overrides(values: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """Apply ``key=value`` strings (``table.key=value`` for nested tables) to a dict copy."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in values.items()}
    for item in overrides:
        key, value = parse_override(item)
        head, dot, sub = key.partition(".")
        if dot:
            table = out.setdefault(head, {})
            if not isinstance(table, dict):
                raise ConfigError(f"override {item!r}: {head!r} is not a table")
            table[sub] = value
        else:
            out[key] = value
    return out


def load_config(path: Optional[str], overrides: Iterable[str] = ()) -> TrainConfig:
    """Read a TOML file (or start from the defaults when ``path`` is None) and apply overrides."""
    values: Dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {str(p)!r} does not exist")
        try:
            values = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {str(p)!r} is not valid TOML: {err}") from None
    return from_mapping(apply_overrides(values, overrides))


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def to_toml(cfg: TrainConfig) -> str:
    """The resolved config as TOML text that :func:`load_config` reads back to an equal config."""
    d = cfg.to_dict()
    lines = [f"{k} = {_toml_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    for k, v in d.items():
        if isinstance(v, dict):
            lines += ["", f"[{k}]"] + [f"{kk} = {_toml_value(vv)}" for kk, vv in v.items()]
    return "\n".join(lines) + "\n"
