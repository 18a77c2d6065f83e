# SPDX-License-Identifier: BSD-3-Clause
"""tomodl.sim.pairs.write_slice_pairs: pairs made in memory, in make_pairs' format."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from tomodl.errors import SimulationError
from tomodl.sim.pairs import write_slice_pairs
from tomodl.training.data import SliceStore, policy_for


def _group(split, n, seed, shape=(17, 19)):
    rng = np.random.default_rng(seed)
    y = rng.random((n,) + shape).astype(np.float32)
    return {"split": split, "input": y + 0.1 * rng.standard_normal(y.shape), "target": y,
            "n_angles": np.full(n, 60), "info": {"family": "grains", "seed": seed,
                                                  "center": shape[1] / 2}}


def test_write_slice_pairs_reads_back_like_make_pairs(tmp_path):
    out = write_slice_pairs(tmp_path / "p.h5", [_group("train", 3, 0), _group("val", 2, 1),
                                                _group("train", 1, 2)], sparse=[20])
    with h5py.File(out, "r") as f:
        assert f["train/input"].shape == (4, 17, 19) and f["test/input"].shape[0] == 0
        assert list(f["train/phantom"][:]) == [0, 0, 0, 2]
        meta = json.loads(f.attrs["metadata"])
    assert meta["format"] == "tomodl-pairs" and meta["sparse_factor"] == 20
    assert [s["split"] for s in meta["sources"]] == ["train", "val", "train"]
    assert meta["sources"][1]["n_angles_used"] == [60] and meta["seeds"] == [0, 1, 2]
    store = SliceStore([str(out)], "val", policy_for([str(out)]))
    assert len(store) == 2 and store.shape == (17, 19)


def test_write_slice_pairs_refuses_bad_groups(tmp_path):
    with pytest.raises(SimulationError, match="unknown split"):
        write_slice_pairs(tmp_path / "a.h5", [_group("training", 1, 0)], sparse=[20])
    bad = _group("train", 2, 0)
    bad["input"] = bad["input"][:1]
    with pytest.raises(SimulationError, match="group 0"):
        write_slice_pairs(tmp_path / "b.h5", [bad], sparse=[20])
    assert not (tmp_path / "b.h5").exists()
