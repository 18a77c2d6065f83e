# SPDX-License-Identifier: BSD-3-Clause
"""FBP core: accuracy on exact analytic data, method agreement, geometry, array kinds, errors."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from tomodl.recon.fbp import METHODS, estimate_cost, fbp
from tomodl.recon.geometry import default_center, image_coordinates
from tomodl.sim.analytic import ellipse_sinogram, rasterize_ellipses

torch = pytest.importorskip("torch")

# (x0, y0, a, b, phi, value) in units of the grid size n; value in attenuation per pixel.
SHAPE = np.array([
    (0.00, 0.00, 0.42, 0.33, 0.2, 0.010),
    (0.12, 0.08, 0.12, 0.07, 0.5, 0.010),
    (-0.15, -0.10, 0.07, 0.11, -0.3, -0.005),
    (0.05, -0.20, 0.04, 0.04, 0.0, 0.020),
])


def phantom(n):
    return SHAPE * [n, n, n, n, 1, 1]


def analytic(n, theta, centers):
    """Exact sinograms ``(rows, n_angles, n)`` float32 of the phantom, one row per centre."""
    return np.stack([ellipse_sinogram(phantom(n), theta, n, c) for c in centers]).astype(np.float32)


def fov(n, margin=1.0):
    x, y = image_coordinates(n)
    return x[None, :] ** 2 + y[:, None] ** 2 < (n / 2 - margin) ** 2


def corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def full_angle():
    """Full-angle reconstructions of the phantom, odd and even sizes, every method."""
    out = {}
    for n in (63, 64):
        theta = np.linspace(0, np.pi, 2 * n, endpoint=False)
        sino = analytic(n, theta, [default_center(n)])
        for name in METHODS:
            out[n, name] = fbp(sino, theta, filter_name="ramlak", method=name)[0]
    return out


@pytest.mark.parametrize("n", [63, 64])
@pytest.mark.parametrize("name", sorted(METHODS))
def test_analytic_phantom(full_angle, n, name):
    """Full-angle FBP matches the phantom (corr >= 0.99) and flat regions within +-2 %."""
    rec = full_angle[n, name]
    truth = rasterize_ellipses(phantom(n), n)
    inside = fov(n)
    assert rec.dtype == np.float32 and rec.shape == (n, n)
    assert corr(rec[inside], truth[inside]) >= 0.99
    flat = binary_erosion(np.isclose(truth, 0.010) & inside, iterations=3)
    assert flat.sum() > 200
    assert np.mean(rec[flat]) == pytest.approx(0.010, rel=0.02)
    assert np.abs(rec[flat] - 0.010).max() < 0.2 * 0.010


@pytest.mark.parametrize("n", [63, 64])
def test_methods_agree(full_angle, n):
    """direct (upsampled linear interpolation) and fourier (NUFFT) differ by < 1 % RMS."""
    a, b = full_angle[n, "direct"], full_angle[n, "fourier"]
    inside = fov(n)
    assert corr(a[inside], b[inside]) > 0.9995
    assert np.sqrt(np.mean((a - b)[inside] ** 2)) < 0.01 * np.sqrt(np.mean(b[inside] ** 2))


def test_methods_agree_sparse_unsorted():
    rng = np.random.default_rng(3)
    n = 48
    theta = rng.permutation(np.linspace(0.3, 0.3 + np.pi, 12, endpoint=False))
    sino = analytic(n, theta, [23.6])
    a = fbp(sino, theta, 23.6, method="direct")[0]
    b = fbp(sino, theta, 23.6, method="fourier")[0]
    inside = fov(n)
    assert np.sqrt(np.mean((a - b)[inside] ** 2)) < 0.02 * np.sqrt(np.mean(b[inside] ** 2))


@pytest.mark.parametrize("n_angles", [3, 25])
def test_nufft_matches_exact_sum(n_angles):
    """The Fourier back-projector equals the exact band-limited back-projection to ~1e-3."""
    from tomodl.recon.fbp import _filtered_windows, make_setup
    from tomodl.recon.geometry import grid_origin
    from tomodl.recon.nufft import backproject, make_plan

    n, rng = 40, np.random.default_rng(0)
    theta = rng.uniform(0, np.pi, n_angles)
    setup = make_setup(n, theta, n, "shepp", None, torch.device("cpu"))
    sino = torch.as_tensor(analytic(n, theta, [20.0, 20.4]))
    win = _filtered_windows(sino, torch.tensor([20.0, 20.4], dtype=torch.float64), setup)
    plan = make_plan(theta, n, setup.length, grid_origin(n), torch.device("cpu"))
    assert (plan.rows is not None) == (n_angles == 3)  # compressed matrix for sparse angles
    got = backproject(win, plan)
    x, y = image_coordinates(n)
    h, length = (setup.length - 1) // 2, setup.length
    spec = np.fft.fft(win.numpy().astype(np.float64), axis=-1)
    j = np.fft.fftfreq(length, 1.0 / length)
    want = np.zeros((2, n, n))
    for a, t in enumerate(theta):
        s = x[None, :] * np.cos(t) + y[:, None] * np.sin(t) + h
        kernel = np.exp(2j * np.pi * s[..., None] * j / length)
        want += (kernel @ spec[:, a].T).real.transpose(2, 0, 1)
    want *= np.pi / (len(theta) * length)
    inside = fov(n)
    err = np.abs(got.numpy() - want)[:, inside].max()
    assert err < 3e-3 * np.abs(want[:, inside]).max()


def test_csr_column_sort_for_cuda():
    """The CUDA-only step (sorted columns within rows) keeps the matrix, tested on the CPU."""
    from tomodl.recon.nufft import make_plan, sort_columns

    plan = make_plan(np.linspace(0, 3, 9), 24, 41, 12.0, torch.device("cpu"))
    a = plan.matrix
    cols, vals = sort_columns(a.crow_indices(), a.col_indices(), a.values())
    # opting in to the invariant checks also validates the sorted matrix (and silences torch's
    # "invariant checks are implicitly disabled" warning)
    b = torch.sparse_csr_tensor(a.crow_indices(), cols, vals, size=a.shape,
                                check_invariants=True)
    x = torch.randn(a.shape[1], 2)
    torch.testing.assert_close(a @ x, b @ x, rtol=1e-5, atol=1e-5)
    crow = a.crow_indices()
    assert all(bool((cols[crow[i]:crow[i + 1]].diff() > 0).all()) for i in range(a.shape[0]))


def test_center_per_row_and_default():
    """One float centre per row; shifted data with shifted centre give the same image."""
    n = 48
    theta = np.linspace(0, np.pi, 90, endpoint=False)
    centers = [24.0, 21.3, 26.75]
    rec = fbp(analytic(n, theta, centers), theta, centers)
    truth = rasterize_ellipses(phantom(n), n)
    inside = fov(n)
    for r in rec:
        assert corr(r[inside], truth[inside]) > 0.99
    sino = analytic(n, theta, [24.0])
    shifted = np.zeros_like(sino)
    shifted[..., 3:] = sino[..., :-3]
    np.testing.assert_allclose(fbp(shifted, theta, 27.0), fbp(sino, theta, 24.0), atol=1e-6)
    np.testing.assert_array_equal(fbp(sino, theta), fbp(sino, theta, default_center(n)))


def test_angle_order_and_range():
    """Unsorted angles give the same image; [0, 2 pi) gives the [0, pi) attenuation."""
    n = 40
    theta = np.linspace(0, np.pi, 50, endpoint=False)
    sino = analytic(n, theta, [20.0])
    perm = np.random.default_rng(1).permutation(theta.size)
    a = fbp(sino, theta, 20.0)
    np.testing.assert_allclose(fbp(sino[:, perm], theta[perm], 20.0), a, atol=1e-6)
    theta2 = np.linspace(0, 2 * np.pi, 100, endpoint=False)
    b = fbp(analytic(n, theta2, [20.0]), theta2, 20.0)
    inside = fov(n, 3)
    assert np.abs(a - b)[:, inside].max() < 0.03 * a.max()


def test_num_gridx_grid_is_consistent():
    """A larger output grid contains the default grid, shifted by the difference of origins."""
    n = 48
    theta = np.linspace(0, np.pi, 70, endpoint=False)
    sino = analytic(n, theta, [24.0])
    small = fbp(sino, theta, 24.0)[0]
    big = fbp(sino, theta, 24.0, num_gridx=64)[0]
    assert big.shape == (64, 64)
    inside = fov(n, 2)
    assert np.abs(big[8:56, 8:56] - small)[inside].max() < 2e-3 * small.max()


def test_no_wraparound_from_edge_object():
    """Zero padding: a wider detector (more zeros around the data) changes nothing."""
    n = 64
    blob = np.array([(27.0, 0.0, 3.0, 3.0, 0.0, 0.05), (-5.0, 3.0, 20.0, 12.0, 0.4, 0.01)])
    theta = np.linspace(0, np.pi, 128, endpoint=False)
    sino = ellipse_sinogram(blob, theta, n, 32.0)[None].astype(np.float32)
    rec = fbp(sino, theta, 32.0, filter_name="ramlak")[0]
    wide = np.pad(sino, ((0, 0), (0, 0), (3 * n, 3 * n)))
    ref = fbp(wide, theta, 32.0 + 3 * n, filter_name="ramlak", num_gridx=n)[0]
    inside = fov(n)
    assert np.abs(rec - ref)[inside].max() < 2e-4 * 0.05  # 1.5x padding gives 6e-4


def test_array_kinds_and_dtypes():
    n = 32
    theta = np.linspace(0, np.pi, 20, endpoint=False)
    sino = analytic(n, theta, [16.0])
    ref = fbp(sino, theta)
    out = fbp(torch.as_tensor(sino, dtype=torch.float64), torch.as_tensor(theta))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == "cpu"
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-6)
    assert fbp(sino[:0], theta).shape == (0, n, n)
    assert fbp(sino.astype(np.float16), theta).dtype == np.float32


def test_ncore_restores_threads():
    before = torch.get_num_threads()
    theta = np.linspace(0, np.pi, 20, endpoint=False)
    fbp(analytic(32, theta, [16.0]), theta, ncore=1)
    assert torch.get_num_threads() == before


def test_auto_prefers_fourier_for_large_jobs():
    assert estimate_cost("fourier", 2048, 75, 100) < estimate_cost("direct", 2048, 75, 100)
    assert estimate_cost("fourier", 1024, 720, 1) < estimate_cost("direct", 1024, 720, 1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sino=np.zeros((5, 16))), "3-D"),
    (dict(theta=np.zeros(3)), "theta has 3 angles"),
    (dict(theta=np.full(10, np.nan)), "theta contains NaN"),
    (dict(center=[1.0, 2.0]), "one float per row"),
    (dict(center=np.inf), "center contains"),
    (dict(filter_name="gauss"), "choose one of"),
    (dict(method="fast"), r"choose one of \['auto'"),
    (dict(num_gridx=1), "num_gridx"),
    (dict(device="tpu"), "Unknown device"),
])
def test_errors(kwargs, match):
    args = dict(sino=np.zeros((3, 10, 16), np.float32), theta=np.linspace(0, 3, 10))
    args.update(kwargs)
    sino, theta = args.pop("sino"), args.pop("theta")
    with pytest.raises(ValueError, match=match):
        fbp(sino, theta, **args)


def test_nan_in_sinogram():
    sino = np.zeros((1, 10, 16), np.float32)
    sino[0, 3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        fbp(sino, np.linspace(0, 3, 10))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", sorted(METHODS))
def test_cuda_matches_cpu(name):
    n = 64
    theta = np.linspace(0, np.pi, 90, endpoint=False)
    sino = analytic(n, theta, [32.0, 31.4, 33.0])
    cpu = fbp(sino, theta, [32.0, 31.4, 33.0], method=name, device="cpu")
    gpu = fbp(torch.as_tensor(sino, device="cuda"), theta, [32.0, 31.4, 33.0], method=name)
    assert gpu.device.type == "cuda"
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu, atol=2e-4 * np.abs(cpu).max())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cupy_roundtrip():
    cupy = pytest.importorskip("cupy")
    n = 32
    theta = np.linspace(0, np.pi, 40, endpoint=False)
    sino = analytic(n, theta, [16.0])
    out = fbp(cupy.asarray(sino), theta)
    assert isinstance(out, cupy.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(cupy.asnumpy(out), fbp(sino, theta, device="cpu"), atol=1e-5)
