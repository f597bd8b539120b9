"""Device-side bookkeeping of a fit: one tracker per output (EMA, best loss, ES-WMV, oracle),
the curves and snapshots, and the checkpoint backtracking restores. Nothing here reads back
to the host in the hot loop.

Each tracker holds its state for the B cells fitted together, as device tensors updated in
place, and has ``update(it, out, losses)`` (every step: the step's outputs ``(B, C, H, W)``
and losses ``(B,)``), ``finish(it, final, at_clean_input)`` (the final weights' outputs) and
``outputs(b)`` / ``info(b)`` (cell ``b``'s share, read once at the end).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from benchmark.methods.fit.config import BEST_LOSS_MARGIN, CURVE_COLUMNS, FitConfig
from benchmark.methods.fit.devices import to_numpy
from benchmark.methods.registry import Restoration


def _scalars(
    cells: int, value: float, device: torch.device, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    return torch.full((cells,), value, dtype=dtype, device=device)


def _keep_if(better: torch.Tensor, value: torch.Tensor, store: torch.Tensor) -> None:
    """``store[b] = value[b]`` where ``better[b]``, in place."""
    mask = better if store.dim() == 1 else better.view(-1, 1, 1, 1)
    torch.where(mask, value, store, out=store)


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of images on [0, 1] from their mean squared error."""
    return -10.0 * torch.log10(mse)


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    """``||x_b||^2`` per cell without materialising ``x ** 2``."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1).square()


class Tracker:
    """One output (or record) of a fit, kept for each of B cells; the default does nothing."""

    def update(self, it: int, out: torch.Tensor, losses: torch.Tensor) -> None:
        """Take step ``it``'s outputs ``(B, C, H, W)`` and losses ``(B,)``."""

    def finish(self, it: int, final: torch.Tensor, at_clean_input: torch.Tensor) -> None:
        """Take the final weights' outputs (at the last step's input, and at the clean one)."""

    def outputs(self, b: int) -> dict[str, np.ndarray]:
        """Cell ``b``'s outputs by name."""
        return {}

    def info(self, b: int) -> dict[str, Any]:
        """Facts about cell ``b``'s output (the iteration it comes from, ...)."""
        return {}


class Ema(Tracker):
    """The exponential moving average ``avg = d * avg + (1 - d) * out`` of the outputs."""

    def __init__(self, decay: float, like: torch.Tensor) -> None:
        self.decay = decay
        self.image = torch.zeros_like(like)

    def update(self, it: int, out: torch.Tensor, losses: torch.Tensor) -> None:
        if it == 1:
            self.image.copy_(out)
        else:
            self.image.lerp_(out, 1 - self.decay)

    def outputs(self, b: int) -> dict[str, np.ndarray]:
        return {"ema": to_numpy(self.image[b : b + 1])}


class BestLoss(Tracker):
    """The Deep Decoder's rule: a step is a new best when its loss is below 1/1.005 of the
    best so far; the output kept is that of the weights after that step (the next step's
    output, or the final weights' output at the clean input)."""

    def __init__(self, like: torch.Tensor) -> None:
        cells, dev = like.shape[0], like.device
        self.loss = _scalars(cells, math.inf, dev)
        self.image = torch.zeros_like(like)
        self.iteration = _scalars(cells, 0, dev, torch.long)
        self.pending = _scalars(cells, False, dev, torch.bool)  # a best awaiting its output

    def update(self, it: int, out: torch.Tensor, losses: torch.Tensor) -> None:
        # This step's output comes from the weights the previous best step left.
        _keep_if(self.pending, out, self.image)
        better = losses * BEST_LOSS_MARGIN < self.loss
        _keep_if(better, losses, self.loss)
        self.iteration.masked_fill_(better, it)
        self.pending = better

    def finish(self, it: int, final: torch.Tensor, at_clean_input: torch.Tensor) -> None:
        _keep_if(self.pending, at_clean_input, self.image)
        self.pending.zero_()

    def outputs(self, b: int) -> dict[str, np.ndarray]:
        return {"best_loss": to_numpy(self.image[b : b + 1])}

    def info(self, b: int) -> dict[str, Any]:
        return {"best_loss_iteration": int(self.iteration[b]), "best_loss": float(self.loss[b])}


