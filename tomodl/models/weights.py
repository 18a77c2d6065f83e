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

A weights folder is untrusted input.  Before any tensor or module is allocated, every field of
``config.json`` is checked (size, JSON nesting, types, bounds, unknown keys) and the tensor
names, shapes and dtypes in the safetensors header are compared with those ``model_args``
imply (:mod:`tomodl.models.checks`).  Loading never unpickles anything: tensors are read with
``safetensors`` from bytes whose SHA-256 has been checked against ``config.json``, and must be
finite.  Every failure raises :class:`tomodl.errors.WeightsError` with one line naming the file,
the field and the fix.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

from tomodl.errors import WeightsError
from tomodl.io.atomic import atomic_file, check_replace
from tomodl.models.checks import (
    check_config_dict,
    check_finite,
    check_header,
    check_model_args,
    recorded_args,
    expected_tensors,
    not_safetensors,
    read_json_file,
)
from tomodl.models.registry import model_class
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
        """Validate a parsed ``config.json`` field by field
        (:func:`tomodl.models.checks.check_config_dict`); problems raise :class:`WeightsError`
        naming the file, the field and the fix."""
        check_config_dict(d, source, tuple(cls.__dataclass_fields__), FORMAT_VERSION)
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
    return WeightsConfig.from_dict(read_json_file(cfg_path), source=cfg_path)


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


def _check_model_args(model, arch: str, model_args: dict) -> None:
    """``model_args`` must rebuild a network with exactly ``model``'s tensors."""
    cls = model_class(arch)
    if not isinstance(model, cls):
        raise WeightsError(
            f"model is a {type(model).__name__}, not {arch!r}; save the bare network"
        )
    ref = expected_tensors(arch, model_args, "model_args")
    own = {k: (tuple(v.shape), v.is_floating_point()) for k, v in model.state_dict().items()}
    flags = (model_args.get("depth"), model_args.get("residual"))
    if ref != own or flags != (model.depth, model.residual):
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
        Replace the weights in ``directory``; only a weights folder that tomodl wrote is
        replaced (:func:`tomodl.io.atomic.check_replace`), other files there are kept.

    Returns
    -------
    Path
        ``directory``.
    """
    from safetensors.torch import save

    import tomodl

    directory = Path(directory).expanduser()
    for name in (WEIGHTS_FILE, CONFIG_FILE):     # both checked before either is written
        check_replace(directory / name, overwrite=overwrite, kinds=("weights",))
    model_args = check_model_args(arch, dict(model_args), f"save_weights({arch!r})")
    _check_model_args(model, arch, model_args)
    stored = str(dtype or "torch.float32").replace("torch.", "")
    if stored not in STORAGE_DTYPES:
        raise ValueError(f"Unknown storage dtype {dtype!r}; choose one of {list(STORAGE_DTYPES)}")
    data = save(_storage_tensors(model, dtype), metadata={"format": "pt", "arch": arch})
    cfg = WeightsConfig(
        arch=arch,
        model_args=recorded_args(model_args),
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
    _write(directory / WEIGHTS_FILE, data, overwrite)
    _write(directory / CONFIG_FILE, (json.dumps(cfg.to_dict(), indent=2) + "\n").encode(),
           overwrite)
    logger.info("saved %s weights (%s) to %s", arch, stored, directory)
    return directory


def _write(path: Path, data: bytes, overwrite: bool) -> None:
    """Write ``data`` to ``path`` atomically; with ``overwrite`` only over tomodl's weights
    (:func:`tomodl.io.atomic.atomic_file`)."""
    with atomic_file(path, overwrite=overwrite, kinds=("weights",)) as tmp:
        tmp.write_bytes(data)


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
        Missing folder or file; a ``config.json`` that is too large, too deeply nested, or has
        a field of the wrong type, out of bounds or unknown; architecture mismatch; a
        safetensors header whose tensors disagree with ``model_args`` (names, shapes, dtypes
        other than the ``dtype`` of ``config.json``), a truncated file, a hash mismatch, a file
        that is not safetensors, or tensors holding NaN or infinite values.  All but the last
        two are found before any tensor or module is allocated.
    """
    import torch

    st_path, cfg_path = _paths(source)
    cfg = read_config(st_path.parent)
    if expected_arch is not None and cfg.arch != expected_arch:
        raise WeightsError(
            f"{st_path.parent}: weights are for {cfg.arch!r}, not {expected_arch!r}; "
            f"use the {cfg.arch!r} model or other weights"
        )
    model_args = check_model_args(cfg.arch, cfg.model_args, cfg_path)
    size = check_header(st_path, expected_tensors(cfg.arch, model_args, cfg_path), cfg.dtype,
                        cfg_path)
    data = _read_exactly(st_path, size)
    if _sha256(data) != cfg.sha256:
        raise WeightsError(
            f"{st_path}: SHA-256 does not match config.json (file truncated, modified or "
            "replaced); re-download or re-save the weights"
        )
    tensors = _parse_safetensors(data, st_path)
    del data
    state = {k: (v.to(torch.float32) if v.is_floating_point() else v) for k, v in tensors.items()}
    check_finite(state, st_path)
    with torch.device("meta"):            # no random initialization: every tensor is loaded
        model = model_class(cfg.arch)(**model_args)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        detail = "; ".join(line.strip() for line in str(err).strip().splitlines()[1:])
        raise WeightsError(
            f"{st_path}: tensors do not match {cfg.arch!r} with {cfg.model_args} "
            f"({detail[:300]}); the file and config.json belong to different models"
        ) from None
    return model.eval(), cfg


def _read_exactly(path: Path, size: int) -> bytes:
    """The ``size`` bytes of ``path`` (its size when the header was checked), no more."""
    with open(path, "rb") as fh:
        data = fh.read(size + 1)
    if len(data) != size:
        raise WeightsError(f"{path}: the file changed while it was read; load it again")
    return data


def _parse_safetensors(data: bytes, path: Path) -> Dict[str, "torch.Tensor"]:  # noqa: F821
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as err:  # safetensors raises its own error types for any malformed header
        raise not_safetensors(path, type(err).__name__) from None
