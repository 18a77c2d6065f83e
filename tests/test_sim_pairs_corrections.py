# SPDX-License-Identifier: BSD-3-Clause
"""Training pairs with the row-local corrections of ``tomodl recon`` (issue 14): the network
sees at training what ``tomodl recon`` feeds it after the same stripe removal and dezinger."""
import json
import logging
from dataclasses import replace
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from tomodl.cli import main
from tomodl.recon.corrections import (NO_CORRECTIONS, ROW_LOCAL, STRIPE_PARAMS, Corrections,
                                      row_local)
from tomodl.recon.pipeline import ReconConfig, reconstruct_file
from tomodl.recon.stripes import STRIPE_METHODS
from tomodl.sim.config import Acquisition, ScanGeometry, SimulationError
from tomodl.sim.pairs import make_pairs
from tomodl.sim.scan import read_ground_truth, simulate_scan

SPARSE = 3


@pytest.fixture(scope="module")
def ringed_scan(tmp_path_factory):
    """90 angles x 3 rows x 37 columns (odd), 2 % detector rings and some zingers."""
    geo = ScanGeometry(n_det=37, n_rows=3, n_angles=90)
    acq = Acquisition(ring_strength=0.02, zinger_rate=0.002)
    return simulate_scan(tmp_path_factory.mktemp("ringed") / "scan.h5", "foam", seed=5,
                         geometry=geo, acquisition=acq)


def pairs_input(path):
    with h5py.File(path, "r") as f:
        return f["test/input"][()], json.loads(f.attrs["metadata"])


def recon_volume(scan, corr, out):
    """``tomodl.recon``'s file reconstruction of every SPARSE-th projection with ``corr``."""
    from tomodl.io.writers import read_volume

    center = read_ground_truth(scan)[1]["geometry"]["center"]
    cfg = ReconConfig(algorithm="fbp", center=center, save_format="h5", progress=False,
                      out_path=out, nsino_per_chunk=2,
                      corrections=replace(corr, proj_step=SPARSE))
    return read_volume(reconstruct_file(scan, cfg).path, "h5")


@pytest.mark.parametrize("options, corr", [
    (["--remove-stripe-method", "fw"], Corrections(remove_stripe_method="fw")),
    (["--remove-stripe-method", "ti", "--ti-beta", "0.05", "--dezinger", "3",
      "--dezinger-threshold", "500"],
     Corrections(remove_stripe_method="ti", ti_beta=0.05, dezinger=3, dezinger_threshold=500))])
def test_pairs_inputs_are_the_recon_of_the_same_rows_with_the_same_correction(
        ringed_scan, tmp_path, options, corr):
    res = CliRunner().invoke(main, ["simulate", "pairs", str(ringed_scan), "--out-path",
                                    str(tmp_path / "p.h5"), "--sparse", str(SPARSE),
                                    "--fractions", "0,0,1", "--no-progress", *options])
    assert res.exit_code == 0, res.output + res.stderr
    inputs, meta = pairs_input(tmp_path / "p.h5")
    ref = recon_volume(ringed_scan, corr, tmp_path / "r.h5")      # rows in chunks of 2
    scale = np.abs(ref).max()
    np.testing.assert_allclose(inputs, ref, atol=1e-5 * scale)
    plain = recon_volume(ringed_scan, NO_CORRECTIONS, tmp_path / "plain.h5")
    assert np.abs(inputs - plain).max() > 1e-3 * scale          # the correction did act
    assert meta["corrections"] == corr.provenance()
    assert "line_integrals" in meta["input"]
    assert row_local(Corrections(**meta["corrections"])) == row_local(corr)


def test_default_pairs_are_bit_identical_to_the_plain_pipeline(ringed_scan, tmp_path):
    from tomodl.io.dxchange import read_dx
    from tomodl.recon.fbp import fbp
    from tomodl.recon.preprocess import minus_log, normalize

    inputs, meta = pairs_input(make_pairs([ringed_scan], tmp_path / "d.h5", sparse=SPARSE,
                                          fractions=(0, 0, 1)))
    scan = read_dx(ringed_scan, proj=(0, 90, SPARSE))
    center = read_ground_truth(ringed_scan)[1]["geometry"]["center"]
    ref = fbp(np.swapaxes(minus_log(normalize(scan.proj, scan.flat, scan.dark)), 0, 1),
              scan.theta, center)
    np.testing.assert_array_equal(inputs, np.asarray(ref, np.float32))
    assert meta["corrections"] == Corrections().provenance()
    assert meta["input"] == "fbp(minus_log(normalize(read_dx(scan, proj=(0, n, sparse)))))"


