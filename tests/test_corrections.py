# SPDX-License-Identifier: BSD-3-Clause
"""Pre-processing corrections (issue 14, row-local part): stripe removal, dezinger, binning,
projection subsets; the options, their order in the pipeline, provenance and resume."""
import json
from dataclasses import replace

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import write_scan
from scipy.ndimage import median_filter

from tomodl.cli import main
from tomodl.recon.corrections import (Corrections, bin_projections, binned_center,
                                      remove_outlier)
from tomodl.recon.pipeline import ReconConfig, reconstruct_file
from tomodl.recon.preprocess import minus_log, normalize
from tomodl.recon.stripes import (STRIPE_METHODS, remove_all_stripe, remove_stripe_fw,
                                  remove_stripe_ti)


def read_h5(path):
    """The volume (:func:`tomodl.io.writers.read_volume`) and the provenance of an output."""
    from tomodl.io.writers import read_volume

    with h5py.File(path, "r") as f:
        prov = json.loads(f.attrs["provenance"])
    return read_volume(path, "h5"), prov


@pytest.fixture
def scan(tmp_path):
    """41 angles x 7 rows x 31 columns (odd sizes), axis 14.6."""
    return write_scan(tmp_path / "scan.h5", np.linspace(0, np.pi, 41, endpoint=False),
                      n_rows=7, n_det=31, center=14.6)


def ringed(n_ang=181, n_rows=3, n_det=201, ring=0.02, seed=1, noise=True):
    """Transmission of an ellipse phantom with detector rings, and its exact line integrals."""
    from tomodl.sim.acquisition import acquire
    from tomodl.sim.analytic import ellipse_sinogram
    from tomodl.sim.config import Acquisition

    theta = np.linspace(0, np.pi, n_ang, endpoint=False)
    ell = [(0, 0, 0.3 * n_det, 0.22 * n_det, 0.3, 0.01), (8, -5, 12, 8, 0, 0.02)]
    p = np.repeat(ellipse_sinogram(ell, theta, n_det, (n_det - 1) / 2)[:, None], n_rows, 1)
    proj, flat, dark = acquire(p, Acquisition(noise=noise, ring_strength=ring), rng=seed)
    return normalize(proj, flat, dark), p


def stripe_amplitude(trans, truth):
    """Mean |sharp part| of the column means of the -log residual (what becomes rings)."""
    m = (minus_log(trans) - truth).mean(axis=0)
    return float(np.abs(m - median_filter(m, size=(1, 9))).mean())


# -- options --------------------------------------------------------------------------------
def test_unknown_method_lists_the_options_and_ranges_are_checked():
    with pytest.raises(ValueError, match=r"choose one of \['none', 'fw', 'ti', 'vo-all'\]"):
        Corrections(remove_stripe_method="median")
    with pytest.raises(ValueError, match=r"binning must be one of \[0, 1, 2, 3\]"):
        Corrections(binning=4)
    with pytest.raises(ValueError, match="ti_beta=1.5"):
        Corrections(ti_beta=1.5)
    assert Corrections().active() == {} and Corrections(binning=1).active() == {"binning": 1}
    assert list(STRIPE_METHODS) == ["none", "fw", "ti", "vo-all"]


def test_default_run_is_bit_for_bit_plain_fbp(scan, tmp_path):
    from tomodl.io import read_dx
    from tomodl.recon.fbp import fbp

    out = tmp_path / "d.h5"
    res = reconstruct_file(scan.path, ReconConfig(algorithm="fbp", center=14.6, save_format="h5",
                                                  out_path=out, nsino_per_chunk=3,
                                                  progress=False))
    vol, prov = read_h5(res.path)
    ref = []
    for rows in ((0, 3), (3, 6), (6, 7)):                  # the same chunks, the code before
        proj, flat, dark, theta = read_dx(scan.path, sino=rows)
        ref.append(fbp(np.swapaxes(minus_log(normalize(proj, flat, dark)), 0, 1), theta, 14.6))
    assert np.array_equal(vol, np.concatenate(ref).astype(np.float32))
    assert prov["corrections"] == Corrections().provenance()


# -- stripes --------------------------------------------------------------------------------
@pytest.mark.parametrize("method,kwargs", [
    (remove_stripe_fw, dict(level=5, wname="sym16")), (remove_stripe_ti, dict(beta=0.2)),
    (remove_all_stripe, dict(snr=3, la_size=61, sm_size=21))])
