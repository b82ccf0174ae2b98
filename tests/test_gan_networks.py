"""CycleGAN networks: shapes, parameter counts against the reference implementation, init."""

from __future__ import annotations

import pytest
import torch

from gensyn.gan import losses
from gensyn.gan.networks import (
    build_discriminator,
    build_generator,
    count_parameters,
    receptive_field_px,
)

# Parameter counts of the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix,
# upstream commit 9f8f61e, models/networks.py), obtained once by instantiating its
# define_G(nc, nc, ngf, netG, norm="instance", use_dropout=False) and
# define_D(nc, ndf, "basic" | "n_layers", n_layers_D, norm="instance") on 2026-11-25.
REFERENCE_G = {
    (1, "resnet_9blocks", 64): 11_365_633,
    (1, "resnet_6blocks", 64): 7_825_153,
    (1, "resnet_9blocks", 8): 178_849,
    (1, "resnet_6blocks", 8): 123_361,
    (3, "resnet_9blocks", 64): 11_378_179,
    (3, "resnet_6blocks", 64): 7_837_699,
}
REFERENCE_D = {  # (channels, ndf, n_layers)
    (1, 64, 3): 2_762_689,
    (1, 64, 2): 660_929,
    (1, 8, 3): 44_281,
    (1, 8, 2): 10_937,
    (3, 64, 3): 2_764_737,
    (3, 8, 3): 44_537,
}


@pytest.mark.parametrize(("key", "expected"), REFERENCE_G.items())
def test_generator_parameter_count_equals_reference(key: tuple, expected: int) -> None:
    channels, arch, ngf = key
    assert count_parameters(build_generator(channels, channels, ngf, arch)) == expected


@pytest.mark.parametrize(("key", "expected"), REFERENCE_D.items())
def test_discriminator_parameter_count_equals_reference(key: tuple, expected: int) -> None:
    channels, ndf, n_layers = key
    assert count_parameters(build_discriminator(channels, ndf, n_layers)) == expected


def test_shapes_and_range() -> None:
    g = build_generator(1, 1, ngf=8, arch="resnet_6blocks")
    d = build_discriminator(1, ndf=8, n_layers=3)
    x = torch.rand(2, 1, 64, 96) * 2 - 1
    y = g(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0
    # three stride-2 convs then two stride-1 k4 p1 convs: H/8 - 2
    assert d(x).shape == (2, 1, 64 // 8 - 2, 96 // 8 - 2)
    assert build_generator(1, 3, ngf=8)(x[:1]).shape == (1, 3, 64, 96)


def test_receptive_field_is_70_for_three_layers() -> None:
    assert receptive_field_px(3) == 70
    # Check by gradients: one output depends on a 70-pixel window only (without instance
    # norm, whose statistics span the whole image).
    d = build_discriminator(1, ndf=4, n_layers=3, norm="none").double()
    x = torch.zeros(1, 1, 160, 160, dtype=torch.float64, requires_grad=True)
    d(x)[0, 0, 5, 5].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    assert int(rows.max() - rows.min() + 1) <= 70
    assert int(rows.max() - rows.min() + 1) >= 60  # border taps can have zero weight


def test_init_is_normal_002_with_zero_bias() -> None:
    torch.manual_seed(0)
    g = build_generator(1, 1, ngf=64, arch="resnet_9blocks")
    conv = g.model[10].body[1]  # a 256×256×3×3 conv inside a residual block
    assert abs(float(conv.weight.detach().std()) - 0.02) < 0.001
    assert abs(float(conv.weight.detach().mean())) < 0.001
    assert float(conv.bias.detach().abs().max()) == 0.0


def test_bad_options_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="resnet_9blocks"):
        build_generator(1, 1, arch="unet_256")
    with pytest.raises(ValueError, match="instance"):
        build_generator(1, 1, ngf=8, norm="group")
    with pytest.raises(ValueError, match="lsgan"):
        losses.gan_loss(torch.zeros(1), True, mode="wgan")


def test_lsgan_is_mse_to_targets() -> None:
    scores = torch.tensor([0.0, 0.5, 2.0])
    assert float(losses.gan_loss(scores, True)) == pytest.approx((1 + 0.25 + 1) / 3)
    assert float(losses.gan_loss(scores, False)) == pytest.approx((0 + 0.25 + 4) / 3)
    d = losses.discriminator_loss(torch.ones(4), torch.zeros(4))
    assert float(d) == 0.0


@pytest.mark.parametrize(
    ("channels", "arch", "planes", "channels_last"),
    [
        ((1, 1), "resnet_6blocks", True, True),
        ((3, 1), "resnet_9blocks", True, True),
        ((1, 1), "resnet_6blocks", False, True),
        ((1, 2), "resnet_6blocks", True, False),
    ],
)
def test_inference_generator_computes_what_the_network_does(
    channels, arch, planes, channels_last
) -> None:  # type: ignore[no-untyped-def]
    """Zero-widened thin ends, in float32 here, give the original outputs; the original
    network is left untouched (its weights, dtype and layout)."""
    from gensyn.gan.networks import InferenceGenerator

    torch.manual_seed(0)
    net = build_generator(channels[0], channels[1], 8, arch).eval()
    for m in net.modules():  # non-zero biases, so a wrongly padded bias would show
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d) and m.bias is not None:
            torch.nn.init.normal_(m.bias, 0.0, 0.1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = InferenceGenerator(net, torch.float32, channels_last=channels_last, planes=planes).eval()
    assert fast.first.kernel_size == fast.last.kernel_size == (1, 1)
    x = torch.rand(2, channels[0], 36, 44) * 2 - 1
    with torch.no_grad():
        want, got = net(x), fast(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-6, rtol=0)
    for k, v in net.state_dict().items():
        assert v.dtype == torch.float32 and torch.equal(v, before[k])
    half = InferenceGenerator(net, torch.bfloat16).eval()
    with torch.no_grad():
        assert (half(x) - want).abs().max() < 0.1  # bf16: rounding only


def test_inference_generator_refuses_another_layer_sequence() -> None:
    from gensyn.gan.networks import InferenceGenerator

    net = build_generator(1, 1, 8, "resnet_6blocks")
    net.model = torch.nn.Sequential(*list(net.model)[:-1])  # no tanh
    with pytest.raises(ValueError, match="ResnetGenerator"):
        InferenceGenerator(net)
