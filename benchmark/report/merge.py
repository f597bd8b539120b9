"""Reports that grow: a published report keeps its cells' records, and a run of part of a
suite's grid is merged into them.

A published report holds, beside its tables, ``records/``: each cell's record (``<key>.json``)
and its curves (``<key>.npz``, the PSNR and loss per iteration; snapshots and output pixels
are not kept, so the report stays small and holds no image). A publish builds a run folder
from the report's kept records and the run's cells, the run's replacing the report's where
they are the same cell (image, degradation, level, method, repetition), and rebuilds every
table from that union, in the suite's grid order: a report grown by several publishes equals
the report of one run of the same cells.

A kept cell stays only where it was computed by the current code (its fingerprint) with the
run's library versions (a local build suffix such as ``+cpu`` aside, so runs of a CPU machine
and a GPU machine merge); otherwise the publish is refused with the cells named. The image
grid and the snapshots need pixels: they show the cells of the last published run that fitted
a network; a run of classical cells alone merged into a report (to add a baseline, or to
render the tables again with a new authors' reference) leaves them as the report has them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.report.files import cell_arrays
from benchmark.runfolder import Manifest, Record, cells_dir, views_dir

KEPT = "records"  # the folder of a published report that keeps its cells' records
PIXEL_FIGURES = ("grid.png", "snapshots.png", "snapshots.gif")  # drawn from a run's pixels
IDENTITY = ("dataset", "image", "degradation", "level", "method_key", "repetition")
LOCAL_BUILD = re.compile(r"\+.*$")  # torch 2.13.0+cpu and 2.13.0+cu128 are one release


def cell_identity(cell: Mapping[str, Any]) -> tuple:
    """What cell a grid cell's fields (a record's ``cell``, or ``asdict`` of a
    :class:`~benchmark.grid.Cell`) are, whatever the package version or thread count in its
    key."""
    return tuple(str(cell.get(k)) for k in IDENTITY)


def identity(record: Record) -> tuple:
    """What cell a record is (:func:`cell_identity`)."""
    return cell_identity(record.cell)


def kept_records(report: Path) -> list[Record] | None:
    """The records a published report keeps (None: it keeps none, published before reports
    kept their records), each with ``stale`` set."""
    folder = Path(report) / KEPT
    if not folder.is_dir():
        return None
    records = []
    for path in sorted(folder.glob("*.json")):
        record = Record.read(path)
        if record is None:
            raise ValueError(f"{path} is not a cell record as it was published (edited?)")
        records.append(record.with_staleness())
    return records


def merged(kept: Sequence[Record], new: Sequence[Record]) -> tuple[list[Record], list[Record]]:
    """(the kept records that stay, the union): the run's records replace kept ones of the
    same cell."""
    replaced = {identity(r) for r in new}
    staying = [r for r in kept if identity(r) not in replaced]
    return staying, [*staying, *new]


def conflicts(staying: Sequence[Record], new: Sequence[Record]) -> list[str]:
    """Why kept records cannot stay beside the run's: other code or library versions."""
    versions = {_release(r.versions) for r in new}
    found = []
    stale = [r for r in staying if r.stale or not r.ok]
    stale_keys = {r.key for r in stale}
    if stale:
        found.append(
            f"{len(stale)} of its cells were computed by code that has changed since "
            f"({_named(stale)})"
        )
    other = [r for r in staying if r.key not in stale_keys and _release(r.versions) not in versions]
    if other:
        theirs = dict(_release(other[0].versions))
        ours = dict(next(iter(versions))) if versions else {}
        moved = ", ".join(
            f"{k} {theirs.get(k)} (the run: {ours.get(k)})"
            for k in sorted(set(theirs) | set(ours))
            if theirs.get(k) != ours.get(k)
        )
        found.append(f"{len(other)} of its cells were computed with {moved} ({_named(other)})")
    return found


def other_settings(previous: Manifest, run: Manifest) -> list[str]:
    """The settings of the whole suite (task, scoring protocol, crop) in which the report and
    the run differ: cells of both cannot share a table."""
    return [
        f"put the run's cells ({name} {getattr(run, name)!r}) beside the report's "
        f"({name} {getattr(previous, name)!r})"
        for name in ("task", "protocol", "crop")
        if getattr(previous, name) != getattr(run, name)
    ]


def _release(versions: dict[str, str]) -> tuple:
    return tuple(sorted((k, LOCAL_BUILD.sub("", str(v))) for k, v in versions.items()))


