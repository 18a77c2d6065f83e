# SPDX-License-Identifier: BSD-3-Clause
"""tomodl.training: the recipe lowers the loss, resume is exact, amp runs on the CPU, configs
fail with one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from click.testing import CliRunner  # noqa: E402

from tomodl.cli.train import train as train_cmd  # noqa: E402
from tomodl.normalization import Policy  # noqa: E402
from tomodl.training import data as D  # noqa: E402
from tomodl.training.config import (ConfigError, from_mapping, load_config,  # noqa: E402
                                    to_toml)
from tomodl.training.figures import HISTORY_COLUMNS, read_history  # noqa: E402
from tomodl.training.toy import write_toy_pairs  # noqa: E402
from tomodl.training.trainer import train  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = {"model_args": {"base_filters": 4, "depth": 3}, "crop_size": 32, "batch_size": 4,
        "lr": 3e-3, "threads": 1}   # 1 thread: tiny ops stall on a busy 2-core machine


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    # odd, non-square slices: crops are 32x32, validation runs on whole 37x41 slices
    path = tmp_path_factory.mktemp("pairs") / "toy.h5"
    return str(write_toy_pairs(path, counts={"train": 12, "val": 3, "test": 2}, size=(37, 41)))


def _cfg(pairs, out, **kw):
    return from_mapping({"data": [pairs], "out": str(out), **TINY, **kw})


def test_training_lowers_the_validation_loss_below_fbp(pairs, tmp_path):
    cfg = _cfg(pairs, tmp_path / "run", arch="resattunet", epochs=4)
    res = train(cfg, progress=False)
    # the residual network starts as the identity: its validation loss is FBP's
    store = D.SliceStore([pairs], "val", Policy())
    x, y = (np.stack([store.crop(j, 0, 0, store.shape)[k] for j in range(len(store))])
            for k in (0, 1))
    fbp_loss = float(np.mean((x - y) ** 2))
    assert res.history[0]["val_loss"] == pytest.approx(fbp_loss, rel=0.1)
    assert res.best_val_loss < 0.97 * fbp_loss
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    # the exported best epoch is a weights folder that create_model loads
    from tomodl import create_model
    from tomodl.models.weights import read_config

    net = create_model("resattunet", pretrained=res.weights)
    wcfg = read_config(res.weights)
    assert wcfg.sparse_factor == 20 and wcfg.filter_name == "shepp"
    assert wcfg.extra["metrics"]["epoch"] == res.best_epoch
    assert wcfg.normalization == Policy().to_dict()
    assert sum(p.numel() for p in net.parameters()) > 0


def test_resume_continues_exactly(pairs, tmp_path):
    base = dict(arch="unet", lr_step=1, lr_gamma=0.5)
    full = train(_cfg(pairs, tmp_path / "full", epochs=4, **base), progress=False)
    train(_cfg(pairs, tmp_path / "part", epochs=2, **base), progress=False)
    resumed = train(_cfg(pairs, tmp_path / "part", epochs=4, **base), resume=True,
                    progress=False)
    for a, b in zip(full.history, resumed.history):
        for key in ("epoch", "train_loss", "val_loss", "lr"):
            assert a[key] == b[key], key
    assert [r["lr"] for r in resumed.history] == [3e-3, 1.5e-3, 7.5e-4, 3.75e-4]
    from safetensors.torch import load_file

    ck = "checkpoints/epoch_004/model.safetensors"
    wa, wb = load_file(str(tmp_path / "full" / ck)), load_file(str(tmp_path / "part" / ck))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # optimizer/scheduler/RNG states load without unpickling arbitrary objects
    state = torch.load(tmp_path / "part/checkpoints/epoch_004/state.pt", weights_only=True)
    assert state["epoch"] == 4 and "exp_avg" in state["optimizer"]["state"][0]
    hist = read_history(tmp_path / "part" / "metrics.csv")
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4]
    assert (tmp_path / "part" / "loss.png").stat().st_size > 1000


def test_amp_trains_on_cpu_in_bfloat16(pairs, tmp_path):
    # also reads the crops from the HDF5 file on demand instead of holding the split in RAM
    res = train(_cfg(pairs, tmp_path / "amp", arch="unet", epochs=1, precision="amp",
                     in_memory=False), progress=False)
    assert np.isfinite(res.history[0]["train_loss"])
    assert np.isfinite(res.history[0]["val_loss"])
    state = torch.load(tmp_path / "amp/checkpoints/epoch_001/state.pt", weights_only=True)
    assert state["scaler"] == {}      # no loss scaling for bfloat16


def test_resume_guards(pairs, tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint"):
        train(_cfg(pairs, tmp_path / "none", arch="unet", epochs=1), resume=True)


def test_epoch_plan_is_the_same_for_any_number_of_processes():
    plan = D.epoch_plan(10, (40, 40), 32, seed=3, epoch=5, augment=True)
    again = D.epoch_plan(10, (40, 40), 32, seed=3, epoch=5, augment=True)
    assert np.array_equal(plan.order, again.order) and np.array_equal(plan.rot, again.rot)
    one = D.rank_batch(plan, 1, batch_size=4, rank=0, world=1)
    two = np.concatenate([D.rank_batch(plan, 1, batch_size=2, rank=r, world=2) for r in (0, 1)])
    assert np.array_equal(one, two)
    other = D.epoch_plan(10, (40, 40), 32, seed=3, epoch=6, augment=True)
    assert not np.array_equal(plan.order, other.order)
    assert D.n_steps(10, 4) == 2


def test_config_roundtrip_and_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('data = ["a.h5"]\nepochs = 3\n[model_args]\nbase_filters = 8\n')
    cfg = load_config(str(path), ["lr=1e-3", "model_args.depth=4", "precision=amp"])
    assert cfg.lr == 1e-3 and cfg.precision == "amp" and cfg.epochs == 3
    assert dict(cfg.model_args) == {"base_filters": 8, "depth": 4}
    assert cfg.adam_eps == 1e-7 and cfg.lr_gamma == 0.95 and cfg.lr_step == 10  # the paper
    path.write_text(to_toml(cfg))
    assert load_config(str(path)) == cfg


@pytest.mark.parametrize("args, message", [
    (["--set", "lr=-1"], "'lr' must be positive"),
    (["--set", "colour=red"], "unknown config key(s) ['colour']"),
    (["--set", "epochs=1.5"], "'epochs'"),
    (["--precision", "fp16"], "Unknown precision 'fp16'"),
    (["--data", "missing.h5"], "data file 'missing.h5' does not exist"),
    (["--data", "README.md"], "README.md: not an HDF5 pairs file"),
    # model_args get the bounds of a weights folder (tomodl.models.checks), before allocating
    (["--set", "model_args.depth=100"], "model_args.depth = 100 is not an integer in [2, 8]"),
    (["--set", "model_args.base_filters=1e9"], "model_args.base_filters = 1000000000.0 is not"),
    (["--set", "model_args.width=8"], "model_args has unknown keys ['width']"),
    (["--set", "model_args.base_filters=200"], "parameters (at most 100,000,000)"),
    (["--set", "model_args.residual=3"], "model_args.residual = 3 is not true or false"),
    (["--arch", "vgg"], "config key 'arch': Unknown model 'vgg'"),
])
def test_bad_config_fails_with_one_line(pairs, tmp_path, args, message):
    if "--data" not in args:
        args = args + ["--data", pairs]
    elif "README.md" in args:      # not HDF5: refused before the output folder is made
        args = ["--data", str(Path(__file__).resolve().parents[1] / "README.md")]
    res = CliRunner().invoke(train_cmd, args + ["--out-path", str(tmp_path / "o")])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["--profile-arg", "depth=100"], "--profile-arg: model_args.depth = 100 is not an integer"),
    (["--profile-arch", "vgg"], "--profile-arch: Unknown model 'vgg'"),
])
def test_profile_args_are_checked_before_a_child_allocates(tmp_path, args, message):
    from tomodl.cli.evaluate import evaluate as evaluate_cmd

    res = CliRunner().invoke(evaluate_cmd, ["--profile-precision", *args,
                                            "--out-path", str(tmp_path / "e")])
    assert res.exit_code == 2 and message in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "e").exists()


def test_config_checks_model_args_like_weights():
    with pytest.raises(ConfigError, match=r"model_args\.depth = 100 .*--set model_args"):
        from_mapping({"model_args": {"depth": 100}})
    with pytest.raises(ConfigError, match="unknown keys"):
        from_mapping({"arch": "unet", "model_args": {"residual": True, "bogus": 1}})
    cfg = from_mapping({"arch": "unet", "model_args": {"base_filters": 256, "depth": 2}})
    with pytest.raises(ConfigError, match="base_filters"):
        cfg.replace(model_args={"base_filters": 257, "depth": 2})


def test_shipped_configs_are_valid():
    paper = load_config(str(CONFIGS / "paper.toml"))
    assert (paper.epochs, paper.lr, paper.adam_eps, paper.lr_step, paper.lr_gamma) == \
        (65, 3e-4, 1e-7, 10, 0.95)
    assert paper.precision == "amp" and paper.model_args == {"base_filters": 32, "depth": 5,
                                                             "residual": True}
    cpu = load_config(str(CONFIGS / "cpu.toml"))
    assert cpu.arch == "resattunet" and cpu.epochs == 65 and cpu.crop_size % 16 == 0


def test_cli_runs_tiny_toml(pairs, tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(train_cmd, [str(CONFIGS / "tiny.toml"), "--data", pairs, "--out",
                                         str(out), "--arch", "unet", "--epochs", "1", "--set",
                                         "model_args.depth=2", "--no-progress"])
    assert res.exit_code == 0, res.output
    for name in ("config.toml", "metrics.csv", "loss.png", "best/model.safetensors",
                 "best/config.json"):
        assert (out / name).is_file(), name
    assert open(out / "metrics.csv").readline().strip() == ",".join(HISTORY_COLUMNS)
    saved = load_config(str(out / "config.toml"))
    assert saved.model_args == {"base_filters": 4, "depth": 2} and saved.arch == "unet"
    again = CliRunner().invoke(train_cmd, ["--data", pairs, "--out", str(out)])
    assert again.exit_code == 2 and "--resume" in again.output
