# SPDX-License-Identifier: BSD-3-Clause
"""The check against set-aside measured angles and its disagreement map (issue 13)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tomodl.errors import TomodlError  # noqa: E402
from tomodl.recon.check import (check, check_sinograms, heldout_scores, side_by_side,  # noqa: E402
                                spread_rows, write_maps)
from tomodl.recon.projector import ParallelProjector  # noqa: E402

N = 45          # odd size


def _phantom(n=N, rows=2):
    y, x = np.mgrid[:n, :n] - (n - 1) / 2
    img = np.zeros((rows, n, n), np.float32)
    for r in range(rows):
        img[r] += 0.02 * ((x / (0.40 * n)) ** 2 + (y / (0.33 * n)) ** 2 < 1)
        img[r] += 0.015 * ((x - 4 - r) ** 2 + (y + 5) ** 2 < 16)
        img[r] -= 0.01 * ((x + 6) ** 2 + (y - 3 - r) ** 2 < 9)
    return img


def _data(img, n_angles):
    theta = np.linspace(0, np.pi, n_angles, endpoint=False)
    p = ParallelProjector(img.shape[-1], theta, img.shape[-1], dtype=torch.float64)
    return p.forward(img).numpy().astype(np.float32), theta


def test_truth_scores_zero_on_noiseless_data():
    img = _phantom()
    sino, theta = _data(img, 40)
    held = np.arange(2, 40, 4)
    p = ParallelProjector(N, theta[held], N)
    s = heldout_scores(img, sino[:, held], p)
    assert s.shape == (2,) and np.all(s < 1e-5)
    assert np.all(heldout_scores(0.5 * img, sino[:, held], p) > 0.4)


def test_fbp_from_more_angles_scores_better():
    img = _phantom()
    few = check_sinograms(*_data(img, 12), N / 2).fbp
    many = check_sinograms(*_data(img, 90), N / 2).fbp
    assert np.all(many < 0.6 * few), (few, many)


def test_invented_blob_raises_score_and_lights_the_map(tmp_path):
    img = _phantom(rows=1)
    sino, theta = _data(img, 60)
    yy, xx = np.mgrid[:N, :N] - (N - 1) / 2
    blob = ((xx + 8) ** 2 + (yy + 8) ** 2 < 9).astype(np.float32)

    def honest(rec, **kw):                           # a perfect network: the truth
        return img

    def liar(rec, **kw):                             # the truth plus an invented blob
        return img + 0.02 * blob

    a = check_sinograms(sino, theta, N / 2, honest)
    b = check_sinograms(sino, theta, N / 2, liar)
    assert a.network[0] < 1e-3 < 0.2 < b.network[0] and b.network_worse
    disc = xx ** 2 + yy ** 2 < (0.45 * N) ** 2
    extra = b.maps[0] - a.maps[0]                     # the blob's own contribution
    inside = np.abs(extra[blob > 0]).mean()
    outside = np.abs(extra[disc & (np.hypot(xx + 8, yy + 8) > 6)]).mean()
    assert inside > 8 * outside, (inside, outside)
    assert b.maps[0][blob > 0].mean() > 4 * np.abs(a.maps[0][disc]).mean()  # map itself lights
    paths = write_maps(b, tmp_path / "out_check")
    assert [p.name for p in paths] == ["row_0000.png"]
    assert side_by_side(b.images[0], b.maps[0]).shape == (N, 2 * N + 2)
    write_maps(b, tmp_path / "out_check")             # replaces its own output


def test_rows_and_api():
    assert spread_rows(0, 100, 4) == (12, 37, 62, 87)
    assert spread_rows(10, 13, 8) == (10, 11, 12)
    assert spread_rows(0, 10, [3, 1]) == (1, 3)
    with pytest.raises(TomodlError, match="not among"):
        spread_rows(0, 10, [12])
    img = _phantom(rows=3)
    sino, theta = _data(img, 33)
    res = check(sino, theta, algorithm="fbp", rows=2, sinogram_order=True)
    assert res.network is None and res.rows == (0, 2) and res.maps.shape == (2, N, N)
    assert "FBP" in res.summary() and res.provenance()["held_out_angles"] == len(res.held)
    with pytest.raises(TomodlError, match="too few"):
        check(sino.swapaxes(0, 1)[:6], theta[:6], algorithm="fbp")


def _prov(out):
    import json

    import h5py

    with h5py.File(out) as f:
        return json.loads(f.attrs["provenance"]), f["/exchange/data"][...]


def test_cli_check_records_scores_and_writes_maps(tiny_scan, tmp_path):
    from click.testing import CliRunner

    from tomodl.cli import main

    out = tmp_path / "rec.h5"
    args = ["recon", str(tiny_scan.path), "--algorithm", "fbp", "--save-format", "h5",
            "--out-path", str(out), "--rotation-axis", "17.3", "--no-progress"]
    res = CliRunner().invoke(main, args + ["--check", "--check-rows", "0,2"])
    assert res.exit_code == 0, res.output
    prov, _ = _prov(out)
    assert prov["check"]["rows"] == [0, 2] and prov["check"]["network"] is None
    assert 0 < prov["check"]["fbp_median"] < 1 and prov["check"]["fallback"] is None
    assert sorted(p.name for p in (tmp_path / "rec_check").iterdir()) == \
        ["row_0000.png", "row_0002.png"]
    res = CliRunner().invoke(main, args + ["--overwrite"])       # auto: off for FBP alone
    assert res.exit_code == 0 and "check" not in _prov(out)[0]
    res = CliRunner().invoke(main, args + ["--check-rows", "0,x"])
    assert res.exit_code == 2 and "Error:" in res.output and "check rows" in res.output


def test_fallback_keeps_the_fbp_and_records_why(tiny_scan, tmp_path, monkeypatch, caplog):
    from conftest import save_tiny_unet
    from tomodl.recon import check as check_mod
    from tomodl.recon.config import ReconConfig
    from tomodl.recon.volume import reconstruct_file

    weights = save_tiny_unet(tmp_path / "w")
    cfg = ReconConfig(algorithm="fbp+unet", model=str(weights), center=17.3, save_format="h5",
                      progress=False, check=True, check_rows=2)
    res = check_mod.CheckResult((0,), (1,), np.array([0.1]), np.array([0.3]),
                                np.zeros((1, 3, 3)), np.zeros((1, 3, 3)))
    assert check_mod.fallback_reason(res, cfg) is None                 # the model was named
    assert "0.300 vs FBP 0.100" in caplog.text and "network named is kept" in caplog.text
    default = ReconConfig(center=17.3)
    assert "0.300 vs FBP 0.100" in check_mod.fallback_reason(res, default)
    monkeypatch.setattr(check_mod, "fallback_reason", lambda chk, cfg: "made up")
    reconstruct_file(tiny_scan.path, replace_out(cfg, tmp_path / "a.h5"))
    prov, vol = _prov(tmp_path / "a.h5")
    assert prov["model_skipped"] == "made up" and prov["check"]["fallback"] == "made up"
    assert prov["model"] is None and len(prov["check"]["network"]) == 2
    reconstruct_file(tiny_scan.path, ReconConfig(algorithm="fbp", center=17.3, save_format="h5",
                                                 progress=False, out_path=tmp_path / "b.h5"))
    np.testing.assert_array_equal(vol, _prov(tmp_path / "b.h5")[1])


def replace_out(cfg, out):
    from dataclasses import replace

    return replace(cfg, out_path=out)


def test_auto_check_rows_cost_a_small_share():
    from tomodl.recon.check import AUTO_ROWS_PER_CHECKED as A
    from tomodl.recon.check import wanted_rows
    from tomodl.recon.config import ReconConfig

    cfg = ReconConfig()
    assert wanted_rows(cfg, (0, 2 * A - 1), True) == ()              # too small a volume
    assert len(wanted_rows(cfg, (0, 3 * A), True)) == 3              # capped: one row in A
    assert len(wanted_rows(cfg, (5, 5 + 100 * A), True)) == 8
    assert wanted_rows(cfg, (0, 100 * A), False) == ()               # FBP alone: nothing
    on = ReconConfig(check=True, check_rows=(3, 4))
    assert wanted_rows(on, (0, 10), False) == (3, 4)
    assert wanted_rows(ReconConfig(check=False), (0, 100 * A), True) == ()
