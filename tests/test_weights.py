# SPDX-License-Identifier: BSD-3-Clause
"""Released-weights folders: round trip, fp16 storage, and clear errors for bad files."""
import contextlib
import hashlib
import json
import pickle
import struct
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import tomodl  # noqa: E402
from tomodl.errors import OutputError, TomodlError, WeightsError  # noqa: E402
from tomodl.models.weights import load_weights, read_config, save_weights  # noqa: E402
from tomodl.normalization import Policy  # noqa: E402

TINY = {"base_filters": 4, "depth": 3}


def trained_like(arch):
    """A tiny network with non-trivial weights and batch-norm statistics."""
    torch.manual_seed(0)
    net = tomodl.create_model(arch, **TINY)
    torch.nn.init.normal_(net.head.weight, std=0.3)
    with torch.no_grad():
        net.train()(torch.rand(4, 1, 24, 20))  # moves the running statistics
    return net.eval()


def saved(tmp_path, arch="resattunet", **kw):
    net = trained_like(arch)
    folder = save_weights(net, tmp_path / arch, arch=arch, model_args=TINY, sparse_factor=20,
                          filter_name="shepp", training_data="tiny test", **kw)
    return net, folder


def rehash(folder):
    """Make config.json agree with the current model.safetensors (to reach the later checks)."""
    cfg = json.loads((folder / "config.json").read_text())
    cfg["sha256"] = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("arch", ["unet", "resattunet"])
def test_round_trip_is_bit_identical(tmp_path, arch):
    net, folder = saved(tmp_path, arch)
    loaded, cfg = load_weights(folder, expected_arch=arch)
    x = torch.rand(2, 1, 37, 31)
    with torch.inference_mode():
        assert torch.equal(net(x), loaded(x))
    assert not loaded.training
    again = tomodl.create_model(arch, pretrained=folder / "model.safetensors")
    with torch.inference_mode():
        assert torch.equal(net(x), again(x))


