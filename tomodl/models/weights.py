# SPDX-License-Identifier: BSD-3-Clause
"""Released model weights: a folder with ``model.safetensors`` and ``config.json``.

``config.json`` records everything needed to use the weights correctly (the data contract they
were trained for), as :class:`WeightsConfig`::

    {"format_version": 1, "arch": "resattunet", "model_args": {"base_filters": 32, "depth": 5, ...},
     "normalization": {"name": "percentile", "low": 1.0, "high": 99.0, "circle": true},
     "sparse_factor": 20, "filter_name": "shepp", "training_data": "...", "tomodl_version": "0.1.0",
     "dtype": "float16", "sha256": "<hex digest of model.safetensors>", "extra": {...},
     "release": {...}}

``release`` is empty except for the folders shipped in ``tomodl/weights/``, where it says which
scans they serve (:mod:`tomodl.models.releases`).

Loading never unpickles anything: tensors are read with ``safetensors`` from bytes whose SHA-256
has been checked against ``config.json`` first.  Every failure raises
:class:`tomodl.errors.WeightsError` with one line naming the file and the fix.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from tomodl.errors import OutputError, WeightsError
from tomodl.models.registry import MODELS, list_models, model_class
from tomodl.normalization import Policy

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1
#: storage dtypes accepted by :func:`save_weights`
STORAGE_DTYPES = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class WeightsConfig:
    """The contents of ``config.json``; see the module docstring for the meaning of each field."""

    arch: str
    model_args: Dict[str, Any]
    normalization: Dict[str, Any] = field(default_factory=lambda: Policy().to_dict())
    sparse_factor: Optional[int] = None
    filter_name: Optional[str] = None
    training_data: str = ""
    tomodl_version: str = ""
    dtype: str = "float32"
    sha256: str = ""
    extra: Dict[str, Any] = field(default_factory=dict)
    release: Dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def policy(self) -> Policy:
        """The intensity normalization the weights were trained with."""
        return Policy.from_dict(self.normalization)

    def to_dict(self) -> dict:
        """JSON-ready mapping, as written to ``config.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, *, source: Path) -> "WeightsConfig":
        """Validate a parsed ``config.json``; problems raise :class:`WeightsError` naming it."""
        fields = set(cls.__dataclass_fields__)
        unknown, missing = set(d) - fields, {"arch", "model_args"} - set(d)
        if unknown or missing:
            raise WeightsError(
                f"{source}: unknown keys {sorted(unknown)} / missing keys {sorted(missing)}; "
                "the file was not written by tomodl.models.weights.save_weights"
            )
        if int(d.get("format_version", FORMAT_VERSION)) > FORMAT_VERSION:
            raise WeightsError(f"{source}: written by a newer tomodl; upgrade tomodl to load it")
        if d["arch"] not in MODELS:
            raise WeightsError(f"{source}: unknown arch {d['arch']!r}; known: {list_models()}")
        try:
            Policy.from_dict(d.get("normalization", {}))
        except (TypeError, ValueError) as err:
            raise WeightsError(f"{source}: invalid normalization ({err})") from None
        return cls(**d)


def _paths(source: Union[str, Path]) -> Tuple[Path, Path]:
    """``(model.safetensors, config.json)`` for a folder or a file inside one."""
    path = Path(source).expanduser()
    folder = path if path.is_dir() or not path.suffix else path.parent
    if not folder.is_dir():
        raise WeightsError(
            f"no weights folder at {folder}; pass a folder written by "
            "tomodl.models.weights.save_weights (model.safetensors + config.json)"
        )
    if path.is_file() and path.name not in (WEIGHTS_FILE, CONFIG_FILE):
        raise WeightsError(
            f"{path}: tomodl loads only a weights folder (model.safetensors + config.json) and "
            "never unpickles; re-save the model with tomodl.models.weights.save_weights"
        )
    for name in (WEIGHTS_FILE, CONFIG_FILE):
        if not (folder / name).is_file():
            raise WeightsError(
                f"{folder}: missing {name}; a weights folder holds {WEIGHTS_FILE} and "
                f"{CONFIG_FILE} as written by tomodl.models.weights.save_weights"
            )
    return folder / WEIGHTS_FILE, folder / CONFIG_FILE


def read_config(source: Union[str, Path]) -> WeightsConfig:
    """Read and validate ``config.json`` of a weights folder without loading any tensor."""
    _, cfg_path = _paths(source)
    try:
        d = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WeightsError(
            f"{cfg_path}: not a valid JSON weights config ({err}); re-save the weights"
        ) from None
    if not isinstance(d, dict):
        raise WeightsError(f"{cfg_path}: expected a JSON object; re-save the weights")
    return WeightsConfig.from_dict(d, source=cfg_path)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _storage_tensors(model, dtype) -> Dict[str, "torch.Tensor"]:  # noqa: F821
    out = {}
    for key, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[key] = t.contiguous()
    return out


def _full_model_args(arch: str, model_args: Dict[str, Any]) -> Dict[str, Any]:
    """``model_args`` completed with the constructor's defaults, so config.json is explicit."""
    params = inspect.signature(model_class(arch)).parameters
    defaults = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **dict(model_args)}


def _check_model_args(model, arch: str, model_args: dict) -> None:
    """``model_args`` must rebuild a network with exactly ``model``'s tensors."""
    cls = model_class(arch)
    if not isinstance(model, cls):
        raise WeightsError(
            f"model is a {type(model).__name__}, not {arch!r}; save the bare network"
        )
    try:
        ref = cls(**model_args)
    except (TypeError, ValueError) as err:
        raise WeightsError(f"model_args {model_args} do not fit arch {arch!r} ({err})") from None
    shapes = [{k: tuple(v.shape) for k, v in m.state_dict().items()} for m in (ref, model)]
    flags = [(m.depth, m.residual) for m in (ref, model)]
    if shapes[0] != shapes[1] or flags[0] != flags[1]:
        raise WeightsError(
            f"the model's tensors differ from {arch!r} built with {model_args}; pass the arch and "
            "model_args the model was constructed with"
        )


