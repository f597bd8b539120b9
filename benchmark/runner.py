"""Running a suite's cells: resumably, in parallel, or on a Slurm cluster.

Each finished cell is one record, ``<out>/cells/<key>.json``, written atomically (temporary
file, then rename), next to its output image ``<key>.png`` and, for network methods, its
curves and snapshots ``<key>.npz``. The key hashes everything that determines the result
(package version included), so a re-run skips finished cells and never reuses stale ones.
``results.csv`` is collected from the records of the current grid. A cell that fails is
recorded with its error; the run goes on.
"""

from __future__ import annotations

import concurrent.futures as futures
import importlib.metadata
import json
import multiprocessing as mp
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from benchmark import __version__, images
from benchmark.arrays import crop_to_size, to_uint8
from benchmark.degradations import Observation, degrade
from benchmark.methods import Restoration, restore, run
from benchmark.metrics import get_protocol
from benchmark.suites import Cell, Suite

RESULT_COLUMNS = [
    "suite",
    "profile",
    "dataset",
    "image",
    "task",
    "degradation",
    "level",
    "severity",
    "method",
    "output",
    "oracle",
    "repetition",
    "seed",
    "psnr",
    "ssim",
    "seconds",
    "device",
    "iterations",
    "stop_iteration",
    "best_iteration",
    "preset",
    "status",
    "error",
    "trivial_psnr",
    "suspect",
    "es_detected",
    "key",
    "version",
    "git_revision",
]


def default_out(profile: str, suite: str) -> Path:
    """``reports/<profile>/<suite>`` of the source checkout, or of the working folder."""
    checkout = Path(__file__).resolve().parents[1]
    base = checkout / "reports" if (checkout / "pyproject.toml").is_file() else Path("reports")
    return base / profile / suite


# --- files ----------------------------------------------------------------------------------