def test_each_stripe_filter_suppresses_simulated_rings(method, kwargs):
    """Stripes (sharp column offsets of the -log data against the truth) shrink by > 2.5x; the
    sample's line integrals are changed by less than the noise and rings were (vo-all: its
    column normalisation rescales the sample's columns too, as algotom's)."""
    trans, truth = ringed()
    before = stripe_amplitude(trans, truth)
    out = method(trans, **kwargs)
    assert out.shape == trans.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert stripe_amplitude(out, truth) < before / 2.5
    # the object is kept: the corrected line integrals stay close to the truth
    worse = 2.5 if method is remove_all_stripe else 1.0
    assert np.abs(minus_log(out) - truth).mean() < np.abs(minus_log(trans) - truth).mean() * worse
    # rows are independent: a row alone gives the same numbers as the stack
    np.testing.assert_allclose(method(trans[:, 1:2], **kwargs)[:, 0], out[:, 1], atol=1e-5)


def test_titarenko_removes_a_pure_stripe_from_a_smooth_sinogram():
    x = np.linspace(0.5, 0.9, 61)
    sino = np.tile(x, (45, 1))[:, None, :].astype(np.float32)      # smooth in x, no object
    stripe = np.zeros(61, np.float32)
    stripe[[20, 33]] = 0.05
    out = remove_stripe_ti(sino + stripe, beta=0.1)
    # what is left of a stripe: its share of the smoothing kernel, beta * 0.05 at most
    assert np.abs(out - sino)[:, 0, 15:-15].max() < 0.1 * 0.05 + 1e-3
    half = remove_stripe_ti(sino + stripe, beta=0.1, mask=0.2)     # columns 24..35 only
    assert np.abs(half - sino)[:, 0, 33].max() < 0.1 * 0.05 + 1e-3
    assert half[0, 0, 20] > sino[0, 0, 20] + 0.04


def test_vo_all_matches_algotom():
    rem = pytest.importorskip("algotom.prep.removal")
    trans, _ = ringed(n_ang=91, n_rows=2, n_det=151)
    mine = remove_all_stripe(trans, 3.0, 31, 11)
    ref = np.stack([rem.remove_all_stripe(trans[:, i], 3.0, 31, 11) for i in range(2)], axis=1)
    diff = np.abs(mine - ref)
    assert np.median(diff) < 1e-6 and np.mean(diff > 1e-3) < 0.002


def test_fw_agrees_with_algotom_on_the_stripes():
    rem = pytest.importorskip("algotom.prep.removal")
    trans, truth = ringed(n_ang=181, n_rows=1, n_det=201)
    mine = remove_stripe_fw(trans, level=2, wname="db5", sigma=1.0)
    ref = rem.remove_stripe_based_wavelet_fft(trans[:, 0], level=2, size=1,
                                              wavelet_name="db5")[:, None]
    a, b, before = stripe_amplitude(mine, truth), stripe_amplitude(ref, truth), \
        stripe_amplitude(trans, truth)
    assert a < before / 2.5 and b < before / 2.5 and abs(a - b) < 0.5 * before
    assert np.abs(minus_log(mine) - minus_log(ref)).mean() < 0.5 * np.abs(
        minus_log(trans) - truth).mean() + 2e-3


# -- dezinger ---------------------------------------------------------------------------------
def test_dezinger_removes_simulated_zingers_and_nothing_else():
    from tomodl.sim.acquisition import acquire
    from tomodl.sim.config import Acquisition

    p = np.zeros((31, 3, 29)) + np.linspace(0, 1, 29)
    acq = Acquisition(noise=False, zinger_rate=0.01, zinger_strength=1.0, flux=2e4)
    proj, flat, dark = acquire(p, acq, rng=3)
    clean, *_ = acquire(p, Acquisition(noise=False, flux=2e4), rng=3)
    hit = proj.astype(float) - clean > 1000
    assert hit.sum() > 10
    out = remove_outlier(proj, 5000.0, 3)
    # a zinger becomes the median of its 3 x 3 neighbours (angles x columns): within the
    # change of the counts over one pixel of this steep profile
    assert np.abs(out - clean.astype(np.float32))[hit].max() < 0.06 * clean.max()
    assert np.array_equal(out[~hit], proj[~hit].astype(np.float32))   # the rest untouched


