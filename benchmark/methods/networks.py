"""The untrained networks: DIP's "skip" hourglass (and its plain variant) and the Deep Decoder.

Both are written from the papers' descriptions (the architectures of DIP's supplementary
material and of the Deep Decoder's Section 2; docs/design.md lists where the suites follow the
authors' code instead). Each is a :class:`FittedNetwork`: what the fitting loop needs to
know of a network is declared there, not read from ad-hoc attributes. Weights are
initialised from an explicit ``torch.Generator`` with PyTorch's default schemes, so a network
is a pure function of its seed: no global random state is read or changed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS = {
    "leaky_relu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "relu": lambda: nn.ReLU(inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
}


class FittedNetwork(nn.Module):
    """A network fitted to one image from a fixed input ``z``: what the fitting loop and
    :func:`~benchmark.methods.stacking.stack_networks` need to know of it.

    Attributes
    ----------
    input_channels : int
        The channels of ``z``.
    input_downscale : int
        ``z`` is this many times smaller than the output on each side.
    multiple, minimum : int
        The output is made at the image size padded to a multiple of ``multiple``, at least
        ``minimum`` (:func:`padded_size`), and cropped back.
    groups : int
        Networks side by side in the channels (1; ``stack_networks`` sets it).
    """

    input_channels: int
    input_downscale: int = 1
    multiple: int = 1
    minimum: int = 1
    groups: int = 1


class ChannelJoin(nn.Module):
    """A module that concatenates feature maps along the channels: stacked side by side,
    it must join each network's channels with its own (``groups``, see :func:`cat_channels`)."""

    groups: int = 1


def _activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise KeyError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None


def _conv(
    in_ch: int,
    out_ch: int,
    kernel: int,
    *,
    stride: int = 1,
    bias: bool = True,
    pad: str = "reflection",
    downsample: str = "stride",
) -> nn.Sequential:
    """A convolution with explicit padding; stride 2 by convolution or by pooling."""
    layers: list[nn.Module] = []
    if kernel > 1:
        padding = (kernel - 1) // 2
        layers.append(nn.ReflectionPad2d(padding) if pad == "reflection" else nn.ZeroPad2d(padding))
    conv_stride = stride if downsample == "stride" else 1
    layers.append(nn.Conv2d(in_ch, out_ch, kernel, stride=conv_stride, bias=bias))
    if stride > 1 and downsample != "stride":
        pools = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}
        if downsample not in pools:
            raise KeyError(f"unknown downsampling {downsample!r}; known: stride, avg, max")
        layers.append(pools[downsample](stride, stride))
    return nn.Sequential(*layers)


def _per_scale(value: int | Sequence[int], scales: int, name: str) -> list[int]:
    values = [value] * scales if isinstance(value, int) else list(value)
    if len(values) != scales:
        raise ValueError(f"{name} needs {scales} values (one per scale), got {len(values)}")
    return values


@dataclass(frozen=True)
class SkipConfig:
    """Hyper-parameters of the DIP hourglass; defaults are the paper's 128/128/4 x 5."""

    input_channels: int = 32
    output_channels: int = 3
    channels_down: int | tuple[int, ...] = 128
    channels_up: int | tuple[int, ...] = 128
    channels_skip: int | tuple[int, ...] = 4
    scales: int = 5
    filter_down: int = 3
    filter_up: int = 3
    filter_skip: int = 1
    upsample: str = "bilinear"
    downsample: str = "stride"
    pad: str = "reflection"
    activation: str = "leaky_relu"
    need_1x1_up: bool = True


