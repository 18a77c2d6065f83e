# SPDX-License-Identifier: BSD-3-Clause
import numpy as np
import pytest

from tests.conftest import make_lineint
from tomodl.recon.center import CENTER_METHODS, find_center, sharpness, write_center


def _scan(theta, n_det, center, n_rows=1):
    return make_lineint(np.asarray(theta), n_rows, n_det, center)


@pytest.mark.parametrize("n_det, center, theta", [
    (37, 17.3, np.linspace(0, np.pi, 33, endpoint=False)),           # odd, 180, no end angle
    (48, 27.6, np.linspace(0, np.pi, 41)),                           # even, both ends
    (37, 15.6, np.linspace(0, 2 * np.pi, 40, endpoint=False)),       # 360 degrees
    (41, 23.8, np.linspace(0, 2 * np.pi / 3, 40)),                   # partial: 120 degrees
    (41, 19.25, np.random.default_rng(0).uniform(0, np.pi, 25)),     # sparse, unsorted, random
])
def test_recovers_a_shifted_centre(n_det, center, theta):
    tomo = _scan(theta, n_det, center)
    assert find_center(tomo, theta) == pytest.approx(center, abs=0.5)


def test_axis_far_from_the_middle_and_noise(rng):
    theta = np.linspace(0, np.pi, 60, endpoint=False)
    tomo = _scan(theta, 61, 38.4)                                    # middle is 30
    tomo += rng.normal(0, 0.02 * tomo.max(), tomo.shape).astype(np.float32)
    assert find_center(tomo, theta) == pytest.approx(38.4, abs=0.5)


@pytest.mark.parametrize("method", ["com", "registration", "sharpness"])
def test_each_method_alone(method):
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    tomo = _scan(theta, 37, 19.1)
    assert find_center(tomo, theta, method=method, init=18.0) == pytest.approx(19.1, abs=0.5)


def test_row_and_sinogram_order():
    theta = np.linspace(0, np.pi, 33, endpoint=False)
    tomo = _scan(theta, 37, 17.3, n_rows=3)
    a = find_center(tomo, theta, ind=2)
    b = find_center(np.swapaxes(tomo, 0, 1), theta, ind=2, sinogram_order=True)
    assert a == b


def test_errors_name_the_choices():
    theta = np.linspace(0, np.pi, 9, endpoint=False)
    tomo = _scan(theta, 21, 10.0)
    with pytest.raises(ValueError, match="choose one of .*auto"):
        find_center(tomo, theta, method="nope")
    with pytest.raises(ValueError, match="180 degrees apart"):
        find_center(tomo, theta[::-1] / 3, method="registration")
    with pytest.raises(ValueError, match="outside"):
        find_center(tomo, theta, ind=5)
    assert sorted(CENTER_METHODS) == ["auto", "com", "registration", "sharpness"]


def test_sharpness_falls_with_a_wrong_centre():
    from tomodl.recon.fbp import fbp

    theta = np.linspace(0, np.pi, 90, endpoint=False)
    sino = np.swapaxes(_scan(theta, 41, 20.0), 0, 1)
    rec = fbp(np.repeat(sino, 3, 0), theta, [20.0, 21.0, 23.0])
    s = sharpness(rec)
    assert s[0] > s[1] > s[2]
    assert sharpness(rec[0]) == pytest.approx(s[0])
    assert sharpness(3.0 * rec[0]) == pytest.approx(s[0], rel=1e-6)


def test_write_center_writes_one_image_per_centre(tmp_path):
    theta = np.linspace(0, np.pi, 33, endpoint=False)
    tomo = _scan(theta, 37, 17.3)
    res = write_center(tomo, theta, tmp_path / "try", (15.3, 19.4, 0.5))
    names = sorted(p.name for p in (tmp_path / "try").iterdir())
    assert len(res.centers) == 9 and len(names) == 18
    assert "center_0017.30.tiff" in names and "center_0017.30.png" in names
    assert res.best == pytest.approx(17.3, abs=0.5)
    assert res.sharpness.shape == res.centers.shape
    with pytest.raises(ValueError, match="already exists"):
        write_center(tomo, theta, tmp_path / "try", (17.3, 17.4, 0.5))
    with pytest.raises(ValueError, match="start, stop, step"):
        write_center(tomo, theta, tmp_path / "x", (1, 2))


def test_tooth_centre_is_as_sharp_as_the_best(tooth_path, tmp_path):
    """On the real scan the found axis gives (within 0.1 %) the sharpest slice of a scan of
    centres; the scan spans the estimates of TomoPy's find_center (296.0) and _vo (295.0)."""
    from tomodl.io import read_dx
    from tomodl.recon.preprocess import minus_log, normalize

    proj, flat, dark, theta = read_dx(tooth_path, sino=(0, 1))
    tomo = minus_log(normalize(proj, flat, dark))
    c = find_center(tomo, theta)
    kw = dict(formats=(), num_gridx=352)                # the tooth fits in the central 352 px
    found = write_center(tomo, theta, tmp_path, (c, c + 0.1, 1.0), **kw).sharpness[0]
    scan = write_center(tomo, theta, tmp_path, (293.0, 299.1, 0.5), **kw)
    assert found >= scan.sharpness.max() * (1 - 1e-3)
    assert abs(c - 319.5) > 10                      # far from the detector middle


def test_background_offset_and_truncated_sample():
    theta = np.linspace(0, 2 * np.pi / 3, 40)                          # com only (partial)
    tomo = _scan(theta, 41, 23.8)
    ramp = 0.01 + 0.01 * np.linspace(0, 1, 41, dtype=np.float32)      # flat-field drift
    assert find_center(tomo + ramp, theta) == pytest.approx(23.8, abs=0.5)
    from tomodl.sim.analytic import ellipse_sinogram

    big = np.array([(0, 0, 40, 34, 0.3, 0.01), (8, -6, 4, 3, 0, 0.02), (-12, 9, 3, 3.5, 0, -0.005),
                    (15, 12, 2, 1.5, 0.5, 0.03), (-5, -15, 5, 2, 1.0, 0.015)])
    for theta, center in ((np.linspace(0, np.pi, 90, endpoint=False), 31.4),
                          (np.linspace(0, 2 * np.pi, 120, endpoint=False), 27.4)):
        wide = ellipse_sinogram(big, theta, 61, center)[:, None]       # wider than the FOV
        assert find_center(wide, theta) == pytest.approx(center, abs=0.5)


@pytest.mark.parametrize("step", [10, 19])                 # 19 and 10 projections of 640 px
def test_sparse_scan_keeps_the_sinogram_estimate(tooth_path, step):
    """With few angles the sharpness of trial FBPs follows the streaks (the tooth's 19-angle
    row 1 came out 8 px off); ``auto`` then keeps the sinogram estimate."""
    from tomodl.io import read_dx
    from tomodl.recon.center import _too_sparse
    from tomodl.recon.preprocess import minus_log, normalize

    proj, flat, dark, theta = read_dx(tooth_path)
    p = minus_log(normalize(proj, flat, dark))
    dense = find_center(p, theta, ind=1)
    assert not _too_sparse(theta, p.shape[2])
    assert _too_sparse(theta[::step], p.shape[2])
    assert abs(find_center(p[::step], theta[::step], ind=1) - dense) < 1.0
