# SPDX-License-Identifier: BSD-3-Clause
"""Interoperability with ``tomopy.recon(..., algorithm="gridrec")`` on TomoPy's own outputs.

Fixtures come from ``../shared/peer/tomopy`` (see its README) and ``../shared/data/tooth.h5``;
the tests skip when they are absent.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_erosion, shift, uniform_filter

from tomodl.recon.fbp import METHODS, fbp
from tomodl.recon.filters import FILTERS, filter_parameters
from tomodl.recon.geometry import default_center, grid_origin, image_coordinates

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
PEER = SHARED / "peer" / "tomopy"
TOOTH = SHARED / "data" / "tooth.h5"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared fixture not found: {path}")
    return path


def _inside(n, margin=1.0):
    x, y = image_coordinates(n)
    return x[None, :] ** 2 + y[:, None] ** 2 < (n / 2 - margin) ** 2


def _corr(a, b, mask):
    return float(np.corrcoef(a[..., mask].ravel(), b[..., mask].ravel())[0, 1])


def flat_ratio(ref, rec, mask):
    """Median of ``ref / rec`` over flat, bright pixels (low local variation)."""
    ratios = []
    for r, g in zip(rec, ref):
        local_var = uniform_filter(r**2, 5) - uniform_filter(r, 5) ** 2
        flat = binary_erosion(mask, iterations=3) & (r > 0.3 * r[mask].max())
        flat &= local_var < np.quantile(local_var[flat], 0.3)
        ratios.append(g[flat] / r[flat])
    return float(np.median(np.concatenate(ratios)))


# Legendre coefficients of gridrec's prolate-spheroidal gridding kernel (gridrec.c).
_PSWF = [0.5767616e02, -0.8931343e02, 0.4167596e02, -0.1053599e02, 0.1662374e01, -0.1780527e00,
         0.1372983e-01, -0.7963169e-03, 0.3593372e-04, -0.1295941e-05, 0.3817796e-07]


def _pswf_tables(pdim):
    """gridrec's kernel table ``wtbl`` (513 samples of ``|t| <= 2``) and correction ``winv``."""
    coefs = np.zeros(21)
    coefs[0::2] = _PSWF
    wtbl = np.polynomial.legendre.legval(np.arange(513) / 512, coefs)
    wtbl /= wtbl[0]
    m02 = pdim // 2 - 1
    i = np.arange(1, m02 + 1)
    norm = np.sqrt(np.pi / 2 / 7.0 / 0.99998546) / 1.2
    side = norm * (-1.0) ** i / wtbl[np.round(i * 512 / (m02 + 0.5)).astype(int)]
    # gridrec reads one entry past the end of winv when n_det == pdim: extend the pattern.
    winv = np.concatenate([side[::-1], [norm], side, [-side[-1]]])
    return wtbl, winv