@pytest.mark.parametrize("corr, words", [
    (Corrections(binning=1), ["binning", "--size"]),
    (Corrections(proj_step=2), ["proj_step", "sparse"]),
    (Corrections(start_proj=3, end_proj=60), ["start_proj, end_proj", "sparse"]),
    (Corrections(file_type="double_fov"), ["file_type", "offset-axis"])])
def test_steps_that_change_the_geometry_are_refused(ringed_scan, tmp_path, corr, words):
    with pytest.raises(SimulationError) as err:
        make_pairs([ringed_scan], tmp_path / "x.h5", corrections=corr)
    for w in words:
        assert w in str(err.value)
    assert not (tmp_path / "x.h5").exists()
    res = CliRunner().invoke(main, ["simulate", "pairs", str(ringed_scan), "--out-path",
                                    str(tmp_path / "x.h5"), "--binning", "1"])
    assert res.exit_code == 2 and "--binning" in res.stderr


def test_row_local_records_only_what_acts():
    assert set(STRIPE_PARAMS) == set(STRIPE_METHODS)
    assert row_local(NO_CORRECTIONS) == {} == row_local(Corrections(fw_sigma=3, ti_beta=0.5))
    assert row_local(Corrections(remove_stripe_method="ti", fw_sigma=3)) == {
        "remove_stripe_method": "ti", "ti_beta": 0.022, "ti_mask": 1.0}
    assert "binning" not in ROW_LOCAL and "dezinger_threshold" in ROW_LOCAL


def weights(pairs_meta):
    return SimpleNamespace(config=SimpleNamespace(extra={"pairs_metadata": pairs_meta}))


def test_recon_warns_when_the_weights_were_trained_with_other_corrections(caplog):
    from tomodl.recon.denoising import _warn_corrections, trained_corrections

    fw = Corrections(remove_stripe_method="fw")
    new = {"format": "tomodl-pairs", "corrections": fw.provenance()}
    old = {"format": "tomodl-pairs"}                          # pairs before corrections: none
    assert trained_corrections(weights(new).config) == row_local(fw)
    assert trained_corrections(weights(old).config) == {}
    for unknown in ({}, {"format": "other"}, {"format": "tomodl-pairs", "corrections": 3},
                    {"format": "tomodl-pairs", "corrections": {"dezinger": -1}}):
        assert trained_corrections(weights(unknown).config) is None
    assert trained_corrections(SimpleNamespace(extra={})) is None
    with caplog.at_level(logging.WARNING, logger="tomodl.recon.denoising"):
        _warn_corrections("resattunet", weights(new), fw)                  # same: silent
        _warn_corrections("resattunet", weights(None), NO_CORRECTIONS)     # unknown: silent
        assert not caplog.records
        _warn_corrections("resattunet", weights(old), fw)   # cleaner than training: no warning
        assert not caplog.records
        _warn_corrections("resattunet", weights(new), NO_CORRECTIONS)  # trained with fw: warn
    assert len(caplog.records) == 1 and "remove_stripe_method=fw" in caplog.text
    assert "this run uses no stripe removal or dezinger" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tomodl.recon.denoising"):
        _warn_corrections("resattunet", weights(old), fw)
    assert [r.levelno for r in caplog.records] == [logging.INFO]
    assert "with no stripe removal or dezinger; this run" in caplog.text


def test_the_pipeline_passes_its_corrections_to_the_denoiser_set_up(monkeypatch):
    from tomodl.recon import denoising, stages

    seen = {}
    monkeypatch.setattr(denoising, "prepare_model",
                        lambda *a, **k: seen.update(k) or (None, None, None))
    corr = Corrections(dezinger=3)
    stages.prepare_denoiser(ReconConfig(algorithm="fbp+resattunet", corrections=corr), 33)
    assert seen["corrections"] is corr