class _Scale(ChannelJoin):
    """One level of the hourglass: skip branch and down branch, joined on the way up."""

    def __init__(
        self,
        cfg: SkipConfig,
        in_ch: int,
        down: int,
        up: int,
        skip: int,
        deeper: nn.Module | None,
        deeper_out: int,
    ) -> None:
        super().__init__()
        act = cfg.activation
        self.skip = (
            nn.Sequential(
                _conv(in_ch, skip, cfg.filter_skip, pad=cfg.pad),
                nn.BatchNorm2d(skip),
                _activation(act),
            )
            if skip
            else None
        )
        self.down = nn.Sequential(
            _conv(in_ch, down, cfg.filter_down, stride=2, pad=cfg.pad, downsample=cfg.downsample),
            nn.BatchNorm2d(down),
            _activation(act),
            _conv(down, down, cfg.filter_down, pad=cfg.pad),
            nn.BatchNorm2d(down),
            _activation(act),
        )
        self.deeper = deeper
        align = False if cfg.upsample in ("bilinear", "bicubic") else None
        self.upsample = nn.Upsample(scale_factor=2, mode=cfg.upsample, align_corners=align)
        joined = skip + deeper_out
        up_layers: list[nn.Module] = [
            nn.BatchNorm2d(joined),
            _conv(joined, up, cfg.filter_up, pad=cfg.pad),
            nn.BatchNorm2d(up),
            _activation(act),
        ]
        if cfg.need_1x1_up:
            up_layers += [_conv(up, up, 1, pad=cfg.pad), nn.BatchNorm2d(up), _activation(act)]
        self.up = nn.Sequential(*up_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep = self.down(x)
        if self.deeper is not None:
            deep = self.deeper(deep)
        deep = self.upsample(deep)
        if self.skip is None:
            return self.up(deep)
        return self.up(cat_channels([self.skip(x), deep], self.groups))


class SkipNet(FittedNetwork):
    """DIP's encoder-decoder with skip connections ("skip"); no skip channels = the hourglass.

    The input's height and width must be multiples of ``2 ** scales`` and the deepest feature
    map at least 2x2 (reflection padding needs it): see :func:`padded_size`.
    """

    def __init__(self, cfg: SkipConfig) -> None:
        super().__init__()
        n = cfg.scales
        down = _per_scale(cfg.channels_down, n, "channels_down")
        up = _per_scale(cfg.channels_up, n, "channels_up")
        skip = _per_scale(cfg.channels_skip, n, "channels_skip")
        deeper: nn.Module | None = None
        for i in reversed(range(n)):  # build from the bottom up
            in_ch = cfg.input_channels if i == 0 else down[i - 1]
            deeper_out = down[i] if i == n - 1 else up[i + 1]
            deeper = _Scale(cfg, in_ch, down[i], up[i], skip[i], deeper, deeper_out)
        assert deeper is not None
        self.body = deeper
        self.head = nn.Sequential(_conv(up[0], cfg.output_channels, 1, pad=cfg.pad), nn.Sigmoid())
        self.cfg = cfg
        self.input_channels = cfg.input_channels
        self.input_downscale = 1  # z has the output's size
        self.multiple = 2**n  # output sides must be multiples of this
        self.minimum = 2 ** (n + 1)  # the deepest map is 2x2 at least (reflection padding)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(z))


@dataclass(frozen=True)
class DecoderConfig:
    """Hyper-parameters of the Deep Decoder (Heckel & Hand, 2019)."""

    channels: int = 128  # k
    output_channels: int = 3
    layers: int = 6
    upsample: str = "bilinear"


class DeepDecoder(FittedNetwork):
    """``layers`` blocks of [1x1 conv (no bias), x2 upsampling (not after the last), ReLU,
    BatchNorm], then a 1x1 conv (no bias) to the output channels and a sigmoid.

    Parameters: ``layers * k^2 + 2 * layers * k + out * k``.
    """

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        k = cfg.channels
        blocks: list[nn.Module] = []
        align = False if cfg.upsample in ("bilinear", "bicubic") else None
        for i in range(cfg.layers):
            blocks.append(nn.Conv2d(k, k, 1, bias=False))
            if i < cfg.layers - 1:
                blocks.append(nn.Upsample(scale_factor=2, mode=cfg.upsample, align_corners=align))
            blocks += [nn.ReLU(inplace=True), nn.BatchNorm2d(k)]
        blocks += [nn.Conv2d(k, cfg.output_channels, 1, bias=False), nn.Sigmoid()]
        self.net = nn.Sequential(*blocks)
        self.cfg = cfg
        self.input_channels = k
        self.input_downscale = 2 ** (cfg.layers - 1)  # z is 1/32 of the output for 6 layers
        self.multiple = self.input_downscale
        self.minimum = self.multiple

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def cat_channels(tensors: Sequence[torch.Tensor], groups: int = 1) -> torch.Tensor:
    """Concatenate along the channels within each of ``groups`` side-by-side networks.

    With ``groups`` networks stacked in the channel dimension, network ``g``'s channels must
    stay contiguous: ``[a_g, b_g]`` for every ``g``, not ``[a_0..a_G, b_0..b_G]``.
    """
    if groups == 1:
        return torch.cat(list(tensors), dim=1)
    if tensors[0].is_contiguous(memory_format=torch.channels_last):
        # Concatenate in NHWC so the result stays channels_last: a plainly contiguous result
        # would make the next layers convert it (and take other kernel paths).
        nhwc = [t.permute(0, 2, 3, 1).unflatten(3, (groups, -1)) for t in tensors]
        return torch.cat(nhwc, dim=4).flatten(3).permute(0, 3, 1, 2)
    n, _, h, w = tensors[0].shape
    return torch.cat([t.unflatten(1, (groups, -1)) for t in tensors], dim=2).view(n, -1, h, w)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


BATCHNORM_INITS = ("ones", "uniform")


def reset_parameters(
    module: nn.Module, generator: torch.Generator, *, batchnorm_init: str = "ones"
) -> None:
    """PyTorch's default initialisation, drawn from ``generator`` instead of the global RNG.

    Convolutions: Kaiming-uniform weights (a = sqrt(5)) and uniform biases in
    ``+-1/sqrt(fan_in)``; BatchNorm: bias 0, fresh running statistics and weight 1
    (``batchnorm_init = "ones"``, PyTorch >= 1.2) or U(0, 1) (``"uniform"``: PyTorch <= 1.1,
    on which the DIP and DD codes ran).
    """
    if batchnorm_init not in BATCHNORM_INITS:
        raise KeyError(
            f"unknown batchnorm_init {batchnorm_init!r}; known: {', '.join(BATCHNORM_INITS)}"
        )
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
            if m.bias is not None:
                bound = 1 / math.sqrt(m.weight[0].numel())
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
        elif isinstance(m, nn.BatchNorm2d):
            m.reset_parameters()
            if batchnorm_init == "uniform":
                nn.init.uniform_(m.weight, 0.0, 1.0, generator=generator)


def padded_size(size: int, multiple: int, minimum: int) -> int:
    """The smallest size >= ``size`` (and >= ``minimum``) divisible by ``multiple``."""
    return max(minimum, -(-size // multiple) * multiple)
