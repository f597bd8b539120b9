"""One cell, or a few fitted together: observe, restore, score, record.

A cell's observation and target come from its seed alone (:func:`prepare`). The method runs
through the registry (``methods.run``, or its network contract's ``fit_together`` for cells
fitted together, :mod:`benchmark.methods.contract`), each requested output is scored under
the suite's protocol, and the record is written with the cell's output image and its curves
and snapshots. A failed cell is recorded with its error.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from benchmark import __version__
from benchmark.arrays import to_uint8
from benchmark.degradations import Observation
from benchmark.methods import Restoration, get_method, restore, run
from benchmark.metrics import get_protocol
from benchmark.observation import prepare
from benchmark.provenance import cell_inputs, code_identity, versions
from benchmark.runfolder import (
    OUTPUTS_SUFFIX,
    SUSPECT_UNDER_TRIVIAL_DB,
    Record,
    atomic_write,
    cells_dir,
    savez,
)
from benchmark.runner.claims import claimed
from benchmark.runner.isolation import kept_process_state, unit_state
from benchmark.runner.records import compute_kind
from benchmark.suites import Cell
from benchmark.tasks import get_task


def run_cell(
    cell: Cell,
    out: Path,
    device: str,
    *,
    revision: str = "unknown",
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Record:
    """Compute one cell and write its record; a failure is recorded, not raised.

    The caller has set torch's CPU threads to ``threads`` (part of the cell's key on the CPU:
    the number of threads changes a network's numbers in the last bits, and DIP's chaotic
    training amplifies them). Returns the record that was written.
    """
    from benchmark.device import resolve_device

    info = get_method(cell.method)
    dev = resolve_device(device) if info.needs_device else None
    record = _new_record(cell, out, dev, revision, threads)
    started = time.perf_counter()
    try:
        observation, target = prepare(cell)
        options = dict(cell.method_options)
        if info.needs_device:
            options.update(device=dev)
        if info.fits_network:
            options.update(monitor_reference=target, progress=progress)
        result = run(cell.method, observation, seed=cell.method_seed, **options)
        _succeeded(record, cell, result, target, out, observation)
    except Exception as err:  # noqa: BLE001  a failed cell must not sink the run
        _failed(record, err)
    except SystemExit as err:  # a method's sys.exit() ends its cell, not the run
        _failed(record, RuntimeError(f"the method called sys.exit({err.code!r})"))
    return _finish(record, out, time.perf_counter() - started)


def _new_record(cell: Cell, out: Path, dev: Any, revision: str, threads: int) -> Record:
    cells_dir(out).mkdir(parents=True, exist_ok=True)
    device_name = str(dev) if dev is not None else "cpu"
    return Record(
        key=cell.key(compute_kind(cell, device_name, threads)),
        cell=asdict(cell),
        version=__version__,
        versions=versions(),
        code=code_identity(cell.method, degradation=cell.degradation),
        inputs=cell_inputs(cell.dataset, cell.image, cell.method, None, cell.registry),
        git_revision=revision,
        device=device_name,
        started=time.time(),
    )


def _succeeded(
    record: Record,
    cell: Cell,
    result: Restoration,
    target: np.ndarray,
    out: Path,
    observation: Observation,
) -> None:
    record.rows = _score(cell, result, target)
    record.default_output, record.info = result.default, result.info
    preset = result.info.get("preset")
    record.inputs = cell_inputs(cell.dataset, cell.image, cell.method, preset, cell.registry)
    record.trivial = trivial_baseline(cell, observation, target)  # the table's own row
    # A fitted network, or any method of a user's: held against its task's trivial baseline.
    if result.curves or not packaged(cell.method):
        record.suspect = suspect_reasons(cell, record)
    record.status = "ok"
    record.arrays = bool(result.curves or result.snapshots)  # <key>.npz is written
    _save_outputs(cells_dir(out) / record.key, result, [row["output"] for row in record.rows])


SUSPECT_UNDER_ORACLE_DB = 10.0  # `last` under the same fit's oracle (any profile)


def trivial_baseline(cell: Cell, observation: Observation, target: np.ndarray) -> dict[str, Any]:
    """PSNR of the task's trivial answer (:attr:`Task.trivial_baseline`): the noisy input
    itself (denoising), bicubic upsampling of the low-resolution input (super-resolution),
    OpenCV Telea (inpainting)."""
    name = get_task(cell.task).trivial_baseline
    image = observation.y if name == "observation" else restore(name, observation)
    score = get_protocol(cell.protocol).score(image, target)
    return {"method": name, "psnr": score["psnr"]}


def packaged(method: str) -> bool:
    """Whether ``method`` is one of dipbench's own (not a user's ``module:function`` or a
    method a user's module registered)."""
    return get_method(method).function.__module__.startswith("benchmark.")


