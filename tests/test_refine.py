# SPDX-License-Identifier: BSD-3-Clause
"""Refinement of the network output against the data, and the TV solver: physics on tiny
simulated sparse scans, scale invariance, wiring (refine=0 changes nothing), devices."""
from __future__ import annotations

import numpy as np
import pytest

from tomodl.errors import TomodlError
from tomodl.recon.fbp import fbp
from tomodl.recon.geometry import image_coordinates
from tomodl.recon.refine import absolute_weights, projector_for, refine, solve, tv_reconstruct
from tomodl.recon.refiner import RefineSettings
from tomodl.sim.analytic import ellipse_sinogram, rasterize_ellipses

torch = pytest.importorskip("torch")

N = 49
THETA = np.linspace(0.0, np.pi, 15, endpoint=False)
# piecewise-constant phantom (pixels, attenuation per pixel)
ELLIPSES = np.array([
    (0.0, 0.0, 19.0, 15.0, 0.3, 0.010),
    (4.0, -3.0, 6.0, 3.5, 0.0, 0.010),
    (-7.0, 6.0, 3.5, 4.0, 0.0, -0.005),
])
BLOB = (-6.0, -9.0, 3.0)   # (x, y, radius) of a feature the "network" invents


def fov(n=N, frac=0.45):
    x, y = image_coordinates(n)
    return x[None, :] ** 2 + y[:, None] ** 2 < (frac * n) ** 2


def blob_mask(n=N):
    x, y = image_coordinates(n)
    return (x[None, :] - BLOB[0]) ** 2 + (y[:, None] - BLOB[1]) ** 2 < BLOB[2] ** 2


@pytest.fixture(scope="module")
def scan():
    """Truth, exact sparse projections (15 angles) ``(n_angles, 1, n_det)``, FBP, fake x_net."""
    truth = rasterize_ellipses(ELLIPSES, N, supersample=8)
    sino = ellipse_sinogram(ELLIPSES, THETA, N, N / 2).astype(np.float32)[:, None, :]
    rec = fbp(np.swapaxes(sino, 0, 1), THETA)
    net = truth.copy()
    net[blob_mask()] += 0.01                      # an invented pore-sized feature
    return truth, sino, rec, net[None]


def err(img, truth, mask=None):
    mask = fov() if mask is None else mask
    return float(np.linalg.norm((np.asarray(img) - truth)[..., mask]) /
                 np.linalg.norm(truth[mask]))


def test_refine_removes_invented_feature(scan):
    """The data term removes most of a blob that the projections do not contain, and the
    result is closer to the truth than the input and than the FBP."""
    truth, sino, rec, net = scan
    out = refine(net, sino, THETA)[0]
    blob = blob_mask()
    before = float((net[0] - truth)[blob].mean())
    after = float((out - truth)[blob].mean())
    assert after < 0.5 * before
    assert err(out, truth) < err(net[0], truth)
    assert err(out, truth) < err(rec[0], truth)


def test_refine_zero_is_identity_and_settings(scan):
    _, sino, _, net = scan
    assert np.array_equal(refine(net, sino, THETA, iterations=0), net)
    with pytest.raises(TomodlError, match="iterations >= 0"):
        RefineSettings(iterations=-1)
    assert RefineSettings(iterations=0).provenance() is None
    assert RefineSettings(iterations=5).provenance()["iterations"] == 5
    with pytest.raises(TomodlError, match="rows"):
        refine(net[:, :10], sino, THETA)


