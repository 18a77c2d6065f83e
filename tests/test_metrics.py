# SPDX-License-Identifier: BSD-3-Clause
"""tomodl.metrics: invented structure (features of an output that the truth does not have)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tomodl.metrics import circle_mask, invented_features


def _truth(shape=(41, 47)):
    """A disc of 0.5 on 0.1 (one true feature), odd and unequal sides."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    return np.where((yy - 20) ** 2 + (xx - 15) ** 2 <= 36, 0.5, 0.1).astype(np.float32)


def test_blob_absent_from_truth_is_counted_with_its_area():
    truth = _truth()
    out = truth.copy()
    out[10:16, 32:38] = 0.6              # a 6 x 6 bright blob where the truth is flat
    labels, count, area = invented_features(out, truth, data_range=0.4, sigma=0.0)
    assert count == 1
    assert area == 36
    assert np.array_equal(labels > 0, out != truth)
    # smoothed (the default, sigma 1 px), the strong blob spreads by about 1 px each side
    _, count, area = invented_features(out, truth, data_range=0.4)
    assert count == 1 and 36 < area <= 64


def test_blurred_and_shifted_true_feature_is_not_invented():
    truth = _truth()
    blurred = ndimage.gaussian_filter(truth, 1.5)
    shifted = np.roll(truth, 2, axis=1)   # edges displaced by 2 px stay in the local range
    for out in (blurred, shifted):
        assert invented_features(out, truth, data_range=0.4)[1:] == (0, 0)


def test_small_features_margin_and_mask():
    truth = _truth()
    out = truth.copy()
    out[5:7, 40] = 0.3                    # 2 px: below min_px
    out[30:35, 35:40] = 0.12              # 0.02 above the truth: inside the 0.1 * 0.4 margin
    assert invented_features(out, truth, data_range=0.4, sigma=0.0)[1] == 0
    out[30:35, 35:40] = -0.2              # a dark pore the truth has nowhere nearby
    assert invented_features(out, truth, data_range=0.4, sigma=0.0)[1:] == (1, 25)
    mask = ~np.pad(np.ones((5, 5), bool), ((30, 6), (35, 7)))   # the pore masked out
    assert invented_features(out, truth, data_range=0.4, sigma=0.0, mask=mask)[1] == 0
    assert invented_features(out, truth, data_range=0.4, sigma=0.0, min_px=1)[1] == 2


def test_checks_arguments():
    truth = _truth()
    with pytest.raises(ValueError, match="data_range"):
        invented_features(truth, truth, data_range=0.0)
    with pytest.raises(ValueError, match="shape"):
        invented_features(truth[:-1], truth, data_range=1.0)
    assert invented_features(truth, truth, data_range=1.0,
                             mask=circle_mask(truth.shape))[1:] == (0, 0)
