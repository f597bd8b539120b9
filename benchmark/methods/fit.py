"""One fitting loop for every untrained-network prior (DIP, Deep Decoder).

A network maps a fixed random input ``z`` to an image; Adam fits its weights so that the
image, passed through the task's forward operator, matches the observation:

- denoising: ``||f(z) - y||^2``
- inpainting: ``||m * f(z) - m * y||^2`` (known pixels only)
- super-resolution: ``||D f(z) - y||^2`` with D DIP's Lanczos-2 downsampler.

The operator comes from each observation's forward model (``Observation.physics``, see
:mod:`benchmark.forward`): the object that made the observation is the one in the loss.

From a single run it returns several outputs:

``last``       the output of the final weights: one forward pass of the un-perturbed input
               after the last step (and after a restore of the last good weights, if the
               final check made one), never a diverged or rejected iterate;
``ema``        the exponential moving average ``avg = d * avg + (1 - d) * out`` (d = 0.99);
``es``         ES-WMV (no ground truth): the output at the iteration whose window of the last
               W outputs has the smallest variance, frozen once the variance has not improved
               for P iterations. ``info["es_stop_iteration"]`` is None if patience never ran
               out: ES-WMV has then detected nothing and ``es`` is only the minimum so far;
``best_loss``  the Deep Decoder's rule: a step is a new best when its loss is below
               1/1.005 of the best so far, and the output kept is that of the weights after
               that step (the next step's output, or the final weights' output);
``oracle``     the best PSNR against the clean image over every output the fit tracks (each
               step's output, the EMA at each step, and the final weights' output), only when
               a monitoring reference is given; ``info["oracle_output"]`` says which. It uses
               the ground truth and is labelled as an oracle.

Speed. The hot loop never waits for the device: trackers, curves and snapshots live in
device tensors updated in place, and the host reads them every ``check_every`` steps
(backtracking and NaN checks) and at the end. :func:`fit_many` trains several cells of the
same network and image size in one pass (see :func:`~benchmark.methods.networks.stack_networks`):
each cell keeps its own weights, Adam state, BatchNorm statistics, input, noise stream and
outputs, so its result equals the one-at-a-time result: bit for bit on the CPU, up to float
rounding on CUDA.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from benchmark.degradations import Observation
from benchmark.forward import ForwardModel
from benchmark.methods.networks import own_tensor, padded_size, stack_networks
from benchmark.methods.registry import Restoration

# Up to this many GFLOP per step (forward and backward), CPU fits use PyTorch's native
# convolutions: faster than oneDNN for such small networks (measured: 6.6 vs 7.9 ms for DIP
# with 32 channels at 32x32, 0.13 GFLOP; 22 vs 17 ms with 128 channels, 1.8 GFLOP), and a
# grouped native convolution computes each group as a lone one does, so a batch of such
# cells needs no per-network calls to stay exact (see stack_networks).
NATIVE_CONV_GFLOP = 0.5
# Deep Decoder's best-loss rule: a new best needs the loss below 1/1.005 of the best so far.
BEST_LOSS_MARGIN = 1.005
CURVE_COLUMNS = ("iteration", "loss", "psnr_obs", "psnr_last", "psnr_ema", "es_variance")
MEMORY_FORMATS = {
    "auto": None,
    "channels_last": torch.channels_last,
    "contiguous": torch.contiguous_format,
}


class FitError(RuntimeError):
    """A fit that cannot produce a trustworthy output (for example a persistent NaN loss)."""


@dataclass(frozen=True)
class FitConfig:
    """Optimisation settings; every field can be overridden from a preset or a suite.

    The last five fields change speed, not the method: ``memory_format`` (``auto``:
    channels_last, measured faster with oneDNN on the CPU and what tensor cores want, except
    with native CPU convolutions, whose grouped channels_last kernels differ in rounding),
    ``cpu_convolutions`` (``auto``: PyTorch's native kernels for steps of at most
    ``NATIVE_CONV_GFLOP``, oneDNN above; see :func:`cpu_convolution_backend`),
    ``tf32`` (TensorFloat-32 convolutions and matmuls on CUDA), ``compile``
    (``torch.compile`` the network) and ``bf16`` (bfloat16 autocast of the forward pass; the
    loss and every tracker stay float32). ``compile`` and ``bf16`` are off by default: see
    the README for their measured effect on PSNR.
    """

    iterations: int = 3000
    lr: float = 0.01
    reg_noise_std: float = 0.0
    reg_noise_decay: float = 1.0  # the input noise's std is multiplied by this ...
    reg_noise_decay_every: int = 0  # ... every this many steps (0: never; DD's inpainting)
    input: str = "noise"  # "noise": U(0, 1) * input_scale; "meshgrid": 2 coordinate channels
    input_scale: float = 0.1
    ema_decay: float = 0.99
    es_window: int = 100
    es_patience: int = 1000
    backtrack_db: float = 5.0
    check_every: int = 25
    record_every: int = 10
    snapshots: tuple[int, ...] = ()
    max_restores: int = 5
    stop_early: bool = False
    memory_format: str = "auto"
    cpu_convolutions: str = "auto"
    tf32: bool = True
    compile: bool = False
    bf16: bool = False

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> FitConfig:
        """Build from a mapping, rejecting unknown keys with the list of valid ones."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise KeyError(f"unknown fit option(s) {unknown}; valid: {', '.join(sorted(names))}")
        values = dict(values)
        if "snapshots" in values:
            values["snapshots"] = tuple(values["snapshots"])
        return replace(cls(), **values)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch."""
    if str(device) != "auto":
        chosen = torch.device(device)
        if chosen.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available here")
        if chosen.type == "cuda" and (chosen.index or 0) >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} requested but there are {torch.cuda.device_count()} GPU(s)"
            )
        mps = getattr(torch.backends, "mps", None)
        if chosen.type == "mps" and not (mps and mps.is_available()):
            raise ValueError(f"device {device!r} requested but MPS is not available here")
        return chosen
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(H, W, C)`` numpy -> ``(1, C, H, W)`` float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """``(1, C, H, W)`` tensor -> ``(H, W, C)`` float32 numpy."""
    return tensor[0].detach().float().cpu().numpy().transpose(1, 2, 0).copy()


def make_input(
    kind: str, channels: int, size: tuple[int, int], scale: float, generator: torch.Generator
) -> torch.Tensor:
    """The fixed network input ``z`` on the CPU: uniform noise times ``scale``, or a meshgrid."""
    h, w = size
    if kind == "noise":
        return torch.rand(1, channels, h, w, generator=generator) * scale
    if kind == "meshgrid":
        ys = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
        xs = torch.linspace(0, 1, w).view(1, w).expand(h, w)
        return torch.stack([xs, ys])[None].contiguous()
    raise KeyError(f"unknown input kind {kind!r}; known: noise, meshgrid")


class _Problem:
    """The data terms of B cells of one task and shape: what each output is compared with."""

    def __init__(
        self, observations: Sequence[Observation], device: torch.device, *, exact: bool = True
    ) -> None:
        first = observations[0]
        self.exact = exact
        kinds = {(o.task, o.y.shape, o.factor) for o in observations}
        if len(kinds) > 1:
            raise ValueError(
                "cells fitted together need the same task, observation shape and factor; "
                f"got {sorted(map(str, kinds))}"
            )
        self.y = torch.cat([to_tensor(o.y, device) for o in observations])
        self.channels = first.y.shape[2]
        self.size = first.output_shape[:2]
        fractions = [1.0] * len(observations)
        self.mask: torch.Tensor | None = None
        # Each cell's forward model: the object that made its observation.
        models = [o.physics for o in observations]
        self.operator: ForwardModel | None = None
        if first.task == "inpainting":
            masks = [model.mask for model in models]  # type: ignore[attr-defined]
            self.mask = torch.cat([to_tensor(m, device) for m in masks])
            self.masked_y = self.y * self.mask
            fractions = [float(m.mean()) or 1.0 for m in masks]
        elif first.task == "super_resolution":
            self.operator = models[0]
        # The loss is a mean over all pixels; PSNR against the observation uses known ones.
        self.data_fraction = torch.tensor(fractions, device=device)

    def losses(self, out: torch.Tensor) -> torch.Tensor:
        """Each cell's mean squared error, shape ``(B,)``."""
        if self.mask is not None:
            error = F.mse_loss(out * self.mask, self.masked_y, reduction="none")
        elif self.operator is not None:
            # Cell by cell: a batch of B through the downsampler rounds differently from B
            # lone images, and DIP's training would amplify that.
            low = torch.cat([self.operator(cell) for cell in out.split(1)])
            error = F.mse_loss(low, self.y, reduction="none")
        else:
            error = F.mse_loss(out, self.y, reduction="none")
        if len(error) == 1 or not self.exact:
            return error.mean(dim=(1, 2, 3))
        # A batch interleaves its cells in memory, and a mean over such a strided view sums in
        # another order than over a lone cell's dense error: the loss would differ in the last
        # bits, enough to change which step has the best loss. With ``exact`` each cell is
        # laid out and reduced as a lone cell is.
        return torch.cat([own_tensor(cell).mean(dim=(1, 2, 3)) for cell in error.split(1)])


