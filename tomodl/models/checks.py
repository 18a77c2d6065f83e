# SPDX-License-Identifier: BSD-3-Clause
"""Checks of an untrusted weights folder, done before any tensor or module is allocated.

A weights folder may come from anywhere, so :func:`tomodl.models.weights.load_weights` trusts
nothing in it:

* ``config.json`` is read with a size limit (:data:`MAX_CONFIG_BYTES`), its JSON nesting depth
  is bounded (:data:`MAX_JSON_DEPTH`) before it is parsed, and every field is checked for its
  type, its bounds and unknown keys (:func:`check_config_dict`); ``model_args`` must be the
  constructor arguments of the network, each within :data:`MODEL_ARG_BOUNDS`, and the network
  they describe must have at most :data:`MAX_PARAMETERS` parameters;
* only the header of ``model.safetensors`` is read (at most :data:`MAX_HEADER_BYTES`) and
  compared with the tensors ``model_args`` imply, computed on torch's ``meta`` device, which
  allocates nothing (:func:`check_header`): the same names and shapes, float tensors stored in
  the ``dtype`` of ``config.json`` (float16, float32 or bfloat16), offsets that tile the file
  exactly (a truncated file is named as such);
* after loading, float tensors must be finite (:func:`check_finite`).

Every failure is one :class:`~tomodl.errors.WeightsError` line naming the file, the field and
the fix.
"""
from __future__ import annotations

import inspect
import json
import math
import re
import struct
from pathlib import Path
from typing import Any, Dict, Tuple

import numpy as np

from tomodl.errors import WeightsError
from tomodl.models.registry import MODELS, list_models, model_class

#: largest config.json read (the shipped ones are ~3 kB)
MAX_CONFIG_BYTES = 1 << 20
#: deepest JSON nesting accepted in config.json and in the safetensors header
MAX_JSON_DEPTH = 32
#: largest safetensors header read (the paper's ResAttUnet has 13 kB)
MAX_HEADER_BYTES = 1 << 20
#: the form of a recorded FBP filter name (TomoPy's names are all of this form)
FILTER_NAME = re.compile(r"[a-z0-9_]{1,32}")
#: largest network (parameters) a weights folder may describe (the paper's ResAttUnet: 7.9 M)
MAX_PARAMETERS = 100_000_000
#: inclusive bounds of the integer constructor arguments
MODEL_ARG_BOUNDS = {"base_filters": (1, 256), "depth": (2, 8), "stem": (1, 4),
                    "stem_filters": (0, 64)}
#: arguments added after the first weights format, with the values that give the paper's
#: network: recorded in config.json only when they differ, so older tomodl reads the folders
LATER_ARGS = {"stem": 1, "stem_filters": 0}
#: widest level (``base_filters * 2 ** (depth - 1)``) accepted (the paper's networks: 512)
MAX_WIDTH = 4096
#: safetensors dtype codes of each storage dtype of config.json
STORAGE_CODES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "I64": 8}
#: known keys of the ``release`` record of shipped weights (tomodl.models.releases)
RELEASE_KEYS = ("name", "sparse_factors", "angles", "min_angles", "max_angles", "caution_below",
                "auto", "description", "source_sha256", "metrics")
_RESAVE = "re-save the weights with tomodl.models.weights.save_weights or fix that field"
_ESCAPE = re.compile(rb"\\.", re.DOTALL)


def fail(source: Any, field: str, problem: str, fix: str = _RESAVE) -> WeightsError:
    """The one-line error for ``field`` of ``source``."""
    return WeightsError(f"{source}: {field} {problem}; {fix}")


def json_depth(raw: bytes) -> int:
    """Deepest nesting of ``[`` and ``{`` in JSON text ``raw`` (brackets inside strings ignored).

    Linear in ``len(raw)``: escapes are dropped (a regular expression without backtracking),
    then a bracket counts when an even number of quotes precedes it.
    """
    codes = np.frombuffer(_ESCAPE.sub(b"", raw), dtype=np.uint8)
    quote = codes == ord('"')
    outside = (np.cumsum(quote) - quote) % 2 == 0
    step = (np.isin(codes, (ord("["), ord("{"))).astype(np.int64)
            - np.isin(codes, (ord("]"), ord("}")))) * outside
    return int(np.cumsum(step).max(initial=0))


