"""The run folder's manifest, ``suite.json``: what the folder is a run of (suite, profile,
threads), its grid's keys and where its suite file is. One run folder holds one suite at one
profile: a run into another suite's folder, a folder of other files or a file is refused, and
a narrower run (``--images``, ``--methods``) keeps the keys of the earlier ones."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from benchmark.runfolder import PUBLISHED, Manifest, default_out
from benchmark.runner.records import record_path
from benchmark.tasks import get_task

if TYPE_CHECKING:
    from benchmark.suites import Cell, Suite


def suite_source(source: Path, out: Path) -> str:
    """Where the suite file is, without the machine's own paths: ``benchmark/suites/x.toml``
    for a packaged suite, else relative to the run folder."""
    source = Path(source).resolve()
    package = Path(__file__).resolve().parents[1]
    if source.is_relative_to(package):
        return str(source.relative_to(package.parent))
    try:
        return os.path.relpath(source, Path(out).resolve())
    except ValueError:  # another drive (Windows)
        return source.name


class RunFolderError(ValueError):
    """A folder that is not this run's to write: another suite's or profile's run folder, a
    folder of other files, or a file."""


def read_manifest(out: Path) -> Manifest | None:
    """The run folder's ``suite.json`` (None for a new folder).

    Raises
    ------
    RunFolderError
        ``out`` is a file, a folder of other files (no ``suite.json``), or its ``suite.json``
        cannot be read.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file, not a run folder")
    manifest = out / "suite.json"
    published = (out / PUBLISHED).exists() or (
        manifest.exists() and (out / "results.csv").exists() and not (out / "cells").exists()
    )  # the second: a report published before the marker (no records, its tables kept)
    if published:
        raise RunFolderError(
            f"{out} is a published report: a run never writes there (dipbench publish "
            "replaces it from a complete run); run into another --out, e.g. "
            f"{default_out(_name(manifest, 'profile'), _name(manifest, 'suite'))}"
        )
    if not manifest.exists():
        if out.is_dir() and any(p.name != "cells" for p in out.iterdir()):
            raise RunFolderError(
                f"{out} holds files and no suite.json: it is not a run folder, and a run "
                "would overwrite its tables; choose an empty or new --out folder"
            )
        return None
    try:
        return Manifest.read(out)
    except (OSError, ValueError, TypeError) as err:
        raise RunFolderError(
            f"{manifest} cannot be read as a run manifest ({err}): move the folder aside or "
            "choose another --out"
        ) from err


def _name(manifest: Path, field: str) -> str:
    try:
        return str(getattr(Manifest.read(manifest.parent), field))
    except (OSError, ValueError, TypeError):
        return "PROFILE" if field == "profile" else "SUITE"


def check_same_run(meta: Manifest | None, suite: Suite, out: Path, threads: int) -> None:
    """One run folder holds one suite at one profile and one thread count (cell keys do not
    name them): anything else is refused with the command that would work."""
    if meta is None:
        return
    mine = (suite.name, suite.profile, threads)
    theirs = (meta.suite, meta.profile, threads if meta.threads is None else meta.threads)
    if mine != theirs:
        raise RunFolderError(
            f"{out} is a run folder of {theirs[0]} ({theirs[1]}, {theirs[2]} thread(s)), not of "
            f"{suite.name} ({suite.profile}, {threads} thread(s)): run into another folder, "
            f"e.g. --out {default_out(suite.profile, suite.name)}"
        )


def write_manifest(
    suite: Suite,
    out: Path,
    cells: Sequence[Cell],
    device: str,
    threads: int,
    previous: Manifest | None = None,
) -> list[str]:
    """``suite.json``: what the run folder is a run of, and the keys of its grid. A narrower
    run (``--images``, ``--methods``) into a folder of the same suite keeps the keys, images
    and methods of the earlier runs. Returns the keys."""
    Path(out).mkdir(parents=True, exist_ok=True)
    before = previous or Manifest(suite.name, suite.profile)
    keys = _union(before.keys, [record_path(c, out, device, threads).stem for c in cells])
    methods = {m["key"]: m for m in before.methods}
    methods.update({m.key: asdict(m) for m in suite.methods})
    Manifest(
        suite=suite.name,
        profile=suite.profile,
        profile_defined=suite.profile_defined,
        title=suite.title,
        task=suite.task,
        protocol=suite.protocol,
        datasets=_union(before.datasets, list(suite.datasets)),
        images=_union(before.images, [f"{d}/{i}" for d, i in suite.images]),
        grid_images=_union(before.grid_images, [f"{d}/{i}" for d, i in suite.grid_images]),
        grid_methods=_union(before.grid_methods, list(suite.grid_methods)),
        grid_degradations=_union(before.grid_degradations, list(suite.grid_degradations)),
        crop=suite.crop,
        paper=suite.paper,
        notes=suite.notes,
        report=suite.report,
        methods=list(methods.values()),
        trivial=get_task(suite.task).trivial_baseline,
        source=suite_source(suite.source, Path(out)),
        device=device,
        threads=threads,
        keys=keys,
    ).write(out)
    return keys


def _union(first: Sequence[str], second: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*first, *second]))
