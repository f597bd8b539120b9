"""The run folder: its layout, its files and how they are written and read.

The runner writes a run folder and the report reads it; this module is all they share, and it
imports neither torch nor a method (``import benchmark.report`` stays light). Each finished
cell is one :class:`Record`, ``<out>/cells/<key>.json``, written atomically (temporary file,
then rename), next to its output image ``<key>.png``, every output it was scored on as a
lossless array ``<key>.outputs.npz`` (what ``dipbench rescore`` reads), its curves and
snapshots ``<key>.npz`` (methods that fit a network) and the :class:`View` of its observation
``views/<observation key>.npz``.
The key hashes what the cell is (image, degradation, level, method, options, seeds, package
version); each record also carries the fingerprint of the code that computed it
(:mod:`benchmark.provenance`), and a record whose code has changed since is ``stale``.
``results.csv`` holds one row per (cell, output) of the current grid and ``suite.json`` (the
:class:`Manifest`) says what the folder is a run of.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from benchmark import file_memo
from benchmark.provenance import changed_files, changed_parts

GRID_IMAGES = 3  # images in the report's grid
# A network output this far under its image's trivial baseline is suspect (records' `suspect`
# at the full profile; the tables' under-baseline lines at any profile).
SUSPECT_UNDER_TRIVIAL_DB = 1.0
# What a record's cell must say (its results.csv rows and the tables read them).
CELL_FIELDS = ("suite", "profile", "dataset", "image", "task", "degradation", "level")
CELL_FIELDS += ("severity", "method_key", "method", "repetition", "method_seed")
VIEW_FIELDS = ("dataset", "image", "degradation", "level", "repetition")  # a view's identity


RUNS = Path("runs")
# The marker of a published report folder (written by `dipbench publish`, last): runs never
# write there, and a publish replaces only such a folder.
PUBLISHED = "published.json"
OUTPUTS_SUFFIX = ".outputs.npz"  # a cell's scored outputs, float32, as the method returned them


def default_out(profile: str, suite: str) -> Path:
    """``runs/<profile>/<suite>`` in the working folder: never the committed ``reports/``
    (which ``dipbench publish`` replaces, from a complete run only)."""
    return RUNS / profile / suite


def cells_dir(out: Path) -> Path:
    return Path(out) / "cells"


def views_dir(out: Path) -> Path:
    """Where the run keeps each observation's view (what the report's image grid shows)."""
    return cells_dir(out) / "views"


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
    atomic_write(
        path,
        lambda p: p.write_text(json.dumps(content, indent=1, default=_jsonable), encoding="utf-8"),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass
class Manifest:
    """A run folder's ``suite.json``: what the folder is a run of (the suite, its profile and
    thread count), the suite's settings the report shows, and the keys of the grid. The one
    declaration of the file: the runner writes it, the runner and the report read it.

    A field that an older dipbench did not write takes its default when read; a key that a
    newer one writes is dropped.
    """

    suite: str
    profile: str
    profile_defined: bool = True  # False: the suite has no such profile (its full settings)
    title: str = ""
    task: str = ""
    protocol: str = ""
    datasets: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)  # "<set>/<image>"
    # The suite's whole grid at this profile, before --images, --methods or --levels chose
    # some (a published report's coverage and the order of a merged one)
    grid_images: list[str] = field(default_factory=list)  # "<set>/<image>"
    grid_methods: list[str] = field(default_factory=list)  # method keys
    grid_degradations: list[str] = field(default_factory=list)  # degradation kinds
    crop: int | None = None
    paper: dict[str, Any] = field(default_factory=dict)
    notes: str = ""
    report: dict[str, Any] = field(default_factory=dict)
    methods: list[dict[str, Any]] = field(default_factory=list)  # MethodSpec fields
    trivial: str = ""  # the task's trivial baseline ("observation" or a method's name)
    source: str = ""  # the suite file, relative to the package or to the run folder
    device: str = "auto"
    threads: int | None = None
    keys: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: Any) -> Manifest:
        """The manifest that ``data`` (the parsed JSON) states.

        Raises
        ------
        ValueError
            ``data`` is not a run manifest (no suite or profile).
        """
        if not isinstance(data, dict) or "suite" not in data or "profile" not in data:
            raise ValueError("not a run manifest (no suite and profile)")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, out: Path) -> Manifest:
        """``out/suite.json`` (``OSError``, ``ValueError`` when it is absent or not one)."""
        return cls.from_json(json.loads((Path(out) / "suite.json").read_text(encoding="utf-8")))

    def write(self, out: Path) -> None:
        write_json(Path(out) / "suite.json", self.to_json())


@dataclass
class Record:
    """One cell's record, ``cells/<key>.json``: what the cell is, the code and the machine
    that computed it, and its scores. The one declaration of the file: the runner writes it,
    the runner and the report read it.

    ``rows`` holds one score per output the suite asked for (``output``, ``oracle``, ``psnr``,
    ``ssim``); ``info`` is the method's own facts (iterations, the ES-WMV stop, the preset...).
    A field that an older dipbench did not write takes its default when read; a key that a
    newer one writes is dropped. ``stale`` is not written: it is set when the record is read
    (:meth:`with_staleness`), from its code's fingerprint against the current code's.
    """

    key: str
    cell: dict[str, Any]  # the fields of its grid cell (benchmark.grid.Cell), as written
    status: str = ""  # "ok" or "failed"
    version: str = ""  # dipbench's
    versions: dict[str, str] = field(default_factory=dict)  # everything that can move a number
    code: dict[str, Any] | None = None  # provenance.code_identity of the cell's method
    inputs: dict[str, Any] | None = None  # provenance.inputs_identity: the data it read
    git_revision: str = "unknown"
    device: str = "cpu"
    started: float | None = None  # epoch seconds
    finished: float | None = None
    seconds: float | None = None  # the cell's share of its computation
    rows: list[dict[str, Any]] = field(default_factory=list)
    default_output: str | None = None  # the output the method reports (its image is saved)
    info: dict[str, Any] = field(default_factory=dict)
    trivial: dict[str, Any] | None = None  # the task's trivial baseline: method, psnr
    suspect: list[str] = field(default_factory=list)  # why its numbers look impossible
    arrays: bool = False  # <key>.npz (curves, snapshots) was written
    metrics: dict[str, Any] = field(default_factory=dict)  # rescored: scoring.metric_identity
    error: str = ""
    traceback: str = ""
    digest: dict[str, str] = field(default_factory=dict)  # content_digest(), set by write
    stale: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def method(self) -> str:
        """The registry name (or ``module:function``) of the method that computed it."""
        return str(self.cell.get("method", ""))

    def psnr(self, output: str) -> float | None:
        """The PSNR of one of its outputs (None: the record has no such output)."""
        return next((row["psnr"] for row in self.rows if row["output"] == output), None)

    @classmethod
    def from_json(cls, data: Any) -> Record:
        """The record that ``data`` (the parsed JSON) states.

        Raises
        ------
        ValueError
            ``data`` is not a cell record (no key, cell and status, or of another shape).
        """
        if not isinstance(data, dict) or not {"key", "cell", "status"} <= set(data):
            raise ValueError("not a cell record (no key, cell and status)")
        if not isinstance(data["cell"], dict) or not isinstance(data.get("rows", []), list):
            raise ValueError("not a cell record (its cell or rows have another shape)")
        missing = [name for name in CELL_FIELDS if name not in data["cell"]]
        if missing:
            raise ValueError(f"not a cell record (its cell has no {', '.join(missing)})")
        known = {f.name for f in fields(cls)} - {"stale"}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict[str, Any]:
        content = asdict(self)
        content.pop("stale")  # a fact of the code that reads it, not of the record
        return content

    @classmethod
    def read(cls, path: Path) -> Record | None:
        """The record at ``path``, or None if it is absent, unreadable, not a record (valid
        JSON of another shape) or not its cell's (:meth:`problems`): such a cell is
        recomputed and its file replaced; :func:`why_unusable` says why."""
        record = cls.parse(Path(path))
        return None if record is None or record.problems(Path(path)) else record

    @classmethod
    def parse(cls, path: Path) -> Record | None:
        """The record at ``path`` as it is written, unchecked (None: no record there)."""
        try:
            return cls.from_json(json.loads(file_memo.read_text(path)))
        except (OSError, ValueError):  # JSON and UTF-8 decoding errors are ValueErrors
            return None

    def write(self, out: Path) -> Path:
        """Write ``out/cells/<key>.json`` atomically, with the digest of its content and of
        its output files (written before it); returns its path."""
        path = cells_dir(out) / f"{self.key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.digest = self.content_digest(out)
        write_json(path, self.to_json())
        return path

    def content_digest(self, out: Path) -> dict[str, str]:
        """sha256 of everything the record says (but its digest), and of each output file it
        has (``.png``, ``.npz``, ``.outputs.npz``): a record edited after it was written, or an
        output damaged or swapped, no longer matches it."""
        digest = {"content": self._content_hash()}
        for suffix in (".png", ".npz", OUTPUTS_SUFFIX):
            output = cells_dir(out) / f"{self.key}{suffix}"
            if output.is_file():
                digest[suffix] = file_memo.sha256_prefix(output)
        return digest

    def _content_hash(self) -> str:
        content = self.to_json()
        content.pop("digest")
        text = json.dumps(content, sort_keys=True, default=_jsonable)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def problems(self, path: Path) -> list[str]:
        """Why the record at ``path`` cannot be taken as its cell's (empty: none): it is
        filed under another cell's key, or what it says changed after it was written. A
        record written before digests existed is taken as it is."""
        found = []
        if path.stem != self.key:
            found.append(f"it is the record of cell {self.key}, filed under {path.stem}")
        if self.digest and self.digest.get("content") != self._content_hash():
            found.append("its content changed after it was written")
        return found

    def changed_outputs(self, out: Path) -> list[Path]:
        """Its output files that are not the ones written with it (damaged, replaced or
        gone); empty for a record written before digests existed."""
        if not self.digest:
            return []
        now = self.content_digest(out)
        suffixes = (set(self.digest) | set(now)) - {"content"}
        return [
            cells_dir(out) / f"{self.key}{s}"
            for s in sorted(suffixes)
            if self.digest.get(s) != now.get(s)
        ]

    def restamped(self, code: dict[str, Any]) -> Record:
        """The record with ``code``, a later fingerprint scheme's identity of the code that
        computed it: its content digest is made again, its output files' digests stay."""
        self.code = code
        self.digest = {**self.digest, "content": self._content_hash()} if self.digest else {}
        return self

    def stale_files(self) -> list[str]:
        """The files and data parts whose change since the record was written makes it stale
        (empty: its code and data are the current ones), from the stored hashes alone: no
        method is imported."""
        return changed_files(self.code) + changed_parts(self.inputs)

    def with_staleness(self) -> Record:
        """The record with ``stale`` set: whether its code differs from the current code."""
        if self.ok:
            self.stale = bool(self.stale_files())
        return self

    def result_rows(self) -> list[dict[str, Any]]:
        """Its rows of ``results.csv`` (:data:`RESULT_COLUMNS`): one per output, or one
        without scores for a failed cell."""
        cell, info = self.cell, self.info
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
            # What the key names: the registered method (or module:function) and its options.
            "implementation": cell.get("method", cell["method_key"]),
            "options": json.dumps(cell.get("method_options") or {}, sort_keys=True),
            "repetition": cell["repetition"],
            "seed": cell["method_seed"],
            "seconds": self.seconds,
            "device": self.device,
            "iterations": info.get("iterations"),
            "stop_iteration": info.get("es_stop_iteration"),
            "preset": info.get("preset"),
            "status": self.status,
            "error": self.error,
            "trivial_psnr": (self.trivial or {}).get("psnr", np.nan),
            "suspect": "; ".join(self.suspect),
            # ES-WMV detected a stop when its patience ran out (networks with an `es` output).
            "es_detected": (
                info["es_stop_iteration"] is not None if "es_stop_iteration" in info else None
            ),
            "stale": self.stale,
            "code": (self.code or {}).get("fingerprint", ""),
            "inputs": (self.inputs or {}).get("fingerprint", ""),
            "key": self.key,
            "version": self.version,
            "git_revision": self.git_revision,
        }
        if not self.ok:
            return [{**base, "output": "", "oracle": False, "psnr": np.nan, "ssim": np.nan}]
        iteration_of = {
            "es": info.get("es_iteration"),
            "best_loss": info.get("best_loss_iteration"),
            "oracle": info.get("oracle_iteration"),
            "last": info.get("iterations"),
        }
        return [
            {**base, **row, "best_iteration": iteration_of.get(row["output"])} for row in self.rows
        ]