def _psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    return -10.0 * torch.log10(mse)


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    """``||x_b||^2`` per cell without materialising ``x ** 2``."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1).square()


class _Trackers:
    """Device-side bookkeeping of EMA, best loss, ES-WMV, oracle and curves for B cells.

    Image-sized state and scratch buffers are allocated once and updated in place; the
    per-cell scalars are ``(B,)`` tensors. No update reads anything back to the host.
    ES-WMV's window variance is kept as running sums of the outputs' differences from a
    reference image (re-centred every window), which is exact up to float rounding and costs
    O(image) per step instead of O(window x image).
    """

    def __init__(
        self,
        cfg: FitConfig,
        like: torch.Tensor,
        reference: torch.Tensor | None,
        data_fraction: torch.Tensor | None = None,
        *,
        exact: bool = True,
    ) -> None:
        dev, cells = like.device, like.shape[0]
        self.cfg = cfg
        self.exact = exact
        self.reference = reference
        self.data_fraction = (
            torch.ones(cells, device=dev) if data_fraction is None else data_fraction
        )
        self.pixels = like[0].numel()

        def scalars(value: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.full((cells,), value, dtype=dtype, device=dev)

        self.ema = torch.zeros_like(like)
        self.best_loss = scalars(math.inf)
        self.best_loss_out = torch.zeros_like(like)
        self.best_loss_it = scalars(0, torch.long)
        self.best_pending = scalars(False, torch.bool)  # a best step awaiting its weights' output
        self.window = torch.zeros((cfg.es_window, *like.shape), device=dev)
        self.centre = torch.zeros_like(like)
        self.sum = torch.zeros_like(like)
        self.sumsq = scalars(0.0)
        self.current_var = scalars(math.inf)
        self.es_var = scalars(math.inf)
        self.es_out = torch.zeros_like(like)
        self.es_it = scalars(0, torch.long)
        self.es_stopped = scalars(False, torch.bool)
        self.es_stop_it = scalars(0, torch.long)
        self.oracle_mse = scalars(math.inf)
        self.oracle_out = torch.zeros_like(like)
        self.oracle_it = scalars(0, torch.long)
        self.oracle_from_ema = scalars(False, torch.bool)
        rows = cfg.iterations // cfg.record_every
        self.curves = torch.full((rows, cells, len(CURVE_COLUMNS)), math.nan, device=dev)
        self.snapshots: dict[int, torch.Tensor] = {}
        self.nonfinite = scalars(False, torch.bool)
        self._out = torch.zeros_like(like)  # scratch: the guarded output
        self._new = torch.zeros_like(like)  # scratch: differences
        self._old = torch.zeros_like(like)

    @staticmethod
    def _per_cell(flags: torch.Tensor) -> torch.Tensor:
        return flags.view(-1, 1, 1, 1)

    def _keep_if(self, better: torch.Tensor, value: torch.Tensor, store: torch.Tensor) -> None:
        """``store[b] = value[b]`` where ``better[b]``, in place."""
        mask = better if store.dim() == 1 else self._per_cell(better)
        torch.where(mask, value, store, out=store)

    def _es_update(self, it: int, out: torch.Tensor) -> None:
        cfg, w = self.cfg, self.cfg.es_window
        slot = (it - 1) % w
        if it > w and slot == 0:  # re-centre on the window's mean: keeps the sums small
            if self.exact:  # cell by cell: the mean's vector loop would meet other elements
                for cell in range(len(self.centre)):
                    part = slice(cell, cell + 1)
                    torch.mean(self.window[:, part], dim=0, out=self.centre[part])
            else:
                torch.mean(self.window, dim=0, out=self.centre)
            self.sum.zero_()  # the differences from their own mean sum to zero
            self.sumsq = _squared_norms((self.window - self.centre).transpose(0, 1))
        torch.sub(out, self.centre, out=self._new)
        self.sum.add_(self._new)
        self.sumsq.add_(_squared_norms(self._new))
        if it > w:
            torch.sub(self.window[slot], self.centre, out=self._old)
            self.sum.sub_(self._old)
            self.sumsq.sub_(_squared_norms(self._old))
        self.window[slot].copy_(out)
        if it < w:
            return
        var = (self.sumsq / w - _squared_norms(self.sum) / w**2) / self.pixels
        self.current_var = var
        better = (var < self.es_var) & ~self.es_stopped
        self._keep_if(better, var, self.es_var)
        self.es_it.masked_fill_(better, it)
        self._keep_if(better, out, self.es_out)
        newly = ~self.es_stopped & (it - self.es_it >= cfg.es_patience)
        self.es_stop_it.masked_fill_(newly, it)
        self.es_stopped |= newly

    @torch.no_grad()
    def update(self, it: int, out: torch.Tensor, losses: torch.Tensor) -> None:
        """Take step ``it``'s outputs ``(B, C, H, W)`` and losses ``(B,)``."""
        finite = torch.isfinite(losses)
        self.nonfinite |= ~finite
        # A NaN step must not poison the trackers: such a cell sees its EMA instead.
        torch.where(self._per_cell(finite), out, self.ema, out=self._out)
        out = self._out
        if it == 1:
            self.ema.copy_(out)
        else:
            self.ema.lerp_(out, 1 - self.cfg.ema_decay)
        # This step's output comes from the weights the previous best step left.
        self._keep_if(self.best_pending, out, self.best_loss_out)
        better = losses * BEST_LOSS_MARGIN < self.best_loss
        self._keep_if(better, losses, self.best_loss)
        self.best_loss_it.masked_fill_(better, it)
        self.best_pending = better
        self._es_update(it, out)
        if self.reference is not None:
            self._oracle_update(it, out, from_ema=False)
            self._oracle_update(it, self.ema, from_ema=True)
        if it in self.cfg.snapshots:
            self.snapshots[it] = out.clone()
        if it % self.cfg.record_every == 0:
            self._record(it, out, losses)

    def _oracle_update(self, it: int, image: torch.Tensor, *, from_ema: bool) -> None:
        torch.sub(image, self.reference, out=self._new)
        mse = _squared_norms(self._new) / self.pixels
        better = mse < self.oracle_mse
        self._keep_if(better, mse, self.oracle_mse)
        self._keep_if(better, image, self.oracle_out)
        self.oracle_it.masked_fill_(better, it)
        self.oracle_from_ema.masked_fill_(better, from_ema)

    @torch.no_grad()
    def finish(self, it: int, final: torch.Tensor) -> None:
        """Take the final weights' output: it settles a pending best-loss step and is a
        candidate of the oracle."""
        self._keep_if(self.best_pending, final, self.best_loss_out)
        self.best_pending.zero_()
        if self.reference is not None:
            self._oracle_update(it, final, from_ema=False)

    def _record(self, it: int, out: torch.Tensor, losses: torch.Tensor) -> None:
        row = self.curves[it // self.cfg.record_every - 1]
        row[:, 0] = it
        row[:, 1] = losses
        row[:, 2] = _psnr_from_mse(losses / self.data_fraction)
        if self.reference is not None:
            for column, image in ((3, out), (4, self.ema)):
                error = image.clamp(0, 1).sub_(self.reference)
                row[:, column] = _psnr_from_mse(_squared_norms(error) / self.pixels)
        row[:, 5] = self.current_var


class _Checkpoint:
    """The last good weights and Adam state, copied into buffers allocated once."""

    def __init__(self, net: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.net, self.optimizer = net, optimizer
        self.buffers: list[torch.Tensor] = []
        self.with_optimizer_state = False

    def _live(self) -> list[torch.Tensor]:
        tensors = list(self.net.state_dict().values())
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                tensors += [
                    v for v in self.optimizer.state.get(p, {}).values() if torch.is_tensor(v)
                ]
        return tensors

    def save(self) -> None:
        live = self._live()
        if len(live) != len(self.buffers):  # first save, or Adam's state has just appeared
            self.buffers = [t.detach().clone() for t in live]
        else:
            torch._foreach_copy_(self.buffers, [t.detach() for t in live])
        self.with_optimizer_state = bool(self.optimizer.state)

    @torch.no_grad()
    def restore(self) -> None:
        if not self.with_optimizer_state:
            self.optimizer.state.clear()  # saved before Adam's first step
        live = self._live()
        torch._foreach_copy_(live, self.buffers[: len(live)])


def step_gflop(net: nn.Module, observation: Observation) -> float:
    """GFLOP of one forward and backward pass of ``net`` for this observation.

    Counted on a copy on the meta device (nothing is computed or allocated): the forward
    pass's count times three, as the backward pass computes the input and weight gradients.
    """
    return step_gflop_at(net, *observation.output_shape[:2])


def step_gflop_at(net: nn.Module, h: int, w: int) -> float:
    """:func:`step_gflop` for an ``h`` x ``w`` output."""
    ph, pw = padded_size(h, net.multiple, net.minimum), padded_size(w, net.multiple, net.minimum)
    shape = (1, net.input_channels, ph // net.input_downscale, pw // net.input_downscale)
    cfg = getattr(net, "cfg", None)
    try:
        hash(cfg)
    except TypeError:
        cfg = None
    if cfg is not None and getattr(net, "groups", 1) == 1:
        # Counting takes 0.2 s, as much as ten steps of a CIFAR-size cell: once per
        # architecture and size (a network built from a frozen config is that config's).
        return _architecture_gflop(type(net), cfg, shape)
    return _count_gflop(copy.deepcopy(net).to("meta"), shape)


@functools.lru_cache(maxsize=256)
def _architecture_gflop(kind: type[nn.Module], cfg: Any, shape: tuple[int, ...]) -> float:
    with torch.device("meta"):
        net = kind(cfg)
    return _count_gflop(net, shape)


def _count_gflop(meta: nn.Module, shape: tuple[int, ...]) -> float:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        meta(torch.empty(shape, device="meta"))
    return 3 * counter.get_total_flops() / 1e9


def cpu_convolution_backend(cfg: FitConfig, gflop: float) -> str:
    """``native`` or ``onednn``: the CPU convolution kernels for a step of ``gflop``."""
    choice = cfg.cpu_convolutions
    if choice not in ("auto", "native", "onednn"):
        raise KeyError(f"unknown cpu_convolutions {choice!r}; known: auto, native, onednn")
    if choice == "auto":
        return "native" if gflop <= NATIVE_CONV_GFLOP else "onednn"
    return choice


@contextlib.contextmanager
def _device_settings(dev: torch.device, cfg: FitConfig, gflop: float) -> Iterator[None]:
    """The convolution kernels for the duration of a fit (restored afterwards): on the CPU
    native or oneDNN, on CUDA TF32 and cuDNN autotuning."""
    if dev.type == "cpu":
        onednn = cpu_convolution_backend(cfg, gflop) == "onednn"
        previous = torch.backends.mkldnn.enabled
        torch.backends.mkldnn.enabled = onednn  # (its flags() context also sets oneDNN TF32)
        try:
            yield
        finally:
            torch.backends.mkldnn.enabled = previous
        return
    if dev.type != "cuda":
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
    try:
        with torch.backends.cudnn.flags(enabled=True, benchmark=True, allow_tf32=cfg.tf32):
            yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul


class _Loop:
    """B cells fitted together: one (stacked) network, one optimizer, per-cell trackers."""

    def __init__(
        self,
        nets: Sequence[nn.Module],
        observations: Sequence[Observation],
        cfg: FitConfig,
        seeds: Sequence[int],
        dev: torch.device,
        references: Sequence[np.ndarray] | None,
    ) -> None:
        if cfg.memory_format not in MEMORY_FORMATS:
            raise KeyError(
                f"unknown memory_format {cfg.memory_format!r}; known: {', '.join(MEMORY_FORMATS)}"
            )
        fmt = MEMORY_FORMATS[cfg.memory_format]
        if fmt is None:
            native = dev.type == "cpu" and not torch.backends.mkldnn.enabled
            fmt = torch.contiguous_format if native else torch.channels_last
        self.cfg, self.cells = cfg, len(nets)
        # Exact stacking on the CPU, where a lone cell's numbers are reproducible bit for
        # bit; cuDNN's autotuned kernels make a lone cell's own runs differ in the last bits,
        # and torch.compile fuses differently for other sizes.
        exact = dev.type == "cpu" and not cfg.compile
        self.problem = _Problem(observations, dev, exact=exact)
        h, w = self.problem.size
        net0 = nets[0]
        ph = padded_size(h, net0.multiple, net0.minimum)
        pw = padded_size(w, net0.multiple, net0.minimum)
        self.crop = (
            slice((ph - h) // 2, (ph - h) // 2 + h),
            slice((pw - w) // 2, (pw - w) // 2 + w),
        )
        z_size = (ph // net0.input_downscale, pw // net0.input_downscale)
        zs = [
            make_input(
                cfg.input,
                net0.input_channels,
                z_size,
                cfg.input_scale,
                torch.Generator().manual_seed(s),
            )
            for s in seeds
        ]
        self.z = torch.cat(zs, dim=1).to(dev).contiguous(memory_format=fmt)
        self.net = stack_networks(nets, exact=exact)
        self.net = self.net.to(dev).to(memory_format=fmt).train()
        self.forward = torch.compile(self.net) if cfg.compile else self.net
        # Fused Adam on the CPU rounds its vectorised tail differently from the body, so a
        # batch's stacked parameters would no longer update exactly as a lone cell's.
        self.optimizer = torch.optim.Adam(
            self.net.parameters(), lr=cfg.lr, fused=True if dev.type == "cuda" else None
        )
        # One noise stream per cell, drawn into contiguous slices: the numbers a lone cell draws.
        self.noise_gens = [torch.Generator(device=dev).manual_seed(s + 1) for s in seeds]
        self.perturbation = torch.empty(self.z.shape, device=dev)
        self.noise_parts = self.perturbation.chunk(self.cells, dim=1)
        self.z_in = torch.empty_like(self.z)
        reference = (
            None if references is None else torch.cat([to_tensor(r, dev) for r in references])
        )
        like = torch.zeros(self.cells, self.problem.channels, h, w, device=dev)
        self.trackers = _Trackers(cfg, like, reference, self.problem.data_fraction, exact=exact)
        self.bf16 = cfg.bf16
        self.device_type = dev.type
        self.track = True  # False: a bare step, for measuring the bookkeeping's cost
        # Backtracking restores one cell's weights and Adam state: only for a lone cell.
        self.checkpoint = _Checkpoint(self.net, self.optimizer) if self.cells == 1 else None

    def step(self, it: int) -> torch.Tensor:
        """One optimisation step of every cell; returns the losses ``(B,)`` (on the device)."""
        cfg = self.cfg
        net_input = self.z
        if cfg.reg_noise_std > 0:
            std = cfg.reg_noise_std
            if cfg.reg_noise_decay_every:
                std *= cfg.reg_noise_decay ** ((it - 1) // cfg.reg_noise_decay_every)
            for generator, part in zip(self.noise_gens, self.noise_parts, strict=True):
                part.normal_(0.0, std, generator=generator)
            torch.add(self.z, self.perturbation, out=self.z_in)
            net_input = self.z_in
        out = self._outputs(net_input)
        losses = self.problem.losses(out)
        self.optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # cell b's weights only see cell b's loss
        self.optimizer.step()
        if self.track:
            self.trackers.update(it, out.detach(), losses.detach())
        return losses

    def _outputs(self, net_input: torch.Tensor) -> torch.Tensor:
        """The network's output for ``net_input``, cropped to the image, ``(B, C, H, W)``."""
        if self.bf16:
            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                out = self.forward(net_input)
        else:
            out = self.forward(net_input)
        return out[:, :, self.crop[0], self.crop[1]].unflatten(1, (self.cells, -1))[0].float()

    @torch.no_grad()
    def final_output(self) -> torch.Tensor:
        """Every cell's output from its final weights: the un-perturbed input ``z``, one
        forward pass (BatchNorm in training mode, as in every step and in DIP's code)."""
        return self._outputs(self.z)

    def psnr_obs(self, losses: torch.Tensor) -> np.ndarray:
        """The host's copy of each cell's PSNR against the observation (one device sync)."""
        return _psnr_from_mse(losses.detach() / self.problem.data_fraction).cpu().numpy()


def fit(
    net: nn.Module,
    observation: Observation,
    cfg: FitConfig,
    *,
    seed: int = 0,
    device: str | torch.device = "auto",
    monitor_reference: np.ndarray | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Restoration:
    """Fit ``net`` to ``observation`` and collect its outputs.

    Parameters
    ----------
    net : nn.Module
        A freshly initialised network with the attributes ``input_channels`` and
        ``input_downscale`` (the input ``z`` is that many times smaller than the output),
        ``multiple`` and ``minimum`` (the output is padded to a multiple of ``multiple``, at
        least ``minimum``, and cropped back to the image).
    observation : Observation
        Denoising, inpainting or super-resolution data.
    cfg : FitConfig
        Optimisation settings.
    seed : int
        Seeds the input ``z`` and the per-step input perturbation.
    device : str or torch.device
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    monitor_reference : ndarray, optional
        The clean image, used only for the PSNR curves and the ``oracle`` output; every
        other output is computed without it.
    progress : callable, optional
        Called as ``progress(done, total)`` at each check point.

    Raises
    ------
    FitError
        If the loss stays NaN/Inf after ``cfg.max_restores`` restores of the last good weights.
    """
    references = None if monitor_reference is None else [monitor_reference]
    result = fit_many(
        [net],
        [observation],
        cfg,
        seeds=[seed],
        device=device,
        monitor_references=references,
        progress=progress,
    )[0]
    if isinstance(result, FitError):
        raise result
    return result


def fit_many(
    nets: Sequence[nn.Module],
    observations: Sequence[Observation],
    cfg: FitConfig,
    *,
    seeds: Sequence[int],
    device: str | torch.device = "auto",
    monitor_references: Sequence[np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Restoration | FitError]:
    """Fit several cells in one pass: each ``nets[b]`` to ``observations[b]`` with ``seeds[b]``.

    The networks must share one architecture and the observations one task and shape. Each
    cell keeps its own weights, Adam state, BatchNorm statistics, input ``z``, noise stream
    and outputs; its result equals :func:`fit` of that cell alone, bit for bit on the CPU
    (see :func:`~benchmark.methods.networks.stack_networks`) and up to float rounding on
    CUDA or with ``compile``. A
    cell that needs backtracking (a PSNR drop or a NaN) is re-fitted alone afterwards, as
    restoring one cell's weights inside a batch would shift its Adam step count. ``nets``
    are left untouched when there are several (one alone is trained in place, as by
    :func:`fit`).

    Returns
    -------
    list
        One :class:`Restoration` per cell, or the :class:`FitError` of a cell that failed.
    """
    cells = len(nets)
    if not (cells == len(observations) == len(seeds)):
        raise ValueError("fit_many needs one observation and one seed per network")
    if monitor_references is not None and len(monitor_references) != cells:
        raise ValueError("fit_many needs one monitoring reference per network (or none)")
    if cells > 1 and cfg.stop_early:
        raise ValueError("cells that stop early cannot share a batch; fit them one at a time")
    dev = resolve_device(device)
    started = time.perf_counter()
    gflop = step_gflop(nets[0], observations[0]) if dev.type == "cpu" else 0.0
    with _device_settings(dev, cfg, gflop):
        loop = _Loop(nets, observations, cfg, seeds, dev, monitor_references)
        try:
            iterations, restores, refit = _train(loop, progress)
        except FitError as err:
            return [err]
        final = loop.final_output()
        loop.trackers.finish(iterations, final)
    seconds = (time.perf_counter() - started) / cells
    results: list[Restoration | FitError] = []
    for b in range(cells):
        if refit[b]:
            references = None if monitor_references is None else [monitor_references[b]]
            results += fit_many(
                [nets[b]],
                [observations[b]],
                cfg,
                seeds=[seeds[b]],
                device=dev,
                monitor_references=references,
            )
            continue
        result = _result(loop.trackers, final, b, iterations, restores, cfg, seconds, dev)
        result.info["batch"] = cells  # cells fitted together (1: alone)
        results.append(result)
    return results


def _train(
    loop: _Loop,
    progress: Callable[[int, int], None] | None,
    iterations: range | None = None,
) -> tuple[int, int, np.ndarray]:
    """Run the loop (all iterations, or a range of them: the speed report times blocks);
    returns the last iteration done, the restores and the cells to re-fit."""
    cfg, cells = loop.cfg, loop.cells
    checkpoint = loop.checkpoint
    if checkpoint is not None and iterations is None:
        checkpoint.save()
    last_psnr_obs = np.full(cells, -np.inf)
    refit = np.zeros(cells, dtype=bool)
    restores = consecutive_bad = 0
    it = 0
    for it in iterations or range(1, cfg.iterations + 1):
        losses = loop.step(it)
        if it % cfg.check_every and it != cfg.iterations:
            continue
        # Host check point: backtracking, NaN/Inf, early stop, progress.
        psnr_obs = loop.psnr_obs(losses)
        bad = loop.trackers.nonfinite.cpu().numpy() | ~np.isfinite(psnr_obs)
        dropped = bad | (psnr_obs < last_psnr_obs - cfg.backtrack_db)
        if checkpoint is None:  # a batch: a cell in trouble is re-fitted alone later
            refit |= dropped
            last_psnr_obs = np.where(refit, last_psnr_obs, psnr_obs)
            if refit.all():
                break
        elif dropped[0]:
            restores += 1
            consecutive_bad = consecutive_bad + 1 if bad[0] else 0
            if consecutive_bad > cfg.max_restores:
                raise FitError(
                    f"loss was NaN/Inf at iteration {it} after {cfg.max_restores} restores of "
                    "the last good weights; try a lower learning rate"
                )
            checkpoint.restore()
            loop.trackers.nonfinite.zero_()
        else:
            consecutive_bad = 0
            checkpoint.save()
            last_psnr_obs = psnr_obs
        if progress is not None:
            progress(it, cfg.iterations)
        if cfg.stop_early and bool(loop.trackers.es_stopped.all()):
            break
    return it, restores, refit


def _result(
    t: _Trackers,
    final: torch.Tensor,
    b: int,
    iterations: int,
    restores: int,
    cfg: FitConfig,
    seconds: float,
    dev: torch.device,
) -> Restoration:
    """Cell ``b``'s outputs, curves and facts."""
    cell = slice(b, b + 1)
    es_found = bool(torch.isfinite(t.es_var[b]))
    last = to_numpy(final[cell])
    outputs = {
        "last": last,
        "ema": to_numpy(t.ema[cell]),
        # Fewer iterations than the window: no variance at all, so the final weights' output.
        "es": to_numpy(t.es_out[cell]) if es_found else last,
        "best_loss": to_numpy(t.best_loss_out[cell]),
    }
    has_reference = t.reference is not None
    if has_reference:
        outputs["oracle"] = to_numpy(t.oracle_out[cell])
    curves_np = t.curves[:, b].cpu().numpy()
    valid = ~np.isnan(curves_np[:, 0])
    info = {
        "iterations": iterations,
        "es_iteration": int(t.es_it[b]) if es_found else None,
        "es_stop_iteration": int(t.es_stop_it[b]) if bool(t.es_stopped[b]) else None,
        "best_loss_iteration": int(t.best_loss_it[b]),
        "best_loss": float(t.best_loss[b]),
        "oracle_iteration": int(t.oracle_it[b]) if has_reference else None,
        "oracle_output": (
            ("ema" if bool(t.oracle_from_ema[b]) else "iterate") if has_reference else None
        ),
        "restores": restores,
        "seconds": seconds,
        "device": str(dev),
    }
    return Restoration(
        outputs=outputs,
        default="last",
        info=info,
        curves={name: curves_np[valid, i] for i, name in enumerate(CURVE_COLUMNS)},
        snapshots={k: to_numpy(v[cell]) for k, v in sorted(t.snapshots.items())},
    )