class EsWmv(Tracker):
    """ES-WMV: the output at the step whose window of the last W outputs has the smallest
    variance, frozen once it has not improved for P steps.

    The window's variance is kept as running sums of the outputs' differences from a
    reference image (re-centred every window), which is exact up to float rounding and costs
    O(image) per step instead of O(window x image).
    """

    def __init__(self, window: int, patience: int, like: torch.Tensor, *, exact: bool) -> None:
        cells, dev = like.shape[0], like.device
        self.window_size, self.patience, self.exact = window, patience, exact
        self.pixels = like[0].numel()
        self.window = torch.zeros((window, *like.shape), device=dev)
        self.centre = torch.zeros_like(like)
        self.sum = torch.zeros_like(like)
        self.sumsq = _scalars(cells, 0.0, dev)
        self.current_var = _scalars(cells, math.inf, dev)
        self.var = _scalars(cells, math.inf, dev)
        self.image = torch.zeros_like(like)
        self.iteration = _scalars(cells, 0, dev, torch.long)
        self.stopped = _scalars(cells, False, dev, torch.bool)
        self.stop_iteration = _scalars(cells, 0, dev, torch.long)
        self._new = torch.zeros_like(like)  # scratch: differences
        self._old = torch.zeros_like(like)

    def update(self, it: int, out: torch.Tensor, losses: torch.Tensor) -> None:
        w = self.window_size
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
        better = (var < self.var) & ~self.stopped
        _keep_if(better, var, self.var)
        self.iteration.masked_fill_(better, it)
        _keep_if(better, out, self.image)
        newly = ~self.stopped & (it - self.iteration >= self.patience)
        self.stop_iteration.masked_fill_(newly, it)
        self.stopped |= newly

    def found(self, b: int) -> bool:
        """Whether cell ``b`` had a full window (fewer steps than the window: no variance)."""
        return bool(torch.isfinite(self.var[b]))

    def outputs(self, b: int) -> dict[str, np.ndarray]:
        return {"es": to_numpy(self.image[b : b + 1])} if self.found(b) else {}

    def info(self, b: int) -> dict[str, Any]:
        return {
            "es_iteration": int(self.iteration[b]) if self.found(b) else None,
            "es_stop_iteration": int(self.stop_iteration[b]) if bool(self.stopped[b]) else None,
        }


class Oracle(Tracker):
    """The best PSNR against the clean image over every output the fit tracks: each step's
    output, the EMA at each step, and the final weights' output. It uses the ground truth."""

    def __init__(self, reference: torch.Tensor, ema: Ema, like: torch.Tensor) -> None:
        cells, dev = like.shape[0], like.device
        self.reference, self.ema = reference, ema
        self.pixels = like[0].numel()
        self.mse = _scalars(cells, math.inf, dev)
        self.image = torch.zeros_like(like)
        self.iteration = _scalars(cells, 0, dev, torch.long)
        self.from_ema = _scalars(cells, False, dev, torch.bool)
        self._new = torch.zeros_like(like)

    def _consider(self, it: int, image: torch.Tensor, *, from_ema: bool) -> None:
        torch.sub(image, self.reference, out=self._new)
        mse = _squared_norms(self._new) / self.pixels
        better = mse < self.mse
        _keep_if(better, mse, self.mse)
        _keep_if(better, image, self.image)
        self.iteration.masked_fill_(better, it)
        self.from_ema.masked_fill_(better, from_ema)

    def update(self, it: int, out: torch.Tensor, losses: torch.Tensor) -> None:
        self._consider(it, out, from_ema=False)
        self._consider(it, self.ema.image, from_ema=True)

    def finish(self, it: int, final: torch.Tensor, at_clean_input: torch.Tensor) -> None:
        self._consider(it, final, from_ema=False)

    def outputs(self, b: int) -> dict[str, np.ndarray]:
        return {"oracle": to_numpy(self.image[b : b + 1])}

    def info(self, b: int) -> dict[str, Any]:
        return {
            "oracle_iteration": int(self.iteration[b]),
            "oracle_output": "ema" if bool(self.from_ema[b]) else "iterate",
        }


