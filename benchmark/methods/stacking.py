"""Networks side by side: one module that trains B networks of one architecture at once.

:func:`stack_networks` turns B networks into one whose every feature map holds each network's
channels in turn: convolutions become grouped convolutions, BatchNorm layers hold every
network's channels (with one image per network, each network keeps its own statistics).
:func:`~benchmark.methods.fit.fit_many` trains cells this way. With ``exact``, each layer
runs its networks' parts in one call only where that gives each network's own numbers bit for
bit, so a batched cell equals the same cell fitted alone.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from benchmark.methods.networks import ChannelJoin, FittedNetwork


def stack_networks(nets: Sequence[FittedNetwork], *, exact: bool = True) -> FittedNetwork:
    """One network that computes ``len(nets)`` networks of the same architecture at once.

    Network ``g`` owns channels ``[g * C, (g + 1) * C)`` of every feature map: convolutions
    become grouped convolutions (group ``g`` holds network ``g``'s weights) and BatchNorm
    layers hold every network's channels. With a batch of one image per network, BatchNorm's
    per-channel statistics are each network's own statistics, so the stacked network is the
    networks side by side, not a mixture: its output channels ``[g * C_out, (g + 1) * C_out)``
    are ``nets[g]``'s output. The input is the networks' inputs concatenated along the
    channels. ``nets`` are left untouched.

    With ``exact`` (the default), each layer computes the networks' parts in one call only
    where that call gives each network's own numbers bit for bit (checked per input shape,
    see :class:`_SideBySide`; activations such as the sigmoid always run network by network,
    see :class:`StackedActivation`), so outputs and gradients equal the networks' own
    exactly; without it they equal them up to float rounding.
    """
    groups = len(nets)
    if groups == 1:
        return nets[0]
    stacked = copy.deepcopy(nets[0])
    members = [dict(net.named_modules()) for net in nets]
    for name, module in list(stacked.named_modules()):
        parts = [m[name] for m in members]
        if isinstance(module, nn.Conv2d):
            stacked.set_submodule(name, _stacked_conv(module, parts, exact))
        elif isinstance(module, nn.BatchNorm2d):
            stacked.set_submodule(name, _stacked_batch_norm(module, parts, exact))
        elif isinstance(module, nn.Upsample):
            stacked.set_submodule(name, StackedUpsample(module, groups, exact=exact))
        elif isinstance(module, TRANSCENDENTAL_ACTIVATIONS):
            stacked.set_submodule(name, StackedActivation(module, groups, exact=exact))
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm3d, nn.Linear, nn.GroupNorm)):
            raise TypeError(f"stack_networks cannot stack {type(module).__name__} ({name})")
        elif isinstance(module, ChannelJoin):
            module.groups = groups
    stacked.input_channels = nets[0].input_channels * groups
    stacked.groups = groups
    return stacked


_OptionalTensor = torch.Tensor | None


class _SideBySide:
    """A layer of ``networks`` networks side by side in the channels (see stack_networks).

    One call of the layer's kernel computes every network's part. Unless the kernel computes
    each part bit for bit as that network's own layer would, DIP's training grows the
    rounding difference into tenths of a dB and a batched cell no longer equals the same
    cell fitted alone. So with ``exact`` a layer checks once per input shape (a forward and
    backward pass both ways on random data) and, where one call differs (oneDNN's 1x1 and
    small-image convolutions reduce in another order; vectorised kernels treat a remainder
    of channels apart), calls each network's part in turn.
    """

    networks: int
    exact: bool
    _one_call_is_exact: dict[tuple, bool]
    _probing: bool

    def _setup(self, networks: int, exact: bool) -> None:
        self.networks, self.exact = networks, exact
        self._one_call_is_exact, self._probing = {}, False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # On the meta device (FLOP counting) nothing is computed, so nothing can differ.
        if not self.exact or x.device.type == "meta" or self._exact_for(x):
            return self._together(x, self._params(), self._state())
        return self._one_by_one(x, self._params(), self._state())

    def _params(self) -> list[_OptionalTensor]:
        """The differentiable parameters, network g's being part g of each (none by default)."""
        return []

    def _state(self) -> list[_OptionalTensor]:
        """Buffers the layer updates (split like the parameters); none while probing."""
        return []

    def _together(
        self, x: torch.Tensor, params: list[_OptionalTensor], state: list[_OptionalTensor]
    ) -> torch.Tensor:
        raise NotImplementedError

    def _part(
        self, x: torch.Tensor, params: list[_OptionalTensor], state: list[_OptionalTensor]
    ) -> torch.Tensor:
        """One network's layer: by default ``_together`` of a single network's part."""
        return self._together(x, params, state)

    def _one_by_one(
        self, x: torch.Tensor, params: list[_OptionalTensor], state: list[_OptionalTensor]
    ) -> torch.Tensor:
        n = self.networks

        def parts(tensors: list[_OptionalTensor]) -> list[list[_OptionalTensor]]:
            chunks = [[None] * n if t is None else t.chunk(n) for t in tensors]
            return [[c[g] for c in chunks] for g in range(n)]

        xs = [own_tensor(part) for part in x.chunk(n, dim=1)]
        outs = [
            self._part(xg, pg, sg)
            for xg, pg, sg in zip(xs, parts(params), parts(state), strict=True)
        ]
        if torch.is_grad_enabled():
            for out in outs:
                if out.requires_grad:
                    # A lone network's layer would get its gradient whole, laid out as the
                    # layers after it made it; a strided slice takes other kernel paths.
                    out.register_hook(own_tensor)
        return torch.cat(outs, dim=1)

    def _exact_for(self, x: torch.Tensor) -> bool:
        key = (
            tuple(x.shape),
            x.dtype,
            x.device,
            _format_of(x),
            torch.get_num_threads(),
            torch.backends.mkldnn.enabled,
        )
        if key not in self._one_call_is_exact:
            self._one_call_is_exact[key] = self._probe(x)
        return self._one_call_is_exact[key]

    @torch.enable_grad()
    def _probe(self, x: torch.Tensor) -> bool:
        generator = torch.Generator(x.device).manual_seed(0)

        def random(like: torch.Tensor) -> torch.Tensor:
            values = torch.randn(like.shape, generator=generator, device=like.device)
            return values.to(like.dtype).contiguous(memory_format=_format_of(like))

        values = [random(x), *(None if p is None else random(p) for p in self._params())]
        grad_out: _OptionalTensor = None
        results = []
        self._probing = True
        try:
            for compute in (self._together, self._one_by_one):
                leaves = [None if v is None else v.clone().requires_grad_() for v in values]
                out = compute(leaves[0], leaves[1:], self._state())
                grad_out = random(out) if grad_out is None else grad_out
                out.backward(grad_out)
                results.append([out.detach(), *(None if v is None else v.grad for v in leaves)])
        finally:
            self._probing = False
        return all(a is None or torch.equal(a, b) for a, b in zip(*results, strict=True))