def test_refine_keeps_absorption_nonnegative_unless_told(scan):
    """Default: the refined image is >= 0 (absorption); ``nonneg=False`` follows data whose
    object really is negative (e.g. propagation fringes), and the settings record it."""
    neg = np.array([(0.0, 0.0, 12.0, 9.0, 0.0, -0.01)])
    sino = ellipse_sinogram(neg, THETA, N, N / 2).astype(np.float32)[:, None, :]
    start = fbp(np.swapaxes(sino, 0, 1), THETA)
    default = refine(start, sino, THETA, iterations=20)
    signed = refine(start, sino, THETA, iterations=20, nonneg=False)
    assert default.min() >= 0.0
    assert signed[0][fov()].min() < -0.005
    assert RefineSettings(iterations=5).provenance()["nonneg"] is True
    assert RefineSettings(iterations=5, nonneg=False).provenance()["nonneg"] is False
    with pytest.raises(TomodlError, match="True or False"):
        RefineSettings(iterations=5, nonneg="no")


def test_refine_rounds_apply_the_network_to_the_residual_image(scan):
    """rounds=2: the network sees ``x + FBP(y - A x)`` of the first refinement, and the second
    refinement starts from its output; the record says so; bad values are one error."""
    from tomodl.recon.refiner import Refiner

    truth, sino, _, net = scan
    seen = []

    def network(z):                                  # the identity, recording its inputs
        seen.append(np.asarray(z).copy())
        return z

    def reconstruct(r):
        return fbp(r, THETA, N / 2)

    sinos = np.swapaxes(sino, 0, 1)
    one = Refiner(RefineSettings(iterations=20), THETA)(net, sinos, N / 2)
    two = Refiner(RefineSettings(iterations=20, rounds=2), THETA)(
        net, sinos, N / 2, denoise=network, reconstruct=reconstruct)
    assert len(seen) == 1
    projector = projector_for(N, THETA, N, np.array([N / 2]), torch.device("cpu"))
    with torch.no_grad():
        resid = torch.as_tensor(sinos) - projector.forward(torch.as_tensor(one))
    np.testing.assert_allclose(seen[0], one + np.asarray(reconstruct(resid)), atol=1e-5)
    assert err(two[0], truth) < err(one[0], truth)
    assert RefineSettings(iterations=5, rounds=2).provenance()["rounds"] == 2
    with pytest.raises(TomodlError, match="rounds"):
        RefineSettings(iterations=5, rounds=0)
    with pytest.raises(TomodlError, match="rounds > 1 need"):
        Refiner(RefineSettings(iterations=5, rounds=2), THETA)(net, sinos, N / 2)


def test_refine_is_scale_free(scan):
    """Weights are relative: scaling data and image by c scales the result by c."""
    _, sino, _, net = scan
    one = refine(net, sino, THETA, iterations=10)
    big = refine(net * 37.0, sino * 37.0, THETA, iterations=10)
    np.testing.assert_allclose(big / 37.0, one, rtol=0, atol=1e-4 * np.abs(one).max())


def test_tv_decreases_objective_and_beats_fbp(scan):
    truth, sino, rec, _ = scan
    y = torch.as_tensor(np.swapaxes(sino, 0, 1))
    x0 = torch.as_tensor(rec)
    proj = projector_for(N, THETA, N, [N / 2], "cpu")
    w = absolute_weights(x0, len(THETA), 0.03, 0.0)
    obj = []
    x = solve(proj, y, x0, w, 100, nonneg=True, objective=obj)
    obj = np.array(obj)[:, 0]
    assert obj[-1] < 0.5 * obj[0] and obj[-1] <= obj[50:].min() * 1.05
    assert float(x.min()) >= 0
    out = tv_reconstruct(sino, THETA, weight=0.03, iterations=100)
    np.testing.assert_allclose(out[0], x[0].numpy(), atol=1e-5)
    assert err(out[0], truth) < 0.7 * err(rec[0], truth)


def test_tv_weight_per_row_batch(scan):
    """One weight per row: a weight sweep in one call equals separate calls."""
    _, sino, _, _ = scan
    both = tv_reconstruct(np.repeat(sino, 2, axis=1), THETA, weight=[0.01, 0.1], iterations=20)
    one = tv_reconstruct(sino, THETA, weight=0.1, iterations=20)
    np.testing.assert_allclose(both[1], one[0], atol=1e-5)
    assert not np.allclose(both[0], both[1])


