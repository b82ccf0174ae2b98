"""CycleGAN networks: a ResNet generator and a PatchGAN discriminator.

The architectures follow the CycleGAN paper (Zhu et al., 2017, appendix 7.2) as used by
SyntheX: the generator is ``c7s1-ngf, d2ngf, d4ngf, R4ngf × n_blocks, u2ngf, ungf,
c7s1-out`` with reflection padding and instance normalisation (no learned affine, no
running statistics, so convolutions carry biases); the discriminator is the 70×70
PatchGAN ``C64-C128-C256-C512`` followed by a 1-channel convolution. Parameter counts
equal those of the reference implementation for the same options (tests pin them).

Images are tensors of shape (N, C, H, W) with values in [-1, 1]; the generator keeps H×W
(which must be divisible by 4), the discriminator returns a score map of shape
(N, 1, H/8 - 2, W/8 - 2) for three layers.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

GENERATOR_BLOCKS = {"resnet_9blocks": 9, "resnet_6blocks": 6}
NORMS = ("instance", "batch", "none")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")


def make_norm(norm: str, channels: int) -> nn.Module:
    """The normalisation layer ``norm`` (instance | batch | none) for ``channels`` channels.

    Instance norm has no affine parameters and tracks no running statistics, as in the
    reference recipe.
    """
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
    if norm == "batch":
        return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {norm!r}; allowed: {', '.join(NORMS)}")


def _conv_bias(norm: str) -> bool:
    # Batch norm's learned shift makes a conv bias redundant; instance norm without
    # affine parameters (and no norm at all) keeps it.
    return norm != "batch"


class ResnetBlock(nn.Module):
    """Two 3×3 convolutions with reflection padding and a skip connection."""

    def __init__(self, channels: int, norm: str = "instance", use_dropout: bool = False) -> None:
        super().__init__()
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, bias=bias),
            make_norm(norm, channels),
            nn.ReLU(inplace=True),
        ]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [
            nn.ReflectionPad2d(1),
            nn.Conv2d(channels, channels, kernel_size=3, bias=bias),
            make_norm(norm, channels),
        ]
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """ResNet generator: 2 stride-2 downsamplings, ``n_blocks`` residual blocks, 2 upsamplings.

    Input (N, in_channels, H, W) in [-1, 1], H and W divisible by 4; output
    (N, out_channels, H, W) in [-1, 1] (tanh).
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        ngf: int = 64,
        n_blocks: int = 9,
        norm: str = "instance",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(in_channels, ngf, kernel_size=7, bias=bias),
            make_norm(norm, ngf),
            nn.ReLU(inplace=True),
        ]
        channels = ngf
        for _ in range(2):  # downsampling
            layers += [
                nn.Conv2d(channels, channels * 2, 3, stride=2, padding=1, bias=bias),
                make_norm(norm, channels * 2),
                nn.ReLU(inplace=True),
            ]
            channels *= 2
        layers += [ResnetBlock(channels, norm, use_dropout) for _ in range(n_blocks)]
        for _ in range(2):  # upsampling
            layers += [
                nn.ConvTranspose2d(
                    channels, channels // 2, 3, stride=2, padding=1, output_padding=1, bias=bias
                ),
                make_norm(norm, channels // 2),
                nn.ReLU(inplace=True),
            ]
            channels //= 2
        layers += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(channels, out_channels, kernel_size=7),
            nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)
        self.in_channels = in_channels
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _added(terms: list[torch.Tensor]) -> torch.Tensor:
    """The sum of equally shaped tensors (one fused kernel once compiled)."""
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