def _named(records: Sequence[Record]) -> str:
    names = [
        f"{r.cell['image']} {r.cell['degradation']} {r.cell['level']:g} {r.cell['method_key']}"
        for r in records[:4]
    ]
    return ", ".join(names) + (", ..." if len(records) > 4 else "")


def in_grid_order(records: Sequence[Record], order: Manifest) -> list[Record]:
    """``records`` image-major as a run's grid is (images, then degradations, levels,
    repetitions, methods), each in the order of the suite's grid as ``order`` records it
    (then in the order of ``order``'s images and methods)."""
    images = _ranks([*order.grid_images, *order.images])
    methods = _ranks([*order.grid_methods, *(m["key"] for m in order.methods)])
    kinds = _ranks(order.grid_degradations)

    def position(record: Record) -> tuple:
        cell = record.cell
        image = f"{cell['dataset']}/{cell['image']}"
        return (
            images.get(image, len(images)),
            image,
            kinds.get(cell["degradation"], len(kinds)),
            cell["degradation"],
            float(cell["level"]),
            int(cell["repetition"]),
            methods.get(cell["method_key"], len(methods)),
            cell["method_key"],
        )

    return sorted(records, key=position)


def _ranks(names: Sequence[str]) -> dict[str, int]:
    return {name: i for i, name in enumerate(dict.fromkeys(names))}


def merged_manifest(
    previous: Manifest | None, run: Manifest, records: Sequence[Record]
) -> Manifest:
    """The run's manifest over the union: its images, methods and keys those of ``records``,
    in the order of the suite's grid (as far as the manifests record it)."""
    before = previous or Manifest(run.suite, run.profile)
    methods = {m["key"]: m for m in before.methods}
    methods.update({m["key"]: m for m in run.methods})
    order = replace(
        run,
        images=[*before.images, *run.images],
        grid_images=list(dict.fromkeys([*run.grid_images, *before.grid_images])),
        grid_methods=list(dict.fromkeys([*run.grid_methods, *before.grid_methods])),
        grid_degradations=list(dict.fromkeys([*run.grid_degradations, *before.grid_degradations])),
        methods=list(methods.values()),
    )
    ordered = in_grid_order(records, order)
    used = {r.cell["method_key"] for r in records}
    method_rank = _ranks([*order.grid_methods, *methods])
    image_rank = _ranks([*order.grid_images, *order.images])
    images = {f"{r.cell['dataset']}/{r.cell['image']}" for r in records}
    return replace(
        order,
        images=sorted(images, key=image_rank.__getitem__),
        methods=sorted(
            (m for m in methods.values() if m["key"] in used),
            key=lambda m: method_rank[m["key"]],
        ),
        keys=[r.key for r in ordered],
    )


def stage_union(
    work: Path, run: Path, new: Sequence[Record], report: Path, staying: Sequence[Record]
) -> None:
    """A run folder at ``work`` holding the run's cells (with their pixels and views) and the
    report's kept records (with their curves)."""
    cells = cells_dir(work)
    cells.mkdir(parents=True)
    for record in new:
        for path in cells_dir(run).glob(f"{record.key}.*"):
            shutil.copy2(path, cells / path.name)
    if views_dir(run).is_dir():
        shutil.copytree(views_dir(run), views_dir(work))
    for record in staying:
        for path in (Path(report) / KEPT).glob(f"{record.key}.*"):
            shutil.copy2(path, cells / path.name)


def keep(records: Sequence[Record], source: Path, folder: Path) -> None:
    """Write ``folder/<key>.json`` and ``<key>.npz`` (its curves only) for each record of the
    run folder ``source``; each record's digest then covers what is kept."""
    scratch = folder.parent / f".{folder.name}-scratch"
    for record in records:
        curves = {
            k: v for k, v in cell_arrays(source, record.key).items() if k.startswith("curve_")
        }
        copy = Record.from_json(record.to_json())
        cells_dir(scratch).mkdir(parents=True, exist_ok=True)
        if curves:
            np.savez_compressed(cells_dir(scratch) / f"{record.key}.npz", **curves)
        copy.write(scratch)
    folder.mkdir()
    if cells_dir(scratch).is_dir():
        for path in cells_dir(scratch).iterdir():
            shutil.move(path, folder / path.name)
    shutil.rmtree(scratch, ignore_errors=True)