def own_tensor(part: torch.Tensor) -> torch.Tensor:
    """A slice of a joined 4-D tensor (one network's channels, or one cell of a batch) as a
    tensor of its own, dense in the joined layout: what a lone network computes on. A slice
    that is already dense is returned as it is."""
    return part.contiguous(memory_format=_format_of(part))


def _format_of(x: torch.Tensor) -> torch.memory_format:
    """channels_last for a 4-D tensor (or a channel slice of one) whose channels are
    innermost and that is not also plainly contiguous; else the plain layout."""
    channels_innermost = x.dim() == 4 and x.stride(1) == 1 and x.shape[1] > 1
    if channels_innermost and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


class StackedConv2d(_SideBySide, nn.Conv2d):
    """``networks`` convolutions of one shape as one grouped convolution (see _SideBySide)."""

    def __init__(self, *args: Any, networks: int, exact: bool = True, **kwargs: Any) -> None:
        nn.Conv2d.__init__(self, *args, **kwargs)
        self._setup(networks, exact)

    def _params(self) -> list[_OptionalTensor]:
        return [self.weight, self.bias]

    def _together(
        self, x: torch.Tensor, params: list[_OptionalTensor], state: list[_OptionalTensor]
    ) -> torch.Tensor:
        return self._convolve(x, params, self.groups)

    def _part(
        self, x: torch.Tensor, params: list[_OptionalTensor], state: list[_OptionalTensor]
    ) -> torch.Tensor:
        return self._convolve(x, params, self.groups // self.networks)

    def _convolve(
        self, x: torch.Tensor, params: list[_OptionalTensor], groups: int
    ) -> torch.Tensor:
        padding: Any = self.padding
        if self.padding_mode != "zeros":
            x = nn.functional.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        weight, bias = params
        return nn.functional.conv2d(x, weight, bias, self.stride, padding, self.dilation, groups)


class StackedBatchNorm2d(_SideBySide, nn.BatchNorm2d):
    """``networks`` BatchNorm layers as one over all their channels (see _SideBySide).

    With one image per network, the per-channel statistics are each network's own.
    """

    def __init__(self, *args: Any, networks: int, exact: bool = True, **kwargs: Any) -> None:
        nn.BatchNorm2d.__init__(self, *args, **kwargs)
        self._setup(networks, exact)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
        return _SideBySide.forward(self, x)

    def _params(self) -> list[_OptionalTensor]:
        return [self.weight, self.bias]

    def _state(self) -> list[_OptionalTensor]:
        if self._probing or not self.track_running_stats:
            return [None, None]
        return [self.running_mean, self.running_var]

    def _together(
        self, x: torch.Tensor, params: list[_OptionalTensor], state: list[_OptionalTensor]
    ) -> torch.Tensor:
        # As nn.BatchNorm2d: batch statistics when training (updating the running ones).
        momentum = self.momentum
        if momentum is None:  # cumulative average
            momentum = 1.0 / float(self.num_batches_tracked) if self.num_batches_tracked else 0.0
        use_batch = self.training or state[0] is None
        return nn.functional.batch_norm(
            x, state[0], state[1], params[0], params[1], use_batch, momentum, self.eps
        )


class StackedUpsample(_SideBySide, nn.Upsample):
    """``networks`` upsampling layers as one (see _SideBySide): interpolation vectorised over
    channels treats a remainder of channels apart, so it can round differently too."""

    def __init__(self, like: nn.Upsample, networks: int, *, exact: bool = True) -> None:
        nn.Upsample.__init__(
            self,
            size=like.size,
            scale_factor=like.scale_factor,
            mode=like.mode,
            align_corners=like.align_corners,
            recompute_scale_factor=like.recompute_scale_factor,
        )
        self._setup(networks, exact)

    def _together(
        self, x: torch.Tensor, params: list[_OptionalTensor], state: list[_OptionalTensor]
    ) -> torch.Tensor:
        return nn.Upsample.forward(self, x)


# Activations built on exp, erf or tanh, whose vector and scalar CPU kernels can round
# differently (all but Tanh do on this machine's AVX-512); see StackedActivation. ReLU and
# LeakyReLU compare and multiply, which every code path rounds alike.
TRANSCENDENTAL_ACTIVATIONS = (nn.Sigmoid, nn.Tanh, nn.ELU, nn.GELU, nn.SiLU, nn.Softplus, nn.Mish)


class StackedActivation(_SideBySide, nn.Module):
    """``networks`` copies of an elementwise activation such as the sigmoid (see _SideBySide).

    PyTorch's CPU kernels compute such functions with vector instructions, except for the
    last elements of a thread's share, whose scalar code can differ in the last bit. A joined
    tensor puts other elements there (a longer tensor, split between threads elsewhere), and
    a random probe rarely meets the values that differ, so with ``exact`` each network's
    part is always computed on its own.
    """

    def __init__(self, like: nn.Module, networks: int, *, exact: bool = True) -> None:
        nn.Module.__init__(self)
        self.activation = like  # stack_networks's own copy
        self._setup(networks, exact)

    def _together(
        self, x: torch.Tensor, params: list[_OptionalTensor], state: list[_OptionalTensor]
    ) -> torch.Tensor:
        return self.activation(x)

    def _exact_for(self, x: torch.Tensor) -> bool:
        return False


def _stacked_conv(like: nn.Conv2d, parts: Sequence[nn.Conv2d], exact: bool) -> nn.Conv2d:
    g = len(parts)
    conv = StackedConv2d(
        like.in_channels * g,
        like.out_channels * g,
        like.kernel_size,
        stride=like.stride,
        padding=like.padding,
        dilation=like.dilation,
        groups=like.groups * g,
        bias=like.bias is not None,
        padding_mode=like.padding_mode,
        device=like.weight.device,
        dtype=like.weight.dtype,
        networks=g,
        exact=exact,
    )
    with torch.no_grad():
        conv.weight.copy_(torch.cat([p.weight for p in parts]))
        if conv.bias is not None:
            conv.bias.copy_(torch.cat([p.bias for p in parts]))
    return conv


def _stacked_batch_norm(
    like: nn.BatchNorm2d, parts: Sequence[nn.BatchNorm2d], exact: bool
) -> nn.BatchNorm2d:
    norm = StackedBatchNorm2d(
        like.num_features * len(parts),
        eps=like.eps,
        momentum=like.momentum,
        affine=like.affine,
        track_running_stats=like.track_running_stats,
        device=like.weight.device if like.affine else None,
        dtype=like.weight.dtype if like.affine else None,
        networks=len(parts),
        exact=exact,
    )
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            if getattr(norm, name) is not None:
                getattr(norm, name).copy_(torch.cat([getattr(p, name) for p in parts]))
        if norm.num_batches_tracked is not None:
            norm.num_batches_tracked.copy_(parts[0].num_batches_tracked)
    return norm