def suspect_reasons(cell: Cell, record: Record) -> list[str]:
    """Why a cell's numbers look impossible (empty: nothing suspect).

    The reported output more than 1 dB under the task's trivial baseline: for dipbench's own
    networks at the full profile (quick and ci use tiny networks and budgets), for a user's
    method at every profile (a sign error shows in its first ci run); or ``last`` more than
    10 dB under the same fit's oracle.
    """
    psnr = {row["output"]: row["psnr"] for row in record.rows}
    reasons = []
    trivial = record.trivial
    reported = record.default_output
    if (
        (cell.profile == "full" or not packaged(cell.method))
        and trivial is not None
        and reported in psnr
        and psnr[reported] < trivial["psnr"] - SUSPECT_UNDER_TRIVIAL_DB
    ):
        reasons.append(
            f"{reported} {psnr[reported]:.2f} dB is more than {SUSPECT_UNDER_TRIVIAL_DB:g} dB "
            f"under the trivial baseline ({trivial['method']} {trivial['psnr']:.2f} dB)"
        )
    if (
        "last" in psnr
        and "oracle" in psnr
        and psnr["last"] < psnr["oracle"] - SUSPECT_UNDER_ORACLE_DB
    ):
        reasons.append(
            f"last {psnr['last']:.2f} dB is more than {SUSPECT_UNDER_ORACLE_DB:g} dB under the "
            f"fit's oracle ({psnr['oracle']:.2f} dB)"
        )
    return reasons


def _failed(record: Record, err: BaseException) -> None:
    record.status = "failed"
    record.error = f"{type(err).__name__}: {err}"
    record.traceback = "".join(traceback.format_exception(err))
    record.rows = []


def _finish(record: Record, out: Path, seconds: float) -> Record:
    record.seconds = seconds
    record.finished = time.time()
    record.write(out)
    return record


