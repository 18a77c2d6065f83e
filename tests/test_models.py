# SPDX-License-Identifier: BSD-3-Clause
"""The networks and the registry: shapes, parameter counts, gradients, receptive field."""
import pytest

torch = pytest.importorskip("torch")

import tomodl  # noqa: E402
from tomodl.errors import TomodlError  # noqa: E402
from tomodl.models.layers import receptive_field  # noqa: E402
from tomodl.models.registry import list_models  # noqa: E402

TINY = {"base_filters": 4, "depth": 3}


def tiny(arch, seed=0, **kw):
    torch.manual_seed(seed)
    return tomodl.create_model(arch, **{**TINY, **kw})


def expected_params(arch, base=32, depth=5):
    """Parameter count written out from the architecture description (docs/models.md)."""
    widths = [base * 2**i for i in range(depth)]

    def block(c_in, c):  # two bias-free 3x3 convs + two batch norms (weight, bias)
        return 9 * c_in * c + 9 * c * c + 4 * c

    n = sum(block(c_in, c) for c_in, c in zip([1] + widths[:-1], widths))
    for c in widths[:-1]:
        n += 4 * 2 * c * c + c + block(2 * c, c)  # 2x2 transposed conv (2c -> c) + decoder block
        if arch == "resattunet":
            ci = c // 2
            n += 2 * (c * ci + ci) + (2 * ci + 1)  # theta, phi, psi (1x1 convs with bias)
    return n + widths[0] + 1  # 1x1 head


def test_list_models_and_unknown_name():
    assert list_models() == ["resattunet", "unet"] == tomodl.list_models()
    with pytest.raises(ValueError, match=r"choose one of \['resattunet', 'unet'\]"):
        tomodl.create_model("resnet")


@pytest.mark.parametrize("arch", ["unet", "resattunet"])
def test_parameter_counts_match_the_architecture(arch):
    net = tomodl.create_model(arch)
    n = sum(p.numel() for p in net.parameters())
    assert n == expected_params(arch)
    assert n == {"unet": 7_762_465, "resattunet": 7_850_469}[arch]
    t = tiny(arch)
    assert sum(p.numel() for p in t.parameters()) == expected_params(arch, 4, 3)


def test_resattunet_has_more_parameters_than_unet():
    count = {a: sum(p.numel() for p in tiny(a).parameters()) for a in list_models()}
    assert count["resattunet"] > count["unet"]


@pytest.mark.parametrize("arch", ["unet", "resattunet"])
@pytest.mark.parametrize("shape", [(37, 31), (32, 32), (20, 18), (5, 7), (1, 3)])
def test_forward_any_size_and_untrained_identity(arch, shape):
    net = tiny(arch).eval()
    x = torch.rand(2, 1, *shape)
    y = net(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.equal(y, x)  # zero-initialized head: an untrained residual network is identity


@pytest.mark.parametrize("arch", ["unet", "resattunet"])
def test_non_residual_output_is_finite_and_not_the_input(arch):
    net = tiny(arch, residual=False).eval()
    x = torch.rand(1, 1, 37, 31)
    y = net(x)
    assert torch.isfinite(y).all() and not torch.allclose(y, x)


@pytest.mark.parametrize("arch", ["unet", "resattunet"])
def test_every_parameter_receives_a_gradient(arch):
    net = tiny(arch).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    x, target = torch.rand(2, 1, 36, 28, generator=gen), torch.rand(2, 1, 36, 28, generator=gen)
    for _ in range(2):  # the first step moves the zero-initialized head off zero
        opt.zero_grad()
        torch.nn.functional.mse_loss(net(x), target).backward()
        opt.step()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_attention_weight_is_in_unit_interval():
    net = tiny("resattunet").eval()
    gate = net.gates[-1]
    c = gate.theta.in_channels
    with torch.no_grad():
        w = gate.weight(torch.randn(1, c, 9, 7) * 10, torch.randn(1, c, 9, 7) * 10)
    assert w.shape == (1, 1, 9, 7) and float(w.min()) >= 0.0 and float(w.max()) <= 1.0


def test_receptive_field_formula():
    assert receptive_field(5) == 200 and receptive_field(3) == 44
    assert tomodl.create_model("resattunet").receptive_margin == 112


@pytest.mark.parametrize("arch, kw", [("unet", {}), ("resattunet", {}),
                                      ("resattunet", {"stem": 2}),
                                      ("resattunet", {"stem": 2, "stem_filters": 2})])
def test_gradient_support_lies_within_receptive_margin(arch, kw):
    """No output pixel depends on inputs farther than ``receptive_margin`` (tiling relies on it)."""
    net = tiny(arch, **kw).eval()
    torch.nn.init.normal_(net.head.weight)
    if hasattr(net, "stem_out"):        # the last layer of a stem with its own filters
        torch.nn.init.normal_(net.stem_out[1].weight)
    size, margin = max(96, 3 * net.receptive_margin), net.receptive_margin
    extents = []
    for r in range(net.size_multiple):  # every position in the pooling grid
        x = torch.randn(1, 1, size, size, requires_grad=True)
        p = size // 2 + r
        net(x)[0, 0, p, p].backward()
        rows, cols = torch.nonzero(x.grad[0, 0] != 0, as_tuple=True)
        extents += [p - int(rows.min()), int(rows.max()) - p,
                    p - int(cols.min()), int(cols.max()) - p]
    assert max(extents) <= margin
    # the margin is not wastefully large (a stem widens the rounding by one stem cell)
    assert max(extents) > margin - net.size_multiple * getattr(net, "stem", 1)


def test_create_model_rejects_kwargs_with_pretrained(tmp_path):
    with pytest.raises(TomodlError, match="cannot be combined with pretrained"):
        tomodl.create_model("unet", pretrained=tmp_path, depth=3)


def test_invalid_constructor_arguments():
    with pytest.raises(ValueError, match="depth >= 2"):
        tomodl.create_model("unet", depth=1)


@pytest.mark.parametrize("arch", ["unet", "resattunet"])
def test_bfloat16_autocast_forward(arch):
    net = tiny(arch).eval()
    torch.nn.init.normal_(net.head.weight, std=0.1)
    x = torch.rand(1, 1, 37, 31)
    with torch.inference_mode():
        ref = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x)
    assert low.dtype == torch.float32  # the residual sum is kept in the input's precision
    corr = (ref - x).abs().max()
    assert float((low - ref).abs().max()) <= 0.05 * float(corr) + 1e-6