def save_weights(
    model: "torch.nn.Module",  # noqa: F821
    directory: Union[str, Path],
    *,
    arch: str,
    model_args: Dict[str, Any],
    normalization: Optional[Dict[str, Any]] = None,
    sparse_factor: Optional[int] = None,
    filter_name: Optional[str] = None,
    training_data: str = "",
    dtype: Optional["torch.dtype"] = None,  # noqa: F821
    extra: Optional[Dict[str, Any]] = None,
    release: Optional[Dict[str, Any]] = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as a released-weights folder (``model.safetensors`` + ``config.json``).

    Parameters
    ----------
    model : torch.nn.Module
        A registered network, e.g. from :func:`tomodl.create_model`.
    directory : path
        Folder to create (its parents too).
    arch, model_args
        Registry name and constructor arguments of ``model``; checked against its tensors.
    normalization : dict, optional
        ``Policy().to_dict()`` of the training pairs (default: the default policy).
    sparse_factor, filter_name, training_data
        The data contract: angular subsampling and FBP filter of the training inputs, and a
        free-text description of the training data.
    dtype : torch.dtype, optional
        Storage dtype of floating tensors (``torch.float16`` halves the file for shipping);
        loading always gives float32 modules.
    extra : dict, optional
        JSON-serializable provenance (training config, metrics, git commit).
    release : dict, optional
        For shipped weights: the scans they serve (:mod:`tomodl.models.releases`).
    overwrite : bool
        Replace existing files in ``directory``.

    Returns
    -------
    Path
        ``directory``.
    """
    from safetensors.torch import save

    import tomodl

    directory = Path(directory).expanduser()
    if not overwrite and (directory / WEIGHTS_FILE).exists():
        raise OutputError(f"{directory / WEIGHTS_FILE} exists; pass overwrite=True to replace it")
    model_args = _full_model_args(arch, model_args)
    _check_model_args(model, arch, model_args)
    stored = str(dtype or "torch.float32").replace("torch.", "")
    if stored not in STORAGE_DTYPES:
        raise ValueError(f"Unknown storage dtype {dtype!r}; choose one of {list(STORAGE_DTYPES)}")
    data = save(_storage_tensors(model, dtype), metadata={"format": "pt", "arch": arch})
    cfg = WeightsConfig(
        arch=arch,
        model_args=model_args,
        normalization=dict(normalization or Policy().to_dict()),
        sparse_factor=None if sparse_factor is None else int(sparse_factor),
        filter_name=filter_name,
        training_data=training_data,
        tomodl_version=tomodl.__version__,
        dtype=stored,
        sha256=_sha256(data),
        extra=dict(extra or {}),
        release=dict(release or {}),
    )
    WeightsConfig.from_dict(cfg.to_dict(), source=directory / CONFIG_FILE)
    directory.mkdir(parents=True, exist_ok=True)
    _atomic_write(directory / WEIGHTS_FILE, data)
    _atomic_write(directory / CONFIG_FILE, (json.dumps(cfg.to_dict(), indent=2) + "\n").encode())
    logger.info("saved %s weights (%s) to %s", arch, stored, directory)
    return directory


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_weights(
    source: Union[str, Path], expected_arch: Optional[str] = None
) -> Tuple["torch.nn.Module", WeightsConfig]:  # noqa: F821
    """Build the network described by a weights folder and load its tensors.

    Parameters
    ----------
    source : path
        A weights folder, or its ``model.safetensors`` or ``config.json``.
    expected_arch : str, optional
        Fail unless the weights are for this registered network.

    Returns
    -------
    model : torch.nn.Module
        float32, on the CPU, in eval mode.
    config : WeightsConfig

    Raises
    ------
    tomodl.errors.WeightsError
        Missing folder or file, architecture mismatch, hash mismatch (modified or truncated
        file), a file that is not safetensors, or missing/unexpected/misshapen tensors.
    """
    import torch

    st_path, _ = _paths(source)
    cfg = read_config(st_path.parent)
    if expected_arch is not None and cfg.arch != expected_arch:
        raise WeightsError(
            f"{st_path.parent}: weights are for {cfg.arch!r}, not {expected_arch!r}; "
            f"use the {cfg.arch!r} model or other weights"
        )
    data = st_path.read_bytes()
    if _sha256(data) != cfg.sha256:
        raise WeightsError(
            f"{st_path}: SHA-256 does not match config.json (file truncated, modified or "
            "replaced); re-download or re-save the weights"
        )
    tensors = _parse_safetensors(data, st_path)
    model = model_class(cfg.arch)(**cfg.model_args)
    state = {k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in tensors.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = "; ".join(line.strip() for line in str(err).strip().splitlines()[1:])
        raise WeightsError(
            f"{st_path}: tensors do not match {cfg.arch!r} with {cfg.model_args} "
            f"({detail[:300]}); the file and config.json belong to different models"
        ) from None
    return model.eval(), cfg


def _parse_safetensors(data: bytes, path: Path) -> Dict[str, "torch.Tensor"]:  # noqa: F821
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as err:  # safetensors raises its own error types for any malformed header
        raise WeightsError(
            f"{path}: not a valid safetensors file ({type(err).__name__}); tomodl never unpickles "
            "weights: re-save them with tomodl.models.weights.save_weights"
        ) from None