def test_config_records_the_data_contract(tmp_path):
    _, folder = saved(tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["arch"] == "resattunet"
    assert cfg["model_args"] == {"base_filters": 4, "depth": 3, "residual": True}
    assert cfg["normalization"] == Policy().to_dict()
    contract = (cfg["sparse_factor"], cfg["filter_name"], cfg["training_data"])
    assert contract == (20, "shepp", "tiny test")
    assert cfg["tomodl_version"] == tomodl.__version__ and cfg["dtype"] == "float32"
    assert cfg["sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    assert read_config(folder).policy == Policy()


def test_float16_storage_halves_the_file_and_loads_float32(tmp_path):
    net, f32 = saved(tmp_path)
    f16 = save_weights(net, tmp_path / "half", arch="resattunet", model_args=TINY,
                       dtype=torch.float16)
    size = [(d / "model.safetensors").stat().st_size for d in (f32, f16)]
    assert size[1] < 0.6 * size[0]
    loaded, cfg = load_weights(f16)
    assert cfg.dtype == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = torch.rand(1, 1, 37, 31)
    with torch.inference_mode():
        ref, out = net(x), loaded(x)
    assert float((ref - out).abs().max()) < 1e-2 * float((ref - x).abs().max())


def test_wrong_architecture(tmp_path):
    _, folder = saved(tmp_path)
    with pytest.raises(WeightsError, match="weights are for 'resattunet', not 'unet'"):
        load_weights(folder, expected_arch="unet")
    with pytest.raises(WeightsError, match="not 'unet'"):
        tomodl.create_model("unet", pretrained=folder)


def test_modified_or_truncated_file_fails_the_hash(tmp_path):
    _, folder = saved(tmp_path)
    st = folder / "model.safetensors"
    data = bytearray(st.read_bytes())
    data[-5] ^= 0xFF
    st.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"model\.safetensors: SHA-256 does not match"):
        load_weights(folder)
    st.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(WeightsError, match="truncated or padded"):
        load_weights(folder)


def test_truncated_file_with_matching_hash_is_not_safetensors(tmp_path):
    _, folder = saved(tmp_path)
    st = folder / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    rehash(folder)
    with pytest.raises(WeightsError, match="truncated or padded: the file has"):
        load_weights(folder)


class _Touch:
    """Unpickling this would create a file: the marker proves nothing is unpickled."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


@pytest.mark.parametrize("payload", ["pickle", "random"])
def test_foreign_file_is_rejected_and_never_unpickled(tmp_path, payload):
    _, folder = saved(tmp_path)
    marker = tmp_path / "unpickled"
    data = (pickle.dumps(_Touch(marker)) if payload == "pickle"
            else bytes(range(256)) * 8)
    (folder / "model.safetensors").write_bytes(data)
    rehash(folder)
    with pytest.raises(WeightsError, match="not a valid safetensors file.*never unpickles"):
        load_weights(folder)
    assert not marker.exists()


def test_pickle_checkpoint_path_is_refused(tmp_path):
    (tmp_path / "model.pt").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(WeightsError, match="never unpickles"):
        load_weights(tmp_path / "model.pt")


def test_missing_tensors(tmp_path):
    from safetensors.torch import load_file, save_file

    _, folder = saved(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    del tensors["head.weight"]
    save_file(tensors, folder / "model.safetensors")
    rehash(folder)
    with pytest.raises(WeightsError, match=r"tensors do not match.*head\.weight"):
        load_weights(folder)


def test_missing_files_and_folders(tmp_path):
    _, folder = saved(tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(WeightsError, match="missing config.json"):
        load_weights(folder)
    with pytest.raises(WeightsError, match="no weights folder"):
        load_weights(tmp_path / "nowhere")


def test_bad_config(tmp_path):
    _, folder = saved(tmp_path)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not a valid JSON"):
        load_weights(folder)
    (folder / "config.json").write_text(json.dumps({"arch": "vgg", "model_args": {}}))
    with pytest.raises(WeightsError, match="unknown arch 'vgg'"):
        load_weights(folder)


def test_pretrained_true_names_the_missing_shipped_folder(tmp_path, monkeypatch):
    from tomodl.models import registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path / "weights")
    with pytest.raises(WeightsError, match=r"weights/resattunet does not exist"):
        tomodl.create_model("resattunet", pretrained=True)


def test_save_checks_arguments(tmp_path):
    net, folder = saved(tmp_path)
    with pytest.raises(OutputError, match="overwrite=True"):
        save_weights(net, folder, arch="resattunet", model_args=TINY)
    with pytest.raises(WeightsError, match="tensors differ"):
        save_weights(net, tmp_path / "x", arch="resattunet",
                     model_args={"base_filters": 8, "depth": 3})
    with pytest.raises(WeightsError, match="not 'unet'"):
        save_weights(net, tmp_path / "y", arch="unet", model_args=TINY)
    with pytest.raises(ValueError, match="Unknown storage dtype"):
        save_weights(net, tmp_path / "z", arch="resattunet", model_args=TINY, dtype=torch.int8)
    assert isinstance(WeightsError("x"), TomodlError)


# -- untrusted weights folders: everything is checked before a tensor or module is allocated --

def tiny_folder(tmp_path, name="w", edit=None, **save):
    """A tiny U-Net (base 4, depth 2) weights folder; ``edit(cfg)`` changes its config.json."""
    from conftest import save_tiny_unet

    folder = save_tiny_unet(tmp_path / name, **save)
    if edit is not None:
        path = folder / "config.json"
        cfg = json.loads(path.read_text())
        edit(cfg)
        path.write_text(json.dumps(cfg))
    return folder


def _set(*keys_value):
    """``edit`` setting ``cfg[k0][k1]... = value``."""
    *keys, value = keys_value

    def edit(cfg):
        d = cfg
        for k in keys[:-1]:
            d = d[k]
        d[keys[-1]] = value
    return edit


def nested_json(depth):
    return "[" * depth + "]" * depth


@contextlib.contextmanager
def no_allocation():
    """Fail if tensors are loaded or a network is built (other than on the meta device)."""
    from tomodl.models import weights
    from tomodl.models.layers import EncoderDecoder

    def refuse(*_a, **_k):
        raise AssertionError("tensors or a module were allocated before the checks")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(weights, "_parse_safetensors", refuse)
        mp.setattr(EncoderDecoder, "_init_weights", refuse)
        yield


def refused(folder, match):
    """``load_weights(folder)`` raises WeightsError matching ``match`` before any allocation."""
    with no_allocation(), pytest.raises(WeightsError, match=match) as err:
        load_weights(folder)
    return str(err.value)


HOSTILE_CONFIGS = [
    (_set("model_args", "depth", 100), r"model_args\.depth = 100 is not an integer in \[2, 8\]"),
    (_set("model_args", "base_filters", 1e9),
     r"model_args\.base_filters = 1000000000\.0 is not an integer in \[1, 256\]"),
    (_set("model_args", "base_filters", 10**9), r"model_args\.base_filters = 1000000000 is not"),
    (_set("model_args", "foo", 1), r"model_args has unknown keys \['foo'\]"),
    (_set("model_args", "depth", True), r"model_args\.depth = True is not an integer"),
    (_set("model_args", "residual", "yes"), r"model_args\.residual = 'yes' is not true or false"),
    (_set("model_args", {"base_filters": 64, "depth": 8}), r"= 8192 exceeds 4096 channels"),
    (_set("model_args", {"base_filters": 128, "depth": 6}),
     r"of [\d,]+ parameters \(at most 100,000,000\)"),
    (_set("model_args", [4, 2]), r"model_args = '\[4, 2\]' is not a dict"),
    (_set("arch", ["unet"]), r"unknown arch"),
    (_set("format_version", "1"), r"format_version = '1' is not an integer"),
    (_set("normalization", "low", "1"), r"normalization\.low = '1' is not a number"),
    (_set("normalization", "circle", 1), r"normalization\.circle = '1' is not a bool"),
    (_set("sparse_factor", -3), r"sparse_factor = -3 is not an integer in \[1, 100000\]"),
    (_set("filter_name", "no pe!"), r"filter_name = 'no pe!' is not a filter name"),
    (_set("filter_name", 3), r"filter_name = '3' is not a filter name"),
    (_set("dtype", "int8"), r"dtype = 'int8' is not one of \['float32', 'float16', 'bfloat16'\]"),
    (_set("sha256", 12), r"sha256 = '12' is not a SHA-256 hex digest"),
    (_set("training_data", {"a": 1}), r"training_data = .* is not a str"),
    (_set("extra", []), r"extra = '\[\]' is not a dict"),
    (_set("release", {"angles": [0, 10]}), r"release\.angles = \[0, 10\] is not \[lo, hi\]"),
    (_set("release", {"sparse_factors": [0]}), r"release\.sparse_factors = 0 is not"),
    (_set("release", {"min_angles": "9"}), r"release\.min_angles = '9' is not a number"),
    (_set("release", {"rogue": 1}), r"release has unknown keys \['rogue'\]"),
]


@pytest.mark.parametrize("edit, match", HOSTILE_CONFIGS)
def test_hostile_config_fields_fail_fast(tmp_path, edit, match):
    import time

    folder = tiny_folder(tmp_path, edit=edit)
    t0 = time.perf_counter()
    msg = refused(folder, match)
    assert time.perf_counter() - t0 < 2.0
    assert "\n" not in msg and str(folder / "config.json") in msg
    assert "re-save" in msg or "known:" in msg


@pytest.mark.parametrize("text, match", [
    ('{"arch": "unet", "model_args": {}, "extra": {"x": ' + nested_json(100_000) + "}}",
     r"config\.json: weights config nests 100002 levels deep \(at most 32\)"),
    ('{"arch": "unet", "model_args": {}, "extra": {"s": "' + "x" * (2 << 20) + '"}}',
     r"config\.json: size exceeds 1048576 bytes"),
    ('{"arch": "unet", "model_args": {}, "extra": {"s": "[[[[\\"]]]"}}', r"sha256"),
    ("[1, 2]", r"config\.json: expected a JSON object"),
    (b"\xff\xfe{}", r"not a valid JSON weights config"),
])
def test_deep_large_or_malformed_json_fails_fast(tmp_path, text, match):
    folder = tiny_folder(tmp_path)
    (folder / "config.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    refused(folder, match)


def test_escape_heavy_json_is_scanned_in_linear_time(tmp_path):
    """An unterminated string of escaped quotes once made the nesting scan quadratic."""
    import time

    folder = tiny_folder(tmp_path)
    (folder / "config.json").write_bytes(b'{"arch": "' + b'\\"' * 500_000)
    t0 = time.perf_counter()
    refused(folder, "not a valid JSON weights config")
    assert time.perf_counter() - t0 < 2.0


def _write_safetensors(folder, header, body=b"", length=None):
    raw = json.dumps(header).encode()
    size = len(raw) if length is None else length
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", size) + raw + body)
    rehash(folder)


def test_oversize_or_nested_header_is_refused_before_reading_on(tmp_path):
    folder = tiny_folder(tmp_path)
    _write_safetensors(folder, {}, length=2**40)
    refused(folder,
            r"not a valid safetensors file \(header length "
            r"1099511627776 of a \d+-byte file, at most 1048576")
    _write_safetensors(folder, {"__metadata__": {"pad": "x" * (2 << 20)}})
    refused(folder, "header length")
    (folder / "model.safetensors").write_bytes(b"\x10\x00")
    rehash(folder)
    refused(folder, "not a valid safetensors file")
    raw = b'{"a": ' + nested_json(10_000).encode() + b"}"
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
    rehash(folder)
    refused(folder, "safetensors header nests 10001 levels deep")


def test_truncated_safetensors_is_named_before_loading(tmp_path):
    folder = tiny_folder(tmp_path)
    st = folder / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-7])
    rehash(folder)
    refused(folder,
            r"model\.safetensors: truncated or padded: the file "
            r"has \d+ bytes, its header describes \d+; re-download")


def test_tensor_shapes_must_match_model_args(tmp_path):
    folder = tiny_folder(tmp_path, edit=_set("model_args", "base_filters", 5))
    rehash(folder)
    refused(folder,
            r"tensor 'down\.0\.conv1\.0\.weight' has shape "
            r"\[4, 1, 3, 3\], but model_args of .*config\.json "
            r"give \[5, 1, 3, 3\]")
    folder = tiny_folder(tmp_path, "d3", edit=_set("model_args", "depth", 3))
    refused(folder, r"tensors do not match model_args .*missing \[")


def test_tensor_dtype_must_be_the_configured_float_type(tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tiny_folder(tmp_path)
    tensors = load_file(folder / "model.safetensors")
    as_f64 = {k: (v.double() if v.is_floating_point() else v) for k, v in tensors.items()}
    save_file(as_f64, folder / "model.safetensors")
    rehash(folder)
    refused(folder,
            r"is stored as 'F64', expected 'F32' \(dtype "
            r"'float32' in .*weights are float16, float32 or "
            r"bfloat16\)")
    as_i8 = {k: (v.to(torch.int8) if v.is_floating_point() else v) for k, v in tensors.items()}
    save_file(as_i8, folder / "model.safetensors")
    rehash(folder)
    refused(folder, "stored as 'I8'")
    half = tiny_folder(tmp_path, "half", edit=_set("dtype", "float16"))
    refused(half, r"stored as 'F32', expected 'F16'")
    bf16 = save_weights(trained_like("unet"), tmp_path / "bf16", arch="unet", model_args=TINY,
                        dtype=torch.bfloat16)
    assert load_weights(bf16)[1].dtype == "bfloat16"


HOSTILE_SUBPROCESS = r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
import torch  # noqa: F401  (imported before the clock starts)
from tomodl.models.weights import load_weights
out = {}
for folder in sys.argv[1:]:
    t0 = time.perf_counter()
    try:
        load_weights(folder)
        out[folder] = ["loaded", "", 0.0]
    except Exception as err:
        out[folder] = [type(err).__name__, str(err)[:200], time.perf_counter() - t0]
out["maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(out))
"""


def test_huge_model_args_fail_fast_with_a_small_footprint(tmp_path):
    """``depth: 100`` once allocated ~24 GB until the kernel killed the process: run in a child
    capped at 6 GiB of address space and check time and peak memory."""
    import subprocess
    import sys

    folders = [str(tiny_folder(tmp_path, f"w{i}", edit=edit)) for i, edit in enumerate([
        _set("model_args", "depth", 100), _set("model_args", "base_filters", 1e9),
        _set("model_args", "base_filters", 256)])]
    proc = subprocess.run([sys.executable, "-c", HOSTILE_SUBPROCESS, *folders],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for folder in folders:
        kind, msg, seconds = out[folder]
        assert kind == "WeightsError", (folder, kind, msg)
        assert seconds < 5.0, (folder, seconds)      # generous: CI machines are busy
    # torch alone takes a few hundred MB; the hostile configs once asked for 24-36 GB
    assert out["maxrss_kb"] < 3_000_000


def test_nan_weights_are_refused_at_load_time(tmp_path):
    net = trained_like("unet")
    with torch.no_grad():
        net.head.weight.fill_(float("nan"))
    folder = save_weights(net, tmp_path / "nan", arch="unet", model_args=TINY)
    with pytest.raises(WeightsError, match=r"model\.safetensors: tensor 'head\.weight' holds NaN "
                                           r"or infinite values .*algorithm='fbp'"):
        load_weights(folder)


def _small_scan(tmp_path):
    from tomodl.sim import ScanGeometry, simulate_scan

    return simulate_scan(tmp_path / "scan.h5", "foam", seed=3,
                         geometry=ScanGeometry(n_det=32, n_rows=2, n_angles=24))


@pytest.mark.parametrize("case", ["base_filters", "unknown_key", "nested", "nan"])
def test_cli_bad_weights_give_one_error_line_and_exit_2(tmp_path, case):
    from click.testing import CliRunner

    from tomodl.cli import main

    if case == "nan":
        net = trained_like("unet")
        with torch.no_grad():
            net.head.weight.fill_(float("nan"))
        bad = save_weights(net, tmp_path / "bad", arch="unet", model_args=TINY)
    else:
        bad = tiny_folder(tmp_path, "bad", edit={
            "base_filters": _set("model_args", "base_filters", 1e9),
            "unknown_key": _set("model_args", "foo", 1),
            "nested": _set("extra", {"x": json.loads(nested_json(50))})}[case])
    scan = _small_scan(tmp_path)
    out = tmp_path / "rec.h5"
    res = CliRunner().invoke(main, ["recon", str(scan), "--algorithm", "fbp+unet", "--model",
                                    str(bad), "--save-format", "h5", "--out-path", str(out),
                                    "--no-progress"])
    assert res.exit_code == 2, (res.exit_code, res.output, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    assert str(bad) in lines[0]
    if case == "nan":
        assert lines[0].endswith("use other weights, or --algorithm fbp")
    assert not list(tmp_path.glob("rec*"))


# -- writing: through tomodl.io.atomic, replacing only tomodl's own weights --

def test_overwrite_replaces_only_tomodl_weights(tmp_path):
    net, folder = saved(tmp_path)
    save_weights(net, folder, arch="resattunet", model_args=TINY, overwrite=True)  # its own
    user = tmp_path / "mine"
    user.mkdir()
    (user / "model.safetensors").write_bytes(b"the user's file")
    with pytest.raises(OutputError, match="not written by tomodl"):
        save_weights(net, user, arch="resattunet", model_args=TINY, overwrite=True)
    assert (user / "model.safetensors").read_bytes() == b"the user's file"
    assert sorted(p.name for p in user.iterdir()) == ["model.safetensors"]


def test_failed_write_leaves_no_temporary_and_names_the_cause(tmp_path, monkeypatch):
    import errno

    net, folder = saved(tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def disk_full(self, data):
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    with pytest.raises(OutputError, match="no space left on device"):
        save_weights(net, folder, arch="resattunet", model_args=TINY, overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
