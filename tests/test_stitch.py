"""360-degree offset-axis scans (tomodl.recon.stitch) against the analytic full-width scan."""
import numpy as np
import pytest

from tomodl.recon.fbp import fbp
from tomodl.recon.stitch import find_center_360, stitch_360, stitched_geometry
from tomodl.sim.analytic import ellipse_sinogram

ELL = [(0, 0, 60, 45, 0.3, 0.01), (20, -10, 15, 10, 0.0, 0.02), (-30, 20, 8, 8, 0, -0.005)]
N_DET, N_ANG = 101, 180
THETA = np.linspace(0, 2 * np.pi, N_ANG, endpoint=False)


def _scan(center):
    return ellipse_sinogram(ELL, THETA, N_DET, center)


@pytest.mark.parametrize("center", [20.0, 20.5, 80.0])
def test_stitched_sinogram_is_the_full_width_sinogram(center):
    """Axis on a pixel or half pixel: the stitched sinogram equals the analytic sinogram of a
    detector wide enough for the whole sample (float32 precision), left or right edge."""
    first, width, c180 = stitched_geometry(N_DET, center)
    out, th180, c_out = stitch_360(_scan(center)[:, None], THETA, center)
    ref = ellipse_sinogram(ELL, THETA[:N_ANG // 2], width, c180)
    assert out.shape == (N_ANG // 2, 1, width) and c_out == c180
    np.testing.assert_allclose(out[:, 0], ref, atol=1e-6)
    np.testing.assert_array_equal(th180, THETA[:N_ANG // 2].astype(np.float32))


def test_subpixel_axis_reconstruction_matches_full_width():
    """Axis 23.3 px (the mirrored half is shifted by 0.6 px): the stitched reconstruction
    matches the full-width one to 2 % of the object's contrast (RMS inside the circle),
    less than the full-width FBP's own error against the phantom."""
    from tomodl.sim.analytic import rasterize_ellipses

    c = 23.3
    out, th180, c180 = stitch_360(_scan(c)[:, None], THETA, c)
    width = out.shape[-1]
    ref = ellipse_sinogram(ELL, th180, width, c180).astype(np.float32)
    rec = fbp(np.swapaxes(out, 0, 1), th180, c180)[0]
    rref = fbp(ref[None], th180, c180)[0]
    yy, xx = np.mgrid[:width, :width]
    inside = np.hypot(yy - (width - 1) / 2, xx - (width - 1) / 2) < width / 2 - 2
    err = np.sqrt(np.mean((rec - rref)[inside] ** 2))
    assert err < 0.02 * 0.02
    truth = rasterize_ellipses(ELL, width)
    assert err < np.sqrt(np.mean((rref - truth)[inside] ** 2))


@pytest.mark.parametrize("center", [20.0, 23.3, 80.0, 70.5])
def test_axis_found_automatically(center):
    rng = np.random.default_rng(1)
    s = _scan(center) + rng.normal(0, 0.01, (N_ANG, N_DET))
    assert abs(find_center_360(s, THETA) - center) < 0.15


def test_rows_are_independent():
    """Stitching row by row equals stitching the whole stack (row chunks are exact)."""
    rng = np.random.default_rng(0)
    tomo = rng.random((N_ANG, 5, N_DET)).astype(np.float32)
    whole = stitch_360(tomo, THETA, 30.2)[0]
    parts = np.concatenate([stitch_360(tomo[:, r:r + 2], THETA, 30.2)[0]
                            for r in range(0, 5, 2)], axis=1)
    np.testing.assert_array_equal(whole, parts)


def test_bad_angles_name_the_fix():
    with pytest.raises(ValueError, match="--end-proj"):
        stitch_360(np.ones((181, 1, 8)), np.linspace(0, 2 * np.pi, 181), 2.0)
    with pytest.raises(ValueError, match="opposite"):
        stitch_360(np.ones((180, 1, 8)), np.linspace(0, np.pi, 180), 2.0)
    with pytest.raises(ValueError, match="off the"):
        stitch_360(np.ones((180, 1, 8)), THETA, 9.0)