def _gridrec_weights(theta, pdim, wtbl):
    """Cells and weights of gridrec's 5 x 5 gridding of the points j (cos, sin), 0 < j < pdim/2."""
    j = np.arange(1, pdim // 2)
    cells, weights = [], []
    for trig in (np.cos, np.sin):
        c = j[None, :] * trig(theta)[:, None] + pdim // 2
        cell = np.ceil(c - 2)[..., None] + np.arange(5)
        ok = (cell <= np.floor(c + 2)[..., None]) & (cell >= 1) & (cell <= pdim - 1)
        w = wtbl[np.minimum(np.round(np.abs(c[..., None] - cell) * 256).astype(int), 512)]
        cells.append(cell.astype(int) % pdim)
        weights.append(np.where(ok, w, 0.0))
    (cu, cv), (wu, wv) = cells, weights
    w = (wu[..., :, None] * wv[..., None, :]).ravel()
    direct = (cu[..., :, None] * pdim + cv[..., None, :]).ravel()
    mu, mv = (pdim - cu) % pdim, (pdim - cv) % pdim
    mirror = (mu[..., :, None] * pdim + mv[..., None, :]).ravel()
    return direct, mirror, w


def gridrec_emulator(sino, theta, center=None, filter_name="shepp", filter_par=None):
    """TomoPy 1.15 gridrec re-implemented in numpy from ``gridrec.c`` (float64), for tests.

    Same zero padding to ``pdim`` (next power of two >= n_det, >= 16), PSWF gridding kernel
    and tables, filter evaluated at ``j / pdim`` with the zero frequency dropped, two slices per
    complex FFT, checkerboard, deapodization and output grid.  ``sino`` is
    ``(rows, n_angles, n_det)``; returns ``(rows, n_det, n_det)`` float32.  Validated against
    TomoPy's own outputs by :func:`test_emulator_reproduces_gridrec`.
    """
    rows, n_ang, n = sino.shape
    center = np.broadcast_to(n / 2 if center is None else center, (rows,))
    pdim = max(16, 1 << int(np.ceil(np.log2(n))))
    wtbl, winv = _pswf_tables(pdim)
    direct, mirror, w = _gridrec_weights(theta, pdim, wtbl)
    j = np.arange(1, pdim // 2)
    spec = FILTERS[filter_name]
    filt = spec.window(j / pdim, filter_parameters(filter_par))
    filt = filt * (2 * j / pdim if spec.ramp else 1.0) * np.pi / pdim / n_ang
    pad = (pdim - n) // 2
    idx = (np.arange(n) - (pdim // 2 - pad)) % pdim
    corr = winv[np.arange(n) + pad]
    out = np.empty((rows + rows % 2, n, n))
    data = np.concatenate([sino, np.zeros_like(sino[: rows % 2])]).astype(np.float64)
    for s in range(0, rows, 2):
        f = np.fft.ifft(data[s] + 1j * data[s + 1], n=pdim, axis=-1) * pdim
        phase = filt * np.exp(-2j * np.pi * j * center[s] / pdim)
        grid = np.zeros(pdim * pdim, complex)
        for cells, coef in ((direct, phase * f[:, j]), (mirror, np.conj(phase) * f[:, pdim - j])):
            v = w * np.repeat(coef, 25)
            grid += np.bincount(cells, v.real, pdim**2) + 1j * np.bincount(cells, v.imag, pdim**2)
        img = np.fft.fft2(grid.reshape(pdim, pdim))[np.ix_(idx, idx)] * np.outer(corr, corr)
        out[s], out[s + 1] = img.real.T[::-1], img.imag.T[::-1]  # row N - 1 - k, column j
    return out[:rows].astype(np.float32)


@pytest.fixture(scope="module")
def tooth():
    """Two sinograms of the real tooth scan, its angles and TomoPy's gridrec result."""
    import h5py

    with h5py.File(_need(TOOTH), "r") as f:
        data = f["exchange/data"][...]
        flat = f["exchange/data_white"][...].mean(axis=0)
        dark = f["exchange/data_dark"][...].mean(axis=0)
        theta = np.deg2rad(f["exchange/theta"][...])
    p = -np.log((data - dark) / (flat - dark))
    ref = np.load(_need(PEER / "tooth_gridrec_shepp.npy"))
    return np.swapaxes(p, 0, 1).astype(np.float32), theta, ref


@pytest.fixture(scope="module")
def tooth_rec(tooth):
    sino, theta, _ = tooth
    return {name: fbp(sino, theta, 295.9, method=name) for name in METHODS}


def test_emulator_reproduces_gridrec(tooth):
    """The numpy gridrec above matches TomoPy's own output (so it can stand in for it)."""
    sino, theta, ref = tooth
    emu = gridrec_emulator(sino, theta, 295.9)
    assert np.abs(emu - ref).max() < 1e-3 * np.abs(ref).max()
    proj = np.load(_need(PEER / "proj.npy"))
    for name in ("shepp", "ramlak"):
        ref = np.load(PEER / f"gridrec_{name}.npy")
        theta = np.load(PEER / "angle.npy")
        emu = gridrec_emulator(np.swapaxes(proj, 0, 1), theta, filter_name=name)
        assert _corr(emu, ref, np.ones((48, 48), bool)) > 0.99998


@pytest.mark.parametrize("filter_name", ["shepp", "ramlak"])
def test_tomopy_test_fixtures(filter_name):
    """16 angles x 48 px, default centre (n_det / 2): the same image as TomoPy's gridrec."""
    proj = np.load(_need(PEER / "proj.npy"))
    theta = np.load(PEER / "angle.npy")
    ref = np.load(PEER / f"gridrec_{filter_name}.npy")
    inside = _inside(48)
    for name in METHODS:
        rec = fbp(np.swapaxes(proj, 0, 1), theta, filter_name=filter_name, method=name)
        assert rec.shape == ref.shape
        assert _corr(rec, ref, inside) >= 0.98


@pytest.mark.parametrize("name", sorted(METHODS))
def test_tooth_matches_gridrec(tooth, tooth_rec, name):
    """Real scan, centre 295.9: gridrec's image; gridrec is ~11 % higher in flat regions."""
    _, _, ref = tooth
    inside = _inside(640, 2)
    assert _corr(tooth_rec[name], ref, inside) >= 0.99
    assert 1.08 < flat_ratio(ref, tooth_rec[name], inside) < 1.15


@pytest.mark.parametrize("filter_name", sorted(FILTERS))
def test_same_filter_same_image(tooth, filter_name):
    """Every filter name gives gridrec's image (emulated), with the default filter_par."""
    sino, theta, _ = tooth
    rec = fbp(sino[:1], theta, 295.9, filter_name=filter_name)
    emu = gridrec_emulator(sino[:1], theta, 295.9, filter_name=filter_name)
    assert _corr(rec, emu, _inside(640, 2)) >= 0.995


def test_tooth_grid_and_orientation(tooth, tooth_rec):
    """Half-pixel shifts or flips of our image only lower the correlation with gridrec."""
    _, _, ref = tooth
    rec, ref = tooth_rec["fourier"][0], ref[0]
    inside = _inside(640, 4)
    best = _corr(rec, ref, inside)
    for d in [(0.5, 0), (-0.5, 0), (0, 0.5), (0, -0.5)]:
        assert _corr(shift(rec, d, order=3), ref, inside) < best
    assert _corr(rec[::-1], ref, inside) < 0.8
    assert _corr(rec[:, ::-1], ref, inside) < 0.8


def test_grid_definitions():
    assert default_center(48) == 24.0 and default_center(47) == 23.5
    assert grid_origin(48) == 24.0 and grid_origin(47) == 24.0
    x, y = image_coordinates(4)
    np.testing.assert_array_equal(x, [-2, -1, 0, 1])
    np.testing.assert_array_equal(y, [1, 0, -1, -2])
    x, y = image_coordinates(5)
    np.testing.assert_array_equal(x, [-3, -2, -1, 0, 1])
    np.testing.assert_array_equal(y, [1, 0, -1, -2, -3])


def test_odd_grid_matches_gridrec_grid():
    """Odd sizes: gridrec's grid puts the axis one pixel right of and above the centre."""
    from tomodl.sim.analytic import ellipse_sinogram

    n = 47
    blob = np.array([(0.0, 0.0, 12.0, 7.0, 0.4, 0.01), (5.0, -4.0, 3.0, 3.0, 0.0, 0.02)])
    theta = np.linspace(0, np.pi, 90, endpoint=False)
    sino = ellipse_sinogram(blob, theta, n, 23.5)[None].astype(np.float32)
    rec = fbp(sino, theta)
    emu = gridrec_emulator(sino, theta)
    inside = _inside(n, 2)
    best = _corr(rec, emu, inside)
    assert best > 0.99
    for d in [(1, 0), (-1, 0), (0, 1), (0, -1)]:
        assert _corr(np.roll(rec, d, axis=(1, 2)), emu, inside) < best


# -- issue 11: what a TomoPy script passes to tomodl.recon ------------------------------------
def test_tomopy_gridrec_call_runs_as_tomodls_fbp(caplog):
    import tomodl
    from tests.conftest import make_lineint

    theta = np.linspace(0, np.pi, 33, endpoint=False).astype(np.float32)
    proj = make_lineint(theta, 2, 37, 17.3)
    with caplog.at_level("INFO", logger="tomodl"):
        rec = tomodl.recon(proj, theta, center=17.3, algorithm="gridrec", init_recon=None,
                           ncore=1, nchunk=None, filter_name="shepp")
    np.testing.assert_array_equal(rec, tomodl.recon(proj, theta, 17.3, algorithm="fbp"))
    assert any("tomodl's FBP" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("kwargs, match", [
    (dict(algorithm="sirt"), "TomoPy's iterative methods.*'fbp', 'fbp\\+resattunet'.*tomopy"),
    (dict(algorithm="art"), "TomoPy's iterative methods"),
    (dict(algorithm="gridrec", init_recon=np.zeros((2, 37, 37), np.float32)),
     "init_recon .*drop init_recon"),
])
def test_what_tomodl_cannot_do_is_refused_naming_the_options(kwargs, match):
    import tomodl
    from tomodl.errors import TomodlError

    theta = np.linspace(0, np.pi, 33, endpoint=False)
    with pytest.raises(TomodlError, match=match):
        tomodl.recon(np.zeros((33, 2, 37), np.float32), theta, **kwargs)
