"""Run the papers' protocol where a CPU can, in slices, and publish each slice as it finishes.

The slices are ``benchmark/data/full_cpu.toml`` (each a suite's images, methods and levels at
the ``full`` profile), in the order they are worth running. For each slice this script skips
the cells the published report (``REPORTS/full/<suite>/records``) holds from the current code,
prints an estimate per remaining cell, stops before a slice that does not fit in the hours
left, runs the slice into ``RUNS/<slice>`` (``dipbench run``: a slice stopped half way resumes
from its finished cells) and publishes it (``dipbench publish``: the report grows).

Example (``make full-cpu HOURS=2`` runs this)::

    python scripts/full_cpu.py --hours 2
    python scripts/full_cpu.py --dry-run   # the plan and its estimates, nothing run
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmark.cli import main as dipbench
from benchmark.grid import Cell
from benchmark.report.merge import cell_identity, kept_records
from benchmark.report.merge import identity as record_identity
from benchmark.suites import load_suite

PLAN = Path(__file__).resolve().parents[1] / "benchmark" / "data" / "full_cpu.toml"


def read_plan(path: Path) -> list[dict[str, Any]]:
    """The slices of a plan file, each with a name, a suite, images, methods and maybe levels."""
    slices = tomllib.loads(path.read_text(encoding="utf-8")).get("slice", [])
    for entry in slices:
        missing = {"name", "suite", "images", "methods"} - set(entry)
        if missing:
            raise SystemExit(f"{path}: slice {entry.get('name', '?')!r} has no {sorted(missing)}")
    return slices


def cells_of(entry: dict[str, Any]) -> list[Cell]:
    suite = load_suite(
        entry["suite"],
        "full",
        images_subset=entry["images"],
        methods_subset=entry["methods"],
        levels_subset=entry.get("levels"),
    )
    return suite.cells()


def published_cells(reports: Path, suite: str) -> set[tuple]:
    """The cells the published full report of ``suite`` holds from the current code."""
    kept = kept_records(reports / "full" / suite) or []
    return {record_identity(r) for r in kept if r.ok and not r.stale}


def identity(cell: Cell) -> tuple:
    return cell_identity(asdict(cell))


def run_arguments(entry: dict[str, Any], todo: list[Cell], out: Path, threads: int) -> list[str]:
    """The ``dipbench run`` of a slice's cells not yet published: only the images that still
    have one (a published image is not fitted again; publishing merges the new cells in)."""
    left = {c.image for c in todo} | {f"{c.dataset}/{c.image}" for c in todo}
    chosen = [
        "--images",
        *[i for i in entry["images"] if i in left],
        "--methods",
        *entry["methods"],
    ]
    chosen += ["--levels", *map(str, entry["levels"])] if entry.get("levels") else []
    run = ["run", entry["suite"], "--profile", "full", *chosen, "--out", str(out)]
    return run + ["--jobs", "1", "--threads", str(threads), "--device", "cpu", "--yes"]


def cell_seconds(threads: int) -> Callable[[list[Cell]], list[float]]:
    """Each cell's estimated seconds at ``threads`` torch threads (each shape measured once)."""
    import torch

    from benchmark.runner.estimate import estimate, measure_cell, measure_step

    torch.set_num_threads(threads)  # as each cell will run
    measured: dict[Any, float] = {}

    def once(shape: Any, measure: Callable[..., float], *args: Any) -> float:
        if shape not in measured:
            measured[shape] = measure(shape, "cpu", *args)
        return measured[shape]

    def seconds(cells: list[Cell]) -> list[float]:
        return [
            estimate(
                [cell],
                "cpu",
                1,
                step=lambda s: once(s, lambda s_, d: measure_step(s_, d, warmup=1)),
                cell=lambda s: once(s, measure_cell),
            ).seconds
            for cell in cells
        ]

    return seconds


def shown(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hours", type=float, default=1.0, help="time to spend (default 1)")
    parser.add_argument("--plan", type=Path, default=PLAN, help="the slices (default: %(default)s)")
    parser.add_argument("--runs", type=Path, default=Path("runs/full-cpu"), help="run folders")
    parser.add_argument("--reports", type=Path, default=Path("reports"))
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", nargs="+", metavar="SLICE", help="only these slices")
    parser.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    args = parser.parse_args(argv)
    slices = read_plan(args.plan)
    if args.only:
        slices = [s for s in slices if s["name"] in args.only]
    seconds_of = cell_seconds(args.threads)
    deadline = time.monotonic() + args.hours * 3600
    failed = 0
    for entry in slices:
        done = published_cells(args.reports, entry["suite"])
        todo = [c for c in cells_of(entry) if identity(c) not in done]
        if not todo:
            print(f"{entry['name']}: published")
            continue
        each = seconds_of(todo)
        print(f"{entry['name']}: {len(todo)} cell(s), about {shown(sum(each))}")
        for cell, seconds in zip(todo, each, strict=True):
            level = f"{cell.degradation} {cell.level:g}"
            print(f"  {cell.image} {level} {cell.method_key}: about {shown(seconds)}")
        if args.dry_run:
            continue
        left = deadline - time.monotonic()
        if sum(each) > left:
            print(f"stopping: {entry['name']} needs about {shown(sum(each))}, {shown(left)} left")
            break
        out = args.runs / entry["name"]
        code = dipbench(run_arguments(entry, todo, out, args.threads))
        if code == 0:
            code = dipbench(["publish", str(out), "--reports", str(args.reports)])
        failed += code != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
