# SPDX-License-Identifier: BSD-3-Clause
"""Filters: TomoPy's names, windows and filter_par defaults; the band-limited ramp."""
from __future__ import annotations

import numpy as np
import pytest

from tomodl.recon.filters import FILTERS, filter_parameters, get_filter, ramp_response

# TomoPy gridrec's filter functions (filters.c), written out independently at x = j / n.
TOMOPY = {
    "none": lambda x, p: np.ones_like(x),
    "ramlak": lambda x, p: np.abs(2 * x),
    "shepp": lambda x, p: np.abs(2 * x) * np.sinc(x),
    "cosine": lambda x, p: np.abs(2 * x) * np.cos(np.pi * x),
    "hann": lambda x, p: np.abs(2 * x) * 0.5 * (1 + np.cos(2 * np.pi * x / p[0])),
    "hamming": lambda x, p: np.abs(2 * x) * (0.54 + 0.46 * np.cos(2 * np.pi * x / p[0])),
    "parzen": lambda x, p: np.abs(2 * x) * (1 - np.abs(x) / p[0]) ** 3,
    "butterworth": lambda x, p: np.abs(2 * x) / (1 + (x / p[0]) ** (2 * p[1])),
}


def test_filter_names_are_tomopys():
    assert set(FILTERS) == set(TOMOPY)


@pytest.mark.parametrize("name", sorted(TOMOPY))
@pytest.mark.parametrize("n", [64, 97])
@pytest.mark.parametrize("par", [None, [0.3, 4.0]])
def test_same_shape_as_tomopy(name, n, par):
    """Away from zero frequency our filter is TomoPy's / 2 (ramp in cycles per pixel)."""
    x = np.fft.rfftfreq(n)
    p = [0.5, 8.0] if par is None else par
    ours = get_filter(name, n, par).astype(np.float64)
    assert ours.shape == (n // 2 + 1,) and get_filter(name, n, par).dtype == np.float32
    want = TOMOPY[name](x, p) / 2
    if FILTERS[name].ramp:  # tomodl's ramp is Kak-Slaney's band-limited |x|
        want = want * ramp_response(n) / np.where(x > 0, x, 1.0)
    np.testing.assert_allclose(ours[1:], want[1:], rtol=1e-5, atol=1e-7)


def test_tomopy_defaults_visible():
    """filter_par defaults [0.5, 8]: hann/hamming dip at x = 1/4, butterworth halves at Nyquist."""
    n = 64
    r = ramp_response(n)
    assert abs(get_filter("hann", n)[16]) < 1e-6
    assert get_filter("hann", n)[32] == pytest.approx(r[32], rel=1e-5)
    assert get_filter("hamming", n)[16] == pytest.approx(0.08 * r[16], rel=1e-4)
    assert get_filter("butterworth", n)[32] == pytest.approx(0.5 * r[32], rel=1e-5)
    assert abs(get_filter("parzen", n)[32]) < 1e-7
    np.testing.assert_allclose(get_filter("ramlak", n), r.astype(np.float32))


def test_ramp_is_band_limited_ramp():
    for n in (16, 63, 1024):
        r = ramp_response(n)
        x = np.fft.rfftfreq(n)
        assert 0 < r[0] < 2.0 / n  # small positive DC of the truncated kernel
        assert np.all(np.abs(r[1:] - x[1:]) < 0.25 / n)  # within a quarter of a frequency bin


def test_filter_parameters():
    np.testing.assert_array_equal(filter_parameters(None), [0.5, 8.0])
    np.testing.assert_array_equal(filter_parameters(0.25), [0.25, 8.0])
    np.testing.assert_array_equal(filter_parameters([0.2, 3, 99]), [0.2, 3.0])
    for bad in ([np.nan], [], [0.0]):
        with pytest.raises(ValueError, match="filter_par"):
            filter_parameters(bad)


def test_unknown_filter_lists_choices():
    with pytest.raises(ValueError, match="butterworth.*|choose one of"):
        get_filter("gaussian", 64)
    with pytest.raises(ValueError, match="at least 2"):
        get_filter("shepp", 1)