def test_dezinger_in_the_pipeline_is_chunk_independent(tmp_path):
    from tomodl.io import read_dx, write_dx

    scan = write_scan(tmp_path / "s.h5", np.linspace(0, np.pi, 33, endpoint=False),
                      n_rows=5, n_det=27, center=13.0)
    proj, flat, dark, theta = read_dx(scan.path)
    proj[5, 2, 10] += 8000                                     # one zinger
    write_dx(tmp_path / "z.h5", proj, flat, dark, theta, theta_units="rad")
    vols = []
    for rows in (1, 5):
        cfg = ReconConfig(algorithm="fbp", center=13.0, save_format="h5", nsino_per_chunk=rows,
                          out_path=tmp_path / f"z{rows}.h5", progress=False,
                          corrections=Corrections(dezinger=3, dezinger_threshold=1000))
        vols.append(read_h5(reconstruct_file(tmp_path / "z.h5", cfg).path)[0])
    clean = ReconConfig(algorithm="fbp", center=13.0, save_format="h5", progress=False,
                        out_path=tmp_path / "c.h5")
    ref = read_h5(reconstruct_file(scan.path, clean).path)[0]
    np.testing.assert_allclose(vols[0], vols[1], atol=1e-6 * np.abs(ref).max())
    assert np.abs(vols[0] - ref).max() < 0.05 * np.abs(ref).max()


# -- binning and projection subsets ------------------------------------------------------------
def test_bin_projections_averages_blocks_and_drops_the_remainder():
    a = np.arange(2 * 5 * 7, dtype=np.float32).reshape(2, 5, 7)
    b = bin_projections(a, 1)
    assert b.shape == (2, 2, 3) and b[0, 0, 0] == a[0, :2, :2].mean()
    assert bin_projections(a, 0) is not None and binned_center(14.5, 1) == 7.0
    assert binned_center(3.5, 2) == 0.5      # raw pixels 0..3 -> binned pixel 0 centred at 1.5


def test_binning_shrinks_the_grid_and_keeps_the_axis(tmp_path):
    scan = write_scan(tmp_path / "b.h5", np.linspace(0, np.pi, 61, endpoint=False),
                      n_rows=9, n_det=45, center=21.3)
    full = ReconConfig(algorithm="fbp", center=21.3, save_format="h5", progress=False,
                       out_path=tmp_path / "f.h5")
    binned = ReconConfig(algorithm="fbp", center=21.3, save_format="h5", progress=False,
                         out_path=tmp_path / "b1.h5", corrections=Corrections(binning=1),
                         start_row=1, end_row=9)
    ref = read_h5(reconstruct_file(scan.path, full).path)[0]
    res = reconstruct_file(scan.path, binned)
    vol, prov = read_h5(res.path)
    assert vol.shape == (4, 22, 22) and prov["num_gridx"] == 22
    assert res.center == pytest.approx((21.3 - 0.5) / 2)
    # binned rows 0..3 = raw rows 0..7; binned pixel j ~ raw pixels 2j+1, 2j+2 (both grids
    # are centred on the axis)
    down = ref[0:8, 1:45, 1:45].reshape(4, 2, 22, 2, 22, 2).mean(axis=(1, 3, 5))
    inner = np.s_[:, 5:17, 5:17]

    def corr(v):
        return np.corrcoef(v[inner].ravel(), down[inner].ravel())[0, 1]

    # the same object at the same place, half the pixels; an axis off by one binned pixel
    # (2 raw pixels) matches clearly worse
    off = reconstruct_file(scan.path, replace(binned, center=23.3, out_path=tmp_path / "o.h5"))
    assert corr(vol) > 0.93 and corr(vol) > corr(read_h5(off.path)[0]) + 0.05


def test_proj_step_is_the_sparse_scan_of_the_same_sample(scan, tmp_path):
    from tomodl.io import read_dx
    from tomodl.recon.fbp import fbp

    cfg = ReconConfig(algorithm="fbp", center=14.6, save_format="h5", progress=False,
                      out_path=tmp_path / "s.h5", nsino_per_chunk=7,
                      corrections=Corrections(start_proj=1, proj_step=3))
    vol, prov = read_h5(reconstruct_file(scan.path, cfg).path)
    proj, flat, dark, theta = read_dx(scan.path, proj=(1, None, 3))
    ref = fbp(np.swapaxes(minus_log(normalize(proj, flat, dark)), 0, 1), theta, 14.6)
    assert np.array_equal(vol, np.asarray(ref, np.float32)) and prov["n_angles"] == 14
    assert prov["corrections"]["proj_step"] == 3


