# SPDX-License-Identifier: BSD-3-Clause
"""Physics and reproducibility of the analytic phantom simulator (tomodl.sim)."""
import json

import h5py
import numpy as np
import pytest

from tomodl.errors import TomodlError
from tomodl.recon.geometry import image_coordinates
from tomodl.sim.acquisition import acquire
from tomodl.sim.analytic import ellipse_sinogram, rasterize_ellipses
from tomodl.sim.config import Acquisition, PhantomParams, ScanGeometry, SimulationError
from tomodl.sim.families import FAMILIES, make_phantom
from tomodl.sim.pairs import SPLITS, make_pairs, split_by_phantom, split_counts
from tomodl.sim.phantom import Phantom, ground_truth, project, rotation_zyz, row_heights
from tomodl.sim.placement import contact_function
from tomodl.sim.scan import read_ground_truth, simulate_scan

ELLIPSES = np.array([[3.2, -1.7, 9.3, 4.1, 0.7, 0.01],
                     [-2.0, 4.0, 3.0, 1.2, -0.3, 0.02],
                     [0.0, 0.0, 0.4, 6.0, 0.2, -0.005]])


def _preprocess_fbp(path, proj=None):
    """The inference path: read_dx -> normalize -> minus_log -> fbp."""
    from tomodl.io.dxchange import read_dx
    from tomodl.recon.fbp import fbp
    from tomodl.recon.preprocess import minus_log, normalize

    scan = read_dx(path, proj=proj)
    _, meta = read_ground_truth(path)
    lines = minus_log(normalize(scan.proj, scan.flat, scan.dark))
    return fbp(np.swapaxes(lines, 0, 1), scan.theta, meta["geometry"]["center"])


# -- 2-D analytic projector and rasterizer ------------------------------------------------------
def test_exact_pixel_average_matches_fine_midpoint_rule():
    theta = np.linspace(0, np.pi, 37)
    exact = ellipse_sinogram(ELLIPSES, theta, 41, 20.3)
    err = [np.abs(exact - ellipse_sinogram(ELLIPSES, theta, 41, 20.3, supersample=s)).max()
           for s in (64, 512)]
    assert err[1] < 2e-5 * exact.max() and err[1] < err[0] / 4      # the midpoint rule converges
    mass = np.pi * np.sum(ELLIPSES[:, 2] * ELLIPSES[:, 3] * ELLIPSES[:, 5])
    np.testing.assert_allclose(exact.sum(axis=1), mass, rtol=1e-10)


def test_rasterizer_matches_brute_force_supersampling():
    n, s = 37, 64
    img = rasterize_ellipses(ELLIPSES, n, supersample=16)
    x, y = image_coordinates(n)
    sub = (np.arange(s) + 0.5) / s - 0.5
    X, Y = np.meshgrid((x[:, None] + sub).ravel(), (y[:, None] - sub).ravel())
    ref = np.zeros_like(X)
    for x0, y0, a, b, phi, v in ELLIPSES:
        dx, dy = X - x0, Y - y0
        u = (dx * np.cos(phi) + dy * np.sin(phi)) / a
        w = (-dx * np.sin(phi) + dy * np.cos(phi)) / b
        ref += v * (u * u + w * w <= 1)
    ref = ref.reshape(n, s, n, s).mean(axis=(1, 3))
    assert np.abs(img - ref).max() < 5e-4
    assert abs(img.sum() - ref.sum()) < 1e-3 * ref.sum()


