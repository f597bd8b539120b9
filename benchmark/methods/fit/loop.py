"""The fitting loop: B cells of one network and one image size trained together, and the
outputs each cell's trackers kept."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.degradations import Observation
from benchmark.device import resolve_device
from benchmark.forward import ForwardModel, Identity, Masking
from benchmark.methods.fit.config import MEMORY_FORMATS, FitConfig, FitError
from benchmark.methods.fit.devices import (
    check_memory,
    device_settings,
    step_gflop,
    to_tensor,
)
from benchmark.methods.fit.trackers import Checkpoint, Trackers, psnr_from_mse
from benchmark.methods.networks import FittedNetwork, padded_size
from benchmark.methods.registry import Restoration
from benchmark.methods.stacking import own_tensor, stack_networks


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


class Problem:
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
        if isinstance(models[0], Masking):  # diagonal: one product for the whole batch
            masks = [model.mask for model in models]  # type: ignore[attr-defined]
            self.mask = torch.cat([to_tensor(m, device) for m in masks])
            self.masked_y = self.y * self.mask
            fractions = [float(m.mean()) or 1.0 for m in masks]
        elif not isinstance(models[0], Identity):  # any other task's operator
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


class FitState:
    """B cells fitted together: one (stacked) network, one optimizer, per-cell trackers;
    :meth:`step` takes one step of all of them, :func:`train` runs the steps."""

    def __init__(
        self,
        nets: Sequence[FittedNetwork],
        observations: Sequence[Observation],
        cfg: FitConfig,
        seeds: Sequence[int],
        dev: torch.device,
        references: Sequence[np.ndarray] | None,
        exact: bool | None = None,
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
        if exact is None:
            exact = dev.type == "cpu" and not cfg.compile
        self.problem = Problem(observations, dev, exact=exact)
        h, w = self.problem.size
        net0 = nets[0]
        ph = padded_size(h, net0.multiple, net0.minimum)
        pw = padded_size(w, net0.multiple, net0.minimum)
        check_padding(h, w, ph, pw, net0.multiple)
        # The trackers' image-sized buffers: ES-WMV's window, a dozen states and scratch
        # buffers, the snapshots.
        buffers = cfg.es_window + 12 + len(cfg.snapshots)
        check_memory(net0, h, w, self.cells, dev, buffers * self.problem.channels)
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
        self.trackers = Trackers(cfg, like, reference, self.problem.data_fraction, exact=exact)
        self.bf16 = cfg.bf16
        self.device_type = dev.type
        self.track = True  # False: a bare step, for measuring the bookkeeping's cost
        # Backtracking restores one cell's weights and Adam state: only for a lone cell.
        self.checkpoint = Checkpoint(self.net, self.optimizer) if self.cells == 1 else None

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
    def final_output(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every cell's output from its final weights, one forward pass per input: at the
        last step's input and at the clean ``z`` (the same pass without input noise).

        The first is ``last`` as the authors' DIP code reads it out (the notebooks'
        ``net(net_input)`` after the loop, where ``net_input`` is still the last perturbed
        input); the second is what the Deep Decoder's code evaluates its best weights at
        (``net(net_input_saved)``). BatchNorm in training mode, as in every step and in both
        codes."""
        clean = self._outputs(self.z)
        if self.cfg.reg_noise_std > 0:
            return self._outputs(self.z_in), clean
        return clean, clean

    def psnr_obs(self, losses: torch.Tensor) -> np.ndarray:
        """The host's copy of each cell's PSNR against the observation (one device sync)."""
        return psnr_from_mse(losses.detach() / self.problem.data_fraction).cpu().numpy()


MAX_PADDED_PIXELS = 4096 * 4096  # above this, and 16x the image, padding is a mistake


def check_padding(h: int, w: int, ph: int, pw: int, multiple: int) -> None:
    """Refuse a network whose input size multiple would pad the image to many times its
    size (``scales = 12`` on a 32-pixel crop pads to 8192x8192: tens of GB), before any
    memory is taken."""
    if ph * pw > MAX_PADDED_PIXELS and ph * pw > 16 * h * w:
        raise ValueError(
            f"this network takes sizes that are multiples of {multiple}: the {h}x{w} image "
            f"would be padded to {ph}x{pw}; use fewer scales (layers) or a larger image"
        )