# -- command line, provenance, resume ------------------------------------------------------------
def test_command_line_options_reach_the_provenance(scan, tmp_path):
    out = tmp_path / "c.h5"
    res = CliRunner().invoke(main, [
        "recon", str(scan.path), "--algorithm", "fbp", "--rotation-axis", "14.6",
        "--save-format", "h5", "--out-path", str(out), "--no-progress",
        "--remove-stripe-method", "vo-all", "--vo-all-la-size", "11", "--vo-all-sm-size", "5",
        "--dezinger", "3", "--binning", "1", "--proj-step", "2"])
    assert res.exit_code == 0, res.output + res.stderr
    vol, prov = read_h5(out)
    c = prov["corrections"]
    assert (c["remove_stripe_method"], c["vo_all_la_size"], c["dezinger"], c["binning"],
            c["proj_step"]) == ("vo-all", 11, 3, 1, 2)
    assert vol.shape == (3, 15, 15) and np.isfinite(vol).all()
    bad = CliRunner().invoke(main, ["recon", str(scan.path), "--remove-stripe-method", "x"])
    assert bad.exit_code == 2 and "'none', 'fw', 'ti', 'vo-all'" in bad.stderr


def test_a_partial_output_with_other_corrections_is_not_resumed(scan, tmp_path, monkeypatch):
    from tomodl.errors import TomodlError
    from tomodl.recon import stages

    real, calls = stages.reconstruct_chunk, []

    def dies_on_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    base = dict(algorithm="fbp", center=14.6, save_format="h5", nsino_per_chunk=3,
                out_path=tmp_path / "r.h5", progress=False)
    monkeypatch.setattr(stages, "reconstruct_chunk", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        reconstruct_file(scan.path, ReconConfig(**base))
    monkeypatch.setattr(stages, "reconstruct_chunk", real)
    other = Corrections(remove_stripe_method="ti")
    with pytest.raises(TomodlError, match="corrections"):
        reconstruct_file(scan.path, ReconConfig(**base, resume=True, corrections=other))
    res = reconstruct_file(scan.path, ReconConfig(**base, corrections=other))   # auto: again
    assert res.n_computed == 7


def test_the_pipeline_removes_simulated_rings(tmp_path):
    """fw (on -log data) and vo-all (on transmission) through reconstruct_file: the sharp part
    of the slice's error against the FBP of the exact line integrals, averaged over circles
    about the axis (the rings), shrinks."""
    from tomodl.io import write_dx
    from tomodl.recon.fbp import fbp
    from tomodl.sim.acquisition import acquire
    from tomodl.sim.analytic import ellipse_sinogram
    from tomodl.sim.config import Acquisition

    n, theta = 101, np.linspace(0, np.pi, 121, endpoint=False)
    ell = [(0, 0, 35, 28, 0.3, 0.02), (6, -4, 8, 6, 0, 0.03)]
    p = np.repeat(ellipse_sinogram(ell, theta, n, 50.0)[:, None], 2, axis=1)
    proj, flat, dark = acquire(p, Acquisition(ring_strength=0.02), rng=5)
    write_dx(tmp_path / "r.h5", proj, flat, dark, theta, theta_units="rad")
    truth = np.asarray(fbp(np.swapaxes(p, 0, 1), theta, 50.0))
    r = np.hypot(*np.meshgrid(np.arange(n) - 50.0, np.arange(n) - 50.0))
    ring_of = np.rint(r).astype(int)

    def rings(method, **extra):
        cfg = ReconConfig(algorithm="fbp", center=50.0, save_format="h5", progress=False,
                          out_path=tmp_path / f"{method}.h5", corrections=Corrections(
                              remove_stripe_method=method, **extra))
        err = read_h5(reconstruct_file(tmp_path / "r.h5", cfg).path)[0] - truth
        prof = np.array([err[:, ring_of == k].mean() for k in range(2, 45)])
        return np.abs(prof - median_filter(prof, 7, mode="nearest")).mean()

    none = rings("none")
    assert rings("fw", fw_level=3, fw_filter="db5") < none / 2
    assert rings("vo-all", vo_all_la_size=31, vo_all_sm_size=11) < none / 2


def test_binning_plans_chunks_for_the_raw_rows_it_reads(scan):
    from tomodl.io import scan_info
    from tomodl.recon.budget import per_row_bytes
    from tomodl.recon.chunks import plan_memory
    from tomodl.recon.corrections import effective_info

    info = scan_info(scan.path)                       # 31 columns: binning 2 uses 28 of them
    cfg = ReconConfig(algorithm="fbp", max_memory=8 * 2**20,
                      corrections=Corrections(binning=2))
    binned = plan_memory(effective_info(info, cfg.corrections), cfg)
    raw_row = per_row_bytes(info, 0, cfg.queue_depth, False) * 28 / 31
    assert binned.per_row >= 4 * raw_row              # one binned row = 4 raw rows read
