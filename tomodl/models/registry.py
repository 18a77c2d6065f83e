# SPDX-License-Identifier: BSD-3-Clause
"""The model registry: one dict of network names, ``create_model`` and ``list_models``.

This module does not import torch, so ``list_models()`` (used to parse
``algorithm="fbp+<model>"``) works in an install without the deep-learning extra; the network
classes are imported only when one is built.

Released weights are folders ``tomodl/weights/<name>/`` holding ``model.safetensors`` and
``config.json`` (see :mod:`tomodl.models.weights`); ``create_model(name, pretrained=True)``
loads the folder named after the network.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, List, Union

from tomodl.errors import TomodlError, WeightsError

#: registered networks: name -> "module:class"
MODELS = {
    "resattunet": "tomodl.models.resattunet:ResAttUnet",
    "unet": "tomodl.models.unet:UNet",
}

#: where the weights shipped with the package live (one folder per released model)
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def list_models() -> List[str]:
    """Names accepted by :func:`create_model` and by ``algorithm="fbp+<name>"``."""
    return sorted(MODELS)


def check_model_name(name: str) -> str:
    """Return ``name`` if it is registered; otherwise raise ``ValueError`` listing the options."""
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; choose one of {list_models()}")
    return name


def model_class(name: str) -> type:
    """The ``torch.nn.Module`` subclass registered as ``name``."""
    module, _, cls = MODELS[check_model_name(name)].partition(":")
    return getattr(importlib.import_module(module), cls)


def shipped_weights(name: str) -> Path:
    """Folder of the weights released for model ``name``: ``tomodl/weights/<name>/``.

    Raises :class:`tomodl.errors.WeightsError` naming the folder when it does not exist.
    """
    folder = WEIGHTS_DIR / check_model_name(name)
    if not folder.is_dir():
        raise WeightsError(
            f"no released weights for {name!r}: {folder} does not exist; train a model "
            "(tomodl.models.weights.save_weights) and pass its folder instead"
        )
    return folder


def create_model(
    name: str, pretrained: Union[bool, str, Path] = False, **kwargs: Any
) -> "torch.nn.Module":  # noqa: F821
    """Build a registered network, optionally with trained weights.

    Parameters
    ----------
    name : str
        One of :func:`list_models` (``"resattunet"``, ``"unet"``).
    pretrained : bool or path, default False
        ``False``: random initialization from ``kwargs``.  ``True``: the weights shipped in
        ``tomodl/weights/<name>/``.  A path: a weights folder (or its ``model.safetensors``)
        written by :func:`tomodl.models.weights.save_weights`.
    **kwargs
        Constructor arguments (``base_filters``, ``depth``, ``residual``).  Not allowed with
        ``pretrained``: the architecture then comes from the weights' ``config.json``.

    Returns
    -------
    torch.nn.Module
        On the CPU, float32, in training mode when freshly built and in eval mode when loaded.

    Raises
    ------
    ValueError
        Unknown ``name``.
    tomodl.errors.WeightsError
        Missing, corrupt or mismatched weights.

    Examples
    --------
    >>> net = create_model("unet", base_filters=4, depth=3)
    >>> type(net).__name__
    'UNet'
    """
    cls = model_class(name)
    if pretrained is False or pretrained is None:
        return cls(**kwargs)
    if kwargs:
        raise TomodlError(
            f"create_model({name!r}): {sorted(kwargs)} cannot be combined with pretrained weights; "
            "the architecture comes from the weights' config.json (drop the keyword arguments)"
        )
    from tomodl.models.weights import load_weights

    source = shipped_weights(name) if pretrained is True else Path(pretrained)
    model, _ = load_weights(source, expected_arch=name)
    return model
