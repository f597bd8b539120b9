"""Planning a run: which cells are left, which are fitted together, how long it takes.

Nothing here computes a cell. Sizes come from the image registry (no image is read), a
network cell's settings from its method's ``setting`` capability.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmark import images
from benchmark.methods.registry import get_method
from benchmark.runfolder import read_record, stale_files
from benchmark.runner.records import damaged_outputs, is_finished, record_path, set_aside
from benchmark.tasks import get_task

if TYPE_CHECKING:
    from benchmark.suites import Cell


def pending(
    cells: Sequence[Cell], out: Path, device: str, threads: int = 1, *, reuse_stale: bool = False
) -> list[Cell]:
    """The cells without a successful record by the current code (failed ones are retried,
    stale ones recomputed unless ``reuse_stale``)."""
    todo = []
    for cell in cells:
        path = record_path(cell, out, device, threads)
        record = read_record(path)
        if not is_finished(record, cell.method, reuse_stale=reuse_stale):
            todo.append(cell)
        elif damaged := damaged_outputs(out, record):
            there = [p for p in damaged if p.exists()]  # a missing one: set aside already
            if there:
                print(
                    f"damaged: {', '.join(map(str, there))} (set aside as .damaged); its "
                    "cell is computed again"
                )
                set_aside(there)
            todo.append(cell)
    return todo


def stale(
    cells: Sequence[Cell], out: Path, device: str, threads: int = 1
) -> list[tuple[Cell, list[str]]]:
    """The cells whose successful record was computed by code that has changed since, each
    with the files that changed."""
    found = []
    for cell in cells:
        record = read_record(record_path(cell, out, device, threads))
        if record is not None and record.get("status") == "ok":
            changed = stale_files(record, cell.method)
            if changed:
                found.append((cell, changed))
    return found


def stale_summary(found: Sequence[tuple[Cell, list[str]]], reused: bool) -> str:
    """One line: how many finished cells were computed by code that has changed since, which
    files changed, and what the run does with them."""
    files: dict[str, int] = {}
    for _, changed in found:
        for name in changed:
            files[name] = files.get(name, 0) + 1
    what = "kept, marked stale (--reuse-stale)" if reused else "recomputed"
    return (
        f"{len(found)} finished cell(s) were computed by code that has changed since "
        f"({', '.join(f'{n}: {k}' for n, k in sorted(files.items()))}): {what}"
    )


def auto_batch(device: str, height: int, width: int, cell: Cell | None = None) -> int:
    """How many cells of this size ``--batch auto`` fits together.

    On the CPU, 16 when a step is small enough for native convolutions (at most
    ``NATIVE_CONV_GFLOP``: CIFAR-10's 32x32 with DIP of 16-32 channels gains 2.5-3x, bit for
    bit), else 1 (measured: larger steps keep both cores busy alone, and batching them was
    slower); on a GPU, up to about a million pixels per batch (16 cells of 256x256, 64 of
    32x32), a guess for a 16 GB card: ``dipbench speed --device cuda --batch B`` measures it.
    """
    import torch

    from benchmark.methods.fit import cpu_convolution_backend, resolve_device, step_gflop_at
    from benchmark.methods.priors import build_network

    kind = resolve_device(device).type
    if kind == "cpu":
        setting = None if cell is None else network_setting(cell)
        if setting is None:
            return 1
        network, cfg = setting
        net = build_network(network, 3, torch.Generator())
        return (
            16 if cpu_convolution_backend(cfg, step_gflop_at(net, height, width)) == "native" else 1
        )
    if kind == "cuda":
        return max(1, min(64, 2**20 // (height * width)))
    return 1


def network_setting(cell: Cell) -> tuple[dict[str, Any], Any] | None:
    """A network cell's network table and FitConfig (None: its method declares no setting)."""
    info = get_method(cell.method)
    if info.setting is None:
        return None
    return info.setting(cell.task, get_task(cell.task).factor(cell.level), **cell.method_options)


def registry_sizes() -> dict[tuple[str, str] | str, tuple[int, int]]:
    """(height, width) by (set, image), and by set for the members of an archive set."""
    sizes: dict[tuple[str, str] | str, tuple[int, int]] = {}
    for entry in images.load_registry():
        sizes[(entry.set, entry.name)] = (entry.height, entry.width)
        if entry.kind == "archive":
            sizes[entry.set] = (entry.height, entry.width)
    return sizes


def cell_size(cell: Cell, sizes: dict[tuple[str, str] | str, tuple[int, int]]) -> tuple[int, int]:
    """A cell's image size from the registry (no image is read), after its crop."""
    h, w = sizes.get((cell.dataset, cell.image)) or sizes.get(cell.dataset) or (32, 32)
    if cell.crop:
        h, w = min(h, cell.crop), min(w, cell.crop)
    return h, w


def batches(cells: Sequence[Cell], device: str, batch: int | str = "auto") -> list[list[Cell]]:
    """Split cells into units of work: network cells that can be fitted together (same
    method and options, same dataset, task, crop and factor, same image size), at most
    ``batch`` (or :func:`auto_batch`) per unit; every other cell alone. Order is kept."""
    sizes = registry_sizes()
    groups: dict[str, list[Cell]] = {}
    units: list[list[Cell]] = []
    for cell in cells:
        options = cell.method_options
        if not get_method(cell.method).supports_batch or options.get("fit_options", {}).get(
            "stop_early"
        ):
            units.append([cell])
            continue
        h, w = cell_size(cell, sizes)
        factor = get_task(cell.task).factor(cell.level)
        signature = json.dumps(
            [cell.method, options, cell.dataset, cell.task, factor, h, w],
            sort_keys=True,
            default=str,
        )
        if signature not in groups:
            groups[signature] = []
            units.append(groups[signature])  # filled below; a list is shared by reference
        groups[signature].append(cell)
    split: list[list[Cell]] = []
    for unit in units:
        if len(unit) == 1:
            split.append(unit)
            continue
        first = unit[0]
        size = (
            auto_batch(device, *cell_size(first, sizes), first) if batch == "auto" else int(batch)
        )
        split += [unit[i : i + size] for i in range(0, len(unit), max(1, size))]
    return split


def default_jobs(device: str) -> int:
    """One worker per CPU core on the CPU, one per GPU on CUDA, else one."""
    from benchmark.methods.fit import resolve_device

    kind = resolve_device(device).type
    if kind == "cpu":
        return os.cpu_count() or 1
    if kind == "cuda" and str(device) in ("auto", "cuda"):
        import torch

        return torch.cuda.device_count()
    return 1