def run_cells(
    cells: Sequence[Cell],
    out: Path,
    device: str,
    *,
    revision: str = "unknown",
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[Record]:
    """Compute cells that differ only in image, degradation and seed, fitted together.

    The cells come from ``planning.batches`` (one network method, one set of options); those
    whose observations share a shape are fitted in one pass, the others alone. Each cell
    gets its own record, as from :func:`run_cell`, its ``info.batch`` saying how many cells
    were fitted together and its ``seconds`` the wall time of that fit (the batch's, not a
    share of it). Returns the records.
    """
    out = Path(out).resolve()  # a method that changes the working folder moves no record
    with claimed(cells, out, device, threads) as mine, unit_state(threads):
        if not mine:
            return []
        return _compute_cells(mine, out, device, revision, threads, progress)


def _run_kept(
    cell: Cell,
    out: Path,
    device: str,
    revision: str,
    threads: int,
    progress: Callable[[int, int], None] | None,
) -> Record:
    """:func:`run_cell`, from the process state its unit found, whatever the cell before did."""
    with kept_process_state():
        return run_cell(cell, out, device, revision=revision, threads=threads, progress=progress)


def _compute_cells(
    cells: Sequence[Cell],
    out: Path,
    device: str,
    revision: str,
    threads: int,
    progress: Callable[[int, int], None] | None,
) -> list[Record]:
    from benchmark.device import resolve_device

    info = get_method(cells[0].method)
    if len(cells) == 1 or info.network is None:
        return [_run_kept(cell, out, device, revision, threads, progress) for cell in cells]
    dev = resolve_device(device)
    records: list[Record] = []
    ready: dict[tuple, list[tuple[Cell, Record, Any, np.ndarray]]] = {}
    started = time.perf_counter()
    for cell in cells:
        record = _new_record(cell, out, dev, revision, threads)
        try:
            observation, target = prepare(cell)
        except Exception as err:  # noqa: BLE001
            _failed(record, err)
            records.append(_finish(record, out, time.perf_counter() - started))
            continue
        shape = (observation.task, observation.y.shape, observation.factor)
        ready.setdefault(shape, []).append((cell, record, observation, target))
    for group in ready.values():
        started = time.perf_counter()
        try:
            results: list[Any] = info.network.fit_together(
                [observation for _, _, observation, _ in group],
                seeds=[cell.method_seed for cell, _, _, _ in group],
                device=dev,
                monitor_references=[target for _, _, _, target in group],
                progress=progress,
                **group[0][0].method_options,
            )
        except Exception as err:  # noqa: BLE001  e.g. out of memory: every cell fails alike
            results = [err] * len(group)
        except SystemExit as err:
            results = [RuntimeError(f"the method called sys.exit({err.code!r})")] * len(group)
        # each cell took the batch's whole wall time (its info.batch says how many shared it)
        seconds = time.perf_counter() - started
        for (cell, record, observation, target), result in zip(group, results, strict=True):
            try:
                if isinstance(result, BaseException):
                    raise result
                _succeeded(record, cell, result, target, out, observation)
            except Exception as err:  # noqa: BLE001
                _failed(record, err)
            records.append(_finish(record, out, seconds))
    return records


def _score(cell: Cell, result: Restoration, target: np.ndarray) -> list[dict[str, Any]]:
    """One row per output the suite asked for (every output when it asked for none)."""
    protocol = get_protocol(cell.protocol)
    wanted = cell.outputs or tuple(result.outputs)
    missing = [o for o in wanted if o not in result.outputs]
    if missing:
        raise KeyError(
            f"method {cell.method!r} has no output(s) {missing}; it has {', '.join(result.outputs)}"
        )
    return [
        {"output": name, "oracle": name == "oracle", **protocol.score(result.outputs[name], target)}
        for name in wanted
    ]


def _save_outputs(stem: Path, result: Restoration, scored: list[str]) -> None:
    """The default output as an 8-bit PNG (to look at), every scored output as the method
    returned it (``.outputs.npz``, lossless: ``dipbench rescore`` scores it exactly as the
    cell was), and the curves and snapshots of a fitted network (``.npz``)."""
    default = to_uint8(result.outputs[result.default])
    pixels = default[..., 0] if default.shape[2] == 1 else default
    atomic_write(stem.with_suffix(".png"), lambda p: Image.fromarray(pixels).save(p, format="PNG"))
    outputs = {name: result.outputs[name] for name in scored}
    atomic_write(stem.with_suffix(OUTPUTS_SUFFIX), lambda p: savez(p, outputs))
    if result.curves or result.snapshots:
        arrays = {f"curve_{k}": v for k, v in result.curves.items()}
        arrays.update({f"snapshot_{k}": to_uint8(v) for k, v in result.snapshots.items()})
        atomic_write(stem.with_suffix(".npz"), lambda p: savez(p, arrays))


def fail_unit(
    unit: list[Cell], out: Path, device: str, revision: str, threads: int, cause: str
) -> list[Record]:
    """Failed records for the cells of a unit whose worker died (``cause`` says how)."""
    from benchmark.device import resolve_device

    records = []
    for cell in unit:
        record = _new_record(cell, out, resolve_device(device), revision, threads)
        _failed(record, RuntimeError(f"{cause} while computing this cell"))
        record.traceback = ""
        records.append(_finish(record, out, 0.0))
    return records
