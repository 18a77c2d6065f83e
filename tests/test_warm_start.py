# SPDX-License-Identifier: BSD-3-Clause
"""tomodl.training: warm start from a weights folder (config key ``init``) and the wall-clock
stop (``max_minutes``)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tomodl.models.registry import shipped_weights  # noqa: E402
from tomodl.training.config import (ConfigError, from_mapping, init_source,  # noqa: E402
                                    load_config, to_toml)
from tomodl.training.figures import read_history  # noqa: E402
from tomodl.training.toy import write_toy_pairs  # noqa: E402
from tomodl.training.trainer import train, warm_start_state  # noqa: E402

TINY = {"arch": "unet", "model_args": {"base_filters": 4, "depth": 3}, "crop_size": 32,
        "batch_size": 4, "lr": 3e-3, "threads": 1}


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    path = tmp_path_factory.mktemp("pairs") / "toy.h5"
    return str(write_toy_pairs(path, counts={"train": 8, "val": 3, "test": 1}, size=(33, 35)))


@pytest.fixture(scope="module")
def trained(pairs, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "a"
    return train(from_mapping({"data": [pairs], "out": str(out), "epochs": 2, **TINY}),
                 progress=False)


def _cfg(pairs, out, **kw):
    return from_mapping({"data": [pairs], "out": str(out), **{**TINY, **kw}})


def test_warm_start_loads_the_weights_and_is_recorded(pairs, trained, tmp_path):
    from safetensors.torch import load_file

    from tomodl.models.weights import read_config

    cfg = _cfg(pairs, tmp_path / "b", init=str(trained.weights), epochs=1, lr=1e-12)
    state = warm_start_state(cfg)
    saved = load_file(str(trained.weights / "model.safetensors"))
    assert set(state) == set(saved)
    assert all(torch.equal(state[k], saved[k].to(state[k].dtype)) for k in saved)
    res = train(cfg, progress=False)
    # with a vanishing learning rate the first epoch validates the loaded network
    assert res.history[0]["val_loss"] == pytest.approx(trained.best_val_loss, rel=0.05)
    assert load_config(str(tmp_path / "b" / "config.toml")).init == str(trained.weights)
    assert read_config(res.weights).extra["training_config"]["init"] == str(trained.weights)


def test_warm_start_refuses_another_network(pairs, trained, tmp_path):
    with pytest.raises(ConfigError, match="init.*base_filters"):
        train(_cfg(pairs, tmp_path / "c", init=str(trained.weights),
                   model_args={"base_filters": 8, "depth": 3}), progress=False)
    with pytest.raises(ConfigError, match="'unet'.*'resattunet'"):
        train(_cfg(pairs, tmp_path / "d", init=str(trained.weights), arch="resattunet"),
              progress=False)
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_init_names_a_release_or_a_folder(tmp_path):
    assert init_source("resattunet") == shipped_weights("resattunet")
    with pytest.raises(ConfigError, match="neither a released model"):
        init_source(str(tmp_path / "nowhere"))


def test_max_minutes_stops_after_an_epoch_and_resume_continues(pairs, tmp_path):
    out = tmp_path / "t"
    res = train(_cfg(pairs, out, epochs=3, max_minutes=1e-6), progress=False)
    assert [r["epoch"] for r in res.history] == [1]
    assert (out / "best" / "model.safetensors").is_file()
    res = train(_cfg(pairs, out, epochs=3), resume=True, progress=False)
    assert [r["epoch"] for r in read_history(out / "metrics.csv")] == [1, 2, 3]


def test_new_keys_roundtrip_and_are_checked(tmp_path):
    cfg = from_mapping({"init": "resattunet", "max_minutes": 55})
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(str(path)) == cfg and cfg.max_minutes == 55.0
    with pytest.raises(ConfigError, match="max_minutes"):
        from_mapping({"max_minutes": -1})


def test_wide_config_warm_starts_from_the_shipped_default():
    from pathlib import Path

    cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "wide.toml"))
    assert cfg.init == "resattunet" and cfg.max_minutes > 0 and cfg.lr < 3e-4
    state = warm_start_state(cfg)        # the shipped weights fit the config's network
    assert state and all(torch.isfinite(v).all() for v in state.values()
                         if v.is_floating_point())


def test_stem_state_starts_as_the_full_resolution_network_at_half_resolution():
    from tomodl.models.resattunet import ResAttUnet, stem_state

    torch.manual_seed(0)
    full = ResAttUnet(4, 3).eval()
    torch.nn.init.normal_(full.head.weight, std=0.1)      # a non-zero correction
    half = ResAttUnet(4, 3, stem=2).eval()
    half.load_state_dict(stem_state(full.state_dict(), 2), strict=True)
    d = torch.rand(1, 1, 12, 20, dtype=torch.float32)      # odd multiples of the stem
    up = torch.nn.functional.interpolate(d, scale_factor=2, mode="nearest")
    with torch.no_grad():
        want = torch.nn.functional.interpolate(full(d), scale_factor=2, mode="nearest")
        assert torch.allclose(half(up), want, atol=1e-5)
    with pytest.raises(ValueError, match="stem=1"):
        stem_state(half.state_dict(), 2)


def test_fast_config_warm_starts_across_the_stem(tmp_path):
    from pathlib import Path

    cfg = load_config(str(Path(__file__).resolve().parents[1] / "configs" / "fast.toml"))
    assert cfg.init == "resattunet" and dict(cfg.model_args)["stem"] == 2
    state = warm_start_state(cfg)
    assert tuple(state["down.0.conv1.0.weight"].shape[:2]) == (32, 4)
    assert tuple(state["head.weight"].shape[:1]) == (4,)
    with pytest.raises(ConfigError, match="init"):       # other arguments must still match
        warm_start_state(from_mapping({"init": "resattunet", "arch": "resattunet",
                                       "model_args": {"stem": 2, "base_filters": 24}}))