@dataclass
class View:
    """The view of one observation, ``cells/views/<observation key>.npz``: what the report's
    image grid shows of a cell's input, saved by the run so that the report never re-makes an
    observation (nor needs the test images)."""

    identity: dict[str, Any]  # its cell's VIEW_FIELDS
    target: np.ndarray  # the clean image, an 8-bit thumbnail
    observation: np.ndarray  # the degraded input at the output's size, an 8-bit thumbnail
    psnr: float  # of the input, so shown, under the suite's protocol

    @property
    def key(self) -> tuple:
        """(dataset, image, degradation, level, repetition)."""
        return tuple(self.identity[name] for name in VIEW_FIELDS)

    def write(self, path: Path) -> None:
        arrays = {
            "target": self.target,
            "observation": self.observation,
            "psnr": np.float64(self.psnr),
            "cell": np.array(json.dumps(self.identity)),
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda p: savez(p, arrays))

    @classmethod
    def read(cls, path: Path) -> View:
        """The view at ``path`` (``OSError``, ``ValueError``, ``KeyError``, ``EOFError`` or
        ``zipfile.BadZipFile`` when it is absent or damaged)."""
        with np.load(path) as data:
            return cls(
                identity=json.loads(str(data["cell"])),
                target=data["target"],
                observation=data["observation"],
                psnr=float(data["psnr"]),
            )


def why_unusable(path: Path) -> str:
    """Why :meth:`Record.read` gives None for the file at ``path``."""
    path = Path(path)
    if not path.is_file():
        return "no such file"
    record = Record.parse(path)
    if record is None:
        return "it cannot be read as a cell record"
    return "; ".join(record.problems(path)) or "it is readable"


def savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez_compressed`` to exactly ``path`` (given a name, numpy would add ``.npz``
    to an atomic write's temporary name)."""
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