def cells_dir(out: Path) -> Path:
    return Path(out) / "cells"


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see a
    half-written file, and a killed writer leaves only a temporary file behind."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json(path: Path, content: Any) -> None:
    atomic_write(path, lambda p: p.write_text(json.dumps(content, indent=1, default=_jsonable)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_record(path: Path) -> dict[str, Any] | None:
    """A cell record, or None if it is absent or unreadable (a corrupt record is recomputed)."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def remove_stale_temporaries(folder: Path) -> None:
    """Delete temporary files whose writing process is gone (killed runs)."""
    for tmp in folder.glob(".*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
        except ValueError:
            pid = None
        if pid is None or not process_is_running(pid):
            tmp.unlink(missing_ok=True)


# --- claims: several runs on one folder split the grid ---------------------------------------

FOREIGN_CLAIM_HOURS = 48.0  # a claim from another host older than this is taken over


def _claim_path(cell: Cell, out: Path, device: str, threads: int) -> Path:
    return record_path(cell, out, device, threads).with_suffix(".lock")


def claim(path: Path) -> bool:
    """Claim a cell by creating its lock file (owner's pid and host); False if a live owner
    holds it. A claim whose process is gone (same host), or from another host and older than
    ``FOREIGN_CLAIM_HOURS``, is stale and taken over."""
    owner = {"pid": os.getpid(), "host": platform.node(), "since": time.time()}
    for _ in range(2):
        try:
            descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            if not _stale(path):
                return False
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(descriptor, "w") as handle:
            json.dump(owner, handle)
        return True
    return False


def _stale(path: Path) -> bool:
    try:
        owner = json.loads(path.read_text())
        age = time.time() - path.stat().st_mtime
    except (OSError, ValueError):
        return True  # unreadable, or half-written by a process that died
    if owner.get("host") == platform.node():
        return not process_is_running(int(owner.get("pid", -1)))
    return age > FOREIGN_CLAIM_HOURS * 3600


def release(path: Path) -> None:
    """Remove a claim this process holds."""
    try:
        owner = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if owner.get("pid") == os.getpid() and owner.get("host") == platform.node():
        path.unlink(missing_ok=True)


@contextmanager
def claimed(cells: Sequence[Cell], out: Path, device: str, threads: int) -> Iterator[list[Cell]]:
    """The cells of ``cells`` this process may compute now: not finished by another run
    meanwhile, and claimed; their claims are released on the way out, whatever happens."""
    cells_dir(out).mkdir(parents=True, exist_ok=True)
    mine = []
    for cell in cells:
        record = read_record(record_path(cell, out, device, threads))
        if record is not None and record.get("status") == "ok":
            continue  # another run finished it since this one planned
        if claim(_claim_path(cell, out, device, threads)):
            mine.append(cell)
    try:
        yield mine
    finally:
        for cell in mine:
            release(_claim_path(cell, out, device, threads))


def claimed_elsewhere(cells: Sequence[Cell], out: Path, device: str, threads: int) -> list[Cell]:
    """Cells without a record that another live run holds."""
    return [
        c
        for c in cells
        if read_record(record_path(c, out, device, threads)) is None
        and _claim_path(c, out, device, threads).exists()
        and not _stale(_claim_path(c, out, device, threads))
    ]


def process_is_running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited.

    A killed process stays in the process table as a zombie until its parent reaps it; an
    orphaned worker waits for PID 1, which can take seconds, and ``kill(pid, 0)`` still
    succeeds on it. Linux's ``/proc`` tells a zombie apart; elsewhere ``kill`` decides.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:  # reaped since, or no /proc on this system
        return not Path("/proc/self/stat").exists()
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()[0]  # the command name in (...) may hold spaces
    return state not in ("Z", "X")  # zombie, dead


def git_revision() -> str:
    """The checkout's commit (with ``-dirty`` for local changes), or ``unknown``."""
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return f"{rev}-dirty" if dirty else rev
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def versions() -> dict[str, str]:
    """Versions of everything that can change a number."""
    import cv2
    import skimage
    import torch

    return {
        "dipbench": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "scikit-image": skimage.__version__,
        "opencv": cv2.__version__,
        "bm3d": importlib.metadata.version("bm3d"),
    }


# --- one cell -------------------------------------------------------------------------------


def prepare(cell: Cell) -> tuple[Any, np.ndarray]:
    """The cell's degraded observation and clean target (deterministic from its seed)."""
    clean = images.load_image(cell.dataset, cell.image)
    if cell.crop:
        clean = crop_to_size(clean, cell.crop)
    degraded = degrade(
        clean,
        cell.degradation,
        cell.level,
        np.random.default_rng(cell.degradation_seed),
        **cell.degradation_options,
    )
    return degraded.observation, degraded.target


def run_cell(
    cell: Cell,
    out: Path,
    device: str,
    *,
    revision: str = "unknown",
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Compute one cell and write its record; a failure is recorded, not raised.

    The caller has set torch's CPU threads to ``threads`` (part of the cell's key on the CPU:
    the number of threads changes a network's numbers in the last bits, and DIP's chaotic
    training amplifies them). Returns the record that was written.
    """
    from benchmark.methods.fit import resolve_device

    dev = resolve_device(device) if cell.method in ("dip", "dd") else None
    record = _new_record(cell, out, dev, revision, threads)
    started = time.perf_counter()
    try:
        observation, target = prepare(cell)
        options = dict(cell.method_options)
        if dev is not None:
            options.update(device=dev, monitor_reference=target, progress=progress)
        result = run(cell.method, observation, seed=cell.method_seed, **options)
        _succeeded(record, cell, result, target, out, observation)
    except Exception as err:  # noqa: BLE001  a failed cell must not sink the run
        _failed(record, err)
    return _finish(record, out, time.perf_counter() - started)


def _new_record(cell: Cell, out: Path, dev: Any, revision: str, threads: int) -> dict[str, Any]:
    cells_dir(out).mkdir(parents=True, exist_ok=True)
    device_name = str(dev) if dev is not None else "cpu"
    return {
        "key": cell.key(compute_kind(cell, device_name, threads)),
        "cell": asdict(cell),
        "version": __version__,
        "versions": versions(),
        "git_revision": revision,
        "device": device_name,
        "started": time.time(),
    }


def _succeeded(
    record: dict[str, Any],
    cell: Cell,
    result: Restoration,
    target: np.ndarray,
    out: Path,
    observation: Observation,
) -> None:
    record.update(_score(cell, result, target))
    if result.curves:  # a fitted network: hold it against its task's trivial baseline
        record["trivial"] = trivial_baseline(cell, observation, target)
        record["suspect"] = suspect_reasons(cell, record)
    record["status"] = "ok"
    _save_outputs(cells_dir(out) / record["key"], result)


# The trivial baseline of each task: a network method far under it is a bug until explained.
TRIVIAL_BASELINES = {
    "denoising": "observation",
    "super_resolution": "bicubic",
    "inpainting": "telea",
}
SUSPECT_UNDER_TRIVIAL_DB = 1.0  # the reported output under the trivial baseline (full profile)
SUSPECT_UNDER_ORACLE_DB = 10.0  # `last` under the same fit's oracle (any profile)


def trivial_baseline(cell: Cell, observation: Observation, target: np.ndarray) -> dict[str, Any]:
    """PSNR of the task's trivial answer: the noisy input itself (denoising), bicubic
    upsampling of the low-resolution input (super-resolution), OpenCV Telea (inpainting)."""
    name = TRIVIAL_BASELINES[cell.task]
    image = observation.y if name == "observation" else restore(name, observation)
    score = get_protocol(cell.protocol).score(image, target)
    return {"method": name, "psnr": score["psnr"]}


def suspect_reasons(cell: Cell, record: dict[str, Any]) -> list[str]:
    """Why a network cell's numbers look impossible (empty: nothing suspect).

    The reported output more than 1 dB under the task's trivial baseline at the full profile
    (quick and ci use tiny networks and budgets), or ``last`` more than 10 dB under the same
    fit's oracle.
    """
    psnr = {row["output"]: row["psnr"] for row in record["rows"]}
    reasons = []
    trivial = record["trivial"]
    reported = record.get("default_output")
    if (
        cell.profile == "full"
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


def _failed(record: dict[str, Any], err: BaseException) -> None:
    record.update(
        status="failed",
        error=f"{type(err).__name__}: {err}",
        traceback="".join(traceback.format_exception(err)),
        rows=[],
    )


def _finish(record: dict[str, Any], out: Path, seconds: float) -> dict[str, Any]:
    record["seconds"] = seconds
    record["finished"] = time.time()
    write_json(cells_dir(out) / f"{record['key']}.json", record)
    return record


def run_cells(
    cells: Sequence[Cell],
    out: Path,
    device: str,
    *,
    revision: str = "unknown",
    threads: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Compute cells that differ only in image, degradation and seed, fitted together.

    The cells come from :func:`batches` (one network method, one set of options); those
    whose observations share a shape are fitted in one pass, the others alone. Each cell
    gets its own record, as from :func:`run_cell`, its ``info.batch`` saying how many cells
    were fitted together. Returns the records.
    """
    with claimed(cells, out, device, threads) as mine:
        if not mine:
            return []
        return _compute_cells(mine, out, device, revision, threads, progress)


def _compute_cells(
    cells: Sequence[Cell],
    out: Path,
    device: str,
    revision: str,
    threads: int,
    progress: Callable[[int, int], None] | None,
) -> list[dict[str, Any]]:
    from benchmark.methods.fit import resolve_device
    from benchmark.methods.priors import run_prior_many

    if len(cells) == 1:
        return [
            run_cell(cells[0], out, device, revision=revision, threads=threads, progress=progress)
        ]
    dev = resolve_device(device)
    records: list[dict[str, Any]] = []
    ready: dict[tuple, list[tuple[Cell, dict[str, Any], Any, np.ndarray]]] = {}
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
            results: list[Any] = run_prior_many(
                group[0][0].method,
                [observation for _, _, observation, _ in group],
                seeds=[cell.method_seed for cell, _, _, _ in group],
                device=dev,
                monitor_references=[target for _, _, _, target in group],
                progress=progress,
                **group[0][0].method_options,
            )
        except Exception as err:  # noqa: BLE001  e.g. out of memory: every cell fails alike
            results = [err] * len(group)
        seconds = (time.perf_counter() - started) / len(group)
        for (cell, record, observation, target), result in zip(group, results, strict=True):
            try:
                if isinstance(result, BaseException):
                    raise result
                _succeeded(record, cell, result, target, out, observation)
            except Exception as err:  # noqa: BLE001
                _failed(record, err)
            records.append(_finish(record, out, seconds))
    return records


def _score(cell: Cell, result: Restoration, target: np.ndarray) -> dict[str, Any]:
    protocol = get_protocol(cell.protocol)
    wanted = cell.outputs or tuple(result.outputs)
    missing = [o for o in wanted if o not in result.outputs]
    if missing:
        raise KeyError(
            f"method {cell.method!r} has no output(s) {missing}; it has {', '.join(result.outputs)}"
        )
    rows = [
        {"output": name, "oracle": name == "oracle", **protocol.score(result.outputs[name], target)}
        for name in wanted
    ]
    return {"rows": rows, "default_output": result.default, "info": result.info}


def _save_outputs(stem: Path, result: Restoration) -> None:
    default = to_uint8(result.outputs[result.default])
    pixels = default[..., 0] if default.shape[2] == 1 else default
    atomic_write(stem.with_suffix(".png"), lambda p: Image.fromarray(pixels).save(p, format="PNG"))
    if result.curves or result.snapshots:
        arrays = {f"curve_{k}": v for k, v in result.curves.items()}
        arrays.update({f"snapshot_{k}": to_uint8(v) for k, v in result.snapshots.items()})
        atomic_write(stem.with_suffix(".npz"), lambda p: _savez(p, arrays))


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)


# --- many cells -----------------------------------------------------------------------------


def compute_kind(cell: Cell, device: str, threads: int) -> str:
    """What, besides the cell itself, determines a result: the device type for networks,
    and on the CPU their number of threads."""
    if cell.method not in ("dip", "dd"):
        return "cpu"
    from benchmark.methods.fit import resolve_device

    kind = resolve_device(device).type
    return f"cpu-{threads}threads" if kind == "cpu" and threads != 1 else kind


def record_path(cell: Cell, out: Path, device: str, threads: int) -> Path:
    return cells_dir(out) / f"{cell.key(compute_kind(cell, device, threads))}.json"


def pending(cells: Sequence[Cell], out: Path, device: str, threads: int = 1) -> list[Cell]:
    """The cells without a successful record (failed ones are retried)."""
    done = []
    for cell in cells:
        record = read_record(record_path(cell, out, device, threads))
        done.append(record is not None and record.get("status") == "ok")
    return [c for c, ok in zip(cells, done, strict=True) if not ok]


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
        if cell is None:
            return 1
        _, network, cfg = _setting(cell)
        net = build_network(network, 3, torch.Generator())
        return (
            16 if cpu_convolution_backend(cfg, step_gflop_at(net, height, width)) == "native" else 1
        )
    if kind == "cuda":
        return max(1, min(64, 2**20 // (height * width)))
    return 1


def _setting(cell: Cell) -> tuple[Any, dict[str, Any], Any]:
    """A network cell's preset, network table and FitConfig."""
    from benchmark.methods.priors import resolve_setting

    options = cell.method_options
    return resolve_setting(
        cell.method,
        cell.task,
        int(cell.level) if cell.task == "super_resolution" else None,
        preset=options.get("preset"),
        network=options.get("network"),
        fit_options=options.get("fit_options"),
    )


def _registry_sizes() -> dict[tuple[str, str] | str, tuple[int, int]]:
    """(height, width) by (set, image), and by set for the members of an archive set."""
    sizes: dict[tuple[str, str] | str, tuple[int, int]] = {}
    for entry in images.load_registry():
        sizes[(entry.set, entry.name)] = (entry.height, entry.width)
        if entry.kind == "archive":
            sizes[entry.set] = (entry.height, entry.width)
    return sizes


def _cell_size(cell: Cell, sizes: dict[tuple[str, str] | str, tuple[int, int]]) -> tuple[int, int]:
    """A cell's image size from the registry (no image is read), after its crop."""
    h, w = sizes.get((cell.dataset, cell.image)) or sizes.get(cell.dataset) or (32, 32)
    if cell.crop:
        h, w = min(h, cell.crop), min(w, cell.crop)
    return h, w


def batches(cells: Sequence[Cell], device: str, batch: int | str = "auto") -> list[list[Cell]]:
    """Split cells into units of work: network cells that can be fitted together (same
    method and options, same dataset, task, crop and factor, same image size), at most
    ``batch`` (or :func:`auto_batch`) per unit; every other cell alone. Order is kept."""
    sizes = _registry_sizes()
    groups: dict[str, list[Cell]] = {}
    units: list[list[Cell]] = []
    for cell in cells:
        options = cell.method_options
        if cell.method not in ("dip", "dd") or options.get("fit_options", {}).get("stop_early"):
            units.append([cell])
            continue
        h, w = _cell_size(cell, sizes)
        factor = cell.level if cell.task == "super_resolution" else None
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
            auto_batch(device, *_cell_size(first, sizes), first) if batch == "auto" else int(batch)
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


def _exit_with_parent(parent: int) -> None:
    """A worker whose run was killed (even by SIGKILL) must not keep computing: poll the
    parent and leave at once when it is gone. Nothing half-written survives: see
    :func:`atomic_write`."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(1)


# A pool worker's progress slot: (shared array of [done, total] per worker, this worker's
# index). Set once per worker process by its initializer, the only way a pool shares memory.
_WORKER_PROGRESS: tuple[Any, int] | None = None


def _worker_init(
    threads: int, devices: list[str], counter: Any, progress: Any = None, slots: int = 1
) -> None:
    import threading

    import torch

    global _WORKER_PROGRESS
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    torch.set_num_threads(threads)
    os.environ["DIPBENCH_WORKER_THREADS"] = str(threads)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if devices:
        os.environ["DIPBENCH_WORKER_DEVICE"] = devices[index % len(devices)]
    if progress is not None:
        _WORKER_PROGRESS = (progress, index % slots)


def _report_progress(done: int, total: int) -> None:
    """A worker's fit progress, into its slot of the shared array the parent shows."""
    if _WORKER_PROGRESS is not None:
        shared, slot = _WORKER_PROGRESS
        shared[2 * slot], shared[2 * slot + 1] = done, total


def _worker_run(
    unit: list[Cell], out: str, device: str, revision: str, threads: int
) -> list[dict[str, Any]]:
    import torch

    if os.environ.get("DIPBENCH_WORKER_THREADS") != str(threads):  # a Slurm job: first cell
        torch.set_num_threads(threads)
    device = os.environ.get("DIPBENCH_WORKER_DEVICE", device)
    progress = _report_progress if _WORKER_PROGRESS is not None else None
    return run_cells(unit, Path(out), device, revision=revision, threads=threads, progress=progress)


def _gpu_devices(device: str) -> list[str]:
    """One GPU per worker when several are visible and the device is not pinned."""
    import torch

    if device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
        return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return []


def execute(
    cells: Sequence[Cell],
    out: Path,
    *,
    device: str = "auto",
    jobs: int = 1,
    threads: int = 1,
    executor: str = "local",
    slurm: dict[str, Any] | None = None,
    show_progress: bool = True,
    batch: int | str = "auto",
) -> list[dict[str, Any]]:
    """Run the cells that have no successful record yet; return the new records.

    Parameters
    ----------
    cells : sequence of Cell
    out : Path
        The run folder (records go to ``out/cells``).
    device : str
        ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` for network methods.
    jobs : int
        Local worker processes; each worker takes its own GPU when several are visible.
    threads : int
        torch CPU threads per cell. Fixed per cell (not divided by ``jobs``) so that the
        numbers do not depend on the executor: ``--jobs 2`` equals ``--jobs 1``.
    executor : {"local", "slurm"}
        ``slurm`` submits one job array through submitit (``slurm`` holds its options).
    batch : int or "auto"
        Network cells fitted together (see :func:`batches` and :func:`auto_batch`); 1 fits
        every cell alone. Batched cells equal lone cells (bit for bit on the CPU, up to float
        rounding on CUDA); their records say ``info.batch``.
    """
    folder = cells_dir(out)
    folder.mkdir(parents=True, exist_ok=True)
    for written_by_a_run in (folder, Path(out)):  # records, and the report's files
        remove_stale_temporaries(written_by_a_run)
    todo = pending(cells, out, device, threads)
    if not todo:
        return []
    revision = git_revision()
    units = batches(todo, device, batch)
    if executor == "slurm":
        return _execute_slurm(units, out, device, revision, threads, slurm or {}, show_progress)
    if jobs <= 1 or len(units) == 1:
        return _execute_serial(units, out, device, revision, threads, show_progress)
    return _execute_pool(
        units, out, device, revision, min(jobs, len(units)), threads, show_progress
    )


def _bar(total: int, show: bool) -> tqdm:
    return tqdm(total=total, desc="cells", unit="cell", disable=not show, dynamic_ncols=True)


def _note_failure(record: dict[str, Any]) -> None:
    if record.get("status") != "ok":
        tqdm.write(
            f"failed: {record['cell']['image']} {record['cell']['method_key']}: "
            f"{record.get('error')}"
        )


def _take(
    done: list[dict[str, Any]], records: list[dict[str, Any]], bar: tqdm, running: int = 0
) -> None:
    """Add a unit's records to the run's, naming its failures and advancing the bar (which
    shows the failed cells so far and, with workers, how many cells are running)."""
    for record in done:
        _note_failure(record)
    records += done
    failed = sum(r.get("status") != "ok" for r in records)
    bar.set_postfix_str(
        ", ".join(
            part
            for part in (
                f"{running} running" if running else "",
                f"{failed} failed" if failed else "",
            )
            if part
        ),
        refresh=False,
    )
    bar.update(len(done))


def _execute_serial(
    units: Sequence[list[Cell]], out: Path, device: str, revision: str, threads: int, show: bool
) -> list[dict[str, Any]]:
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _serial_loop(units, out, device, revision, threads, show)
    finally:
        torch.set_num_threads(previous)


def _serial_loop(
    units: Sequence[list[Cell]], out: Path, device: str, revision: str, threads: int, show: bool
) -> list[dict[str, Any]]:
    records = []
    with _bar(sum(len(u) for u in units), show) as bar:
        for unit in units:
            cell = unit[0]
            together = f" (+{len(unit) - 1} fitted together)" if len(unit) > 1 else ""
            bar.set_postfix_str(cell.label + together, refresh=True)
            inner = tqdm(
                desc=f"  {cell.method_key}",
                unit="it",
                leave=False,
                disable=not show,
                dynamic_ncols=True,
            )

            def progress(done: int, total: int, inner: tqdm = inner) -> None:
                inner.total = total
                inner.update(done - inner.n)

            try:
                done = run_cells(
                    unit, out, device, revision=revision, threads=threads, progress=progress
                )
            finally:
                inner.close()
            _take(done, records, bar)
    return records


def _execute_pool(
    units: Sequence[list[Cell]],
    out: Path,
    device: str,
    revision: str,
    jobs: int,
    threads: int,
    show: bool,
) -> list[dict[str, Any]]:
    """Run units in worker processes. A worker that dies (out of memory, killed, a crash in
    native code) breaks the pool: the units it left unfinished run again one per fresh worker,
    so the one that kills its worker is found and recorded as failed with the cause, and every
    other cell still runs."""
    records: list[dict[str, Any]] = []
    with _bar(sum(len(u) for u in units), show) as bar:
        left, _ = _run_pool(units, out, device, revision, jobs, threads, bar, records)
        if left:
            tqdm.write(
                f"a worker process died; running the {sum(len(u) for u in left)} unfinished "
                "cell(s) one worker each, to find the one that kills its worker"
            )
        for unit in left:
            again, cause = _run_pool([unit], out, device, revision, 1, threads, bar, records)
            if again:
                _take(_died(unit, out, device, revision, threads, cause), records, bar)
    return records


def _run_pool(
    units: Sequence[list[Cell]],
    out: Path,
    device: str,
    revision: str,
    jobs: int,
    threads: int,
    bar: tqdm,
    records: list[dict[str, Any]],
) -> tuple[list[list[Cell]], str]:
    """Run units in one pool; return the units left unfinished when a worker died (and how it
    died), or no units."""
    context = mp.get_context("spawn")  # torch and fork do not mix
    counter = context.Value("i", 0)
    slots = min(jobs, len(units))
    shared = context.Array("q", 2 * slots, lock=False)  # [done, total] per worker
    pool = futures.ProcessPoolExecutor(
        max_workers=slots,
        mp_context=context,
        initializer=_worker_init,
        initargs=(threads, _gpu_devices(device), counter, shared, slots),
    )
    workers = {}
    submitted = {}
    unfinished: list[list[Cell]] = []
    fits = _WorkerBars(slots, shared, show=not bar.disable and sys.stderr.isatty())
    try:
        for unit in units:
            submitted[pool.submit(_worker_run, unit, str(out), device, revision, threads)] = unit
            workers.update(getattr(pool, "_processes", None) or {})
        left = sum(len(u) for u in units)
        waiting = set(submitted)
        while waiting:
            finished, waiting = futures.wait(
                waiting, timeout=0.5, return_when=futures.FIRST_COMPLETED
            )
            workers.update(getattr(pool, "_processes", None) or {})
            fits.refresh()
            for done in finished:
                left -= len(submitted[done])
                try:
                    result = done.result()
                except futures.process.BrokenProcessPool:
                    unfinished.append(submitted[done])
                    continue
                _take(result, records, bar, running=min(jobs, left))
    except BaseException:
        # Ctrl-C or SIGTERM: stop the workers now; finished records are already on disk.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        fits.close()
    pool.shutdown()
    codes = sorted({p.exitcode for p in workers.values() if p.exitcode not in (None, 0)})
    return [u for u in units if u in unfinished], _death_cause(codes)


class _WorkerBars:
    """One iteration bar per worker under the grid's bar, fed from the shared array (only on a
    terminal: a log gets the grid's bar alone)."""

    def __init__(self, slots: int, shared: Any, *, show: bool) -> None:
        self.shared = shared
        self.bars = (
            [
                tqdm(desc=f"  worker {i + 1}", unit="it", position=i + 1, leave=False)
                for i in range(slots)
            ]
            if show
            else []
        )

    def refresh(self) -> None:
        for i, inner in enumerate(self.bars):
            done, total = self.shared[2 * i], self.shared[2 * i + 1]
            if not total:
                continue
            if inner.total != total or done < inner.n:  # the worker started another cell
                inner.reset(total=total)
            inner.update(done - inner.n)

    def close(self) -> None:
        for inner in self.bars:
            inner.close()


def _death_cause(codes: Sequence[int]) -> str:
    """How a worker died, from its exit code (a negative code is the signal that killed it)."""
    if not codes:
        return "its worker process died"
    code = codes[0]
    if code == -signal.SIGKILL:
        return "its worker process was killed (SIGKILL: out of memory?)"
    if code < 0:
        return f"its worker process was killed by signal {signal.Signals(-code).name}"
    return f"its worker process exited with code {code}"


def _died(
    unit: list[Cell], out: Path, device: str, revision: str, threads: int, cause: str
) -> list[dict[str, Any]]:
    """Failed records for the cells of a unit whose worker died."""
    from benchmark.methods.fit import resolve_device

    records = []
    for cell in unit:
        record = _new_record(cell, out, resolve_device(device), revision, threads)
        _failed(record, RuntimeError(f"{cause} while computing this cell"))
        record["traceback"] = ""
        records.append(_finish(record, out, 0.0))
    return records


def _execute_slurm(
    units: Sequence[list[Cell]],
    out: Path,
    device: str,
    revision: str,
    threads: int,
    options: dict[str, Any],
    show: bool,
) -> list[dict[str, Any]]:
    try:
        import submitit
    except ImportError as err:
        raise RuntimeError(
            "the slurm executor needs submitit: pip install 'dipbench[slurm]'"
        ) from err
    cluster = options.get("cluster") or None  # None: Slurm; "local"/"debug" for testing
    executor = submitit.AutoExecutor(folder=str(Path(out) / "slurm_logs" / "%j"), cluster=cluster)
    parameters: dict[str, Any] = {
        "timeout_min": int(options.get("time_min", 240)),
        "name": f"dipbench-{units[0][0].suite}",
    }
    if cluster in (None, "slurm"):
        parameters.update(
            slurm_partition=options.get("partition"),
            slurm_array_parallelism=int(options.get("array_parallelism", 32)),
            gpus_per_node=int(options.get("gpus", 0)),
            cpus_per_task=int(options.get("cpus", 4)),
        )
        parameters = {k: v for k, v in parameters.items() if v is not None}
    executor.update_parameters(**parameters)
    n = len(units)
    jobs = executor.map_array(
        _worker_run, list(units), [str(out)] * n, [device] * n, [revision] * n, [threads] * n
    )
    records = []
    with _bar(sum(len(u) for u in units), show) as bar:
        for job in jobs:
            _take(job.result(), records, bar)
    return records


# --- whole suites ---------------------------------------------------------------------------


def unavailable_reason(suite: Suite) -> str | None:
    """Why a suite's images cannot be had here (None if they can): fetches what is missing."""
    registry = images.load_registry()
    for entry in images.select(registry, suite.datasets):
        try:
            images.fetch(entry)
        except images.DownloadError as err:
            return str(err)
    return None


def estimate_seconds(
    suite: Suite, step_seconds: dict[str, float], cells: Sequence[Cell] | None = None
) -> float:
    """A rough duration of a suite (or of some of its ``cells``): network steps scaled by
    pixels from a measured step.

    ``step_seconds`` holds the measured seconds of one step of DIP's default network and of
    the Deep Decoder (k=128) on a 128x128 RGB image; classical cells count 2 s each.
    """
    sizes = _registry_sizes()
    total = 0.0
    for cell in suite.cells() if cells is None else cells:
        if cell.method not in ("dip", "dd"):
            total += 2.0
            continue
        h, w = _cell_size(cell, sizes)
        iterations = _setting(cell)[2].iterations
        total += iterations * step_seconds[cell.method] * (h * w) / (128 * 128)
    return total


def measure_step_seconds(device: str = "auto") -> dict[str, float]:
    """Seconds per step of DIP's default network and DD k=128 at 128x128 on ``device``."""
    import torch

    from benchmark.degradations import Observation
    from benchmark.methods.fit import FitConfig, fit
    from benchmark.methods.priors import build_network, get_preset

    y = np.random.default_rng(0).random((128, 128, 3)).astype(np.float32)
    observation = Observation(y, "denoising", {"kind": "gaussian", "sigma": 0.1})
    seconds = {}
    for method, preset in (("dip", "denoising"), ("dd", "denoising")):
        net = build_network(get_preset(method, preset).network, 3, torch.Generator().manual_seed(0))
        fit(net, observation, FitConfig(iterations=2, check_every=2), device=device)
        started = time.perf_counter()
        fit(net, observation, FitConfig(iterations=6, check_every=6), device=device)
        seconds[method] = (time.perf_counter() - started) / 6
    return seconds


# --- results --------------------------------------------------------------------------------


def collect(cells: Iterable[Cell], out: Path, device: str, threads: int = 1) -> pd.DataFrame:
    """One row per (cell, output) for the cells of this grid that have a record.

    Cells without a record are absent; failed cells give one row with ``status = failed``
    and their error.
    """
    rows = []
    for cell in cells:
        record = read_record(record_path(cell, out, device, threads))
        if record is None:
            continue
        rows.extend(record_rows(record))
    table = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    for column in ("severity", "iterations", "stop_iteration", "best_iteration"):
        table[column] = table[column].astype("Int64")
    return table


def record_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The results.csv rows of one record."""
    cell, info = record["cell"], record.get("info", {})
    base = {
        "suite": cell["suite"],
        "profile": cell["profile"],
        "dataset": cell["dataset"],
        "image": cell["image"],
        "task": cell["task"],
        "degradation": cell["degradation"],
        "level": cell["level"],
        "severity": cell["severity"],
        "method": cell["method_key"],
        "repetition": cell["repetition"],
        "seed": cell["method_seed"],
        "seconds": record.get("seconds"),
        "device": record.get("device"),
        "iterations": info.get("iterations"),
        "stop_iteration": info.get("es_stop_iteration"),
        "preset": info.get("preset"),
        "status": record.get("status"),
        "error": record.get("error", ""),
        "trivial_psnr": (record.get("trivial") or {}).get("psnr", np.nan),
        "suspect": "; ".join(record.get("suspect", [])),
        # ES-WMV detected a stop when its patience ran out (networks with an `es` output).
        "es_detected": (
            info["es_stop_iteration"] is not None if "es_stop_iteration" in info else None
        ),
        "key": record["key"],
        "version": record.get("version"),
        "git_revision": record.get("git_revision"),
    }
    if record.get("status") != "ok":
        return [{**base, "output": "", "oracle": False, "psnr": np.nan, "ssim": np.nan}]
    iteration_of = {
        "es": info.get("es_iteration"),
        "best_loss": info.get("best_loss_iteration"),
        "oracle": info.get("oracle_iteration"),
        "last": info.get("iterations"),
    }
    return [
        {**base, **row, "best_iteration": iteration_of.get(row["output"])} for row in record["rows"]
    ]


def write_results(table: pd.DataFrame, out: Path) -> Path:
    path = Path(out) / "results.csv"
    atomic_write(path, lambda p: table.to_csv(p, index=False))
    return path


def run_suite(suite: Suite, out: Path, **options: Any) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Run (or resume) a suite's grid and write ``results.csv``.

    The run's manifest (``suite.json``) is written first and ``results.csv`` even when the run
    is interrupted, so a partial run is still a run folder that ``report`` and ``check`` read
    (they say how many cells are missing).

    Returns the collected table and the records computed by this call.
    """
    cells = suite.cells()
    device, threads = options.get("device", "auto"), options.get("threads", 1)
    write_manifest(suite, out, cells, device, threads)
    try:
        records = execute(cells, out, **options)
    finally:
        table = collect(cells, out, device, threads)
        write_results(table, out)
    return table, records


def write_manifest(
    suite: Suite, out: Path, cells: Sequence[Cell], device: str, threads: int
) -> None:
    """``suite.json``: what the run folder is a run of, and the keys of its grid."""
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json(
        Path(out) / "suite.json",
        {
            "suite": suite.name,
            "profile": suite.profile,
            "title": suite.title,
            "task": suite.task,
            "protocol": suite.protocol,
            "datasets": list(suite.datasets),
            "images": [f"{d}/{i}" for d, i in suite.images],
            "crop": suite.crop,
            "paper": suite.paper,
            "notes": suite.notes,
            "report": suite.report,
            "methods": [asdict(m) for m in suite.methods],
            "source": str(suite.source),
            "device": device,
            "threads": threads,
            "keys": [record_path(c, out, device, threads).stem for c in cells],
        },
    )