# -- 3-D phantoms --------------------------------------------------------------------------------
def test_single_sphere_projection_equals_analytic_chord():
    r, c = 6.3, (1.7, -2.2, 0.4)
    ph = Phantom([[*c, r, r, r, 0, 0, 0, 0.02]])
    theta = np.array([0.0, 0.9, 2.2])
    n_det, n_rows, center = 31, 5, 15.4
    proj = project(ph, theta, n_det, n_rows, center=center, supersample_z=1)
    z = row_heights(n_rows, 1)[:, 0]
    for k, th in enumerate(theta):
        s0 = c[0] * np.cos(th) + c[1] * np.sin(th) + center
        u = np.arange(n_det)[:, None] + (np.arange(2000) + 0.5) / 2000 - 0.5   # fine samples
        for i, zz in enumerate(z):
            rr = r * r - (zz - c[2]) ** 2
            chord = 2 * 0.02 * np.sqrt(np.clip(rr - (u - s0) ** 2, 0, None))
            np.testing.assert_allclose(proj[k, i], chord.mean(axis=1), atol=2e-6)


def test_mass_is_conserved_between_projections_and_ground_truth():
    ph = make_phantom("foam_intense", 65, 6, rng=4, n_spheres=40)
    theta = np.linspace(0, np.pi, 12, endpoint=False)
    proj = project(ph, theta, 65, 6)
    gt = ground_truth(ph, 65, 6)
    per_angle = proj.sum(axis=(1, 2))
    np.testing.assert_allclose(per_angle, gt.sum(), rtol=5e-3)


def test_rotated_ellipsoid_sections_match_voxelization():
    e = np.array([[2.3, -1.1, 0.7, 9.0, 3.0, 1.5, 0.4, 1.1, -0.6, 0.01]])
    ph = Phantom(e, [[0, 0, 12, 10, 0.3, -np.inf, np.inf, 0.002]])
    n, n_rows, s = 29, 7, 8
    gt = ground_truth(ph, n, n_rows, supersample=16, supersample_z=16)
    x, y = image_coordinates(n)
    sub = (np.arange(s) + 0.5) / s - 0.5
    Z, Y, X = np.meshgrid(row_heights(n_rows, s).ravel(), (y[:, None] - sub).ravel(),
                          (x[:, None] + sub).ravel(), indexing="ij")
    local = np.stack([X - e[0, 0], Y - e[0, 1], Z - e[0, 2]], -1) @ rotation_zyz(*e[0, 6:9])
    inside = ((local / e[0, 3:6]) ** 2).sum(-1) <= 1
    u = (X * np.cos(0.3) + Y * np.sin(0.3)) / 12
    v = (-X * np.sin(0.3) + Y * np.cos(0.3)) / 10
    ref = (0.01 * inside + 0.002 * (u * u + v * v <= 1)).reshape(n_rows, s, n, s, n, s)
    ref = ref.mean(axis=(1, 3, 5))
    assert np.abs(gt - ref).max() < 1e-3
    assert abs(gt.sum() - ref.sum()) < 2e-3 * ref.sum()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_families_are_non_negative_and_inside_the_field(family):
    ph = make_phantom(family, 96, 4, rng=11)
    gt = ground_truth(ph, 96, 4, supersample=4, supersample_z=1)
    assert gt.min() > -1e-9                     # holes never overlap: no negative attenuation
    assert gt.max() > 0
    ring = np.hypot(*np.meshgrid(*image_coordinates(96))) > 47.5
    assert np.abs(gt[:, ring]).max() < 1e-12      # nothing outside the field of view
    assert ph.meta["family"] == family and ph.meta["seed"] == 11


def test_same_seed_same_phantom_different_seed_different_phantom():
    a = make_phantom("mixed", 80, 8, rng=5)
    b = make_phantom("mixed", 80, 8, rng=5)
    c = make_phantom("mixed", 80, 8, rng=6)
    np.testing.assert_array_equal(a.ellipsoids, b.ellipsoids)
    np.testing.assert_array_equal(a.cylinders, b.cylinders)
    assert a.ellipsoids.shape != c.ellipsoids.shape or not np.allclose(a.ellipsoids, c.ellipsoids)


