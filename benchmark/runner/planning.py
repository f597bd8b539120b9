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

from benchmark import datasets
from benchmark.methods import get_method
from benchmark.provenance import cell_inputs, code_identity, computed_by_todays_code, is_legacy
from benchmark.runfolder import Record, why_unusable
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
        record = read_record(cell, out, device, threads)
        path = record_path(cell, out, device, threads)
        if record is None and (written := Record.parse(path)) is not None:
            if damaged_outputs(out, written):
                record = written  # set aside below, as damaged
            else:
                print(f"{path}: {why_unusable(path)}: its cell is computed again")
        if not is_finished(record, reuse_stale=reuse_stale):
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


def read_record(cell: Cell, out: Path, device: str, threads: int) -> Record | None:
    """The cell's record (None: none readable). A successful record of an earlier fingerprint
    scheme whose fingerprint is what that scheme gives the current files is re-stamped:
    rewritten with today's code and inputs identities, not recomputed."""
    record = Record.read(record_path(cell, out, device, threads))
    if record is None or not record.ok or not is_legacy(record.code):
        return record
    if computed_by_todays_code(
        record.code.get("fingerprint", ""), record.code.get("scheme"), cell.method, cell.degradation
    ):
        record.code = code_identity(cell.method, degradation=cell.degradation)
        if not record.inputs:  # the first scheme stored none; a later one's stay as read
            record.inputs = cell_inputs(
                cell.dataset, cell.image, cell.method, record.info.get("preset")
            )
        record.write(out)
    return record


def stale(
    cells: Sequence[Cell], out: Path, device: str, threads: int = 1
) -> list[tuple[Cell, list[str]]]:
    """The cells whose successful record was computed by code that has changed since, each
    with the files that changed."""
    found = []
    for cell in cells:
        record = read_record(cell, out, device, threads)
        if record is not None and record.ok:
            changed = record.stale_files()
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

    On the CPU, what the method's network contract says (``NetworkMethod.cpu_batch``: DIP and
    the Deep Decoder fit 16 together when a step is small enough for native convolutions,
    else 1); on a GPU, up to about a million pixels per batch (16 cells of 256x256, 64 of
    32x32), a guess for a 16 GB card: ``dipbench speed --device cuda --batch B`` measures it.
    """
    from benchmark.device import resolve_device

    kind = resolve_device(device).type
    if kind == "cpu":
        return (None if cell is None else ask_contract(cell, "cpu_batch", height, width)) or 1
    if kind == "cuda":
        return max(1, min(64, 2**20 // (height * width)))
    return 1


def ask_contract(cell: Cell, question: str, *arguments: Any) -> Any:
    """The answer of the cell's network contract (``methods.contract.NetworkMethod``) to
    ``question``, asked with the cell's task, factor, ``arguments`` and method options; None
    when its method declares no contract."""
    network = get_method(cell.method).network
    if network is None:
        return None
    factor = get_task(cell.task).factor(cell.level)
    return getattr(network, question)(cell.task, factor, *arguments, **cell.method_options)


def network_iterations(cell: Cell) -> int | None:
    """The steps a network cell fits (None: its method declares no network contract)."""
    return ask_contract(cell, "iterations")


def network_setting(cell: Cell) -> tuple[dict[str, Any], Any] | None:
    """A network cell's network table and fit settings, as its contract states them (None:
    its method declares no network contract)."""
    return ask_contract(cell, "setting")


def can_batch(cell: Cell) -> bool:
    """Whether the cell's method may fit it together with others of its shape."""
    return bool(ask_contract(cell, "can_batch"))


def registry_sizes(registry: str | None = None) -> dict[tuple[str, str] | str, tuple[int, int]]:
    """(height, width) by (set, image), and by set for the members of an archive set (of the
    packaged registry and the suite's own ``registry`` file)."""
    sizes: dict[tuple[str, str] | str, tuple[int, int]] = {}
    for entry in datasets.registry_of(registry):
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
    sizes = registry_sizes(next((c.registry for c in cells if c.registry), None))
    groups: dict[str, list[Cell]] = {}
    units: list[list[Cell]] = []
    for cell in cells:
        options = cell.method_options
        if not can_batch(cell):
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
    from benchmark.device import resolve_device

    kind = resolve_device(device).type
    if kind == "cpu":
        return os.cpu_count() or 1
    if kind == "cuda" and str(device) in ("auto", "cuda"):
        import torch

        return torch.cuda.device_count()
    return 1
