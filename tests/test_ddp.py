# SPDX-License-Identifier: BSD-3-Clause
"""Two CPU processes (gloo) with batch b compute the same training as one process with batch 2b.

The epoch's random choices are drawn for the global batch and split across ranks, gradients are
averaged by DistributedDataParallel, and batch-norm statistics are synchronized
(GlooSyncBatchNorm, since torch's SyncBatchNorm runs only on GPUs).  What remains is float
rounding: sums are reduced in a different order, so losses agree to ~1e-7 relative and weights
after 4 Adam steps to ~1e-5 relative.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tomodl.training.distributed import launch_local  # noqa: E402
from tomodl.training.figures import read_history  # noqa: E402
from tomodl.training.toy import write_toy_pairs  # noqa: E402
from tomodl.training.trainer import train_mapping  # noqa: E402


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed missing")
def test_two_gloo_processes_match_one_process(tmp_path):
    pairs = str(write_toy_pairs(tmp_path / "toy.h5", counts={"train": 8, "val": 3, "test": 1},
                                size=(36, 36)))
    base = {"data": [pairs], "arch": "resattunet", "epochs": 1, "crop_size": 32, "lr": 3e-3,
            "model_args": {"base_filters": 4, "depth": 3}}
    train_mapping({**base, "out": str(tmp_path / "one"), "batch_size": 4, "threads": 1})
    launch_local(train_mapping, 2, {**base, "out": str(tmp_path / "two"), "batch_size": 2})

    one = read_history(tmp_path / "one/metrics.csv")
    two = read_history(tmp_path / "two/metrics.csv")
    for a, b in zip(one, two):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-5)
    from safetensors.torch import load_file

    ck = "checkpoints/epoch_001/model.safetensors"
    wa, wb = load_file(str(tmp_path / "one" / ck)), load_file(str(tmp_path / "two" / ck))
    assert wa.keys() == wb.keys()
    for k in wa:   # includes the batch-norm running statistics
        if wa[k].is_floating_point():
            scale = float(wa[k].abs().max()) + 1e-6
            assert float((wa[k] - wb[k]).abs().max()) <= 1e-4 * scale, k
        else:
            assert torch.equal(wa[k], wb[k]), k
    # only rank 0 wrote files, and the exported weights load as a plain network
    from tomodl import create_model

    create_model("resattunet", pretrained=tmp_path / "two" / "best")
