# SPDX-License-Identifier: BSD-3-Clause
"""Shipped weights: choosing them by angular sampling, the FBP fallback, and the real files."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from click.testing import CliRunner

import tomodl
from tomodl.errors import WeightsError
from tomodl.models import releases
from tomodl.models.registry import WEIGHTS_DIR

torch = pytest.importorskip("torch")


def test_angles_per_half_turn():
    assert releases.angles_per_half_turn(np.linspace(0, np.pi, 181)) == pytest.approx(180.0)
    full = np.linspace(0, 2 * np.pi, 1800, endpoint=False)
    assert releases.angles_per_half_turn(full) == pytest.approx(900.0)
    sparse = np.deg2rad(np.arange(0, 180, 20.0))[::-1]        # 9 angles, unsorted
    assert releases.angles_per_half_turn(sparse) == pytest.approx(9.0)
    assert releases.angles_per_half_turn([0.3]) == 1.0


def _release(folder, angles, factors, min_angles=None, bias=0.0, max_angles=None, auto=True):
    """A tiny U-Net release whose output is its input plus ``bias`` (normalized units)."""
    from tomodl.models.registry import create_model
    from tomodl.models.weights import save_weights

    args = {"base_filters": 4, "depth": 2}
    net = create_model("unet", **args)
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.fill_(bias)
    return save_weights(net, folder, arch="unet", model_args=args, filter_name="shepp",
                        release={"name": folder.name, "sparse_factors": factors,
                                 "angles": angles, "min_angles": min_angles,
                                 "max_angles": max_angles, "auto": auto})


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """Three fake releases of ``unet`` in a temporary weights folder."""
    monkeypatch.setattr(releases, "WEIGHTS_DIR", tmp_path)
    _release(tmp_path / "unet", [10, 300], [4, 10, 20], min_angles=12, bias=0.5,
             max_angles=600)
    _release(tmp_path / "unet-x20", [50, 70], [20], bias=0.5)
    _release(tmp_path / "unet-dense", [600, 1200], [2], bias=0.5)
    _release(tmp_path / "unet-ref", [60, 60], [20], auto=False)
    return tmp_path


def test_select_by_angles_prefers_the_narrowest_range(shipped):
    assert releases.select_weights("unet", n_angles=60).name == "unet-x20"
    assert releases.select_weights("unet", n_angles=200).name == "unet"
    assert releases.select_weights("unet", n_angles=5000).name == "unet-dense"   # nearest
    assert releases.select_weights("unet").name == "unet"                       # default
    from tomodl.models.inference import load_denoiser                # named: used as given
    assert load_denoiser("unet", "unet-ref").source.endswith("unet-ref")


def test_select_by_sparse_factor(shipped):
    assert releases.select_weights("unet", sparse=2).name == "unet-dense"
    assert releases.select_weights("unet", n_angles=60, sparse=10).name == "unet"
    with pytest.raises(WeightsError, match=r"released factors: \[2, 4, 10, 20\]"):
        releases.select_weights("unet", sparse=7)


def test_nothing_shipped_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(releases, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(WeightsError, match="pass its best/ folder with --model"):
        releases.select_weights("resattunet")


def _sino(n_angles, n=33):
    from tomodl.sim.analytic import ellipse_sinogram
    from conftest import PHANTOM

    theta = np.linspace(0, np.pi, n_angles, endpoint=False)
    return ellipse_sinogram(PHANTOM, theta, n, n / 2)[:, None, :].astype(np.float32), theta


def test_fallback_returns_the_fbp_below_min_angles(shipped, caplog):
    proj, theta = _sino(8)
    fbp = tomodl.recon(proj, theta, algorithm="fbp")
    with caplog.at_level(logging.WARNING, logger="tomodl"):
        out = tomodl.recon(proj, theta, algorithm="fbp+unet")
    np.testing.assert_array_equal(out, fbp)
    assert "below the 12" in caplog.text and "FBP returned unchanged" in caplog.text
    # an explicit folder is the user's choice: applied
    forced = tomodl.recon(proj, theta, algorithm="fbp+unet", model=str(shipped / "unet"))
    assert np.abs(forced - fbp).max() > 1e-4


def test_dense_scans_keep_their_fbp(shipped, caplog):
    from tomodl.models.weights import read_config

    cfg = read_config(shipped / "unet")
    assert releases.fallback_reason(cfg, 600) is None
    assert "dense scan" in releases.fallback_reason(cfg, 601)
    assert releases.fallback_reason(cfg, None) is None
    assert releases.caution(cfg, 10) is None                     # no caution_below set


def test_caution_below_warns_but_applies(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(releases, "WEIGHTS_DIR", tmp_path)
    folder = _release(tmp_path / "unet", [10, 300], [4], min_angles=9, bias=0.5)
    import json as _json
    cfg_path = folder / "config.json"
    d = _json.loads(cfg_path.read_text())
    d["release"]["caution_below"] = 30
    cfg_path.write_text(_json.dumps(d))
    proj, theta = _sino(16)
    with caplog.at_level(logging.WARNING, logger="tomodl"):
        out = tomodl.recon(proj, theta, algorithm="fbp+unet")
    assert "invent pore-like features below 30" in caplog.text
    assert np.abs(out - tomodl.recon(proj, theta, algorithm="fbp")).max() > 1e-4


def test_network_applied_at_or_above_min_angles(shipped):
    proj, theta = _sino(16)
    fbp = tomodl.recon(proj, theta, algorithm="fbp")
    out = tomodl.recon(proj, theta, algorithm="fbp+unet")
    assert np.abs(out - fbp).max() > 1e-4


def test_cli_records_the_skipped_network(shipped, tiny_scan, tmp_path):
    import h5py

    from tomodl.cli import main

    out = tmp_path / "rec.h5"   # tiny_scan has 33 angles per half turn; the unet-x20 range is
    res = CliRunner().invoke(main, ["recon", str(tiny_scan.path), "--algorithm", "fbp+unet",
                                    "--sparse", "4", "--save-format", "h5", "--out-path",
                                    str(out), "--rotation-axis", "17.3", "--no-progress"])
    assert res.exit_code == 0, res.output
    with h5py.File(out) as f:
        prov = json.loads(f.attrs["provenance"])
    assert prov["model"]["weights"].endswith("unet") and prov["model_skipped"] is None
    res = CliRunner().invoke(main, ["recon", str(tiny_scan.path), "--algorithm", "fbp+unet",
                                    "--sparse", "3", "--no-progress", "--rotation-axis", "17"])
    assert res.exit_code == 2 and "released factors" in res.output


# -- the weights shipped in the package -------------------------------------------------------
SHIPPED = releases.released_models()


@pytest.mark.skipif(not SHIPPED, reason="no weights shipped in tomodl/weights")
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_weights_load_and_describe_themselves(name):
    from tomodl.models.weights import load_weights

    folder = WEIGHTS_DIR / name
    assert (folder / "model.safetensors").stat().st_size < 25 * 2**20
    model, cfg = load_weights(folder)              # checks the SHA-256
    assert cfg.dtype == "float16" and cfg.release["name"] == name
    lo, hi = cfg.release["angles"]
    assert 1 <= lo <= hi
    assert cfg.extra["metrics"]["epoch"] >= 1
    x = torch.zeros(1, 1, 32, 32)
    assert model(x).shape == x.shape


@pytest.mark.skipif("resattunet" not in SHIPPED, reason="no resattunet weights shipped")
def test_pretrained_resattunet_is_the_default():
    net = tomodl.create_model("resattunet", pretrained=True)
    assert type(net).__name__ == "ResAttUnet" and not net.training


def test_cli_default_is_fbp_plus_resattunet_and_keeps_dense_scans(tmp_path, monkeypatch,
                                                                   tiny_scan):
    """`tomodl recon scan.h5` runs the shipped ResAttUnet; above max_angles it keeps the FBP."""
    import h5py

    from tomodl.cli import main
    from tomodl.models.registry import create_model
    from tomodl.models.weights import save_weights

    monkeypatch.setattr(releases, "WEIGHTS_DIR", tmp_path / "w")
    args = {"base_filters": 4, "depth": 2}
    net = create_model("resattunet", **args)
    last = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias.fill_(0.5)
    save_weights(net, tmp_path / "w" / "resattunet", arch="resattunet", model_args=args,
                 release={"name": "resattunet", "angles": [10, 30], "min_angles": 9,
                          "max_angles": 20})
    vols = {}
    for name, extra in (("fbp", ["--algorithm", "fbp"]), ("default", [])):
        out = tmp_path / f"{name}.h5"
        res = CliRunner().invoke(main, ["recon", str(tiny_scan.path), "--rotation-axis", "17.3",
                                        "--save-format", "h5", "--out-path", str(out),
                                        "--no-progress", *extra])
        assert res.exit_code == 0, res.output
        with h5py.File(out) as f:
            vols[name] = f["/exchange/data"][()]
            prov = json.loads(f.attrs["provenance"])
    # 33 projections per half turn > max_angles 20: a dense scan for these weights
    assert prov["algorithm"] == "fbp+resattunet" and "dense scan" in prov["model_skipped"]
    np.testing.assert_array_equal(vols["default"], vols["fbp"])
