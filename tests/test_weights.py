# SPDX-License-Identifier: BSD-3-Clause
"""Released-weights folders: round trip, fp16 storage, and clear errors for bad files."""
import hashlib
import json
import pickle
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
    with pytest.raises(WeightsError, match="SHA-256"):
        load_weights(folder)


def test_truncated_file_with_matching_hash_is_not_safetensors(tmp_path):
    _, folder = saved(tmp_path)
    st = folder / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])
    rehash(folder)
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
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
