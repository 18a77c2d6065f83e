# SPDX-License-Identifier: BSD-3-Clause
"""tomodl evaluate: Table 1 (8-bit and float protocols), Fig. 6, Table 2 profiling."""
from __future__ import annotations

import csv

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from tomodl.cli.evaluate import evaluate as evaluate_cmd  # noqa: E402
from tomodl.metrics import circle_mask  # noqa: E402
from tomodl.training.evaluate import evaluate, image_scores, table_markdown  # noqa: E402
from tomodl.training.toy import write_toy_pairs  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tomodl import create_model
    from tomodl.models.weights import save_weights

    root = tmp_path_factory.mktemp("eval")
    pairs = str(write_toy_pairs(root / "toy.h5", counts={"train": 3, "val": 2, "test": 2},
                                size=(33, 35)))
    torch.manual_seed(0)
    folders = {}
    for name, arch in (("ResAttUnet", "resattunet"), ("UNet", "unet")):
        args = {"base_filters": 4, "depth": 2}
        net = create_model(arch, **args)
        if name == "UNet":   # a perturbed head: no longer the identity
            torch.nn.init.normal_(net.head.weight, std=0.05)
        folders[name] = str(save_weights(net, root / name, arch=arch, model_args=args))
    return root, pairs, folders


def test_float_protocol_is_exact_and_8bit_close():
    rng = np.random.default_rng(0)
    label = rng.uniform(2.0, 3.0, (40, 40))
    lo, hi = label.min(), label.max()
    pred = label + 0.1 * (hi - lo)              # MSE = 0.01 range^2 -> 20 dB
    sc = image_scores(pred, label, None)
    assert sc["float_psnr"] == pytest.approx(20.0, abs=1e-9)
    # 8 bits: the same offset, but the top 10 % of the prediction clips at 255
    assert 20.0 < sc["8bit_psnr"] < 21.5
    assert image_scores(label, label, circle_mask(label.shape))["float_ssim"] == pytest.approx(1)
    assert image_scores(label, np.full_like(label, 2.0), None) is None   # no range: skipped


def test_identity_network_scores_like_fbp(setup):
    _, pairs, folders = setup
    res = evaluate(pairs, {"ResAttUnet": folders["ResAttUnet"]}, mask=True)
    assert res.splits == ["train", "val", "test"] and res.n_images == {"train": 3, "val": 2,
                                                                         "test": 2}
    for split in res.splits:   # an untrained residual network returns its input
        for key in ("8bit_psnr", "float_psnr", "float_ssim"):
            assert res.mean("ResAttUnet", split, key) == pytest.approx(
                res.mean("FBP", split, key), abs=1e-3)


def test_cli_writes_table1_and_fig6(setup):
    root, pairs, folders = setup
    out = root / "out"
    res = CliRunner().invoke(evaluate_cmd, [pairs, "--model", f"ResAttUnet={folders['ResAttUnet']}",
                                            "--model", f"UNet={folders['UNet']}", "--mask",
                                            "--out", str(out)])
    assert res.exit_code == 0, res.output
    md = (out / "table1.md").read_text()
    assert "| Model | PSNR train | PSNR val | PSNR test | SSIM train |" in md
    assert "| images | 3 | 2 | 2 | 3 | 2 | 2 |" in md
    rows = list(csv.DictReader(open(out / "table1.csv")))
    assert len(rows) == 3 * 3 * 2       # methods x sets x protocols
    unet = [r for r in rows if r["method"] == "UNet" and r["protocol"] == "float"]
    fbp = [r for r in rows if r["method"] == "FBP" and r["protocol"] == "float"]
    assert [float(r["psnr"]) for r in unet] != [float(r["psnr"]) for r in fbp]
    assert (out / "fig6.png").stat().st_size > 5000


def test_cli_errors_are_one_line(setup):
    root, pairs, folders = setup
    for args in ([pairs, "--model", "nameonly"], [], [pairs, "--split", "bogus"],
                 [pairs, "--model", f"X={root / 'missing'}"]):
        res = CliRunner().invoke(evaluate_cmd, args + ["--out", str(root / "e")])
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output


def test_profile_precision_writes_table2(setup, tmp_path):
    res = CliRunner().invoke(evaluate_cmd, ["--profile-precision", "--profile-arch", "unet",
                                            "--profile-size", "32", "--profile-steps", "1",
                                            "--profile-arg", "base_filters=4",
                                            "--profile-arg", "depth=2", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "table2.md").read_text()
    assert "| unet |" in md and "memory saving" in md
    rows = list(csv.DictReader(open(tmp_path / "table2.csv")))
    assert {r["precision"] for r in rows} == {"fp32", "amp"}
    assert all(float(r["peak_mib"]) > 0 and float(r["seconds"]) > 0 for r in rows)


def test_empty_splits_are_left_out(tmp_path):
    """A held-out file (``--fractions 0,0,1``) has empty /train and /val: only /test is scored."""
    import h5py

    pairs = str(write_toy_pairs(tmp_path / "held.h5", counts={"train": 1, "val": 1, "test": 2},
                                size=(33, 35)))
    with h5py.File(pairs, "r+") as f:      # as make_pairs writes it: empty, resizable groups
        for split in ("train", "val"):
            for name in ("input", "target"):
                data = f[split][name][()]
                del f[split][name]
                f[split].create_dataset(name, data=data[:0], maxshape=(None, *data.shape[1:]))
    res = evaluate(pairs, {})
    assert res.splits == ["test"] and res.n_images == {"test": 2}
    assert "nan" not in table_markdown(res)


def test_max_slices_scores_exactly_that_many(setup):
    _, pairs, folders = setup
    res = evaluate(pairs, {"UNet": folders["UNet"]}, max_slices=2, splits=("train",))
    assert res.n_images == {"train": 2}
    assert len(res.scores[("UNet", "train")]) == 2 == len(res.scores[("FBP", "train")])