def test_recon_refine_wiring(scan):
    """``tomodl.recon(refine=0)`` is today's result; ``refine`` needs a network algorithm."""
    import tomodl

    _, sino, _, _ = scan
    plain = tomodl.recon(sino, THETA, algorithm="fbp")
    np.testing.assert_array_equal(tomodl.recon(sino, THETA, algorithm="fbp", refine=0), plain)
    with pytest.raises(ValueError, match="fbp\\+<model>"):
        tomodl.recon(sino, THETA, algorithm="fbp", refine=3)
    with pytest.raises(ValueError, match="refine=N"):
        tomodl.recon(sino, THETA, algorithm="fbp", refine_nonneg=False)
    with pytest.raises(ValueError, match="refine=N"):
        tomodl.recon(sino, THETA, algorithm="fbp+unet", refine_rounds=2)


def test_recon_refine_with_a_model(scan, tmp_path):
    """With a (tiny, untrained: identity-like) network, refine=N changes the output towards
    the data and refine=0 keeps it."""
    import tomodl
    from tests.conftest import save_tiny_unet

    truth, sino, _, _ = scan
    folder = save_tiny_unet(tmp_path / "unet")
    kw = dict(algorithm="fbp+unet", model=str(folder), device="cpu")
    net = tomodl.recon(sino, THETA, **kw)
    np.testing.assert_array_equal(tomodl.recon(sino, THETA, refine=0, **kw), net)
    refined = tomodl.recon(sino, THETA, refine=20, **kw)
    assert err(refined[0], truth) < err(net[0], truth)
    twice = tomodl.recon(sino, THETA, refine=20, refine_rounds=2, **kw)
    assert np.isfinite(twice).all() and not np.allclose(twice, refined)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(scan):
    _, sino, _, net = scan
    cpu = refine(net, sino, THETA, iterations=10, device="cpu")
    gpu = refine(torch.as_tensor(net, device="cuda"), torch.as_tensor(sino, device="cuda"),
                 THETA, iterations=10)
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, atol=1e-4 * np.abs(cpu).max())
    tv_cpu = tv_reconstruct(sino, THETA, iterations=20, device="cpu")
    tv_gpu = tv_reconstruct(sino, THETA, iterations=20, device="cuda")
    np.testing.assert_allclose(tv_gpu, tv_cpu, atol=1e-4 * np.abs(tv_cpu).max())


def test_cli_refine_runs_the_pipeline_and_records_it(tmp_path):
    """``tomodl recon --refine N``: the stage refines after the network, the provenance says so,
    and ``--refine`` without a network is one clear error."""
    import json

    import h5py
    from click.testing import CliRunner

    from tests.conftest import save_tiny_unet, write_scan
    from tomodl.cli import main

    scan = write_scan(tmp_path / "scan.h5", np.linspace(0, np.pi, 17, endpoint=False),
                      n_rows=3, n_det=29, center=13.6)
    weights = save_tiny_unet(tmp_path / "w")
    base = ["recon", str(scan.path), "--algorithm", "fbp+unet", "--model", str(weights),
            "--dtype", "float32", "--rotation-axis", "13.6", "--save-format", "h5",
            "--no-progress", "--device", "cpu"]
    outs = {}
    for n_it in (0, 10):
        out = tmp_path / f"r{n_it}.h5"
        res = CliRunner().invoke(main, base + ["--refine", str(n_it), "--out-path", str(out)])
        assert res.exit_code == 0, res.output + res.stderr
        with h5py.File(out, "r") as f:
            outs[n_it] = (f["/exchange/data"][()], json.loads(f.attrs["provenance"]))
    assert outs[0][1]["refine"] is None
    assert outs[10][1]["refine"]["iterations"] == 10
    assert outs[10][1]["refine"]["nonneg"] is True
    assert outs[10][1]["refine"]["rounds"] == 1
    out = tmp_path / "r2.h5"
    res = CliRunner().invoke(main, base + ["--refine", "10", "--refine-rounds", "2",
                                           "--out-path", str(out)])
    assert res.exit_code == 0, res.output + res.stderr
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["provenance"])["refine"]["rounds"] == 2
        assert not np.allclose(f["/exchange/data"][()], outs[10][0])
    assert not np.allclose(outs[0][0], outs[10][0])
    out = tmp_path / "signed.h5"
    res = CliRunner().invoke(main, base + ["--refine", "10", "--refine-allow-negative",
                                           "--out-path", str(out)])
    assert res.exit_code == 0, res.output + res.stderr
    with h5py.File(out, "r") as f:
        assert json.loads(f.attrs["provenance"])["refine"]["nonneg"] is False
    res = CliRunner().invoke(main, base + ["--refine-allow-negative", "--out-path",
                                           str(tmp_path / "y.h5")])
    assert res.exit_code == 2 and "--refine N" in res.stderr
    res = CliRunner().invoke(main, ["recon", str(scan.path), "--algorithm", "fbp", "--refine",
                                    "5", "--out-path", str(tmp_path / "x.h5")])
    assert res.exit_code == 2 and "refine" in res.stderr


