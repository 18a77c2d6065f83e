# SPDX-License-Identifier: BSD-3-Clause
"""The space-to-depth ``stem`` of ResAttUnet (tried for a fast CPU network): shapes, identity,
FLOPs, exact tiling, memory estimate, argument checks and weights (the receptive margin:
tests/test_models.py)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tomodl  # noqa: E402
from tomodl.errors import WeightsError  # noqa: E402
from tomodl.models.checks import check_model_args  # noqa: E402
from tomodl.models.inference import denoise, load_denoiser, plan_denoise  # noqa: E402
from tomodl.models.memory import IO_BYTES_PER_PIXEL, bytes_per_pixel, fixed_bytes  # noqa: E402
from tomodl.models.weights import load_weights, save_weights  # noqa: E402

TINY = {"base_filters": 4, "depth": 3, "stem": 2}


def random_net(seed=0):
    torch.manual_seed(seed)
    net = tomodl.create_model("resattunet", **TINY)
    torch.nn.init.normal_(net.head.weight, std=0.5)
    with torch.no_grad():
        net.train()(torch.rand(4, 1, 24, 20))
    return net.eval()


@pytest.mark.parametrize("shape", [(1, 1, 37, 31), (2, 1, 16, 16), (1, 1, 5, 3)])
@pytest.mark.parametrize("stem_filters", [0, 3])
def test_untrained_stem_network_is_the_identity_at_any_size(shape, stem_filters):
    net = tomodl.create_model("resattunet", **TINY, stem_filters=stem_filters).eval()
    assert net.size_multiple == 8
    x = torch.rand(shape)
    with torch.no_grad():
        assert torch.equal(net(x), x)


def test_stem_cuts_the_flops_of_the_same_widths():
    from torch.utils.flop_counter import FlopCounterMode

    flops = []
    for stem in (1, 2):
        net = tomodl.create_model("resattunet", base_filters=8, depth=3, stem=stem).eval()
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            net(torch.zeros(1, 1, 64, 64))
        flops.append(fc.get_total_flops())
    assert 3.5 < flops[0] / flops[1] < 4.5


def test_stem_tiled_equals_whole():
    rng = np.random.default_rng(1)
    x = (0.02 + 0.003 * rng.standard_normal((1, 203, 149))).astype(np.float32)
    net = random_net()
    den = load_denoiser("resattunet", net)
    whole = denoise(x, den, dtype="float32")
    budget = int(bytes_per_pixel(net, torch.float32) * (64 + 2 * net.receptive_margin) ** 2
                 + fixed_bytes(net) + IO_BYTES_PER_PIXEL * 208 * 152)
    plan = plan_denoise(net, x.shape, torch.device("cpu"), torch.float32, max_memory=budget)
    assert plan.tile < 149 and plan.margin == net.receptive_margin
    tiled = denoise(x, den, dtype="float32", max_memory=budget)
    assert np.abs(tiled - whole).max() <= 1e-5 * float(np.ptp(whole))


@pytest.mark.parametrize("args", [{"stem": 0}, {"stem": 5}, {"stem": 1.5}, {"stem": "2"},
                                  {"stem": 2, "stem_filters": -1},
                                  {"stem": 2, "stem_filters": 65}])
def test_bad_stem_is_rejected_with_its_bounds(args):
    with pytest.raises(WeightsError, match="stem"):
        check_model_args("resattunet", args, "test")
    assert check_model_args("resattunet", {"stem": 2}, "test")["stem"] == 2
    with pytest.raises(ValueError, match="only with stem > 1"):
        tomodl.create_model("resattunet", stem_filters=8)
    with pytest.raises(WeightsError, match="unknown keys"):
        check_model_args("unet", {"stem": 2}, "test")   # only ResAttUnet has a stem


def test_stem_weights_round_trip_and_mismatch(tmp_path):
    net = random_net()
    save_weights(net, tmp_path / "w", arch="resattunet", model_args=TINY)
    back, cfg = load_weights(tmp_path / "w")
    assert cfg.model_args["stem"] == 2
    x = torch.rand(1, 1, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x))
    with pytest.raises(WeightsError):       # the same tensors claimed for a stem-less network
        save_weights(net, tmp_path / "bad", arch="resattunet",
                     model_args={"base_filters": 4, "depth": 3})


@pytest.mark.parametrize("stem_filters", [0, 16])
def test_memory_estimate_covers_the_stem_network(stem_filters):
    from tomodl.models.inference import _runner
    from tomodl.models.memory import PeakMemory, bytes_per_pixel

    net = tomodl.create_model("resattunet", base_filters=16, depth=3, stem=2,
                              stem_filters=stem_filters).eval()
    run = _runner(net, torch.device("cpu"), torch.float32)
    x = torch.randn(1, 1, 128, 128)
    with torch.inference_mode():
        run(x)
        with PeakMemory() as pm:
            run(x)
    per_pixel = pm.peak / 128**2
    assert per_pixel <= bytes_per_pixel(net, torch.float32)
    assert per_pixel > 0.5 * bytes_per_pixel(net, torch.float32)  # not the stem-less estimate