class Curves(Tracker):
    """Every ``record_every`` steps: the loss, the PSNR against the observation, and with a
    reference the PSNR of the output and of the EMA, and ES-WMV's window variance; one named
    ``(rows, B)`` array per quantity (:data:`CURVE_COLUMNS`)."""

    def __init__(
        self,
        cfg: FitConfig,
        like: torch.Tensor,
        reference: torch.Tensor | None,
        data_fraction: torch.Tensor,
        ema: Ema,
        es: EsWmv,
    ) -> None:
        rows, cells = cfg.iterations // cfg.record_every, like.shape[0]
        self.every, self.reference, self.data_fraction = cfg.record_every, reference, data_fraction
        self.ema, self.es = ema, es
        self.pixels = like[0].numel()
        self.arrays = {
            name: torch.full((rows, cells), math.nan, device=like.device) for name in CURVE_COLUMNS
        }

    def update(self, it: int, out: torch.Tensor, losses: torch.Tensor) -> None:
        if it % self.every:
            return
        row = it // self.every - 1
        self.arrays["iteration"][row] = it
        self.arrays["loss"][row] = losses
        self.arrays["psnr_obs"][row] = psnr_from_mse(losses / self.data_fraction)
        if self.reference is not None:
            for name, image in (("psnr_last", out), ("psnr_ema", self.ema.image)):
                error = image.clamp(0, 1).sub_(self.reference)
                self.arrays[name][row] = psnr_from_mse(_squared_norms(error) / self.pixels)
        self.arrays["es_variance"][row] = self.es.current_var

    def of_cell(self, b: int) -> dict[str, np.ndarray]:
        """Cell ``b``'s curves, the rows recorded so far."""
        columns = {name: values[:, b].cpu().numpy() for name, values in self.arrays.items()}
        valid = ~np.isnan(columns["iteration"])
        return {name: values[valid] for name, values in columns.items()}


class Snapshots(Tracker):
    """The outputs at the chosen iterations."""

    def __init__(self, iterations: tuple[int, ...]) -> None:
        self.iterations = iterations
        self.images: dict[int, torch.Tensor] = {}

    def update(self, it: int, out: torch.Tensor, losses: torch.Tensor) -> None:
        if it in self.iterations:
            self.images[it] = out.clone()

    def of_cell(self, b: int) -> dict[int, np.ndarray]:
        return {k: to_numpy(v[b : b + 1]) for k, v in sorted(self.images.items())}


class Trackers:
    """Every tracker of a fit of B cells, updated in one order at each step.

    A non-finite step must not poison them: a cell whose loss is NaN/Inf passes its EMA
    instead of its output (and is flagged in ``nonfinite`` for the host's check).
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
        cells, dev = like.shape[0], like.device
        fraction = torch.ones(cells, device=dev) if data_fraction is None else data_fraction
        self.reference = reference
        self.ema = Ema(cfg.ema_decay, like)
        self.best_loss = BestLoss(like)
        self.es = EsWmv(cfg.es_window, cfg.es_patience, like, exact=exact)
        self.oracle = None if reference is None else Oracle(reference, self.ema, like)
        self.snapshots = Snapshots(cfg.snapshots)
        self.curves = Curves(cfg, like, reference, fraction, self.ema, self.es)
        self.parts: list[Tracker] = [self.ema, self.best_loss, self.es]
        self.parts += [self.oracle] if self.oracle is not None else []
        self.parts += [self.snapshots, self.curves]
        self.nonfinite = _scalars(cells, False, dev, torch.bool)
        self._out = torch.zeros_like(like)  # scratch: the guarded output

    @torch.no_grad()
    def update(self, it: int, out: torch.Tensor, losses: torch.Tensor) -> None:
        """Take step ``it``'s outputs ``(B, C, H, W)`` and losses ``(B,)``."""
        finite = torch.isfinite(losses)
        self.nonfinite |= ~finite
        torch.where(finite.view(-1, 1, 1, 1), out, self.ema.image, out=self._out)
        for part in self.parts:
            part.update(it, self._out, losses)

    @torch.no_grad()
    def finish(self, it: int, final: torch.Tensor, at_clean_input: torch.Tensor) -> None:
        """Take the final weights' outputs, at the last step's input (``last``, a candidate
        of the oracle) and at the clean input (settles a pending best-loss step, as the Deep
        Decoder's code evaluates its best weights)."""
        for part in self.parts:
            part.finish(it, final, at_clean_input)

    def result(self, b: int, final: torch.Tensor, facts: dict[str, Any]) -> Restoration:
        """Cell ``b``'s outputs (``last`` from ``final``; ``es`` is ``last`` where ES-WMV had
        no full window), curves and snapshots, with ``facts`` about the fit in its info."""
        last = to_numpy(final[b : b + 1])
        outputs = {"last": last, **self.ema.outputs(b), "es": last}
        outputs.update(self.es.outputs(b))
        outputs.update(self.best_loss.outputs(b))
        info: dict[str, Any] = {"iterations": facts.pop("iterations")}
        info.update(self.es.info(b))
        info.update(self.best_loss.info(b))
        info.update({"oracle_iteration": None, "oracle_output": None})
        if self.oracle is not None:
            outputs.update(self.oracle.outputs(b))
            info.update(self.oracle.info(b))
        return Restoration(
            outputs=outputs,
            default="last",
            info={**info, **facts},
            curves=self.curves.of_cell(b),
            snapshots=self.snapshots.of_cell(b),
        )


class Checkpoint:
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