class InferenceGenerator(nn.Module):
    """A trained :class:`ResnetGenerator` prepared for fast translation on a GPU.

    Grey images give the first 7×7 convolution one input channel and the last one output
    channel; GPU libraries run such thin convolutions with slow kernels that use no tensor
    cores (on an H200, 27 % of a compiled ResNet-9's time at 512², and zero-padding the thin
    side to 8 channels did not change that). Here both become tensor-core matrix products:

    * first: the 49 shifted copies of each padded input channel (im2col, gathered by one
      fused kernel) times the weights as a 1×1 convolution;
    * last: a 1×1 convolution giving, for each output channel, the 49 per-offset sums over
      the input channels, then the 49 shifted maps added (one fused kernel). With
      ``planes=True`` (the default) that product is taken as weights × activationsᵀ, so each
      of the 49 maps is a contiguous plane and the shifted sum reads whole rows, and the
      reflection padding is applied to those maps (a 1×1 convolution commutes with it), not
      to the 64-channel activations before it.

    Both are the same sums as the 7×7 convolutions (tested in float32); the gathered channel
    counts are padded with zero weights to ``multiple``. Weights and activations are held in
    ``dtype`` (bf16 on CUDA), channels-last if asked; input and output are float32
    (N, C, H, W) in [-1, 1], as for the original network, which is left as it was (every
    layer here is a copy).
    """

    def __init__(
        self,
        net: ResnetGenerator,
        dtype: torch.dtype = torch.bfloat16,
        channels_last: bool = True,
        multiple: int = 8,
        planes: bool = True,
    ) -> None:
        super().__init__()
        layers = list(net.model)
        first, last = layers[1], layers[-2]
        if not (
            isinstance(layers[0], nn.ReflectionPad2d)
            and isinstance(first, nn.Conv2d)
            and isinstance(layers[-3], nn.ReflectionPad2d)
            and isinstance(last, nn.Conv2d)
            and isinstance(layers[-1], nn.Tanh)
            and first.stride == last.stride == (1, 1)
            and first.dilation == last.dilation == (1, 1)
            and first.groups == last.groups == 1
            and first.padding == last.padding == (0, 0)
        ):
            raise ValueError("InferenceGenerator expects a ResnetGenerator's layer sequence")
        self.in_channels, self.out_channels = first.in_channels, last.out_channels
        self.pad_first = tuple(layers[0].padding)
        self.pad_last = tuple(layers[-3].padding)
        self.k_first = tuple(first.kernel_size)
        self.k_last = tuple(last.kernel_size)
        w1 = first.weight.detach()  # (out, in, kh, kw) -> 1×1 over (in · kh · kw) gathered
        taps1 = w1.shape[1] * w1.shape[2] * w1.shape[3]
        self.gathered = _round_up(taps1, multiple)
        self.first = nn.Conv2d(self.gathered, w1.shape[0], 1, bias=first.bias is not None)
        w3 = last.weight.detach()  # (out, in, kh, kw) -> 1×1 giving (out · kh · kw) maps
        taps3 = w3.shape[0] * w3.shape[2] * w3.shape[3]
        self.last = nn.Conv2d(w3.shape[1], _round_up(taps3, multiple), 1, bias=False)
        with torch.no_grad():
            self.first.weight.zero_()
            self.first.weight[:, :taps1, 0, 0] = w1.reshape(w1.shape[0], taps1)
            if first.bias is not None and self.first.bias is not None:
                self.first.bias.copy_(first.bias.detach())
            self.last.weight.zero_()
            self.last.weight[:taps3, :, 0, 0] = w3.permute(0, 2, 3, 1).reshape(taps3, -1)
        self.last_bias = nn.Parameter(
            last.bias.detach().clone() if last.bias is not None else torch.zeros(w3.shape[0]),
            requires_grad=False,
        )
        self.middle = copy.deepcopy(nn.Sequential(*layers[2:-3]))
        self.dtype = dtype
        self.planes = planes
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.to(device=w1.device, dtype=dtype, memory_format=self.memory_format)  # type: ignore[call-overload]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # the dtype is chosen here
            h, w = x.shape[-2:]
            x = F.pad(x.to(self.dtype), self.pad_first, mode="reflect")
            kh, kw = self.k_first
            taps = [x[:, :, i : i + h, j : j + w] for i in range(kh) for j in range(kw)]
            # channel order (in, kh, kw), as the weights were flattened
            cols = torch.stack(taps, dim=2).flatten(1, 2)
            cols = F.pad(cols, (0, 0, 0, 0, 0, self.gathered - cols.shape[1]))
            x = self.first(cols.contiguous(memory_format=self.memory_format))
            x = self.middle(x)
            kh, kw = self.k_last
            n_taps = self.out_channels * kh * kw
            if self.planes:  # (taps, N·H·W) = W (taps, C) @ xᵀ: one contiguous plane a tap
                n, c = x.shape[:2]
                flat = x.permute(0, 2, 3, 1).reshape(-1, c)  # a view when channels-last
                z = (self.last.weight.view(-1, c)[:n_taps] @ flat.t()).view(n_taps, n, h, w)
                z = F.pad(z, self.pad_last, mode="reflect").float()
                z = z.unflatten(0, (self.out_channels, kh * kw))
                shifted = [z[:, i * kw + j, :, i : i + h, j : j + w] for i in range(kh) for j in range(kw)]  # fmt: skip
                out = _added(shifted).transpose(0, 1)  # (out, N, H, W) -> (N, out, H, W)
            else:
                z = self.last(F.pad(x, self.pad_last, mode="reflect"))  # (N, taps + pad, ..)
                z = z[:, :n_taps].float().unflatten(1, (self.out_channels, kh * kw))
                shifted = [z[:, :, i * kw + j, i : i + h, j : j + w] for i in range(kh) for j in range(kw)]  # fmt: skip
                out = _added(shifted)
            out = out + self.last_bias.float()[None, :, None, None]
            return torch.tanh(out)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator; ``n_layers=3`` gives 70×70 receptive fields.

    Input (N, in_channels, H, W); output raw scores (N, 1, H', W') (no sigmoid: the LSGAN
    loss works on raw scores).
    """

    def __init__(
        self, in_channels: int = 1, ndf: int = 64, n_layers: int = 3, norm: str = "instance"
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
        ]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < n_layers else 1  # the last feature layer keeps the resolution
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1, bias=bias),
                make_norm(norm, ndf * mult),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def init_weights(net: nn.Module, init_type: str = "normal", gain: float = 0.02) -> nn.Module:
    """Initialise conv weights (normal(0, gain) by default) and zero their biases, in place.

    Batch-norm scales are drawn from normal(1, gain) with zero shifts. Uses the global torch
    RNG, so seed it first for reproducible weights.
    """
    if init_type not in INIT_TYPES:
        raise ValueError(f"unknown init_type {init_type!r}; allowed: {', '.join(INIT_TYPES)}")
    for module in net.modules():
        if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            weight = module.weight
            if init_type == "normal":
                nn.init.normal_(weight, 0.0, gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(weight, gain=gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(weight, gain=gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.normal_(module.weight, 1.0, gain)
            nn.init.zeros_(module.bias)
    return net


def build_generator(
    in_channels: int,
    out_channels: int,
    ngf: int = 64,
    arch: str = "resnet_9blocks",
    norm: str = "instance",
    use_dropout: bool = False,
    init_type: str = "normal",
    init_gain: float = 0.02,
) -> ResnetGenerator:
    """A freshly initialised generator; ``arch`` is resnet_9blocks or resnet_6blocks."""
    if arch not in GENERATOR_BLOCKS:
        raise ValueError(f"unknown generator arch {arch!r}; allowed: {', '.join(GENERATOR_BLOCKS)}")
    net = ResnetGenerator(in_channels, out_channels, ngf, GENERATOR_BLOCKS[arch], norm, use_dropout)
    init_weights(net, init_type, init_gain)
    return net


def build_discriminator(
    in_channels: int,
    ndf: int = 64,
    n_layers: int = 3,
    norm: str = "instance",
    init_type: str = "normal",
    init_gain: float = 0.02,
) -> PatchDiscriminator:
    """A freshly initialised PatchGAN discriminator (n_layers=3: the 70×70 'basic' one)."""
    net = PatchDiscriminator(in_channels, ndf, n_layers, norm)
    init_weights(net, init_type, init_gain)
    return net


def count_parameters(net: nn.Module) -> int:
    """Number of parameters (trainable or not) of ``net``."""
    return sum(p.numel() for p in net.parameters())


def receptive_field_px(n_layers: int) -> int:
    """Receptive field (pixels) of one output of a PatchGAN with ``n_layers`` (3 → 70)."""
    field, jump = 1, 1
    strides = [2] * n_layers + [1, 1]  # n_layers stride-2 convs, then two stride-1 convs
    for stride in strides:
        field += 3 * jump  # kernel 4: (k - 1) * jump
        jump *= stride
    return field