def fit(
    net: FittedNetwork,
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
    net : FittedNetwork
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
    nets: Sequence[FittedNetwork],
    observations: Sequence[Observation],
    cfg: FitConfig,
    *,
    seeds: Sequence[int],
    device: str | torch.device = "auto",
    monitor_references: Sequence[np.ndarray] | None = None,
    progress: Callable[[int, int], None] | None = None,
    exact: bool | None = None,
) -> list[Restoration | FitError]:
    """Fit several cells in one pass: each ``nets[b]`` to ``observations[b]`` with ``seeds[b]``.

    The networks must share one architecture and the observations one task and shape. Each
    cell keeps its own weights, Adam state, BatchNorm statistics, input ``z``, noise stream
    and outputs; its result equals :func:`fit` of that cell alone, bit for bit on the CPU
    (see :func:`~benchmark.methods.stacking.stack_networks`) and up to float rounding on
    CUDA or with ``compile``. A
    cell that needs backtracking (a PSNR drop or a NaN) is re-fitted alone afterwards, as
    restoring one cell's weights inside a batch would shift its Adam step count. ``nets``
    are left untouched when there are several (one alone is trained in place, as by
    :func:`fit`). ``exact`` (default: on the CPU without ``compile``) makes every layer and
    the loss compute each cell as a lone cell would; ``False`` is what CUDA does: equal up to
    float rounding, so equal in distribution over seeds, not bit for bit.

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
    with device_settings(dev, cfg, gflop):
        state = FitState(nets, observations, cfg, seeds, dev, monitor_references, exact)
        try:
            trained = train(state, progress)
        except FitError as err:
            return [err]
        final, at_clean_input = state.final_output()
        state.trackers.finish(trained.iterations, final, at_clean_input)
    seconds = (time.perf_counter() - started) / cells
    results: list[Restoration | FitError] = []
    for b in range(cells):
        if trained.refit[b]:
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
        facts = {"iterations": trained.iterations, "restores": trained.restores}
        result = state.trackers.result(b, final, {**facts, "seconds": seconds, "device": str(dev)})
        result.info["batch"] = cells  # cells fitted together (1: alone)
        results.append(result)
    return results


@dataclass(frozen=True)
class Trained:
    """What :func:`train` did: the last iteration done, the restores of the last good weights
    (a lone cell) and, per cell of a batch, whether it must be re-fitted alone."""

    iterations: int
    restores: int
    refit: np.ndarray


def train(
    state: FitState,
    progress: Callable[[int, int], None] | None,
    iterations: range | None = None,
) -> Trained:
    """Run the steps of ``state`` (all iterations, or a range of them: the speed report times
    blocks), with the host's checks every ``check_every`` steps: backtracking, NaN/Inf,
    early stop, progress."""
    cfg, cells = state.cfg, state.cells
    checkpoint = state.checkpoint
    if checkpoint is not None and iterations is None:
        checkpoint.save()
    last_psnr_obs = np.full(cells, -np.inf)
    refit = np.zeros(cells, dtype=bool)
    restores = consecutive_bad = 0
    it = 0
    for it in iterations or range(1, cfg.iterations + 1):
        losses = state.step(it)
        if it % cfg.check_every and it != cfg.iterations:
            continue
        psnr_obs = state.psnr_obs(losses)
        bad = state.trackers.nonfinite.cpu().numpy() | ~np.isfinite(psnr_obs)
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
            state.trackers.nonfinite.zero_()
        else:
            consecutive_bad = 0
            checkpoint.save()
            last_psnr_obs = psnr_obs
        if progress is not None:
            progress(it, cfg.iterations)
        if cfg.stop_early and bool(state.trackers.es.stopped.all()):
            break
    return Trained(it, restores, refit)
