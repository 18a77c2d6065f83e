# SPDX-License-Identifier: BSD-3-Clause
"""Slice-by-slice denoising: units, sizes, batching, tiling, precision, memory, loading."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

import tomodl  # noqa: E402
from tomodl.errors import WeightsError  # noqa: E402
from tomodl.models import inference  # noqa: E402
from tomodl.models.inference import Denoiser, denoise, load_denoiser, plan_denoise  # noqa: E402
from tomodl.models.memory import IO_BYTES_PER_PIXEL, PeakMemory, bytes_per_pixel, fixed_bytes  # noqa: E402
from tomodl.models.weights import save_weights  # noqa: E402

TINY = {"base_filters": 4, "depth": 3}
CPU = torch.device("cpu")


def random_net(arch, seed=0):
    """A tiny network whose correction is large (so errors are visible), in eval mode."""
    torch.manual_seed(seed)
    net = tomodl.create_model(arch, **TINY)
    torch.nn.init.normal_(net.head.weight, std=0.5)
    with torch.no_grad():
        net.train()(torch.rand(4, 1, 24, 20))
    return net.eval()


def slices(shape, seed=1):
    """FBP-like slices in attenuation units (a disk of ~0.02/pixel with noise)."""
    rng = np.random.default_rng(seed)
    n, h, w = shape
    yy, xx = np.mgrid[:h, :w]
    disk = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2) * 0.02
    return (disk + 0.003 * rng.standard_normal(shape)).astype(np.float32)


@pytest.mark.parametrize("shape", [(3, 37, 31), (2, 32, 32), (1, 5, 8)])
def test_untrained_network_returns_its_input_in_attenuation_units(shape):
    x = slices(shape)
    den = load_denoiser("unet", tomodl.create_model("unet", **TINY))
    y = denoise(x, den, dtype="float32")
    assert y.shape == x.shape and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=1e-7 * 0.03 * 10)


def test_two_dimensional_and_torch_inputs():
    x = slices((1, 37, 31))
    den = load_denoiser("resattunet", random_net("resattunet"))
    ref = denoise(x, den, dtype="float32")
    one = denoise(x[0], den, dtype="float32")
    assert one.shape == (37, 31)
    np.testing.assert_allclose(one, ref[0], atol=1e-6)
    t = denoise(torch.from_numpy(x.astype(np.float64)), den, dtype="float32")
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("arch", ["unet", "resattunet"])
def test_affine_intensity_changes_pass_through(arch):
    """Per-slice normalization: denoise(a x + b) = a denoise(x) + b, for any units."""
    x = slices((2, 37, 31))
    den = load_denoiser(arch, random_net(arch))
    y = denoise(x, den, dtype="float32")
    y2 = denoise(250.0 * x - 3.0, den, dtype="float32")
    scale = float(np.ptp(y))
    assert np.abs(y2 - (250.0 * y - 3.0)).max() <= 1e-4 * 250.0 * scale


def test_batches_give_the_same_result_as_single_slices():
    x = slices((5, 37, 31))
    den = load_denoiser("resattunet", random_net("resattunet"))
    batched = denoise(x, den, dtype="float32", batch_size="auto")
    single = denoise(x, den, dtype="float32", batch_size=1)
    assert np.abs(batched - single).max() <= 1e-6 * float(np.ptp(x))


@pytest.mark.parametrize("arch", ["unet", "resattunet"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiled_equals_whole_and_stays_within_budget(arch, dtype):
    x = slices((1, 131, 75))
    net = random_net(arch)
    den = load_denoiser(arch, net)
    whole = denoise(x, den, dtype=dtype)
    budget = int(bytes_per_pixel(net, getattr(torch, dtype)) * (32 + 2 * net.receptive_margin) ** 2
                 + fixed_bytes(net) + IO_BYTES_PER_PIXEL * 132 * 76)
    plan = plan_denoise(net, x.shape, CPU, getattr(torch, dtype), max_memory=budget)
    assert plan.tile == 32 and plan.margin == net.receptive_margin == 24
    with PeakMemory() as pm:
        tiled = denoise(x, den, dtype=dtype, max_memory=budget)
    rng = float(np.ptp(whole))
    assert np.abs(tiled - whole).max() <= 1e-5 * rng  # exact up to rounding (stated: 1e-3)
    assert pm.peak <= budget
    with PeakMemory() as pm_whole:
        denoise(x, den, dtype=dtype, max_memory=10**9)
    assert pm.peak < 0.85 * pm_whole.peak  # tiling really saved memory


def test_too_small_overlap_is_visible():
    """The check above can fail: an overlap below the receptive margin changes the result."""
    x = slices((1, 101, 75))
    net = random_net("resattunet")
    den = load_denoiser("resattunet", net)
    whole = denoise(x, den, dtype="float32")
    budget = int(bytes_per_pixel(net, torch.float32) * 64**2 + fixed_bytes(net) + 16 * 104 * 76)
    cut = denoise(x, den, dtype="float32", max_memory=budget, overlap=8)
    assert np.abs(cut - whole).max() > 1e-3 * float(np.ptp(whole))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_low_precision_error_is_bounded(dtype):
    """Documented bound: |low - fp32| <= 5 % of the largest correction (measured 1.6-1.8 % bf16)."""
    x = slices((2, 37, 31))
    for arch in ("unet", "resattunet"):
        den = load_denoiser(arch, random_net(arch))
        ref = denoise(x, den, dtype="float32")
        low = denoise(x, den, dtype=dtype)
        assert np.abs(low - ref).max() <= 0.05 * np.abs(ref - x).max()


def test_auto_dtype_follows_the_cpu(monkeypatch):
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
    assert inference.resolve_dtype("auto", CPU) == torch.bfloat16
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    assert inference.resolve_dtype("auto", CPU) == torch.float32
    assert inference.resolve_dtype("auto", torch.device("cuda")) == torch.float16
    with pytest.raises(ValueError, match="choose one of"):
        inference.resolve_dtype("int8", CPU)


def test_plan_batches_to_the_budget():
    net = tomodl.create_model("unet", **TINY)
    per = (bytes_per_pixel(net, torch.float32) + IO_BYTES_PER_PIXEL) * 40 * 32
    plan = plan_denoise(net, (10, 37, 31), CPU, torch.float32,
                        max_memory=int(fixed_bytes(net) + 3.5 * per))
    assert (plan.batch, plan.tile) == (3, 0)
    with pytest.raises(ValueError, match="batch_size"):
        plan_denoise(net, (1, 8, 8), CPU, torch.float32, batch_size=0)


def test_load_denoiser_sources(tmp_path):
    net = random_net("unet")
    folder = save_weights(net, tmp_path / "w", arch="unet", model_args=TINY, sparse_factor=20,
                          filter_name="shepp")
    den = load_denoiser("unet", str(folder))
    assert isinstance(den, Denoiser) and den.sparse_factor == 20 and den.filter_name == "shepp"
    x = slices((1, 37, 31))
    np.testing.assert_array_equal(denoise(x, den, dtype="float32"),
                                  denoise(x, load_denoiser("unet", net), dtype="float32"))
    with pytest.raises(WeightsError, match="not 'resattunet'"):
        load_denoiser("resattunet", folder)
    with pytest.raises(WeightsError, match="not a 'resattunet' network"):
        load_denoiser("resattunet", net)
    with pytest.raises(WeightsError, match="released models"):
        load_denoiser("unet", "no-such-model")
    with pytest.raises(ValueError, match="choose one of"):
        load_denoiser("vgg")
    with pytest.raises(ValueError, match="load_denoiser"):
        denoise(x, net)


def test_prepared_network_follows_in_place_weight_updates():
    """The cached inference network is rebuilt when the module's weights change (e.g. training)."""
    net = random_net("unet")
    den = load_denoiser("unet", net)
    x = slices((1, 37, 31))
    before = denoise(x, den, dtype="float32")
    with torch.no_grad():
        net.head.weight.mul_(-1.0)
    after = denoise(x, den, dtype="float32")
    fresh = denoise(x, load_denoiser("unet", net), dtype="float32")
    np.testing.assert_array_equal(after, fresh)
    assert np.abs(after - before).max() > 1e-3 * float(np.ptp(x))