def parse_json(raw: bytes, source: Any, what: str) -> Any:
    """Parse JSON bytes whose size is already bounded, refusing deep nesting first."""
    depth = json_depth(raw)
    if depth > MAX_JSON_DEPTH:
        raise fail(source, what, f"nests {depth} levels deep (at most {MAX_JSON_DEPTH})",
                   "the file was not written by tomodl; re-save the weights")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise WeightsError(f"{source}: not a valid JSON {what} ({err}); re-save the weights"
                           ) from None


def read_json_file(path: Path, what: str = "weights config") -> Any:
    """Read at most :data:`MAX_CONFIG_BYTES` of ``path`` and parse it with :func:`parse_json`."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as err:
        raise WeightsError(f"{path}: cannot read the {what} ({err.strerror or err}); "
                           "check the weights folder") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise fail(path, "size", f"exceeds {MAX_CONFIG_BYTES} bytes",
                   "the file was not written by tomodl; re-save the weights")
    return parse_json(raw, path, what)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _is_number(v: Any) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _check_int(source, field: str, v: Any, lo: int, hi: int, none_ok: bool = False,
               fix: str = _RESAVE) -> None:
    if v is None and none_ok:
        return
    if not _is_int(v) or not lo <= v <= hi:
        raise fail(source, field, f"= {repr(v)[:80]} is not an integer in [{lo}, {hi}]", fix)


def _check_type(source, field: str, v: Any, kind: type, none_ok: bool = False,
                fix: str = _RESAVE) -> None:
    if not (isinstance(v, kind) or (v is None and none_ok)):
        names = f"{kind.__name__}{' or null' if none_ok else ''}"
        raise fail(source, field, f"= {str(v)[:80]!r} is not a {names}", fix)


def recorded_args(args: Dict[str, Any]) -> Dict[str, Any]:
    """``args`` as config.json records them: :data:`LATER_ARGS` left out at their defaults."""
    return {k: v for k, v in args.items() if k not in LATER_ARGS or LATER_ARGS[k] != v}


def check_model_args(arch: str, model_args: Any, source: Any, fix: str = _RESAVE
                     ) -> Dict[str, Any]:
    """Check ``model_args`` against the constructor of ``arch`` and :data:`MODEL_ARG_BOUNDS`.

    The one check of network arguments, for weights folders and training configs alike
    (:mod:`tomodl.training.config`); ``fix`` ends each message.  Returns the full arguments
    (the constructor's defaults updated with ``model_args``).
    """
    _check_type(source, "model_args", model_args, dict, fix=fix)
    params = inspect.signature(model_class(arch)).parameters
    unknown = sorted(set(model_args) - set(params))
    if unknown:
        raise fail(source, "model_args", f"has unknown keys {unknown} for {arch!r} (known: "
                   f"{sorted(params)})", fix)
    for key, value in model_args.items():
        default = params[key].default
        if key in MODEL_ARG_BOUNDS:
            _check_int(source, f"model_args.{key}", value, *MODEL_ARG_BOUNDS[key], fix=fix)
        elif isinstance(default, bool) and not isinstance(value, bool):
            raise fail(source, f"model_args.{key}", f"= {value!r} is not true or false", fix)
    args = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    args.update(model_args)
    width = args["base_filters"] * 2 ** (args["depth"] - 1)
    if width > MAX_WIDTH:
        raise fail(source, "model_args", f"base_filters * 2**(depth - 1) = {width} exceeds "
                   f"{MAX_WIDTH} channels", fix)
    return args


def _check_normalization(source, d: Any) -> None:
    from tomodl.normalization import Policy

    _check_type(source, "normalization", d, dict)
    for key in ("low", "high"):
        if key in d and not _is_number(d[key]):
            raise fail(source, f"normalization.{key}", f"= {d[key]!r} is not a number")
    _check_type(source, "normalization.circle", d.get("circle", True), bool)
    _check_type(source, "normalization.name", d.get("name", "percentile"), str)
    try:
        Policy.from_dict(d)
    except (TypeError, ValueError) as err:
        raise fail(source, "normalization", f"is invalid ({err})") from None


def _check_release(source, rel: Any) -> None:
    """The ``release`` record of shipped weights (see :mod:`tomodl.models.releases`)."""
    _check_type(source, "release", rel, dict)
    unknown = sorted(set(rel) - set(RELEASE_KEYS))
    if unknown:
        raise fail(source, "release", f"has unknown keys {unknown} (known: {list(RELEASE_KEYS)})")
    for key in ("name", "description", "source_sha256"):
        _check_type(source, f"release.{key}", rel.get(key, ""), str)
    _check_type(source, "release.auto", rel.get("auto", True), bool)
    _check_type(source, "release.metrics", rel.get("metrics", {}), dict)
    factors = rel.get("sparse_factors", [])
    _check_type(source, "release.sparse_factors", factors, list)
    for k in factors:
        _check_int(source, "release.sparse_factors", k, 1, 100_000)
    for key in ("min_angles", "max_angles", "caution_below"):
        v = rel.get(key)
        if v is not None and not (_is_number(v) and 0 < v <= 1e7):
            raise fail(source, f"release.{key}", f"= {v!r} is not a number in (0, 1e7] or null")
    angles = rel.get("angles", [1, 1e6])
    if not (isinstance(angles, list) and len(angles) == 2 and all(map(_is_number, angles))
            and 0 < angles[0] <= angles[1] <= 1e7):
        raise fail(source, "release.angles", f"= {angles!r} is not [lo, hi] with 0 < lo <= hi")


def check_config_dict(d: Any, source: Any, fields: Tuple[str, ...], version: int) -> None:
    """Check every field of a parsed ``config.json`` (see :class:`WeightsConfig`)."""
    if not isinstance(d, dict):
        raise WeightsError(f"{source}: expected a JSON object; re-save the weights")
    unknown, missing = set(d) - set(fields), {"arch", "model_args"} - set(d)
    if unknown or missing:
        raise WeightsError(
            f"{source}: unknown keys {sorted(unknown)} / missing keys {sorted(missing)}; "
            "the file was not written by tomodl.models.weights.save_weights"
        )
    fv = d.get("format_version", version)
    _check_int(source, "format_version", fv, 1, 10**6)
    if fv > version:
        raise WeightsError(f"{source}: written by a newer tomodl; upgrade tomodl to load it")
    if not isinstance(d["arch"], str) or d["arch"] not in MODELS:
        raise WeightsError(f"{source}: unknown arch {str(d['arch'])[:80]!r}; known: "
                           f"{list_models()}")
    check_model_args(d["arch"], d["model_args"], source)
    _check_normalization(source, d.get("normalization", {}))
    _check_int(source, "sparse_factor", d.get("sparse_factor"), 1, 100_000, none_ok=True)
    name = d.get("filter_name")
    # the name's form only: which filters exist is recon's business (models never imports
    # recon); recon.denoising warns when it differs from the run's filter
    if name is not None and not (isinstance(name, str) and FILTER_NAME.fullmatch(name)):
        raise fail(source, "filter_name", f"= {str(name)[:80]!r} is not a filter name "
                   "(1-32 lower-case letters, digits or '_')")
    for key in ("training_data", "tomodl_version"):
        _check_type(source, key, d.get(key, ""), str)
    dtype = d.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in STORAGE_CODES:
        raise fail(source, "dtype", f"= {str(dtype)[:80]!r} is not one of {list(STORAGE_CODES)}")
    sha = d.get("sha256", "")
    if not (isinstance(sha, str) and re.fullmatch("[0-9a-f]{64}", sha)):
        raise fail(source, "sha256", f"= {str(sha)[:80]!r} is not a SHA-256 hex digest",
                   "re-save or re-download the weights")
    _check_type(source, "extra", d.get("extra", {}), dict)
    _check_release(source, d.get("release", {}))


def expected_tensors(arch: str, model_args: Dict[str, Any], source: Any, fix: str = _RESAVE
                     ) -> Dict[str, Tuple[Tuple[int, ...], bool]]:
    """``{name: (shape, is_float)}`` of the network ``model_args`` describe, built on torch's
    ``meta`` device (no memory); more than :data:`MAX_PARAMETERS` raises :class:`WeightsError`."""
    import torch

    with torch.device("meta"):
        net = model_class(arch)(**model_args)
    state = net.state_dict()
    n = sum(t.numel() for t in state.values())
    if n > MAX_PARAMETERS:
        raise fail(source, "model_args", f"{model_args} describe a network of {n:,} parameters "
                   f"(at most {MAX_PARAMETERS:,})", fix)
    return {k: (tuple(t.shape), t.is_floating_point()) for k, t in state.items()}


def read_header(path: Path) -> Tuple[Dict[str, Any], int, int]:
    """The JSON header of a safetensors file, its length and the file size; reads only the
    header (at most :data:`MAX_HEADER_BYTES`)."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            head = fh.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            if not 2 <= n <= min(MAX_HEADER_BYTES, size - 8):
                raise not_safetensors(path, f"header length {n} of a {size}-byte file, at most "
                                            f"{MAX_HEADER_BYTES}")
            raw = fh.read(n)
    except OSError as err:
        raise WeightsError(f"{path}: cannot read ({err.strerror or err}); check the weights "
                           "folder") from None
    header = parse_json(raw, path, "safetensors header")
    if not isinstance(header, dict):
        raise not_safetensors(path, "the header is not a JSON object")
    return header, n, size


def not_safetensors(path: Path, why: str) -> WeightsError:
    """The error for a file that is not a safetensors file written by tomodl."""
    return WeightsError(f"{path}: not a valid safetensors file ({why}); tomodl never unpickles "
                        "weights: re-save them with tomodl.models.weights.save_weights")


def check_header(path: Path, expected: Dict[str, Tuple[Tuple[int, ...], bool]],
                 dtype: str, cfg_path: Any) -> int:
    """Compare the header of ``path`` with the tensors ``model_args`` imply (see module);
    return the file size in bytes."""
    header, n, size = read_header(path)
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise not_safetensors(path, "__metadata__ is not a map of strings")
    missing, unexpected = sorted(set(expected) - set(header)), sorted(set(header) - set(expected))
    if missing or unexpected:
        raise WeightsError(
            f"{path}: tensors do not match model_args of {cfg_path} (missing {missing[:4]}, "
            f"unexpected {unexpected[:4]}); the file and config.json belong to different models"
        )
    spans = []
    for name, (shape, is_float) in expected.items():
        spans.append(_check_entry(path, name, header[name], shape, is_float, dtype, cfg_path))
    end = 0
    for begin, stop in sorted(spans):
        if begin != end:
            raise not_safetensors(path, f"tensor data overlap or leave gaps at byte {begin}")
        end = stop
    if 8 + n + end != size:
        raise WeightsError(f"{path}: truncated or padded: the file has {size} bytes, its header "
                           f"describes {8 + n + end}; re-download or re-save the weights")
    return size


def _check_entry(path, name: str, entry: Any, shape, is_float: bool, dtype: str,
                 cfg_path) -> Tuple[int, int]:
    """Check one header entry; return its ``(begin, end)`` data offsets."""
    if not (isinstance(entry, dict) and set(entry) == {"dtype", "shape", "data_offsets"}):
        raise not_safetensors(path, f"entry {name!r} is malformed")
    code = entry["dtype"]
    want = STORAGE_CODES[dtype] if is_float else "I64"
    if code != want:
        raise WeightsError(
            f"{path}: tensor {name!r} is stored as {str(code)[:16]!r}, expected {want!r} "
            f"(dtype {dtype!r} in {cfg_path}; weights are float16, float32 or bfloat16); "
            "re-save the weights with tomodl.models.weights.save_weights"
        )
    got = entry["shape"]
    if not (isinstance(got, list) and all(map(_is_int, got))) or tuple(got) != shape:
        raise WeightsError(
            f"{path}: tensor {name!r} has shape {str(got)[:80]}, but model_args of {cfg_path} "
            f"give {list(shape)}; the file and config.json belong to different models"
        )
    offsets = entry["data_offsets"]
    nbytes = math.prod(shape) * _ITEMSIZE[code]
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))
            and 0 <= offsets[0] and offsets[1] - offsets[0] == nbytes):
        raise not_safetensors(path, f"data offsets of {name!r} do not match its shape")
    return offsets[0], offsets[1]


def check_finite(tensors: Dict[str, Any], path: Path) -> None:
    """Refuse float tensors holding NaN or infinite values (diverged or corrupted training)."""
    for name, t in tensors.items():
        if t.is_floating_point() and not np.isfinite(t.float().numpy()).all():
            raise WeightsError(
                f"{path}: tensor {name!r} holds NaN or infinite values (training diverged or the "
                "file is corrupt)", fix="use other weights, or algorithm='fbp'",
                cli_fix="use other weights, or --algorithm fbp")
