"""Device-side bookkeeping of a fit: EMA, best loss, ES-WMV, oracle, curves, snapshots, and
the checkpoint backtracking restores. Nothing here reads back to the host in the hot loop."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from benchmark.methods.fit.config import BEST_LOSS_MARGIN, CURVE_COLUMNS, FitConfig
from benchmark.methods.fit.devices import to_numpy
from benchmark.methods.registry import Restoration


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR (dB) of images on [0, 1] from their mean squared error."""
    return -10.0 * torch.log10(mse)


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    """``||x_b||^2`` per cell without materialising ``x ** 2``."""
    return torch.linalg.vector_norm(x.flatten(1), dim=1).square()


class Trackers:
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
    def finish(self, it: int, final: torch.Tensor, at_clean_input: torch.Tensor) -> None:
        """Take the final weights' outputs, at the last step's input (``last``, a candidate
        of the oracle) and at the clean input (settles a pending best-loss step, as the Deep
        Decoder's code evaluates its best weights)."""
        self._keep_if(self.best_pending, at_clean_input, self.best_loss_out)
        self.best_pending.zero_()
        if self.reference is not None:
            self._oracle_update(it, final, from_ema=False)

    def _record(self, it: int, out: torch.Tensor, losses: torch.Tensor) -> None:
        row = self.curves[it // self.cfg.record_every - 1]
        row[:, 0] = it
        row[:, 1] = losses
        row[:, 2] = psnr_from_mse(losses / self.data_fraction)
        if self.reference is not None:
            for column, image in ((3, out), (4, self.ema)):
                error = image.clamp(0, 1).sub_(self.reference)
                row[:, column] = psnr_from_mse(_squared_norms(error) / self.pixels)
        row[:, 5] = self.current_var


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


def cell_result(
    t: Trackers,
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