def test_non_finite_input_is_refused():
    x = slices((1, 16, 16))
    x[0, 3, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        denoise(x, load_denoiser("unet", tomodl.create_model("unet", **TINY)))


def test_recon_with_a_saved_model_end_to_end(tmp_path):
    """``tomodl.recon(..., algorithm="fbp+unet", model=folder)`` == FBP followed by denoise."""
    folder = save_weights(random_net("unet"), tmp_path / "unet", arch="unet", model_args=TINY)
    n, n_angles = 37, 30
    theta = np.linspace(0, np.pi, n_angles, endpoint=False, dtype=np.float32)
    u = np.arange(n) - (n - 1) / 2
    chord = 2 * np.sqrt(np.clip(10.0**2 - u**2, 0, None)) * 0.01  # disk, mu = 0.01 / pixel
    proj = np.broadcast_to(chord, (n_angles, 3, n)).astype(np.float32).copy()
    rec = tomodl.recon(proj, theta, algorithm="fbp+unet", model=str(folder), dtype="float32")
    fbp_only = tomodl.recon(proj, theta, algorithm="fbp")
    expected = denoise(fbp_only, load_denoiser("unet", folder), dtype="float32")
    assert rec.shape == (3, n, n) and rec.dtype == np.float32
    np.testing.assert_allclose(rec, expected, atol=1e-6 * float(np.ptp(expected)))
    assert np.abs(rec - fbp_only).max() > 1e-3 * float(np.ptp(fbp_only))  # the model did act


def _disk_projections(n=37, n_angles=30):
    theta = np.linspace(0, np.pi, n_angles, endpoint=False, dtype=np.float32)
    u = np.arange(n) - (n - 1) / 2
    chord = 2 * np.sqrt(np.clip(10.0**2 - u**2, 0, None)) * 0.01
    return np.broadcast_to(chord, (n_angles, 2, n)).astype(np.float32).copy(), theta


def test_non_finite_network_output_is_an_error_never_a_silent_volume():
    """NaN weights in an in-memory module (load_weights refuses them in files) and a float16
    overflow of finite weights both raise a WeightsError naming the fix."""
    net = random_net("unet")
    with torch.no_grad():
        net.head.weight.fill_(float("nan"))
    with pytest.raises(WeightsError, match=r"<module>: the unet network returned NaN or infinite "
                                           r"values \(computed in float32\); use other weights, "
                                           r"or algorithm='fbp'") as err:
        denoise(slices((3, 16, 16)), load_denoiser("unet", net), dtype="float32", batch_size=1)
    assert err.value.cli_message().endswith("use other weights, or --algorithm fbp")
    proj, theta = _disk_projections()
    with pytest.raises(WeightsError, match="returned NaN or infinite values"):
        tomodl.recon(proj, theta, algorithm="fbp+unet", model=net, dtype="float32")


def test_float16_overflow_is_caught_and_float32_suggested(tmp_path):
    net = random_net("unet")
    with torch.no_grad():
        net.head.weight.fill_(6e4)         # finite, but their sum overflows float16
        net.head.bias.fill_(6e4)
    folder = save_weights(net, tmp_path / "big", arch="unet", model_args=TINY)
    den = load_denoiser("unet", folder)
    x = slices((2, 24, 24))
    assert np.isfinite(denoise(x, den, dtype="float32")).all()
    with pytest.raises(WeightsError, match=r"big: the unet network returned NaN or infinite "
                                           r"values \(computed in float16\); use other weights "
                                           r"or dtype='float32', or algorithm='fbp'") as err:
        denoise(x, den, dtype="float16")
    assert "or --dtype float32, or --algorithm fbp" in err.value.cli_message()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_cuda_low_precision_matches_cpu_float32(dtype):
    """The FP16/BF16 CUDA path: same bound as on the CPU, and CUDA tensors come back on CUDA."""
    x = slices((3, 37, 31))
    den = load_denoiser("resattunet", random_net("resattunet"))
    ref = denoise(x, den, device="cpu", dtype="float32")
    out = denoise(torch.from_numpy(x).cuda(), den, dtype=dtype)
    assert out.device.type == "cuda" and out.dtype == torch.float32
    assert np.abs(out.cpu().numpy() - ref).max() <= 0.05 * np.abs(ref - x).max()