def test_spheres_do_not_overlap_and_stay_inside():
    ph = make_phantom("foam", 128, 16, rng=2, n_spheres=150, porosity=0.3, gap=1.0)
    e, cyl = ph.ellipsoids, ph.cylinders[0]
    d = np.linalg.norm(e[:, None, :3] - e[None, :, :3], axis=-1)
    limit = e[:, None, 3] + e[None, :, 3] + 1.0 - 1e-9
    np.fill_diagonal(d, np.inf)
    assert np.all(d >= limit)
    assert np.all(np.hypot(e[:, 0] - cyl[0], e[:, 1] - cyl[1]) + e[:, 3] <= cyl[2])
    assert np.allclose(e[:, 9], -cyl[7])        # holes remove exactly the material


def test_contact_function_spheres_and_crossing_needles():
    r = np.array([[5.0, 0, 0], [3.0, 0, 0]])
    cov = np.broadcast_to(np.eye(3) * 4.0, (2, 3, 3))          # radius 2
    f = contact_function(r, cov, cov, n_lambda=101)
    assert f[0] > 1.0 > f[1]                                  # 5 > 2 + 2 > 3
    needle_x = np.diag([100.0, 0.25, 0.25])
    needle_y = np.diag([0.25, 100.0, 0.25])
    crossing = contact_function(np.array([[0.0, 0, 0.5]]), needle_x[None], needle_y[None])
    apart = contact_function(np.array([[0.0, 0, 1.5]]), needle_x[None], needle_y[None])
    assert crossing[0] < 1.0 <= apart[0]


def test_parameters_are_validated():
    with pytest.raises(SimulationError, match="foam_intense"):
        make_phantom("sponge", 64, 4)
    with pytest.raises(TomodlError, match="porosity"):
        PhantomParams(porosity=0.7)
    with pytest.raises(ValueError, match="flux"):
        Acquisition(flux=-1)
    with pytest.raises(ValueError, match="angle"):
        ScanGeometry(n_angles=0)
    with pytest.raises(SimulationError, match="cannot fit|do not fit"):
        make_phantom("foam", 64, 4, rng=0, n_spheres=400, porosity=0.45)


# -- acquisition ---------------------------------------------------------------------------------
def test_noise_free_acquisition_inverts_exactly_and_inputs_are_untouched():
    from tomodl.recon.preprocess import minus_log, normalize

    lines = np.random.default_rng(0).uniform(0, 2, (5, 3, 17)).astype(np.float32)
    keep = lines.copy()
    proj, flat, dark = acquire(lines, Acquisition(noise=False, flat_nonuniformity=0.2), rng=1)
    np.testing.assert_array_equal(lines, keep)
    assert proj.dtype == np.float32
    np.testing.assert_allclose(minus_log(normalize(proj, flat, dark)), lines, atol=2e-4)