def test_auto_weights_from_held_out_angles(scan):
    """``prior="auto"``: the candidates are scored on angles held out of their refinement;
    too few angles keep the defaults."""
    from tomodl.recon.refine import CANDIDATES, holdout_split, select_weights

    _, sino, _, net = scan
    train, held = holdout_split(len(THETA))
    assert len(held) >= 2 and not set(train) & set(held)
    assert holdout_split(6) is None
    y = torch.as_tensor(sino[:, 0])
    prior, weight, scores = select_weights(torch.as_tensor(net[0]), y, THETA, N / 2,
                                           iterations=10)
    assert (prior, weight) in CANDIDATES and len(scores) == len(CANDIDATES)
    assert min(scores) < 1.0          # refining on the kept angles predicts the others better
    out = refine(net, sino, THETA, iterations=10, prior="auto", weight="auto")
    assert out.shape == net.shape
    with pytest.raises(TomodlError, match="both 'auto'"):
        refine(net, sino, THETA, prior="auto", weight=0.1)


def test_refine_objective_decreases_and_iterates_converge(scan):
    """More iterations never make the refinement worse: the objective is non-increasing (to
    float32 rounding) and the iterate at 2N is closer to the minimiser than the one at N."""
    _, sino, _, net = scan
    y = torch.as_tensor(np.swapaxes(sino, 0, 1)).double()
    x0 = torch.as_tensor(net).double()
    proj = projector_for(N, THETA, N, [N / 2], "cpu", torch.float64)
    w = absolute_weights(x0, len(THETA), 0.1, 3.0)
    obj = []
    x_star = solve(proj, y, x0, w, 300, objective=obj)
    obj = np.array(obj)[:, 0]
    assert np.all(np.diff(obj) <= 1e-6 * obj[0])
    dist = [float((solve(proj, y, x0, w, k) - x_star).norm()) for k in (5, 10, 20, 40, 80)]
    assert all(b <= a for a, b in zip(dist, dist[1:])), dist
    assert dist[-1] < 0.1 * dist[0]


def test_default_tv_weight_grows_with_undersampling(scan):
    """``weight=None`` (the default) = ``default_weight(N, n_angles)``: more TV for fewer
    angles, and the provenance names the rule."""
    from tomodl.recon.refine import default_weight

    _, sino, _, net = scan
    assert default_weight(256, 18) > default_weight(256, 36) > default_weight(256, 90)
    assert abs(default_weight(256, 90) - 0.05 * np.sqrt(np.pi * 256 / 180)) < 1e-12
    ours = refine(net, sino, THETA, iterations=5)
    explicit = refine(net, sino, THETA, iterations=5, weight=default_weight(N, len(THETA)))
    np.testing.assert_array_equal(ours, explicit)
    assert "sqrt" in RefineSettings(iterations=5).provenance()["weight"]
