# SPDX-License-Identifier: BSD-3-Clause
import logging

import numpy as np
import pytest

from tomodl.recon.preprocess import circ_mask, minus_log, normalize


def _warnings(caplog):
    return [r for r in caplog.records if r.levelno == logging.WARNING]


def test_flat_normalizes_to_one_and_counts_round_trip(rng):
    flat = rng.uniform(900, 1100, (5, 3, 7)).astype(np.float32)
    dark = rng.uniform(90, 110, (4, 3, 7)).astype(np.float32)
    f, d = flat.mean(0), dark.mean(0)
    np.testing.assert_allclose(normalize(f[None], flat, dark), 1.0, rtol=1e-6)
    p = rng.uniform(0.0, 3.0, (11, 3, 7))
    counts = d + (f - d) * np.exp(-p)
    out = minus_log(normalize(counts, flat, dark))
    assert out.dtype == np.float32 and out.shape == p.shape
    np.testing.assert_allclose(out, p, atol=1e-4)


def test_dark_none_and_single_images():
    flat = np.full((3, 5), 10.0, np.float32)
    proj = np.full((2, 3, 5), 5.0, np.float32)
    np.testing.assert_allclose(normalize(proj, flat, None), 0.5)
    np.testing.assert_allclose(normalize(proj, flat, np.ones((3, 5))), 4 / 9, rtol=1e-6)


def test_dead_pixels_are_finite_and_warned_once(caplog):
    flat = np.full((2, 2, 6), 10.0, np.float32)
    dark = np.zeros((1, 2, 6), np.float32)
    flat[:, 0, 1] = 0.0          # dead: flat == dark
    flat[:, 1, 4] = -3.0         # flat below dark
    proj = np.full((4, 2, 6), 5.0, np.float32)
    with caplog.at_level(logging.WARNING, logger="tomodl"):
        out = minus_log(normalize(proj, flat, dark))
    assert np.all(np.isfinite(out))
    msgs = [r.getMessage() for r in _warnings(caplog)]
    assert len([m for m in msgs if m.startswith("normalize")]) == 1
    assert "2 of 12 detector pixels" in msgs[0]


def test_minus_log_clips_nonpositive_and_nan(caplog):
    x = np.array([[[1.0, 0.5, 0.0, -0.2, np.nan]]], np.float32)
    with caplog.at_level(logging.WARNING, logger="tomodl"):
        out = minus_log(x)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0, 0, :2], [0.0, np.log(2.0)], atol=1e-6)
    assert out[0, 0, 2] == out[0, 0, 4] == pytest.approx(-np.log(1e-6), rel=1e-5)
    (rec,) = _warnings(caplog)
    assert "3 of 5 values" in rec.getMessage()


def test_cutoff_limits_values():
    flat = np.full((1, 1, 4), 10.0, np.float32)
    proj = np.array([[[5.0, 10.0, 12.0, 20.0]]], np.float32)
    np.testing.assert_allclose(normalize(proj, flat, None, cutoff=1.0)[0, 0], [0.5, 1, 1, 1])


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="flat fields have shape"):
        normalize(np.ones((2, 3, 4)), np.ones((2, 3, 5)), None)
    with pytest.raises(ValueError, match="3-D"):
        normalize(np.ones((3, 4)), np.ones((3, 4)), None)


@pytest.mark.parametrize("n", [7, 8])
def test_circ_mask_matches_the_inscribed_circle(n):
    rec = np.ones((2, n, n), np.float32)
    out = circ_mask(rec, ratio=1.0, val=-1.0)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    inside = yy**2 + xx**2 < (n / 2) ** 2
    assert np.all(out[:, inside] == 1) and np.all(out[:, ~inside] == -1)
    assert np.all(rec == 1)                                   # input untouched
    small = circ_mask(rec[0], ratio=0.5)
    assert small.shape == (n, n) and small.sum() < out[0][inside].sum()