def test_acquisition_is_seeded_and_models_rings_and_zingers():
    lines = np.full((40, 2, 33), 0.5, np.float32)
    acq = Acquisition(ring_strength=0.02, zinger_rate=0.01, flux=5e3)
    a = acquire(lines, acq, rng=3)
    b = acquire(lines, acq, rng=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a[0].dtype == np.uint16
    from tomodl.recon.preprocess import minus_log, normalize

    clean = acquire(lines, Acquisition(ring_strength=0.02, noise=False), rng=3)
    p = minus_log(normalize(*clean))
    offsets = p.mean(axis=0) - 0.5                   # per-pixel offsets, constant over angles
    assert np.abs(offsets).std() > 0.005
    np.testing.assert_allclose(p.std(axis=0), 0, atol=1e-5)
    hits = (a[0].astype(float) > 1.3 * np.median(a[0])).mean()
    assert 0.004 < hits < 0.02


# -- scans and pairs -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    d = tmp_path_factory.mktemp("scans")
    geo = ScanGeometry(n_det=65, n_rows=3, n_angles=360)
    return [simulate_scan(d / f"s{i}.h5", ("foam", "cracked")[i % 2], seed=i, geometry=geo,
                          acquisition=Acquisition(noise=i != 0)) for i in range(4)]


def test_full_angle_reconstruction_of_noise_free_scan_matches_ground_truth(scans):
    rec = _preprocess_fbp(scans[0])
    gt, meta = read_ground_truth(scans[0])
    assert meta["acquisition"]["noise"] is False
    for r, g in zip(rec, gt):
        assert np.corrcoef(r.ravel(), g.ravel())[0, 1] >= 0.98
    assert abs(rec.mean() / gt.mean() - 1) < 0.01       # attenuation units per pixel


def test_scan_file_layout_and_reproducibility(scans, tmp_path):
    with h5py.File(scans[1], "r") as f:
        assert f["/exchange/theta"].attrs["units"] == "degrees"
        assert f["/exchange/data"].shape == (360, 3, 65)
        meta = json.loads(f["/tomodl_sim"].attrs["metadata"])
        data = f["/exchange/data"][()]
    assert meta["family"] == "cracked" and meta["seed"] == 1
    assert meta["geometry"]["center"] == 32.5 and "tomodl_version" in meta
    again = simulate_scan(tmp_path / "again.h5", "cracked", seed=1,
                          geometry=ScanGeometry(n_det=65, n_rows=3, n_angles=360))
    with h5py.File(again, "r") as f:
        np.testing.assert_array_equal(f["/exchange/data"][()], data)


def test_pairs_are_split_by_phantom_and_use_the_inference_path(scans, tmp_path):
    out = make_pairs(scans, tmp_path / "pairs.h5", sparse=20, seed=7)
    owner = {}
    with h5py.File(out, "r") as f:
        meta = json.loads(f.attrs["metadata"])
        for split in SPLITS:
            ids = f[split]["phantom"][()]
            assert f[split]["input"].shape == f[split]["target"].shape == (ids.size, 65, 65)
            for i in ids:
                assert owner.setdefault(int(i), split) == split     # never split a phantom
        test_input = f["test/input"][()]
        test_ids = f["test/phantom"][()]
    assert sorted(owner) == [0, 1, 2, 3]
    assert meta["sparse_factor"] == 20 and meta["normalization"]["name"] == "percentile"
    assert meta["seeds"] == [0, 1, 2, 3] and len(meta["sources"]) == 4
    sparse = _preprocess_fbp(scans[test_ids[0]], proj=(0, 360, 20))
    np.testing.assert_allclose(test_input, sparse, atol=1e-6)


def test_split_is_deterministic_and_complete():
    assert split_counts(1) == (1, 0, 0) and split_counts(3) == (1, 1, 1)
    assert split_counts(20) == (16, 2, 2)
    a, b = split_by_phantom(20, seed=3), split_by_phantom(20, seed=3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, split_by_phantom(20, seed=4))
    assert np.bincount(a).tolist() == [16, 2, 2]


def test_mixed_factor_pairs_interleave_the_sampling(scans, tmp_path):
    out = make_pairs(scans[:2], tmp_path / "mixed.h5", sparse=[4, 20, 90], fractions=(0, 0, 1))
    with h5py.File(out, "r") as f:
        meta = json.loads(f.attrs["metadata"])
        assert f["train/input"].shape[0] == 0 and f["val/input"].shape[0] == 0
        n_angles = f["test/n_angles"][()]
        phantom = f["test/phantom"][()]
        first = f["test/input"][0]
    # slice i of phantom k uses factor [4, 20, 90][(i + k) % 3] of 360 angles
    expected = [[90, 18, 4][(i + k) % 3] for k in (0, 1) for i in range(3)]
    assert n_angles.tolist() == expected and phantom.tolist() == [0, 0, 0, 1, 1, 1]
    assert meta["sparse_factor"] is None and meta["sparse_factors"] == [4, 20, 90]
    assert meta["n_angles"] == [4, 18, 90]
    np.testing.assert_allclose(first, _preprocess_fbp(scans[0], proj=(0, 360, 4))[0], atol=1e-6)
    assert split_counts(5, (0, 0, 1)) == (0, 0, 5)
